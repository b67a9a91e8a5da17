/* SIMD kernels against the scalar reference, the activation quantizer,
 * dispatch, the thread pool and mm_matmul.
 *
 * Exactness. Inside a block every kernel's arithmetic is integer and exact;
 * across blocks the kernels add float terms d_b * isum_b in a different
 * order than the reference (vector lanes, pairs of accumulators). So:
 *  - "exact" tests use block scales 1.0 and activations that are already
 *    integers in [-127, 127] with max 127 (activation scale exactly 1): all
 *    partial sums are integers below 2^24, any order gives the same float,
 *    and results must be bit-identical to the reference;
 *  - "random" tests use random scales and activations, and allow
 *        |simd - ref| <= (blocks + 8) * FLT_EPSILON * sum_i |w_i * x_i|,
 *    the bound for reordering a float sum of `blocks` terms (each exact up
 *    to one rounding of d_b * isum_b);
 *  - F16 (float arithmetic throughout) allows (n + 8) * FLT_EPSILON *
 *    sum |w_i * x_i|, the bound for two differently ordered sums of n
 *    products. */
#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/matmul.h"
#include "engine/pool.h"
#include "kernels/blocks.h"
#include "kernels/kernels.h"
#include "kernels/traits.h"

#ifdef TERN_MINICHECK
#include "minicheck.h" /* cross builds: see tests/minicheck.h */
#else
#include <check.h>
#endif

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint32_t rnd(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (uint32_t)((rng * 2685821657736338717ull) >> 32);
}

static float frand(float lo, float hi)
{
    return lo + (hi - lo) * (float)(rnd() / 4294967296.0);
}

static const kt_type int_types[] = {KT_TQ2_0, KT_TQ1_0, KT_Q2_0, KT_Q1_0, KT_Q8_0};

static int blk_of(kt_type t, size_t *bytes)
{
    const kt_traits *tr = kt_traits_of(t);
    *bytes = (size_t)tr->block_bytes;
    return tr->block;
}

static int is_float(kt_type t)
{
    return t == KT_F16 || t == KT_BF16 || t == KT_F32;
}

static kt_f16 *scale_ptr(kt_type t, uint8_t *blk)
{
    switch (t) {
    case KT_TQ2_0: return &((blk_tq2_0 *)blk)->d;
    case KT_TQ1_0: return &((blk_tq1_0 *)blk)->d;
    case KT_Q2_0: return &((blk_q2_0 *)blk)->d;
    case KT_Q1_0: return &((blk_q1_0 *)blk)->d;
    default: return &((blk_q8_0 *)blk)->d;
    }
}

/* Random weights: random bytes (so every code pattern occurs, including the
 * 2-bit code 3 and all base-3 bytes), then a finite scale per block:
 * 1.0 when exact, else random in [0.001, 0.1]. F16: values in [-1, 1]. */
static uint8_t *make_weights(kt_type t, int rows, int n, int exact, size_t *stride)
{
    size_t bb;
    int bs = blk_of(t, &bb);
    *stride = (size_t)n / bs * bb;
    uint8_t *w = malloc(*stride * rows + 1);
    ck_assert_ptr_nonnull(w);
    if (is_float(t)) {
        for (size_t i = 0; i < (size_t)rows * n; i++) {
            float v = exact ? (float)((int)(rnd() % 5) - 2) : frand(-1, 1);
            if (t == KT_F32)
                memcpy(w + 4 * i, &v, 4);
            else if (t == KT_BF16)
                ((kt_bf16 *)w)[i] = kt_f32_to_bf16(v);
            else
                ((kt_f16 *)w)[i] = kt_f32_to_f16(v);
        }
        return w;
    }
    for (size_t i = 0; i < *stride * rows; i++)
        w[i] = (uint8_t)rnd();
    for (size_t b = 0; b < (size_t)rows * (n / bs); b++)
        *scale_ptr(t, w + b * bb) = kt_f32_to_f16(exact ? 1.0f : frand(0.001f, 0.1f));
    return w;
}

/* Activation rows quantized by the reference quantizer. exact: integers in
 * [-127, 127] with one 127 per row, so the scale is exactly 1. */
typedef struct {
    float *x;
    int8_t *q;
    int16_t *g;
    float *s;
    int8_t *q64;
    kern_acts a;
} acts;

static void make_acts(acts *A, int rows, int n, int exact)
{
    A->x = malloc(sizeof(float) * rows * n);
    A->q = malloc((size_t)rows * n);
    A->g = malloc(sizeof(int16_t) * rows * (n / KERN_GROUP + 1));
    A->s = malloc(sizeof(float) * rows);
    A->q64 = malloc((size_t)rows * n);
    for (int j = 0; j < rows; j++) {
        float *x = A->x + (size_t)j * n;
        for (int i = 0; i < n; i++)
            x[i] = exact ? (float)((int)(rnd() % 255) - 127) : frand(-3, 3);
        if (exact) x[rnd() % n] = 127.0f;
        if (n % KERN_GROUP == 0)
            kern_quantize_row(x, n, A->q + (size_t)j * n, A->g + (size_t)j * (n / KERN_GROUP),
                              A->s + j);
    }
    if (n % 64 == 0) kern_permute64(A->q, rows * n, A->q64);
    A->a = (kern_acts){.n = n, .rows = rows, .f = A->x, .q = A->q, .gsum = A->g, .scale = A->s};
}

static void free_acts(acts *A)
{
    free(A->x);
    free(A->q);
    free(A->g);
    free(A->s);
    free(A->q64);
}

/* sum_i |w_i * x_i| for weight row r and activation row j (dequantized). */
static double abs_dot(kt_type t, const uint8_t *w, size_t stride, int r, const acts *A, int j)
{
    int n = A->a.n;
    float *wf = malloc(sizeof(float) * n);
    kt_to_float(t, w + (size_t)r * stride, wf, n);
    double s = 0;
    for (int i = 0; i < n; i++) {
        double x =
            is_float(t) ? A->x[(size_t)j * n + i] : (double)A->q[(size_t)j * n + i] * A->s[j];
        s += fabs((double)wf[i] * x);
    }
    free(wf);
    return s;
}

/* Runs ops and the reference on rows [r0, r1) of a rows-row matrix into
 * outputs with a stride of ldo = rows + 3; checks every value in range and
 * that nothing outside it was written. */
