/* Scalar codecs between ggml's block layouts and floats.
 *
 * Each ternary/binary type is handled in two steps: a block is a list of
 * small codes c (c = w + 1, so c is 0..2 for ternary, 0..3 for Q2_0 and
 * 0 or 2 for binary) plus one f16 scale, and the code list is packed into
 * the type's bytes. pack_codes/unpack_codes are the only places that know
 * the bit layouts; everything else goes through them. */
#include "kernels/blocks.h"
#include "kernels/traits.h"

#include <math.h>
#include <string.h>

/* ---- half and bfloat16 ---- */

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float kt_f16_to_f32(kt_f16 h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t e = (h >> 10) & 0x1f;
    uint32_t m = h & 0x3ff;

    if (e == 0x1f) /* inf, nan: keep the payload */
        return bits_f32(sign | 0x7f800000u | (m << 13));
    if (e == 0) {
        if (m == 0) return bits_f32(sign);
        /* subnormal: normalise the mantissa into an f32 normal */
        int32_t ex = 1;
        while (!(m & 0x400)) {
            m <<= 1;
            ex--;
        }
        m &= 0x3ff;
        return bits_f32(sign | ((uint32_t)(ex + 112) << 23) | (m << 13));
    }
    return bits_f32(sign | ((e + 112) << 23) | (m << 13));
}

kt_f16 kt_f32_to_f16(float f)
{
    uint32_t x = f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t ax = x & 0x7fffffffu;

    if (ax >= 0x7f800000u) { /* inf or nan; a nan stays a (quiet) nan */
        if (ax == 0x7f800000u) return (kt_f16)(sign | 0x7c00);
        return (kt_f16)(sign | 0x7e00 | ((ax >> 13) & 0x3ff));
    }
    /* 65520 is halfway between 65504 (odd mantissa) and 65536: ties to even
     * round it up, out of range, to infinity. */
    if (ax >= 0x477ff000u) return (kt_f16)(sign | 0x7c00);

    if (ax >= 0x38800000u) { /* normal half: >= 2^-14 */
        uint32_t e = (ax >> 23) - 127 + 15;
        uint32_t mant = ax & 0x7fffff;
        uint32_t h = (e << 10) | (mant >> 13);
        uint32_t rem = mant & 0x1fff;
        if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
            h++; /* a carry into the exponent is still the right answer */
        return (kt_f16)(sign | h);
    }

    /* subnormal half: units of 2^-24. 2^-25 and below round to zero
     * (2^-25 itself is a tie, and zero is even). */
    if (ax <= 0x33000000u) return (kt_f16)sign;
    uint32_t mant = (ax & 0x7fffff) | 0x800000;
    uint32_t shift = 126 - (ax >> 23); /* 14..24 here */
    uint32_t h = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1))) h++;
    return (kt_f16)(sign | h);
}

float kt_bf16_to_f32(kt_bf16 h)
{
    return bits_f32((uint32_t)h << 16);
}

kt_bf16 kt_f32_to_bf16(float f)
{
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) /* nan: truncate, force quiet */
        return (kt_bf16)((x >> 16) | 0x40);
    x += 0x7fffu + ((x >> 16) & 1); /* round to nearest even */
    return (kt_bf16)(x >> 16);
}

/* ---- code layouts ---- */

static const uint8_t pow3[6] = {1, 3, 9, 27, 81, 243};

/* TQ1_0 stores k trits (most significant first) in a byte as
 * ceil(v * 256 / 243), v the base-3 number they make padded to 5 trits.
 * Trit n comes back as the top "digit" of (byte * 3^n mod 256) * 3 / 256. */
static uint8_t tq1_byte(const uint8_t *trits, int k)
{
    unsigned v = 0;
    for (int i = 0; i < 5; i++)
        v = v * 3 + (i < k ? trits[i] : 0);
    return (uint8_t)((v * 256 + 242) / 243);
}

