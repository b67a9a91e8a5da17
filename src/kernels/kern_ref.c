/* Scalar reference kernels: plain C that is obviously right. Every SIMD
 * kernel is tested against these, so they favour clarity over speed.
 *
 * Integer types. Activations are int8 q with |q| <= 127 and a scale per row;
 * a weight block is codes c (c = w + 1) or, for Q8_0, int8 weights, plus an
 * f16 scale d. Per block
 *     isum = sum(c * q) - sum(q)   (= sum(w * q))
 * is exact in int32, and the row's result is sum over blocks of isum * d,
 * times the activation scale.
 *
 * Why int32 cannot overflow inside a block: the largest block is 256
 * weights with codes <= 3 (Q2_0) and |q| <= 127, so |sum(c * q)| <=
 * 256 * 3 * 127 = 97536 and |sum(q)| <= 256 * 127 = 32512. Q8_0 has 32
 * weights with |w| <= 128: |sum(w * q)| <= 32 * 128 * 127 = 520192. All far
 * below 2^31 (and sums of 32 q fit the int16 group sums: 32 * 127 = 4064).
 * Across blocks we accumulate in float, as the SIMD kernels do. */
#include <math.h>
#include <stddef.h>

#include "kernels/kern_isa.h"
#include "kernels/traits.h"

void kern_permute64(const int8_t *q, int n, int8_t *out)
{
    for (int g = 0; g < n; g += 64)
        for (int f = 0; f < 4; f++)
            for (int k = 0; k < 16; k++)
                out[g + 16 * f + k] = q[g + 4 * k + f];
}

void kern_f16_to_f32_row(const kt_f16 *x, float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] = kt_f16_to_f32(x[i]);
}

static void ref_dots(const float *q, const float *m, size_t stride, int T, int n, float *out)
{
    for (int t = 0; t < T; t++) {
        const float *r = m + (size_t)t * stride;
        float s = 0.0f;
        for (int i = 0; i < n; i++)
            s += q[i] * r[i];
        out[t] = s;
    }
}

static void ref_wsum(const float *w, const float *m, size_t stride, int T, int n, float *out)
{
    for (int i = 0; i < n; i++)
        out[i] = 0.0f;
    for (int t = 0; t < T; t++) {
        const float *r = m + (size_t)t * stride;
        for (int i = 0; i < n; i++)
            out[i] += w[t] * r[i];
    }
}

float kern_exp_approx(float x)
{
    x = fminf(fmaxf(x, -87.3f), 88.3f);
    float n = floorf(x * 1.44269504f + 0.5f);
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    return ldexpf(p, (int)n);
}

void kern_gelu_row(float *x, size_t n)
{
    const float k = 0.7978845608028654f; /* sqrt(2/pi) */
    for (size_t i = 0; i < n; i++) {
        float u = k * (x[i] + 0.044715f * x[i] * x[i] * x[i]);
        x[i] = x[i] / (1.0f + kern_exp_approx(-2.0f * u));
    }
}

void kern_swiglu_row(float *g, const float *u, size_t n)
{
    for (size_t i = 0; i < n; i++)
        g[i] = g[i] / (1.0f + kern_exp_approx(-g[i])) * u[i];
}

/* One query at a time: scores, softmax, weighted sum, as the definition reads. */
static void ref_block(const float *q, size_t qs, const float *kt, size_t kts, const float *v,
                      size_t vs, int nq, int T, int n, float scale, float *out, size_t os,
                      float *scratch)
{
    for (int i = 0; i < nq; i++) {
        const float *qi = q + (size_t)i * qs;
        float *s = scratch + (size_t)i * T, mx = -INFINITY, sum = 0.0f;
        for (int t = 0; t < T; t++) {
            float d = 0.0f;
            for (int j = 0; j < n; j++)
                d += qi[j] * kt[(size_t)j * kts + t];
            s[t] = d * scale;
            mx = s[t] > mx ? s[t] : mx;
        }
        for (int t = 0; t < T; t++) {
            s[t] = kern_exp_approx(s[t] - mx);
            sum += s[t];
        }
        float *o = out + (size_t)i * os;
        ref_wsum(s, v, vs, T, n, o);
        for (int j = 0; j < n; j++)
            o[j] /= sum;
    }
}

const kern_attn_ops kern_ref_attn = {ref_dots, ref_wsum, ref_block};

void kern_quantize_row(const float *x, int n, int8_t *q, int16_t *gsum, float *scale)
{
    float amax = 0.0f;
    for (int i = 0; i < n; i++)
        amax = fmaxf(amax, fabsf(x[i]));

    *scale = amax / 127.0f;
    float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    for (int i = 0; i < n; i++) {
        /* nearbyintf: round half to even, as SIMD float->int conversions do */
        float v = nearbyintf(x[i] * id);
        v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
        if (!(v == v)) /* NaN: keep the conversion defined */
            v = 0.0f;
        q[i] = (int8_t)v;
    }
    for (int g = 0; g < n / KERN_GROUP; g++) {
        int s = 0;
        for (int i = 0; i < KERN_GROUP; i++)
            s += q[g * KERN_GROUP + i];
        gsum[g] = (int16_t)s;
    }
}

