/* Chained hash tables of intrusive nodes.
 *
 * An entry embeds an mw_hnode_t and is found again with MW_CONTAINER_OF;
 * the table holds pointers only and never allocates an entry. The owner
 * computes the hash (mw_hash_bytes for names) and compares keys while it
 * walks a chain. The table doubles when it holds as many entries as it has
 * buckets; a failed growth only makes chains longer. Topics, subscriptions,
 * history topics and the static file cache are such tables.
 */
#ifndef MOONWIRE_HTAB_H
#define MOONWIRE_HTAB_H

#include "list.h"

#include <stddef.h>
#include <stdint.h>

typedef struct mw_hnode_s {
    struct mw_hnode_s *next; /* the chain */
    uint64_t hash;
} mw_hnode_t;

typedef struct mw_htab_s {
    mw_hnode_t **buckets;
    size_t nbuckets; /* a power of two */
    size_t count;
} mw_htab_t;

/* FNV-1a of len bytes: for short names, which clients choose but which can
 * not make a table larger than what they subscribe to. */
uint64_t mw_hash_bytes(const void *p, size_t len);

/* Makes an empty table of nbuckets (a power of two). Returns 0 or MW_ENOMEM. */
int mw_htab_init(mw_htab_t *t, size_t nbuckets);

/* Frees the buckets; the entries are the caller's. */
void mw_htab_free(mw_htab_t *t);

/* The first node of the chain where hash lives. */
static inline mw_hnode_t *mw_htab_chain(const mw_htab_t *t, uint64_t hash)
{
    return t->buckets[hash & (t->nbuckets - 1)];
}

/* Links n under hash, then grows the table when it is full. */
void mw_htab_insert(mw_htab_t *t, mw_hnode_t *n, uint64_t hash);

/* Unlinks n, which must be in the table. */
void mw_htab_remove(mw_htab_t *t, mw_hnode_t *n);

/* Every node in turn: the first with prev NULL, then the one after prev
 * (which must still be in the table), NULL after the last. To free every
 * entry, take the next node before freeing the current one. */
mw_hnode_t *mw_htab_next(const mw_htab_t *t, const mw_hnode_t *prev);

#endif
