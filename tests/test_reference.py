"""The NumPy reference is the oracle for the compiled core, so it is proven here:
against PyTorch where torch has the same model, by finite differences and exact
identities where it does not (GRU_RB, MGRU)."""
import math

import numpy as np
import pytest

from pyrnn import reference as R
from _oracle import fd_check, random_layer_inputs, random_params, torch_cell_run, torch_layer_run

T, B, I, H = 5, 4, 3, 4
TOL = 1e-10


def make_inputs(mode, L, D, Hout, dtype=np.float64, seed=0):
    """x, hx, dy, dhn for a layer of the given shape (hx/dhn are tuples for LSTM)."""
    return random_layer_inputs(mode, T, B, I, H, L, D, Hout, dtype, seed=seed + 100)


def split(mode, state):
    return state if mode == "LSTM" else (state, None)


# ---------------------------------------------------------------- parity with torch

TORCH_MODELS = [("RNN_TANH", 0), ("RNN_RELU", 0), ("LSTM", 0), ("LSTM", 3), ("GRU", 0)]
# (num_layers, bidirectional, with hx, lengths, bias, with dhn)
CONFIGS = {
    "1L": (1, False, False, None, True, True),
    "2L-bi-hx-lengths": (2, True, True, [3, 0, T, 1], True, True),
    "1L-bi-lengths": (1, True, False, [T, 2, 0, 4], True, False),
    "2L-hx-lengths-nobias": (2, False, True, [1, T, 0, 3], False, True),
    "2L-bi-hx": (2, True, True, None, True, True),
}


@pytest.mark.parametrize("cfg", list(CONFIGS))
@pytest.mark.parametrize("mode,proj", TORCH_MODELS)
def test_layer_matches_torch(mode, proj, cfg):
    L, bi, with_hx, lengths, bias, with_dhn = CONFIGS[cfg]
    D = 2 if bi else 1
    Hout = proj or H
    p = random_params(mode, I, H, L, bi, proj_size=proj, bias=bias, seed=1)
    x, hx, dy, dhn = make_inputs(mode, L, D, Hout)
    hx = hx if with_hx else None
    dhn = dhn if with_dhn else None
    if mode == "LSTM" and with_dhn and lengths is None:
        dhn = (None, dhn[1])          # a tuple with a missing item means zeros
    lens = None if lengths is None else np.array(lengths)

    y, hn, cache = R.layer_forward(mode, p, x, hx, lens, L, bi)
    dx, dhx, grads = R.layer_backward(cache, dy, dhn)
    ref = torch_layer_run(mode, p, x, hx, lens, L, bi, dy=dy, dhn=dhn)

    hn, cn = split(mode, hn)
    dh0, dc0 = split(mode, dhx)
    assert y.shape == (T, B, D * Hout) and hn.shape == (L * D, B, Hout)
    np.testing.assert_allclose(y, ref["y"], rtol=0, atol=TOL)
    np.testing.assert_allclose(hn, ref["hn"], rtol=0, atol=TOL)
    np.testing.assert_allclose(dx, ref["dx"], rtol=0, atol=TOL)
    np.testing.assert_allclose(dh0, ref["dh0"], rtol=0, atol=TOL)
    if mode == "LSTM":
        np.testing.assert_allclose(cn, ref["cn"], rtol=0, atol=TOL)
        np.testing.assert_allclose(dc0, ref["dc0"], rtol=0, atol=TOL)
    assert set(grads) == set(p) == set(ref["grads"])
    for name in p:
        assert grads[name].shape == p[name].shape
        np.testing.assert_allclose(grads[name], ref["grads"][name], rtol=0, atol=TOL,
                                   err_msg=name)
    # the lengths really masked something: the padded steps are exact zeros
    if lens is not None:
        for b, n in enumerate(lens):
            assert not y[n:, b].any()


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("with_hx", [True, False])
@pytest.mark.parametrize("mode", ["RNN_TANH", "RNN_RELU", "LSTM", "GRU"])
def test_cell_matches_torch(mode, with_hx, bias):
    rng = np.random.default_rng(7)
    p = random_params(mode, I, H, bias=bias, seed=2, cell=True)
    x = rng.standard_normal((B, I))
    h, c, dh1, dc1 = (rng.standard_normal((B, H)) for _ in range(4))
    hx = ((h, c) if mode == "LSTM" else h) if with_hx else None
    dout = (dh1, dc1) if mode == "LSTM" else dh1

    out, cache = R.cell_forward(mode, p, x, hx)
    dx, dhx, grads = R.cell_backward(cache, dout)
    ref = torch_cell_run(mode, p, x, hx, dout=dout)

    h1, c1 = split(mode, out)
    dh, dc = split(mode, dhx)
    np.testing.assert_allclose(h1, ref["h1"], rtol=0, atol=TOL)
    np.testing.assert_allclose(dx, ref["dx"], rtol=0, atol=TOL)
    np.testing.assert_allclose(dh, ref["dh"], rtol=0, atol=TOL)
    if mode == "LSTM":
        np.testing.assert_allclose(c1, ref["c1"], rtol=0, atol=TOL)
        np.testing.assert_allclose(dc, ref["dc"], rtol=0, atol=TOL)
    assert set(grads) == set(p)
    for name in p:
        np.testing.assert_allclose(grads[name], ref["grads"][name], rtol=0, atol=TOL,
                                   err_msg=name)


