/* x86 kernels, written once and compiled once per ISA level.
 *
 * kern_avx2.c, kern_avx512.c and kern_avx512vnni.c each define KG_PREFIX
 * (the exported name prefix), KG_ISA, KX_VNNI and KX_VBMI, then include
 * this file; what every level shares, x86 or ARM, is in kern_gemm.h;
 * meson compiles each with its own -m flags, so nothing here runs unless
 * dispatch.c has checked the CPU first.
 *
 * All kernels work on 256-bit vectors. Zen 4 splits 512-bit work into two
 * 256-bit halves anyway; what the AVX-512 levels add here is VNNI's
 * vpdpbusd (u8 x s8 -> int32 in one instruction) and, through EVEX,
 * 32 vector registers for the compiler.
 *
 * Shape of every GEMM (see kernels.h for the contract):
 *   for each chunk of weight rows small enough to stay in L2
 *     for each tile of up to KG_TILE activation rows
 *       for each weight row r in the chunk
 *         for each weight block: unpack it ONCE into u8 code vectors,
 *           then multiply it into every activation row of the tile.
 * GEMV (one activation row) is the same loop with a tile of one; it is
 * bound by streaming the weights.
 *
 * Integer accumulation bounds (the reason nothing overflows):
 *   activations q are in [-127, 127] (kern_quantize_row's absmax scaling),
 *   codes c are in [0, 3] (2-bit fields; ternary files hold 0..2, Q1_0 0 or 2),
 *   |Q8_0 weights| <= 128.
 *   AVX2: vpmaddubsw adds two u8*s8 products into int16: |pair| <= 2*3*127
 *   = 762 for codes, 2*128*127 = 32512 < 32767 for Q8_0 (one per block, so
 *   it never saturates). A ternary block adds at most 8 such pairs per
 *   int16 lane before widening: 8*762 = 6096. Binary/Q2_0 blocks add fewer.
 *   Then vpmaddwd widens to int32.
 *   VNNI: vpdpbusd adds four products into int32 directly.
 *   Either way the int32 of one block is at most 256*3*127 = 97536 in
 *   magnitude, is turned into float per block (exactly: < 2^24) and scaled,
 *   so int32 never accumulates across blocks and no row length can
 *   overflow it. The row-sum correction (sum of activations over the
 *   block, <= 256*127) is subtracted in int32 before the conversion. */
#include <immintrin.h>
#include <string.h>

#define KG_FLOAT_ROWS 3 /* kg_tile_float_rows, below */
#define KG_PANEL 1      /* kg_pack_float and kg_panel_tile, below */
#define KG_GEMV4 1
/* kg_few_prep and kg_few_tile, at the end. The VNNI levels keep kx_tile_codes:
 * there is no VNNI CPU here to test another path on. */
#if !KX_VNNI
#define KG_FEW 1
#endif
#include "kernels/kern_gemm.h"

/* u8 x s8 dot products: acc += sum over groups of 4 (VNNI) or pairs (AVX2). */
#if KX_VNNI
#define KX_DOT(acc, u, s) _mm256_dpbusd_epi32((acc), (u), (s))
#define KX_I32(acc) (acc)
#else
#define KX_DOT(acc, u, s) _mm256_add_epi16((acc), _mm256_maddubs_epi16((u), (s)))
#define KX_I32(acc) _mm256_madd_epi16((acc), _mm256_set1_epi16(1))
#endif

KG_INLINE float kg_f16(kt_f16 h)
{
    return _cvtsh_ss(h);
}

KG_INLINE float kx_hsum(__m256 v)
{
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    x = _mm_add_ss(x, _mm_movehdup_ps(x));
    return _mm_cvtss_f32(x);
}

/* ---- Unpacking one block into 32-wide u8 code vectors, in weight order ---- */

/* q * 3 modulo 256 in every byte */
KG_INLINE __m256i kx_mul3(__m256i q)
{
    return _mm256_add_epi8(q, _mm256_add_epi8(q, q));
}

/* The top trit of a base-3 byte as TQ1_0 stores it (ceil(v * 256 / 243)):
 * floor(3q / 256), i.e. (q >= 86) + (q >= 171). The byte is kept biased,
 * s = q + 128 (mod 256), so the comparisons can be signed; the bias survives
 * multiplying by 3 (3(q + 128) = 3q + 128 mod 256), so each block's bytes
 * are biased once, not once per trit. */
KG_INLINE __m256i kx_bias(__m256i q)
{
    return _mm256_xor_si256(q, _mm256_set1_epi8((char)0x80));
}

KG_INLINE __m256i kx_trit(__m256i s)
{
    __m256i ge1 = _mm256_cmpgt_epi8(s, _mm256_set1_epi8(-43));
    __m256i ge2 = _mm256_cmpgt_epi8(s, _mm256_set1_epi8(42));
    /* opaque to gcc, which otherwise turns one compare into min + cmpeq */
    __asm__("" : "+x"(ge1));
    return _mm256_sub_epi8(_mm256_setzero_si256(), _mm256_add_epi8(ge1, ge2));
}

/* TQ2_0: byte m of 32-byte half h holds weight 128h + 32s + m at bits 2s */
KG_INLINE float kx_unpack_tq2_0(const uint8_t *p, __m256i *c)
{
    const __m256i m3 = _mm256_set1_epi8(3);
    const blk_tq2_0 *b = (const blk_tq2_0 *)p;
    for (int h = 0; h < 2; h++) {
        __m256i x = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * h));
        c[4 * h + 0] = _mm256_and_si256(x, m3);
        c[4 * h + 1] = _mm256_and_si256(_mm256_srli_epi16(x, 2), m3);
        c[4 * h + 2] = _mm256_and_si256(_mm256_srli_epi16(x, 4), m3);
        c[4 * h + 3] = _mm256_and_si256(_mm256_srli_epi16(x, 6), m3);
    }
    return kg_f16(b->d);
}

