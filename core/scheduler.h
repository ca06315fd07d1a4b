/* The work a loop turn leaves for its end: the on_close hooks owed, then one
 * write per connection with frames queued (corked writes), again and again
 * until both lists are empty (an on_close may send). Every part may add to
 * it, and run it: the loop binding at the end of each turn (net.c from
 * libuv's prepare and check phases, the sim in its pump), and whoever did
 * work outside a connection's read (a timer, a reply from Redis) at once.
 *
 * The lists hold links embedded in the connections; what is done with each
 * is conn.c's (mw_conns_init gives the two functions), so the scheduler
 * knows nothing above it.
 */
#ifndef MOONWIRE_SCHEDULER_H
#define MOONWIRE_SCHEDULER_H

#include "list.h"

typedef struct mw_sched_s mw_sched_t;

/* Does the work of one link, which is already off its list. */
typedef void (*mw_sched_cb)(mw_list_t *link);

struct mw_sched_s {
    mw_list_t closing;      /* links owed their close work (on_close), run first */
    mw_list_t flush;        /* links with frames to write */
    mw_sched_cb on_closing; /* for each link of closing */
    mw_sched_cb on_flush;   /* for each link of flush */
    /* Called when a run has emptied both lists (the drain's end is seen
     * there), or NULL. */
    void (*on_idle)(mw_sched_t *s);
    void *ud; /* for on_idle */
};

/* An empty scheduler: no work, no callbacks. */
void mw_sched_init(mw_sched_t *s);

/* Adds link to the writes of this turn, unless it is there already. */
static inline void mw_sched_flush(mw_sched_t *s, mw_list_t *link)
{
    if (!mw_list_linked(link))
        mw_list_insert_tail(&s->flush, link);
}

/* Adds link to the close work of this turn, unless it is there already. */
static inline void mw_sched_close(mw_sched_t *s, mw_list_t *link)
{
    if (!mw_list_linked(link))
        mw_list_insert_tail(&s->closing, link);
}

/* True when work is waiting. */
static inline int mw_sched_pending(const mw_sched_t *s)
{
    return !mw_list_empty(&s->closing) || !mw_list_empty(&s->flush);
}

/* Does the work until none is left, close work first, then calls on_idle. */
void mw_sched_run(mw_sched_t *s);

#endif
