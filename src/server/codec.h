/* JSON helpers shared by the API families: typed field access with precise messages,
 * sampling parameters, base64 and data URIs, images, and the error body. */
#ifndef TERN_SERVER_CODEC_H
#define TERN_SERVER_CODEC_H

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stddef.h>

#include "job.h"

struct api_error {
    int status;    /* HTTP status */
    char type[32]; /* invalid_request, authentication, not_found, ... */
    char message[256];
};

struct api_limits {
    long max_image_bytes, max_image_pixels;
    int max_images, max_tokens, default_max_tokens;
    long max_decode_bytes; /* all of a request's pictures decoded; 0 = no limit */
};

/* Fills e and returns -1 (so callers can `return codec_fail(...)`). */
int codec_fail(struct api_error *e, int status, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int codec_vfail(struct api_error *e, int status, const char *type, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));
/* {"error":{"type":..,"message":..}} */
cJSON *codec_error_json(const struct api_error *e);
/* {"error":"message"}: Ollama's shape, the one its clients read (/api/...). */
cJSON *codec_error_json_ollama(const struct api_error *e);
char *codec_error_body(const struct api_error *e); /* printed, malloc'd */

/* Optional typed fields: 0 absent, 1 present (value stored), -1 wrong type/range (e filled).
 * `where` prefixes the field in messages (e.g. "options."). */
int codec_get_string(const cJSON *o, const char *name, const char *where, const char **out,
                     struct api_error *e);
int codec_get_bool(const cJSON *o, const char *name, const char *where, int *out,
                   struct api_error *e);
int codec_get_object(const cJSON *o, const char *name, const char *where, const cJSON **out,
                     struct api_error *e);
int codec_get_number(const cJSON *o, const char *name, const char *where, double lo, double hi,
                     double *out, struct api_error *e);
int codec_get_int(const cJSON *o, const char *name, const char *where, long lo, long hi, long *out,
                  struct api_error *e);

/* Reads temperature, top_k, top_p, min_p, repeat_penalty, seed, stop and the max-tokens field
 * named max_name from o into p (defaults first). */
int codec_sampling(const cJSON *o, const char *where, const char *max_name,
                   const struct api_limits *lim, struct job_params *p, struct api_error *e);
void codec_default_params(const struct api_limits *lim, struct job_params *p);

/* Constrained output: schema_json (a JSON Schema as text, "{}" for any JSON value) is checked
 * with grammar_compile and stored in p->json_schema. A schema outside the subset is a 400
 * whose message names field and the keyword. */
int codec_set_schema(struct job_params *p, const char *schema_json, const char *field,
                     struct api_error *e);
/* The same from a parsed schema. */
int codec_set_schema_object(struct job_params *p, const cJSON *schema, const char *field,
                            struct api_error *e);
/* The "format" field of Ollama and the native API: "json" (any JSON value) or a schema object;
 * absent, null or "" is free text. allow_text also takes a string holding a schema object
 * (a multipart form field is text). */
int codec_format(const cJSON *o, const char *where, int allow_text, struct job_params *p,
                 struct api_error *e);

/* A field ternd does not implement, accepted only when it asks for nothing: absent, null,
 * or the neutral value its kind names. Anything else is a 400 naming the field and why. */
enum codec_neutral_kind {
    NEUTRAL_IGNORE, /* any value: it does not change the answer (runtime tuning, labels) */
    NEUTRAL_NUMBER, /* the number `value` (the setting's "off") */
    NEUTRAL_FALSE,  /* false */
    NEUTRAL_EMPTY,  /* "", [] or {} */
};
struct codec_neutral {
    const char *name;
    int kind; /* enum codec_neutral_kind */
    double value;
    const char *why; /* completes "NAME: ..." in the error */
};
/* Checks every field of o that t names. */
int codec_check_neutral(const cJSON *o, const char *where, const struct codec_neutral *t, size_t n,
                        struct api_error *e);
/* The entry of t named name, or NULL. */
const struct codec_neutral *codec_neutral_find(const struct codec_neutral *t, size_t n,
                                               const char *name);

/* The head of one chat message, messages[i]: checks that it is an object and reads its role
 * into *role (enum job_role). "developer" (OpenAI's newer name for system) is accepted only
 * when allow_developer. where receives the "messages[i]." prefix for later messages. */
int codec_message_role(const cJSON *m, int i, int allow_developer, char where[32], int *role,
                       struct api_error *e);

/* A "messages" array of a chat request: each message's role (codec_message_role), then its
 * content read by content() into text, become one job message holding the images that
 * content() appended to j. where is the message's "messages[i]." prefix. */
struct sbuf;
typedef int (*codec_content_fn)(const cJSON *m, const char *where, const struct api_limits *lim,
                                struct job *j, struct sbuf *text, struct api_error *e);
int codec_messages(const cJSON *root, int allow_developer, codec_content_fn content,
                   const struct api_limits *lim, struct job *j, struct api_error *e);

/* The single-turn form (native /generate, Ollama /api/generate): a required "prompt" and an
 * optional "system"; then, once the images are in, codec_add_prompt adds the system message
 * (when not empty) and the user's prompt preceded by every image. */
int codec_get_prompt(const cJSON *root, const char **prompt, const char **system,
                     struct api_error *e);
int codec_add_prompt(struct job *j, const char *prompt, const char *system, struct api_error *e);

/* Copies a non-empty "model" field into model; an absent or empty one leaves it as it is. */
int codec_get_model(const cJSON *root, char *model, size_t size, struct api_error *e);

/* An optional "images" array of base64 strings (data URIs too when allow_uri), appended to
 * j->images; where prefixes the field in messages. */
int codec_add_images(const cJSON *o, const char *where, int allow_uri, const struct api_limits *lim,
                     struct job *j, struct api_error *e);

/* Strict base64 (RFC 4648, padding optional, no whitespace). Returns 0 or -1. */
int codec_base64_decode(const char *s, size_t n, unsigned char **out, size_t *outlen);
/* Decodes a base64 image, or a data URI "data:image/...;base64,..." when allow_uri, and
 * appends it to j->images. */
int codec_add_image_b64(struct job *j, const char *s, int allow_uri, const struct api_limits *lim,
                        const char *field, struct api_error *e);
int codec_add_image_bytes(struct job *j, const unsigned char *data, size_t len,
                          const struct api_limits *lim, const char *field, struct api_error *e);

/* RFC 3339 UTC time with nanoseconds, as Ollama writes it. */
void codec_time_rfc3339(double wall, char *out, size_t outlen);

/* A growable byte buffer for response bodies. */
struct sbuf {
    char *p;
    size_t len, cap;
};
int sbuf_add(struct sbuf *b, const char *s, size_t n);
int sbuf_addf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends cJSON_PrintUnformatted(j) and deletes j. */
int sbuf_add_json(struct sbuf *b, cJSON *j);
/* The same plus a newline: one NDJSON line. */
int sbuf_add_json_line(struct sbuf *b, cJSON *j);
void sbuf_free(struct sbuf *b);

#endif
