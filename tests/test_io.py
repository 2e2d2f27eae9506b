import json
import os
import pickle

import numpy as np
import pytest

import pyrnn
from pyrnn import io as pio
from pyrnn.io import ModelFileError, load_arrays, save_arrays


def sample_arrays():
    rng = np.random.default_rng(0)
    return {
        "w32": rng.normal(size=(4, 3)).astype(np.float32),
        "w64": rng.normal(size=(5,)),
        "f16": rng.normal(size=(2, 2)).astype(np.float16),
        "i64": np.arange(-3, 3, dtype=np.int64).reshape(2, 3),
        "i8": np.array([-128, 0, 127], dtype=np.int8),
        "u16": np.array([0, 65535], dtype=np.uint16),
        "bool": np.array([True, False, True]),
        "scalar": np.array(2.5, dtype=np.float64),
        "scalar_i": np.array(7, dtype=np.int32),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "empty0": np.zeros((0,), dtype=np.int16),
        # specials and a non-contiguous, big-endian source
        "special": np.array([np.nan, np.inf, -np.inf, -0.0, 5e-324]),
        "strided": np.arange(24, dtype=">f4").reshape(4, 6)[:, ::2],
    }


META = {"config": {"class": "X", "hidden": 8}, "vocab": {"tokens": ["a", "é"]},
        "metrics": {"bpc": 1.25, "steps": [1, 2]}, "note": "text"}


def assert_bit_equal(a, b):
    assert a.shape == b.shape
    assert a.dtype.newbyteorder("=") == b.dtype
    assert np.ascontiguousarray(a, dtype=b.dtype).tobytes() == b.tobytes()


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "m.safetensors"
    save_arrays(path, sample_arrays(), META)
    return path


def test_roundtrip_bit_exact(saved):
    arrays, meta = load_arrays(saved)
    src = sample_arrays()
    assert set(arrays) == set(src)
    for k in src:
        assert_bit_equal(src[k], arrays[k])
        assert arrays[k].flags.writeable and arrays[k].flags.c_contiguous
        assert arrays[k].flags.aligned and arrays[k].dtype.isnative
    assert arrays["scalar"].shape == () and arrays["scalar"] == 2.5
    assert meta == META
    arrays["w32"][0, 0] = 1.0  # ordinary writable array


def test_layout_is_safetensors(saved):
    raw = saved.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert (8 + n) % 8 == 0
    hdr = json.loads(raw[8:8 + n])
    m = hdr.pop("__metadata__")
    assert m["format"] == "pyrnn" and m["pyrnn_version"] == pyrnn.__version__
    assert json.loads(m["config"]) == META["config"]
    assert len(m["sha256"]) == 64 and all(isinstance(v, str) for v in m.values())
    assert hdr["w32"]["dtype"] == "F32" and hdr["w32"]["shape"] == [4, 3]
    assert hdr["scalar"]["shape"] == []
    ends = sorted(tuple(v["data_offsets"]) for v in hdr.values())
    assert ends[0][0] == 0 and ends[-1][1] == len(raw) - 8 - n
    for v in hdr.values():  # each array starts aligned to its item size
        itemsize = 1 if v["dtype"] == "BOOL" else int(v["dtype"][1:]) // 8
        assert v["data_offsets"][0] % itemsize == 0


def test_readable_by_safetensors_library(saved):
    st = pytest.importorskip("safetensors.numpy")
    from safetensors import safe_open
    theirs = st.load_file(str(saved))
    src = sample_arrays()
    assert set(theirs) == set(src)
    for k in src:
        assert_bit_equal(src[k], theirs[k])
    with safe_open(str(saved), "np") as f:
        assert json.loads(f.metadata()["metrics"]) == META["metrics"]


