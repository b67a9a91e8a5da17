/* The engine's public API: a loaded model, a context holding the KV cache of
 * n_slots sequences, and one batched forward step the scheduler drives.
 *
 * Usage (all calls from one engine thread):
 *
 *     eng_model *m;  eng_model_load("text.gguf", "mmproj.gguf", &m, err, sizeof err);
 *     eng_params p = eng_default_params();  p.n_slots = 4;  p.n_ctx = 2048;
 *     eng_ctx *c;    eng_ctx_create(m, &p, &c, err, sizeof err);
 *
 *     eng_item items[2] = {
 *         { .slot = 0, .n_tokens = 1,  .tokens = &next0, .pos = len0, .want_logits = true },
 *         { .slot = 1, .n_tokens = 64, .tokens = chunk,  .pos = 0,    .want_logits = false },
 *     };
 *     eng_step(c, items, 2, err, sizeof err);     // one forward pass over 65 rows
 *     const float *logits = eng_logits(c, 0);     // n_vocab floats for slot 0
 *
 * Every linear layer runs once over the rows of all items (batched GEMM);
 * attention runs per item against that slot's own KV region. All scratch is
 * allocated by eng_ctx_create: a step allocates nothing.
 *
 * Images: eng_vision_encode turns normalised pixel tiles into embedding rows
 * (n_image_tokens x n_embd per tile); an item's `embd` pointers put those rows
 * in place of the token embeddings at the <image> positions.
 *
 * Errors are values: ENG_OK, or ENG_ERR with a message in err. */
#ifndef TERN_ENGINE_ENGINE_H
#define TERN_ENGINE_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/gguf.h"

#define ENG_OK 0
#define ENG_ERR (-1)

typedef struct eng_model eng_model;
typedef struct eng_ctx eng_ctx;

/* The decoder family, from general.architecture: Llama (SmolVLM's SmolLM2)
 * or Phi (llama.cpp's "phi2": Phi-1.5/2, moondream2's decoder). */
typedef enum { ENG_ARCH_LLAMA, ENG_ARCH_PHI2 } eng_arch;

/* What a caller needs to know about a loaded model. */
typedef struct {
    /* text decoder */
    eng_arch arch;
    const char *arch_name; /* its general.architecture: "llama", "phi2" */
    int n_vocab;
    int n_embd; /* hidden size: the width of an embedding row */
    int n_layer;
    int n_head;
    int n_head_kv;
    int n_ff;
    int n_ctx_train; /* <arch>.context_length */
    float rope_theta;
    int n_rot;      /* rotary dimensions per head (<= head size; Phi rotates part of it) */
    float norm_eps; /* the RMSNorm's or LayerNorm's epsilon */
    /* vision (all zero when no mmproj was loaded) */
    bool has_vision;
    int image_size; /* tile side in pixels; a tile is 3 x image_size x image_size floats, CHW */
    int patch_size;
    int n_image_tokens; /* embedding rows per tile, after pixel shuffle */
    int scale_factor;   /* pixel-shuffle factor */
    float image_mean[3];
    float image_std[3];
} eng_model_info;

/* mmproj_path may be NULL (text only). Both files stay mapped until
 * eng_model_free. Every tensor is found and shape-checked here. */
int eng_model_load(const char *text_path, const char *mmproj_path, eng_model **out, char *err,
                   size_t errlen);
void eng_model_free(eng_model *m);
/* Sizes read from the files' metadata. */
const eng_model_info *eng_model_get_info(const eng_model *m);
/* The text GGUF (tokenizer vocab/merges and chat template live there) and
 * the mmproj GGUF (NULL when none). */
const gguf_file *eng_model_text_file(const eng_model *m);
const gguf_file *eng_model_vision_file(const eng_model *m);

typedef struct {
    int n_slots;    /* sequences with their own KV region */
    int n_ctx;      /* positions per slot */
    int n_batch;    /* most token rows in one eng_step (sum of n_tokens over items) */
    int n_threads;  /* worker threads for the matmuls; <= 0: one per online CPU */
    bool kv_f16;    /* store K/V as f16 (half the memory) instead of f32 */
    bool text_only; /* no vision scratch: this context never encodes images (another does) */
} eng_params;

/* n_slots 1, n_ctx 2048 (capped at n_ctx_train on create), n_batch 512,
 * n_threads 0, kv_f16 true. */
eng_params eng_default_params(void);

/* A context for model m: KV cache for n_slots sequences, scratch and the
 * worker threads. p may be NULL (defaults). */
int eng_ctx_create(const eng_model *m, const eng_params *p, eng_ctx **out, char *err,
                   size_t errlen);
void eng_ctx_destroy(eng_ctx *c);
const eng_params *eng_ctx_params(const eng_ctx *c); /* after defaults and caps */

/* The instruction set the matmul kernels run with on this CPU ("avx2", "dotprod", ...),
 * after any TERN_KERNELS cap: for startup logs. */
const char *eng_kernels_name(void);

/* One piece of work for one slot within a step: a prefill chunk
 * (n_tokens > 1) or a decode step (n_tokens == 1). */
typedef struct {
    int slot;
    int n_tokens;
    const int32_t *tokens;    /* n_tokens ids (ignored where embd[i] is non-NULL) */
    const float *const *embd; /* NULL, or n_tokens pointers: a non-NULL entry is an
                                 n_embd-float row used instead of token i's embedding */
    int pos;                  /* position of tokens[0]; must be <= the slot's length.
                                 Cached positions >= pos are dropped first. */
    bool want_logits;         /* compute logits for the item's last token */
} eng_item;

/* Advance several slots in one forward pass. Each slot appears at most once;
 * sum of n_tokens <= n_batch; pos + n_tokens <= n_ctx. On error nothing is
 * changed. Afterwards each slot's length is pos + n_tokens. */
int eng_step(eng_ctx *c, const eng_item *items, int n_items, char *err, size_t errlen);

/* n_vocab logits of the last token of the slot's item in the latest step that
 * asked for them; valid until the next eng_step. NULL if none. */
const float *eng_logits(const eng_ctx *c, int slot);

/* Positions cached for the slot; reset empties it. */
int eng_slot_len(const eng_ctx *c, int slot);
void eng_slot_reset(eng_ctx *c, int slot);
/* Keep the first n positions (n <= length). */
int eng_slot_truncate(eng_ctx *c, int slot, int n, char *err, size_t errlen);

/* Vision encoder + connector: n_tiles tiles of 3 x image_size x image_size
 * normalised floats (CHW, tile after tile) -> n_tiles * n_image_tokens rows
 * of n_embd floats in out. Needs a model loaded with an mmproj. */
int eng_vision_encode(eng_ctx *c, const float *pixels, int n_tiles, float *out, char *err,
                      size_t errlen);

/* Where an encode spends its time, by kind of layer (summed over the layers). */
enum {
    ENG_VK_PATCH, /* patch embedding and position embedding */
    ENG_VK_QKV,
    ENG_VK_ATTN,
    ENG_VK_OUT, /* output projection and its residual */
    ENG_VK_FFN_UP,
    ENG_VK_GELU,
    ENG_VK_FFN_DOWN, /* with its residual */
    ENG_VK_NORM,
    ENG_VK_CONNECTOR, /* pixel shuffle and the projection to n_embd */
    ENG_VK_COUNT
};
/* From now on each eng_vision_encode adds its milliseconds per kind to ms[ENG_VK_COUNT]
 * (a few clock reads per layer); NULL stops it. */
void eng_vision_profile(eng_ctx *c, double *ms);
const char *eng_vision_kind_name(int kind);

#endif
