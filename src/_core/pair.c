#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include "pair.h"
#include "spin.h"

/* how long the helper keeps spinning for the next job before it sleeps: long
 * enough to bridge the Python between two steps of a stream, short enough not
 * to steal a core from other work for long */
#define HELPER_SPIN_NS 200000L
/* how long the owner spins on an unfinished part before yielding its core
 * (the helper was descheduled: let it run) */
#define OWNER_SPIN_NS 50000L
/* when the owner waited on the helper for over twice as long as its own part
 * took, and longer than a scheduler hiccup, the helper was preempted (its core
 * is busy with other work): run alone for a while rather than wait again */
#define TROUBLE_FLOOR_NS 100000L
#define BACKOFF_MIN_NS 1000000L
#define BACKOFF_MAX_NS 64000000L

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static atomic_int owned;          /* 1 while a caller owns the helper */
static atomic_int started;        /* helper thread running */
static atomic_int failed;         /* could not start one: never try again */
static atomic_int sleeping;
static atomic_int enabled = 1;
/* pyrnn_now_ns() before which no job is shared; doubles with each trouble in a row */
static atomic_long backoff_until __attribute__((aligned(128)));
static atomic_long backoff_ns;
/* The current job's chunks, claimed from both ends: the owner takes them
 * upward from 0, the helper downward from the top, so without disturbance each
 * core keeps about the same half (and its weights in its L2) step after step;
 * a slow or absent helper just leaves more to the owner.
 * word = job (32 bits) | next low chunk (16) | one past the high chunk (16).
 * Each side writes its own cache line and reads the other's once a job: the
 * owner posts (posted, word, fn, arg: the helper's one miss brings all of it)
 * with chunk 0 already its own, so it starts on it at once; the helper stores
 * how many chunks of which job it finished. A step at LSTM H = 128 had spent
 * 0.4-0.5 us before the owner's first chunk and 0.3 us after the helper's last. */
static struct {
    atomic_ulong posted;          /* job counter */
    _Atomic unsigned long long word;
    pyrnn_chunk_fn fn;
    void *arg;
} __attribute__((aligned(128))) jb;
static struct {
    /* job (32 bits) | chunks of it the helper finished (32) */
    _Atomic unsigned long long done;
    atomic_ulong chunks;          /* all chunks it ever ran (tests) */
} __attribute__((aligned(128))) helper;
/* the owners' copy of posted (owners follow each other through `owned`), so
 * posting reads no line the helper has touched */
static struct {
    unsigned long posted;
} __attribute__((aligned(128))) mine;
static unsigned long first_seen;  /* jobs posted before the helper started */

static void *helper_main(void *unused)
{
    (void)unused;
    unsigned long seen = first_seen;
    for (;;) {
        unsigned long p;
        long t0 = 0;
        int n = 0;
        while ((p = atomic_load_explicit(&jb.posted, memory_order_acquire)) == seen) {
            PYRNN_RELAX();
            if ((++n & 63) == 0) {
                long t = pyrnn_now_ns();
                if (t0 == 0) t0 = t;
                else if (t - t0 > HELPER_SPIN_NS) {
                    pthread_mutex_lock(&mu);
                    atomic_store(&sleeping, 1);
                    while (atomic_load(&jb.posted) == seen)
                        pthread_cond_wait(&cv, &mu);
                    atomic_store(&sleeping, 0);
                    pthread_mutex_unlock(&mu);
                    t0 = 0;
                }
            }
        }
        seen = p;
        unsigned long long id = (unsigned long long)(p & 0xffffffffUL) << 32, ndone = 0;
        unsigned long long w = atomic_load_explicit(&jb.word, memory_order_relaxed);
        for (;;) {
            unsigned lo = (w >> 16) & 0xffff, hi = w & 0xffff;
            if ((w & ~0xffffffffULL) != id || lo >= hi)
                break;
            if (atomic_compare_exchange_weak(&jb.word, &w, (w & ~0xffffULL) | (hi - 1))) {
                jb.fn(jb.arg, (int)hi - 1);
                atomic_store_explicit(&helper.done, id | ++ndone, memory_order_release);
                /* a locked add although the helper is its only writer: it also
                 * drains the store of `done` at once (a plain store here was
                 * 3-8% slower at LSTM 100:1:128:128) */
                atomic_fetch_add_explicit(&helper.chunks, 1, memory_order_relaxed);
                w = atomic_load_explicit(&jb.word, memory_order_relaxed);
            }
        }
    }
    return NULL;
}

/* A forked child has no helper thread (threads do not survive fork). */
static void after_fork_child(void)
{
    pthread_mutex_init(&mu, NULL);
    pthread_cond_init(&cv, NULL);
    atomic_store(&owned, 0);
    atomic_store(&started, 0);
    atomic_store(&sleeping, 0);
    atomic_store(&jb.word, 0);
    atomic_store(&helper.done, 0);
}

