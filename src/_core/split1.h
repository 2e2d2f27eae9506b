/* Batch-1 inference with the hidden units split across threads.
 *
 * At batch 1 a step is a matrix-vector product, bound by reading W_hh. One
 * persistent OpenMP region runs all T steps; thread k owns a fixed slice of
 * hidden units and reads only the rows of every gate for them, so its part
 * of W_hh stays in its own core's cache. Gate blocks keep their stride H.
 * Per step: GEMV on its rows, the fused gate kernel on its units, one barrier
 * (h is double-buffered). Each unit is always computed by the same code on
 * the same rows, so results do not depend on the thread count.
 * Supports RNN, LSTM without projection, GRU (reset after) and MinimalGRU.
 */
#ifndef PYRNN_SPLIT1_H
#define PYRNN_SPLIT1_H
#include <stdint.h>

typedef void (*pyrnn_sgemv_t)(char *, int *, int *, float *, float *, int *, float *, int *,
                              float *, float *, int *);
typedef void (*pyrnn_dgemv_t)(char *, int *, int *, double *, double *, int *, double *,
                              int *, double *, double *, int *);
void pyrnn_set_gemv(pyrnn_sgemv_t s, pyrnn_dgemv_t d);

/* GX: (T, G*H) input projections; Whh: (G*H, H); split: nthreads+1 unit boundaries; len: NULL or a
 * single length; hbuf: (2, H); cbuf: (2, H) for LSTM; gh: (G*H) scratch. */
void split1_forward_f(int kind, int T, int H, int nthreads, const int *split,
    const float *GX, const float *Whh, const float *bx, const float *bhn,
    const float *h0, const float *c0, float *Y, int ldy, int reverse,
    const int64_t *len, float *hn, float *cn, float *hbuf, float *cbuf, float *gh);
void split1_forward_d(int kind, int T, int H, int nthreads, const int *split,
    const double *GX, const double *Whh, const double *bx, const double *bhn,
    const double *h0, const double *c0, double *Y, int ldy, int reverse,
    const int64_t *len, double *hn, double *cn, double *hbuf, double *cbuf, double *gh);
#endif
