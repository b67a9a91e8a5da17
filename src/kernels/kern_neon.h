/* aarch64 NEON kernels, written once and compiled twice: kern_neon.c for
 * every ARMv8-A (the Raspberry Pi 4's Cortex-A72: widening multiply-add)
 * and kern_dotprod.c with -march=armv8.2-a+dotprod (sdot: four int8
 * products into an int32 lane per instruction). The loop structure is the
 * one kern_gemm.h drives for every level: chunks of weight rows, tiles of
 * KG_TILE activation rows, each block unpacked once per tile into 16-wide
 * code vectors.
 *
 * Accumulation bounds: codes c <= 3 and |q| <= 127. Without dotprod,
 * vmull_s8 + vmlal_s8 add two products into an int16 lane, at most
 * 2 * 3 * 127 = 762 for codes and 2 * 128 * 127 = 32512 < 32767 for Q8_0,
 * then vpadalq_s16 widens into int32. With sdot, int32 directly. A block's
 * int32 is at most 256 * 3 * 127 in magnitude and is turned into float per
 * block, so int32 never accumulates across blocks. */
#include <arm_neon.h>
#include <string.h>

#include "kernels/kern_gemm.h"

/* acc (int32x4) += 16 products of int8 lanes */
#if KN_DOTPROD
#define KN_DOT(acc, u, s) vdotq_s32((acc), (u), (s))
#else
KG_INLINE int32x4_t kn_dot(int32x4_t acc, int8x16_t u, int8x16_t s)
{
    int16x8_t p = vmull_s8(vget_low_s8(u), vget_low_s8(s));
    p = vmlal_s8(p, vget_high_s8(u), vget_high_s8(s));
    return vpadalq_s16(acc, p);
}
#define KN_DOT(acc, u, s) kn_dot((acc), (u), (s))
#endif

KG_INLINE float kg_f16(kt_f16 h)
{
    __fp16 f;
    memcpy(&f, &h, sizeof f);
    return (float)f;
}

/* TQ1_0's top trit of a byte: floor(3q / 256) = (q >= 86) + (q >= 171). */
KG_INLINE int8x16_t kn_trit(uint8x16_t q)
{
    uint8x16_t m = vaddq_u8(vcgeq_u8(q, vdupq_n_u8(86)), vcgeq_u8(q, vdupq_n_u8(171)));
    return vreinterpretq_s8_u8(vsubq_u8(vdupq_n_u8(0), m));
}

