/* Byte-level BPE tokenizer: see tokenizer.h.
 *
 * Encoding is three steps: split the text into chunks (digits alone, then
 * the GPT-2 pattern), map each chunk's bytes to their single-byte tokens,
 * then apply merges lowest rank first (leftmost on ties, as Hugging Face's
 * BPE does) with a heap, so a long chunk costs O(n log n), not O(n^2). */
#include "engine/tokenizer.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/errmsg.h"
#include "engine/unicode_tables.h"

struct tok {
    int n;
    char *strs; /* token strings as stored in the file, back to back */
    uint32_t *str_off, *str_len;
    char *pieces; /* decoded bytes of every token */
    uint32_t *piece_off, *piece_len;
    uint8_t *types;
    int32_t *shash; /* open addressing: string -> id, -1 empty */
    uint32_t shash_mask;
    struct merge {
        uint64_t key;
        int32_t rank, result;
    } * mhash;
    uint32_t mhash_mask;
    int32_t byte_tok[256];
    int bos, eos;
    bool split_digits;
    size_t max_piece;
};

/* ---- Unicode ---- */

static bool in_ranges(const tok_range *r, int n, uint32_t cp)
{
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < r[mid].lo)
            hi = mid - 1;
        else if (cp > r[mid].hi)
            lo = mid + 1;
        else
            return true;
    }
    return false;
}

static bool is_letter(uint32_t cp)
{
    if (cp < 128) return (cp | 32) - 'a' < 26;
    return in_ranges(tok_letter_ranges, tok_letter_ranges_n, cp);
}

static bool is_number(uint32_t cp)
{
    if (cp < 128) return cp - '0' < 10;
    return in_ranges(tok_number_ranges, tok_number_ranges_n, cp);
}

static bool is_space(uint32_t cp)
{
    if (cp < 128) return cp == ' ' || (cp >= 9 && cp <= 13);
    return in_ranges(tok_space_ranges, tok_space_ranges_n, cp);
}

/* Decodes one UTF-8 character at s (n bytes left). An invalid or truncated
 * sequence yields one byte as a code point no class contains. */
#define CP_INVALID 0xFFFFFFFFu
static int utf8_next(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned c = s[0];
    int len;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if ((c & 0xE0) == 0xC0) {
        len = 2, v = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3, v = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        *cp = CP_INVALID;
        return 1;
    }
    if ((size_t)len > n) {
        *cp = CP_INVALID;
        return 1;
    }
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            *cp = CP_INVALID;
            return 1;
        }
        v = v << 6 | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) {
        *cp = CP_INVALID;
        return 1;
    }
    *cp = v;
    return len;
}

