/* Unit tests for include/moonwire/history.h: topic history in the node's
 * memory and its bounds (history.size, history.max_topics, history.max_bytes,
 * history.ttl): which history goes first, what is refused, and that the
 * bytes it reports are what it holds.
 */
#include "helpers.h"

#include "frame.h"
#include "history.h"
#include "moonwire/config.h"
#include "moonwire/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The next calls of calloc that fail (the core's too: linked with
 * --wrap=calloc), for memory pressure. */
static int failing_callocs;

void *__real_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size);

void *__wrap_calloc(size_t n, size_t size)
{
    if (failing_callocs > 0) {
        failing_callocs--;
        return NULL;
    }
    return __real_calloc(n, size);
}

typedef struct {
    mw_history_t *h;
    mw_config_t cfg;
    uint64_t now;
} fx_t;

static void quiet(void *ud, mw_log_level_t level, const char *line)
{
    (void)ud;
    (void)level;
    (void)line;
}

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof(*fx));
    if (fx == NULL || mw_config_init(&fx->cfg) != 0 || mw_history_new(&fx->h, "n1") != 0)
        return -1;
    fx->now = 1000;
    mw_log_set_sink(quiet, NULL);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    mw_history_free(fx->h);
    mw_config_close(&fx->cfg);
    mw_log_set_sink(NULL, NULL);
    free(fx);
    mw_frame_pool_drain();
    return 0;
}

/* Publishes len bytes of 'x' to topic as the standalone publish does. Returns
 * mw_history_begin's or mw_history_append's result. */
static int publish(fx_t *fx, const char *topic, int live, size_t len)
{
    uint64_t offset;
    const char *epoch;
    char *payload = malloc(len + 1);
    mw_frame_t *f;
    int r;

    assert_non_null(payload);
    memset(payload, 'x', len);
    r = mw_history_begin(fx->h, topic, strlen(topic), live, &fx->cfg, fx->now, &offset, &epoch);
    if (r == 0) {
        f = mw_frame_new(MW_OP_TEXT, payload, len);
        assert_non_null(f);
        r = mw_history_append(fx->h, topic, strlen(topic), offset, f, &fx->cfg, fx->now);
        mw_frame_unref(f);
    }
    free(payload);
    fx->now++;
    return r;
}

static int kept(fx_t *fx, const char *topic)
{
    return mw_history_epoch(fx->h, topic, strlen(topic))[0] != '\0';
}

static void count_one(void *ud, const mw_frame_t *f)
{
    (void)f;
    (*(size_t *)ud)++;
}

/* Messages kept for topic, and its newest offset. */
static size_t messages(fx_t *fx, const char *topic, uint64_t *last)
{
    size_t n = 0;
    int recovered;
    uint64_t newest;
    mw_history_read(fx->h, topic, strlen(topic), 0, NULL, 1000000, fx->now, &fx->cfg, count_one, &n,
                    last != NULL ? last : &newest, &recovered);
    return n;
}

static void test_keeps_history_size_messages_per_topic(void **state)
{
    fx_t *fx = *state;
    uint64_t last;

    fx->cfg.history_size = 5;
    for (int i = 0; i < 12; i++)
        assert_rc(publish(fx, "a", 1, 10), 0);
    assert_int_equal(messages(fx, "a", &last), 5);
    assert_int_equal(last, 12);
}

static void test_drops_the_least_recently_used_history_of_an_empty_topic_at_max_topics(void **state)
{
    fx_t *fx = *state;
    mw_history_stats_t st;

    fx->cfg.history_max_topics = 3;
    assert_rc(publish(fx, "a", 0, 10), 0);
    assert_rc(publish(fx, "b", 0, 10), 0);
    assert_rc(publish(fx, "c", 0, 10), 0);
    assert_rc(publish(fx, "a", 0, 10), 0); /* a is now the most recently used */
    assert_rc(publish(fx, "d", 0, 10), 0);
    assert_false(kept(fx, "b"));
    assert_true(kept(fx, "a") && kept(fx, "c") && kept(fx, "d"));
    assert_int_equal(mw_history_topics(fx->h), 3);
    mw_history_take_stats(fx->h, &st);
    assert_int_equal(st.dropped_bound, 1);
    assert_int_equal(st.refused_topics, 0);
}

