/* Checks a model pair against a golden file of the PyTorch reference run on
 * the same picture and question (training/phi_reference.py --reference):
 * the preprocessed pixels, the prompt's ids, the image embeddings, the
 * logits at every prompt position, and the greedy continuation with the
 * logits of each of its steps. Not a unit test: the manual full-size check
 * of moondream2 (`make -C training moondream2-check`), too big for CI, where
 * test_model's goldens cover the tiny shapes.
 *
 *     build/tests/golden_check GOLDEN.gguf TEXT.gguf MMPROJ.gguf [--slots N]
 *                              [--threads N] [--tol X]
 *
 * The picture and the question come from the golden's golden.image and
 * golden.question; the prompt is built as tern run builds it (chat.c). The
 * prompt's logits come from n slots side by side (slot k first prefills
 * the prompt's first k/n in chunks, then every slot steps one position at
 * a time in one batched step), so each position's logits are those of a
 * single-token step after a chunked prefill, in a quarter of the steps of
 * one slot. Exit status 0 when everything matches within --tol (relative
 * L2 error per logits row, and over all image embeddings) and the greedy
 * tokens are the reference's, 1 when not, 2 on bad input. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "cli/cli_util.h"
#include "engine/chat.h"
#include "engine/engine.h"
#include "engine/gguf.h"
#include "engine/image.h"
#include "engine/tokenizer.h"

typedef struct {
    gguf_file *f;
    int n_prompt, n_greedy, image_token;
    int32_t *prompt, *greedy;
    const float *logits;        /* n_prompt x n_vocab */
    const float *greedy_logits; /* n_greedy x n_vocab: the row that chose greedy[k] */
    const float *pixels;        /* 3 x S x S */
    const float *image_embd;    /* n_image x n_embd */
    int64_t n_pixels, n_image_embd;
    const char *image, *question;
} golden;

