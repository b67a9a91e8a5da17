/* tern mkmodel: a random-weight model with a real architecture's tensor
 * names, shapes and metadata (llama.cpp conventions), for tests and
 * benchmarks.
 *
 *   tern mkmodel --like tiny|smolvlm-256m|smolvlm-500m|smollm2-1.7b|
 *                       phi-tiny|moondream2
 *                [--layers N] [--seed S] --type T -o FILE [--mmproj FILE]
 *
 * The Llama shapes are SmolVLM's (SmolLM2 decoder); phi-tiny and moondream2
 * are llama.cpp's "phi2" (moondream2's Phi-1.5 decoder: LayerNorm, fused
 * attn_qkv, biases everywhere, GELU MLP, partial rotary).
 *
 * Matrices are N(0, 0.02^2) quantized to T with the same quantizers and
 * fallbacks as tern quantize; norms are F32 near 1; embeddings are F16 (or
 * T when T is a float type); vision position/patch embeddings F32. Each
 * tensor's values depend only on the seed and its name. */
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_util.h"
#include "cli/commands.h"
#include "engine/gguf.h"
#include "engine/tokenizer.h"
#include "engine/quant.h"
#include "engine/types.h"

#define CMD "mkmodel"

typedef struct {
    const char *like;
    int dim, ffn, layers, heads, kv_heads, vocab, ctx;
    float rope_base;
    bool tied; /* output shares token_embd: no output.weight */
    bool vision;
    int v_dim, v_ffn, v_layers, v_heads, image, patch, scale;
    bool phi; /* llama.cpp's "phi2" decoder, rotating rot dimensions of each head */
    int rot;
    int proj_ff; /* > 0: llama.cpp's "mlp" projector (mm.0, GELU, mm.2) of this width, no
                    pixel shuffle; 0: Idefics3's */
} arch;

static const arch archs[] = {
    {"tiny", 256, 512, 2, 4,  2,  512, 2048,  10000.0f, false, true,
     256,    512, 2,   4, 64, 16, 2,   false, 0,        0},
    {"smolvlm-256m", 576, 1536, 30,  9,  3, 49280, 8192, 100000.0f, false, true, 768,
     3072,           12,  12,   512, 16, 4, false, 0,    0},
    {"smolvlm-500m", 960, 2560, 32,  15, 5, 49280, 8192, 100000.0f, false, true, 768,
     3072,           12,  12,   512, 16, 4, false, 0,    0},
    {"smollm2-1.7b", 2048,  8192, 24, 32, 32, 49152, 8192, 130000.0f,
     true,           false, 0,    0,  0,  0,  0,     0,    0,
     false,          0,     0},
    /* moondream2: Phi-1.5 (partial_rotary_factor 0.5 of head 64), SigLIP-so400m at 378 px
     * and patch 14 (27 x 27 patches, one embedding row each), MLP projector 1152 -> 8192 ->
     * 2048 */
    {"phi-tiny", 256, 512, 2, 4,  4,  512, 2048, 10000.0f, false, true,
     256,        512, 2,   4, 56, 14, 1,   true, 32,       512},
    {"moondream2", 2048, 8192, 24, 32,  32, 51200, 2048, 10000.0f, false, true,
     1152,         4304, 27,   16, 378, 14, 1,     true, 32,       8192},
};

#define WEIGHT_STD 0.02f

/* ---- a generator that makes each tensor from (seed, name) ---- */

typedef struct {
    uint64_t s;
    bool have;
    float spare;
} rng;

static void rng_seed(rng *r, uint64_t seed, const char *name)
{
    uint64_t h = 1469598103934665603ull ^ seed; /* FNV-1a over the name */
    for (const char *p = name; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    r->s = h ? h : 1;
    r->have = false;
}

static double rng_u(rng *r) /* (0, 1) */
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return ((double)((r->s * 2685821657736338717ull) >> 11) + 0.5) / 9007199254740992.0;
}

static float rng_normal(rng *r)
{
    if (r->have) {
        r->have = false;
        return r->spare;
    }
    double m = sqrt(-2.0 * log(rng_u(r))), a = 6.283185307179586 * rng_u(r);
    r->spare = (float)(m * sin(a));
    r->have = true;
    return (float)(m * cos(a));
}

