/* libmicrohttpd glue. Every connection gets its own thread (MHD_USE_THREAD_PER_CONNECTION), so
 * a generation handler may block: it waits in poll() on its job's eventfd and on the client
 * socket, never spinning. Flow per request: route + auth + Content-Length/Content-Type checks
 * on the first call, body (JSON bytes or multipart via MHD's post processor) on the next calls,
 * then the route runs on the last call and queues exactly one response. */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "log.h"

#define MAX_FORM_FIELDS 32
#define DRAIN_BODY_MAX (64 * 1024) /* bytes of a refused body read and dropped, then close */
#define RATE_SLOTS 256             /* addresses tracked by the per-address rate limit */

struct route {
    const char *method, *path;
    const struct api_gen *gen;          /* generation endpoint, or */
    int (*handler)(struct http_req *r); /* plain handler */
    int open;                           /* no API key needed */
    int probe; /* health checks, scrapes and the page's polls: counted in /metrics and logged
                  at debug, but a success is not a stats row (the dashboard polls every 5 s) */
};

static const struct route routes[] = {
    {"POST", "/generate", &api_native_generate, NULL, 0, 0},
    {"POST", "/api/generate", &api_ollama_generate, NULL, 0, 0},
    {"POST", "/api/chat", &api_ollama_chat, NULL, 0, 0},
    {"GET", "/api/tags", NULL, api_ollama_tags, 0, 0},
    {"GET", "/api/version", NULL, api_ollama_version, 0, 0},
    {"POST", "/api/show", NULL, api_ollama_show, 0, 0},
    {"GET", "/api/ps", NULL, api_ollama_ps, 0, 0},
    {"POST", "/v1/chat/completions", &api_openai_chat, NULL, 0, 0},
    {"GET", "/v1/models", NULL, api_openai_models, 0, 0},
    {"GET", "/health", NULL, api_health, 1, 1},
    {"GET", "/ready", NULL, api_ready, 1, 1},
    {"GET", "/metrics", NULL, api_metrics, 0, 1},
    {"GET", "/stats", NULL, api_stats, 0, 1},
    {"GET", "/", NULL, api_index, 1, 1},
    {"GET", "/samples", NULL, api_samples, 1, 1},
};
#define NROUTES (sizeof routes / sizeof routes[0])

struct form_field {
    char key[32];
    int is_file;
    struct sbuf value;
};

/* A connection's phase, for the head and body deadlines the watchdog enforces. */
enum conn_phase { PHASE_HEAD, PHASE_BODY, PHASE_REPLY };

struct conn_slot {
    struct conn_slot *prev, *next;
    MHD_socket fd;
    int phase;    /* enum conn_phase */
    double since; /* job_now() when the phase began */
    int cut;      /* shut down by the watchdog */
};

struct rate_slot {
    char addr[64];
    double tokens, t;
};

/* A daemon and the PEM text it was started with (MHD keeps pointers into it). */
struct listener {
    struct MHD_Daemon *d;
    char *cert, *key; /* NULL without TLS */
    struct listener *next;
};

struct http {
    struct server *srv;
    struct listener *cur;     /* accepts new connections */
    struct listener *retired; /* quiesced by a reload, serving their last connections; under mu */
    int port;
    int generating; /* generation requests past the drain check, not yet completed; atomic */
    /* connections and their phases, under mu; the watchdog cuts the slow ones */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct conn_slot conns; /* list head */
    pthread_t watchdog;
    int has_watchdog, stop;
    struct rate_slot rate[RATE_SLOTS]; /* under mu */
    /* log lines about refused requests: a token bucket, under mu */
    double log_tokens, log_t;
    long log_suppressed;
};

struct http_req {
    struct http *h;
    struct server *srv;
    struct MHD_Connection *conn;
    const struct route *route;
    const char *endpoint; /* label for metrics and stats */
    char method[8];
    double t0, wall0;
    char request_id[40];
    char client[64]; /* the peer, or the address a trusted proxy forwarded for */
    char peer[64];   /* the socket's other end, when it is a trusted proxy ("" otherwise) */
    struct sbuf body;
    long long body_seen;
    struct MHD_PostProcessor *pp;
    struct form_field form[MAX_FORM_FIELDS];
    int nform;
    struct api_error early; /* an error found while the body was arriving */
    int has_early;
    int status; /* status of the queued response, 0 = none yet */
    char error[256];
    char allow[64];  /* for 405 */
    struct job *job; /* set once a generation job exists: it records the stats */
    char cors[256];  /* the Origin to allow in the reply ("" = no CORS headers) */
    int preflight;   /* an OPTIONS request */
    int stranger;    /* refused before any route ran: counted in metrics, never stored */
    int counted;     /* in h->generating until on_completed */
    long long discarded;
};

/* ---------- replies ---------- */

struct server *http_server(struct http_req *r)
{
    return r->srv;
}

const char *http_body(struct http_req *r, size_t *len)
{
    *len = r->body.len;
    return r->body.p ? r->body.p : "";
}

const char *http_query(struct http_req *r, const char *key)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key);
}

static void common_headers(struct http_req *r, struct MHD_Response *resp)
{
    MHD_add_response_header(resp, "X-Request-Id", r->request_id);
    MHD_add_response_header(resp, "Server", "ternd/" TERN_VERSION);
    if (r->cors[0]) {
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", r->cors);
        MHD_add_response_header(resp, "Access-Control-Expose-Headers", "X-Request-Id, Retry-After");
        MHD_add_response_header(resp, "Vary", "Origin");
    }
    if (!__atomic_load_n(&r->srv->ready, __ATOMIC_ACQUIRE))
        MHD_add_response_header(resp, "Connection", "close"); /* draining: go elsewhere */
}

void http_reply(struct http_req *r, int status, const char *content_type, const void *body,
                size_t len)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!resp) return;
    MHD_add_response_header(resp, "Content-Type", content_type);
    common_headers(r, resp);
    if (status == 503) {
        int active, queued;
        sched_snapshot(r->srv->sched, &active, &queued);
        char ra[16];
        snprintf(ra, sizeof ra, "%d", 1 + queued / (r->srv->cfg->slots ? r->srv->cfg->slots : 1));
        MHD_add_response_header(resp, "Retry-After", ra);
    }
    if (status == 429) MHD_add_response_header(resp, "Retry-After", "1");
    if (status == 401) MHD_add_response_header(resp, "WWW-Authenticate", "Bearer");
    if (status == 405 || (r->preflight && status == 204))
        MHD_add_response_header(resp, "Allow", r->allow);
    if (r->preflight && status == 204 && r->cors[0]) {
        MHD_add_response_header(resp, "Access-Control-Allow-Methods", r->allow);
        MHD_add_response_header(resp, "Access-Control-Allow-Headers",
                                "Authorization, Content-Type, X-Api-Key");
        MHD_add_response_header(resp, "Access-Control-Max-Age", "600");
    }
    /* MHD refuses a response queued mid-body: the caller then closes the connection. */
    if (MHD_queue_response(r->conn, (unsigned)status, resp) == MHD_YES) r->status = status;
    MHD_destroy_response(resp);
}

