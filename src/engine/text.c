/* The text decoder over one batch of rows, one loop for every family, whose
 * differences are data (model_family in model.h):
 *   Llama: x += attn(rms(x)); x += swiglu(rms(x)); RoPE on adjacent pairs of
 *          the whole head (llama.cpp stores q/k rows permuted so this equals
 *          HF's rotate_half); no biases.
 *   Phi:   h = ln(x); x += attn(h) + gelu_mlp(h) (one LayerNorm with bias,
 *          attention and MLP in parallel); RoPE on the halves of the first
 *          n_rot dimensions of each head (NeoX style); every linear biased.
 * Then grouped-query attention against each slot's KV cache, the final norm
 * and the output layer for the rows that want logits. */
#include "engine/ctx.h"

#include <assert.h>
#include <math.h>
#include <stdatomic.h>
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

void ctx_layernorm(float *out, const float *x, const float *w, const float *b, int n, float eps)
{
    /* eight partial sums: the loops vectorise without reassociating floats */
    float s8[8] = {0}, v8[8] = {0};
    int n8 = n - n % 8;
    for (int i = 0; i < n8; i += 8)
        for (int k = 0; k < 8; k++)
            s8[k] += x[i + k];
    float mean = 0.0f, var = 0.0f;
    for (int i = n8; i < n; i++)
        mean += x[i];
    for (int k = 0; k < 8; k++)
        mean += s8[k];
    mean /= (float)n;
    for (int i = 0; i < n8; i += 8)
        for (int k = 0; k < 8; k++)
            v8[k] += (x[i + k] - mean) * (x[i + k] - mean);
    for (int i = n8; i < n; i++)
        var += (x[i] - mean) * (x[i] - mean);
    for (int k = 0; k < 8; k++)
        var += v8[k];
    float r = 1.0f / sqrtf(var / (float)n + eps);
    for (int i = 0; i < n; i++)
        out[i] = (x[i] - mean) * r * w[i] + b[i];
}

/* The family's norm of `rows` rows of n_embd: LayerNorm (weight and bias) or RMSNorm. */
static void norm_rows(const eng_model *m, float *out, const float *x, const float *w,
                      const float *b, int rows)
{
    int n = m->info.n_embd;
    assert(!m->fam->layer_norm || b);
    for (int r = 0; r < rows; r++) {
        if (m->fam->layer_norm)
            ctx_layernorm(out + (size_t)r * n, x + (size_t)r * n, w, b, n, m->info.norm_eps);
        else
            rmsnorm(out + (size_t)r * n, x + (size_t)r * n, w, n, m->info.norm_eps);
    }
}

/* x[r] += b for rows of n; nothing when the layer has no bias. */
static void add_bias(float *x, const float *b, int rows, int n)
{
    if (!b) return;
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < n; i++)
            x[(size_t)r * n + i] += b[i];
}

/* Rotate the first n_rot dimensions of each head by the position's angles:
 * pairs (2i, 2i+1), or with neox the halves (i, i + n_rot/2). */
static void rope(float *x, int n_heads, int hd, int n_rot, bool neox, const float *cs,
                 const float *sn)
{
    int half = n_rot / 2, step = neox ? 1 : 2, other = neox ? half : 1;
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (size_t)h * hd;
        for (int i = 0; i < half; i++) {
            float *pa = v + i * step, *pb = pa + other;
            float a = *pa, b = *pb;
            *pa = a * cs[i] - b * sn[i];
            *pb = a * sn[i] + b * cs[i];
        }
    }
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

/* Attention works in units of (item, chunk of ATT_CHUNK of its rows, KV
 * head): a unit converts the KV head's f16 cache rows up to its last row's
 * position into the share's f32 scratch once, then every query head of
 * the group and every row of the chunk reads them with the kernels' dots
 * and weighted sums. A row's result does not depend on which unit it is in,
 * so batched rows give the same bits as rows run alone.
 *
 * When every item fits one chunk (decode steps, short prompts), a unit also
 * rotates its rows' queries of the group and key of the head and stores the
 * key and value in the cache: no other unit reads those positions, and the
 * work that was serial between the q/k/v matmul and attention is spread
 * over the pool with it. Longer items store first, in a pass of their own,
 * as a later chunk reads the positions of the earlier ones. */
