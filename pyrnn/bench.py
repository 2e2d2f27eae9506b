"""Side-by-side speed benchmark: ``pyrnn bench`` (or ``python -m pyrnn.bench``).

Runs pyrnn and its peers (PyTorch, ONNX Runtime, the NumPy reference) over a grid of
cells, shapes ``T:B:I:H``, modes and thread counts in ONE process. For each grid point
every peer is built once, warmed up and calibrated, then sampled round-robin (the
order rotating every round) so that machine noise hits all peers alike. The table shows
median milliseconds, GFLOP/s, percent of this machine's peak (measured in the same run at
the same thread count: the faster of scipy's BLAS sgemm and pyrnn's own packed product
kernel on a square problem) and ``peer_ms / pyrnn_ms``.

FLOPs per step and direction: ``2*B*(I+H)*G*H`` (G = 4, 3, 2, 1 for LSTM, GRU,
MinimalGRU, RNN); a training step (forward + backward with dx) counts 3x.

``--stream`` measures per-step latency at batch 1 instead (issue 6): a pyrnn stream
object (when ``pyrnn.stream`` exists), PyTorch's ``*Cell`` one step at a time under
``inference_mode`` and ONNX Runtime with sequence length 1 feeding the state back.

``--memory`` measures the peak extra memory of one training step instead (issue 3):
pyrnn against PyTorch, each (cell, shape, peer) in its own fresh interpreter, as VmHWM
minus VmRSS around the step with the peak reset just before it (/proc/self/clear_refs),
for the first step after building the model and for the second, and for the first step
in another process after a tiny warm-up step (the library's start-up then done).
``child_memory`` runs any such measurement.

Peers that are not installed are skipped with a note. ``build_onnx_model`` is reusable.
"""
import argparse
import contextlib
import gc
import json
import math
import os
import platform
import sys
import time

import numpy as np

from . import targets

DEFAULT_SHAPES = ((100, 1, 128, 128), (100, 1, 512, 512), (200, 16, 64, 64),
                  (100, 32, 256, 256), (100, 64, 512, 512), (50, 128, 1024, 1024))
QUICK_SHAPES = ((20, 1, 32, 32), (10, 8, 48, 48))
DEFAULT_PEERS = ("torch", "onnxruntime", "numpy")
PEER_ALIASES = {"torch": "torch", "pytorch": "torch", "onnxruntime": "onnxruntime",
                "ort": "onnxruntime", "onnx": "onnxruntime", "numpy": "numpy",
                "reference": "numpy"}
MODES = ("infer", "train")

# cell name -> reference mode string, gate count G, pyrnn class, torch layer, torch cell
CELLS = {
    "lstm": ("LSTM", 4, "LSTM", "LSTM", "LSTMCell"),
    "gru": ("GRU", 3, "GRU", "GRU", "GRUCell"),
    "rnn": ("RNN_TANH", 1, "RNN", "RNN", "RNNCell"),
    "mgru": ("MGRU", 2, "MinimalGRU", None, None),
    "gru_rb": ("GRU_RB", 3, "GRU", None, None),
}
# constructor arguments beyond (input_size, hidden_size) for cells that share a class
CELL_KWARGS = {"gru_rb": {"reset_after": False}}
CELL_ALIASES = {"minimalgru": "mgru", "minimal_gru": "mgru", "gru_reset_before": "gru_rb"}


def _pyrnn_layer(pyrnn, cell, input_size, hidden_size, **kw):
    """A fresh pyrnn layer of bench cell `cell`."""
    return getattr(pyrnn, CELLS[cell][2])(input_size, hidden_size,
                                         **CELL_KWARGS.get(cell, {}), **kw)


class Skip(Exception):
    """A peer cannot run this case; the message says why (shown as a note)."""


# --------------------------------------------------------------------------- FLOPs

def step_flops(cell, B, I, H):
    """Multiply-add FLOPs of one forward step of one direction."""
    return 2 * B * (I + H) * CELLS[cell][1] * H


def run_flops(cell, shape, mode):
    T, B, I, H = shape
    return T * step_flops(cell, B, I, H) * (3 if mode == "train" else 1)


# --------------------------------------------------------------------------- threads

def _blas_limits(n):
    """Context holding every loaded BLAS to n threads (threadpoolctl is optional)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=n, user_api="blas")


def sgemm_peak(threads, n=2048, repeats=3):
    """Best GFLOP/s of scipy.linalg.blas.sgemm on an n x n float32 problem with the
    given BLAS thread count (the BLAS pyrnn's core calls). Returns a dict with the
    figures; ``pyrnn bench`` measures it before and after the grid and keeps the best."""
    from scipy.linalg import blas
    rng = np.random.default_rng(0)
    a = np.asfortranarray(rng.standard_normal((n, n), dtype=np.float32))
    b = np.asfortranarray(rng.standard_normal((n, n), dtype=np.float32))
    c = np.zeros((n, n), np.float32, order="F")
    samples = []
    with _blas_limits(threads):
        blas.sgemm(1.0, a, b, beta=0.0, c=c, overwrite_c=True)
        for _ in range(repeats):
            t0 = time.perf_counter()
            blas.sgemm(1.0, a, b, beta=0.0, c=c, overwrite_c=True)
            samples.append(time.perf_counter() - t0)
    flop = 2.0 * n ** 3
    return {"n": n, "threads": threads, "samples_s": samples,
            "gflops": flop / min(samples) / 1e9}


def packed_peak(threads, n=2048, repeats=3):
    """Best GFLOP/s of pyrnn's own packed product kernel (the one its layers use
    for most products) on the same n x n problem, row blocks on `threads` Python
    threads (the kernel releases the GIL), weights packed beforehand. None when
    the core is not built or runs no SIMD."""
    pyrnn, _ = pyrnn_core()
    if pyrnn is None or not pyrnn._core.simd_active():
        return None
    import threading
    core = pyrnn._core
    rng = np.random.default_rng(0)
    P = core._pack(rng.standard_normal((n, n), dtype=np.float32))
    rows = [(n * i // threads, n * (i + 1) // threads) for i in range(threads)]
    blocks = [np.ascontiguousarray(rng.standard_normal((r1 - r0, n), dtype=np.float32))
              for r0, r1 in rows]
    outs = [np.empty((b.shape[0], n), np.float32) for b in blocks]

    def once():
        ts = [threading.Thread(target=core._gemm_prepacked, args=(b, P, n, c))
              for b, c in zip(blocks, outs)]
        t0 = time.perf_counter()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return time.perf_counter() - t0

    once()
    samples = [once() for _ in range(repeats)]
    return {"n": n, "threads": threads, "samples_s": samples,
            "gflops": 2.0 * n ** 3 / min(samples) / 1e9}


def _peak_text(pk):
    """'206.9 GFLOP/s (n=2048; BLAS sgemm 111.4, pyrnn's kernel 206.9)'."""
    text = f"{pk['gflops']:.1f} GFLOP/s (n={pk['n']}"
    if "packed_gflops" in pk:
        text += f"; BLAS sgemm {pk['blas_gflops']:.1f}, pyrnn's kernel {pk['packed_gflops']:.1f}"
    return text + ")"


def machine_peak(threads, n=2048, repeats=3):
    """The sgemm peak through scipy's BLAS and pyrnn's packed kernel; "gflops"
    is the higher one, the base of % peak (on a CPU whose 512-bit FMAs BLAS
    leaves unused, e.g. AMD Zen 5 with OpenBLAS's Haswell kernels, pyrnn's
    kernel is about twice as fast, and % of BLAS's peak would read above 100)."""
    pk = sgemm_peak(threads, n, repeats)
    pk["blas_gflops"] = pk["gflops"]
    own = packed_peak(threads, n, repeats)
    if own is not None:
        pk["packed_samples_s"] = own["samples_s"]
        pk["packed_gflops"] = own["gflops"]
        pk["gflops"] = max(pk["gflops"], own["gflops"])
    return pk


# --------------------------------------------------------------------------- pyrnn

