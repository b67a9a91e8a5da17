/* Loading: hyperparameters from llama.cpp's metadata keys, every tensor
 * found by its llama.cpp name and shape-checked before anything runs. */
#include "engine/model.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/errmsg.h"

void model_weight_row(const eng_weight *w, int row, float *out)
{
    const char *p = (const char *)w->data + (size_t)row * w->row_bytes;
    w->ti->to_float(w->type, p, out, w->n_in);
}

static float *own(eng_model *m, size_t n)
{
    return buflist_alloc(&m->owned, n * sizeof(float));
}

static const char *type_name(kt_type t)
{
    const ttype_info *ti = ttype_get(t);
    return ti ? ti->name : "unknown";
}

static int shape_str(const gguf_tensor *t, char *buf, size_t n)
{
    int k = snprintf(buf, n, "[");
    for (int i = 0; i < t->n_dims; i++)
        k += snprintf(buf + k, n > (size_t)k ? n - (size_t)k : 0, "%s%lld", i ? ", " : "",
                      (long long)t->ne[i]);
    return snprintf(buf + k, n > (size_t)k ? n - (size_t)k : 0, "]");
}

static const gguf_tensor *find(const gguf_file *f, const char *name, char *err, size_t errlen)
{
    const gguf_tensor *t = gguf_find_tensor(f, name);
    if (!t)
        eng_seterr(err, errlen, "%s: missing tensor '%s'", gguf_path(f), name);
    else if (!ttype_get(t->type)) {
        eng_seterr(err, errlen, "%s: tensor '%s' has unknown type %d", gguf_path(f), name,
                   (int)t->type);
        t = NULL;
    }
    return t;
}

/* The n values of t as floats: the mapped data itself when stored as F32,
 * otherwise a copy the model owns. NULL when out of memory. */
static const float *as_floats(eng_model *m, const gguf_tensor *t, size_t n)
{
    if (t->type == KT_F32) return t->data;
    float *p = own(m, n);
    if (p) ttype_get(t->type)->to_float(t->type, t->data, p, (int64_t)n);
    return p;
}

/* A vector of n floats, converted to F32 if stored otherwise. */
static int load_vec(eng_model *m, const gguf_file *f, const char *name, int64_t n,
                    const float **out, char *err, size_t errlen)
{
    const gguf_tensor *t = find(f, name, err, errlen);
    if (!t) return ENG_ERR;
    int64_t total = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
    if (total != n || t->ne[0] != n) {
        char s[96];
        shape_str(t, s, sizeof s);
        return eng_seterr(err, errlen, "%s: tensor '%s' has shape %s, expected [%lld]",
                          gguf_path(f), name, s, (long long)n);
    }
    *out = as_floats(m, t, (size_t)n);
    if (!*out) return eng_seterr(err, errlen, "out of memory loading '%s'", name);
    return ENG_OK;
}

/* A matrix of n_out rows of n_in. A 4-D tensor (the patch convolution
 * [kx, ky, c, out]) counts as n_out rows of kx*ky*c. */
static int load_mat(const gguf_file *f, const char *name, int64_t n_in, int64_t n_out,
                    eng_weight *w, char *err, size_t errlen)
{
    const gguf_tensor *t = find(f, name, err, errlen);
    if (!t) return ENG_ERR;
    int64_t rows = t->ne[1] * t->ne[2] * t->ne[3], cols = t->ne[0];
    if (t->n_dims == 4) {
        cols = t->ne[0] * t->ne[1] * t->ne[2];
        rows = t->ne[3];
    }
    if (cols != n_in || rows != n_out) {
        char s[96];
        shape_str(t, s, sizeof s);
        return eng_seterr(err, errlen, "%s: tensor '%s' has shape %s, expected [%lld, %lld]",
                          gguf_path(f), name, s, (long long)n_in, (long long)n_out);
    }
    const ttype_info *ti = ttype_get(t->type);
    if (n_in % ti->block != 0)
        return eng_seterr(err, errlen,
                          "%s: tensor '%s': row length %lld is not a multiple of the %s "
                          "block (%d)",
                          gguf_path(f), name, (long long)n_in, ti->name, ti->block);
    w->name = t->name;
    w->type = t->type;
    w->ti = ti;
    w->n_in = (int)n_in;
    w->n_out = (int)n_out;
    w->row_bytes = ttype_row_bytes(ti, n_in);
    w->data = t->data;
    if (w->row_bytes * (size_t)n_out != t->nbytes)
        return eng_seterr(err, errlen, "%s: tensor '%s': %zu bytes, expected %zu", gguf_path(f),
                          name, t->nbytes, w->row_bytes * (size_t)n_out);
    w->mm = (mm_weight){.type = t->type, .data = t->data, .rows = (int)n_out, .cols = (int)n_in};
    char merr[256];
    if (mm_check(&w->mm, merr, sizeof merr) != 0)
        return eng_seterr(err, errlen, "%s: tensor '%s' (%s): %s", gguf_path(f), name,
                          type_name(t->type), merr);
    return ENG_OK;
}

