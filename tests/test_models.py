"""Models for the four RNN shapes: gradients, consistency, torch parity, learning, save/load."""
import time

import numpy as np
import pytest

import pyrnn.io
from pyrnn import clip, losses, optim, tasks
from pyrnn.models import LanguageModel, Seq2Seq, SequenceClassifier, SequenceTagger
from pyrnn.sampling import sample_logits

from _oracle import fd_check, require_torch

CELLS = ["lstm", "gru", "rnn", "mgru"]


def _ce_loss_fn(model, run, targets, mask=None):
    """Scalar loss of the model's current params, for finite differences."""
    def f(_arrays):
        model.params_updated()
        return losses.cross_entropy(run(), targets, mask=mask, reduction="sum")[0]
    return f


def _fd_all_params(model, f):
    names = list(model.params)
    return fd_check(f, [model.params[k] for k in names], [model.grads[k].copy() for k in names],
                    max_entries=12)


# ---------------------------------------------------------------- language model

@pytest.mark.parametrize("cell", CELLS)
def test_lm_gradients_match_finite_differences(cell):
    rng = np.random.default_rng(1)
    m = LanguageModel(7, embed_size=4, hidden_size=5, num_layers=2, cell=cell,
                      dtype=np.float64, seed=3)
    ids = rng.integers(0, 7, (5, 3))
    tgt = rng.integers(0, 7, (5, 3))
    state0 = m.detach_state(m.forward(rng.integers(0, 7, (3, 3)))[1])  # a carried state
    logits, _, back = m.forward_train(ids, state0)
    m.zero_grad()
    back(losses.cross_entropy(logits, tgt, reduction="sum")[1])
    assert set(m.grads) >= {"embed.weight", "rnn.weight_hh_l1", "head.weight", "head.bias"}
    err = _fd_all_params(m, _ce_loss_fn(m, lambda: m.forward(ids, state0)[0], tgt))
    assert err < 1e-6


def test_lm_forward_train_equals_forward_and_state_carries():
    rng = np.random.default_rng(0)
    for cell in CELLS:
        m = LanguageModel(9, embed_size=6, hidden_size=8, num_layers=2, cell=cell, seed=0)
        ids = rng.integers(0, 9, (12, 4))
        lg, st = m.forward(ids)
        lg2, st2, _ = m.forward_train(ids)
        np.testing.assert_array_equal(lg, lg2)
        a, sa = m.forward(ids[:5])
        b, sb = m.forward(ids[5:], sa)
        np.testing.assert_allclose(np.concatenate([a, b]), lg, rtol=1e-5, atol=1e-6)
        for x, y in zip(np.atleast_1d(sb) if cell != "lstm" else sb,
                        np.atleast_1d(st) if cell != "lstm" else st):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
        assert lg.dtype == np.float32
        z = m.init_state(4)
        if cell == "lstm":
            assert z[0].shape == z[1].shape == (2, 4, 8) and not z[0].any()
        else:
            assert z.shape == (2, 4, 8) and not z.any()
        np.testing.assert_array_equal(m.forward(ids, z)[0], lg)


def test_lm_detach_state_copies():
    m = LanguageModel(5, 3, 4, 1, seed=0)
    _, st = m.forward(np.zeros((2, 1), np.int64))
    d = m.detach_state(st)
    d[0][...] = 7
    assert not np.any(st[0] == 7)