static uint8_t tq1_trit(uint8_t byte, int n)
{
    uint8_t q = (uint8_t)(byte * pow3[n]);
    return (uint8_t)(((unsigned)q * 3) >> 8);
}

static void pack_codes(kt_type t, const uint8_t *c, float d, void *blk)
{
    switch (t) {
    case KT_TQ2_0: {
        /* 32-byte chunks j cover 128 weights; byte j*32+m holds the weights
         * j*128 + l*32 + m in bits 2l. */
        blk_tq2_0 *b = blk;
        for (int j = 0; j < 2; j++)
            for (int m = 0; m < 32; m++) {
                uint8_t q = 0;
                for (int l = 0; l < 4; l++)
                    q |= (uint8_t)((c[j * 128 + l * 32 + m] & 3) << (2 * l));
                b->qs[j * 32 + m] = q;
            }
        b->d = kt_f32_to_f16(d);
        break;
    }
    case KT_TQ1_0: {
        /* qs[0..31]: weights m + 32n (n = 0..4), qs[32..47]: 160 + m + 16n,
         * qh[0..3]: 240 + j + 4n (n = 0..3, a zero fifth trit). */
        blk_tq1_0 *b = blk;
        uint8_t tr[5];
        for (int m = 0; m < 32; m++) {
            for (int n = 0; n < 5; n++)
                tr[n] = c[m + 32 * n];
            b->qs[m] = tq1_byte(tr, 5);
        }
        for (int m = 0; m < 16; m++) {
            for (int n = 0; n < 5; n++)
                tr[n] = c[160 + m + 16 * n];
            b->qs[32 + m] = tq1_byte(tr, 5);
        }
        for (int j = 0; j < 4; j++) {
            for (int n = 0; n < 4; n++)
                tr[n] = c[240 + j + 4 * n];
            b->qh[j] = tq1_byte(tr, 4);
        }
        b->d = kt_f32_to_f16(d);
        break;
    }
    case KT_Q2_0: {
        blk_q2_0 *b = blk;
        memset(b->qs, 0, sizeof b->qs);
        for (int j = 0; j < BLK_Q2_0; j++)
            b->qs[j / 4] |= (uint8_t)((c[j] & 3) << (2 * (j % 4)));
        b->d = kt_f32_to_f16(d);
        break;
    }
    case KT_Q1_0: {
        blk_q1_0 *b = blk;
        memset(b->qs, 0, sizeof b->qs);
        for (int j = 0; j < BLK_Q1_0; j++)
            if (c[j] >= 2) b->qs[j / 8] |= (uint8_t)(1u << (j % 8));
        b->d = kt_f32_to_f16(d);
        break;
    }
    default: break;
    }
}

int kt_unpack_codes(kt_type t, const void *blk, uint8_t *c, float *d)
{
    switch (t) {
    case KT_TQ2_0: {
        const blk_tq2_0 *b = blk;
        for (int j = 0; j < 2; j++)
            for (int l = 0; l < 4; l++)
                for (int m = 0; m < 32; m++)
                    c[j * 128 + l * 32 + m] = (b->qs[j * 32 + m] >> (2 * l)) & 3;
        *d = kt_f16_to_f32(b->d);
        return BLK_TQ2_0;
    }
    case KT_TQ1_0: {
        const blk_tq1_0 *b = blk;
        for (int n = 0; n < 5; n++)
            for (int m = 0; m < 32; m++)
                c[m + 32 * n] = tq1_trit(b->qs[m], n);
        for (int n = 0; n < 5; n++)
            for (int m = 0; m < 16; m++)
                c[160 + m + 16 * n] = tq1_trit(b->qs[32 + m], n);
        for (int n = 0; n < 4; n++)
            for (int j = 0; j < 4; j++)
                c[240 + j + 4 * n] = tq1_trit(b->qh[j], n);
        *d = kt_f16_to_f32(b->d);
        return BLK_TQ1_0;
    }
    case KT_Q2_0: {
        const blk_q2_0 *b = blk;
        for (int j = 0; j < BLK_Q2_0; j++)
            c[j] = (b->qs[j / 4] >> (2 * (j % 4))) & 3;
        *d = kt_f16_to_f32(b->d);
        return BLK_Q2_0;
    }
    case KT_Q1_0: {
        const blk_q1_0 *b = blk;
        for (int j = 0; j < BLK_Q1_0; j++)
            c[j] = ((b->qs[j / 8] >> (j % 8)) & 1) ? 2 : 0;
        *d = kt_f16_to_f32(b->d);
        return BLK_Q1_0;
    }
    default: return 0;
    }
}

