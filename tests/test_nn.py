"""Linear, Embedding, Dropout, the Module protocol and containers; initialisers."""
import math

import numpy as np
import pytest

import pyrnn
from pyrnn import init
from pyrnn.nn import Dropout, Embedding, Linear, Module, Sequential, check_shape, once
from _oracle import fd_check, require_torch

RNG = np.random.default_rng(0)


# ---------------------------------------------------------------- Linear

@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("lead", [(), (5,), (4, 3)])
def test_linear_matches_torch(bias, lead):
    torch = require_torch()
    lin = Linear(6, 4, bias=bias, dtype=np.float64, seed=0)
    tl = torch.nn.Linear(6, 4, bias=bias, dtype=torch.float64)
    tl.load_state_dict({k: torch.tensor(v) for k, v in lin.state_dict().items()})
    x = RNG.standard_normal(lead + (6,))
    dy = RNG.standard_normal(lead + (4,))
    y, back = lin.forward_train(x)
    np.testing.assert_allclose(lin(x), y, rtol=0, atol=0)
    dx = back(dy)
    xt = torch.tensor(x, requires_grad=True)
    yt = tl(xt)
    (yt * torch.tensor(dy)).sum().backward()
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-13)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-15)
    for k, p in tl.named_parameters():
        np.testing.assert_allclose(lin.grads[k], p.grad.numpy(), rtol=1e-12, atol=1e-15)
    assert set(lin.params) == ({"weight", "bias"} if bias else {"weight"})


def test_linear_finite_differences_and_accumulation():
    lin = Linear(3, 2, dtype=np.float64, seed=1)
    x = RNG.standard_normal((2, 4, 3))
    dy = RNG.standard_normal((2, 4, 2))
    y, back = lin.forward_train(x)
    dx = back(dy)
    W, b = lin.params["weight"], lin.params["bias"]

    def f(arrs):
        return float(np.sum(lin(arrs[0]) * dy))

    assert fd_check(f, [x, W, b], [dx, lin.grads["weight"], lin.grads["bias"]]) < 1e-8
    g1 = lin.grads["weight"].copy()
    _, back2 = lin.forward_train(x)
    back2(dy)  # grads are ADDED
    np.testing.assert_allclose(lin.grads["weight"], 2 * g1, rtol=1e-15)
    with pytest.raises(RuntimeError):
        back2(dy)
    lin.zero_grad()
    assert all(np.all(g == 0) for g in lin.grads.values())


def test_linear_init_dtype_and_validation():
    lin = Linear(16, 8, seed=3)
    assert lin.params["weight"].dtype == np.float32 and lin.params["weight"].shape == (8, 16)
    assert np.abs(lin.params["weight"]).max() <= 0.25 and np.abs(lin.params["bias"]).max() <= 0.25
    assert np.abs(lin.params["weight"]).max() > 0.2  # actually spans the range
    np.testing.assert_array_equal(Linear(16, 8, seed=3).params["weight"], lin.params["weight"])
    y = lin(np.ones((2, 16), np.float64))  # converted, not rejected
    assert y.dtype == np.float32
    with pytest.raises(TypeError):
        lin(np.ones((2, 16), np.int64))
    with pytest.raises(TypeError):
        lin(np.ones((2, 16), bool))
    with pytest.raises(TypeError):
        lin(np.ones((2, 16), np.complex64))
    with pytest.raises(ValueError, match=r"x expected shape \(\.\.\., 16\), got \(2, 15\)"):
        lin(np.ones((2, 15), np.float32))
    _, back = lin.forward_train(np.ones((2, 16), np.float32))
    with pytest.raises(ValueError, match=r"dy: expected shape \(2, 8\), got \(8, 2\)"):
        back(np.ones((8, 2), np.float32))
    # non-contiguous, read-only and memory-mapped-like inputs work
    x = np.asfortranarray(RNG.standard_normal((5, 16)).astype(np.float32))[:, :]
    x.flags.writeable = False
    np.testing.assert_allclose(lin(x), lin(np.ascontiguousarray(x)), rtol=1e-6)
    np.testing.assert_allclose(lin(RNG.standard_normal((9, 16))[::3]).shape, (3, 8))


