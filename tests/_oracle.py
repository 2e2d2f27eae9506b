"""Oracles for the tests: PyTorch runs of the same model, random parameters, finite differences.

Every helper takes and returns NumPy arrays with PyTorch parameter names, so a test can
feed the same dict to pyrnn, to ``pyrnn.reference`` and to torch.
"""
import os

import numpy as np
import pytest

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3, "GRU_RB": 3, "MGRU": 2}
TORCH_MODES = ("RNN_TANH", "RNN_RELU", "LSTM", "GRU")


def require_torch():
    """Return the torch module, or skip the test; with PYRNN_REQUIRE_TORCH=1 a missing torch
    is an error, so CI cannot pass by skipping every parity test."""
    try:
        import torch
    except ImportError:
        if os.environ.get("PYRNN_REQUIRE_TORCH") == "1":
            raise RuntimeError("PYRNN_REQUIRE_TORCH=1 but torch is not installed") from None
        pytest.skip("torch not installed")
    return torch


def random_params(mode, input_size, hidden_size, num_layers=1, bidirectional=False,
                  proj_size=0, bias=True, dtype=np.float64, seed=0, cell=False):
    """Dict of U(-1/sqrt(H), 1/sqrt(H)) arrays with PyTorch names and shapes
    (layer names ``weight_ih_l0`` ..., or cell names ``weight_ih`` ... when cell=True)."""
    G = _GATES[mode]
    H = hidden_size
    P = proj_size if (proj_size and mode == "LSTM") else 0
    Hout = P or H
    D = 2 if bidirectional else 1
    k = 1.0 / np.sqrt(H)
    rng = np.random.default_rng(seed)

    def u(*shape):
        return rng.uniform(-k, k, size=shape).astype(dtype)

    def block(suffix, in_size):
        d = {"weight_ih" + suffix: u(G * H, in_size), "weight_hh" + suffix: u(G * H, Hout)}
        if bias:
            d["bias_ih" + suffix] = u(G * H)
            d["bias_hh" + suffix] = u(G * H)
        if P:
            d["weight_hr" + suffix] = u(P, H)
        return d

    if cell:
        return block("", input_size)
    out = {}
    for layer in range(num_layers):
        for d in range(D):
            s = f"_l{layer}" + ("_reverse" if d else "")
            out.update(block(s, input_size if layer == 0 else D * Hout))
    return out


def _torch_dtype(torch, x):
    return torch.float32 if np.asarray(x).dtype == np.float32 else torch.float64


def _np(t):
    return None if t is None else t.detach().cpu().numpy().copy()


