/* Fused per-step gate kernels: one forward/backward pair per cell kind.
 *
 * Every kernel works on `nb` batch rows of one time step t. Row b is active when
 * len == NULL or t < len[b]; an inactive row keeps its state (h, c copied
 * through), gets y = 0 and passes its state gradient straight back.
 * Gate rows are contiguous with stride G*H; y/dy rows have stride ldy.
 * RNN, LSTM and MinimalGRU forwards take gh == NULL where gx already holds
 * the whole product ([x_t | h] in one pass): no row of zeros is read.
 * Biases: bx (G*H) holds b_ih + b_hh pre-summed, except GRU's n gate, whose
 * b_hn sits inside r*(...) and comes separately as bhn. GRU's gh always holds
 * W_hn h; with rz = 0 its r and z parts are not read ([x | h] put them in gx).
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
    const REAL *gx, const REAL *bx, const REAL *gh, int rz, const REAL *bhn,    \
    const REAL *hp, REAL *hn, REAL *y, int ldy, REAL *A, REAL *GHN);            \
void gru_bwd_##S(int nb, int H, const int64_t *len, int t,                     \
    const REAL *A, const REAL *GHN, const REAL *hp, const REAL *dy, int ldy,    \
    const REAL *dh, REAL *dgx, REAL *dgh, REAL *dhp);                           \
void grb_fwd1_##S(int nb, int H, int gs, const int64_t *len, int t,                    \
    const REAL *gx, const REAL *bx, const REAL *gh, const REAL *hp,             \
    REAL *A, REAL *RH);                                                          \
void grb_fwd2_##S(int nb, int H, int gs, const int64_t *len, int t,                    \
    const REAL *gx, const REAL *bx, const REAL *ghn, const REAL *hp,            \
    REAL *A, REAL *hn, REAL *y, int ldy);                                        \
void grb_bwd1_##S(int nb, int H, int gs, const int64_t *len, int t,                    \
    const REAL *A, const REAL *hp, const REAL *dy, int ldy, const REAL *dh,     \
    REAL *dg, REAL *dhp);                                                        \
void grb_bwd2_##S(int nb, int H, int gs, const int64_t *len, int t,                    \
    const REAL *A, const REAL *hp, const REAL *drh, REAL *dg, REAL *dhp);       \
void mgru_fwd_##S(int nb, int H, int gs, const int64_t *len, int t,                    \
    const REAL *gx, const REAL *bx, const REAL *gh, const REAL *hp,             \
    REAL *hn, REAL *y, int ldy, REAL *A);                                        \
void mgru_bwd_##S(int nb, int H, const int64_t *len, int t,                    \
    const REAL *A, const REAL *hp, const REAL *dy, int ldy, const REAL *dh,     \
    REAL *dg, REAL *dhp);                                                        \
void act_##S(int which, int64_t n, const REAL *x, REAL *y);

/* Dispatched entry points: float picks scalar, AVX2+FMA or AVX-512 at run time;
 * double always runs the scalar kernels (exact libm activations). */
PYRNN_DECLARE(float, f)
PYRNN_DECLARE(double, d)

/* Instruction-set levels of the float kernels. */
#define PYRNN_SIMD_SCALAR 0
#define PYRNN_SIMD_AVX2 1      /* AVX2 + FMA */
#define PYRNN_SIMD_AVX512 2    /* products in AVX-512 (F, VL, BW, DQ) tiles; gate kernels AVX2 */

/* The level the float kernels run now (first call: the best this CPU has,
 * capped by PYRNN_SIMD=scalar|avx2). */
int pyrnn_simd_level(void);
/* The best level this CPU (and OS) can run. */
int pyrnn_simd_best(void);
/* Ask for a level; it is capped at pyrnn_simd_best(); returns the result. */
int pyrnn_set_simd_level(int level);
/* 1 when the float kernels run AVX2+FMA or better (the packed products need it). */
int pyrnn_simd_active(void);
/* 1 when this CPU could run them. */
int pyrnn_simd_available(void);
/* SIMD on (1: the best level) or off (0); returns pyrnn_simd_active(). */
int pyrnn_set_simd(int on);
/* Largest |approx - exact| of a level's sigmoid (which=0) or tanh (which=1)
 * over float bit patterns 0, stride, 2*stride, ... (all if stride == 1);
 * -1 for a level this CPU lacks or the scalar one. */
double pyrnn_simd_max_error(int level, int which, uint32_t stride);

#endif