void http_reply_json(struct http_req *r, int status, cJSON *body)
{
    char *s = body ? cJSON_PrintUnformatted(body) : NULL;
    cJSON_Delete(body);
    if (!s) {
        static const char oom[] =
            "{\"error\":{\"type\":\"internal\",\"message\":\"out of memory\"}}";
        http_reply(r, 500, "application/json", oom, sizeof oom - 1);
        return;
    }
    size_t n = strlen(s);
    s[n] = '\n'; /* replaces the NUL: send a trailing newline like curl-friendly APIs do */
    http_reply(r, status, "application/json", s, n + 1);
    free(s);
}

void http_reply_error(struct http_req *r, const struct api_error *e)
{
    snprintf(r->error, sizeof r->error, "%s", e->message);
    int ollama = strncmp(r->endpoint ? r->endpoint : "", "/api/", 5) == 0;
    http_reply_json(r, e->status, ollama ? codec_error_json_ollama(e) : codec_error_json(e));
}

static void fail(struct http_req *r, int status, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void fail(struct http_req *r, int status, const char *type, const char *fmt, ...)
{
    struct api_error e;
    va_list ap;
    va_start(ap, fmt);
    codec_vfail(&e, status, type, fmt, ap);
    va_end(ap);
    http_reply_error(r, &e);
}

/* Notes an error found before the body is in; it is replied when the request ends (413 at
 * once). */
static void early(struct http_req *r, int status, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void early(struct http_req *r, int status, const char *type, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    codec_vfail(&r->early, status, type, fmt, ap);
    va_end(ap);
    r->has_early = 1;
}

/* ---------- stats records ---------- */

static void fill_record(struct stats_record *rec, struct http_req *r)
{
    memset(rec, 0, sizeof *rec);
    rec->received_at = r->wall0;
    snprintf(rec->request_id, sizeof rec->request_id, "%s", r->request_id);
    snprintf(rec->endpoint, sizeof rec->endpoint, "%s", r->endpoint);
    snprintf(rec->client, sizeof rec->client, "%s", r->client);
    snprintf(rec->model, sizeof rec->model, "%s", r->srv->info.name);
    rec->http_status = r->status;
    snprintf(rec->error, sizeof rec->error, "%s", r->error);
    snprintf(rec->status, sizeof rec->status, "%s",
             r->status == 503   ? "rejected"
             : r->status >= 400 ? "error"
                                : "ok");
    rec->prompt_tokens = rec->image_tokens = rec->completion_tokens = -1;
    rec->queue_ms = rec->vision_ms = rec->prefill_ms = rec->ttft_ms = rec->decode_ms = -1;
    rec->decode_tokens_per_s = -1;
    rec->total_ms = (job_now() - r->t0) * 1e3;
    stats_rss(&rec->rss_kb, &rec->rss_peak_kb);
}

/* A generation job's row. */
static void fill_job_record(struct stats_record *r, struct job *j, struct server *srv)
{
    struct stats_record rec;
    memset(&rec, 0, sizeof rec);
    rec.received_at = stats_wall_now() - (job_now() - j->t_arrival);
    snprintf(rec.request_id, sizeof rec.request_id, "%s", j->request_id);
    snprintf(rec.endpoint, sizeof rec.endpoint, "%s", j->endpoint);
    snprintf(rec.client, sizeof rec.client, "%s", j->client);
    snprintf(rec.model, sizeof rec.model, "%s", j->model);
    rec.http_status = j->http_status;
    int done = j->done;
    if (j->http_status == 503)
        snprintf(rec.status, sizeof rec.status, "rejected");
    else if (j->http_status == 499 && done == DONE_NONE)
        snprintf(rec.status, sizeof rec.status, "cancelled");
    else
        snprintf(rec.status, sizeof rec.status, "%s", done ? job_done_name(done) : "error");
    snprintf(rec.error, sizeof rec.error, "%s", j->error);
    int ran = done != DONE_NONE && j->t.queue_ms >= 0;
    rec.prompt_tokens = ran ? j->prompt_tokens : -1;
    rec.image_tokens = ran ? j->image_tokens : -1;
    rec.completion_tokens = ran ? j->completion_tokens : -1;
    rec.queue_ms = j->t.queue_ms;
    rec.vision_ms = j->t.vision_ms;
    rec.prefill_ms = j->t.prefill_ms;
    rec.ttft_ms = j->t.ttft_ms;
    rec.decode_ms = j->t.decode_ms;
    rec.total_ms = j->t.total_ms >= 0 ? j->t.total_ms : (job_now() - j->t_arrival) * 1e3;
    rec.decode_tokens_per_s = j->completion_tokens > 1 && j->t.decode_ms > 0
                                  ? (j->completion_tokens - 1) / (j->t.decode_ms / 1e3)
                                  : -1;
    stats_rss(&rec.rss_kb, &rec.rss_peak_kb);
    if (ran) metrics_observe(srv->metrics, HIST_REQUEST_SECONDS, rec.total_ms / 1e3);
    *r = rec;
}

/* on_release of a generation job: the last owner (HTTP side or scheduler) writes its row,
 * unless it was written before the response's last bytes (record_final). */
static void record_job(struct job *j, void *ctx)
{
    if (j->recorded) return;
    struct stats_record rec;
    fill_job_record(&rec, j, ctx);
    stats_record(((struct server *)ctx)->stats, &rec);
}

/* The job is over and status is what the client gets: its row is committed (stats_sync_ms at
 * most) before the last line or the reply goes out, so a crash after the client saw the end
 * cannot lose it. Called on the HTTP thread, which holds a reference. */
static void record_final(struct server *srv, struct job *j, int status)
{
    if (!srv->stats || j->recorded) return;
    job_set_http_result(j, status, "");
    struct stats_record rec;
    fill_job_record(&rec, j, srv);
    (void)stats_record_sync(srv->stats, &rec, srv->cfg->stats_sync_ms);
    j->recorded = 1;
}

/* ---------- generation ---------- */

struct stream {
    struct http *h;
    struct job *job;
    const struct api_gen *gen;
    struct api_ctx ctx;
    int sock;
    struct sbuf out;
    size_t out_pos;
    char *take;
    size_t take_cap;
    int eof;
};

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    struct stream *st = cls;
    while (st->out_pos == st->out.len) {
        if (st->eof) return MHD_CONTENT_READER_END_OF_STREAM;
        st->out.len = st->out_pos = 0;
        int done = 0, any = 0;
        size_t n;
        /* Everything made since the last call, one chunk per token, sent together. */
        while ((n = job_take(st->job, &st->take, &st->take_cap, &done)) > 0) {
            st->gen->chunk(&st->ctx, st->take, n, &st->out);
            any = 1;
        }
        if (done) {
            record_final(st->h->srv, st->job, 200);
            st->gen->final(&st->ctx, st->job, &st->out);
            st->eof = 1;
        } else if (!any && job_wait(st->job, st->sock, 0) < 0) {
            job_cancel(st->job);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
    }
    size_t n = st->out.len - st->out_pos;
    if (n > max) n = max;
    memcpy(buf, st->out.p + st->out_pos, n);
    st->out_pos += n;
    return (ssize_t)n;
}

static void stream_free(void *cls)
{
    struct stream *st = cls;
    if (!st->eof) job_cancel(st->job);
    job_unref(st->job);
    sbuf_free(&st->out);
    free(st->take);
    free(st);
}

static int conn_fd(struct http_req *r)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

/* Multipart fields become a JSON object (numbers and booleans typed by field name); files
 * go straight to the job as images. */
static cJSON *form_to_json(struct http_req *r, struct job *j, struct api_error *e)
{
    static const char *numeric[] = {"max_tokens", "temperature",    "top_k", "top_p",
                                    "min_p",      "repeat_penalty", "seed"};
    cJSON *o = cJSON_CreateObject();
    for (int i = 0; i < r->nform; i++) {
        struct form_field *f = &r->form[i];
        const char *v = f->value.p ? f->value.p : "";
        if (f->is_file || strcmp(f->key, "image") == 0 || strcmp(f->key, "images") == 0) {
            if (codec_add_image_bytes(j, (const unsigned char *)v, f->value.len, &r->srv->limits,
                                      f->key, e) != 0) {
                cJSON_Delete(o);
                return NULL;
            }
            continue;
        }
        cJSON *item = NULL;
        for (size_t k = 0; k < sizeof numeric / sizeof *numeric && !item; k++)
            if (strcmp(f->key, numeric[k]) == 0) {
                char *end;
                double d = strtod(v, &end);
                if (end != v && *end == 0) item = cJSON_CreateNumber(d);
            }
        if (!item && strcmp(f->key, "stream") == 0) {
            if (!strcmp(v, "true") || !strcmp(v, "1"))
                item = cJSON_CreateTrue();
            else if (!strcmp(v, "false") || !strcmp(v, "0"))
                item = cJSON_CreateFalse();
        }
        if (!item) item = cJSON_CreateString(v);
        cJSON_AddItemToObject(o, f->key, item);
    }
    return o;
}

static int count_prompt_tokens(struct server *srv, const struct job *j)
{
    int total = 0;
    for (int i = 0; i < j->n_msgs; i++) {
        int n = srv->backend->ops->count_tokens(srv->backend, j->msgs[i].text);
        if (n < 0) return -1;
        total += n;
    }
    return total;
}

/* The request body as JSON: parsed from the bytes, or built from the multipart fields (whose
 * files go to j as images). On a bad body *e is set (the result may then be NULL). */
static cJSON *request_json(struct http_req *r, struct job *j, struct api_error *e)
{
    if (r->pp) return form_to_json(r, j, e);
    cJSON *root = cJSON_ParseWithLength(r->body.p ? r->body.p : "", r->body.len);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        long off = at && r->body.p && at >= r->body.p && at <= r->body.p + r->body.len
                       ? (long)(at - r->body.p)
                       : 0;
        codec_fail(e, 400, "invalid_request", "malformed JSON near byte %ld", off);
    } else if (!cJSON_IsObject(root)) {
        codec_fail(e, 400, "invalid_request", "request body must be a JSON object");
    }
    return root;
}

/* Fills j and ctx from the request through the route's codec and checks the prompt's length.
 * Returns 0, or -1 with *e. */
static int parse_job(struct http_req *r, struct job *j, struct api_ctx *ctx, int *stream,
                     struct api_error *e)
{
    struct server *srv = r->srv;
    const struct api_gen *gen = r->route->gen;
    cJSON *root = request_json(r, j, e);
    memset(ctx, 0, sizeof *ctx);
    snprintf(ctx->model, sizeof ctx->model, "%s", srv->info.name);
    snprintf(ctx->request_id, sizeof ctx->request_id, "%s", r->request_id);
    ctx->created_wall = r->wall0;
    *stream = gen->stream_default;
    if (!e->status && gen->parse(root, &srv->limits, j, ctx, stream, e) == 0) {
        int n = count_prompt_tokens(srv, j);
        if (n > srv->cfg->max_prompt_tokens)
            codec_fail(e, 422, "invalid_request", "prompt is %d tokens; the limit is %d", n,
                       srv->cfg->max_prompt_tokens);
    }
    cJSON_Delete(root);
    return e->status ? -1 : 0;
}

/* Stamps the job with this request (times, id, labels); from here on the job, not the
 * request, writes the stats row. */
static void adopt_job(struct http_req *r, struct job *j)
{
    struct server *srv = r->srv;
    j->t_arrival = r->t0;
    j->deadline = r->t0 + srv->cfg->request_timeout;
    snprintf(j->request_id, sizeof j->request_id, "%s", r->request_id);
    snprintf(j->endpoint, sizeof j->endpoint, "%s", r->endpoint);
    snprintf(j->client, sizeof j->client, "%s", r->client);
    snprintf(j->model, sizeof j->model, "%s", srv->info.name);
    j->on_release = record_job;
    j->on_release_ctx = srv;
    r->job = j;
}

/* Queues the job; when the scheduler refuses it, replies 503 and returns -1. */
static int submit_job(struct http_req *r, struct job *j)
{
    const struct config *c = r->srv->cfg;
    int rc = sched_submit(r->srv->sched, j);
    if (rc == SCHED_OK) return 0;
    if (rc == SCHED_FULL)
        fail(r, 503, "overloaded", "all %d slots are busy and %d requests are queued; retry later",
             c->slots, c->queue);
    else
        fail(r, 503, "unavailable", "the server is shutting down");
    return -1; /* on_completed gives the job r->error for its stats row */
}

/* A job that ended before any text (a prompt the engine refused, a deadline passed in the
 * queue) gets an error status rather than a 200. Returns 1 when it replied. */
static int reply_early_end(struct http_req *r, struct job *j, const struct job_progress *p)
{
    int est = p->error_status;
    if (p->done == DONE_ERROR && p->text_len == 0) {
        record_final(r->srv, j, est ? est : 500);
        fail(r, est ? est : 500, est == 422 ? "invalid_request" : "internal", "%s", j->error);
        return 1;
    }
    if (p->done == DONE_TIMEOUT && p->text_len == 0 && p->completion_tokens == 0) {
        record_final(r->srv, j, 503);
        fail(r, 503, "overloaded", "request deadline (%d s) passed before it could run",
             r->srv->cfg->request_timeout);
        return 1;
    }
    return 0;
}

/* The client hung up: stop its job. MHD_NO closes the connection. */
static enum MHD_Result client_gone(struct http_req *r, struct job *j)
{
    job_cancel(j);
    r->status = 499; /* nginx's "client closed request", for the stats row only */
    snprintf(r->error, sizeof r->error, "client disconnected");
    return MHD_NO;
}

/* "stream": false: wait for the end, then one JSON object from the job's whole text. */
static enum MHD_Result reply_whole(struct http_req *r, struct job *j, struct api_ctx *ctx, int sock,
                                   int done)
{
    while (!done) {
        if (job_wait(j, sock, 0) < 0) return client_gone(r, j);
        done = job_skip(j); /* the text stays in the job for whole() */
    }
    if (done == DONE_ERROR) {
        record_final(r->srv, j, j->error_status ? j->error_status : 500);
        fail(r, j->error_status ? j->error_status : 500, "internal", "%s", j->error);
        return MHD_YES;
    }
    record_final(r->srv, j, 200);
    http_reply_json(r, 200, r->route->gen->whole(ctx, j));
    return MHD_YES;
}

/* Streaming: a 200 whose body MHD pulls from stream_read as the job produces text. */
static void reply_stream(struct http_req *r, struct job *j, const struct api_ctx *ctx, int sock)
{
    const struct api_gen *gen = r->route->gen;
    struct stream *st = calloc(1, sizeof *st);
    if (!st) {
        fail(r, 500, "internal", "out of memory");
        return;
    }
    job_ref(j);
    st->h = r->h;
    st->job = j;
    st->gen = gen;
    st->ctx = *ctx;
    st->sock = sock;
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024,
                                                                  stream_read, st, stream_free);
    if (!resp) {
        stream_free(st);
        fail(r, 500, "internal", "out of memory");
        return;
    }
    MHD_add_response_header(resp, "Content-Type", gen->stream_type);
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    common_headers(r, resp);
    MHD_queue_response(r->conn, 200, resp);
    MHD_destroy_response(resp);
    r->status = 200;
}

