/* tern perplexity: how well a model predicts the answers of a test set.
 *
 * Each line of the JSONL file is {"image": path relative to the file,
 * "prompt": ..., "answer": ...} (image optional; "qtype" optional, for a
 * breakdown). The prompt is the SmolVLM chat turn built by chat.c, as tern run
 * and ternd build it; the
 * scored tokens are " " + answer + <end_of_utterance>, the space belonging
 * to the answer as in SmolVLM and training/train.py. Scoring is teacher
 * forced: each answer token is fed after its log-probability is read, so
 * "exact" (every scored token is the argmax) equals greedy exact match. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_util.h"
#include "cli/commands.h"
#include "engine/chat.h"

#define CMD "perplexity"
#define MAX_QTYPES 32

static const char usage_text[] =
    "usage: tern perplexity -m TEXT.gguf [--mmproj VISION.gguf] --data FILE.jsonl [options]\n"
    "\n"
    "Scores the answers of a test set under teacher forcing: mean negative\n"
    "log-likelihood per answer token, perplexity = exp(mean), and exact match\n"
    "(every answer token, and the closing <end_of_utterance>, is the argmax).\n"
    "Each line of FILE is {\"image\": PATH relative to FILE, \"prompt\": TEXT,\n"
    "\"answer\": TEXT} (\"image\" optional, \"qtype\" optional: scores by type).\n"
    "\n"
    "  -m, --model FILE     text model GGUF\n"
    "      --mmproj FILE    vision projector GGUF (needed when lines have images)\n"
    "      --data FILE      the JSONL test set\n"
    "      --split          split every image into tiles + the global image (default:\n"
    "                       as the model's processor, when it resizes past one tile)\n"
    "  -n, --limit N        score only the first N lines\n"
    "  -v, --verbose        one line per example\n"
    "  -t, --threads N      worker threads (default: one per CPU)\n"
    "  -c, --ctx N          context length (default 4096, at most the model's)\n"
    "  -h, --help           show this help\n";

typedef struct {
    char name[32];
    long tokens, examples, exact;
    double nll;
} tally;

static tally *tally_for(tally *t, int *n, const char *name)
{
    for (int i = 0; i < *n; i++)
        if (!strcmp(t[i].name, name)) return &t[i];
    if (*n == MAX_QTYPES) return NULL;
    memset(&t[*n], 0, sizeof t[*n]);
    snprintf(t[*n].name, sizeof t[*n].name, "%s", name);
    return &t[(*n)++];
}

/* log p(id) under logits, and whether id is the argmax */
static double log_prob(const float *logits, int n, int id, bool *top)
{
    float mx = logits[0];
    int arg = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > mx) mx = logits[i], arg = i;
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += exp((double)logits[i] - mx);
    *top = arg == id;
    return (double)logits[id] - mx - log(sum);
}

typedef struct {
    eng_model *m;
    eng_ctx *c;
    tok *t;
    chat_ctx cc;
    const eng_model_info *info;
    int n_ctx;
} ppl;

/* The scored tokens: " " + answer + <end_of_utterance>. *target is malloc'ed. */
static int answer_tokens(const ppl *p, const char *answer, int32_t **target, int *nt, char *err,
                         size_t errlen)
{
    size_t alen = strlen(answer);
    char *spaced = malloc(alen + 2);
    *target = NULL;
    *nt = -1;
    if (spaced) {
        spaced[0] = ' ';
        memcpy(spaced + 1, answer, alen + 1);
        *nt = tok_encode(p->t, spaced, alen + 1, NULL, 0);
        *target = *nt >= 0 ? malloc(((size_t)*nt + 1) * sizeof **target) : NULL;
        if (*target) tok_encode(p->t, spaced, alen + 1, *target, *nt);
    }
    free(spaced);
    if (!*target) {
        cli_seterr(err, errlen, "out of memory");
        return -1;
    }
    (*target)[(*nt)++] = p->cc.pc.end_of_utterance;
    return 0;
}

/* Teacher forcing over the prefilled prompt: each target token's log-probability is read,
 * then the token is fed. */
static int force_answer(ppl *p, int n_prompt, const int32_t *target, int nt, double *nll,
                        bool *exact, char *err, size_t errlen)
{
    *nll = 0;
    *exact = true;
    for (int i = 0; i < nt; i++) {
        bool top;
        *nll -= log_prob(eng_logits(p->c, 0), p->info->n_vocab, target[i], &top);
        *exact = *exact && top;
        if (i + 1 == nt) break;
        eng_item it = {.slot = 0,
                       .n_tokens = 1,
                       .tokens = &target[i],
                       .pos = n_prompt + i,
                       .want_logits = true};
        if (eng_step(p->c, &it, 1, err, errlen) != ENG_OK) return -1;
    }
    return 0;
}

