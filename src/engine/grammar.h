/* Constrained decoding: answers that are valid JSON, or valid against a JSON schema.
 *
 * A schema (a subset of JSON Schema, docs/api.md) is compiled once per request into a
 * byte-level automaton (grammar). A grammar_vocab, built once per model, holds every token's
 * bytes in a trie, so that a step's token mask is found by walking the trie with the
 * automaton instead of testing each of the vocabulary's tokens byte by byte. A grammar_state
 * follows one answer: the sampler asks it for the mask before drawing and tells it the token
 * drawn (sampler_set_grammar). When the value is complete, only the stop tokens remain
 * allowed, so generation ends there.
 *
 * Budgets: an answer must also end within the tokens it has left (max_tokens, the context's
 * room). The caller says how many before each pick (grammar_state_set_budget); the mask then
 * keeps only tokens after which the value can still be completed in time, counting one byte
 * per token (the shortest completion: close the string, the missing required properties'
 * shortest values, minItems, the brackets). Far from the limit nothing changes; near it, the
 * tokens that close the value are what remains, so the answer is always complete JSON. This
 * holds when the vocabulary has a one-byte token for each printable ASCII byte and each UTF-8
 * continuation byte (byte-level BPE vocabularies do); otherwise the mask keeps the tokens that
 * leave the least to write. Unbounded strings get no length cap of their own: the budget
 * alone closes them.
 *
 *     grammar *g = grammar_compile("{\"type\":\"object\", ...}", err, sizeof err);
 *     grammar_vocab *v = grammar_vocab_create(tok, stop_ids, n_stop);   (once per model)
 *     grammar_state *s = grammar_state_create(g, v);
 *     sampler_set_grammar(sampler, s);  ... sample ...
 *     grammar_state_destroy(s); grammar_destroy(g);
 *
 * The subset: type (a name or an array of names), properties, required,
 * additionalProperties (true/false), items, minItems, maxItems, minLength, maxLength (in
 * characters), minimum, maximum, enum, const, anyOf, $ref to "#/$defs/NAME" or
 * "#/definitions/NAME" (not recursive); title, description, $schema, $id, $comment, examples
 * and default are ignored. What the answers look like:
 *   - compact JSON: no whitespace between tokens (the model cannot loop on spaces);
 *   - object properties in the schema's order; a property that is not required may be left
 *     out; only listed properties are written (an object schema without "properties" is any
 *     object);
 *   - anyOf branches (and the types of a "type" array) must begin with different characters
 *     (a string and an integer, not two objects); "integer" beside "number" is merged into it;
 *   - numbers: at most 15 digits for integers; 12 integer digits, 6 decimals and (only
 *     without bounds) a 3-digit exponent for numbers; bounds hold to 1e-6;
 *   - strings are valid UTF-8; \u escapes only in strings without length limits;
 *   - containers nest at most 30 deep ("{}" included; a deeper schema is an error).
 */
#ifndef TERN_ENGINE_GRAMMAR_H
#define TERN_ENGINE_GRAMMAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/tokenizer.h"

typedef struct grammar grammar;
typedef struct grammar_vocab grammar_vocab;
typedef struct grammar_state grammar_state;

/* schema_json is a JSON Schema document as text; "{}" (the schema every value satisfies) is
 * plain "any JSON". NULL with err on invalid JSON or a keyword outside the subset; err then
 * names the keyword (e.g. "unsupported schema keyword \"pattern\" at /properties/name"). */
grammar *grammar_compile(const char *schema_json, char *err, size_t errlen);
void grammar_destroy(grammar *g);

/* Runs text through g: -1 if some byte does not fit, 0 if it is a proper prefix of a valid
 * answer, 1 if it is a complete one. For tests and checks; allocates. -1 on out of memory. */
int grammar_match(const grammar *g, const char *text, size_t len);

/* The vocabulary's bytes, for masks. stop_ids: the tokens that end an answer (EOS,
 * <end_of_utterance>); allowed only once the value is complete. NULL on out of memory. */
grammar_vocab *grammar_vocab_create(const tok *t, const int32_t *stop_ids, int n_stop);
void grammar_vocab_destroy(grammar_vocab *v);

/* One answer's position in the grammar. g and v must outlive it. NULL on out of memory. */
grammar_state *grammar_state_create(const grammar *g, const grammar_vocab *v);
void grammar_state_destroy(grammar_state *s);
/* Back to the start, for a new answer. */
void grammar_state_reset(grammar_state *s);
/* Sets logits[id] = -INFINITY for every token whose bytes cannot continue the answer (or, with
 * a budget, cannot let it finish in time; then it notes the cut, see grammar_state_cut_short). */
void grammar_state_mask(grammar_state *s, float *logits);
/* Whether token id may come next (the state is not changed, but for noting a token the budget
 * turns away): a sampler checks its unconstrained pick with this and computes the whole mask
 * only when the pick does not fit. */
bool grammar_state_allows(grammar_state *s, int32_t id);
/* Advances past token id (which the mask allowed). -1 if it did not fit (state unchanged). */
int grammar_state_accept(grammar_state *s, int32_t id);
/* The bytes so far form one complete value (a stop token is allowed now). */
bool grammar_state_complete(const grammar_state *s);
/* tokens_left: how many more tokens the answer may have, counting the one about to be picked
 * (< 0: no limit, as after create and reset). Set it before each pick. */
void grammar_state_set_budget(grammar_state *s, int tokens_left);
/* The budget turned away a token the grammar allowed (a pick, or tokens of a mask): the value
 * was closed early to fit. Cleared by reset. */
bool grammar_state_cut_short(const grammar_state *s);
/* The fewest bytes that complete the value from here (0: complete). */
int grammar_state_min_bytes(const grammar_state *s);
/* The same for text run through g from the start: -1 if text is not a prefix of a valid
 * answer, -2 on out of memory. For tests. */
int grammar_min_bytes(const grammar *g, const char *text, size_t len);

#endif
