/* Constrained decoding: the automaton byte by byte, schema errors, and 200 random schemas
 * decoded with the demo model at temperature 1, each answer parsed and checked by a validator
 * written here (it shares nothing with grammar.c). */
#include <check.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/chat.h"
#include "engine/engine.h"
#include "engine/grammar.h"
#include "engine/sampler.h"
#include "testutil.h"

#ifndef TERN_DEMO_MODEL
#define TERN_DEMO_MODEL "models/tern-demo-tq2_0.gguf"
#endif

/* grammar_match of text under schema. */
static int match(const char *schema, const char *text)
{
    char err[256];
    grammar *g = grammar_compile(schema, err, sizeof err);
    ck_assert_msg(g != NULL, "%s: %s", schema, err);
    int r = grammar_match(g, text, strlen(text));
    grammar_destroy(g);
    return r;
}

#define COMPLETE(schema, text) ck_assert_msg(match(schema, text) == 1, "%s | %s", schema, text)
#define PREFIX(schema, text) ck_assert_msg(match(schema, text) == 0, "%s | %s", schema, text)
#define REJECT(schema, text) ck_assert_msg(match(schema, text) == -1, "%s | %s", schema, text)

START_TEST(any_json)
{
    const char *any = "{}";
    COMPLETE(any, "{\"a\":[1,-2.5e3,true,null,\"x\\n\\u00e9\"],\"b\":{}}");
    COMPLETE(any, "\"caf\xc3\xa9\"");
    COMPLETE(any, "0");
    COMPLETE(any, "[]");
    PREFIX(any, "{\"a\":");
    COMPLETE(any, "12");
    PREFIX(any, "1.");
    PREFIX(any, "-");
    REJECT(any, "01");
    REJECT(any, "{\"a\" :1}"); /* no whitespace */
    REJECT(any, "[1,]");
    REJECT(any, "{,}");
    REJECT(any, "tru e");
    REJECT(any, "\"\xc3\"");         /* a lead byte without its continuation */
    REJECT(any, "\"\xed\xa0\x80\""); /* a UTF-16 surrogate in UTF-8 */
    REJECT(any, "\"a\tb\"");         /* raw control character */
    REJECT(any, "\"\\x\"");
    REJECT(any, "1 ");
    REJECT(any, "{}{}");
    /* nesting is capped at 30 containers, and a value always fits at the deepest level */
    char deep[80];
    memset(deep, '[', 31);
    deep[31] = 0;
    REJECT(any, deep);
    deep[30] = 0;
    PREFIX(any, deep);
    strcat(deep, "{");
    REJECT(any, deep);
    deep[30] = '1';
    memset(deep + 31, ']', 30);
    deep[61] = 0;
    COMPLETE(any, deep);
}
END_TEST

START_TEST(objects)
{
    const char *s = "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},"
                    "\"b\":{\"type\":\"string\"},\"c\":{\"type\":\"boolean\"}},"
                    "\"required\":[\"c\"],\"additionalProperties\":false}";
    COMPLETE(s, "{\"a\":1,\"b\":\"x\",\"c\":true}");
    COMPLETE(s, "{\"c\":false}");
    COMPLETE(s, "{\"b\":\"\",\"c\":true}");
    REJECT(s, "{}");        /* c is required */
    REJECT(s, "{\"a\":1}"); /* ... */
    PREFIX(s, "{\"a\":1");
    REJECT(s, "{\"c\":true,\"a\":1}"); /* listed order */
    REJECT(s, "{\"d\":1}");
    REJECT(s, "{\"a\":\"1\"}");
    REJECT(s, "{\"a\":1,\"a\":2,\"c\":true}");
    /* no properties: a free object; additionalProperties false: only {} */
    COMPLETE("{\"type\":\"object\"}", "{\"k\":[1]}");
    COMPLETE("{\"type\":\"object\",\"additionalProperties\":false}", "{}");
    REJECT("{\"type\":\"object\",\"additionalProperties\":false}", "{\"k\":1}");
    /* keys that share a prefix, and a key that needs escaping */
    const char *k = "{\"properties\":{\"ab\":{\"type\":\"null\"},\"abc\":{\"type\":\"null\"},"
                    "\"q\\\"\":{\"type\":\"null\"}}}";
    COMPLETE(k, "{\"abc\":null}");
    COMPLETE(k, "{\"ab\":null,\"abc\":null,\"q\\\"\":null}");
    COMPLETE(k, "{}");
}
END_TEST

START_TEST(arrays)
{
    const char *s = "{\"type\":\"array\",\"items\":{\"type\":\"integer\"},\"minItems\":1,"
                    "\"maxItems\":2}";
    COMPLETE(s, "[1]");
    COMPLETE(s, "[1,2]");
    REJECT(s, "[]");
    REJECT(s, "[1,2,3]");
    REJECT(s, "[\"a\"]");
    COMPLETE("{\"type\":\"array\"}", "[1,\"a\",[]]");
    COMPLETE("{\"type\":\"array\",\"maxItems\":0}", "[]");
    REJECT("{\"type\":\"array\",\"maxItems\":0}", "[1]");
}
END_TEST

START_TEST(strings)
{
    const char *s = "{\"type\":\"string\",\"minLength\":2,\"maxLength\":3}";
    COMPLETE(s, "\"ab\"");
    COMPLETE(s, "\"\xc3\xa9\xc3\xa9\xc3\xa9\""); /* characters, not bytes */
    COMPLETE(s, "\"a\\n\"");
    REJECT(s, "\"a\"");
    REJECT(s, "\"abcd\"");
    REJECT(s, "\"\\u0041b\""); /* \u only in strings without length limits */
    const char *e = "{\"type\":\"string\",\"enum\":[\"red\",\"green\",\"re\"]}";
    COMPLETE(e, "\"red\"");
    COMPLETE(e, "\"re\"");
    PREFIX(e, "\"r");
    REJECT(e, "\"blue\"");
    REJECT(e, "\"gree\"");
    COMPLETE("{\"const\":\"x\"}", "\"x\"");
    REJECT("{\"const\":\"x\"}", "\"y\"");
}
END_TEST

