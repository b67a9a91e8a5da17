/* tern quantize: re-type the weight matrices of a GGUF file.
 *
 *   tern quantize IN OUT --type T [--method kmeans|absmean|twn] [--keep GLOB]...
 *                 [--output-type T|keep] [--preset default|paper] [--strict]
 *                 [--per-tensor] [--report]
 *
 * Every 2-D weight matrix not kept is decoded to floats and re-encoded as T
 * (ternary types through the chosen ternarizer, one scale per row). Token
 * embeddings, norms, biases, vision position/patch embeddings and
 * output.weight keep their type, and so do tensors --keep names; everything
 * else in the file (metadata, kept tensors) is copied as it is.
 * --output-type re-types output.weight and token_embd.weight (the output
 * layer when tied): it is the largest matrix read per token, a third to two
 * thirds of a ternary file's bytes when left F16, so ternary and binary
 * targets make it Q8_0 unless told otherwise.
 * --preset paper is the moondream2 paper's recipe: only the decoder's linear
 * layers change, and of those not the first and last blocks'; the output
 * layer, the vision tower and the projector keep their type. */
#include <fnmatch.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli_util.h"
#include "cli/commands.h"
#include "engine/gguf.h"
#include "engine/quant.h"
#include "engine/types.h"

#define CMD "quantize"

#define MAX_KEEP 64

/* Kept by default: the tensors docs/model-format.md lists as keeping their
 * type, which lose the most when ternary. 1-D tensors (norms, biases) are
 * always kept. */
static const char *const default_keep[] = {
    "token_embd.*", "output.weight", "*norm*", "*.bias", "v.position_embd.*", "v.patch_embd.*",
};

typedef struct {
    const char *in, *out;
    const ttype_info *type;
    const ttype_info *out_type; /* output/token_embd; NULL keeps them */
    bool out_type_set;          /* --output-type given (else the default) */
    quant_method method;
    const char *keep[MAX_KEEP];
    int n_keep;
    bool paper;              /* --preset paper: see the top of the file */
    char edge_blocks[2][32]; /* its "blk.0.*" and "blk.<last>.*" globs */
    bool strict, per_tensor, report;
} qopts;

typedef struct {
    const char *name;
    kt_type from, to;
    int64_t n, rows;
    bool changed;
    double err;    /* of what was stored */
    double alt[3]; /* --report: per-row error of each method, -1 if n/a */
} qrow;

static const char usage_text[] =
    "usage: tern quantize IN OUT --type TYPE [options]\n"
    "Re-types the 2-D weight matrices of the GGUF file IN and writes OUT.\n"
    "  -t, --type T      tq2_0 tq1_0 q2_0 q1_0 q8_0 f16 bf16 f32\n"
    "  -m, --method M    ternarizer: kmeans (default), absmean, twn\n"
    "  -k, --keep GLOB   also keep tensors whose name matches (repeatable)\n"
    "      --output-type T  re-type output.weight and token_embd.weight: a type, or\n"
    "                    keep (default: q8_0 for tq2_0 tq1_0 q2_0 q1_0, else keep)\n"
    "      --preset P    default, or paper: also keep the first and last decoder\n"
    "                    blocks, the vision tower (v.*) and projector (mm.*), and\n"
    "                    output.weight (unless --output-type), as the moondream2\n"
    "                    paper ternarizes\n"
    "      --strict      fail instead of falling back when rows do not fit TYPE\n"
    "      --per-tensor  one scale per tensor instead of one per row\n"
    "      --report      also print k-means / absmean / TWN errors per matrix\n"
    "  -h, --help        show this help\n"
    "Keeps token_embd, norms, biases, v.position_embd, v.patch_embd and\n"
    "output.weight as they are (token_embd and output.weight: unless\n"
    "--output-type). Rows that do not fit TYPE's block fall back\n"
    "(tq2_0/tq1_0 -> q2_0 -> q8_0, q1_0 -> q8_0) with a note.\n";