def test_lstm_cell_partial_dout_matches_torch():
    # (dh1, None) and (None, dc1) mean zeros for the missing part
    rng = np.random.default_rng(3)
    p = random_params("LSTM", I, H, seed=4, cell=True)
    x, h, c, g = (rng.standard_normal(s) for s in [(B, I), (B, H), (B, H), (B, H)])
    _, cache = R.cell_forward("LSTM", p, x, (h, c))
    for dout in [(g, None), (None, g)]:
        dx, (dh, dc), grads = R.cell_backward(cache, dout)
        ref = torch_cell_run("LSTM", p, x, (h, c), dout=dout)
        np.testing.assert_allclose(dx, ref["dx"], rtol=0, atol=TOL)
        np.testing.assert_allclose(dh, ref["dh"], rtol=0, atol=TOL)
        np.testing.assert_allclose(dc, ref["dc"], rtol=0, atol=TOL)
        np.testing.assert_allclose(grads["weight_hh"], ref["grads"]["weight_hh"], rtol=0, atol=TOL)


def test_float32_matches_torch_float32_and_reference_float64():
    L, bi, mode = 2, True, "LSTM"
    p64 = random_params(mode, I, H, L, bi, proj_size=2, seed=5)
    p32 = {k: v.astype(np.float32) for k, v in p64.items()}
    x, hx, dy, dhn = make_inputs(mode, L, 2, 2)
    lens = np.array([2, T, 0, 3])
    f32 = lambda t: tuple(a.astype(np.float32) for a in t) if isinstance(t, tuple) else t.astype(np.float32)

    y, (hn, cn), cache = R.layer_forward(mode, p32, x.astype(np.float32), f32(hx), lens, L, bi)
    dx, (dh0, dc0), grads = R.layer_backward(cache, f32(dy), f32(dhn))
    for a in (y, hn, cn, dx, dh0, dc0, *grads.values()):
        assert a.dtype == np.float32
    ref32 = torch_layer_run(mode, p32, x.astype(np.float32), f32(hx), lens, L, bi,
                            dy=f32(dy), dhn=f32(dhn))
    assert ref32["y"].dtype == np.float32
    y64, _, c64 = R.layer_forward(mode, p64, x, hx, lens, L, bi)
    dx64, _, g64 = R.layer_backward(c64, dy, dhn)
    for ref in (ref32["y"], y64):
        np.testing.assert_allclose(y, ref, rtol=0, atol=1e-5)
    for ref in (ref32["dx"], dx64):
        np.testing.assert_allclose(dx, ref, rtol=0, atol=1e-5)
    for name in p64:
        np.testing.assert_allclose(grads[name], g64[name], rtol=0, atol=2e-5, err_msg=name)
        np.testing.assert_allclose(grads[name], ref32["grads"][name], rtol=0, atol=2e-5)