START_TEST(numbers)
{
    const char *i = "{\"type\":\"integer\",\"minimum\":-5,\"maximum\":120}";
    COMPLETE(i, "-5");
    COMPLETE(i, "0");
    COMPLETE(i, "120");
    COMPLETE(i, "12");
    REJECT(i, "-6");
    REJECT(i, "121");
    REJECT(i, "1.5");
    REJECT("{\"type\":\"integer\",\"minimum\":0}", "-0"); /* '-' only where negatives fit */
    REJECT(i, "1e2");
    const char *p = "{\"type\":\"integer\",\"minimum\":100,\"maximum\":200}";
    PREFIX(p, "1");
    PREFIX(p, "2");
    REJECT(p, "3");
    PREFIX(p, "20"); /* 200 */
    REJECT(p, "21");
    REJECT(p, "99");
    const char *n = "{\"type\":\"number\",\"minimum\":0.5,\"maximum\":2}";
    COMPLETE(n, "0.5");
    COMPLETE(n, "1.25");
    COMPLETE(n, "2");
    COMPLETE(n, "2.0");
    REJECT(n, "0.4");
    REJECT(n, "2.01");
    PREFIX(n, "0");
    REJECT(n, "3");
    REJECT(n, "1e0"); /* no exponent when bounded */
    COMPLETE("{\"type\":\"number\"}", "-1.5E+12");
    PREFIX("{\"type\":\"number\"}", "1.");
    REJECT("{\"type\":\"number\"}", "1.e5");
    REJECT("{\"type\":\"number\"}", ".5");
    REJECT("{\"type\":\"number\"}", "1234567890123"); /* at most 12 integer digits */
    COMPLETE("{\"enum\":[1,12,\"a\"]}", "1");
    COMPLETE("{\"enum\":[1,12,\"a\"]}", "12");
    REJECT("{\"enum\":[1,12,\"a\"]}", "123");
}
END_TEST

START_TEST(literals_anyof_refs)
{
    COMPLETE("{\"type\":\"boolean\"}", "false");
    REJECT("{\"type\":\"boolean\"}", "null");
    COMPLETE("{\"type\":\"null\"}", "null");
    const char *a = "{\"anyOf\":[{\"type\":\"string\",\"maxLength\":1},{\"type\":\"integer\"},"
                    "{\"type\":\"null\"}]}";
    COMPLETE(a, "\"x\"");
    COMPLETE(a, "7");
    COMPLETE(a, "null");
    REJECT(a, "true");
    REJECT(a, "\"xy\"");
    const char *t = "{\"type\":[\"string\",\"null\"],\"maxLength\":2}";
    COMPLETE(t, "\"ab\"");
    COMPLETE(t, "null");
    REJECT(t, "\"abc\"");
    COMPLETE("{\"type\":[\"integer\",\"number\"]}", "1.5");
    const char *r = "{\"$defs\":{\"pt\":{\"type\":\"object\",\"properties\":{\"x\":{\"type\":"
                    "\"integer\"}},\"required\":[\"x\"]}},\"type\":\"array\",\"items\":{\"$ref\":"
                    "\"#/$defs/pt\"}}";
    COMPLETE(r, "[{\"x\":1},{\"x\":2}]");
    REJECT(r, "[{}]");
    COMPLETE("{\"title\":\"t\",\"description\":\"d\",\"default\":1,\"examples\":[1],"
             "\"$schema\":\"x\",\"type\":\"integer\"}",
             "3");
    COMPLETE("{\"enum\":[{\"a\":[1,2]},null]}", "{\"a\":[1,2]}");
    COMPLETE("{\"definitions\":{\"a\":{\"type\":\"null\"}},\"$ref\":\"#/definitions/a\"}", "null");
    /* additionalProperties true is allowed (nothing extra is written) */
    const char *open = "{\"properties\":{\"a\":{\"const\":1}},\"additionalProperties\":true}";
    COMPLETE(open, "{\"a\":1}");
    REJECT(open, "{\"b\":1}");
}
END_TEST

/* err names what is not supported, and where. */
/* ---- shortest completions ---- */

static int min_bytes(const grammar *g, const char *text, size_t len)
{
    int r = grammar_min_bytes(g, text, len);
    ck_assert_int_ne(r, -2);
    return r;
}

/* The shortest completion of buf[0, len) (room for one more byte) is exact: 0 exactly when
 * it is complete, else one more than the best next byte's, so that some byte always brings it
 * one closer (what a budget needs). Returns that byte, or -1 when complete. */
static int check_exact(const grammar *g, char *buf, size_t len)
{
    int r = min_bytes(g, buf, len);
    ck_assert_msg(r >= 0, "not a prefix: %.*s", (int)len, buf);
    ck_assert_msg((r == 0) == (grammar_match(g, buf, len) == 1), "%.*s: %d to go", (int)len, buf,
                  r);
    if (r == 0) return -1;
    int best = -1, best_b = -1;
    for (int b = 1; b < 256; b++) {
        buf[len] = (char)b;
        int rb = min_bytes(g, buf, len + 1);
        if (rb >= 0 && (best < 0 || rb < best)) best = rb, best_b = b;
    }
    ck_assert_msg(best == r - 1, "%.*s: shortest %d, but the best next byte leaves %d", (int)len,
                  buf, r, best);
    return best_b;
}

