#include <string.h>
#include "gates.h"     /* pyrnn_simd_level() */
#include "packed.h"
#include "spin.h"      /* pyrnn_now_ns() */

#define NR 16
#define MR 4

size_t pyrnn_packed_size(int N, int K)
{
    return (size_t)((N + NR - 1) / NR) * NR * (size_t)K;
}

/* Columns [k0, K) of panel p into dst, the panel's first k-step, one element
 * at a time. */
static void pack_scalar(int N, int K, const float *W, ptrdiff_t rs, ptrdiff_t ks, float *dst,
                        int p, int k0)
{
    for (int k = k0; k < K; k++)
        for (int i = 0; i < NR; i++) {
            int r = p * NR + i;
            dst[(size_t)k * NR + i] = r < N ? W[r * rs + k * ks] : 0.0f;
        }
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>

/* 8 x 8 transpose: row i of the result is column i of the input rows. */
__attribute__((target("avx2")))
static inline void transpose8(__m256 r[8])
{
    __m256 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
        r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    }
}

/* A whole panel p (16 rows in range) into dst in 8 x 8 blocks; returns the
 * first column left for pack_scalar. A copy: the same values as pack_scalar. */
__attribute__((target("avx2")))
static int pack_panel_avx2(int K, const float *W, ptrdiff_t rs, ptrdiff_t ks, float *dst, int p)
{
    int k = 0;
    if (ks == 1) {          /* W itself: rows of W become columns of the panel */
        for (; k + 8 <= K; k += 8)
            for (int h = 0; h < NR; h += 8) {
                __m256 r[8];
                for (int i = 0; i < 8; i++)
                    r[i] = _mm256_loadu_ps(W + (ptrdiff_t)(p * NR + h + i) * rs + k);
                transpose8(r);
                for (int j = 0; j < 8; j++)
                    _mm256_storeu_ps(dst + (size_t)(k + j) * NR + h, r[j]);
            }
    } else if (rs == 1) {   /* the transpose: each k-step is 16 contiguous floats */
        for (; k < K; k++) {
            const float *src = W + (ptrdiff_t)k * ks + p * NR;
            _mm256_storeu_ps(dst + (size_t)k * NR, _mm256_loadu_ps(src));
            _mm256_storeu_ps(dst + (size_t)k * NR + 8, _mm256_loadu_ps(src + 8));
        }
    }
    return k;
}
#endif

/* The N x K matrix W into k-steps [k_off, k_off + K) of panels that are
 * k_all k-steps long. */
static void pack_into(int N, int K, const float *W, ptrdiff_t rs, ptrdiff_t ks, float *P,
                      int k_all, int k_off)
{
    int panels = (N + NR - 1) / NR, simd = 0;
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    simd = pyrnn_simd_level() >= PYRNN_SIMD_AVX2;
#endif
    for (int p = 0; p < panels; p++) {
        float *dst = P + ((size_t)p * k_all + k_off) * NR;
        int k0 = 0;
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
        if (simd && (p + 1) * NR <= N)
            k0 = pack_panel_avx2(K, W, rs, ks, dst, p);
#endif
        pack_scalar(N, K, W, rs, ks, dst, p, k0);
    }
}

void pyrnn_pack_f(int N, int K, const float *W, ptrdiff_t rs, ptrdiff_t ks, float *P)
{
    pack_into(N, K, W, rs, ks, P, K, 0);
}

