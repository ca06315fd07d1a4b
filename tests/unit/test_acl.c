/* Unit tests for core/acl.c: CIDR parsing and matching. */
#include "acl.h"
#include "conn.h"
#include "helpers.h"

#include <arpa/inet.h>
#include <string.h>

static mw_addr_t v4(const char *text)
{
    mw_addr_t a;
    memset(&a, 0, sizeof(a));
    a.in4.sin_family = AF_INET;
    inet_pton(AF_INET, text, &a.in4.sin_addr);
    return a;
}

static mw_addr_t v6(const char *text)
{
    mw_addr_t a;
    memset(&a, 0, sizeof(a));
    a.in6.sin6_family = AF_INET6;
    inet_pton(AF_INET6, text, &a.in6.sin6_addr);
    return a;
}

static void test_acl_parses_addresses_and_ranges(void **state)
{
    static const char *const good[] = {"127.0.0.1", "10.0.0.0/8", "0.0.0.0/0", "::1",
                                       "fd00::/8",  "::/0",       "192.168.1.7/32"};
    static const char *const bad[] = {"",        "10.0.0.0/33", "10.0.0.0/", "::1/129",
                                      "1.2.3",   "host.name",   "10.0.0.0/-1", "::1/x",
                                      "/8",      "10.0.0.0/8/8"};
    mw_cidr_t c;
    (void)state;
    for (size_t i = 0; i < NELEM(good); i++)
        if (mw_cidr_parse(good[i], &c) != 0)
            fail_msg("refused %s", good[i]);
    for (size_t i = 0; i < NELEM(bad); i++)
        if (mw_cidr_parse(bad[i], &c) == 0)
            fail_msg("accepted %s", bad[i]);
}

static void test_acl_matches_prefixes_of_both_families(void **state)
{
    const char *entries[] = {"10.0.0.0/8", "192.168.1.128/25", "fd00::/8", "::1"};
    mw_acl_t acl;
    size_t bad;
    mw_addr_t a;
    (void)state;
    assert_rc(mw_acl_init(&acl, entries, NELEM(entries), &bad), 0);
    a = v4("10.255.0.1");
    assert_true(mw_acl_allows(&acl, &a));
    a = v4("11.0.0.1");
    assert_false(mw_acl_allows(&acl, &a));
    a = v4("192.168.1.200");
    assert_true(mw_acl_allows(&acl, &a));
    a = v4("192.168.1.100");
    assert_false(mw_acl_allows(&acl, &a));
    a = v6("fd12::5");
    assert_true(mw_acl_allows(&acl, &a));
    a = v6("fe80::1");
    assert_false(mw_acl_allows(&acl, &a));
    a = v6("::1");
    assert_true(mw_acl_allows(&acl, &a));
    a = v6("::ffff:10.1.2.3"); /* an IPv4 peer seen through an IPv6 socket */
    assert_true(mw_acl_allows(&acl, &a));
    mw_acl_close(&acl);
}

static void test_acl_allows_everyone_when_empty_and_names_a_bad_entry(void **state)
{
    const char *entries[] = {"10.0.0.0/8", "nope"};
    mw_acl_t acl;
    size_t bad = 99;
    mw_addr_t a = v4("8.8.8.8");
    (void)state;
    assert_rc(mw_acl_init(&acl, entries, 0, &bad), 0);
    assert_true(mw_acl_allows(&acl, &a));
    mw_acl_close(&acl);
    assert_rc(mw_acl_init(&acl, entries, 2, &bad), MW_EINVAL);
    assert_int_equal(bad, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_acl_parses_addresses_and_ranges),
        cmocka_unit_test(test_acl_matches_prefixes_of_both_families),
        cmocka_unit_test(test_acl_allows_everyone_when_empty_and_names_a_bad_entry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
