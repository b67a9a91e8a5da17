/* Internal to src/kernels: the entry points of each ISA's kernel file.
 * dispatch.c is the only caller; it checks the CPU before calling any. */
#ifndef TERN_KERNELS_KERN_ISA_H
#define TERN_KERNELS_KERN_ISA_H

#include "kernels/kernels.h"

/* Each returns NULL for types the level has no kernel of its own for. */
const kern_ops *kern_avx2_ops(kt_type t);
const kern_ops *kern_avx512_ops(kt_type t);
const kern_ops *kern_avx512vnni_ops(kt_type t);
const kern_ops *kern_neon_ops(kt_type t);
const kern_ops *kern_dotprod_ops(kt_type t);

void kern_avx2_quantize_row(const float *x, int n, int8_t *q, int16_t *gsum, float *scale);
void kern_neon_quantize_row(const float *x, int n, int8_t *q, int16_t *gsum, float *scale);

void kern_avx2_f16_to_f32_row(const kt_f16 *x, float *y, size_t n);
void kern_neon_f16_to_f32_row(const kt_f16 *x, float *y, size_t n);

void kern_avx2_gelu_row(float *x, size_t n);
void kern_neon_gelu_row(float *x, size_t n);

void kern_avx2_swiglu_row(float *g, const float *u, size_t n);
void kern_neon_swiglu_row(float *g, const float *u, size_t n);

extern const kern_attn_ops kern_ref_attn, kern_avx2_attn, kern_neon_attn;

#endif