void pyrnn_pack_cat_f(int N, int K1, const float *W1, int ld1, int K2, const float *W2, int ld2,
                      float *P)
{
    pack_into(N, K1, W1, ld1, 1, P, K1 + K2, 0);
    pack_into(N, K2, W2, ld2, 1, P, K1 + K2, K1);
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
/* Every kernel takes its rows of A in two segments (K1 columns of A1, then
 * K2 of A2), summed in one chain as if they were one row [A1 | A2] of
 * K1 + K2: the product with [x | h] needs no copy of the rows. */
#define SEGMENTS(...)                                                           \
    for (int seg = 0; seg < 2; seg++) {                                         \
        const float *a = seg ? A2 : A1;                                         \
        int lda = seg ? lda2 : lda1, K = seg ? K2 : K1;                         \
        __VA_ARGS__                                                             \
        p += (size_t)K * NR;                                                    \
    }

/* 4 rows x 16 columns; rows past `rows` re-read the first row (their
 * results are not stored). */
__attribute__((target("avx2,fma")))
static void tile(int K1, const float *A1, int lda1, int K2, const float *A2, int lda2,
                 const float *p, float *c, int ldc, int rows, int cols, int acc)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    SEGMENTS(
    const float *a0 = a;
    const float *a1 = rows > 1 ? a + lda : a;
    const float *a2 = rows > 2 ? a + 2 * (size_t)lda : a;
    const float *a3 = rows > 3 ? a + 3 * (size_t)lda : a;
    for (int k = 0; k < K; k++) {
        __m256 b0 = _mm256_loadu_ps(p + (size_t)k * NR);
        __m256 b1 = _mm256_loadu_ps(p + (size_t)k * NR + 8);
        __m256 x = _mm256_broadcast_ss(a0 + k);
        c00 = _mm256_fmadd_ps(x, b0, c00); c01 = _mm256_fmadd_ps(x, b1, c01);
        x = _mm256_broadcast_ss(a1 + k);
        c10 = _mm256_fmadd_ps(x, b0, c10); c11 = _mm256_fmadd_ps(x, b1, c11);
        x = _mm256_broadcast_ss(a2 + k);
        c20 = _mm256_fmadd_ps(x, b0, c20); c21 = _mm256_fmadd_ps(x, b1, c21);
        x = _mm256_broadcast_ss(a3 + k);
        c30 = _mm256_fmadd_ps(x, b0, c30); c31 = _mm256_fmadd_ps(x, b1, c31);
    })
    if (!acc && rows == MR && cols == NR) {
        _mm256_storeu_ps(c, c00); _mm256_storeu_ps(c + 8, c01);
        _mm256_storeu_ps(c + ldc, c10); _mm256_storeu_ps(c + ldc + 8, c11);
        _mm256_storeu_ps(c + 2 * (size_t)ldc, c20); _mm256_storeu_ps(c + 2 * (size_t)ldc + 8, c21);
        _mm256_storeu_ps(c + 3 * (size_t)ldc, c30); _mm256_storeu_ps(c + 3 * (size_t)ldc + 8, c31);
        return;
    }
    /* partial tile, or C += product: through a buffer, rows/cols in range only */
    float t[MR][NR];
    _mm256_storeu_ps(t[0], c00); _mm256_storeu_ps(t[0] + 8, c01);
    _mm256_storeu_ps(t[1], c10); _mm256_storeu_ps(t[1] + 8, c11);
    _mm256_storeu_ps(t[2], c20); _mm256_storeu_ps(t[2] + 8, c21);
    _mm256_storeu_ps(t[3], c30); _mm256_storeu_ps(t[3] + 8, c31);
    for (int r = 0; r < rows; r++) {
        float *cr = c + (size_t)r * ldc;
        if (acc) for (int j = 0; j < cols; j++) cr[j] += t[r][j];
        else memcpy(cr, t[r], (size_t)cols * sizeof(float));
    }
}

/* 6 rows x 16 columns: 12 accumulators keep both FMA pipes busy through the
 * FMA latency (the 4-row tile's 8 cannot); the same per-element sums. */
