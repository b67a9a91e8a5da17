/* The real engine (src/engine) behind the scheduler's backend interface.
 *
 * Per slot: the prompt as token ids (the engine's SmolVLM template) with, at image positions,
 * the vision encoder's embedding rows; a sampler with the request's parameters (and, for a
 * request with a JSON schema, the grammar state that constrains it); a streaming detokenizer. Each
 * scheduler step becomes ONE eng_step: the queued prefill chunks plus one token for every
 * generating slot. A generating slot's token is sampled from the logits of the previous step, then
 * fed. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <unistd.h>

#include "backend.h"
#include "engine/chat.h"
#include "engine/grammar.h"
#include "upload.h"

#define SIG_MAX 130 /* two parts per message, at most 64 messages */

/* One request's prompt built on the vision thread. The worker owns it from hand-over until
 * done; then the slot does (admit_poll), unless the slot abandoned it first (released while
 * queued or encoding): then the worker frees it. `done` and `abandoned` are read and written
 * under the worker's mutex. */
struct vreq {
    struct job *j;            /* a reference of its own: the images stay valid while they encode */
    struct upload_feed *feed; /* its pictures, decoded ahead by the decoder while it waits */
    chat_msg msgs[64];
    int n_msgs;
    chat_prompt prompt;
    int rc, client_error;
    char err[256];
    int done, abandoned;
    struct vreq *next;
};

struct vision_worker {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct vreq *head, *tail;
    int running, stop, started, start_rc;
    char start_err[256];
    eng_ctx *c; /* made on the thread, so its pool's workers inherit the thread's nice value */
    const eng_model *m;
    const chat_ctx *cc;
    int threads, nice;
    void (*notify)(void *);
    void *notify_arg;
};

struct eslot {
    struct vreq *vr;    /* the prompt being built on the vision thread, or NULL */
    chat_prompt prompt; /* ids, and the image rows at their positions */
    int pos;            /* positions in the KV cache */
    int queued;         /* prefill tokens queued for the next step */
    int32_t next;       /* token fed in this step */
    sampler *s;
    grammar *g;        /* the request's schema, or NULL */
    grammar_state *gs; /* where its answer is in g; the sampler consults it */
    int max_tokens;    /* the request's; with the context's room, its answer's budget */
    int n_gen;         /* tokens generated so far */
    tok_stream *ts;
    chat_history h;        /* what the slot's KV holds; kept after release */
    uint64_t sig[SIG_MAX]; /* its last request's messages, for pick_slot */
    int n_sig;
    unsigned long last_use; /* admission count when it last took a job */
};

struct engb {
    struct backend base;
    eng_model *m;
    eng_ctx *c;
    tok *t;
    const eng_model_info *in;
    chat_ctx cc;
    embcache *cache;
    grammar_vocab *gv; /* the vocabulary's bytes, for every schema request's masks */
    int prefix_cache;
    unsigned long n_admitted;
    uint64_t sig[SIG_MAX]; /* pick_slot's scratch */
    int nslots, n_ctx, n_batch;
    struct eslot *slots;
    eng_item *items;
    char name[128], quant[16];
    long long size, params;
    struct vision_worker vw; /* vw.running: images encode there */
    struct upload_decoder *decoder;
};

static void vreq_free(struct vreq *vr)
{
    upload_feed_end(vr->feed);
    chat_prompt_free(&vr->prompt);
    job_unref(vr->j);
    free(vr);
}

/* The slot lets go of its vision request: freed now when done, else the worker frees it. */
static void vreq_abandon(struct vision_worker *vw, struct vreq *vr)
{
    pthread_mutex_lock(&vw->mu);
    int done = vr->done;
    vr->abandoned = 1;
    pthread_mutex_unlock(&vw->mu);
    if (done) vreq_free(vr);
}

/* Frees the job's state (and lets go of its encode, if one is under way); the KV cache and its
 * history stay for the next request. */
static void slot_end_job(struct engb *e, struct eslot *p)
{
    if (p->vr) vreq_abandon(&e->vw, p->vr);
    p->vr = NULL;
    chat_prompt_free(&p->prompt);
    sampler_destroy(p->s);
    grammar_state_destroy(p->gs);
    grammar_destroy(p->g);
    tok_stream_destroy(p->ts);
    p->s = NULL;
    p->gs = NULL;
    p->g = NULL;
    p->ts = NULL;
    p->pos = p->queued = 0;
    p->n_gen = 0;
}

