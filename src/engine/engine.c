/* The context: KV cache and scratch allocated once, the batched step, slot
 * bookkeeping, and the one linear-layer entry point. */
#include "engine/ctx.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/errmsg.h"

eng_params eng_default_params(void)
{
    eng_params p = {.n_slots = 1, .n_ctx = 2048, .n_batch = 512, .n_threads = 0, .kv_f16 = true};
    return p;
}

void ctx_linear(eng_ctx *c, const eng_weight *w, const float *x, int rows, float *out)
{
    mm_matmul(c->pool, &w->mm, x, rows, out, c->mm_scratch);
}

void ctx_linear3(eng_ctx *c, const eng_weight *a, const eng_weight *b, const eng_weight *d,
                 const float *x, int rows, float *oa, float *ob, float *od)
{
    const mm_weight *ws[3] = {&a->mm, &b->mm, d ? &d->mm : NULL};
    float *outs[3] = {oa, ob, od};
    mm_matmul_multi(c->pool, ws, d ? 3 : 2, x, rows, outs, c->mm_scratch);
}

/* The largest mm_matmul scratch any weight needs at its batch size. */
static size_t scratch_bytes(const eng_model *m, int n_text, int n_vision)
{
    size_t best = mm_scratch_bytes(&m->output.mm, n_text);
    for (int l = 0; l < m->info.n_layer; l++) {
        const eng_layer *L = &m->layers[l];
        const eng_weight *ws[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++) {
            size_t b = mm_scratch_bytes(&ws[i]->mm, n_text);
            best = b > best ? b : best;
        }
    }
    if (!m->info.has_vision || n_vision == 0) return best;
    const eng_weight *vs[] = {&m->patch_embd, &m->mm_fc, &m->mm_fc2};
    for (size_t i = 0; i < 3; i++) {
        size_t b = mm_scratch_bytes(&vs[i]->mm, n_vision);
        best = b > best ? b : best;
    }
    for (int l = 0; l < m->v_layer; l++) {
        const eng_vlayer *L = &m->vlayers[l];
        const eng_weight *ws[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_up, &L->w_down};
        for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++) {
            size_t b = mm_scratch_bytes(&ws[i]->mm, n_vision);
            best = b > best ? b : best;
        }
    }
    return best;
}

#define ALLOC(ptr, n)                                                                              \
    do {                                                                                           \
        size_t n_ = (size_t)(n);                                                                   \
        (ptr) = calloc(n_ > 0 ? n_ : 1, sizeof *(ptr));                                            \
        if (!(ptr)) goto oom;                                                                      \
    } while (0)

/* The caller's parameters with defaults, caps and the thread count filled in. */
static int resolve_params(const eng_model *m, const eng_params *pp, eng_params *p, char *err,
                          size_t errlen)
{
    *p = pp ? *pp : eng_default_params();
    if (p->n_slots < 1 || p->n_slots > 1024 || p->n_ctx < 1 || p->n_batch < 1)
        return eng_seterr(err, errlen,
                          "engine: n_slots (%d), n_ctx (%d) and n_batch (%d) must be "
                          "positive",
                          p->n_slots, p->n_ctx, p->n_batch);
    if (p->n_ctx > m->info.n_ctx_train) p->n_ctx = m->info.n_ctx_train;
    if ((long long)p->n_batch > (long long)p->n_slots * p->n_ctx)
        p->n_batch = p->n_slots * p->n_ctx; /* fits: less than the n_batch asked for */
    if (p->n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        p->n_threads = n > 0 ? (int)n : 1;
    }
    return ENG_OK;
}

