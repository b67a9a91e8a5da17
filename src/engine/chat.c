/* The one image -> embeddings -> prompt path (chat.h). */
#include "engine/chat.h"

#include <assert.h>
#include <stdlib.h>
#include <time.h>

#include "engine/errmsg.h"

int chat_init(chat_ctx *c, const eng_model *m, const tok *t, char *err, size_t errlen)
{
    *c = (chat_ctx){.m = m, .info = eng_model_get_info(m), .t = t};
    if (prompt_init(&c->pc, t, c->info->has_vision ? c->info->n_image_tokens : 0, err, errlen) != 0)
        return -1;
    if (c->info->has_vision) {
        if (img_proc_cfg_from_gguf(eng_model_vision_file(m), &c->icfg, err, errlen) != 0) return -1;
        c->icfg.split = c->icfg.longest_edge > c->icfg.tile;
    }
    return 0;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Preprocesses and encodes every picture into one buffer of rows; grid[i] gets picture i's
 * crop rows and columns, as prompt_build needs them. */
static int encode_images(const chat_ctx *c, eng_ctx *ctx, const img_rgb *images, int n_images,
                         int (*grid)[2], chat_prompt *out, char *err, size_t errlen)
{
    const size_t row = (size_t)c->info->n_embd;
    size_t n_rows = 0;
    for (int i = 0; i < n_images; i++) {
        img_tiles tiles;
        if (img_preprocess(&images[i], &c->icfg, &tiles, err, errlen) != 0) return -1;
        size_t add = (size_t)tiles.n * c->info->n_image_tokens;
        float *grown = realloc(out->embd, (n_rows + add) * row * sizeof *grown);
        if (!grown) {
            img_tiles_free(&tiles);
            return eng_seterr(err, errlen, "out of memory");
        }
        out->embd = grown;
        int rc =
            eng_vision_encode(ctx, tiles.pixels, tiles.n, out->embd + n_rows * row, err, errlen);
        grid[i][0] = tiles.rows;
        grid[i][1] = tiles.cols;
        img_tiles_free(&tiles);
        if (rc != ENG_OK) return -1;
        n_rows += add;
    }
    out->n_image_tokens = (int)n_rows;
    return 0;
}

/* The template's parts: per message its pictures, then its text. */
static int build_ids(const chat_ctx *c, const chat_msg *msgs, int n_msgs, int n_images,
                     const int (*grid)[2], chat_prompt *out, char *err, size_t errlen)
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
    rc = prompt_build(&c->pc, pm, n_msgs, true, &out->ids, &out->n, err, errlen);
out:
    free(pm);
    free(parts);
    return rc;
}

/* Image rows go, in order, to the <image> ids: prompt_build lays out exactly n_image_tokens
 * of them, in img_tiles' order, picture after picture. */
static int place_rows(const chat_ctx *c, chat_prompt *out, char *err, size_t errlen)
{
    out->rows = calloc((size_t)out->n, sizeof *out->rows);
    if (!out->rows) return eng_seterr(err, errlen, "out of memory");
    int k = 0;
    for (int i = 0; i < out->n; i++)
        if (out->ids[i] == c->pc.image && k < out->n_image_tokens)
            out->rows[i] = out->embd + (size_t)(k++) * c->info->n_embd;
    if (k != out->n_image_tokens)
        return eng_seterr(err, errlen, "the prompt holds %d image tokens for %d image rows", k,
                          out->n_image_tokens);
    return 0;
}

int chat_prompt_build(const chat_ctx *c, eng_ctx *ctx, const chat_msg *msgs, int n_msgs,
                      const img_rgb *images, int n_images, chat_prompt *out, char *err,
                      size_t errlen)
{
    *out = (chat_prompt){0};
    if (n_images > 0 && !c->info->has_vision)
        return eng_seterr(err, errlen,
                          "this model has no vision projector (mmproj); send text only");
    int(*grid)[2] = calloc((size_t)n_images + 1, sizeof *grid);
    if (!grid) return eng_seterr(err, errlen, "out of memory");
    double t0 = now_ms();
    int rc = encode_images(c, ctx, images, n_images, grid, out, err, errlen);
    out->vision_ms = n_images ? now_ms() - t0 : 0;
    if (rc == 0) rc = build_ids(c, msgs, n_msgs, n_images, (const int(*)[2])grid, out, err, errlen);
    if (rc == 0) rc = place_rows(c, out, err, errlen);
    free(grid);
    if (rc != 0) chat_prompt_free(out);
    return rc;
}

void chat_prompt_free(chat_prompt *p)
{
    free(p->ids);
    free(p->rows);
    free(p->embd);
    *p = (chat_prompt){0};
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
