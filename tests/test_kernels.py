"""Kernel-level controls: SIMD approximations, scalar vs SIMD, threads, OpenMP, the GIL."""
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import pyrnn
from pyrnn import _core, reference
from _oracle import random_params
from conftest import make_layer

MODES = [("RNN_TANH", 0), ("RNN_RELU", 0), ("GRU", 0), ("GRU_RB", 0), ("MGRU", 0), ("LSTM", 0),
         ("LSTM", 3)]
IDS = [m + ("+proj" if p else "") for m, p in MODES]
LENGTHS = [7, 0, 3, 9, 1, 9, 5, 2, 8, 4]


def run(mode, proj, dtype, B=10, T=9, I=6, H=8, L=2, bi=True, seed=0):
    """Forward + backward with lengths; returns every output as a flat list of arrays."""
    layer = make_layer(mode, I, H, L, bi, proj, dtype=dtype)
    layer.load_state_dict(random_params(mode, I, H, L, bi, proj_size=proj, dtype=dtype,
                                        seed=seed))
    rng = np.random.default_rng(seed)
    D, Hout = (2 if bi else 1), proj or H
    x = rng.standard_normal((T, B, I)).astype(dtype)
    dy = rng.standard_normal((T, B, D * Hout)).astype(dtype)
    lengths = np.minimum((LENGTHS * 3)[:B], T)      # every length in [0, T]
    y, hn, bw = layer.forward_train(x, None, lengths)
    dx, dhx = bw(dy)
    y_inf, hn_inf = layer(x, None, lengths)
    states = list(hn) if mode == "LSTM" else [hn]
    dstates = list(dhx) if mode == "LSTM" else [dhx]
    return [y, y_inf, dx] + states + dstates + [layer.grads[k] for k in sorted(layer.grads)]


# ---------------------------------------------------------------- SIMD

@pytest.mark.parametrize("level", [lv for lv in _core.simd_levels() if lv != "scalar"])
def test_simd_approximation_error(level):
    for which, name in ((0, "sigmoid"), (1, "tanh")):
        err = _core.simd_max_error(which, 97, level)
        assert np.isfinite(err) and 0 <= err < 1e-6, f"{level} {name} error {err:.3e}"


@pytest.mark.parametrize("level", _core.simd_levels())
def test_activation_bits_do_not_depend_on_position(level, restore_core):
    """The SIMD cell bodies run blocks of several vectors and a masked last
    block: a value's sigmoid and tanh must have the same bits wherever it
    sits, so that units split among threads (or a stream's rows) agree. Also
    checks the special values against libm."""
    _core.set_simd_level(level)
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(77) * 6).astype(np.float32)
    x[:12] = [0.0, -0.0, np.nan, np.inf, -np.inf, 1e30, -1e30, 88.5, -87.5, 1e-40, 20, -20]
    for which, ref in ((0, lambda v: 1 / (1 + np.exp(-v))), (1, np.tanh)):
        whole = _core._activation(which, x)
        for k in range(0, 40):
            for n in (1, 7, 8, 9, 15, 16, 17, 33):
                part = _core._activation(which, np.ascontiguousarray(x[k:k + n]))
                np.testing.assert_array_equal(part.view(np.uint32),
                                              whole[k:k + n].view(np.uint32))
        with np.errstate(over="ignore"):
            want = ref(x.astype(np.float64))
        assert np.isnan(whole[2]) and not np.isnan(np.delete(whole, 2)).any()
        ok = ~np.isnan(want)
        assert np.max(np.abs(whole[ok] - want[ok])) < 1e-6
        if which == 1:      # tanh keeps the sign of zero and saturates at +-1
            assert np.signbit(whole[1]) and not np.signbit(whole[0])
            assert whole[3] == 1 and whole[4] == -1
    assert _core._activation(1, x.astype(np.float64)).dtype == np.float64
    with pytest.raises(ValueError, match="which"):
        _core._activation(2, x)
    with pytest.raises(TypeError, match="float32"):
        _core._activation(0, np.arange(8, dtype=np.int32))


def test_gate_kernel_hook_checks_its_arguments():
    # bench/test_bench_kernels.py times this; every cell runs, bad arguments raise
    for cell in ("lstm", "gru", "rnn", "mgru"):
        for keep in (False, True):
            assert _core._gate_kernel(cell, 3, 37, 2, keep) is None
    with pytest.raises(ValueError, match="cell must be one of"):
        _core._gate_kernel("gru_rb", 1, 8, 1)
    with pytest.raises(ValueError, match="positive"):
        _core._gate_kernel("lstm", 0, 8, 1)


def test_simd_levels_of_this_cpu():
    levels = _core.simd_levels()
    assert levels[0] == "scalar" and list(levels) == ["scalar", "avx2", "avx512"][:len(levels)]
    assert _core.simd_available() == (len(levels) > 1)
    with pytest.raises(ValueError, match="name must be one of"):
        _core.set_simd_level("sse9")
    if "avx512" not in levels:
        assert _core.simd_max_error(0, 97, "avx512") == -1.0
        before = _core.simd_level()
        with pytest.raises(ValueError, match="name must be one of"):
            _core.set_simd_level("avx512")
        assert _core.simd_level() == before


