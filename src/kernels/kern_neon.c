/* NEON kernels for every ARMv8-A (kern_neon.h without sdot), and the
 * vectorised activation quantizer every ARM level uses. */
#define KG_PREFIX kern_neon_
#define KG_ISA KERN_ISA_NEON
#define KN_DOTPROD 0
#include "kernels/kern_neon.h"

#include <math.h>

/* Same arithmetic as kern_quantize_row, step for step (bit-identical):
 * vmaxnm ignores NaN like fmaxf, vrndn rounds half to even. */
void kern_neon_quantize_row(const float *x, int n, int8_t *q, int16_t *gsum, float *scale)
{
    float32x4_t m = vdupq_n_f32(0);
    for (int i = 0; i < n; i += 4)
        m = vmaxnmq_f32(m, vabsq_f32(vld1q_f32(x + i)));
    float amax = vmaxnmvq_f32(m);
    *scale = amax / 127.0f;
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    const float32x4_t hi = vdupq_n_f32(127.0f), lo = vdupq_n_f32(-127.0f);
    for (int g = 0; g < n / KERN_GROUP; g++) {
        const float *xg = x + (size_t)g * KERN_GROUP;
        int8x8_t v[4];
        for (int k = 0; k < 4; k++) {
            int32x4_t i0 = vcvtq_s32_f32(
                vmaxq_f32(vminq_f32(vrndnq_f32(vmulq_n_f32(vld1q_f32(xg + 8 * k), id)), hi), lo));
            int32x4_t i1 = vcvtq_s32_f32(vmaxq_f32(
                vminq_f32(vrndnq_f32(vmulq_n_f32(vld1q_f32(xg + 8 * k + 4), id)), hi), lo));
            v[k] = vqmovn_s16(vcombine_s16(vqmovn_s32(i0), vqmovn_s32(i1)));
        }
        int8x16_t a = vcombine_s8(v[0], v[1]), b = vcombine_s8(v[2], v[3]);
        vst1q_s8(q + (size_t)g * KERN_GROUP, a);
        vst1q_s8(q + (size_t)g * KERN_GROUP + 16, b);
        gsum[g] = (int16_t)(vaddlvq_s8(a) + vaddlvq_s8(b));
    }
}

/* fcvtl: four halves per instruction; the tail through the reference. */
void kern_neon_f16_to_f32_row(const kt_f16 *x, float *y, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        float16x8_t h = vreinterpretq_f16_u16(vld1q_u16(x + i));
        vst1q_f32(y + i, vcvt_f32_f16(vget_low_f16(h)));
        vst1q_f32(y + i + 4, vcvt_high_f32_f16(h));
    }
    kern_f16_to_f32_row(x + i, y + i, n - i);
}

/* Four rows at a time, one FMA accumulator each.
 * neon_dots and neon_wsum are kern_avx2.c's avx2_dots and avx2_wsum at
 * half the width; like the tile kernels they stay written out per ISA,
 * since a shared loop would need a macro per intrinsic. */
static void neon_dots(const float *q, const float *m, size_t stride, int T, int n, float *out)
{
    int n4 = n & ~3, t = 0;
    for (; t + 4 <= T; t += 4) {
        const float *r0 = m + (size_t)t * stride, *r1 = r0 + stride, *r2 = r1 + stride,
                    *r3 = r2 + stride;
        float32x4_t a0 = vdupq_n_f32(0), a1 = a0, a2 = a0, a3 = a0;
        for (int i = 0; i < n4; i += 4) {
            float32x4_t qv = vld1q_f32(q + i);
            a0 = vfmaq_f32(a0, qv, vld1q_f32(r0 + i));
            a1 = vfmaq_f32(a1, qv, vld1q_f32(r1 + i));
            a2 = vfmaq_f32(a2, qv, vld1q_f32(r2 + i));
            a3 = vfmaq_f32(a3, qv, vld1q_f32(r3 + i));
        }
        float32x4_t s = vpaddq_f32(vpaddq_f32(a0, a1), vpaddq_f32(a2, a3));
        for (int i = n4; i < n; i++) {
            float32x4_t rv = {r0[i], r1[i], r2[i], r3[i]};
            s = vfmaq_n_f32(s, rv, q[i]);
        }
        vst1q_f32(out + t, s);
    }
    for (; t < T; t++) {
        const float *r = m + (size_t)t * stride;
        float32x4_t a = vdupq_n_f32(0);
        for (int i = 0; i < n4; i += 4)
            a = vfmaq_f32(a, vld1q_f32(q + i), vld1q_f32(r + i));
        float v = vaddvq_f32(a);
        for (int i = n4; i < n; i++)
            v += q[i] * r[i];
        out[t] = v;
    }
}

