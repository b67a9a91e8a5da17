/* The blocked attention kernel (kern_attn_ops.block), shared by the SIMD
 * files: kern_avx2.c and kern_neon.c include it after defining
 *     static float ka_exp_sum(float *s, int T)
 * which sets s[t] = kern_exp_approx(s[t] - max over s) and returns their sum.
 *
 * The tiles: up to KA_QB queries x KA_W keys of scores, or up to KA_QB queries
 * x KA_W value columns of output, held in registers while the shared key or
 * value rows stream past; the query count is a parameter the driver makes a
 * constant (KA_ROWS), so a block of any size runs in tiles. A file may define
 * KA_TILES and its own ka_scores_tile and ka_wsum_tile in intrinsics
 * (kern_avx2.c does: compilers keep these plain loops' accumulators in
 * memory); the plain loops are the fallback. Pass 1 writes scaled scores,
 * then each row's softmax, then pass 2 sums the values; keys are cut in KA_TB
 * blocks there so a block's values stay in L1 for every query tile. */
#ifndef TERN_KERNELS_KERN_ATTN_H
#define TERN_KERNELS_KERN_ATTN_H

#include <math.h>

#include "kernels/kernels.h"

#ifndef KA_TILES
#define KA_QB 4
#define KA_W 16
#endif
#define KA_TB 128

static float ka_exp_sum(float *s, int T);

#ifndef KA_TILES
/* Scores of qa <= KA_QB queries against KA_W keys starting at column t of kt. */
static inline void ka_scores_tile(int qa, const float *q, size_t qs, const float *kt, size_t kts,
                                  int n, float scale, float *s, int T)
{
    float acc[KA_QB][KA_W] = {{0}};
    for (int d = 0; d < n; d++) {
        const float *kr = kt + (size_t)d * kts;
        for (int a = 0; a < qa; a++) {
            float qv = q[(size_t)a * qs + d];
            for (int w = 0; w < KA_W; w++)
                acc[a][w] += qv * kr[w];
        }
    }
    for (int a = 0; a < qa; a++)
        for (int w = 0; w < KA_W; w++)
            s[(size_t)a * T + w] = acc[a][w] * scale;
}

/* out rows (qa <= KA_QB of them, KA_W columns) += p rows times value rows t0..t1. */
static inline void ka_wsum_tile(int qa, const float *p, int T, const float *v, size_t vs, int t0,
                                int t1, float *out, size_t os)
{
    float acc[KA_QB][KA_W];
    for (int a = 0; a < qa; a++)
        for (int w = 0; w < KA_W; w++)
            acc[a][w] = out[(size_t)a * os + w];
    for (int t = t0; t < t1; t++) {
        const float *vr = v + (size_t)t * vs;
        for (int a = 0; a < qa; a++) {
            float pa = p[(size_t)a * T + t];
            for (int w = 0; w < KA_W; w++)
                acc[a][w] += pa * vr[w];
        }
    }
    for (int a = 0; a < qa; a++)
        for (int w = 0; w < KA_W; w++)
            out[(size_t)a * os + w] = acc[a][w];
}
#endif

/* The tiles with a constant query count, so their loops unroll: the last
 * queries of a block take a shorter tile, not a scalar loop. */
#if KA_QB == 6
#define KA_ROWS(qa, CALL)                                                                          \
    switch (qa) {                                                                                  \
    case 6: CALL(6); break;                                                                        \
    case 5: CALL(5); break;                                                                        \
    case 4: CALL(4); break;                                                                        \
    case 3: CALL(3); break;                                                                        \
    case 2: CALL(2); break;                                                                        \
    default: CALL(1); break;                                                                       \
    }
#elif KA_QB == 4
#define KA_ROWS(qa, CALL)                                                                          \
    switch (qa) {                                                                                  \
    case 4: CALL(4); break;                                                                        \
    case 3: CALL(3); break;                                                                        \
    case 2: CALL(2); break;                                                                        \
    default: CALL(1); break;                                                                       \
    }
#else
#error "KA_ROWS unrolls tiles of 4 or 6 queries"
#endif

#define KA_SCORES(QA)                                                                              \
    ka_scores_tile(QA, q + (size_t)i * qs, qs, kt + t, kts, n, scale, scratch + (size_t)i * T + t, \
                   T)
#define KA_WSUM(QA)                                                                                \
    ka_wsum_tile(QA, scratch + (size_t)i * T, T, v + c, vs, t0, t1, out + (size_t)i * os + c, os)

static void ka_block(const float *q, size_t qs, const float *kt, size_t kts, const float *v,
                     size_t vs, int nq, int T, int n, float scale, float *out, size_t os,
                     float *scratch)
{
    int T16 = T - T % KA_W, n16 = n - n % KA_W;
    for (int t = 0; t < T16; t += KA_W) /* a key tile stays in L1 for every query tile */
        for (int i = 0; i < nq; i += KA_QB) {
            int qa = nq - i < KA_QB ? nq - i : KA_QB;
            KA_ROWS(qa, KA_SCORES)
        }
    for (int i = 0; i < nq; i++) /* the last keys */
        for (int t = T16; t < T; t++) {
            float d = 0.0f;
            for (int j = 0; j < n; j++)
                d += q[(size_t)i * qs + j] * kt[(size_t)j * kts + t];
            scratch[(size_t)i * T + t] = d * scale;
        }

    float *sums = scratch + (size_t)nq * T; /* normalised at the end: n values, not T */
    for (int i = 0; i < nq; i++) {
        sums[i] = ka_exp_sum(scratch + (size_t)i * T, T);
        for (int j = 0; j < n; j++)
            out[(size_t)i * os + j] = 0.0f;
    }

    for (int t0 = 0; t0 < T; t0 += KA_TB) {
        int t1 = T - t0 < KA_TB ? T : t0 + KA_TB;
        for (int c = 0; c < n16; c += KA_W)
            for (int i = 0; i < nq; i += KA_QB) {
                int qa = nq - i < KA_QB ? nq - i : KA_QB;
                KA_ROWS(qa, KA_WSUM)
            }
        for (int i = 0; i < nq; i++) /* the last columns */
            for (int c = n16; c < n; c++) {
                float a = out[(size_t)i * os + c];
                for (int t = t0; t < t1; t++)
                    a += scratch[(size_t)i * T + t] * v[(size_t)t * vs + c];
                out[(size_t)i * os + c] = a;
            }
    }
    for (int i = 0; i < nq; i++) {
        float inv = 1.0f / sums[i], *o = out + (size_t)i * os;
        for (int j = 0; j < n; j++)
            o[j] *= inv;
    }
}

#endif
