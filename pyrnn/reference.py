"""Pure-NumPy reference of every recurrent cell and layer in pyrnn.

This module is the readable statement of the math and the oracle the tests hold the
compiled core to. It favours clarity over speed: a Python loop over time, one cell
step at a time, and plain manual backpropagation through time. It computes in the
dtype of the input (float32 or float64; anything else is computed in float64).

Gates are stacked in the first axis of every weight, in the order given below.

    RNN_TANH, RNN_RELU   h' = act(W_ih x + b_ih + W_hh h + b_hh)
    LSTM     (i, f, g, o) c' = f*c + i*g,  h' = o*tanh(c')
                          with projection: h' = W_hr (o*tanh(c')), h has size P
    GRU      (r, z, n)   n = tanh(W_in x + b_in + r*(W_hn h + b_hn))   reset after (PyTorch)
    GRU_RB   (r, z, n)   n = tanh(W_in x + b_in + W_hn (r*h) + b_hn)   reset before (Cho et al.)
    MGRU     (z, n)      n = tanh(W_in x + b_in + W_hn h + b_hn)       no reset gate
             for every GRU: r, z = sigmoid(W_i. x + b_i. + W_h. h + b_h.),
                            h' = (1 - z)*n + z*h

Every forward returns a ``cache`` holding exactly what its backward needs; every
backward takes that cache and returns new gradient arrays (nothing is accumulated).
"""
import numpy as np

MODES = ("RNN_TANH", "RNN_RELU", "LSTM", "GRU", "GRU_RB", "MGRU")
_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3, "GRU_RB": 3, "MGRU": 2}


def gate_count(mode):
    """Number of gate blocks G stacked in each weight's first axis."""
    try:
        return _GATES[mode]
    except (KeyError, TypeError):
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}") from None


def _dtype_of(x):
    dt = np.asarray(x).dtype
    return dt if dt in (np.float32, np.float64) else np.dtype(np.float64)


def _sigmoid(a):
    # exp of -|a| only, so no overflow warnings for large |a|
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(a.dtype, copy=False)


# --------------------------------------------------------------------------- cells

