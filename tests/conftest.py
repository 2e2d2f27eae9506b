"""Shared fixtures: SIMD on/off and thread-count switches that always restore the core."""
import numpy as np
import pytest

import pyrnn
from pyrnn import _core


@pytest.fixture
def restore_core():
    """Restore the SIMD level, the thread count and the product kernels' choice
    after the test."""
    level, n, packed = _core.simd_level(), pyrnn.get_num_threads(), _core._all_packed()
    try:
        yield
    finally:
        _core.set_simd_level(level)
        pyrnn.set_num_threads(n)
        _core._set_all_packed(packed)


# The float kernels' instruction-set levels this CPU runs: every test that
# takes `simd_level` runs once per level (never skipped: a level the CPU
# lacks is simply not in the list).
SIMD_LEVELS = _core.simd_levels()


@pytest.fixture(params=SIMD_LEVELS)
def simd_level(request, restore_core):
    """Run the test at each SIMD level this CPU has: scalar, avx2, avx512."""
    assert _core.set_simd_level(request.param) == request.param
    return request.param


def make_layer(mode, I, H, L=1, bidirectional=False, proj=0, bias=True, batch_first=False,
               dtype=np.float64, dropout=0.0, seed=0):
    """pyrnn layer for a reference mode name (RNN_TANH, RNN_RELU, LSTM, GRU, GRU_RB, MGRU)."""
    kw = dict(num_layers=L, bias=bias, batch_first=batch_first, dropout=dropout,
              bidirectional=bidirectional, dtype=dtype, seed=seed)
    if mode in ("RNN_TANH", "RNN_RELU"):
        return pyrnn.RNN(I, H, nonlinearity="tanh" if mode == "RNN_TANH" else "relu", **kw)
    if mode == "LSTM":
        return pyrnn.LSTM(I, H, proj_size=proj, **kw)
    if mode in ("GRU", "GRU_RB"):
        return pyrnn.GRU(I, H, reset_after=mode == "GRU", **kw)
    if mode == "MGRU":
        return pyrnn.MinimalGRU(I, H, **kw)
    raise ValueError(mode)

