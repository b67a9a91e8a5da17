/* The one image -> embeddings -> prompt path (chat.h). */
#include "engine/chat.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/errmsg.h"

/* The vision file's identity for picture keys: its size and every tensor's name, shape and
 * first bytes (two checkpoints of one shape differ there), without reading all the weights. */
static embcache_key model_key(const gguf_file *f)
{
    embcache_hasher h;
    embcache_hash_init(&h, 0);
    uint64_t size = gguf_file_size(f);
    embcache_hash_add(&h, &size, sizeof size);
    for (int i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        embcache_hash_add(&h, t->name, strlen(t->name));
        embcache_hash_add(&h, t->ne, sizeof t->ne);
        embcache_hash_add(&h, t->data, t->nbytes < 64 ? t->nbytes : 64);
    }
    return embcache_hash_final(&h);
}

int chat_init(chat_ctx *c, const eng_model *m, const tok *t, char *err, size_t errlen)
{
    *c = (chat_ctx){.m = m, .info = eng_model_get_info(m), .t = t};
    if (prompt_init(&c->pc, t, c->info->arch, c->info->has_vision ? c->info->n_image_tokens : 0,
                    err, errlen) != 0)
        return -1;
    if (c->info->has_vision) {
        if (img_proc_cfg_from_gguf(eng_model_vision_file(m), &c->icfg, err, errlen) != 0) return -1;
        c->icfg.split = c->icfg.longest_edge > c->icfg.tile;
        c->model_key = model_key(eng_model_vision_file(m));
    }
    return 0;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int chat_image_min_edge(const chat_ctx *c)
{
    return c->info->has_vision ? c->icfg.longest_edge : 0;
}

embcache_key chat_image_key(const chat_ctx *c, const img_rgb *im)
{
    const img_proc_cfg *g = &c->icfg;
    const int32_t dims[7] = {g->longest_edge,    g->tile, g->split, g->squash,
                             (int32_t)g->filter, im->w,   im->h};
    embcache_hasher h;
    embcache_hash_init(&h, embcache_seed(c->cache));
    embcache_hash_add(&h, &c->model_key, sizeof c->model_key);
    embcache_hash_add(&h, dims, sizeof dims);
    embcache_hash_add(&h, &g->rescale, sizeof g->rescale);
    embcache_hash_add(&h, g->mean, sizeof g->mean);
    embcache_hash_add(&h, g->std, sizeof g->std);
    embcache_hash_add(&h, im->rgb, (size_t)im->w * im->h * 3);
    return embcache_hash_final(&h);
}

/* Preprocesses and encodes one picture, appending its rows to out->embd; grid gets its crop
 * rows and columns. */
static int encode_image(const chat_ctx *c, eng_ctx *ctx, const img_rgb *im, int grid[2],
                        chat_prompt *out, size_t *n_floats, char *err, size_t errlen)
{
    const size_t row = (size_t)c->info->n_embd;
    img_tiles tiles;
    if (img_preprocess(im, &c->icfg, &tiles, err, errlen) != 0) return -1;
    size_t add = (size_t)tiles.n * c->info->n_image_tokens * row;
    float *grown = realloc(out->embd, (*n_floats + add) * sizeof *grown);
    if (!grown) {
        img_tiles_free(&tiles);
        return eng_seterr(err, errlen, "out of memory");
    }
    out->embd = grown;
    int rc = eng_vision_encode(ctx, tiles.pixels, tiles.n, out->embd + *n_floats, err, errlen);
    grid[0] = tiles.rows;
    grid[1] = tiles.cols;
    img_tiles_free(&tiles);
    if (rc != ENG_OK) return -1;
    *n_floats += add;
    return 0;
}

/* Every picture's rows into one buffer, from the cache or the encoder; grid[i] gets picture
 * i's crop rows and columns, as prompt_build needs them. Each picture is taken from src just
 * before its key and encode and given back right after, so only one is held at a time. */
static int encode_images(const chat_ctx *c, eng_ctx *ctx, const chat_image_source *src,
                         int n_images, int (*grid)[2], chat_prompt *out, char *err, size_t errlen)
{
    const size_t row = (size_t)c->info->n_embd;
    size_t n_floats = 0;
    out->images = calloc((size_t)n_images + 1, sizeof *out->images);
    if (!out->images) return eng_seterr(err, errlen, "out of memory");
    for (int i = 0; i < n_images; i++) {
        chat_image *ci = &out->images[i];
        img_rgb pic;
        if (src->get(src->arg, i, &pic, err, errlen) != 0) return -1;
        ci->key = chat_image_key(c, &pic);
        ci->first = (int)(n_floats / row);
        int hit = embcache_get(c->cache, &ci->key, &out->embd, &n_floats, grid[i]);
        int rc = hit < 0 ? eng_seterr(err, errlen, "out of memory") : 0;
        if (rc == 0 && !hit) rc = encode_image(c, ctx, &pic, grid[i], out, &n_floats, err, errlen);
        src->put(src->arg, i, &pic);
        if (rc != 0) return -1;
        if (!hit) /* a full cache only costs the next request an encode: a failed put is no error */
            (void)embcache_put(c->cache, &ci->key, out->embd + ci->first * row,
                               n_floats - ci->first * row, grid[i]);
        ci->n_rows = (int)(n_floats / row) - ci->first;
        out->image_hits += hit;
        out->n_images++;
    }
    out->n_image_tokens = (int)(n_floats / row);
    return 0;
}

/* The template's parts: per message its pictures, then its text. */
static int build_ids(const chat_ctx *c, const chat_msg *msgs, int n_msgs, int n_images,
                     const int (*grid)[2], chat_prompt *out, bool **image_pos, char *err,
                     size_t errlen)
{
    prompt_msg *pm = calloc((size_t)n_msgs, sizeof *pm);
    prompt_part *parts = calloc((size_t)(n_msgs + n_images), sizeof *parts);
    int rc = -1, np = 0, img = 0;
    if (!pm || !parts) {
        eng_seterr(err, errlen, "out of memory");
        goto out;
    }
    for (int m = 0; m < n_msgs; m++) {
        pm[m].role = msgs[m].role;
        pm[m].parts = parts + np;
        for (int k = 0; k < msgs[m].n_images; k++, img++) {
            if (img == n_images) {
                eng_seterr(err, errlen, "the messages name more images than the request holds");
                goto out;
            }
            parts[np++] = (prompt_part){.image = true, .rows = grid[img][0], .cols = grid[img][1]};
        }
        parts[np++] = (prompt_part){.text = msgs[m].text ? msgs[m].text : ""};
        pm[m].n_parts = (int)(parts + np - pm[m].parts);
    }
    if (img != n_images) {
        eng_seterr(err, errlen, "%d of the request's images belong to no message", n_images - img);
        goto out;
    }
    rc = prompt_build(&c->pc, pm, n_msgs, true, &out->ids, image_pos, &out->n, err, errlen);
out:
    free(pm);
    free(parts);
    return rc;
}

/* Image rows go, in order, to the image positions: prompt_build lays out exactly
 * n_image_tokens of them, in img_tiles' order, picture after picture. */
static int place_rows(const chat_ctx *c, chat_prompt *out, const bool *image_pos, char *err,
                      size_t errlen)
{
    out->rows = calloc((size_t)out->n, sizeof *out->rows);
    if (!out->rows) return eng_seterr(err, errlen, "out of memory");
    int k = 0;
    for (int i = 0; i < out->n; i++)
        if (image_pos[i] && k < out->n_image_tokens)
            out->rows[i] = out->embd + (size_t)(k++) * c->info->n_embd;
    if (k != out->n_image_tokens)
        return eng_seterr(err, errlen, "the prompt holds %d image tokens for %d image rows", k,
                          out->n_image_tokens);
    return 0;
}

int chat_prompt_build_from(const chat_ctx *c, eng_ctx *ctx, const chat_msg *msgs, int n_msgs,
                           const chat_image_source *src, int n_images, chat_prompt *out, char *err,
                           size_t errlen)
{
    *out = (chat_prompt){0};
    if (n_images > 0 && !c->info->has_vision)
        return eng_seterr(err, errlen,
                          "this model has no vision projector (mmproj); send text only");
    int(*grid)[2] = calloc((size_t)n_images + 1, sizeof *grid);
    if (!grid) return eng_seterr(err, errlen, "out of memory");
    double t0 = now_ms();
    int rc = encode_images(c, ctx, src, n_images, grid, out, err, errlen);
    out->vision_ms = n_images > out->image_hits ? now_ms() - t0 : 0;
    bool *image_pos = NULL;
    if (rc == 0)
        rc = build_ids(c, msgs, n_msgs, n_images, (const int(*)[2])grid, out, &image_pos, err,
                       errlen);
    if (rc == 0) rc = place_rows(c, out, image_pos, err, errlen);
    free(image_pos);
    free(grid);
    if (rc != 0) chat_prompt_free(out);
    return rc;
}

/* The caller's decoded pictures, lent without copying. */
static int array_get(void *arg, int i, img_rgb *out, char *err, size_t errlen)
{
    (void)err, (void)errlen;
    *out = ((const img_rgb *)arg)[i];
    return 0;
}

static void array_put(void *arg, int i, img_rgb *im)
{
    (void)arg, (void)i, (void)im;
}

int chat_prompt_build(const chat_ctx *c, eng_ctx *ctx, const chat_msg *msgs, int n_msgs,
                      const img_rgb *images, int n_images, chat_prompt *out, char *err,
                      size_t errlen)
{
    chat_image_source src = {array_get, array_put, (void *)images};
    return chat_prompt_build_from(c, ctx, msgs, n_msgs, &src, n_images, out, err, errlen);
}

void chat_prompt_free(chat_prompt *p)
{
    free(p->ids);
    free(p->rows);
    free(p->embd);
    free(p->images);
    *p = (chat_prompt){0};
}

int chat_history_init(chat_history *h, int cap)
{
    *h = (chat_history){.cap = cap};
    h->ids = calloc((size_t)cap + 1, sizeof *h->ids);
    h->row = calloc((size_t)cap + 1, sizeof *h->row);
    if (h->ids && h->row) return 0;
    chat_history_free(h);
    return -1;
}

void chat_history_free(chat_history *h)
{
    free(h->ids);
    free(h->row);
    free(h->images);
    *h = (chat_history){0};
}

/* The picture that row r belongs to, or NULL. */
static const chat_image *image_of(const chat_image *im, int n, int r)
{
    for (int i = 0; i < n; i++)
        if (r >= im[i].first && r < im[i].first + im[i].n_rows) return &im[i];
    return NULL;
}

/* The index of the image row at p's position i, or -1 for a token. */
static int row_at(const chat_ctx *c, const chat_prompt *p, int i)
{
    return p->rows[i] ? (int)((p->rows[i] - p->embd) / c->info->n_embd) : -1;
}

int chat_history_common(const chat_ctx *c, const chat_history *h, const chat_prompt *p)
{
    int lim = h->n < p->n ? h->n : p->n, i = 0;
    for (; i < lim && h->ids[i] == p->ids[i]; i++) {
        int pr = row_at(c, p, i), hr = h->row[i];
        if ((pr < 0) != (hr < 0)) break;
        if (pr < 0) continue;
        const chat_image *pi = image_of(p->images, p->n_images, pr);
        const chat_image *hi = image_of(h->images, h->n_images, hr);
        if (!pi || !hi || !embcache_key_eq(&pi->key, &hi->key) || pr - pi->first != hr - hi->first)
            break;
    }
    return i;
}

int chat_history_set(const chat_ctx *c, chat_history *h, const chat_prompt *p, int keep)
{
    chat_image *im = NULL;
    if (p->n_images) {
        im = malloc((size_t)p->n_images * sizeof *im);
        if (!im) {
            h->n = 0;
            return -1;
        }
        memcpy(im, p->images, (size_t)p->n_images * sizeof *im);
    }
    free(h->images);
    h->images = im;
    h->n_images = p->n_images;
    int n = p->n < h->cap ? p->n : h->cap;
    memcpy(h->ids, p->ids, (size_t)n * sizeof *h->ids);
    for (int i = 0; i < n; i++)
        h->row[i] = row_at(c, p, i);
    h->n = keep < n ? keep : n;
    return 0;
}

int chat_prefill(eng_ctx *ctx, int slot, const chat_prompt *p, int from, char *err, size_t errlen)
{
    assert(from >= 0 && from < p->n);
    const int n_batch = eng_ctx_params(ctx)->n_batch;
    for (int pos = from; pos < p->n; pos += n_batch) {
        int n = p->n - pos < n_batch ? p->n - pos : n_batch;
        eng_item it = {.slot = slot,
                       .n_tokens = n,
                       .tokens = p->ids + pos,
                       .embd = (const float *const *)p->rows + pos,
                       .pos = pos,
                       .want_logits = pos + n == p->n};
        if (eng_step(ctx, &it, 1, err, errlen) != ENG_OK) return -1;
    }
    return 0;
}

sampler *chat_sampler_create(const chat_ctx *c, const chat_prompt *p, const sampler_params *sp)
{
    sampler *s = sampler_create(c->info->n_vocab, sp);
    for (int i = 0; s && i < p->n; i++)
        sampler_accept(s, p->ids[i]);
    return s;
}

bool chat_is_stop(const chat_ctx *c, int32_t id)
{
    return prompt_is_stop(&c->pc, id);
}
