"""Model files: safetensors, written by hand, never executing code on load.

Layout (the safetensors format, so ``safetensors.numpy.load_file`` reads it)::

    8 bytes      N, unsigned little-endian: length of the header
    N bytes      UTF-8 JSON, padded with spaces to a multiple of 8:
                 {"__metadata__": {str: str, ...},
                  "<name>": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}, ...}
    the rest     the data: each array's raw little-endian C-order bytes at
                 [b, e) relative to the data start, contiguous, no gaps

``__metadata__`` (string values only) holds

- ``format`` = ``"pyrnn"``, ``format_version`` = ``"1"``, ``pyrnn_version``;
- ``sha256``: hex SHA-256 of a canonical JSON of the rest of the header
  (tensor table and metadata, this entry excluded), a NUL byte, then the
  data section; so a changed byte anywhere, names and shapes included, is
  caught, not only in the data;
- every entry of the caller's ``metadata`` dict, each value JSON-encoded
  (``config``, a vocabulary, training metrics, ...). JSON turns tuples into
  lists; otherwise ``load_arrays`` returns the dict that was saved.

Arrays are written largest item size first, so with the 8-byte header
padding every array starts aligned to its item size, as safetensors does.

Saving is atomic: a temporary file in the same directory is written,
flushed and fsynced, renamed over the target with ``os.replace`` and the
directory is fsynced; on any failure the temporary file is removed and the
old file is untouched.

``save(model, path)`` stores ``model.state_dict()`` and ``model.config()``
(a JSON-able dict with a ``"class"`` key) as the ``config`` entry.
``load(path)`` looks the class up in the registry filled by
:func:`register_model`, calls ``cls.from_config(config)`` (the full dict,
``"class"`` included) and ``model.load_state_dict(arrays)``, and sets
``model.metadata`` to the other metadata entries. ``load_metadata(path)``
returns all entries (``config`` included) without building the model.
"""
import hashlib
import json
import os
import secrets

import numpy as np

from . import __version__

__all__ = [
    "ModelFileError", "save_arrays", "load_arrays", "save", "load",
    "load_metadata", "register_model", "registered_models",
]

FORMAT = "pyrnn"
FORMAT_VERSION = "1"
_RESERVED = ("format", "format_version", "pyrnn_version", "sha256")

# safetensors dtype name <-> little-endian numpy dtype; nothing else is read.
_DTYPES = {
    "BOOL": np.dtype("|b1"),
    "U8": np.dtype("|u1"), "I8": np.dtype("|i1"),
    "U16": np.dtype("<u2"), "I16": np.dtype("<i2"), "F16": np.dtype("<f2"),
    "U32": np.dtype("<u4"), "I32": np.dtype("<i4"), "F32": np.dtype("<f4"),
    "U64": np.dtype("<u8"), "I64": np.dtype("<i8"), "F64": np.dtype("<f8"),
}
_NAME_OF = {(d.kind, d.itemsize): name for name, d in _DTYPES.items()}

# The safetensors library refuses headers above 100 MB; so do we, before
# allocating anything a corrupt length field asks for.
_MAX_HEADER = 100_000_000
_CHUNK = 1 << 20


class ModelFileError(ValueError):
    """A file is not a valid pyrnn / safetensors file; the message says why."""


def _err(path, msg):
    return ModelFileError(f"{os.fspath(path)}: {msg}")


def _canonical(table, meta):
    """Bytes hashed before the data: everything in the header but sha256."""
    rest = {k: v for k, v in meta.items() if k != "sha256"}
    return json.dumps({"metadata": rest, "tensors": table}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=True).encode() + b"\0"


def _byte_view(a):
    return a.reshape(-1).view(np.uint8).data


# ---------------------------------------------------------------------------
# writing


