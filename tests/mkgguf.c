/* Writes a few small, valid GGUF files into a directory: the input of the
 * CLI tests and the fuzzer's seeds (tests/data/fuzz-seeds/ holds a copy:
 * regenerate with `build/tests/mkgguf tests/data/fuzz-seeds`).
 *
 *   tiny.gguf     every value type, one tensor of every tensor type
 *   vocab.gguf    llama-style metadata with a small tokenizer vocabulary
 *   align64.gguf  general.alignment = 64
 *   empty.gguf    no keys, no tensors */
#include <stdio.h>
#include <string.h>

#include "engine/gguf.h"

static uint8_t bytes[4096]; /* tensor contents: any bytes of the right size */

static int add(gguf_writer *w, const char *name, kt_type t, int n_dims, int64_t n0, int64_t n1)
{
    char err[256];
    int64_t ne[2] = {n0, n1};
    if (gguf_add_tensor(w, name, t, n_dims, ne, bytes, err, sizeof err) == GGUF_OK) return 0;
    fprintf(stderr, "mkgguf: %s\n", err);
    return 1;
}

static int save(gguf_writer *w, const char *dir, const char *name)
{
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int rc = gguf_write(w, path, err, sizeof err);
    gguf_writer_destroy(w);
    if (rc == GGUF_OK) return 0;
    fprintf(stderr, "mkgguf: %s\n", err);
    return 1;
}

static int tiny(const char *dir)
{
    static const int16_t shorts[] = {-1, 2, -3};
    static const double doubles[] = {0.5, -1e10};
    static const char *const words[] = {"alpha", "", "gamma \"quoted\"\n"};
    gguf_writer *w = gguf_writer_create();
    gguf_set_u8(w, "test.u8", 8);
    gguf_set_i8(w, "test.i8", -8);
    gguf_set_u16(w, "test.u16", 16);
    gguf_set_i16(w, "test.i16", -16);
    gguf_set_u32(w, "test.u32", 32);
    gguf_set_i32(w, "test.i32", -32);
    gguf_set_f32(w, "test.f32", 0.25f);
    gguf_set_bool(w, "test.bool", true);
    gguf_set_str(w, "test.string", "hello");
    gguf_set_u64(w, "test.u64", 1ull << 60);
    gguf_set_i64(w, "test.i64", -(1ll << 60));
    gguf_set_f64(w, "test.f64", -0.125);
    gguf_set_arr(w, "test.arr_i16", GGUF_INT16, shorts, 3);
    gguf_set_arr(w, "test.arr_f64", GGUF_FLOAT64, doubles, 2);
    gguf_set_arr_str(w, "test.arr_str", words, 3);
    gguf_set_arr(w, "test.arr_empty", GGUF_UINT8, NULL, 0);
    int rc = add(w, "f32", KT_F32, 2, 4, 2);
    rc |= add(w, "f16", KT_F16, 1, 8, 1);
    rc |= add(w, "q8_0", KT_Q8_0, 2, 32, 2);
    rc |= add(w, "bf16", KT_BF16, 1, 4, 1);
    rc |= add(w, "tq1_0", KT_TQ1_0, 1, 256, 1);
    rc |= add(w, "tq2_0", KT_TQ2_0, 1, 256, 1);
    rc |= add(w, "q1_0", KT_Q1_0, 1, 128, 1);
    rc |= add(w, "q2_0", KT_Q2_0, 2, 64, 2);
    if (rc) {
        gguf_writer_destroy(w);
        return 1;
    }
    return save(w, dir, "tiny.gguf");
}

static int vocab(const char *dir)
{
    static const char *const tokens[] = {
        "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "a", "b", "c", "ab",
        "\xc4\xa0the",   "\n",           "\n\n",       "x"};
    enum { N = sizeof tokens / sizeof tokens[0] };
    float scores[N];
    int32_t types[N];
    for (int i = 0; i < N; i++) {
        scores[i] = -(float)i;
        types[i] = i < 4 ? 3 : 1;
    }
    gguf_writer *w = gguf_writer_create();
    gguf_set_str(w, "general.architecture", "llama");
    gguf_set_str(w, "general.name", "vocab test");
    gguf_set_u32(w, "llama.block_count", 1);
    gguf_set_u32(w, "llama.context_length", 64);
    gguf_set_u32(w, "llama.embedding_length", 64);
    gguf_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    gguf_set_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_set_arr_str(w, "tokenizer.ggml.tokens", tokens, N);
    gguf_set_arr(w, "tokenizer.ggml.scores", GGUF_FLOAT32, scores, N);
    gguf_set_arr(w, "tokenizer.ggml.token_type", GGUF_INT32, types, N);
    gguf_set_u32(w, "tokenizer.ggml.bos_token_id", 1);
    int rc = add(w, "token_embd.weight", KT_Q8_0, 2, 64, N);
    rc |= add(w, "blk.0.attn_q.weight", KT_Q2_0, 2, 64, 4);
    rc |= add(w, "blk.0.ffn_up.weight", KT_TQ2_0, 2, 256, 2);
    rc |= add(w, "output_norm.weight", KT_F32, 1, 64, 1);
    if (rc) {
        gguf_writer_destroy(w);
        return 1;
    }
    return save(w, dir, "vocab.gguf");
}

static int align64(const char *dir)
{
    gguf_writer *w = gguf_writer_create();
    gguf_set_u32(w, "general.alignment", 64);
    gguf_set_str(w, "general.architecture", "clip");
    int rc = add(w, "v.patch_embd.weight", KT_F16, 2, 12, 3);
    rc |= add(w, "mm.0.weight", KT_Q1_0, 1, 128, 1);
    if (rc) {
        gguf_writer_destroy(w);
        return 1;
    }
    return save(w, dir, "align64.gguf");
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: mkgguf DIR\n");
        return 2;
    }
    for (size_t i = 0; i < sizeof bytes; i++)
        bytes[i] = (uint8_t)(i * 7 + 3);
    int rc = tiny(argv[1]);
    rc |= vocab(argv[1]);
    rc |= align64(argv[1]);
    rc |= save(gguf_writer_create(), argv[1], "empty.gguf");
    return rc;
}
