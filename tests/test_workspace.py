"""The pool of scratch buffers (pyrnn._workspace): reuse, and which buffers it
keeps when full."""
import numpy as np
import pytest

from pyrnn import _workspace as W

MB = 2 ** 20


@pytest.fixture
def empty_pool(monkeypatch):
    monkeypatch.setattr(W, "_free", {})
    monkeypatch.setattr(W, "_age", W.OrderedDict())
    monkeypatch.setattr(W, "_idle", [0])
    monkeypatch.setattr(W, "_returned", W.deque())
    monkeypatch.setattr(W, "_lent", set())


def _root(a):
    while a.base is not None:
        a = a.base
    return a


def test_reuse_same_size_and_alignment(empty_pool):
    a = W.take((1000, 300), np.float32)
    assert a.shape == (1000, 300) and a.flags.c_contiguous and a.ctypes.data % 64 == 0
    r = _root(a)
    W.give(a)
    assert W._idle[0] == 1000 * 300 * 4
    b = W.take((300, 1000), np.float32)        # same bytes: the same buffer
    assert _root(b) is r and W._idle[0] == 0
    c = W.take((1000, 301), np.float32)        # other size: a new one
    assert _root(c) is not r
    small = W.take((10,), np.float64)          # below _MIN_BYTES: from malloc, never pooled
    W.give(small, None)
    assert W._idle[0] == 0


def test_small_scratch_starts_on_a_cache_line(empty_pool):
    """Below _MIN_BYTES too (malloc gives 16-byte alignment): the two cores of
    a batch-1 step write the halves of such rows, and must not share a line."""
    for shape, dt in [((2, 1, 128), np.float32), ((3, 7), np.float64), ((1,), np.float32),
                      ((0, 5), np.float32), ((1, 65535), np.float32)]:
        for _ in range(5):
            a = W.take(shape, dt)
            assert a.shape == shape and a.dtype == dt and a.flags.c_contiguous
            assert a.flags.writeable and a.ctypes.data % 64 == 0
            a[...] = 1                               # all of it is writable memory
            assert a.sum() == a.size


def test_full_pool_drops_the_oldest_not_the_newest(empty_pool, monkeypatch):
    """A pool filled by earlier shapes must still keep the buffers of the shape
    running now (before, a full pool refused them, and every call faulted its
    buffers in afresh)."""
    monkeypatch.setattr(W, "_MAX_BYTES", 10 * MB)
    stale = [W.take((19 * MB // 10 + k * 4096,), np.uint8) for k in range(5)]   # 9.5 MB
    W.give(*stale)
    assert W._idle[0] == sum(s.nbytes for s in stale)
    now = W.take((3 * MB,), np.uint8)
    W.give(now)
    assert W._idle[0] <= 10 * MB
    again = W.take((3 * MB,), np.uint8)
    assert _root(again) is _root(now)
    # the two oldest stale buffers made room; the newer ones stay
    kept = [any(r is _root(s) for lst in W._free.values() for r in lst) for s in stale]
    assert kept == [False, False, True, True, True]


def test_per_size_limit_and_oversized(empty_pool, monkeypatch):
    monkeypatch.setattr(W, "_MAX_BYTES", 64 * MB)
    bufs = [W.take((MB,), np.uint8) for _ in range(W._MAX_PER_SIZE + 2)]
    W.give(*bufs)
    lst = W._free[MB]
    assert len(lst) == W._MAX_PER_SIZE and lst[-1] is _root(bufs[-1])   # the newest kept
    assert W._idle[0] == W._MAX_PER_SIZE * MB
    W.give(bufs[-1])                                # given twice: kept once
    assert W._idle[0] == W._MAX_PER_SIZE * MB
    big = W.take((65 * MB,), np.uint8)              # larger than the whole pool
    W.give(big)
    assert W._idle[0] == W._MAX_PER_SIZE * MB and 65 * MB not in W._free


def test_lent_array_comes_back_when_dropped(empty_pool):
    a = W.lend((1000, 300), np.float32)
    assert a.shape == (1000, 300) and a.flags.c_contiguous and a.flags.writeable
    assert a.ctypes.data % 64 == 0 and not a.flags.owndata
    r = a.base.root
    W.give(a)                                  # ignored: it is the caller's
    assert W._idle[0] == 0
    del a
    b = W.take((300, 1000), np.float32)        # back in the pool: taken again
    assert _root(b) is r
    small = W.lend((10,), np.float64)          # below _MIN_BYTES: plain numpy
    assert small.flags.owndata


def test_a_view_keeps_the_lent_buffer(empty_pool):
    a = W.lend((1000, 300), np.float32)
    a[...] = 7.0
    r = a.base.root
    v = a[10:]
    del a
    b = W.take((1000, 300), np.float32)        # the view still holds it: a new one
    assert _root(b) is not r
    b[...] = -1.0
    assert np.all(v == 7.0)
    del v
    c = W.take((1000, 300), np.float32)
    assert _root(c) is r


def test_layer_outputs_reuse_dropped_buffers_and_never_held_ones():
    import pyrnn
    rng = np.random.default_rng(0)
    layer = pyrnn.GRU(128, 256, seed=0)
    x1, x2 = (rng.standard_normal((50, 16, 128)).astype(np.float32) for _ in range(2))
    dy = rng.standard_normal((50, 16, 256)).astype(np.float32)
    y1 = layer(x1)[0]
    assert y1.nbytes >= W._MIN_BYTES and not y1.flags.owndata
    keep, addr = y1.copy(), y1.ctypes.data
    y2 = layer(x2)[0]                          # y1 is held: other memory, y1 intact
    assert y2.ctypes.data != addr and np.array_equal(y1, keep)
    del y1
    y3 = layer(x1)[0]                          # dropped: its buffer serves again
    assert y3.ctypes.data == addr and np.array_equal(y3, keep)
    # training: dx is lent too, and one held across later steps stays intact
    _, _, backward = layer.forward_train(x1)
    dx1 = backward(dy)[0]
    dkeep = dx1.copy()
    for _ in range(2):
        _, _, backward = layer.forward_train(x2)
        backward(dy)
    assert not dx1.flags.owndata and np.array_equal(dx1, dkeep)


def test_gru_backward_keeps_dn_r_in_the_rows_it_has_read(monkeypatch):
    """GRU's backward writes dn*r of step t into X2's row t (W_hn h + b_hn,
    read by that step only) instead of a (T*B, H) buffer of its own; the
    gradients are those of the float64 run."""
    import pyrnn
    from pyrnn import layers as LY
    T, B, I, H = 20, 8, 16, 64
    rng = np.random.default_rng(3)
    x = rng.standard_normal((T, B, I))
    dy = rng.standard_normal((T, B, H))
    asked = []
    real = LY.take
    monkeypatch.setattr(LY, "take", lambda shape, dt: asked.append(tuple(shape)) or real(shape, dt))
    grads = {}
    for dt in (np.float32, np.float64):
        layer = pyrnn.GRU(I, H, dtype=dt, seed=1)
        _, _, backward = layer.forward_train(x.astype(dt))
        asked.clear()
        dx = backward(dy.astype(dt))[0]
        assert (T * B, H) not in asked
        grads[dt] = (dx, {k: g.copy() for k, g in layer.grads.items()})
    dx32, g32 = grads[np.float32]
    dx64, g64 = grads[np.float64]
    assert np.abs(dx32 - dx64).max() <= 1e-5 * np.abs(dx64).max()
    for k in g64:
        assert np.abs(g32[k] - g64[k]).max() <= 1e-5 * np.abs(g64[k]).max(), k
