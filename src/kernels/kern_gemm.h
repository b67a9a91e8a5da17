/* The GEMM driver every SIMD level shares: chunks of weight rows that stay
 * in L2, tiles of activation rows, one weight row at a time into the tile,
 * then the per-type entry points and the kern_ops table of the level.
 *
 * kern_x86.h and kern_neon.h include this at their end, after defining:
 *   KG_TILE, KG_L2_BYTES      activation rows per tile, weight bytes kept hot
 *   KG_ISA, KG_NAME(x)        the level's kern_isa value and exported prefix
 *   KG_TILE_Q8_0, KG_TILE_FLOAT, KG_TILE_CODES
 *                             the level's tile kernels (Q8_0; F16/BF16/F32;
 *                             every 2-bit-code type), each writing
 *                             out[(j0 + jj) * ldo + r] for jj < nr
 *   KG_BLOCK(t), KG_BLOCK_BYTES(t)
 *                             the level's compile-time weights and bytes per
 *                             block of Q8_0 and the code types
 * Each compiled level includes it once, so the static names do not clash. */
#include <assert.h>
#include <stdbool.h>

#include "kernels/traits.h"

static inline __attribute__((always_inline)) void kg_tile(kt_type t, int nr, const uint8_t *wrow,
                                                          const kern_acts *a, int j0, float *out,
                                                          size_t ldo, int r)
{
    if (t == KT_Q8_0)
        KG_TILE_Q8_0(nr, wrow, a, j0, out, ldo, r);
    else if (t == KT_F16 || t == KT_BF16 || t == KT_F32)
        KG_TILE_FLOAT(t, nr, wrow, a, j0, out, ldo, r);
    else
        KG_TILE_CODES(t, nr, wrow, a, j0, out, ldo, r);
}

static inline __attribute__((always_inline)) void kg_gemm(kt_type t, const void *w, size_t w_stride,
                                                          int r0, int r1, const kern_acts *a,
                                                          float *out, size_t ldo)
{
    const uint8_t *wb = (const uint8_t *)w;
    int chunk = (int)(KG_L2_BYTES / (w_stride ? w_stride : 1));
    if (chunk < 1) chunk = 1;
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

/* Whether the level's compile-time block sizes say what the type table says
 * (the float types' tiles use none). */
static inline bool kg_blocks_agree(kt_type t)
{
    const kt_traits *tr = kt_traits_of(t);
    if (!tr->ternary && !tr->binary && t != KT_Q8_0) return true;
    return KG_BLOCK(t) == tr->block && KG_BLOCK_BYTES(t) == (size_t)tr->block_bytes;
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
