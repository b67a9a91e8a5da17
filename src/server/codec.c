/* Shared JSON codec pieces. */
#include "codec.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/grammar.h"
#include "upload.h"

int codec_vfail(struct api_error *e, int status, const char *type, const char *fmt, va_list ap)
{
    e->status = status;
    snprintf(e->type, sizeof e->type, "%s", type);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    return -1;
}

int codec_fail(struct api_error *e, int status, const char *type, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    codec_vfail(e, status, type, fmt, ap);
    va_end(ap);
    return -1;
}

cJSON *codec_error_json(const struct api_error *e)
{
    cJSON *root = cJSON_CreateObject(), *err = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(err, "type", e->type);
    cJSON_AddStringToObject(err, "message", e->message);
    return root;
}

cJSON *codec_error_json_ollama(const struct api_error *e)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "error", e->message);
    return root;
}

char *codec_error_body(const struct api_error *e)
{
    cJSON *j = codec_error_json(e);
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

/* The lookup every typed getter shares: *v is o's field name when present and not null;
 * returns 1 when is() accepts it, 0 when absent, -1 (e filled) when it is of another type. */
static int typed_field(const cJSON *o, const char *name, const char *where,
                       cJSON_bool (*is)(const cJSON *const), const char *expected, const cJSON **v,
                       struct api_error *e)
{
    *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!*v || cJSON_IsNull(*v)) return 0;
    if (!is(*v))
        return codec_fail(e, 400, "invalid_request", "%s%s: expected %s", where, name, expected);
    return 1;
}

int codec_get_string(const cJSON *o, const char *name, const char *where, const char **out,
                     struct api_error *e)
{
    const cJSON *v;
    int rc = typed_field(o, name, where, cJSON_IsString, "a string", &v, e);
    if (rc == 1) *out = v->valuestring;
    return rc;
}

int codec_get_bool(const cJSON *o, const char *name, const char *where, int *out,
                   struct api_error *e)
{
    const cJSON *v;
    int rc = typed_field(o, name, where, cJSON_IsBool, "true or false", &v, e);
    if (rc == 1) *out = cJSON_IsTrue(v);
    return rc;
}

int codec_get_object(const cJSON *o, const char *name, const char *where, const cJSON **out,
                     struct api_error *e)
{
    return typed_field(o, name, where, cJSON_IsObject, "an object", out, e);
}

int codec_get_number(const cJSON *o, const char *name, const char *where, double lo, double hi,
                     double *out, struct api_error *e)
{
    const cJSON *v;
    int rc = typed_field(o, name, where, cJSON_IsNumber, "a number", &v, e);
    if (rc != 1) return rc;
    if (!(v->valuedouble >= lo && v->valuedouble <= hi))
        return codec_fail(e, 422, "invalid_request", "%s%s: %g is outside [%g, %g]", where, name,
                          v->valuedouble, lo, hi);
    *out = v->valuedouble;
    return 1;
}

int codec_get_int(const cJSON *o, const char *name, const char *where, long lo, long hi, long *out,
                  struct api_error *e)
{
    double d;
    int rc = codec_get_number(o, name, where, (double)lo, (double)hi, &d, e);
    if (rc != 1) return rc;
    if (d != floor(d))
        return codec_fail(e, 400, "invalid_request", "%s%s: expected an integer", where, name);
    *out = (long)d;
    return 1;
}

void codec_default_params(const struct api_limits *lim, struct job_params *p)
{
    memset(p, 0, sizeof *p);
    p->max_tokens = lim->default_max_tokens;
    p->temperature = 0.0f; /* greedy unless asked: reproducible answers from a small model */
    p->top_k = 0;
    p->top_p = 1.0f;
    p->min_p = 0.0f;
    p->repeat_penalty = 1.0f;
}