def cell_forward(mode, p, x, hx=None):
    """One step. p: dict with 'weight_ih' (G*H,I), 'weight_hh' (G*H,Hout), optional 'bias_ih',
    'bias_hh' (G*H,), optional 'weight_hr' (P,H) for LSTM. x: (B,I). hx: None (zeros) or h
    (B,Hout), or (h, c) for LSTM. Returns (out, cache): out = h1 (B,Hout), or (h1, c1) for LSTM.
    """
    G = gate_count(mode)
    dt = _dtype_of(x)
    x = np.asarray(x, dtype=dt)
    p = {k: np.asarray(v, dtype=dt) for k, v in p.items()}
    if x.ndim != 2:
        raise ValueError(f"x: expected shape (B, I), got {x.shape}")
    W_ih, W_hh = p["weight_ih"], p["weight_hh"]
    b_ih, b_hh = p.get("bias_ih"), p.get("bias_hh")
    W_hr = p.get("weight_hr") if mode == "LSTM" else None
    H = W_ih.shape[0] // G
    Hout = W_hh.shape[1]
    B = x.shape[0]
    if W_ih.shape != (G * H, x.shape[1]):
        raise ValueError(f"weight_ih: expected shape {(G * H, x.shape[1])}, got {W_ih.shape}")
    if W_hh.shape[0] != G * H:
        raise ValueError(f"weight_hh: expected {G * H} rows, got {W_hh.shape}")
    if mode != "LSTM" and Hout != H:
        raise ValueError(f"weight_hh: expected shape {(G * H, H)}, got {W_hh.shape}")
    if W_hr is not None and W_hr.shape != (Hout, H):
        raise ValueError(f"weight_hr: expected shape {(Hout, H)}, got {W_hr.shape}")

    # initial state; None means zeros
    if mode == "LSTM":
        h, c = (None, None) if hx is None else hx
        c = np.zeros((B, H), dt) if c is None else np.asarray(c, dtype=dt)
    else:
        h, c = hx, None
    h = np.zeros((B, Hout), dt) if h is None else np.asarray(h, dtype=dt)
    if h.shape != (B, Hout):
        raise ValueError(f"hx: expected h of shape {(B, Hout)}, got {h.shape}")
    if c is not None and c.shape != (B, H):
        raise ValueError(f"hx: expected c of shape {(B, H)}, got {c.shape}")

    # input side for all gates at once; the hidden side per mode (GRU_RB differs)
    gi = x @ W_ih.T
    if b_ih is not None:
        gi = gi + b_ih
    cache = {"mode": mode, "p": p, "x": x, "h": h, "c": c, "H": H}

    if mode == "GRU_RB":
        # r, z see h; n sees r*h, so its hidden GEMM happens after r is known
        gh_rz = h @ W_hh[:2 * H].T
        if b_hh is not None:
            gh_rz = gh_rz + b_hh[:2 * H]
        r = _sigmoid(gi[:, :H] + gh_rz[:, :H])
        z = _sigmoid(gi[:, H:2 * H] + gh_rz[:, H:])
        rh = r * h
        gh_n = rh @ W_hh[2 * H:].T
        if b_hh is not None:
            gh_n = gh_n + b_hh[2 * H:]
        n = np.tanh(gi[:, 2 * H:] + gh_n)
        h1 = (1 - z) * n + z * h
        cache.update(r=r, z=z, n=n, rh=rh)
        return h1, cache

    gh = h @ W_hh.T
    if b_hh is not None:
        gh = gh + b_hh

    if mode in ("RNN_TANH", "RNN_RELU"):
        a = gi + gh
        h1 = np.tanh(a) if mode == "RNN_TANH" else np.maximum(a, 0)
        cache.update(a=a, h1=h1)
        return h1, cache

    if mode == "LSTM":
        a = gi + gh
        i = _sigmoid(a[:, :H])
        f = _sigmoid(a[:, H:2 * H])
        g = np.tanh(a[:, 2 * H:3 * H])
        o = _sigmoid(a[:, 3 * H:])
        c1 = f * c + i * g
        tc = np.tanh(c1)
        m = o * tc                      # the unprojected output
        h1 = m if W_hr is None else m @ W_hr.T
        cache.update(i=i, f=f, g=g, o=o, tc=tc, m=m)
        return (h1, c1), cache

    if mode == "GRU":
        r = _sigmoid(gi[:, :H] + gh[:, :H])
        z = _sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
        ghn = gh[:, 2 * H:]
        n = np.tanh(gi[:, 2 * H:] + r * ghn)
        h1 = (1 - z) * n + z * h
        cache.update(r=r, z=z, n=n, ghn=ghn)
        return h1, cache

    # MGRU
    z = _sigmoid(gi[:, :H] + gh[:, :H])
    n = np.tanh(gi[:, H:] + gh[:, H:])
    h1 = (1 - z) * n + z * h
    cache.update(z=z, n=n)
    return h1, cache


