/* Post-training quantizers: ternary (k-means, BitNet absmean, TWN), binary
 * and the plain conversions, ending in a type's blocks (docs/model-format.md).
 *
 * Ternarizers take a vector of weights and choose t[i] in {-1,0,+1} and
 * one scale s, so that w ~= s * t. A matrix is done per row (one scale per
 * output row) or per tensor (one scale for all). Errors are relative RMS:
 * ||W - What|| / ||W|| (0 for an all-zero W). */
#ifndef TERN_ENGINE_QUANT_H
#define TERN_ENGINE_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/blocks.h"

typedef enum {
    QUANT_KMEANS = 0, /* symmetric 3-centroid k-means (the paper's init) */
    QUANT_ABSMEAN,    /* BitNet b1.58: s = mean|w|, t = round(clip(w/s, -1, 1)) */
    QUANT_TWN,        /* threshold 0.7 mean|w|, s = mean of |w| above it */
} quant_method;

#define QUANT_KMEANS_MAX_ROUNDS 30

const char *quant_method_name(quant_method m);
/* Returns false for an unknown name. */
bool quant_method_by_name(const char *name, quant_method *out);

/* K-means on n weights: m = mean|w|, then m <- mean(|w_i| : |w_i| > m/2)
 * until m stops changing or max_rounds updates. t[i] = sign(w_i) where
 * |w_i| > m/2, else 0; returns the scale m. If round_err is not NULL it
 * gets the relative error after each round: round_err[0] for the initial
 * m, round_err[k] after update k (max_rounds + 1 entries); *rounds (if not
 * NULL) gets the number of updates made. The error never increases from
 * one round to the next (Lloyd's algorithm). */
float quant_kmeans(const float *w, int64_t n, int max_rounds, int8_t *t, double *round_err,
                   int *rounds);
float quant_absmean(const float *w, int64_t n, int8_t *t);
float quant_twn(const float *w, int64_t n, int8_t *t);
/* Binary: t = +1 for w >= 0 else -1, scale mean|w|. */
float quant_binary(const float *w, int64_t n, int8_t *t);

/* One method over a rows x n matrix: t gets rows * n values, row_scale one
 * scale per row (all equal when per_tensor). binary=true ignores m and
 * binarizes. Returns the relative error of row_scale * t. */
double quant_matrix_ternary(const float *w, int64_t rows, int64_t n, quant_method m,
                            bool per_tensor, bool binary, int8_t *t, float *row_scale);

/* ||w - w_hat|| / ||w|| over n values (0 when w is all zero). */
double quant_rel_error(const float *w, const float *w_hat, int64_t n);

/* Quantize a rows x n float matrix into type T's bytes (rows *
 * ttype_row_bytes each). Ternary types (TQ2_0, TQ1_0, Q2_0) use method m,
 * Q1_0 binarizes per row, Q8_0/F16/BF16/F32 convert with the type's
 * from_float. *rel_err (may be NULL) gets the error of what was stored,
 * measured by decoding it again. Returns 0, or -1 with a message (row
 * length not a multiple of the block, unknown type, out of memory). */
int quant_to_type(const float *w, int64_t rows, int64_t n, kt_type type, quant_method m,
                  bool per_tensor, void *dst, double *rel_err, char *err, size_t errlen);

/* The type a matrix with rows of row_len weights gets when `want` is
 * asked for: want itself if row_len fits its block, else a fallback
 * (TQ2_0/TQ1_0 -> Q2_0 -> Q8_0; Q1_0 -> Q8_0). Returns false when nothing
 * fits (the matrix should keep its type). */
bool quant_pick_type(kt_type want, int64_t row_len, kt_type *got);

/* llama.cpp's general.file_type (llama_ftype) for a file mostly of type t,
 * or -1. */
int quant_llama_ftype(kt_type t);

#endif
