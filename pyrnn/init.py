"""In-place initialisers, each drawing from a ``np.random.Generator``.

``rng`` may be a Generator, an integer seed or None (fresh entropy).
Fans follow torch.nn.init: fan_in = shape[1] * receptive field,
fan_out = shape[0] * receptive field.
"""
import math

import numpy as np

__all__ = ["calculate_gain", "uniform_default", "orthogonal", "xavier_uniform",
           "xavier_normal", "kaiming_uniform", "he_uniform", "kaiming_normal",
           "lstm_forget_bias", "zeros"]


def _rng(rng):
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _target(arr):
    if not isinstance(arr, np.ndarray) or arr.dtype.kind != "f":
        raise TypeError("initialisers fill a floating-point np.ndarray in place, got "
                        f"{type(arr).__name__}{'' if not hasattr(arr, 'dtype') else ' ' + str(arr.dtype)}")
    if not arr.flags.writeable:
        raise ValueError("array is read-only")
    return arr


def _fans(arr):
    if arr.ndim < 2:
        raise ValueError(
            f"fan in/out need an array with at least 2 dims, got shape {arr.shape}")
    receptive = int(np.prod(arr.shape[2:])) if arr.ndim > 2 else 1
    return arr.shape[1] * receptive, arr.shape[0] * receptive


def calculate_gain(nonlinearity, param=None):
    """torch.nn.init.calculate_gain."""
    if nonlinearity in ("linear", "conv1d", "conv2d", "conv3d", "sigmoid"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"unsupported nonlinearity {nonlinearity!r}")


def uniform_default(arr, hidden_size, rng=None):
    """PyTorch's RNN default: U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))."""
    arr = _target(arr)
    if hidden_size <= 0:
        raise ValueError(f"hidden_size must be > 0, got {hidden_size}")
    k = 1.0 / math.sqrt(hidden_size)
    arr[...] = _rng(rng).uniform(-k, k, arr.shape)
    return arr


def _orth(rows, cols, rng):
    # QR of a Gaussian, with the sign of R's diagonal folded into Q so the
    # result is Haar-distributed (Mezzadri 2007), as torch.nn.init.orthogonal_.
    flat = rng.standard_normal((rows, cols))
    if rows < cols:
        flat = flat.T
    q, r = np.linalg.qr(flat)
    d = np.sign(np.diag(r))
    d[d == 0] = 1
    q *= d
    return q.T if rows < cols else q


def orthogonal(arr, gain=1.0, rng=None, num_gates=None):
    """Fill ``arr`` with a (semi-)orthogonal matrix times ``gain``.

    Recurrent weights stack gates along the first axis, (G*H, H); each gate's
    H x H block is made orthogonal on its own, since an orthogonal stack
    would not make any single gate's map norm-preserving. ``num_gates``
    defaults to rows // cols when rows is a multiple of cols, else 1.
    Arrays with more than 2 dims are flattened after the first.
    """
    arr = _target(arr)
    if arr.ndim < 2:
        raise ValueError(f"orthogonal needs at least 2 dims, got shape {arr.shape}")
    rows = arr.shape[0]
    cols = int(np.prod(arr.shape[1:]))
    if num_gates is None:
        num_gates = rows // cols if cols and rows % cols == 0 and rows > cols else 1
    num_gates = int(num_gates)
    if num_gates < 1 or rows % num_gates:
        raise ValueError(f"num_gates must divide the {rows} rows, got {num_gates}")
    if arr.size == 0:
        return arr
    g = _rng(rng)
    h = rows // num_gates
    out = np.concatenate([_orth(h, cols, g) for _ in range(num_gates)], axis=0)
    arr[...] = (gain * out).reshape(arr.shape)
    return arr


def xavier_uniform(arr, gain=1.0, rng=None):
    """Glorot uniform: U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out))."""
    arr = _target(arr)
    fan_in, fan_out = _fans(arr)
    a = gain * math.sqrt(6.0 / (fan_in + fan_out)) if fan_in + fan_out else 0.0
    arr[...] = _rng(rng).uniform(-a, a, arr.shape)
    return arr


def xavier_normal(arr, gain=1.0, rng=None):
    """Glorot normal: N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out))."""
    arr = _target(arr)
    fan_in, fan_out = _fans(arr)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out)) if fan_in + fan_out else 0.0
    arr[...] = _rng(rng).normal(0.0, std, arr.shape)
    return arr


def _kaiming_std(arr, a, mode, nonlinearity):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _fans(arr)
    fan = fan_in if mode == "fan_in" else fan_out
    return calculate_gain(nonlinearity, a) / math.sqrt(fan) if fan else 0.0


def kaiming_uniform(arr, a=0.0, mode="fan_in", nonlinearity="leaky_relu", rng=None):
    """He uniform: U(-b, b), b = gain * sqrt(3 / fan) (torch's defaults: gain sqrt(2))."""
    arr = _target(arr)
    bound = math.sqrt(3.0) * _kaiming_std(arr, a, mode, nonlinearity)
    arr[...] = _rng(rng).uniform(-bound, bound, arr.shape)
    return arr


he_uniform = kaiming_uniform


def kaiming_normal(arr, a=0.0, mode="fan_in", nonlinearity="leaky_relu", rng=None):
    """He normal: N(0, std^2), std = gain / sqrt(fan)."""
    arr = _target(arr)
    arr[...] = _rng(rng).normal(0.0, _kaiming_std(arr, a, mode, nonlinearity), arr.shape)
    return arr


def lstm_forget_bias(bias, hidden_size, value=1.0):
    """Set the forget-gate slice [H:2H] of an LSTM bias (gates i, f, g, o).

    torch adds bias_ih and bias_hh, so set it on one of them (and zero the
    other's slice) for an effective forget bias of ``value``.
    """
    bias = _target(bias)
    H = int(hidden_size)
    if bias.shape != (4 * H,):
        raise ValueError(f"bias: expected shape ({4 * H},), got {bias.shape}")
    bias[H:2 * H] = value
    return bias


def zeros(arr):
    """Fill with zeros."""
    _target(arr)[...] = 0
    return arr
