/* SmolVLM prompt building: see prompt.h. */
#include "engine/prompt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/errmsg.h"

/* A family's prompt, as data: what prompt_build puts around each message. */
struct prompt_format {
    eng_arch arch;
    const char *begin;       /* special token first; NULL: the vocabulary's BOS */
    const char *role[3];     /* per prompt_role: the name before ": "; NULL: none */
    bool images_first;       /* pictures lead the message, before its role name */
    bool tiled;              /* Idefics3 image blocks (the specials around <image> runs) */
    const char *after_image; /* text after a picture's rows */
    const char *turn_end;    /* special token that ends a message (and an answer); NULL: EOS */
    const char *turn_sep;    /* text after a message */
};

static const prompt_format formats[] = {
    {.arch = ENG_ARCH_LLAMA,
     .begin = "<|im_start|>",
     .role = {"System", "User", "Assistant"},
     .tiled = true,
     .after_image = "",
     .turn_end = "<end_of_utterance>",
     .turn_sep = "\n"},
    {.arch = ENG_ARCH_PHI2,
     .role = {NULL, "Question", "Answer"},
     .images_first = true,
     .after_image = "\n\n",
     .turn_sep = "\n\n"},
};

static int need(const tok *t, const char *name, int *id, char *err, size_t errlen)
{
    *id = tok_special(t, name);
    if (*id < 0) {
        eng_seterr(err, errlen, "the tokenizer has no %s token", name);
        return -1;
    }
    return 0;
}

/* The id image positions carry where the vocabulary has no <image>. */
static int stand_in(const tok *t)
{
    int bos = tok_bos(t), eos = tok_eos(t);
    for (int id = tok_n_vocab(t) - 1; id >= 0; id--)
        if (id != bos && id != eos) return id;
    return 0;
}

int prompt_init(prompt_ctx *p, const tok *t, eng_arch arch, int image_seq_len, char *err,
                size_t errlen)
{
    memset(p, 0, sizeof *p);
    p->t = t;
    p->image_seq_len = image_seq_len;
    p->im_start = p->fake_around = p->global_img = -1;
    for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++)
        if (formats[i].arch == arch) p->fmt = &formats[i];
    if (!p->fmt) return eng_seterr(err, errlen, "no prompt format for this architecture");
    const prompt_format *f = p->fmt;
    p->eos = tok_eos(t);
    for (int r = 0; r < PROMPT_MAX_GRID; r++)
        for (int c = 0; c < PROMPT_MAX_GRID; c++)
            p->row_col[r][c] = -1;
    if (f->begin ? need(t, f->begin, &p->begin, err, errlen) != 0 : (p->begin = tok_bos(t)) < 0)
        return f->begin ? -1 : eng_seterr(err, errlen, "the tokenizer names no BOS token");
    if (f->turn_end ? need(t, f->turn_end, &p->end_of_utterance, err, errlen) != 0
                    : (p->end_of_utterance = p->eos) < 0)
        return f->turn_end ? -1 : eng_seterr(err, errlen, "the tokenizer names no EOS token");
    if (!f->tiled) {
        p->image = tok_special(t, "<image>");
        if (p->image < 0) p->image = stand_in(t);
        return 0;
    }
    p->im_start = p->begin;
    if (need(t, "<image>", &p->image, err, errlen) ||
        need(t, "<fake_token_around_image>", &p->fake_around, err, errlen) ||
        need(t, "<global-img>", &p->global_img, err, errlen))
        return -1;
    for (int r = 0; r < PROMPT_MAX_GRID; r++)
        for (int c = 0; c < PROMPT_MAX_GRID; c++) {
            char name[32];
            snprintf(name, sizeof name, "<row_%d_col_%d>", r + 1, c + 1);
            p->row_col[r][c] = tok_special(t, name);
        }
    return 0;
}

bool prompt_is_stop(const prompt_ctx *p, int id)
{
    return id == p->end_of_utterance || (p->eos >= 0 && id == p->eos);
}

/* Output under construction: ids, plus pending plain text that becomes
 * tokens when the next special token (or the end) arrives, so text between
 * two special tokens is tokenized as one segment, as HF does. */
typedef struct {
    const prompt_ctx *p;
    int32_t *ids;
    bool *img; /* per id: an image row's position */
    int n, cap;
    char *text;
    size_t tlen, tcap;
    bool oom;
} builder;

static void text(builder *b, const char *s)
{
    size_t n = strlen(s);
    if (b->tlen + n + 1 > b->tcap) {
        size_t c = b->tcap ? b->tcap : 256;
        while (c < b->tlen + n + 1)
            c *= 2;
        char *nt = realloc(b->text, c);
        if (!nt) {
            b->oom = true;
            return;
        }
        b->text = nt;
        b->tcap = c;
    }
    memcpy(b->text + b->tlen, s, n);
    b->tlen += n;
}

