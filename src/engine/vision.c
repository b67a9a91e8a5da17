/* The SigLIP-style vision encoder and its connector, one tile at a time:
 * patch embedding (a matmul over flattened patches), learned position
 * embedding, pre-LN blocks, post-LayerNorm, then Idefics3's pixel shuffle
 * and linear, or (llama.cpp's "mlp", moondream2) linear, GELU, linear. */
#include "engine/ctx.h"

#include <math.h>
#include <string.h>
#include <time.h>

/* Row-wise float work split over the pool: layer norms, biases, residuals,
 * GELU. One job kind per call; rows are independent, so the split never
 * changes a result. */
enum vrow_op { VROW_NORM, VROW_BIAS, VROW_BIAS_ADD, VROW_GELU, VROW_ADD };

typedef struct {
    enum vrow_op op;
    float *out;
    const float *x, *w, *b;
    int rows, n;
    float eps;
    kern_gelu_fn gelu;
} vrow_job;

static void vrow_worker(void *arg, int ith, int nth)
{
    const vrow_job *j = arg;
    int r0 = (int)((long)j->rows * ith / nth), r1 = (int)((long)j->rows * (ith + 1) / nth);
    size_t n = (size_t)j->n;
    for (int r = r0; r < r1; r++) {
        float *o = j->out + r * n;
        const float *x = j->x ? j->x + r * n : NULL;
        switch (j->op) {
        case VROW_NORM: ctx_layernorm(o, x, j->w, j->b, j->n, j->eps); break;
        case VROW_BIAS:
            for (size_t i = 0; i < n; i++)
                o[i] += j->b[i];
            break;
        case VROW_BIAS_ADD: /* out += x + b: a residual after its projection */
            for (size_t i = 0; i < n; i++)
                o[i] += x[i] + j->b[i];
            break;
        case VROW_GELU:
            for (size_t i = 0; i < n; i++)
                o[i] += j->b[i];
            j->gelu(o, n);
            break;
        case VROW_ADD:
            for (size_t i = 0; i < n; i++)
                o[i] += x[i];
            break;
        }
    }
}

static void vrows(eng_ctx *c, vrow_job j)
{
    ctx_run(c, vrow_worker, &j, (long)j.rows * j.n * 4);
}

/* out = x W^T + b for rows of x; out has W->n_out columns. */
static void linear_bias(eng_ctx *c, const eng_weight *W, const float *b, const float *x, int rows,
                        float *out)
{
    ctx_linear(c, W, x, rows, out);
    vrows(c, (vrow_job){.op = VROW_BIAS, .out = out, .b = b, .rows = rows, .n = W->n_out});
}

/* The residual connection: x += x W^T + b, with out as the product's scratch. */
static void linear_residual(eng_ctx *c, const eng_weight *W, const float *b, const float *in,
                            int rows, float *tmp, float *x)
{
    ctx_linear(c, W, in, rows, tmp);
    vrows(c,
          (vrow_job){.op = VROW_BIAS_ADD, .out = x, .x = tmp, .b = b, .rows = rows, .n = W->n_out});
}

#define VIS_TBLOCK 16 /* features per transpose unit: one cache line of a K row */

/* V head by head in vtmp (free until the output projection): head h's value
 * rows contiguous at vtmp + h * P * hd. In place, a head's rows lie Dv floats
 * apart, a multiple of 1 KB, so the rows a key block reads fall into a
 * quarter of L1's sets and evict each other. */
static float *vis_vheads(const eng_ctx *c)
{
    return c->vtmp;
}

/* The attention's operands: K transposed, one row per feature, so a block of
 * queries reads each key's features as contiguous runs of keys
 * (kern_attn_ops.block), and V head by head. */
static void layout_worker(void *arg, int ith, int nth)
{
    eng_ctx *c = arg;
    int P = c->m->v_patches, Dv = c->m->v_embd, H = c->m->v_head, hd = Dv / H;
    /* a unit reads each K row's line once and writes VIS_TBLOCK rows of K^T in
     * step; one feature per unit read every line of K once per feature */
    for (int d0 = ith * VIS_TBLOCK; d0 < Dv; d0 += nth * VIS_TBLOCK) {
        int d1 = Dv - d0 < VIS_TBLOCK ? Dv : d0 + VIS_TBLOCK;
        float *dst = c->vkt + (size_t)d0 * c->vkt_stride;
        for (int t = 0; t < P; t++) {
            const float *src = c->vk + (size_t)t * Dv;
            for (int d = d0; d < d1; d++)
                dst[(size_t)(d - d0) * c->vkt_stride + t] = src[d];
        }
    }
    float *vh = vis_vheads(c);
    int t0 = (int)((long)P * ith / nth), t1 = (int)((long)P * (ith + 1) / nth);
    for (int t = t0; t < t1; t++)
        for (int h = 0; h < H; h++)
            memcpy(vh + ((size_t)h * P + t) * hd, c->vv + (size_t)t * Dv + (size_t)h * hd,
                   (size_t)hd * sizeof(float));
}

/* Queries per attention unit: a multiple of every level's tile (4 or 6
 * queries), so only a head's last unit takes a short tile; within the scratch. */
#define VIS_QB 24
_Static_assert(VIS_QB <= VIS_QBLOCK, "the scores scratch holds VIS_QBLOCK queries");

