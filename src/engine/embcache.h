/* The last pictures' embedding rows, so a picture asked about again skips the vision encoder.
 *
 * Keyed by a 128-bit hash of what determines the rows: the model, the preprocessing settings
 * and the decoded pixels (chat.c builds the key with embcache_hash_*). Bounded by bytes; the
 * least recently used pictures go first. The hash is keyed by a per-cache seed, so a client
 * cannot craft a picture whose key collides with another client's.
 *
 *     embcache *ec = embcache_create(64 << 20, seed);
 *     chat_ctx cc;  chat_init(&cc, ...);  cc.cache = ec;   // chat_prompt_build uses it
 *     ...
 *     embcache_destroy(ec);
 *
 * Thread-safe (one mutex), so a caller may encode off its engine thread. */
#ifndef TERN_ENGINE_EMBCACHE_H
#define TERN_ENGINE_EMBCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t a, b;
} embcache_key;

typedef struct {
    uint64_t a, b;
} embcache_hasher;

typedef struct embcache embcache;

/* max_bytes 0 keeps nothing (every lookup misses) but still gives keys their seed.
 * NULL when out of memory. */
embcache *embcache_create(size_t max_bytes, uint64_t seed);
void embcache_destroy(embcache *c);
/* The seed that starts every key of this cache; 0 without a cache. */
uint64_t embcache_seed(const embcache *c);

/* Streaming hash: feed the fields that decide the rows, then finish. */
void embcache_hash_init(embcache_hasher *h, uint64_t seed);
void embcache_hash_add(embcache_hasher *h, const void *data, size_t n);
embcache_key embcache_hash_final(const embcache_hasher *h);
bool embcache_key_eq(const embcache_key *x, const embcache_key *y);

/* On a hit: grows *buf (realloc) by the entry's floats, copies them after its first *n_floats
 * floats, adds their count to *n_floats, sets grid (crop rows and columns) and returns 1.
 * 0 on a miss, -1 out of memory (*buf unchanged). */
int embcache_get(embcache *c, const embcache_key *k, float **buf, size_t *n_floats, int grid[2]);
/* Stores a copy of n floats, evicting the least recently used entries to fit; an entry larger
 * than the whole bound is not kept. 0, or -1 out of memory (the cache is unchanged). */
int embcache_put(embcache *c, const embcache_key *k, const float *rows, size_t n,
                 const int grid[2]);

/* Entries held and the bytes they count against the bound. */
void embcache_usage(embcache *c, int *entries, size_t *bytes);

#endif
