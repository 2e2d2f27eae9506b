# Row-major GEMM over scipy's Fortran BLAS (column-major, pointer arguments,
# 32-bit sizes). Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T,
# so the operands are swapped instead of transposing any data.
from cython cimport floating
from scipy.linalg.cython_blas cimport sgemm, dgemm, sgemv, dgemv


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k,
                      floating alpha, const floating *a, int lda,
                      const floating *b, int ldb, floating beta,
                      floating *c, int ldc) noexcept nogil:
    """C (m, n) = alpha * op(A) (m, k) @ op(B) (k, n) + beta * C, all row-major."""
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    cdef int inc = lda if trans_a else 1, one = 1
    if m <= 0 or n <= 0:
        return
    if m == 1:
        # One row (batch 1): GEMV reads the weights once; OpenBLAS's GEMM with
        # a single row is several times slower.
        if trans_b:     # c = B a, B row-major (n, k) = column-major (k, n)
            tb = b'T'
            if floating is float:
                sgemv(&tb, &k, &n, &alpha, <float *> b, &ldb, <float *> a, &inc, &beta, c, &one)
            else:
                dgemv(&tb, &k, &n, &alpha, <double *> b, &ldb, <double *> a, &inc, &beta, c, &one)
        else:           # c = B^T a, B row-major (k, n) = column-major (n, k)
            tb = b'N'
            if floating is float:
                sgemv(&tb, &n, &k, &alpha, <float *> b, &ldb, <float *> a, &inc, &beta, c, &one)
            else:
                dgemv(&tb, &n, &k, &alpha, <double *> b, &ldb, <double *> a, &inc, &beta, c, &one)
        return
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float *> b, &ldb, <float *> a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double *> b, &ldb, <double *> a, &lda,
              &beta, c, &ldc)
