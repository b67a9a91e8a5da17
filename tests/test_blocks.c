/* Block codecs, half/bfloat16 conversions and the reference kernels.
 *
 * Layout tests build blocks byte by byte from the layout written in
 * docs/model-format.md (each element's byte and bit computed directly from
 * its index), never with the encoder under test. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/types.h"
#include "kernels/blocks.h"
#include "kernels/kernels.h"
#include "testutil.h"

/* ---- a small seeded RNG (xorshift64*) ---- */

static uint64_t rng_state = 88172645463325252ull;

static uint32_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 2685821657736338717ull) >> 32);
}

static float frand(float lo, float hi)
{
    return lo + (hi - lo) * (float)(rnd() / 4294967296.0);
}

static float f32_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* an f16-representable positive scale */
static float rand_scale(void)
{
    return kt_f16_to_f32(kt_f32_to_f16(frand(0.001f, 3.0f)));
}

static void put_f16(uint8_t *p, float v)
{
    kt_f16 h = kt_f32_to_f16(v);
    p[0] = (uint8_t)(h & 0xff); /* little-endian, as in the file */
    p[1] = (uint8_t)(h >> 8);
}

/* ---- f16 / bf16 ---- */

START_TEST(test_f16_edges)
{
    ck_assert_uint_eq(kt_f32_to_f16(0.0f), 0x0000);
    ck_assert_uint_eq(kt_f32_to_f16(-0.0f), 0x8000);
    ck_assert_uint_eq(kt_f32_to_f16(1.0f), 0x3c00);
    ck_assert_uint_eq(kt_f32_to_f16(-2.0f), 0xc000);
    ck_assert_uint_eq(kt_f32_to_f16(65504.0f), 0x7bff);
    ck_assert_uint_eq(kt_f32_to_f16(65519.0f), 0x7bff);
    ck_assert_uint_eq(kt_f32_to_f16(65520.0f), 0x7c00); /* tie rounds to even = inf */
    ck_assert_uint_eq(kt_f32_to_f16(1e10f), 0x7c00);
    ck_assert_uint_eq(kt_f32_to_f16(-1e10f), 0xfc00);
    ck_assert_uint_eq(kt_f32_to_f16(INFINITY), 0x7c00);
    ck_assert_uint_eq(kt_f32_to_f16(-INFINITY), 0xfc00);
    kt_f16 n = kt_f32_to_f16(NAN);
    ck_assert_uint_eq(n & 0x7c00, 0x7c00);
    ck_assert_uint_ne(n & 0x03ff, 0);
    /* ties to even in the normal range: 1 + 2^-11 is halfway 1 .. 1+2^-10 */
    ck_assert_uint_eq(kt_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);
    ck_assert_uint_eq(kt_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);
    ck_assert_uint_eq(kt_f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01);
    /* smallest normal and subnormals */
    ck_assert_uint_eq(kt_f32_to_f16(0x1p-14f), 0x0400);
    ck_assert_uint_eq(kt_f32_to_f16(0x1p-24f), 0x0001);
    ck_assert_uint_eq(kt_f32_to_f16(0x1p-25f), 0x0000);           /* tie to even 0 */
    ck_assert_uint_eq(kt_f32_to_f16(0x1p-25f * 1.0001f), 0x0001); /* just above the tie */
    ck_assert_uint_eq(kt_f32_to_f16(3 * 0x1p-25f), 0x0002);       /* 1.5 units -> 2 */
    ck_assert_uint_eq(kt_f32_to_f16(5 * 0x1p-25f), 0x0002);       /* 2.5 units -> 2 */
    ck_assert_uint_eq(kt_f32_to_f16(1023 * 0x1p-24f), 0x03ff);
    ck_assert_uint_eq(kt_f32_to_f16(-0x1p-24f), 0x8001);
    ck_assert_uint_eq(kt_f32_to_f16(1e-30f), 0x0000);
    ck_assert_uint_eq(kt_f32_to_f16(f32_of(0x00000001)), 0x0000); /* f32 subnormal */
    /* largest subnormal + half a unit rounds up into the smallest normal */
    ck_assert_uint_eq(kt_f32_to_f16(1023.5f * 0x1p-24f), 0x0400);

    ck_assert(kt_f16_to_f32(0x0001) == 0x1p-24f);
    ck_assert(kt_f16_to_f32(0x03ff) == 1023 * 0x1p-24f);
    ck_assert(kt_f16_to_f32(0x7bff) == 65504.0f);
    ck_assert(isinf(kt_f16_to_f32(0x7c00)) && kt_f16_to_f32(0x7c00) > 0);
    ck_assert(isnan(kt_f16_to_f32(0x7e00)));
    ck_assert_uint_eq(bits_of(kt_f16_to_f32(0x8000)), 0x80000000u);
}
END_TEST

