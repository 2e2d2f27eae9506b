"""Recurrent layers: RNN, GRU, LSTM, MinimalGRU (stacked, bidirectional).

Python validates shapes and dtypes and allocates; every time loop runs in the
compiled core (pyrnn._core), one call per layer and direction, with the GIL
released. The math is stated plainly in pyrnn/reference.py.
"""
import os
import threading

import numpy as np

from . import _core, _workspace
from ._workspace import lend, take
from ._threads import blas_core, choose_all_packed, get_num_threads, limit_blas_threads
from .nn import Module, as_float_array, check_dtype, once

# PYRNN_PAIR=0 keeps batch-1 work on the calling thread (no helper core, see
# src/_core/pair.h), e.g. when other processes keep every core busy.
_core.set_pair(os.environ.get("PYRNN_PAIR", "1").strip() != "0")
# the packed kernels for every float product where scipy's BLAS is narrower
# than this CPU (pyrnn._threads.choose_all_packed; PYRNN_GEMM overrides)
_core._set_all_packed(choose_all_packed(_core.simd_levels(), blas_core()))

__all__ = ["RNN", "GRU", "LSTM", "MinimalGRU"]

# driver name -> PyTorch parameter name prefix
_SLOTS = (("Wih", "weight_ih_"), ("Whh", "weight_hh_"), ("Whr", "weight_hr_"),
          ("b_ih", "bias_ih_"), ("b_hh", "bias_hh_"))

# BLAS through scipy takes 32-bit sizes
_INT32_LIMIT = 2 ** 31


# mode name -> (core kind, gate count)
KINDS = {"RNN_TANH": (0, 1), "RNN_RELU": (1, 1), "LSTM": (2, 4), "GRU": (3, 3),
         "GRU_RB": (4, 3), "MGRU": (5, 2)}


# ---------------------------------------------------------------- one direction

def fused_biases(mode, H, b_ih, b_hh, dtype):
    """The biases the kernels add: b_ih + b_hh pre-summed, except GRU's n gate,
    whose b_hn is applied inside r * (W_hn h + b_hn)."""
    G = KINDS[mode][1]
    if b_ih is None:
        bx = np.zeros(G * H, dtype)
        bhn = np.zeros(H, dtype) if mode == "GRU" else None
        return bx, bhn
    if mode == "GRU":
        bx = b_ih.copy()
        bx[:2 * H] += b_hh[:2 * H]
        return bx, np.ascontiguousarray(b_hh[2 * H:])
    return b_ih + b_hh, None


def direction_forward(mode, w, X, h0, c0, lengths, reverse, Y, hn, cn, train, ldy=None):
    """Run one direction of one layer over the whole sequence.

    w: dict Wih, Whh, Whr (or None), b_ih, b_hh (or None). X: (T, B, I)
    C-contiguous. Y: (T, B, *) view whose last axis starts at this
    direction's features, inside a C-contiguous (T, B, ldy) array (ldy defaults
    to Y's own width). hn/cn: (B, P)/(B, H) outputs. Returns the cache for
    direction_backward (or None when not training).
    """
    kind, G = KINDS[mode]
    T, B, I = X.shape
    H = w["Whh"].shape[0] // G
    P = w["Whh"].shape[1]
    dt = X.dtype
    proj = w.get("Whr") is not None
    a = dict(X=X, Wih=w["Wih"], Whh=w["Whh"], Whr=w.get("Whr"), h0=h0, c0=c0, Y=Y, hn=hn,
             cn=cn)
    nt = get_num_threads()
    if train:
        a["bx"], a["bhn"] = fused_biases(mode, H, w["b_ih"], w["b_hh"], dt)
        a["GX"] = take((T * B, G * H), dt)
        a["GH"] = take((B + 1, G * H + _core.GH_PAD), dt)
        a["Hs"] = take((T, B, P), dt)
        a["Cs"] = take((T, B, H), dt) if mode == "LSTM" else None
        # RNN: only the last step's h' (the others are in Hs)
        a["A"] = take((T, B, G * H) if G > 1 else (B, H), dt)
        a["X2"] = take((T, B, H), dt) if mode in ("LSTM", "GRU", "GRU_RB") else None
        a["M"] = take((T, B, H), dt) if proj else None
    else:
        # the core makes the other scratch and the fused biases itself; a big
        # GX comes from the pool (no fresh pages to fault in every call)
        a["b_ih"], a["b_hh"] = w["b_ih"], w["b_hh"]
        a["GX"] = _workspace.pooled((T * B, G * H), dt)
    # The row stride comes from the caller: numpy's strides of a length-1 axis
    # are arbitrary, so they cannot be trusted to give it.
    _core.forward(kind, T, B, I, H, P, reverse, ldy or Y.shape[2], train,
                  lengths, dt == np.float64, nt, a)
    if not train:
        _workspace.give(a["GX"])
        return None
    _workspace.give(a["GX"], a["GH"])
    a.update(kind=kind, T=T, B=B, I=I, H=H, P=P, reverse=reverse, lengths=lengths)
    del a["GX"], a["GH"], a["Y"], a["hn"], a["cn"]
    return a


