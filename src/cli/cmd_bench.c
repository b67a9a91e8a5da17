/* tern bench: speed measurements, like llama-bench.
 *
 *   tern bench --kernels [--threads N] [--reps R] [--types LIST] [--json]
 *       per weight type and shape, decode GEMV (1 activation row) and
 *       prefill GEMM (512 rows) through mm_matmul on the thread pool:
 *       time (mean +- stddev over repetitions), GB/s of weights read, GOP/s
 *       (2 ops per weight per activation row) and, for GEMV, the fraction of
 *       this machine's read bandwidth, measured here by streaming a buffer
 *       far larger than the last-level cache with all threads. "cpu ms" is
 *       the process's CPU time per call over all threads and "cores had"
 *       is cpu ms / wall ms: below the thread count, other processes had
 *       the cores part of the time (the figures are then pessimistic).
 *   tern bench -m TEXT.gguf [--mmproj MMPROJ.gguf] [-t N,N...] [-r R]
 *       [-p 512] [-n 128] [--json]
 *       per model file and thread count: prompt processing tokens/s (one
 *       eng_step over p tokens from an empty cache: pp512), generation
 *       tokens/s (n single-token steps from an empty cache: tg128), image
 *       encode ms (one tile, with --mmproj) and the process's peak RSS;
 *       then the encode's milliseconds per layer kind (patch embed, qkv,
 *       attention, out proj, ffn up, gelu, ffn down, norms, connector).
 *       With --bandwidth, also per thread count: the read bandwidth measured
 *       with that many threads, the weight bytes one decoded token reads and
 *       tg as a fraction of the ceiling bytes/token x tokens/s / bandwidth.
 *       With --format json|SCHEMA.json, also per thread count: generation with
 *       sampling (the default sampler, seed 1), unconstrained ("tg-sampled") and
 *       constrained to the format ("tg-format"; a complete answer starts the
 *       next), and their ratio: what constrained decoding costs.
 *   tern bench --bandwidth [-t N]
 *       the read-bandwidth probe alone.
 *
 * Shapes: 4096x14336 (a 7B-class FFN matrix, the shape llama.cpp's numbers
 * are quoted for) run twice, "hot" (the same matrix every call, as
 * llama.cpp's test-backend-ops measures it) and "cold" (cycling through
 * copies whose total is >= 512 MiB, so every call reads from DRAM: the
 * decode case of a real model); and 2048x2048, which fits in cache. */
#include <getopt.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli_util.h"
#include "cli/commands.h"
#include "engine/engine.h"
#include "engine/gguf.h"
#include "engine/grammar.h"
#include "engine/matmul.h"
#include "engine/pool.h"
#include "engine/sampler.h"
#include "engine/types.h"
#include "kernels/kernels.h"

#define COLD_BYTES (512.0 * 1024 * 1024)
#define MIN_REP_SECONDS 0.2 /* each repetition loops calls for at least this */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* CPU time of the whole process (all threads): on a shared machine, wall
 * time / (CPU time / threads) shows how much of the cores we really had. */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The types measured, in output order; what each one is (name, block,
 * bytes) the type table says. */
static const kt_type types[] = {KT_TQ2_0, KT_TQ1_0, KT_Q2_0, KT_Q1_0, KT_Q8_0, KT_F16};
#define N_TYPES (int)(sizeof types / sizeof types[0])

typedef struct {
    int rows, cols, act_rows;
    int cold; /* cycle through copies that together exceed the LLC */
} shape;

static const shape shapes[] = {
    {4096, 14336, 1, 0},   {4096, 14336, 1, 1},  {2048, 2048, 1, 0},
    {4096, 14336, 512, 0}, {2048, 2048, 512, 0},
};
#define N_SHAPES (int)(sizeof shapes / sizeof shapes[0])

/* ---- read bandwidth: every thread sums its slice of a big buffer ---- */

typedef struct {
    const uint64_t *buf;
    size_t words;
    uint64_t sink[64];
} bw_ctx;

static void bw_body(void *ctx, int ith, int nth)
{
    bw_ctx *c = ctx;
    size_t per = c->words / nth, lo = per * ith, hi = ith == nth - 1 ? c->words : lo + per;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = lo; i + 4 <= hi; i += 4) {
        s0 += c->buf[i];
        s1 += c->buf[i + 1];
        s2 += c->buf[i + 2];
        s3 += c->buf[i + 3];
    }
    c->sink[(ith * 8) % 64] = s0 + s1 + s2 + s3; /* keeps the loads alive */
}

/* Best of a few passes over 1 GiB: the machine's read ceiling in GB/s. */
static double read_bandwidth(pool *p)
{
    size_t bytes = (size_t)1 << 30;
    uint64_t *buf = aligned_alloc(64, bytes);
    if (!buf) return 0;
    memset(buf, 1, bytes);
    bw_ctx c = {.buf = buf, .words = bytes / 8};
    double best = 0;
    for (int i = 0; i < 5; i++) {
        double t0 = now();
        pool_run(p, bw_body, &c);
        double gbs = bytes / (now() - t0) / 1e9;
        if (gbs > best) best = gbs;
    }
    free(buf);
    return best;
}

