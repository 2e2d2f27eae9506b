"""`pyrnn bench`: the CLI runs and reports sound figures, and the ONNX peer computes
the same function as PyTorch (otherwise its timings would compare different work).

These tests assert numbers and structure, never timings."""
import json
import math
import sys

import numpy as np
import pytest

from pyrnn import bench


def _finite_pos(v):
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def _torch_layer(torch, mode, sd, I, H, L=1, bidirectional=False):
    if mode == "LSTM":
        m = torch.nn.LSTM(I, H, L, bidirectional=bidirectional)
    elif mode == "GRU":
        m = torch.nn.GRU(I, H, L, bidirectional=bidirectional)
    else:
        m = torch.nn.RNN(I, H, L, nonlinearity="tanh" if mode == "RNN_TANH" else "relu",
                         bidirectional=bidirectional)
    m.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    return m


def _random_sd(mode, I, H, L=1, D=1, seed=0):
    G = {"LSTM": 4, "GRU": 3, "GRU_RB": 3, "RNN_TANH": 1, "RNN_RELU": 1}[mode]
    rng = np.random.default_rng(seed)
    sd = {}
    for k in range(L):
        for d in range(D):
            s = f"_l{k}" + ("_reverse" if d else "")
            fan = I if k == 0 else D * H
            sd["weight_ih" + s] = rng.uniform(-0.4, 0.4, (G * H, fan)).astype(np.float32)
            sd["weight_hh" + s] = rng.uniform(-0.4, 0.4, (G * H, H)).astype(np.float32)
            sd["bias_ih" + s] = rng.uniform(-0.4, 0.4, G * H).astype(np.float32)
            sd["bias_hh" + s] = rng.uniform(-0.4, 0.4, G * H).astype(np.float32)
    return sd


# --------------------------------------------------------------------------- ONNX = torch

@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"])
@pytest.mark.parametrize("L,bidi", [(1, False), (2, True)])
def test_onnx_model_matches_torch(mode, L, bidi):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    T, B, I, H, D = 7, 3, 5, 6, 2 if bidi else 1
    sd = _random_sd(mode, I, H, L, D, seed=1)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((T, B, I), dtype=np.float32)
    h0 = rng.standard_normal((L * D, B, H), dtype=np.float32)
    c0 = rng.standard_normal((L * D, B, H), dtype=np.float32)

    m = _torch_layer(torch, mode, sd, I, H, L, bidi)
    with torch.inference_mode():
        if mode == "LSTM":
            y_t, (h_t, c_t) = m(torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0)))
        else:
            y_t, h_t = m(torch.from_numpy(x), torch.from_numpy(h0))

    sess = bench.ort_session(bench.build_onnx_model(mode, sd, I, H, L, bidi, with_state=True), 1)
    feed = {"X": x, "initial_h": h0}
    if mode == "LSTM":
        feed["initial_c"] = c0
    outs = sess.run(None, feed)
    assert outs[0].shape == (T, B, D * H) and outs[1].shape == (L * D, B, H)
    np.testing.assert_allclose(outs[0], y_t.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(outs[1], h_t.numpy(), rtol=1e-5, atol=1e-5)
    if mode == "LSTM":
        np.testing.assert_allclose(outs[2], c_t.numpy(), rtol=1e-5, atol=1e-5)


def test_onnx_model_zero_state_and_stepwise_feedback_match_torch():
    # the two ways the bench uses ORT: whole sequence from zeros, and one step at a time
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    T, B, I, H = 6, 1, 4, 8
    sd = _random_sd("LSTM", I, H, seed=3)
    x = np.random.default_rng(4).standard_normal((T, B, I), dtype=np.float32)
    with torch.inference_mode():
        y_t, _ = _torch_layer(torch, "LSTM", sd, I, H)(torch.from_numpy(x))
    whole = bench.ort_session(bench.build_onnx_model("lstm", sd, I, H), 1).run(["Y"], {"X": x})[0]
    np.testing.assert_allclose(whole, y_t.numpy(), rtol=1e-5, atol=1e-5)

    sess = bench.ort_session(bench.build_onnx_model("LSTM", sd, I, H, with_state=True), 1)
    h = c = np.zeros((1, B, H), np.float32)
    for t in range(T):
        y, h, c = sess.run(None, {"X": x[t:t + 1], "initial_h": h, "initial_c": c})
        np.testing.assert_allclose(y[0], y_t.numpy()[t], rtol=1e-5, atol=1e-5)


def test_onnx_gru_reset_before_matches_reference():
    # torch has no reset-before GRU; the NumPy reference is the oracle for linear_before_reset=0
    pytest.importorskip("onnxruntime")
    reference = pytest.importorskip("pyrnn.reference")
    T, B, I, H = 5, 2, 3, 4
    sd = _random_sd("GRU_RB", I, H, seed=5)
    x = np.random.default_rng(6).standard_normal((T, B, I), dtype=np.float32)
    y_ref, h_ref, _ = reference.layer_forward("GRU_RB", sd, x.astype(np.float64))
    y, h = bench.ort_session(bench.build_onnx_model("GRU_RB", sd, I, H), 1).run(None, {"X": x})
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h, h_ref, rtol=1e-5, atol=1e-5)


