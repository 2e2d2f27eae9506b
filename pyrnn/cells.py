"""Single-step cells: RNNCell, GRUCell, LSTMCell, MinimalGRUCell.

A cell step is a one-step sequence through the same compiled kernels as the
layers, so cells and layers agree to the bit.
"""
import numpy as np

from ._threads import limit_blas_threads
from .layers import KINDS, _check_int, direction_backward, direction_forward
from .nn import Module, as_float_array, check_dtype, once

__all__ = ["RNNCell", "GRUCell", "LSTMCell", "MinimalGRUCell"]


class _CellBase(Module):
    def __init__(self, mode, input_size, hidden_size, bias, dtype, seed):
        self.mode = mode
        self.input_size = _check_int("input_size", input_size, 1)
        self.hidden_size = _check_int("hidden_size", hidden_size, 1)
        self.bias = bool(bias)
        self.dtype = check_dtype(dtype)
        self.seed = seed
        G, H = KINDS[mode][1], self.hidden_size
        rng = np.random.default_rng(seed)
        k = 1.0 / np.sqrt(H)
        shapes = [("weight_ih", (G * H, self.input_size)), ("weight_hh", (G * H, H))]
        if self.bias:
            shapes += [("bias_ih", (G * H,)), ("bias_hh", (G * H,))]
        self._init_params({n: rng.uniform(-k, k, size=s) for n, s in shapes})
        limit_blas_threads()

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if self.dtype != np.float32:
            s += f", dtype={self.dtype.name}"
        return s

    def _weights(self, arrays=None):
        a = self.params if arrays is None else arrays
        return {"Wih": a["weight_ih"], "Whh": a["weight_hh"], "Whr": None,
                "b_ih": a.get("bias_ih"), "b_hh": a.get("bias_hh")}

    def _x(self, x):
        x = as_float_array(x, self.dtype, "x")
        if x.ndim not in (1, 2) or x.shape[-1] != self.input_size:
            raise ValueError(f"x: expected shape (B, {self.input_size}) or ({self.input_size},), "
                             f"got {x.shape}")
        batched = x.ndim == 2
        X = np.ascontiguousarray(x.reshape(1, -1, self.input_size))
        return X, batched

    def _s(self, v, name, B, batched):
        H = self.hidden_size
        if v is None:
            return np.zeros((B, H), self.dtype)
        v = as_float_array(v, self.dtype, name)
        want = (B, H) if batched else (H,)
        if v.shape != want:
            raise ValueError(f"{name}: expected shape {want}, got {v.shape}")
        return np.array(v.reshape(B, H), dtype=self.dtype, order="C", copy=True)

    def _step(self, X, h0, c0, train):
        B, H = X.shape[1], self.hidden_size
        hn = np.empty((B, H), self.dtype)
        cn = np.empty((B, H), self.dtype) if c0 is not None else None
        Y = np.empty((1, B, H), self.dtype)
        cache = None
        if B:
            cache = direction_forward(self.mode, self._weights(), X, h0, c0, None, False, Y,
                                      hn, cn, train)
        return hn, cn, cache

    def _step_backward(self, cache, X, dh1, dc1):
        B, H = X.shape[1], self.hidden_size
        dx = np.zeros((B, self.input_size), self.dtype)
        dh = np.empty((B, H), self.dtype)
        dc = np.empty((B, H), self.dtype) if dc1 is not None else None
        if B:
            direction_backward(self.mode, cache, np.zeros((1, B, H), self.dtype), dh1, dc1,
                               dx.reshape(1, B, -1), dh, dc, self._weights(self.grads), False)
        return dx, dh, dc

    def _unbatch(self, batched, *arrays):
        if batched:
            return arrays
        return tuple(a[0] if a is not None else None for a in arrays)


class _HCell(_CellBase):
    """Cells whose state is one array h."""

    def forward(self, x, h=None):
        """``h1 = cell(x, h)``; x (B, I) or (I,), h (B, H) / (H,) or None."""
        X, batched = self._x(x)
        h0 = self._s(h, "h", X.shape[1], batched)
        hn, _, _ = self._step(X, h0, None, False)
        return self._unbatch(batched, hn)[0]

    def forward_train(self, x, h=None):
        """``h1, backward = cell.forward_train(x, h)``; ``dx, dh = backward(dh1)``."""
        X, batched = self._x(x)
        B = X.shape[1]
        h0 = self._s(h, "h", B, batched)
        hn, _, cache = self._step(X, h0, None, True)

        def backward(dh1):
            d = self._s(dh1, "dh1", B, batched)
            dx, dh, _ = self._step_backward(cache, X, d, None)
            return self._unbatch(batched, dx, dh)

        return self._unbatch(batched, hn)[0], once(backward)


class RNNCell(_HCell):
    """``h' = act(W_ih x + b_ih + W_hh h + b_hh)``, act = tanh or relu."""

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh",
                 dtype=np.float32, seed=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size,
                         hidden_size, bias, dtype, seed)


class GRUCell(_HCell):
    """GRU step, gates r, z, n; ``reset_after`` as in pyrnn.GRU."""

    def __init__(self, input_size, hidden_size, bias=True, reset_after=True,
                 dtype=np.float32, seed=None):
        self.reset_after = bool(reset_after)
        super().__init__("GRU" if self.reset_after else "GRU_RB", input_size, hidden_size,
                         bias, dtype, seed)


class MinimalGRUCell(_HCell):
    """Minimal GRU step (update gate only), gates z, n."""

    def __init__(self, input_size, hidden_size, bias=True, dtype=np.float32, seed=None):
        super().__init__("MGRU", input_size, hidden_size, bias, dtype, seed)


class LSTMCell(_CellBase):
    """LSTM step, gates i, f, g, o; state (h, c)."""

    def __init__(self, input_size, hidden_size, bias=True, dtype=np.float32, seed=None):
        super().__init__("LSTM", input_size, hidden_size, bias, dtype, seed)

    def _hc(self, hx, B, batched, names=("hx[0] (h)", "hx[1] (c)")):
        if hx is None:
            hx = (None, None)
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise TypeError(f"{names[0].split('[')[0]}: LSTMCell expects a tuple (h, c) or None, "
                            f"got {type(hx).__name__}")
        return (self._s(hx[0], names[0], B, batched), self._s(hx[1], names[1], B, batched))

    def forward(self, x, hx=None):
        """``h1, c1 = cell(x, (h, c))``."""
        X, batched = self._x(x)
        h0, c0 = self._hc(hx, X.shape[1], batched)
        hn, cn, _ = self._step(X, h0, c0, False)
        return self._unbatch(batched, hn, cn)

    def forward_train(self, x, hx=None):
        """``(h1, c1), backward = cell.forward_train(x, (h, c))``;
        ``dx, (dh, dc) = backward((dh1, dc1))``."""
        X, batched = self._x(x)
        B = X.shape[1]
        h0, c0 = self._hc(hx, B, batched)
        hn, cn, cache = self._step(X, h0, c0, True)

        def backward(dout):
            dh1, dc1 = self._hc(dout, B, batched, ("dout[0] (dh1)", "dout[1] (dc1)"))
            dx, dh, dc = self._step_backward(cache, X, dh1, dc1)
            dx, dh, dc = self._unbatch(batched, dx, dh, dc)
            return dx, (dh, dc)

        return self._unbatch(batched, hn, cn), once(backward)