/* ---- one measurement ---- */

typedef struct {
    const char *type;
    const char *kernel;
    shape s;
    double weight_mb;
    int copies;
    double mean_ms, sd_ms, cpu_ms, gbs, gops, bw_frac;
} result;

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;
static uint8_t rnd8(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint8_t)((rng_state * 2685821657736338717ull) >> 56);
}

/* Random bytes make valid blocks once each block's f16 scale is finite. */
static void fill_weights(const ttype_info *ty, uint8_t *w, size_t row_bytes, int rows)
{
    size_t total = row_bytes * rows;
    for (size_t i = 0; i < total; i++)
        w[i] = rnd8();
    if (ty->id == KT_F16) {
        for (size_t i = 0; i < total / 2; i++)
            ((kt_f16 *)w)[i] = kt_f32_to_f16((float)(rnd8() - 128) / 128.0f);
        return;
    }
    size_t off = ty->id == KT_TQ2_0   ? offsetof(blk_tq2_0, d)
                 : ty->id == KT_TQ1_0 ? offsetof(blk_tq1_0, d)
                                      : 0;
    kt_f16 one = kt_f32_to_f16(0.01f);
    size_t bytes = (size_t)ty->block_bytes;
    for (size_t b = 0; b < total / bytes; b++)
        memcpy(w + b * bytes + off, &one, sizeof one);
}

static int measure(pool *p, const ttype_info *ty, shape s, int reps, double bw, result *res)
{
    size_t row_bytes = ttype_row_bytes(ty, s.cols);
    size_t mat = row_bytes * s.rows;
    int copies = s.cold ? (int)ceil(COLD_BYTES / mat) : 1;
    uint8_t *w = malloc(mat * copies);
    float *x = malloc(sizeof(float) * s.cols * s.act_rows);
    float *out = aligned_alloc(64, (sizeof(float) * s.rows * s.act_rows + 63) / 64 * 64);
    mm_weight mw = {ty->id, NULL, s.rows, s.cols};
    size_t sb = mm_scratch_bytes(&mw, s.act_rows);
    void *scratch = sb ? aligned_alloc(64, (sb + 63) / 64 * 64) : NULL;
    if (!w || !x || !out || (sb && !scratch)) {
        free(w), free(x), free(out), free(scratch);
        fprintf(stderr, "tern bench: out of memory for %s %dx%d\n", ty->name, s.rows, s.cols);
        return -1;
    }
    for (int c = 0; c < copies; c++)
        fill_weights(ty, w + mat * c, row_bytes, s.rows);
    for (size_t i = 0; i < (size_t)s.cols * s.act_rows; i++)
        x[i] = (float)(rnd8() - 128) / 64.0f;

    /* calls per repetition: enough for MIN_REP_SECONDS, found on a warm-up */
    int calls = 1, next = 0;
    double t0 = now();
    mw.data = w;
    mm_matmul(p, &mw, x, s.act_rows, out, scratch);
    double one = now() - t0;
    calls = one > 0 ? (int)(MIN_REP_SECONDS / one) + 1 : 1;

    double sum = 0, sum2 = 0, c0 = cpu_now();
    for (int r = 0; r < reps; r++) {
        t0 = now();
        for (int k = 0; k < calls; k++) {
            mw.data = w + mat * (size_t)next;
            next = (next + 1) % copies;
            mm_matmul(p, &mw, x, s.act_rows, out, scratch);
        }
        double ms = (now() - t0) / calls * 1e3;
        sum += ms;
        sum2 += ms * ms;
    }
    double cpu_ms = (cpu_now() - c0) / ((double)reps * calls) * 1e3;
    double mean = sum / reps, var = reps > 1 ? (sum2 - sum * sum / reps) / (reps - 1) : 0;
    *res = (result){
        .type = ty->name,
        .kernel = kern_isa_name(kern_get(ty->id)->isa),
        .s = s,
        .weight_mb = mat / 1e6,
        .copies = copies,
        .mean_ms = mean,
        .sd_ms = var > 0 ? sqrt(var) : 0,
        .cpu_ms = cpu_ms,
        .gbs = mat / (mean * 1e-3) / 1e9,
        .gops = 2.0 * s.rows * s.cols * s.act_rows / (mean * 1e-3) / 1e9,
    };
    res->bw_frac = bw > 0 ? res->gbs / bw : 0;
    free(w), free(x), free(out), free(scratch);
    return 0;
}

static const char *cpu_name(char *buf, size_t len)
{
    snprintf(buf, len, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return buf;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        char *c = strchr(line, ':');
        if (c && !strncmp(line, "model name", 10)) {
            snprintf(buf, len, "%s", c + 2);
            buf[strcspn(buf, "\n")] = 0;
            break;
        }
    }
    fclose(f);
    return buf;
}

/* ---- model files: pp / tg / image encode, like llama-bench ---- */

