/* A small byte-level BPE vocabulary for tests, written to a temporary
 * GGUF and loaded: the SmolVLM special tokens, the 256 byte tokens (byte b
 * is id TT_BYTE0 + b) and a few merges. */
#include "testtok.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/gguf.h"

static const char *const specials[] = {
    "<|endoftext|>",      "<|im_start|>",  "<|im_end|>",
    "<end_of_utterance>", "<image>",       "<fake_token_around_image>",
    "<global-img>",       "<row_1_col_1>", "<row_1_col_2>",
    "<row_1_col_3>",      "<row_2_col_1>", "<row_2_col_2>",
    "<row_2_col_3>",
};
#define N_SPECIAL (int)(sizeof specials / sizeof specials[0])

/* pairs in the byte-level alphabet (Ġ is a space, Ċ a newline) */
static const char *const merges[][2] = {
    {"Ġ", "t"},   {"h", "e"},  {"Ġt", "he"}, {"a", "a"},    {"aa", "aa"},   {"'", "s"},
    {"Ġ", "1"},   {"Ã", "©"},  {"c", "a"},   {"ca", "f"},   {"caf", "Ã©"},  {"Ġ", "Ġ"},
    {"i", "m"},   {"im", "a"}, {"ima", "g"}, {"imag", "e"}, {"<", "image"}, {"<image", ">"},
    {"ð", "Ł"},   {"ðŁ", "ĺ"}, {"ðŁĺ", "Ģ"}, {"Ċ", "Ċ"},    {"U", "s"},     {"Us", "e"},
    {"Use", "r"}, {"A", "s"},  {"As", "s"},
};
#define N_MERGES (int)(sizeof merges / sizeof merges[0])

static void byte_str(int b, char *out)
{
    int cp;
    if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) {
        cp = b;
    } else {
        int n = 0;
        for (int i = 0; i < b; i++)
            if (!((i >= '!' && i <= '~') || (i >= 0xA1 && i <= 0xAC) || (i >= 0xAE && i <= 0xFF)))
                n++;
        cp = 256 + n;
    }
    if (cp < 0x80) {
        out[0] = (char)cp, out[1] = 0;
    } else {
        out[0] = (char)(0xC0 | cp >> 6), out[1] = (char)(0x80 | (cp & 0x3F)), out[2] = 0;
    }
}

tok *tt_make(void)
{
    return tt_make_pre("smollm");
}

tok *tt_make_pre(const char *pre)
{
    static char bytes[256][4];
    static char merged[N_MERGES][32];
    static char mlines[N_MERGES][32];
    const char *tokens[N_SPECIAL + 256 + N_MERGES];
    const char *mptr[N_MERGES];
    int32_t types[N_SPECIAL + 256 + N_MERGES];
    int n = 0;
    for (int i = 0; i < N_SPECIAL; i++) {
        types[n] = 3;
        tokens[n++] = specials[i];
    }
    for (int b = 0; b < 256; b++) {
        byte_str(b, bytes[b]);
        types[n] = 1;
        tokens[n++] = bytes[b];
    }
    for (int i = 0; i < N_MERGES; i++) {
        snprintf(merged[i], sizeof merged[i], "%s%s", merges[i][0], merges[i][1]);
        snprintf(mlines[i], sizeof mlines[i], "%s %s", merges[i][0], merges[i][1]);
        mptr[i] = mlines[i];
        bool dup = false;
        for (int j = 0; j < n; j++)
            dup = dup || !strcmp(tokens[j], merged[i]);
        if (!dup) {
            types[n] = 1;
            tokens[n++] = merged[i];
        }
    }
    gguf_writer *w = gguf_writer_create();
    gguf_set_str(w, "general.architecture", "llama");
    gguf_set_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_set_str(w, "tokenizer.ggml.pre", pre);
    gguf_set_arr_str(w, "tokenizer.ggml.tokens", tokens, (uint64_t)n);
    gguf_set_arr(w, "tokenizer.ggml.token_type", GGUF_INT32, types, (uint64_t)n);
    gguf_set_arr_str(w, "tokenizer.ggml.merges", mptr, N_MERGES);
    gguf_set_u32(w, "tokenizer.ggml.bos_token_id", 1);
    gguf_set_u32(w, "tokenizer.ggml.eos_token_id", 0);
    char path[] = "/tmp/tern-tok-XXXXXX", err[512];
    int fd = mkstemp(path);
    if (fd < 0) abort();
    close(fd);
    tok *t = NULL;
    gguf_file *f = NULL;
    if (gguf_write(w, path, err, sizeof err) != 0 || gguf_open(path, &f, err, sizeof err) != 0 ||
        tok_load(f, &t, err, sizeof err) != 0) {
        fprintf(stderr, "test tokenizer: %s\n", err);
        abort();
    }
    gguf_writer_destroy(w);
    gguf_close(f);
    unlink(path);
    return t;
}