def _prepare(arrays, metadata):
    if not isinstance(arrays, dict):
        raise TypeError(f"arrays must be a dict of name -> array, got {type(arrays).__name__}")
    prepared = []
    for name, value in arrays.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"arrays: names must be non-empty strings, got {name!r}")
        if name == "__metadata__":
            raise ValueError("arrays: the name '__metadata__' is reserved by the format")
        a = np.asarray(value)
        key = (a.dtype.kind, a.dtype.itemsize)
        if key not in _NAME_OF:
            raise TypeError(
                f"arrays[{name!r}]: dtype {a.dtype} cannot be stored; use bool, "
                "int8..int64, uint8..uint64 or float16/32/64")
        dname = _NAME_OF[key]
        prepared.append((name, dname, np.asarray(a, dtype=_DTYPES[dname], order="C")))

    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION,
            "pyrnn_version": __version__}
    for k, v in metadata.items():
        if not isinstance(k, str):
            raise TypeError(f"metadata: keys must be strings, got {k!r}")
        if k in _RESERVED:
            raise ValueError(f"metadata: the key {k!r} is reserved by pyrnn")
        try:
            meta[k] = json.dumps(v, sort_keys=True, ensure_ascii=False)
        except (TypeError, ValueError) as e:
            raise TypeError(f"metadata[{k!r}] is not JSON-serialisable: {e}") from None

    # Largest items first keeps every array aligned to its item size.
    prepared.sort(key=lambda t: (-t[2].itemsize, t[0]))
    table, offset = {}, 0
    for name, dname, a in prepared:
        table[name] = {"dtype": dname, "shape": list(a.shape),
                       "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes

    h = hashlib.sha256(_canonical(table, meta))
    for _, _, a in prepared:
        if a.nbytes:
            h.update(_byte_view(a))
    meta["sha256"] = h.hexdigest()

    header = json.dumps({"__metadata__": meta, **table}, separators=(",", ":"),
                        ensure_ascii=False).encode("utf-8")
    header += b" " * (-len(header) % 8)
    return header, [a for _, _, a in prepared]


def _fsync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _open_temp(path):
    d, base = os.path.split(os.path.abspath(path))
    for _ in range(100):
        tmp = os.path.join(d, f".{base}.{secrets.token_hex(6)}.tmp")
        try:
            # mode 0o666 lets the umask decide, as for any new file
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                         0o666)
        except FileExistsError:
            continue
        return fd, tmp
    raise OSError(f"could not create a temporary file next to {path}")


def save_arrays(path, arrays, metadata=None):
    """Write ``arrays`` (dict name -> ndarray) and JSON-able ``metadata`` atomically."""
    path = os.fspath(path)
    header, data = _prepare(arrays, metadata)
    fd, tmp = _open_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(len(header).to_bytes(8, "little"))
            f.write(header)
            for a in data:
                if a.nbytes:
                    f.write(_byte_view(a))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # KeyboardInterrupt too: never leave the temp file
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


# ---------------------------------------------------------------------------
# reading


def _sniff(head):
    """A friendlier name for common wrong files."""
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "a zip archive (.npz or torch .pt?), not a safetensors model file"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle; pyrnn never unpickles files"
    if head.startswith(b"\x93NUMPY"):
        return "a NumPy .npy file, not a safetensors model file"
    if head.startswith(b"\x89HDF"):
        return "an HDF5 file, not a safetensors model file"
    return None


