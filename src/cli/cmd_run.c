/* tern run: one prompt (and optionally one image) through the model, the
 * answer streamed to stdout token by token, then one timing line on stderr.
 * The same path the daemon takes, minus HTTP: vision encode, chunked
 * prefill, then one token per eng_step. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "cli/cli_util.h"
#include "cli/commands.h"
#include "engine/engine.h"
#include "engine/image.h"
#include "engine/prompt.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"

#define CMD "run"

static const char usage_text[] =
    "usage: tern run -m TEXT.gguf [--mmproj VISION.gguf] [--image FILE] -p PROMPT [options]\n"
    "\n"
    "Answer PROMPT (about FILE, a JPEG or PNG, when given) with the SmolVLM chat\n"
    "template, streaming the answer to stdout. A timing line goes to stderr.\n"
    "\n"
    "  -m, --model FILE       text model GGUF\n"
    "      --mmproj FILE      vision projector GGUF (needed with --image)\n"
    "      --image FILE       picture to ask about\n"
    "  -p, --prompt TEXT      the question\n"
    "  -n, --max-tokens N     stop after N tokens (default 256)\n"
    "      --temp T           temperature; 0 = greedy (default 0)\n"
    "      --top-k K          (default 40)\n"
    "      --top-p P          (default 0.95)\n"
    "      --min-p P          (default 0.05)\n"
    "      --repeat-penalty R (default 1.0: off)\n"
    "      --seed S           sampling seed (default 0)\n"
    "  -t, --threads N        worker threads (default: one per CPU)\n"
    "  -c, --ctx N            context length (default 4096, at most the model's)\n"
    "  -h, --help             show this help\n";

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* The SmolVLM chat prompt for one user turn (image first, as SmolVLM's
 * examples put it), and per id the embedding row that replaces it: the
 * image's rows go, in order, to the real <image> tokens (crops row by row,
 * then the global tile: img_tiles' order, which prompt_build follows). */
static int build_prompt(const tok *t, const eng_model_info *in, const char *text, const float *embd,
                        int rows, int cols, int32_t **ids, const float ***erows, int *n, char *err,
                        size_t errlen)
{
    prompt_ctx pc;
    if (prompt_init(&pc, t, in->n_image_tokens, err, errlen) != 0) return -1;
    prompt_part parts[2] = {{.image = true, .rows = rows, .cols = cols}, {.text = text}};
    prompt_msg msg = {
        .role = PROMPT_USER, .parts = embd ? parts : parts + 1, .n_parts = embd ? 2 : 1};
    if (prompt_build(&pc, &msg, 1, true, ids, n, err, errlen) != 0) return -1;
    *erows = calloc((size_t)*n, sizeof **erows);
    if (!*erows) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int k = 0, n_rows = embd ? (rows * cols + 1) * in->n_image_tokens : 0;
    for (int i = 0; i < *n; i++)
        if ((*ids)[i] == pc.image && k < n_rows) (*erows)[i] = embd + (size_t)(k++) * in->n_embd;
    if (k != n_rows) {
        snprintf(err, errlen, "the prompt holds %d image tokens for %d image rows", k, n_rows);
        return -1;
    }
    return 0;
}

/* Decode, tile and encode the image: rows x cols crops + the global tile.
 * Returns the embeddings (n_tiles * n_image_tokens rows) or NULL. */
static float *encode_image(eng_ctx *c, const eng_model *m, const char *path, int *rows, int *cols)
{
    const eng_model_info *in = eng_model_get_info(m);
    const gguf_file *vf = eng_model_vision_file(m);
    char err[512];
    size_t len;
    void *data = cli_read_file(path, &len);
    if (!data) {
        fprintf(stderr, "tern run: cannot read %s\n", path);
        return NULL;
    }
    img_rgb im = {0};
    img_limits lim = {0};
    int rc = img_decode(data, len, &lim, &im, err, sizeof err);
    free(data);
    if (rc != 0) {
        fprintf(stderr, "tern run: %s: %s\n", path, err);
        return NULL;
    }
    img_proc_cfg cfg = {
        .longest_edge = in->image_size, .tile = in->image_size, .rescale = 1.0 / 255.0};
    /* A processor that resizes past one tile splits the image into crops. */
    uint64_t pre;
    if (gguf_get_u64(vf, "clip.vision.preproc_image_size", &pre) && pre > 0 && pre < 65536)
        cfg.longest_edge = (int)pre;
    cfg.split = cfg.longest_edge > cfg.tile;
    memcpy(cfg.mean, in->image_mean, sizeof cfg.mean);
    memcpy(cfg.std, in->image_std, sizeof cfg.std);
    img_tiles tiles = {0};
    rc = img_preprocess(&im, &cfg, &tiles, err, sizeof err);
    img_free(&im);
    if (rc != 0) {
        fprintf(stderr, "tern run: %s: %s\n", path, err);
        return NULL;
    }
    float *embd = malloc((size_t)tiles.n * in->n_image_tokens * in->n_embd * sizeof *embd);
    if (!embd || eng_vision_encode(c, tiles.pixels, tiles.n, embd, err, sizeof err) != ENG_OK) {
        fprintf(stderr, "tern run: %s\n", embd ? err : "out of memory");
        free(embd);
        embd = NULL;
    }
    *rows = tiles.rows;
    *cols = tiles.cols;
    img_tiles_free(&tiles);
    return embd;
}

