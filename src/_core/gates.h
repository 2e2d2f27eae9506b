/* Fused per-step gate kernels: one forward/backward pair per cell kind.
 *
 * Every kernel works on `nb` batch rows of one time step t. Row b is active when
 * len == NULL or t < len[b]; an inactive row keeps its state (h, c copied
 * through), gets y = 0 and passes its state gradient straight back.
 * Gate rows are contiguous with stride G*H; y/dy rows have stride ldy.
 * Biases: bx (G*H) holds b_ih + b_hh pre-summed, except GRU's n gate, whose
 * b_hn sits inside r*(...) and comes separately as bhn.
 */
#ifndef PYRNN_GATES_H
#define PYRNN_GATES_H
#include <stdint.h>

#define PYRNN_DECLARE(REAL, S)                                                   \
void rnn_fwd_##S(int relu, int nb, int H, const int64_t *len, int t,           \
    const REAL *gx, const REAL *bx, const REAL *gh, const REAL *hp,             \
    REAL *hn, REAL *y, int ldy, REAL *A);                                        \
void rnn_bwd_##S(int relu, int nb, int H, const int64_t *len, int t,           \
    const REAL *A, const REAL *dy, int ldy, const REAL *dh, REAL *dg, REAL *dhp);\
void lstm_fwd_##S(int nb, int H, int gs, const int64_t *len, int t,                    \
    const REAL *gx, const REAL *bx, const REAL *gh, const REAL *cp, REAL *cn,   \
    const REAL *hp, REAL *hout, REAL *y, int ldy, REAL *A, REAL *TC);           \
void lstm_bwd_##S(int nb, int H, const int64_t *len, int t,                    \
    const REAL *A, const REAL *TC, const REAL *cp, const REAL *dy, int ldy,     \
    const REAL *dh, const REAL *dc, REAL *dg, REAL *dcp, REAL *dhp);            \
void proj_finish_##S(int nb, int P, const int64_t *len, int t,                 \
    const REAL *hp, REAL *hn, REAL *y, int ldy);                                 \
void proj_bwd_pre_##S(int nb, int P, const int64_t *len, int t,                \
    const REAL *dy, int ldy, const REAL *dh, REAL *dht, REAL *dhp);             \
void gru_fwd_##S(int nb, int H, int gs, const int64_t *len, int t,                     \
    const REAL *gx, const REAL *bx, const REAL *gh, const REAL *bhn,            \
    const REAL *hp, REAL *hn, REAL *y, int ldy, REAL *A, REAL *GHN);            \
void gru_bwd_##S(int nb, int H, const int64_t *len, int t,                     \
    const REAL *A, const REAL *GHN, const REAL *hp, const REAL *dy, int ldy,    \
    const REAL *dh, REAL *dgx, REAL *dgh, REAL *dhp);                           \
void grb_fwd1_##S(int nb, int H, const int64_t *len, int t,                    \
    const REAL *gx, const REAL *bx, const REAL *gh, const REAL *hp,             \
    REAL *A, REAL *RH);                                                          \
void grb_fwd2_##S(int nb, int H, const int64_t *len, int t,                    \
    const REAL *gx, const REAL *bx, const REAL *ghn, const REAL *hp,            \
    REAL *A, REAL *hn, REAL *y, int ldy);                                        \
void grb_bwd1_##S(int nb, int H, const int64_t *len, int t,                    \
    const REAL *A, const REAL *hp, const REAL *dy, int ldy, const REAL *dh,     \
    REAL *dg, REAL *dhp);                                                        \
void grb_bwd2_##S(int nb, int H, const int64_t *len, int t,                    \
    const REAL *A, const REAL *hp, const REAL *drh, REAL *dg, REAL *dhp);       \
void mgru_fwd_##S(int nb, int H, int gs, const int64_t *len, int t,                    \
    const REAL *gx, const REAL *bx, const REAL *gh, const REAL *hp,             \
    REAL *hn, REAL *y, int ldy, REAL *A);                                        \
void mgru_bwd_##S(int nb, int H, const int64_t *len, int t,                    \
    const REAL *A, const REAL *hp, const REAL *dy, int ldy, const REAL *dh,     \
    REAL *dg, REAL *dhp);                                                        \
void act_##S(int which, int64_t n, const REAL *x, REAL *y);

/* Dispatched entry points: float picks scalar or AVX2+FMA at run time;
 * double always runs the scalar kernels (exact libm activations). */
PYRNN_DECLARE(float, f)
PYRNN_DECLARE(double, d)

/* 1 when the float kernels run the AVX2+FMA versions. */
int pyrnn_simd_active(void);
/* 1 when this CPU could run them. */
int pyrnn_simd_available(void);
/* Request SIMD on (1) or off (0); returns the resulting state. */
int pyrnn_set_simd(int on);
/* Largest |approx - exact| of the SIMD sigmoid (which=0) or tanh (which=1)
 * over float bit patterns 0, stride, 2*stride, ... (all if stride == 1). */
double pyrnn_simd_max_error(int which, uint32_t stride);

#endif