/* KV cache, the decoder's scratch for n_batch rows, attention scores and logits. */
static int alloc_text(eng_ctx *c)
{
    const eng_model *m = c->m;
    const eng_model_info *in = &m->info;
    const eng_params *p = &c->p;
    int N = p->n_batch, D = in->n_embd, hd = m->head_dim;
    int qd = in->n_head * hd, kvd = in->n_head_kv * hd, F = in->n_ff, V = in->n_vocab;

    c->kv_elem = p->kv_f16 ? 2 : 4;
    size_t kv_n = (size_t)p->n_slots * in->n_layer * p->n_ctx * kvd;
    c->k_cache = calloc(kv_n, c->kv_elem);
    c->v_cache = calloc(kv_n, c->kv_elem);
    if (!c->k_cache || !c->v_cache) goto oom;
    ALLOC(c->slot_len, p->n_slots);
    ALLOC(c->x, (size_t)N * D);
    ALLOC(c->xn, (size_t)N * D);
    ALLOC(c->tmp, (size_t)N * D);
    ALLOC(c->q, (size_t)N * qd);
    ALLOC(c->att, (size_t)N * qd);
    ALLOC(c->k, (size_t)N * kvd);
    ALLOC(c->v, (size_t)N * kvd);
    ALLOC(c->g, (size_t)N * F);
    ALLOC(c->u, (size_t)N * F);
    ALLOC(c->row_pos, N);
    ALLOC(c->row_item, N);
    c->scores_stride = p->n_ctx > m->v_patches ? p->n_ctx : m->v_patches;
    ALLOC(c->scores, (size_t)c->scores_stride * p->n_threads);
    if (c->kv_elem == 2) {
        c->kv_f32_stride = (size_t)p->n_ctx * hd;
        ALLOC(c->kv_f32, c->kv_f32_stride * 2 * p->n_threads);
    }
    ALLOC(c->rope_cos, (size_t)p->n_ctx * hd / 2);
    ALLOC(c->rope_sin, (size_t)p->n_ctx * hd / 2);
    ALLOC(c->lhid, (size_t)p->n_slots * D);
    ALLOC(c->ltmp, (size_t)p->n_slots * V);
    ALLOC(c->logit_row, p->n_slots);
    for (int s = 0; s < p->n_slots; s++)
        c->logit_row[s] = -1;
    return ENG_OK;
oom:
    return ENG_ERR;
}

/* HF computes inv_freq = theta^(-2i/n_rot) and angle = pos * inv_freq
 * (n_rot: the rotated dimensions, the whole head unless partial). */
static void fill_rope(eng_ctx *c)
{
    int nr = c->m->n_rot;
    for (int pos = 0; pos < c->p.n_ctx; pos++)
        for (int i = 0; i < nr / 2; i++) {
            double inv = pow((double)c->m->info.rope_theta, -2.0 * i / nr);
            float a = (float)pos * (float)inv; /* rounded as torch's float32 outer product */
            c->rope_cos[(size_t)pos * nr / 2 + i] = (float)cos(a);
            c->rope_sin[(size_t)pos * nr / 2 + i] = (float)sin(a);
        }
}

/* The vision encoder's scratch: one tile's patches. */
static int alloc_vision(eng_ctx *c)
{
    const eng_model *m = c->m;
    int P = m->v_patches, Dv = m->v_embd, ps = m->info.patch_size;
    int vin = 3 * ps * ps;
    ALLOC(c->vx, (size_t)P * Dv);
    ALLOC(c->vxn, (size_t)P * (vin > Dv ? vin : Dv));
    ALLOC(c->vq, (size_t)P * Dv);
    ALLOC(c->vk, (size_t)P * Dv);
    ALLOC(c->vv, (size_t)P * Dv);
    ALLOC(c->vatt, (size_t)P * Dv);
    ALLOC(c->vtmp, (size_t)P * Dv);
    ALLOC(c->vff, (size_t)P * (m->v_ff > m->mm_ff ? m->v_ff : m->mm_ff)); /* also mlp's hidden */
    ALLOC(c->vshuf, (size_t)P * Dv);
    c->vkt_stride = (size_t)P + 16;
    ALLOC(c->vkt, c->vkt_stride * Dv);
    ALLOC(c->vscores, (size_t)VIS_QBLOCK * (P + 1) * c->p.n_threads);
    return ENG_OK;
oom:
    return ENG_ERR;
}

