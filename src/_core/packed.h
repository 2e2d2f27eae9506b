/* Small recurrent GEMM with the weights packed once per call.
 *
 * Per step the recurrent product is gh (M x N) = h (M x K) W^T with W (N x K)
 * fixed for the whole sequence. BLAS repacks W on every call, which at small
 * batch costs as much as the product itself; here W is packed once into
 * panels of 16 rows (k-major, zero-padded) and an AVX2+FMA micro-kernel
 * computes 6 (or 4) rows x 16 columns at a time; at the AVX-512 level, 8 rows
 * x 32 columns (two panels), with the same per-element operations. Each
 * output is a plain sum over k in order, so the result does not depend on how
 * rows are split.
 */
#ifndef PYRNN_PACKED_H
#define PYRNN_PACKED_H
#include <stddef.h>

/* floats needed to pack an N x K matrix */
size_t pyrnn_packed_size(int N, int K);
/* P <- panels of the N x K matrix whose (r, k) element is W[r*rs + k*ks]:
 * rs = K, ks = 1 for W itself, rs = 1, ks = N for the transpose of a K x N W. */
void pyrnn_pack_f(int N, int K, const float *W, ptrdiff_t rs, ptrdiff_t ks, float *P);
/* P <- panels of [W1 | W2] (N x (K1 + K2)), W1 and W2 row-major N x K1 and
 * N x K2 with row strides ld1 and ld2: the weights of a product with [x | h]. */
void pyrnn_pack_cat_f(int N, int K1, const float *W1, int ld1, int K2, const float *W2, int ld2,
                      float *P);
/* C (M x N, row stride ldc) = A (M x K, row stride lda) @ W^T, W packed in P;
 * acc = 1 adds to C instead. Requires AVX2+FMA (pyrnn_simd_active()). */
void pyrnn_gemm_packed_f(int M, int N, int K, const float *A, int lda, const float *P,
                         float *C, int ldc, int acc);
/* The same with A = [A1 | A2]: K1 columns of A1 (row stride lda1), then K2
 * of A2 (lda2), summed as one row of K1 + K2; P packs K1 + K2 columns. */
void pyrnn_gemm_packed2_f(int M, int N, int K1, const float *A1, int lda1, int K2,
                          const float *A2, int lda2, const float *P, float *C, int ldc, int acc);
/* Either of the above with the panels taken last to first when rev != 0: the
 * same bits (each output sums its own panel), but alternating rev from one
 * step to the next starts each step on the weights the previous one read
 * last, still in L2. Weights of 4 MB (LSTM H = 512) on one core: 145 -> 91 us
 * a matrix-vector step. */
void pyrnn_gemm_packed_dir_f(int M, int N, int K, const float *A, int lda, const float *P,
                             float *C, int ldc, int acc, int rev);
void pyrnn_gemm_packed2_dir_f(int M, int N, int K1, const float *A1, int lda1, int K2,
                              const float *A2, int lda2, const float *P, float *C, int ldc,
                              int acc, int rev);
/* Seconds for `reps` streaming reads of p[0..n): the fastest a kernel can take
 * in weights of that size, the memory floor in `pyrnn bench`. *sink gets the
 * sum, so that the reads are not optimised away. */
double pyrnn_read_seconds(const float *p, size_t n, int reps, float *sink);
#endif
