/* Job lifetime and the text stream between the engine thread and an HTTP thread.
 * The reader sleeps in poll() on an eventfd (woken by every push) and on its client socket
 * (POLLHUP/POLLERR: the client went away), so waiting costs no CPU and a reset is seen at once. */
#include "job.h"

#include <assert.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

double job_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

struct job *job_create(void)
{
    struct job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    j->notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (j->notify_fd < 0) {
        free(j);
        return NULL;
    }
    pthread_mutex_init(&j->mu, NULL);
    j->refs = 1;
    j->t = (struct job_timings){-1, -1, -1, -1, -1, -1};
    j->t_arrival = job_now();
    return j;
}

void job_ref(struct job *j)
{
    pthread_mutex_lock(&j->mu);
    assert(j->refs > 0); /* a reference holder is needed to take another */
    j->refs++;
    pthread_mutex_unlock(&j->mu);
}

void job_unref(struct job *j)
{
    if (!j) return;
    pthread_mutex_lock(&j->mu);
    assert(j->refs > 0);
    int last = --j->refs == 0;
    pthread_mutex_unlock(&j->mu);
    if (!last) return;
    if (j->on_release) j->on_release(j, j->on_release_ctx);
    for (int i = 0; i < j->n_msgs; i++)
        free(j->msgs[i].text);
    free(j->msgs);
    for (int i = 0; i < j->n_images; i++)
        free(j->images[i].data);
    for (int i = 0; i < j->params.n_stop; i++)
        free(j->params.stop[i]);
    free(j->params.json_schema);
    free(j->text);
    free(j->piece_end);
    close(j->notify_fd);
    pthread_mutex_destroy(&j->mu);
    free(j);
}

int job_add_msg(struct job *j, int role, const char *text, size_t len, int n_images)
{
    struct job_msg *m = realloc(j->msgs, (size_t)(j->n_msgs + 1) * sizeof *m);
    if (!m) return -1;
    j->msgs = m;
    char *t = malloc(len + 1);
    if (!t) return -1;
    memcpy(t, text, len);
    t[len] = 0;
    m[j->n_msgs++] = (struct job_msg){role, t, n_images};
    return 0;
}

static void wake(struct job *j)
{
    uint64_t one = 1;
    ssize_t rc = write(j->notify_fd, &one, sizeof one);
    (void)rc; /* EAGAIN only when the counter is saturated: the reader is awake anyway */
}

int job_push(struct job *j, const char *s, size_t n)
{
    if (n == 0) return 0;
    pthread_mutex_lock(&j->mu);
    if (j->text_len + n + 1 > j->text_cap) {
        size_t cap = j->text_cap ? j->text_cap : 256;
        while (cap < j->text_len + n + 1)
            cap *= 2;
        char *t = realloc(j->text, cap);
        if (!t) {
            pthread_mutex_unlock(&j->mu);
            return -1;
        }
        j->text = t, j->text_cap = cap;
    }
    if (j->n_pieces == j->pieces_cap) {
        size_t cap = j->pieces_cap ? 2 * j->pieces_cap : 64;
        size_t *pe = realloc(j->piece_end, cap * sizeof *pe);
        if (!pe) {
            pthread_mutex_unlock(&j->mu);
            return -1;
        }
        j->piece_end = pe, j->pieces_cap = cap;
    }
    memcpy(j->text + j->text_len, s, n);
    j->text_len += n;
    j->text[j->text_len] = 0;
    j->piece_end[j->n_pieces++] = j->text_len;
    pthread_mutex_unlock(&j->mu);
    wake(j);
    return 0;
}

void job_finish(struct job *j, int done, const char *error)
{
    assert(done != DONE_NONE);
    pthread_mutex_lock(&j->mu);
    if (!j->done) {
        j->done = done;
        if (error) {
            strncpy(j->error, error, sizeof j->error - 1);
            j->error[sizeof j->error - 1] = 0;
        }
        j->t.total_ms = (job_now() - j->t_arrival) * 1e3;
    }
    pthread_mutex_unlock(&j->mu);
    wake(j);
}

int job_cancelled(struct job *j)
{
    pthread_mutex_lock(&j->mu);
    int c = j->cancel;
    pthread_mutex_unlock(&j->mu);
    return c;
}

void job_cancel(struct job *j)
{
    pthread_mutex_lock(&j->mu);
    j->cancel = 1;
    pthread_mutex_unlock(&j->mu);
}

void job_left_queue(struct job *j, double now)
{
    pthread_mutex_lock(&j->mu);
    j->t.queue_ms = (now - j->t_arrival) * 1e3;
    pthread_mutex_unlock(&j->mu);
}

void job_admitted(struct job *j, int prompt_tokens, int image_tokens, double vision_ms,
                  int cached_tokens)
{
    pthread_mutex_lock(&j->mu);
    j->cached_tokens = cached_tokens;
    j->prompt_tokens = prompt_tokens;
    j->image_tokens = image_tokens;
    j->t.vision_ms = vision_ms;
    pthread_mutex_unlock(&j->mu);
}

void job_set_error_status(struct job *j, int status)
{
    pthread_mutex_lock(&j->mu);
    j->error_status = status;
    pthread_mutex_unlock(&j->mu);
}

void job_prefilled(struct job *j, double t_admit, double now)
{
    pthread_mutex_lock(&j->mu);
    j->t.prefill_ms = (now - t_admit) * 1e3;
    if (j->t.vision_ms > 0) j->t.prefill_ms -= j->t.vision_ms;
    pthread_mutex_unlock(&j->mu);
}

