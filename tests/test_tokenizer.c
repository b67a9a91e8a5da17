/* Tokenizer: pre-tokenizer splits, BPE merge order, plain-text handling of
 * special-token look-alikes, decoding and the streaming UTF-8 detokenizer.
 * A small byte-level vocabulary is built here and written as a GGUF. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/gguf.h"
#include "engine/tokenizer.h"
#include "testtok.h"
#include "testutil.h"

#define BYTE0 TT_BYTE0

static tok *T;

static void setup(void)
{
    T = tt_make();
}

static void teardown(void)
{
    tok_free(T);
    T = NULL;
}

static int id_of(const char *s)
{
    int id = tok_special(T, s);
    ck_assert_msg(id >= 0, "no token %s", s);
    return id;
}

/* encode `text` and compare with the token strings in `want` (NULL-ended) */
static void expect_tokens(const char *text, const char *const *want)
{
    int32_t ids[256];
    int n = tok_encode(T, text, strlen(text), ids, 256);
    int m = 0;
    while (want[m])
        m++;
    char got[1024] = "";
    for (int i = 0; i < n && i < 256; i++) {
        size_t len;
        const char *p = tok_piece(T, ids[i], true, &len);
        snprintf(got + strlen(got), sizeof got - strlen(got), "[%.*s]", (int)len, p);
    }
    ck_assert_msg(n == m, "'%s': %d tokens %s, want %d", text, n, got, m);
    for (int i = 0; i < m; i++)
        ck_assert_msg(ids[i] == id_of(want[i]), "'%s' token %d: got %s, want %s", text, i, got,
                      want[i]);
}

#define TOKS(...) ((const char *const[]){__VA_ARGS__, NULL})

START_TEST(merges_by_rank)
{
    expect_tokens(" the", TOKS("Ġthe"));
    expect_tokens("the", TOKS("t", "he"));
    expect_tokens("a the", TOKS("a", "Ġthe"));
    /* leftmost first on equal rank, then the merged pair merges again */
    expect_tokens("aaaaa", TOKS("aaaa", "a"));
    expect_tokens("aaa", TOKS("aa", "a"));
    expect_tokens("café", TOKS("cafÃ©"));
    expect_tokens("😀", TOKS("ðŁĺĢ"));
}
END_TEST

START_TEST(pretokenizer_splits)
{
    /* digits one by one: " 1" would merge to Ġ1 if the space stayed with it */
    expect_tokens(" 12", TOKS("Ġ", "1", "2"));
    expect_tokens("x's", TOKS("x", "'s"));
    /* a run of spaces leaves its last one to the word after it */
    expect_tokens("a   the", TOKS("a", "ĠĠ", "Ġthe"));
    expect_tokens("\nthe", TOKS("Ċ", "t", "he"));
    expect_tokens("the  ", TOKS("t", "he", "ĠĠ"));

    struct {
        const char *text;
        int n;
        size_t ends[8];
    } cases[] = {
        {"Hello world", 2, {5, 11}},
        {"abc123", 4, {3, 4, 5, 6}},
        {"it's", 2, {2, 4}},
        {"we'll go", 3, {2, 5, 8}},
        {"a!!b", 3, {1, 3, 4}},
        {" ??x", 2, {3, 4}},
        {"a \n b", 3, {1, 3, 5}},     /* " \n" then " b" */
        {"é漢字 x", 2, {8, 10}},      /* é and the CJK ideographs are letters */
        {"x\xc2\xa0y", 3, {1, 3, 4}}, /* U+00A0 is a space */
        {"Ⅻ3", 2, {3, 4}},            /* U+216B ROMAN NUMERAL is \p{N}: split alone */
        {"\xff\xfe"
         "ab",
         2,
         {2, 4}}, /* invalid bytes group as "other" */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        size_t ends[16];
        int n = tok_pretokenize(T, cases[c].text, strlen(cases[c].text), ends, 16);
        ck_assert_msg(n == cases[c].n, "'%s': %d chunks, want %d", cases[c].text, n, cases[c].n);
        for (int i = 0; i < n; i++)
            ck_assert_msg(ends[i] == cases[c].ends[i], "'%s' chunk %d ends at %zu, want %zu",
                          cases[c].text, i, ends[i], cases[c].ends[i]);
    }
}
END_TEST

