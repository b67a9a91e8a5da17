/* GGUF v3 reader and writer (format: ggml's docs/gguf.md).
 *
 * Layout, all little-endian:
 *   "GGUF" u32 version, u64 n_tensors, u64 n_kv
 *   n_kv    x { string key, u32 type, value }
 *   n_tensors x { string name, u32 n_dims, u64 ne[n_dims], u32 type, u64 offset }
 *   zero padding to the alignment, then the data section
 * where a string is u64 length + bytes (no NUL) and an array value is
 * u32 element type + u64 count + elements.
 *
 * The reader never trusts a number from the file: every length is checked
 * against the bytes that are left before it is used, in 64-bit arithmetic
 * written so that it cannot overflow. */
#include "engine/gguf.h"
#include "kernels/traits.h"

#include "engine/buflist.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_MAGIC "GGUF"
#define GGUF_VERSION 3
#define HEADER_BYTES 24
#define MAX_NAME 63 /* ggml's GGML_MAX_NAME less the NUL: longer names break llama.cpp */
#define MAX_KEY 65535

/* The type table's row for a type id as read from a file; NULL for ids
 * tern does not know. */
static const kt_traits *traits_of(uint32_t id)
{
    return id < KT_ID_END ? kt_traits_of((kt_type)id) : NULL;
}

/* Bytes of a tensor, or 0 when the shape is invalid for the type or the
 * size does not fit in 63 bits. */
static uint64_t tensor_bytes(const kt_traits *tt, int n_dims, const int64_t *ne)
{
    if (ne[0] % tt->block) return 0;
    uint64_t bytes = (uint64_t)(ne[0] / tt->block) * (uint64_t)tt->block_bytes;
    for (int d = 1; d < n_dims; d++) {
        if (bytes > (uint64_t)INT64_MAX / (uint64_t)ne[d]) return 0;
        bytes *= (uint64_t)ne[d];
    }
    return bytes;
}

