"""pyrnn.stream.Stream: step-by-step outputs and states equal the layer run on the
whole sequence; reset, state round trip, errors; threads (shared layer, weight swaps
under running streams, one stream from two threads)."""
import threading

import numpy as np
import pytest

import pyrnn
from pyrnn.stream import Stream

from conftest import make_layer

# (mode, proj): every kind, GRU both reset variants, LSTM with projection
KINDS = [("RNN_TANH", 0), ("RNN_RELU", 0), ("GRU", 0), ("GRU_RB", 0), ("MGRU", 0),
         ("LSTM", 0), ("LSTM", 3)]
TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-11, atol=1e-12)}


def _ids(p):
    return f"{p[0]}-p{p[1]}" if p[1] else p[0]


def _rand_state(layer, B, rng):
    L, H, P = layer.num_layers, layer.hidden_size, layer.output_size
    h = rng.uniform(-0.5, 0.5, (L, B, P)).astype(layer.dtype)
    if layer.mode == "LSTM":
        return h, rng.uniform(-0.5, 0.5, (L, B, H)).astype(layer.dtype)
    return h


def _assert_state(a, b, tol):
    if isinstance(a, tuple):
        assert len(a) == len(b) == 2
        for u, v in zip(a, b):
            np.testing.assert_allclose(u, v, **tol)
    else:
        np.testing.assert_allclose(a, b, **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B", [1, 4])
@pytest.mark.parametrize("L", [1, 2])
@pytest.mark.parametrize("kind", KINDS, ids=_ids)
def test_stream_equals_whole_sequence(kind, L, B, dtype):
    mode, proj = kind
    I, H, T = 5, 7, 9
    layer = make_layer(mode, I, H, L, proj=proj, dtype=dtype, seed=3)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(T, B, I)).astype(dtype)
    h0 = _rand_state(layer, B, rng)
    y, hn = layer(x, h0)
    s = Stream(layer, batch_size=B)
    s.state = h0
    tol = TOL[dtype]
    # float32 at batch >= 2: both multiply [x_t | h] by the same packed
    # weights and run the same gate kernel, so the bits are the same
    bits = dtype == np.float32 and B > 1 and mode != "GRU_RB" and not proj
    for t in range(T):
        out = s.step(x[t])
        assert out.shape == (B, layer.output_size) and out.dtype == dtype
        np.testing.assert_allclose(out, y[t], **tol)
        if bits:
            np.testing.assert_array_equal(out, y[t])
    _assert_state(s.state, hn, tol)
    # from zeros, and unbatched 1-D steps when B == 1
    y0, hn0 = layer(x)
    s2 = Stream(layer, batch_size=B)
    for t in range(T):
        out = s2.step(x[t, 0] if B == 1 else x[t])
        np.testing.assert_allclose(out, y0[t, 0] if B == 1 else y0[t], **tol)
    _assert_state(s2.state, hn0, tol)


def test_step_returns_own_buffer_and_float_conversion():
    layer = pyrnn.GRU(3, 4, seed=0)
    s = Stream(layer)
    a = s.step(np.ones(3))            # float64 -> float32 converted
    first = a.copy()
    b = s.step(np.ones(3))
    assert np.shares_memory(a, b)     # documented: next step overwrites
    assert not np.array_equal(first, b)
    y, _ = layer(np.ones((2, 3), np.float32))
    np.testing.assert_allclose(first, y[0], rtol=1e-6)
    np.testing.assert_allclose(b, y[1], rtol=1e-6)


