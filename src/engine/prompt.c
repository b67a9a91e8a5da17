/* SmolVLM prompt building: see prompt.h. */
#include "engine/prompt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/errmsg.h"

static int need(const tok *t, const char *name, int *id, char *err, size_t errlen)
{
    *id = tok_special(t, name);
    if (*id < 0) {
        eng_seterr(err, errlen, "the tokenizer has no %s token", name);
        return -1;
    }
    return 0;
}

int prompt_init(prompt_ctx *p, const tok *t, int image_seq_len, char *err, size_t errlen)
{
    memset(p, 0, sizeof *p);
    p->t = t;
    p->image_seq_len = image_seq_len;
    if (need(t, "<|im_start|>", &p->im_start, err, errlen) ||
        need(t, "<end_of_utterance>", &p->end_of_utterance, err, errlen) ||
        need(t, "<image>", &p->image, err, errlen) ||
        need(t, "<fake_token_around_image>", &p->fake_around, err, errlen) ||
        need(t, "<global-img>", &p->global_img, err, errlen))
        return -1;
    for (int r = 0; r < PROMPT_MAX_GRID; r++)
        for (int c = 0; c < PROMPT_MAX_GRID; c++) {
            char name[32];
            snprintf(name, sizeof name, "<row_%d_col_%d>", r + 1, c + 1);
            p->row_col[r][c] = tok_special(t, name);
        }
    p->eos = tok_eos(t);
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
    if (!ni) {
        b->oom = true;
        return false;
    }
    b->ids = ni;
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
    b->n += need;
    b->tlen = 0;
}

static void special(builder *b, int id, int times)
{
    flush(b);
    if (!grow(b, times)) return;
    for (int i = 0; i < times; i++)
        b->ids[b->n++] = id;
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
            special(b, p->image, p->image_seq_len);
        }
        text(b, "\n");
    }
    if (rows > 0) text(b, "\n");
    special(b, p->fake_around, 1);
    special(b, p->global_img, 1);
    special(b, p->image, p->image_seq_len);
    special(b, p->fake_around, 1);
    return 0;
}

int prompt_build(const prompt_ctx *p, const prompt_msg *msgs, int n_msgs, bool add_generation,
                 int32_t **ids, int *n, char *err, size_t errlen)
{
    static const char *const role_names[] = {"System", "User", "Assistant"};
    builder b = {.p = p};
    *ids = NULL;
    *n = 0;
    special(&b, p->im_start, 1);
    for (int m = 0; m < n_msgs; m++) {
        const prompt_msg *msg = &msgs[m];
        if ((unsigned)msg->role > PROMPT_ASSISTANT) {
            eng_seterr(err, errlen, "message %d: unknown role", m);
            goto fail;
        }
        text(&b, role_names[msg->role]);
        /* the template puts no space after the colon when an image comes first */
        text(&b, msg->n_parts > 0 && msg->parts[0].image ? ":" : ": ");
        for (int i = 0; i < msg->n_parts; i++) {
            const prompt_part *part = &msg->parts[i];
            if (part->image) {
                if (image_block(&b, part->rows, part->cols, err, errlen) != 0) goto fail;
            } else if (part->text) {
                text(&b, part->text);
            }
        }
        special(&b, p->end_of_utterance, 1);
        text(&b, "\n");
    }
    if (add_generation) text(&b, "Assistant:");
    flush(&b);
    if (b.oom) {
        eng_seterr(err, errlen, "out of memory building the prompt");
        goto fail;
    }
    free(b.text);
    *ids = b.ids;
    *n = b.n;
    return 0;
fail:
    free(b.text);
    free(b.ids);
    return -1;
}
