/* Weight-gradient product: C (M x N) += A^T B, A (K x M) and B (K x N)
 * row-major, K long (every row of a whole sequence), M and N small.
 *
 * This is the shape of dW = dG^T Z after the backward time loop: OpenBLAS
 * copies both long operands into its panel layout first, which costs about
 * a third of the product here. This kernel reads them in place: per k, a row
 * of B (16 columns) and 6 broadcasts from a row of A feed 12 accumulators.
 * Each C element is one in-order sum over k that starts from its old value,
 * so the bits do not depend on how the rows of C are split across threads.
 * AVX2 tiles of 6 x 16, and 8 x 32 at the AVX-512 level (11-15% faster, the
 * same bits). The AVX2 kernel measured 1.2-1.5x OpenBLAS for M <= 256,
 * N <= 64-128 (K = 3200). From M * N = 65536 on, the tiles read copies of
 * 256-row blocks of A and B whose row strides are not powers of two (in
 * place, the rows one tile reads evict each other from L1): 72 -> 80-84
 * GFLOP/s at M = 512-2048, N = 256 on Zen 4, against OpenBLAS's 60-70. The
 * caller keeps OpenBLAS past 1024 x 256 per thread.
 */
#ifndef PYRNN_GEMM_TN_H
#define PYRNN_GEMM_TN_H

/* Requires AVX2+FMA (pyrnn_simd_active()). */
void pyrnn_gemm_tn_f(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                     float *C, int ldc);
#endif
