/* A fixed set of worker threads that run one function on every thread.
 *
 * The engine thread calls pool_run for each matmul; the caller itself works
 * as thread 0, so a pool of n threads starts n - 1 workers, once, in
 * pool_create. Between calls workers spin briefly (a token's matmuls come
 * back to back) and then sleep on a condition variable, so an idle daemon
 * costs no CPU. One caller at a time: pool_run is not reentrant. */
#ifndef TERN_ENGINE_POOL_H
#define TERN_ENGINE_POOL_H

#include <stddef.h>

typedef struct pool pool;

/* Called once on every thread: ith in [0, nth). */
typedef void (*pool_fn)(void *ctx, int ith, int nth);

/* n_threads <= 0 means one per online CPU. NULL on failure (err filled). */
pool *pool_create(int n_threads, char *err, size_t errlen);
void pool_destroy(pool *p); /* NULL is fine */

int pool_threads(const pool *p);

/* Runs fn(ctx, ith, nth) on all threads and returns when every one is done. */
void pool_run(pool *p, pool_fn fn, void *ctx);

/* For fn that take their work from a shared counter, so that any one
 * thread may end up doing all of it: runs fn on the caller and on each
 * worker that starts before the caller's own call returns, and returns
 * once those are done; a worker that comes later skips this run. So a
 * worker the OS has descheduled costs nothing here, where pool_run would
 * wait for it. ith is then no share of the work, only a thread's name. */
void pool_run_dynamic(pool *p, pool_fn fn, void *ctx);

#endif