def cell_backward(cache, dout):
    """dout = dh1, or (dh1, dc1) for LSTM (either may be None = zeros).
    Returns (dx, dhx, grads): dhx = dh or (dh, dc); grads: dict with the keys of p (new arrays).
    """
    mode, p, x, h, H = cache["mode"], cache["p"], cache["x"], cache["h"], cache["H"]
    W_ih, W_hh = p["weight_ih"], p["weight_hh"]
    dt = x.dtype
    if mode == "LSTM":
        dh1, dc1 = (None, None) if dout is None else dout
    else:
        dh1, dc1 = dout, None
    dh1 = np.zeros((x.shape[0], W_hh.shape[1]), dt) if dh1 is None else np.asarray(dh1, dtype=dt)

    grads = {}
    dh = None   # gradient w.r.t. h arriving other than through the hidden GEMM
    dc = None

    # 1. through the nonlinearities to dgi (x-side pre-activations, incl. b_ih)
    #    and dgh (h-side pre-activations, incl. b_hh)
    if mode in ("RNN_TANH", "RNN_RELU"):
        if mode == "RNN_TANH":
            da = dh1 * (1 - cache["h1"] ** 2)
        else:
            da = dh1 * (cache["a"] > 0)
        dgi = dgh = da

    elif mode == "LSTM":
        i, f, g, o, tc, c = (cache[k] for k in ("i", "f", "g", "o", "tc", "c"))
        # 1a. projection h1 = m W_hr^T
        if "weight_hr" in p:
            grads["weight_hr"] = dh1.T @ cache["m"]
            dm = dh1 @ p["weight_hr"]
        else:
            dm = dh1
        # 1b. m = o*tanh(c1); c1 also receives dc1 from the next step
        dc_tot = dm * o * (1 - tc ** 2)
        if dc1 is not None:
            dc_tot = dc_tot + np.asarray(dc1, dtype=dt)
        do = dm * tc
        # 1c. c1 = f*c + i*g
        di, df, dg = dc_tot * g, dc_tot * c, dc_tot * i
        dc = dc_tot * f
        # 1d. through the gate nonlinearities
        da = np.concatenate([di * i * (1 - i), df * f * (1 - f), dg * (1 - g ** 2),
                             do * o * (1 - o)], axis=1)
        dgi = dgh = da

    elif mode in ("GRU", "GRU_RB"):
        r, z, n = cache["r"], cache["z"], cache["n"]
        # h1 = (1-z)*n + z*h
        dn = dh1 * (1 - z)
        dz = dh1 * (h - n)
        dh = dh1 * z
        dan = dn * (1 - n ** 2)          # pre-activation of n
        if mode == "GRU":
            # n = tanh(gi_n + r*ghn)
            dghn = dan * r
            dr = dan * cache["ghn"]
        else:
            # n = tanh(gi_n + W_hn (r*h) + b_hn)
            dghn = dan
            drh = dan @ W_hh[2 * H:]
            dr = drh * h
            dh = dh + drh * r
        dar = dr * r * (1 - r)
        daz = dz * z * (1 - z)
        dgi = np.concatenate([dar, daz, dan], axis=1)
        dgh = np.concatenate([dar, daz, dghn], axis=1)

    else:  # MGRU
        z, n = cache["z"], cache["n"]
        dn = dh1 * (1 - z)
        dz = dh1 * (h - n)
        dh = dh1 * z
        da = np.concatenate([dz * z * (1 - z), dn * (1 - n ** 2)], axis=1)
        dgi = dgh = da

    # 2. through the input GEMM gi = x W_ih^T + b_ih
    dx = dgi @ W_ih
    grads["weight_ih"] = dgi.T @ x
    if "bias_ih" in p:
        grads["bias_ih"] = dgi.sum(axis=0)

    # 3. through the hidden GEMM gh = h W_hh^T + b_hh (for GRU_RB, n's rows saw r*h)
    if mode == "GRU_RB":
        grads["weight_hh"] = np.concatenate(
            [dgh[:, :2 * H].T @ h, dgh[:, 2 * H:].T @ cache["rh"]], axis=0)
        dh_gemm = dgh[:, :2 * H] @ W_hh[:2 * H]   # n's part was handled in step 1
    else:
        grads["weight_hh"] = dgh.T @ h
        dh_gemm = dgh @ W_hh
    dh = dh_gemm if dh is None else dh + dh_gemm
    if "bias_hh" in p:
        grads["bias_hh"] = dgh.sum(axis=0)

    if mode == "LSTM":
        return dx, (dh, dc), grads
    return dx, dh, grads


# -------------------------------------------------------------------------- layers

_KINDS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")


def _suffix(k, d):
    return f"_l{k}" + ("_reverse" if d else "")


