/* tern inspect FILE [--json]: what is in a GGUF file. Header, every
 * metadata key (long strings and arrays summarised), every tensor with its
 * type, shape, size and bits per weight, and totals by type. --json prints
 * the same as one JSON object. */
#include <assert.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli/cli_util.h"
#include "cli/commands.h"
#include "engine/gguf.h"

#define CMD "inspect"
#define HEAD 4      /* array elements shown */
#define TEXT_MAX 64 /* string bytes shown in text mode */

static const char usage_text[] =
    "usage: tern inspect FILE [--json]\n"
    "\n"
    "Show a GGUF file: header, metadata (arrays summarised by type, length and\n"
    "first elements), tensors (name, type, shape, bytes, bits/weight) and\n"
    "totals by tensor type.\n"
    "\n"
    "  --json      print the same as a JSON object\n"
    "  -h, --help  show this help\n";

static const char *vtype_name(gguf_vtype t)
{
    static const char *const names[] = {"u8",   "i8",     "u16",   "i16", "u32", "i32", "f32",
                                        "bool", "string", "array", "u64", "i64", "f64"};
    return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "?";
}

static size_t vsize(gguf_vtype t)
{
    static const size_t sizes[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return (unsigned)t < sizeof sizes / sizeof sizes[0] ? sizes[t] : 0;
}

static uint64_t le(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = n; i-- > 0;)
        v = v << 8 | p[i];
    return v;
}

/* The shortest decimal that reads back as the same float (or double). */
static void fmt_float(double x, bool is_f32, char *buf, size_t n)
{
    for (int prec = 6; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, x);
        double back = strtod(buf, NULL);
        if (is_f32 ? (float)back == (float)x : back == x) return;
    }
}

/* One numeric or bool value (little-endian at p). Sets *finite to false for
 * NaN and infinities, which JSON cannot hold. */
static void fmt_num(gguf_vtype t, const uint8_t *p, char *buf, size_t n, bool *finite)
{
    uint64_t v = le(p, vsize(t));
    *finite = true;
    switch (t) {
    case GGUF_UINT8:
    case GGUF_UINT16:
    case GGUF_UINT32:
    case GGUF_UINT64: snprintf(buf, n, "%" PRIu64, v); break;
    case GGUF_INT8: snprintf(buf, n, "%d", (int8_t)v); break;
    case GGUF_INT16: snprintf(buf, n, "%d", (int16_t)v); break;
    case GGUF_INT32: snprintf(buf, n, "%" PRId32, (int32_t)v); break;
    case GGUF_INT64: snprintf(buf, n, "%" PRId64, (int64_t)v); break;
    case GGUF_BOOL: snprintf(buf, n, "%s", v ? "true" : "false"); break;
    case GGUF_FLOAT32: {
        uint32_t b = (uint32_t)v;
        float x;
        memcpy(&x, &b, 4);
        *finite = isfinite(x);
        fmt_float(x, true, buf, n);
        break;
    }
    case GGUF_FLOAT64: {
        double x;
        memcpy(&x, &v, 8);
        *finite = isfinite(x);
        fmt_float(x, false, buf, n);
        break;
    }
    default: snprintf(buf, n, "?"); break;
    }
}

/* ---- text ---- */

/* A quoted string with C escapes, cut after max bytes (at a UTF-8 boundary). */
static void put_str(const char *s, size_t n, size_t max)
{
    size_t shown = n;
    if (shown > max) {
        shown = max;
        while (shown > 0 && ((unsigned char)s[shown] & 0xC0) == 0x80)
            shown--;
    }
    putchar('"');
    for (size_t i = 0; i < shown; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\t')
            fputs("\\t", stdout);
        else if (c == '\r')
            fputs("\\r", stdout);
        else if (c < 0x20 || c == 0x7f)
            printf("\\x%02x", c);
        else
            putchar(c);
    }
    putchar('"');
    if (shown < n) printf("... (%zu bytes)", n);
}

