/* A grey w x h RGB PNG made in memory: what a client sends and a job holds (compressed
 * picture bytes, decoded only at admission). */
#ifndef TERN_TESTS_SERVER_TESTPNG_H
#define TERN_TESTS_SERVER_TESTPNG_H

#include <check.h>
#include <spng.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The PNG's bytes (malloc'd) and their count in *len. */
static inline unsigned char *test_grey_png(int w, int h, size_t *len)
{
    spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
    ck_assert_ptr_nonnull(ctx);
    spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1);
    struct spng_ihdr ihdr = {.width = (uint32_t)w,
                             .height = (uint32_t)h,
                             .bit_depth = 8,
                             .color_type = SPNG_COLOR_TYPE_TRUECOLOR};
    spng_set_ihdr(ctx, &ihdr);
    size_t n = (size_t)w * h * 3;
    unsigned char *px = malloc(n);
    ck_assert_ptr_nonnull(px);
    memset(px, 128, n);
    ck_assert_int_eq(spng_encode_image(ctx, px, n, SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE), 0);
    int e;
    unsigned char *png = spng_get_png_buffer(ctx, len, &e);
    ck_assert_ptr_nonnull(png);
    free(px);
    spng_ctx_free(ctx);
    return png;
}

#endif
