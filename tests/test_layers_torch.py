"""Compiled layers against torch.nn: outputs, final states and every gradient."""
import numpy as np
import pytest

from _oracle import random_layer_inputs, random_params, require_torch, torch_layer_run
from conftest import make_layer

# largest error seen per (kind, dtype); printed at the end with -s
MAX_ERR = {}


@pytest.fixture(scope="module", autouse=True)
def _report():
    # torch's own threads spinning beside pyrnn's make its float32 RNNs ~100x slower here
    try:
        import torch
        n = torch.get_num_threads()
        torch.set_num_threads(1)
    except ImportError:
        torch = None
    yield
    if torch is not None:
        torch.set_num_threads(n)
    for key in sorted(MAX_ERR):
        a, r = MAX_ERR[key]
        print(f"\nparity vs torch {key[0]:10s} {key[1]:8s} max abs err {a:.3e} "
              f"(scaled by max(1, |value|): {r:.3e})", end="")


def kind_name(mode, proj):
    return mode + ("+proj" if proj else "")


def make_data(mode, T, B, I, H, L, D, Hout, dtype, seed=0):
    return random_layer_inputs(mode, T, B, I, H, L, D, Hout, dtype, seed=seed + 7)


def run_pyrnn(layer, x, hx, lengths, dy, dhn):
    layer.zero_grad()
    y_inf, hn_inf = layer(x, hx, lengths)
    y, hn, backward = layer.forward_train(x, hx, lengths)
    np.testing.assert_array_equal(y, y_inf)   # inference == training forward (no dropout)
    dx, dhx = backward(dy, dhn)
    return y, hn, dx, dhx, {k: v.copy() for k, v in layer.grads.items()}


