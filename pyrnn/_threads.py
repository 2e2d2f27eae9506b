"""Thread count of the compiled core, and the one-owner rule for BLAS.

pyrnn runs its own OpenMP threads and calls BLAS from inside them, so BLAS
itself must stay on one thread: scipy's OpenBLAS is set to one thread the
first time a compiled layer runs. (Threaded BLAS on the tiny per-step GEMMs is
slower anyway, and BLAS threads spinning beside ours would oversubscribe the
cores.) This affects scipy.linalg's own BLAS calls in the same process;
numpy's BLAS is a separate library and is left alone.
"""
import ctypes
import glob
import os

__all__ = ["set_num_threads", "get_num_threads"]


def _available_cores():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _from_env():
    raw = os.environ.get("PYRNN_NUM_THREADS")
    if raw is None or raw.strip() == "":
        return _available_cores()
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"PYRNN_NUM_THREADS must be a positive integer, got {raw!r}") from None
    if n < 1:
        raise ValueError(f"PYRNN_NUM_THREADS must be a positive integer, got {raw!r}")
    return n


_num_threads = _from_env()
_forked_child = False


def _after_fork_in_child():
    # GNU OpenMP's thread pool does not survive fork: a child that starts a
    # parallel region can hang. A forked child therefore runs on one thread.
    global _num_threads, _forked_child
    _forked_child = True
    _num_threads = 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def set_num_threads(n):
    """Set the number of threads pyrnn's compiled core uses (>= 1)."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, (int,)) and not hasattr(n, "__index__"):
        raise TypeError(f"set_num_threads: n must be an integer, got {type(n).__name__}")
    n = int(n)
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    if _forked_child and n > 1:
        raise RuntimeError(
            "set_num_threads: this process was forked from one that had loaded pyrnn, and "
            "OpenMP threads cannot run after fork, so pyrnn stays on one thread here; start "
            "worker processes with multiprocessing's 'spawn' or 'forkserver' method instead")
    _num_threads = n


def get_num_threads():
    """The number of threads pyrnn's compiled core uses."""
    return _num_threads


_blas_state = {"done": False, "limited": False}


def _scipy_openblas():
    """ctypes handles of the OpenBLAS libraries in scipy's wheel (none for other builds)."""
    import scipy.linalg.cython_blas  # noqa: F401 - makes sure the library is loaded
    import scipy
    libdir = os.path.join(os.path.dirname(os.path.dirname(scipy.__file__)), "scipy.libs")
    libs = []
    for path in sorted(glob.glob(os.path.join(libdir, "*openblas*"))):
        try:
            libs.append(ctypes.CDLL(path))
        except OSError:
            continue
    return libs


def blas_core():
    """The kernel family scipy's OpenBLAS chose for this CPU ("Haswell",
    "SkylakeX", ...), or None when it cannot be told."""
    for lib in _scipy_openblas():
        for sym in ("scipy_openblas_get_corename", "openblas_get_corename"):
            fn = getattr(lib, sym, None)
            if fn is not None:
                fn.argtypes = []
                fn.restype = ctypes.c_char_p
                name = fn()
                return name.decode("ascii", "replace").strip() if name else None
    return None


# OpenBLAS kernel families with 512-bit sgemm kernels
_WIDE_BLAS = {"skylakex", "cooperlake", "sapphirerapids"}


def choose_all_packed(simd_levels, core, env=None):
    """Whether pyrnn's packed kernels should do every float product, BLAS none.

    Yes when this CPU runs pyrnn's AVX-512 tiles but scipy's OpenBLAS uses
    256-bit kernels here (it does on AMD Zen 5, family 26: "Haswell", about
    half the speed of the AVX-512 tiles). Decided from the machine alone, never
    from timing, so one machine always gives the same bits. PYRNN_GEMM=packed
    or =blas overrides it (=auto or unset: this rule)."""
    raw = (os.environ.get("PYRNN_GEMM", "") if env is None else env).strip().lower()
    if raw == "packed":
        return True
    if raw == "blas":
        return False
    if raw not in ("", "auto"):
        raise ValueError(f"PYRNN_GEMM must be auto, packed or blas, got {raw!r}")
    return "avx512" in simd_levels and core is not None and core.lower() not in _WIDE_BLAS


def limit_blas_threads():
    """Hold scipy's OpenBLAS to one thread (idempotent); True if it worked."""
    if _blas_state["done"]:
        return _blas_state["limited"]
    _blas_state["done"] = True
    for lib in _scipy_openblas():
        for sym in ("scipy_openblas_set_num_threads", "openblas_set_num_threads"):
            fn = getattr(lib, sym, None)
            if fn is not None:
                fn.argtypes = [ctypes.c_int]
                fn.restype = None
                fn(1)
                _blas_state["limited"] = True
                return True
    try:  # other BLAS builds (system scipy): threadpoolctl knows them all
        from threadpoolctl import threadpool_limits
        threadpool_limits(1, user_api="blas")
        _blas_state["limited"] = True
    except Exception:  # noqa: BLE001 - optional; without it BLAS keeps its threads
        pass
    return _blas_state["limited"]
