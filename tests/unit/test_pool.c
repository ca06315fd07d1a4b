/* Unit tests for include/moonwire/pool.h: size classes that fit malloc's
 * chunks, blocks taken back from where they were given, the cap, resizing
 * across classes, and (in the sanitizer build) a pooled block that can not
 * be touched. */
#include "helpers.h"

#include "pool.h"

#include <malloc.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

static void test_sizes_map_to_the_smallest_class_that_holds_them(void **state)
{
    mw_pool_t p = MW_POOL_INIT(4, 32, 4096); /* 8, 24, 40, ... 504 */
    (void)state;

    assert_int_equal(mw_pool_class(&p, 1), 0);
    assert_int_equal(mw_pool_class(&p, 8), 0);
    assert_int_equal(mw_pool_class(&p, 9), 1);
    assert_int_equal(mw_pool_class(&p, 24), 1);
    assert_int_equal(mw_pool_class(&p, 25), 2);
    assert_int_equal(mw_pool_class(&p, 89), 6); /* a 64-byte message's Lua string */
    assert_int_equal(mw_pool_class_size(&p, 6), 104);
    assert_int_equal(mw_pool_class(&p, 504), 31);
    assert_int_equal(mw_pool_class(&p, 505), MW_POOL_NONE);
    assert_int_equal(mw_pool_class(&p, (size_t)1 << 40), MW_POOL_NONE);
}

#if !defined(__SANITIZE_ADDRESS__) /* ASan's malloc gives exactly what was asked */
static void test_a_class_block_takes_no_more_memory_than_a_malloc_of_its_sizes(void **state)
{
    mw_pool_t p = MW_POOL_INIT(4, 32, 4096);
    (void)state;

    /* Every size of a class would get a chunk as large from malloc itself. */
    for (size_t n = 1; n <= 504; n++) {
        void *exact = malloc(n);
        void *pooled = mw_pool_realloc(&p, NULL, 0, n);
        assert_non_null(exact);
        assert_non_null(pooled);
        assert_true(malloc_usable_size(pooled) >= mw_pool_class_size(&p, mw_pool_class(&p, n)));
        assert_int_equal(malloc_usable_size(pooled), malloc_usable_size(exact));
        free(exact);
        mw_pool_free(&p, pooled, n);
    }
    mw_pool_drain(&p);
}
#endif

static void test_a_given_back_block_is_the_next_one_taken(void **state)
{
    mw_pool_t p = MW_POOL_INIT(4, 32, 4096);
    void *a, *b;
    (void)state;

    a = mw_pool_realloc(&p, NULL, 0, 100);
    b = mw_pool_realloc(&p, NULL, 0, 100);
    assert_non_null(a);
    assert_non_null(b);
    memset(a, 'a', 100); /* what was asked for (under ASan, no more: see below) */
    mw_pool_free(&p, a, 100);
    mw_pool_free(&p, b, 100);
    assert_int_equal(p.free_bytes, 2 * 104);
    assert_ptr_equal(mw_pool_realloc(&p, NULL, 0, 90), b); /* last in, first out */
    assert_ptr_equal(mw_pool_realloc(&p, NULL, 0, 104), a);
    assert_int_equal(p.free_bytes, 0);
    mw_pool_free(&p, a, 104);
    mw_pool_free(&p, b, 90);
    mw_pool_drain(&p);
    assert_int_equal(p.free_bytes, 0);
}

static void test_past_the_cap_blocks_go_back_to_malloc(void **state)
{
    mw_pool_t p = MW_POOL_INIT(6, 64, 10 * 120); /* ten blocks of 120 bytes */
    void *blocks[20];
    (void)state;

    for (int i = 0; i < 20; i++)
        assert_non_null(blocks[i] = mw_pool_get(&p, 1));
    for (int i = 0; i < 20; i++)
        mw_pool_put(&p, 1, blocks[i]);
    assert_int_equal(p.free_bytes, 1200);
    mw_pool_drain(&p); /* LeakSanitizer sees the other ten freed by put */
    assert_null(p.head[1]);
    assert_int_equal(p.free_bytes, 0);
    assert_non_null(blocks[0] = mw_pool_get(&p, 1)); /* still usable after a drain */
    mw_pool_put(&p, 1, blocks[0]);
    mw_pool_drain(&p);
}

