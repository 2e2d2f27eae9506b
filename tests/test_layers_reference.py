"""Compiled layers against the NumPy reference and float64 central finite differences."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from pyrnn import reference as R
from _oracle import fd_check, random_params
from conftest import make_layer
import pyrnn


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # thousands of tiny calls: 2 threads on a loaded 2-core box cost ~100 ms each
    n = pyrnn.get_num_threads()
    pyrnn.set_num_threads(1)
    yield
    pyrnn.set_num_threads(n)

ALL = [("RNN_TANH", 0), ("RNN_RELU", 0), ("GRU", 0), ("GRU_RB", 0), ("MGRU", 0), ("LSTM", 0),
       ("LSTM", 2)]
IDS = [m + ("+proj" if p else "") for m, p in ALL]


def data(mode, T, B, I, H, L, D, Hout, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = rng.standard_normal((L * D, B, Hout)).astype(dtype)
    dy = rng.standard_normal((T, B, D * Hout)).astype(dtype)
    dhn = rng.standard_normal((L * D, B, Hout)).astype(dtype)
    c0 = rng.standard_normal((L * D, B, H)).astype(dtype) if mode == "LSTM" else None
    dcn = rng.standard_normal((L * D, B, H)).astype(dtype) if mode == "LSTM" else None
    return x, h0, c0, dy, dhn, dcn


def close(got, want, tol, what):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, what
    if got.size:
        err = np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want)))
        assert err <= tol, f"{what}: error {err:.3e} > {tol:.0e}"


def check_vs_reference(mode, proj, T, B, I, H, L, bi, dtype, lengths, with_hx, bias=True,
                       batch_first=False, seed=0):
    D = 2 if bi else 1
    Hout = proj or H
    tol = 1e-10 if dtype == np.float64 else 2e-5
    p = random_params(mode, I, H, L, bi, proj_size=proj, bias=bias, dtype=dtype, seed=seed)
    x, h0, c0, dy, dhn, dcn = data(mode, T, B, I, H, L, D, Hout, dtype, seed)
    lstm = mode == "LSTM"
    hx = ((h0, c0) if lstm else h0) if with_hx else None
    dh = (dhn, dcn) if lstm else dhn
    lens = None if lengths is None else np.asarray(lengths)
    yr, hr, cache = R.layer_forward(mode, p, x, hx, lens, L, bi)
    dxr, dhr, gr = R.layer_backward(cache, dy, dh)

    layer = make_layer(mode, I, H, L, bi, proj, bias, batch_first, dtype)
    layer.load_state_dict(p)
    tr = (lambda a: np.ascontiguousarray(np.swapaxes(a, 0, 1))) if batch_first else (lambda a: a)
    y, hn, bw = layer.forward_train(tr(x), hx, lens)
    dx, dhx = bw(tr(dy), dh)
    close(tr(y), yr, tol, "y")
    close(tr(dx), dxr, tol, "dx")
    for a, b, n in zip(hn if lstm else (hn,), hr if lstm else (hr,), ("h_n", "c_n")):
        close(a, b, tol, n)
    for a, b, n in zip(dhx if lstm else (dhx,), dhr if lstm else (dhr,), ("dh0", "dc0")):
        close(a, b, tol, n)
    assert set(layer.grads) == set(gr)
    for k in gr:
        close(layer.grads[k], gr[k], tol, "grad " + k)


# ---------------------------------------------------------------- reference parity

@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("cfg", ["1L", "2L-bi-lengths", "2L-batchfirst-nobias"])
@pytest.mark.parametrize("mode", ["GRU_RB", "MGRU"])
def test_torchless_kinds_match_reference(mode, cfg, dtype):
    if cfg == "1L":
        check_vs_reference(mode, 0, 5, 3, 3, 4, 1, False, dtype, None, False)
    elif cfg == "2L-bi-lengths":
        check_vs_reference(mode, 0, 6, 5, 3, 4, 2, True, dtype, [6, 0, 2, 5, 1], True, seed=1)
    else:
        check_vs_reference(mode, 0, 4, 3, 2, 5, 2, False, dtype, [1, 4, 3], True, bias=False,
                           batch_first=True, seed=2)


@pytest.mark.parametrize("mode", ["GRU_RB", "MGRU"])
def test_torchless_kinds_long_float32(mode):
    check_vs_reference(mode, 0, 100, 4, 5, 8, 2, True, np.float32, [100, 0, 63, 1], True, seed=3)


# ---------------------------------------------------------------- finite differences

def fd_layer(mode, proj, T, B, I, H, L, bi, lengths, bias=True, seed=0):
    """Worst FD error over x, h0 (c0) and every parameter of f = sum(y*dy) + sum(hn*dhn)."""
    D = 2 if bi else 1
    Hout = proj or H
    lstm = mode == "LSTM"
    p = random_params(mode, I, H, L, bi, proj_size=proj, bias=bias, seed=seed)
    x, h0, c0, dy, dhn, dcn = data(mode, T, B, I, H, L, D, Hout, np.float64, seed)
    lens = None if lengths is None else np.asarray(lengths)
    layer = make_layer(mode, I, H, L, bi, proj, bias, dtype=np.float64)
    layer.load_state_dict(p)
    y, hn, bw = layer.forward_train(x, (h0, c0) if lstm else h0, lens)
    dx, dhx = bw(dy, (dhn, dcn) if lstm else dhn)
    names = sorted(p)
    arrays = [x, h0] + ([c0] if lstm else []) + [p[k] for k in names]
    grads = [dx] + (list(dhx) if lstm else [dhx]) + [layer.grads[k].copy() for k in names]
    nstate = 3 if lstm else 2
    probe = make_layer(mode, I, H, L, bi, proj, bias, dtype=np.float64)

    def f(arrs):
        probe.load_state_dict(dict(zip(names, arrs[nstate:])))
        if lstm:
            yy, (hh, cc) = probe(arrs[0], (arrs[1], arrs[2]), lens)
            return np.sum(yy * dy) + np.sum(hh * dhn) + np.sum(cc * dcn)
        yy, hh = probe(arrs[0], arrs[1], lens)
        return np.sum(yy * dy) + np.sum(hh * dhn)

    return fd_check(f, arrays, grads, eps=1e-6, max_entries=25, seed=seed)


@pytest.mark.parametrize("mode,proj", ALL, ids=IDS)
def test_finite_differences_2layer_bidirectional_lengths(mode, proj):
    err = fd_layer(mode, proj, 5, 4, 3, 4, 2, True, [5, 0, 2, 4], seed=11)
    assert err < 1e-6, f"worst FD error {err:.2e}"


@pytest.mark.parametrize("mode,proj", ALL, ids=IDS)
def test_finite_differences_1layer_nobias(mode, proj):
    err = fd_layer(mode, proj, 4, 2, 2, 3, 1, False, None, bias=False, seed=12)
    assert err < 1e-6, f"worst FD error {err:.2e}"


# ---------------------------------------------------------------- random shapes

@st.composite
def configs(draw):
    mode = draw(st.sampled_from(["RNN_TANH", "RNN_RELU", "GRU", "GRU_RB", "MGRU", "LSTM"]))
    H = draw(st.integers(1, 9))
    proj = draw(st.integers(0, H - 1)) if mode == "LSTM" and H > 1 else 0
    T, B = draw(st.integers(1, 8)), draw(st.integers(1, 5))
    lengths = draw(st.none() | st.lists(st.integers(0, T), min_size=B, max_size=B))
    return dict(mode=mode, proj=proj, T=T, B=B, I=draw(st.integers(1, 9)), H=H,
                L=draw(st.integers(1, 2)), bi=draw(st.booleans()),
                dtype=draw(st.sampled_from([np.float32, np.float64])), lengths=lengths,
                with_hx=draw(st.booleans()), bias=draw(st.booleans()),
                batch_first=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


@settings(max_examples=40, deadline=None)
@given(configs())
def test_random_shapes_match_reference(c):
    check_vs_reference(c["mode"], c["proj"], c["T"], c["B"], c["I"], c["H"], c["L"], c["bi"],
                       c["dtype"], c["lengths"], c["with_hx"], c["bias"], c["batch_first"],
                       c["seed"])
