/* Images: decoding (PNG kinds, JPEG, EXIF orientation, alpha over white),
 * bad input and limits, and resizing/preprocessing byte-exact against
 * Pillow outputs recorded by tests/make_image_refs.py. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/image.h"
#include "jpegw.h"
#include "testutil.h"

#ifndef TERN_TEST_DATA
#define TERN_TEST_DATA "tests/data"
#endif
#define DIR TERN_TEST_DATA "/images/"

/* A file from tests/data/images. */
static void *slurp(const char *name, size_t *len)
{
    char path[512];
    snprintf(path, sizeof path, DIR "%s", name);
    return tu_slurp(path, len);
}

static void decode_file(const char *name, img_rgb *im)
{
    size_t len;
    void *data = slurp(name, &len);
    char err[256];
    ck_assert_msg(img_decode(data, len, NULL, im, err, sizeof err) == 0, "%s: %s", name, err);
    free(data);
}

static void expect_pixels(const img_rgb *im, const char *ref, int w, int h)
{
    size_t len;
    uint8_t *want = slurp(ref, &len);
    ck_assert_int_eq(im->w, w);
    ck_assert_int_eq(im->h, h);
    ck_assert_uint_eq(len, (size_t)w * h * 3);
    for (size_t i = 0; i < len; i++)
        ck_assert_msg(im->rgb[i] == want[i], "%s: byte %zu (x %zu, y %zu) is %d, Pillow has %d",
                      ref, i, i / 3 % (size_t)w, i / 3 / (size_t)w, im->rgb[i], want[i]);
    free(want);
}

START_TEST(png_kinds)
{
    static const struct {
        const char *png, *ref;
        int w, h;
    } cases[] = {
        {"rgb.png", "rgb.rgb", 37, 23},
        {"rgba.png", "rgba.rgb", 9, 7}, /* alpha over white, Pillow's rounding */
        {"grey.png", "grey.rgb", 6, 5},
        {"palette.png", "palette.rgb", 5, 4}, /* tRNS transparency */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        img_rgb im;
        decode_file(cases[i].png, &im);
        expect_pixels(&im, cases[i].ref, cases[i].w, cases[i].h);
        img_free(&im);
    }
}
END_TEST

START_TEST(jpeg_orientations)
{
    for (int o = 1; o <= 8; o++) {
        char jpg[32], ref[32];
        snprintf(jpg, sizeof jpg, "orient%d.jpg", o);
        snprintf(ref, sizeof ref, "orient%d.rgb", o);
        size_t len;
        void *data = slurp(jpg, &len);
        ck_assert_int_eq(img_jpeg_orientation(data, len), o);
        free(data);
        img_rgb im;
        decode_file(jpg, &im);
        /* 12x8 stored; 5..8 turn it to 8x12 */
        expect_pixels(&im, ref, o >= 5 ? 8 : 12, o >= 5 ? 12 : 8);
        img_free(&im);
    }
    img_rgb im;
    decode_file("grey.jpg", &im);
    expect_pixels(&im, "grey_jpg.rgb", 6, 5);
    img_free(&im);
}
END_TEST

static void expect_error(const char *name, const img_limits *lim, const char *needle)
{
    size_t len;
    void *data = slurp(name, &len);
    img_rgb im = {0};
    char err[256] = "";
    ck_assert_int_ne(img_decode(data, len, lim, &im, err, sizeof err), 0);
    ck_assert_ptr_null(im.rgb);
    ck_assert_msg(strstr(err, needle), "%s: message '%s' lacks '%s'", name, err, needle);
    free(data);
}

START_TEST(bad_input_is_an_error)
{
    expect_error("truncated.jpg", NULL, "JPEG");
    expect_error("truncated.png", NULL, "PNG");
    expect_error("corrupt.png", NULL, "PNG");
    expect_error("rgb.rgb", NULL, "not a JPEG or PNG");
    /* every prefix of a valid file fails cleanly or decodes, never crashes */
    size_t len;
    uint8_t *data = slurp("orient6.jpg", &len);
    for (size_t n = 0; n < len; n += 7) {
        img_rgb im;
        char err[256];
        if (img_decode(data, n, NULL, &im, err, sizeof err) == 0) img_free(&im);
    }
    /* and random byte flips */
    srand(1);
    for (int k = 0; k < 200; k++) {
        uint8_t *copy = malloc(len);
        memcpy(copy, data, len);
        copy[2 + (size_t)rand() % (len - 2)] ^= (uint8_t)(1 + rand() % 255);
        img_rgb im;
        char err[256];
        if (img_decode(copy, len, NULL, &im, err, sizeof err) == 0) img_free(&im);
        free(copy);
    }
    free(data);
    img_rgb im;
    char err[256];
    ck_assert_int_ne(img_decode("", 0, NULL, &im, err, sizeof err), 0);
}
END_TEST