static int utf8_put(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    } else if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    } else if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static bool byte_is_printable(int b)
{
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

/* GPT-2's reversible byte <-> printable code point map: printable Latin-1
 * bytes stand for themselves, the other 68 take code points 256.. in order. */
static uint32_t byte_to_cp(int b)
{
    if (byte_is_printable(b)) return (uint32_t)b;
    int n = 0;
    for (int i = 0; i < b; i++)
        if (!byte_is_printable(i)) n++;
    return 256u + (uint32_t)n;
}

int tok_byte_str(uint8_t b, char out[4])
{
    int k = utf8_put(byte_to_cp(b), out);
    assert(k < 4); /* byte_to_cp's code points need at most two bytes */
    out[k] = 0;
    return k;
}

/* ---- hash maps ---- */

static uint32_t hash_bytes(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static uint32_t hash_u64(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return (uint32_t)k;
}

static int find_str(const tok *t, const char *s, size_t n)
{
    for (uint32_t i = hash_bytes(s, n) & t->shash_mask;; i = (i + 1) & t->shash_mask) {
        int32_t id = t->shash[i];
        if (id < 0) return -1;
        if (t->str_len[id] == n && !memcmp(t->strs + t->str_off[id], s, n)) return id;
    }
}

static const struct merge *find_merge(const tok *t, int32_t a, int32_t b)
{
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (uint32_t i = hash_u64(key) & t->mhash_mask;; i = (i + 1) & t->mhash_mask) {
        const struct merge *m = &t->mhash[i];
        if (m->rank < 0) return NULL;
        if (m->key == key) return m;
    }
}

static uint32_t pow2_above(uint64_t n)
{
    uint32_t c = 16;
    while (c < 2 * n)
        c *= 2;
    return c;
}

/* ---- loading ---- */

/* byte_to_cp's code points are all below this. */
#define BYTE_CP_END 324

static int get_id(const gguf_file *f, const char *key, int n)
{
    uint64_t v;
    if (!gguf_get_u64(f, key, &v) || v >= (uint64_t)n) return -1;
    return (int)v;
}

static int out_of_memory(const gguf_file *f, char *err, size_t errlen)
{
    eng_seterr(err, errlen, "%s: out of memory loading the tokenizer", gguf_path(f));
    return -1;
}

/* Only byte-level BPE; tokenizer.ggml.pre says whether digits split. */
static int read_kind(const gguf_file *f, bool *split_digits, char *err, size_t errlen)
{
    const char *path = gguf_path(f);
    const char *model = gguf_get_str(f, "tokenizer.ggml.model");
    if (!model || strcmp(model, "gpt2") != 0) {
        eng_seterr(
            err, errlen,
            "%s: tokenizer.ggml.model is %s%s%s, only \"gpt2\" (byte-level BPE) is supported", path,
            model ? "\"" : "", model ? model : "missing", model ? "\"" : "");
        return -1;
    }
    const char *pre = gguf_get_str(f, "tokenizer.ggml.pre");
    if (!pre || !strcmp(pre, "smollm")) {
        *split_digits = true;
    } else if (!strcmp(pre, "gpt2") || !strcmp(pre, "gpt-2") || !strcmp(pre, "default") ||
               !strcmp(pre, "phi-2")) { /* phi-2: CodeGen's (moondream2's), GPT-2's regex */
        *split_digits = false;
    } else {
        eng_seterr(err, errlen,
                   "%s: tokenizer.ggml.pre \"%s\" is not supported (smollm, gpt-2, phi-2 are)",
                   path, pre);
        return -1;
    }
    return 0;
}

/* Key indexes of the tokenizer's arrays; types is -1 when the file has
 * none (every token is then normal). */
typedef struct {
    int tokens, types, merges;
} tok_keys;

static int find_arrays(const gguf_file *f, tok_keys *k, char *err, size_t errlen)
{
    const char *path = gguf_path(f);
    k->tokens = gguf_find_key(f, "tokenizer.ggml.tokens");
    int kt = k->tokens;
    if (kt < 0 || gguf_kv_type(f, kt) != GGUF_ARRAY || gguf_arr_type(f, kt) != GGUF_STRING ||
        gguf_arr_len(f, kt) == 0 || gguf_arr_len(f, kt) > (1u << 24)) {
        eng_seterr(err, errlen, "%s: tokenizer.ggml.tokens must be a non-empty array of strings",
                   path);
        return -1;
    }
    int n = (int)gguf_arr_len(f, kt);
    k->types = gguf_find_key(f, "tokenizer.ggml.token_type");
    int ky = k->types;
    if (ky >= 0 && (gguf_arr_type(f, ky) != GGUF_INT32 || gguf_arr_len(f, ky) != (uint64_t)n)) {
        eng_seterr(err, errlen, "%s: tokenizer.ggml.token_type must be %d int32 values", path, n);
        return -1;
    }
    k->merges = gguf_find_key(f, "tokenizer.ggml.merges");
    int km = k->merges;
    if (km < 0 || gguf_kv_type(f, km) != GGUF_ARRAY || gguf_arr_type(f, km) != GGUF_STRING) {
        eng_seterr(err, errlen, "%s: tokenizer.ggml.merges must be an array of strings", path);
        return -1;
    }
    return 0;
}

/* A tok with every array sized for the file's tokens and merges and both
 * hash maps empty; NULL if out of memory. */
static tok *tok_alloc(const gguf_file *f, const tok_keys *k)
{
    int n = (int)gguf_arr_len(f, k->tokens);
    uint64_t n_merges = gguf_arr_len(f, k->merges);
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        size_t len;
        gguf_arr_str(f, k->tokens, (uint64_t)i, &len);
        total += len;
    }
    tok *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->n = n;
    t->strs = malloc(total + 1);
    t->str_off = malloc((size_t)n * sizeof *t->str_off);
    t->str_len = malloc((size_t)n * sizeof *t->str_len);
    t->types = malloc((size_t)n);
    t->pieces = malloc(total + 1); /* a decoded piece is never longer than its string */
    t->piece_off = malloc((size_t)n * sizeof *t->piece_off);
    t->piece_len = malloc((size_t)n * sizeof *t->piece_len);
    t->shash_mask = pow2_above((uint64_t)n) - 1;
    t->shash = malloc(((size_t)t->shash_mask + 1) * sizeof *t->shash);
    t->mhash_mask = pow2_above(n_merges) - 1;
    t->mhash = malloc(((size_t)t->mhash_mask + 1) * sizeof *t->mhash);
    if (!t->strs || !t->str_off || !t->str_len || !t->types || !t->pieces || !t->piece_off ||
        !t->piece_len || !t->shash || !t->mhash) {
        tok_free(t);
        return NULL;
    }
    memset(t->shash, 0xFF, ((size_t)t->shash_mask + 1) * sizeof *t->shash);
    for (uint32_t i = 0; i <= t->mhash_mask; i++)
        t->mhash[i].rank = -1;
    return t;
}

/* The bytes a token stands for, written to out; returns their count.
 * Normal tokens are byte-level encoded; added ones are raw text. */
static size_t decode_piece(const int16_t *cp_to_byte, const char *s, size_t len, int32_t type,
                           char *out)
{
    size_t w = 0;
    if (type == TOK_TYPE_NORMAL || type == TOK_TYPE_BYTE || type == TOK_TYPE_UNKNOWN) {
        for (size_t p = 0; p < len;) {
            uint32_t cp;
            int k = utf8_next((const unsigned char *)s + p, len - p, &cp);
            if (cp < BYTE_CP_END && cp_to_byte[cp] >= 0) {
                out[w++] = (char)cp_to_byte[cp];
            } else {
                memcpy(out + w, s + p, (size_t)k);
                w += (size_t)k;
            }
            p += (size_t)k;
        }
    } else if (type != TOK_TYPE_UNUSED) {
        memcpy(out, s, len);
        w = len;
    }
    assert(w <= len);
    return w;
}

/* Adds token id (its string already stored) to the string map; the first
 * id wins for duplicate strings. */
static void index_string(tok *t, int id)
{
    const char *s = t->strs + t->str_off[id];
    size_t len = t->str_len[id];
    if (find_str(t, s, len) >= 0) return;
    uint32_t h = hash_bytes(s, len) & t->shash_mask;
    while (t->shash[h] >= 0)
        h = (h + 1) & t->shash_mask;
    t->shash[h] = id;
}

static int32_t token_type(const gguf_file *f, int key, int i)
{
    int32_t ty = TOK_TYPE_NORMAL;
    if (key >= 0) memcpy(&ty, (const char *)gguf_arr_data(f, key) + 4 * (size_t)i, 4);
    return ty;
}

/* Copies every token's string, type and decoded piece into t. */
static void load_tokens(tok *t, const gguf_file *f, const tok_keys *k)
{
    int16_t cp_to_byte[BYTE_CP_END]; /* the inverse of byte_to_cp, -1 elsewhere */
    memset(cp_to_byte, 0xFF, sizeof cp_to_byte);
    for (int b = 0; b < 256; b++) {
        assert(byte_to_cp(b) < BYTE_CP_END);
        cp_to_byte[byte_to_cp(b)] = (int16_t)b;
    }
    size_t off = 0, poff = 0;
    for (int i = 0; i < t->n; i++) {
        size_t len;
        const char *s = gguf_arr_str(f, k->tokens, (uint64_t)i, &len);
        memcpy(t->strs + off, s, len);
        t->str_off[i] = (uint32_t)off;
        t->str_len[i] = (uint32_t)len;
        off += len;
        int32_t ty = token_type(f, k->types, i);
        t->types[i] = (uint8_t)ty;
        t->piece_off[i] = (uint32_t)poff;
        poff += decode_piece(cp_to_byte, s, len, ty, t->pieces + poff);
        t->piece_len[i] = (uint32_t)(poff - t->piece_off[i]);
        if (t->piece_len[i] > t->max_piece) t->max_piece = t->piece_len[i];
        index_string(t, i);
    }
}

/* The single-byte token of each byte, -1 where the vocabulary has none. */
static void map_bytes(tok *t)
{
    for (int b = 0; b < 256; b++) {
        char u[4];
        int k = tok_byte_str((uint8_t)b, u);
        t->byte_tok[b] = find_str(t, u, (size_t)k);
    }
}

static void add_merge(tok *t, int32_t a, int32_t b, int32_t result, int32_t rank)
{
    assert(a >= 0 && a < t->n && b >= 0 && b < t->n && result >= 0 && result < t->n);
    if (find_merge(t, a, b)) return; /* the first (lowest) rank wins */
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    uint32_t h = hash_u64(key) & t->mhash_mask;
    while (t->mhash[h].rank >= 0)
        h = (h + 1) & t->mhash_mask;
    t->mhash[h] = (struct merge){key, rank, result};
}

/* Merges "A B" -> (id A, id B) -> rank and the id of "AB". Merges whose
 * parts or result are not tokens can never apply and are skipped. */
static int load_merges(tok *t, const gguf_file *f, int km, char *err, size_t errlen)
{
    char *buf = NULL; /* "AB" */
    size_t cap = 0;
    int rc = 0;
    for (uint64_t r = 0; r < gguf_arr_len(f, km); r++) {
        size_t len;
        const char *s = gguf_arr_str(f, km, r, &len);
        const char *sp = memchr(s, ' ', len);
        if (!sp) {
            eng_seterr(err, errlen, "%s: merge %llu has no space", gguf_path(f),
                       (unsigned long long)r);
            rc = -1;
            break;
        }
        size_t la = (size_t)(sp - s), lb = len - la - 1;
        if (len > cap) {
            char *nb = realloc(buf, 2 * len);
            if (!nb) {
                rc = out_of_memory(f, err, errlen);
                break;
            }
            buf = nb;
            cap = 2 * len;
        }
        memcpy(buf, s, la);
        memcpy(buf + la, sp + 1, lb);
        int a = find_str(t, s, la), b = find_str(t, sp + 1, lb), c = find_str(t, buf, la + lb);
        if (a >= 0 && b >= 0 && c >= 0) add_merge(t, a, b, c, (int32_t)r);
    }
    free(buf);
    return rc;
}

int tok_load(const gguf_file *f, tok **out, char *err, size_t errlen)
{
    *out = NULL;
    bool split_digits;
    tok_keys k;
    if (read_kind(f, &split_digits, err, errlen) != 0 || find_arrays(f, &k, err, errlen) != 0)
        return -1;
    tok *t = tok_alloc(f, &k);
    if (!t) return out_of_memory(f, err, errlen);
    t->split_digits = split_digits;
    load_tokens(t, f, &k);
    map_bytes(t);
    if (load_merges(t, f, k.merges, err, errlen) != 0) {
        tok_free(t);
        return -1;
    }
    t->bos = get_id(f, "tokenizer.ggml.bos_token_id", t->n);
    t->eos = get_id(f, "tokenizer.ggml.eos_token_id", t->n);
    *out = t;
    return 0;
}

void tok_free(tok *t)
{
    if (!t) return;
    free(t->strs);
    free(t->str_off);
    free(t->str_len);
    free(t->types);
    free(t->pieces);
    free(t->piece_off);
    free(t->piece_len);
    free(t->shash);
    free(t->mhash);
    free(t);
}

int tok_n_vocab(const tok *t)
{
    return t->n;
}

int tok_bos(const tok *t)
{
    return t->bos;
}

int tok_eos(const tok *t)
{
    return t->eos;
}

tok_type tok_type_of(const tok *t, int id)
{
    return id >= 0 && id < t->n ? (tok_type)t->types[id] : TOK_TYPE_UNUSED;
}

int tok_special(const tok *t, const char *name)
{
    return find_str(t, name, strlen(name));
}

/* ---- encoding ---- */

typedef struct {
    int32_t rank, left, a, b; /* pair (a, b) starting at symbol `left` */
} cand;

typedef struct {
    int32_t *id, *prev, *next;
    cand *heap;
    int n_heap, cap; /* cap: symbols (heap holds at most 2x) */
} bpe_work;

static bool cand_less(const cand *x, const cand *y)
{
    return x->rank < y->rank || (x->rank == y->rank && x->left < y->left);
}

static void heap_push(bpe_work *w, cand c)
{
    assert(w->n_heap < 3 * w->cap); /* reserve's bound on candidates */
    int i = w->n_heap++;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!cand_less(&c, &w->heap[p])) break;
        w->heap[i] = w->heap[p];
        i = p;
    }
    w->heap[i] = c;
}

