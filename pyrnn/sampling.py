"""Drawing token ids from logits: temperature, top-k and nucleus (top-p).

The steps, per row, all in float64:

1. ``temperature == 0``: the argmax (the first one on ties); no randomness
   is used and top-k / top-p cannot change the answer.
2. ``p = softmax((logits - max) / temperature)``; subtracting the max first
   keeps every exponent <= 0, so nothing overflows for any temperature.
3. ``top_k``: keep exactly the k most probable ids (ties go to the lower id).
4. ``top_p``: of what is left, renormalised, keep the smallest set of most
   probable ids whose total is >= top_p (always at least one).
5. Draw with one uniform number per row by inverse CDF, so the same seed
   gives the same ids.

``-inf`` logits are allowed (masked ids, never drawn); NaN and ``+inf`` are not.
"""
import numbers

import numpy as np

__all__ = ["sample_logits", "sampling_probs", "as_generator"]

# Cumulative sums are compared to top_p with this slack, so that a set whose
# exact total is p is not missed by a rounding error in the last bit.
_TOP_P_SLACK = 1e-12


def as_generator(rng):
    """``None``, an int seed, a SeedSequence or a Generator -> a Generator."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, np.random.SeedSequence) or (
            isinstance(rng, numbers.Integral) and not isinstance(rng, bool)):
        if isinstance(rng, numbers.Integral) and rng < 0:
            raise ValueError(f"rng: a seed must be >= 0, got {rng}")
        return np.random.default_rng(rng)
    raise TypeError(
        f"rng must be None, an int seed or a numpy Generator, got {type(rng).__name__}")


def _check_args(logits, temperature, top_k, top_p):
    x = np.asarray(logits)
    if x.dtype == bool or x.dtype.kind not in "iuf":
        raise TypeError(f"logits must be real numbers, got dtype {x.dtype}")
    if x.ndim not in (1, 2):
        raise ValueError(f"logits must have shape (V,) or (B, V), got {x.shape}")
    if x.shape[-1] < 1:
        raise ValueError(f"logits must have V >= 1 entries in the last axis, got shape {x.shape}")
    x = x.astype(np.float64, copy=False)
    if np.isnan(x).any() or np.isposinf(x).any():
        raise ValueError("logits must not contain NaN or +inf")
    if x.size and np.isneginf(x).all(axis=-1).any():
        raise ValueError("logits: a row is all -inf, nothing can be drawn")

    if not isinstance(temperature, numbers.Real) or isinstance(temperature, bool):
        raise TypeError(f"temperature must be a real number, got {type(temperature).__name__}")
    if not np.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be finite and >= 0, got {temperature}")
    if top_k is not None:
        if not isinstance(top_k, numbers.Integral) or isinstance(top_k, bool):
            raise ValueError(f"top_k must be None or an integer >= 1, got {top_k!r}")
        if top_k < 1:
            raise ValueError(f"top_k must be None or an integer >= 1, got {top_k}")
        top_k = int(top_k)
    if top_p is not None:
        if not isinstance(top_p, numbers.Real) or isinstance(top_p, bool):
            raise ValueError(f"top_p must be None or a number in (0, 1], got {top_p!r}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be None or a number in (0, 1], got {top_p}")
        top_p = float(top_p)
    return x, float(temperature), top_k, top_p


def _filtered_probs(x, temperature, top_k, top_p):
    """(B, V) float64 logits -> (B, V) probabilities after all filters."""
    B, V = x.shape
    z = (x - x.max(axis=1, keepdims=True)) / temperature
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    if top_k is None and top_p is None:
        return p
    # One stable descending sort serves both filters: ties keep the lower id.
    order = np.argsort(-p, axis=1, kind="stable")
    ps = np.take_along_axis(p, order, axis=1)
    keep = np.ones((B, V), dtype=bool)  # in sorted position
    if top_k is not None and top_k < V:
        keep[:, top_k:] = False
    if top_p is not None and top_p < 1:
        kept = np.where(keep, ps, 0.0)
        cum = np.cumsum(kept, axis=1) / kept.sum(axis=1, keepdims=True)
        # n = 1 + index of the first prefix total >= top_p
        n = 1 + (cum < top_p - _TOP_P_SLACK).sum(axis=1)
        keep &= np.arange(V)[None, :] < n[:, None]
    keep &= ps > 0
    keep[:, 0] = True  # the most probable id always stays
    mask = np.zeros((B, V), dtype=bool)
    np.put_along_axis(mask, order, keep, axis=1)
    q = np.where(mask, p, 0.0)
    q /= q.sum(axis=1, keepdims=True)
    return q


def sampling_probs(logits, temperature=1.0, top_k=None, top_p=None):
    """The distribution :func:`sample_logits` draws from, float64, shape of ``logits``.

    With ``temperature == 0`` it is one-hot on the argmax.
    """
    x, temperature, top_k, top_p = _check_args(logits, temperature, top_k, top_p)
    x2 = x.reshape(-1, x.shape[-1])
    if temperature == 0:
        q = np.zeros_like(x2)
        q[np.arange(x2.shape[0]), x2.argmax(axis=1)] = 1.0
    else:
        q = _filtered_probs(x2, temperature, top_k, top_p)
    return q.reshape(x.shape)


def sample_logits(logits, temperature=1.0, top_k=None, top_p=None, rng=None):
    """Draw one id per row of ``logits``.

    logits: (V,) -> a Python int; (B, V) -> int64 array (B,).
    temperature: >= 0; 0 is greedy. top_k: int >= 1 or None. top_p: in (0, 1]
    or None. rng: None, an int seed or a ``numpy.random.Generator``; one
    uniform number is drawn per row (none when greedy).
    """
    x, temperature, top_k, top_p = _check_args(logits, temperature, top_k, top_p)
    gen = as_generator(rng)
    x2 = x.reshape(-1, x.shape[-1])
    if temperature == 0:
        ids = x2.argmax(axis=1)
    else:
        q = _filtered_probs(x2, temperature, top_k, top_p)
        cdf = np.cumsum(q, axis=1)
        u = gen.random(x2.shape[0]) * cdf[:, -1]
        # first index whose cdf exceeds u: zero-probability ids are never hit
        ids = (cdf <= u[:, None]).sum(axis=1)
        # u can round up to the total; fall back to the last id that has mass
        last = x2.shape[1] - 1 - np.argmax(q[:, ::-1] > 0, axis=1)
        ids = np.minimum(ids, last)
    ids = ids.astype(np.int64)
    if x.ndim == 1:
        return int(ids[0])
    return ids