/* TQ1_0's last 96 weights into c[0..3): qs[32..48) (weights 160 + 16n + m)
 * and qh (240 + 4n + j), byte operations on both 128-bit halves. */
KG_INLINE void kx_tq1_0_tail(const blk_tq1_0 *b, __m256i *c)
{
    __m256i y =
        kx_bias(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(b->qs + 32))));
    __m256i z = _mm256_blend_epi32(y, kx_mul3(y), 0xF0); /* trits 0 | 1 */
    c[0] = kx_trit(z);
    z = kx_mul3(kx_mul3(z)); /* trits 2 | 3 */
    c[1] = kx_trit(z);
    z = kx_mul3(kx_mul3(z)); /* trit 4 in the low half */
    uint32_t qh;
    memcpy(&qh, b->qh, 4);
    /* byte p of the high half: qh[p % 4] * 3^(p / 4); 16-bit multiplies
     * keep each byte's product modulo 256 when done per byte. */
    __m128i h = _mm_set1_epi32((int)qh);
    const __m128i pw = _mm_setr_epi16(1, 1, 3, 3, 9, 9, 27, 27);
    const __m128i lo8 = _mm_set1_epi16(0x00FF);
    __m128i lo = _mm_and_si128(_mm_mullo_epi16(h, pw), lo8);
    __m128i hi = _mm_andnot_si128(lo8, _mm_mullo_epi16(_mm_andnot_si128(lo8, h), pw));
    __m128i hq = _mm_xor_si128(_mm_or_si128(lo, hi), _mm_set1_epi8((char)0x80));
    __m256i hv = _mm256_inserti128_si256(z, hq, 1);
    c[2] = kx_trit(hv);
}

/* TQ1_0: qs[0..32): trit n of byte m is weight 32n + m (n = 0..4);
 * qs[32..48): trit n of byte m is weight 160 + 16n + m;
 * qh[0..4): trit n of byte j is weight 240 + 4n + j.
 * Trit n comes to the top by multiplying by 3^n modulo 256. */
KG_INLINE float kx_unpack_tq1_0(const uint8_t *p, __m256i *c)
{
    const blk_tq1_0 *b = (const blk_tq1_0 *)p;
    /* the first 160 weights: 16-bit lanes, each byte's trit taken by a
     * high multiply (floor(3q / 256)) while a low multiply moves on to
     * the next (3q mod 256), keeping the work on the multiplier ports */
    __m256i x = _mm256_loadu_si256((const __m256i *)b->qs);
    __m256i ev = _mm256_slli_epi16(x, 8);                               /* even bytes, high */
    __m256i od = _mm256_and_si256(x, _mm256_set1_epi16((short)0xFF00)); /* odd bytes, high */
    const __m256i three = _mm256_set1_epi16(3);
    for (int n = 0; n < 5; n++) {
        c[n] = _mm256_or_si256(_mm256_mulhi_epu16(ev, three),
                               _mm256_slli_epi16(_mm256_mulhi_epu16(od, three), 8));
        ev = _mm256_mullo_epi16(ev, three);
        od = _mm256_mullo_epi16(od, three);
    }
    kx_tq1_0_tail(b, c + 5);
    return kg_f16(b->d);
}

/* Q2_0: weight j: bits 2(j % 4) of byte j / 4 */
KG_INLINE float kx_unpack_q2_0(const uint8_t *p, __m256i *c)
{
    const blk_q2_0 *b = (const blk_q2_0 *)p;
#if KX_VBMI
    const __m256i m3 = _mm256_set1_epi8(3);
    /* vpmultishiftqb: output byte k of each 64-bit lane takes the 8 bits
     * at offset 2(8 lane + k) of the lane; every lane holds the same
     * 8 bytes (32 weights), so byte j gets weight j's field. */
    const __m256i sh =
        _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34, 36, 38,
                         40, 42, 44, 46, 48, 50, 52, 54, 56, 58, 60, 62);
    for (int k = 0; k < 2; k++) {
        int64_t v;
        memcpy(&v, b->qs + 8 * k, 8);
        c[k] = _mm256_and_si256(_mm256_multishift_epi64_epi8(sh, _mm256_set1_epi64x(v)), m3);
    }
    return kg_f16(b->d);
#else
    const __m128i m = _mm_set1_epi8(3);
    __m128i x = _mm_loadu_si128((const __m128i *)b->qs);
    __m128i t0 = _mm_and_si128(x, m);
    __m128i t1 = _mm_and_si128(_mm_srli_epi16(x, 2), m);
    __m128i t2 = _mm_and_si128(_mm_srli_epi16(x, 4), m);
    __m128i t3 = _mm_and_si128(_mm_srli_epi16(x, 6), m);
    __m128i a0 = _mm_unpacklo_epi8(t0, t1), b0 = _mm_unpacklo_epi8(t2, t3);
    __m128i a1 = _mm_unpackhi_epi8(t0, t1), b1 = _mm_unpackhi_epi8(t2, t3);
    c[0] = _mm256_set_m128i(_mm_unpackhi_epi16(a0, b0), _mm_unpacklo_epi16(a0, b0));
    c[1] = _mm256_set_m128i(_mm_unpackhi_epi16(a1, b1), _mm_unpacklo_epi16(a1, b1));
    return kg_f16(b->d);
#endif
}

