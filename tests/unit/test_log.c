/* Unit tests for include/moonwire/log.h: the gate that keeps a condition a
 * client can repeat at will from flooding the log. */
#include "helpers.h"

#include "moonwire/log.h"

#include <string.h>
#include <time.h>

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void
test_a_gate_passes_the_first_event_then_one_per_interval_with_the_count_held_back(void **state)
{
    mw_log_gate_t g;
    uint64_t held_back = 99;
    (void)state;

    memset(&g, 0, sizeof(g));
    assert_true(mw_log_gate_pass(&g, 50, &held_back));
    assert_int_equal(held_back, 0);
    for (int i = 0; i < 5; i++)
        assert_false(mw_log_gate_pass(&g, 50, &held_back));
    sleep_ms(120); /* well past the interval */
    assert_true(mw_log_gate_pass(&g, 50, &held_back));
    assert_int_equal(held_back, 5);
    assert_false(mw_log_gate_pass(&g, 50, &held_back));
}

static void test_held_back_says_nothing_for_none_and_the_count_otherwise(void **state)
{
    char buf[64];
    (void)state;

    assert_string_equal(mw_log_held_back(0, buf, sizeof(buf)), "");
    assert_string_equal(mw_log_held_back(17, buf, sizeof(buf)),
                        "; 17 more since the last such line");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            test_a_gate_passes_the_first_event_then_one_per_interval_with_the_count_held_back),
        cmocka_unit_test(test_held_back_says_nothing_for_none_and_the_count_otherwise),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
