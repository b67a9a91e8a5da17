/* JSON Schema subset -> a byte-level pushdown automaton; token masks by walking a token trie.
 *
 * The automaton is deterministic: every schema node knows which first bytes can begin its value
 * (anyOf branches must begin differently), and a value that may end (a number, an enum value)
 * keeps the byte when it can continue with it and otherwise hands it to its parent. Its state is
 * one frame (the innermost value being written) plus a linked stack of parent frames in an arena
 * owned by the grammar_state: a step copies only the current frame, pushes append to the arena
 * and pops follow the parent link, so a trie walk can branch from any state by copying one frame
 * and restoring the arena's length. Accepted tokens compact the live stack to the arena's front.
 *
 * Output is compact JSON: no whitespace anywhere, object properties in the schema's order. */
#include "engine/grammar.h"

#include <assert.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    G_MAX_DEPTH = 32,  /* nesting of values (and of schemas) */
    G_MAX_SET = 64,    /* properties per object, values per enum: a 64-bit candidate mask */
    G_MAX_BRANCH = 16, /* anyOf branches */
    G_INT_DIGITS = 15, /* an integer's digits: the model cannot loop on digits */
    G_NUM_DIGITS = 12, /* a number's integer digits (micro-units stay in int64) */
    G_FRAC_DIGITS = 6,
    G_EXP_DIGITS = 3,
    G_EOF = 256,     /* the byte after the last one: completes the value or is rejected */
    G_BIG = 1 << 28, /* "too many bytes": shortest completions saturate here */
};
#define G_MICRO 1000000LL

typedef enum { K_ROOT, K_ANYOF, K_OBJ, K_ANYOBJ, K_ARR, K_STR, K_INT, K_NUM, K_LIT } gkind;

typedef struct gnode gnode;
struct gnode {
    gkind kind;
    gnode *next_alloc;
    uint8_t first[32]; /* bytes that can begin this value */
    /* K_OBJ: keys as JSON text with quotes; next_req[i]: first required index >= i, or n */
    int n;
    char **text;
    size_t *len;
    gnode **sub;   /* K_OBJ: values; K_ANYOF: branches */
    int *next_req; /* n + 1 entries */
    /* K_ARR: items (K_ROOT: the value); K_ANYOBJ: the key's node in items, values in item2 */
    gnode *items, *item2;
    int min, max; /* K_ARR items, K_STR characters; max < 0: none */
    int height;   /* nesting of containers in its values (a free container counts 1) */
    /* The fewest bytes of a complete value (-1: not known yet, -2: being computed). K_OBJ, per
     * property index i: tail[i], the required properties from i on, each with its ',', and the
     * '}'; head[i], after a ',' with i next: the cheapest property that may come, and its tail. */
    int minlen;
    int *tail, *head;
    /* K_INT units, K_NUM micro-units */
    bool has_lo, has_hi;
    int64_t lo, hi;
};

struct grammar {
    gnode *nodes; /* every node, through next_alloc */
    gnode *root;  /* K_ROOT */
};

static bool first_has(const gnode *n, int c)
{
    return c < 256 && (n->first[c >> 3] >> (c & 7) & 1);
}

static void first_add(gnode *n, int c)
{
    n->first[c >> 3] |= (uint8_t)(1u << (c & 7));
}

/* ---- compiling ---- */

typedef struct {
    const cJSON *schema; /* a $defs entry */
    gnode *node;         /* compiled, or NULL */
    bool busy;           /* being compiled: a $ref to it now is recursion */
} gdef;

typedef struct {
    grammar *g;
    const cJSON *doc;
    char *err;
    size_t errlen;
    gdef defs[64];
    int n_defs;
    gnode *any; /* "{}": shared */
} cctx;

static void fail(cctx *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (c->errlen) vsnprintf(c->err, c->errlen, fmt, ap);
    va_end(ap);
}

/* A schema's JSON pointer in messages. */
static const char *where(const char *path)
{
    return *path ? path : "the root";
}

static gnode *new_node(cctx *c, gkind k)
{
    gnode *n = calloc(1, sizeof *n);
    if (!n) {
        fail(c, "out of memory");
        return NULL;
    }
    n->kind = k;
    n->max = -1;
    n->minlen = -1;
    n->next_alloc = c->g->nodes;
    c->g->nodes = n;
    return n;
}

static void free_node(gnode *n)
{
    for (int i = 0; n->text && i < n->n; i++)
        free(n->text[i]);
    free(n->text);
    free(n->len);
    free(n->sub);
    free(n->next_req);
    free(n->tail);
    free(n->head);
    free(n);
}

/* Room for n entries of text/len/sub (and next_req, tail, head for objects). */
static bool node_arrays(cctx *c, gnode *n, int count)
{
    n->text = calloc((size_t)count + 1, sizeof *n->text);
    n->len = calloc((size_t)count + 1, sizeof *n->len);
    n->sub = calloc((size_t)count + 1, sizeof *n->sub);
    n->next_req = calloc((size_t)count + 1, sizeof *n->next_req);
    n->tail = calloc((size_t)count + 1, sizeof *n->tail);
    n->head = calloc((size_t)count + 1, sizeof *n->head);
    if (!n->text || !n->len || !n->sub || !n->next_req || !n->tail || !n->head) {
        fail(c, "out of memory");
        return false;
    }
    return true;
}

/* A literal set: enum/const values, booleans, null. Takes ownership of texts. */
static gnode *lit_node(cctx *c, char **texts, int count)
{
    gnode *n = new_node(c, K_LIT);
    if (!n || !node_arrays(c, n, count)) {
        for (int i = 0; i < count; i++)
            free(texts[i]);
        return NULL;
    }
    for (int i = 0; i < count; i++) {
        n->text[i] = texts[i];
        n->len[i] = strlen(texts[i]);
        first_add(n, (unsigned char)texts[i][0]);
    }
    n->n = count;
    return n;
}

static gnode *words_node(cctx *c, const char *a, const char *b, const char *d)
{
    const char *w[3] = {a, b, d};
    char *texts[3];
    int count = 0;
    for (int i = 0; i < 3 && w[i]; i++)
        if (!(texts[count++] = strdup(w[i]))) {
            for (int k = 0; k < count - 1; k++)
                free(texts[k]);
            fail(c, "out of memory");
            return NULL;
        }
    return lit_node(c, texts, count);
}

static gnode *str_node(cctx *c, int min, int max)
{
    gnode *n = new_node(c, K_STR);
    if (!n) return NULL;
    n->min = min;
    n->max = max;
    first_add(n, '"');
    return n;
}

static gnode *num_node(cctx *c, gkind k)
{
    gnode *n = new_node(c, k);
    if (!n) return NULL;
    first_add(n, '-');
    for (int d = '0'; d <= '9'; d++)
        first_add(n, d);
    return n;
}

static gnode *arr_node(cctx *c, gnode *items, int min, int max)
{
    gnode *n = new_node(c, K_ARR);
    if (!n) return NULL;
    n->items = items;
    n->min = min;
    n->max = max;
    n->height = 1 + (items ? items->height : 0);
    first_add(n, '[');
    return n;
}

/* Branches must begin with different bytes: the first byte picks the branch. */
static gnode *anyof_node(cctx *c, gnode **br, int count, const char *path)
{
    for (int i = 0; i < count; i++)
        for (int k = 0; k < i; k++)
            for (int b = 0; b < 256; b++)
                if (first_has(br[i], b) && first_has(br[k], b)) {
                    fail(c,
                         "unsupported schema at %s: alternatives %d and %d can both begin with "
                         "'%c' (alternatives must differ in type or first character)",
                         where(path), k, i, b);
                    return NULL;
                }
    gnode *n = new_node(c, K_ANYOF);
    if (!n || !node_arrays(c, n, count)) return NULL;
    for (int i = 0; i < count; i++) {
        n->sub[i] = br[i];
        if (br[i]->height > n->height) n->height = br[i]->height;
        for (int k = 0; k < 32; k++)
            n->first[k] |= br[i]->first[k];
    }
    n->n = count;
    return n;
}