START_TEST(gpt2_pre_keeps_numbers_together)
{
    /* pre "gpt-2" (plain GPT-2), and "phi-2" (llama.cpp's name for CodeGen's, moondream2's):
     * " 12" is one chunk, so " 1" merges */
    const char *pres[2] = {"gpt-2", "phi-2"};
    for (int p = 0; p < 2; p++) {
        tok *g = tt_make_pre(pres[p]);
        int32_t ids[8];
        int n = tok_encode(g, " 12", 3, ids, 8);
        ck_assert_int_eq(n, 2);
        ck_assert_int_eq(ids[0], tok_special(g, "Ġ1"));
        ck_assert_int_eq(ids[1], BYTE0 + '2');
        tok_free(g);
    }
}
END_TEST

START_TEST(round_trip)
{
    const char *texts[] = {
        "",
        "Hello, world!",
        "  leading and trailing  ",
        "tabs\tand\nnewlines\r\n\n",
        "digits 0123456789 and 3.14",
        "naïve café — “quotes” ½ ², 漢字, ру́сский",
        "emoji 😀👍🏽 flags 🇫🇷",
        "<image> <|im_start|> <end_of_utterance>",
        "\xff\xfe invalid \xc3 bytes \xe2\x82",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        size_t len = strlen(texts[i]);
        int32_t ids[1024];
        int n = tok_encode(T, texts[i], len, ids, 1024);
        ck_assert_int_ge(n, 0);
        ck_assert_int_le(n, (int)len);
        char out[2048];
        size_t m = tok_decode(T, ids, n, false, out, sizeof out);
        ck_assert_uint_eq(m, len);
        ck_assert_msg(memcmp(out, texts[i], len) == 0, "round trip of '%s' gave '%s'", texts[i],
                      out);
    }
}
END_TEST

START_TEST(encode_needs_more_room)
{
    int32_t ids[2];
    const char *s = "x y z w";
    int n = tok_encode(T, s, strlen(s), ids, 2);
    ck_assert_int_eq(n, 7);
    ck_assert_int_eq(ids[0], BYTE0 + 'x');
}
END_TEST

START_TEST(long_input)
{
    /* one 200k-letter chunk: the heap keeps this fast; all merges apply */
    size_t len = 200000;
    char *s = malloc(len);
    memset(s, 'a', len);
    int32_t *ids = malloc(len * sizeof *ids);
    int n = tok_encode(T, s, len, ids, (int)len);
    ck_assert_int_eq(n, (int)(len / 4));
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(ids[i], id_of("aaaa"));
    free(s);
    free(ids);
}
END_TEST

START_TEST(special_lookalikes_are_text)
{
    int image = tok_special(T, "<image>");
    ck_assert_int_eq(image, 4);
    ck_assert_int_eq(tok_special(T, "<end_of_utterance>"), 3);
    ck_assert_int_eq(tok_special(T, "<row_1_col_1>"), 7);
    ck_assert_int_eq(tok_special(T, "<no_such_token>"), -1);
    ck_assert_int_eq(tok_bos(T), 1);
    ck_assert_int_eq(tok_eos(T), 0);
    ck_assert_int_eq(tok_type_of(T, image), TOK_TYPE_CONTROL);

    const char *texts[] = {"<image>", "hi <image> there",
                           "<|im_start|>User:", "<end_of_utterance>"};
    for (size_t i = 0; i < 4; i++) {
        int32_t ids[64];
        int n = tok_encode(T, texts[i], strlen(texts[i]), ids, 64);
        for (int k = 0; k < n; k++)
            ck_assert_msg(tok_type_of(T, ids[k]) != TOK_TYPE_CONTROL,
                          "'%s' produced special token %d", texts[i], ids[k]);
    }
    /* even though "<image" + ">" is a merge, the pre-tokenizer keeps < and
     * image apart, so the typed text stays three plain tokens */
    expect_tokens("<image>", TOKS("<", "image", ">"));

    /* control tokens decode to nothing unless asked for */
    int32_t ids[3] = {1, BYTE0 + 'A', 3};
    char out[64];
    ck_assert_uint_eq(tok_decode(T, ids, 3, false, out, sizeof out), 1);
    ck_assert_str_eq(out, "A");
    tok_decode(T, ids, 3, true, out, sizeof out);
    ck_assert_str_eq(out, "<|im_start|>A<end_of_utterance>");
}
END_TEST

static void push_expect(tok_stream *s, int id, const char *want)
{
    size_t len;
    const char *p = tok_stream_push(s, id, &len);
    ck_assert_uint_eq(len, strlen(want));
    ck_assert_msg(memcmp(p, want, len) == 0, "stream gave '%.*s', want '%s'", (int)len, p, want);
}