# ------------------------------------------------- finite differences, every gradient

def layer_fd_error(mode, proj=0, L=2, bi=True, lengths=(3, 0, T, 1), bias=True):
    D = 2 if bi else 1
    p = random_params(mode, I, H, L, bi, proj_size=proj, bias=bias, seed=11)
    x, hx, dy, dhn = make_inputs(mode, L, D, proj or H, seed=3)
    lens = np.array(lengths)
    names = sorted(p)
    hs = list(hx) if mode == "LSTM" else [hx]

    def loss(arrs):
        xx, st, prm = arrs[0], arrs[1:1 + len(hs)], dict(zip(names, arrs[1 + len(hs):]))
        y, hn, _ = R.layer_forward(mode, prm, xx, tuple(st) if mode == "LSTM" else st[0],
                                   lens, L, bi)
        out = np.sum(y * dy)
        if mode == "LSTM":
            return out + np.sum(hn[0] * dhn[0]) + np.sum(hn[1] * dhn[1])
        return out + np.sum(hn * dhn)

    _, _, cache = R.layer_forward(mode, p, x, hx, lens, L, bi)
    dx, dhx, grads = R.layer_backward(cache, dy, dhn)
    dstate = list(dhx) if mode == "LSTM" else [dhx]
    arrays = [x] + hs + [p[n] for n in names]
    analytic = [dx] + dstate + [grads[n] for n in names]
    # the loss is not flat in any of them, so a zero gradient would be caught
    assert all(np.abs(g).max() > 1e-3 for g in analytic)
    return fd_check(loss, arrays, analytic, eps=1e-6, max_entries=40)


@pytest.mark.parametrize("mode,proj", [("GRU_RB", 0), ("MGRU", 0), ("GRU", 0), ("LSTM", 2),
                                       ("RNN_TANH", 0)])
def test_layer_gradients_by_finite_differences(mode, proj):
    assert layer_fd_error(mode, proj) < 1e-7


@pytest.mark.parametrize("mode", ["GRU_RB", "MGRU"])
def test_layer_gradients_by_finite_differences_nobias_unidirectional(mode):
    assert layer_fd_error(mode, L=2, bi=False, lengths=(T, 2, 4, 1), bias=False) < 1e-7


@pytest.mark.parametrize("mode", ["GRU_RB", "MGRU", "LSTM"])
def test_cell_gradients_by_finite_differences(mode):
    rng = np.random.default_rng(9)
    p = random_params(mode, I, H, proj_size=2 if mode == "LSTM" else 0, seed=12, cell=True)
    Hout = p["weight_hh"].shape[1]
    x, h, c = rng.standard_normal((B, I)), rng.standard_normal((B, Hout)), rng.standard_normal((B, H))
    dh1, dc1 = rng.standard_normal((B, Hout)), rng.standard_normal((B, H))
    names = sorted(p)
    lstm = mode == "LSTM"

    def loss(arrs):
        prm = dict(zip(names, arrs[3:]))
        out, _ = R.cell_forward(mode, prm, arrs[0], (arrs[1], arrs[2]) if lstm else arrs[1])
        return np.sum(out[0] * dh1) + np.sum(out[1] * dc1) if lstm else np.sum(out * dh1)

    _, cache = R.cell_forward(mode, p, x, (h, c) if lstm else h)
    dx, dhx, grads = R.cell_backward(cache, (dh1, dc1) if lstm else dh1)
    dh, dc = dhx if lstm else (dhx, np.zeros_like(c))
    err = fd_check(loss, [x, h, c] + [p[n] for n in names],
                   [dx, dh, dc] + [grads[n] for n in names])
    assert err < 1e-8