static void compare(const kern_ops *ops, int rows, int n, int arows, int exact, int r0, int r1)
{
    kt_type t = ops->type;
    size_t stride;
    uint8_t *w = make_weights(t, rows, n, exact, &stride);
    acts A;
    make_acts(&A, arows, n, exact);
    size_t ldo = (size_t)rows + 3, len = ldo * arows;
    float *got = malloc(sizeof(float) * len), *want = malloc(sizeof(float) * len);
    for (size_t i = 0; i < len; i++)
        want[i] = -12345.0f;
    kern_ref_ops(t)->gemm(w, stride, r0, r1, &A.a, want, ldo);
    size_t bb;
    int nb = n / blk_of(t, &bb);
    /* without and with the permuted activations (kern_permute64) */
    for (int p64 = 0; p64 < 1 + (n % 64 == 0); p64++) {
        A.a.q64 = p64 ? A.q64 : NULL;
        for (size_t i = 0; i < len; i++)
            got[i] = -12345.0f;
        ops->gemm(w, stride, r0, r1, &A.a, got, ldo);
        for (int j = 0; j < arows; j++) {
            for (size_t r = 0; r < ldo; r++) {
                float g = got[j * ldo + r], e = want[j * ldo + r];
                if ((int)r < r0 || (int)r >= r1) {
                    ck_assert_msg(g == -12345.0f, "%s type %d wrote outside rows: j %d r %zu",
                                  kern_isa_name(ops->isa), (int)t, j, r);
                    continue;
                }
                if (exact) {
                    ck_assert_msg(g == e,
                                  "%s type %d n %d rows %d arows %d: [%d][%zu] %.9g != %.9g",
                                  kern_isa_name(ops->isa), t, n, rows, arows, j, r, g, e);
                } else {
                    double tol = ((is_float(t) ? n : nb) + 8) * (double)FLT_EPSILON *
                                     abs_dot(t, w, stride, (int)r, &A, j) +
                                 1e-30;
                    ck_assert_msg(
                        fabs((double)g - e) <= tol,
                        "%s type %d n %d rows %d arows %d: [%d][%zu] %.9g vs %.9g (tol %g)",
                        kern_isa_name(ops->isa), t, n, rows, arows, j, r, g, e, tol);
                }
            }
        }
    }
    free(got);
    free(want);
    free(w);
    free_acts(&A);
}

/* Row lengths per type: one block, a few, an odd count, the most blocks. */
static void sizes_for(kt_type t, int *ns, int *count)
{
    size_t bb;
    int bs = blk_of(t, &bb);
    if (is_float(t)) {
        int v[] = {1, 7, 33, 4099};
        memcpy(ns, v, sizeof v);
        *count = 4;
        return;
    }
    int base = bs < KERN_GROUP ? KERN_GROUP : bs;
    ns[0] = base;
    ns[1] = 3 * base;
    ns[2] = 7 * base;
    ns[3] = (14336 / base) * base; /* the largest FFN row we run */
    *count = 4;
}

static const kt_type all_types[] = {KT_TQ2_0, KT_TQ1_0, KT_Q2_0, KT_Q1_0,
                                    KT_Q8_0,  KT_F16,   KT_BF16, KT_F32};

static void run_all(int exact)
{
    static const int wrows[] = {1, 7, 33};
    static const int arows[] = {1, 3, 4, 5, 8, 13};
    int checked = 0;
    for (int isa = 1; isa <= KERN_ISA_NEON_DOTPROD; isa++) {
        for (size_t ti = 0; ti < sizeof all_types / sizeof all_types[0]; ti++) {
            const kern_ops *ops = kern_get_isa(all_types[ti], (kern_isa)isa);
            if (!ops) continue;
            ck_assert_int_eq(ops->type, all_types[ti]);
            ck_assert_int_eq(ops->isa, isa);
            int ns[4], cnt;
            sizes_for(all_types[ti], ns, &cnt);
            for (int k = 0; k < cnt; k++)
                for (size_t a = 0; a < sizeof arows / sizeof arows[0]; a++)
                    for (size_t r = 0; r < 3; r++) {
                        int big = ns[k] > 4096;
                        if (big && (wrows[r] > 7 || arows[a] > 3))
                            continue; /* keep the long rows cheap */
                        compare(ops, wrows[r], ns[k], arows[a], exact, 0, wrows[r]);
                    }
            /* the tile remainder over many activation rows, a sub-range of rows */
            compare(ops, 19, ns[1], 513, exact, 3, 17);
            /* decode's four-row passes: a sub-range that starts off a group */
            compare(ops, 19, ns[1], 1, exact, 3, 17);
            checked++;
        }
    }
    /* an x86 or ARM build on its own CPU checks at least one SIMD level */
#if defined(__x86_64__) || defined(__aarch64__)
    ck_assert_int_gt(checked, 0);
#endif
}

/* out[j * ldo + r] for rows [r0, r1) of w against activation rows j0 .. j0 + m - 1 of A. */
static void gemm_subset(const kern_ops *ops, const uint8_t *w, size_t stride, int r0, int r1,
                        const acts *A, int j0, int m, float *out, size_t ldo)
{
    int n = A->a.n, ng = n / KERN_GROUP;
    kern_acts a = A->a;
    a.rows = m;
    a.f = A->x + (size_t)j0 * n;
    a.q = A->q + (size_t)j0 * n;
    a.gsum = A->g + (size_t)j0 * ng;
    a.scale = A->s + j0;
    a.q64 = NULL;
    ops->gemm(w, stride, r0, r1, &a, out, ldo);
}

/* Many activation rows (prefill, the vision encoder): the kernels tile them
 * differently from a few rows (packed float panels). Against the reference
 * on awkward shapes (short last panels and tiles, rows past one column
 * block), and each row's bits the same whichever rows come with it, as long
 * as there are many. */
static void many_rows(int exact)
{
    static const int float_n[] = {1, 7, 256, 263, 600};
    static const int shapes[][4] = {/* weight rows, r0, r1, activation rows */
                                    {16, 0, 16, 16},
                                    {40, 0, 40, 23},
                                    {37, 5, 30, 47},
                                    {3, 1, 3, 64}};
    int checked = 0;
    for (int isa = 1; isa <= KERN_ISA_NEON_DOTPROD; isa++)
        for (size_t ti = 0; ti < sizeof all_types / sizeof all_types[0]; ti++) {
            kt_type t = all_types[ti];
            const kern_ops *ops = kern_get_isa(t, (kern_isa)isa);
            if (!ops) continue;
            size_t bb;
            int bs = blk_of(t, &bb), base = bs < KERN_GROUP ? KERN_GROUP : bs;
            int ns[5], cnt = 0;
            if (is_float(t))
                for (; cnt < 5; cnt++)
                    ns[cnt] = float_n[cnt];
            else
                ns[cnt++] = base, ns[cnt++] = 3 * base, ns[cnt++] = 12 * base;
            for (int k = 0; k < cnt; k++)
                for (size_t sh = 0; sh < sizeof shapes / sizeof shapes[0]; sh++)
                    compare(ops, shapes[sh][0], ns[k], shapes[sh][3], exact, shapes[sh][1],
                            shapes[sh][2]);
            /* 40 rows at once, the first 16, the last 24: the same bits */
            int n = ns[cnt - 1], rows = 21, m = 40;
            size_t stride;
            uint8_t *w = make_weights(t, rows, n, exact, &stride);
            acts A;
            make_acts(&A, m, n, exact);
            float *all = malloc(sizeof(float) * rows * m), *part = malloc(sizeof(float) * rows * m);
            gemm_subset(ops, w, stride, 0, rows, &A, 0, m, all, rows);
            gemm_subset(ops, w, stride, 0, rows, &A, 0, 16, part, rows);
            gemm_subset(ops, w, stride, 0, rows, &A, 16, m - 16, part + 16 * rows, rows);
            ck_assert_msg(memcmp(all, part, sizeof(float) * rows * m) == 0,
                          "%s type %d: a row's bits depend on the rows beside it",
                          kern_isa_name(ops->isa), (int)t);
            free(all);
            free(part);
            free(w);
            free_acts(&A);
            checked++;
        }
#if defined(__x86_64__) || defined(__aarch64__)
    ck_assert_int_gt(checked, 0);
#endif
}

