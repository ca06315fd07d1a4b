/* Unit tests for core/forwarded.c: the client behind trusted proxies, from
 * X-Forwarded-For (read from the right) and X-Real-IP. */
#include "forwarded.h"
#include "helpers.h"
#include "http.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

static const char *const TRUSTED[] = {"10.0.0.0/8", "fd00::/8", "127.0.0.1"};

static mw_acl_t acl;

static int setup(void **state)
{
    size_t bad;
    (void)state;
    return mw_acl_init(&acl, TRUSTED, NELEM(TRUSTED), &bad);
}

static int teardown(void **state)
{
    (void)state;
    mw_acl_close(&acl);
    return 0;
}

static mw_addr_t addr(const char *text)
{
    mw_addr_t a;
    assert_rc(mw_forwarded_parse_addr(text, strlen(text), &a), 0);
    return a;
}

static const char *fmt(const mw_addr_t *a)
{
    static char out[64];
    mw_addr_format(a, out, sizeof(out));
    return out;
}

/* The client that a peer's request with these X-Forwarded-For values (fed
 * last to first, as the request router does) comes from. */
static const char *walk(const char *peer, const char *const *values, size_t n)
{
    mw_forwarded_t f;
    mw_addr_t p = addr(peer);
    mw_forwarded_init(&f, &acl, &p);
    for (size_t i = n; i > 0 && !f.done; i--)
        mw_forwarded_feed(&f, values[i - 1], strlen(values[i - 1]));
    return fmt(&f.client);
}

static const char *walk1(const char *peer, const char *value)
{
    return walk(peer, &value, 1);
}

static void test_forwarded_parses_both_families_with_or_without_a_port(void **state)
{
    static const char *const good[][2] = {
        {"1.2.3.4", "1.2.3.4"},   {" 1.2.3.4 ", "1.2.3.4"},       {"1.2.3.4:8080", "1.2.3.4"},
        {"::1", "::1"},           {"[2001:db8::7]", "2001:db8::7"}, {"[2001:db8::7]:443", "2001:db8::7"},
        {"::ffff:1.2.3.4", "::ffff:1.2.3.4"},
    };
    static const char *const bad[] = {"",         "unknown",     "1.2.3",   "1.2.3.4:",
                                      "1.2.3.4:x", "1.2.3.4:123456", "[::1",  "[::1]x",
                                      "[::1]:",   "[1.2.3.4]",   "::1::2",  "1.2.3.4.5",
                                      "_hidden",  "2001:db8::7:443:1:2:3:4:5"};
    mw_addr_t a;
    (void)state;
    for (size_t i = 0; i < NELEM(good); i++) {
        if (mw_forwarded_parse_addr(good[i][0], strlen(good[i][0]), &a) != 0)
            fail_msg("refused '%s'", good[i][0]);
        assert_string_equal(fmt(&a), good[i][1]);
    }
    for (size_t i = 0; i < NELEM(bad); i++)
        if (mw_forwarded_parse_addr(bad[i], strlen(bad[i]), &a) == 0)
            fail_msg("accepted '%s'", bad[i]);
}

static void test_forwarded_ignores_an_untrusted_peer(void **state)
{
    (void)state;
    assert_string_equal(walk1("203.0.113.9", "1.1.1.1"), "203.0.113.9");
    assert_string_equal(walk1("11.0.0.1", "1.1.1.1, 10.0.0.2"), "11.0.0.1");
}

static void test_forwarded_takes_the_right_most_untrusted_address(void **state)
{
    (void)state;
    assert_string_equal(walk1("10.0.0.1", "198.51.100.7"), "198.51.100.7");
    /* A client that sends its own header cannot choose what we see. */
    assert_string_equal(walk1("10.0.0.1", "6.6.6.6, 198.51.100.7"), "198.51.100.7");
    assert_string_equal(walk1("10.0.0.1", "6.6.6.6, 198.51.100.7, 10.1.2.3, 127.0.0.1"),
                        "198.51.100.7");
    assert_string_equal(walk1("fd00::1", "2001:db8::5, fd00::9"), "2001:db8::5");
    assert_string_equal(walk1("127.0.0.1", "[2001:db8::5]:1234"), "2001:db8::5");
    /* Empty entries are skipped. */
    assert_string_equal(walk1("10.0.0.1", "198.51.100.7, , "), "198.51.100.7");
}

static void test_forwarded_reads_fields_from_the_last_one_back(void **state)
{
    const char *const two[] = {"6.6.6.6, 198.51.100.7", "10.0.0.3"};
    const char *const trusted_only[] = {"10.9.9.9", "10.0.0.3"};
    (void)state;
    assert_string_equal(walk("10.0.0.1", two, 2), "198.51.100.7");
    /* Every entry trusted: the left-most. */
    assert_string_equal(walk("10.0.0.1", trusted_only, 2), "10.9.9.9");
    assert_string_equal(walk1("10.0.0.1", ""), "10.0.0.1");
}