/* check_exact along text's shortest completion, which must end complete. */
static void check_descent(const grammar *g, const char *text)
{
    char buf[512];
    size_t len = strlen(text);
    ck_assert(len < sizeof buf - 64);
    memcpy(buf, text, len);
    int start = min_bytes(g, buf, len), r = start;
    for (int b; (b = check_exact(g, buf, len)) >= 0; r--)
        buf[len++] = (char)b;
    ck_assert_int_eq(r, 0);
    ck_assert_msg(grammar_match(g, buf, len) == 1, "%s: %d bytes on, \"%.*s\" is not complete",
                  text, start, (int)len, buf);
}

/* grammar_min_bytes of text under schema is want, and exact. */
static void expect_min(const char *schema, const char *text, int want)
{
    char err[256];
    grammar *g = grammar_compile(schema, err, sizeof err);
    ck_assert_msg(g != NULL, "%s: %s", schema, err);
    int r = min_bytes(g, text, strlen(text));
    ck_assert_msg(r == want, "%s | %s: shortest completion %d, want %d", schema, text, r, want);
    check_descent(g, text);
    grammar_destroy(g);
}

START_TEST(shortest_completion)
{
    const char *any = "{}";
    expect_min(any, "", 1); /* 0 */
    expect_min(any, "12", 0);
    expect_min(any, "-", 1);
    expect_min(any, "1.", 1);
    expect_min(any, "1e", 1);
    expect_min(any, "1e+", 1);
    expect_min(any, "tr", 2);
    expect_min(any, "\"ab", 1);
    expect_min(any, "\"\\", 2);       /* the escaped character, the quote */
    expect_min(any, "\"\\u00", 3);    /* two hex digits, the quote */
    expect_min(any, "\"\xe2\x82", 2); /* the last UTF-8 byte, the quote */
    expect_min(any, "{", 1);
    expect_min(any, "{\"", 4); /* ":0} */
    expect_min(any, "{\"a\":", 2);
    expect_min(any, "{\"a\":1,", 5); /* "":0} */
    expect_min(any, "[1,", 2);
    expect_min(any, "[[[", 3);
    expect_min(any, "{\"a\":[{\"b\":\"x", 4);
    REJECT(any, "{\"a\"}");

    const char *obj =
        "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"minLength\":3},"
        "\"n\":{\"type\":\"integer\",\"minimum\":100},\"tags\":{\"type\":\"array\","
        "\"items\":{\"type\":\"string\"},\"minItems\":2}},\"required\":[\"name\",\"tags\"]}";
    expect_min(obj, "", 29); /* {"name":"aaa","tags":["",""]} */
    expect_min(obj, "{\"name\":\"a", 19);
    expect_min(obj, "{\"name\":\"abcd\",", 15);        /* the required "tags", not "n" first */
    expect_min(obj, "{\"name\":\"abcd\",\"n\":", 19);  /* 100 */
    expect_min(obj, "{\"name\":\"abcd\",\"n\":5", 18); /* 500 */
    expect_min(obj, "{\"name\":\"abcd\",\"tags\":[\"\"", 5);
    const char *opt = "{\"properties\":{\"a\":{\"type\":\"boolean\"},\"bb\":{\"type\":\"null\"}}}";
    expect_min(opt, "", 2);
    expect_min(opt, "{\"a\":true,", 10); /* "bb":null} */
    expect_min(opt, "{\"", 8);           /* a":true} */

    const char *num = "{\"type\":\"number\",\"minimum\":1.25,\"maximum\":1.5}";
    expect_min(num, "", 3); /* 1.3 */
    expect_min(num, "1.", 1);
    expect_min(num, "1.2", 1); /* 1.25 .. 1.29 */
    const char *neg = "{\"type\":\"integer\",\"minimum\":-20,\"maximum\":-10}";
    expect_min(neg, "", 3); /* -10 */
    expect_min(neg, "-", 2);
    expect_min(neg, "-2", 1);
    expect_min("{\"type\":\"integer\",\"minimum\":1000}", "", 4);
    expect_min("{\"type\":\"number\",\"minimum\":0.001,\"maximum\":0.002}", "0", 4);
    expect_min("{\"enum\":[\"red\",\"green\",7]}", "", 1);
    expect_min("{\"enum\":[\"red\",\"green\",7]}", "\"g", 5);
    const char *arr = "{\"type\":\"array\",\"items\":{\"type\":\"integer\",\"minimum\":10},"
                      "\"minItems\":3}";
    expect_min(arr, "", 10); /* [10,10,10] */
    expect_min(arr, "[5", 8);
    expect_min(arr, "[10,10,10,", 3);
    expect_min("{\"type\":\"string\",\"minLength\":2}", "\"\xc3", 3);
    expect_min("{\"anyOf\":[{\"type\":\"string\",\"minLength\":4},{\"type\":\"null\"}]}", "", 4);
    expect_min("{\"type\":\"object\",\"additionalProperties\":false}", "", 2);
}
END_TEST

static void expect_error(const char *schema, const char *want1, const char *want2)
{
    char err[256];
    grammar *g = grammar_compile(schema, err, sizeof err);
    ck_assert_msg(g == NULL, "compiled: %s", schema);
    ck_assert_msg(strstr(err, want1) != NULL, "%s: %s", schema, err);
    if (want2) ck_assert_msg(strstr(err, want2) != NULL, "%s: %s", schema, err);
}

