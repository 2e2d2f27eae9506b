"""pytest-benchmark suites for pyrnn and its peers (run: ``pytest bench/``).

Not collected by the default test run (pyproject sets ``testpaths = ["tests"]``).
The peers and their set-up are shared with ``pyrnn bench`` (``pyrnn.bench.make_runner``),
so both tools time exactly the same calls.
"""
import functools
import time

import pytest

from pyrnn import bench as pb


def pytest_addoption(parser):
    g = parser.getgroup("pyrnn bench grid")
    g.addoption("--bench-quick", action="store_true", help="tiny grid (smoke test of the suite)")
    g.addoption("--bench-cells", default="lstm,gru,rnn", help="comma list of lstm,gru,rnn,mgru")
    g.addoption("--bench-shapes", default=None, help="comma list of T:B:I:H (default: issue-3 grid)")
    g.addoption("--bench-threads", default="1,2", help="comma list of thread counts")
    g.addoption("--bench-peers", default="pyrnn,torch,onnxruntime,numpy",
                help="comma list of pyrnn,torch,onnxruntime,numpy")
    g.addoption("--bench-modes", default="infer,train", help="infer,train")
    g.addoption("--bench-numpy-max-gflop", type=float, default=0.5,
                help="skip the slow NumPy reference above this many GFLOP per call")
    g.addoption("--bench-stream-hidden", default="128,256,512",
                help="hidden sizes of the batch-1 streaming benchmarks")
    g.addoption("--bench-settle", type=float, default=0.15,
                help="sleep before a multi-threaded benchmark so the previous one's spinning "
                     "worker threads go idle")


def _grid(config):
    o = config.getoption
    quick = o("--bench-quick")
    shapes = (pb._parse_shapes(o("--bench-shapes")) if o("--bench-shapes")
              else list(pb.QUICK_SHAPES if quick else pb.DEFAULT_SHAPES))
    peers = ["pyrnn"] + [pb.PEER_ALIASES[p] for p in pb._csv(o("--bench-peers")) if p != "pyrnn"]
    if "pyrnn" not in pb._csv(o("--bench-peers")):
        peers.remove("pyrnn")
    return {
        "cells": [pb.CELL_ALIASES.get(c, c) for c in pb._csv(o("--bench-cells"))],
        "shapes": shapes,
        "threads": [1] if quick else [int(t) for t in pb._csv(o("--bench-threads"))],
        "peers": peers,
        "modes": pb._csv(o("--bench-modes")),
        "stream_hidden": [32] if quick else [int(h) for h in pb._csv(o("--bench-stream-hidden"))],
    }


def pytest_generate_tests(metafunc):
    g = _grid(metafunc.config)
    if "layer_case" in metafunc.fixturenames:
        cases = [(c, s, m, t, p) for t in g["threads"] for c in g["cells"] for s in g["shapes"]
                 for m in g["modes"] for p in g["peers"]]
        metafunc.parametrize("layer_case", cases, ids=[
            f"{c}-{'x'.join(map(str, s))}-{m}-t{t}-{p}" for c, s, m, t, p in cases])
    if "stream_case" in metafunc.fixturenames:
        cases = [(c, h, t, p) for t in g["threads"] for c in g["cells"]
                 for h in g["stream_hidden"] for p in g["peers"]]
        metafunc.parametrize("stream_case", cases, ids=[
            f"{c}-H{h}-t{t}-{p}" for c, h, t, p in cases])


@functools.lru_cache(maxsize=8)
def _case_data(cell, shape, seed=0):
    sd = pb.make_weights(cell, shape[2], shape[3], seed)
    x, dy = pb.make_inputs(shape, seed)
    return sd, x, dy


@pytest.fixture
def case_data():
    """(cell, shape) -> (state_dict, x, dy), the same arrays for every peer."""
    return _case_data


@pytest.fixture
def settle(request):
    """Call before timing a multi-threaded case (see --bench-settle)."""
    def wait(threads):
        if threads > 1:
            time.sleep(request.config.getoption("--bench-settle"))
    return wait


@pytest.fixture
def numpy_max_gflop(request):
    return request.config.getoption("--bench-numpy-max-gflop")
