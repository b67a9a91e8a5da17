/* The forward pass against golden outputs of the PyTorch reference
 * (training/make_goldens.py -> tests/data/golden/), quantized models against
 * their own dequantized weights, and batched steps against single ones.
 * The golden checkpoints are Hugging Face directories (SmolVLM's layout, and
 * moondream2's from training/phi_reference.py), converted here with `tern
 * convert`'s convert_hf before the tests run. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/convert.h"
#include "engine/chat.h"
#include "engine/engine.h"
#include "engine/gguf.h"
#include "engine/quant.h"
#include "engine/sampler.h"
#include "engine/types.h"
#include "testutil.h"

#ifndef TERN_TEST_DATA
#define TERN_TEST_DATA "tests/data"
#endif
#define GOLDEN TERN_TEST_DATA "/golden/"

static char g_tmp[256];
static char g_err[512];

/* ---- golden files ---- */

typedef struct {
    gguf_file *f;
    int n_prompt, n_greedy, image_token;
    const int32_t *prompt, *greedy;
    const float *logits;     /* n_prompt x n_vocab */
    const float *pixels;     /* NULL for text-only */
    const float *image_embd; /* n_image_tokens x n_embd */
} golden;

static void golden_open(golden *g, const char *name)
{
    char path[512];
    snprintf(path, sizeof path, GOLDEN "%s.golden.gguf", name);
    memset(g, 0, sizeof *g);
    ck_assert_msg(gguf_open(path, &g->f, g_err, sizeof g_err) == GGUF_OK, "%s", g_err);
    int64_t v;
    ck_assert(gguf_get_i64(g->f, "golden.n_prompt", &v));
    g->n_prompt = (int)v;
    ck_assert(gguf_get_i64(g->f, "golden.n_greedy", &v));
    g->n_greedy = (int)v;
    ck_assert(gguf_get_i64(g->f, "golden.image_token_id", &v));
    g->image_token = (int)v;
    /* Array data in a GGUF may be unaligned: copy it out. */
    int32_t *pr = malloc((size_t)g->n_prompt * sizeof *pr);
    int32_t *gr = malloc((size_t)g->n_greedy * sizeof *gr);
    memcpy(pr, gguf_arr_data(g->f, gguf_find_key(g->f, "golden.prompt")),
           (size_t)g->n_prompt * sizeof *pr);
    memcpy(gr, gguf_arr_data(g->f, gguf_find_key(g->f, "golden.greedy")),
           (size_t)g->n_greedy * sizeof *gr);
    g->prompt = pr;
    g->greedy = gr;
    g->logits = gguf_find_tensor(g->f, "logits")->data;
    const gguf_tensor *t = gguf_find_tensor(g->f, "pixels");
    g->pixels = t ? t->data : NULL;
    t = gguf_find_tensor(g->f, "image_embd");
    g->image_embd = t ? t->data : NULL;
}

static void golden_close(golden *g)
{
    free((void *)g->prompt);
    free((void *)g->greedy);
    gguf_close(g->f);
}

/* ---- derived model files ---- */

/* The linear layers: what `tern quantize` would turn into ternary/binary.
 * Embeddings, norms, biases and vision patch/position tables stay as they are. */
static bool is_linear(const gguf_tensor *t)
{
    if (t->n_dims != 2) return false;
    return strstr(t->name, "blk.") || strcmp(t->name, "output.weight") == 0 ||
           strcmp(t->name, "mm.model.fc.weight") == 0;
}

/* Write a copy of src where every tensor is F32, except the linear layers,
 * which go through type q as `tern quantize` does it (quant_to_type, k-means
 * ternarizer per row): stored as q (dequant = false) or as the F32 decoding
 * of q's blocks (dequant = true). q = KT_F32 converts everything. */
static void derive(const char *src, const char *dst, kt_type q, bool dequant)
{
    gguf_file *f;
    ck_assert_msg(gguf_open(src, &f, g_err, sizeof g_err) == GGUF_OK, "%s", g_err);
    gguf_writer *w = gguf_writer_create();
    for (int i = 0; i < gguf_n_kv(f); i++)
        gguf_set_from(w, f, i);
    int n = gguf_n_tensors(f);
    void **bufs = calloc((size_t)n, sizeof *bufs);
    for (int i = 0; i < n; i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        int64_t ne = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
        float *fl = malloc((size_t)ne * sizeof *fl);
        ttype_get(t->type)->to_float(t->type, t->data, fl, ne);
        kt_type out = KT_F32;
        void *data = fl;
        if (q != KT_F32 && is_linear(t)) {
            const ttype_info *ti = ttype_get(q);
            size_t nb = ttype_row_bytes(ti, t->ne[0]) * (size_t)(ne / t->ne[0]);
            void *qb = malloc(nb);
            ck_assert_msg(quant_to_type(fl, ne / t->ne[0], t->ne[0], q, QUANT_KMEANS, false, qb,
                                        NULL, g_err, sizeof g_err) == 0,
                          "%s", g_err);
            if (dequant) {
                ti->to_float(q, qb, fl, ne);
                free(qb);
            } else {
                free(fl);
                data = qb;
                out = q;
            }
        }
        bufs[i] = data;
        ck_assert_msg(gguf_add_tensor(w, t->name, out, t->n_dims, t->ne, data, g_err,
                                      sizeof g_err) == GGUF_OK,
                      "%s", g_err);
    }
    ck_assert_msg(gguf_write(w, dst, g_err, sizeof g_err) == GGUF_OK, "%s", g_err);
    gguf_writer_destroy(w);
    for (int i = 0; i < n; i++)
        free(bufs[i]);
    free(bufs);
    gguf_close(f);
}

static void tmp_path(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", g_tmp, name);
}

/* Copy src to dst, leaving out tensor `drop`, giving tensor `shrink` one
 * row less, and storing token_embd's data under `as_output`'s name (each
 * may be NULL). */
static void edit_copy(const char *src, const char *dst, const char *drop, const char *shrink,
                      const char *as_output)
{
    gguf_file *f;
    ck_assert_msg(gguf_open(src, &f, g_err, sizeof g_err) == GGUF_OK, "%s", g_err);
    gguf_writer *w = gguf_writer_create();
    for (int i = 0; i < gguf_n_kv(f); i++)
        gguf_set_from(w, f, i);
    const gguf_tensor *te = gguf_find_tensor(f, "token_embd.weight");
    for (int i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        if (drop && strcmp(t->name, drop) == 0) continue;
        int64_t ne[GGUF_MAX_DIMS];
        memcpy(ne, t->ne, sizeof ne);
        const void *data = t->data;
        kt_type type = t->type;
        if (shrink && strcmp(t->name, shrink) == 0) ne[1]--;
        if (as_output && strcmp(t->name, as_output) == 0) {
            memcpy(ne, te->ne, sizeof ne);
            data = te->data;
            type = te->type;
        }
        ck_assert_msg(gguf_add_tensor(w, t->name, type, t->n_dims, ne, data, g_err, sizeof g_err) ==
                          GGUF_OK,
                      "%s", g_err);
    }
    ck_assert_msg(gguf_write(w, dst, g_err, sizeof g_err) == GGUF_OK, "%s", g_err);
    gguf_writer_destroy(w);
    gguf_close(f);
}