static cand heap_pop(bpe_work *w)
{
    cand top = w->heap[0], last = w->heap[--w->n_heap];
    int i = 0;
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        const cand *best = &last;
        if (l < w->n_heap && cand_less(&w->heap[l], best)) m = l, best = &w->heap[l];
        if (r < w->n_heap && cand_less(&w->heap[r], best)) m = r;
        if (m == i) break;
        w->heap[i] = w->heap[m];
        i = m;
    }
    if (w->n_heap > 0) w->heap[i] = last;
    return top;
}

static void try_pair(const tok *t, bpe_work *w, int left)
{
    if (left < 0 || w->next[left] < 0) return;
    int right = w->next[left];
    const struct merge *m = find_merge(t, w->id[left], w->id[right]);
    if (m) heap_push(w, (cand){m->rank, left, w->id[left], w->id[right]});
}

static int reserve(bpe_work *w, int n)
{
    if (n <= w->cap) return 0;
    int c = w->cap ? w->cap : 64;
    while (c < n)
        c *= 2;
    int32_t *id = realloc(w->id, (size_t)c * sizeof *id);
    if (id) w->id = id;
    int32_t *pv = realloc(w->prev, (size_t)c * sizeof *pv);
    if (pv) w->prev = pv;
    int32_t *nx = realloc(w->next, (size_t)c * sizeof *nx);
    if (nx) w->next = nx;
    /* every merge pushes at most 2 candidates, plus n-1 at the start */
    cand *h = realloc(w->heap, (size_t)c * 3 * sizeof *h);
    if (h) w->heap = h;
    if (!id || !pv || !nx || !h) return -1;
    w->cap = c;
    return 0;
}