START_TEST(limits_checked_first)
{
    img_limits bytes = {.max_bytes = 100};
    expect_error("rgb.png", &bytes, "bytes");
    img_limits pixels = {.max_pixels = 37 * 23 - 1};
    expect_error("rgb.png", &pixels, "pixels");
    img_limits jpix = {.max_pixels = 95};
    expect_error("orient1.jpg", &jpix, "pixels");
    img_limits ok = {.max_bytes = 1 << 20, .max_pixels = 37 * 23};
    size_t len;
    void *data = slurp("rgb.png", &len);
    img_rgb im;
    char err[256];
    ck_assert_int_eq(img_decode(data, len, &ok, &im, err, sizeof err), 0);
    img_free(&im);
    free(data);
}
END_TEST

/* The header alone: size and limits, no pixels (what ternd checks before queueing). */
START_TEST(probe_reads_the_header)
{
    size_t len;
    void *data = slurp("rgb.png", &len);
    int w, h;
    char err[256];
    ck_assert_int_eq(img_probe(data, len, NULL, &w, &h, err, sizeof err), 0);
    ck_assert_int_eq(w, 37);
    ck_assert_int_eq(h, 23);
    img_limits pixels = {.max_pixels = 37 * 23 - 1};
    ck_assert_int_ne(img_probe(data, len, &pixels, &w, &h, err, sizeof err), 0);
    ck_assert_ptr_nonnull(strstr(err, "pixels"));
    ck_assert_int_ne(img_probe(data, 7, NULL, &w, &h, err, sizeof err), 0);
    free(data);
    data = slurp("orient6.jpg", &len);
    img_rgb im;
    decode_file("orient6.jpg", &im);
    ck_assert_int_eq(img_probe(data, len, NULL, &w, &h, err, sizeof err), 0);
    ck_assert_int_eq(w, im.h); /* the header's size is before the EXIF rotation */
    ck_assert_int_eq(h, im.w);
    img_free(&im);
    ck_assert_int_ne(img_probe("GIF89a", 6, NULL, &w, &h, err, sizeof err), 0);
    free(data);
}
END_TEST

/* A progressive file with 190 scans decodes without a limit and is refused past max_scans. */
START_TEST(jpeg_scans_bounded)
{
    unsigned char *data;
    unsigned long len;
    ck_assert_int_eq(jpegw_write(64, 48, 1, &data, &len), 0);
    img_rgb im;
    char err[256];
    img_limits none = {0};
    ck_assert_int_eq(img_decode(data, len, &none, &im, err, sizeof err), 0);
    img_free(&im);
    img_limits lim = {.max_scans = 64};
    ck_assert_int_ne(img_decode(data, len, &lim, &im, err, sizeof err), 0);
    ck_assert_msg(strstr(err, "more than 64 scans"), "%s", err);
    ck_assert_ptr_null(im.rgb);
    free(data);
    ck_assert_int_eq(jpegw_write(64, 48, 0, &data, &len), 0); /* baseline: one scan */
    lim.max_scans = 1;
    ck_assert_int_eq(img_decode(data, len, &lim, &im, err, sizeof err), 0);
    img_free(&im);
    free(data);
}
END_TEST

/* min_edge: the smallest M/8 scale whose longest edge still covers it; never below. */
START_TEST(jpeg_dct_scale)
{
    unsigned char *data;
    unsigned long len;
    ck_assert_int_eq(jpegw_write(64, 48, 0, &data, &len), 0);
    static const struct {
        int min_edge, w, h;
    } cases[] = {{0, 64, 48},  {8, 8, 6},    {16, 16, 12}, {17, 24, 18},
                 {56, 56, 42}, {57, 64, 48}, {64, 64, 48}, {1000, 64, 48}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        img_limits lim = {.min_edge = cases[i].min_edge};
        img_rgb im;
        char err[256];
        ck_assert_int_eq(img_decode(data, len, &lim, &im, err, sizeof err), 0);
        ck_assert_msg(im.w == cases[i].w && im.h == cases[i].h, "min_edge %d: %dx%d",
                      cases[i].min_edge, im.w, im.h);
        img_free(&im);
    }
    free(data);
}
END_TEST