def test_reads_plain_safetensors_file(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    p = tmp_path / "torchlike.safetensors"
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    st.save_file({"weight": w, "bias": np.ones(3, np.float64)}, str(p), metadata={"format": "pt"})
    with pytest.raises(ModelFileError, match="not a pyrnn file"):
        load_arrays(p)
    arrays, meta = load_arrays(p, strict=False)
    assert meta == {"format": "pt"}
    assert arrays["weight"].tobytes() == w.tobytes()


def test_header_length_that_looks_like_pickle_magic(tmp_path):
    # a header of 640 bytes starts the file with 0x80 0x02, a pickle's magic
    arrays = {"w": np.arange(3.0)}
    pad = next(k for k in range(1000)
               if len(pio._prepare(arrays, {"pad": "x" * k})[0]) == 0x280)
    path = tmp_path / "m.safetensors"
    save_arrays(path, arrays, {"pad": "x" * pad})
    assert path.read_bytes()[:2] == b"\x80\x02"
    assert load_arrays(path)[0]["w"].tolist() == [0.0, 1.0, 2.0]


def test_deterministic_bytes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    save_arrays(a, sample_arrays(), META)
    save_arrays(b, dict(reversed(list(sample_arrays().items()))), META)
    assert a.read_bytes() == b.read_bytes()


# -- corrupted and wrong files ------------------------------------------------

def rewrite(path, data):
    path.write_bytes(bytes(data))
    return path


def header_span(raw):
    return 8, 8 + int.from_bytes(raw[:8], "little")


@pytest.mark.parametrize("cut", [3, 8, 40, -1, -17])
def test_truncated_rejected(saved, cut):
    raw = saved.read_bytes()
    rewrite(saved, raw[:cut])
    with pytest.raises(ModelFileError, match="truncated") as e:
        load_arrays(saved)
    assert str(saved) in str(e.value)


def test_flipped_byte_in_data_rejected(saved):
    raw = bytearray(saved.read_bytes())
    _, end = header_span(raw)
    for pos in (end, end + 17, len(raw) - 1):
        bad = bytearray(raw)
        bad[pos] ^= 0x01
        rewrite(saved, bad)
        with pytest.raises(ModelFileError, match="checksum mismatch"):
            load_arrays(saved)
        with pytest.raises(ModelFileError, match="checksum mismatch"):
            pio.load_metadata(saved)


def test_flipped_byte_in_header_rejected(saved):
    raw = bytearray(saved.read_bytes())
    start, end = header_span(raw)
    text = bytes(raw[start:end])
    # change a tensor name by one bit: valid JSON, caught by the checksum
    i = text.index(b'"w32"') + 1
    bad = bytearray(raw)
    bad[start + i] ^= 0x02  # 'w' -> 'u'
    rewrite(saved, bad)
    with pytest.raises(ModelFileError, match="checksum"):
        load_arrays(saved)
    # a digit of a shape: the size no longer matches
    i = text.index(b'"shape":[4,3]', text.index(b'"w32"')) + len('"shape":[')
    bad = bytearray(raw)
    bad[start + i] ^= 0x01  # 4 -> 5
    rewrite(saved, bad)
    with pytest.raises(ModelFileError, match="w32.*needs"):
        load_arrays(saved)
    # every single-bit flip anywhere in the header is caught (sampled positions)
    for pos in range(start, end, 7):
        for bit in (0x01, 0x20, 0x80):
            bad = bytearray(raw)
            bad[pos] ^= bit
            rewrite(saved, bad)
            with pytest.raises(ModelFileError):
                load_arrays(saved)


@pytest.mark.parametrize("n, word", [
    (0, "header length"), (1 << 40, "header length"), (1 << 63, "header length")])
def test_wrong_header_length_rejected(saved, n, word):
    raw = bytearray(saved.read_bytes())
    raw[:8] = n.to_bytes(8, "little")
    rewrite(saved, raw)
    with pytest.raises(ModelFileError, match=word):
        load_arrays(saved)


def test_header_length_off_by_some_rejected(saved):
    raw = bytearray(saved.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    for m in (n - 8, n + 8, n - 1):
        bad = bytearray(raw)
        bad[:8] = m.to_bytes(8, "little")
        rewrite(saved, bad)
        with pytest.raises(ModelFileError):
            load_arrays(saved)


def test_pickle_file_rejected(tmp_path):
    p = tmp_path / "model.pkl"
    p.write_bytes(pickle.dumps({"w": np.zeros(3)}))
    with pytest.raises(ModelFileError, match="pickle"):
        load_arrays(p)
    with pytest.raises(ModelFileError, match="pickle"):
        pio.load(p)


def test_npz_file_rejected(tmp_path):
    p = tmp_path / "model.npz"
    np.savez(p, w=np.zeros(3))
    with pytest.raises(ModelFileError, match="zip archive"):
        load_arrays(p)
    q = tmp_path / "a.npy"
    np.save(q, np.zeros(3))
    with pytest.raises(ModelFileError, match=".npy"):
        load_arrays(q)


def test_empty_and_random_files_rejected(tmp_path):
    p = tmp_path / "empty.safetensors"
    p.write_bytes(b"")
    with pytest.raises(ModelFileError, match="empty"):
        load_arrays(p)
    r = tmp_path / "random.bin"
    r.write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(ModelFileError, match="random.bin"):
        load_arrays(r)
    t = tmp_path / "text.txt"
    t.write_bytes(b"hello, this is just a text file\n" * 4)
    with pytest.raises(ModelFileError):
        load_arrays(t)


def craft(path, header, data=b""):
    h = json.dumps(header).encode()
    path.write_bytes(len(h).to_bytes(8, "little") + h + data)
    return path


@pytest.mark.parametrize("header, data, word", [
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12), "overlaps"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, bytes(8), "gap"),
    ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8), "needs 12"),
    ({"a": {"dtype": "BF16", "shape": [1], "data_offsets": [0, 2]}}, bytes(2), "BF16"),
    ({"a": {"dtype": "O", "shape": [1], "data_offsets": [0, 8]}}, bytes(8), "dtype"),
    ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, bytes(4), "shape"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, bytes(9), "unexpected bytes"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "x": 1}}, bytes(4), "exactly"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, bytes(4), "data_offsets"),
    ({"__metadata__": {"format": 1}}, b"", "strings"),
    ([1, 2], b"", "header"),
])
def test_crafted_headers_rejected(tmp_path, header, data, word):
    p = craft(tmp_path / "c.safetensors", header, data)
    with pytest.raises(ModelFileError, match=word):
        load_arrays(p, strict=False)


