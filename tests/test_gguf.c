/* GGUF reader/writer: round trips of every value and tensor type, layout,
 * getters, and every malformed file the reader must refuse. Bad files are
 * made by writing a good one and corrupting bytes. */
#include <check.h>
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/gguf.h"
#include "testutil.h"

static char tmpdir[] = "/tmp/tern-test-gguf-XXXXXX";
static char err[512];

#define ck_assert_contains(s, sub)                                                                 \
    ck_assert_msg(strstr((s), (sub)) != NULL, "'%s' does not contain '%s'", (s), (sub))

static char *tmp_path(const char *name)
{
    static char buf[4][256];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, sizeof buf[0], "%s/%s", tmpdir, name);
    return p;
}

static uint8_t *slurp(const char *path, size_t *len)
{
    return (uint8_t *)tu_slurp(path, len);
}

static void spit(const char *path, const void *b, size_t len)
{
    FILE *fp = fopen(path, "wb");
    ck_assert_ptr_nonnull(fp);
    ck_assert_uint_eq(fwrite(b, 1, len, fp), len);
    ck_assert_int_eq(fclose(fp), 0);
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

static uint64_t rd64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* Offset just past the first occurrence of s (a key or tensor name) in b. */
static size_t after(const uint8_t *b, size_t len, const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 8; i + n <= len; i++)
        if (!memcmp(b + i, s, n) && rd64(b + i - 8) == n) return i + n;
    ck_abort_msg("'%s' not found", s);
    return 0;
}

/* ---- the sample files ---- */

static const uint8_t u8s[] = {0, 1, 255};
static const int8_t i8s[] = {-128, 0, 127};
static const uint16_t u16s[] = {0, 65535};
static const int16_t i16s[] = {-32768, 5};
static const uint32_t u32s[] = {1, 4000000000u};
static const int32_t i32s[] = {-7, 2147483647};
static const uint64_t u64s[] = {UINT64_MAX, 0, 42};
static const int64_t i64s[] = {INT64_MIN, -1};
static const float f32s[] = {1.5f, -0.25f};
static const double f64s[] = {3.141592653589793, -1e300};
static const uint8_t bools[] = {1, 0, 1};
static const char *const strs[] = {"<|endoftext|>", "", "h\xc3\xa9llo"};

typedef struct {
    const char *name;
    kt_type type;
    int n_dims;
    int64_t ne[4];
    size_t nbytes;
} tspec;

static const tspec tensors[] = {
    {"t.f32", KT_F32, 2, {3, 2}, 24},           {"t.f16", KT_F16, 1, {5}, 10},
    {"t.q8_0", KT_Q8_0, 2, {64, 3}, 204},       {"t.bf16", KT_BF16, 3, {7, 1, 2}, 28},
    {"t.tq1_0", KT_TQ1_0, 2, {256, 2}, 108},    {"t.tq2_0", KT_TQ2_0, 1, {512}, 132},
    {"t.q1_0", KT_Q1_0, 4, {128, 1, 1, 2}, 36}, {"t.q2_0", KT_Q2_0, 2, {64, 3}, 54},
};
#define N_TENSORS (int)(sizeof tensors / sizeof tensors[0])

static uint8_t tdata[N_TENSORS][256];

static gguf_writer *sample_writer(void)
{
    gguf_writer *w = gguf_writer_create();
    ck_assert_ptr_nonnull(w);
    gguf_set_u8(w, "v.u8", 200);
    gguf_set_i8(w, "v.i8", -100);
    gguf_set_u16(w, "v.u16", 60000);
    gguf_set_i16(w, "v.i16", -30000);
    gguf_set_u32(w, "v.u32", 4000000000u);
    gguf_set_i32(w, "v.i32", -2000000000);
    gguf_set_f32(w, "v.f32", 0.5f);
    gguf_set_bool(w, "v.bool", true);
    gguf_set_str(w, "v.string", "SmolVLM");
    gguf_set_u64(w, "v.u64", UINT64_MAX);
    gguf_set_i64(w, "v.i64", INT64_MIN);
    gguf_set_f64(w, "v.f64", -2.5e-300);
    gguf_set_str(w, "v.empty_string", "");
    gguf_set_arr(w, "a.u8", GGUF_UINT8, u8s, 3);
    gguf_set_arr(w, "a.i8", GGUF_INT8, i8s, 3);
    gguf_set_arr(w, "a.u16", GGUF_UINT16, u16s, 2);
    gguf_set_arr(w, "a.i16", GGUF_INT16, i16s, 2);
    gguf_set_arr(w, "a.u32", GGUF_UINT32, u32s, 2);
    gguf_set_arr(w, "a.i32", GGUF_INT32, i32s, 2);
    gguf_set_arr(w, "a.u64", GGUF_UINT64, u64s, 3);
    gguf_set_arr(w, "a.i64", GGUF_INT64, i64s, 2);
    gguf_set_arr(w, "a.f32", GGUF_FLOAT32, f32s, 2);
    gguf_set_arr(w, "a.f64", GGUF_FLOAT64, f64s, 2);
    gguf_set_arr(w, "a.bool", GGUF_BOOL, bools, 3);
    gguf_set_arr_str(w, "a.string", strs, 3);
    gguf_set_arr(w, "a.empty", GGUF_INT32, NULL, 0);
    gguf_set_arr_str(w, "a.empty_strings", NULL, 0);
    for (int i = 0; i < N_TENSORS; i++) {
        for (int j = 0; j < 256; j++)
            tdata[i][j] = (uint8_t)(i * 31 + j * 7 + 1);
        const tspec *t = &tensors[i];
        ck_assert_int_eq(
            gguf_add_tensor(w, t->name, t->type, t->n_dims, t->ne, tdata[i], err, sizeof err),
            GGUF_OK);
    }
    return w;
}