def test_onnx_model_refuses_what_onnx_cannot_express():
    pytest.importorskip("onnx")
    sd = _random_sd("LSTM", 3, 2)
    with pytest.raises(ValueError, match="MinimalGRU"):
        bench.build_onnx_model("MGRU", sd, 3, 2)
    with pytest.raises(ValueError, match="projection"):
        bench.build_onnx_model("LSTM", dict(sd, weight_hr_l0=np.zeros((1, 2), np.float32)), 3, 2)


# --------------------------------------------------------------------------- FLOPs

def test_flop_counts():
    assert bench.step_flops("lstm", 1, 128, 128) == 2 * 1 * 256 * 4 * 128
    assert bench.step_flops("gru", 16, 64, 64) == 2 * 16 * 128 * 3 * 64
    assert bench.step_flops("rnn", 2, 3, 5) == 2 * 2 * 8 * 1 * 5
    assert bench.step_flops("mgru", 2, 3, 5) == 2 * 2 * 8 * 2 * 5
    assert bench.run_flops("lstm", (100, 1, 128, 128), "infer") == 100 * 262144
    assert bench.run_flops("lstm", (100, 1, 128, 128), "train") == 3 * 100 * 262144


# --------------------------------------------------------------------------- CLI

def test_quick_run_writes_sound_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = bench.main(["--quick", "--repeats", "2", "--min-time", "0.001", "--json", str(out),
                     "--peers", "torch,onnxruntime,numpy", "--cells", "lstm,gru,rnn,mgru", "-q"])
    assert rc == 0
    table = capsys.readouterr().out
    assert "T:B:I:H" in table and "peak (%peak's base)" in table
    rep = json.loads(out.read_text())
    assert rep["kind"] == "grid" and rep["schema"] == 1
    assert set(rep["sgemm_peak"]) == {"1"} and _finite_pos(rep["sgemm_peak"]["1"]["gflops"])
    pk = rep["sgemm_peak"]["1"]
    assert _finite_pos(pk["blas_gflops"]) and _finite_pos(pk["packed_gflops"])
    assert pk["gflops"] == max(pk["blas_gflops"], pk["packed_gflops"])
    cases = {(e["cell"], tuple(e["shape"]), e["mode"], e["threads"]) for e in rep["results"]}
    assert cases == {(c, s, m, 1) for c in ("lstm", "gru", "rnn", "mgru")
                     for s in bench.QUICK_SHAPES for m in ("infer", "train")}
    ran_any = set()
    for e in rep["results"]:
        assert e["flop"] == bench.run_flops(e["cell"], tuple(e["shape"]), e["mode"])
        for peer, fig in e["peers"].items():
            ran_any.add(peer)
            assert len(fig["samples_ms"]) == 2 and fig["number"] >= 1
            assert all(_finite_pos(v) for v in fig["samples_ms"])
            assert fig["median_ms"] == pytest.approx(float(np.median(fig["samples_ms"])))
            for key in ("median_ms", "min_ms", "gflops", "pct_peak"):
                assert _finite_pos(fig[key]), (e["cell"], peer, key)
            assert fig["gflops"] == pytest.approx(e["flop"] / (fig["median_ms"] * 1e6))
        # every peer either ran or says why not
        for peer in ["pyrnn"] + rep["settings"]["peers"]:
            assert (peer in e["peers"]) != (peer in e["skipped"]), (peer, e["skipped"])
        if "pyrnn" in e["peers"]:
            for peer, r in e["ratio"].items():
                assert r == pytest.approx(e["peers"][peer]["median_ms"] / e["peers"]["pyrnn"]["median_ms"])
            assert set(e["ratio"]) == set(e["peers"]) - {"pyrnn"}
        if e["mode"] == "train":
            assert "onnxruntime" in e["skipped"]
        if e["cell"] == "mgru":
            assert "torch" in e["skipped"] and "onnxruntime" in e["skipped"]
    try:
        import pyrnn.layers  # noqa: F401
        assert "pyrnn" in ran_any
    except ImportError:
        assert any("pyrnn core not built" in n for n in rep["notes"])
    for peer, mod in (("torch", "torch"), ("onnxruntime", "onnxruntime")):
        try:
            __import__(mod)
        except ImportError:
            continue
        assert peer in ran_any
    # the targets of issue 3, each with its floor, and the read rates behind them
    assert "targets met:" in table
    if "pyrnn" in ran_any:
        assert rep["targets"] and all(t["issue"] == 3 for t in rep["targets"])
        for t in rep["targets"]:
            assert t["met"] == (t["got"] >= t["want"])
            assert _finite_pos(t["need"]) and _finite_pos(t["floor"])
        assert rep["read_rate"] and all(_finite_pos(r["gbps"]) for r in rep["read_rate"])
        for e in rep["results"]:
            if "pyrnn" in e["peers"]:
                assert _finite_pos(e["floor_ms"])


