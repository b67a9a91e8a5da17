/* tern perplexity: how well a model predicts the answers of a test set.
 *
 * Each line of the JSONL file is {"image": path relative to the file,
 * "prompt": ..., "answer": ...} (image optional; "qtype" optional, for a
 * breakdown). The prompt is the SmolVLM chat turn built by prompt.c; the
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
#include "engine/engine.h"
#include "engine/image.h"
#include "engine/prompt.h"
#include "engine/tokenizer.h"

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
    "      --split          Idefics3 image splitting (tiles + global image)\n"
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
    prompt_ctx pc;
    const eng_model_info *info;
    img_proc_cfg icfg;
    int n_ctx, n_batch;
    float *embd; /* image embedding rows of the current example */
    size_t embd_cap;
    const float **rows; /* per prompt position: embedding row or NULL */
    int rows_cap;
} ppl;

/* Decodes, preprocesses and encodes one image; fills rows/cols/n_rows. */
static int encode_image(ppl *p, const char *path, int *grid_rows, int *grid_cols, int *n_rows,
                        char *err, size_t errlen)
{
    size_t len;
    char *data = cli_read_file(path, &len);
    if (!data) {
        cli_seterr(err, errlen, "%s: %s", path, strerror(errno ? errno : EIO));
        return -1;
    }
    img_rgb im;
    img_limits lim = {.max_bytes = 64u << 20, .max_pixels = 100000000};
    char ierr[256];
    int rc = img_decode(data, len, &lim, &im, ierr, sizeof ierr);
    free(data);
    if (rc != 0) {
        cli_seterr(err, errlen, "%s: %s", path, ierr);
        return -1;
    }
    img_tiles tiles;
    rc = img_preprocess(&im, &p->icfg, &tiles, ierr, sizeof ierr);
    img_free(&im);
    if (rc != 0) {
        cli_seterr(err, errlen, "%s: %s", path, ierr);
        return -1;
    }
    size_t need = (size_t)tiles.n * p->info->n_image_tokens * p->info->n_embd;
    if (need > p->embd_cap) {
        float *e = realloc(p->embd, need * sizeof *e);
        if (!e) {
            img_tiles_free(&tiles);
            cli_seterr(err, errlen, "out of memory");
            return -1;
        }
        p->embd = e;
        p->embd_cap = need;
    }
    rc = eng_vision_encode(p->c, tiles.pixels, tiles.n, p->embd, ierr, sizeof ierr);
    *grid_rows = tiles.rows;
    *grid_cols = tiles.cols;
    *n_rows = tiles.n * p->info->n_image_tokens;
    img_tiles_free(&tiles);
    if (rc != ENG_OK) {
        cli_seterr(err, errlen, "%s: %s", path, ierr);
        return -1;
    }
    return 0;
}

