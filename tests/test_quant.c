/* Quantizers: k-means behaviour, the alternatives, and packing into types. */
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/quant.h"
#include "engine/types.h"
#include "testutil.h"

static uint64_t rng_state;

static double urand(void) /* (0, 1) */
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return ((double)((rng_state * 2685821657736338717ull) >> 11) + 0.5) / 9007199254740992.0;
}

static float gauss(void)
{
    return (float)(sqrt(-2.0 * log(urand())) * cos(6.283185307179586 * urand()));
}

static float laplace(void)
{
    double u = urand() - 0.5;
    return (float)(u < 0 ? log(1.0 + 2.0 * u) : -log(1.0 - 2.0 * u));
}

static void fill(float *w, int64_t n, int laplacian, float std)
{
    for (int64_t i = 0; i < n; i++)
        w[i] = std * (laplacian ? laplace() : gauss());
}

START_TEST(test_kmeans_monotone_converges)
{
    enum { N = 4096 };
    static float w[N];
    int8_t t[N];
    double err[QUANT_KMEANS_MAX_ROUNDS + 1];
    for (int dist = 0; dist < 2; dist++) {
        rng_state = 1234 + (uint64_t)dist;
        for (int row = 0; row < 8; row++) {
            fill(w, N, dist, 0.02f);
            int rounds = -1;
            float m = quant_kmeans(w, N, QUANT_KMEANS_MAX_ROUNDS, t, err, &rounds);
            ck_assert_int_gt(rounds, 0);
            ck_assert_int_lt(rounds, QUANT_KMEANS_MAX_ROUNDS); /* converged */
            for (int k = 0; k < rounds; k++)
                ck_assert_msg(err[k + 1] <= err[k] + 1e-12, "round %d: %g -> %g", k, err[k],
                              err[k + 1]);
            ck_assert(err[rounds] < err[0]);
            /* a fixed point: m is the mean |w| of the weights above m/2 */
            double s = 0;
            int cnt = 0;
            for (int i = 0; i < N; i++)
                if (fabsf(w[i]) > m / 2) {
                    s += fabsf(w[i]);
                    cnt++;
                    ck_assert_int_eq(t[i], w[i] > 0 ? 1 : -1);
                } else {
                    ck_assert_int_eq(t[i], 0);
                }
            ck_assert(fabs(s / cnt - m) <= 1e-6 * m);
        }
    }
}
END_TEST

START_TEST(test_kmeans_beats_alternatives)
{
    enum { ROWS = 16, N = 2048 };
    float *w = malloc(sizeof(float) * ROWS * N);
    int8_t *t = malloc(ROWS * N);
    float sc[ROWS];
    for (int dist = 0; dist < 2; dist++) {
        rng_state = 99 + (uint64_t)dist;
        fill(w, (int64_t)ROWS * N, dist, 0.05f);
        for (int r = 0; r < ROWS; r++) {
            const float *wr = w + (size_t)r * N;
            double ek = quant_matrix_ternary(wr, 1, N, QUANT_KMEANS, false, false, t, sc);
            double ea = quant_matrix_ternary(wr, 1, N, QUANT_ABSMEAN, false, false, t, sc);
            double et = quant_matrix_ternary(wr, 1, N, QUANT_TWN, false, false, t, sc);
            ck_assert_msg(ek < ea && ek < et, "%s row %d: kmeans %g absmean %g twn %g",
                          dist ? "laplace" : "gauss", r, ek, ea, et);
        }
        /* and over the whole matrix, per tensor */
        double ek = quant_matrix_ternary(w, ROWS, N, QUANT_KMEANS, true, false, t, sc);
        double ea = quant_matrix_ternary(w, ROWS, N, QUANT_ABSMEAN, true, false, t, sc);
        double et = quant_matrix_ternary(w, ROWS, N, QUANT_TWN, true, false, t, sc);
        ck_assert(ek < ea && ek < et);
        for (int r = 1; r < ROWS; r++)
            ck_assert(sc[r] == sc[0]);
    }
    free(w);
    free(t);
}
END_TEST