/* Load name's text (+ mmproj) model, converted through derive(). */
static eng_model *load_derived(const char *name, bool vision, kt_type q, bool dequant)
{
    char src[512], dst[512], vsrc[512], vdst[512], tag[64];
    snprintf(tag, sizeof tag, "%s-%d-%d", name, (int)q, (int)dequant);
    snprintf(src, sizeof src, "%s/%s.gguf", g_tmp, name);
    snprintf(vsrc, sizeof vsrc, "%s/%s-mmproj.gguf", g_tmp, name);
    char f1[128], f2[128];
    snprintf(f1, sizeof f1, "%s.gguf", tag);
    snprintf(f2, sizeof f2, "%s-mmproj.gguf", tag);
    tmp_path(dst, sizeof dst, f1);
    tmp_path(vdst, sizeof vdst, f2);
    derive(src, dst, q, dequant);
    if (vision) derive(vsrc, vdst, q, dequant);
    eng_model *m;
    ck_assert_msg(eng_model_load(dst, vision ? vdst : NULL, &m, g_err, sizeof g_err) == ENG_OK,
                  "%s", g_err);
    unlink(dst);
    if (vision) unlink(vdst);
    return m;
}

/* Threads: 2 where the split over the pool is under test, else 1 (a pool
 * on a machine busier than its cores spends its time handing work over). */
static eng_ctx *make_ctx(const eng_model *m, int n_slots, int n_threads)
{
    eng_params p = eng_default_params();
    p.n_slots = n_slots;
    p.n_ctx = 128;
    p.n_batch = 128;
    p.n_threads = n_threads;
    p.kv_f16 = false;
    eng_ctx *c;
    ck_assert_msg(eng_ctx_create(m, &p, &c, g_err, sizeof g_err) == ENG_OK, "%s", g_err);
    return c;
}

/* ---- comparisons ---- */

static double rel_err(const float *a, const float *ref, int n)
{
    double d = 0, r = 0;
    for (int i = 0; i < n; i++) {
        d += ((double)a[i] - ref[i]) * ((double)a[i] - ref[i]);
        r += (double)ref[i] * ref[i];
    }
    return sqrt(d / (r > 0 ? r : 1));
}