/* "{}": any JSON value (containers nest up to G_MAX_DEPTH). */
static gnode *any_node(cctx *c)
{
    if (c->any) return c->any;
    gnode *br[5];
    gnode *obj = new_node(c, K_ANYOBJ);
    if (!obj) return NULL;
    obj->height = 1;
    first_add(obj, '{');
    br[0] = obj;
    br[1] = arr_node(c, NULL, 0, -1);
    br[2] = str_node(c, 0, -1);
    br[3] = num_node(c, K_NUM);
    br[4] = words_node(c, "true", "false", "null");
    obj->items = str_node(c, 0, -1);
    if (!br[1] || !br[2] || !br[3] || !br[4] || !obj->items) return NULL;
    c->any = anyof_node(c, br, 5, "");
    if (!c->any) return NULL;
    br[1]->items = c->any;
    obj->item2 = c->any;
    return c->any;
}

static const char *const g_known[] = {
    "type",        "properties", "required",  "additionalProperties",
    "items",       "minItems",   "maxItems",  "enum",
    "const",       "minLength",  "maxLength", "minimum",
    "maximum",     "anyOf",      "$ref",      "$defs",
    "definitions",
};
/* Annotations: no effect on which values are valid. */
static const char *const g_ignored[] = {"title",    "description", "$schema", "$id",
                                        "$comment", "examples",    "default"};

static bool in_list(const char *k, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(k, list[i]) == 0) return true;
    return false;
}

/* path + "/" + key, with JSON pointer escapes. */
static void path_join(char *out, size_t cap, const char *path, const char *key)
{
    size_t w = (size_t)snprintf(out, cap, "%s/", path);
    for (const char *k = key; *k && w + 3 < cap; k++) {
        if (*k == '~' || *k == '/') {
            out[w++] = '~';
            out[w++] = *k == '~' ? '0' : '1';
        } else {
            out[w++] = *k;
        }
    }
    if (w < cap) out[w] = 0;
}

static gnode *compile(cctx *c, const cJSON *s, const char *path, int depth);

/* A non-negative integer keyword, or -1 (absent). -2 after an error. */
static int count_kw(cctx *c, const cJSON *s, const char *kw, const char *path)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(s, kw);
    if (!v) return -1;
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 1e6 ||
        v->valuedouble != floor(v->valuedouble)) {
        fail(c, "schema keyword \"%s\" at %s must be a non-negative integer", kw, where(path));
        return -2;
    }
    return (int)v->valuedouble;
}

/* minimum/maximum, as bounds in units of 1/scale, rounded inwards. */
static bool bounds_kw(cctx *c, const cJSON *s, gnode *n, int64_t scale, double limit,
                      const char *path)
{
    const char *kws[2] = {"minimum", "maximum"};
    for (int i = 0; i < 2; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(s, kws[i]);
        if (!v) continue;
        if (!cJSON_IsNumber(v) || fabs(v->valuedouble) > limit) {
            fail(c, "schema keyword \"%s\" at %s must be a number of magnitude at most %g", kws[i],
                 where(path), limit);
            return false;
        }
        double x = v->valuedouble * (double)scale;
        if (i == 0) {
            n->has_lo = true;
            n->lo = (int64_t)ceil(x - 1e-9 * fabs(x));
        } else {
            n->has_hi = true;
            n->hi = (int64_t)floor(x + 1e-9 * fabs(x));
        }
    }
    if (n->has_lo && n->has_hi && n->lo > n->hi) {
        fail(c, "no %s between minimum and maximum at %s", n->kind == K_INT ? "integer" : "number",
             where(path));
        return false;
    }
    return true;
}

static gnode *object_node(cctx *c, const cJSON *s, const char *path, int depth)
{
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(s, "properties");
    const cJSON *req = cJSON_GetObjectItemCaseSensitive(s, "required");
    const cJSON *add = cJSON_GetObjectItemCaseSensitive(s, "additionalProperties");
    char sub[512];
    if (add && !cJSON_IsBool(add)) {
        path_join(sub, sizeof sub, path, "additionalProperties");
        fail(c, "unsupported schema keyword \"additionalProperties\" (as a schema) at %s", sub);
        return NULL;
    }
    if (props && !cJSON_IsObject(props)) {
        fail(c, "\"properties\" at %s must be an object", where(path));
        return NULL;
    }
    if (req && !cJSON_IsArray(req)) {
        fail(c, "\"required\" at %s must be an array of names", where(path));
        return NULL;
    }
    int n = props ? cJSON_GetArraySize(props) : 0;
    if (n == 0 && !(req && cJSON_GetArraySize(req) > 0)) {
        if (cJSON_IsFalse(add)) return words_node(c, "{}", NULL, NULL);
        gnode *any = any_node(c);
        if (!any) return NULL;
        return any->sub[0]; /* the free object */
    }
    if (n > G_MAX_SET) {
        fail(c, "more than %d properties at %s", G_MAX_SET, where(path));
        return NULL;
    }
    const cJSON *r;
    cJSON_ArrayForEach(r, req)
    {
        if (!cJSON_IsString(r) || !cJSON_GetObjectItemCaseSensitive(props, r->valuestring)) {
            fail(c,
                 "\"required\" at %s names %s%s%s, which is not in \"properties\" (only listed "
                 "properties are generated)",
                 where(path), cJSON_IsString(r) ? "\"" : "a non-string",
                 cJSON_IsString(r) ? r->valuestring : "", cJSON_IsString(r) ? "\"" : "");
            return NULL;
        }
    }
    gnode *o = new_node(c, K_OBJ);
    if (!o || !node_arrays(c, o, n)) return NULL;
    first_add(o, '{');
    path_join(sub, sizeof sub, path, "properties");
    int i = 0;
    const cJSON *p;
    cJSON_ArrayForEach(p, props)
    {
        cJSON *key = cJSON_CreateString(p->string);
        char *text = key ? cJSON_PrintUnformatted(key) : NULL;
        cJSON_Delete(key);
        if (!text) {
            fail(c, "out of memory");
            return NULL;
        }
        o->text[i] = text;
        o->len[i] = strlen(text);
        o->n = i + 1;
        char ppath[512];
        path_join(ppath, sizeof ppath, sub, p->string);
        if (!(o->sub[i] = compile(c, p, ppath, depth + 1))) return NULL;
        if (1 + o->sub[i]->height > o->height) o->height = 1 + o->sub[i]->height;
        i++;
    }
    o->next_req[n] = n;
    for (int k = n - 1; k >= 0; k--) {
        const cJSON *pk = cJSON_GetArrayItem(props, k);
        bool required = false;
        cJSON_ArrayForEach(r, req) required |= strcmp(r->valuestring, pk->string) == 0;
        o->next_req[k] = required ? k : o->next_req[k + 1];
    }
    return o;
}

static const char *json_type_of(const cJSON *v)
{
    if (cJSON_IsString(v)) return "string";
    if (cJSON_IsBool(v)) return "boolean";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsObject(v)) return "object";
    if (cJSON_IsArray(v)) return "array";
    return v->valuedouble == floor(v->valuedouble) && fabs(v->valuedouble) < 1e15 ? "integer"
                                                                                  : "number";
}

static bool type_allows(const cJSON *type, const cJSON *v)
{
    if (!type) return true;
    const char *t = json_type_of(v);
    const cJSON *e;
    if (cJSON_IsString(type))
        return strcmp(type->valuestring, t) == 0 ||
               (strcmp(type->valuestring, "number") == 0 && strcmp(t, "integer") == 0);
    cJSON_ArrayForEach(e, type) if (cJSON_IsString(e) && type_allows(e, v)) return true;
    return false;
}