static void test_resizing_keeps_the_bytes_across_classes_and_malloc(void **state)
{
    mw_pool_t p = MW_POOL_INIT(4, 32, 4096);
    unsigned char *b, *same;
    (void)state;

    b = mw_pool_realloc(&p, NULL, 0, 30);
    for (int i = 0; i < 30; i++)
        b[i] = (unsigned char)i;
    same = mw_pool_realloc(&p, b, 30, 40); /* still class 40 */
    assert_ptr_equal(same, b);
    b = mw_pool_realloc(&p, b, 40, 300); /* to class 312 */
    assert_non_null(b);
    for (int i = 0; i < 30; i++)
        assert_int_equal(b[i], i);
    memset(b + 30, 7, 300 - 30);
    b = mw_pool_realloc(&p, b, 300, 100000); /* past the classes: malloc's */
    assert_non_null(b);
    for (int i = 0; i < 30; i++)
        assert_int_equal(b[i], i);
    assert_int_equal(b[299], 7);
    b = mw_pool_realloc(&p, b, 100000, 20); /* back into class 24 */
    assert_non_null(b);
    for (int i = 0; i < 20; i++)
        assert_int_equal(b[i], i);
    memset(b, 0, 20);
    mw_pool_free(&p, b, 20);
    assert_ptr_equal(p.head[1], b);
    mw_pool_free(&p, NULL, 20);             /* nothing */
    b = mw_pool_realloc(&p, NULL, 0, 5000); /* too big for a class, freed by free() */
    mw_pool_free(&p, b, 5000);
    assert_int_equal(p.free_bytes, 24);
    mw_pool_drain(&p);
}

#if defined(__SANITIZE_ADDRESS__)
static void test_a_pooled_block_is_poisoned_until_taken_again(void **state)
{
    mw_pool_t p = MW_POOL_INIT(4, 32, 4096);
    char *b;
    (void)state;

    b = mw_pool_realloc(&p, NULL, 0, 200);
    assert_false(__asan_address_is_poisoned(b + 199));
    mw_pool_free(&p, b, 200);
    assert_true(__asan_address_is_poisoned(b));
    assert_true(__asan_address_is_poisoned(b + 199));
    assert_ptr_equal(mw_pool_realloc(&p, NULL, 0, 200), b);
    assert_false(__asan_address_is_poisoned(b + 199));
    mw_pool_free(&p, b, 200);
    mw_pool_drain(&p);
}

static void test_past_the_size_asked_for_a_block_is_poisoned(void **state)
{
    mw_pool_t p = MW_POOL_INIT(4, 32, 4096);
    char *b;
    (void)state;

    /* 89 bytes (a 64-byte message's Lua string) in the class of 104: a read
     * of byte 89 is reported, as for malloc(89). */
    b = mw_pool_realloc(&p, NULL, 0, 89);
    assert_int_equal(mw_pool_class_size(&p, mw_pool_class(&p, 89)), 104);
    assert_false(__asan_address_is_poisoned(b + 88));
    assert_true(__asan_address_is_poisoned(b + 89));
    assert_true(__asan_address_is_poisoned(b + 103));
    /* Resized within its class, the line moves with the size. */
    assert_ptr_equal(mw_pool_realloc(&p, b, 89, 100), b);
    assert_false(__asan_address_is_poisoned(b + 99));
    assert_true(__asan_address_is_poisoned(b + 100));
    assert_ptr_equal(mw_pool_realloc(&p, b, 100, 90), b);
    assert_true(__asan_address_is_poisoned(b + 90));
    mw_pool_free(&p, b, 90);
    /* A block of less than a word goes back on its list (the link is a
     * word) and is taken again. */
    b = mw_pool_realloc(&p, NULL, 0, 3);
    assert_true(__asan_address_is_poisoned(b + 3));
    mw_pool_free(&p, b, 3);
    assert_ptr_equal(mw_pool_realloc(&p, NULL, 0, 3), b);
    mw_pool_free(&p, b, 3);
    mw_pool_drain(&p);
}
#endif

/* Outside memcheck (pool.c's check before main) every pool is on. */
static void test_the_pools_are_on_outside_memcheck(void **state)
{
    (void)state;
    assert_int_equal(mw_pool_bypass, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes_map_to_the_smallest_class_that_holds_them),
#if !defined(__SANITIZE_ADDRESS__)
        cmocka_unit_test(test_a_class_block_takes_no_more_memory_than_a_malloc_of_its_sizes),
#endif
        cmocka_unit_test(test_a_given_back_block_is_the_next_one_taken),
        cmocka_unit_test(test_past_the_cap_blocks_go_back_to_malloc),
        cmocka_unit_test(test_resizing_keeps_the_bytes_across_classes_and_malloc),
#if defined(__SANITIZE_ADDRESS__)
        cmocka_unit_test(test_a_pooled_block_is_poisoned_until_taken_again),
        cmocka_unit_test(test_past_the_size_asked_for_a_block_is_poisoned),
#endif
        cmocka_unit_test(test_the_pools_are_on_outside_memcheck),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