START_TEST(unsupported)
{
    expect_error("{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"pattern\":"
                 "\"a+\"}}}",
                 "\"pattern\"", "/properties/name");
    expect_error("{\"type\":\"string\",\"format\":\"date\"}", "\"format\"", NULL);
    expect_error("{\"oneOf\":[{}]}", "\"oneOf\"", NULL);
    expect_error("{\"allOf\":[{}]}", "\"allOf\"", NULL);
    expect_error("{\"items\":{\"exclusiveMinimum\":1}}", "\"exclusiveMinimum\"", "/items");
    expect_error("{\"patternProperties\":{}}", "\"patternProperties\"", NULL);
    expect_error("{\"properties\":{\"a/b\":{\"not\":{}}}}", "\"not\"", "/properties/a~1b");
    expect_error("{\"type\":\"object\",\"additionalProperties\":{\"type\":\"string\"}}",
                 "additionalProperties", NULL);
    expect_error("{\"$defs\":{\"n\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/$defs/n\"}}},"
                 "\"$ref\":\"#/$defs/n\"}",
                 "recursive", "#/$defs/n");
    expect_error("{\"$ref\":\"#\"}", "$ref", NULL);
    expect_error("{\"$ref\":\"#/$defs/missing\"}", "$ref", NULL);
    expect_error("{\"anyOf\":[{\"type\":\"integer\"},{\"type\":\"number\"}]}", "anyOf", NULL);
    expect_error("{\"type\":\"integer\",\"minimum\":3,\"maximum\":2}", "minimum", NULL);
    expect_error("{\"type\":\"strin\"}", "strin", NULL);
    expect_error("{\"type\":\"object\",\"properties\":{\"a\":{}},\"required\":[\"b\"]}", "\"b\"",
                 NULL);
    expect_error("{\"enum\":[]}", "enum", NULL);
    expect_error("[1]", "object", NULL);
    char deep[1024] = "";
    for (int i = 0; i < 31; i++)
        strcat(deep, "{\"items\":");
    strcat(deep, "{}");
    for (int i = 0; i < 31; i++)
        strcat(deep, "}");
    expect_error(deep, "deeper", NULL);
    expect_error("{", "JSON", NULL);
}
END_TEST

/* ---- an independent validator ---- */

static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

static bool is_type(const cJSON *v, const char *t)
{
    if (!strcmp(t, "string")) return cJSON_IsString(v);
    if (!strcmp(t, "boolean")) return cJSON_IsBool(v);
    if (!strcmp(t, "null")) return cJSON_IsNull(v);
    if (!strcmp(t, "object")) return cJSON_IsObject(v);
    if (!strcmp(t, "array")) return cJSON_IsArray(v);
    if (!strcmp(t, "number")) return cJSON_IsNumber(v);
    if (!strcmp(t, "integer")) return cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble);
    return false;
}

static bool valid(const cJSON *v, const cJSON *s, const cJSON *root)
{
    const cJSON *k;
    if ((k = cJSON_GetObjectItemCaseSensitive(s, "$ref"))) {
        const char *name = strrchr(k->valuestring, '/') + 1;
        return valid(
            v,
            cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, "$defs"), name),
            root);
    }
    if ((k = cJSON_GetObjectItemCaseSensitive(s, "anyOf"))) {
        const cJSON *b;
        cJSON_ArrayForEach(b, k) if (valid(v, b, root)) return true;
        return false;
    }
    if ((k = cJSON_GetObjectItemCaseSensitive(s, "const")) && !cJSON_Compare(v, k, true))
        return false;
    if ((k = cJSON_GetObjectItemCaseSensitive(s, "enum"))) {
        bool any = false;
        const cJSON *e;
        cJSON_ArrayForEach(e, k) any |= cJSON_Compare(v, e, true);
        if (!any) return false;
    }
    if ((k = cJSON_GetObjectItemCaseSensitive(s, "type"))) {
        bool any = false;
        if (cJSON_IsString(k)) any = is_type(v, k->valuestring);
        const cJSON *e;
        cJSON_ArrayForEach(e, k) any |= cJSON_IsString(e) && is_type(v, e->valuestring);
        if (!any) return false;
    }
    if (cJSON_IsString(v)) {
        size_t n = utf8_chars(v->valuestring);
        if ((k = cJSON_GetObjectItemCaseSensitive(s, "maxLength")) && n > k->valuedouble)
            return false;
        if ((k = cJSON_GetObjectItemCaseSensitive(s, "minLength")) && n < k->valuedouble)
            return false;
    }
    if (cJSON_IsNumber(v)) {
        if ((k = cJSON_GetObjectItemCaseSensitive(s, "minimum")) && v->valuedouble < k->valuedouble)
            return false;
        if ((k = cJSON_GetObjectItemCaseSensitive(s, "maximum")) && v->valuedouble > k->valuedouble)
            return false;
    }
    if (cJSON_IsArray(v)) {
        int n = cJSON_GetArraySize(v);
        if ((k = cJSON_GetObjectItemCaseSensitive(s, "maxItems")) && n > k->valuedouble)
            return false;
        if ((k = cJSON_GetObjectItemCaseSensitive(s, "minItems")) && n < k->valuedouble)
            return false;
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(s, "items"), *e;
        if (items) cJSON_ArrayForEach(e, v) if (!valid(e, items, root)) return false;
    }
    if (cJSON_IsObject(v)) {
        const cJSON *props = cJSON_GetObjectItemCaseSensitive(s, "properties"), *e;
        const cJSON *req = cJSON_GetObjectItemCaseSensitive(s, "required");
        cJSON_ArrayForEach(
            e, req) if (!cJSON_GetObjectItemCaseSensitive(v, e->valuestring)) return false;
        bool closed = cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(s, "additionalProperties"));
        cJSON_ArrayForEach(e, v)
        {
            const cJSON *ps = cJSON_GetObjectItemCaseSensitive(props, e->string);
            if (!ps && closed) return false;
            if (ps && !valid(e, ps, root)) return false;
        }
    }
    return true;
}

/* ---- random bounded schemas ---- */

static uint64_t g_rng;

