"""Building blocks and the module protocol shared by every pyrnn layer.

A module owns ``params`` (name -> live array; optimizers update these in place)
and ``grads`` (same keys and shapes; backward ADDS into them). Inference is
``forward(x)`` / ``m(x)``; training is ``y, backward = m.forward_train(x)``,
where ``backward(dy)`` adds parameter gradients and returns dx (thinc-style).

Composite modules register children by attribute assignment, as in torch:
their ``params``/``grads``/``state_dict`` are the union of the children's,
with dotted names (``encoder.weight_ih_l0``).
"""
from collections.abc import Mapping

import numpy as np

from ._gemm import matmul

__all__ = [
    "Module", "Linear", "Embedding", "Dropout", "Sequential",
    "as_float_array", "as_index_array", "check_shape", "check_dtype", "once",
]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# ---------------------------------------------------------------- validation

def check_dtype(dtype):
    """Normalise a layer dtype; only float32 and float64 are supported."""
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"dtype must be np.float32 or np.float64, got {dtype!r}") from e
    if dt not in _FLOAT_DTYPES:
        raise TypeError(f"dtype must be np.float32 or np.float64, got {dt}")
    return dt


def _to_numpy(x):
    # torch tensors that require grad refuse np.asarray; duck-type so we never
    # import torch.
    if not isinstance(x, np.ndarray) and hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
    return np.asarray(x)


def as_float_array(x, dtype, name="x"):
    """Return ``x`` as an ndarray of ``dtype``, copying only when needed.

    Float input of another precision is converted; integer, bool, complex,
    object and string input raises TypeError (silently rounding ids or
    dropping an imaginary part would hide a bug in the caller).
    """
    try:
        arr = _to_numpy(x)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{name}: cannot convert {type(x).__name__} to an array: {e}") from e
    if arr.dtype.kind != "f":
        raise TypeError(
            f"{name}: expected a floating-point array, got dtype {arr.dtype}")
    return arr.astype(dtype, copy=False)


def as_index_array(x, name="ids"):
    """Return integer ids as an int64 array; float/bool/complex ids raise TypeError."""
    try:
        arr = _to_numpy(x)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{name}: cannot convert {type(x).__name__} to an array: {e}") from e
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected an integer array, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name}: id {arr.max()} is too large")
    return arr.astype(np.int64, copy=False)


def _fmt_shape(shape):
    parts = ["*" if s is None else str(s) for s in shape]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def check_shape(name, arr, expected):
    """Raise ValueError unless ``arr.shape`` matches ``expected``.

    ``expected`` entries are ints (exact), or None / a string label (any size;
    the label only makes the message readable, e.g. ``("T", "B", 8)``).
    """
    shape = arr.shape
    ok = len(shape) == len(expected) and all(
        isinstance(e, (str, type(None))) or s == e for s, e in zip(shape, expected))
    if not ok:
        raise ValueError(
            f"{name}: expected shape {_fmt_shape(expected)}, got {tuple(shape)}")
    return arr


def once(fn, what="backward"):
    """Wrap a backward closure so that a second call raises RuntimeError.

    The closure's saved activations are released after the first call, so a
    second call could only produce wrong gradients. A call rejected for bad
    arguments (TypeError/ValueError, raised before anything is computed) does
    not count, so the caller can retry with corrected input.
    """
    called = False

    def wrapper(*args, **kwargs):
        nonlocal called
        if called:
            raise RuntimeError(
                f"{what} was already called for this forward_train; "
                "run forward_train again to get a new one")
        called = True
        try:
            return fn(*args, **kwargs)
        except (TypeError, ValueError):
            called = False
            raise

    wrapper.__wrapped__ = fn
    return wrapper


def _is_module(obj):
    return (not isinstance(obj, type)
            and isinstance(getattr(obj, "params", None), Mapping)
            and isinstance(getattr(obj, "grads", None), Mapping)
            and callable(getattr(obj, "state_dict", None)))


def _as_rng(seed):
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


# ---------------------------------------------------------------- base class

