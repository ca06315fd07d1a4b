/* Unit tests for include/moonwire/registry.h: connection ids and the
 * id -> connection table.
 *
 * The registry only reads a connection's serial and links its open_link, so
 * the tests use zeroed mw_conn_t structs with just those two fields set.
 */
#include "helpers.h"

#include "conn.h"
#include "registry.h"
#include "moonwire/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    mw_registry_t reg;
    mw_conn_t **owned; /* every connection a test made, freed in teardown */
    size_t nowned, cap;
} fx_t;

static int setup_reg(void **state)
{
    fx_t *fx = calloc(1, sizeof(*fx));
    if (fx == NULL || mw_registry_init(&fx->reg, "node-a", "x1") != 0)
        return -1;
    *state = fx;
    return 0;
}

static int teardown_reg(void **state)
{
    fx_t *fx = *state;
    mw_registry_close(&fx->reg);
    for (size_t i = 0; i < fx->nowned; i++)
        free(fx->owned[i]);
    free(fx->owned);
    free(fx);
    return 0;
}

/* A connection as accept makes it: zeroed, with its serial and a self-linked open_link. */
static mw_conn_t *conn_new(fx_t *fx)
{
    mw_conn_t *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    if (fx->nowned == fx->cap) {
        size_t cap = fx->cap ? fx->cap * 2 : 64;
        mw_conn_t **owned = realloc(fx->owned, cap * sizeof(*owned));
        if (owned == NULL) {
            fail_msg("out of memory");
        }
        fx->owned = owned;
        fx->cap = cap;
    }
    fx->owned[fx->nowned++] = c;
    c->serial = mw_ids_next(&fx->reg.ids);
    mw_list_init(&c->open_link);
    return c;
}

/* The id of c, as registry.h spells it: "<node>.<incarnation>.<serial>". */
static size_t id_of(const mw_registry_t *reg, const mw_conn_t *c, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s%llu", reg->ids.prefix, (unsigned long long)c->serial);
    assert_true(n > 0 && (size_t)n < cap);
    return (size_t)n;
}

static mw_conn_t *find_str(const mw_registry_t *reg, const char *id)
{
    return mw_registry_find(reg, id, strlen(id));
}

static mw_conn_t *find_conn(const mw_registry_t *reg, const mw_conn_t *c)
{
    char id[MW_ID_MAX];
    size_t n = id_of(reg, c, id, sizeof(id));
    return mw_registry_find(reg, id, n);
}

static void test_registry_ids_carry_the_node_and_incarnation_prefix(void **state)
{
    fx_t *fx = *state;
    mw_conn_t *c = conn_new(fx);
    char id[MW_ID_MAX];

    assert_string_equal(fx->reg.ids.prefix, "node-a.x1.");
    assert_int_equal(fx->reg.ids.prefix_len, strlen("node-a.x1."));
    id_of(&fx->reg, c, id, sizeof(id));
    assert_int_equal(strncmp(id, "node-a.x1.", 10), 0);
    assert_true(strlen(id) > 10);
    assert_true(mw_ids_is_local(&fx->reg.ids, id, strlen(id)));
}

static void test_registry_draws_a_different_incarnation_at_each_start(void **state)
{
    mw_registry_t a, b;

    assert_rc(mw_registry_init(&a, "node-a", NULL), 0);
    assert_rc(mw_registry_init(&b, "node-a", NULL), 0);
    assert_int_equal(strncmp(a.ids.prefix, "node-a.", 7), 0);
    assert_int_equal(strncmp(b.ids.prefix, "node-a.", 7), 0);
    assert_true(a.ids.prefix_len > 8);
    assert_int_equal(a.ids.prefix[a.ids.prefix_len - 1], '.');
    assert_string_not_equal(a.ids.prefix, b.ids.prefix);
    /* An id of one incarnation is not local to the other. */
    {
        char id[MW_ID_MAX];
        int n = snprintf(id, sizeof(id), "%s1", a.ids.prefix);
        assert_false(mw_ids_is_local(&b.ids, id, (size_t)n));
        assert_true(mw_ids_is_local(&a.ids, id, (size_t)n));
    }
    mw_registry_close(&a);
    mw_registry_close(&b);
}

