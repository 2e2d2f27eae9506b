"""Losses that return ``(loss, dinput)``: the value and its gradient with
respect to the first argument, ready to feed a layer's backward.

Every loss takes an optional ``mask`` whose shape is a leading part of the
input's (e.g. ``(T, B)`` for ``(T, B, C)`` logits); masked-out elements add
nothing to the loss or the gradient. ``reduction="mean"`` divides by the
number of counted elements (a fractional mask acts as a weight), ``"sum"``
adds them, ``"none"`` returns the per-element losses (masked ones are 0) and
the gradient of their sum. When nothing is counted the mean is 0 with a zero
gradient (torch gives nan), so a fully padded batch cannot poison training.

The loss value is a Python float, accumulated in float64; gradients have the
input's dtype (float32 or float64).
"""
import numpy as np

from .nn import _to_numpy, as_float_array, as_index_array

__all__ = ["log_softmax", "softmax", "cross_entropy",
           "binary_cross_entropy_with_logits", "mse_loss"]

_REDUCTIONS = ("mean", "sum", "none")


def _float(x, name, allow_int=False):
    """Float array in float32/float64 (float16 -> float32, longdouble -> float64)."""
    try:
        arr = _to_numpy(x)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{name}: cannot convert {type(x).__name__} to an array: {e}") from e
    if arr.dtype.kind not in ("fbiu" if allow_int else "f"):
        want = "real numbers" if allow_int else "a floating-point array"
        raise TypeError(f"{name}: expected {want}, got dtype {arr.dtype}")
    if arr.dtype == np.float16:
        return arr.astype(np.float32)
    if arr.dtype not in (np.float32, np.float64):
        return arr.astype(np.float64)
    return arr


def log_softmax(x, axis=-1):
    """log(softmax(x)) computed stably (max subtracted first)."""
    x = _float(x, "x")
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)  # all -inf rows stay -inf, not nan
    s = x - m
    return s - np.log(np.sum(np.exp(s), axis=axis, keepdims=True))


def softmax(x, axis=-1):
    """softmax(x) computed stably."""
    x = _float(x, "x")
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    e = np.exp(x - m)
    return e / np.sum(e, axis=axis, keepdims=True)