static void text_value(const gguf_file *f, int i)
{
    gguf_vtype t = gguf_kv_type(f, i);
    char buf[64];
    bool finite;
    if (t == GGUF_STRING) {
        size_t len;
        const char *s = gguf_kv_str(f, i, &len);
        put_str(s, len, TEXT_MAX);
    } else if (t == GGUF_ARRAY) {
        gguf_vtype et = gguf_arr_type(f, i);
        uint64_t n = gguf_arr_len(f, i);
        printf("[%s \xc3\x97 %" PRIu64 "]", vtype_name(et), n);
        for (uint64_t j = 0; j < n && j < HEAD; j++) {
            fputs(j ? ", " : " ", stdout);
            if (et == GGUF_STRING) {
                size_t len;
                const char *s = gguf_arr_str(f, i, j, &len);
                put_str(s, len, TEXT_MAX / 2);
            } else {
                const uint8_t *p = gguf_arr_data(f, i);
                fmt_num(et, p + j * vsize(et), buf, sizeof buf, &finite);
                fputs(buf, stdout);
            }
        }
        if (n > HEAD) fputs(", ...", stdout);
    } else {
        fmt_num(t, gguf_kv_data(f, i), buf, sizeof buf, &finite);
        fputs(buf, stdout);
    }
}

typedef struct {
    int count;
    uint64_t params, bytes;
} total;

static uint64_t n_params(const gguf_tensor *t)
{
    uint64_t p = 1;
    for (int d = 0; d < t->n_dims; d++)
        p *= (uint64_t)t->ne[d];
    return p;
}

static double bpw(uint64_t bytes, uint64_t params)
{
    return params ? 8.0 * (double)bytes / (double)params : 0;
}

