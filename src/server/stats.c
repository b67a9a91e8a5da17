/* The stats writer thread and the aggregate queries over its tables. */
#include "stats.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "log.h"

struct stats {
    struct stats_options o;
    char path[4096];
    stats_sample_fn sample;
    void *sample_ctx;

    pthread_mutex_t mu;
    pthread_cond_t cv, flushed;
    struct stats_record *q; /* ring */
    int qhead, qlen;
    long long dropped, pending;
    int stop;
    long long seq_in, seq_done; /* records accepted / tried (written or kept), for flush, sync */
    long long seq_committed;    /* records accepted before the last successful commit */
    long page_limit;            /* tests: max_page_count (0 = none) */
    long pages_applied;         /* writer: the max_page_count the connection has */
    int page_bytes;             /* writer: the database's page size */

    sqlite3 *db; /* writer thread only */
    int failing; /* logged the current failure already */
    double next_retry;
    double next_sample, last_retention;
    long long last_tokens;
    pthread_t thread;
};

/* The rows percentiles are taken over: generations that ended normally. The same text in the
 * partial indexes and the queries, so SQLite matches them. */
#define GEN_ROWS "completion_tokens IS NOT NULL AND status IN ('stop','length')"

static const char *schema =
    "CREATE TABLE IF NOT EXISTS requests("
    " id INTEGER PRIMARY KEY, request_id TEXT, received_at REAL NOT NULL, endpoint TEXT,"
    " client TEXT, model TEXT, status TEXT, http_status INTEGER, error TEXT,"
    " prompt_tokens INTEGER, image_tokens INTEGER, completion_tokens INTEGER,"
    " queue_ms REAL, vision_ms REAL, prefill_ms REAL, ttft_ms REAL, decode_ms REAL,"
    " total_ms REAL, decode_tokens_per_s REAL, rss_kb INTEGER, rss_peak_kb INTEGER);"
    "CREATE INDEX IF NOT EXISTS requests_received_at ON requests(received_at);"
    /* Generations in value order, so a percentile of a large window is an index walk of at most
     * k entries (received_at in the index: no table lookups); see kth_value. */
    "CREATE INDEX IF NOT EXISTS requests_gen_total_ms ON requests(total_ms, received_at)"
    " WHERE " GEN_ROWS ";"
    "CREATE INDEX IF NOT EXISTS requests_gen_ttft_ms ON requests(ttft_ms, received_at)"
    " WHERE " GEN_ROWS ";"
    "CREATE TABLE IF NOT EXISTS samples("
    " ts REAL NOT NULL, rss_kb INTEGER, active_slots INTEGER, queued INTEGER, tokens_per_s REAL);"
    "CREATE INDEX IF NOT EXISTS samples_ts ON samples(ts);";

double stats_wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void stats_rss(long *rss_kb, long *peak_kb)
{
    long pages = 0, resident = 0;
    FILE *fp = fopen("/proc/self/statm", "r");
    if (fp) {
        if (fscanf(fp, "%ld %ld", &pages, &resident) != 2) resident = 0;
        fclose(fp);
    }
    *rss_kb = resident * 4; /* Linux pages are 4 KiB on every target we build for */
    struct rusage ru;
    *peak_kb = getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_maxrss : 0;
}

double stats_percentile(const double *sorted, long n, double p)
{
    if (n <= 0) return 0;
    long rank = (long)ceil(p / 100.0 * (double)n);
    if (rank < 1) rank = 1;
    if (rank > n) rank = n;
    return sorted[rank - 1];
}

/* ---- writer ---- */

static void fail(struct stats *s, const char *what)
{
    if (!s->failing)
        log_error("stats: %s: %s (rows are kept, up to %d, and written when it works again)",
                  s->path, what, s->o.retry_max);
    s->failing = 1;
    if (s->db) sqlite3_close(s->db);
    s->db = NULL;
}

/* SQLite's autocheckpoint copies the WAL back every STATS_CHECKPOINT_PAGES pages but leaves
 * the file at its size until the next write restarts it, and only then applies
 * journal_size_limit: the file stayed above the limit whenever the last commit was the one
 * that checkpointed. So the checkpoint is ours: where the file has grown past wal_bytes it
 * truncates the file at once; below, it is the plain passive one. */