/* enum / const: the values' compact JSON texts. */
static gnode *enum_node(cctx *c, const cJSON *s, const char *path)
{
    const cJSON *en = cJSON_GetObjectItemCaseSensitive(s, "enum");
    const cJSON *cn = cJSON_GetObjectItemCaseSensitive(s, "const");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(s, "type");
    if (en && cn) {
        fail(c, "unsupported schema at %s: both \"enum\" and \"const\"", where(path));
        return NULL;
    }
    if (en && (!cJSON_IsArray(en) || cJSON_GetArraySize(en) == 0)) {
        fail(c, "\"enum\" at %s must be a non-empty array", where(path));
        return NULL;
    }
    if (en && cJSON_GetArraySize(en) > G_MAX_SET) {
        fail(c, "more than %d enum values at %s", G_MAX_SET, where(path));
        return NULL;
    }
    char *texts[G_MAX_SET];
    int count = 0;
    const cJSON *v;
    const cJSON *one = cn;
    for (v = en ? en->child : one; v; v = en ? v->next : NULL) {
        if (!type_allows(type, v)) continue;
        char *t = cJSON_PrintUnformatted(v);
        if (!t) {
            for (int i = 0; i < count; i++)
                free(texts[i]);
            fail(c, "out of memory");
            return NULL;
        }
        bool dup = false;
        for (int i = 0; i < count && !dup; i++)
            dup = strcmp(texts[i], t) == 0;
        if (dup)
            free(t);
        else
            texts[count++] = t;
    }
    if (count == 0) {
        fail(c, "no %s value at %s has the schema's \"type\"", en ? "enum" : "const", where(path));
        return NULL;
    }
    return lit_node(c, texts, count);
}

/* One type name's node, from the keywords that apply to it. */
static gnode *typed_node(cctx *c, const cJSON *s, const char *t, const char *path, int depth)
{
    char sub[512];
    if (strcmp(t, "object") == 0) return object_node(c, s, path, depth);
    if (strcmp(t, "array") == 0) {
        int min = count_kw(c, s, "minItems", path), max = count_kw(c, s, "maxItems", path);
        if (min == -2 || max == -2) return NULL;
        if (max >= 0 && min > max) {
            fail(c, "minItems is greater than maxItems at %s", where(path));
            return NULL;
        }
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(s, "items");
        gnode *items;
        path_join(sub, sizeof sub, path, "items");
        items = it ? compile(c, it, sub, depth + 1) : any_node(c);
        if (!items) return NULL;
        return arr_node(c, items, min < 0 ? 0 : min, max);
    }
    if (strcmp(t, "string") == 0) {
        int min = count_kw(c, s, "minLength", path), max = count_kw(c, s, "maxLength", path);
        if (min == -2 || max == -2) return NULL;
        if (max >= 0 && min > max) {
            fail(c, "minLength is greater than maxLength at %s", where(path));
            return NULL;
        }
        return str_node(c, min < 0 ? 0 : min, max);
    }
    if (strcmp(t, "integer") == 0 || strcmp(t, "number") == 0) {
        bool integer = t[0] == 'i';
        gnode *n = num_node(c, integer ? K_INT : K_NUM);
        if (!n || !bounds_kw(c, s, n, integer ? 1 : G_MICRO, integer ? 1e14 : 1e11, path))
            return NULL;
        return n;
    }
    if (strcmp(t, "boolean") == 0) return words_node(c, "true", "false", NULL);
    if (strcmp(t, "null") == 0) return words_node(c, "null", NULL, NULL);
    path_join(sub, sizeof sub, path, "type");
    fail(c, "unknown type \"%s\" at %s", t, sub);
    return NULL;
}

/* "#/$defs/name" or "#/definitions/name": compiled once, shared; recursion is an error. */
static gnode *ref_node(cctx *c, const cJSON *ref, const char *path, int depth)
{
    char sub[512];
    path_join(sub, sizeof sub, path, "$ref");
    const char *r = cJSON_IsString(ref) ? ref->valuestring : "";
    const char *name = NULL, *table = NULL;
    if (strncmp(r, "#/$defs/", 8) == 0) name = r + 8, table = "$defs";
    if (strncmp(r, "#/definitions/", 14) == 0) name = r + 14, table = "definitions";
    char key[256];
    size_t w = 0;
    for (const char *p = name; p && *p && w + 1 < sizeof key; p++) {
        if (p[0] == '~' && (p[1] == '0' || p[1] == '1')) {
            key[w++] = p[1] == '0' ? '~' : '/';
            p++;
        } else if (*p == '/') {
            name = NULL; /* only one level under $defs */
            break;
        } else {
            key[w++] = *p;
        }
    }
    key[w] = 0;
    const cJSON *defs = table ? cJSON_GetObjectItemCaseSensitive(c->doc, table) : NULL;
    const cJSON *target = name ? cJSON_GetObjectItemCaseSensitive(defs, key) : NULL;
    if (!target) {
        fail(c, "unsupported or unresolved $ref \"%s\" at %s (only \"#/$defs/NAME\")", r, sub);
        return NULL;
    }
    int i = 0;
    while (i < c->n_defs && c->defs[i].schema != target)
        i++;
    if (i == c->n_defs) {
        if (c->n_defs == (int)(sizeof c->defs / sizeof c->defs[0])) {
            fail(c, "too many $defs used at %s", sub);
            return NULL;
        }
        c->defs[c->n_defs++] = (gdef){.schema = target};
    }
    if (c->defs[i].node) return c->defs[i].node;
    if (c->defs[i].busy) {
        fail(c, "recursive $ref \"%s\" at %s is not supported", r, sub);
        return NULL;
    }
    c->defs[i].busy = true;
    char dpath[512];
    char tpath[300];
    snprintf(tpath, sizeof tpath, "/%s", table);
    path_join(dpath, sizeof dpath, tpath, key);
    gnode *n = compile(c, target, dpath, depth + 1);
    c->defs[i].busy = false;
    c->defs[i].node = n;
    return n;
}

