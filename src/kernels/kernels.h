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
    /* Optional (NULL: absent): q with every 64 elements reordered by
     * kern_permute64. x86 Q2_0 kernels read it when present, as their
     * weights then unpack with two shifts and no shuffles. */
    const int8_t *q64;
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
typedef void (*kern_gemm_fn)(const void *w, size_t w_stride, int r0, int r1, const kern_acts *a,
                             float *out, size_t ldo);

typedef struct {
    kt_type type;
    kern_isa isa;
    bool int8_acts; /* true: needs quantized activations; false: float */
    kern_gemm_fn gemm;
} kern_ops;

/* Quantize one activation row of n floats (n % KERN_GROUP == 0):
 * q[i] = round(x[i] / scale) with scale = max|x| / 127, and the group sums. */
void kern_quantize_row(const float *x, int n, int8_t *q, int16_t *gsum, float *scale);

/* out[16 f + k] = q[4 k + f] within each 64 elements (f < 4, k < 16):
 * the order of Q2_0's 2-bit fields, field by field. n % 64 == 0. */
void kern_permute64(const int8_t *q, int n, int8_t *out);

/* The scalar reference kernels, one per type. */
const kern_ops *kern_ref_ops(kt_type t);

/* ---- Run-time selection (dispatch.c) ----
 *
 * kern_get(t) gives the fastest kernel this CPU runs for type t, falling back
 * level by level to the scalar reference, so it never returns NULL for a type
 * kern_ref_ops knows. The environment variable TERN_KERNELS=scalar|avx2|
 * avx512|avx512vnni|neon|dotprod caps the level (for tests and comparisons);
 * it is read once, on the first call. */
const kern_ops *kern_get(kt_type t);

/* The kernel of exactly this level, or NULL where this CPU or this build
 * lacks the level or the level has no kernel of its own for type t. */
const kern_ops *kern_get_isa(kt_type t, kern_isa isa);

/* The highest level this CPU runs (after the TERN_KERNELS cap), and names. */
kern_isa kern_best_isa(void);
bool kern_isa_supported(kern_isa isa); /* this CPU and build, ignoring the cap */
const char *kern_isa_name(kern_isa isa);

/* Activation quantization, vectorised. Bit-identical to kern_quantize_row. */
typedef void (*kern_quantize_fn)(const float *x, int n, int8_t *q, int16_t *gsum, float *scale);
kern_quantize_fn kern_get_quantize(void);             /* best, honouring the cap */
kern_quantize_fn kern_get_quantize_isa(kern_isa isa); /* NULL if unavailable */

/* f16 to f32 for a row of n values (any n), exact: every f16 is an f32.
 * Attention converts its f16 KV cache rows with it. The SIMD versions
 * (F16C, NEON fcvtl) give the reference's bits for every non-NaN input. */
typedef void (*kern_f16_row_fn)(const kt_f16 *x, float *y, size_t n);
void kern_f16_to_f32_row(const kt_f16 *x, float *y, size_t n); /* reference */
kern_f16_row_fn kern_get_f16_to_f32(void);                     /* best, honouring the cap */
kern_f16_row_fn kern_get_f16_to_f32_isa(kern_isa isa);         /* NULL if unavailable */

/* Attention's two float products over T rows of n floats, row t at
 * m + t * stride:
 *   dots: out[t] = dot(q, row t)            (scores of one query)
 *   wsum: out[i] = sum over t of w[t] * row t [i]   (weighted sum of values)
 * The SIMD versions add in a different order than the reference. */
typedef struct {
    void (*dots)(const float *q, const float *m, size_t stride, int T, int n, float *out);
    void (*wsum)(const float *w, const float *m, size_t stride, int T, int n, float *out);
    /* Full (bidirectional) attention of nq queries of one head over T keys:
     *   out_i = sum over t of softmax_t(scale * q_i . k_t) v_t
     * q row i at q + i * qs; the keys come transposed, k_t[d] = kt[d * kts + t];
     * value row t at v + t * vs; out row i at out + i * os; n is the head size.
     * scratch holds nq * (T + 1) floats. Blocked so each key and value read from cache
     * serves every query of the block; exp is kern_exp_approx's polynomial. */
    void (*block)(const float *q, size_t qs, const float *kt, size_t kts, const float *v, size_t vs,
                  int nq, int T, int n, float scale, float *out, size_t os, float *scratch);
} kern_attn_ops;
const kern_attn_ops *kern_get_attn(void);             /* best, honouring the cap */
const kern_attn_ops *kern_get_attn_isa(kern_isa isa); /* NULL if unavailable */

/* exp(x) by Cephes' degree-5 polynomial on the reduced argument (within 2 ulp
 * for x in [-87, 88], clamped outside): the operations the SIMD versions
 * repeat lane by lane, so that softmax and GELU vectorise without libm. */
float kern_exp_approx(float x);

/* GELU, tanh form, in place over n floats: x * sigmoid(2u) with
 * u = sqrt(2/pi) (x + 0.044715 x^3), which equals 0.5 x (1 + tanh(u)),
 * through kern_exp_approx. */
typedef void (*kern_gelu_fn)(float *x, size_t n);
void kern_gelu_row(float *x, size_t n);       /* reference */
kern_gelu_fn kern_get_gelu(void);             /* best, honouring the cap */
kern_gelu_fn kern_get_gelu_isa(kern_isa isa); /* NULL if unavailable */

/* SwiGLU, in place over n floats: g = SiLU(g) * u = g / (1 + exp(-g)) * u,
 * through kern_exp_approx (a gated MLP's activation, between its gate/up
 * and down matmuls). */
typedef void (*kern_swiglu_fn)(float *g, const float *u, size_t n);
void kern_swiglu_row(float *g, const float *u, size_t n); /* reference */
kern_swiglu_fn kern_get_swiglu(void);                     /* best, honouring the cap */
kern_swiglu_fn kern_get_swiglu_isa(kern_isa isa);         /* NULL if unavailable */

#endif
