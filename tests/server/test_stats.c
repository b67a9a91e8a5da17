/* Unit tests: percentiles, the writer (rows, schema version, samples), aggregation windows,
 * and surviving an unwritable database. */
#include <check.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/log.h"
#include "server/stats.h"

#include "../testutil.h"

START_TEST(percentiles)
{
    double v[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    ck_assert_double_eq(stats_percentile(v, 10, 50), 5);
    ck_assert_double_eq(stats_percentile(v, 10, 95), 10);
    ck_assert_double_eq(stats_percentile(v, 10, 10), 1);
    ck_assert_double_eq(stats_percentile(v, 10, 0), 1);
    ck_assert_double_eq(stats_percentile(v, 1, 99), 1);
    ck_assert_double_eq(stats_percentile(v, 0, 50), 0);
}
END_TEST

static struct stats_record gen(double at, double total, int tokens, double decode_ms,
                               const char *status, int http)
{
    struct stats_record r;
    memset(&r, 0, sizeof r);
    r.received_at = at;
    snprintf(r.endpoint, sizeof r.endpoint, "/generate");
    snprintf(r.status, sizeof r.status, "%s", status);
    r.http_status = http;
    r.prompt_tokens = 10;
    r.image_tokens = 0;
    r.completion_tokens = tokens;
    r.queue_ms = 1;
    r.vision_ms = -1;
    r.prefill_ms = 2;
    r.ttft_ms = total / 4;
    r.decode_ms = decode_ms;
    r.total_ms = total;
    r.decode_tokens_per_s = -1;
    r.rss_kb = 100;
    r.rss_peak_kb = 200;
    return r;
}

static void fake_sample(void *ctx, struct stats_sample *out)
{
    (void)ctx;
    out->rss_kb = 300;
    out->active_slots = 1;
    out->queued = 0;
    out->tokens_total = 10;
}

START_TEST(write_and_aggregate)
{
    char dir[] = "/tmp/ternd-stats-XXXXXX", path[64], err[256];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/s.db", dir);
    struct stats_options o = {path, 64, 1, 0, 0, 0};
    struct stats *s = stats_open(&o, fake_sample, NULL, err, sizeof err);
    ck_assert_ptr_nonnull(s);
    double now = stats_wall_now();
    /* Ten generations: totals 100..1000 ms, each 11 tokens decoded in 500 ms (10 tokens after
     * the first: 20 tok/s); one old row outside the window; one 400 and one engine error. */
    for (int i = 1; i <= 10; i++) {
        struct stats_record r = gen(now - 10, 100.0 * i, 11, 500, "stop", 200);
        stats_record(s, &r);
    }
    struct stats_record old = gen(now - 7200, 99999, 5, 100, "stop", 200);
    stats_record(s, &old);
    struct stats_record bad = gen(now - 5, 1, -1, -1, "error", 400);
    bad.prompt_tokens = bad.completion_tokens = -1;
    stats_record(s, &bad);
    struct stats_record fail = gen(now - 5, 50, 0, -1, "error", 500);
    stats_record(s, &fail);
    stats_flush(s);

    struct stats_summary sum;
    ck_assert_int_eq(stats_query(path, 3600, now, &sum, err, sizeof err), 0);
    ck_assert_int_eq(sum.requests, 12);
    ck_assert_int_eq(sum.generations, 11); /* rows with completion_tokens */
    ck_assert_int_eq(sum.errors, 2);
    ck_assert_double_eq(sum.latency_p50_ms, 500);
    ck_assert_double_eq(sum.latency_p95_ms, 1000);
    ck_assert_double_eq(sum.latency_p99_ms, 1000);
    ck_assert_double_eq(sum.ttft_p50_ms, 125);
    ck_assert_int_eq(sum.completion_tokens, 110);
    ck_assert_double_eq_tol(sum.decode_tokens_per_s, 20, 1e-9);
    ck_assert_double_eq_tol(sum.throughput_tokens_per_s, 110.0 / 3600, 1e-9);
    ck_assert_int_eq(sum.rss_peak_kb, 200);

    ck_assert_int_eq(stats_query(path, 0, now, &sum, err, sizeof err), 0); /* all rows */
    ck_assert_int_eq(sum.requests, 13);
    ck_assert_double_eq(sum.latency_p99_ms, 99999);

    stats_close(s);
    sqlite3 *db;
    ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *st;
    ck_assert_int_eq(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    ck_assert_int_eq(sqlite3_column_int(st, 0), STATS_SCHEMA_VERSION);
    sqlite3_finalize(st);
    ck_assert_int_eq(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    ck_assert_str_eq((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    /* NULL for "not applicable" timings. */
    ck_assert_int_eq(sqlite3_prepare_v2(db, "SELECT count(*) FROM requests WHERE vision_ms IS NULL",
                                        -1, &st, NULL),
                     SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    ck_assert_int_eq(sqlite3_column_int(st, 0), 13);
    sqlite3_finalize(st);
    sqlite3_close(db);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

START_TEST(unwritable_db_drops_and_counts)
{
    char err[256];
    struct stats_options o = {"/nonexistent-dir/s.db", 8, 3600, 0, 0, 0};
    struct stats *s = stats_open(&o, NULL, NULL, err, sizeof err);
    ck_assert_ptr_nonnull(s);
    struct stats_record r = gen(stats_wall_now(), 1, 1, 1, "stop", 200);
    for (int i = 0; i < 3; i++)
        stats_record(s, &r);
    stats_flush(s);
    ck_assert_int_eq(stats_dropped(s), 3);
    stats_close(s);
}
END_TEST

START_TEST(newer_schema_refused)
{
    char dir[] = "/tmp/ternd-stats-XXXXXX", path[64], err[256];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/s.db", dir);
    sqlite3 *db;
    ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
    ck_assert_int_eq(sqlite3_exec(db, "PRAGMA user_version=99", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    struct stats_options o = {path, 8, 3600, 0, 0, 0};
    struct stats *s = stats_open(&o, NULL, NULL, err, sizeof err);
    struct stats_record r = gen(stats_wall_now(), 1, 1, 1, "stop", 200);
    stats_record(s, &r);
    stats_flush(s);
    ck_assert_int_eq(stats_dropped(s), 1);
    stats_close(s);
    unlink(path);
    rmdir(dir);
}
END_TEST

START_TEST(retention_deletes_old_rows)
{
    char dir[] = "/tmp/ternd-stats-XXXXXX", path[64], err[256];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/s.db", dir);
    struct stats_options o = {path, 8, 3600, 1, 0, 0}; /* keep one day */
    struct stats *s = stats_open(&o, NULL, NULL, err, sizeof err);
    double now = stats_wall_now();
    struct stats_record old = gen(now - 3 * 86400, 1, 1, 1, "stop", 200);
    struct stats_record fresh = gen(now - 60, 1, 1, 1, "stop", 200);
    stats_record(s, &old);
    stats_record(s, &fresh);
    stats_flush(s);
    stats_close(s);
    struct stats_summary sum;
    ck_assert_int_eq(stats_query(path, 0, now, &sum, err, sizeof err), 0);
    ck_assert_int_eq(sum.requests, 1);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

static long count_rows(const char *path)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    long n = -1;
    ck_assert_int_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 2000);
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM requests", -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW) n = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return n;
}

static char *slurp_text(const char *path)
{
    size_t len;
    char *s = tu_slurp(path, &len);
    return s ? s : strdup("");
}

/* The schema exists as soon as stats_open returns; a synced record is committed when the call
 * returns (readable from another connection without a flush). */
START_TEST(sync_commits_before_returning)
{
    char dir[] = "/tmp/ternd-stats-XXXXXX", path[64], err[256];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/s.db", dir);
    struct stats_options o = {path, 8, 3600, 0, 16, 0};
    struct stats *s = stats_open(&o, NULL, NULL, err, sizeof err);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(count_rows(path), 0);
    for (int i = 1; i <= 5; i++) {
        struct stats_record r = gen(stats_wall_now(), 1, 1, 1, "stop", 200);
        ck_assert_int_eq(stats_record_sync(s, &r, 5000), 1);
        ck_assert_int_eq(count_rows(path), i);
    }
    stats_close(s);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* A full database (a page cap, as a full disk): rows are kept, not lost; once there is room
 * they are all written, and "writable again" is logged only then. */
START_TEST(full_disk_rows_kept_and_retried)
{
    char dir[] = "/tmp/ternd-stats-XXXXXX", path[64], logp[64], err[256];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/s.db", dir);
    snprintf(logp, sizeof logp, "%s/log", dir);
    ck_assert_int_eq(log_setup(LOG_LVL_INFO, logp), 0);
    struct stats_options o = {path, 64, 3600, 0, 1000, 0};
    struct stats *s = stats_open(&o, NULL, NULL, err, sizeof err);
    ck_assert_ptr_nonnull(s);
    stats_set_page_limit(s, 1); /* sqlite keeps the current size: no page can be added */
    const int n = 400;
    for (int i = 0; i < n; i++) {
        struct stats_record r = gen(stats_wall_now(), 1, 1, 1, "stop", 200);
        stats_record_sync(s, &r, 5000);
    }
    ck_assert_int_gt(stats_pending(s), 0);
    ck_assert_int_lt(count_rows(path), n);
    ck_assert_int_eq(stats_dropped(s), 0);
    char *log = slurp_text(logp);
    ck_assert_ptr_nonnull(strstr(log, "rows are kept"));
    ck_assert_ptr_null(strstr(log, "writable again"));
    free(log);
    /* a retry while still full must not claim success either */
    sleep(2);
    log = slurp_text(logp);
    ck_assert_ptr_null(strstr(log, "writable again"));
    free(log);
    stats_set_page_limit(s, 0);
    for (int i = 0; i < 100 && stats_pending(s) > 0; i++)
        usleep(50000);
    ck_assert_int_eq(stats_pending(s), 0);
    ck_assert_int_eq(count_rows(path), n);
    ck_assert_int_eq(stats_dropped(s), 0);
    log = slurp_text(logp);
    ck_assert_ptr_nonnull(strstr(log, "writable again"));
    free(log);
    stats_close(s);
    log_close();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* Past retry_max the oldest kept rows are dropped and counted: memory stays bounded. */
START_TEST(retry_buffer_bounded)
{
    char err[256];
    struct stats_options o = {"/nonexistent-dir/s.db", 8, 3600, 0, 5, 0};
    struct stats *s = stats_open(&o, NULL, NULL, err, sizeof err);
    struct stats_record r = gen(stats_wall_now(), 1, 1, 1, "stop", 200);
    for (int i = 0; i < 12; i++)
        stats_record_sync(s, &r, 5000);
    ck_assert_int_eq(stats_pending(s), 5);
    ck_assert_int_eq(stats_dropped(s), 7);
    stats_close(s);
}
END_TEST

/* ---- SQL percentiles and series against a brute-force computation on random rows ---- */

static unsigned long long rng_state = 0x9e3779b97f4a7c15ULL;

static double urand(void) /* [0, 1) */
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

#define NRAND 4000
#define SPAN 7200.0

static struct stats_record rand_rows[NRAND];

/* Rows over the last SPAN seconds: all statuses, NULL timings and token counts, ties (times in
 * whole ms half of the time). */
static void make_random_db(const char *path, double now)
{
    static const char *statuses[] = {"stop", "stop", "length", "error", "cancelled", "timeout"};
    char err[256];
    struct stats_options o = {path, NRAND, 3600, 0, 0, 0};
    struct stats *s = stats_open(&o, NULL, NULL, err, sizeof err);
    ck_assert_ptr_nonnull(s);
    for (int i = 0; i < NRAND; i++) {
        const char *st = statuses[(int)(urand() * 6)];
        int tokens = urand() < 0.1 ? -1 : (int)(urand() * 40);
        double total = urand() < 0.5 ? floor(urand() * 50) : urand() * 3000;
        struct stats_record r =
            gen(now - SPAN * urand(), total, tokens, urand() * 2000, st, st[0] == 'e' ? 500 : 200);
        r.ttft_ms = urand() < 0.1 ? -1 : floor(urand() * 200);
        if (urand() < 0.05) r.total_ms = -1;
        if (urand() < 0.05) r.decode_ms = -1;
        rand_rows[i] = r;
        stats_record(s, &r);
    }
    stats_flush(s);
    ck_assert_int_eq(stats_dropped(s), 0);
    stats_close(s);
}

static int is_gen(const struct stats_record *r)
{
    return r->completion_tokens >= 0 &&
           (strcmp(r->status, "stop") == 0 || strcmp(r->status, "length") == 0);
}

/* The field the SQL reads, or < 0 when that row has none. */
static double token_ms(const struct stats_record *r)
{
    return r->completion_tokens > 1 && r->decode_ms >= 0 ? r->decode_ms / (r->completion_tokens - 1)
                                                         : -1;
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Brute force: p50/p95/p99 (nearest rank) of what() over the generations in [lo, hi); -1 when
 * there are none. */
static void brute_percentiles(double lo, double hi, double (*what)(const struct stats_record *),
                              double out[3])
{
    static double v[NRAND];
    long n = 0;
    for (int i = 0; i < NRAND; i++) {
        const struct stats_record *r = &rand_rows[i];
        if (r->received_at >= lo && r->received_at < hi && is_gen(r) && what(r) >= 0)
            v[n++] = what(r);
    }
    qsort(v, (size_t)n, sizeof *v, cmp_dbl);
    static const double p[3] = {50, 95, 99};
    for (int i = 0; i < 3; i++)
        out[i] = n ? stats_percentile(v, n, p[i]) : -1;
}

static double total_of(const struct stats_record *r)
{
    return r->total_ms;
}
static double ttft_of(const struct stats_record *r)
{
    return r->ttft_ms;
}

/* Windows of 60 and 120 s hold less than 1/32 of the table (SQLite sorts them); the others more
 * (the value indexes are walked). Both must give the nearest-rank percentiles exactly. */
START_TEST(sql_percentiles_match_brute_force)
{
    char dir[] = "/tmp/ternd-stats-XXXXXX", path[64], err[256];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/s.db", dir);
    double now = stats_wall_now();
    make_random_db(path, now);
    static const double windows[] = {60, 120, 900, 3600, 0};
    for (size_t w = 0; w < sizeof windows / sizeof *windows; w++) {
        struct stats_summary sum;
        ck_assert_int_eq(stats_query(path, windows[w], now, &sum, err, sizeof err), 0);
        double lo = windows[w] > 0 ? now - windows[w] : -1e300, total[3], ttft[3];
        brute_percentiles(lo, 1e300, total_of, total);
        brute_percentiles(lo, 1e300, ttft_of, ttft);
        double got_total[3] = {sum.latency_p50_ms, sum.latency_p95_ms, sum.latency_p99_ms};
        double got_ttft[3] = {sum.ttft_p50_ms, sum.ttft_p95_ms, sum.ttft_p99_ms};
        long long requests = 0;
        for (int i = 0; i < NRAND; i++)
            requests += rand_rows[i].received_at >= lo;
        ck_assert_int_eq(sum.requests, requests);
        for (int i = 0; i < 3; i++) {
            ck_assert_double_eq(got_total[i], total[i] < 0 ? 0 : total[i]);
            ck_assert_double_eq(got_ttft[i], ttft[i] < 0 ? 0 : ttft[i]);
        }
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

START_TEST(sql_series_match_brute_force)
{
    char dir[] = "/tmp/ternd-stats-XXXXXX", path[64], err[256];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/s.db", dir);
    double now = stats_wall_now();
    make_random_db(path, now);
    /* Samples every 7 s over the span, written the way the writer does. */
    enum { NSAMPLES = (int)(SPAN / 7) };
    static struct {
        double ts, tps;
        int queued, active;
        long rss;
    } smp[NSAMPLES];
    sqlite3 *db;
    ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
    ck_assert_int_eq(sqlite3_exec(db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
    for (int i = 0; i < NSAMPLES; i++) {
        smp[i].ts = now - SPAN + 7 * i + urand();
        smp[i].tps = floor(urand() * 100);
        smp[i].queued = (int)(urand() * 9);
        smp[i].active = (int)(urand() * 4);
        smp[i].rss = 1000 + (long)(urand() * 5000);
        char sql[256];
        snprintf(sql, sizeof sql, "INSERT INTO samples VALUES(%.17g, %ld, %d, %d, %.17g)",
                 smp[i].ts, smp[i].rss, smp[i].active, smp[i].queued, smp[i].tps);
        ck_assert_int_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    }
    ck_assert_int_eq(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);

    struct stats_series ser;
    ck_assert_int_ne(stats_series_query(path, 3600, 0.5, now, &ser, err, sizeof err), 0);
    ck_assert_int_ne(stats_series_query(path, 3600, 0, now, &ser, err, sizeof err), 0);
    ck_assert_int_eq(stats_series_query(path, 3600, 60, now, &ser, err, sizeof err), 0);
    ck_assert_int_eq(ser.n, 61);
    ck_assert_double_eq(ser.step, 60);
    ck_assert_double_eq(fmod(ser.start, 60), 0);
    ck_assert(ser.start <= now - 3600 && ser.start > now - 3660 && ser.start + 60 * ser.n > now);
    long long seen = 0;
    for (int b = 0; b < ser.n; b++) {
        double lo = ser.start + b * 60.0, hi = lo + 60;
        long long requests = 0, errors = 0, gens = 0, tokens = 0;
        double dec_ms = 0, dec_tokens = 0;
        for (int i = 0; i < NRAND; i++) {
            const struct stats_record *r = &rand_rows[i];
            if (!(r->received_at >= lo && r->received_at < hi)) continue;
            requests++;
            errors += r->http_status >= 400 || strcmp(r->status, "error") == 0 ||
                      strcmp(r->status, "timeout") == 0;
            gens += r->completion_tokens >= 0;
            tokens += r->completion_tokens > 0 ? r->completion_tokens : 0;
            if (r->completion_tokens > 1 && r->decode_ms >= 0) {
                dec_ms += r->decode_ms;
                dec_tokens += r->completion_tokens - 1;
            }
        }
        const struct stats_bucket *k = &ser.b[b];
        ck_assert_int_eq(k->requests, requests);
        ck_assert_int_eq(k->errors, errors);
        ck_assert_int_eq(k->generations, gens);
        ck_assert_int_eq(k->completion_tokens, tokens);
        if (dec_ms > 0)
            ck_assert_double_eq_tol(k->decode_tokens_per_s, dec_tokens / (dec_ms / 1e3), 1e-6);
        else
            ck_assert_double_eq(k->decode_tokens_per_s, -1);
        double want[3];
        brute_percentiles(lo, hi, ttft_of, want);
        for (int i = 0; i < 3; i++)
            ck_assert_double_eq(k->ttft_ms[i], want[i]);
        brute_percentiles(lo, hi, token_ms, want);
        for (int i = 0; i < 3; i++)
            ck_assert_double_eq_tol(k->token_ms[i], want[i], 1e-9 * (1 + fabs(want[i])));
        double tps = 0;
        int ns = 0, queued = -1, active = -1;
        long rss = -1;
        for (int i = 0; i < NSAMPLES; i++) {
            if (!(smp[i].ts >= lo && smp[i].ts < hi)) continue;
            tps += smp[i].tps;
            ns++;
            queued = smp[i].queued > queued ? smp[i].queued : queued;
            active = smp[i].active > active ? smp[i].active : active;
            rss = smp[i].rss > rss ? smp[i].rss : rss;
        }
        ck_assert_double_eq_tol(k->tokens_per_s, ns ? tps / ns : -1, 1e-9);
        ck_assert_int_eq(k->queued, queued);
        ck_assert_int_eq(k->active_slots, active);
        ck_assert_int_eq(k->rss_kb, rss);
        seen += requests;
    }
    ck_assert_int_gt(seen, NRAND / 3); /* the hour of a two-hour span */
    stats_series_free(&ser);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("stats");
    TCase *tc = tcase_create("stats");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, percentiles);
    tcase_add_test(tc, write_and_aggregate);
    tcase_add_test(tc, unwritable_db_drops_and_counts);
    tcase_add_test(tc, newer_schema_refused);
    tcase_add_test(tc, retention_deletes_old_rows);
    tcase_add_test(tc, sync_commits_before_returning);
    tcase_add_test(tc, full_disk_rows_kept_and_retried);
    tcase_add_test(tc, retry_buffer_bounded);
    tcase_add_test(tc, sql_percentiles_match_brute_force);
    tcase_add_test(tc, sql_series_match_brute_force);
    suite_add_tcase(s, tc);
    return tu_run(s, CK_FORK);
}