typedef struct {
    const char *test;
    int threads;
    double mean, sd; /* tokens/s, or ms for "image" */
    const char *unit;
} mresult;

static void stats(const double *v, int n, double *mean, double *sd)
{
    double s = 0, s2 = 0;
    for (int i = 0; i < n; i++)
        s += v[i];
    *mean = s / n;
    for (int i = 0; i < n; i++)
        s2 += (v[i] - *mean) * (v[i] - *mean);
    *sd = n > 1 ? sqrt(s2 / (n - 1)) : 0;
}

#define MAX_REPS 64

/* Appends the mean and deviation of reps measurements v as one result. */
static void add_result(mresult *out, int *n_out, const char *test, int threads, const char *unit,
                       const double *v, int reps)
{
    out[*n_out] = (mresult){test, threads, 0, 0, unit};
    stats(v, reps, &out[*n_out].mean, &out[*n_out].sd);
    (*n_out)++;
}

/* A context with room for n_pp prompt tokens in one step and n_tg generated ones. */
static int bench_ctx_create(const eng_model *m, int threads, int n_pp, int n_tg, eng_ctx **c,
                            char *err, size_t errlen)
{
    eng_params p = eng_default_params();
    p.n_threads = threads;
    p.n_ctx = n_pp > n_tg ? n_pp + 1 : n_tg + 1;
    p.n_batch = n_pp > 1 ? n_pp : 1;
    if (eng_ctx_create(m, &p, c, err, errlen) != ENG_OK) return -1;
    if (eng_ctx_params(*c)->n_ctx < p.n_ctx) {
        snprintf(err, errlen, "the model's context (%d) is shorter than -p/-n ask for",
                 eng_ctx_params(*c)->n_ctx);
        eng_ctx_destroy(*c);
        return -1;
    }
    return 0;
}

/* Tokens per second of one step over n_pp tokens, reps times after a warm-up. */
static int bench_pp(eng_ctx *c, const int32_t *tok, int n_pp, int reps, double *v, char *err,
                    size_t errlen)
{
    for (int r = -1; r < reps; r++) { /* r = -1: warm-up */
        eng_slot_reset(c, 0);
        eng_item it = {.slot = 0, .n_tokens = n_pp, .tokens = tok, .pos = 0, .want_logits = true};
        double t0 = now();
        if (eng_step(c, &it, 1, err, errlen) != ENG_OK) return -1;
        if (r >= 0) v[r] = n_pp / (now() - t0);
    }
    return 0;
}

/* Tokens per second of n_tg single-token steps, reps times after a warm-up. */
static int bench_tg(eng_ctx *c, const int32_t *tok, int n_tg, int reps, double *v, char *err,
                    size_t errlen)
{
    for (int r = -1; r < reps; r++) {
        eng_slot_reset(c, 0);
        double t0 = now();
        for (int i = 0; i < n_tg; i++) {
            eng_item it = {
                .slot = 0, .n_tokens = 1, .tokens = &tok[i], .pos = i, .want_logits = true};
            if (eng_step(c, &it, 1, err, errlen) != ENG_OK) return -1;
        }
        if (r >= 0) v[r] = n_tg / (now() - t0);
    }
    return 0;
}

/* --format: the grammar, the model's vocabulary trie and its stop tokens. */
typedef struct {
    grammar *g;
    grammar_vocab *v;
    int32_t stops[2];
} bench_format;

/* Tokens per second of n_tg single-token steps that each sample the next token (default
 * sampler, seed 1), under the format's grammar when gf is set; a stop starts a new answer. */
static int bench_sampled(eng_ctx *c, int n_vocab, int32_t first, const bench_format *gf, int n_tg,
                         int reps, double *v, double *sample_ms, char *err, size_t errlen)
{
    sampler_params sp = sampler_default_params();
    sp.seed = 1;
    sampler *s = sampler_create(n_vocab, &sp);
    grammar_state *gs = gf ? grammar_state_create(gf->g, gf->v) : NULL;
    int rc = -1;
    if (!s || (gf && !gs)) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    sampler_set_grammar(s, gs);
    for (int r = -1; r < reps; r++) {
        eng_slot_reset(c, 0);
        sampler_reset(s);
        if (gs) grammar_state_reset(gs);
        int32_t next = first;
        double t0 = now(), in_sampler = 0;
        for (int i = 0; i < n_tg; i++) {
            eng_item it = {
                .slot = 0, .n_tokens = 1, .tokens = &next, .pos = i, .want_logits = true};
            if (eng_step(c, &it, 1, err, errlen) != ENG_OK) goto done;
            double t1 = now();
            next = sampler_sample(s, eng_logits(c, 0));
            if (gs && (next == gf->stops[0] || next == gf->stops[1])) grammar_state_reset(gs);
            in_sampler += now() - t1;
        }
        if (r >= 0) {
            v[r] = n_tg / (now() - t0);
            sample_ms[r] = in_sampler * 1e3 / n_tg;
        }
    }
    rc = 0;
done:
    grammar_state_destroy(gs);
    sampler_destroy(s);
    return rc;
}

