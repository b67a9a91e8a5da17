/* The echo backend: a TEST DOUBLE, not a model. It "generates" the last user message back,
 * one word (or 16-byte piece of a long word) per step, after one "[image WxH]" token per
 * image, then ends. It sleeps echo_delay_ms per batched step so tests can hold slots busy.
 * A prompt containing "__fail__" makes decode fail (to exercise the engine-error path).
 * With echo_vision_ms, a request with images is admitted that long later, as the engine's
 * vision thread would (admit returns 1, admit_poll 0 once the time has passed).
 * It exists so the scheduler, streaming, cancellation and every API can be tested end to end
 * without a model file. */
#include "backend.h"
#include "upload.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PIECE 16

struct echo_slot {
    char *pieces; /* concatenated pieces, each NUL-terminated */
    int n, next;  /* pieces, next to emit */
    size_t pos;   /* byte offset of the next piece */
    int prefill_left;
    int fail;
    double t0, ready_at; /* admission began; it finishes at ready_at (echo_vision_ms) */
    struct backend_admit admitted;
    struct job *job;          /* while its pictures are read (a reference) */
    struct upload_feed *feed; /* its pictures, decoded off the engine thread */
    int n_pics;               /* pictures read so far */
    size_t o;                 /* bytes of pieces written so far */
};

struct echo {
    struct backend base;
    int delay_ms, nslots, ctx, vision_ms;
    struct echo_slot *slots;
    struct upload_decoder *decoder;
    void (*notify)(void *);
    void *notify_arg;
    char name[128];
};

/* Split text into pieces; each but the first word's gets a leading space. Returns count, and
 * if out != NULL writes the pieces there (caller sizes it 2*len+n+16). */
static int split(const char *s, char *out)
{
    int n = 0, first = 1;
    size_t o = 0;
    while (*s) {
        while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
            s++;
        if (!*s) break;
        const char *w = s;
        while (*s && *s != ' ' && *s != '\t' && *s != '\n' && *s != '\r')
            s++;
        size_t wl = (size_t)(s - w), p = 0;
        while (p < wl) {
            size_t take = wl - p > PIECE ? PIECE : wl - p;
            while (p + take < wl && take > 1 && ((unsigned char)w[p + take] & 0xC0) == 0x80)
                take--;
            if (out) {
                if (first && p == 0)
                    first = 0;
                else if (p == 0)
                    out[o++] = ' ';
                memcpy(out + o, w + p, take);
                o += take;
                out[o++] = 0;
            }
            first = 0;
            p += take;
            n++;
        }
    }
    return n;
}

static const char *last_user_text(const struct job *j)
{
    for (int i = j->n_msgs - 1; i >= 0; i--)
        if (j->msgs[i].role == ROLE_USER) return j->msgs[i].text;
    return j->n_msgs ? j->msgs[j->n_msgs - 1].text : "";
}

/* The pieces after the pictures': the last user message's words. */
static void finish_admit(struct echo_slot *s, const struct job *j, struct backend_admit *out)
{
    const char *text = last_user_text(j);
    if (j->n_images && split(text, NULL) > 0) s->pieces[s->o++] = ' ';
    s->n += split(text, s->pieces + s->o);
    s->next = 0;
    s->pos = 0;
    s->fail = strstr(text, "__fail__") != NULL;
    out->vision_ms = -1;
}