static const char *write_sample(const char *name)
{
    const char *path = tmp_path(name);
    gguf_writer *w = sample_writer();
    int rc = gguf_write(w, path, err, sizeof err);
    ck_assert_msg(rc == GGUF_OK, "%s", err);
    gguf_writer_destroy(w);
    return path;
}

static int key(const gguf_file *f, const char *k)
{
    int i = gguf_find_key(f, k);
    ck_assert_msg(i >= 0, "key %s missing", k);
    return i;
}

#define CHECK_SCALAR(f, k, vt, ctype, want)                                                        \
    do {                                                                                           \
        int i_ = key(f, k);                                                                        \
        ck_assert_int_eq(gguf_kv_type(f, i_), vt);                                                 \
        ctype v_;                                                                                  \
        memcpy(&v_, gguf_kv_data(f, i_), sizeof v_);                                               \
        ck_assert(v_ == (want));                                                                   \
    } while (0)

#define CHECK_ARR(f, k, vt, src, n)                                                                \
    do {                                                                                           \
        int i_ = key(f, k);                                                                        \
        ck_assert_int_eq(gguf_kv_type(f, i_), GGUF_ARRAY);                                         \
        ck_assert_int_eq(gguf_arr_type(f, i_), vt);                                                \
        ck_assert_uint_eq(gguf_arr_len(f, i_), n);                                                 \
        ck_assert_mem_eq(gguf_arr_data(f, i_), src, sizeof src);                                   \
    } while (0)

static void check_sample(const gguf_file *f)
{
    ck_assert_uint_eq(gguf_version(f), 3);
    ck_assert_uint_eq(gguf_alignment(f), 32);
    ck_assert_int_eq(gguf_n_kv(f), 27);
    CHECK_SCALAR(f, "v.u8", GGUF_UINT8, uint8_t, 200);
    CHECK_SCALAR(f, "v.i8", GGUF_INT8, int8_t, -100);
    CHECK_SCALAR(f, "v.u16", GGUF_UINT16, uint16_t, 60000);
    CHECK_SCALAR(f, "v.i16", GGUF_INT16, int16_t, -30000);
    CHECK_SCALAR(f, "v.u32", GGUF_UINT32, uint32_t, 4000000000u);
    CHECK_SCALAR(f, "v.i32", GGUF_INT32, int32_t, -2000000000);
    CHECK_SCALAR(f, "v.f32", GGUF_FLOAT32, float, 0.5f);
    CHECK_SCALAR(f, "v.bool", GGUF_BOOL, uint8_t, 1);
    CHECK_SCALAR(f, "v.u64", GGUF_UINT64, uint64_t, UINT64_MAX);
    CHECK_SCALAR(f, "v.i64", GGUF_INT64, int64_t, INT64_MIN);
    CHECK_SCALAR(f, "v.f64", GGUF_FLOAT64, double, -2.5e-300);
    size_t len = 99;
    int i = key(f, "v.string");
    ck_assert_int_eq(gguf_kv_type(f, i), GGUF_STRING);
    ck_assert_str_eq(gguf_kv_str(f, i, &len), "SmolVLM");
    ck_assert_uint_eq(len, 7);
    ck_assert_str_eq(gguf_get_str(f, "v.empty_string"), "");
    ck_assert_str_eq(gguf_kv_str(f, key(f, "v.empty_string"), &len), "");
    ck_assert_uint_eq(len, 0);

    CHECK_ARR(f, "a.u8", GGUF_UINT8, u8s, 3);
    CHECK_ARR(f, "a.i8", GGUF_INT8, i8s, 3);
    CHECK_ARR(f, "a.u16", GGUF_UINT16, u16s, 2);
    CHECK_ARR(f, "a.i16", GGUF_INT16, i16s, 2);
    CHECK_ARR(f, "a.u32", GGUF_UINT32, u32s, 2);
    CHECK_ARR(f, "a.i32", GGUF_INT32, i32s, 2);
    CHECK_ARR(f, "a.u64", GGUF_UINT64, u64s, 3);
    CHECK_ARR(f, "a.i64", GGUF_INT64, i64s, 2);
    CHECK_ARR(f, "a.f32", GGUF_FLOAT32, f32s, 2);
    CHECK_ARR(f, "a.f64", GGUF_FLOAT64, f64s, 2);
    CHECK_ARR(f, "a.bool", GGUF_BOOL, bools, 3);
    i = key(f, "a.string");
    ck_assert_int_eq(gguf_arr_type(f, i), GGUF_STRING);
    ck_assert_uint_eq(gguf_arr_len(f, i), 3);
    ck_assert_ptr_null(gguf_arr_data(f, i));
    for (uint64_t j = 0; j < 3; j++) {
        ck_assert_str_eq(gguf_arr_str(f, i, j, &len), strs[j]);
        ck_assert_uint_eq(len, strlen(strs[j]));
    }
    ck_assert_ptr_null(gguf_arr_str(f, i, 3, &len));
    i = key(f, "a.empty");
    ck_assert_int_eq(gguf_arr_type(f, i), GGUF_INT32);
    ck_assert_uint_eq(gguf_arr_len(f, i), 0);
    i = key(f, "a.empty_strings");
    ck_assert_int_eq(gguf_arr_type(f, i), GGUF_STRING);
    ck_assert_uint_eq(gguf_arr_len(f, i), 0);
    ck_assert_ptr_null(gguf_arr_str(f, i, 0, &len));

    ck_assert_int_eq(gguf_n_tensors(f), N_TENSORS);
    for (int t = 0; t < N_TENSORS; t++) {
        const gguf_tensor *g = gguf_tensor_at(f, t);
        const tspec *s = &tensors[t];
        ck_assert_str_eq(g->name, s->name);
        ck_assert_ptr_eq(gguf_find_tensor(f, s->name), g);
        ck_assert_int_eq(g->type, s->type);
        ck_assert_int_eq(g->n_dims, s->n_dims);
        for (int d = 0; d < 4; d++)
            ck_assert_int_eq(g->ne[d], d < s->n_dims ? s->ne[d] : 1);
        ck_assert_uint_eq(g->nbytes, s->nbytes);
        ck_assert_uint_eq(gguf_tensor_bytes(s->type, s->n_dims, s->ne), s->nbytes);
        ck_assert_uint_eq(g->offset % 32, 0);
        ck_assert_mem_eq(g->data, tdata[t], s->nbytes);
    }
    ck_assert_ptr_null(gguf_tensor_at(f, N_TENSORS));
    ck_assert_ptr_null(gguf_tensor_at(f, -1));
    ck_assert_ptr_null(gguf_find_tensor(f, "nope"));
    ck_assert_int_eq(gguf_find_key(f, "nope"), -1);
}