static uint32_t rnd(uint32_t n)
{
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(g_rng >> 33) % n;
}

static const char *const g_words[] = {"red", "blue", "circle", "x", "big", "two words", "é"};

/* A schema of depth at most depth (an object, array or anyOf when container is set); *len gets
 * the longest answer it allows, in bytes. */
static cJSON *gen(int depth, cJSON *root, int *len, bool container)
{
    cJSON *s = cJSON_CreateObject();
    int kind = container ? 7 + (int)rnd(4) : (int)rnd(depth > 0 ? 11 : 7);
    switch (kind) {
    case 0: {
        int max = (int)rnd(10);
        cJSON_AddStringToObject(s, "type", "string");
        cJSON_AddNumberToObject(s, "maxLength", max);
        if (rnd(3) == 0) cJSON_AddNumberToObject(s, "minLength", rnd((uint32_t)max + 1));
        *len = 2 + 4 * max; /* a character is at most 4 bytes (or a 2-byte escape) */
        break;
    }
    case 1: {
        int lo = (int)rnd(2000) - 1000, hi = lo + (int)rnd(3000);
        cJSON_AddStringToObject(s, "type", "integer");
        if (rnd(4)) cJSON_AddNumberToObject(s, "minimum", lo);
        if (rnd(4)) cJSON_AddNumberToObject(s, "maximum", hi);
        *len = cJSON_GetArraySize(s) == 3 ? 6 : 16;
        break;
    }
    case 2: {
        int lo = (int)rnd(200) - 100;
        cJSON_AddStringToObject(s, "type", "number");
        cJSON_AddNumberToObject(s, "minimum", lo);
        cJSON_AddNumberToObject(s, "maximum", lo + (int)rnd(50) + 1);
        *len = 12;
        break;
    }
    case 3:
        cJSON_AddStringToObject(s, "type", rnd(2) ? "boolean" : "null");
        *len = 5;
        break;
    case 4: {
        cJSON *e = cJSON_AddArrayToObject(s, "enum");
        int n = 1 + (int)rnd(4);
        *len = 0;
        for (int i = 0; i < n; i++) {
            if (rnd(4) == 0) {
                cJSON_AddItemToArray(e, cJSON_CreateNumber((int)rnd(100)));
                *len = *len > 3 ? *len : 3;
            } else {
                const char *w = g_words[rnd(sizeof g_words / sizeof *g_words)];
                cJSON_AddItemToArray(e, cJSON_CreateString(w));
                *len = *len > (int)strlen(w) + 2 ? *len : (int)strlen(w) + 2;
            }
        }
        if (n == 1 && rnd(2)) {
            cJSON *one = cJSON_DetachItemFromArray(e, 0);
            cJSON_DeleteItemFromObject(s, "enum");
            cJSON_AddItemToObject(s, "const", one);
        }
        break;
    }
    case 5:
        cJSON_AddItemToObject(s, "type",
                              cJSON_CreateStringArray((const char *[]){"string", "null"}, 2));
        cJSON_AddNumberToObject(s, "maxLength", 3);
        *len = 14;
        break;
    case 6: {
        cJSON_AddStringToObject(s, "type", "boolean");
        cJSON_AddStringToObject(s, "description", "a flag");
        *len = 5;
        break;
    }
    case 7:
    case 8: { /* object */
        cJSON_AddStringToObject(s, "type", "object");
        cJSON *props = cJSON_AddObjectToObject(s, "properties");
        cJSON *req = cJSON_AddArrayToObject(s, "required");
        int n = 1 + (int)rnd(3);
        *len = 2;
        for (int i = 0; i < n; i++) {
            char name[16];
            snprintf(name, sizeof name, "%s%d", g_words[rnd(4)], i);
            int l;
            cJSON_AddItemToObject(props, name, gen(depth - 1, root, &l, false));
            if (rnd(2)) cJSON_AddItemToArray(req, cJSON_CreateString(name));
            *len += (int)strlen(name) + 4 + l;
        }
        if (rnd(2)) cJSON_AddFalseToObject(s, "additionalProperties");
        break;
    }
    case 9: { /* array */
        int l, max = 1 + (int)rnd(3);
        cJSON_AddStringToObject(s, "type", "array");
        cJSON_AddItemToObject(s, "items", gen(depth - 1, root, &l, false));
        cJSON_AddNumberToObject(s, "maxItems", max);
        if (rnd(2)) cJSON_AddNumberToObject(s, "minItems", rnd((uint32_t)max + 1));
        *len = 2 + max * (l + 1);
        break;
    }
    default: { /* anyOf of types that begin differently, or a $ref */
        if (rnd(3) == 0) {
            cJSON *defs = cJSON_GetObjectItemCaseSensitive(root, "$defs");
            if (!defs) defs = cJSON_AddObjectToObject(root, "$defs");
            char name[16], ref[32];
            snprintf(name, sizeof name, "d%d", cJSON_GetArraySize(defs));
            snprintf(ref, sizeof ref, "#/$defs/%s", name);
            cJSON_AddItemToObject(defs, name, gen(depth - 1, root, len, false));
            cJSON_AddStringToObject(s, "$ref", ref);
            break;
        }
        cJSON *br = cJSON_AddArrayToObject(s, "anyOf");
        *len = 5;
        cJSON *a = cJSON_CreateObject();
        cJSON_AddStringToObject(a, "type", "string");
        cJSON_AddNumberToObject(a, "maxLength", 5);
        cJSON_AddItemToArray(br, a);
        cJSON *b = cJSON_CreateObject();
        cJSON_AddStringToObject(b, "type", "integer");
        cJSON_AddNumberToObject(b, "minimum", 0);
        cJSON_AddNumberToObject(b, "maximum", 9);
        cJSON_AddItemToArray(br, b);
        int l;
        cJSON *c = gen(depth - 1, root, &l, false);
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(c, "type");
        if (cJSON_IsString(t) &&
            (!strcmp(t->valuestring, "object") || !strcmp(t->valuestring, "array") ||
             !strcmp(t->valuestring, "null"))) {
            cJSON_AddItemToArray(br, c);
            *len = l;
        } else {
            cJSON_Delete(c);
        }
        *len = *len > 22 ? *len : 22;
        break;
    }
    }
    return s;
}

