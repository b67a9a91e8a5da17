/* What every SIMD level shares: its names, the tile and chunk sizes, the
 * types' compile-time block sizes, the scalar tail of the float kernels, and
 * the GEMM driver (chunks of weight rows that stay in L2, tiles of
 * activation rows, one weight row at a time into the tile), then the
 * per-type entry points and the kern_ops table of the level.
 *
 * kern_x86.h and kern_neon.h include this first, after defining
 *   KG_PREFIX, KG_ISA   the level's exported name prefix and kern_isa value,
 * and then define the four functions declared below: the level's f16 to
 * float and its tile kernels (Q8_0; F16/BF16/F32; every 2-bit-code type),
 * each writing out[(j0 + jj) * ldo + r] for jj < nr.
 * Each compiled level includes it once, so the static names do not clash. */
#include <assert.h>
#include <stdbool.h>
#include <string.h>

#include "kernels/kern_isa.h"
#include "kernels/traits.h"

#define KG_TILE 4                /* activation rows per tile */
#define KG_L2_BYTES (256 * 1024) /* weight bytes kept hot while tiles pass */

#define KG_INLINE static inline __attribute__((always_inline))
#define KG_CAT2(a, b) a##b
#define KG_CAT(a, b) KG_CAT2(a, b)
#define KG_NAME(x) KG_CAT(KG_PREFIX, x)

/* The level's part. */
KG_INLINE float kg_f16(kt_f16 h);
KG_INLINE void kg_tile_q8_0(int nr, const uint8_t *wrow, const kern_acts *a, int j0, float *out,
                            size_t ldo, int r);
KG_INLINE void kg_tile_float(kt_type t, int nr, const uint8_t *w, const kern_acts *a, int j0,
                             float *out, size_t ldo, int r);
KG_INLINE void kg_tile_codes(kt_type t, int nr, const uint8_t *wrow, const kern_acts *a, int j0,
                             float *out, size_t ldo, int r);
#ifdef KG_FLOAT_ROWS
/* A level may also tile float weights by rows: nw <= KG_FLOAT_ROWS rows from r, whose
 * out[(j0 + jj) * ldo + r + i]. Then kg_tile_float goes unused. */
KG_INLINE void kg_tile_float_rows(kt_type t, int nw, int nr, const uint8_t *w, size_t w_stride,
                                  const kern_acts *a, int j0, float *out, size_t ldo, int r);
#endif

#ifdef KG_PANEL
/* A level may also run float weights against many activation rows (prefill,
 * the vision encoder's patches) as a packed-panel GEMM, see kg_gemm_panel:
 *   kg_pack_float: weight rows r..r+nw-1 (nw <= KG_PANEL_NR), columns
 *     k0..k0+kc-1, widened to float and transposed into wp[k * KG_PANEL_NR + i],
 *     rows past nw zero;
 *   kg_panel_tile: activation rows j0..j0+mr-1 (mr <= KG_PANEL_MR) times the
 *     packed panel into out[(j0 + jj) * ldo + r + i] for i < nw, adding to what
 *     is there unless first. */
KG_INLINE void kg_pack_float(kt_type t, const uint8_t *w, size_t w_stride, int nw, int k0, int kc,
                             float *wp);
KG_INLINE void kg_panel_tile(int mr, int nw, const float *x, size_t ldx, const float *wp, int kc,
                             bool first, float *out, size_t ldo);
#endif

#if KG_GEMV4
/* Optional: four weight rows r..r+3 (w_stride apart) times the one
 * activation row, into out[r..r+3]; for Q8_0 and the code types. */
KG_INLINE void kg_gemv4(kt_type t, const uint8_t *wrow, size_t w_stride, const kern_acts *a,
                        float *out, int r);
#endif

#ifdef KG_FEW
/* Optional: a few activation rows (decode steps of several streams) of Q8_0
 * and the code types, see kg_gemm_few:
 *   kg_few_row_bytes: what kg_few_prep lays out per activation row of n;
 *   kg_few_prep: activation rows j0..j0+nr-1 laid out in buf for the tile
 *     (nr * kg_few_row_bytes bytes, 32-byte aligned);
 *   kg_few_tile: weight row r (its rows w_stride apart, for prefetching)
 *     times those rows, read from prep, into out[(j0 + jj) * ldo + r]. */
