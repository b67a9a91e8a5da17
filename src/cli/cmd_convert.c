/* tern convert: a Hugging Face Idefics3/SmolVLM or moondream2 checkpoint to
 * a GGUF pair.
 *
 * The text model follows llama.cpp's LlamaModel conversion (llama names and
 * keys, q/k rows permuted so RoPE rotates adjacent pairs, tokenizer.ggml.*
 * from tokenizer.json); the vision tower and connector follow its
 * SmolVLMModel mmproj conversion (clip.* keys, projector type idefics3,
 * v.blk.N.* and mm.model.fc names, embeddings kept F32).
 *
 * moondream2 (revision 2024-05-08: Phi-1.5 in the mixformer layout, a
 * SigLIP tower with a linear patch embedding and fused qkv, an MLP
 * projector) becomes llama.cpp's "phi2" text model (fused attn_qkv) and a
 * clip mmproj with projector type "mlp"; the vision sizes are read from the
 * tensors' shapes, as moondream's code fixes them rather than its config. */
#include "cli/convert.h"

#include <assert.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_util.h"
#include "cli/safetensors.h"
#include "engine/gguf.h"
#include "engine/quant.h"
#include "engine/tokenizer.h"
#include "engine/types.h"

typedef struct {
    const char *dir;
    st_set *st;
    bool *used; /* per safetensors tensor: consumed by a mapping */
    kt_type outtype;
    char *err;
    size_t errlen;
} conv;

/* Parses dir/name. Returns NULL and sets err if it is missing (when
 * required) or not valid JSON. */
static cJSON *load_json(const conv *c, const char *name, bool required, bool *bad)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", c->dir, name);
    char *text = cli_read_file(path, NULL);
    *bad = false;
    if (!text) {
        if (required) {
            cli_seterr(c->err, c->errlen, "%s: %s", path, strerror(errno ? errno : ENOENT));
            *bad = true;
        }
        return NULL;
    }
    cJSON *j = cJSON_Parse(text);
    free(text);
    if (!j) {
        cli_seterr(c->err, c->errlen, "%s: not valid JSON", path);
        *bad = true;
    }
    return j;
}

/* Number field from the first object that has it. */
static bool jnum(const cJSON *a, const cJSON *b, const char *key, double *out)
{
    const cJSON *objs[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        const cJSON *v = objs[i] ? cJSON_GetObjectItemCaseSensitive(objs[i], key) : NULL;
        if (cJSON_IsNumber(v)) {
            *out = v->valuedouble;
            return true;
        }
    }
    return false;
}

static bool jint(const cJSON *a, const cJSON *b, const char *key, long long *out)
{
    double v;
    if (!jnum(a, b, key, &v)) return false;
    *out = (long long)v;
    return true;
}

static int need_int(conv *c, const cJSON *a, const cJSON *b, const char *what, const char *key,
                    long long *out)
{
    if (jint(a, b, key, out) && *out > 0) return 0;
    cli_seterr(c->err, c->errlen, "%s/config.json: %s needs a positive \"%s\"", c->dir, what, key);
    return -1;
}

/* llama.cpp's LlamaModel.permute: within each head, rows [first half; second
 * half] become interleaved pairs, so HF's rotate-half RoPE turns into the
 * adjacent-pair rotation that GGML uses. */
static void permute_rows(const float *src, float *dst, int64_t rows, int64_t cols, int n_head)
{
    int64_t hd = rows / n_head, half = hd / 2;
    for (int h = 0; h < n_head; h++)
        for (int64_t i = 0; i < half; i++)
            for (int j = 0; j < 2; j++) {
                int64_t to = h * hd + i * 2 + j, from = h * hd + j * half + i;
                memcpy(dst + to * cols, src + from * cols, (size_t)cols * sizeof *dst);
            }
}

typedef enum { KEEP_F32, OUTTYPE } type_rule;

static int check_shape(conv *c, const st_tensor *t, const char *hf, int64_t expect_rows,
                       int64_t expect_cols)
{
    if ((expect_rows > 0 && (t->n_dims < 1 || t->shape[0] != expect_rows)) ||
        (expect_cols > 0 && (t->n_dims < 2 || t->shape[1] != expect_cols))) {
        cli_seterr(c->err, c->errlen,
                   "%s: tensor '%s' has shape [%lld, %lld], config.json implies [%lld, %lld]",
                   t->file, hf, (long long)t->shape[0],
                   (long long)(t->n_dims > 1 ? t->shape[1] : 1), (long long)expect_rows,
                   (long long)expect_cols);
        return -1;
    }
    return 0;
}

/* f (t's values) with the q/k rows permuted for n_head heads; frees f.
 * NULL with err set on failure. */
static float *permute_qk(conv *c, const st_tensor *t, const char *hf, float *f, int n_head)
{
    int64_t rows = t->shape[0], cols = t->numel / (rows ? rows : 1);
    if (rows % (2 * n_head) != 0) {
        cli_seterr(c->err, c->errlen,
                   "%s: tensor '%s': %lld rows do not split into %d heads of even size", t->file,
                   hf, (long long)rows, n_head);
        free(f);
        return NULL;
    }
    float *p = malloc((size_t)t->numel * sizeof *p);
    if (!p) {
        free(f);
        cli_seterr(c->err, c->errlen, "%s: out of memory", hf);
        return NULL;
    }
    permute_rows(f, p, rows, cols, n_head);
    free(f);
    return p;
}

/* t's values as a malloc'd float array, permuted when permute > 0; NULL
 * with err set on failure. */
static float *read_f32(conv *c, const st_tensor *t, const char *hf, int permute)
{
    float *f = malloc((size_t)(t->numel ? t->numel : 1) * sizeof *f);
    if (!f) {
        cli_seterr(c->err, c->errlen, "%s: out of memory", hf);
        return NULL;
    }
    if (st_to_f32(t, f, c->err, c->errlen) != 0) {
        free(f);
        return NULL;
    }
    return permute > 0 ? permute_qk(c, t, hf, f, permute) : f;
}

/* n floats as `type` (the type table's encoding) in a buffer the writer owns;
 * NULL if out of memory. */
static void *store_as(gguf_writer *w, const float *f, int64_t n, kt_type type)
{
    const ttype_info *ti = ttype_get(type);
    void *out = gguf_writer_alloc(w, ttype_row_bytes(ti, n));
    if (out) ti->from_float(type, f, out, n);
    return out;
}

/* Maps one safetensors tensor into the writer. permute_heads > 0 applies
 * the q/k permutation with that many heads. expect_rows/cols, when > 0,
 * check the torch shape. */