static size_t vsize(uint32_t t) /* bytes of a fixed-size value; 0 for string/array/unknown */
{
    switch (t) {
    case GGUF_UINT8:
    case GGUF_INT8:
    case GGUF_BOOL: return 1;
    case GGUF_UINT16:
    case GGUF_INT16: return 2;
    case GGUF_UINT32:
    case GGUF_INT32:
    case GGUF_FLOAT32: return 4;
    case GGUF_UINT64:
    case GGUF_INT64:
    case GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

static void msg(char *err, size_t errlen, const char *name, const char *fmt, va_list ap)
{
    if (!err || !errlen) return;
    int n = snprintf(err, errlen, "%s: ", name ? name : "<gguf>");
    if (n >= 0 && (size_t)n < errlen) vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
}

static uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const uint8_t *p)
{
    return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

/* ======================================================================
 * Reading
 * ====================================================================== */

typedef struct {
    char *key;
    gguf_vtype type;
    gguf_vtype arr_type; /* arrays */
    uint64_t n;          /* arrays: element count; strings: byte length */
    const uint8_t *val;  /* scalars and numeric arrays: the bytes in the file */
    const uint8_t *raw;  /* the whole encoded value, for gguf_set_from */
    size_t raw_len;
    char *str;     /* strings: NUL-terminated copy */
    char *blob;    /* string arrays: the n strings, each NUL-terminated */
    uint64_t *off; /* string arrays: n + 1 offsets into blob */
} rkv;

typedef struct {
    const char *name;
    int idx;
} sorted_name;

struct gguf_file {
    char *path;
    const uint8_t *base;
    size_t size;
    bool mapped;
    uint32_t version;
    size_t alignment;
    int n_kv;
    rkv *kv;
    sorted_name *kv_sorted;
    int n_tensors;
    gguf_tensor *t;
    sorted_name *t_sorted;
};

typedef struct {
    const uint8_t *p;
    size_t len;
    size_t pos;
    const char *name;
    char *err;
    size_t errlen;
} reader;

static bool fail(reader *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    msg(r->err, r->errlen, r->name, fmt, ap);
    va_end(ap);
    return false;
}

static size_t left(const reader *r)
{
    assert(r->pos <= r->len); /* every advance was checked by need() or get_str() */
    return r->len - r->pos;
}

/* Names what is being read in messages: "key 'general.name'", or just the
 * field when the key or tensor name is not known yet. */
typedef struct {
    const char *kind; /* "key", "tensor" or NULL */
    const char *name;
} owner;

#define KEY(k) ((owner){"key", (k)})
#define TENSOR(t) ((owner){"tensor", (t)})
#define NOBODY ((owner){NULL, NULL})
#define OWNER_FMT "%s%s%s%s"
#define OWNER_ARGS(o)                                                                              \
    (o).kind ? (o).kind : "", (o).kind ? " '" : "", (o).kind ? (o).name : "", (o).kind ? "': " : ""

static bool need(reader *r, uint64_t n, const char *what, owner o)
{
    if (n <= left(r)) return true;
    return fail(
        r, "truncated: " OWNER_FMT "%s needs %" PRIu64 " bytes at offset %zu but the file has %zu",
        OWNER_ARGS(o), what, n, r->pos, r->len);
}

static bool get32(reader *r, uint32_t *v, const char *what, owner o)
{
    if (!need(r, 4, what, o)) return false;
    *v = rd32(r->p + r->pos);
    r->pos += 4;
    return true;
}

static bool get64(reader *r, uint64_t *v, const char *what, owner o)
{
    if (!need(r, 8, what, o)) return false;
    *v = rd64(r->p + r->pos);
    r->pos += 8;
    return true;
}

/* A string: u64 length then bytes. Returns a view; *s is not NUL-terminated. */
static bool get_str(reader *r, const uint8_t **s, uint64_t *len, const char *what, owner o)
{
    if (!get64(r, len, what, o)) return false;
    if (*len > left(r))
        return fail(r,
                    OWNER_FMT "%s: length %" PRIu64 " at offset %zu runs past the end of the file",
                    OWNER_ARGS(o), what, *len, r->pos - 8);
    *s = r->p + r->pos;
    r->pos += (size_t)*len;
    return true;
}

static char *dup_n(const uint8_t *s, size_t n)
{
    char *c = malloc(n + 1);
    if (!c) return NULL;
    memcpy(c, s, n);
    c[n] = 0;
    return c;
}

static bool check_bools(reader *r, const uint8_t *p, uint64_t n, const char *key)
{
    for (uint64_t j = 0; j < n; j++)
        if (p[j] > 1) return fail(r, "key '%s': bool value %u is not 0 or 1", key, p[j]);
    return true;
}

static bool read_string_array(reader *r, rkv *kv)
{
    /* Every element is at least its 8-byte length: bounds the count first. */
    if (kv->n > left(r) / 8)
        return fail(r, "key '%s': array of %" PRIu64 " strings runs past the end of the file",
                    kv->key, kv->n);
    size_t start = r->pos;
    uint64_t total = 0;
    for (uint64_t j = 0; j < kv->n; j++) {
        const uint8_t *s = NULL;
        uint64_t len = 0;
        if (!get_str(r, &s, &len, "array string", KEY(kv->key))) return false;
        total += len + 1; /* bounded by the file size: cannot overflow */
    }
    kv->off = malloc((size_t)(kv->n + 1) * sizeof *kv->off);
    kv->blob = malloc((size_t)total + 1);
    if (!kv->off || !kv->blob) return fail(r, "key '%s': out of memory", kv->key);
    size_t pos = start;
    uint64_t o = 0;
    for (uint64_t j = 0; j < kv->n; j++) {
        uint64_t len = rd64(r->p + pos);
        pos += 8;
        memcpy(kv->blob + o, r->p + pos, (size_t)len);
        kv->blob[o + len] = 0;
        kv->off[j] = o;
        o += len + 1;
        pos += (size_t)len;
    }
    kv->off[kv->n] = o;
    return true;
}

static bool read_value(reader *r, rkv *kv)
{
    size_t start = r->pos;
    if (kv->type == GGUF_STRING) {
        const uint8_t *s = NULL;
        if (!get_str(r, &s, &kv->n, "string value", KEY(kv->key))) return false;
        kv->val = s;
        kv->str = dup_n(s, (size_t)kv->n);
        if (!kv->str) return fail(r, "key '%s': out of memory", kv->key);
    } else if (kv->type == GGUF_ARRAY) {
        uint32_t et;
        if (!get32(r, &et, "array element type", KEY(kv->key))) return false;
        if (et == GGUF_ARRAY)
            return fail(r, "key '%s': arrays of arrays are not supported", kv->key);
        if (et != GGUF_STRING && !vsize(et))
            return fail(r, "key '%s': unknown array element type %" PRIu32, kv->key, et);
        kv->arr_type = (gguf_vtype)et;
        if (!get64(r, &kv->n, "array length", KEY(kv->key))) return false;
        kv->val = r->p + r->pos;
        if (et == GGUF_STRING) {
            if (!read_string_array(r, kv)) return false;
        } else {
            size_t es = vsize(et);
            if (kv->n > left(r) / es)
                return fail(r,
                            "key '%s': array of %" PRIu64 " elements runs past the end of the file",
                            kv->key, kv->n);
            if (et == GGUF_BOOL && !check_bools(r, kv->val, kv->n, kv->key)) return false;
            r->pos += (size_t)kv->n * es;
        }
    } else {
        size_t es = vsize(kv->type);
        if (!es) return fail(r, "key '%s': unknown value type %u", kv->key, (unsigned)kv->type);
        if (!need(r, es, "value", KEY(kv->key))) return false;
        kv->val = r->p + r->pos;
        if (kv->type == GGUF_BOOL && !check_bools(r, kv->val, 1, kv->key)) return false;
        r->pos += es;
    }
    kv->raw = r->p + start;
    kv->raw_len = r->pos - start;
    return true;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const sorted_name *)a)->name, ((const sorted_name *)b)->name);
}

/* Sorted index for lookups; also finds duplicates. Returns the duplicate or NULL. */
static const char *sort_names(sorted_name *s, int n)
{
    qsort(s, (size_t)n, sizeof *s, cmp_name);
    for (int i = 1; i < n; i++)
        if (!strcmp(s[i - 1].name, s[i].name)) return s[i].name;
    return NULL;
}

