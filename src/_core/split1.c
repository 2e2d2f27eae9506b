#include <string.h>
#include "gates.h"
#include "split1.h"

static pyrnn_sgemv_t p_sgemv;
static pyrnn_dgemv_t p_dgemv;

void pyrnn_set_gemv(pyrnn_sgemv_t s, pyrnn_dgemv_t d) { p_sgemv = s; p_dgemv = d; }

/* y(m) = A(m, n) x, A row-major with m rows starting at A. */
static void mv_f(int m, int n, const float *A, const float *x, float *y)
{
    char t = 'T'; float one = 1.0f, zero = 0.0f; int inc = 1;
    p_sgemv(&t, &n, &m, &one, (float *)A, &n, (float *)x, &inc, &zero, y, &inc);
}

static void mv_d(int m, int n, const double *A, const double *x, double *y)
{
    char t = 'T'; double one = 1.0, zero = 0.0; int inc = 1;
    p_dgemv(&t, &n, &m, &one, (double *)A, &n, (double *)x, &inc, &zero, y, &inc);
}

#define DEFINE_SPLIT1(REAL, S)                                                   \
void split1_forward_##S(int kind, int T, int H, int nthreads, const int *split,  \
    const REAL *GX, const REAL *Whh, const REAL *bx, const REAL *bhn,            \
    const REAL *h0, const REAL *c0, REAL *Y, int ldy, int reverse,               \
    const int64_t *len, REAL *hn, REAL *cn, REAL *hbuf, REAL *cbuf, REAL *gh)    \
{                                                                                \
    const int G = kind <= 1 ? 1 : (kind == 2 ? 4 : (kind == 3 ? 3 : 2));        \
    const size_t GH = (size_t)G * H;                                             \
    _Pragma("omp parallel num_threads(nthreads)")                                \
    {                                                                            \
        int k = 0, nt = 1;                                                       \
        PYRNN_THREAD_ID(k, nt);                                                  \
        for (int s = 0; s < T; s++) {                                            \
            const int t = reverse ? T - 1 - s : s;                               \
            const REAL *hp = s == 0 ? h0 : hbuf + (size_t)((s - 1) & 1) * H;     \
            const REAL *cp = s == 0 ? c0 : cbuf + (size_t)((s - 1) & 1) * H;     \
            REAL *hd = s == T - 1 ? hn : hbuf + (size_t)(s & 1) * H;             \
            REAL *cd = s == T - 1 ? cn : cbuf + (size_t)(s & 1) * H;             \
            /* slices k, k+nt, ...: all of them even if fewer threads came */   \
            for (int kk = k; kk < nthreads; kk += nt) {                          \
            const int j0 = split[kk], Hk = split[kk + 1] - split[kk];            \
                const size_t r0 = j0;                                                \
            const REAL *gx = GX + (size_t)t * GH + r0;                           \
            REAL *y = Y + (size_t)t * ldy + j0;                                  \
            if (Hk > 0) {                                                        \
                for (int g = 0; g < G; g++)                                      \
                    mv_##S(Hk, H, Whh + ((size_t)g * H + j0) * H, hp,            \
                           gh + (size_t)g * H + j0);                             \
                switch (kind) {                                                  \
                case 0: case 1:                                                  \
                    rnn_fwd_##S(kind, 1, Hk, len, t, gx, bx + r0, gh + r0,       \
                                hp + j0, hd + j0, y, ldy, NULL); break;          \
                case 2:                                                          \
                    lstm_fwd_##S(1, Hk, H, len, t, gx, bx + r0, gh + r0, cp + j0,   \
                                 cd + j0, hp + j0, hd + j0, y, ldy, NULL, NULL);  \
                    break;                                                       \
                case 3:                                                          \
                    gru_fwd_##S(1, Hk, H, len, t, gx, bx + r0, gh + r0, bhn + j0,   \
                                hp + j0, hd + j0, y, ldy, NULL, NULL); break;    \
                default:                                                         \
                    mgru_fwd_##S(1, Hk, H, len, t, gx, bx + r0, gh + r0, hp + j0,   \
                                 hd + j0, y, ldy, NULL); break;                  \
                }                                                                \
            }                                                                    \
            }                                                                    \
            _Pragma("omp barrier")                                               \
        }                                                                        \
    }                                                                            \
}

#ifdef _OPENMP
#include <omp.h>
#define PYRNN_THREAD_ID(k, nt) do { (k) = omp_get_thread_num(); (nt) = omp_get_num_threads(); } while (0)
#else
#define PYRNN_THREAD_ID(k, nt) do { (void)(k); (void)(nt); } while (0)
#endif

DEFINE_SPLIT1(float, f)
DEFINE_SPLIT1(double, d)