def compare(key, got, want, tol, what):
    """Max abs error <= tol, scaled by the magnitude when |want| > 1: float32 parameter
    gradients at T = 100 sum hundreds of terms to values ~20, where 1e-5 is a few ulp."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != torch {want.shape}"
    if not got.size:
        return
    err = float(np.max(np.abs(got.astype(np.float64) - want)))
    scale = max(1.0, float(np.max(np.abs(want))))
    assert err <= tol * scale, f"{what}: max abs error {err:.3e} > {tol:.0e} * {scale:.3g}"
    old = MAX_ERR.get(key, (0.0, 0.0))
    MAX_ERR[key] = (max(old[0], err), max(old[1], err / scale))


def check_against_torch(mode, proj, T, B, I, H, L, bi, dtype, with_hx, lengths, bias=True,
                        batch_first=False, with_dhn=True, seed=0):
    require_torch()
    D = 2 if bi else 1
    Hout = proj or H
    tol = 1e-10 if dtype == np.float64 else 1e-5
    key = (kind_name(mode, proj), np.dtype(dtype).name)
    p = random_params(mode, I, H, L, bi, proj_size=proj, bias=bias, dtype=dtype, seed=seed)
    x, hx, dy, dhn = make_data(mode, T, B, I, H, L, D, Hout, dtype, seed)
    hx = hx if with_hx else None
    dhn = dhn if with_dhn else None
    lens = None if lengths is None else np.array(lengths)
    ref = torch_layer_run(mode, p, x, hx, lens, L, bi, dy=dy, dhn=dhn)

    layer = make_layer(mode, I, H, L, bi, proj, bias, batch_first, dtype)
    layer.load_state_dict(p)
    tr = (lambda a: np.ascontiguousarray(a.transpose(1, 0, 2))) if batch_first else (lambda a: a)
    y, hn, dx, dhx, grads = run_pyrnn(layer, tr(x), hx, lens, tr(dy), dhn)
    assert y.dtype == np.dtype(dtype) and dx.dtype == np.dtype(dtype)
    compare(key, tr(y), ref["y"], tol, "y")
    compare(key, tr(dx), ref["dx"], tol, "dx")
    if mode == "LSTM":
        compare(key, hn[0], ref["hn"], tol, "h_n")
        compare(key, hn[1], ref["cn"], tol, "c_n")
        compare(key, dhx[0], ref["dh0"], tol, "dh0")
        compare(key, dhx[1], ref["dc0"], tol, "dc0")
    else:
        compare(key, hn, ref["hn"], tol, "h_n")
        compare(key, dhx, ref["dh0"], tol, "dh0")
    assert set(grads) == set(ref["grads"])
    for name, g in ref["grads"].items():
        compare(key, grads[name], g, tol, f"grad {name}")


MODELS = [("RNN_TANH", 0), ("RNN_RELU", 0), ("GRU", 0), ("LSTM", 0), ("LSTM", 2)]
# name: (T, B, num_layers, bidirectional, hx given, lengths, bias, batch_first, dh_n given)
CONFIGS = {
    "1L": (5, 3, 1, False, False, None, True, False, False),
    "1L-bi-hx": (4, 2, 1, True, True, None, True, False, True),
    "2L-bi-lengths": (6, 5, 2, True, True, [4, 0, 6, 1, 3], True, False, True),
    "3L-batchfirst-lengths": (5, 4, 3, False, True, [2, 5, 0, 3], True, True, True),
    "2L-bi-nobias-batchfirst": (4, 3, 2, True, False, [4, 1, 2], False, True, False),
    "3L-bi-hx": (3, 2, 3, True, True, None, True, False, True),
    "2L-bi-B1-lengths": (4, 1, 2, True, True, [3], True, False, True),
}

# layers.py passes dy.strides[1] as dy's row stride; for unbatched input dy[:, None] has
# stride 0 there (and batch_first B=1 a stride of T*F), so backward reads the wrong rows

@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("cfg", list(CONFIGS))
@pytest.mark.parametrize("mode,proj", MODELS, ids=[kind_name(*m) for m in MODELS])
def test_layer_matches_torch(mode, proj, cfg, dtype):
    T, B, L, bi, with_hx, lengths, bias, bf, with_dhn = CONFIGS[cfg]
    check_against_torch(mode, proj, T, B, 3, 4, L, bi, dtype, with_hx, lengths, bias, bf,
                        with_dhn, seed=len(cfg))


@pytest.mark.parametrize("mode,proj", MODELS, ids=[kind_name(*m) for m in MODELS])
def test_long_sequence_float32(mode, proj):
    # T = 100 in float32, 2 layers bidirectional, with lengths: within 1e-5 absolute
    check_against_torch(mode, proj, 100, 4, 5, 8, 2, True, np.float32, True,
                        [100, 37, 0, 99], seed=3)


@pytest.mark.parametrize("mode,proj", MODELS, ids=[kind_name(*m) for m in MODELS])
def test_long_sequence_float64(mode, proj):
    check_against_torch(mode, proj, 100, 3, 5, 8, 2, True, np.float64, True, [100, 51, 0],
                        seed=4)


def torch_module(torch, mode, I, H, L, bi, proj, dtype):
    kw = dict(num_layers=L, bidirectional=bi, dtype=dtype)
    if mode == "LSTM":
        return torch.nn.LSTM(I, H, proj_size=proj, **kw)
    if mode == "GRU":
        return torch.nn.GRU(I, H, **kw)
    return torch.nn.RNN(I, H, nonlinearity="tanh" if mode == "RNN_TANH" else "relu", **kw)


@pytest.mark.parametrize("part", ["forward", "backward"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("with_hx", [False, True], ids=["nohx", "hx"])
@pytest.mark.parametrize("mode,proj", MODELS, ids=[kind_name(*m) for m in MODELS])
def test_unbatched_and_torch_state_dict(mode, proj, with_hx, dtype, part):
    # weights straight from a torch module's state_dict(); unbatched (T, F) input on both sides
    torch = require_torch()
    torch.manual_seed(5)
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    T, I, H, L, bi = 6, 3, 5, 2, True
    D, Hout = 2, proj or H
    tol = 1e-10 if dtype == np.float64 else 1e-5
    key = (kind_name(mode, proj), np.dtype(dtype).name)
    mod = torch_module(torch, mode, I, H, L, bi, proj, tdt)
    layer = make_layer(mode, I, H, L, bi, proj, dtype=dtype)
    layer.load_state_dict(mod.state_dict())
    rng = np.random.default_rng(1)
    x = rng.standard_normal((T, I)).astype(dtype)
    h0 = rng.standard_normal((L * D, Hout)).astype(dtype)
    c0 = rng.standard_normal((L * D, H)).astype(dtype)
    dy = rng.standard_normal((T, D * Hout)).astype(dtype)
    dhn = rng.standard_normal((L * D, Hout)).astype(dtype)

    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0, requires_grad=True)
    c0t = torch.tensor(c0, requires_grad=True)
    if mode == "LSTM":
        yt, (hnt, cnt) = mod(xt, (h0t, c0t) if with_hx else None)
    else:
        yt, hnt = mod(xt, h0t if with_hx else None)
    ((yt * torch.tensor(dy)).sum() + (hnt * torch.tensor(dhn)).sum()).backward()

    hx = ((h0, c0) if mode == "LSTM" else h0) if with_hx else None
    y, hn, dx, dhx, grads = run_pyrnn(layer, x, hx, None, dy, (dhn, None) if mode == "LSTM" else dhn)
    assert y.shape == (T, D * Hout)
    compare(key, y, yt.detach().numpy(), tol, "y")
    if mode == "LSTM":
        assert hn[0].shape == (L * D, Hout) and hn[1].shape == (L * D, H)
        compare(key, hn[0], hnt.detach().numpy(), tol, "h_n")
        compare(key, hn[1], cnt.detach().numpy(), tol, "c_n")
        dh0, dc0 = dhx
        assert dc0.shape == (L * D, H)
    else:
        compare(key, hn, hnt.detach().numpy(), tol, "h_n")
        dh0 = dhx
    assert dh0.shape == (L * D, Hout) and dx.shape == x.shape
    if part == "forward":
        return
    compare(key, dx, xt.grad.numpy(), tol, "dx")
    if with_hx:
        compare(key, dh0, h0t.grad.numpy(), tol, "dh0")
        if mode == "LSTM":
            compare(key, dc0, c0t.grad.numpy(), tol, "dc0")
    for name, prm in mod.named_parameters():
        compare(key, grads[name], prm.grad.numpy(), tol, f"grad {name}")


@pytest.mark.parametrize("mode,proj", MODELS, ids=[kind_name(*m) for m in MODELS])
def test_state_dict_from_tensors_or_arrays_identical(mode, proj):
    torch = require_torch()
    torch.manual_seed(2)
    mod = torch_module(torch, mode, 3, 4, 2, True, proj, torch.float32)
    a = make_layer(mode, 3, 4, 2, True, proj, dtype=np.float32)
    b = make_layer(mode, 3, 4, 2, True, proj, dtype=np.float32)
    a.load_state_dict(mod.state_dict())
    b.load_state_dict({k: v.detach().numpy().copy() for k, v in mod.state_dict().items()})
    sd = a.state_dict()
    assert set(sd) == set(mod.state_dict())
    for k, v in mod.state_dict().items():
        np.testing.assert_array_equal(sd[k], v.numpy())
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    ya, ha = a(x)
    yb, hb = b(x)
    np.testing.assert_array_equal(ya, yb)
    # and the same numbers as torch itself
    yt = mod(torch.tensor(x))[0].detach().numpy()
    assert np.max(np.abs(ya - yt)) < 1e-5


@pytest.mark.parametrize("mode,proj", MODELS, ids=[kind_name(*m) for m in MODELS])
def test_grads_accumulate(mode, proj):
    # backward ADDS into layer.grads: two identical passes give twice the gradient
    layer = make_layer(mode, 3, 4, 2, True, proj, dtype=np.float64, seed=1)
    x = np.random.default_rng(0).standard_normal((4, 2, 3))
    dy = np.ones((4, 2, 2 * (proj or 4)))
    y, hn, bw = layer.forward_train(x)
    bw(dy)
    once = {k: v.copy() for k, v in layer.grads.items()}
    y, hn, bw = layer.forward_train(x)
    bw(dy)
    for k, v in layer.grads.items():
        np.testing.assert_allclose(v, 2 * once[k], rtol=1e-12, atol=1e-14)
    assert any(np.abs(v).max() > 0 for v in once.values())
    layer.zero_grad()
    assert all(np.all(v == 0) for v in layer.grads.values())