def torch_layer_run(mode, params, x, hx=None, lengths=None, num_layers=1, bidirectional=False,
                    dy=None, dhn=None):
    """Run torch.nn.RNN/LSTM/GRU (time-major, batched) with ``params`` loaded.

    Returns a dict of NumPy arrays: ``y``, ``hn`` (and ``cn`` for LSTM); when ``dy`` is given,
    also ``dx``, ``dh0`` (and ``dc0``) and ``grads`` (PyTorch names), the gradients of
    sum(y*dy) + sum(hn*dhn) (+ sum(cn*dcn)). ``dhn`` is None, an array, or for LSTM a tuple
    (dhn, dcn) whose items may be None. Lengths go through pack_padded_sequence
    (enforce_sorted=False); torch refuses length 0, so those rows are left out of the torch
    run and given their defined result (y = 0, hn = hx, dh0 = dhn).
    """
    torch = require_torch()
    if mode not in TORCH_MODES:
        raise ValueError(f"torch has no {mode}")
    tdt = _torch_dtype(torch, x)
    x_np = np.asarray(x)
    T, B, I = x_np.shape
    G = _GATES[mode]
    H = np.shape(params["weight_ih_l0"])[0] // G
    Hout = np.shape(params["weight_hh_l0"])[1]
    P = Hout if "weight_hr_l0" in params else 0
    D = 2 if bidirectional else 1
    bias = "bias_ih_l0" in params
    is_lstm = mode == "LSTM"

    kw = dict(num_layers=num_layers, bias=bias, bidirectional=bidirectional, dtype=tdt)
    if is_lstm:
        mod = torch.nn.LSTM(I, H, proj_size=P, **kw)
    elif mode == "GRU":
        mod = torch.nn.GRU(I, H, **kw)
    else:
        mod = torch.nn.RNN(I, H, nonlinearity="tanh" if mode == "RNN_TANH" else "relu", **kw)
    with torch.no_grad():
        named = dict(mod.named_parameters())
        if set(named) != set(params):
            raise ValueError(f"params keys {sorted(params)} != torch's {sorted(named)}")
        for name, prm in named.items():
            prm.copy_(torch.as_tensor(np.asarray(params[name]), dtype=tdt))

    # leaves that require grad, so dx and dh0 (dc0) come back even when hx is None
    xt = torch.tensor(x_np, dtype=tdt, requires_grad=True)
    if hx is None:
        h0_np = np.zeros((num_layers * D, B, Hout))
        c0_np = np.zeros((num_layers * D, B, H))
    elif is_lstm:
        h0_np, c0_np = hx
    else:
        h0_np, c0_np = hx, None
    h0 = torch.tensor(np.asarray(h0_np), dtype=tdt, requires_grad=True)
    c0 = torch.tensor(np.asarray(c0_np), dtype=tdt, requires_grad=True) if is_lstm else None

    if lengths is None:
        y, state = mod(xt, (h0, c0) if is_lstm else h0)
        hn, cn = state if is_lstm else (state, None)
    else:
        lengths = np.asarray(lengths, dtype=np.int64)
        keep = np.nonzero(lengths > 0)[0]
        # zero-length rows: y = 0, final state = initial state (differentiably)
        y = torch.zeros((T, B, D * Hout), dtype=tdt)
        hn = h0.clone()
        cn = c0.clone() if is_lstm else None
        if keep.size:
            idx = torch.as_tensor(keep)
            pk = torch.nn.utils.rnn.pack_padded_sequence(
                xt[:, idx], torch.as_tensor(lengths[keep]), enforce_sorted=False)
            hs = (h0[:, idx], c0[:, idx]) if is_lstm else h0[:, idx]
            out, state = mod(pk, hs)
            ys, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)
            y = y.index_copy(1, idx, ys)
            if is_lstm:
                hn = hn.index_copy(1, idx, state[0])
                cn = cn.index_copy(1, idx, state[1])
            else:
                hn = hn.index_copy(1, idx, state)

    res = {"y": _np(y), "hn": _np(hn)}
    if is_lstm:
        res["cn"] = _np(cn)
    if dy is None:
        return res

    if is_lstm:
        dh_n, dc_n = (None, None) if dhn is None else dhn
    else:
        dh_n, dc_n = dhn, None
    loss = (y * torch.as_tensor(np.asarray(dy), dtype=tdt)).sum()
    if dh_n is not None:
        loss = loss + (hn * torch.as_tensor(np.asarray(dh_n), dtype=tdt)).sum()
    if dc_n is not None:
        loss = loss + (cn * torch.as_tensor(np.asarray(dc_n), dtype=tdt)).sum()
    loss.backward()

    def grad_or_zero(t):
        return np.zeros(tuple(t.shape), _np(t).dtype) if t.grad is None else _np(t.grad)

    res["dx"] = grad_or_zero(xt)
    res["dh0"] = grad_or_zero(h0)
    if is_lstm:
        res["dc0"] = grad_or_zero(c0)
    res["grads"] = {name: grad_or_zero(prm) for name, prm in mod.named_parameters()}
    return res