__attribute__((target("avx2,fma")))
static void tile6(int K1, const float *A1, int lda1, int K2, const float *A2, int lda2,
                  const float *p, float *c, int ldc, int cols, int acc)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
    SEGMENTS(
    const float *a0 = a, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda, *a4 = a3 + lda;
    const float *a5 = a4 + lda;
    for (int k = 0; k < K; k++) {
        __m256 b0 = _mm256_loadu_ps(p + (size_t)k * NR);
        __m256 b1 = _mm256_loadu_ps(p + (size_t)k * NR + 8);
        __m256 x = _mm256_broadcast_ss(a0 + k);
        c00 = _mm256_fmadd_ps(x, b0, c00); c01 = _mm256_fmadd_ps(x, b1, c01);
        x = _mm256_broadcast_ss(a1 + k);
        c10 = _mm256_fmadd_ps(x, b0, c10); c11 = _mm256_fmadd_ps(x, b1, c11);
        x = _mm256_broadcast_ss(a2 + k);
        c20 = _mm256_fmadd_ps(x, b0, c20); c21 = _mm256_fmadd_ps(x, b1, c21);
        x = _mm256_broadcast_ss(a3 + k);
        c30 = _mm256_fmadd_ps(x, b0, c30); c31 = _mm256_fmadd_ps(x, b1, c31);
        x = _mm256_broadcast_ss(a4 + k);
        c40 = _mm256_fmadd_ps(x, b0, c40); c41 = _mm256_fmadd_ps(x, b1, c41);
        x = _mm256_broadcast_ss(a5 + k);
        c50 = _mm256_fmadd_ps(x, b0, c50); c51 = _mm256_fmadd_ps(x, b1, c51);
    })
    if (!acc && cols == NR) {
        _mm256_storeu_ps(c, c00); _mm256_storeu_ps(c + 8, c01); c += ldc;
        _mm256_storeu_ps(c, c10); _mm256_storeu_ps(c + 8, c11); c += ldc;
        _mm256_storeu_ps(c, c20); _mm256_storeu_ps(c + 8, c21); c += ldc;
        _mm256_storeu_ps(c, c30); _mm256_storeu_ps(c + 8, c31); c += ldc;
        _mm256_storeu_ps(c, c40); _mm256_storeu_ps(c + 8, c41); c += ldc;
        _mm256_storeu_ps(c, c50); _mm256_storeu_ps(c + 8, c51);
        return;
    }
    float t[6][NR];
    _mm256_storeu_ps(t[0], c00); _mm256_storeu_ps(t[0] + 8, c01);
    _mm256_storeu_ps(t[1], c10); _mm256_storeu_ps(t[1] + 8, c11);
    _mm256_storeu_ps(t[2], c20); _mm256_storeu_ps(t[2] + 8, c21);
    _mm256_storeu_ps(t[3], c30); _mm256_storeu_ps(t[3] + 8, c31);
    _mm256_storeu_ps(t[4], c40); _mm256_storeu_ps(t[4] + 8, c41);
    _mm256_storeu_ps(t[5], c50); _mm256_storeu_ps(t[5] + 8, c51);
    for (int r = 0; r < 6; r++) {
        float *cr = c + (size_t)r * ldc;
        if (acc) for (int j = 0; j < cols; j++) cr[j] += t[r][j];
        else memcpy(cr, t[r], (size_t)cols * sizeof(float));
    }
}

/* Element i of a 128-bit half, in every lane (both halves of v alike). */
#define SPLAT(v, imm) _mm256_shuffle_ps(v, v, imm)
/* Four k-steps of row1 from panel q: k-step j multiplies row element xj
 * (in every lane) into its own pair of accumulators. */
#define ROW1_QUAD(q, x0, x1, x2, x3) do {                                       \
        __m256 y0_ = (x0), y1_ = (x1), y2_ = (x2), y3_ = (x3);                  \
        s0 = _mm256_fmadd_ps(y0_, _mm256_loadu_ps(q), s0);                      \
        s1 = _mm256_fmadd_ps(y0_, _mm256_loadu_ps((q) + 8), s1);                \
        t0 = _mm256_fmadd_ps(y1_, _mm256_loadu_ps((q) + 16), t0);               \
        t1 = _mm256_fmadd_ps(y1_, _mm256_loadu_ps((q) + 24), t1);               \
        u0 = _mm256_fmadd_ps(y2_, _mm256_loadu_ps((q) + 32), u0);               \
        u1 = _mm256_fmadd_ps(y2_, _mm256_loadu_ps((q) + 40), u1);               \
        v0 = _mm256_fmadd_ps(y3_, _mm256_loadu_ps((q) + 48), v0);               \
        v1 = _mm256_fmadd_ps(y3_, _mm256_loadu_ps((q) + 56), v1);               \
    } while (0)

/* One row (batch 1): a matrix-vector product, bound by loading the panel.
 * Four k-steps in flight with their own accumulators hide the FMA latency;
 * they are summed in a fixed order at the end. Eight elements of the row are
 * loaded at once and broadcast in registers, leaving the load ports to the
 * panel: 10% faster from L2 (H = 128: 256 KB in 3.53 against 3.91 us), the
 * same sums. */