START_TEST(stream_utf8)
{
    tok_stream *s = tok_stream_create(T);
    ck_assert_ptr_nonnull(s);
    /* 😀 = F0 9F 98 80 one byte per token: nothing until the last byte */
    push_expect(s, BYTE0 + 'h', "h");
    push_expect(s, BYTE0 + 0xF0, "");
    push_expect(s, BYTE0 + 0x9F, "");
    push_expect(s, BYTE0 + 0x98, "");
    push_expect(s, BYTE0 + 0x80, "😀");
    /* split over a merged token: "é" = C3 A9, C3 alone then "©"-byte + "x" */
    push_expect(s, BYTE0 + 0xC3, "");
    push_expect(s, BYTE0 + 0xA9, "é");
    /* the whole emoji in one token */
    push_expect(s, id_of("ðŁĺĢ"), "😀");
    /* a stray continuation byte and an impossible lead become U+FFFD */
    push_expect(s, BYTE0 + 0x80, "\xEF\xBF\xBD");
    push_expect(s, BYTE0 + 0xFF, "\xEF\xBF\xBD");
    /* a lead byte interrupted by a new character: U+FFFD, then the new one */
    push_expect(s, BYTE0 + 0xE2, "");
    push_expect(s, BYTE0 + 'a',
                "\xEF\xBF\xBD"
                "a");
    push_expect(s, BYTE0 + 0xE2, "");
    push_expect(s, BYTE0 + 0xE2, "\xEF\xBF\xBD");
    push_expect(s, BYTE0 + 0x82, "");
    push_expect(s, BYTE0 + 0xAC, "€");
    /* a surrogate prefix (ED A0) can never complete */
    push_expect(s, BYTE0 + 0xED, "");
    push_expect(s, BYTE0 + 0xA0, "\xEF\xBF\xBD\xEF\xBF\xBD");
    /* control tokens add nothing to the stream */
    push_expect(s, 3, "");
    /* an unfinished character at the end is flushed as U+FFFD */
    push_expect(s, BYTE0 + 0xF0, "");
    size_t len;
    const char *p = tok_stream_flush(s, &len);
    ck_assert_uint_eq(len, 3);
    ck_assert(memcmp(p, "\xEF\xBF\xBD", 3) == 0);
    p = tok_stream_flush(s, &len);
    ck_assert_uint_eq(len, 0);
    tok_stream_destroy(s);
}
END_TEST

START_TEST(bad_files_refused)
{
    char path[] = "/tmp/tern-tok-XXXXXX", err[512];
    int fd = mkstemp(path);
    close(fd);
    gguf_writer *w = gguf_writer_create();
    gguf_set_str(w, "tokenizer.ggml.model", "llama");
    ck_assert_int_eq(gguf_write(w, path, err, sizeof err), 0);
    gguf_writer_destroy(w);
    gguf_file *f;
    ck_assert_int_eq(gguf_open(path, &f, err, sizeof err), 0);
    tok *t = NULL;
    ck_assert_int_ne(tok_load(f, &t, err, sizeof err), 0);
    ck_assert_ptr_nonnull(strstr(err, "gpt2"));
    ck_assert_ptr_nonnull(strstr(err, path));
    gguf_close(f);

    w = gguf_writer_create();
    gguf_set_str(w, "tokenizer.ggml.model", "gpt2");
    ck_assert_int_eq(gguf_write(w, path, err, sizeof err), 0);
    gguf_writer_destroy(w);
    ck_assert_int_eq(gguf_open(path, &f, err, sizeof err), 0);
    ck_assert_int_ne(tok_load(f, &t, err, sizeof err), 0);
    ck_assert_ptr_nonnull(strstr(err, "tokenizer.ggml.tokens"));
    gguf_close(f);
    unlink(path);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tokenizer");
    TCase *tc = tcase_create("tokenizer");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, merges_by_rank);
    tcase_add_test(tc, pretokenizer_splits);
    tcase_add_test(tc, gpt2_pre_keeps_numbers_together);
    tcase_add_test(tc, round_trip);
    tcase_add_test(tc, encode_needs_more_room);
    tcase_add_test(tc, long_input);
    tcase_add_test(tc, special_lookalikes_are_text);
    tcase_add_test(tc, stream_utf8);
    tcase_add_test(tc, bad_files_refused);
    suite_add_tcase(s, tc);
    return tu_run(s, CK_FORK_GETENV);
}
