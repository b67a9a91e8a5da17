/* Ollama-compatible API: /api/generate, /api/chat (NDJSON streams, durations in
 * nanoseconds, Ollama's field names, "format" for constrained output), /api/tags, /api/show,
 * /api/ps, /api/version. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "api.h"
#include "http.h"

/* Ollama's options that ternd does not implement (docs/api.md lists each and why). Runtime
 * tuning is ternd.conf's business and never changes an answer, so clients' usual values pass;
 * a sampler ternd lacks passes only switched off. */
static const struct codec_neutral ollama_options[] = {
    {"num_thread", NEUTRAL_IGNORE, 0, ""},
    {"num_gpu", NEUTRAL_IGNORE, 0, ""},
    {"main_gpu", NEUTRAL_IGNORE, 0, ""},
    {"num_batch", NEUTRAL_IGNORE, 0, ""},
    {"low_vram", NEUTRAL_IGNORE, 0, ""},
    {"f16_kv", NEUTRAL_IGNORE, 0, ""},
    {"logits_all", NEUTRAL_IGNORE, 0, ""},
    {"vocab_only", NEUTRAL_IGNORE, 0, ""},
    {"use_mmap", NEUTRAL_IGNORE, 0, ""},
    {"use_mlock", NEUTRAL_IGNORE, 0, ""},
    {"numa", NEUTRAL_IGNORE, 0, ""},
    {"num_keep", NEUTRAL_IGNORE, 0, ""},
    {"penalize_newline", NEUTRAL_IGNORE, 0, ""},
    {"mirostat_tau", NEUTRAL_IGNORE, 0, ""},
    {"mirostat_eta", NEUTRAL_IGNORE, 0, ""},
    {"mirostat", NEUTRAL_NUMBER, 0, "Mirostat sampling is not supported (only 0, off)"},
    {"typical_p", NEUTRAL_NUMBER, 1, "locally typical sampling is not supported (only 1, off)"},
    {"tfs_z", NEUTRAL_NUMBER, 1, "tail-free sampling is not supported (only 1, off)"},
    {"presence_penalty", NEUTRAL_NUMBER, 0, "not supported (only 0); use repeat_penalty"},
    {"frequency_penalty", NEUTRAL_NUMBER, 0, "not supported (only 0); use repeat_penalty"},
    {"repeat_last_n", NEUTRAL_NUMBER, 64, "the repeat penalty's window is fixed at 64 tokens"},
};
/* The options ternd implements (max_tokens: the native name, kept as an alias). */
static const char *const ollama_supported[] = {
    "num_predict", "num_ctx", "seed",  "stop",           "temperature",
    "top_k",       "top_p",   "min_p", "repeat_penalty", "max_tokens",
};

/* Request fields of /api/generate and /api/chat that ask for what ternd does not do. */
static const struct codec_neutral ollama_request[] = {
    {"suffix", NEUTRAL_EMPTY, 0, "fill-in-the-middle is not supported"},
    {"template", NEUTRAL_EMPTY, 0, "ternd always applies the model's own chat template"},
    {"raw", NEUTRAL_FALSE, 0, "raw prompts are not supported; the model's chat template applies"},
    {"context", NEUTRAL_EMPTY, 0,
     "token contexts are not supported; send the conversation to /api/chat"},
    {"think", NEUTRAL_FALSE, 0, "the model does not support thinking"},
    {"tools", NEUTRAL_EMPTY, 0, "tool calling is not supported"},
};
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Every key of options must be one ternd knows: a typo is an error, not a silent default. */
static int check_option_names(const cJSON *opt, struct api_error *e)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, opt)
    {
        int known = codec_neutral_find(ollama_options, COUNT(ollama_options), it->string) != NULL;
        for (size_t i = 0; i < COUNT(ollama_supported) && !known; i++)
            known = !strcmp(it->string, ollama_supported[i]);
        if (!known)
            return codec_fail(e, 400, "invalid_request",
                              "options.%s: unknown option (docs/api.md lists the supported ones)",
                              it->string);
    }
    return codec_check_neutral(opt, "options.", ollama_options, COUNT(ollama_options), e);
}

