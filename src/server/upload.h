/* Uploaded images. On the HTTP thread only the header is read (upload_image_check): a broken,
 * oversized or unknown picture is refused with a status before the request is queued, and the
 * job keeps the compressed bytes. The pixels are decoded after admission (upload_decoder),
 * one picture of a job at a time, under a budget of concurrent decodes and decoded bytes, and
 * freed as soon as the picture is encoded (upload_feed_put). docs/architecture.md §2. */
#ifndef TERN_SERVER_UPLOAD_H
#define TERN_SERVER_UPLOAD_H

#include <stddef.h>

#include "engine/image.h"
#include "job.h"

/* Returns 0, or an HTTP status (413 too many bytes, 415 not JPEG/PNG, 422 corrupt header or
 * too many pixels, 500 out of memory) with err filled. On 0, *out owns a copy of the bytes and
 * the header's size. */
int upload_image_check(const unsigned char *data, size_t len, long max_bytes, long max_pixels,
                       struct job_image *out, char *err, size_t errlen);

/* The decoder: `threads` (config decode_concurrency) threads decode pictures after admission,
 * `max_scans` per JPEG at most (jpeg_max_scans). Each admitted job reads its pictures through
 * a feed, in order, one at a time: the decoder works on a job's picture i+1 only after picture
 * i is given back, so a job holds at most one decoded picture (decoding, waiting, or being
 * encoded); the threads decode different jobs' pictures at once. The pixels alive are thus at
 * most slots + threads pictures (a feed ended while its picture decodes frees it after).
 * While the pictures held and decoding would pass `max_bytes` (decode_max_bytes), a decode
 * waits until no other runs, never for held pictures: their readers may be waiting for it. */
struct upload_decoder;

struct upload_decoder *upload_decoder_create(int threads, long max_bytes, int max_scans, char *err,
                                             size_t errlen);
/* After every feed has ended. */
void upload_decoder_destroy(struct upload_decoder *d);

struct upload_feed;

/* Starts decoding j's pictures (JPEGs at the smallest DCT scale whose longest edge is still >=
 * min_edge; 0 = full size); the feed keeps a reference to j. notify(arg), if given, is called
 * (from a decoder thread) each time a picture is ready. With d NULL pictures are decoded by the
 * caller of upload_feed_get, without a budget (unit tests). NULL when out of memory. */
struct upload_feed *upload_feed_start(struct upload_decoder *d, struct job *j, int min_edge,
                                      void (*notify)(void *), void *arg);
/* Picture i (i = 0, 1, ... in order, each given back before the next is asked for) into *out.
 * Returns 0 (then upload_feed_put), 1 when it is not decoded yet and wait is 0, or -1 with
 * err: the picture could not be decoded (a client error, 422). */
int upload_feed_get(struct upload_feed *f, int i, int wait, img_rgb *out, char *err, size_t errlen);
/* Gives back the picture upload_feed_get lent (freed; the decoder may start the next). */
void upload_feed_put(struct upload_feed *f, img_rgb *im);
/* Ends the feed (NULL: nothing): a picture waiting or being decoded is dropped. */
void upload_feed_end(struct upload_feed *f);

/* Decoded bytes a job's pictures may take at most (3 per header pixel). */
size_t upload_job_bytes(const struct job *j);

#endif