static int get_int(const gguf_file *f, const char *key, bool required, int lo, int *out, char *err,
                   size_t errlen)
{
    int64_t v;
    if (!gguf_get_i64(f, key, &v)) {
        if (!required) return ENG_OK;
        return eng_seterr(err, errlen, "%s: missing or non-integer key '%s'", gguf_path(f), key);
    }
    if (v < lo || v > (1 << 24))
        return eng_seterr(err, errlen, "%s: key '%s' = %lld is out of range", gguf_path(f), key,
                          (long long)v);
    *out = (int)v;
    return ENG_OK;
}

static int get_float(const gguf_file *f, const char *key, bool required, float *out, char *err,
                     size_t errlen)
{
    double v;
    if (!gguf_get_f64(f, key, &v)) {
        if (!required) return ENG_OK;
        return eng_seterr(err, errlen, "%s: missing or non-numeric key '%s'", gguf_path(f), key);
    }
    if (!isfinite(v) || v <= 0)
        return eng_seterr(err, errlen, "%s: key '%s' = %g is out of range", gguf_path(f), key, v);
    *out = (float)v;
    return ENG_OK;
}

/* The decoder's hyperparameters; llama.cpp's defaults where a key is optional. */
static int text_hparams(eng_model *m, const gguf_file *f, char *err, size_t errlen)
{
    eng_model_info *in = &m->info;
    const char *arch = gguf_get_str(f, "general.architecture");
    if (!arch)
        return eng_seterr(err, errlen, "%s: missing key 'general.architecture'", gguf_path(f));
    if (strcmp(arch, "llama") != 0)
        return eng_seterr(err, errlen, "%s: architecture '%s' is not supported (want 'llama')",
                          gguf_path(f), arch);

    in->n_ctx_train = 2048;
    in->rope_theta = 10000.0f;
    in->rms_eps = 1e-5f;
    if (get_int(f, "llama.block_count", true, 1, &in->n_layer, err, errlen) ||
        get_int(f, "llama.embedding_length", true, 1, &in->n_embd, err, errlen) ||
        get_int(f, "llama.feed_forward_length", true, 1, &in->n_ff, err, errlen) ||
        get_int(f, "llama.attention.head_count", true, 1, &in->n_head, err, errlen) ||
        get_int(f, "llama.context_length", false, 1, &in->n_ctx_train, err, errlen) ||
        get_float(f, "llama.rope.freq_base", false, &in->rope_theta, err, errlen) ||
        get_float(f, "llama.attention.layer_norm_rms_epsilon", false, &in->rms_eps, err, errlen))
        return ENG_ERR;
    in->n_head_kv = in->n_head;
    if (get_int(f, "llama.attention.head_count_kv", false, 1, &in->n_head_kv, err, errlen))
        return ENG_ERR;
    m->head_dim = in->n_embd / in->n_head;
    if (get_int(f, "llama.attention.key_length", false, 2, &m->head_dim, err, errlen))
        return ENG_ERR;
    if (m->head_dim % 2 || in->n_head % in->n_head_kv)
        return eng_seterr(err, errlen,
                          "%s: head_dim %d must be even and head_count %d a multiple of "
                          "head_count_kv %d",
                          gguf_path(f), m->head_dim, in->n_head, in->n_head_kv);
    return ENG_OK;
}

