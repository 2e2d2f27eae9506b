/* The GIL between Python threads that step streams.
 *
 * A stream step releases the GIL for its compiled work. When it is done and
 * another stepping thread holds the GIL (it has left a step and runs the
 * Python before its next one, typically a microsecond), CPython's take_gil
 * would put this thread to sleep and the holder's release would have to wake
 * it: a futex wake-up per step, as long as a short step itself on a VM.
 * Instead the finished thread spins until that holder enters its next step
 * (or a short bound passes), so that it then finds the GIL free.
 *
 * `holder` names the thread that last left a step while holding the GIL, or 0
 * once it has released the GIL again. It is a hint only: a wrong value costs
 * a spin of at most the bound or a sleep in take_gil, never correctness.
 * One thread spins at a time (`spinner`): with many stepping threads the
 * rest sleep as before, so spinners never crowd out the holder.
 */
#ifndef PYRNN_HANDOFF_H
#define PYRNN_HANDOFF_H

#include <pthread.h>
#include <stdatomic.h>
#include "spin.h"

static _Atomic unsigned long pyrnn_gil_holder __attribute__((aligned(64)));
static atomic_int pyrnn_gil_spinner __attribute__((aligned(64)));

static inline unsigned long pyrnn_handoff_self(void)
{
    return (unsigned long)pthread_self();
}

/* GIL held, a step just returned: this thread now runs Python. */
static inline void pyrnn_handoff_left(void)
{
    atomic_store_explicit(&pyrnn_gil_holder, pyrnn_handoff_self(), memory_order_release);
}

/* GIL just released at the start of a step: clear the mark if it is ours. */
static inline void pyrnn_handoff_entered(void)
{
    unsigned long me = pyrnn_handoff_self();
    atomic_compare_exchange_strong_explicit(&pyrnn_gil_holder, &me, 0UL,
                                            memory_order_release, memory_order_relaxed);
}

/* Before taking the GIL back: wait up to max_ns while another stepping
 * thread holds it. */
static inline void pyrnn_handoff_wait(long max_ns)
{
    unsigned long me = pyrnn_handoff_self(), h;
    long t0 = 0;
    int n = 0, idle = 0;
    h = atomic_load_explicit(&pyrnn_gil_holder, memory_order_acquire);
    if (h == 0 || h == me || max_ns <= 0
        || !atomic_compare_exchange_strong(&pyrnn_gil_spinner, &idle, 1))
        return;
    while ((h = atomic_load_explicit(&pyrnn_gil_holder, memory_order_acquire)) != 0 && h != me) {
        PYRNN_RELAX();
        if ((++n & 15) == 0) {
            long t = pyrnn_now_ns();
            if (t0 == 0)
                t0 = t;
            else if (t - t0 > max_ns)
                break;
        }
    }
    atomic_store_explicit(&pyrnn_gil_spinner, 0, memory_order_release);
}

#endif
