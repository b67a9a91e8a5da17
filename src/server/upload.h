/* Uploaded images. On the HTTP thread only the header is read (upload_image_check): a broken,
 * oversized or unknown picture is refused with a status before the request is queued, and the
 * job keeps the compressed bytes. The pixels are decoded after admission, by the backend
 * (upload_decode), under a process-wide budget of concurrent decodes and decoded bytes, and
 * freed as soon as the picture is encoded (upload_release). docs/architecture.md §2. */
#ifndef TERN_SERVER_UPLOAD_H
#define TERN_SERVER_UPLOAD_H

#include <stddef.h>

#include "job.h"

/* Returns 0, or an HTTP status (413 too many bytes, 415 not JPEG/PNG, 422 corrupt header or
 * too many pixels, 500 out of memory) with err filled. On 0, *out owns a copy of the bytes and
 * the header's size. */
int upload_image_check(const unsigned char *data, size_t len, long max_bytes, long max_pixels,
                       struct job_image *out, char *err, size_t errlen);

/* The decode budget (config: decode_concurrency, decode_max_bytes, jpeg_max_scans). Set once at
 * start-up, before any decode; until then decodes are unbounded (unit tests). */
void upload_budget_init(int max_decodes, long max_bytes, int max_scans);

/* Decodes the job's pictures into out[0..j->n_images) (JPEGs at the smallest DCT scale whose
 * longest edge is still >= min_edge; 0 = full size), waiting for the budget first. Returns 0
 * (then call upload_release), or -1 with err: the picture could not be decoded (a client error,
 * 422). */
int upload_decode(const struct job *j, int min_edge, img_rgb *out, char *err, size_t errlen);
/* Frees what upload_decode gave and returns its share of the budget. */
void upload_release(const struct job *j, img_rgb *images);

/* Decoded bytes a job's pictures may take at most (3 per header pixel). */
size_t upload_job_bytes(const struct job *j);

#endif
