/* CPU time of one decode step of N slots (N = 1, 2, 4, 8) through the engine
 * API, per row and relative to one row: what batching can give ternd's
 * aggregate tokens/s when the cores are busy. Process CPU time, so a loaded
 * machine's waiting does not count; best of several passes.
 *
 *   cc -O2 -Isrc bench/eng_step_rows.c build/src/engine/libternengine.a \
 *      build/src/kernels/libternkernels.a -lm -lpthread -o eng_step_rows
 *   ./eng_step_rows MODEL.gguf [threads] [passes] [position]
 * Each slot is prefilled to the position (default 96), then every pass runs
 * 8 steps of N rows, truncating the slots back after each. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "engine/engine.h"

static double cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.gguf [threads] [passes] [position]\n", argv[0]);
        return 2;
    }
    int threads = argc > 2 ? atoi(argv[2]) : 1, passes = argc > 3 ? atoi(argv[3]) : 5;
    int pos = argc > 4 ? atoi(argv[4]) : 96;
    char err[256];
    eng_model *m;
    if (eng_model_load(argv[1], NULL, &m, err, sizeof err)) {
        fprintf(stderr, "%s: %s\n", argv[1], err);
        return 1;
    }
    eng_params p = eng_default_params();
    p.n_slots = 8;
    p.n_ctx = 512;
    p.n_batch = 128;
    p.n_threads = threads;
    p.text_only = true;
    eng_ctx *c;
    if (eng_ctx_create(m, &p, &c, err, sizeof err)) {
        fprintf(stderr, "context: %s\n", err);
        return 1;
    }
    int32_t toks[128];
    for (int i = 0; i < 128; i++)
        toks[i] = 100 + (i * 37) % 1000;
    for (int s = 0; s < 8; s++) {
        eng_item it = {.slot = s, .n_tokens = pos, .tokens = toks, .pos = 0};
        if (eng_step(c, &it, 1, err, sizeof err)) {
            fprintf(stderr, "prefill: %s\n", err);
            return 1;
        }
    }
    printf("kernels %s, %d threads, position %d; CPU ms per step, per row (ratio to 1 row)\n",
           eng_kernels_name(), threads, pos);
    static const int counts[] = {1, 2, 4, 8};
    double one = 0;
    for (int ci = 0; ci < 4; ci++) {
        int n = counts[ci];
        double best = 1e30;
        for (int pass = 0; pass < passes; pass++) {
            double t0 = cpu_ms();
            for (int k = 0; k < 8; k++) {
                eng_item it[8];
                for (int s = 0; s < n; s++)
                    it[s] = (eng_item){.slot = s,
                                       .n_tokens = 1,
                                       .tokens = toks + k,
                                       .pos = pos + k,
                                       .want_logits = true};
                if (eng_step(c, it, n, err, sizeof err)) {
                    fprintf(stderr, "step: %s\n", err);
                    return 1;
                }
            }
            double dt = (cpu_ms() - t0) / 8;
            if (dt < best) best = dt;
            for (int s = 0; s < n; s++)
                if (eng_slot_truncate(c, s, pos, err, sizeof err)) {
                    fprintf(stderr, "truncate: %s\n", err);
                    return 1;
                }
        }
        if (ci == 0) one = best;
        printf(
            "  %d rows: %.2f ms, %.2f ms per row (%.2fx); %d rows' tokens/s over 1 row's: %.2fx\n",
            n, best, best / n, best / n / one, n, n * one / best);
    }
    eng_ctx_destroy(c);
    eng_model_free(m);
    return 0;
}