static gnode *compile(cctx *c, const cJSON *s, const char *path, int depth)
{
    const char *at = where(path);
    if (depth > G_MAX_DEPTH) {
        fail(c, "schema nested deeper than %d at %s", G_MAX_DEPTH, at);
        return NULL;
    }
    if (cJSON_IsTrue(s)) return any_node(c);
    if (!cJSON_IsObject(s)) {
        fail(c, "schema at %s must be an object", at);
        return NULL;
    }
    const cJSON *k;
    int n_constraints = 0;
    cJSON_ArrayForEach(k, s)
    {
        if (in_list(k->string, g_ignored, sizeof g_ignored / sizeof *g_ignored)) continue;
        if (!in_list(k->string, g_known, sizeof g_known / sizeof *g_known)) {
            fail(c, "unsupported schema keyword \"%s\" at %s", k->string, at);
            return NULL;
        }
        if (strcmp(k->string, "$defs") != 0 && strcmp(k->string, "definitions") != 0)
            n_constraints++;
    }
    const cJSON *ref = cJSON_GetObjectItemCaseSensitive(s, "$ref");
    const cJSON *anyof = cJSON_GetObjectItemCaseSensitive(s, "anyOf");
    if (ref) {
        if (n_constraints > 1) {
            fail(c, "unsupported schema at %s: \"$ref\" beside other keywords", at);
            return NULL;
        }
        return ref_node(c, ref, path, depth);
    }
    if (anyof) {
        char sub[512];
        path_join(sub, sizeof sub, path, "anyOf");
        if (n_constraints > 1) {
            fail(c, "unsupported schema at %s: \"anyOf\" beside other keywords", at);
            return NULL;
        }
        int n = cJSON_IsArray(anyof) ? cJSON_GetArraySize(anyof) : 0;
        if (n < 1 || n > G_MAX_BRANCH) {
            fail(c, "\"anyOf\" at %s must be an array of 1 to %d schemas", at, G_MAX_BRANCH);
            return NULL;
        }
        gnode *br[G_MAX_BRANCH];
        for (int i = 0; i < n; i++) {
            char bpath[536];
            snprintf(bpath, sizeof bpath, "%s/%d", sub, i);
            if (!(br[i] = compile(c, cJSON_GetArrayItem(anyof, i), bpath, depth + 1))) return NULL;
        }
        return n == 1 ? br[0] : anyof_node(c, br, n, sub);
    }
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(s, "type");
    if (cJSON_GetObjectItemCaseSensitive(s, "enum") ||
        cJSON_GetObjectItemCaseSensitive(s, "const")) {
        if (n_constraints > 1 + (type != NULL)) {
            fail(c,
                 "unsupported schema at %s: \"enum\"/\"const\" beside keywords other than "
                 "\"type\"",
                 at);
            return NULL;
        }
        return enum_node(c, s, path);
    }
    if (!type) {
        /* Untyped: the type the keywords imply, or any value. */
        static const char *const implies[][2] = {
            {"properties", "object"}, {"required", "object"},  {"additionalProperties", "object"},
            {"items", "array"},       {"minItems", "array"},   {"maxItems", "array"},
            {"minLength", "string"},  {"maxLength", "string"}, {"minimum", "number"},
            {"maximum", "number"},
        };
        const char *t = NULL;
        for (size_t i = 0; i < sizeof implies / sizeof *implies; i++) {
            if (!cJSON_GetObjectItemCaseSensitive(s, implies[i][0])) continue;
            if (t && strcmp(t, implies[i][1]) != 0) {
                fail(c, "unsupported schema at %s: keywords of several types without \"type\"", at);
                return NULL;
            }
            t = implies[i][1];
        }
        return t ? typed_node(c, s, t, path, depth) : any_node(c);
    }
    if (cJSON_IsString(type)) return typed_node(c, s, type->valuestring, path, depth);
    int n = cJSON_IsArray(type) ? cJSON_GetArraySize(type) : 0;
    if (n < 1 || n > 7) {
        fail(c, "\"type\" at %s must be a type name or an array of them", at);
        return NULL;
    }
    gnode *br[7];
    int nb = 0;
    bool has_number = false;
    const cJSON *e;
    cJSON_ArrayForEach(e, type) has_number |=
        cJSON_IsString(e) && !strcmp(e->valuestring, "number");
    cJSON_ArrayForEach(e, type)
    {
        if (!cJSON_IsString(e)) {
            fail(c, "\"type\" at %s must be a type name or an array of them", at);
            return NULL;
        }
        if (has_number && strcmp(e->valuestring, "integer") == 0) continue; /* number has it */
        if (!(br[nb++] = typed_node(c, s, e->valuestring, path, depth))) return NULL;
    }
    char sub[512];
    path_join(sub, sizeof sub, path, "type");
    return nb == 1 ? br[0] : anyof_node(c, br, nb, sub);
}

void grammar_destroy(grammar *g)
{
    if (!g) return;
    for (gnode *n = g->nodes, *next; n; n = next) {
        next = n->next_alloc;
        free_node(n);
    }
    free(g);
}

static void set_lengths(grammar *g);

grammar *grammar_compile(const char *schema_json, char *err, size_t errlen)
{
    if (errlen) err[0] = 0;
    cJSON *doc = schema_json ? cJSON_Parse(schema_json) : NULL;
    if (!doc) {
        if (errlen) snprintf(err, errlen, "the schema is not valid JSON");
        return NULL;
    }
    grammar *g = calloc(1, sizeof *g);
    cctx c = {.g = g, .doc = doc, .err = err, .errlen = errlen};
    gnode *value = NULL;
    if (!g)
        fail(&c, "out of memory");
    else
        value = compile(&c, doc, "", 0);
    /* The root takes a level, and a free container is opened only below G_MAX_DEPTH - 1 */
    if (value && value->height > G_MAX_DEPTH - 2) {
        fail(&c, "the schema nests containers deeper than %d", G_MAX_DEPTH - 2);
        value = NULL;
    }
    if (value && (g->root = new_node(&c, K_ROOT))) g->root->items = value;
    cJSON_Delete(doc);
    if (!g || !g->root) {
        grammar_destroy(g);
        return NULL;
    }
    set_lengths(g);
    return g;
}

/* ---- the automaton ---- */

typedef struct {
    const gnode *n;
    int32_t parent; /* arena index of the enclosing frame; -1 for the root */
    uint8_t phase, depth;
    uint8_t neg;            /* K_INT/K_NUM: after '-' */
    uint8_t nd, nf, ne;     /* integer, fraction and exponent digits */
    uint8_t utf_need;       /* K_STR: continuation bytes still due */
    uint8_t utf_lo, utf_hi; /* the next continuation byte's range */
    uint32_t count;         /* characters, items, key or literal position */
    uint32_t idx;           /* K_OBJ: next property; the key being written */
    uint64_t mask;          /* K_LIT values / K_OBJ keys still matching */
    int64_t val;            /* number magnitude: units (K_INT), micro-units (K_NUM) */
} gframe;

struct grammar_vocab {
    int n_vocab;
    struct tnode {
        int32_t child, sibling, first_tok;
        uint8_t byte;
    } * nodes; /* nodes[0]: the root (no byte) */
    int n_nodes;
    int32_t *tok_next; /* the next token ending at the same trie node, or -1 */
    char *bytes;       /* every token's bytes */
    size_t *off;       /* token i: bytes[off[i] .. off[i+1]); empty: never allowed */
    uint8_t *is_stop;
    int max_piece;
};

struct grammar_state {
    const grammar *g;
    const grammar_vocab *v;
    gframe cur;
    gframe *arena; /* [0, base): the live stack; a trie walk appends past it */
    gframe *scratch;
    int arena_len, arena_cap;
    uint8_t *allowed; /* per token, for one mask */
    bool done;        /* a stop token was accepted */
    int live;         /* frames in the live stack: arena[0, live), each the next one's parent */
    int *below;       /* below[i]: the shortest completion of arena[0..i] */
    bool budgeted;    /* limit holds: tokens that may follow the one being chosen */
    int limit;
    bool cut; /* the budget turned away a token the grammar allowed */
    /* one mask's walk: a token within the limit was found; the shortest completion over it */
    bool any_ok;
    int best;
};

enum { R_EAT, R_POP, R_REJECT, R_AGAIN };

static bool push(grammar_state *s, gframe *cur, const gnode *n)
{
    if (cur->depth >= G_MAX_DEPTH || s->arena_len >= s->arena_cap) return false;
    s->arena[s->arena_len] = *cur;
    *cur = (gframe){.n = n, .parent = s->arena_len, .depth = (uint8_t)(cur->depth + 1)};
    s->arena_len++;
    return true;
}

static int64_t pow10i(int k)
{
    int64_t p = 1;
    while (k-- > 0)
        p *= 10;
    return p;
}

/* Does [a, b] (a magnitude range, negated when neg) meet the node's bounds? */
static bool meets(const gnode *n, bool neg, int64_t a, int64_t b)
{
    int64_t lo = neg ? -b : a, hi = neg ? -a : b;
    return (!n->has_lo || hi >= n->lo) && (!n->has_hi || lo <= n->hi);
}

/* Some completion of the number written so far is within the bounds. */
static bool feasible(const gframe *f)
{
    const gnode *n = f->n;
    if (!n->has_lo && !n->has_hi) return true;
    bool neg = f->neg;
    if (n->kind == K_INT) {
        if (f->phase == 3) return meets(n, neg, 0, 0);
        for (int k = 0; k + f->nd <= G_INT_DIGITS; k++) {
            int64_t p = pow10i(k);
            if (meets(n, neg, f->val * p, f->val * p + p - 1)) return true;
        }
        return false;
    }
    switch (f->phase) {
    case 2:
        for (int k = 0; k + f->nd <= G_NUM_DIGITS; k++) {
            int64_t p = pow10i(k);
            if (meets(n, neg, f->val * p, (f->val + G_MICRO) * p - 1)) return true;
        }
        return false;
    case 3:
    case 4: return meets(n, neg, f->val, f->val + G_MICRO - 1);
    default: return meets(n, neg, f->val, f->val + pow10i(G_FRAC_DIGITS - f->nf) - 1);
    }
}

