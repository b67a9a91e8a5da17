/* The real engine (src/engine) behind the scheduler's backend interface.
 *
 * Per slot: the prompt as token ids (the engine's SmolVLM template) with, at image positions,
 * the vision encoder's embedding rows; a sampler with the request's parameters; a streaming
 * detokenizer. Each scheduler step becomes ONE eng_step: the queued prefill chunks plus one token
 * for every generating slot. A generating slot's token is sampled from the logits of the previous
 * step, then fed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "backend.h"
#include "engine/engine.h"
#include "engine/image.h"
#include "engine/prompt.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"

struct eslot {
    int32_t *ids;       /* the prompt (from prompt_build) */
    const float **rows; /* per position: image embedding row, or NULL */
    int n;
    float *embd[JOB_MAX_IMAGES];
    int pos;      /* positions in the KV cache */
    int queued;   /* prefill tokens queued for the next step */
    int32_t next; /* token fed in this step */
    sampler *s;
    tok_stream *ts;
};

struct engb {
    struct backend base;
    eng_model *m;
    eng_ctx *c;
    tok *t;
    const eng_model_info *in;
    prompt_ctx pc;
    int nslots, n_ctx, n_batch;
    struct eslot *slots;
    eng_item *items;
    char name[128], quant[16];
    long long size, params;
};

/* Decode-side work for one image: Idefics3 preprocessing (resize, tiling) and the vision
 * encoder. Returns the embedding rows ((rows*cols + 1) tiles of n_image_tokens rows). */
static float *encode_image(struct engb *e, const struct job_image *im, int *rows, int *cols,
                           char *err, size_t errlen)
{
    const eng_model_info *in = e->in;
    const gguf_file *vf = eng_model_vision_file(e->m);
    img_proc_cfg cfg = {
        .longest_edge = in->image_size, .tile = in->image_size, .rescale = 1.0 / 255.0};
    uint64_t pre;
    if (gguf_get_u64(vf, "clip.vision.preproc_image_size", &pre) && pre > 0 && pre < 65536)
        cfg.longest_edge = (int)pre;
    cfg.split = cfg.longest_edge > cfg.tile;
    memcpy(cfg.mean, in->image_mean, sizeof cfg.mean);
    memcpy(cfg.std, in->image_std, sizeof cfg.std);
    img_rgb rgb = {im->width, im->height, im->rgb};
    img_tiles tiles = {0};
    if (img_preprocess(&rgb, &cfg, &tiles, err, errlen) != 0) return NULL;
    float *embd = malloc((size_t)tiles.n * in->n_image_tokens * in->n_embd * sizeof *embd);
    if (!embd)
        snprintf(err, errlen, "out of memory");
    else if (eng_vision_encode(e->c, tiles.pixels, tiles.n, embd, err, errlen) != ENG_OK) {
        free(embd);
        embd = NULL;
    }
    *rows = tiles.rows;
    *cols = tiles.cols;
    img_tiles_free(&tiles);
    return embd;
}

static void slot_clear(struct engb *e, int i)
{
    struct eslot *p = &e->slots[i];
    for (int k = 0; k < JOB_MAX_IMAGES; k++)
        free(p->embd[k]);
    free(p->ids);
    free(p->rows);
    sampler_destroy(p->s);
    tok_stream_destroy(p->ts);
    memset(p, 0, sizeof *p);
    eng_slot_reset(e->c, i);
}

/* The prompt comes from the engine's SmolVLM template builder (engine/prompt.h); the image
 * rows then go, in order, to the <image> ids it laid out. */