START_TEST(test_alternatives_by_hand)
{
    /* mean|w| = (4 + 1 + 0.25 + 3 + 1.75) / 5 = 2, all exact in binary */
    float w[5] = {4.0f, -1.0f, 0.25f, -3.0f, 1.75f};
    int8_t t[5];
    float s = quant_absmean(w, 5, t);
    ck_assert(fabsf(s - 2.0f) < 1e-6f);
    int8_t want_a[5] = {1, -1, 0, -1, 1}; /* -1/2 = -0.5 rounds away from zero */
    ck_assert_mem_eq(t, want_a, 5);

    /* TWN: threshold 1.4, above it 4, 3, 1.75 -> scale 8.75 / 3 */
    s = quant_twn(w, 5, t);
    ck_assert(fabsf(s - 8.75f / 3) < 1e-6f);
    int8_t want_t[5] = {1, 0, 0, -1, 1};
    ck_assert_mem_eq(t, want_t, 5);

    s = quant_binary(w, 5, t);
    ck_assert(fabsf(s - 2.0f) < 1e-6f);
    int8_t want_b[5] = {1, -1, 1, -1, 1};
    ck_assert_mem_eq(t, want_b, 5);

    /* k-means: m0 = 2; above 1: {4, 3, 1.75} -> 8.75 / 3; above half of
     * that, the same set: converged after one update */
    int rounds;
    s = quant_kmeans(w, 5, 10, t, NULL, &rounds);
    ck_assert(fabsf(s - 8.75f / 3) < 1e-6f);
    ck_assert_int_eq(rounds, 1);
    ck_assert_mem_eq(t, want_t, 5);

    float z[64] = {0};
    int8_t tz[64];
    double e[11];
    ck_assert(quant_kmeans(z, 64, 10, tz, e, &rounds) == 0.0f);
    ck_assert(e[0] == 0.0);
    for (int i = 0; i < 64; i++)
        ck_assert_int_eq(tz[i], 0);
}
END_TEST

START_TEST(test_method_names)
{
    quant_method m;
    ck_assert(quant_method_by_name("kmeans", &m) && m == QUANT_KMEANS);
    ck_assert(quant_method_by_name("TWN", &m) && m == QUANT_TWN);
    ck_assert(quant_method_by_name("absmean", &m) && m == QUANT_ABSMEAN);
    ck_assert(!quant_method_by_name("gptq", &m));
    ck_assert_str_eq(quant_method_name(QUANT_TWN), "twn");
}
END_TEST

/* The stored blocks hold exactly f16(row scale) * t: the per-row scale is
 * repeated in every block and nothing is rounded twice. */
START_TEST(test_to_type_exact)
{
    enum { ROWS = 5, N = 768 };
    static float w[ROWS * N], y[N];
    static int8_t t[ROWS * N];
    float sc[ROWS];
    rng_state = 7;
    fill(w, ROWS * N, 0, 0.03f);
    kt_type types[] = {KT_TQ2_0, KT_TQ1_0, KT_Q2_0, KT_Q1_0};
    for (size_t k = 0; k < 4; k++) {
        const ttype_info *ti = ttype_get(types[k]);
        size_t rb = ttype_row_bytes(ti, N);
        unsigned char *buf = malloc(rb * ROWS);
        char err[128];
        double rel = -1;
        ck_assert_int_eq(
            quant_to_type(w, ROWS, N, types[k], QUANT_KMEANS, false, buf, &rel, err, sizeof err),
            0);
        double want = quant_matrix_ternary(w, ROWS, N, QUANT_KMEANS, false, ti->binary, t, sc);
        ck_assert_msg(fabs(rel - want) < 1e-3 * want, "%s: %g vs %g", ti->name, rel, want);
        for (int r = 0; r < ROWS; r++) {
            ti->to_float(types[k], buf + r * rb, y, N);
            float s = kt_f16_to_f32(kt_f32_to_f16(sc[r]));
            for (int i = 0; i < N; i++)
                ck_assert(y[i] == s * t[r * N + i]);
        }
        free(buf);
    }
}
END_TEST