def pyrnn_core():
    """(pyrnn, None) when the compiled layers import, else (None, reason)."""
    try:
        import pyrnn
        import pyrnn.layers  # noqa: F401  (the compiled core)
    except Exception as e:  # an unbuilt extension can fail in more ways than ImportError
        return None, f"pyrnn core not built yet ({type(e).__name__}: {e})"
    return pyrnn, None


def make_weights(cell, input_size, hidden_size, seed=0):
    """State dict (PyTorch names, float32) shared by all peers: a fresh pyrnn layer's
    ``state_dict()`` when the core is built, else the same U(-1/sqrt(H), 1/sqrt(H)) init."""
    pyrnn, _ = pyrnn_core()
    if pyrnn is not None:
        layer = _pyrnn_layer(pyrnn, cell, input_size, hidden_size, seed=seed)
        return {k: np.ascontiguousarray(v, np.float32) for k, v in layer.state_dict().items()}
    G, H = CELLS[cell][1], hidden_size
    k = 1.0 / math.sqrt(H)
    rng = np.random.default_rng(seed)
    shapes = {"weight_ih_l0": (G * H, input_size), "weight_hh_l0": (G * H, H),
              "bias_ih_l0": (G * H,), "bias_hh_l0": (G * H,)}
    return {name: rng.uniform(-k, k, s).astype(np.float32) for name, s in shapes.items()}


def make_inputs(shape, seed=0):
    """x (T, B, I) and dy (T, B, H), float32, C-contiguous."""
    T, B, I, H = shape
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((T, B, I), dtype=np.float32)
    dy = rng.standard_normal((T, B, H), dtype=np.float32)
    return x, dy


# --------------------------------------------------------------------------- ONNX

# torch gate blocks -> ONNX order. LSTM torch i,f,g,o -> ONNX i,o,f,c; GRU torch r,z,n -> z,r,h
_ONNX_PERM = {"LSTM": (0, 3, 1, 2), "GRU": (1, 0, 2), "GRU_RB": (1, 0, 2),
              "RNN_TANH": (0,), "RNN_RELU": (0,)}
_ONNX_OP = {"LSTM": "LSTM", "GRU": "GRU", "GRU_RB": "GRU", "RNN_TANH": "RNN", "RNN_RELU": "RNN"}


def _onnx_mode(mode):
    m = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN_TANH"}.get(mode, mode)
    if m == "MGRU" or m == "mgru":
        raise ValueError("mode: ONNX has no MinimalGRU operator")
    if m not in _ONNX_OP:
        raise ValueError(f"mode: expected one of {sorted(_ONNX_OP)}, got {mode!r}")
    return m


def _reorder(w, perm):
    blocks = np.split(np.asarray(w, dtype=np.float32), len(perm), axis=0)
    return np.concatenate([blocks[i] for i in perm], axis=0)


def build_onnx_model(mode, state_dict, input_size, hidden_size, num_layers=1,
                     bidirectional=False, with_state=False, opset=17):
    """Serialized ONNX model (bytes) computing the PyTorch layer with these weights.

    mode: "LSTM", "GRU" (reset after, PyTorch), "GRU_RB" (reset before), "RNN_TANH",
    "RNN_RELU" (or "lstm", "gru", "rnn"). state_dict: PyTorch names, values anything
    ``np.asarray`` takes; missing biases count as zero. Graph input ``X`` (T, B, I),
    outputs ``Y`` (T, B, D*H), ``Y_h`` (L*D, B, H) and for LSTM ``Y_c``. With
    ``with_state=True`` it also takes ``initial_h`` (and ``initial_c``) of shape
    (L*D, B, H), so a caller can feed the state back one step at a time.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    mode = _onnx_mode(mode)
    if any(k.startswith("weight_hr") for k in state_dict):
        raise ValueError("state_dict: ONNX LSTM has no projection (weight_hr_*)")
    perm, H, L = _ONNX_PERM[mode], int(hidden_size), int(num_layers)
    D = 2 if bidirectional else 1
    is_lstm = mode == "LSTM"
    G = len(perm)
    f32 = TensorProto.FLOAT
    nodes, inits = [], []

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    inputs = [helper.make_tensor_value_info("X", f32, ["T", "B", int(input_size)])]
    state_names = ["initial_h"] + (["initial_c"] if is_lstm else [])
    if with_state:
        inputs += [helper.make_tensor_value_info(s, f32, [L * D, "B", H]) for s in state_names]

    x, hs, cs = "X", [], []
    for k in range(L):
        W, R, Bias = [], [], []
        for d in range(D):
            s = f"_l{k}" + ("_reverse" if d else "")
            W.append(_reorder(state_dict["weight_ih" + s], perm))
            R.append(_reorder(state_dict["weight_hh" + s], perm))
            bi = state_dict.get("bias_ih" + s)
            bh = state_dict.get("bias_hh" + s)
            bi = np.zeros(G * H, np.float32) if bi is None else _reorder(bi, perm)
            bh = np.zeros(G * H, np.float32) if bh is None else _reorder(bh, perm)
            Bias.append(np.concatenate([bi, bh]))
        ins = [x, const(f"W{k}", np.stack(W)), const(f"R{k}", np.stack(R)),
               const(f"B{k}", np.stack(Bias)), ""]
        if with_state:
            for s in state_names:
                if L == 1:
                    ins.append(s)
                else:  # this layer's rows of the stacked state
                    out = f"{s}_{k}"
                    nodes.append(helper.make_node(
                        "Slice", [s, const(f"{out}_st", np.array([k * D], np.int64)),
                                  const(f"{out}_en", np.array([(k + 1) * D], np.int64)),
                                  const(f"{out}_ax", np.array([0], np.int64))], [out]))
                    ins.append(out)
        while ins and ins[-1] == "":
            ins.pop()
        outs = [f"Yr{k}", f"Yh{k}"] + ([f"Yc{k}"] if is_lstm else [])
        attrs = {"hidden_size": H, "direction": "bidirectional" if D == 2 else "forward"}
        if mode in ("GRU", "GRU_RB"):
            attrs["linear_before_reset"] = 1 if mode == "GRU" else 0
        if mode.startswith("RNN"):
            attrs["activations"] = ["Tanh" if mode == "RNN_TANH" else "Relu"] * D
        nodes.append(helper.make_node(_ONNX_OP[mode], ins, outs, **attrs))
        # Y is (T, D, B, H); the next layer and the caller want (T, B, D*H)
        y = "Y" if k == L - 1 else f"Y{k}"
        if D == 1:
            nodes.append(helper.make_node("Squeeze", [f"Yr{k}", const(f"sq{k}", np.array([1], np.int64))], [y]))
        else:
            nodes.append(helper.make_node("Transpose", [f"Yr{k}"], [f"Yt{k}"], perm=[0, 2, 1, 3]))
            nodes.append(helper.make_node("Reshape", [f"Yt{k}", const(f"rs{k}", np.array([0, 0, -1], np.int64))], [y]))
        x = y
        hs.append(f"Yh{k}")
        cs.append(f"Yc{k}")

    finals = [("Y_h", hs)] + ([("Y_c", cs)] if is_lstm else [])
    for name, parts in finals:
        if L == 1:
            nodes.append(helper.make_node("Identity", parts, [name]))
        else:
            nodes.append(helper.make_node("Concat", parts, [name], axis=0))
    outputs = [helper.make_tensor_value_info("Y", f32, ["T", "B", D * H])]
    outputs += [helper.make_tensor_value_info(n, f32, [L * D, "B", H]) for n, _ in finals]
    graph = helper.make_graph(nodes, f"pyrnn_{mode.lower()}", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="pyrnn.bench")
    model.ir_version = 8  # the IR of opset 17; older runtimes refuse newer IRs
    onnx.checker.check_model(model)
    return model.SerializeToString()


def ort_session(model_bytes, threads):
    """ONNX Runtime CPU session with ``threads`` intra-op threads."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------- runners