int codec_sampling(const cJSON *o, const char *where, const char *max_name,
                   const struct api_limits *lim, struct job_params *p, struct api_error *e)
{
    double d;
    long l;
    int rc;
    if ((rc = codec_get_int(o, max_name, where, 1, 1L << 30, &l, e)) < 0) return -1;
    if (rc) {
        if (l > lim->max_tokens)
            return codec_fail(e, 422, "invalid_request", "%s%s: %ld exceeds the server limit of %d",
                              where, max_name, l, lim->max_tokens);
        p->max_tokens = (int)l;
    }
    if ((rc = codec_get_number(o, "temperature", where, 0, 100, &d, e)) < 0) return -1;
    if (rc) p->temperature = (float)d;
    if ((rc = codec_get_int(o, "top_k", where, 0, 1L << 20, &l, e)) < 0) return -1;
    if (rc) p->top_k = (int)l;
    if ((rc = codec_get_number(o, "top_p", where, 0, 1, &d, e)) < 0) return -1;
    if (rc) p->top_p = (float)d;
    if ((rc = codec_get_number(o, "min_p", where, 0, 1, &d, e)) < 0) return -1;
    if (rc) p->min_p = (float)d;
    if ((rc = codec_get_number(o, "repeat_penalty", where, 0.01, 100, &d, e)) < 0) return -1;
    if (rc) p->repeat_penalty = (float)d;
    if ((rc = codec_get_number(o, "seed", where, -9007199254740992.0, 9007199254740992.0, &d, e)) <
        0)
        return -1;
    if (rc) {
        p->seed = (uint64_t)(int64_t)d;
        p->has_seed = 1;
    }
    const cJSON *stop = cJSON_GetObjectItemCaseSensitive(o, "stop");
    if (stop && !cJSON_IsNull(stop)) {
        const cJSON *one = cJSON_IsString(stop) ? stop : NULL;
        if (!one && !cJSON_IsArray(stop))
            return codec_fail(e, 400, "invalid_request",
                              "%sstop: expected a string or an array of strings", where);
        int n = one ? 1 : cJSON_GetArraySize(stop);
        if (n > JOB_MAX_STOP)
            return codec_fail(e, 422, "invalid_request", "%sstop: at most %d stop strings", where,
                              JOB_MAX_STOP);
        for (int i = 0; i < n; i++) {
            const cJSON *s = one ? one : cJSON_GetArrayItem(stop, i);
            if (!cJSON_IsString(s))
                return codec_fail(e, 400, "invalid_request", "%sstop[%d]: expected a string", where,
                                  i);
            size_t len = strlen(s->valuestring);
            if (len == 0 || len > 64)
                return codec_fail(e, 422, "invalid_request", "%sstop[%d]: must be 1 to 64 bytes",
                                  where, i);
            if (!(p->stop[p->n_stop] = strdup(s->valuestring)))
                return codec_fail(e, 500, "internal", "out of memory");
            p->n_stop++;
        }
    }
    return 0;
}

int codec_set_schema(struct job_params *p, const char *schema_json, const char *field,
                     struct api_error *e)
{
    char err[256];
    grammar *g = grammar_compile(schema_json, err, sizeof err);
    if (!g) return codec_fail(e, 400, "invalid_request", "%s: %s", field, err);
    grammar_destroy(g);
    char *copy = strdup(schema_json);
    if (!copy) return codec_fail(e, 500, "internal", "out of memory");
    free(p->json_schema);
    p->json_schema = copy;
    return 0;
}

int codec_set_schema_object(struct job_params *p, const cJSON *schema, const char *field,
                            struct api_error *e)
{
    char *text = cJSON_PrintUnformatted(schema);
    if (!text) return codec_fail(e, 500, "internal", "out of memory");
    int rc = codec_set_schema(p, text, field, e);
    free(text);
    return rc;
}

int codec_format(const cJSON *o, const char *where, int allow_text, struct job_params *p,
                 struct api_error *e)
{
    char field[48];
    snprintf(field, sizeof field, "%sformat", where);
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, "format");
    if (!f || cJSON_IsNull(f)) return 0;
    if (cJSON_IsObject(f)) return codec_set_schema_object(p, f, field, e);
    if (cJSON_IsString(f)) {
        const char *s = f->valuestring;
        if (!*s) return 0;
        if (!strcmp(s, "json")) return codec_set_schema(p, "{}", field, e);
        if (allow_text && *s == '{') {
            cJSON *schema = cJSON_Parse(s);
            if (!schema)
                return codec_fail(e, 400, "invalid_request", "%s: malformed JSON schema", field);
            int rc = codec_set_schema_object(p, schema, field, e);
            cJSON_Delete(schema);
            return rc;
        }
    }
    return codec_fail(e, 400, "invalid_request", "%s: expected \"json\" or a JSON schema object",
                      field);
}

const struct codec_neutral *codec_neutral_find(const struct codec_neutral *t, size_t n,
                                               const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(t[i].name, name)) return &t[i];
    return NULL;
}

static int is_neutral(const cJSON *v, const struct codec_neutral *c)
{
    switch (c->kind) {
    case NEUTRAL_IGNORE: return 1;
    case NEUTRAL_NUMBER: return cJSON_IsNumber(v) && v->valuedouble == c->value;
    case NEUTRAL_FALSE: return cJSON_IsFalse(v);
    case NEUTRAL_EMPTY:
        return (cJSON_IsString(v) && !*v->valuestring) ||
               ((cJSON_IsArray(v) || cJSON_IsObject(v)) && !v->child);
    }
    return 0;
}