#define STATS_CHECKPOINT_PAGES 1000
#define STATS_BUSY_MS 2000 /* how long a statement waits for a lock */

static long wal_limit(const struct stats *s)
{
    return s->o.wal_bytes > 0 ? s->o.wal_bytes : 4L << 20;
}

static int wal_hook(void *arg, sqlite3 *db, const char *name, int pages)
{
    const struct stats *s = arg;
    if (pages < STATS_CHECKPOINT_PAGES) return SQLITE_OK;
    /* a WAL frame is a page and its 24-byte header */
    if ((long long)pages * (s->page_bytes + 24) <= wal_limit(s)) {
        (void)sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        return SQLITE_OK;
    }
    /* Truncating waits for readers of older snapshots (a /api/stats query); rather than hold
     * the rows behind this commit, give up at once and try again after the next commit. */
    sqlite3_busy_timeout(db, 0);
    (void)sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
    sqlite3_busy_timeout(db, STATS_BUSY_MS);
    return SQLITE_OK;
}

static int db_open(struct stats *s)
{
    if (s->db) return 0;
    if (sqlite3_open_v2(s->path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        fail(s, s->db ? sqlite3_errmsg(s->db) : "cannot open");
        return -1;
    }
    sqlite3_busy_timeout(s->db, STATS_BUSY_MS);
    sqlite3_stmt *st;
    int version = -1;
    if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW) version = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
    }
    if (version < 0) {
        fail(s, sqlite3_errmsg(s->db));
        return -1;
    }
    if (version > STATS_SCHEMA_VERSION) {
        fail(s, "database schema is newer than this ternd");
        return -1;
    }
    char *msg = NULL, pragmas[192];
    /* NORMAL: in WAL mode a commit is in the OS before the call returns (a crash of ternd keeps
     * it; only a power cut may lose the last ones). The WAL is truncated after checkpoints. */
    snprintf(pragmas, sizeof pragmas, "PRAGMA synchronous=NORMAL; PRAGMA journal_size_limit=%ld",
             wal_limit(s));
    s->pages_applied = 0;
    if (sqlite3_exec(s->db, "PRAGMA journal_mode=WAL", NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(s->db, pragmas, NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(s->db, schema, NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(s->db, "PRAGMA user_version=1", NULL, NULL, &msg) != SQLITE_OK) {
        char m[256];
        snprintf(m, sizeof m, "%s", msg ? msg : sqlite3_errmsg(s->db));
        sqlite3_free(msg);
        fail(s, m);
        return -1;
    }
    s->page_bytes = 4096;
    if (sqlite3_prepare_v2(s->db, "PRAGMA page_size", -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW) s->page_bytes = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_wal_hook(s->db, wal_hook, s);
    /* "writable again" only after a commit: an open can succeed on a full disk. */
    return 0;
}

static void bind_ms(sqlite3_stmt *st, int i, double v)
{
    if (v < 0)
        sqlite3_bind_null(st, i);
    else
        sqlite3_bind_double(st, i, v);
}

static void bind_count(sqlite3_stmt *st, int i, long long v)
{
    if (v < 0)
        sqlite3_bind_null(st, i);
    else
        sqlite3_bind_int64(st, i, v);
}

static int insert_record(sqlite3 *db, const struct stats_record *r)
{
    static const char *sql =
        "INSERT INTO requests(request_id, received_at, endpoint, client, model, status,"
        " http_status, error, prompt_tokens, image_tokens, completion_tokens, queue_ms,"
        " vision_ms, prefill_ms, ttft_ms, decode_ms, total_ms, decode_tokens_per_s, rss_kb,"
        " rss_peak_kb) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return -1;
    sqlite3_bind_text(st, 1, r->request_id, -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 2, r->received_at);
    sqlite3_bind_text(st, 3, r->endpoint, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, r->client, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, r->model, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, r->status, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 7, r->http_status);
    if (r->error[0])
        sqlite3_bind_text(st, 8, r->error, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 8);
    bind_count(st, 9, r->prompt_tokens);
    bind_count(st, 10, r->image_tokens);
    bind_count(st, 11, r->completion_tokens);
    bind_ms(st, 12, r->queue_ms);
    bind_ms(st, 13, r->vision_ms);
    bind_ms(st, 14, r->prefill_ms);
    bind_ms(st, 15, r->ttft_ms);
    bind_ms(st, 16, r->decode_ms);
    bind_ms(st, 17, r->total_ms);
    bind_ms(st, 18, r->decode_tokens_per_s);
    sqlite3_bind_int64(st, 19, r->rss_kb);
    sqlite3_bind_int64(st, 20, r->rss_peak_kb);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

static int insert_sample(sqlite3 *db, double ts, const struct stats_sample *x, double tps)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db,
                           "INSERT INTO samples(ts, rss_kb, active_slots, queued, tokens_per_s)"
                           " VALUES(?,?,?,?,?)",
                           -1, &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_double(st, 1, ts);
    sqlite3_bind_int64(st, 2, x->rss_kb);
    sqlite3_bind_int(st, 3, x->active_slots);
    sqlite3_bind_int(st, 4, x->queued);
    sqlite3_bind_double(st, 5, tps);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* Writes a batch in one transaction. Returns records that could not be written. */
static int write_batch(struct stats *s, const struct stats_record *r, int n,
                       const struct stats_sample *sample, double sample_tps)
{
    if (db_open(s) != 0) return n;
    pthread_mutex_lock(&s->mu);
    long pages = s->page_limit;
    pthread_mutex_unlock(&s->mu);
    if (pages != s->pages_applied) {
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA max_page_count=%ld", pages > 0 ? pages : 1073741823L);
        if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) != SQLITE_OK) goto bad;
        s->pages_applied = pages;
    }
    if (sqlite3_exec(s->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) goto bad;
    for (int i = 0; i < n; i++)
        if (insert_record(s->db, &r[i]) != 0) goto rollback;
    if (sample && insert_sample(s->db, stats_wall_now(), sample, sample_tps) != 0) goto rollback;
    double now = stats_wall_now();
    if (s->o.retention_days > 0 && now - s->last_retention > 3600) {
        char sql[160];
        double cutoff = now - s->o.retention_days * 86400.0;
        snprintf(sql, sizeof sql,
                 "DELETE FROM requests WHERE received_at < %.3f;"
                 "DELETE FROM samples WHERE ts < %.3f",
                 cutoff, cutoff);
        if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) != SQLITE_OK) goto rollback;
        s->last_retention = now;
    }
    if (sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) goto rollback;
    if (s->failing) log_info("stats: %s writable again (%d rows written)", s->path, n);
    s->failing = 0;
    return 0;
rollback : {
    char m[256];
    snprintf(m, sizeof m, "%s", sqlite3_errmsg(s->db));
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    fail(s, m);
}
    return n;
bad:
    fail(s, sqlite3_errmsg(s->db));
    return n;
}

static void abs_deadline(struct timespec *ts, double wall)
{
    ts->tv_sec = (time_t)wall;
    ts->tv_nsec = (long)((wall - floor(wall)) * 1e9);
}

/* Next wake-up: a sample, or a retry of kept rows. */
static double next_wake(const struct stats *s, int kept)
{
    double t = s->sample ? s->next_sample : 1e300;
    if (kept && s->next_retry < t) t = s->next_retry;
    return t;
}

/* batch[0..kept) are rows that failed before (oldest first); new ones are appended after them.
 * A failed write keeps them all, past retry_max dropping (and counting) the oldest. */
static void *writer_main(void *arg)
{
    struct stats *s = arg;
    int cap = s->o.queue_max, kmax = s->o.retry_max > 0 ? s->o.retry_max : 0;
    struct stats_record *batch = malloc((size_t)(cap + kmax) * sizeof *batch);
    int kept = 0;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->stop && s->qlen == 0 && stats_wall_now() < next_wake(s, kept)) {
            double t = next_wake(s, kept);
            if (t < 1e300) {
                struct timespec ts;
                abs_deadline(&ts, t);
                pthread_cond_timedwait(&s->cv, &s->mu, &ts);
            } else {
                pthread_cond_wait(&s->cv, &s->mu);
            }
        }
        int n = 0;
        while (s->qlen > 0 && batch && n < cap) {
            batch[kept + n++] = s->q[s->qhead];
            s->qhead = (s->qhead + 1) % cap;
            s->qlen--;
        }
        long long seq = s->seq_done + n;
        int stop = s->stop;
        pthread_mutex_unlock(&s->mu);

        struct stats_sample smp, *sp = NULL;
        double tps = 0;
        double now = stats_wall_now();
        if (s->sample && now >= s->next_sample) {
            s->sample(s->sample_ctx, &smp);
            tps = (double)(smp.tokens_total - s->last_tokens) / s->o.sample_interval_s;
            s->last_tokens = smp.tokens_total;
            s->next_sample = now + s->o.sample_interval_s;
            sp = &smp;
        }
        /* While failing, new rows join the kept ones and wait for the next retry (once a
         * second), so a broken disk is not hammered once per request. */
        int attempt = sp || stop || ((kept + n) && (!s->failing || now >= s->next_retry));
        int lost = 0, committed = 0;
        if (attempt && batch) {
            if (write_batch(s, batch, kept + n, sp, tps) == 0) {
                committed = 1;
                kept = 0;
            } else {
                kept += n;
                s->next_retry = now + 1.0;
            }
        } else {
            kept += n;
        }
        if (kept > kmax) {
            lost = kept - kmax;
            memmove(batch, batch + lost, (size_t)kmax * sizeof *batch);
            kept = kmax;
        }
        if (!batch) lost = n;

        pthread_mutex_lock(&s->mu);
        if (lost && s->dropped == 0) log_warn("stats: retry buffer full, dropping the oldest rows");
        s->dropped += lost;
        s->pending = kept;
        s->seq_done = seq;
        if (committed) s->seq_committed = seq;
        pthread_cond_broadcast(&s->flushed);
        if (stop && s->qlen == 0) break;
    }
    s->dropped += kept; /* the last try at close failed too */
    s->pending = 0;
    pthread_mutex_unlock(&s->mu);
    free(batch);
    if (s->db) sqlite3_close(s->db);
    s->db = NULL;
    return NULL;
}