int eng_ctx_create(const eng_model *m, const eng_params *pp, eng_ctx **out, char *err,
                   size_t errlen)
{
    *out = NULL;
    eng_params p;
    if (resolve_params(m, pp, &p, err, errlen) != ENG_OK) return ENG_ERR;
    eng_ctx *c = calloc(1, sizeof *c);
    if (!c) return eng_seterr(err, errlen, "out of memory");
    c->m = m;
    c->p = p;
    c->pool = pool_create(p.n_threads, err, errlen);
    if (!c->pool) {
        free(c);
        return ENG_ERR;
    }
    c->p.n_threads = p.n_threads = pool_threads(c->pool);
    c->f16_row = kern_get_f16_to_f32();
    c->attn = kern_get_attn();
    c->gelu = kern_get_gelu();
    c->swiglu = kern_get_swiglu();
    bool vision = m->info.has_vision && !p.text_only;
    if (alloc_text(c) != ENG_OK || (vision && alloc_vision(c) != ENG_OK)) goto oom;
    fill_rope(c);
    size_t sb = scratch_bytes(m, p.n_batch, vision ? m->v_patches : 0);
    if (sb > 0) {
        c->mm_scratch = aligned_alloc(64, (sb + 63) / 64 * 64);
        if (!c->mm_scratch) goto oom;
    }
    *out = c;
    return ENG_OK;
oom:
    eng_ctx_destroy(c);
    return eng_seterr(err, errlen, "engine: out of memory for %d slots x %d positions", p.n_slots,
                      p.n_ctx);
}

void eng_ctx_destroy(eng_ctx *c)
{
    if (!c) return;
    void *bufs[] = {c->k_cache, c->v_cache, c->slot_len,   c->x,        c->xn,       c->tmp,
                    c->q,       c->att,     c->k,          c->v,        c->g,        c->u,
                    c->row_pos, c->scores,  c->kv_f32,     c->rope_cos, c->rope_sin, c->logit_row,
                    c->lhid,    c->ltmp,    c->mm_scratch, c->row_item, c->vx,       c->vxn,
                    c->vq,      c->vk,      c->vv,         c->vatt,     c->vtmp,     c->vff,
                    c->vshuf,   c->vkt,     c->vscores};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(bufs[i]);
    pool_destroy(c->pool);
    free(c);
}

const eng_params *eng_ctx_params(const eng_ctx *c)
{
    return &c->p;
}

int eng_step(eng_ctx *c, const eng_item *items, int n_items, char *err, size_t errlen)
{
    const eng_model *m = c->m;
    int D = m->info.n_embd;
    if (n_items < 0 || (n_items > 0 && !items))
        return eng_seterr(err, errlen, "eng_step: bad item list");
    int n_rows = 0;
    for (int i = 0; i < n_items; i++) {
        const eng_item *it = &items[i];
        if (it->slot < 0 || it->slot >= c->p.n_slots)
            return eng_seterr(err, errlen, "eng_step: item %d: slot %d out of range [0, %d)", i,
                              it->slot, c->p.n_slots);
        for (int j = 0; j < i; j++)
            if (items[j].slot == it->slot)
                return eng_seterr(err, errlen, "eng_step: slot %d appears twice", it->slot);
        if (it->n_tokens < 1 || (!it->tokens && !it->embd))
            return eng_seterr(err, errlen, "eng_step: item %d: no tokens", i);
        if (it->pos < 0 || it->pos > c->slot_len[it->slot])
            return eng_seterr(err, errlen,
                              "eng_step: item %d: position %d is past slot %d's length %d", i,
                              it->pos, it->slot, c->slot_len[it->slot]);
        if (it->n_tokens > c->p.n_ctx - it->pos)
            return eng_seterr(err, errlen,
                              "eng_step: item %d: %d tokens at position %d exceed the "
                              "context of %d",
                              i, it->n_tokens, it->pos, c->p.n_ctx);
        if (it->n_tokens > c->p.n_batch - n_rows)
            return eng_seterr(err, errlen, "eng_step: more than n_batch = %d rows in one step",
                              c->p.n_batch);
        for (int t = 0; t < it->n_tokens; t++) {
            bool has_row = it->embd && it->embd[t];
            if (!has_row && (!it->tokens || it->tokens[t] < 0 || it->tokens[t] >= m->info.n_vocab))
                return eng_seterr(err, errlen,
                                  "eng_step: item %d: token %d (%d) is not in the "
                                  "vocabulary of %d",
                                  i, t, it->tokens ? it->tokens[t] : -1, m->info.n_vocab);
        }
        n_rows += it->n_tokens;
    }

    int r = 0;
    for (int i = 0; i < n_items; i++) {
        const eng_item *it = &items[i];
        c->slot_len[it->slot] = it->pos;
        for (int t = 0; t < it->n_tokens; t++, r++) {
            float *x = c->x + (size_t)r * D;
            if (it->embd && it->embd[t])
                memcpy(x, it->embd[t], (size_t)D * sizeof *x);
            else
                model_weight_row(&m->tok_embd, it->tokens[t], x);
            c->row_pos[r] = it->pos + t;
            c->row_item[r] = i;
        }
    }
    assert(r == n_rows && n_rows <= c->p.n_batch);
    for (int s = 0; s < c->p.n_slots; s++)
        c->logit_row[s] = -1;
    if (n_rows > 0) text_forward(c, items, n_items, n_rows);
    for (int i = 0; i < n_items; i++)
        c->slot_len[items[i].slot] = items[i].pos + items[i].n_tokens;
    return ENG_OK;
}