def test_lm_generate_streams_and_is_seeded():
    m = LanguageModel(12, 4, 8, 1, seed=0)
    g = m.generate([1, 2, 3], 20, temperature=0.8, top_k=5, seed=42)
    first = next(g)
    assert isinstance(first, int) and 0 <= first < 12
    rest = list(g)
    assert len(rest) == 19
    assert [first] + rest == list(m.generate([1, 2, 3], 20, temperature=0.8, top_k=5, seed=42))
    # greedy generation equals argmax of a teacher-forced forward over its own output
    out = list(m.generate([4], 6, temperature=0))
    lg, _ = m.forward(np.array([4] + out[:-1])[:, None])
    assert out == list(lg[:, 0].argmax(-1))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "mgru"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lm_generate_carries_the_state_into_its_stream(cell, dtype, monkeypatch):
    """After the prime, generate steps a Stream: from a given state, its logits are
    the teacher-forced forward's (greedy ids equal their argmax), and a sampled run
    draws the same ids as a loop of 1-step forward calls with the same generator."""
    import pyrnn.models
    import pyrnn.stream
    made = []
    monkeypatch.setattr(pyrnn.models, "Stream",
                        lambda *a, **k: made.append(1) or pyrnn.stream.Stream(*a, **k))
    m = LanguageModel(30, 8, 32, 2, cell=cell, dtype=dtype, seed=1)
    rng = np.random.default_rng(5)
    _, state = m.forward(rng.integers(0, 30, (9, 1)))          # a non-zero start
    prime = [3, 7, 1]
    out = list(m.generate(prime, 12, temperature=0, state=state))
    lg, _ = m.forward(np.array(prime + out[:-1])[:, None], state)
    assert out == list(lg[len(prime) - 1:, 0].argmax(-1))
    assert made == [1]          # one stream for the whole run
    got = list(m.generate(prime, 12, temperature=1.3, seed=11, state=state))
    gen, want = np.random.default_rng(11), []
    lg, st = m.forward(np.array(prime)[:, None], state)
    for _ in range(12):
        want.append(sample_logits(lg[-1, 0], 1.3, rng=gen))
        lg, st = m.forward(np.array([[want[-1]]]), st)
    assert got == want


def test_lm_matches_torch_training_50_steps():
    torch = require_torch()
    V, E, H, L, T, B = 13, 6, 10, 2, 7, 4
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: extra torch threads only contend with ours
    try:
        _lm_torch_parity(torch, V, E, H, L, T, B)
    finally:
        torch.set_num_threads(threads)


def _lm_torch_parity(torch, V, E, H, L, T, B):

    class TorchLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(V, E)
            self.rnn = torch.nn.LSTM(E, H, L)
            self.head = torch.nn.Linear(H, V)

        def forward(self, ids, state):
            y, state = self.rnn(self.embed(ids), state)
            return self.head(y), state

    tm = TorchLM().double()
    m = LanguageModel(V, E, H, L, cell="lstm", dtype=np.float64, seed=1)
    m.load_state_dict(tm.state_dict())
    topt = torch.optim.Adam(tm.parameters(), lr=0.01)
    opt = optim.Adam(m, lr=0.01)
    stream = np.random.default_rng(0).integers(0, V, (50 * T + 1, B))
    tstate, state = None, None
    lt, lp = [], []
    for step in range(50):
        x = stream[step * T:(step + 1) * T]
        y = stream[step * T + 1:(step + 1) * T + 1]
        topt.zero_grad()
        out, tstate = tm(torch.as_tensor(x), tstate)
        loss = torch.nn.functional.cross_entropy(out.reshape(-1, V), torch.as_tensor(y).reshape(-1))
        loss.backward()
        topt.step()
        tstate = tuple(s.detach() for s in tstate)
        lt.append(loss.item())

        opt.zero_grad()
        logits, state, back = m.forward_train(x, state)
        loss_p, g = losses.cross_entropy(logits, y)
        back(g)
        opt.step()
        state = m.detach_state(state)
        lp.append(loss_p)
    lt, lp = np.array(lt), np.array(lp)
    assert lt[-1] < lt[0] - 0.1  # it did learn something
    np.testing.assert_allclose(lp, lt, rtol=1e-3)
    assert np.max(np.abs(lp - lt) / lt) < 1e-8  # float64 on both sides: far tighter in fact


# ---------------------------------------------------------------- learning

@pytest.fixture(scope="module", autouse=True)
def _one_blas_thread():
    # pyrnn's own threads own the cores; numpy's BLAS (used by Linear) spinning
    # extra threads beside them makes the small GEMMs here several times slower
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        yield