/* One thread count's encode time per layer kind, mean over the repetitions. */
typedef struct {
    int threads;
    double ms[ENG_VK_COUNT];
} image_kinds;

static void print_image_kinds_table(const image_kinds *k, int n)
{
    for (int i = 0; i < n; i++) {
        double total = 0;
        for (int j = 0; j < ENG_VK_COUNT; j++)
            total += k[i].ms[j];
        printf(
            "\n| image encode, %d threads: layer kind | ms per tile | share |\n|---|---:|---:|\n",
            k[i].threads);
        for (int j = 0; j < ENG_VK_COUNT; j++)
            printf("| %s | %.1f | %.1f %% |\n", eng_vision_kind_name(j), k[i].ms[j],
                   total > 0 ? 100 * k[i].ms[j] / total : 0);
    }
}

static void print_image_kinds_json(const image_kinds *k, int n)
{
    printf("\"image_kinds\": [");
    for (int i = 0; i < n; i++) {
        printf("%s\n  {\"threads\": %d", i ? "," : "", k[i].threads);
        for (int j = 0; j < ENG_VK_COUNT; j++)
            printf(", \"%s\": %.3f", eng_vision_kind_name(j), k[i].ms[j]);
        printf("}");
    }
    printf("\n], ");
}

/* Milliseconds to encode one image tile, reps times after a warm-up, and where they went. */
static int bench_image(eng_ctx *c, const eng_model_info *info, int reps, double *v,
                       image_kinds *kinds, char *err, size_t errlen)
{
    size_t px = (size_t)3 * info->image_size * info->image_size;
    float *pix = malloc(sizeof(float) * px);
    float *emb = malloc(sizeof(float) * (size_t)info->n_image_tokens * info->n_embd);
    int rc = -1;
    if (!pix || !emb) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < px; i++)
        pix[i] = (float)((i * 7919) % 200) / 100.0f - 1.0f;
    for (int r = -1; r < reps; r++) {
        if (r == 0) eng_vision_profile(c, kinds->ms);
        double t0 = now();
        if (eng_vision_encode(c, pix, 1, emb, err, errlen) != ENG_OK) goto done;
        if (r >= 0) v[r] = (now() - t0) * 1e3;
    }
    eng_vision_profile(c, NULL);
    for (int k = 0; k < ENG_VK_COUNT; k++)
        kinds->ms[k] /= reps;
    rc = 0;
done:
    free(pix), free(emb);
    return rc;
}

/* One thread count: pp, tg and (with a vision model) one image tile. */
static int bench_ctx(const eng_model *m, int threads, int reps, int n_pp, int n_tg,
                     const bench_format *gf, mresult *out, int *n_out, image_kinds *kinds,
                     int *n_kinds, char *err, size_t errlen)
{
    const eng_model_info *info = eng_model_get_info(m);
    eng_ctx *c;
    if (bench_ctx_create(m, threads, n_pp, n_tg, &c, err, errlen)) return -1;
    int n_tok = n_pp > n_tg ? n_pp : n_tg;
    int32_t *tok = malloc(sizeof(int32_t) * n_tok);
    double v[MAX_REPS];
    int rc = -1;
    if (!tok) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    for (int i = 0; i < n_tok; i++)
        tok[i] = (int32_t)(((uint64_t)i * 2654435761u + 17) % (uint64_t)info->n_vocab);
    if (n_pp > 0) {
        if (bench_pp(c, tok, n_pp, reps, v, err, errlen)) goto done;
        add_result(out, n_out, "pp", threads, "t/s", v, reps);
    }
    if (n_tg > 0) {
        if (bench_tg(c, tok, n_tg, reps, v, err, errlen)) goto done;
        add_result(out, n_out, "tg", threads, "t/s", v, reps);
    }
    if (n_tg > 0 && gf) {
        /* alternated, so that both see the same machine */
        double vf[MAX_REPS], ms[MAX_REPS], msf[MAX_REPS];
        for (int r = 0; r < reps; r++)
            if (bench_sampled(c, info->n_vocab, tok[0], NULL, n_tg, 1, &v[r], &ms[r], err,
                              errlen) ||
                bench_sampled(c, info->n_vocab, tok[0], gf, n_tg, 1, &vf[r], &msf[r], err, errlen))
                goto done;
        add_result(out, n_out, "tg-sampled", threads, "t/s", v, reps);
        add_result(out, n_out, "tg-format", threads, "t/s", vf, reps);
        add_result(out, n_out, "sampling-free", threads, "ms/token", ms, reps);
        add_result(out, n_out, "sampling-format", threads, "ms/token", msf, reps);
    }
    if (info->has_vision) {
        image_kinds *k = &kinds[(*n_kinds)++];
        *k = (image_kinds){.threads = threads};
        if (bench_image(c, info, reps, v, k, err, errlen)) goto done;
        add_result(out, n_out, "image", threads, "ms", v, reps);
    }
    rc = 0;
done:
    free(tok);
    eng_ctx_destroy(c);
    return rc;
}

