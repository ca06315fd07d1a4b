/* Write-queue bounds: limits.max_buffered, limits.backpressure and
 * limits.backpressure_timeout.
 *
 * A queue is charged what it holds in memory (mw_outq_cost: bytes and a
 * fixed cost per frame) plus the TLS ciphertext not yet written. It may pass
 * max_buffered within a loop turn: one read from a fast publisher queues a
 * burst for every recipient before any of them could read. So passing the
 * bound does not cut anyone at once. It stops reading the connection whose
 * input caused it (the publisher, or the client itself for its own replies
 * and pongs), and the queue is *backed up* from then on. It is judged after
 * the turn's writes: one still over the bound stops its own connection's
 * reading too. A queue that drains to half the bound lets go of everyone it
 * held back. One that stays backed up for backpressure_timeout gets the
 * policy: closed with 1008, or (drop) until it has drained to half a
 * message that would take it past the bound is dropped, and it holds nobody
 * back meanwhile. Twice the bound is a
 * ceiling at enqueue, for what no publisher's reading paces: timers, the
 * backplane, many publishers in one turn.
 */
#ifndef MOONWIRE_BACKPRESSURE_H
#define MOONWIRE_BACKPRESSURE_H

#include "conn.h"
#include "list.h"

#include <stddef.h>
#include <stdint.h>

/* What a connection's backed-up queue keeps while it is backed up. */
typedef struct mw_backlog_s {
    mw_conn_t *owner; /* the connection it is c->backlog of; it goes first */
    mw_list_t link;  /* in conns->backed_up, ordered by since */
    uint64_t since;  /* when the queue passed max_buffered, ms */
    uint64_t *holds; /* serials of the publishers it holds back, in order */
    uint32_t nholds, cap;
} mw_backlog_t;

/* The functions below are what the server installs as the queue bounds'
 * handlers of its connections (mw_conn_handlers_t: admit, over, written,
 * flushed, forget); conn.c calls them past its own cheap checks. */

/* Before a data frame is queued to the open connection c, whose non-empty
 * queue would then hold `after` (over max_buffered): returns 0 to queue it,
 * or MW_EBACKPRESSURE after applying the policy (the frame is dropped, or c
 * closed with 1008; counted either way). */
int mw_bp_admit(mw_conn_t *c, size_t after);

/* c's queue is over max_buffered after a frame (data, or a pong) was queued:
 * the connection whose input is being handled stops being read. */
void mw_bp_over(mw_conn_t *c);

/* Bytes of c's queue were written while it is backed up, dropping or
 * paused: at half the bound, it lets go. */
void mw_bp_written(mw_conn_t *c);

/* c's queue is over max_buffered after the turn's write attempt: it is
 * backed up and stops its own connection's reading. */
void mw_bp_flushed(mw_conn_t *c);

/* c no longer takes messages (closing, closed or released): it lets go of
 * the publishers it held back and leaves the backed-up list. */
void mw_bp_forget(mw_conn_t *c);

/* The sweep: applies the policy to queues backed up for backpressure_timeout,
 * and gives a burst's freed memory back to the system. */
void mw_bp_sweep(mw_conns_t *cs, uint64_t now);

#endif