/* Scores one example; adds to *tl. */
static int score(ppl *p, const char *image, const char *prompt_text, const char *answer,
                 double *nll, int *n_tok, bool *exact, char *err, size_t errlen)
{
    int grid_rows = 0, grid_cols = 0, n_img_rows = 0;
    if (image && encode_image(p, image, &grid_rows, &grid_cols, &n_img_rows, err, errlen) != 0)
        return -1;
    prompt_part parts[2] = {{.image = true, .rows = grid_rows, .cols = grid_cols},
                            {.text = prompt_text}};
    prompt_msg msg = {PROMPT_USER, image ? parts : parts + 1, image ? 2 : 1};
    int32_t *ids = NULL, *target = NULL;
    int n = 0;
    if (prompt_build(&p->pc, &msg, 1, true, &ids, &n, err, errlen) != 0) return -1;
    size_t alen = strlen(answer);
    char *spaced = malloc(alen + 2);
    int nt = -1;
    if (spaced) {
        spaced[0] = ' ';
        memcpy(spaced + 1, answer, alen + 1);
        nt = tok_encode(p->t, spaced, alen + 1, NULL, 0);
        target = nt >= 0 ? malloc(((size_t)nt + 1) * sizeof *target) : NULL;
        if (target) tok_encode(p->t, spaced, alen + 1, target, nt);
    }
    free(spaced);
    int rc = -1;
    if (!target) {
        cli_seterr(err, errlen, "out of memory");
        goto out;
    }
    target[nt++] = p->pc.end_of_utterance;
    if (n + nt > p->n_ctx) {
        cli_seterr(err, errlen, "prompt and answer need %d positions, the context has %d", n + nt,
                   p->n_ctx);
        goto out;
    }
    if (n > p->rows_cap) {
        const float **r = realloc(p->rows, (size_t)n * sizeof *r);
        if (!r) {
            cli_seterr(err, errlen, "out of memory");
            goto out;
        }
        p->rows = r;
        p->rows_cap = n;
    }
    int k = 0;
    for (int i = 0; i < n; i++)
        p->rows[i] = ids[i] == p->pc.image && k < n_img_rows
                         ? p->embd + (size_t)k++ * p->info->n_embd
                         : NULL;
    if (k != n_img_rows) {
        cli_seterr(err, errlen, "prompt has %d image positions for %d embedding rows", k,
                   n_img_rows);
        goto out;
    }
    eng_slot_reset(p->c, 0);
    for (int pos = 0; pos < n; pos += p->n_batch) {
        int m = n - pos < p->n_batch ? n - pos : p->n_batch;
        eng_item it = {.slot = 0,
                       .n_tokens = m,
                       .tokens = ids + pos,
                       .embd = (const float *const *)p->rows + pos,
                       .pos = pos,
                       .want_logits = pos + m == n};
        if (eng_step(p->c, &it, 1, err, errlen) != ENG_OK) goto out;
    }
    *nll = 0;
    *exact = true;
    for (int i = 0; i < nt; i++) {
        bool top;
        *nll -= log_prob(eng_logits(p->c, 0), p->info->n_vocab, target[i], &top);
        *exact = *exact && top;
        if (i + 1 == nt) break;
        eng_item it = {
            .slot = 0, .n_tokens = 1, .tokens = &target[i], .pos = n + i, .want_logits = true};
        if (eng_step(p->c, &it, 1, err, errlen) != ENG_OK) goto out;
    }
    *n_tok = nt;
    rc = 0;
out:
    free(ids);
    free(target);
    return rc;
}

static const char *jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

