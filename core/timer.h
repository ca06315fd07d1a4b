/* Timers on a clock the caller advances: a binary min-heap of deadlines.
 *
 * The server drives it from one libuv timer armed for the earliest deadline;
 * moonwire.sim drives it from srv:advance(ms), so scripts see the same timer
 * semantics in specs and in production. Timers with equal deadlines fire in
 * the order they were started.
 */
#ifndef MOONWIRE_TIMER_H
#define MOONWIRE_TIMER_H

#include <stddef.h>
#include <stdint.h>

typedef struct mw_timer_s mw_timer_t;
typedef void (*mw_timer_cb)(mw_timer_t *t);

struct mw_timer_s {
    uint64_t due;    /* absolute time in ms */
    uint64_t repeat; /* 0 for a one-shot timer */
    uint64_t seq;    /* start order, to break ties and to skip timers started while running */
    uint32_t index;  /* position in the heap; MW_TIMER_IDLE when not scheduled */
    mw_timer_cb cb;
    void *data;
};

#define MW_TIMER_IDLE UINT32_MAX

typedef struct mw_timers_s {
    mw_timer_t **heap;
    uint32_t n;
    uint32_t cap;
    uint64_t now;
    uint64_t seq;
} mw_timers_t;

void mw_timers_init(mw_timers_t *ts, uint64_t now);
void mw_timers_close(mw_timers_t *ts);

void mw_timer_init(mw_timer_t *t, mw_timer_cb cb, void *data);

/* Schedules t to fire after `after` ms, then every `repeat` ms when repeat > 0.
 * Restarts it when already scheduled. Returns 0 or MW_ENOMEM. */
int mw_timer_start(mw_timers_t *ts, mw_timer_t *t, uint64_t after, uint64_t repeat);

/* Unschedules t; a no-op when it is not scheduled. */
void mw_timer_stop(mw_timers_t *ts, mw_timer_t *t);

static inline int mw_timer_active(const mw_timer_t *t)
{
    return t->index != MW_TIMER_IDLE;
}

/* Sets the clock to now and fires every timer due by then, earliest first.
 * A timer started by a callback fires in a later call, never in this one. */
void mw_timers_run(mw_timers_t *ts, uint64_t now);

/* Milliseconds until the next deadline from ts->now, or -1 when none. */
int64_t mw_timers_next(const mw_timers_t *ts);

#endif
