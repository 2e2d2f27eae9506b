"""Truncated-BPTT trainer: gradients, full-BPTT limit, checkpoints, resumption, seeding."""
import os
import signal

import numpy as np
import pytest

from pyrnn.io import load_arrays
from pyrnn.losses import cross_entropy
from pyrnn.models import LanguageModel
from pyrnn.optim import SGD, Adam, StepLR
from pyrnn.train import Trainer, batchify


def _ids(n, V, seed=0):
    # a learnable stream: mostly +1 mod V with some noise
    rng = np.random.default_rng(seed)
    ids = np.cumsum(rng.integers(1, 3, n)) % V
    return ids.astype(np.int64)


def _lm(dtype=np.float64, seed=1, dropout=0.0, cell="lstm", V=7):
    return LanguageModel(V, embed_size=5, hidden_size=6, num_layers=2, cell=cell,
                         dropout=dropout, dtype=dtype, seed=seed)


def test_batchify_streams():
    d = batchify(np.arange(23), 4)
    assert d.shape == (5, 4)
    assert d[:, 1].tolist() == [5, 6, 7, 8, 9]  # column = contiguous stream
    with pytest.raises(ValueError, match="too few"):
        batchify(np.arange(5), 4)


@pytest.mark.parametrize("cell,bptt", [("lstm", 4), ("gru", (3, 6))])
def test_window_gradient_matches_finite_differences(cell, bptt):
    model = _lm(cell=cell)
    tr = Trainer(model, SGD(model, lr=0.1), bptt=bptt, batch_size=3, progress=False)
    ids = _ids(3 * 40, 7)
    tr.fit(ids, steps=3)  # a non-zero carried state and context snapshots
    data = batchify(ids, 3)
    _, pos, off = tr._pos
    n_new = tr.k1
    n_ctx = min(tr.k2 - tr.k1, pos - off)
    state = tr._state_at(data, pos - n_ctx) if n_ctx else tr._state
    assert np.abs(np.asarray(state[0] if cell == "lstm" else state)).max() > 1e-3
    model.zero_grad()
    loss, _, _ = tr.window_step(data, pos, state, n_ctx, n_new)
    grads = {k: v.copy() for k, v in model.grads.items()}

    x = data[pos - n_ctx:pos + n_new]
    y = data[pos - n_ctx + 1:pos + n_new + 1][n_ctx:]

    def f():
        logits, _ = model.forward(x, state)  # the state is a constant input
        return cross_entropy(logits[n_ctx:], y)[0]

    assert f() == pytest.approx(loss, rel=1e-12)
    rng = np.random.default_rng(0)
    eps, checked = 1e-6, 0
    for name, p in model.params.items():
        for idx in rng.choice(p.size, size=min(4, p.size), replace=False):
            i = np.unravel_index(idx, p.shape)
            old = p[i]
            p[i] = old + eps
            model.params_updated()
            lp = f()
            p[i] = old - eps
            model.params_updated()
            lm = f()
            p[i] = old
            model.params_updated()
            num = (lp - lm) / (2 * eps)
            assert grads[name][i] == pytest.approx(num, rel=1e-5, abs=1e-9), (name, i)
            checked += 1
    assert checked >= 20


def test_bptt_k1_k2_long_equals_full_bptt():
    B, T, k1 = 3, 20, 5
    ids = _ids(B * (T + 1), 7, seed=3)
    model = _lm(seed=4)
    acc = {k: np.zeros_like(v) for k, v in model.grads.items()}

    def collect(tr, logs):
        if logs["event"] == "step":
            for k, g in tr.model.grads.items():
                acc[k] += g

    tr = Trainer(model, SGD(model, lr=0.0), bptt=(k1, 10 * T), batch_size=B,
                 progress=False, callbacks=[collect])
    tr.fit(ids, epochs=1)
    assert tr.step == T // k1

    data = batchify(ids, B)
    model.zero_grad()
    logits, _, back = model.forward_train(data[:T], model.init_state(B))
    full_loss, dl = cross_entropy(logits, data[1:T + 1])
    back(dl)
    # each window averages over its k1*B targets, the full loss over T*B
    for k, g in model.grads.items():
        np.testing.assert_allclose(acc[k] * k1 / T, g, rtol=1e-9, atol=1e-13, err_msg=k)
    assert np.mean([h["loss"] for h in tr.history]) == pytest.approx(full_loss, rel=1e-12)

    # truncation really changes the gradient (so the test above can fail)
    acc2 = {k: np.zeros_like(v) for k, v in model.grads.items()}

    def collect2(tr, logs):
        if logs["event"] == "step":
            for k, g in tr.model.grads.items():
                acc2[k] += g

    tr2 = Trainer(model, SGD(model, lr=0.0), bptt=k1, batch_size=B, progress=False,
                  callbacks=[collect2])
    tr2.fit(ids, epochs=1)
    diff = max(np.abs(acc2[k] * k1 / T - model.grads[k]).max() for k in acc2)
    assert diff > 1e-6