static bool read_kvs(reader *r, gguf_file *f, uint64_t n_kv)
{
    /* Smallest kv: 8-byte key length, 4-byte type, 1-byte value. */
    if (n_kv > left(r) / 13 || n_kv > INT32_MAX)
        return fail(r,
                    "header claims %" PRIu64 " metadata keys, more than a %zu-byte file can hold",
                    n_kv, r->len);
    f->kv = calloc((size_t)n_kv + 1, sizeof *f->kv);
    f->kv_sorted = calloc((size_t)n_kv + 1, sizeof *f->kv_sorted);
    if (!f->kv || !f->kv_sorted) return fail(r, "out of memory");
    for (uint64_t i = 0; i < n_kv; i++) {
        rkv *kv = &f->kv[i];
        const uint8_t *s = NULL;
        uint64_t len = 0;
        char what[48];
        snprintf(what, sizeof what, "key %" PRIu64, i);
        if (!get_str(r, &s, &len, what, NOBODY)) return false;
        if (len == 0) return fail(r, "%s: empty key", what);
        if (memchr(s, 0, (size_t)len)) return fail(r, "%s: key contains a NUL byte", what);
        kv->key = dup_n(s, (size_t)len);
        if (!kv->key) return fail(r, "out of memory");
        f->n_kv = (int)i + 1; /* from here on gguf_close frees it */
        uint32_t t;
        if (!get32(r, &t, "value type", KEY(kv->key))) return false;
        kv->type = (gguf_vtype)t;
        if (t > GGUF_FLOAT64) return fail(r, "key '%s': unknown value type %" PRIu32, kv->key, t);
        if (!read_value(r, kv)) return false;
        f->kv_sorted[i] = (sorted_name){kv->key, (int)i};
    }
    const char *dup = sort_names(f->kv_sorted, f->n_kv);
    if (dup) return fail(r, "duplicate key '%s'", dup);

    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    int ai = gguf_find_key(f, "general.alignment");
    if (ai >= 0) {
        const rkv *kv = &f->kv[ai];
        if (kv->type != GGUF_UINT32) return fail(r, "key 'general.alignment': must be a uint32");
        uint32_t a = rd32(kv->val);
        if (a == 0 || (a & (a - 1)))
            return fail(r, "key 'general.alignment': %" PRIu32 " is not a power of two", a);
        f->alignment = a;
    }
    return true;
}

static bool read_tensor_info(reader *r, gguf_tensor *t, uint64_t i)
{
    const uint8_t *s = NULL;
    uint64_t len = 0;
    char what[48];
    snprintf(what, sizeof what, "tensor %" PRIu64 " name", i);
    if (!get_str(r, &s, &len, what, NOBODY)) return false;
    if (len == 0) return fail(r, "tensor %" PRIu64 ": empty name", i);
    if (memchr(s, 0, (size_t)len))
        return fail(r, "tensor %" PRIu64 ": name contains a NUL byte", i);
    char *name = dup_n(s, (size_t)len);
    if (!name) return fail(r, "out of memory");
    t->name = name;

    uint32_t n_dims, type;
    if (!get32(r, &n_dims, "n_dims", TENSOR(name))) return false;
    if (n_dims == 0 || n_dims > GGUF_MAX_DIMS)
        return fail(r, "tensor '%s': %" PRIu32 " dimensions (must be 1 to %d)", name, n_dims,
                    GGUF_MAX_DIMS);
    t->n_dims = (int)n_dims;
    for (int d = 0; d < GGUF_MAX_DIMS; d++)
        t->ne[d] = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        uint64_t ne;
        if (!get64(r, &ne, "dimension", TENSOR(name))) return false;
        if (ne == 0 || ne > INT64_MAX)
            return fail(r, "tensor '%s': dimension %" PRIu32 " is %" PRId64 " (must be positive)",
                        name, d, (int64_t)ne);
        t->ne[d] = (int64_t)ne;
    }
    if (!get32(r, &type, "type", TENSOR(name))) return false;
    const kt_traits *tt = traits_of(type);
    if (!tt) return fail(r, "tensor '%s': unknown tensor type %" PRIu32, name, type);
    t->type = (kt_type)type;
    if (t->ne[0] % tt->block)
        return fail(r, "tensor '%s': row length %" PRId64 " is not a multiple of %s's block of %d",
                    name, t->ne[0], tt->name, tt->block);
    uint64_t nbytes = tensor_bytes(tt, t->n_dims, t->ne);
    if (!nbytes) return fail(r, "tensor '%s': shape is too large", name);
    /* Checked against the file size later; here it only has to fit size_t. */
    if (nbytes > SIZE_MAX) return fail(r, "tensor '%s': shape is too large", name);
    t->nbytes = (size_t)nbytes;
    if (!get64(r, &t->offset, "offset", TENSOR(name))) return false;
    return true;
}