static bool in_bounds(const gframe *f)
{
    int64_t v = f->neg ? -f->val : f->val;
    return (!f->n->has_lo || v >= f->n->lo) && (!f->n->has_hi || v <= f->n->hi);
}

/* Phases: 0 start, 1 after '-', 2 integer digits, 3 after a leading 0, 4 after '.', 5 fraction
 * digits, 6 after 'e', 7 after the exponent's sign, 8 exponent digits. */
static int step_number(gframe *f, int c)
{
    const gnode *n = f->n;
    bool real = n->kind == K_NUM;
    bool bounded = n->has_lo || n->has_hi;
    int64_t unit = real ? G_MICRO : 1;
    gframe t = *f;
    if (c >= '0' && c <= '9') {
        int d = c - '0';
        switch (f->phase) {
        case 0:
        case 1:
            t.phase = d == 0 ? 3 : 2;
            t.val = d * unit;
            t.nd = 1;
            break;
        case 2:
            if (f->nd >= (real ? G_NUM_DIGITS : G_INT_DIGITS)) return R_REJECT;
            t.val = f->val * 10 + d * unit;
            t.nd++;
            break;
        case 4:
        case 5:
            if (f->nf >= G_FRAC_DIGITS) return R_REJECT;
            t.val = f->val + d * pow10i(G_FRAC_DIGITS - 1 - f->nf);
            t.nf++;
            t.phase = 5;
            break;
        case 6:
        case 7:
        case 8:
            if (f->ne >= G_EXP_DIGITS) return R_REJECT;
            t.ne++;
            t.phase = 8;
            break;
        default: return R_REJECT; /* no digit after a leading 0 */
        }
        if (!feasible(&t)) return R_REJECT;
        *f = t;
        return R_EAT;
    }
    if (c == '-' && f->phase == 0) {
        if (n->has_lo && n->lo >= 0) return R_REJECT;
        f->neg = 1;
        f->phase = 1;
        return R_EAT;
    }
    if ((c == '-' || c == '+') && f->phase == 6) {
        f->phase = 7;
        return R_EAT;
    }
    if (c == '.' && real && (f->phase == 2 || f->phase == 3)) {
        t.phase = 4;
        if (!feasible(&t)) return R_REJECT;
        *f = t;
        return R_EAT;
    }
    if ((c == 'e' || c == 'E') && real && !bounded &&
        (f->phase == 2 || f->phase == 3 || f->phase == 5)) {
        f->phase = 6;
        return R_EAT;
    }
    bool can_end = f->phase == 2 || f->phase == 3 || f->phase == 5 || f->phase == 8;
    return can_end && in_bounds(f) ? R_POP : R_REJECT;
}

/* Phases: 0 before '"', 1 inside, 2 after '\', 3..6 \u's hex digits, 7 closed. */
static int step_string(gframe *f, int c)
{
    const gnode *n = f->n;
    bool room = n->max < 0 || f->count < (uint32_t)n->max;
    switch (f->phase) {
    case 0:
        if (c != '"') return R_REJECT;
        f->phase = 1;
        return R_EAT;
    case 1:
        if (f->utf_need) {
            if (c < f->utf_lo || c > f->utf_hi) return R_REJECT;
            f->utf_need--;
            f->utf_lo = 0x80;
            f->utf_hi = 0xBF;
            return R_EAT;
        }
        if (c == '"') {
            if (f->count < (uint32_t)n->min) return R_REJECT;
            f->phase = 7;
            return R_EAT;
        }
        if (c < 0x20 || c >= G_EOF || !room) return R_REJECT;
        f->count++;
        if (c == '\\') {
            f->phase = 2;
            return R_EAT;
        }
        if (c < 0x80) return R_EAT;
        /* UTF-8 lead bytes, with the ranges that keep out overlongs and surrogates */
        f->utf_lo = 0x80;
        f->utf_hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF)
            f->utf_need = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            f->utf_need = 2;
            if (c == 0xE0) f->utf_lo = 0xA0;
            if (c == 0xED) f->utf_hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            f->utf_need = 3;
            if (c == 0xF0) f->utf_lo = 0x90;
            if (c == 0xF4) f->utf_hi = 0x8F;
        } else {
            return R_REJECT;
        }
        return R_EAT;
    case 2:
        if (c > 0 && c < G_EOF && strchr("\"\\/bfnrt", c)) {
            f->phase = 1;
            return R_EAT;
        }
        /* \u only where lengths are free: a surrogate pair would count as two characters */
        if (c == 'u' && n->max < 0 && n->min == 0) {
            f->phase = 3;
            return R_EAT;
        }
        return R_REJECT;
    case 3:
    case 4:
    case 5:
    case 6: {
        bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
        if (!hex || (f->phase == 3 && (c == 'd' || c == 'D'))) return R_REJECT; /* surrogates */
        f->phase = f->phase == 6 ? 1 : f->phase + 1;
        return R_EAT;
    }
    default: return R_POP;
    }
}

/* The values (or keys) in mask that still match after byte c at position pos. */
static uint64_t lit_match(const gnode *n, uint64_t mask, uint32_t pos, int c)
{
    uint64_t out = 0;
    for (uint64_t m = mask; m; m &= m - 1) {
        int i = __builtin_ctzll(m);
        if (n->len[i] > pos && (unsigned char)n->text[i][pos] == c) out |= 1ull << i;
    }
    return out;
}

/* The keys that may come next from property idx on: up to the next required one. */
static uint64_t key_candidates(const gnode *n, uint32_t idx)
{
    if ((int)idx >= n->n) return 0;
    int last = n->next_req[idx] < n->n ? n->next_req[idx] : n->n - 1;
    uint64_t hi = last == 63 ? ~0ull : (1ull << (last + 1)) - 1;
    return hi & ~((1ull << idx) - 1);
}