static int add(conv *c, gguf_writer *w, const char *hf, const char *name, type_rule rule,
               int permute_heads, int64_t expect_rows, int64_t expect_cols)
{
    const st_tensor *t = st_find(c->st, hf);
    if (!t) {
        cli_seterr(c->err, c->errlen, "%s: tensor '%s' (for %s) is missing from the checkpoint",
                   c->dir, hf, name);
        return -1;
    }
    c->used[t - st_at(c->st, 0)] = true;
    if (check_shape(c, t, hf, expect_rows, expect_cols) != 0) return -1;
    float *f = read_f32(c, t, hf, permute_heads);
    if (!f) return -1;
    kt_type type = (rule == KEEP_F32 || t->n_dims < 2) ? KT_F32 : c->outtype;
    void *out = store_as(w, f, t->numel, type);
    free(f);
    if (!out) {
        cli_seterr(c->err, c->errlen, "%s: out of memory", hf);
        return -1;
    }
    int64_t ne[GGUF_MAX_DIMS] = {1, 1, 1, 1};
    int nd = t->n_dims ? t->n_dims : 1;
    for (int d = 0; d < t->n_dims; d++)
        ne[d] = t->shape[t->n_dims - 1 - d]; /* GGUF lists the innermost dimension first */
    char terr[512];
    if (gguf_add_tensor(w, name, type, nd, ne, out, terr, sizeof terr) != 0) {
        cli_seterr(c->err, c->errlen, "%s: %s", name, terr);
        return -1;
    }
    return 0;
}

/* ---- tokenizer ---- */

static const char *special_name(const cJSON *tc, const char *key)
{
    const cJSON *v = tc ? cJSON_GetObjectItemCaseSensitive(tc, key) : NULL;
    if (cJSON_IsString(v)) return v->valuestring;
    const cJSON *content =
        cJSON_IsObject(v) ? cJSON_GetObjectItemCaseSensitive(v, "content") : NULL;
    return cJSON_IsString(content) ? content->valuestring : NULL;
}

static long long find_token(char **tokens, long long n, const char *s)
{
    for (long long i = 0; i < n; i++)
        if (tokens[i] && !strcmp(tokens[i], s)) return i;
    return -1;
}

static bool looks_special(const char *s)
{
    size_t n = strlen(s);
    return n >= 4 && !strncmp(s, "<|", 2) && !strcmp(s + n - 2, "|>");
}

/* The token table as llama.cpp stores it: a string and a type per id, and
 * the merges as "a b" strings. It owns every string. */
typedef struct {
    char **tokens;
    int32_t *types;
    long long n;
    char **merges;
    long long n_merges;
} token_table;

static void token_table_free(token_table *v)
{
    for (long long i = 0; v->tokens && i < v->n; i++)
        free(v->tokens[i]);
    for (long long i = 0; v->merges && i < v->n_merges; i++)
        free(v->merges[i]);
    free(v->tokens);
    free(v->types);
    free(v->merges);
}

static int set_special(conv *c, gguf_writer *w, const char *key, const cJSON *tcfg,
                       const char *tc_key, const cJSON *cfg, const cJSON *text_cfg,
                       const char *cfg_key, const token_table *v)
{
    const char *s = special_name(tcfg, tc_key);
    long long id = -1;
    if (s) {
        id = find_token(v->tokens, v->n, s);
        if (id < 0) {
            cli_seterr(c->err, c->errlen,
                       "%s/tokenizer_config.json: %s \"%s\" is not in the vocabulary", c->dir,
                       tc_key, s);
            return -1;
        }
    } else if (!jint(cfg, text_cfg, cfg_key, &id)) {
        return 0;
    }
    if (id >= 0 && id < v->n) gguf_set_u32(w, key, (uint32_t)id);
    return 0;
}

static int check_bpe_model(conv *c, const char *path, const cJSON *model)
{
    const cJSON *mtype = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (!cJSON_IsString(mtype) || strcmp(mtype->valuestring, "BPE") != 0) {
        cli_seterr(c->err, c->errlen, "%s: model.type must be \"BPE\" (byte-level BPE)", path);
        return -1;
    }
    if (!cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(model, "vocab")) ||
        !cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(model, "merges"))) {
        cli_seterr(c->err, c->errlen, "%s: model needs a \"vocab\" object and a \"merges\" array",
                   path);
        return -1;
    }
    return 0;
}

/* The table is as long as the model's embedding; ids the tokenizer does
 * not use become [PADn] placeholders, as llama.cpp does. Returns the
 * length, or -1 with err set. */
static long long table_length(conv *c, const char *path, const cJSON *vocab, const cJSON *added,
                              long long vocab_size)
{
    long long max_id = -1;
    for (const cJSON *it = vocab->child; it; it = it->next)
        if (cJSON_IsNumber(it) && it->valuedouble > max_id) max_id = (long long)it->valuedouble;
    for (const cJSON *it = added ? added->child : NULL; it; it = it->next) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        if (cJSON_IsNumber(id) && id->valuedouble > max_id) max_id = (long long)id->valuedouble;
    }
    long long n = max_id + 1 > vocab_size ? max_id + 1 : vocab_size;
    if (n <= 0 || n > (1 << 24)) {
        cli_seterr(c->err, c->errlen, "%s: vocabulary of %lld tokens", path, n);
        return -1;
    }
    if (vocab_size > 0 && max_id + 1 > vocab_size)
        fprintf(stderr,
                "convert: warning: tokenizer has %lld tokens, config.json vocab_size is %lld\n",
                max_id + 1, vocab_size);
    return n;
}

/* A later entry for the same id replaces an earlier one. */
static void set_token(token_table *v, long long id, const char *s, int32_t type)
{
    assert(id >= 0 && id < v->n); /* table_length counted every id */
    free(v->tokens[id]);
    v->tokens[id] = strdup(s);
    v->types[id] = type;
}

static int add_vocab(conv *c, const char *path, const cJSON *vocab, token_table *v)
{
    for (const cJSON *it = vocab->child; it; it = it->next) {
        if (!cJSON_IsNumber(it) || it->valuedouble < 0) {
            cli_seterr(c->err, c->errlen, "%s: vocab entry '%s' has no valid id", path, it->string);
            return -1;
        }
        set_token(v, (long long)it->valuedouble, it->string, TOK_TYPE_NORMAL);
    }
    return 0;
}

static int add_added_tokens(conv *c, const char *path, const cJSON *added, token_table *v)
{
    for (const cJSON *it = added ? added->child : NULL; it; it = it->next) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(it, "content");
        const cJSON *special = cJSON_GetObjectItemCaseSensitive(it, "special");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || !cJSON_IsString(content)) {
            cli_seterr(c->err, c->errlen, "%s: an added_tokens entry lacks id or content", path);
            return -1;
        }
        bool control = cJSON_IsTrue(special) || looks_special(content->valuestring);
        set_token(v, (long long)id->valuedouble, content->valuestring,
                  control ? TOK_TYPE_CONTROL : TOK_TYPE_USER_DEFINED);
    }
    return 0;
}

static int add_placeholders(conv *c, const char *path, token_table *v)
{
    for (long long i = 0; i < v->n; i++) {
        if (!v->tokens[i]) {
            char pad[32];
            snprintf(pad, sizeof pad, "[PAD%lld]", i);
            v->tokens[i] = strdup(pad);
            v->types[i] = TOK_TYPE_UNUSED;
        }
        if (!v->tokens[i]) {
            cli_seterr(c->err, c->errlen, "%s: out of memory", path);
            return -1;
        }
    }
    return 0;
}

/* One merge as "a b": newer files write it as ["a", "b"]. NULL if out of
 * memory. */