class Module:
    """Base of every pyrnn layer.

    Leaf subclasses set ``self.params`` and ``self.grads`` (dicts of arrays in
    the module's dtype) or call ``_init_params``. Assigning another module to
    an attribute registers it as a child; a module with children exposes the
    union of its own and its children's parameters under dotted names.
    A module that draws random numbers keeps its generator in ``self.rng``
    so checkpoints can save it (``rng_state`` / ``set_rng_state``).
    """

    dtype = np.dtype(np.float32)  # subclasses set their own via check_dtype

    # -- registration ------------------------------------------------------
    def __setattr__(self, name, value):
        mods = self.__dict__.get("_modules")
        if _is_module(value) and value is not self:
            if mods is None:
                mods = {}
                object.__setattr__(self, "_modules", mods)
            mods[name] = value
        elif mods is not None and name in mods:
            del mods[name]
        object.__setattr__(self, name, value)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward")

    def children(self):
        """(name, module) pairs of the direct children, in registration order."""
        return list(self.__dict__.get("_modules", {}).items())

    def named_modules(self, prefix=""):
        """Yield (dotted name, module) for this module and all descendants."""
        yield prefix, self
        for name, m in self.children():
            full = f"{prefix}.{name}" if prefix else name
            if isinstance(m, Module):
                yield from m.named_modules(full)
            else:
                yield full, m

    # -- parameters --------------------------------------------------------
    @property
    def params(self):
        own = self.__dict__.get("_params")
        if own is None:
            own = {}
            object.__setattr__(self, "_params", own)
        if not self.__dict__.get("_modules"):
            return own  # leaf: the very dict the subclass set, so edits stick
        return self._union("params", own)

    @params.setter
    def params(self, value):
        object.__setattr__(self, "_params", dict(value))

    @property
    def grads(self):
        own = self.__dict__.get("_grads")
        if own is None:
            own = {}
            object.__setattr__(self, "_grads", own)
        if not self.__dict__.get("_modules"):
            return own
        return self._union("grads", own)

    @grads.setter
    def grads(self, value):
        object.__setattr__(self, "_grads", dict(value))

    def _union(self, attr, own):
        out = dict(own)
        for name, m in self.children():
            for k, v in getattr(m, attr).items():
                out[f"{name}.{k}"] = v
        return out

    def _init_params(self, arrays):
        """Set params from a dict of arrays (cast to self.dtype, C-contiguous)
        and matching zero grads."""
        self.params = {k: np.ascontiguousarray(v, dtype=self.dtype) for k, v in arrays.items()}
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def zero_grad(self):
        """Set every gradient to zero, in place."""
        for g in self.grads.values():
            g[...] = 0

    def params_updated(self):
        """Called after parameters changed in place (optimizer step, load).

        Leaf layers that cache derived data (packed weights) override this;
        containers forward it to their children.
        """
        for _, m in self.children():
            fn = getattr(m, "params_updated", None)
            if fn is not None:
                fn()

    def state_dict(self):
        """A new dict of copies of every parameter (PyTorch names)."""
        return {k: np.array(v, copy=True) for k, v in self.params.items()}

    def load_state_dict(self, state_dict, strict=True):
        """Copy values from any mapping of array-likes (torch tensors too).

        Every problem (missing or unexpected key, wrong shape, non-numeric
        value) is collected and reported in one ValueError; nothing is
        written unless everything checks out. ``strict=False`` tolerates
        missing and unexpected keys (as in torch) but never a wrong shape.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                f"load_state_dict: expected a mapping, got {type(state_dict).__name__}")
        params = self.params
        missing = [k for k in params if k not in state_dict] if strict else []
        unexpected = [k for k in state_dict if k not in params] if strict else []
        problems, staged = [], {}
        for k, p in params.items():
            if k not in state_dict:
                continue
            try:
                v = _to_numpy(state_dict[k])
            except Exception as e:  # noqa: BLE001 - reported below
                problems.append(f"{k}: cannot convert to an array ({e})")
                continue
            if v.dtype.kind not in "fiub":
                problems.append(f"{k}: expected real numbers, got dtype {v.dtype}")
            elif v.shape != p.shape:
                problems.append(
                    f"{k}: expected shape {tuple(p.shape)}, got {tuple(v.shape)}")
            else:
                staged[k] = v
        if missing or unexpected or problems:
            msg = [f"{type(self).__name__}.load_state_dict:"]
            if missing:
                msg.append(f"missing keys {missing}")
            if unexpected:
                msg.append(f"unexpected keys {unexpected}")
            if problems:
                msg.append("wrong values: " + "; ".join(problems))
            raise ValueError(" ".join(msg))
        for k, v in staged.items():
            np.copyto(params[k], v, casting="unsafe")
        self.params_updated()

    # -- random state ------------------------------------------------------
    def rng_state(self):
        """Bit-generator states of every ``rng`` in this module tree."""
        out = {}
        for name, m in self.named_modules():
            rng = getattr(m, "rng", None)
            if isinstance(rng, np.random.Generator):
                out[name] = rng.bit_generator.state
        return out

    def set_rng_state(self, states):
        """Restore states from ``rng_state()``."""
        mods = dict(self.named_modules())
        bad = [k for k in states if not isinstance(getattr(mods.get(k), "rng", None),
                                                   np.random.Generator)]
        if bad:
            raise ValueError(f"set_rng_state: no generator at {bad}")
        for k, st in states.items():
            mods[k].rng.bit_generator.state = st

    # -- helpers for subclasses --------------------------------------------
    def _input(self, x, name="x"):
        return as_float_array(x, self.dtype, name)

    def __repr__(self):
        kids = self.children()
        if not kids:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}("]
        for name, m in kids:
            lines.append(f"  ({name}): " + repr(m).replace("\n", "\n  "))
        lines.append(")")
        return "\n".join(lines)

    def extra_repr(self):
        return ""


# ---------------------------------------------------------------- layers

class Linear(Module):
    """y = x W^T + b over the last axis; any leading dims form ONE GEMM.

    ``weight`` (out, in) and ``bias`` (out,) as in torch.nn.Linear, both
    initialised U(-1/sqrt(in), 1/sqrt(in)) (torch's default).
    """

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32, seed=None):
        in_features, out_features = int(in_features), int(out_features)
        if in_features < 0 or out_features < 0:
            raise ValueError(
                f"Linear: in_features and out_features must be >= 0, "
                f"got {in_features}, {out_features}")
        self.in_features, self.out_features = in_features, out_features
        self.dtype = check_dtype(dtype)
        self.rng = _as_rng(seed)
        k = 1.0 / np.sqrt(in_features) if in_features > 0 else 0.0
        arrays = {"weight": self.rng.uniform(-k, k, (out_features, in_features))}
        if bias:
            arrays["bias"] = self.rng.uniform(-k, k, (out_features,))
        self._init_params(arrays)

    @property
    def has_bias(self):
        return "bias" in self.params

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.has_bias}, dtype={self.dtype.name}")

    def _check(self, x):
        x = self._input(x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"Linear: x expected shape (..., {self.in_features}), got {tuple(x.shape)}")
        return x

    def _apply(self, x2):
        y = matmul(x2, self.params["weight"], trans_b=True)
        if "bias" in self.params:
            y += self.params["bias"]
        return y

    def forward(self, x):
        x = self._check(x)
        lead = x.shape[:-1]
        return self._apply(x.reshape(-1, self.in_features)).reshape(*lead, self.out_features)

    def forward_train(self, x):
        x = self._check(x)
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        y = self._apply(x2).reshape(*lead, self.out_features)

        def backward(dy):
            dy = as_float_array(dy, self.dtype, "dy")
            check_shape("dy", dy, y.shape)
            dy2 = dy.reshape(-1, self.out_features)
            matmul(dy2, x2, out=self.grads["weight"], trans_a=True, beta=1.0)
            if "bias" in self.grads:
                self.grads["bias"] += dy2.sum(axis=0)
            return matmul(dy2, self.params["weight"]).reshape(x.shape)

        return y, once(backward, "Linear backward")


class Embedding(Module):
    """Lookup table: integer ids (any shape) -> vectors (..., embedding_dim).

    ``weight`` (num_embeddings, embedding_dim) ~ N(0, 1) as in torch; the
    ``padding_idx`` row starts at zero and never receives gradient. Backward
    returns None (ids have no gradient).
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None,
                 dtype=np.float32, seed=None):
        num_embeddings, embedding_dim = int(num_embeddings), int(embedding_dim)
        if num_embeddings < 1 or embedding_dim < 0:
            raise ValueError(
                f"Embedding: num_embeddings must be >= 1 and embedding_dim >= 0, "
                f"got {num_embeddings}, {embedding_dim}")
        if padding_idx is not None:
            padding_idx = int(padding_idx)
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(
                    f"Embedding: padding_idx must be in [{-num_embeddings}, "
                    f"{num_embeddings}), got {padding_idx}")
            padding_idx %= num_embeddings  # torch also normalises negatives
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx = padding_idx
        self.dtype = check_dtype(dtype)
        self.rng = _as_rng(seed)
        w = self.rng.standard_normal((num_embeddings, embedding_dim))
        if padding_idx is not None:
            w[padding_idx] = 0.0
        self._init_params({"weight": w})

    def extra_repr(self):
        return (f"{self.num_embeddings}, {self.embedding_dim}, "
                f"padding_idx={self.padding_idx}, dtype={self.dtype.name}")

    def _check(self, ids):
        ids = as_index_array(ids, "ids")
        if ids.size:
            lo, hi = ids.min(), ids.max()
            if lo < 0 or hi >= self.num_embeddings:
                bad = lo if lo < 0 else hi
                raise ValueError(
                    f"Embedding: ids must be in [0, {self.num_embeddings}), got {bad}")
        return ids

    def forward(self, ids):
        ids = self._check(ids)
        return self.params["weight"][ids]  # fancy indexing copies: no aliasing

    def forward_train(self, ids):
        ids = self._check(ids)
        y = self.params["weight"][ids]

        def backward(dy):
            dy = as_float_array(dy, self.dtype, "dy")
            check_shape("dy", dy, y.shape)
            flat = ids.reshape(-1)
            dy2 = dy.reshape(-1, self.embedding_dim)
            if self.padding_idx is not None:
                keep = flat != self.padding_idx
                flat, dy2 = flat[keep], dy2[keep]
            if flat.size:
                import scipy.sparse  # here, not at the top: it costs ~0.2 s to import
                # scatter-add with repeats as a sparse (unique ids x N) matmul:
                # several times faster than np.add.at, and only touched rows are written
                uniq, inv = np.unique(flat, return_inverse=True)
                sel = scipy.sparse.csr_matrix(
                    (np.ones(flat.size, self.dtype), (inv, np.arange(flat.size))),
                    shape=(uniq.size, flat.size))
                self.grads["weight"][uniq] += sel @ dy2
            return None

        return y, once(backward, "Embedding backward")