/* A generation request, once its body is in: parse, queue, then answer whole or streamed.
 * Returns MHD_NO when the client went away (the connection is then closed). */
static enum MHD_Result run_generation(struct http_req *r)
{
    struct api_error e = {0, "", ""};
    struct api_ctx ctx;
    int stream;
    struct job *j = job_create();
    if (!j) {
        fail(r, 500, "internal", "out of memory");
        return MHD_YES;
    }
    if (parse_job(r, j, &ctx, &stream, &e) != 0) {
        job_unref(j);
        http_reply_error(r, &e);
        return MHD_YES;
    }
    adopt_job(r, j);
    if (submit_job(r, j) != 0) return MHD_YES;

    int sock = conn_fd(r);
    /* Headers wait for the first event so that a job ending before any text still gets a
     * proper status. */
    if (job_wait(j, sock, 0) < 0) return client_gone(r, j);
    struct job_progress p = job_progress(j);
    if (reply_early_end(r, j, &p)) return MHD_YES;
    if (!stream) return reply_whole(r, j, &ctx, sock, p.done);
    reply_stream(r, j, &ctx, sock);
    return MHD_YES;
}

/* ---------- MHD callbacks ---------- */

static enum MHD_Result on_form(void *cls, enum MHD_ValueKind kind, const char *key,
                               const char *filename, const char *content_type,
                               const char *transfer_encoding, const char *data, uint64_t off,
                               size_t size)
{
    (void)kind, (void)content_type, (void)transfer_encoding;
    struct http_req *r = cls;
    struct form_field *f = r->nform ? &r->form[r->nform - 1] : NULL;
    if (!f || off == 0 || strcmp(f->key, key) != 0) {
        if (r->nform == MAX_FORM_FIELDS) {
            early(r, 400, "invalid_request", "too many form fields (max %d)", MAX_FORM_FIELDS);
            return MHD_NO;
        }
        f = &r->form[r->nform++];
        snprintf(f->key, sizeof f->key, "%s", key);
        f->is_file = filename != NULL;
    }
    if (size && sbuf_add(&f->value, data, size) != 0) {
        early(r, 500, "internal", "out of memory");
        return MHD_NO;
    }
    return MHD_YES;
}