static int cmp_offset(const void *a, const void *b)
{
    const gguf_tensor *x = *(const gguf_tensor *const *)a, *y = *(const gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static bool read_tensors(reader *r, gguf_file *f, uint64_t n_t)
{
    /* Smallest tensor info: name length, n_dims, one dimension, type, offset. */
    if (n_t > left(r) / 32 || n_t > INT32_MAX)
        return fail(r, "header claims %" PRIu64 " tensors, more than a %zu-byte file can hold", n_t,
                    r->len);
    f->t = calloc((size_t)n_t + 1, sizeof *f->t);
    f->t_sorted = calloc((size_t)n_t + 1, sizeof *f->t_sorted);
    if (!f->t || !f->t_sorted) return fail(r, "out of memory");
    for (uint64_t i = 0; i < n_t; i++) {
        f->n_tensors = (int)i + 1;
        if (!read_tensor_info(r, &f->t[i], i)) return false;
        f->t_sorted[i] = (sorted_name){f->t[i].name, (int)i};
    }
    const char *dup = sort_names(f->t_sorted, f->n_tensors);
    if (dup) return fail(r, "duplicate tensor '%s'", dup);
    if (!n_t) return true;

    uint64_t a = f->alignment;
    assert(a && !(a & (a - 1))); /* read_kvs accepts only powers of two */
    uint64_t data = ((uint64_t)r->pos + a - 1) / a * a;
    if (data > r->len)
        return fail(r,
                    "truncated: the data section starts at offset %" PRIu64
                    " but the file has %zu bytes",
                    data, r->len);
    uint64_t room = r->len - data;
    for (int i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->t[i];
        if (t->offset % a)
            return fail(
                r, "tensor '%s': offset %" PRIu64 " is not a multiple of the alignment %" PRIu64,
                t->name, t->offset, a);
        if (t->offset > room || t->nbytes > room - t->offset)
            return fail(r,
                        "tensor '%s': data at offset %" PRIu64 " (%zu bytes) runs past the end "
                        "of the file (%zu bytes)",
                        t->name, data + t->offset, t->nbytes, r->len);
        t->data = r->p + data + t->offset;
        /* From here on readers trust that the data lies inside the mapping. */
        assert(data + t->offset + t->nbytes <= r->len);
    }
    const gguf_tensor **by_off = malloc((size_t)f->n_tensors * sizeof *by_off);
    if (!by_off) return fail(r, "out of memory");
    for (int i = 0; i < f->n_tensors; i++)
        by_off[i] = &f->t[i];
    qsort(by_off, (size_t)f->n_tensors, sizeof *by_off, cmp_offset);
    for (int i = 1; i < f->n_tensors; i++) {
        const gguf_tensor *x = by_off[i - 1], *y = by_off[i];
        if (x->offset + x->nbytes > y->offset) {
            fail(r, "tensor '%s' overlaps tensor '%s'", y->name, x->name);
            free(by_off);
            return false;
        }
    }
    free(by_off);
    return true;
}

static bool parse(reader *r, gguf_file *f)
{
    if (r->len == 0) return fail(r, "truncated: empty file");
    if (r->len < 4) return fail(r, "truncated: %zu bytes is too short for a GGUF file", r->len);
    if (memcmp(r->p, GGUF_MAGIC, 4)) return fail(r, "not a GGUF file (bad magic)");
    if (r->len < HEADER_BYTES)
        return fail(r, "truncated: %zu bytes is too short for a GGUF header", r->len);
    f->version = rd32(r->p + 4);
    if (f->version != GGUF_VERSION) {
        if (f->version == 0x03000000u) return fail(r, "big-endian GGUF files are not supported");
        return fail(r, "unsupported GGUF version %" PRIu32 " (tern reads version %d)", f->version,
                    GGUF_VERSION);
    }
    uint64_t n_t = rd64(r->p + 8), n_kv = rd64(r->p + 16);
    r->pos = HEADER_BYTES;
    return read_kvs(r, f, n_kv) && read_tensors(r, f, n_t);
}

static int open_common(const uint8_t *buf, size_t len, const char *name, bool mapped,
                       gguf_file **out, char *err, size_t errlen)
{
    *out = NULL;
    reader r = {buf, len, 0, name, err, errlen};
    gguf_file *f = calloc(1, sizeof *f);
    if (!f) {
        fail(&r, "out of memory");
        if (mapped) munmap((void *)buf, len);
        return GGUF_ERR;
    }
    f->base = buf;
    f->size = len;
    f->mapped = mapped;
    f->path = strdup(name);
    if (!f->path || !parse(&r, f)) {
        if (!f->path) fail(&r, "out of memory");
        gguf_close(f);
        return GGUF_ERR;
    }
    *out = f;
    return GGUF_OK;
}

int gguf_open(const char *path, gguf_file **out, char *err, size_t errlen)
{
    reader r = {NULL, 0, 0, path, err, errlen};
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail(&r, "%s", strerror(errno)), GGUF_ERR;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        fail(&r, "%s", strerror(errno));
        close(fd);
        return GGUF_ERR;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return fail(&r, "not a regular file"), GGUF_ERR;
    }
    if (st.st_size == 0) {
        close(fd);
        return fail(&r, "truncated: empty file"), GGUF_ERR;
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        close(fd);
        return fail(&r, "file too large to map"), GGUF_ERR;
    }
    size_t len = (size_t)st.st_size;
    void *p = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd); /* the mapping keeps the file */
    if (p == MAP_FAILED) return fail(&r, "mmap: %s", strerror(e)), GGUF_ERR;
    return open_common(p, len, path, true, out, err, errlen);
}

int gguf_open_memory(const void *buf, size_t len, const char *name, gguf_file **out, char *err,
                     size_t errlen)
{
    if (!buf) len = 0;
    return open_common(buf ? (const uint8_t *)buf : (const uint8_t *)"", len,
                       name ? name : "<memory>", false, out, err, errlen);
}

void gguf_close(gguf_file *f)
{
    if (!f) return;
    for (int i = 0; i < f->n_kv; i++) {
        free(f->kv[i].key);
        free(f->kv[i].str);
        free(f->kv[i].blob);
        free(f->kv[i].off);
    }
    for (int i = 0; i < f->n_tensors; i++)
        free((char *)f->t[i].name);
    free(f->kv);
    free(f->kv_sorted);
    free(f->t);
    free(f->t_sorted);
    if (f->mapped) munmap((void *)f->base, f->size);
    free(f->path);
    free(f);
}

const char *gguf_path(const gguf_file *f)
{
    return f->path;
}

uint32_t gguf_version(const gguf_file *f)
{
    return f->version;
}

size_t gguf_alignment(const gguf_file *f)
{
    return f->alignment;
}

size_t gguf_file_size(const gguf_file *f)
{
    return f->size;
}

int gguf_n_kv(const gguf_file *f)
{
    return f->n_kv;
}

