/* OpenAI-compatible API: POST /v1/chat/completions (content parts with image_url data URIs,
 * SSE stream ending "data: [DONE]", stream_options.include_usage, response_format) and
 * GET /v1/models. */
#include <assert.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "api.h"
#include "http.h"

/* {"type":"image_url","image_url":{"url":"data:..."}} or "image_url":"data:...". */
static int image_part(const cJSON *part, const char *pw, const struct api_limits *lim,
                      struct job *j, struct api_error *e)
{
    const cJSON *iu = cJSON_GetObjectItemCaseSensitive(part, "image_url");
    const char *url = NULL;
    char f[80];
    snprintf(f, sizeof f, "%simage_url.", pw);
    if (cJSON_IsString(iu))
        url = iu->valuestring;
    else if (cJSON_IsObject(iu) && codec_get_string(iu, "url", f, &url, e) < 0)
        return -1;
    if (!url) return codec_fail(e, 400, "invalid_request", "%surl: required", f);
    snprintf(f, sizeof f, "%simage_url.url", pw);
    if (strncmp(url, "data:", 5) != 0 && strncmp(url, "http", 4) != 0)
        return codec_fail(e, 400, "invalid_request", "%s: expected a data:image/...;base64, URI",
                          f);
    return codec_add_image_b64(j, url, 1, lim, f, e);
}

/* One content part, pw its "messages[i].content[k]." prefix: text parts join with newlines. */
static int content_part(const cJSON *part, const char *pw, const struct api_limits *lim,
                        struct job *j, struct sbuf *text, struct api_error *e)
{
    const char *type = NULL;
    if (!cJSON_IsObject(part))
        return codec_fail(e, 400, "invalid_request", "%s: expected an object", pw);
    if (codec_get_string(part, "type", pw, &type, e) < 0) return -1;
    if (!type) return codec_fail(e, 400, "invalid_request", "%stype: required", pw);
    if (!strcmp(type, "image_url")) return image_part(part, pw, lim, j, e);
    if (strcmp(type, "text") != 0)
        return codec_fail(e, 422, "invalid_request", "%stype: '%s' is not text or image_url", pw,
                          type);
    const char *t = NULL;
    if (codec_get_string(part, "text", pw, &t, e) < 0) return -1;
    if (t && text->len) sbuf_add(text, "\n", 1);
    if (t) sbuf_add(text, t, strlen(t));
    return 0;
}

/* An OpenAI message's "content": a string, or an array of text and image_url parts. */
static int message_content(const cJSON *m, const char *where, const struct api_limits *lim,
                           struct job *j, struct sbuf *text, struct api_error *e)
{
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
    if (!content || cJSON_IsNull(content)) return 0;
    if (cJSON_IsString(content)) {
        if (sbuf_add(text, content->valuestring, strlen(content->valuestring)) != 0)
            return codec_fail(e, 500, "internal", "out of memory");
        return 0;
    }
    if (!cJSON_IsArray(content))
        return codec_fail(e, 400, "invalid_request",
                          "%scontent: expected a string or an array of parts", where);
    int i = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, content)
    {
        char pw[64];
        snprintf(pw, sizeof pw, "%scontent[%d].", where, i++);
        if (content_part(part, pw, lim, j, text, e) != 0) return -1;
    }
    return 0;
}

/* Request fields ternd does not implement (docs/api.md lists each and why): labels and
 * settings that do not change the answer pass; the rest only when they ask for nothing. */