static const struct route *find_route(const char *method, const char *url, int *path_known)
{
    *path_known = 0;
    if (strcmp(method, "HEAD") == 0) method = "GET";
    for (size_t i = 0; i < NROUTES; i++) {
        if (strcmp(routes[i].path, url) != 0) continue;
        *path_known = 1;
        if (strcmp(routes[i].method, method) == 0 || strcmp(method, "OPTIONS") == 0)
            return &routes[i];
    }
    return NULL;
}

static void new_request_id(char *out, size_t n)
{
    unsigned char b[8];
    if (getrandom(b, sizeof b, GRND_NONBLOCK) != sizeof b) {
        static unsigned long long ctr;
        unsigned long long v =
            __atomic_add_fetch(&ctr, 1, __ATOMIC_RELAXED) ^ (unsigned long long)job_now();
        memcpy(b, &v, sizeof b);
    }
    snprintf(out, n, "req-%02x%02x%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3], b[4], b[5],
             b[6], b[7]);
}

static void client_addr(struct MHD_Connection *conn, char *out, size_t n)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    out[0] = 0;
    if (!ci || !ci->client_addr) return;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)n);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, (socklen_t)n);
}

static enum MHD_Result last_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    (void)kind;
    if (key && value && strcasecmp(key, "X-Forwarded-For") == 0) *(const char **)cls = value;
    return MHD_YES;
}

/* Behind a trusted proxy the client is the last X-Forwarded-For entry: the one that proxy
 * appended (haproxy's `option forwardfor` adds a header line of its own, so the last line).
 * Entries before it came from the client and could say anything. An entry that is not an IP
 * address leaves the proxy as the client. */
