"""Build of the compiled core, pyrnn._core.

OpenMP is probed with a tiny test program: without it the extension still
builds (single-threaded) and the build prints a clear warning; the test suite
has a test that fails when OpenMP is missing. No -march=native and no
-ffast-math: the AVX2 kernels are selected per function and at run time.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import warnings

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
CORE = os.path.join("src", "_core")


def openmp_flags():
    """Return (compile, link) flags for OpenMP, or ([], []) if unusable."""
    if os.environ.get("PYRNN_NO_OPENMP"):
        return [], []
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc.split()[0]) is None:
        return [], []
    src = "#include <omp.h>\nint main(void){int n=0;\n#pragma omp parallel reduction(+:n)\nn+=1;\nreturn n>0?0:1;}\n"
    with tempfile.TemporaryDirectory() as d:
        c = os.path.join(d, "probe.c")
        with open(c, "w") as f:
            f.write(src)
        try:
            r = subprocess.run(cc.split() + ["-fopenmp", c, "-o", os.path.join(d, "probe")],
                               capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return [], []
        if r.returncode == 0:
            return ["-fopenmp"], ["-fopenmp"]
    return [], []


omp_c, omp_l = openmp_flags()
if not omp_c:
    msg = ("pyrnn: OpenMP was not found; building the core single-threaded. "
           "Install a compiler with OpenMP (gcc, or clang + libomp) for threads.")
    warnings.warn(msg)
    print("WARNING: " + msg, file=sys.stderr)

ext = Extension(
    "pyrnn._core",
    sources=[os.path.join(CORE, "_core.pyx"), os.path.join(CORE, "gates.c"),
             os.path.join(CORE, "packed.c"), os.path.join(CORE, "gemm_tn.c"),
             os.path.join(CORE, "pair.c")],
    include_dirs=[CORE, np.get_include()],
    depends=[os.path.join(CORE, f) for f in ("gates.h", "gates_impl.h", "gates_avx2.h", "packed.h", "gemm_tn.h",
                                                "pair.h", "handoff.h", "spin.h", "blas.pxd", "gates.pxd")],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    extra_compile_args=["-O3", "-std=gnu11", "-fno-strict-aliasing", "-pthread"] + omp_c,
    extra_link_args=omp_l + ["-pthread"],
)

setup(
    ext_modules=cythonize(
        [ext],
        include_path=[CORE],
        compiler_directives={"language_level": 3, "boundscheck": False,
                             "wraparound": False, "cdivision": True},
    ),
)