static char *join_merge_pair(const cJSON *pair)
{
    const char *a = pair->child->valuestring, *b = pair->child->next->valuestring;
    size_t len = strlen(a) + strlen(b) + 2;
    char *s = malloc(len);
    if (s) snprintf(s, len, "%s %s", a, b);
    return s;
}

static bool is_merge_pair(const cJSON *it)
{
    return cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 && cJSON_IsString(it->child) &&
           cJSON_IsString(it->child->next);
}

static int read_merges(conv *c, const char *path, const cJSON *mlist, token_table *v)
{
    v->n_merges = cJSON_GetArraySize(mlist);
    v->merges = calloc((size_t)(v->n_merges ? v->n_merges : 1), sizeof *v->merges);
    if (!v->merges) {
        cli_seterr(c->err, c->errlen, "%s: out of memory", path);
        return -1;
    }
    long long k = 0;
    for (const cJSON *it = mlist->child; it; it = it->next, k++) {
        assert(k < v->n_merges);
        if (cJSON_IsString(it)) {
            v->merges[k] = strdup(it->valuestring);
        } else if (is_merge_pair(it)) {
            v->merges[k] = join_merge_pair(it);
        } else {
            cli_seterr(c->err, c->errlen, "%s: merge %lld is neither \"a b\" nor [\"a\", \"b\"]",
                       path, k);
            return -1;
        }
        if (!v->merges[k]) {
            cli_seterr(c->err, c->errlen, "%s: out of memory", path);
            return -1;
        }
    }
    return 0;
}

/* tokenizer.json (the parsed tj) to a token table padded to vocab_size. */
static int read_token_table(conv *c, const cJSON *tj, long long vocab_size, token_table *v)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", c->dir);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(tj, "model");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *mlist = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(tj, "added_tokens");
    if (check_bpe_model(c, path, model) != 0) return -1;
    v->n = table_length(c, path, vocab, added, vocab_size);
    if (v->n < 0) {
        v->n = 0;
        return -1;
    }
    v->tokens = calloc((size_t)v->n, sizeof *v->tokens);
    v->types = calloc((size_t)v->n, sizeof *v->types);
    if (!v->tokens || !v->types) {
        cli_seterr(c->err, c->errlen, "%s: out of memory", path);
        return -1;
    }
    if (add_vocab(c, path, vocab, v) != 0 || add_added_tokens(c, path, added, v) != 0 ||
        add_placeholders(c, path, v) != 0)
        return -1;
    return read_merges(c, path, mlist, v);
}

/* pre: the pre-tokenizer's llama.cpp name ("smollm" splits digits one by one, "phi-2" not). */
static void set_token_table(gguf_writer *w, const token_table *v, const char *pre)
{
    gguf_set_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_set_str(w, "tokenizer.ggml.pre", pre);
    gguf_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v->tokens, (uint64_t)v->n);
    gguf_set_arr(w, "tokenizer.ggml.token_type", GGUF_INT32, v->types, (uint64_t)v->n);
    gguf_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)v->merges,
                     (uint64_t)v->n_merges);
}

/* bos/eos/unk/pad ids: by name from tokenizer_config.json, else by id from
 * config.json (no unk there). */
static int set_special_ids(conv *c, gguf_writer *w, const cJSON *tcfg, const cJSON *cfg,
                           const cJSON *text_cfg, const token_table *v)
{
    if (set_special(c, w, "tokenizer.ggml.bos_token_id", tcfg, "bos_token", cfg, text_cfg,
                    "bos_token_id", v) != 0 ||
        set_special(c, w, "tokenizer.ggml.eos_token_id", tcfg, "eos_token", cfg, text_cfg,
                    "eos_token_id", v) != 0 ||
        set_special(c, w, "tokenizer.ggml.unknown_token_id", tcfg, "unk_token", NULL, NULL,
                    "unk_token_id", v) != 0 ||
        set_special(c, w, "tokenizer.ggml.padding_token_id", tcfg, "pad_token", cfg, text_cfg,
                    "pad_token_id", v) != 0)
        return -1;
    return 0;
}

static void set_add_flags(gguf_writer *w, const cJSON *tcfg)
{
    const cJSON *ab = tcfg ? cJSON_GetObjectItemCaseSensitive(tcfg, "add_bos_token") : NULL;
    if (cJSON_IsBool(ab)) gguf_set_bool(w, "tokenizer.ggml.add_bos_token", cJSON_IsTrue(ab));
    const cJSON *ae = tcfg ? cJSON_GetObjectItemCaseSensitive(tcfg, "add_eos_token") : NULL;
    if (cJSON_IsBool(ae)) gguf_set_bool(w, "tokenizer.ggml.add_eos_token", cJSON_IsTrue(ae));
}

/* From tokenizer_config.json, else chat_template.json, else
 * chat_template.jinja; none is fine, and so is a broken chat_template.json. */
static void set_chat_template(conv *c, gguf_writer *w, const cJSON *tcfg)
{
    const cJSON *tmpl = tcfg ? cJSON_GetObjectItemCaseSensitive(tcfg, "chat_template") : NULL;
    cJSON *ctj = NULL;
    if (!cJSON_IsString(tmpl)) {
        bool bad;
        ctj = load_json(c, "chat_template.json", false, &bad);
        tmpl = ctj ? cJSON_GetObjectItemCaseSensitive(ctj, "chat_template") : NULL;
    }
    if (cJSON_IsString(tmpl)) {
        gguf_set_str(w, "tokenizer.chat_template", tmpl->valuestring);
    } else {
        char path[4096];
        snprintf(path, sizeof path, "%s/chat_template.jinja", c->dir);
        char *jinja = cli_read_file(path, NULL);
        if (jinja) gguf_set_str(w, "tokenizer.chat_template", jinja);
        free(jinja);
    }
    cJSON_Delete(ctj);
}

static int write_tokenizer(conv *c, gguf_writer *w, const cJSON *cfg, const cJSON *text_cfg,
                           long long vocab_size, const char *pre)
{
    bool bad;
    cJSON *tj = load_json(c, "tokenizer.json", false, &bad);
    if (!tj) {
        if (bad) return -1;
        /* Weights alone still make a usable file for forward-pass tests. */
        fprintf(stderr,
                "convert: warning: %s has no tokenizer.json; the text GGUF gets no tokenizer\n",
                c->dir);
        return 0;
    }
    cJSON *tcfg = load_json(c, "tokenizer_config.json", false, &bad);
    token_table v = {0};
    int rc = bad ? -1 : read_token_table(c, tj, vocab_size, &v);
    if (rc == 0) {
        set_token_table(w, &v, pre);
        rc = set_special_ids(c, w, tcfg, cfg, text_cfg, &v);
    }
    if (rc == 0) {
        set_add_flags(w, tcfg);
        set_chat_template(c, w, tcfg);
    }
    token_table_free(&v);
    cJSON_Delete(tj);
    cJSON_Delete(tcfg);
    return rc;
}

