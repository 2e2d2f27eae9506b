/* AVX2+FMA cell bodies, written with intrinsics (included by gates.c inside its
 * AVX2 target region, before gates_impl.h, which then skips its generic ones).
 *
 * Why by hand: a cell's activations form long dependent chains (exp, then a
 * divide, then the next gate's exp), and the compiler's vectorised loop ran
 * one 8-unit vector at a time, bound by that latency: GRU 2.9 ns and LSTM
 * 4.8 ns a unit at batch 16, about 1.5x what its instructions need. Here
 * each step of the arithmetic is issued for VU vectors side by side, so the
 * core always has independent work. Every lane goes through the same
 * operations whatever its position (full blocks or the masked last block),
 * so a unit's bits do not depend on how the units are split among threads.
 *
 * exp: x = n ln2 + r with n = round(x / ln2) and one fused reduction (the
 * error it leaves in r only matters where the result saturates), e^r =
 * 1 + r + r^2 p(r) with p of degree 5 (Cephes' coefficients) in Estrin's
 * form, 2^n through the exponent bits. Clamped to [-87, 88] first, so 2^n
 * stays normal; max/min are written so that NaN passes through. Max error
 * against libm's double: 9e-8 for sigmoid and tanh. */
#include <immintrin.h>

#define VAI static inline __attribute__((always_inline))
#define VU 2                      /* vectors in flight per block */
#define FOR_V(n) for (int q = 0; q < (n); q++)

VAI __m256 v_ld(const float *p, const __m256i *m, int q)
{
    return m ? _mm256_maskload_ps(p, m[q]) : _mm256_loadu_ps(p);
}

VAI void v_st(float *p, __m256 v, const __m256i *m, int q)
{
    if (m) _mm256_maskstore_ps(p, m[q], v);
    else _mm256_storeu_ps(p, v);
}

/* lanes of a last block of nv vectors below rem units */
VAI void v_masks(__m256i *m, int rem, int nv)
{
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    FOR_V(nv) m[q] = _mm256_cmpgt_epi32(_mm256_set1_epi32(rem - 8 * q), idx);
}

/* v[0..n) = exp(v[0..n)), n <= 3 * VU */
VAI void v_exp(int n, __m256 *v)
{
    const __m256 lo = _mm256_set1_ps(-87.0f), hi = _mm256_set1_ps(88.0f);
    const __m256 magic = _mm256_set1_ps(12582912.0f);      /* 1.5 * 2^23: round to nearest */
    const __m256 log2e = _mm256_set1_ps(1.44269504088896341f);
    const __m256 ln2 = _mm256_set1_ps(0.693147180559945309f);
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 k[3 * VU], r[3 * VU], r2[3 * VU], p[3 * VU], t[3 * VU];
    FOR_V(n) v[q] = _mm256_min_ps(hi, _mm256_max_ps(lo, v[q]));
    FOR_V(n) k[q] = _mm256_sub_ps(_mm256_fmadd_ps(v[q], log2e, magic), magic);
    FOR_V(n) r[q] = _mm256_fnmadd_ps(k[q], ln2, v[q]);
    FOR_V(n) r2[q] = _mm256_mul_ps(r[q], r[q]);
    FOR_V(n) p[q] = _mm256_fmadd_ps(_mm256_set1_ps(1.9875691500e-4f), r[q],
                                    _mm256_set1_ps(1.3981999507e-3f));
    FOR_V(n) t[q] = _mm256_fmadd_ps(_mm256_set1_ps(8.3334519073e-3f), r[q],
                                    _mm256_set1_ps(4.1665795894e-2f));
    FOR_V(n) p[q] = _mm256_fmadd_ps(p[q], r2[q], t[q]);
    FOR_V(n) t[q] = _mm256_fmadd_ps(_mm256_set1_ps(1.6666665459e-1f), r[q],
                                    _mm256_set1_ps(5.0000001201e-1f));
    FOR_V(n) p[q] = _mm256_fmadd_ps(p[q], r2[q], t[q]);
    FOR_V(n) p[q] = _mm256_fmadd_ps(p[q], r2[q], _mm256_add_ps(r[q], one));
    FOR_V(n) v[q] = _mm256_mul_ps(p[q], _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvttps_epi32(k[q]), _mm256_set1_epi32(127)), 23)));
}

/* sigmoid(x) = 1 / (1 + e^-x) */
VAI void v_sigm(int n, __m256 *v)
{
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    FOR_V(n) v[q] = _mm256_xor_ps(v[q], sign);
    v_exp(n, v);
    FOR_V(n) v[q] = _mm256_div_ps(one, _mm256_add_ps(one, v[q]));
}

