/* Continuous batching over a fixed set of slots. Only the engine thread touches the slots and
 * makes the backend's per-slot calls (admit, prefill, decode, release); HTTP threads enqueue
 * jobs and read their streams (and count prompt tokens through the backend before that). */
#include "sched.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

/* SLOT_ENCODE: the backend builds the prompt off this thread (the vision encoder has its own
 * thread and pool); the other slots keep decoding meanwhile. */
enum slot_state { SLOT_FREE, SLOT_ADMIT, SLOT_ENCODE, SLOT_PREFILL, SLOT_PREFILLED, SLOT_DECODE };

/* The longest the engine thread sleeps while only encodes are running: it still notices
 * cancelled and expired jobs that soon without a wake-up. */
#define ENCODE_WAIT_MS 20

#define PEND_MAX 1024

struct slot {
    struct job *job;
    int state;
    int generated;
    int prefill_left;
    double t_admit, t_prefill_done, t_first, t_last;
    char pend[PEND_MAX]; /* text held back while it may be the start of a stop string */
    size_t pend_len;
};

struct sched {
    struct sched_options o;
    struct backend *be;
    struct metrics *m;

    pthread_mutex_t mu;
    pthread_cond_t work; /* engine thread waits here when idle */
    pthread_cond_t idle; /* sched_drain waits here */
    struct job **queue;  /* ring of waiting jobs */
    int qcap, qhead, qlen;
    int busy; /* slots holding a job (engine thread's count, published) */
    int accepting, cancel_all, stop, stepping;
    int woken; /* the backend finished admission work since the engine thread last looked */
    double heartbeat;

    struct slot *slots;
    int *batch;
    int *free_slots;
    struct job **taken; /* jobs moved out of the queue, waiting for place_jobs */
    struct backend_token *out;
    pthread_t thread;
};

/* The ring's indices are in range and waiting plus running jobs fit in it (s->mu held). Only
 * asserts call it. */
static inline int queue_ok(const struct sched *s)
{
    return s->qhead >= 0 && s->qhead < s->qcap && s->qlen >= 0 && s->busy >= 0 &&
           s->busy <= s->o.slots && s->qlen + s->busy <= s->qcap;
}

size_t sched_stop_scan(const char *pend, size_t len, char *const *stop, int n_stop, int *hit)
{
    *hit = 0;
    size_t first = len;
    for (int i = 0; i < n_stop; i++) {
        size_t sl = strlen(stop[i]);
        if (!sl || sl > len) continue;
        for (size_t p = 0; p + sl <= len; p++)
            if (memcmp(pend + p, stop[i], sl) == 0) {
                if (p < first) first = p;
                *hit = 1;
                break;
            }
    }
    if (*hit) return first;
    /* Hold back the longest suffix that is a proper prefix of some stop string. */
    size_t keep = 0;
    for (int i = 0; i < n_stop; i++) {
        size_t sl = strlen(stop[i]);
        for (size_t k = sl > len ? len : sl - 1; k > keep; k--)
            if (memcmp(pend + len - k, stop[i], k) == 0) {
                keep = k;
                break;
            }
    }
    return len - keep;
}

static void finish_slot(struct sched *s, struct slot *sl, int done, const char *error)
{
    struct job *j = sl->job;
    assert(j && sl->state != SLOT_FREE); /* only a slot holding a job can finish */
    if (sl->pend_len && done != DONE_ERROR) job_push(j, sl->pend, sl->pend_len);
    double now = job_now();
    job_decoded(j, sl->generated, sl->t_first > 0 ? (now - sl->t_first) * 1e3 : -1);
    if (sl->state != SLOT_ADMIT) s->be->ops->release(s->be, (int)(sl - s->slots));
    if (done == DONE_CANCELLED || done == DONE_TIMEOUT) metrics_add(s->m, CNT_CANCELLED, 1);
    metrics_add(s->m, CNT_COMPLETION_TOKENS, sl->generated);
    job_finish(j, done, error);
    if (error && done == DONE_ERROR) log_warn("request %s failed: %s", j->request_id, error);
    job_unref(j);
    memset(sl, 0, sizeof *sl);
}

