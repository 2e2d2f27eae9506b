/* Kernel bodies, included once per (type, instruction set) by gates.c.
 * Expects: REAL, NAME(base) -> symbol, KATTR (function attribute, e.g. a
 * target), and SIGM(x), TANH(x) unless PYRNN_VEC_CELLS says the cell bodies
 * come from elsewhere (gates_avx2.h). Loops over j are simple and
 * restrict-qualified so the compiler vectorises them under the AVX2 target. */

#define ACTIVE(b) (len == NULL || (int64_t)t < len[b])

#ifndef PYRNN_VEC_CELLS
/* The cell bodies below (those with activations) have hand-written AVX2
 * versions in gates_avx2.h, which defines PYRNN_VEC_CELLS. */
static inline void NAME(rnn_cell)(int H, const REAL *restrict x, const REAL *restrict bx,
    const REAL *restrict r, REAL *restrict h1, REAL *restrict yb)
{
    if (r) { for (int j = 0; j < H; j++) h1[j] = TANH(x[j] + bx[j] + r[j]); }
    else { for (int j = 0; j < H; j++) h1[j] = TANH(x[j] + bx[j]); }
    for (int j = 0; j < H; j++) yb[j] = h1[j];
}
#endif

KATTR void NAME(rnn_fwd)(int relu, int nb, int H, const int64_t *len, int t,
    const REAL *restrict gx, const REAL *restrict bx, const REAL *restrict gh,
    const REAL *restrict hp, REAL *restrict hn, REAL *restrict y, int ldy,
    REAL *restrict A)
{
    for (int b = 0; b < nb; b++) {
        const REAL *x = gx + (size_t)b * H, *r = gh ? gh + (size_t)b * H : NULL;
        const REAL *h0 = hp + (size_t)b * H;
        REAL *h1 = hn + (size_t)b * H, *yb = y + (size_t)b * ldy;
        if (!ACTIVE(b)) {
            for (int j = 0; j < H; j++) { h1[j] = h0[j]; yb[j] = 0; }
            continue;
        }
        if (relu) {
            for (int j = 0; j < H; j++) {
                REAL a = r ? x[j] + bx[j] + r[j] : x[j] + bx[j];
                /* a > 0 ? a : 0 keeps NaN as NaN, like torch.relu */
                h1[j] = a < 0 ? (REAL)0 : a;
            }
            for (int j = 0; j < H; j++) yb[j] = h1[j];
        } else {
            NAME(rnn_cell)(H, x, bx, r, h1, yb);
        }
        if (A) for (int j = 0; j < H; j++) A[(size_t)b * H + j] = h1[j];
    }
}

KATTR void NAME(rnn_bwd)(int relu, int nb, int H, const int64_t *len, int t,
    const REAL *restrict A, const REAL *restrict dy, int ldy,
    const REAL *restrict dh, REAL *restrict dg, REAL *restrict dhp)
{
    for (int b = 0; b < nb; b++) {
        const REAL *a = A + (size_t)b * H, *dyb = dy + (size_t)b * ldy;
        const REAL *d = dh + (size_t)b * H;
        REAL *g = dg + (size_t)b * H, *p = dhp + (size_t)b * H;
        if (!ACTIVE(b)) {
            for (int j = 0; j < H; j++) { g[j] = 0; p[j] = d[j]; }
            continue;
        }
        if (relu) {
            for (int j = 0; j < H; j++) g[j] = a[j] > 0 ? dyb[j] + d[j] : (REAL)0;
        } else {
            for (int j = 0; j < H; j++) g[j] = (dyb[j] + d[j]) * (1 - a[j] * a[j]);
        }
        for (int j = 0; j < H; j++) p[j] = 0;
    }
}

#ifndef PYRNN_VEC_CELLS
/* The cell bodies take the gate pre-activations from PRE(offset): x + bias +
 * the recurrent part r, or (r == NULL: the [x | h] product already holds it)
 * x + bias, without reading a row of zeros. */