def test_noncontiguous_and_readonly_input():
    layer = pyrnn.LSTM(4, 6, num_layers=2, dtype=np.float64, seed=0)
    rng = np.random.default_rng(0)
    big = rng.normal(size=(5, 3, 8))
    x = big[:, ::-1, ::2]                   # (T, 3, 4) negative and step-2 strides
    y, _ = layer(np.ascontiguousarray(x))
    s = Stream(layer, batch_size=3)
    for t in range(5):
        xt = x[t] if t % 2 else np.ascontiguousarray(x[t])
        xt.flags.writeable = False
        np.testing.assert_allclose(s.step(xt), y[t], rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("kind", [("GRU", 0), ("LSTM", 2)], ids=_ids)
def test_reset_all_and_rows(kind):
    mode, proj = kind
    I, H, B = 3, 5, 4
    layer = make_layer(mode, I, H, 2, proj=proj, dtype=np.float64, seed=2)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6, B, I))
    s = Stream(layer, batch_size=B)
    for t in range(3):
        s.step(x[t])
    before = s.state
    s.reset(rows=[1, 3])
    after = s.state
    parts_b = before if isinstance(before, tuple) else (before,)
    parts_a = after if isinstance(after, tuple) else (after,)
    for pb, pa in zip(parts_b, parts_a):
        assert np.all(pa[:, [1, 3]] == 0)
        np.testing.assert_array_equal(pa[:, [0, 2]], pb[:, [0, 2]])
        assert np.any(pb[:, [1, 3]] != 0)
    # continuing equals the layer started from the reset state
    y, hn = layer(x[3:], after)
    for t in range(3):
        np.testing.assert_allclose(s.step(x[3 + t]), y[t], rtol=1e-12, atol=1e-13)
    _assert_state(s.state, hn, TOL[np.float64])
    # bool mask and negative index
    s.reset(rows=np.array([True, False, False, False]))
    s.reset(rows=[-1])
    st = s.state
    for p in (st if isinstance(st, tuple) else (st,)):
        assert np.all(p[:, [0, 3]] == 0) and np.all(np.abs(p[:, 1]) > 0)
    # all rows: equals a fresh stream
    s.reset()
    fresh = Stream(layer, batch_size=B)
    np.testing.assert_array_equal(s.step(x[0]), fresh.step(x[0]))


@pytest.mark.parametrize("kind", [("RNN_TANH", 0), ("LSTM", 0), ("LSTM", 2)], ids=_ids)
def test_state_round_trip(kind):
    mode, proj = kind
    layer = make_layer(mode, 3, 4, 2, proj=proj, dtype=np.float32, seed=1)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 2, 3)).astype(np.float32)
    s = Stream(layer, batch_size=2)
    for t in range(2):
        s.step(x[t])
    saved = s.state
    outs = [s.step(x[t]).copy() for t in (2, 3)]
    # state is a copy: mutating it does not touch the stream
    st = s.state
    for p in (st if isinstance(st, tuple) else (st,)):
        p[...] = 99
    assert np.all(np.abs(s.step(x[0])) < 99)
    s.state = saved
    _assert_state(s.state, saved, dict(rtol=0, atol=0))
    for k, t in enumerate((2, 3)):
        np.testing.assert_array_equal(s.step(x[t]), outs[k])
    # a second stream taking the state continues identically
    s2 = Stream(layer, batch_size=2)
    s2.state = saved
    np.testing.assert_array_equal(s2.step(x[2]), outs[0])


def test_errors():
    with pytest.raises(ValueError, match="bidirectional"):
        Stream(pyrnn.GRU(3, 4, bidirectional=True))
    with pytest.raises(TypeError):
        Stream(pyrnn.GRUCell(3, 4))
    for bad in (0, -1, 1.5):
        with pytest.raises((ValueError, TypeError)):
            Stream(pyrnn.GRU(3, 4), batch_size=bad)
    s = Stream(pyrnn.LSTM(3, 4, num_layers=2), batch_size=2)
    for shape in [(3,), (2, 4), (1, 3), (2, 3, 1), (), (0, 3)]:
        with pytest.raises(ValueError, match="x"):
            s.step(np.zeros(shape, np.float32))
    with pytest.raises(TypeError):
        s.step(np.zeros((2, 3), np.int64))
    with pytest.raises(TypeError):
        s.step(np.zeros((2, 3), bool))
    with pytest.raises(TypeError):
        s.step(np.zeros((2, 3), complex))
    for rows in ([2], [-3], [0, 5]):
        with pytest.raises(ValueError, match="rows"):
            s.reset(rows=rows)
    with pytest.raises(TypeError, match="rows"):
        s.reset(rows=[0.5])
    with pytest.raises(TypeError):
        s.state = np.zeros((2, 2, 4), np.float32)        # LSTM needs (h, c)
    with pytest.raises(ValueError):
        s.state = (np.zeros((2, 2, 4)), np.zeros((2, 3, 4)))
    with pytest.raises(ValueError):
        s.state = (np.zeros((1, 2, 4)), np.zeros((2, 2, 4)))
    g = Stream(pyrnn.GRU(3, 4), batch_size=1)
    with pytest.raises(ValueError, match="state"):
        g.state = np.zeros((1, 2, 4))
    # errors leave the stream usable and unchanged
    z = g.state
    np.testing.assert_array_equal(z, 0)
    assert g.step(np.ones(3)).shape == (4,)