/* tanh(x) = sign(x) (1 - e) / (1 + e), e = e^-2|x|: no overflow for any x */
VAI void v_tanh(int n, __m256 *v)
{
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    __m256 s[3 * VU], e[3 * VU];
    FOR_V(n) {
        s[q] = _mm256_and_ps(v[q], sign);
        e[q] = _mm256_mul_ps(_mm256_andnot_ps(sign, v[q]), _mm256_set1_ps(-2.0f));
    }
    v_exp(n, e);
    FOR_V(n) v[q] = _mm256_or_ps(_mm256_div_ps(_mm256_sub_ps(one, e[q]),
                                               _mm256_add_ps(one, e[q])), s[q]);
}

/* Runs BODY(j, m) over the H units in blocks of NV vectors, the last one
 * masked. */
#define V_UNITS_N(H, BODY, NV)                                                  \
    do {                                                                        \
        int j_ = 0;                                                             \
        for (; j_ + 8 * (NV) <= (H); j_ += 8 * (NV)) BODY(j_, (const __m256i *)0); \
        if (j_ < (H)) {                                                         \
            __m256i m_[NV];                                                     \
            v_masks(m_, (H) - j_, (NV));                                        \
            BODY(j_, m_);                                                       \
        }                                                                       \
    } while (0)
#define V_UNITS(H, BODY) V_UNITS_N(H, BODY, VU)

/* gate pre-activation x + b (+ r: the recurrent product, when separate) */
VAI __m256 v_pre(const float *x, const float *b, const float *r, int o, const __m256i *m, int q)
{
    __m256 a = _mm256_add_ps(v_ld(x + o, m, q), v_ld(b + o, m, q));
    return r ? _mm256_add_ps(a, v_ld(r + o, m, q)) : a;
}

/* ---- RNN (tanh): one activation a unit, so twice the vectors a block ---- */
VAI void rnn_block(int j, const __m256i *m, const float *x, const float *bx, const float *r,
                   float *h1, float *yb)
{
    __m256 v[2 * VU];
    FOR_V(2 * VU) v[q] = v_pre(x, bx, r, j + 8 * q, m, q);
    v_tanh(2 * VU, v);
    FOR_V(2 * VU) {
        v_st(h1 + j + 8 * q, v[q], m, q);
        v_st(yb + j + 8 * q, v[q], m, q);
    }
}

static inline void rnn_cell_f_avx2(int H, const float *x, const float *bx, const float *r,
                                   float *h1, float *yb)
{
#define B_(j, m) rnn_block(j, m, x, bx, r, h1, yb)
#define B0_(j, m) rnn_block(j, m, x, bx, (const float *)0, h1, yb)
    if (r) V_UNITS_N(H, B_, 2 * VU);
    else V_UNITS_N(H, B0_, 2 * VU);
#undef B_
#undef B0_
}

/* ---- LSTM, gates i f g o; keep (training): ai af ag ao and tanh(c') ---- */
VAI void lstm_block(int j, const __m256i *m, int gs, const float *x, const float *bx,
                    const float *r, const float *c0, float *c1, float *h1, float *yb,
                    float *ai, float *af, float *ag, float *ao, float *tcb)
{
    __m256 s[2 * VU], g[VU], o[VU], c[VU];
    FOR_V(VU) {
        int u = j + 8 * q;
        s[q] = v_pre(x, bx, r, u, m, q);
        s[VU + q] = v_pre(x, bx, r, gs + u, m, q);
        g[q] = v_pre(x, bx, r, 2 * gs + u, m, q);
        o[q] = v_pre(x, bx, r, 3 * gs + u, m, q);
    }
    v_sigm(2 * VU, s);
    v_tanh(VU, g);
    v_sigm(VU, o);
    FOR_V(VU) {
        int u = j + 8 * q;
        c[q] = _mm256_fmadd_ps(s[VU + q], v_ld(c0 + u, m, q), _mm256_mul_ps(s[q], g[q]));
        v_st(c1 + u, c[q], m, q);
    }
    v_tanh(VU, c);
    FOR_V(VU) {
        int u = j + 8 * q;
        __m256 h = _mm256_mul_ps(o[q], c[q]);
        v_st(h1 + u, h, m, q);
        if (yb) v_st(yb + u, h, m, q);
        if (ai) {
            v_st(ai + u, s[q], m, q);
            v_st(af + u, s[VU + q], m, q);
            v_st(ag + u, g[q], m, q);
            v_st(ao + u, o[q], m, q);
            v_st(tcb + u, c[q], m, q);
        }
    }
}