def test_simd_activations_saturate_without_nan(simd_level):
    # large |x| through a whole layer: outputs stay finite and in range at every level
    layer = pyrnn.LSTM(4, 8, seed=0)
    x = np.full((3, 9, 4), 1e30, np.float32)
    x[:, 1::2] *= -1
    y, (h, c) = layer(x)
    assert np.all(np.isfinite(y)) and np.all(np.abs(y) <= 1)


@pytest.mark.parametrize("mode,proj", MODES, ids=IDS)
def test_scalar_vs_simd(mode, proj, restore_core):
    """Every SIMD level against the scalar (libm) kernels, at H = 8 and at
    H = 37 (vector remainders), forward and every gradient; float64 must not
    depend on the level at all."""
    for H in (8, 37):
        for dtype, tol in ((np.float32, 1e-5), (np.float64, 0.0)):
            _core.set_simd_level("scalar")
            assert not _core.simd_active()
            scalar = run(mode, proj, dtype, H=H)
            for level in _core.simd_levels()[1:]:
                assert _core.set_simd_level(level) == level and _core.simd_active()
                vec = run(mode, proj, dtype, H=H)
                for a, b in zip(scalar, vec):
                    if tol == 0.0:    # double kernels must not depend on the switch
                        np.testing.assert_array_equal(a, b)
                    else:
                        err = np.max(np.abs(a - b) / np.maximum(1, np.abs(a)))
                        assert err <= tol, f"scalar vs {level} {dtype.__name__}: {err:.3e}"


@pytest.mark.parametrize("value, want", [("scalar", "scalar"), ("off", "scalar"),
                                         ("avx2", "avx2"), ("", "best")])
def test_env_sets_simd_level(value, want):
    code = "from pyrnn import _core; print(_core.simd_level(), _core.simd_active())"
    env = dict(os.environ, PYRNN_SIMD=value)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    levels = _core.simd_levels()
    want = levels[-1] if want == "best" else want if want in levels else levels[-1]
    assert out.stdout.split() == [want, str(want != "scalar")]


# ---------------------------------------------------------------- threads

@pytest.mark.parametrize("mode,proj", MODES, ids=IDS)
def test_thread_counts(mode, proj, restore_core):
    res = {}
    for n in (1, 2):
        pyrnn.set_num_threads(n)
        assert pyrnn.get_num_threads() == n
        first = run(mode, proj, np.float32, B=12)
        again = run(mode, proj, np.float32, B=12)
        for a, b in zip(first, again):
            np.testing.assert_array_equal(a, b)   # same count: same bits
        res[n] = first
    for a, b in zip(res[1], res[2]):
        err = np.max(np.abs(a - b) / np.maximum(1, np.abs(a)))
        assert err <= 1e-5, f"1 vs 2 threads: {err:.3e}"


def test_openmp_enabled():
    # The build only drops OpenMP when the compiler lacks it (with a warning) or
    # when PYRNN_NO_OPENMP=1 asked for that; anywhere else, and always in CI,
    # a single-threaded build is a failure.
    if os.environ.get("PYRNN_NO_OPENMP") == "1" and os.environ.get("PYRNN_REQUIRE_OPENMP") != "1":
        assert _core.openmp_enabled() is False
        return
    assert _core.openmp_enabled() is True, "the extension was built without OpenMP"


def test_num_threads_env():
    code = "import pyrnn; print(pyrnn.get_num_threads())"
    env = dict(os.environ, PYRNN_NUM_THREADS="3")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "3"


def test_set_num_threads_rejects_bad_values(restore_core):
    with pytest.raises(ValueError, match="n must be >= 1"):
        pyrnn.set_num_threads(0)
    with pytest.raises(TypeError, match="integer"):
        pyrnn.set_num_threads(1.5)


def _in_threads(work, args):
    """work(a) for every a, each in a thread of its own, all at once; fails
    with the errors any of them raised."""
    errors = []

    def guarded(a):
        try:
            work(a)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(a,)) for a in args]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_python_threads_at_once(restore_core):
    # several Python threads in forward_train/backward concurrently = serial results
    pyrnn.set_num_threads(1)
    jobs = [(m, p, dt) for m, p in MODES for dt in (np.float32, np.float64)]
    serial = [run(m, p, dt, seed=i) for i, (m, p, dt) in enumerate(jobs)]
    out = [None] * len(jobs)
    barrier = threading.Barrier(4)

    def work(k):
        barrier.wait()
        for i in range(k, len(jobs), 4):
            for _ in range(3):
                out[i] = run(*jobs[i], seed=i)

    _in_threads(work, range(4))
    for i in range(len(jobs)):
        for a, b in zip(serial[i], out[i]):
            np.testing.assert_array_equal(a, b)