static const struct codec_neutral openai_neutral[] = {
    {"user", NEUTRAL_IGNORE, 0, ""},
    {"safety_identifier", NEUTRAL_IGNORE, 0, ""},
    {"prompt_cache_key", NEUTRAL_IGNORE, 0, ""},
    {"store", NEUTRAL_IGNORE, 0, ""},
    {"metadata", NEUTRAL_IGNORE, 0, ""},
    {"service_tier", NEUTRAL_IGNORE, 0, ""},
    {"parallel_tool_calls", NEUTRAL_IGNORE, 0, ""},
    {"tool_choice", NEUTRAL_IGNORE, 0, ""},   /* means nothing without tools */
    {"function_call", NEUTRAL_IGNORE, 0, ""}, /* means nothing without functions */
    {"frequency_penalty", NEUTRAL_NUMBER, 0, "not supported (only 0); use repeat_penalty"},
    {"presence_penalty", NEUTRAL_NUMBER, 0, "not supported (only 0); use repeat_penalty"},
    {"logprobs", NEUTRAL_FALSE, 0, "log probabilities are not returned"},
    {"top_logprobs", NEUTRAL_NUMBER, 0, "log probabilities are not returned"},
    {"logit_bias", NEUTRAL_EMPTY, 0, "not supported"},
    {"tools", NEUTRAL_EMPTY, 0, "tool calling is not supported"},
    {"functions", NEUTRAL_EMPTY, 0, "function calling is not supported"},
    {"audio", NEUTRAL_EMPTY, 0, "audio output is not supported"},
    {"prediction", NEUTRAL_EMPTY, 0, "predicted outputs are not supported"},
    {"web_search_options", NEUTRAL_EMPTY, 0, "web search is not supported"},
    {"reasoning_effort", NEUTRAL_EMPTY, 0, "the model does not reason"},
};
/* What ternd implements, OpenAI's fields and the sampling ones it shares with the others. */
static const char *const openai_supported[] = {
    "model",
    "messages",
    "stream",
    "stream_options",
    "n",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "seed",
    "stop",
    "response_format",
    "modalities",
    "top_k",
    "min_p",
    "repeat_penalty",
};
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Like OpenAI, an unknown field is an error rather than a silently ignored wish. */
static int check_fields(const cJSON *root, struct api_error *e)
{
    assert(cJSON_IsObject(root)); /* http.c refuses other bodies */
    const cJSON *it;
    cJSON_ArrayForEach(it, root)
    {
        int known = codec_neutral_find(openai_neutral, COUNT(openai_neutral), it->string) != NULL;
        for (size_t i = 0; i < COUNT(openai_supported) && !known; i++)
            known = !strcmp(it->string, openai_supported[i]);
        if (!known)
            return codec_fail(e, 400, "invalid_request",
                              "%s: unknown field (docs/api.md lists the supported ones)",
                              it->string);
    }
    if (codec_check_neutral(root, "", openai_neutral, COUNT(openai_neutral), e) != 0) return -1;
    const cJSON *mod = cJSON_GetObjectItemCaseSensitive(root, "modalities"), *m;
    if (mod && !cJSON_IsNull(mod)) {
        if (!cJSON_IsArray(mod))
            return codec_fail(e, 400, "invalid_request", "modalities: expected an array");
        cJSON_ArrayForEach(m, mod)
        {
            if (!cJSON_IsString(m) || strcmp(m->valuestring, "text") != 0)
                return codec_fail(e, 400, "invalid_request",
                                  "modalities: only \"text\" output is supported");
        }
    }
    const char *user;
    return codec_get_string(root, "user", "", &user, e) < 0 ? -1 : 0;
}

/* json_schema.name: what OpenAI allows (it only labels the schema here). */
static int check_schema_name(const char *name, struct api_error *e)
{
    size_t n = strlen(name);
    int ok = n >= 1 && n <= 64;
    for (size_t i = 0; ok && i < n; i++)
        ok = isalnum((unsigned char)name[i]) || name[i] == '_' || name[i] == '-';
    if (!ok)
        return codec_fail(e, 400, "invalid_request",
                          "response_format.json_schema.name: 1 to 64 letters, digits, _ or -");
    return 0;
}

/* response_format: {"type": "text"} | {"type": "json_object"} | {"type": "json_schema",
 * "json_schema": {"name", "schema", "strict", "description"}}. The schema is always enforced,
 * strict or not; without one the answer is any JSON value. */