static int argmax(const float *x, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* The prompt's embedding-row pointers: image rows at the image token positions. */
static const float **image_rows(const golden *g, const float *embd, int n_embd)
{
    const float **rows = calloc((size_t)g->n_prompt, sizeof *rows);
    int k = 0;
    for (int i = 0; i < g->n_prompt; i++)
        if (embd && g->prompt[i] == g->image_token) rows[i] = embd + (size_t)(k++) * n_embd;
    return rows;
}

/* Feed the prompt token by token on one slot; logits of every position into out. */
static void run_stepwise(eng_ctx *c, int slot, const golden *g, const float **rows, float *out,
                         int V)
{
    for (int i = 0; i < g->n_prompt; i++) {
        eng_item it = {.slot = slot,
                       .n_tokens = 1,
                       .tokens = &g->prompt[i],
                       .embd = rows ? (const float *const *)&rows[i] : NULL,
                       .pos = i,
                       .want_logits = true};
        ck_assert_msg(eng_step(c, &it, 1, g_err, sizeof g_err) == ENG_OK, "%s", g_err);
        const float *l = eng_logits(c, slot);
        ck_assert_ptr_nonnull(l);
        memcpy(out + (size_t)i * V, l, (size_t)V * sizeof *l);
    }
}

/* Encode the golden tile if the model has vision; returns rows or NULL. */
static float *encode_image(eng_ctx *c, const eng_model *m, const golden *g)
{
    const eng_model_info *in = eng_model_get_info(m);
    if (!in->has_vision || !g->pixels) return NULL;
    float *e = malloc((size_t)in->n_image_tokens * in->n_embd * sizeof *e);
    ck_assert_msg(eng_vision_encode(c, g->pixels, 1, e, g_err, sizeof g_err) == ENG_OK, "%s",
                  g_err);
    return e;
}

/* The float model against the reference: image embeddings, every
 * position's logits, prefill in chunks, and the greedy continuation. */
static void check_golden(const char *name, bool vision)
{
    golden g;
    golden_open(&g, name);
    eng_model *m = load_derived(name, vision, KT_F32, false);
    const eng_model_info *in = eng_model_get_info(m);
    int V = in->n_vocab;
    eng_ctx *c = make_ctx(m, 2, 2);

    float *embd = encode_image(c, m, &g);
    if (embd) {
        double e = rel_err(embd, g.image_embd, in->n_image_tokens * in->n_embd);
        ck_assert_msg(e <= 1e-4, "%s: image embeddings relative error %g", name, e);
    }
    const float **rows = image_rows(&g, embd, in->n_embd);

    float *lg = malloc((size_t)g.n_prompt * V * sizeof *lg);
    run_stepwise(c, 0, &g, rows, lg, V);
    double worst = 0;
    for (int i = 0; i < g.n_prompt; i++) {
        double e = rel_err(lg + (size_t)i * V, g.logits + (size_t)i * V, V);
        ck_assert_msg(e <= 1e-4, "%s: position %d: logits relative error %g", name, i, e);
        worst = e > worst ? e : worst;
    }
    printf("%s f32: worst logits relative error %.3g over %d positions\n", name, worst, g.n_prompt);

    /* Prefill in chunks of 5 on slot 1: each chunk's last logits match. */
    for (int p = 0; p < g.n_prompt; p += 5) {
        int n = g.n_prompt - p < 5 ? g.n_prompt - p : 5;
        eng_item it = {.slot = 1,
                       .n_tokens = n,
                       .tokens = g.prompt + p,
                       .embd = (const float *const *)rows + p,
                       .pos = p,
                       .want_logits = true};
        ck_assert_msg(eng_step(c, &it, 1, g_err, sizeof g_err) == ENG_OK, "%s", g_err);
        int last = p + n - 1;
        double e = rel_err(eng_logits(c, 1), g.logits + (size_t)last * V, V);
        ck_assert_msg(e <= 1e-4, "%s: chunked prefill, position %d: relative error %g", name, last,
                      e);
    }

    /* Greedy continuation from slot 1's prefill. */
    sampler_params sp = sampler_default_params();
    sp.temperature = 0;
    sampler *s = sampler_create(V, &sp);
    int32_t tok = sampler_sample(s, eng_logits(c, 1));
    for (int k = 0; k < g.n_greedy; k++) {
        ck_assert_msg(tok == g.greedy[k], "%s: greedy token %d is %d, reference %d", name, k, tok,
                      g.greedy[k]);
        eng_item it = {
            .slot = 1, .n_tokens = 1, .tokens = &tok, .pos = g.n_prompt + k, .want_logits = true};
        ck_assert_msg(eng_step(c, &it, 1, g_err, sizeof g_err) == ENG_OK, "%s", g_err);
        tok = sampler_sample(s, eng_logits(c, 1));
    }
    sampler_destroy(s);
    free(lg);
    free(rows);
    free(embd);
    eng_ctx_destroy(c);
    eng_model_free(m);
    golden_close(&g);
}

START_TEST(test_golden_tiny)
{
    check_golden("tiny", true);
}
END_TEST

START_TEST(test_golden_odd)
{
    check_golden("odd", true);
}
END_TEST

START_TEST(test_golden_phi)
{
    check_golden("phi-tiny", true);
}
END_TEST

/* A quantized model against the float model holding the same (dequantized)
 * weights: only the activation handling differs. Returns the worst
 * per-position relative error; greedy picks at each prompt position are
 * counted in *agree. */
static double quant_vs_dequant(const char *name, bool vision, kt_type q, int *agree, int *n)
{
    golden g;
    golden_open(&g, name);
    eng_model *mq = load_derived(name, vision, q, false);
    eng_model *md = load_derived(name, vision, q, true);
    int V = eng_model_get_info(mq)->n_vocab, D = eng_model_get_info(mq)->n_embd;
    eng_ctx *cq = make_ctx(mq, 1, 1), *cd = make_ctx(md, 1, 1);
    float *eq = encode_image(cq, mq, &g), *ed = encode_image(cd, md, &g);
    const float **rq = image_rows(&g, eq, D), **rd = image_rows(&g, ed, D);
    float *lq = malloc((size_t)g.n_prompt * V * sizeof *lq);
    float *ld = malloc((size_t)g.n_prompt * V * sizeof *ld);
    run_stepwise(cq, 0, &g, rq, lq, V);
    run_stepwise(cd, 0, &g, rd, ld, V);
    double worst = 0;
    *agree = 0;
    *n = g.n_prompt;
    for (int i = 0; i < g.n_prompt; i++) {
        double e = rel_err(lq + (size_t)i * V, ld + (size_t)i * V, V);
        if (e > worst) worst = e;
        *agree += argmax(lq + (size_t)i * V, V) == argmax(ld + (size_t)i * V, V);
    }
    free(lq);
    free(ld);
    free(rq);
    free(rd);
    free(eq);
    free(ed);
    eng_ctx_destroy(cq);
    eng_ctx_destroy(cd);
    eng_model_free(mq);
    eng_model_free(md);
    golden_close(&g);
    return worst;
}

/* Float weight types multiply float activations: the same arithmetic as
 * the F32 model, so 1e-4. Integer types quantize each activation row to
 * int8 (absmax/127): a row's rounding error is uniform in +-scale/2, i.e.
 * max|x| / (127 * sqrt(12)) RMS, ~0.7% of the row's RMS when its max is
 * 3x its RMS (Gaussian-like rows of 192-1024). The logits sit behind ~8-16
 * quantized matmuls (two layers, plus the vision tower for image rows);
 * independent errors add in quadrature and the network amplifies some, which
 * gives the 1.7-4.4% measured here (relative L2 over the vocabulary, worst
 * position). The bound is 10%: twice the worst seen, while a wrong kernel,
 * wrong block order or wrong scale gives errors of order 100%. */
static const struct {
    const char *model;
    bool vision;
    kt_type type;
    double tol;
} quant_cases[] = {
    {"tiny", true, KT_F16, 1e-4},      {"tiny", true, KT_BF16, 1e-4},
    {"tiny", true, KT_Q8_0, 0.1},      {"tiny", true, KT_TQ2_0, 0.1},
    {"tiny", true, KT_TQ1_0, 0.1},     {"tiny", true, KT_Q1_0, 0.1},
    {"tiny", true, KT_Q2_0, 0.1},      {"odd", true, KT_Q2_0, 0.1},
    {"odd", true, KT_Q8_0, 0.1},       {"phi-tiny", false, KT_F16, 1e-4},
    {"phi-tiny", false, KT_Q8_0, 0.1}, {"phi-tiny", false, KT_TQ2_0, 0.1},
};

START_TEST(test_quantized)
{
    int agree, n;
    double e = quant_vs_dequant(quant_cases[_i].model, quant_cases[_i].vision, quant_cases[_i].type,
                                &agree, &n);
    printf("%s %s: worst relative error %.3g, argmax agrees at %d/%d positions\n",
           quant_cases[_i].model, ttype_get(quant_cases[_i].type)->name, e, agree, n);
    ck_assert_msg(e <= quant_cases[_i].tol, "%s as %s: relative error %g > %g",
                  quant_cases[_i].model, ttype_get(quant_cases[_i].type)->name, e,
                  quant_cases[_i].tol);
}
END_TEST

/* Three sequences stepped together (prefill chunks mixed with decodes, in
 * varying order) give the logits each gets alone, for each decoder family. */
static const char *const batched_models[] = {"odd", "phi-tiny"};

START_TEST(test_batched)
{
    golden g;
    golden_open(&g, batched_models[_i]);
    eng_model *m = load_derived(batched_models[_i], false, KT_F32, false);
    int V = eng_model_get_info(m)->n_vocab;
    eng_ctx *solo = make_ctx(m, 1, 1), *c = make_ctx(m, 3, 2);
    int len[3] = {g.n_prompt, 17, 9}, off[3] = {0, 3, 11};
    float *ref = malloc((size_t)3 * g.n_prompt * V * sizeof *ref);
    for (int s = 0; s < 3; s++) {
        ck_assert_int_le(off[s] + len[s], g.n_prompt + off[s] * (s == 0));
        golden sub = g;
        sub.prompt = g.prompt + off[s];
        sub.n_prompt = len[s];
        eng_slot_reset(solo, 0);
        run_stepwise(solo, 0, &sub, NULL, ref + (size_t)s * g.n_prompt * V, V);
    }
    /* Step: slot s advances by (s + 1) tokens per step, or what is left. */
    int pos[3] = {0, 0, 0};
    for (int round = 0; pos[0] < len[0] || pos[1] < len[1] || pos[2] < len[2]; round++) {
        eng_item items[3];
        int n = 0;
        for (int k = 0; k < 3; k++) {
            int s = (k + round) % 3, left = len[s] - pos[s];
            if (left <= 0) continue;
            int step = s + 1 < left ? s + 1 : left;
            items[n++] = (eng_item){.slot = s,
                                    .n_tokens = step,
                                    .tokens = g.prompt + off[s] + pos[s],
                                    .pos = pos[s],
                                    .want_logits = true};
        }
        ck_assert_msg(eng_step(c, items, n, g_err, sizeof g_err) == ENG_OK, "%s", g_err);
        for (int k = 0; k < n; k++) {
            int s = items[k].slot, last = pos[s] + items[k].n_tokens - 1;
            double e =
                rel_err(eng_logits(c, s), ref + ((size_t)s * g.n_prompt + (size_t)last) * V, V);
            ck_assert_msg(e <= 1e-6, "slot %d position %d: batched differs from alone by %g", s,
                          last, e);
            pos[s] += items[k].n_tokens;
        }
    }
    /* Truncate and replay: the same logits again. */
    ck_assert_int_eq(eng_slot_truncate(c, 2, 4, g_err, sizeof g_err), ENG_OK);
    eng_item it = {
        .slot = 2, .n_tokens = 1, .tokens = g.prompt + off[2] + 4, .pos = 4, .want_logits = true};
    ck_assert_int_eq(eng_step(c, &it, 1, g_err, sizeof g_err), ENG_OK);
    ck_assert(rel_err(eng_logits(c, 2), ref + ((size_t)2 * g.n_prompt + 4) * V, V) <= 1e-6);
    free(ref);
    eng_ctx_destroy(solo);
    eng_ctx_destroy(c);
    eng_model_free(m);
    golden_close(&g);
}
END_TEST

/* f16 KV cache: within f16's rounding (2^-11 relative per element, ~1e-3
 * after attention averages them) of the reference. */
START_TEST(test_kv_f16)
{
    golden g;
    golden_open(&g, "odd");
    eng_model *m = load_derived("odd", true, KT_F32, false);
    int V = eng_model_get_info(m)->n_vocab;
    eng_params p = eng_default_params();
    p.n_ctx = 64;
    p.n_threads = 1;
    p.kv_f16 = true;
    eng_ctx *c;
    ck_assert_int_eq(eng_ctx_create(m, &p, &c, g_err, sizeof g_err), ENG_OK);
    float *embd = encode_image(c, m, &g);
    const float **rows = image_rows(&g, embd, eng_model_get_info(m)->n_embd);
    float *lg = malloc((size_t)g.n_prompt * V * sizeof *lg);
    run_stepwise(c, 0, &g, rows, lg, V);
    double worst = 0;
    for (int i = 0; i < g.n_prompt; i++) {
        double e = rel_err(lg + (size_t)i * V, g.logits + (size_t)i * V, V);
        worst = e > worst ? e : worst;
    }
    printf("odd f32 weights, f16 KV cache: worst relative error %.3g\n", worst);
    ck_assert_msg(worst <= 2e-3, "f16 KV cache: relative error %g", worst);
    free(lg);
    free(rows);
    free(embd);
    eng_ctx_destroy(c);
    eng_model_free(m);
    golden_close(&g);
}
END_TEST

/* No output.weight: the output layer is token_embd (tied), the same as a
 * file whose output.weight holds token_embd's values. Missing and
 * mis-shaped tensors are refused by name. */
START_TEST(test_tied_and_shapes)
{
    char src[512], tied[512], copy[512], bad[512];
    snprintf(src, sizeof src, "%s/odd.gguf", g_tmp);
    tmp_path(tied, sizeof tied, "tied.gguf");
    tmp_path(copy, sizeof copy, "copy.gguf");
    tmp_path(bad, sizeof bad, "bad.gguf");
    edit_copy(src, tied, "output.weight", NULL, NULL);
    edit_copy(src, copy, NULL, NULL, "output.weight");
    eng_model *mt, *mc;
    ck_assert_msg(eng_model_load(tied, NULL, &mt, g_err, sizeof g_err) == ENG_OK, "%s", g_err);
    ck_assert_msg(eng_model_load(copy, NULL, &mc, g_err, sizeof g_err) == ENG_OK, "%s", g_err);
    eng_ctx *ct = make_ctx(mt, 1, 1), *cc = make_ctx(mc, 1, 1);
    int32_t toks[5] = {1, 20, 30, 40, 50};
    eng_item it = {.slot = 0, .n_tokens = 5, .tokens = toks, .pos = 0, .want_logits = true};
    ck_assert_int_eq(eng_step(ct, &it, 1, g_err, sizeof g_err), ENG_OK);
    ck_assert_int_eq(eng_step(cc, &it, 1, g_err, sizeof g_err), ENG_OK);
    int V = eng_model_get_info(mt)->n_vocab;
    ck_assert(memcmp(eng_logits(ct, 0), eng_logits(cc, 0), (size_t)V * sizeof(float)) == 0);
    eng_ctx_destroy(ct);
    eng_ctx_destroy(cc);
    eng_model_free(mt);
    eng_model_free(mc);

    eng_model *m;
    edit_copy(src, bad, "blk.1.ffn_up.weight", NULL, NULL);
    ck_assert_int_eq(eng_model_load(bad, NULL, &m, g_err, sizeof g_err), ENG_ERR);
    ck_assert_msg(strstr(g_err, "blk.1.ffn_up.weight") && strstr(g_err, "bad.gguf") &&
                      strstr(g_err, "missing"),
                  "%s", g_err);
    edit_copy(src, bad, NULL, "blk.0.attn_k.weight", NULL);
    ck_assert_int_eq(eng_model_load(bad, NULL, &m, g_err, sizeof g_err), ENG_ERR);
    ck_assert_msg(strstr(g_err, "blk.0.attn_k.weight") && strstr(g_err, "shape"), "%s", g_err);
    unlink(tied);
    unlink(copy);
    unlink(bad);
}
END_TEST

/* Copy src (F32) to dst with each blk.N.attn_qkv split into attn_q, attn_k
 * and attn_v (weight and bias), the layout of llama.cpp's converter for HF's
 * PhiForCausalLM; every other tensor unchanged, or left out when its name
 * is `drop`. */
static void split_qkv(const char *src, const char *dst, int n_embd, const char *drop)
{
    gguf_file *f;
    ck_assert_msg(gguf_open(src, &f, g_err, sizeof g_err) == GGUF_OK, "%s", g_err);
    gguf_writer *w = gguf_writer_create();
    for (int i = 0; i < gguf_n_kv(f); i++)
        gguf_set_from(w, f, i);
    for (int i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        const char *fused = strstr(t->name, "attn_qkv.");
        if (drop && strcmp(t->name, drop) == 0) continue;
        if (!fused) {
            ck_assert_int_eq(gguf_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data, g_err,
                                             sizeof g_err),
                             GGUF_OK);
            continue;
        }
        ck_assert_int_eq(t->type, KT_F32);
        static const char *const part[3] = {"attn_q", "attn_k", "attn_v"};
        int64_t row = t->n_dims == 2 ? t->ne[0] : 1; /* floats per output feature */
        for (int k = 0; k < 3; k++) {
            char name[96];
            snprintf(name, sizeof name, "%.*s%s.%s", (int)(fused - t->name), t->name, part[k],
                     fused + strlen("attn_qkv."));
            if (drop && strcmp(name, drop) == 0) continue;
            int64_t ne[GGUF_MAX_DIMS] = {t->ne[0], t->ne[1], 1, 1};
            ne[t->n_dims - 1] = n_embd;
            const float *data = (const float *)t->data + (size_t)k * n_embd * row;
            ck_assert_msg(gguf_add_tensor(w, name, KT_F32, t->n_dims, ne, data, g_err,
                                          sizeof g_err) == GGUF_OK,
                          "%s", g_err);
        }
    }
    ck_assert_msg(gguf_write(w, dst, g_err, sizeof g_err) == GGUF_OK, "%s", g_err);
    gguf_writer_destroy(w);
    gguf_close(f);
}