START_TEST(test_f16_round_trip_all)
{
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = kt_f16_to_f32((kt_f16)h);
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) {
            ck_assert(isnan(f));
            kt_f16 back = kt_f32_to_f16(f);
            ck_assert((back & 0x7c00) == 0x7c00 && (back & 0x3ff));
            continue;
        }
        ck_assert_uint_eq(kt_f32_to_f16(f), h);
    }
}
END_TEST

#ifdef __FLT16_MAX__
/* The compiler's own _Float16 conversion is round-to-nearest-even. */
START_TEST(test_f16_matches_compiler)
{
    for (int i = 0; i < 500000; i++) {
        uint32_t u = rnd();
        /* bias toward the interesting range of exponents */
        if (i & 1) u = (u & 0x807fffffu) | ((uint32_t)(100 + rnd() % 45) << 23);
        float f = f32_of(u);
        if (isnan(f)) continue;
        _Float16 c = (_Float16)f;
        uint16_t cb;
        memcpy(&cb, &c, sizeof cb);
        ck_assert_msg(kt_f32_to_f16(f) == cb, "f=%a got %04x want %04x", (double)f,
                      kt_f32_to_f16(f), cb);
    }
}
END_TEST
#endif

START_TEST(test_bf16_edges)
{
    ck_assert_uint_eq(kt_f32_to_bf16(1.0f), 0x3f80);
    ck_assert_uint_eq(kt_f32_to_bf16(f32_of(0x3f808000)), 0x3f80); /* tie, even */
    ck_assert_uint_eq(kt_f32_to_bf16(f32_of(0x3f818000)), 0x3f82); /* tie, odd -> up */
    ck_assert_uint_eq(kt_f32_to_bf16(f32_of(0x3f808001)), 0x3f81);
    ck_assert_uint_eq(kt_f32_to_bf16(f32_of(0x7f7fffff)), 0x7f80); /* max float -> inf */
    ck_assert_uint_eq(kt_f32_to_bf16(INFINITY), 0x7f80);
    ck_assert_uint_eq(kt_f32_to_bf16(-INFINITY), 0xff80);
    ck_assert_uint_eq(kt_f32_to_bf16(-0.0f), 0x8000);
    ck_assert_uint_eq(kt_f32_to_bf16(f32_of(0x00000001)), 0x0000);
    ck_assert_uint_eq(kt_f32_to_bf16(f32_of(0x00018000)), 0x0002); /* subnormal tie */
    kt_bf16 n = kt_f32_to_bf16(f32_of(0x7f800001));                /* nan with a low payload bit */
    ck_assert(isnan(kt_bf16_to_f32(n)));
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = kt_bf16_to_f32((kt_bf16)h);
        if (isnan(f)) continue;
        ck_assert_uint_eq(kt_f32_to_bf16(f), h);
    }
}
END_TEST

/* ---- layouts by hand ---- */

/* A ternary pattern with every code at many positions, including +1 at
 * element 0 so the absmax scale is the block's d. */
static int tern_at(int k, int salt)
{
    if (k == 0) return 1;
    return (int)((k * 7 + salt * 13 + k / 5) % 3) - 1;
}

/* One block of type tp, built by hand from the documented layout (hand,
 * bytes long) for the n values t * d (= x): it decodes to x, and encoding x
 * or (for the code types, t not NULL) packing t with scale d gives back the
 * same bytes. */
