/* GPT-2 byte-level BPE tokenizer, loaded from a GGUF's tokenizer.ggml.*
 * keys (llama.cpp's "gpt2" model), with SmolLM2's pre-tokenizer: every digit
 * on its own, then the GPT-2 split pattern
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * with full Unicode letter/number/space classes (unicode_tables.c).
 *
 * tok_encode treats its input as plain text: a user typing "<image>" gets
 * the tokens of those characters, never the special token. Special tokens
 * are placed by the prompt builder, by id, from tok_special(). */
#ifndef TERN_ENGINE_TOKENIZER_H
#define TERN_ENGINE_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/gguf.h"

/* llama.cpp's token types (tokenizer.ggml.token_type). */
typedef enum {
    TOK_TYPE_NORMAL = 1,
    TOK_TYPE_UNKNOWN = 2,
    TOK_TYPE_CONTROL = 3,
    TOK_TYPE_USER_DEFINED = 4,
    TOK_TYPE_UNUSED = 5,
    TOK_TYPE_BYTE = 6,
} tok_type;

typedef struct tok tok;

/* Copies what it needs: f may be closed afterwards. */
int tok_load(const gguf_file *f, tok **out, char *err, size_t errlen);
void tok_free(tok *t);

int tok_n_vocab(const tok *t);
int tok_bos(const tok *t); /* -1 if the file names none */
int tok_eos(const tok *t);
tok_type tok_type_of(const tok *t, int id);

/* The id of the token spelled exactly `name` ("<image>", "<row_1_col_2>"),
 * or -1. This is the only way to get a special token's id. */
int tok_special(const tok *t, const char *name);

/* GPT-2's byte-level alphabet: the vocabulary string (one or two UTF-8
 * bytes, NUL-terminated in out) that stands for byte b, e.g. "\xC4\xA0"
 * ('Ġ') for a space. Returns its length. */
int tok_byte_str(uint8_t b, char out[4]);

/* Plain text (len bytes, any bytes; invalid UTF-8 is kept byte for byte)
 * to ids. Writes at most cap ids and returns how many the text needs, so a
 * return > cap means "call again with a bigger array". -1 if out of memory. */
int tok_encode(const tok *t, const char *text, size_t len, int32_t *ids, int cap);

/* The pre-tokenizer alone: writes the end offset of each chunk BPE would
 * see (at most cap of them) and returns the number of chunks. */
int tok_pretokenize(const tok *t, const char *text, size_t len, size_t *ends, int cap);

/* The bytes a token stands for (byte-level decoded). Control tokens give
 * their name only when `special` is set, otherwise nothing. */
const char *tok_piece(const tok *t, int id, bool special, size_t *len);

/* Concatenated pieces of n ids; writes at most cap bytes plus a NUL (when
 * cap > 0) and returns the full length. The result may end mid-character:
 * use a tok_stream for text shown while it is generated. */
size_t tok_decode(const tok *t, const int32_t *ids, int n, bool special, char *out, size_t cap);

/* Streaming detokenizer: text that only ever contains whole, valid UTF-8
 * characters. Bytes of a character split across tokens are held until the
 * character is complete; bytes that cannot become valid UTF-8 come out as
 * U+FFFD. The returned text lives until the next call on the stream. */
typedef struct tok_stream tok_stream;

tok_stream *tok_stream_create(const tok *t); /* NULL on out of memory */
void tok_stream_destroy(tok_stream *s);
/* Drops held bytes, for a new text. */
void tok_stream_reset(tok_stream *s);
/* The text token id completes (possibly empty; *len gets its length). */
const char *tok_stream_push(tok_stream *s, int id, size_t *len);
/* End of text: held bytes of an unfinished character become U+FFFD. */
const char *tok_stream_flush(tok_stream *s, size_t *len);

#endif
