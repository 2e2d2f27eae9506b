"""pyrnn.targets: the floors and the target verdicts, on made-up reports with exact
figures; the read probe of the core."""
import math

import numpy as np
import pytest

from pyrnn import targets

_core = pytest.importorskip("pyrnn._core")

PEAKS = {"1": {"gflops": 100.0}, "2": {"gflops": 200.0}}


def fixed_rate(nbytes, threads):
    # GB/s: 100 per core from L2 (up to 1 MiB a core), 50 beyond
    return threads * (100.0 if nbytes / threads <= 2 ** 20 else 50.0)


def entry(cell, shape, mode, threads, ms, peers):
    T, B, I, H = shape
    flop = T * 2 * B * (I + H) * targets._GATES[cell] * H * (3 if mode == "train" else 1)
    e = {"cell": cell, "shape": list(shape), "T": T, "B": B, "I": I, "H": H, "mode": mode,
         "threads": threads, "flop": flop, "ratio": {},
         "peers": {"pyrnn": {"median_ms": ms,
                             "pct_peak": 100 * flop / (ms * 1e-3) / (PEAKS[str(threads)]["gflops"] * 1e9)}}}
    for p, v in peers.items():
        e["peers"][p] = {"median_ms": v}
        e["ratio"][p] = v / ms
    if peers:
        e["best_peer"] = min(peers, key=peers.get)
    return e


def test_grid_floor_is_the_larger_of_compute_and_weight_reads():
    # LSTM 100:1:128:128 inference: 26.2144 MFLOP at 100 GFLOP/s = 0.262144 ms;
    # W_hh 4*4*128*128 = 262144 bytes read 100 times at 100 GB/s = 0.262144 ms
    e = entry("lstm", (100, 1, 128, 128), "infer", 1, 0.4, {})
    assert targets.grid_floor_ms(e, 100.0, fixed_rate) == pytest.approx(0.262144)
    # training: 3x the FLOPs (0.786 ms) against 2x the reads (0.524 ms)
    e = entry("lstm", (100, 1, 128, 128), "train", 1, 1.0, {})
    assert targets.grid_floor_ms(e, 100.0, fixed_rate) == pytest.approx(0.786432)
    # LSTM H = 512 inference, 1 thread: 4 MiB of W_hh from beyond L2 at 50 GB/s
    e = entry("lstm", (100, 1, 512, 512), "infer", 1, 9.0, {})
    assert targets.grid_floor_ms(e, 100.0, fixed_rate) == pytest.approx(100 * 4 * 2 ** 20 / 50e9 * 1e3)
    # ... on 2 threads each core's 2 MiB half, still beyond its L2: 100 GB/s together
    e = entry("lstm", (100, 1, 512, 512), "infer", 2, 5.0, {})
    assert targets.grid_floor_ms(e, 200.0, fixed_rate) == pytest.approx(100 * 4 * 2 ** 20 / 100e9 * 1e3)


def test_no_overlap_bound_adds_the_sequence_products_to_the_steps():
    # LSTM 100:1:512:512 inference, 1 thread: the input projection (209.7152 MFLOP,
    # 2.097152 ms at 100 GFLOP/s), then 100 steps each reading 4 MiB at 50 GB/s
    # (8.388608 ms; their FLOPs would take 2.097 ms)
    e = entry("lstm", (100, 1, 512, 512), "infer", 1, 9.5, {"onnxruntime": 10.0})
    assert targets.grid_no_overlap_ms(e, 100.0, fixed_rate) == pytest.approx(2.097152 + 8.388608)
    # training 100:1:128:128: dX and the weight gradients with the projection,
    # 52.4288 MFLOP (0.524288 ms), then 200 W_hh reads of 256 KiB at 100 GB/s
    e2 = entry("lstm", (100, 1, 128, 128), "train", 1, 1.0, {})
    assert targets.grid_no_overlap_ms(e2, 100.0, fixed_rate) == pytest.approx(1.048576)
    # batch 64: the steps are compute-bound, so the bound is the FLOPs at the peak
    e3 = entry("rnn", (100, 64, 512, 512), "infer", 1, 70.0, {})
    assert targets.grid_no_overlap_ms(e3, 100.0, fixed_rate) == pytest.approx(
        targets.grid_floor_ms(e3, 100.0, fixed_rate))
    # 1.1x ORT needs 9.0909 ms: above the floor (8.39), below the bound (10.49)
    t, = targets.grid_targets([e], PEAKS, fixed_rate)
    assert t["need"] == pytest.approx(10.0 / 1.1) and t["reachable"] is True
    assert t["overlap_needed"] is True and not t["met"]
    assert e["no_overlap_ms"] == pytest.approx(10.48576)
    text = targets.format_targets([t])
    assert "missed; below no-overlap (1.15x)" in text
    assert ("of the 1 missed, 0 ask for less time than the floor and 1 more for less than "
            "the no-overlap bound") in text