static void check_hand_block(kt_type tp, const uint8_t *hand, size_t bytes, const int8_t *t,
                             const float *x, float d, int n)
{
    float y[256];
    uint8_t enc[256];
    ck_assert(n <= 256 && bytes <= sizeof enc);
    kt_to_float(tp, hand, y, n);
    for (int k = 0; k < n; k++)
        ck_assert_msg(y[k] == x[k], "element %d: %g vs %g", k, y[k], x[k]);
    kt_from_float(tp, x, enc, n);
    ck_assert_mem_eq(enc, hand, bytes);
    if (!t) return;
    float sc = d;
    kt_pack_ternary(tp, t, &sc, enc, n);
    ck_assert_mem_eq(enc, hand, bytes);
}

START_TEST(test_layout_tq2_0)
{
    float d = 0.375f;
    uint8_t hand[66];
    memset(hand, 0, sizeof hand);
    int8_t t[256];
    float x[256];
    for (int k = 0; k < 256; k++) {
        t[k] = (int8_t)tern_at(k, 1);
        x[k] = t[k] * d;
        int chunk = k / 128, l = (k % 128) / 32, m = k % 32;
        hand[chunk * 32 + m] |= (uint8_t)((t[k] + 1) << (2 * l));
    }
    put_f16(hand + 64, d);

    /* one literal: byte 0 holds elements 0, 32, 64, 96 */
    ck_assert_uint_eq(
        hand[0], (uint8_t)((t[0] + 1) | (t[32] + 1) << 2 | (t[64] + 1) << 4 | (t[96] + 1) << 6));

    check_hand_block(KT_TQ2_0, hand, sizeof hand, t, x, d, 256);
}
END_TEST

/* TQ1_0: element k's byte and trit position, from the documented layout */
static void tq1_pos(int k, int *byte, int *trit)
{
    if (k < 160) {
        *byte = k % 32;
        *trit = k / 32;
    } else if (k < 240) {
        *byte = 32 + (k - 160) % 16;
        *trit = (k - 160) / 16;
    } else {
        *byte = 48 + (k - 240) % 4; /* qh follows qs */
        *trit = (k - 240) / 4;
    }
}

START_TEST(test_layout_tq1_0)
{
    float d = 1.25f;
    int8_t t[256];
    float x[256];
    int digits[52][5];
    memset(digits, 0, sizeof digits);
    for (int k = 0; k < 256; k++) {
        t[k] = (int8_t)tern_at(k, 2);
        x[k] = t[k] * d;
        int b, tr;
        tq1_pos(k, &b, &tr);
        digits[b][tr] = t[k] + 1;
    }
    uint8_t hand[54];
    for (int b = 0; b < 52; b++) {
        /* base-3 number, first trit most significant, qh's unused fifth
         * trit zero; stored as ceil(v * 256 / 243) */
        int v = digits[b][0] * 81 + digits[b][1] * 27 + digits[b][2] * 9 + digits[b][3] * 3 +
                digits[b][4];
        int q = (v * 256 + 242) / 243;
        ck_assert_int_le(q, 255);
        hand[b] = (uint8_t)q;
    }
    put_f16(hand + 52, d);

    /* literal: an all-zero block is codes 1: qs = ceil(121*256/243) = 128,
     * qh = ceil(120*256/243) = 127 */
    float zeros[256] = {0};
    uint8_t zb[54];
    kt_from_float(KT_TQ1_0, zeros, zb, 256);
    for (int b = 0; b < 48; b++)
        ck_assert_uint_eq(zb[b], 128);
    for (int b = 48; b < 52; b++)
        ck_assert_uint_eq(zb[b], 127);

    check_hand_block(KT_TQ1_0, hand, sizeof hand, t, x, d, 256);
}
END_TEST

START_TEST(test_layout_q2_0)
{
    float d = 0.5f;
    int8_t t[64];
    float x[64];
    uint8_t hand[18];
    memset(hand, 0, sizeof hand);
    put_f16(hand, d); /* scale first */
    for (int k = 0; k < 64; k++) {
        t[k] = (int8_t)((k * 5 + 1) % 4) - 1; /* -1..2, includes -1 and 2 */
        x[k] = t[k] * d;
        hand[2 + k / 4] |= (uint8_t)((t[k] + 1) << (2 * (k % 4)));
    }
    /* literal: elements 0..3 are 0, +1, +2, -1 -> codes 1, 2, 3, 0 */
    ck_assert_uint_eq(hand[2], 1 | 2 << 2 | 3 << 4 | 0 << 6);

    check_hand_block(KT_Q2_0, hand, sizeof hand, t, x, d, 64);
}
END_TEST

