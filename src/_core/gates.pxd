# C gate kernels (gates.h): one forward/backward pair per cell kind.
from libc.stdint cimport int64_t, uint32_t

cdef extern from "gates.h" nogil:
    void rnn_fwd_f(int relu, int nb, int H, const int64_t *len, int t, const float *gx, const float *bx, const float *gh, const float *hp, float *hn, float *y, int ldy, float *A)
    void rnn_fwd_d(int relu, int nb, int H, const int64_t *len, int t, const double *gx, const double *bx, const double *gh, const double *hp, double *hn, double *y, int ldy, double *A)
    void rnn_bwd_f(int relu, int nb, int H, const int64_t *len, int t, const float *A, const float *dy, int ldy, const float *dh, float *dg, float *dhp)
    void rnn_bwd_d(int relu, int nb, int H, const int64_t *len, int t, const double *A, const double *dy, int ldy, const double *dh, double *dg, double *dhp)
    void lstm_fwd_f(int nb, int H, int gs, const int64_t *len, int t, const float *gx, const float *bx, const float *gh, const float *cp, float *cn, const float *hp, float *hout, float *y, int ldy, float *A, float *TC)
    void lstm_fwd_d(int nb, int H, int gs, const int64_t *len, int t, const double *gx, const double *bx, const double *gh, const double *cp, double *cn, const double *hp, double *hout, double *y, int ldy, double *A, double *TC)
    void lstm_bwd_f(int nb, int H, const int64_t *len, int t, const float *A, const float *TC, const float *cp, const float *dy, int ldy, const float *dh, const float *dc, float *dg, float *dcp, float *dhp)
    void lstm_bwd_d(int nb, int H, const int64_t *len, int t, const double *A, const double *TC, const double *cp, const double *dy, int ldy, const double *dh, const double *dc, double *dg, double *dcp, double *dhp)
    void proj_finish_f(int nb, int P, const int64_t *len, int t, const float *hp, float *hn, float *y, int ldy)
    void proj_finish_d(int nb, int P, const int64_t *len, int t, const double *hp, double *hn, double *y, int ldy)
    void proj_bwd_pre_f(int nb, int P, const int64_t *len, int t, const float *dy, int ldy, const float *dh, float *dht, float *dhp)
    void proj_bwd_pre_d(int nb, int P, const int64_t *len, int t, const double *dy, int ldy, const double *dh, double *dht, double *dhp)
    void gru_fwd_f(int nb, int H, int gs, const int64_t *len, int t, const float *gx, const float *bx, const float *gh, int rz, const float *bhn, const float *hp, float *hn, float *y, int ldy, float *A, float *GHN)
    void gru_fwd_d(int nb, int H, int gs, const int64_t *len, int t, const double *gx, const double *bx, const double *gh, int rz, const double *bhn, const double *hp, double *hn, double *y, int ldy, double *A, double *GHN)
    void gru_bwd_f(int nb, int H, const int64_t *len, int t, const float *A, const float *GHN, const float *hp, const float *dy, int ldy, const float *dh, float *dgx, float *dgh, float *dhp)
    void gru_bwd_d(int nb, int H, const int64_t *len, int t, const double *A, const double *GHN, const double *hp, const double *dy, int ldy, const double *dh, double *dgx, double *dgh, double *dhp)
    void grb_fwd1_f(int nb, int H, int gs, const int64_t *len, int t, const float *gx, const float *bx, const float *gh, const float *hp, float *A, float *RH)
    void grb_fwd1_d(int nb, int H, int gs, const int64_t *len, int t, const double *gx, const double *bx, const double *gh, const double *hp, double *A, double *RH)
    void grb_fwd2_f(int nb, int H, int gs, const int64_t *len, int t, const float *gx, const float *bx, const float *ghn, const float *hp, float *A, float *hn, float *y, int ldy)
    void grb_fwd2_d(int nb, int H, int gs, const int64_t *len, int t, const double *gx, const double *bx, const double *ghn, const double *hp, double *A, double *hn, double *y, int ldy)
    void grb_bwd1_f(int nb, int H, int gs, const int64_t *len, int t, const float *A, const float *hp, const float *dy, int ldy, const float *dh, float *dg, float *dhp)
    void grb_bwd1_d(int nb, int H, int gs, const int64_t *len, int t, const double *A, const double *hp, const double *dy, int ldy, const double *dh, double *dg, double *dhp)
    void grb_bwd2_f(int nb, int H, int gs, const int64_t *len, int t, const float *A, const float *hp, const float *drh, float *dg, float *dhp)
    void grb_bwd2_d(int nb, int H, int gs, const int64_t *len, int t, const double *A, const double *hp, const double *drh, double *dg, double *dhp)
    void mgru_fwd_f(int nb, int H, int gs, const int64_t *len, int t, const float *gx, const float *bx, const float *gh, const float *hp, float *hn, float *y, int ldy, float *A)
    void mgru_fwd_d(int nb, int H, int gs, const int64_t *len, int t, const double *gx, const double *bx, const double *gh, const double *hp, double *hn, double *y, int ldy, double *A)
    void mgru_bwd_f(int nb, int H, const int64_t *len, int t, const float *A, const float *hp, const float *dy, int ldy, const float *dh, float *dg, float *dhp)
    void mgru_bwd_d(int nb, int H, const int64_t *len, int t, const double *A, const double *hp, const double *dy, int ldy, const double *dh, double *dg, double *dhp)
    void act_f(int which, int64_t n, const float *x, float *y)
    void act_d(int which, int64_t n, const double *x, double *y)
    int pyrnn_simd_level()
    int pyrnn_simd_best()
    int pyrnn_set_simd_level(int level)
    int pyrnn_simd_active()
    int pyrnn_simd_available()
    int pyrnn_set_simd(int on)
    double pyrnn_simd_max_error(int level, int which, uint32_t stride)


