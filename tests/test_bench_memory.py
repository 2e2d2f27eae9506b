"""`pyrnn bench --memory`: the fresh-process peak-RSS measurement sees what a step
allocates, forgets what happened before the reset, and reports sound figures.

Every measurement runs in a child interpreter, as the bench does. Linux only (the
bench needs /proc/self/clear_refs); these tests assert numbers, never skip on that."""
import json
import math

import pytest

from pyrnn import bench

MiB = 2 ** 20


def _finite_nonneg(v):
    return isinstance(v, float) and math.isfinite(v) and v >= 0.0


def test_child_runner_sees_a_64_mib_allocation_in_both_steps():
    code = ("import numpy as np\n"
            f"def step():\n    return np.ones({64 * MiB // 8}, np.float64)\n")
    raw = bench.child_memory(code)
    for label in ("first", "steady"):
        fig = raw[label]
        assert 60.0 <= fig["extra_mib"] <= 80.0, (label, fig)
        # the array is dropped after the reading: the process does not keep it
        assert abs(fig["kept_mib"]) < 8.0, (label, fig)
        assert fig["base_mib"] > 1.0


def test_child_runner_forgets_the_peak_before_the_step():
    # 200 MiB touched and freed in the setup raise VmHWM; the reset must drop that
    # peak, so a step that allocates nothing measures (almost) nothing
    code = ("import numpy as np\n"
            f"big = np.ones({200 * MiB // 8}, np.float64)\n"
            "del big\n"
            "def step():\n    return None\n")
    raw = bench.child_memory(code)
    for label in ("first", "steady"):
        assert 0.0 <= raw[label]["extra_mib"] < 2.0, (label, raw[label])


def test_child_failure_is_an_error_with_the_reason():
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        bench.child_memory("def step():\n    return 1 / 0\n")


def test_unwritable_clear_refs_is_a_clear_error(monkeypatch, capsys):
    bad = "/proc/self/no-such-clear_refs"
    monkeypatch.setattr(bench, "_CLEAR_REFS", bad)
    assert "clear_refs" in bench.clear_refs_problem()
    with pytest.raises(bench.ClearRefsError, match="cannot reset the peak RSS"):
        bench.child_memory("def step():\n    return None\n")
    assert bench.main(["--memory", "--cells", "rnn", "--shapes", "5:2:3:4", "-q"]) == 2
    err = capsys.readouterr().err
    assert "--memory" in err and bad in err


def test_pyrnn_training_step_figures_are_sound():
    fig = bench.measure_memory("pyrnn", "lstm", (5, 2, 3, 4), threads=1)
    for key in ("first_mib", "warm_first_mib", "steady_mib", "base_mib"):
        assert _finite_nonneg(fig[key]), (key, fig[key])
    assert math.isfinite(fig["kept_mib"])
    # a 5x2x3x4 step touches a few KiB; anything near a MiB would be a leak or noise
    assert max(fig["first_mib"], fig["warm_first_mib"], fig["steady_mib"]) < 4.0
    raw = fig["raw"]
    assert raw["first"]["peak_kib"]["VmHWM"] >= raw["first"]["before_kib"]["VmRSS"]


def test_pyrnn_step_that_needs_memory_shows_it():
    # LSTM 100x32x64x64 training: the gate cache alone (T, B, 4H) float32 is 3.1 MiB
    # and y, dx are (T, B, H) each: the first step must show several MiB
    T, B, I, H = 100, 32, 64, 64
    fig = bench.measure_memory("pyrnn", "lstm", (T, B, I, H), threads=1)
    for key in ("first_mib", "warm_first_mib"):
        assert fig[key] >= (T * B * 4 * H * 4 + 2 * T * B * H * 4) / MiB * 0.9, key
    # the second step gets its caches from the pool (and malloc may reuse the first
    # step's freed y and dx), so it can only need less
    assert fig["steady_mib"] <= fig["first_mib"] + 0.5
    assert fig["kept_mib"] > 1.0  # the pooled caches stay resident between steps


def test_batch1_second_step_needs_no_new_memory():
    # GRU 100x1x512x512: every step packs W_hh (3 MiB) and W_ih for the packed
    # projection into fresh blocks; freed back to malloc, the second step must
    # reuse them (aligned blocks that fragmented the heap once made it 12 MiB)
    fig = bench.measure_memory("pyrnn", "gru", (100, 1, 512, 512), threads=1)
    assert fig["steady_mib"] < 1.0, fig["steady_mib"]
    assert fig["first_mib"] < 9.0, fig["first_mib"]


def test_torch_step_figures_are_sound():
    pytest.importorskip("torch")
    fig = bench.measure_memory("torch", "gru", (5, 2, 3, 4), threads=1)
    for key in ("first_mib", "warm_first_mib", "steady_mib", "base_mib"):
        assert _finite_nonneg(fig[key]), (key, fig[key])
    # the warm-up step takes the library's start-up out of the first step
    assert fig["warm_first_mib"] <= fig["first_mib"] + 0.5
    assert fig["warm_first_mib"] < 4.0
    with pytest.raises(bench.Skip, match="MinimalGRU"):
        bench.memory_step_code("torch", "mgru", (5, 2, 3, 4))


def test_memory_cli_writes_sound_json(tmp_path, capsys):
    out = tmp_path / "mem.json"
    rc = bench.main(["--memory", "--cells", "lstm,mgru", "--shapes", "5:2:3:4",
                     "--json", str(out), "-q"])
    assert rc == 0
    table = capsys.readouterr().out
    assert "pyrnn first" in table and "pyrnn warm" in table and "torch steady" in table
    rep = json.loads(out.read_text())
    assert rep["kind"] == "memory" and rep["results"] == [] and rep["stream"] == []
    assert rep["settings"]["threads"] == [1] and rep["sgemm_peak"] == {}
    assert [(e["cell"], e["shape"], e["threads"]) for e in rep["memory"]] == [
        ("lstm", [5, 2, 3, 4], 1), ("mgru", [5, 2, 3, 4], 1)]
    for e in rep["memory"]:
        assert "pyrnn" in e["peers"]
        for peer in ["pyrnn"] + rep["settings"]["peers"]:
            assert (peer in e["peers"]) != (peer in e["skipped"]), (peer, e["skipped"])
        for peer, fig in e["peers"].items():
            for key in ("first_mib", "warm_first_mib", "steady_mib", "base_mib"):
                assert _finite_nonneg(fig[key]), (peer, key)
        for peer, r in e["ratio"].items():
            assert set(r) == {"first_mib", "warm_first_mib", "steady_mib"}
            for key, v in r.items():
                if v is not None:
                    assert v == pytest.approx(e["peers"][peer][key] / e["peers"]["pyrnn"][key])
    assert "torch" in rep["memory"][1]["skipped"]  # no MinimalGRU in torch
    try:
        import torch  # noqa: F401
    except ImportError:
        return
    assert "torch" in rep["memory"][0]["peers"]


@pytest.mark.parametrize("argv", [["--memory", "--stream"], ["--memory", "--plot", "x.png"]])
def test_memory_refuses_other_run_kinds(argv, capsys):
    assert bench.main(argv) == 2
    assert "--memory" in capsys.readouterr().err