static int echo_admit(struct backend *b, int slot, struct job *j, struct backend_admit *out,
                      int *client_error, char *err, size_t errlen)
{
    struct echo *e = (struct echo *)b;
    struct echo_slot *s = &e->slots[slot];
    double t0 = job_now();
    const char *text = last_user_text(j);
    size_t len = strlen(text);
    int total = 0;
    for (int i = 0; i < j->n_msgs; i++)
        total += split(j->msgs[i].text, NULL);
    total += 64 * j->n_images;
    if (total + 1 > e->ctx) {
        *client_error = 1;
        snprintf(err, errlen, "prompt is %d tokens; the context holds %d", total, e->ctx);
        return -1;
    }
    s->pieces = malloc(2 * len + (size_t)JOB_MAX_IMAGES * 32 + 16);
    if (!s->pieces) {
        *client_error = 0;
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    s->t0 = t0;
    s->o = 0;
    s->n = s->n_pics = 0;
    s->prefill_left = total;
    out->prompt_tokens = total;
    out->image_tokens = 64 * j->n_images;
    if (j->n_images == 0) {
        finish_admit(s, j, out);
        return 0;
    }
    /* Pictures are decoded after admission, off the engine thread, as the engine's are: a
     * picture that does not decode is the job's 422 (admit_poll). */
    s->feed = upload_feed_start(e->decoder, j, 0, e->notify, e->notify_arg);
    if (!s->feed) {
        free(s->pieces);
        s->pieces = NULL;
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    job_ref(j);
    s->job = j;
    s->admitted = *out;
    return 1;
}

static int echo_admit_poll(struct backend *b, int slot, struct backend_admit *out,
                           int *client_error, char *err, size_t errlen)
{
    struct echo *e = (struct echo *)b;
    struct echo_slot *s = &e->slots[slot];
    struct job *j = s->job;
    while (s->feed && s->n_pics < j->n_images) {
        img_rgb im;
        int rc = upload_feed_get(s->feed, s->n_pics, 0, &im, err, errlen);
        if (rc > 0) return 1;
        if (rc < 0) {
            *client_error = 1;
            return -1; /* release frees the rest */
        }
        s->o += (size_t)sprintf(s->pieces + s->o, "[image %dx%d]", im.w, im.h) + 1;
        s->n++;
        s->n_pics++;
        upload_feed_put(s->feed, &im);
    }
    if (s->feed) {
        upload_feed_end(s->feed);
        s->feed = NULL;
        finish_admit(s, j, &s->admitted);
        s->admitted.vision_ms = (job_now() - s->t0) * 1e3;
        if (e->vision_ms > 0) {
            s->ready_at = s->t0 + e->vision_ms / 1e3;
            s->admitted.vision_ms = e->vision_ms;
        }
        job_unref(j);
        s->job = NULL;
    }
    if (job_now() < s->ready_at) return 1;
    *out = s->admitted;
    return 0;
}

static int echo_prefill(struct backend *b, int slot, int budget, char *err, size_t errlen)
{
    (void)err, (void)errlen;
    struct echo_slot *s = &((struct echo *)b)->slots[slot];
    s->prefill_left -= budget < s->prefill_left ? budget : s->prefill_left;
    return s->prefill_left;
}

static int echo_decode(struct backend *b, int n, const int *slots, struct backend_token *out,
                       char *err, size_t errlen)
{
    struct echo *e = (struct echo *)b;
    if (e->delay_ms > 0) {
        struct timespec ts = {e->delay_ms / 1000, (long)(e->delay_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    for (int i = 0; i < n; i++) {
        struct echo_slot *s = &e->slots[slots[i]];
        if (s->fail) {
            snprintf(err, errlen, "echo engine: failure requested by the prompt");
            return -1;
        }
        if (s->next >= s->n) {
            out[i].len = 0, out[i].text[0] = 0, out[i].eos = 1;
            continue;
        }
        const char *p = s->pieces + s->pos;
        size_t l = strlen(p);
        memcpy(out[i].text, p, l + 1);
        out[i].len = l;
        out[i].eos = 0;
        s->pos += l + 1;
        s->next++;
    }
    return 0;
}

static void echo_release(struct backend *b, int slot)
{
    struct echo_slot *s = &((struct echo *)b)->slots[slot];
    upload_feed_end(s->feed);
    if (s->job) job_unref(s->job);
    free(s->pieces);
    memset(s, 0, sizeof *s);
}

static int echo_count(struct backend *b, const char *text)
{
    (void)b;
    return split(text, NULL);
}

static void echo_info(struct backend *b, struct backend_info *out)
{
    struct echo *e = (struct echo *)b;
    *out = (struct backend_info){e->name, "echo", "none", 0, 0, 1, e->ctx};
}

static void echo_destroy(struct backend *b)
{
    struct echo *e = (struct echo *)b;
    for (int i = 0; i < e->nslots; i++)
        echo_release(b, i);
    free(e->slots);
    free(e);
}

static void echo_set_notify(struct backend *b, void (*fn)(void *), void *arg)
{
    struct echo *e = (struct echo *)b;
    e->notify = fn;
    e->notify_arg = arg;
}

static const struct backend_ops echo_ops = {
    .admit = echo_admit,
    .prefill = echo_prefill,
    .decode = echo_decode,
    .release = echo_release,
    .count_tokens = echo_count,
    .info = echo_info,
    .destroy = echo_destroy,
    .admit_poll = echo_admit_poll,
    .set_notify = echo_set_notify,
};

struct backend *backend_echo_create(const struct backend_options *o, char *err, size_t errlen)
{
    struct echo *e = calloc(1, sizeof *e);
    if (e) e->slots = calloc((size_t)o->slots, sizeof *e->slots);
    if (!e || !e->slots) {
        free(e);
        snprintf(err, errlen, "echo engine: out of memory");
        return NULL;
    }
    e->base.ops = &echo_ops;
    e->delay_ms = o->echo_delay_ms;
    e->vision_ms = o->echo_vision_ms;
    e->decoder = o->decoder;
    e->nslots = o->slots;
    e->ctx = o->ctx_size;
    snprintf(e->name, sizeof e->name, "%s",
             o->model_name && *o->model_name ? o->model_name : "echo");
    return &e->base;
}