# -------------------------------------------------------------------- exact identities

def test_gru_rb_equals_gru_when_hidden_candidate_weights_are_zero():
    # with W_hn = 0 and b_hn = 0 both forms give n = tanh(W_in x + b_in)
    L, bi = 2, True
    p = random_params("GRU", I, H, L, bi, seed=21)
    for k in p:
        if k.startswith(("weight_hh", "bias_hh")):
            p[k][2 * H:] = 0
    x, hx, dy, dhn = make_inputs("GRU", L, 2, H, seed=4)
    lens = np.array([3, 0, T, 1])
    y1, hn1, c1 = R.layer_forward("GRU", p, x, hx, lens, L, bi)
    y2, hn2, c2 = R.layer_forward("GRU_RB", p, x, hx, lens, L, bi)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(hn1, hn2)
    dx1, dh1, g1 = R.layer_backward(c1, dy, dhn)
    dx2, dh2, g2 = R.layer_backward(c2, dy, dhn)
    np.testing.assert_array_equal(dx1, dx2)
    np.testing.assert_array_equal(dh1, dh2)
    for k in p:
        # W_hn and b_hn see r*(W h) vs W (r*h): their gradients legitimately differ
        rows = slice(None) if k.startswith(("weight_ih", "bias_ih")) else slice(0, 2 * H)
        np.testing.assert_array_equal(g1[k][rows], g2[k][rows], err_msg=k)
    assert np.abs(g1["weight_hh_l0"][2 * H:] - g2["weight_hh_l0"][2 * H:]).max() > 1e-3


def test_mgru_equals_gru_with_reset_gate_saturated_at_one():
    # sigmoid(100) rounds to exactly 1.0, so r*(W_hn h + b_hn) = W_hn h + b_hn bit for bit,
    # and the reset gate's gradient r*(1-r) is exactly 0
    L, bi = 2, True
    pm = random_params("MGRU", I, H, L, bi, seed=22)
    pg = {}
    for k, v in pm.items():
        rgate = np.zeros((H,) + v.shape[1:])
        if k.startswith("bias_ih"):
            rgate[:] = 100.0
        pg[k] = np.concatenate([rgate, v])
    x, hx, dy, dhn = make_inputs("GRU", L, 2, H, seed=5)
    lens = np.array([T, 2, 0, 4])
    yg, hg, cg = R.layer_forward("GRU", pg, x, hx, lens, L, bi)
    ym, hm, cm = R.layer_forward("MGRU", pm, x, hx, lens, L, bi)
    np.testing.assert_array_equal(ym, yg)
    np.testing.assert_array_equal(hm, hg)
    dxg, dhg, gg = R.layer_backward(cg, dy, dhn)
    dxm, dhm, gm = R.layer_backward(cm, dy, dhn)
    np.testing.assert_array_equal(dxm, dxg)
    np.testing.assert_array_equal(dhm, dhg)
    for k in pm:
        np.testing.assert_array_equal(gm[k], gg[k][H:], err_msg=k)
        assert not gg[k][:H].any()


def test_mgru_with_update_gate_saturated_keeps_state():
    # z = sigmoid(100) = 1.0 exactly: h' = 0*n + 1*h = h, and all gradient flows to h0
    pm = random_params("MGRU", I, H, seed=23)
    pm["weight_ih_l0"][:H] = 0
    pm["weight_hh_l0"][:H] = 0
    pm["bias_ih_l0"][:H] = 100.0
    pm["bias_hh_l0"][:H] = 0
    x, h0, dy, dhn = make_inputs("MGRU", 1, 1, H, seed=6)
    y, hn, cache = R.layer_forward("MGRU", pm, x, h0, None, 1, False)
    np.testing.assert_array_equal(y, np.broadcast_to(h0, y.shape))
    np.testing.assert_array_equal(hn, h0)
    dx, dh0, grads = R.layer_backward(cache, dy, dhn)
    assert not dx.any()
    np.testing.assert_allclose(dh0[0], dy.sum(axis=0) + dhn[0], rtol=1e-14)


