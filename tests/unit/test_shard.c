/* Unit tests for core/shard.h: the hash and the jump over fixed vectors (the
 * ones docs/scaling.md gives a backend), the spread of many topics over 2, 3
 * and 4 shards, and how few topics move when a shard is added. */
#include "helpers.h"

#include "shard.h"

#include <stdio.h>
#include <string.h>

#define S(s) (s), (sizeof(s) - 1)

static void test_shard_hash_is_fnv1a_64(void **state)
{
    (void)state;
    assert_true(mw_shard_hash(S("")) == 0xcbf29ce484222325ULL);
    assert_true(mw_shard_hash(S("a")) == 0xaf63dc4c8601ec8cULL);
    assert_true(mw_shard_hash(S("room:1")) == 0xbf459e24f7eb6863ULL);
    assert_true(mw_shard_hash(S("chat")) == 0xf2a38d910b5b348bULL);
}

static void test_shard_of_fixed_vectors(void **state)
{
    static const struct {
        const char *name;
        unsigned of[5]; /* among 1, 2, 3, 4, 16 shards */
    } v[] = {
        {"", {0, 1, 1, 1, 13}},
        {"a", {0, 1, 2, 2, 12}},
        {"room:1", {0, 0, 2, 2, 2}},
        {"chat", {0, 0, 0, 0, 4}},
        {"lobby", {0, 1, 2, 2, 8}},
    };
    static const unsigned n[5] = {1, 2, 3, 4, 16};

    (void)state;
    for (size_t i = 0; i < NELEM(v); i++)
        for (size_t k = 0; k < 5; k++)
            if (mw_shard_of(v[i].name, strlen(v[i].name), n[k]) != v[i].of[k])
                fail_msg("'%s' among %u shards: expected %u, got %u", v[i].name, n[k],
                         v[i].of[k], mw_shard_of(v[i].name, strlen(v[i].name), n[k]));
}

#define TOPICS 10000

static void test_shard_spreads_topics_evenly(void **state)
{
    (void)state;
    for (unsigned n = 2; n <= 4; n++) {
        unsigned count[4] = {0};
        for (int i = 0; i < TOPICS; i++) {
            char name[32];
            int len = snprintf(name, sizeof(name), "room:%d", i);
            unsigned s = mw_shard_of(name, (size_t)len, n);
            assert_true(s < n);
            count[s]++;
        }
        /* Each within 10% of its fair share. */
        for (unsigned s = 0; s < n; s++)
            if (count[s] < TOPICS / n * 9 / 10 || count[s] > TOPICS / n * 11 / 10)
                fail_msg("%u shards: shard %u has %u of %d topics", n, s, count[s], TOPICS);
    }
}

static void test_adding_a_shard_moves_only_topics_to_the_new_one(void **state)
{
    (void)state;
    for (unsigned n = 1; n < MW_SHARDS_MAX; n++) {
        unsigned moved = 0;
        for (int i = 0; i < TOPICS; i++) {
            char name[32];
            int len = snprintf(name, sizeof(name), "topic-%d", i);
            unsigned before = mw_shard_of(name, (size_t)len, n);
            unsigned after = mw_shard_of(name, (size_t)len, n + 1);
            if (after != before) {
                assert_int_equal(after, n); /* to the new shard, never between old ones */
                moved++;
            }
        }
        /* About 1/(n+1) of them: within 20% of that. */
        if (moved < TOPICS / (n + 1) * 8 / 10 || moved > TOPICS / (n + 1) * 12 / 10)
            fail_msg("%u -> %u shards moved %u of %d topics", n, n + 1, moved, TOPICS);
    }
}

static void test_shard_digest_tells_lists_apart(void **state)
{
    (void)state;
    const char *a[2] = {"redis://a:6379", "redis://b:6379"};
    const char *b[2] = {"redis://b:6379", "redis://a:6379"};
    const char *c[2] = {"redis://a:6379redis://b:6379", ""};

    assert_true(mw_shard_digest(a, 2) == mw_shard_digest(a, 2));
    assert_true(mw_shard_digest(a, 2) != mw_shard_digest(b, 2));
    assert_true(mw_shard_digest(a, 2) != mw_shard_digest(a, 1));
    assert_true(mw_shard_digest(a, 2) != mw_shard_digest(c, 2));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shard_hash_is_fnv1a_64),
        cmocka_unit_test(test_shard_of_fixed_vectors),
        cmocka_unit_test(test_shard_spreads_topics_evenly),
        cmocka_unit_test(test_adding_a_shard_moves_only_topics_to_the_new_one),
        cmocka_unit_test(test_shard_digest_tells_lists_apart),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