def _train(model, batch_fn, metric_fn, good, max_steps, lr=0.01, every=50):
    """Adam + clipping until metric_fn() is good (checked every ``every`` steps)."""
    opt = optim.Adam(model, lr=lr)
    t0 = time.perf_counter()
    metric = metric_fn()
    for step in range(1, max_steps + 1):
        opt.zero_grad()
        batch_fn()
        clip.clip_grad_norm(model, 1.0)
        opt.step()
        if step % every == 0:
            metric = metric_fn()
            if good(metric):
                break
    print(f"{type(model).__name__}: metric {metric:.4f} after {step} steps, "
          f"{time.perf_counter() - t0:.1f} s")
    return metric


def test_adding_problem_T50_learns():
    rng = np.random.default_rng(0)
    m = SequenceClassifier(input_size=2, num_classes=1, hidden_size=64, seed=0)
    xv, yv = tasks.adding_problem(1000, 50, rng=123)

    def batch():
        x, y = tasks.adding_problem(64, 50, rng=rng)
        p, back = m.forward_train(x)
        back(losses.mse_loss(p, y)[1])

    mse = _train(m, batch, lambda: losses.mse_loss(m(xv), yv)[0], lambda v: v < 0.005,
                 max_steps=1500)
    assert mse < 0.01  # a constant guess scores ~0.167


def test_digit_reversal_seq2seq_learns():
    rng = np.random.default_rng(0)
    m = Seq2Seq(tasks.DIGIT_VOCAB, tasks.DIGIT_VOCAB, embed_size=16, hidden_size=96, seed=0)
    v = tasks.digit_reversal(1000, 3, 7, rng=123)

    def batch():
        d = tasks.digit_reversal(64, 3, 7, rng=rng)
        lg, back = m.forward_train(d["src"], d["src_lengths"], d["tgt_in"])
        back(losses.cross_entropy(lg, d["tgt_out"], mask=d["tgt_mask"])[1])

    def exact():
        out = m.greedy_decode(v["src"], v["src_lengths"], 8, tasks.DIGIT_BOS, tasks.DIGIT_EOS,
                              pad_id=tasks.DIGIT_PAD)
        T = v["tgt_out"].shape[0]
        return np.all((out[:T] == v["tgt_out"]) | ~v["tgt_mask"], axis=0).mean()

    acc = _train(m, batch, exact, lambda a: a >= 0.98, max_steps=1000)
    assert acc >= 0.95


def test_name_tagging_learns():
    rng = np.random.default_rng(0)
    m = SequenceTagger(tasks.TAG_VOCAB, 2, embed_size=16, hidden_size=32, seed=0)
    vi, vl, vt = tasks.name_tagging(1000, rng=123)
    vmask = np.arange(vi.shape[0])[:, None] < vl[None]
    assert 0.5 < (vt[vmask] == 0).mean() < 0.8  # the majority tag alone is far from the bar

    def batch():
        i, lens, t = tasks.name_tagging(32, rng=rng)
        lg, back = m.forward_train(i, lens)
        back(losses.cross_entropy(lg, t, mask=np.arange(i.shape[0])[:, None] < lens[None])[1])

    acc = _train(m, batch, lambda: (m.predict(vi, vl) == vt)[vmask].mean(),
                 lambda a: a >= 0.995, max_steps=1000)
    assert acc >= 0.98


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_first_marker_classifier_learns(pooling):
    rng = np.random.default_rng(0)
    m = SequenceClassifier(20, 4, embed_size=16, hidden_size=32, pooling=pooling, seed=0)
    vi, vl, vy = tasks.first_marker(1000, rng=123)

    def batch():
        i, lens, y = tasks.first_marker(32, rng=rng)
        lg, back = m.forward_train(i, lens)
        back(losses.cross_entropy(lg, y)[1])

    acc = _train(m, batch, lambda: (m.predict(vi, vl) == vy).mean(), lambda a: a >= 0.99,
                 max_steps=1500)
    assert acc >= 0.95


# ---------------------------------------------------------------- other shapes: gradients

