/* tern run: one prompt (and optionally one image) through the model, the
 * answer streamed to stdout token by token, then one timing line on stderr.
 * The daemon's path minus HTTP and the scheduler: the same prompt (chat.h) and the same
 * sampler, so ternd gives the same tokens for the same request and seed; here the prompt is
 * prefilled in chunks and then one token per eng_step. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "cli/cli_util.h"
#include "cli/commands.h"
#include "engine/chat.h"
#include "engine/grammar.h"

#define CMD "run"

static const char usage_text[] =
    "usage: tern run -m TEXT.gguf [--mmproj VISION.gguf] [--image FILE] -p PROMPT [options]\n"
    "\n"
    "Answer PROMPT (about FILE, a JPEG or PNG, when given) in the model family's prompt\n"
    "format (SmolVLM's chat template, moondream2's \"Question: ... Answer:\"), streaming\n"
    "the answer to stdout. A timing line goes to stderr.\n"
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
    "      --format F         answer JSON: F is \"json\" (any JSON value) or a JSON Schema\n"
    "                         file (the subset in docs/api.md)\n"
    "  -t, --threads N        worker threads (default: one per CPU)\n"
    "  -c, --ctx N            context length (default 4096, at most the model's)\n"
    "  -h, --help             show this help\n";

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

typedef struct {
    const char *model, *mmproj, *image, *prompt, *format;
    long long max_tokens, threads, n_ctx;
    sampler_params sp;
} run_opts;

/* Codes of the long options without a letter. */
enum {
    OPT_MMPROJ = 1,
    OPT_IMAGE,
    OPT_TEMP,
    OPT_TOP_K,
    OPT_TOP_P,
    OPT_MIN_P,
    OPT_REPEAT_PENALTY,
    OPT_SEED,
    OPT_FORMAT,
};

/* optarg as a float in [lo, hi] into *out; false (after the message) if not. */
static bool float_arg(const char *opt, double lo, double hi, float *out)
{
    double d;
    if (!cli_parse_float(CMD, opt, optarg, lo, hi, &d)) return false;
    *out = (float)d;
    return true;
}

/* One sampling option, OPT_TEMP to OPT_SEED; false on a bad value. */
static bool parse_sampling(int ch, sampler_params *sp)
{
    long long v;
    switch (ch) {
    case OPT_TEMP: return float_arg("--temp", 0, 100, &sp->temperature);
    case OPT_TOP_K:
        if (!cli_parse_int(CMD, "--top-k", optarg, 0, 1 << 24, &v)) return false;
        sp->top_k = (int)v;
        return true;
    case OPT_TOP_P: return float_arg("--top-p", 0, 1, &sp->top_p);
    case OPT_MIN_P: return float_arg("--min-p", 0, 1, &sp->min_p);
    case OPT_REPEAT_PENALTY: return float_arg("--repeat-penalty", 0.01, 100, &sp->repeat_penalty);
    default: /* OPT_SEED */
        if (!cli_parse_int(CMD, "--seed", optarg, 0, INT64_MAX, &v)) return false;
        sp->seed = (uint64_t)v;
        return true;
    }
}