static int find_sorted(const sorted_name *s, int n, const char *name)
{
    if (!name) return -1;
    int lo = 0, hi = n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(s[mid].name, name);
        if (!c) return s[mid].idx;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

int gguf_find_key(const gguf_file *f, const char *key)
{
    return find_sorted(f->kv_sorted, f->n_kv, key);
}

static const rkv *kv_at(const gguf_file *f, int i)
{
    return i >= 0 && i < f->n_kv ? &f->kv[i] : NULL;
}

const char *gguf_key(const gguf_file *f, int i)
{
    const rkv *kv = kv_at(f, i);
    return kv ? kv->key : NULL;
}

gguf_vtype gguf_kv_type(const gguf_file *f, int i)
{
    const rkv *kv = kv_at(f, i);
    return kv ? kv->type : GGUF_ARRAY;
}

/* An integer value widened to 64 bits; neg says whether it is below zero. */
static bool int_value(const rkv *kv, uint64_t *mag, bool *neg)
{
    const uint8_t *p = kv->val;
    int64_t s;
    switch (kv->type) {
    case GGUF_UINT8:
        *mag = p[0];
        *neg = false;
        return true;
    case GGUF_UINT16:
        *mag = rd16(p);
        *neg = false;
        return true;
    case GGUF_UINT32:
        *mag = rd32(p);
        *neg = false;
        return true;
    case GGUF_UINT64:
        *mag = rd64(p);
        *neg = false;
        return true;
    case GGUF_INT8: s = (int8_t)p[0]; break;
    case GGUF_INT16: s = (int16_t)rd16(p); break;
    case GGUF_INT32: s = (int32_t)rd32(p); break;
    case GGUF_INT64: s = (int64_t)rd64(p); break;
    default: return false;
    }
    *neg = s < 0;
    *mag = (uint64_t)s; /* two's complement bits; only read as signed when neg */
    return true;
}

static const rkv *kv_named(const gguf_file *f, const char *key)
{
    return kv_at(f, gguf_find_key(f, key));
}

bool gguf_get_u64(const gguf_file *f, const char *key, uint64_t *out)
{
    const rkv *kv = kv_named(f, key);
    uint64_t v;
    bool neg;
    if (!kv || !int_value(kv, &v, &neg) || neg) return false;
    *out = v;
    return true;
}

bool gguf_get_i64(const gguf_file *f, const char *key, int64_t *out)
{
    const rkv *kv = kv_named(f, key);
    uint64_t v;
    bool neg;
    if (!kv || !int_value(kv, &v, &neg)) return false;
    if (!neg && v > INT64_MAX) return false;
    *out = (int64_t)v;
    return true;
}

bool gguf_get_f64(const gguf_file *f, const char *key, double *out)
{
    const rkv *kv = kv_named(f, key);
    uint64_t v;
    bool neg;
    if (!kv) return false;
    if (kv->type == GGUF_FLOAT32) {
        uint32_t b = rd32(kv->val);
        float x;
        memcpy(&x, &b, 4);
        *out = x;
    } else if (kv->type == GGUF_FLOAT64) {
        uint64_t b = rd64(kv->val);
        double x;
        memcpy(&x, &b, 8);
        *out = x;
    } else if (int_value(kv, &v, &neg)) {
        *out = neg ? (double)(int64_t)v : (double)v;
    } else {
        return false;
    }
    return true;
}

bool gguf_get_bool(const gguf_file *f, const char *key, bool *out)
{
    const rkv *kv = kv_named(f, key);
    if (!kv || kv->type != GGUF_BOOL) return false;
    *out = kv->val[0] != 0;
    return true;
}

const char *gguf_get_str(const gguf_file *f, const char *key)
{
    const rkv *kv = kv_named(f, key);
    return kv && kv->type == GGUF_STRING ? kv->str : NULL;
}

const void *gguf_kv_data(const gguf_file *f, int i)
{
    const rkv *kv = kv_at(f, i);
    if (!kv) return NULL;
    if (kv->type == GGUF_STRING) return kv->str;
    if (kv->type == GGUF_ARRAY) return kv->arr_type == GGUF_STRING ? NULL : kv->val;
    return kv->val;
}

const char *gguf_kv_str(const gguf_file *f, int i, size_t *len)
{
    const rkv *kv = kv_at(f, i);
    if (!kv || kv->type != GGUF_STRING) return NULL;
    if (len) *len = (size_t)kv->n;
    return kv->str;
}

gguf_vtype gguf_arr_type(const gguf_file *f, int i)
{
    const rkv *kv = kv_at(f, i);
    if (!kv) return GGUF_ARRAY;
    return kv->type == GGUF_ARRAY ? kv->arr_type : kv->type;
}

uint64_t gguf_arr_len(const gguf_file *f, int i)
{
    const rkv *kv = kv_at(f, i);
    return kv && kv->type == GGUF_ARRAY ? kv->n : 0;
}

const void *gguf_arr_data(const gguf_file *f, int i)
{
    const rkv *kv = kv_at(f, i);
    if (!kv || kv->type != GGUF_ARRAY || kv->arr_type == GGUF_STRING) return NULL;
    return kv->val;
}

const char *gguf_arr_str(const gguf_file *f, int i, uint64_t j, size_t *len)
{
    const rkv *kv = kv_at(f, i);
    if (!kv || kv->type != GGUF_ARRAY || kv->arr_type != GGUF_STRING || j >= kv->n) return NULL;
    if (len) *len = (size_t)(kv->off[j + 1] - kv->off[j] - 1);
    return kv->blob + kv->off[j];
}

int gguf_n_tensors(const gguf_file *f)
{
    return f->n_tensors;
}

const gguf_tensor *gguf_tensor_at(const gguf_file *f, int i)
{
    return i >= 0 && i < f->n_tensors ? &f->t[i] : NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name)
{
    int i = find_sorted(f->t_sorted, f->n_tensors, name);
    return i < 0 ? NULL : &f->t[i];
}

const char *gguf_type_name(kt_type t)
{
    const kt_traits *tt = traits_of((uint32_t)t);
    return tt ? tt->name : NULL;
}

size_t gguf_tensor_bytes(kt_type t, int n_dims, const int64_t *ne)
{
    const kt_traits *tt = traits_of((uint32_t)t);
    if (!tt || n_dims < 1 || n_dims > GGUF_MAX_DIMS) return 0;
    for (int d = 0; d < n_dims; d++)
        if (ne[d] <= 0) return 0;
    uint64_t b = tensor_bytes(tt, n_dims, ne);
    return b > SIZE_MAX ? 0 : (size_t)b;
}

/* ======================================================================
 * Writing
 * ====================================================================== */

typedef struct {
    char *key;
    gguf_vtype type;
    uint8_t *val; /* the encoded value, as it goes in the file after the type */
    size_t len;
} wkv;

typedef struct {
    char *name;
    kt_type type;
    int n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    const void *data;
    size_t nbytes;
    uint64_t offset;
} wtensor;

struct gguf_writer {
    wkv *kv;
    int n_kv, cap_kv;
    wtensor *t;
    int n_t, cap_t;
    buflist owned; /* gguf_writer_alloc's buffers */
    /* Setters return nothing, so their first failure is kept and reported by gguf_write. */
    char err[256];
    bool failed;
};

gguf_writer *gguf_writer_create(void)
{
    return calloc(1, sizeof(gguf_writer));
}

void gguf_writer_destroy(gguf_writer *w)
{
    if (!w) return;
    for (int i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].val);
    }
    for (int i = 0; i < w->n_t; i++)
        free(w->t[i].name);
    buflist_free(&w->owned);
    free(w->kv);
    free(w->t);
    free(w);
}