/* ---- building one file ---- */

typedef struct {
    gguf_writer *w;
    uint64_t seed;
    kt_type type; /* what matrices become */
    kt_type embd; /* what embeddings become */
    int fallbacks;
    int64_t params;
    char err[512];
    bool failed;
} builder;

static void add(builder *b, const char *name, kt_type type, int n_dims, const int64_t *ne,
                const void *data)
{
    if (b->failed) return;
    if (gguf_add_tensor(b->w, name, type, n_dims, ne, data, b->err, sizeof b->err) != GGUF_OK)
        b->failed = true;
}

/* ne[0] x rows of N(mean, std^2) floats, converted to `want` (with the
 * usual fallbacks for rows that do not fit). */
static void add_tensor(builder *b, const char *name, int n_dims, const int64_t *ne, float mean,
                       float std, kt_type want)
{
    if (b->failed) return;
    int64_t n = ne[0], rows = 1;
    for (int d = 1; d < n_dims; d++)
        rows *= ne[d];
    float *w = malloc((size_t)(n * rows) * sizeof(float));
    if (!w) {
        snprintf(b->err, sizeof b->err, "out of memory making %s", name);
        b->failed = true;
        return;
    }
    rng r;
    rng_seed(&r, b->seed, name);
    for (int64_t i = 0; i < n * rows; i++)
        w[i] = mean + std * rng_normal(&r);
    b->params += n * rows;

    kt_type to = KT_F32;
    if (!quant_pick_type(want, n, &to)) to = KT_F32;
    if (to != want) b->fallbacks++;
    const ttype_info *ti = ttype_get(to);
    void *buf = gguf_writer_alloc(b->w, ttype_row_bytes(ti, n) * (size_t)rows);
    if (!buf ||
        quant_to_type(w, rows, n, to, QUANT_KMEANS, false, buf, NULL, b->err, sizeof b->err) != 0) {
        if (!buf) snprintf(b->err, sizeof b->err, "out of memory making %s", name);
        b->failed = true;
        free(w);
        return;
    }
    free(w);
    add(b, name, to, n_dims, ne, buf);
}

static void matrix(builder *b, const char *name, int64_t in, int64_t out)
{
    int64_t ne[2] = {in, out};
    add_tensor(b, name, 2, ne, 0.0f, WEIGHT_STD, b->type);
}

static void vec(builder *b, const char *name, int64_t n, float mean, float std)
{
    int64_t ne[1] = {n};
    add_tensor(b, name, 1, ne, mean, std, KT_F32);
}

/* ---- the synthetic tokenizer ---- */

static const char *const words[] = {
    "the",       "a",        "is",        "of",     "and",    "to",     "in",       "it",
    "on",        "at",       "what",      "which",  "where",  "how",    "many",     "there",
    "are",       "this",     "that",      "with",   "color",  "colour", "shape",    "red",
    "green",     "blue",     "yellow",    "orange", "purple", "black",  "white",    "circle",
    "square",    "triangle", "star",      "left",   "right",  "top",    "bottom",   "middle",
    "center",    "one",      "two",       "three",  "four",   "five",   "six",      "image",
    "picture",   "describe", "small",     "large",  "big",    "answer", "question", "User",
    "Assistant", "yes",      "no",        "I",      "see",    "can",    "you",      "shapes",
    "circles",   "squares",  "triangles", "above",  "below",  "next",   "between",  "hello",
    "world",     "model",    "tern",
};

typedef struct {
    char **tok;
    int32_t *type;
    int n, cap;
    char **merge;
    int n_merge, cap_merge;
} vocab;

static int find_tok(const vocab *v, const char *s)
{
    for (int i = 0; i < v->n; i++)
        if (strcmp(v->tok[i], s) == 0) return i;
    return -1;
}

static bool push_tok(vocab *v, const char *s, int32_t type)
{
    if (v->n == v->cap) return false;
    v->tok[v->n] = strdup(s);
    v->type[v->n] = type;
    return v->tok[v->n++] != NULL;
}

static bool push_merge(vocab *v, const char *l, const char *r)
{
    if (v->n_merge == v->cap_merge) return false;
    size_t len = strlen(l) + strlen(r) + 2;
    v->merge[v->n_merge] = malloc(len);
    if (!v->merge[v->n_merge]) return false;
    snprintf(v->merge[v->n_merge++], len, "%s %s", l, r);
    return true;
}