/* Q1_0: weight j: bit j % 8 of byte j / 8; code 2 for +1, 0 for -1 */
KG_INLINE float kx_unpack_q1_0(const uint8_t *p, __m256i *c)
{
    const blk_q1_0 *b = (const blk_q1_0 *)p;
#if KX_VBMI
    /* as for Q2_0: byte j takes the 8 bits at offset j - 1 (rotating
     * within the lane), which puts weight j's bit at bit 1: the code */
    const __m256i two = _mm256_set1_epi8(2);
    for (int h = 0; h < 2; h++) {
        const __m256i sh = _mm256_add_epi8(_mm256_setr_epi8(63, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,
                                                            11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
                                                            21, 22, 23, 24, 25, 26, 27, 28, 29, 30),
                                           _mm256_set1_epi8(h ? 32 : 0));
        for (int k = 0; k < 2; k++) {
            int64_t v;
            memcpy(&v, b->qs + 8 * k, 8);
            c[2 * k + h] =
                _mm256_and_si256(_mm256_multishift_epi64_epi8(sh, _mm256_set1_epi64x(v)), two);
        }
    }
    return kg_f16(b->d);
#else
    const __m256i idx = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2,
                                         2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x(0x8040201008040201LL);
    const __m256i two = _mm256_set1_epi8(2);
    for (int k = 0; k < 4; k++) {
        uint32_t v;
        memcpy(&v, b->qs + 4 * k, 4);
        __m256i x = _mm256_shuffle_epi8(_mm256_set1_epi32((int)v), idx);
        c[k] = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(x, bit), bit), two);
    }
    return kg_f16(b->d);
#endif
}

/* Q2_0 against kern_permute64's activations: both 128-bit lanes hold the
 * 16 bytes, shifted by 0 | 2 and 4 | 6, so c[0] is fields 0 | 1 of every
 * byte and c[1] fields 2 | 3: the permuted order. */
KG_INLINE float kx_unpack_q2_0_p64(const uint8_t *p, __m256i *c)
{
    const blk_q2_0 *b = (const blk_q2_0 *)p;
    const __m256i m3 = _mm256_set1_epi8(3);
    __m256i x = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)b->qs));
    c[0] = _mm256_and_si256(_mm256_srlv_epi32(x, _mm256_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2)), m3);
    c[1] = _mm256_and_si256(_mm256_srlv_epi32(x, _mm256_setr_epi32(4, 4, 4, 4, 6, 6, 6, 6)), m3);
    return kg_f16(b->d);
}

/* Fills c[0 .. qk/32) and returns the block's scale. */
KG_INLINE float kx_unpack(kt_type t, const uint8_t *p, __m256i *c)
{
    switch (t) {
    case KT_TQ2_0: return kx_unpack_tq2_0(p, c);
    case KT_TQ1_0: return kx_unpack_tq1_0(p, c);
    case KT_Q2_0: return kx_unpack_q2_0(p, c);
    case KT_Q1_0: return kx_unpack_q1_0(p, c);
    default: return 0.0f;
    }
}

/* Sum of the activations over one block, spread over int32 lanes (only the
 * total of the lanes matters: it is subtracted lane by lane). */
KG_INLINE __m256i kx_block_sum(kt_type t, const int16_t *g)
{
    switch (t) {
    case KT_TQ2_0:
    case KT_TQ1_0: return _mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)g));
    case KT_Q1_0: return _mm256_cvtepi16_epi32(_mm_loadl_epi64((const __m128i *)g));
    default: { /* Q2_0: two groups */
        int32_t v;
        memcpy(&v, g, 4);
        return _mm256_cvtepi16_epi32(_mm_cvtsi32_si128(v));
    }
    }
}

/* One weight row times nr activation rows starting at j0.
 * kg_tile_codes and kg_tile_float have the loops of their kern_neon.h
 * twins with 256-bit vectors in place of 128-bit ones; they stay written
 * out per ISA because a shared version would need a macro per intrinsic
 * (load, FMA, dot, sum), which hides the instructions being tuned. */
KG_INLINE void kx_tile_codes(kt_type t, bool p64, int nr, const uint8_t *wrow, const kern_acts *a,
                             int j0, float *out, size_t ldo, int r)
{
    const int qk = kg_block(t), nk = qk / 32, nb = a->n / qk, ng = a->n / KERN_GROUP;
    const int8_t *qa = p64 ? a->q64 : a->q;
    const size_t bytes = kg_block_bytes(t);
    __m256 acc[KG_TILE];
    for (int jj = 0; jj < nr; jj++)
        acc[jj] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        __m256i c[8];
        __m256 d = _mm256_set1_ps(p64 ? kx_unpack_q2_0_p64(wrow + (size_t)b * bytes, c)
                                      : kx_unpack(t, wrow + (size_t)b * bytes, c));
        for (int jj = 0; jj < nr; jj++) {
            const int8_t *q = qa + (size_t)(j0 + jj) * a->n + (size_t)b * qk;
            __m256i s = _mm256_setzero_si256();
            for (int k = 0; k < nk; k++)
                s = KX_DOT(s, c[k], _mm256_loadu_si256((const __m256i *)(q + 32 * k)));
            __m256i i = _mm256_sub_epi32(
                KX_I32(s), kx_block_sum(t, a->gsum + (size_t)(j0 + jj) * ng + (size_t)b * nk));
            acc[jj] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), d, acc[jj]);
        }
    }
    for (int jj = 0; jj < nr; jj++)
        out[(size_t)(j0 + jj) * ldo + r] = kx_hsum(acc[jj]) * a->scale[j0 + jj];
}

KG_INLINE void kg_tile_codes(kt_type t, int nr, const uint8_t *wrow, const kern_acts *a, int j0,
                             float *out, size_t ldo, int r)
{
    if (t == KT_Q2_0 && a->q64)
        kx_tile_codes(t, true, nr, wrow, a, j0, out, ldo, r);
    else
        kx_tile_codes(t, false, nr, wrow, a, j0, out, ldo, r);
}

/* Q8_0: |w| as the unsigned operand, the activation with w's sign as the
 * signed one. Even and odd blocks go to separate accumulators (named, not
 * indexed by b, so they stay in registers) to hide the FMA latency. */
KG_INLINE __m256 kx_q8_block(const blk_q8_0 *w, const int8_t *q, __m256 acc)
{
    __m256i x = _mm256_loadu_si256((const __m256i *)w->qs);
    __m256i s = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)q), x);
    __m256i i = KX_I32(KX_DOT(_mm256_setzero_si256(), _mm256_sign_epi8(x, x), s));
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), _mm256_set1_ps(kg_f16(w->d)), acc);
}

