/* Native API: POST /generate. JSON or multipart/form-data in, NDJSON or one object out.
 * "format" constrains the answer as Ollama's does (a form field carries the schema as text). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"

cJSON *api_usage_json(const struct job *j)
{
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", j->prompt_tokens);
    cJSON_AddNumberToObject(u, "image_tokens", j->image_tokens);
    cJSON_AddNumberToObject(u, "cached_tokens", j->cached_tokens);
    cJSON_AddNumberToObject(u, "completion_tokens", j->completion_tokens);
    cJSON_AddNumberToObject(u, "total_tokens", j->prompt_tokens + j->completion_tokens);
    return u;
}

static void add_ms(cJSON *o, const char *name, double v)
{
    if (v >= 0)
        cJSON_AddNumberToObject(o, name, (double)(long long)(v * 1000 + 0.5) / 1000);
    else
        cJSON_AddNullToObject(o, name);
}

cJSON *api_timings_json(const struct job *j)
{
    cJSON *t = cJSON_CreateObject();
    add_ms(t, "queue_ms", j->t.queue_ms);
    add_ms(t, "vision_ms", j->t.vision_ms);
    add_ms(t, "prefill_ms", j->t.prefill_ms);
    add_ms(t, "ttft_ms", j->t.ttft_ms);
    add_ms(t, "decode_ms", j->t.decode_ms);
    add_ms(t, "total_ms", j->t.total_ms);
    double tps = j->completion_tokens > 1 && j->t.decode_ms > 0
                     ? (j->completion_tokens - 1) / (j->t.decode_ms / 1e3)
                     : -1;
    add_ms(t, "decode_tokens_per_s", tps);
    return t;
}

static int native_parse(const cJSON *root, const struct api_limits *lim, struct job *j,
                        struct api_ctx *c, int *stream, struct api_error *e)
{
    (void)c;
    const char *prompt, *system, *img = NULL;
    if (codec_get_prompt(root, &prompt, &system, e) != 0) return -1;
    if (codec_get_bool(root, "stream", "", stream, e) < 0) return -1;
    int rc = codec_get_string(root, "image", "", &img, e);
    if (rc < 0) return -1;
    if (rc && codec_add_image_b64(j, img, 1, lim, "image", e) != 0) return -1;
    if (codec_add_images(root, "", 1, lim, j, e) != 0) return -1;
    codec_default_params(lim, &j->params);
    if (codec_sampling(root, "", "max_tokens", lim, &j->params, e) != 0) return -1;
    if (codec_format(root, "", 1, &j->params, e) != 0) return -1;
    return codec_add_prompt(j, prompt, system, e);
}

static void native_chunk(struct api_ctx *c, const char *text, size_t n, struct sbuf *out)
{
    (void)c;
    (void)n; /* text is NUL-terminated at n by job_take */
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "token", text);
    sbuf_add_json_line(out, o);
}

void api_done_fields(cJSON *o, const struct job *j)
{
    cJSON_AddBoolToObject(o, "done", 1);
    cJSON_AddStringToObject(o, "done_reason", job_done_name(j->done));
    if (j->done == DONE_ERROR || j->done == DONE_TIMEOUT)
        cJSON_AddStringToObject(o, "error", j->error);
}

static void add_done(cJSON *o, struct api_ctx *c, struct job *j)
{
    pthread_mutex_lock(&j->mu);
    api_done_fields(o, j);
    cJSON_AddStringToObject(o, "model", c->model);
    cJSON_AddItemToObject(o, "usage", api_usage_json(j));
    cJSON_AddItemToObject(o, "timings", api_timings_json(j));
    cJSON_AddStringToObject(o, "request_id", c->request_id);
    pthread_mutex_unlock(&j->mu);
}

static void native_final(struct api_ctx *c, struct job *j, struct sbuf *out)
{
    cJSON *o = cJSON_CreateObject();
    add_done(o, c, j);
    sbuf_add_json_line(out, o);
}

static cJSON *native_whole(struct api_ctx *c, struct job *j)
{
    cJSON *o = cJSON_CreateObject();
    pthread_mutex_lock(&j->mu);
    cJSON_AddStringToObject(o, "text", j->text ? j->text : "");
    pthread_mutex_unlock(&j->mu);
    add_done(o, c, j);
    return o;
}

const struct api_gen api_native_generate = {
    "/generate", "application/x-ndjson", 1, native_parse, native_chunk, native_final, native_whole,
};