static inline void lstm_cell_f_avx2(int H, int gs, const float *x, const float *bx,
                                    const float *r, const float *c0, float *c1, float *h1,
                                    float *yb)
{
#define B_(j, m) lstm_block(j, m, gs, x, bx, r, c0, c1, h1, yb, 0, 0, 0, 0, 0)
#define B0_(j, m) lstm_block(j, m, gs, x, bx, (const float *)0, c0, c1, h1, yb, 0, 0, 0, 0, 0)
    if (r) V_UNITS(H, B_);
    else V_UNITS(H, B0_);
#undef B_
#undef B0_
}

static inline void lstm_cell_keep_f_avx2(int H, int gs, const float *x, const float *bx,
    const float *r, const float *c0, float *c1, float *h1, float *yb, float *ai, float *af,
    float *ag, float *ao, float *tcb)
{
#define B_(j, m) lstm_block(j, m, gs, x, bx, r, c0, c1, h1, yb, ai, af, ag, ao, tcb)
#define B0_(j, m) lstm_block(j, m, gs, x, bx, (const float *)0, c0, c1, h1, yb, ai, af, ag, ao, \
                             tcb)
    if (r) V_UNITS(H, B_);
    else V_UNITS(H, B0_);
#undef B_
#undef B0_
}

/* ---- GRU: s = [r (VU vectors), z (VU)], the sigmoids of both forms; r:
 * their recurrent parts, or NULL where the [x | h] product put them in x ---- */
VAI void gru_rz(int j, const __m256i *m, int gs, const float *x, const float *bx,
                const float *r, __m256 *s)
{
    FOR_V(VU) {
        int u = j + 8 * q;
        s[q] = v_pre(x, bx, r, u, m, q);
        s[VU + q] = v_pre(x, bx, r, gs + u, m, q);
    }
    v_sigm(2 * VU, s);
}

/* ---- GRU, reset after: r z n, n = tanh(x_n + r (W_hn h + b_hn)) ---- */
VAI void gru_block(int j, const __m256i *m, int gs, const float *x, const float *bx,
                   const float *r, int rz, const float *bhn, const float *h0, float *h1,
                   float *yb, float *ar, float *az, float *an, float *gb)
{
    __m256 s[2 * VU], hn[VU], n[VU];
    gru_rz(j, m, gs, x, bx, rz ? r : (const float *)0, s);
    FOR_V(VU) {
        int u = j + 8 * q;
        hn[q] = _mm256_add_ps(v_ld(r + 2 * gs + u, m, q), v_ld(bhn + u, m, q));
        n[q] = _mm256_fmadd_ps(s[q], hn[q], _mm256_add_ps(v_ld(x + 2 * gs + u, m, q),
                                                          v_ld(bx + 2 * gs + u, m, q)));
    }
    v_tanh(VU, n);
    FOR_V(VU) {
        int u = j + 8 * q;
        __m256 h = _mm256_fmadd_ps(s[VU + q], _mm256_sub_ps(v_ld(h0 + u, m, q), n[q]), n[q]);
        v_st(h1 + u, h, m, q);
        v_st(yb + u, h, m, q);
        if (ar) {
            v_st(ar + u, s[q], m, q);
            v_st(az + u, s[VU + q], m, q);
            v_st(an + u, n[q], m, q);
            v_st(gb + u, hn[q], m, q);
        }
    }
}

static inline void gru_cell_f_avx2(int H, int gs, const float *x, const float *bx,
    const float *r, int rz, const float *bhn, const float *h0, float *h1, float *yb)
{
#define B_(j, m) gru_block(j, m, gs, x, bx, r, 1, bhn, h0, h1, yb, 0, 0, 0, 0)
#define B0_(j, m) gru_block(j, m, gs, x, bx, r, 0, bhn, h0, h1, yb, 0, 0, 0, 0)
    if (rz) V_UNITS(H, B_);
    else V_UNITS(H, B0_);
#undef B_
#undef B0_
}

static inline void gru_cell_keep_f_avx2(int H, int gs, const float *x, const float *bx,
    const float *r, int rz, const float *bhn, const float *h0, float *h1, float *yb,
    float *ar, float *az, float *an, float *gb)
{
#define B_(j, m) gru_block(j, m, gs, x, bx, r, 1, bhn, h0, h1, yb, ar, az, an, gb)
#define B0_(j, m) gru_block(j, m, gs, x, bx, r, 0, bhn, h0, h1, yb, ar, az, an, gb)
    if (rz) V_UNITS(H, B_);
    else V_UNITS(H, B0_);
#undef B_
#undef B0_
}

/* ---- GRU, reset before: step 1 makes r, z and r*h; step 2 n and h' ---- */
VAI void grb1_block(int j, const __m256i *m, int gs, const float *x, const float *bx,
                    const float *r, const float *h0, float *ab, float *rh)
{
    __m256 s[2 * VU];
    gru_rz(j, m, gs, x, bx, r, s);
    FOR_V(VU) {
        int u = j + 8 * q;
        v_st(ab + u, s[q], m, q);
        v_st(ab + gs + u, s[VU + q], m, q);
        v_st(rh + u, _mm256_mul_ps(s[q], v_ld(h0 + u, m, q)), m, q);
    }
}