# Fused-type wrappers: one name per kernel, picked by the element type.
from cython cimport floating

cdef inline void rnn_fwd(int relu, int nb, int H, const int64_t *len, int t, const floating *gx, const floating *bx, const floating *gh, const floating *hp, floating *hn, floating *y, int ldy, floating *A) noexcept nogil:
    if floating is float:
        rnn_fwd_f(relu, nb, H, len, t, gx, bx, gh, hp, hn, y, ldy, A)
    else:
        rnn_fwd_d(relu, nb, H, len, t, gx, bx, gh, hp, hn, y, ldy, A)

cdef inline void rnn_bwd(int relu, int nb, int H, const int64_t *len, int t, const floating *A, const floating *dy, int ldy, const floating *dh, floating *dg, floating *dhp) noexcept nogil:
    if floating is float:
        rnn_bwd_f(relu, nb, H, len, t, A, dy, ldy, dh, dg, dhp)
    else:
        rnn_bwd_d(relu, nb, H, len, t, A, dy, ldy, dh, dg, dhp)

cdef inline void lstm_fwd(int nb, int H, int gs, const int64_t *len, int t, const floating *gx, const floating *bx, const floating *gh, const floating *cp, floating *cn, const floating *hp, floating *hout, floating *y, int ldy, floating *A, floating *TC) noexcept nogil:
    if floating is float:
        lstm_fwd_f(nb, H, gs, len, t, gx, bx, gh, cp, cn, hp, hout, y, ldy, A, TC)
    else:
        lstm_fwd_d(nb, H, gs, len, t, gx, bx, gh, cp, cn, hp, hout, y, ldy, A, TC)

cdef inline void lstm_bwd(int nb, int H, const int64_t *len, int t, const floating *A, const floating *TC, const floating *cp, const floating *dy, int ldy, const floating *dh, const floating *dc, floating *dg, floating *dcp, floating *dhp) noexcept nogil:
    if floating is float:
        lstm_bwd_f(nb, H, len, t, A, TC, cp, dy, ldy, dh, dc, dg, dcp, dhp)
    else:
        lstm_bwd_d(nb, H, len, t, A, TC, cp, dy, ldy, dh, dc, dg, dcp, dhp)

cdef inline void proj_finish(int nb, int P, const int64_t *len, int t, const floating *hp, floating *hn, floating *y, int ldy) noexcept nogil:
    if floating is float:
        proj_finish_f(nb, P, len, t, hp, hn, y, ldy)
    else:
        proj_finish_d(nb, P, len, t, hp, hn, y, ldy)

cdef inline void proj_bwd_pre(int nb, int P, const int64_t *len, int t, const floating *dy, int ldy, const floating *dh, floating *dht, floating *dhp) noexcept nogil:
    if floating is float:
        proj_bwd_pre_f(nb, P, len, t, dy, ldy, dh, dht, dhp)
    else:
        proj_bwd_pre_d(nb, P, len, t, dy, ldy, dh, dht, dhp)

