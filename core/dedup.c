/* The highest envelope number heard from each origin node. See dedup.h. */
#include "dedup.h"
#include "moonwire/error.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    mw_hnode_t node;
    mw_list_t heard_link;
    uint64_t top;   /* the highest number delivered */
    uint64_t heard; /* when (ms) */
    size_t len;
    char origin[];
} origin_t;

int mw_dedup_init(mw_dedup_t *d, size_t max_origins)
{
    mw_list_init(&d->heard);
    d->max_origins = max_origins > 0 ? max_origins : 1;
    return mw_htab_init(&d->origins, 16);
}

static void forget(mw_dedup_t *d, origin_t *o)
{
    mw_htab_remove(&d->origins, &o->node);
    mw_list_remove(&o->heard_link);
    free(o);
}

void mw_dedup_free(mw_dedup_t *d)
{
    while (!mw_list_empty(&d->heard))
        forget(d, MW_CONTAINER_OF(d->heard.next, origin_t, heard_link));
    mw_htab_free(&d->origins);
}

int mw_dedup_check(mw_dedup_t *d, const char *origin, size_t len, uint64_t seq, uint64_t now)
{
    uint64_t h;
    origin_t *o = NULL;

    if (seq == 0 || d->origins.buckets == NULL)
        return 1;
    h = mw_hash_bytes(origin, len);
    for (mw_hnode_t *n = mw_htab_chain(&d->origins, h); n != NULL; n = n->next) {
        origin_t *x = MW_CONTAINER_OF(n, origin_t, node);
        if (n->hash == h && x->len == len && memcmp(x->origin, origin, len) == 0) {
            o = x;
            break;
        }
    }
    if (o != NULL && seq <= o->top)
        return 0;
    if (o == NULL) {
        if (d->origins.count >= d->max_origins)
            forget(d, MW_CONTAINER_OF(d->heard.next, origin_t, heard_link));
        o = malloc(sizeof(*o) + len);
        if (o == NULL)
            return 1;
        memcpy(o->origin, origin, len);
        o->len = len;
        mw_htab_insert(&d->origins, &o->node, h);
    } else {
        mw_list_remove(&o->heard_link);
    }
    o->top = seq;
    o->heard = now;
    mw_list_insert_tail(&d->heard, &o->heard_link);
    return 1;
}

size_t mw_dedup_expire(mw_dedup_t *d, uint64_t now, uint64_t idle)
{
    size_t n = 0;

    while (!mw_list_empty(&d->heard)) {
        origin_t *o = MW_CONTAINER_OF(d->heard.next, origin_t, heard_link);
        if (now < o->heard || now - o->heard <= idle)
            break;
        forget(d, o);
        n++;
    }
    return n;
}