KG_INLINE void kg_tile_q8_0(int nr, const uint8_t *wrow, const kern_acts *a, int j0, float *out,
                            size_t ldo, int r)
{
    const int nb = a->n / BLK_Q8_0;
    const blk_q8_0 *w = (const blk_q8_0 *)wrow;
    __m256 acc0[KG_TILE], acc1[KG_TILE];
    const int8_t *q[KG_TILE];
    for (int jj = 0; jj < nr; jj++) {
        acc0[jj] = acc1[jj] = _mm256_setzero_ps();
        q[jj] = a->q + (size_t)(j0 + jj) * a->n;
    }
    int b = 0;
    for (; b + 2 <= nb; b += 2)
        for (int jj = 0; jj < nr; jj++) {
            acc0[jj] = kx_q8_block(&w[b], q[jj] + b * BLK_Q8_0, acc0[jj]);
            acc1[jj] = kx_q8_block(&w[b + 1], q[jj] + (b + 1) * BLK_Q8_0, acc1[jj]);
        }
    for (; b < nb; b++)
        for (int jj = 0; jj < nr; jj++)
            acc0[jj] = kx_q8_block(&w[b], q[jj] + b * BLK_Q8_0, acc0[jj]);
    for (int jj = 0; jj < nr; jj++)
        out[(size_t)(j0 + jj) * ldo + r] =
            kx_hsum(_mm256_add_ps(acc0[jj], acc1[jj])) * a->scale[j0 + jj];
}

/* Float weights (F32, F16, BF16) times float activations: 8 weights at a
 * time widened to float, two accumulators per row (the loop of kern_neon.h's
 * kg_tile_float at twice the width; see kg_tile_codes). */
KG_INLINE __m256 kx_load8(kt_type t, const uint8_t *w, int k)
{
    switch (t) {
    case KT_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + 2 * (size_t)k)));
    case KT_BF16: /* bfloat16 is the top half of a float */
        return _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(w + 2 * (size_t)k))), 16));
    default: return _mm256_loadu_ps((const float *)w + k);
    }
}

KG_INLINE void kg_tile_float(kt_type t, int nr, const uint8_t *w, const kern_acts *a, int j0,
                             float *out, size_t ldo, int r)
{
    const int n = a->n;
    __m256 acc[KG_TILE][2];
    for (int jj = 0; jj < nr; jj++)
        acc[jj][0] = acc[jj][1] = _mm256_setzero_ps();
    int k = 0;
    for (; k + 16 <= n; k += 16) {
        __m256 w0 = kx_load8(t, w, k), w1 = kx_load8(t, w, k + 8);
        for (int jj = 0; jj < nr; jj++) {
            const float *f = a->f + (size_t)(j0 + jj) * n + k;
            acc[jj][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(f), acc[jj][0]);
            acc[jj][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(f + 8), acc[jj][1]);
        }
    }
    for (int jj = 0; jj < nr; jj++) {
        const float *f = a->f + (size_t)(j0 + jj) * n;
        float s = kx_hsum(_mm256_add_ps(acc[jj][0], acc[jj][1]));
        for (int i = k; i < n; i++)
            s += kg_load1(t, w, i) * f[i];
        out[(size_t)(j0 + jj) * ldo + r] = s;
    }
}

/* Float weights: KG_FLOAT_ROWS weight rows x up to KG_TILE activation rows
 * per tile, one accumulator per pair (12 of 16 registers), so each widened
 * weight vector serves four activation rows and each activation vector
 * three weight rows: 7 loads per 12 FMAs where one weight row at a time
 * needs 10 per 8. Every tile shape adds in the same order, so a value does
 * not depend on how rows were split or tiled. */

KG_INLINE void kg_tile_float_rows(kt_type t, int nw, int nr, const uint8_t *w, size_t w_stride,
                                  const kern_acts *a, int j0, float *out, size_t ldo, int r)
{
    const int n = a->n, n8 = n & ~7;
    __m256 acc[KG_FLOAT_ROWS][KG_TILE];
    for (int i = 0; i < nw; i++)
        for (int jj = 0; jj < nr; jj++)
            acc[i][jj] = _mm256_setzero_ps();
    const float *f = a->f + (size_t)j0 * n;
    for (int k = 0; k < n8; k += 8) {
        __m256 wv[KG_FLOAT_ROWS];
        for (int i = 0; i < nw; i++)
            wv[i] = kx_load8(t, w + (size_t)i * w_stride, k);
        for (int jj = 0; jj < nr; jj++) {
            __m256 x = _mm256_loadu_ps(f + (size_t)jj * n + k);
            for (int i = 0; i < nw; i++)
                acc[i][jj] = _mm256_fmadd_ps(wv[i], x, acc[i][jj]);
        }
    }
    for (int i = 0; i < nw; i++)
        for (int jj = 0; jj < nr; jj++) {
            float sum = kx_hsum(acc[i][jj]);
            for (int k = n8; k < n; k++)
                sum += kg_load1(t, w + (size_t)i * w_stride, k) * f[(size_t)jj * n + k];
            out[(size_t)(j0 + jj) * ldo + r + i] = sum;
        }
}

/* ---- Float weights against many activation rows (kern_gemm.h's kg_gemm_panel) ---- */

/* Eight rows' floats, one vector each, transposed: column e of the eight rows
 * into d + e * KG_PANEL_NR. */