#define PRE_R(o) (x[(o) + j] + bx[(o) + j] + r[(o) + j])
#define PRE_X(o) (x[(o) + j] + bx[(o) + j])
/* KEEP: what training also stores of each unit (nothing in inference) */
#define LSTM_CELL(PRE, KEEP)                                                    \
    for (int j = 0; j < H; j++) {                                               \
        REAL i = SIGM(PRE(0));                                                  \
        REAL f = SIGM(PRE(gs));                                                 \
        REAL g = TANH(PRE(2 * gs));                                             \
        REAL o = SIGM(PRE(3 * gs));                                             \
        REAL c = f * c0[j] + i * g;                                             \
        REAL tc = TANH(c);                                                      \
        c1[j] = c;                                                              \
        h1[j] = o * tc;                                                         \
        KEEP                                                                    \
    }
#define LSTM_KEEP ai[j] = i; af[j] = f; ag[j] = g; ao[j] = o; tcb[j] = tc;

static inline void NAME(lstm_cell)(int H, int gs, const REAL *restrict x,
    const REAL *restrict bx, const REAL *restrict r, const REAL *restrict c0,
    REAL *restrict c1, REAL *restrict h1, REAL *restrict yb)
{
    if (r) { LSTM_CELL(PRE_R, ) }
    else { LSTM_CELL(PRE_X, ) }
    if (yb) for (int j = 0; j < H; j++) yb[j] = h1[j];
}

/* One restrict pointer per gate row of A: with Python's -fwrapv the int
 * offsets gs + j could wrap, and GCC would not vectorise the stores. */
static inline void NAME(lstm_cell_keep)(int H, int gs, const REAL *restrict x,
    const REAL *restrict bx, const REAL *restrict r, const REAL *restrict c0,
    REAL *restrict c1, REAL *restrict h1, REAL *restrict yb, REAL *restrict ai,
    REAL *restrict af, REAL *restrict ag, REAL *restrict ao, REAL *restrict tcb)
{
    if (r) { LSTM_CELL(PRE_R, LSTM_KEEP) }
    else { LSTM_CELL(PRE_X, LSTM_KEEP) }
    if (yb) for (int j = 0; j < H; j++) yb[j] = h1[j];
}
#undef LSTM_CELL
#undef LSTM_KEEP
#endif

/* LSTM, gates i f g o. Without projection hout is h' (and y is written);
 * with projection hout is m = o*tanh(c') and y/hp are NULL: the driver
 * projects m and proj_finish writes h and y. */
KATTR void NAME(lstm_fwd)(int nb, int H, int gs, const int64_t *len, int t,
    const REAL *restrict gx, const REAL *restrict bx, const REAL *restrict gh,
    const REAL *restrict cp, REAL *restrict cn, const REAL *restrict hp,
    REAL *restrict hout, REAL *restrict y, int ldy, REAL *restrict A,
    REAL *restrict TC)
{
    const size_t G = 4 * (size_t)gs;
    for (int b = 0; b < nb; b++) {
        const REAL *x = gx + b * G, *r = gh ? gh + b * G : NULL;
        const REAL *c0 = cp + (size_t)b * H;
        REAL *c1 = cn + (size_t)b * H, *h1 = hout + (size_t)b * H;
        REAL *yb = y ? y + (size_t)b * ldy : NULL;
        if (!ACTIVE(b)) {
            for (int j = 0; j < H; j++) c1[j] = c0[j];
            if (hp) { for (int j = 0; j < H; j++) h1[j] = hp[(size_t)b * H + j]; }
            else { for (int j = 0; j < H; j++) h1[j] = 0; }
            if (yb) for (int j = 0; j < H; j++) yb[j] = 0;
            /* gate slices only: a call for units [u0, u0 + H) of a wider
             * layer (gs > H) must not touch the other units' entries */
            if (A) { for (size_t g = 0; g < G; g += gs) for (int j = 0; j < H; j++) A[b * G + g + j] = 0;
                     for (int j = 0; j < H; j++) TC[(size_t)b * H + j] = 0; }
            continue;
        }
        /* Two loops (gates kept for backward or not), each in a function
         * whose restrict parameters let it vectorise with no run-time overlap
         * test: GCC's test failed on training's row pointers and fell back to
         * the scalar loop (2-3x slower steps, seen with perf). */
        if (A) {
            REAL *ab = A + b * G;
            NAME(lstm_cell_keep)(H, gs, x, bx, r, c0, c1, h1, yb, ab, ab + gs,
                                 ab + 2 * (size_t)gs, ab + 3 * (size_t)gs, TC + (size_t)b * H);
        }
        else NAME(lstm_cell)(H, gs, x, bx, r, c0, c1, h1, yb);
    }
}

