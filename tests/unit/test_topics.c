/* Unit tests for include/moonwire/topics.h: the bounds on topics and on
 * subscriptions per connection, what a refusal counts and logs, and what
 * history learns about a topic's members.
 *
 * Connections are zeroed mw_conn_t structs with a serial, an empty list of
 * subscriptions and what connections share (its ids, for the id a log line
 * names); nothing here sends, so no transport is needed.
 */
#include "helpers.h"

#include "conn.h"
#include "history.h"
#include "topics.h"
#include "moonwire/log.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    mw_ids_t ids;     /* for ids in log lines */
    mw_conns_t shared; /* what the connections share: only its ids are read */
    mw_topics_t ts;
    mw_conn_t conns[4];
    char lines[16][256]; /* warn lines logged, the first 16 */
    size_t nlines;
} fx_t;

static void on_line(void *ud, mw_log_level_t level, const char *line)
{
    fx_t *fx = ud;
    if (level == MW_LOG_WARN && fx->nlines < 16)
        snprintf(fx->lines[fx->nlines], sizeof(fx->lines[0]), "%s", line);
    if (level == MW_LOG_WARN)
        fx->nlines++;
}

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof(*fx));
    if (fx == NULL || mw_topics_init(&fx->ts) != 0)
        return -1;
    mw_ids_init(&fx->ids, "n1", "x");
    fx->shared.ids = &fx->ids;
    for (size_t i = 0; i < NELEM(fx->conns); i++) {
        fx->conns[i].conns = &fx->shared;
        fx->conns[i].serial = i + 1;
        mw_list_init(&fx->conns[i].subs);
        fx->conns[i].addr.in4.sin_family = AF_INET;
        fx->conns[i].addr.in4.sin_addr.s_addr = htonl(0x7f000001);
    }
    mw_log_set_sink(on_line, fx);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    mw_log_set_sink(NULL, NULL);
    for (size_t i = 0; i < NELEM(fx->conns); i++)
        mw_topics_drop_conn(&fx->ts, &fx->conns[i]);
    mw_topics_close(&fx->ts);
    free(fx);
    return 0;
}

static int sub(fx_t *fx, int conn, const char *topic)
{
    return mw_topics_subscribe(&fx->ts, &fx->conns[conn], topic, strlen(topic));
}

static int unsub(fx_t *fx, int conn, const char *topic)
{
    return mw_topics_unsubscribe(&fx->ts, &fx->conns[conn], topic, strlen(topic));
}

static void test_refuses_a_new_topic_past_max_topics_but_not_an_existing_one(void **state)
{
    fx_t *fx = *state;
    mw_topics_stats_t st;

    fx->ts.max_topics = 3;
    assert_rc(sub(fx, 0, "a"), 1);
    assert_rc(sub(fx, 0, "b"), 1);
    assert_rc(sub(fx, 0, "c"), 1);
    assert_rc(sub(fx, 0, "d"), MW_ETOPICS);
    assert_rc(sub(fx, 1, "d"), MW_ETOPICS);
    assert_null(mw_topics_find(&fx->ts, "d", 1));
    /* Joining a topic that exists makes no new one. */
    assert_rc(sub(fx, 1, "a"), 1);
    assert_rc(sub(fx, 0, "a"), 0);
    assert_int_equal(mw_topics_count(&fx->ts, "a", 1), 2);
    /* A topic that loses its last member makes room. */
    assert_rc(unsub(fx, 0, "c"), 1);
    assert_rc(sub(fx, 1, "d"), 1);
    assert_int_equal(fx->ts.topics.count, 3);
    mw_topics_take_stats(&fx->ts, &st);
    assert_int_equal(st.refused_topics, 2);
    assert_int_equal(st.refused_subs, 0);
    mw_topics_take_stats(&fx->ts, &st);
    assert_int_equal(st.refused_topics, 0); /* counted once */
}