#define ATT_CHUNK 16

typedef struct {
    eng_ctx *c;
    const eng_item *items;
    int n_items, layer, n_units;
    bool fused;                   /* units rotate and store their own rows first */
    _Alignas(64) atomic_int next; /* next unit to hand out */
} attn_job;

/* Rotate row r's query heads of group g (all groups when g < 0) and key
 * head(s), and store its keys and values at its position. */
static void rope_store(eng_ctx *c, const eng_item *items, int layer, int r, int g)
{
    const eng_model *m = c->m;
    const eng_model_info *in = &m->info;
    int hd = m->head_dim, rep = in->n_head / in->n_head_kv, half = m->n_rot / 2;
    int qd = in->n_head * hd, kvd = in->n_head_kv * hd;
    int g0 = g < 0 ? 0 : g, ng = g < 0 ? in->n_head_kv : 1;
    const float *cs = c->rope_cos + (size_t)c->row_pos[r] * half;
    const float *sn = c->rope_sin + (size_t)c->row_pos[r] * half;
    float *k = c->k + (size_t)r * kvd + (size_t)g0 * hd;
    rope(c->q + (size_t)r * qd + (size_t)g0 * rep * hd, ng * rep, hd, m->n_rot, m->fam->rope_neox,
         cs, sn);
    rope(k, ng, hd, m->n_rot, m->fam->rope_neox, cs, sn);
    size_t off = kv_off(c, items[c->row_item[r]].slot, layer, c->row_pos[r]) + (size_t)g0 * hd;
    kv_store(c, c->k_cache, off, k, ng * hd);
    kv_store(c, c->v_cache, off, c->v + (size_t)r * kvd + (size_t)g0 * hd, ng * hd);
}

/* Rows [r0, r1) of one slot (positions increasing), KV head g. */
static void attend_unit(eng_ctx *c, const attn_job *j, int slot, int r0, int r1, int g, int ith)
{
    const eng_model_info *in = &c->m->info;
    int hd = c->m->head_dim, H = in->n_head, rep = H / in->n_head_kv, layer = j->layer;
    size_t kvd = (size_t)in->n_head_kv * hd;
    size_t base = kv_off(c, slot, layer, 0) + (size_t)g * hd;
    int last = c->row_pos[r1 - 1];
    /* A unit is consecutive positions of one item, inside the context. */
    assert(r0 < r1 && last - c->row_pos[r0] == r1 - 1 - r0);
    assert(last < c->p.n_ctx && c->slot_len[slot] <= c->row_pos[r0]);
    if (j->fused)
        for (int r = r0; r < r1; r++)
            rope_store(c, j->items, layer, r, g);
    float *sc = c->scores + (size_t)ith * c->scores_stride;
    const float *K, *V;
    size_t ks; /* floats between the positions' rows in K and V */
    if (c->kv_elem == 4) {
        K = (const float *)c->k_cache + base;
        V = (const float *)c->v_cache + base;
        ks = kvd;
    } else {
        float *kb = c->kv_f32 + (size_t)ith * 2 * c->kv_f32_stride, *vb = kb + c->kv_f32_stride;
        const kt_f16 *kh = (const kt_f16 *)c->k_cache + base,
                     *vh = (const kt_f16 *)c->v_cache + base;
        for (int t = 0; t <= last; t++) {
            c->f16_row(kh + t * kvd, kb + (size_t)t * hd, (size_t)hd);
            c->f16_row(vh + t * kvd, vb + (size_t)t * hd, (size_t)hd);
        }
        K = kb;
        V = vb;
        ks = (size_t)hd;
    }
    float scale = 1.0f / sqrtf((float)hd);
    for (int r = r0; r < r1; r++) {
        int p = c->row_pos[r];
        for (int h = g * rep; h < (g + 1) * rep; h++) {
            const float *q = c->q + (size_t)r * H * hd + (size_t)h * hd;
            c->attn->dots(q, K, ks, p + 1, hd, sc);
            ctx_softmax(sc, p + 1, scale);
            c->attn->wsum(sc, V, ks, p + 1, hd, c->att + (size_t)r * H * hd + (size_t)h * hd);
        }
    }
}