START_TEST(test_layout_q1_0)
{
    float d = 0.0625f;
    int8_t t[128];
    float x[128];
    uint8_t hand[18];
    memset(hand, 0, sizeof hand);
    put_f16(hand, d);
    for (int k = 0; k < 128; k++) {
        t[k] = ((k * 11 + k / 3) % 5) < 2 ? 1 : -1;
        x[k] = t[k] * d;
        if (t[k] > 0) hand[2 + k / 8] |= (uint8_t)(1 << (k % 8));
    }
    check_hand_block(KT_Q1_0, hand, sizeof hand, t, x, d, 128);

    /* literal: +d at element 0 and 9 only */
    float y[128];
    uint8_t lit[18] = {0};
    put_f16(lit, 1.0f);
    lit[2] = 0x01;
    lit[3] = 0x02;
    kt_to_float(KT_Q1_0, lit, y, 128);
    for (int k = 0; k < 128; k++)
        ck_assert(y[k] == ((k == 0 || k == 9) ? 1.0f : -1.0f));
}
END_TEST

START_TEST(test_layout_q8_0)
{
    float d = 0.01f;
    float dq = kt_f16_to_f32(kt_f32_to_f16(d));
    uint8_t hand[34];
    put_f16(hand, d);
    float x[32];
    for (int k = 0; k < 32; k++) {
        int q = k == 5 ? -127 : (k * 37) % 255 - 127;
        hand[2 + k] = (uint8_t)(int8_t)q;
        x[k] = (float)q * dq;
    }
    check_hand_block(KT_Q8_0, hand, sizeof hand, NULL, x, 0.0f, 32);
}
END_TEST

/* ---- values on the grid come back exactly ---- */

static void grid_values(kt_type t, float *x, int64_t n, int bs)
{
    for (int64_t b = 0; b < n / bs; b++) {
        float d = rand_scale();
        for (int j = 0; j < bs; j++) {
            int q;
            switch (t) {
            case KT_Q8_0: q = (int)(rnd() % 255) - 127; break;
            case KT_Q2_0: q = (int)(rnd() % 4) - 1; break;
            case KT_Q1_0: q = rnd() & 1 ? 1 : -1; break;
            default: q = (int)(rnd() % 3) - 1; break;
            }
            x[b * bs + j] = (float)q * d;
        }
        /* pin the block's extreme so the scale rule finds d again */
        int at = (int)(rnd() % (unsigned)bs);
        switch (t) {
        case KT_Q8_0: x[b * bs + at] = (rnd() & 1 ? 127.0f : -127.0f) * d; break;
        case KT_Q2_0: x[b * bs + at] = -d; break;
        case KT_Q1_0: break;
        default: x[b * bs + at] = rnd() & 1 ? d : -d; break;
        }
        if (b == 1) /* an all-zero block (Q1_0 has no zero) */
            for (int j = 0; j < bs; j++)
                x[b * bs + j] = t == KT_Q1_0 ? d : 0.0f;
    }
}

START_TEST(test_grid_round_trip)
{
    kt_type types[] = {KT_Q8_0, KT_TQ2_0, KT_TQ1_0, KT_Q2_0, KT_Q1_0};
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        const ttype_info *info = ttype_get(types[ti]);
        ck_assert_ptr_nonnull(info);
        int64_t n = (int64_t)info->block * 9;
        float *x = malloc((size_t)n * sizeof(float));
        float *y = malloc((size_t)n * sizeof(float));
        void *buf = malloc(ttype_row_bytes(info, n));
        for (int rep = 0; rep < 20; rep++) {
            grid_values(types[ti], x, n, info->block);
            info->from_float(types[ti], x, buf, n);
            info->to_float(types[ti], buf, y, n);
            for (int64_t i = 0; i < n; i++)
                ck_assert_msg(x[i] == y[i], "%s element %lld: %a vs %a", info->name, (long long)i,
                              (double)x[i], (double)y[i]);
        }
        free(x);
        free(y);
        free(buf);
    }
}
END_TEST

