#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "gates.h"     /* pyrnn_simd_level() */
#include "gemm_tn.h"

/* rows of A and B per pass over the tiles of C: the B columns of one tile
 * (KC x 16 floats) and the A rows one tile touches (KC lines) stay in L1
 * while every row block of C uses them (64 measured best of 64/128/256) */
#define KC 64

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>

/* One tile: `rows` (<= 6) rows of C from A's columns a, a+1, ..; 16 columns
 * (masked to `cols` when < 16). Rows past `rows` re-read column 0 and are
 * not stored. always_inline + constant arguments give one straight loop per
 * case. */
__attribute__((target("avx2,fma"), always_inline))
static inline void tn_tile(int kc, const float *a, int lda, const float *b, int ldb,
                           float *c, int ldc, int rows, int cols, int masked)
{
    __m256i m0 = _mm256_setzero_si256(), m1 = m0;
    if (masked) {
        const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(cols), idx);
        m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(cols - 8), idx);
    }
#define LD(p, m) (masked ? _mm256_maskload_ps((p), (m)) : _mm256_loadu_ps(p))
#define ST(p, m, v) do { if (masked) _mm256_maskstore_ps((p), (m), (v)); \
                         else _mm256_storeu_ps((p), (v)); } while (0)
    const float *a1 = rows > 1 ? a + 1 : a, *a2 = rows > 2 ? a + 2 : a;
    const float *a3 = rows > 3 ? a + 3 : a, *a4 = rows > 4 ? a + 4 : a;
    const float *a5 = rows > 5 ? a + 5 : a;
    float *c1 = c + (size_t)ldc, *c2 = c1 + ldc, *c3 = c2 + ldc, *c4 = c3 + ldc, *c5 = c4 + ldc;
    __m256 z = _mm256_setzero_ps();
    __m256 s00 = LD(c, m0), s01 = LD(c + 8, m1);
    __m256 s10 = rows > 1 ? LD(c1, m0) : z, s11 = rows > 1 ? LD(c1 + 8, m1) : z;
    __m256 s20 = rows > 2 ? LD(c2, m0) : z, s21 = rows > 2 ? LD(c2 + 8, m1) : z;
    __m256 s30 = rows > 3 ? LD(c3, m0) : z, s31 = rows > 3 ? LD(c3 + 8, m1) : z;
    __m256 s40 = rows > 4 ? LD(c4, m0) : z, s41 = rows > 4 ? LD(c4 + 8, m1) : z;
    __m256 s50 = rows > 5 ? LD(c5, m0) : z, s51 = rows > 5 ? LD(c5 + 8, m1) : z;
    for (int k = 0; k < kc; k++) {
        const float *bk = b + (size_t)k * ldb;
        size_t o = (size_t)k * lda;
        __m256 b0 = LD(bk, m0), b1 = LD(bk + 8, m1), x;
        x = _mm256_broadcast_ss(a + o);  s00 = _mm256_fmadd_ps(x, b0, s00); s01 = _mm256_fmadd_ps(x, b1, s01);
        x = _mm256_broadcast_ss(a1 + o); s10 = _mm256_fmadd_ps(x, b0, s10); s11 = _mm256_fmadd_ps(x, b1, s11);
        x = _mm256_broadcast_ss(a2 + o); s20 = _mm256_fmadd_ps(x, b0, s20); s21 = _mm256_fmadd_ps(x, b1, s21);
        x = _mm256_broadcast_ss(a3 + o); s30 = _mm256_fmadd_ps(x, b0, s30); s31 = _mm256_fmadd_ps(x, b1, s31);
        if (rows > 4) {
            x = _mm256_broadcast_ss(a4 + o); s40 = _mm256_fmadd_ps(x, b0, s40); s41 = _mm256_fmadd_ps(x, b1, s41);
            x = _mm256_broadcast_ss(a5 + o); s50 = _mm256_fmadd_ps(x, b0, s50); s51 = _mm256_fmadd_ps(x, b1, s51);
        }
    }
    ST(c, m0, s00); ST(c + 8, m1, s01);
    if (rows > 1) { ST(c1, m0, s10); ST(c1 + 8, m1, s11); }
    if (rows > 2) { ST(c2, m0, s20); ST(c2 + 8, m1, s21); }
    if (rows > 3) { ST(c3, m0, s30); ST(c3 + 8, m1, s31); }
    if (rows > 4) { ST(c4, m0, s40); ST(c4 + 8, m1, s41); }
    if (rows > 5) { ST(c5, m0, s50); ST(c5 + 8, m1, s51); }