/* dh is the gradient reaching h' (carry + dy when no projection, dm with
 * projection, in which case dy and dhp are NULL). */
KATTR void NAME(lstm_bwd)(int nb, int H, const int64_t *len, int t,
    const REAL *restrict A, const REAL *restrict TC, const REAL *restrict cp,
    const REAL *restrict dy, int ldy, const REAL *restrict dh,
    const REAL *restrict dc, REAL *restrict dg, REAL *restrict dcp,
    REAL *restrict dhp)
{
    const size_t G = 4 * (size_t)H;
    for (int b = 0; b < nb; b++) {
        const REAL *a = A + b * G, *tc = TC + (size_t)b * H, *c0 = cp + (size_t)b * H;
        const REAL *d = dh + (size_t)b * H, *dcb = dc + (size_t)b * H;
        const REAL *dyb = dy ? dy + (size_t)b * ldy : NULL;
        REAL *g = dg + b * G, *pc = dcp + (size_t)b * H;
        REAL *ph = dhp ? dhp + (size_t)b * H : NULL;
        if (!ACTIVE(b)) {
            for (size_t j = 0; j < G; j++) g[j] = 0;
            for (int j = 0; j < H; j++) pc[j] = dcb[j];
            if (ph) for (int j = 0; j < H; j++) ph[j] = d[j];
            continue;
        }
        for (int j = 0; j < H; j++) {
            REAL i = a[j], f = a[H + j], gg = a[2 * H + j], o = a[3 * H + j];
            REAL dht = dyb ? dyb[j] + d[j] : d[j];
            REAL dct = dcb[j] + dht * o * (1 - tc[j] * tc[j]);
            g[j] = dct * gg * i * (1 - i);
            g[H + j] = dct * c0[j] * f * (1 - f);
            g[2 * H + j] = dct * i * (1 - gg * gg);
            g[3 * H + j] = dht * tc[j] * o * (1 - o);
            pc[j] = dct * f;
        }
        if (ph) for (int j = 0; j < H; j++) ph[j] = 0;
    }
}

KATTR void NAME(proj_finish)(int nb, int P, const int64_t *len, int t,
    const REAL *restrict hp, REAL *restrict hn, REAL *restrict y, int ldy)
{
    for (int b = 0; b < nb; b++) {
        REAL *h1 = hn + (size_t)b * P, *yb = y + (size_t)b * ldy;
        if (!ACTIVE(b)) {
            for (int j = 0; j < P; j++) { h1[j] = hp[(size_t)b * P + j]; yb[j] = 0; }
        } else {
            for (int j = 0; j < P; j++) yb[j] = h1[j];
        }
    }
}

KATTR void NAME(proj_bwd_pre)(int nb, int P, const int64_t *len, int t,
    const REAL *restrict dy, int ldy, const REAL *restrict dh,
    REAL *restrict dht, REAL *restrict dhp)
{
    for (int b = 0; b < nb; b++) {
        const REAL *dyb = dy + (size_t)b * ldy, *d = dh + (size_t)b * P;
        REAL *o = dht + (size_t)b * P, *p = dhp + (size_t)b * P;
        if (!ACTIVE(b)) {
            for (int j = 0; j < P; j++) { o[j] = 0; p[j] = d[j]; }
        } else {
            for (int j = 0; j < P; j++) { o[j] = dyb[j] + d[j]; p[j] = 0; }
        }
    }
}