def test_duplicate_names_and_bad_json_rejected(tmp_path):
    p = tmp_path / "d.safetensors"
    h = b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},' \
        b'"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}'
    p.write_bytes(len(h).to_bytes(8, "little") + h + b"\0\0")
    with pytest.raises(ModelFileError, match="duplicate"):
        load_arrays(p, strict=False)
    h = b'{"a": nope}'
    p.write_bytes(len(h).to_bytes(8, "little") + h)
    with pytest.raises(ModelFileError, match="JSON"):
        load_arrays(p, strict=False)


def test_save_argument_errors(tmp_path):
    p = tmp_path / "x"
    with pytest.raises(TypeError, match="dtype"):
        save_arrays(p, {"a": np.array(["s"])})
    with pytest.raises(TypeError, match="dtype"):
        save_arrays(p, {"a": np.zeros(2, np.complex64)})
    with pytest.raises(ValueError, match="__metadata__"):
        save_arrays(p, {"__metadata__": np.zeros(2)})
    with pytest.raises(ValueError, match="reserved"):
        save_arrays(p, {}, {"sha256": "x"})
    with pytest.raises(TypeError, match="JSON"):
        save_arrays(p, {}, {"k": object()})
    assert not p.exists() and os.listdir(tmp_path) == []


# -- atomic save ------------------------------------------------------------