static void forwarded_client(struct http_req *r)
{
    const char *list = r->srv->cfg->trusted_proxies;
    if (!list[0] || !config_addr_listed(list, r->client)) return;
    const char *xff = NULL;
    MHD_get_connection_values(r->conn, MHD_HEADER_KIND, last_header, &xff);
    if (!xff) return;
    const char *p = strrchr(xff, ',');
    p = p ? p + 1 : xff;
    while (*p == ' ' || *p == '\t')
        p++;
    char addr[64];
    size_t n = strcspn(p, " \t");
    if (n == 0 || n >= sizeof addr) return;
    memcpy(addr, p, n);
    addr[n] = 0;
    unsigned char bin[16];
    if (inet_pton(AF_INET, addr, bin) != 1 && inet_pton(AF_INET6, addr, bin) != 1) return;
    memcpy(r->peer, r->client, sizeof r->peer);
    memcpy(r->client, addr, n + 1);
}

static int media_type_is(const char *ct, const char *type)
{
    size_t n = strlen(type);
    return strncasecmp(ct, type, n) == 0 && (ct[n] == 0 || ct[n] == ';' || ct[n] == ' ');
}

/* No route for method + url: 405 naming the methods the path has, or 404. */
static void no_route(struct http_req *r, const char *method, const char *url, int path_known)
{
    if (!path_known) {
        early(r, 404, "not_found", "no such endpoint: %s %s", method, url);
        return;
    }
    char *allow = r->allow;
    for (size_t i = 0; i < NROUTES; i++)
        if (strcmp(routes[i].path, url) == 0) {
            snprintf(allow + strlen(allow), sizeof r->allow - strlen(allow), "%s%s",
                     allow[0] ? ", " : "", routes[i].method);
            r->endpoint = routes[i].path; /* the label from the table: static storage */
        }
    early(r, 405, "method_not_allowed", "%s %s: allowed: %s", method, url, allow);
}

/* The API key of a route that needs one. Returns 0, or -1 with the 401 noted. */
static int check_api_key(struct http_req *r)
{
    if (r->route->open) return 0;
    const char *authz = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Authorization");
    const char *xkey = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-Api-Key");
    if (auth_check(r->srv->auth, authz, xkey)) return 0;
    early(r, 401, "authentication", "missing or invalid API key");
    return -1;
}

/* A POST's declared length and its Content-Type; multipart starts the form parser. */
static void check_body_headers(struct http_req *r, const char *url)
{
    const char *cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Content-Length");
    if (cl && strtoll(cl, NULL, 10) > r->srv->cfg->max_body_bytes) {
        early(r, 413, "payload_too_large",
              "request body of %s bytes exceeds the limit of %ld bytes", cl,
              r->srv->cfg->max_body_bytes);
        return;
    }
    const char *ct = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Content-Type");
    if (ct && media_type_is(ct, "multipart/form-data")) {
        if (r->route->gen != &api_native_generate) {
            early(r, 415, "unsupported_media_type", "%s accepts application/json only", url);
            return;
        }
        r->pp = MHD_create_post_processor(r->conn, 64 * 1024, on_form, r);
        if (!r->pp) early(r, 400, "invalid_request", "malformed multipart/form-data header");
        return;
    }
    /* Only types a web page cannot send without a CORS preflight: text/plain,
     * x-www-form-urlencoded or no type at all would let any site's page run a job. */
    if (!ct || !media_type_is(ct, "application/json"))
        early(r, 415, "unsupported_media_type",
              "Content-Type %s: send application/json or multipart/form-data", ct ? ct : "(none)");
}

struct list_item {
    const char *item;
    size_t n;
};

static int item_matches(const char *p, size_t len, void *arg)
{
    const struct list_item *it = arg;
    return (len == 1 && *p == '*') || (len == it->n && strncasecmp(p, it->item, it->n) == 0);
}

/* In a comma-separated list (case-insensitive, spaces around items ignored); "*" matches all. */
static int in_list(const char *list, const char *item, size_t n)
{
    struct list_item it = {item, n};
    return config_list_each(list, item_matches, &it);
}

/* DNS rebinding needs a name the attacker controls: IP literals, localhost and the names in
 * allowed_hosts are safe. No Host at all (HTTP/1.0) is no browser. */
static int host_allowed(const struct config *c, const char *host)
{
    if (!host) return 1;
    char name[256];
    size_t n = strlen(host);
    if (n >= sizeof name) return 0;
    if (host[0] == '[') return strchr(host, ']') != NULL; /* IPv6 literal */
    memcpy(name, host, n + 1);
    char *colon = strchr(name, ':');
    if (colon) *colon = 0;
    n = strlen(name);
    if (n && name[n - 1] == '.') name[--n] = 0;
    struct in_addr a;
    if (inet_pton(AF_INET, name, &a) == 1) return 1;
    if (strcasecmp(name, "localhost") == 0) return 1;
    if (n > 10 && strcasecmp(name + n - 10, ".localhost") == 0) return 1;
    return n && in_list(c->allowed_hosts, name, n);
}

/* Token bucket per address (rate_limit per second, bursts of twice that). Returns 1 when the
 * request may go on. */
static int rate_ok(struct http *h, const char *addr)
{
    int rate = h->srv->cfg->rate_limit;
    if (rate <= 0) return 1;
    unsigned hash = 2166136261u;
    for (const char *p = addr; *p; p++)
        hash = (hash ^ (unsigned char)*p) * 16777619u;
    double now = job_now();
    pthread_mutex_lock(&h->mu);
    struct rate_slot *s = &h->rate[hash % RATE_SLOTS];
    if (strcmp(s->addr, addr) != 0) { /* a new address, or one that took the place over */
        snprintf(s->addr, sizeof s->addr, "%s", addr);
        s->tokens = 2.0 * rate, s->t = now;
    }
    s->tokens += (now - s->t) * rate;
    if (s->tokens > 2.0 * rate) s->tokens = 2.0 * rate;
    s->t = now;
    int ok = s->tokens >= 1;
    if (ok) s->tokens -= 1;
    pthread_mutex_unlock(&h->mu);
    return ok;
}

/* An OPTIONS request: CORS preflight (allowed origins only) or a plain question. */
static void preflight(struct http_req *r, const char *url)
{
    r->preflight = 1;
    r->stranger = 1;
    for (size_t i = 0; i < NROUTES; i++)
        if (strcmp(routes[i].path, url) == 0)
            snprintf(r->allow + strlen(r->allow), sizeof r->allow - strlen(r->allow), "%s%s",
                     r->allow[0] ? ", " : "", routes[i].method);
    strncat(r->allow, ", OPTIONS", sizeof r->allow - strlen(r->allow) - 1);
    const char *origin = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Origin");
    if (origin && !r->cors[0]) {
        early(r, 403, "forbidden", "origin %s is not in cors_origins", origin);
        return;
    }
    http_reply(r, 204, "text/plain", "", 0);
}

/* Checks every request gets before its route: Host, rate, CORS origin. Returns 0, or -1
 * with the error noted. */
