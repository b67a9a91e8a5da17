/* Prometheus metrics: a fixed set of counters, gauges and histograms, updated lock-free-ish
 * under one small mutex, rendered in the text exposition format. */
#ifndef TERN_SERVER_METRICS_H
#define TERN_SERVER_METRICS_H

#include <stddef.h>

enum metrics_hist {
    HIST_REQUEST_SECONDS, /* whole request, arrival to done */
    HIST_QUEUE_SECONDS,   /* arrival to admission into a slot */
    HIST_TTFT_SECONDS,    /* arrival to first token */
    HIST_TOKEN_SECONDS,   /* time per generated token (per step) */
    HIST_COUNT
};

enum metrics_counter {
    CNT_PROMPT_TOKENS,
    CNT_COMPLETION_TOKENS,
    CNT_REJECTED_QUEUE_FULL,
    CNT_CANCELLED,
    CNT_IMAGE_CACHE_HITS,
    CNT_IMAGE_CACHE_MISSES,
    CNT_PREFIX_TOKENS_REUSED,
    CNT_COUNT
};

#define METRICS_MAX_STATUS 24
#define METRICS_NBUCKETS 14

struct metrics;

/* The gauges are read at render time through this callback (scheduler state, RSS). */
struct metrics_gauges {
    int active_slots, slots, queued, queue_max;
    long rss_bytes, rss_peak_bytes;
    long long stats_dropped;
    long long stats_pending;
};

struct metrics *metrics_create(void);
void metrics_destroy(struct metrics *m);
void metrics_observe(struct metrics *m, enum metrics_hist h, double value);
void metrics_add(struct metrics *m, enum metrics_counter c, long long n);
long long metrics_get(struct metrics *m, enum metrics_counter c);
/* One finished HTTP request: endpoint label (e.g. "/generate") and status code. */
void metrics_request(struct metrics *m, const char *endpoint, int status);
/* Renders into a malloc'd string (caller frees); NULL on OOM. */
char *metrics_render(struct metrics *m, const struct metrics_gauges *g);

#endif
