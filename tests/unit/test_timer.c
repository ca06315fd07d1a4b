/* Unit tests for include/moonwire/timer.h: the timer heap on a caller-driven clock. */
#include "helpers.h"

#include "timer.h"

#include <stdlib.h>
#include <string.h>

/* Every callback appends its timer's tag to the log, then runs its action. */
typedef struct tt_s tt_t;
struct tt_s {
    mw_timer_t t;
    int tag;
    void (*action)(tt_t *self);
    tt_t *other;
    uint64_t other_after;
};

#define MAX_LOG 4096

typedef struct {
    mw_timers_t ts;
    int log[MAX_LOG];
    size_t n;
} fx_t;

static fx_t *cur; /* the fixture of the running test, for callbacks */

static void on_timer(mw_timer_t *t)
{
    tt_t *self = t->data;
    if (cur->n == MAX_LOG)
        fail_msg("timer log full");
    cur->log[cur->n++] = self->tag;
    if (self->action != NULL)
        self->action(self);
}

static void tt_init(tt_t *x, int tag)
{
    memset(x, 0, sizeof(*x));
    x->tag = tag;
    mw_timer_init(&x->t, on_timer, x);
}

static int setup_timers(void **state)
{
    fx_t *fx = calloc(1, sizeof(*fx));
    if (fx == NULL)
        return -1;
    mw_timers_init(&fx->ts, 1000);
    cur = fx;
    *state = fx;
    return 0;
}

static int teardown_timers(void **state)
{
    fx_t *fx = *state;
    mw_timers_close(&fx->ts);
    free(fx);
    cur = NULL;
    return 0;
}

static void start(fx_t *fx, tt_t *x, uint64_t after, uint64_t repeat)
{
    assert_int_equal(mw_timer_start(&fx->ts, &x->t, after, repeat), 0);
    assert_true(mw_timer_active(&x->t));
}

static void expect_log(fx_t *fx, const int *want, size_t n)
{
    if (fx->n != n) {
        for (size_t i = 0; i < fx->n; i++)
            print_message("  fired %zu: %d\n", i, fx->log[i]);
        fail_msg("expected %zu timers to fire, got %zu", n, fx->n);
    }
    for (size_t i = 0; i < n; i++)
        if (fx->log[i] != want[i])
            fail_msg("fire %zu: expected timer %d, got %d", i, want[i], fx->log[i]);
}

#define EXPECT(fx, ...)                                                                            \
    do {                                                                                           \
        const int want_[] = {__VA_ARGS__};                                                         \
        expect_log((fx), want_, NELEM(want_));                                                     \
    } while (0)
#define EXPECT_NONE(fx) expect_log((fx), NULL, 0)

static void test_timer_fires_timers_earliest_first(void **state)
{
    fx_t *fx = *state;
    tt_t a, b, c, d;

    tt_init(&a, 1);
    tt_init(&b, 2);
    tt_init(&c, 3);
    tt_init(&d, 4);
    start(fx, &a, 30, 0);
    start(fx, &b, 10, 0);
    start(fx, &c, 20, 0);
    start(fx, &d, 5, 0);
    mw_timers_run(&fx->ts, 1100);
    EXPECT(fx, 4, 2, 3, 1);
    assert_false(mw_timer_active(&a.t));
    assert_false(mw_timer_active(&d.t));
}

static void test_timer_fires_only_timers_that_are_due(void **state)
{
    fx_t *fx = *state;
    tt_t a, b, c;

    tt_init(&a, 1);
    tt_init(&b, 2);
    tt_init(&c, 3);
    start(fx, &a, 10, 0);
    start(fx, &b, 20, 0);
    start(fx, &c, 30, 0);
    mw_timers_run(&fx->ts, 1009);
    EXPECT_NONE(fx);
    mw_timers_run(&fx->ts, 1010); /* due exactly now */
    EXPECT(fx, 1);
    mw_timers_run(&fx->ts, 1025);
    EXPECT(fx, 1, 2);
    assert_true(mw_timer_active(&c.t));
    mw_timers_run(&fx->ts, 1030);
    EXPECT(fx, 1, 2, 3);
}

static void test_timer_fires_ties_in_start_order(void **state)
{
    fx_t *fx = *state;
    tt_t x[20];

    for (int i = 0; i < 20; i++) {
        tt_init(&x[i], i);
        start(fx, &x[i], 10, 0);
    }
    mw_timers_run(&fx->ts, 1010);
    EXPECT(fx, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19);
}

static void test_timer_counts_a_restarted_timer_as_started_last(void **state)
{
    fx_t *fx = *state;
    tt_t a, b, c;

    tt_init(&a, 1);
    tt_init(&b, 2);
    tt_init(&c, 3);
    start(fx, &a, 10, 0);
    start(fx, &b, 10, 0);
    start(fx, &c, 10, 0);
    start(fx, &a, 10, 0); /* restarted: same deadline, now after b and c */
    mw_timers_run(&fx->ts, 1010);
    EXPECT(fx, 2, 3, 1);
}