START_TEST(test_to_type_conversions)
{
    enum { ROWS = 3, N = 64 };
    float w[ROWS * N];
    rng_state = 11;
    fill(w, ROWS * N, 1, 1.0f);
    unsigned char buf[ROWS * N * 4];
    char err[128];
    double rel;
    ck_assert_int_eq(quant_to_type(w, ROWS, N, KT_F32, QUANT_KMEANS, false, buf, &rel, err, 128),
                     0);
    ck_assert(rel == 0.0);
    ck_assert_int_eq(quant_to_type(w, ROWS, N, KT_F16, QUANT_KMEANS, false, buf, &rel, err, 128),
                     0);
    ck_assert(rel > 0 && rel < 1e-3);
    ck_assert_int_eq(quant_to_type(w, ROWS, N, KT_BF16, QUANT_KMEANS, false, buf, &rel, err, 128),
                     0);
    ck_assert(rel > 0 && rel < 5e-3);
    ck_assert_int_eq(quant_to_type(w, ROWS, N, KT_Q8_0, QUANT_KMEANS, false, buf, &rel, err, 128),
                     0);
    ck_assert(rel > 0 && rel < 2e-2);
    /* 64 is not a multiple of TQ2_0's 256 */
    ck_assert_int_eq(quant_to_type(w, ROWS, N, KT_TQ2_0, QUANT_KMEANS, false, buf, &rel, err, 128),
                     -1);
    ck_assert_ptr_nonnull(strstr(err, "tq2_0"));
}
END_TEST

START_TEST(test_pick_type)
{
    kt_type got;
    ck_assert(quant_pick_type(KT_TQ2_0, 768, &got) && got == KT_TQ2_0);
    ck_assert(quant_pick_type(KT_TQ2_0, 576, &got) && got == KT_Q2_0);
    ck_assert(quant_pick_type(KT_TQ1_0, 96, &got) && got == KT_Q8_0);
    ck_assert(quant_pick_type(KT_Q1_0, 576, &got) && got == KT_Q8_0);
    ck_assert(quant_pick_type(KT_Q1_0, 384, &got) && got == KT_Q1_0);
    ck_assert(quant_pick_type(KT_Q2_0, 96, &got) && got == KT_Q8_0);
    ck_assert(!quant_pick_type(KT_TQ2_0, 100, &got));
    ck_assert(!quant_pick_type(KT_Q8_0, 48, &got));
    ck_assert(quant_pick_type(KT_F16, 7, &got) && got == KT_F16);
    ck_assert_int_eq(quant_llama_ftype(KT_TQ2_0), 37);
    ck_assert_int_eq(quant_llama_ftype(KT_TQ1_0), 36);
    ck_assert_int_eq(quant_llama_ftype(KT_Q1_0), 40);
    ck_assert_int_eq(quant_llama_ftype(KT_Q2_0), 41);
    ck_assert_int_eq(quant_llama_ftype(KT_BF16), 32);
    ck_assert_int_eq(quant_llama_ftype(KT_Q8_0), 7);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("quant");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_kmeans_monotone_converges);
    tcase_add_test(tc, test_kmeans_beats_alternatives);
    tcase_add_test(tc, test_alternatives_by_hand);
    tcase_add_test(tc, test_method_names);
    tcase_add_test(tc, test_to_type_exact);
    tcase_add_test(tc, test_to_type_conversions);
    tcase_add_test(tc, test_pick_type);
    suite_add_tcase(s, tc);
    return tu_run(s, CK_FORK_GETENV);
}
