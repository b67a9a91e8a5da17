/* Operations endpoints: /health, /ready, /metrics, /stats, and the web page at / with its
 * sample pictures at /samples. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "http.h"
#include "server/samples.h" /* generated from tests/data/shapes pictures at build time */
#include "server/webpage.h" /* generated from clients/web/index.html at build time */

int api_health(struct http_req *r)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", "ok");
    http_reply_json(r, 200, o);
    return 0;
}

int api_ready(struct http_req *r)
{
    struct server *srv = http_server(r);
    int active, queued;
    sched_snapshot(srv->sched, &active, &queued);
    int room = active + queued < srv->cfg->slots + srv->cfg->queue;
    cJSON *o = cJSON_CreateObject();
    int ready = __atomic_load_n(&srv->ready, __ATOMIC_ACQUIRE);
    const char *status = !ready ? "draining" : room ? "ready" : "busy";
    cJSON_AddStringToObject(o, "status", status);
    cJSON_AddStringToObject(o, "model", srv->info.name);
    cJSON_AddNumberToObject(o, "active_slots", active);
    cJSON_AddNumberToObject(o, "slots", srv->cfg->slots);
    cJSON_AddNumberToObject(o, "queued", queued);
    cJSON_AddNumberToObject(o, "queue_max", srv->cfg->queue);
    http_reply_json(r, ready && room ? 200 : 503, o);
    return 0;
}

int api_metrics(struct http_req *r)
{
    struct server *srv = http_server(r);
    struct metrics_gauges g = {0};
    sched_snapshot(srv->sched, &g.active_slots, &g.queued);
    g.slots = srv->cfg->slots;
    g.queue_max = srv->cfg->queue;
    long rss, peak;
    stats_rss(&rss, &peak);
    g.rss_bytes = rss * 1024;
    g.rss_peak_bytes = peak * 1024;
    g.stats_dropped = stats_dropped(srv->stats);
    g.stats_pending = stats_pending(srv->stats);
    char *text = metrics_render(srv->metrics, &g);
    if (!text) {
        struct api_error e;
        codec_fail(&e, 500, "internal", "out of memory");
        http_reply_error(r, &e);
        return 0;
    }
    http_reply(r, 200, "text/plain; version=0.0.4; charset=utf-8", text, strlen(text));
    free(text);
    return 0;
}

static void add_num(cJSON *o, const char *k, double v)
{
    cJSON_AddNumberToObject(o, k, round(v * 1000) / 1000);
}

/* A query parameter as a number in (0, max]; def when absent. Returns -1 after a 400. */
static int query_number(struct http_req *r, const char *key, double def, double max, double *out)
{
    const char *v = http_query(r, key);
    *out = def;
    if (!v) return 0;
    char *end;
    *out = strtod(v, &end);
    if (end == v || *end || !(*out > 0) || *out > max) {
        struct api_error e;
        codec_fail(&e, 400, "invalid_request", "%s: expected a positive number of seconds", key);
        http_reply_error(r, &e);
        return -1;
    }
    return 0;
}

/* One field of every bucket as a JSON array; negative values (nothing that bucket) are null. */
static void add_array(cJSON *o, const char *k, const double *v, int n)
{
    cJSON *a = cJSON_AddArrayToObject(o, k);
    for (int i = 0; i < n; i++)
        cJSON_AddItemToArray(a, v[i] < 0 ? cJSON_CreateNull()
                                         : cJSON_CreateNumber(round(v[i] * 1000) / 1000));
}

enum series_field {
    F_T,
    F_REQUESTS,
    F_GENERATIONS,
    F_ERRORS,
    F_COMPLETION_TOKENS,
    F_DECODE_TPS,
    F_TTFT,
    F_TOKEN,
    F_TOKENS_PER_S,
    F_QUEUED,
    F_ACTIVE,
    F_RSS
};

static double field(const struct stats_series *s, int i, enum series_field f, int p)
{
    const struct stats_bucket *b = &s->b[i];
    switch (f) {
    case F_T: return s->start + i * s->step;
    case F_REQUESTS: return (double)b->requests;
    case F_GENERATIONS: return (double)b->generations;
    case F_ERRORS: return (double)b->errors;
    case F_COMPLETION_TOKENS: return (double)b->completion_tokens;
    case F_DECODE_TPS: return b->decode_tokens_per_s;
    case F_TTFT: return b->ttft_ms[p];
    case F_TOKEN: return b->token_ms[p];
    case F_TOKENS_PER_S: return b->tokens_per_s;
    case F_QUEUED: return b->queued;
    case F_ACTIVE: return b->active_slots;
    case F_RSS: return (double)b->rss_kb;
    }
    return -1;
}

