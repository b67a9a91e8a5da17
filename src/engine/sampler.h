/* Token sampling: greedy, temperature, top-k, top-p, min-p, repetition
 * penalty, seeded. One sampler per request: it owns its PRNG state, the
 * recent-token window and all scratch (allocated by sampler_create), so
 * sampling a token allocates nothing and the same seed gives the same
 * tokens.
 *
 * Order: repetition penalty on the raw logits -> (temperature <= 0: argmax)
 * -> top-k -> softmax with temperature -> top-p -> min-p -> draw. */
#ifndef TERN_ENGINE_SAMPLER_H
#define TERN_ENGINE_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
/* Pick the next token. logits is read, not changed. */
int32_t sampler_sample(sampler *s, const float *logits);

#endif