int codec_check_neutral(const cJSON *o, const char *where, const struct codec_neutral *t, size_t n,
                        struct api_error *e)
{
    for (size_t i = 0; i < n; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, t[i].name);
        if (v && !cJSON_IsNull(v) && !is_neutral(v, &t[i]))
            return codec_fail(e, 400, "invalid_request", "%s%s: %s", where, t[i].name, t[i].why);
    }
    return 0;
}

static int b64val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
}

/* Whitespace is skipped anywhere: MIME and `base64` wrap lines at 76 columns. */
int codec_base64_decode(const char *s, size_t n, unsigned char **out, size_t *outlen)
{
    while (n && (s[n - 1] == '=' || isspace((unsigned char)s[n - 1])))
        n--;
    unsigned char *o = malloc(n / 4 * 3 + 3);
    if (!o) return -1;
    size_t k = 0, sig = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        if (isspace((unsigned char)s[i])) continue;
        int v = b64val((unsigned char)s[i]);
        if (v < 0) {
            free(o);
            return -1;
        }
        sig++;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            o[k++] = (unsigned char)(acc >> bits);
        }
    }
    if (sig % 4 == 1) {
        free(o);
        return -1;
    }
    *out = o;
    *outlen = k;
    return 0;
}

int codec_add_image_bytes(struct job *j, const unsigned char *data, size_t len,
                          const struct api_limits *lim, const char *field, struct api_error *e)
{
    if (j->n_images >= lim->max_images || j->n_images >= JOB_MAX_IMAGES)
        return codec_fail(e, 422, "invalid_request", "%s: at most %d images per request", field,
                          lim->max_images < JOB_MAX_IMAGES ? lim->max_images : JOB_MAX_IMAGES);
    char msg[200];
    int st = upload_image_check(data, len, lim->max_image_bytes, lim->max_image_pixels,
                                &j->images[j->n_images], msg, sizeof msg);
    if (st)
        return codec_fail(e, st,
                          st == 413   ? "payload_too_large"
                          : st == 415 ? "unsupported_media_type"
                          : st == 500 ? "internal"
                                      : "invalid_image",
                          "%s: %s", field, msg);
    j->n_images++;
    /* Decoded together after admission: a request that could never fit the budget is refused
     * now rather than waiting for it. */
    size_t bytes = upload_job_bytes(j);
    if (lim->max_decode_bytes > 0 && bytes > (size_t)lim->max_decode_bytes)
        return codec_fail(e, 413, "payload_too_large",
                          "%s: the request's images decode to %zu bytes, more than the limit of "
                          "%ld bytes",
                          field, bytes, lim->max_decode_bytes);
    return 0;
}

int codec_add_image_b64(struct job *j, const char *s, int allow_uri, const struct api_limits *lim,
                        const char *field, struct api_error *e)
{
    if (allow_uri && strncmp(s, "data:", 5) == 0) {
        const char *comma = strchr(s, ',');
        if (!comma || comma - s < 12 || memcmp(comma - 7, ";base64", 7) != 0)
            return codec_fail(e, 400, "invalid_request",
                              "%s: expected a data:image/...;base64, URI", field);
        s = comma + 1;
    } else if (allow_uri && (strncmp(s, "http://", 7) == 0 || strncmp(s, "https://", 8) == 0)) {
        return codec_fail(e, 422, "invalid_request",
                          "%s: image URLs are not fetched; send a data URI", field);
    }
    size_t n = strlen(s);
    if ((long)(n / 4 * 3) > lim->max_image_bytes + 3)
        return codec_fail(e, 413, "payload_too_large", "%s: image exceeds the limit of %ld bytes",
                          field, lim->max_image_bytes);
    unsigned char *bytes;
    size_t len;
    if (codec_base64_decode(s, n, &bytes, &len) != 0)
        return codec_fail(e, 400, "invalid_request", "%s: invalid base64", field);
    int rc = codec_add_image_bytes(j, bytes, len, lim, field, e);
    free(bytes);
    return rc;
}

void codec_time_rfc3339(double wall, char *out, size_t outlen)
{
    time_t t = (time_t)wall;
    struct tm tm;
    gmtime_r(&t, &tm);
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, outlen, "%s.%09ldZ", base, (long)((wall - (double)t) * 1e9));
}

int sbuf_add(struct sbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return -1;
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
    return 0;
}

int sbuf_addf(struct sbuf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return -1;
    if ((size_t)n < sizeof tmp) return sbuf_add(b, tmp, (size_t)n);
    char *big = malloc((size_t)n + 1);
    if (!big) return -1;
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int rc = sbuf_add(b, big, (size_t)n);
    free(big);
    return rc;
}