static void test_registry_ids_are_unique_and_never_reused(void **state)
{
    fx_t *fx = *state;
    enum { N = 200 };
    mw_conn_t *c[N];
    char ids[N][MW_ID_MAX];

    for (int i = 0; i < N; i++) {
        c[i] = conn_new(fx);
        if (i > 0)
            assert_true(c[i]->serial > c[i - 1]->serial);
        assert_rc(mw_registry_add(&fx->reg, c[i]), 0);
        id_of(&fx->reg, c[i], ids[i], MW_ID_MAX);
        /* Remove every other one at once: its id must not come back. */
        if (i % 2)
            mw_registry_remove(&fx->reg, c[i]);
    }
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++)
            assert_string_not_equal(ids[i], ids[j]);
    for (int i = 0; i < N; i++) {
        assert_ptr_equal(find_str(&fx->reg, ids[i]), i % 2 ? NULL : c[i]);
    }
}

static void test_registry_finds_a_connection_by_id_after_add(void **state)
{
    fx_t *fx = *state;
    mw_conn_t *a = conn_new(fx), *b = conn_new(fx);
    char id[MW_ID_MAX];
    size_t n;

    assert_null(find_conn(&fx->reg, a)); /* not added yet */
    assert_rc(mw_registry_add(&fx->reg, a), 0);
    assert_rc(mw_registry_add(&fx->reg, b), 0);
    assert_ptr_equal(find_conn(&fx->reg, a), a);
    assert_ptr_equal(find_conn(&fx->reg, b), b);

    /* The id is (pointer, length): bytes after it do not matter. */
    n = id_of(&fx->reg, a, id, sizeof(id) - 2);
    id[n] = '7';
    id[n + 1] = '\0';
    assert_ptr_equal(mw_registry_find(&fx->reg, id, n), a);

    mw_registry_remove(&fx->reg, a);
    mw_registry_remove(&fx->reg, b);
}

static void test_registry_does_not_find_a_connection_after_remove(void **state)
{
    fx_t *fx = *state;
    mw_conn_t *a = conn_new(fx), *b = conn_new(fx);
    char id[MW_ID_MAX];
    size_t n;

    assert_rc(mw_registry_add(&fx->reg, a), 0);
    assert_rc(mw_registry_add(&fx->reg, b), 0);
    n = id_of(&fx->reg, a, id, sizeof(id));
    mw_registry_remove(&fx->reg, a);
    assert_null(mw_registry_find(&fx->reg, id, n));
    assert_ptr_equal(find_conn(&fx->reg, b), b);
    /* Still an id of this node, though closed. */
    assert_true(mw_ids_is_local(&fx->reg.ids, id, n));
    /* Removing again is a no-op. */
    mw_registry_remove(&fx->reg, a);
    assert_ptr_equal(find_conn(&fx->reg, b), b);
    assert_int_equal(fx->reg.count, 1);
    mw_registry_remove(&fx->reg, b);
    assert_int_equal(fx->reg.count, 0);
}

static void test_registry_remove_of_a_connection_never_added_is_a_no_op(void **state)
{
    fx_t *fx = *state;
    mw_conn_t *a = conn_new(fx), *stranger = conn_new(fx);

    assert_rc(mw_registry_add(&fx->reg, a), 0);
    mw_registry_remove(&fx->reg, stranger);
    assert_int_equal(fx->reg.count, 1);
    assert_int_equal(fx->reg.nopen, 1);
    assert_ptr_equal(find_conn(&fx->reg, a), a);
    mw_registry_remove(&fx->reg, a);
}

