/* Decoding uploaded images (JPEG, PNG) to RGB on the HTTP thread, so a broken or oversized
 * picture is refused with a status before the request is queued. */
#ifndef TERN_SERVER_IMG_H
#define TERN_SERVER_IMG_H

#include <stddef.h>

#include "job.h"

/* Returns 0, or an HTTP status (413 too many bytes, 415 not JPEG/PNG, 422 corrupt or too many
 * pixels) with err filled. out->rgb is malloc'd. */
int img_decode(const unsigned char *data, size_t len, long max_bytes, long max_pixels,
               struct job_image *out, char *err, size_t errlen);

#endif