def test_stream_quick_run(tmp_path):
    out = tmp_path / "stream.json"
    rc = bench.main(["--stream", "--quick", "--repeats", "2", "--min-time", "0.001",
                     "--cells", "lstm,gru", "--json", str(out), "-q"])
    assert rc == 0
    rep = json.loads(out.read_text())
    assert rep["kind"] == "stream" and rep["results"] == []
    assert [(e["cell"], e["hidden"]) for e in rep["stream"]] == [("lstm", 32), ("gru", 32)]
    for e in rep["stream"]:
        assert e["batch"] == 1
        for peer, fig in e["peers"].items():
            assert len(fig["samples_us"]) == 2
            assert all(_finite_pos(v) for v in fig["samples_us"] + [fig["median_us"]])
        for peer in ["pyrnn"] + rep["settings"]["peers"]:
            assert (peer in e["peers"]) != (peer in e["skipped"])
    # many streams from 1 and 2 Python threads, one row per cell and size
    thr = rep["stream_throughput"]
    assert [(e["cell"], e["hidden"]) for e in thr] == [("lstm", 32), ("gru", 32)]
    for e in thr:
        for n in ("1", "2"):
            assert len(e["samples_steps_per_s"][n]) == 2
            assert all(_finite_pos(v) for v in e["samples_steps_per_s"][n])
        assert e["ratio"] == pytest.approx(e["steps_per_s_2"] / e["steps_per_s_1"])
    got = [(t["issue"], t["where"], t["what"]) for t in rep["targets"]]
    assert got == [(6, f"stream {c} H=32 t1", w) for c in ("lstm", "gru")
                   for w, p in ((">= 5x torch", "torch"), (">= 2x onnxruntime", "onnxruntime"))
                   if p in rep["stream"][0]["peers"]] + [
        (6, f"throughput {c} H=32 x4 streams", ">= 1.7x steps/s, 2 Python threads over 1")
        for c in ("lstm", "gru")]