/* ---- decoding with the demo model ---- */

typedef struct {
    eng_model *m;
    eng_ctx *c;
    tok *t;
    chat_ctx cc;
    chat_prompt p;
    float *first; /* the logits after the prompt */
    grammar_vocab *v;
    int n_vocab;
} demo;

static void demo_open(demo *d)
{
    char err[512];
    memset(d, 0, sizeof *d);
    ck_assert_msg(eng_model_load(TERN_DEMO_MODEL, NULL, &d->m, err, sizeof err) == ENG_OK, "%s",
                  err);
    ck_assert_int_eq(tok_load(eng_model_text_file(d->m), &d->t, err, sizeof err), 0);
    eng_params ep = eng_default_params();
    ep.n_ctx = 512;
    ep.n_threads = 1;
    ck_assert_msg(eng_ctx_create(d->m, &ep, &d->c, err, sizeof err) == ENG_OK, "%s", err);
    ck_assert_int_eq(chat_init(&d->cc, d->m, d->t, err, sizeof err), 0);
    chat_msg msg = {.role = PROMPT_USER, .text = "Describe the shape as JSON."};
    ck_assert_int_eq(chat_prompt_build(&d->cc, d->c, &msg, 1, NULL, 0, &d->p, err, sizeof err), 0);
    ck_assert_int_eq(chat_prefill(d->c, 0, &d->p, 0, err, sizeof err), 0);
    d->n_vocab = eng_model_get_info(d->m)->n_vocab;
    d->first = malloc((size_t)d->n_vocab * sizeof *d->first);
    memcpy(d->first, eng_logits(d->c, 0), (size_t)d->n_vocab * sizeof *d->first);
    int32_t stops[2] = {tok_eos(d->t), tok_special(d->t, "<end_of_utterance>")};
    d->v = grammar_vocab_create(d->t, stops, 2);
    ck_assert_ptr_nonnull(d->v);
}

static void demo_close(demo *d)
{
    grammar_vocab_destroy(d->v);
    free(d->first);
    chat_prompt_free(&d->p);
    eng_ctx_destroy(d->c);
    tok_free(d->t);
    eng_model_free(d->m);
}

/* Decodes under g at temperature temp until a stop token or cap tokens; out gets the answer.
 * With budgeted, the grammar is told the tokens left of cap before each pick. Returns the
 * number of tokens, or -1 if the mask ever left no token. */
static int decode_budget(demo *d, grammar *g, float temp, uint64_t seed, int cap, bool budgeted,
                         char *out, size_t outcap, bool *stopped, float *scratch, bool *cut)
{
    char err[512];
    sampler_params sp = sampler_default_params();
    sp.temperature = temp;
    sp.seed = seed;
    sampler *s = sampler_create(d->n_vocab, &sp);
    grammar_state *gs = grammar_state_create(g, d->v);
    ck_assert(s && gs);
    sampler_set_grammar(s, gs);
    ck_assert_int_eq(eng_slot_truncate(d->c, 0, d->p.n, err, sizeof err), ENG_OK);
    const float *logits = d->first;
    size_t w = 0;
    int n = 0;
    *stopped = false;
    int rc = 0;
    while (n < cap) {
        if (budgeted) grammar_state_set_budget(gs, cap - n);
        /* the mask never leaves nothing */
        memcpy(scratch, logits, (size_t)d->n_vocab * sizeof *scratch);
        grammar_state_mask(gs, scratch);
        int left = 0;
        for (int i = 0; i < d->n_vocab; i++)
            left += isfinite(scratch[i]);
        if (left == 0) {
            rc = -1;
            break;
        }
        int32_t id = sampler_sample(s, logits);
        ck_assert_msg(isfinite(scratch[id]), "picked a masked token");
        if (chat_is_stop(&d->cc, id)) {
            *stopped = true;
            break;
        }
        size_t len;
        const char *piece = tok_piece(d->t, id, false, &len);
        ck_assert(w + len < outcap);
        memcpy(out + w, piece, len);
        w += len;
        eng_item it = {
            .slot = 0, .n_tokens = 1, .tokens = &id, .pos = d->p.n + n, .want_logits = true};
        ck_assert_int_eq(eng_step(d->c, &it, 1, err, sizeof err), ENG_OK);
        logits = eng_logits(d->c, 0);
        n++;
        /* with a budget that fits the schema, what is left always fits in the tokens left */
        if (budgeted && grammar_min_bytes(g, "", 0) <= cap)
            ck_assert_int_le(grammar_state_min_bytes(gs), cap - n);
    }
    out[w] = 0;
    if (cut) *cut = grammar_state_cut_short(gs);
    grammar_state_destroy(gs);
    sampler_destroy(s);
    return rc < 0 ? rc : n;
}

static int decode(demo *d, grammar *g, float temp, uint64_t seed, int cap, char *out, size_t outcap,
                  bool *stopped, float *scratch)
{
    return decode_budget(d, g, temp, seed, cap, false, out, outcap, stopped, scratch, NULL);
}

#ifndef N_SCHEMAS
#define N_SCHEMAS 200
#endif