def test_stream_floor_reads_both_weight_matrices():
    e = {"cell": "gru", "input": 256, "hidden": 256, "threads": 1}
    w = 4 * 3 * 256 * 512                      # W_ih and W_hh, 1.5 MiB: beyond L2
    assert targets.stream_floor_us(e, 100.0, fixed_rate) == pytest.approx(w / 50e9 * 1e6)
    assert targets.weight_bytes("gru", 256, 256, stream=True) == w
    assert targets.weight_bytes("gru", 256, 256) == w // 2


def test_grid_targets_verdicts_need_and_floor():
    res = [
        # batch 1, H 128: 2x the best peer; ORT 0.40 -> need 0.20 < floor 0.262: out of reach
        entry("lstm", (100, 1, 128, 128), "infer", 1, 0.40, {"torch": 0.60, "onnxruntime": 0.40}),
        # GRU batch-1 training: 5x torch, met
        entry("gru", (100, 1, 128, 128), "train", 1, 0.80, {"torch": 12.0}),
        # batch 64: >= the best peer and >= 90% of the peak
        entry("rnn", (100, 64, 512, 512), "infer", 1, 70.0, {"torch": 98.0}),
        entry("rnn", (100, 64, 512, 512), "infer", 2, 36.0, {"torch": 58.0}),
    ]
    got = targets.grid_targets(res, PEAKS, fixed_rate)
    by = {(t["where"], t["what"]): t for t in got}
    t = by["lstm 100:1:128:128 infer t1", ">= 2x onnxruntime"]
    assert t["want"] == 2.0 and t["got"] == pytest.approx(1.0) and not t["met"]
    assert t["need"] == pytest.approx(0.20) and t["floor"] == pytest.approx(0.262144)
    assert t["reachable"] is False
    t = by["gru 100:1:128:128 train t1", ">= 5x torch"]
    assert t["met"] and t["got"] == pytest.approx(15.0) and t["reachable"] is True
    flop = 100 * 2 * 64 * 1024 * 512
    t = by["rnn 100:64:512:512 infer t1", ">= 90% of peak"]
    assert t["got"] == pytest.approx(95.86, abs=0.01) and t["met"]      # 6.71 GFLOP in 70 ms
    assert t["need"] == pytest.approx(flop / 90e9 * 1e3)
    t = by["rnn 100:64:512:512 infer t2", ">= 1.8x 1 thread"]
    assert t["got"] == pytest.approx(70.0 / 36.0) and t["met"]
    assert t["need"] == pytest.approx(70.0 / 1.8)
    assert len(got) == 2 + 2 + 2 + 1           # one peer target each, 2 % of peak, 1 scaling
    assert res[0]["floor_ms"] == pytest.approx(0.262144)
    text = targets.format_targets(got)
    assert "missed; below the floor (1.31x)" in text
    assert "targets met: 6 of 7; of the 1 missed, 1 ask for less time than the floor and 0" in text


