/* Unit tests for core/conn.h: what an open connection's struct holds. The
 * layout is printed field by field (a pahole of its own, run with ctest -V),
 * and its size is held at what issue 15 brought it to on LP64, so a field
 * added or moved into a hole shows here first. */
#include "helpers.h"
#include "conn.h"

#include <stddef.h>
#include <stdint.h>

#define FIELD(t, f) print_message("  %-17s offset %3zu size %3zu\n", #f, offsetof(t, f), \
                                  sizeof(((t *)0)->f))

static void test_conn_prints_its_layout(void **state)
{
    (void)state;
    print_message("mw_conn_t: %zu bytes\n", sizeof(mw_conn_t));
    FIELD(mw_conn_t, conns);
    FIELD(mw_conn_t, tp);
    FIELD(mw_conn_t, serial);
    FIELD(mw_conn_t, paused);
    FIELD(mw_conn_t, tp_bits);
    FIELD(mw_conn_t, close_reason_len);
    FIELD(mw_conn_t, close_code);
    FIELD(mw_conn_t, lua_ref);
    FIELD(mw_conn_t, addr);
    FIELD(mw_conn_t, close_reason);
    FIELD(mw_conn_t, http);
    FIELD(mw_conn_t, hs);
    FIELD(mw_conn_t, ws);
    FIELD(mw_conn_t, outq);
    FIELD(mw_conn_t, wire_pending);
    FIELD(mw_conn_t, backlog);
    FIELD(mw_conn_t, protocol);
    FIELD(mw_conn_t, timeout_link);
    FIELD(mw_conn_t, open_link);
    FIELD(mw_conn_t, flush_link);
    FIELD(mw_conn_t, close_link);
    FIELD(mw_conn_t, subs);
    FIELD(mw_conn_t, nsubs);
    FIELD(mw_conn_t, held_back);
    FIELD(mw_conn_t, lua_waits);
    FIELD(mw_conn_t, since);
    FIELD(mw_conn_t, tl_at);
    FIELD(mw_conn_t, msgs_in);
    FIELD(mw_conn_t, bytes_out);
    print_message("mw_ws_t: %zu bytes at rest (the receive state is lent, ws.h)\n",
                  sizeof(mw_ws_t));
    print_message("mw_conn_http_t: %zu bytes, freed once the upgrade is over\n",
                  sizeof(mw_conn_http_t));
    /* The fields follow each other: no hole wider than an alignment step. */
    assert_int_equal(offsetof(mw_conn_t, addr), offsetof(mw_conn_t, lua_ref) + sizeof(int));
    assert_int_equal(offsetof(mw_conn_t, close_reason),
                     offsetof(mw_conn_t, addr) + sizeof(mw_addr_t));
}

static void test_conn_stays_within_its_idle_budget(void **state)
{
    (void)state;
#if UINTPTR_MAX == UINT64_MAX
    /* issue 15: an open, idle connection's struct (tcp.c adds libuv's
     * uv_tcp_t and 16 bytes of its own: 624, a 632-byte chunk of glibc's).
     * 688 and 248 before. */
    assert_true(sizeof(mw_conn_t) <= 360);
    assert_true(sizeof(mw_ws_t) <= 32);
#else
    skip();
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conn_prints_its_layout),
        cmocka_unit_test(test_conn_stays_within_its_idle_budget),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