class Runner:
    """``fn()`` runs one timed unit; ``active()`` is a context entered around every
    sample (it sets this peer's thread count: the counts are process-global).
    Stream runners also have ``hidden()``: the current h as a NumPy array, so a test
    can check that the peers compute the same steps."""

    def __init__(self, fn, activate=None, hidden=None):
        self.fn = fn
        self._activate = activate
        self.hidden = hidden

    def active(self):
        cm = self._activate() if self._activate is not None else None
        # a thread setter may return a value (say, the old count): only contexts count
        return cm if hasattr(cm, "__enter__") else contextlib.nullcontext()


def _import(name):
    try:
        return __import__(name)
    except Exception as e:
        raise Skip(f"{name} not installed ({type(e).__name__})") from None


def _torch_threads(torch, n):
    def activate():
        torch.set_num_threads(n)
    return activate


def make_runner(peer, cell, shape, mode, threads, sd, x, dy):
    """Runner for one peer ("pyrnn", "torch", "onnxruntime", "numpy") on one case, or
    raise Skip. Every peer gets the same weights sd, input x and (training) output grad dy."""
    I, H = shape[2], shape[3]
    ref_mode, _, pyrnn_cls, torch_cls, _ = CELLS[cell]
    if peer == "pyrnn":
        pyrnn, why = pyrnn_core()
        if pyrnn is None:
            raise Skip(why)
        layer = _pyrnn_layer(pyrnn, cell, I, H)
        layer.load_state_dict(sd)
        if mode == "infer":
            def fn():
                layer(x)
        else:
            def fn():
                _, _, backward = layer.forward_train(x)
                backward(dy)
        return Runner(fn, lambda: pyrnn.set_num_threads(threads))

    if peer == "torch":
        torch = _import("torch")
        if torch_cls is None:
            raise Skip(f"torch has no {pyrnn_cls}")
        m = getattr(torch.nn, torch_cls)(I, H)
        m.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()})
        xt = torch.from_numpy(x.copy())
        if mode == "infer":
            def fn():
                with torch.inference_mode():
                    m(xt)
        else:
            xt.requires_grad_(True)  # so torch computes dx like pyrnn does
            dyt = torch.from_numpy(dy.copy())

            def fn():
                y, _ = m(xt)
                y.backward(dyt)
        return Runner(fn, _torch_threads(torch, threads))

    if peer == "onnxruntime":
        _import("onnx")
        _import("onnxruntime")
        if mode != "infer":
            raise Skip("onnxruntime: inference only")
        if ref_mode not in _ONNX_OP:
            raise Skip(f"onnxruntime: ONNX has no {pyrnn_cls} operator")
        sess = ort_session(build_onnx_model(ref_mode, sd, I, H), threads)
        feed = {"X": x}

        def fn():
            sess.run(None, feed)
        return Runner(fn)

    if peer == "numpy":
        try:
            from pyrnn import reference
            reference.layer_forward
        except Exception as e:
            raise Skip(f"numpy: pyrnn.reference.layer_forward not available ({type(e).__name__})") from None
        if mode == "infer":
            def fn():
                reference.layer_forward(ref_mode, sd, x)
        else:
            if not hasattr(reference, "layer_backward"):
                raise Skip("numpy: pyrnn.reference.layer_backward not available")

            def fn():
                _, _, cache = reference.layer_forward(ref_mode, sd, x)
                reference.layer_backward(cache, dy)
        return Runner(fn, lambda: _blas_limits(threads))

    raise ValueError(f"peer: expected one of pyrnn, torch, onnxruntime, numpy, got {peer!r}")


def _pyrnn_stream(pyrnn, layer, batch):
    """A pyrnn stream over ``layer`` with ``step(x_t)``, or Skip. The stream API is not
    fixed yet, so try the likely spellings and skip cleanly when none fits."""
    makers = []
    if hasattr(layer, "stream"):
        makers.append(lambda: layer.stream(batch_size=batch))
    try:
        import pyrnn.stream as mod
    except Exception as e:
        if not makers:
            raise Skip(f"pyrnn.stream not available ({type(e).__name__})") from None
        mod = None
    for name in ("Stream", "LayerStream", "stream"):
        factory = getattr(mod, name, None) if mod is not None else None
        if callable(factory):
            makers += [lambda f=factory: f(layer, batch_size=batch), lambda f=factory: f(layer, batch)]
    for make in makers:
        try:
            s = make()
        except TypeError:
            continue
        if hasattr(s, "step"):
            return s
    raise Skip("pyrnn.stream: no Stream(layer, batch_size) with .step(x_t) found")


def make_stream_runner(peer, cell, hidden, threads, sd, xs):
    """Runner whose ``fn()`` advances len(xs) single steps at batch 1, feeding the state
    back; xs is (K, 1, I)."""
    K, _, I = xs.shape
    H = hidden
    ref_mode, _, pyrnn_cls, _, torch_cell = CELLS[cell]
    is_lstm = ref_mode == "LSTM"
    if peer == "pyrnn":
        pyrnn, why = pyrnn_core()
        if pyrnn is None:
            raise Skip(why)
        layer = _pyrnn_layer(pyrnn, cell, I, H)
        layer.load_state_dict(sd)
        stream = _pyrnn_stream(pyrnn, layer, 1)
        steps = [np.ascontiguousarray(xs[t]) for t in range(K)]

        last = [None]

        def fn():
            for xt in steps:
                out = stream.step(xt)
            last[0] = out

        def hidden():  # the step's output is h for a single layer
            out = last[0]
            return np.asarray(out[0] if isinstance(out, tuple) else out)
        return Runner(fn, lambda: pyrnn.set_num_threads(threads), hidden)

    if peer == "torch":
        torch = _import("torch")
        if torch_cell is None:
            raise Skip(f"torch has no {pyrnn_cls} cell")
        m = getattr(torch.nn, torch_cell)(I, H)
        m.load_state_dict({k.replace("_l0", ""): torch.from_numpy(np.array(v)) for k, v in sd.items()})
        steps = [torch.from_numpy(np.array(xs[t])) for t in range(K)]
        state = [(torch.zeros(1, H), torch.zeros(1, H)) if is_lstm else torch.zeros(1, H)]

        def fn():
            with torch.inference_mode():
                s = state[0]
                for xt in steps:
                    s = m(xt, s)
                state[0] = s
        return Runner(fn, _torch_threads(torch, threads),
                      lambda: (state[0][0] if is_lstm else state[0]).numpy())

    if peer == "onnxruntime":
        _import("onnx")
        _import("onnxruntime")
        if ref_mode not in _ONNX_OP:
            raise Skip(f"onnxruntime: ONNX has no {pyrnn_cls} operator")
        sess = ort_session(build_onnx_model(ref_mode, sd, I, H, with_state=True), threads)
        steps = [np.ascontiguousarray(xs[t:t + 1]) for t in range(K)]
        names = ["Y_h", "Y_c"] if is_lstm else ["Y_h"]
        state = [np.zeros((1, 1, H), np.float32) for _ in names]

        def fn():
            s = state
            for xt in steps:
                feed = {"X": xt, "initial_h": s[0]}
                if is_lstm:
                    feed["initial_c"] = s[1]
                s = sess.run(names, feed)
            state[:] = s
        return Runner(fn, None, lambda: state[0][0])

    if peer == "numpy":
        try:
            from pyrnn import reference
            reference.cell_forward
        except Exception as e:
            raise Skip(f"numpy: pyrnn.reference.cell_forward not available ({type(e).__name__})") from None
        p = {k.replace("_l0", ""): v for k, v in sd.items()}
        steps = [np.ascontiguousarray(xs[t]) for t in range(K)]
        z = np.zeros((1, H), np.float32)
        state = [(z, z) if is_lstm else z]

        def fn():
            s = state[0]
            for xt in steps:
                s, _ = reference.cell_forward(ref_mode, p, xt, s)
            state[0] = s
        return Runner(fn, lambda: _blas_limits(threads), lambda: state[0][0] if is_lstm else state[0])

    raise ValueError(f"peer: expected one of pyrnn, torch, onnxruntime, numpy, got {peer!r}")