/* Fills c[0 .. qk/16) with codes in weight order; returns the scale. */
KG_INLINE float kn_unpack(kt_type t, const uint8_t *p, int8x16_t *c)
{
    const uint8x16_t m3 = vdupq_n_u8(3);
    switch (t) {
    case KT_TQ2_0: {
        /* byte m of 32-byte half h holds weight 128h + 32s + m at bits 2s */
        const blk_tq2_0 *b = (const blk_tq2_0 *)p;
        for (int h = 0; h < 2; h++)
            for (int k = 0; k < 2; k++) {
                uint8x16_t x = vld1q_u8(b->qs + 32 * h + 16 * k);
                c[8 * h + 0 + k] = vreinterpretq_s8_u8(vandq_u8(x, m3));
                c[8 * h + 2 + k] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(x, 2), m3));
                c[8 * h + 4 + k] = vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(x, 4), m3));
                c[8 * h + 6 + k] = vreinterpretq_s8_u8(vshrq_n_u8(x, 6));
            }
        return kg_f16(b->d);
    }
    case KT_TQ1_0: {
        /* see kern_x86.h: trit n of a byte comes to the top times 3^n */
        const blk_tq1_0 *b = (const blk_tq1_0 *)p;
        const uint8x16_t three = vdupq_n_u8(3);
        uint8x16_t x0 = vld1q_u8(b->qs), x1 = vld1q_u8(b->qs + 16), y = vld1q_u8(b->qs + 32);
        for (int n = 0; n < 5; n++) {
            c[2 * n] = kn_trit(x0);
            c[2 * n + 1] = kn_trit(x1);
            c[10 + n] = kn_trit(y);
            x0 = vmulq_u8(x0, three);
            x1 = vmulq_u8(x1, three);
            y = vmulq_u8(y, three);
        }
        uint32_t qh;
        memcpy(&qh, b->qh, 4);
        static const uint8_t pw[16] = {1, 1, 1, 1, 3, 3, 3, 3, 9, 9, 9, 9, 27, 27, 27, 27};
        uint8x16_t h = vmulq_u8(vreinterpretq_u8_u32(vdupq_n_u32(qh)), vld1q_u8(pw));
        c[15] = kn_trit(h);
        return kg_f16(b->d);
    }
    case KT_Q2_0: {
        /* weight j: bits 2(j % 4) of byte j / 4 */
        const blk_q2_0 *b = (const blk_q2_0 *)p;
        uint8x16_t x = vld1q_u8(b->qs);
        uint8x16_t t0 = vandq_u8(x, m3), t1 = vandq_u8(vshrq_n_u8(x, 2), m3);
        uint8x16_t t2 = vandq_u8(vshrq_n_u8(x, 4), m3), t3 = vshrq_n_u8(x, 6);
        uint8x16x2_t a = vzipq_u8(t0, t1), bb = vzipq_u8(t2, t3);
        for (int k = 0; k < 2; k++) {
            uint16x8x2_t z =
                vzipq_u16(vreinterpretq_u16_u8(a.val[k]), vreinterpretq_u16_u8(bb.val[k]));
            c[2 * k] = vreinterpretq_s8_u16(z.val[0]);
            c[2 * k + 1] = vreinterpretq_s8_u16(z.val[1]);
        }
        return kg_f16(b->d);
    }
    case KT_Q1_0: {
        /* weight j: bit j % 8 of byte j / 8; code 2 for +1, 0 for -1 */
        const blk_q1_0 *b = (const blk_q1_0 *)p;
        static const uint8_t bit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
        const uint8x16_t bits = vld1q_u8(bit), two = vdupq_n_u8(2);
        uint8x16_t x = vld1q_u8(b->qs);
        for (int k = 0; k < 8; k++) {
            /* bytes 2k and 2k + 1, each repeated 8 times */
            uint8x16_t idx =
                vcombine_u8(vdup_n_u8((uint8_t)(2 * k)), vdup_n_u8((uint8_t)(2 * k + 1)));
            uint8x16_t r = vqtbl1q_u8(x, idx);
            c[k] = vreinterpretq_s8_u8(vandq_u8(vtstq_u8(r, bits), two));
        }
        return kg_f16(b->d);
    }
    default: return 0.0f;
    }
}

/* The block's activation sum spread over int32 lanes. */
KG_INLINE int32x4_t kn_block_sum(kt_type t, const int16_t *g)
{
    switch (t) {
    case KT_TQ2_0:
    case KT_TQ1_0: return vpaddlq_s16(vld1q_s16(g));
    case KT_Q1_0: return vmovl_s16(vld1_s16(g));
    default: return vsetq_lane_s32((int32_t)g[0] + g[1], vdupq_n_s32(0), 0);
    }
}

/* One weight row times nr activation rows starting at j0.
 * kg_tile_codes and kg_tile_float have the loops of their kern_x86.h
 * twins with 128-bit vectors in place of 256-bit ones; they stay written
 * out per ISA because a shared version would need a macro per intrinsic
 * (load, FMA, dot, sum), which hides the instructions being tuned. */
