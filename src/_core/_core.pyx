# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Time-loop drivers: forward and backward of one layer direction over a whole
sequence. Python (pyrnn/layers.py) validates and allocates; this file only
computes, with the GIL released.

Per direction: ONE GEMM for the input projection of all T steps, then per step
ONE GEMM of h against all gates' recurrent weights and ONE fused gate kernel
(at batch >= 2 with narrow inputs, ONE product of [x_t | h] per step instead:
cat_begin).
Backward mirrors it; weight gradients are one GEMM over all steps after the
loop. The batch is split into row blocks, one per thread, each running the
whole time loop with single-threaded BLAS: no barrier per step, and the same
thread count always gives the same bits.
"""
import numpy as np
cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport prange
from libc.stddef cimport ptrdiff_t
from libc.stdint cimport int64_t, uint32_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset
from posix.mman cimport MAP_ANONYMOUS, MAP_FAILED, MAP_PRIVATE, PROT_READ, PROT_WRITE, mmap, munmap

from blas cimport gemm
from gates cimport *

cdef extern from "packed.h" nogil:
    size_t pyrnn_packed_size(int N, int K)
    void pyrnn_pack_f(int N, int K, const float *W, ptrdiff_t rs, ptrdiff_t ks, float *P)
    void pyrnn_pack_cat_f(int N, int K1, const float *W1, int ld1, int K2, const float *W2,
                          int ld2, float *P)
    void pyrnn_gemm_packed_f(int M, int N, int K, const float *A, int lda, const float *P, float *C, int ldc, int acc)
    double pyrnn_read_seconds(const float *p, size_t n, int reps, float *sink)
    void pyrnn_gemm_packed2_f(int M, int N, int K1, const float *A1, int lda1, int K2,
                              const float *A2, int lda2, const float *P, float *C, int ldc,
                              int acc)
    void pyrnn_gemm_packed_dir_f(int M, int N, int K, const float *A, int lda, const float *P,
                                 float *C, int ldc, int acc, int rev)
    void pyrnn_gemm_packed2_dir_f(int M, int N, int K1, const float *A1, int lda1, int K2,
                                  const float *A2, int lda2, const float *P, float *C, int ldc,
                                  int acc, int rev)

cdef extern from "gemm_tn.h" nogil:
    void pyrnn_gemm_tn_f(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                         float *C, int ldc)

cdef extern from "handoff.h" nogil:
    void pyrnn_handoff_left()
    void pyrnn_handoff_entered()
    void pyrnn_handoff_wait(long max_ns)

cdef extern from "pair.h" nogil:
    ctypedef void (*pyrnn_chunk_fn)(void *arg, int chunk) noexcept nogil
    int pyrnn_pair_acquire()
    void pyrnn_pair_release()
    int pyrnn_pair_enable(int on)
    void pyrnn_pair_run(pyrnn_chunk_fn fn, void *arg, int nchunks)
    unsigned long pyrnn_pair_helped()



cnp.import_array()

# Cell kinds; the gate count per kind is in GATES.
cdef enum:
    K_RNN_TANH = 0
    K_RNN_RELU = 1
    K_LSTM = 2
    K_GRU = 3
    K_GRU_RB = 4
    K_MGRU = 5
    # below this many multiply-adds a GEMM phase runs on one thread
    PAR_MIN_WORK = 200000
    # below this many recurrent multiply-adds per call the time loop runs on one thread
    SEQ_PAR_MIN_WORK = 1000000
    # batch-1 sequences of at least this many steps pack W_hh (see plan_pack)
    PACK_MIN_STEPS = 8
    # the packed kernel re-reads h (B x P floats) per weight panel; measured at
    # the sgemm peak up to 2 MB of h (B = 512, P = 1024), and 14-26% faster
    # than BLAS at B = 128 (which repacks all of W_hh every step). Past 8 MB of
    # h, BLAS and its cache blocking take over.
    PACKED_MAX_A = 2097152
    # packed copies of at least this many bytes, in training calls of at
    # least this many (step, sequence) rows, are mapped rather than malloc'ed
    # (big_alloc); in inference a mapping only cost page faults (1024 a call
    # at RNN 50:128:1024:1024)
    BIG_ALLOC_MIN = 1048576
    MAP_MIN_ROWS = 4096
    # weight-gradient products with at most this many output columns and
    # elements per thread use gemm_tn.h instead of BLAS (measured faster up
    # to there: 1.1-1.3x at 1024 x 256; at 1024 x 512 faster alone but not
    # with both cores busy; OpenBLAS from 2048 x 512)
    TN_MAX_N = 512
    TN_MAX_MN = 262144
    # batch-1 inference shares each step with the helper core (pair.h) when
    # W_hh is at least this big: below it the hand-offs cost more than they save
    PAIR1_MIN_BYTES = 131072
    # ... and each core's chunk writes its gate products into its own region of
    # GH, this many floats past the previous one's (in a two-thread harness of
    # the LSTM H = 128 step, the gate loop took 450 ns a chunk with both halves
    # in one buffer, 250 with one each); GH holds (B + 1) rows of G*H +
    # PAIR_GH_PAD floats
    PAIR_GH_PAD = 256
    # input projections (and dX) of at most this many (step, sequence) rows
    # pack W_ih themselves for the small-GEMM kernel: BLAS's own copy of W_ih
    # is most of its time there
    PROJ_PACKED_ROWS = 1024
    # ... and at any row count for inputs this narrow (200:16:64:64: 2-6% faster)
    PROJ_PACKED_NI = 64
    # a stream step of fewer multiply-adds than this keeps the GIL, as NumPy
    # does for small arrays. 4 batch-1 streams on 2 Python threads, steps per
    # second over 1 thread's (7 samples a side, clocked from a barrier once
    # the threads run), keeping it / releasing it: RNN H = 64 (8,192 MACs,
    # 0.7 us) 1.08 / 0.86, and 10% slower alone; GRU H = 64 (24,576, 1.65 us)
    # 0.95 / 1.63, 4% slower alone; RNN H = 128 (32,768, 1.9 us) 0.92-1.15 /
    # 1.28-1.64, as fast alone. Between 12,800 and 18,432 either way within
    # the noise. (The old 65,536 came from samples that timed thread start-up.)
    STREAM_NOGIL_MACS = 24576
    # a stream step that released the GIL spins at most this long for another
    # stepping thread to release it (handoff.h) before blocking in take_gil
    HANDOFF_SPIN_NS = 20000
    # columns of the bias-gradient sums per sweep (a stack buffer)
    BIAS_CHUNK = 512
    # at batch >= 2, inputs + state at most this wide: each step's product is
    # [x_t | h] @ [W_ih | W_hh]^T (cat_begin), no separate input projection
    CAT_MAX_K = 512
    # ... and its packed copy is made by both threads from this many floats
    CAT_PACK_PAR_MIN = 262144
GATES = (1, 1, 4, 3, 3, 2)
GH_PAD = PAIR_GH_PAD     # see PAIR_GH_PAD: layers.py sizes GH with it

cdef int proj_packed_rows = PROJ_PACKED_ROWS   # _set_proj_packed_rows (tests, A/B)
cdef int cat_max_k = CAT_MAX_K                 # _set_cat_max_k (tests, A/B)
cdef int zigzag = 1                            # _set_zigzag (tests, A/B)
# 1: the packed kernels do every float product (input projections, dX, weight
# gradients) at any size, BLAS none; set at import by pyrnn/_gemm.py where
# BLAS's kernels are narrower than this CPU's (see _set_all_packed)
cdef int all_packed = 0
cdef double stream_nogil_macs = STREAM_NOGIL_MACS   # _set_stream_nogil_macs
cdef long handoff_spin_ns = HANDOFF_SPIN_NS          # _set_handoff_spin_ns


cdef inline int step_rev(int step) noexcept nogil:
    """Whether step `step` takes the packed weights last to first: every other
    one, so that each step starts on what the previous one read last (packed.h)."""
    return step & zigzag



cdef struct Seq:
    int kind, T, B, Ni, H, P, G, reverse, ldy, train, proj, accumulate_dx
    const int64_t *len
    # float W_hh packed for the small-GEMM kernel (packed.h), or NULL
    float *Wpk
    size_t Wpk_bytes
    bint Wpk_mapped
    bint Wpk_t          # Wpk holds W_hh transposed (backward)
    # 1 while this call owns the helper core (pair.h)
    int pair
    # 1: Wpk holds [W_ih | W_hh] packed (GRU: sections at sec2, sec3) and each
    # step multiplies [x_t | h] into xg; see cat_begin
    int cat
    size_t sec2, sec3
    float *xg
    # parameters
    void *Wih
    void *Whh
    void *Whr
    void *bx
    void *bhn
    # forward data
    void *X
    void *h0
    void *c0
    void *Y
    void *hn
    void *cn
    # forward cache (train) or per-step workspace (inference)
    void *GX
    void *GH
    void *Hs
    void *Cs
    void *A
    void *X2
    void *M
    void *hbuf
    void *cbuf
    # backward
    void *dY
    void *dhn
    void *dcn
    void *dX
    void *dh0
    void *dc0
    void *dGX
    void *dGH      # GRU: the n block of the recurrent gate grads, dn*r (T*B, H);
                   # may be X2's buffer: step t writes its rows after reading X2's
    void *dgs      # GRU: one step's recurrent gate grads [dr, dz, dn*r] (B, G*H)
    void *dHT
    void *dWih
    void *dWhh
    void *dWhr
    void *dbih
    void *dbhh
    void *dhbuf
    void *dcbuf
    void *dmbuf


cdef inline void *ptr(object a):
    if a is None:
        return NULL
    return cnp.PyArray_DATA(<cnp.ndarray> a)


cdef inline int split(int n, int k, int parts) noexcept nogil:
    """Start of part k when n items are cut into `parts` near-equal runs."""
    return <int> ((<long long> n * k) // parts)


# ---------------------------------------------------------------- forward

cdef inline void *line_alloc(size_t n) noexcept nogil:
    """n bytes from malloc on a 64-byte line (release with line_free): the
    kernels' 64-byte loads of a panel then touch one line each, not two. Not
    posix_memalign: its blocks fragmented glibc's heap, which then grew by
    the packed copy's size in every training step (8-12 MiB at H = 512)."""
    cdef char *p = <char *> malloc(n + 64 + sizeof(void *))
    cdef char *a
    if p == NULL:
        return NULL
    # the first line that leaves room for p before it: at most 63 bytes past
    # p + sizeof(void *), whatever malloc's own alignment
    a = <char *> ((<size_t> p + sizeof(void *) + 63) & ~(<size_t> 63))
    (<void **> a)[-1] = p
    return a


cdef inline void line_free(void *a) noexcept nogil:
    if a != NULL:
        free((<void **> a)[-1])


cdef void *big_alloc(size_t n, bint mapped) noexcept nogil:
    """Memory for a per-call packed copy of the weights. `mapped`: straight
    from the system, so that freeing it gives it back at once. From malloc's
    heap (glibc raises its mmap threshold after the first big free) a copy
    stayed resident after the call and added to the peak memory of the later,
    larger phases of a training step; but a mapping faults its pages in again
    on every call, so it is only worth it for training calls with many rows."""
    cdef void *p
    if not mapped:
        return line_alloc(n)
    p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    return NULL if p == MAP_FAILED else p


cdef inline bint map_copy(Seq *s, size_t nbytes) noexcept nogil:
    """Whether this call's packed copy of nbytes is mapped (big_alloc): big
    copies in training calls of many rows, where the page faults of a fresh
    mapping cost under 1% of the call."""
    return nbytes >= BIG_ALLOC_MIN and s.T * s.B >= MAP_MIN_ROWS and s.train


cdef void big_free(void *p, size_t n, bint mapped) noexcept nogil:
    if p == NULL:
        return
    if mapped:
        munmap(p, n)
    else:
        line_free(p)