/* The series as columns: "t" (bucket starts) and one array per field, index-aligned. */
static int add_series(cJSON *o, const struct stats_series *s, double now)
{
    double *v = malloc((size_t)s->n * sizeof *v);
    if (!v) return -1;
    cJSON *js = cJSON_AddObjectToObject(o, "series");
    add_num(js, "start", s->start);
    add_num(js, "step", s->step);
    add_num(js, "now", now);
    static const struct {
        const char *name;
        enum series_field f;
    } cols[] = {{"t", F_T},
                {"requests", F_REQUESTS},
                {"generations", F_GENERATIONS},
                {"errors", F_ERRORS},
                {"completion_tokens", F_COMPLETION_TOKENS},
                {"decode_tokens_per_s", F_DECODE_TPS},
                {"ttft_ms", F_TTFT},
                {"token_ms", F_TOKEN},
                {"tokens_per_s", F_TOKENS_PER_S},
                {"queued", F_QUEUED},
                {"active_slots", F_ACTIVE},
                {"rss_kb", F_RSS}};
    static const char *pnames[3] = {"p50", "p95", "p99"};
    for (size_t c = 0; c < sizeof cols / sizeof cols[0]; c++) {
        int pct = cols[c].f == F_TTFT || cols[c].f == F_TOKEN;
        cJSON *dst = pct ? cJSON_AddObjectToObject(js, cols[c].name) : js;
        for (int p = 0; p < (pct ? 3 : 1); p++) {
            for (int i = 0; i < s->n; i++)
                v[i] = field(s, i, cols[c].f, p);
            add_array(dst, pct ? pnames[p] : cols[c].name, v, s->n);
        }
    }
    free(v);
    return 0;
}

int api_stats(struct http_req *r)
{
    struct server *srv = http_server(r);
    struct api_error e;
    if (!srv->cfg->db[0]) {
        codec_fail(&e, 503, "unavailable", "stats are disabled (no db configured)");
        http_reply_error(r, &e);
        return 0;
    }
    double window, step = 0;
    if (query_number(r, "window", 3600, 1e10, &window) != 0) return 0;
    const char *series = http_query(r, "series");
    if (series && strcmp(series, "0") != 0 && strcmp(series, "1") != 0) {
        codec_fail(&e, 400, "invalid_request", "series: expected 0 or 1");
        http_reply_error(r, &e);
        return 0;
    }
    int want_series = series && strcmp(series, "1") == 0;
    /* Default: 60 buckets over the window, none shorter than a second. */
    if (want_series && query_number(r, "step", fmax(1, window / 60), 1e10, &step) != 0) return 0;
    if (want_series && window / step > STATS_SERIES_MAX) {
        codec_fail(&e, 400, "invalid_request", "step: at most %d steps in the window",
                   STATS_SERIES_MAX);
        http_reply_error(r, &e);
        return 0;
    }
    stats_flush(srv->stats);
    struct stats_summary s;
    struct stats_series ser = {0};
    char err[256];
    double now = stats_wall_now();
    if (stats_query(srv->cfg->db, window, now, &s, err, sizeof err) != 0 ||
        (want_series &&
         stats_series_query(srv->cfg->db, window, step, now, &ser, err, sizeof err) != 0)) {
        codec_fail(&e, 500, "internal", "%s", err);
        http_reply_error(r, &e);
        return 0;
    }
    cJSON *o = cJSON_CreateObject();
    add_num(o, "window_s", s.window_s);
    cJSON_AddNumberToObject(o, "count", (double)s.requests);
    cJSON_AddNumberToObject(o, "generations", (double)s.generations);
    cJSON_AddNumberToObject(o, "errors", (double)s.errors);
    cJSON *lat = cJSON_AddObjectToObject(o, "latency_ms");
    add_num(lat, "p50", s.latency_p50_ms);
    add_num(lat, "p95", s.latency_p95_ms);
    add_num(lat, "p99", s.latency_p99_ms);
    cJSON *ttft = cJSON_AddObjectToObject(o, "ttft_ms");
    add_num(ttft, "p50", s.ttft_p50_ms);
    add_num(ttft, "p95", s.ttft_p95_ms);
    add_num(ttft, "p99", s.ttft_p99_ms);
    cJSON_AddNumberToObject(o, "prompt_tokens", (double)s.prompt_tokens);
    cJSON_AddNumberToObject(o, "completion_tokens", (double)s.completion_tokens);
    add_num(o, "decode_tokens_per_s", s.decode_tokens_per_s);
    add_num(o, "throughput_tokens_per_s", s.throughput_tokens_per_s);
    cJSON_AddNumberToObject(o, "rss_peak_kb", (double)s.rss_peak_kb);
    cJSON_AddNumberToObject(o, "stats_dropped", (double)stats_dropped(srv->stats));
    int oom = want_series && add_series(o, &ser, now) != 0;
    stats_series_free(&ser);
    if (oom) {
        cJSON_Delete(o);
        codec_fail(&e, 500, "internal", "out of memory");
        http_reply_error(r, &e);
        return 0;
    }
    http_reply_json(r, 200, o);
    return 0;
}

int api_index(struct http_req *r)
{
    http_reply(r, 200, "text/html; charset=utf-8", webpage_html, webpage_html_len);
    return 0;
}

/* GET /samples: the names; GET /samples?name=FILE: the picture. */
int api_samples(struct http_req *r)
{
    const char *name = http_query(r, "name");
    if (!name) {
        cJSON *o = cJSON_CreateObject();
        cJSON *a = cJSON_AddArrayToObject(o, "samples");
        for (size_t i = 0; i < samples_count; i++)
            cJSON_AddItemToArray(a, cJSON_CreateString(samples[i].name));
        http_reply_json(r, 200, o);
        return 0;
    }
    for (size_t i = 0; i < samples_count; i++) {
        if (strcmp(samples[i].name, name) != 0) continue;
        size_t n = strlen(name);
        const char *type = n > 4 && strcmp(name + n - 4, ".png") == 0 ? "image/png" : "image/jpeg";
        http_reply(r, 200, type, samples[i].data, samples[i].len);
        return 0;
    }
    struct api_error e;
    codec_fail(&e, 404, "not_found", "no sample picture named '%s' (GET /samples lists them)",
               name);
    http_reply_error(r, &e);
    return 0;
}