static int response_format(const cJSON *root, struct job_params *p, struct api_error *e)
{
    const cJSON *rf, *js, *schema;
    const char *type = NULL, *name = NULL, *desc = NULL;
    int strict = 0, rc = codec_get_object(root, "response_format", "", &rf, e);
    if (rc <= 0) return rc;
    if (codec_get_string(rf, "type", "response_format.", &type, e) < 0) return -1;
    if (!type) return codec_fail(e, 400, "invalid_request", "response_format.type: required");
    if (!strcmp(type, "text")) return 0;
    if (!strcmp(type, "json_object"))
        return codec_set_schema(p, "{\"type\":\"object\"}", "response_format", e);
    if (strcmp(type, "json_schema") != 0)
        return codec_fail(e, 400, "invalid_request",
                          "response_format.type: '%s' is not text, json_object or json_schema",
                          type);
    const char *w = "response_format.json_schema.";
    if ((rc = codec_get_object(rf, "json_schema", "response_format.", &js, e)) < 0) return -1;
    if (!rc) return codec_fail(e, 400, "invalid_request", "response_format.json_schema: required");
    if (codec_get_string(js, "name", w, &name, e) < 0 ||
        codec_get_string(js, "description", w, &desc, e) < 0 ||
        codec_get_bool(js, "strict", w, &strict, e) < 0)
        return -1;
    if (name && check_schema_name(name, e) != 0) return -1;
    if ((rc = codec_get_object(js, "schema", w, &schema, e)) < 0) return -1;
    if (!rc) return codec_set_schema(p, "{}", "response_format.json_schema.schema", e);
    return codec_set_schema_object(p, schema, "response_format.json_schema.schema", e);
}

static int chat_parse(const cJSON *root, const struct api_limits *lim, struct job *j,
                      struct api_ctx *c, int *stream, struct api_error *e)
{
    if (check_fields(root, e) != 0) return -1;
    if (codec_get_model(root, c->model, sizeof c->model, e) != 0) return -1;
    if (codec_get_bool(root, "stream", "", stream, e) < 0) return -1;
    const cJSON *so;
    int rc = codec_get_object(root, "stream_options", "", &so, e);
    if (rc < 0) return -1;
    if (rc && codec_get_bool(so, "include_usage", "stream_options.", &c->include_usage, e) < 0)
        return -1;
    long n = 1;
    if (codec_get_int(root, "n", "", -(1L << 30), 1L << 30, &n, e) < 0) return -1;
    if (n != 1)
        return codec_fail(e, 400, "invalid_request",
                          "n: %ld choices asked; ternd answers with exactly 1", n);
    codec_default_params(lim, &j->params);
    if (cJSON_GetObjectItemCaseSensitive(root, "max_completion_tokens")) {
        if (codec_sampling(root, "", "max_completion_tokens", lim, &j->params, e) != 0) return -1;
    } else if (codec_sampling(root, "", "max_tokens", lim, &j->params, e) != 0) {
        return -1;
    }
    if (response_format(root, &j->params, e) != 0) return -1;
    return codec_messages(root, 1, message_content, lim, j, e);
}

/* The fields every response object starts with; object is "chat.completion" or
 * "chat.completion.chunk". */
static cJSON *head_obj(struct api_ctx *c, const char *object)
{
    cJSON *o = cJSON_CreateObject();
    char id[64];
    snprintf(id, sizeof id, "chatcmpl-%s", c->request_id + 4);
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "object", object);
    cJSON_AddNumberToObject(o, "created", (double)(long long)c->created_wall);
    cJSON_AddStringToObject(o, "model", c->model);
    return o;
}

static cJSON *chunk_obj(struct api_ctx *c)
{
    cJSON *o = head_obj(c, "chat.completion.chunk");
    cJSON_AddNullToObject(o, "system_fingerprint");
    return o;
}

static void sse(struct sbuf *out, cJSON *o)
{
    sbuf_add(out, "data: ", 6);
    sbuf_add_json(out, o);
    sbuf_add(out, "\n\n", 2);
}

/* A stream chunk with one choice whose delta carries the role first and then text (none in
 * the last chunk); finish is null until the last. */