START_TEST(resize_matches_pillow)
{
    size_t len;
    char *idx = slurp("resize.txt", &len);
    int checked = 0;
    for (char *line = strtok(idx, "\n"); line; line = strtok(NULL, "\n")) {
        char src[64], ref[64];
        int sw, sh, w, h;
        ck_assert_int_eq(sscanf(line, "%63s %d %d %d %d %63s", src, &sw, &sh, &w, &h, ref), 6);
        size_t n;
        img_rgb in = {sw, sh, slurp(src, &n)};
        img_rgb out;
        ck_assert_int_eq(img_resize(&in, w, h, &out), 0);
        expect_pixels(&out, ref, w, h);
        img_free(&out);
        img_free(&in);
        checked++;
    }
    ck_assert_int_ge(checked, 5);
    free(idx);
}
END_TEST

/* Pillow's BICUBIC (a = -0.5): 100, 200 doubled in width starts at
 * (100 k(0.25) + 200 k(1.25)) / (k(0.25) + k(1.25)) = 91.18 -> 91, where
 * Lanczos gives another value; a flat picture stays flat at any size. */
START_TEST(bicubic_resize)
{
    uint8_t two[6] = {100, 100, 100, 200, 200, 200};
    img_rgb in = {2, 1, two}, out;
    ck_assert_int_eq(img_resize_filter(&in, 4, 1, IMG_BICUBIC, &out), 0);
    ck_assert_int_eq(out.rgb[0], 91);
    ck_assert_int_eq(out.rgb[3 * 3], 209); /* the mirror image at the other end */
    img_free(&out);
    ck_assert_int_eq(img_resize_filter(&in, 4, 1, IMG_LANCZOS, &out), 0);
    ck_assert_int_ne(out.rgb[0], 91);
    img_free(&out);

    uint8_t *flat = malloc(40 * 30 * 3);
    memset(flat, 123, 40 * 30 * 3);
    img_rgb f = {40, 30, flat};
    ck_assert_int_eq(img_resize_filter(&f, 56, 56, IMG_BICUBIC, &out), 0);
    for (int i = 0; i < 56 * 56 * 3; i++)
        ck_assert_int_eq(out.rgb[i], 123);
    img_free(&out);
    free(flat);
}
END_TEST

/* moondream2's processor: the whole picture straight to the tile, bicubic. */
START_TEST(squash_preprocess)
{
    uint8_t *px = malloc(40 * 30 * 3);
    for (int i = 0; i < 40 * 30 * 3; i++)
        px[i] = (uint8_t)(i * 7 % 251);
    img_rgb im = {40, 30, px};
    img_proc_cfg cfg = {.longest_edge = 56,
                        .tile = 56,
                        .squash = true,
                        .filter = IMG_BICUBIC,
                        .rescale = 1.0 / 255.0,
                        .mean = {0.5f, 0.5f, 0.5f},
                        .std = {0.5f, 0.5f, 0.5f}};
    img_rgb *tiles, want;
    int n, rows, cols;
    char err[256];
    ck_assert_msg(img_preprocess_u8(&im, &cfg, &tiles, &n, &rows, &cols, err, sizeof err) == 0,
                  "%s", err);
    ck_assert(n == 1 && rows == 0 && cols == 0 && tiles[0].w == 56 && tiles[0].h == 56);
    ck_assert_int_eq(img_resize_filter(&im, 56, 56, IMG_BICUBIC, &want), 0);
    ck_assert(memcmp(tiles[0].rgb, want.rgb, 56 * 56 * 3) == 0);
    img_free(&want);
    img_free(&tiles[0]);
    free(tiles);
    free(px);
}
END_TEST

