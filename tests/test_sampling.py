import numpy as np
import pytest

from pyrnn.sampling import sample_logits, sampling_probs


def softmax(x, t=1.0):
    z = np.asarray(x, dtype=np.float64) / t
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def test_greedy_exact():
    logits = np.array([0.1, 2.5, -1.0, 2.4], dtype=np.float32)
    assert sample_logits(logits, temperature=0) == 1
    assert type(sample_logits(logits, temperature=0)) is int
    batch = np.array([[0, 1, 2], [5, -1, 0], [3, 3, 1]], dtype=np.float64)
    out = sample_logits(batch, temperature=0.0, rng=123)
    assert out.dtype == np.int64 and out.tolist() == [2, 0, 0]  # ties: first
    # top-k / top-p never change a greedy pick
    assert sample_logits(batch, temperature=0, top_k=1, top_p=0.1).tolist() == [2, 0, 0]


def test_top_k_never_outside_top_k():
    rng = np.random.default_rng(7)
    logits = rng.normal(size=50)
    top5 = set(np.argsort(-logits)[:5].tolist())
    gen = np.random.default_rng(0)
    draws = [sample_logits(logits, temperature=2.0, top_k=5, rng=gen) for _ in range(2000)]
    assert set(draws) <= top5
    assert set(draws) == top5  # all five do occur at this temperature
    # batched: each row keeps its own top 3
    b = rng.normal(size=(4, 30))
    out = np.stack([sample_logits(b, top_k=3, temperature=3.0, rng=s) for s in range(500)])
    for r in range(4):
        assert set(out[:, r].tolist()) <= set(np.argsort(-b[r])[:3].tolist())


def test_top_k_ties_keep_exactly_k():
    q = sampling_probs(np.zeros(6), top_k=2)
    np.testing.assert_array_equal(q, [0.5, 0.5, 0, 0, 0, 0])
    q = sampling_probs(np.log([0.1, 0.2, 0.3, 0.4]), top_k=10)  # k > V keeps all
    np.testing.assert_allclose(q, [0.1, 0.2, 0.3, 0.4], rtol=1e-12)


def test_top_p_set_exact():
    p = np.array([0.05, 0.4, 0.1, 0.25, 0.2])
    logits = np.log(p)
    # sorted: 0.4 (1), 0.25 (3), 0.2 (4), 0.1 (2), 0.05 (0)
    cases = {0.3: [1], 0.4: [1], 0.41: [1, 3], 0.65: [1, 3], 0.66: [1, 3, 4],
             0.85: [1, 3, 4], 0.9: [1, 3, 4, 2], 1.0: [0, 1, 2, 3, 4], 1e-9: [1]}
    for top_p, kept in cases.items():
        q = sampling_probs(logits, top_p=top_p)
        assert np.flatnonzero(q).tolist() == sorted(kept), top_p
        np.testing.assert_allclose(q[kept], p[kept] / p[kept].sum(), rtol=1e-12)
        draws = {sample_logits(logits, top_p=top_p, rng=s) for s in range(300)}
        assert draws <= set(kept)


def test_top_k_then_top_p():
    p = np.array([0.4, 0.3, 0.2, 0.1])
    # top_k=2 leaves 0.4/0.7, 0.3/0.7; top_p=0.5 then keeps only id 0
    q = sampling_probs(np.log(p), top_k=2, top_p=0.5)
    np.testing.assert_array_equal(q, [1, 0, 0, 0])
    q = sampling_probs(np.log(p), top_k=2, top_p=0.6)
    np.testing.assert_allclose(q, [4 / 7, 3 / 7, 0, 0], rtol=1e-12)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_empirical_frequencies_match_tempered_softmax(temperature):
    logits = np.array([1.0, 0.0, -0.5, 2.0, 0.3], dtype=np.float32)
    n = 20000
    draws = sample_logits(np.tile(logits, (n, 1)), temperature=temperature, rng=42)
    freq = np.bincount(draws, minlength=5) / n
    expect = softmax(logits, temperature)
    np.testing.assert_allclose(sampling_probs(logits, temperature), expect, rtol=1e-6)
    # 5 standard errors of a binomial proportion
    tol = 5 * np.sqrt(expect * (1 - expect) / n)
    assert np.all(np.abs(freq - expect) <= tol), (freq, expect)


def test_same_seed_same_draws():
    logits = np.random.default_rng(3).normal(size=(64, 20))
    a = sample_logits(logits, temperature=0.8, top_p=0.9, rng=5)
    b = sample_logits(logits, temperature=0.8, top_p=0.9, rng=np.random.default_rng(5))
    c = sample_logits(logits, temperature=0.8, top_p=0.9, rng=6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    g1, g2 = np.random.default_rng(9), np.random.default_rng(9)
    s1 = [sample_logits(logits[0], rng=g1) for _ in range(50)]
    s2 = [sample_logits(logits[0], rng=g2) for _ in range(50)]
    assert s1 == s2


def test_numerically_stable_extremes():
    # huge logits and tiny temperature: no overflow, no NaN
    logits = np.array([1e300, 1e300 - 1e285, -1e300])
    q = sampling_probs(logits, temperature=1e-3)
    assert np.isfinite(q).all() and q.tolist() == [1.0, 0.0, 0.0]
    assert sample_logits(logits, temperature=1e-3, rng=0) == 0
    # -inf logits are masked ids and never drawn
    masked = np.array([-np.inf, 0.0, -np.inf, 0.0])
    draws = {sample_logits(masked, temperature=5.0, rng=s) for s in range(200)}
    assert draws == {1, 3}
    q = sampling_probs(np.array([1000.0, 0.0]), temperature=1.0)
    assert q[0] == 1.0 and q[1] == 0.0
    assert sample_logits(np.array([1000.0, 0.0]), top_p=1.0, rng=1) == 0


def test_single_entry_and_empty_batch():
    assert sample_logits(np.array([3.0]), rng=0) == 0
    out = sample_logits(np.zeros((0, 4)), rng=0)
    assert out.shape == (0,) and out.dtype == np.int64


@pytest.mark.parametrize("kwargs, exc, word", [
    (dict(temperature=-0.1), ValueError, "temperature"),
    (dict(temperature=float("nan")), ValueError, "temperature"),
    (dict(temperature="1"), TypeError, "temperature"),
    (dict(top_k=0), ValueError, "top_k"),
    (dict(top_k=2.5), ValueError, "top_k"),
    (dict(top_k=True), ValueError, "top_k"),
    (dict(top_p=0.0), ValueError, "top_p"),
    (dict(top_p=1.5), ValueError, "top_p"),
    (dict(rng="seed"), TypeError, "rng"),
])
def test_argument_errors(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        sample_logits(np.zeros(3), **kwargs)


def test_logits_errors():
    with pytest.raises(ValueError, match="logits"):
        sample_logits(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="logits"):
        sample_logits(np.zeros(0))
    with pytest.raises(ValueError, match="NaN"):
        sample_logits(np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="all -inf"):
        sample_logits(np.array([[0.0, 1.0], [-np.inf, -np.inf]]))
    with pytest.raises(TypeError, match="logits"):
        sample_logits(np.array([True, False]))
    with pytest.raises(TypeError, match="logits"):
        sample_logits(np.array([1 + 1j]))