static void slot_clear(struct engb *e, int i)
{
    struct eslot *p = &e->slots[i];
    slot_end_job(e, p);
    p->h.n = 0;
    p->n_sig = 0;
    eng_slot_reset(e->c, i);
}

/* A request's shape for pick_slot: per message, one hash of its role and pictures' bytes
 * and one of its text. Returns the parts written. */
static int job_signature(const struct job *j, uint64_t *sig)
{
    int n = 0, img = 0;
    for (int m = 0; m < j->n_msgs && n + 2 <= SIG_MAX; m++) {
        const struct job_msg *jm = &j->msgs[m];
        embcache_hasher h;
        embcache_hash_init(&h, 0);
        int head[2] = {jm->role, jm->n_images};
        embcache_hash_add(&h, head, sizeof head);
        for (int k = 0; k < jm->n_images && img < j->n_images; k++, img++) {
            const struct job_image *im = &j->images[img];
            int dims[2] = {im->w, im->h};
            embcache_hash_add(&h, dims, sizeof dims);
            embcache_hash_add(&h, im->data, im->len);
        }
        sig[n++] = embcache_hash_final(&h).a;
        embcache_hash_init(&h, 1);
        if (jm->text) embcache_hash_add(&h, jm->text, strlen(jm->text));
        sig[n++] = embcache_hash_final(&h).a;
    }
    return n;
}

/* The free slot sharing the most leading parts with the job; among equals an empty slot, then
 * the least recently used, so unrelated requests do not evict a useful prefix. */
static int eb_pick_slot(struct backend *b, const struct job *j, const int *free_slots, int n)
{
    struct engb *e = (struct engb *)b;
    if (!e->prefix_cache) return 0;
    int n_sig = job_signature(j, e->sig), best = 0, best_match = -1;
    for (int k = 0; k < n; k++) {
        const struct eslot *p = &e->slots[free_slots[k]];
        int match = 0;
        while (match < n_sig && match < p->n_sig && p->sig[match] == e->sig[match])
            match++;
        const struct eslot *q = &e->slots[free_slots[best]];
        if (match > best_match || (match == best_match &&
                                   ((p->h.n == 0) > (q->h.n == 0) ||
                                    ((p->h.n == 0) == (q->h.n == 0) && p->last_use < q->last_use))))
            best = k, best_match = match;
    }
    struct eslot *p = &e->slots[free_slots[best]];
    memcpy(p->sig, e->sig, (size_t)n_sig * sizeof *p->sig);
    p->n_sig = n_sig;
    return best;
}

static sampler_params job_sampler_params(const struct job *j)
{
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
    return sp;
}

static int admit_ready(struct engb *e, int slot, struct job *j, struct backend_admit *out,
                       int *client_error, char *err, size_t errlen);

/* The feed's pictures lent to chat_prompt_build_from one at a time: a picture that does not
 * decode is the client's error. */
struct feed_source {
    struct upload_feed *f;
    int bad_picture;
};

static int feed_get(void *arg, int i, img_rgb *out, char *err, size_t errlen)
{
    struct feed_source *fs = arg;
    int rc = upload_feed_get(fs->f, i, 1, out, err, errlen);
    fs->bad_picture = rc != 0;
    return rc;
}

static void feed_put(void *arg, int i, img_rgb *im)
{
    (void)i;
    upload_feed_put(((struct feed_source *)arg)->f, im);
}

/* Builds the prompt, decoding the job's pictures through its feed (upload.c's decoder) one at
 * a time: each is freed once encoded, only the embeddings outlive this call. Decode time counts
 * as vision time, never queue time. */
static int build_prompt(const chat_ctx *cc, eng_ctx *c, const chat_msg *msgs, int n_msgs,
                        const struct job *j, struct upload_feed *feed, chat_prompt *out,
                        int *client_error, char *err, size_t errlen)
{
    struct feed_source fs = {feed, 0};
    chat_image_source src = {feed_get, feed_put, &fs};
    assert(feed || j->n_images == 0);
    int rc = chat_prompt_build_from(cc, c, msgs, n_msgs, &src, j->n_images, out, err, errlen);
    if (fs.bad_picture) *client_error = 1;
    return rc;
}

