/* Images in: JPEG/PNG bytes -> RGB8 -> the Idefics3 image processor's
 * float tiles.
 *
 * Decoding checks the byte and pixel limits from the header, before any
 * pixel is decoded; a corrupt or truncated file is an error with a message,
 * never a crash or a half image. JPEG EXIF orientation is applied and alpha
 * is composited over white, as transformers' load_image + Idefics3's
 * convert_to_rgb do. Resizing reproduces Pillow's LANCZOS (the processor's
 * resample=1) bit for bit. */
#ifndef TERN_ENGINE_IMAGE_H
#define TERN_ENGINE_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/gguf.h"

typedef struct {
    int w, h;
    uint8_t *rgb; /* w * h * 3 bytes, row-major; owned, free with img_free */
} img_rgb;

typedef struct {
    size_t max_bytes;    /* encoded size; 0 = no limit */
    uint64_t max_pixels; /* w * h; 0 = no limit */
    int max_scans;       /* JPEG scans (a progressive file has one per pass); 0 = no limit */
    int min_edge;        /* > 0: a JPEG may be decoded at the smallest DCT scale (M/8) whose
                            longest edge is still >= min_edge (pixels then differ slightly from
                            a full decode resized down); 0 = always full size */
} img_limits;

/* JPEG or PNG (told apart by their signatures). */
int img_decode(const void *data, size_t len, const img_limits *lim, img_rgb *out, char *err,
               size_t errlen);

/* The header only, no pixels: the signature, the size in the header against lim (bytes,
 * pixels). Fills *w, *h (before EXIF orientation). Cheap: what a server checks before it
 * queues a picture it decodes later. */
int img_probe(const void *data, size_t len, const img_limits *lim, int *w, int *h, char *err,
              size_t errlen);
void img_free(img_rgb *im);

/* EXIF orientation (1..8) of a JPEG's APP1 segment, 1 when there is none. */
int img_jpeg_orientation(const void *data, size_t len);

/* Pillow's resampling filters. */
typedef enum { IMG_LANCZOS, IMG_BICUBIC } img_filter;

/* Pillow's Image.resize(..., LANCZOS) on RGB8, exactly. */
int img_resize(const img_rgb *src, int w, int h, img_rgb *dst);
/* The same with another of Pillow's filters. */
int img_resize_filter(const img_rgb *src, int w, int h, img_filter filter, img_rgb *dst);

/* The image processor's settings (preprocessor_config.json, or the
 * mmproj's clip.vision.* keys): Idefics3's, or moondream2's (squash). */
typedef struct {
    int longest_edge;  /* size.longest_edge: first resize, aspect kept */
    int tile;          /* max_image_size.longest_edge = the encoder's image_size */
    bool split;        /* do_image_splitting */
    bool squash;       /* instead: one resize of the whole picture to tile x tile with `filter`
                          (moondream2's Resize((378, 378), BICUBIC)) */
    img_filter filter; /* of the squash (Idefics3's resizes are Lanczos) */
    double rescale;    /* rescale_factor, 1/255 */
    float mean[3], std[3];
} img_proc_cfg;

/* The settings a mmproj GGUF records: tile = clip.vision.image_size,
 * longest_edge = clip.vision.preproc_image_size (else the tile),
 * mean/std = clip.vision.image_mean/std (else 0.5), rescale 1/255, no
 * splitting; with clip.projector_type "mlp" (moondream2) the squash, bicubic.
 * Fails naming the file when image_size is missing or bad. */
int img_proc_cfg_from_gguf(const gguf_file *f, img_proc_cfg *cfg, char *err, size_t errlen);

/* Tiles in the order the prompt lists them: rows x cols crops row by row,
 * then the global image (the only one when rows = cols = 0). */
typedef struct {
    int rows, cols;
    int n;         /* rows * cols + 1 */
    int tile;      /* side of every tile */
    float *pixels; /* n * 3 * tile * tile, each tile CHW */
} img_tiles;

int img_preprocess(const img_rgb *im, const img_proc_cfg *cfg, img_tiles *out, char *err,
                   size_t errlen);
void img_tiles_free(img_tiles *t);

/* The uint8 images img_preprocess normalises (same order), for tests and
 * tools; free each with img_free and the array with free(). */
int img_preprocess_u8(const img_rgb *im, const img_proc_cfg *cfg, img_rgb **tiles, int *n,
                      int *rows, int *cols, char *err, size_t errlen);

#endif
