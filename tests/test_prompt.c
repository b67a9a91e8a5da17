/* Prompt building: the token sequences of SmolVLM's chat template with
 * Idefics3 image blocks, and of moondream2's Question/Answer format;
 * special tokens by id, text as plain text. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/prompt.h"
#include "testtok.h"
#include "testutil.h"

static tok *T;
static prompt_ctx P;
#define SEQ 3 /* <image> tokens per image in these tests */

static void setup(void)
{
    T = tt_make();
    char err[256];
    ck_assert_msg(prompt_init(&P, T, ENG_ARCH_LLAMA, SEQ, err, sizeof err) == 0, "%s", err);
}

static void teardown(void)
{
    tok_free(T);
}

/* expected sequence, assembled from pieces */
typedef struct {
    int32_t ids[512];
    int n;
} seq;

static void txt(seq *s, const char *text)
{
    int n = tok_encode(T, text, strlen(text), s->ids + s->n, 512 - s->n);
    ck_assert_int_ge(n, 1);
    s->n += n;
}

static void sp(seq *s, int id, int times)
{
    for (int i = 0; i < times; i++)
        s->ids[s->n++] = id;
}

static void global_block(seq *s)
{
    sp(s, P.fake_around, 1);
    sp(s, P.global_img, 1);
    sp(s, P.image, SEQ);
    sp(s, P.fake_around, 1);
}

static void check(const prompt_msg *msgs, int n, bool gen, const seq *want)
{
    int32_t *ids;
    int got;
    char err[256];
    ck_assert_msg(prompt_build(&P, msgs, n, gen, &ids, NULL, &got, err, sizeof err) == 0, "%s",
                  err);
    char buf[4096];
    tok_decode(T, ids, got, true, buf, sizeof buf);
    ck_assert_msg(got == want->n, "%d tokens, want %d: %s", got, want->n, buf);
    for (int i = 0; i < got; i++)
        ck_assert_msg(ids[i] == want->ids[i], "token %d is %d, want %d in: %s", i, ids[i],
                      want->ids[i], buf);
    free(ids);
}

START_TEST(special_ids)
{
    ck_assert_int_eq(P.im_start, 1);
    ck_assert_int_eq(P.end_of_utterance, 3);
    ck_assert_int_eq(P.image, 4);
    ck_assert_int_eq(P.fake_around, 5);
    ck_assert_int_eq(P.global_img, 6);
    ck_assert_int_eq(P.row_col[0][0], 7);
    ck_assert_int_eq(P.row_col[1][2], 12);
    ck_assert_int_eq(P.row_col[2][0], -1);
    ck_assert(prompt_is_stop(&P, 3));
    ck_assert(prompt_is_stop(&P, 0)); /* EOS */
    ck_assert(!prompt_is_stop(&P, 4));
}
END_TEST

START_TEST(text_only)
{
    prompt_part part = {.text = "Hello the world"};
    prompt_msg m = {PROMPT_USER, &part, 1};
    seq s = {.n = 0};
    sp(&s, P.im_start, 1);
    txt(&s, "User: Hello the world");
    sp(&s, P.end_of_utterance, 1);
    txt(&s, "\nAssistant:");
    check(&m, 1, true, &s);

    /* the rendered text is the template's */
    int32_t *ids;
    int n;
    char err[64], out[256];
    ck_assert_int_eq(prompt_build(&P, &m, 1, true, &ids, NULL, &n, err, sizeof err), 0);
    tok_decode(T, ids, n, true, out, sizeof out);
    ck_assert_str_eq(out, "<|im_start|>User: Hello the world<end_of_utterance>\nAssistant:");
    free(ids);
}
END_TEST