/* The job's messages and pictures through the engine's one prompt path (engine/chat.h); with
 * the vision thread running, a job with images goes there (returns 1). */
static int eb_admit(struct backend *b, int slot, struct job *j, struct backend_admit *out,
                    int *client_error, char *err, size_t errlen)
{
    struct engb *e = (struct engb *)b;
    struct eslot *p = &e->slots[slot];
    chat_msg msgs[64];
    *client_error = 0;
    slot_end_job(e, p);
    if (j->n_images && !e->in->has_vision) {
        *client_error = 1;
        snprintf(err, errlen, "this model has no vision projector (mmproj); send text only");
        return -1;
    }
    if (j->n_msgs > 64) {
        *client_error = 1;
        snprintf(err, errlen, "at most 64 messages per request");
        return -1;
    }
    for (int m = 0; m < j->n_msgs; m++) {
        const struct job_msg *jm = &j->msgs[m];
        msgs[m] = (chat_msg){.role = jm->role == ROLE_SYSTEM      ? PROMPT_SYSTEM
                                     : jm->role == ROLE_ASSISTANT ? PROMPT_ASSISTANT
                                                                  : PROMPT_USER,
                             .text = jm->text,
                             .n_images = jm->n_images};
    }
    if (j->n_images && e->vw.running) {
        struct vreq *vr = calloc(1, sizeof *vr);
        if (!vr) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        vr->feed = upload_feed_start(e->decoder, j, chat_image_min_edge(&e->cc), NULL, NULL);
        if (!vr->feed) {
            free(vr);
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        job_ref(j);
        vr->j = j;
        memcpy(vr->msgs, msgs, sizeof msgs[0] * (size_t)j->n_msgs);
        vr->n_msgs = j->n_msgs;
        p->vr = vr;
        pthread_mutex_lock(&e->vw.mu);
        if (e->vw.tail)
            e->vw.tail->next = vr;
        else
            e->vw.head = vr;
        e->vw.tail = vr;
        pthread_cond_signal(&e->vw.cv);
        pthread_mutex_unlock(&e->vw.mu);
        return 1;
    }
    if (build_prompt(&e->cc, e->c, msgs, j->n_msgs, j, NULL, &p->prompt, client_error, err,
                     errlen) != 0)
        goto fail;
    return admit_ready(e, slot, j, out, client_error, err, errlen);
fail:
    slot_clear(e, slot);
    return -1;
}

/* The slot's prompt is built: check it fits, make the sampler and the detokenizer. */
static int admit_ready(struct engb *e, int slot, struct job *j, struct backend_admit *out,
                       int *client_error, char *err, size_t errlen)
{
    struct eslot *p = &e->slots[slot];
    if (p->prompt.n >= e->n_ctx) {
        *client_error = 1;
        snprintf(err, errlen, "prompt is %d tokens; the context holds %d", p->prompt.n, e->n_ctx);
        goto fail;
    }
    sampler_params sp = job_sampler_params(j);
    p->s = chat_sampler_create(&e->cc, &p->prompt, &sp);
    p->ts = tok_stream_create(e->t);
    if (!p->s || !p->ts) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (j->params.json_schema) {
        /* The request parser has compiled it once already: a failure here is still the
         * client's schema (or memory). */
        char gerr[200];
        p->g = grammar_compile(j->params.json_schema, gerr, sizeof gerr);
        if (!p->g) {
            *client_error = 1;
            snprintf(err, errlen, "format: %s", gerr);
            goto fail;
        }
        p->gs = grammar_state_create(p->g, e->gv);
        if (!p->gs) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        sampler_set_grammar(p->s, p->gs);
    }
    p->max_tokens = j->params.max_tokens;
    p->n_gen = 0;
    /* Keep what the slot shares with the new prompt; the last prompt token is always run again
     * because its logits are the first answer token's. */
    int keep = e->prefix_cache ? chat_history_common(&e->cc, &p->h, &p->prompt) : 0;
    if (keep > p->prompt.n - 1) keep = p->prompt.n - 1;
    if (keep > eng_slot_len(e->c, slot)) keep = eng_slot_len(e->c, slot);
    if (keep > 0 && eng_slot_truncate(e->c, slot, keep, err, errlen) != ENG_OK) goto fail;
    if (keep <= 0) keep = 0, eng_slot_reset(e->c, slot);
    if (chat_history_set(&e->cc, &p->h, &p->prompt, keep) != 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    p->pos = keep;
    p->last_use = ++e->n_admitted;
    out->prompt_tokens = p->prompt.n;
    out->image_tokens = p->prompt.n_image_tokens;
    out->vision_ms = j->n_images ? p->prompt.vision_ms : -1;
    out->cached_tokens = keep;
    out->image_hits = p->prompt.image_hits;
    out->image_misses = p->prompt.n_images - p->prompt.image_hits;
    return 0;
fail:
    slot_clear(e, slot);
    return -1;
}

static int eb_admit_poll(struct backend *b, int slot, struct backend_admit *out, int *client_error,
                         char *err, size_t errlen)
{
    struct engb *e = (struct engb *)b;
    struct eslot *p = &e->slots[slot];
    struct vreq *vr = p->vr;
    *client_error = 0;
    pthread_mutex_lock(&e->vw.mu);
    int done = vr->done;
    pthread_mutex_unlock(&e->vw.mu);
    if (!done) return 1;
    p->vr = NULL;
    p->prompt = vr->prompt;
    vr->prompt = (chat_prompt){0};
    int rc = vr->rc;
    if (rc != 0) snprintf(err, errlen, "%s", vr->err);
    if (rc != 0) *client_error = vr->client_error;
    struct job *j = vr->j;
    job_ref(j);
    vreq_free(vr);
    if (rc == 0)
        rc = admit_ready(e, slot, j, out, client_error, err, errlen);
    else
        slot_clear(e, slot);
    job_unref(j);
    return rc;
}

/* The vision thread: lowers its priority, makes its context (and so its pool) and encodes the
 * queued requests one at a time. */
static void *vision_main(void *arg)
{
    struct vision_worker *vw = arg;
    if (vw->nice > 0) setpriority(PRIO_PROCESS, (id_t)gettid(), vw->nice);
    eng_params ep = eng_default_params();
    ep.n_ctx = 1;
    ep.n_batch = 1;
    ep.n_threads = vw->threads;
    int rc = eng_ctx_create(vw->m, &ep, &vw->c, vw->start_err, sizeof vw->start_err);
    pthread_mutex_lock(&vw->mu);
    vw->started = 1;
    vw->start_rc = rc;
    pthread_cond_broadcast(&vw->cv);
    while (rc == ENG_OK) {
        while (!vw->stop && !vw->head)
            pthread_cond_wait(&vw->cv, &vw->mu);
        if (vw->stop) break;
        struct vreq *vr = vw->head;
        vw->head = vr->next;
        if (!vw->head) vw->tail = NULL;
        if (!vr->abandoned) {
            pthread_mutex_unlock(&vw->mu);
            const struct job *j = vr->j;
            vr->rc = build_prompt(vw->cc, vw->c, vr->msgs, vr->n_msgs, j, vr->feed, &vr->prompt,
                                  &vr->client_error, vr->err, sizeof vr->err);
            pthread_mutex_lock(&vw->mu);
            vr->done = 1;
        }
        if (vr->abandoned) {
            pthread_mutex_unlock(&vw->mu);
            vreq_free(vr);
            pthread_mutex_lock(&vw->mu);
        } else if (vw->notify) {
            vw->notify(vw->notify_arg); /* under vw->mu: set_notify(NULL) waits for it */
        }
    }
    pthread_mutex_unlock(&vw->mu);
    return NULL;
}

static int vision_start(struct engb *e, const struct backend_options *o, char *err, size_t errlen)
{
    struct vision_worker *vw = &e->vw;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    vw->m = e->m;
    vw->cc = &e->cc;
    vw->threads = o->vision_threads > 0 ? o->vision_threads : cpus > 0 ? (int)cpus : 1;
    vw->nice = o->vision_nice;
    pthread_mutex_init(&vw->mu, NULL);
    pthread_cond_init(&vw->cv, NULL);
    if (pthread_create(&vw->thread, NULL, vision_main, vw) != 0) {
        snprintf(err, errlen, "cannot start the vision thread");
        return -1;
    }
    pthread_mutex_lock(&vw->mu);
    while (!vw->started)
        pthread_cond_wait(&vw->cv, &vw->mu);
    pthread_mutex_unlock(&vw->mu);
    vw->running = 1;
    if (vw->start_rc == ENG_OK) return 0;
    snprintf(err, errlen, "vision thread: %s", vw->start_err);
    return -1;
}

/* Every slot has abandoned its request by now: the queue's are freed, the one encoding
 * finishes first. */
static void vision_stop(struct vision_worker *vw)
{
    if (!vw->running) return;
    pthread_mutex_lock(&vw->mu);
    vw->stop = 1;
    pthread_cond_broadcast(&vw->cv);
    pthread_mutex_unlock(&vw->mu);
    pthread_join(vw->thread, NULL);
    for (struct vreq *vr = vw->head, *next; vr; vr = next) {
        next = vr->next;
        vreq_free(vr);
    }
    eng_ctx_destroy(vw->c);
    pthread_cond_destroy(&vw->cv);
    pthread_mutex_destroy(&vw->mu);
    vw->running = 0;
}

static void eb_set_notify(struct backend *b, void (*fn)(void *), void *arg)
{
    struct vision_worker *vw = &((struct engb *)b)->vw;
    if (!vw->running) return;
    pthread_mutex_lock(&vw->mu);
    vw->notify = fn;
    vw->notify_arg = arg;
    pthread_mutex_unlock(&vw->mu);
}

static int eb_prefill(struct backend *b, int slot, int budget, char *err, size_t errlen)
{
    (void)err, (void)errlen;
    struct eslot *p = &((struct engb *)b)->slots[slot];
    int left = p->prompt.n - p->pos;
    p->queued = budget < left ? budget : left;
    return left - p->queued;
}

static int eb_decode(struct backend *b, int n, const int *slots, struct backend_token *out,
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
        /* The answer's budget: the tokens max_tokens leaves, and the positions the slot has
         * (a token sampled with the context full is not kept). */
        if (p->gs) {
            int left = p->max_tokens - p->n_gen, room = e->n_ctx - p->pos;
            grammar_state_set_budget(p->gs, left < room ? left : room);
        }
        int32_t id = logits ? sampler_sample(p->s, logits) : e->cc.pc.eos;
        bool stop = chat_is_stop(&e->cc, id);
        if (stop || p->pos >= e->n_ctx) {
            size_t len;
            const char *tail = tok_stream_flush(p->ts, &len);
            if (len >= sizeof o->text) len = sizeof o->text - 1;
            memcpy(o->text, tail, len);
            o->len = len;
            /* "length" when a limit ended it: the context, or the budget closing the value */
            bool cut = !stop || (p->gs && grammar_state_cut_short(p->gs));
            o->eos = cut ? BACKEND_EOS_LENGTH : 1;
            continue;
        }
        p->n_gen++;
        size_t len;
        const char *piece = tok_stream_push(p->ts, id, &len);
        if (len >= sizeof o->text) len = sizeof o->text - 1;
        memcpy(o->text, piece, len);
        if (p->n_gen >= p->max_tokens) {
            /* the scheduler ends the answer at max_tokens: the bytes the detokenizer holds
             * (an unfinished UTF-8 sequence) go out now, as tern run prints them */
            size_t tl;
            const char *tail = tok_stream_flush(p->ts, &tl);
            if (tl > sizeof o->text - 1 - len) tl = sizeof o->text - 1 - len;
            memcpy(o->text + len, tail, tl);
            len += tl;
        }
        o->text[len] = 0;
        o->len = len;
        p->next = id;
        chat_history_put(&p->h, p->pos, id);
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
                                    .tokens = p->prompt.ids + p->pos,
                                    .embd = (const float *const *)p->prompt.rows + p->pos,
                                    .pos = p->pos,
                                    .want_logits = p->pos + p->queued == p->prompt.n};
    }
    if (ni && eng_step(e->c, e->items, ni, err, errlen) != ENG_OK) {
        for (int i = 0; i < e->nslots; i++)
            e->slots[i].queued = 0;
        return -1;
    }
    for (int i = 0; i < ni; i++) {
        struct eslot *p = &e->slots[e->items[i].slot];
        p->pos += e->items[i].n_tokens;
        p->h.n = p->pos;
        p->queued = 0;
    }
    return 0;
}