def _check_reduction(reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _mask(mask, shape, dtype):
    """Validate a mask whose shape is a leading part of ``shape``; None stays None."""
    if mask is None:
        return None
    m = _to_numpy(mask)
    if m.dtype.kind not in "biuf":
        raise TypeError(f"mask: expected bool or numeric values, got dtype {m.dtype}")
    if m.ndim > len(shape) or m.shape != tuple(shape[:m.ndim]):
        raise ValueError(
            f"mask: expected shape {tuple(shape)} or a leading part of it, "
            f"got {tuple(m.shape)}")
    m = m.astype(dtype)
    if not np.all(np.isfinite(m)) or np.any(m < 0):
        raise ValueError("mask: values must be finite and >= 0")
    return m


def _reduce(elem, grad, w, reduction):
    """Weight per-element losses ``elem`` and their gradients ``grad`` (fresh
    arrays, scaled in place) by the mask ``w`` (leading shape of both), then
    reduce. Returns (loss, grad)."""
    if w is None:
        count = float(elem.size)
    else:
        off = w == 0
        elem = elem * w.reshape(w.shape + (1,) * (elem.ndim - w.ndim))
        grad *= w.reshape(w.shape + (1,) * (grad.ndim - w.ndim))
        # zero, not multiply-by-zero: a masked-out inf/nan must not leak in as nan
        elem[off] = 0
        grad[off] = 0
        count = float(np.sum(w, dtype=np.float64)) * (elem.size // max(w.size, 1))
    if reduction == "none":
        return elem, grad
    total = float(np.sum(elem, dtype=np.float64))
    if reduction == "mean":
        if count == 0:
            return 0.0, np.zeros_like(grad)
        total /= count
        grad *= 1.0 / count
    return total, grad


def cross_entropy(logits, targets, mask=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0):
    """Softmax cross-entropy over the last axis with a fused log-softmax.

    logits (..., C) float; targets (...) integer class ids in [0, C) or
    ``ignore_index`` (torch's default -100; None disables it). Returns
    ``(loss, dlogits)``. ``label_smoothing`` follows torch: the target is
    (1 - eps) one-hot + eps / C.
    """
    _check_reduction(reduction)
    x = _float(logits, "logits")
    if x.ndim < 1 or x.shape[-1] < 1:
        raise ValueError(f"logits: expected shape (..., C) with C >= 1, got {tuple(x.shape)}")
    C = x.shape[-1]
    t = as_index_array(targets, "targets")
    if t.shape != x.shape[:-1]:
        raise ValueError(
            f"targets: expected shape {tuple(x.shape[:-1])}, got {tuple(t.shape)}")
    eps = float(label_smoothing)
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")

    valid = np.ones(t.shape, bool) if ignore_index is None else (t != ignore_index)
    bad = valid & ((t < 0) | (t >= C))
    if np.any(bad):
        raise ValueError(
            f"targets: class ids must be in [0, {C})"
            + ("" if ignore_index is None else f" or equal ignore_index={ignore_index}")
            + f", got {t[bad].flat[0]}")
    safe_t = np.where(valid, t, 0)

    logp = log_softmax(x)
    picked = np.take_along_axis(logp, safe_t[..., None], axis=-1)[..., 0]
    nll = -picked
    grad = np.exp(logp)  # softmax, reusing the log-softmax
    # subtract the (smoothed) one-hot target; grad is fresh, so the view writes through
    g2 = grad.reshape(-1, C)
    g2[np.arange(g2.shape[0]), safe_t.reshape(-1)] -= 1.0 - eps
    if eps > 0:
        nll = (1.0 - eps) * nll - eps * np.mean(logp, axis=-1)
        grad -= eps / C

    w = _mask(mask, t.shape, x.dtype)
    if ignore_index is not None:
        w = valid.astype(x.dtype) if w is None else w * valid
    return _reduce(nll, grad, w, reduction)


def binary_cross_entropy_with_logits(logits, targets, mask=None, reduction="mean",
                                     pos_weight=None):
    """-y log sigmoid(x) - (1 - y) log(1 - sigmoid(x)), computed from logits.

    targets have the logits' shape, values in [0, 1]; ``pos_weight``
    (broadcast over the last axis, as in torch) weights the positive term.
    Returns ``(loss, dlogits)``.
    """
    _check_reduction(reduction)
    x = _float(logits, "logits")
    y = _to_numpy(targets)
    if y.dtype.kind not in "biuf":
        raise TypeError(f"targets: expected real numbers, got dtype {y.dtype}")
    if y.shape != x.shape:
        raise ValueError(f"targets: expected shape {tuple(x.shape)}, got {tuple(y.shape)}")
    y = y.astype(x.dtype, copy=False)
    # only exp(-|x|) is ever taken, so nothing overflows for |x| ~ 1e4
    e = np.exp(-np.abs(x))
    sp_neg = np.maximum(-x, 0) + np.log1p(e)   # -log sigmoid(x)
    sig = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
    if pos_weight is None:
        elem = (1 - y) * x + sp_neg
        grad = sig - y
    else:
        p = as_float_array(pos_weight, x.dtype, "pos_weight")
        try:
            np.broadcast_shapes(p.shape, x.shape)
        except ValueError:
            raise ValueError(
                f"pos_weight: expected a shape broadcastable to {tuple(x.shape)}, "
                f"got {tuple(p.shape)}") from None
        lw = 1 + (p - 1) * y
        elem = (1 - y) * x + lw * sp_neg
        grad = lw * sig - p * y
    return _reduce(elem, grad, _mask(mask, x.shape, x.dtype), reduction)


def mse_loss(pred, target, mask=None, reduction="mean"):
    """Mean squared error; returns ``(loss, dpred)``."""
    _check_reduction(reduction)
    x = _float(pred, "pred")
    t = _float(target, "target", allow_int=True)
    if t.shape != x.shape:
        raise ValueError(f"target: expected shape {tuple(x.shape)}, got {tuple(t.shape)}")
    d = x - t.astype(x.dtype, copy=False)
    return _reduce(d * d, 2.0 * d, _mask(mask, x.shape, x.dtype), reduction)
