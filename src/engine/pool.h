/* A fixed set of worker threads that share out one function's n shares.
 *
 * The engine thread calls pool_run for each matmul; the caller itself
 * works, so a pool of n threads starts n - 1 workers, once, in pool_create.
 * A call has as many shares as the pool has threads, and every thread,
 * the caller first, claims shares until none is left: a worker that is
 * late (descheduled on a shared machine, or still waking) finds its share
 * done by the others, and the call waits only for shares already running,
 * never for a thread that has not started. Between calls workers spin
 * briefly (a token's matmuls come back to back) and then sleep on a
 * condition variable, so an idle daemon costs no CPU. One caller at a time:
 * pool_run is not reentrant. */
#ifndef TERN_ENGINE_POOL_H
#define TERN_ENGINE_POOL_H

#include <stddef.h>

typedef struct pool pool;

/* Called once for every share ith in [0, nth), each on some thread (one
 * thread may run several, one after another): ith names the share, so
 * per-share scratch indexed by ith is never used twice at once. A share
 * must not wait for another share (no barriers inside fn). */
typedef void (*pool_fn)(void *ctx, int ith, int nth);

/* n_threads <= 0 means one per online CPU. NULL on failure (err filled). */
pool *pool_create(int n_threads, char *err, size_t errlen);
void pool_destroy(pool *p); /* NULL is fine */

int pool_threads(const pool *p);

/* Runs fn(ctx, ith, nth) for every ith < nth = pool_threads(p) and returns
 * when every one is done. */
void pool_run(pool *p, pool_fn fn, void *ctx);

#endif