#ifndef PYRNN_VEC_CELLS
/* rz: r holds the recurrent parts of the r and z gates too (else only of n:
 * the [x | h] product put the others in x) */
static inline void NAME(gru_cell)(int H, int gs, const REAL *restrict x,
    const REAL *restrict bx, const REAL *restrict r, int rz, const REAL *restrict bhn,
    const REAL *restrict h0, REAL *restrict h1, REAL *restrict yb)
{
    for (int j = 0; j < H; j++) {
        REAL rr = SIGM(rz ? x[j] + bx[j] + r[j] : x[j] + bx[j]);
        REAL z = SIGM(rz ? x[gs + j] + bx[gs + j] + r[gs + j] : x[gs + j] + bx[gs + j]);
        REAL n = TANH(x[2 * gs + j] + bx[2 * gs + j] + rr * (r[2 * gs + j] + bhn[j]));
        h1[j] = n + z * (h0[j] - n);
    }
    for (int j = 0; j < H; j++) yb[j] = h1[j];
}

static inline void NAME(gru_cell_keep)(int H, int gs, const REAL *restrict x,
    const REAL *restrict bx, const REAL *restrict r, int rz, const REAL *restrict bhn,
    const REAL *restrict h0, REAL *restrict h1, REAL *restrict yb, REAL *restrict ar,
    REAL *restrict az, REAL *restrict an, REAL *restrict gb)
{
    for (int j = 0; j < H; j++) {
        REAL rr = SIGM(rz ? x[j] + bx[j] + r[j] : x[j] + bx[j]);
        REAL z = SIGM(rz ? x[gs + j] + bx[gs + j] + r[gs + j] : x[gs + j] + bx[gs + j]);
        REAL hn_ = r[2 * gs + j] + bhn[j];
        REAL n = TANH(x[2 * gs + j] + bx[2 * gs + j] + rr * hn_);
        h1[j] = n + z * (h0[j] - n);
        ar[j] = rr; az[j] = z; an[j] = n; gb[j] = hn_;
    }
    for (int j = 0; j < H; j++) yb[j] = h1[j];
}
#endif

/* GRU, reset after (PyTorch): gates r z n; A = [r, z, n], GHN = W_hn h + b_hn. */
KATTR void NAME(gru_fwd)(int nb, int H, int gs, const int64_t *len, int t,
    const REAL *restrict gx, const REAL *restrict bx, const REAL *restrict gh, int rz,
    const REAL *restrict bhn, const REAL *restrict hp, REAL *restrict hn,
    REAL *restrict y, int ldy, REAL *restrict A, REAL *restrict GHN)
{
    const size_t G = 3 * (size_t)gs;
    for (int b = 0; b < nb; b++) {
        const REAL *x = gx + b * G, *r = gh + b * G, *h0 = hp + (size_t)b * H;
        REAL *h1 = hn + (size_t)b * H, *yb = y + (size_t)b * ldy;
        if (!ACTIVE(b)) {
            for (int j = 0; j < H; j++) { h1[j] = h0[j]; yb[j] = 0; }
            if (A) { for (size_t g = 0; g < G; g += gs) for (int j = 0; j < H; j++) A[b * G + g + j] = 0;
                     for (int j = 0; j < H; j++) GHN[(size_t)b * H + j] = 0; }
            continue;
        }
        if (A) {
            REAL *ab = A + b * G;
            NAME(gru_cell_keep)(H, gs, x, bx, r, rz, bhn, h0, h1, yb, ab, ab + gs,
                                ab + 2 * (size_t)gs, GHN + (size_t)b * H);
        }
        else NAME(gru_cell)(H, gs, x, bx, r, rz, bhn, h0, h1, yb);
    }
}