/* The next count of a comma-separated thread list, moving *q past it; 0 or
 * less means one per CPU. */
static int next_threads(const char **q)
{
    int t = atoi(*q);
    if (t <= 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        t = cpus > 0 ? (int)cpus : 1;
    }
    *q += strcspn(*q, ",");
    *q += **q == ',';
    return t;
}

/* The token count in a result's test name: pp512, tg128, image1. */
static int test_len(const mresult *r, int n_pp, int n_tg)
{
    return !strcmp(r->test, "pp")                                           ? n_pp
           : !strncmp(r->test, "tg", 2) || !strncmp(r->test, "sampling", 8) ? n_tg
                                                                            : 1;
}

/* Per thread count: tg-format over tg-sampled (wall clock, as noisy as the machine), and the
 * sampler's extra time per token under the format as a share of a sampled token's time (the
 * same cost, measured where it is spent: steadier on a busy machine). */
static void print_format_ratio(const mresult *res, int n, int json)
{
    for (int i = 0; i + 3 < n; i++) {
        if (strcmp(res[i].test, "tg-sampled") || strcmp(res[i + 1].test, "tg-format")) continue;
        double ratio = res[i + 1].mean / res[i].mean;
        double extra_ms = res[i + 3].mean - res[i + 2].mean;
        double share = extra_ms / (1e3 / res[i].mean);
        if (json)
            printf("{\"threads\": %d, \"format_over_sampled\": %.4f, \"format_extra_ms\": %.4f, "
                   "\"format_extra_share\": %.4f}\n",
                   res[i].threads, ratio, extra_ms, share);
        else
            printf("constrained / unconstrained generation, %d threads: %.3f wall-clock; the "
                   "format adds %.4f ms/token in the sampler = %.1f%% of a token's time\n",
                   res[i].threads, ratio, extra_ms, 100 * share);
    }
}

static void print_model_json(const char *base, int reps, double rss_mb, const mresult *res, int n,
                             int n_pp, int n_tg, const image_kinds *kinds, int n_kinds)
{
    printf("{\"model\": \"%s\", \"kernels\": \"%s\", \"reps\": %d, \"peak_rss_mb\": %.1f, ", base,
           kern_isa_name(kern_best_isa()), reps, rss_mb);
    if (n_kinds) print_image_kinds_json(kinds, n_kinds);
    printf("\"results\": [");
    for (int i = 0; i < n; i++)
        printf("%s\n  {\"test\": \"%s%d\", \"threads\": %d, \"mean\": %.4f, \"sd\": %.4f, "
               "\"unit\": \"%s\"}",
               i ? "," : "", res[i].test, test_len(&res[i], n_pp, n_tg), res[i].threads,
               res[i].mean, res[i].sd, res[i].unit);
    printf("\n]}\n");
}

static void print_model_table(const char *base, double rss_mb, const mresult *res, int n, int n_pp,
                              int n_tg)
{
    printf("| model | kernels | threads | test | result | peak RSS MB |\n");
    printf("|---|---|---:|---|---:|---:|\n");
    for (int i = 0; i < n; i++) {
        char name[40];
        if (!strcmp(res[i].test, "image"))
            snprintf(name, sizeof name, "image encode (1 tile)");
        else
            snprintf(name, sizeof name, "%s%d", res[i].test, test_len(&res[i], n_pp, n_tg));
        printf("| %s | %s | %d | %s | %.2f ± %.2f %s | %.1f |\n", base,
               kern_isa_name(kern_best_isa()), res[i].threads, name, res[i].mean, res[i].sd,
               res[i].unit, rss_mb);
    }
}

/* ---- decode against the read ceiling (--bandwidth) ---- */

typedef struct {
    int threads;
    double bw_gbs, tg, ceiling_tg; /* tokens/s measured, and at bw_gbs */
} ceil_result;

/* Weight bytes one decoded token reads: every tensor of the text file but
 * the token embeddings, of which it reads one row, unless they are also
 * the (tied) output layer. */
static double decode_bytes_per_token(const eng_model *m)
{
    const gguf_file *f = eng_model_text_file(m);
    bool tied = gguf_find_tensor(f, "output.weight") == NULL;
    double bytes = 0;
    for (int i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        if (!tied && !strcmp(t->name, "token_embd.weight"))
            bytes += (double)t->nbytes / (double)t->ne[1];
        else
            bytes += (double)t->nbytes;
    }
    return bytes;
}

/* The read ceiling with `threads` threads, in GB/s; 0 if it cannot be taken. */
static double bandwidth_for(int threads)
{
    char err[256];
    pool *p = pool_create(threads, err, sizeof err);
    if (!p) return 0;
    double bw = read_bandwidth(p);
    pool_destroy(p);
    return bw;
}

/* One ceiling row per tg result in res. */
static int ceiling_rows(const mresult *res, int n, double bytes, ceil_result *out)
{
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (strcmp(res[i].test, "tg")) continue;
        double bw = bandwidth_for(res[i].threads);
        out[k++] = (ceil_result){res[i].threads, bw, res[i].mean, bw > 0 ? bw * 1e9 / bytes : 0};
    }
    return k;
}

