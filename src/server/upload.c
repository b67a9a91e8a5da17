/* The status codes are decided here; the decoding itself is the engine's (EXIF orientation,
 * alpha over white: what the model was trained on). */
#include "upload.h"

#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

size_t upload_job_bytes(const struct job *j)
{
    size_t n = 0;
    for (int i = 0; i < j->n_images; i++)
        n += (size_t)j->images[i].w * (size_t)j->images[i].h * 3;
    return n;
}

/* ---- the decoder ---- */

/* A feed's picture: QUEUED in the decoder's list, DECODING on a thread, READY to be taken,
 * TAKEN by the reader, or IDLE (none: all read, or the reader has not given the last back). */
enum { FEED_IDLE, FEED_QUEUED, FEED_DECODING, FEED_READY, FEED_TAKEN };

struct upload_feed {
    struct upload_decoder *d;
    struct job *j;
    int min_edge;
    int idx; /* the picture queued, decoding, ready or taken */
    int state, abandoned;
    img_rgb pic;
    int rc;
    char err[256];
    void (*notify)(void *);
    void *notify_arg;
    struct upload_feed *next; /* in the decoder's list while QUEUED */
};

struct upload_decoder {
    pthread_mutex_t mu;
    pthread_cond_t work;  /* threads wait here for a queued feed */
    pthread_cond_t ready; /* readers wait here for their picture */
    pthread_cond_t room;  /* threads wait here for the byte budget */
    struct upload_feed *head, *tail;
    int stop, max_scans, n_threads, active;
    size_t max_bytes, bytes; /* pixels decoding, waiting and being encoded */
    pthread_t *threads;
};

static size_t pic_bytes(const struct upload_feed *f)
{
    const struct job_image *ji = &f->j->images[f->idx];
    return (size_t)ji->w * (size_t)ji->h * 3;
}

/* The decode itself, without d->mu. The header passed upload_image_check: its size bounds what
 * the decode allocates. */
static void decode_one(struct upload_feed *f, int max_scans)
{
    const struct job_image *ji = &f->j->images[f->idx];
    img_limits lim = {.max_scans = max_scans,
                      .min_edge = f->min_edge,
                      .max_pixels = (uint64_t)ji->w * (uint64_t)ji->h};
    char msg[200];
    f->rc = img_decode(ji->data, ji->len, &lim, &f->pic, msg, sizeof msg);
    if (f->rc != 0) snprintf(f->err, sizeof f->err, "image %d: %s", f->idx + 1, msg);
}

static void feed_free(struct upload_feed *f)
{
    img_free(&f->pic);
    job_unref(f->j);
    free(f);
}

/* Takes the byte budget (d->mu held). A picture larger than the whole budget was refused at
 * parse time; should one get here anyway, it waits only until no other decode runs. */
static void budget_take(struct upload_decoder *d, size_t bytes)
{
    while (d->max_bytes && d->active > 0 && d->bytes + bytes > d->max_bytes && !d->stop)
        pthread_cond_wait(&d->room, &d->mu);
    d->active++;
    d->bytes += bytes;
}

static void budget_give(struct upload_decoder *d, size_t bytes)
{
    assert(d->bytes >= bytes);
    d->bytes -= bytes;
    pthread_cond_broadcast(&d->room);
}

static void *decoder_main(void *arg)
{
    struct upload_decoder *d = arg;
    pthread_mutex_lock(&d->mu);
    for (;;) {
        while (!d->stop && !d->head)
            pthread_cond_wait(&d->work, &d->mu);
        if (d->stop) break;
        struct upload_feed *f = d->head;
        d->head = f->next;
        if (!d->head) d->tail = NULL;
        assert(f->state == FEED_QUEUED);
        f->state = FEED_DECODING;
        size_t bytes = pic_bytes(f);
        budget_take(d, bytes);
        if (f->abandoned) { /* ended while it waited for the budget */
            d->active--;
            budget_give(d, bytes);
            pthread_mutex_unlock(&d->mu);
            feed_free(f); /* without d->mu: the job's last unref may write its stats row */
            pthread_mutex_lock(&d->mu);
            continue;
        }
        pthread_mutex_unlock(&d->mu);
        decode_one(f, d->max_scans);
        pthread_mutex_lock(&d->mu);
        d->active--;
        if (f->rc != 0) budget_give(d, bytes); /* nothing is held */
        if (f->abandoned) {
            if (f->rc == 0) budget_give(d, bytes);
            pthread_mutex_unlock(&d->mu);
            feed_free(f);
            pthread_mutex_lock(&d->mu);
            continue;
        }
        f->state = FEED_READY;
        pthread_cond_broadcast(&d->ready);
        if (f->notify) f->notify(f->notify_arg); /* under d->mu: upload_feed_end waits for it */
    }
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

struct upload_decoder *upload_decoder_create(int threads, long max_bytes, int max_scans, char *err,
                                             size_t errlen)
{
    struct upload_decoder *d = calloc(1, sizeof *d);
    if (d) d->threads = calloc((size_t)threads, sizeof *d->threads);
    if (!d || !d->threads) {
        if (d) free(d->threads);
        free(d);
        snprintf(err, errlen, "decoder: out of memory");
        return NULL;
    }
    assert(threads > 0);
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->work, NULL);
    pthread_cond_init(&d->ready, NULL);
    pthread_cond_init(&d->room, NULL);
    d->max_bytes = max_bytes > 0 ? (size_t)max_bytes : 0;
    d->max_scans = max_scans;
    for (; d->n_threads < threads; d->n_threads++)
        if (pthread_create(&d->threads[d->n_threads], NULL, decoder_main, d) != 0) {
            snprintf(err, errlen, "decoder: cannot start a thread");
            upload_decoder_destroy(d);
            return NULL;
        }
    return d;
}