static void test_refuses_a_connection_past_max_subscriptions(void **state)
{
    fx_t *fx = *state;
    mw_topics_stats_t st;

    fx->ts.max_subs = 2;
    assert_rc(sub(fx, 0, "a"), 1);
    assert_rc(sub(fx, 0, "b"), 1);
    assert_rc(sub(fx, 0, "c"), MW_ESUBS);
    assert_rc(sub(fx, 0, "a"), 0); /* already in it: not a new subscription */
    assert_int_equal(fx->conns[0].nsubs, 2);
    /* Another connection has its own count. */
    assert_rc(sub(fx, 1, "c"), 1);
    assert_rc(sub(fx, 1, "a"), 1);
    assert_rc(unsub(fx, 0, "b"), 1);
    assert_int_equal(fx->conns[0].nsubs, 1);
    assert_rc(sub(fx, 0, "c"), 1);
    mw_topics_drop_conn(&fx->ts, &fx->conns[0]);
    assert_int_equal(fx->conns[0].nsubs, 0);
    mw_topics_take_stats(&fx->ts, &st);
    assert_int_equal(st.refused_subs, 1);
    assert_int_equal(st.refused_topics, 0);
}

static void test_the_connection_bound_is_checked_before_the_node_bound(void **state)
{
    fx_t *fx = *state;

    fx->ts.max_topics = 1;
    fx->ts.max_subs = 1;
    assert_rc(sub(fx, 0, "a"), 1);
    assert_rc(sub(fx, 0, "b"), MW_ESUBS);
    assert_rc(sub(fx, 1, "b"), MW_ETOPICS);
}

static void test_logs_refusals_at_most_once_a_second_with_the_count_held_back(void **state)
{
    fx_t *fx = *state;

    fx->ts.max_topics = 1;
    assert_rc(sub(fx, 0, "a"), 1);
    for (int i = 0; i < 1000; i++) {
        char name[16];
        snprintf(name, sizeof(name), "t%d", i);
        assert_rc(sub(fx, 1, name), MW_ETOPICS);
    }
    assert_int_equal(fx->nlines, 1);
    assert_string_equal(fx->lines[0], "topics: refused a subscription of n1.x.2 (127.0.0.1): "
                                      "limits.max_topics (1) reached");
}

static void test_tells_history_when_a_topic_gains_its_first_member_and_loses_its_last(void **state)
{
    fx_t *fx = *state;
    mw_history_t *h;
    mw_config_t cfg;
    uint64_t offset;
    const char *epoch;
    mw_frame_t *f = mw_frame_new(MW_OP_TEXT, "x", 1);

    assert_rc(mw_config_init(&cfg), 0);
    cfg.history_max_topics = 2;
    assert_rc(mw_history_new(&h, "n1"), 0);
    fx->ts.history = h;
    /* "old" keeps history and has a member; "idle" keeps history without. */
    assert_rc(sub(fx, 0, "old"), 1);
    assert_rc(mw_history_begin(h, "old", 3, 1, &cfg, 1, &offset, &epoch), 0);
    assert_rc(mw_history_append(h, "old", 3, offset, f, &cfg, 1), 0);
    assert_rc(mw_history_begin(h, "idle", 4, 0, &cfg, 2, &offset, &epoch), 0);
    assert_rc(mw_history_append(h, "idle", 4, offset, f, &cfg, 2), 0);
    /* A third topic: the history of the one without members goes, though it is newer. */
    assert_rc(mw_history_begin(h, "new", 3, 0, &cfg, 3, &offset, &epoch), 0);
    assert_rc(mw_history_append(h, "new", 3, offset, f, &cfg, 3), 0);
    assert_string_equal(mw_history_epoch(h, "idle", 4), "");
    assert_string_not_equal(mw_history_epoch(h, "old", 3), "");
    /* Once "old" loses its member it goes first. */
    assert_rc(unsub(fx, 0, "old"), 1);
    assert_rc(sub(fx, 1, "new"), 1);
    assert_rc(mw_history_begin(h, "newer", 5, 0, &cfg, 4, &offset, &epoch), 0);
    assert_string_equal(mw_history_epoch(h, "old", 3), "");
    assert_string_not_equal(mw_history_epoch(h, "new", 3), "");
    mw_topics_drop_conn(&fx->ts, &fx->conns[1]);
    fx->ts.history = NULL;
    mw_history_free(h);
    mw_frame_unref(f);
    mw_config_close(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_refuses_a_new_topic_past_max_topics_but_not_an_existing_one, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuses_a_connection_past_max_subscriptions, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_the_connection_bound_is_checked_before_the_node_bound,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_logs_refusals_at_most_once_a_second_with_the_count_held_back, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_tells_history_when_a_topic_gains_its_first_member_and_loses_its_last, setup,
            teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