START_TEST(preprocess_matches_idefics3)
{
    size_t len;
    char *idx = slurp("preprocess.txt", &len);
    int checked = 0;
    char *save = NULL;
    for (char *line = strtok_r(idx, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char src[64], ref[64];
        int sw, sh, longest, tile, split, rows, cols, n;
        ck_assert_int_eq(sscanf(line, "%63s %d %d %d %d %d %d %d %d %63s", src, &sw, &sh, &longest,
                                &tile, &split, &rows, &cols, &n, ref),
                         10);
        size_t nb;
        img_rgb in = {sw, sh, slurp(src, &nb)};
        img_proc_cfg cfg = {.longest_edge = longest,
                            .tile = tile,
                            .split = split,
                            .rescale = 1.0 / 255.0,
                            .mean = {0.5f, 0.5f, 0.5f},
                            .std = {0.5f, 0.5f, 0.5f}};
        img_rgb *tiles;
        int got_n, got_rows, got_cols;
        char err[256];
        ck_assert_msg(img_preprocess_u8(&in, &cfg, &tiles, &got_n, &got_rows, &got_cols, err,
                                        sizeof err) == 0,
                      "%s", err);
        ck_assert_msg(got_rows == rows && got_cols == cols && got_n == n,
                      "%s: grid %dx%d (%d), want %dx%d (%d)", line, got_rows, got_cols, got_n, rows,
                      cols, n);
        uint8_t *want = slurp(ref, &nb);
        ck_assert_uint_eq(nb, (size_t)n * tile * tile * 3);
        for (int t = 0; t < n; t++) {
            ck_assert_int_eq(tiles[t].w, tile);
            ck_assert_int_eq(tiles[t].h, tile);
            ck_assert_msg(memcmp(tiles[t].rgb, want + (size_t)t * tile * tile * 3,
                                 (size_t)tile * tile * 3) == 0,
                          "%s: tile %d differs", line, t);
        }
        /* the float version: CHW, (x/255 - 0.5)/0.5 */
        img_tiles ft;
        ck_assert_int_eq(img_preprocess(&in, &cfg, &ft, err, sizeof err), 0);
        ck_assert_int_eq(ft.n, n);
        ck_assert_int_eq(ft.rows, rows);
        ck_assert_int_eq(ft.cols, cols);
        size_t plane = (size_t)tile * tile;
        for (int t = 0; t < n; t++)
            for (size_t p = 0; p < plane; p += 7)
                for (int c = 0; c < 3; c++) {
                    float x = (float)(want[((size_t)t * plane + p) * 3 + c] * (1.0 / 255.0));
                    ck_assert_float_eq(ft.pixels[((size_t)t * 3 + c) * plane + p],
                                       (x - 0.5f) / 0.5f);
                }
        img_tiles_free(&ft);
        free(want);
        for (int t = 0; t < n; t++)
            img_free(&tiles[t]);
        free(tiles);
        img_free(&in);
        checked++;
    }
    ck_assert_int_ge(checked, 10);
    free(idx);
}
END_TEST

START_TEST(settings_from_mmproj)
{
    char path[] = "/tmp/tern-img-XXXXXX", err[256];
    close(mkstemp(path));
    gguf_writer *w = gguf_writer_create();
    gguf_set_u32(w, "clip.vision.image_size", 512);
    gguf_set_u32(w, "clip.vision.preproc_image_size", 2048);
    float mean[3] = {0.1f, 0.2f, 0.3f}, std[3] = {0.4f, 0.5f, 0.6f};
    gguf_set_arr(w, "clip.vision.image_mean", GGUF_FLOAT32, mean, 3);
    gguf_set_arr(w, "clip.vision.image_std", GGUF_FLOAT32, std, 3);
    ck_assert_int_eq(gguf_write(w, path, err, sizeof err), 0);
    gguf_writer_destroy(w);
    gguf_file *f;
    ck_assert_int_eq(gguf_open(path, &f, err, sizeof err), 0);
    img_proc_cfg cfg;
    ck_assert_msg(img_proc_cfg_from_gguf(f, &cfg, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(cfg.tile, 512);
    ck_assert_int_eq(cfg.longest_edge, 2048);
    ck_assert(!cfg.split);
    ck_assert_float_eq(cfg.mean[2], 0.3f);
    ck_assert_float_eq(cfg.std[0], 0.4f);
    ck_assert_double_eq(cfg.rescale, 1.0 / 255.0);
    gguf_close(f);

    w = gguf_writer_create();
    gguf_set_u32(w, "clip.vision.patch_size", 16);
    ck_assert_int_eq(gguf_write(w, path, err, sizeof err), 0);
    gguf_writer_destroy(w);
    ck_assert_int_eq(gguf_open(path, &f, err, sizeof err), 0);
    ck_assert_int_ne(img_proc_cfg_from_gguf(f, &cfg, err, sizeof err), 0);
    ck_assert_ptr_nonnull(strstr(err, "clip.vision.image_size"));
    gguf_close(f);
    unlink(path);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("image");
    TCase *tc = tcase_create("image");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, png_kinds);
    tcase_add_test(tc, jpeg_orientations);
    tcase_add_test(tc, bad_input_is_an_error);
    tcase_add_test(tc, limits_checked_first);
    tcase_add_test(tc, probe_reads_the_header);
    tcase_add_test(tc, jpeg_scans_bounded);
    tcase_add_test(tc, jpeg_dct_scale);
    tcase_add_test(tc, resize_matches_pillow);
    tcase_add_test(tc, bicubic_resize);
    tcase_add_test(tc, squash_preprocess);
    tcase_add_test(tc, preprocess_matches_idefics3);
    tcase_add_test(tc, settings_from_mmproj);
    suite_add_tcase(s, tc);
    return tu_run(s, CK_FORK_GETENV);
}