/* Phi: q, k and v as three tensors give the fused file's logits bit for
 * bit; a missing bias and a rotary size past the head are refused by name. */
START_TEST(test_phi_layouts)
{
    char src[512], f32[512], split[512], bad[512];
    snprintf(src, sizeof src, "%s/phi-tiny.gguf", g_tmp);
    tmp_path(f32, sizeof f32, "phi-f32.gguf");
    tmp_path(split, sizeof split, "phi-split.gguf");
    tmp_path(bad, sizeof bad, "phi-bad.gguf");
    derive(src, f32, KT_F32, false);
    eng_model *mf, *ms;
    ck_assert_msg(eng_model_load(f32, NULL, &mf, g_err, sizeof g_err) == ENG_OK, "%s", g_err);
    const eng_model_info *in = eng_model_get_info(mf);
    ck_assert_int_eq(in->arch, ENG_ARCH_PHI2);
    ck_assert_int_eq(in->n_rot, 32);
    split_qkv(f32, split, in->n_embd, NULL);
    ck_assert_msg(eng_model_load(split, NULL, &ms, g_err, sizeof g_err) == ENG_OK, "%s", g_err);
    eng_ctx *cf = make_ctx(mf, 1, 2), *cs = make_ctx(ms, 1, 2);
    int32_t toks[6] = {1, 20, 30, 40, 50, 60};
    eng_item it = {.slot = 0, .n_tokens = 6, .tokens = toks, .pos = 0, .want_logits = true};
    ck_assert_int_eq(eng_step(cf, &it, 1, g_err, sizeof g_err), ENG_OK);
    ck_assert_int_eq(eng_step(cs, &it, 1, g_err, sizeof g_err), ENG_OK);
    ck_assert(memcmp(eng_logits(cf, 0), eng_logits(cs, 0), (size_t)in->n_vocab * sizeof(float)) ==
              0);
    eng_ctx_destroy(cf);
    eng_ctx_destroy(cs);
    eng_model_free(ms);

    eng_model *m;
    split_qkv(f32, bad, in->n_embd, "blk.1.attn_k.bias");
    ck_assert_int_eq(eng_model_load(bad, NULL, &m, g_err, sizeof g_err), ENG_ERR);
    ck_assert_msg(strstr(g_err, "blk.1.attn_k.bias") && strstr(g_err, "missing"), "%s", g_err);
    edit_copy(f32, bad, "output.bias", NULL, NULL);
    ck_assert_int_eq(eng_model_load(bad, NULL, &m, g_err, sizeof g_err), ENG_ERR);
    ck_assert_msg(strstr(g_err, "output.bias") != NULL, "%s", g_err);

    gguf_file *f;
    ck_assert_int_eq(gguf_open(f32, &f, g_err, sizeof g_err), GGUF_OK);
    gguf_writer *w = gguf_writer_create();
    for (int i = 0; i < gguf_n_kv(f); i++)
        gguf_set_from(w, f, i);
    gguf_set_u32(w, "phi2.rope.dimension_count", 96); /* head size is 64 */
    for (int i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        ck_assert_int_eq(
            gguf_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data, g_err, sizeof g_err),
            GGUF_OK);
    }
    ck_assert_int_eq(gguf_write(w, bad, g_err, sizeof g_err), GGUF_OK);
    gguf_writer_destroy(w);
    gguf_close(f);
    ck_assert_int_eq(eng_model_load(bad, NULL, &m, g_err, sizeof g_err), ENG_ERR);
    ck_assert_msg(strstr(g_err, "rope.dimension_count") != NULL, "%s", g_err);
    eng_model_free(mf);
    unlink(f32);
    unlink(split);
    unlink(bad);
}
END_TEST

