/* A connection's write queue: references to shared frames, in order.
 *
 * Each queued frame holds one reference. Bytes are consumed from the head
 * as the transport writes them; a frame is unreferenced when its last byte
 * is written or when the queue is cleared. The first MW_OUTQ_INLINE frames
 * sit in a small ring inside the queue, where a fan-out to thousands of
 * connections finds them without touching another cache line; more go to
 * a list of entries from a free list, so pushing does not call malloc in
 * steady state.
 */
#ifndef MOONWIRE_OUTQ_H
#define MOONWIRE_OUTQ_H

#include "frame.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define MW_OUTQ_INLINE 4 /* a power of two */

/* What a queued frame costs besides its bytes: its header and its block's
 * rounding in the frame pool (a pong of 2 bytes takes a 64-byte block) and
 * its entry in the queue's list (a 32-byte block). Bounds count it, so that
 * a backlog of empty frames is charged for the memory it holds and not for
 * its 2 bytes on the wire each. */
#define MW_OUTQ_FRAME_COST 96

typedef struct mw_outq_entry_s mw_outq_entry_t;

typedef struct mw_outq_s {
    mw_frame_t *ring[MW_OUTQ_INLINE]; /* the oldest frames */
    uint8_t rhead, rcount;
    uint32_t off;           /* bytes of the head frame already written */
    mw_outq_entry_t *head;  /* the newer ones, filled only once the ring is */
    mw_outq_entry_t *tail;  /* full, and until it is empty again */
    size_t bytes;           /* unwritten bytes in the queue */
    uint32_t count;
} mw_outq_t;

void mw_outq_init(mw_outq_t *q);

/* Internal: mw_outq_push once the ring is full or the list behind it is in use. */
int mw__outq_push_list(mw_outq_t *q, mw_frame_t *f);

/* Appends f and takes a reference on it. Returns 0 or MW_ENOMEM (no reference
 * taken). Inline: a fan-out calls it once per recipient, and the ring takes
 * the frame in a few instructions. */
static inline int mw_outq_push(mw_outq_t *q, mw_frame_t *f)
{
    /* The ring holds the oldest frames: it takes one only while the list
     * behind it is empty, or the order would break. */
    if (q->head != NULL || q->rcount == MW_OUTQ_INLINE)
        return mw__outq_push_list(q, f);
    q->ring[(q->rhead + q->rcount) & (MW_OUTQ_INLINE - 1)] = mw_frame_ref(f);
    q->rcount++;
    q->bytes += f->len;
    q->count++;
    return 0;
}

/* Fills up to n iovecs with the unwritten bytes from the head, at most max_bytes
 * in all (0 for no limit). Returns the number of iovecs filled; their bytes
 * in all go to *total when total is not NULL. */
size_t mw_outq_peek(const mw_outq_t *q, struct iovec *iov, size_t n, size_t max_bytes,
                    size_t *total);

/* Marks n bytes from the head as written, dropping the references of frames
 * written whole. n must not exceed q->bytes. */
void mw_outq_consume(mw_outq_t *q, size_t n);

/* Drops every entry and its reference. */
void mw_outq_clear(mw_outq_t *q);

/* The frame at the head of the queue, or NULL. */
mw_frame_t *mw_outq_head(const mw_outq_t *q);

/* The memory the queue holds for its frames, as bounds count it: their
 * unwritten bytes and MW_OUTQ_FRAME_COST each. */
static inline size_t mw_outq_cost(const mw_outq_t *q)
{
    return q->bytes + (size_t)q->count * MW_OUTQ_FRAME_COST;
}

static inline int mw_outq_empty(const mw_outq_t *q)
{
    return q->rcount == 0 && q->head == NULL;
}

/* Frees the pooled entries (at exit). */
void mw_outq_pool_drain(void);

#endif