KG_INLINE size_t kg_few_row_bytes(kt_type t, int n);
KG_INLINE void kg_few_prep(kt_type t, const kern_acts *a, int j0, int nr, void *buf);
KG_INLINE void kg_few_tile(kt_type t, int nr, const uint8_t *wrow, size_t w_stride,
                           const kern_acts *a, int j0, const void *prep, float *out, size_t ldo,
                           int r);
#endif

/* kg_block and kg_block_bytes restate the type table's block and block bytes
 * of Q8_0 and the code types as compile-time switches: the type is a
 * constant in each kg_gemm_<type>, so they fold to constants and the block
 * loops unroll, which a lookup in traits.c would prevent. KG_NAME(ops)
 * asserts they agree with the table each time it hands out a kernel. */
KG_INLINE int kg_block(kt_type t)
{
    switch (t) {
    case KT_TQ2_0: return BLK_TQ2_0;
    case KT_TQ1_0: return BLK_TQ1_0;
    case KT_Q2_0: return BLK_Q2_0;
    case KT_Q1_0: return BLK_Q1_0;
    default: return BLK_Q8_0;
    }
}

KG_INLINE size_t kg_block_bytes(kt_type t)
{
    switch (t) {
    case KT_TQ2_0: return sizeof(blk_tq2_0);
    case KT_TQ1_0: return sizeof(blk_tq1_0);
    case KT_Q2_0: return sizeof(blk_q2_0);
    case KT_Q1_0: return sizeof(blk_q1_0);
    default: return sizeof(blk_q8_0);
    }
}

/* Float weight i of a row (F16, BF16 or F32), for the tails of the float
 * tile kernels that are shorter than a vector. */
KG_INLINE float kg_load1(kt_type t, const uint8_t *w, int i)
{
    uint16_t h;
    float f;
    switch (t) {
    case KT_F16: memcpy(&h, w + 2 * (size_t)i, 2); return kg_f16(h);
    case KT_BF16: {
        memcpy(&h, w + 2 * (size_t)i, 2);
        uint32_t u = (uint32_t)h << 16;
        memcpy(&f, &u, 4);
        return f;
    }
    default: memcpy(&f, w + 4 * (size_t)i, 4); return f;
    }
}

KG_INLINE void kg_tile(kt_type t, int nr, const uint8_t *wrow, const kern_acts *a, int j0,
                       float *out, size_t ldo, int r)
{
    if (t == KT_Q8_0)
        kg_tile_q8_0(nr, wrow, a, j0, out, ldo, r);
    else if (t == KT_F16 || t == KT_BF16 || t == KT_F32)
        kg_tile_float(t, nr, wrow, a, j0, out, ldo, r);
    else
        kg_tile_codes(t, nr, wrow, a, j0, out, ldo, r);
}

#ifdef KG_FLOAT_ROWS
/* Float types where the level has kg_tile_float_rows: tiles of weight rows too. */
#define KG_FR(NW, NR) kg_tile_float_rows(t, NW, NR, wrow, w_stride, a, j0, out, ldo, r)
#define KG_FR_NR(NW)                                                                               \
    switch (nr) {                                                                                  \
    case 4: KG_FR(NW, 4); break;                                                                   \
    case 3: KG_FR(NW, 3); break;                                                                   \
    case 2: KG_FR(NW, 2); break;                                                                   \
    default: KG_FR(NW, 1); break;                                                                  \
    }
_Static_assert(KG_FLOAT_ROWS == 3, "kg_gemm_float's switch unrolls up to 3 weight rows");