KG_INLINE void kx_store8x8t(__m256 r0, __m256 r1, __m256 r2, __m256 r3, __m256 r4, __m256 r5,
                            __m256 r6, __m256 r7, float *d)
{
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_store_ps(d + 0 * KG_PANEL_NR, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_store_ps(d + 1 * KG_PANEL_NR, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_store_ps(d + 2 * KG_PANEL_NR, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_store_ps(d + 3 * KG_PANEL_NR, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_store_ps(d + 4 * KG_PANEL_NR, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_store_ps(d + 5 * KG_PANEL_NR, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_store_ps(d + 6 * KG_PANEL_NR, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_store_ps(d + 7 * KG_PANEL_NR, _mm256_permute2f128_ps(u3, u7, 0x31));
}

/* Eight weights of row i from column k, or zeros for a row past the panel's. */
KG_INLINE __m256 kx_panel_load8(kt_type t, const uint8_t *w, size_t w_stride, int nw, int i, int k)
{
    return i < nw ? kx_load8(t, w + (size_t)i * w_stride, k) : _mm256_setzero_ps();
}

KG_INLINE void kg_pack_float(kt_type t, const uint8_t *w, size_t w_stride, int nw, int k0, int kc,
                             float *wp)
{
    const int k8 = kc & ~7;
    for (int h = 0; h < KG_PANEL_NR; h += 8) /* eight rows by eight columns at a time */
        for (int k = 0; k < k8; k += 8)
            kx_store8x8t(kx_panel_load8(t, w, w_stride, nw, h + 0, k0 + k),
                         kx_panel_load8(t, w, w_stride, nw, h + 1, k0 + k),
                         kx_panel_load8(t, w, w_stride, nw, h + 2, k0 + k),
                         kx_panel_load8(t, w, w_stride, nw, h + 3, k0 + k),
                         kx_panel_load8(t, w, w_stride, nw, h + 4, k0 + k),
                         kx_panel_load8(t, w, w_stride, nw, h + 5, k0 + k),
                         kx_panel_load8(t, w, w_stride, nw, h + 6, k0 + k),
                         kx_panel_load8(t, w, w_stride, nw, h + 7, k0 + k),
                         wp + (size_t)k * KG_PANEL_NR + h);
    for (int k = k8; k < kc; k++)
        for (int i = 0; i < KG_PANEL_NR; i++)
            wp[(size_t)k * KG_PANEL_NR + i] =
                i < nw ? kg_load1(t, w + (size_t)i * w_stride, k0 + k) : 0.0f;
}

/* mr activation rows x 16 weight rows in 2 * mr accumulators (12 of 16
 * registers at mr = 6): per column, two panel loads and mr broadcasts feed
 * 2 * mr FMAs. A short panel (nw < 16) reads and writes out through masks. */
KG_INLINE void kg_panel_tile(int mr, int nw, const float *x, size_t ldx, const float *wp, int kc,
                             bool first, float *out, size_t ldo)
{
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nw), lane);
    const __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nw - 8), lane);
    const bool full = nw == KG_PANEL_NR;
    __m256 c0[KG_PANEL_MR], c1[KG_PANEL_MR];
    for (int j = 0; j < mr; j++) {
        float *o = out + (size_t)j * ldo;
        if (first) {
            c0[j] = c1[j] = _mm256_setzero_ps();
        } else if (full) {
            c0[j] = _mm256_loadu_ps(o);
            c1[j] = _mm256_loadu_ps(o + 8);
        } else {
            c0[j] = _mm256_maskload_ps(o, m0);
            c1[j] = _mm256_maskload_ps(o + 8, m1);
        }
    }
    for (int k = 0; k < kc; k++) {
        __m256 b0 = _mm256_load_ps(wp + (size_t)k * KG_PANEL_NR);
        __m256 b1 = _mm256_load_ps(wp + (size_t)k * KG_PANEL_NR + 8);
        for (int j = 0; j < mr; j++) {
            __m256 xv = _mm256_broadcast_ss(x + (size_t)j * ldx + k);
            c0[j] = _mm256_fmadd_ps(xv, b0, c0[j]);
            c1[j] = _mm256_fmadd_ps(xv, b1, c1[j]);
        }
    }
    for (int j = 0; j < mr; j++) {
        float *o = out + (size_t)j * ldo;
        if (full) {
            _mm256_storeu_ps(o, c0[j]);
            _mm256_storeu_ps(o + 8, c1[j]);
        } else {
            _mm256_maskstore_ps(o, m0, c0[j]);
            _mm256_maskstore_ps(o + 8, m1, c1[j]);
        }
    }
}

/* ---- Decode: four weight rows against one activation row ----
 * Each row is its own stream and accumulator; the activations and block
 * sums are loaded once for the four. The four rows lie one after another,
 * so a pass reads one run of bytes, and each block step prefetches its
 * share of the run KX_PF_BYTES further on (the next passes' rows). The
 * former distance, one group of four rows, was too short for one core to
 * keep enough lines in flight: single-thread GEMV from memory, AMD EPYC
 * (Zen 3), Q8_0 576 wide 8.9 -> 14-17 GB/s, TQ2_0 1536 wide 11.6 -> 15-16,
 * Q2_0 576 wide 8.9 -> ~10 (it is bound by its unpacking). */
#define KX_PF_BYTES 4096

KG_INLINE void kx_prefetch(const uint8_t *p)
{
    _mm_prefetch((const char *)p, _MM_HINT_T0);
}

/* Step k of a pass over four rows that reads `step` bytes of them per
 * step: the lines of that share of the run, KX_PF_BYTES on. A prefetch past
 * the matrix's end is harmless (it does not fault). */
KG_INLINE void kx_prefetch_ahead(const uint8_t *w, size_t step, int k)
{
    const uint8_t *p = w + KX_PF_BYTES + step * (size_t)k;
    for (size_t o = 0; o < step; o += 64)
        kx_prefetch(p + o);
}

KG_INLINE void kx_gemv4_codes(kt_type t, bool p64, const uint8_t *w, size_t stride,
                              const kern_acts *a, float *out, int r)
{
    const int qk = kg_block(t), nk = qk / 32, nb = a->n / qk;
    const size_t bytes = kg_block_bytes(t);
    __m256 acc[4];
    for (int i = 0; i < 4; i++)
        acc[i] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t *p = w + (size_t)b * bytes;
        const int8_t *q = (p64 ? a->q64 : a->q) + (size_t)b * qk;
        __m256i g = kx_block_sum(t, a->gsum + (size_t)b * nk);
        kx_prefetch_ahead(w, 4 * bytes, b);
        for (int i = 0; i < 4; i++) {
            const uint8_t *pi = p + (size_t)i * stride;
            __m256i c[8];
            __m256 d = _mm256_set1_ps(p64 ? kx_unpack_q2_0_p64(pi, c) : kx_unpack(t, pi, c));
            __m256i s = _mm256_setzero_si256();
            for (int k = 0; k < nk; k++)
                s = KX_DOT(s, c[k], _mm256_loadu_si256((const __m256i *)(q + 32 * k)));
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(KX_I32(s), g)), d, acc[i]);
        }
    }
    for (int i = 0; i < 4; i++)
        out[r + i] = kx_hsum(acc[i]) * a->scale[0];
}