/* Text from one token: append, hold back a possible stop prefix, push the rest. */
static int emit(struct slot *sl, const char *text, size_t n)
{
    struct job *j = sl->job;
    if (n > sizeof((struct backend_token *)0)->text) n = sizeof((struct backend_token *)0)->text;
    if (sl->pend_len + 3 * n > PEND_MAX) { /* cannot happen with bounded stops; flush anyway */
        job_push(j, sl->pend, sl->pend_len);
        sl->pend_len = 0;
    }
    sl->pend_len += job_utf8_sanitize(text, n, sl->pend + sl->pend_len);
    assert(sl->pend_len <= PEND_MAX);
    int hit;
    size_t send = sched_stop_scan(sl->pend, sl->pend_len, j->params.stop, j->params.n_stop, &hit);
    assert(send <= sl->pend_len);
    if (send) job_push(j, sl->pend, send);
    if (hit) {
        sl->pend_len = 0;
        return 1;
    }
    memmove(sl->pend, sl->pend + send, sl->pend_len - send);
    sl->pend_len -= send;
    return 0;
}

/* Ends the running jobs whose client left or whose deadline passed (all of them while
 * shutting down). */
static void reap_slots(struct sched *s, int cancel_all)
{
    double now = job_now();
    for (int i = 0; i < s->o.slots; i++) {
        struct slot *sl = &s->slots[i];
        if (!sl->job) continue;
        if (cancel_all || job_cancelled(sl->job))
            finish_slot(s, sl, DONE_CANCELLED, NULL);
        else if (now > sl->job->deadline)
            finish_slot(s, sl, DONE_TIMEOUT, "request deadline passed");
    }
}

/* Admission's outcome: rc 0, the prompt waits for prefill; 1, it is still being built
 * (SLOT_ENCODE); -1, the job fails. */
static void admitted(struct sched *s, struct slot *sl, int rc, const struct backend_admit *a,
                     int client_error, const char *err)
{
    if (rc < 0) {
        job_set_error_status(sl->job, client_error ? 422 : 500);
        finish_slot(s, sl, DONE_ERROR, err);
    } else if (rc > 0) {
        sl->state = SLOT_ENCODE;
    } else {
        job_admitted(sl->job, a->prompt_tokens, a->image_tokens, a->vision_ms, a->cached_tokens);
        metrics_add(s->m, CNT_PROMPT_TOKENS, a->prompt_tokens);
        metrics_add(s->m, CNT_PREFIX_TOKENS_REUSED, a->cached_tokens);
        metrics_add(s->m, CNT_IMAGE_CACHE_HITS, a->image_hits);
        metrics_add(s->m, CNT_IMAGE_CACHE_MISSES, a->image_misses);
        sl->prefill_left = a->prompt_tokens - a->cached_tokens;
        sl->state = SLOT_PREFILL;
    }
}

/* Newly placed jobs: tokenize + vision encode, or hand the encode to the backend's vision
 * thread; ready prompts then wait for prefill. */
static void admit_slots(struct sched *s)
{
    const struct backend_ops *ops = s->be->ops;
    char err[256];
    for (int i = 0; i < s->o.slots; i++) {
        struct slot *sl = &s->slots[i];
        if (sl->state != SLOT_ADMIT) continue;
        struct job *j = sl->job;
        struct backend_admit a = {.vision_ms = -1};
        int client_error = 0;
        sl->t_admit = job_now();
        metrics_observe(s->m, HIST_QUEUE_SECONDS, sl->t_admit - j->t_arrival);
        job_left_queue(j, sl->t_admit);
        int rc = ops->admit(s->be, i, j, &a, &client_error, err, sizeof err);
        assert(rc <= 0 || ops->admit_poll); /* only a backend that can be polled defers */
        admitted(s, sl, rc, &a, client_error, err);
    }
}

/* Slots whose prompt is built off the engine thread: those that are ready join prefill. */
static void poll_encodes(struct sched *s)
{
    char err[256];
    for (int i = 0; i < s->o.slots; i++) {
        struct slot *sl = &s->slots[i];
        if (sl->state != SLOT_ENCODE) continue;
        struct backend_admit a = {.vision_ms = -1};
        int client_error = 0;
        int rc = s->be->ops->admit_poll(s->be, i, &a, &client_error, err, sizeof err);
        if (rc <= 0) admitted(s, sl, rc, &a, client_error, err);
    }
}

/* Queues one chunk of prompt tokens for this step, shared among the slots waiting for it, so
 * decoding slots are never stalled for more than a chunk's worth of work. Returns 1 when any
 * prompt work was queued or completed (the step then has a forward pass to run). */
