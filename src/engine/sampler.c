/* Sampling over one row of logits, with all scratch owned by the sampler. */
#include "engine/sampler.h"

#include <assert.h>
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
    grammar_state *g;
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

/* The k best of the n logits into c[0..k), sorted, without sorting the
 * vocabulary: the first k sorted, then one pass in id order where a logit
 * enters only if it beats the k-th best so far (a later id never wins a
 * tie), by insertion: cheap for the small k used. All n sorted when k >= n. */
static void top_sorted(const float *logit, int n, int k, sampler_cand *c)
{
    int m = k < n ? k : n;
    for (int i = 0; i < m; i++)
        c[i] = (sampler_cand){logit[i], i};
    qsort(c, (size_t)m, sizeof *c, cmp_desc);
    float floor_l = c[m - 1].logit;
    for (int i = m; i < n; i++) {
        if (!(logit[i] > floor_l)) continue;
        sampler_cand v = {logit[i], i};
        int j = m - 1;
        while (j > 0 && before(&v, &c[j - 1])) {
            c[j] = c[j - 1];
            j--;
        }
        c[j] = v;
        floor_l = c[m - 1].logit;
    }
}

/* Each distinct recent token is penalised once, however often it occurred. */
static void penalise_repeats(sampler *s)
{
    assert(s->n_recent <= s->p.repeat_last_n);
    float penalty = s->p.repeat_penalty;
    for (int i = 0; i < s->n_recent; i++) {
        int32_t t = s->recent[i];
        if (t < 0 || t >= s->n_vocab) continue;
        bool seen = false;
        for (int j = 0; j < i && !seen; j++)
            seen = s->recent[j] == t;
        if (seen) continue;
        float *l = &s->logit[t];
        *l = *l > 0 ? *l / penalty : *l * penalty;
    }
}

/* The first index of the largest value (NaNs never win), in two passes that
 * vectorise: the maximum over eight lanes, then the first index holding it.
 * A scan that keeps the best index carries a dependency from one element to
 * the next, ~1 ns each: 50 us a token for a 49152-entry vocabulary. */