__attribute__((target("avx2,fma")))
static void row1(int K1, const float *A1, int K2, const float *A2, const float *p, float *c,
                 int cols, int acc)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    __m256 t0 = _mm256_setzero_ps(), t1 = _mm256_setzero_ps();
    __m256 u0 = _mm256_setzero_ps(), u1 = _mm256_setzero_ps();
    __m256 v0 = _mm256_setzero_ps(), v1 = _mm256_setzero_ps();
    int lda1 = 0, lda2 = 0;
    SEGMENTS(
    (void)lda;
    int k = 0;
    for (; k + 8 <= K; k += 8) {
        const float *q = p + (size_t)k * NR;
        __m256 hv = _mm256_loadu_ps(a + k);
        __m256 lo = _mm256_permute2f128_ps(hv, hv, 0x00);
        __m256 hi = _mm256_permute2f128_ps(hv, hv, 0x11);
        ROW1_QUAD(q, SPLAT(lo, 0x00), SPLAT(lo, 0x55), SPLAT(lo, 0xAA), SPLAT(lo, 0xFF));
        ROW1_QUAD(q + 64, SPLAT(hi, 0x00), SPLAT(hi, 0x55), SPLAT(hi, 0xAA), SPLAT(hi, 0xFF));
    }
    for (; k + 4 <= K; k += 4) {
        const float *q = p + (size_t)k * NR;
        ROW1_QUAD(q, _mm256_broadcast_ss(a + k), _mm256_broadcast_ss(a + k + 1),
                  _mm256_broadcast_ss(a + k + 2), _mm256_broadcast_ss(a + k + 3));
    }
    for (; k < K; k++) {
        __m256 x = _mm256_broadcast_ss(a + k);
        s0 = _mm256_fmadd_ps(x, _mm256_loadu_ps(p + (size_t)k * NR), s0);
        s1 = _mm256_fmadd_ps(x, _mm256_loadu_ps(p + (size_t)k * NR + 8), s1);
    })
    s0 = _mm256_add_ps(_mm256_add_ps(s0, t0), _mm256_add_ps(u0, v0));
    s1 = _mm256_add_ps(_mm256_add_ps(s1, t1), _mm256_add_ps(u1, v1));
    if (cols == NR) {       /* a whole panel: no copy through t (once a panel a step) */
        if (acc) {
            s0 = _mm256_add_ps(_mm256_loadu_ps(c), s0);
            s1 = _mm256_add_ps(_mm256_loadu_ps(c + 8), s1);
        }
        _mm256_storeu_ps(c, s0);
        _mm256_storeu_ps(c + 8, s1);
        return;
    }
    float t[NR];
    _mm256_storeu_ps(t, s0);
    _mm256_storeu_ps(t + 8, s1);
    if (acc) for (int j = 0; j < cols; j++) c[j] += t[j];
    else memcpy(c, t, (size_t)cols * sizeof(float));
}
#undef ROW1_QUAD
#undef SPLAT

/* 8 rows x 32 columns (panels p0 and p1) in AVX-512: 16 accumulators, twice
 * the columns per load and per instruction of the AVX2 tiles, and bound by
 * FMA throughput where they are partly bound by loads and latency (99-113
 * against 79-95 GFLOP/s on Zen 4 at the per-step shapes). Each lane does
 * the same FMAs in the same k order as the AVX2 tiles: the same bits.
 * cols1: valid columns of p1 (16 unless it is the last, partial panel). */