#undef LD
#undef ST
}

__attribute__((target("avx2,fma")))
static void tn_block(int M, int kc, const float *A, int lda, const float *b, int ldb,
                     float *c, int ldc, int cols)
{
    int m0 = 0;
    if (cols == 16) {
        for (; m0 + 6 <= M; m0 += 6)
            tn_tile(kc, A + m0, lda, b, ldb, c + (size_t)m0 * ldc, ldc, 6, 16, 0);
        for (; m0 < M; m0 += 4) {
            int r = M - m0 < 4 ? M - m0 : 4;
            tn_tile(kc, A + m0, lda, b, ldb, c + (size_t)m0 * ldc, ldc, r, 16, 0);
        }
    } else {
        for (; m0 + 6 <= M; m0 += 6)
            tn_tile(kc, A + m0, lda, b, ldb, c + (size_t)m0 * ldc, ldc, 6, cols, 1);
        for (; m0 < M; m0 += 4) {
            int r = M - m0 < 4 ? M - m0 : 4;
            tn_tile(kc, A + m0, lda, b, ldb, c + (size_t)m0 * ldc, ldc, r, cols, 1);
        }
    }
}

/* AVX-512: 8 rows x 32 columns (masked to `cols`), 16 accumulators; each
 * element gets the same FMAs in the same k order as in tn_tile, so the same
 * bits. */
__attribute__((target("avx512f")))
static void tn_tile8x32(int kc, const float *a, int lda, const float *b, int ldb,
                        float *c, int ldc, int cols)
{
    __mmask16 m0 = cols >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << cols) - 1);
    __mmask16 m1 = cols >= 32 ? (__mmask16)0xFFFF
                 : cols > 16 ? (__mmask16)((1u << (cols - 16)) - 1) : (__mmask16)0;
    /* named accumulators: an array of them went through the stack every k */
#define LD2(r) __m512 s##r##0 = _mm512_maskz_loadu_ps(m0, c + (size_t)(r) * ldc), \
                      s##r##1 = _mm512_maskz_loadu_ps(m1, c + (size_t)(r) * ldc + 16)
    LD2(0); LD2(1); LD2(2); LD2(3); LD2(4); LD2(5); LD2(6); LD2(7);
#undef LD2
    for (int k = 0; k < kc; k++) {
        const float *bk = b + (size_t)k * ldb, *ak = a + (size_t)k * lda;
        __m512 b0 = _mm512_maskz_loadu_ps(m0, bk), b1 = _mm512_maskz_loadu_ps(m1, bk + 16), x;
#define FM(r) x = _mm512_set1_ps(ak[r]); s##r##0 = _mm512_fmadd_ps(x, b0, s##r##0); \
              s##r##1 = _mm512_fmadd_ps(x, b1, s##r##1)
        FM(0); FM(1); FM(2); FM(3); FM(4); FM(5); FM(6); FM(7);
#undef FM
    }
#define ST2(r) _mm512_mask_storeu_ps(c + (size_t)(r) * ldc, m0, s##r##0); \
               _mm512_mask_storeu_ps(c + (size_t)(r) * ldc + 16, m1, s##r##1)
    ST2(0); ST2(1); ST2(2); ST2(3); ST2(4); ST2(5); ST2(6); ST2(7);
#undef ST2
}

/* The tiles run on copies of A and B, KP rows of both at a time (MP columns
 * of A, NP of B), with row strides padded off powers of two. In
 * place, the rows of A and B a tile reads lie a power of two apart (G*H and
 * I floats): they share a few L1 sets and evict each other (72 GFLOP/s at
 * M = 512, N = 256, lda = 1024). Row copies are plain memcpy. The tiles do
 * the same FMAs in the same order: the same bits. False when the copies
 * cannot be allocated. */
#define KP 256
#define MP 128
#define NP 512
#define TN_COPY_MIN 65536