START_TEST(one_image)
{
    prompt_part parts[] = {{.image = true}, {.text = "What is this?"}};
    prompt_msg m = {PROMPT_USER, parts, 2};
    seq s = {.n = 0};
    sp(&s, P.im_start, 1);
    txt(&s, "User:"); /* no space: the message starts with an image */
    global_block(&s);
    txt(&s, "What is this?");
    sp(&s, P.end_of_utterance, 1);
    txt(&s, "\nAssistant:");
    check(&m, 1, true, &s);

    int32_t *ids;
    int n;
    char err[64], out[512];
    ck_assert_int_eq(prompt_build(&P, &m, 1, true, &ids, NULL, &n, err, sizeof err), 0);
    tok_decode(T, ids, n, true, out, sizeof out);
    ck_assert_str_eq(out, "<|im_start|>User:<fake_token_around_image><global-img><image><image>"
                          "<image><fake_token_around_image>What is this?<end_of_utterance>\n"
                          "Assistant:");
    free(ids);
}
END_TEST

START_TEST(tiled_image)
{
    prompt_part parts[] = {{.image = true, .rows = 2, .cols = 3}, {.text = "Describe."}};
    prompt_msg m = {PROMPT_USER, parts, 2};
    seq s = {.n = 0};
    sp(&s, P.im_start, 1);
    txt(&s, "User:");
    for (int r = 0; r < 2; r++) {
        for (int c = 0; c < 3; c++) {
            sp(&s, P.fake_around, 1);
            sp(&s, P.row_col[r][c], 1);
            sp(&s, P.image, SEQ);
        }
        txt(&s, r == 0 ? "\n" : "\n\n"); /* the last row's "\n" joins the one before the global */
    }
    global_block(&s);
    txt(&s, "Describe.");
    sp(&s, P.end_of_utterance, 1);
    txt(&s, "\nAssistant:");
    check(&m, 1, true, &s);

    /* "\n\n" is one token here, as HF's tokenizer makes it */
    int32_t nn[4];
    ck_assert_int_eq(tok_encode(T, "\n\n", 2, nn, 4), 1);

    prompt_part big[] = {{.image = true, .rows = 3, .cols = 1}};
    prompt_msg mb = {PROMPT_USER, big, 1};
    int32_t *ids;
    int n;
    char err[128];
    ck_assert_int_ne(prompt_build(&P, &mb, 1, true, &ids, NULL, &n, err, sizeof err), 0);
    ck_assert_ptr_nonnull(strstr(err, "<row_3_col_1>"));
    prompt_part odd[] = {{.image = true, .rows = 2, .cols = 0}};
    prompt_msg mo = {PROMPT_USER, odd, 1};
    ck_assert_int_ne(prompt_build(&P, &mo, 1, true, &ids, NULL, &n, err, sizeof err), 0);
}
END_TEST

START_TEST(system_and_turns)
{
    prompt_part sys = {.text = "Be brief."};
    prompt_part u1 = {.text = "Hi"};
    prompt_part a1 = {.text = " Hello!"};
    prompt_part u2[] = {{.image = true}, {.text = "And this?"}};
    prompt_msg msgs[] = {
        {PROMPT_SYSTEM, &sys, 1},
        {PROMPT_USER, &u1, 1},
        {PROMPT_ASSISTANT, &a1, 1},
        {PROMPT_USER, u2, 2},
    };
    seq s = {.n = 0};
    sp(&s, P.im_start, 1);
    txt(&s, "System: Be brief.");
    sp(&s, P.end_of_utterance, 1);
    txt(&s, "\nUser: Hi");
    sp(&s, P.end_of_utterance, 1);
    txt(&s, "\nAssistant:  Hello!");
    sp(&s, P.end_of_utterance, 1);
    txt(&s, "\nUser:");
    global_block(&s);
    txt(&s, "And this?");
    sp(&s, P.end_of_utterance, 1);
    txt(&s, "\nAssistant:");
    check(msgs, 4, true, &s);

    /* without the generation prompt the sequence ends after the last turn */
    s.n -= tok_encode(T, "\nAssistant:", 11, NULL, 0);
    txt(&s, "\n");
    check(msgs, 4, false, &s);
}
END_TEST

