/* Few-row GEMM cost per activation row: one thread, the dispatched kernel
 * (kern_get) on one matrix against 1, 2, 4 and 8 activation rows, CPU time
 * of the thread, best of several passes. Prints TSC cycles per weight per
 * row and each row count's per-row cost relative to one row.
 *
 * Build against a build directory's kernel library, e.g.
 *   cc -O2 -Isrc bench/kgemm_rows.c build/src/kernels/libternkernels.a -lm -o kgemm_rows
 *   ./kgemm_rows [passes]
 * To compare with another version of the x86 kernels in the same process
 * (old and new alternate pass by pass, so load on a shared machine hits
 * both alike), compile that version's kern_x86.h and kern_gemm.h under
 * another prefix and name its table: e.g. with old/kernels/ holding them and
 * kern_old.c defining KG_PREFIX kern_old_, KG_ISA KERN_ISA_AVX2, KX_VNNI 0,
 * KX_VBMI 0 and including "kernels/kern_x86.h":
 *   cc -O2 -mavx2 -mfma -mf16c -Iold -Isrc -c kern_old.c
 *   cc -O2 -Isrc -DKGR_OTHER=kern_old_ops bench/kgemm_rows.c kern_old.o \
 *      build/src/kernels/libternkernels.a -lm -o kgemm_rows
 * Then each cell reads other -> this build (this/other time per row).
 * Shapes are SmolVLM-256M's decoder matrices (rows x columns, type as
 * mkmodel/quantize store them) and its Q8_0 output matrix, whose 28 MB come
 * from memory. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <x86intrin.h>

#include "kernels/blocks.h"
#include "kernels/kernels.h"
#include "kernels/traits.h"

#ifdef KGR_OTHER
const kern_ops *KGR_OTHER(kt_type t);
#endif

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}

static kt_f16 *scale_of(kt_type t, uint8_t *blk)
{
    switch (t) {
    case KT_TQ2_0: return &((blk_tq2_0 *)blk)->d;
    case KT_Q2_0: return &((blk_q2_0 *)blk)->d;
    default: return &((blk_q8_0 *)blk)->d;
    }
}

static double thread_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    int passes = argc > 1 ? atoi(argv[1]) : 7;
    static const struct {
        const char *name;
        kt_type t;
        int rows, n;
    } shapes[] = {
        {"Q2_0 576x576 (q, o)", KT_Q2_0, 576, 576},
        {"Q2_0 1536x576 (gate, up)", KT_Q2_0, 1536, 576},
        {"TQ2_0 576x1536 (down)", KT_TQ2_0, 576, 1536},
        {"Q8_0 4096x576 (in cache)", KT_Q8_0, 4096, 576},
        {"Q8_0 49152x576 (output)", KT_Q8_0, 49152, 576},
    };
    static const int counts[] = {1, 2, 4, 8};
    const kern_ops *probe = kern_get(KT_Q2_0);
    printf("kernels %s, %d passes, best pass; TSC cycles per weight per row (ratio to 1 row)\n",
           kern_isa_name(probe->isa), passes);
    /* TSC ticks per ns of wall time (thread time would count the ticks
     * while the thread waits on a loaded machine) */
    struct timespec w0, w1;
    clock_gettime(CLOCK_MONOTONIC, &w0);
    uint64_t c0 = __rdtsc();
    do
        clock_gettime(CLOCK_MONOTONIC, &w1);
    while ((w1.tv_sec - w0.tv_sec) * 1e9 + (w1.tv_nsec - w0.tv_nsec) < 5e7);
    double tsc_per_ns =
        (double)(__rdtsc() - c0) / ((w1.tv_sec - w0.tv_sec) * 1e9 + (w1.tv_nsec - w0.tv_nsec));
    printf("TSC %.3f GHz\n", tsc_per_ns);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        kt_type t = shapes[s].t;
        const kt_traits *tr = kt_traits_of(t);
        int n = shapes[s].n, R = shapes[s].rows, nb = n / tr->block;
        size_t stride = (size_t)nb * tr->block_bytes;
        uint8_t *w = malloc(stride * R);
        for (size_t i = 0; i < stride * R; i++)
            w[i] = (uint8_t)rnd();
        for (size_t b = 0; b < (size_t)R * nb; b++)
            *scale_of(t, w + b * tr->block_bytes) = kt_f32_to_f16(0.01f + (rnd() % 100) * 1e-3f);
        int M = 8, ng = n / KERN_GROUP;
        float *x = malloc(sizeof(float) * M * n), *sc = malloc(sizeof(float) * M);
        int8_t *q = malloc((size_t)M * n), *q64 = malloc((size_t)M * n);
        int16_t *g = malloc(sizeof(int16_t) * M * ng);
        float *out = malloc(sizeof(float) * M * R);
        for (int i = 0; i < M * n; i++)
            x[i] = (float)((int)(rnd() % 2001) - 1000) / 1000.0f;
        for (int j = 0; j < M; j++)
            kern_quantize_row(x + (size_t)j * n, n, q + (size_t)j * n, g + (size_t)j * ng, sc + j);
        kern_permute64(q, M * n, q64);
        const kern_ops *ops[2] = {kern_get(t), kern_get(t)};
#ifdef KGR_OTHER
        ops[1] = KGR_OTHER(t);
#endif
        printf("%-26s", shapes[s].name);
        double one[2] = {0, 0};
        for (size_t ci = 0; ci < sizeof counts / sizeof counts[0]; ci++) {
            kern_acts a = {.n = n,
                           .rows = counts[ci],
                           .q = q,
                           .gsum = g,
                           .scale = sc,
                           .q64 = t == KT_Q2_0 ? q64 : NULL};
            int reps = (int)(4e7 / ((double)R * n * counts[ci])) + 1;
            double best[2] = {1e30, 1e30};
            for (int p = 0; p < 2 * passes; p++) {
                const kern_ops *o = ops[p % 2 ? 0 : 1];
                double t0 = thread_ns();
                for (int k = 0; k < reps; k++)
                    o->gemm(w, stride, 0, R, &a, out, (size_t)R);
                double dt = (thread_ns() - t0) / reps;
                if (dt < best[p % 2]) best[p % 2] = dt;
            }
            double cyc[2];
            for (int v = 0; v < 2; v++) {
                cyc[v] = best[v] * tsc_per_ns / ((double)R * n * counts[ci]);
                if (ci == 0) one[v] = cyc[v];
            }
#ifdef KGR_OTHER
            printf("  %d: %.4f -> %.4f (%.2fx -> %.2fx; %.2f)", counts[ci], cyc[0], cyc[1],
                   cyc[0] / one[0], cyc[1] / one[1], cyc[1] / cyc[0]);
#else
            printf("  %d: %.4f (%.2fx)", counts[ci], cyc[1], cyc[1] / one[1]);
#endif
        }
        printf("\n");
        free(w);
        free(x);
        free(sc);
        free(q);
        free(q64);
        free(g);
        free(out);
    }
    return 0;
}