static bool grow(builder *b, int more)
{
    if (b->n + more <= b->cap) return true;
    int c = b->cap ? b->cap : 256;
    while (c < b->n + more)
        c *= 2;
    int32_t *ni = realloc(b->ids, (size_t)c * sizeof *ni);
    if (ni) b->ids = ni;
    bool *nm = ni ? realloc(b->img, (size_t)c * sizeof *nm) : NULL;
    if (!nm) {
        b->oom = true;
        return false;
    }
    b->img = nm;
    b->cap = c;
    return true;
}

static void flush(builder *b)
{
    if (b->tlen == 0 || b->oom) return;
    int need = tok_encode(b->p->t, b->text, b->tlen, NULL, 0);
    if (need < 0 || !grow(b, need)) {
        b->oom = true;
        return;
    }
    tok_encode(b->p->t, b->text, b->tlen, b->ids + b->n, need);
    memset(b->img + b->n, 0, (size_t)need * sizeof *b->img);
    b->n += need;
    b->tlen = 0;
}

static void special(builder *b, int id, int times)
{
    flush(b);
    if (!grow(b, times)) return;
    for (int i = 0; i < times; i++) {
        b->img[b->n] = false;
        b->ids[b->n++] = id;
    }
}

/* The positions of one tile's embedding rows. */
static void image_rows(builder *b)
{
    special(b, b->p->image, b->p->image_seq_len);
    if (!b->oom)
        for (int i = b->n - b->p->image_seq_len; i < b->n; i++)
            b->img[i] = true;
}

static int image_block(builder *b, int rows, int cols, char *err, size_t errlen)
{
    const prompt_ctx *p = b->p;
    if (rows < 0 || cols < 0 || (rows == 0) != (cols == 0) || rows > PROMPT_MAX_GRID ||
        cols > PROMPT_MAX_GRID) {
        eng_seterr(err, errlen, "image grid %dx%d is not supported (at most %dx%d)", rows, cols,
                   PROMPT_MAX_GRID, PROMPT_MAX_GRID);
        return -1;
    }
    for (int r = 0; r < rows; r++) {
        for (int c = 0; c < cols; c++) {
            if (p->row_col[r][c] < 0) {
                eng_seterr(err, errlen, "the tokenizer has no <row_%d_col_%d> token", r + 1, c + 1);
                return -1;
            }
            special(b, p->fake_around, 1);
            special(b, p->row_col[r][c], 1);
            image_rows(b);
        }
        text(b, "\n");
    }
    if (rows > 0) text(b, "\n");
    special(b, p->fake_around, 1);
    special(b, p->global_img, 1);
    image_rows(b);
    special(b, p->fake_around, 1);
    return 0;
}

/* A picture: the Idefics3 block, or (untiled formats: one tile) its rows alone. */
static int image(builder *b, const prompt_part *part, char *err, size_t errlen)
{
    if (b->p->fmt->tiled) return image_block(b, part->rows, part->cols, err, errlen);
    if (part->rows || part->cols) {
        eng_seterr(err, errlen, "this model's prompt takes one tile per image, not %dx%d crops",
                   part->rows, part->cols);
        return -1;
    }
    image_rows(b);
    text(b, b->p->fmt->after_image);
    return 0;
}

int prompt_build(const prompt_ctx *p, const prompt_msg *msgs, int n_msgs, bool add_generation,
                 int32_t **ids, bool **image_pos, int *n, char *err, size_t errlen)
{
    const prompt_format *f = p->fmt;
    builder b = {.p = p};
    *ids = NULL;
    if (image_pos) *image_pos = NULL;
    *n = 0;
    special(&b, p->begin, 1);
    for (int m = 0; m < n_msgs; m++) {
        const prompt_msg *msg = &msgs[m];
        if ((unsigned)msg->role > PROMPT_ASSISTANT) {
            eng_seterr(err, errlen, "message %d: unknown role", m);
            goto fail;
        }
        int i = 0;
        for (; f->images_first && i < msg->n_parts && msg->parts[i].image; i++)
            if (image(&b, &msg->parts[i], err, errlen) != 0) goto fail;
        const char *role = f->role[msg->role];
        if (role) {
            text(&b, role);
            /* SmolVLM's template puts no space after the colon when an image comes first */
            text(&b, i < msg->n_parts && msg->parts[i].image ? ":" : ": ");
        }
        for (; i < msg->n_parts; i++) {
            const prompt_part *part = &msg->parts[i];
            if (part->image) {
                if (image(&b, part, err, errlen) != 0) goto fail;
            } else if (part->text) {
                text(&b, part->text);
            }
        }
        if (f->turn_end) special(&b, p->end_of_utterance, 1);
        text(&b, f->turn_sep);
    }
    if (add_generation) {
        text(&b, f->role[PROMPT_ASSISTANT]);
        text(&b, ":");
    }
    flush(&b);
    if (b.oom) {
        eng_seterr(err, errlen, "out of memory building the prompt");
        goto fail;
    }
    free(b.text);
    *ids = b.ids;
    if (image_pos)
        *image_pos = b.img;
    else
        free(b.img);
    *n = b.n;
    return 0;
fail:
    free(b.text);
    free(b.ids);
    free(b.img);
    return -1;
}