/* vis rewritten in moondream's own mmproj layout (its exporter, which
 * llama.cpp's clip reads): block_count one past the blocks run, a copy of the
 * last block stored there, fc1 named "ffn_down" and fc2 "ffn_up", no
 * feature_layer; feature_layer >= 0 writes that key instead of dropping it. */
static void upstream_mmproj(const char *vis, const char *dst, int feature_layer)
{
    gguf_file *f;
    ck_assert_msg(gguf_open(vis, &f, g_err, sizeof g_err) == GGUF_OK, "%s", g_err);
    int64_t n64 = 0;
    ck_assert(gguf_get_i64(f, "clip.vision.block_count", &n64) && n64 >= 1);
    int n = (int)n64;
    gguf_writer *w = gguf_writer_create();
    for (int i = 0; i < gguf_n_kv(f); i++)
        if (strcmp(gguf_key(f, i), "clip.vision.feature_layer") != 0) gguf_set_from(w, f, i);
    gguf_set_u32(w, "clip.vision.block_count", (uint32_t)n + 1);
    if (feature_layer >= 0)
        gguf_set_arr(w, "clip.vision.feature_layer", GGUF_INT32, &feature_layer, 1);
    for (int i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        char name[96];
        const char *up = strstr(t->name, ".ffn_up."), *dn = strstr(t->name, ".ffn_down.");
        if (up)
            snprintf(name, sizeof name, "%.*s.ffn_down.%s", (int)(up - t->name), t->name, up + 8);
        else if (dn)
            snprintf(name, sizeof name, "%.*s.ffn_up.%s", (int)(dn - t->name), t->name, dn + 10);
        else
            snprintf(name, sizeof name, "%s", t->name);
        ck_assert_int_eq(
            gguf_add_tensor(w, name, t->type, t->n_dims, t->ne, t->data, g_err, sizeof g_err),
            GGUF_OK);
        int l;
        char rest[64];
        if (sscanf(name, "v.blk.%d.%63s", &l, rest) == 2 && l == n - 1) {
            snprintf(name, sizeof name, "v.blk.%d.%s", n, rest);
            ck_assert_int_eq(
                gguf_add_tensor(w, name, t->type, t->n_dims, t->ne, t->data, g_err, sizeof g_err),
                GGUF_OK);
        }
    }
    ck_assert_msg(gguf_write(w, dst, g_err, sizeof g_err) == GGUF_OK, "%s", g_err);
    gguf_writer_destroy(w);
    gguf_close(f);
}