/* BPE on one chunk; appends ids to out (up to cap), returns count or -1. */
static int bpe_chunk(const tok *t, bpe_work *w, const unsigned char *s, size_t n, int32_t *out,
                     int cap, int have)
{
    if (reserve(w, (int)n) != 0) return -1;
    int m = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_tok[s[i]];
        if (id < 0) continue; /* a vocabulary without this byte cannot spell it */
        w->id[m] = id;
        w->prev[m] = m - 1;
        w->next[m] = -1;
        if (m > 0) w->next[m - 1] = m;
        m++;
    }
    /* the whole chunk may itself be a token: the common case, done at once */
    w->n_heap = 0;
    for (int i = 0; i + 1 < m; i++)
        try_pair(t, w, i);
    while (w->n_heap > 0) {
        cand c = heap_pop(w);
        int r = w->next[c.left];
        /* stale: a neighbour was merged away since this pair was queued */
        if (w->id[c.left] != c.a || r < 0 || w->id[r] != c.b) continue;
        const struct merge *mg = find_merge(t, c.a, c.b);
        assert(mg); /* try_pair queued the pair because the merge exists */
        w->id[c.left] = mg->result;
        w->id[r] = -1;
        w->next[c.left] = w->next[r];
        if (w->next[r] >= 0) w->prev[w->next[r]] = c.left;
        try_pair(t, w, w->prev[c.left]);
        try_pair(t, w, c.left);
    }
    int k = have;
    for (int i = m > 0 ? 0 : -1; i >= 0; i = w->next[i]) {
        if (k < cap) out[k] = w->id[i];
        k++;
    }
    return k - have;
}

