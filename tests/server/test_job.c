/* Unit tests: a job's text stream (push, take, skip, done, cancel, wait), its progress
 * records, its reference count, and UTF-8 sanitising. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server/job.h"

#include "../testutil.h"

START_TEST(pieces)
{
    struct job *j = job_create();
    ck_assert_ptr_nonnull(j);
    char *out = NULL;
    size_t cap = 0;
    int done = -1;
    ck_assert_uint_eq(job_take(j, &out, &cap, &done), 0); /* nothing yet */
    ck_assert_int_eq(done, DONE_NONE);
    ck_assert_int_eq(job_push(j, "ab", 2), 0);
    ck_assert_int_eq(job_push(j, "", 0), 0); /* an empty push is no piece */
    ck_assert_int_eq(job_push(j, "cde", 3), 0);
    ck_assert_uint_eq(job_take(j, &out, &cap, &done), 2); /* one push per take */
    ck_assert_str_eq(out, "ab");
    ck_assert_uint_eq(job_take(j, &out, &cap, &done), 3);
    ck_assert_str_eq(out, "cde");
    ck_assert_uint_eq(job_take(j, &out, &cap, &done), 0);
    ck_assert_str_eq(j->text, "abcde");
    ck_assert_uint_eq(j->n_pieces, 2);
    free(out);
    job_unref(j);
}
END_TEST

/* The done state reaches the reader only with the last piece, so no text is lost. */
START_TEST(done_after_last_piece)
{
    struct job *j = job_create();
    char *out = NULL;
    size_t cap = 0;
    int done;
    job_push(j, "x", 1);
    job_push(j, "y", 1);
    job_finish(j, DONE_LENGTH, NULL);
    ck_assert_uint_eq(job_take(j, &out, &cap, &done), 1);
    ck_assert_int_eq(done, DONE_NONE);
    ck_assert_uint_eq(job_take(j, &out, &cap, &done), 1);
    ck_assert_str_eq(out, "y");
    ck_assert_int_eq(done, DONE_LENGTH);
    free(out);
    job_unref(j);
}
END_TEST

/* The first finish wins: a late error does not overwrite a stop. */
START_TEST(finish_once)
{
    struct job *j = job_create();
    job_finish(j, DONE_STOP, NULL);
    ck_assert_double_ge(j->t.total_ms, 0);
    job_finish(j, DONE_ERROR, "too late");
    ck_assert_int_eq(j->done, DONE_STOP);
    ck_assert_str_eq(j->error, "");
    job_unref(j);

    j = job_create();
    job_finish(j, DONE_ERROR, "engine failed");
    ck_assert_int_eq(j->done, DONE_ERROR);
    ck_assert_str_eq(j->error, "engine failed");
    ck_assert_str_eq(job_done_name(j->done), "error");
    job_unref(j);
}
END_TEST

START_TEST(cancel)
{
    struct job *j = job_create();
    ck_assert_int_eq(job_cancelled(j), 0);
    job_cancel(j);
    ck_assert_int_eq(job_cancelled(j), 1);
    ck_assert_int_eq(j->done, DONE_NONE); /* the scheduler finishes it, not the canceller */
    job_unref(j);
}
END_TEST

/* job_skip consumes everything made so far without copying; the text stays in the job. */
START_TEST(skip)
{
    struct job *j = job_create();
    job_push(j, "ab", 2);
    job_push(j, "c", 1);
    ck_assert_int_eq(job_skip(j), DONE_NONE);
    char *out = NULL;
    size_t cap = 0;
    int done;
    ck_assert_uint_eq(job_take(j, &out, &cap, &done), 0);
    job_push(j, "d", 1);
    job_finish(j, DONE_STOP, NULL);
    ck_assert_int_eq(job_skip(j), DONE_STOP);
    ck_assert_uint_eq(job_take(j, &out, &cap, &done), 0);
    ck_assert_int_eq(done, DONE_STOP);
    ck_assert_str_eq(j->text, "abcd");
    free(out);
    job_unref(j);
}
END_TEST

START_TEST(wait)
{
    struct job *j = job_create();
    ck_assert_int_eq(job_wait(j, -1, job_now() + 0.05), 0); /* nothing: times out */
    job_push(j, "a", 1);
    ck_assert_int_eq(job_wait(j, -1, job_now() + 5), 1);
    ck_assert_int_eq(job_skip(j), DONE_NONE);
    ck_assert_int_eq(job_wait(j, -1, job_now() + 0.05), 0); /* all read: nothing new */
    job_finish(j, DONE_STOP, NULL);
    ck_assert_int_eq(job_wait(j, -1, job_now() + 5), 1);
    job_unref(j);

    /* A client that hangs up is seen while waiting. */
    j = job_create();
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    close(sv[1]);
    ck_assert_int_eq(job_wait(j, sv[0], job_now() + 5), -1);
    close(sv[0]);
    job_unref(j);
}
END_TEST