/* The vocabulary size is the embedding's row count; the keys only cross-check it. */
static int text_vocab(eng_model *m, const gguf_file *f, char *err, size_t errlen)
{
    eng_model_info *in = &m->info;
    const gguf_tensor *te = find(f, "token_embd.weight", err, errlen);
    if (!te) return ENG_ERR;
    in->n_vocab = (int)te->ne[1];
    int nv = 0;
    if (get_int(f, "llama.vocab_size", false, 1, &nv, err, errlen)) return ENG_ERR;
    if (nv && nv != in->n_vocab)
        return eng_seterr(err, errlen, "%s: llama.vocab_size %d but token_embd.weight has %d rows",
                          gguf_path(f), nv, in->n_vocab);
    return ENG_OK;
}

static int text_layer(eng_model *m, const gguf_file *f, int l, char *err, size_t errlen)
{
    const eng_model_info *in = &m->info;
    eng_layer *L = &m->layers[l];
    int D = in->n_embd, F = in->n_ff, hd = m->head_dim;
    static const char *const suf[9] = {"attn_norm", "attn_q",   "attn_k", "attn_v",  "attn_output",
                                       "ffn_norm",  "ffn_gate", "ffn_up", "ffn_down"};
    char n[9][64];
    for (int i = 0; i < 9; i++)
        snprintf(n[i], sizeof n[i], "blk.%d.%s.weight", l, suf[i]);
    if (load_vec(m, f, n[0], D, &L->attn_norm, err, errlen) ||
        load_mat(f, n[1], D, in->n_head * hd, &L->wq, err, errlen) ||
        load_mat(f, n[2], D, in->n_head_kv * hd, &L->wk, err, errlen) ||
        load_mat(f, n[3], D, in->n_head_kv * hd, &L->wv, err, errlen) ||
        load_mat(f, n[4], in->n_head * hd, D, &L->wo, err, errlen) ||
        load_vec(m, f, n[5], D, &L->ffn_norm, err, errlen) ||
        load_mat(f, n[6], D, F, &L->w_gate, err, errlen) ||
        load_mat(f, n[7], D, F, &L->w_up, err, errlen) ||
        load_mat(f, n[8], F, D, &L->w_down, err, errlen))
        return ENG_ERR;
    /* text_forward's row sizes: q and the attention output are n_head heads,
     * k and v n_head_kv heads, and the FFN's three matrices agree on F. */
    assert(L->wq.n_out == in->n_head * hd && L->wo.n_in == L->wq.n_out);
    assert(L->wk.n_out == in->n_head_kv * hd && L->wv.n_out == L->wk.n_out);
    assert(L->w_gate.n_out == F && L->w_up.n_out == F && L->w_down.n_in == F);
    return ENG_OK;
}

static int load_text(eng_model *m, char *err, size_t errlen)
{
    const gguf_file *f = m->text;
    const eng_model_info *in = &m->info;
    if (text_hparams(m, f, err, errlen) || text_vocab(m, f, err, errlen)) return ENG_ERR;

    int D = in->n_embd;
    if (load_mat(f, "token_embd.weight", D, in->n_vocab, &m->tok_embd, err, errlen) ||
        load_vec(m, f, "output_norm.weight", D, &m->out_norm, err, errlen))
        return ENG_ERR;
    if (gguf_find_tensor(f, "output.weight")) {
        if (load_mat(f, "output.weight", D, in->n_vocab, &m->output, err, errlen)) return ENG_ERR;
    } else {
        m->output = m->tok_embd;
    }
    assert(m->output.n_in == D && m->output.n_out == in->n_vocab);

    m->layers = calloc((size_t)in->n_layer, sizeof *m->layers);
    if (!m->layers) return eng_seterr(err, errlen, "out of memory");
    for (int l = 0; l < in->n_layer; l++)
        if (text_layer(m, f, l, err, errlen)) return ENG_ERR;
    return ENG_OK;
}

static int load_floats(const gguf_file *f, const char *key, float *out, int n, char *err,
                       size_t errlen)
{
    int i = gguf_find_key(f, key);
    if (i < 0) return ENG_OK;
    if (gguf_kv_type(f, i) != GGUF_ARRAY || gguf_arr_type(f, i) != GGUF_FLOAT32 ||
        gguf_arr_len(f, i) != (uint64_t)n)
        return eng_seterr(err, errlen, "%s: key '%s' must be an array of %d float32", gguf_path(f),
                          key, n);
    memcpy(out, gguf_arr_data(f, i), (size_t)n * sizeof(float));
    return ENG_OK;
}

