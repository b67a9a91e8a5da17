/* Prints the relative RMS error of k-means, absmean and TWN ternarization
 * (per row) on seeded Gaussian and Laplacian matrices, plus binary for
 * reference. Not a test: a report for docs and the lead.
 *     build/tests/quant_report
 * For a model file's matrices use: tern quantize IN OUT --type tq2_0 --report */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/quant.h"

static uint64_t rng_state = 2024;

static double urand(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return ((double)((rng_state * 2685821657736338717ull) >> 11) + 0.5) / 9007199254740992.0;
}

static float sample(int dist)
{
    if (dist == 0) return (float)(sqrt(-2.0 * log(urand())) * cos(6.283185307179586 * urand()));
    double u = urand() - 0.5;
    return (float)(u < 0 ? log(1.0 + 2.0 * u) : -log(1.0 - 2.0 * u));
}

int main(void)
{
    static const struct {
        const char *name;
        int dist;
        int rows, n;
    } cases[] = {
        {"gaussian 256x256", 0, 256, 256},     {"gaussian 576x1536", 0, 576, 1536},
        {"gaussian 2048x2048", 0, 2048, 2048}, {"laplacian 256x256", 1, 256, 256},
        {"laplacian 576x1536", 1, 576, 1536},  {"laplacian 2048x2048", 1, 2048, 2048},
    };
    printf("%-22s %9s %9s %9s %9s\n", "matrix (per-row scale)", "kmeans", "absmean", "twn",
           "binary");
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int64_t count = (int64_t)cases[c].rows * cases[c].n;
        float *w = malloc((size_t)count * sizeof(float));
        int8_t *t = malloc((size_t)count);
        float *sc = malloc((size_t)cases[c].rows * sizeof(float));
        if (!w || !t || !sc) return 1;
        for (int64_t i = 0; i < count; i++)
            w[i] = 0.02f * sample(cases[c].dist);
        double e[4];
        for (int m = 0; m < 3; m++)
            e[m] = quant_matrix_ternary(w, cases[c].rows, cases[c].n, (quant_method)m, false, false,
                                        t, sc);
        e[3] = quant_matrix_ternary(w, cases[c].rows, cases[c].n, QUANT_KMEANS, false, true, t, sc);
        printf("%-22s %9.4f %9.4f %9.4f %9.4f\n", cases[c].name, e[0], e[1], e[2], e[3]);
        free(w);
        free(t);
        free(sc);
    }
    return 0;
}