KATTR void NAME(gru_bwd)(int nb, int H, const int64_t *len, int t,
    const REAL *restrict A, const REAL *restrict GHN, const REAL *restrict hp,
    const REAL *restrict dy, int ldy, const REAL *restrict dh,
    REAL *restrict dgx, REAL *restrict dgh, REAL *restrict dhp)
{
    const size_t G = 3 * (size_t)H;
    for (int b = 0; b < nb; b++) {
        const REAL *a = A + b * G, *gn = GHN + (size_t)b * H, *h0 = hp + (size_t)b * H;
        const REAL *dyb = dy + (size_t)b * ldy, *d = dh + (size_t)b * H;
        REAL *gx = dgx + b * G, *gh = dgh + b * G, *p = dhp + (size_t)b * H;
        if (!ACTIVE(b)) {
            for (size_t j = 0; j < G; j++) { gx[j] = 0; gh[j] = 0; }
            for (int j = 0; j < H; j++) p[j] = d[j];
            continue;
        }
        for (int j = 0; j < H; j++) {
            REAL rr = a[j], z = a[H + j], n = a[2 * H + j];
            REAL dht = dyb[j] + d[j];
            REAL dn = dht * (1 - z) * (1 - n * n);
            REAL dz = dht * (h0[j] - n) * z * (1 - z);
            REAL dr = dn * gn[j] * rr * (1 - rr);
            gx[j] = dr; gx[H + j] = dz; gx[2 * H + j] = dn;
            gh[j] = dr; gh[H + j] = dz; gh[2 * H + j] = dn * rr;
            p[j] = dht * z;
        }
    }
}

/* GRU, reset before (Cho et al.): step 1 makes r, z and r*h; the driver
 * multiplies r*h by W_hn; step 2 makes n and h'. gh here has stride 2 gs;
 * gs is the gate stride of gx, A and dg (H, or more for a slice of units). */
#ifndef PYRNN_VEC_CELLS
static inline void NAME(grb_cell1)(int H, int gs, const REAL *restrict x,
    const REAL *restrict bx, const REAL *restrict r, const REAL *restrict h0,
    REAL *restrict ab, REAL *restrict rh)
{
    for (int j = 0; j < H; j++) {
        REAL rr = SIGM(x[j] + bx[j] + r[j]);
        ab[j] = rr;
        ab[gs + j] = SIGM(x[gs + j] + bx[gs + j] + r[gs + j]);
        rh[j] = rr * h0[j];
    }
}

/* x, bx: the n gate's; ab: the row's [r, z, n] */
static inline void NAME(grb_cell2)(int H, int gs, const REAL *restrict x,
    const REAL *restrict bx, const REAL *restrict r, const REAL *restrict h0,
    REAL *restrict ab, REAL *restrict h1, REAL *restrict yb)
{
    for (int j = 0; j < H; j++) {
        REAL n = TANH(x[j] + bx[j] + r[j]);
        REAL z = ab[gs + j];
        ab[2 * (size_t)gs + j] = n;
        h1[j] = n + z * (h0[j] - n);
    }
    for (int j = 0; j < H; j++) yb[j] = h1[j];
}
#endif

KATTR void NAME(grb_fwd1)(int nb, int H, int gs, const int64_t *len, int t,
    const REAL *restrict gx, const REAL *restrict bx, const REAL *restrict gh,
    const REAL *restrict hp, REAL *restrict A, REAL *restrict RH)
{
    const size_t G = 3 * (size_t)gs;
    for (int b = 0; b < nb; b++) {
        const REAL *x = gx + b * G, *r = gh + 2 * (size_t)gs * b, *h0 = hp + (size_t)b * H;
        REAL *ab = A + b * G, *rh = RH + (size_t)b * H;
        if (!ACTIVE(b)) {
            for (int j = 0; j < H; j++) { ab[j] = 0; ab[gs + j] = 0; rh[j] = 0; }
            continue;
        }
        NAME(grb_cell1)(H, gs, x, bx, r, h0, ab, rh);
    }
}

