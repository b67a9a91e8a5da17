/* The SigLIP-style vision encoder and Idefics3 connector, one tile at a
 * time: patch embedding (a matmul over flattened patches), learned position
 * embedding, pre-LN blocks, post-LayerNorm, pixel shuffle, linear. */
#include "engine/ctx.h"

#include <math.h>
#include <string.h>

static void layernorm(float *out, const float *x, const float *w, const float *b, int n, float eps)
{
    float mean = 0.0f, var = 0.0f;
    for (int i = 0; i < n; i++)
        mean += x[i];
    mean /= (float)n;
    for (int i = 0; i < n; i++)
        var += (x[i] - mean) * (x[i] - mean);
    float r = 1.0f / sqrtf(var / (float)n + eps);
    for (int i = 0; i < n; i++)
        out[i] = (x[i] - mean) * r * w[i] + b[i];
}

static void add_bias(float *x, const float *b, int rows, int n)
{
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < n; i++)
            x[(size_t)r * n + i] += b[i];
}

static float gelu_tanh(float x)
{
    const float k = 0.7978845608028654f; /* sqrt(2/pi) */
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

/* Full bidirectional attention of patch i, head h, over the tile. */
static void attend_one(const eng_ctx *c, int P, int Dv, int hd, int i, int h, float *sc)
{
    float scale = 1.0f / sqrtf((float)hd);
    const float *q = c->vq + (size_t)i * Dv + (size_t)h * hd;
    c->attn->dots(q, c->vk + (size_t)h * hd, (size_t)Dv, P, hd, sc);
    float mx = -INFINITY;
    for (int j = 0; j < P; j++) {
        sc[j] *= scale;
        mx = sc[j] > mx ? sc[j] : mx;
    }
    float sum = 0.0f;
    for (int j = 0; j < P; j++) {
        sc[j] = expf(sc[j] - mx);
        sum += sc[j];
    }
    float inv = 1.0f / sum;
    for (int j = 0; j < P; j++)
        sc[j] *= inv;
    c->attn->wsum(sc, c->vv + (size_t)h * hd, (size_t)Dv, P, hd,
                  c->vatt + (size_t)i * Dv + (size_t)h * hd);
}

static void attend_worker(void *arg, int ith, int nth)
{
    const eng_ctx *c = arg;
    int P = c->m->v_patches, Dv = c->m->v_embd, H = c->m->v_head;
    float *sc = c->scores + (size_t)ith * c->scores_stride;
    for (int u = ith; u < P * H; u += nth)
        attend_one(c, P, Dv, Dv / H, u / H, u % H, sc);
}

void vision_forward(eng_ctx *c, const float *pixels, float *out)
{
    const eng_model *m = c->m;
    const eng_model_info *in = &m->info;
    int S = in->image_size, ps = in->patch_size, side = S / ps, P = m->v_patches;
    int Dv = m->v_embd, Fv = m->v_ff, s = in->scale_factor, vin = 3 * ps * ps;

    /* Patches in row-major order, each flattened as the Conv2d weight is: (c, ky, kx). */
    for (int py = 0; py < side; py++)
        for (int px = 0; px < side; px++) {
            float *row = c->vxn + (size_t)(py * side + px) * vin;
            for (int ch = 0; ch < 3; ch++)
                for (int ky = 0; ky < ps; ky++)
                    memcpy(row + (ch * ps + ky) * ps,
                           pixels + ((size_t)ch * S + (size_t)py * ps + ky) * S + (size_t)px * ps,
                           (size_t)ps * sizeof(float));
        }
    ctx_linear(c, &m->patch_embd, c->vxn, P, c->vx);
    add_bias(c->vx, m->patch_bias, P, Dv);
    for (size_t i = 0; i < (size_t)P * Dv; i++)
        c->vx[i] += m->pos_embd[i];

    for (int l = 0; l < m->v_layer; l++) {
        const eng_vlayer *L = &m->vlayers[l];
        for (int r = 0; r < P; r++)
            layernorm(c->vxn + (size_t)r * Dv, c->vx + (size_t)r * Dv, L->ln1_w, L->ln1_b, Dv,
                      m->v_eps);
        ctx_linear(c, &L->wq, c->vxn, P, c->vq);
        add_bias(c->vq, L->bq, P, Dv);
        ctx_linear(c, &L->wk, c->vxn, P, c->vk);
        add_bias(c->vk, L->bk, P, Dv);
        ctx_linear(c, &L->wv, c->vxn, P, c->vv);
        add_bias(c->vv, L->bv, P, Dv);
        ctx_run(c, attend_worker, c, 2L * P * P * Dv);
        ctx_linear(c, &L->wo, c->vatt, P, c->vtmp);
        add_bias(c->vtmp, L->bo, P, Dv);
        for (size_t i = 0; i < (size_t)P * Dv; i++)
            c->vx[i] += c->vtmp[i];

        for (int r = 0; r < P; r++)
            layernorm(c->vxn + (size_t)r * Dv, c->vx + (size_t)r * Dv, L->ln2_w, L->ln2_b, Dv,
                      m->v_eps);
        ctx_linear(c, &L->w_up, c->vxn, P, c->vff);
        add_bias(c->vff, L->b_up, P, Fv);
        for (size_t i = 0; i < (size_t)P * Fv; i++)
            c->vff[i] = gelu_tanh(c->vff[i]);
        ctx_linear(c, &L->w_down, c->vff, P, c->vtmp);
        add_bias(c->vtmp, L->b_down, P, Dv);
        for (size_t i = 0; i < (size_t)P * Dv; i++)
            c->vx[i] += c->vtmp[i];
    }
    for (int r = 0; r < P; r++)
        layernorm(c->vxn + (size_t)r * Dv, c->vx + (size_t)r * Dv, m->post_ln_w, m->post_ln_b, Dv,
                  m->v_eps);

    /* Idefics3 pixel shuffle: output token (h2, w2) concatenates the s x s
     * block of patches below and right of (h2*s, w2*s), row m of the block
     * outermost, then column k, then the feature: element (m*s + k)*Dv + d. */
    int so = side / s;
    for (int h2 = 0; h2 < so; h2++)
        for (int w2 = 0; w2 < so; w2++) {
            float *dst = c->vshuf + (size_t)(h2 * so + w2) * Dv * s * s;
            for (int mm = 0; mm < s; mm++)
                for (int k = 0; k < s; k++)
                    memcpy(dst + (size_t)(mm * s + k) * Dv,
                           c->vxn + (size_t)((h2 * s + mm) * side + w2 * s + k) * Dv,
                           (size_t)Dv * sizeof(float));
        }
    ctx_linear(c, &m->mm_fc, c->vshuf, in->n_image_tokens, out);
}