/* Even and odd blocks in separate sums, added at the end, as in
 * kg_tile_q8_0: a row gets the same bits alone as in a batch. */
KG_INLINE void kx_gemv4_q8_0(const uint8_t *w, size_t stride, const kern_acts *a, float *out, int r)
{
    const int nb = a->n / BLK_Q8_0;
    __m256 acc0[4], acc1[4];
    for (int i = 0; i < 4; i++)
        acc0[i] = acc1[i] = _mm256_setzero_ps();
    int b = 0;
    for (; b + 2 <= nb; b += 2) {
        const int8_t *q = a->q + (size_t)b * BLK_Q8_0;
        kx_prefetch_ahead(w, 8 * sizeof(blk_q8_0), b / 2);
        for (int i = 0; i < 4; i++) {
            const blk_q8_0 *wi = (const blk_q8_0 *)(w + (size_t)i * stride) + b;
            acc0[i] = kx_q8_block(wi, q, acc0[i]);
            acc1[i] = kx_q8_block(wi + 1, q + BLK_Q8_0, acc1[i]);
        }
    }
    for (; b < nb; b++)
        for (int i = 0; i < 4; i++)
            acc0[i] = kx_q8_block((const blk_q8_0 *)(w + (size_t)i * stride) + b,
                                  a->q + (size_t)b * BLK_Q8_0, acc0[i]);
    for (int i = 0; i < 4; i++)
        out[r + i] = kx_hsum(_mm256_add_ps(acc0[i], acc1[i])) * a->scale[0];
}

#if !KX_VNNI
/* ---- Decode of TQ1_0 and Q2_0 without VNNI: one fused pass per block ----
 * Each 32-weight plane is unpacked and multiplied at once, the int16 sums
 * of the whole block are widened once, and the four rows' f16 scales are
 * converted together. The lanes hold the same integers as kx_tile_codes'
 * and the float steps are the same, so a row gets the same bits here as
 * in a batch. (TQ2_0 written the same way measured no faster than
 * kx_gemv4_codes: it already issues four vector operations a cycle.) */

KG_INLINE uint64_t kx_f16x4(const uint8_t *p, size_t stride)
{
    uint64_t v = 0;
    for (int i = 0; i < 4; i++) {
        uint16_t h;
        memcpy(&h, p + (size_t)i * stride, 2);
        v |= (uint64_t)h << 16 * i;
    }
    return v;
}

/* Lanes 0..3: the f16 scales at p + i * stride (i < 4) as floats. */
KG_INLINE __m256 kx_scales4(const uint8_t *p, size_t stride)
{
    return _mm256_castps128_ps256(_mm_cvtph_ps(_mm_cvtsi64_si128((long long)kx_f16x4(p, stride))));
}

/* int16 sums of c * q over one TQ1_0 block. The first 160 weights are five
 * trits of each of 32 bytes y, two at a time: with y in the high byte of a
 * 16-bit lane, a high multiply by 9 gives floor(9y / 256) = 3 c_n + c_{n+1}
 * (c_n the top trit of y, c_{n+1} that of 3y mod 256), one vpshufb per trit
 * splits that pair, and a low multiply by 9 moves on to 9y mod 256. That is
 * four operations per 32 trits where kx_unpack_tq1_0 spends six. The last
 * 96 weights are kx_unpack_tq1_0's. */
KG_INLINE __m256i kx_dot_tq1_0(const uint8_t *p, const int8_t *q)
{
    const blk_tq1_0 *b = (const blk_tq1_0 *)p;
    const __m256i div3 = _mm256_setr_epi8(0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                          1, 1, 1, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0);
    const __m256i mod3 = _mm256_setr_epi8(0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2,
                                          0, 1, 2, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0);
    const __m256i nine = _mm256_set1_epi16(9), three = _mm256_set1_epi16(3);
    __m256i x = _mm256_loadu_si256((const __m256i *)b->qs);
    __m256i ev = _mm256_slli_epi16(x, 8);                               /* even bytes, high */
    __m256i od = _mm256_and_si256(x, _mm256_set1_epi16((short)0xFF00)); /* odd bytes, high */
    __m256i acc = _mm256_setzero_si256();
    for (int n = 0; n < 4; n += 2) {
        __m256i pair = _mm256_or_si256(_mm256_mulhi_epu16(ev, nine),
                                       _mm256_slli_epi16(_mm256_mulhi_epu16(od, nine), 8));
        __m256i c0 = _mm256_shuffle_epi8(div3, pair), c1 = _mm256_shuffle_epi8(mod3, pair);
        acc = _mm256_add_epi16(
            acc, _mm256_maddubs_epi16(c0, _mm256_loadu_si256((const __m256i *)(q + 32 * n))));
        acc = _mm256_add_epi16(
            acc, _mm256_maddubs_epi16(c1, _mm256_loadu_si256((const __m256i *)(q + 32 * n + 32))));
        ev = _mm256_mullo_epi16(ev, nine);
        od = _mm256_mullo_epi16(od, nine);
    }
    __m256i c4 = _mm256_or_si256(_mm256_mulhi_epu16(ev, three),
                                 _mm256_slli_epi16(_mm256_mulhi_epu16(od, three), 8));
    acc = _mm256_add_epi16(
        acc, _mm256_maddubs_epi16(c4, _mm256_loadu_si256((const __m256i *)(q + 128))));
    __m256i c[3];
    kx_tq1_0_tail(b, c);
    for (int k = 0; k < 3; k++)
        acc = _mm256_add_epi16(
            acc,
            _mm256_maddubs_epi16(c[k], _mm256_loadu_si256((const __m256i *)(q + 160 + 32 * k))));
    return acc;
}