static float *encode_with(const char *text, const char *vis, const golden *g)
{
    eng_model *m;
    ck_assert_msg(eng_model_load(text, vis, &m, g_err, sizeof g_err) == ENG_OK, "%s", g_err);
    eng_ctx *c = make_ctx(m, 1, 2);
    float *e = encode_image(c, m, g);
    ck_assert_ptr_nonnull(e);
    eng_ctx_destroy(c);
    eng_model_free(m);
    return e;
}

/* An "mlp" mmproj in moondream's upstream layout gives the embeddings of
 * tern convert's (which names every block it runs in feature_layer), bit for
 * bit: llama.cpp's block count and swapped-FFN rules. A feature_layer past
 * block_count is refused by name. */
START_TEST(test_phi_mmproj_upstream)
{
    char text[512], vis[512], up[512];
    snprintf(text, sizeof text, "%s/phi-tiny.gguf", g_tmp);
    snprintf(vis, sizeof vis, "%s/phi-tiny-mmproj.gguf", g_tmp);
    tmp_path(up, sizeof up, "phi-mmproj-upstream.gguf");
    golden g;
    golden_open(&g, "phi-tiny");
    const eng_model_info *in;
    eng_model *m;
    ck_assert_msg(eng_model_load(text, vis, &m, g_err, sizeof g_err) == ENG_OK, "%s", g_err);
    in = eng_model_get_info(m);
    size_t n = (size_t)in->n_image_tokens * in->n_embd;
    eng_model_free(m);
    float *ours = encode_with(text, vis, &g);
    upstream_mmproj(vis, up, -1);
    float *theirs = encode_with(text, up, &g);
    ck_assert(memcmp(ours, theirs, n * sizeof *ours) == 0);
    free(theirs);
    upstream_mmproj(vis, up, 3); /* all three stored blocks: not what the converter wrote */
    theirs = encode_with(text, up, &g);
    ck_assert(memcmp(ours, theirs, n * sizeof *ours) != 0);
    free(theirs);
    upstream_mmproj(vis, up, 9);
    ck_assert_int_eq(eng_model_load(text, up, &m, g_err, sizeof g_err), ENG_ERR);
    ck_assert_msg(strstr(g_err, "feature_layer") != NULL, "%s", g_err);
    free(ours);
    golden_close(&g);
    unlink(up);
}
END_TEST

/* moondream2's prompt through chat.c, as tern run, perplexity and ternd
 * build it: BOS, the picture's rows (the encoder's output for the
 * preprocessed picture), "\n\nQuestion: ...\n\nAnswer:"; prefilled, it
 * gives the logits of the same rows and ids stepped by hand. */
START_TEST(test_phi_chat_prompt)
{
    char text[512], vis[512];
    snprintf(text, sizeof text, "%s/phi-tiny.gguf", g_tmp);
    snprintf(vis, sizeof vis, "%s/phi-tiny-mmproj.gguf", g_tmp);
    eng_model *m;
    ck_assert_msg(eng_model_load(text, vis, &m, g_err, sizeof g_err) == ENG_OK, "%s", g_err);
    const eng_model_info *in = eng_model_get_info(m);
    ck_assert_int_eq(in->n_image_tokens, 16); /* 56 / 14 squared: one row per patch */
    /* converted as llama.cpp converts moondream2: CodeGen's pre-tokenizer ("phi-2", GPT-2's
     * regex), BOS and EOS both <|endoftext|> */
    ck_assert_str_eq(gguf_get_str(eng_model_text_file(m), "tokenizer.ggml.pre"), "phi-2");
    tok *t;
    ck_assert_int_eq(tok_load(eng_model_text_file(m), &t, g_err, sizeof g_err), 0);
    int bos = tok_bos(t);
    ck_assert_int_eq(bos, tok_eos(t));
    chat_ctx cc;
    ck_assert_msg(chat_init(&cc, m, t, g_err, sizeof g_err) == 0, "%s", g_err);
    ck_assert(cc.icfg.squash && cc.icfg.filter == IMG_BICUBIC); /* Resize((S, S), BICUBIC) */
    eng_ctx *c = make_ctx(m, 2, 1);

    uint8_t px[40 * 30 * 3];
    for (size_t i = 0; i < sizeof px; i++)
        px[i] = (uint8_t)(i * 7 % 251);
    img_rgb im = {.w = 40, .h = 30, .rgb = px};
    chat_msg msg = {.role = PROMPT_USER, .text = "What is this?", .n_images = 1};
    chat_prompt p;
    ck_assert_msg(chat_prompt_build(&cc, c, &msg, 1, &im, 1, &p, g_err, sizeof g_err) == 0, "%s",
                  g_err);
    ck_assert_int_eq(p.ids[0], bos);
    ck_assert_ptr_null(p.rows[0]);
    for (int i = 1; i <= 16; i++)
        ck_assert_ptr_eq(p.rows[i], p.embd + (size_t)(i - 1) * in->n_embd);
    char out[256];
    tok_decode(t, p.ids + 17, p.n - 17, true, out, sizeof out);
    ck_assert_str_eq(out, "\n\nQuestion: What is this?\n\nAnswer:");
    for (int i = 17; i < p.n; i++)
        ck_assert_ptr_null(p.rows[i]);
    ck_assert(chat_is_stop(&cc, bos) && !chat_is_stop(&cc, p.ids[1]));

    /* the rows are the encoder's for the preprocessed tile */
    img_tiles tiles;
    ck_assert_int_eq(img_preprocess(&im, &cc.icfg, &tiles, g_err, sizeof g_err), 0);
    ck_assert_int_eq(tiles.n, 1);
    float *e = malloc((size_t)16 * in->n_embd * sizeof *e);
    ck_assert_int_eq(eng_vision_encode(c, tiles.pixels, 1, e, g_err, sizeof g_err), ENG_OK);
    ck_assert(memcmp(e, p.embd, (size_t)16 * in->n_embd * sizeof *e) == 0);

    ck_assert_msg(chat_prefill(c, 0, &p, 0, g_err, sizeof g_err) == 0, "%s", g_err);
    float *lg = malloc((size_t)in->n_vocab * sizeof *lg);
    memcpy(lg, eng_logits(c, 0), (size_t)in->n_vocab * sizeof *lg);
    eng_item it = {.slot = 1,
                   .n_tokens = p.n,
                   .tokens = p.ids,
                   .embd = (const float *const *)p.rows,
                   .pos = 0,
                   .want_logits = true};
    ck_assert_int_eq(eng_step(c, &it, 1, g_err, sizeof g_err), ENG_OK);
    ck_assert(rel_err(lg, eng_logits(c, 1), in->n_vocab) <= 1e-6);

    free(lg);
    free(e);
    img_tiles_free(&tiles);
    chat_prompt_free(&p);
    eng_ctx_destroy(c);
    tok_free(t);
    eng_model_free(m);
}
END_TEST

