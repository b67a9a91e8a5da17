/* The tensor type table. One row per type; nothing else in tern lists
 * types, so adding one is adding a row here (and its codec and kernel). */
#include "engine/types.h"

#include <strings.h>

static const ttype_info types[] = {
    /* id, name, weights per block, block bytes, ternary, binary, codecs, kernels */
    {KT_F32, "f32", 1, 4, false, false, kt_to_float, kt_from_float, kern_ref_ops},
    {KT_F16, "f16", 1, 2, false, false, kt_to_float, kt_from_float, kern_ref_ops},
    {KT_BF16, "bf16", 1, 2, false, false, kt_to_float, kt_from_float, kern_ref_ops},
    {KT_Q8_0, "q8_0", BLK_Q8_0, sizeof(blk_q8_0), false, false, kt_to_float, kt_from_float,
     kern_ref_ops},
    {KT_TQ2_0, "tq2_0", BLK_TQ2_0, sizeof(blk_tq2_0), true, false, kt_to_float, kt_from_float,
     kern_ref_ops},
    {KT_TQ1_0, "tq1_0", BLK_TQ1_0, sizeof(blk_tq1_0), true, false, kt_to_float, kt_from_float,
     kern_ref_ops},
    {KT_Q2_0, "q2_0", BLK_Q2_0, sizeof(blk_q2_0), true, false, kt_to_float, kt_from_float,
     kern_ref_ops},
    {KT_Q1_0, "q1_0", BLK_Q1_0, sizeof(blk_q1_0), false, true, kt_to_float, kt_from_float,
     kern_ref_ops},
};

#define N_TYPES ((int)(sizeof types / sizeof types[0]))

const ttype_info *ttype_get(kt_type id)
{
    for (int i = 0; i < N_TYPES; i++)
        if (types[i].id == id) return &types[i];
    return NULL;
}

const ttype_info *ttype_by_name(const char *name)
{
    if (!name) return NULL;
    for (int i = 0; i < N_TYPES; i++)
        if (strcasecmp(types[i].name, name) == 0) return &types[i];
    return NULL;
}

int ttype_count(void)
{
    return N_TYPES;
}

const ttype_info *ttype_at(int i)
{
    return i >= 0 && i < N_TYPES ? &types[i] : NULL;
}

size_t ttype_row_bytes(const ttype_info *t, int64_t n)
{
    return (size_t)(n / t->block) * (size_t)t->block_bytes;
}

double ttype_bits_per_weight(const ttype_info *t)
{
    return 8.0 * t->block_bytes / t->block;
}