static inline void grb_cell1_f_avx2(int H, int gs, const float *x, const float *bx,
    const float *r, const float *h0, float *ab, float *rh)
{
#define B_(j, m) grb1_block(j, m, gs, x, bx, r, h0, ab, rh)
    V_UNITS(H, B_);
#undef B_
}

/* x, bx: the n gate's; ab: the row's [r, z, n] */
VAI void grb2_block(int j, const __m256i *m, int gs, const float *x, const float *bx,
                    const float *r, const float *h0, float *ab, float *h1, float *yb)
{
    __m256 n[VU];
    FOR_V(VU) n[q] = v_pre(x, bx, r, j + 8 * q, m, q);
    v_tanh(VU, n);
    FOR_V(VU) {
        int u = j + 8 * q;
        v_st(ab + 2 * gs + u, n[q], m, q);
        __m256 h = _mm256_fmadd_ps(v_ld(ab + gs + u, m, q),
                                   _mm256_sub_ps(v_ld(h0 + u, m, q), n[q]), n[q]);
        v_st(h1 + u, h, m, q);
        v_st(yb + u, h, m, q);
    }
}

static inline void grb_cell2_f_avx2(int H, int gs, const float *x, const float *bx,
    const float *r, const float *h0, float *ab, float *h1, float *yb)
{
#define B_(j, m) grb2_block(j, m, gs, x, bx, r, h0, ab, h1, yb)
    V_UNITS(H, B_);
#undef B_
}

/* ---- minimal GRU: z n; keep: az an ---- */
VAI void mgru_block(int j, const __m256i *m, int gs, const float *x, const float *bx,
                    const float *r, const float *h0, float *h1, float *yb, float *az,
                    float *an)
{
    __m256 z[VU], n[VU];
    FOR_V(VU) {
        int u = j + 8 * q;
        z[q] = v_pre(x, bx, r, u, m, q);
        n[q] = v_pre(x, bx, r, gs + u, m, q);
    }
    v_sigm(VU, z);
    v_tanh(VU, n);
    FOR_V(VU) {
        int u = j + 8 * q;
        __m256 h = _mm256_fmadd_ps(z[q], _mm256_sub_ps(v_ld(h0 + u, m, q), n[q]), n[q]);
        v_st(h1 + u, h, m, q);
        v_st(yb + u, h, m, q);
        if (az) {
            v_st(az + u, z[q], m, q);
            v_st(an + u, n[q], m, q);
        }
    }
}

static inline void mgru_cell_f_avx2(int H, int gs, const float *x, const float *bx,
    const float *r, const float *h0, float *h1, float *yb)
{
#define B_(j, m) mgru_block(j, m, gs, x, bx, r, h0, h1, yb, 0, 0)
#define B0_(j, m) mgru_block(j, m, gs, x, bx, (const float *)0, h0, h1, yb, 0, 0)
    if (r) V_UNITS(H, B_);
    else V_UNITS(H, B0_);
#undef B_
#undef B0_
}

static inline void mgru_cell_keep_f_avx2(int H, int gs, const float *x, const float *bx,
    const float *r, const float *h0, float *h1, float *yb, float *az, float *an)
{
#define B_(j, m) mgru_block(j, m, gs, x, bx, r, h0, h1, yb, az, an)
#define B0_(j, m) mgru_block(j, m, gs, x, bx, (const float *)0, h0, h1, yb, az, an)
    if (r) V_UNITS(H, B_);
    else V_UNITS(H, B0_);
#undef B_
#undef B0_
}

/* ---- elementwise, for the accuracy test: 0 sigmoid, 1 tanh ---- */
VAI void act_block(int j, const __m256i *m, int which, const float *x, float *y)
{
    __m256 v[VU];
    FOR_V(VU) v[q] = v_ld(x + j + 8 * q, m, q);
    if (which == 0) v_sigm(VU, v);
    else v_tanh(VU, v);
    FOR_V(VU) v_st(y + j + 8 * q, v[q], m, q);
}

static void act_f_avx2(int which, int64_t n, const float *x, float *y)
{
    while (n > 0) {     /* in int-sized chunks */
        int c = n > (1 << 30) ? (1 << 30) : (int)n;
#define B_(j, m) act_block(j, m, which, x, y)
        V_UNITS(c, B_);
#undef B_
        x += c, y += c, n -= c;
    }
}

#define PYRNN_VEC_CELLS 1
