/* Uploaded images: checked and decoded (by the engine's decoder) on the HTTP thread, so a
 * broken or oversized picture is refused with a status before the request is queued. */
#ifndef TERN_SERVER_UPLOAD_H
#define TERN_SERVER_UPLOAD_H

#include <stddef.h>

#include "job.h"

/* Returns 0, or an HTTP status (413 too many bytes, 415 not JPEG/PNG, 422 corrupt, truncated
 * or too many pixels, 500 out of memory) with err filled. Free out with img_free. */
int upload_image_decode(const unsigned char *data, size_t len, long max_bytes, long max_pixels,
                        img_rgb *out, char *err, size_t errlen);

#endif
