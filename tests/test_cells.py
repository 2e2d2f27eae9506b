"""Cells against torch.nn.*Cell, the NumPy reference and finite differences; errors."""
import numpy as np
import pytest

import pyrnn
from pyrnn import reference as R
from _oracle import fd_check, random_params, require_torch, torch_cell_run

I, H, B = 3, 5, 4


def make_cell(mode, bias=True, dtype=np.float64):
    kw = dict(bias=bias, dtype=dtype, seed=0)
    if mode in ("RNN_TANH", "RNN_RELU"):
        return pyrnn.RNNCell(I, H, nonlinearity="tanh" if mode == "RNN_TANH" else "relu", **kw)
    if mode == "LSTM":
        return pyrnn.LSTMCell(I, H, **kw)
    if mode in ("GRU", "GRU_RB"):
        return pyrnn.GRUCell(I, H, reset_after=mode == "GRU", **kw)
    return pyrnn.MinimalGRUCell(I, H, **kw)


def data(dtype, batched=True, seed=0):
    rng = np.random.default_rng(seed)
    s = (B,) if batched else ()
    return [rng.standard_normal(s + (n,)).astype(dtype) for n in (I, H, H, H, H)]


def run_cell(cell, mode, x, h, c, dh1, dc1, with_state=True):
    cell.zero_grad()
    if mode == "LSTM":
        (h1, c1), bw = cell.forward_train(x, (h, c) if with_state else None)
        h1i, c1i = cell(x, (h, c) if with_state else None)
        np.testing.assert_array_equal(h1, h1i)
        dx, (dh, dc) = bw((dh1, dc1))
        return dict(h1=h1, c1=c1, dx=dx, dh=dh, dc=dc, grads=dict(cell.grads))
    h1, bw = cell.forward_train(x, h if with_state else None)
    np.testing.assert_array_equal(h1, cell(x, h if with_state else None))
    dx, dh = bw(dh1)
    return dict(h1=h1, dx=dx, dh=dh, grads=dict(cell.grads))


def close(got, want, tol, what):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, what
    err = np.max(np.abs(got - want)) if got.size else 0.0
    assert err <= tol, f"{what}: {err:.3e} > {tol:.0e}"


TORCH = ["RNN_TANH", "RNN_RELU", "GRU", "LSTM"]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("mode", TORCH)
def test_cell_matches_torch(mode, dtype, bias):
    require_torch()
    tol = 1e-10 if dtype == np.float64 else 1e-5
    p = random_params(mode, I, H, bias=bias, dtype=dtype, seed=1, cell=True)
    x, h, c, dh1, dc1 = data(dtype)
    cell = make_cell(mode, bias, dtype)
    cell.load_state_dict(p)
    lstm = mode == "LSTM"
    ref = torch_cell_run(mode, p, x, (h, c) if lstm else h, (dh1, dc1) if lstm else dh1)
    got = run_cell(cell, mode, x, h, c, dh1, dc1)
    for k in ("h1", "dx", "dh") + (("c1", "dc") if lstm else ()):
        close(got[k], ref[k], tol, k)
    assert set(got["grads"]) == set(ref["grads"])
    for k, g in ref["grads"].items():
        close(got["grads"][k], g, tol, "grad " + k)