cdef inline void gru_fwd(int nb, int H, int gs, const int64_t *len, int t, const floating *gx, const floating *bx, const floating *gh, int rz, const floating *bhn, const floating *hp, floating *hn, floating *y, int ldy, floating *A, floating *GHN) noexcept nogil:
    if floating is float:
        gru_fwd_f(nb, H, gs, len, t, gx, bx, gh, rz, bhn, hp, hn, y, ldy, A, GHN)
    else:
        gru_fwd_d(nb, H, gs, len, t, gx, bx, gh, rz, bhn, hp, hn, y, ldy, A, GHN)

cdef inline void gru_bwd(int nb, int H, const int64_t *len, int t, const floating *A, const floating *GHN, const floating *hp, const floating *dy, int ldy, const floating *dh, floating *dgx, floating *dgh, floating *dhp) noexcept nogil:
    if floating is float:
        gru_bwd_f(nb, H, len, t, A, GHN, hp, dy, ldy, dh, dgx, dgh, dhp)
    else:
        gru_bwd_d(nb, H, len, t, A, GHN, hp, dy, ldy, dh, dgx, dgh, dhp)

cdef inline void grb_fwd1(int nb, int H, int gs, const int64_t *len, int t, const floating *gx, const floating *bx, const floating *gh, const floating *hp, floating *A, floating *RH) noexcept nogil:
    if floating is float:
        grb_fwd1_f(nb, H, gs, len, t, gx, bx, gh, hp, A, RH)
    else:
        grb_fwd1_d(nb, H, gs, len, t, gx, bx, gh, hp, A, RH)

cdef inline void grb_fwd2(int nb, int H, int gs, const int64_t *len, int t, const floating *gx, const floating *bx, const floating *ghn, const floating *hp, floating *A, floating *hn, floating *y, int ldy) noexcept nogil:
    if floating is float:
        grb_fwd2_f(nb, H, gs, len, t, gx, bx, ghn, hp, A, hn, y, ldy)
    else:
        grb_fwd2_d(nb, H, gs, len, t, gx, bx, ghn, hp, A, hn, y, ldy)

cdef inline void grb_bwd1(int nb, int H, int gs, const int64_t *len, int t, const floating *A, const floating *hp, const floating *dy, int ldy, const floating *dh, floating *dg, floating *dhp) noexcept nogil:
    if floating is float:
        grb_bwd1_f(nb, H, gs, len, t, A, hp, dy, ldy, dh, dg, dhp)
    else:
        grb_bwd1_d(nb, H, gs, len, t, A, hp, dy, ldy, dh, dg, dhp)

cdef inline void grb_bwd2(int nb, int H, int gs, const int64_t *len, int t, const floating *A, const floating *hp, const floating *drh, floating *dg, floating *dhp) noexcept nogil:
    if floating is float:
        grb_bwd2_f(nb, H, gs, len, t, A, hp, drh, dg, dhp)
    else:
        grb_bwd2_d(nb, H, gs, len, t, A, hp, drh, dg, dhp)

cdef inline void mgru_fwd(int nb, int H, int gs, const int64_t *len, int t, const floating *gx, const floating *bx, const floating *gh, const floating *hp, floating *hn, floating *y, int ldy, floating *A) noexcept nogil:
    if floating is float:
        mgru_fwd_f(nb, H, gs, len, t, gx, bx, gh, hp, hn, y, ldy, A)
    else:
        mgru_fwd_d(nb, H, gs, len, t, gx, bx, gh, hp, hn, y, ldy, A)

cdef inline void mgru_bwd(int nb, int H, const int64_t *len, int t, const floating *A, const floating *hp, const floating *dy, int ldy, const floating *dh, floating *dg, floating *dhp) noexcept nogil:
    if floating is float:
        mgru_bwd_f(nb, H, len, t, A, hp, dy, ldy, dh, dg, dhp)
    else:
        mgru_bwd_d(nb, H, len, t, A, hp, dy, ldy, dh, dg, dhp)

cdef inline void act(int which, int64_t n, const floating *x, floating *y) noexcept nogil:
    if floating is float:
        act_f(which, n, x, y)
    else:
        act_d(which, n, x, y)
