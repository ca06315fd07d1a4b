/* Unit tests for include/moonwire/htab.h: chained hash tables of intrusive
 * nodes that grow, lookups by hash and key, removal while walking. */
#include "helpers.h"

#include "htab.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    mw_hnode_t node;
    char name[16];
    int seen;
} item_t;

#define N 1000

static item_t items[N];

static item_t *find(const mw_htab_t *t, const char *name)
{
    uint64_t h = mw_hash_bytes(name, strlen(name));
    for (mw_hnode_t *n = mw_htab_chain(t, h); n != NULL; n = n->next) {
        item_t *it = MW_CONTAINER_OF(n, item_t, node);
        if (n->hash == h && strcmp(it->name, name) == 0)
            return it;
    }
    return NULL;
}

static size_t walk(const mw_htab_t *t)
{
    size_t count = 0;
    for (mw_hnode_t *n = mw_htab_next(t, NULL); n != NULL; n = mw_htab_next(t, n)) {
        MW_CONTAINER_OF(n, item_t, node)->seen++;
        count++;
    }
    return count;
}

static void fill(mw_htab_t *t)
{
    assert_rc(mw_htab_init(t, 4), 0);
    for (int i = 0; i < N; i++) {
        snprintf(items[i].name, sizeof(items[i].name), "topic-%d", i);
        items[i].seen = 0;
        mw_htab_insert(t, &items[i].node, mw_hash_bytes(items[i].name, strlen(items[i].name)));
    }
}

static void test_hash_bytes_is_fnv1a(void **state)
{
    (void)state;
    /* FNV-1a 64 of "" and of "a", from the algorithm's published vectors. */
    assert_true(mw_hash_bytes("", 0) == 0xcbf29ce484222325ULL);
    assert_true(mw_hash_bytes("a", 1) == 0xaf63dc4c8601ec8cULL);
}

static void test_htab_grows_and_finds_every_entry(void **state)
{
    mw_htab_t t;
    (void)state;

    fill(&t);
    assert_int_equal(t.count, N);
    assert_true(t.nbuckets >= N); /* doubled from 4 as it filled */
    assert_int_equal(t.nbuckets & (t.nbuckets - 1), 0);
    for (int i = 0; i < N; i++)
        assert_ptr_equal(find(&t, items[i].name), &items[i]);
    assert_null(find(&t, "topic-1000"));
    mw_htab_free(&t);
}

static void test_htab_walk_visits_each_entry_once(void **state)
{
    mw_htab_t t;
    (void)state;

    fill(&t);
    assert_int_equal(walk(&t), N);
    for (int i = 0; i < N; i++)
        assert_int_equal(items[i].seen, 1);
    mw_htab_free(&t);
}

static void test_htab_entries_can_be_removed_while_walking(void **state)
{
    mw_htab_t t;
    mw_hnode_t *n, *next;
    (void)state;

    fill(&t);
    /* Remove the even ones, taking the next node before each removal. */
    for (n = mw_htab_next(&t, NULL); n != NULL; n = next) {
        item_t *it = MW_CONTAINER_OF(n, item_t, node);
        next = mw_htab_next(&t, n);
        if ((it - items) % 2 == 0)
            mw_htab_remove(&t, n);
    }
    assert_int_equal(t.count, N / 2);
    for (int i = 0; i < N; i++) {
        items[i].seen = 0;
        assert_ptr_equal(find(&t, items[i].name), i % 2 ? &items[i] : NULL);
    }
    assert_int_equal(walk(&t), N / 2);
    for (int i = 1; i < N; i += 2)
        assert_int_equal(items[i].seen, 1);
    mw_htab_free(&t);
    assert_null(t.buckets);
}

static void test_an_empty_table_walks_nothing(void **state)
{
    mw_htab_t t;
    (void)state;

    assert_rc(mw_htab_init(&t, 8), 0);
    assert_null(mw_htab_next(&t, NULL));
    assert_null(mw_htab_chain(&t, 12345));
    mw_htab_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_bytes_is_fnv1a),
        cmocka_unit_test(test_htab_grows_and_finds_every_entry),
        cmocka_unit_test(test_htab_walk_visits_each_entry_once),
        cmocka_unit_test(test_htab_entries_can_be_removed_while_walking),
        cmocka_unit_test(test_an_empty_table_walks_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