/* Integer GEMM shared by all integer types; only the block decode differs.
 * Loops: weight row, block, activation row, so each block is decoded once
 * and its partial sums go straight into out. */
static void gemm_int(kt_type t, const void *w, size_t w_stride, int r0, int r1, const kern_acts *a,
                     float *out, size_t ldo)
{
    const kt_traits *tr = kt_traits_of(t);
    int bs = tr->block;
    size_t bb = (size_t)tr->block_bytes;
    int n = a->n;
    int nb = n / bs;
    int ng = n / KERN_GROUP;
    int gpb = bs / KERN_GROUP; /* activation groups per weight block */

    for (int r = r0; r < r1; r++) {
        const unsigned char *row = (const unsigned char *)w + (size_t)r * w_stride;
        for (int j = 0; j < a->rows; j++)
            out[(size_t)j * ldo + r] = 0.0f;

        for (int b = 0; b < nb; b++) {
            const void *blk = row + (size_t)b * bb;
            int8_t wq[BLK_Q8_0];
            uint8_t c[KT_BLOCK_MAX];
            float d;

            if (t == KT_Q8_0) {
                const blk_q8_0 *q8 = blk;
                for (int i = 0; i < BLK_Q8_0; i++)
                    wq[i] = q8->qs[i];
                d = kt_f16_to_f32(q8->d);
            } else {
                kt_unpack_codes(t, blk, c, &d);
            }

            for (int j = 0; j < a->rows; j++) {
                const int8_t *q = a->q + (size_t)j * n + (size_t)b * bs;
                int32_t isum = 0;
                if (t == KT_Q8_0) {
                    for (int i = 0; i < bs; i++)
                        isum += (int32_t)wq[i] * q[i];
                } else {
                    int32_t cq = 0, qs = 0;
                    for (int i = 0; i < bs; i++)
                        cq += (int32_t)c[i] * q[i];
                    const int16_t *gs = a->gsum + (size_t)j * ng + (size_t)b * gpb;
                    for (int g = 0; g < gpb; g++)
                        qs += gs[g];
                    isum = cq - qs;
                }
                out[(size_t)j * ldo + r] += (float)isum * d;
            }
        }
        for (int j = 0; j < a->rows; j++)
            out[(size_t)j * ldo + r] *= a->scale[j];
    }
}

static float weight_at(kt_type t, const void *row, int i)
{
    switch (t) {
    case KT_F16: return kt_f16_to_f32(((const kt_f16 *)row)[i]);
    case KT_BF16: return kt_bf16_to_f32(((const kt_bf16 *)row)[i]);
    default: return ((const float *)row)[i];
    }
}

static void gemm_float(kt_type t, const void *w, size_t w_stride, int r0, int r1,
                       const kern_acts *a, float *out, size_t ldo)
{
    int n = a->n;
    for (int r = r0; r < r1; r++) {
        const void *row = (const unsigned char *)w + (size_t)r * w_stride;
        for (int j = 0; j < a->rows; j++) {
            const float *x = a->f + (size_t)j * n;
            float s = 0.0f;
            for (int i = 0; i < n; i++)
                s += weight_at(t, row, i) * x[i];
            out[(size_t)j * ldo + r] = s;
        }
    }
}

#define GEMM_FN(name, type, impl)                                                                  \
    static void name(const void *w, size_t w_stride, int r0, int r1, const kern_acts *a,           \
                     float *out, size_t ldo)                                                       \
    {                                                                                              \
        impl(type, w, w_stride, r0, r1, a, out, ldo);                                              \
    }

GEMM_FN(gemm_f32, KT_F32, gemm_float)
GEMM_FN(gemm_f16, KT_F16, gemm_float)
GEMM_FN(gemm_bf16, KT_BF16, gemm_float)
GEMM_FN(gemm_q8_0, KT_Q8_0, gemm_int)
GEMM_FN(gemm_tq2_0, KT_TQ2_0, gemm_int)
GEMM_FN(gemm_tq1_0, KT_TQ1_0, gemm_int)
GEMM_FN(gemm_q2_0, KT_Q2_0, gemm_int)
GEMM_FN(gemm_q1_0, KT_Q1_0, gemm_int)

static const kern_ops ref_ops[] = {
    {KT_F32, KERN_ISA_SCALAR, false, gemm_f32},    {KT_F16, KERN_ISA_SCALAR, false, gemm_f16},
    {KT_BF16, KERN_ISA_SCALAR, false, gemm_bf16},  {KT_Q8_0, KERN_ISA_SCALAR, true, gemm_q8_0},
    {KT_TQ2_0, KERN_ISA_SCALAR, true, gemm_tq2_0}, {KT_TQ1_0, KERN_ISA_SCALAR, true, gemm_tq1_0},
    {KT_Q2_0, KERN_ISA_SCALAR, true, gemm_q2_0},   {KT_Q1_0, KERN_ISA_SCALAR, true, gemm_q1_0},
};

const kern_ops *kern_ref_ops(kt_type t)
{
    for (size_t i = 0; i < sizeof ref_ops / sizeof ref_ops[0]; i++)
        if (ref_ops[i].type == t) return &ref_ops[i];
    return NULL;
}
