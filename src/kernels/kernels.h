/* Matrix kernels: weights of any block type times activation rows.
 *
 * Integer types (Q8_0, TQ2_0, TQ1_0, Q2_0, Q1_0) multiply int8 activations
 * quantized per row (absmax) with the sum of each 32-element group kept
 * beside them, so a ternary code c = w + 1 gives
 *     dot(w, a) = sum(c * a) - sum(a)
 * in int32, times the block's weight scale and the row's activation scale.
 * Float types (F32, F16, BF16) multiply float activations directly.
 *
 * Every type has a scalar reference; SIMD versions are picked at run time
 * from the CPU's features and must agree with the reference. */
#ifndef TERN_KERNELS_KERNELS_H
#define TERN_KERNELS_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/blocks.h"

#define KERN_GROUP 32 /* activation sums are kept per 32 elements */

/* A batch of activation rows, each n long. Integer kernels read q/gsum/scale;
 * float kernels read f. Whoever fills it owns the memory. */
typedef struct {
    int n;               /* row length; a multiple of KERN_GROUP for integer kernels */
    int rows;            /* number of activation rows */
    const float *f;      /* rows * n floats (float kernels) */
    const int8_t *q;     /* rows * n int8 values, x ~= q * scale */
    const int16_t *gsum; /* rows * (n / KERN_GROUP) group sums of q */
    const float *scale;  /* rows scales */
} kern_acts;

/* Instruction-set levels, lowest first. */
typedef enum {
    KERN_ISA_SCALAR = 0,
    KERN_ISA_AVX2,
    KERN_ISA_AVX512,
    KERN_ISA_AVX512VNNI,
    KERN_ISA_NEON,
    KERN_ISA_NEON_DOTPROD,
} kern_isa;

/* out[j * ldo + r] = dot(weight row r, activation row j)
 *   for r in [r0, r1) and j in [0, a->rows).
 * w points at weight row 0; w_stride is the bytes between weight rows. */
typedef void (*kern_gemm_fn)(const void *w, size_t w_stride, int r0, int r1,
                             const kern_acts *a, float *out, size_t ldo);

typedef struct {
    kt_type type;
    kern_isa isa;
    bool int8_acts;   /* true: needs quantized activations; false: float */
    kern_gemm_fn gemm;
} kern_ops;

/* Quantize one activation row of n floats (n % KERN_GROUP == 0):
 * q[i] = round(x[i] / scale) with scale = max|x| / 127, and the group sums. */
void kern_quantize_row(const float *x, int n, int8_t *q, int16_t *gsum, float *scale);

/* The scalar reference kernels, one per type. */
const kern_ops *kern_ref_ops(kt_type t);

#endif
