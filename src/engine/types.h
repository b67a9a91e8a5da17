/* The engine's view of the tensor type table. The table itself, one row
 * per type, is kernels/traits.c; these are lookups over it. */
#ifndef TERN_ENGINE_TYPES_H
#define TERN_ENGINE_TYPES_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/traits.h"

typedef kt_traits ttype_info;

/* NULL for ids tern does not know. */
const ttype_info *ttype_get(kt_type id);
const ttype_info *ttype_by_name(const char *name); /* case-insensitive */

/* The known types in id order, for listings: ttype_at(0 .. ttype_count() - 1). */
int ttype_count(void);
const ttype_info *ttype_at(int i);

/* Bytes for n weights (n a multiple of the block), and bits per weight. */
size_t ttype_row_bytes(const ttype_info *t, int64_t n);
double ttype_bits_per_weight(const ttype_info *t);

#endif