/* int16 sums of c * q over one Q2_0 block against kern_permute64's order,
 * with fields 1 and 3 (the high 128-bit lane) taken unshifted from bits
 * 2-3 and 6-7, i.e. as 4c: one shift and two masks where
 * kx_unpack_q2_0_p64 spends two variable shifts. The high lane's sums are
 * 4x (at most 2 x 2 x 12 x 127 = 6096: no saturation). */
KG_INLINE __m256i kx_dot_q2_0_x4(const uint8_t *p, const int8_t *q)
{
    const blk_q2_0 *b = (const blk_q2_0 *)p;
    const __m256i m = _mm256_setr_epi64x(0x0303030303030303, 0x0303030303030303, 0x0C0C0C0C0C0C0C0C,
                                         0x0C0C0C0C0C0C0C0C);
    __m256i x = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)b->qs));
    __m256i c0 = _mm256_and_si256(x, m), c1 = _mm256_and_si256(_mm256_srli_epi16(x, 4), m);
    return _mm256_add_epi16(
        _mm256_maddubs_epi16(c0, _mm256_loadu_si256((const __m256i *)q)),
        _mm256_maddubs_epi16(c1, _mm256_loadu_si256((const __m256i *)(q + 32))));
}

/* TQ1_0 and Q2_0 (against permuted activations): four rows, the
 * activations and block sums loaded once for the four. Q2_0 widens its
 * sums with weights 4 (low lane) and 1 (high lane), so every int32 lane is
 * 4x kx_tile_codes' lane, and multiplies by the block scale / 4: the
 * product, hence the FMA's result, is the same float (x4 and /4 are exact;
 * an f16 scale / 4 is a normal float). The rows' scales are broadcast from
 * memory (a load, not a lane permute). */
KG_INLINE void kx_gemv4_fused(kt_type t, const uint8_t *w, size_t stride, const kern_acts *a,
                              float *out, int r)
{
    const bool q2 = t == KT_Q2_0;
    const int qk = kg_block(t), nb = a->n / qk;
    const size_t bytes = kg_block_bytes(t);
    const size_t doff = q2 ? offsetof(blk_q2_0, d) : offsetof(blk_tq1_0, d);
    const int8_t *qa = q2 ? a->q64 : a->q;
    const __m256i w41 = _mm256_setr_epi16(4, 4, 4, 4, 4, 4, 4, 4, 1, 1, 1, 1, 1, 1, 1, 1);
    _Alignas(32) float df[8];
    __m256 acc[4];
    for (int i = 0; i < 4; i++)
        acc[i] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t *p = w + (size_t)b * bytes;
        const int8_t *q = qa + (size_t)b * qk;
        kx_prefetch_ahead(w, 4 * bytes, b);
        __m256i g = kx_block_sum(t, a->gsum + (size_t)b * (qk / KERN_GROUP));
        __m256 d4 = kx_scales4(p + doff, stride);
        if (q2) {
            g = _mm256_slli_epi32(g, 2);
            d4 = _mm256_mul_ps(d4, _mm256_set1_ps(0.25f));
        }
        _mm256_store_ps(df, d4);
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
            const uint8_t *pi = p + (size_t)i * stride;
            __m256i s =
                q2 ? _mm256_madd_epi16(kx_dot_q2_0_x4(pi, q), w41) : KX_I32(kx_dot_tq1_0(pi, q));
            __m256i si = _mm256_sub_epi32(s, g);
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(si), _mm256_broadcast_ss(df + i), acc[i]);
        }
    }
    for (int i = 0; i < 4; i++)
        out[r + i] = kx_hsum(acc[i]) * a->scale[0];
}
#endif

KG_INLINE void kg_gemv4(kt_type t, const uint8_t *wrow, size_t w_stride, const kern_acts *a,
                        float *out, int r)
{
#if !KX_VNNI
    if (t == KT_TQ1_0 || (t == KT_Q2_0 && a->q64)) {
        kx_gemv4_fused(t, wrow, w_stride, a, out, r);
        return;
    }
#endif
    if (t == KT_Q8_0)
        kx_gemv4_q8_0(wrow, w_stride, a, out, r);
    else if (t == KT_Q2_0 && a->q64)
        kx_gemv4_codes(t, true, wrow, w_stride, a, out, r);
    else
        kx_gemv4_codes(t, false, wrow, w_stride, a, out, r);
}

#if !KX_VNNI
/* ---- A few activation rows: each weight block unpacked once for up to 8 ----
 * Per block and activation row what is left is the dot products, one
 * widening, one conversion and one FMA: the block's codes and scale are
 * unpacked once for the tile, and the group-sum correction is prepared once
 * per tile (kg_few_prep) as the value the int16 sums start from: each
 * block's -sum in the low int16 of the int32 lane kx_block_sum puts it in,
 * so vpmaddwd's widening gives the same int32 lanes (S - sum) as the
 * subtraction after it in kx_tile_codes and kx_gemv4_*: a row gets the same
 * bits here as alone. |S| + |sum| <= 6096 + 32 * 127 fits int16. */

/* The tile's activations, block by block: for code types each block's nr
 * group-sum start values then its nr rows of qk activations, for Q8_0 its
 * nr rows of 32, so that the loops read them at constant offsets from one
 * pointer (rows n apart need a register each, which 8 rows run out of). */
KG_INLINE size_t kx_few_block_bytes(kt_type t, int nr)
{
    return (size_t)nr * (t == KT_Q8_0 ? BLK_Q8_0 : sizeof(__m256i) + (size_t)kg_block(t));
}

KG_INLINE size_t kg_few_row_bytes(kt_type t, int n)
{
    return (size_t)(n / kg_block(t)) * kx_few_block_bytes(t, 1);
}

