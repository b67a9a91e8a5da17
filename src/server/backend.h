/* What the scheduler needs from an inference engine, slot by slot. The scheduler owns the
 * order of work (admit, prefill in chunks, one batched decode per step); a backend only does
 * what it is told. Two implementations: backend_engine.c over src/engine (the real model) and
 * backend_echo.c, a deterministic TEST DOUBLE that answers with the prompt's own words. */
#ifndef TERN_SERVER_BACKEND_H
#define TERN_SERVER_BACKEND_H

#include <stddef.h>

#include "job.h"

struct upload_decoder;

struct backend_admit {
    int prompt_tokens; /* text tokens to prefill (image tokens included) */
    int image_tokens;
    double vision_ms;
    int cached_tokens; /* leading prompt tokens the slot's KV already held: not prefilled */
    int image_hits;    /* pictures whose rows came from the image cache */
    int image_misses;  /* pictures encoded */
};

/* One slot's result from a batched decode step. */
struct backend_token {
    char text[256]; /* detokenized piece; may be empty (mid UTF-8 sequence) */
    size_t len;
    int eos; /* end of generation (end-of-utterance / EOS); text may still hold
                the detokenizer's last bytes. BACKEND_EOS_LENGTH: a limit ended it (the
                slot's context is full, or a budget closed the answer early) */
};
enum { BACKEND_EOS_LENGTH = 2 };

struct backend_info {
    const char *name;     /* model name for the APIs */
    const char *family;   /* general.architecture: "llama", "phi2" */
    const char *quant;    /* "TQ2_0" */
    long long size_bytes; /* model files on disk */
    long long params;     /* parameter count, 0 when unknown */
    int has_vision;
    int ctx_size; /* positions per slot, after the model's cap; 0: ctx_size as configured */
};

struct backend;

struct backend_ops {
    /* Tokenize the job's messages (chat template) and run the vision encoder on its images;
     * the prompt is then ready for prefill in this slot. Returns 0, or -1 with err (a bad
     * request, e.g. prompt too long: *client_error = 1), or 1: the work goes on off the
     * engine thread (images encode on the backend's vision thread) and admit_poll says when
     * it is done. */
    int (*admit)(struct backend *b, int slot, struct job *j, struct backend_admit *out,
                 int *client_error, char *err, size_t errlen);
    /* Queue up to `budget` prompt tokens of the slot for this step's decode call (the real
     * engine runs them in the same forward pass). Returns the tokens left after them
     * (0 = the prompt is complete after this step), or -1. */
    int (*prefill)(struct backend *b, int slot, int budget, char *err, size_t errlen);
    /* The step's ONE forward pass: the queued prefill chunks, and one new token for each
     * listed slot (sampled with its job's params from the previous step's logits).
     * out[i] belongs to slots[i]; n may be 0 (prefill only). Returns 0 or -1 with err. */
    int (*decode)(struct backend *b, int n, const int *slots, struct backend_token *out, char *err,
                  size_t errlen);
    /* Forget the slot's sequence (its KV cache region is free again). */
    void (*release)(struct backend *b, int slot);
    /* Count the tokens of a text (for limits checks before queueing); -1 if unknown. */
    int (*count_tokens)(struct backend *b, const char *text);
    void (*info)(struct backend *b, struct backend_info *out);
    void (*destroy)(struct backend *b);
    /* Optional (NULL: the first free slot): which of the n free slots (indices into the
     * scheduler's slots) the job should take, e.g. the one whose cached prefix it shares
     * most. Returns an index into free_slots. */
    int (*pick_slot)(struct backend *b, const struct job *j, const int *free_slots, int n);
    /* After admit returned 1: 1 while the work goes on, then 0 with out filled (the prompt is
     * ready for prefill) or -1 with err, as admit. Never blocks. release abandons the work. */
    int (*admit_poll)(struct backend *b, int slot, struct backend_admit *out, int *client_error,
                      char *err, size_t errlen);
    /* fn(arg) is called, from another thread, whenever admission work finishes, so that a
     * scheduler with nothing else to do can sleep until then. */
    void (*set_notify)(struct backend *b, void (*fn)(void *arg), void *arg);
};

struct backend {
    const struct backend_ops *ops;
};

struct backend_options {
    const char *model_path, *mmproj_path, *model_name;
    int slots, ctx_size, threads, prefill_chunk;
    int echo_delay_ms;
    long image_cache_bytes; /* picture embeddings kept; 0 = none */
    int prefix_cache;       /* reuse a slot's KV for the prompt prefix it shares */
    int vision_threads;     /* the vision encoder's own pool; <= 0: one per core */
    int vision_nice;        /* its threads' nice value (0-19): decoding streams come first */
    int echo_vision_ms;     /* echo engine only: a request with images takes this long to admit,
                               off the engine thread (0: admitted at once) */
    struct upload_decoder *decoder; /* decodes admitted jobs' pictures; NULL: the backend's
                                       own thread decodes them, unbounded (unit tests) */
};

struct backend *backend_echo_create(const struct backend_options *o, char *err, size_t errlen);
/* NULL with err when the engine is not built in or the model cannot be loaded. */
struct backend *backend_engine_create(const struct backend_options *o, char *err, size_t errlen);

#endif