START_TEST(random_schemas)
{
    demo d;
    demo_open(&d);
    float *scratch = malloc((size_t)d.n_vocab * sizeof *scratch);
    char out[4096], err[512];
    g_rng = 20261130;
    int done = 0, total_tokens = 0;
    while (done < N_SCHEMAS) {
        cJSON *root = cJSON_CreateObject();
        int len;
        cJSON *body = gen(3, root, &len, rnd(4) != 0);
        /* every token adds a byte: an answer of at most 190 bytes is complete within 191 */
        if (len > 190) {
            cJSON_Delete(body);
            cJSON_Delete(root);
            continue;
        }
        cJSON *defs = cJSON_DetachItemFromObject(root, "$defs");
        if (defs) cJSON_AddItemToObject(body, "$defs", defs);
        cJSON_Delete(root);
        char *text = cJSON_PrintUnformatted(body);
        grammar *g = grammar_compile(text, err, sizeof err);
        ck_assert_msg(g != NULL, "%s: %s", text, err);
        bool stopped;
        int n = decode(&d, g, 1.0f, 1000 + (uint64_t)done, 200, out, sizeof out, &stopped, scratch);
        ck_assert_msg(n >= 0, "schema %s: no token allowed after \"%s\"", text, out);
        ck_assert_msg(stopped, "schema %s: incomplete after %d tokens: %s", text, n, out);
        ck_assert_int_eq(grammar_match(g, out, strlen(out)), 1);
        cJSON *v = cJSON_Parse(out);
        ck_assert_msg(v != NULL, "schema %s: not JSON: %s", text, out);
        ck_assert_msg(valid(v, body, body), "schema %s: invalid answer %s", text, out);
        cJSON_Delete(v);
        /* shortest completions are exact on every prefix of the first answers */
        char pre[4096];
        for (size_t k = 0; done < 25 && k <= strlen(out); k++) {
            memcpy(pre, out, k);
            check_exact(g, pre, k);
        }
        if (getenv("GV")) fprintf(stderr, "%s\n  -> %s\n", text, out);
        grammar_destroy(g);
        free(text);
        cJSON_Delete(body);
        total_tokens += n;
        done++;
    }
    ck_assert_int_gt(total_tokens, N_SCHEMAS); /* answers, not just stops */
    free(scratch);
    demo_close(&d);
}
END_TEST

START_TEST(any_json_never_stuck)
{
    /* "any JSON" has no bound: check only that masks always leave a token and what comes out
     * is a valid prefix (or a complete value). */
    demo d;
    demo_open(&d);
    float *scratch = malloc((size_t)d.n_vocab * sizeof *scratch);
    char out[4096], err[512];
    grammar *g = grammar_compile("{}", err, sizeof err);
    ck_assert_ptr_nonnull(g);
    for (int k = 0; k < 10; k++) {
        bool stopped;
        int n = decode(&d, g, 1.0f, 77 + (uint64_t)k, 120, out, sizeof out, &stopped, scratch);
        ck_assert_msg(n >= 0, "no token allowed after \"%s\"", out);
        ck_assert_int_ge(grammar_match(g, out, strlen(out)), stopped ? 1 : 0);
        if (stopped) {
            cJSON *v = cJSON_Parse(out);
            ck_assert_msg(v != NULL, "not JSON: %s", out);
            cJSON_Delete(v);
        }
    }
    grammar_destroy(g);
    free(scratch);
    demo_close(&d);
}
END_TEST

START_TEST(vocab_has_single_bytes)
{
    /* the budget's guarantee counts one token per byte of the shortest completion */
    demo d;
    demo_open(&d);
    bool have[256] = {0};
    for (int i = 0; i < d.n_vocab; i++) {
        size_t len;
        tok_type ty = tok_type_of(d.t, i);
        if (ty != TOK_TYPE_NORMAL && ty != TOK_TYPE_BYTE) continue;
        const char *p = tok_piece(d.t, i, false, &len);
        if (len == 1) have[(unsigned char)p[0]] = true;
    }
    for (int b = 0x20; b < 0xC0; b++)
        ck_assert_msg(have[b] || b == 0x7F, "no one-byte token for 0x%02x", b);
    demo_close(&d);
}
END_TEST

/* Unbounded schemas under small budgets, at temperature 1: every answer is complete and valid,
 * however long the model would have gone on. */