static void *aligned_block(size_t n, void **raw)
{
    char *p = malloc(n + 64);
    *raw = p;
    return p ? p + ((64 - (uintptr_t)p % 64) % 64) : NULL;
}

/* a row stride of at least n floats, a multiple of 16 but an odd multiple */
static int padded(int n)
{
    int q = (n + 15) / 16;
    return 16 * (q | 1);
}

static int tn_packed(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                     float *C, int ldc)
{
    int wide = pyrnn_simd_level() >= PYRNN_SIMD_AVX512;
    int mp = padded(M < MP ? M : MP), np = padded(N < NP ? N : NP);
    void *ra, *rb;
    float *Ap = aligned_block((size_t)KP * mp * sizeof(float), &ra);
    float *Bp = aligned_block((size_t)KP * np * sizeof(float), &rb);
    if (!Ap || !Bp) {
        free(ra);
        free(rb);
        return 0;
    }
    for (int nb = 0; nb < N; nb += NP) {
        int nc = N - nb < NP ? N - nb : NP;
        for (int k0 = 0; k0 < K; k0 += KP) {
            int kc = K - k0 < KP ? K - k0 : KP;
            for (int k = 0; k < kc; k++)
                memcpy(Bp + (size_t)k * np, B + (size_t)(k0 + k) * ldb + nb,
                       (size_t)nc * sizeof(float));
            for (int mb = 0; mb < M; mb += MP) {
                int mc = M - mb < MP ? M - mb : MP, m8 = wide ? mc / 8 * 8 : 0;
                float *Cb = C + (size_t)mb * ldc + nb;
                for (int k = 0; k < kc; k++)
                    memcpy(Ap + (size_t)k * mp, A + (size_t)(k0 + k) * lda + mb,
                           (size_t)mc * sizeof(float));
                for (int n0 = 0; n0 < nc; n0 += 32)
                    for (int m0 = 0; m0 < m8; m0 += 8)
                        tn_tile8x32(kc, Ap + m0, mp, Bp + n0, np, Cb + (size_t)m0 * ldc + n0,
                                    ldc, nc - n0 < 32 ? nc - n0 : 32);
                if (m8 < mc)
                    for (int n0 = 0; n0 < nc; n0 += 16)
                        tn_block(mc - m8, kc, Ap + m8, mp, Bp + n0, np,
                                 Cb + (size_t)m8 * ldc + n0, ldc, nc - n0 < 16 ? nc - n0 : 16);
            }
        }
    }
    free(ra);
    free(rb);
    return 1;
}

void pyrnn_gemm_tn_f(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                     float *C, int ldc)
{
    if (M <= 0 || N <= 0)
        return;
    /* small products run in place: there the copies cost more than the L1
     * conflicts (LSTM 200:16:64:64 training, M = 256, N = 64: 5% slower) */
    if ((size_t)M * N >= TN_COPY_MIN && tn_packed(M, N, K, A, lda, B, ldb, C, ldc))
        return;
    int wide = pyrnn_simd_level() >= PYRNN_SIMD_AVX512, m8 = wide ? M / 8 * 8 : 0;
    for (int k0 = 0; k0 < K; k0 += KC) {
        int kc = K - k0 < KC ? K - k0 : KC;
        const float *Ak = A + (size_t)k0 * lda, *Bk = B + (size_t)k0 * ldb;
        if (m8 > 0) {
            /* rows [0, m8) in 8x32 tiles; the rest through the AVX2 tiles */
            for (int n0 = 0; n0 < N; n0 += 32) {
                int cols = N - n0 < 32 ? N - n0 : 32;
                for (int m0 = 0; m0 < m8; m0 += 8)
                    tn_tile8x32(kc, Ak + m0, lda, Bk + n0, ldb, C + (size_t)m0 * ldc + n0, ldc,
                                cols);
            }
        }
        for (int n0 = 0; n0 < N; n0 += 16)
            tn_block(M - m8, kc, Ak + m8, lda, Bk + n0, ldb, C + (size_t)m8 * ldc + n0, ldc,
                     N - n0 < 16 ? N - n0 : 16);
    }
}
#else
void pyrnn_gemm_tn_f(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                     float *C, int ldc)
{
    (void)M; (void)N; (void)K; (void)A; (void)lda; (void)B; (void)ldb; (void)C; (void)ldc;
}
#endif