static void fmt_shape(const gguf_tensor *t, char *buf, size_t n)
{
    size_t o = 0;
    o += (size_t)snprintf(buf + o, n - o, "[");
    for (int d = 0; d < t->n_dims && o < n; d++)
        o += (size_t)snprintf(buf + o, n - o, "%s%" PRId64, d ? ", " : "", t->ne[d]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

static void sum_by_type(const gguf_file *f, total *by_type, total *all)
{
    for (int i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        assert((unsigned)t->type < KT_ID_END); /* the reader admits only types it knows */
        total *s = &by_type[t->type];
        uint64_t p = n_params(t);
        s->count++;
        s->params += p;
        s->bytes += t->nbytes;
        all->count++;
        all->params += p;
        all->bytes += t->nbytes;
    }
}

static void print_text(const gguf_file *f)
{
    printf("%s\n  GGUF v%" PRIu32 ", alignment %zu, %zu bytes, %d keys, %d tensors\n", gguf_path(f),
           gguf_version(f), gguf_alignment(f), gguf_file_size(f), gguf_n_kv(f), gguf_n_tensors(f));

    int kw = 4;
    for (int i = 0; i < gguf_n_kv(f); i++) {
        int l = (int)strlen(gguf_key(f, i));
        if (l > kw) kw = l < 48 ? l : 48;
    }
    printf("\nmetadata:\n");
    for (int i = 0; i < gguf_n_kv(f); i++) {
        printf("  %-*s  %-6s  ", kw, gguf_key(f, i), vtype_name(gguf_kv_type(f, i)));
        text_value(f, i);
        putchar('\n');
    }

    int nw = 4;
    for (int i = 0; i < gguf_n_tensors(f); i++) {
        int l = (int)strlen(gguf_tensor_at(f, i)->name);
        if (l > nw) nw = l;
    }
    printf("\ntensors:\n  %-*s  %-6s  %-22s %12s  %s\n", nw, "name", "type", "shape", "bytes",
           "bits/weight");
    for (int i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        char shape[96];
        fmt_shape(t, shape, sizeof shape);
        printf("  %-*s  %-6s  %-22s %12zu  %.5g\n", nw, t->name, gguf_type_name(t->type), shape,
               t->nbytes, bpw(t->nbytes, n_params(t)));
    }

    total by_type[KT_ID_END] = {{0}}, all = {0};
    sum_by_type(f, by_type, &all);
    printf("\ntotals by type:\n  %-6s  %7s  %14s  %14s  %s\n", "type", "tensors", "params", "bytes",
           "bits/weight");
    for (int id = 0; id < KT_ID_END; id++) {
        const total *s = &by_type[id];
        if (s->count)
            printf("  %-6s  %7d  %14" PRIu64 "  %14" PRIu64 "  %.5g\n", gguf_type_name((kt_type)id),
                   s->count, s->params, s->bytes, bpw(s->bytes, s->params));
    }
    printf("  %-6s  %7d  %14" PRIu64 "  %14" PRIu64 "  %.5g\n", "total", all.count, all.params,
           all.bytes, bpw(all.bytes, all.params));
}

/* ---- JSON ---- */

/* JSON text must be UTF-8: invalid bytes and NULs become U+FFFD. */
static char *utf8_clean(const char *s, size_t n)
{
    char *o = malloc(3 * n + 1), *p = o;
    if (!o) return NULL;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        bool ok = c != 0 && len && i + len <= n;
        for (size_t k = 1; ok && k < len; k++)
            ok = ((unsigned char)s[i + k] & 0xC0) == 0x80;
        if (ok && len > 1) { /* no overlong forms, surrogates or values past U+10FFFF */
            unsigned char d = (unsigned char)s[i + 1];
            ok = !(len == 2 && c < 0xC2) && !(len == 3 && c == 0xE0 && d < 0xA0) &&
                 !(len == 3 && c == 0xED && d >= 0xA0) && !(len == 4 && c == 0xF0 && d < 0x90) &&
                 !(len == 4 && (c > 0xF4 || (c == 0xF4 && d >= 0x90)));
        }
        if (ok) {
            memcpy(p, s + i, len);
            p += len;
            i += len;
        } else {
            memcpy(p, "\xef\xbf\xbd", 3);
            p += 3;
            i++;
        }
    }
    *p = 0;
    return o;
}

static cJSON *json_str(const char *s, size_t n)
{
    char *c = utf8_clean(s, n);
    cJSON *j = c ? cJSON_CreateString(c) : NULL;
    free(c);
    return j;
}

static cJSON *json_num(gguf_vtype t, const uint8_t *p)
{
    char buf[64];
    bool finite;
    fmt_num(t, p, buf, sizeof buf, &finite);
    if (t == GGUF_BOOL) return cJSON_CreateBool(p[0] != 0);
    /* Raw keeps 64-bit integers exact; cJSON's numbers are doubles. */
    return finite ? cJSON_CreateRaw(buf) : cJSON_CreateNull();
}

static cJSON *json_u64(uint64_t v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    return cJSON_CreateRaw(buf);
}

static cJSON *json_kv(const gguf_file *f, int i)
{
    cJSON *o = cJSON_CreateObject();
    gguf_vtype t = gguf_kv_type(f, i);
    const char *key = gguf_key(f, i);
    cJSON_AddItemToObject(o, "key", json_str(key, strlen(key)));
    cJSON_AddStringToObject(o, "type", vtype_name(t));
    if (t == GGUF_STRING) {
        size_t len;
        const char *s = gguf_kv_str(f, i, &len);
        cJSON_AddItemToObject(o, "value", json_str(s, len));
    } else if (t == GGUF_ARRAY) {
        gguf_vtype et = gguf_arr_type(f, i);
        uint64_t n = gguf_arr_len(f, i);
        cJSON_AddStringToObject(o, "element_type", vtype_name(et));
        cJSON_AddItemToObject(o, "length", json_u64(n));
        cJSON *head = cJSON_AddArrayToObject(o, "head");
        for (uint64_t j = 0; j < n && j < HEAD; j++) {
            if (et == GGUF_STRING) {
                size_t len;
                const char *s = gguf_arr_str(f, i, j, &len);
                cJSON_AddItemToArray(head, json_str(s, len));
            } else {
                const uint8_t *p = gguf_arr_data(f, i);
                cJSON_AddItemToArray(head, json_num(et, p + j * vsize(et)));
            }
        }
    } else {
        cJSON_AddItemToObject(o, "value", json_num(t, gguf_kv_data(f, i)));
    }
    return o;
}

static cJSON *json_total(const char *type, const total *s)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", type);
    cJSON_AddNumberToObject(o, "tensors", s->count);
    cJSON_AddItemToObject(o, "params", json_u64(s->params));
    cJSON_AddItemToObject(o, "bytes", json_u64(s->bytes));
    cJSON_AddNumberToObject(o, "bits_per_weight", bpw(s->bytes, s->params));
    return o;
}

