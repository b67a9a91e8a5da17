/* Request stats in SQLite. A writer thread owns the connection (WAL, synchronous=NORMAL: a
 * commit survives a crash of the process) and drains a bounded in-memory queue in batches, one
 * transaction each, so requests finishing together share a commit. A finished request waits
 * (at most a bound) for its row's commit before its last line goes out (stats_record_sync).
 * When the database cannot be written (locked, full, read-only, missing directory) the rows are
 * kept in a bounded retry buffer and written once it works again; the problem is logged once,
 * and its end once a commit succeeds. */
#ifndef TERN_SERVER_STATS_H
#define TERN_SERVER_STATS_H

#include <stddef.h>

#define STATS_SCHEMA_VERSION 1

/* Timings in ms; negative = not applicable (stored as NULL). */
struct stats_record {
    double received_at; /* unix seconds */
    char request_id[40];
    char endpoint[32];
    char client[64];
    char model[128];
    char status[16]; /* stop, length, cancelled, timeout, error, ok, rejected */
    int http_status;
    char error[256];
    int prompt_tokens, image_tokens, completion_tokens; /* -1 = not a generation */
    double queue_ms, vision_ms, prefill_ms, ttft_ms, decode_ms, total_ms, decode_tokens_per_s;
    long rss_kb, rss_peak_kb;
};

struct stats_sample {
    long rss_kb;
    int active_slots, queued;
    long long tokens_total; /* completion tokens since start; the writer takes deltas */
};

typedef void (*stats_sample_fn)(void *ctx, struct stats_sample *out);

struct stats_options {
    const char *path;
    int queue_max;
    int sample_interval_s;
    int retention_days; /* 0 = keep forever */
    int retry_max;      /* rows kept while the database cannot be written; older are dropped */
    long wal_bytes;     /* journal_size_limit; <= 0: 4 MiB */
};

struct stats;

/* Starts the writer thread. Fails only on OOM/thread errors: an unusable database is
 * retried, not fatal. sample may be NULL (no samples rows). */
struct stats *stats_open(const struct stats_options *o, stats_sample_fn sample, void *ctx,
                         char *err, size_t errlen);
/* Never blocks on I/O; drops (and counts) the record when the queue is full. */
void stats_record(struct stats *s, const struct stats_record *r);
/* Queues the record, then waits until the writer has tried to commit it (committed, or kept
 * for retry), at most timeout_ms. Returns 1 when it is committed, else 0. */
int stats_record_sync(struct stats *s, const struct stats_record *r, int timeout_ms);
long long stats_dropped(struct stats *s);
/* Rows waiting in the retry buffer. */
long long stats_pending(struct stats *s);
/* Tests: caps the database at this many pages (sqlite's max_page_count; 0 = no cap) from the
 * next write on, as a full disk would. */
void stats_set_page_limit(struct stats *s, long pages);
/* Writes everything queued, then returns (used by tests and on shutdown). */
void stats_flush(struct stats *s);
void stats_close(struct stats *s); /* flushes */

struct stats_summary {
    double window_s;
    long long requests, generations, errors;
    double latency_p50_ms, latency_p95_ms, latency_p99_ms; /* total_ms of generations */
    double ttft_p50_ms, ttft_p95_ms, ttft_p99_ms;
    long long prompt_tokens, completion_tokens;
    double decode_tokens_per_s;     /* completion tokens / decode time */
    double throughput_tokens_per_s; /* completion tokens / window */
    long rss_peak_kb;
};

/* Aggregates rows with received_at >= now - window_s (window_s <= 0: all rows). Opens its own
 * read-only connection. Percentiles are computed in SQL (the rows are not loaded). */
int stats_query(const char *path, double window_s, double now, struct stats_summary *out, char *err,
                size_t errlen);
/* A time series over the last window_s seconds in buckets of step_s seconds, aligned on
 * multiples of step_s: the first holds now - window_s, the last now (both partial, so there are
 * up to window_s / step_s + 1 buckets). Requests go in the bucket of
 * their arrival. Negative values: nothing to report in that bucket. */
#define STATS_SERIES_MAX 1440
struct stats_bucket {
    long long requests, errors, generations, completion_tokens;
    double decode_tokens_per_s;     /* tokens after the first / decode time */
    double ttft_ms[3], token_ms[3]; /* p50, p95, p99; token_ms = decode_ms per token after the
                                       first, of generations with more than one token */
    double tokens_per_s;            /* samples: mean generation throughput of the daemon */
    int queued, active_slots;       /* samples: the bucket's largest */
    long rss_kb;                    /* samples: the bucket's largest */
};
struct stats_series {
    double start, step; /* bucket i spans [start + i step, start + (i + 1) step) */
    int n;
    struct stats_bucket *b;
};
/* Bucketing and percentiles run in SQL: the rows never come into memory. Fails (err) on a bad
 * window/step (more than STATS_SERIES_MAX buckets) or an unreadable database. Free with
 * stats_series_free. */
int stats_series_query(const char *path, double window_s, double step_s, double now,
                       struct stats_series *out, char *err, size_t errlen);
void stats_series_free(struct stats_series *s);
/* Nearest-rank percentile (p in 0..100) of n sorted values; 0 when n == 0. */
double stats_percentile(const double *sorted, long n, double p);
/* Current and peak resident set size in kB (from /proc and getrusage). */
void stats_rss(long *rss_kb, long *peak_kb);
double stats_wall_now(void);

#endif
