/* Operations endpoints: /health, /ready, /metrics, /stats, and the web page at /. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "http.h"
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

int api_stats(struct http_req *r)
{
    struct server *srv = http_server(r);
    struct api_error e;
    if (!srv->cfg->db[0]) {
        codec_fail(&e, 503, "unavailable", "stats are disabled (no db configured)");
        http_reply_error(r, &e);
        return 0;
    }
    double window = 3600;
    const char *w = http_query(r, "window");
    if (w) {
        char *end;
        window = strtod(w, &end);
        if (end == w || *end || !(window > 0) || window > 1e10) {
            codec_fail(&e, 400, "invalid_request", "window: expected a positive number of seconds");
            http_reply_error(r, &e);
            return 0;
        }
    }
    stats_flush(srv->stats);
    struct stats_summary s;
    char err[256];
    if (stats_query(srv->cfg->db, window, stats_wall_now(), &s, err, sizeof err) != 0) {
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
    http_reply_json(r, 200, o);
    return 0;
}

int api_index(struct http_req *r)
{
    http_reply(r, 200, "text/html; charset=utf-8", webpage_html, webpage_html_len);
    return 0;
}
