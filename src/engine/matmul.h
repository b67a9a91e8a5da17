/* Linear layers on the thread pool: out = x * W^T for a weight matrix of any
 * tensor type and a batch of float activation rows.
 *
 * For integer weight types the activations are quantized to int8 once per
 * call (into the caller's scratch, no allocation), then the weight rows are
 * split over the pool's threads in chunks of 16 output rows (one 64-byte
 * cache line of out per activation row, so threads never write the same
 * line), handed out dynamically so a thread slowed by a neighbour does not
 * hold the others up. The kernel is kern_get(type): the fastest this CPU has.
 *
 * Typical use, per layer:
 *     mm_weight w = {KT_TQ2_0, data, n_out, n_in};    // at load time:
 *     if (mm_check(&w, err, sizeof err)) ...           //   refuse bad shapes
 *     scratch = aligned_alloc(64, mm_scratch_bytes(&w, max_rows));
 *     mm_matmul(pool, &w, x, rows, out, scratch);      // per step
 */
#ifndef TERN_ENGINE_MATMUL_H
#define TERN_ENGINE_MATMUL_H

#include <stddef.h>

#include "engine/pool.h"
#include "kernels/kernels.h"

typedef struct {
    kt_type type;
    const void *data; /* weight row 0; rows follow each other with no gap */
    int rows;         /* output features (weight rows) */
    int cols;         /* input features (row length, in weights) */
} mm_weight;

/* 0 if a kernel exists for the type and cols suits its block size
 * (a multiple of the block, and of 32 for integer types); else -1 and err. */
int mm_check(const mm_weight *w, char *err, size_t errlen);

/* Bytes of scratch mm_matmul needs for up to n activation rows (0 for float
 * weight types). The same scratch serves any weight with cols <= w->cols. */
size_t mm_scratch_bytes(const mm_weight *w, int n);

/* out[j * w->rows + r] = dot(weight row r, x[j * w->cols ...]) for j < n and
 * r < w->rows. x is n rows of w->cols floats. scratch is 64-byte aligned
 * and mm_scratch_bytes(w, n) long; out is best 64-byte aligned. p may be
 * NULL (runs on the calling thread). Returns 0, or -1 if mm_check fails. */
int mm_matmul(pool *p, const mm_weight *w, const float *x, int n, float *out, void *scratch);

/* Up to MM_MAX_PARTS weights on the same input (q, k and v; gate and up):
 * the activations are quantized once and every weight's rows are split in
 * one pool call, so a decode step pays one hand-off, not one per weight.
 * outs[i] as mm_matmul's out for ws[i]; scratch as for the largest of
 * them. Weights with different cols, or float with integer kernels, run
 * one after another. Returns 0, or -1 if mm_check fails for one. */
#define MM_MAX_PARTS 4
int mm_matmul_multi(pool *p, const mm_weight *const *ws, int nw, const float *x, int n,
                    float *const *outs, void *scratch);

/* Two weights of one shape on the same input (an MLP's gate and up): each
 * chunk computes the same output rows of both, then calls epi(ctx, r0, r1)
 * for those rows (of every activation row) while they are in cache. The
 * MLP's activation thus runs in the matmul's shares, not serially after
 * it. Weights that cannot share a job run one after the other, then epi
 * once over all rows. Returns 0, or -1 if mm_check fails for one. */
typedef void (*mm_rows_fn)(void *ctx, int r0, int r1);
int mm_matmul_pair(pool *p, const mm_weight *a, const mm_weight *b, const float *x, int n,
                   float *out_a, float *out_b, mm_rows_fn epi, void *epi_ctx, void *scratch);

#endif
