"""The pyrnn command, run as a user runs it: subprocesses of ``python -m pyrnn``."""
import os
import subprocess
import sys

import numpy as np
import pytest

from pyrnn.io import load, load_arrays


def run(*args, cwd=None, timeout=120):
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    return subprocess.run([sys.executable, "-m", "pyrnn", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def one_line_error(r):
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "error" in lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("demo")
    out = d / "demo.safetensors"
    r = run("demo", "--minutes", "0.15", "--hidden", "32", "--layers", "1", "--seed", "3",
            "--threads", "1", "--out", out, cwd=d, timeout=150)
    assert r.returncode == 0, r.stderr[-2000:]
    return out, r


def test_demo_end_to_end(demo_model):
    out, r = demo_model
    assert out.exists()
    text = r.stdout
    assert "held-out:" in text and "bits/char" in text
    bpc = float(text.split("held-out:")[1].split("bits/char")[0])
    model = load(out)
    m = model.metadata["metrics"]
    assert m["valid_bpc"] == pytest.approx(bpc, abs=5e-4)
    # better than a uniform guess over the vocabulary, even after a few seconds
    assert 0 < bpc < np.log2(model.vocab_size)
    assert text.count("--- sample, temperature") == 3
    assert "def " in text and str(out) in text and "wall time" in text
    assert model.config()["cell"] == "lstm" and model.hidden_size == 32


def test_sample_streams_and_is_seeded(demo_model):
    out, _ = demo_model
    a = run("sample", out, "--prime", "import ", "--length", "60", "--seed", "7",
            "--temperature", "0.9", "--top-k", "20")
    b = run("sample", out, "--prime", "import ", "--length", "60", "--seed", "7",
            "--temperature", "0.9", "--top-k", "20")
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout and a.stdout.startswith("import ")
    assert len(a.stdout.rstrip("\n")) >= len("import ")
    g = run("sample", out, "--prime", "def ", "--length", "30", "--temperature", "0")
    assert g.returncode == 0 and g.stdout.startswith("def ")


def test_info_reads_back(demo_model):
    out, _ = demo_model
    r = run("info", out)
    assert r.returncode == 0, r.stderr
    model = load(out)
    n = sum(p.size for p in model.params.values())
    assert f"parameters:  {n:,}" in r.stdout
    assert f"vocabulary:  {model.vocab_size} char tokens" in r.stdout
    assert "valid_bpc" in r.stdout and "hidden_size:  32" in r.stdout


def test_train_resume_and_word_level(tmp_path):
    src = tmp_path / "a.txt"
    src.write_text(open(os.path.join(os.path.dirname(__file__), "test_train.py")).read() * 3)
    common = ["train", "--text", src, "--hidden", "16", "--layers", "1", "--bptt", "8,12",
              "--batch-size", "4", "--checkpoint-every", "5", "--seed", "1"]
    r = run(*common, "--steps", "10", "--out", tmp_path / "full.safetensors")
    assert r.returncode == 0, r.stderr[-2000:]
    r = run(*common, "--steps", "5", "--out", tmp_path / "half.safetensors")
    assert r.returncode == 0, r.stderr[-2000:]
    r = run(*common, "--steps", "10", "--out", tmp_path / "resumed.safetensors",
            "--resume", tmp_path / "half.safetensors.ckpt")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming" in r.stdout
    a, _ = load_arrays(tmp_path / "full.safetensors")
    b, _ = load_arrays(tmp_path / "resumed.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)

    r = run("train", "--text", src, "--level", "word", "--hidden", "8", "--layers", "1",
            "--bptt", "6", "--batch-size", "2", "--steps", "3", "--out", tmp_path / "w.st")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "bits/word" in r.stdout
    s = run("sample", tmp_path / "w.st", "--prime", "def test", "--length", "5", "--seed", "0")
    assert s.returncode == 0 and s.stdout.startswith("def test")


@pytest.mark.parametrize("cmd", ["", "demo", "train", "sample", "info", "bench"])
def test_help_has_examples(cmd):
    r = run(*([cmd] if cmd else []), "--help")
    assert r.returncode == 0, r.stderr
    assert "usage" in r.stdout.lower()
    if cmd != "bench":  # bench's own parser
        assert "examples:" in r.stdout and "pyrnn " in r.stdout.split("examples:")[1]


def test_error_paths(tmp_path, demo_model):
    out, _ = demo_model
    line = one_line_error(run("sample", tmp_path / "missing.safetensors"))
    assert "no such file" in line
    line = one_line_error(run("train", "--text", tmp_path / "missing.txt", "--steps", "1"))
    assert "missing.txt" in line
    line = one_line_error(run("train", "--text", out, "--hidden", "abc"))
    assert "--hidden" in line
    line = one_line_error(run("sample", out, "--top-p", "1.5"))
    assert "--top-p" in line
    one_line_error(run("demo", "--cell", "transformer"))
    one_line_error(run("frobnicate"))

    raw = bytearray(out.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte in the data
    bad = tmp_path / "flipped.safetensors"
    bad.write_bytes(bytes(raw))
    line = one_line_error(run("info", bad))
    assert "checksum" in line
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(out.read_bytes()[:500])
    assert "truncated" in one_line_error(run("sample", trunc))
    junk = tmp_path / "junk.txt"
    junk.write_text("not a model")
    one_line_error(run("info", junk))
    one_line_error(run("info", tmp_path))  # a directory
