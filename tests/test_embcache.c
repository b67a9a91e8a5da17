/* The picture embedding cache: hits copy the rows, LRU eviction within the byte bound, and
 * keys that change with the pixels, the preprocessing, the model and the seed. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "engine/chat.h"
#include "engine/embcache.h"
#include "testutil.h"

#define N 100 /* floats per entry */

static embcache_key key(int i)
{
    embcache_hasher h;
    embcache_hash_init(&h, 7);
    embcache_hash_add(&h, &i, sizeof i);
    return embcache_hash_final(&h);
}

static void put(embcache *c, int i)
{
    float rows[N];
    for (int k = 0; k < N; k++)
        rows[k] = (float)(i * 1000 + k);
    int grid[2] = {i, i + 1};
    embcache_key k = key(i);
    ck_assert_int_eq(embcache_put(c, &k, rows, N, grid), 0);
}

/* 1 on a hit (checking the rows), 0 on a miss. */
static int has(embcache *c, int i)
{
    float *buf = NULL;
    size_t n = 0;
    int grid[2] = {0, 0};
    embcache_key k = key(i);
    int rc = embcache_get(c, &k, &buf, &n, grid);
    ck_assert_int_ge(rc, 0);
    if (rc) {
        ck_assert_uint_eq(n, N);
        ck_assert_int_eq(grid[0], i);
        ck_assert_int_eq(grid[1], i + 1);
        for (int j = 0; j < N; j++)
            ck_assert_float_eq(buf[j], (float)(i * 1000 + j));
    }
    free(buf);
    return rc;
}

START_TEST(hit_appends_a_copy)
{
    embcache *c = embcache_create(1 << 20, 1);
    put(c, 1);
    float *buf = malloc(3 * sizeof *buf);
    buf[0] = buf[1] = buf[2] = -1;
    size_t n = 3;
    int grid[2];
    embcache_key k = key(1);
    ck_assert_int_eq(embcache_get(c, &k, &buf, &n, grid), 1);
    ck_assert_uint_eq(n, 3 + N);
    ck_assert_float_eq(buf[2], -1);
    ck_assert_float_eq(buf[3], 1000);
    ck_assert_float_eq(buf[3 + N - 1], 1000 + N - 1);
    free(buf);
    ck_assert_int_eq(has(c, 2), 0); /* a different picture misses */
    embcache_destroy(c);
}
END_TEST

START_TEST(lru_within_the_bound)
{
    int entries;
    size_t bytes, one;
    embcache *c = embcache_create(1 << 20, 1);
    put(c, 0);
    embcache_usage(c, &entries, &one);
    embcache_destroy(c);

    c = embcache_create(3 * one, 1); /* room for three */
    put(c, 1);
    put(c, 2);
    put(c, 3);
    ck_assert_int_eq(has(c, 1), 1); /* 1 is now the most recent; 2 the least */
    put(c, 4);
    ck_assert_int_eq(has(c, 2), 0);
    ck_assert_int_eq(has(c, 1), 1);
    ck_assert_int_eq(has(c, 3), 1);
    ck_assert_int_eq(has(c, 4), 1);
    embcache_usage(c, &entries, &bytes);
    ck_assert_int_eq(entries, 3);
    ck_assert_uint_le(bytes, 3 * one);
    put(c, 5); /* evicts 1, the least recent after the lookups above */
    ck_assert_int_eq(has(c, 1), 0);
    ck_assert_int_eq(has(c, 5), 1);
    embcache_destroy(c);

    c = embcache_create(one - 1, 1); /* too small for one entry: nothing kept */
    put(c, 1);
    ck_assert_int_eq(has(c, 1), 0);
    embcache_usage(c, &entries, &bytes);
    ck_assert_int_eq(entries, 0);
    ck_assert_uint_eq(bytes, 0);
    embcache_destroy(c);

    c = embcache_create(0, 1); /* off */
    put(c, 1);
    ck_assert_int_eq(has(c, 1), 0);
    embcache_destroy(c);
}
END_TEST

START_TEST(key_covers_pixels_preprocessing_model_and_seed)
{
    uint8_t px[4 * 3 * 3];
    for (size_t i = 0; i < sizeof px; i++)
        px[i] = (uint8_t)(i * 7);
    img_rgb im = {4, 3, px};
    embcache *ec = embcache_create(1 << 20, 42);
    chat_ctx c = {.cache = ec,
                  .icfg = {.longest_edge = 64,
                           .tile = 32,
                           .split = true,
                           .rescale = 1.0 / 255,
                           .mean = {0.5f, 0.5f, 0.5f},
                           .std = {0.5f, 0.5f, 0.5f}}};
    embcache_key k0 = chat_image_key(&c, &im), k;
    k = chat_image_key(&c, &im);
    ck_assert(embcache_key_eq(&k0, &k)); /* deterministic */

    px[5] ^= 1; /* one pixel */
    k = chat_image_key(&c, &im);
    ck_assert(!embcache_key_eq(&k0, &k));
    px[5] ^= 1;
    img_rgb tall = {3, 4, px}; /* same bytes, other shape */
    k = chat_image_key(&c, &tall);
    ck_assert(!embcache_key_eq(&k0, &k));

    chat_ctx d = c;
    d.icfg.split = false;
    k = chat_image_key(&d, &im);
    ck_assert(!embcache_key_eq(&k0, &k));
    d = c;
    d.icfg.longest_edge = 96;
    k = chat_image_key(&d, &im);
    ck_assert(!embcache_key_eq(&k0, &k));
    d = c;
    d.icfg.mean[2] = 0.4f;
    k = chat_image_key(&d, &im);
    ck_assert(!embcache_key_eq(&k0, &k));
    d = c;
    d.model_key.a = 1;
    k = chat_image_key(&d, &im);
    ck_assert(!embcache_key_eq(&k0, &k));

    embcache *other = embcache_create(1 << 20, 43);
    d = c;
    d.cache = other;
    k = chat_image_key(&d, &im);
    ck_assert(!embcache_key_eq(&k0, &k));
    embcache_destroy(other);
    embcache_destroy(ec);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("embcache");
    TCase *tc = tcase_create("embcache");
    tcase_add_test(tc, hit_appends_a_copy);
    tcase_add_test(tc, lru_within_the_bound);
    tcase_add_test(tc, key_covers_pixels_preprocessing_model_and_seed);
    suite_add_tcase(s, tc);
    return tu_run(s, CK_FORK_GETENV);
}
