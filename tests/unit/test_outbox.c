/* Unit tests for core/outbox.h: order, the in-flight prefix and its rewind,
 * the byte bound and the age bound, and answered items kept for a replay. */
#include "helpers.h"

#include "outbox.h"

#include <string.h>

typedef struct {
    mw_outbox_item_t ob;
    int id;
    int dropped;
} item_t;

static item_t items[8];

static void reset(size_t size)
{
    memset(items, 0, sizeof(items));
    for (size_t i = 0; i < NELEM(items); i++) {
        items[i].id = (int)i;
        items[i].ob.size = size;
    }
}

static int id_of(mw_outbox_item_t *it)
{
    return it == NULL ? -1 : MW_CONTAINER_OF(it, item_t, ob)->id;
}

static void on_drop(mw_outbox_item_t *it, void *ud)
{
    int *n = ud;
    MW_CONTAINER_OF(it, item_t, ob)->dropped = 1;
    (*n)++;
}

/* Sends the next unsent item; returns its id. */
static int send_next(mw_outbox_t *ob)
{
    mw_outbox_item_t *it = mw_outbox_peek(ob);
    if (it != NULL)
        mw_outbox_sent(ob, it);
    return id_of(it);
}

static void test_outbox_hands_out_items_in_the_order_they_came(void **state)
{
    mw_outbox_t ob;

    reset(10);
    mw_outbox_init(&ob, 1000, 60000);
    assert_null(mw_outbox_peek(&ob));
    for (int i = 0; i < 3; i++)
        assert_rc(mw_outbox_push(&ob, &items[i].ob, 100), 0);
    assert_int_equal(ob.count, 3);
    assert_int_equal(ob.bytes, 30);
    assert_int_equal(mw_outbox_backlog(&ob), 3);
    assert_int_equal(send_next(&ob), 0);
    assert_int_equal(send_next(&ob), 1);
    assert_int_equal(mw_outbox_backlog(&ob), 1);
    assert_int_equal(ob.nsent, 2);
    /* A late one queues behind the unsent one. */
    assert_rc(mw_outbox_push(&ob, &items[3].ob, 110), 0);
    assert_int_equal(send_next(&ob), 2);
    assert_int_equal(send_next(&ob), 3);
    assert_int_equal(send_next(&ob), -1);
    assert_int_equal(mw_outbox_backlog(&ob), 0);
    /* Replies, in order. */
    for (int i = 0; i < 4; i++)
        mw_outbox_remove(&ob, &items[i].ob);
    assert_int_equal(ob.count, 0);
    assert_int_equal(ob.bytes, 0);
    assert_int_equal(ob.nsent, 0);
    assert_int_equal(mw_outbox_oldest(&ob), 0);
    /* Empty again: a new item is the next to go. */
    assert_rc(mw_outbox_push(&ob, &items[4].ob, 120), 0);
    assert_int_equal(send_next(&ob), 4);
}

static void test_outbox_sends_again_what_was_in_flight_when_the_connection_went(void **state)
{
    mw_outbox_t ob;

    reset(10);
    mw_outbox_init(&ob, 1000, 60000);
    for (int i = 0; i < 5; i++)
        assert_rc(mw_outbox_push(&ob, &items[i].ob, 100), 0);
    assert_int_equal(send_next(&ob), 0);
    assert_int_equal(send_next(&ob), 1);
    assert_int_equal(send_next(&ob), 2);
    mw_outbox_remove(&ob, &items[0].ob); /* the first reply came */
    assert_int_equal(mw_outbox_rewind(&ob, 100, NULL), 2);
    assert_int_equal(ob.nsent, 0);
    assert_int_equal(mw_outbox_backlog(&ob), 4);
    assert_false(items[1].ob.sent);
    /* Same order as before: 1 and 2 first, then the ones never sent. */
    for (int i = 1; i < 5; i++)
        assert_int_equal(send_next(&ob), i);
    assert_int_equal(mw_outbox_rewind(&ob, 100, NULL), 4);
    assert_int_equal(mw_outbox_rewind(&ob, 100, NULL), 0);
    assert_int_equal(send_next(&ob), 1);
}

