/* The API families (native, Ollama, OpenAI, operations). Each generation endpoint is a parser
 * (JSON -> job) and a formatter (job stream -> that API's chunks and final object); the HTTP
 * layer does the rest the same way for all of them. */
#ifndef TERN_SERVER_API_H
#define TERN_SERVER_API_H

#include <cjson/cJSON.h>

#include "codec.h"
#include "job.h"

struct http_req;

/* What a formatter knows about its request. */
struct api_ctx {
    char model[128];
    char request_id[40];
    double created_wall; /* unix seconds at arrival */
    int include_usage;   /* OpenAI stream_options.include_usage */
    int chunks_sent;
};

struct api_gen {
    const char *endpoint;
    const char *stream_type; /* Content-Type of the stream */
    int stream_default;
    /* Fill j from a JSON body (messages, images decoded, params). stream gets the request's
     * choice or stream_default. */
    int (*parse)(const cJSON *root, const struct api_limits *lim, struct job *j, struct api_ctx *c,
                 int *stream, struct api_error *e);
    void (*chunk)(struct api_ctx *c, const char *text, size_t n, struct sbuf *out);
    void (*final)(struct api_ctx *c, struct job *j, struct sbuf *out);
    cJSON *(*whole)(struct api_ctx *c, struct job *j); /* "stream": false */
};

extern const struct api_gen api_native_generate;
extern const struct api_gen api_ollama_generate;
extern const struct api_gen api_ollama_chat;
extern const struct api_gen api_openai_chat;

/* The end of a native or Ollama stream (Ollama's fields, which the native API took):
 * "done": true, "done_reason", and "error" when it failed. Called with j->mu held. */
void api_done_fields(cJSON *o, const struct job *j);
/* Native usage and timings objects, shared by formatters. */
cJSON *api_usage_json(const struct job *j);
cJSON *api_timings_json(const struct job *j);

/* Plain handlers: reply through http_reply_*; return 0. */
int api_health(struct http_req *r);
int api_ready(struct http_req *r);
int api_metrics(struct http_req *r);
int api_stats(struct http_req *r);
int api_index(struct http_req *r);
int api_samples(struct http_req *r);
int api_ollama_tags(struct http_req *r);
int api_ollama_version(struct http_req *r);
int api_ollama_show(struct http_req *r); /* POST: reads the body */
int api_ollama_ps(struct http_req *r);
int api_openai_models(struct http_req *r);

#endif
