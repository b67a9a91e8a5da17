/* Unit tests: the scheduler driven by the echo backend (src/server/backend_echo.c), which
 * "generates" the last user message back one word per token (" word" after the first), and
 * the stop-string matcher it applies to that text. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/backend.h"
#include "server/metrics.h"
#include "server/sched.h"

#include "../testutil.h"
#include "testpng.h"

struct rig {
    struct backend *be;
    struct metrics *m;
    struct sched *s;
};

/* A scheduler over an echo backend; delay_ms is slept per batched step to keep slots busy, and
 * a job with images is admitted vision_ms after it got its slot (a stand-in encode). */
static struct rig rig_start_vision(int slots, int queue_max, int delay_ms, int vision_ms)
{
    struct rig r;
    char err[256];
    struct backend_options bo = {
        .slots = slots, .ctx_size = 4096, .echo_delay_ms = delay_ms, .echo_vision_ms = vision_ms};
    struct sched_options so = {.slots = slots, .queue_max = queue_max, .prefill_chunk = 512};
    r.be = backend_echo_create(&bo, err, sizeof err);
    ck_assert_ptr_nonnull(r.be);
    r.m = metrics_create();
    ck_assert_ptr_nonnull(r.m);
    r.s = sched_create(&so, r.be, r.m, err, sizeof err);
    ck_assert_ptr_nonnull(r.s);
    return r;
}