static int prefill_slots(struct sched *s)
{
    char err[256];
    int budget = s->o.prefill_chunk, queued = 0, prefilled = 0;
    for (int i = 0; i < s->o.slots && budget > 0; i++) {
        struct slot *sl = &s->slots[i];
        if (sl->state != SLOT_PREFILL) continue;
        int left = s->be->ops->prefill(s->be, i, budget, err, sizeof err);
        if (left < 0) {
            finish_slot(s, sl, DONE_ERROR, err);
            continue;
        }
        assert(left <= sl->prefill_left); /* a backend never adds prompt work */
        budget -= sl->prefill_left - left;
        queued += sl->prefill_left - left;
        sl->prefill_left = left;
        if (left == 0) sl->state = SLOT_PREFILLED, prefilled++;
    }
    return queued > 0 || prefilled > 0;
}

/* The step's one batched forward pass: the queued prompt chunks and a token for each of the
 * n slots in s->batch. Slots whose prompt it completes start generating. Returns 0, or -1
 * after failing every slot the pass covered. */
static int decode_batch(struct sched *s, int n, double *t_done)
{
    char err[256];
    if (s->be->ops->decode(s->be, n, s->batch, s->out, err, sizeof err) != 0) {
        for (int i = 0; i < s->o.slots; i++)
            if (s->slots[i].state == SLOT_DECODE || s->slots[i].state == SLOT_PREFILLED)
                finish_slot(s, &s->slots[i], DONE_ERROR, err);
        return -1;
    }
    double t1 = *t_done = job_now();
    for (int i = 0; i < s->o.slots; i++) {
        struct slot *sl = &s->slots[i];
        if (sl->state != SLOT_PREFILLED) continue;
        sl->state = SLOT_DECODE;
        sl->t_prefill_done = t1;
        job_prefilled(sl->job, sl->t_admit, t1);
    }
    return 0;
}

/* Hands each batched slot its new token: text to the job's stream, then end of generation,
 * a stop string or max_tokens finishes the slot. t0..t1 is the forward pass. */
static void deliver_tokens(struct sched *s, int n, double t0, double t1)
{
    for (int k = 0; k < n; k++) {
        struct slot *sl = &s->slots[s->batch[k]];
        struct job *j = sl->job;
        struct backend_token *t = &s->out[k];
        assert(j && sl->state == SLOT_DECODE); /* batched slots finish only here */
        if (t->eos) {
            if (t->len) emit(sl, t->text, t->len); /* the detokenizer's last bytes */
            finish_slot(s, sl, t->eos == BACKEND_EOS_LENGTH ? DONE_LENGTH : DONE_STOP, NULL);
            continue;
        }
        sl->generated++;
        job_generated(j, sl->generated, t1);
        if (sl->generated == 1) {
            sl->t_first = t1;
            metrics_observe(s->m, HIST_TTFT_SECONDS, t1 - j->t_arrival);
        } else {
            metrics_observe(s->m, HIST_TOKEN_SECONDS, t1 - t0);
        }
        if (emit(sl, t->text, t->len))
            finish_slot(s, sl, DONE_STOP, NULL);
        else if (sl->generated >= j->params.max_tokens)
            finish_slot(s, sl, DONE_LENGTH, NULL);
    }
}

/* One scheduling step, on the engine thread without s->mu. Returns 0 when it had nothing to
 * run (every busy slot is waiting for its encode). */
static int step(struct sched *s, int cancel_all)
{
    reap_slots(s, cancel_all);
    admit_slots(s);
    poll_encodes(s);
    /* The slots already generating; a slot whose prompt completes this step starts next step
     * (its first token is sampled from the logits this step computes). */
    int n = 0;
    for (int i = 0; i < s->o.slots; i++)
        if (s->slots[i].state == SLOT_DECODE) s->batch[n++] = i;
    int prompt_work = prefill_slots(s);
    if (n == 0 && !prompt_work) return 0;
    double t0 = job_now(), t1;
    if (decode_batch(s, n, &t1) == 0) deliver_tokens(s, n, t0, t1);
    return 1;
}

/* The backend's vision thread finished a prompt: wake the engine thread. */
static void sched_wake(void *arg)
{
    struct sched *s = arg;
    pthread_mutex_lock(&s->mu);
    s->woken = 1;
    pthread_cond_signal(&s->work);
    pthread_mutex_unlock(&s->mu);
}