static void delta_chunk(struct api_ctx *c, const char *text, const char *finish, struct sbuf *out)
{
    cJSON *o = chunk_obj(c);
    cJSON *ch = cJSON_AddArrayToObject(o, "choices"), *choice = cJSON_CreateObject();
    cJSON_AddNumberToObject(choice, "index", 0);
    cJSON *delta = cJSON_AddObjectToObject(choice, "delta");
    if (c->chunks_sent++ == 0) cJSON_AddStringToObject(delta, "role", "assistant");
    if (text) cJSON_AddStringToObject(delta, "content", text);
    cJSON_AddNullToObject(choice, "logprobs");
    if (finish)
        cJSON_AddStringToObject(choice, "finish_reason", finish);
    else
        cJSON_AddNullToObject(choice, "finish_reason");
    cJSON_AddItemToArray(ch, choice);
    if (c->include_usage) cJSON_AddNullToObject(o, "usage");
    sse(out, o);
}

static void chat_chunk(struct api_ctx *c, const char *text, size_t n, struct sbuf *out)
{
    (void)n;
    delta_chunk(c, text, NULL, out);
}

/* Only a real end is "stop"; an answer cut short (max_tokens, deadline, drain, engine error)
 * is "length", which OpenAI clients read as a truncated answer; the stream also carries an
 * error event saying why. */
static const char *finish_reason(int done)
{
    return done == DONE_STOP ? "stop" : "length";
}

static cJSON *usage(const struct job *j)
{
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", j->prompt_tokens);
    cJSON_AddNumberToObject(u, "completion_tokens", j->completion_tokens);
    cJSON_AddNumberToObject(u, "total_tokens", j->prompt_tokens + j->completion_tokens);
    cJSON *d = cJSON_AddObjectToObject(u, "prompt_tokens_details");
    cJSON_AddNumberToObject(d, "cached_tokens", j->cached_tokens);
    return u;
}

static void chat_final(struct api_ctx *c, struct job *j, struct sbuf *out)
{
    pthread_mutex_lock(&j->mu);
    int done = j->done;
    if (done == DONE_ERROR || done == DONE_TIMEOUT || done == DONE_CANCELLED) {
        cJSON *eo = cJSON_CreateObject(), *err = cJSON_AddObjectToObject(eo, "error");
        cJSON_AddStringToObject(err, "type",
                                done == DONE_ERROR     ? "internal"
                                : done == DONE_TIMEOUT ? "timeout"
                                                       : "unavailable");
        cJSON_AddStringToObject(err, "message",
                                done == DONE_CANCELLED && !j->error[0]
                                    ? "the server shut down before the answer was complete"
                                    : j->error);
        sse(out, eo);
    }
    delta_chunk(c, NULL, finish_reason(done), out);
    if (c->include_usage) {
        cJSON *u = chunk_obj(c);
        cJSON_AddArrayToObject(u, "choices");
        cJSON_AddItemToObject(u, "usage", usage(j));
        sse(out, u);
    }
    pthread_mutex_unlock(&j->mu);
    sbuf_add(out, "data: [DONE]\n\n", 14);
}

static cJSON *chat_whole(struct api_ctx *c, struct job *j)
{
    cJSON *o = head_obj(c, "chat.completion");
    cJSON *ch = cJSON_AddArrayToObject(o, "choices"), *choice = cJSON_CreateObject();
    cJSON_AddNumberToObject(choice, "index", 0);
    cJSON *msg = cJSON_AddObjectToObject(choice, "message");
    cJSON_AddStringToObject(msg, "role", "assistant");
    pthread_mutex_lock(&j->mu);
    cJSON_AddStringToObject(msg, "content", j->text ? j->text : "");
    cJSON_AddNullToObject(choice, "logprobs");
    cJSON_AddStringToObject(choice, "finish_reason", finish_reason(j->done));
    cJSON_AddItemToArray(ch, choice);
    cJSON_AddItemToObject(o, "usage", usage(j));
    pthread_mutex_unlock(&j->mu);
    return o;
}

const struct api_gen api_openai_chat = {
    "/v1/chat/completions", "text/event-stream", 0, chat_parse, chat_chunk, chat_final, chat_whole,
};

int api_openai_models(struct http_req *r)
{
    struct server *srv = http_server(r);
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(root, "data"), *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", srv->info.name);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)(long long)srv->started_wall);
    cJSON_AddStringToObject(m, "owned_by", "tern");
    cJSON_AddItemToArray(data, m);
    http_reply_json(r, 200, root);
    return 0;
}
