"""Reuse of the core's large scratch and cache buffers between calls.

A training step allocates several (T, B, G*H) arrays; freshly allocated, every
page of them faults and is zeroed by the kernel on first touch (measured: a
200x16x64x64 LSTM forward_train spent 8 of its 17 ms there). Buffers that
never leave pyrnn (projections, gate caches, backward temporaries) are taken
from here and given back once the core is done with them; arrays handed to
the user are always fresh.
"""
import threading

import numpy as np

_MAX_BYTES = 512 * 2 ** 20       # at most this much is kept idle
_MAX_PER_SIZE = 8
_MIN_BYTES = 256 * 2 ** 10       # smaller arrays come cheaply from malloc

_lock = threading.Lock()
_free = {}                       # nbytes -> [uint8 buffers]
_idle = [0]


def take(shape, dtype):
    """An uninitialised C-contiguous array, from the pool when one fits."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if n < _MIN_BYTES:
        return np.empty(shape, dtype)
    buf = None
    with _lock:
        lst = _free.get(n)
        if lst:
            buf = lst.pop()
            _idle[0] -= n
    if buf is None:
        buf = np.empty(n, np.uint8)
    return buf.view(dtype).reshape(shape)


def give(*arrays):
    """Return arrays obtained from take(); None entries are ignored."""
    for a in arrays:
        if a is None:
            continue
        base = a
        while base.base is not None:
            base = base.base
        if not (isinstance(base, np.ndarray) and base.dtype == np.uint8 and base.ndim == 1
                and base.nbytes >= _MIN_BYTES):
            continue
        n = base.nbytes
        with _lock:
            lst = _free.setdefault(n, [])
            if len(lst) < _MAX_PER_SIZE and _idle[0] + n <= _MAX_BYTES:
                lst.append(base)
                _idle[0] += n
