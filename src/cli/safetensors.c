/* Safetensors reader: see safetensors.h. */
#include "cli/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli_util.h"
#include "kernels/blocks.h"

/* A header larger than this is not a model header but a broken file. */
#define ST_MAX_HEADER (256u << 20)

typedef struct {
    char *path;
    void *map;
    size_t size;
} st_shard;

struct st_set {
    st_shard *shards;
    int n_shards;
    st_tensor *t;
    int n, cap;
};

static int dtype_size(st_dtype d)
{
    return d == ST_F32 ? 4 : d == ST_OTHER ? 0 : 2;
}

/* Byte size of the dtypes we do not convert, so ranges can still be checked. */
static int other_size(const char *name)
{
    static const struct {
        const char *n;
        int sz;
    } tab[] = {
        {"F64", 8}, {"I64", 8}, {"U64", 8}, {"I32", 4},  {"U32", 4},     {"I16", 2},
        {"U16", 2}, {"I8", 1},  {"U8", 1},  {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (!strcmp(tab[i].n, name)) return tab[i].sz;
    return -1;
}

static int add_shard(st_set *s, const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        cli_seterr(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        cli_seterr(err, errlen, "%s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    size_t size = (size_t)sb.st_size;
    void *map = NULL;
    if (size > 0) {
        map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            cli_seterr(err, errlen, "%s: mmap: %s", path, strerror(errno));
            close(fd);
            return -1;
        }
    }
    close(fd);
    st_shard *ns = realloc(s->shards, (size_t)(s->n_shards + 1) * sizeof *ns);
    if (!ns) {
        if (map) munmap(map, size);
        cli_seterr(err, errlen, "%s: out of memory", path);
        return -1;
    }
    s->shards = ns;
    st_shard *sh = &s->shards[s->n_shards++];
    sh->path = strdup(path);
    sh->map = map;
    sh->size = size;
    if (!sh->path) {
        cli_seterr(err, errlen, "%s: out of memory", path);
        return -1;
    }
    return 0;
}

static int parse_dtype(const char *s, st_dtype *d)
{
    if (!strcmp(s, "F32"))
        *d = ST_F32;
    else if (!strcmp(s, "F16"))
        *d = ST_F16;
    else if (!strcmp(s, "BF16"))
        *d = ST_BF16;
    else if (other_size(s) > 0)
        *d = ST_OTHER;
    else
        return -1;
    return 0;
}

/* The JSON header of shard sh, and where its data starts and how long it
 * is; root is NULL with err set if the header is broken. */
static cJSON *read_header(const st_shard *sh, const uint8_t **data, uint64_t *data_len, char *err,
                          size_t errlen)
{
    const char *p = sh->path;
    if (sh->size < 8) {
        cli_seterr(err, errlen, "%s: too short for a safetensors file (%zu bytes)", p, sh->size);
        return NULL;
    }
    const uint8_t *b = sh->map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | b[i];
    if (hlen > ST_MAX_HEADER || hlen > sh->size - 8) {
        cli_seterr(err, errlen, "%s: bad header length %llu (file is %zu bytes)", p,
                   (unsigned long long)hlen, sh->size);
        return NULL;
    }
    cJSON *root = cJSON_ParseWithLength((const char *)b + 8, (size_t)hlen);
    if (!root || !cJSON_IsObject(root)) {
        cli_seterr(err, errlen, "%s: header is not a JSON object", p);
        cJSON_Delete(root);
        return NULL;
    }
    *data = b + 8 + hlen;
    *data_len = sh->size - 8 - hlen;
    return root;
}

/* Sets t's dimensions and element count from a JSON shape array. */
static int parse_shape(const char *p, const char *name, const cJSON *shape, st_tensor *t, char *err,
                       size_t errlen)
{
    int nd = cJSON_GetArraySize(shape);
    if (nd > ST_MAX_DIMS) {
        cli_seterr(err, errlen, "%s: tensor '%s': %d dimensions (at most %d)", p, name, nd,
                   ST_MAX_DIMS);
        return -1;
    }
    t->n_dims = nd;
    t->numel = 1;
    for (int d = 0; d < nd; d++) {
        cJSON *v = cJSON_GetArrayItem(shape, d);
        if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 1e12) {
            cli_seterr(err, errlen, "%s: tensor '%s': bad shape", p, name);
            return -1;
        }
        t->shape[d] = (int64_t)v->valuedouble;
        t->numel *= t->shape[d];
        if (t->numel > (int64_t)1 << 40) {
            cli_seterr(err, errlen, "%s: tensor '%s': shape too large", p, name);
            return -1;
        }
    }
    return 0;
}

/* Points t at its bytes [beg, end) of the data, checked against the data's
 * length and t's element count. */
static int parse_offsets(const char *p, const char *name, const cJSON *offs, const char *dtype,
                         const uint8_t *data, uint64_t data_len, st_tensor *t, char *err,
                         size_t errlen)
{
    cJSON *o0 = cJSON_GetArrayItem(offs, 0), *o1 = cJSON_GetArrayItem(offs, 1);
    if (!cJSON_IsNumber(o0) || !cJSON_IsNumber(o1) || o0->valuedouble < 0 ||
        o1->valuedouble < o0->valuedouble) {
        cli_seterr(err, errlen, "%s: tensor '%s': bad data_offsets", p, name);
        return -1;
    }
    uint64_t beg = (uint64_t)o0->valuedouble, end = (uint64_t)o1->valuedouble;
    if (end > data_len) {
        cli_seterr(err, errlen,
                   "%s: tensor '%s': data_offsets [%llu, %llu) past the end of the data (%llu "
                   "bytes)",
                   p, name, (unsigned long long)beg, (unsigned long long)end,
                   (unsigned long long)data_len);
        return -1;
    }
    int esz = t->dtype == ST_OTHER ? other_size(dtype) : dtype_size(t->dtype);
    if (end - beg != (uint64_t)t->numel * (uint64_t)esz) {
        cli_seterr(err, errlen, "%s: tensor '%s': %llu bytes for %lld elements of %s", p, name,
                   (unsigned long long)(end - beg), (long long)t->numel, dtype);
        return -1;
    }
    t->data = data + beg;
    t->nbytes = (size_t)(end - beg);
    return 0;
}

/* One header entry (it) of the shard at path p as a tensor whose name and
 * dtype_name still point into the JSON (append_tensor copies them). */
static int parse_entry(const char *p, const cJSON *it, const uint8_t *data, uint64_t data_len,
                       st_tensor *t, char *err, size_t errlen)
{
    const char *name = it->string;
    cJSON *dt = cJSON_GetObjectItemCaseSensitive(it, "dtype");
    cJSON *shape = cJSON_GetObjectItemCaseSensitive(it, "shape");
    cJSON *offs = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
    if (!cJSON_IsString(dt) || !cJSON_IsArray(shape) || !cJSON_IsArray(offs) ||
        cJSON_GetArraySize(offs) != 2) {
        cli_seterr(err, errlen, "%s: tensor '%s': header entry needs dtype, shape, data_offsets", p,
                   name);
        return -1;
    }
    *t = (st_tensor){.file = p, .name = name, .dtype_name = dt->valuestring};
    if (parse_dtype(dt->valuestring, &t->dtype) != 0) {
        cli_seterr(err, errlen, "%s: tensor '%s': unknown dtype '%s'", p, name, dt->valuestring);
        return -1;
    }
    if (parse_shape(p, name, shape, t, err, errlen) != 0) return -1;
    return parse_offsets(p, name, offs, dt->valuestring, data, data_len, t, err, errlen);
}

/* Appends t with its own copies of name and dtype_name; st_close frees
 * them. */
static int append_tensor(st_set *s, st_tensor t, char *err, size_t errlen)
{
    if (s->n == s->cap) {
        int nc = s->cap ? 2 * s->cap : 256;
        st_tensor *nt = realloc(s->t, (size_t)nc * sizeof *nt);
        if (!nt) {
            cli_seterr(err, errlen, "%s: out of memory", t.file);
            return -1;
        }
        s->t = nt;
        s->cap = nc;
    }
    t.name = strdup(t.name);
    t.dtype_name = strdup(t.dtype_name);
    s->t[s->n++] = t;
    if (!t.name || !t.dtype_name) {
        cli_seterr(err, errlen, "%s: out of memory", t.file);
        return -1;
    }
    return 0;
}

/* Parses the header of the last added shard and appends its tensors. */
static int load_shard(st_set *s, char *err, size_t errlen)
{
    const st_shard *sh = &s->shards[s->n_shards - 1];
    const uint8_t *data;
    uint64_t data_len;
    cJSON *root = read_header(sh, &data, &data_len, err, errlen);
    if (!root) return -1;
    int rc = 0;
    for (cJSON *it = root->child; it && rc == 0; it = it->next) {
        if (!strcmp(it->string, "__metadata__")) continue;
        st_tensor t;
        rc = parse_entry(sh->path, it, data, data_len, &t, err, errlen);
        if (rc == 0) rc = append_tensor(s, t, err, errlen);
    }
    cJSON_Delete(root);
    return rc;
}

static int cmp_tensor(const void *a, const void *b)
{
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

static int finish(st_set *s, char *err, size_t errlen)
{
    qsort(s->t, (size_t)s->n, sizeof *s->t, cmp_tensor);
    for (int i = 1; i < s->n; i++)
        if (!strcmp(s->t[i].name, s->t[i - 1].name)) {
            cli_seterr(err, errlen, "%s: tensor '%s' appears twice (also in %s)", s->t[i].file,
                       s->t[i].name, s->t[i - 1].file);
            return -1;
        }
    return 0;
}

int st_open_file(const char *path, st_set **out, char *err, size_t errlen)
{
    *out = NULL;
    st_set *s = calloc(1, sizeof *s);
    if (!s) {
        cli_seterr(err, errlen, "%s: out of memory", path);
        return -1;
    }
    if (add_shard(s, path, err, errlen) != 0 || load_shard(s, err, errlen) != 0 ||
        finish(s, err, errlen) != 0) {
        st_close(s);
        return -1;
    }
    *out = s;
    return 0;
}

int st_open_dir(const char *dir, st_set **out, char *err, size_t errlen)
{
    *out = NULL;
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (access(path, F_OK) == 0) return st_open_file(path, out, err, errlen);

    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (access(path, F_OK) != 0) {
        cli_seterr(err, errlen,
                   "%s: neither model.safetensors nor model.safetensors.index.json found", dir);
        return -1;
    }
    char *text = cli_read_file(path, NULL);
    if (!text) {
        cli_seterr(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    cJSON *root = cJSON_Parse(text);
    free(text);
    cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(map)) {
        cli_seterr(err, errlen, "%s: no \"weight_map\" object", path);
        cJSON_Delete(root);
        return -1;
    }
    st_set *s = calloc(1, sizeof *s);
    if (!s) {
        cJSON_Delete(root);
        cli_seterr(err, errlen, "%s: out of memory", path);
        return -1;
    }
    int rc = 0;
    for (cJSON *it = map->child; it && rc == 0; it = it->next) {
        if (!cJSON_IsString(it) || strchr(it->valuestring, '/')) {
            cli_seterr(err, errlen, "%s: bad shard name for '%s'", path, it->string);
            rc = -1;
            break;
        }
        char sp[4096];
        snprintf(sp, sizeof sp, "%s/%s", dir, it->valuestring);
        bool seen = false;
        for (int i = 0; i < s->n_shards && !seen; i++)
            seen = !strcmp(s->shards[i].path, sp);
        if (!seen) rc = add_shard(s, sp, err, errlen) == 0 ? load_shard(s, err, errlen) : -1;
    }
    /* Every tensor the index names must be in the shard it names. */
    if (rc == 0) rc = finish(s, err, errlen);
    for (cJSON *it = map->child; it && rc == 0; it = it->next)
        if (!st_find(s, it->string)) {
            cli_seterr(err, errlen, "%s: tensor '%s' listed in the index is missing from %s", path,
                       it->string, it->valuestring);
            rc = -1;
        }
    cJSON_Delete(root);
    if (rc != 0) {
        st_close(s);
        return -1;
    }
    *out = s;
    return 0;
}

void st_close(st_set *s)
{
    if (!s) return;
    for (int i = 0; i < s->n; i++) {
        free((char *)s->t[i].name);
        free((char *)s->t[i].dtype_name);
    }
    free(s->t);
    for (int i = 0; i < s->n_shards; i++) {
        if (s->shards[i].map) munmap(s->shards[i].map, s->shards[i].size);
        free(s->shards[i].path);
    }
    free(s->shards);
    free(s);
}

int st_count(const st_set *s)
{
    return s->n;
}

const st_tensor *st_at(const st_set *s, int i)
{
    return i >= 0 && i < s->n ? &s->t[i] : NULL;
}

const st_tensor *st_find(const st_set *s, const char *name)
{
    st_tensor key = {.name = name};
    return bsearch(&key, s->t, (size_t)s->n, sizeof *s->t, cmp_tensor);
}

int st_to_f32(const st_tensor *t, float *dst, char *err, size_t errlen)
{
    const uint8_t *p = t->data;
    switch (t->dtype) {
    case ST_F32: memcpy(dst, p, (size_t)t->numel * 4); return 0;
    case ST_F16:
    case ST_BF16:
        for (int64_t i = 0; i < t->numel; i++) {
            uint16_t h = (uint16_t)(p[2 * i] | p[2 * i + 1] << 8);
            dst[i] = t->dtype == ST_F16 ? kt_f16_to_f32(h) : kt_bf16_to_f32(h);
        }
        return 0;
    default:
        cli_seterr(err, errlen, "%s: tensor '%s': dtype %s is not supported (F32, F16, BF16 are)",
                   t->file, t->name, t->dtype_name);
        return -1;
    }
}
