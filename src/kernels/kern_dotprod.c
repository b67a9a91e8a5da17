/* NEON kernels with sdot (ARMv8.2 dotprod: Cortex-A55/A76 and later, Apple,
 * Graviton 2+). Built with -march=armv8.2-a+dotprod. */
#define KG_PREFIX kern_dotprod_
#define KG_ISA KERN_ISA_NEON_DOTPROD
#define KN_DOTPROD 1
#include "kernels/kern_neon.h"