def test_interrupted_save_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    save_arrays(path, {"w": np.arange(5.0)}, {"v": 1})
    before = path.read_bytes()

    def boom(*a, **k):
        raise KeyboardInterrupt("killed during rename")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        save_arrays(path, {"w": np.zeros(1000)}, {"v": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.safetensors"]


def test_interrupted_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    save_arrays(path, {"w": np.arange(5.0)}, {"v": 1})
    before = path.read_bytes()
    real_fsync = os.fsync
    calls = []

    def failing_fsync(fd):  # the disk fills up after part of the data is written
        calls.append(fd)
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space"):
        save_arrays(path, {"w": np.ones((100, 100))}, {"v": 2})
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert calls and path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.safetensors"]
    arrays, meta = load_arrays(path)
    assert meta == {"v": 1} and arrays["w"].tolist() == [0, 1, 2, 3, 4]


def test_save_replaces_and_keeps_umask_mode(tmp_path):
    path = tmp_path / "m.safetensors"
    save_arrays(path, {"w": np.zeros(2)})
    save_arrays(path, {"w": np.ones(2)})
    assert load_arrays(path)[0]["w"].tolist() == [1.0, 1.0]
    old = os.umask(0o022)
    os.umask(old)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~old)
    assert os.listdir(tmp_path) == ["m.safetensors"]


# -- models -----------------------------------------------------------------

@pio.register_model
class TinyModel:
    def __init__(self, n_in, n_out):
        self.n_in, self.n_out = n_in, n_out
        rng = np.random.default_rng(0)
        self.w = rng.normal(size=(n_out, n_in)).astype(np.float32)
        self.b = np.zeros(n_out, np.float64)

    def config(self):
        return {"class": "TinyModel", "n_in": self.n_in, "n_out": self.n_out}

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg["n_in"], cfg["n_out"])

    def state_dict(self):
        return {"weight": self.w.copy(), "bias": self.b.copy()}

    def load_state_dict(self, d):
        if set(d) != {"weight", "bias"} or d["weight"].shape != self.w.shape:
            raise ValueError("bad state")
        self.w, self.b = np.array(d["weight"]), np.array(d["bias"])


def test_model_save_load(tmp_path):
    m = TinyModel(3, 2)
    m.w = np.random.default_rng(5).normal(size=(2, 3)).astype(np.float32)
    m.b = np.array([0.5, -1e-300])
    extra = {"vocab": pyrnn.Vocab.build("hello").to_dict(), "metrics": {"bpc": 1.5}}
    path = tmp_path / "tiny.safetensors"
    pyrnn.save(m, path, metadata=extra)
    m2 = pyrnn.load(path)
    assert isinstance(m2, TinyModel) and (m2.n_in, m2.n_out) == (3, 2)
    assert m2.w.tobytes() == m.w.tobytes() and m2.b.tobytes() == m.b.tobytes()
    assert m2.w.dtype == np.float32
    assert m2.metadata == extra
    assert pyrnn.Vocab.from_dict(m2.metadata["vocab"]) == pyrnn.Vocab.build("hello")
    meta = pio.load_metadata(path)
    assert meta["config"] == m.config() and meta["metrics"] == {"bpc": 1.5}


def test_model_errors(tmp_path):
    path = tmp_path / "x.safetensors"
    save_arrays(path, {"w": np.zeros(1)}, {"config": {"class": "NoSuchModel"}})
    with pytest.raises(ModelFileError, match="unknown model class 'NoSuchModel'.*TinyModel"):
        pio.load(path)
    save_arrays(path, {"w": np.zeros(1)})
    with pytest.raises(ModelFileError, match="no model config"):
        pio.load(path)
    with pytest.raises(ValueError, match="reserved"):
        pio.save(TinyModel(1, 1), path, metadata={"config": 1})
    with pytest.raises(TypeError, match="config"):
        pio.save(object(), path)

    class NoFromConfig:
        def load_state_dict(self, d):
            pass
    with pytest.raises(TypeError, match="from_config"):
        pio.register_model(NoFromConfig)

    class Other(TinyModel):
        pass
    Other.__name__ = "TinyModel"
    with pytest.raises(ValueError, match="already taken"):
        pio.register_model(Other)
    pio.register_model(Other, name="TinyOther")
    assert pio.registered_models()["TinyOther"] is Other