def test_stream_targets():
    e = {"cell": "lstm", "input": 128, "hidden": 128, "threads": 1,
         "peers": {"pyrnn": {"median_us": 5.0}, "torch": {"median_us": 30.0},
                   "onnxruntime": {"median_us": 9.0}},
         "ratio": {"torch": 6.0, "onnxruntime": 1.8}}
    thr = [{"cell": "lstm", "hidden": 128, "streams": 4, "ratio": 1.75}]
    got = targets.stream_targets([e], thr, PEAKS, fixed_rate)
    assert [(t["what"], t["met"]) for t in got] == [
        (">= 5x torch", True), (">= 2x onnxruntime", False),
        (">= 1.7x steps/s, 2 Python threads over 1", True)]
    floor = 4 * 4 * 128 * 256 / 100e9 * 1e6      # 512 KiB at 100 GB/s
    assert e["floor_us"] == pytest.approx(floor)
    assert got[1]["need"] == pytest.approx(4.5) and got[1]["reachable"] is False
    assert got[2]["need"] is None and got[2]["reachable"] is None
    assert got[1]["no_overlap"] == got[1]["floor"]          # a stream step is all steps


def test_rates_measure_each_size_once():
    calls = []
    rate = targets.Rates(lambda n, t: calls.append((n, t)) or 7.0)
    assert rate(1024, 1) == rate(1024, 1) == 7.0 and rate(1024, 2) == 7.0
    assert calls == [(1024, 1), (1024, 2)]
    assert rate.table == [{"bytes": 1024, "threads": 1, "gbps": 7.0},
                          {"bytes": 1024, "threads": 2, "gbps": 7.0}]


def test_read_probe():
    buf = np.ones(1000, np.float32)
    sec = _core._read_seconds(buf, 3)
    assert math.isfinite(sec) and sec > 0
    assert math.isfinite(targets.read_rate(4096, 2, min_time=1e-4, repeats=1))
    with pytest.raises(TypeError, match="buf"):
        _core._read_seconds(np.ones(10), 1)
    with pytest.raises(TypeError, match="buf"):
        _core._read_seconds(np.ones((10, 10), np.float32)[:, ::2], 1)
    with pytest.raises(ValueError, match="reps"):
        _core._read_seconds(buf, 0)
    with pytest.raises(ValueError, match="nbytes"):
        targets.read_rate(0, 1)


def _t(where, what, got, want=1.0, need=1.0, floor=0.5, no_overlap=0.6):
    return targets._target(3, where, want, got, need, floor, "ms", what, no_overlap)


def test_compare_runs_counts_and_rows():
    a = [_t("a", ">= 1x x", 1.2), _t("b", ">= 1x x", 0.9), _t("c", ">= 1x x", 0.8, floor=2.0),
         _t("d", ">= 90% of peak", 95.0, want=90.0), _t("e", ">= 1x x", 0.7, no_overlap=1.5)]
    b = [_t("a", ">= 1x x", 1.1), _t("b", ">= 1x x", 1.05), _t("c", ">= 1x x", 0.85, floor=2.0),
         _t("e", ">= 1x x", 0.75, no_overlap=1.5), _t("f", ">= 1x x", 2.0)]
    rows = targets.compare([a, b])
    assert [(r["where"], [t is not None for t in r["targets"]]) for r in rows] == [
        ("a", [True, True]), ("b", [True, True]), ("c", [True, True]), ("d", [True, False]),
        ("e", [True, True]), ("f", [False, True])]
    text = targets.format_compare(["r1.json", "r2.json"], rows)
    *table, _, summary = text.splitlines()
    assert table[0].split()[:4] == ["where", "target", "r1.json", "r2.json"]
    lines = {ln.split()[0]: ln for ln in table[2:]}
    assert sorted(lines) == ["b", "c", "e"]      # a, d and f met wherever they were checked
    # b: missed, then met; c: missed twice, below the floor; e: below no-overlap
    assert lines["b"].split()[-6:] == ["0.90x", "1.05x", "1", "of", "2", "met"]
    assert lines["c"].split()[4:9] == ["0.80x", "0.85x", "0", "of", "2"]
    assert lines["c"].endswith("missed; below the floor (2.00x)")
    assert lines["e"].endswith("missed; below no-overlap (1.50x)")
    assert summary == (
        "6 targets in 2 runs: met in every run 3, in some but not all 1, in none 2 (in the last "
        "run that checked them, 1 of those ask for less time than the floor and 1 more for less "
        "than the no-overlap bound).")