/* The GPT-2 pattern at code point i of a chunk-free segment [i, e): returns
 * the end of the match. cp[] holds code points. */
static int gpt2_match(const uint32_t *cp, int i, int e)
{
    uint32_t c = cp[i];
    if (c == '\'' && i + 1 < e) {
        uint32_t c1 = cp[i + 1];
        if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return i + 2;
        if (i + 2 < e) {
            uint32_t c2 = cp[i + 2];
            if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l'))
                return i + 3;
        }
    }
    int j = (c == ' ' && i + 1 < e) ? i + 1 : i;
    uint32_t d = cp[j];
    if (is_letter(d)) {
        while (j < e && is_letter(cp[j]))
            j++;
        return j;
    }
    if (is_number(d)) {
        while (j < e && is_number(cp[j]))
            j++;
        return j;
    }
    if (!is_space(d)) {
        while (j < e && !is_space(cp[j]) && !is_letter(cp[j]) && !is_number(cp[j]))
            j++;
        return j;
    }
    /* \s+(?!\S) takes a run of spaces but leaves the last one to prefix the
     * word that follows; a lone space before a word falls to \s+. */
    int k = i;
    while (k < e && is_space(cp[k]))
        k++;
    if (k == e || k - i == 1) return k;
    return k - 1;
}