cdef inline int panel_row(int N, int k, int n) noexcept nogil:
    """First of the N rows in part k of n when they are split in whole 16-row
    panels (N for k == n)."""
    return min(N, 16 * split((N + 15) // 16, k, n))


cdef void pack_section(int N, int K, const float *W, ptrdiff_t rs, ptrdiff_t ks, float *dst,
                       int k, int n) noexcept nogil:
    """Part k of n (whole 16-row panels) of pyrnn_pack_f(N, K, W, rs, ks, dst)."""
    cdef int r0 = panel_row(N, k, n), r1 = panel_row(N, k + 1, n)
    if r1 > r0:
        pyrnn_pack_f(r1 - r0, K, W + r0 * rs, rs, ks, dst + <size_t> r0 * K)


cdef void pack_part(Seq *s, int k, int n) noexcept nogil:
    """Part k of n of the packing of s.Wpk. GRU-RB: its r,z rows and its n
    rows (which multiply r*h, a product of their own) as two matrices, the n
    one at s.sec3; backward, their transposes."""
    cdef int GH = s.G * s.H, H = s.H
    cdef const float *W = <float *> s.Whh
    if s.kind == K_GRU_RB:
        if s.Wpk_t:
            pack_section(H, 2 * H, W, 1, H, s.Wpk, k, n)
            pack_section(H, H, W + <size_t> 2 * H * H, 1, H, s.Wpk + s.sec3, k, n)
        else:
            pack_section(2 * H, H, W, H, 1, s.Wpk, k, n)
            pack_section(H, H, W + <size_t> 2 * H * H, H, 1, s.Wpk + s.sec3, k, n)
    elif s.Wpk_t:
        pack_section(s.P, GH, W, 1, s.P, s.Wpk, k, n)
    else:
        pack_section(GH, s.P, W, s.P, 1, s.Wpk, k, n)


cdef void pack_chunk(void *arg, int chunk) noexcept nogil:
    pack_part(<Seq *> arg, chunk, 2)


cdef void plan_pack(Seq *s, bint transposed) noexcept nogil:
    """Plan the packed copy of W_hh (or of its transpose, for backward) for the
    small-GEMM kernel: float with AVX2, long enough sequences, h small enough.
    Sets s.Wpk_bytes (0: BLAS does the products); pack_fill makes the copy."""
    cdef int GH = s.G * s.H
    cdef int N = s.P if transposed else GH
    cdef int K = GH if transposed else s.P
    s.Wpk = NULL
    s.Wpk_bytes = 0
    s.pair = 0
    # Batch 1 multiplies by W_hh with BLAS's gemv, which reads it in place: the
    # copy pays from PACK_MIN_STEPS steps. From batch 2 BLAS's gemm copies W_hh
    # itself at every step (LSTM 7:8:512:512 took twice as long as 8:8:512:512).
    if ((s.B == 1 and s.T < PACK_MIN_STEPS) or not pyrnn_simd_active()
            or <size_t> s.B * K > PACKED_MAX_A):
        return
    if s.kind == K_GRU_RB:
        s.sec3 = pyrnn_packed_size(s.H, 2 * s.H) if transposed else pyrnn_packed_size(2 * s.H, s.H)
        s.Wpk_bytes = (s.sec3 + pyrnn_packed_size(s.H, s.H)) * sizeof(float)
    else:
        s.Wpk_bytes = pyrnn_packed_size(N, K) * sizeof(float)
    s.Wpk_mapped = map_copy(s, s.Wpk_bytes)
    s.Wpk_t = transposed


cdef void pack_fill(Seq *s) noexcept nogil:
    """Allocate and fill the copy plan_pack planned: halves on the two cores when
    this call owns the helper. Out of memory: BLAS does the products, and the
    helper is let go (its steps need the copy)."""
    if s.Wpk_bytes == 0:
        return
    s.Wpk = <float *> big_alloc(s.Wpk_bytes, s.Wpk_mapped)
    if s.Wpk == NULL:
        s.Wpk_bytes = 0
        if s.pair:
            pyrnn_pair_release()
            s.pair = 0
        return
    if s.pair:
        pyrnn_pair_run(pack_chunk, s, 2)
    else:
        pack_part(s, 0, 1)


cdef inline bint proj_packed(Seq *s, int rows) noexcept nogil:
    """Whether this call's input projection and dX use packed_product; decided
    on the whole call, so every split takes the same kernel. Not for one row:
    BLAS's gemv reads W_ih in place, where the copy cost more than the product
    (LSTM 1:1:512:512: 232 against 346 us a call)."""
    return proj_packed_rows > 0 and (all_packed or (rows >= 2 and (
        rows <= proj_packed_rows or s.Ni <= PROJ_PACKED_NI)))


cdef bint packed_product(int m, int n, int k, const float *A, int lda, const float *W,
                         ptrdiff_t rs, ptrdiff_t ks, float *C, int ldc, int acc) noexcept nogil:
    """C (m, n) = A (m, k) @ V^T (acc: C +=), V[r, j] = W[r rs + j ks], with V
    packed here for the small-GEMM kernel; False (nothing done) when the
    packed copy cannot be allocated or SIMD is off."""
    cdef float *Pk
    if m <= 0 or n <= 0 or k <= 0 or not pyrnn_simd_active():
        return False
    Pk = <float *> line_alloc(pyrnn_packed_size(n, k) * sizeof(float))
    if Pk == NULL:
        return False
    pyrnn_pack_f(n, k, W, rs, ks, Pk)
    pyrnn_gemm_packed_f(m, n, k, A, lda, Pk, C, ldc, acc)
    line_free(Pk)
    return True


cdef inline void rec_gemm(Seq *s, int nb, const floating *hp, floating *gh, int rev) noexcept nogil:
    """gh (nb, G*H) = hp (nb, P) @ W_hh^T: the packed kernel when prepared
    (rev: its panels last to first, alternated by step; see packed.h)."""
    cdef int GH = s.G * s.H
    if floating is float:
        if s.Wpk != NULL:
            pyrnn_gemm_packed_dir_f(nb, GH, s.P, hp, s.P, s.Wpk, gh, GH, 0, rev)
            return
    gemm(False, True, nb, GH, s.P, <floating> 1, hp, s.P, <floating *> s.Whh, s.P,
         <floating> 0, gh, GH)


# chunks per batch-1 step shared by the two cores (about; whole 16-unit panels)
cdef enum:
    PAIR_CHUNKS = 2


cdef inline int chunk_units(int H) noexcept nogil:
    """Units per chunk shared between the two cores: whole 16-unit panels,
    about PAIR_CHUNKS chunks (each claim moves a cache line between cores)."""
    cdef int panels = H // 16
    return 16 * ((panels + PAIR_CHUNKS - 1) // PAIR_CHUNKS)


cdef struct Pair1:
    Seq *s
    int t, cw
    int rev        # this step's weights last to first (step parity, packed.h)
    const float *hp
    const float *cp
    float *hd
    float *cd
    float *At      # training: this step's gate cache (A) and X2, else NULL
    float *X2t


cdef void pair1_chunk(void *arg, int chunk) noexcept nogil:
    """Units [cw chunk, cw chunk + cw) of one batch-1 step: their columns of
    every gate's product, then their gates."""
    cdef Pair1 *q = <Pair1 *> arg
    cdef Seq *s = q.s
    cdef int H = s.H, GH = s.G * s.H, u0 = q.cw * chunk, g, gi, kind = s.kind
    cdef int n = min(q.cw, H - u0)
    cdef const float *gx = <float *> s.GX + <size_t> q.t * GH + u0
    cdef const float *bx = <float *> s.bx + u0
    cdef float *gh = <float *> s.GH + chunk * (GH + PAIR_GH_PAD) + u0
    cdef float *y = <float *> s.Y + <size_t> q.t * s.ldy + u0
    cdef float *At = q.At + u0 if q.At != NULL else NULL
    cdef float *X2t = q.X2t + u0 if q.X2t != NULL else NULL
    for gi in range(s.G):
        g = s.G - 1 - gi if q.rev else gi
        pyrnn_gemm_packed_dir_f(1, n, H, q.hp, H, s.Wpk + <size_t> (g * H + u0) * H,
                                gh + g * H, GH, 0, q.rev)
    if kind == K_RNN_TANH or kind == K_RNN_RELU:
        rnn_fwd(kind == K_RNN_RELU, 1, n, s.len, q.t, gx, bx, gh, q.hp + u0, q.hd + u0,
                y, s.ldy, At)
    elif kind == K_LSTM:
        lstm_fwd(1, n, H, s.len, q.t, gx, bx, gh, q.cp + u0, q.cd + u0, q.hp + u0,
                 q.hd + u0, y, s.ldy, At, X2t)
    elif kind == K_GRU:
        gru_fwd(1, n, H, s.len, q.t, gx, bx, gh, 1, <float *> s.bhn + u0, q.hp + u0,
                q.hd + u0, y, s.ldy, At, X2t)
    else:
        mgru_fwd(1, n, H, s.len, q.t, gx, bx, gh, q.hp + u0, q.hd + u0, y, s.ldy, At)


cdef void grb_pair1_chunk(void *arg, int chunk) noexcept nogil:
    """GRU-RB batch-1 step, first half, units [cw chunk, cw chunk + cw): their
    r and z columns, r, z and r*h (all of r*h is needed before the second)."""
    cdef Pair1 *q = <Pair1 *> arg
    cdef Seq *s = q.s
    cdef int H = s.H, u0 = q.cw * chunk, g, gi
    cdef int n = min(q.cw, H - u0)
    cdef float *gh = <float *> s.GH + chunk * (3 * H + PAIR_GH_PAD) + u0
    for gi in range(2):
        g = 1 - gi if q.rev else gi
        pyrnn_gemm_packed_dir_f(1, n, H, q.hp, H, s.Wpk + <size_t> (g * H + u0) * H,
                                gh + g * H, 2 * H, 0, q.rev)
    grb_fwd1_f(1, n, H, s.len, q.t, <float *> s.GX + <size_t> q.t * 3 * H + u0,
               <float *> s.bx + u0, gh, q.hp + u0, q.At + u0, q.X2t + u0)


cdef void grb_pair2_chunk(void *arg, int chunk) noexcept nogil:
    """GRU-RB batch-1 step, second half: those units' (r*h) @ W_hn^T, n, h'."""
    cdef Pair1 *q = <Pair1 *> arg
    cdef Seq *s = q.s
    cdef int H = s.H, u0 = q.cw * chunk
    cdef int n = min(q.cw, H - u0)
    cdef float *ghn = <float *> s.GH + chunk * (3 * H + PAIR_GH_PAD) + 2 * H + u0
    pyrnn_gemm_packed_dir_f(1, n, H, q.X2t, H, s.Wpk + s.sec3 + <size_t> u0 * H, ghn, H, 0,
                            q.rev)
    grb_fwd2_f(1, n, H, s.len, q.t, <float *> s.GX + <size_t> q.t * 3 * H + u0,
               <float *> s.bx + u0, ghn, q.hp + u0, q.At + u0, q.hd + u0,
               <float *> s.Y + <size_t> q.t * s.ldy + u0, s.ldy)


cdef bint pair1_applies(Seq *s, int nt) noexcept nogil:
    """Whether this call's batch-1 steps may be shared with the helper core:
    W_hh to be packed (float, AVX2, T >= PACK_MIN_STEPS), whole 16-unit panels, enough weights
    (twice as much for GRU-RB, whose steps are two hand-offs each: at H = 128,
    196 KB, 0.317 ms shared against 0.305 alone over 100 steps; at H = 192
    0.509 against 0.648)."""
    return (s.Wpk_bytes > 0 and nt >= 2 and s.B == 1 and not s.proj and s.P % 16 == 0
            and <size_t> s.G * s.H * s.P * sizeof(float)
            >= PAIR1_MIN_BYTES * (2 if s.kind == K_GRU_RB else 1))


cdef inline void gru_n_products(int kind, int B, int I, int H, const float *W, size_t sec2,
                                size_t sec3, const float *x, int ldx, const float *h, int ldh,
                                float *gx, float *gh, int u0, int n, int rev) noexcept nogil:
    """The n gate's products of units [u0, u0 + n) on the [x | h] path: x W_in^T
    into gx (both GRUs), h W_hn^T into gh (GRU: r multiplies only that); in
    the opposite order when rev."""
    if kind == K_GRU and rev:
        pyrnn_gemm_packed_dir_f(B, n, H, h, ldh, W + sec3 + <size_t> u0 * H, gh + 2 * H + u0,
                                3 * H, 0, 1)
    pyrnn_gemm_packed_dir_f(B, n, I, x, ldx, W + sec2 + <size_t> u0 * I, gx + 2 * H + u0,
                            3 * H, 0, rev)
    if kind == K_GRU and not rev:
        pyrnn_gemm_packed_dir_f(B, n, H, h, ldh, W + sec3 + <size_t> u0 * H, gh + 2 * H + u0,
                                3 * H, 0, 0)


cdef void cat_gemm(int kind, int B, int I, int P, int H, int G, const float *W, size_t sec2,
                   size_t sec3, const float *x, int ldx, const float *h, int ldh, float *gx,
                   float *gh, int u0, int u1, int rev) noexcept nogil:
    """Gate pre-activations of units [u0, u1) of B rows from [x | h] (rows of
    x and h, strides ldx and ldh) in one pass over the packed [W_ih | W_hh]
    (W): all columns at once, or gate by gate for a slice. GRU: r, z from
    [x | h] into gx, the n gate's x part into gx and its h part into gh (r
    multiplies only that); GRU-RB the same without that h part (r*h is not
    known yet). rev: every pass and the passes' order last to first."""
    cdef int K = I + P, GH = G * H, g, gi, n = u1 - u0
    cdef bint gru = kind == K_GRU or kind == K_GRU_RB
    if gru and rev:
        gru_n_products(kind, B, I, H, W, sec2, sec3, x, ldx, h, ldh, gx, gh, u0, n, 1)
    if gru:
        G = 2       # r and z from [x | h]; n before or after
    if u0 == 0 and u1 == H:
        pyrnn_gemm_packed2_dir_f(B, G * H, I, x, ldx, P, h, ldh, W, gx, GH, 0, rev)
    else:
        for gi in range(G):
            g = G - 1 - gi if rev else gi
            pyrnn_gemm_packed2_dir_f(B, n, I, x, ldx, P, h, ldh, W + <size_t> (g * H + u0) * K,
                                     gx + g * H + u0, GH, 0, rev)
    if gru and not rev:
        gru_n_products(kind, B, I, H, W, sec2, sec3, x, ldx, h, ldh, gx, gh, u0, n, 0)


cdef bint cat_applies(Seq *s) noexcept nogil:
    """Whether each step multiplies [x_t | h] by the packed [W_ih | W_hh]
    instead of a separate input projection of all steps: float with AVX2
    (plan_pack planned a copy), batch >= 2, inputs + state narrow enough
    (CAT_MAX_K). Decided on the shape alone: any thread count, same bits."""
    return (s.Wpk_bytes > 0 and s.B >= 2 and not s.proj and s.Ni + s.P <= cat_max_k
            and <size_t> s.B * (s.Ni + s.P) <= PACKED_MAX_A)


cdef void cat_pack_part(Seq *s, int k, int n) noexcept nogil:
    """Part k of n (whole 16-row panels) of the packed [W_ih | W_hh]."""
    cdef int H = s.H, I = s.Ni, P = s.P, GH = s.G * s.H, K = s.Ni + s.P
    cdef const float *Wih = <float *> s.Wih
    cdef const float *Whh = <float *> s.Whh
    cdef int N = 2 * H if s.kind == K_GRU or s.kind == K_GRU_RB else GH
    cdef int r0 = panel_row(N, k, n), r1 = panel_row(N, k + 1, n)
    if r1 > r0:
        pyrnn_pack_cat_f(r1 - r0, I, Wih + <size_t> r0 * I, I, P, Whh + <size_t> r0 * P, P,
                         s.Wpk + <size_t> r0 * K)
    if s.kind == K_GRU or s.kind == K_GRU_RB:
        pack_section(H, I, Wih + <size_t> 2 * H * I, I, 1, s.Wpk + s.sec2, k, n)
        pack_section(H, H, Whh + <size_t> 2 * H * H, H, 1, s.Wpk + s.sec3, k, n)


cdef void cat_begin(Seq *s, int nt) noexcept nogil:
    """Pack [W_ih | W_hh] into s.Wpk and take the per-step buffer xg (the
    products of [x_t | h]), then s.cat = 1; out of memory, nothing changes
    (the separate projection and plan_pack's copy are used)."""
    cdef int H = s.H, I = s.Ni, GH = s.G * s.H, K = s.Ni + s.P, k
    cdef size_t n
    if s.kind == K_GRU or s.kind == K_GRU_RB:
        s.sec2 = pyrnn_packed_size(2 * H, K)
        s.sec3 = s.sec2 + pyrnn_packed_size(H, I)
        n = s.sec3 + pyrnn_packed_size(H, H)
    else:
        s.sec2 = s.sec3 = 0
        n = pyrnn_packed_size(GH, K)
    s.xg = <float *> line_alloc(<size_t> s.B * GH * sizeof(float))
    if s.xg == NULL:
        return
    cdef bint mapped = map_copy(s, n * sizeof(float))
    s.Wpk = <float *> big_alloc(n * sizeof(float), mapped)
    if s.Wpk == NULL:
        line_free(s.xg)
        s.xg = NULL
        return
    s.Wpk_bytes, s.Wpk_mapped = n * sizeof(float), mapped
    if nt >= 2 and n >= CAT_PACK_PAR_MIN:
        # both cores pack (2 MB: 0.23 ms alone), the other would only wait
        for k in prange(2, schedule='static', num_threads=2):
            cat_pack_part(s, k, 2)
    else:
        cat_pack_part(s, 0, 1)
    # GRU-RB's first gate step adds gh's r and z parts to xg's products: zeros
    # (GRU's reads only its W_hn h part, the others' take none)
    if s.kind == K_GRU_RB:
        memset(s.GH, 0, <size_t> s.B * GH * sizeof(float))
    s.cat = 1


cdef inline void cat_rows(Seq *s, int t, int b0, int nb, const float *hp, int rev) noexcept nogil:
    """Step t's gate products for batch rows [b0, b0 + nb) from [x_t | h]."""
    cdef int GH = s.G * s.H
    cat_gemm(s.kind, nb, s.Ni, s.P, s.H, s.G, s.Wpk, s.sec2, s.sec3,
             <float *> s.X + (<size_t> t * s.B + b0) * s.Ni, s.Ni, hp, s.P,
             s.xg + <size_t> b0 * GH, <float *> s.GH + <size_t> b0 * GH, 0, s.H, rev)


cdef inline void grb_fwd_products(Seq *s, int nb, const int64_t *ln, int t, const floating *gx,
                                  floating *gh, floating *ghn, const floating *hp,
                                  floating *At, floating *X2t, int rev) noexcept nogil:
    """GRU-RB's step up to its n gate: the r,z products (unless [x | h] made
    them, s.cat), r and z, r*h into X2t, then ghn = (r*h) @ W_hn^T."""
    cdef int H = s.H
    cdef const floating *Whh = <floating *> s.Whh
    if floating is float:
        if s.Wpk != NULL:
            if not s.cat:
                pyrnn_gemm_packed_dir_f(nb, 2 * H, H, hp, H, s.Wpk, gh, 2 * H, 0, rev)
            grb_fwd1(nb, H, H, ln, t, gx, <floating *> s.bx, gh, hp, At, X2t)
            pyrnn_gemm_packed_dir_f(nb, H, H, X2t, H, s.Wpk + s.sec3, ghn, H, 0, rev)
            return
    gemm(False, True, nb, 2 * H, H, <floating> 1, hp, H, Whh, H, <floating> 0, gh, 2 * H)
    grb_fwd1(nb, H, H, ln, t, gx, <floating *> s.bx, gh, hp, At, X2t)
    gemm(False, True, nb, H, H, <floating> 1, X2t, H, Whh + <size_t> 2 * H * H, H,
         <floating> 0, ghn, H)


cdef void fwd_rows(Seq *s, floating *tag, int b0, int nb) noexcept nogil:
    """The whole time loop for batch rows [b0, b0 + nb)."""
    cdef int T = s.T, B = s.B, H = s.H, P = s.P, GH = s.G * s.H, ldy = s.ldy
    cdef int step, t, tn, kind = s.kind
    cdef const int64_t *ln = s.len + b0 if s.len != NULL else NULL
    cdef const floating *Whh = <floating *> s.Whh
    cdef const floating *Whr = <floating *> s.Whr
    cdef const floating *bx = <floating *> s.bx
    cdef const floating *bhn = <floating *> s.bhn
    cdef floating *GX = <floating *> s.GX
    # GRU-RB keeps its r,z block (stride 2H) and its n block apart in GH
    cdef floating *gh = <floating *> s.GH + <size_t> b0 * (2 * H if s.kind == K_GRU_RB else GH)
    cdef floating *ghn = <floating *> s.GH + <size_t> B * 2 * H + <size_t> b0 * H
    cdef floating *Y = <floating *> s.Y
    cdef floating *Hs = <floating *> s.Hs
    cdef floating *Cs = <floating *> s.Cs
    cdef floating *A = <floating *> s.A
    cdef floating *X2 = <floating *> s.X2
    cdef floating *M = <floating *> s.M
    cdef floating *hbuf = <floating *> s.hbuf
    cdef floating *cbuf = <floating *> s.cbuf
    cdef const floating *hp
    cdef const floating *cp
    cdef floating *hd
    cdef floating *cd
    cdef floating *gx
    cdef floating *y
    cdef floating *At
    cdef floating *X2t
    cdef floating *Mt
    # the recurrent part the gates add, or NULL where the [x_t | h] product
    # already holds it (all but GRU's W_hn h)
    cdef floating *ghr = gh
    cdef size_t row, row_n
    cdef int GA = H if kind <= K_RNN_RELU else GH
    cdef int lstm = kind == K_LSTM
    cdef Pair1 q
    q.s, q.cw = s, chunk_units(H)

    if nb <= 0 or T <= 0:
        return
    if s.cat and kind != K_GRU:
        ghr = NULL
    if s.train:
        # Hs[t] holds the state before step t; seed the first step with h0.
        t = T - 1 if s.reverse else 0
        memcpy(Hs + (<size_t> t * B + b0) * P, <floating *> s.h0 + <size_t> b0 * P,
               <size_t> nb * P * sizeof(floating))
        if lstm:
            memcpy(Cs + (<size_t> t * B + b0) * H, <floating *> s.c0 + <size_t> b0 * H,
                   <size_t> nb * H * sizeof(floating))

    for step in range(T):
        t = T - 1 - step if s.reverse else step
        row = <size_t> t * B + b0
        gx = GX + row * GH
        y = Y + row * ldy
        # where the previous state is read and the new one written
        if s.train:
            hp = Hs + row * P
            cp = Cs + row * H if lstm else NULL
            At = A + row * GA
            if kind <= K_RNN_RELU:
                # RNN: h' of every step but the last is kept in Hs already
                At = A + <size_t> b0 * H if step == T - 1 else NULL
            X2t = X2 + row * H if X2 != NULL else NULL
            Mt = M + row * H if M != NULL else NULL
        else:
            if step == 0:
                hp = <floating *> s.h0 + <size_t> b0 * P
                cp = <floating *> s.c0 + <size_t> b0 * H if lstm else NULL
            else:
                hp = hbuf + <size_t> ((step - 1) % 2) * B * P + <size_t> b0 * P
                cp = cbuf + <size_t> ((step - 1) % 2) * B * H + <size_t> b0 * H if lstm else NULL
            At = A + <size_t> b0 * GA if A != NULL else NULL
            X2t = X2 + <size_t> b0 * H if X2 != NULL else NULL
            Mt = M + <size_t> b0 * H if M != NULL else NULL
        if step == T - 1:
            hd = <floating *> s.hn + <size_t> b0 * P
            cd = <floating *> s.cn + <size_t> b0 * H if lstm else NULL
        elif s.train:
            tn = t - 1 if s.reverse else t + 1
            row_n = <size_t> tn * B + b0
            hd = Hs + row_n * P
            cd = Cs + row_n * H if lstm else NULL
        else:
            hd = hbuf + <size_t> (step % 2) * B * P + <size_t> b0 * P
            cd = cbuf + <size_t> (step % 2) * B * H + <size_t> b0 * H if lstm else NULL

        if floating is float:
            if s.pair:
                # batch 1: this step's units shared with the helper core
                q.t, q.hp, q.cp, q.hd, q.cd, q.At, q.X2t = t, hp, cp, hd, cd, At, X2t
                q.rev = step_rev(step)
                if kind == K_GRU_RB:
                    pyrnn_pair_run(grb_pair1_chunk, &q, (H + q.cw - 1) // q.cw)
                    pyrnn_pair_run(grb_pair2_chunk, &q, (H + q.cw - 1) // q.cw)
                else:
                    pyrnn_pair_run(pair1_chunk, &q, (H + q.cw - 1) // q.cw)
                continue
            if s.cat:
                cat_rows(s, t, b0, nb, hp, step_rev(step))
                gx = <floating *> s.xg + <size_t> b0 * GH
        if kind != K_GRU_RB and not s.cat:
            rec_gemm(s, nb, hp, gh, step_rev(step))
        if kind == K_RNN_TANH or kind == K_RNN_RELU:
            rnn_fwd(kind == K_RNN_RELU, nb, H, ln, t, gx, bx, ghr, hp, hd, y, ldy, At)
        elif kind == K_LSTM:
            if s.proj:
                lstm_fwd(nb, H, H, ln, t, gx, bx, ghr, cp, cd, <floating *> NULL, Mt,
                         <floating *> NULL, 0, At, X2t)
                gemm(False, True, nb, P, H, <floating> 1, Mt, H, Whr, H, <floating> 0, hd, P)
                proj_finish(nb, P, ln, t, hp, hd, y, ldy)
            else:
                lstm_fwd(nb, H, H, ln, t, gx, bx, ghr, cp, cd, hp, hd, y, ldy, At, X2t)
        elif kind == K_GRU:
            # [x_t | h] (s.cat) put r's and z's recurrent parts in gx
            gru_fwd(nb, H, H, ln, t, gx, bx, gh, not s.cat, bhn, hp, hd, y, ldy, At, X2t)
        elif kind == K_GRU_RB:
            grb_fwd_products(s, nb, ln, t, gx, gh, ghn, hp, At, X2t, step_rev(step))
            grb_fwd2(nb, H, H, ln, t, gx, bx, ghn, hp, At, hd, y, ldy)
        else:
            mgru_fwd(nb, H, H, ln, t, gx, bx, ghr, hp, hd, y, ldy, At)


cdef void proj_block(Seq *s, floating *tag, int r0, int r1, int c0, int c1) noexcept nogil:
    """GX[r0:r1, c0:c1] = X[r0:r1] @ W_ih[c0:c1]^T."""
    cdef int GH = s.G * s.H
    if floating is float:
        if proj_packed(s, s.T * s.B) and packed_product(
                r1 - r0, c1 - c0, s.Ni, <float *> s.X + <size_t> r0 * s.Ni, s.Ni,
                <float *> s.Wih + <size_t> c0 * s.Ni, s.Ni, 1,
                <float *> s.GX + <size_t> r0 * GH + c0, GH, 0):
            return
    gemm(False, True, r1 - r0, c1 - c0, s.Ni, <floating> 1,
         <floating *> s.X + <size_t> r0 * s.Ni, s.Ni, <floating *> s.Wih + <size_t> c0 * s.Ni,
         s.Ni, <floating> 0, <floating *> s.GX + <size_t> r0 * GH + c0, GH)


cdef void input_proj_part(Seq *s, floating *tag, int k, int n) noexcept nogil:
    """Part k of n of GX = X @ W_ih^T over the (T*B, Ni) input. Batch-1 steps
    shared with the helper: part k is chunk k's units of every gate, so each
    core's steps read the GX it wrote. Few rows: split the gate columns, so each
    thread packs only its share of W_ih (a row split would have every thread
    pack all of it); else split the rows."""
    cdef int H = s.H, GH = s.G * s.H, rows = s.T * s.B, cw, g
    if s.pair and n == 2:
        cw = chunk_units(H)
        for g in range(s.G):
            proj_block(s, tag, 0, rows, g * H + min(k * cw, H), g * H + min(k * cw + cw, H))
    elif rows < GH:
        proj_block(s, tag, 0, rows, split(GH, k, n), split(GH, k + 1, n))
    else:
        proj_block(s, tag, split(rows, k, n), split(rows, k + 1, n), 0, GH)


cdef void proj_chunk(void *arg, int chunk) noexcept nogil:
    input_proj_part(<Seq *> arg, <float *> NULL, chunk, 2)


cdef enum:
    JOB_PROJ = 0    # input_proj_part
    JOB_WGRAD = 1   # wgrad_part


cdef inline void job_part(Seq *s, floating *tag, int job, int k, int n) noexcept nogil:
    if job == JOB_PROJ:
        input_proj_part(s, tag, k, n)
    else:
        wgrad_part(s, tag, k, n)


cdef void run_parts(Seq *s, floating *tag, int job, int n, bint paired) noexcept nogil:
    """Parts 0..n-1 of a whole-sequence job: here when n <= 1; on this core
    and the helper when the call holds the pair. A paired call always makes two
    parts, whether or not the helper was free (the same bits either way), and
    with the helper busy makes both here rather than start an OpenMP team, whose
    worker would spin on the helper's core after the region."""
    cdef int k
    if paired:
        n = min(n, 2)
    if n <= 1:
        job_part(s, tag, job, 0, 1)
    elif s.pair:
        pyrnn_pair_run(proj_chunk if job == JOB_PROJ else wgrad_chunk, s, 2)
    elif paired:
        job_part(s, tag, job, 0, 2)
        job_part(s, tag, job, 1, 2)
    else:
        for k in prange(n, schedule='static', num_threads=n):
            job_part(s, tag, job, k, n)


cdef inline int row_threads(Seq *s, int nt) noexcept nogil:
    """Threads for the time loop: one block of batch rows each, and only when
    the call has enough recurrent work to pay for them."""
    if <double> s.T * s.B * s.G * s.H * s.P < SEQ_PAR_MIN_WORK:
        return 1
    return min(nt, s.B)


cdef void run_forward(Seq *s, floating *tag, int nt) noexcept nogil:
    cdef int rows = s.T * s.B, k, n
    cdef bint paired = False
    if floating is float:
        plan_pack(s, False)
        if cat_applies(s):
            cat_begin(s, nt)
        paired = pair1_applies(s, nt)
        if paired:
            s.pair = pyrnn_pair_acquire()
    if not s.cat:   # (cat: each step makes its own input products)
        n = nt if <double> rows * s.Ni * s.G * s.H >= PAR_MIN_WORK else 1
        run_parts(s, tag, JOB_PROJ, min(n, rows), paired)
    if floating is float:
        # after the projection, so that its own packed W_ih is freed first
        # (both alive at once grew malloc's heap again in the second call)
        if not s.cat:
            pack_fill(s)
    n = row_threads(s, nt)
    if n <= 1:
        fwd_rows(s, tag, 0, s.B)
    else:
        for k in prange(n, schedule='static', num_threads=n):
            fwd_rows(s, tag, split(s.B, k, n), split(s.B, k + 1, n) - split(s.B, k, n))
    big_free(s.Wpk, s.Wpk_bytes, s.Wpk_mapped)
    s.Wpk = NULL
    if s.cat:
        line_free(s.xg)
        s.xg = NULL
        s.cat = 0
    if s.pair:
        pyrnn_pair_release()
        s.pair = 0


# ---------------------------------------------------------------- backward

cdef struct PairT:
    Seq *s
    const float *dg
    float *dhx
    int cw
    int t           # GRU-RB: the step, its gates, h_prev and d(r*h)
    int rev         # this step's weights last to first (packed.h)
    const float *At
    const float *hp
    float *dm


cdef void bwd_chunk(void *arg, int chunk) noexcept nogil:
    """Columns [cw chunk, cw chunk + cw) of dhx += dg @ W_hh at batch 1."""
    cdef PairT *q = <PairT *> arg
    cdef Seq *s = q.s
    cdef int GH = s.G * s.H, c0 = q.cw * chunk
    pyrnn_gemm_packed_dir_f(1, min(q.cw, s.P - c0), GH, q.dg, GH, s.Wpk + <size_t> c0 * GH,
                            q.dhx + c0, s.P, 1, q.rev)


cdef void grb_bwd_chunk1(void *arg, int chunk) noexcept nogil:
    """GRU-RB batch-1 backward step, first half, units [cw chunk, ...): their
    d(r*h) = dn_pre @ W_hn, then dr and their part of dhx."""
    cdef PairT *q = <PairT *> arg
    cdef Seq *s = q.s
    cdef int H = s.H, c0 = q.cw * chunk
    cdef int n = min(q.cw, H - c0)
    pyrnn_gemm_packed_dir_f(1, n, H, q.dg + 2 * H, 3 * H, s.Wpk + s.sec3 + <size_t> c0 * H,
                            q.dm + c0, H, 0, q.rev)
    grb_bwd2_f(1, n, H, s.len, q.t, q.At + c0, q.hp + c0, q.dm + c0, <float *> q.dg + c0,
               q.dhx + c0)


cdef void grb_bwd_chunk2(void *arg, int chunk) noexcept nogil:
    """Second half: those columns of dhx += [dr, dz]_pre @ W_hr,z."""
    cdef PairT *q = <PairT *> arg
    cdef Seq *s = q.s
    cdef int H = s.H, c0 = q.cw * chunk
    pyrnn_gemm_packed_dir_f(1, min(q.cw, H - c0), 2 * H, q.dg, 3 * H,
                            s.Wpk + <size_t> c0 * 2 * H, q.dhx + c0, H, 1, q.rev)


cdef void wgrad_chunk(void *arg, int k) noexcept nogil:
    wgrad_part(<Seq *> arg, <float *> NULL, k, 2)


cdef inline void rec_gemm_t(Seq *s, int nb, const floating *dg, floating *dhx,
                            int rev) noexcept nogil:
    """dhx (nb, P) += dg (nb, G*H) @ W_hh: the packed kernel when prepared,
    at batch 1 shared with the helper core when this call owns it."""
    cdef int GH = s.G * s.H
    cdef PairT q
    if floating is float:
        if s.Wpk != NULL:
            if s.pair and nb == 1:
                q.s, q.dg, q.dhx, q.cw, q.rev = s, dg, dhx, chunk_units(s.P), rev
                pyrnn_pair_run(bwd_chunk, &q, (s.P + q.cw - 1) // q.cw)
                return
            pyrnn_gemm_packed_dir_f(nb, s.P, GH, dg, GH, s.Wpk, dhx, s.P, 1, rev)
            return
    gemm(False, False, nb, s.P, GH, <floating> 1, dg, GH, <floating *> s.Whh, s.P,
         <floating> 1, dhx, s.P)


cdef inline void grb_bwd_products(Seq *s, int nb, const int64_t *ln, int t, const floating *At,
                                  const floating *hp, floating *dm, floating *dg,
                                  floating *dhx, int rev) noexcept nogil:
    """GRU-RB's step after grb_bwd1: d(r*h) = dn_pre @ W_hn into dm, then dr
    and its part of dhx (grb_bwd2), then dhx += [dr, dz]_pre @ W_hr,z."""
    cdef int H = s.H, GH = 3 * s.H
    cdef const floating *Whh = <floating *> s.Whh
    cdef PairT q
    if floating is float:
        if s.Wpk != NULL and s.pair and nb == 1:
            q.s, q.dg, q.dhx, q.cw, q.rev = s, dg, dhx, chunk_units(H), rev
            q.t, q.At, q.hp, q.dm = t, At, hp, dm
            pyrnn_pair_run(grb_bwd_chunk1, &q, (H + q.cw - 1) // q.cw)
            pyrnn_pair_run(grb_bwd_chunk2, &q, (H + q.cw - 1) // q.cw)
            return
        if s.Wpk != NULL:
            pyrnn_gemm_packed_dir_f(nb, H, H, dg + 2 * H, GH, s.Wpk + s.sec3, dm, H, 0, rev)
            grb_bwd2(nb, H, H, ln, t, At, hp, dm, dg, dhx)
            pyrnn_gemm_packed_dir_f(nb, H, 2 * H, dg, GH, s.Wpk, dhx, H, 1, rev)
            return
    gemm(False, False, nb, H, H, <floating> 1, dg + 2 * H, GH, Whh + <size_t> 2 * H * H, H,
         <floating> 0, dm, H)
    grb_bwd2(nb, H, H, ln, t, At, hp, dm, dg, dhx)
    gemm(False, False, nb, H, 2 * H, <floating> 1, dg, GH, Whh, H, <floating> 1, dhx, H)


cdef void bwd_rows(Seq *s, floating *tag, int b0, int nb) noexcept nogil:
    """Reverse time loop for batch rows [b0, b0 + nb): fills dGX (and dGH,
    dHT) for every step and leaves dh0/dc0."""
    cdef int T = s.T, B = s.B, H = s.H, P = s.P, GH = s.G * s.H, ldy = s.ldy
    cdef int step, t, cur = 0, kind = s.kind
    cdef const int64_t *ln = s.len + b0 if s.len != NULL else NULL
    cdef const floating *Whh = <floating *> s.Whh
    cdef const floating *Whr = <floating *> s.Whr
    cdef floating *dY = <floating *> s.dY
    cdef floating *Hs = <floating *> s.Hs
    cdef floating *Cs = <floating *> s.Cs
    cdef floating *A = <floating *> s.A
    cdef floating *X2 = <floating *> s.X2
    cdef floating *dGX = <floating *> s.dGX
    cdef floating *dGH = <floating *> s.dGH
    cdef floating *dgs = <floating *> s.dgs + <size_t> b0 * GH if s.dgs != NULL else NULL
    cdef int b
    cdef floating *dHT = <floating *> s.dHT
    cdef floating *dhbuf = <floating *> s.dhbuf
    cdef floating *dcbuf = <floating *> s.dcbuf
    cdef floating *dm = <floating *> s.dmbuf + <size_t> b0 * H if s.dmbuf != NULL else NULL
    cdef floating *hn_t
    cdef floating *dhc
    cdef floating *dhx
    cdef floating *dcc
    cdef floating *dcx
    cdef floating *dg
    cdef floating *hp
    cdef size_t row
    cdef int GA = H if kind <= K_RNN_RELU else GH
    cdef int lstm = kind == K_LSTM

    if nb <= 0:
        return
    memcpy(dhbuf + <size_t> b0 * P, <floating *> s.dhn + <size_t> b0 * P,
           <size_t> nb * P * sizeof(floating))
    if lstm:
        memcpy(dcbuf + <size_t> b0 * H, <floating *> s.dcn + <size_t> b0 * H,
               <size_t> nb * H * sizeof(floating))
    for step in range(T):
        t = step if s.reverse else T - 1 - step
        row = <size_t> t * B + b0
        hp = Hs + row * P
        dg = dGX + row * GH
        dhc = dhbuf + <size_t> cur * B * P + <size_t> b0 * P
        dhx = dhbuf + <size_t> (1 - cur) * B * P + <size_t> b0 * P
        if lstm:
            dcc = dcbuf + <size_t> cur * B * H + <size_t> b0 * H
            dcx = dcbuf + <size_t> (1 - cur) * B * H + <size_t> b0 * H

        if kind == K_RNN_TANH or kind == K_RNN_RELU:
            # h' of step t: the last forward step's in A, the others' in Hs
            if step == 0:
                hn_t = A + <size_t> b0 * H
            else:
                hn_t = Hs + (<size_t> (t - 1 if s.reverse else t + 1) * B + b0) * P
            rnn_bwd(kind == K_RNN_RELU, nb, H, ln, t, hn_t, dY + row * ldy, ldy,
                    dhc, dg, dhx)
            rec_gemm_t(s, nb, dg, dhx, step_rev(cur))
        elif kind == K_LSTM:
            if s.proj:
                proj_bwd_pre(nb, P, ln, t, dY + row * ldy, ldy, dhc, dHT + row * P, dhx)
                gemm(False, False, nb, H, P, <floating> 1, dHT + row * P, P, Whr, H,
                     <floating> 0, dm, H)
                lstm_bwd(nb, H, ln, t, A + row * GA, X2 + row * H, Cs + row * H,
                         <floating *> NULL, 0, dm, dcc, dg, dcx, <floating *> NULL)
            else:
                lstm_bwd(nb, H, ln, t, A + row * GA, X2 + row * H, Cs + row * H,
                         dY + row * ldy, ldy, dhc, dcc, dg, dcx, dhx)
            rec_gemm_t(s, nb, dg, dhx, step_rev(cur))
        elif kind == K_GRU:
            gru_bwd(nb, H, ln, t, A + row * GA, X2 + row * H, hp, dY + row * ldy, ldy,
                    dhc, dg, dgs, dhx)
            # r and z rows equal dGX's; keep only the n block for the weight grads
            for b in range(nb):
                memcpy(dGH + (row + b) * H, dgs + <size_t> b * GH + 2 * H, H * sizeof(floating))
            rec_gemm_t(s, nb, dgs, dhx, step_rev(cur))
        elif kind == K_GRU_RB:
            grb_bwd1(nb, H, H, ln, t, A + row * GA, hp, dY + row * ldy, ldy, dhc, dg, dhx)
            grb_bwd_products(s, nb, ln, t, A + row * GA, hp, dm, dg, dhx, step_rev(cur))
        else:
            mgru_bwd(nb, H, ln, t, A + row * GA, hp, dY + row * ldy, ldy, dhc, dg, dhx)
            rec_gemm_t(s, nb, dg, dhx, step_rev(cur))
        cur = 1 - cur

    memcpy(<floating *> s.dh0 + <size_t> b0 * P, dhbuf + <size_t> cur * B * P + <size_t> b0 * P,
           <size_t> nb * P * sizeof(floating))
    if lstm:
        memcpy(<floating *> s.dc0 + <size_t> b0 * H,
               dcbuf + <size_t> cur * B * H + <size_t> b0 * H,
               <size_t> nb * H * sizeof(floating))


cdef inline void gemm_tn_acc(int m, int n, int k, const floating *a, int lda,
                             const floating *b, int ldb, floating *c, int ldc) noexcept nogil:
    """C (m, n) += A^T B over the long k axis (all T*B rows): the weight
    gradients. Few output rows and columns: the kernel of gemm_tn.h, in place
    or on padded copies of 256-row blocks, instead of OpenBLAS's copies of
    both whole long operands; else BLAS."""
    if floating is float:
        if pyrnn_simd_active() and (all_packed or (n <= TN_MAX_N and <size_t> m * n <= TN_MAX_MN)):
            pyrnn_gemm_tn_f(m, n, k, a, lda, b, ldb, c, ldc)
            return
    gemm(True, False, m, n, k, <floating> 1, a, lda, b, ldb, <floating> 1, c, ldc)


cdef void wgrad_part(Seq *s, floating *tag, int k, int n) noexcept nogil:
    """Part k of n of the after-loop work: weight and bias gradients (split by
    gate rows) and dX (split by input rows). Each output element is summed in
    a fixed order, whatever n is."""
    cdef int T = s.T, B = s.B, H = s.H, P = s.P, Ni = s.Ni, GH = s.G * s.H
    cdef int rows = T * B
    cdef int r0 = split(GH, k, n), r1 = split(GH, k + 1, n), lo, hi, j, r
    cdef floating *dGX = <floating *> s.dGX
    cdef floating *dGHn = <floating *> s.dGH
    cdef floating *dWhh = <floating *> s.dWhh
    cdef floating *dbih = <floating *> s.dbih
    cdef floating *dbhh = <floating *> s.dbhh
    cdef floating *src
    cdef floating colsum[BIAS_CHUNK]
    cdef int w
    # dW_ih[r0:r1] += dGX[:, r0:r1]^T @ X
    gemm_tn_acc(r1 - r0, Ni, rows, dGX + r0, GH, <floating *> s.X, Ni,
                <floating *> s.dWih + <size_t> r0 * Ni, Ni)
    # dW_hh[r0:r1] += dG_h[:, r0:r1]^T @ h_prev. The GRUs' n rows apart: GRU's
    # dn*r is kept in dGH (its r, z rows equal dGX's); GRU-RB's n rows use r*h
    cdef const floating *gn
    cdef const floating *hn_src
    cdef int ldn
    if s.kind == K_GRU or s.kind == K_GRU_RB:
        lo, hi = r0, min(r1, 2 * H)
        if hi > lo:
            gemm_tn_acc(hi - lo, H, rows, dGX + lo, GH, <floating *> s.Hs, H,
                        dWhh + <size_t> lo * H, H)
        lo, hi = max(r0, 2 * H), r1
        if s.kind == K_GRU:
            gn, ldn, hn_src = dGHn + (lo - 2 * H), H, <floating *> s.Hs
        else:
            gn, ldn, hn_src = dGX + lo, GH, <floating *> s.X2
        if hi > lo:
            gemm_tn_acc(hi - lo, H, rows, gn, ldn, hn_src, H, dWhh + <size_t> lo * H, H)
    else:
        gemm_tn_acc(r1 - r0, P, rows, dGX + r0, GH, <floating *> s.Hs, P,
                    dWhh + <size_t> r0 * P, P)
    if dbih != NULL and r1 > r0:
        # one row-major sweep (contiguous, vectorised) of dGX for both bias
        # gradients, BIAS_CHUNK columns at a time: b_ih's and b_hh's are the
        # same sums but for GRU's n rows
        hi = min(r1, 2 * H) if s.kind == K_GRU else r1
        lo = r0
        while lo < r1:
            w = min(<int> BIAS_CHUNK, r1 - lo)
            memset(colsum, 0, w * sizeof(floating))
            for r in range(rows):
                src = dGX + <size_t> r * GH + lo
                for j in range(w):
                    colsum[j] += src[j]
            for j in range(w):
                dbih[lo + j] += colsum[j]
            for j in range(min(w, hi - lo)):
                dbhh[lo + j] += colsum[j]
            lo += w
        if s.kind == K_GRU and r1 > 2 * H:
            lo = max(r0, 2 * H)
            for r in range(rows):
                src = dGHn + <size_t> r * H
                for j in range(lo, r1):
                    dbhh[j] += src[j - 2 * H]
    if s.proj:
        lo, hi = split(P, k, n), split(P, k + 1, n)
        gemm_tn_acc(hi - lo, H, rows, <floating *> s.dHT + lo, P, <floating *> s.M, H,
                    <floating *> s.dWhr + <size_t> lo * H, H)
    # dX (+)= dGX @ W_ih, split by rows, or with few rows by columns (so that
    # each thread packs only its share of W_ih)
    cdef int x0 = 0, x1 = rows, c0 = 0, c1 = Ni
    if rows < Ni:
        c0, c1 = split(Ni, k, n), split(Ni, k + 1, n)
    else:
        x0, x1 = split(rows, k, n), split(rows, k + 1, n)
    if floating is float:
        if proj_packed(s, rows) and packed_product(
                x1 - x0, c1 - c0, GH, <float *> dGX + <size_t> x0 * GH, GH,
                <float *> s.Wih + c0, 1, Ni, <float *> s.dX + <size_t> x0 * Ni + c0, Ni,
                s.accumulate_dx):
            return
    gemm(False, False, x1 - x0, c1 - c0, GH, <floating> 1, dGX + <size_t> x0 * GH, GH,
         <floating *> s.Wih + c0, Ni, <floating> (1 if s.accumulate_dx else 0),
         <floating *> s.dX + <size_t> x0 * Ni + c0, Ni)


cdef void run_backward(Seq *s, floating *tag, int nt) noexcept nogil:
    cdef int k, n
    cdef bint paired = False
    if floating is float:
        plan_pack(s, True)
        # batch 1: each step's product shared with the helper core, and the
        # weight gradients too (no OpenMP team left spinning beside it)
        paired = pair1_applies(s, nt)
        if paired:
            s.pair = pyrnn_pair_acquire()
        pack_fill(s)
    n = row_threads(s, nt)
    if n <= 1:
        bwd_rows(s, tag, 0, s.B)
    else:
        for k in prange(n, schedule='static', num_threads=n):
            bwd_rows(s, tag, split(s.B, k, n), split(s.B, k + 1, n) - split(s.B, k, n))
    big_free(s.Wpk, s.Wpk_bytes, s.Wpk_mapped)
    s.Wpk = NULL
    n = nt if <double> s.T * s.B * s.Ni * s.G * s.H >= PAR_MIN_WORK else 1
    run_parts(s, tag, JOB_WGRAD, min(n, s.G * s.H), paired)
    if s.pair:
        pyrnn_pair_release()
        s.pair = 0


# ---------------------------------------------------------------- Python entry

cdef void fill(Seq *s, int kind, int T, int B, int Ni, int H, int P, int reverse,
               int ldy, int train, object lengths, dict a):
    # every field starts at 0/NULL: the float64 path never sets s.pair (only
    # plan_pack does), and a stale stack value sent float64 calls down the
    # float helper path (NaN output at 2 threads)
    memset(s, 0, sizeof(Seq))
    s.kind = kind
    s.T, s.B, s.Ni, s.H, s.P = T, B, Ni, H, P
    s.G = GATES[kind]
    s.reverse, s.ldy, s.train = reverse, ldy, train
    s.proj = a.get("Whr") is not None
    s.accumulate_dx = 0
    s.len = <const int64_t *> ptr(lengths)
    s.Wih, s.Whh, s.Whr = ptr(a.get("Wih")), ptr(a.get("Whh")), ptr(a.get("Whr"))
    s.bx, s.bhn = ptr(a.get("bx")), ptr(a.get("bhn"))
    s.X, s.h0, s.c0 = ptr(a.get("X")), ptr(a.get("h0")), ptr(a.get("c0"))
    s.Y, s.hn, s.cn = ptr(a.get("Y")), ptr(a.get("hn")), ptr(a.get("cn"))
    s.GX, s.GH, s.Hs, s.Cs = ptr(a.get("GX")), ptr(a.get("GH")), ptr(a.get("Hs")), ptr(a.get("Cs"))
    s.A, s.X2, s.M = ptr(a.get("A")), ptr(a.get("X2")), ptr(a.get("M"))
    s.hbuf, s.cbuf = ptr(a.get("hbuf")), ptr(a.get("cbuf"))
    s.dY, s.dhn, s.dcn = ptr(a.get("dY")), ptr(a.get("dhn")), ptr(a.get("dcn"))
    s.dX, s.dh0, s.dc0 = ptr(a.get("dX")), ptr(a.get("dh0")), ptr(a.get("dc0"))
    s.dGX, s.dGH, s.dHT = ptr(a.get("dGX")), ptr(a.get("dGH")), ptr(a.get("dHT"))
    s.dgs = ptr(a.get("dgs"))
    s.dWih, s.dWhh, s.dWhr = ptr(a.get("dWih")), ptr(a.get("dWhh")), ptr(a.get("dWhr"))
    s.dbih, s.dbhh = ptr(a.get("dbih")), ptr(a.get("dbhh"))
    s.dhbuf, s.dcbuf, s.dmbuf = ptr(a.get("dhbuf")), ptr(a.get("dcbuf")), ptr(a.get("dmbuf"))


cdef inline size_t up_line(size_t n) noexcept nogil:
    return (n + 63) & ~(<size_t> 63)


cdef void fused_bias_fill(Seq *s, floating *bx, floating *bhn, const floating *bih,
                          const floating *bhh) noexcept nogil:
    """layers.fused_biases, in place: bx = b_ih + b_hh, but for GRU's n gate
    bx = b_in and bhn = b_hn (r multiplies W_hn h + b_hn); zeros without bias."""
    cdef int i, GH = s.G * s.H, nsum = 2 * s.H if s.kind == K_GRU else GH
    if bih == NULL:
        memset(bx, 0, GH * sizeof(floating))
        if bhn != NULL:
            memset(bhn, 0, s.H * sizeof(floating))
        return
    for i in range(nsum):
        bx[i] = bih[i] + bhh[i]
    for i in range(nsum, GH):
        bx[i] = bih[i]


cdef void *infer_scratch(Seq *s, bint double, object b_ih, object b_hh) except? NULL:
    """One malloc'd block for an inference call's scratch that the caller left
    out (all of it but a pooled GX) and its fused biases, so that a call makes
    no NumPy temporaries: each cost 1.4-2.4 us, several per call at batch 1
    (layers.direction_forward). Release with line_free."""
    cdef size_t es = sizeof(double) if double else sizeof(float)
    cdef size_t B = s.B, GH = s.G * s.H, H = s.H
    cdef bint rb = s.kind == K_GRU_RB, gru = s.kind == K_GRU
    cdef size_t n_gx = 0 if s.GX != NULL else up_line(<size_t> s.T * B * GH * es)
    cdef size_t n_gh = up_line((B + 1) * (GH + PAIR_GH_PAD) * es)
    cdef size_t n_h = up_line(2 * B * s.P * es)
    cdef size_t n_c = up_line(2 * B * H * es) if s.kind == K_LSTM else 0
    cdef size_t n_a = up_line(B * GH * es) if rb else 0
    cdef size_t n_x2 = up_line(B * H * es) if rb else 0
    cdef size_t n_m = up_line(B * H * es) if s.proj else 0
    cdef size_t n_bx = up_line(GH * es)
    cdef size_t n_bhn = up_line(H * es) if gru and b_ih is None else 0
    cdef char *blk = <char *> line_alloc(n_gx + n_gh + n_h + n_c + n_a + n_x2 + n_m + n_bx
                                         + n_bhn)
    cdef char *q = blk
    if blk == NULL:
        raise MemoryError()
    if n_gx:
        s.GX = q
        q += n_gx
    s.GH = q
    q += n_gh
    s.hbuf = q
    q += n_h
    s.cbuf = q if n_c else NULL
    q += n_c
    s.A = q if n_a else NULL
    q += n_a
    s.X2 = q if n_x2 else NULL
    q += n_x2
    s.M = q if n_m else NULL
    q += n_m
    s.bx = q
    q += n_bx
    if gru:
        s.bhn = q if n_bhn else <char *> ptr(b_hh) + 2 * H * es
    else:
        s.bhn = NULL
    if double:
        fused_bias_fill(s, <double *> s.bx, <double *> s.bhn if n_bhn else NULL,
                        <double *> ptr(b_ih), <double *> ptr(b_hh))
    else:
        fused_bias_fill(s, <float *> s.bx, <float *> s.bhn if n_bhn else NULL,
                        <float *> ptr(b_ih), <float *> ptr(b_hh))
    return blk


def forward(int kind, int T, int B, int Ni, int H, int P, bint reverse, int ldy,
            bint train, object lengths, bint double, int nthreads, dict arrays):
    """Run one direction forward. `arrays` maps the Seq field names to
    C-contiguous arrays of the right dtype and size (checked by the caller);
    Y may be a view with row stride ldy. In inference, scratch and fused
    biases come from here (infer_scratch) from b_ih and b_hh; GX may be given
    (a pooled buffer). Returns nothing: outputs are written."""
    cdef Seq s
    cdef void *blk = NULL
    fill(&s, kind, T, B, Ni, H, P, reverse, ldy, train, lengths, arrays)
    if not train:
        blk = infer_scratch(&s, double, arrays.get("b_ih"), arrays.get("b_hh"))
    with nogil:
        if double:
            run_forward(&s, <double *> NULL, nthreads)
        else:
            run_forward(&s, <float *> NULL, nthreads)
        line_free(blk)


def backward(int kind, int T, int B, int Ni, int H, int P, bint reverse, int ldy,
             object lengths, bint double, int nthreads, bint accumulate_dx, dict arrays):
    """Run one direction backward over the cache of a training forward."""
    cdef Seq s
    fill(&s, kind, T, B, Ni, H, P, reverse, ldy, 1, lengths, arrays)
    s.accumulate_dx = accumulate_dx
    with nogil:
        if double:
            run_backward(&s, <double *> NULL, nthreads)
        else:
            run_backward(&s, <float *> NULL, nthreads)


# ---------------------------------------------------------------- SIMD control

SIMD_LEVELS = ("scalar", "avx2", "avx512")


def simd_available():
    """True when this CPU can run the AVX2+FMA kernels."""
    return bool(pyrnn_simd_available())


def simd_active():
    """True when the float kernels currently run SIMD (AVX2+FMA or AVX-512)."""
    return bool(pyrnn_simd_active())


def set_simd(bint on):
    """Switch the float kernels between the best SIMD level and scalar."""
    return bool(pyrnn_set_simd(on))


def simd_levels():
    """The levels this CPU can run, lowest first: ("scalar", "avx2", ...)."""
    return SIMD_LEVELS[:pyrnn_simd_best() + 1]


def simd_level():
    """The level the float kernels run now: "scalar", "avx2" or "avx512"."""
    return SIMD_LEVELS[pyrnn_simd_level()]


def set_simd_level(str name):
    """Run the float kernels at `name` (one of simd_levels()); returns it."""
    if name not in simd_levels():
        raise ValueError(f"set_simd_level: name must be one of {simd_levels()}, got {name!r}")
    return SIMD_LEVELS[pyrnn_set_simd_level(SIMD_LEVELS.index(name))]


def simd_max_error(int which, uint32_t stride, str level="avx2"):
    """Largest absolute error of a SIMD level's sigmoid (0) or tanh (1) against
    the double-precision libm value, over every `stride`-th float bit pattern
    (-1 when this CPU lacks the level)."""
    if level not in SIMD_LEVELS[1:]:
        raise ValueError(f"simd_max_error: level must be 'avx2' or 'avx512', got {level!r}")
    cdef double r
    cdef int lv = SIMD_LEVELS.index(level)
    with nogil:
        r = pyrnn_simd_max_error(lv, which, stride)
    return r


def _set_proj_packed_rows(int rows):
    """Input projections of at most ``rows`` rows (or of narrow inputs) use the
    packed kernel; 0: never (for tests and A/B runs; the default is
    PROJ_PACKED_ROWS). Returns the old value."""
    global proj_packed_rows
    old, proj_packed_rows = proj_packed_rows, rows
    return old


def _set_all_packed(bint on):
    """Whether the packed kernels do every float product at any size (else
    BLAS from PROJ_PACKED_ROWS rows and past TN_MAX_N / TN_MAX_MN). Meant to be
    set once, at import, from the machine alone (pyrnn/_gemm.py), so results
    never depend on the thread count or the SIMD level. Returns the old value."""
    global all_packed
    old, all_packed = all_packed, (1 if on else 0)
    return bool(old)


def _all_packed():
    return bool(all_packed)


def _set_cat_max_k(int k):
    """Batch >= 2 calls with I + P <= k multiply [x_t | h] per step (cat_begin);
    0: never (for tests and A/B runs; the default is CAT_MAX_K). Returns the
    old value."""
    global cat_max_k
    old, cat_max_k = cat_max_k, k
    return old


def _set_stream_nogil_macs(double macs):
    """Stream steps of at least this many multiply-adds release the GIL (0:
    every step); returns the previous value. For tests and A/B timing."""
    global stream_nogil_macs
    old = stream_nogil_macs
    stream_nogil_macs = macs
    return old


def _set_handoff_spin_ns(long ns):
    """How long a stream step spins for the GIL's holder (handoff.h; 0: not
    at all); returns the previous value. For tests and A/B timing."""
    global handoff_spin_ns
    old, handoff_spin_ns = handoff_spin_ns, ns
    return old


def _set_zigzag(bint on):
    """Alternate the packed weights' direction between steps (default) or not;
    returns the previous setting. For tests and A/B timing only."""
    global zigzag
    old = zigzag
    zigzag = 1 if on else 0
    return bool(old)


def _packed_product(cnp.ndarray A, cnp.ndarray W, int k1, bint rev):
    """A (m, k) @ W (n, k)^T through the packed kernel (float32, C-contiguous,
    checked here), A's rows split as [A[:, :k1] | A[:, k1:]]; rev: the panels
    last to first. For tests of the kernel itself."""
    if (A.dtype != np.float32 or W.dtype != np.float32 or A.ndim != 2 or W.ndim != 2
            or not cnp.PyArray_IS_C_CONTIGUOUS(A) or not cnp.PyArray_IS_C_CONTIGUOUS(W)):
        raise TypeError("A and W must be C-contiguous 2-D float32 arrays")
    cdef int m = A.shape[0], k = A.shape[1], n = W.shape[0]
    if W.shape[1] != k or not 0 <= k1 <= k:
        raise ValueError("A is (m, k), W (n, k), 0 <= k1 <= k")
    if not pyrnn_simd_active():
        raise RuntimeError("the packed kernel needs AVX2+FMA")
    P = np.empty(pyrnn_packed_size(n, k), np.float32)
    C = np.zeros((m, n), np.float32)
    cdef const float *a = <float *> cnp.PyArray_DATA(A)
    cdef float *pp = <float *> cnp.PyArray_DATA(P)
    pyrnn_pack_f(n, k, <float *> cnp.PyArray_DATA(W), k, 1, pp)
    pyrnn_gemm_packed2_dir_f(m, n, k1, a, k, k - k1, a + k1, k, pp,
                             <float *> cnp.PyArray_DATA(C), n, 0, rev)
    return C


def _pack(cnp.ndarray W):
    """The packed panels of W (n, k) for _gemm_prepacked (the bench's peak)."""
    if W.dtype != np.float32 or W.ndim != 2 or not cnp.PyArray_IS_C_CONTIGUOUS(W):
        raise TypeError("W must be a C-contiguous 2-D float32 array")
    if not pyrnn_simd_active():
        raise RuntimeError("the packed kernel needs AVX2+FMA")
    cdef int n = W.shape[0], k = W.shape[1]
    P = np.empty(pyrnn_packed_size(n, k), np.float32)
    pyrnn_pack_f(n, k, <float *> cnp.PyArray_DATA(W), k, 1, <float *> cnp.PyArray_DATA(P))
    return P


def _gemm_prepacked(cnp.ndarray A, cnp.ndarray P, int n, cnp.ndarray C):
    """C (m, n) = A (m, k) @ W^T, W (n, k) packed by _pack into P; the GIL is
    released, so Python threads on row blocks measure the kernel on every core."""
    for name, arr in (("A", A), ("P", P), ("C", C)):
        if arr.dtype != np.float32 or not cnp.PyArray_IS_C_CONTIGUOUS(arr):
            raise TypeError(f"{name} must be a C-contiguous float32 array")
    if A.ndim != 2 or C.ndim != 2 or P.ndim != 1:
        raise ValueError("A and C are 2-D, P 1-D")
    cdef int m = A.shape[0], k = A.shape[1]
    if n <= 0 or <size_t> P.shape[0] != pyrnn_packed_size(n, k) or C.shape[0] != m or C.shape[1] != n:
        raise ValueError("P must pack an (n, k) matrix and C be (m, n) for A (m, k)")
    if not pyrnn_simd_active():
        raise RuntimeError("the packed kernel needs AVX2+FMA")
    cdef const float *a = <float *> cnp.PyArray_DATA(A)
    cdef const float *pp = <float *> cnp.PyArray_DATA(P)
    cdef float *c = <float *> cnp.PyArray_DATA(C)
    with nogil:
        pyrnn_gemm_packed_f(m, n, k, a, k, pp, c, n, 0)
    return C


def _activation(int which, cnp.ndarray x):
    """sigmoid (which 0) or tanh (1) of x (C-contiguous float32 or float64)
    through the gate kernels' activations at the current SIMD level. For tests."""
    if which not in (0, 1):
        raise ValueError(f"which must be 0 (sigmoid) or 1 (tanh), got {which}")
    if x.dtype not in (np.float32, np.float64) or not cnp.PyArray_IS_C_CONTIGUOUS(x):
        raise TypeError("x must be a C-contiguous float32 or float64 array")
    y = np.empty_like(x)
    if x.dtype == np.float32:
        act_f(which, x.size, <float *> cnp.PyArray_DATA(x), <float *> cnp.PyArray_DATA(y))
    else:
        act_d(which, x.size, <double *> cnp.PyArray_DATA(x), <double *> cnp.PyArray_DATA(y))
    return y


_GATE_KINDS = {"rnn": K_RNN_TANH, "lstm": K_LSTM, "gru": K_GRU, "mgru": K_MGRU}


def _gate_kernel(str cell, int nb, int H, int reps, bint keep=False):
    """Run one float32 forward gate kernel (the current SIMD level) `reps`
    times on nb rows of H units of fixed data, the GIL released; keep: also
    store what training keeps. For the kernel benchmarks in bench/."""
    if cell not in _GATE_KINDS:
        raise ValueError(f"cell must be one of {sorted(_GATE_KINDS)}, got {cell!r}")
    if nb < 1 or H < 1 or reps < 1:
        raise ValueError(f"nb, H and reps must be positive, got {nb}, {H}, {reps}")
    cdef int kind = _GATE_KINDS[cell], G = GATES[kind], r
    rng = np.random.default_rng(0)
    gxa = (rng.standard_normal((nb, G * H)) * 3).astype(np.float32)
    gha = rng.standard_normal((nb, G * H)).astype(np.float32)
    bxa = np.full(G * H, 0.1, np.float32)
    hpa = rng.uniform(-1, 1, (nb, H)).astype(np.float32)
    outs = [np.zeros((nb, G * H), np.float32) for _ in range(5)]
    cdef float *gx = <float *> cnp.PyArray_DATA(gxa)
    cdef float *gh = <float *> cnp.PyArray_DATA(gha)
    cdef float *bx = <float *> cnp.PyArray_DATA(bxa)
    cdef float *hp = <float *> cnp.PyArray_DATA(hpa)
    cdef float *hn = <float *> cnp.PyArray_DATA(outs[0])
    cdef float *y = <float *> cnp.PyArray_DATA(outs[1])
    cdef float *cn = <float *> cnp.PyArray_DATA(outs[2])
    cdef float *A = <float *> cnp.PyArray_DATA(outs[3]) if keep else NULL
    cdef float *X2 = <float *> cnp.PyArray_DATA(outs[4]) if keep else NULL
    with nogil:
        for r in range(reps):
            if kind == K_RNN_TANH:
                rnn_fwd_f(0, nb, H, NULL, 0, gx, bx, gh, hp, hn, y, H, A)
            elif kind == K_LSTM:
                lstm_fwd_f(nb, H, H, NULL, 0, gx, bx, gh, hp, cn, hp, hn, y, H, A, X2)
            elif kind == K_GRU:
                gru_fwd_f(nb, H, H, NULL, 0, gx, bx, gh, 1, bx, hp, hn, y, H, A, X2)
            else:
                mgru_fwd_f(nb, H, H, NULL, 0, gx, bx, gh, hp, hn, y, H, A)


def _read_seconds(cnp.ndarray buf, int reps):
    """Seconds for reps streaming reads of buf (C-contiguous float32), timed in
    the core. The GIL is released, so Python threads on buffers of their own
    measure the read rate of every core at once (`pyrnn bench`'s floors)."""
    if buf.dtype != np.float32 or not cnp.PyArray_IS_C_CONTIGUOUS(buf):
        raise TypeError("buf must be a C-contiguous float32 array")
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    cdef const float *p = <float *> cnp.PyArray_DATA(buf)
    cdef size_t n = buf.size
    cdef float sink
    cdef double sec
    with nogil:
        sec = pyrnn_read_seconds(p, n, reps, &sink)
    return sec


def line_offset(cnp.ndarray a):
    """Bytes from a's data to the next 64-byte boundary (0 when on one)."""
    return (64 - <size_t> cnp.PyArray_DATA(a) % 64) % 64


def pair_helped():
    """Chunks of batch-1 work the helper core has run in this process (tests:
    that a call did share its steps)."""
    return pyrnn_pair_helped()


def set_pair(bint on):
    """Allow or forbid the helper core that batch-1 inference and stream
    steps share their work with (src/_core/pair.h)."""
    return bool(pyrnn_pair_enable(on))


def openmp_enabled():
    """True when the extension was built with OpenMP."""
    return bool(PYRNN_OPENMP)


cdef extern from *:
    """
    #ifdef _OPENMP
    #define PYRNN_OPENMP 1
    #else
    #define PYRNN_OPENMP 0
    #endif
    """
    int PYRNN_OPENMP


# ---------------------------------------------------------------- streaming

cdef struct StreamLayer:
    int kind, Ni, H, P, G, proj
    void *Wih
    void *Whh
    void *Whr
    void *bx
    void *bhn
    void *h      # state (B, P), updated in place
    void *c      # state (B, H), LSTM
    void *gx     # (B, G*H) input projection
    void *gh     # (B, G*H) recurrent projection (GRU-RB: r,z block then n block)
    void *A      # (B, G*H) GRU-RB gates
    void *X2     # (B, H) GRU-RB r*h
    void *M      # (B, H) LSTM-proj m
    void *hn     # (B, P) new h
    void *cn     # (B, H) new c
    void *y      # (B, P) layer output (input of the next layer)
    # float32: the weights packed in 16-row panels (packed.h) for one pass per
    # step, or NULL. RNN/LSTM/MinimalGRU: [W_ih | W_hh]. GRU: [W_ir,z | W_hr,z],
    # then W_in (at Wcat + sec2), then W_hn (at Wcat + sec3), since r multiplies
    # only the W_hn h part.
    float *Wcat
    size_t sec2, sec3
    # batch 1 on two cores: nchunk chunks of cw units (whole 16-row panels of
    # every gate) shared with the helper thread; 0: never split
    int nchunk, cw
    const void *x    # this step's input (B, I), for the fused product
    int flip     # this step's weights last to first: alternates (packed.h)
    void *zero   # (B, G*H) zeros: the fused product leaves no separate h part


cdef inline void cat_products(StreamLayer *L, int B, int u0, int u1) noexcept nogil:
    cat_gemm(L.kind, B, L.Ni, L.P, L.H, L.G, L.Wcat, L.sec2, L.sec3, <float *> L.x, L.Ni,
             <float *> L.h, L.P, <float *> L.gx, <float *> L.gh, u0, u1, step_rev(L.flip))


cdef void cat_units(StreamLayer *L, int B, int u0, int u1) noexcept nogil:
    """Products and gates of units [u0, u1) (a slice only at B == 1): writes
    hn, y (and cn) for those units."""
    cdef int H = L.H, P = L.P, n = u1 - u0, kind = L.kind
    cdef float *gx = <float *> L.gx + u0
    cdef float *bx = <float *> L.bx + u0
    cdef float *h = <float *> L.h + u0
    cdef float *hn = <float *> L.hn + u0
    cdef float *y = <float *> L.y + u0
    cat_products(L, B, u0, u1)
    if kind == K_RNN_TANH or kind == K_RNN_RELU:
        rnn_fwd(kind == K_RNN_RELU, B, n, NULL, 0, gx, bx, NULL, h, hn, y, P, <float *> NULL)
    elif kind == K_LSTM:
        lstm_fwd(B, n, H, NULL, 0, gx, bx, NULL, <float *> L.c + u0, <float *> L.cn + u0,
                 h, hn, y, P, <float *> NULL, <float *> NULL)
    elif kind == K_GRU:
        gru_fwd(B, n, H, NULL, 0, gx, bx, <float *> L.gh + u0, 0, <float *> L.bhn + u0, h, hn,
                y, P, <float *> NULL, <float *> NULL)
    else:
        mgru_fwd(B, n, H, NULL, 0, gx, bx, NULL, h, hn, y, P, <float *> NULL)


cdef void cat_chunk(void *arg, int chunk) noexcept nogil:
    cdef StreamLayer *L = <StreamLayer *> arg
    cat_units(L, 1, L.cw * chunk, min(L.cw * chunk + L.cw, L.H))


cdef void stream_layer_step(StreamLayer *L, int B, const floating *x, int pair) noexcept nogil:
    cdef int H = L.H, P = L.P, GH = L.G * L.H, kind = L.kind
    cdef const floating *Whh = <floating *> L.Whh
    cdef floating *h = <floating *> L.h
    cdef floating *gx = <floating *> L.gx
    cdef floating *gh = <floating *> L.gh
    cdef floating *hn = <floating *> L.hn
    cdef floating *y = <floating *> L.y
    cdef floating *X2 = <floating *> L.X2
    if floating is float:
        if L.Wcat != NULL and pyrnn_simd_active():
            # one pass over the packed weights for all gates, from [x | h]
            L.x = <const void *> x
            L.flip ^= 1
            if kind == K_GRU_RB:
                # r,z from [x | h] and n's x part in one pass, then W_hn (r*h)
                cat_products(L, B, 0, H)
                grb_fwd1(B, H, H, NULL, 0, gx, <floating *> L.bx, <floating *> L.zero, h,
                         <floating *> L.A, X2)
                pyrnn_gemm_packed_dir_f(B, H, H, X2, H, L.Wcat + L.sec3,
                                        gh + <size_t> B * 2 * H, H, 0, step_rev(L.flip))
                grb_fwd2(B, H, H, NULL, 0, gx, <floating *> L.bx, gh + <size_t> B * 2 * H, h,
                         <floating *> L.A, hn, y, P)
                memcpy(h, hn, <size_t> B * P * sizeof(float))
                return
            if not L.proj:
                if pair and L.nchunk > 0 and B == 1:
                    pyrnn_pair_run(cat_chunk, L, L.nchunk)
                else:
                    cat_units(L, B, 0, H)
                memcpy(h, hn, <size_t> B * P * sizeof(float))
                if kind == K_LSTM:
                    memcpy(L.c, L.cn, <size_t> B * H * sizeof(float))
                return
            cat_products(L, B, 0, H)
            gh = <floating *> L.zero
            Whh = NULL
    if Whh != NULL:
        gemm(False, True, B, GH, L.Ni, <floating> 1, x, L.Ni, <floating *> L.Wih, L.Ni,
             <floating> 0, gx, GH)
    if kind == K_RNN_TANH or kind == K_RNN_RELU:
        if Whh != NULL:
            gemm(False, True, B, H, H, <floating> 1, h, H, Whh, H, <floating> 0, gh, GH)
        rnn_fwd(kind == K_RNN_RELU, B, H, NULL, 0, gx, <floating *> L.bx, gh, h, hn, y, P,
                <floating *> NULL)
    elif kind == K_LSTM:
        if Whh != NULL:
            gemm(False, True, B, GH, P, <floating> 1, h, P, Whh, P, <floating> 0, gh, GH)
        if L.proj:
            lstm_fwd(B, H, H, NULL, 0, gx, <floating *> L.bx, gh, <floating *> L.c,
                     <floating *> L.cn, <floating *> NULL, <floating *> L.M, <floating *> NULL,
                     0, <floating *> NULL, <floating *> NULL)
            gemm(False, True, B, P, H, <floating> 1, <floating *> L.M, H,
                 <floating *> L.Whr, H, <floating> 0, hn, P)
            proj_finish(B, P, NULL, 0, h, hn, y, P)
        else:
            lstm_fwd(B, H, H, NULL, 0, gx, <floating *> L.bx, gh, <floating *> L.c,
                     <floating *> L.cn, h, hn, y, P, <floating *> NULL, <floating *> NULL)
        memcpy(L.c, L.cn, <size_t> B * H * sizeof(floating))
    elif kind == K_GRU:
        gemm(False, True, B, GH, H, <floating> 1, h, H, Whh, H, <floating> 0, gh, GH)
        gru_fwd(B, H, H, NULL, 0, gx, <floating *> L.bx, gh, 1, <floating *> L.bhn, h, hn, y, P,
                <floating *> NULL, <floating *> NULL)
    elif kind == K_GRU_RB:
        gemm(False, True, B, 2 * H, H, <floating> 1, h, H, Whh, H, <floating> 0, gh, 2 * H)
        grb_fwd1(B, H, H, NULL, 0, gx, <floating *> L.bx, gh, h, <floating *> L.A, X2)
        gemm(False, True, B, H, H, <floating> 1, X2, H, Whh + <size_t> 2 * H * H, H,
             <floating> 0, gh + <size_t> B * 2 * H, H)
        grb_fwd2(B, H, H, NULL, 0, gx, <floating *> L.bx, gh + <size_t> B * 2 * H, h,
                 <floating *> L.A, hn, y, P)
    else:
        if Whh != NULL:
            gemm(False, True, B, GH, H, <floating> 1, h, H, Whh, H, <floating> 0, gh, GH)
        mgru_fwd(B, H, H, NULL, 0, gx, <floating *> L.bx, gh, h, hn, y, P, <floating *> NULL)
    memcpy(h, hn, <size_t> B * P * sizeof(floating))


cdef void stream_run(StreamLayer *layers, int nl, int B, const floating *x,
                     floating *out, int pair) noexcept nogil:
    cdef int l
    cdef const floating *inp = x
    if pair:
        pair = pyrnn_pair_acquire()
    for l in range(nl):
        stream_layer_step(&layers[l], B, inp, pair)
        inp = <floating *> layers[l].y
    if pair:
        pyrnn_pair_release()
    memcpy(out, inp, <size_t> B * layers[nl - 1].P * sizeof(floating))


cdef class StreamCore:
    """One step of a stack of unidirectional layers in one call, GIL released:
    no Python and no allocation per layer or per step. Holds references to
    every array it points into, so a weight snapshot stays alive while any
    step that uses it runs."""
    cdef StreamLayer *layers
    cdef int nl, B, Ni, busy, can_pair
    cdef bint double
    cdef double macs      # multiply-adds per step (see STREAM_NOGIL_MACS)
    cdef list keep
    cdef object out2, out1

    @property
    def releases_gil(self):
        """Whether a step releases the GIL: at least STREAM_NOGIL_MACS
        multiply-adds over all layers."""
        return self.macs >= stream_nogil_macs

    def __cinit__(self, int B, bint double, list specs):
        self.layers = NULL
        self.nl = len(specs)
        self.B = B
        self.double = double
        self.keep = []
        self.busy = 0
        self.can_pair = 0
        if self.nl == 0:
            raise ValueError("StreamCore needs at least one layer")
        self.layers = <StreamLayer *> calloc(self.nl, sizeof(StreamLayer))
        if self.layers == NULL:
            raise MemoryError()
        cdef int l
        cdef StreamLayer *L
        for l in range(self.nl):
            d = specs[l]
            self.keep.append(d)
            L = &self.layers[l]
            L.kind, L.Ni, L.H, L.P = d["kind"], d["I"], d["H"], d["P"]
            L.G = GATES[L.kind]
            L.proj = d.get("Whr") is not None
            L.Wih, L.Whh, L.Whr = ptr(d["Wih"]), ptr(d["Whh"]), ptr(d.get("Whr"))
            L.bx, L.bhn = ptr(d["bx"]), ptr(d.get("bhn"))
            L.h, L.c = ptr(d["h"]), ptr(d.get("c"))
            L.gx, L.gh, L.A = ptr(d["gx"]), ptr(d["gh"]), ptr(d.get("A"))
            L.X2, L.M = ptr(d.get("X2")), ptr(d.get("M"))
            L.hn, L.cn, L.y = ptr(d["hn"]), ptr(d.get("cn")), ptr(d["y"])
            L.Wcat = <float *> ptr(d.get("Wcat"))
            L.sec2, L.sec3 = d.get("sec2", 0), d.get("sec3", 0)
            # chunks shared with the helper core (0: never); cw units each
            L.cw = chunk_units(L.H)
            L.nchunk = (L.H + L.cw - 1) // L.cw if d.get("pair") and L.Wcat != NULL else 0
            if L.nchunk > 0:
                self.can_pair = 1
            L.zero = ptr(d.get("zero"))
        self.Ni = self.layers[0].Ni
        self.macs = 0
        for l in range(self.nl):
            L = &self.layers[l]
            self.macs += <double> B * L.G * L.H * (L.Ni + L.P) + (<double> B * L.H * L.P if L.proj
                                                                 else 0)
        self.out2 = np.zeros((B, self.layers[self.nl - 1].P), np.float64 if double else np.float32)
        self.out1 = self.out2[0]

    def __dealloc__(self):
        free(self.layers)

    cdef void run(self, void *px, void *po, int pair) noexcept nogil:
        if self.double:
            stream_run(self.layers, self.nl, self.B, <double *> px, <double *> po, 0)
        else:
            stream_run(self.layers, self.nl, self.B, <float *> px, <float *> po, pair)

    def set_weights(self, list specs):
        """Point every layer at new weight arrays (same shapes), e.g. after
        the model's parameters were replaced."""
        cdef int l
        cdef StreamLayer *L
        if self.busy:  # a step on another thread still reads the old arrays
            raise RuntimeError("this stream is being stepped by another thread; "
                               "give each thread its own Stream")
        for l in range(self.nl):
            d = specs[l]
            self.keep[l] = dict(self.keep[l], **d)
            L = &self.layers[l]
            L.Wih, L.Whh, L.Whr = ptr(d["Wih"]), ptr(d["Whh"]), ptr(d.get("Whr"))
            L.bx, L.bhn = ptr(d["bx"]), ptr(d.get("bhn"))
            L.Wcat = <float *> ptr(d.get("Wcat"))
            L.sec2, L.sec3 = d.get("sec2", 0), d.get("sec3", 0)
            if L.Wcat == NULL:
                L.nchunk = 0

    def step(self, x, int nthreads=1):
        """Advance one step. x: (B, I) or, when B == 1, (I,), C-contiguous in
        the stream's dtype; returns the output buffer (B, P) / (P,), or None
        when x is not in that form (the caller converts and retries)."""
        if type(x) is not np.ndarray:
            return None
        cdef cnp.ndarray a = <cnp.ndarray> x
        cdef int nd = cnp.PyArray_NDIM(a)
        if cnp.PyArray_TYPE(a) != (cnp.NPY_DOUBLE if self.double else cnp.NPY_FLOAT):
            return None
        if not cnp.PyArray_IS_C_CONTIGUOUS(a):
            return None
        if nd == 2:
            if a.shape[0] != self.B or a.shape[1] != self.Ni:
                return None
        elif nd != 1 or self.B != 1 or a.shape[0] != self.Ni:
            return None
        if self.busy:
            raise RuntimeError("this stream is being stepped by another thread; "
                               "give each thread its own Stream")
        cdef void *px = cnp.PyArray_DATA(a)
        cdef void *po = cnp.PyArray_DATA(<cnp.ndarray> self.out2)
        cdef int pair = nthreads > 1 and self.can_pair
        self.busy = 1
        try:
            if self.macs >= stream_nogil_macs:
                with nogil:
                    pyrnn_handoff_entered()
                    self.run(px, po, pair)
                    pyrnn_handoff_wait(handoff_spin_ns)
                pyrnn_handoff_left()
            else:
                self.run(px, po, pair)
        finally:
            self.busy = 0
        return self.out2 if nd == 2 else self.out1


# ---------------------------------------------------------------- plain GEMM

cdef void matmul_rows(floating *tag, bint ta, bint tb, int m, int n, int k, floating alpha,
                      const floating *A, int lda, const floating *B, int ldb, floating beta,
                      floating *C, int ldc, int r0, int r1) noexcept nogil:
    """Rows [r0, r1) of C = alpha op(A) op(B) + beta C."""
    cdef const floating *a = A + r0 if ta else A + <size_t> r0 * lda
    gemm(ta, tb, r1 - r0, n, k, alpha, a, lda, B, ldb, beta, C + <size_t> r0 * ldc, ldc)


def matmul(cnp.ndarray A, cnp.ndarray B, cnp.ndarray C, bint trans_a, bint trans_b,
           double alpha, double beta, int nthreads):
    """C (m, n) = alpha * op(A) @ op(B) + beta * C for C-contiguous 2-D arrays of one
    float dtype (checked by the caller), on pyrnn's threads: rows of C are split
    across OpenMP threads, each calling single-threaded BLAS."""
    cdef int m = C.shape[0], n = C.shape[1]
    cdef int k = A.shape[0] if trans_a else A.shape[1]
    cdef int lda = A.shape[1], ldb = B.shape[1], ldc = n, nt, part
    cdef void *pa = cnp.PyArray_DATA(A)
    cdef void *pb = cnp.PyArray_DATA(B)
    cdef void *pc = cnp.PyArray_DATA(C)
    cdef bint dbl = C.dtype == np.float64
    if m == 0 or n == 0:
        return
    nt = nthreads if <double> m * n * k >= PAR_MIN_WORK * 4 else 1
    nt = max(1, min(nt, m))
    with nogil:
        if nt == 1:
            if dbl:
                matmul_rows(<double *> NULL, trans_a, trans_b, m, n, k, alpha, <double *> pa,
                            lda, <double *> pb, ldb, beta, <double *> pc, ldc, 0, m)
            else:
                matmul_rows(<float *> NULL, trans_a, trans_b, m, n, k, <float> alpha,
                            <float *> pa, lda, <float *> pb, ldb, <float> beta,
                            <float *> pc, ldc, 0, m)
        else:
            for part in prange(nt, schedule='static', num_threads=nt):
                if dbl:
                    matmul_rows(<double *> NULL, trans_a, trans_b, m, n, k, alpha,
                                <double *> pa, lda, <double *> pb, ldb, beta, <double *> pc,
                                ldc, split(m, part, nt), split(m, part + 1, nt))
                else:
                    matmul_rows(<float *> NULL, trans_a, trans_b, m, n, k, <float> alpha,
                                <float *> pa, lda, <float *> pb, ldb, <float> beta,
                                <float *> pc, ldc, split(m, part, nt), split(m, part + 1, nt))

