/* A connection's write queue: references to shared frames, in order.
 *
 * Each entry holds one reference to a frame. Bytes are consumed from the
 * head as the transport writes them; a frame is unreferenced when its last
 * byte is written or when the queue is cleared. Entries come from a free
 * list, so pushing does not call malloc in steady state.
 */
#ifndef MOONWIRE_OUTQ_H
#define MOONWIRE_OUTQ_H

#include "moonwire/frame.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

typedef struct mw_outq_entry_s mw_outq_entry_t;

typedef struct mw_outq_s {
    mw_outq_entry_t *head;
    mw_outq_entry_t *tail;
    size_t bytes;  /* unwritten bytes in the queue */
    uint32_t off;  /* bytes of the head frame already written */
    uint32_t count;
} mw_outq_t;

void mw_outq_init(mw_outq_t *q);

/* Appends f and takes a reference on it. Returns 0 or MW_ENOMEM (no reference taken). */
int mw_outq_push(mw_outq_t *q, mw_frame_t *f);

/* Fills up to n iovecs with the unwritten bytes from the head, at most max_bytes
 * in all (0 for no limit). Returns the number of iovecs filled. */
size_t mw_outq_peek(const mw_outq_t *q, struct iovec *iov, size_t n, size_t max_bytes);

/* Marks n bytes from the head as written, dropping the references of frames
 * written whole. n must not exceed q->bytes. */
void mw_outq_consume(mw_outq_t *q, size_t n);

/* Drops every entry and its reference. */
void mw_outq_clear(mw_outq_t *q);

/* The frame at the head of the queue, or NULL. */
mw_frame_t *mw_outq_head(const mw_outq_t *q);

static inline int mw_outq_empty(const mw_outq_t *q)
{
    return q->head == NULL;
}

/* Frees the pooled entries (at exit). */
void mw_outq_pool_drain(void);

#endif