/* Merge a word left to right ("Ġ"+"w" -> "Ġw", "Ġw"+"o" -> ...), adding
 * each new token and its merge while there is room. */
static void add_word(vocab *v, const char *word, bool space, int room)
{
    char cur[64] = "", piece[8];
    if (space) {
        tok_byte_str(' ', piece);
        strcpy(cur, piece);
    }
    for (const char *p = word; *p; p++) {
        tok_byte_str((uint8_t)*p, piece);
        if (!cur[0]) {
            strcpy(cur, piece);
            continue;
        }
        char next[64];
        snprintf(next, sizeof next, "%s%s", cur, piece);
        if (find_tok(v, next) < 0) {
            if (v->n >= room) return;
            push_tok(v, next, TOK_TYPE_NORMAL);
            push_merge(v, cur, piece);
        }
        strcpy(cur, next);
    }
}

static void vocab_free(vocab *v)
{
    for (int i = 0; i < v->n; i++)
        free(v->tok[i]);
    for (int i = 0; i < v->n_merge; i++)
        free(v->merge[i]);
    free(v->tok);
    free(v->type);
    free(v->merge);
}

/* ids 0-2 <|endoftext|> <|im_start|> <|im_end|>, then the 256 byte tokens,
 * then merged words, then printable fillers, and the SmolVLM special tokens
 * last. */
static bool vocab_make(vocab *v, int size, int *eou_id)
{
    memset(v, 0, sizeof *v);
    v->cap = v->cap_merge = size;
    v->tok = calloc((size_t)size, sizeof *v->tok);
    v->type = calloc((size_t)size, sizeof *v->type);
    v->merge = calloc((size_t)size, sizeof *v->merge);
    if (!v->tok || !v->type || !v->merge) return false;

    const char *head[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
    for (int i = 0; i < 3; i++)
        push_tok(v, head[i], TOK_TYPE_CONTROL);
    char piece[8];
    for (int b = 0; b < 256; b++) {
        tok_byte_str(b, piece);
        push_tok(v, piece, TOK_TYPE_NORMAL);
    }

    char tail[48][32];
    int nt = 0;
    snprintf(tail[nt++], 32, "<end_of_utterance>");
    snprintf(tail[nt++], 32, "<image>");
    snprintf(tail[nt++], 32, "<fake_token_around_image>");
    snprintf(tail[nt++], 32, "<global-img>");
    for (int r = 1; r <= 6; r++)
        for (int c = 1; c <= 6; c++)
            snprintf(tail[nt++], 32, "<row_%d_col_%d>", r, c);
    int room = size - nt;

    /* "\n\n" as one token */
    tok_byte_str('\n', piece);
    char nn[16];
    snprintf(nn, sizeof nn, "%s%s", piece, piece);
    push_tok(v, nn, TOK_TYPE_NORMAL);
    push_merge(v, piece, piece);
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        add_word(v, words[i], true, room);
        add_word(v, words[i], false, room);
    }
    /* Fillers spell " w0", " w1", ...: a random model's answers then
     * decode to visible text, one piece per token (no word holds a digit,
     * so no filler repeats a merged word). */
    for (int k = 0; v->n < room; k++) {
        char filler[32], digits[16];
        tok_byte_str(' ', piece);
        snprintf(digits, sizeof digits, "w%d", k);
        snprintf(filler, sizeof filler, "%s%s", piece, digits);
        push_tok(v, filler, TOK_TYPE_NORMAL);
    }
    *eou_id = v->n;
    for (int i = 0; i < nt; i++)
        push_tok(v, tail[i], TOK_TYPE_CONTROL);
    return v->n == size;
}

static const char smolvlm_template[] =
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}";

static const char chatml_template[] =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/* ---- the two files ---- */

static int finish(builder *b, const char *path, const char *what)
{
    if (!b->failed && gguf_write(b->w, path, b->err, sizeof b->err) != GGUF_OK) b->failed = true;
    if (b->failed) {
        fprintf(stderr, "tern mkmodel: %s: %s\n", path, b->err);
        return 1;
    }
    printf("wrote %s: %s, %.2fM parameters", path, what, (double)b->params / 1e6);
    if (b->fallbacks)
        printf(", %d matrices in a fallback type (rows not a multiple of the block)", b->fallbacks);
    printf("\n");
    return 0;
}