KG_INLINE void kg_gemm_float(kt_type t, const uint8_t *wb, size_t w_stride, int rs, int re,
                             const kern_acts *a, float *out, size_t ldo)
{
    for (int j0 = 0; j0 < a->rows; j0 += KG_TILE) {
        int nr = a->rows - j0 < KG_TILE ? a->rows - j0 : KG_TILE;
        for (int r = rs; r < re; r += KG_FLOAT_ROWS) {
            const uint8_t *wrow = wb + (size_t)r * w_stride;
            switch (re - r < KG_FLOAT_ROWS ? re - r : KG_FLOAT_ROWS) { /* constant shapes */
            case 3: KG_FR_NR(3) break;
            case 2: KG_FR_NR(2) break;
            default: KG_FR_NR(1) break;
            }
        }
    }
}
#endif

#ifdef KG_PANEL
/* Float weights against at least KG_PANEL_MIN activation rows: compute-bound,
 * so the weights are widened once per panel of KG_PANEL_NR rows and
 * KG_PANEL_KC columns into float panels on the stack, which every tile of
 * KG_PANEL_MR activation rows then reads with whole-vector loads while each
 * activation is broadcast: no conversion, no horizontal sum in the inner loop. Each output is one
 * chain of FMAs in k order, carried through out between column blocks, so its bits do not depend on
 * the tiling or on how rows are split; they differ (by rounding) from the few-row tiles' lane sums,
 * so a row can change in its last bits when its batch crosses KG_PANEL_MIN rows. */
#define KG_PANEL_NR 16
#define KG_PANEL_MR 6
#define KG_PANEL_KC 256
#define KG_PANEL_NP                                                                                \
    4 /* panels packed together (64 KB, in L2): a tile of activations                              \
       * read once serves all four from L1 (~9 % faster than one) */
#define KG_PANEL_MIN 16

#define KG_PT(MR)                                                                                  \
    kg_panel_tile(MR, nw, x + (size_t)j0 * n, (size_t)n,                                           \
                  wp + (size_t)p * KG_PANEL_KC * KG_PANEL_NR, kc, k0 == 0,                         \
                  out + (size_t)j0 * ldo + rp, ldo)
KG_INLINE void kg_gemm_panel(kt_type t, const uint8_t *wb, size_t w_stride, int r0, int r1,
                             const kern_acts *a, float *out, size_t ldo)
{
    _Alignas(64) float wp[KG_PANEL_NP * KG_PANEL_KC * KG_PANEL_NR];
    const int n = a->n, m = a->rows;
    for (int r = r0; r < r1; r += KG_PANEL_NP * KG_PANEL_NR) {
        int np = (r1 - r + KG_PANEL_NR - 1) / KG_PANEL_NR;
        np = np < KG_PANEL_NP ? np : KG_PANEL_NP;
        for (int k0 = 0; k0 < n; k0 += KG_PANEL_KC) {
            int kc = n - k0 < KG_PANEL_KC ? n - k0 : KG_PANEL_KC;
            for (int p = 0; p < np; p++) {
                int rp = r + p * KG_PANEL_NR, nw = r1 - rp < KG_PANEL_NR ? r1 - rp : KG_PANEL_NR;
                kg_pack_float(t, wb + (size_t)rp * w_stride, w_stride, nw, k0, kc,
                              wp + (size_t)p * KG_PANEL_KC * KG_PANEL_NR);
            }
            const float *x = a->f + k0;
            for (int j0 = 0; j0 < m; j0 += KG_PANEL_MR)
                for (int p = 0; p < np; p++) {
                    int rp = r + p * KG_PANEL_NR,
                        nw = r1 - rp < KG_PANEL_NR ? r1 - rp : KG_PANEL_NR;
                    switch (m - j0 < KG_PANEL_MR ? m - j0 : KG_PANEL_MR) { /* constant shapes */
                    case 6: KG_PT(6); break;
                    case 5: KG_PT(5); break;
                    case 4: KG_PT(4); break;
                    case 3: KG_PT(3); break;
                    case 2: KG_PT(2); break;
                    default: KG_PT(1); break;
                    }
                }
        }
    }
}
_Static_assert(KG_PANEL_MR == 6, "kg_gemm_panel's switch unrolls tiles of up to 6 rows");
#endif