/* What stats_open made, but the thread. */
static void stats_free(struct stats *s)
{
    pthread_cond_destroy(&s->flushed);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s->q);
    free(s);
}

struct stats *stats_open(const struct stats_options *o, stats_sample_fn sample, void *ctx,
                         char *err, size_t errlen)
{
    struct stats *s = calloc(1, sizeof *s);
    if (!s || !(s->q = calloc((size_t)o->queue_max, sizeof *s->q))) {
        free(s);
        snprintf(err, errlen, "stats: out of memory");
        return NULL;
    }
    s->o = *o;
    snprintf(s->path, sizeof s->path, "%s", o->path);
    s->o.path = s->path;
    if (s->o.sample_interval_s < 1) s->o.sample_interval_s = 1;
    s->sample = sample;
    s->sample_ctx = ctx;
    s->next_sample = stats_wall_now() + s->o.sample_interval_s;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_cond_init(&s->flushed, NULL);
    /* The schema exists before the first request is served; a failure here is retried. */
    (void)db_open(s);
    if (pthread_create(&s->thread, NULL, writer_main, s) != 0) {
        snprintf(err, errlen, "stats: cannot start the writer thread");
        stats_free(s);
        return NULL;
    }
    return s;
}

/* Under s->mu: the record's sequence number, 0 when the queue is full (dropped, counted). */
static long long enqueue(struct stats *s, const struct stats_record *r)
{
    if (s->qlen >= s->o.queue_max) {
        if (s->dropped++ == 0) log_warn("stats: queue full, dropping records");
        return 0;
    }
    s->q[(s->qhead + s->qlen) % s->o.queue_max] = *r;
    s->qlen++;
    pthread_cond_signal(&s->cv);
    return ++s->seq_in;
}