/* Units handed out dynamically: late chunks cost more than early ones, and
 * a thread slowed by a neighbour should not hold the others up. */
static void attend_worker(void *arg, int ith, int nth)
{
    (void)nth;
    attn_job *j = arg;
    eng_ctx *c = j->c;
    int G = c->m->info.n_head_kv;
    for (;;) {
        int u = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (u >= j->n_units) return;
        int g = u % G, chunk = u / G, r = 0;
        for (int i = 0; i < j->n_items; i++) {
            int n = j->items[i].n_tokens, nc = (n + ATT_CHUNK - 1) / ATT_CHUNK;
            if (chunk < nc) {
                int r0 = r + chunk * ATT_CHUNK;
                int r1 = r0 + ATT_CHUNK < r + n ? r0 + ATT_CHUNK : r + n;
                attend_unit(c, j, j->items[i].slot, r0, r1, g, ith);
                break;
            }
            chunk -= nc;
            r += n;
        }
    }
}

/* Rotation and cache stores by rows, for steps whose units do not do them. */
typedef struct {
    eng_ctx *c;
    const eng_item *items;
    int layer, rows;
} store_job;

static void store_worker(void *arg, int ith, int nth)
{
    const store_job *j = arg;
    for (int r = j->rows * ith / nth; r < j->rows * (ith + 1) / nth; r++)
        rope_store(j->c, j->items, j->layer, r, -1);
}

/* Every item's rows against its slot's cache for layer l, on the pool;
 * macs is the step's attention work, rows its row count. */
static void attend(eng_ctx *c, const eng_item *items, int n_items, int layer, int rows, long macs)
{
    const eng_model_info *in = &c->m->info;
    /* rotating and storing a row: about a multiply-add per query and key
     * element, and a few per converted key and value element */
    long store_macs = (long)rows * (in->n_head + 4 * in->n_head_kv) * c->m->head_dim;
    attn_job job = {.c = c, .items = items, .n_items = n_items, .layer = layer, .fused = true};
    for (int i = 0; i < n_items; i++) {
        job.n_units += (items[i].n_tokens + ATT_CHUNK - 1) / ATT_CHUNK * c->m->info.n_head_kv;
        job.fused = job.fused && items[i].n_tokens <= ATT_CHUNK;
    }
    if (!job.fused) {
        store_job sj = {.c = c, .items = items, .layer = layer, .rows = rows};
        ctx_run(c, store_worker, &sj, store_macs);
    }
    atomic_init(&job.next, 0);
    ctx_run(c, attend_worker, &job, macs + (job.fused ? store_macs : 0));
}

/* Only the last row of each item that asks for logits goes through the
 * (large) output layer; the slot's logits stay in that row of ltmp. */
static void output_logits(eng_ctx *c, const eng_item *items, int n_items)
{
    const eng_model *m = c->m;
    int D = m->info.n_embd, V = m->info.n_vocab;
    int nl = 0, r = 0;
    for (int i = 0; i < n_items; i++) {
        r += items[i].n_tokens;
        if (!items[i].want_logits) continue;
        norm_rows(m, c->lhid + (size_t)nl * D, c->x + (size_t)(r - 1) * D, m->out_norm,
                  m->out_norm_b, 1);
        c->logit_row[items[i].slot] = nl++;
    }
    if (nl == 0) return;
    ctx_linear(c, &m->output, c->lhid, nl, c->ltmp);
    add_bias(c->ltmp, m->output_b, nl, V);
}

