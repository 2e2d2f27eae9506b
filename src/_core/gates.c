/* Instantiates the gate kernels (gates_impl.h) four times -- float scalar,
 * float AVX2+FMA, float AVX-512, double scalar -- and dispatches the float
 * ones at run time to the best level this CPU has (PYRNN_SIMD caps it).
 * The scalar kernels use libm and are the reference; the AVX2 ones use the
 * branch-free exp below, which the compiler vectorises. No -march=native,
 * no -ffast-math: the target is set per function. */
/* Python builds extensions with -fwrapv; signed index arithmetic that may
 * wrap keeps GCC from vectorising the kernels' strided gate loops. Nothing
 * here relies on signed overflow. */
#pragma GCC optimize("no-wrapv")
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "gates.h"

/* ---- float, scalar (libm) ---- */
#define REAL float
#define KATTR static
#define NAME(base) base##_f_scalar
#define SIGM(x) (1.0f / (1.0f + expf(-(x))))
#define TANH(x) tanhf(x)
#include "gates_impl.h"
#undef REAL
#undef KATTR
#undef NAME
#undef SIGM
#undef TANH

/* ---- double, scalar (libm) ---- */
#define REAL double
#define KATTR
#define NAME(base) base##_d
#define SIGM(x) (1.0 / (1.0 + exp(-(x))))
#define TANH(x) tanh(x)
#include "gates_impl.h"
#undef REAL
#undef KATTR
#undef NAME
#undef SIGM
#undef TANH

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define PYRNN_HAVE_AVX2 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
/* Lets the clamps and row tests become vector blends; FP exceptions are not
 * used by anyone here. This is not -ffast-math: IEEE results are kept. */
#pragma GCC optimize("no-trapping-math")

/* exp(x) for float: Cody-Waite range reduction x = n ln2 + r, a degree-6
 * polynomial for e^r on |r| <= ln2/2 (Cephes' coefficients), then scale by
 * 2^n through the exponent bits. Relative error ~1e-7. Comparisons written
 * so that NaN stays NaN; the clamp keeps 2^n a normal number. */
static inline float fast_expf(float x)
{
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    /* round to nearest by the 1.5*2^23 trick: floorf is a libm call here */
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float r2 = r * r;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r2 + r + 1.0f;
    int32_t e = ((int32_t)n + 127) << 23;
    float s;
    memcpy(&s, &e, sizeof s);
    return p * s;
}

static inline float fast_sigmoidf(float x) { return 1.0f / (1.0f + fast_expf(-x)); }

/* tanh(|x|) = (1 - e) / (1 + e), e = exp(-2|x|): no overflow for any x, and
 * an absolute error of a few ulp of 1 near 0. */
static inline float fast_tanhf(float x)
{
    float e = fast_expf(-2.0f * fabsf(x));
    float a = (1.0f - e) / (1.0f + e);
    return copysignf(a, x);
}

#define REAL float
#define KATTR static
#define NAME(base) base##_f_avx2
#define SIGM(x) fast_sigmoidf(x)
#define TANH(x) fast_tanhf(x)
#include "gates_impl.h"
#undef REAL
#undef KATTR
#undef NAME
#undef SIGM
#undef TANH

#pragma GCC pop_options

/* The same kernels with 16-float vectors. The gate loops are bound by the
 * latency of their exp/divide chains rather than by throughput, so twice the
 * units per chain makes them 1.4-1.7x faster even on cores that split 512-bit
 * operations in two (Zen 4). Same formulas, accuracy and bits as AVX2. */
#pragma GCC push_options
#pragma GCC target("avx2,fma,avx512f,avx512vl,avx512bw,avx512dq,prefer-vector-width=512")
#pragma GCC optimize("no-trapping-math")
#define REAL float
#define KATTR static
#define NAME(base) base##_f_avx512
#define SIGM(x) fast_sigmoidf(x)
#define TANH(x) fast_tanhf(x)
#include "gates_impl.h"
#undef REAL
#undef KATTR
#undef NAME
#undef SIGM
#undef TANH
#pragma GCC pop_options
#endif

/* ---- run-time dispatch for float ---- */
static int simd_level = -1;     /* PYRNN_SIMD_SCALAR / _AVX2 / _AVX512; -1: not chosen yet */

