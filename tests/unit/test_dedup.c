/* Unit tests for include/moonwire/dedup.h: an envelope sent again after a
 * lost reply is delivered once, per origin, within bounds. */
#include "helpers.h"

#include "dedup.h"

#include <stdio.h>
#include <string.h>

#define O(s) s, strlen(s)

static void test_dedup_delivers_new_numbers_and_drops_those_seen(void **state)
{
    mw_dedup_t d;

    assert_rc(mw_dedup_init(&d, 16), 0);
    for (uint64_t s = 1; s <= 5; s++)
        assert_int_equal(mw_dedup_check(&d, O("a.x1"), s, 10), 1);
    /* The sender lost its connection after 3 and sends 4 and 5 again, then 6. */
    assert_int_equal(mw_dedup_check(&d, O("a.x1"), 4, 20), 0);
    assert_int_equal(mw_dedup_check(&d, O("a.x1"), 5, 20), 0);
    assert_int_equal(mw_dedup_check(&d, O("a.x1"), 6, 20), 1);
    /* A gap (envelopes of channels this node is not on) is fine. */
    assert_int_equal(mw_dedup_check(&d, O("a.x1"), 90, 20), 1);
    assert_int_equal(mw_dedup_check(&d, O("a.x1"), 89, 20), 0);
    /* Each origin counts on its own; a restarted node is a new origin. */
    assert_int_equal(mw_dedup_check(&d, O("b.y2"), 1, 20), 1);
    assert_int_equal(mw_dedup_check(&d, O("a.x2"), 1, 20), 1);
    assert_int_equal(mw_dedup_check(&d, O("a.x"), 1, 20), 1);
    /* Not numbered: always delivered. */
    assert_int_equal(mw_dedup_check(&d, O("a.x1"), 0, 20), 1);
    assert_int_equal(mw_dedup_check(&d, O("a.x1"), 0, 20), 1);
    mw_dedup_free(&d);
}

static void test_dedup_forgets_silent_origins_and_keeps_at_most_max_origins(void **state)
{
    mw_dedup_t d;
    char name[16];

    assert_rc(mw_dedup_init(&d, 4), 0);
    assert_int_equal(mw_dedup_check(&d, O("old"), 7, 1000), 1);
    assert_int_equal(mw_dedup_check(&d, O("new"), 7, 5000), 1);
    assert_int_equal(mw_dedup_expire(&d, 6000, 4500), 1);
    assert_int_equal(d.origins.count, 1);
    assert_int_equal(mw_dedup_check(&d, O("old"), 7, 6000), 1); /* forgotten */
    assert_int_equal(mw_dedup_check(&d, O("new"), 7, 6000), 0);
    /* Hearing an origin keeps it: "new" is the most recently heard here. */
    for (int i = 0; i < 20; i++) {
        snprintf(name, sizeof(name), "n%d", i);
        assert_int_equal(mw_dedup_check(&d, O(name), 1, 7000 + i), 1);
        assert_int_equal(mw_dedup_check(&d, O("new"), 8 + i, 7000 + i), 1);
        assert_true(d.origins.count <= 4);
    }
    assert_int_equal(mw_dedup_check(&d, O("new"), 8, 8000), 0);
    assert_int_equal(mw_dedup_check(&d, O("n19"), 1, 8000), 0);
    assert_int_equal(mw_dedup_check(&d, O("n0"), 1, 8000), 1); /* pushed out long ago */
    assert_int_equal(d.origins.count, 4);
    assert_int_equal(mw_dedup_expire(&d, 100000, 1000), 4);
    assert_int_equal(d.origins.count, 0);
    mw_dedup_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dedup_delivers_new_numbers_and_drops_those_seen),
        cmocka_unit_test(test_dedup_forgets_silent_origins_and_keeps_at_most_max_origins),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
