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

/* What tells one decoder family from another, as data the one decoder loop
 * (text.c) reads; model.c picks the row from general.architecture. */
typedef struct {
    const char *name; /* general.architecture, and the prefix of its keys */
    eng_arch arch;
    const char *eps_key; /* the norm epsilon's key after the prefix */
    bool layer_norm;     /* LayerNorm with a bias, else RMSNorm */
    bool parallel;       /* attention and MLP read one normed input, both add to x */
    bool rope_neox;      /* rotate the halves (i, i + n_rot/2), else pairs (2i, 2i+1) */
    bool biases;         /* every linear layer and the output have a bias */
    bool gated;          /* SwiGLU MLP (gate, up, down), else GELU (up, down) */
} model_family;

/* Biases and norm biases are NULL where the family has none. */
typedef struct {
    const float *attn_norm, *attn_norm_b;
    eng_weight wq, wk, wv, wo; /* views into one attn_qkv matrix when the file fuses them */
    const float *bq, *bk, *bv, *bo;
    const float *ffn_norm; /* NULL in a parallel family: the MLP reads attn_norm's output */
    eng_weight w_gate;     /* data NULL when not gated */
    eng_weight w_up, w_down;
    const float *b_up, *b_down;
} eng_layer;

typedef struct {
    const float *ln1_w, *ln1_b, *ln2_w, *ln2_b;
    eng_weight wq, wk, wv, wo;
    const float *bq, *bk, *bv, *bo;
    eng_weight w_up, w_down; /* fc1, fc2 */
    const float *b_up, *b_down;
} eng_vlayer;

/* The connector from the encoder's rows to the decoder's embeddings:
 * Idefics3's pixel shuffle and one linear layer, or llama.cpp's "mlp"
 * (LLaVA's, moondream2's): mm.0, GELU, mm.2, both with biases. */
typedef enum { PROJ_IDEFICS3, PROJ_MLP } model_projector;

struct eng_model {
    eng_model_info info;
    const model_family *fam;
    int head_dim;
    int n_rot; /* leading dimensions of each q/k head that rotate (rope.dimension_count) */
    gguf_file *text;
    gguf_file *vision;

    eng_weight tok_embd; /* n_vocab rows of n_embd */
    eng_layer *layers;
    const float *out_norm, *out_norm_b;
    eng_weight output; /* tok_embd when the file has no output.weight (tied) */
    const float *output_b;

    /* vision */
    int v_embd, v_ff, v_layer, v_head;
    float v_eps;
    int v_patches;         /* (image_size / patch_size)^2 */
    eng_weight patch_embd; /* v_embd rows of 3 * patch * patch, (c, ky, kx) order */
    const float *patch_bias;
    const float *pos_embd; /* v_patches x v_embd */
    eng_vlayer *vlayers;
    const float *post_ln_w, *post_ln_b; /* NULL when an mlp-projector file has none */
    model_projector proj;
    eng_weight mm_fc;   /* idefics3: n_embd rows of v_embd * scale^2; mlp: mm.0, mm_ff rows */
    const float *mm_b;  /* mlp: mm.0's bias */
    eng_weight mm_fc2;  /* mlp: mm.2, n_embd rows of mm_ff */
    const float *mm_b2; /* mlp: mm.2's bias */
    int mm_ff;          /* mlp: the hidden width (0 for idefics3) */

    /* float copies made at load; freed with the model */
    buflist owned;
};

/* Dequantize one row of w (n_in floats). */
void model_weight_row(const eng_weight *w, int row, float *out);

#endif