KG_INLINE void kg_few_prep(kt_type t, const kern_acts *a, int j0, int nr, void *buf)
{
    const int qk = kg_block(t), nk = qk / 32, nb = a->n / qk, ng = a->n / KERN_GROUP;
    const size_t bb = kx_few_block_bytes(t, nr), n = (size_t)a->n;
    const int8_t *qa = (t == KT_Q2_0 && a->q64 ? a->q64 : a->q) + (size_t)j0 * n;
    const __m256i lo16 = _mm256_set1_epi32(0xFFFF);
    for (int b = 0; b < nb; b++) {
        uint8_t *pb = (uint8_t *)buf + (size_t)b * bb;
        if (t != KT_Q8_0) {
            for (int jj = 0; jj < nr; jj++) {
                __m256i s = kx_block_sum(t, a->gsum + (size_t)(j0 + jj) * ng + (size_t)b * nk);
                _mm256_store_si256(
                    (__m256i *)pb,
                    _mm256_and_si256(_mm256_sub_epi32(_mm256_setzero_si256(), s), lo16));
                pb += sizeof(__m256i);
            }
        }
        for (int jj = 0; jj < nr; jj++, pb += qk)
            memcpy(pb, qa + (size_t)jj * n + (size_t)b * qk, (size_t)qk);
    }
}

KG_INLINE void kx_few_codes(kt_type t, bool p64, int nr, const uint8_t *wrow, size_t w_stride,
                            const kern_acts *a, int j0, const uint8_t *prep, float *out, size_t ldo,
                            int r)
{
    const int qk = kg_block(t), nb = a->n / qk;
    const size_t bytes = kg_block_bytes(t), pf = 4 * w_stride, bb = kx_few_block_bytes(t, nr);
    const int every = bytes >= 64 ? 1 : (int)(64 / bytes);
    __m256 acc[KG_FEW_ROWS];
    for (int jj = 0; jj < nr; jj++)
        acc[jj] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t *p = wrow + (size_t)b * bytes, *pb = prep + (size_t)b * bb;
        if (b % every == 0) kx_prefetch(p + pf);
        __m256i c[8];
        __m256 d = _mm256_set1_ps(p64 ? kx_unpack_q2_0_p64(p, c) : kx_unpack(t, p, c));
        for (int jj = 0; jj < nr; jj++) {
            const int8_t *q = (const int8_t *)pb + (size_t)nr * 32 + (size_t)jj * qk;
            __m256i s = _mm256_load_si256((const __m256i *)pb + jj);
            for (int k = 0; k < qk / 32; k++)
                s = KX_DOT(s, c[k], _mm256_load_si256((const __m256i *)(q + 32 * k)));
            acc[jj] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(KX_I32(s)), d, acc[jj]);
        }
    }
    for (int jj = 0; jj < nr; jj++)
        out[(size_t)(j0 + jj) * ldo + r] = kx_hsum(acc[jj]) * a->scale[j0 + jj];
}

/* One Q8_0 block into nr rows' accumulators (activation rows 32 apart):
 * |w| and the scale once. */
KG_INLINE void kx_few_q8_block(int nr, const blk_q8_0 *w, const int8_t *q, __m256 *acc)
{
    __m256i x = _mm256_loadu_si256((const __m256i *)w->qs), ax = _mm256_sign_epi8(x, x);
    __m256 d = _mm256_set1_ps(kg_f16(w->d));
    for (int jj = 0; jj < nr; jj++) {
        __m256i s = _mm256_sign_epi8(_mm256_load_si256((const __m256i *)(q + 32 * jj)), x);
        __m256i i = KX_I32(KX_DOT(_mm256_setzero_si256(), ax, s));
        acc[jj] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), d, acc[jj]);
    }
}

/* Even and odd blocks in separate sums, as kx_gemv4_q8_0 and kg_tile_q8_0. */
KG_INLINE void kx_few_q8_0(int nr, const uint8_t *wrow, size_t w_stride, const kern_acts *a, int j0,
                           const uint8_t *prep, float *out, size_t ldo, int r)
{
    const int nb = a->n / BLK_Q8_0;
    const size_t pf = 4 * w_stride, qb = (size_t)nr * BLK_Q8_0;
    const blk_q8_0 *w = (const blk_q8_0 *)wrow;
    const int8_t *q = (const int8_t *)prep;
    __m256 acc0[KG_FEW_Q8], acc1[KG_FEW_Q8];
    for (int jj = 0; jj < nr; jj++)
        acc0[jj] = acc1[jj] = _mm256_setzero_ps();
    int b = 0;
    for (; b + 2 <= nb; b += 2) {
        kx_prefetch((const uint8_t *)(w + b) + pf);
        kx_few_q8_block(nr, w + b, q + (size_t)b * qb, acc0);
        kx_few_q8_block(nr, w + b + 1, q + (size_t)(b + 1) * qb, acc1);
    }
    if (b < nb) kx_few_q8_block(nr, w + b, q + (size_t)b * qb, acc0);
    for (int jj = 0; jj < nr; jj++)
        out[(size_t)(j0 + jj) * ldo + r] =
            kx_hsum(_mm256_add_ps(acc0[jj], acc1[jj])) * a->scale[j0 + jj];
}

KG_INLINE void kg_few_tile(kt_type t, int nr, const uint8_t *wrow, size_t w_stride,
                           const kern_acts *a, int j0, const void *prep, float *out, size_t ldo,
                           int r)
{
    const uint8_t *pp = (const uint8_t *)prep;
    if (t == KT_Q8_0) {
        assert(nr <= KG_FEW_Q8);
        kx_few_q8_0(nr, wrow, w_stride, a, j0, pp, out, ldo, r);
    } else if (t == KT_Q2_0 && a->q64)
        kx_few_codes(t, true, nr, wrow, w_stride, a, j0, pp, out, ldo, r);
    else
        kx_few_codes(t, false, nr, wrow, w_stride, a, j0, pp, out, ldo, r);
}
#endif