def layer_forward(mode, params, x, hx=None, lengths=None, num_layers=1, bidirectional=False):
    """params: dict with PyTorch names weight_ih_l{k}{s}, weight_hh_l{k}{s}, bias_ih_l{k}{s},
    bias_hh_l{k}{s}, weight_hr_l{k}{s} (s = '' or '_reverse'); bias keys may be absent;
    projection is inferred from weight_hr presence. x: (T,B,I) time-major. hx: None,
    (L*D,B,Hout), or (h0, c0) for LSTM with c0 (L*D,B,H). lengths: None or ints (B,) in [0,T].
    Returns (y, hn, cache): y (T,B,D*Hout), forward features first; hn (L*D,B,Hout) or
    (hn, cn) for LSTM; index layer*D+direction. No dropout.
    """
    G = gate_count(mode)
    dt = _dtype_of(x)
    x = np.asarray(x, dtype=dt)
    if x.ndim != 3:
        raise ValueError(f"x: expected shape (T, B, I), got {x.shape}")
    T, B, _ = x.shape
    L, D = int(num_layers), 2 if bidirectional else 1
    H = np.shape(params["weight_ih_l0"])[0] // G
    Hout = np.shape(params["weight_hh_l0"])[1]
    is_lstm = mode == "LSTM"

    if hx is None:
        h0, c0 = None, None
    elif is_lstm:
        h0, c0 = hx
    else:
        h0, c0 = hx, None
    h0 = np.zeros((L * D, B, Hout), dt) if h0 is None else np.asarray(h0, dtype=dt)
    c0 = (np.zeros((L * D, B, H), dt) if c0 is None else np.asarray(c0, dtype=dt)) if is_lstm else None
    if h0.shape != (L * D, B, Hout):
        raise ValueError(f"hx: expected h0 of shape {(L * D, B, Hout)}, got {h0.shape}")
    if is_lstm and c0.shape != (L * D, B, H):
        raise ValueError(f"hx: expected c0 of shape {(L * D, B, H)}, got {c0.shape}")

    if lengths is None:
        lengths = np.full(B, T, dtype=np.int64)
    else:
        lengths = np.asarray(lengths)
        if lengths.shape != (B,) or lengths.dtype.kind not in "iu":
            raise ValueError(f"lengths: expected integers of shape {(B,)}, got {lengths.dtype} {lengths.shape}")
        if B and (lengths.min() < 0 or lengths.max() > T):
            raise ValueError(f"lengths: expected values in [0, {T}], got {lengths}")
    # alive[t, b]: step t exists for sequence b; both directions update only these rows
    alive = (np.arange(T)[:, None] < lengths[None, :])[:, :, None]

    hn = np.empty_like(h0)
    cn = np.empty_like(c0) if is_lstm else None
    steps = {}          # (layer, direction) -> list of cell caches in the order run
    inputs = [x]
    inp = x
    for k in range(L):
        outs = []
        for d in range(D):
            s = _suffix(k, d)
            p = {kind: params[kind + s] for kind in _KINDS if kind + s in params}
            if not is_lstm:
                p.pop("weight_hr", None)
            j = k * D + d
            h = h0[j]
            c = c0[j] if is_lstm else None
            y = np.zeros((T, B, Hout), dt)
            caches = []
            for t in (range(T) if d == 0 else range(T - 1, -1, -1)):
                out, cc = cell_forward(mode, p, inp[t], (h, c) if is_lstm else h)
                caches.append(cc)
                h1, c1 = out if is_lstm else (out, None)
                m = alive[t]
                # rows whose sequence has ended (or not yet started, in reverse) keep their state
                h = np.where(m, h1, h)
                if is_lstm:
                    c = np.where(m, c1, c)
                y[t] = np.where(m, h1, 0)
            hn[j] = h
            if is_lstm:
                cn[j] = c
            steps[(k, d)] = caches
            outs.append(y)
        inp = outs[0] if D == 1 else np.concatenate(outs, axis=2)
        inputs.append(inp)

    cache = {"mode": mode, "L": L, "D": D, "T": T, "B": B, "H": H, "Hout": Hout, "dtype": dt,
             "alive": alive, "steps": steps, "in_sizes": [a.shape[2] for a in inputs[:-1]],
             "keys": list(params.keys())}
    return inp, ((hn, cn) if is_lstm else hn), cache


