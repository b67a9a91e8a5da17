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

static const model_family families[] = {
    {.name = "llama",
     .arch = ENG_ARCH_LLAMA,
     .eps_key = "attention.layer_norm_rms_epsilon",
     .gated = true},
    {.name = "phi2",
     .arch = ENG_ARCH_PHI2,
     .eps_key = "attention.layer_norm_epsilon",
     .layer_norm = true,
     .parallel = true,
     .rope_neox = true,
     .biases = true},
};

/* get_int and get_float on the family's key "<arch>.<suffix>". */
static int get_aint(const eng_model *m, const gguf_file *f, const char *suffix, bool required,
                    int lo, int *out, char *err, size_t errlen)
{
    char key[96];
    snprintf(key, sizeof key, "%s.%s", m->fam->name, suffix);
    return get_int(f, key, required, lo, out, err, errlen);
}

static int get_afloat(const eng_model *m, const gguf_file *f, const char *suffix, float *out,
                      char *err, size_t errlen)
{
    char key[96];
    snprintf(key, sizeof key, "%s.%s", m->fam->name, suffix);
    return get_float(f, key, false, out, err, errlen);
}

static int text_family(eng_model *m, const gguf_file *f, char *err, size_t errlen)
{
    const char *arch = gguf_get_str(f, "general.architecture");
    if (!arch)
        return eng_seterr(err, errlen, "%s: missing key 'general.architecture'", gguf_path(f));
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++)
        if (strcmp(arch, families[i].name) == 0) m->fam = &families[i];
    if (!m->fam)
        return eng_seterr(err, errlen,
                          "%s: architecture '%s' is not supported (want 'llama' or 'phi2')",
                          gguf_path(f), arch);
    m->info.arch = m->fam->arch;
    m->info.arch_name = m->fam->name;
    return ENG_OK;
}

/* The decoder's hyperparameters; llama.cpp's defaults where a key is optional. */
static int text_hparams(eng_model *m, const gguf_file *f, char *err, size_t errlen)
{
    eng_model_info *in = &m->info;
    if (text_family(m, f, err, errlen)) return ENG_ERR;
    in->n_ctx_train = 2048;
    in->rope_theta = 10000.0f;
    in->norm_eps = 1e-5f;
    if (get_aint(m, f, "block_count", true, 1, &in->n_layer, err, errlen) ||
        get_aint(m, f, "embedding_length", true, 1, &in->n_embd, err, errlen) ||
        get_aint(m, f, "feed_forward_length", true, 1, &in->n_ff, err, errlen) ||
        get_aint(m, f, "attention.head_count", true, 1, &in->n_head, err, errlen) ||
        get_aint(m, f, "context_length", false, 1, &in->n_ctx_train, err, errlen) ||
        get_afloat(m, f, "rope.freq_base", &in->rope_theta, err, errlen) ||
        get_afloat(m, f, m->fam->eps_key, &in->norm_eps, err, errlen))
        return ENG_ERR;
    in->n_head_kv = in->n_head;
    m->head_dim = in->n_embd / in->n_head;
    if (get_aint(m, f, "attention.head_count_kv", false, 1, &in->n_head_kv, err, errlen) ||
        get_aint(m, f, "attention.key_length", false, 2, &m->head_dim, err, errlen))
        return ENG_ERR;
    m->n_rot = m->head_dim;
    if (get_aint(m, f, "rope.dimension_count", false, 2, &m->n_rot, err, errlen)) return ENG_ERR;
    if (m->head_dim % 2 || in->n_head % in->n_head_kv)
        return eng_seterr(err, errlen,
                          "%s: head_dim %d must be even and head_count %d a multiple of "
                          "head_count_kv %d",
                          gguf_path(f), m->head_dim, in->n_head, in->n_head_kv);
    if (m->n_rot % 2 || m->n_rot > m->head_dim)
        return eng_seterr(err, errlen,
                          "%s: %s.rope.dimension_count = %d must be even and at most the head "
                          "size %d",
                          gguf_path(f), m->fam->name, m->n_rot, m->head_dim);
    in->n_rot = m->n_rot;
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
    if (get_aint(m, f, "vocab_size", false, 1, &nv, err, errlen)) return ENG_ERR;
    if (nv && nv != in->n_vocab)
        return eng_seterr(err, errlen, "%s: %s.vocab_size %d but token_embd.weight has %d rows",
                          gguf_path(f), m->fam->name, nv, in->n_vocab);
    return ENG_OK;
}