def _no_duplicates(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise ValueError(f"duplicate key {k!r}")
        d[k] = v
    return d


def _is_uint(x):
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _read_header(path, f, size):
    if size == 0:
        raise _err(path, "the file is empty")
    head = f.read(16)
    try:
        return _parse_header(path, f, size, head)
    except ModelFileError:
        # Name common wrong files, but only once parsing failed: a valid
        # header length can begin with the same bytes as a pickle (0x80 0x02).
        what = _sniff(head)
        if what:
            raise _err(path, f"this is {what}") from None
        raise


def _parse_header(path, f, size, head):
    if size < 8:
        raise _err(path, f"too short for a safetensors file ({size} bytes; "
                         "truncated?)")
    n = int.from_bytes(head[:8], "little")
    if n < 2 or n > _MAX_HEADER or n > size - 8:
        raise _err(path, f"header length field says {n} bytes but the file has "
                         f"{size} bytes (truncated, or not a safetensors file)")
    f.seek(8)
    raw = f.read(n)
    if len(raw) != n:
        raise _err(path, "the file ended inside the header (truncated)")
    if raw[:1] != b"{":
        raise _err(path, "the header does not start with '{' (not a safetensors file?)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _err(path, f"the header is not UTF-8 (corrupted?): {e}") from None
    try:
        hdr = json.loads(text, object_pairs_hook=_no_duplicates)
    except ValueError as e:
        raise _err(path, f"the header is not valid JSON (corrupted?): {e}") from None
    if not isinstance(hdr, dict):
        raise _err(path, "the header is not a JSON object")
    return hdr, 8 + n


def _check_table(path, hdr, data_len):
    meta = hdr.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise _err(path, "__metadata__ must map strings to strings")
    entries = []
    for name, info in hdr.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise _err(path, f"tensor {name!r}: entry must have exactly the keys "
                             "dtype, shape, data_offsets")
        dname, shape, offs = info["dtype"], info["shape"], info["data_offsets"]
        if dname not in _DTYPES:
            raise _err(path, f"tensor {name!r}: dtype {dname!r} is not one of "
                             f"{', '.join(_DTYPES)}")
        if not isinstance(shape, list) or not all(_is_uint(s) for s in shape):
            raise _err(path, f"tensor {name!r}: shape must be a list of integers >= 0, "
                             f"got {shape!r}")
        if (not isinstance(offs, list) or len(offs) != 2
                or not all(_is_uint(o) for o in offs) or offs[0] > offs[1]):
            raise _err(path, f"tensor {name!r}: data_offsets must be [begin, end] with "
                             f"0 <= begin <= end, got {offs!r}")
        nbytes = _DTYPES[dname].itemsize
        for s in shape:
            nbytes *= s
        if offs[1] - offs[0] != nbytes:
            raise _err(path, f"tensor {name!r}: {dname} of shape {tuple(shape)} needs "
                             f"{nbytes} bytes but data_offsets span {offs[1] - offs[0]}")
        entries.append((offs[0], offs[1], name, dname, shape))
    entries.sort()
    pos = 0
    for b, e, name, _, _ in entries:
        if b != pos:
            kind = "overlaps the previous tensor" if b < pos else "leaves a gap before it"
            raise _err(path, f"tensor {name!r}: data_offsets {[b, e]} {kind} "
                             f"(expected begin {pos})")
        pos = e
    if pos != data_len:
        if pos > data_len:
            raise _err(path, f"the tensors need {pos} data bytes but the file holds "
                             f"{data_len} (truncated)")
        raise _err(path, f"{data_len - pos} unexpected bytes after the last tensor")
    return meta, entries


def _read(path, strict, want_arrays):
    path = os.fspath(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        hdr, start = _read_header(path, f, size)
        table = {k: v for k, v in hdr.items() if k != "__metadata__"}
        meta, entries = _check_table(path, hdr, size - start)
        if strict:
            if meta.get("format") != FORMAT:
                raise _err(path, f"not a pyrnn file (__metadata__ format is "
                                 f"{meta.get('format')!r}, expected {FORMAT!r}); "
                                 "pass strict=False to read a plain safetensors file")
            if meta.get("format_version") != FORMAT_VERSION:
                raise _err(path, f"unsupported pyrnn file version "
                                 f"{meta.get('format_version')!r} (this pyrnn reads "
                                 f"{FORMAT_VERSION}, written by pyrnn "
                                 f"{meta.get('pyrnn_version')!r})")
            if "sha256" not in meta:
                raise _err(path, "no sha256 checksum in __metadata__")
        h = hashlib.sha256(_canonical(table, meta))
        arrays = {}
        f.seek(start)
        for b, e, name, dname, shape in entries:
            if want_arrays:
                a = np.empty(shape, dtype=_DTYPES[dname])
                if a.nbytes:
                    buf = _byte_view(a)
                    if f.readinto(buf) != a.nbytes:
                        raise _err(path, f"tensor {name!r}: the file ended early (truncated)")
                    h.update(buf)
                arrays[name] = a
            else:
                left = e - b
                while left:
                    chunk = f.read(min(left, _CHUNK))
                    if not chunk:
                        raise _err(path, f"tensor {name!r}: the file ended early (truncated)")
                    h.update(chunk)
                    left -= len(chunk)
    if strict and h.hexdigest() != meta["sha256"]:
        raise _err(path, "checksum mismatch: the file is corrupted (a byte changed "
                         "in the header or the data)")
    if strict:
        user = {}
        for k, v in meta.items():
            if k in _RESERVED:
                continue
            try:
                user[k] = json.loads(v)
            except ValueError as e:
                raise _err(path, f"metadata entry {k!r} is not valid JSON: {e}") from None
    else:
        user = dict(meta)
    # Native byte order and ordinary (aligned, writable, owning) arrays.
    for k, a in arrays.items():
        if not a.dtype.isnative:
            arrays[k] = a.astype(a.dtype.newbyteorder("="))
    return arrays, user


def load_arrays(path, strict=True):
    """Read and validate a file: ``(arrays, metadata)``.

    ``strict=True`` (default) requires a pyrnn file and checks its checksum;
    ``metadata`` is the dict given to :func:`save_arrays`. ``strict=False``
    reads any safetensors file with the dtypes listed above (structure is
    still fully checked) and returns ``__metadata__`` as raw strings.
    Raises :class:`ModelFileError` (a ``ValueError``) naming the file and the fault.
    """
    return _read(path, strict, want_arrays=True)


def load_metadata(path):
    """The metadata dict of a pyrnn file (``config`` included), checksum verified."""
    return _read(path, True, want_arrays=False)[1]


# ---------------------------------------------------------------------------
# models

_REGISTRY = {}
# Modules whose import registers the built-in models; tried on a lookup miss
# so that pyrnn.load works without importing them first.
_BUILTIN_MODULES = ("pyrnn.models",)


def register_model(cls=None, *, name=None):
    """Class decorator: make ``cls`` loadable by :func:`load`.

    Registered under ``name`` or ``cls.__name__``; that must be the
    ``"class"`` entry of ``cls().config()``. Use as ``@register_model`` or
    ``@register_model(name="LM")``.
    """
    def deco(c):
        if not isinstance(c, type):
            raise TypeError(f"register_model needs a class, got {c!r}")
        from_config = getattr(c, "from_config", None)
        if not callable(from_config) or not callable(getattr(c, "load_state_dict", None)):
            raise TypeError(f"register_model: {c.__name__} needs a classmethod "
                            "from_config(cfg) and a method load_state_dict(d)")
        key = name if name is not None else c.__name__
        if not isinstance(key, str) or not key:
            raise TypeError(f"register_model: name must be a non-empty string, got {key!r}")
        old = _REGISTRY.get(key)
        # re-registering the same class (module reload) is fine; a different one is not
        if old is not None and (old.__module__, old.__qualname__) != (c.__module__, c.__qualname__):
            raise ValueError(f"register_model: the name {key!r} is already taken by "
                             f"{old.__module__}.{old.__qualname__}")
        _REGISTRY[key] = c
        return c

    if cls is not None:
        return deco(cls)
    return deco


def registered_models():
    """A copy of the registry: name -> class."""
    return dict(_REGISTRY)


def _lookup(path, cls_name):
    if cls_name not in _REGISTRY:
        import importlib
        for mod in _BUILTIN_MODULES:
            try:
                importlib.import_module(mod)
            except ImportError:
                pass
    cls = _REGISTRY.get(cls_name)
    if cls is None:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise _err(path, f"unknown model class {cls_name!r} (registered: {known}); "
                         "import the module that defines it, decorated with "
                         "@pyrnn.io.register_model")
    return cls


def save(model, path, metadata=None):
    """Save ``model`` (its ``config()`` and ``state_dict()``) and extra ``metadata``."""
    for attr in ("config", "state_dict"):
        if not callable(getattr(model, attr, None)):
            raise TypeError(f"model must have a {attr}() method, got {type(model).__name__}")
    cfg = model.config()
    if not isinstance(cfg, dict) or not isinstance(cfg.get("class"), str):
        raise ValueError("model.config() must return a dict with a string 'class' entry, "
                         f"got {cfg!r}")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    if "config" in metadata:
        raise ValueError("metadata: the key 'config' is reserved for model.config()")
    save_arrays(path, dict(model.state_dict()), {"config": cfg, **metadata})


def load(path):
    """Build the saved model; ``model.metadata`` holds the extra metadata."""
    arrays, meta = load_arrays(path)
    cfg = meta.pop("config", None)
    if not isinstance(cfg, dict) or not isinstance(cfg.get("class"), str):
        raise _err(path, "no model config with a 'class' entry in the metadata (saved "
                         "with save_arrays? read it with load_arrays)")
    cls = _lookup(path, cfg["class"])
    model = cls.from_config(cfg)
    model.load_state_dict(arrays)
    try:
        model.metadata = meta
    except AttributeError:  # __slots__ without 'metadata': use load_metadata
        pass
    return model