START_TEST(test_float_types_round_trip)
{
    float x[257], y[257];
    uint16_t h[257];
    for (int i = 0; i < 257; i++)
        x[i] = kt_f16_to_f32(kt_f32_to_f16(frand(-70000.0f, 70000.0f) * (i % 2 ? 1e-6f : 1)));
    kt_from_float(KT_F16, x, h, 257);
    kt_to_float(KT_F16, h, y, 257);
    ck_assert_mem_eq(x, y, sizeof x);
    for (int i = 0; i < 257; i++)
        x[i] = kt_bf16_to_f32(kt_f32_to_bf16(frand(-1e30f, 1e30f)));
    kt_from_float(KT_BF16, x, h, 257);
    kt_to_float(KT_BF16, h, y, 257);
    ck_assert_mem_eq(x, y, sizeof x);
    float z[257];
    kt_from_float(KT_F32, x, z, 257);
    kt_to_float(KT_F32, z, y, 257);
    ck_assert_mem_eq(x, y, sizeof x);
}
END_TEST

START_TEST(test_from_float_rounding)
{
    /* TQ2_0 from arbitrary floats: absmax scale, round half away from zero */
    float x[256];
    for (int k = 0; k < 256; k++)
        x[k] = 0.0f;
    x[3] = 2.0f;   /* absmax: d = 2 */
    x[4] = 1.0f;   /* 0.5 -> 1 (away from zero) */
    x[5] = -0.99f; /* -0.495 -> 0 */
    x[6] = -1.2f;  /* -0.6 -> -1 */
    float y[256];
    uint8_t b[66];
    kt_from_float(KT_TQ2_0, x, b, 256);
    kt_to_float(KT_TQ2_0, b, y, 256);
    ck_assert(y[3] == 2.0f && y[4] == 2.0f && y[5] == 0.0f && y[6] == -2.0f);
    /* Q1_0 scale is mean|x| */
    float x1[128];
    for (int k = 0; k < 128; k++)
        x1[k] = k % 2 ? 3.0f : -1.0f;
    uint8_t b1[18];
    kt_from_float(KT_Q1_0, x1, b1, 128);
    kt_to_float(KT_Q1_0, b1, y, 128);
    ck_assert(y[0] == -2.0f && y[1] == 2.0f);
}
END_TEST

/* Bad floats (NaN, infinity) give some finite-or-not values but never an
 * undefined conversion (UBSan) or a code outside the type's range. */
START_TEST(test_bad_floats)
{
    float x[256];
    for (int k = 0; k < 256; k++)
        x[k] = k % 3 == 0 ? NAN : k % 3 == 1 ? INFINITY : -1.0f;
    kt_type types[] = {KT_Q8_0, KT_TQ2_0, KT_TQ1_0, KT_Q2_0, KT_Q1_0, KT_F16, KT_BF16};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        const ttype_info *ti = ttype_get(types[i]);
        unsigned char buf[1024];
        float y[256];
        ti->from_float(types[i], x, buf, 256);
        ti->to_float(types[i], buf, y, 256);
        if (ti->ternary) {
            uint8_t c[256];
            float d;
            for (int b = 0; b < 256 / ti->block; b++) {
                int nc = kt_unpack_codes(types[i], buf + b * ti->block_bytes, c, &d);
                for (int j = 0; j < nc; j++)
                    ck_assert_uint_le(c[j], types[i] == KT_Q2_0 ? 3 : 2);
            }
        }
    }
    int8_t q[256];
    int16_t gs[8];
    float sc;
    kern_quantize_row(x, 256, q, gs, &sc);
    for (int k = 0; k < 256; k++)
        ck_assert(q[k] >= -127 && q[k] <= 127);
}
END_TEST

/* ---- type table ---- */

