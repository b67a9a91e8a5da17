/* The tensor type table: one row per type, indexed by the type's id (as
 * ggml's type_traits is). It is the only place that states a type's name,
 * block size and bytes per block; everything else in tern asks it.
 * Adding a type is adding its id to kt_type and its block struct (blocks.h),
 * a row in traits.c, and its codec and kernels. */
#ifndef TERN_KERNELS_TRAITS_H
#define TERN_KERNELS_TRAITS_H

#include <stdbool.h>
#include <stdint.h>

#include "kernels/blocks.h"
#include "kernels/kernels.h"

typedef struct {
    kt_type id;       /* its own index in the table */
    const char *name; /* lower case, as ggml and the command line spell it: "tq2_0" */
    int block;        /* weights per block (1 for the float types) */
    int block_bytes;  /* bytes per block */
    bool ternary;     /* codes in {-1,0,+1} (Q2_0 may also hold +2) */
    bool binary;      /* codes in {-1,+1} */
    void (*to_float)(kt_type t, const void *src, float *dst, int64_t n);
    void (*from_float)(kt_type t, const float *src, void *dst, int64_t n);
    const kern_ops *(*ref_ops)(kt_type t); /* scalar reference dot/GEMM */
} kt_traits;

/* The row of type t; NULL for ids tern does not know (every id below
 * KT_ID_END that has no row, and every id outside [0, KT_ID_END)). */
const kt_traits *kt_traits_of(kt_type t);

#endif
