"""Inference and training step per cell, shape, thread count and peer; and per-step
streaming latency at batch 1. Each grid point is one benchmark group, so

    pytest bench/ --benchmark-group-by=group

prints pyrnn and its peers side by side. GFLOP/s is in each benchmark's extra_info.
"""
import numpy as np
import pytest

from pyrnn import bench as pb


def _run(benchmark, runner, settle, threads):
    """Time runner.fn; the median in seconds, or None with --benchmark-disable."""
    settle(threads)
    with runner.active():
        runner.fn()  # warm-up outside the timings
        benchmark(runner.fn)
    return benchmark.stats.stats.median if benchmark.stats else None


def test_layer(benchmark, layer_case, case_data, settle, numpy_max_gflop):
    cell, shape, mode, threads, peer = layer_case
    flop = pb.run_flops(cell, shape, mode)
    if peer == "numpy" and pb.run_flops(cell, shape, "infer") > numpy_max_gflop * 1e9:
        pytest.skip(f"numpy reference skipped above {numpy_max_gflop} GFLOP per call")
    sd, x, dy = case_data(cell, shape)
    try:
        runner = pb.make_runner(peer, cell, shape, mode, threads, sd, x, dy)
    except pb.Skip as e:
        pytest.skip(str(e))
    benchmark.group = f"{cell} {':'.join(map(str, shape))} {mode} t{threads}"
    benchmark.extra_info.update(peer=peer, cell=cell, shape=list(shape), mode=mode,
                                threads=threads, flop=flop)
    median = _run(benchmark, runner, settle, threads)
    if median:
        benchmark.extra_info["gflops"] = flop / median / 1e9


def test_stream_step(benchmark, stream_case, settle):
    cell, hidden, threads, peer = stream_case
    steps = 100
    sd = pb.make_weights(cell, hidden, hidden)
    xs = np.random.default_rng(2).standard_normal((steps, 1, hidden), dtype=np.float32)
    try:
        runner = pb.make_stream_runner(peer, cell, hidden, threads, sd, xs)
    except pb.Skip as e:
        pytest.skip(str(e))
    benchmark.group = f"stream {cell} H={hidden} t{threads} ({steps} steps per call)"
    benchmark.extra_info.update(peer=peer, cell=cell, hidden=hidden, threads=threads, steps=steps)
    median = _run(benchmark, runner, settle, threads)
    if median:
        benchmark.extra_info["us_per_step"] = median / steps * 1e6
