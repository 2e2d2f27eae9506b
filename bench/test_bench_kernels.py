"""The fused gate kernels alone (the part of a step after its products), per cell,
shape and SIMD level: ``pytest bench/test_bench_kernels.py --benchmark-group-by=group``.
Each timed call runs the kernel REPS times on data that stays in L1/L2, so the
figure is the kernel's own cost; extra_info has ns per unit.
"""
import pytest

from pyrnn import _core

REPS = 1000
LEVELS = [lv for lv in _core.simd_levels()]
SHAPES = [(16, 64), (1, 128), (1, 512), (64, 256)]


@pytest.fixture
def simd(request):
    old = _core.simd_level()
    yield
    _core.set_simd_level(old)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("keep", [False, True], ids=["infer", "train"])
@pytest.mark.parametrize("nb,H", SHAPES, ids=[f"{b}x{h}" for b, h in SHAPES])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "mgru"])
def test_gate_kernel(benchmark, simd, cell, nb, H, keep, level):
    _core.set_simd_level(level)
    benchmark.group = f"gates {cell} {nb}x{H} {'train' if keep else 'infer'}"
    benchmark.extra_info.update(cell=cell, rows=nb, units=H, keep=keep, level=level)
    benchmark(_core._gate_kernel, cell, nb, H, REPS, keep)
    if benchmark.stats:
        benchmark.extra_info["ns_per_unit"] = benchmark.stats.stats.median / REPS / (nb * H) * 1e9
