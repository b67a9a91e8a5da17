/* The prompt formats of the model families, built at the token level; the
 * format is data (prompt.c's table), picked from the decoder's architecture.
 *
 * SmolVLM (Llama decoder). The template (tokenizer.chat_template of SmolVLM/Idefics3 models)
 * renders
 *   <|im_start|>User:<image>What is this?<end_of_utterance>\n
 *   Assistant: It is a cat.<end_of_utterance>\n
 *   Assistant:
 * ("Role:" before a message that starts with an image, "Role: " otherwise;
 * a system message is a "System: ..." turn), and the Idefics3 processor
 * expands each <image> into its image block:
 *   one global image:  <fake_token_around_image><global-img><image>*n<fake_token_around_image>
 *   rows x cols tiles: for each row, for each tile
 *                        <fake_token_around_image><row_r_col_c><image>*n
 *                      then "\n"; after the rows
 *                      "\n"<fake_token_around_image><global-img><image>*n<fake_token_around_image>
 *
 * moondream2 (Phi decoder), as its answer_question builds it:
 *   BOS, the picture's embedding rows, "\n\nQuestion: What is this?\n\nAnswer:"
 * (earlier turns "Question: ...\n\nAnswer: ...\n\n"; a system message is its
 * text and "\n\n"; pictures lead their message; the answer ends at EOS).
 *
 * Special tokens go in by id; the text between them is tokenized as plain
 * text in the same segments Hugging Face's tokenizer would see, so a user
 * typing "<image>" gets those characters, not an image. */
#ifndef TERN_ENGINE_PROMPT_H
#define TERN_ENGINE_PROMPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"
#include "engine/tokenizer.h"

typedef enum { PROMPT_SYSTEM, PROMPT_USER, PROMPT_ASSISTANT } prompt_role;

/* A message part: text, or an image whose tiling is rows x cols (0 x 0:
 * the global image alone), as img_preprocess reports it. */
typedef struct {
    bool image;
    const char *text;
    int rows, cols;
} prompt_part;

typedef struct {
    prompt_role role;
    const prompt_part *parts;
    int n_parts;
} prompt_msg;

#define PROMPT_MAX_GRID 6 /* SmolVLM has <row_r_col_c> for r, c in 1..6 */

typedef struct prompt_format prompt_format; /* a family's format (prompt.c) */

typedef struct {
    const tok *t;
    const prompt_format *fmt;
    int image_seq_len; /* embedding rows per image: (image_size/patch)^2 / scale^2 */
    int begin;         /* the first token: <|im_start|>, or BOS */
    /* The token that ends an answer: <end_of_utterance>, or EOS where the
     * family has no end-of-turn token. */
    int end_of_utterance;
    /* The id at each image row's position: <image>, or where the vocabulary
     * has none, its last id that is neither BOS nor EOS (never read by the
     * model, which takes the row; prompt_build says where the rows go). */
    int image;
    int im_start, fake_around, global_img;         /* SmolVLM's; -1 in other formats */
    int row_col[PROMPT_MAX_GRID][PROMPT_MAX_GRID]; /* -1 where the vocabulary lacks one */
    int eos;
} prompt_ctx;

/* The format of arch's family; looks up its special tokens and fails
 * naming the first one missing. */
int prompt_init(prompt_ctx *p, const tok *t, eng_arch arch, int image_seq_len, char *err,
                size_t errlen);

/* The whole conversation, ending with the generation prompt ("Assistant:",
 * "Answer:") when add_generation is set. *ids is malloc'ed (free it); *n its
 * length. When image is not NULL, *image (malloc'ed, n entries) is true at
 * the positions of image rows, in order. */
int prompt_build(const prompt_ctx *p, const prompt_msg *msgs, int n_msgs, bool add_generation,
                 int32_t **ids, bool **image, int *n, char *err, size_t errlen);

/* Generation ends at end_of_utterance or EOS. */
bool prompt_is_stop(const prompt_ctx *p, int id);

#endif