void *gguf_writer_alloc(gguf_writer *w, size_t bytes)
{
    return buflist_alloc(&w->owned, bytes);
}

static void wfail(gguf_writer *w, const char *fmt, ...)
{
    if (w->failed) return;
    w->failed = true;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->err, sizeof w->err, fmt, ap);
    va_end(ap);
}

static void wr32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> 8 * i);
}

static void wr64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> 8 * i);
}

/* Takes ownership of val (which may be NULL after a failed allocation). */
static void set_value(gguf_writer *w, const char *key, gguf_vtype type, uint8_t *val, size_t len)
{
    if (!w) {
        free(val);
        return;
    }
    if (!val) {
        wfail(w, "key '%s': out of memory", key ? key : "(null)");
        return;
    }
    if (!key || !*key || strlen(key) > MAX_KEY) {
        free(val);
        wfail(w, "key '%s': keys must be 1 to %d bytes", key ? key : "(null)", MAX_KEY);
        return;
    }
    for (int i = 0; i < w->n_kv; i++) {
        if (!strcmp(w->kv[i].key, key)) {
            free(w->kv[i].val);
            w->kv[i].type = type;
            w->kv[i].val = val;
            w->kv[i].len = len;
            return;
        }
    }
    if (w->n_kv == w->cap_kv) {
        int cap = w->cap_kv ? 2 * w->cap_kv : 16;
        wkv *kv = realloc(w->kv, (size_t)cap * sizeof *kv);
        if (!kv) {
            free(val);
            wfail(w, "key '%s': out of memory", key);
            return;
        }
        w->kv = kv;
        w->cap_kv = cap;
    }
    char *k = strdup(key);
    if (!k) {
        free(val);
        wfail(w, "key '%s': out of memory", key);
        return;
    }
    w->kv[w->n_kv++] = (wkv){k, type, val, len};
}

static void set_scalar(gguf_writer *w, const char *key, gguf_vtype type, uint64_t bits)
{
    size_t n = vsize(type);
    uint8_t *v = malloc(n);
    if (v)
        for (size_t i = 0; i < n; i++)
            v[i] = (uint8_t)(bits >> 8 * i);
    set_value(w, key, type, v, n);
}

void gguf_set_u8(gguf_writer *w, const char *key, uint8_t v)
{
    set_scalar(w, key, GGUF_UINT8, v);
}

void gguf_set_i8(gguf_writer *w, const char *key, int8_t v)
{
    set_scalar(w, key, GGUF_INT8, (uint8_t)v);
}

void gguf_set_u16(gguf_writer *w, const char *key, uint16_t v)
{
    set_scalar(w, key, GGUF_UINT16, v);
}

void gguf_set_i16(gguf_writer *w, const char *key, int16_t v)
{
    set_scalar(w, key, GGUF_INT16, (uint16_t)v);
}

void gguf_set_u32(gguf_writer *w, const char *key, uint32_t v)
{
    set_scalar(w, key, GGUF_UINT32, v);
}

void gguf_set_i32(gguf_writer *w, const char *key, int32_t v)
{
    set_scalar(w, key, GGUF_INT32, (uint32_t)v);
}

void gguf_set_u64(gguf_writer *w, const char *key, uint64_t v)
{
    set_scalar(w, key, GGUF_UINT64, v);
}

void gguf_set_i64(gguf_writer *w, const char *key, int64_t v)
{
    set_scalar(w, key, GGUF_INT64, (uint64_t)v);
}

void gguf_set_f32(gguf_writer *w, const char *key, float v)
{
    uint32_t b;
    memcpy(&b, &v, 4);
    set_scalar(w, key, GGUF_FLOAT32, b);
}