/* A decimal as Go durations write it ("5", "1.5", ".5"): returns its end, or NULL. */
static const char *scan_decimal(const char *p)
{
    const char *start = p;
    while (isdigit((unsigned char)*p))
        p++;
    int digits = p > start;
    if (*p == '.') {
        const char *frac = ++p;
        while (isdigit((unsigned char)*p))
            p++;
        digits |= p > frac;
    }
    return digits ? p : NULL;
}

/* A Go duration ("5m", "1h30m", "-1s", "250ms", "0") or a bare number (seconds). */
static int valid_duration(const char *p)
{
    static const char *const units[] = {"ns", "us", "\xc2\xb5s", "ms", "s", "m", "h"};
    if (*p == '-' || *p == '+') p++;
    const char *end = scan_decimal(p);
    if (end && !*end) return 1;
    while (end && *p) {
        if (!(end = scan_decimal(p))) return 0;
        size_t unit = 0; /* the longest unit that follows: "ms" rather than "m" */
        for (size_t i = 0; i < COUNT(units); i++) {
            size_t n = strlen(units[i]);
            if (n > unit && !strncmp(end, units[i], n)) unit = n;
        }
        if (!unit) return 0;
        p = end + unit;
    }
    return end != NULL;
}

/* keep_alive: a duration or a number of seconds (a number or text). ternd keeps its one model
 * loaded whatever it says (docs/api.md), so it is only checked. */
static int check_keep_alive(const cJSON *root, struct api_error *e)
{
    const cJSON *ka = cJSON_GetObjectItemCaseSensitive(root, "keep_alive");
    if (!ka || cJSON_IsNull(ka) || cJSON_IsNumber(ka)) return 0;
    if (!cJSON_IsString(ka) || !valid_duration(ka->valuestring))
        return codec_fail(e, 400, "invalid_request",
                          "keep_alive: expected a duration such as \"5m\" or a number of seconds");
    return 0;
}

/* Ollama puts sampling under "options" and calls max_tokens num_predict (-1 = unlimited). */
static int parse_options(const cJSON *root, const struct api_limits *lim, struct job *j,
                         int *stream, struct api_error *e)
{
    codec_default_params(lim, &j->params);
    if (codec_get_bool(root, "stream", "", stream, e) < 0) return -1;
    if (check_keep_alive(root, e) != 0) return -1;
    if (codec_check_neutral(root, "", ollama_request, COUNT(ollama_request), e) != 0) return -1;
    if (codec_format(root, "", 0, &j->params, e) != 0) return -1;
    const cJSON *opt;
    int rc = codec_get_object(root, "options", "", &opt, e);
    if (rc <= 0) return rc;
    if (check_option_names(opt, e) != 0) return -1;
    long np = 0, nctx;
    if (codec_get_int(opt, "num_predict", "options.", -2, 1L << 30, &np, e) < 0) return -1;
    /* Each slot's context is fixed at start-up (ctx_size, capped at the model's) whatever a
     * request asks: a smaller num_ctx shrinks nothing, a larger one is clamped to it, as Ollama
     * clamps to the model's. */
    if (codec_get_int(opt, "num_ctx", "options.", 1, 1L << 30, &nctx, e) < 0) return -1;
    cJSON *copy = cJSON_Duplicate(opt, 1);
    if (!copy) return codec_fail(e, 500, "internal", "out of memory");
    cJSON_DeleteItemFromObjectCaseSensitive(copy, "num_predict");
    rc = codec_sampling(copy, "options.", "max_tokens", lim, &j->params, e);
    cJSON_Delete(copy);
    if (rc != 0) return -1;
    if (np > 0) {
        if (np > lim->max_tokens)
            return codec_fail(e, 422, "invalid_request",
                              "options.num_predict: %ld exceeds the server limit of %d", np,
                              lim->max_tokens);
        j->params.max_tokens = (int)np;
    } else if (np < 0) {
        j->params.max_tokens = lim->max_tokens;
    }
    return 0;
}

