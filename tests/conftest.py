"""Shared fixtures: SIMD on/off and thread-count switches that always restore the core."""
import numpy as np
import pytest

import pyrnn
from pyrnn import _core


@pytest.fixture
def restore_core():
    """Restore the SIMD switch and the thread count after the test."""
    simd, n = _core.simd_active(), pyrnn.get_num_threads()
    try:
        yield
    finally:
        _core.set_simd(simd)
        pyrnn.set_num_threads(n)


@pytest.fixture(params=["scalar", "simd"])
def simd(request, restore_core):
    """Run the test with the scalar kernels, then with AVX2 (skipped if unavailable)."""
    on = request.param == "simd"
    if on and not _core.simd_available():
        pytest.skip("AVX2+FMA not available on this CPU")
    _core.set_simd(on)
    assert _core.simd_active() == on
    return on


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

