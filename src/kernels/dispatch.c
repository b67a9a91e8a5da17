/* Run-time kernel selection: the one place that asks the CPU what it has.
 *
 * x86: cpuid for the instruction sets, xgetbv for whether the OS saves the
 * wide registers (a CPU with AVX-512 under an OS that does not enable ZMM
 * state must not run AVX-512 code). aarch64: getauxval(AT_HWCAP).
 * Each ISA's kernels live in their own file built with their own flags, so
 * one binary runs on any CPU of its architecture. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kern_isa.h"

#if defined(__x86_64__)
#include <cpuid.h>
#elif defined(__aarch64__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMD
#define HWCAP_ASIMD (1 << 1)
#endif
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#endif

static const char *const isa_names[] = {
    [KERN_ISA_SCALAR] = "scalar", [KERN_ISA_AVX2] = "avx2",
    [KERN_ISA_AVX512] = "avx512", [KERN_ISA_AVX512VNNI] = "avx512vnni",
    [KERN_ISA_NEON] = "neon",     [KERN_ISA_NEON_DOTPROD] = "dotprod",
};
#define N_ISA ((int)(sizeof isa_names / sizeof isa_names[0]))

const char *kern_isa_name(kern_isa isa)
{
    return (int)isa >= 0 && (int)isa < N_ISA ? isa_names[isa] : "unknown";
}

#if defined(__x86_64__)
static uint64_t xgetbv0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}
#endif

/* Bit i set: this CPU and build run level i. */
static unsigned detect(void)
{
    unsigned m = 1u << KERN_ISA_SCALAR;
#if defined(__x86_64__)
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return m;
    int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, f16c = (c >> 29) & 1;
    if (!osxsave || !avx) return m;
    uint64_t xcr0 = xgetbv0();
    int ymm_os = (xcr0 & 0x6) == 0x6;   /* SSE and AVX state */
    int zmm_os = (xcr0 & 0xE6) == 0xE6; /* plus opmask and both ZMM halves */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return m;
    int avx2 = (b >> 5) & 1, avx512f = (b >> 16) & 1, avx512bw = (b >> 30) & 1,
        avx512vl = (b >> 31) & 1, vbmi = (c >> 1) & 1, vnni = (c >> 11) & 1;
    if (ymm_os && avx2 && fma && f16c) {
        m |= 1u << KERN_ISA_AVX2;
        if (zmm_os && avx512f && avx512bw && avx512vl) {
            m |= 1u << KERN_ISA_AVX512;
            if (vnni && vbmi) /* see kern_avx512vnni.c */
                m |= 1u << KERN_ISA_AVX512VNNI;
        }
    }
#elif defined(__aarch64__)
    unsigned long hw = getauxval(AT_HWCAP);
    if (hw & HWCAP_ASIMD) {
        m |= 1u << KERN_ISA_NEON;
        if (hw & HWCAP_ASIMDDP) m |= 1u << KERN_ISA_NEON_DOTPROD;
    }
#endif
    return m;
}

/* Levels allowed by TERN_KERNELS (all when unset or unknown). */
static unsigned cap_mask(void)
{
    const char *e = getenv("TERN_KERNELS");
    if (!e || !*e) return ~0u;
    for (int i = 0; i < N_ISA; i++) {
        if (strcmp(e, isa_names[i]) != 0) continue;
        /* a cap keeps the levels of the same family at or below it */
        unsigned m = 1u << KERN_ISA_SCALAR;
        if (i >= KERN_ISA_NEON)
            for (int k = KERN_ISA_NEON; k <= i; k++)
                m |= 1u << k;
        else
            for (int k = 0; k <= i; k++)
                m |= 1u << k;
        return m;
    }
    return ~0u;
}

/* Computed once; a race computes the same value twice, which is harmless. */
static atomic_uint cpu_bits, cap_bits; /* 0 = not yet known */

static unsigned supported(void)
{
    unsigned m = atomic_load_explicit(&cpu_bits, memory_order_relaxed);
    if (!m) {
        m = detect();
        atomic_store_explicit(&cpu_bits, m, memory_order_relaxed);
    }
    return m;
}

static unsigned allowed(void)
{
    unsigned m = atomic_load_explicit(&cap_bits, memory_order_relaxed);
    if (!m) {
        m = supported() & cap_mask();
        atomic_store_explicit(&cap_bits, m, memory_order_relaxed);
    }
    return m;
}

bool kern_isa_supported(kern_isa isa)
{
    return (int)isa >= 0 && (int)isa < N_ISA && (supported() >> isa) & 1;
}