def _run(tmp_path, steps, interrupt_at=None, ckpt="ck.safetensors", resume=False,
         model_seed=11, trainer_seed=5):
    model = _lm(dtype=np.float32, seed=model_seed, dropout=0.2)
    opt = Adam(model, lr=3e-3)
    sched = StepLR(opt, step_size=7, gamma=0.9)
    cbs = []
    if interrupt_at is not None:
        def stop(tr, logs):
            if logs["event"] == "step" and tr.step == interrupt_at:
                raise KeyboardInterrupt
        cbs.append(stop)
    tr = Trainer(model, opt, bptt=(4, 6), batch_size=4, clip_norm=0.5, scheduler=sched,
                 callbacks=cbs, progress=False, checkpoint_path=str(tmp_path / ckpt),
                 checkpoint_every=10, random_offset=True, seed=trainer_seed)
    if resume:
        tr.resume(str(tmp_path / ckpt))
    # 150 rows per stream, 38 windows per epoch: 45 steps cross an epoch boundary
    tr.fit(_ids(600, 7, seed=9), steps=steps, valid_ids=_ids(200, 7, seed=10), eval_every=15)
    return model, tr


def test_resume_is_bit_identical(tmp_path):
    ref_model, ref = _run(tmp_path, 45, ckpt="ref.safetensors")
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, 45, interrupt_at=23)
    arrays, meta = load_arrays(tmp_path / "ck.safetensors")
    assert meta["checkpoint"]["step"] == 23
    # a different model seed and trainer seed: everything must come from the file
    model, tr = _run(tmp_path, 45, resume=True, model_seed=99, trainer_seed=98)
    assert tr.step == 45
    for k, v in ref_model.state_dict().items():
        assert np.array_equal(v, model.state_dict()[k]), k
    assert [h["loss"] for h in tr.history] == [h["loss"] for h in ref.history]
    assert [e["loss"] for e in tr.eval_history] == [e["loss"] for e in ref.eval_history]
    assert ref.history[-1]["loss"] < ref.history[0]["loss"]


def test_ctrl_c_leaves_valid_checkpoint(tmp_path):
    model = _lm(dtype=np.float32, seed=2)
    path = tmp_path / "int.safetensors"

    def sigint(tr, logs):
        if logs["event"] == "step" and tr.step == 6:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, deferred to the step end

    tr = Trainer(model, Adam(model, lr=1e-2), bptt=5, batch_size=4, progress=False,
                 callbacks=[sigint], checkpoint_path=str(path), on_interrupt="return")
    out = tr.fit(_ids(400, 7), steps=50)
    assert tr.interrupted and out["step"] == 6 and tr.step == 6
    arrays, meta = load_arrays(path)
    ck = meta["checkpoint"]
    assert ck["step"] == 6 and ck["pos"][1] == 30
    for k, v in model.state_dict().items():
        assert np.array_equal(arrays["model/" + k], v)
    h, c = tr._state
    assert np.array_equal(arrays["state/0"], h) and np.array_equal(arrays["state/1"], c)
    assert not os.path.exists(str(path) + ".tmp")
    assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []


def test_same_seed_same_losses():
    def run(seed):
        model = _lm(dtype=np.float32, seed=seed, dropout=0.1)
        tr = Trainer(model, Adam(model, lr=1e-2), bptt=8, batch_size=4, progress=False,
                     random_offset=True, seed=seed)
        tr.fit(_ids(800, 7), steps=12)
        return [h["loss"] for h in tr.history]

    a, b, c = run(3), run(3), run(4)
    assert a == b
    assert a != c


def test_evaluate_metrics_and_learning():
    model = _lm(dtype=np.float32, seed=0)
    tr = Trainer(model, Adam(model, lr=2e-2), bptt=10, batch_size=8, progress=False)
    valid = _ids(500, 7, seed=1)
    before = tr.evaluate(valid)
    assert before["loss"] == pytest.approx(np.log(7), rel=0.1)  # near uniform at init
    tr.fit(_ids(4000, 7, seed=2), steps=200)
    after = tr.evaluate(valid)
    assert after["perplexity"] == pytest.approx(np.exp(after["loss"]))
    assert after["bpc"] == pytest.approx(after["loss"] / np.log(2))
    # next id is +1 or +2 with equal odds: the best possible loss is log 2
    assert after["loss"] < 0.8 and after["accuracy"] > 0.45


def test_resume_rejects_other_settings(tmp_path):
    model = _lm(dtype=np.float32)
    p = str(tmp_path / "c.safetensors")
    tr = Trainer(model, Adam(model), bptt=5, batch_size=4, progress=False, checkpoint_path=p)
    tr.fit(_ids(200, 7), steps=2)
    tr2 = Trainer(model, Adam(model), bptt=6, batch_size=4, progress=False)
    with pytest.raises(ValueError, match="bptt"):
        tr2.resume(p)
    tr3 = Trainer(model, Adam(model), bptt=5, batch_size=4, progress=False)
    tr3.resume(p)
    with pytest.raises(ValueError, match="differ"):
        tr3.fit(_ids(200, 7, seed=1), steps=4)


def test_max_time_stops_training():
    model = _lm(dtype=np.float32)
    tr = Trainer(model, Adam(model), bptt=5, batch_size=4, progress=False)
    tr.fit(_ids(400, 7), steps=1000, max_time=0.0)
    assert tr.step == 0
    tr.fit(_ids(400, 7), steps=10**6, max_time=0.3)
    assert 1 <= tr.step < 10**6