static int frame_step(grammar_state *s, gframe *f, int c)
{
    const gnode *n = f->n;
    switch (n->kind) {
    case K_ROOT:
        if (f->phase == 1) return c == G_EOF ? R_EAT : R_REJECT;
        if (c == G_EOF) return R_REJECT;
        f->phase = 1;
        return push(s, f, n->items) ? R_AGAIN : R_REJECT;
    case K_ANYOF:
        for (int i = 0; i < n->n; i++)
            if (first_has(n->sub[i], c)) {
                *f = (gframe){.n = n->sub[i], .parent = f->parent, .depth = f->depth};
                return R_AGAIN;
            }
        return R_REJECT;
    case K_LIT: {
        if (f->phase == 0) {
            f->phase = 1;
            f->mask = n->n == 64 ? ~0ull : (1ull << n->n) - 1;
        }
        uint64_t m = c == G_EOF ? 0 : lit_match(n, f->mask, f->count, c);
        if (m) {
            f->mask = m;
            f->count++;
            return R_EAT;
        }
        for (uint64_t k = f->mask; k; k &= k - 1)
            if (n->len[__builtin_ctzll(k)] == f->count) return R_POP;
        return R_REJECT;
    }
    case K_STR: return step_string(f, c);
    case K_INT:
    case K_NUM: return step_number(f, c);
    case K_ARR: /* 0 before '[', 1 after it, 2 after an item, 3 after ',', 4 closed */
        switch (f->phase) {
        case 0: /* a container opens only where its values can still be pushed */
            if (c != '[' || f->depth >= G_MAX_DEPTH - 1) return R_REJECT;
            f->phase = 1;
            return R_EAT;
        case 1:
            if (c == ']' && n->min == 0) {
                f->phase = 4;
                return R_EAT;
            }
            if (n->max == 0 || c == G_EOF) return R_REJECT;
            f->count = 1;
            f->phase = 2;
            return push(s, f, n->items) ? R_AGAIN : R_REJECT;
        case 2:
            if (c == ',' && (n->max < 0 || f->count < (uint32_t)n->max)) {
                f->phase = 3;
                return R_EAT;
            }
            if (c == ']' && f->count >= (uint32_t)n->min) {
                f->phase = 4;
                return R_EAT;
            }
            return R_REJECT;
        case 3:
            if (c == G_EOF) return R_REJECT;
            f->count++;
            f->phase = 2;
            return push(s, f, n->items) ? R_AGAIN : R_REJECT;
        default: return R_POP;
        }
    case K_OBJ: /* 0 before '{', 1 after it, 2 in a key, 3 before ':', 4 after a value,
                   5 after ',', 6 closed, 7 before a value */
        switch (f->phase) {
        case 0:
            if (c != '{' || f->depth >= G_MAX_DEPTH - 1) return R_REJECT;
            f->phase = 1;
            return R_EAT;
        case 1:
        case 5:
            if (c == '}' && f->phase == 1 && n->next_req[f->idx] == n->n) {
                f->phase = 6;
                return R_EAT;
            }
            f->mask = key_candidates(n, f->idx);
            f->count = 0;
            f->phase = 2;
            /* fall through */
        case 2: {
            uint64_t m = c == G_EOF ? 0 : lit_match(n, f->mask, f->count, c);
            if (!m) return R_REJECT;
            f->mask = m;
            f->count++;
            int k = __builtin_ctzll(m);
            if (n->len[k] == f->count) { /* keys end with '"': a complete key is the only one */
                f->idx = (uint32_t)k;
                f->phase = 3;
            }
            return R_EAT;
        }
        case 3:
            if (c != ':') return R_REJECT;
            f->phase = 7;
            return R_EAT;
        case 7: {
            if (c == G_EOF) return R_REJECT;
            const gnode *v = n->sub[f->idx];
            f->idx++;
            f->phase = 4;
            return push(s, f, v) ? R_AGAIN : R_REJECT;
        }
        case 4:
            if (c == ',' && key_candidates(n, f->idx)) {
                f->phase = 5;
                return R_EAT;
            }
            if (c == '}' && ((int)f->idx >= n->n || n->next_req[f->idx] == n->n)) {
                f->phase = 6;
                return R_EAT;
            }
            return R_REJECT;
        default: return R_POP;
        }
    case K_ANYOBJ: /* 0 before '{', 1 after it, 2 before ':', 3 before a value, 4 after a value,
                      5 after ',', 6 closed */
        switch (f->phase) {
        case 0:
            if (c != '{' || f->depth >= G_MAX_DEPTH - 1) return R_REJECT;
            f->phase = 1;
            return R_EAT;
        case 1:
        case 5:
            if (c == '}' && f->phase == 1) {
                f->phase = 6;
                return R_EAT;
            }
            if (c == G_EOF) return R_REJECT;
            f->phase = 2;
            return push(s, f, n->items) ? R_AGAIN : R_REJECT;
        case 2:
            if (c != ':') return R_REJECT;
            f->phase = 3;
            return R_EAT;
        case 3:
            if (c == G_EOF) return R_REJECT;
            f->phase = 4;
            return push(s, f, n->item2) ? R_AGAIN : R_REJECT;
        case 4:
            if (c == ',' || c == '}') {
                f->phase = c == ',' ? 5 : 6;
                return R_EAT;
            }
            return R_REJECT;
        default: return R_POP;
        }
    }
    return R_REJECT;
}

/* Byte c (or G_EOF) on state f: true when it fits. On false, f is unusable. */
static bool step(grammar_state *s, gframe *f, int c)
{
    for (;;) {
        switch (frame_step(s, f, c)) {
        case R_EAT: return true;
        case R_REJECT: return false;
        case R_POP:
            if (f->parent < 0) return false;
            *f = s->arena[f->parent];
            break;
        default: break; /* R_AGAIN: a new frame takes the byte */
        }
    }
}

/* ---- shortest completions (for budgets) ----
 *
 * frame_rest(f) is the fewest bytes that finish f's value from its phase; a state's shortest
 * completion is the sum over its frames (a parent's phase already counts the child being
 * written). The counts are exact: the first byte of a shortest completion always leaves one
 * byte fewer to write, which is what lets a budget be kept token by token. */

static int64_t sat(int64_t x)
{
    return x > G_BIG ? G_BIG : x;
}

/* Is some multiple of step in the magnitudes [a, b] a value within the node's bounds? */
static bool some_multiple(const gnode *n, bool neg, int64_t a, int64_t b, int64_t step)
{
    if (neg) {
        if (n->has_hi && -n->hi > a) a = -n->hi;
        if (n->has_lo && -n->lo < b) b = -n->lo;
    } else {
        if (n->has_lo && n->lo > a) a = n->lo;
        if (n->has_hi && n->hi < b) b = n->hi;
    }
    return a <= b && (a + step - 1) / step * step <= b;
}

/* A number's shortest ending: k more integer digits, then '.' and j fraction digits (j = 0: no
 * '.'), whichever is shortest with a value in bounds. Unbounded numbers need a digit after
 * '-', '.', 'e' or its sign, and nothing else. */
static int64_t num_rest(const gframe *f)
{
    const gnode *n = f->n;
    static const uint8_t unbounded[9] = {1, 1, 0, 0, 1, 0, 1, 1, 0};
    if (!n->has_lo && !n->has_hi) return f->phase < 9 ? unbounded[f->phase] : 0;
    bool real = n->kind == K_NUM;
    int64_t unit = real ? G_MICRO : 1;
    int maxd = real ? G_NUM_DIGITS : G_INT_DIGITS;
    int64_t best = G_BIG;
    if (f->phase >= 4) { /* fraction digits: val holds them */
        int nf = f->phase == 4 ? 0 : f->nf;
        for (int j = f->phase == 4 ? 1 : 0; nf + j <= G_FRAC_DIGITS && j < best; j++) {
            int64_t step = pow10i(G_FRAC_DIGITS - nf - j);
            if (some_multiple(n, f->neg, f->val, f->val + pow10i(G_FRAC_DIGITS - nf) - step, step))
                best = j;
        }
        return best;
    }
    /* phase 0 may take a '-' first */
    bool can_neg = !(n->has_lo && n->lo >= 0);
    int neg_last = f->phase == 0 && can_neg ? 1 : f->neg;
    for (int neg = f->neg; neg <= neg_last; neg++) {
        int extra = neg && f->phase == 0;
        int nd = f->phase >= 2 ? f->nd : 0;
        int64_t v = f->val / unit;
        for (int k = f->phase >= 2 ? 0 : 1; nd + k <= maxd && (f->phase != 3 || k == 0); k++) {
            int64_t p = pow10i(k), lo, hi;
            if (f->phase >= 2) {
                lo = v * p;
                hi = v * p + p - 1;
            } else {
                lo = k == 1 ? 0 : p / 10;
                hi = p - 1;
            }
            for (int j = 0; j <= (real ? G_FRAC_DIGITS : 0); j++) {
                int64_t cost = extra + k + (j ? 1 + j : 0);
                int64_t step = real ? pow10i(G_FRAC_DIGITS - j) : 1;
                if (cost < best && some_multiple(n, neg, lo * unit, hi * unit + unit - step, step))
                    best = cost;
            }
        }
    }
    return best;
}

