"""Bad input gives the documented exception naming the argument; odd arrays work; nothing
crashes (crash-prone cases run in a subprocess, so a segfault fails the test)."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import pyrnn
from _oracle import fd_check, random_params

ALL = ["RNN", "GRU", "LSTM", "MinimalGRU"]


def layer(kind="GRU", **kw):
    kw.setdefault("seed", 0)
    return getattr(pyrnn, kind)(3, 4, **kw)


def run_subprocess(code):
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, f"exit {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out.stdout.split()


# ---------------------------------------------------------------- inputs

@pytest.mark.parametrize("kind", ALL)
def test_bad_x(kind):
    m = layer(kind)
    with pytest.raises(ValueError, match=r"x: expected .*got shape \(5,\)"):
        m(np.zeros(5, np.float32))
    with pytest.raises(ValueError, match=r"x: expected .*\(2, 3, 4, 5\)"):
        m(np.zeros((2, 3, 4, 5), np.float32))
    with pytest.raises(ValueError, match=r"x: expected shape \(T, B, 3\), got \(5, 2, 7\)"):
        m(np.zeros((5, 2, 7), np.float32))
    with pytest.raises(ValueError, match=r"x: .*\(T, 3\)"):
        m(np.zeros((5, 7), np.float32))
    for bad in (np.zeros((5, 2, 3), np.int64), np.zeros((5, 2, 3), bool),
                np.zeros((5, 2, 3), np.complex64), np.zeros((5, 2, 3), object)):
        with pytest.raises(TypeError, match="x: "):
            m(bad)
        with pytest.raises(TypeError, match="x: "):
            m.forward_train(bad)


def test_bad_x_batch_first():
    m = layer("LSTM", batch_first=True)
    with pytest.raises(ValueError, match=r"x: expected shape \(B, T, 3\)"):
        m(np.zeros((2, 5, 4), np.float32))


@pytest.mark.parametrize("kind", ALL)
def test_bad_hx(kind):
    m = layer(kind, num_layers=2)
    x = np.zeros((5, 2, 3), np.float32)
    h = np.zeros((2, 2, 4), np.float32)
    with pytest.raises(ValueError, match=r"hx.*expected shape \(2, 2, 4\), got \(1, 2, 4\)"):
        m(x, (np.zeros((1, 2, 4)), h) if kind == "LSTM" else np.zeros((1, 2, 4)))
    if kind == "LSTM":
        with pytest.raises(TypeError, match="hx: LSTM expects a tuple"):
            m(x, h)
        with pytest.raises(ValueError, match=r"hx\[1\].*expected shape \(2, 2, 4\), got \(2, 3, 4\)"):
            m(x, (h, np.zeros((2, 3, 4))))
    else:
        with pytest.raises(TypeError, match="hx: "):
            m(x, (h, h))
    with pytest.raises(TypeError, match="hx"):
        m(x, (h.astype(int), h) if kind == "LSTM" else h.astype(int))
    # unbatched input wants unbatched state
    with pytest.raises(ValueError, match=r"hx.*expected shape \(2, 4\)"):
        m(x[:, 0], (h, h) if kind == "LSTM" else h)


@pytest.mark.parametrize("kind", ALL)
def test_bad_lengths(kind):
    m = layer(kind)
    x = np.zeros((5, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"lengths: expected shape \(3,\), got \(2,\)"):
        m(x, lengths=[1, 2])
    with pytest.raises(ValueError, match=r"lengths: .*\[0, 5\].*max 6"):
        m(x, lengths=[1, 6, 2])
    with pytest.raises(ValueError, match=r"lengths: .*\[0, 5\].*min -1"):
        m.forward_train(x, lengths=[1, -1, 2])
    with pytest.raises(TypeError, match="lengths: expected integers"):
        m(x, lengths=np.array([1.0, 2.0, 3.0]))
    with pytest.raises(TypeError, match="lengths"):
        m(x, lengths=[True, False, True])


@pytest.mark.parametrize("kind", ALL)
def test_bad_dy_and_backward_twice(kind):
    m = layer(kind, bidirectional=True)
    x = np.zeros((5, 2, 3), np.float32)
    y, hn, bw = m.forward_train(x)
    with pytest.raises(ValueError, match=r"dy: expected shape \(5, 2, 8\), got \(5, 2, 4\)"):
        bw(np.zeros((5, 2, 4)))
    y, hn, bw = m.forward_train(x)   # a rejected call still uses up backward
    with pytest.raises(TypeError, match="dy"):
        bw(np.zeros((5, 2, 8), int))
    y, hn, bw = m.forward_train(x)
    with pytest.raises(ValueError, match=r"dh_n.*expected shape \(2, 2, 4\), got \(1, 2, 4\)"):
        bw(np.zeros_like(y), (np.zeros((1, 2, 4)), None) if kind == "LSTM" else np.zeros((1, 2, 4)))
    y, hn, bw = m.forward_train(x)
    bw(np.ones_like(y))
    with pytest.raises(RuntimeError, match="already called"):
        bw(np.ones_like(y))


# ---------------------------------------------------------------- load_state_dict

@pytest.mark.parametrize("kind", ALL)
def test_load_state_dict_errors_leave_layer_unchanged(kind):
    m = layer(kind, num_layers=2)
    before = m.state_dict()
    good = {k: v + 1 for k, v in before.items()}
    bad = dict(good)
    del bad["weight_hh_l1"], bad["bias_ih_l0"]
    bad["weight_hr_l9"] = np.zeros(3)
    bad["extra"] = np.zeros(1)
    bad["weight_ih_l0"] = np.zeros((2, 2))
    bad["bias_hh_l1"] = np.zeros(5)
    with pytest.raises(ValueError) as e:
        m.load_state_dict(bad)
    msg = str(e.value)
    for key in ("weight_hh_l1", "bias_ih_l0", "weight_hr_l9", "extra", "weight_ih_l0",
                "bias_hh_l1"):
        assert key in msg, f"{key} not named in: {msg}"
    assert "missing" in msg and "unexpected" in msg and "(2, 2)" in msg
    after = m.state_dict()
    for k in before:
        np.testing.assert_array_equal(after[k], before[k])
    m.load_state_dict(good)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, good[k].astype(m.dtype))


def test_state_dict_is_a_copy():
    m = layer("GRU")
    sd = m.state_dict()
    sd["weight_ih_l0"][...] = 7
    assert not np.any(m.state_dict()["weight_ih_l0"] == 7)


# ---------------------------------------------------------------- constructor

@pytest.mark.parametrize("kind", ALL)
def test_bad_constructor_args(kind):
    cls = getattr(pyrnn, kind)
    with pytest.raises(ValueError, match="hidden_size"):
        cls(3, 0)
    with pytest.raises(ValueError, match="input_size"):
        cls(0, 4)
    with pytest.raises(ValueError, match="num_layers"):
        cls(3, 4, num_layers=0)
    with pytest.raises(ValueError, match="dropout"):
        cls(3, 4, dropout=1.5)
    with pytest.raises(ValueError, match="dropout"):
        cls(3, 4, dropout=-0.1)
    with pytest.raises(TypeError, match="dtype"):
        cls(3, 4, dtype=np.float16)
    with pytest.raises(TypeError, match="dtype"):
        cls(3, 4, dtype=np.int32)
    with pytest.raises(TypeError, match="hidden_size"):
        cls(3, 4.5)


def test_bad_constructor_kind_specific():
    with pytest.raises(TypeError):
        pyrnn.GRU(3, 4, proj_size=2)
    with pytest.raises(ValueError, match="nonlinearity.*'sigmoid'"):
        pyrnn.RNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="proj_size"):
        pyrnn.LSTM(3, 4, proj_size=4)
    with pytest.raises(ValueError, match="proj_size"):
        pyrnn.LSTM(3, 4, proj_size=-1)


# ---------------------------------------------------------------- odd but valid arrays

@pytest.mark.parametrize("kind", ALL)
def test_noncontiguous_readonly_memmap_same_numbers(kind, tmp_path):
    m = layer(kind, dtype=np.float64, bidirectional=True)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3, 3))
    want = m(x)[0]
    big = np.zeros((10, 3, 6))
    big[::2, :, ::2] = x
    nc = big[::2, :, ::2]
    assert not nc.flags.c_contiguous
    ro = x.copy()
    ro.flags.writeable = False
    mm = np.memmap(tmp_path / "x.dat", dtype=np.float64, mode="w+", shape=x.shape)
    mm[...] = x
    mm.flush()
    mm_r = np.memmap(tmp_path / "x.dat", dtype=np.float64, mode="r", shape=x.shape)
    fortran = np.asfortranarray(x)
    for v in (nc, ro, mm_r, fortran):
        np.testing.assert_array_equal(m(v)[0], want)
        y, hn, bw = m.forward_train(v)
        np.testing.assert_array_equal(y, want)
        dx, _ = bw(np.ones_like(y))
        assert np.all(np.isfinite(dx))
    assert not ro.flags.writeable and np.array_equal(ro, x)   # input untouched


def test_other_float_dtypes_converted():
    m = layer("LSTM")
    x64 = np.random.default_rng(0).standard_normal((4, 2, 3))
    y32 = m(x64.astype(np.float32))[0]
    y = m(x64.astype(np.float32).astype(np.float64))[0]
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, y32)
    y16 = m(x64.astype(np.float16))[0]
    np.testing.assert_array_equal(y16, m(x64.astype(np.float16).astype(np.float32))[0])
    m64 = layer("LSTM", dtype=np.float64)
    assert m64(x64.astype(np.float32))[0].dtype == np.float64


# ---------------------------------------------------------------- crash-prone (subprocess)

def test_nan_inf_and_huge_values_in_subprocess():
    out = run_subprocess("""
        import numpy as np, pyrnn
        for kind in ("RNN", "GRU", "LSTM", "MinimalGRU"):
            m = getattr(pyrnn, kind)(3, 4, seed=0)
            x = np.zeros((4, 2, 3), np.float32)
            x[1, 0, 0] = np.nan
            x[2, 1, 1] = np.inf
            y = m(x)[0]
            # batch row 0 turns NaN from step 1 on; step 0 stays finite
            print(kind, bool(np.isnan(y[1:, 0]).all()), bool(np.isfinite(y[0]).all()))
            big = np.full((4, 2, 3), 3e38, np.float32)
            big[:, 1] *= -1
            y, h = m(big)[0], m(big)[1]
            y, hn, bw = m.forward_train(big)
            dx, _ = bw(np.ones_like(y))
            print(kind, bool(np.isfinite(y).all()), bool(np.isfinite(dx).all()))
    """)
    for kind in ("RNN", "GRU", "LSTM", "MinimalGRU"):
        i = out.index(kind)
        assert out[i + 1:i + 3] == ["True", "True"], out
        j = out.index(kind, i + 1)
        assert out[j + 1:j + 3] == ["True", "True"], out


def test_empty_inputs_in_subprocess():
    out = run_subprocess("""
        import numpy as np, pyrnn
        for kind in ("RNN", "GRU", "LSTM", "MinimalGRU"):
            m = getattr(pyrnn, kind)(3, 4, num_layers=2, bidirectional=True, seed=0)
            for shape in ((0, 2, 3), (5, 0, 3), (0, 3)):
                hshape = (4,) + shape[1:-1] + (4,)
                h0 = np.ones(hshape, np.float32)
                hx = (h0, h0) if kind == "LSTM" else h0
                y, hn, bw = m.forward_train(np.zeros(shape, np.float32), hx)
                h = hn[0] if kind == "LSTM" else hn
                dx, dh = bw(np.zeros(y.shape, np.float32),
                            (h0, h0) if kind == "LSTM" else h0)
                d = dh[0] if kind == "LSTM" else dh
                print(y.shape == shape[:-1] + (8,), dx.shape == shape,
                      bool(np.all(h == h0)), bool(np.all(d == h0)))
            y, h = m(np.zeros((4, 2, 3), np.float32), lengths=[0, 0])[:2]
            print(bool(np.all(y == 0)), True, True, True)
    """)
    assert len(out) == 16 * 4 and all(v == "True" for v in out), out


def test_negative_strides_in_subprocess():
    out = run_subprocess("""
        import numpy as np, pyrnn
        for kind in ("RNN", "GRU", "LSTM", "MinimalGRU"):
            m = getattr(pyrnn, kind)(3, 4, seed=0, dtype=np.float64)
            x = np.random.default_rng(0).standard_normal((5, 2, 3))
            r = x[::-1, ::-1, ::-1]
            y1 = m(r)[0]
            y2 = m(r.copy())[0]
            yt, hn, bw = m.forward_train(r)
            dy = np.ones_like(yt)[::-1]
            dx1, _ = bw(dy)
            yt, hn, bw = m.forward_train(r.copy())
            dx2, _ = bw(dy.copy())
            print(bool(np.array_equal(y1, y2)), bool(np.array_equal(dx1, dx2)))
    """)
    assert out == ["True"] * 8, out


def test_batch_first_single_sequence_backward_in_subprocess():
    out = run_subprocess("""
        import numpy as np, pyrnn
        ok = []
        for kind in ("RNN", "GRU", "LSTM", "MinimalGRU"):
            a = getattr(pyrnn, kind)(3, 4, batch_first=True, seed=0, dtype=np.float64)
            b = getattr(pyrnn, kind)(3, 4, seed=0, dtype=np.float64)
            rng = np.random.default_rng(0)
            x = rng.standard_normal((1, 5, 3)); dy = rng.standard_normal((1, 5, 4))
            y, hn, bw = a.forward_train(x); dx, _ = bw(dy)
            y2, hn, bw = b.forward_train(x.transpose(1, 0, 2).copy())
            dx2, _ = bw(dy.transpose(1, 0, 2).copy())
            ok.append(np.allclose(dx, dx2.transpose(1, 0, 2), atol=1e-12))
        print(all(ok))
    """)
    assert out == ["True"]


# ---------------------------------------------------------------- dropout

def test_dropout_seeded_mask_and_inference():
    kw = dict(num_layers=3, dropout=0.5, dtype=np.float64)
    a = pyrnn.LSTM(3, 4, seed=5, **kw)
    b = pyrnn.LSTM(3, 4, seed=5, **kw)
    nodrop = pyrnn.LSTM(3, 4, num_layers=3, dtype=np.float64, seed=5)
    x = np.random.default_rng(0).standard_normal((6, 4, 3))
    y_inf = a(x)[0]
    np.testing.assert_array_equal(y_inf, nodrop(x)[0])       # inference ignores dropout
    ya = a.forward_train(x)[0]
    yb = b.forward_train(x)[0]
    np.testing.assert_array_equal(ya, yb)                    # same seed, same mask
    assert np.max(np.abs(ya - y_inf)) > 1e-3                  # training applies a mask
    ya2 = a.forward_train(x)[0]
    assert not np.array_equal(ya, ya2)                        # next call, next mask
    np.testing.assert_array_equal(nodrop.forward_train(x)[0], y_inf)
    # last layer gets no dropout: a 1-layer net with dropout is the plain net
    one = pyrnn.GRU(3, 4, dropout=0.9, seed=1, dtype=np.float64)
    np.testing.assert_array_equal(one.forward_train(x)[0], one(x)[0])


@pytest.mark.parametrize("kind", ALL)
def test_dropout_gradients_match_fd_with_fixed_mask(kind):
    pyrnn_n = pyrnn.get_num_threads()
    pyrnn.set_num_threads(1)
    try:
        m = getattr(pyrnn, kind)(2, 3, num_layers=2, dropout=0.4, bidirectional=True,
                                 dtype=np.float64, seed=3)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((4, 3, 2))
        dy = rng.standard_normal((4, 3, 6))
        state = m.rng_state()
        y, hn, bw = m.forward_train(x, lengths=[4, 1, 3])
        dx, _ = bw(dy)
        names = sorted(m.params)
        grads = [dx] + [m.grads[k].copy() for k in names]
        params = m.state_dict()
        arrays = [x] + [params[k] for k in names]

        def f(arrs):
            m.load_state_dict(dict(zip(names, arrs[1:])))
            m.set_rng_state(state)              # the same mask every time
            yy = m.forward_train(arrs[0], lengths=[4, 1, 3])[0]
            return np.sum(yy * dy)

        err = fd_check(f, arrays, grads, eps=1e-6, max_entries=15)
        assert err < 1e-6, f"FD with dropout: {err:.2e}"
    finally:
        pyrnn.set_num_threads(pyrnn_n)