def direction_backward(mode, cache, dY, dhn, dcn, dX, dh0, dc0, g, accumulate_dx, ldy=None):
    """Backward of one direction. dY: (T, B, *) view at this direction's
    features; dhn/dcn: (B, P)/(B, H). Writes dX (added to when
    accumulate_dx), dh0, dc0; adds into g, the gradient arrays under the
    names of direction_forward's w (Wih, Whh, Whr, b_ih, b_hh)."""
    c = cache
    T, B, H, P, G = c["T"], c["B"], c["H"], c["P"], KINDS[mode][1]
    dt = dY.dtype
    a = dict(c)
    a.update(dY=dY, dhn=dhn, dcn=dcn, dX=dX, dh0=dh0, dc0=dc0,
             dGX=take((T * B, G * H), dt),
             # GRU: dn*r of step t goes into X2's row t (W_hn h + b_hn), which
             # that step has just read and nothing reads after it
             dGH=c["X2"] if mode == "GRU" else None,
             dgs=take((B, G * H), dt) if mode == "GRU" else None,
             dHT=take((T * B, P), dt) if c["Whr"] is not None else None,
             dWih=g["Wih"], dWhh=g["Whh"], dWhr=g.get("Whr"),
             dbih=g.get("b_ih"), dbhh=g.get("b_hh"),
             dhbuf=take((2, B, P), dt),
             dcbuf=take((2, B, H), dt) if mode == "LSTM" else None,
             dmbuf=take((B, H), dt) if (c["Whr"] is not None or mode == "GRU_RB") else None)
    _core.backward(c["kind"], T, B, c["I"], H, P, c["reverse"], ldy or dY.shape[2],
                   c["lengths"], dt == np.float64, get_num_threads(), accumulate_dx, a)
    # the cache is spent: its buffers and the temporaries go back to the pool
    _workspace.give(c["Hs"], c["Cs"], c["A"], c["X2"], c["M"], a["dGX"], a["dGH"], a["dgs"],
                    a["dHT"], a["dhbuf"], a["dcbuf"], a["dmbuf"])
    for k in ("Hs", "Cs", "A", "X2", "M"):
        c[k] = None


# ---------------------------------------------------------------- validation

def _check_int(name, v, low):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(v).__name__}")
    if v < low:
        raise ValueError(f"{name} must be >= {low}, got {v}")
    return int(v)


def as_lengths(lengths, T, B):
    """Validate lengths -> int64 (B,) array, or None when every length is T."""
    if lengths is None:
        return None
    try:
        arr = np.asarray(lengths.detach().cpu() if hasattr(lengths, "detach") else lengths)
    except Exception as e:  # noqa: BLE001
        raise TypeError(f"lengths: cannot convert {type(lengths).__name__} to an array") from e
    if arr.dtype.kind not in "iu":
        raise TypeError(f"lengths: expected integers, got dtype {arr.dtype}")
    if arr.shape != (B,):
        raise ValueError(f"lengths: expected shape ({B},), got {arr.shape}")
    if B and (arr.min() < 0 or arr.max() > T):
        raise ValueError(f"lengths: every length must be in [0, {T}], got min {arr.min()} "
                         f"and max {arr.max()}")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    if np.all(arr == T):
        return None
    return arr


# ---------------------------------------------------------------- layers

