/* Hugging Face Idefics3 / SmolVLM checkpoint -> GGUF pair (text model and
 * vision projector), with llama.cpp's names, keys and layouts. */
#ifndef TERN_CLI_CONVERT_H
#define TERN_CLI_CONVERT_H

#include <stddef.h>

#include "engine/gguf.h"
#include "kernels/blocks.h"

/* Reads hf_dir (config.json, safetensors, tokenizer.json, ...) and writes
 * <prefix>.gguf and, when the checkpoint has a vision tower,
 * <prefix>-mmproj.gguf. outtype is KT_F32, KT_F16 or KT_BF16: the type of
 * matrices; norms, biases and the vision embeddings stay F32. */
int convert_hf(const char *hf_dir, const char *prefix, kt_type outtype, char *err, size_t errlen);

/* Only the tokenizer: tokenizer.ggml.* keys and the chat template from
 * hf_dir's tokenizer.json (+ tokenizer_config.json, chat_template.json)
 * into w. The token table is padded to vocab_size with [PADn] tokens. */
int convert_tokenizer(const char *hf_dir, gguf_writer *w, long long vocab_size, char *err,
                      size_t errlen);

/* `tern convert HF_DIR OUT_PREFIX [--outtype f32|f16|bf16]` */
int cmd_convert(int argc, char **argv);

#endif