# ---------------------------------------------------------------- threads

def _serial(layer, xs, B):
    outs = []
    for x in xs:
        s = Stream(layer, batch_size=B)
        outs.append(np.stack([s.step(xt).copy() for xt in x]))
    return outs


def _threaded(layer, xs, B, n_threads=4):
    """Step stream i over xs[i] on n_threads Python threads, each interleaving
    its share of the streams; the outputs per stream."""
    n, T = len(xs), len(xs[0])
    got = [None] * n
    errors = []

    def work(ids):
        try:
            streams = {i: Stream(layer, batch_size=B) for i in ids}
            res = {i: [] for i in ids}
            for t in range(T):          # interleave this thread's streams
                for i in ids:
                    res[i].append(streams[i].step(xs[i][t]).copy())
            for i in ids:
                got[i] = np.stack(res[i])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(list(range(k, n, n_threads)),))
               for k in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors, errors
    return got


@pytest.mark.parametrize("release", [False, True])
def test_many_streams_four_threads_equal_serial(release):
    """release: every step releases the GIL and hands it over (handoff.h)
    rather than keeping it, as these short steps would by default."""
    from pyrnn import _core
    layer = pyrnn.LSTM(16, 32, num_layers=2, proj_size=8, seed=0)
    rng = np.random.default_rng(0)
    n, T, B = 12, 40, 2
    xs = [rng.normal(size=(T, B, 16)).astype(np.float32) for _ in range(n)]
    want = _serial(layer, xs, B)
    old = _core._set_stream_nogil_macs(0 if release else 1e18)
    try:
        got = _threaded(layer, xs, B)
    finally:
        _core._set_stream_nogil_macs(old)
    for i in range(n):
        np.testing.assert_array_equal(got[i], want[i])


def test_load_state_dict_while_streaming_never_tears():
    """Weights swap A <-> B while 4 threads step; each step starts from a fixed state,
    so its output must equal the precomputed output under A or under B exactly."""
    I, H, L, T, B = 8, 24, 2, 60, 2
    layer = pyrnn.LSTM(I, H, num_layers=L, dtype=np.float64, seed=1)
    A = layer.state_dict()
    Bw = {k: v * -1.5 + 0.05 for k, v in A.items()}      # far from A everywhere
    rng = np.random.default_rng(3)
    xs = rng.normal(size=(T, B, I))
    states = [_rand_state(layer, B, rng) for _ in range(T)]

    def precompute(weights):
        ref = pyrnn.LSTM(I, H, num_layers=L, dtype=np.float64)
        ref.load_state_dict(weights)
        s = Stream(ref, batch_size=B)
        out = []
        for t in range(T):
            s.state = states[t]
            out.append(s.step(xs[t]).copy())
        return np.stack(out)

    yA, yB = precompute(A), precompute(Bw)
    assert np.min(np.abs(yA - yB).max(axis=(1, 2))) > 1e-3
    stop = threading.Event()
    seen = {"A": 0, "B": 0}
    bad, errors = [], []
    lock = threading.Lock()

    def work():
        try:
            s = Stream(layer, batch_size=B)
            rounds = 0
            while not stop.is_set() or rounds < 2:
                for t in range(T):
                    s.state = states[t]
                    y = s.step(xs[t])
                    ea, eb = np.abs(y - yA[t]).max(), np.abs(y - yB[t]).max()
                    with lock:
                        if ea == 0:
                            seen["A"] += 1
                        elif eb == 0:
                            seen["B"] += 1
                        else:
                            bad.append((t, ea, eb))
                rounds += 1
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for th in threads:
        th.start()
    for k in range(200):
        layer.load_state_dict(Bw if k % 2 == 0 else A)
    stop.set()
    for th in threads:
        th.join(60)
    assert not errors, errors
    assert not bad, bad[:5]
    assert seen["A"] > 0 and seen["B"] + seen["A"] >= 4 * 2 * T
    # after the last swap (A) every stream steps on A
    layer.load_state_dict(Bw)
    s = Stream(layer, batch_size=B)
    s.state = states[0]
    np.testing.assert_array_equal(s.step(xs[0]), yB[0])


def test_params_updated_refreshes_stream():
    layer = pyrnn.GRU(3, 4, dtype=np.float64, seed=0)
    s = Stream(layer)
    x = np.ones(3)
    a = s.step(x).copy()
    s.reset()
    layer.params["weight_ih_l0"][...] *= 2       # in place, then announce
    layer.params_updated()
    b = s.step(x).copy()
    y, _ = layer(x[None])
    np.testing.assert_allclose(b, y[0], rtol=1e-12)
    assert not np.allclose(a, b)


