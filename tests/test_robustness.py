"""Robustness: fuzzing every public entry point with bad and odd input, NaN/inf like
torch, flat memory over many calls, multiprocessing start methods.

Fuzz workers run in a SUBPROCESS (this file run as a script: ``python
test_robustness.py <worker>``), so a crash or hang fails the test instead of
killing pytest. A worker runs many hypothesis cases and prints one JSON summary.
Set PYRNN_FUZZ_EXAMPLES to run more cases per worker.
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EXAMPLES = int(os.environ.get("PYRNN_FUZZ_EXAMPLES", "200"))
OK_EXC = (TypeError, ValueError, RuntimeError)
MODES = ["RNN_TANH", "RNN_RELU", "GRU", "GRU_RB", "MGRU", "LSTM"]


# ================================================================ worker side

def _make_layer(mode, I, H, L, bidir, batch_first, proj, dtype, seed=0):
    import pyrnn
    kw = dict(num_layers=L, batch_first=batch_first, bidirectional=bidir, dtype=dtype, seed=seed)
    if mode.startswith("RNN"):
        return pyrnn.RNN(I, H, nonlinearity="tanh" if mode == "RNN_TANH" else "relu", **kw)
    if mode == "LSTM":
        return pyrnn.LSTM(I, H, proj_size=proj, **kw)
    if mode in ("GRU", "GRU_RB"):
        return pyrnn.GRU(I, H, reset_after=mode == "GRU", **kw)
    return pyrnn.MinimalGRU(I, H, **kw)


def _make_cell(mode, I, H, dtype, seed=0):
    import pyrnn
    if mode.startswith("RNN"):
        return pyrnn.RNNCell(I, H, nonlinearity="tanh" if mode == "RNN_TANH" else "relu",
                             dtype=dtype, seed=seed)
    if mode == "LSTM":
        return pyrnn.LSTMCell(I, H, dtype=dtype, seed=seed)
    if mode in ("GRU", "GRU_RB"):
        return pyrnn.GRUCell(I, H, reset_after=mode == "GRU", dtype=dtype, seed=seed)
    return pyrnn.MinimalGRUCell(I, H, dtype=dtype, seed=seed)


class Arr:
    """A generated argument and what the API must do with it."""

    def __init__(self, value, bad_dtype=False, bad_shape=False, nonfinite=False):
        self.value, self.bad_dtype, self.bad_shape = value, bad_dtype, bad_shape
        self.nonfinite = nonfinite

    def __repr__(self):
        v = self.value
        if isinstance(v, list):
            return f"Arr(list {np.shape(v)} bad_dtype={self.bad_dtype} bad_shape={self.bad_shape})"
        return (f"Arr({v.dtype} {v.shape} strides={v.strides} bad_dtype={self.bad_dtype} "
                f"bad_shape={self.bad_shape} value={v!r})")

    @property
    def bad(self):
        return self.bad_dtype or self.bad_shape


def _arrays():
    """A hypothesis strategy factory: draw(shape) -> Arr with fuzzed dtype, shape,
    layout and values."""
    from hypothesis import strategies as st

    @st.composite
    def arr(draw, shape, perturb=True, allow_list=True):
        shape = tuple(shape)
        bad_shape = False
        if perturb and shape and draw(st.integers(0, 9)) == 0:
            # only changes that are invalid whatever the rest: the last axis is always
            # a feature size (>= 1) and no entry point takes 4+ or 5+ dimensions
            kind = draw(st.sampled_from(["grow", "empty", "extra"]))
            if kind == "grow":
                shape = shape[:-1] + (shape[-1] + draw(st.integers(1, 2)),)
            elif kind == "empty":
                shape = shape[:-1] + (0,)
            else:
                shape = (1, 1) + shape
            bad_shape = True
        dt = draw(st.sampled_from(["float32"] * 12 + ["float64"] * 8 + ["float16"] * 2 + [
            "int64", "int32", "uint8", "bool", "complex128", "object"]))
        seed = draw(st.integers(0, 2 ** 16))
        rng = np.random.default_rng(seed)
        base = rng.normal(size=shape) * draw(st.sampled_from([0.1, 1.0, 3.0]))
        nonfinite = False
        special = draw(st.sampled_from(["none"] * 4 + ["nan", "nan", "inf", "-inf", "mix"]))
        if special != "none" and base.size:
            k = draw(st.integers(1, max(1, min(3, base.size))))
            flat = base.reshape(-1)
            vals = {"nan": [np.nan], "inf": [np.inf], "-inf": [-np.inf],
                    "mix": [np.nan, np.inf, -np.inf]}[special]
            for j in rng.choice(base.size, size=k, replace=False):
                flat[j] = vals[j % len(vals)]
            nonfinite = True
        if dt == "object":
            a = base.astype(object)
        elif dt == "complex128":
            a = base.astype(np.complex128)
        elif dt in ("int64", "int32", "uint8", "bool"):
            a = np.clip(np.nan_to_num(base), -100, 100).astype(dt)
        else:
            a = base.astype(dt)
        layout = draw(st.sampled_from(["c", "c", "f", "strided", "neg", "readonly", "list"]))
        if layout == "f":
            a = np.asfortranarray(a)
        elif layout == "strided" and a.ndim:
            big = np.repeat(a, 2, axis=-1)
            a = big[..., ::2]
        elif layout == "neg" and a.ndim:
            a = np.flip(a, axis=0)      # negative-stride view
        elif layout == "readonly":
            a = a.copy()
            a.flags.writeable = False
        elif layout == "list" and allow_list and dt == "float64" and 0 < a.size < 50:
            a = a.tolist()
        if dt == "float16" and np.isfinite(base).all() and np.abs(base).max(initial=0) > 6e4:
            nonfinite = True
        return Arr(a, bad_dtype=dt not in ("float32", "float64", "float16"),
                   bad_shape=bad_shape, nonfinite=nonfinite)

    return arr


class Tally:
    def __init__(self):
        self.counts = {}

    def add(self, key):
        self.counts[key] = self.counts.get(key, 0) + 1


def _expect(tally, fn, bad_dtype, bad_shape):
    """Call fn; invalid input must raise the documented exception, valid must succeed."""
    try:
        out = fn()
    except OK_EXC as e:
        if not (bad_dtype or bad_shape):
            raise AssertionError(f"valid input raised {type(e).__name__}: {e}") from e
        if bad_dtype and not bad_shape:
            assert isinstance(e, TypeError), f"bad dtype raised {type(e).__name__}: {e}"
        if bad_shape and not bad_dtype:
            assert isinstance(e, ValueError), f"bad shape raised {type(e).__name__}: {e}"
        tally.add(type(e).__name__)
        return None
    assert not (bad_dtype or bad_shape), "invalid input was accepted"
    tally.add("ok")
    return out


def _nan_rows_check(x, y, batched, batch_first, lengths, Hout):
    """A NaN in x at (t, b) (inside lengths) makes the forward output at (t, b) NaN."""
    if not batched:
        x, y = x[:, None], y[:, None]
    elif batch_first:
        x, y = np.swapaxes(x, 0, 1), np.swapaxes(y, 0, 1)
    T, B = x.shape[:2]
    for b in range(B):
        n = T if lengths is None else int(lengths[b])
        for t in range(n):
            if np.isnan(x[t, b]).any():
                assert np.isnan(y[t, b, :Hout]).all(), (t, b, y[t, b, :Hout])
                break


def fuzz_layers():
    from hypothesis import given, settings, strategies as st, HealthCheck
    arr = _arrays()
    tally = Tally()

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def case(data):
        d = data.draw
        mode = d(st.sampled_from(MODES))
        I, H, L = d(st.integers(1, 5)), d(st.integers(1, 6)), d(st.integers(1, 2))
        bidir, bf = d(st.booleans()), d(st.booleans())
        proj = d(st.integers(0, H - 1)) if mode == "LSTM" and H > 1 else 0
        dtype = d(st.sampled_from([np.float32, np.float64]))
        layer = _make_layer(mode, I, H, L, bidir, bf, proj, dtype)
        D, Hout = 2 if bidir else 1, proj or H
        T, B = d(st.integers(0, 5)), d(st.integers(1, 4))
        batched = d(st.integers(0, 4)) > 0
        if batched:
            xshape = (B, T, I) if bf else (T, B, I)
        else:
            xshape = (T, I)
        xa = d(arr(xshape))
        hshape = (L * D, B, Hout) if batched else (L * D, Hout)
        cshape = (L * D, B, H) if batched else (L * D, H)
        hx, bad_h, bad_hd = None, False, False
        if d(st.booleans()):
            # a Python list hx is refused (TypeError): it reads like an LSTM's (h, c)
            ha = d(arr(hshape, allow_list=False))
            if mode == "LSTM":
                ca = d(arr(cshape, allow_list=False))
                hx = (ha.value, ca.value)
                bad_h, bad_hd = ha.bad_shape or ca.bad_shape, ha.bad_dtype or ca.bad_dtype
                if d(st.integers(0, 9)) == 0:
                    hx, bad_h, bad_hd = ha.value, False, True   # LSTM needs a pair: TypeError
            else:
                hx, bad_h, bad_hd = ha.value, ha.bad_shape, ha.bad_dtype
        lengths, bad_len, bad_len_dt, len_arr = None, False, False, None
        if batched and d(st.booleans()):
            kind = d(st.sampled_from(["ok"] * 6 + ["neg", "big", "float", "shape", "bool"]))
            lens = np.array([d(st.integers(0, T)) for _ in range(B)], np.int64)
            if kind == "neg":
                lens[0] = -1
            elif kind == "big":
                lens[-1] = T + 1
            elif kind == "float":
                lens = lens.astype(np.float64)
            elif kind == "shape":
                lens = np.append(lens, 0)
            elif kind == "bool":
                lens = lens > 0
            lengths = lens
            bad_len = kind in ("neg", "big", "shape")
            bad_len_dt = kind in ("float", "bool")
            len_arr = lens if kind == "ok" else None
        bad_dtype = xa.bad_dtype or bad_hd or bad_len_dt
        bad_shape = xa.bad_shape or bad_h or bad_len
        if T == 0 and not bad_dtype and not bad_shape:
            # T = 0: an empty output or a ValueError are both acceptable
            try:
                layer(xa.value, hx, lengths)
                tally.add("T0-ok")
            except ValueError:
                tally.add("T0-ValueError")
            return
        train = d(st.booleans())
        if not train:
            out = _expect(tally, lambda: layer(xa.value, hx, lengths), bad_dtype, bad_shape)
            if out is None:
                return
            y, hn = out
        else:
            out = _expect(tally, lambda: layer.forward_train(xa.value, hx, lengths),
                          bad_dtype, bad_shape)
            if out is None:
                return
            y, hn, backward = out
            dya = d(arr(y.shape))
            dh = None
            bad_dh = False
            if d(st.booleans()):
                hshape_n = (hn[0] if mode == "LSTM" else hn).shape
                dha = d(arr(hshape_n, perturb=False))
                dh, bad_dh = dha.value, dha.bad_dtype
                if mode == "LSTM":
                    dh = (dh, None)
            back = _expect(tally, lambda: backward(dya.value, dh), dya.bad_dtype or bad_dh,
                           dya.bad_shape)
            if back is not None:
                dx, dhx = back
                assert dx.shape == np.shape(xa.value), (dx.shape, np.shape(xa.value))
                try:
                    backward(dya.value, dh)
                    raise AssertionError("second backward call did not raise")
                except RuntimeError:
                    tally.add("second-backward-RuntimeError")
        xs = np.asarray(xa.value, dtype=np.float64)
        want_y = (B, T, D * Hout) if (batched and bf) else (T, B, D * Hout) if batched \
            else (T, D * Hout)
        assert y.shape == want_y and y.dtype == dtype, (y.shape, want_y, y.dtype)
        hn0 = hn[0] if mode == "LSTM" else hn
        assert hn0.shape == hshape, (hn0.shape, hshape)
        if mode == "LSTM":
            assert hn[1].shape == cshape
        hx_finite = hx is None or all(np.isfinite(np.asarray(v, np.float64)).all()
                                      for v in (hx if isinstance(hx, tuple) else (hx,)))
        if not xa.nonfinite and hx_finite and np.isfinite(xs).all():
            assert np.isfinite(y).all(), "finite input gave a non-finite output"
            tally.add("finite")
            # the same call with one NaN planted: it must reach that output row
            x2 = xs.astype(dtype)
            pos = tuple(d(st.integers(0, n - 1)) for n in x2.shape[:-1])
            x2[pos + (d(st.integers(0, I - 1)),)] = np.nan
            _nan_rows_check(x2, layer(x2, hx, lengths)[0], batched, bf, len_arr, Hout)
            tally.add("nan-checked")
        elif hx_finite and np.isnan(xs).any():
            _nan_rows_check(xs, y, batched, bf, len_arr, Hout)
            tally.add("nan-checked")

    case()
    return tally.counts


def fuzz_cells():
    from hypothesis import given, settings, strategies as st, HealthCheck
    arr = _arrays()
    tally = Tally()

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def case(data):
        d = data.draw
        mode = d(st.sampled_from(MODES))
        I, H, B = d(st.integers(1, 5)), d(st.integers(1, 6)), d(st.integers(1, 4))
        dtype = d(st.sampled_from([np.float32, np.float64]))
        cell = _make_cell(mode, I, H, dtype)
        batched = d(st.booleans())
        xa = d(arr((B, I) if batched else (I,)))
        hshape = (B, H) if batched else (H,)
        h, bad_h, bad_hd = None, False, False
        if d(st.booleans()):
            ha = d(arr(hshape))
            if mode == "LSTM":
                ca = d(arr(hshape))
                h = (ha.value, ca.value)
                bad_h, bad_hd = ha.bad_shape or ca.bad_shape, ha.bad_dtype or ca.bad_dtype
            else:
                h, bad_h, bad_hd = ha.value, ha.bad_shape, ha.bad_dtype
        bad_dtype, bad_shape = xa.bad_dtype or bad_hd, xa.bad_shape or bad_h
        if not d(st.booleans()):
            out = _expect(tally, lambda: cell(xa.value, h), bad_dtype, bad_shape)
            if out is None:
                return
            h1 = out[0] if mode == "LSTM" else out
        else:
            out = _expect(tally, lambda: cell.forward_train(xa.value, h), bad_dtype, bad_shape)
            if out is None:
                return
            h1, backward = out
            if mode == "LSTM":
                h1 = h1[0]
                dha, dca = d(arr(hshape)), d(arr(hshape, perturb=False))
                dh1 = (dha.value, dca.value)
                bd, bs = dha.bad_dtype or dca.bad_dtype, dha.bad_shape
            else:
                dha = d(arr(hshape))
                dh1, bd, bs = dha.value, dha.bad_dtype, dha.bad_shape
            back = _expect(tally, lambda: backward(dh1), bd, bs)
            if back is not None:
                assert back[0].shape == np.shape(xa.value)
        assert h1.shape == hshape and h1.dtype == dtype
        xs = np.asarray(xa.value, np.float64)
        hfin = h is None or all(np.isfinite(np.asarray(v, np.float64)).all()
                                for v in (h if isinstance(h, tuple) else (h,)))
        if hfin and not xa.nonfinite and np.isfinite(xs).all():
            assert np.isfinite(h1).all()
            tally.add("finite")
        elif hfin and np.isnan(xs).any():
            rows = np.isnan(xs).any(axis=-1)
            assert np.isnan(h1[rows]).all(), "NaN in x did not reach the new state"
            tally.add("nan-checked")

    case()
    return tally.counts


def fuzz_stream():
    from hypothesis import given, settings, strategies as st, HealthCheck
    from pyrnn.stream import Stream
    arr = _arrays()
    tally = Tally()

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def case(data):
        d = data.draw
        mode = d(st.sampled_from(MODES))
        I, H, L, B = (d(st.integers(1, 5)), d(st.integers(1, 6)), d(st.integers(1, 2)),
                      d(st.integers(1, 3)))
        proj = d(st.integers(0, H - 1)) if mode == "LSTM" and H > 1 else 0
        dtype = d(st.sampled_from([np.float32, np.float64]))
        layer = _make_layer(mode, I, H, L, False, False, proj, dtype)
        s = Stream(layer, batch_size=B)
        for _ in range(d(st.integers(1, 4))):
            one_d = B == 1 and d(st.booleans())
            xa = d(arr((I,) if one_d else (B, I)))
            before = s.state
            out = _expect(tally, lambda: s.step(xa.value), xa.bad_dtype, xa.bad_shape)
            if out is None:   # a refused step leaves the state untouched
                after = s.state
                for u, v in zip(before if isinstance(before, tuple) else (before,),
                                after if isinstance(after, tuple) else (after,)):
                    np.testing.assert_array_equal(u, v)
                continue
            assert out.shape == ((proj or H,) if one_d else (B, proj or H))
            xs = np.asarray(xa.value, np.float64)
            if np.isnan(xs).any():
                rows = np.isnan(xs).reshape(-1, I).any(axis=-1)
                assert np.isnan(out.reshape(-1, proj or H)[rows]).all()
                tally.add("nan-checked")
        rows = d(st.sampled_from([None, [0], [B], [-B - 1], [0.5], "x"]))
        bad = rows is not None and rows != [0]
        try:
            s.reset(rows)
            assert not bad
        except (TypeError, ValueError, IndexError) as e:
            assert bad, e
            assert not isinstance(e, IndexError), f"reset({rows!r}) raised IndexError"
            tally.add("reset-" + type(e).__name__)

    case()
    return tally.counts


def memory_worker():
    """RSS (pages) after warm-up and after 100,000 inference calls / 10,000 steps."""
    import pyrnn
    from pyrnn.stream import Stream

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1])

    layer = pyrnn.LSTM(8, 16, num_layers=2, seed=0)
    gru = pyrnn.GRU(8, 16, seed=0)
    x = np.random.default_rng(0).normal(size=(3, 2, 8)).astype(np.float32)
    x1 = x[0, :1]
    s = Stream(layer, batch_size=1)

    def calls(n):
        for i in range(n):
            layer(x)
            gru(x, lengths=[3, 1])

    def steps(n):
        for i in range(n):
            s.step(x1)

    calls(5000)
    steps(2000)
    r0 = rss()
    calls(50000)            # 2 calls each: 100,000 inference calls
    r1 = rss()
    steps(10000)
    r2 = rss()
    return {"start": r0, "after_calls": r1, "after_steps": r2,
            "page": os.sysconf("SC_PAGE_SIZE")}


def fork_worker():
    """Run OpenMP threads and the batch-1 helper thread, then fork; the child runs the
    layer again at batch 64 and 1. Reports whether the
    child finished (and with the parent's numbers), hung (killed after a timeout) or
    was refused, with the default thread count, set_num_threads(1) and (2) in the child."""
    import signal
    import time
    import pyrnn
    pyrnn.set_num_threads(2)
    layer = pyrnn.LSTM(64, 128, seed=0)
    x = np.random.default_rng(0).normal(size=(20, 64, 64)).astype(np.float32)
    want, _ = layer(x)           # big batch: the OpenMP team has run
    x1 = x[:, :1]
    want1, _ = layer(x1)         # batch 1: the helper core's thread has run too
    report = {}
    for label, child_threads in (("default", None), ("one_thread", 1), ("two_threads", 2)):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                try:
                    if child_threads:
                        pyrnn.set_num_threads(child_threads)
                except RuntimeError as e:
                    os.write(w, b"refused" if "spawn" in str(e) else b"badmsg")
                    os._exit(0)
                y, _ = layer(x)
                y1, _ = layer(x1)
                same = (np.allclose(y, want, rtol=1e-5, atol=1e-6)
                        and np.allclose(y1, want1, rtol=1e-5, atol=1e-6))
                os.write(w, b"same" if same else b"diff")
            finally:
                os._exit(0)
        os.close(w)
        deadline = time.monotonic() + 4
        status = "hang"
        while time.monotonic() < deadline:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                status = os.read(r, 16).decode() or "died"
                break
            time.sleep(0.02)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(r)
        report[label] = status
    return report


WORKERS = {"fuzz_layers": fuzz_layers, "fuzz_cells": fuzz_cells, "fuzz_stream": fuzz_stream,
           "memory": memory_worker, "fork": fork_worker}


# ================================================================ test side

def _run_worker(name, timeout=120, env=None):
    e = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    e.update(env or {})
    try:
        p = subprocess.run([sys.executable, os.path.abspath(__file__), name], cwd=ROOT,
                           capture_output=True, text=True, timeout=timeout, env=e)
    except subprocess.TimeoutExpired:
        pytest.fail(f"worker {name} hung (no result in {timeout} s)")
    assert p.returncode == 0, (f"worker {name} failed (rc {p.returncode}, a negative rc is a "
                               f"crash by signal):\n{p.stdout[-4000:]}\n{p.stderr[-6000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", ["fuzz_layers", "fuzz_cells", "fuzz_stream"])
def test_fuzz_only_documented_exceptions(name):
    counts = _run_worker(name)
    n = sum(v for k, v in counts.items() if k in ("ok", "TypeError", "ValueError", "RuntimeError",
                                                  "T0-ok", "T0-ValueError"))
    assert n >= EXAMPLES // 2, counts
    # the generator reached valid calls, both kinds of refusal and NaN input
    assert counts.get("ok", 0) > 10 and counts.get("TypeError", 0) > 3, counts
    assert counts.get("ValueError", 0) > 3, counts
    assert counts.get("nan-checked", 0) > 0, counts


def _torch_layer(torch, mode, layer, bidir):
    kw = dict(num_layers=layer.num_layers, bidirectional=bidir, dtype=torch.float64)
    if mode.startswith("RNN"):
        m = torch.nn.RNN(layer.input_size, layer.hidden_size,
                         nonlinearity="tanh" if mode == "RNN_TANH" else "relu", **kw)
    elif mode == "LSTM":
        m = torch.nn.LSTM(layer.input_size, layer.hidden_size, **kw)
    else:
        m = torch.nn.GRU(layer.input_size, layer.hidden_size, **kw)
    m.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    return m


@pytest.mark.parametrize("special", ["nan", "inf", "-inf", "big"])
@pytest.mark.parametrize("mode", ["RNN_TANH", "RNN_RELU", "GRU", "LSTM"])
def test_nonfinite_like_torch(mode, special):
    """NaN/inf in the input (and in hx) propagate exactly where torch's do."""
    from _oracle import require_torch
    torch = require_torch()
    for bidir in (False, True):
        layer = _make_layer(mode, 4, 5, 2, bidir, False, 0, np.float64, seed=1)
        x = np.random.default_rng(0).normal(size=(6, 3, 4))
        v = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "big": 1e300}[special]
        x[2, 0, 1] = v
        x[4, 2, :] = v
        y, hn = layer(x)
        with torch.no_grad():
            ty, thn = _torch_layer(torch, mode, layer, bidir)(torch.from_numpy(x))
        ty = ty.numpy()
        np.testing.assert_array_equal(np.isnan(y), np.isnan(ty), err_msg=f"{mode} bidir={bidir}")
        np.testing.assert_array_equal(np.isinf(y), np.isinf(ty))
        np.testing.assert_allclose(np.nan_to_num(y), np.nan_to_num(ty), rtol=1e-9, atol=1e-10)
    # NaN in the initial state
    layer = _make_layer(mode, 4, 5, 1, False, False, 0, np.float64, seed=1)
    x = np.random.default_rng(1).normal(size=(3, 2, 4))
    h0 = np.zeros((1, 2, 5))
    h0[0, 1, 2] = np.nan
    hx = (h0, np.zeros_like(h0)) if mode == "LSTM" else h0
    y, _ = layer(x, hx)
    with torch.no_grad():
        thx = tuple(torch.from_numpy(a) for a in hx) if mode == "LSTM" else torch.from_numpy(hx)
        ty, _ = _torch_layer(torch, mode, layer, False)(torch.from_numpy(x), thx)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ty.numpy()))