static void test_outbox_refuses_an_item_past_the_byte_bound_and_counts_items_in_flight(void **state)
{
    mw_outbox_t ob;

    reset(40);
    mw_outbox_init(&ob, 100, 60000);
    assert_rc(mw_outbox_push(&ob, &items[0].ob, 1), 0);
    assert_rc(mw_outbox_push(&ob, &items[1].ob, 1), 0);
    assert_rc(mw_outbox_push(&ob, &items[2].ob, 1), MW_ELIMIT);
    assert_int_equal(ob.count, 2);
    assert_int_equal(send_next(&ob), 0);
    assert_int_equal(send_next(&ob), 1);
    assert_rc(mw_outbox_push(&ob, &items[2].ob, 1), MW_ELIMIT); /* in flight still counts */
    mw_outbox_remove(&ob, &items[0].ob);
    assert_rc(mw_outbox_push(&ob, &items[2].ob, 1), 0);
    assert_int_equal(ob.bytes, 80);
    /* An item bigger than the bound never fits, even alone. */
    items[3].ob.size = 101;
    mw_outbox_remove(&ob, &items[1].ob);
    mw_outbox_remove(&ob, &items[2].ob);
    assert_rc(mw_outbox_push(&ob, &items[3].ob, 1), MW_ELIMIT);
    items[3].ob.size = 100;
    assert_rc(mw_outbox_push(&ob, &items[3].ob, 1), 0);
}

static void test_outbox_drops_unsent_items_older_than_the_age_bound_but_not_those_in_flight(void **state)
{
    mw_outbox_t ob;
    int dropped = 0;

    reset(10);
    mw_outbox_init(&ob, 1000, 5000);
    assert_rc(mw_outbox_push(&ob, &items[0].ob, 1000), 0);
    assert_rc(mw_outbox_push(&ob, &items[1].ob, 2000), 0);
    assert_rc(mw_outbox_push(&ob, &items[2].ob, 3000), 0);
    assert_rc(mw_outbox_push(&ob, &items[3].ob, 9000), 0);
    assert_int_equal(mw_outbox_oldest(&ob), 1000);
    assert_int_equal(send_next(&ob), 0); /* in flight: never dropped for its age */
    assert_int_equal(mw_outbox_expire(&ob, 8000, on_drop, &dropped), 1);
    assert_int_equal(dropped, 1);
    assert_true(items[1].dropped);
    assert_false(items[0].dropped);
    assert_false(items[2].dropped); /* exactly 5000 ms: still within the bound */
    assert_int_equal(send_next(&ob), 2);
    assert_int_equal(mw_outbox_rewind(&ob, 100, NULL), 2);
    assert_int_equal(mw_outbox_expire(&ob, 20000, on_drop, &dropped), 3);
    assert_int_equal(dropped, 4);
    assert_int_equal(ob.count, 0);
    assert_int_equal(ob.bytes, 0);
    assert_null(mw_outbox_peek(&ob));
}

static void test_outbox_clear_gives_back_every_item(void **state)
{
    mw_outbox_t ob;
    int dropped = 0;

    reset(10);
    mw_outbox_init(&ob, 1000, 5000);
    for (int i = 0; i < 4; i++)
        assert_rc(mw_outbox_push(&ob, &items[i].ob, 1), 0);
    send_next(&ob);
    assert_int_equal(mw_outbox_clear(&ob, on_drop, &dropped), 4);
    assert_int_equal(dropped, 4);
    assert_int_equal(ob.count, 0);
    assert_int_equal(ob.nsent, 0);
    assert_null(mw_outbox_peek(&ob));
}

