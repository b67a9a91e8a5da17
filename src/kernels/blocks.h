/* Tensor block layouts, byte for byte as ggml stores them (ggml-common.h),
 * and the scalar codecs between blocks and floats.
 *
 * Every quantized type stores a row as consecutive blocks; a block covers
 * BLK_<T> weights. docs/model-format.md draws each layout. */
#ifndef TERN_KERNELS_BLOCKS_H
#define TERN_KERNELS_BLOCKS_H

#include <stddef.h>
#include <stdint.h>

/* ggml's type ids: these numbers are what GGUF files store. */
typedef enum {
    KT_F32 = 0,
    KT_F16 = 1,
    KT_Q8_0 = 8,
    KT_BF16 = 30,
    KT_TQ1_0 = 34,
    KT_TQ2_0 = 35,
    KT_Q1_0 = 41,
    KT_Q2_0 = 42,
} kt_type;

/* One past the largest id above: the size of the type table (traits.c). */
#define KT_ID_END 43

typedef uint16_t kt_f16;  /* IEEE binary16 bits */
typedef uint16_t kt_bf16; /* bfloat16 bits */

#define BLK_Q8_0 32
typedef struct {
    kt_f16 d;            /* scale */
    int8_t qs[BLK_Q8_0]; /* w = qs[i] * d */
} blk_q8_0;              /* 34 bytes, 8.5 bits/weight */

#define BLK_TQ2_0 256
typedef struct {
    uint8_t qs[BLK_TQ2_0 / 4]; /* 2-bit codes c = w + 1 in {0,1,2}; see blocks.c for order */
    kt_f16 d;
} blk_tq2_0; /* 66 bytes, 2.0625 bits/weight */

#define BLK_TQ1_0 256
typedef struct {
    uint8_t qs[(BLK_TQ1_0 - 4 * BLK_TQ1_0 / 64) / 5]; /* 48 bytes, 5 trits each (240 weights) */
    uint8_t qh[BLK_TQ1_0 / 64];                       /* 4 bytes, 4 trits each (16 weights) */
    kt_f16 d;
} blk_tq1_0; /* 54 bytes, 1.6875 bits/weight */

#define BLK_Q2_0 64
typedef struct {
    kt_f16 d;
    uint8_t qs[BLK_Q2_0 / 4]; /* weight j: bits 2*(j%4) of byte j/4, w = c - 1 in {-1,0,1,2} */
} blk_q2_0;                   /* 18 bytes, 2.25 bits/weight */

#define BLK_Q1_0 128
typedef struct {
    kt_f16 d;
    uint8_t qs[BLK_Q1_0 / 8]; /* weight j: bit j%8 of byte j/8; 1 -> +d, 0 -> -d */
} blk_q1_0;                   /* 18 bytes, 1.125 bits/weight */

_Static_assert(sizeof(blk_q8_0) == 34, "blk_q8_0 layout");
_Static_assert(sizeof(blk_tq2_0) == 66, "blk_tq2_0 layout");
_Static_assert(sizeof(blk_tq1_0) == 54, "blk_tq1_0 layout");
_Static_assert(sizeof(blk_q2_0) == 18, "blk_q2_0 layout");
_Static_assert(sizeof(blk_q1_0) == 18, "blk_q1_0 layout");

/* The most weights in one block (TQ1_0, TQ2_0): sizes the codecs' per-block
 * code buffers. The type table's rows are tested against it. */
#define KT_BLOCK_MAX 256

/* Half and bfloat16 conversions (round to nearest even). */
float kt_f16_to_f32(kt_f16 h);
kt_f16 kt_f32_to_f16(float f);
float kt_bf16_to_f32(kt_bf16 h);
kt_bf16 kt_f32_to_bf16(float f);

/* Block codecs. n is the number of weights, a multiple of the block size.
 * from_float picks each block's scale the way ggml's reference quantizer
 * does (absmax for Q8_0/TQ*_0/Q2_0, mean|w| for Q1_0); values already on a
 * block's grid come back exactly. */
void kt_to_float(kt_type t, const void *src, float *dst, int64_t n);
void kt_from_float(kt_type t, const float *src, void *dst, int64_t n);

/* Encode ternary/binary weights that were chosen elsewhere (the quantizers):
 * t[i] in {-1,0,+1} (Q2_0 also +2; Q1_0: t > 0 is +1, anything else -1;
 * Q8_0: any int8) and one scale per block. Exact: no second rounding beyond
 * storing the scale as f16. */
void kt_pack_ternary(kt_type t, const int8_t *tern, const float *block_scales, void *dst,
                     int64_t n);

/* One block of a code type (TQ2_0, TQ1_0, Q2_0, Q1_0) as codes c = w + 1 in
 * element order (ternary 0..2, Q2_0 0..3, Q1_0 0 or 2) and its scale.
 * Returns the number of codes written (the block size), 0 for other types. */
int kt_unpack_codes(kt_type t, const void *blk, uint8_t *codes, float *d);

#endif