/* Nothing ran but slots wait for their encodes: sleep until one finishes, a job arrives, or
 * ENCODE_WAIT_MS pass (s->mu held). */
static void wait_encodes(struct sched *s)
{
    if (s->woken || s->stop || s->cancel_all) return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += ENCODE_WAIT_MS * 1000000L;
    if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    pthread_cond_timedwait(&s->work, &s->mu, &ts);
}

/* Drop waiting jobs whose client left or whose deadline passed, without waiting for a slot.
 * Called with s->mu held. */
static void expire_queued(struct sched *s)
{
    double now = job_now();
    int kept = 0;
    for (int i = 0; i < s->qlen; i++) {
        struct job *j = s->queue[(s->qhead + i) % s->qcap];
        int done = job_cancelled(j) ? DONE_CANCELLED : now > j->deadline ? DONE_TIMEOUT : 0;
        if (!done) {
            s->queue[(s->qhead + kept++) % s->qcap] = j;
            continue;
        }
        job_left_queue(j, now);
        metrics_add(s->m, CNT_CANCELLED, 1);
        job_finish(j, done, done == DONE_TIMEOUT ? "request deadline passed while queued" : NULL);
        job_unref(j);
    }
    s->qlen = kept;
}

/* Seats the taken jobs in free slots, each where the backend says its prompt is best served
 * (a slot whose KV already holds its prefix), else the first free one. Engine thread only. */
static void place_jobs(struct sched *s, int n_taken)
{
    for (int t = 0; t < n_taken; t++) {
        int n_free = 0;
        for (int i = 0; i < s->o.slots; i++)
            if (!s->slots[i].job) s->free_slots[n_free++] = i;
        assert(n_free > 0); /* no more jobs were taken than slots were free */
        int k = s->be->ops->pick_slot
                    ? s->be->ops->pick_slot(s->be, s->taken[t], s->free_slots, n_free)
                    : 0;
        if (k < 0 || k >= n_free) k = 0;
        struct slot *sl = &s->slots[s->free_slots[k]];
        assert(sl->state == SLOT_FREE);
        sl->job = s->taken[t];
        sl->state = SLOT_ADMIT;
    }
}

static void *engine_main(void *arg)
{
    struct sched *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->stop && s->qlen == 0 && s->busy == 0) {
            s->heartbeat = job_now();
            s->stepping = 0;
            pthread_cond_broadcast(&s->idle);
            pthread_cond_wait(&s->work, &s->mu);
        }
        if (s->stop && s->qlen == 0 && s->busy == 0) break;
        s->stepping = 1;
        int cancel_all = s->cancel_all;
        expire_queued(s);
        /* Take as many waiting jobs as there are free slots (expire_queued has just ended the
         * cancelled and expired ones); place_jobs seats them without the lock, step() admits
         * them. */
        int n_free = 0, n_taken = 0;
        for (int i = 0; i < s->o.slots; i++)
            n_free += s->slots[i].job == NULL;
        while (n_taken < n_free && s->qlen > 0) {
            s->taken[n_taken++] = s->queue[s->qhead];
            s->qhead = (s->qhead + 1) % s->qcap;
            s->qlen--;
            s->busy++;
        }
        assert(queue_ok(s));
        s->woken = 0;
        pthread_mutex_unlock(&s->mu);

        place_jobs(s, n_taken);
        int ran = step(s, cancel_all);

        pthread_mutex_lock(&s->mu);
        int busy = 0;
        for (int i = 0; i < s->o.slots; i++) {
            /* A slot holds a job exactly when it is in one of the working states. */
            assert((s->slots[i].job != NULL) == (s->slots[i].state != SLOT_FREE));
            busy += s->slots[i].job != NULL;
        }
        assert(busy <= s->busy); /* only this thread fills slots */
        s->busy = busy;
        assert(queue_ok(s));
        s->heartbeat = job_now();
        if (!ran && busy > 0 && !(s->qlen > 0 && busy < s->o.slots)) wait_encodes(s);
    }
    s->stepping = 0;
    pthread_cond_broadcast(&s->idle);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

