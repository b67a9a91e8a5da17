/* The engine context's insides, shared by engine.c (create, step, slots),
 * text.c (decoder) and vision.c (encoder). Not a public header. */
#ifndef TERN_ENGINE_CTX_H
#define TERN_ENGINE_CTX_H

#include <math.h>

#include "engine/engine.h"
#include "engine/model.h"
#include "engine/pool.h"

struct eng_ctx {
    const eng_model *m;
    eng_params p;
    pool *pool;
    int *slot_len;

    /* KV cache: [slot][layer][pos][n_head_kv * head_dim], f32 or f16 */
    void *k_cache, *v_cache;
    size_t kv_elem; /* bytes per element */

    /* text scratch, n_batch rows each */
    float *x, *xn, *q, *k, *v, *att, *tmp, *g, *u;
    int *row_pos;  /* position of each row */
    int *row_item; /* index of each row's item in the step */
    float *scores; /* per thread: max(n_ctx, v_patches) */
    int scores_stride;
    float *kv_f32;        /* per thread: one KV head's K then V rows in f32, n_ctx each */
    size_t kv_f32_stride; /* n_ctx * head_dim */
    kern_f16_row_fn f16_row;
    const kern_attn_ops *attn;
    float *rope_cos, *rope_sin; /* n_ctx * n_rot/2: angles depend only on position */

    /* logits of the latest step: one row per item that asked, read where the
     * output layer wrote them (no copy per slot) */
    float *lhid;    /* n_slots x n_embd: final hidden rows that want logits */
    float *ltmp;    /* n_slots x n_vocab: their logits */
    int *logit_row; /* per slot: its row of ltmp, or -1 */

    /* mm_matmul's scratch: int8 activations for the integer kernels */
    void *mm_scratch;

    /* vision scratch, v_patches rows each */
    float *vx, *vxn, *vq, *vk, *vv, *vatt, *vtmp, *vff, *vshuf;
    float *vkt;        /* K transposed: v_embd rows of vkt_stride */
    size_t vkt_stride; /* v_patches plus a pad, so feature rows do not share cache sets */
    float *vscores;    /* per thread: VIS_QBLOCK x (v_patches + 1) attention weights and sums */
    kern_gelu_fn gelu;
    kern_swiglu_fn swiglu;
    double *vprof; /* NULL, or ENG_VK_COUNT milliseconds the encoder adds to */
};

/* Queries per attention unit: each key and value of the head read from cache
 * serves this many (kern_attn_ops.block); 32 x 1024 scores are 128 KB. */
#define VIS_QBLOCK 32

/* Attention (or other float work) of `macs` multiply-adds runs on the pool
 * only when every thread gets at least CTX_SPLIT_MACS of them, for the
 * reason given at MM_SPLIT_BYTES in matmul.c: one thread does about 6 per
 * nanosecond (softmax and f16 conversion included; 512-token prefill, one
 * thread, AMD EPYC, measured), so 128K is ~20 us per thread against a 1-3 us
 * barrier, like a matmul at the threshold. A tiny model's decode stays on
 * the calling thread until ~500 positions; long prompts and big models
 * split. */
#define CTX_SPLIT_MACS 131072L

static inline void ctx_run(eng_ctx *c, pool_fn fn, void *arg, long macs)
{
    if (macs < CTX_SPLIT_MACS * pool_threads(c->pool))
        fn(arg, 0, 1);
    else
        pool_run(c->pool, fn, arg);
}

/* Attention weights in place: x[i] = softmax(scale * x)[i], n of them. */
static inline void ctx_softmax(float *x, int n, float scale)
{
    float mx = -INFINITY;
    for (int i = 0; i < n; i++) {
        x[i] *= scale;
        mx = x[i] > mx ? x[i] : mx;
    }
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    float inv = 1.0f / sum;
    for (int i = 0; i < n; i++)
        x[i] *= inv;
}

/* out (rows x w->n_out) = x (rows x w->n_in) times w transposed. The one
 * place every linear layer goes through. */
void ctx_linear(eng_ctx *c, const eng_weight *w, const float *x, int rows, float *out);

/* a, b and (unless NULL) d on the same x in one pool call (mm_matmul_multi):
 * q, k and v, or gate and up, pay one thread hand-off per step, not three. */
void ctx_linear3(eng_ctx *c, const eng_weight *a, const eng_weight *b, const eng_weight *d,
                 const float *x, int rows, float *oa, float *ob, float *od);

/* out = LayerNorm(x) * w + b over n floats (the Phi decoder's and the vision
 * encoder's norm). */
void ctx_layernorm(float *out, const float *x, const float *w, const float *b, int n, float eps);

/* Decoder forward over the rows already embedded in c->x; see text.c. */
void text_forward(eng_ctx *c, const eng_item *items, int n_items, int n_rows);

/* Vision encoder + connector for one tile. */
void vision_forward(eng_ctx *c, const float *pixels, float *out);

#endif
