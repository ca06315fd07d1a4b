/* A topic's shard: jump consistent hash of the name's FNV-1a hash. See
 * shard.h; the same function is spelled out in docs/scaling.md. */
#include "shard.h"

#include <string.h>

#define FNV_OFFSET 14695981039346656037ULL
#define FNV_PRIME 1099511628211ULL

static uint64_t fnv1a(uint64_t h, const void *p, size_t len)
{
    const uint8_t *s = p;
    for (size_t i = 0; i < len; i++) {
        h ^= s[i];
        h *= FNV_PRIME;
    }
    return h;
}

uint64_t mw_shard_hash(const char *name, size_t len)
{
    return fnv1a(FNV_OFFSET, name, len);
}

/* Lamping & Veach: a pseudo-random walk over the buckets seeded by key; the
 * last bucket it lands on below n is the answer. */
unsigned mw_shard_jump(uint64_t key, unsigned n)
{
    int64_t b = -1, j = 0;

    while (j < (int64_t)n) {
        b = j;
        key = key * 2862933555777941757ULL + 1;
        j = (int64_t)((double)(b + 1) * ((double)(1LL << 31) / (double)((key >> 33) + 1)));
    }
    return (unsigned)b;
}

uint64_t mw_shard_digest(const char *const *urls, size_t n)
{
    uint64_t h = FNV_OFFSET;
    for (size_t i = 0; i < n; i++)
        h = fnv1a(h, urls[i], strlen(urls[i]) + 1);
    return h;
}