/* The type table's row of a code type (TQ2_0, TQ1_0, Q2_0, Q1_0); NULL for
 * any other, which the code paths below leave alone. */
static const kt_traits *code_traits(kt_type t)
{
    const kt_traits *tr = kt_traits_of(t);
    return tr && (tr->ternary || tr->binary) ? tr : NULL;
}

/* ---- to float ---- */

void kt_to_float(kt_type t, const void *src, float *dst, int64_t n)
{
    switch (t) {
    case KT_F32: memcpy(dst, src, (size_t)n * sizeof(float)); return;
    case KT_F16: {
        const kt_f16 *h = src;
        for (int64_t i = 0; i < n; i++)
            dst[i] = kt_f16_to_f32(h[i]);
        return;
    }
    case KT_BF16: {
        const kt_bf16 *h = src;
        for (int64_t i = 0; i < n; i++)
            dst[i] = kt_bf16_to_f32(h[i]);
        return;
    }
    case KT_Q8_0: {
        const blk_q8_0 *b = src;
        for (int64_t i = 0; i < n / BLK_Q8_0; i++) {
            float d = kt_f16_to_f32(b[i].d);
            for (int j = 0; j < BLK_Q8_0; j++)
                dst[i * BLK_Q8_0 + j] = (float)b[i].qs[j] * d;
        }
        return;
    }
    default: {
        const kt_traits *tr = code_traits(t);
        if (!tr) return;
        int bs = tr->block;
        size_t bb = (size_t)tr->block_bytes;
        uint8_t c[KT_BLOCK_MAX];
        float d;
        const uint8_t *p = src;
        for (int64_t i = 0; i < n / bs; i++) {
            kt_unpack_codes(t, p + (size_t)i * bb, c, &d);
            for (int j = 0; j < bs; j++)
                dst[i * bs + j] = (float)((int)c[j] - 1) * d;
        }
        return;
    }
    }
}

/* ---- from float ---- */

static float absmax(const float *x, int n)
{
    float m = 0.0f;
    for (int i = 0; i < n; i++)
        m = fmaxf(m, fabsf(x[i]));
    return m;
}

/* round(v) half away from zero (as ggml's roundf/lroundf), clamped to
 * [lo, hi]; NaN (from NaN or infinite weights) becomes 0 rather than an
 * undefined float-to-int conversion. */
static int clamp_round(float v, int lo, int hi)
{
    if (!(v == v)) return 0;
    v = roundf(v);
    return v < (float)lo ? lo : v > (float)hi ? hi : (int)v;
}

/* One block of floats to codes and a scale, following ggml's reference
 * quantizers: absmax scale and round-half-away (lroundf) for TQ1_0/TQ2_0;
 * mean|x| and the sign for Q1_0. Q2_0 (levels -1..+2) takes the smallest
 * scale whose range [-d, 2d] covers the block, so any block already on a
 * Q2_0 grid comes back exactly. */