@pytest.mark.parametrize("mode", TORCH + ["GRU_RB", "MGRU"])
def test_cell_matches_reference_and_fd(mode):
    p = random_params(mode, I, H, seed=2, cell=True)
    x, h, c, dh1, dc1 = data(np.float64, seed=2)
    lstm = mode == "LSTM"
    cell = make_cell(mode)
    cell.load_state_dict(p)
    got = run_cell(cell, mode, x, h, c, dh1, dc1)
    out, cache = R.cell_forward(mode, p, x, (h, c) if lstm else h)
    dx, dprev, g = R.cell_backward(cache, (dh1, dc1) if lstm else dh1)
    close(got["h1"], out[0] if lstm else out, 1e-12, "h1")
    close(got["dx"], dx, 1e-12, "dx")
    close(got["dh"], dprev[0] if lstm else dprev, 1e-12, "dh")
    for k in g:
        close(got["grads"][k], g[k], 1e-12, "grad " + k)

    names = sorted(p)
    probe = make_cell(mode)

    def f(arrs):
        probe.load_state_dict(dict(zip(names, arrs[3:])))
        if lstm:
            h1, c1 = probe(arrs[0], (arrs[1], arrs[2]))
            return np.sum(h1 * dh1) + np.sum(c1 * dc1)
        return np.sum(probe(arrs[0], arrs[1]) * dh1)

    arrays = [x, h, c] + [p[k] for k in names]
    grads = [got["dx"], got["dh"], got["dc"] if lstm else np.zeros_like(c)]
    grads += [got["grads"][k].copy() for k in names]
    err = fd_check(f, arrays, grads, eps=1e-6, max_entries=40)
    assert err < 1e-7, f"FD {err:.2e}"


@pytest.mark.parametrize("mode", TORCH + ["GRU_RB", "MGRU"])
def test_cell_unbatched_and_no_state(mode):
    cell = make_cell(mode)
    xb, hb, cb, dhb, dcb = data(np.float64, seed=3)
    batched = run_cell(cell, mode, xb[:1], hb[:1], cb[:1], dhb[:1], dcb[:1])
    batched = {k: (v.copy() if k != "grads" else {n: a.copy() for n, a in v.items()})
               for k, v in batched.items()}
    single = run_cell(cell, mode, xb[0], hb[0], cb[0], dhb[0], dcb[0])
    for k, v in single.items():
        if k == "grads":
            for n in v:
                close(v[n], batched["grads"][n], 1e-14, n)
        else:
            assert v.shape == batched[k].shape[1:], k
            close(v, batched[k][0], 1e-14, k)
    # h = None means zeros
    zero = run_cell(cell, mode, xb, np.zeros_like(hb), np.zeros_like(cb), dhb, dcb)
    none = run_cell(cell, mode, xb, None, None, dhb, dcb, with_state=False)
    for k in ("h1", "dx", "dh"):
        np.testing.assert_array_equal(zero[k], none[k])


@pytest.mark.parametrize("mode", TORCH + ["GRU_RB", "MGRU"])
def test_cell_errors(mode):
    cell = make_cell(mode, dtype=np.float32)
    lstm = mode == "LSTM"
    h = np.zeros((B, H), np.float32)
    with pytest.raises(ValueError, match=r"x: expected shape \(B, 3\) or \(3,\)"):
        cell(np.zeros((B, 4), np.float32))
    with pytest.raises(ValueError, match=r"x: "):
        cell(np.zeros((2, B, 3), np.float32))
    with pytest.raises(TypeError, match="x"):
        cell(np.zeros((B, 3), np.int32))
    with pytest.raises(ValueError, match=r"expected shape \(4, 5\), got \(4, 6\)"):
        cell(np.zeros((B, I), np.float32), (np.zeros((B, 6)), h) if lstm else np.zeros((B, 6)))
    if lstm:
        with pytest.raises(TypeError, match="tuple"):
            cell(np.zeros((B, I), np.float32), h)
    out, bw = cell.forward_train(np.zeros((B, I), np.float32))
    d = (np.zeros((B, H)), np.zeros((B, H))) if lstm else np.zeros((B, H))
    bw(d)
    with pytest.raises(RuntimeError, match="already called"):
        bw(d)
    out, bw = cell.forward_train(np.zeros((B, I), np.float32))
    with pytest.raises(ValueError, match=r"expected shape \(4, 5\)"):
        bw((np.zeros((B, 2)), None) if lstm else np.zeros((B, 2)))
    with pytest.raises(ValueError, match="missing"):
        cell.load_state_dict({})
    with pytest.raises(ValueError, match="hidden_size"):
        type(cell)(3, 0)
    with pytest.raises(TypeError, match="dtype"):
        type(cell)(3, 4, dtype=np.float16)


def test_rnncell_bad_nonlinearity():
    with pytest.raises(ValueError, match="nonlinearity"):
        pyrnn.RNNCell(3, 4, nonlinearity="sigmoid")
