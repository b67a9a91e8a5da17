/* The AVX-512 VNNI level (Ice Lake, Zen 4): the kern_x86.h kernels with
 * vpdpbusd doing u8 x s8 -> int32 in one instruction (256-bit, via VL). */
#define KX_PREFIX kern_avx512vnni_
#define KX_ISA KERN_ISA_AVX512VNNI
#define KX_VNNI 1
#include "kernels/kern_x86.h"