/* The encoder's hyperparameters and the image processor's normalisation. */
static int vision_hparams(eng_model *m, const gguf_file *f, char *err, size_t errlen)
{
    eng_model_info *in = &m->info;
    const char *pt = gguf_get_str(f, "clip.projector_type");
    if (!pt) pt = gguf_get_str(f, "clip.vision.projector_type");
    if (!pt || strcmp(pt, "idefics3") != 0)
        return eng_seterr(err, errlen, "%s: clip.projector_type is '%s', want 'idefics3'",
                          gguf_path(f), pt ? pt : "(missing)");
    m->v_eps = 1e-6f;
    in->scale_factor = 2;
    if (get_int(f, "clip.vision.image_size", true, 1, &in->image_size, err, errlen) ||
        get_int(f, "clip.vision.patch_size", true, 1, &in->patch_size, err, errlen) ||
        get_int(f, "clip.vision.embedding_length", true, 1, &m->v_embd, err, errlen) ||
        get_int(f, "clip.vision.feed_forward_length", true, 1, &m->v_ff, err, errlen) ||
        get_int(f, "clip.vision.block_count", true, 1, &m->v_layer, err, errlen) ||
        get_int(f, "clip.vision.attention.head_count", true, 1, &m->v_head, err, errlen) ||
        get_float(f, "clip.vision.attention.layer_norm_epsilon", false, &m->v_eps, err, errlen) ||
        get_int(f, "clip.vision.projector.scale_factor", false, 1, &in->scale_factor, err, errlen))
        return ENG_ERR;
    int side = in->image_size / in->patch_size, s = in->scale_factor;
    if (in->image_size % in->patch_size || side % s || m->v_embd % m->v_head)
        return eng_seterr(err, errlen,
                          "%s: image_size %d, patch_size %d, scale_factor %d and "
                          "embedding_length %d / head_count %d do not divide evenly",
                          gguf_path(f), in->image_size, in->patch_size, s, m->v_embd, m->v_head);
    m->v_patches = side * side;
    in->n_image_tokens = m->v_patches / (s * s);
    for (int c = 0; c < 3; c++) {
        in->image_mean[c] = 0.5f;
        in->image_std[c] = 0.5f;
    }
    if (load_floats(f, "clip.vision.image_mean", in->image_mean, 3, err, errlen) ||
        load_floats(f, "clip.vision.image_std", in->image_std, 3, err, errlen))
        return ENG_ERR;
    return ENG_OK;
}

/* The position table is a matrix, v_patches rows of v_embd; read it as one long vector. */
static int load_pos_table(eng_model *m, const gguf_file *f, char *err, size_t errlen)
{
    int Dv = m->v_embd;
    const gguf_tensor *pe = find(f, "v.position_embd.weight", err, errlen);
    if (!pe) return ENG_ERR;
    if (pe->ne[0] != Dv || pe->ne[1] != m->v_patches || pe->ne[2] * pe->ne[3] != 1) {
        char sh[96];
        shape_str(pe, sh, sizeof sh);
        return eng_seterr(err, errlen,
                          "%s: tensor 'v.position_embd.weight' has shape %s, expected "
                          "[%d, %d]",
                          gguf_path(f), sh, Dv, m->v_patches);
    }
    m->pos_embd = as_floats(m, pe, (size_t)Dv * (size_t)m->v_patches);
    if (!m->pos_embd) return eng_seterr(err, errlen, "out of memory");
    return ENG_OK;
}

