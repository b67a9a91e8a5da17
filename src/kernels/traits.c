/* The tensor type table (see traits.h). Rows are placed by id, so a
 * lookup is an index; the ids between are empty rows (name NULL). */
#include "kernels/traits.h"

/* Every row shares the codecs and reference kernels of blocks.c and
 * kern_ref.c, which switch on the type themselves; a type whose codec
 * lives elsewhere would point there. */
#define CODECS kt_to_float, kt_from_float, kern_ref_ops

static const kt_traits traits[KT_ID_END] = {
    /* id, name, weights per block, bytes per block, ternary, binary, codecs */
    [KT_F32] = {KT_F32, "f32", 1, sizeof(float), false, false, CODECS},
    [KT_F16] = {KT_F16, "f16", 1, sizeof(kt_f16), false, false, CODECS},
    [KT_Q8_0] = {KT_Q8_0, "q8_0", BLK_Q8_0, sizeof(blk_q8_0), false, false, CODECS},
    [KT_BF16] = {KT_BF16, "bf16", 1, sizeof(kt_bf16), false, false, CODECS},
    [KT_TQ1_0] = {KT_TQ1_0, "tq1_0", BLK_TQ1_0, sizeof(blk_tq1_0), true, false, CODECS},
    [KT_TQ2_0] = {KT_TQ2_0, "tq2_0", BLK_TQ2_0, sizeof(blk_tq2_0), true, false, CODECS},
    [KT_Q1_0] = {KT_Q1_0, "q1_0", BLK_Q1_0, sizeof(blk_q1_0), false, true, CODECS},
    [KT_Q2_0] = {KT_Q2_0, "q2_0", BLK_Q2_0, sizeof(blk_q2_0), true, false, CODECS},
};

const kt_traits *kt_traits_of(kt_type t)
{
    if ((unsigned)t >= KT_ID_END || !traits[t].name) return NULL;
    return &traits[t];
}