START_TEST(round_trip_file)
{
    const char *path = write_sample("rt.gguf");
    gguf_file *f;
    int rc = gguf_open(path, &f, err, sizeof err);
    ck_assert_msg(rc == GGUF_OK, "%s", err);
    ck_assert_str_eq(gguf_path(f), path);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_uint_eq(gguf_file_size(f), (size_t)st.st_size);
    check_sample(f);
    /* The mapping is page-aligned, so aligned offsets give aligned pointers. */
    for (int t = 0; t < gguf_n_tensors(f); t++)
        ck_assert_uint_eq((uintptr_t)gguf_tensor_at(f, t)->data % 32, 0);
    gguf_close(f);
    ck_assert_int_eq(access(tmp_path("rt.gguf.tmp"), F_OK), -1);
}
END_TEST

START_TEST(round_trip_memory)
{
    size_t len;
    uint8_t *b = slurp(write_sample("rtm.gguf"), &len);
    gguf_file *f;
    int rc = gguf_open_memory(b, len, "mem", &f, err, sizeof err);
    ck_assert_msg(rc == GGUF_OK, "%s", err);
    ck_assert_str_eq(gguf_path(f), "mem");
    check_sample(f);
    gguf_close(f);
    free(b);
}
END_TEST

/* The layout on disk: header, kvs, infos, padding, data; each tensor aligned. */
START_TEST(layout_alignment)
{
    size_t len;
    for (uint32_t align = 32; align <= 256; align *= 2) {
        gguf_writer *w = sample_writer();
        gguf_set_u32(w, "general.alignment", align);
        const char *path = tmp_path("al.gguf");
        ck_assert_int_eq(gguf_write(w, path, err, sizeof err), GGUF_OK);
        gguf_writer_destroy(w);
        uint8_t *b = slurp(path, &len);
        ck_assert_mem_eq(b, "GGUF\3\0\0\0", 8);
        ck_assert_uint_eq(rd64(b + 8), N_TENSORS);
        ck_assert_uint_eq(rd64(b + 16), 28);
        gguf_file *f;
        ck_assert_int_eq(gguf_open_memory(b, len, "al", &f, err, sizeof err), GGUF_OK);
        ck_assert_uint_eq(gguf_alignment(f), align);
        size_t prev_end = 0;
        for (int t = 0; t < gguf_n_tensors(f); t++) {
            const gguf_tensor *g = gguf_tensor_at(f, t);
            size_t pos = (size_t)((const uint8_t *)g->data - b);
            ck_assert_uint_eq(pos % align, 0);
            ck_assert_uint_eq(g->offset % align, 0);
            ck_assert_uint_ge(pos, prev_end);
            ck_assert_uint_lt(pos - prev_end, prev_end ? align : pos + 1);
            prev_end = pos + g->nbytes;
        }
        ck_assert_uint_eq(len % align, 0); /* the last tensor is padded too */
        gguf_close(f);
        free(b);
    }
}
END_TEST

START_TEST(no_tensors)
{
    gguf_writer *w = gguf_writer_create();
    gguf_set_str(w, "general.architecture", "llama");
    const char *path = tmp_path("empty.gguf");
    ck_assert_int_eq(gguf_write(w, path, err, sizeof err), GGUF_OK);
    gguf_writer_destroy(w);
    gguf_file *f;
    ck_assert_int_eq(gguf_open(path, &f, err, sizeof err), GGUF_OK);
    ck_assert_int_eq(gguf_n_tensors(f), 0);
    ck_assert_str_eq(gguf_get_str(f, "general.architecture"), "llama");
    gguf_close(f);

    w = gguf_writer_create();
    ck_assert_int_eq(gguf_write(w, path, err, sizeof err), GGUF_OK);
    gguf_writer_destroy(w);
    ck_assert_int_eq(gguf_open(path, &f, err, sizeof err), GGUF_OK);
    ck_assert_int_eq(gguf_n_kv(f), 0);
    ck_assert_uint_eq(gguf_file_size(f), 32); /* header padded to the alignment */
    gguf_close(f);
}
END_TEST

