/* Image decoding and the Idefics3 image processor: see image.h. */
#include "engine/image.h"

#include <math.h>
#include <setjmp.h>
#include <stdio.h> /* before jpeglib.h, which needs FILE */

#include <jpeglib.h>
#include <spng.h>
#include <stdlib.h>
#include <string.h>

#include "engine/errmsg.h"

void img_free(img_rgb *im)
{
    if (!im) return;
    free(im->rgb);
    im->rgb = NULL;
    im->w = im->h = 0;
}

static int check_dims(uint64_t w, uint64_t h, const img_limits *lim, const char *kind, char *err,
                      size_t errlen)
{
    if (w == 0 || h == 0 || w > 65535 || h > 65535) {
        eng_seterr(err, errlen, "%s image of %llux%llu pixels is not supported", kind,
                   (unsigned long long)w, (unsigned long long)h);
        return -1;
    }
    if (lim && lim->max_pixels && w * h > lim->max_pixels) {
        eng_seterr(err, errlen, "%s image of %llux%llu pixels exceeds the limit of %llu pixels",
                   kind, (unsigned long long)w, (unsigned long long)h,
                   (unsigned long long)lim->max_pixels);
        return -1;
    }
    return 0;
}

/* ---- JPEG ---- */

/* libjpeg's default error handler calls exit(); this one jumps back with
 * the message. Warnings (corrupt data, premature end) count as errors too:
 * a damaged file must not turn into a half-grey picture. */
typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
} jpeg_err;

static void jpeg_fail(j_common_ptr c)
{
    jpeg_err *e = (jpeg_err *)c->err;
    c->err->format_message(c, e->msg);
    longjmp(e->jb, 1);
}

static void jpeg_emit(j_common_ptr c, int level)
{
    if (level < 0) jpeg_fail(c);
}

static void jpeg_quiet(j_common_ptr c)
{
    (void)c;
}

/* Counts scans as libjpeg reads them: a progressive file of thousands of tiny scans costs a
 * full pass over the coefficients per scan, so past max_scans it is refused. */
typedef struct {
    struct jpeg_progress_mgr pub;
    int max_scans;
} jpeg_scans;

static void jpeg_count_scans(j_common_ptr c)
{
    const jpeg_scans *p = (const jpeg_scans *)c->progress;
    const struct jpeg_decompress_struct *d = (const struct jpeg_decompress_struct *)c;
    if (c->is_decompressor && p->max_scans > 0 && d->input_scan_number > p->max_scans) {
        jpeg_err *e = (jpeg_err *)c->err;
        snprintf(e->msg, sizeof e->msg, "more than %d scans", p->max_scans);
        longjmp(e->jb, 1);
    }
}

/* The smallest scale M/8 (M < 8) whose longest edge still covers min_edge, else 8/8. */
static void jpeg_pick_scale(struct jpeg_decompress_struct *c, int min_edge)
{
    c->scale_denom = 8;
    c->scale_num = 8;
    if (min_edge <= 0) return;
    unsigned long long longest =
        c->image_width > c->image_height ? c->image_width : c->image_height;
    for (unsigned m = 1; m < 8; m++) {
        /* libjpeg rounds scaled sizes up */
        if ((longest * m + 7) / 8 >= (unsigned long long)min_edge) {
            c->scale_num = m;
            return;
        }
    }
}

/* libjpeg reports errors by longjmp to the caller's setjmp (jpeg_fail) and stays quiet. */
static void jpeg_errors_to(struct jpeg_decompress_struct *cinfo, jpeg_err *jerr)
{
    cinfo->err = jpeg_std_error(&jerr->pub);
    jerr->pub.error_exit = jpeg_fail;
    jerr->pub.emit_message = jpeg_emit;
    jerr->pub.output_message = jpeg_quiet;
}

