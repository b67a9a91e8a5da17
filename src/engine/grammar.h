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
 *     grammar *g = grammar_compile("{\"type\":\"object\", ...}", err, sizeof err);
 *     grammar_vocab *v = grammar_vocab_create(tok, stop_ids, n_stop);   (once per model)
 *     grammar_state *s = grammar_state_create(g, v);
 *     sampler_set_grammar(sampler, s);  ... sample ...
 *     grammar_state_destroy(s); grammar_destroy(g);
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
/* Sets logits[id] = -INFINITY for every token whose bytes cannot continue the answer. */
void grammar_state_mask(grammar_state *s, float *logits);
/* Whether token id may come next (the state is not changed): a sampler checks its unconstrained
 * pick with this and computes the whole mask only when the pick does not fit. */
bool grammar_state_allows(grammar_state *s, int32_t id);
/* Advances past token id (which the mask allowed). -1 if it did not fit (state unchanged). */
int grammar_state_accept(grammar_state *s, int32_t id);
/* The bytes so far form one complete value (a stop token is allowed now). */
bool grammar_state_complete(const grammar_state *s);

#endif