START_TEST(budgets_close_answers)
{
    static const char *const schemas[] = {
        "{}",
        "{\"type\":\"object\"}",
        "{\"type\":\"array\"}",
        "{\"type\":\"string\"}",
        "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\"},\"note\":{\"type\":"
        "\"string\"},\"n\":{\"type\":\"integer\"}},\"required\":[\"name\",\"note\"]}",
        "{\"type\":\"array\",\"items\":{\"type\":\"object\",\"properties\":{\"k\":{\"type\":"
        "\"string\",\"minLength\":2},\"v\":{\"type\":\"array\",\"items\":{\"type\":\"string\"}}},"
        "\"required\":[\"k\",\"v\"]},\"minItems\":2}",
        "{\"type\":\"number\",\"minimum\":0.25,\"maximum\":0.5}",
    };
    static const int budgets[] = {8, 20, 60};
    demo d;
    demo_open(&d);
    float *scratch = malloc((size_t)d.n_vocab * sizeof *scratch);
    char out[4096], err[512];
    int n_runs = 0, n_cut = 0;
    for (size_t i = 0; i < sizeof schemas / sizeof *schemas; i++) {
        grammar *g = grammar_compile(schemas[i], err, sizeof err);
        ck_assert_msg(g != NULL, "%s: %s", schemas[i], err);
        cJSON *schema = cJSON_Parse(schemas[i]);
        int need = grammar_min_bytes(g, "", 0);
        for (size_t b = 0; b < sizeof budgets / sizeof *budgets; b++) {
            for (int k = 0; k < 6; k++) {
                bool stopped, cut;
                uint64_t seed = 500 + 31 * i + 7 * b + (uint64_t)k;
                int n = decode_budget(&d, g, 1.0f, seed, budgets[b], true, out, sizeof out,
                                      &stopped, scratch, &cut);
                ck_assert_msg(n >= 0, "%s: no token allowed after \"%s\"", schemas[i], out);
                ck_assert_int_le(n, budgets[b]);
                if (budgets[b] < need) {
                    /* the shortest answer has more bytes than the budget has tokens: the mask
                     * still leaves the tokens that shorten it most (long ones may still fit it) */
                    ck_assert_int_ge(grammar_match(g, out, strlen(out)), 0);
                    ck_assert(cut);
                    continue;
                }
                ck_assert_msg(grammar_match(g, out, strlen(out)) == 1,
                              "%s, %d tokens: incomplete answer %s", schemas[i], budgets[b], out);
                cJSON *v = cJSON_Parse(out);
                ck_assert_msg(v && valid(v, schema, schema), "%s: invalid answer %s", schemas[i],
                              out);
                cJSON_Delete(v);
                if (getenv("GV")) fprintf(stderr, "%s [%d] -> %s\n", schemas[i], budgets[b], out);
                n_runs++;
                n_cut += cut;
            }
        }
        cJSON_Delete(schema);
        grammar_destroy(g);
    }
    /* the budgets bit: without them these answers would run on (see any_json_never_stuck) */
    ck_assert_int_gt(n_cut, n_runs / 4);
    free(scratch);
    demo_close(&d);
}
END_TEST

START_TEST(greedy_is_masked_argmax)
{
    demo d;
    demo_open(&d);
    char err[256];
    /* the demo model's first word is not JSON: the grammar must change the pick */
    grammar *g = grammar_compile("{\"enum\":[\"red\",\"green\",7]}", err, sizeof err);
    grammar_state *gs = grammar_state_create(g, d.v);
    sampler_params sp = sampler_default_params();
    sp.temperature = 0;
    sampler *free_s = sampler_create(d.n_vocab, &sp), *s = sampler_create(d.n_vocab, &sp);
    sampler_set_grammar(s, gs);
    float *l = malloc((size_t)d.n_vocab * sizeof *l);
    memcpy(l, d.first, (size_t)d.n_vocab * sizeof *l);
    grammar_state_mask(gs, l);
    int best = -1;
    for (int i = 0; i < d.n_vocab; i++)
        if (isfinite(l[i]) && (best < 0 || l[i] > l[best])) best = i;
    ck_assert_int_ge(best, 0);
    int32_t unconstrained = sampler_sample(free_s, d.first);
    ck_assert(!isfinite(l[unconstrained]));
    ck_assert_int_eq(sampler_sample(s, d.first), best);
    /* and whole greedy answers are valid */
    char out[512];
    bool stopped;
    ck_assert_int_gt(decode(&d, g, 0.0f, 1, 50, out, sizeof out, &stopped, l), 0);
    ck_assert_msg(stopped &&
                      (!strcmp(out, "\"red\"") || !strcmp(out, "\"green\"") || !strcmp(out, "7")),
                  "%s", out);
    free(l);
    sampler_destroy(free_s);
    sampler_destroy(s);
    grammar_state_destroy(gs);
    grammar_destroy(g);
    demo_close(&d);
}
END_TEST

START_TEST(stop_only_when_complete)
{
    demo d;
    demo_open(&d);
    char err[256];
    grammar *g = grammar_compile("{\"type\":\"boolean\"}", err, sizeof err);
    grammar_state *s = grammar_state_create(g, d.v);
    int32_t eos = tok_special(d.t, "<end_of_utterance>");
    ck_assert(!grammar_state_complete(s));
    ck_assert_int_eq(grammar_state_min_bytes(s), 4); /* true */
    ck_assert(!grammar_state_allows(s, eos));
    ck_assert_int_eq(grammar_state_accept(s, eos), -1);
    int32_t ids[8];
    int n = tok_encode(d.t, "true", 4, ids, 8);
    ck_assert_int_gt(n, 0);
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(grammar_state_accept(s, ids[i]), 0);
    ck_assert(grammar_state_complete(s));
    ck_assert_int_eq(grammar_state_min_bytes(s), 0);
    float *l = calloc((size_t)d.n_vocab, sizeof *l);
    grammar_state_mask(s, l);
    for (int i = 0; i < d.n_vocab; i++)
        ck_assert_msg(isfinite(l[i]) == chat_is_stop(&d.cc, i), "token %d", i);
    ck_assert_int_eq(grammar_state_accept(s, eos), 0);
    free(l);
    grammar_state_destroy(s);
    grammar_destroy(g);
    demo_close(&d);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("grammar");
    TCase *tc = tcase_create("automaton");
    tcase_add_test(tc, any_json);
    tcase_add_test(tc, objects);
    tcase_add_test(tc, arrays);
    tcase_add_test(tc, strings);
    tcase_add_test(tc, numbers);
    tcase_add_test(tc, literals_anyof_refs);
    tcase_add_test(tc, unsupported);
    tcase_add_test(tc, shortest_completion);
    suite_add_tcase(s, tc);
    TCase *tm = tcase_create("model");
    tcase_set_timeout(tm, 600);
    tcase_add_test(tm, stop_only_when_complete);
    tcase_add_test(tm, greedy_is_masked_argmax);
    tcase_add_test(tm, any_json_never_stuck);
    tcase_add_test(tm, vocab_has_single_bytes);
    tcase_add_test(tm, budgets_close_answers);
    tcase_add_test(tm, random_schemas);
    suite_add_tcase(s, tm);
    return tu_run(s, CK_FORK_GETENV);
}