static void test_registry_keeps_open_connections_in_open_order(void **state)
{
    fx_t *fx = *state;
    mw_conn_t *c[4];
    mw_list_t *it;
    int i = 0;

    for (int k = 0; k < 4; k++) {
        c[k] = conn_new(fx);
        assert_rc(mw_registry_add(&fx->reg, c[k]), 0);
    }
    assert_int_equal(fx->reg.nopen, 4);
    mw_registry_remove(&fx->reg, c[1]);
    assert_int_equal(fx->reg.nopen, 3);
    assert_false(mw_list_linked(&c[1]->open_link));
    {
        mw_conn_t *want[] = {c[0], c[2], c[3]};
        mw_list_foreach(it, &fx->reg.open)
        {
            assert_true(i < 3);
            assert_ptr_equal(MW_CONTAINER_OF(it, mw_conn_t, open_link), want[i]);
            i++;
        }
        assert_int_equal(i, 3);
    }
    for (int k = 0; k < 4; k++) {
        mw_registry_remove(&fx->reg, c[k]);
    }
    assert_int_equal(fx->reg.nopen, 0);
    assert_true(mw_list_empty(&fx->reg.open));
}

static void test_registry_gives_null_for_unknown_foreign_and_malformed_ids(void **state)
{
    fx_t *fx = *state;
    mw_conn_t *c[3];
    static const char *bad[] = {
        "node-a.x1.999", /* unknown serial */
        "node-a.x1.0",   /* serials start at 1 */
        "node-b.x1.1",   /* another node */
        "node-a.x2.1",   /* another incarnation of this node */
        "node-a.x1.",    /* no serial */
        "node-a.x1",     /* not even the whole prefix */
        "node-a",
        "",
        "node-a.x1.1a", /* trailing junk */
        "node-a.x1.a1",
        "node-a.x1.-1", /* a sign */
        "node-a.x1.+1",
        "node-a.x1. 1", /* a space */
        "node-a.x1.1.2",
        "xnode-a.x1.1",
        "NODE-A.X1.1",                     /* case matters */
        "node-a.x1.123456789012345678901", /* too long for a serial */
    };

    for (int k = 0; k < 3; k++) {
        c[k] = conn_new(fx);
        assert_rc(mw_registry_add(&fx->reg, c[k]), 0);
    }
    assert_ptr_equal(find_str(&fx->reg, "node-a.x1.1"), c[0]);
    for (size_t i = 0; i < NELEM(bad); i++) {
        if (find_str(&fx->reg, bad[i]) != NULL)
            fail_msg("'%s' should find nothing", bad[i]);
    }
    assert_false(mw_ids_is_local(&fx->reg.ids, "node-b.x1.1", 11));
    assert_false(mw_ids_is_local(&fx->reg.ids, "node-a.x1.", 10));
    for (int k = 0; k < 3; k++) {
        mw_registry_remove(&fx->reg, c[k]);
    }
}

static void test_registry_gives_null_for_a_serial_that_overflows_64_bits(void **state)
{
    fx_t *fx = *state;
    mw_conn_t *c = conn_new(fx);

    assert_int_equal(c->serial, 1);
    assert_rc(mw_registry_add(&fx->reg, c), 0);
    /* 2^64 + 1 is 20 digits; wrapped modulo 2^64 it would name serial 1. */
    assert_null(find_str(&fx->reg, "node-a.x1.18446744073709551617"));
    assert_null(find_str(&fx->reg, "node-a.x1.36893488147419103233")); /* 2^65 + 1 */
    mw_registry_remove(&fx->reg, c);
}

static void test_registry_gives_null_for_an_id_with_leading_zeros(void **state)
{
    /* "node-a.x1.01" was never issued: ids are compared as the node wrote them. */
    fx_t *fx = *state;
    mw_conn_t *c = conn_new(fx);

    assert_rc(mw_registry_add(&fx->reg, c), 0);
    assert_ptr_equal(find_str(&fx->reg, "node-a.x1.1"), c);
    assert_null(find_str(&fx->reg, "node-a.x1.01"));
    assert_null(find_str(&fx->reg, "node-a.x1.00000000000000000001"));
    mw_registry_remove(&fx->reg, c);
}