# --------------------------------------------------------------------------- timing

def _sample(runner, number):
    """Seconds per call of runner.fn over ``number`` back-to-back calls, GC off."""
    fn = runner.fn
    gc_was = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        return (time.perf_counter() - t0) / number
    finally:
        if gc_was:
            gc.enable()


def measure(runners, repeats, min_time, settle=0.0, warm=0.0):
    """Interleaved timing. runners: {name: Runner}. Each is warmed up and given a call
    count so one sample lasts about min_time; then ``repeats`` rounds sample every
    runner once, starting one later each round. With ``settle``, each sample follows
    a sleep of that many seconds and then, for peers whose call is shorter than
    ``warm`` seconds, untimed calls for ``warm`` seconds. Returns
    {name: (number, [s per call])}."""
    names = list(runners)
    numbers, per_call = {}, {}
    for name in names:
        r = runners[name]
        with r.active():
            r.fn()  # first call: lazy allocations, page faults, JIT of ORT kernels
            t = per_call[name] = _sample(r, 1)
        numbers[name] = max(1, min(100000, math.ceil(min_time / max(t, 1e-9))))
    samples = {name: [] for name in names}
    for rnd in range(repeats):
        for j in range(len(names)):
            name = names[(rnd + j) % len(names)]
            r = runners[name]
            if settle:
                # idle BLAS/OpenMP workers of the previous peer spin for up to ~0.1 s
                # and steal the cores from this one; let them go to sleep first
                time.sleep(settle)
            with r.active():
                if settle and per_call[name] < warm:
                    # after the sleep the cores take a few ms to come back to
                    # speed (measured: the first ~10 calls of 0.3 ms ran 1.5-3x
                    # slower, on 1 thread too); a long call amortises it itself
                    end = time.perf_counter() + warm
                    while time.perf_counter() < end:
                        r.fn()
                samples[name].append(_sample(r, numbers[name]))
    return {name: (numbers[name], samples[name]) for name in names}


# --------------------------------------------------------------------------- memory

MEMORY_PEERS = ("torch",)
_CLEAR_REFS = "/proc/self/clear_refs"
_MEM_MARK = "PYRNN-BENCH-MEMORY "
_MEM_ABORT = 3  # exit status of a child that cannot reset its peak

# The child: exec the peer's code (which defines step()), then twice: reset the peak
# RSS, read VmRSS, call step() keeping everything it returns, read VmHWM, drop it all.
# The reset comes BEFORE the VmRSS reading: the kernel then has VmHWM >= that reading,
# so "extra" cannot come out negative from pages freed between the two.
_MEM_CHILD = r'''
import gc, json, sys

def _status():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(rest.split()[0])
    return out

def _reset_peak(path):
    try:
        with open(path, "w") as f:
            f.write("5")
    except OSError as e:
        sys.stderr.write("cannot reset the peak RSS: writing 5 to %s failed: %s\n" % (path, e))
        sys.exit(__ABORT__)

clear_refs, code = sys.argv[1], sys.argv[2]
_reset_peak(clear_refs)  # fail before the (possibly slow) setup
ns = {"__name__": "__pyrnn_bench_memory__"}
exec(compile(code, "<memory step>", "exec"), ns)
step = ns["step"]
out = {}
for label in ("first", "steady"):
    gc.collect()
    _reset_peak(clear_refs)
    before = _status()
    keep = step()
    peak = _status()
    del keep
    gc.collect()
    out[label] = {"before_kib": before, "peak_kib": peak, "after_kib": _status()}
print(__MARK__ + json.dumps(out), flush=True)
'''.replace("__ABORT__", str(_MEM_ABORT)).replace("__MARK__", repr(_MEM_MARK))


class ClearRefsError(RuntimeError):
    """The peak RSS cannot be reset (no writable /proc/self/clear_refs)."""


def clear_refs_problem(path=None):
    """None when this process can reset its peak RSS through ``path`` (default
    /proc/self/clear_refs, Linux), else a message saying why not."""
    path = path or _CLEAR_REFS
    try:
        with open(path, "w") as f:
            f.write("5")
    except OSError as e:
        return (f"--memory resets the peak RSS by writing 5 to {path}, which failed "
                f"({e.strerror or e}); it needs Linux with a writable {path}")
    return None


def _pyrnn_root():
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child_memory(code, timeout=None):
    """Run ``code`` in a fresh interpreter (``sys.executable``, clean allocators) and
    measure its ``step()``. ``code`` must define ``step()``; what step() returns stays
    alive until the peak is read. Around the first and then a second call: reset the
    peak RSS (``/proc/self/clear_refs``), read VmRSS, call, read VmHWM.

    Returns {"first": {...}, "steady": {...}}, each with ``extra_mib`` (VmHWM minus
    VmRSS before the call), ``kept_mib`` (VmRSS after the call, its results dropped,
    minus before), ``base_mib`` (VmRSS before) and the raw /proc figures in KiB
    (``before_kib``, ``peak_kib``, ``after_kib``: VmRSS, VmHWM, RssAnon, RssFile, RssShmem).
    Raises ClearRefsError when the peak cannot be reset, RuntimeError when the child fails.
    """
    import subprocess
    env = dict(os.environ)
    # the child imports the same pyrnn as this process
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_pyrnn_root(), env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-c", _MEM_CHILD, _CLEAR_REFS, code],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env, timeout=timeout)
    if proc.returncode == _MEM_ABORT and "cannot reset the peak RSS" in proc.stderr:
        raise ClearRefsError(proc.stderr.strip().splitlines()[-1])
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(_MEM_MARK)]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"measuring child exited with status {proc.returncode}: {tail}")
    raw = json.loads(lines[-1][len(_MEM_MARK):])
    for fig in raw.values():
        b, p, a = fig["before_kib"], fig["peak_kib"], fig["after_kib"]
        fig["extra_mib"] = (p["VmHWM"] - b["VmRSS"]) / 1024.0
        fig["kept_mib"] = (a["VmRSS"] - b["VmRSS"]) / 1024.0
        fig["base_mib"] = b["VmRSS"] / 1024.0
    return raw


def memory_step_code(peer, cell, shape, threads=1, seed=0, warm_library=False):
    """Source for child_memory: one training step of ``peer`` ("pyrnn" or "torch") on
    a float32 single-layer ``cell`` of shape T:B:I:H, forward + backward with dx, or
    raise Skip. Both peers start each step in the same state: weights and weight
    gradients allocated and resident (pyrnn keeps ``grads`` and adds into them; torch
    gets ``.grad`` preset to zeros so it accumulates likewise), the same x and dy
    (make_inputs), and dx returned fresh (torch's ``x.grad`` is taken and cleared).

    warm_library: first run one training step of a separate 5:2:3:4 model of the same
    cell, so that the library's one-time start-up (code paged in, threads, engine
    state) is behind the measured steps; no pyrnn pool buffer is that small."""
    T, B, I, H = (int(v) for v in shape)
    _, _, pyrnn_cls, torch_cls, _ = CELLS[cell]
    kwargs = "".join(f", {k}={v!r}" for k, v in CELL_KWARGS.get(cell, {}).items())
    head = (f"import numpy as np\n"
            f"T, B, I, H = {T}, {B}, {I}, {H}\n"
            f"rng = np.random.default_rng({int(seed) + 1})  # as pyrnn.bench.make_inputs\n"
            f"x = rng.standard_normal((T, B, I), dtype=np.float32)\n"
            f"dy = rng.standard_normal((T, B, H), dtype=np.float32)\n")
    tail = ("\n" + ("make(np.ones((5, 2, 3), np.float32), np.ones((5, 2, 4), np.float32))()\n"
                    if warm_library else "") + "step = make(x, dy)\n")
    if peer == "pyrnn":
        _, why = pyrnn_core()
        if why:
            raise Skip(why)
        return head + f"""
import pyrnn
pyrnn.set_num_threads({int(threads)})


def make(x, dy):
    layer = pyrnn.{pyrnn_cls}(x.shape[2], dy.shape[2], dtype=np.float32, seed={int(seed)}{kwargs})
    for g in layer.grads.values():
        g[...] = 0  # np.zeros pages are not resident until written; torch's zeros are

    def step():
        y, h_n, backward = layer.forward_train(x)
        dx, dhx = backward(dy)
        return y, h_n, dx, dhx
    return step
""" + tail
    if peer == "torch":
        import importlib.util
        if importlib.util.find_spec("torch") is None:
            raise Skip("torch not installed")
        if torch_cls is None:
            raise Skip(f"torch has no {pyrnn_cls}")
        return head + f"""
import torch
torch.set_num_threads({int(threads)})
torch.manual_seed({int(seed)})


def make(x, dy):
    m = torch.nn.{torch_cls}(x.shape[2], dy.shape[2])
    for p in m.parameters():
        p.grad = torch.zeros_like(p)
    xt = torch.from_numpy(x).requires_grad_(True)  # so torch computes dx like pyrnn does
    dyt = torch.from_numpy(dy)

    def step():
        y, h_n = m(xt)
        y.backward(dyt)
        dx, xt.grad = xt.grad, None
        return y, h_n, dx
    return step
""" + tail
    raise ValueError(f"peer: expected pyrnn or torch, got {peer!r}")