int cmd_perplexity(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, NULL, 'm'},   {"mmproj", required_argument, NULL, 'M'},
        {"data", required_argument, NULL, 'd'},    {"split", no_argument, NULL, 'S'},
        {"limit", required_argument, NULL, 'n'},   {"verbose", no_argument, NULL, 'v'},
        {"threads", required_argument, NULL, 't'}, {"ctx", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
    };
    const char *model = NULL, *mmproj = NULL, *data = NULL;
    bool split = false, verbose = false;
    long long limit = 0, threads = 0, n_ctx = 4096;
    int o;
    while ((o = cli_getopt(CMD, argc, argv, "m:n:vt:c:h", opts)) != -1) {
        switch (o) {
        case 'm': model = optarg; break;
        case 'M': mmproj = optarg; break;
        case 'd': data = optarg; break;
        case 'S': split = true; break;
        case 'v': verbose = true; break;
        case 'n':
            if (!cli_parse_int(CMD, "--limit", optarg, 1, 1LL << 30, &limit)) return CLI_USAGE;
            break;
        case 't':
            if (!cli_parse_int(CMD, "--threads", optarg, 0, 1024, &threads)) return CLI_USAGE;
            break;
        case 'c':
            if (!cli_parse_int(CMD, "--ctx", optarg, 16, 1 << 20, &n_ctx)) return CLI_USAGE;
            break;
        case 'h': fputs(usage_text, stdout); return CLI_OK;
        default: return CLI_USAGE;
        }
    }
    if (optind < argc) return cli_usage_error(CMD, "unexpected argument '%s'", argv[optind]);
    if (!model || !data) return cli_usage_error(CMD, "needs -m TEXT.gguf and --data FILE.jsonl");

    size_t len;
    char *text = cli_read_file(data, &len);
    if (!text) return cli_error(CMD, "%s: %s", data, strerror(errno ? errno : EIO));
    /* images are relative to the JSONL's directory */
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", data);
    char *slash = strrchr(dir, '/');
    if (slash)
        slash[1] = 0;
    else
        dir[0] = 0;

    ppl p = {0};
    char err[1024];
    int status = CLI_FAIL;
    if (eng_model_load(model, mmproj, &p.m, err, sizeof err) != ENG_OK ||
        tok_load(eng_model_text_file(p.m), &p.t, err, sizeof err) != 0) {
        cli_error(CMD, "%s", err);
        goto done;
    }
    p.info = eng_model_get_info(p.m);
    eng_params ep = eng_default_params();
    ep.n_ctx = (int)n_ctx;
    ep.n_threads = (int)threads;
    if (eng_ctx_create(p.m, &ep, &p.c, err, sizeof err) != ENG_OK) {
        cli_error(CMD, "%s", err);
        goto done;
    }
    p.n_ctx = eng_ctx_params(p.c)->n_ctx;
    p.n_batch = eng_ctx_params(p.c)->n_batch;
    if (prompt_init(&p.pc, p.t, p.info->has_vision ? p.info->n_image_tokens : 0, err, sizeof err) !=
        0) {
        cli_error(CMD, "%s: %s", model, err);
        goto done;
    }
    if (p.info->has_vision) {
        if (img_proc_cfg_from_gguf(eng_model_vision_file(p.m), &p.icfg, err, sizeof err) != 0) {
            cli_error(CMD, "%s", err);
            goto done;
        }
        p.icfg.split = split;
    }

    tally all = {.name = "all"}, types[MAX_QTYPES];
    int n_types = 0;
    long line_no = 0;
    for (char *line = text, *next; line && *line && (!limit || all.examples < limit); line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        line_no++;
        if (strspn(line, " \t\r") == strlen(line)) continue;
        cJSON *j = cJSON_Parse(line);
        const char *image = jstr(j, "image"), *prompt_text = jstr(j, "prompt"),
                   *answer = jstr(j, "answer"), *qtype = jstr(j, "qtype");
        if (!j || !prompt_text || !answer) {
            cli_error(CMD, "%s:%ld: needs a JSON object with \"prompt\" and \"answer\" strings",
                      data, line_no);
            cJSON_Delete(j);
            goto done;
        }
        char img_path[8192];
        if (image) {
            if (!p.info->has_vision) {
                cli_error(CMD, "%s:%ld: has an image but no --mmproj was given", data, line_no);
                cJSON_Delete(j);
                goto done;
            }
            snprintf(img_path, sizeof img_path, "%s%s", image[0] == '/' ? "" : dir, image);
        }
        double nll;
        int n_tok;
        bool exact;
        if (score(&p, image ? img_path : NULL, prompt_text, answer, &nll, &n_tok, &exact, err,
                  sizeof err) != 0) {
            cli_error(CMD, "%s:%ld: %s", data, line_no, err);
            cJSON_Delete(j);
            goto done;
        }
        tally *ts[2] = {&all, qtype ? tally_for(types, &n_types, qtype) : NULL};
        for (int i = 0; i < 2; i++)
            if (ts[i]) {
                ts[i]->examples++;
                ts[i]->tokens += n_tok;
                ts[i]->nll += nll;
                ts[i]->exact += exact;
            }
        if (verbose)
            printf("%ld\tnll/token %.4f\ttokens %d\t%s\t%s\n", line_no, nll / n_tok, n_tok,
                   exact ? "exact" : "wrong", answer);
        cJSON_Delete(j);
    }
    if (all.examples == 0) {
        cli_error(CMD, "%s: no examples", data);
        goto done;
    }
    for (int i = -1; i < n_types; i++) {
        const tally *t = i < 0 ? &all : &types[i];
        printf("%-10s examples %5ld  tokens %6ld  nll/token %.4f  perplexity %.4f  exact %.4f\n",
               t->name, t->examples, t->tokens, t->nll / (double)t->tokens,
               exp(t->nll / (double)t->tokens), (double)t->exact / (double)t->examples);
    }
    status = CLI_OK;
done:
    free(text);
    free(p.embd);
    free(p.rows);
    tok_free(p.t);
    eng_ctx_destroy(p.c);
    eng_model_free(p.m);
    return status;
}