__attribute__((target("avx512f")))
static void tile8x32(int K1, const float *A1, int lda1, int K2, const float *A2, int lda2,
                     const float *p0, const float *p1, float *c, int ldc, int cols1, int acc)
{
    const float *p = p0;
    ptrdiff_t d1 = p1 - p0;      /* p1 runs in step with p */
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m512 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    __m512 c60 = c00, c61 = c00, c70 = c00, c71 = c00;
    SEGMENTS(
    const float *r1 = a + lda, *r2 = r1 + lda, *r3 = r2 + lda;
    const float *r4 = r3 + lda, *r5 = r4 + lda, *r6 = r5 + lda, *r7 = r6 + lda;
    for (int k = 0; k < K; k++) {
        __m512 b0 = _mm512_loadu_ps(p + (size_t)k * NR), b1 = _mm512_loadu_ps(p + d1 + (size_t)k * NR);
        __m512 x;
        x = _mm512_set1_ps(a[k]);  c00 = _mm512_fmadd_ps(x, b0, c00); c01 = _mm512_fmadd_ps(x, b1, c01);
        x = _mm512_set1_ps(r1[k]); c10 = _mm512_fmadd_ps(x, b0, c10); c11 = _mm512_fmadd_ps(x, b1, c11);
        x = _mm512_set1_ps(r2[k]); c20 = _mm512_fmadd_ps(x, b0, c20); c21 = _mm512_fmadd_ps(x, b1, c21);
        x = _mm512_set1_ps(r3[k]); c30 = _mm512_fmadd_ps(x, b0, c30); c31 = _mm512_fmadd_ps(x, b1, c31);
        x = _mm512_set1_ps(r4[k]); c40 = _mm512_fmadd_ps(x, b0, c40); c41 = _mm512_fmadd_ps(x, b1, c41);
        x = _mm512_set1_ps(r5[k]); c50 = _mm512_fmadd_ps(x, b0, c50); c51 = _mm512_fmadd_ps(x, b1, c51);
        x = _mm512_set1_ps(r6[k]); c60 = _mm512_fmadd_ps(x, b0, c60); c61 = _mm512_fmadd_ps(x, b1, c61);
        x = _mm512_set1_ps(r7[k]); c70 = _mm512_fmadd_ps(x, b0, c70); c71 = _mm512_fmadd_ps(x, b1, c71);
    })
    __m512 v[8][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31},
                      {c40, c41}, {c50, c51}, {c60, c61}, {c70, c71}};
    if (!acc && cols1 == NR) {
        for (int r = 0; r < 8; r++) {
            _mm512_storeu_ps(c + (size_t)r * ldc, v[r][0]);
            _mm512_storeu_ps(c + (size_t)r * ldc + NR, v[r][1]);
        }
        return;
    }
    /* partial panel, or C += product (the product first, then the add: as the
     * AVX2 tiles do it) */
    float t[2 * NR];
    int n = NR + cols1;
    for (int r = 0; r < 8; r++) {
        float *cr = c + (size_t)r * ldc;
        _mm512_storeu_ps(t, v[r][0]);
        _mm512_storeu_ps(t + NR, v[r][1]);
        if (acc) for (int j = 0; j < n; j++) cr[j] += t[j];
        else memcpy(cr, t, (size_t)n * sizeof(float));
    }
}

/* Rows [m_lo, m_hi) x panels [p_lo, p_hi) with the AVX2 tiles. */
__attribute__((target("avx2,fma")))
static void avx2_block(int m_lo, int m_hi, int p_lo, int p_hi, int N, int K1, const float *A1,
                       int lda1, int K2, const float *A2, int lda2, const float *P, float *C,
                       int ldc, int acc, int rev)
{
    int M = m_hi - m_lo, K = K1 + K2;
    A1 += (size_t)m_lo * lda1;
    A2 += (size_t)m_lo * lda2;
    C += (size_t)m_lo * ldc;
    /* panel outer: its K x 16 weights stay in L1/L2 while every row block of
     * A (kept small enough by the caller to stay in L2) passes over it */
    for (int pi = p_lo; pi < p_hi; pi++) {
        int p = rev ? p_hi - 1 - (pi - p_lo) : pi;
        int cols = N - p * NR < NR ? N - p * NR : NR;
        const float *pp = P + (size_t)p * NR * K;
        /* 6-row tiles, then 4-row ones: a remainder of 1 or 2 rows takes one
         * 6-row tile's place so that 7 or 8 rows run as two 4-row tiles
         * (8 rows as 6 + 2-of-4 would compute a third of that tile for nothing) */
        int m6 = M / 6 * 6, m0 = 0;
        if (M > 6 && (M % 6 == 1 || M % 6 == 2)) m6 -= 6;
        for (; m0 < m6; m0 += 6)
            tile6(K1, A1 + (size_t)m0 * lda1, lda1, K2, A2 + (size_t)m0 * lda2, lda2, pp,
                  C + (size_t)m0 * ldc + p * NR, ldc, cols, acc);
        for (; m0 < M; m0 += MR) {
            int rows = M - m0 < MR ? M - m0 : MR;
            tile(K1, A1 + (size_t)m0 * lda1, lda1, K2, A2 + (size_t)m0 * lda2, lda2, pp,
                 C + (size_t)m0 * ldc + p * NR, ldc, rows, cols, acc);
        }
    }
}