static void print_ceiling_table(const char *base, double bytes, const ceil_result *c, int n)
{
    printf("\n| model | threads | MB read / token | read BW GB/s | tg t/s | ceiling t/s | of "
           "ceiling |\n");
    printf("|---|---:|---:|---:|---:|---:|---:|\n");
    for (int i = 0; i < n; i++)
        printf("| %s | %d | %.1f | %.1f | %.2f | %.2f | %.0f %% |\n", base, c[i].threads,
               bytes / 1e6, c[i].bw_gbs, c[i].tg, c[i].ceiling_tg,
               c[i].ceiling_tg > 0 ? 100 * c[i].tg / c[i].ceiling_tg : 0.0);
}

static void print_ceiling_json(double bytes, const ceil_result *c, int n)
{
    printf("{\"bytes_per_token\": %.0f, \"ceiling\": [", bytes);
    for (int i = 0; i < n; i++)
        printf("%s\n  {\"threads\": %d, \"read_bandwidth_gbs\": %.3f, \"tg\": %.4f, "
               "\"ceiling_tg\": %.4f, \"fraction\": %.4f}",
               i ? "," : "", c[i].threads, c[i].bw_gbs, c[i].tg, c[i].ceiling_tg,
               c[i].ceiling_tg > 0 ? c[i].tg / c[i].ceiling_tg : 0.0);
    printf("\n]}\n");
}

/* --bandwidth with -m: the tg results against the ceiling, after the table
 * (JSON: a second object on its own line). */
static void report_ceiling(const eng_model *m, const char *base, const mresult *res, int n,
                           int json)
{
    ceil_result c[16];
    double bytes = decode_bytes_per_token(m);
    int k = ceiling_rows(res, n < 16 ? n : 16, bytes, c);
    if (json)
        print_ceiling_json(bytes, c, k);
    else
        print_ceiling_table(base, bytes, c, k);
}

/* --format's grammar and vocabulary; false after the message. */
static bool format_load(const char *format, const eng_model *m, bench_format *gf)
{
    char err[512];
    tok *t = NULL;
    char *text = strcmp(format, "json") == 0 ? strdup("{}") : cli_read_file(format, NULL);
    if (!text) {
        fprintf(stderr, "tern bench: %s: cannot read it\n", format);
        return false;
    }
    gf->g = grammar_compile(text, err, sizeof err);
    free(text);
    if (!gf->g) {
        fprintf(stderr, "tern bench: %s: %s\n", format, err);
        return false;
    }
    if (tok_load(eng_model_text_file(m), &t, err, sizeof err) != 0) {
        fprintf(stderr, "tern bench: %s\n", err);
        return false;
    }
    gf->stops[0] = tok_special(t, "<end_of_utterance>");
    gf->stops[1] = tok_eos(t);
    gf->v = grammar_vocab_create(t, gf->stops, 2);
    tok_free(t);
    if (!gf->v) fprintf(stderr, "tern bench: out of memory\n");
    return gf->v != NULL;
}

static int bench_model(const char *path, const char *mmproj, const char *thread_list, int reps,
                       int n_pp, int n_tg, int json, int bandwidth, const char *format)
{
    char err[512];
    if (reps > MAX_REPS) reps = MAX_REPS;
    eng_model *m;
    if (eng_model_load(path, mmproj, &m, err, sizeof err) != ENG_OK) {
        fprintf(stderr, "tern bench: %s\n", err);
        return 1;
    }
    bench_format gf = {0};
    if (format && !format_load(format, m, &gf)) {
        grammar_destroy(gf.g);
        eng_model_free(m);
        return 1;
    }
    mresult res[7 * 16];
    image_kinds kinds[16];
    int n = 0, n_kinds = 0, rc = 0;
    const char *q = thread_list ? thread_list : "0";
    while (*q && n + 7 <= (int)(sizeof res / sizeof res[0])) {
        if (bench_ctx(m, next_threads(&q), reps, n_pp, n_tg, format ? &gf : NULL, res, &n, kinds,
                      &n_kinds, err, sizeof err)) {
            fprintf(stderr, "tern bench: %s: %s\n", path, err);
            rc = 1;
            break;
        }
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double rss_mb = ru.ru_maxrss / 1024.0;
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    if (json)
        print_model_json(base, reps, rss_mb, res, n, n_pp, n_tg, kinds, n_kinds);
    else {
        print_model_table(base, rss_mb, res, n, n_pp, n_tg);
        print_image_kinds_table(kinds, n_kinds);
    }
    print_format_ratio(res, n, json);
    if (bandwidth && rc == 0) report_ceiling(m, base, res, n, json);
    grammar_vocab_destroy(gf.v);
    grammar_destroy(gf.g);
    eng_model_free(m);
    return rc;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: tern bench --kernels [--threads N] [--reps R] [--types LIST] [--json]\n"
               "       tern bench -m TEXT.gguf [--mmproj MMPROJ.gguf] [-t N[,N...]] [-r R]\n"
               "                  [-p TOKENS] [-n TOKENS] [--bandwidth] [--format F] [--json]\n"
               "       tern bench --bandwidth [-t N]\n\n"
               "  --kernels     per type and shape: decode GEMV and 512-row prefill GEMM\n"
               "  -m, --model FILE  pp (prompt tokens/s), tg (generated tokens/s), image\n"
               "                encode ms (with --mmproj) and peak RSS for a model file\n"
               "  --bandwidth  the read-bandwidth probe (1 GiB, same threads); with -m,\n"
               "                tg as a fraction of bytes/token x tokens/s / bandwidth\n"
               "  -p N, -n N    prompt and generation lengths (default 512 and 128)\n"
               "  --format F    with -m: also sampled generation, unconstrained and constrained\n"
               "                to F (\"json\" or a JSON Schema file), and their ratio\n"
               "  -t, --threads N  threads including the caller (default: all CPUs);\n"
               "                with -m a comma-separated list\n"
               "  -r, --reps R  repetitions per measurement (default 5)\n"
               "  --types LIST  comma-separated: tq2_0,tq1_0,q2_0,q1_0,q8_0,f16 (default all)\n"
               "  --gemv-only   skip the 512-row GEMM shapes\n"
               "  --json        one JSON object instead of the markdown table\n"
               "TERN_KERNELS=scalar|avx2|avx512|avx512vnni|neon|dotprod caps the kernel level.\n");
}

