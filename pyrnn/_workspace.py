"""Reuse of the core's large scratch and cache buffers between calls.

A training step allocates several (T, B, G*H) arrays; freshly allocated, every
page of them faults and is zeroed by the kernel on first touch (measured: a
200x16x64x64 LSTM forward_train spent 8 of its 17 ms there). Buffers that
never leave pyrnn (projections, gate caches, backward temporaries) are taken
from here and given back once the core is done with them; arrays handed to
the user are always fresh.

Large allocations also all start at the same offset within a 4 KiB page, so
row t of every array one step touches falls into the same L1 sets and they
evict each other; each buffer here starts at its own multiple of 64 bytes.
"""
import math
import threading

import numpy as np

_MAX_BYTES = 512 * 2 ** 20       # at most this much is kept idle
_MAX_PER_SIZE = 8
_MIN_BYTES = 256 * 2 ** 10       # smaller arrays come cheaply from malloc
_PAGE = 4096

_lock = threading.Lock()
_free = {}                       # usable bytes -> [root uint8 buffers]
_idle = [0]


def take(shape, dtype):
    """An uninitialised C-contiguous array, from the pool when one fits."""
    dtype = np.dtype(dtype)
    n = math.prod(shape) * dtype.itemsize     # math.prod: np.prod costs µs per call
    if n < _MIN_BYTES:
        return np.empty(shape, dtype)
    root = None
    with _lock:
        lst = _free.get(n)
        if lst:
            root = lst.pop()
            _idle[0] -= n
    if root is None:
        root = np.empty(n + _PAGE, np.uint8)
    addr = root.ctypes.data
    skew = ((addr // _PAGE) * 5 % (_PAGE // 64)) * 64    # spread by page number
    off = (skew - addr) % _PAGE
    return root[off:off + n].view(dtype).reshape(shape)


def give(*arrays):
    """Return arrays obtained from take(); None entries are ignored."""
    for a in arrays:
        if a is None:
            continue
        root = a
        while root.base is not None:
            root = root.base
        if not (isinstance(root, np.ndarray) and root.dtype == np.uint8 and root.ndim == 1
                and root.nbytes >= _MIN_BYTES + _PAGE):
            continue
        n = root.nbytes - _PAGE
        with _lock:
            lst = _free.setdefault(n, [])
            if len(lst) < _MAX_PER_SIZE and _idle[0] + n <= _MAX_BYTES:
                lst.append(root)
                _idle[0] += n