/* Worst figures over a set of rows compared with the reference. */
typedef struct {
    double rel;     /* worst relative L2 error of a row */
    int rel_at;     /* which row */
    double abs;     /* largest |a - ref| */
    double ref_max; /* largest |ref| */
    int argmax_agree, n_rows;
} errs;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int argmax(const float *x, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

static void errs_add(errs *e, const float *a, const float *ref, int n, int row)
{
    double d = 0, r = 0;
    for (int i = 0; i < n; i++) {
        double di = (double)a[i] - ref[i];
        d += di * di;
        r += (double)ref[i] * ref[i];
        if (fabs(di) > e->abs) e->abs = fabs(di);
        if (fabs(ref[i]) > e->ref_max) e->ref_max = fabs(ref[i]);
    }
    double rel = sqrt(d / (r > 0 ? r : 1));
    if (rel > e->rel || e->n_rows == 0) e->rel = rel, e->rel_at = row;
    e->argmax_agree += argmax(a, n) == argmax(ref, n);
    e->n_rows++;
}

static void errs_print(const char *what, const errs *e)
{
    printf("%s: worst relative L2 error %.3g (row %d), max |diff| %.3g (max |ref| %.3g), "
           "argmax agrees %d/%d\n",
           what, e->rel, e->rel_at, e->abs, e->ref_max, e->argmax_agree, e->n_rows);
}

static const float *tensor_f32(const gguf_file *f, const char *name, int64_t want, int64_t *n,
                               char *err, size_t errlen)
{
    const gguf_tensor *t = gguf_find_tensor(f, name);
    if (!t || t->type != KT_F32) {
        snprintf(err, errlen, "no F32 tensor %s", name);
        return NULL;
    }
    int64_t ne = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
    if (want >= 0 && ne != want) {
        snprintf(err, errlen, "%s has %lld values, not %lld", name, (long long)ne, (long long)want);
        return NULL;
    }
    if (n) *n = ne;
    return t->data;
}

static int32_t *int_array(const gguf_file *f, const char *key, int n, char *err, size_t errlen)
{
    int i = gguf_find_key(f, key);
    if (i < 0 || gguf_arr_type(f, i) != GGUF_INT32 || gguf_arr_len(f, i) != (uint64_t)n) {
        snprintf(err, errlen, "%s: not an int32 array of %d", key, n);
        return NULL;
    }
    int32_t *a = malloc((size_t)n * sizeof *a);
    if (a) memcpy(a, gguf_arr_data(f, i), (size_t)n * sizeof *a); /* may be unaligned */
    return a;
}

static int golden_open(const char *path, int n_vocab, golden *g, char *err, size_t errlen)
{
    memset(g, 0, sizeof *g);
    char e[256];
    if (gguf_open(path, &g->f, e, sizeof e) != GGUF_OK) {
        snprintf(err, errlen, "%s", e);
        return -1;
    }
    int64_t v[3];
    if (!gguf_get_i64(g->f, "golden.n_prompt", &v[0]) ||
        !gguf_get_i64(g->f, "golden.n_greedy", &v[1]) ||
        !gguf_get_i64(g->f, "golden.image_token_id", &v[2]) || v[0] < 1 || v[1] < 1 ||
        !(g->image = gguf_get_str(g->f, "golden.image")) ||
        !(g->question = gguf_get_str(g->f, "golden.question"))) {
        snprintf(err, errlen, "%s: not a full-size golden (golden.* keys missing)", path);
        return -1;
    }
    g->n_prompt = (int)v[0], g->n_greedy = (int)v[1], g->image_token = (int)v[2];
    if (!(g->prompt = int_array(g->f, "golden.prompt", g->n_prompt, e, sizeof e)) ||
        !(g->greedy = int_array(g->f, "golden.greedy", g->n_greedy, e, sizeof e)) ||
        !(g->logits =
              tensor_f32(g->f, "logits", (int64_t)g->n_prompt * n_vocab, NULL, e, sizeof e)) ||
        !(g->greedy_logits = tensor_f32(g->f, "greedy_logits", (int64_t)g->n_greedy * n_vocab, NULL,
                                        e, sizeof e)) ||
        !(g->pixels = tensor_f32(g->f, "pixels", -1, &g->n_pixels, e, sizeof e)) ||
        !(g->image_embd = tensor_f32(g->f, "image_embd", -1, &g->n_image_embd, e, sizeof e))) {
        snprintf(err, errlen, "%s: %s", path, e);
        return -1;
    }
    return 0;
}

static void golden_close(golden *g)
{
    free(g->prompt);
    free(g->greedy);
    if (g->f) gguf_close(g->f);
}

static long peak_rss_mb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024;
}

/* The prompt's logits at every position over n_slots slots (see the top of
 * the file), each row compared with the reference's as it comes. */
static int prompt_logits(eng_ctx *c, const golden *g, const float *const *rows, int n_slots, int V,
                         errs *e, char *err, size_t errlen)
{
    int n = g->n_prompt, n_batch = eng_ctx_params(c)->n_batch;
    for (int k = 1; k < n_slots; k++)
        for (int p = 0; p < k * n / n_slots; p += n_batch) {
            int m = k * n / n_slots - p < n_batch ? k * n / n_slots - p : n_batch;
            eng_item it = {
                .slot = k, .n_tokens = m, .tokens = g->prompt + p, .embd = rows + p, .pos = p};
            if (eng_step(c, &it, 1, err, errlen) != ENG_OK) return -1;
        }
    eng_item items[64];
    for (int j = 0;; j++) {
        int m = 0;
        for (int k = 0; k < n_slots; k++) {
            int pos = k * n / n_slots + j;
            if (pos >= (k + 1) * n / n_slots) continue;
            items[m++] = (eng_item){.slot = k,
                                    .n_tokens = 1,
                                    .tokens = g->prompt + pos,
                                    .embd = rows + pos,
                                    .pos = pos,
                                    .want_logits = true};
        }
        if (m == 0) break;
        if (eng_step(c, items, m, err, errlen) != ENG_OK) return -1;
        for (int i = 0; i < m; i++)
            errs_add(e, eng_logits(c, items[i].slot), g->logits + (size_t)items[i].pos * V, V,
                     items[i].pos);
    }
    return 0;
}