void stats_record(struct stats *s, const struct stats_record *r)
{
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    (void)enqueue(s, r);
    pthread_mutex_unlock(&s->mu);
}

int stats_record_sync(struct stats *s, const struct stats_record *r, int timeout_ms)
{
    if (!s) return 0;
    pthread_mutex_lock(&s->mu);
    long long seq = enqueue(s, r);
    int ok = 0;
    if (seq > 0 && timeout_ms > 0) {
        struct timespec ts;
        abs_deadline(&ts, stats_wall_now() + timeout_ms / 1e3);
        while (s->seq_done < seq && !s->stop)
            if (pthread_cond_timedwait(&s->flushed, &s->mu, &ts) == ETIMEDOUT) break;
        ok = s->seq_committed >= seq;
    }
    pthread_mutex_unlock(&s->mu);
    return ok;
}

long long stats_pending(struct stats *s)
{
    if (!s) return 0;
    pthread_mutex_lock(&s->mu);
    long long n = s->pending;
    pthread_mutex_unlock(&s->mu);
    return n;
}

void stats_set_page_limit(struct stats *s, long pages)
{
    pthread_mutex_lock(&s->mu);
    s->page_limit = pages;
    pthread_mutex_unlock(&s->mu);
}

long long stats_dropped(struct stats *s)
{
    if (!s) return 0;
    pthread_mutex_lock(&s->mu);
    long long d = s->dropped;
    pthread_mutex_unlock(&s->mu);
    return d;
}