typedef struct {
    const char *model, *mmproj, *image, *prompt;
    long long max_tokens, threads, n_ctx;
    sampler_params sp;
} run_opts;

static int parse(int argc, char **argv, run_opts *o)
{
    static const struct option longopts[] = {
        {"model", required_argument, NULL, 'm'},
        {"mmproj", required_argument, NULL, 1},
        {"image", required_argument, NULL, 2},
        {"prompt", required_argument, NULL, 'p'},
        {"max-tokens", required_argument, NULL, 'n'},
        {"temp", required_argument, NULL, 3},
        {"top-k", required_argument, NULL, 4},
        {"top-p", required_argument, NULL, 5},
        {"min-p", required_argument, NULL, 6},
        {"repeat-penalty", required_argument, NULL, 7},
        {"seed", required_argument, NULL, 8},
        {"threads", required_argument, NULL, 't'},
        {"ctx", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    double d;
    long long v;
    while ((ch = cli_getopt(CMD, argc, argv, "m:p:n:t:c:h", longopts)) != -1) {
        switch (ch) {
        case 'm': o->model = optarg; break;
        case 1: o->mmproj = optarg; break;
        case 2: o->image = optarg; break;
        case 'p': o->prompt = optarg; break;
        case 'n':
            if (!cli_parse_int(CMD, "--max-tokens", optarg, 1, 1 << 20, &o->max_tokens))
                return CLI_USAGE;
            break;
        case 3:
            if (!cli_parse_float(CMD, "--temp", optarg, 0, 100, &d)) return CLI_USAGE;
            o->sp.temperature = (float)d;
            break;
        case 4:
            if (!cli_parse_int(CMD, "--top-k", optarg, 0, 1 << 24, &v)) return CLI_USAGE;
            o->sp.top_k = (int)v;
            break;
        case 5:
            if (!cli_parse_float(CMD, "--top-p", optarg, 0, 1, &d)) return CLI_USAGE;
            o->sp.top_p = (float)d;
            break;
        case 6:
            if (!cli_parse_float(CMD, "--min-p", optarg, 0, 1, &d)) return CLI_USAGE;
            o->sp.min_p = (float)d;
            break;
        case 7:
            if (!cli_parse_float(CMD, "--repeat-penalty", optarg, 0.01, 100, &d)) return CLI_USAGE;
            o->sp.repeat_penalty = (float)d;
            break;
        case 8:
            if (!cli_parse_int(CMD, "--seed", optarg, 0, INT64_MAX, &v)) return CLI_USAGE;
            o->sp.seed = (uint64_t)v;
            break;
        case 't':
            if (!cli_parse_int(CMD, "--threads", optarg, 1, 1024, &o->threads)) return CLI_USAGE;
            break;
        case 'c':
            if (!cli_parse_int(CMD, "--ctx", optarg, 16, 1 << 20, &o->n_ctx)) return CLI_USAGE;
            break;
        case 'h': fputs(usage_text, stdout); return -1;
        default: return CLI_USAGE;
        }
    }
    if (optind < argc) return cli_usage_error(CMD, "unexpected argument '%s'", argv[optind]);
    if (!o->model || !o->prompt) return cli_usage_error(CMD, "-m MODEL and -p PROMPT are required");
    if (o->image && !o->mmproj) return cli_usage_error(CMD, "--image needs --mmproj VISION.gguf");
    return CLI_OK;
}

int cmd_run(int argc, char **argv)
{
    run_opts o = {.max_tokens = 256, .n_ctx = 4096, .sp = sampler_default_params()};
    o.sp.temperature = 0;
    int rc = parse(argc, argv, &o);
    if (rc != CLI_OK) return rc < 0 ? CLI_OK : rc;

    char err[1024];
    eng_model *m = NULL;
    eng_ctx *c = NULL;
    tok *t = NULL;
    tok_stream *ts = NULL;
    sampler *s = NULL;
    float *embd = NULL;
    int32_t *ids = NULL;
    const float **erows = NULL;
    int n_prompt = 0;
    rc = CLI_FAIL;

    if (eng_model_load(o.model, o.mmproj, &m, err, sizeof err) != ENG_OK ||
        tok_load(eng_model_text_file(m), &t, err, sizeof err) != 0) {
        cli_error(CMD, "%s", err);
        goto out;
    }
    const eng_model_info *in = eng_model_get_info(m);
    eng_params p = eng_default_params();
    p.n_ctx = (int)o.n_ctx;
    p.n_batch = 256;
    p.n_threads = (int)o.threads;
    if (eng_ctx_create(m, &p, &c, err, sizeof err) != ENG_OK) {
        cli_error(CMD, "%s", err);
        goto out;
    }
    int n_ctx = eng_ctx_params(c)->n_ctx, n_batch = eng_ctx_params(c)->n_batch;

    double t0 = now_ms(), t_img = 0;
    int rows = 0, cols = 0;
    if (o.image) {
        embd = encode_image(c, m, o.image, &rows, &cols);
        if (!embd) goto out;
        t_img = now_ms() - t0;
    }
    if (build_prompt(t, in, o.prompt, embd, rows, cols, &ids, &erows, &n_prompt, err, sizeof err) !=
        0) {
        cli_error(CMD, "%s", err);
        goto out;
    }
    if (n_prompt >= n_ctx) {
        cli_error(CMD, "the prompt is %d tokens; the context holds %d", n_prompt, n_ctx);
        goto out;
    }

    double t1 = now_ms();
    for (int pos = 0; pos < n_prompt; pos += n_batch) {
        int n = n_prompt - pos < n_batch ? n_prompt - pos : n_batch;
        eng_item it = {.slot = 0,
                       .n_tokens = n,
                       .tokens = ids + pos,
                       .embd = (const float *const *)erows + pos,
                       .pos = pos,
                       .want_logits = pos + n == n_prompt};
        if (eng_step(c, &it, 1, err, sizeof err) != ENG_OK) {
            cli_error(CMD, "%s", err);
            goto out;
        }
    }
    double t2 = now_ms();

    s = sampler_create(in->n_vocab, &o.sp);
    ts = tok_stream_create(t);
    if (!s || !ts) {
        cli_error(CMD, "out of memory");
        goto out;
    }
    for (int i = 0; i < n_prompt; i++)
        sampler_accept(s, ids[i]);
    int eou = tok_special(t, "<end_of_utterance>"), eos = tok_eos(t), n_gen = 0;
    int32_t next = sampler_sample(s, eng_logits(c, 0));
    while (next != eou && next != eos && n_gen < o.max_tokens && n_prompt + n_gen < n_ctx) {
        size_t len;
        const char *piece = tok_stream_push(ts, next, &len);
        fwrite(piece, 1, len, stdout);
        fflush(stdout);
        eng_item it = {.slot = 0,
                       .n_tokens = 1,
                       .tokens = &next,
                       .pos = n_prompt + n_gen,
                       .want_logits = true};
        n_gen++;
        if (eng_step(c, &it, 1, err, sizeof err) != ENG_OK) {
            cli_error(CMD, "%s", err);
            goto out;
        }
        next = sampler_sample(s, eng_logits(c, 0));
    }
    size_t len;
    const char *tail = tok_stream_flush(ts, &len);
    fwrite(tail, 1, len, stdout);
    fputc('\n', stdout);
    double t3 = now_ms();

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    fprintf(stderr,
            "image encode %.1f ms | prompt %d tokens, %.1f tokens/s | generation %d tokens, "
            "%.1f tokens/s | peak RSS %.1f MiB\n",
            t_img, n_prompt, n_prompt / ((t2 - t1) / 1e3), n_gen,
            n_gen > 0 ? n_gen / ((t3 - t2) / 1e3) : 0.0, ru.ru_maxrss / 1024.0);
    rc = CLI_OK;
out:
    free(ids);
    free(erows);
    free(embd);
    sampler_destroy(s);
    tok_stream_destroy(ts);
    tok_free(t);
    eng_ctx_destroy(c);
    eng_model_free(m);
    return rc;
}