START_TEST(test_type_table)
{
    ck_assert_int_eq(ttype_count(), 8);
    for (int i = 0; i < ttype_count(); i++) {
        const ttype_info *t = ttype_at(i);
        ck_assert_ptr_eq(ttype_get(t->id), t);
        ck_assert_ptr_eq(ttype_by_name(t->name), t);
        ck_assert_ptr_nonnull(t->ref_ops(t->id));
    }
    ck_assert_ptr_eq(ttype_by_name("TQ2_0"), ttype_get(KT_TQ2_0));
    ck_assert_ptr_null(ttype_by_name("q4_0"));
    ck_assert_ptr_null(ttype_get((kt_type)2));
    ck_assert(ttype_bits_per_weight(ttype_get(KT_TQ2_0)) == 2.0625);
    ck_assert(ttype_bits_per_weight(ttype_get(KT_TQ1_0)) == 1.6875);
    ck_assert(ttype_bits_per_weight(ttype_get(KT_Q2_0)) == 2.25);
    ck_assert(ttype_bits_per_weight(ttype_get(KT_Q1_0)) == 1.125);
    ck_assert(ttype_bits_per_weight(ttype_get(KT_Q8_0)) == 8.5);
    ck_assert(ttype_bits_per_weight(ttype_get(KT_BF16)) == 16.0);
    ck_assert_uint_eq(ttype_row_bytes(ttype_get(KT_TQ1_0), 512), 108);
    ck_assert(ttype_get(KT_TQ1_0)->ternary && !ttype_get(KT_TQ1_0)->binary);
    ck_assert(ttype_get(KT_Q1_0)->binary);
}
END_TEST

/* ---- activation quantization ---- */

START_TEST(test_quantize_row)
{
    float x[96];
    int8_t q[96];
    int16_t gs[3];
    float s;
    memset(x, 0, sizeof x);
    kern_quantize_row(x, 96, q, gs, &s);
    ck_assert(s == 0.0f);
    for (int i = 0; i < 96; i++)
        ck_assert_int_eq(q[i], 0);
    ck_assert_int_eq(gs[0], 0);

    for (int i = 0; i < 96; i++)
        x[i] = frand(-3.0f, 3.0f);
    x[17] = -5.0f;
    kern_quantize_row(x, 96, q, gs, &s);
    ck_assert(fabsf(s - 5.0f / 127.0f) < 1e-7f);
    ck_assert_int_eq(q[17], -127);
    for (int g = 0; g < 3; g++) {
        int sum = 0;
        for (int i = 0; i < 32; i++)
            sum += q[g * 32 + i];
        ck_assert_int_eq(gs[g], sum);
    }
    for (int i = 0; i < 96; i++)
        ck_assert(fabsf(q[i] * s - x[i]) <= s * 0.5f + 1e-6f);
}
END_TEST

/* ---- reference GEMM against a double dot of dequantized operands ---- */