START_TEST(simd_many_rows_exact)
{
    many_rows(1);
}
END_TEST

START_TEST(simd_many_rows_random)
{
    many_rows(0);
}
END_TEST

START_TEST(simd_exact)
{
    run_all(1);
}
END_TEST

START_TEST(simd_random)
{
    run_all(0);
}
END_TEST

/* Accumulation worst case: every weight at its largest code and every
 * activation at +-127, on a row far longer than any model's; with unit
 * scales the exact answer is known in closed form and is representable. */
START_TEST(overflow_worst_case)
{
    const int n = 1 << 20;
    const int w_of_code[] = {-1, 0, 1, 2};
    int8_t *q = malloc(n);
    int16_t *g = malloc(sizeof(int16_t) * (n / KERN_GROUP));
    float s = 1.0f;
    for (int sign = -1; sign <= 1; sign += 2) {
        for (int i = 0; i < n; i++)
            q[i] = (int8_t)(127 * sign);
        for (int i = 0; i < n / KERN_GROUP; i++)
            g[i] = (int16_t)(32 * 127 * sign);
        kern_acts a = {.n = n, .rows = 1, .q = q, .gsum = g, .scale = &s};
        for (size_t ti = 0; ti < sizeof int_types / sizeof int_types[0]; ti++) {
            kt_type t = int_types[ti];
            size_t bb;
            int bs = blk_of(t, &bb);
            size_t stride = (size_t)n / bs * bb;
            uint8_t *w = malloc(stride);
            /* largest codes: 3 for 2-bit types, +1 for TQ1_0/Q1_0, -128 for Q8_0 */
            int wv;
            if (t == KT_Q8_0) {
                memset(w, 0x80, stride);
                wv = -128;
            } else if (t == KT_TQ1_0) {
                memset(w, 0xFF, stride); /* every trit 2: w = +1 */
                wv = 1;
            } else {
                memset(w, 0xFF, stride);
                wv = t == KT_Q1_0 ? 1 : w_of_code[3];
            }
            for (size_t b = 0; b < (size_t)n / bs; b++)
                *scale_ptr(t, w + b * bb) = kt_f32_to_f16(1.0f);
            double want = (double)n * wv * 127 * sign;
            for (int isa = 0; isa <= KERN_ISA_NEON_DOTPROD; isa++) {
                const kern_ops *ops = kern_get_isa(t, (kern_isa)isa);
                if (!ops) continue;
                float out = 0;
                ops->gemm(w, stride, 0, 1, &a, &out, 1);
                ck_assert_msg((double)out == want, "%s type %d: %.9g, want %.9g",
                              kern_isa_name((kern_isa)isa), t, out, want);
            }
            free(w);
        }
    }
    free(q);
    free(g);
}
END_TEST

/* The type table: every row sits at its own id, states its block struct's
 * size, and fits the codecs' per-block buffers (KT_BLOCK_MAX). */
START_TEST(type_table_rows)
{
    static const struct {
        kt_type t;
        int block;
        size_t bytes;
    } want[] = {
        {KT_F32, 1, sizeof(float)},
        {KT_F16, 1, sizeof(kt_f16)},
        {KT_BF16, 1, sizeof(kt_bf16)},
        {KT_Q8_0, BLK_Q8_0, sizeof(blk_q8_0)},
        {KT_TQ2_0, BLK_TQ2_0, sizeof(blk_tq2_0)},
        {KT_TQ1_0, BLK_TQ1_0, sizeof(blk_tq1_0)},
        {KT_Q2_0, BLK_Q2_0, sizeof(blk_q2_0)},
        {KT_Q1_0, BLK_Q1_0, sizeof(blk_q1_0)},
    };
    int n_want = (int)(sizeof want / sizeof want[0]), rows = 0;
    for (int i = 0; i < n_want; i++) {
        const kt_traits *tr = kt_traits_of(want[i].t);
        ck_assert_ptr_nonnull(tr);
        ck_assert_int_eq(tr->block, want[i].block);
        ck_assert_int_eq(tr->block_bytes, (int)want[i].bytes);
    }
    for (int id = 0; id < KT_ID_END; id++) {
        const kt_traits *tr = kt_traits_of((kt_type)id);
        if (!tr) continue;
        rows++;
        ck_assert_int_eq(tr->id, id);
        ck_assert_ptr_nonnull(tr->name);
        ck_assert_int_ge(tr->block, 1);
        ck_assert_int_le(tr->block, KT_BLOCK_MAX);
        ck_assert(!(tr->ternary && tr->binary));
    }
    ck_assert_int_eq(rows, n_want);
    ck_assert_ptr_null(kt_traits_of((kt_type)KT_ID_END));
    ck_assert_ptr_null(kt_traits_of((kt_type)2)); /* a ggml id tern does not read */
}
END_TEST

/* TQ1_0's all-0xFF bytes decode to trit 2 everywhere? The reference agrees
 * with the closed form above only if so; this pins the assumption. */
START_TEST(tq1_all_ff_is_plus_one)
{
    blk_tq1_0 b;
    memset(&b, 0xFF, sizeof b);
    b.d = kt_f32_to_f16(1.0f);
    float f[BLK_TQ1_0];
    kt_to_float(KT_TQ1_0, &b, f, BLK_TQ1_0);
    for (int i = 0; i < BLK_TQ1_0; i++)
        ck_assert_float_eq(f[i], 1.0f);
}
END_TEST

/* Decode's one-row kernels for the ternary types take the codes apart with
 * their own byte arithmetic (kern_x86.h: kx_dot_tq1_0, kx_dot_q2_0_x4): every
 * byte value at every position of a block, in five rows (a four-row pass
 * and a single row), must give the reference's bits, and a row must get
 * the same bits alone as in a batch of two (the tile kernels). */