def test_same_stream_two_threads_raises_or_serialises():
    """Two threads step ONE stream with a constant input: each step either raises
    RuntimeError (refused, state untouched) or runs; the final state must equal a serial
    run of exactly the number of steps that ran."""
    layer = pyrnn.GRU(64, 256, num_layers=2, dtype=np.float64, seed=0)
    x = np.full((1, 64), 0.1)
    s = Stream(layer, batch_size=1)
    counts = {"ok": 0, "refused": 0}
    lock = threading.Lock()
    other = []
    barrier = threading.Barrier(2)

    def work():
        barrier.wait()
        for _ in range(300):
            try:
                s.step(x)
                with lock:
                    counts["ok"] += 1
            except RuntimeError as e:
                assert "thread" in str(e)
                with lock:
                    counts["refused"] += 1
            except Exception as e:  # pragma: no cover
                other.append(e)

    ths = [threading.Thread(target=work) for _ in range(2)]
    for th in ths:
        th.start()
    for th in ths:
        th.join(60)
    assert not other, other
    assert counts["ok"] + counts["refused"] == 600
    ref = Stream(layer, batch_size=1)
    for _ in range(counts["ok"]):
        ref.step(x)
    np.testing.assert_allclose(s.state, ref.state, rtol=1e-12, atol=1e-13)


# -- batch 1 on two cores (src/_core/pair.h) ---------------------------------

PAIR_KINDS = [("RNN_TANH", 0), ("GRU", 0), ("MGRU", 0), ("LSTM", 0)]


@pytest.fixture
def pair_everywhere(monkeypatch):
    """Split every eligible layer, however small, and restore the thread count."""
    import pyrnn.stream as st
    monkeypatch.setattr(st, "PAIR_MIN_BYTES", 0)
    n = pyrnn.get_num_threads()
    yield
    pyrnn.set_num_threads(n)


@pytest.mark.parametrize("kind", PAIR_KINDS, ids=_ids)
def test_two_core_step_same_bits_as_one_core(kind, pair_everywhere):
    """The unit split reads each weight panel in the same order as one core and
    runs the gate kernel on whole 16-unit runs, so the bits are the same; and
    both equal the layer on the whole sequence."""
    mode, proj = kind
    I, H, L, T = 24, 48, 2, 30
    layer = make_layer(mode, I, H, L, proj=proj, dtype=np.float32, seed=5)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(T, 1, I)).astype(np.float32)
    h0 = _rand_state(layer, 1, rng)
    y, hn = layer(x, h0)
    runs = {}
    for nt in (1, 2):
        pyrnn.set_num_threads(nt)
        s = Stream(layer, batch_size=1)
        assert s._paired == [True, True]
        s.state = h0
        runs[nt] = (np.stack([s.step(x[t]).copy() for t in range(T)]), s.state)
    np.testing.assert_array_equal(runs[1][0], runs[2][0])
    _assert_state(runs[1][1], runs[2][1], dict(rtol=0, atol=0))
    np.testing.assert_allclose(runs[2][0], y, **TOL[np.float32])
    _assert_state(runs[2][1], hn, TOL[np.float32])


def test_unit_split_only_where_it_applies(pair_everywhere):
    rng_layer = make_layer("LSTM", 8, 40, 1, proj=0, dtype=np.float32, seed=0)
    assert not Stream(rng_layer, 1)._paired[0]      # H % 16 != 0
    lstm = make_layer("LSTM", 8, 64, 1, proj=0, dtype=np.float32, seed=0)
    assert Stream(lstm, 1)._paired[0]
    assert not Stream(lstm, 2)._paired[0]           # batch > 1
    proj = make_layer("LSTM", 8, 64, 1, proj=16, dtype=np.float32, seed=0)
    assert not Stream(proj, 1)._paired[0]
    dbl = make_layer("LSTM", 8, 64, 1, proj=0, dtype=np.float64, seed=0)
    assert not Stream(dbl, 1)._paired[0]
    rb = make_layer("GRU_RB", 8, 64, 1, proj=0, dtype=np.float32, seed=0)
    assert not Stream(rb, 1)._paired[0]