void upload_decoder_destroy(struct upload_decoder *d)
{
    if (!d) return;
    pthread_mutex_lock(&d->mu);
    assert(!d->head); /* every feed has ended */
    d->stop = 1;
    pthread_cond_broadcast(&d->work);
    pthread_cond_broadcast(&d->room);
    pthread_mutex_unlock(&d->mu);
    for (int i = 0; i < d->n_threads; i++)
        pthread_join(d->threads[i], NULL);
    pthread_cond_destroy(&d->room);
    pthread_cond_destroy(&d->ready);
    pthread_cond_destroy(&d->work);
    pthread_mutex_destroy(&d->mu);
    free(d->threads);
    free(d);
}

/* Puts the feed's picture idx in the decoder's list (d->mu held). */
static void feed_queue(struct upload_feed *f)
{
    struct upload_decoder *d = f->d;
    f->state = FEED_QUEUED;
    f->next = NULL;
    if (d->tail)
        d->tail->next = f;
    else
        d->head = f;
    d->tail = f;
    pthread_cond_signal(&d->work);
}

struct upload_feed *upload_feed_start(struct upload_decoder *d, struct job *j, int min_edge,
                                      void (*notify)(void *), void *arg)
{
    struct upload_feed *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    job_ref(j);
    *f = (struct upload_feed){
        .d = d, .j = j, .min_edge = min_edge, .notify = notify, .notify_arg = arg};
    if (d && j->n_images > 0) {
        pthread_mutex_lock(&d->mu);
        feed_queue(f);
        pthread_mutex_unlock(&d->mu);
    }
    return f;
}

int upload_feed_get(struct upload_feed *f, int i, int wait, img_rgb *out, char *err, size_t errlen)
{
    (void)i; /* read in order: only asserted */
    assert(i == f->idx && i < f->j->n_images && f->state != FEED_TAKEN);
    struct upload_decoder *d = f->d;
    if (!d) {
        decode_one(f, 0);
    } else {
        pthread_mutex_lock(&d->mu);
        while (wait && f->state != FEED_READY)
            pthread_cond_wait(&d->ready, &d->mu);
        int ready = f->state == FEED_READY;
        if (ready) f->state = FEED_TAKEN;
        pthread_mutex_unlock(&d->mu);
        if (!ready) return 1;
    }
    if (f->rc != 0) {
        snprintf(err, errlen, "%s", f->err);
        f->state = FEED_IDLE;
        return -1;
    }
    f->state = FEED_TAKEN;
    *out = f->pic;
    f->pic = (img_rgb){0};
    return 0;
}

void upload_feed_put(struct upload_feed *f, img_rgb *im)
{
    assert(f->state == FEED_TAKEN);
    img_free(im);
    struct upload_decoder *d = f->d;
    if (!d) {
        f->state = FEED_IDLE;
        f->idx++;
        return;
    }
    pthread_mutex_lock(&d->mu);
    budget_give(d, pic_bytes(f));
    f->state = FEED_IDLE;
    if (++f->idx < f->j->n_images) feed_queue(f);
    pthread_mutex_unlock(&d->mu);
}

void upload_feed_end(struct upload_feed *f)
{
    if (!f) return;
    assert(f->state != FEED_TAKEN); /* the reader gives its picture back first */
    struct upload_decoder *d = f->d;
    if (!d) {
        feed_free(f);
        return;
    }
    pthread_mutex_lock(&d->mu);
    if (f->state == FEED_DECODING) { /* the decoding thread frees it */
        f->abandoned = 1;
        pthread_mutex_unlock(&d->mu);
        return;
    }
    if (f->state == FEED_QUEUED) {
        struct upload_feed **pp = &d->head, *prev = NULL;
        while (*pp != f)
            prev = *pp, pp = &(*pp)->next;
        *pp = f->next;
        if (d->tail == f) d->tail = prev;
    }
    if (f->state == FEED_READY && f->rc == 0) budget_give(d, pic_bytes(f));
    pthread_mutex_unlock(&d->mu);
    feed_free(f);
}
