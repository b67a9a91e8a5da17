/* Metrics registry and the Prometheus text exposition format (version 0.0.4):
 * "# HELP" and "# TYPE" lines, counters ending in _total, histograms as cumulative
 * _bucket{le="..."} series plus _sum and _count. */
#include "metrics.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double bounds[METRICS_NBUCKETS] = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120,
};

struct meta {
    const char *name, *help;
};

static const struct meta hist_meta[HIST_COUNT] = {
    {"ternd_request_duration_seconds", "Time from arrival to the end of a generation request."},
    {"ternd_queue_wait_seconds", "Time a request waited for a slot."},
    {"ternd_time_to_first_token_seconds", "Time from arrival to the first generated token."},
    {"ternd_token_duration_seconds", "Time per generated token (one batched decode step)."},
};

static const struct meta cnt_meta[CNT_COUNT] = {
    {"ternd_prompt_tokens_total", "Prompt tokens prefilled (image tokens included)."},
    {"ternd_completion_tokens_total", "Tokens generated."},
    {"ternd_rejected_queue_full_total", "Requests refused with 503 because the queue was full."},
    {"ternd_cancelled_total", "Requests cancelled (client gone, deadline, shutdown)."},
    {"ternd_image_cache_hits_total", "Pictures whose embeddings came from the image cache."},
    {"ternd_image_cache_misses_total", "Pictures run through the vision encoder."},
    {"ternd_prefix_tokens_reused_total",
     "Prompt tokens not prefilled because the slot's KV cache already held them."},
};

#define MAX_SERIES 128

struct series {
    char endpoint[32];
    int status;
    long long n;
};

struct metrics {
    pthread_mutex_t mu;
    long long buckets[HIST_COUNT][METRICS_NBUCKETS + 1]; /* last = +Inf */
    double sum[HIST_COUNT];
    long long count[HIST_COUNT];
    long long counters[CNT_COUNT];
    struct series req[MAX_SERIES];
    int nreq;
};

struct metrics *metrics_create(void)
{
    struct metrics *m = calloc(1, sizeof *m);
    if (m) pthread_mutex_init(&m->mu, NULL);
    return m;
}

void metrics_destroy(struct metrics *m)
{
    if (!m) return;
    pthread_mutex_destroy(&m->mu);
    free(m);
}

void metrics_observe(struct metrics *m, enum metrics_hist h, double v)
{
    if (!m) return;
    int b = 0;
    while (b < METRICS_NBUCKETS && v > bounds[b])
        b++;
    pthread_mutex_lock(&m->mu);
    m->buckets[h][b]++; /* stored per bucket; made cumulative when rendered */
    m->sum[h] += v;
    m->count[h]++;
    pthread_mutex_unlock(&m->mu);
}

void metrics_add(struct metrics *m, enum metrics_counter c, long long n)
{
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    m->counters[c] += n;
    pthread_mutex_unlock(&m->mu);
}

long long metrics_get(struct metrics *m, enum metrics_counter c)
{
    if (!m) return 0;
    pthread_mutex_lock(&m->mu);
    long long v = m->counters[c];
    pthread_mutex_unlock(&m->mu);
    return v;
}

void metrics_request(struct metrics *m, const char *endpoint, int status)
{
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    int i = 0;
    for (; i < m->nreq; i++)
        if (m->req[i].status == status && strcmp(m->req[i].endpoint, endpoint) == 0) break;
    if (i == m->nreq && m->nreq < MAX_SERIES) {
        snprintf(m->req[i].endpoint, sizeof m->req[i].endpoint, "%s", endpoint);
        m->req[i].status = status;
        m->nreq++;
    }
    if (i < MAX_SERIES) m->req[i].n++;
    pthread_mutex_unlock(&m->mu);
}

struct buf {
    char *p;
    size_t len, cap;
    int oom;
};

static void put(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct buf *b, const char *fmt, ...)
{
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap * 2 + (size_t)n;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p, b->cap = cap;
    }
}

/* One series with its HELP and TYPE lines; type is "gauge" or "counter". */
static void put_one(struct buf *b, const char *name, const char *type, const char *help,
                    long long v)
{
    put(b, "# HELP %s %s\n# TYPE %s %s\n%s %lld\n", name, help, name, type, name, v);
}

static void put_histogram(struct buf *b, const struct metrics *m, int h)
{
    const char *n = hist_meta[h].name;
    put(b, "# HELP %s %s\n# TYPE %s histogram\n", n, hist_meta[h].help, n);
    long long cum = 0;
    for (int k = 0; k < METRICS_NBUCKETS; k++) {
        cum += m->buckets[h][k];
        put(b, "%s_bucket{le=\"%g\"} %lld\n", n, bounds[k], cum);
    }
    cum += m->buckets[h][METRICS_NBUCKETS];
    put(b, "%s_bucket{le=\"+Inf\"} %lld\n%s_sum %.6f\n%s_count %lld\n", n, cum, n, m->sum[h], n,
        m->count[h]);
}

/* What the registry holds; called with m->mu held. */
static void put_registry(struct buf *b, const struct metrics *m)
{
    put(b, "# HELP ternd_requests_total HTTP requests by endpoint and status code.\n"
           "# TYPE ternd_requests_total counter\n");
    for (int i = 0; i < m->nreq; i++)
        put(b, "ternd_requests_total{endpoint=\"%s\",code=\"%d\"} %lld\n", m->req[i].endpoint,
            m->req[i].status, m->req[i].n);
    for (int c = 0; c < CNT_COUNT; c++)
        put_one(b, cnt_meta[c].name, "counter", cnt_meta[c].help, m->counters[c]);
    for (int h = 0; h < HIST_COUNT; h++)
        put_histogram(b, m, h);
}

static void put_gauges(struct buf *b, const struct metrics_gauges *g)
{
    put_one(b, "ternd_active_slots", "gauge", "Slots generating or prefilling.", g->active_slots);
    put_one(b, "ternd_slots", "gauge", "Configured slots.", g->slots);
    put_one(b, "ternd_queue_depth", "gauge", "Requests waiting for a slot.", g->queued);
    put_one(b, "ternd_queue_capacity", "gauge", "Configured queue length.", g->queue_max);
    put_one(b, "ternd_resident_memory_bytes", "gauge", "Resident set size.", g->rss_bytes);
    put_one(b, "ternd_resident_memory_peak_bytes", "gauge", "Peak resident set size.",
            g->rss_peak_bytes);
    put_one(b, "ternd_stats_dropped_total", "counter",
            "Stats records dropped (queue full, or retry buffer full while the database is "
            "unwritable).",
            g->stats_dropped);
    put_one(b, "ternd_stats_pending", "gauge",
            "Stats rows kept for retry while the database cannot be written.", g->stats_pending);
}

char *metrics_render(struct metrics *m, const struct metrics_gauges *g)
{
    struct buf b = {malloc(8192), 0, 8192, 0};
    if (!b.p) return NULL;
    b.p[0] = 0;
    pthread_mutex_lock(&m->mu);
    put_registry(&b, m);
    pthread_mutex_unlock(&m->mu);
    put_gauges(&b, g);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}