/* What the scheduler records as the job runs, and what the HTTP side reads back. */
START_TEST(progress)
{
    struct job *j = job_create();
    j->t_arrival = 100.0;
    job_left_queue(j, 100.5);
    ck_assert_double_eq_tol(j->t.queue_ms, 500, 1e-6);
    job_admitted(j, 70, 64, 20, 0);
    ck_assert_int_eq(j->prompt_tokens, 70);
    ck_assert_int_eq(j->image_tokens, 64);
    job_prefilled(j, 100.5, 101.0);
    ck_assert_double_eq_tol(j->t.prefill_ms, 480, 1e-6); /* 500 less the vision 20 */
    job_generated(j, 1, 101.5);
    ck_assert_double_eq_tol(j->t.ttft_ms, 1500, 1e-6);
    job_generated(j, 2, 102.0);
    ck_assert_double_eq_tol(j->t.ttft_ms, 1500, 1e-6); /* only the first token sets it */
    ck_assert_int_eq(j->completion_tokens, 2);
    job_decoded(j, 3, -1);
    ck_assert_int_eq(j->completion_tokens, 3);
    ck_assert_double_eq(j->t.decode_ms, -1); /* none given: still unknown */
    job_decoded(j, 3, 250);
    ck_assert_double_eq_tol(j->t.decode_ms, 250, 1e-6);

    job_push(j, "hey", 3);
    job_set_error_status(j, 422);
    job_finish(j, DONE_ERROR, "bad prompt");
    struct job_progress p = job_progress(j);
    ck_assert_int_eq(p.done, DONE_ERROR);
    ck_assert_uint_eq(p.text_len, 3);
    ck_assert_int_eq(p.completion_tokens, 3);
    ck_assert_int_eq(p.error_status, 422);

    job_set_http_result(j, 200, "ignored: the job has its own error");
    ck_assert_int_eq(j->http_status, 200);
    ck_assert_str_eq(j->error, "bad prompt");
    job_unref(j);

    j = job_create();
    job_set_http_result(j, 503, "queue full");
    ck_assert_int_eq(j->http_status, 503);
    ck_assert_str_eq(j->error, "queue full");
    job_unref(j);
}
END_TEST

static int released;
static void on_release(struct job *j, void *ctx)
{
    (void)j;
    released += *(int *)ctx;
}

START_TEST(refs)
{
    int one = 1;
    struct job *j = job_create();
    j->on_release = on_release;
    j->on_release_ctx = &one;
    ck_assert_int_eq(job_add_msg(j, ROLE_USER, "hello", 5, 0), 0);
    job_ref(j);
    job_unref(j);
    ck_assert_int_eq(released, 0);
    job_unref(j);
    ck_assert_int_eq(released, 1);
    job_unref(NULL);
}
END_TEST

START_TEST(utf8)
{
    char out[64];
    ck_assert_uint_eq(job_utf8_sanitize("h\xc3\xa9!", 4, out), 4);
    ck_assert_int_eq(memcmp(out, "h\xc3\xa9!", 4), 0);
    ck_assert_uint_eq(job_utf8_sanitize("a\xff", 2, out), 4);
    ck_assert_int_eq(memcmp(out, "a\xef\xbf\xbd", 4), 0);
    ck_assert_uint_eq(job_utf8_sanitize("\xc3", 1, out), 3);             /* truncated */
    ck_assert_uint_eq(job_utf8_sanitize("\xc0\xaf", 2, out), 6);         /* overlong */
    ck_assert_uint_eq(job_utf8_sanitize("\xed\xa0\x80", 3, out), 9);     /* surrogate */
    ck_assert_uint_eq(job_utf8_sanitize("\xf0\x9f\x98\x80", 4, out), 4); /* emoji */
}
END_TEST

int main(void)
{
    Suite *s = suite_create("job");
    TCase *tc = tcase_create("job");
    tcase_add_test(tc, pieces);
    tcase_add_test(tc, done_after_last_piece);
    tcase_add_test(tc, finish_once);
    tcase_add_test(tc, cancel);
    tcase_add_test(tc, skip);
    tcase_add_test(tc, wait);
    tcase_add_test(tc, progress);
    tcase_add_test(tc, refs);
    tcase_add_test(tc, utf8);
    suite_add_tcase(s, tc);
    return tu_run(s, CK_FORK);
}