class Dropout(Module):
    """Inverted dropout: in forward_train, zero each element with probability
    ``p`` and scale the rest by 1/(1-p); forward (inference) is the identity.
    Output keeps the input's float dtype."""

    def __init__(self, p=0.5, seed=None):
        p = float(p)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p = p
        self.rng = _as_rng(seed)
        self.params, self.grads = {}, {}

    def extra_repr(self):
        return f"p={self.p}"

    @staticmethod
    def _float(x, name="x"):
        arr = _to_numpy(x)
        if arr.dtype.kind != "f":
            raise TypeError(f"Dropout: {name} expected a floating-point array, got dtype {arr.dtype}")
        return arr

    def forward(self, x):
        return self._float(x)

    def forward_train(self, x):
        x = self._float(x)
        if self.p == 0.0:
            mask = None
            y = x.copy()
        else:
            # p == 1 keeps nothing (scale would be inf; torch returns zeros)
            scale = 0.0 if self.p == 1.0 else 1.0 / (1.0 - self.p)
            rdt = x.dtype if x.dtype in _FLOAT_DTYPES else np.float64
            keep = self.rng.random(x.shape, dtype=rdt) >= self.p
            mask = keep.astype(x.dtype) * x.dtype.type(scale)
            y = x * mask

        def backward(dy):
            dy = self._float(dy, "dy")
            check_shape("dy", dy, y.shape)
            return dy.copy() if mask is None else dy * mask

        return y, once(backward, "Dropout backward")


