/* The AVX-512 VNNI level (Ice Lake, Zen 4 and later): the kern_x86.h
 * kernels with vpdpbusd doing u8 x s8 -> int32 in one instruction
 * (256-bit, via VL), and VBMI's vpmultishiftqb unpacking Q2_0 and Q1_0.
 * dispatch.c requires both VNNI and VBMI for this level (Cascade Lake, with
 * VNNI but no VBMI, runs the avx512 level). */
#define KG_PREFIX kern_avx512vnni_
#define KG_ISA KERN_ISA_AVX512VNNI
#define KX_VNNI 1
#define KX_VBMI 1
#include "kernels/kern_x86.h"
