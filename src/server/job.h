/* A generation job: what a client asked for (filled by the API codecs), and the stream of text
 * the scheduler produces for it (read by the HTTP side). Shared by exactly those two sides,
 * reference counted; the last unref sends its stats record. */
#ifndef TERN_SERVER_JOB_H
#define TERN_SERVER_JOB_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/image.h"

#define JOB_MAX_STOP 4
#define JOB_MAX_IMAGES 8

enum job_role { ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT };

struct job_msg {
    int role; /* enum job_role */
    char *text;
    int n_images; /* images (in order of job->images) that precede this message's text */
};

/* A picture as it came: compressed bytes and the size its header states. Decoded only after
 * admission (upload.c). */
struct job_image {
    unsigned char *data; /* owned */
    size_t len;
    int w, h;
};

struct job_params {
    int max_tokens;
    float temperature, top_p, min_p, repeat_penalty;
    int top_k;
    uint64_t seed; /* 0 = random */
    int has_seed;
    char *stop[JOB_MAX_STOP];
    int n_stop;
    /* Constrained output (engine/grammar.h): a JSON Schema as text, "{}" for any JSON value;
     * NULL = free text. Owned (malloc'd); checked with grammar_compile when parsed. */
    char *json_schema;
};

enum job_done { DONE_NONE = 0, DONE_STOP, DONE_LENGTH, DONE_CANCELLED, DONE_TIMEOUT, DONE_ERROR };

/* Milliseconds; -1 when the phase did not happen. */
struct job_timings {
    double queue_ms, vision_ms, prefill_ms, ttft_ms, decode_ms, total_ms;
};

struct job {
    /* ---- input: set before submission, read-only afterwards ---- */
    struct job_msg *msgs;
    int n_msgs;
    struct job_image images[JOB_MAX_IMAGES]; /* checked, not decoded (upload.c) */
    int n_images;
    struct job_params params;
    double t_arrival; /* monotonic seconds */
    double deadline;  /* monotonic seconds */
    char request_id[40];

    /* ---- output: guarded by mu; changed only by job.c's functions below ---- */
    pthread_mutex_t mu;
    char *text; /* all text produced so far */
    size_t text_len, text_cap;
    size_t text_read;  /* HTTP side's position */
    size_t *piece_end; /* end offset of each push: one streamed chunk per token */
    size_t n_pieces, pieces_cap, pieces_read;
    int done; /* enum job_done, DONE_NONE while running */
    char error[256];
    int error_status; /* HTTP status for DONE_ERROR: 422 bad input, 500 engine */
    int prompt_tokens, image_tokens, completion_tokens;
    int cached_tokens; /* prompt prefix found in the slot's KV cache */
    struct job_timings t;
    int notify_fd; /* eventfd: written on every push and on done */
    int cancel;    /* set by HTTP side (disconnect); read by scheduler */

    /* ---- for the stats record (HTTP side, before the last unref) ---- */
    int refs;
    int recorded; /* the row was written before the last line went out (http.c) */
    int http_status;
    char endpoint[32];
    char client[64];
    char model[128];
    void (*on_release)(struct job *j, void *ctx);
    void *on_release_ctx;
};

struct job *job_create(void);
void job_ref(struct job *j);
void job_unref(struct job *j); /* frees on the last reference (after on_release) */
int job_add_msg(struct job *j, int role, const char *text, size_t len, int n_images);

/* Scheduler side. Every change to the output fields goes through these, under the lock. */
int job_push(struct job *j, const char *s, size_t n); /* append text, wake the reader */
void job_finish(struct job *j, int done, const char *error);
int job_cancelled(struct job *j);
void job_left_queue(struct job *j, double now); /* queue time */
void job_admitted(struct job *j, int prompt_tokens, int image_tokens, double vision_ms,
                  int cached_tokens);
void job_set_error_status(struct job *j, int status);          /* before job_finish(DONE_ERROR) */
void job_prefilled(struct job *j, double t_admit, double now); /* prefill time, vision excluded */
void job_generated(struct job *j, int tokens, double now);     /* the first one sets the TTFT */
void job_decoded(struct job *j, int tokens, double decode_ms); /* decode_ms < 0: none */

/* HTTP side. */
void job_cancel(struct job *j);
/* For the stats record, once the response is over: its status, and its error if the job has
 * none of its own. */
void job_set_http_result(struct job *j, int status, const char *error);
struct job_progress {
    int done;
    size_t text_len;
    int completion_tokens;
    int error_status;
};
struct job_progress job_progress(struct job *j);
/* Mark everything produced so far as read without copying it (a whole-response reader finds
 * the text in j->text at the end); returns the done state. */
int job_skip(struct job *j);
/* Copy the next unread piece (one push: usually one token) into *out, NUL-terminated (grown
 * as needed, caller frees); returns its length, 0 when none is waiting. *done receives the
 * done state, set only once every piece has been taken. */
size_t job_take(struct job *j, char **out, size_t *cap, int *done);
/* Wait until there is something to read, the job is done, the socket (sock_fd >= 0) is
 * hung up, or the deadline passes. Returns 1 readable, 0 timed out, -1 client gone. */
int job_wait(struct job *j, int sock_fd, double deadline);

/* Copies n bytes to out (room for 3n), replacing each byte that is not part of valid UTF-8
 * with U+FFFD, so every API emits valid JSON strings. Returns the bytes written. */
size_t job_utf8_sanitize(const char *in, size_t n, char *out);

const char *job_done_name(int done);
double job_now(void); /* monotonic seconds */

#endif
