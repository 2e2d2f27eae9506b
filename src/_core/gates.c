/* Instantiates the gate kernels (gates_impl.h) three times -- float scalar,
 * float AVX2+FMA, double scalar -- and dispatches the float ones at run time
 * (PYRNN_SIMD caps the level). The scalar kernels use libm and are the
 * reference; the AVX2 ones take their cell bodies, the part with the
 * activations, from gates_avx2.h. No -march=native, no -ffast-math: the
 * target is set per function. */
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

#include "gates_avx2.h"
#define REAL float
#define KATTR static
#define NAME(base) base##_f_avx2
#include "gates_impl.h"
#undef REAL
#undef KATTR
#undef NAME
#undef PYRNN_VEC_CELLS

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
/* The AVX-512 level runs the AVX2 gate kernels (its own are the products'
 * wider tiles), so the two levels give the same bits by construction. */
#define DISPATCH(base, args) \
    do { if (pyrnn_simd_level() >= PYRNN_SIMD_AVX2) base##_f_avx2 args; \
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
    const float *gh, int rz, const float *bhn, const float *hp, float *hn, float *y, int ldy,
    float *A, float *GHN)
{ DISPATCH(gru_fwd, (nb, H, gs, len, t, gx, bx, gh, rz, bhn, hp, hn, y, ldy, A, GHN)); }

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
        act_f_avx2(which, n, xs, ys);
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