static void test_outbox_removes_an_unsent_item_from_the_middle(void **state)
{
    mw_outbox_t ob;

    reset(10);
    mw_outbox_init(&ob, 1000, 5000);
    for (int i = 0; i < 4; i++)
        assert_rc(mw_outbox_push(&ob, &items[i].ob, 1), 0);
    assert_int_equal(send_next(&ob), 0);
    mw_outbox_remove(&ob, &items[1].ob); /* the next to go */
    assert_int_equal(send_next(&ob), 2);
    mw_outbox_remove(&ob, &items[3].ob);
    assert_int_equal(send_next(&ob), -1);
    assert_int_equal(ob.count, 2);
    assert_int_equal(ob.nsent, 2);
}

static void test_outbox_sends_again_first_what_was_answered_in_the_replay_window(void **state)
{
    mw_outbox_t ob;
    int forgot = 0;
    size_t replayed = 99;

    reset(10);
    mw_outbox_init(&ob, 1000, 60000);
    mw_outbox_keep(&ob, 500, on_drop, &forgot);
    for (int i = 0; i < 5; i++)
        assert_rc(mw_outbox_push(&ob, &items[i].ob, 100), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(send_next(&ob), i);
    mw_outbox_answered(&ob, &items[0].ob, 1000); /* too old by the loss at 1600 */
    mw_outbox_answered(&ob, &items[1].ob, 1200);
    mw_outbox_answered(&ob, &items[2].ob, 1300);
    /* Kept ones are not waiting: neither counted nor in the way. */
    assert_int_equal(ob.count, 2);
    assert_int_equal(ob.bytes, 20);
    assert_int_equal(ob.nkept, 3);
    assert_int_equal(mw_outbox_backlog(&ob), 1);
    assert_int_equal(mw_outbox_rewind(&ob, 1600, &replayed), 1);
    assert_int_equal(replayed, 2);
    assert_int_equal(forgot, 1);
    assert_true(items[0].dropped);
    assert_int_equal(ob.nkept, 0);
    assert_int_equal(ob.count, 4);
    assert_int_equal(ob.bytes, 40);
    assert_int_equal(ob.nreplay, 2);
    assert_int_equal(ob.replay_bytes, 20);
    /* The answered ones first, in their order, then the rest as before. */
    for (int i = 1; i < 5; i++)
        assert_int_equal(send_next(&ob), i);
    assert_true(items[1].ob.replay);
    assert_true(items[2].ob.replay);
    assert_false(items[3].ob.replay);
    assert_int_equal(send_next(&ob), -1);
    mw_outbox_answered(&ob, &items[1].ob, 1700); /* a replay answered: kept again */
    assert_int_equal(ob.nreplay, 1);
    assert_int_equal(ob.replay_bytes, 10);
    assert_int_equal(ob.nkept, 1);
}

static void test_outbox_kept_items_give_way_to_new_ones_and_age_out(void **state)
{
    mw_outbox_t ob;
    int forgot = 0;
    size_t replayed = 99;

    reset(40);
    mw_outbox_init(&ob, 100, 60000);
    mw_outbox_keep(&ob, 500, on_drop, &forgot);
    assert_rc(mw_outbox_push(&ob, &items[0].ob, 1), 0);
    assert_rc(mw_outbox_push(&ob, &items[1].ob, 1), 0);
    send_next(&ob);
    send_next(&ob);
    mw_outbox_answered(&ob, &items[0].ob, 10);
    mw_outbox_answered(&ob, &items[1].ob, 20);
    assert_int_equal(ob.kept_bytes, 80);
    /* A new item is never refused for kept ones: the oldest goes. */
    assert_rc(mw_outbox_push(&ob, &items[2].ob, 30), 0);
    assert_int_equal(forgot, 1);
    assert_true(items[0].dropped);
    assert_int_equal(ob.nkept, 1);
    assert_rc(mw_outbox_push(&ob, &items[3].ob, 40), 0);
    assert_int_equal(forgot, 2);
    assert_int_equal(ob.nkept, 0);
    assert_rc(mw_outbox_push(&ob, &items[4].ob, 50), MW_ELIMIT);
    /* Answered long before the loss: nothing comes back. */
    send_next(&ob);
    mw_outbox_answered(&ob, &items[2].ob, 60);
    assert_int_equal(mw_outbox_rewind(&ob, 561, &replayed), 0);
    assert_int_equal(replayed, 0);
    assert_int_equal(forgot, 3);
    /* Keeping nothing: an answer forgets the item at once. */
    ob.keep = 0;
    send_next(&ob);
    mw_outbox_answered(&ob, &items[3].ob, 600);
    assert_int_equal(forgot, 4);
    assert_int_equal(ob.count, 0);
    assert_int_equal(ob.nkept, 0);
}

static void test_outbox_unsent_replays_give_way_to_new_items(void **state)
{
    mw_outbox_t ob;
    int forgot = 0;
    size_t replayed = 0;

    reset(40);
    mw_outbox_init(&ob, 100, 60000);
    mw_outbox_keep(&ob, 500, on_drop, &forgot);
    assert_rc(mw_outbox_push(&ob, &items[0].ob, 1), 0);
    assert_rc(mw_outbox_push(&ob, &items[1].ob, 1), 0);
    send_next(&ob);
    send_next(&ob);
    mw_outbox_answered(&ob, &items[0].ob, 10);
    mw_outbox_answered(&ob, &items[1].ob, 20);
    mw_outbox_rewind(&ob, 30, &replayed);
    assert_int_equal(replayed, 2);
    assert_int_equal(ob.bytes, 80);
    assert_rc(mw_outbox_push(&ob, &items[2].ob, 40), 0); /* the first replay goes */
    assert_int_equal(forgot, 1);
    assert_true(items[0].dropped);
    assert_false(items[2].ob.replay);
    assert_int_equal(send_next(&ob), 1); /* in flight now: it stays */
    assert_rc(mw_outbox_push(&ob, &items[3].ob, 50), MW_ELIMIT);
    assert_int_equal(forgot, 1);
    assert_int_equal(ob.count, 2);
}

static void test_outbox_clear_forgets_the_kept_items_too(void **state)
{
    mw_outbox_t ob;
    int forgot = 0, dropped = 0;

    reset(10);
    mw_outbox_init(&ob, 1000, 5000);
    mw_outbox_keep(&ob, 500, on_drop, &forgot);
    for (int i = 0; i < 3; i++)
        assert_rc(mw_outbox_push(&ob, &items[i].ob, 1), 0);
    send_next(&ob);
    mw_outbox_answered(&ob, &items[0].ob, 2);
    assert_int_equal(mw_outbox_clear(&ob, on_drop, &dropped), 2);
    assert_int_equal(dropped, 2);
    assert_int_equal(forgot, 1);
    assert_int_equal(ob.nkept, 0);
    assert_int_equal(ob.kept_bytes, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_outbox_hands_out_items_in_the_order_they_came),
        cmocka_unit_test(test_outbox_sends_again_what_was_in_flight_when_the_connection_went),
        cmocka_unit_test(test_outbox_refuses_an_item_past_the_byte_bound_and_counts_items_in_flight),
        cmocka_unit_test(
            test_outbox_drops_unsent_items_older_than_the_age_bound_but_not_those_in_flight),
        cmocka_unit_test(test_outbox_clear_gives_back_every_item),
        cmocka_unit_test(test_outbox_removes_an_unsent_item_from_the_middle),
        cmocka_unit_test(test_outbox_sends_again_first_what_was_answered_in_the_replay_window),
        cmocka_unit_test(test_outbox_kept_items_give_way_to_new_ones_and_age_out),
        cmocka_unit_test(test_outbox_unsent_replays_give_way_to_new_items),
        cmocka_unit_test(test_outbox_clear_forgets_the_kept_items_too),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
