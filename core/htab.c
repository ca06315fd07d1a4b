/* Chained hash tables of intrusive nodes. See htab.h. */
#include "htab.h"
#include "moonwire/error.h"

#include <stdlib.h>

uint64_t mw_hash_bytes(const void *p, size_t len)
{
    const uint8_t *s = p;
    uint64_t h = 14695981039346656037ULL; /* the FNV-1a 64-bit offset basis */

    for (size_t i = 0; i < len; i++) {
        h ^= s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

int mw_htab_init(mw_htab_t *t, size_t nbuckets)
{
    t->buckets = calloc(nbuckets, sizeof(*t->buckets));
    t->nbuckets = t->buckets != NULL ? nbuckets : 0;
    t->count = 0;
    return t->buckets != NULL ? 0 : MW_ENOMEM;
}

void mw_htab_free(mw_htab_t *t)
{
    free(t->buckets);
    t->buckets = NULL;
    t->nbuckets = t->count = 0;
}

static void grow(mw_htab_t *t)
{
    size_t n = t->nbuckets * 2;
    mw_hnode_t **b = calloc(n, sizeof(*b));

    if (b == NULL)
        return;
    for (size_t i = 0; i < t->nbuckets; i++) {
        mw_hnode_t *x = t->buckets[i], *next;
        for (; x != NULL; x = next) {
            next = x->next;
            x->next = b[x->hash & (n - 1)];
            b[x->hash & (n - 1)] = x;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = n;
}

void mw_htab_insert(mw_htab_t *t, mw_hnode_t *n, uint64_t hash)
{
    mw_hnode_t **head = &t->buckets[hash & (t->nbuckets - 1)];

    n->hash = hash;
    n->next = *head;
    *head = n;
    if (++t->count > t->nbuckets)
        grow(t);
}

void mw_htab_remove(mw_htab_t *t, mw_hnode_t *n)
{
    mw_hnode_t **p = &t->buckets[n->hash & (t->nbuckets - 1)];

    while (*p != n)
        p = &(*p)->next;
    *p = n->next;
    t->count--;
}

mw_hnode_t *mw_htab_next(const mw_htab_t *t, const mw_hnode_t *prev)
{
    size_t i = 0;

    if (prev != NULL) {
        if (prev->next != NULL)
            return prev->next;
        i = (prev->hash & (t->nbuckets - 1)) + 1;
    }
    for (; i < t->nbuckets; i++)
        if (t->buckets[i] != NULL)
            return t->buckets[i];
    return NULL;
}