const float *eng_logits(const eng_ctx *c, int slot)
{
    if (slot < 0 || slot >= c->p.n_slots || c->logit_row[slot] < 0) return NULL;
    return c->ltmp + (size_t)c->logit_row[slot] * c->m->info.n_vocab;
}

int eng_slot_len(const eng_ctx *c, int slot)
{
    return slot >= 0 && slot < c->p.n_slots ? c->slot_len[slot] : 0;
}

void eng_slot_reset(eng_ctx *c, int slot)
{
    if (slot >= 0 && slot < c->p.n_slots) {
        c->slot_len[slot] = 0;
        c->logit_row[slot] = -1;
    }
}

int eng_slot_truncate(eng_ctx *c, int slot, int n, char *err, size_t errlen)
{
    if (slot < 0 || slot >= c->p.n_slots)
        return eng_seterr(err, errlen, "slot %d out of range [0, %d)", slot, c->p.n_slots);
    if (n < 0 || n > c->slot_len[slot])
        return eng_seterr(err, errlen, "slot %d: cannot truncate to %d (length %d)", slot, n,
                          c->slot_len[slot]);
    c->slot_len[slot] = n;
    return ENG_OK;
}

int eng_vision_encode(eng_ctx *c, const float *pixels, int n_tiles, float *out, char *err,
                      size_t errlen)
{
    const eng_model_info *in = &c->m->info;
    if (!in->has_vision)
        return eng_seterr(err, errlen, "model has no vision encoder (load an mmproj file)");
    if (!c->vx)
        return eng_seterr(err, errlen, "this context was made text_only: encode in another one");
    if (n_tiles < 0 || (n_tiles > 0 && (!pixels || !out)))
        return eng_seterr(err, errlen, "eng_vision_encode: bad arguments");
    size_t tile = (size_t)3 * in->image_size * in->image_size;
    size_t rows = (size_t)in->n_image_tokens * in->n_embd;
    for (int t = 0; t < n_tiles; t++)
        vision_forward(c, pixels + t * tile, out + t * rows);
    return ENG_OK;
}

void eng_vision_profile(eng_ctx *c, double *ms)
{
    c->vprof = ms;
}

const char *eng_vision_kind_name(int kind)
{
    static const char *names[ENG_VK_COUNT] = {"patch embed", "qkv",    "attention",
                                              "out proj",    "ffn up", "gelu",
                                              "ffn down",    "norms",  "connector"};
    return kind >= 0 && kind < ENG_VK_COUNT ? names[kind] : "?";
}

const char *eng_kernels_name(void)
{
    return kern_isa_name(kern_best_isa());
}
