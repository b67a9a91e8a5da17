/* Ollama-compatible API: /api/generate, /api/chat (NDJSON streams, durations in
 * nanoseconds, Ollama's field names), /api/tags, /api/version. */
#include <stdio.h>
#include <string.h>

#include "api.h"
#include "http.h"

/* Ollama puts sampling under "options" and calls max_tokens num_predict (-1 = unlimited). */
static int parse_options(const cJSON *root, const struct api_limits *lim, struct job *j,
                         int *stream, struct api_error *e)
{
    codec_default_params(lim, &j->params);
    if (codec_get_bool(root, "stream", "", stream, e) < 0) return -1;
    const cJSON *opt;
    int rc = codec_get_object(root, "options", "", &opt, e);
    if (rc <= 0) return rc;
    long np = 0;
    if (codec_get_int(opt, "num_predict", "options.", -2, 1L << 30, &np, e) < 0) return -1;
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

int api_ollama_tags(struct http_req *r)
{
    struct server *srv = http_server(r);
    const struct backend_info *in = &srv->info;
    cJSON *root = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(root, "models");
    cJSON *m = cJSON_CreateObject();
    char ts[48], psize[32];
    codec_time_rfc3339(srv->started_wall, ts, sizeof ts);
    cJSON_AddStringToObject(m, "name", in->name);
    cJSON_AddStringToObject(m, "model", in->name);
    cJSON_AddStringToObject(m, "modified_at", ts);
    cJSON_AddNumberToObject(m, "size", (double)in->size_bytes);
    cJSON_AddStringToObject(m, "digest", "");
    cJSON *d = cJSON_AddObjectToObject(m, "details");
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
    cJSON_AddItemToArray(arr, m);
    http_reply_json(r, 200, root);
    return 0;
}

int api_ollama_version(struct http_req *r)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "version", TERN_VERSION);
    http_reply_json(r, 200, o);
    return 0;
}