/* A moondream2 checkpoint whose phi_config disagrees with its tensors (3
 * blocks said, 2 there) is refused, naming both. */
START_TEST(test_phi_convert_refusals)
{
    char dir[512], path[600], src[600], prefix[512];
    tmp_path(dir, sizeof dir, "bad-hf");
    tmp_path(prefix, sizeof prefix, "bad-out");
    ck_assert_int_eq(mkdir(dir, 0700), 0);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    snprintf(src, sizeof src, GOLDEN "phi-tiny-hf/model.safetensors");
    ck_assert_int_eq(symlink(src, path), 0);
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs("{\"model_type\": \"moondream1\", \"phi_config\": {\"hidden_size\": 256, "
          "\"intermediate_size\": 512, \"num_hidden_layers\": 3, \"num_attention_heads\": 4, "
          "\"vocab_size\": 320}}",
          f);
    fclose(f);
    ck_assert_int_ne(convert_hf(dir, prefix, KT_F32, g_err, sizeof g_err), 0);
    ck_assert_msg(strstr(g_err, "phi_config") && strstr(g_err, "2 blocks"), "%s", g_err);
    unlink(path);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    unlink(path);
    rmdir(dir);
    snprintf(path, sizeof path, "%s.gguf", prefix);
    unlink(path);
}
END_TEST

START_TEST(test_bad_input)
{
    eng_model *m;
    ck_assert_int_eq(eng_model_load("/nonexistent.gguf", NULL, &m, g_err, sizeof g_err), ENG_ERR);
    ck_assert_ptr_null(m);
    /* A golden file is a GGUF but not a model: refused by name. */
    ck_assert_int_eq(eng_model_load(GOLDEN "odd.golden.gguf", NULL, &m, g_err, sizeof g_err),
                     ENG_ERR);
    ck_assert_msg(strstr(g_err, "general.architecture") != NULL, "%s", g_err);
    /* The text model as mmproj: the projector type is missing. */
    char odd[512];
    snprintf(odd, sizeof odd, "%s/odd.gguf", g_tmp);
    ck_assert_int_eq(eng_model_load(odd, odd, &m, g_err, sizeof g_err), ENG_ERR);
    ck_assert_msg(strstr(g_err, "projector_type") != NULL, "%s", g_err);
    /* The mmproj as text model: not llama. */
    char oddv[512];
    snprintf(oddv, sizeof oddv, "%s/odd-mmproj.gguf", g_tmp);
    ck_assert_int_eq(eng_model_load(oddv, NULL, &m, g_err, sizeof g_err), ENG_ERR);
    ck_assert_msg(strstr(g_err, "architecture") != NULL, "%s", g_err);

    ck_assert_int_eq(eng_model_load(odd, NULL, &m, g_err, sizeof g_err), ENG_OK);
    eng_ctx *c = make_ctx(m, 2, 1);
    int32_t toks[4] = {1, 2, 3, 999};
    eng_item it = {.slot = 0, .n_tokens = 4, .tokens = toks, .pos = 0};
    ck_assert_int_eq(eng_step(c, &it, 1, g_err, sizeof g_err), ENG_ERR); /* token 999 */
    it.n_tokens = 3;
    it.pos = 1;
    ck_assert_int_eq(eng_step(c, &it, 1, g_err, sizeof g_err), ENG_ERR); /* past length */
    it.pos = 0;
    it.slot = 5;
    ck_assert_int_eq(eng_step(c, &it, 1, g_err, sizeof g_err), ENG_ERR); /* slot */
    it.slot = 0;
    eng_item two[2] = {it, it};
    ck_assert_int_eq(eng_step(c, two, 2, g_err, sizeof g_err), ENG_ERR); /* slot twice */
    ck_assert_int_eq(eng_slot_len(c, 0), 0);                             /* nothing changed */
    ck_assert_int_eq(eng_step(c, &it, 1, g_err, sizeof g_err), ENG_OK);
    ck_assert_int_eq(eng_slot_len(c, 0), 3);
    ck_assert_ptr_null(eng_logits(c, 0)); /* not asked for */
    float px[1];
    ck_assert_int_eq(eng_vision_encode(c, px, 1, px, g_err, sizeof g_err), ENG_ERR);
    eng_ctx_destroy(c);
    eng_model_free(m);
}
END_TEST

/* ---- sampler ---- */

START_TEST(test_sampler)
{
    enum { V = 100 };
    float lg[V];
    for (int i = 0; i < V; i++)
        lg[i] = (float)((i * 37) % V) / 10.0f;
    int best = argmax(lg, V);
    sampler_params p = sampler_default_params();
    p.temperature = 0;
    sampler *s = sampler_create(V, &p);
    ck_assert_int_eq(sampler_sample(s, lg), best);
    sampler_destroy(s);

    /* Same seed, same tokens; another seed, (almost surely) others. */
    p = sampler_default_params();
    p.temperature = 1.5f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0;
    p.seed = 42;
    int32_t a[64], b[64], d[64];
    sampler *s1 = sampler_create(V, &p), *s2 = sampler_create(V, &p);
    p.seed = 43;
    sampler *s3 = sampler_create(V, &p);
    int diff = 0;
    for (int i = 0; i < 64; i++) {
        a[i] = sampler_sample(s1, lg);
        b[i] = sampler_sample(s2, lg);
        d[i] = sampler_sample(s3, lg);
        ck_assert_int_eq(a[i], b[i]);
        diff += a[i] != d[i];
    }
    ck_assert_int_gt(diff, 0);
    sampler_reset(s1);
    ck_assert_int_eq(sampler_sample(s1, lg), a[0]);
    sampler_destroy(s1);
    sampler_destroy(s2);
    sampler_destroy(s3);

    /* top_k = 3: only the three best ever come out. */
    p.top_k = 3;
    s = sampler_create(V, &p);
    int sorted[3] = {best, -1, -1};
    for (int k = 1; k < 3; k++) {
        int bi = -1;
        for (int i = 0; i < V; i++) {
            bool used = false;
            for (int j = 0; j < k; j++)
                used |= sorted[j] == i;
            if (!used && (bi < 0 || lg[i] > lg[bi])) bi = i;
        }
        sorted[k] = bi;
    }
    for (int i = 0; i < 200; i++) {
        int t = sampler_sample(s, lg);
        ck_assert(t == sorted[0] || t == sorted[1] || t == sorted[2]);
    }
    sampler_destroy(s);

    /* top_p tiny: only the best. min_p = 1: only the best. */
    p.top_k = 0;
    p.top_p = 1e-6f;
    s = sampler_create(V, &p);
    for (int i = 0; i < 50; i++)
        ck_assert_int_eq(sampler_sample(s, lg), best);
    sampler_destroy(s);
    p.top_p = 1.0f;
    p.min_p = 1.0f;
    s = sampler_create(V, &p);
    for (int i = 0; i < 50; i++)
        ck_assert_int_eq(sampler_sample(s, lg), best);
    sampler_destroy(s);

    /* A huge repetition penalty on the best token moves greedy off it. */
    p = sampler_default_params();
    p.temperature = 0;
    p.repeat_penalty = 1000.0f;
    s = sampler_create(V, &p);
    sampler_accept(s, best);
    ck_assert_int_ne(sampler_sample(s, lg), best);
    sampler_destroy(s);
}
END_TEST