#ifdef KG_FEW
/* 2 to KG_FEW_MAX activation rows of Q8_0 or a code type: a weight row is
 * read and each of its blocks unpacked into registers once for a tile of up
 * to KG_FEW_ROWS activation rows (KG_FEW_Q8 for Q8_0, whose two
 * accumulators per row fill the registers sooner), reading the tile's
 * activations and group sums from a copy laid out once per pass
 * (kg_few_prep). Rows too long for two of them in KG_FEW_PREP take kg_tile's
 * tiles; false then. */
#define KG_FEW_MAX 15
#define KG_FEW_ROWS 8
#define KG_FEW_Q8 4
#define KG_FEW_PREP (64 * 1024) /* 8 rows of 5376 Q2_0 or 7168 TQ2_0 columns */
#define KG_FT(NR) kg_few_tile(t, NR, wrow, w_stride, a, j0, prep, out, ldo, r)
KG_INLINE bool kg_gemm_few(kt_type t, const uint8_t *wb, size_t w_stride, int r0, int r1,
                           const kern_acts *a, float *out, size_t ldo)
{
    _Alignas(32) uint8_t prep[KG_FEW_PREP];
    const int most = t == KT_Q8_0 ? KG_FEW_Q8 : KG_FEW_ROWS;
    const int fit = (int)(KG_FEW_PREP / kg_few_row_bytes(t, a->n));
    const int tile = fit < most ? fit : most;
    if (tile < 2) return false;
    int chunk = (int)(KG_L2_BYTES / (w_stride ? w_stride : 1));
    if (chunk < 1) chunk = 1;
    for (int rs = r0; rs < r1; rs += chunk) {
        int re = rs + chunk < r1 ? rs + chunk : r1;
        for (int j0 = 0; j0 < a->rows; j0 += tile) {
            int nr = a->rows - j0 < tile ? a->rows - j0 : tile;
            kg_few_prep(t, a, j0, nr, prep);
            for (int r = rs; r < re; r++) {
                const uint8_t *wrow = wb + (size_t)r * w_stride;
                switch (t == KT_Q8_0 ? 0 : nr) { /* constant tile sizes, so the loops unroll */
                case 8: KG_FT(8); break;
                case 7: KG_FT(7); break;
                case 6: KG_FT(6); break;
                case 5: KG_FT(5); break;
                case 0:
                    switch (nr) {
                    case 4: KG_FT(4); break;
                    case 3: KG_FT(3); break;
                    case 2: KG_FT(2); break;
                    default: KG_FT(1); break;
                    }
                    break;
                case 4: KG_FT(4); break;
                case 3: KG_FT(3); break;
                case 2: KG_FT(2); break;
                default: KG_FT(1); break;
                }
            }
        }
    }
    return true;
}
_Static_assert(KG_FEW_ROWS == 8 && KG_FEW_Q8 == 4, "kg_gemm_few's switch unrolls up to 8 rows");
#endif