/* Buffers from gguf_writer_alloc live until gguf_writer_destroy (ASan sees a leak or a
 * use after free otherwise), and what they hold is what the file holds. */
START_TEST(writer_owned_data)
{
    gguf_writer *w = gguf_writer_create();
    int64_t ne[1] = {300};
    for (int k = 0; k < 100; k++) { /* past the first growth of the list */
        float *d = gguf_writer_alloc(w, sizeof(float) * 300);
        ck_assert_ptr_nonnull(d);
        for (int i = 0; i < 300; i++)
            d[i] = (float)(k * 1000 + i);
        char name[16];
        snprintf(name, sizeof name, "t%d", k);
        ck_assert_int_eq(gguf_add_tensor(w, name, KT_F32, 1, ne, d, err, sizeof err), GGUF_OK);
    }
    ck_assert_ptr_nonnull(gguf_writer_alloc(w, 0));
    const char *path = tmp_path("owned.gguf");
    ck_assert_int_eq(gguf_write(w, path, err, sizeof err), GGUF_OK);
    gguf_writer_destroy(w);
    gguf_file *f;
    ck_assert_int_eq(gguf_open(path, &f, err, sizeof err), GGUF_OK);
    ck_assert_int_eq(gguf_n_tensors(f), 100);
    const float *last = gguf_tensor_at(f, 99)->data;
    ck_assert_float_eq(last[299], 99299.0f);
    gguf_close(f);
}
END_TEST

START_TEST(getters_convert)
{
    size_t len;
    uint8_t *b = slurp(write_sample("get.gguf"), &len);
    gguf_file *f;
    ck_assert_int_eq(gguf_open_memory(b, len, "get", &f, err, sizeof err), GGUF_OK);
    uint64_t u = 7;
    int64_t s = 7;
    double d = 7;
    bool v = false;
    ck_assert(gguf_get_u64(f, "v.u8", &u) && u == 200);
    ck_assert(gguf_get_u64(f, "v.u16", &u) && u == 60000);
    ck_assert(gguf_get_u64(f, "v.u32", &u) && u == 4000000000u);
    ck_assert(gguf_get_u64(f, "v.u64", &u) && u == UINT64_MAX);
    u = 7;
    ck_assert(!gguf_get_u64(f, "v.i8", &u)); /* negative */
    ck_assert(!gguf_get_u64(f, "v.i64", &u));
    ck_assert(!gguf_get_u64(f, "v.f32", &u));
    ck_assert(!gguf_get_u64(f, "v.bool", &u));
    ck_assert(!gguf_get_u64(f, "v.string", &u));
    ck_assert(!gguf_get_u64(f, "a.u32", &u));
    ck_assert(!gguf_get_u64(f, "missing", &u));
    ck_assert_uint_eq(u, 7); /* untouched on failure */

    ck_assert(gguf_get_i64(f, "v.i8", &s) && s == -100);
    ck_assert(gguf_get_i64(f, "v.i16", &s) && s == -30000);
    ck_assert(gguf_get_i64(f, "v.i32", &s) && s == -2000000000);
    ck_assert(gguf_get_i64(f, "v.i64", &s) && s == INT64_MIN);
    ck_assert(gguf_get_i64(f, "v.u32", &s) && s == 4000000000);
    s = 7;
    ck_assert(!gguf_get_i64(f, "v.u64", &s)); /* does not fit */
    ck_assert(!gguf_get_i64(f, "v.f64", &s));
    ck_assert(!gguf_get_i64(f, "missing", &s));
    ck_assert_int_eq(s, 7);

    ck_assert(gguf_get_f64(f, "v.f32", &d) && d == 0.5);
    ck_assert(gguf_get_f64(f, "v.f64", &d) && d == -2.5e-300);
    ck_assert(gguf_get_f64(f, "v.i32", &d) && d == -2000000000.0);
    ck_assert(gguf_get_f64(f, "v.u64", &d) && d == (double)UINT64_MAX);
    ck_assert(gguf_get_f64(f, "v.u8", &d) && d == 200.0);
    d = 7;
    ck_assert(!gguf_get_f64(f, "v.bool", &d));
    ck_assert(!gguf_get_f64(f, "v.string", &d));
    ck_assert(!gguf_get_f64(f, "missing", &d));
    ck_assert(d == 7);

    ck_assert(gguf_get_bool(f, "v.bool", &v) && v);
    ck_assert(!gguf_get_bool(f, "v.u8", &v));
    ck_assert(!gguf_get_bool(f, "missing", &v));

    ck_assert_str_eq(gguf_get_str(f, "v.string"), "SmolVLM");
    ck_assert_ptr_null(gguf_get_str(f, "v.u8"));
    ck_assert_ptr_null(gguf_get_str(f, "a.string"));
    ck_assert_ptr_null(gguf_get_str(f, "missing"));

    ck_assert_ptr_null(gguf_key(f, -1));
    ck_assert_ptr_null(gguf_key(f, gguf_n_kv(f)));
    ck_assert_ptr_null(gguf_kv_data(f, 1000));
    ck_assert_ptr_null(gguf_kv_str(f, key(f, "v.u8"), &len));
    ck_assert_uint_eq(gguf_arr_len(f, key(f, "v.u8")), 0);
    ck_assert_ptr_null(gguf_arr_data(f, key(f, "v.u8")));
    gguf_close(f);
    free(b);
}
END_TEST