def _flat(a):
    return list(a) if isinstance(a, tuple) else [a]


def _until_helped(call, tries=50):
    """call()'s results until the helper core has taken part in one (it may
    still be starting, or busy, on the first): each result is to be checked;
    fails if it never takes a chunk."""
    before = _core.pair_helped()
    for _ in range(tries):
        yield call()
        if _core.pair_helped() > before:
            return
    raise AssertionError("the helper core took no chunk of these calls")


@pytest.mark.parametrize("cls, H, kw", [(pyrnn.LSTM, 96, {}), (pyrnn.GRU, 112, {}),
                                        (pyrnn.GRU, 160, {"reset_after": False}),
                                        (pyrnn.RNN, 192, {"nonlinearity": "relu"}),
                                        (pyrnn.MinimalGRU, 128, {})])
def test_batch1_on_two_cores_same_bits_as_one(cls, H, kw):
    """Batch-1 float32 forward (inference and training) shares each step's
    16-unit chunks with the helper core (src/_core/pair.h): the same sums in
    the same order, so the bits equal the one-core run's, gradients included;
    lengths, reverse direction and 2 layers. GRU reset_after=False splits
    each step in two (r*h of every unit before W_hn (r*h))."""
    rng = np.random.default_rng(0)
    layer = cls(24, H, num_layers=2, bidirectional=True, seed=1, **kw)
    x = rng.standard_normal((30, 1, 24)).astype(np.float32)
    n = pyrnn.get_num_threads()
    try:
        pyrnn.set_num_threads(2)
        for lengths in (None, np.array([17])):
            _core.set_pair(False)
            want = layer(x, lengths=lengths)
            _core.set_pair(True)
            for got in _until_helped(lambda: layer(x, lengths=lengths)):
                for a, b in zip(want, got):
                    for u, v in zip(a if isinstance(a, tuple) else (a,),
                                    b if isinstance(b, tuple) else (b,)):
                        np.testing.assert_array_equal(u, v)
            ref = reference.layer_forward(layer.mode, layer.state_dict(), x.astype(np.float64),
                                          lengths=lengths, num_layers=2, bidirectional=True)
            np.testing.assert_allclose(got[0], ref[0], rtol=1e-4, atol=2e-5)
            # training: forward cache and every gradient
            dy = rng.standard_normal(got[0].shape).astype(np.float32)
            def train_step():
                layer.zero_grad()
                y, hn, backward = layer.forward_train(x, lengths=lengths)
                dx, dhx = backward(dy)
                return ([y, dx] + _flat(hn) + _flat(dhx)
                        + [layer.grads[k].copy() for k in sorted(layer.grads)])

            _core.set_pair(False)
            alone = train_step()
            _core.set_pair(True)
            for shared in _until_helped(train_step):
                for u, v in zip(alone, shared):
                    np.testing.assert_array_equal(u, v)
    finally:
        _core.set_pair(True)
        pyrnn.set_num_threads(n)


def test_batch1_helper_shared_by_python_threads_same_bits():
    """Three Python threads run batch-1 layers on 2 pyrnn threads at once: one
    at a time owns the helper core, the others run alone; with pauses longer
    than the helper's 200 µs spin it goes to sleep and is woken by the next job
    (a wake-up that races the post leaves the job to its owner). Every result
    equals the one-core run, bit for bit."""
    rng = np.random.default_rng(5)
    layers = [pyrnn.LSTM(24, 96, seed=1), pyrnn.GRU(24, 112, seed=2),
              pyrnn.GRU(24, 160, seed=3, reset_after=False)]
    xs = [rng.standard_normal((int(rng.integers(2, 40)), 1, 24)).astype(np.float32)
          for _ in range(4)]
    n = pyrnn.get_num_threads()
    try:
        pyrnn.set_num_threads(2)
        _core.set_pair(False)
        want = {(i, j): layer(x)[0] for i, layer in enumerate(layers) for j, x in enumerate(xs)}
        _core.set_pair(True)
        helped = _core.pair_helped()
        bad = []

        def work(seed):
            r = np.random.default_rng(seed)
            for _ in range(150):
                i, j = int(r.integers(len(layers))), int(r.integers(len(xs)))
                if r.random() < 0.2:
                    time.sleep(r.random() * 0.001)
                if not np.array_equal(layers[i](xs[j])[0], want[i, j]):
                    bad.append((i, j))

        _in_threads(work, range(3))
        assert bad == []
        assert _core.pair_helped() > helped
    finally:
        _core.set_pair(True)
        pyrnn.set_num_threads(n)