int convert_tokenizer(const char *hf_dir, gguf_writer *w, long long vocab_size, char *err,
                      size_t errlen)
{
    conv c = {.dir = hf_dir, .err = err, .errlen = errlen};
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", hf_dir);
    FILE *f = fopen(path, "rb");
    if (!f) {
        cli_seterr(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    fclose(f);
    return write_tokenizer(&c, w, NULL, NULL, vocab_size, "smollm");
}

/* ---- the two files ---- */

static const char *base_name(const char *dir)
{
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/')
        n--;
    const char *s = dir + n;
    while (s > dir && s[-1] != '/')
        s--;
    return s;
}

/* A writer with the general.* keys both output files carry. */
static gguf_writer *new_writer(const conv *c, const char *arch, const char *type)
{
    gguf_writer *w = gguf_writer_create();
    if (!w) {
        cli_seterr(c->err, c->errlen, "out of memory");
        return NULL;
    }
    gguf_set_str(w, "general.architecture", arch);
    gguf_set_str(w, "general.type", type);
    gguf_set_str(w, "general.name", base_name(c->dir));
    gguf_set_u32(w, "general.file_type", (uint32_t)quant_llama_ftype(c->outtype));
    gguf_set_u32(w, "general.quantization_version", 2);
    return w;
}

/* Writes the file if everything was added (rc == 0), frees the writer;
 * returns rc, or -1 if the write failed. */
static int finish_writer(const conv *c, gguf_writer *w, int rc, const char *out_path)
{
    if (rc == 0) {
        char werr[512];
        if (gguf_write(w, out_path, werr, sizeof werr) != 0) {
            cli_seterr(c->err, c->errlen, "%s", werr);
            rc = -1;
        }
    }
    gguf_writer_destroy(w);
    return rc;
}

/* The text model's shape, from text_config (or the top level of a plain
 * Llama checkpoint). */
typedef struct {
    long long hidden, ffn, n_layer, n_head, n_kv, n_ctx, vocab, head_dim;
    double eps, theta;
} text_params;

static int read_text_params(conv *c, const cJSON *cfg, const cJSON *tc, text_params *p)
{
    if (need_int(c, tc, NULL, "text_config", "hidden_size", &p->hidden) ||
        need_int(c, tc, NULL, "text_config", "intermediate_size", &p->ffn) ||
        need_int(c, tc, NULL, "text_config", "num_hidden_layers", &p->n_layer) ||
        need_int(c, tc, NULL, "text_config", "num_attention_heads", &p->n_head) ||
        need_int(c, tc, cfg, "text_config", "vocab_size", &p->vocab))
        return -1;
    if (!jint(tc, NULL, "num_key_value_heads", &p->n_kv)) p->n_kv = p->n_head;
    p->n_ctx = 2048;
    jint(tc, NULL, "max_position_embeddings", &p->n_ctx);
    p->head_dim = p->hidden / p->n_head;
    jint(tc, NULL, "head_dim", &p->head_dim);
    p->eps = 1e-6, p->theta = 10000.0; /* transformers' LlamaConfig defaults */
    jnum(tc, NULL, "rms_norm_eps", &p->eps);
    jnum(tc, NULL, "rope_theta", &p->theta);
    if (p->n_kv <= 0 || p->n_head % p->n_kv != 0 || p->head_dim <= 0 || p->head_dim % 2 != 0) {
        cli_seterr(c->err, c->errlen,
                   "%s/config.json: heads %lld, kv heads %lld, head_dim %lld are inconsistent",
                   c->dir, p->n_head, p->n_kv, p->head_dim);
        return -1;
    }
    return 0;
}

static void set_text_keys(gguf_writer *w, const text_params *p)
{
    gguf_set_u32(w, "llama.vocab_size", (uint32_t)p->vocab);
    gguf_set_u32(w, "llama.context_length", (uint32_t)p->n_ctx);
    gguf_set_u32(w, "llama.embedding_length", (uint32_t)p->hidden);
    gguf_set_u32(w, "llama.block_count", (uint32_t)p->n_layer);
    gguf_set_u32(w, "llama.feed_forward_length", (uint32_t)p->ffn);
    gguf_set_u32(w, "llama.rope.dimension_count", (uint32_t)p->head_dim);
    gguf_set_u32(w, "llama.attention.head_count", (uint32_t)p->n_head);
    gguf_set_u32(w, "llama.attention.head_count_kv", (uint32_t)p->n_kv);
    gguf_set_f32(w, "llama.attention.layer_norm_rms_epsilon", (float)p->eps);
    gguf_set_f32(w, "llama.rope.freq_base", (float)p->theta);
    if (p->head_dim != p->hidden / p->n_head) {
        gguf_set_u32(w, "llama.attention.key_length", (uint32_t)p->head_dim);
        gguf_set_u32(w, "llama.attention.value_length", (uint32_t)p->head_dim);
    }
}

/* Decoder layer i; pre is the checkpoint's name prefix. */
static int add_text_layer(conv *c, gguf_writer *w, const char *pre, long long i,
                          const text_params *p)
{
    long long d = p->hidden, ffn = p->ffn, q = p->n_head * p->head_dim, kv = p->n_kv * p->head_dim;
    char hf[256], name[128];
#define HF(s) (snprintf(hf, sizeof hf, "%slayers.%lld." s, pre, i), hf)
#define GG(s) (snprintf(name, sizeof name, "blk.%lld." s, i), name)
    bool bad =
        add(c, w, HF("input_layernorm.weight"), GG("attn_norm.weight"), KEEP_F32, 0, d, 0) ||
        add(c, w, HF("self_attn.q_proj.weight"), GG("attn_q.weight"), OUTTYPE, (int)p->n_head, q,
            d) ||
        add(c, w, HF("self_attn.k_proj.weight"), GG("attn_k.weight"), OUTTYPE, (int)p->n_kv, kv,
            d) ||
        add(c, w, HF("self_attn.v_proj.weight"), GG("attn_v.weight"), OUTTYPE, 0, kv, d) ||
        add(c, w, HF("self_attn.o_proj.weight"), GG("attn_output.weight"), OUTTYPE, 0, d, q) ||
        add(c, w, HF("post_attention_layernorm.weight"), GG("ffn_norm.weight"), KEEP_F32, 0, d,
            0) ||
        add(c, w, HF("mlp.gate_proj.weight"), GG("ffn_gate.weight"), OUTTYPE, 0, ffn, d) ||
        add(c, w, HF("mlp.up_proj.weight"), GG("ffn_up.weight"), OUTTYPE, 0, ffn, d) ||
        add(c, w, HF("mlp.down_proj.weight"), GG("ffn_down.weight"), OUTTYPE, 0, d, ffn);
#undef HF
#undef GG
    return bad ? -1 : 0;
}

static int add_text_tensors(conv *c, gguf_writer *w, const text_params *p)
{
    const char *pre =
        st_find(c->st, "model.text_model.embed_tokens.weight") ? "model.text_model." : "model.";
    char hf[256];
    snprintf(hf, sizeof hf, "%sembed_tokens.weight", pre);
    if (add(c, w, hf, "token_embd.weight", OUTTYPE, 0, p->vocab, p->hidden) != 0) return -1;
    for (long long i = 0; i < p->n_layer; i++)
        if (add_text_layer(c, w, pre, i, p) != 0) return -1;
    snprintf(hf, sizeof hf, "%snorm.weight", pre);
    if (add(c, w, hf, "output_norm.weight", KEEP_F32, 0, p->hidden, 0) != 0) return -1;
    /* Tied embeddings: no output tensor, llama.cpp then reuses token_embd. */
    if (st_find(c->st, "lm_head.weight"))
        return add(c, w, "lm_head.weight", "output.weight", OUTTYPE, 0, p->vocab, p->hidden);
    return 0;
}

static int text_model(conv *c, const cJSON *cfg, const char *out_path)
{
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(cfg, "text_config");
    if (!cJSON_IsObject(tc)) tc = cfg; /* a plain Llama checkpoint */
    text_params p;
    if (read_text_params(c, cfg, tc, &p) != 0) return -1;
    gguf_writer *w = new_writer(c, "llama", "model");
    if (!w) return -1;
    set_text_keys(w, &p);
    int rc = write_tokenizer(c, w, cfg, tc == cfg ? NULL : tc, p.vocab, "smollm");
    if (rc == 0) rc = add_text_tensors(c, w, &p);
    return finish_writer(c, w, rc, out_path);
}

/* The vision tower's shape. Real configs leave out keys that equal
 * transformers' defaults (Idefics3VisionConfig), SmolVLM2's even the sizes. */
typedef struct {
    long long hidden, ffn, n_head, n_layer, image_size, patch, scale, text_hidden, n_patches;
    double eps;
} vision_params;

static int read_vision_params(conv *c, const cJSON *cfg, vision_params *p)
{
    const cJSON *vc = cJSON_GetObjectItemCaseSensitive(cfg, "vision_config");
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(cfg, "text_config");
    if (!cJSON_IsObject(tc)) tc = cfg;
    *p = (vision_params){.hidden = 1152,
                         .ffn = 3072,
                         .n_head = 16,
                         .n_layer = 12,
                         .image_size = 224,
                         .patch = 32,
                         .scale = 2,
                         .eps = 1e-6};
    jint(vc, NULL, "hidden_size", &p->hidden);
    jint(vc, NULL, "intermediate_size", &p->ffn);
    jint(vc, NULL, "num_attention_heads", &p->n_head);
    jint(vc, NULL, "num_hidden_layers", &p->n_layer);
    jint(vc, NULL, "image_size", &p->image_size);
    jint(vc, NULL, "patch_size", &p->patch);
    jnum(vc, NULL, "layer_norm_eps", &p->eps);
    jint(cfg, NULL, "scale_factor", &p->scale);
    if (need_int(c, tc, NULL, "text_config", "hidden_size", &p->text_hidden)) return -1;
    if (p->hidden <= 0 || p->ffn <= 0 || p->n_head <= 0 || p->n_layer <= 0 || p->image_size <= 0 ||
        p->patch <= 0 || p->scale <= 0 || p->image_size % p->patch != 0 ||
        (p->image_size / p->patch) % p->scale != 0) {
        cli_seterr(c->err, c->errlen,
                   "%s/config.json: image_size %lld, patch_size %lld, scale_factor %lld do not fit",
                   c->dir, p->image_size, p->patch, p->scale);
        return -1;
    }
    p->n_patches = (p->image_size / p->patch) * (p->image_size / p->patch);
    return 0;
}

/* What preprocessor_config.json says about normalising and scaling images. */
typedef struct {
    float mean[3], std[3];
    long long longest_edge;
} preprocess;

static int read_preprocess(conv *c, long long image_size, preprocess *pp)
{
    bool bad;
    cJSON *j = load_json(c, "preprocessor_config.json", true, &bad);
    if (!j) return -1;
    const cJSON *jm = cJSON_GetObjectItemCaseSensitive(j, "image_mean");
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(j, "image_std");
    if (cJSON_GetArraySize(jm) != 3 || cJSON_GetArraySize(js) != 3) {
        cli_seterr(c->err, c->errlen,
                   "%s/preprocessor_config.json: image_mean and image_std need 3 values", c->dir);
        cJSON_Delete(j);
        return -1;
    }
    for (int i = 0; i < 3; i++) {
        pp->mean[i] = (float)cJSON_GetArrayItem(jm, i)->valuedouble;
        pp->std[i] = (float)cJSON_GetArrayItem(js, i)->valuedouble;
    }
    pp->longest_edge = image_size;
    jint(cJSON_GetObjectItemCaseSensitive(j, "size"), NULL, "longest_edge", &pp->longest_edge);
    cJSON_Delete(j);
    return 0;
}

/* proj: "idefics3" (pixel shuffle by p->scale) or "mlp". */
static void set_vision_keys(gguf_writer *w, const vision_params *p, const preprocess *pp,
                            const char *proj)
{
    gguf_set_bool(w, "clip.has_vision_encoder", true);
    gguf_set_str(w, "clip.projector_type", proj);
    gguf_set_u32(w, "clip.vision.projection_dim", (uint32_t)p->text_hidden);
    gguf_set_u32(w, "clip.vision.image_size", (uint32_t)p->image_size);
    gguf_set_u32(w, "clip.vision.preproc_image_size", (uint32_t)pp->longest_edge);
    gguf_set_u32(w, "clip.vision.patch_size", (uint32_t)p->patch);
    gguf_set_u32(w, "clip.vision.embedding_length", (uint32_t)p->hidden);
    gguf_set_u32(w, "clip.vision.feed_forward_length", (uint32_t)p->ffn);
    gguf_set_u32(w, "clip.vision.block_count", (uint32_t)p->n_layer);
    gguf_set_u32(w, "clip.vision.attention.head_count", (uint32_t)p->n_head);
    gguf_set_f32(w, "clip.vision.attention.layer_norm_epsilon", (float)p->eps);
    if (!strcmp(proj, "idefics3"))
        gguf_set_u32(w, "clip.vision.projector.scale_factor", (uint32_t)p->scale);
    gguf_set_bool(w, "clip.use_gelu", true);
    gguf_set_arr(w, "clip.vision.image_mean", GGUF_FLOAT32, pp->mean, 3);
    gguf_set_arr(w, "clip.vision.image_std", GGUF_FLOAT32, pp->std, 3);
}

#define VISION_PRE "model.vision_model."

/* Encoder layer i: a weight and a bias for each part. */
static int add_vision_layer(conv *c, gguf_writer *w, long long i, const vision_params *p)
{
    static const struct {
        const char *hf, *gg;
        bool matrix;
    } part[] = {
        {"layer_norm1", "ln1", false},
        {"self_attn.q_proj", "attn_q", true},
        {"self_attn.k_proj", "attn_k", true},
        {"self_attn.v_proj", "attn_v", true},
        {"self_attn.out_proj", "attn_out", true},
        {"layer_norm2", "ln2", false},
        {"mlp.fc1", "ffn_up", true},
        {"mlp.fc2", "ffn_down", true},
    };
    char hf[256], name[128];
    for (size_t j = 0; j < sizeof part / sizeof part[0]; j++) {
        int64_t rows = !strcmp(part[j].gg, "ffn_up") ? p->ffn : p->hidden;
        int64_t cols = !part[j].matrix ? 0 : !strcmp(part[j].gg, "ffn_down") ? p->ffn : p->hidden;
        snprintf(hf, sizeof hf, VISION_PRE "encoder.layers.%lld.%s.weight", i, part[j].hf);
        snprintf(name, sizeof name, "v.blk.%lld.%s.weight", i, part[j].gg);
        if (add(c, w, hf, name, part[j].matrix ? OUTTYPE : KEEP_F32, 0, rows, cols) != 0) return -1;
        snprintf(hf, sizeof hf, VISION_PRE "encoder.layers.%lld.%s.bias", i, part[j].hf);
        snprintf(name, sizeof name, "v.blk.%lld.%s.bias", i, part[j].gg);
        if (add(c, w, hf, name, KEEP_F32, 0, rows, 0) != 0) return -1;
    }
    return 0;
}

static int add_vision_tensors(conv *c, gguf_writer *w, const vision_params *p)
{
    /* The patch embedding stays a conv kernel: torch [hidden, 3, p, p] is
     * GGUF ne {p, p, 3, hidden}, as llama.cpp's clip expects. */
    if (add(c, w, VISION_PRE "embeddings.patch_embedding.weight", "v.patch_embd.weight", KEEP_F32,
            0, p->hidden, 3) ||
        add(c, w, VISION_PRE "embeddings.patch_embedding.bias", "v.patch_embd.bias", KEEP_F32, 0,
            p->hidden, 0) ||
        add(c, w, VISION_PRE "embeddings.position_embedding.weight", "v.position_embd.weight",
            KEEP_F32, 0, p->n_patches, p->hidden))
        return -1;
    for (long long i = 0; i < p->n_layer; i++)
        if (add_vision_layer(c, w, i, p) != 0) return -1;
    if (add(c, w, VISION_PRE "post_layernorm.weight", "v.post_ln.weight", KEEP_F32, 0, p->hidden,
            0) ||
        add(c, w, VISION_PRE "post_layernorm.bias", "v.post_ln.bias", KEEP_F32, 0, p->hidden, 0) ||
        add(c, w, "model.connector.modality_projection.proj.weight", "mm.model.fc.weight", OUTTYPE,
            0, p->text_hidden, p->hidden * p->scale * p->scale))
        return -1;
    return 0;
}

static int vision_model(conv *c, const cJSON *cfg, const char *out_path)
{
    vision_params p;
    preprocess pp;
    if (read_vision_params(c, cfg, &p) != 0 || read_preprocess(c, p.image_size, &pp) != 0)
        return -1;
    gguf_writer *w = new_writer(c, "clip", "mmproj");
    if (!w) return -1;
    set_vision_keys(w, &p, &pp, "idefics3");
    return finish_writer(c, w, add_vision_tensors(c, w, &p), out_path);
}

/* ---- moondream2 ---- */

/* Elements [first, first + count) of checkpoint tensor hf (read as floats)
 * as GGUF tensor `name` of shape ne (n_dims of them): a part of a fused
 * matrix, or a tensor whose shape GGUF spells otherwise. */
static int add_slice(conv *c, gguf_writer *w, const char *hf, const char *name, type_rule rule,
                     int64_t first, int n_dims, const int64_t *ne)
{
    const st_tensor *t = st_find(c->st, hf);
    if (!t) {
        cli_seterr(c->err, c->errlen, "%s: tensor '%s' (for %s) is missing from the checkpoint",
                   c->dir, hf, name);
        return -1;
    }
    c->used[t - st_at(c->st, 0)] = true;
    int64_t count = 1;
    for (int d = 0; d < n_dims; d++)
        count *= ne[d];
    if (first < 0 || first + count > t->numel) {
        cli_seterr(c->err, c->errlen, "%s: tensor '%s' has %lld values, too few for %s", t->file,
                   hf, (long long)t->numel, name);
        return -1;
    }
    float *f = read_f32(c, t, hf, 0);
    if (!f) return -1;
    kt_type type = rule == KEEP_F32 || n_dims < 2 ? KT_F32 : c->outtype;
    void *out = store_as(w, f + first, count, type);
    free(f);
    if (!out) {
        cli_seterr(c->err, c->errlen, "%s: out of memory", hf);
        return -1;
    }
    char terr[512];
    if (gguf_add_tensor(w, name, type, n_dims, ne, out, terr, sizeof terr) != 0) {
        cli_seterr(c->err, c->errlen, "%s: %s", name, terr);
        return -1;
    }
    return 0;
}

/* Torch dimension d of checkpoint tensor hf, or -1 when it is missing. */
static int64_t dim_of(const conv *c, const char *hf, int d)
{
    const st_tensor *t = st_find(c->st, hf);
    return t && d < t->n_dims ? t->shape[d] : -1;
}

/* Blocks named pre + N + "." + probe for N = 0, 1, ...: how many there are. */
static long long count_blocks(const conv *c, const char *pre, const char *probe)
{
    long long n = 0;
    for (;; n++) {
        char hf[256];
        snprintf(hf, sizeof hf, "%s%lld.%s", pre, n, probe);
        if (!st_find(c->st, hf)) return n;
    }
}

#define MD_TEXT "text_model.transformer."
#define MD_VIS "vision_encoder.encoder.model.visual."
#define MD_PROJ "vision_encoder.projection.mlp."

/* A weight and its bias: GGUF name "<gg>.weight"/".bias" from "<hf>.weight"/".bias". */
static int add_wb(conv *c, gguf_writer *w, const char *hf, const char *gg, type_rule rule,
                  int64_t rows, int64_t cols)
{
    char h[256], g[128];
    snprintf(h, sizeof h, "%s.weight", hf);
    snprintf(g, sizeof g, "%s.weight", gg);
    if (add(c, w, h, g, rule, 0, rows, cols) != 0) return -1;
    snprintf(h, sizeof h, "%s.bias", hf);
    snprintf(g, sizeof g, "%s.bias", gg);
    return add(c, w, h, g, KEEP_F32, 0, rows, 0);
}

/* The text model's shape: phi_config over PhiConfig's defaults (moondream2's
 * config.json leaves them all out), sizes checked against the tensors. */
static int md_text_params(conv *c, const cJSON *pc, text_params *p, long long *n_rot)
{
    *p = (text_params){.hidden = 2048,
                       .ffn = 8192,
                       .n_layer = 24,
                       .n_head = 32,
                       .n_ctx = 2048,
                       .vocab = 51200,
                       .eps = 1e-5,
                       .theta = 10000.0};
    double rot = 0.5;
    jint(pc, NULL, "hidden_size", &p->hidden);
    jint(pc, NULL, "intermediate_size", &p->ffn);
    jint(pc, NULL, "num_hidden_layers", &p->n_layer);
    jint(pc, NULL, "num_attention_heads", &p->n_head);
    p->n_kv = p->n_head;
    jint(pc, NULL, "num_key_value_heads", &p->n_kv);
    jint(pc, NULL, "max_position_embeddings", &p->n_ctx);
    jint(pc, NULL, "vocab_size", &p->vocab);
    jnum(pc, NULL, "layer_norm_eps", &p->eps);
    jnum(pc, NULL, "rope_theta", &p->theta);
    jnum(pc, NULL, "partial_rotary_factor", &rot);
    p->head_dim = p->n_head > 0 ? p->hidden / p->n_head : 0;
    *n_rot = (long long)(p->head_dim * rot);
    long long layers = count_blocks(c, MD_TEXT "h.", "ln.weight");
    if (p->n_head <= 0 || p->n_kv <= 0 || p->n_head % p->n_kv || p->hidden % p->n_head ||
        *n_rot <= 0 || *n_rot % 2 || *n_rot > p->head_dim || layers != p->n_layer) {
        cli_seterr(c->err, c->errlen,
                   "%s: phi_config (hidden %lld, heads %lld/%lld, layers %lld, rotary %lld) does "
                   "not fit the checkpoint's %lld blocks",
                   c->dir, p->hidden, p->n_head, p->n_kv, p->n_layer, *n_rot, layers);
        return -1;
    }
    return 0;
}

static int md_text_model(conv *c, const cJSON *cfg, const char *out_path)
{
    const cJSON *pc = cJSON_GetObjectItemCaseSensitive(cfg, "phi_config");
    text_params p;
    long long n_rot;
    if (md_text_params(c, cJSON_IsObject(pc) ? pc : NULL, &p, &n_rot) != 0) return -1;
    gguf_writer *w = new_writer(c, "phi2", "model");
    if (!w) return -1;
    gguf_set_u32(w, "phi2.vocab_size", (uint32_t)p.vocab);
    gguf_set_u32(w, "phi2.context_length", (uint32_t)p.n_ctx);
    gguf_set_u32(w, "phi2.embedding_length", (uint32_t)p.hidden);
    gguf_set_u32(w, "phi2.feed_forward_length", (uint32_t)p.ffn);
    gguf_set_u32(w, "phi2.block_count", (uint32_t)p.n_layer);
    gguf_set_u32(w, "phi2.attention.head_count", (uint32_t)p.n_head);
    gguf_set_u32(w, "phi2.attention.head_count_kv", (uint32_t)p.n_kv);
    gguf_set_f32(w, "phi2.attention.layer_norm_epsilon", (float)p.eps);
    gguf_set_f32(w, "phi2.rope.freq_base", (float)p.theta);
    gguf_set_u32(w, "phi2.rope.dimension_count", (uint32_t)n_rot);
    /* moondream's prompt places BOS itself; llama.cpp's phi2 converters say so (the tokenizer's
     * own config, when it has the key, wins below) */
    gguf_set_bool(w, "tokenizer.ggml.add_bos_token", false);
    /* CodeGen's tokenizer, which llama.cpp calls "phi-2": GPT-2's pre-tokenizer, digits not
     * split one by one */
    int rc = write_tokenizer(c, w, cfg, cJSON_IsObject(pc) ? pc : NULL, p.vocab, "phi-2");
    long long d = p.hidden, qkv = (p.n_head + 2 * p.n_kv) * p.head_dim;
    if (rc == 0)
        rc = add(c, w, MD_TEXT "embd.wte.weight", "token_embd.weight", OUTTYPE, 0, p.vocab, d);
    for (long long i = 0; rc == 0 && i < p.n_layer; i++) {
        char hf[256], gg[64];
#define HF(s) (snprintf(hf, sizeof hf, MD_TEXT "h.%lld." s, i), hf)
#define GG(s) (snprintf(gg, sizeof gg, "blk.%lld." s, i), gg)
        rc = add_wb(c, w, HF("ln"), GG("attn_norm"), KEEP_F32, d, 0) ||
                     add_wb(c, w, HF("mixer.Wqkv"), GG("attn_qkv"), OUTTYPE, qkv, d) ||
                     add_wb(c, w, HF("mixer.out_proj"), GG("attn_output"), OUTTYPE, d, d) ||
                     add_wb(c, w, HF("mlp.fc1"), GG("ffn_up"), OUTTYPE, p.ffn, d) ||
                     add_wb(c, w, HF("mlp.fc2"), GG("ffn_down"), OUTTYPE, d, p.ffn)
                 ? -1
                 : 0;
#undef HF
#undef GG
    }
    if (rc == 0)
        rc = add_wb(c, w, "text_model.lm_head.ln", "output_norm", KEEP_F32, d, 0) ||
                     add_wb(c, w, "text_model.lm_head.linear", "output", OUTTYPE, p.vocab, d)
                 ? -1
                 : 0;
    return finish_writer(c, w, rc, out_path);
}

/* The tower's sizes from its tensors; moondream's code fixes 16 heads and
 * LayerNorm's default epsilon (1e-5), and resizes to the tile, normalising
 * with 0.5. */
static int md_vision_params(conv *c, vision_params *p, long long *proj_ff)
{
    *p = (vision_params){.n_head = 16, .scale = 1, .eps = 1e-5};
    p->hidden = dim_of(c, MD_VIS "patch_embed.linear.weight", 0);
    long long kin = dim_of(c, MD_VIS "patch_embed.linear.weight", 1);
    p->n_patches = dim_of(c, MD_VIS "pos_embed", 1);
    p->ffn = dim_of(c, MD_VIS "blocks.0.mlp.fc1.weight", 0);
    p->n_layer = count_blocks(c, MD_VIS "blocks.", "norm1.weight");
    *proj_ff = dim_of(c, MD_PROJ "fc1.weight", 0);
    p->text_hidden = dim_of(c, MD_PROJ "fc2.weight", 0);
    for (p->patch = 1; 3 * (p->patch + 1) * (p->patch + 1) <= kin; p->patch++)
        ;
    long long side = 1;
    for (; (side + 1) * (side + 1) <= p->n_patches; side++)
        ;
    p->image_size = side * p->patch;
    if (p->hidden <= 0 || p->hidden % p->n_head || 3 * p->patch * p->patch != kin ||
        side * side != p->n_patches || p->ffn <= 0 || p->n_layer <= 0 || *proj_ff <= 0 ||
        p->text_hidden <= 0) {
        cli_seterr(c->err, c->errlen,
                   "%s: the vision tensors do not make a moondream2 tower (width %lld, patch "
                   "input %lld, %lld positions, %lld blocks)",
                   c->dir, p->hidden, kin, p->n_patches, p->n_layer);
        return -1;
    }
    return 0;
}

static int md_vision_layer(conv *c, gguf_writer *w, long long i, const vision_params *p)
{
    int64_t D = p->hidden, F = p->ffn;
    char hf[256], gg[64];
#define HF(s) (snprintf(hf, sizeof hf, MD_VIS "blocks.%lld." s, i), hf)
#define GG(s) (snprintf(gg, sizeof gg, "v.blk.%lld." s, i), gg)
    if (add_wb(c, w, HF("norm1"), GG("ln1"), KEEP_F32, D, 0) ||
        add_wb(c, w, HF("norm2"), GG("ln2"), KEEP_F32, D, 0) ||
        add_wb(c, w, HF("attn.proj"), GG("attn_out"), OUTTYPE, D, D) ||
        add_wb(c, w, HF("mlp.fc1"), GG("ffn_up"), OUTTYPE, F, D) ||
        add_wb(c, w, HF("mlp.fc2"), GG("ffn_down"), OUTTYPE, D, F))
        return -1;
    /* qkv is q's rows, then k's, then v's: tern's clip tensors keep them apart */
    static const char *const part[3] = {"attn_q", "attn_k", "attn_v"};
    for (int k = 0; k < 3; k++) {
        int64_t ne_w[2] = {D, D}, ne_b[1] = {D};
        char gw[64], gb[64], hw[256], hb[256];
        snprintf(hw, sizeof hw, MD_VIS "blocks.%lld.attn.qkv.weight", i);
        snprintf(hb, sizeof hb, MD_VIS "blocks.%lld.attn.qkv.bias", i);
        snprintf(gw, sizeof gw, "v.blk.%lld.%s.weight", i, part[k]);
        snprintf(gb, sizeof gb, "v.blk.%lld.%s.bias", i, part[k]);
        if (dim_of(c, hw, 0) != 3 * D) {
            cli_seterr(c->err, c->errlen, "%s: tensor '%s' should have %lld rows", c->dir, hw,
                       (long long)(3 * D));
            return -1;
        }
        if (add_slice(c, w, hw, gw, OUTTYPE, k * D * D, 2, ne_w) ||
            add_slice(c, w, hb, gb, KEEP_F32, k * D, 1, ne_b))
            return -1;
    }
#undef HF
#undef GG
    return 0;
}

static int md_vision_model(conv *c, const char *out_path)
{
    vision_params p;
    long long proj_ff;
    if (md_vision_params(c, &p, &proj_ff) != 0) return -1;
    gguf_writer *w = new_writer(c, "clip", "mmproj");
    if (!w) return -1;
    preprocess pp = {
        .mean = {0.5f, 0.5f, 0.5f}, .std = {0.5f, 0.5f, 0.5f}, .longest_edge = p.image_size};
    set_vision_keys(w, &p, &pp, "mlp");
    /* llama.cpp's clip runs an "mlp" file's block_count - 1 blocks (LLaVA's penultimate layer)
     * unless feature_layer names the last one; moondream uses every block */
    const int32_t last = (int32_t)p.n_layer;
    gguf_set_arr(w, "clip.vision.feature_layer", GGUF_INT32, &last, 1);
    /* what llava-cli builds before projector_type read to pick the LLaVA graph */
    gguf_set_bool(w, "clip.has_llava_projector", true);
    /* the linear patch embedding reads (c, ky, kx) like the conv kernel it becomes */
    int64_t D = p.hidden, ne_patch[4] = {p.patch, p.patch, 3, D}, ne_pos[2] = {D, p.n_patches};
    int rc = add_slice(c, w, MD_VIS "patch_embed.linear.weight", "v.patch_embd.weight", KEEP_F32, 0,
                       4, ne_patch) ||
                     add(c, w, MD_VIS "patch_embed.linear.bias", "v.patch_embd.bias", KEEP_F32, 0,
                         D, 0) ||
                     add_slice(c, w, MD_VIS "pos_embed", "v.position_embd.weight", KEEP_F32, 0, 2,
                               ne_pos)
                 ? -1
                 : 0;
    for (long long i = 0; rc == 0 && i < p.n_layer; i++)
        rc = md_vision_layer(c, w, i, &p);
    if (rc == 0)
        rc = add_wb(c, w, MD_VIS "norm", "v.post_ln", KEEP_F32, D, 0) ||
                     add_wb(c, w, MD_PROJ "fc1", "mm.0", OUTTYPE, proj_ff, D) ||
                     add_wb(c, w, MD_PROJ "fc2", "mm.2", OUTTYPE, p.text_hidden, proj_ff)
                 ? -1
                 : 0;
    return finish_writer(c, w, rc, out_path);
}

/* Buffers that torch registers but that are not weights. */
static bool ignorable(const char *name)
{
    size_t n = strlen(name);
    static const char *const suffixes[] = {"rotary_emb.inv_freq", "position_ids"};
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        size_t m = strlen(suffixes[i]);
        if (n >= m && !strcmp(name + n - m, suffixes[i])) return true;
    }
    return false;
}

int convert_hf(const char *hf_dir, const char *prefix, kt_type outtype, char *err, size_t errlen)
{
    if (outtype != KT_F32 && outtype != KT_F16 && outtype != KT_BF16) {
        cli_seterr(err, errlen, "convert: output type must be f32, f16 or bf16");
        return -1;
    }
    conv c = {.dir = hf_dir, .outtype = outtype, .err = err, .errlen = errlen};
    bool bad;
    cJSON *cfg = load_json(&c, "config.json", true, &bad);
    if (!cfg) return -1;
    int rc = -1;
    if (st_open_dir(hf_dir, &c.st, err, errlen) != 0) goto out;
    c.used = calloc((size_t)st_count(c.st) + 1, sizeof *c.used);
    if (!c.used) {
        cli_seterr(err, errlen, "out of memory");
        goto out;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s.gguf", prefix);
    bool moondream = st_find(c.st, MD_TEXT "embd.wte.weight") != NULL;
    if ((moondream ? md_text_model(&c, cfg, path) : text_model(&c, cfg, path)) != 0) goto out;
    snprintf(path, sizeof path, "%s-mmproj.gguf", prefix);
    if (moondream ? st_find(c.st, MD_PROJ "fc1.weight") && md_vision_model(&c, path) != 0
                  : cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(cfg, "vision_config")) &&
                        vision_model(&c, cfg, path) != 0)
        goto out;
    for (int i = 0; i < st_count(c.st); i++)
        if (!c.used[i] && !ignorable(st_at(c.st, i)->name)) {
            cli_seterr(
                err, errlen,
                "%s: tensor '%s' has no place in the GGUF files (unknown architecture part?)",
                st_at(c.st, i)->file, st_at(c.st, i)->name);
            goto out;
        }
    rc = 0;
out:
    free(c.used);
    st_close(c.st);
    cJSON_Delete(cfg);
    return rc;
}

static int usage(void)
{
    fprintf(stderr, "usage: tern convert HF_DIR OUT_PREFIX [--outtype f32|f16|bf16]\n"
                    "  writes OUT_PREFIX.gguf (text model) and OUT_PREFIX-mmproj.gguf (vision)\n");
    return 2;
}

int cmd_convert(int argc, char **argv)
{
    const char *dir = NULL, *prefix = NULL;
    kt_type outtype = KT_F16;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--outtype") && i + 1 < argc) {
            /* a float type (one weight per block), spelled as the type table spells it */
            const ttype_info *ti = ttype_by_name(argv[++i]);
            if (!ti || ti->block != 1 || strcmp(ti->name, argv[i])) return usage();
            outtype = ti->id;
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage();
            return 0;
        } else if (argv[i][0] == '-') {
            return usage();
        } else if (!dir) {
            dir = argv[i];
        } else if (!prefix) {
            prefix = argv[i];
        } else {
            return usage();
        }
    }
    if (!dir || !prefix) return usage();
    char err[1024];
    if (convert_hf(dir, prefix, outtype, err, sizeof err) != 0) {
        fprintf(stderr, "tern convert: %s\n", err);
        return 1;
    }
    fprintf(stderr, "wrote %s.gguf", prefix);
    char path[4096];
    snprintf(path, sizeof path, "%s-mmproj.gguf", prefix);
    FILE *f = fopen(path, "rb");
    if (f) {
        fclose(f);
        fprintf(stderr, " and %s", path);
    }
    fprintf(stderr, "\n");
    return 0;
}