START_TEST(decode_every_byte)
{
    static const kt_type tt[] = {KT_TQ2_0, KT_TQ1_0, KT_Q2_0};
    const int rows = 5, nb = 256;
    for (size_t ti = 0; ti < 3; ti++) {
        kt_type t = tt[ti];
        size_t bb;
        int bs = blk_of(t, &bb), n = nb * bs;
        size_t stride = (size_t)nb * bb;
        uint8_t *w = malloc(stride * rows);
        for (int exact = 0; exact <= 1; exact++) {
            for (int r = 0; r < rows; r++)
                for (int v = 0; v < nb; v++) {
                    uint8_t *blk = w + (size_t)r * stride + (size_t)v * bb;
                    for (size_t i = 0; i < bb; i++)
                        blk[i] = (uint8_t)(v + 97 * r + (exact ? 0 : 13 * (int)i));
                    *scale_ptr(t, blk) = kt_f32_to_f16(exact ? 1.0f : frand(0.001f, 0.1f));
                }
            acts A;
            make_acts(&A, 2, n, exact);
            memcpy(A.q + n, A.q, (size_t)n); /* the batch's second row repeats the first */
            memcpy(A.q64 + n, A.q64, (size_t)n);
            A.a.q64 = A.q64; /* Q2_0 reads the permuted order, as mm_matmul gives it */
            memcpy(A.g + n / KERN_GROUP, A.g, sizeof(int16_t) * (n / KERN_GROUP));
            A.s[1] = A.s[0];
            float want[5], one[5], two[10];
            A.a.rows = 1;
            kern_ref_ops(t)->gemm(w, stride, 0, rows, &A.a, want, rows);
            for (int isa = 1; isa <= KERN_ISA_NEON_DOTPROD; isa++) {
                const kern_ops *ops = kern_get_isa(t, (kern_isa)isa);
                if (!ops) continue;
                A.a.rows = 1;
                ops->gemm(w, stride, 0, rows, &A.a, one, rows);
                A.a.rows = 2;
                ops->gemm(w, stride, 0, rows, &A.a, two, rows);
                for (int r = 0; r < rows; r++) {
                    if (exact)
                        ck_assert_msg(one[r] == want[r], "%s type %d row %d: %.9g != %.9g",
                                      kern_isa_name((kern_isa)isa), t, r, one[r], want[r]);
                    else
                        ck_assert_msg(fabsf(one[r] - want[r]) <=
                                          (nb + 8) * FLT_EPSILON *
                                              (float)abs_dot(t, w, stride, r, &A, 0),
                                      "%s type %d row %d: %.9g vs %.9g",
                                      kern_isa_name((kern_isa)isa), t, r, one[r], want[r]);
                    ck_assert_msg(one[r] == two[r] && one[r] == two[rows + r],
                                  "%s type %d row %d: alone %.9g, in a batch %.9g %.9g",
                                  kern_isa_name((kern_isa)isa), t, r, one[r], two[r],
                                  two[rows + r]);
                }
            }
            free_acts(&A);
        }
        free(w);
    }
}
END_TEST

/* Decode steps of several streams (2 to 15 rows) take the few-row tiles
 * (kern_gemm.h: kg_gemm_few): each row must get the bits it gets alone (the
 * one-row kernels), whatever rows come with it, with and without
 * kern_permute64's activations, on a short row and on one too long for
 * eight rows' activations in the tile's copy (smaller tiles). */
START_TEST(few_rows_same_bits_as_alone)
{
    static const kt_type tt[] = {KT_TQ2_0, KT_TQ1_0, KT_Q2_0, KT_Q1_0, KT_Q8_0};
    static const int batches[] = {2, 5, 8, 15};
    const int rows = 9, m = 15;
    int checked = 0;
    for (int isa = 1; isa <= KERN_ISA_NEON_DOTPROD; isa++)
        for (size_t ti = 0; ti < sizeof tt / sizeof tt[0]; ti++) {
            kt_type t = tt[ti];
            const kern_ops *ops = kern_get_isa(t, (kern_isa)isa);
            if (!ops) continue;
            size_t bb;
            int bs = blk_of(t, &bb), base = bs < KERN_GROUP ? KERN_GROUP : bs;
            const int ns[] = {3 * base, (14336 / base) * base};
            for (int k = 0; k < 2; k++) {
                int n = ns[k], ng = n / KERN_GROUP;
                size_t stride;
                uint8_t *w = make_weights(t, rows, n, 0, &stride);
                acts A;
                make_acts(&A, m, n, 0);
                float all[15 * 9], one[9];
                for (int p64 = 0; p64 < 1 + (n % 64 == 0); p64++)
                    for (size_t bi = 0; bi < sizeof batches / sizeof batches[0]; bi++) {
                        kern_acts a = A.a;
                        a.rows = batches[bi];
                        a.q64 = p64 ? A.q64 : NULL;
                        ops->gemm(w, stride, 0, rows, &a, all, rows);
                        for (int j = 0; j < batches[bi]; j++) {
                            kern_acts a1 = a;
                            a1.rows = 1;
                            a1.q = A.q + (size_t)j * n;
                            a1.gsum = A.g + (size_t)j * ng;
                            a1.scale = A.s + j;
                            a1.q64 = p64 ? A.q64 + (size_t)j * n : NULL;
                            ops->gemm(w, stride, 0, rows, &a1, one, rows);
                            for (int r = 0; r < rows; r++)
                                ck_assert_msg(one[r] == all[j * rows + r],
                                              "%s type %d n %d p64 %d batch %d row %d/%d: "
                                              "alone %.9g, in the batch %.9g",
                                              kern_isa_name((kern_isa)isa), (int)t, n, p64,
                                              batches[bi], j, r, one[r], all[j * rows + r]);
                        }
                    }
                free_acts(&A);
                free(w);
                checked++;
            }
        }
#if defined(__x86_64__) || defined(__aarch64__)
    ck_assert_int_gt(checked, 0);
#endif
}
END_TEST

START_TEST(quantize_bit_identical)
{
    static const int ns[] = {32, 96, 576, 14336};
    for (int isa = 1; isa <= KERN_ISA_NEON_DOTPROD; isa++) {
        kern_quantize_fn f = kern_get_quantize_isa((kern_isa)isa);
        if (!f) continue;
        for (size_t k = 0; k < 4; k++) {
            int n = ns[k];
            float *x = malloc(sizeof(float) * n);
            int8_t q1[14336], q2[14336];
            int16_t g1[14336 / 32], g2[14336 / 32];
            for (int mode = 0; mode < 4; mode++) {
                for (int i = 0; i < n; i++) {
                    switch (mode) {
                    case 0: x[i] = frand(-5, 5); break;
                    case 1: x[i] = (float)((int)(rnd() % 255) - 127) + 0.5f; break; /* ties */
                    case 2: x[i] = 0.0f; break;
                    default: x[i] = frand(-1e-30f, 1e-30f); break;
                    }
                }
                if (mode == 1) x[n / 2] = 127.0f; /* scale 1: every x * id is a tie */
                float s1, s2;
                kern_quantize_row(x, n, q1, g1, &s1);
                f(x, n, q2, g2, &s2);
                ck_assert_msg(memcmp(&s1, &s2, sizeof s1) == 0, "%s scale mode %d",
                              kern_isa_name((kern_isa)isa), mode);
                ck_assert_msg(memcmp(q1, q2, n) == 0, "%s q mode %d n %d",
                              kern_isa_name((kern_isa)isa), mode, n);
                ck_assert_msg(memcmp(g1, g2, sizeof(int16_t) * (n / 32)) == 0, "%s gsum mode %d",
                              kern_isa_name((kern_isa)isa), mode);
            }
            free(x);
        }
    }
}
END_TEST