int pyrnn_simd_best(void)
{
#ifdef PYRNN_HAVE_AVX2
    __builtin_cpu_init();
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")))
        return PYRNN_SIMD_SCALAR;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"))
        return PYRNN_SIMD_AVX512;
    return PYRNN_SIMD_AVX2;
#else
    return PYRNN_SIMD_SCALAR;
#endif
}

int pyrnn_simd_available(void) { return pyrnn_simd_best() >= PYRNN_SIMD_AVX2; }

int pyrnn_set_simd_level(int level)
{
    int best = pyrnn_simd_best();
    if (level < PYRNN_SIMD_SCALAR) level = PYRNN_SIMD_SCALAR;
    simd_level = level < best ? level : best;
    return simd_level;
}

static void simd_init(void)
{
    /* scalar, 0, off: libm kernels; avx2: at most AVX2; anything else: the best */
    const char *env = getenv("PYRNN_SIMD");
    int want = PYRNN_SIMD_AVX512;
    if (env && (strcmp(env, "scalar") == 0 || strcmp(env, "0") == 0 || strcmp(env, "off") == 0))
        want = PYRNN_SIMD_SCALAR;
    else if (env && strcmp(env, "avx2") == 0)
        want = PYRNN_SIMD_AVX2;
    pyrnn_set_simd_level(want);
}

int pyrnn_simd_level(void)
{
    if (simd_level < 0) simd_init();
    return simd_level;
}

int pyrnn_simd_active(void) { return pyrnn_simd_level() >= PYRNN_SIMD_AVX2; }

int pyrnn_set_simd(int on)
{
    return pyrnn_set_simd_level(on ? PYRNN_SIMD_AVX512 : PYRNN_SIMD_SCALAR) >= PYRNN_SIMD_AVX2;
}