static int64_t frame_rest(const gframe *f)
{
    const gnode *n = f->n;
    int64_t more, best = G_BIG;
    switch (n->kind) {
    case K_ROOT: return f->phase ? 0 : n->items->minlen;
    case K_ANYOF: return n->minlen;
    case K_LIT:
        if (!f->phase) return n->minlen;
        for (uint64_t m = f->mask; m; m &= m - 1) {
            int64_t left = (int64_t)n->len[__builtin_ctzll(m)] - f->count;
            if (left < best) best = left;
        }
        return best;
    case K_STR:
        if (f->phase == 0) return 2 + n->min;
        if (f->phase == 7) return 0;
        more = n->min > (int)f->count ? n->min - (int)f->count : 0;
        /* the pending UTF-8 bytes, an escape's character or \u's hex digits; then the quote */
        return (f->phase == 1 ? f->utf_need : f->phase == 2 ? 1 : 7 - f->phase) + more + 1;
    case K_INT:
    case K_NUM: return num_rest(f);
    case K_ARR: {
        int64_t item = n->min > 0 || f->phase == 3 ? n->items->minlen : 0;
        switch (f->phase) {
        case 0: return n->minlen;
        case 1: return n->min ? sat(n->min * (item + 1)) : 1;
        case 2:
            more = n->min > (int)f->count ? n->min - (int)f->count : 0;
            return sat(more * (item + 1) + 1);
        case 3:
            more = n->min > (int)f->count + 1 ? n->min - (int)f->count : 1;
            return sat(more * (item + 1));
        default: return 0;
        }
    }
    case K_OBJ:
        switch (f->phase) {
        case 0: return n->minlen;
        case 1: return n->next_req[0] == n->n ? 1 : n->head[0];
        case 5: return n->head[f->idx];
        case 2:
            for (uint64_t m = f->mask; m; m &= m - 1) {
                int k = __builtin_ctzll(m);
                int64_t c = (int64_t)n->len[k] - f->count + 1 + n->sub[k]->minlen + n->tail[k + 1];
                if (c < best) best = c;
            }
            return sat(best);
        case 3: return sat(1 + (int64_t)n->sub[f->idx]->minlen + n->tail[f->idx + 1]);
        case 7: return sat((int64_t)n->sub[f->idx]->minlen + n->tail[f->idx + 1]);
        case 4: return n->tail[f->idx < (uint32_t)n->n ? f->idx : (uint32_t)n->n];
        default: return 0;
        }
    case K_ANYOBJ:
        switch (f->phase) {
        case 0: return 2;
        case 1:
        case 4: return 1;
        case 2: return 2 + (int64_t)n->item2->minlen;
        case 3: return 1 + (int64_t)n->item2->minlen;
        case 5: return 2 + (int64_t)n->items->minlen + n->item2->minlen;
        default: return 0;
        }
    }
    return G_BIG;
}

/* n->minlen (and an object's tail and head), from its parts'. */
static int node_min(gnode *n)
{
    if (n->minlen >= 0) return n->minlen;
    if (n->minlen == -2) return G_BIG; /* only "{}" refers to itself, never on its shortest path */
    n->minlen = -2;
    int64_t m = G_BIG;
    switch (n->kind) {
    case K_ROOT: m = node_min(n->items); break;
    case K_ANYOF:
        for (int i = 0; i < n->n; i++)
            if (node_min(n->sub[i]) < m) m = n->sub[i]->minlen;
        break;
    case K_LIT:
        for (int i = 0; i < n->n; i++)
            if ((int64_t)n->len[i] < m) m = (int64_t)n->len[i];
        break;
    case K_STR: m = 2 + (int64_t)n->min; break;
    case K_INT:
    case K_NUM: m = num_rest(&(gframe){.n = n}); break;
    case K_ANYOBJ: m = 2; break;
    case K_ARR: m = n->min ? sat(1 + n->min * ((int64_t)node_min(n->items) + 1)) : 2; break;
    case K_OBJ: {
        int64_t cheapest = G_BIG;
        n->tail[n->n] = 1;
        n->head[n->n] = G_BIG;
        for (int i = n->n - 1; i >= 0; i--) {
            int64_t cost = sat((int64_t)n->len[i] + 1 + node_min(n->sub[i]));
            bool required = n->next_req[i] == i;
            n->tail[i] = (int)sat((required ? 1 + cost : 0) + n->tail[i + 1]);
            if (cost < cheapest) cheapest = cost;
            int r = n->next_req[i];
            n->head[i] =
                (int)sat(r < n->n ? (int64_t)n->len[r] + 1 + node_min(n->sub[r]) + n->tail[r + 1]
                                  : cheapest + 1);
        }
        m = 1 + (n->next_req[0] == n->n ? 1 : (int64_t)n->head[0]);
        break;
    }
    }
    n->minlen = (int)sat(m);
    return n->minlen;
}

static void set_lengths(grammar *g)
{
    for (gnode *n = g->nodes; n; n = n->next_alloc)
        node_min(n);
}

/* ---- the vocabulary trie ---- */

void grammar_vocab_destroy(grammar_vocab *v)
{
    if (!v) return;
    free(v->nodes);
    free(v->tok_next);
    free(v->bytes);
    free(v->off);
    free(v->is_stop);
    free(v);
}

static int32_t trie_child(grammar_vocab *v, int32_t node, uint8_t b, int *cap)
{
    for (int32_t k = v->nodes[node].child; k >= 0; k = v->nodes[k].sibling)
        if (v->nodes[k].byte == b) return k;
    if (v->n_nodes == *cap) {
        int ncap = *cap * 2;
        struct tnode *nn = realloc(v->nodes, (size_t)ncap * sizeof *nn);
        if (!nn) return -1;
        v->nodes = nn;
        *cap = ncap;
    }
    int32_t k = v->n_nodes++;
    v->nodes[k] =
        (struct tnode){.child = -1, .sibling = v->nodes[node].child, .first_tok = -1, .byte = b};
    v->nodes[node].child = k;
    return k;
}

grammar_vocab *grammar_vocab_create(const tok *t, const int32_t *stop_ids, int n_stop)
{
    grammar_vocab *v = calloc(1, sizeof *v);
    if (!v) return NULL;
    int n = tok_n_vocab(t);
    v->n_vocab = n;
    int cap = 1024;
    v->nodes = malloc((size_t)cap * sizeof *v->nodes);
    v->tok_next = malloc((size_t)n * sizeof *v->tok_next);
    v->off = calloc((size_t)n + 1, sizeof *v->off);
    v->is_stop = calloc((size_t)n, 1);
    if (!v->nodes || !v->tok_next || !v->off || !v->is_stop) goto fail;
    for (int i = 0; i < n_stop; i++)
        if (stop_ids[i] >= 0 && stop_ids[i] < n) v->is_stop[stop_ids[i]] = 1;
    /* Only ordinary tokens carry text: special ones (other than stops) are never allowed. */
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        size_t len = 0;
        tok_type ty = tok_type_of(t, i);
        if (!v->is_stop[i] && (ty == TOK_TYPE_NORMAL || ty == TOK_TYPE_BYTE))
            tok_piece(t, i, false, &len);
        v->off[i] = total;
        total += len;
    }
    v->off[n] = total;
    v->bytes = malloc(total + 1);
    if (!v->bytes) goto fail;
    v->nodes[0] = (struct tnode){.child = -1, .sibling = -1, .first_tok = -1};
    v->n_nodes = 1;
    for (int i = 0; i < n; i++) {
        size_t len = v->off[i + 1] - v->off[i];
        v->tok_next[i] = -1;
        if (!len) continue;
        size_t l2;
        const char *p = tok_piece(t, i, false, &l2);
        assert(l2 == len);
        memcpy(v->bytes + v->off[i], p, len);
        if ((int)len > v->max_piece) v->max_piece = (int)len;
        int32_t node = 0;
        for (size_t k = 0; k < len && node >= 0; k++)
            node = trie_child(v, node, (uint8_t)p[k], &cap);
        if (node < 0) goto fail;
        v->tok_next[i] = v->nodes[node].first_tok;
        v->nodes[node].first_tok = i;
    }
    return v;
fail:
    grammar_vocab_destroy(v);
    return NULL;
}

/* ---- one answer ---- */

static void live_changed(grammar_state *s);

