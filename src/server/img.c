/* JPEG through libjpeg(-turbo), PNG through libspng. Both are told to treat anything odd
 * (a truncated file, a bad CRC) as an error: a half-grey picture is worse than a clear 422. */
#include "img.h"

#include <stdio.h>   /* before jpeglib.h, which uses FILE */

#include <jpeglib.h>
#include <setjmp.h>
#include <spng.h>
#include <stdlib.h>
#include <string.h>

struct jerr {
    struct jpeg_error_mgr mgr;
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
};

static void jerr_exit(j_common_ptr cinfo)
{
    struct jerr *e = (struct jerr *)cinfo->err;
    cinfo->err->format_message(cinfo, e->msg);
    longjmp(e->jump, 1);
}

/* Warnings (level -1), such as "Premature end of JPEG file", become errors. */
static void jerr_emit(j_common_ptr cinfo, int level)
{
    if (level < 0) jerr_exit(cinfo);
}

static int decode_jpeg(const unsigned char *data, size_t len, long max_pixels,
                       struct job_image *out, char *err, size_t errlen)
{
    struct jpeg_decompress_struct cinfo;
    struct jerr je;
    /* volatile: survives the longjmp */
    unsigned char *volatile rgb = NULL;
    int volatile status = 422;
    cinfo.err = jpeg_std_error(&je.mgr);
    je.mgr.error_exit = jerr_exit;
    je.mgr.emit_message = jerr_emit;
    if (setjmp(je.jump)) {
        if (status == 422) snprintf(err, errlen, "image: corrupt JPEG: %s", je.msg);
        jpeg_destroy_decompress(&cinfo);
        free(rgb);
        return status;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)len);
    jpeg_read_header(&cinfo, TRUE);
    if ((long)cinfo.image_width * (long)cinfo.image_height > max_pixels) {
        snprintf(err, errlen, "image: %ux%u pixels exceeds the limit of %ld pixels",
                 cinfo.image_width, cinfo.image_height, max_pixels);
        jpeg_destroy_decompress(&cinfo);
        return 422;
    }
    cinfo.out_color_space = JCS_RGB;
    jpeg_start_decompress(&cinfo);
    size_t stride = (size_t)cinfo.output_width * 3;
    rgb = malloc(stride * cinfo.output_height);
    if (!rgb) {
        snprintf(err, errlen, "image: out of memory");
        jpeg_destroy_decompress(&cinfo);
        return 500;
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = rgb + stride * cinfo.output_scanline;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
    out->rgb = rgb;
    out->width = (int)cinfo.output_width;
    out->height = (int)cinfo.output_height;
    jpeg_destroy_decompress(&cinfo);
    return 0;
}

static int decode_png(const unsigned char *data, size_t len, long max_pixels,
                      struct job_image *out, char *err, size_t errlen)
{
    spng_ctx *ctx = spng_ctx_new(0);
    if (!ctx) {
        snprintf(err, errlen, "image: out of memory");
        return 500;
    }
    int status = 422, rc;
    struct spng_ihdr ihdr;
    size_t size;
    unsigned char *rgb = NULL;
    spng_set_crc_action(ctx, SPNG_CRC_ERROR, SPNG_CRC_ERROR);
    if ((rc = spng_set_png_buffer(ctx, data, len)) || (rc = spng_get_ihdr(ctx, &ihdr))) goto bad;
    if ((long)ihdr.width * (long)ihdr.height > max_pixels) {
        snprintf(err, errlen, "image: %ux%u pixels exceeds the limit of %ld pixels",
                 ihdr.width, ihdr.height, max_pixels);
        goto out;
    }
    if ((rc = spng_decoded_image_size(ctx, SPNG_FMT_RGB8, &size))) goto bad;
    if (!(rgb = malloc(size))) {
        snprintf(err, errlen, "image: out of memory");
        status = 500;
        goto out;
    }
    if ((rc = spng_decode_image(ctx, rgb, size, SPNG_FMT_RGB8, SPNG_DECODE_TRNS))) goto bad;
    out->rgb = rgb;
    out->width = (int)ihdr.width;
    out->height = (int)ihdr.height;
    spng_ctx_free(ctx);
    return 0;
bad:
    snprintf(err, errlen, "image: corrupt PNG: %s", spng_strerror(rc));
out:
    free(rgb);
    spng_ctx_free(ctx);
    return status;
}

int img_decode(const unsigned char *data, size_t len, long max_bytes, long max_pixels,
               struct job_image *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if ((long)len > max_bytes) {
        snprintf(err, errlen, "image: %zu bytes exceeds the limit of %ld bytes", len, max_bytes);
        return 413;
    }
    static const unsigned char png_sig[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };
    if (len >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF)
        return decode_jpeg(data, len, max_pixels, out, err, errlen);
    if (len >= 8 && memcmp(data, png_sig, 8) == 0)
        return decode_png(data, len, max_pixels, out, err, errlen);
    snprintf(err, errlen, "image: not a JPEG or PNG file");
    return 415;
}
