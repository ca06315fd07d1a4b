/* A node's outbox: every message it sends to the other nodes, in order, from
 * the moment it is sent until Redis has taken it.
 *
 * The cluster puts each envelope (a publish, a broadcast, a direct send, a
 * history topic's script call) at the tail and hands items to Redis from the
 * head. An item stays until its reply comes, so a connection lost with
 * commands in flight loses nothing: mw_outbox_rewind makes them unsent
 * again and they go first when Redis is back. While Redis is away, items
 * wait here; a message sent while any wait queues behind them, which keeps
 * one publisher's order.
 *
 * Two bounds, both configured (cluster.outbox_size, cluster.outbox_max_age):
 * the bytes of every item (in flight ones included), past which a new item
 * is refused, and how long an unsent item may wait, past which it is dropped.
 *
 * The items are the caller's: the outbox links them (an mw_outbox_item_t
 * embedded in a bigger struct) and never allocates or frees.
 */
#ifndef MOONWIRE_OUTBOX_H
#define MOONWIRE_OUTBOX_H

#include "list.h"

#include <stddef.h>
#include <stdint.h>

typedef struct mw_outbox_item_s {
    mw_list_t link;
    uint64_t queued_at; /* ms, on the caller's clock */
    size_t size;        /* bytes it counts against the bound */
    int sent;           /* handed to Redis, its reply not yet come */
} mw_outbox_item_t;

typedef struct mw_outbox_s {
    mw_list_t items;  /* oldest first: the sent ones, then the unsent */
    mw_list_t *next;  /* the first unsent item's link; &items when every item is sent */
    size_t count;     /* items */
    size_t nsent;     /* of them, in flight */
    size_t bytes;     /* the sum of their sizes */
    size_t max_bytes; /* the bound of bytes */
    uint64_t max_age; /* ms an unsent item may wait */
} mw_outbox_t;

typedef void (*mw_outbox_drop_cb)(mw_outbox_item_t *it, void *ud);

/* An empty outbox with its two bounds. */
void mw_outbox_init(mw_outbox_t *ob, size_t max_bytes, uint64_t max_age);

/* Adds it (it->size set by the caller) at the tail, unsent, queued at now.
 * Returns 0, or MW_ELIMIT when it would take the outbox past max_bytes (it
 * is then not linked). */
int mw_outbox_push(mw_outbox_t *ob, mw_outbox_item_t *it, uint64_t now);

/* The first unsent item, or NULL. It stays unsent until mw_outbox_sent. */
mw_outbox_item_t *mw_outbox_peek(const mw_outbox_t *ob);

/* Marks the first unsent item (the one mw_outbox_peek gave) as in flight. */
void mw_outbox_sent(mw_outbox_t *ob, mw_outbox_item_t *it);

/* Unlinks it, sent or not (its reply came, or the caller drops it). */
void mw_outbox_remove(mw_outbox_t *ob, mw_outbox_item_t *it);

/* Every item in flight is unsent again, in its place: the connection that
 * carried them is gone and their replies will not come. Returns how many. */
size_t mw_outbox_rewind(mw_outbox_t *ob);

/* Unsent items that waited more than max_age at now: each is unlinked and
 * given to drop (which may free it). Returns how many. */
size_t mw_outbox_expire(mw_outbox_t *ob, uint64_t now, mw_outbox_drop_cb drop, void *ud);

/* Every item, sent or not, unlinked and given to drop. Returns how many. */
size_t mw_outbox_clear(mw_outbox_t *ob, mw_outbox_drop_cb drop, void *ud);

/* Items not yet handed to Redis. */
static inline size_t mw_outbox_backlog(const mw_outbox_t *ob)
{
    return ob->count - ob->nsent;
}

/* The oldest item's queue time, or 0 when empty. */
uint64_t mw_outbox_oldest(const mw_outbox_t *ob);

#endif