static int decode_jpeg(const uint8_t *data, size_t len, const img_limits *lim, img_rgb *out,
                       char *err, size_t errlen)
{
    struct jpeg_decompress_struct cinfo;
    jpeg_err jerr;
    jpeg_scans scans = {.pub.progress_monitor = jpeg_count_scans,
                        .max_scans = lim ? lim->max_scans : 0};
    uint8_t *volatile pix = NULL;
    jpeg_errors_to(&cinfo, &jerr);
    if (setjmp(jerr.jb)) {
        eng_seterr(err, errlen, "bad JPEG: %s", jerr.msg);
        jpeg_destroy_decompress(&cinfo);
        free(pix);
        return -1;
    }
    jpeg_create_decompress(&cinfo);
    cinfo.progress = &scans.pub;
    jpeg_mem_src(&cinfo, data, (unsigned long)len);
    jpeg_read_header(&cinfo, TRUE);
    if (check_dims(cinfo.image_width, cinfo.image_height, lim, "JPEG", err, errlen) != 0) {
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
        eng_seterr(err, errlen, "CMYK JPEG images are not supported");
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    cinfo.out_color_space = JCS_RGB;
    jpeg_pick_scale(&cinfo, lim ? lim->min_edge : 0);
    jpeg_start_decompress(&cinfo);
    size_t w = cinfo.output_width, h = cinfo.output_height;
    pix = malloc(w * h * 3);
    if (!pix) {
        eng_seterr(err, errlen, "out of memory for a %zux%zu image", w, h);
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = pix + (size_t)cinfo.output_scanline * w * 3;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    out->w = (int)w;
    out->h = (int)h;
    out->rgb = pix;
    return 0;
}

static int probe_jpeg(const uint8_t *data, size_t len, const img_limits *lim, int *w, int *h,
                      char *err, size_t errlen)
{
    struct jpeg_decompress_struct cinfo;
    jpeg_err jerr;
    jpeg_errors_to(&cinfo, &jerr);
    if (setjmp(jerr.jb)) {
        eng_seterr(err, errlen, "bad JPEG: %s", jerr.msg);
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)len);
    jpeg_read_header(&cinfo, TRUE);
    int rc = check_dims(cinfo.image_width, cinfo.image_height, lim, "JPEG", err, errlen);
    if (rc == 0 && (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK))
        rc = eng_seterr(err, errlen, "CMYK JPEG images are not supported");
    *w = (int)cinfo.image_width;
    *h = (int)cinfo.image_height;
    jpeg_destroy_decompress(&cinfo);
    return rc;
}

static unsigned rd16(const uint8_t *p, bool le)
{
    return le ? (unsigned)(p[0] | p[1] << 8) : (unsigned)(p[0] << 8 | p[1]);
}

static uint32_t rd32(const uint8_t *p, bool le)
{
    return le ? (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24
              : (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Orientation tag (0x0112) of IFD0 in a TIFF block. */
static int tiff_orientation(const uint8_t *t, size_t n)
{
    if (n < 8) return 1;
    bool le;
    if (t[0] == 'I' && t[1] == 'I')
        le = true;
    else if (t[0] == 'M' && t[1] == 'M')
        le = false;
    else
        return 1;
    if (rd16(t + 2, le) != 42) return 1;
    uint32_t ifd = rd32(t + 4, le);
    if (ifd > n || n - ifd < 2) return 1;
    unsigned count = rd16(t + ifd, le);
    for (unsigned i = 0; i < count; i++) {
        size_t e = (size_t)ifd + 2 + 12 * (size_t)i;
        if (e + 12 > n) return 1;
        if (rd16(t + e, le) == 0x0112 && rd16(t + e + 2, le) == 3 && rd32(t + e + 4, le) >= 1) {
            unsigned v = rd16(t + e + 8, le);
            return v >= 1 && v <= 8 ? (int)v : 1;
        }
    }
    return 1;
}

int img_jpeg_orientation(const void *data, size_t len)
{
    const uint8_t *d = data;
    if (len < 4 || d[0] != 0xFF || d[1] != 0xD8) return 1;
    size_t i = 2;
    while (i + 4 <= len) {
        if (d[i] != 0xFF) return 1;
        uint8_t m = d[i + 1];
        if (m == 0xFF) { /* fill byte */
            i++;
            continue;
        }
        if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) {
            i += 2;
            continue;
        }
        if (m == 0xDA || m == 0xD9) /* image data starts: no EXIF before it */
            return 1;
        size_t seg = rd16(d + i + 2, false);
        if (seg < 2 || i + 2 + seg > len) return 1;
        if (m == 0xE1 && seg >= 8 + 6 && !memcmp(d + i + 4, "Exif\0\0", 6))
            return tiff_orientation(d + i + 10, seg - 8);
        i += 2 + seg;
    }
    return 1;
}

/* Applies an EXIF orientation in place (rotating swaps w and h). */
static int img_orient(img_rgb *im, int o)
{
    if (o <= 1 || o > 8) return 0;
    int W = im->w, H = im->h;
    bool swap = o >= 5;
    int ow = swap ? H : W, oh = swap ? W : H;
    uint8_t *dst = malloc((size_t)W * (size_t)H * 3);
    if (!dst) return -1;
    for (int y = 0; y < oh; y++)
        for (int x = 0; x < ow; x++) {
            int sx, sy; /* the source pixel that lands on (x, y) */
            switch (o) {
            case 2: sx = W - 1 - x, sy = y; break;         /* mirror left-right */
            case 3: sx = W - 1 - x, sy = H - 1 - y; break; /* rotate 180 */
            case 4: sx = x, sy = H - 1 - y; break;         /* mirror top-bottom */
            case 5: sx = y, sy = x; break;                 /* transpose */
            case 6: sx = y, sy = H - 1 - x; break;         /* rotate 90 clockwise */
            case 7: sx = W - 1 - y, sy = H - 1 - x; break; /* transverse */
            default: sx = W - 1 - y, sy = x; break;        /* 8: rotate 90 counter-clockwise */
            }
            memcpy(dst + ((size_t)y * ow + x) * 3, im->rgb + ((size_t)sy * W + sx) * 3, 3);
        }
    free(im->rgb);
    im->rgb = dst;
    im->w = ow;
    im->h = oh;
    return 0;
}

/* ---- PNG ---- */

/* Pillow's Image.alpha_composite of a pixel over opaque white, in its
 * fixed-point arithmetic, so results match Idefics3's convert_to_rgb. */
static uint8_t over_white(unsigned c, unsigned a)
{
    if (a == 0) return 255;
    unsigned blend = 255 * (255 - a);
    unsigned outa255 = a * 255 + blend;
    unsigned coef1 = a * 255 * 255 * (1u << 7) / outa255;
    unsigned coef2 = 255 * (1u << 7) - coef1;
    unsigned tmp = c * coef1 + 255 * coef2 + (0x80u << 7);
    return (uint8_t)((((tmp >> 8) + tmp) >> 8) >> 7);
}

static int decode_png(const uint8_t *data, size_t len, const img_limits *lim, img_rgb *out,
                      char *err, size_t errlen)
{
    spng_ctx *ctx = spng_ctx_new(0);
    uint8_t *rgba = NULL;
    int rc = -1, e;
    if (!ctx) {
        eng_seterr(err, errlen, "out of memory");
        return -1;
    }
    spng_set_image_limits(ctx, 65535, 65535);
    /* bounds what ancillary chunks may allocate */
    spng_set_chunk_limits(ctx, 1u << 24, 1u << 26);
    struct spng_ihdr ihdr;
    if ((e = spng_set_png_buffer(ctx, data, len)) != 0 || (e = spng_get_ihdr(ctx, &ihdr)) != 0) {
        eng_seterr(err, errlen, "bad PNG: %s", spng_strerror(e));
        goto out;
    }
    if (check_dims(ihdr.width, ihdr.height, lim, "PNG", err, errlen) != 0) goto out;
    /* Without alpha the pixels go straight to RGB: no RGBA copy of the picture, whose 4 bytes
     * a pixel would outweigh the decoded image itself. */
    struct spng_trns trns;
    int alpha = ihdr.color_type == SPNG_COLOR_TYPE_GRAYSCALE_ALPHA ||
                ihdr.color_type == SPNG_COLOR_TYPE_TRUECOLOR_ALPHA ||
                spng_get_trns(ctx, &trns) == 0;
    int fmt = alpha ? SPNG_FMT_RGBA8 : SPNG_FMT_RGB8;
    size_t size, n = (size_t)ihdr.width * ihdr.height;
    if ((e = spng_decoded_image_size(ctx, fmt, &size)) != 0) {
        eng_seterr(err, errlen, "bad PNG: %s", spng_strerror(e));
        goto out;
    }
    uint8_t *buf = malloc(size);
    if (!buf) {
        eng_seterr(err, errlen, "out of memory for a %ux%u image", ihdr.width, ihdr.height);
        goto out;
    }
    if (alpha)
        rgba = buf;
    else
        out->rgb = buf;
    if ((e = spng_decode_image(ctx, buf, size, fmt, alpha ? SPNG_DECODE_TRNS : 0)) != 0) {
        eng_seterr(err, errlen, "bad PNG: %s", spng_strerror(e));
        goto out;
    }
    if (alpha) {
        out->rgb = malloc(n * 3);
        if (!out->rgb) {
            eng_seterr(err, errlen, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < n; i++) {
            unsigned a = rgba[4 * i + 3];
            for (int c = 0; c < 3; c++)
                out->rgb[3 * i + c] = a == 255 ? rgba[4 * i + c] : over_white(rgba[4 * i + c], a);
        }
    }
    out->w = (int)ihdr.width;
    out->h = (int)ihdr.height;
    rc = 0;
out:
    if (rc != 0) {
        free(out->rgb);
        out->rgb = NULL;
    }
    free(rgba);
    spng_ctx_free(ctx);
    return rc;
}

int img_decode(const void *data, size_t len, const img_limits *lim, img_rgb *out, char *err,
               size_t errlen)
{
    const uint8_t *d = data;
    out->w = out->h = 0;
    out->rgb = NULL;
    if (lim && lim->max_bytes && len > lim->max_bytes) {
        eng_seterr(err, errlen, "image of %zu bytes exceeds the limit of %zu bytes", len,
                   lim->max_bytes);
        return -1;
    }
    if (len >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) {
        if (decode_jpeg(d, len, lim, out, err, errlen) != 0) return -1;
        if (img_orient(out, img_jpeg_orientation(d, len)) != 0) {
            img_free(out);
            eng_seterr(err, errlen, "out of memory");
            return -1;
        }
        return 0;
    }
    if (len >= 8 && !memcmp(d, "\x89PNG\r\n\x1a\n", 8))
        return decode_png(d, len, lim, out, err, errlen);
    eng_seterr(err, errlen, "not a JPEG or PNG image");
    return -1;
}

static int probe_png(const uint8_t *data, size_t len, const img_limits *lim, int *w, int *h,
                     char *err, size_t errlen)
{
    spng_ctx *ctx = spng_ctx_new(0);
    if (!ctx) return eng_seterr(err, errlen, "out of memory");
    spng_set_image_limits(ctx, 65535, 65535);
    spng_set_chunk_limits(ctx, 1u << 24, 1u << 26);
    struct spng_ihdr ihdr;
    int e, rc = -1;
    if ((e = spng_set_png_buffer(ctx, data, len)) != 0 || (e = spng_get_ihdr(ctx, &ihdr)) != 0)
        eng_seterr(err, errlen, "bad PNG: %s", spng_strerror(e));
    else if (check_dims(ihdr.width, ihdr.height, lim, "PNG", err, errlen) == 0) {
        *w = (int)ihdr.width;
        *h = (int)ihdr.height;
        rc = 0;
    }
    spng_ctx_free(ctx);
    return rc;
}

int img_probe(const void *data, size_t len, const img_limits *lim, int *w, int *h, char *err,
              size_t errlen)
{
    const uint8_t *d = data;
    *w = *h = 0;
    if (lim && lim->max_bytes && len > lim->max_bytes)
        return eng_seterr(err, errlen, "image of %zu bytes exceeds the limit of %zu bytes", len,
                          lim->max_bytes);
    if (len >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF)
        return probe_jpeg(d, len, lim, w, h, err, errlen);
    if (len >= 8 && !memcmp(d, "\x89PNG\r\n\x1a\n", 8))
        return probe_png(d, len, lim, w, h, err, errlen);
    return eng_seterr(err, errlen, "not a JPEG or PNG image");
}

/* ---- Pillow's resampling ---- */

/* Pillow keeps 8-bit results in ints with 22 fraction bits (two spare bits
 * for the filter's overshoot). */
#define PREC 22

static double sinc(double x)
{
    if (x == 0.0) return 1.0;
    x *= M_PI;
    return sin(x) / x;
}

static double lanczos3(double x)
{
    return (x >= -3.0 && x < 3.0) ? sinc(x) * sinc(x / 3.0) : 0.0;
}

/* Pillow's bicubic: Keys' cubic convolution with a = -0.5, support 2. */
static double bicubic(double x)
{
    const double a = -0.5;
    x = fabs(x);
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
    return 0.0;
}

static const struct {
    double (*fn)(double);
    double support;
} filters[] = {[IMG_LANCZOS] = {lanczos3, 3.0}, [IMG_BICUBIC] = {bicubic, 2.0}};

typedef struct {
    int ksize;
    int *bounds; /* per output pixel: first input index, count */
    int32_t *k;  /* per output pixel: ksize fixed-point weights */
} coeffs;

/* Weights of each output pixel over the input, the way Pillow's
 * precompute_coeffs + normalize_coeffs_8bpc compute them: the kernel is
 * widened by the downscale factor (antialiasing), normalised to sum 1 in
 * doubles, then rounded half away from zero to fixed point. */
static int precompute(int in_size, int out_size, img_filter f, coeffs *c)
{
    double scale = (double)in_size / out_size, filterscale = scale < 1.0 ? 1.0 : scale;
    double support = filters[f].support * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    double *kd = malloc((size_t)ksize * sizeof *kd);
    c->ksize = ksize;
    c->bounds = malloc((size_t)out_size * 2 * sizeof *c->bounds);
    c->k = calloc((size_t)out_size * (size_t)ksize, sizeof *c->k);
    if (!kd || !c->bounds || !c->k) {
        free(kd);
        return -1;
    }
    for (int xx = 0; xx < out_size; xx++) {
        double center = (xx + 0.5) * scale, ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        if (xmin < 0) xmin = 0;
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        for (int x = 0; x < xmax; x++) {
            kd[x] = filters[f].fn((x + xmin - center + 0.5) * ss);
            ww += kd[x];
        }
        for (int x = 0; x < xmax; x++) {
            double w = ww != 0.0 ? kd[x] / ww : kd[x];
            c->k[(size_t)xx * ksize + x] =
                (int32_t)(w < 0 ? -0.5 + w * (1 << PREC) : 0.5 + w * (1 << PREC));
        }
        c->bounds[2 * xx] = xmin;
        c->bounds[2 * xx + 1] = xmax;
    }
    free(kd);
    return 0;
}

static void coeffs_free(coeffs *c)
{
    free(c->bounds);
    free(c->k);
}

static uint8_t clip8(int32_t v)
{
    v >>= PREC; /* arithmetic shift: floor, as in Pillow */
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* Rows [y0, y0 + rows) of src, resampled horizontally to dst (w_out wide). */
static void pass_h(const uint8_t *src, int w_in, int y0, int rows, uint8_t *dst, int w_out,
                   const coeffs *c)
{
    for (int y = 0; y < rows; y++) {
        const uint8_t *s = src + (size_t)(y0 + y) * w_in * 3;
        uint8_t *d = dst + (size_t)y * w_out * 3;
        for (int xx = 0; xx < w_out; xx++) {
            int xmin = c->bounds[2 * xx], n = c->bounds[2 * xx + 1];
            const int32_t *k = c->k + (size_t)xx * c->ksize;
            int32_t s0 = 1 << (PREC - 1), s1 = s0, s2 = s0;
            for (int x = 0; x < n; x++) {
                const uint8_t *p = s + (size_t)(x + xmin) * 3;
                s0 += p[0] * k[x];
                s1 += p[1] * k[x];
                s2 += p[2] * k[x];
            }
            d[3 * xx] = clip8(s0);
            d[3 * xx + 1] = clip8(s1);
            d[3 * xx + 2] = clip8(s2);
        }
    }
}

/* Rows of the output from rows of src. The taps run over whole rows into an
 * int32 accumulator row (integer sums: same result in any order as
 * Pillow's column-by-column loop, but reading memory in sequence). */
static void pass_v(const uint8_t *src, int w, uint8_t *dst, int h_out, const coeffs *c, int shift,
                   int32_t *acc)
{
    size_t row = (size_t)w * 3;
    for (int yy = 0; yy < h_out; yy++) {
        int ymin = c->bounds[2 * yy] - shift, n = c->bounds[2 * yy + 1];
        const int32_t *k = c->k + (size_t)yy * c->ksize;
        for (size_t x = 0; x < row; x++)
            acc[x] = 1 << (PREC - 1);
        for (int y = 0; y < n; y++) {
            const uint8_t *s = src + (size_t)(y + ymin) * row;
            int32_t ky = k[y];
            for (size_t x = 0; x < row; x++)
                acc[x] += s[x] * ky;
        }
        uint8_t *d = dst + (size_t)yy * row;
        for (size_t x = 0; x < row; x++)
            d[x] = clip8(acc[x]);
    }
}

int img_resize(const img_rgb *src, int w, int h, img_rgb *dst)
{
    return img_resize_filter(src, w, h, IMG_LANCZOS, dst);
}

int img_resize_filter(const img_rgb *src, int w, int h, img_filter filter, img_rgb *dst)
{
    dst->w = dst->h = 0;
    dst->rgb = NULL;
    if (w <= 0 || h <= 0 || src->w <= 0 || src->h <= 0) return -1;
    size_t out_bytes = (size_t)w * h * 3;
    if (w == src->w && h == src->h) { /* Pillow returns a copy */
        dst->rgb = malloc(out_bytes);
        if (!dst->rgb) return -1;
        memcpy(dst->rgb, src->rgb, out_bytes);
        dst->w = w, dst->h = h;
        return 0;
    }
    coeffs ch = {0}, cv = {0};
    uint8_t *tmp = NULL, *out = malloc(out_bytes);
    int32_t *acc = malloc((size_t)w * 3 * sizeof *acc);
    int rc = -1;
    if ((unsigned)filter >= sizeof filters / sizeof filters[0] || !out || !acc ||
        precompute(src->w, w, filter, &ch) != 0 || precompute(src->h, h, filter, &cv) != 0)
        goto done;
    /* horizontal first, over only the rows the vertical pass will read */
    const uint8_t *mid = src->rgb;
    int shift = 0;
    if (w != src->w) {
        int first = cv.bounds[0], last = cv.bounds[2 * h - 2] + cv.bounds[2 * h - 1];
        tmp = malloc((size_t)w * (size_t)(last - first) * 3);
        if (!tmp) goto done;
        pass_h(src->rgb, src->w, first, last - first, tmp, w, &ch);
        mid = tmp;
        shift = first;
    }
    if (h != src->h)
        pass_v(mid, w, out, h, &cv, shift, acc);
    else
        memcpy(out, mid, out_bytes);
    dst->rgb = out;
    dst->w = w, dst->h = h;
    out = NULL;
    rc = 0;
done:
    free(out);
    free(tmp);
    free(acc);
    coeffs_free(&ch);
    coeffs_free(&cv);
    return rc;
}

/* ---- the Idefics3 processor ---- */

/* transformers' get_resize_output_image_size for Idefics3: longest edge to
 * `longest`, the other by the aspect ratio, truncated then made even; then
 * kept under 4096. Python's float arithmetic is reproduced in doubles. */
static void longest_edge_size(int h0, int w0, int longest, int *h, int *w)
{
    double aspect = (double)w0 / (double)h0;
    int H, W;
    if (w0 >= h0) {
        W = longest;
        H = (int)(W / aspect);
        if (H % 2 != 0) H++;
    } else {
        H = longest;
        W = (int)(H * aspect);
        if (W % 2 != 0) W++;
    }
    H = H < 1 ? 1 : H;
    W = W < 1 ? 1 : W;
    aspect = (double)W / (double)H;
    if (W >= H && W > 4096) {
        W = 4096;
        H = (int)(W / aspect);
    } else if (H > W && H > 4096) {
        H = 4096;
        W = (int)(H * aspect);
    }
    *h = H < 1 ? 1 : H;
    *w = W < 1 ? 1 : W;
}

static int ceil_to(int v, int m)
{
    return (v + m - 1) / m * m;
}

/* resize_for_vision_encoder: both sides up to multiples of the tile. */
static void tile_multiple_size(int h0, int w0, int tile, int *h, int *w)
{
    double aspect = (double)w0 / (double)h0;
    if (w0 >= h0) {
        *w = ceil_to(w0, tile);
        *h = ceil_to((int)(*w / aspect), tile);
    } else {
        *h = ceil_to(h0, tile);
        *w = ceil_to((int)(*h * aspect), tile);
    }
    if (*h < tile) *h = tile;
    if (*w < tile) *w = tile;
}

static int crop(const img_rgb *src, int x0, int y0, int w, int h, img_rgb *dst)
{
    dst->rgb = malloc((size_t)w * h * 3);
    if (!dst->rgb) return -1;
    for (int y = 0; y < h; y++)
        memcpy(dst->rgb + (size_t)y * w * 3, src->rgb + ((size_t)(y0 + y) * src->w + x0) * 3,
               (size_t)w * 3);
    dst->w = w, dst->h = h;
    return 0;
}

int img_preprocess_u8(const img_rgb *im, const img_proc_cfg *cfg, img_rgb **tiles_out, int *n_out,
                      int *rows_out, int *cols_out, char *err, size_t errlen)
{
    *tiles_out = NULL;
    *n_out = *rows_out = *cols_out = 0;
    int T = cfg->tile;
    if (T <= 0 || cfg->longest_edge <= 0 || im->w <= 0 || im->h <= 0) {
        eng_seterr(err, errlen, "image processor: bad settings (tile %d, longest edge %d)", T,
                   cfg->longest_edge);
        return -1;
    }
    img_rgb a = {0}, b = {0};
    img_rgb *tiles = NULL;
    int n = 0, rows = 0, cols = 0;
    int h, w;
    if (cfg->squash) {
        tiles = calloc(1, sizeof *tiles);
        if (!tiles || img_resize_filter(im, T, T, cfg->filter, &tiles[0]) != 0) goto oom;
        *tiles_out = tiles;
        *n_out = 1;
        return 0;
    }
    longest_edge_size(im->h, im->w, cfg->longest_edge, &h, &w);
    if (img_resize(im, w, h, &a) != 0) goto oom;
    if (!cfg->split) {
        tiles = calloc(1, sizeof *tiles);
        if (!tiles || img_resize(&a, T, T, &tiles[0]) != 0) goto oom;
        n = 1;
    } else {
        tile_multiple_size(a.h, a.w, T, &h, &w);
        if (img_resize(&a, w, h, &b) != 0) goto oom;
        if (b.h > T || b.w > T) {
            rows = (b.h + T - 1) / T;
            cols = (b.w + T - 1) / T;
        }
        tiles = calloc((size_t)rows * cols + 1, sizeof *tiles);
        if (!tiles) goto oom;
        /* sides are multiples of T, so every crop is exactly T x T */
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++, n++)
                if (crop(&b, c * T, r * T, T, T, &tiles[n]) != 0) goto oom;
        if (img_resize(&b, T, T, &tiles[n]) != 0) goto oom;
        n++;
    }
    img_free(&a);
    img_free(&b);
    *tiles_out = tiles;
    *n_out = n;
    *rows_out = rows;
    *cols_out = cols;
    return 0;
oom:
    img_free(&a);
    img_free(&b);
    for (int i = 0; tiles && i <= n; i++)
        img_free(&tiles[i]);
    free(tiles);
    eng_seterr(err, errlen, "out of memory preprocessing a %dx%d image", im->w, im->h);
    return -1;
}

static bool get_floats3(const gguf_file *f, const char *key, float *out)
{
    int k = gguf_find_key(f, key);
    if (k < 0 || gguf_kv_type(f, k) != GGUF_ARRAY || gguf_arr_type(f, k) != GGUF_FLOAT32 ||
        gguf_arr_len(f, k) != 3)
        return false;
    memcpy(out, gguf_arr_data(f, k), 3 * sizeof *out);
    return true;
}

int img_proc_cfg_from_gguf(const gguf_file *f, img_proc_cfg *cfg, char *err, size_t errlen)
{
    uint64_t tile = 0, longest = 0;
    if (!gguf_get_u64(f, "clip.vision.image_size", &tile) || tile == 0 || tile > 65535) {
        eng_seterr(err, errlen, "%s: clip.vision.image_size is missing or out of range",
                   gguf_path(f));
        return -1;
    }
    if (!gguf_get_u64(f, "clip.vision.preproc_image_size", &longest) || longest == 0 ||
        longest > 65535)
        longest = tile;
    *cfg = (img_proc_cfg){.longest_edge = (int)longest,
                          .tile = (int)tile,
                          .split = false,
                          .rescale = 1.0 / 255.0,
                          .mean = {0.5f, 0.5f, 0.5f},
                          .std = {0.5f, 0.5f, 0.5f}};
    const char *pt = gguf_get_str(f, "clip.projector_type");
    if (pt && strcmp(pt, "mlp") == 0) { /* moondream2: Resize((S, S), BICUBIC) */
        cfg->squash = true;
        cfg->filter = IMG_BICUBIC;
    }
    get_floats3(f, "clip.vision.image_mean", cfg->mean);
    if (get_floats3(f, "clip.vision.image_std", cfg->std))
        for (int c = 0; c < 3; c++)
            if (!(cfg->std[c] > 0)) {
                eng_seterr(err, errlen, "%s: clip.vision.image_std has a value <= 0", gguf_path(f));
                return -1;
            }
    return 0;
}

int img_preprocess(const img_rgb *im, const img_proc_cfg *cfg, img_tiles *out, char *err,
                   size_t errlen)
{
    memset(out, 0, sizeof *out);
    img_rgb *tiles;
    int n, rows, cols;
    if (img_preprocess_u8(im, cfg, &tiles, &n, &rows, &cols, err, errlen) != 0) return -1;
    int T = cfg->tile;
    size_t plane = (size_t)T * T;
    out->pixels = malloc((size_t)n * 3 * plane * sizeof *out->pixels);
    if (out->pixels) {
        /* rescale in double then store as float (numpy's rescale), normalise
         * in float (numpy on float32 arrays); only 256 inputs per channel */
        float lut[3][256];
        for (int c = 0; c < 3; c++)
            for (int v = 0; v < 256; v++) {
                float x = (float)((double)v * cfg->rescale);
                lut[c][v] = (x - cfg->mean[c]) / cfg->std[c];
            }
        for (int t = 0; t < n; t++)
            for (int c = 0; c < 3; c++) {
                float *dst = out->pixels + ((size_t)t * 3 + c) * plane;
                const uint8_t *src = tiles[t].rgb + c;
                for (size_t p = 0; p < plane; p++)
                    dst[p] = lut[c][src[3 * p]];
            }
        out->rows = rows, out->cols = cols, out->n = n, out->tile = T;
    }
    for (int t = 0; t < n; t++)
        img_free(&tiles[t]);
    free(tiles);
    if (!out->pixels) {
        eng_seterr(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

void img_tiles_free(img_tiles *t)
{
    if (!t) return;
    free(t->pixels);
    memset(t, 0, sizeof *t);
}