KG_INLINE void kg_gemm(kt_type t, const void *w, size_t w_stride, int r0, int r1,
                       const kern_acts *a, float *out, size_t ldo)
{
    const uint8_t *wb = (const uint8_t *)w;
#ifdef KG_PANEL
    if ((t == KT_F16 || t == KT_BF16 || t == KT_F32) && a->rows >= KG_PANEL_MIN) {
        kg_gemm_panel(t, wb, w_stride, r0, r1, a, out, ldo);
        return;
    }
#endif
#ifdef KG_FLOAT_ROWS
    if (t == KT_F16 || t == KT_BF16 || t == KT_F32) {
        int chunk = (int)(KG_L2_BYTES / (w_stride ? w_stride : 1));
        chunk = chunk < KG_FLOAT_ROWS ? KG_FLOAT_ROWS : chunk - chunk % KG_FLOAT_ROWS;
        for (int rs = r0; rs < r1; rs += chunk)
            kg_gemm_float(t, wb, w_stride, rs, rs + chunk < r1 ? rs + chunk : r1, a, out, ldo);
        return;
    }
#endif
    int chunk = (int)(KG_L2_BYTES / (w_stride ? w_stride : 1));
    if (chunk < 1) chunk = 1;
#ifdef KG_FEW
    if (a->rows >= 2 && a->rows <= KG_FEW_MAX && t != KT_F16 && t != KT_BF16 && t != KT_F32 &&
        kg_gemm_few(t, wb, w_stride, r0, r1, a, out, ldo))
        return;
#endif
#if KG_GEMV4
    /* Decode (one activation row) streams the weights once: four rows per
     * pass give independent chains and share the activation loads. */
    if (a->rows == 1 && t != KT_F16 && t != KT_BF16 && t != KT_F32) {
        int r = r0;
        for (; r + 4 <= r1; r += 4)
            kg_gemv4(t, wb + (size_t)r * w_stride, w_stride, a, out, r);
        for (; r < r1; r++)
            kg_tile(t, 1, wb + (size_t)r * w_stride, a, 0, out, ldo, r);
        return;
    }
#endif
    for (int rs = r0; rs < r1; rs += chunk) {
        int re = rs + chunk < r1 ? rs + chunk : r1;
        for (int j0 = 0; j0 < a->rows; j0 += KG_TILE) {
            int nr = a->rows - j0 < KG_TILE ? a->rows - j0 : KG_TILE;
            for (int r = rs; r < re; r++) {
                const uint8_t *wrow = wb + (size_t)r * w_stride;
                switch (nr) { /* constant tile sizes, so the loops unroll */
                case 4: kg_tile(t, 4, wrow, a, j0, out, ldo, r); break;
                case 3: kg_tile(t, 3, wrow, a, j0, out, ldo, r); break;
                case 2: kg_tile(t, 2, wrow, a, j0, out, ldo, r); break;
                default: kg_tile(t, 1, wrow, a, j0, out, ldo, r); break;
                }
            }
        }
    }
}

_Static_assert(KG_TILE == 4, "kg_gemm's switch unrolls tiles of up to 4 rows");

#define KG_GEMM(T, tag)                                                                            \
    static void kg_gemm_##tag(const void *w, size_t w_stride, int r0, int r1, const kern_acts *a,  \
                              float *out, size_t ldo)                                              \
    {                                                                                              \
        kg_gemm(T, w, w_stride, r0, r1, a, out, ldo);                                              \
    }
KG_GEMM(KT_TQ2_0, tq2_0)
KG_GEMM(KT_TQ1_0, tq1_0)
KG_GEMM(KT_Q2_0, q2_0)
KG_GEMM(KT_Q1_0, q1_0)
KG_GEMM(KT_Q8_0, q8_0)
KG_GEMM(KT_F16, f16)
KG_GEMM(KT_BF16, bf16)
KG_GEMM(KT_F32, f32)

/* int8_acts: whether the kernel reads quantized activations or floats */
static const kern_ops kg_ops[] = {
    {KT_TQ2_0, KG_ISA, true, kg_gemm_tq2_0}, {KT_TQ1_0, KG_ISA, true, kg_gemm_tq1_0},
    {KT_Q2_0, KG_ISA, true, kg_gemm_q2_0},   {KT_Q1_0, KG_ISA, true, kg_gemm_q1_0},
    {KT_Q8_0, KG_ISA, true, kg_gemm_q8_0},   {KT_F16, KG_ISA, false, kg_gemm_f16},
    {KT_BF16, KG_ISA, false, kg_gemm_bf16},  {KT_F32, KG_ISA, false, kg_gemm_f32},
};

/* Whether the compile-time block sizes say what the type table says (the
 * float types' tiles use none). */
static inline bool kg_blocks_agree(kt_type t)
{
    const kt_traits *tr = kt_traits_of(t);
    if (!tr->ternary && !tr->binary && t != KT_Q8_0) return true;
    return kg_block(t) == tr->block && kg_block_bytes(t) == (size_t)tr->block_bytes;
}

const kern_ops *KG_NAME(ops)(kt_type t)
{
    for (size_t i = 0; i < sizeof kg_ops / sizeof kg_ops[0]; i++)
        if (kg_ops[i].type == t) {
            assert(kg_blocks_agree(t));
            return &kg_ops[i];
        }
    return NULL;
}