KG_INLINE void kg_tile_codes(kt_type t, int nr, const uint8_t *wrow, const kern_acts *a, int j0,
                             float *out, size_t ldo, int r)
{
    const int qk = kg_block(t), nk = qk / 16, nb = a->n / qk, ng = a->n / KERN_GROUP;
    const size_t bytes = kg_block_bytes(t);
    float32x4_t acc[KG_TILE];
    for (int jj = 0; jj < nr; jj++)
        acc[jj] = vdupq_n_f32(0);
    for (int b = 0; b < nb; b++) {
        int8x16_t c[16];
        float d = kn_unpack(t, wrow + (size_t)b * bytes, c);
        for (int jj = 0; jj < nr; jj++) {
            const int8_t *q = a->q + (size_t)(j0 + jj) * a->n + (size_t)b * qk;
            int32x4_t s = vdupq_n_s32(0);
            for (int k = 0; k < nk; k++)
                s = KN_DOT(s, c[k], vld1q_s8(q + 16 * k));
            s = vsubq_s32(s, kn_block_sum(t, a->gsum + (size_t)(j0 + jj) * ng +
                                                 (size_t)b * (qk / KERN_GROUP)));
            acc[jj] = vfmaq_n_f32(acc[jj], vcvtq_f32_s32(s), d);
        }
    }
    for (int jj = 0; jj < nr; jj++)
        out[(size_t)(j0 + jj) * ldo + r] = vaddvq_f32(acc[jj]) * a->scale[j0 + jj];
}

KG_INLINE void kg_tile_q8_0(int nr, const uint8_t *wrow, const kern_acts *a, int j0, float *out,
                            size_t ldo, int r)
{
    const int nb = a->n / BLK_Q8_0;
    const blk_q8_0 *w = (const blk_q8_0 *)wrow;
    float32x4_t acc[KG_TILE];
    for (int jj = 0; jj < nr; jj++)
        acc[jj] = vdupq_n_f32(0);
    for (int b = 0; b < nb; b++) {
        int8x16_t w0 = vld1q_s8(w[b].qs), w1 = vld1q_s8(w[b].qs + 16);
        float d = kg_f16(w[b].d);
        for (int jj = 0; jj < nr; jj++) {
            const int8_t *q = a->q + (size_t)(j0 + jj) * a->n + (size_t)b * BLK_Q8_0;
            int32x4_t s = KN_DOT(vdupq_n_s32(0), w0, vld1q_s8(q));
            s = KN_DOT(s, w1, vld1q_s8(q + 16));
            acc[jj] = vfmaq_n_f32(acc[jj], vcvtq_f32_s32(s), d);
        }
    }
    for (int jj = 0; jj < nr; jj++)
        out[(size_t)(j0 + jj) * ldo + r] = vaddvq_f32(acc[jj]) * a->scale[j0 + jj];
}

/* Float weights (F32, F16, BF16) times float activations: 4 weights at a
 * time widened to float, two accumulators per row (the loop of kern_x86.h's
 * kg_tile_float at half the width; see kg_tile_codes). */
KG_INLINE float32x4_t kn_load4(kt_type t, const uint8_t *w, int k)
{
    switch (t) {
    case KT_F16: return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16((const uint16_t *)w + k)));
    case KT_BF16: /* bfloat16 is the top half of a float */
        return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16((const uint16_t *)w + k), 16));
    default: return vld1q_f32((const float *)w + k);
    }
}

KG_INLINE void kg_tile_float(kt_type t, int nr, const uint8_t *w, const kern_acts *a, int j0,
                             float *out, size_t ldo, int r)
{
    const int n = a->n;
    float32x4_t acc[KG_TILE][2];
    for (int jj = 0; jj < nr; jj++)
        acc[jj][0] = acc[jj][1] = vdupq_n_f32(0);
    int k = 0;
    for (; k + 8 <= n; k += 8) {
        float32x4_t w0 = kn_load4(t, w, k), w1 = kn_load4(t, w, k + 4);
        for (int jj = 0; jj < nr; jj++) {
            const float *f = a->f + (size_t)(j0 + jj) * n + k;
            acc[jj][0] = vfmaq_f32(acc[jj][0], w0, vld1q_f32(f));
            acc[jj][1] = vfmaq_f32(acc[jj][1], w1, vld1q_f32(f + 4));
        }
    }
    for (int jj = 0; jj < nr; jj++) {
        const float *f = a->f + (size_t)(j0 + jj) * n;
        float s = vaddvq_f32(vaddq_f32(acc[jj][0], acc[jj][1]));
        for (int i = k; i < n; i++)
            s += kg_load1(t, w, i) * f[i];
        out[(size_t)(j0 + jj) * ldo + r] = s;
    }
}