/* "blk.<l>.<what>.weight" and, where the family has biases, its ".bias". */
static int load_linear(eng_model *m, const gguf_file *f, int l, const char *what, int n_in,
                       int n_out, eng_weight *w, const float **b, char *err, size_t errlen)
{
    char n[96];
    snprintf(n, sizeof n, "blk.%d.%s.weight", l, what);
    if (load_mat(f, n, n_in, n_out, w, err, errlen)) return ENG_ERR;
    if (!m->fam->biases) return ENG_OK;
    snprintf(n, sizeof n, "blk.%d.%s.bias", l, what);
    return load_vec(m, f, n, n_out, b, err, errlen);
}

/* A norm's weight, and its bias in a LayerNorm family. */
static int load_norm(eng_model *m, const gguf_file *f, const char *name, const float **w,
                     const float **b, char *err, size_t errlen)
{
    char n[96];
    int D = m->info.n_embd;
    snprintf(n, sizeof n, "%s.weight", name);
    if (load_vec(m, f, n, D, w, err, errlen)) return ENG_ERR;
    if (!m->fam->layer_norm) return ENG_OK;
    snprintf(n, sizeof n, "%s.bias", name);
    return load_vec(m, f, n, D, b, err, errlen);
}

/* Rows [r0, r0 + n) of w: a matrix of its own for the matmul. */
static eng_weight row_view(const eng_weight *w, int r0, int n)
{
    eng_weight v = *w;
    v.data = (const char *)w->data + (size_t)r0 * w->row_bytes;
    v.n_out = n;
    v.mm.data = v.data;
    v.mm.rows = n;
    return v;
}

/* q, k and v: three matrices, or llama.cpp's fused attn_qkv (q's rows, then
 * k's, then v's; the bias likewise) split into views. */
static int load_qkv(eng_model *m, const gguf_file *f, int l, eng_layer *L, char *err, size_t errlen)
{
    int D = m->info.n_embd, qd = m->info.n_head * m->head_dim;
    int kvd = m->info.n_head_kv * m->head_dim;
    char n[96];
    snprintf(n, sizeof n, "blk.%d.attn_qkv.weight", l);
    if (!gguf_find_tensor(f, n))
        return load_linear(m, f, l, "attn_q", D, qd, &L->wq, &L->bq, err, errlen) ||
                       load_linear(m, f, l, "attn_k", D, kvd, &L->wk, &L->bk, err, errlen) ||
                       load_linear(m, f, l, "attn_v", D, kvd, &L->wv, &L->bv, err, errlen)
                   ? ENG_ERR
                   : ENG_OK;
    eng_weight qkv;
    const float *b = NULL;
    if (load_linear(m, f, l, "attn_qkv", D, qd + 2 * kvd, &qkv, &b, err, errlen)) return ENG_ERR;
    L->wq = row_view(&qkv, 0, qd);
    L->wk = row_view(&qkv, qd, kvd);
    L->wv = row_view(&qkv, qd + kvd, kvd);
    if (b) {
        L->bq = b;
        L->bk = b + qd;
        L->bv = b + qd + kvd;
    }
    return ENG_OK;
}

static int text_layer(eng_model *m, const gguf_file *f, int l, char *err, size_t errlen)
{
    const eng_model_info *in = &m->info;
    const model_family *fam = m->fam;
    eng_layer *L = &m->layers[l];
    int D = in->n_embd, F = in->n_ff, hd = m->head_dim;
    char n[64];
    snprintf(n, sizeof n, "blk.%d.attn_norm", l);
    if (load_norm(m, f, n, &L->attn_norm, &L->attn_norm_b, err, errlen) ||
        load_qkv(m, f, l, L, err, errlen) ||
        load_linear(m, f, l, "attn_output", in->n_head * hd, D, &L->wo, &L->bo, err, errlen))
        return ENG_ERR;
    snprintf(n, sizeof n, "blk.%d.ffn_norm.weight", l);
    if (!fam->parallel && load_vec(m, f, n, D, &L->ffn_norm, err, errlen)) return ENG_ERR;
    snprintf(n, sizeof n, "blk.%d.ffn_gate.weight", l);
    if ((fam->gated && load_mat(f, n, D, F, &L->w_gate, err, errlen)) ||
        load_linear(m, f, l, "ffn_up", D, F, &L->w_up, &L->b_up, err, errlen) ||
        load_linear(m, f, l, "ffn_down", F, D, &L->w_down, &L->b_down, err, errlen))
        return ENG_ERR;
    /* text_forward's row sizes: q and the attention output are n_head heads,
     * k and v n_head_kv heads, and the FFN's matrices agree on F. */
    assert(L->wq.n_out == in->n_head * hd && L->wo.n_in == L->wq.n_out);
    assert(L->wk.n_out == in->n_head_kv * hd && L->wv.n_out == L->wk.n_out);
    assert((!fam->gated || L->w_gate.n_out == F) && L->w_up.n_out == F && L->w_down.n_in == F);
    assert(!fam->biases || (L->bq && L->bk && L->bv && L->bo && L->b_up && L->b_down));
    return ENG_OK;
}

