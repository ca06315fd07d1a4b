/* Which Redis of cluster.redis a topic lives on, when it lists several
 * (shards): jump consistent hash (Lamping & Veach, 2014) of the topic name's
 * 64-bit FNV-1a hash over the number of shards. Adding a shard at the end of
 * the list moves only the topics that go to the new one (about 1/n of them);
 * every node must list the same shards in the same order. A backend can
 * compute it too: docs/scaling.md ("Sharding") gives the function and a
 * worked example.
 */
#ifndef MOONWIRE_SHARD_H
#define MOONWIRE_SHARD_H

#include <stddef.h>
#include <stdint.h>

/* At most this many shards in cluster.redis. */
#define MW_SHARDS_MAX 16

/* The 64-bit FNV-1a hash of the name (offset basis 14695981039346656037,
 * prime 1099511628211, byte by byte). */
uint64_t mw_shard_hash(const char *name, size_t len);

/* Jump consistent hash of key over n buckets (n >= 1): 0 to n - 1. */
unsigned mw_shard_jump(uint64_t key, unsigned n);

/* The shard (0 to n - 1) of a topic name among n shards. */
static inline unsigned mw_shard_of(const char *name, size_t len, unsigned n)
{
    return n <= 1 ? 0 : mw_shard_jump(mw_shard_hash(name, len), n);
}

/* A digest of the shard list (FNV-1a over the URLs, each ended by a NUL):
 * nodes that list different shards have different digests. */
uint64_t mw_shard_digest(const char *const *urls, size_t n);

#endif