/* ---- the command ---- */

typedef struct {
    int kernels, threads, reps, json, gemv_only, n_pp, n_tg, bandwidth;
    const char *model, *mmproj, *type_list, *thread_list, *format;
} bench_opts;

/* Fills o from the command line. Returns -1 to go on, else the exit code
 * (--help, or a usage error). */
static int parse_args(int argc, char **argv, bench_opts *o)
{
    enum { O_KERNELS = 256, O_TYPES, O_JSON, O_GEMV, O_MMPROJ, O_BW, O_FORMAT };
    static const struct option opts[] = {
        {"kernels", no_argument, NULL, O_KERNELS},     {"threads", required_argument, NULL, 't'},
        {"reps", required_argument, NULL, 'r'},        {"types", required_argument, NULL, O_TYPES},
        {"json", no_argument, NULL, O_JSON},           {"gemv-only", no_argument, NULL, O_GEMV},
        {"model", required_argument, NULL, 'm'},       {"help", no_argument, NULL, 'h'},
        {"mmproj", required_argument, NULL, O_MMPROJ}, {"bandwidth", no_argument, NULL, O_BW},
        {"format", required_argument, NULL, O_FORMAT}, {NULL, 0, NULL, 0},
    };
    *o = (bench_opts){.reps = 5, .n_pp = 512, .n_tg = 128};
    int c;
    while ((c = getopt_long(argc, argv, "t:r:m:p:n:h", opts, NULL)) != -1) {
        switch (c) {
        case O_KERNELS: o->kernels = 1; break;
        case 't':
            o->thread_list = optarg;
            o->threads = atoi(optarg);
            break;
        case 'p': o->n_pp = atoi(optarg); break;
        case 'n': o->n_tg = atoi(optarg); break;
        case O_MMPROJ: o->mmproj = optarg; break;
        case 'r': o->reps = atoi(optarg); break;
        case O_TYPES: o->type_list = optarg; break;
        case O_JSON: o->json = 1; break;
        case O_GEMV: o->gemv_only = 1; break;
        case O_BW: o->bandwidth = 1; break;
        case O_FORMAT: o->format = optarg; break;
        case 'm': o->model = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    return -1;
}

/* want[i]: whether types[i] is in the comma-separated list (all when the
 * list is NULL). Returns -1 naming an unknown type, else 0. */
static int parse_types(const char *list, int *want)
{
    for (int i = 0; i < N_TYPES; i++)
        want[i] = list == NULL;
    for (const char *p = list; p && *p;) {
        size_t len = strcspn(p, ",");
        int found = 0;
        for (int i = 0; i < N_TYPES; i++) {
            const char *name = ttype_get(types[i])->name;
            if (strlen(name) == len && !strncmp(name, p, len)) want[i] = found = 1;
        }
        if (!found) {
            fprintf(stderr, "tern bench: unknown type '%.*s' in --types\n", (int)len, p);
            return -1;
        }
        p += len + (p[len] == ',');
    }
    return 0;
}

/* The machine line and the table head (text), or the object's opening (JSON). */
static void print_kernels_head(int json, int threads, int reps, double bw)
{
    char cpu[128];
    cpu_name(cpu, sizeof cpu);
    if (json) {
        printf("{\"cpu\": \"%s\", \"threads\": %d, \"kernels\": \"%s\", "
               "\"read_bandwidth_gbs\": %.2f, \"reps\": %d, \"results\": [",
               cpu, threads, kern_isa_name(kern_best_isa()), bw, reps);
        return;
    }
    long llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
    const char *cap = getenv("TERN_KERNELS");
    printf("CPU: %s, %d threads; kernels: %s%s%s%s; LLC (as reported): %.0f MiB\n", cpu, threads,
           kern_isa_name(kern_best_isa()), cap ? " (TERN_KERNELS=" : "", cap ? cap : "",
           cap ? ")" : "", llc > 0 ? llc / 1048576.0 : 0.0);
    printf("read bandwidth (1 GiB streamed, %d threads, best of 5): %.1f GB/s\n\n", threads, bw);
    printf("| type | rows x cols | weights MB | cache | act rows | kernel | ms (mean ± sd) "
           "| GB/s | GOP/s | of read BW | cpu ms | cores had |\n");
    printf("|---|---|---:|---|---:|---|---:|---:|---:|---:|---:|---:|\n");
}

/* One measurement: a table row, or a JSON element (first: no comma before). */
static void print_result(const result *r, int json, int first)
{
    const char *cache = r->s.cold ? "cold" : "hot";
    if (json) {
        printf("%s\n  {\"type\": \"%s\", \"rows\": %d, \"cols\": %d, \"act_rows\": %d, "
               "\"cache\": \"%s\", \"copies\": %d, \"weight_mb\": %.3f, \"kernel\": "
               "\"%s\", \"ms_mean\": %.6f, \"ms_sd\": %.6f, \"gbs\": %.3f, \"gops\": "
               "%.3f, \"read_bw_fraction\": %.4f, \"cpu_ms\": %.6f}",
               first ? "" : ",", r->type, r->s.rows, r->s.cols, r->s.act_rows, cache, r->copies,
               r->weight_mb, r->kernel, r->mean_ms, r->sd_ms, r->gbs, r->gops, r->bw_frac,
               r->cpu_ms);
    } else {
        char frac[32] = "";
        if (r->s.act_rows == 1) snprintf(frac, sizeof frac, "%.0f %%", 100 * r->bw_frac);
        printf("| %s | %d x %d | %.1f | %s | %d | %s | %.3f ± %.3f | %.1f | %.1f | %s | "
               "%.3f | %.2f |\n",
               r->type, r->s.rows, r->s.cols, r->weight_mb, cache, r->s.act_rows, r->kernel,
               r->mean_ms, r->sd_ms, r->gbs, r->gops, frac, r->cpu_ms, r->cpu_ms / r->mean_ms);
    }
    fflush(stdout);
}

/* tern bench --kernels: every wanted type on every shape. */
static int bench_kernels(const bench_opts *o, const int *want)
{
    char err[256];
    pool *p = pool_create(o->threads, err, sizeof err);
    if (!p) {
        fprintf(stderr, "tern bench: %s\n", err);
        return 1;
    }
    double bw = read_bandwidth(p);
    print_kernels_head(o->json, pool_threads(p), o->reps, bw);
    int first = 1, rc = 0;
    for (int si = 0; si < N_SHAPES; si++) {
        if (o->gemv_only && shapes[si].act_rows > 1) continue;
        for (int ti = 0; ti < N_TYPES; ti++) {
            if (!want[ti]) continue;
            result r;
            if (measure(p, ttype_get(types[ti]), shapes[si], o->reps, bw, &r)) {
                rc = 1;
                continue;
            }
            print_result(&r, o->json, first);
            first = 0;
        }
    }
    if (o->json) printf("\n]}\n");
    pool_destroy(p);
    return rc;
}

/* tern bench --bandwidth alone. */
static int bench_bandwidth_only(int threads, int json)
{
    char err[256];
    pool *p = pool_create(threads, err, sizeof err);
    if (!p) {
        fprintf(stderr, "tern bench: %s\n", err);
        return 1;
    }
    double bw = read_bandwidth(p);
    if (json)
        printf("{\"threads\": %d, \"read_bandwidth_gbs\": %.3f}\n", pool_threads(p), bw);
    else
        printf("read bandwidth (1 GiB streamed, %d threads, best of 5): %.1f GB/s\n",
               pool_threads(p), bw);
    pool_destroy(p);
    return bw > 0 ? 0 : 1;
}

int cmd_bench(int argc, char **argv)
{
    bench_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc >= 0) return rc;
    if (o.model) {
        if (o.reps < 1 || o.n_pp < 0 || o.n_tg < 0 || o.n_pp + o.n_tg == 0) {
            fprintf(stderr, "tern bench: --reps must be >= 1, -p and -n >= 0, not both 0\n");
            return 2;
        }
        return bench_model(o.model, o.mmproj, o.thread_list, o.reps, o.n_pp, o.n_tg, o.json,
                           o.bandwidth, o.format);
    }
    if (o.bandwidth && !o.kernels) return bench_bandwidth_only(o.threads, o.json);
    if (!o.kernels) {
        usage(stderr);
        return 2;
    }
    if (o.reps < 1 || o.threads < 0) {
        fprintf(stderr, "tern bench: --reps must be >= 1 and --threads >= 0\n");
        return 2;
    }
    int want[N_TYPES];
    if (parse_types(o.type_list, want)) return 2;
    return bench_kernels(&o, want);
}
