/* The one table that describes every tensor type tern reads or writes.
 * Adding a type is adding a row in types.c. */
#ifndef TERN_ENGINE_TYPES_H
#define TERN_ENGINE_TYPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/blocks.h"
#include "kernels/kernels.h"

typedef struct {
    kt_type id;       /* ggml type id, as stored in GGUF */
    const char *name; /* lower case, as on the command line: "tq2_0" */
    int block;        /* weights per block */
    int block_bytes;  /* bytes per block */
    bool ternary;     /* codes in {-1,0,+1} (Q2_0 may also hold +2) */
    bool binary;
    void (*to_float)(kt_type t, const void *src, float *dst, int64_t n);
    void (*from_float)(kt_type t, const float *src, void *dst, int64_t n);
    const kern_ops *(*ref_ops)(kt_type t); /* scalar reference dot/GEMM */
} ttype_info;

/* NULL for ids tern does not know. */
const ttype_info *ttype_get(kt_type id);
const ttype_info *ttype_by_name(const char *name); /* case-insensitive */
int ttype_count(void);
const ttype_info *ttype_at(int i);

/* Bytes for n weights (n a multiple of the block), and bits per weight. */
size_t ttype_row_bytes(const ttype_info *t, int64_t n);
double ttype_bits_per_weight(const ttype_info *t);

#endif