def measure_memory(peer, cell, shape, threads=1, seed=0, timeout=None, warm=True):
    """Peak extra memory of one training step of ``peer``, in fresh processes:
    {"first_mib", "steady_mib", "kept_mib", "base_mib", "warm_first_mib", "raw",
    "raw_warm"}. first: around the very first training step after building the model
    (cold: includes the library's one-time start-up); steady: around the second step;
    kept: what the first step left resident once its results were dropped (pools,
    caches, malloc's retained heap, code); warm_first (when ``warm``, a second child):
    the first step of this model after a tiny step of another model, i.e. everything
    this shape needs without the library's start-up. Raises Skip when the peer cannot
    run, ClearRefsError / RuntimeError when the measurement fails."""
    raw = child_memory(memory_step_code(peer, cell, shape, threads, seed), timeout)
    out = {"first_mib": raw["first"]["extra_mib"], "steady_mib": raw["steady"]["extra_mib"],
           "kept_mib": raw["first"]["kept_mib"], "base_mib": raw["first"]["base_mib"],
           "warm_first_mib": None, "raw": raw, "raw_warm": None}
    if warm:
        rw = child_memory(memory_step_code(peer, cell, shape, threads, seed, True), timeout)
        out["warm_first_mib"] = rw["first"]["extra_mib"]
        out["raw_warm"] = rw
    return out


def _run_memory(a, notes, log):
    out = []
    for threads in a.threads:
        for cell in a.cells:
            for shape in a.shapes:
                entry = {"cell": cell, "shape": list(shape), "T": shape[0], "B": shape[1],
                         "I": shape[2], "H": shape[3], "threads": threads,
                         "peers": {}, "skipped": {}, "ratio": {}}
                for peer in ("pyrnn",) + MEMORY_PEERS:
                    try:
                        fig = measure_memory(peer, cell, shape, threads, a.seed)
                    except Skip as e:
                        entry["skipped"][peer] = str(e)
                        _note(notes, str(e))
                        continue
                    except ClearRefsError:
                        raise
                    except (RuntimeError, OSError) as e:
                        msg = f"{peer}: {cell} {':'.join(map(str, shape))}: {e}"
                        entry["skipped"][peer] = msg
                        _note(notes, msg)
                        continue
                    entry["peers"][peer] = fig
                    log(f"memory {cell} {':'.join(map(str, shape))} t{threads} {peer}: "
                        f"first {fig['first_mib']:.1f} MiB, warm first {fig['warm_first_mib']:.1f} "
                        f"MiB, steady {fig['steady_mib']:.1f} MiB")
                got = entry["peers"]
                if "pyrnn" in got:
                    for peer in MEMORY_PEERS:
                        if peer in got:
                            # peer MiB / pyrnn MiB: > 1 means pyrnn uses less
                            entry["ratio"][peer] = {
                                k: (got[peer][k] / got["pyrnn"][k]
                                    if got[peer][k] is not None and (got["pyrnn"][k] or 0) > 0
                                    else None)
                                for k in ("first_mib", "warm_first_mib", "steady_mib")}
                out.append(entry)
    return out


# --------------------------------------------------------------------------- CLI

def _csv(s):
    return [p.strip() for p in s.split(",") if p.strip()]


def _parse_shapes(s):
    shapes = []
    for item in _csv(s):
        parts = item.split(":")
        try:
            dims = tuple(int(p) for p in parts)
        except ValueError:
            dims = ()
        if len(dims) != 4 or min(dims) < 1:
            raise argparse.ArgumentTypeError(
                f"--shapes: expected T:B:I:H with positive integers, got {item!r}")
        shapes.append(dims)
    if not shapes:
        raise argparse.ArgumentTypeError("--shapes: expected at least one T:B:I:H")
    return shapes


def _parse_ints(name):
    def parse(s):
        try:
            v = [int(p) for p in _csv(s)]
        except ValueError:
            v = []
        if not v or min(v) < 1:
            raise argparse.ArgumentTypeError(f"{name}: expected positive integers like 1,2, got {s!r}")
        return v
    return parse


def _parse_choice(name, choices, aliases=None):
    def parse(s):
        out = []
        for p in _csv(s):
            key = (aliases or {}).get(p.lower(), p.lower())
            if key not in choices:
                raise argparse.ArgumentTypeError(
                    f"{name}: expected some of {', '.join(choices)}, got {p!r}")
            if key not in out:
                out.append(key)
        if not out:
            raise argparse.ArgumentTypeError(f"{name}: expected at least one of {', '.join(choices)}")
        return out
    return parse


def _parser():
    p = argparse.ArgumentParser(
        prog="pyrnn bench",
        description="Time pyrnn against PyTorch, ONNX Runtime and the NumPy reference, "
                    "side by side in one process.")
    p.add_argument("--cells", type=_parse_choice("--cells", list(CELLS), CELL_ALIASES),
                   default=None, help="comma list of lstm,gru,rnn,mgru,gru_rb (default lstm,gru,rnn)")
    p.add_argument("--shapes", type=_parse_shapes, default=None,
                   help="comma list of T:B:I:H (default: the issue-3 grid)")
    p.add_argument("--threads", type=_parse_ints("--threads"), default=None,
                   help="comma list of thread counts (default 1,2; --quick: 1)")
    p.add_argument("--peers", type=_parse_choice("--peers", sorted(set(PEER_ALIASES.values())), PEER_ALIASES),
                   default=list(DEFAULT_PEERS),
                   help="comma list of torch,onnxruntime,numpy (pyrnn always runs when built)")
    p.add_argument("--mode", type=_parse_choice("--mode", list(MODES)), default=list(MODES),
                   help="infer,train (default both); ignored with --stream")
    p.add_argument("--repeats", type=int, default=None,
                   help="interleaved samples per peer (default 7; --quick: 3)")
    p.add_argument("--min-time", type=float, default=None,
                   help="seconds per sample; calls are repeated to reach it (default 0.05; --quick 0.005)")
    p.add_argument("--settle", type=float, default=None,
                   help="seconds of sleep before each sample when threads > 1, so the previous "
                        "peer's spinning worker threads go idle (default 0.15)")
    p.add_argument("--warm", type=float, default=None,
                   help="after each settle sleep, seconds of untimed calls of the peer about to "
                        "be sampled, so its cores are back to speed; only for calls shorter "
                        "than this (default 0.02)")
    p.add_argument("--numpy-max-gflop", type=float, default=0.5,
                   help="run the slow NumPy reference only where a call is at most this many "
                        "GFLOP (default 0.5, i.e. the small shapes)")
    p.add_argument("--sgemm-n", type=int, default=None,
                   help="size of the square sgemm that measures the peak (default 2048; --quick 512)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="FILE", help="write every sample and derived figure as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="bar chart of GFLOP/s (needs matplotlib)")
    p.add_argument("--quick", action="store_true", help="tiny grid for smoke tests")
    p.add_argument("--stream", action="store_true",
                   help="per-step streaming latency at batch 1 instead of the grid (issue 6)")
    p.add_argument("--memory", action="store_true",
                   help="peak extra memory of one training step, pyrnn against torch, one fresh "
                        "process per peer and shape (issue 3); --peers and --mode do not apply; "
                        "default --threads 1")
    p.add_argument("--stream-hidden", type=_parse_ints("--stream-hidden"), default=None,
                   help="hidden sizes for --stream (I = H; default 128,256,512; --quick 32)")
    p.add_argument("--stream-steps", type=int, default=None,
                   help="steps per timed call in --stream (default 100; --quick 10)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--compare", nargs="+", metavar="FILE",
                   help="runs nothing: the targets of two or more --json files side by side "
                        "(those not met in every run, and counts)")
    return p