int sbuf_add_json(struct sbuf *b, cJSON *j)
{
    char *s = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (!s) return -1;
    int rc = sbuf_add(b, s, strlen(s));
    free(s);
    return rc;
}

int sbuf_add_json_line(struct sbuf *b, cJSON *j)
{
    int rc = sbuf_add_json(b, j);
    return sbuf_add(b, "\n", 1) != 0 ? -1 : rc;
}

void sbuf_free(struct sbuf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

int codec_message_role(const cJSON *m, int i, int allow_developer, char where[32], int *role,
                       struct api_error *e)
{
    snprintf(where, 32, "messages[%d].", i);
    if (!cJSON_IsObject(m))
        return codec_fail(e, 400, "invalid_request", "%.*s: expected an object",
                          (int)strlen(where) - 1, where);
    const char *r = NULL;
    if (codec_get_string(m, "role", where, &r, e) < 0) return -1;
    if (!r) return codec_fail(e, 400, "invalid_request", "%srole: required", where);
    if (!strcmp(r, "system") || (allow_developer && !strcmp(r, "developer")))
        *role = ROLE_SYSTEM;
    else if (!strcmp(r, "user"))
        *role = ROLE_USER;
    else if (!strcmp(r, "assistant"))
        *role = ROLE_ASSISTANT;
    else
        return codec_fail(e, 422, "invalid_request",
                          "%srole: '%s' is not system, %suser or assistant", where, r,
                          allow_developer ? "developer, " : "");
    return 0;
}

int codec_get_model(const cJSON *root, char *model, size_t size, struct api_error *e)
{
    const char *m = NULL;
    if (codec_get_string(root, "model", "", &m, e) < 0) return -1;
    if (m && *m) snprintf(model, size, "%s", m);
    return 0;
}

int codec_get_prompt(const cJSON *root, const char **prompt, const char **system,
                     struct api_error *e)
{
    *prompt = *system = NULL;
    int rc = codec_get_string(root, "prompt", "", prompt, e);
    if (rc < 0) return -1;
    if (rc == 0) return codec_fail(e, 400, "invalid_request", "prompt: required");
    return codec_get_string(root, "system", "", system, e) < 0 ? -1 : 0;
}

int codec_add_prompt(struct job *j, const char *prompt, const char *system, struct api_error *e)
{
    if (system && *system && job_add_msg(j, ROLE_SYSTEM, system, strlen(system), 0) != 0)
        return codec_fail(e, 500, "internal", "out of memory");
    if (job_add_msg(j, ROLE_USER, prompt, strlen(prompt), j->n_images) != 0)
        return codec_fail(e, 500, "internal", "out of memory");
    return 0;
}

int codec_add_images(const cJSON *o, const char *where, int allow_uri, const struct api_limits *lim,
                     struct job *j, struct api_error *e)
{
    const cJSON *imgs;
    int rc = typed_field(o, "images", where, cJSON_IsArray, "an array of base64 strings", &imgs, e);
    if (rc <= 0) return rc;
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, imgs)
    {
        char field[48];
        snprintf(field, sizeof field, "%simages[%d]", where, i++);
        if (!cJSON_IsString(it))
            return codec_fail(e, 400, "invalid_request", "%s: expected a base64 string", field);
        if (codec_add_image_b64(j, it->valuestring, allow_uri, lim, field, e) != 0) return -1;
    }
    return 0;
}

/* One message: its role, then its content as one job message holding the images it added. */
static int add_message(const cJSON *m, int i, int allow_developer, codec_content_fn content,
                       const struct api_limits *lim, struct job *j, struct api_error *e)
{
    char where[32];
    int role;
    if (codec_message_role(m, i, allow_developer, where, &role, e) != 0) return -1;
    struct sbuf text = {0};
    int before = j->n_images;
    int rc = content(m, where, lim, j, &text, e);
    if (rc == 0 && job_add_msg(j, role, text.p ? text.p : "", text.len, j->n_images - before) != 0)
        rc = codec_fail(e, 500, "internal", "out of memory");
    sbuf_free(&text);
    return rc;
}

int codec_messages(const cJSON *root, int allow_developer, codec_content_fn content,
                   const struct api_limits *lim, struct job *j, struct api_error *e)
{
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
    if (!cJSON_IsArray(msgs) || cJSON_GetArraySize(msgs) == 0)
        return codec_fail(e, 400, "invalid_request", "messages: expected a non-empty array");
    int i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs)
    {
        if (add_message(m, i++, allow_developer, content, lim, j, e) != 0) return -1;
    }
    return 0;
}