/* Many adds and removes in a pseudo-random order, checked against a model:
 * the table grows several times and backward-shift deletion runs often. */
static void test_registry_keeps_every_id_findable_through_many_adds_and_removes(void **state)
{
    fx_t *fx = *state;
    enum { N = 20000 };
    static mw_conn_t *all[N];
    static int live[N];
    size_t made = 0, nlive = 0;
    unsigned r = 2463534242u;

#define RAND() (r ^= r << 13, r ^= r >> 17, r ^= r << 5, r)
    for (int step = 0; step < 4 * N; step++) {
        /* Grow for the first half, then mostly remove. */
        int add = made < N && (step < 2 * N ? RAND() % 3 != 0 : RAND() % 3 == 0);
        if (add) {
            mw_conn_t *c = conn_new(fx);
            all[made] = c;
            assert_rc(mw_registry_add(&fx->reg, c), 0);
            live[made++] = 1;
            nlive++;
        } else if (made > 0) {
            size_t i = RAND() % made;
            if (live[i]) {
                mw_registry_remove(&fx->reg, all[i]);
                live[i] = 0;
                nlive--;
            }
        }
        assert_int_equal(fx->reg.count, nlive);
        assert_int_equal(fx->reg.nopen, nlive);
        if (step % 4000 == 0 || step == 4 * N - 1) {
            for (size_t i = 0; i < made; i++) {
                mw_conn_t *found = find_conn(&fx->reg, all[i]);
                if (found != (live[i] ? all[i] : NULL))
                    fail_msg("step %d: serial %llu %s", step, (unsigned long long)all[i]->serial,
                             live[i] ? "not found" : "found after remove");
            }
        }
    }
#undef RAND
    assert_true(fx->reg.cap > 1024); /* it did grow */
    for (size_t i = 0; i < made; i++) {
        if (live[i])
            mw_registry_remove(&fx->reg, all[i]);
    }
    assert_int_equal(fx->reg.count, 0);
}

/* Removing in the order that shifts the longest probe chains: every id of a
 * large table, from the first added to the last, checking all others each time
 * a tenth of them is gone. */
static void test_registry_removing_in_add_order_keeps_the_rest_findable(void **state)
{
    fx_t *fx = *state;
    enum { N = 3000 };
    static mw_conn_t *c[N];

    for (int i = 0; i < N; i++) {
        c[i] = conn_new(fx);
        assert_rc(mw_registry_add(&fx->reg, c[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        mw_registry_remove(&fx->reg, c[i]);
        assert_null(find_conn(&fx->reg, c[i]));
        if (i % 300 == 0)
            for (int j = i + 1; j < N; j++)
                assert_ptr_equal(find_conn(&fx->reg, c[j]), c[j]);
    }
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup_reg, teardown_reg)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_registry_ids_carry_the_node_and_incarnation_prefix),
        cmocka_unit_test(test_registry_draws_a_different_incarnation_at_each_start),
        T(test_registry_ids_are_unique_and_never_reused),
        T(test_registry_finds_a_connection_by_id_after_add),
        T(test_registry_does_not_find_a_connection_after_remove),
        T(test_registry_remove_of_a_connection_never_added_is_a_no_op),
        T(test_registry_keeps_open_connections_in_open_order),
        T(test_registry_gives_null_for_unknown_foreign_and_malformed_ids),
        T(test_registry_gives_null_for_a_serial_that_overflows_64_bits),
        T(test_registry_gives_null_for_an_id_with_leading_zeros),
        T(test_registry_keeps_every_id_findable_through_many_adds_and_removes),
        T(test_registry_removing_in_add_order_keeps_the_rest_findable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