def _versions():
    out = {"python": platform.python_version(), "numpy": np.__version__}
    for name in ("scipy", "torch", "onnxruntime", "onnx"):
        try:
            out[name] = __import__(name).__version__
        except Exception:
            out[name] = None
    try:
        import pyrnn
        out["pyrnn"] = pyrnn.__version__
    except Exception:
        out["pyrnn"] = None
    return out


def _machine():
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = None
    try:
        from . import _core
        simd = _core.simd_level()
    except ImportError:
        simd = None
    return {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "usable_cpus": usable, "loadavg_1min": load, "simd": simd}


def _busy_note(machine):
    # other processes on the cores distort every figure; say so next to them. Checked
    # before the run only: during it, the load average counts this process too
    load = machine.get("loadavg_1min")
    cpus = machine.get("usable_cpus") or 1
    if load is not None and load > cpus * 0.75 + 0.5:
        return (f"machine busy: 1-minute load average {load:.1f} on {cpus} CPUs; "
                "other processes share the cores, so the figures are noisy")
    return None


def _summary(number, secs, flop, peak):
    ms = [s * 1e3 for s in secs]
    med = float(np.median(ms))
    gflops = flop / (med * 1e-3) / 1e9
    return {"number": number, "samples_ms": ms, "median_ms": med, "min_ms": min(ms),
            "gflops": gflops, "pct_peak": 100.0 * gflops / peak if peak else None}


def _note(notes, text):
    if text not in notes:
        notes.append(text)


def _raise_peaks(results, peaks, notes):
    """Where a timed call of the grid ran faster than the sgemm peak measured
    before and after it, the machine was busy at both measurements (run 3 of
    2026-12-07 took 136.5 GFLOP/s for 2 threads, against 167-170 in the runs
    around it, and reported 102-113% of it): % of peak is then taken of that
    call's rate, a bound the machine reached, so it never reads above 100.
    The measured figure stays in peaks[t]["measured_gflops"], and a note says so."""
    for t, pk in peaks.items():
        best = max((fig["gflops"] for e in results if str(e["threads"]) == t
                    for fig in e["peers"].values()), default=0.0)
        if best > pk["gflops"]:
            _note(notes, f"{t} thread(s): a timed call ran at {best:.1f} GFLOP/s, above the "
                         f"sgemm peak measured before and after the grid ({pk['gflops']:.1f}: "
                         f"the machine was busy then); % of peak is taken of {best:.1f}")
            pk["measured_gflops"] = pk["gflops"]
            pk["gflops"] = best


def _run_grid(a, peers, notes, peaks, log):
    results = []
    for threads in a.threads:
        peak = peaks[str(threads)]["gflops"]
        for cell in a.cells:
            for shape in a.shapes:
                sd = make_weights(cell, shape[2], shape[3], a.seed)
                x, dy = make_inputs(shape, a.seed)
                for mode in a.mode:
                    flop = run_flops(cell, shape, mode)
                    runners, skipped = {}, {}
                    for peer in ["pyrnn"] + peers:
                        try:
                            if peer == "numpy" and flop / (3 if mode == "train" else 1) > a.numpy_max_gflop * 1e9:
                                raise Skip(f"numpy: skipped above {a.numpy_max_gflop} GFLOP per call "
                                           "(see --numpy-max-gflop)")
                            runners[peer] = make_runner(peer, cell, shape, mode, threads, sd, x, dy)
                        except Skip as e:
                            skipped[peer] = str(e)
                            _note(notes, str(e))
                    log(f"{cell} {':'.join(map(str, shape))} {mode} t{threads}: "
                        f"{', '.join(runners) or 'nothing to run'}")
                    timed = measure(runners, a.repeats, a.min_time, a.settle if threads > 1 else 0.0,
                                    a.warm) if runners else {}
                    entry = {"cell": cell, "shape": list(shape), "T": shape[0], "B": shape[1],
                             "I": shape[2], "H": shape[3], "mode": mode, "threads": threads,
                             "flop": flop, "peers": {}, "skipped": skipped, "ratio": {}}
                    for peer, (number, secs) in timed.items():
                        entry["peers"][peer] = _summary(number, secs, flop, peak)
                    _ratios(entry, "median_ms")
                    results.append(entry)
                    del runners, timed
    return results


def stream_throughput(cell, H, n_streams=4, steps=200, repeats=5, seed=0, min_time=0.05):
    """Steps per second of n_streams batch-1 streams sharing one pyrnn layer,
    stepped by one Python thread, then by two (half the streams each), with
    pyrnn on one thread per step so that each Python thread has a core.
    A sample makes every stream take `steps` steps `rounds` times, enough
    rounds for one thread to take min_time seconds; its clock starts once the
    worker threads are up and waiting at a barrier, so thread start-up is not
    timed (with 200 steps of 4 H = 128 streams, 4 ms a sample, it was: GRU's
    ratio read 1.04-1.42 there, 1.77 over 2,000 steps). Medians of `repeats`
    interleaved samples."""
    import threading

    import pyrnn
    from pyrnn.stream import Stream
    sd = make_weights(cell, H, H, seed)
    layer = _pyrnn_layer(pyrnn, cell, H, H)
    layer.load_state_dict(sd)
    xs = np.random.default_rng(seed + 3).standard_normal((steps, H), dtype=np.float32)
    before = pyrnn.get_num_threads()
    pyrnn.set_num_threads(1)

    def work(streams, rounds):
        for _ in range(rounds):
            for t in range(steps):
                for st in streams:
                    st.step(xs[t])

    def sample(n_threads, rounds):
        streams = [Stream(layer, 1) for _ in range(n_streams)]
        work(streams, 1)                                # warm up
        parts = [streams[k::n_threads] for k in range(n_threads)]
        barrier = threading.Barrier(n_threads + 1, timeout=600)
        errors = []

        def worker(part):
            barrier.wait()
            try:
                work(part, rounds)
            except BaseException as e:      # re-raised below: no rate from failed steps
                errors.append(e)

        ths = [threading.Thread(target=worker, args=(p,)) for p in parts]
        for th in ths:
            th.start()
        barrier.wait()
        t0 = time.perf_counter()
        for th in ths:
            th.join()
        elapsed = time.perf_counter() - t0
        if errors:
            raise errors[0]
        return n_streams * steps * rounds / elapsed

    try:
        rounds = max(1, math.ceil(min_time * sample(1, 1) / (n_streams * steps)))
        got = {1: [], 2: []}
        for _ in range(repeats):
            for n in (1, 2):
                got[n].append(sample(n, rounds))
    finally:
        pyrnn.set_num_threads(before)
    one, two = float(np.median(got[1])), float(np.median(got[2]))
    return {"cell": cell, "hidden": H, "streams": n_streams, "steps": steps, "rounds": rounds,
            "samples_steps_per_s": {"1": got[1], "2": got[2]},
            "steps_per_s_1": one, "steps_per_s_2": two, "ratio": two / one}