def test_stream_throughput_leaves_thread_count_alone():
    import pyrnn
    n = pyrnn.get_num_threads()
    e = bench.stream_throughput("rnn", 16, n_streams=2, steps=5, repeats=1)
    assert pyrnn.get_num_threads() == n
    assert e["streams"] == 2 and e["steps"] == 5
    assert _finite_pos(e["steps_per_s_1"]) and _finite_pos(e["steps_per_s_2"])


def test_stream_throughput_samples_last_min_time():
    # 10 steps of H = 16 take microseconds: a 20 ms sample repeats them many times
    e = bench.stream_throughput("rnn", 16, n_streams=2, steps=5, repeats=1, min_time=0.02)
    assert e["rounds"] > 10


def test_stream_throughput_raises_a_failed_step(monkeypatch):
    # a step failing in a worker thread must not yield a rate (nor hang the barrier)
    import threading

    from pyrnn.stream import Stream
    step = Stream.step

    def failing(self, x):
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("step failed in a worker")
        return step(self, x)

    monkeypatch.setattr(Stream, "step", failing)
    with pytest.raises(RuntimeError, match="in a worker"):
        bench.stream_throughput("rnn", 16, n_streams=2, steps=5, repeats=1, min_time=0.001)


def test_stream_peers_compute_the_same_steps():
    # the per-step peers feed their state back; after the same steps they must agree
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    H, K = 8, 5
    sd = bench.make_weights("gru", H, H, seed=0)
    xs = np.random.default_rng(1).standard_normal((K, 1, H), dtype=np.float32)
    peers = ["torch", "onnxruntime", "numpy"]
    try:
        runs = {"pyrnn": bench.make_stream_runner("pyrnn", "gru", H, 1, sd, xs)}
    except bench.Skip:
        runs = {}  # no pyrnn stream object yet
    runs.update({p: bench.make_stream_runner(p, "gru", H, 1, sd, xs) for p in peers})
    for r in runs.values():
        r.fn()
    finals = {p: np.asarray(r.hidden(), np.float64).reshape(-1) for p, r in runs.items()}
    with torch.inference_mode():
        m = torch.nn.GRU(H, H)
        m.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
        _, h = m(torch.from_numpy(xs))
    for p, v in finals.items():
        np.testing.assert_allclose(v, h.numpy().reshape(-1), rtol=1e-5, atol=1e-5, err_msg=p)


def test_gru_reset_before_cell_is_one_function_for_every_peer():
    # the gru_rb cell: a pyrnn GRU with reset_after=False and ONNX's linear_before_reset=0,
    # over a sequence and one step at a time; the NumPy reference is the oracle
    pytest.importorskip("onnxruntime")
    import pyrnn
    from pyrnn import reference
    assert bench._pyrnn_layer(pyrnn, "gru_rb", 3, 4).reset_after is False
    assert bench.run_flops("gru_rb", (10, 2, 3, 4), "infer") == bench.run_flops("gru", (10, 2, 3, 4), "infer")
    H, K = 16, 6
    sd = bench.make_weights("gru_rb", H, H, seed=2)
    xs = np.random.default_rng(3).standard_normal((K, 1, H), dtype=np.float32)
    _, want, _ = reference.layer_forward("GRU_RB", sd, xs.astype(np.float64))
    runs = {p: bench.make_stream_runner(p, "gru_rb", H, 1, sd, xs)
            for p in ("pyrnn", "onnxruntime", "numpy")}
    for p, r in runs.items():
        r.fn()
        np.testing.assert_allclose(np.asarray(r.hidden(), np.float64).reshape(-1),
                                   want.reshape(-1), rtol=1e-5, atol=1e-5, err_msg=p)
    with pytest.raises(bench.Skip):
        bench.make_runner("torch", "gru_rb", (K, 1, H, H), "infer", 1, sd, xs, xs)