@pytest.mark.parametrize("cell", ["lstm", "mgru"])
def test_tagger_gradients_match_finite_differences(cell):
    rng = np.random.default_rng(2)
    m = SequenceTagger(8, 3, embed_size=4, hidden_size=5, num_layers=2, cell=cell,
                       dtype=np.float64, seed=0)
    ids, lens = rng.integers(1, 8, (6, 3)), np.array([6, 2, 4])
    tags = rng.integers(0, 3, (6, 3))
    mask = np.arange(6)[:, None] < lens[None]
    lg, back = m.forward_train(ids, lens)
    m.zero_grad()
    back(losses.cross_entropy(lg, tags, mask=mask, reduction="sum")[1])
    err = _fd_all_params(m, _ce_loss_fn(m, lambda: m.forward(ids, lens), tags, mask))
    assert err < 1e-6


@pytest.mark.parametrize("cell,pooling,bidirectional",
                         [("lstm", "last", True), ("gru", "last", False),
                          ("lstm", "mean", False), ("mgru", "mean", True)])
def test_classifier_gradients_match_finite_differences(cell, pooling, bidirectional):
    rng = np.random.default_rng(3)
    m = SequenceClassifier(9, 3, embed_size=4, hidden_size=5, num_layers=2, cell=cell,
                           bidirectional=bidirectional, pooling=pooling, dtype=np.float64, seed=0)
    ids, lens = rng.integers(0, 9, (7, 4)), np.array([7, 1, 3, 5])
    y = rng.integers(0, 3, 4)
    lg, back = m.forward_train(ids, lens)
    np.testing.assert_array_equal(lg, m.forward(ids, lens))
    m.zero_grad()
    back(losses.cross_entropy(lg, y, reduction="sum")[1])
    err = _fd_all_params(m, _ce_loss_fn(m, lambda: m.forward(ids, lens), y))
    assert err < 1e-6


def test_classifier_float_input_gradients():
    rng = np.random.default_rng(4)
    m = SequenceClassifier(input_size=2, num_classes=1, hidden_size=4, dtype=np.float64, seed=0)
    x, y = tasks.adding_problem(3, 6, rng=rng, dtype=np.float64)
    p, back = m.forward_train(x)
    m.zero_grad()
    back(losses.mse_loss(p, y, reduction="sum")[1])

    def f(_):
        m.params_updated()
        return losses.mse_loss(m.forward(x), y, reduction="sum")[0]
    assert _fd_all_params(m, f) < 1e-6


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_seq2seq_gradients_match_finite_differences(cell):
    rng = np.random.default_rng(5)
    m = Seq2Seq(7, 6, embed_size=3, hidden_size=4, num_layers=2, cell=cell,
                dtype=np.float64, seed=0)
    src, sl = rng.integers(0, 7, (5, 3)), np.array([5, 2, 3])
    tin, tout = rng.integers(0, 6, (4, 3)), rng.integers(0, 6, (4, 3))
    lg, back = m.forward_train(src, sl, tin)
    np.testing.assert_array_equal(lg, m.forward(src, sl, tin))
    m.zero_grad()
    back(losses.cross_entropy(lg, tout, reduction="sum")[1])
    assert np.abs(m.grads["src_embed.weight"]).sum() > 0  # reached through the state
    err = _fd_all_params(m, _ce_loss_fn(m, lambda: m.forward(src, sl, tin), tout))
    assert err < 1e-6


def test_seq2seq_greedy_decode_matches_teacher_forcing_on_its_own_output():
    m = Seq2Seq(7, 6, embed_size=3, hidden_size=8, seed=1)
    src, sl = np.random.default_rng(0).integers(0, 7, (5, 2)), np.array([5, 3])
    out = m.greedy_decode(src, sl, 6, bos_id=0, eos_id=99)  # eos never produced: all 6 steps
    lg = m.forward(src, sl, np.concatenate([np.zeros((1, 2), np.int64), out[:-1]]))
    np.testing.assert_array_equal(out, lg.argmax(-1))
    s1 = m.generate(src, sl, 6, 0, 99, temperature=1.0, seed=3)
    np.testing.assert_array_equal(s1, m.generate(src, sl, 6, 0, 99, temperature=1.0, seed=3))
    np.testing.assert_array_equal(m.generate(src, sl, 6, 0, 99, temperature=0), out)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "mgru"])
