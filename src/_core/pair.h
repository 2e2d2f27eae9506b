/* A second core on demand for latency-bound work at batch 1.
 *
 * One step of a stream at batch 1 is a matrix-vector pass whose weights (2 MB
 * for an LSTM of 256 units) overflow one core's L2: split by hidden units over
 * two cores, each reads half and keeps it in its own L2. An OpenMP team per
 * step would do, but its idle workers spin for a long time after every region
 * and, with many Python threads stepping streams, every caller brings a team
 * of its own. Here there is ONE helper thread for the whole process, taken by
 * one caller at a time (others just run on their own thread); it spins briefly
 * for the next job, then sleeps.
 */
#ifndef PYRNN_PAIR_H
#define PYRNN_PAIR_H

typedef void (*pyrnn_chunk_fn)(void *arg, int chunk);

/* 1 if the caller now owns the helper (release it with pyrnn_pair_release),
 * 0 if another caller has it or it cannot be started: then run alone. */
int pyrnn_pair_acquire(void);
void pyrnn_pair_release(void);
/* How many chunks the helper has run since the process started (tests). */
unsigned long pyrnn_pair_helped(void);
/* Allow (1) or forbid (0) the helper from now on; returns the new setting. */
int pyrnn_pair_enable(int on);
/* Owner only: run fn(arg, c) for every chunk c in [0, nchunks < 65536),
 * shared with the helper (see pair.c); returns when all are done and their
 * writes are visible to the caller. */
void pyrnn_pair_run(pyrnn_chunk_fn fn, void *arg, int nchunks);

#endif