def format_throughput(entries):
    rows = [[e["cell"], e["hidden"], e["streams"], f"{e['steps_per_s_1']:.0f}",
             f"{e['steps_per_s_2']:.0f}", f"{e['ratio']:.2f}"] for e in entries]
    return (_table(rows, ["cell", "H", "streams", "steps/s 1 thread", "steps/s 2 threads",
                          "x"])
            + "\n\nmany streams on one shared layer, stepped from 1 or 2 Python threads "
              "(pyrnn on 1 thread per step); x = 2 threads / 1 thread.")


def _ratios(entry, key):
    # peer time / pyrnn time: > 1 means pyrnn is faster
    got = entry["peers"]
    if "pyrnn" not in got:
        return
    base = got["pyrnn"][key]
    others = {p: v[key] for p, v in got.items() if p != "pyrnn"}
    for p, v in others.items():
        entry["ratio"][p] = v / base
    if others:
        best = min(others, key=others.get)
        entry["best_peer"] = best
        entry["ratio_best"] = others[best] / base


def _run_stream(a, peers, notes, log):
    out = []
    K = a.stream_steps
    for threads in a.threads:
        for cell in a.cells:
            for H in a.stream_hidden:
                sd = make_weights(cell, H, H, a.seed)
                xs = np.random.default_rng(a.seed + 2).standard_normal((K, 1, H), dtype=np.float32)
                runners, skipped = {}, {}
                for peer in ["pyrnn"] + peers:
                    try:
                        runners[peer] = make_stream_runner(peer, cell, H, threads, sd, xs)
                    except Skip as e:
                        skipped[peer] = str(e)
                        _note(notes, str(e))
                log(f"stream {cell} H={H} t{threads}: {', '.join(runners) or 'nothing to run'}")
                timed = measure(runners, a.repeats, a.min_time, a.settle if threads > 1 else 0.0,
                                a.warm) if runners else {}
                entry = {"cell": cell, "input": H, "hidden": H, "batch": 1, "threads": threads,
                         "steps_per_call": K, "peers": {}, "skipped": skipped, "ratio": {}}
                for peer, (number, secs) in timed.items():
                    us = [s / K * 1e6 for s in secs]
                    entry["peers"][peer] = {"number": number, "samples_us": us,
                                            "median_us": float(np.median(us)), "min_us": min(us)}
                _ratios(entry, "median_us")
                out.append(entry)
    return out


def _table(rows, header):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    fmt = lambda r: "  ".join(str(c).rjust(w) if i else str(c).ljust(w)  # noqa: E731
                              for i, (c, w) in enumerate(zip(r, widths)))
    lines = [fmt(header), "  ".join("-" * w for w in widths)]
    return "\n".join(lines + [fmt(r) for r in rows])


def _f(v, spec):
    return "-" if v is None else format(v, spec)


def format_grid(results, peers, peaks):
    """The results table as text (one row per cell, shape, mode and thread count)."""
    names = ["pyrnn"] + peers
    header = (["cell", "T:B:I:H", "mode", "thr"] + [f"{n} ms" for n in names]
              + ["GFLOP/s", "%peak"] + [f"x{n}" for n in peers] + ["xbest"])
    rows = []
    for e in results:
        got = e["peers"]
        # throughput of pyrnn, or of the fastest peer (marked *) while pyrnn is missing
        if "pyrnn" in got:
            who, star = "pyrnn", ""
        elif got:
            who, star = min(got, key=lambda p: got[p]["median_ms"]), "*"
        else:
            who, star = None, ""
        rows.append([e["cell"], ":".join(map(str, e["shape"])), e["mode"], e["threads"]]
                    + [_f(got[n]["median_ms"], ".3f") if n in got else "-" for n in names]
                    + [(_f(got[who]["gflops"], ".1f") + star) if who else "-",
                       (_f(got[who]["pct_peak"], ".0f") + star) if who else "-"]
                    + [_f(e["ratio"].get(n), ".2f") for n in peers]
                    + [_f(e.get("ratio_best"), ".2f")])
    text = _table(rows, header)
    text += "\n\npeak (%peak's base): " + "; ".join(
        f"{t} thread{'s' if t != '1' else ''} {_peak_text(v)}" for t, v in peaks.items())
    text += "\nxPEER = PEER ms / pyrnn ms (> 1: pyrnn faster); xbest against the fastest peer."
    if any("pyrnn" not in e["peers"] and e["peers"] for e in results):
        text += "\n* pyrnn did not run: GFLOP/s and %peak are the fastest peer's."
    return text


def format_stream(entries, peers):
    names = ["pyrnn"] + peers
    header = ["cell", "H", "thr"] + [f"{n} us/step" for n in names] + [f"x{n}" for n in peers]
    rows = [[e["cell"], e["hidden"], e["threads"]]
            + [_f(e["peers"][n]["median_us"], ".2f") if n in e["peers"] else "-" for n in names]
            + [_f(e["ratio"].get(n), ".2f") for n in peers] for e in entries]
    return (_table(rows, header) + "\n\nper-step latency at batch 1, I = H, state fed back each "
            "step; xPEER = PEER us / pyrnn us (> 1: pyrnn faster).")


def format_memory(entries):
    names = ("pyrnn",) + MEMORY_PEERS
    kinds = (("first", "first"), ("warm_first", "warm"), ("steady", "steady"), ("kept", "kept"))
    ratios = (("first", "first"), ("warm_first", "warm"), ("steady", "steady"))
    header = (["cell", "T:B:I:H", "thr"]
              + [f"{n} {label}" for n in names for _, label in kinds]
              + [f"x{n} {label}" for n in MEMORY_PEERS for _, label in ratios])
    rows = []
    for e in entries:
        got = e["peers"]
        row = [e["cell"], ":".join(map(str, e["shape"])), e["threads"]]
        for n in names:
            row += [_f(got[n][f"{k}_mib"], ".1f") if n in got else "-" for k, _ in kinds]
        for n in MEMORY_PEERS:
            r = e["ratio"].get(n, {})
            row += [_f(r.get(f"{k}_mib"), ".2f") for k, _ in ratios]
        rows.append(row)
    return (_table(rows, header) + "\n\nMiB of peak extra memory of one training step (forward "
            "+ backward with dx, float32), fresh processes: VmHWM minus VmRSS before the step, "
            "the peak reset just before it. first: the very first step after building the model "
            "(cold, includes the library's one-time start-up); warm: the same in another process "
            "after one tiny 5:2:3:4 step of another model; steady: the second step; kept: "
            "resident after the first step once its results are dropped (pools, caches, malloc's "
            "heap, code). xPEER = PEER MiB / pyrnn MiB (> 1: pyrnn uses less).")