void stats_flush(struct stats *s)
{
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    long long target = s->seq_in;
    while (s->seq_done < target)
        pthread_cond_wait(&s->flushed, &s->mu);
    pthread_mutex_unlock(&s->mu);
}

void stats_close(struct stats *s)
{
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    if (s->dropped) log_warn("stats: %lld records were dropped", s->dropped);
    stats_free(s);
}

/* ---- queries ---- */

static const int pct[3] = {50, 95, 99};

/* Bucket index of a request's arrival or a sample's time in SQL; ?1 = start, ?2 = step. */
#define BUCKET_AT "CAST((received_at - ?1) / ?2 AS INTEGER)"
#define BUCKET_TS "CAST((ts - ?1) / ?2 AS INTEGER)"
/* Decode time and the tokens it made: those after the first (the first one's time is TTFT). */
#define DECODE_MS "CASE WHEN completion_tokens > 1 AND decode_ms IS NOT NULL THEN decode_ms END"
#define DECODE_TOKENS                                                                              \
    "CASE WHEN completion_tokens > 1 AND decode_ms IS NOT NULL THEN completion_tokens - 1 END"

/* Nearest-rank rank (1-based) of percentile p (integer percent) of n values: ceil(p n / 100). */
static long long rank_of(long long n, int p)
{
    long long k = (p * n + 99) / 100;
    return k < 1 ? 1 : k;
}

static int open_ro(const char *path, sqlite3 **db, char *err, size_t errlen)
{
    *db = NULL;
    if (sqlite3_open_v2(path, db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "stats db %s: %s", path, *db ? sqlite3_errmsg(*db) : "cannot open");
        sqlite3_close(*db);
        *db = NULL;
        return -1;
    }
    sqlite3_busy_timeout(*db, STATS_BUSY_MS);
    return 0;
}

/* Rows in the requests table, from its rowid span (two index probes; retention deletes the
 * oldest rows, so the span stays close to the count). */
static long long table_rows(sqlite3 *db)
{
    sqlite3_stmt *st;
    long long n = 0;
    if (sqlite3_prepare_v2(db,
                           "SELECT coalesce((SELECT max(rowid) FROM requests)"
                           " - (SELECT min(rowid) FROM requests) + 1, 0)",
                           -1, &st, NULL) != SQLITE_OK)
        return 0;
    if (sqlite3_step(st) == SQLITE_ROW) n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}

/* The k-th smallest (1-based) col among the window's generations: a walk of the (col,
 * received_at) index in order that stops at the k-th match. Returns -1 when the statement
 * cannot be prepared. */
static int kth_by_index(sqlite3 *db, const char *col, double since, long long k, double *out)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT %s FROM requests INDEXED BY requests_gen_%s WHERE " GEN_ROWS
             " AND %s IS NOT NULL AND received_at >= ? ORDER BY %s LIMIT 1 OFFSET ?",
             col, col, col, col);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return -1;
    sqlite3_bind_double(st, 1, since);
    sqlite3_bind_int64(st, 2, k - 1);
    *out = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_double(st, 0) : 0;
    sqlite3_finalize(st);
    return 0;
}

