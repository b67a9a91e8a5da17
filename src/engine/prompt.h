/* SmolVLM's chat template, built at the token level.
 *
 * The template (tokenizer.chat_template of SmolVLM/Idefics3 models) renders
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
 * Special tokens go in by id; the text between them is tokenized as plain
 * text in the same segments Hugging Face's tokenizer would see, so a user
 * typing "<image>" gets those characters, not an image. */
#ifndef TERN_ENGINE_PROMPT_H
#define TERN_ENGINE_PROMPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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

typedef struct {
    const tok *t;
    int image_seq_len; /* <image> tokens per image: (image_size/patch)^2 / scale^2 */
    int im_start, end_of_utterance, image, fake_around, global_img;
    int row_col[PROMPT_MAX_GRID][PROMPT_MAX_GRID]; /* -1 where the vocabulary lacks one */
    int eos;
} prompt_ctx;

/* Looks up the special tokens; fails naming the first one missing. */
int prompt_init(prompt_ctx *p, const tok *t, int image_seq_len, char *err, size_t errlen);

/* The whole conversation, ending with "Assistant:" when add_generation is
 * set. *ids is malloc'ed (free it); *n its length. */
int prompt_build(const prompt_ctx *p, const prompt_msg *msgs, int n_msgs, bool add_generation,
                 int32_t **ids, int *n, char *err, size_t errlen);

/* Generation ends at <end_of_utterance> or EOS. */
bool prompt_is_stop(const prompt_ctx *p, int id);

#endif