static void
test_keeps_the_history_of_topics_with_members_and_refuses_a_new_topic_past_them(void **state)
{
    fx_t *fx = *state;
    mw_history_stats_t st;
    size_t bytes;

    fx->cfg.history_max_topics = 2;
    assert_rc(publish(fx, "a", 1, 10), 0);
    assert_rc(publish(fx, "b", 0, 10), 0);
    assert_rc(publish(fx, "c", 1, 10), 0); /* b has no members: it goes, though a is older */
    assert_true(kept(fx, "a") && kept(fx, "c"));
    assert_false(kept(fx, "b"));
    bytes = mw_history_bytes(fx->h);
    assert_rc(publish(fx, "d", 1, 10), MW_EHISTTOPICS);
    assert_false(kept(fx, "d"));
    assert_int_equal(mw_history_bytes(fx->h), bytes);
    assert_rc(publish(fx, "a", 1, 10), 0); /* topics that have history go on */
    /* Once a topic loses its last member its history may go. */
    mw_history_set_live(fx->h, "c", 1, 0);
    assert_rc(publish(fx, "d", 1, 10), 0);
    assert_false(kept(fx, "c"));
    mw_history_take_stats(fx->h, &st);
    assert_int_equal(st.refused_topics, 1);
    assert_int_equal(st.dropped_bound, 2);
}

static void
test_stays_within_max_bytes_dropping_empty_topics_first_then_the_oldest_messages(void **state)
{
    fx_t *fx = *state;
    mw_history_stats_t st;
    uint64_t last;
    char name[16];

    fx->cfg.history_max_bytes = 65536;
    fx->cfg.history_size = 1000;
    for (int i = 0; i < 10; i++) {
        snprintf(name, sizeof(name), "idle%d", i);
        assert_rc(publish(fx, name, 0, 1000), 0);
    }
    for (int i = 0; i < 200; i++) {
        assert_rc(publish(fx, i % 2 ? "live1" : "live2", 1, 1000), 0);
        assert_true(mw_history_bytes(fx->h) <= 65536);
    }
    for (int i = 0; i < 10; i++) {
        snprintf(name, sizeof(name), "idle%d", i);
        assert_false(kept(fx, name));
    }
    /* What is left is the newest messages of the topics with members. */
    assert_true(messages(fx, "live1", &last) > 20);
    assert_int_equal(last, 100);
    assert_true(messages(fx, "live2", &last) > 20);
    assert_int_equal(last, 100);
    assert_true(mw_history_bytes(fx->h) > 65536 - 2 * 1100);
    mw_history_take_stats(fx->h, &st);
    assert_int_equal(st.dropped_bound, 10);
    assert_true(st.trimmed > 100);
    assert_int_equal(st.refused_size, 0);
}

static void test_refuses_a_message_larger_than_max_bytes_and_changes_nothing(void **state)
{
    fx_t *fx = *state;
    mw_history_stats_t st;
    uint64_t last;
    size_t bytes;

    fx->cfg.history_max_bytes = 65536;
    assert_rc(publish(fx, "a", 1, 100), 0);
    bytes = mw_history_bytes(fx->h);
    assert_rc(publish(fx, "a", 1, 70000), MW_EHISTSIZE);
    assert_rc(publish(fx, "new", 1, 70000), MW_EHISTSIZE);
    assert_false(kept(fx, "new")); /* a topic that never had a message is not kept */
    assert_int_equal(messages(fx, "a", &last), 1);
    assert_int_equal(last, 1);
    assert_int_equal(mw_history_bytes(fx->h), bytes);
    mw_history_take_stats(fx->h, &st);
    assert_int_equal(st.refused_size, 2);
}

static void test_a_ring_grows_with_its_messages_so_an_abandoned_topic_costs_little(void **state)
{
    fx_t *fx = *state;
    char name[16];

    fx->cfg.history_size = 200;
    fx->cfg.history_max_bytes = 1u << 30;
    for (int i = 0; i < 1000; i++) {
        snprintf(name, sizeof(name), "room:%d", i);
        assert_rc(publish(fx, name, 0, 60), 0); /* a join, */
        assert_rc(publish(fx, name, 0, 60), 0); /* then a leave */
    }
    /* A ring of 200 slots alone would be 1600 bytes a topic. */
    assert_true(mw_history_bytes(fx->h) < 1000 * 500);
}

static void test_bytes_are_what_it_holds_and_come_back_to_zero(void **state)
{
    fx_t *fx = *state;
    char name[16];

    fx->cfg.history_size = 7;
    for (int i = 0; i < 300; i++) {
        snprintf(name, sizeof(name), "t%d", i % 37);
        assert_rc(publish(fx, name, i % 3 == 0, (size_t)(i * 13 % 900)), 0);
    }
    for (int i = 0; i < 37; i++) {
        snprintf(name, sizeof(name), "t%d", i);
        mw_history_set_live(fx->h, name, strlen(name), 0);
    }
    assert_true(mw_history_bytes(fx->h) > 0);
    assert_true(mw_history_drop_idle(fx->h) > 0);
    assert_int_equal(mw_history_bytes(fx->h), 0);
    assert_int_equal(mw_history_topics(fx->h), 0);
}

static void test_drop_idle_gives_back_only_the_history_of_topics_without_members(void **state)
{
    fx_t *fx = *state;
    mw_history_stats_t st;

    assert_rc(publish(fx, "live", 1, 10), 0);
    assert_rc(publish(fx, "idle1", 0, 10), 0);
    assert_rc(publish(fx, "idle2", 0, 10), 0);
    assert_true(mw_history_drop_idle(fx->h) > 0);
    assert_true(kept(fx, "live"));
    assert_false(kept(fx, "idle1") || kept(fx, "idle2"));
    mw_history_take_stats(fx->h, &st);
    assert_int_equal(st.dropped_memory, 2);
}