def test_linear_memmap_input(tmp_path):
    lin = Linear(4, 2, dtype=np.float64, seed=0)
    mm = np.memmap(tmp_path / "x.bin", dtype=np.float64, mode="w+", shape=(3, 4))
    mm[:] = RNG.standard_normal((3, 4))
    mm.flush()
    ro = np.memmap(tmp_path / "x.bin", dtype=np.float64, mode="r", shape=(3, 4))
    np.testing.assert_allclose(lin(ro), np.asarray(ro) @ lin.params["weight"].T + lin.params["bias"])


# ---------------------------------------------------------------- Embedding

@pytest.mark.parametrize("padding_idx", [None, 2, -1])
def test_embedding_matches_torch(padding_idx):
    torch = require_torch()
    emb = Embedding(7, 3, padding_idx=padding_idx, dtype=np.float64, seed=0)
    if padding_idx is not None:
        assert np.all(emb.params["weight"][padding_idx] == 0)
    te = torch.nn.Embedding(7, 3, padding_idx=padding_idx, dtype=torch.float64)
    te.load_state_dict({k: torch.tensor(v) for k, v in emb.state_dict().items()})
    ids = np.array([[1, 2, 2, 6], [0, 2, 1, 1], [6, 6, 6, 3]])
    dy = RNG.standard_normal((3, 4, 3))
    y, back = emb.forward_train(ids)
    assert back(dy) is None
    yt = te(torch.as_tensor(ids))
    (yt * torch.tensor(dy)).sum().backward()
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_allclose(emb.grads["weight"], te.weight.grad.numpy(), rtol=1e-14)
    np.testing.assert_array_equal(emb(ids), y)


def test_embedding_init_and_errors():
    emb = Embedding(1000, 20, seed=0)
    w = emb.params["weight"]
    assert w.dtype == np.float32
    assert abs(w.mean()) < 0.02 and abs(w.std() - 1) < 0.02  # N(0, 1) like torch
    with pytest.raises(TypeError):
        emb(np.array([1.0, 2.0]))
    with pytest.raises(TypeError):
        emb(np.array([True, False]))
    with pytest.raises(ValueError, match="1000"):
        emb(np.array([1, 1000]))
    with pytest.raises(ValueError):
        emb(np.array([-1, 3]))
    with pytest.raises(ValueError):
        Embedding(5, 3, padding_idx=5)
    assert emb(np.array(3, np.uint8)).shape == (20,)
    assert emb(np.zeros((0, 4), int)).shape == (0, 4, 20)


def test_embedding_finite_differences():
    emb = Embedding(5, 2, dtype=np.float64, seed=2)
    ids = np.array([0, 3, 3, 1, 3])
    dy = RNG.standard_normal((5, 2))
    _, back = emb.forward_train(ids)
    back(dy)
    err = fd_check(lambda a: float(np.sum(emb(ids) * dy)),
                   [emb.params["weight"]], [emb.grads["weight"]])
    assert err < 1e-8


# ---------------------------------------------------------------- Dropout

def test_dropout():
    x = RNG.standard_normal((200, 50)).astype(np.float32)
    d = Dropout(0.3, seed=5)
    assert d(x) is not None and np.array_equal(d(x), x)  # identity at inference
    y, back = d.forward_train(x)
    assert y.dtype == np.float32
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.01
    np.testing.assert_allclose(y[kept], x[kept] / 0.7, rtol=1e-6)
    dy = np.ones_like(x)
    dx = back(dy)
    np.testing.assert_allclose(dx, kept / 0.7, rtol=1e-6)
    # same seed, same mask; the generator advances between calls
    y2, _ = Dropout(0.3, seed=5).forward_train(x)
    np.testing.assert_array_equal(y, y2)
    y3, _ = d.forward_train(x)
    assert not np.array_equal(y3 != 0, kept)
    assert np.array_equal(Dropout(0.0).forward_train(x)[0], x)
    assert np.all(Dropout(1.0).forward_train(x)[0] == 0)
    with pytest.raises(ValueError):
        Dropout(1.5)
    with pytest.raises(TypeError):
        d.forward_train(np.ones(3, int))
    assert d.params == {} and d.state_dict() == {}