def plot(results, peaks, path):
    """GFLOP/s per peer, one panel per (mode, threads), sgemm peak dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = sorted({(e["mode"], e["threads"]) for e in results})
    fig, axes = plt.subplots(len(panels), 1, figsize=(12, 3.5 * max(1, len(panels))), squeeze=False)
    for ax, (mode, threads) in zip(axes[:, 0], panels):
        sel = [e for e in results if e["mode"] == mode and e["threads"] == threads]
        peers = sorted({p for e in sel for p in e["peers"]}, key=lambda p: (p != "pyrnn", p))
        xs = np.arange(len(sel))
        w = 0.8 / max(1, len(peers))
        for i, p in enumerate(peers):
            ax.bar(xs + i * w, [e["peers"][p]["gflops"] if p in e["peers"] else 0 for e in sel], w, label=p)
        ax.axhline(peaks[str(threads)]["gflops"], ls="--", c="k", lw=1, label="peak")
        ax.set_xticks(xs + 0.4 - w / 2)
        ax.set_xticklabels([f"{e['cell']}\n{':'.join(map(str, e['shape']))}" for e in sel], fontsize=7)
        ax.set_ylabel("GFLOP/s")
        ax.set_title(f"{mode}, {threads} thread{'s' if threads > 1 else ''}")
        ax.legend(fontsize=7, ncol=len(peers) + 1)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _check_targets(report, a, check):
    """Run check(rate) (pyrnn.targets) with read rates measured now, after the
    timings; store the targets and rates in the report; return their table."""
    if any(t > 1 for t in a.threads):
        time.sleep(a.settle)    # the peers' idle workers must not share the cores
    rate = targets.Rates(lambda n, t: targets.read_rate(n, t, min_time=a.min_time / 5))
    report["targets"] = check(rate)
    report["read_rate"] = rate.table
    return "\n\n" + targets.format_targets(report["targets"])


def _compare(files):
    """``--compare``: print the targets of saved runs side by side; 2 on bad files."""
    from . import targets
    if len(files) < 2:
        print("pyrnn bench: --compare: expected two or more --json files, got "
              f"{len(files)}", file=sys.stderr)
        return 2
    runs = []
    for f in files:
        try:
            with open(f, encoding="utf-8") as fh:
                report = json.load(fh)
        except (OSError, ValueError) as e:
            print(f"pyrnn bench: --compare: cannot read {f}: {e}", file=sys.stderr)
            return 2
        ts = report.get("targets") if isinstance(report, dict) else None
        if not isinstance(ts, list) or not ts:
            print(f"pyrnn bench: --compare: {f} has no list of targets (a report of "
                  "pyrnn bench --json, grid or --stream, has one)", file=sys.stderr)
            return 2
        runs.append(ts)
    try:
        text = targets.format_compare([os.path.basename(f) for f in files], targets.compare(runs))
    except (KeyError, TypeError, ValueError) as e:
        print(f"pyrnn bench: --compare: a target in {', '.join(files)} is not one that "
              f"pyrnn bench writes ({type(e).__name__}: {e})", file=sys.stderr)
        return 2
    print(text)
    return 0


def main(argv=None):
    """Entry point of ``pyrnn bench``; returns the exit status."""
    try:
        a = _parser().parse_args(argv)
    except SystemExit as e:  # --help or a bad option: argparse has printed why
        return int(e.code or 0)
    if a.compare is not None:
        return _compare(a.compare)
    if a.repeats is not None and a.repeats < 1:
        print("pyrnn bench: --repeats: expected a positive integer", file=sys.stderr)
        return 2
    if a.stream and a.memory:
        print("pyrnn bench: --stream and --memory are separate runs; choose one", file=sys.stderr)
        return 2
    if a.memory:
        why = clear_refs_problem()
        if why:
            print(f"pyrnn bench: {why}", file=sys.stderr)
            return 2
    if a.plot:
        if a.stream or a.memory:
            print("pyrnn bench: --plot draws the grid; it is not available with "
                  f"{'--stream' if a.stream else '--memory'}", file=sys.stderr)
            return 2
        try:  # fail before a long run, not after it
            import matplotlib  # noqa: F401
        except ImportError:
            print("pyrnn bench: --plot needs matplotlib, which is not installed "
                  "(pip install matplotlib, or pyrnn[plot])", file=sys.stderr)
            return 2
    q = a.quick
    a.cells = a.cells or ["lstm", "gru", "rnn"]
    a.shapes = a.shapes or list(QUICK_SHAPES if q else DEFAULT_SHAPES)
    a.threads = a.threads or ([1] if q or a.memory else [1, 2])
    a.repeats = a.repeats or (3 if q else 7)
    a.min_time = a.min_time if a.min_time is not None else (0.005 if q else 0.05)
    a.settle = a.settle if a.settle is not None else 0.15
    a.warm = a.warm if a.warm is not None else 0.02
    a.sgemm_n = a.sgemm_n or (512 if q else 2048)
    a.stream_hidden = a.stream_hidden or ([32] if q else [128, 256, 512])
    a.stream_steps = a.stream_steps or (10 if q else 100)
    peers = list(MEMORY_PEERS) if a.memory else [p for p in a.peers if p != "pyrnn"]
    log = (lambda s: None) if a.quiet else (lambda s: print(s, file=sys.stderr, flush=True))

    notes = []
    _, why = pyrnn_core()
    if why:
        _note(notes, why)
    machine = _machine()
    busy = _busy_note(machine)
    if busy:
        _note(notes, busy)
        log(busy)
    peaks = {}
    for t in ([] if a.memory else a.threads):  # the memory run has no use for the peak
        peaks[str(t)] = machine_peak(t, a.sgemm_n, repeats=2 if q else 3)
        log(f"peak, {t} thread(s): {_peak_text(peaks[str(t)])}")
    if peaks and any(t > 1 for t in a.threads):
        time.sleep(a.settle)  # scipy's BLAS workers spin after the sgemm

    kind = "stream" if a.stream else "memory" if a.memory else "grid"
    report = {"schema": 1, "kind": kind,
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "command": "pyrnn bench " + " ".join(sys.argv[1:] if argv is None else argv),
              "machine": machine, "versions": _versions(),
              "settings": {"cells": a.cells, "shapes": [list(s) for s in a.shapes],
                           "threads": a.threads, "peers": peers,
                           "modes": ["train"] if a.memory else a.mode,
                           "repeats": a.repeats, "min_time": a.min_time, "settle": a.settle, "warm": a.warm,
                           "numpy_max_gflop": a.numpy_max_gflop, "seed": a.seed,
                           "stream_hidden": a.stream_hidden if a.stream else None,
                           "stream_steps": a.stream_steps if a.stream else None,
                           "flops": "2*B*(I+H)*G*H per step, G = 4 LSTM, 3 GRU, 2 MinimalGRU, "
                                    "1 RNN; training x3"},
              "sgemm_peak": peaks, "notes": notes, "results": [], "stream": [], "memory": [],
              "targets": [], "read_rate": []}
    if a.memory:
        report["settings"]["memory"] = (
            "VmHWM - VmRSS around one training step in a fresh process per peer and shape; "
            "peak reset by writing 5 to /proc/self/clear_refs just before the step")
        try:
            report["memory"] = _run_memory(a, notes, log)
        except ClearRefsError as e:
            print(f"pyrnn bench: {e}", file=sys.stderr)
            return 2
        text = format_memory(report["memory"])
    elif a.stream:
        report["stream"] = _run_stream(a, peers, notes, log)
        text = format_stream(report["stream"], peers)
        if pyrnn_core()[0] is not None:
            report["stream_throughput"] = []
            for cell in a.cells:
                for H in a.stream_hidden:
                    log(f"stream throughput {cell} H={H}: 1 and 2 Python threads")
                    report["stream_throughput"].append(stream_throughput(
                        cell, H, steps=a.stream_steps * 2, repeats=a.repeats, seed=a.seed,
                        min_time=a.min_time))
            text += "\n\n" + format_throughput(report["stream_throughput"])
            text += _check_targets(report, a, lambda rate: targets.stream_targets(
                report["stream"], report["stream_throughput"], peaks, rate))
    else:
        report["results"] = _run_grid(a, peers, notes, peaks, log)
        # measure the peak again: a busy moment at the start must not inflate %peak
        for t in a.threads:
            again = machine_peak(t, a.sgemm_n, repeats=2 if q else 3)
            pk = peaks[str(t)]
            for key in ("samples_s", "packed_samples_s"):
                if key in again:
                    pk[key] = pk.get(key, []) + again[key]
            for key in ("gflops", "blas_gflops", "packed_gflops"):
                if key in again:
                    pk[key] = max(pk.get(key, 0.0), again[key])
        _raise_peaks(report["results"], peaks, notes)
        for e in report["results"]:
            peak = peaks[str(e["threads"])]["gflops"]
            for fig in e["peers"].values():
                fig["pct_peak"] = 100.0 * fig["gflops"] / peak
        text = format_grid(report["results"], peers, peaks)
        if pyrnn_core()[0] is not None:
            text += _check_targets(report, a, lambda rate: targets.grid_targets(
                report["results"], peaks, rate))
    if machine["simd"]:
        text += f"\npyrnn gate kernels: {machine['simd']} (PYRNN_SIMD=scalar|avx2 lowers it)"
    print(text)
    if notes:
        print("\nnotes:\n" + "\n".join("  - " + n for n in notes))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)
        log(f"wrote {a.json}")
    if a.plot:
        plot(report["results"], peaks, a.plot)
        log(f"wrote {a.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