#ifdef PYRNN_HAVE_AVX2
#define DISPATCH(base, args) \
    do { int lv_ = pyrnn_simd_level(); \
         if (lv_ == PYRNN_SIMD_AVX512) base##_f_avx512 args; \
         else if (lv_ == PYRNN_SIMD_AVX2) base##_f_avx2 args; \
         else base##_f_scalar args; } while (0)
#else
#define DISPATCH(base, args) base##_f_scalar args
#endif

void rnn_fwd_f(int relu, int nb, int H, const int64_t *len, int t, const float *gx,
    const float *bx, const float *gh, const float *hp, float *hn, float *y, int ldy, float *A)
{ DISPATCH(rnn_fwd, (relu, nb, H, len, t, gx, bx, gh, hp, hn, y, ldy, A)); }

void rnn_bwd_f(int relu, int nb, int H, const int64_t *len, int t, const float *A,
    const float *dy, int ldy, const float *dh, float *dg, float *dhp)
{ DISPATCH(rnn_bwd, (relu, nb, H, len, t, A, dy, ldy, dh, dg, dhp)); }

void lstm_fwd_f(int nb, int H, int gs, const int64_t *len, int t, const float *gx, const float *bx,
    const float *gh, const float *cp, float *cn, const float *hp, float *hout, float *y,
    int ldy, float *A, float *TC)
{ DISPATCH(lstm_fwd, (nb, H, gs, len, t, gx, bx, gh, cp, cn, hp, hout, y, ldy, A, TC)); }

void lstm_bwd_f(int nb, int H, const int64_t *len, int t, const float *A, const float *TC,
    const float *cp, const float *dy, int ldy, const float *dh, const float *dc, float *dg,
    float *dcp, float *dhp)
{ DISPATCH(lstm_bwd, (nb, H, len, t, A, TC, cp, dy, ldy, dh, dc, dg, dcp, dhp)); }

void proj_finish_f(int nb, int P, const int64_t *len, int t, const float *hp, float *hn,
    float *y, int ldy)
{ DISPATCH(proj_finish, (nb, P, len, t, hp, hn, y, ldy)); }

void proj_bwd_pre_f(int nb, int P, const int64_t *len, int t, const float *dy, int ldy,
    const float *dh, float *dht, float *dhp)
{ DISPATCH(proj_bwd_pre, (nb, P, len, t, dy, ldy, dh, dht, dhp)); }

void gru_fwd_f(int nb, int H, int gs, const int64_t *len, int t, const float *gx, const float *bx,
    const float *gh, const float *bhn, const float *hp, float *hn, float *y, int ldy,
    float *A, float *GHN)
{ DISPATCH(gru_fwd, (nb, H, gs, len, t, gx, bx, gh, bhn, hp, hn, y, ldy, A, GHN)); }

void gru_bwd_f(int nb, int H, const int64_t *len, int t, const float *A, const float *GHN,
    const float *hp, const float *dy, int ldy, const float *dh, float *dgx, float *dgh,
    float *dhp)
{ DISPATCH(gru_bwd, (nb, H, len, t, A, GHN, hp, dy, ldy, dh, dgx, dgh, dhp)); }

void grb_fwd1_f(int nb, int H, int gs, const int64_t *len, int t, const float *gx, const float *bx,
    const float *gh, const float *hp, float *A, float *RH)
{ DISPATCH(grb_fwd1, (nb, H, gs, len, t, gx, bx, gh, hp, A, RH)); }

void grb_fwd2_f(int nb, int H, int gs, const int64_t *len, int t, const float *gx, const float *bx,
    const float *ghn, const float *hp, float *A, float *hn, float *y, int ldy)
{ DISPATCH(grb_fwd2, (nb, H, gs, len, t, gx, bx, ghn, hp, A, hn, y, ldy)); }

void grb_bwd1_f(int nb, int H, int gs, const int64_t *len, int t, const float *A, const float *hp,
    const float *dy, int ldy, const float *dh, float *dg, float *dhp)
{ DISPATCH(grb_bwd1, (nb, H, gs, len, t, A, hp, dy, ldy, dh, dg, dhp)); }

void grb_bwd2_f(int nb, int H, int gs, const int64_t *len, int t, const float *A, const float *hp,
    const float *drh, float *dg, float *dhp)
{ DISPATCH(grb_bwd2, (nb, H, gs, len, t, A, hp, drh, dg, dhp)); }

void mgru_fwd_f(int nb, int H, int gs, const int64_t *len, int t, const float *gx, const float *bx,
    const float *gh, const float *hp, float *hn, float *y, int ldy, float *A)
{ DISPATCH(mgru_fwd, (nb, H, gs, len, t, gx, bx, gh, hp, hn, y, ldy, A)); }

void mgru_bwd_f(int nb, int H, const int64_t *len, int t, const float *A, const float *hp,
    const float *dy, int ldy, const float *dh, float *dg, float *dhp)
{ DISPATCH(mgru_bwd, (nb, H, len, t, A, hp, dy, ldy, dh, dg, dhp)); }

void act_f(int which, int64_t n, const float *x, float *y)
{ DISPATCH(act, (which, n, x, y)); }

double pyrnn_simd_max_error(int level, int which, uint32_t stride)
{
#ifdef PYRNN_HAVE_AVX2
    if (level < PYRNN_SIMD_AVX2 || level > pyrnn_simd_best()) return -1.0;
    enum { CH = 4096 };
    float xs[CH], ys[CH];
    double worst = 0.0;
    uint64_t bits = 0;
    if (stride == 0) stride = 1;
    while (bits <= 0xFFFFFFFFull) {
        int n = 0;
        for (; n < CH && bits <= 0xFFFFFFFFull; n++, bits += stride) {
            uint32_t u = (uint32_t)bits;
            memcpy(&xs[n], &u, sizeof u);
        }
        if (level == PYRNN_SIMD_AVX512) act_f_avx512(which, n, xs, ys);
        else act_f_avx2(which, n, xs, ys);
        for (int i = 0; i < n; i++) {
            double x = xs[i];
            if (isnan(x)) {
                if (!isnan(ys[i])) return INFINITY;
                continue;
            }
            double ref = which == 0 ? 1.0 / (1.0 + exp(-x)) : tanh(x);
            double err = fabs((double)ys[i] - ref);
            if (!(err <= worst)) worst = err;   /* NaN output counts as infinite */
        }
    }
    return worst;
#else
    (void)level; (void)which; (void)stride;
    return -1.0;
#endif
}
