/* Unit tests: the decoder (src/server/upload.c) that decodes admitted jobs' pictures one at a
 * time per job, and the header checks made before admission. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/upload.h"

#include "../testutil.h"
#include "testpng.h"

/* A w x h grey RGB PNG, as a job holds it after upload_image_check. */
static void png_bytes(int w, int h, struct job_image *out)
{
    unsigned char *png = test_grey_png(w, h, &out->len);
    char err[256];
    ck_assert_int_eq(upload_image_check(png, out->len, 1 << 20, 1 << 20, out, err, sizeof err), 0);
    ck_assert_int_eq(out->w, w);
    free(png);
}

/* A job with n pictures, picture i being (8 + i) x (4 + 2i). */
static struct job *pictures_job(int n)
{
    struct job *j = job_create();
    ck_assert_ptr_nonnull(j);
    for (int i = 0; i < n; i++)
        png_bytes(8 + i, 4 + 2 * i, &j->images[i]);
    j->n_images = n;
    return j;
}

static void nap_ms(int ms)
{
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

static void count(void *arg)
{
    __atomic_add_fetch((int *)arg, 1, __ATOMIC_SEQ_CST);
}

/* Pictures come in order, each the right size; picture i+1 is not decoded (its ready
 * notification does not come) before picture i is given back: one decoded picture per job at a
 * time. */
START_TEST(one_picture_at_a_time)
{
    char err[256];
    struct upload_decoder *d = upload_decoder_create(2, 64L << 20, 64, err, sizeof err);
    ck_assert_ptr_nonnull(d);
    struct job *j = pictures_job(3);
    int ready = 0;
    struct upload_feed *f = upload_feed_start(d, j, 0, count, &ready);
    ck_assert_ptr_nonnull(f);
    job_unref(j); /* the feed holds its own reference */
    for (int i = 0; i < 3; i++) {
        img_rgb im;
        ck_assert_int_eq(upload_feed_get(f, i, 1, &im, err, sizeof err), 0);
        ck_assert_int_eq(im.w, 8 + i);
        ck_assert_int_eq(im.h, 4 + 2 * i);
        ck_assert_int_eq(im.rgb[0], 128);
        /* two idle threads, and still the next picture waits for this one to come back */
        nap_ms(50);
        ck_assert_int_eq(__atomic_load_n(&ready, __ATOMIC_SEQ_CST), i + 1);
        upload_feed_put(f, &im);
        ck_assert_ptr_null(im.rgb);
    }
    upload_feed_end(f);
    upload_decoder_destroy(d);
}
END_TEST

/* Several jobs' feeds at once: each is notified per picture, polling without waiting works,
 * and a broken picture is that job's error, named by its number. */
START_TEST(many_feeds_notify_and_errors)
{
    char err[256];
    struct upload_decoder *d = upload_decoder_create(3, 64L << 20, 64, err, sizeof err);
    ck_assert_ptr_nonnull(d);
    enum { N = 6 };
    struct upload_feed *f[N];
    int notified[N] = {0};
    for (int k = 0; k < N; k++) {
        struct job *j = pictures_job(2);
        if (k == 3) /* past its header, picture 2 of job 3 is cut short */
            j->images[1].len = 60;
        f[k] = upload_feed_start(d, j, 0, count, &notified[k]);
        job_unref(j);
    }
    for (int k = 0; k < N; k++) {
        for (int i = 0; i < 2; i++) {
            img_rgb im;
            int rc;
            for (int tries = 0; (rc = upload_feed_get(f[k], i, 0, &im, err, sizeof err)) == 1;
                 tries++) {
                ck_assert_int_lt(tries, 2000);
                nap_ms(5);
            }
            if (k == 3 && i == 1) {
                ck_assert_int_eq(rc, -1);
                ck_assert_msg(strncmp(err, "image 2: ", 9) == 0, "%s", err);
                break;
            }
            ck_assert_int_eq(rc, 0);
            ck_assert_int_eq(im.w, 8 + i);
            upload_feed_put(f[k], &im);
        }
        upload_feed_end(f[k]);
        ck_assert_int_eq(__atomic_load_n(&notified[k], __ATOMIC_SEQ_CST), 2);
    }
    upload_decoder_destroy(d);
}
END_TEST

/* Feeds ended at any point (queued, decoding, ready, half read) free what they hold; ASan's
 * leak check and the decoder's own asserts catch what is left. */
START_TEST(ended_early)
{
    char err[256];
    struct upload_decoder *d = upload_decoder_create(2, 1L << 20, 64, err, sizeof err);
    ck_assert_ptr_nonnull(d);
    for (int round = 0; round < 20; round++) {
        struct upload_feed *f[4];
        for (int k = 0; k < 4; k++) {
            struct job *j = pictures_job(3);
            f[k] = upload_feed_start(d, j, 0, NULL, NULL);
            job_unref(j);
        }
        img_rgb im;
        ck_assert_int_eq(upload_feed_get(f[0], 0, 1, &im, err, sizeof err), 0);
        upload_feed_put(f[0], &im);
        nap_ms(round % 3);
        for (int k = 0; k < 4; k++)
            upload_feed_end(f[k]);
    }
    upload_feed_end(NULL);
    upload_decoder_destroy(d);
}
END_TEST

/* Without a decoder the reader decodes (unit tests of other modules, tools). */
START_TEST(no_decoder_decodes_inline)
{
    char err[256];
    struct job *j = pictures_job(2);
    struct upload_feed *f = upload_feed_start(NULL, j, 0, NULL, NULL);
    job_unref(j);
    for (int i = 0; i < 2; i++) {
        img_rgb im;
        ck_assert_int_eq(upload_feed_get(f, i, 0, &im, err, sizeof err), 0);
        ck_assert_int_eq(im.h, 4 + 2 * i);
        upload_feed_put(f, &im);
    }
    upload_feed_end(f);
}
END_TEST

START_TEST(header_checks)
{
    char err[256];
    struct job_image im;
    struct job_image ok;
    png_bytes(16, 16, &ok);
    ck_assert_int_eq(upload_image_check(ok.data, ok.len, 10, 1 << 20, &im, err, sizeof err), 413);
    ck_assert_int_eq(upload_image_check(ok.data, ok.len, 1 << 20, 255, &im, err, sizeof err), 422);
    ck_assert_int_eq(upload_image_check((const unsigned char *)"GIF89a", 6, 1 << 20, 1 << 20, &im,
                                        err, sizeof err),
                     415);
    ck_assert_int_eq(upload_image_check(ok.data, ok.len, 1 << 20, 256, &im, err, sizeof err), 0);
    ck_assert_uint_eq(im.len, ok.len);
    free(im.data);
    free(ok.data);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("upload");
    TCase *tc = tcase_create("upload");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, one_picture_at_a_time);
    tcase_add_test(tc, many_feeds_notify_and_errors);
    tcase_add_test(tc, ended_early);
    tcase_add_test(tc, no_decoder_decodes_inline);
    tcase_add_test(tc, header_checks);
    suite_add_tcase(s, tc);
    return tu_run(s, CK_FORK);
}