/* Calls fn on each chunk [a, b) of the text; stops on a negative return. */
typedef int (*chunk_fn)(void *ctx, size_t a, size_t b);

static int for_each_chunk(const tok *t, const unsigned char *s, size_t len, chunk_fn fn, void *ctx)
{
    uint32_t *cp = malloc((len + 1) * sizeof *cp);
    size_t *off = malloc((len + 1) * sizeof *off);
    if (!cp || !off) {
        free(cp);
        free(off);
        return -1;
    }
    int n = 0;
    for (size_t p = 0; p < len;) {
        off[n] = p;
        p += (size_t)utf8_next(s + p, len - p, &cp[n]);
        n++;
    }
    off[n] = len;
    int rc = 0;
    for (int seg = 0; seg < n && rc >= 0;) {
        /* a segment ends before each digit; a digit is a segment alone */
        int e = seg + 1;
        if (!(t->split_digits && is_number(cp[seg])))
            while (e < n && !(t->split_digits && is_number(cp[e])))
                e++;
        for (int i = seg; i < e && rc >= 0;) {
            int k = gpt2_match(cp, i, e);
            rc = fn(ctx, off[i], off[k]);
            i = k;
        }
        seg = e;
    }
    free(cp);
    free(off);
    return rc;
}

typedef struct {
    const tok *t;
    const unsigned char *s;
    bpe_work w;
    int32_t *ids;
    int cap, count;
    size_t *ends;
} enc_ctx;

static int enc_chunk(void *ctx, size_t a, size_t b)
{
    enc_ctx *c = ctx;
    int got = bpe_chunk(c->t, &c->w, c->s + a, b - a, c->ids, c->cap, c->count);
    if (got < 0) return -1;
    c->count += got;
    return 0;
}

int tok_encode(const tok *t, const char *text, size_t len, int32_t *ids, int cap)
{
    enc_ctx c = {.t = t, .s = (const unsigned char *)text, .ids = ids, .cap = cap};
    int rc = for_each_chunk(t, c.s, len, enc_chunk, &c);
    free(c.w.id);
    free(c.w.prev);
    free(c.w.next);
    free(c.w.heap);
    return rc < 0 ? -1 : c.count;
}

static int split_chunk(void *ctx, size_t a, size_t b)
{
    enc_ctx *c = ctx;
    (void)a;
    if (c->count < c->cap) c->ends[c->count] = b;
    c->count++;
    return 0;
}

int tok_pretokenize(const tok *t, const char *text, size_t len, size_t *ends, int cap)
{
    enc_ctx c = {.t = t, .ends = ends, .cap = cap};
    return for_each_chunk(t, (const unsigned char *)text, len, split_chunk, &c) < 0 ? -1 : c.count;
}

/* ---- decoding ---- */

const char *tok_piece(const tok *t, int id, bool special, size_t *len)
{
    if (id < 0 || id >= t->n || (!special && t->types[id] == TOK_TYPE_CONTROL)) {
        *len = 0;
        return "";
    }
    *len = t->piece_len[id];
    return t->pieces + t->piece_off[id];
}