/* The MLP's activation: GELU(g + b_up) over rows [r0, r1) of g, split by
 * rows. Its cost per element in ctx_run's multiply-adds: an expf and a
 * division are ~8 ns, ~48 of them (so a decode step of 4 or more rows
 * splits). The gated families' SiLU(g) * u runs inside the gate/up
 * matmul instead (swiglu_cols). */
#define ACT_MACS 48

typedef struct {
    const eng_ctx *c;
    const eng_layer *L;
    int rows;
} act_job;

static void act_worker(void *arg, int ith, int nth)
{
    const act_job *j = arg;
    const eng_ctx *c = j->c;
    size_t F = (size_t)c->m->info.n_ff;
    size_t r0 = (size_t)j->rows * ith / nth, r1 = (size_t)j->rows * (ith + 1) / nth;
    for (size_t r = r0; r < r1; r++) {
        float *g = c->g + r * F;
        add_bias(g, j->L->b_up, 1, (int)F);
        c->gelu(g, F);
    }
}

/* g = SiLU(g) * u over features [f0, f1) of every row: called by the
 * gate/up matmul for the features a chunk has just computed. */
static void swiglu_cols(void *arg, int f0, int f1)
{
    const act_job *j = arg;
    const eng_ctx *c = j->c;
    size_t F = (size_t)c->m->info.n_ff;
    for (size_t r = 0; r < (size_t)j->rows; r++)
        c->swiglu(c->g + r * F + f0, c->u + r * F + f0, (size_t)(f1 - f0));
}

void text_forward(eng_ctx *c, const eng_item *items, int n_items, int n)
{
    const eng_model *m = c->m;
    const model_family *fam = m->fam;
    const eng_model_info *in = &m->info;
    int D = in->n_embd, hd = m->head_dim, F = in->n_ff;
    int qd = in->n_head * hd, kvd = in->n_head_kv * hd;

    assert(n > 0 && n <= c->p.n_batch);
    long att_macs = 0; /* this step's attention: (q.k + w.v) per head and position */
    for (int r = 0; r < n; r++)
        att_macs += 2L * (c->row_pos[r] + 1) * qd;

    for (int l = 0; l < in->n_layer; l++) {
        const eng_layer *L = &m->layers[l];
        norm_rows(m, c->xn, c->x, L->attn_norm, L->attn_norm_b, n);
        ctx_linear3(c, &L->wq, &L->wk, &L->wv, c->xn, n, c->q, c->k, c->v);
        add_bias(c->q, L->bq, n, qd);
        add_bias(c->k, L->bk, n, kvd);
        add_bias(c->v, L->bv, n, kvd);
        attend(c, items, n_items, l, n, att_macs);
        ctx_linear(c, &L->wo, c->att, n, c->tmp);
        add_bias(c->tmp, L->bo, n, D);
        for (size_t i = 0; i < (size_t)n * D; i++)
            c->x[i] += c->tmp[i];

        /* parallel: the MLP reads the same normed rows as attention (xn is intact) */
        if (!fam->parallel) norm_rows(m, c->xn, c->x, L->ffn_norm, NULL, n);
        act_job aj = {.c = c, .L = L, .rows = n};
        if (fam->gated) {
            mm_matmul_pair(c->pool, &L->w_gate.mm, &L->w_up.mm, c->xn, n, c->g, c->u, swiglu_cols,
                           &aj, c->mm_scratch);
        } else {
            ctx_linear(c, &L->w_up, c->xn, n, c->g);
            ctx_run(c, act_worker, &aj, (long)n * F * ACT_MACS);
        }
        ctx_linear(c, &L->w_down, c->g, n, c->tmp);
        add_bias(c->tmp, L->b_down, n, D);
        for (size_t i = 0; i < (size_t)n * D; i++)
            c->x[i] += c->tmp[i];
    }
    output_logits(c, items, n_items);
}