static int generate_parse(const cJSON *root, const struct api_limits *lim, struct job *j,
                          struct api_ctx *c, int *stream, struct api_error *e)
{
    const char *prompt, *system;
    if (codec_get_model(root, c->model, sizeof c->model, e) != 0) return -1;
    if (codec_get_prompt(root, &prompt, &system, e) != 0) return -1;
    if (codec_add_images(root, "", 0, lim, j, e) != 0) return -1;
    if (parse_options(root, lim, j, stream, e) != 0) return -1;
    return codec_add_prompt(j, prompt, system, e);
}

/* An Ollama message: a string "content" and its own base64 "images". */
static int message_content(const cJSON *m, const char *where, const struct api_limits *lim,
                           struct job *j, struct sbuf *text, struct api_error *e)
{
    const char *content = NULL;
    if (codec_get_string(m, "content", where, &content, e) < 0) return -1;
    if (content && sbuf_add(text, content, strlen(content)) != 0)
        return codec_fail(e, 500, "internal", "out of memory");
    return codec_add_images(m, where, 0, lim, j, e);
}

static int chat_parse(const cJSON *root, const struct api_limits *lim, struct job *j,
                      struct api_ctx *c, int *stream, struct api_error *e)
{
    if (codec_get_model(root, c->model, sizeof c->model, e) != 0) return -1;
    if (codec_messages(root, 0, message_content, lim, j, e) != 0) return -1;
    return parse_options(root, lim, j, stream, e);
}

static void base(cJSON *o, struct api_ctx *c)
{
    char ts[48];
    codec_time_rfc3339(stats_wall_now(), ts, sizeof ts);
    cJSON_AddStringToObject(o, "model", c->model);
    cJSON_AddStringToObject(o, "created_at", ts);
}

static void add_message(cJSON *o, const char *text)
{
    cJSON *m = cJSON_AddObjectToObject(o, "message");
    cJSON_AddStringToObject(m, "role", "assistant");
    cJSON_AddStringToObject(m, "content", text);
}

/* The text: "message" for /api/chat, "response" for /api/generate. */
static void add_text(cJSON *o, int chat, const char *text)
{
    if (chat)
        add_message(o, text);
    else
        cJSON_AddStringToObject(o, "response", text);
}

static void add_final_fields(cJSON *o, struct job *j)
{
    /* Called with j->mu held. */
    api_done_fields(o, j);
    double ns = 1e6;
    double pre =
        (j->t.vision_ms > 0 ? j->t.vision_ms : 0) + (j->t.prefill_ms > 0 ? j->t.prefill_ms : 0);
    cJSON_AddNumberToObject(o, "total_duration",
                            (double)(long long)((j->t.total_ms > 0 ? j->t.total_ms : 0) * ns));
    cJSON_AddNumberToObject(o, "load_duration", 0);
    cJSON_AddNumberToObject(o, "prompt_eval_count", j->prompt_tokens);
    cJSON_AddNumberToObject(o, "prompt_eval_duration", (double)(long long)(pre * ns));
    cJSON_AddNumberToObject(o, "eval_count", j->completion_tokens);
    cJSON_AddNumberToObject(o, "eval_duration",
                            (double)(long long)((j->t.decode_ms > 0 ? j->t.decode_ms : 0) * ns));
}

static void chunk(struct api_ctx *c, const char *text, int chat, struct sbuf *out)
{
    cJSON *o = cJSON_CreateObject();
    base(o, c);
    add_text(o, chat, text);
    cJSON_AddBoolToObject(o, "done", 0);
    sbuf_add_json_line(out, o);
}

static void generate_chunk(struct api_ctx *c, const char *text, size_t n, struct sbuf *out)
{
    (void)n;
    chunk(c, text, 0, out);
}