static struct rig rig_start(int slots, int queue_max, int delay_ms)
{
    return rig_start_vision(slots, queue_max, delay_ms, 0);
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

/* A prompt of n words "w0 w1 ...": n tokens from the echo backend. */
static char *words(int n)
{
    char *p = malloc((size_t)n * 8 + 1);
    ck_assert_ptr_nonnull(p);
    size_t o = 0;
    for (int i = 0; i < n; i++)
        o += (size_t)sprintf(p + o, "%sw%d", i ? " " : "", i);
    return p;
}

/* Waits (up to 5 s) until the scheduler reports this many busy slots and queued jobs. */
static void wait_counts(struct sched *s, int active, int queued)
{
    int a = -1, q = -1;
    for (double end = job_now() + 5; job_now() < end; usleep(1000)) {
        sched_snapshot(s, &a, &q);
        if (a == active && q == queued) return;
    }
    ck_abort_msg("scheduler at %d active, %d queued; expected %d, %d", a, q, active, queued);
}

/* Waits for the job's first piece of text. */
static void wait_started(struct job *j)
{
    ck_assert_int_eq(job_wait(j, -1, job_now() + 5), 1);
    ck_assert_uint_gt(job_progress(j).text_len, 0);
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

START_TEST(ends_at_eos_and_max_tokens)
{
    char out[256];
    struct job *j = new_job("a b c d e", 16, NULL);
    ck_assert_int_eq(run_one(j, out, sizeof out), DONE_STOP);
    ck_assert_str_eq(out, "a| b| c| d| e");
    ck_assert_int_eq(j->completion_tokens, 5);
    ck_assert_int_eq(j->prompt_tokens, 5);
    ck_assert_double_ge(j->t.ttft_ms, 0);
    job_unref(j);

    j = new_job("a b c d e", 3, NULL);
    ck_assert_int_eq(run_one(j, out, sizeof out), DONE_LENGTH);
    ck_assert_str_eq(out, "a| b| c");
    ck_assert_int_eq(j->completion_tokens, 3);
    job_unref(j);
}
END_TEST

/* Room for slots + queue_max jobs; the next is refused and counted. */
START_TEST(queue_full)
{
    struct rig r = rig_start(1, 1, 20);
    char *w = words(200);
    struct job *a = new_job(w, 200, NULL), *b = new_job(w, 200, NULL), *c = new_job("c", 4, NULL);
    ck_assert_int_eq(sched_submit(r.s, a), SCHED_OK);
    ck_assert_int_eq(sched_submit(r.s, b), SCHED_OK);
    ck_assert_int_eq(sched_submit(r.s, c), SCHED_FULL);
    ck_assert_int_eq(metrics_get(r.m, CNT_REJECTED_QUEUE_FULL), 1);
    wait_counts(r.s, 1, 1);
    rig_stop(&r); /* cancels what runs and what waits */
    ck_assert_int_eq(a->done, DONE_CANCELLED);
    ck_assert_int_eq(b->done, DONE_CANCELLED);
    ck_assert_int_eq(c->done, DONE_NONE); /* never taken */
    job_unref(a), job_unref(b), job_unref(c);
    free(w);
}
END_TEST

/* Draining lets running work finish within the grace period, then refuses new work. */
START_TEST(drain_finishes_work)
{
    struct rig r = rig_start(1, 4, 5);
    struct job *a = new_job("a b c", 16, NULL), *b = new_job("d e", 16, NULL);
    ck_assert_int_eq(sched_submit(r.s, a), SCHED_OK);
    ck_assert_int_eq(sched_submit(r.s, b), SCHED_OK);
    sched_drain(r.s, 20);
    ck_assert_int_eq(a->done, DONE_STOP);
    ck_assert_int_eq(b->done, DONE_STOP);
    ck_assert_str_eq(b->text, "d e");
    struct job *c = new_job("late", 4, NULL);
    ck_assert_int_eq(sched_submit(r.s, c), SCHED_DRAINING);
    wait_counts(r.s, 0, 0);
    rig_stop(&r);
    job_unref(a), job_unref(b), job_unref(c);
}
END_TEST

/* Past the grace period, running and queued jobs alike are cancelled. */
START_TEST(drain_cancels_after_grace)
{
    struct rig r = rig_start(1, 4, 20);
    char *w = words(200);
    struct job *a = new_job(w, 200, NULL), *b = new_job(w, 200, NULL);
    ck_assert_int_eq(sched_submit(r.s, a), SCHED_OK);
    ck_assert_int_eq(sched_submit(r.s, b), SCHED_OK);
    wait_started(a);
    sched_drain(r.s, 0.1);
    ck_assert_int_eq(a->done, DONE_CANCELLED);
    ck_assert_int_eq(b->done, DONE_CANCELLED);
    ck_assert_uint_eq(b->text_len, 0); /* never ran */
    ck_assert_int_eq(metrics_get(r.m, CNT_CANCELLED), 2);
    rig_stop(&r);
    job_unref(a), job_unref(b);
    free(w);
}
END_TEST

/* A cancelled job gives its slot back: with no queue, the next job fits only then. */
START_TEST(cancel_frees_slot)
{
    struct rig r = rig_start(1, 0, 20);
    char *w = words(200);
    struct job *a = new_job(w, 200, NULL), *b = new_job("b c", 16, NULL);
    ck_assert_int_eq(sched_submit(r.s, a), SCHED_OK);
    wait_started(a);
    ck_assert_int_eq(sched_submit(r.s, b), SCHED_FULL);
    job_cancel(a);
    char out[4096];
    ck_assert_int_eq(read_all(a, out, sizeof out), DONE_CANCELLED);
    ck_assert_int_lt(a->completion_tokens, 200);
    ck_assert_int_eq(strncmp(a->text, w, a->text_len), 0); /* what it sent was right */
    wait_counts(r.s, 0, 0);
    ck_assert_int_eq(sched_submit(r.s, b), SCHED_OK);
    ck_assert_int_eq(read_all(b, out, sizeof out), DONE_STOP);
    ck_assert_str_eq(out, "b| c");
    ck_assert_int_eq(metrics_get(r.m, CNT_CANCELLED), 1);
    rig_stop(&r);
    job_unref(a), job_unref(b);
    free(w);
}
END_TEST

/* A grey w x h PNG, as a client sends it: jobs hold compressed bytes, decoded at admission. */
static void png_bytes(int w, int h, struct job_image *out)
{
    out->data = test_grey_png(w, h, &out->len);
    out->w = w, out->h = h;
}

/* A job with one w x h picture before its text. */
static struct job *new_image_job(const char *prompt, int w, int h)
{
    struct job *j = job_create();
    ck_assert_ptr_nonnull(j);
    ck_assert_int_eq(job_add_msg(j, ROLE_USER, prompt, strlen(prompt), 1), 0);
    png_bytes(w, h, &j->images[0]);
    j->n_images = 1;
    j->params.max_tokens = 16;
    j->deadline = job_now() + 30;
    return j;
}

/* While one request's images encode off the engine thread, a running stream keeps getting
 * tokens; the new request then streams its own answer. */
START_TEST(encode_does_not_stall_streams)
{
    struct rig r = rig_start_vision(2, 2, 5, 400);
    char *w = words(300);
    struct job *a = new_job(w, 400, NULL), *b = new_image_job("what is it", 4, 3);
    ck_assert_int_eq(sched_submit(r.s, a), SCHED_OK);
    wait_started(a);
    ck_assert_int_eq(sched_submit(r.s, b), SCHED_OK);
    wait_counts(r.s, 2, 0);
    size_t before = job_progress(a).text_len;
    usleep(150 * 1000);
    ck_assert_uint_eq(job_progress(b).text_len, 0); /* still encoding */
    ck_assert_uint_gt(job_progress(a).text_len, before + 10);
    char out[4096];
    ck_assert_int_eq(read_all(b, out, sizeof out), DONE_STOP);
    ck_assert_str_eq(out, "[image 4x3]| what| is| it");
    ck_assert_double_ge(b->t.vision_ms, 400);
    ck_assert_int_eq(b->image_tokens, 64);
    ck_assert_int_eq(read_all(a, out, sizeof out), DONE_STOP);
    ck_assert_str_eq(a->text, w);
    rig_stop(&r);
    job_unref(a), job_unref(b);
    free(w);
}
END_TEST

/* A job cancelled while its images encode leaves its slot; the next job gets it. Destroying
 * the scheduler with an encode pending frees it too (ASan checks). */
START_TEST(cancel_during_encode)
{
    struct rig r = rig_start_vision(1, 1, 0, 300);
    struct job *a = new_image_job("x", 8, 8), *b = new_job("b c", 16, NULL);
    ck_assert_int_eq(sched_submit(r.s, a), SCHED_OK);
    wait_counts(r.s, 1, 0);
    job_cancel(a);
    char out[256];
    ck_assert_int_eq(read_all(a, out, sizeof out), DONE_CANCELLED);
    ck_assert_str_eq(out, "");
    wait_counts(r.s, 0, 0);
    ck_assert_int_eq(sched_submit(r.s, b), SCHED_OK);
    ck_assert_int_eq(read_all(b, out, sizeof out), DONE_STOP);
    ck_assert_str_eq(out, "b| c");
    struct job *c = new_image_job("y", 2, 2);
    ck_assert_int_eq(sched_submit(r.s, c), SCHED_OK);
    wait_counts(r.s, 1, 0);
    rig_stop(&r);
    ck_assert_int_eq(job_progress(c).done, DONE_CANCELLED);
    job_unref(a), job_unref(b), job_unref(c);
}
END_TEST

/* Several jobs share the batch, each getting its own text. */
START_TEST(slots_run_together)
{
    struct rig r = rig_start(3, 4, 10);
    struct job *j[3] = {
        new_job("one two three four five six seven eight nine ten", 16, NULL),
        new_job("alpha beta gamma delta epsilon zeta eta theta iota kappa", 16, NULL),
        new_job("red orange yellow green blue indigo violet black white grey", 3, NULL),
    };
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(sched_submit(r.s, j[i]), SCHED_OK);
    wait_counts(r.s, 3, 0);
    char out[256];
    ck_assert_int_eq(read_all(j[0], out, sizeof out), DONE_STOP);
    ck_assert_str_eq(j[0]->text, "one two three four five six seven eight nine ten");
    ck_assert_int_eq(read_all(j[1], out, sizeof out), DONE_STOP);
    ck_assert_str_eq(j[1]->text, "alpha beta gamma delta epsilon zeta eta theta iota kappa");
    ck_assert_int_eq(read_all(j[2], out, sizeof out), DONE_LENGTH);
    ck_assert_str_eq(out, "red| orange| yellow");
    wait_counts(r.s, 0, 0);
    ck_assert_int_eq(metrics_get(r.m, CNT_COMPLETION_TOKENS), 23);
    rig_stop(&r);
    for (int i = 0; i < 3; i++)
        job_unref(j[i]);
}
END_TEST

START_TEST(deadlines)
{
    char out[4096];
    struct job *j = new_job("a b", 16, NULL);
    j->deadline = job_now() - 1; /* expired while queued: never admitted */
    ck_assert_int_eq(run_one(j, out, sizeof out), DONE_TIMEOUT);
    ck_assert_ptr_nonnull(strstr(j->error, "queued"));
    ck_assert_int_eq(j->prompt_tokens, 0);
    job_unref(j);

    struct rig r = rig_start(1, 4, 20);
    char *w = words(200);
    j = new_job(w, 200, NULL);
    j->deadline = job_now() + 0.5; /* expires while generating */
    ck_assert_int_eq(sched_submit(r.s, j), SCHED_OK);
    ck_assert_int_eq(read_all(j, out, sizeof out), DONE_TIMEOUT);
    ck_assert_str_eq(j->error, "request deadline passed");
    ck_assert_int_gt(j->completion_tokens, 0);
    rig_stop(&r);
    job_unref(j);
    free(w);
}
END_TEST

/* A prompt the backend refuses is the client's fault (422); a failed decode is the server's. */
START_TEST(backend_errors)
{
    char out[256];
    char *w = words(5000); /* more tokens than the 4096 context */
    struct job *j = new_job(w, 16, NULL);
    ck_assert_int_eq(run_one(j, out, sizeof out), DONE_ERROR);
    ck_assert_int_eq(j->error_status, 422);
    ck_assert_ptr_nonnull(strstr(j->error, "context"));
    job_unref(j);
    free(w);

    j = new_job("please __fail__", 16, NULL);
    ck_assert_int_eq(run_one(j, out, sizeof out), DONE_ERROR);
    ck_assert_int_eq(j->error_status, 0); /* HTTP side answers 500 */
    ck_assert_ptr_nonnull(strstr(j->error, "failure requested"));
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
    tcase_add_test(tc, ends_at_eos_and_max_tokens);
    tcase_add_test(tc, queue_full);
    tcase_add_test(tc, drain_finishes_work);
    tcase_add_test(tc, drain_cancels_after_grace);
    tcase_add_test(tc, cancel_frees_slot);
    tcase_add_test(tc, slots_run_together);
    tcase_add_test(tc, encode_does_not_stall_streams);
    tcase_add_test(tc, cancel_during_encode);
    tcase_add_test(tc, deadlines);
    tcase_add_test(tc, backend_errors);
    suite_add_tcase(s, tc);
    return tu_run(s, CK_FORK);
}