def _sig(v):
    return 1.0 / (1.0 + math.exp(-v))


def test_scalar_cells_by_hand():
    # H = I = B = 1: each equation written out with the math module
    x, h = 0.7, -0.4
    wi, wh, bi, bh = [0.3, -0.5, 0.9], [0.8, 0.2, -0.6], [0.1, -0.2, 0.05], [-0.3, 0.4, 0.25]
    p = {"weight_ih": np.array(wi)[:, None], "weight_hh": np.array(wh)[:, None],
         "bias_ih": np.array(bi), "bias_hh": np.array(bh)}
    r = _sig(wi[0] * x + bi[0] + wh[0] * h + bh[0])
    z = _sig(wi[1] * x + bi[1] + wh[1] * h + bh[1])
    cases = {
        "GRU": (1 - z) * math.tanh(wi[2] * x + bi[2] + r * (wh[2] * h + bh[2])) + z * h,
        "GRU_RB": (1 - z) * math.tanh(wi[2] * x + bi[2] + wh[2] * (r * h) + bh[2]) + z * h,
    }
    zm = _sig(wi[0] * x + bi[0] + wh[0] * h + bh[0])
    pm = {k: v[:2] for k, v in p.items()}
    cases["MGRU"] = (1 - zm) * math.tanh(wi[1] * x + bi[1] + wh[1] * h + bh[1]) + zm * h
    pr = {k: v[:1] for k, v in p.items()}
    cases["RNN_TANH"] = math.tanh(wi[0] * x + bi[0] + wh[0] * h + bh[0])
    cases["RNN_RELU"] = max(0.0, wi[0] * x + bi[0] + wh[0] * h + bh[0])
    for mode, want in cases.items():
        prm = pm if mode == "MGRU" else pr if mode.startswith("RNN") else p
        got, _ = R.cell_forward(mode, prm, np.array([[x]]), np.array([[h]]))
        assert got.shape == (1, 1)
        assert abs(got[0, 0] - want) < 1e-15, mode
    assert abs(cases["GRU"] - cases["GRU_RB"]) > 1e-3   # the two resets really differ


# ------------------------------------------------------------------ lengths, dtypes, edges

@pytest.mark.parametrize("mode", ["GRU_RB", "MGRU", "LSTM"])
def test_lengths_semantics(mode):
    L, bi = 2, True
    p = random_params(mode, I, H, L, bi, seed=31)
    x, hx, dy, dhn = make_inputs(mode, L, 2, H, seed=7)
    lens = np.array([3, 0, T, 1])
    y, hn, cache = R.layer_forward(mode, p, x, hx, lens, L, bi)
    dx, dhx, _ = R.layer_backward(cache, dy, dhn)
    h0, c0 = split(mode, hx)
    hn_, cn_ = split(mode, hn)
    dh0, dc0 = split(mode, dhx)
    dhn_, dcn_ = split(mode, dhn)
    # length 0: nothing runs, state passes through, gradient too
    assert not y[:, 1].any() and not dx[:, 1].any()
    np.testing.assert_array_equal(hn_[:, 1], h0[:, 1])
    np.testing.assert_array_equal(dh0[:, 1], dhn_[:, 1])
    if mode == "LSTM":
        np.testing.assert_array_equal(cn_[:, 1], c0[:, 1])
        np.testing.assert_array_equal(dc0[:, 1], dcn_[:, 1])
    # a sequence of length n behaves as if the input were cut to n steps (both directions)
    for b in (0, 3):
        n = lens[b]
        hb = tuple(s[:, b:b + 1] for s in hx) if mode == "LSTM" else hx[:, b:b + 1]
        yb, hnb, _ = R.layer_forward(mode, p, x[:n, b:b + 1], hb, None, L, bi)
        np.testing.assert_allclose(y[:n, b:b + 1], yb, rtol=0, atol=1e-14)
        np.testing.assert_allclose(split(mode, hn)[0][:, b:b + 1], split(mode, hnb)[0],
                                   rtol=0, atol=1e-14)
        assert not y[n:, b].any()
    # full lengths are the same as no lengths, bit for bit
    y_full, hn_full, _ = R.layer_forward(mode, p, x, hx, np.full(B, T), L, bi)
    y_none, hn_none, _ = R.layer_forward(mode, p, x, hx, None, L, bi)
    np.testing.assert_array_equal(y_full, y_none)
    np.testing.assert_array_equal(split(mode, hn_full)[0], split(mode, hn_none)[0])