kern_isa kern_best_isa(void)
{
    unsigned m = allowed();
    for (int i = N_ISA - 1; i > 0; i--)
        if ((m >> i) & 1) return (kern_isa)i;
    return KERN_ISA_SCALAR;
}

const kern_ops *kern_get_isa(kt_type t, kern_isa isa)
{
    if (!kern_isa_supported(isa)) return NULL;
    switch (isa) {
    case KERN_ISA_SCALAR: return kern_ref_ops(t);
#if defined(__x86_64__)
    case KERN_ISA_AVX2: return kern_avx2_ops(t);
    case KERN_ISA_AVX512: return kern_avx512_ops(t);
    case KERN_ISA_AVX512VNNI: return kern_avx512vnni_ops(t);
#elif defined(__aarch64__)
    case KERN_ISA_NEON: return kern_neon_ops(t);
    case KERN_ISA_NEON_DOTPROD: return kern_dotprod_ops(t);
#endif
    default: return NULL;
    }
}

const kern_ops *kern_get(kt_type t)
{
    unsigned m = allowed();
    for (int i = N_ISA - 1; i > 0; i--) {
        if (!((m >> i) & 1)) continue;
        const kern_ops *o = kern_get_isa(t, (kern_isa)i);
        if (o) return o;
    }
    return kern_ref_ops(t);
}

/* The row functions one family of levels shares: every x86 level uses
 * AVX2's quantizer, f16 row and attention, every ARM level NEON's. */
typedef struct {
    kern_quantize_fn quantize;
    kern_f16_row_fn f16_to_f32;
    const kern_attn_ops *attn;
    kern_gelu_fn gelu;
    kern_swiglu_fn swiglu;
} family_fns;

static const family_fns scalar_fns = {kern_quantize_row, kern_f16_to_f32_row, &kern_ref_attn,
                                      kern_gelu_row, kern_swiglu_row};

/* NULL where this CPU or build lacks the level. */
static const family_fns *family_of(kern_isa isa)
{
#if defined(__x86_64__)
    static const family_fns x86_fns = {kern_avx2_quantize_row, kern_avx2_f16_to_f32_row,
                                       &kern_avx2_attn, kern_avx2_gelu_row, kern_avx2_swiglu_row};
#elif defined(__aarch64__)
    static const family_fns arm_fns = {kern_neon_quantize_row, kern_neon_f16_to_f32_row,
                                       &kern_neon_attn, kern_neon_gelu_row, kern_neon_swiglu_row};
#endif
    if (!kern_isa_supported(isa)) return NULL;
    switch (isa) {
    case KERN_ISA_SCALAR: return &scalar_fns;
#if defined(__x86_64__)
    case KERN_ISA_AVX2:
    case KERN_ISA_AVX512:
    case KERN_ISA_AVX512VNNI: return &x86_fns;
#elif defined(__aarch64__)
    case KERN_ISA_NEON:
    case KERN_ISA_NEON_DOTPROD: return &arm_fns;
#endif
    default: return NULL;
    }
}

/* The best level's family, honouring the cap. */
static const family_fns *best_family(void)
{
    const family_fns *f = family_of(kern_best_isa());
    return f ? f : &scalar_fns;
}

kern_quantize_fn kern_get_quantize_isa(kern_isa isa)
{
    const family_fns *f = family_of(isa);
    return f ? f->quantize : NULL;
}

kern_quantize_fn kern_get_quantize(void)
{
    return best_family()->quantize;
}

kern_f16_row_fn kern_get_f16_to_f32_isa(kern_isa isa)
{
    const family_fns *f = family_of(isa);
    return f ? f->f16_to_f32 : NULL;
}

kern_f16_row_fn kern_get_f16_to_f32(void)
{
    return best_family()->f16_to_f32;
}

const kern_attn_ops *kern_get_attn_isa(kern_isa isa)
{
    const family_fns *f = family_of(isa);
    return f ? f->attn : NULL;
}

const kern_attn_ops *kern_get_attn(void)
{
    return best_family()->attn;
}

kern_gelu_fn kern_get_gelu_isa(kern_isa isa)
{
    const family_fns *f = family_of(isa);
    return f ? f->gelu : NULL;
}

kern_gelu_fn kern_get_gelu(void)
{
    return best_family()->gelu;
}

kern_swiglu_fn kern_get_swiglu_isa(kern_isa isa)
{
    const family_fns *f = family_of(isa);
    return f ? f->swiglu : NULL;
}

kern_swiglu_fn kern_get_swiglu(void)
{
    return best_family()->swiglu;
}