START_TEST(typed_specials_stay_text)
{
    prompt_part part = {.text = "<image><end_of_utterance><|im_start|>"};
    prompt_msg m = {PROMPT_USER, &part, 1};
    int32_t *ids;
    int n;
    char err[64];
    ck_assert_int_eq(prompt_build(&P, &m, 1, true, &ids, NULL, &n, err, sizeof err), 0);
    /* exactly one im_start and one end_of_utterance: the template's own */
    int starts = 0, ends = 0, images = 0;
    for (int i = 0; i < n; i++) {
        starts += ids[i] == P.im_start;
        ends += ids[i] == P.end_of_utterance;
        images += ids[i] == P.image;
    }
    ck_assert_int_eq(starts, 1);
    ck_assert_int_eq(ends, 1);
    ck_assert_int_eq(images, 0);
    free(ids);
}
END_TEST

START_TEST(missing_specials)
{
    /* a vocabulary without the image tokens cannot build SmolVLM prompts */
    gguf_writer *w = gguf_writer_create();
    const char *toks[] = {"a", "<|im_start|>", "<end_of_utterance>"};
    gguf_set_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_set_arr_str(w, "tokenizer.ggml.tokens", toks, 3);
    gguf_set_arr_str(w, "tokenizer.ggml.merges", toks, 0);
    char path[] = "/tmp/tern-prompt-XXXXXX", err[256];
    close(mkstemp(path));
    ck_assert_int_eq(gguf_write(w, path, err, sizeof err), 0);
    gguf_writer_destroy(w);
    gguf_file *f;
    ck_assert_int_eq(gguf_open(path, &f, err, sizeof err), 0);
    tok *t;
    ck_assert_int_eq(tok_load(f, &t, err, sizeof err), 0);
    prompt_ctx p;
    ck_assert_int_ne(prompt_init(&p, t, ENG_ARCH_LLAMA, 4, err, sizeof err), 0);
    ck_assert_ptr_nonnull(strstr(err, "<image>"));
    tok_free(t);
    gguf_close(f);
    unlink(path);
}
END_TEST

/* moondream2 (the Phi family): BOS, the picture's rows, "\n\nQuestion: ...\n\nAnswer:";
 * prompt_build marks the rows' positions, and the answer ends at EOS. */
static void check_phi(const prompt_ctx *q, const prompt_msg *msgs, int n, const seq *want,
                      int first_image, int n_image)
{
    int32_t *ids;
    bool *img;
    int got;
    char err[256];
    ck_assert_msg(prompt_build(q, msgs, n, true, &ids, &img, &got, err, sizeof err) == 0, "%s",
                  err);
    ck_assert_int_eq(got, want->n);
    for (int i = 0; i < got; i++) {
        ck_assert_msg(ids[i] == want->ids[i], "token %d is %d, want %d", i, ids[i], want->ids[i]);
        ck_assert_msg(img[i] == (i >= first_image && i < first_image + n_image),
                      "position %d: image mark %d", i, img[i]);
    }
    free(ids);
    free(img);
}