static void eb_release(struct backend *b, int slot)
{
    struct engb *e = (struct engb *)b;
    if (e->prefix_cache)
        slot_end_job(e, &e->slots[slot]);
    else
        slot_clear(e, slot);
}

static int eb_count(struct backend *b, const char *text)
{
    return tok_encode(((struct engb *)b)->t, text, strlen(text), NULL, 0);
}

static void eb_info(struct backend *b, struct backend_info *out)
{
    struct engb *e = (struct engb *)b;
    *out = (struct backend_info){e->name,   e->in->arch_name,  e->quant, e->size,
                                 e->params, e->in->has_vision, e->n_ctx};
}

static void eb_destroy(struct backend *b)
{
    struct engb *e = (struct engb *)b;
    for (int i = 0; e->slots && i < e->nslots; i++)
        slot_end_job(e, &e->slots[i]);
    vision_stop(&e->vw); /* after every slot let go of its encode; it reads cc and the cache */
    for (int i = 0; e->slots && i < e->nslots; i++)
        chat_history_free(&e->slots[i].h);
    free(e->slots);
    embcache_destroy(e->cache);
    grammar_vocab_destroy(e->gv);
    free(e->items);
    tok_free(e->t);
    eng_ctx_destroy(e->c);
    eng_model_free(e->m);
    free(e);
}

