/* Thread pool: one 64-bit word announces a call and hands out its shares
 * (generation, share count, next share), a counter collects finished
 * shares; both on their own cache lines so threads claiming from one do not
 * slow the writer of the other. See pool.h for why shares, not threads. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/pool.h"

/* Polls before sleeping (72 us measured on an AMD EPYC, ~18 ns a pause): long
 * enough to cover the gap between two matmuls of one token, short enough
 * not to burn a core while the daemon idles or the machine is shared. */
#define POOL_SPIN 4000

#define POOL_MAX_THREADS 0xffff /* a share index fits the word's 16-bit fields */

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ volatile("yield")
#else
#define cpu_relax() ((void)0)
#endif

/* The work word: generation << 32 | shares << 16 | next unclaimed share. */
#define W_GEN(w) ((uint32_t)((w) >> 32))
#define W_COUNT(w) ((int)(((w) >> 16) & 0xffff))
#define W_NEXT(w) ((int)((w)&0xffff))

struct pool {
    _Alignas(64) _Atomic uint64_t work;
    _Alignas(64) atomic_int done; /* shares of the current call finished */
    _Alignas(64) pool_fn fn;      /* written before work publishes a call */
    void *ctx;
    int n;
    uint32_t gen;            /* the caller's: last generation published */
    atomic_int sleepers;     /* workers asleep (or about to be) on wake */
    atomic_bool caller_wait; /* the caller asleep (or about to be) on done_cv */
    atomic_bool stop;
    pthread_mutex_t mu;
    pthread_cond_t wake;    /* workers wait here for a new generation */
    pthread_cond_t done_cv; /* the caller waits here for the last share */
    pthread_t *threads;
};

/* Claim and run shares of generation gen until none is left (or a newer
 * call replaced it). A successful claim happens while the caller still waits
 * for that share, so fn and ctx are the call's own: the acquire of the claim
 * pairs with the release that published them. */
static void run_shares(pool *p, uint32_t gen)
{
    uint64_t w = atomic_load_explicit(&p->work, memory_order_relaxed);
    for (;;) {
        if (W_GEN(w) != gen || W_NEXT(w) >= W_COUNT(w)) return;
        if (!atomic_compare_exchange_weak_explicit(&p->work, &w, w + 1, memory_order_acquire,
                                                   memory_order_relaxed))
            continue; /* w was reloaded */
        int n = W_COUNT(w);
        p->fn(p->ctx, W_NEXT(w), n);
        if (atomic_fetch_add_explicit(&p->done, 1, memory_order_seq_cst) + 1 == n &&
            atomic_load_explicit(&p->caller_wait, memory_order_seq_cst)) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done_cv);
            pthread_mutex_unlock(&p->mu);
        }
        w = atomic_load_explicit(&p->work, memory_order_relaxed);
    }
}

static void *worker_main(void *arg)
{
    pool *p = arg;
    uint32_t seen = 0;
    for (;;) {
        uint64_t w = atomic_load_explicit(&p->work, memory_order_acquire);
        for (int i = 0; W_GEN(w) == seen && i < POOL_SPIN; i++) {
            cpu_relax();
            w = atomic_load_explicit(&p->work, memory_order_acquire);
        }
        if (W_GEN(w) == seen) {
            /* sleepers is raised before the last look at work, and the caller
             * stores work before it reads sleepers: one of them sees the other */
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add_explicit(&p->sleepers, 1, memory_order_seq_cst);
            while (W_GEN(w = atomic_load_explicit(&p->work, memory_order_seq_cst)) == seen)
                pthread_cond_wait(&p->wake, &p->mu);
            atomic_fetch_sub_explicit(&p->sleepers, 1, memory_order_relaxed);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load_explicit(&p->stop, memory_order_acquire)) return NULL;
        seen = W_GEN(w);
        run_shares(p, seen);
    }
}

pool *pool_create(int n_threads, char *err, size_t errlen)
{
    if (n_threads <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = c > 0 ? (int)c : 1;
    }
    if (n_threads > POOL_MAX_THREADS) n_threads = POOL_MAX_THREADS;
    pool *p = aligned_alloc(64, (sizeof *p + 63) / 64 * 64);
    if (!p) {
        snprintf(err, errlen, "pool: out of memory");
        return NULL;
    }
    memset(p, 0, sizeof *p);
    p->n = n_threads;
    atomic_init(&p->work, 0);
    atomic_init(&p->done, 0);
    atomic_init(&p->sleepers, 0);
    atomic_init(&p->caller_wait, false);
    atomic_init(&p->stop, false);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    p->threads = calloc((size_t)n_threads, sizeof *p->threads);
    if (!p->threads) {
        snprintf(err, errlen, "pool: out of memory");
        p->n = 1;
        pool_destroy(p);
        return NULL;
    }
    for (int i = 1; i < n_threads; i++) {
        int rc = pthread_create(&p->threads[i], NULL, worker_main, p);
        if (rc != 0) {
            snprintf(err, errlen, "pool: cannot start thread %d of %d (error %d)", i, n_threads,
                     rc);
            p->n = i; /* destroy joins the ones that started */
            pool_destroy(p);
            return NULL;
        }
    }
    return p;
}

void pool_destroy(pool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store_explicit(&p->stop, true, memory_order_release);
    /* a generation with no shares: every worker wakes, sees stop, leaves */
    atomic_store_explicit(&p->work, (uint64_t)(p->gen + 1) << 32, memory_order_seq_cst);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++)
        pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done_cv);
    free(p->threads);
    free(p);
}

int pool_threads(const pool *p)
{
    return p->n;
}

void pool_run(pool *p, pool_fn fn, void *ctx)
{
    int n = p->n;
    if (n == 1) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    p->gen++;
    /* the store publishes fn, ctx and done to every claim of this generation */
    atomic_store_explicit(&p->work, (uint64_t)p->gen << 32 | (uint64_t)n << 16,
                          memory_order_seq_cst);
    if (atomic_load_explicit(&p->sleepers, memory_order_seq_cst) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mu);
    }

    run_shares(p, p->gen);

    /* every share is claimed; wait only for those still running elsewhere */
    for (int i = 0; i < POOL_SPIN; i++) {
        if (atomic_load_explicit(&p->done, memory_order_acquire) == n) return;
        cpu_relax();
    }
    pthread_mutex_lock(&p->mu);
    atomic_store_explicit(&p->caller_wait, true, memory_order_seq_cst);
    while (atomic_load_explicit(&p->done, memory_order_seq_cst) != n)
        pthread_cond_wait(&p->done_cv, &p->mu);
    atomic_store_explicit(&p->caller_wait, false, memory_order_relaxed);
    pthread_mutex_unlock(&p->mu);
}
