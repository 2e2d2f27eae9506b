/* What the busy-waits of pair.c and handoff.h share: a pause between polls
 * and a monotonic clock in nanoseconds for their bounds. */
#ifndef PYRNN_SPIN_H
#define PYRNN_SPIN_H

#include <time.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define PYRNN_RELAX() _mm_pause()
#else
#define PYRNN_RELAX() ((void)0)
#endif

static inline long pyrnn_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

#endif