static float block_codes(kt_type t, const float *x, int bs, uint8_t *c)
{
    float d = 0.0f;
    switch (t) {
    case KT_TQ2_0:
    case KT_TQ1_0: {
        d = absmax(x, bs);
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        for (int j = 0; j < bs; j++)
            c[j] = (uint8_t)(clamp_round(x[j] * id, -1, 1) + 1);
        break;
    }
    case KT_Q2_0: {
        float lo = 0.0f, hi = 0.0f;
        for (int j = 0; j < bs; j++) {
            lo = fminf(lo, x[j]);
            hi = fmaxf(hi, x[j]);
        }
        d = fmaxf(-lo, hi / 2.0f);
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        for (int j = 0; j < bs; j++)
            c[j] = (uint8_t)(clamp_round(x[j] * id, -1, 2) + 1);
        break;
    }
    case KT_Q1_0: {
        float s = 0.0f;
        for (int j = 0; j < bs; j++)
            s += fabsf(x[j]);
        d = s / (float)bs;
        for (int j = 0; j < bs; j++)
            c[j] = x[j] >= 0.0f ? 2 : 0;
        break;
    }
    default: break;
    }
    return d;
}

/* The codes of one block of ternary weights chosen elsewhere (see
 * kt_pack_ternary in blocks.h). */
static void ternary_codes(kt_type t, const int8_t *w, int bs, uint8_t *c)
{
    for (int j = 0; j < bs; j++) {
        if (t == KT_Q1_0)
            c[j] = w[j] > 0 ? 2 : 0;
        else
            c[j] = (uint8_t)(w[j] + 1);
    }
}

/* Packs n weights of a code type block by block: from floats x, quantized
 * here, or (x NULL) from ternary weights and their block scales. */
static void pack_blocks(kt_type t, const float *x, const int8_t *tern, const float *scales,
                        void *dst, int64_t n)
{
    const kt_traits *tr = code_traits(t);
    if (!tr) return;
    int bs = tr->block;
    size_t bb = (size_t)tr->block_bytes;
    uint8_t c[KT_BLOCK_MAX];
    uint8_t *p = dst;
    for (int64_t i = 0; i < n / bs; i++) {
        float d;
        if (x) {
            d = block_codes(t, x + i * bs, bs, c);
        } else {
            ternary_codes(t, tern + i * bs, bs, c);
            d = scales[i];
        }
        pack_codes(t, c, d, p + (size_t)i * bb);
    }
}

void kt_from_float(kt_type t, const float *src, void *dst, int64_t n)
{
    switch (t) {
    case KT_F32: memcpy(dst, src, (size_t)n * sizeof(float)); return;
    case KT_F16: {
        kt_f16 *h = dst;
        for (int64_t i = 0; i < n; i++)
            h[i] = kt_f32_to_f16(src[i]);
        return;
    }
    case KT_BF16: {
        kt_bf16 *h = dst;
        for (int64_t i = 0; i < n; i++)
            h[i] = kt_f32_to_bf16(src[i]);
        return;
    }
    case KT_Q8_0: {
        blk_q8_0 *b = dst;
        for (int64_t i = 0; i < n / BLK_Q8_0; i++) {
            const float *x = src + i * BLK_Q8_0;
            float d = absmax(x, BLK_Q8_0) / 127.0f;
            float id = d != 0.0f ? 1.0f / d : 0.0f;
            b[i].d = kt_f32_to_f16(d);
            for (int j = 0; j < BLK_Q8_0; j++)
                b[i].qs[j] = (int8_t)clamp_round(x[j] * id, -127, 127);
        }
        return;
    }
    default: pack_blocks(t, src, NULL, NULL, dst, n); return;
    }
}

void kt_pack_ternary(kt_type t, const int8_t *tern, const float *block_scales, void *dst, int64_t n)
{
    if (t == KT_Q8_0) {
        blk_q8_0 *b = dst;
        for (int64_t i = 0; i < n / BLK_Q8_0; i++) {
            b[i].d = kt_f32_to_f16(block_scales[i]);
            memcpy(b[i].qs, tern + i * BLK_Q8_0, BLK_Q8_0);
        }
        return;
    }
    pack_blocks(t, NULL, tern, block_scales, dst, n);
}