struct sched *sched_create(const struct sched_options *o, struct backend *b, struct metrics *m,
                           char *err, size_t errlen)
{
    struct sched *s = calloc(1, sizeof *s);
    if (!s) goto oom;
    s->o = *o;
    s->be = b;
    s->m = m;
    s->qcap = o->slots + o->queue_max;
    s->queue = calloc((size_t)s->qcap, sizeof *s->queue);
    s->slots = calloc((size_t)o->slots, sizeof *s->slots);
    s->batch = calloc((size_t)o->slots, sizeof *s->batch);
    s->out = calloc((size_t)o->slots, sizeof *s->out);
    s->free_slots = calloc((size_t)o->slots, sizeof *s->free_slots);
    s->taken = calloc((size_t)o->slots, sizeof *s->taken);
    if (!s->queue || !s->slots || !s->batch || !s->out || !s->free_slots || !s->taken) goto oom;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->work, NULL);
    pthread_cond_init(&s->idle, NULL);
    s->accepting = 1;
    s->heartbeat = job_now();
    if (b->ops->set_notify) b->ops->set_notify(b, sched_wake, s);
    if (pthread_create(&s->thread, NULL, engine_main, s) != 0) {
        snprintf(err, errlen, "scheduler: cannot start the engine thread");
        pthread_cond_destroy(&s->idle);
        pthread_cond_destroy(&s->work);
        pthread_mutex_destroy(&s->mu);
        goto fail;
    }
    return s;
oom:
    snprintf(err, errlen, "scheduler: out of memory");
fail:
    if (s) free(s->queue), free(s->slots), free(s->batch), free(s->out), free(s->free_slots);
    if (s) free(s->taken);
    free(s);
    return NULL;
}

int sched_submit(struct sched *s, struct job *j)
{
    pthread_mutex_lock(&s->mu);
    int rc = SCHED_OK;
    if (!s->accepting)
        rc = SCHED_DRAINING;
    else if (s->qlen + s->busy >= s->qcap)
        rc = SCHED_FULL;
    else {
        job_ref(j);
        s->queue[(s->qhead + s->qlen) % s->qcap] = j;
        s->qlen++;
        assert(queue_ok(s));
        pthread_cond_signal(&s->work);
    }
    pthread_mutex_unlock(&s->mu);
    if (rc == SCHED_FULL) metrics_add(s->m, CNT_REJECTED_QUEUE_FULL, 1);
    return rc;
}

void sched_snapshot(struct sched *s, int *active, int *queued)
{
    pthread_mutex_lock(&s->mu);
    *active = s->busy;
    *queued = s->qlen;
    pthread_mutex_unlock(&s->mu);
}

double sched_heartbeat(struct sched *s, int *busy)
{
    pthread_mutex_lock(&s->mu);
    double h = s->heartbeat;
    if (busy) *busy = s->stepping;
    pthread_mutex_unlock(&s->mu);
    return h;
}

static void wait_idle(struct sched *s, double deadline)
{
    while (s->qlen > 0 || s->busy > 0 || s->stepping) {
        if (deadline <= 0) {
            pthread_cond_wait(&s->idle, &s->mu);
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double left = deadline - job_now();
        if (left <= 0) return;
        ts.tv_sec += (time_t)left;
        ts.tv_nsec += (long)((left - floor(left)) * 1e9);
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        if (pthread_cond_timedwait(&s->idle, &s->mu, &ts) == ETIMEDOUT) return;
    }
}

void sched_drain(struct sched *s, double grace_s)
{
    pthread_mutex_lock(&s->mu);
    s->accepting = 0;
    wait_idle(s, job_now() + grace_s);
    if (s->qlen > 0 || s->busy > 0) {
        log_warn("drain: cancelling %d running and %d queued requests after %.0f s", s->busy,
                 s->qlen, grace_s);
        s->cancel_all = 1;
        /* Queued jobs are admitted and cancelled in the next steps without running. */
        pthread_cond_signal(&s->work);
        wait_idle(s, 0);
    }
    pthread_mutex_unlock(&s->mu);
}

void sched_destroy(struct sched *s)
{
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->accepting = 0;
    s->stop = 1;
    s->cancel_all = 1;
    pthread_cond_signal(&s->work);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    if (s->be->ops->set_notify) s->be->ops->set_notify(s->be, NULL, NULL);
    for (int i = 0; i < s->qlen; i++)
        job_unref(s->queue[(s->qhead + i) % s->qcap]);
    pthread_cond_destroy(&s->idle);
    pthread_cond_destroy(&s->work);
    pthread_mutex_destroy(&s->mu);
    free(s->queue);
    free(s->slots);
    free(s->batch);
    free(s->out);
    free(s->free_slots);
    free(s->taken);
    free(s);
}