START_TEST(writer_replace_and_copy)
{
    size_t len;
    uint8_t *b = slurp(write_sample("src.gguf"), &len);
    gguf_file *f;
    ck_assert_int_eq(gguf_open_memory(b, len, "src", &f, err, sizeof err), GGUF_OK);

    gguf_writer *w = gguf_writer_create();
    for (int i = 0; i < gguf_n_kv(f); i++)
        gguf_set_from(w, f, i);
    gguf_set_u32(w, "v.u8", 5); /* replace: type and value change, order stays */
    gguf_set_str(w, "v.string", "replaced");
    for (int t = 0; t < gguf_n_tensors(f); t++) {
        const gguf_tensor *g = gguf_tensor_at(f, t);
        ck_assert_int_eq(
            gguf_add_tensor(w, g->name, g->type, g->n_dims, g->ne, g->data, err, sizeof err),
            GGUF_OK);
    }
    const char *path = tmp_path("copy.gguf");
    ck_assert_int_eq(gguf_write(w, path, err, sizeof err), GGUF_OK);
    gguf_writer_destroy(w);

    gguf_file *g;
    ck_assert_int_eq(gguf_open(path, &g, err, sizeof err), GGUF_OK);
    ck_assert_int_eq(gguf_n_kv(g), gguf_n_kv(f));
    for (int i = 0; i < gguf_n_kv(f); i++)
        ck_assert_str_eq(gguf_key(g, i), gguf_key(f, i));
    ck_assert_int_eq(gguf_kv_type(g, key(g, "v.u8")), GGUF_UINT32);
    uint64_t u;
    ck_assert(gguf_get_u64(g, "v.u8", &u) && u == 5);
    ck_assert_str_eq(gguf_get_str(g, "v.string"), "replaced");
    ck_assert_str_eq(gguf_arr_str(g, key(g, "a.string"), 0, NULL), "<|endoftext|>");
    ck_assert_mem_eq(gguf_arr_data(g, key(g, "a.f64")), f64s, sizeof f64s);
    ck_assert_int_eq(gguf_n_tensors(g), N_TENSORS);
    for (int t = 0; t < N_TENSORS; t++)
        ck_assert_mem_eq(gguf_tensor_at(g, t)->data, tdata[t], tensors[t].nbytes);
    gguf_close(g);
    gguf_close(f);
    free(b);
}
END_TEST

START_TEST(writer_refuses)
{
    gguf_writer *w = gguf_writer_create();
    uint8_t d[1024] = {0};
    int64_t ne[4] = {32, 2, 1, 1};
    ck_assert_int_eq(gguf_add_tensor(w, "x", (kt_type)7, 1, ne, d, err, sizeof err), GGUF_ERR);
    ck_assert_contains(err, "unknown tensor type 7");
    ck_assert_int_eq(gguf_add_tensor(w, "x", KT_F32, 0, ne, d, err, sizeof err), GGUF_ERR);
    ck_assert_contains(err, "0 dimensions");
    ck_assert_int_eq(gguf_add_tensor(w, "x", KT_F32, 5, ne, d, err, sizeof err), GGUF_ERR);
    ck_assert_contains(err, "5 dimensions");
    int64_t bad[2] = {32, 0};
    ck_assert_int_eq(gguf_add_tensor(w, "x", KT_F32, 2, bad, d, err, sizeof err), GGUF_ERR);
    ck_assert_contains(err, "dimension 1 is 0");
    int64_t odd[1] = {33};
    ck_assert_int_eq(gguf_add_tensor(w, "x", KT_Q8_0, 1, odd, d, err, sizeof err), GGUF_ERR);
    ck_assert_contains(err, "row length 33 is not a multiple of q8_0's block of 32");
    int64_t huge[3] = {1 << 20, 1 << 30, 1 << 30};
    ck_assert_int_eq(gguf_add_tensor(w, "x", KT_F32, 3, huge, d, err, sizeof err), GGUF_ERR);
    ck_assert_contains(err, "too large");
    ck_assert_int_eq(gguf_add_tensor(w, "x", KT_F32, 2, ne, NULL, err, sizeof err), GGUF_ERR);
    ck_assert_contains(err, "data is NULL");
    char longname[80];
    memset(longname, 'a', 64);
    longname[64] = 0;
    ck_assert_int_eq(gguf_add_tensor(w, longname, KT_F32, 2, ne, d, err, sizeof err), GGUF_ERR);
    ck_assert_contains(err, "names must be 1 to 63 bytes");
    longname[63] = 0;
    ck_assert_int_eq(gguf_add_tensor(w, longname, KT_F32, 2, ne, d, err, sizeof err), GGUF_OK);
    ck_assert_int_eq(gguf_add_tensor(w, longname, KT_F16, 2, ne, d, err, sizeof err), GGUF_ERR);
    ck_assert_contains(err, "duplicate tensor");

    const char *path = tmp_path("no/such/dir.gguf");
    ck_assert_int_eq(gguf_write(w, path, err, sizeof err), GGUF_ERR);
    ck_assert_contains(err, path);
    ck_assert_contains(err, "cannot create");

    gguf_set_u32(w, "general.alignment", 48);
    ck_assert_int_eq(gguf_write(w, tmp_path("a48.gguf"), err, sizeof err), GGUF_ERR);
    ck_assert_contains(err, "general.alignment");
    gguf_set_u64(w, "general.alignment", 64);
    ck_assert_int_eq(gguf_write(w, tmp_path("a48.gguf"), err, sizeof err), GGUF_ERR);
    ck_assert_contains(err, "must be a uint32");
    ck_assert_int_eq(access(tmp_path("a48.gguf"), F_OK), -1);
    gguf_set_u32(w, "general.alignment", 64);
    ck_assert_int_eq(gguf_write(w, tmp_path("a64.gguf"), err, sizeof err), GGUF_OK);

    gguf_set_u32(w, "", 1);
    ck_assert_int_eq(gguf_write(w, tmp_path("k.gguf"), err, sizeof err), GGUF_ERR);
    ck_assert_contains(err, "keys must be");
    ck_assert_int_eq(access(tmp_path("k.gguf"), F_OK), -1);
    gguf_writer_destroy(w);

    w = gguf_writer_create();
    gguf_set_arr(w, "bad", GGUF_STRING, d, 1);
    ck_assert_int_eq(gguf_write(w, tmp_path("k.gguf"), err, sizeof err), GGUF_ERR);
    ck_assert_contains(err, "numeric or bool element type");
    gguf_writer_destroy(w);
}
END_TEST

