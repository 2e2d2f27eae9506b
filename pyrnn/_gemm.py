"""Matrix products on pyrnn's own threads (see pyrnn._threads): rows of the
result are split across OpenMP threads, each calling single-threaded BLAS, so
the training loop never alternates numpy's BLAS threads with ours."""
import numpy as np

from . import _core
from ._threads import get_num_threads, limit_blas_threads


def matmul(a, b, out=None, trans_a=False, trans_b=False, beta=0.0):
    """op(a) @ op(b) (+ beta * out), a and b 2-D arrays of one float dtype.
    With ``out`` given (C-contiguous, right shape and dtype) the result is
    written, or added with beta=1, in place."""
    limit_blas_threads()
    a = np.ascontiguousarray(a)
    b = np.ascontiguousarray(b, dtype=a.dtype)
    m = a.shape[1] if trans_a else a.shape[0]
    k = a.shape[0] if trans_a else a.shape[1]
    kb, n = (b.shape[1], b.shape[0]) if trans_b else (b.shape[0], b.shape[1])
    if k != kb:
        raise ValueError(f"matmul: inner sizes differ ({k} and {kb})")
    if out is None:
        out = np.empty((m, n), a.dtype)
        beta = 0.0
    elif out.shape != (m, n) or out.dtype != a.dtype or not out.flags.c_contiguous:
        raise ValueError(f"matmul: out must be C-contiguous {a.dtype} of shape {(m, n)}")
    if k == 0:
        if beta == 0.0:
            out[...] = 0
        else:
            out *= beta
        return out
    _core.matmul(a, b, out, trans_a, trans_b, 1.0, beta, get_num_threads())
    return out