static int print_json(const gguf_file *f)
{
    cJSON *root = cJSON_CreateObject();
    const char *path = gguf_path(f);
    cJSON_AddItemToObject(root, "file", json_str(path, strlen(path)));
    cJSON_AddNumberToObject(root, "version", gguf_version(f));
    cJSON_AddItemToObject(root, "alignment", json_u64(gguf_alignment(f)));
    cJSON_AddItemToObject(root, "size", json_u64(gguf_file_size(f)));

    cJSON *meta = cJSON_AddArrayToObject(root, "metadata");
    for (int i = 0; i < gguf_n_kv(f); i++)
        cJSON_AddItemToArray(meta, json_kv(f, i));

    cJSON *tensors = cJSON_AddArrayToObject(root, "tensors");
    for (int i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToObject(o, "name", json_str(t->name, strlen(t->name)));
        cJSON_AddStringToObject(o, "type", gguf_type_name(t->type));
        cJSON *shape = cJSON_AddArrayToObject(o, "shape");
        for (int d = 0; d < t->n_dims; d++)
            cJSON_AddItemToArray(shape, json_u64((uint64_t)t->ne[d]));
        cJSON_AddItemToObject(o, "offset", json_u64(t->offset));
        cJSON_AddItemToObject(o, "bytes", json_u64(t->nbytes));
        cJSON_AddNumberToObject(o, "bits_per_weight", bpw(t->nbytes, n_params(t)));
        cJSON_AddItemToArray(tensors, o);
    }

    total by_type[KT_ID_END] = {{0}}, all = {0};
    sum_by_type(f, by_type, &all);
    cJSON *totals = cJSON_AddArrayToObject(root, "totals");
    for (int id = 0; id < KT_ID_END; id++)
        if (by_type[id].count)
            cJSON_AddItemToArray(totals, json_total(gguf_type_name((kt_type)id), &by_type[id]));
    cJSON_AddItemToObject(root, "total", json_total("total", &all));

    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) return cli_error(CMD, "out of memory");
    puts(text);
    cJSON_free(text);
    return CLI_OK;
}

int cmd_inspect(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bool json = false;
    int c;
    while ((c = cli_getopt(CMD, argc, argv, "h", longopts)) != -1) {
        switch (c) {
        case 'j': json = true; break;
        case 'h': fputs(usage_text, stdout); return CLI_OK;
        default: return CLI_USAGE;
        }
    }
    if (optind >= argc) return cli_usage_error(CMD, "no FILE given");
    if (argc - optind > 1) return cli_usage_error(CMD, "one FILE at a time");

    gguf_file *f;
    char err[512];
    if (gguf_open(argv[optind], &f, err, sizeof err) != GGUF_OK) return cli_error(CMD, "%s", err);
    int rc = json ? print_json(f) : (print_text(f), CLI_OK);
    gguf_close(f);
    if (fflush(stdout) || ferror(stdout)) return cli_error(CMD, "writing the output failed");
    return rc;
}