static int vision_layer(eng_model *m, const gguf_file *f, int l, char *err, size_t errlen)
{
    eng_vlayer *L = &m->vlayers[l];
    int Dv = m->v_embd, Fv = m->v_ff;
    static const char *const nm[8] = {"ln1",    "ln2",      "attn_q", "attn_k",
                                      "attn_v", "attn_out", "ffn_up", "ffn_down"};
    char w[8][64], b[8][64];
    for (int i = 0; i < 8; i++) {
        snprintf(w[i], sizeof w[i], "v.blk.%d.%s.weight", l, nm[i]);
        snprintf(b[i], sizeof b[i], "v.blk.%d.%s.bias", l, nm[i]);
    }
    if (load_vec(m, f, w[0], Dv, &L->ln1_w, err, errlen) ||
        load_vec(m, f, b[0], Dv, &L->ln1_b, err, errlen) ||
        load_vec(m, f, w[1], Dv, &L->ln2_w, err, errlen) ||
        load_vec(m, f, b[1], Dv, &L->ln2_b, err, errlen) ||
        load_mat(f, w[2], Dv, Dv, &L->wq, err, errlen) ||
        load_vec(m, f, b[2], Dv, &L->bq, err, errlen) ||
        load_mat(f, w[3], Dv, Dv, &L->wk, err, errlen) ||
        load_vec(m, f, b[3], Dv, &L->bk, err, errlen) ||
        load_mat(f, w[4], Dv, Dv, &L->wv, err, errlen) ||
        load_vec(m, f, b[4], Dv, &L->bv, err, errlen) ||
        load_mat(f, w[5], Dv, Dv, &L->wo, err, errlen) ||
        load_vec(m, f, b[5], Dv, &L->bo, err, errlen) ||
        load_mat(f, w[6], Dv, Fv, &L->w_up, err, errlen) ||
        load_vec(m, f, b[6], Fv, &L->b_up, err, errlen) ||
        load_mat(f, w[7], Fv, Dv, &L->w_down, err, errlen) ||
        load_vec(m, f, b[7], Dv, &L->b_down, err, errlen))
        return ENG_ERR;
    assert(L->wq.n_out == Dv && L->wo.n_in == Dv && L->w_up.n_out == Fv && L->w_down.n_in == Fv);
    return ENG_OK;
}

static int load_vision(eng_model *m, char *err, size_t errlen)
{
    const gguf_file *f = m->vision;
    eng_model_info *in = &m->info;
    if (vision_hparams(m, f, err, errlen)) return ENG_ERR;

    int Dv = m->v_embd, ps = in->patch_size, s = in->scale_factor;
    if (load_mat(f, "v.patch_embd.weight", 3 * ps * ps, Dv, &m->patch_embd, err, errlen) ||
        load_vec(m, f, "v.patch_embd.bias", Dv, &m->patch_bias, err, errlen) ||
        load_vec(m, f, "v.post_ln.weight", Dv, &m->post_ln_w, err, errlen) ||
        load_vec(m, f, "v.post_ln.bias", Dv, &m->post_ln_b, err, errlen) ||
        load_mat(f, "mm.model.fc.weight", Dv * s * s, in->n_embd, &m->mm_fc, err, errlen) ||
        load_pos_table(m, f, err, errlen))
        return ENG_ERR;
    /* vision_forward: a tile's patches in, n_image_tokens rows of n_embd out. */
    assert(m->patch_embd.n_in == 3 * ps * ps && m->mm_fc.n_in == Dv * s * s &&
           m->mm_fc.n_out == in->n_embd);
    assert(in->n_image_tokens * s * s == m->v_patches);

    m->vlayers = calloc((size_t)m->v_layer, sizeof *m->vlayers);
    if (!m->vlayers) return eng_seterr(err, errlen, "out of memory");
    for (int l = 0; l < m->v_layer; l++)
        if (vision_layer(m, f, l, err, errlen)) return ENG_ERR;
    in->has_vision = true;
    return ENG_OK;
}

int eng_model_load(const char *text_path, const char *mmproj_path, eng_model **out, char *err,
                   size_t errlen)
{
    *out = NULL;
    eng_model *m = calloc(1, sizeof *m);
    if (!m) return eng_seterr(err, errlen, "out of memory");
    if (gguf_open(text_path, &m->text, err, errlen) != GGUF_OK || load_text(m, err, errlen) ||
        (mmproj_path && (gguf_open(mmproj_path, &m->vision, err, errlen) != GGUF_OK ||
                         load_vision(m, err, errlen)))) {
        eng_model_free(m);
        return ENG_ERR;
    }
    *out = m;
    return ENG_OK;
}

void eng_model_free(eng_model *m)
{
    if (!m) return;
    buflist_free(&m->owned);
    free(m->layers);
    free(m->vlayers);
    if (m->text) gguf_close(m->text);
    if (m->vision) gguf_close(m->vision);
    free(m);
}

const eng_model_info *eng_model_get_info(const eng_model *m)
{
    return &m->info;
}
const gguf_file *eng_model_text_file(const eng_model *m)
{
    return m->text;
}
const gguf_file *eng_model_vision_file(const eng_model *m)
{
    return m->vision;
}