/* Every one of the 65536 halves, at every offset mod 8 and with tails of
 * every length, against the reference: bit-identical except NaN (F16C may
 * quiet a signalling NaN), which must stay NaN. */
START_TEST(f16_row_matches_reference)
{
    enum { N = 65536 + 16 };
    kt_f16 *h = malloc(sizeof *h * N);
    float *r = malloc(sizeof *r * N), *y = malloc(sizeof *y * N);
    for (int i = 0; i < N; i++)
        h[i] = (kt_f16)(i * 40503u); /* odd multiplier: a permutation of all halves */
    kern_f16_to_f32_row(h, r, N);
    for (int isa = 1; isa <= KERN_ISA_NEON_DOTPROD; isa++) {
        kern_f16_row_fn f = kern_get_f16_to_f32_isa((kern_isa)isa);
        if (!f) continue;
        for (int off = 0; off < 8; off++) {
            size_t n = (size_t)(N - 9 - off); /* every tail length 0..7 */
            memset(y, 0, sizeof *y * N);
            f(h + off, y + off, n);
            for (size_t i = 0; i < n; i++) {
                float a = r[off + i], b = y[off + i];
                ck_assert_msg(isnan(a) ? isnan(b) : memcmp(&a, &b, sizeof a) == 0,
                              "%s: half 0x%04x gives %a, reference %a",
                              kern_isa_name((kern_isa)isa), h[off + i], (double)b, (double)a);
            }
            ck_assert_msg(y[off + n] == 0.0f, "%s wrote past the row",
                          kern_isa_name((kern_isa)isa));
        }
    }
    ck_assert(kern_get_f16_to_f32() != NULL);
    free(h);
    free(r);
    free(y);
}
END_TEST

/* The blocked attention against the one-query-at-a-time reference, on awkward
 * query counts, key counts, head sizes and strides. Both outputs are convex
 * combinations of value rows; the bound covers the scores' rounding through
 * exp and the differently ordered sums. */
START_TEST(attn_block_matches_reference)
{
    static const int nqs[] = {1, 3, 4, 6, 9, 13}, Ts[] = {1, 5, 16, 17, 130, 300},
                     ns[] = {1, 7, 16, 64, 72};
    enum { QMAX = 13, TMAX = 300, NMAX = 72, QS = NMAX + 3, KTS = TMAX + 5, VS = NMAX + 9 };
    float *q = malloc(sizeof(float) * QMAX * QS), *kt = malloc(sizeof(float) * NMAX * KTS);
    float *v = malloc(sizeof(float) * TMAX * VS),
          *scratch = malloc(sizeof(float) * QMAX * (TMAX + 1));
    float *want = malloc(sizeof(float) * QMAX * VS), *got = malloc(sizeof(float) * QMAX * VS);
    for (int i = 0; i < QMAX * QS; i++)
        q[i] = frand(-1, 1);
    for (int i = 0; i < NMAX * KTS; i++)
        kt[i] = frand(-1, 1);
    for (int i = 0; i < TMAX * VS; i++)
        v[i] = frand(-2, 2);
    const kern_attn_ops *ref = kern_get_attn_isa(KERN_ISA_SCALAR);
    for (int isa = 1; isa <= KERN_ISA_NEON_DOTPROD; isa++) {
        const kern_attn_ops *o = kern_get_attn_isa((kern_isa)isa);
        if (!o) continue;
        for (int a = 0; a < 6; a++)
            for (int b = 0; b < 6; b++)
                for (int c = 0; c < 5; c++) {
                    int nq = nqs[a], T = Ts[b], n = ns[c];
                    float scale = 1.0f / sqrtf((float)n);
                    for (int i = 0; i < QMAX * VS; i++)
                        want[i] = got[i] = -7.0f;
                    ref->block(q, QS, kt, KTS, v, VS, nq, T, n, scale, want, VS, scratch);
                    o->block(q, QS, kt, KTS, v, VS, nq, T, n, scale, got, VS, scratch);
                    for (int i = 0; i < nq; i++)
                        for (int j = 0; j < VS; j++) {
                            float w = want[i * VS + j], g = got[i * VS + j];
                            if (j >= n) { /* past the head: untouched */
                                ck_assert(w == -7.0f && g == -7.0f);
                                continue;
                            }
                            double bound = (n + T + 16) * 4.0 * FLT_EPSILON * 2.0;
                            ck_assert_msg(fabs((double)g - w) <= bound,
                                          "%s block nq %d T %d n %d [%d][%d]: %g vs %g",
                                          kern_isa_name((kern_isa)isa), nq, T, n, i, j, (double)g,
                                          (double)w);
                        }
                }
    }
    /* One key: the output is that value row. */
    ref->block(q, QS, kt, KTS, v, VS, 2, 1, 8, 0.5f, want, VS, scratch);
    for (int j = 0; j < 8; j++)
        ck_assert(fabsf(want[VS + j] - v[j]) <= 1e-6f);
    free(q), free(kt), free(v), free(scratch), free(want), free(got);
}
END_TEST

/* A SIMD row function's output on the first n of len floats: within 4 ulp of
 * the reference's there, the input untouched past n. */
static void check_simd_row(const char *what, int isa, int n, int len, const float *got,
                           const float *want, const float *in)
{
    for (int i = 0; i < len; i++) {
        float w = i < n ? want[i] : in[i];
        ck_assert_msg(fabsf(got[i] - w) <= 4 * FLT_EPSILON * (1.0f + fabsf(w)),
                      "%s %s n %d [%d]: %g vs %g", kern_isa_name((kern_isa)isa), what, n, i,
                      (double)got[i], (double)w);
    }
}

/* kern_exp_approx against libm; GELU against its tanh definition, and the SIMD
 * rows against the reference on lengths around the vector widths. */
START_TEST(exp_and_gelu_match)
{
    for (float x = -87.0f; x <= 88.0f; x += 0.37f) {
        double e = exp((double)x), g = kern_exp_approx(x);
        ck_assert_msg(fabs(g - e) <= 4 * FLT_EPSILON * e, "exp(%g): %g vs %g", (double)x, g, e);
    }
    ck_assert(kern_exp_approx(-1000.0f) >= 0.0f && kern_exp_approx(-1000.0f) < 1e-37f);
    ck_assert(isfinite(kern_exp_approx(1000.0f)));
    enum { N = 203 };
    float x[N], want[N], got[N];
    for (int i = 0; i < N; i++)
        x[i] = i < 8 ? (float)(i * 30 - 120) : frand(-8, 8);
    for (int i = 0; i < N; i++) {
        double t =
            0.5 * x[i] * (1.0 + tanh(0.7978845608028654 * (x[i] + 0.044715 * x[i] * x[i] * x[i])));
        want[i] = x[i];
        kern_gelu_row(&want[i], 1);
        ck_assert_msg(fabs(want[i] - t) <= 1e-6 * (1.0 + fabs(t)), "gelu(%g): %g vs %g",
                      (double)x[i], (double)want[i], t);
    }
    for (int isa = 0; isa <= KERN_ISA_NEON_DOTPROD; isa++) {
        kern_gelu_fn f = kern_get_gelu_isa((kern_isa)isa);
        if (!f) continue;
        for (int n = 0; n <= N; n += n < 20 ? 1 : 61) {
            memcpy(got, x, sizeof x);
            f(got, (size_t)n);
            check_simd_row("gelu", isa, n, N, got, want, x);
        }
    }
    ck_assert(kern_get_gelu() != NULL);
}
END_TEST