KATTR void NAME(grb_fwd2)(int nb, int H, int gs, const int64_t *len, int t,
    const REAL *restrict gx, const REAL *restrict bx, const REAL *restrict ghn,
    const REAL *restrict hp, REAL *restrict A, REAL *restrict hn,
    REAL *restrict y, int ldy)
{
    const size_t G = 3 * (size_t)gs;
    for (int b = 0; b < nb; b++) {
        const REAL *x = gx + b * G + 2 * (size_t)gs, *r = ghn + (size_t)b * gs;
        const REAL *h0 = hp + (size_t)b * H;
        REAL *ab = A + b * G, *h1 = hn + (size_t)b * H, *yb = y + (size_t)b * ldy;
        if (!ACTIVE(b)) {
            for (int j = 0; j < H; j++) { h1[j] = h0[j]; yb[j] = 0; ab[2 * (size_t)gs + j] = 0; }
            continue;
        }
        NAME(grb_cell2)(H, gs, x, bx + 2 * (size_t)gs, r, h0, ab, h1, yb);
    }
}

KATTR void NAME(grb_bwd1)(int nb, int H, int gs, const int64_t *len, int t,
    const REAL *restrict A, const REAL *restrict hp, const REAL *restrict dy,
    int ldy, const REAL *restrict dh, REAL *restrict dg, REAL *restrict dhp)
{
    const size_t G = 3 * (size_t)gs;
    for (int b = 0; b < nb; b++) {
        const REAL *a = A + b * G, *h0 = hp + (size_t)b * H;
        const REAL *dyb = dy + (size_t)b * ldy, *d = dh + (size_t)b * H;
        REAL *g = dg + b * G, *p = dhp + (size_t)b * H;
        if (!ACTIVE(b)) {
            for (size_t k = 0; k < G; k += gs) for (int j = 0; j < H; j++) g[k + j] = 0;
            for (int j = 0; j < H; j++) p[j] = d[j];
            continue;
        }
        for (int j = 0; j < H; j++) {
            REAL z = a[gs + j], n = a[2 * (size_t)gs + j];
            REAL dht = dyb[j] + d[j];
            g[gs + j] = dht * (h0[j] - n) * z * (1 - z);
            g[2 * (size_t)gs + j] = dht * (1 - z) * (1 - n * n);
            p[j] = dht * z;
        }
    }
}

KATTR void NAME(grb_bwd2)(int nb, int H, int gs, const int64_t *len, int t,
    const REAL *restrict A, const REAL *restrict hp, const REAL *restrict drh,
    REAL *restrict dg, REAL *restrict dhp)
{
    const size_t G = 3 * (size_t)gs;
    for (int b = 0; b < nb; b++) {
        if (!ACTIVE(b)) continue;
        const REAL *a = A + b * G, *h0 = hp + (size_t)b * H, *d = drh + (size_t)b * gs;
        REAL *g = dg + b * G, *p = dhp + (size_t)b * H;
        for (int j = 0; j < H; j++) {
            REAL rr = a[j];
            g[j] = d[j] * h0[j] * rr * (1 - rr);
            p[j] += d[j] * rr;
        }
    }
}

#ifndef PYRNN_VEC_CELLS
#define MGRU_CELL(PRE, KEEP)                                                    \
    for (int j = 0; j < H; j++) {                                               \
        REAL z = SIGM(PRE(0));                                                  \
        REAL n = TANH(PRE(gs));                                                 \
        h1[j] = n + z * (h0[j] - n);                                            \
        KEEP                                                                    \
    }
#define MGRU_KEEP az[j] = z; an[j] = n;