def torch_cell_run(mode, p, x, hx=None, dout=None):
    """Run torch.nn.RNNCell/GRUCell/LSTMCell on batched x (B, I) with ``p`` loaded.

    Returns ``h1`` (and ``c1``); when ``dout`` (dh1, or (dh1, dc1) for LSTM, items may be
    None) is given, also ``dx``, ``dh`` (and ``dc``) and ``grads`` of sum(h1*dh1) + sum(c1*dc1).
    """
    torch = require_torch()
    if mode not in TORCH_MODES:
        raise ValueError(f"torch has no {mode}")
    tdt = _torch_dtype(torch, x)
    x_np = np.asarray(x)
    B, I = x_np.shape
    G = _GATES[mode]
    H = np.shape(p["weight_ih"])[0] // G
    bias = "bias_ih" in p
    is_lstm = mode == "LSTM"
    if is_lstm:
        mod = torch.nn.LSTMCell(I, H, bias=bias, dtype=tdt)
    elif mode == "GRU":
        mod = torch.nn.GRUCell(I, H, bias=bias, dtype=tdt)
    else:
        mod = torch.nn.RNNCell(I, H, bias=bias, dtype=tdt,
                               nonlinearity="tanh" if mode == "RNN_TANH" else "relu")
    with torch.no_grad():
        named = dict(mod.named_parameters())
        if set(named) != set(p):
            raise ValueError(f"p keys {sorted(p)} != torch's {sorted(named)}")
        for name, prm in named.items():
            prm.copy_(torch.as_tensor(np.asarray(p[name]), dtype=tdt))

    xt = torch.tensor(x_np, dtype=tdt, requires_grad=True)
    if hx is None:
        h_np, c_np = np.zeros((B, H)), np.zeros((B, H))
    elif is_lstm:
        h_np, c_np = hx
    else:
        h_np, c_np = hx, None
    h = torch.tensor(np.asarray(h_np), dtype=tdt, requires_grad=True)
    c = torch.tensor(np.asarray(c_np), dtype=tdt, requires_grad=True) if is_lstm else None
    if is_lstm:
        h1, c1 = mod(xt, (h, c))
    else:
        h1, c1 = mod(xt, h), None

    res = {"h1": _np(h1)}
    if is_lstm:
        res["c1"] = _np(c1)
    if dout is None:
        return res
    dh1, dc1 = dout if is_lstm else (dout, None)
    loss = h1.sum() * 0
    if dh1 is not None:
        loss = loss + (h1 * torch.as_tensor(np.asarray(dh1), dtype=tdt)).sum()
    if dc1 is not None:
        loss = loss + (c1 * torch.as_tensor(np.asarray(dc1), dtype=tdt)).sum()
    loss.backward()

    def grad_or_zero(t):
        return np.zeros(tuple(t.shape), _np(t).dtype) if t.grad is None else _np(t.grad)

    res["dx"] = grad_or_zero(xt)
    res["dh"] = grad_or_zero(h)
    if is_lstm:
        res["dc"] = grad_or_zero(c)
    res["grads"] = {name: grad_or_zero(prm) for name, prm in mod.named_parameters()}
    return res


def fd_check(f, arrays, grads, eps=1e-6, max_entries=200, seed=0):
    """Compare analytic ``grads`` with float64 central differences of the scalar ``f(arrays)``.

    ``arrays`` is a list of float64 arrays (perturbed in place, then restored); ``grads`` the
    matching list of analytic gradients. At most ``max_entries`` random entries per array are
    checked. Returns the worst error |fd - grad| / max(1, |fd|, |grad|) (absolute for small
    values, relative for large ones).
    """
    rng = np.random.default_rng(seed)
    worst = 0.0
    for a, g in zip(arrays, grads):
        if a.dtype != np.float64:
            raise TypeError("fd_check needs float64 arrays")
        if np.shape(g) != a.shape:
            raise ValueError(f"grad shape {np.shape(g)} != array shape {a.shape}")
        flat = a.reshape(-1)            # a view: perturbations reach f
        if not np.shares_memory(flat, a):
            raise ValueError("fd_check needs contiguous arrays")
        gflat = np.asarray(g).reshape(-1)
        idx = np.arange(flat.size)
        if flat.size > max_entries:
            idx = rng.choice(flat.size, max_entries, replace=False)
        for i in idx:
            old = flat[i]
            flat[i] = old + eps
            fp = f(arrays)
            flat[i] = old - eps
            fm = f(arrays)
            flat[i] = old
            num = (fp - fm) / (2 * eps)
            err = abs(num - gflat[i]) / max(1.0, abs(num), abs(gflat[i]))
            worst = max(worst, err)
    return worst


def random_layer_inputs(mode, T, B, I, H, L, D, Hout, dtype=np.float64, seed=0):
    """x (T, B, I), hx, dy, dhn for a layer of the given shape (hx and dhn are
    (h, c) tuples for LSTM), normal draws from `seed`."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = rng.standard_normal((L * D, B, Hout)).astype(dtype)
    dy = rng.standard_normal((T, B, D * Hout)).astype(dtype)
    dhn = rng.standard_normal((L * D, B, Hout)).astype(dtype)
    if mode == "LSTM":
        c0 = rng.standard_normal((L * D, B, H)).astype(dtype)
        dcn = rng.standard_normal((L * D, B, H)).astype(dtype)
        return x, (h0, c0), dy, (dhn, dcn)
    return x, h0, dy, dhn