# ---------------------------------------------------------------- containers and protocol

class TwoLayer(Module):
    """A custom composite: children registered by attribute assignment."""

    def __init__(self):
        self.emb = Embedding(6, 4, dtype=np.float64, seed=0)
        self.drop = Dropout(0.5, seed=1)
        self.head = Linear(4, 3, dtype=np.float64, seed=2)
        self.calls = 0

    def forward(self, ids):
        return self.head(self.emb(ids))


def test_composite_names_state_dict_and_grads():
    torch = require_torch()
    m = TwoLayer()
    assert list(m.params) == ["emb.weight", "head.weight", "head.bias"]
    assert list(m.grads) == list(m.params)
    # live arrays: writing through the union reaches the child
    assert m.params["head.bias"] is m.head.params["bias"]
    sd = m.state_dict()
    assert sd["head.weight"] is not m.head.params["weight"]
    # a torch state_dict with the same names loads and gives the same numbers
    tm = torch.nn.ModuleDict({"emb": torch.nn.Embedding(6, 4, dtype=torch.float64),
                              "head": torch.nn.Linear(4, 3, dtype=torch.float64)})
    m.load_state_dict(tm.state_dict())
    ids = np.array([[1, 5], [0, 0]])
    np.testing.assert_allclose(
        m(ids), tm["head"](tm["emb"](torch.as_tensor(ids))).detach().numpy(), rtol=1e-14)
    # torch tensors that require grad load too
    m.load_state_dict(dict(tm.named_parameters()))
    m.zero_grad()
    m.grads["head.weight"][...] = 1
    assert np.all(m.head.grads["weight"] == 1)
    m.zero_grad()
    assert np.all(m.head.grads["weight"] == 0)


def test_load_state_dict_reports_every_problem_and_changes_nothing():
    m = TwoLayer()
    before = m.state_dict()
    bad = dict(before)
    del bad["emb.weight"]
    bad["head.weight"] = np.zeros((4, 3))
    bad["head.bias"] = np.zeros(3, np.complex128)
    bad["extra"] = np.zeros(1)
    with pytest.raises(ValueError) as e:
        m.load_state_dict(bad)
    msg = str(e.value)
    for part in ("emb.weight", "extra", "head.weight", "(3, 4)", "(4, 3)", "head.bias"):
        assert part in msg
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    # strict=False skips absent/extra keys but still loads what matches
    m.load_state_dict({"head.bias": np.full(3, 7.0), "extra": 1}, strict=False)
    assert np.all(m.head.params["bias"] == 7.0)
    with pytest.raises(ValueError, match="head.bias"):
        m.load_state_dict({"head.bias": np.zeros(4)}, strict=False)
    m.load_state_dict(before)
    # a valid load converts dtype and calls params_updated
    seen = []
    m.head.params_updated = lambda: seen.append(1)
    good = {k: v.astype(np.float32) + 1 for k, v in before.items()}
    m.load_state_dict(good)
    assert seen == [1]
    np.testing.assert_allclose(m.params["emb.weight"], before["emb.weight"] + 1, rtol=1e-6)
    assert m.params["emb.weight"].dtype == np.float64


def test_sequential_forward_backward_and_fd():
    seq = Sequential(Linear(3, 5, dtype=np.float64, seed=0), Linear(5, 2, dtype=np.float64, seed=1))
    assert list(seq.params) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    named = Sequential(encoder=Linear(3, 5, seed=0), decoder=Linear(5, 2, seed=1))
    assert list(named.state_dict()) == ["encoder.weight", "encoder.bias",
                                        "decoder.weight", "decoder.bias"]
    assert named["decoder"] is named.decoder is named[1] and len(named) == 2
    x = RNG.standard_normal((4, 2, 3))
    dy = RNG.standard_normal((4, 2, 2))
    y, back = seq.forward_train(x)
    np.testing.assert_allclose(y, seq[1](seq[0](x)), rtol=1e-14)
    dx = back(dy)
    arrays = [x] + list(seq.params.values())
    grads = [dx] + list(seq.grads.values())
    assert fd_check(lambda a: float(np.sum(seq(a[0]) * dy)), arrays, grads) < 1e-8
    with pytest.raises(RuntimeError):
        back(dy)
    with pytest.raises(TypeError):
        Sequential(np.zeros(3))


