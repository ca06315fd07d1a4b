/* The work of a loop turn: close work, then writes, until none is left. See
 * scheduler.h. */
#include "scheduler.h"

void mw_sched_init(mw_sched_t *s)
{
    mw_list_init(&s->closing);
    mw_list_init(&s->flush);
    s->on_closing = s->on_flush = NULL;
    s->on_idle = NULL;
    s->ud = NULL;
}

void mw_sched_run(mw_sched_t *s)
{
    /* on_close hooks may queue frames and flushes may find closed peers, so
     * go until both are empty. Each connection closes once: this ends. */
    while (mw_sched_pending(s)) {
        while (!mw_list_empty(&s->closing)) {
            mw_list_t *link = s->closing.next;
            mw_list_remove(link);
            s->on_closing(link);
        }
        while (!mw_list_empty(&s->flush)) {
            mw_list_t *link = s->flush.next;
            mw_list_remove(link);
            s->on_flush(link);
        }
    }
    if (s->on_idle != NULL)
        s->on_idle(s);
}