/* Full bidirectional attention, one head and VIS_QB queries per unit. */
static void attend_worker(void *arg, int ith, int nth)
{
    const eng_ctx *c = arg;
    int P = c->m->v_patches, Dv = c->m->v_embd, H = c->m->v_head, hd = Dv / H;
    int nb = (P + VIS_QB - 1) / VIS_QB;
    float scale = 1.0f / sqrtf((float)hd);
    float *sc = c->vscores + (size_t)ith * VIS_QBLOCK * (P + 1);
    /* a thread's next unit is the next query block of the same head (the
     * threads go through one head together), so the head's keys and values
     * are still in cache: ordered head by head they run ~12 % faster */
    for (int u = ith; u < nb * H; u += nth) {
        int h = u / nb, i0 = (u % nb) * VIS_QB;
        int nq = P - i0 < VIS_QB ? P - i0 : VIS_QB;
        size_t off = (size_t)i0 * Dv + (size_t)h * hd;
        c->attn->block(c->vq + off, (size_t)Dv, c->vkt + (size_t)h * hd * c->vkt_stride,
                       c->vkt_stride, vis_vheads(c) + (size_t)h * P * hd, (size_t)hd, nq, P, hd,
                       scale, c->vatt + off, (size_t)Dv, sc);
    }
}

static double vis_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Charges the time since *t to kind k when profiling. */
static void vis_mark(eng_ctx *c, int k, double *t)
{
    if (!c->vprof) return;
    double now = vis_now_ms();
    c->vprof[k] += now - *t;
    *t = now;
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
    double t = c->vprof ? vis_now_ms() : 0;

    patchify(m, pixels, c->vxn);
    linear_bias(c, &m->patch_embd, m->patch_bias, c->vxn, P, c->vx);
    vrows(c, (vrow_job){.op = VROW_ADD, .out = c->vx, .x = m->pos_embd, .rows = P, .n = Dv});
    vis_mark(c, ENG_VK_PATCH, &t);

    for (int l = 0; l < m->v_layer; l++) {
        const eng_vlayer *L = &m->vlayers[l];
        vrows(c, (vrow_job){VROW_NORM, c->vxn, c->vx, L->ln1_w, L->ln1_b, P, Dv, m->v_eps, NULL});
        vis_mark(c, ENG_VK_NORM, &t);
        /* one pool call on activations quantized once, then the three biases */
        ctx_linear3(c, &L->wq, &L->wk, &L->wv, c->vxn, P, c->vq, c->vk, c->vv);
        vrows(c, (vrow_job){.op = VROW_BIAS, .out = c->vq, .b = L->bq, .rows = P, .n = Dv});
        vrows(c, (vrow_job){.op = VROW_BIAS, .out = c->vk, .b = L->bk, .rows = P, .n = Dv});
        vrows(c, (vrow_job){.op = VROW_BIAS, .out = c->vv, .b = L->bv, .rows = P, .n = Dv});
        vis_mark(c, ENG_VK_QKV, &t);
        ctx_run(c, layout_worker, c, 2L * P * Dv);
        ctx_run(c, attend_worker, c, 2L * P * P * Dv);
        vis_mark(c, ENG_VK_ATTN, &t);
        linear_residual(c, &L->wo, L->bo, c->vatt, P, c->vtmp, c->vx);
        vis_mark(c, ENG_VK_OUT, &t);

        vrows(c, (vrow_job){VROW_NORM, c->vxn, c->vx, L->ln2_w, L->ln2_b, P, Dv, m->v_eps, NULL});
        vis_mark(c, ENG_VK_NORM, &t);
        ctx_linear(c, &L->w_up, c->vxn, P, c->vff);
        vis_mark(c, ENG_VK_FFN_UP, &t);
        vrows(
            c,
            (vrow_job){
                .op = VROW_GELU, .out = c->vff, .b = L->b_up, .rows = P, .n = Fv, .gelu = c->gelu});
        vis_mark(c, ENG_VK_GELU, &t);
        linear_residual(c, &L->w_down, L->b_down, c->vff, P, c->vtmp, c->vx);
        vis_mark(c, ENG_VK_FFN_DOWN, &t);
    }
    const float *feat = c->vx;
    if (m->post_ln_w) {
        vrows(c, (vrow_job){VROW_NORM, c->vxn, c->vx, m->post_ln_w, m->post_ln_b, P, Dv, m->v_eps,
                            NULL});
        feat = c->vxn;
    }
    vis_mark(c, ENG_VK_NORM, &t);

    if (m->proj == PROJ_MLP) {
        ctx_linear(c, &m->mm_fc, feat, P, c->vff);
        vrows(c, (vrow_job){.op = VROW_GELU,
                            .out = c->vff,
                            .b = m->mm_b,
                            .rows = P,
                            .n = m->mm_ff,
                            .gelu = c->gelu});
        linear_bias(c, &m->mm_fc2, m->mm_b2, c->vff, P, out);
    } else {
        pixel_shuffle(m, feat, c->vshuf);
        ctx_linear(c, &m->mm_fc, c->vshuf, m->info.n_image_tokens, out);
    }
    vis_mark(c, ENG_VK_CONNECTOR, &t);
}