/* Scores one example (image may be NULL). */
static int score(ppl *p, const char *image, const char *prompt_text, const char *answer,
                 double *nll, int *n_tok, bool *exact, char *err, size_t errlen)
{
    img_rgb im = {0};
    chat_prompt prompt = {0};
    int32_t *target = NULL;
    int nt = 0, rc = -1;
    if (image && cli_load_image(image, chat_image_min_edge(&p->cc), &im, err, errlen) != 0)
        return -1;
    chat_msg msg = {.role = PROMPT_USER, .text = prompt_text, .n_images = image ? 1 : 0};
    char perr[512];
    if (chat_prompt_build(&p->cc, p->c, &msg, 1, &im, msg.n_images, &prompt, perr, sizeof perr) !=
        0) {
        cli_seterr(err, errlen, "%s%s%s", image ? image : "", image ? ": " : "", perr);
        goto out;
    }
    if (answer_tokens(p, answer, &target, &nt, err, errlen) != 0) goto out;
    if (prompt.n + nt > p->n_ctx) {
        cli_seterr(err, errlen, "prompt and answer need %d positions, the context has %d",
                   prompt.n + nt, p->n_ctx);
        goto out;
    }
    eng_slot_reset(p->c, 0);
    if (chat_prefill(p->c, 0, &prompt, 0, err, errlen) != 0) goto out;
    if (force_answer(p, prompt.n, target, nt, nll, exact, err, errlen) != 0) goto out;
    *n_tok = nt;
    rc = 0;
out:
    img_free(&im);
    chat_prompt_free(&prompt);
    free(target);
    return rc;
}

static const char *jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

typedef struct {
    const char *model, *mmproj, *data;
    bool split, verbose;
    long long limit, threads, n_ctx;
} ppl_opts;

