/* A list of malloc'd buffers freed together: memory whose owner outlives its maker (the model's
 * float copies of small vectors, a GGUF writer's tensor data). Internal to the engine;
 * header-only, as errmsg.h. Zero-initialise a buflist; buflist_free frees it all. */
#ifndef TERN_ENGINE_BUFLIST_H
#define TERN_ENGINE_BUFLIST_H

#include <stdlib.h>

typedef struct {
    void **bufs;
    int n, cap;
} buflist;

/* A new buffer of bytes (at least 1) owned by l; NULL if out of memory. */
static inline void *buflist_alloc(buflist *l, size_t bytes)
{
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        void **nb = realloc(l->bufs, (size_t)cap * sizeof *nb);
        if (!nb) return NULL;
        l->bufs = nb;
        l->cap = cap;
    }
    void *p = malloc(bytes ? bytes : 1);
    if (p) l->bufs[l->n++] = p;
    return p;
}

static inline void buflist_free(buflist *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->bufs[i]);
    free(l->bufs);
    *l = (buflist){0};
}

#endif