static int load_text(eng_model *m, char *err, size_t errlen)
{
    const gguf_file *f = m->text;
    const eng_model_info *in = &m->info;
    if (text_hparams(m, f, err, errlen) || text_vocab(m, f, err, errlen)) return ENG_ERR;

    int D = in->n_embd;
    if (load_mat(f, "token_embd.weight", D, in->n_vocab, &m->tok_embd, err, errlen) ||
        load_norm(m, f, "output_norm", &m->out_norm, &m->out_norm_b, err, errlen))
        return ENG_ERR;
    if (gguf_find_tensor(f, "output.weight")) {
        if (load_mat(f, "output.weight", D, in->n_vocab, &m->output, err, errlen)) return ENG_ERR;
        if (m->fam->biases && load_vec(m, f, "output.bias", in->n_vocab, &m->output_b, err, errlen))
            return ENG_ERR;
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

/* How many encoder blocks run, as llama.cpp's clip does it. An "mlp" (LLaVA-style) file runs
 * block_count - 1 blocks unless clip.vision.feature_layer names the last one to run (moondream's
 * own mmproj stores 27 + 1 blocks, the last a copy that is never run; tern convert writes 27 and
 * feature_layer [27]). Idefics3 runs them all. Several feature layers, concatenated (granite),
 * are not supported. */
static int vision_depth(eng_model *m, const gguf_file *f, int n_block, char *err, size_t errlen)
{
    m->v_layer = n_block;
    if (m->proj != PROJ_MLP) return ENG_OK;
    const char *key = "clip.vision.feature_layer";
    int i = gguf_find_key(f, key);
    if (i < 0) {
        m->v_layer = n_block - 1;
        if (m->v_layer < 1)
            return eng_seterr(err, errlen,
                              "%s: clip.vision.block_count = %d: an \"mlp\" mmproj without %s "
                              "runs block_count - 1 blocks, so it needs at least 2",
                              gguf_path(f), n_block, key);
        return ENG_OK;
    }
    gguf_vtype t = gguf_arr_type(f, i);
    if (gguf_kv_type(f, i) != GGUF_ARRAY || (t != GGUF_INT32 && t != GGUF_UINT32) ||
        gguf_arr_len(f, i) != 1)
        return eng_seterr(err, errlen,
                          "%s: key '%s' must be an array of one int32 (several feature layers "
                          "are not supported)",
                          gguf_path(f), key);
    int32_t v;
    memcpy(&v, gguf_arr_data(f, i), sizeof v);
    if (v < 1 || v > n_block)
        return eng_seterr(err, errlen, "%s: %s = [%d] is out of range 1..%d (block_count)",
                          gguf_path(f), key, (int)v, n_block);
    m->v_layer = v;
    return ENG_OK;
}

/* The encoder's hyperparameters and the image processor's normalisation. */
static int vision_hparams(eng_model *m, const gguf_file *f, char *err, size_t errlen)
{
    eng_model_info *in = &m->info;
    const char *pt = gguf_get_str(f, "clip.projector_type");
    if (!pt) pt = gguf_get_str(f, "clip.vision.projector_type");
    if (pt && strcmp(pt, "idefics3") == 0)
        m->proj = PROJ_IDEFICS3;
    else if (pt && strcmp(pt, "mlp") == 0)
        m->proj = PROJ_MLP;
    else
        return eng_seterr(err, errlen, "%s: clip.projector_type is '%s', want 'idefics3' or 'mlp'",
                          gguf_path(f), pt ? pt : "(missing)");
    m->v_eps = 1e-6f;
    in->scale_factor = m->proj == PROJ_MLP ? 1 : 2; /* mlp: one embedding row per patch */
    int n_block = 0;
    if (get_int(f, "clip.vision.image_size", true, 1, &in->image_size, err, errlen) ||
        get_int(f, "clip.vision.patch_size", true, 1, &in->patch_size, err, errlen) ||
        get_int(f, "clip.vision.embedding_length", true, 1, &m->v_embd, err, errlen) ||
        get_int(f, "clip.vision.feed_forward_length", true, 1, &m->v_ff, err, errlen) ||
        get_int(f, "clip.vision.block_count", true, 1, &n_block, err, errlen) ||
        vision_depth(m, f, n_block, err, errlen) ||
        get_int(f, "clip.vision.attention.head_count", true, 1, &m->v_head, err, errlen) ||
        get_float(f, "clip.vision.attention.layer_norm_epsilon", false, &m->v_eps, err, errlen) ||
        (m->proj == PROJ_IDEFICS3 && get_int(f, "clip.vision.projector.scale_factor", false, 1,
                                             &in->scale_factor, err, errlen)))
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
    /* Old LLaVA-style exporters (moondream's own mmproj among them) named fc1 "ffn_down" and fc2
     * "ffn_up"; llama.cpp swaps them back when "ffn_down" reads v_embd inputs, and so do we. */
    const gguf_tensor *dn = gguf_find_tensor(f, w[7]);
    if (Dv != Fv && dn && dn->ne[0] == Dv) {
        char t[64];
        for (int k = 0; k < 2; k++) {
            char(*x)[64] = k ? b : w;
            memcpy(t, x[6], sizeof t);
            memcpy(x[6], x[7], sizeof t);
            memcpy(x[7], t, sizeof t);
        }
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

/* llama.cpp's "mlp" connector: mm.0 (v_embd -> its rows), GELU, mm.2 (-> n_embd). */
static int load_mlp_projector(eng_model *m, const gguf_file *f, char *err, size_t errlen)
{
    const gguf_tensor *t = find(f, "mm.0.weight", err, errlen);
    if (!t) return ENG_ERR;
    if (t->ne[1] < 1 || t->ne[1] > (1 << 24))
        return eng_seterr(err, errlen, "%s: tensor 'mm.0.weight' has %lld rows", gguf_path(f),
                          (long long)t->ne[1]);
    m->mm_ff = (int)t->ne[1];
    return load_mat(f, "mm.0.weight", m->v_embd, m->mm_ff, &m->mm_fc, err, errlen) ||
                   load_vec(m, f, "mm.0.bias", m->mm_ff, &m->mm_b, err, errlen) ||
                   load_mat(f, "mm.2.weight", m->mm_ff, m->info.n_embd, &m->mm_fc2, err, errlen) ||
                   load_vec(m, f, "mm.2.bias", m->info.n_embd, &m->mm_b2, err, errlen)
               ? ENG_ERR
               : ENG_OK;
}

static int load_vision(eng_model *m, char *err, size_t errlen)
{
    const gguf_file *f = m->vision;
    eng_model_info *in = &m->info;
    if (vision_hparams(m, f, err, errlen)) return ENG_ERR;

    int Dv = m->v_embd, ps = in->patch_size, s = in->scale_factor;
    /* Idefics3 files always end the encoder with a LayerNorm; LLaVA-style ones may not. */
    bool post_ln = m->proj == PROJ_IDEFICS3 || gguf_find_tensor(f, "v.post_ln.weight");
    if (load_mat(f, "v.patch_embd.weight", 3 * ps * ps, Dv, &m->patch_embd, err, errlen) ||
        load_vec(m, f, "v.patch_embd.bias", Dv, &m->patch_bias, err, errlen) ||
        (post_ln && (load_vec(m, f, "v.post_ln.weight", Dv, &m->post_ln_w, err, errlen) ||
                     load_vec(m, f, "v.post_ln.bias", Dv, &m->post_ln_b, err, errlen))) ||
        (m->proj == PROJ_IDEFICS3 &&
         load_mat(f, "mm.model.fc.weight", Dv * s * s, in->n_embd, &m->mm_fc, err, errlen)) ||
        (m->proj == PROJ_MLP && load_mlp_projector(m, f, err, errlen)) ||
        load_pos_table(m, f, err, errlen))
        return ENG_ERR;
    /* vision_forward: a tile's patches in, n_image_tokens rows of n_embd out. */
    assert(m->patch_embd.n_in == 3 * ps * ps);
    assert(m->proj == PROJ_MLP
               ? m->mm_fc.n_in == Dv && m->mm_fc2.n_in == m->mm_ff && m->mm_fc2.n_out == in->n_embd
               : m->mm_fc.n_in == Dv * s * s && m->mm_fc.n_out == in->n_embd);
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