def test_params_updated_forwarding_and_rng_state():
    m = TwoLayer()
    seen = []
    m.head.params_updated = lambda: seen.append("head")
    m.params_updated()
    assert seen == ["head"]
    st = m.rng_state()
    assert set(st) == {"emb", "drop", "head"}
    x = np.ones((4, 4))
    a, _ = m.drop.forward_train(x)
    m.set_rng_state(st)
    b, _ = m.drop.forward_train(x)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError):
        m.set_rng_state({"nothing": st["drop"]})


def test_lazy_exports_and_helpers():
    assert pyrnn.Linear is Linear and pyrnn.Sequential is Sequential
    assert pyrnn.Embedding is Embedding and pyrnn.Dropout is Dropout
    with pytest.raises(ValueError, match=r"h0: expected shape \(T, 2, \*\), got \(3, 4\)"):
        check_shape("h0", np.zeros((3, 4)), ("T", 2, None))
    f = once(lambda v: v + 1)
    assert f(1) == 2
    with pytest.raises(RuntimeError):
        f(1)


# ---------------------------------------------------------------- initialisers

def test_orthogonal_per_gate_blocks():
    H = 5
    w = np.empty((4 * H, H))
    init.orthogonal(w, gain=2.0, rng=np.random.default_rng(0))
    for g in range(4):
        blk = w[g * H:(g + 1) * H]
        np.testing.assert_allclose(blk @ blk.T, 4 * np.eye(H), atol=1e-12)
    w2 = np.empty((4 * H, H))
    init.orthogonal(w2, gain=2.0, rng=0)
    np.testing.assert_array_equal(w, w2)  # seeded
    rect = np.empty((3, 7), np.float32)
    init.orthogonal(rect, rng=1)
    np.testing.assert_allclose(rect @ rect.T, np.eye(3), atol=1e-6)
    one = np.empty((6, 4))
    init.orthogonal(one, rng=2, num_gates=1)
    np.testing.assert_allclose(one.T @ one, np.eye(4), atol=1e-12)


def test_uniform_xavier_kaiming_and_forget_bias():
    rng = np.random.default_rng(0)
    w = np.empty((400, 100))
    init.uniform_default(w, 25, rng)
    assert 0.19 < np.abs(w).max() <= 0.2
    init.xavier_uniform(w, rng=rng)
    a = math.sqrt(6 / 500)
    assert 0.99 * a < np.abs(w).max() <= a
    assert abs(w.var() - a * a / 3) < 0.02 * a * a
    init.kaiming_uniform(w, rng=rng)
    b = math.sqrt(6 / 100)  # gain sqrt(2) (a=0), fan_in 100
    assert 0.99 * b < np.abs(w).max() <= b
    assert init.he_uniform is init.kaiming_uniform
    init.kaiming_normal(w, mode="fan_out", nonlinearity="relu", rng=rng)
    assert abs(w.std() - math.sqrt(2 / 400)) < 0.01 * math.sqrt(2 / 400) * 3
    init.xavier_normal(w, gain=init.calculate_gain("tanh"), rng=rng)
    assert abs(w.std() - 5 / 3 * math.sqrt(2 / 500)) < 0.03 * 5 / 3 * math.sqrt(2 / 500)
    b4 = np.zeros(12)
    init.lstm_forget_bias(b4, 3)
    np.testing.assert_array_equal(b4, [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    with pytest.raises(ValueError):
        init.lstm_forget_bias(np.zeros(10), 3)
    with pytest.raises(TypeError):
        init.xavier_uniform([[0.0]])