static int start_helper(void)
{
    static pthread_mutex_t start_mu = PTHREAD_MUTEX_INITIALIZER;
    static int atfork_done;
    int ok = 1;
    pthread_mutex_lock(&start_mu);
    if (!atomic_load(&started) && !atomic_load(&failed)) {
        pthread_t th;
        pthread_attr_t at;
        if (!atfork_done) {
            pthread_atfork(NULL, NULL, after_fork_child);
            atfork_done = 1;
        }
        first_seen = atomic_load(&jb.posted);
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&at, 1 << 20);
        if (pthread_create(&th, &at, helper_main, NULL) == 0)
            atomic_store(&started, 1);
        else
            atomic_store(&failed, 1);
        pthread_attr_destroy(&at);
    }
    ok = atomic_load(&started);
    pthread_mutex_unlock(&start_mu);
    return ok;
}

int pyrnn_pair_acquire(void)
{
    int expect = 0;
    if (atomic_load(&failed) || !atomic_load(&enabled))
        return 0;
    if (pyrnn_now_ns() < atomic_load_explicit(&backoff_until, memory_order_relaxed))
        return 0;
    if (!atomic_compare_exchange_strong(&owned, &expect, 1))
        return 0;
    if (!atomic_load(&started) && !start_helper()) {
        atomic_store(&owned, 0);
        return 0;
    }
    return 1;
}

int pyrnn_pair_enable(int on)
{
    atomic_store(&enabled, on != 0);
    return on != 0;
}

unsigned long pyrnn_pair_helped(void)
{
    return atomic_load_explicit(&helper.chunks, memory_order_relaxed);
}

void pyrnn_pair_release(void)
{
    atomic_store(&owned, 0);
}

void pyrnn_pair_run(pyrnn_chunk_fn fn, void *arg, int nchunks)
{
    long t_start = pyrnn_now_ns();
    if (t_start < atomic_load_explicit(&backoff_until, memory_order_relaxed)) {
        for (int c = 0; c < nchunks; c++)
            fn(arg, c);
        return;
    }
    unsigned long p = ++mine.posted;
    unsigned long long job = (unsigned long long)(p & 0xffffffffUL) << 32;
    jb.fn = fn;
    jb.arg = arg;
    atomic_store_explicit(&jb.word, job | (1ULL << 16) | (unsigned)nchunks, memory_order_relaxed);
    /* release, not seq_cst: no wait for the line to come over. The load of
     * `sleeping` may then pass the store, so a helper just going to sleep can
     * miss this job: it claims none of it, the owner runs all of it, and the
     * next post wakes the helper. */
    atomic_store_explicit(&jb.posted, p, memory_order_release);
    if (atomic_load_explicit(&sleeping, memory_order_relaxed)) {
        pthread_mutex_lock(&mu);
        pthread_cond_signal(&cv);
        pthread_mutex_unlock(&mu);
    }
    fn(arg, 0);
    unsigned long long w = atomic_load_explicit(&jb.word, memory_order_relaxed);
    unsigned lo, hi;
    for (;;) {
        lo = (w >> 16) & 0xffff;
        hi = w & 0xffff;
        if (lo >= hi)
            break;
        if (atomic_compare_exchange_weak(&jb.word, &w, job | ((unsigned long long)(lo + 1) << 16) | hi)) {
            fn(arg, (int)lo);
            w = atomic_load_explicit(&jb.word, memory_order_relaxed);
        }
    }
    /* no chunk is left to claim: wait for those the helper took */
    unsigned long long theirs = job | (unsigned)(nchunks - (int)hi);
    if (hi == (unsigned)nchunks || atomic_load_explicit(&helper.done, memory_order_acquire) == theirs) {
        if (hi < (unsigned)nchunks)
            atomic_store_explicit(&backoff_ns, 0, memory_order_relaxed);
        return;
    }
    long t_own = pyrnn_now_ns(), t = t_own;
    int n = 0;
    while (atomic_load_explicit(&helper.done, memory_order_acquire) != theirs) {
        PYRNN_RELAX();
        if ((++n & 63) == 0) {
            t = pyrnn_now_ns();
            if (t - t_own > OWNER_SPIN_NS) sched_yield();
        }
    }
    t = pyrnn_now_ns();
    long own = t_own - t_start;
    if (t - t_own > (2 * own > TROUBLE_FLOOR_NS ? 2 * own : TROUBLE_FLOOR_NS)) {
        long b = atomic_load_explicit(&backoff_ns, memory_order_relaxed);
        b = b == 0 ? BACKOFF_MIN_NS : (2 * b > BACKOFF_MAX_NS ? BACKOFF_MAX_NS : 2 * b);
        atomic_store_explicit(&backoff_ns, b, memory_order_relaxed);
        atomic_store_explicit(&backoff_until, t + b, memory_order_relaxed);
    } else {
        atomic_store_explicit(&backoff_ns, 0, memory_order_relaxed);
    }
}