static void test_timer_restart_reschedules_instead_of_adding(void **state)
{
    fx_t *fx = *state;
    tt_t a;

    tt_init(&a, 1);
    start(fx, &a, 10, 0);
    start(fx, &a, 50, 0);
    mw_timers_run(&fx->ts, 1020);
    EXPECT_NONE(fx);
    assert_int_equal(mw_timers_next(&fx->ts), 30);
    mw_timers_run(&fx->ts, 1050);
    EXPECT(fx, 1);
    mw_timers_run(&fx->ts, 2000);
    EXPECT(fx, 1);
    assert_int_equal(mw_timers_next(&fx->ts), -1);
}

static void test_timer_stop_unschedules_and_is_a_no_op_when_idle(void **state)
{
    fx_t *fx = *state;
    tt_t a, b;

    tt_init(&a, 1);
    tt_init(&b, 2);
    mw_timer_stop(&fx->ts, &a.t); /* never started */
    assert_false(mw_timer_active(&a.t));
    start(fx, &a, 10, 0);
    start(fx, &b, 20, 0);
    mw_timer_stop(&fx->ts, &a.t);
    assert_false(mw_timer_active(&a.t));
    mw_timer_stop(&fx->ts, &a.t); /* twice */
    mw_timers_run(&fx->ts, 1100);
    EXPECT(fx, 2);
}

static void stop_other(tt_t *self)
{
    mw_timer_stop(&cur->ts, &self->other->t);
}

static void stop_self(tt_t *self)
{
    mw_timer_stop(&cur->ts, &self->t);
}

static void test_timer_stopped_from_a_callback_does_not_fire(void **state)
{
    fx_t *fx = *state;
    tt_t a, b, c;

    tt_init(&a, 1);
    tt_init(&b, 2);
    tt_init(&c, 3);
    a.action = stop_other;
    a.other = &b;
    start(fx, &a, 10, 0);
    start(fx, &b, 10, 0); /* due with a, in the same run */
    start(fx, &c, 10, 0);
    mw_timers_run(&fx->ts, 1010);
    EXPECT(fx, 1, 3);
    assert_false(mw_timer_active(&b.t));
}

static void test_timer_repeating_timer_stopped_from_its_own_callback_stops(void **state)
{
    fx_t *fx = *state;
    tt_t a;

    tt_init(&a, 1);
    a.action = stop_self;
    start(fx, &a, 10, 10);
    mw_timers_run(&fx->ts, 1010);
    EXPECT(fx, 1);
    assert_false(mw_timer_active(&a.t));
    mw_timers_run(&fx->ts, 1100);
    EXPECT(fx, 1);
    assert_int_equal(mw_timers_next(&fx->ts), -1);
}

static void test_timer_repeats_every_repeat_ms(void **state)
{
    fx_t *fx = *state;
    tt_t a;

    tt_init(&a, 1);
    start(fx, &a, 5, 10);
    mw_timers_run(&fx->ts, 1005);
    EXPECT(fx, 1);
    assert_true(mw_timer_active(&a.t));
    assert_int_equal(mw_timers_next(&fx->ts), 10);
    mw_timers_run(&fx->ts, 1014);
    EXPECT(fx, 1);
    mw_timers_run(&fx->ts, 1015);
    EXPECT(fx, 1, 1);
    mw_timers_run(&fx->ts, 1027); /* late: the cadence stays 1035, not 1037 */
    EXPECT(fx, 1, 1, 1);
    assert_int_equal(mw_timers_next(&fx->ts), 8);
    mw_timers_run(&fx->ts, 1035);
    EXPECT(fx, 1, 1, 1, 1);
}

static void test_timer_repeating_timer_does_not_pile_up_missed_runs(void **state)
{
    fx_t *fx = *state;
    tt_t a;

    tt_init(&a, 1);
    start(fx, &a, 10, 10);
    mw_timers_run(&fx->ts, 1095); /* nine periods late: one run, not nine */
    EXPECT(fx, 1);
    assert_int_equal(mw_timers_next(&fx->ts), 10);
    mw_timers_run(&fx->ts, 1105);
    EXPECT(fx, 1, 1);
}

static void start_other(tt_t *self)
{
    assert_int_equal(
        mw_timer_start(&cur->ts, &self->other->t, self->other_after, self->other->t.repeat), 0);
}

static void test_timer_started_from_a_callback_does_not_run_in_the_same_run(void **state)
{
    fx_t *fx = *state;
    tt_t a, b, c;

    tt_init(&a, 1);
    tt_init(&b, 2);
    tt_init(&c, 3);
    a.action = start_other;
    a.other = &b;
    a.other_after = 0; /* due at once */
    start(fx, &a, 10, 0);
    start(fx, &c, 20, 0);
    mw_timers_run(&fx->ts, 1020);
    EXPECT(fx, 1, 3); /* c, due before the run, still fires; b waits */
    assert_true(mw_timer_active(&b.t));
    assert_int_equal(mw_timers_next(&fx->ts), 0);
    mw_timers_run(&fx->ts, 1020);
    EXPECT(fx, 1, 3, 2);
}