static int gatekeep(struct http_req *r)
{
    const struct config *c = r->srv->cfg;
    const char *host = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Host");
    if (!host_allowed(c, host)) {
        r->stranger = 1;
        early(r, 403, "forbidden", "Host %s is not allowed (allowed_hosts)", host);
        return -1;
    }
    if (!rate_ok(r->h, r->client)) {
        r->stranger = 1;
        early(r, 429, "rate_limited", "more than %d requests per second from %s", c->rate_limit,
              r->client);
        return -1;
    }
    const char *origin = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Origin");
    if (origin && in_list(c->cors_origins, origin, strlen(origin)))
        snprintf(r->cors, sizeof r->cors, "%s", origin);
    return 0;
}

/* First call for a request: everything decidable from the headers. */
static void first_call(struct http_req *r, const char *method, const char *url)
{
    int path_known;
    r->route = find_route(method, url, &path_known);
    r->endpoint = r->route ? r->route->path : path_known ? url : "unknown";
    if (gatekeep(r) != 0) return;
    if (!r->route) {
        r->stranger = 1;
        no_route(r, method, url, path_known);
        return;
    }
    if (strcmp(method, "OPTIONS") == 0) {
        preflight(r, url);
        return;
    }
    if (check_api_key(r) != 0) {
        r->stranger = 1;
        return;
    }
    if (r->route->gen) {
        /* Counted before the check, both sequentially consistent: shut_down either sees this
         * request in its count and waits for its answer to be sent, or this request sees the
         * drain. Counting only running jobs or open streams missed a request between its
         * check and its stream (body still arriving, or its job already done). A refused one
         * is not waited for: a balancer's retries must not keep a draining box up. */
        __atomic_add_fetch(&r->h->generating, 1, __ATOMIC_SEQ_CST);
        if (!__atomic_load_n(&r->srv->ready, __ATOMIC_SEQ_CST)) {
            __atomic_sub_fetch(&r->h->generating, 1, __ATOMIC_SEQ_CST);
            early(r, 503, "unavailable", "the server is draining: send it elsewhere");
            return;
        }
        r->counted = 1;
    }
    if (strcmp(r->route->method, "POST") == 0) check_body_headers(r, url);
}

/* A request's state, made on its first call. */
static struct http_req *new_request(struct http *h, struct MHD_Connection *conn, const char *method,
                                    const char *url)
{
    struct http_req *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->h = h;
    r->srv = h->srv;
    r->conn = conn;
    r->t0 = job_now();
    r->wall0 = stats_wall_now();
    new_request_id(r->request_id, sizeof r->request_id);
    client_addr(conn, r->client, sizeof r->client);
    forwarded_client(r);
    snprintf(r->method, sizeof r->method, "%s", method);
    first_call(r, method, url);
    /* A refused request with a large (or undeclared) body is answered before the body is
     * read (a client that sent "Expect: 100-continue" never sends it). A small one is read
     * and dropped so that the client sees the response rather than a reset connection. */
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
    const char *te = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Transfer-Encoding");
    int big = te || (cl && strtoll(cl, NULL, 10) > DRAIN_BODY_MAX);
    if (r->has_early && !r->status && (r->early.status == 413 || big))
        http_reply_error(r, &r->early);
    return r;
}

/* The next n bytes of the body: to the form parser or the JSON buffer, within the limit.
 * Returns -1 when the connection should be closed: a refused body that goes on past
 * max_body_bytes more (MHD cannot answer in the middle of a body). */
static int body_data(struct http_req *r, const char *data, size_t n)
{
    if (r->has_early) { /* discard the rest of a refused body, up to a bound */
        r->discarded += (long long)n;
        return r->discarded > r->srv->cfg->max_body_bytes ? -1 : 0;
    }
    r->body_seen += (long long)n;
    if (r->body_seen > r->srv->cfg->max_body_bytes) {
        early(r, 413, "payload_too_large", "request body exceeds the limit of %ld bytes",
              r->srv->cfg->max_body_bytes);
        sbuf_free(&r->body);
        return 0;
    }
    if (r->pp) {
        if (MHD_post_process(r->pp, data, n) != MHD_YES && !r->has_early)
            early(r, 400, "invalid_request", "malformed multipart/form-data body");
    } else if (sbuf_add(&r->body, data, n) != 0) {
        early(r, 500, "internal", "out of memory");
    }
    return 0;
}

/* The body is in: reply with the error noted on the way, or run the route. */
static enum MHD_Result last_call(struct http_req *r)
{
    if (r->status) return MHD_YES;
    if (r->has_early) {
        http_reply_error(r, &r->early);
        return MHD_YES;
    }
    if (r->route->gen) return run_generation(r);
    r->route->handler(r);
    if (!r->status) fail(r, 500, "internal", "handler produced no response");
    return MHD_YES;
}

/* ---------- slow clients ---------- */

/* Marks the phase of conn's connection (its socket context) for the watchdog. */
static void set_phase(struct http *h, struct MHD_Connection *conn, int phase)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct conn_slot *c = ci ? ci->socket_context : NULL;
    if (!c) return;
    pthread_mutex_lock(&h->mu);
    c->phase = phase;
    c->since = job_now();
    pthread_mutex_unlock(&h->mu);
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct http *h = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        struct conn_slot *c = calloc(1, sizeof *c);
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!c || !ci) {
            free(c);
            return;
        }
        c->fd = ci->connect_fd;
        c->phase = PHASE_HEAD;
        c->since = job_now();
        pthread_mutex_lock(&h->mu);
        c->next = h->conns.next, c->prev = &h->conns;
        h->conns.next->prev = c, h->conns.next = c;
        pthread_mutex_unlock(&h->mu);
        *socket_context = c;
    } else if (*socket_context) { /* closed: MHD closes the socket after this returns */
        struct conn_slot *c = *socket_context;
        pthread_mutex_lock(&h->mu);
        c->prev->next = c->next, c->next->prev = c->prev;
        pthread_mutex_unlock(&h->mu);
        free(c);
        *socket_context = NULL;
    }
}

/* Log lines about refused requests and cut connections: 20 a second at most, so a flood
 * cannot fill the disk. Returns the lines suppressed before this one, or -1 to suppress. */
static long log_permit(struct http *h)
{
    double now = job_now();
    pthread_mutex_lock(&h->mu);
    h->log_tokens += (now - h->log_t) * 20;
    if (h->log_tokens > 40) h->log_tokens = 40;
    h->log_t = now;
    long n = -1;
    if (h->log_tokens >= 1) {
        h->log_tokens -= 1;
        n = h->log_suppressed;
        h->log_suppressed = 0;
    } else {
        h->log_suppressed++;
    }
    pthread_mutex_unlock(&h->mu);
    return n;
}