@pytest.mark.parametrize("mode", R.MODES)
def test_hx_none_is_zeros_and_dtype_follows_input(mode):
    p = random_params(mode, I, H, 1, True, seed=41, dtype=np.float32)
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    y1, hn1, c1 = R.layer_forward(mode, p, x, None, None, 1, True)
    z = np.zeros((2, B, H), np.float32)
    y2, hn2, _ = R.layer_forward(mode, p, x, (z, z) if mode == "LSTM" else z, None, 1, True)
    np.testing.assert_array_equal(y1, y2)
    assert y1.dtype == np.float32 and split(mode, hn1)[0].dtype == np.float32
    dx, dhx, grads = R.layer_backward(c1, np.ones_like(y1))
    assert dx.dtype == np.float32 and split(mode, dhx)[0].dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads.values())
    # dhx is an array even though hx was None, and nonzero
    assert np.abs(split(mode, dhx)[0]).max() > 0


def test_gate_count_and_bad_input():
    assert [R.gate_count(m) for m in R.MODES] == [1, 1, 4, 3, 3, 2]
    with pytest.raises(ValueError, match="mode"):
        R.gate_count("LSTMX")
    p = random_params("GRU", I, H, seed=0)
    x = np.zeros((T, B, I))
    with pytest.raises(ValueError, match="lengths"):
        R.layer_forward("GRU", p, x, lengths=np.array([1, 2, T + 1, 0]))
    with pytest.raises(ValueError, match="hx"):
        R.layer_forward("GRU", p, x, hx=np.zeros((2, B, H)))


def test_empty_sequence():
    p = random_params("LSTM", I, H, 2, True, seed=0)
    x, hx, _, dhn = make_inputs("LSTM", 2, 2, H)
    y, (hn, cn), cache = R.layer_forward("LSTM", p, x[:0], hx, None, 2, True)
    assert y.shape == (0, B, 2 * H)
    np.testing.assert_array_equal(hn, hx[0])
    dx, (dh0, dc0), grads = R.layer_backward(cache, np.zeros((0, B, 2 * H)), dhn)
    assert dx.shape == (0, B, I)
    np.testing.assert_array_equal(dh0, dhn[0])
    np.testing.assert_array_equal(dc0, dhn[1])
    assert all(grads[k].shape == p[k].shape and not grads[k].any() for k in p)


# ------------------------------------------------------------------ the oracle helpers

def test_require_torch_fails_loudly_only_when_required(monkeypatch):
    import sys

    import _oracle
    monkeypatch.setitem(sys.modules, "torch", None)     # makes `import torch` fail
    monkeypatch.setenv("PYRNN_REQUIRE_TORCH", "1")
    with pytest.raises(RuntimeError, match="PYRNN_REQUIRE_TORCH"):
        _oracle.require_torch()
    monkeypatch.delenv("PYRNN_REQUIRE_TORCH")
    with pytest.raises(pytest.skip.Exception):
        _oracle.require_torch()


def test_fd_check_detects_a_wrong_gradient():
    a = np.random.default_rng(0).standard_normal((30, 20))   # 600 entries: subset path
    f = lambda arrs: np.sum(np.sin(arrs[0]))
    assert fd_check(f, [a], [np.cos(a)]) < 1e-8
    wrong = np.cos(a)
    wrong[:, :] += 1e-3
    assert fd_check(f, [a], [wrong]) > 5e-4
