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
 * global tile: img_tiles' order). */
#ifndef TERN_ENGINE_CHAT_H
#define TERN_ENGINE_CHAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
    img_proc_cfg icfg; /* valid when info->has_vision; callers may override icfg.split */
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

typedef struct {
    int32_t *ids; /* the prompt, ending with "Assistant:" */
    int n;
    const float **rows; /* n entries: the row that replaces ids[i]'s embedding, or NULL */
    float *embd;        /* every image's rows, image after image */
    int n_image_tokens; /* positions that take an image row */
    double vision_ms;   /* preprocessing + encoding time, 0 without images */
} chat_prompt;

/* Encodes the n_images pictures with ctx's vision encoder and builds the prompt. A request
 * with pictures needs a model loaded with an mmproj. On error *out is empty. */
int chat_prompt_build(const chat_ctx *c, eng_ctx *ctx, const chat_msg *msgs, int n_msgs,
                      const img_rgb *images, int n_images, chat_prompt *out, char *err,
                      size_t errlen);
void chat_prompt_free(chat_prompt *p);

/* Prefills positions [from, p->n) of slot in chunks of the context's n_batch; the last chunk
 * asks for logits, so eng_logits(ctx, slot) is the first answer token's distribution. */
int chat_prefill(eng_ctx *ctx, int slot, const chat_prompt *p, int from, char *err, size_t errlen);

/* A sampler for the answer that has seen the prompt (the repetition penalty looks at it).
 * NULL when out of memory. */
sampler *chat_sampler_create(const chat_ctx *c, const chat_prompt *p, const sampler_params *sp);

/* Sampling ends here: <end_of_utterance> or EOS. */
bool chat_is_stop(const chat_ctx *c, int32_t id);

#endif