static int parse(int argc, char **argv, qopts *o)
{
    static const struct option longopts[] = {
        {"type", required_argument, NULL, 't'},   {"method", required_argument, NULL, 'm'},
        {"keep", required_argument, NULL, 'k'},   {"strict", no_argument, NULL, 's'},
        {"per-tensor", no_argument, NULL, 'p'},   {"report", no_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},         {"output-type", required_argument, NULL, 'o'},
        {"preset", required_argument, NULL, 'P'}, {NULL, 0, NULL, 0},
    };
    memset(o, 0, sizeof *o);
    o->method = QUANT_KMEANS;
    int c;
    while ((c = cli_getopt(CMD, argc, argv, "t:m:k:h", longopts)) != -1) {
        switch (c) {
        case 't':
            o->type = ttype_by_name(optarg);
            if (!o->type) return cli_usage_error(CMD, "unknown type '%s'", optarg);
            break;
        case 'm':
            if (!quant_method_by_name(optarg, &o->method))
                return cli_usage_error(CMD, "unknown method '%s' (kmeans, absmean, twn)", optarg);
            break;
        case 'k':
            if (o->n_keep == MAX_KEEP)
                return cli_usage_error(CMD, "more than %d --keep patterns", MAX_KEEP);
            o->keep[o->n_keep++] = optarg;
            break;
        case 'o':
            o->out_type_set = true;
            if (strcmp(optarg, "keep") == 0) {
                o->out_type = NULL;
                break;
            }
            o->out_type = ttype_by_name(optarg);
            if (!o->out_type) return cli_usage_error(CMD, "unknown type '%s'", optarg);
            break;
        case 'P':
            if (strcmp(optarg, "paper") != 0 && strcmp(optarg, "default") != 0)
                return cli_usage_error(CMD, "unknown preset '%s' (default, paper)", optarg);
            o->paper = strcmp(optarg, "paper") == 0;
            break;
        case 's': o->strict = true; break;
        case 'p': o->per_tensor = true; break;
        case 'r': o->report = true; break;
        case 'h': fputs(usage_text, stdout); return -1;
        default: return CLI_USAGE;
        }
    }
    /* getopt_long moved the positional arguments to the end */
    if (optind < argc) o->in = argv[optind++];
    if (optind < argc) o->out = argv[optind++];
    if (optind < argc) return cli_usage_error(CMD, "unexpected argument '%s'", argv[optind]);
    if (!o->in || !o->out) return cli_usage_error(CMD, "need IN and OUT files");
    if (!o->type) return cli_usage_error(CMD, "need --type");
    /* Ternary and binary files: the output layer in Q8_0 reads half the
     * bytes of F16 per token, at no measurable loss on the demo model
     * (docs/model-format.md). */
    if (!o->out_type_set && !o->paper && (o->type->ternary || o->type->binary))
        o->out_type = ttype_get(KT_Q8_0);
    return 0;
}

/* --preset paper's globs: the first and last decoder blocks (the block count
 * from "<general.architecture>.block_count"), the vision tower, the projector. */
static int add_paper_keeps(qopts *o, const gguf_file *f)
{
    const char *arch = gguf_get_str(f, "general.architecture");
    char key[96];
    int64_t n = 0;
    snprintf(key, sizeof key, "%s.block_count", arch ? arch : "");
    if (o->n_keep + 4 > MAX_KEEP) return cli_usage_error(CMD, "too many --keep patterns");
    if (arch && gguf_get_i64(f, key, &n) && n > 0) {
        snprintf(o->edge_blocks[0], sizeof o->edge_blocks[0], "blk.0.*");
        snprintf(o->edge_blocks[1], sizeof o->edge_blocks[1], "blk.%lld.*", (long long)n - 1);
        o->keep[o->n_keep++] = o->edge_blocks[0];
        o->keep[o->n_keep++] = o->edge_blocks[1];
    }
    o->keep[o->n_keep++] = "v.*";
    o->keep[o->n_keep++] = "mm.*";
    return 0;
}

static bool kept(const qopts *o, const gguf_tensor *t)
{
    if (t->n_dims != 2) return true; /* norms, biases, 4-D patch kernels */
    for (size_t i = 0; i < sizeof default_keep / sizeof default_keep[0]; i++)
        if (fnmatch(default_keep[i], t->name, 0) == 0) return true;
    for (int i = 0; i < o->n_keep; i++)
        if (fnmatch(o->keep[i], t->name, 0) == 0) return true;
    return false;
}

static void progress(int done, int total, const char *name)
{
    int width = 30, fill = total ? done * width / total : width;
    fprintf(stderr, "\r[");
    for (int i = 0; i < width; i++)
        fputc(i < fill ? '#' : '.', stderr);
    fprintf(stderr, "] %d/%d %-40.40s", done, total, name);
    fflush(stderr);
}

static const char *tname(kt_type t)
{
    const ttype_info *ti = ttype_get(t);
    return ti ? ti->name : "?";
}