/* A builder whose writer has the general.* keys both files carry. */
static int builder_start(builder *b, const ttype_info *t, uint64_t seed, const char *arch,
                         const char *name)
{
    *b = (builder){.w = gguf_writer_create(), .seed = seed, .type = t->id};
    if (!b->w) {
        fprintf(stderr, "tern mkmodel: out of memory\n");
        return 1;
    }
    gguf_set_str(b->w, "general.architecture", arch);
    gguf_set_str(b->w, "general.name", name);
    gguf_set_u32(b->w, "general.file_type", (uint32_t)quant_llama_ftype(t->id));
    gguf_set_u32(b->w, "general.quantization_version", 2);
    return 0;
}

static void builder_free(builder *b)
{
    gguf_writer_destroy(b->w);
}

/* The decoder's keys under its architecture's prefix. phi2 (llama.cpp's) differs from llama
 * in its norm (LayerNorm epsilon, not RMS) and its partial rotary. */
static void text_hparams(gguf_writer *w, const arch *a)
{
    const char *pre = a->phi ? "phi2" : "llama";
    char key[96];
#define SET_U32(suffix, v)                                                                         \
    (snprintf(key, sizeof key, "%s." suffix, pre), gguf_set_u32(w, key, (uint32_t)(v)))
    SET_U32("vocab_size", a->vocab);
    SET_U32("context_length", a->ctx);
    SET_U32("embedding_length", a->dim);
    SET_U32("feed_forward_length", a->ffn);
    SET_U32("block_count", a->layers);
    SET_U32("attention.head_count", a->heads);
    SET_U32("attention.head_count_kv", a->kv_heads);
    snprintf(key, sizeof key, "%s.attention.%s", pre,
             a->phi ? "layer_norm_epsilon" : "layer_norm_rms_epsilon");
    gguf_set_f32(w, key, 1e-5f);
    snprintf(key, sizeof key, "%s.rope.freq_base", pre);
    gguf_set_f32(w, key, a->rope_base);
    SET_U32("rope.dimension_count", a->phi ? a->rot : a->dim / a->heads);
#undef SET_U32
}

/* The vocabulary, special tokens and chat template; false if out of memory. */
static bool text_tokenizer(gguf_writer *w, const arch *a)
{
    vocab v;
    int eou = 0;
    if (!vocab_make(&v, a->vocab, &eou)) {
        vocab_free(&v);
        return false;
    }
    gguf_set_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_set_str(w, "tokenizer.ggml.pre", "smollm");
    gguf_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v.tok, (uint64_t)v.n);
    gguf_set_arr(w, "tokenizer.ggml.token_type", GGUF_INT32, v.type, (uint64_t)v.n);
    gguf_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)v.merge, (uint64_t)v.n_merge);
    gguf_set_u32(w, "tokenizer.ggml.bos_token_id", 1);
    /* Phi's text ends at <|endoftext|> (id 0 here, 50256 in CodeGen's vocabulary) */
    gguf_set_u32(w, "tokenizer.ggml.eos_token_id", a->phi ? 0 : a->vision ? (uint32_t)eou : 2);
    gguf_set_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    gguf_set_u32(w, "tokenizer.ggml.padding_token_id", 2);
    gguf_set_bool(w, "tokenizer.ggml.add_bos_token", false);
    /* moondream2 has no chat template: its prompt is the family's (engine/prompt.c) */
    if (!a->phi)
        gguf_set_str(w, "tokenizer.chat_template", a->vision ? smolvlm_template : chatml_template);
    vocab_free(&v);
    return true;
}

/* A linear layer's weight and its bias. */
static void linear(builder *b, const char *name, int64_t in, int64_t out)
{
    char n[96];
    snprintf(n, sizeof n, "%s.weight", name);
    matrix(b, n, in, out);
    snprintf(n, sizeof n, "%s.bias", name);
    vec(b, n, out, 0.0f, WEIGHT_STD);
}