/* Window generations with col, counted on its value index (-1: no such index). */
static long long count_by_index(sqlite3 *db, const char *col, double since)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM requests INDEXED BY requests_gen_%s WHERE " GEN_ROWS
             " AND %s IS NOT NULL AND received_at >= ?",
             col, col);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return -1;
    sqlite3_bind_double(st, 1, since);
    long long n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    return n;
}

/* p50/p95/p99 of expr over the generations that arrived in [start, end), per bucket of step
 * seconds from start (nb buckets; out[b][i], -1 where a bucket has none). SQLite groups, sorts
 * and ranks them with window functions, and only the (at most) three rows per bucket that are
 * percentiles reach C; its sorter spills to temporary files past the page cache, so memory
 * stays bounded. */
static int ranked(sqlite3 *db, const char *expr, double start, double step, double end, int nb,
                  double (*out)[3])
{
    static const char fmt[] =
        "SELECT b, n, rn, v FROM (SELECT b, v,"
        " row_number() OVER (PARTITION BY b ORDER BY v) rn, count(*) OVER (PARTITION BY b) n"
        " FROM (SELECT " BUCKET_AT " b, %s v FROM requests INDEXED BY requests_received_at"
        " WHERE received_at >= ?1 AND received_at < ?3 AND " GEN_ROWS " AND (%s) IS NOT NULL))"
        " WHERE rn IN ((50 * n + 99) / 100, (95 * n + 99) / 100, (99 * n + 99) / 100)";
    char sql[1024];
    snprintf(sql, sizeof sql, fmt, expr, expr);
    for (int b = 0; b < nb; b++)
        out[b][0] = out[b][1] = out[b][2] = -1;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return -1;
    sqlite3_bind_double(st, 1, start);
    sqlite3_bind_double(st, 2, step);
    sqlite3_bind_double(st, 3, end);
    while (sqlite3_step(st) == SQLITE_ROW) {
        /* A timestamp just below the end can round onto the bucket past it. */
        long long b = sqlite3_column_int64(st, 0);
        b = b < 0 ? 0 : b >= nb ? nb - 1 : b;
        long long n = sqlite3_column_int64(st, 1), rn = sqlite3_column_int64(st, 2);
        for (int i = 0; i < 3; i++)
            if (rank_of(n, pct[i]) == rn) out[b][i] = sqlite3_column_double(st, 3);
    }
    sqlite3_finalize(st);
    return 0;
}

/* p50, p95 and p99 of col over the window's generations. When the window holds most of the
 * table (gens: its generations, an upper bound), walk the column's value index: k entries per
 * percentile, no sort, no table lookups. Otherwise sort the window's rows (a walk would cost the
 * whole table). Measured on 1 M rows, a sort costs ~40x an index walk per row. */
static void percentiles(sqlite3 *db, const char *col, double since, long long gens, long long rows,
                        double out[3])
{
    long long n = gens * 32 >= rows ? count_by_index(db, col, since) : -1;
    if (n >= 0) {
        for (int i = 0; i < 3; i++) {
            out[i] = 0;
            if (n > 0 && kth_by_index(db, col, since, rank_of(n, pct[i]), &out[i]) != 0) break;
        }
        return;
    }
    double v[1][3];
    (void)ranked(db, col, since, INFINITY, INFINITY, 1, v);
    for (int i = 0; i < 3; i++)
        out[i] = v[0][i] < 0 ? 0 : v[0][i];
}

/* Counts and sums over the window's requests, then the rates they give (a window of 0 spans
 * from the oldest arrival). Returns -1 when the query cannot be prepared. */
