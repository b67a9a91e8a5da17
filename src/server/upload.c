/* The status codes are decided here; the decoding itself is the engine's (EXIF orientation,
 * alpha over white: what the model was trained on). */
#include "upload.h"

#include <stdio.h>
#include <string.h>

#include "engine/image.h"

int upload_image_decode(const unsigned char *data, size_t len, long max_bytes, long max_pixels,
                        img_rgb *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if ((long)len > max_bytes) {
        snprintf(err, errlen, "image: %zu bytes exceeds the limit of %ld bytes", len, max_bytes);
        return 413;
    }
    static const unsigned char png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    int jpeg = len >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF;
    if (!jpeg && !(len >= 8 && memcmp(data, png_sig, 8) == 0)) {
        snprintf(err, errlen, "image: not a JPEG or PNG file");
        return 415;
    }
    img_limits lim = {(size_t)max_bytes, (uint64_t)max_pixels};
    char msg[256];
    if (img_decode(data, len, &lim, out, msg, sizeof msg) != 0) {
        snprintf(err, errlen, "image: %s: %s", jpeg ? "JPEG" : "PNG", msg);
        return 422;
    }
    return 0;
}