/* A full disk, simulated with a file size limit: the error comes back as a
 * value and neither the file nor its .tmp is left behind. */
START_TEST(writer_disk_full)
{
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {4096, 4096};
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
    gguf_writer *w = gguf_writer_create();
    static uint8_t big[16384];
    int64_t ne[1] = {4096};
    ck_assert_int_eq(gguf_add_tensor(w, "big", KT_F32, 1, ne, big, err, sizeof err), GGUF_OK);
    const char *path = tmp_path("full.gguf");
    ck_assert_int_eq(gguf_write(w, path, err, sizeof err), GGUF_ERR);
    ck_assert_contains(err, path);
    ck_assert_contains(err, "write failed");
    ck_assert_int_eq(access(path, F_OK), -1);
    ck_assert_int_eq(access(tmp_path("full.gguf.tmp"), F_OK), -1);
    gguf_writer_destroy(w);
}
END_TEST

/* ---- malformed files ---- */

/* A small good file whose bytes the cases below corrupt. */
static uint8_t *good_file(size_t *len)
{
    static const int32_t ints[] = {1, 2, 3};
    static const char *const words[] = {"ab", "cde"};
    static uint8_t q8[2 * 2 * 34], f32[4 * 3 * 4];
    gguf_writer *w = gguf_writer_create();
    gguf_set_str(w, "general.architecture", "llama");
    gguf_set_u32(w, "key.count", 7);
    gguf_set_bool(w, "key.flag", true);
    gguf_set_arr(w, "key.ints", GGUF_INT32, ints, 3);
    gguf_set_arr_str(w, "key.words", words, 2);
    gguf_set_u32(w, "general.alignment", 32);
    int64_t ne_a[2] = {64, 2}, ne_g[2] = {4, 3};
    ck_assert_int_eq(gguf_add_tensor(w, "tensor.alpha", KT_Q8_0, 2, ne_a, q8, err, sizeof err),
                     GGUF_OK);
    ck_assert_int_eq(gguf_add_tensor(w, "tensor.gamma", KT_F32, 2, ne_g, f32, err, sizeof err),
                     GGUF_OK);
    const char *path = tmp_path("good.gguf");
    ck_assert_int_eq(gguf_write(w, path, err, sizeof err), GGUF_OK);
    gguf_writer_destroy(w);
    uint8_t *b = slurp(path, len);
    gguf_file *f;
    ck_assert_int_eq(gguf_open_memory(b, *len, "good", &f, err, sizeof err), GGUF_OK);
    gguf_close(f);
    return b;
}

/* Opens b from memory and from a file; both must fail with want in the message. */
static void refused(const uint8_t *b, size_t len, const char *want)
{
    gguf_file *f = (gguf_file *)1;
    uint8_t *copy = malloc(len ? len : 1); /* exact size, so ASan sees any overread */
    memcpy(copy, b, len);
    int rc = gguf_open_memory(copy, len, "bad.gguf", &f, err, sizeof err);
    ck_assert_msg(rc == GGUF_ERR, "accepted a file that should fail with '%s'", want);
    ck_assert_ptr_null(f);
    ck_assert_msg(!strncmp(err, "bad.gguf: ", 10), "message '%s' does not name the file", err);
    ck_assert_contains(err, want);
    free(copy);

    const char *path = tmp_path("bad.gguf");
    spit(path, b, len);
    rc = gguf_open(path, &f, err, sizeof err);
    ck_assert_int_eq(rc, GGUF_ERR);
    ck_assert_contains(err, path);
    ck_assert_contains(err, want);
}

#define CORRUPT(name, want, ...)                                                                   \
    START_TEST(name)                                                                               \
    {                                                                                              \
        size_t len;                                                                                \
        uint8_t *b = good_file(&len);                                                              \
        __VA_ARGS__;                                                                               \
        refused(b, len, want);                                                                     \
        free(b);                                                                                   \
    }                                                                                              \
    END_TEST

