/* Unit tests: the scheduler driven by the echo backend (src/server/backend_echo.c), which
 * "generates" the last user message back one word per token (" word" after the first), and
 * the stop-string matcher it applies to that text. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/backend.h"
#include "server/metrics.h"
#include "server/sched.h"

#include "../testutil.h"

struct rig {
    struct backend *be;
    struct metrics *m;
    struct sched *s;
};

/* A scheduler over an echo backend; delay_ms is slept per batched step to keep slots busy. */
static struct rig rig_start(int slots, int queue_max, int delay_ms)
{
    struct rig r;
    char err[256];
    struct backend_options bo = {.slots = slots, .ctx_size = 4096, .echo_delay_ms = delay_ms};
    struct sched_options so = {.slots = slots, .queue_max = queue_max, .prefill_chunk = 512};
    r.be = backend_echo_create(&bo, err, sizeof err);
    ck_assert_ptr_nonnull(r.be);
    r.m = metrics_create();
    ck_assert_ptr_nonnull(r.m);
    r.s = sched_create(&so, r.be, r.m, err, sizeof err);
    ck_assert_ptr_nonnull(r.s);
    return r;
}

static void rig_stop(struct rig *r)
{
    sched_destroy(r->s);
    r->be->ops->destroy(r->be);
    metrics_destroy(r->m);
}

/* A job asking the echo backend to repeat prompt; stop may be NULL. */
static struct job *new_job(const char *prompt, int max_tokens, const char *stop)
{
    struct job *j = job_create();
    ck_assert_ptr_nonnull(j);
    ck_assert_int_eq(job_add_msg(j, ROLE_USER, prompt, strlen(prompt), 0), 0);
    j->params.max_tokens = max_tokens;
    if (stop) j->params.stop[j->params.n_stop++] = strdup(stop);
    j->deadline = job_now() + 30;
    return j;
}

/* Reads the job's stream to its end as an HTTP thread does; out gets the pieces joined by '|'.
 * Returns the done state. */
static int read_all(struct job *j, char *out, size_t cap)
{
    char *take = NULL;
    size_t take_cap = 0, len = 0;
    int done = 0, first = 1;
    double deadline = job_now() + 20;
    out[0] = 0;
    for (;;) {
        size_t n;
        while ((n = job_take(j, &take, &take_cap, &done)) > 0) {
            len += (size_t)snprintf(out + len, cap - len, "%s%s", first ? "" : "|", take);
            ck_assert_uint_lt(len, cap);
            first = 0;
        }
        if (done) break;
        ck_assert_int_eq(job_wait(j, -1, deadline), 1);
    }
    free(take);
    return done;
}

/* Runs one job through a fresh one-slot scheduler; returns its done state, pieces in out. */
static int run_one(struct job *j, char *out, size_t cap)
{
    struct rig r = rig_start(1, 4, 0);
    ck_assert_int_eq(sched_submit(r.s, j), SCHED_OK);
    int done = read_all(j, out, cap);
    rig_stop(&r);
    return done;
}

START_TEST(stop_scan)
{
    char *stops[] = {"END", "\n\n"};
    int hit;
    ck_assert_uint_eq(sched_stop_scan("hello", 5, stops, 2, &hit), 5);
    ck_assert_int_eq(hit, 0);
    ck_assert_uint_eq(sched_stop_scan("helloEN", 7, stops, 2, &hit), 5); /* hold "EN" back */
    ck_assert_int_eq(hit, 0);
    ck_assert_uint_eq(sched_stop_scan("helloENDmore", 12, stops, 2, &hit), 5);
    ck_assert_int_eq(hit, 1);
    ck_assert_uint_eq(sched_stop_scan("a\n", 2, stops, 2, &hit), 1);
    ck_assert_uint_eq(sched_stop_scan("a\n\nb", 4, stops, 2, &hit), 1);
    ck_assert_int_eq(hit, 1);
    ck_assert_uint_eq(sched_stop_scan("abc", 3, NULL, 0, &hit), 3);
}
END_TEST

/* From the engine's former matcher (sampler_stop): a held "\n" that completes "\n\n" with the
 * next piece sends nothing before the stop; the earliest match wins over later ones. */
START_TEST(stop_scan_held_tail)
{
    char *stops[] = {"<end>", "\n\n"};
    int hit;
    ck_assert_uint_eq(sched_stop_scan("ok\n", 3, stops, 2, &hit), 2);
    ck_assert_int_eq(hit, 0);
    ck_assert_uint_eq(sched_stop_scan("\n\nmore", 6, stops, 2, &hit), 0);
    ck_assert_int_eq(hit, 1);
    ck_assert_uint_eq(sched_stop_scan("a\n\nb<end>", 9, stops, 2, &hit), 1);
    ck_assert_int_eq(hit, 1);
}
END_TEST

/* "o th" spans the tokens " two" and " three": the "o" is held back, then the match ends
 * the job with only the text before it sent. */
START_TEST(stop_across_tokens)
{
    struct job *j = new_job("one two three four", 16, "o th");
    char out[256];
    ck_assert_int_eq(run_one(j, out, sizeof out), DONE_STOP);
    ck_assert_str_eq(out, "one| tw");
    ck_assert_str_eq(j->text, "one tw");
    ck_assert_int_eq(j->completion_tokens, 3);
    job_unref(j);
}
END_TEST

/* A held possible prefix ("<e" of "<end>") is sent once the next token rules it out. */
START_TEST(stop_prefix_released)
{
    struct job *j = new_job("Hello <e nx", 16, "<end>");
    char out[256];
    ck_assert_int_eq(run_one(j, out, sizeof out), DONE_STOP); /* the echo's end, not the stop */
    ck_assert_str_eq(out, "Hello| |<e nx");
    job_unref(j);
}
END_TEST

/* Text held back when the job ends without a match is sent, at max_tokens and at the end. */
START_TEST(stop_held_text_flushed)
{
    char out[256];
    struct job *j = new_job("a <en", 2, "<end>");
    ck_assert_int_eq(run_one(j, out, sizeof out), DONE_LENGTH);
    ck_assert_str_eq(out, "a| |<en");
    job_unref(j);

    j = new_job("a <en", 16, "<end>");
    ck_assert_int_eq(run_one(j, out, sizeof out), DONE_STOP);
    ck_assert_str_eq(out, "a| |<en");
    job_unref(j);
}
END_TEST

/* Bytes that are not UTF-8 reach the stream as U+FFFD, so every API emits valid JSON. */
START_TEST(stream_is_utf8)
{
    struct job *j = new_job("a\xff b", 16, NULL);
    char out[256];
    ck_assert_int_eq(run_one(j, out, sizeof out), DONE_STOP);
    ck_assert_str_eq(out, "a\xef\xbf\xbd| b");
    job_unref(j);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sched");
    TCase *tc = tcase_create("sched");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, stop_scan);
    tcase_add_test(tc, stop_scan_held_tail);
    tcase_add_test(tc, stop_across_tokens);
    tcase_add_test(tc, stop_prefix_released);
    tcase_add_test(tc, stop_held_text_flushed);
    tcase_add_test(tc, stream_is_utf8);
    suite_add_tcase(s, tc);
    return tu_run(s, CK_FORK);
}