@pytest.mark.parametrize("cls", [pyrnn.LSTM, pyrnn.GRU])
def test_packed_kernel_at_large_batch(cls):
    """B * H past the old 64 Ki-float limit (B = 136, H = 512): the per-step
    products go through the packed kernel with its 6-row and 4-row tiles and
    a partial tile; forward and every gradient match the float64 layer.
    Outputs and states element by element; the weight and bias gradients,
    float32 sums over T * B = 1224 rows whose partial sums reach 70, against
    their largest entry (entries near 0 by cancellation carry the sums'
    absolute rounding error, about 2e-5 here)."""
    rng = np.random.default_rng(3)
    T, B, I, H = 9, 136, 40, 512
    f32 = cls(I, H, bidirectional=True, seed=2)
    f64 = cls(I, H, bidirectional=True, seed=2, dtype=np.float64)
    f64.load_state_dict(f32.state_dict())
    x = rng.standard_normal((T, B, I))
    dy = rng.standard_normal((T, B, 2 * H))
    lengths = rng.integers(0, T + 1, B)
    outs = []
    for layer in (f32, f64):
        y, hn, backward = layer.forward_train(x, lengths=lengths)
        dx, dhx = backward(dy)
        outs.append([y, dx] + _flat(hn) + _flat(dhx)
                    + [layer.grads[k] for k in sorted(layer.grads)])
    n_out = 2 + len(_flat(hn)) + len(_flat(dhx))
    for i, (a, b) in enumerate(zip(*outs)):
        scale = np.maximum(1, np.abs(b)) if i < n_out else max(1.0, np.max(np.abs(b)))
        err = np.max(np.abs(a - b) / scale)
        assert err <= 2e-5, f"float32 vs float64 ({i}): {err:.3e}"


@pytest.mark.parametrize("mode,proj", MODES, ids=IDS)
def test_float64_on_two_threads_large_enough_to_split(mode, proj, restore_core):
    """Regression: float64 calls big enough for the threaded input projection
    and weight gradients (8 x 9 rows, H = 128) read a stale helper flag and
    returned NaN. Checked against the NumPy reference, gradients included."""
    pyrnn.set_num_threads(2)
    T, B, I, H = 9, 8, 40, 128
    layer = make_layer(mode, I, H, 2, True, proj, dtype=np.float64)
    params = random_params(mode, I, H, 2, True, proj_size=proj, dtype=np.float64, seed=4)
    layer.load_state_dict(params)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((T, B, I))
    lengths = np.array([9, 0, 3, 9, 1, 7, 5, 2])
    y, hn, backward = layer.forward_train(x, lengths=lengths)
    dy = rng.standard_normal(y.shape)
    dx, dhx = backward(dy)
    ry, rhn, cache = reference.layer_forward(mode, params, x, lengths=lengths, num_layers=2,
                                             bidirectional=True)
    rdx, rdhx, rgrads = reference.layer_backward(cache, dy)
    np.testing.assert_allclose(y, ry, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, rdx, rtol=1e-9, atol=1e-11)
    for a, b in zip(_flat(hn) + _flat(dhx), _flat(rhn) + _flat(rdhx)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)
    for k in sorted(rgrads):
        np.testing.assert_allclose(layer.grads[k], rgrads[k], rtol=1e-9, atol=1e-10, err_msg=k)


@pytest.mark.parametrize("mode,proj", MODES, ids=IDS)
@pytest.mark.parametrize("I, H, T, B", [(16, 23, 13, 7), (37, 16, 70, 1), (5, 64, 9, 16),
                                        (70, 100, 23, 13)])
