/* The AVX-512 level without VNNI (e.g. Skylake-SP): the kern_x86.h kernels
 * built with -mavx512f -mavx512bw -mavx512vl, so the compiler may use EVEX
 * encodings and 32 vector registers. */
#define KG_PREFIX kern_avx512_
#define KG_ISA KERN_ISA_AVX512
#define KX_VNNI 0
#define KX_VBMI 0
#include "kernels/kern_x86.h"