/* SwiGLU's reference against SiLU(g) * u through libm, and the SIMD rows
 * against the reference on lengths around the vector widths; u stays unread
 * past n and g unwritten. */
START_TEST(swiglu_matches)
{
    enum { N = 203 };
    float g[N], u[N], want[N], got[N];
    for (int i = 0; i < N; i++) {
        g[i] = i < 8 ? (float)(i * 30 - 120) : frand(-12, 12);
        u[i] = frand(-3, 3);
    }
    for (int i = 0; i < N; i++) {
        double t = g[i] / (1.0 + exp(-(double)g[i])) * u[i];
        want[i] = g[i];
        kern_swiglu_row(&want[i], &u[i], 1);
        ck_assert_msg(fabs(want[i] - t) <= 1e-6 * (1.0 + fabs(t)), "swiglu(%g, %g): %g vs %g",
                      (double)g[i], (double)u[i], (double)want[i], t);
    }
    for (int isa = 0; isa <= KERN_ISA_NEON_DOTPROD; isa++) {
        kern_swiglu_fn f = kern_get_swiglu_isa((kern_isa)isa);
        if (!f) continue;
        for (int n = 0; n <= N; n += n < 20 ? 1 : 61) {
            memcpy(got, g, sizeof g);
            f(got, u, (size_t)n);
            check_simd_row("swiglu", isa, n, N, got, want, g);
        }
    }
    ck_assert(kern_get_swiglu() != NULL);
}
END_TEST

/* dots and wsum against the reference on awkward T, n and strides, within
 * the bound for two differently ordered float sums of k products. */
START_TEST(attn_ops_match_reference)
{
    static const int Ts[] = {1, 3, 4, 5, 17, 130}, ns[] = {1, 7, 8, 31, 64, 72};
    enum { TMAX = 130, NMAX = 72, STRIDE = NMAX + 5 };
    float *m = malloc(sizeof(float) * TMAX * STRIDE), q[NMAX], w[TMAX];
    float want[TMAX > NMAX ? TMAX : NMAX], got[TMAX > NMAX ? TMAX : NMAX];
    for (int i = 0; i < TMAX * STRIDE; i++)
        m[i] = frand(-2, 2);
    for (int i = 0; i < NMAX; i++)
        q[i] = frand(-2, 2);
    for (int t = 0; t < TMAX; t++)
        w[t] = frand(0, 1);
    const kern_attn_ops *ref = kern_get_attn_isa(KERN_ISA_SCALAR);
    ck_assert_ptr_nonnull(ref);
    ck_assert_ptr_nonnull(kern_get_attn());
    for (int isa = 1; isa <= KERN_ISA_NEON_DOTPROD; isa++) {
        const kern_attn_ops *o = kern_get_attn_isa((kern_isa)isa);
        if (!o) continue;
        const char *name = kern_isa_name((kern_isa)isa);
        for (int a = 0; a < 6; a++)
            for (int b = 0; b < 6; b++) {
                int T = Ts[a], n = ns[b];
                ref->dots(q, m, STRIDE, T, n, want);
                o->dots(q, m, STRIDE, T, n, got);
                for (int t = 0; t < T; t++) {
                    double bound = 0;
                    for (int i = 0; i < n; i++)
                        bound += fabs((double)q[i] * m[t * STRIDE + i]);
                    bound *= (n + 8) * (double)FLT_EPSILON;
                    ck_assert_msg(fabs((double)got[t] - want[t]) <= bound,
                                  "%s dots T %d n %d row %d: %g vs %g", name, T, n, t,
                                  (double)got[t], (double)want[t]);
                }
                ref->wsum(w, m, STRIDE, T, n, want);
                o->wsum(w, m, STRIDE, T, n, got);
                for (int i = 0; i < n; i++) {
                    double bound = 0;
                    for (int t = 0; t < T; t++)
                        bound += fabs((double)w[t] * m[t * STRIDE + i]);
                    bound *= (T + 8) * (double)FLT_EPSILON;
                    ck_assert_msg(fabs((double)got[i] - want[i]) <= bound,
                                  "%s wsum T %d n %d element %d: %g vs %g", name, T, n, i,
                                  (double)got[i], (double)want[i]);
                }
            }
    }
    free(m);
}
END_TEST

START_TEST(dispatch_levels)
{
    kern_isa best = kern_best_isa();
    ck_assert(kern_isa_supported(KERN_ISA_SCALAR));
    ck_assert(kern_isa_supported(best));
    ck_assert_str_eq(kern_isa_name(KERN_ISA_SCALAR), "scalar");
    ck_assert_str_eq(kern_isa_name(KERN_ISA_AVX512VNNI), "avx512vnni");
    ck_assert_str_eq(kern_isa_name(KERN_ISA_NEON_DOTPROD), "dotprod");
    /* make test-arm says which level each emulated CPU must get */
    const char *expect = getenv("TERN_EXPECT_ISA");
    if (expect) ck_assert_str_eq(kern_isa_name(best), expect);
    for (size_t ti = 0; ti < sizeof all_types / sizeof all_types[0]; ti++) {
        const kern_ops *o = kern_get(all_types[ti]);
        ck_assert_ptr_nonnull(o);
        ck_assert_int_eq(o->type, all_types[ti]);
        ck_assert_int_le(o->isa, best);
    }
    /* a level this CPU lacks gives NULL, never a kernel that would fault */
#if defined(__x86_64__)
    ck_assert_ptr_null(kern_get_isa(KT_TQ2_0, KERN_ISA_NEON));
#elif defined(__aarch64__)
    ck_assert_ptr_null(kern_get_isa(KT_TQ2_0, KERN_ISA_AVX2));
#endif
    ck_assert_ptr_nonnull(kern_get(KT_F32)); /* the reference covers the rest */
}
END_TEST

/* ---- pool ---- */

#define POOL_ITEMS 1000
typedef struct {
    atomic_int hits[POOL_ITEMS];
    atomic_int calls;
    int nth_seen;
} pool_ctx;

static void pool_body(void *ctx, int ith, int nth)
{
    pool_ctx *c = ctx;
    c->nth_seen = nth;
    atomic_fetch_add(&c->calls, 1);
    for (int i = ith; i < POOL_ITEMS; i += nth)
        atomic_fetch_add(&c->hits[i], 1);
}

static void pool_body_noop(void *ctx, int ith, int nth)
{
    (void)ctx;
    ck_assert(ith >= 0 && ith < nth);
}