static int32_t argmax(const float *x, int n)
{
    float m8[8];
    for (int k = 0; k < 8; k++)
        m8[k] = -INFINITY;
    int n8 = n - n % 8;
    for (int i = 0; i < n8; i += 8)
        for (int k = 0; k < 8; k++)
            m8[k] = x[i + k] > m8[k] ? x[i + k] : m8[k];
    float mx = -INFINITY;
    for (int k = 0; k < 8; k++)
        mx = m8[k] > mx ? m8[k] : mx;
    for (int i = n8; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    for (int i = 0; i < n; i++)
        if (x[i] == mx) return i;
    return 0; /* every value NaN or -inf */
}

/* Without top_k, top_p first tries this many best candidates (selected by
 * insertion, which costs ~k per entry that enters). */
#define SAMPLER_NUCLEUS_TRY 256

/* Probabilities of cand[0..n) (sorted, best first) over the whole
 * vocabulary: z is the sum of the exponentials at the temperature. */
static void cand_probs(sampler *s, int n, double z)
{
    float mx = s->cand[0].logit;
    for (int i = 0; i < n; i++)
        s->prob[i] = (float)(expf((s->cand[i].logit - mx) / s->p.temperature) / z);
}

/* The candidates the cuts may keep, sorted, with their softmax
 * probabilities at the temperature; returns how many. With top_k, the
 * top_k best. Without it the whole vocabulary is sorted only when no cut
 * bounds it (~5 ms for 49152 entries): min_p keeps only logits above a
 * threshold, so those alone are gathered and sorted, and top_p is first
 * tried on the best SAMPLER_NUCLEUS_TRY. */
static int top_k_probs(sampler *s, const float *logit)
{
    const sampler_params *p = &s->p;
    int V = s->n_vocab;
    if (p->top_k > 0 && p->top_k < V) {
        int n = p->top_k;
        top_sorted(logit, V, n, s->cand);
        float mx = s->cand[0].logit;
        double sum = 0.0;
        for (int i = 0; i < n; i++) {
            s->prob[i] = expf((s->cand[i].logit - mx) / p->temperature);
            sum += s->prob[i];
        }
        for (int i = 0; i < n; i++)
            s->prob[i] = (float)(s->prob[i] / sum);
        return n;
    }
    float mx = logit[argmax(logit, V)];
    double z = 0.0;
    for (int i = 0; i < V; i++)
        z += expf((logit[i] - mx) / p->temperature);
    /* min_p keeps p >= min_p * p_best, that is logit >= mx + T ln(min_p);
     * gathered with a margin, as the cut itself compares rounded floats */
    float thr = -INFINITY;
    int m = V;
    if (p->min_p > 0.0f) {
        thr = mx + p->temperature * logf(p->min_p);
        thr -= 1e-3f * (fabsf(thr) + 1.0f);
        m = 0;
        for (int i = 0; i < V; i++)
            m += logit[i] >= thr;
    }
    if (p->top_p < 1.0f && p->top_p > 0.0f && m > SAMPLER_NUCLEUS_TRY) {
        top_sorted(logit, V, SAMPLER_NUCLEUS_TRY, s->cand);
        cand_probs(s, SAMPLER_NUCLEUS_TRY, z);
        double cum = 0.0;
        for (int i = 0; i < SAMPLER_NUCLEUS_TRY; i++)
            cum += s->prob[i];
        if (cum >= p->top_p) return SAMPLER_NUCLEUS_TRY;
    }
    int n = 0;
    for (int i = 0; i < V; i++)
        if (m == V || logit[i] >= thr) s->cand[n++] = (sampler_cand){logit[i], i};
    assert(n == m && n >= 1);
    qsort(s->cand, (size_t)n, sizeof *s->cand, cmp_desc);
    cand_probs(s, n, z);
    return n;
}

/* Nucleus: the fewest candidates whose probabilities reach top_p. */
static int cut_top_p(const float *prob, int n, float top_p)
{
    double cum = 0.0;
    for (int i = 0; i < n; i++) {
        cum += prob[i];
        if (cum >= top_p) return i + 1;
    }
    return n;
}

/* The candidates at least min_p times as likely as the best (always the best). */
static int cut_min_p(const float *prob, int n, float min_p)
{
    float floor_p = min_p * prob[0];
    int keep = 1;
    while (keep < n && prob[keep] >= floor_p)
        keep++;
    return keep;
}

/* One of the first n candidates, drawn by their (renormalised) probabilities. */
static int32_t draw(sampler *s, int n)
{
    assert(n >= 1 && n <= s->n_vocab); /* the cuts keep at least the best */
    double total = 0.0;
    for (int i = 0; i < n; i++)
        total += s->prob[i];
    double u = next_unit(&s->rng) * total, acc = 0.0;
    for (int i = 0; i < n; i++) {
        acc += s->prob[i];
        if (u < acc) return s->cand[i].id;
    }
    return s->cand[n - 1].id;
}

void sampler_set_grammar(sampler *s, grammar_state *g)
{
    s->g = g;
}

static int32_t pick_from(sampler *s, const float *l)
{
    const sampler_params *p = &s->p;
    if (p->temperature <= 0.0f) return argmax(l, s->n_vocab);
    int n = top_k_probs(s, l);
    if (p->top_p < 1.0f && p->top_p > 0.0f) n = cut_top_p(s->prob, n, p->top_p);
    if (p->min_p > 0.0f) n = cut_min_p(s->prob, n, p->min_p);
    return draw(s, n);
}

int32_t sampler_sample(sampler *s, const float *logits)
{
    const sampler_params *p = &s->p;
    const float *l = logits; /* copied only when penalties or the grammar change it */
    if (p->repeat_penalty != 1.0f && p->repeat_penalty > 0.0f) {
        memcpy(s->logit, logits, (size_t)s->n_vocab * sizeof *s->logit);
        penalise_repeats(s);
        l = s->logit;
    }

    int32_t pick = pick_from(s, l);
    if (s->g && !grammar_state_allows(s->g, pick)) {
        if (l != s->logit) memcpy(s->logit, l, (size_t)s->n_vocab * sizeof *s->logit);
        grammar_state_mask(s->g, s->logit);
        pick = pick_from(s, s->logit);
    }
    if (s->g) grammar_state_accept(s->g, pick);
    sampler_accept(s, pick);
    return pick;
}