static int query_totals(sqlite3 *db, double since, double now, struct stats_summary *out)
{
    static const char sql[] = "SELECT count(*), sum(completion_tokens IS NOT NULL),"
                              " sum(http_status >= 400 OR status IN ('error','timeout')),"
                              " coalesce(sum(prompt_tokens),0), coalesce(sum(completion_tokens),0),"
                              " coalesce(sum(" DECODE_MS "),0), coalesce(sum(" DECODE_TOKENS "),0),"
                              " coalesce(max(rss_peak_kb),0), min(received_at)"
                              " FROM requests WHERE received_at >= ?";
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return -1;
    sqlite3_bind_double(st, 1, since);
    double decode_ms = 0, decode_tokens = 0, first = now;
    if (sqlite3_step(st) == SQLITE_ROW) {
        out->requests = sqlite3_column_int64(st, 0);
        out->generations = sqlite3_column_int64(st, 1);
        out->errors = sqlite3_column_int64(st, 2);
        out->prompt_tokens = sqlite3_column_int64(st, 3);
        out->completion_tokens = sqlite3_column_int64(st, 4);
        decode_ms = sqlite3_column_double(st, 5);
        decode_tokens = sqlite3_column_double(st, 6);
        out->rss_peak_kb = (long)sqlite3_column_int64(st, 7);
        if (sqlite3_column_type(st, 8) != SQLITE_NULL) first = sqlite3_column_double(st, 8);
    }
    sqlite3_finalize(st);
    /* Decode speed counts the tokens after the first: the first one's time is TTFT. */
    out->decode_tokens_per_s = decode_ms > 0 ? decode_tokens / (decode_ms / 1e3) : 0;
    double span = out->window_s > 0 ? out->window_s : now - first;
    out->throughput_tokens_per_s = span > 0 ? (double)out->completion_tokens / span : 0;
    return 0;
}

/* The samples' RSS raises the peak the requests recorded. */
static void query_rss_peak(sqlite3 *db, double since, struct stats_summary *out)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "SELECT coalesce(max(rss_kb),0) FROM samples WHERE ts >= ?", -1, &st,
                           NULL) != SQLITE_OK)
        return;
    sqlite3_bind_double(st, 1, since);
    if (sqlite3_step(st) == SQLITE_ROW) {
        long k = (long)sqlite3_column_int64(st, 0);
        if (k > out->rss_peak_kb) out->rss_peak_kb = k;
    }
    sqlite3_finalize(st);
}

int stats_query(const char *path, double window_s, double now, struct stats_summary *out, char *err,
                size_t errlen)
{
    memset(out, 0, sizeof *out);
    out->window_s = window_s;
    sqlite3 *db;
    if (open_ro(path, &db, err, errlen) != 0) return -1;
    double since = window_s > 0 ? now - window_s : -1e300;
    if (query_totals(db, since, now, out) != 0) {
        snprintf(err, errlen, "stats db %s: %s", path, sqlite3_errmsg(db));
        sqlite3_close(db);
        return -1;
    }
    query_rss_peak(db, since, out);
    long long rows = table_rows(db);
    double v[3];
    percentiles(db, "total_ms", since, out->generations, rows, v);
    out->latency_p50_ms = v[0];
    out->latency_p95_ms = v[1];
    out->latency_p99_ms = v[2];
    percentiles(db, "ttft_ms", since, out->generations, rows, v);
    out->ttft_p50_ms = v[0];
    out->ttft_p95_ms = v[1];
    out->ttft_p99_ms = v[2];
    sqlite3_close(db);
    return 0;
}

/* ---- time series ---- */

static int bucket_index(const struct stats_series *s, sqlite3_stmt *st)
{
    long long b = sqlite3_column_int64(st, 0);
    if (b < 0) b = 0; /* as in ranked() */
    if (b >= s->n) b = s->n - 1;
    return (int)b;
}