def test_weight_gradient_kernel_shapes(mode, proj, I, H, T, B, restore_core):
    """The weight gradients' kernel (gemm_tn.h) over full and masked 16- and
    32-column tiles, 8-row, 6-row and remainder tiles, and T*B rows that are
    not a multiple of its 256-row copies (nor 64-row chunks); gate rows past
    one 128-row block of A's copy; 1 and 2 threads; float32 against float64."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((T, B, I))
    lengths = rng.integers(0, T + 1, B)
    params = random_params(mode, I, H, 1, True, proj_size=proj, dtype=np.float64, seed=5)
    grads = {}
    for dtype in (np.float64, np.float32):
        for n in (1, 2):
            pyrnn.set_num_threads(n)
            layer = make_layer(mode, I, H, 1, True, proj, dtype=dtype)
            layer.load_state_dict(params)
            y, hn, backward = layer.forward_train(x, lengths=lengths)
            backward(np.cos(np.arange(y.size)).reshape(y.shape))
            grads[dtype, n] = {k: v.astype(np.float64) for k, v in layer.grads.items()}
    want = grads[np.float64, 1]
    for key, got in grads.items():
        for k in want:
            err = np.max(np.abs(got[k] - want[k])) / max(1.0, np.max(np.abs(want[k])))
            assert err <= (1e-12 if key[0] == np.float64 else 2e-5), (key, k, err)


def _two_layer_bi(mode, proj, I, H, params, x, lengths, dtype):
    """A 2-layer bidirectional layer of `params`: training forward, backward
    and inference over x; every output and gradient as float64."""
    layer = make_layer(mode, I, H, 2, True, proj, dtype=dtype)
    layer.load_state_dict(params)
    y, hn, backward = layer.forward_train(x, lengths=lengths)
    dx, _ = backward(np.cos(np.arange(y.size)).reshape(y.shape))
    y_inf, _ = layer(x, lengths=lengths)
    out = {"y": y, "dx": dx, "y_inf": y_inf, **layer.grads}
    return {k: np.asarray(v, np.float64) for k, v in out.items()}


@pytest.mark.parametrize("mode,proj", MODES, ids=IDS)
@pytest.mark.parametrize("I, H, T, B", [(37, 23, 13, 7), (5, 16, 70, 1), (600, 48, 4, 2),
                                        (19, 64, 9, 16)])
def test_input_projection_packed_and_blas(mode, proj, I, H, T, B, restore_core):
    """Input projections and dX of few rows pack W_ih for the small-GEMM
    kernel, more rows go to BLAS: both paths (forced here), 1 and 2 threads,
    bidirectional (dX of the second direction adds to the first), against
    float64. The shapes split by columns (rows < G*H, rows < I) and by rows,
    with partial panels and odd I."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((T, B, I))
    lengths = rng.integers(0, T + 1, B)
    params = random_params(mode, I, H, 2, True, proj_size=proj, dtype=np.float64, seed=6)

    def run(dtype):
        return _two_layer_bi(mode, proj, I, H, params, x, lengths, dtype)

    want = run(np.float64)
    old = _core._set_proj_packed_rows(0)
    old_k = _core._set_cat_max_k(0)     # the separate projection, whatever the shape
    try:
        for rows in (0, 1 << 30):
            _core._set_proj_packed_rows(rows)
            for n in (1, 2):
                pyrnn.set_num_threads(n)
                got = run(np.float32)
                for k in want:
                    err = np.max(np.abs(got[k] - want[k])) / max(1.0, np.max(np.abs(want[k])))
                    assert err <= 2e-5, (rows, n, k, err)
    finally:
        _core._set_proj_packed_rows(old)
        _core._set_cat_max_k(old_k)


@pytest.mark.parametrize("mode,proj", MODES, ids=IDS)
def test_all_products_packed_or_blas(mode, proj, restore_core):
    """Where the packed kernels do every float product (_set_all_packed, chosen
    at import from the machine) and where BLAS does the big ones: the input
    projection and dX past PROJ_PACKED_ROWS rows and weight gradients past
    TN_MAX_MN elements take either path; both match float64, and each gives
    the same bits at every SIMD level; packed, also on 1 and 2 threads (BLAS
    splits its sums differently for a part of the rows)."""
    I, H, T, B = 300, 200, 9, 120      # 1080 rows; G*H x I past 262144 for LSTM and GRU
    rng = np.random.default_rng(8)
    x = rng.standard_normal((T, B, I))
    lengths = rng.integers(0, T + 1, B)
    params = random_params(mode, I, H, 2, True, proj_size=proj, dtype=np.float64, seed=8)
    want = _two_layer_bi(mode, proj, I, H, params, x, lengths, np.float64)
    old_k = _core._set_cat_max_k(0)     # the separate projection, whatever the shape
    runs = {}
    try:
        for packed in (True, False):
            _core._set_all_packed(packed)
            first = {}
            for level in [lv for lv in _core.simd_levels() if lv != "scalar"]:
                _core.set_simd_level(level)
                for n in (1, 2):
                    pyrnn.set_num_threads(n)
                    got = _two_layer_bi(mode, proj, I, H, params, x, lengths, np.float32)
                    for k in want:
                        err = np.max(np.abs(got[k] - want[k])) / max(1.0, np.max(np.abs(want[k])))
                        assert err <= 2e-5, (packed, level, n, k, err)
                    ref = first.setdefault(1 if packed else n, got)
                    for k in want:
                        assert np.array_equal(got[k], ref[k]), (packed, level, n, k)
            runs[packed] = first[1]
        # the switch does change the kernels: long sums in another order. An
        # OpenBLAS kernel that sums each output's k in order within one k-block
        # (SkylakeX, on Zen 4) gives the packed bits for RNN's and MGRU's short
        # sums here, so those are told apart on a projection of K = 1500.
        if not any(not np.array_equal(runs[True][k], runs[False][k]) for k in want):
            assert _wide_projection_differs(mode, proj)
    finally:
        _core._set_cat_max_k(old_k)


def _wide_projection_differs(mode, proj):
    """Whether _two_layer_bi with K = 1500 inputs over 1080 rows gives other
    bits with all_packed off than on; both must match float64."""
    I, H, T, B = 1500, 32, 9, 120
    rng = np.random.default_rng(9)
    x = rng.standard_normal((T, B, I))
    lengths = rng.integers(0, T + 1, B)
    params = random_params(mode, I, H, 2, True, proj_size=proj, dtype=np.float64, seed=9)
    want = _two_layer_bi(mode, proj, I, H, params, x, lengths, np.float64)
    got = {}
    for packed in (True, False):
        _core._set_all_packed(packed)
        got[packed] = _two_layer_bi(mode, proj, I, H, params, x, lengths, np.float32)
        for k in want:
            err = np.max(np.abs(got[packed][k] - want[k])) / max(1.0, np.max(np.abs(want[k])))
            assert err <= 2e-5, (packed, k, err)
    return any(not np.array_equal(got[True][k], got[False][k]) for k in want)