static int eng_admit(struct backend *b, int slot, struct job *j, struct backend_admit *out,
                     int *client_error, char *err, size_t errlen)
{
    struct engb *e = (struct engb *)b;
    struct eslot *p = &e->slots[slot];
    const eng_model_info *in = e->in;
    int rows[JOB_MAX_IMAGES], cols[JOB_MAX_IMAGES];
    prompt_part parts[JOB_MAX_IMAGES + 64];
    prompt_msg msgs[64];
    *client_error = 0;
    if (j->n_images && !in->has_vision) {
        *client_error = 1;
        snprintf(err, errlen, "this model has no vision projector (mmproj); send text only");
        return -1;
    }
    if (j->n_msgs > 64) {
        *client_error = 1;
        snprintf(err, errlen, "at most 64 messages per request");
        return -1;
    }
    double t0 = job_now();
    for (int i = 0; i < j->n_images; i++)
        if (!(p->embd[i] = encode_image(e, &j->images[i], &rows[i], &cols[i], err, errlen)))
            goto fail;
    double vision_ms = (job_now() - t0) * 1e3;

    int np = 0, img = 0;
    for (int m = 0; m < j->n_msgs; m++) {
        const struct job_msg *jm = &j->msgs[m];
        msgs[m].role = jm->role == ROLE_SYSTEM      ? PROMPT_SYSTEM
                       : jm->role == ROLE_ASSISTANT ? PROMPT_ASSISTANT
                                                    : PROMPT_USER;
        msgs[m].parts = parts + np;
        for (int k = 0; k < jm->n_images && img < j->n_images; k++, img++)
            parts[np++] = (prompt_part){.image = true, .rows = rows[img], .cols = cols[img]};
        parts[np++] = (prompt_part){.text = jm->text};
        msgs[m].n_parts = (int)(parts + np - msgs[m].parts);
    }
    if (prompt_build(&e->pc, msgs, j->n_msgs, true, &p->ids, &p->n, err, errlen) != 0) goto fail;
    if (p->n >= e->n_ctx) {
        *client_error = 1;
        snprintf(err, errlen, "prompt is %d tokens; the context holds %d", p->n, e->n_ctx);
        goto fail;
    }
    if (!(p->rows = calloc((size_t)p->n, sizeof *p->rows))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    int image_tokens = 0;
    img = 0;
    int left = j->n_images ? (rows[0] * cols[0] + 1) * in->n_image_tokens : 0, row = 0;
    for (int i = 0; i < p->n; i++) {
        if (p->ids[i] != e->pc.image || img >= j->n_images) continue;
        p->rows[i] = p->embd[img] + (size_t)row * in->n_embd;
        image_tokens++;
        row++;
        if (--left == 0 && ++img < j->n_images) {
            left = (rows[img] * cols[img] + 1) * in->n_image_tokens;
            row = 0;
        }
    }
    if (img != j->n_images) {
        snprintf(err, errlen, "the prompt holds %d image tokens, fewer than the images' rows",
                 image_tokens);
        goto fail;
    }
    sampler_params sp = sampler_default_params();
    sp.temperature = j->params.temperature;
    sp.top_k = j->params.top_k;
    sp.top_p = j->params.top_p;
    sp.min_p = j->params.min_p;
    sp.repeat_penalty = j->params.repeat_penalty;
    if (j->params.has_seed)
        sp.seed = j->params.seed;
    else if (getrandom(&sp.seed, sizeof sp.seed, GRND_NONBLOCK) != sizeof sp.seed)
        sp.seed = (uint64_t)(job_now() * 1e9);
    p->s = sampler_create(in->n_vocab, &sp);
    p->ts = tok_stream_create(e->t);
    if (!p->s || !p->ts) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (int i = 0; i < p->n; i++)
        sampler_accept(p->s, p->ids[i]);
    eng_slot_reset(e->c, slot);
    out->prompt_tokens = p->n;
    out->image_tokens = image_tokens;
    out->vision_ms = j->n_images ? vision_ms : -1;
    return 0;
fail:
    slot_clear(e, slot);
    return -1;
}

static int eng_prefill(struct backend *b, int slot, int budget, char *err, size_t errlen)
{
    (void)err, (void)errlen;
    struct eslot *p = &((struct engb *)b)->slots[slot];
    int left = p->n - p->pos;
    p->queued = budget < left ? budget : left;
    return left - p->queued;
}

static int eng_decode(struct backend *b, int n, const int *slots, struct backend_token *out,
                      char *err, size_t errlen)
{
    struct engb *e = (struct engb *)b;
    int ni = 0;
    /* Sample first: the logits belong to the previous step and die with the next eng_step. */
    for (int k = 0; k < n; k++) {
        struct eslot *p = &e->slots[slots[k]];
        struct backend_token *o = &out[k];
        const float *logits = eng_logits(e->c, slots[k]);
        o->len = 0;
        o->eos = 0;
        int32_t id = logits ? sampler_sample(p->s, logits) : e->pc.eos;
        if (prompt_is_stop(&e->pc, id) || p->pos >= e->n_ctx) {
            size_t len;
            const char *tail = tok_stream_flush(p->ts, &len);
            if (len >= sizeof o->text) len = sizeof o->text - 1;
            memcpy(o->text, tail, len);
            o->len = len;
            o->eos = 1;
            continue;
        }
        size_t len;
        const char *piece = tok_stream_push(p->ts, id, &len);
        if (len >= sizeof o->text) len = sizeof o->text - 1;
        memcpy(o->text, piece, len);
        o->text[len] = 0;
        o->len = len;
        p->next = id;
        e->items[ni++] = (eng_item){.slot = slots[k],
                                    .n_tokens = 1,
                                    .tokens = &p->next,
                                    .pos = p->pos,
                                    .want_logits = true};
    }
    for (int i = 0; i < e->nslots; i++) {
        struct eslot *p = &e->slots[i];
        if (!p->queued) continue;
        e->items[ni++] = (eng_item){.slot = i,
                                    .n_tokens = p->queued,
                                    .tokens = p->ids + p->pos,
                                    .embd = (const float *const *)p->rows + p->pos,
                                    .pos = p->pos,
                                    .want_logits = p->pos + p->queued == p->n};
    }
    if (ni && eng_step(e->c, e->items, ni, err, errlen) != ENG_OK) {
        for (int i = 0; i < e->nslots; i++)
            e->slots[i].queued = 0;
        return -1;
    }
    for (int i = 0; i < ni; i++) {
        struct eslot *p = &e->slots[e->items[i].slot];
        p->pos += e->items[i].n_tokens;
        p->queued = 0;
    }
    return 0;
}

static void eng_release(struct backend *b, int slot)
{
    slot_clear((struct engb *)b, slot);
}

static int eng_count(struct backend *b, const char *text)
{
    return tok_encode(((struct engb *)b)->t, text, strlen(text), NULL, 0);
}

static void eng_info(struct backend *b, struct backend_info *out)
{
    struct engb *e = (struct engb *)b;
    *out = (struct backend_info){e->name, "llama", e->quant, e->size, e->params, e->in->has_vision};
}

static void eng_destroy(struct backend *b)
{
    struct engb *e = (struct engb *)b;
    for (int i = 0; e->slots && i < e->nslots; i++)
        slot_clear(e, i);
    free(e->slots);
    free(e->items);
    tok_free(e->t);
    eng_ctx_destroy(e->c);
    eng_model_free(e->m);
    free(e);
}

static const struct backend_ops eng_ops = {
    eng_admit, eng_prefill, eng_decode, eng_release, eng_count, eng_info, eng_destroy,
};

/* Parameter count and the most common weight type, for /api/tags. */
static void describe(struct engb *e)
{
    const gguf_file *files[2] = {eng_model_text_file(e->m), eng_model_vision_file(e->m)};
    long long by_type[64] = {0};
    for (int f = 0; f < 2; f++) {
        if (!files[f]) continue;
        e->size += (long long)gguf_file_size(files[f]);
        for (int i = 0; i < gguf_n_tensors(files[f]); i++) {
            const gguf_tensor *t = gguf_tensor_at(files[f], i);
            long long n = 1;
            for (int d = 0; d < t->n_dims; d++)
                n *= t->ne[d];
            e->params += n;
            if (f == 0 && t->n_dims == 2 && (int)t->type >= 0 && (int)t->type < 64)
                by_type[t->type] += n;
        }
    }
    int best = 0;
    for (int i = 1; i < 64; i++)
        if (by_type[i] > by_type[best]) best = i;
    const char *name = gguf_type_name((kt_type)best);
    snprintf(e->quant, sizeof e->quant, "%s", name ? name : "unknown");
}

struct backend *backend_engine_create(const struct backend_options *o, char *err, size_t errlen)
{
    struct engb *e = calloc(1, sizeof *e);
    if (!e) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    e->base.ops = &eng_ops;
    const char *mmproj = o->mmproj_path && *o->mmproj_path ? o->mmproj_path : NULL;
    if (eng_model_load(o->model_path, mmproj, &e->m, err, errlen) != ENG_OK) goto fail;
    e->in = eng_model_get_info(e->m);
    if (tok_load(eng_model_text_file(e->m), &e->t, err, errlen) != 0) goto fail;
    eng_params p = eng_default_params();
    p.n_slots = o->slots;
    p.n_ctx = o->ctx_size;
    p.n_batch = o->prefill_chunk + o->slots;
    p.n_threads = o->threads;
    if (eng_ctx_create(e->m, &p, &e->c, err, errlen) != ENG_OK) goto fail;
    e->nslots = o->slots;
    e->n_ctx = eng_ctx_params(e->c)->n_ctx;
    e->n_batch = eng_ctx_params(e->c)->n_batch;
    if (prompt_init(&e->pc, e->t, e->in->n_image_tokens, err, errlen) != 0) goto fail;
    e->slots = calloc((size_t)o->slots, sizeof *e->slots);
    e->items = calloc((size_t)o->slots * 2, sizeof *e->items);
    if (!e->slots || !e->items) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    snprintf(e->name, sizeof e->name, "%s", o->model_name);
    describe(e);
    return &e->base;
fail:
    eng_destroy(&e->base);
    return NULL;
}