def test_two_core_streams_from_many_threads_equal_serial(pair_everywhere):
    """Four Python threads, each stepping its streams with 2 pyrnn threads: one
    owns the helper at a time, the others run alone; all equal a serial run."""
    layer = pyrnn.GRU(16, 64, num_layers=2, seed=0)
    rng = np.random.default_rng(0)
    n, T = 8, 50
    xs = [rng.normal(size=(T, 1, 16)).astype(np.float32) for _ in range(n)]
    pyrnn.set_num_threads(1)
    want = _serial(layer, xs, 1)
    pyrnn.set_num_threads(2)
    got = _threaded(layer, xs, 1)
    for i in range(n):
        np.testing.assert_array_equal(got[i], want[i])


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH"])
def test_packed_stream_weights_on_a_cache_line(mode):
    """The packed [W_ih | W_hh] a float32 stream steps over starts on a 64-byte
    line (its 64-byte panel loads would each touch two lines otherwise), and
    holds the panels of the weights unchanged."""
    from pyrnn.layers import _panels
    layer = make_layer(mode, 24, 40, dtype=np.float32, seed=3)
    spec = layer.stream_snapshot()[1][0]
    Wih, Whh, H = spec["Wih"], spec["Whh"], 40
    if mode == "GRU":
        parts = [np.concatenate([Wih[:2 * H], Whh[:2 * H]], axis=1), Wih[2 * H:], Whh[2 * H:]]
    else:
        parts = [np.concatenate([Wih, Whh], axis=1)]
    assert spec["Wcat"].ctypes.data % 64 == 0
    np.testing.assert_array_equal(spec["Wcat"], np.concatenate([_panels(w) for w in parts]))


def _other_thread_ran_during_step(stream, x, switch, tries=5, until_seen=False):
    """How far a waiting Python thread counted while each stream.step(x) ran.
    The thread asks for the GIL as the steps begin; with a switch interval well
    above a step's time it can only run inside a step that releases the GIL, so
    the answer does not depend on how loaded the machine is."""
    import sys
    count, go, stop = [0], threading.Event(), threading.Event()

    def spin():
        go.wait()
        while not stop.is_set():
            count[0] += 1

    old = sys.getswitchinterval()
    sys.setswitchinterval(switch)
    th = threading.Thread(target=spin)
    th.start()
    try:
        seen = []
        go.set()
        for _ in range(tries):
            before = count[0]
            stream.step(x)
            seen.append(count[0] - before)
            if until_seen and seen[-1]:
                break
        return seen
    finally:
        stop.set()
        th.join()
        sys.setswitchinterval(old)


def test_gil_released_only_for_steps_worth_it():
    """A step of at least _core's STREAM_NOGIL_MACS multiply-adds releases the
    GIL (another Python thread runs meanwhile); a shorter one keeps it, as
    NumPy does for small arrays, since the hand-off costs more than the step."""
    from pyrnn import _core
    small = Stream(pyrnn.RNN(16, 16, seed=0), batch_size=1)          # 512 multiply-adds
    big = Stream(pyrnn.LSTM(512, 512, seed=0), batch_size=256)        # 0.54 G
    xs = np.zeros((1, 16), np.float32)
    xb = np.ones((256, 512), np.float32)
    # Released: the waiting thread runs in some step (up to 40, for a loaded machine).
    assert max(_other_thread_ran_during_step(big, xb, 0.005, 40, until_seen=True)) > 0
    # Kept: a 10 s switch interval, so only a release lets the other thread in.
    assert max(_other_thread_ran_during_step(small, xs, 10.0)) == 0
    # Which steps release it: from 24,576 multiply-adds over all layers and rows
    want = {(pyrnn.RNN, 64, 1, 1): False,       # 8,192
            (pyrnn.RNN, 64, 1, 2): False,       # 16,384
            (pyrnn.RNN, 64, 4, 1): True,        # 32,768
            (pyrnn.GRU, 64, 1, 1): True,        # 24,576
            (pyrnn.RNN, 128, 1, 1): True,       # 32,768
            (pyrnn.MinimalGRU, 32, 2, 2): False}  # 16,384
    for (cls, H, B, L), releases in want.items():
        st = Stream(cls(H, H, num_layers=L, seed=0), batch_size=B)
        assert st._core.releases_gil is releases, (cls.__name__, H, B, L)
    old = _core._set_stream_nogil_macs(1e18)
    try:
        assert max(_other_thread_ran_during_step(big, xb, 10.0)) == 0
    finally:
        _core._set_stream_nogil_macs(old)
