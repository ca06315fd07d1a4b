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
 * A reply is not the end of every risk: Redis answers a PUBLISH before it
 * has written the message to every subscriber, and a Redis killed in
 * between loses it for them. So an answered item may be kept for a while
 * (cluster.outbox_replay) and sent again, first, when the connection is
 * lost: receivers drop what they had (dedup.h). Kept items give way to new
 * ones: they count against max_bytes only while there is room, and the
 * oldest is forgotten first; so do replays not yet sent again.
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
    uint64_t queued_at;   /* ms, on the caller's clock */
    uint64_t answered_at; /* ms; a kept item: when its reply came */
    size_t size;          /* bytes it counts against the bound */
    int sent;             /* handed to Redis, its reply not yet come */
    int replay;           /* an answered item sent again */
} mw_outbox_item_t;

typedef void (*mw_outbox_drop_cb)(mw_outbox_item_t *it, void *ud);

typedef struct mw_outbox_s {
    mw_list_t items;  /* oldest first: the sent ones, then the unsent */
    mw_list_t *next;  /* the first unsent item's link; &items when every item is sent */
    size_t count;     /* items */
    size_t nsent;     /* of them, in flight */
    size_t bytes;     /* the sum of their sizes */
    size_t max_bytes; /* the bound of bytes */
    uint64_t max_age; /* ms an unsent item may wait */
    size_t nreplay;      /* of the items, replays */
    size_t replay_bytes; /* the sum of their sizes */

    mw_list_t kept;           /* answered items kept for a replay, oldest answer first */
    size_t nkept;             /* items in it */
    size_t kept_bytes;        /* the sum of their sizes */
    uint64_t keep;            /* ms an answered item is kept; 0: none is */
    mw_outbox_drop_cb forget; /* takes a kept item that goes (may free it) */
    void *forget_ud;
} mw_outbox_t;

/* An empty outbox with its two bounds, keeping no answered item. */
void mw_outbox_init(mw_outbox_t *ob, size_t max_bytes, uint64_t max_age);

/* Keeps answered items for keep ms (0: none); forget takes each that goes. */
void mw_outbox_keep(mw_outbox_t *ob, uint64_t keep, mw_outbox_drop_cb forget, void *ud);

/* Adds it (it->size set by the caller) at the tail, unsent, queued at now,
 * forgetting kept items and unsent replays, oldest first, to make room.
 * Returns 0, or MW_ELIMIT when it would take the outbox past max_bytes even
 * so (it is then not linked). */
int mw_outbox_push(mw_outbox_t *ob, mw_outbox_item_t *it, uint64_t now);

/* The first unsent item, or NULL. It stays unsent until mw_outbox_sent. */
mw_outbox_item_t *mw_outbox_peek(const mw_outbox_t *ob);

/* Marks the first unsent item (the one mw_outbox_peek gave) as in flight. */
void mw_outbox_sent(mw_outbox_t *ob, mw_outbox_item_t *it);

/* Unlinks it, sent or not (the caller drops it, or its reply was an error). */
void mw_outbox_remove(mw_outbox_t *ob, mw_outbox_item_t *it);

/* Its reply came at now: it is unlinked and kept for a replay, or given to
 * forget when the outbox keeps none. Kept items older than keep go too. */
void mw_outbox_answered(mw_outbox_t *ob, mw_outbox_item_t *it, uint64_t now);

/* The connection went at now: every item in flight is unsent again, in its
 * place, and the items answered in the last keep ms go back in front of
 * them, unsent, marked replay (older kept ones are forgotten). Returns how
 * many were in flight; *replayed (may be NULL) is set to how many kept
 * items came back. */
size_t mw_outbox_rewind(mw_outbox_t *ob, uint64_t now, size_t *replayed);

/* Unsent items that waited more than max_age at now: each is unlinked and
 * given to drop (which may free it). Returns how many. */
size_t mw_outbox_expire(mw_outbox_t *ob, uint64_t now, mw_outbox_drop_cb drop, void *ud);

/* Every item, sent or not, unlinked and given to drop, and every kept one
 * to forget. Returns how many items (kept ones not counted). */
size_t mw_outbox_clear(mw_outbox_t *ob, mw_outbox_drop_cb drop, void *ud);

/* Items not yet handed to Redis. */
static inline size_t mw_outbox_backlog(const mw_outbox_t *ob)
{
    return ob->count - ob->nsent;
}

/* The oldest item's queue time, or 0 when empty. */
uint64_t mw_outbox_oldest(const mw_outbox_t *ob);

#endif