@pytest.mark.parametrize("env, levels, core, want", [
    ("", ("scalar", "avx2", "avx512"), "Haswell", True),     # AMD Zen 5 with scipy's OpenBLAS
    ("auto", ("scalar", "avx2", "avx512"), "Zen", True),
    ("", ("scalar", "avx2", "avx512"), "SkylakeX", False),
    ("", ("scalar", "avx2", "avx512"), "SAPPHIRERAPIDS", False),
    ("", ("scalar", "avx2"), "Haswell", False),
    ("", ("scalar", "avx2", "avx512"), None, False),         # BLAS unknown: keep it
    (" Packed ", ("scalar", "avx2"), None, True),
    ("blas", ("scalar", "avx2", "avx512"), "Haswell", False),
])
def test_all_packed_choice(env, levels, core, want):
    from pyrnn._threads import choose_all_packed
    assert choose_all_packed(levels, core, env=env) is want


def test_all_packed_default_is_the_rule():
    from pyrnn._threads import blas_core, choose_all_packed
    assert _core._all_packed() is choose_all_packed(_core.simd_levels(), blas_core())


def test_all_packed_choice_rejects_bad_env():
    from pyrnn._threads import choose_all_packed
    with pytest.raises(ValueError, match="PYRNN_GEMM"):
        choose_all_packed(("scalar", "avx2", "avx512"), "Haswell", env="fast")


def test_all_packed_env_at_import():
    """PYRNN_GEMM sets the choice when the layers load; a bad value is refused
    there with the variable's name."""
    code = ("import pyrnn; pyrnn.LSTM; from pyrnn import _core; print(_core._all_packed())")
    for env, out in (("packed", "True"), ("blas", "False")):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**os.environ, "PYRNN_GEMM": env}, timeout=120)
        assert r.returncode == 0 and r.stdout.strip() == out, (env, r.stdout, r.stderr)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYRNN_GEMM": "fast"}, timeout=120)
    assert r.returncode != 0 and "PYRNN_GEMM must be auto, packed or blas" in r.stderr


@pytest.mark.parametrize("mode,proj", MODES, ids=IDS)
@pytest.mark.parametrize("I, H, T, B", [(37, 23, 13, 7), (5, 16, 9, 2), (64, 64, 12, 9),
                                        (200, 40, 8, 17)])