CORRUPT(bad_magic, "not a GGUF file", b[0] = 'g')
CORRUPT(bad_version, "unsupported GGUF version 2 (tern reads version 3)", b[4] = 2)
CORRUPT(bad_version_big, "unsupported GGUF version 4", b[4] = 4)
CORRUPT(big_endian, "big-endian", wr32(b + 4, 0x03000000u))
CORRUPT(short_header, "too short", len = 20)
CORRUPT(tiny, "too short", len = 3)
CORRUPT(empty_buf, "truncated: empty file", len = 0)
CORRUPT(too_many_kv, "metadata keys, more than", wr64(b + 16, 1000000))
CORRUPT(huge_kv_count, "metadata keys, more than", wr64(b + 16, UINT64_MAX))
CORRUPT(too_many_tensors, "tensors, more than", wr64(b + 8, 1u << 20))
CORRUPT(huge_tensor_count, "tensors, more than", wr64(b + 8, UINT64_MAX))
CORRUPT(key_len_past_end, "key 0: length 18446744073709551615", wr64(b + 24, UINT64_MAX))
CORRUPT(key_len_barely, "runs past the end", wr64(b + 24, len - 32 + 1))
CORRUPT(empty_key, "key 0: empty key", wr64(b + 24, 0))
CORRUPT(nul_in_key, "NUL", b[after(b, len, "key.count") - 2] = 0)
CORRUPT(string_past_end, "key 'general.architecture': string value: length",
        wr64(b + after(b, len, "general.architecture") + 4, UINT64_MAX - 3))
CORRUPT(unknown_vtype, "key 'key.count': unknown value type 13",
        wr32(b + after(b, len, "key.count"), 13))
CORRUPT(unknown_vtype_huge, "key 'key.count': unknown value type 4294967295",
        wr32(b + after(b, len, "key.count"), UINT32_MAX))
CORRUPT(bad_bool, "key 'key.flag': bool value 2 is not 0 or 1",
        b[after(b, len, "key.flag") + 4] = 2)
CORRUPT(array_past_end, "key 'key.ints': array of 2305843009213693952 elements runs past",
        wr64(b + after(b, len, "key.ints") + 8, 1ull << 61))
CORRUPT(array_u64_overflow, "key 'key.ints': array of 18446744073709551615 elements",
        wr64(b + after(b, len, "key.ints") + 8, UINT64_MAX))
CORRUPT(array_unknown_type, "key 'key.ints': unknown array element type 99",
        wr32(b + after(b, len, "key.ints") + 4, 99))
CORRUPT(nested_array, "key 'key.ints': arrays of arrays",
        wr32(b + after(b, len, "key.ints") + 4, GGUF_ARRAY))
CORRUPT(string_array_past_end, "key 'key.words': array of 4611686018427387904 strings",
        wr64(b + after(b, len, "key.words") + 8, 1ull << 62))
CORRUPT(string_in_array_past_end, "key 'key.words': array string: length",
        wr64(b + after(b, len, "key.words") + 16, UINT64_MAX))
CORRUPT(duplicate_key, "duplicate key 'key.count'",
        memcpy(b + after(b, len, "key.words") - 5, "count", 5))
CORRUPT(alignment_not_pow2, "key 'general.alignment': 48 is not a power of two",
        wr32(b + after(b, len, "general.alignment") + 4, 48))
CORRUPT(alignment_zero, "key 'general.alignment': 0 is not a power of two",
        wr32(b + after(b, len, "general.alignment") + 4, 0))
CORRUPT(alignment_type, "key 'general.alignment': must be a uint32",
        wr32(b + after(b, len, "general.alignment"), GGUF_INT32))
CORRUPT(tensor_name_past_end, "tensor 0 name: length",
        wr64(b + after(b, len, "tensor.alpha") - 20, UINT64_MAX))
CORRUPT(tensor_empty_name, "tensor 1: empty name", wr64(b + after(b, len, "tensor.gamma") - 20, 0))
CORRUPT(n_dims_zero, "tensor 'tensor.alpha': 0 dimensions",
        wr32(b + after(b, len, "tensor.alpha"), 0))
CORRUPT(n_dims_five, "tensor 'tensor.alpha': 5 dimensions",
        wr32(b + after(b, len, "tensor.alpha"), 5))
CORRUPT(n_dims_huge, "tensor 'tensor.alpha': 4294967295 dimensions",
        wr32(b + after(b, len, "tensor.alpha"), UINT32_MAX))
CORRUPT(ne_zero, "tensor 'tensor.gamma': dimension 1 is 0",
        wr64(b + after(b, len, "tensor.gamma") + 12, 0))
CORRUPT(ne_negative, "tensor 'tensor.gamma': dimension 0 is -1",
        wr64(b + after(b, len, "tensor.gamma") + 4, UINT64_MAX))
CORRUPT(ne_overflow, "tensor 'tensor.gamma': shape is too large",
        wr64(b + after(b, len, "tensor.gamma") + 4, 1ull << 40);
        wr64(b + after(b, len, "tensor.gamma") + 12, 1ull << 40))
CORRUPT(ne_past_end, "tensor 'tensor.gamma': data",
        wr64(b + after(b, len, "tensor.gamma") + 12, 1ull << 20))
CORRUPT(not_block_multiple,
        "tensor 'tensor.alpha': row length 65 is not a multiple of q8_0's "
        "block of 32",
        wr64(b + after(b, len, "tensor.alpha") + 4, 65))
CORRUPT(unknown_ttype, "tensor 'tensor.gamma': unknown tensor type 7",
        wr32(b + after(b, len, "tensor.gamma") + 20, 7))