/* row1 with one 16-float register per k-step instead of two 8-float ones:
 * the same sums per lane (same bits), fewer loads and instructions; 3-10%
 * faster when the panel comes from L2 (batch 1, H = 128). */
__attribute__((target("avx512f")))
static void row1_512(int K1, const float *A1, int K2, const float *A2, const float *p, float *c,
                     int cols, int acc)
{
    __m512 s = _mm512_setzero_ps(), t = s, u = s, v = s;
    int lda1 = 0, lda2 = 0;
    SEGMENTS(
    (void)lda;
    int k = 0;
    for (; k + 4 <= K; k += 4) {
        const float *q = p + (size_t)k * NR;
        s = _mm512_fmadd_ps(_mm512_set1_ps(a[k]), _mm512_loadu_ps(q), s);
        t = _mm512_fmadd_ps(_mm512_set1_ps(a[k + 1]), _mm512_loadu_ps(q + 16), t);
        u = _mm512_fmadd_ps(_mm512_set1_ps(a[k + 2]), _mm512_loadu_ps(q + 32), u);
        v = _mm512_fmadd_ps(_mm512_set1_ps(a[k + 3]), _mm512_loadu_ps(q + 48), v);
    }
    for (; k < K; k++)
        s = _mm512_fmadd_ps(_mm512_set1_ps(a[k]), _mm512_loadu_ps(p + (size_t)k * NR), s);)
    s = _mm512_add_ps(_mm512_add_ps(s, t), _mm512_add_ps(u, v));
    if (cols == NR) {
        _mm512_storeu_ps(c, acc ? _mm512_add_ps(_mm512_loadu_ps(c), s) : s);
        return;
    }
    float r[NR];
    _mm512_storeu_ps(r, s);
    if (acc) for (int j = 0; j < cols; j++) c[j] += r[j];
    else memcpy(c, r, (size_t)cols * sizeof(float));
}

