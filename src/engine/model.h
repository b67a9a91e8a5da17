/* The loaded model's weights: views into the mapped GGUF files, plus float
 * copies of the small vectors (norms, biases, position embeddings) when a
 * file stores them in another type. Internal to the engine; the public face
 * is eng_model in engine.h. */
#ifndef TERN_ENGINE_MODEL_H
#define TERN_ENGINE_MODEL_H

#include "engine/buflist.h"
#include "engine/engine.h"
#include "engine/gguf.h"
#include "engine/matmul.h"
#include "engine/types.h"

/* A matrix of n_out rows, each n_in weights of one block type. */
typedef struct {
    const char *name;
    kt_type type;
    const ttype_info *ti;
    int n_in;
    int n_out;
    size_t row_bytes;
    const void *data;
    mm_weight mm; /* the same matrix, as the matmul wants it */
} eng_weight;

typedef struct {
    const float *attn_norm;
    eng_weight wq, wk, wv, wo;
    const float *ffn_norm;
    eng_weight w_gate, w_up, w_down;
} eng_layer;

typedef struct {
    const float *ln1_w, *ln1_b, *ln2_w, *ln2_b;
    eng_weight wq, wk, wv, wo;
    const float *bq, *bk, *bv, *bo;
    eng_weight w_up, w_down; /* fc1, fc2 */
    const float *b_up, *b_down;
} eng_vlayer;

struct eng_model {
    eng_model_info info;
    int head_dim;
    gguf_file *text;
    gguf_file *vision;

    eng_weight tok_embd; /* n_vocab rows of n_embd */
    eng_layer *layers;
    const float *out_norm;
    eng_weight output; /* tok_embd when the file has no output.weight (tied) */

    /* vision */
    int v_embd, v_ff, v_layer, v_head;
    float v_eps;
    int v_patches;         /* (image_size / patch_size)^2 */
    eng_weight patch_embd; /* v_embd rows of 3 * patch * patch, (c, ky, kx) order */
    const float *patch_bias;
    const float *pos_embd; /* v_patches x v_embd */
    eng_vlayer *vlayers;
    const float *post_ln_w, *post_ln_b;
    eng_weight mm_fc; /* n_embd rows of v_embd * scale^2 */

    /* float copies made at load; freed with the model */
    buflist owned;
};

/* Dequantize one row of w (n_in floats). */
void model_weight_row(const eng_weight *w, int row, float *out);

#endif