CORRUPT(offset_misaligned, "tensor 'tensor.gamma': offset 8 is not a multiple of the alignment 32",
        wr64(b + after(b, len, "tensor.gamma") + 24, 8))
CORRUPT(offset_past_end, "tensor 'tensor.gamma': data",
        wr64(b + after(b, len, "tensor.gamma") + 24, 1ull << 40))
CORRUPT(offset_huge, "tensor 'tensor.gamma': data",
        wr64(b + after(b, len, "tensor.gamma") + 24, UINT64_MAX - 31))
CORRUPT(overlap, "overlaps", wr64(b + after(b, len, "tensor.gamma") + 24, 128))
CORRUPT(duplicate_tensor, "duplicate tensor 'tensor.alpha'",
        memcpy(b + after(b, len, "tensor.gamma") - 5, "alpha", 5))

/* Every truncation of a good file short of its last tensor's data is
 * refused, with an exact-size buffer so ASan catches any overread. */
START_TEST(every_truncation)
{
    size_t len;
    uint8_t *b = good_file(&len);
    gguf_file *f;
    ck_assert_int_eq(gguf_open_memory(b, len, "good", &f, err, sizeof err), GGUF_OK);
    const gguf_tensor *last = gguf_tensor_at(f, 1);
    size_t end = (size_t)((const uint8_t *)last->data - b) + last->nbytes;
    gguf_close(f);
    for (size_t n = 0; n < end; n++) {
        uint8_t *copy = malloc(n ? n : 1);
        memcpy(copy, b, n);
        f = (gguf_file *)1;
        ck_assert_int_eq(gguf_open_memory(copy, n, "cut", &f, err, sizeof err), GGUF_ERR);
        ck_assert_ptr_null(f);
        ck_assert_msg(strstr(err, "truncated") || strstr(err, "past the end") ||
                          strstr(err, "more than"),
                      "length %zu: %s", n, err);
        free(copy);
    }
    /* Trailing padding is not data: cutting it is fine. */
    ck_assert_int_eq(gguf_open_memory(b, end, "cut", &f, err, sizeof err), GGUF_OK);
    gguf_close(f);
    free(b);
}
END_TEST

START_TEST(open_errors)
{
    gguf_file *f = (gguf_file *)1;
    const char *path = tmp_path("missing.gguf");
    ck_assert_int_eq(gguf_open(path, &f, err, sizeof err), GGUF_ERR);
    ck_assert_ptr_null(f);
    ck_assert_contains(err, path);
    ck_assert_contains(err, "No such file");
    ck_assert_int_eq(gguf_open(tmpdir, &f, err, sizeof err), GGUF_ERR);
    ck_assert_contains(err, "not a regular file");
    path = tmp_path("empty");
    spit(path, "", 0);
    ck_assert_int_eq(gguf_open(path, &f, err, sizeof err), GGUF_ERR);
    ck_assert_contains(err, "empty file");
    /* A tiny error buffer truncates the message but never overflows. */
    char small[8];
    ck_assert_int_eq(gguf_open(path, &f, small, sizeof small), GGUF_ERR);
    ck_assert_uint_eq(strlen(small), 7);
    ck_assert_int_eq(gguf_open(path, &f, NULL, 0), GGUF_ERR);
}
END_TEST

static void rm_tmpdir(void)
{
    DIR *d = opendir(tmpdir);
    if (!d) return;
    struct dirent *e;
    char p[512];
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(tmpdir);
}

int main(void)
{
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    Suite *s = suite_create("gguf");
    TCase *tc = tcase_create("round trip");
    tcase_add_test(tc, round_trip_file);
    tcase_add_test(tc, round_trip_memory);
    tcase_add_test(tc, layout_alignment);
    tcase_add_test(tc, no_tensors);
    tcase_add_test(tc, writer_owned_data);
    tcase_add_test(tc, getters_convert);
    tcase_add_test(tc, writer_replace_and_copy);
    tcase_add_test(tc, writer_refuses);
    tcase_add_test(tc, writer_disk_full);
    suite_add_tcase(s, tc);

    tc = tcase_create("malformed");
    tcase_set_timeout(tc, 60);
    const TTest *const bad[] = {
        bad_magic,
        bad_version,
        bad_version_big,
        big_endian,
        short_header,
        tiny,
        empty_buf,
        too_many_kv,
        huge_kv_count,
        too_many_tensors,
        huge_tensor_count,
        key_len_past_end,
        key_len_barely,
        empty_key,
        nul_in_key,
        string_past_end,
        unknown_vtype,
        unknown_vtype_huge,
        bad_bool,
        array_past_end,
        array_u64_overflow,
        array_unknown_type,
        nested_array,
        string_array_past_end,
        string_in_array_past_end,
        duplicate_key,
        alignment_not_pow2,
        alignment_zero,
        alignment_type,
        tensor_name_past_end,
        tensor_empty_name,
        n_dims_zero,
        n_dims_five,
        n_dims_huge,
        ne_zero,
        ne_negative,
        ne_overflow,
        ne_past_end,
        not_block_multiple,
        unknown_ttype,
        offset_misaligned,
        offset_past_end,
        offset_huge,
        overlap,
        duplicate_tensor,
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        tcase_add_test(tc, bad[i]);
    tcase_add_test(tc, every_truncation);
    tcase_add_test(tc, open_errors);
    suite_add_tcase(s, tc);

    int rc = tu_run(s, CK_FORK_GETENV);
    rm_tmpdir();
    return rc;
}