def layer_backward(cache, dy, dhn=None):
    """dy like y; dhn like hn (None = zeros; for LSTM a tuple whose items may be None).
    Returns (dx, dhx, grads): dx (T,B,I); dhx like hn (always arrays); grads dict with the
    keys of params.
    """
    mode, L, D, T, B = (cache[k] for k in ("mode", "L", "D", "T", "B"))
    H, Hout, dt, alive = cache["H"], cache["Hout"], cache["dtype"], cache["alive"]
    is_lstm = mode == "LSTM"
    dy = np.asarray(dy, dtype=dt)
    if dy.shape != (T, B, D * Hout):
        raise ValueError(f"dy: expected shape {(T, B, D * Hout)}, got {dy.shape}")

    if is_lstm:
        dh_n, dc_n = (None, None) if dhn is None else dhn
    else:
        dh_n, dc_n = dhn, None
    dh_n = np.zeros((L * D, B, Hout), dt) if dh_n is None else np.asarray(dh_n, dtype=dt)
    dc_n = (np.zeros((L * D, B, H), dt) if dc_n is None else np.asarray(dc_n, dtype=dt)) if is_lstm else None

    grads = {}
    dh0 = np.zeros((L * D, B, Hout), dt)
    dc0 = np.zeros((L * D, B, H), dt) if is_lstm else None
    dout = dy                   # gradient w.r.t. the current layer's output
    for k in range(L - 1, -1, -1):
        dinp = np.zeros((T, B, cache["in_sizes"][k]), dt)
        for d in range(D):
            j = k * D + d
            s = _suffix(k, d)
            dyd = dout[:, :, d * Hout:(d + 1) * Hout]
            dh = dh_n[j]
            dc = dc_n[j] if is_lstm else None
            g_acc = {}
            # replay this direction's steps backwards
            times = list(range(T)) if d == 0 else list(range(T - 1, -1, -1))
            for t, cc in zip(reversed(times), reversed(cache["steps"][(k, d)])):
                m = alive[t]
                # a. undo the row select: h = where(m, h1, h_prev), y[t] = where(m, h1, 0)
                dh1 = np.where(m, dh + dyd[t], 0)
                dc1 = np.where(m, dc, 0) if is_lstm else None
                # b. through the cell (dead rows carry zero gradient, so add nothing)
                dxt, dprev, g = cell_backward(cc, (dh1, dc1) if is_lstm else dh1)
                dinp[t] += dxt
                for name, v in g.items():
                    g_acc[name] = g_acc[name] + v if name in g_acc else v
                # c. dead rows pass the incoming gradient straight to the previous state
                if is_lstm:
                    dh = np.where(m, dprev[0], dh)
                    dc = np.where(m, dprev[1], dc)
                else:
                    dh = np.where(m, dprev, dh)
            dh0[j] = dh
            if is_lstm:
                dc0[j] = dc
            for name, v in g_acc.items():
                grads[name + s] = v
        dout = dinp

    # T == 0 runs no step, so nothing produced these; their gradient is zero
    grads = {name: grads[name] if name in grads else np.zeros(_param_shape(cache, name), dt)
             for name in cache["keys"]}
    return dout, ((dh0, dc0) if is_lstm else dh0), grads


def _param_shape(cache, name):
    G, H, Hout, D = gate_count(cache["mode"]), cache["H"], cache["Hout"], cache["D"]
    kind, rest = name.split("_l", 1)
    k = int(rest.split("_")[0])
    if kind == "weight_ih":
        return (G * H, cache["in_sizes"][k])
    if kind == "weight_hh":
        return (G * H, Hout)
    if kind == "weight_hr":
        return (Hout, H)
    return (G * H,)