def _on_line(a):
    """A flat float32 copy of a starting on a 64-byte line, like the core's own
    packed copies: a 64-byte load of a panel then touches one line, not two."""
    return _workspace.on_line((a.size,), np.float32, a.ravel())


def _panels(W):
    """W (N, K) as 16-row panels, k-major and zero-padded, flat (packed.h)."""
    N, K = W.shape
    panels = -(-N // 16)
    padded = np.zeros((panels * 16, K), np.float32)
    padded[:N] = W
    return np.ascontiguousarray(padded.reshape(panels, 16, K).transpose(0, 2, 1)).ravel()


class _RNNBase(Module):
    """Shared machinery; see RNN, GRU, LSTM, MinimalGRU."""

    _gates = 1

    def __init__(self, mode, input_size, hidden_size, num_layers=1, bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, proj_size=0,
                 dtype=np.float32, seed=None):
        self.mode = mode
        self.input_size = _check_int("input_size", input_size, 1)
        self.hidden_size = _check_int("hidden_size", hidden_size, 1)
        self.num_layers = _check_int("num_layers", num_layers, 1)
        self.proj_size = _check_int("proj_size", proj_size, 0)
        if self.proj_size and mode != "LSTM":
            raise ValueError("proj_size is only supported by LSTM")
        if self.proj_size >= self.hidden_size:
            raise ValueError(f"proj_size must be smaller than hidden_size ({self.hidden_size}), "
                             f"got {self.proj_size}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float, np.floating)):
            raise TypeError(f"dropout must be a number, got {type(dropout).__name__}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.dropout = float(dropout)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.bidirectional = bool(bidirectional)
        self.dtype = check_dtype(dtype)
        self.seed = seed
        init_seq, drop_seq = np.random.SeedSequence(seed).spawn(2)
        self.rng = np.random.default_rng(drop_seq)  # dropout masks
        init_rng = np.random.default_rng(init_seq)
        G, H = KINDS[mode][1], self.hidden_size
        D = 2 if self.bidirectional else 1
        P = self.proj_size or H
        if G * H * max(self.input_size, D * P, H) >= _INT32_LIMIT:
            raise ValueError(f"hidden_size={H} with input_size={self.input_size} makes weight "
                             "matrices too large for 32-bit BLAS sizes")
        k = 1.0 / np.sqrt(H)
        arrays = {}
        for layer in range(self.num_layers):
            in_k = self.input_size if layer == 0 else D * P
            for d in range(D):
                s = f"l{layer}" + ("_reverse" if d else "")
                shapes = [("weight_ih_" + s, (G * H, in_k)), ("weight_hh_" + s, (G * H, P))]
                if self.bias:
                    shapes += [("bias_ih_" + s, (G * H,)), ("bias_hh_" + s, (G * H,))]
                if self.proj_size:
                    shapes.append(("weight_hr_" + s, (P, H)))
                for name, shape in shapes:
                    arrays[name] = init_rng.uniform(-k, k, size=shape)
        self._init_params(arrays)
        self._lock = threading.RLock()
        self._version = 0
        self._snapshot = None
        limit_blas_threads()

    # -- parameter changes and weight snapshots for streams ------------------
    def params_updated(self):
        """Call after changing parameters in place (optimizers and
        load_state_dict do): streams pick up the new weights at their next step."""
        with self._lock:
            self._version += 1
            self._snapshot = None
        super().params_updated()

    def load_state_dict(self, state_dict):
        # Under the lock so that a stream never snapshots half-copied weights.
        with self._lock:
            super().load_state_dict(state_dict)

    def stream_snapshot(self):
        """(version, per-layer weights) copied under the lock; streams step on
        these copies, so a concurrent load_state_dict can never tear a step."""
        with self._lock:
            if self._snapshot is None:
                specs = []
                for layer in range(self.num_layers):
                    w = {k: (np.array(v, copy=True) if v is not None else None)
                         for k, v in self._weights(layer, 0).items()}
                    bx, bhn = fused_biases(self.mode, self.hidden_size, w["b_ih"], w["b_hh"],
                                           self.dtype)
                    specs.append({"Wih": w["Wih"], "Whh": w["Whh"], "Whr": w["Whr"],
                                  "bx": bx, "bhn": bhn, **self._packed_cat(w)})
                self._snapshot = (self._version, specs)
            return self._snapshot

    def _packed_cat(self, w):
        """The weights in the packed-panel layout of src/_core/packed.h, for a
        stream step's single pass over them (float32): [W_ih | W_hh] for
        RNN/LSTM/MinimalGRU; for both GRUs [W_ir,z | W_hr,z], then W_in from
        offset sec2, then W_hn from sec3 (r multiplies W_hn h, or with
        reset_after=False multiplies h before it)."""
        if self.dtype != np.float32:
            return {"Wcat": None}
        if self.mode not in ("GRU", "GRU_RB"):
            return {"Wcat": _on_line(_panels(np.concatenate([w["Wih"], w["Whh"]], axis=1)))}
        H = self.hidden_size
        parts = [_panels(np.concatenate([w["Wih"][:2 * H], w["Whh"][:2 * H]], axis=1)),
                 _panels(w["Wih"][2 * H:]), _panels(w["Whh"][2 * H:])]
        return {"Wcat": _on_line(np.concatenate(parts)), "sec2": parts[0].size,
                "sec3": parts[0].size + parts[1].size}

    # -- description -------------------------------------------------------
    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    @property
    def output_size(self):
        return self.proj_size or self.hidden_size

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if not self.bias:
            s += ", bias=False"
        if self.dtype != np.float32:
            s += f", dtype={self.dtype.name}"
        return s

    def _weights(self, layer, d, arrays=None):
        """The arrays of one layer and direction (params, or grads) under the
        driver's names Wih, Whh, Whr, b_ih, b_hh (absent ones are None)."""
        names = self.__dict__.get("_slot_names")
        if names is None:       # the parameter names, made once: a call's µs count
            names = self._slot_names = {
                (k, e): [(slot, f"{name}l{k}" + ("_reverse" if e else "")) for slot, name in _SLOTS]
                for k in range(self.num_layers) for e in range(self.num_directions)}
        a = self.params if arrays is None else arrays
        return {slot: a.get(name) for slot, name in names[layer, d]}

    # -- input handling ----------------------------------------------------
    def _state_shapes(self, B):
        LD = self.num_layers * self.num_directions
        return (LD, B, self.output_size), (LD, B, self.hidden_size)

    def _prepare(self, x, hx, lengths):
        x = as_float_array(x, self.dtype, "x")
        if x.ndim == 2:
            batched = False
            x = x[:, None, :]
        elif x.ndim == 3:
            batched = True
            if self.batch_first:
                x = x.transpose(1, 0, 2)
        else:
            raise ValueError(
                f"x: expected a 3-D array ({'B, T' if self.batch_first else 'T, B'}, "
                f"{self.input_size}) or 2-D unbatched (T, {self.input_size}), "
                f"got shape {x.shape}")
        if x.shape[2] != self.input_size:
            want = ((f"(B, T, {self.input_size})" if self.batch_first
                     else f"(T, B, {self.input_size})") if batched
                    else f"(T, {self.input_size})")
            got = x.shape if not batched else (x.transpose(1, 0, 2).shape if self.batch_first
                                              else x.shape)
            raise ValueError(f"x: expected shape {want}, got {tuple(got) if batched else x.shape[::2]}")
        x = np.ascontiguousarray(x)
        T, B = x.shape[0], x.shape[1]
        if T * B >= _INT32_LIMIT:
            raise ValueError(f"x: at most {_INT32_LIMIT - 1} (time step, sequence) rows are "
                             f"supported (BLAS uses 32-bit sizes), got T*B = {T * B}")
        if not batched and lengths is not None:
            raise ValueError("lengths: only batched (3-D) input takes lengths; "
                             "for one sequence slice x instead")
        lengths = as_lengths(lengths, T, B)
        hshape, cshape = self._state_shapes(B)
        is_lstm = self.mode == "LSTM"
        if hx is None:
            h0 = np.zeros(hshape, self.dtype)
            c0 = np.zeros(cshape, self.dtype) if is_lstm else None
        else:
            if is_lstm:
                if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                    raise TypeError("hx: LSTM expects a tuple (h0, c0) or None, got "
                                    f"{type(hx).__name__}")
                h0 = self._state(hx[0], "hx[0] (h0)", hshape, batched)
                c0 = self._state(hx[1], "hx[1] (c0)", cshape, batched)
            else:
                if isinstance(hx, (tuple, list)):
                    raise TypeError(f"hx: {type(self).__name__} expects one array, got a "
                                    f"{type(hx).__name__}")
                h0 = self._state(hx, "hx", hshape, batched)
                c0 = None
        return x, h0, c0, lengths, batched

    def _state(self, v, name, shape, batched):
        v = as_float_array(v, self.dtype, name)
        want = shape if batched else (shape[0], shape[2])
        if v.shape != want:
            raise ValueError(f"{name}: expected shape {want}, got {v.shape}")
        if not batched:
            v = v[:, None, :]
        return np.array(v, dtype=self.dtype, order="C", copy=True)

    def _out(self, y, h, c, batched):
        if not batched:
            y, h = y[:, 0], h[:, 0]
            c = c[:, 0] if c is not None else None
        elif self.batch_first:
            y = y.transpose(1, 0, 2)
        y = np.ascontiguousarray(y)
        return (y, (h, c)) if self.mode == "LSTM" else (y, h)

    # -- compute -----------------------------------------------------------
    def _run(self, x, h0, c0, lengths, train):
        T, B = x.shape[0], x.shape[1]
        D, L, P, H = self.num_directions, self.num_layers, self.output_size, self.hidden_size
        is_lstm = self.mode == "LSTM"
        hn = np.empty((L * D, B, P), self.dtype)
        cn = np.empty((L * D, B, H), self.dtype) if is_lstm else None
        caches, masks, inp = [], [], x
        if T == 0 or B == 0:
            hn[...] = h0
            if is_lstm:
                cn[...] = c0
            return np.zeros((T, B, D * P), self.dtype), hn, cn, caches, masks
        for layer in range(L):
            y = lend((T, B, D * P), self.dtype)
            layer_caches = []
            for d in range(D):
                i = layer * D + d
                layer_caches.append(direction_forward(
                    self.mode, self._weights(layer, d), inp, h0[i],
                    c0[i] if is_lstm else None, lengths, bool(d), y[:, :, d * P:],
                    hn[i], cn[i] if is_lstm else None, train, ldy=D * P))
            caches.append(layer_caches)
            if train and self.dropout > 0 and layer < L - 1:
                keep = self.rng.random(y.shape) >= self.dropout
                mask = keep.astype(self.dtype) * self.dtype.type(1.0 / (1.0 - self.dropout))
                masks.append(mask)
                inp = y * mask
            else:
                masks.append(None)
                inp = y
        return inp, hn, cn, caches, masks

    def forward(self, x, hx=None, lengths=None):
        """Inference: ``y, h_n = layer(x, hx, lengths)`` (LSTM: ``y, (h_n, c_n)``)."""
        x, h0, c0, lengths, batched = self._prepare(x, hx, lengths)
        y, hn, cn, _, _ = self._run(x, h0, c0, lengths, train=False)
        return self._out(y, hn, cn, batched)

    def forward_train(self, x, hx=None, lengths=None):
        """Training forward: returns ``(y, h_n, backward)``; ``backward(dy, dh_n=None)``
        adds parameter gradients into ``self.grads`` and returns ``(dx, dhx)``."""
        x, h0, c0, lengths, batched = self._prepare(x, hx, lengths)
        y, hn, cn, caches, masks = self._run(x, h0, c0, lengths, train=True)
        T, B = x.shape[0], x.shape[1]
        y_user, h_user = self._out(y, hn, cn, batched)
        y_shape = y_user.shape
        hshape, cshape = self._state_shapes(B)
        is_lstm = self.mode == "LSTM"

        def backward(dy, dh_n=None):
            dy = self._grad_in(dy, "dy", y_shape)
            if not batched:
                dy = dy[:, None, :]
            elif self.batch_first:
                dy = dy.transpose(1, 0, 2)
            dy = np.ascontiguousarray(dy)
            if is_lstm:
                if dh_n is None:
                    dh_n = (None, None)
                if not isinstance(dh_n, (tuple, list)) or len(dh_n) != 2:
                    raise TypeError("dh_n: LSTM expects a tuple (dh_n, dc_n) or None")
                dhn = self._grad_state(dh_n[0], "dh_n[0]", hshape, batched)
                dcn = self._grad_state(dh_n[1], "dh_n[1]", cshape, batched)
            else:
                dhn = self._grad_state(dh_n, "dh_n", hshape, batched)
                dcn = None
            dx, dh0, dc0 = self._backward(caches, masks, x.shape, dy, dhn, dcn)
            if not batched:
                dx, dh0 = dx[:, 0], dh0[:, 0]
                dc0 = dc0[:, 0] if dc0 is not None else None
            elif self.batch_first:
                dx = np.ascontiguousarray(dx.transpose(1, 0, 2))
            return dx, ((dh0, dc0) if is_lstm else dh0)

        return y_user, h_user, once(backward)

    def _grad_in(self, g, name, shape):
        if g is None:
            return np.zeros(shape, self.dtype)
        g = as_float_array(g, self.dtype, name)
        if g.shape != tuple(shape):
            raise ValueError(f"{name}: expected shape {tuple(shape)}, got {g.shape}")
        return g

    def _grad_state(self, g, name, shape, batched):
        want = shape if batched else (shape[0], shape[2])
        g = self._grad_in(g, name, want)
        if not batched:
            g = g[:, None, :]
        return np.ascontiguousarray(g)

    def _backward(self, caches, masks, x_shape, dy, dhn, dcn):
        T, B, _ = x_shape
        D, L, P, H = self.num_directions, self.num_layers, self.output_size, self.hidden_size
        is_lstm = self.mode == "LSTM"
        dh0 = np.empty((L * D, B, P), self.dtype)
        dc0 = np.empty((L * D, B, H), self.dtype) if is_lstm else None
        if T == 0 or B == 0:
            dh0[...] = dhn
            if is_lstm:
                dc0[...] = dcn
            return np.zeros(x_shape, self.dtype), dh0, dc0
        d_out = dy
        for layer in range(L - 1, -1, -1):
            in_k = self.input_size if layer == 0 else D * P
            dX = lend((T, B, in_k), self.dtype)
            for d in range(D):
                i = layer * D + d
                direction_backward(self.mode, caches[layer][d], d_out[:, :, d * P:],
                                   dhn[i], dcn[i] if is_lstm else None, dX, dh0[i],
                                   dc0[i] if is_lstm else None,
                                   self._weights(layer, d, self.grads),
                                   accumulate_dx=d > 0, ldy=D * P)
            caches[layer] = None  # release activations as we go
            if layer > 0 and masks[layer - 1] is not None:
                dX *= masks[layer - 1]
            d_out = dX
        return d_out, dh0, dc0


class RNN(_RNNBase):
    """Elman RNN: ``h' = act(W_ih x + b_ih + W_hh h + b_hh)``, act = tanh or relu."""

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, dtype=np.float32,
                 seed=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size,
                         hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         0, dtype, seed)

    def extra_repr(self):
        s = super().extra_repr()
        return s + (", nonlinearity='relu'" if self.nonlinearity == "relu" else "")


class GRU(_RNNBase):
    """GRU, gates r, z, n. ``reset_after=True`` is PyTorch's/cuDNN's form
    (r multiplies W_hn h + b_hn); False is Cho et al.'s (W_hn (r*h))."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, reset_after=True, dtype=np.float32,
                 seed=None):
        self.reset_after = bool(reset_after)
        super().__init__("GRU" if self.reset_after else "GRU_RB", input_size, hidden_size,
                         num_layers, bias, batch_first, dropout, bidirectional, 0, dtype, seed)

    def extra_repr(self):
        s = super().extra_repr()
        return s + ("" if self.reset_after else ", reset_after=False")


class LSTM(_RNNBase):
    """LSTM, gates i, f, g, o; with ``proj_size > 0`` the output is projected
    (``h = W_hr (o * tanh(c))``), as PyTorch's LSTM with projections."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, dtype=np.float32, seed=None):
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, proj_size, dtype, seed)


class MinimalGRU(_RNNBase):
    """Minimal GRU (update gate only): ``n = tanh(W_in x + b_in + W_hn h + b_hn)``,
    ``h' = (1 - z) n + z h``; gates z, n."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, dtype=np.float32, seed=None):
        super().__init__("MGRU", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, 0, dtype, seed)