/* ---- sampler without top_k over a large vocabulary ---- */

enum { SV = 3000 };
static float g_big[SV];
static int g_order[SV];

static int by_logit_desc(const void *a, const void *b)
{
    int i = *(const int *)a, j = *(const int *)b;
    if (g_big[i] != g_big[j]) return g_big[i] > g_big[j] ? -1 : 1;
    return i - j;
}

/* How many of the best (in g_order) the cuts keep, computed the slow way:
 * the whole vocabulary sorted, probabilities over all of it; a hair
 * generous at both cuts, so float rounding at a boundary is no failure. */
static int kept_by_cuts(float temperature, float top_p, float min_p)
{
    double z = 0.0, cum = 0.0;
    float mx = g_big[g_order[0]];
    for (int i = 0; i < SV; i++)
        z += exp((g_big[i] - mx) / temperature);
    int n = SV;
    for (int i = 0; i < SV; i++) {
        cum += exp((g_big[g_order[i]] - mx) / temperature) / z;
        if (cum >= top_p + 1e-4) {
            n = i + 1;
            break;
        }
    }
    int keep = 1;
    while (keep < n && exp((g_big[g_order[keep]] - mx) / temperature) >= min_p * (1 - 1e-4))
        keep++;
    return keep;
}

/* Without top_k the sampler selects only what min_p and top_p can keep
 * rather than sorting the vocabulary: every token drawn is one the cuts
 * keep, the draws spread over them, and the same seed gives the same tokens. */
START_TEST(test_sampler_no_top_k)
{
    for (int i = 0; i < SV; i++) {
        g_big[i] = (float)((i * 7919) % 1009) / 100.0f; /* 0 .. 10.08, each value ~3 times */
        g_order[i] = i;
    }
    qsort(g_order, SV, sizeof *g_order, by_logit_desc);
    /* min_p alone; top_p within the first few hundred; top_p past them; both */
    const float cases[][3] = {
        {1.0f, 1.0f, 0.05f}, {1.0f, 0.5f, 0.0f}, {4.0f, 0.5f, 0.0f}, {2.0f, 0.9f, 0.2f}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        sampler_params p = sampler_default_params();
        p.top_k = 0;
        p.temperature = cases[c][0];
        p.top_p = cases[c][1];
        p.min_p = cases[c][2];
        p.seed = 7 + c;
        int keep = kept_by_cuts(p.temperature, p.top_p, p.min_p);
        ck_assert_int_gt(keep, 10);
        static bool in_set[SV], seen[SV];
        memset(in_set, 0, sizeof in_set);
        memset(seen, 0, sizeof seen);
        for (int i = 0; i < keep; i++)
            in_set[g_order[i]] = true;
        sampler *s = sampler_create(SV, &p), *s2 = sampler_create(SV, &p);
        int distinct = 0;
        for (int i = 0; i < 2000; i++) {
            int t = sampler_sample(s, g_big);
            ck_assert_int_eq(sampler_sample(s2, g_big), t);
            ck_assert_msg(t >= 0 && t < SV && in_set[t], "case %zu: token %d outside the cuts", c,
                          t);
            distinct += !seen[t];
            seen[t] = true;
        }
        ck_assert_int_gt(distinct, keep / 4);
        sampler_destroy(s);
        sampler_destroy(s2);
    }
}
END_TEST

/* Convert the golden checkpoints once, before the (forked) tests run. */
static int convert_goldens(void)
{
    snprintf(g_tmp, sizeof g_tmp, "/tmp/tern-test-model-XXXXXX");
    if (!mkdtemp(g_tmp)) {
        perror("mkdtemp");
        return -1;
    }
    const char *names[] = {"tiny", "odd", "phi-tiny"};
    for (int i = 0; i < 3; i++) {
        char dir[512], prefix[512];
        snprintf(dir, sizeof dir, GOLDEN "%s-hf", names[i]);
        snprintf(prefix, sizeof prefix, "%s/%s", g_tmp, names[i]);
        if (convert_hf(dir, prefix, KT_F32, g_err, sizeof g_err) != 0) {
            fprintf(stderr, "convert %s: %s\n", dir, g_err);
            return -1;
        }
    }
    return 0;
}

static void remove_goldens(void)
{
    const char *files[] = {"tiny.gguf",       "tiny-mmproj.gguf", "odd.gguf",
                           "odd-mmproj.gguf", "phi-tiny.gguf",    "phi-tiny-mmproj.gguf"};
    for (int i = 0; i < 6; i++) {
        char p[512];
        tmp_path(p, sizeof p, files[i]);
        unlink(p);
    }
    rmdir(g_tmp);
}

int main(void)
{
    if (convert_goldens() != 0) {
        remove_goldens();
        return EXIT_FAILURE;
    }
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("model");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_golden_tiny);
    tcase_add_test(tc, test_golden_odd);
    tcase_add_test(tc, test_golden_phi);
    tcase_add_loop_test(tc, test_quantized, 0, (int)(sizeof quant_cases / sizeof quant_cases[0]));
    tcase_add_loop_test(tc, test_batched, 0,
                        (int)(sizeof batched_models / sizeof batched_models[0]));
    tcase_add_test(tc, test_phi_layouts);
    tcase_add_test(tc, test_phi_chat_prompt);
    tcase_add_test(tc, test_phi_mmproj_upstream);
    tcase_add_test(tc, test_phi_convert_refusals);
    tcase_add_test(tc, test_kv_f16);
    tcase_add_test(tc, test_tied_and_shapes);
    tcase_add_test(tc, test_bad_input);
    tcase_add_test(tc, test_sampler);
    tcase_add_test(tc, test_sampler_no_top_k);
    suite_add_tcase(s, tc);
    int rc = tu_run(s, CK_FORK_GETENV);
    remove_goldens();
    return rc;
}