/* Decode one tensor (rows x n) to floats; NULL with a message on failure. */
static float *decode(const qopts *o, const gguf_tensor *t, int64_t rows, char *err, size_t errlen)
{
    const ttype_info *src = ttype_get(t->type);
    if (!src) {
        snprintf(err, errlen, "%s: tensor %s has type %d, which tern cannot convert", o->in,
                 t->name, (int)t->type);
        return NULL;
    }
    int64_t n = t->ne[0];
    float *w = malloc((size_t)(rows * n) * sizeof(float));
    if (!w) {
        snprintf(err, errlen, "%s: out of memory decoding %s", o->in, t->name);
        return NULL;
    }
    size_t rb = ttype_row_bytes(src, n);
    for (int64_t r = 0; r < rows; r++)
        src->to_float(t->type, (const unsigned char *)t->data + (size_t)r * rb, w + r * n, n);
    return w;
}

/* "tern quantize: MESSAGE" on a line of its own: on a tty the progress bar
 * holds the current line. */
static void say(bool tty, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(bool tty, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%stern quantize: ", tty ? "\n" : "");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* What t becomes: its own type when kept, else o->type, or a fallback (with
 * a note) when its rows do not fit o->type's block. --strict makes the
 * fallback an error. */
static int target_type(const qopts *o, const gguf_tensor *t, bool tty, kt_type *to)
{
    *to = t->type;
    bool out_mat = !strcmp(t->name, "output.weight") || !strcmp(t->name, "token_embd.weight");
    if (out_mat && o->out_type && t->n_dims == 2) {
        if (t->ne[0] % o->out_type->block == 0) {
            *to = o->out_type->id;
            return 0;
        }
        say(tty, "note: %s has rows of %lld, not a multiple of %s's block of %d: kept as %s",
            t->name, (long long)t->ne[0], o->out_type->name, o->out_type->block, tname(t->type));
        return 0;
    }
    if (kept(o, t)) return 0;
    if (!quant_pick_type(o->type->id, t->ne[0], to)) *to = t->type;
    if (*to == o->type->id) return 0;
    if (o->strict) {
        say(tty, "%s: %s has rows of %lld, not a multiple of %s's block of %d (--strict)", o->in,
            t->name, (long long)t->ne[0], o->type->name, o->type->block);
        return -1;
    }
    say(tty, "note: %s has rows of %lld, not a multiple of %s's block of %d: %s %s", t->name,
        (long long)t->ne[0], o->type->name, o->type->block, *to == t->type ? "kept as" : "using",
        tname(*to));
    return 0;
}

/* --report: the error each ternarizer would give the same floats (left at
 * -1 if the scratch memory is not there). */
static void compare_methods(const qopts *o, const float *wf, const gguf_tensor *t, qrow *q)
{
    int8_t *tv = malloc((size_t)(t->ne[0] * t->ne[1]));
    float *sc = malloc((size_t)t->ne[1] * sizeof(float));
    if (tv && sc)
        for (int m = 0; m < 3; m++)
            q->alt[m] = quant_matrix_ternary(wf, t->ne[1], t->ne[0], (quant_method)m, o->per_tensor,
                                             false, tv, sc);
    free(tv);
    free(sc);
}

/* Decodes t and encodes it as `to` into *data, a new buffer the caller
 * frees (also on failure). */
static int retype(const qopts *o, const gguf_tensor *t, kt_type to, bool tty, qrow *q, void **data)
{
    char err[512];
    float *wf = decode(o, t, t->ne[1], err, sizeof err);
    if (!wf) {
        say(tty, "%s", err);
        return -1;
    }
    const ttype_info *ti = ttype_get(to);
    size_t bytes = ttype_row_bytes(ti, t->ne[0]) * (size_t)t->ne[1];
    *data = malloc(bytes ? bytes : 1);
    if (!*data || quant_to_type(wf, t->ne[1], t->ne[0], to, o->method, o->per_tensor, *data,
                                &q->err, err, sizeof err) != 0) {
        say(tty, "%s: %s: %s", o->in, t->name, *data ? err : "out of memory");
        free(wf);
        return -1;
    }
    if (o->report && ti->ternary) compare_methods(o, wf, t, q);
    free(wf);
    q->to = to;
    q->changed = true;
    return 0;
}

/* Adds every tensor of f to w, re-typed or as it is; bufs[i] keeps tensor
 * i's new data alive until the write, rows[i] says what happened to it. */
static int add_tensors(const qopts *o, const gguf_file *f, gguf_writer *w, void **bufs, qrow *rows)
{
    bool tty = isatty(STDERR_FILENO);
    int nt = gguf_n_tensors(f);
    for (int i = 0; i < nt; i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        qrow *q = &rows[i];
        *q = (qrow){.name = t->name,
                    .from = t->type,
                    .to = t->type,
                    .n = t->ne[0],
                    .rows = t->ne[1],
                    .alt = {-1, -1, -1}};
        if (tty) progress(i, nt, t->name);
        kt_type to;
        if (target_type(o, t, tty, &to) != 0) return -1;
        if (to != t->type && retype(o, t, to, tty, q, &bufs[i]) != 0) return -1;
        const void *data = q->changed ? bufs[i] : t->data;
        char err[512];
        if (gguf_add_tensor(w, t->name, q->to, t->n_dims, t->ne, data, err, sizeof err) !=
            GGUF_OK) {
            say(tty, "%s: %s", o->out, err);
            return -1;
        }
    }
    if (tty) {
        progress(nt, nt, "writing");
        fputc('\n', stderr);
    }
    return 0;
}

/* ---- the summary ---- */

static void print_header(const qopts *o)
{
    printf("%-36s %6s    %-6s %14s %10s", "tensor", "from", "to", "shape", "rel.err");
    if (o->report) printf(" %9s %9s %9s", "kmeans", "absmean", "twn");
    printf("\n");
}

static void print_row(const qopts *o, const qrow *q)
{
    char shape[32];
    snprintf(shape, sizeof shape, "%lldx%lld", (long long)q->n, (long long)q->rows);
    printf("%-36s %6s -> %-6s %14s %10.4f", q->name, tname(q->from), tname(q->to), shape, q->err);
    if (o->report)
        for (int m = 0; m < 3; m++) {
            if (q->alt[m] < 0)
                printf(" %9s", "-");
            else
                printf(" %9.4f", q->alt[m]);
        }
    printf("\n");
}

/* ": 14 tq2_0, 2 q8_0": how many tensors became each type. */
static void print_counts_by_type(const qrow *rows, int nt)
{
    for (int k = 0, first = 1; k < ttype_count(); k++) {
        int cnt = 0;
        for (int i = 0; i < nt; i++)
            cnt += rows[i].changed && rows[i].to == ttype_at(k)->id;
        if (cnt) {
            printf("%s%d %s", first ? ": " : ", ", cnt, ttype_at(k)->name);
            first = 0;
        }
    }
}

static void print_summary(const qopts *o, const gguf_file *f, const qrow *rows)
{
    print_header(o);
    int nt = gguf_n_tensors(f), changed = 0;
    double in_bytes = 0, out_bytes = 0;
    for (int i = 0; i < nt; i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        const qrow *q = &rows[i];
        in_bytes += (double)t->nbytes;
        const ttype_info *ti = ttype_get(q->to);
        out_bytes += q->changed && ti ? (double)ttype_row_bytes(ti, q->n) * (double)q->rows
                                      : (double)t->nbytes;
        if (!q->changed) continue;
        changed++;
        print_row(o, q);
    }
    printf("%d of %d tensors re-typed", changed, nt);
    print_counts_by_type(rows, nt);
    if (changed && o->type->ternary)
        printf(" (%s, one scale per %s)", quant_method_name(o->method),
               o->per_tensor ? "tensor" : "row");
    printf("; %.1f MiB -> %.1f MiB; wrote %s\n", in_bytes / 1048576.0, out_bytes / 1048576.0,
           o->out);
}

static int run(qopts *o)
{
    char err[512];
    gguf_file *f = NULL;
    if (gguf_open(o->in, &f, err, sizeof err) != GGUF_OK) return cli_error(CMD, "%s", err);
    if (o->paper && add_paper_keeps(o, f) != 0) {
        gguf_close(f);
        return CLI_USAGE;
    }
    int nt = gguf_n_tensors(f);
    gguf_writer *w = gguf_writer_create();
    void **bufs = calloc((size_t)nt + 1, sizeof *bufs);
    qrow *rows = calloc((size_t)nt + 1, sizeof *rows);
    int rc = CLI_FAIL;
    if (!w || !bufs || !rows) {
        cli_error(CMD, "out of memory");
        goto done;
    }
    for (int i = 0; i < gguf_n_kv(f); i++)
        gguf_set_from(w, f, i);
    gguf_set_u32(w, "general.file_type", (uint32_t)quant_llama_ftype(o->type->id));
    gguf_set_u32(w, "general.quantization_version", 2);
    if (add_tensors(o, f, w, bufs, rows) != 0) goto done;
    if (gguf_write(w, o->out, err, sizeof err) != GGUF_OK) {
        cli_error(CMD, "%s", err);
        goto done;
    }
    print_summary(o, f, rows);
    rc = CLI_OK;
done:
    for (int i = 0; bufs && i < nt; i++)
        free(bufs[i]);
    free(bufs);
    free(rows);
    gguf_writer_destroy(w);
    gguf_close(f);
    return rc;
}

int cmd_quantize(int argc, char **argv)
{
    qopts o;
    int rc = parse(argc, argv, &o);
    if (rc == -1) return 0;
    if (rc) return rc;
    return run(&o);
}
