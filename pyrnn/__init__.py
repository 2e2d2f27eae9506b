"""pyrnn: fast CPU recurrent neural networks (RNN, GRU, LSTM) exact to PyTorch.

Names are imported lazily so that ``import pyrnn`` stays cheap and the pure-Python
parts (losses, optimizers, vocabularies, file I/O) work without touching the
compiled core.
"""
import importlib

__version__ = "0.1.0"

_LAZY = {
    # layers and cells (compiled core)
    "RNN": "layers", "GRU": "layers", "LSTM": "layers", "MinimalGRU": "layers",
    "RNNCell": "cells", "GRUCell": "cells", "LSTMCell": "cells",
    "MinimalGRUCell": "cells",
    # threads
    "set_num_threads": "_threads", "get_num_threads": "_threads",
    # building blocks and training
    "Linear": "nn", "Embedding": "nn", "Dropout": "nn", "Sequential": "nn",
    "clip_grad_norm": "clip", "clip_grad_value": "clip",
    "Vocab": "vocab",
    "save": "io", "load": "io",
}

_SUBMODULES = {
    "layers", "cells", "reference", "nn", "losses", "optim", "clip", "init",
    "vocab", "sampling", "io", "models", "train", "bench", "cli", "stream",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name):
    if name in _LAZY:
        mod = importlib.import_module("." + _LAZY[name], __name__)
        val = getattr(mod, name)
        globals()[name] = val
        return val
    if name in _SUBMODULES:
        return importlib.import_module("." + name, __name__)
    raise AttributeError(f"module 'pyrnn' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | _SUBMODULES)