static const struct backend_ops eb_ops = {
    .admit = eb_admit,
    .prefill = eb_prefill,
    .decode = eb_decode,
    .release = eb_release,
    .count_tokens = eb_count,
    .info = eb_info,
    .destroy = eb_destroy,
    .admit_poll = eb_admit_poll,
    .set_notify = eb_set_notify,
    .pick_slot = eb_pick_slot,
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
    e->base.ops = &eb_ops;
    const char *mmproj = o->mmproj_path && *o->mmproj_path ? o->mmproj_path : NULL;
    if (eng_model_load(o->model_path, mmproj, &e->m, err, errlen) != ENG_OK) goto fail;
    e->in = eng_model_get_info(e->m);
    if (tok_load(eng_model_text_file(e->m), &e->t, err, errlen) != 0) goto fail;
    eng_params p = eng_default_params();
    p.n_slots = o->slots;
    p.n_ctx = o->ctx_size;
    p.n_batch = o->prefill_chunk + o->slots;
    p.n_threads = o->threads;
    p.text_only = true; /* images encode in the vision thread's context */
    if (eng_ctx_create(e->m, &p, &e->c, err, errlen) != ENG_OK) goto fail;
    e->nslots = o->slots;
    e->n_ctx = eng_ctx_params(e->c)->n_ctx;
    e->n_batch = eng_ctx_params(e->c)->n_batch;
    if (chat_init(&e->cc, e->m, e->t, err, errlen) != 0) goto fail;
    e->slots = calloc((size_t)o->slots, sizeof *e->slots);
    e->items = calloc((size_t)o->slots * 2, sizeof *e->items);
    uint64_t seed;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != sizeof seed)
        seed = (uint64_t)(job_now() * 1e9);
    e->cache = embcache_create(o->image_cache_bytes > 0 ? (size_t)o->image_cache_bytes : 0, seed);
    e->cc.cache = e->cache;
    e->prefix_cache = o->prefix_cache;
    int32_t stops[2] = {e->cc.pc.end_of_utterance, e->cc.pc.eos}; /* chat_is_stop's */
    e->gv = grammar_vocab_create(e->t, stops, 2);
    e->decoder = o->decoder;
    int ok = e->slots && e->items && e->cache && e->gv;
    for (int i = 0; ok && i < o->slots; i++)
        ok = chat_history_init(&e->slots[i].h, e->n_ctx) == 0;
    if (!ok) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (e->in->has_vision && vision_start(e, o, err, errlen) != 0) goto fail;
    snprintf(e->name, sizeof e->name, "%s", o->model_name);
    describe(e);
    return &e->base;
fail:
    eb_destroy(&e->base);
    return NULL;
}