void gguf_set_f64(gguf_writer *w, const char *key, double v)
{
    uint64_t b;
    memcpy(&b, &v, 8);
    set_scalar(w, key, GGUF_FLOAT64, b);
}

void gguf_set_bool(gguf_writer *w, const char *key, bool v)
{
    set_scalar(w, key, GGUF_BOOL, v ? 1 : 0);
}

void gguf_set_str(gguf_writer *w, const char *key, const char *v)
{
    if (!v) v = "";
    size_t n = strlen(v);
    uint8_t *p = malloc(8 + n);
    if (p) {
        wr64(p, n);
        memcpy(p + 8, v, n);
    }
    set_value(w, key, GGUF_STRING, p, 8 + n);
}

void gguf_set_arr(gguf_writer *w, const char *key, gguf_vtype et, const void *data, uint64_t n)
{
    if (!w) return;
    size_t es = vsize(et);
    if (!es) {
        wfail(w, "key '%s': gguf_set_arr needs a numeric or bool element type, not %d",
              key ? key : "(null)", (int)et);
        return;
    }
    if (n && !data) {
        wfail(w, "key '%s': array data is NULL", key ? key : "(null)");
        return;
    }
    if (n > (SIZE_MAX - 12) / es) {
        wfail(w, "key '%s': array too large", key ? key : "(null)");
        return;
    }
    size_t len = 12 + (size_t)n * es;
    uint8_t *p = malloc(len);
    if (p) {
        wr32(p, (uint32_t)et);
        wr64(p + 4, n);
        if (n) memcpy(p + 12, data, (size_t)n * es);
        if (et == GGUF_BOOL)
            for (uint64_t j = 0; j < n; j++)
                p[12 + j] = p[12 + j] != 0;
    }
    set_value(w, key, GGUF_ARRAY, p, len);
}

void gguf_set_arr_str(gguf_writer *w, const char *key, const char *const *v, uint64_t n)
{
    if (!w) return;
    if (n && !v) {
        wfail(w, "key '%s': array data is NULL", key ? key : "(null)");
        return;
    }
    size_t len = 12;
    for (uint64_t j = 0; j < n; j++) {
        size_t sl = v[j] ? strlen(v[j]) : 0;
        if (len > SIZE_MAX - 8 - sl) {
            wfail(w, "key '%s': array too large", key ? key : "(null)");
            return;
        }
        len += 8 + sl;
    }
    uint8_t *p = malloc(len);
    if (p) {
        wr32(p, GGUF_STRING);
        wr64(p + 4, n);
        size_t o = 12;
        for (uint64_t j = 0; j < n; j++) {
            size_t sl = v[j] ? strlen(v[j]) : 0;
            wr64(p + o, sl);
            if (sl) memcpy(p + o + 8, v[j], sl);
            o += 8 + sl;
        }
    }
    set_value(w, key, GGUF_ARRAY, p, len);
}

void gguf_set_from(gguf_writer *w, const gguf_file *f, int i)
{
    const rkv *kv = f ? kv_at(f, i) : NULL;
    if (!w) return;
    if (!kv) {
        wfail(w, "gguf_set_from: no key %d", i);
        return;
    }
    uint8_t *p = malloc(kv->raw_len ? kv->raw_len : 1);
    if (p) memcpy(p, kv->raw, kv->raw_len);
    set_value(w, kv->key, kv->type, p, kv->raw_len);
}

static int werr(char *err, size_t errlen, const char *name, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    msg(err, errlen, name, fmt, ap);
    va_end(ap);
    return GGUF_ERR;
}

int gguf_add_tensor(gguf_writer *w, const char *name, kt_type type, int n_dims, const int64_t *ne,
                    const void *data, char *err, size_t errlen)
{
    const char *who = "gguf_add_tensor";
    if (!w) return werr(err, errlen, who, "no writer");
    if (!name || !*name || strlen(name) > MAX_NAME)
        return werr(err, errlen, who, "tensor '%s': names must be 1 to %d bytes",
                    name ? name : "(null)", MAX_NAME);
    const kt_traits *tt = traits_of((uint32_t)type);
    if (!tt) return werr(err, errlen, who, "tensor '%s': unknown tensor type %d", name, (int)type);
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS || !ne)
        return werr(err, errlen, who, "tensor '%s': %d dimensions (must be 1 to %d)", name, n_dims,
                    GGUF_MAX_DIMS);
    for (int d = 0; d < n_dims; d++)
        if (ne[d] <= 0)
            return werr(err, errlen, who,
                        "tensor '%s': dimension %d is %" PRId64 " (must be positive)", name, d,
                        ne[d]);
    if (ne[0] % tt->block)
        return werr(err, errlen, who,
                    "tensor '%s': row length %" PRId64 " is not a multiple of %s's block of %d",
                    name, ne[0], tt->name, tt->block);
    uint64_t nbytes = tensor_bytes(tt, n_dims, ne);
    if (!nbytes || nbytes > SIZE_MAX)
        return werr(err, errlen, who, "tensor '%s': shape is too large", name);
    if (!data) return werr(err, errlen, who, "tensor '%s': data is NULL", name);
    for (int i = 0; i < w->n_t; i++)
        if (!strcmp(w->t[i].name, name))
            return werr(err, errlen, who, "duplicate tensor '%s'", name);
    if (w->n_t == w->cap_t) {
        int cap = w->cap_t ? 2 * w->cap_t : 16;
        wtensor *t = realloc(w->t, (size_t)cap * sizeof *t);
        if (!t) return werr(err, errlen, who, "out of memory");
        w->t = t;
        w->cap_t = cap;
    }
    wtensor *t = &w->t[w->n_t];
    *t = (wtensor){.name = strdup(name),
                   .type = type,
                   .n_dims = n_dims,
                   .data = data,
                   .nbytes = (size_t)nbytes};
    if (!t->name) return werr(err, errlen, who, "out of memory");
    for (int d = 0; d < GGUF_MAX_DIMS; d++)
        t->ne[d] = d < n_dims ? ne[d] : 1;
    w->n_t++;
    return GGUF_OK;
}

