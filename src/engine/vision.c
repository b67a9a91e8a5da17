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

static void layernorm_rows(float *out, const float *x, const float *w, const float *b, int rows,
                           int n, float eps)
{
    for (int r = 0; r < rows; r++)
        layernorm(out + (size_t)r * n, x + (size_t)r * n, w, b, n, eps);
}

/* out = x W^T + b for rows of x; out has W->n_out columns. */
static void linear_bias(eng_ctx *c, const eng_weight *W, const float *b, const float *x, int rows,
                        float *out)
{
    ctx_linear(c, W, x, rows, out);
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < W->n_out; i++)
            out[(size_t)r * W->n_out + i] += b[i];
}

/* The residual connection: x += d, n floats. */
static void add_to(float *x, const float *d, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] += d[i];
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
    ctx_softmax(sc, P, scale);
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

/* Patches in row-major order, each flattened as the Conv2d weight is: (c, ky, kx). */
static void patchify(const eng_model *m, const float *pixels, float *out)
{
    int S = m->info.image_size, ps = m->info.patch_size, side = S / ps, vin = 3 * ps * ps;
    for (int py = 0; py < side; py++)
        for (int px = 0; px < side; px++) {
            float *row = out + (size_t)(py * side + px) * vin;
            for (int ch = 0; ch < 3; ch++)
                for (int ky = 0; ky < ps; ky++)
                    memcpy(row + (ch * ps + ky) * ps,
                           pixels + ((size_t)ch * S + (size_t)py * ps + ky) * S + (size_t)px * ps,
                           (size_t)ps * sizeof(float));
        }
}

/* Idefics3 pixel shuffle: output token (h2, w2) concatenates the s x s
 * block of patches below and right of (h2*s, w2*s), row m of the block
 * outermost, then column k, then the feature: element (m*s + k)*Dv + d. */
static void pixel_shuffle(const eng_model *m, const float *x, float *out)
{
    int side = m->info.image_size / m->info.patch_size, s = m->info.scale_factor;
    int Dv = m->v_embd, so = side / s;
    for (int h2 = 0; h2 < so; h2++)
        for (int w2 = 0; w2 < so; w2++) {
            float *dst = out + (size_t)(h2 * so + w2) * Dv * s * s;
            for (int mm = 0; mm < s; mm++)
                for (int k = 0; k < s; k++)
                    memcpy(dst + (size_t)(mm * s + k) * Dv,
                           x + (size_t)((h2 * s + mm) * side + w2 * s + k) * Dv,
                           (size_t)Dv * sizeof(float));
        }
}

void vision_forward(eng_ctx *c, const float *pixels, float *out)
{
    const eng_model *m = c->m;
    int P = m->v_patches, Dv = m->v_embd, Fv = m->v_ff;
    size_t PD = (size_t)P * Dv;

    patchify(m, pixels, c->vxn);
    linear_bias(c, &m->patch_embd, m->patch_bias, c->vxn, P, c->vx);
    add_to(c->vx, m->pos_embd, PD);

    for (int l = 0; l < m->v_layer; l++) {
        const eng_vlayer *L = &m->vlayers[l];
        layernorm_rows(c->vxn, c->vx, L->ln1_w, L->ln1_b, P, Dv, m->v_eps);
        linear_bias(c, &L->wq, L->bq, c->vxn, P, c->vq);
        linear_bias(c, &L->wk, L->bk, c->vxn, P, c->vk);
        linear_bias(c, &L->wv, L->bv, c->vxn, P, c->vv);
        ctx_run(c, attend_worker, c, 2L * P * P * Dv);
        linear_bias(c, &L->wo, L->bo, c->vatt, P, c->vtmp);
        add_to(c->vx, c->vtmp, PD);

        layernorm_rows(c->vxn, c->vx, L->ln2_w, L->ln2_b, P, Dv, m->v_eps);
        linear_bias(c, &L->w_up, L->b_up, c->vxn, P, c->vff);
        for (size_t i = 0; i < (size_t)P * Fv; i++)
            c->vff[i] = gelu_tanh(c->vff[i]);
        linear_bias(c, &L->w_down, L->b_down, c->vff, P, c->vtmp);
        add_to(c->vx, c->vtmp, PD);
    }
    layernorm_rows(c->vxn, c->vx, m->post_ln_w, m->post_ln_b, P, Dv, m->v_eps);

    pixel_shuffle(m, c->vxn, c->vshuf);
    ctx_linear(c, &m->mm_fc, c->vshuf, m->info.n_image_tokens, out);
}