/* Returns CLI_OK, CLI_USAGE, or -1 after --help. */
static int parse(int argc, char **argv, ppl_opts *o)
{
    static const struct option opts[] = {
        {"model", required_argument, NULL, 'm'},   {"mmproj", required_argument, NULL, 'M'},
        {"data", required_argument, NULL, 'd'},    {"split", no_argument, NULL, 'S'},
        {"limit", required_argument, NULL, 'n'},   {"verbose", no_argument, NULL, 'v'},
        {"threads", required_argument, NULL, 't'}, {"ctx", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
    };
    int ch;
    while ((ch = cli_getopt(CMD, argc, argv, "m:n:vt:c:h", opts)) != -1) {
        switch (ch) {
        case 'm': o->model = optarg; break;
        case 'M': o->mmproj = optarg; break;
        case 'd': o->data = optarg; break;
        case 'S': o->split = true; break;
        case 'v': o->verbose = true; break;
        case 'n':
            if (!cli_parse_int(CMD, "--limit", optarg, 1, 1LL << 30, &o->limit)) return CLI_USAGE;
            break;
        case 't':
            if (!cli_parse_int(CMD, "--threads", optarg, 0, 1024, &o->threads)) return CLI_USAGE;
            break;
        case 'c':
            if (!cli_parse_int(CMD, "--ctx", optarg, 16, 1 << 20, &o->n_ctx)) return CLI_USAGE;
            break;
        case 'h': fputs(usage_text, stdout); return -1;
        default: return CLI_USAGE;
        }
    }
    if (optind < argc) return cli_usage_error(CMD, "unexpected argument '%s'", argv[optind]);
    if (!o->model || !o->data)
        return cli_usage_error(CMD, "needs -m TEXT.gguf and --data FILE.jsonl");
    return CLI_OK;
}

static int ppl_open(ppl *p, const ppl_opts *o, char *err, size_t errlen)
{
    if (eng_model_load(o->model, o->mmproj, &p->m, err, errlen) != ENG_OK ||
        tok_load(eng_model_text_file(p->m), &p->t, err, errlen) != 0)
        return -1;
    p->info = eng_model_get_info(p->m);
    eng_params ep = eng_default_params();
    ep.n_ctx = (int)o->n_ctx;
    ep.n_threads = (int)o->threads;
    if (eng_ctx_create(p->m, &ep, &p->c, err, errlen) != ENG_OK) return -1;
    p->n_ctx = eng_ctx_params(p->c)->n_ctx;
    char cerr[512];
    if (chat_init(&p->cc, p->m, p->t, cerr, sizeof cerr) != 0) {
        cli_seterr(err, errlen, "%s: %s", o->model, cerr);
        return -1;
    }
    if (o->split) p->cc.icfg.split = true;
    return 0;
}

static void ppl_close(ppl *p)
{
    tok_free(p->t);
    eng_ctx_destroy(p->c);
    eng_model_free(p->m);
}

static void tally_add(tally *t, int n_tok, double nll, bool exact)
{
    t->examples++;
    t->tokens += n_tok;
    t->nll += nll;
    t->exact += exact;
}

/* Scores one JSONL line (dir: the file's directory, images are relative to it) into the
 * tallies; -v prints it as line line_no. Returns 0, or -1 with err. */
static int score_line(ppl *p, const ppl_opts *o, const char *dir, long line_no, char *line,
                      tally *all, tally *types, int *n_types, char *err, size_t errlen)
{
    cJSON *j = cJSON_Parse(line);
    const char *image = jstr(j, "image"), *prompt_text = jstr(j, "prompt"),
               *answer = jstr(j, "answer"), *qtype = jstr(j, "qtype");
    char img_path[8192];
    double nll;
    int n_tok, rc = -1;
    bool exact;
    if (!j || !prompt_text || !answer) {
        cli_seterr(err, errlen, "needs a JSON object with \"prompt\" and \"answer\" strings");
        goto out;
    }
    if (image && !p->info->has_vision) {
        cli_seterr(err, errlen, "has an image but no --mmproj was given");
        goto out;
    }
    if (image) snprintf(img_path, sizeof img_path, "%s%s", image[0] == '/' ? "" : dir, image);
    if (score(p, image ? img_path : NULL, prompt_text, answer, &nll, &n_tok, &exact, err, errlen) !=
        0)
        goto out;
    tally_add(all, n_tok, nll, exact);
    tally *by_type = qtype ? tally_for(types, n_types, qtype) : NULL;
    if (by_type) tally_add(by_type, n_tok, nll, exact);
    if (o->verbose)
        printf("%ld\tnll/token %.4f\ttokens %d\t%s\t%s\n", line_no, nll / n_tok, n_tok,
               exact ? "exact" : "wrong", answer);
    rc = 0;
out:
    cJSON_Delete(j);
    return rc;
}

static void print_tallies(const tally *all, const tally *types, int n_types)
{
    for (int i = -1; i < n_types; i++) {
        const tally *t = i < 0 ? all : &types[i];
        printf("%-10s examples %5ld  tokens %6ld  nll/token %.4f  perplexity %.4f  exact %.4f\n",
               t->name, t->examples, t->tokens, t->nll / (double)t->tokens,
               exp(t->nll / (double)t->tokens), (double)t->exact / (double)t->examples);
    }
}

int cmd_perplexity(int argc, char **argv)
{
    ppl_opts o = {.n_ctx = 4096};
    int rc = parse(argc, argv, &o);
    if (rc != CLI_OK) return rc < 0 ? CLI_OK : rc;

    size_t len;
    char *text = cli_read_file(o.data, &len);
    if (!text) return cli_error(CMD, "%s: %s", o.data, strerror(errno ? errno : EIO));
    /* images are relative to the JSONL's directory */
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", o.data);
    char *slash = strrchr(dir, '/');
    if (slash)
        slash[1] = 0;
    else
        dir[0] = 0;

    ppl p = {0};
    char err[1024];
    int status = CLI_FAIL;
    if (ppl_open(&p, &o, err, sizeof err) != 0) {
        cli_error(CMD, "%s", err);
        goto done;
    }
    tally all = {.name = "all"}, types[MAX_QTYPES];
    int n_types = 0;
    long line_no = 0;
    for (char *line = text, *next; line && *line && (!o.limit || all.examples < o.limit);
         line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        line_no++;
        if (strspn(line, " \t\r") == strlen(line)) continue;
        if (score_line(&p, &o, dir, line_no, line, &all, types, &n_types, err, sizeof err) != 0) {
            cli_error(CMD, "%s:%ld: %s", o.data, line_no, err);
            goto done;
        }
    }
    if (all.examples == 0) {
        cli_error(CMD, "%s: no examples", o.data);
        goto done;
    }
    print_tallies(&all, types, n_types);
    status = CLI_OK;
done:
    free(text);
    ppl_close(&p);
    return status;
}
