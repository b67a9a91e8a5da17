/* Picture embedding cache (embcache.h): a doubly linked list in recency order, searched
 * linearly (a bound of tens of megabytes holds tens of pictures). */
#include "engine/embcache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct entry {
    struct entry *prev, *next;
    embcache_key key;
    int grid[2];
    size_t n;     /* floats */
    size_t bytes; /* what it counts against the bound */
    float rows[];
};

struct embcache {
    pthread_mutex_t mu;
    size_t max_bytes, bytes;
    uint64_t seed;
    int entries;
    struct entry *head, *tail; /* head: most recently used */
};

embcache *embcache_create(size_t max_bytes, uint64_t seed)
{
    embcache *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    pthread_mutex_init(&c->mu, NULL);
    c->max_bytes = max_bytes;
    c->seed = seed;
    return c;
}

void embcache_destroy(embcache *c)
{
    if (!c) return;
    for (struct entry *e = c->head, *next; e; e = next) {
        next = e->next;
        free(e);
    }
    pthread_mutex_destroy(&c->mu);
    free(c);
}

uint64_t embcache_seed(const embcache *c)
{
    return c ? c->seed : 0;
}

/* Two 64-bit lanes of multiply-rotate mixing over 8-byte words (fast enough for a 16 MP
 * picture in a few milliseconds), finished with murmur3's fmix64. Not cryptographic: the
 * per-cache seed is what keeps collisions out of a client's reach. */
#define P1 0x9e3779b97f4a7c15ULL
#define P2 0xc2b2ae3d27d4eb4fULL
#define P3 0x165667b19e3779f9ULL
#define P4 0xd6e8feb86659fd93ULL

static inline uint64_t rotl(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static inline void mix(embcache_hasher *h, uint64_t w)
{
    h->a = rotl(h->a ^ (w * P1), 31) * P2;
    h->b = rotl(h->b ^ (w * P3), 29) * P4 + h->a;
}

void embcache_hash_init(embcache_hasher *h, uint64_t seed)
{
    h->a = seed ^ P3;
    h->b = rotl(seed, 17) ^ P1;
}

void embcache_hash_add(embcache_hasher *h, const void *data, size_t n)
{
    const unsigned char *p = data;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        mix(h, w);
    }
    uint64_t tail = 0;
    if (n > i) memcpy(&tail, p + i, n - i);
    mix(h, tail);
    mix(h, (uint64_t)n); /* "ab"+"c" and "a"+"bc" differ */
}

static uint64_t fmix(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    return k ^ (k >> 33);
}

embcache_key embcache_hash_final(const embcache_hasher *h)
{
    return (embcache_key){fmix(h->a ^ rotl(h->b, 23)), fmix(h->b + h->a * P2)};
}

bool embcache_key_eq(const embcache_key *x, const embcache_key *y)
{
    return x->a == y->a && x->b == y->b;
}

static void unlink_entry(embcache *c, struct entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void push_front(embcache *c, struct entry *e)
{
    e->prev = NULL;
    e->next = c->head;
    if (c->head) c->head->prev = e;
    c->head = e;
    if (!c->tail) c->tail = e;
}

static struct entry *find(embcache *c, const embcache_key *k)
{
    for (struct entry *e = c->head; e; e = e->next)
        if (embcache_key_eq(&e->key, k)) return e;
    return NULL;
}

int embcache_get(embcache *c, const embcache_key *k, float **buf, size_t *n_floats, int grid[2])
{
    if (!c) return 0;
    int rc = 0;
    pthread_mutex_lock(&c->mu);
    struct entry *e = find(c, k);
    if (e) {
        float *grown = realloc(*buf, (*n_floats + e->n) * sizeof *grown);
        if (!grown) {
            rc = -1;
        } else {
            memcpy(grown + *n_floats, e->rows, e->n * sizeof *grown);
            *buf = grown;
            *n_floats += e->n;
            grid[0] = e->grid[0];
            grid[1] = e->grid[1];
            unlink_entry(c, e);
            push_front(c, e);
            rc = 1;
        }
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int embcache_put(embcache *c, const embcache_key *k, const float *rows, size_t n, const int grid[2])
{
    if (!c) return 0;
    size_t bytes = sizeof(struct entry) + n * sizeof(float);
    if (bytes > c->max_bytes) return 0;
    struct entry *e = malloc(bytes);
    if (!e) return -1;
    *e = (struct entry){.key = *k, .grid = {grid[0], grid[1]}, .n = n, .bytes = bytes};
    memcpy(e->rows, rows, n * sizeof(float));
    pthread_mutex_lock(&c->mu);
    struct entry *old = find(c, k);
    if (old) { /* encoded twice at once (two requests, one picture): keep the first */
        pthread_mutex_unlock(&c->mu);
        free(e);
        return 0;
    }
    while (c->bytes + bytes > c->max_bytes) {
        struct entry *lru = c->tail;
        unlink_entry(c, lru);
        c->bytes -= lru->bytes;
        c->entries--;
        free(lru);
    }
    push_front(c, e);
    c->bytes += bytes;
    c->entries++;
    pthread_mutex_unlock(&c->mu);
    return 0;
}

void embcache_usage(embcache *c, int *entries, size_t *bytes)
{
    pthread_mutex_lock(&c->mu);
    *entries = c->entries;
    *bytes = c->bytes;
    pthread_mutex_unlock(&c->mu);
}