void pyrnn_gemm_packed2_dir_f(int M, int N, int K1, const float *A1, int lda1, int K2,
                              const float *A2, int lda2, const float *P, float *C, int ldc,
                              int acc, int rev)
{
    int panels = (N + NR - 1) / NR, K = K1 + K2;
    if (K2 == 0)
        A2 = A1;        /* never read; keeps the row arithmetic in bounds */
    if (M == 1) {
        void (*r1)(int, const float *, int, const float *, const float *, float *, int, int) =
            pyrnn_simd_level() >= PYRNN_SIMD_AVX512 ? row1_512 : row1;
        for (int pi = 0; pi < panels; pi++) {
            int p = rev ? panels - 1 - pi : pi;
            int cols = N - p * NR < NR ? N - p * NR : NR;
            r1(K1, A1, K2, A2, P + (size_t)p * NR * K, C + p * NR, cols, acc);
        }
        return;
    }
    /* AVX-512: 8-row x 2-panel tiles for the bulk; the AVX2 tiles take the
     * rows past the last multiple of 8 and an odd last panel */
    int m8 = 0, pairs = 0;
    if (pyrnn_simd_level() >= PYRNN_SIMD_AVX512) {
        m8 = M / 8 * 8;
        pairs = m8 ? panels / 2 : 0;
    }
    /* rev: every pass in the opposite order, so the weights a step read last
     * are the first the next step reads */
    if (rev)
        avx2_block(m8, M, 0, panels, N, K1, A1, lda1, K2, A2, lda2, P, C, ldc, acc, 1);
    if (rev && m8 > 0 && 2 * pairs < panels)
        avx2_block(0, m8, 2 * pairs, panels, N, K1, A1, lda1, K2, A2, lda2, P, C, ldc, acc, 1);
    for (int qi = 0; qi < pairs; qi++) {
        int q = rev ? pairs - 1 - qi : qi;
        int p = 2 * q, cols1 = N - (p + 1) * NR < NR ? N - (p + 1) * NR : NR;
        const float *p0 = P + (size_t)p * NR * K, *p1 = p0 + (size_t)NR * K;
        for (int m0 = 0; m0 < m8; m0 += 8)
            tile8x32(K1, A1 + (size_t)m0 * lda1, lda1, K2, A2 + (size_t)m0 * lda2, lda2, p0, p1,
                     C + (size_t)m0 * ldc + p * NR, ldc, cols1, acc);
    }
    if (!rev && m8 > 0 && 2 * pairs < panels)
        avx2_block(0, m8, 2 * pairs, panels, N, K1, A1, lda1, K2, A2, lda2, P, C, ldc, acc, 0);
    if (!rev)
        avx2_block(m8, M, 0, panels, N, K1, A1, lda1, K2, A2, lda2, P, C, ldc, acc, 0);
}
#else
void pyrnn_gemm_packed2_dir_f(int M, int N, int K1, const float *A1, int lda1, int K2,
                              const float *A2, int lda2, const float *P, float *C, int ldc,
                              int acc, int rev)
{
    (void)M; (void)N; (void)K1; (void)A1; (void)lda1; (void)K2; (void)A2; (void)lda2;
    (void)P; (void)C; (void)ldc; (void)acc; (void)rev;
}
#endif

void pyrnn_gemm_packed2_f(int M, int N, int K1, const float *A1, int lda1, int K2,
                          const float *A2, int lda2, const float *P, float *C, int ldc, int acc)
{
    pyrnn_gemm_packed2_dir_f(M, N, K1, A1, lda1, K2, A2, lda2, P, C, ldc, acc, 0);
}

void pyrnn_gemm_packed_f(int M, int N, int K, const float *A, int lda, const float *P,
                         float *C, int ldc, int acc)
{
    pyrnn_gemm_packed2_dir_f(M, N, K, A, lda, 0, A, lda, P, C, ldc, acc, 0);
}

void pyrnn_gemm_packed_dir_f(int M, int N, int K, const float *A, int lda, const float *P,
                             float *C, int ldc, int acc, int rev)
{
    pyrnn_gemm_packed2_dir_f(M, N, K, A, lda, 0, A, lda, P, C, ldc, acc, rev);
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
/* four independent sums of 8 lanes: the loads, not the add latency, set the pace */
__attribute__((target("avx2")))
static float read_avx2(const float *p, size_t n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_add_ps(s0, _mm256_loadu_ps(p + i));
        s1 = _mm256_add_ps(s1, _mm256_loadu_ps(p + i + 8));
        s2 = _mm256_add_ps(s2, _mm256_loadu_ps(p + i + 16));
        s3 = _mm256_add_ps(s3, _mm256_loadu_ps(p + i + 24));
    }
    float t[8], r = 0.0f;
    _mm256_storeu_ps(t, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (int k = 0; k < 8; k++)
        r += t[k];
    for (; i < n; i++)
        r += p[i];
    return r;
}
#endif

static float read_scalar(const float *p, size_t n)
{
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += p[i]; s1 += p[i + 1]; s2 += p[i + 2]; s3 += p[i + 3];
    }
    for (; i < n; i++)
        s0 += p[i];
    return (s0 + s1) + (s2 + s3);
}

double pyrnn_read_seconds(const float *p, size_t n, int reps, float *sink)
{
    float (*read)(const float *, size_t) = read_scalar;
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    if (pyrnn_simd_level() >= PYRNN_SIMD_AVX2)
        read = read_avx2;
#endif
    float s = 0.0f;
    long t0 = pyrnn_now_ns();
    for (int r = 0; r < reps; r++)
        s += read(p, n);
    long t1 = pyrnn_now_ns();
    *sink = s;
    return (double)(t1 - t0) * 1e-9;
}