def test_missing_peer_is_a_note_not_an_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    out = tmp_path / "b.json"
    rc = bench.main(["--quick", "--repeats", "1", "--min-time", "0.001", "--cells", "rnn",
                     "--shapes", "5:1:4:4", "--mode", "infer", "--peers", "onnxruntime",
                     "--json", str(out), "-q"])
    assert rc == 0
    e = json.loads(out.read_text())["results"][0]
    assert "onnxruntime" not in e["peers"] and "not installed" in e["skipped"]["onnxruntime"]


def test_plot_without_matplotlib_fails_fast_with_a_clear_message(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    rc = bench.main(["--quick", "--plot", str(tmp_path / "p.png")])
    assert rc == 2
    assert "matplotlib" in capsys.readouterr().err
    assert not (tmp_path / "p.png").exists()


@pytest.mark.parametrize("argv", [["--shapes", "1:2:3"], ["--cells", "lstm,foo"],
                                  ["--threads", "0"], ["--peers", "caffe"], ["--repeats", "0"]])
def test_bad_options_return_2(argv, capsys):
    assert bench.main(argv) == 2
    assert capsys.readouterr().err


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "p.png"
    rc = bench.main(["--quick", "--repeats", "1", "--min-time", "0.001", "--cells", "rnn",
                     "--peers", "torch", "--plot", str(out), "-q"])
    assert rc == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_prints_targets_of_saved_runs(tmp_path, capsys):
    from pyrnn import targets
    files = []
    for k, got in enumerate((0.9, 1.3)):
        t = targets._target(3, "lstm 100:1:128:128 infer t1", 1.1, got, 1.0, 0.5, "ms",
                            ">= 1.1x onnxruntime", 0.7)
        f = tmp_path / f"run{k + 1}.json"
        f.write_text(json.dumps({"kind": "grid", "targets": [t]}))
        files.append(str(f))
    assert bench.main(["--compare"] + files) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2].split()[-7:] == ["onnxruntime", "0.90x", "1.30x", "1", "of", "2", "met"]
    assert out[-1].startswith("1 targets in 2 runs: met in every run 0, in some but not all 1,")
    # one file, an unreadable one, and a report without targets: exit 2, a line on stderr
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "memory.json").write_text(json.dumps({"kind": "memory", "targets": []}))
    (tmp_path / "odd.json").write_text(json.dumps({"kind": "grid", "targets": [{"where": 1}]}))
    for argv in ([files[0]], [files[0], str(tmp_path / "missing.json")],
                 [files[0], str(tmp_path / "bad.json")], [files[0], str(tmp_path / "memory.json")],
                 [files[0], str(tmp_path / "odd.json")]):
        assert bench.main(["--compare"] + argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("pyrnn bench: --compare:") and err.count("\n") == 1


def test_peak_raised_to_a_faster_timed_call():
    # a busy moment at both peak measurements must not put % of peak above 100
    peaks = {"1": {"gflops": 80.0}, "2": {"gflops": 130.0}}
    results = [{"threads": 1, "peers": {"pyrnn": {"gflops": 70.0}, "torch": {"gflops": 60.0}}},
               {"threads": 2, "peers": {"pyrnn": {"gflops": 150.0}, "torch": {"gflops": 140.0}}},
               {"threads": 2, "peers": {"onnxruntime": {"gflops": 155.0}}}]
    notes = []
    bench._raise_peaks(results, peaks, notes)
    assert peaks["1"] == {"gflops": 80.0}
    assert peaks["2"] == {"gflops": 155.0, "measured_gflops": 130.0}
    assert len(notes) == 1 and "155.0" in notes[0] and "130.0" in notes[0]