static void layer_norm(builder *b, const char *name, int64_t n)
{
    char s[96];
    snprintf(s, sizeof s, "%s.weight", name);
    vec(b, s, n, 1.0f, WEIGHT_STD);
    snprintf(s, sizeof s, "%s.bias", name);
    vec(b, s, n, 0.0f, WEIGHT_STD);
}

/* As llama.cpp's converter writes moondream2's decoder: q, k and v fused. */
static void phi_tensors(builder *b, const arch *a)
{
    int hd = a->dim / a->heads;
    int64_t ne[2] = {a->dim, a->vocab};
    add_tensor(b, "token_embd.weight", 2, ne, 0.0f, WEIGHT_STD, b->embd);
    for (int l = 0; l < a->layers; l++) {
        char n[64];
#define BLK(suffix) (snprintf(n, sizeof n, "blk.%d." suffix, l), n)
        layer_norm(b, BLK("attn_norm"), a->dim);
        linear(b, BLK("attn_qkv"), a->dim, (int64_t)(a->heads + 2 * a->kv_heads) * hd);
        linear(b, BLK("attn_output"), (int64_t)a->heads * hd, a->dim);
        linear(b, BLK("ffn_up"), a->dim, a->ffn);
        linear(b, BLK("ffn_down"), a->ffn, a->dim);
#undef BLK
    }
    layer_norm(b, "output_norm", a->dim);
    add_tensor(b, "output.weight", 2, ne, 0.0f, WEIGHT_STD, b->embd);
    vec(b, "output.bias", a->vocab, 0.0f, WEIGHT_STD);
}

static void text_tensors(builder *b, const arch *a)
{
    if (a->phi) {
        phi_tensors(b, a);
        return;
    }
    int hd = a->dim / a->heads;
    int64_t ne[2] = {a->dim, a->vocab};
    add_tensor(b, "token_embd.weight", 2, ne, 0.0f, WEIGHT_STD, b->embd);
    for (int l = 0; l < a->layers; l++) {
        char n[64];
#define BLK(suffix) (snprintf(n, sizeof n, "blk.%d." suffix, l), n)
        vec(b, BLK("attn_norm.weight"), a->dim, 1.0f, WEIGHT_STD);
        matrix(b, BLK("attn_q.weight"), a->dim, (int64_t)a->heads * hd);
        matrix(b, BLK("attn_k.weight"), a->dim, (int64_t)a->kv_heads * hd);
        matrix(b, BLK("attn_v.weight"), a->dim, (int64_t)a->kv_heads * hd);
        matrix(b, BLK("attn_output.weight"), (int64_t)a->heads * hd, a->dim);
        vec(b, BLK("ffn_norm.weight"), a->dim, 1.0f, WEIGHT_STD);
        matrix(b, BLK("ffn_gate.weight"), a->dim, a->ffn);
        matrix(b, BLK("ffn_up.weight"), a->dim, a->ffn);
        matrix(b, BLK("ffn_down.weight"), a->ffn, a->dim);
#undef BLK
    }
    vec(b, "output_norm.weight", a->dim, 1.0f, WEIGHT_STD);
    if (!a->tied) add_tensor(b, "output.weight", 2, ne, 0.0f, WEIGHT_STD, b->embd);
}

static int make_text(const arch *a, const ttype_info *t, uint64_t seed, const char *path)
{
    char name[96];
    snprintf(name, sizeof name, "tern-mkmodel-%s", a->like);
    builder b;
    if (builder_start(&b, t, seed, a->phi ? "phi2" : "llama", name) != 0) return 1;
    /* as tern quantize makes them: Q8_0 beside ternary and binary matrices */
    b.embd = (t->id == KT_F32 || t->id == KT_F16 || t->id == KT_BF16) ? t->id
             : (t->ternary || t->binary)                              ? KT_Q8_0
                                                                      : KT_F16;
    text_hparams(b.w, a);
    if (!text_tokenizer(b.w, a)) {
        builder_free(&b);
        fprintf(stderr, "tern mkmodel: out of memory building the vocabulary\n");
        return 1;
    }
    text_tensors(&b, a);

    char what[128];
    snprintf(what, sizeof what, "%s text model, layers %d, %s", a->like, a->layers, t->name);
    int rc = finish(&b, path, what);
    builder_free(&b);
    return rc;
}

