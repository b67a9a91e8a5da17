/* tern convert: a tiny Idefics3 checkpoint written by make_hf_fixture.py
 * becomes a GGUF pair with llama.cpp's names, types, keys and q/k layout. */
#include <check.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/convert.h"
#include "cli/safetensors.h"
#include "engine/gguf.h"
#include "testutil.h"

static const char *python = "/usr/bin/python3";
static const char *script = "make_hf_fixture.py";
static char fixture[256]; /* the generated HF directory */
static char outdir[256];

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    ck_assert_msg(system(cmd) == 0, "command failed: %s", cmd);
}

static void make_fixture(void)
{
    if (fixture[0]) return;
    char tmpl[] = "/tmp/tern-convert-XXXXXX";
    char *d = mkdtemp(tmpl);
    ck_assert_ptr_nonnull(d);
    snprintf(fixture, sizeof fixture, "%s/hf", d);
    snprintf(outdir, sizeof outdir, "%s", d);
    sh("%s %s %s", python, script, fixture);
}

static gguf_file *convert_open(const char *out, kt_type t, bool mmproj)
{
    char err[1024], prefix[512], path[600];
    snprintf(prefix, sizeof prefix, "%s/%s", outdir, out);
    ck_assert_msg(convert_hf(fixture, prefix, t, err, sizeof err) == 0, "%s", err);
    snprintf(path, sizeof path, "%s%s.gguf", prefix, mmproj ? "-mmproj" : "");
    gguf_file *f = NULL;
    ck_assert_msg(gguf_open(path, &f, err, sizeof err) == 0, "%s", err);
    return f;
}

static void check_tensor(const gguf_file *f, const char *name, kt_type type, int n_dims,
                         int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3)
{
    const gguf_tensor *t = gguf_find_tensor(f, name);
    ck_assert_msg(t != NULL, "missing %s", name);
    ck_assert_msg(t->type == type, "%s: type %d, want %d", name, t->type, type);
    ck_assert_int_eq(t->n_dims, n_dims);
    int64_t want[4] = {ne0, ne1, ne2, ne3};
    for (int d = 0; d < n_dims; d++)
        ck_assert_msg(t->ne[d] == want[d], "%s ne[%d] = %lld, want %lld", name, d,
                      (long long)t->ne[d], (long long)want[d]);
}

static uint64_t u64(const gguf_file *f, const char *key)
{
    uint64_t v = 0;
    ck_assert_msg(gguf_get_u64(f, key, &v), "missing %s", key);
    return v;
}

static double f64(const gguf_file *f, const char *key)
{
    double v = 0;
    ck_assert_msg(gguf_get_f64(f, key, &v), "missing %s", key);
    return v;
}

START_TEST(text_names_types_shapes)
{
    make_fixture();
    gguf_file *f = convert_open("t16", KT_F16, false);
    check_tensor(f, "token_embd.weight", KT_F16, 2, 64, 320, 1, 1);
    check_tensor(f, "output.weight", KT_F16, 2, 64, 320, 1, 1);
    check_tensor(f, "output_norm.weight", KT_F32, 1, 64, 1, 1, 1);
    for (int i = 0; i < 2; i++) {
        char n[64];
        snprintf(n, sizeof n, "blk.%d.attn_norm.weight", i);
        check_tensor(f, n, KT_F32, 1, 64, 1, 1, 1);
        snprintf(n, sizeof n, "blk.%d.attn_q.weight", i);
        check_tensor(f, n, KT_F16, 2, 64, 64, 1, 1);
        snprintf(n, sizeof n, "blk.%d.attn_k.weight", i);
        check_tensor(f, n, KT_F16, 2, 64, 32, 1, 1);
        snprintf(n, sizeof n, "blk.%d.attn_v.weight", i);
        check_tensor(f, n, KT_F16, 2, 64, 32, 1, 1);
        snprintf(n, sizeof n, "blk.%d.attn_output.weight", i);
        check_tensor(f, n, KT_F16, 2, 64, 64, 1, 1);
        snprintf(n, sizeof n, "blk.%d.ffn_norm.weight", i);
        check_tensor(f, n, KT_F32, 1, 64, 1, 1, 1);
        snprintf(n, sizeof n, "blk.%d.ffn_gate.weight", i);
        check_tensor(f, n, KT_F16, 2, 64, 96, 1, 1);
        snprintf(n, sizeof n, "blk.%d.ffn_up.weight", i);
        check_tensor(f, n, KT_F16, 2, 64, 96, 1, 1);
        snprintf(n, sizeof n, "blk.%d.ffn_down.weight", i);
        check_tensor(f, n, KT_F16, 2, 96, 64, 1, 1);
    }
    ck_assert_int_eq(gguf_n_tensors(f), 3 + 2 * 9);
    gguf_close(f);
}
END_TEST