static void test_timer_restarted_from_its_own_callback_waits_for_a_later_run(void **state)
{
    fx_t *fx = *state;
    tt_t a;

    tt_init(&a, 1);
    a.action = start_other;
    a.other = &a;
    a.other_after = 0;
    start(fx, &a, 10, 0);
    mw_timers_run(&fx->ts, 1010);
    EXPECT(fx, 1);
    mw_timers_run(&fx->ts, 1010);
    EXPECT(fx, 1, 1);
    a.action = NULL;
    mw_timers_run(&fx->ts, 1010);
    EXPECT(fx, 1, 1, 1);
    mw_timers_run(&fx->ts, 1010);
    EXPECT(fx, 1, 1, 1);
}

static void test_timer_next_gives_the_time_to_the_earliest_deadline(void **state)
{
    fx_t *fx = *state;
    tt_t a, b;

    tt_init(&a, 1);
    tt_init(&b, 2);
    assert_int_equal(mw_timers_next(&fx->ts), -1);
    start(fx, &a, 250, 0);
    assert_int_equal(mw_timers_next(&fx->ts), 250);
    start(fx, &b, 40, 0);
    assert_int_equal(mw_timers_next(&fx->ts), 40);
    mw_timers_run(&fx->ts, 1030);
    assert_int_equal(mw_timers_next(&fx->ts), 10);
    mw_timer_stop(&fx->ts, &b.t);
    assert_int_equal(mw_timers_next(&fx->ts), 220);
    mw_timer_stop(&fx->ts, &a.t);
    assert_int_equal(mw_timers_next(&fx->ts), -1);
    start(fx, &a, 0, 0);
    assert_int_equal(mw_timers_next(&fx->ts), 0);
}

static void test_timer_close_leaves_every_timer_inactive(void **state)
{
    fx_t *fx = *state;
    tt_t x[5];

    for (int i = 0; i < 5; i++) {
        tt_init(&x[i], i);
        start(fx, &x[i], (uint64_t)(i + 1) * 10, 0);
    }
    mw_timers_close(&fx->ts);
    for (int i = 0; i < 5; i++)
        assert_false(mw_timer_active(&x[i].t));
    mw_timers_init(&fx->ts, 0);
}

/* Random starts and stops against a reference: fire order is (deadline, start order). */
static void test_timer_heap_keeps_order_through_random_starts_and_stops(void **state)
{
    fx_t *fx = *state;
    enum { N = 600 };
    static tt_t x[N];
    static uint64_t due[N], order[N];
    static int stopped[N];
    uint64_t seq = 0;
    unsigned r = 12345;
    int expected[N];
    size_t nexp = 0;

#define RAND() (r = r * 1103515245u + 12345u, (r >> 8) & 0xffff)
    for (int i = 0; i < N; i++) {
        tt_init(&x[i], i);
        stopped[i] = 0;
    }
    for (int round = 0; round < 3 * N; round++) {
        int i = (int)(RAND() % N);
        if (RAND() % 4 == 0) {
            mw_timer_stop(&fx->ts, &x[i].t);
            stopped[i] = 1;
        } else {
            uint64_t after = RAND() % 50; /* many ties */
            start(fx, &x[i], after, 0);
            due[i] = fx->ts.now + after;
            order[i] = ++seq;
            stopped[i] = 0;
        }
    }
#undef RAND
    /* The expected order: live timers sorted by (due, order). */
    for (int i = 0; i < N; i++)
        if (!stopped[i] && order[i] != 0)
            expected[nexp++] = i;
    for (size_t a = 1; a < nexp; a++) {
        int v = expected[a];
        size_t b = a;
        while (b > 0 && (due[expected[b - 1]] > due[v] ||
                         (due[expected[b - 1]] == due[v] && order[expected[b - 1]] > order[v]))) {
            expected[b] = expected[b - 1];
            b--;
        }
        expected[b] = v;
    }
    {
        uint64_t base = fx->ts.now;
        for (uint64_t t = base; t <= base + 60; t += 7)
            mw_timers_run(&fx->ts, t);
        mw_timers_run(&fx->ts, base + 100);
    }
    expect_log(fx, expected, nexp);
    assert_int_equal(mw_timers_next(&fx->ts), -1);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup_timers, teardown_timers)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_timer_fires_timers_earliest_first),
        T(test_timer_fires_only_timers_that_are_due),
        T(test_timer_fires_ties_in_start_order),
        T(test_timer_counts_a_restarted_timer_as_started_last),
        T(test_timer_restart_reschedules_instead_of_adding),
        T(test_timer_stop_unschedules_and_is_a_no_op_when_idle),
        T(test_timer_stopped_from_a_callback_does_not_fire),
        T(test_timer_repeating_timer_stopped_from_its_own_callback_stops),
        T(test_timer_repeats_every_repeat_ms),
        T(test_timer_repeating_timer_does_not_pile_up_missed_runs),
        T(test_timer_started_from_a_callback_does_not_run_in_the_same_run),
        T(test_timer_restarted_from_its_own_callback_waits_for_a_later_run),
        T(test_timer_next_gives_the_time_to_the_earliest_deadline),
        T(test_timer_close_leaves_every_timer_inactive),
        T(test_timer_heap_keeps_order_through_random_starts_and_stops),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