static void pool_case(int threads)
{
    char err[128];
    pool *p = pool_create(threads, err, sizeof err);
    ck_assert_msg(p != NULL, "%s", err);
    ck_assert_int_eq(pool_threads(p), threads);
    static pool_ctx c;
    for (int round = 0; round < 500; round++) {
        memset(&c, 0, sizeof c);
        pool_run(p, pool_body, &c);
        ck_assert_int_eq(atomic_load(&c.calls), threads);
        ck_assert_int_eq(c.nth_seen, threads);
        for (int i = 0; i < POOL_ITEMS; i++)
            ck_assert_int_eq(atomic_load(&c.hits[i]), 1);
    }
    pool_destroy(p);
}

START_TEST(pool_one_thread)
{
    pool_case(1);
}
END_TEST

START_TEST(pool_many_threads)
{
    pool_case(2);
    pool_case(5);
}
END_TEST

/* Work claimed from a counter inside the shares (as mm_matmul does): every
 * item is done once, each share runs once, and nothing touches the context
 * after the call returns. */
typedef struct {
    atomic_int next, calls, after;
    atomic_int hits[POOL_ITEMS];
    int items;
    atomic_bool returned;
} dyn_ctx;

static void dyn_body(void *ctx, int ith, int nth)
{
    dyn_ctx *c = ctx;
    ck_assert(ith >= 0 && ith < nth);
    if (atomic_load(&c->returned)) atomic_fetch_add(&c->after, 1);
    atomic_fetch_add(&c->calls, 1);
    for (int i; (i = atomic_fetch_add(&c->next, 1)) < c->items;)
        atomic_fetch_add(&c->hits[i], 1);
}

START_TEST(pool_claimed_items)
{
    char err[128];
    static dyn_ctx c;
    for (int threads = 1; threads <= 5; threads += 2) {
        pool *p = pool_create(threads, err, sizeof err);
        ck_assert_msg(p != NULL, "%s", err);
        for (int round = 0; round < 2000; round++) {
            memset(&c, 0, sizeof c);
            c.items = round % 3 ? POOL_ITEMS : 1; /* 1: most shares find nothing left */
            pool_run(p, dyn_body, &c);
            atomic_store(&c.returned, true);
            int calls = atomic_load(&c.calls);
            ck_assert_int_eq(calls, threads);
            for (int i = 0; i < c.items; i++)
                ck_assert_int_eq(atomic_load(&c.hits[i]), 1);
            if (round % 100 == 0) pool_run(p, pool_body_noop, NULL);
            ck_assert_int_eq(atomic_load(&c.after), 0);
            ck_assert_int_eq(atomic_load(&c.calls), calls);
        }
        pool_destroy(p);
    }
}
END_TEST

START_TEST(pool_create_destroy_idle)
{
    char err[128];
    for (int i = 0; i < 20; i++) {
        pool *p = pool_create(3, err, sizeof err);
        ck_assert_ptr_nonnull(p);
        pool_destroy(p);
    }
    pool_destroy(NULL);
    pool *p = pool_create(0, err, sizeof err); /* one per CPU */
    ck_assert_ptr_nonnull(p);
    ck_assert_int_ge(pool_threads(p), 1);
    pool_destroy(p);
}
END_TEST

/* ---- mm_matmul ---- */

static void mm_case(kt_type t, int rows, int cols, int n, int threads)
{
    char err[128];
    pool *p = threads ? pool_create(threads, err, sizeof err) : NULL;
    size_t stride;
    uint8_t *w = make_weights(t, rows, cols, 0, &stride);
    mm_weight mw = {t, w, rows, cols};
    ck_assert_int_eq(mm_check(&mw, err, sizeof err), 0);
    acts A;
    make_acts(&A, n, cols, 0);
    size_t sb = mm_scratch_bytes(&mw, n);
    void *scratch = sb ? aligned_alloc(64, (sb + 63) / 64 * 64) : NULL;
    float *got = aligned_alloc(64, ((sizeof(float) * rows * n) + 63) / 64 * 64);
    float *want = malloc(sizeof(float) * rows * n);
    ck_assert_int_eq(mm_matmul(p, &mw, A.x, n, got, scratch), 0);
    kern_ref_ops(t)->gemm(w, stride, 0, rows, &A.a, want, (size_t)rows);
    size_t bb;
    int nb = cols / blk_of(t, &bb);
    for (int j = 0; j < n; j++)
        for (int r = 0; r < rows; r++) {
            double tol = ((is_float(t) ? cols : nb) + 8) * (double)FLT_EPSILON *
                             abs_dot(t, w, stride, r, &A, j) +
                         1e-30;
            ck_assert_msg(fabs((double)got[j * rows + r] - want[j * rows + r]) <= tol,
                          "type %d rows %d n %d threads %d: [%d][%d] %g vs %g", t, rows, n, threads,
                          j, r, got[j * rows + r], want[j * rows + r]);
        }
    free(got);
    free(want);
    free(scratch);
    free(w);
    free_acts(&A);
    pool_destroy(p);
}

START_TEST(mm_matches_reference)
{
    for (size_t ti = 0; ti < sizeof all_types / sizeof all_types[0]; ti++) {
        kt_type t = all_types[ti];
        int cols = is_float(t) ? 96 : 768;
        mm_case(t, 1, cols, 1, 0);
        mm_case(t, 37, cols, 1, 2);
        mm_case(t, 100, cols, 5, 3);
        mm_case(t, 33, cols, 9, 1);
        mm_case(t, 2000, cols, 5, 3); /* over MM_SPLIT_BYTES per thread for every type: split */
    }
}
END_TEST

/* mm_matmul_multi gives each weight exactly what mm_matmul gives it alone:
 * mixed integer types and row counts in one job, and a float weight among
 * integer ones (run one after another). */
static void mm_multi_case(const kt_type *types, const int *rows, int nw, int n, int threads)
{
    char err[128];
    int cols = 768;
    pool *p = threads ? pool_create(threads, err, sizeof err) : NULL;
    uint8_t *w[3];
    mm_weight mw[3];
    const mm_weight *ws[3];
    float *got[3], *want[3];
    size_t sb = 0, stride;
    acts A;
    make_acts(&A, n, cols, 0);
    for (int i = 0; i < nw; i++) {
        w[i] = make_weights(types[i], rows[i], cols, i % 2, &stride);
        mw[i] = (mm_weight){types[i], w[i], rows[i], cols};
        ws[i] = &mw[i];
        size_t b = mm_scratch_bytes(&mw[i], n);
        sb = b > sb ? b : sb;
        got[i] = aligned_alloc(64, ((sizeof(float) * rows[i] * n) + 63) / 64 * 64);
        want[i] = aligned_alloc(64, ((sizeof(float) * rows[i] * n) + 63) / 64 * 64);
    }
    void *scratch = sb ? aligned_alloc(64, (sb + 63) / 64 * 64) : NULL;
    ck_assert_int_eq(mm_matmul_multi(p, ws, nw, A.x, n, got, scratch), 0);
    for (int i = 0; i < nw; i++) {
        ck_assert_int_eq(mm_matmul(p, ws[i], A.x, n, want[i], scratch), 0);
        ck_assert_msg(!memcmp(got[i], want[i], sizeof(float) * rows[i] * n),
                      "part %d (type %d, %d rows) differs, n %d threads %d", i, types[i], rows[i],
                      n, threads);
        free(got[i]);
        free(want[i]);
        free(w[i]);
    }
    free(scratch);
    free_acts(&A);
    pool_destroy(p);
}

