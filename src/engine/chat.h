/* A request's conversation turned into what eng_step eats: the SmolVLM chat prompt as token
 * ids and, at each <image> position, the vision encoder's embedding row.
 *
 * This is the one path from pictures and text to a prompt. tern run, tern perplexity and
 * ternd all take it, so the same request gives the same tokens in each:
 *
 *     chat_ctx cc;     chat_init(&cc, model, tok, err, sizeof err);
 *     chat_msg msg = {.role = PROMPT_USER, .text = "What is this?", .n_images = 1};
 *     chat_prompt p;   chat_prompt_build(&cc, ctx, &msg, 1, &picture, 1, &p, err, sizeof err);
 *     ... eng_step items take p.ids + pos and p.rows + pos (chat_prefill does it for one slot)
 *     chat_prompt_free(&p);
 *
 * Images are preprocessed as the checkpoint's Idefics3 processor does (img_proc_cfg_from_gguf;
 * a processor that resizes past one tile splits the picture into crops), then encoded; their
 * rows go, in order, to the <image> ids prompt_build laid out (crops row by row, then the
 * global tile: img_tiles' order).
 *
 * Repeats are cheap: with a cache (cc.cache, embcache.h) a picture seen before takes its rows
 * from there instead of the encoder; and a chat_history records what a KV region was computed
 * from, so a new prompt can keep the positions it shares with it (chat_history_common). */
#ifndef TERN_ENGINE_CHAT_H
#define TERN_ENGINE_CHAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/embcache.h"
#include "engine/engine.h"
#include "engine/image.h"
#include "engine/prompt.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"

typedef struct {
    const eng_model *m;
    const eng_model_info *info;
    const tok *t;
    prompt_ctx pc;
    img_proc_cfg icfg;      /* valid when info->has_vision; callers may override icfg.split */
    embcache *cache;        /* NULL (chat_init's choice) or the caller's: picture rows reused */
    embcache_key model_key; /* the vision model's identity, part of every picture's key */
} chat_ctx;

/* Looks up the template's special tokens and the image processor's settings. */
int chat_init(chat_ctx *c, const eng_model *m, const tok *t, char *err, size_t errlen);

/* One message: its first n_images pictures come next from the request's list, and go before
 * the text (as SmolVLM's examples put them). */
typedef struct {
    prompt_role role;
    const char *text;
    int n_images;
} chat_msg;

/* One picture of a prompt: which rows of chat_prompt.embd are its own. */
typedef struct {
    embcache_key key; /* model + preprocessing + pixels: equal keys, equal rows */
    int first, n_rows;
} chat_image;

typedef struct {
    int32_t *ids; /* the prompt, ending with "Assistant:" */
    int n;
    const float **rows; /* n entries: the row that replaces ids[i]'s embedding, or NULL */
    float *embd;        /* every image's rows, image after image */
    int n_image_tokens; /* positions that take an image row */
    double vision_ms;   /* preprocessing + encoding time, 0 without images or all cached */
    chat_image *images; /* n_images entries, in order */
    int n_images;
    int image_hits; /* pictures whose rows came from the cache */
} chat_prompt;

/* Encodes the n_images pictures with ctx's vision encoder and builds the prompt. A request
 * with pictures needs a model loaded with an mmproj. On error *out is empty. */
int chat_prompt_build(const chat_ctx *c, eng_ctx *ctx, const chat_msg *msgs, int n_msgs,
                      const img_rgb *images, int n_images, chat_prompt *out, char *err,
                      size_t errlen);

/* Pictures handed over one at a time: get(i) fills *out (0) or err (-1, which fails the
 * build); put(i) takes it back once it is encoded, before the next get. Lets a caller keep one
 * decoded picture alive instead of all of a request's (ternd decodes them lazily). */
typedef struct {
    int (*get)(void *arg, int i, img_rgb *out, char *err, size_t errlen);
    void (*put)(void *arg, int i, img_rgb *im);
    void *arg;
} chat_image_source;

/* chat_prompt_build with pictures taken from src, in order. */
int chat_prompt_build_from(const chat_ctx *c, eng_ctx *ctx, const chat_msg *msgs, int n_msgs,
                           const chat_image_source *src, int n_images, chat_prompt *out, char *err,
                           size_t errlen);
void chat_prompt_free(chat_prompt *p);

/* img_limits.min_edge for pictures this prompt path takes: the processor's first resize
 * target (0 without vision). Every caller decodes with it, so ternd and tern run see the same
 * pixels; a JPEG at least twice that size is decoded at a reduced DCT scale (docs/inputs.md). */
int chat_image_min_edge(const chat_ctx *c);

/* A picture's key: c's model_key and cache seed, every preprocessing setting in c->icfg, the
 * decoded pixels. */
embcache_key chat_image_key(const chat_ctx *c, const img_rgb *im);

/* What a slot's KV positions were computed from: per position the token id and, where an image
 * row replaced it, that row's index in `images`' rows (else -1). Capacity fixed at init, so
 * recording tokens allocates nothing. */
typedef struct {
    int32_t *ids;
    int32_t *row;
    chat_image *images;
    int n_images;
    int n;   /* positions valid in the KV cache; the caller keeps it equal to the slot's length */
    int cap; /* most positions (the context's n_ctx) */
} chat_history;

int chat_history_init(chat_history *h, int cap);
void chat_history_free(chat_history *h);
/* Positions at the start of p whose input equals the history's: the same id and, at image
 * positions, the same row of a picture with the same key. Never past h->n. */
int chat_history_common(const chat_ctx *c, const chat_history *h, const chat_prompt *p);
/* The history becomes p's prompt, of which the first `keep` positions are in the KV cache
 * (chat_history_common's answer or less). 0, or -1 when out of memory (history emptied). */
int chat_history_set(const chat_ctx *c, chat_history *h, const chat_prompt *p, int keep);
/* Position pos will hold token id (an answer token fed back); call before the step. */
static inline void chat_history_put(chat_history *h, int pos, int32_t id)
{
    if (pos < h->cap) h->ids[pos] = id, h->row[pos] = -1;
}

/* Prefills positions [from, p->n) of slot in chunks of the context's n_batch; the last chunk
 * asks for logits, so eng_logits(ctx, slot) is the first answer token's distribution. */
int chat_prefill(eng_ctx *ctx, int slot, const chat_prompt *p, int from, char *err, size_t errlen);

/* A sampler for the answer that has seen the prompt (the repetition penalty looks at it).
 * NULL when out of memory. */
sampler *chat_sampler_create(const chat_ctx *c, const chat_prompt *p, const sampler_params *sp);

/* Sampling ends here: <end_of_utterance> or EOS. */
bool chat_is_stop(const chat_ctx *c, int32_t id);

#endif
