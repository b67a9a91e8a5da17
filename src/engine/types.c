/* Lookups over the tensor type table (kernels/traits.c), which is the one
 * place that states what a type is. Nothing here restates a type. */
#include "engine/types.h"

#include <strings.h>

const ttype_info *ttype_get(kt_type id)
{
    return kt_traits_of(id);
}

const ttype_info *ttype_by_name(const char *name)
{
    if (!name) return NULL;
    for (int id = 0; id < KT_ID_END; id++) {
        const ttype_info *t = kt_traits_of((kt_type)id);
        if (t && strcasecmp(t->name, name) == 0) return t;
    }
    return NULL;
}

int ttype_count(void)
{
    int n = 0;
    for (int id = 0; id < KT_ID_END; id++)
        n += kt_traits_of((kt_type)id) != NULL;
    return n;
}

const ttype_info *ttype_at(int i)
{
    for (int id = 0; id < KT_ID_END && i >= 0; id++) {
        const ttype_info *t = kt_traits_of((kt_type)id);
        if (t && i-- == 0) return t;
    }
    return NULL;
}

size_t ttype_row_bytes(const ttype_info *t, int64_t n)
{
    return (size_t)(n / t->block) * (size_t)t->block_bytes;
}

double ttype_bits_per_weight(const ttype_info *t)
{
    return 8.0 * t->block_bytes / t->block;
}
