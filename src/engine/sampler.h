/* Token sampling: greedy, temperature, top-k, top-p, min-p, repetition
 * penalty, seeded. One sampler per request: it owns its PRNG state, the
 * recent-token window and all scratch (allocated by sampler_create), so
 * sampling a token allocates nothing and the same seed gives the same
 * tokens.
 *
 * Order: repetition penalty on the raw logits -> (temperature <= 0: argmax)
 * -> top-k -> softmax with temperature -> top-p -> min-p -> draw.
 *
 * With a grammar (sampler_set_grammar), the pick is checked against it; only a pick that
 * does not fit makes the sampler mask the logits (grammar_state_mask) and pick again from
 * them, so most steps never compute a mask. Greedy gives exactly the masked argmax; without
 * top-k/top-p/min-p the draw has exactly the masked distribution (a first draw kept when it
 * fits, else a draw from the masked rest, sums to p/P(fits)). The grammar's budget (the tokens
 * the answer has left, grammar_state_set_budget) is the caller's to set before each pick. */
#ifndef TERN_ENGINE_SAMPLER_H
#define TERN_ENGINE_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/grammar.h"

typedef struct {
    float temperature;    /* <= 0: greedy */
    int top_k;            /* <= 0: off */
    float top_p;          /* >= 1: off */
    float min_p;          /* <= 0: off */
    float repeat_penalty; /* 1: off; logit > 0 divided by it, < 0 multiplied */
    int repeat_last_n;    /* window of recent tokens the penalty looks at */
    uint64_t seed;
} sampler_params;

/* temperature 0.8, top_k 40, top_p 0.95, min_p 0.05, repeat_penalty 1.0,
 * repeat_last_n 64, seed 0. */
sampler_params sampler_default_params(void);

typedef struct sampler sampler;

sampler *sampler_create(int n_vocab, const sampler_params *p); /* NULL on out of memory */
void sampler_destroy(sampler *s);
/* Forget the recent tokens and restart the PRNG from the seed. */
void sampler_reset(sampler *s);
/* Tell the sampler about a token in the context (prompt tokens too, if the
 * penalty should see them). sampler_sample records its own picks. */
void sampler_accept(sampler *s, int32_t token);
/* Constrain the picks to g (NULL: none); the sampler tells g every token it picks. g must
 * outlive its use here; sampler_reset does not reset it. */
void sampler_set_grammar(sampler *s, grammar_state *g);
/* Pick the next token. logits is read, not changed. */
int32_t sampler_sample(sampler *s, const float *logits);

#endif