static void mmproj_hparams(gguf_writer *w, const arch *a)
{
    gguf_set_bool(w, "clip.has_vision_encoder", true);
    gguf_set_str(w, "clip.projector_type", a->proj_ff ? "mlp" : "idefics3");
    gguf_set_bool(w, "clip.use_gelu", true);
    gguf_set_u32(w, "clip.vision.image_size", (uint32_t)a->image);
    gguf_set_u32(w, "clip.vision.patch_size", (uint32_t)a->patch);
    gguf_set_u32(w, "clip.vision.embedding_length", (uint32_t)a->v_dim);
    gguf_set_u32(w, "clip.vision.feed_forward_length", (uint32_t)a->v_ffn);
    gguf_set_u32(w, "clip.vision.block_count", (uint32_t)a->v_layers);
    gguf_set_u32(w, "clip.vision.attention.head_count", (uint32_t)a->v_heads);
    gguf_set_f32(w, "clip.vision.attention.layer_norm_epsilon", 1e-6f);
    gguf_set_u32(w, "clip.vision.projection_dim", (uint32_t)a->dim);
    const float half[3] = {0.5f, 0.5f, 0.5f};
    gguf_set_arr(w, "clip.vision.image_mean", GGUF_FLOAT32, half, 3);
    gguf_set_arr(w, "clip.vision.image_std", GGUF_FLOAT32, half, 3);
    if (!a->proj_ff) gguf_set_u32(w, "clip.vision.projector.scale_factor", (uint32_t)a->scale);
    /* llama.cpp runs an "mlp" file's block_count - 1 blocks unless told the last one */
    const int32_t last = a->v_layers;
    if (a->proj_ff) {
        gguf_set_arr(w, "clip.vision.feature_layer", GGUF_INT32, &last, 1);
        gguf_set_bool(w, "clip.has_llava_projector", true);
    }
}

static void mmproj_tensors(builder *b, const arch *a)
{
    int64_t vd = a->v_dim, np = (int64_t)(a->image / a->patch) * (a->image / a->patch);
    int64_t pe[4] = {a->patch, a->patch, 3, vd};
    add_tensor(b, "v.patch_embd.weight", 4, pe, 0.0f, WEIGHT_STD, KT_F32);
    vec(b, "v.patch_embd.bias", vd, 0.0f, WEIGHT_STD);
    int64_t pos[2] = {vd, np};
    add_tensor(b, "v.position_embd.weight", 2, pos, 0.0f, WEIGHT_STD, KT_F32);
    for (int l = 0; l < a->v_layers; l++) {
        char n[64];
#define BLK(suffix) (snprintf(n, sizeof n, "v.blk.%d." suffix, l), n)
        vec(b, BLK("ln1.weight"), vd, 1.0f, WEIGHT_STD);
        vec(b, BLK("ln1.bias"), vd, 0.0f, WEIGHT_STD);
        matrix(b, BLK("attn_q.weight"), vd, vd);
        vec(b, BLK("attn_q.bias"), vd, 0.0f, WEIGHT_STD);
        matrix(b, BLK("attn_k.weight"), vd, vd);
        vec(b, BLK("attn_k.bias"), vd, 0.0f, WEIGHT_STD);
        matrix(b, BLK("attn_v.weight"), vd, vd);
        vec(b, BLK("attn_v.bias"), vd, 0.0f, WEIGHT_STD);
        matrix(b, BLK("attn_out.weight"), vd, vd);
        vec(b, BLK("attn_out.bias"), vd, 0.0f, WEIGHT_STD);
        vec(b, BLK("ln2.weight"), vd, 1.0f, WEIGHT_STD);
        vec(b, BLK("ln2.bias"), vd, 0.0f, WEIGHT_STD);
        matrix(b, BLK("ffn_up.weight"), vd, a->v_ffn);
        vec(b, BLK("ffn_up.bias"), a->v_ffn, 0.0f, WEIGHT_STD);
        matrix(b, BLK("ffn_down.weight"), a->v_ffn, vd);
        vec(b, BLK("ffn_down.bias"), vd, 0.0f, WEIGHT_STD);
#undef BLK
    }
    vec(b, "v.post_ln.weight", vd, 1.0f, WEIGHT_STD);
    vec(b, "v.post_ln.bias", vd, 0.0f, WEIGHT_STD);
    if (a->proj_ff) {
        linear(b, "mm.0", vd, a->proj_ff);
        linear(b, "mm.2", a->proj_ff, a->dim);
    } else {
        matrix(b, "mm.model.fc.weight", vd * a->scale * a->scale, a->dim);
    }
}