static inline void NAME(mgru_cell)(int H, int gs, const REAL *restrict x,
    const REAL *restrict bx, const REAL *restrict r, const REAL *restrict h0,
    REAL *restrict h1, REAL *restrict yb)
{
    if (r) { MGRU_CELL(PRE_R, ) }
    else { MGRU_CELL(PRE_X, ) }
    for (int j = 0; j < H; j++) yb[j] = h1[j];
}

static inline void NAME(mgru_cell_keep)(int H, int gs, const REAL *restrict x,
    const REAL *restrict bx, const REAL *restrict r, const REAL *restrict h0,
    REAL *restrict h1, REAL *restrict yb, REAL *restrict az, REAL *restrict an)
{
    if (r) { MGRU_CELL(PRE_R, MGRU_KEEP) }
    else { MGRU_CELL(PRE_X, MGRU_KEEP) }
    for (int j = 0; j < H; j++) yb[j] = h1[j];
}
#undef MGRU_CELL
#undef MGRU_KEEP
#endif

/* Minimal GRU: gates z n, both biases pre-summed. A = [z, n]. */
KATTR void NAME(mgru_fwd)(int nb, int H, int gs, const int64_t *len, int t,
    const REAL *restrict gx, const REAL *restrict bx, const REAL *restrict gh,
    const REAL *restrict hp, REAL *restrict hn, REAL *restrict y, int ldy,
    REAL *restrict A)
{
    const size_t G = 2 * (size_t)gs;
    for (int b = 0; b < nb; b++) {
        const REAL *x = gx + b * G, *r = gh ? gh + b * G : NULL, *h0 = hp + (size_t)b * H;
        REAL *h1 = hn + (size_t)b * H, *yb = y + (size_t)b * ldy;
        if (!ACTIVE(b)) {
            for (int j = 0; j < H; j++) { h1[j] = h0[j]; yb[j] = 0; }
            if (A) for (size_t g = 0; g < G; g += gs) for (int j = 0; j < H; j++) A[b * G + g + j] = 0;
            continue;
        }
        if (A) NAME(mgru_cell_keep)(H, gs, x, bx, r, h0, h1, yb, A + b * G, A + b * G + gs);
        else NAME(mgru_cell)(H, gs, x, bx, r, h0, h1, yb);
    }
}

KATTR void NAME(mgru_bwd)(int nb, int H, const int64_t *len, int t,
    const REAL *restrict A, const REAL *restrict hp, const REAL *restrict dy,
    int ldy, const REAL *restrict dh, REAL *restrict dg, REAL *restrict dhp)
{
    const size_t G = 2 * (size_t)H;
    for (int b = 0; b < nb; b++) {
        const REAL *a = A + b * G, *h0 = hp + (size_t)b * H;
        const REAL *dyb = dy + (size_t)b * ldy, *d = dh + (size_t)b * H;
        REAL *g = dg + b * G, *p = dhp + (size_t)b * H;
        if (!ACTIVE(b)) {
            for (size_t j = 0; j < G; j++) g[j] = 0;
            for (int j = 0; j < H; j++) p[j] = d[j];
            continue;
        }
        for (int j = 0; j < H; j++) {
            REAL z = a[j], n = a[H + j];
            REAL dht = dyb[j] + d[j];
            g[j] = dht * (h0[j] - n) * z * (1 - z);
            g[H + j] = dht * (1 - z) * (1 - n * n);
            p[j] = dht * z;
        }
    }
}

/* Elementwise activation, for tests of the approximations: 0 sigmoid, 1 tanh. */
#ifndef PYRNN_VEC_CELLS
KATTR void NAME(act)(int which, int64_t n, const REAL *restrict x, REAL *restrict y)
{
    if (which == 0) for (int64_t i = 0; i < n; i++) y[i] = SIGM(x[i]);
    else for (int64_t i = 0; i < n; i++) y[i] = TANH(x[i]);
}
#endif

#undef ACTIVE

#undef PRE_R
#undef PRE_X