/* Buffered output that counts bytes and remembers the first error. */
typedef struct {
    FILE *fp;
    uint64_t pos;
    uint64_t data; /* where the data section starts, once the header is out */
    int err;       /* errno of the first failure */
} out;

static void put(out *o, const void *p, size_t n)
{
    if (o->err || !n) return;
    if (fwrite(p, 1, n, o->fp) != n) o->err = errno ? errno : EIO;
    o->pos += n;
}

static void put32(out *o, uint32_t v)
{
    uint8_t b[4];
    wr32(b, v);
    put(o, b, 4);
}

static void put64(out *o, uint64_t v)
{
    uint8_t b[8];
    wr64(b, v);
    put(o, b, 8);
}

static void pad(out *o, uint64_t align)
{
    static const uint8_t zeros[4096];
    uint64_t n = (align - o->pos % align) % align;
    while (n && !o->err) {
        size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
        put(o, zeros, k);
        n -= k;
    }
}

/* 0 if general.alignment is set to something other than a uint32 power of two. */
static uint64_t writer_alignment(const gguf_writer *w)
{
    for (int i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, "general.alignment")) continue;
        uint32_t a = w->kv[i].type == GGUF_UINT32 ? rd32(w->kv[i].val) : 0;
        return a && !(a & (a - 1)) ? a : 0;
    }
    return GGUF_DEFAULT_ALIGNMENT;
}

/* Each tensor's offset in the data section, every one aligned. */
static void assign_offsets(gguf_writer *w, uint64_t align)
{
    uint64_t off = 0;
    for (int i = 0; i < w->n_t; i++) {
        w->t[i].offset = off;
        off += (w->t[i].nbytes + align - 1) / align * align;
        assert(off % align == 0);
    }
}

/* Everything before the data section: header, keys, tensor infos, padding. */
static void put_header(out *o, const gguf_writer *w, uint64_t align)
{
    put(o, GGUF_MAGIC, 4);
    put32(o, GGUF_VERSION);
    put64(o, (uint64_t)w->n_t);
    put64(o, (uint64_t)w->n_kv);
    for (int i = 0; i < w->n_kv; i++) {
        const wkv *kv = &w->kv[i];
        size_t kl = strlen(kv->key);
        put64(o, kl);
        put(o, kv->key, kl);
        put32(o, (uint32_t)kv->type);
        put(o, kv->val, kv->len);
    }
    for (int i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        size_t nl = strlen(t->name);
        put64(o, nl);
        put(o, t->name, nl);
        put32(o, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++)
            put64(o, (uint64_t)t->ne[d]);
        put32(o, (uint32_t)t->type);
        put64(o, t->offset);
    }
    pad(o, align);
    o->data = o->pos;
}

static void put_data(out *o, const gguf_writer *w, uint64_t align)
{
    for (int i = 0; i < w->n_t; i++) {
        /* Each tensor lands at the offset its info announced. */
        assert(o->err || (o->data % align == 0 && o->pos == o->data + w->t[i].offset));
        put(o, w->t[i].data, w->t[i].nbytes);
        pad(o, align);
    }
}

/* path + ".tmp", or NULL when out of memory. */
static char *tmp_path(const char *path)
{
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 5);
    if (!tmp) return NULL;
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    return tmp;
}

/* Flush, sync and close o, then move tmp over path; on any failure tmp is
 * removed and path is left as it was. */
static int commit_file(out *o, const char *tmp, const char *path, char *err, size_t errlen)
{
    errno = 0;
    if (!o->err && fflush(o->fp)) o->err = errno ? errno : EIO;
    if (!o->err && fsync(fileno(o->fp))) o->err = errno;
    if (fclose(o->fp) && !o->err) o->err = errno ? errno : EIO;
    if (!o->err && rename(tmp, path)) {
        int e = errno;
        werr(err, errlen, path, "cannot rename %s: %s", tmp, strerror(e));
        unlink(tmp);
        return GGUF_ERR;
    }
    if (o->err) {
        werr(err, errlen, path, "write failed: %s", strerror(o->err));
        unlink(tmp);
        return GGUF_ERR;
    }
    return GGUF_OK;
}

int gguf_write(gguf_writer *w, const char *path, char *err, size_t errlen)
{
    if (!path) path = "(null)";
    if (!w) return werr(err, errlen, path, "no writer");
    if (w->failed) return werr(err, errlen, path, "%s", w->err);
    uint64_t align = writer_alignment(w);
    if (!align)
        return werr(err, errlen, path, "key 'general.alignment': must be a uint32 power of two");
    assign_offsets(w, align);

    char *tmp = tmp_path(path);
    if (!tmp) return werr(err, errlen, path, "out of memory");
    errno = 0;
    out o = {.fp = fopen(tmp, "wb")};
    if (!o.fp) {
        int e = errno;
        werr(err, errlen, path, "cannot create %s: %s", tmp, strerror(e));
        free(tmp);
        return GGUF_ERR;
    }
    put_header(&o, w, align);
    put_data(&o, w, align);
    int rc = commit_file(&o, tmp, path, err, errlen);
    free(tmp);
    return rc;
}