static int make_mmproj(const arch *a, const ttype_info *t, uint64_t seed, const char *path)
{
    char name[96];
    snprintf(name, sizeof name, "tern-mkmodel-%s-mmproj", a->like);
    builder b;
    if (builder_start(&b, t, seed, "clip", name) != 0) return 1;
    mmproj_hparams(b.w, a);
    mmproj_tensors(&b, a);

    char what[128];
    snprintf(what, sizeof what, "%s vision projector, layers %d, %s", a->like, a->v_layers,
             t->name);
    int rc = finish(&b, path, what);
    builder_free(&b);
    return rc;
}

static const char usage_text[] =
    "usage: tern mkmodel --like ARCH --type TYPE -o FILE [--mmproj FILE]\n"
    "                    [--layers N] [--seed S]\n"
    "Writes a random-weight model with ARCH's tensor names, shapes and metadata.\n"
    "  -l, --like ARCH    tiny, smolvlm-256m, smolvlm-500m, smollm2-1.7b (Llama);\n"
    "                     phi-tiny, moondream2 (Phi: moondream2's decoder)\n"
    "  -t, --type TYPE    the weight matrices' type: tq2_0 tq1_0 q2_0 q1_0 q8_0\n"
    "                     f16 bf16 f32 (rows that do not fit fall back as in\n"
    "                     tern quantize)\n"
    "  -o, --output FILE  the text model\n"
    "      --mmproj FILE  also write the vision projector (VLM architectures)\n"
    "      --layers N     override the text model's block count\n"
    "      --seed S       random seed (default 1)\n"
    "  -h, --help         show this help\n";

int cmd_mkmodel(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"like", required_argument, NULL, 'l'},   {"layers", required_argument, NULL, 'n'},
        {"seed", required_argument, NULL, 's'},   {"type", required_argument, NULL, 't'},
        {"output", required_argument, NULL, 'o'}, {"mmproj", required_argument, NULL, 'm'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    const arch *like = NULL;
    const ttype_info *type = NULL;
    const char *out = NULL, *mmproj = NULL;
    long long layers = 0, seed = 1;
    int c;
    while ((c = cli_getopt(CMD, argc, argv, "l:t:o:h", longopts)) != -1) {
        switch (c) {
        case 'l':
            for (size_t i = 0; i < sizeof archs / sizeof archs[0]; i++)
                if (strcmp(archs[i].like, optarg) == 0) like = &archs[i];
            if (!like)
                return cli_usage_error(CMD,
                                       "unknown --like '%s' (tiny, smolvlm-256m, smolvlm-500m, "
                                       "smollm2-1.7b, phi-tiny, moondream2)",
                                       optarg);
            break;
        case 'n':
            if (!cli_parse_int(CMD, "--layers", optarg, 1, 1000, &layers)) return CLI_USAGE;
            break;
        case 's':
            if (!cli_parse_int(CMD, "--seed", optarg, 0, INT64_MAX, &seed)) return CLI_USAGE;
            break;
        case 't':
            type = ttype_by_name(optarg);
            if (!type) return cli_usage_error(CMD, "unknown type '%s'", optarg);
            break;
        case 'o': out = optarg; break;
        case 'm': mmproj = optarg; break;
        case 'h': fputs(usage_text, stdout); return CLI_OK;
        default: return CLI_USAGE;
        }
    }
    if (optind < argc) return cli_usage_error(CMD, "unexpected argument '%s'", argv[optind]);
    if (!like || !type || !out) return cli_usage_error(CMD, "need --like, --type and -o");
    if (mmproj && !like->vision)
        return cli_usage_error(CMD, "%s has no vision part for --mmproj", like->like);
    arch a = *like;
    if (layers) a.layers = (int)layers;
    int rc = make_text(&a, type, (uint64_t)seed, out);
    if (rc == 0 && mmproj) rc = make_mmproj(&a, type, (uint64_t)seed, mmproj);
    return rc;
}