static int parse(int argc, char **argv, run_opts *o)
{
    static const struct option longopts[] = {
        {"model", required_argument, NULL, 'm'},
        {"mmproj", required_argument, NULL, OPT_MMPROJ},
        {"image", required_argument, NULL, OPT_IMAGE},
        {"prompt", required_argument, NULL, 'p'},
        {"max-tokens", required_argument, NULL, 'n'},
        {"temp", required_argument, NULL, OPT_TEMP},
        {"top-k", required_argument, NULL, OPT_TOP_K},
        {"top-p", required_argument, NULL, OPT_TOP_P},
        {"min-p", required_argument, NULL, OPT_MIN_P},
        {"repeat-penalty", required_argument, NULL, OPT_REPEAT_PENALTY},
        {"seed", required_argument, NULL, OPT_SEED},
        {"format", required_argument, NULL, OPT_FORMAT},
        {"threads", required_argument, NULL, 't'},
        {"ctx", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    while ((ch = cli_getopt(CMD, argc, argv, "m:p:n:t:c:h", longopts)) != -1) {
        switch (ch) {
        case 'm': o->model = optarg; break;
        case OPT_MMPROJ: o->mmproj = optarg; break;
        case OPT_IMAGE: o->image = optarg; break;
        case OPT_FORMAT: o->format = optarg; break;
        case 'p': o->prompt = optarg; break;
        case 'n':
            if (!cli_parse_int(CMD, "--max-tokens", optarg, 1, 1 << 20, &o->max_tokens))
                return CLI_USAGE;
            break;
        case OPT_TEMP:
        case OPT_TOP_K:
        case OPT_TOP_P:
        case OPT_MIN_P:
        case OPT_REPEAT_PENALTY:
        case OPT_SEED:
            if (!parse_sampling(ch, &o->sp)) return CLI_USAGE;
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

/* --format's grammar: "json" is any JSON value, anything else a schema file. NULL after the
 * message. */
static grammar *load_format(const char *format)
{
    char err[512];
    if (strcmp(format, "json") == 0) return grammar_compile("{}", err, sizeof err);
    char *text = cli_read_file(format, NULL);
    if (!text) {
        cli_error(CMD, "%s: %s", format, strerror(errno));
        return NULL;
    }
    grammar *g = grammar_compile(text, err, sizeof err);
    free(text);
    if (!g) cli_error(CMD, "%s: %s", format, err);
    return g;
}

/* Streams the answer to stdout: sample, print, feed, until a stop token or a limit. With gs,
 * the answer follows its grammar, which is told the tokens left so that it closes the value in
 * time. */
static int generate(eng_ctx *c, const chat_ctx *cc, const chat_prompt *p, const run_opts *o,
                    grammar_state *gs, int *n_gen, char *err, size_t errlen)
{
    const int n_ctx = eng_ctx_params(c)->n_ctx;
    sampler *s = chat_sampler_create(cc, p, &o->sp);
    tok_stream *ts = tok_stream_create(cc->t);
    int rc = -1;
    *n_gen = 0;
    if (!s || !ts) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    sampler_set_grammar(s, gs);
    const int room = n_ctx - p->n; /* positions left for the answer's tokens */
    const int limit = o->max_tokens < room ? (int)o->max_tokens : room;
    bool stopped = false;
    while (*n_gen < limit) {
        if (gs) grammar_state_set_budget(gs, limit - *n_gen);
        int32_t next = sampler_sample(s, eng_logits(c, 0));
        if ((stopped = chat_is_stop(cc, next))) break;
        size_t len;
        const char *piece = tok_stream_push(ts, next, &len);
        fwrite(piece, 1, len, stdout);
        fflush(stdout);
        eng_item it = {
            .slot = 0, .n_tokens = 1, .tokens = &next, .pos = p->n + *n_gen, .want_logits = true};
        ++*n_gen;
        if (*n_gen < limit && eng_step(c, &it, 1, err, errlen) != ENG_OK) goto out;
    }
    size_t len;
    const char *tail = tok_stream_flush(ts, &len);
    fwrite(tail, 1, len, stdout);
    fputc('\n', stdout);
    fflush(stdout); /* before a note on stderr */
    if (gs && !grammar_state_complete(gs))
        fprintf(stderr, "tern run: the answer was cut at %d tokens: it is incomplete JSON\n",
                *n_gen);
    else if (gs && (grammar_state_cut_short(gs) || !stopped))
        fprintf(stderr, "tern run: the answer was closed at the %d-token limit (length)\n", limit);
    rc = 0;
out:
    sampler_destroy(s);
    tok_stream_destroy(ts);
    return rc;
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
    img_rgb image = {0};
    chat_ctx cc;
    chat_prompt prompt = {0};
    grammar *g = NULL;
    grammar_vocab *gv = NULL;
    grammar_state *gs = NULL;
    rc = CLI_FAIL;
    if (o.format && !(g = load_format(o.format))) return CLI_FAIL;

    eng_params p = eng_default_params();
    p.n_ctx = (int)o.n_ctx;
    p.n_batch = 256;
    p.n_threads = (int)o.threads;
    if (eng_model_load(o.model, o.mmproj, &m, err, sizeof err) != ENG_OK ||
        tok_load(eng_model_text_file(m), &t, err, sizeof err) != 0 ||
        eng_ctx_create(m, &p, &c, err, sizeof err) != ENG_OK ||
        chat_init(&cc, m, t, err, sizeof err) != 0 ||
        (o.image &&
         cli_load_image(o.image, chat_image_min_edge(&cc), &image, err, sizeof err) != 0)) {
        cli_error(CMD, "%s", err);
        goto out;
    }
    if (g) {
        int32_t stops[2] = {cc.pc.end_of_utterance, cc.pc.eos};
        gv = grammar_vocab_create(t, stops, 2);
        gs = gv ? grammar_state_create(g, gv) : NULL;
        if (!gs) {
            cli_error(CMD, "out of memory");
            goto out;
        }
    }
    const int n_ctx = eng_ctx_params(c)->n_ctx;
    chat_msg msg = {.role = PROMPT_USER, .text = o.prompt, .n_images = o.image ? 1 : 0};
    if (chat_prompt_build(&cc, c, &msg, 1, &image, msg.n_images, &prompt, err, sizeof err) != 0) {
        cli_error(CMD, "%s%s%s", o.image ? o.image : "", o.image ? ": " : "", err);
        goto out;
    }
    if (prompt.n >= n_ctx) {
        cli_error(CMD, "the prompt is %d tokens; the context holds %d", prompt.n, n_ctx);
        goto out;
    }

    double t1 = now_ms();
    if (chat_prefill(c, 0, &prompt, 0, err, sizeof err) != 0) {
        cli_error(CMD, "%s", err);
        goto out;
    }
    double t2 = now_ms();
    int n_gen;
    if (generate(c, &cc, &prompt, &o, gs, &n_gen, err, sizeof err) != 0) {
        cli_error(CMD, "%s", err);
        goto out;
    }
    double t3 = now_ms();

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    fprintf(stderr,
            "image encode %.1f ms | prompt %d tokens, %.1f tokens/s | generation %d tokens, "
            "%.1f tokens/s | peak RSS %.1f MiB\n",
            prompt.vision_ms, prompt.n, prompt.n / ((t2 - t1) / 1e3), n_gen,
            n_gen > 0 ? n_gen / ((t3 - t2) / 1e3) : 0.0, ru.ru_maxrss / 1024.0);
    rc = CLI_OK;
out:
    grammar_state_destroy(gs);
    grammar_vocab_destroy(gv);
    grammar_destroy(g);
    chat_prompt_free(&prompt);
    img_free(&image);
    tok_free(t);
    eng_ctx_destroy(c);
    eng_model_free(m);
    return rc;
}