START_TEST(text_metadata)
{
    make_fixture();
    gguf_file *f = convert_open("t32", KT_F32, false);
    ck_assert_str_eq(gguf_get_str(f, "general.architecture"), "llama");
    ck_assert_int_eq(u64(f, "general.file_type"), 0);
    ck_assert_int_eq(u64(f, "llama.vocab_size"), 320);
    ck_assert_int_eq(u64(f, "llama.context_length"), 512);
    ck_assert_int_eq(u64(f, "llama.embedding_length"), 64);
    ck_assert_int_eq(u64(f, "llama.block_count"), 2);
    ck_assert_int_eq(u64(f, "llama.feed_forward_length"), 96);
    ck_assert_int_eq(u64(f, "llama.rope.dimension_count"), 16);
    ck_assert_int_eq(u64(f, "llama.attention.head_count"), 4);
    ck_assert_int_eq(u64(f, "llama.attention.head_count_kv"), 2);
    ck_assert(fabs(f64(f, "llama.rope.freq_base") - 100000.0) < 1e-3);
    ck_assert(fabs(f64(f, "llama.attention.layer_norm_rms_epsilon") - 1e-5) < 1e-9);

    ck_assert_str_eq(gguf_get_str(f, "tokenizer.ggml.model"), "gpt2");
    ck_assert_str_eq(gguf_get_str(f, "tokenizer.ggml.pre"), "smollm");
    int k = gguf_find_key(f, "tokenizer.ggml.tokens");
    ck_assert_int_ge(k, 0);
    ck_assert_int_eq(gguf_arr_len(f, k), 320);
    size_t len;
    ck_assert_str_eq(gguf_arr_str(f, k, 0, &len), "<|endoftext|>");
    ck_assert_str_eq(gguf_arr_str(f, k, 16 + 'a', &len), "a");  /* byte b is token 16 + b */
    ck_assert_str_eq(gguf_arr_str(f, k, 16 + 256, &len), "Ġt"); /* first merge result */
    ck_assert_str_eq(gguf_arr_str(f, k, 319, &len), "[PAD319]");
    int kt = gguf_find_key(f, "tokenizer.ggml.token_type");
    ck_assert_int_eq(gguf_arr_type(f, kt), GGUF_INT32);
    ck_assert_int_eq(gguf_arr_len(f, kt), 320);
    int32_t types[320];
    memcpy(types, gguf_arr_data(f, kt), sizeof types);
    ck_assert_int_eq(types[0], 3);   /* control */
    ck_assert_int_eq(types[4], 3);   /* <image> */
    ck_assert_int_eq(types[100], 1); /* normal */
    ck_assert_int_eq(types[319], 5); /* unused */
    int km = gguf_find_key(f, "tokenizer.ggml.merges");
    ck_assert_int_eq(gguf_arr_len(f, km), 32);
    ck_assert_str_eq(gguf_arr_str(f, km, 0, &len), "Ġ t");
    ck_assert_str_eq(gguf_arr_str(f, km, 1, &len), "h e"); /* written as a pair */
    ck_assert_int_eq(u64(f, "tokenizer.ggml.bos_token_id"), 1);
    ck_assert_int_eq(u64(f, "tokenizer.ggml.eos_token_id"), 3);
    ck_assert_int_eq(u64(f, "tokenizer.ggml.padding_token_id"), 2);
    ck_assert_int_eq(u64(f, "tokenizer.ggml.unknown_token_id"), 0);
    bool b = true;
    ck_assert(gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &b) && !b);
    ck_assert_ptr_nonnull(strstr(gguf_get_str(f, "tokenizer.chat_template"), "<end_of_utterance>"));
    gguf_close(f);
}
END_TEST

/* Row r of the GGUF q/k matrix is row from(r) of the HF one, where within
 * each head the first and second halves are interleaved. */