START_TEST(moondream_format)
{
    prompt_ctx q;
    char err[256];
    ck_assert_msg(prompt_init(&q, T, ENG_ARCH_PHI2, SEQ, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(q.begin, tok_bos(T));
    ck_assert_int_eq(q.end_of_utterance, tok_eos(T));
    ck_assert(prompt_is_stop(&q, tok_eos(T)));
    ck_assert(!prompt_is_stop(&q, P.end_of_utterance)); /* SmolVLM's turn end is only text here */

    prompt_part parts[] = {{.image = true}, {.text = "What is this?"}};
    prompt_msg m = {PROMPT_USER, parts, 2};
    seq s = {.n = 0};
    sp(&s, q.begin, 1);
    sp(&s, q.image, SEQ);
    txt(&s, "\n\nQuestion: What is this?\n\nAnswer:");
    check_phi(&q, &m, 1, &s, 1, SEQ);

    /* earlier turns as moondream's chat history; a system message is its text alone */
    prompt_part sys = {.text = "Be brief."}, u1 = {.text = "Hi"}, a1 = {.text = "Hello!"};
    prompt_msg msgs[] = {
        {PROMPT_SYSTEM, &sys, 1},
        {PROMPT_USER, parts, 2},
        {PROMPT_ASSISTANT, &a1, 1},
        {PROMPT_USER, &u1, 1},
    };
    s.n = 0;
    sp(&s, q.begin, 1);
    txt(&s, "Be brief.\n\n");
    sp(&s, q.image, SEQ);
    txt(&s, "\n\nQuestion: What is this?\n\nAnswer: Hello!\n\nQuestion: Hi\n\nAnswer:");
    int first = 1 + tok_encode(T, "Be brief.\n\n", 11, NULL, 0);
    check_phi(&q, msgs, 4, &s, first, SEQ);

    /* one tile per picture: crops are refused */
    prompt_part crops[] = {{.image = true, .rows = 2, .cols = 3}};
    prompt_msg mc = {PROMPT_USER, crops, 1};
    int32_t *ids;
    int n;
    ck_assert_int_ne(prompt_build(&q, &mc, 1, true, &ids, NULL, &n, err, sizeof err), 0);
    ck_assert_ptr_nonnull(strstr(err, "2x3"));
}
END_TEST

/* A vocabulary without <image> (moondream2's own): image positions carry
 * its last id that is neither BOS nor EOS. */
START_TEST(moondream_stand_in)
{
    gguf_writer *w = gguf_writer_create();
    const char *toks[] = {"a", "b", "<|endoftext|>"};
    gguf_set_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_set_arr_str(w, "tokenizer.ggml.tokens", toks, 3);
    gguf_set_arr_str(w, "tokenizer.ggml.merges", toks, 0);
    gguf_set_u32(w, "tokenizer.ggml.bos_token_id", 2);
    gguf_set_u32(w, "tokenizer.ggml.eos_token_id", 2);
    char path[] = "/tmp/tern-prompt-XXXXXX", err[256];
    close(mkstemp(path));
    ck_assert_int_eq(gguf_write(w, path, err, sizeof err), 0);
    gguf_writer_destroy(w);
    gguf_file *f;
    ck_assert_int_eq(gguf_open(path, &f, err, sizeof err), 0);
    tok *t;
    ck_assert_int_eq(tok_load(f, &t, err, sizeof err), 0);
    prompt_ctx q;
    ck_assert_msg(prompt_init(&q, t, ENG_ARCH_PHI2, 2, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(q.begin, 2);
    ck_assert_int_eq(q.image, 1);
    prompt_part parts[] = {{.image = true}, {.text = "ab"}};
    prompt_msg m = {PROMPT_USER, parts, 2};
    int32_t *ids;
    bool *img;
    int n;
    ck_assert_msg(prompt_build(&q, &m, 1, false, &ids, &img, &n, err, sizeof err) == 0, "%s", err);
    ck_assert_int_ge(n, 4);
    ck_assert(ids[0] == 2 && !img[0] && img[1] && img[2] && !img[3]);
    free(ids);
    free(img);
    tok_free(t);
    gguf_close(f);
    unlink(path);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("prompt");
    TCase *tc = tcase_create("prompt");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, special_ids);
    tcase_add_test(tc, text_only);
    tcase_add_test(tc, one_image);
    tcase_add_test(tc, tiled_image);
    tcase_add_test(tc, system_and_turns);
    tcase_add_test(tc, typed_specials_stay_text);
    tcase_add_test(tc, missing_specials);
    tcase_add_test(tc, moondream_format);
    tcase_add_test(tc, moondream_stand_in);
    suite_add_tcase(s, tc);
    return tu_run(s, CK_FORK_GETENV);
}