void job_generated(struct job *j, int tokens, double now)
{
    pthread_mutex_lock(&j->mu);
    if (tokens == 1) j->t.ttft_ms = (now - j->t_arrival) * 1e3;
    j->completion_tokens = tokens;
    pthread_mutex_unlock(&j->mu);
}

void job_decoded(struct job *j, int tokens, double decode_ms)
{
    pthread_mutex_lock(&j->mu);
    j->completion_tokens = tokens;
    if (decode_ms >= 0) j->t.decode_ms = decode_ms;
    pthread_mutex_unlock(&j->mu);
}

void job_set_http_result(struct job *j, int status, const char *error)
{
    pthread_mutex_lock(&j->mu);
    j->http_status = status;
    if (!j->error[0] && error[0]) snprintf(j->error, sizeof j->error, "%s", error);
    pthread_mutex_unlock(&j->mu);
}

struct job_progress job_progress(struct job *j)
{
    pthread_mutex_lock(&j->mu);
    struct job_progress p = {j->done, j->text_len, j->completion_tokens, j->error_status};
    pthread_mutex_unlock(&j->mu);
    return p;
}

int job_skip(struct job *j)
{
    pthread_mutex_lock(&j->mu);
    j->text_read = j->text_len;
    j->pieces_read = j->n_pieces;
    int done = j->done;
    pthread_mutex_unlock(&j->mu);
    return done;
}

size_t job_take(struct job *j, char **out, size_t *cap, int *done)
{
    pthread_mutex_lock(&j->mu);
    size_t n = 0;
    assert(j->pieces_read <= j->n_pieces && j->text_read <= j->text_len);
    if (j->pieces_read < j->n_pieces) {
        /* pieces end in order, each past the one before: the next one ends after text_read */
        assert(j->piece_end[j->pieces_read] > j->text_read);
        assert(j->piece_end[j->pieces_read] <= j->text_len);
        n = j->piece_end[j->pieces_read] - j->text_read;
        if (n + 1 > *cap) {
            char *p = realloc(*out, n + 1);
            if (!p) {
                pthread_mutex_unlock(&j->mu);
                *done = 0;
                return 0;
            }
            *out = p, *cap = n + 1;
        }
        memcpy(*out, j->text + j->text_read, n);
        (*out)[n] = 0;
        j->text_read += n;
        j->pieces_read++;
    }
    *done = j->pieces_read == j->n_pieces ? j->done : 0;
    pthread_mutex_unlock(&j->mu);
    return n;
}

/* A client that half-closes (shutdown(SHUT_WR) after its request, as `nc -N`) still reads
 * the answer, and TCP cannot tell it from one that closed for good until a write fails: so
 * end-of-input (POLLRDHUP) stops being watched, and a gone client is seen by its reset
 * (POLLHUP/POLLERR, after the next write) or by the failing write itself. */
int job_wait(struct job *j, int sock_fd, double deadline)
{
    short sock_events = POLLRDHUP;
    for (;;) {
        pthread_mutex_lock(&j->mu);
        int ready = j->text_read < j->text_len || j->done;
        pthread_mutex_unlock(&j->mu);
        if (ready) return 1;

        struct pollfd p[2] = {{j->notify_fd, POLLIN, 0}, {sock_fd, sock_events, 0}};
        int timeout = -1;
        if (deadline > 0) {
            double left = deadline - job_now();
            if (left <= 0) return 0;
            timeout = (int)(left * 1e3) + 1;
        }
        int rc = poll(p, sock_fd >= 0 ? 2 : 1, timeout);
        if (rc < 0 && errno != EINTR) return -1;
        if (rc > 0 && sock_fd >= 0 && (p[1].revents & (POLLHUP | POLLERR))) return -1;
        if (rc > 0 && sock_fd >= 0 && (p[1].revents & POLLRDHUP)) sock_events = 0;
        if (rc > 0 && (p[0].revents & POLLIN)) {
            uint64_t v;
            ssize_t r = read(j->notify_fd, &v, sizeof v);
            (void)r;
        }
    }
}

const char *job_done_name(int done)
{
    switch (done) {
    case DONE_STOP: return "stop";
    case DONE_LENGTH: return "length";
    case DONE_CANCELLED: return "cancelled";
    case DONE_TIMEOUT: return "timeout";
    case DONE_ERROR: return "error";
    default: return "running";
    }
}

size_t job_utf8_sanitize(const char *in, size_t n, char *out)
{
    const unsigned char *s = (const unsigned char *)in;
    size_t o = 0, i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len = c < 0x80             ? 1
                     : (c & 0xE0) == 0xC0 ? 2
                     : (c & 0xF0) == 0xE0 ? 3
                     : (c & 0xF8) == 0xF0 ? 4
                                          : 0;
        int ok = len > 0 && i + len <= n;
        for (size_t k = 1; ok && k < len; k++)
            ok = (s[i + k] & 0xC0) == 0x80;
        if (ok && len > 1) {
            /* reject overlong forms, surrogates and code points past U+10FFFF */
            unsigned cp = len == 2   ? (c & 0x1F) << 6 | (s[i + 1] & 0x3F)
                          : len == 3 ? (c & 0x0F) << 12 | (s[i + 1] & 0x3F) << 6 | (s[i + 2] & 0x3F)
                                     : (c & 0x07) << 18 | (s[i + 1] & 0x3F) << 12 |
                                           (s[i + 2] & 0x3F) << 6 | (s[i + 3] & 0x3F);
            ok = (len == 2 && cp >= 0x80) ||
                 (len == 3 && cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF)) ||
                 (len == 4 && cp >= 0x10000 && cp <= 0x10FFFF);
        }
        if (ok && c != 0) {
            memcpy(out + o, s + i, len);
            o += len;
            i += len;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        }
    }
    return o;
}
