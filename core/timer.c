/* Timer heap. See timer.h. */
#include "timer.h"
#include "moonwire/error.h"

#include <stdlib.h>

static int before(const mw_timer_t *a, const mw_timer_t *b)
{
    return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void place(mw_timers_t *ts, mw_timer_t *t, uint32_t i)
{
    ts->heap[i] = t;
    t->index = i;
}

static void sift_up(mw_timers_t *ts, uint32_t i)
{
    mw_timer_t *t = ts->heap[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (!before(t, ts->heap[parent]))
            break;
        place(ts, ts->heap[parent], i);
        i = parent;
    }
    place(ts, t, i);
}

static void sift_down(mw_timers_t *ts, uint32_t i)
{
    mw_timer_t *t = ts->heap[i];
    for (;;) {
        uint32_t child = 2 * i + 1;
        if (child >= ts->n)
            break;
        if (child + 1 < ts->n && before(ts->heap[child + 1], ts->heap[child]))
            child++;
        if (!before(ts->heap[child], t))
            break;
        place(ts, ts->heap[child], i);
        i = child;
    }
    place(ts, t, i);
}

void mw_timers_init(mw_timers_t *ts, uint64_t now)
{
    ts->heap = NULL;
    ts->n = ts->cap = 0;
    ts->now = now;
    ts->seq = 0;
}

void mw_timers_close(mw_timers_t *ts)
{
    for (uint32_t i = 0; i < ts->n; i++)
        ts->heap[i]->index = MW_TIMER_IDLE;
    free(ts->heap);
    ts->heap = NULL;
    ts->n = ts->cap = 0;
}

void mw_timer_init(mw_timer_t *t, mw_timer_cb cb, void *data)
{
    t->due = t->repeat = t->seq = 0;
    t->index = MW_TIMER_IDLE;
    t->cb = cb;
    t->data = data;
}

int mw_timer_start(mw_timers_t *ts, mw_timer_t *t, uint64_t after, uint64_t repeat)
{
    mw_timer_stop(ts, t);
    if (ts->n == ts->cap) {
        uint32_t cap = ts->cap ? ts->cap * 2 : 64;
        mw_timer_t **heap = realloc(ts->heap, cap * sizeof(*heap));
        if (heap == NULL)
            return MW_ENOMEM;
        ts->heap = heap;
        ts->cap = cap;
    }
    t->due = ts->now + after;
    t->repeat = repeat;
    t->seq = ++ts->seq;
    place(ts, t, ts->n++);
    sift_up(ts, t->index);
    return 0;
}

void mw_timer_stop(mw_timers_t *ts, mw_timer_t *t)
{
    uint32_t i = t->index;
    mw_timer_t *last;

    if (i == MW_TIMER_IDLE)
        return;
    t->index = MW_TIMER_IDLE;
    last = ts->heap[--ts->n];
    if (last == t)
        return;
    place(ts, last, i);
    if (i > 0 && before(last, ts->heap[(i - 1) / 2]))
        sift_up(ts, i);
    else
        sift_down(ts, i);
}

void mw_timers_run(mw_timers_t *ts, uint64_t now)
{
    uint64_t last_seq = ts->seq;

    if (now > ts->now)
        ts->now = now;
    while (ts->n > 0) {
        mw_timer_t *t = ts->heap[0];
        if (t->due > ts->now || t->seq > last_seq)
            break;
        mw_timer_stop(ts, t);
        if (t->repeat > 0) {
            /* Rescheduled before the callback, which may stop it. Keeps the
             * cadence, but never piles up missed runs. */
            uint64_t due = t->due + t->repeat;
            if (due <= ts->now)
                due = ts->now + t->repeat;
            mw_timer_start(ts, t, due - ts->now, t->repeat);
        }
        t->cb(t);
    }
}

int64_t mw_timers_next(const mw_timers_t *ts)
{
    if (ts->n == 0)
        return -1;
    return ts->heap[0]->due > ts->now ? (int64_t)(ts->heap[0]->due - ts->now) : 0;
}
