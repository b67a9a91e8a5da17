/* Sampling over one row of logits, with all scratch owned by the sampler. */
#include "engine/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    float logit;
    int32_t id;
} sampler_cand;

struct sampler {
    sampler_params p;
    int n_vocab;
    uint64_t rng;
    int32_t *recent; /* ring of the last repeat_last_n tokens */
    int n_recent, head;
    float *logit; /* working copy */
    sampler_cand *cand;
    float *prob; /* candidate probabilities */
};

sampler_params sampler_default_params(void)
{
    sampler_params p = {.temperature = 0.8f,
                        .top_k = 40,
                        .top_p = 0.95f,
                        .min_p = 0.05f,
                        .repeat_penalty = 1.0f,
                        .repeat_last_n = 64,
                        .seed = 0};
    return p;
}

/* splitmix64: small, fast, good enough for drawing tokens. */
static uint64_t next_u64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double next_unit(uint64_t *s)
{
    return (double)(next_u64(s) >> 11) * 0x1.0p-53;
}

sampler *sampler_create(int n_vocab, const sampler_params *p)
{
    if (n_vocab < 1) return NULL;
    sampler *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->p = p ? *p : sampler_default_params();
    if (s->p.repeat_last_n < 0) s->p.repeat_last_n = 0;
    s->n_vocab = n_vocab;
    s->recent = calloc((size_t)s->p.repeat_last_n + 1, sizeof *s->recent);
    s->logit = malloc((size_t)n_vocab * sizeof *s->logit);
    s->cand = malloc((size_t)n_vocab * sizeof *s->cand);
    s->prob = malloc((size_t)n_vocab * sizeof *s->prob);
    if (!s->recent || !s->logit || !s->cand || !s->prob) {
        sampler_destroy(s);
        return NULL;
    }
    sampler_reset(s);
    return s;
}

void sampler_destroy(sampler *s)
{
    if (!s) return;
    free(s->recent);
    free(s->logit);
    free(s->cand);
    free(s->prob);
    free(s);
}

void sampler_reset(sampler *s)
{
    s->rng = s->p.seed;
    s->n_recent = 0;
    s->head = 0;
}

void sampler_accept(sampler *s, int32_t token)
{
    int n = s->p.repeat_last_n;
    if (n == 0) return;
    s->recent[s->head] = token;
    s->head = (s->head + 1) % n;
    if (s->n_recent < n) s->n_recent++;
}

/* Descending by logit, ties by id so the order never depends on qsort. */
static bool before(const sampler_cand *a, const sampler_cand *b)
{
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static int cmp_desc(const void *a, const void *b)
{
    return before(a, b) ? -1 : before(b, a) ? 1 : 0;
}

/* Move the k best candidates to the front, sorted. */
static void top_sorted(sampler_cand *c, int n, int k)
{
    if (k >= n) {
        qsort(c, (size_t)n, sizeof *c, cmp_desc);
        return;
    }
    /* Keep the best k in c[0..k) by insertion: cheap for the small k used. */
    qsort(c, (size_t)k, sizeof *c, cmp_desc);
    for (int i = k; i < n; i++) {
        if (!before(&c[i], &c[k - 1])) continue;
        sampler_cand v = c[i];
        int j = k - 1;
        while (j > 0 && before(&v, &c[j - 1])) {
            c[j] = c[j - 1];
            j--;
        }
        c[j] = v;
    }
}

int32_t sampler_sample(sampler *s, const float *logits)
{
    const sampler_params *p = &s->p;
    int V = s->n_vocab;
    memcpy(s->logit, logits, (size_t)V * sizeof *s->logit);

    if (p->repeat_penalty != 1.0f && p->repeat_penalty > 0.0f) {
        /* Each distinct token is penalised once, however often it occurred. */
        for (int i = 0; i < s->n_recent; i++) {
            int32_t t = s->recent[i];
            if (t < 0 || t >= V) continue;
            bool seen = false;
            for (int j = 0; j < i && !seen; j++)
                seen = s->recent[j] == t;
            if (seen) continue;
            float *l = &s->logit[t];
            *l = *l > 0 ? *l / p->repeat_penalty : *l * p->repeat_penalty;
        }
    }

    int32_t pick;
    if (p->temperature <= 0.0f) {
        pick = 0;
        for (int i = 1; i < V; i++)
            if (s->logit[i] > s->logit[pick]) pick = i;
    } else {
        for (int i = 0; i < V; i++)
            s->cand[i] = (sampler_cand){s->logit[i], i};
        int n = p->top_k > 0 && p->top_k < V ? p->top_k : V;
        top_sorted(s->cand, V, n);
        float mx = s->cand[0].logit;
        double sum = 0.0;
        for (int i = 0; i < n; i++) {
            s->prob[i] = expf((s->cand[i].logit - mx) / p->temperature);
            sum += s->prob[i];
        }
        for (int i = 0; i < n; i++)
            s->prob[i] = (float)(s->prob[i] / sum);
        if (p->top_p < 1.0f && p->top_p > 0.0f) {
            double cum = 0.0;
            int keep = n;
            for (int i = 0; i < n; i++) {
                cum += s->prob[i];
                if (cum >= p->top_p) {
                    keep = i + 1;
                    break;
                }
            }
            n = keep;
        }
        if (p->min_p > 0.0f) {
            float floor_p = p->min_p * s->prob[0];
            int keep = 1;
            while (keep < n && s->prob[keep] >= floor_p)
                keep++;
            n = keep;
        }
        double total = 0.0;
        for (int i = 0; i < n; i++)
            total += s->prob[i];
        double u = next_unit(&s->rng) * total, acc = 0.0;
        pick = s->cand[n - 1].id;
        for (int i = 0; i < n; i++) {
            acc += s->prob[i];
            if (u < acc) {
                pick = s->cand[i].id;
                break;
            }
        }
    }
    sampler_accept(s, pick);
    return pick;
}
