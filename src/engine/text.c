/* The Llama text decoder over one batch of rows: RMSNorm, RoPE on adjacent
 * pairs (llama.cpp stores q/k rows permuted so this equals HF's rotate_half),
 * grouped-query attention against each slot's KV cache, SwiGLU, final norm
 * and the output layer for the rows that want logits. */
#include "engine/ctx.h"

#include <math.h>
#include <string.h>

static void rmsnorm(float *out, const float *x, const float *w, int n, float eps)
{
    float ss = 0.0f;
    for (int i = 0; i < n; i++)
        ss += x[i] * x[i];
    float r = 1.0f / sqrtf(ss / (float)n + eps);
    for (int i = 0; i < n; i++)
        out[i] = w[i] * (x[i] * r);
}

/* Rotate pairs (2i, 2i+1) of each head by the position's angles. */
static void rope(float *x, int n_heads, int hd, const float *cs, const float *sn)
{
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (size_t)h * hd;
        for (int i = 0; i < hd / 2; i++) {
            float a = v[2 * i], b = v[2 * i + 1];
            v[2 * i] = a * cs[i] - b * sn[i];
            v[2 * i + 1] = a * sn[i] + b * cs[i];
        }
    }
}

static inline float h2f(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (e == 0) {
        float f = ldexpf((float)mant, -24);
        return sign ? -f : f;
    }
    if (e == 31)
        bits = sign | 0x7f800000u | (mant << 13);
    else
        bits = sign | ((e + 112) << 23) | (mant << 13);
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Element offset of (slot, layer, pos) in the KV cache. */
static size_t kv_off(const eng_ctx *c, int slot, int layer, int pos)
{
    size_t kvd = (size_t)c->m->info.n_head_kv * c->m->head_dim;
    return (((size_t)slot * c->m->info.n_layer + layer) * c->p.n_ctx + pos) * kvd;
}

static void kv_store(eng_ctx *c, void *cache, size_t off, const float *src, int n)
{
    if (c->kv_elem == 4) {
        memcpy((float *)cache + off, src, (size_t)n * sizeof(float));
    } else {
        uint16_t *d = (uint16_t *)cache + off;
        for (int i = 0; i < n; i++)
            d[i] = kt_f32_to_f16(src[i]);
    }
}

/* dot(q, cache row) or out += w * cache row, over hd elements. */
static float kv_dot(const eng_ctx *c, const void *cache, size_t off, const float *q, int hd)
{
    if (c->kv_elem == 4)
        return ctx_dot(q, (const float *)cache + off, hd);
    const uint16_t *k = (const uint16_t *)cache + off;
    float s = 0.0f, buf[64];
    for (int i = 0; i < hd; i += 64) {
        int n = hd - i < 64 ? hd - i : 64;
        for (int j = 0; j < n; j++)
            buf[j] = h2f(k[i + j]);
        s += ctx_dot(q + i, buf, n);
    }
    return s;
}

static void kv_axpy(const eng_ctx *c, const void *cache, size_t off, float w, float *out, int hd)
{
    if (c->kv_elem == 4) {
        const float *v = (const float *)cache + off;
        for (int i = 0; i < hd; i++)
            out[i] += w * v[i];
    } else {
        const uint16_t *v = (const uint16_t *)cache + off;
        for (int i = 0; i < hd; i++)
            out[i] += w * h2f(v[i]);
    }
}

/* Causal attention of one row and head against its slot's cache (which
 * already holds this step's keys and values). */
static void attend_one(const eng_ctx *c, int layer, int slot, int r, int h, float *sc)
{
    const eng_model_info *in = &c->m->info;
    int hd = c->m->head_dim, H = in->n_head, rep = H / in->n_head_kv, p = c->row_pos[r];
    size_t kvd = (size_t)in->n_head_kv * hd;
    size_t base = kv_off(c, slot, layer, 0) + (size_t)(h / rep) * hd;
    float scale = 1.0f / sqrtf((float)hd);
    const float *q = c->q + (size_t)r * H * hd + (size_t)h * hd;
    float mx = -INFINITY;
    for (int t = 0; t <= p; t++) {
        sc[t] = kv_dot(c, c->k_cache, base + t * kvd, q, hd) * scale;
        if (sc[t] > mx)
            mx = sc[t];
    }
    float sum = 0.0f;
    for (int t = 0; t <= p; t++) {
        sc[t] = expf(sc[t] - mx);
        sum += sc[t];
    }
    float *o = c->att + (size_t)r * H * hd + (size_t)h * hd, inv = 1.0f / sum;
    memset(o, 0, (size_t)hd * sizeof *o);
    for (int t = 0; t <= p; t++)
        kv_axpy(c, c->v_cache, base + t * kvd, sc[t] * inv, o, hd);
}

typedef struct {
    const eng_ctx *c;
    const eng_item *items;
    int layer, n_rows;
} attn_job;

/* (row, head) pairs dealt round-robin: rows late in a sequence cost more,
 * so interleaving balances the threads. */
static void attend_worker(void *arg, int ith, int nth)
{
    const attn_job *j = arg;
    const eng_ctx *c = j->c;
    int H = c->m->info.n_head;
    float *sc = c->scores + (size_t)ith * c->scores_stride;
    for (int u = ith; u < j->n_rows * H; u += nth) {
        int r = u / H;
        attend_one(c, j->layer, j->items[c->row_item[r]].slot, r, u % H, sc);
    }
}

void text_forward(eng_ctx *c, const eng_item *items, int n_items, int n)
{
    const eng_model *m = c->m;
    const eng_model_info *in = &m->info;
    int D = in->n_embd, hd = m->head_dim, F = in->n_ff;
    int qd = in->n_head * hd, kvd = in->n_head_kv * hd;

    for (int l = 0; l < in->n_layer; l++) {
        const eng_layer *L = &m->layers[l];
        for (int r = 0; r < n; r++)
            rmsnorm(c->xn + (size_t)r * D, c->x + (size_t)r * D, L->attn_norm, D, in->rms_eps);
        ctx_linear(c, &L->wq, c->xn, n, c->q);
        ctx_linear(c, &L->wk, c->xn, n, c->k);
        ctx_linear(c, &L->wv, c->xn, n, c->v);
        for (int r = 0; r < n; r++) {
            const float *cs = c->rope_cos + (size_t)c->row_pos[r] * hd / 2;
            const float *sn = c->rope_sin + (size_t)c->row_pos[r] * hd / 2;
            rope(c->q + (size_t)r * qd, in->n_head, hd, cs, sn);
            rope(c->k + (size_t)r * kvd, in->n_head_kv, hd, cs, sn);
        }
        for (int r = 0; r < n; r++) {
            size_t off = kv_off(c, items[c->row_item[r]].slot, l, c->row_pos[r]);
            kv_store(c, c->k_cache, off, c->k + (size_t)r * kvd, kvd);
            kv_store(c, c->v_cache, off, c->v + (size_t)r * kvd, kvd);
        }
        attn_job job = {.c = c, .items = items, .layer = l, .n_rows = n};
        pool_run(c->pool, attend_worker, &job);
        ctx_linear(c, &L->wo, c->att, n, c->tmp);
        for (size_t i = 0; i < (size_t)n * D; i++)
            c->x[i] += c->tmp[i];

        for (int r2 = 0; r2 < n; r2++)
            rmsnorm(c->xn + (size_t)r2 * D, c->x + (size_t)r2 * D, L->ffn_norm, D, in->rms_eps);
        ctx_linear(c, &L->w_gate, c->xn, n, c->g);
        ctx_linear(c, &L->w_up, c->xn, n, c->u);
        for (size_t i = 0; i < (size_t)n * F; i++) {
            float g = c->g[i];
            c->g[i] = g / (1.0f + expf(-g)) * c->u[i];
        }
        ctx_linear(c, &L->w_down, c->g, n, c->tmp);
        for (size_t i = 0; i < (size_t)n * D; i++)
            c->x[i] += c->tmp[i];
    }

    /* Only the last row of each item that asks for logits goes through the
     * (large) output layer. */
    int nl = 0, r = 0;
    for (int i = 0; i < n_items; i++) {
        r += items[i].n_tokens;
        if (!items[i].want_logits)
            continue;
        rmsnorm(c->lhid + (size_t)nl * D, c->x + (size_t)(r - 1) * D, m->out_norm, D,
                in->rms_eps);
        c->lslot[nl++] = items[i].slot;
    }
    if (nl == 0)
        return;
    int V = in->n_vocab;
    ctx_linear(c, &m->output, c->lhid, nl, c->ltmp);
    for (int j = 0; j < nl; j++) {
        memcpy(c->logits + (size_t)c->lslot[j] * V, c->ltmp + (size_t)j * V,
               (size_t)V * sizeof(float));
        c->has_logits[c->lslot[j]] = true;
    }
}
