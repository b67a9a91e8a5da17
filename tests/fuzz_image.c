/* libFuzzer target: JPEG/PNG decoding and the Idefics3 preprocessing of
 * whatever decodes. Bad input must give an error, never a crash or leak. */
#include <stddef.h>
#include <stdint.h>

#include "engine/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    img_limits lim = {.max_bytes = 1 << 20, .max_pixels = 1 << 20};
    img_rgb im;
    char err[256];
    if (img_decode(data, size, &lim, &im, err, sizeof err) != 0) return 0;
    img_proc_cfg cfg = {.longest_edge = 48,
                        .tile = 16,
                        .split = true,
                        .rescale = 1.0 / 255.0,
                        .mean = {0.5f, 0.5f, 0.5f},
                        .std = {0.5f, 0.5f, 0.5f}};
    img_tiles t;
    if (img_preprocess(&im, &cfg, &t, err, sizeof err) == 0) img_tiles_free(&t);
    img_free(&im);
    return 0;
}