static void test_out_of_memory_it_gives_back_the_history_of_empty_topics_and_tries_again(
    void **state)
{
    fx_t *fx = *state;
    mw_history_stats_t st;

    assert_rc(publish(fx, "live", 1, 10), 0);
    assert_rc(publish(fx, "idle1", 0, 10), 0);
    assert_rc(publish(fx, "idle2", 0, 10), 0);
    failing_callocs = 1; /* the new topic's entry, the first time */
    assert_rc(publish(fx, "new", 1, 10), 0);
    assert_int_equal(failing_callocs, 0);
    assert_true(kept(fx, "new") && kept(fx, "live"));
    assert_false(kept(fx, "idle1") || kept(fx, "idle2"));
    mw_history_take_stats(fx->h, &st);
    assert_int_equal(st.dropped_memory, 2);
    /* With nothing left to give back, it says so and keeps what it has. */
    assert_rc(publish(fx, "idle3", 0, 10), 0);
    failing_callocs = 2;
    assert_rc(publish(fx, "other", 1, 10), MW_ENOMEM);
    failing_callocs = 0;
    assert_false(kept(fx, "other"));
    assert_true(kept(fx, "new") && kept(fx, "live"));
    assert_int_equal(mw_history_topics(fx->h), 2);
}

static void test_expires_a_topic_ttl_after_its_last_message_or_its_last_member_left(void **state)
{
    fx_t *fx = *state;
    mw_history_stats_t st;

    fx->cfg.history_ttl = 1000;
    fx->now = 10000;
    assert_rc(publish(fx, "left", 1, 10), 0);
    assert_rc(publish(fx, "quiet", 1, 10), 0);
    mw_history_expire(fx->h, &fx->cfg, 10900);
    mw_history_set_live(fx->h, "left", 4, 0); /* its last member left at 10900 */
    mw_history_expire(fx->h, &fx->cfg, 11500);
    assert_false(kept(fx, "quiet")); /* silent with members for more than the ttl */
    assert_true(kept(fx, "left"));
    mw_history_expire(fx->h, &fx->cfg, 11901);
    assert_false(kept(fx, "left"));
    assert_int_equal(mw_history_bytes(fx->h), 0);
    mw_history_take_stats(fx->h, &st);
    assert_int_equal(st.dropped_ttl, 2);
}

static void test_a_topic_that_starts_over_gets_a_new_epoch(void **state)
{
    fx_t *fx = *state;
    char first[64];

    fx->cfg.history_max_topics = 1;
    assert_rc(publish(fx, "a", 0, 10), 0);
    snprintf(first, sizeof(first), "%s", mw_history_epoch(fx->h, "a", 1));
    assert_rc(publish(fx, "b", 0, 10), 0); /* a's history goes */
    assert_rc(publish(fx, "a", 0, 10), 0);
    assert_string_not_equal(mw_history_epoch(fx->h, "a", 1), first);
    assert_int_equal(messages(fx, "a", NULL), 1);
}

static void test_bounds_lowered_by_a_reload_apply_at_the_next_sweep(void **state)
{
    fx_t *fx = *state;
    char name[16];

    for (int i = 0; i < 50; i++) {
        snprintf(name, sizeof(name), "t%d", i);
        assert_rc(publish(fx, name, i < 5, 2000), 0);
    }
    fx->cfg.history_max_topics = 20;
    fx->cfg.history_max_bytes = 65536;
    mw_history_expire(fx->h, &fx->cfg, fx->now);
    assert_true(mw_history_topics(fx->h) <= 20);
    assert_true(mw_history_bytes(fx->h) <= 65536);
    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof(name), "t%d", i);
        assert_true(kept(fx, name)); /* those with members stay */
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_keeps_history_size_messages_per_topic, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_drops_the_least_recently_used_history_of_an_empty_topic_at_max_topics, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_keeps_the_history_of_topics_with_members_and_refuses_a_new_topic_past_them, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_stays_within_max_bytes_dropping_empty_topics_first_then_the_oldest_messages, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_refuses_a_message_larger_than_max_bytes_and_changes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_ring_grows_with_its_messages_so_an_abandoned_topic_costs_little, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_bytes_are_what_it_holds_and_come_back_to_zero, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_drop_idle_gives_back_only_the_history_of_topics_without_members, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_out_of_memory_it_gives_back_the_history_of_empty_topics_and_tries_again, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_expires_a_topic_ttl_after_its_last_message_or_its_last_member_left, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_a_topic_that_starts_over_gets_a_new_epoch, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bounds_lowered_by_a_reload_apply_at_the_next_sweep,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