size_t tok_decode(const tok *t, const int32_t *ids, int n, bool special, char *out, size_t cap)
{
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        size_t len;
        const char *p = tok_piece(t, ids[i], special, &len);
        if (total < cap) memcpy(out + total, p, total + len < cap ? len : cap - total);
        total += len;
    }
    if (cap > 0) out[total < cap ? total : cap - 1] = 0;
    return total;
}

struct tok_stream {
    const tok *t;
    unsigned char held[4];
    int n_held;
    unsigned char *join; /* held bytes + the new piece */
    char *out;           /* room for all of join as U+FFFD */
};

tok_stream *tok_stream_create(const tok *t)
{
    tok_stream *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->t = t;
    s->join = malloc(t->max_piece + 4);
    s->out = malloc(3 * (t->max_piece + 4) + 1);
    if (!s->join || !s->out) {
        tok_stream_destroy(s);
        return NULL;
    }
    return s;
}

void tok_stream_destroy(tok_stream *s)
{
    if (!s) return;
    free(s->join);
    free(s->out);
    free(s);
}

void tok_stream_reset(tok_stream *s)
{
    s->n_held = 0;
}

/* Length a UTF-8 sequence starting with lead byte c must have, 0 if c
 * cannot start one. */
static int seq_len(unsigned char c)
{
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return 2;
    if ((c & 0xF0) == 0xE0) return 3;
    if (c >= 0xF0 && c <= 0xF4) return 4;
    return 0;
}

static size_t put_fffd(char *o)
{
    memcpy(o, "\xEF\xBF\xBD", 3);
    return 3;
}

/* Emits the complete characters of b[0..n); keeps an incomplete tail. */
static size_t stream_bytes(tok_stream *s, const unsigned char *b, size_t n, char *o)
{
    size_t w = 0;
    for (size_t i = 0; i < n;) {
        int L = seq_len(b[i]);
        if (L == 0) {
            w += put_fffd(o + w);
            i++;
            continue;
        }
        if (i + (size_t)L > n) {
            /* could still complete: check what we have is a valid prefix */
            uint32_t cp;
            unsigned char tmp[4] = {0};
            size_t have = n - i;
            memcpy(tmp, b + i, have);
            bool ok = true;
            for (size_t k = 1; k < have; k++)
                ok = ok && (tmp[k] & 0xC0) == 0x80;
            /* a prefix that rules out every completion (overlong, surrogate,
             * past U+10FFFF) is broken already */
            if (ok && have >= 2) {
                for (size_t k = have; k < (size_t)L; k++)
                    tmp[k] = 0x80;
                ok = utf8_next(tmp, (size_t)L, &cp) == L;
                if (!ok) {
                    for (size_t k = have; k < (size_t)L; k++)
                        tmp[k] = 0xBF;
                    ok = utf8_next(tmp, (size_t)L, &cp) == L;
                }
            }
            if (ok) {
                memcpy(s->held, b + i, have);
                s->n_held = (int)have;
                return w;
            }
            w += put_fffd(o + w);
            i++;
            continue;
        }
        uint32_t cp;
        if (utf8_next(b + i, (size_t)L, &cp) == L) {
            memcpy(o + w, b + i, (size_t)L);
            w += (size_t)L;
            i += (size_t)L;
        } else {
            w += put_fffd(o + w);
            i++;
        }
    }
    return w;
}

const char *tok_stream_push(tok_stream *s, int id, size_t *len)
{
    size_t plen;
    const char *p = tok_piece(s->t, id, false, &plen);
    size_t n = (size_t)s->n_held;
    memcpy(s->join, s->held, n);
    memcpy(s->join + n, p, plen);
    s->n_held = 0;
    size_t w = stream_bytes(s, s->join, n + plen, s->out);
    s->out[w] = 0;
    *len = w;
    return s->out;
}

const char *tok_stream_flush(tok_stream *s, size_t *len)
{
    size_t w = 0;
    for (int i = 0; i < s->n_held; i++)
        w += put_fffd(s->out + w);
    s->n_held = 0;
    s->out[w] = 0;
    *len = w;
    return s->out;
}