static void chat_chunk(struct api_ctx *c, const char *text, size_t n, struct sbuf *out)
{
    (void)n;
    chunk(c, text, 1, out);
}

static cJSON *final_obj(struct api_ctx *c, struct job *j, int chat, int whole)
{
    cJSON *o = cJSON_CreateObject();
    base(o, c);
    pthread_mutex_lock(&j->mu);
    const char *text = whole && j->text ? j->text : "";
    add_text(o, chat, text);
    add_final_fields(o, j);
    pthread_mutex_unlock(&j->mu);
    return o;
}

static void generate_final(struct api_ctx *c, struct job *j, struct sbuf *out)
{
    sbuf_add_json_line(out, final_obj(c, j, 0, 0));
}

static void chat_final(struct api_ctx *c, struct job *j, struct sbuf *out)
{
    sbuf_add_json_line(out, final_obj(c, j, 1, 0));
}

static cJSON *generate_whole(struct api_ctx *c, struct job *j)
{
    return final_obj(c, j, 0, 1);
}
static cJSON *chat_whole(struct api_ctx *c, struct job *j)
{
    return final_obj(c, j, 1, 1);
}

const struct api_gen api_ollama_generate = {
    "/api/generate", "application/x-ndjson", 1, generate_parse, generate_chunk,
    generate_final,  generate_whole,
};

const struct api_gen api_ollama_chat = {
    "/api/chat", "application/x-ndjson", 1, chat_parse, chat_chunk, chat_final, chat_whole,
};

/* "details", as /api/tags, /api/show and /api/ps give it. */
static cJSON *details_json(const struct backend_info *in)
{
    char psize[32];
    cJSON *d = cJSON_CreateObject();
    cJSON_AddStringToObject(d, "parent_model", "");
    cJSON_AddStringToObject(d, "format", "gguf");
    cJSON_AddStringToObject(d, "family", in->family);
    cJSON *fam = cJSON_AddArrayToObject(d, "families");
    cJSON_AddItemToArray(fam, cJSON_CreateString(in->family));
    if (in->has_vision) cJSON_AddItemToArray(fam, cJSON_CreateString("clip"));
    if (in->params >= 1000000000)
        snprintf(psize, sizeof psize, "%.1fB", (double)in->params / 1e9);
    else
        snprintf(psize, sizeof psize, "%.1fM", (double)in->params / 1e6);
    cJSON_AddStringToObject(d, "parameter_size", psize);
    cJSON_AddStringToObject(d, "quantization_level", in->quant);
    return d;
}

/* The fields a model entry of /api/tags and /api/ps share. */
static cJSON *model_entry(const struct server *srv)
{
    const struct backend_info *in = &srv->info;
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "name", in->name);
    cJSON_AddStringToObject(m, "model", in->name);
    cJSON_AddNumberToObject(m, "size", (double)in->size_bytes);
    cJSON_AddStringToObject(m, "digest", "");
    cJSON_AddItemToObject(m, "details", details_json(in));
    return m;
}

int api_ollama_tags(struct http_req *r)
{
    struct server *srv = http_server(r);
    cJSON *root = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(root, "models");
    cJSON *m = model_entry(srv);
    char ts[48];
    codec_time_rfc3339(srv->started_wall, ts, sizeof ts);
    cJSON_AddStringToObject(m, "modified_at", ts);
    cJSON_AddItemToArray(arr, m);
    http_reply_json(r, 200, root);
    return 0;
}

/* The context each slot really has: the engine caps ctx_size at the model's training context. */
static int slot_context(const struct server *srv)
{
    return srv->info.ctx_size > 0 ? srv->info.ctx_size : srv->cfg->ctx_size;
}

/* Go's longest duration, which Ollama adds to the time for a model kept "forever". */
#define FOREVER_S 9223372036.854775807