static void check_permuted(const gguf_file *f, const st_set *st, const char *gname,
                           const char *hfname, int n_head)
{
    const gguf_tensor *g = gguf_find_tensor(f, gname);
    const st_tensor *h = st_find(st, hfname);
    ck_assert_ptr_nonnull(g);
    ck_assert_ptr_nonnull(h);
    ck_assert_int_eq(g->type, KT_F32);
    int64_t rows = h->shape[0], cols = h->shape[1], hd = rows / n_head;
    float *src = malloc((size_t)h->numel * sizeof *src);
    char err[256];
    ck_assert_int_eq(st_to_f32(h, src, err, sizeof err), 0);
    const float *dst = g->data;
    int moved = 0;
    for (int64_t r = 0; r < rows; r++) {
        int64_t head = r / hd, i = (r % hd) / 2, j = r % 2;
        int64_t from = head * hd + j * (hd / 2) + i;
        moved += from != r;
        ck_assert_msg(memcmp(dst + r * cols, src + from * cols, (size_t)cols * 4) == 0,
                      "%s row %lld should be HF row %lld", gname, (long long)r, (long long)from);
    }
    ck_assert_int_gt(moved, 0);
    free(src);
}

START_TEST(qk_rows_permuted)
{
    make_fixture();
    gguf_file *f = convert_open("p32", KT_F32, false);
    st_set *st = NULL;
    char err[512];
    ck_assert_msg(st_open_dir(fixture, &st, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(st_count(st), 3 + 2 * 9 + 3 + 2 * 16 + 3);
    check_permuted(f, st, "blk.0.attn_q.weight",
                   "model.text_model.layers.0.self_attn.q_proj.weight", 4);
    check_permuted(f, st, "blk.1.attn_k.weight",
                   "model.text_model.layers.1.self_attn.k_proj.weight", 2);
    /* v is not permuted, and bf16 sources widen exactly */
    const gguf_tensor *v = gguf_find_tensor(f, "blk.0.attn_v.weight");
    const st_tensor *hv = st_find(st, "model.text_model.layers.0.self_attn.v_proj.weight");
    float *src = malloc((size_t)hv->numel * sizeof *src);
    ck_assert_int_eq(st_to_f32(hv, src, err, sizeof err), 0);
    ck_assert(memcmp(v->data, src, (size_t)hv->numel * 4) == 0);
    free(src);
    st_close(st);
    gguf_close(f);
}
END_TEST

START_TEST(mmproj_names_types_keys)
{
    make_fixture();
    gguf_file *f = convert_open("v16", KT_F16, true);
    ck_assert_str_eq(gguf_get_str(f, "general.architecture"), "clip");
    ck_assert_str_eq(gguf_get_str(f, "clip.projector_type"), "idefics3");
    bool b = false;
    ck_assert(gguf_get_bool(f, "clip.has_vision_encoder", &b) && b);
    ck_assert(gguf_get_bool(f, "clip.use_gelu", &b) && b);
    ck_assert_int_eq(u64(f, "clip.vision.image_size"), 32);
    ck_assert_int_eq(u64(f, "clip.vision.preproc_image_size"), 64);
    ck_assert_int_eq(u64(f, "clip.vision.patch_size"), 8);
    ck_assert_int_eq(u64(f, "clip.vision.embedding_length"), 32);
    ck_assert_int_eq(u64(f, "clip.vision.feed_forward_length"), 48);
    ck_assert_int_eq(u64(f, "clip.vision.block_count"), 2);
    ck_assert_int_eq(u64(f, "clip.vision.attention.head_count"), 2);
    ck_assert_int_eq(u64(f, "clip.vision.projection_dim"), 64);
    ck_assert_int_eq(u64(f, "clip.vision.projector.scale_factor"), 2);
    ck_assert(fabs(f64(f, "clip.vision.attention.layer_norm_epsilon") - 1e-6) < 1e-10);
    int k = gguf_find_key(f, "clip.vision.image_mean");
    ck_assert_int_eq(gguf_arr_type(f, k), GGUF_FLOAT32);
    ck_assert_int_eq(gguf_arr_len(f, k), 3);

    check_tensor(f, "v.patch_embd.weight", KT_F32, 4, 8, 8, 3, 32);
    check_tensor(f, "v.patch_embd.bias", KT_F32, 1, 32, 1, 1, 1);
    check_tensor(f, "v.position_embd.weight", KT_F32, 2, 32, 16, 1, 1);
    check_tensor(f, "v.blk.1.ln1.weight", KT_F32, 1, 32, 1, 1, 1);
    check_tensor(f, "v.blk.1.ln2.bias", KT_F32, 1, 32, 1, 1, 1);
    check_tensor(f, "v.blk.0.attn_q.weight", KT_F16, 2, 32, 32, 1, 1);
    check_tensor(f, "v.blk.0.attn_q.bias", KT_F32, 1, 32, 1, 1, 1);
    check_tensor(f, "v.blk.0.attn_out.weight", KT_F16, 2, 32, 32, 1, 1);
    check_tensor(f, "v.blk.0.ffn_up.weight", KT_F16, 2, 32, 48, 1, 1);
    check_tensor(f, "v.blk.0.ffn_up.bias", KT_F32, 1, 48, 1, 1, 1);
    check_tensor(f, "v.blk.0.ffn_down.weight", KT_F16, 2, 48, 32, 1, 1);
    check_tensor(f, "v.post_ln.weight", KT_F32, 1, 32, 1, 1, 1);
    check_tensor(f, "mm.model.fc.weight", KT_F16, 2, 128, 64, 1, 1);
    ck_assert_int_eq(gguf_n_tensors(f), 3 + 2 * 16 + 3);

    /* vision q is not permuted (no RoPE there) */
    st_set *st = NULL;
    char err[512];
    ck_assert_int_eq(st_open_dir(fixture, &st, err, sizeof err), 0);
    const st_tensor *h = st_find(st, "model.vision_model.encoder.layers.0.self_attn.q_proj.weight");
    const gguf_tensor *g = gguf_find_tensor(f, "v.blk.0.attn_q.weight");
    const float *src = h->data;
    const uint16_t *dst = g->data;
    for (int i = 0; i < 32 * 32; i++)
        ck_assert_int_eq(dst[i], kt_f32_to_f16(src[i]));
    st_close(st);
    gguf_close(f);
}
END_TEST

/* Copies the fixture to a new directory for a test to break. */
static void copy_fixture(char *dir, size_t len, const char *name)
{
    make_fixture();
    snprintf(dir, len, "%s/%s", outdir, name);
    sh("rm -rf %s && cp -r %s %s", dir, fixture, dir);
}

static void expect_error(const char *dir, const char *needle1, const char *needle2)
{
    char err[1024] = "", prefix[512];
    snprintf(prefix, sizeof prefix, "%s/out", dir);
    ck_assert_int_ne(convert_hf(dir, prefix, KT_F16, err, sizeof err), 0);
    ck_assert_msg(strstr(err, needle1) && strstr(err, needle2), "message '%s' lacks '%s'/'%s'", err,
                  needle1, needle2);
}

START_TEST(missing_tensor_named)
{
    char dir[512];
    copy_fixture(dir, sizeof dir, "more-layers");
    sh("%s -c \"import "
       "json;p='%s/"
       "config.json';c=json.load(open(p));c['text_config']['num_hidden_layers']=3;json.dump(c,open("
       "p,'w'))\"",
       python, dir);
    expect_error(dir, "model.text_model.layers.2.input_layernorm.weight", "missing");
}
END_TEST

START_TEST(truncated_shard_named)
{
    char dir[512];
    copy_fixture(dir, sizeof dir, "truncated");
    sh("truncate -s 100000 %s/model-00001-of-00002.safetensors", dir);
    expect_error(dir, "model-00001-of-00002.safetensors", "past the end");
}
END_TEST

START_TEST(bad_header_named)
{
    char dir[512];
    copy_fixture(dir, sizeof dir, "badheader");
    sh("printf '\\377\\377\\377\\377\\0\\0\\0\\0{}' > %s/model-00002-of-00002.safetensors", dir);
    expect_error(dir, "model-00002-of-00002.safetensors", "header length");
}
END_TEST

START_TEST(missing_config)
{
    char dir[512];
    copy_fixture(dir, sizeof dir, "noconfig");
    sh("rm %s/config.json", dir);
    expect_error(dir, "config.json", "No such file");
}
END_TEST

START_TEST(unknown_tensor_refused)
{
    char dir[512];
    copy_fixture(dir, sizeof dir, "extra");
    /* one shard with an extra tensor the architecture has no place for */
    sh("%s -c \"import "
       "json,struct;p='%s/"
       "model-00002-of-00002.safetensors';b=open(p,'rb').read();n=struct.unpack('<Q',b[:8])[0];h="
       "json.loads(b[8:8+n]);"
       "end=max(v['data_offsets'][1] for k,v in h.items() if "
       "k!='__metadata__');h['model.extra.weight']={'dtype':'F32','shape':[1],'data_offsets':[end,"
       "end+4]};"
       "s=json.dumps(h).encode();open(p,'wb').write(struct.pack('<Q',len(s))+s+b[8+n:]+bytes(4))\"",
       python, dir);
    sh("%s -c \"import "
       "json;p='%s/"
       "model.safetensors.index.json';c=json.load(open(p));c['weight_map']['model.extra.weight']='"
       "model-00002-of-00002.safetensors';json.dump(c,open(p,'w'))\"",
       python, dir);
    expect_error(dir, "model.extra.weight", "no place");
}
END_TEST

START_TEST(tied_embeddings_and_no_tokenizer)
{
    char dir[512];
    copy_fixture(dir, sizeof dir, "tied");
    /* drop lm_head.weight from its shard's header and from the index */
    sh("%s -c \"import "
       "json,struct;p='%s/"
       "model-00001-of-00002.safetensors';b=open(p,'rb').read();n=struct.unpack('<Q',b[:8])[0];h="
       "json.loads(b[8:8+n]);"
       "del "
       "h['lm_head.weight'];s=json.dumps(h).encode();open(p,'wb').write(struct.pack('<Q',len(s))+s+"
       "b[8+n:])\"",
       python, dir);
    sh("%s -c \"import json;p='%s/model.safetensors.index.json';c=json.load(open(p));del "
       "c['weight_map']['lm_head.weight'];json.dump(c,open(p,'w'))\"",
       python, dir);
    sh("rm %s/tokenizer.json", dir);
    char err[1024], prefix[600], path[700];
    snprintf(prefix, sizeof prefix, "%s/out", dir);
    ck_assert_msg(convert_hf(dir, prefix, KT_F32, err, sizeof err) == 0, "%s", err);
    snprintf(path, sizeof path, "%s.gguf", prefix);
    gguf_file *f;
    ck_assert_msg(gguf_open(path, &f, err, sizeof err) == 0, "%s", err);
    ck_assert_ptr_null(gguf_find_tensor(f, "output.weight")); /* llama.cpp reuses token_embd */
    ck_assert_ptr_nonnull(gguf_find_tensor(f, "token_embd.weight"));
    ck_assert_int_lt(gguf_find_key(f, "tokenizer.ggml.tokens"), 0);
    gguf_close(f);
}
END_TEST

START_TEST(single_file_checkpoint)
{
    char dir[512];
    copy_fixture(dir, sizeof dir, "single");
    /* merge the two shards into model.safetensors */
    sh("cd %s && %s -c \"import json,struct\n"
       "hs=[];ds=[]\n"
       "for p in ['model-00001-of-00002.safetensors','model-00002-of-00002.safetensors']:\n"
       "  "
       "b=open(p,'rb').read();n=struct.unpack('<Q',b[:8])[0];hs.append(json.loads(b[8:8+n]));ds."
       "append(b[8+n:])\n"
       "out={};off=len(ds[0])\n"
       "for k,v in hs[0].items():\n  out[k]=v\n"
       "for k,v in hs[1].items():\n"
       "  if k!='__metadata__': "
       "v['data_offsets']=[v['data_offsets'][0]+off,v['data_offsets'][1]+off]\n"
       "  out[k]=v\n"
       "s=json.dumps(out).encode();open('model.safetensors','wb').write(struct.pack('<Q',len(s))+s+"
       "ds[0]+ds[1])\" "
       "&& rm model-0000* model.safetensors.index.json",
       dir, python);
    char err[1024], prefix[600];
    snprintf(prefix, sizeof prefix, "%s/out", dir);
    ck_assert_msg(convert_hf(dir, prefix, KT_BF16, err, sizeof err) == 0, "%s", err);
    char path[700];
    snprintf(path, sizeof path, "%s-mmproj.gguf", prefix);
    gguf_file *f;
    ck_assert_msg(gguf_open(path, &f, err, sizeof err) == 0, "%s", err);
    const gguf_tensor *t = gguf_find_tensor(f, "mm.model.fc.weight");
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(t->type, KT_BF16);
    ck_assert_int_eq(u64(f, "general.file_type"), 32);
    gguf_close(f);
}
END_TEST

int main(int argc, char **argv)
{
    if (argc > 1) python = argv[1];
    if (argc > 2) script = argv[2];
    Suite *s = suite_create("convert");
    TCase *tc = tcase_create("convert");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, text_names_types_shapes);
    tcase_add_test(tc, text_metadata);
    tcase_add_test(tc, qk_rows_permuted);
    tcase_add_test(tc, mmproj_names_types_keys);
    tcase_add_test(tc, missing_tensor_named);
    tcase_add_test(tc, truncated_shard_named);
    tcase_add_test(tc, bad_header_named);
    tcase_add_test(tc, missing_config);
    tcase_add_test(tc, unknown_tensor_refused);
    tcase_add_test(tc, tied_embeddings_and_no_tokenizer);
    tcase_add_test(tc, single_file_checkpoint);
    suite_add_tcase(s, tc);
    /* One process: the fixture is generated once and shared. */
    int rc = tu_run(s, CK_NOFORK);
    if (outdir[0] && rc == EXIT_SUCCESS) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf %s", outdir);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", outdir);
    }
    return rc;
}