START_TEST(mm_multi_matches_single)
{
    const kt_type ints[] = {KT_TQ2_0, KT_Q2_0, KT_Q8_0};
    const int rows[] = {1000, 37, 500};
    const kt_type mixed[] = {KT_TQ1_0, KT_F16};
    const int mrows[] = {300, 64};
    for (int threads = 0; threads <= 3; threads++) {
        mm_multi_case(ints, rows, 3, 1, threads);
        mm_multi_case(ints, rows, 2, 5, threads);
        mm_multi_case(mixed, mrows, 2, 3, threads);
    }
}
END_TEST

/* mm_matmul_pair: both outputs are mm_matmul's bits, and the epilogue sees
 * every row once, after both of its outputs are written (it records the
 * sum of the two, which it can only get right then). */
typedef struct {
    const float *a, *b;
    float *sum;
    int *seen;
    int rows, n;
} pair_check;

static void pair_epi(void *ctx, int r0, int r1)
{
    pair_check *pc = ctx;
    ck_assert(0 <= r0 && r0 < r1 && r1 <= pc->rows);
    for (int r = r0; r < r1; r++) {
        pc->seen[r]++;
        for (int j = 0; j < pc->n; j++)
            pc->sum[j * pc->rows + r] = pc->a[j * pc->rows + r] + pc->b[j * pc->rows + r];
    }
}

static void mm_pair_case(kt_type ta, kt_type tb, int rows, int n, int threads)
{
    char err[128];
    int cols = 768;
    pool *p = threads ? pool_create(threads, err, sizeof err) : NULL;
    size_t stride, fl = ((sizeof(float) * rows * n) + 63) / 64 * 64;
    acts A;
    make_acts(&A, n, cols, 0);
    uint8_t *wa = make_weights(ta, rows, cols, 0, &stride),
            *wb = make_weights(tb, rows, cols, 1, &stride);
    mm_weight ma = {ta, wa, rows, cols}, mb = {tb, wb, rows, cols};
    size_t sa = mm_scratch_bytes(&ma, n), sbb = mm_scratch_bytes(&mb, n), sb = sa > sbb ? sa : sbb;
    void *scratch = sb ? aligned_alloc(64, (sb + 63) / 64 * 64) : NULL;
    float *ga = aligned_alloc(64, fl), *gb = aligned_alloc(64, fl), *sum = aligned_alloc(64, fl);
    float *wa_ = aligned_alloc(64, fl), *wb_ = aligned_alloc(64, fl);
    pair_check pc = {ga, gb, sum, calloc((size_t)rows, sizeof(int)), rows, n};
    ck_assert_int_eq(mm_matmul_pair(p, &ma, &mb, A.x, n, ga, gb, pair_epi, &pc, scratch), 0);
    ck_assert_int_eq(mm_matmul(p, &ma, A.x, n, wa_, scratch), 0);
    ck_assert_int_eq(mm_matmul(p, &mb, A.x, n, wb_, scratch), 0);
    ck_assert_msg(!memcmp(ga, wa_, sizeof(float) * rows * n) &&
                      !memcmp(gb, wb_, sizeof(float) * rows * n),
                  "types %d/%d rows %d n %d threads %d differ", ta, tb, rows, n, threads);
    for (int r = 0; r < rows; r++) {
        ck_assert_msg(pc.seen[r] == 1, "row %d seen %d times", r, pc.seen[r]);
        for (int j = 0; j < n; j++)
            ck_assert(sum[j * rows + r] == wa_[j * rows + r] + wb_[j * rows + r]);
    }
    free(pc.seen);
    free(ga);
    free(gb);
    free(sum);
    free(wa_);
    free(wb_);
    free(scratch);
    free(wa);
    free(wb);
    free_acts(&A);
    pool_destroy(p);
}

START_TEST(mm_pair_matches_single)
{
    for (int threads = 0; threads <= 3; threads++) {
        mm_pair_case(KT_Q2_0, KT_Q2_0, 1536, 1, threads); /* split: chunks of both */
        mm_pair_case(KT_TQ2_0, KT_Q8_0, 37, 5, threads);  /* one job, small */
        mm_pair_case(KT_Q2_0, KT_F16, 100, 2, threads);   /* integer and float: one by one */
    }
}
END_TEST

START_TEST(mm_rejects_bad_shapes)
{
    char err[128];
    mm_weight w = {KT_TQ2_0, NULL, 4, 100};
    ck_assert_int_eq(mm_check(&w, err, sizeof err), -1);
    ck_assert(strstr(err, "100") != NULL);
    ck_assert_int_eq(mm_matmul(NULL, &w, NULL, 1, NULL, NULL), -1);
    mm_weight bad = {(kt_type)99, NULL, 4, 256};
    ck_assert_int_eq(mm_check(&bad, err, sizeof err), -1);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("kernels");
    TCase *k = tcase_create("kernels");
    tcase_set_timeout(k, 600);
    tcase_add_test(k, type_table_rows);
    tcase_add_test(k, dispatch_levels);
    tcase_add_test(k, quantize_bit_identical);
    tcase_add_test(k, f16_row_matches_reference);
    tcase_add_test(k, attn_ops_match_reference);
    tcase_add_test(k, attn_block_matches_reference);
    tcase_add_test(k, exp_and_gelu_match);
    tcase_add_test(k, swiglu_matches);
    tcase_add_test(k, tq1_all_ff_is_plus_one);
    tcase_add_test(k, simd_exact);
    tcase_add_test(k, simd_random);
    tcase_add_test(k, simd_many_rows_exact);
    tcase_add_test(k, simd_many_rows_random);
    tcase_add_test(k, overflow_worst_case);
    tcase_add_test(k, decode_every_byte);
    tcase_add_test(k, few_rows_same_bits_as_alone);
    suite_add_tcase(s, k);
    TCase *p = tcase_create("pool");
    tcase_set_timeout(p, 120);
    tcase_add_test(p, pool_one_thread);
    tcase_add_test(p, pool_many_threads);
    tcase_add_test(p, pool_create_destroy_idle);
    tcase_add_test(p, pool_claimed_items);
    suite_add_tcase(s, p);
    TCase *m = tcase_create("matmul");
    tcase_set_timeout(m, 120);
    tcase_add_test(m, mm_matches_reference);
    tcase_add_test(m, mm_multi_matches_single);
    tcase_add_test(m, mm_pair_matches_single);
    tcase_add_test(m, mm_rejects_bad_shapes);
    suite_add_tcase(s, m);
    return s;
}

int main(void)
{
    SRunner *r = srunner_create(suite());
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
