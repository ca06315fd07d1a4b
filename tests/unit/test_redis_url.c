/* Unit tests for core/redis_url.h: the addresses of Redis servers and of
 * sentinels, as cluster.redis and cluster.sentinels spell them. */
#include "helpers.h"

#include "redis_url.h"
#include "moonwire/error.h"

#include <string.h>

static void test_a_sentinel_is_host_colon_port_with_v6_in_brackets(void **state)
{
    char host[256];
    int port = 0;

    assert_int_equal(mw_redis_hostport_parse("127.0.0.1:26379", host, &port), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 26379);
    assert_int_equal(mw_redis_hostport_parse("sentinel-1.internal:1", host, &port), 0);
    assert_string_equal(host, "sentinel-1.internal");
    assert_int_equal(port, 1);
    assert_int_equal(mw_redis_hostport_parse("[::1]:65535", host, &port), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 65535);
}

static void test_a_sentinel_address_without_a_port_in_range_is_refused(void **state)
{
    char host[256], longname[300];
    int port = 7;
    const char *bad[] = {"127.0.0.1", "127.0.0.1:", ":26379", "127.0.0.1:0", "127.0.0.1:65536",
                         "127.0.0.1:26379x", "::1:26379", "[::1]26379", "[::1", "[]:26379",
                         "h:-5", ""};

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(mw_redis_hostport_parse(bad[i], host, &port), MW_EINVAL);
    memset(longname, 'a', 256);
    strcpy(longname + 256, ":26379");
    assert_int_equal(mw_redis_hostport_parse(longname, host, &port), MW_EINVAL);
    assert_int_equal(port, 7); /* untouched */
}

static void test_a_redis_url_still_parses_as_before(void **state)
{
    mw_redis_url_t u;

    assert_int_equal(mw_redis_url_parse("redis://:pw@10.0.0.5:6380/2", &u), 0);
    assert_string_equal(u.host, "10.0.0.5");
    assert_string_equal(u.password, "pw");
    assert_int_equal(u.port, 6380);
    assert_int_equal(u.db, 2);
    assert_int_equal(mw_redis_url_parse("127.0.0.1:6379", &u), MW_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_sentinel_is_host_colon_port_with_v6_in_brackets),
        cmocka_unit_test(test_a_sentinel_address_without_a_port_in_range_is_refused),
        cmocka_unit_test(test_a_redis_url_still_parses_as_before),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