def test_seq2seq_decodes_on_a_stream_as_decode_step_does(cell, monkeypatch):
    """Greedy and sampled decoding step the decoder as a Stream; each gives the ids
    of a loop of decode_step (1-step layer calls), EOS and padding included, and
    an empty batch or max_len 0 gives an empty result."""
    import pyrnn.models
    import pyrnn.stream
    made = []
    monkeypatch.setattr(pyrnn.models, "Stream",
                        lambda *a, **k: made.append(1) or pyrnn.stream.Stream(*a, **k))
    m = Seq2Seq(9, 7, embed_size=5, hidden_size=16, num_layers=2, cell=cell, seed=2)
    src, sl = np.random.default_rng(1).integers(0, 9, (6, 4)), np.array([6, 2, 4, 1])

    def by_steps(pick):
        out, state = np.full((8, 4), 6, np.int64), m.encode(src, sl)
        tok, done = np.zeros(4, np.int64), np.zeros(4, bool)
        for t in range(8):
            lg, state = m.decode_step(tok, state)
            tok = pick(lg)
            out[t] = np.where(done, 6, tok)
            done |= tok == 3
        return out

    np.testing.assert_array_equal(m.greedy_decode(src, sl, 8, 0, 3, pad_id=6),
                                  by_steps(lambda lg: lg.argmax(-1)))
    gen = np.random.default_rng(4)
    np.testing.assert_array_equal(m.generate(src, sl, 8, 0, 3, temperature=1.5, seed=4, pad_id=6),
                                  by_steps(lambda lg: sample_logits(lg, 1.5, rng=gen)))
    assert made == [1, 1]       # one stream per decode
    assert m.greedy_decode(src[:, :0], sl[:0], 8, 0, 3).shape == (8, 0)
    assert m.greedy_decode(src, sl, 0, 0, 3).shape == (0, 4)


# ---------------------------------------------------------------- save / load

def _models():
    rng = np.random.default_rng(0)
    ids, lens = rng.integers(0, 10, (6, 3)), np.array([6, 4, 2])
    yield LanguageModel(10, 4, 6, 2, cell="gru", seed=0), lambda m: m(ids)[0]
    yield LanguageModel(10, 4, 6, 1, cell="lstm", dtype=np.float64, seed=0), lambda m: m(ids)[0]
    yield SequenceTagger(10, 3, 4, 6, cell="mgru", seed=0), lambda m: m(ids, lens)
    yield (SequenceClassifier(10, 3, 4, 6, pooling="mean", bidirectional=True, seed=0),
           lambda m: m(ids, lens))
    x = rng.random((6, 3, 2)).astype(np.float32)
    yield SequenceClassifier(input_size=2, num_classes=1, hidden_size=6, cell="rnn", seed=0), \
        lambda m: m(x)
    yield Seq2Seq(10, 8, 4, 6, num_layers=2, seed=0), \
        lambda m: m.greedy_decode(ids, lens, 5, 1, 2).astype(np.float64) + m(ids, lens, ids[:4] % 8).sum()


@pytest.mark.parametrize("idx", range(6))
def test_save_load_round_trip(tmp_path, idx):
    model, run = list(_models())[idx]
    # move the parameters off their seeded start so a fresh build could not pass by luck
    for p in model.params.values():
        p += np.asarray(0.01, p.dtype)
    model.params_updated()
    path = tmp_path / "m.safetensors"
    pyrnn.io.save(model, path)
    loaded = pyrnn.io.load(path)
    assert type(loaded) is type(model) and loaded.config() == model.config()
    assert loaded.dtype == model.dtype
    np.testing.assert_array_equal(run(loaded), run(model))