/* 16 outputs at a time held in four accumulators across all rows. */
static void neon_wsum(const float *w, const float *m, size_t stride, int T, int n, float *out)
{
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        float32x4_t a0 = vdupq_n_f32(0), a1 = a0, a2 = a0, a3 = a0;
        for (int t = 0; t < T; t++) {
            const float *r = m + (size_t)t * stride + i;
            a0 = vfmaq_n_f32(a0, vld1q_f32(r), w[t]);
            a1 = vfmaq_n_f32(a1, vld1q_f32(r + 4), w[t]);
            a2 = vfmaq_n_f32(a2, vld1q_f32(r + 8), w[t]);
            a3 = vfmaq_n_f32(a3, vld1q_f32(r + 12), w[t]);
        }
        vst1q_f32(out + i, a0);
        vst1q_f32(out + i + 4, a1);
        vst1q_f32(out + i + 8, a2);
        vst1q_f32(out + i + 12, a3);
    }
    kern_ref_attn.wsum(w, m + i, stride, T, n - i, out + i); /* the last columns */
}

/* kern_exp_approx, four lanes at a time (FMA where it adds). */
static inline float32x4_t neon_exp(float32x4_t x)
{
    x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-87.3f)), vdupq_n_f32(88.3f));
    float32x4_t n = vrndmq_f32(vfmaq_f32(vdupq_n_f32(0.5f), x, vdupq_n_f32(1.44269504f)));
    float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(0.693359375f));
    r = vfmaq_f32(r, n, vdupq_n_f32(2.12194440e-4f));
    float32x4_t p = vdupq_n_f32(1.9875691500e-4f);
    p = vfmaq_f32(vdupq_n_f32(1.3981999507e-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(8.3334519073e-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(4.1665795894e-2f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.6666665459e-1f), p, r);
    p = vfmaq_f32(vdupq_n_f32(5.0000001201e-1f), p, r);
    p = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0f)), vmulq_f32(p, r), r);
    int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
    return vmulq_f32(p, vreinterpretq_f32_s32(e));
}

static float ka_exp_sum(float *s, int T)
{
    float32x4_t m4 = vdupq_n_f32(-INFINITY);
    int t = 0;
    for (; t + 4 <= T; t += 4)
        m4 = vmaxq_f32(m4, vld1q_f32(s + t));
    float mx = vmaxvq_f32(m4);
    for (; t < T; t++)
        mx = s[t] > mx ? s[t] : mx;
    float32x4_t m = vdupq_n_f32(mx), acc = vdupq_n_f32(0);
    t = 0;
    for (; t + 4 <= T; t += 4) {
        float32x4_t e = neon_exp(vsubq_f32(vld1q_f32(s + t), m));
        vst1q_f32(s + t, e);
        acc = vaddq_f32(acc, e);
    }
    float sum = vaddvq_f32(acc);
    for (; t < T; t++) {
        s[t] = kern_exp_approx(s[t] - mx);
        sum += s[t];
    }
    return sum;
}

#include "kernels/kern_attn.h"

const kern_attn_ops kern_neon_attn = {neon_dots, neon_wsum, ka_block};

void kern_neon_gelu_row(float *x, size_t n)
{
    const float32x4_t k = vdupq_n_f32(-2.0f * 0.7978845608028654f), c = vdupq_n_f32(0.044715f);
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        float32x4_t v = vld1q_f32(x + i);
        float32x4_t u = vmulq_f32(k, vfmaq_f32(v, vmulq_f32(c, v), vmulq_f32(v, v)));
        vst1q_f32(x + i, vdivq_f32(v, vaddq_f32(vdupq_n_f32(1.0f), neon_exp(u))));
    }
    kern_gelu_row(x + i, n - i);
}

void kern_neon_swiglu_row(float *g, const float *u, size_t n)
{
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        float32x4_t v = vld1q_f32(g + i);
        float32x4_t s = vdivq_f32(v, vaddq_f32(vdupq_n_f32(1.0f), neon_exp(vnegq_f32(v))));
        vst1q_f32(g + i, vmulq_f32(s, vld1q_f32(u + i)));
    }
    kern_swiglu_row(g + i, u + i, n - i);
}
