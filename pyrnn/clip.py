"""Gradient clipping, in place, like torch.nn.utils.clip_grad_norm_/_value_.

Both accept a module (anything with a ``grads`` dict), a list of modules,
a grads dict, an array, or a list mixing these.
"""
import math
from collections.abc import Mapping

import numpy as np

__all__ = ["clip_grad_norm", "clip_grad_value", "grad_norm"]


def _collect(src, out):
    if isinstance(src, np.ndarray):
        out.append(src)
    elif isinstance(getattr(src, "grads", None), Mapping):
        _collect(list(src.grads.values()), out)
    elif isinstance(src, Mapping):
        _collect(list(src.values()), out)
    elif isinstance(src, (list, tuple)):
        for s in src:
            _collect(s, out)
    else:
        raise TypeError(
            "expected a module, a grads dict, an array or a list of these; "
            f"got {type(src).__name__}")
    return out


def _grads(src):
    gs = _collect(src, [])
    for g in gs:
        if g.dtype.kind != "f":
            raise TypeError(f"gradients must be floating point, got dtype {g.dtype}")
        if not g.flags.writeable:
            raise ValueError("gradients are clipped in place but one is read-only")
    return gs


def _norm_type(norm_type):
    t = float(norm_type)  # accepts "inf"
    if math.isnan(t) or t <= 0:
        # p <= 0 is not a norm; torch accepts 0 (count) but clipping by it is meaningless
        raise ValueError(f"norm_type must be > 0 or inf, got {norm_type}")
    return t


def grad_norm(modules_or_grads, norm_type=2.0):
    """Global norm of all gradients taken together (no clipping)."""
    return _total_norm(_grads(modules_or_grads), _norm_type(norm_type))


def _total_norm(gs, p):
    if not gs:
        return 0.0
    # float64 accumulation: float32 squares of large gradients would overflow
    if math.isinf(p):
        return float(max((np.max(np.abs(g)) if g.size else 0.0) for g in gs))
    norms = []
    for g in gs:
        g64 = g.astype(np.float64, copy=False).ravel()
        if p == 2.0:
            norms.append(math.sqrt(float(np.einsum("i,i->", g64, g64))))  # no BLAS threads
        elif p == 1.0:
            norms.append(float(np.sum(np.abs(g64))))
        else:
            norms.append(float(np.sum(np.abs(g64) ** p)) ** (1.0 / p))
    return float(np.linalg.norm(np.array(norms), ord=p))


def clip_grad_norm(modules_or_grads, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale all gradients together so their global norm is at most ``max_norm``.

    The scale is ``max_norm / (total_norm + 1e-6)`` capped at 1, as in torch.
    Returns the total norm before clipping (a Python float).
    """
    gs = _grads(modules_or_grads)
    p = _norm_type(norm_type)
    max_norm = float(max_norm)
    total = _total_norm(gs, p)
    if not math.isfinite(total):
        if error_if_nonfinite:
            raise RuntimeError(
                f"The total norm of order {p} of the gradients is non-finite "
                "so it cannot be clipped")
    coef = max_norm / (total + 1e-6)
    if coef < 1.0 or math.isnan(coef):
        for g in gs:
            g *= g.dtype.type(coef)
    return total


def clip_grad_value(modules_or_grads, clip_value):
    """Clamp every gradient element to ``[-clip_value, clip_value]`` in place."""
    c = float(clip_value)
    if not c >= 0:
        raise ValueError(f"clip_value must be >= 0, got {clip_value}")
    for g in _grads(modules_or_grads):
        np.clip(g, -c, c, out=g)