static int series_requests(sqlite3 *db, struct stats_series *s, double end)
{
    static const char sql[] =
        "SELECT " BUCKET_AT
        " b, count(*), sum(http_status >= 400 OR status IN ('error','timeout')),"
        " sum(completion_tokens IS NOT NULL), coalesce(sum(completion_tokens),0),"
        " sum(" DECODE_MS "), sum(" DECODE_TOKENS ")"
        " FROM requests INDEXED BY requests_received_at"
        " WHERE received_at >= ?1 AND received_at < ?3 GROUP BY b";
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return -1;
    sqlite3_bind_double(st, 1, s->start);
    sqlite3_bind_double(st, 2, s->step);
    sqlite3_bind_double(st, 3, end);
    while (sqlite3_step(st) == SQLITE_ROW) {
        struct stats_bucket *b = &s->b[bucket_index(s, st)];
        b->requests += sqlite3_column_int64(st, 1);
        b->errors += sqlite3_column_int64(st, 2);
        b->generations += sqlite3_column_int64(st, 3);
        b->completion_tokens += sqlite3_column_int64(st, 4);
        double ms = sqlite3_column_double(st, 5), tokens = sqlite3_column_double(st, 6);
        if (ms > 0) b->decode_tokens_per_s = tokens / (ms / 1e3);
    }
    sqlite3_finalize(st);
    return 0;
}

static int series_samples(sqlite3 *db, struct stats_series *s, double end)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db,
                           "SELECT " BUCKET_TS " b, avg(tokens_per_s), max(queued),"
                           " max(active_slots), max(rss_kb)"
                           " FROM samples WHERE ts >= ?1 AND ts < ?3 GROUP BY b",
                           -1, &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_double(st, 1, s->start);
    sqlite3_bind_double(st, 2, s->step);
    sqlite3_bind_double(st, 3, end);
    while (sqlite3_step(st) == SQLITE_ROW) {
        struct stats_bucket *b = &s->b[bucket_index(s, st)];
        b->tokens_per_s = sqlite3_column_double(st, 1);
        b->queued = sqlite3_column_int(st, 2);
        b->active_slots = sqlite3_column_int(st, 3);
        b->rss_kb = (long)sqlite3_column_int64(st, 4);
    }
    sqlite3_finalize(st);
    return 0;
}

int stats_series_query(const char *path, double window_s, double step_s, double now,
                       struct stats_series *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    double nb = ceil(window_s / step_s);
    if (!(window_s > 0) || !(step_s > 0) || !(nb <= STATS_SERIES_MAX)) {
        snprintf(err, errlen, "a series needs a window and a step with at most %d steps in it",
                 STATS_SERIES_MAX);
        return -1;
    }
    /* Buckets on multiples of step, so successive polls see the same buckets; the first holds
     * now - window, the last now. */
    out->step = step_s;
    out->start = floor((now - window_s) / step_s) * step_s;
    double end = (floor(now / step_s) + 1) * step_s;
    out->n = (int)llround((end - out->start) / step_s);
    out->b = calloc((size_t)out->n, sizeof *out->b);
    if (!out->b) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int i = 0; i < out->n; i++) {
        struct stats_bucket *b = &out->b[i];
        b->decode_tokens_per_s = b->tokens_per_s = -1;
        b->queued = b->active_slots = -1;
        b->rss_kb = -1;
    }
    sqlite3 *db;
    double(*ttft)[3] = malloc((size_t)out->n * sizeof *ttft);
    double(*token)[3] = malloc((size_t)out->n * sizeof *token);
    int rc = -1;
    if (!ttft || !token)
        snprintf(err, errlen, "out of memory");
    else if (open_ro(path, &db, err, errlen) == 0) {
        if (series_requests(db, out, end) != 0 ||
            ranked(db, "ttft_ms", out->start, step_s, end, out->n, ttft) != 0 ||
            ranked(db,
                   "CASE WHEN completion_tokens > 1 THEN decode_ms / (completion_tokens - 1) END",
                   out->start, step_s, end, out->n, token) != 0 ||
            series_samples(db, out, end) != 0)
            snprintf(err, errlen, "stats db %s: %s", path, sqlite3_errmsg(db));
        else
            rc = 0;
        sqlite3_close(db);
    }
    for (int i = 0; rc == 0 && i < out->n; i++)
        for (int k = 0; k < 3; k++) {
            out->b[i].ttft_ms[k] = ttft[i][k];
            out->b[i].token_ms[k] = token[i][k];
        }
    free(ttft);
    free(token);
    if (rc != 0) stats_series_free(out);
    return rc;
}

void stats_series_free(struct stats_series *s)
{
    free(s->b);
    s->b = NULL;
    s->n = 0;
}
