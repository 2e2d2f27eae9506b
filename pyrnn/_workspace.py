"""Reuse of the core's large scratch and cache buffers between calls.

A training step allocates several (T, B, G*H) arrays; freshly allocated, every
page of them faults and is zeroed by the kernel on first touch (measured: a
200x16x64x64 LSTM forward_train spent 8 of its 17 ms there). Buffers that
never leave pyrnn (projections, gate caches, backward temporaries) are taken
from here and given back once the core is done with them; arrays handed to
the user are always fresh.

When the idle buffers would exceed _MAX_BYTES, the least recently returned
ones are dropped first: a process that moves on to new shapes keeps the
buffers of the shapes it is running now (dropping the new ones instead left a
full pool of stale sizes, and every call of the new shape faulted its buffers
in afresh: GRU 50:128:1024:1024 inference on 2 threads, 160-169 against
178-179 GFLOP/s).

Large allocations also all start at the same offset within a 4 KiB page, so
row t of every array one step touches falls into the same L1 sets and they
evict each other; each buffer here starts at its own multiple of 64 bytes.
"""
import math
import threading
from collections import OrderedDict

import numpy as np

_MAX_BYTES = 512 * 2 ** 20       # at most this much is kept idle
_MAX_PER_SIZE = 8
_MIN_BYTES = 256 * 2 ** 10       # smaller arrays come cheaply from malloc
_PAGE = 4096

_lock = threading.Lock()
_free = {}                       # usable bytes -> [root uint8 buffers], newest last
_age = OrderedDict()             # id(root) -> root, least recently returned first
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
            del _age[id(root)]
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
        if n > _MAX_BYTES:
            continue
        with _lock:
            if id(root) in _age:
                continue
            lst = _free.get(n)
            if lst and len(lst) >= _MAX_PER_SIZE:
                _drop(lst[0])
            while _idle[0] + n > _MAX_BYTES:
                _drop(next(iter(_age.values())))
            _free.setdefault(n, []).append(root)
            _age[id(root)] = root
            _idle[0] += n


def _drop(root):
    """Forget an idle buffer (under _lock)."""
    n = root.nbytes - _PAGE
    lst = _free[n]
    for i, r in enumerate(lst):
        if r is root:
            del lst[i]
            break
    if not lst:
        del _free[n]
    del _age[id(root)]
    _idle[0] -= n