class Sequential(Module):
    """Chain of modules, named by keyword (``Sequential(encoder=..., head=...)``)
    or by position (``"0"``, ``"1"``, ... as in torch).

    ``forward`` feeds each module's output to the next. A module returning a
    tuple (a recurrent layer's ``(y, h_n)``) passes on only its first element;
    to use the final state, write a small Module subclass instead.
    """

    def __init__(self, *modules, **named_modules):
        for i, m in enumerate(modules):
            self._add(str(i), m)
        for name, m in named_modules.items():
            if name.isdigit():
                raise ValueError(f"Sequential: keyword name {name!r} clashes with positional names")
            self._add(name, m)

    def _add(self, name, m):
        if not _is_module(m):
            raise TypeError(f"Sequential: {name!r} is not a module (needs params, grads, state_dict)")
        setattr(self, name, m)

    def __len__(self):
        return len(self.children())

    def __iter__(self):
        return iter(m for _, m in self.children())

    def __getitem__(self, key):
        kids = self.children()
        if isinstance(key, str):
            return dict(kids)[key]
        return kids[key][1]

    def forward(self, x):
        for m in self:
            x = m(x)
            if isinstance(x, tuple):
                x = x[0]
        return x

    def forward_train(self, x):
        backs = []
        for m in self:
            out = m.forward_train(x)
            x, back = out[0], out[-1]
            backs.append(back)

        def backward(dy):
            for back in reversed(backs):
                dy = back(dy)
                if isinstance(dy, tuple):
                    dy = dy[0]
                if dy is None:
                    break
            return dy

        return x, once(backward, "Sequential backward")
