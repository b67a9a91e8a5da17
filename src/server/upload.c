/* The status codes are decided here; the decoding itself is the engine's (EXIF orientation,
 * alpha over white: what the model was trained on). */
#include "upload.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/image.h"

int upload_image_check(const unsigned char *data, size_t len, long max_bytes, long max_pixels,
                       struct job_image *out, char *err, size_t errlen)
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
    img_limits lim = {.max_bytes = (size_t)max_bytes, .max_pixels = (uint64_t)max_pixels};
    char msg[256];
    int w, h;
    if (img_probe(data, len, &lim, &w, &h, msg, sizeof msg) != 0) {
        snprintf(err, errlen, "image: %s: %s", jpeg ? "JPEG" : "PNG", msg);
        return 422;
    }
    out->data = malloc(len ? len : 1);
    if (!out->data) {
        snprintf(err, errlen, "out of memory");
        return 500;
    }
    memcpy(out->data, data, len);
    out->len = len;
    out->w = w;
    out->h = h;
    return 0;
}

/* ---- the decode budget ---- */

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int max_decodes, active, max_scans;
    size_t max_bytes, bytes;
} budget = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, 0};

void upload_budget_init(int max_decodes, long max_bytes, int max_scans)
{
    pthread_mutex_lock(&budget.mu);
    budget.max_decodes = max_decodes;
    budget.max_bytes = max_bytes > 0 ? (size_t)max_bytes : 0;
    budget.max_scans = max_scans;
    pthread_mutex_unlock(&budget.mu);
}

size_t upload_job_bytes(const struct job *j)
{
    size_t n = 0;
    for (int i = 0; i < j->n_images; i++)
        n += (size_t)j->images[i].w * (size_t)j->images[i].h * 3;
    return n;
}

/* A job that alone exceeds max_bytes was refused at parse time; should one get here anyway
 * it waits until it is alone. */
static void budget_take(size_t bytes)
{
    pthread_mutex_lock(&budget.mu);
    while ((budget.max_decodes > 0 && budget.active >= budget.max_decodes) ||
           (budget.max_bytes && budget.active > 0 && budget.bytes + bytes > budget.max_bytes))
        pthread_cond_wait(&budget.cv, &budget.mu);
    budget.active++;
    budget.bytes += bytes;
    pthread_mutex_unlock(&budget.mu);
}

static void budget_give(size_t bytes)
{
    pthread_mutex_lock(&budget.mu);
    budget.active--;
    budget.bytes -= bytes;
    pthread_cond_broadcast(&budget.cv);
    pthread_mutex_unlock(&budget.mu);
}

int upload_decode(const struct job *j, int min_edge, img_rgb *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out * (size_t)j->n_images);
    if (j->n_images == 0) return 0;
    size_t bytes = upload_job_bytes(j);
    budget_take(bytes);
    pthread_mutex_lock(&budget.mu);
    img_limits lim = {.max_scans = budget.max_scans, .min_edge = min_edge};
    pthread_mutex_unlock(&budget.mu);
    for (int i = 0; i < j->n_images; i++) {
        const struct job_image *ji = &j->images[i];
        /* the header passed upload_image_check: its size bounds what the decode allocates */
        lim.max_pixels = (uint64_t)ji->w * (uint64_t)ji->h;
        char msg[256];
        if (img_decode(ji->data, ji->len, &lim, &out[i], msg, sizeof msg) != 0) {
            snprintf(err, errlen, "image %d: %s", i + 1, msg);
            upload_release(j, out);
            return -1;
        }
    }
    return 0;
}

void upload_release(const struct job *j, img_rgb *images)
{
    if (j->n_images == 0) return;
    for (int i = 0; i < j->n_images; i++)
        img_free(&images[i]);
    budget_give(upload_job_bytes(j));
}