def test_step_product_with_x_and_h_together(mode, proj, I, H, T, B, restore_core):
    """At batch >= 2 with I + P <= 512, each step multiplies [x_t | h] by the
    packed [W_ih | W_hh] (no separate input projection): against float64
    with it and without it, 1 and 2 threads (B = 2 on 2 threads: one row
    each, the one-row kernel), bidirectional and stacked (the second layer's
    input is 2 P wide), lengths, partial weight panels and GRU's sections.
    Its sums run in another order than the separate projection's, so some
    bits differ: the switch really changes the path (LSTM with projection
    never takes it, and gives the same bits)."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((T, B, I))
    lengths = rng.integers(0, T + 1, B)
    params = random_params(mode, I, H, 2, True, proj_size=proj, dtype=np.float64, seed=7)

    def run(dtype):
        out = _two_layer_bi(mode, proj, I, H, params, x, lengths, dtype)
        np.testing.assert_array_equal(out["y"], out["y_inf"])
        return out

    want = run(np.float64)
    old = _core._set_cat_max_k(0)
    try:
        got = {}
        for k_max in (0, 512):
            _core._set_cat_max_k(k_max)
            for n in (1, 2):
                pyrnn.set_num_threads(n)
                got[k_max, n] = run(np.float32)
                for k in want:
                    err = (np.max(np.abs(got[k_max, n][k] - want[k]))
                           / max(1.0, np.max(np.abs(want[k]))))
                    assert err <= 2e-5, (k_max, n, k, err)
        same = np.array_equal(got[0, 1]["y"], got[512, 1]["y"])
        assert same == (proj > 0)
    finally:
        _core._set_cat_max_k(old)


# Defined only where the CPU runs AVX-512: elsewhere an empty parameter set would
# skip (a CI failure), and test_simd_levels_of_this_cpu checks that the level is refused.
if "avx512" in _core.simd_levels():
    @pytest.mark.parametrize("mode,proj", MODES, ids=IDS)
    def test_avx512_same_bits_as_avx2(mode, proj, restore_core):
        """The AVX-512 level (8x32 product tiles; the gate kernels are AVX2's) does the
        same IEEE operations per element in the same order as AVX2: the bits
        must match, forward, inference, dx, states and every gradient. Shapes
        cover whole and partial weight panels, an odd last panel, rows past the
        last multiple of 8, the accumulating (backward) product, batch 1 (the
        one-row kernel, shared with the helper core at H = 128), 1 and 2 threads."""
        for n in (1, 2):
            pyrnn.set_num_threads(n)
            for B, H in ((8, 64), (13, 40), (17, 24), (9, 8), (30, 72), (1, 40), (1, 128)):
                got = {}
                for lv in ("avx2", "avx512"):
                    _core.set_simd_level(lv)
                    got[lv] = run(mode, proj, np.float32, B=B, H=H)
                for a, b in zip(got["avx2"], got["avx512"]):
                    np.testing.assert_array_equal(a, b)


def _row_kernel_sums(a, W, k1):
    """The one-row kernel's float32 sums, emulated: for each output, four
    chains of fused multiply-adds (k-step k of each segment [a[:k1] | a[k1:]]
    into chain k % 4, the segment's last K % 4 into chain 0), then
    (c0 + c1) + (c2 + c3). A product of two float32 is exact in float64, so
    float64(acc) + product rounded to float32 is the FMA's single rounding
    (bar double rounding, which these seeds do not hit)."""
    acc = np.zeros((4, W.shape[0]), np.float32)
    for lo, hi in ((0, k1), (k1, a.size)):
        for k in range(lo, hi):
            c = (k - lo) % 4 if k < hi - (hi - lo) % 4 else 0
            acc[c] = (acc[c].astype(np.float64)
                      + np.float64(a[k]) * W[:, k].astype(np.float64)).astype(np.float32)
    return (acc[0] + acc[1]) + (acc[2] + acc[3])


@pytest.mark.skipif("avx2" not in _core.simd_levels(), reason="needs AVX2+FMA")
def test_row_kernel_sum_order(restore_core):
    """The batch-1 (one-row) packed kernel keeps its exact sums whatever the
    loop shape: k-steps in blocks of 8 (the row broadcast in registers), 4
    and 1, each segment of [x | h] from its own k = 0. Every batch-1 step
    (sequences, streams, the helper core's half) takes these bits."""
    _core.set_simd_level("avx2")
    rng = np.random.default_rng(11)
    for n, k, k1 in [(200, 70, 30), (48, 16, 16), (40, 129, 64), (16, 7, 3), (64, 256, 128),
                     (32, 13, 0)]:
        a = rng.standard_normal((1, k)).astype(np.float32)
        W = rng.standard_normal((n, k)).astype(np.float32)
        want = _row_kernel_sums(a[0], W, k1)
        for rev in (False, True):
            np.testing.assert_array_equal(_core._packed_product(a, W, k1, rev)[0], want)


@pytest.mark.parametrize("level", [lv for lv in _core.simd_levels() if lv != "scalar"])
def test_packed_kernel_either_direction_same_bits(level, restore_core):
    """The packed product taken last panel first (rev) gives the same bits as
    first to last, and matches float64: one row (the matrix-vector path),
    tile remainders (3, 13, 17 rows), an odd and a partial last panel
    (N = 40, 200), and the [x | h] split of each row."""
    _core.set_simd_level(level)
    rng = np.random.default_rng(3)
    for m, n, k, k1 in [(1, 200, 70, 30), (1, 48, 16, 16), (3, 40, 33, 0), (8, 96, 64, 20),
                        (13, 200, 50, 49), (17, 40, 129, 64)]:
        A = rng.standard_normal((m, k)).astype(np.float32)
        W = rng.standard_normal((n, k)).astype(np.float32)
        fwd = _core._packed_product(A, W, k1, False)
        back = _core._packed_product(A, W, k1, True)
        np.testing.assert_array_equal(fwd, back)
        np.testing.assert_allclose(fwd, A.astype(np.float64) @ W.T.astype(np.float64),
                                   rtol=1e-5, atol=1e-4)
    with pytest.raises(TypeError, match="float32"):
        _core._packed_product(A.astype(np.float64), W, 0, False)
    with pytest.raises(ValueError, match="k1"):
        _core._packed_product(A, W, k + 1, False)


@pytest.mark.parametrize("mode,proj", MODES, ids=IDS)
@pytest.mark.parametrize("B, I, H", [(1, 6, 32), (10, 6, 8), (3, 500, 40)])
def test_steps_alternating_weight_direction_same_bits(mode, proj, B, I, H, restore_core):
    """Every other step reads the packed weights last to first (packed.h):
    the bits equal those of one direction throughout, forward, every
    gradient and a stream, on 1 and 2 threads (batch 1 on two cores too);
    the [x | h] product (B = 10), the separate projection (I = 500)."""
    rng = np.random.default_rng(5)
    T = 9
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    lengths = np.minimum(rng.integers(1, T + 1, B), T)
    dy = rng.standard_normal((T, B, 2 * (proj or H))).astype(np.float32)
    layer = make_layer(mode, I, H, 2, True, proj, dtype=np.float32, seed=4)
    one = make_layer(mode, I, H, 2, False, proj, dtype=np.float32, seed=4)

    def outputs():
        layer.zero_grad()
        y, hn, backward = layer.forward_train(x, None, lengths)
        dx, dhx = backward(dy)
        st = pyrnn.stream.Stream(one, batch_size=B)
        steps = [st.step(x[t]).copy() for t in range(T)]
        return ([y, layer(x, None, lengths)[0], dx] + _flat(hn) + _flat(dhx) + steps
                + [layer.grads[k].copy() for k in sorted(layer.grads)])

    old = _core._set_zigzag(False)
    try:
        for n in (1, 2):
            pyrnn.set_num_threads(n)
            _core._set_zigzag(False)
            want = outputs()
            _core._set_zigzag(True)
            got = outputs()
            for u, v in zip(want, got):
                np.testing.assert_array_equal(u, v)
    finally:
        _core._set_zigzag(old)


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "GRU_RB", "MGRU"])
def test_step_product_weights_packed_by_two_threads(mode, restore_core):
    """From 1 MB the packed [W_ih | W_hh] of the [x_t | h] path is made by both
    threads, half the panels each (GRU: every section split): the same bits as
    one thread's copy, and float64's numbers; the switch really changes the path."""
    # at least 262,144 floats of [W_ih | W_hh] with I + H <= 512 (an RNN never has them)
    I, H = (128, 384) if mode == "MGRU" else (256, 256)
    rng = np.random.default_rng(11)
    layer = make_layer(mode, I, H, 1, False, 0, dtype=np.float32, seed=3)
    x = rng.standard_normal((9, 4, I)).astype(np.float32)     # packed from 8 steps
    out = {}
    for n in (2, 1):        # two first: its copy must not come from an earlier one's memory
        pyrnn.set_num_threads(n)
        out[n] = layer(x)
    np.testing.assert_array_equal(out[1][0], out[2][0])
    ref = reference.layer_forward(mode, layer.state_dict(), x.astype(np.float64))
    np.testing.assert_allclose(out[2][0], ref[0], rtol=1e-4, atol=3e-5)
    old = _core._set_cat_max_k(0)                     # the separate projection instead
    try:
        assert not np.array_equal(layer(x)[0], out[2][0])
    finally:
        _core._set_cat_max_k(old)


@pytest.mark.parametrize("m, n, k", [(37, 70, 19), (8, 32, 64), (130, 48, 300)])
def test_prepacked_product(m, n, k, restore_core):
    """_pack + _gemm_prepacked (the bench's peak of the packed kernel) against
    float64, full and partial panels and tiles."""
    rng = np.random.default_rng(9)
    A = rng.standard_normal((m, k)).astype(np.float32)
    W = rng.standard_normal((n, k)).astype(np.float32)
    C = _core._gemm_prepacked(A, _core._pack(W), n, np.empty((m, n), np.float32))
    np.testing.assert_allclose(C, A.astype(np.float64) @ W.T.astype(np.float64), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="P must pack"):
        _core._gemm_prepacked(A, _core._pack(W), n + 32, np.empty((m, n + 32), np.float32))
    with pytest.raises(TypeError, match="A must be"):
        _core._gemm_prepacked(A.astype(np.float64), _core._pack(W), n, np.empty((m, n), np.float32))


@pytest.mark.parametrize("mode,proj", MODES, ids=IDS)
def test_short_sequences(mode, proj, restore_core):
    """From batch 2 a sequence of any length packs W_hh (BLAS's gemm would copy it
    at every step); at batch 1 one row's input projection is BLAS's gemv. Steps
    1-7 give float64's numbers (forward, inference, dx, states, every gradient,
    with lengths) on 1 and 2 threads, and a 7-step call gives exactly the first 7
    steps of an 8-step one: both take the packed kernels."""
    for n in (1, 2):
        pyrnn.set_num_threads(n)
        for B, T in ((5, 1), (5, 3), (5, 7), (1, 1), (1, 3)):
            want = run(mode, proj, np.float64, B=B, T=T)
            got = run(mode, proj, np.float32, B=B, T=T)
            for k, (a, b) in enumerate(zip(want, got)):
                err = np.max(np.abs(a - b), initial=0) / max(1.0, np.max(np.abs(a), initial=0))
                assert err <= 2e-5, (n, B, T, k, err)
    layer = make_layer(mode, 6, 8, 1, False, proj, dtype=np.float32)
    layer.load_state_dict(random_params(mode, 6, 8, 1, False, proj_size=proj,
                                        dtype=np.float32, seed=4))
    x = np.random.default_rng(4).standard_normal((8, 5, 6)).astype(np.float32)
    np.testing.assert_array_equal(layer(x[:7])[0], layer(x)[0][:7])