/* The loaded model. ternd loads its one model at start-up and keeps it until it stops, which
 * is Ollama's keep_alive < 0: expires_at is as far away as Ollama shows for that. */
int api_ollama_ps(struct http_req *r)
{
    struct server *srv = http_server(r);
    cJSON *root = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(root, "models");
    cJSON *m = model_entry(srv);
    char ts[48];
    codec_time_rfc3339(stats_wall_now() + FOREVER_S, ts, sizeof ts);
    cJSON_AddStringToObject(m, "expires_at", ts);
    cJSON_AddNumberToObject(m, "size_vram", 0);
    cJSON_AddNumberToObject(m, "context_length", slot_context(srv));
    cJSON_AddItemToArray(arr, m);
    http_reply_json(r, 200, root);
    return 0;
}

/* POST /api/show {"model"} (older clients: "name"): the one model, whatever it is called. */
int api_ollama_show(struct http_req *r)
{
    struct server *srv = http_server(r);
    const struct backend_info *in = &srv->info;
    const struct config *cfg = srv->cfg;
    struct api_error e = {0, "", ""};
    size_t len;
    const char *body = http_body(r, &len);
    cJSON *req = cJSON_ParseWithLength(body, len);
    const char *name = NULL;
    int verbose = 0;
    if (!cJSON_IsObject(req))
        codec_fail(&e, 400, "invalid_request", "request body must be a JSON object");
    else if (codec_get_string(req, "model", "", &name, &e) == 0)
        codec_get_string(req, "name", "", &name, &e);
    if (!e.status) codec_get_bool(req, "verbose", "", &verbose, &e);
    cJSON_Delete(req);
    if (e.status) {
        http_reply_error(r, &e);
        return 0;
    }
    cJSON *o = cJSON_CreateObject();
    char text[CONFIG_STR + 256], ts[48];
    snprintf(text, sizeof text,
             "# served by ternd: one model, loaded until ternd stops\nFROM %s\n"
             "PARAMETER num_ctx %d\nPARAMETER num_predict %d\nPARAMETER temperature 0\n",
             strcmp(cfg->engine, "echo") ? cfg->model : "echo (the test double, no model file)",
             slot_context(srv), cfg->default_max_tokens);
    cJSON_AddStringToObject(o, "modelfile", text);
    snprintf(text, sizeof text, "num_ctx %d\nnum_predict %d\ntemperature 0", slot_context(srv),
             cfg->default_max_tokens);
    cJSON_AddStringToObject(o, "parameters", text);
    /* The model's own chat template (from its GGUF) applies; it is not in Go's syntax. */
    cJSON_AddStringToObject(o, "template", "");
    cJSON_AddItemToObject(o, "details", details_json(in));
    cJSON *mi = cJSON_AddObjectToObject(o, "model_info");
    cJSON_AddStringToObject(mi, "general.architecture", in->family);
    cJSON_AddStringToObject(mi, "general.name", in->name);
    cJSON_AddNumberToObject(mi, "general.parameter_count", (double)in->params);
    snprintf(text, sizeof text, "%s.context_length", in->family);
    cJSON_AddNumberToObject(mi, text, slot_context(srv));
    if (in->has_vision) {
        cJSON *pi = cJSON_AddObjectToObject(o, "projector_info");
        cJSON_AddBoolToObject(pi, "clip.has_vision_encoder", 1);
    }
    cJSON *caps = cJSON_AddArrayToObject(o, "capabilities");
    cJSON_AddItemToArray(caps, cJSON_CreateString("completion"));
    if (in->has_vision) cJSON_AddItemToArray(caps, cJSON_CreateString("vision"));
    codec_time_rfc3339(srv->started_wall, ts, sizeof ts);
    cJSON_AddStringToObject(o, "modified_at", ts);
    http_reply_json(r, 200, o);
    return 0;
}

int api_ollama_version(struct http_req *r)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "version", TERN_VERSION);
    http_reply_json(r, 200, o);
    return 0;
}