/* MHD's idle timeout never fires for a client that trickles a byte a second: a connection
 * gets header_timeout for its request head and body_timeout for its body. The socket is shut
 * down (not closed: MHD owns it), so its thread sees end-of-file and closes it. */
static void reap_retired(struct http *h);

static void *watchdog_main(void *arg)
{
    struct http *h = arg;
    const struct config *c = h->srv->cfg;
    pthread_mutex_lock(&h->mu);
    while (!h->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 250 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&h->cv, &h->mu, &ts);
        if (h->retired) {
            pthread_mutex_unlock(&h->mu);
            reap_retired(h);
            pthread_mutex_lock(&h->mu);
            if (h->stop) break;
        }
        double now = job_now();
        int cut = 0;
        for (struct conn_slot *s = h->conns.next; s != &h->conns; s = s->next) {
            int limit = s->phase == PHASE_HEAD   ? c->header_timeout
                        : s->phase == PHASE_BODY ? c->body_timeout
                                                 : 0;
            if (!limit || s->cut || now - s->since <= limit) continue;
            shutdown(s->fd, SHUT_RDWR);
            s->cut = 1;
            cut++;
        }
        if (!cut) continue;
        pthread_mutex_unlock(&h->mu);
        long sup = log_permit(h);
        if (sup >= 0)
            log_info("closed %d connection%s too slow to send a request (header_timeout %d s, "
                     "body_timeout %d s)%s",
                     cut, cut == 1 ? "" : "s", c->header_timeout, c->body_timeout,
                     sup ? " (log lines suppressed)" : "");
        pthread_mutex_lock(&h->mu);
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)version;
    if (!*con_cls) {
        set_phase(cls, conn, strcmp(method, "POST") == 0 ? PHASE_BODY : PHASE_REPLY);
        *con_cls = new_request(cls, conn, method, url);
        return *con_cls ? MHD_YES : MHD_NO;
    }
    if (*upload_data_size) {
        int rc = body_data(*con_cls, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return rc == 0 ? MHD_YES : MHD_NO;
    }
    set_phase(cls, conn, PHASE_REPLY);
    return last_call(*con_cls);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct http *h = cls;
    set_phase(h, conn, PHASE_HEAD); /* a kept-alive connection waits for its next head */
    struct http_req *r = *con_cls;
    if (!r) return;
    *con_cls = NULL;
    if (r->counted) __atomic_sub_fetch(&h->generating, 1, __ATOMIC_SEQ_CST);
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && r->status == 0) r->status = 499;
    if (r->status == 0) r->status = 500;
    metrics_request(r->srv->metrics, r->endpoint, r->status);
    /* Access log: generations and errors at info, the rest (probes, scrapes) at debug;
     * strangers' lines are rate-limited. */
    long sup = r->stranger ? log_permit(h) : 0;
    if (sup >= 0)
        log_msg(r->route && r->route->gen ? LOG_LVL_INFO
                : r->status >= 400        ? LOG_LVL_INFO
                                          : LOG_LVL_DEBUG,
                "%s%s%s %s %s %d %.1f ms %s%s%s%s", r->client, r->peer[0] ? " via " : "", r->peer,
                r->method, r->endpoint, r->status, (job_now() - r->t0) * 1e3, r->request_id,
                r->error[0] ? " " : "", r->error,
                sup > 0 ? " (earlier lines about refused requests suppressed)" : "");
    if (r->stranger) {
        /* refused before any route ran: /metrics counts it, the stats DB does not */
    } else if (r->route && r->route->probe && r->status < 400) {
        /* a probe that succeeded: /metrics counts it */
    } else if (r->job) {
        struct job *j = r->job;
        job_set_http_result(j, r->status, r->error);
        job_unref(j);
    } else {
        struct stats_record rec;
        fill_record(&rec, r);
        stats_record(r->srv->stats, &rec);
    }
    if (r->pp) MHD_destroy_post_processor(r->pp);
    for (int i = 0; i < r->nform; i++)
        sbuf_free(&r->form[i].value);
    sbuf_free(&r->body);
    free(r);
}

/* The trial daemon's complaints: the caller reports the bad pair itself. */
static void mhd_log_quiet(void *cls, const char *fmt, va_list ap)
{
    (void)cls, (void)fmt, (void)ap;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    if (log_permit(cls) < 0) return;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n')
        msg[--n] = 0;
    log_warn("http: %s", msg);
}

#define PEM_MAX (1 << 20)