def test_memory_flat():
    r = _run_worker("memory", timeout=150, env={"PYRNN_NUM_THREADS": "1"})
    for key in ("after_calls", "after_steps"):
        growth = (r[key] - r["start"]) / r["start"]
        assert growth < 0.01, (f"resident memory grew {100 * growth:.2f}% "
                               f"({(r[key] - r['start']) * r['page'] // 1024} KiB) by {key}: {r}")


_MP_SNIPPET = textwrap.dedent("""
    import numpy as np
    def run(args):
        import pyrnn
        sd, x, threads = args
        pyrnn.set_num_threads(threads)
        layer = pyrnn.GRU(6, 12, num_layers=2, dtype=np.float64)
        layer.load_state_dict(sd)
        y, h = layer(x)
        return y, h
""")


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_multiprocessing_start_methods(method, tmp_path):
    import multiprocessing as mp
    import pyrnn
    (tmp_path / "_mp_job.py").write_text(_MP_SNIPPET)
    sys.path.insert(0, str(tmp_path))
    try:
        import _mp_job
        layer = pyrnn.GRU(6, 12, num_layers=2, dtype=np.float64, seed=4)
        sd = layer.state_dict()
        n = pyrnn.get_num_threads()
        xs = [np.random.default_rng(i).normal(size=(7, 16, 6)) for i in range(4)]
        layer(xs[0])                # OpenMP has run in the parent
        ctx = mp.get_context(method)
        old = os.environ.get("PYTHONPATH", "")
        os.environ["PYTHONPATH"] = os.pathsep.join([str(tmp_path), ROOT, old])
        try:
            with ctx.Pool(2) as pool:
                res = pool.map_async(_mp_job.run, [(sd, x, n) for x in xs]).get(timeout=60)
        finally:
            os.environ["PYTHONPATH"] = old
        for x, (y, h) in zip(xs, res):
            want_y, want_h = layer(x)
            np.testing.assert_array_equal(y, want_y)
            np.testing.assert_array_equal(h, want_h)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("_mp_job", None)


def test_fork_after_openmp_is_safe_or_refused():
    """After OpenMP threads ran, a forked child runs pyrnn on one thread (GNU libgomp
    cannot start threads after fork) and gives the parent's numbers; asking it for more
    threads is refused with a message pointing at spawn/forkserver. Checked in a
    subprocess with timeouts, so a hang fails the test instead of stalling it."""
    r = _run_worker("fork", timeout=60)
    assert r == {"default": "same", "one_thread": "same", "two_threads": "refused"}, r
    readme = open(os.path.join(ROOT, "README.md")).read()
    assert "spawn" in readme and "forkserver" in readme and "fork" in readme


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    print(json.dumps(WORKERS[sys.argv[1]]()))