static void check_gemm(kt_type type, int n, int wrows, int arows)
{
    const ttype_info *ti = ttype_get(type);
    const kern_ops *ops = kern_ref_ops(type);
    ck_assert_ptr_nonnull(ops);
    size_t rb = ttype_row_bytes(ti, n);
    float *w = malloc((size_t)wrows * n * sizeof(float));
    float *wd = malloc((size_t)wrows * n * sizeof(float));
    unsigned char *wq = malloc(rb * (size_t)wrows);
    float *x = malloc((size_t)arows * n * sizeof(float));
    int8_t *q = malloc((size_t)arows * n);
    int16_t *gs = malloc((size_t)arows * (n / KERN_GROUP + 1) * sizeof(int16_t));
    float *sc = malloc((size_t)arows * sizeof(float));
    size_t ldo = (size_t)wrows + 3;
    float *out = malloc((size_t)arows * ldo * sizeof(float));

    for (int i = 0; i < wrows * n; i++)
        w[i] = frand(-1.0f, 1.0f);
    for (int r = 0; r < wrows; r++) {
        ti->from_float(type, w + (size_t)r * n, wq + r * rb, n);
        ti->to_float(type, wq + r * rb, wd + (size_t)r * n, n);
    }
    for (int i = 0; i < arows * n; i++)
        x[i] = frand(-2.0f, 2.0f);
    if (ops->int8_acts)
        for (int j = 0; j < arows; j++)
            kern_quantize_row(x + (size_t)j * n, n, q + (size_t)j * n,
                              gs + (size_t)j * (n / KERN_GROUP), sc + j);

    kern_acts a = {.n = n, .rows = arows, .f = x, .q = q, .gsum = gs, .scale = sc};
    for (size_t i = 0; i < (size_t)arows * ldo; i++)
        out[i] = -999.0f;
    int r0 = 1, r1 = wrows - 1; /* a sub-range: rows outside stay untouched */
    ops->gemm(wq, rb, r0, r1, &a, out, ldo);

    for (int j = 0; j < arows; j++)
        for (int r = 0; r < wrows; r++) {
            float got = out[(size_t)j * ldo + r];
            if (r < r0 || r >= r1) {
                ck_assert(got == -999.0f);
                continue;
            }
            double want = 0.0, mag = 0.0;
            for (int i = 0; i < n; i++) {
                double av = ops->int8_acts ? (double)q[(size_t)j * n + i] * sc[j]
                                           : (double)x[(size_t)j * n + i];
                want += (double)wd[(size_t)r * n + i] * av;
                mag += fabs((double)wd[(size_t)r * n + i] * av);
            }
            ck_assert_msg(fabs(got - want) <= 2e-6 * mag + 1e-30, "%s r=%d j=%d: %g vs %g",
                          ti->name, r, j, got, want);
        }
    free(w);
    free(wd);
    free(wq);
    free(x);
    free(q);
    free(gs);
    free(sc);
    free(out);
}

START_TEST(test_gemm_ref)
{
    check_gemm(KT_F32, 100, 7, 3);
    check_gemm(KT_F16, 67, 5, 2);
    check_gemm(KT_BF16, 96, 6, 4);
    check_gemm(KT_Q8_0, 96, 9, 3);
    check_gemm(KT_TQ2_0, 768, 7, 5);
    check_gemm(KT_TQ1_0, 512, 6, 3);
    check_gemm(KT_Q2_0, 192, 11, 4);
    check_gemm(KT_Q1_0, 384, 5, 1);
}
END_TEST

/* All-extreme operands: the integer sums reach their bounds exactly. */
START_TEST(test_gemm_extremes)
{
    int n = 256;
    int8_t t[256];
    float one = 1.0f;
    uint8_t blk[66];
    int8_t q[256];
    int16_t gs[8];
    float sc = 1.0f;
    for (int i = 0; i < n; i++) {
        t[i] = 1;
        q[i] = 127;
    }
    for (int g = 0; g < 8; g++)
        gs[g] = 32 * 127;
    kt_pack_ternary(KT_TQ2_0, t, &one, blk, n);
    kern_acts a = {.n = n, .rows = 1, .q = q, .gsum = gs, .scale = &sc};
    float out;
    kern_ref_ops(KT_TQ2_0)->gemm(blk, sizeof blk, 0, 1, &a, &out, 1);
    ck_assert(out == 256.0f * 127.0f);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("blocks");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_f16_edges);
    tcase_add_test(tc, test_f16_round_trip_all);
#ifdef __FLT16_MAX__
    tcase_add_test(tc, test_f16_matches_compiler);
#endif
    tcase_add_test(tc, test_bf16_edges);
    tcase_add_test(tc, test_layout_tq2_0);
    tcase_add_test(tc, test_layout_tq1_0);
    tcase_add_test(tc, test_layout_q2_0);
    tcase_add_test(tc, test_layout_q1_0);
    tcase_add_test(tc, test_layout_q8_0);
    tcase_add_test(tc, test_grid_round_trip);
    tcase_add_test(tc, test_float_types_round_trip);
    tcase_add_test(tc, test_from_float_rounding);
    tcase_add_test(tc, test_bad_floats);
    tcase_add_test(tc, test_type_table);
    tcase_add_test(tc, test_quantize_row);
    tcase_add_test(tc, test_gemm_ref);
    tcase_add_test(tc, test_gemm_extremes);
    suite_add_tcase(s, tc);
    return tu_run(s, CK_FORK_GETENV);
}