/* Reads a whole PEM file, NUL-terminated; NULL with err naming the file. */
static char *read_pem(const char *what, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s %s: cannot open: %s", what, path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(PEM_MAX + 1);
    size_t n = buf ? fread(buf, 1, PEM_MAX + 1, f) : 0;
    int bad = !buf || ferror(f) || n > PEM_MAX || n == 0;
    fclose(f);
    if (bad) {
        snprintf(err, errlen, "%s %s: %s", what, path,
                 !buf          ? "out of memory"
                 : n > PEM_MAX ? "larger than 1 MiB"
                               : "empty or unreadable");
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    if (!strstr(buf, "-----BEGIN ")) {
        snprintf(err, errlen, "%s %s: not a PEM file", what, path);
        free(buf);
        return NULL;
    }
    return buf;
}

static void listener_free(struct listener *l)
{
    if (!l) return;
    if (l->d) MHD_stop_daemon(l->d);
    free(l->cert);
    free(l->key);
    free(l);
}

/* Reads tls_cert and tls_key (when set) and proves GnuTLS accepts the pair by starting a
 * daemon that listens on nothing, so a bad pair is refused before anything depends on it. */
static struct listener *listener_load(const struct config *c, char *err, size_t errlen)
{
    struct listener *l = calloc(1, sizeof *l);
    if (!l) {
        snprintf(err, errlen, "http: out of memory");
        return NULL;
    }
    if (!c->tls_cert[0]) return l;
    if (!MHD_is_feature_supported(MHD_FEATURE_TLS)) {
        snprintf(err, errlen, "tls_cert is set but this libmicrohttpd was built without TLS");
        free(l);
        return NULL;
    }
    if (!(l->cert = read_pem("tls_cert", c->tls_cert, err, errlen)) ||
        !(l->key = read_pem("tls_key", c->tls_key, err, errlen))) {
        listener_free(l);
        return NULL;
    }
    struct MHD_Daemon *t =
        MHD_start_daemon(MHD_USE_TLS | MHD_USE_NO_LISTEN_SOCKET, 0, NULL, NULL, on_request, NULL,
                         MHD_OPTION_EXTERNAL_LOGGER, mhd_log_quiet, NULL, MHD_OPTION_HTTPS_MEM_CERT,
                         l->cert, MHD_OPTION_HTTPS_MEM_KEY, l->key, MHD_OPTION_END);
    if (!t) {
        snprintf(err, errlen,
                 "tls_cert %s / tls_key %s: not a usable certificate and private key pair "
                 "(PEM, the key unencrypted, matching the certificate)",
                 c->tls_cert, c->tls_key);
        listener_free(l);
        return NULL;
    }
    MHD_stop_daemon(t);
    return l;
}

/* Starts l's daemon: on the configured address when fd < 0, else on the listening socket fd
 * (taken from a quiesced daemon). */
static int listener_start(struct http *h, struct listener *l, MHD_socket fd, char *err,
                          size_t errlen)
{
    const struct config *c = h->srv->cfg;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                     MHD_USE_ERROR_LOG | MHD_USE_ITC | MHD_USE_POLL;
    if (l->cert) flags |= MHD_USE_TLS;
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, c->bind, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((unsigned short)c->port);
    } else if (inet_pton(AF_INET6, c->bind, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((unsigned short)c->port);
        flags |= MHD_USE_IPv6;
    } else {
        snprintf(err, errlen, "bind: '%s' is not an IPv4 or IPv6 address", c->bind);
        return -1;
    }
    /* Options common to both ways; the socket and the TLS pair are added at the end. */
    struct MHD_OptionItem opts[] = {
        {MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_log, h},
        {MHD_OPTION_CONNECTION_LIMIT, (intptr_t)c->max_connections, NULL},
        {MHD_OPTION_CONNECTION_TIMEOUT, (intptr_t)c->connection_timeout, NULL},
        {MHD_OPTION_CONNECTION_MEMORY_LIMIT, (intptr_t)c->max_header_bytes, NULL},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, h},
        {MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)on_connection, h},
        {MHD_OPTION_PER_IP_CONNECTION_LIMIT, (intptr_t)c->max_connections_per_client, NULL},
        {fd >= 0 ? MHD_OPTION_LISTEN_SOCKET : MHD_OPTION_SOCK_ADDR, fd >= 0 ? (intptr_t)fd : 0,
         fd >= 0 ? NULL : (void *)&ss},
        {l->cert ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, 0, l->cert},
        {l->cert ? MHD_OPTION_HTTPS_MEM_KEY : MHD_OPTION_END, 0, l->key},
        {MHD_OPTION_END, 0, NULL},
    };
    l->d = MHD_start_daemon(flags, (uint16_t)c->port, NULL, NULL, on_request, h, MHD_OPTION_ARRAY,
                            opts, MHD_OPTION_END);
    if (!l->d) {
        if (fd >= 0)
            snprintf(err, errlen, "http: cannot start a listener on the existing socket");
        else
            snprintf(err, errlen, "http: cannot listen on %s:%d (address in use or not available?)",
                     c->bind, c->port);
        return -1;
    }
    return 0;
}

struct http *http_start(struct server *srv, char *err, size_t errlen)
{
    const struct config *c = srv->cfg;
    struct http *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errlen, "http: out of memory");
        return NULL;
    }
    h->srv = srv;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    h->conns.next = h->conns.prev = &h->conns;
    h->log_tokens = 40, h->log_t = job_now();
    if (!(h->cur = listener_load(c, err, errlen)) || listener_start(h, h->cur, -1, err, errlen)) {
        listener_free(h->cur);
        pthread_mutex_destroy(&h->mu);
        pthread_cond_destroy(&h->cv);
        free(h);
        return NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->cur->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = di ? di->port : c->port;
    h->has_watchdog = pthread_create(&h->watchdog, NULL, watchdog_main, h) == 0;
    if (!h->has_watchdog) log_warn("http: no watchdog thread: slow clients are not cut off");
    return h;
}

int http_tls(const struct http *h)
{
    return h->cur->cert != NULL;
}

/* MHD cannot change a running daemon's certificate: the new pair is checked first, then the
 * old daemon is quiesced (it stops accepting and hands over its listening socket, which never
 * closes, so no connection attempt is refused) and a new daemon accepts on that socket. The old
 * one finishes its open connections with the old pair and is stopped by the watchdog once it
 * has none. Called from the main thread only. */
int http_reload_tls(struct http *h, char *err, size_t errlen)
{
    if (!h->cur->cert) return 0;
    struct listener *l = listener_load(h->srv->cfg, err, errlen);
    if (!l) return -1;
    MHD_socket fd = MHD_quiesce_daemon(h->cur->d);
    if (fd == MHD_INVALID_SOCKET) {
        snprintf(err, errlen, "http: cannot take the listening socket from the running daemon");
        listener_free(l);
        return -1;
    }
    if (listener_start(h, l, fd, err, errlen) != 0) {
        /* the socket is still open and listening: keep serving on it with the old pair */
        listener_free(l);
        struct listener *again = calloc(1, sizeof *again);
        if (again) again->cert = h->cur->cert, again->key = h->cur->key;
        char e2[256];
        if (!again || listener_start(h, again, fd, e2, sizeof e2) != 0) {
            free(again);
            close(fd);
            snprintf(err, errlen, "http: reload failed and the listener could not be restarted");
            return -1;
        }
        h->cur->cert = h->cur->key = NULL; /* now owned by again */
        l = again;
    }
    pthread_mutex_lock(&h->mu);
    h->cur->next = h->retired;
    h->retired = h->cur;
    h->cur = l;
    pthread_mutex_unlock(&h->mu);
    return 0;
}

/* Stops retired daemons with no connection left. MHD_stop_daemon waits for connection threads
 * that take mu in their callbacks, so it runs outside mu. */
static void reap_retired(struct http *h)
{
    struct listener *done = NULL;
    pthread_mutex_lock(&h->mu);
    for (struct listener **p = &h->retired; *p;) {
        const union MHD_DaemonInfo *di =
            MHD_get_daemon_info((*p)->d, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
        if (di && di->num_connections == 0) {
            struct listener *l = *p;
            *p = l->next;
            l->next = done;
            done = l;
        } else {
            p = &(*p)->next;
        }
    }
    pthread_mutex_unlock(&h->mu);
    while (done) {
        struct listener *n = done->next;
        listener_free(done);
        done = n;
    }
}

int http_port(const struct http *h)
{
    return h->port;
}

int http_active_generations(struct http *h)
{
    return __atomic_load_n(&h->generating, __ATOMIC_SEQ_CST);
}

void http_stop(struct http *h)
{
    if (!h) return;
    if (h->has_watchdog) {
        pthread_mutex_lock(&h->mu);
        h->stop = 1;
        pthread_cond_signal(&h->cv);
        pthread_mutex_unlock(&h->mu);
        pthread_join(h->watchdog, NULL);
    }
    listener_free(h->cur);
    while (h->retired) {
        struct listener *n = h->retired->next;
        listener_free(h->retired);
        h->retired = n;
    }
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    free(h);
}