/* The greedy continuation on the slot that holds the whole prompt: the
 * reference's tokens are fed back (so one early difference does not hide
 * the later rows), each step's logits compared with the reference's row and
 * its argmax with the reference's token. Returns the first step whose token
 * differs, or n_greedy. */
static int greedy(eng_ctx *c, int slot, const golden *g, int V, errs *e, char *err, size_t errlen)
{
    int first_diff = g->n_greedy;
    for (int k = 0; k < g->n_greedy; k++) {
        if (k > 0) {
            eng_item it = {.slot = slot,
                           .n_tokens = 1,
                           .tokens = &g->greedy[k - 1],
                           .pos = g->n_prompt + k - 1,
                           .want_logits = true};
            if (eng_step(c, &it, 1, err, errlen) != ENG_OK) return -1;
        }
        const float *l = eng_logits(c, slot);
        errs_add(e, l, g->greedy_logits + (size_t)k * V, V, k);
        int tok = argmax(l, V);
        printf("%s%d", k ? " " : "greedy: ", tok);
        if (tok != g->greedy[k] && first_diff == g->n_greedy) first_diff = k;
    }
    printf("\n");
    return first_diff;
}

static int usage(void)
{
    fprintf(stderr, "usage: golden_check GOLDEN.gguf TEXT.gguf MMPROJ.gguf [--slots N] "
                    "[--threads N] [--tol X]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *pos_args[3];
    int n_pos = 0, n_slots = 4, n_threads = 2;
    double tol = 1e-4;
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && strcmp(argv[i], "--slots") == 0)
            n_slots = atoi(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "--threads") == 0)
            n_threads = atoi(argv[++i]);
        else if (i + 1 < argc && strcmp(argv[i], "--tol") == 0)
            tol = atof(argv[++i]);
        else if (n_pos < 3 && argv[i][0] != '-')
            pos_args[n_pos++] = argv[i];
        else
            return usage();
    }
    if (n_pos != 3 || n_slots < 1 || n_slots > 64 || n_threads < 1 || !(tol > 0)) return usage();

    setvbuf(stdout, NULL, _IOLBF, 0); /* progress shows while a long run is logged */
    char err[512] = "";
    double t0 = now_s();
    eng_model *m;
    if (eng_model_load(pos_args[1], pos_args[2], &m, err, sizeof err) != ENG_OK) {
        fprintf(stderr, "golden_check: %s\n", err);
        return 2;
    }
    const eng_model_info *in = eng_model_get_info(m);
    int V = in->n_vocab, D = in->n_embd;
    golden g;
    tok *t = NULL;
    eng_ctx *c = NULL;
    chat_ctx cc;
    img_rgb im = {0};
    img_tiles tiles = {0};
    chat_prompt p = {0};
    const float **rows = NULL;
    int status = 2;
    if (golden_open(pos_args[0], V, &g, err, sizeof err) != 0) goto done;
    if (!in->has_vision || g.n_pixels != 3LL * in->image_size * in->image_size ||
        g.n_image_embd != (int64_t)in->n_image_tokens * D) {
        snprintf(err, sizeof err, "the golden's picture does not fit %s's tower", pos_args[2]);
        goto done;
    }
    if (n_slots > g.n_prompt) n_slots = g.n_prompt;
    eng_params ep = eng_default_params();
    ep.n_slots = n_slots;
    ep.n_ctx = g.n_prompt + g.n_greedy;
    ep.n_batch = 512;
    ep.n_threads = n_threads;
    ep.kv_f16 = false; /* the reference keeps keys and values at full precision */
    if (eng_ctx_create(m, &ep, &c, err, sizeof err) != ENG_OK ||
        tok_load(eng_model_text_file(m), &t, err, sizeof err) != 0 ||
        chat_init(&cc, m, t, err, sizeof err) != 0 ||
        cli_load_image(g.image, chat_image_min_edge(&cc), &im, err, sizeof err) != 0 ||
        img_preprocess(&im, &cc.icfg, &tiles, err, sizeof err) != 0)
        goto done;
    printf("model %s + %s: %d layers, %d wide, vocabulary %d; %d image rows; loaded in %.1f s\n",
           pos_args[1], pos_args[2], in->n_layer, D, V, in->n_image_tokens, now_s() - t0);
    status = 1;

    /* the picture, preprocessed as tern run does it */
    errs e_px = {0};
    if (tiles.n != 1) {
        printf("pixels: %d tiles, the reference has one\n", tiles.n);
        goto done;
    }
    errs_add(&e_px, tiles.pixels, g.pixels, (int)g.n_pixels, 0);
    printf("pixels (%s): max |diff| %.3g\n", g.image, e_px.abs);

    /* the prompt, built as tern run builds it; its image rows from the encoder */
    chat_msg msg = {.role = PROMPT_USER, .text = g.question, .n_images = 1};
    t0 = now_s();
    if (chat_prompt_build(&cc, c, &msg, 1, &im, 1, &p, err, sizeof err) != 0) goto done;
    double vision_s = now_s() - t0;
    bool ids_ok = p.n == g.n_prompt;
    for (int i = 0; ids_ok && i < p.n; i++)
        ids_ok = (p.rows[i] != NULL) == (g.prompt[i] == g.image_token) &&
                 (p.rows[i] || p.ids[i] == g.prompt[i]);
    printf("prompt \"%s\": %d positions, ids and image positions %s the reference's\n", g.question,
           p.n, ids_ok ? "are" : "are NOT");
    errs e_img = {0};
    errs_add(&e_img, p.embd, g.image_embd, (int)g.n_image_embd, 0);
    printf("image embeddings (%d x %d, encoded in %.1f s): relative L2 error %.3g, max |diff| "
           "%.3g (max |ref| %.3g)\n",
           in->n_image_tokens, D, vision_s, e_img.rel, e_img.abs, e_img.ref_max);

    /* the reference's prompt, its image positions taking the encoder's rows */
    rows = calloc((size_t)g.n_prompt, sizeof *rows);
    if (!rows) goto done;
    for (int i = 0, k = 0; i < g.n_prompt; i++)
        if (g.prompt[i] == g.image_token && k < in->n_image_tokens)
            rows[i] = p.embd + (size_t)(k++) * D;
    errs e_lg = {0}, e_gr = {0};
    t0 = now_s();
    if (prompt_logits(c, &g, rows, n_slots, V, &e_lg, err, sizeof err) != 0) goto done;
    double prompt_s = now_s() - t0;
    errs_print("prompt logits", &e_lg);
    t0 = now_s();
    int diff = greedy(c, n_slots - 1, &g, V, &e_gr, err, sizeof err);
    if (diff < 0) goto done;
    errs_print("greedy-step logits", &e_gr);
    printf("greedy tokens: %s (%d)\n", diff == g.n_greedy ? "all match" : "differ from step",
           diff == g.n_greedy ? g.n_greedy : diff);
    printf("time: prompt logits %.1f s, greedy %.1f s; peak RSS %ld MB\n", prompt_s, now_s() - t0,
           peak_rss_mb());
    bool ok =
        ids_ok && e_img.rel <= tol && e_lg.rel <= tol && e_gr.rel <= tol && diff == g.n_greedy;
    printf("%s (tolerance %g relative)\n", ok ? "MATCH" : "MISMATCH", tol);
    status = ok ? 0 : 1;
done:
    if (err[0]) fprintf(stderr, "golden_check: %s\n", err);
    free(rows);
    chat_prompt_free(&p);
    img_tiles_free(&tiles);
    img_free(&im);
    if (c) eng_ctx_destroy(c);
    tok_free(t);
    golden_close(&g);
    eng_model_free(m);
    return status;
}