grammar_state *grammar_state_create(const grammar *g, const grammar_vocab *v)
{
    grammar_state *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->g = g;
    s->v = v;
    /* the live stack, plus at most one push per byte of a token (and the root's) */
    s->arena_cap = G_MAX_DEPTH + v->max_piece + 4;
    s->arena = malloc((size_t)s->arena_cap * sizeof *s->arena);
    s->scratch = malloc((size_t)s->arena_cap * sizeof *s->scratch);
    s->allowed = malloc((size_t)v->n_vocab);
    s->below = malloc((size_t)s->arena_cap * sizeof *s->below);
    if (!s->arena || !s->scratch || !s->allowed || !s->below) {
        grammar_state_destroy(s);
        return NULL;
    }
    grammar_state_reset(s);
    return s;
}

void grammar_state_reset(grammar_state *s)
{
    s->cur = (gframe){.n = s->g->root, .parent = -1};
    s->arena_len = 0;
    s->done = false;
    s->budgeted = s->cut = false;
    live_changed(s);
}

void grammar_state_destroy(grammar_state *s)
{
    if (!s) return;
    free(s->arena);
    free(s->scratch);
    free(s->allowed);
    free(s->below);
    free(s);
}

bool grammar_state_complete(const grammar_state *s)
{
    if (s->done) return true;
    grammar_state *m = (grammar_state *)s; /* the walk appends past the live stack only */
    int base = m->arena_len;
    gframe f = s->cur;
    bool ok = step(m, &f, G_EOF);
    m->arena_len = base;
    return ok;
}

/* The shortest completion of state f: the frames the walk pushed, then the live stack's sum. */
static int chain_rest(const grammar_state *s, const gframe *f)
{
    int64_t r = frame_rest(f);
    int32_t p = f->parent;
    for (; p >= s->live; p = s->arena[p].parent)
        r += frame_rest(&s->arena[p]);
    if (p >= 0) r += s->below[p];
    return (int)sat(r);
}

/* After the live stack changed. */
static void live_changed(grammar_state *s)
{
    s->live = s->arena_len;
    int64_t sum = 0;
    for (int i = 0; i < s->live; i++) {
        assert(s->arena[i].parent == i - 1);
        sum = sat(sum + frame_rest(&s->arena[i]));
        s->below[i] = (int)sum;
    }
}

/* Whether the state after a token still completes within the budget (limit tokens after it,
 * each at least one byte); else notes the shortest completion seen over the limit. */
static bool within(grammar_state *s, const gframe *f, int limit)
{
    if (!s->budgeted) return true;
    int r = chain_rest(s, f);
    if (r <= limit) return true;
    if (r < s->best) s->best = r;
    return false;
}

static void walk(grammar_state *s, int32_t node, const gframe *st, int limit)
{
    const grammar_vocab *v = s->v;
    int base = s->arena_len;
    for (int32_t k = v->nodes[node].child; k >= 0; k = v->nodes[k].sibling) {
        gframe f = *st;
        s->arena_len = base;
        if (!step(s, &f, v->nodes[k].byte)) continue;
        if (v->nodes[k].first_tok >= 0 && within(s, &f, limit)) {
            s->any_ok = true;
            for (int32_t t = v->nodes[k].first_tok; t >= 0; t = v->tok_next[t])
                s->allowed[t] = 1;
        }
        if (v->nodes[k].child >= 0) walk(s, k, &f, limit);
    }
    s->arena_len = base;
}

void grammar_state_mask(grammar_state *s, float *logits)
{
    const grammar_vocab *v = s->v;
    memset(s->allowed, 0, (size_t)v->n_vocab);
    bool complete = grammar_state_complete(s);
    s->any_ok = false;
    s->best = G_BIG;
    if (!s->done) walk(s, 0, &s->cur, s->limit);
    if (s->best < G_BIG) s->cut = true; /* the budget narrowed the choice */
    /* No token keeps the budget (it was too small from the start, or the vocabulary lacks a
     * one-byte token the shortest completion needs): the tokens that leave the least to write. */
    if (!complete && !s->any_ok && s->best < G_BIG) walk(s, 0, &s->cur, s->best);
    if (complete)
        for (int i = 0; i < v->n_vocab; i++)
            s->allowed[i] |= v->is_stop[i];
    for (int i = 0; i < v->n_vocab; i++)
        if (!s->allowed[i]) logits[i] = -INFINITY;
}

/* Token id's bytes from the current state into *f; false if they do not fit. */
static bool try_token(grammar_state *s, int32_t id, gframe *f)
{
    const grammar_vocab *v = s->v;
    size_t a = v->off[id], b = v->off[id + 1];
    if (a == b) return false;
    *f = s->cur;
    for (size_t i = a; i < b; i++)
        if (!step(s, f, (uint8_t)v->bytes[i])) return false;
    return true;
}

bool grammar_state_allows(grammar_state *s, int32_t id)
{
    if (id < 0 || id >= s->v->n_vocab || s->done) return false;
    if (s->v->is_stop[id]) return grammar_state_complete(s);
    int base = s->arena_len;
    gframe f;
    bool ok = try_token(s, id, &f);
    if (ok && !within(s, &f, s->limit)) ok = false, s->cut = true;
    s->arena_len = base;
    return ok;
}

void grammar_state_set_budget(grammar_state *s, int tokens_left)
{
    s->budgeted = tokens_left >= 0;
    s->limit = tokens_left - 1;
}

bool grammar_state_cut_short(const grammar_state *s)
{
    return s->cut;
}

int grammar_state_min_bytes(const grammar_state *s)
{
    return s->done ? 0 : chain_rest(s, &s->cur);
}

int grammar_state_accept(grammar_state *s, int32_t id)
{
    if (id < 0 || id >= s->v->n_vocab || s->done) return -1;
    if (s->v->is_stop[id]) {
        if (!grammar_state_complete(s)) return -1;
        s->done = true;
        return 0;
    }
    int base = s->arena_len;
    gframe f;
    if (!try_token(s, id, &f)) {
        s->arena_len = base;
        return -1;
    }
    /* Compact: the frames f still links to, moved to the arena's front in order. */
    int d = 0;
    for (int32_t i = f.parent; i >= 0; i = s->arena[i].parent)
        s->scratch[d++] = s->arena[i];
    for (int i = 0; i < d; i++) {
        s->arena[i] = s->scratch[d - 1 - i];
        s->arena[i].parent = i - 1;
    }
    s->arena_len = d;
    f.parent = d - 1;
    s->cur = f;
    live_changed(s);
    return 0;
}

int grammar_match(const grammar *g, const char *text, size_t len)
{
    grammar_state s = {.g = g, .arena_cap = G_MAX_DEPTH + 4};
    if (len < (size_t)1 << 24) s.arena_cap += (int)len;
    s.arena = malloc((size_t)s.arena_cap * sizeof *s.arena);
    if (!s.arena) return -1;
    gframe f = {.n = g->root, .parent = -1};
    int rc = 0;
    for (size_t i = 0; i < len && rc == 0; i++)
        if (!step(&s, &f, (uint8_t)text[i])) rc = -1;
    if (rc == 0 && step(&s, &f, G_EOF)) rc = 1;
    free(s.arena);
    return rc;
}

int grammar_min_bytes(const grammar *g, const char *text, size_t len)
{
    grammar_state s = {.g = g, .arena_cap = G_MAX_DEPTH + 4};
    if (len < (size_t)1 << 24) s.arena_cap += (int)len;
    s.arena = malloc((size_t)s.arena_cap * sizeof *s.arena);
    if (!s.arena) return -2;
    gframe f = {.n = g->root, .parent = -1};
    int rc = 0;
    for (size_t i = 0; i < len && rc == 0; i++)
        if (!step(&s, &f, (uint8_t)text[i])) rc = -1;
    if (rc == 0) rc = chain_rest(&s, &f); /* live is 0: every frame is summed */
    free(s.arena);
    return rc;
}