static void test_forwarded_stops_at_garbage_with_the_last_trusted_hop(void **state)
{
    (void)state;
    assert_string_equal(walk1("10.0.0.1", "198.51.100.7, unknown"), "10.0.0.1");
    assert_string_equal(walk1("10.0.0.1", "198.51.100.7, garbage, 10.0.0.4"), "10.0.0.4");
    assert_string_equal(walk1("10.0.0.1", "1.2.3.4:99999"), "10.0.0.1");
}

static void test_forwarded_reads_at_most_max_hops(void **state)
{
    char value[4096];
    size_t n = 0;
    (void)state;
    /* A client address behind more trusted entries than are read. */
    n += (size_t)snprintf(value + n, sizeof(value) - n, "198.51.100.7");
    for (int i = 0; i < MW_FORWARDED_MAX_HOPS + 5; i++)
        n += (size_t)snprintf(value + n, sizeof(value) - n, ", 10.0.%d.%d", i / 250, i % 250 + 1);
    /* Entries 37 to 6 from the left (10.0.0.37 ... 10.0.0.6) are read, and no more. */
    assert_string_equal(walk1("10.0.0.1", value), "10.0.0.6");
    /* Within the bound it is found. */
    assert_string_equal(walk1("10.0.0.1", "198.51.100.7, 10.0.0.2, 10.0.0.3"), "198.51.100.7");
}

/* Through a parsed request: several fields, X-Real-IP. */
static const char *from_request(const char *peer, const char *head)
{
    mw_http_req_t req;
    size_t consumed;
    mw_addr_t p = addr(peer), out;
    mw_http_req_init(&req, 8192);
    assert_rc(mw_http_feed(&req, head, strlen(head), &consumed), 0);
    mw_forwarded_client(&acl, &req, &p, &out);
    mw_http_req_close(&req);
    return fmt(&out);
}

static void test_forwarded_client_of_a_request(void **state)
{
    (void)state;
    assert_string_equal(from_request("10.0.0.1", "GET / HTTP/1.1\r\nHost: x\r\n"
                                                  "X-Forwarded-For: 6.6.6.6, 198.51.100.7\r\n"
                                                  "X-Forwarded-For: 10.0.0.3\r\n\r\n"),
                        "198.51.100.7");
    assert_string_equal(from_request("10.0.0.1", "GET / HTTP/1.1\r\nHost: x\r\n"
                                                  "X-Real-IP: 198.51.100.8\r\n\r\n"),
                        "198.51.100.8");
    /* X-Forwarded-For wins over X-Real-IP. */
    assert_string_equal(from_request("10.0.0.1", "GET / HTTP/1.1\r\nHost: x\r\n"
                                                  "X-Real-IP: 198.51.100.8\r\n"
                                                  "X-Forwarded-For: 198.51.100.9\r\n\r\n"),
                        "198.51.100.9");
    assert_string_equal(from_request("10.0.0.1", "GET / HTTP/1.1\r\nHost: x\r\n"
                                                  "X-Real-IP: nonsense\r\n\r\n"),
                        "10.0.0.1");
    assert_string_equal(from_request("203.0.113.1", "GET / HTTP/1.1\r\nHost: x\r\n"
                                                     "X-Real-IP: 198.51.100.8\r\n\r\n"),
                        "203.0.113.1");
}

static void test_forwarded_with_no_trusted_proxies_is_the_peer(void **state)
{
    mw_acl_t none = {NULL, 0};
    mw_forwarded_t f;
    mw_addr_t p = addr("10.0.0.1");
    (void)state;
    mw_forwarded_init(&f, &none, &p);
    assert_true(f.done);
    assert_int_equal(mw_forwarded_feed(&f, "1.1.1.1", 7), 1);
    assert_string_equal(fmt(&f.client), "10.0.0.1");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forwarded_parses_both_families_with_or_without_a_port),
        cmocka_unit_test(test_forwarded_ignores_an_untrusted_peer),
        cmocka_unit_test(test_forwarded_takes_the_right_most_untrusted_address),
        cmocka_unit_test(test_forwarded_reads_fields_from_the_last_one_back),
        cmocka_unit_test(test_forwarded_stops_at_garbage_with_the_last_trusted_hop),
        cmocka_unit_test(test_forwarded_reads_at_most_max_hops),
        cmocka_unit_test(test_forwarded_client_of_a_request),
        cmocka_unit_test(test_forwarded_with_no_trusted_proxies_is_the_peer),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
