"""Reuse of the core's large scratch and cache buffers between calls.

A training step allocates several (T, B, G*H) arrays; freshly allocated, every
page of them faults and is zeroed by the kernel on first touch (measured: a
200x16x64x64 LSTM forward_train spent 8 of its 17 ms there). Buffers that
never leave pyrnn (projections, gate caches, backward temporaries) are taken
from here and given back once the core is done with them. Arrays handed to
the caller (outputs, dx) are lent: their buffer comes back to the pool by
itself once the caller has dropped every view of it (lend). Fresh, they
faulted their pages in again: a second training step of RNN
50:128:1024:1024 took 3068 page faults and 29 ms of system time, lent 2048
and 9 ms.

When the idle buffers would exceed _MAX_BYTES, the least recently returned
ones are dropped first: a process that moves on to new shapes keeps the
buffers of the shapes it is running now (dropping the new ones instead left a
full pool of stale sizes, and every call of the new shape faulted its buffers
in afresh: GRU 50:128:1024:1024 inference on 2 threads, 160-169 against
178-179 GFLOP/s).

Large allocations also all start at the same offset within a 4 KiB page, so
row t of every array one step touches falls into the same L1 sets and they
evict each other; each buffer here starts at its own multiple of 64 bytes.
Small scratch arrays come from malloc, but start on a 64-byte line too: at
batch 1 the two cores each write one half of a step's state rows, and where
the halves shared a line, GRU 100:1:128:128's backward on 2 threads took 490
against 395 µs.
"""
import math
import threading
from collections import OrderedDict, deque

import numpy as np

from . import _core

_MAX_BYTES = 512 * 2 ** 20       # at most this much is kept idle
_MAX_PER_SIZE = 8
_MIN_BYTES = 256 * 2 ** 10       # smaller arrays come cheaply from malloc
_PAGE = 4096

_lock = threading.Lock()
_free = {}                       # usable bytes -> [root uint8 buffers], newest last
_age = OrderedDict()             # id(root) -> root, least recently returned first
_idle = [0]
_returned = deque()              # roots of lent arrays whose last view is gone
_lent = set()                    # id(root) of the buffers made by lend


def take(shape, dtype):
    """An uninitialised C-contiguous array, from the pool when one fits."""
    dtype = np.dtype(dtype)
    n = math.prod(shape) * dtype.itemsize     # math.prod: np.prod costs µs per call
    if n < _MIN_BYTES:
        return on_line(shape, dtype)
    root, off = _root(n, False)
    return root[off:off + n].view(dtype).reshape(shape)


def pooled(shape, dtype):
    """take(shape, dtype) when the array is big enough to come from the pool,
    else None (the caller then lets the compiled core allocate it)."""
    dtype = np.dtype(dtype)
    if math.prod(shape) * dtype.itemsize < _MIN_BYTES:
        return None
    return take(shape, dtype)


def on_line(shape, dtype, fill=None):
    """An uninitialised C-contiguous array (filled with `fill` if given) whose
    data starts on a 64-byte line, from malloc; never pooled."""
    dtype = np.dtype(dtype)
    buf = np.empty(math.prod(shape) * dtype.itemsize + 64, np.uint8)
    a = np.ndarray(shape, dtype, buf, _core.line_offset(buf))
    if fill is not None:
        a[...] = fill
    return a


class _Lease:
    """The base of a lent array: holds its pool buffer, and when the last
    view of the array is gone, puts the buffer on _returned. __del__ can run
    anywhere (inside take or give too), so it takes no lock: deque.append is
    atomic, and take drains the deque."""
    __slots__ = ("root", "__array_interface__")

    def __del__(self):
        try:
            _returned.append(self.root)
        except Exception:   # interpreter teardown: the module's globals are gone
            pass


def lend(shape, dtype):
    """An uninitialised C-contiguous array for the caller, from the pool when
    one fits; its buffer goes back to the pool once no view of it is left
    (its base is a _Lease, so it does not own its data)."""
    dtype = np.dtype(dtype)
    n = math.prod(shape) * dtype.itemsize
    if n < _MIN_BYTES:
        return np.empty(shape, dtype)
    root, off = _root(n, True)
    lease = _Lease()
    lease.root = root
    lease.__array_interface__ = {"data": (root.ctypes.data + off, False),
                                 "shape": tuple(shape), "typestr": dtype.str, "version": 3}
    return np.asarray(lease)


def _drain():
    while _returned:
        try:
            root = _returned.popleft()
        except IndexError:      # another thread took the last one
            return
        _give_root(root)


def _root(n, lent):
    """A pool buffer for n bytes and the offset of the array in it. lend()
    reuses only the buffers it made: an idle scratch buffer is resident, and
    taking it for an output moved where a step's fresh pages fault in (the
    first training step's peak grew by the packed W_hh, 4 MiB at RNN
    50:128:1024:1024); take() prefers scratch buffers."""
    _drain()
    root = None
    with _lock:
        lst = _free.get(n)
        if lst:
            for i in range(len(lst) - 1, -1, -1):      # newest of the wanted kind
                if (id(lst[i]) in _lent) == lent:
                    root = lst.pop(i)
                    break
            else:
                if not lent:
                    root = lst.pop()
        if root is not None:
            del _age[id(root)]
            _idle[0] -= n
    if root is None:
        root = np.empty(n + _PAGE, np.uint8)
        if lent:
            _lent.add(id(root))
    addr = root.ctypes.data
    skew = ((addr // _PAGE) * 5 % (_PAGE // 64)) * 64    # spread by page number
    return root, (skew - addr) % _PAGE


def give(*arrays):
    """Return arrays obtained from take(); None entries are ignored (and lent
    arrays: their buffer comes back by itself)."""
    for a in arrays:
        if a is None or a.nbytes < _MIN_BYTES:     # never from the pool
            continue
        root = a
        while isinstance(root, np.ndarray) and root.base is not None:
            root = root.base
        _give_root(root)


def _give_root(root):
    if not (isinstance(root, np.ndarray) and root.dtype == np.uint8 and root.ndim == 1
            and root.nbytes >= _MIN_BYTES + _PAGE):
        return
    n = root.nbytes - _PAGE
    if n > _MAX_BYTES:
        _lent.discard(id(root))
        return
    with _lock:
        if id(root) in _age:
            return
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
    _lent.discard(id(root))
    _idle[0] -= n
