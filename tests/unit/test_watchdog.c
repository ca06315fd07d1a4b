/* Unit tests for include/moonwire/lua_watchdog.h with a real Lua state and the
 * real CPU-clock timer: a loop that calls nothing is stopped past its limit
 * (also behind its own pcall), a short call is not, no hook is left set, and
 * after the last stop no tick can arrive (SIGVTALRM's default action would
 * end this process). */
#include "helpers.h"

#include "lua_watchdog.h"

#include <lauxlib.h>
#include <lualib.h>
#include <signal.h>
#include <string.h>
#include <time.h>

static int kills;

/* What lua_host.c's hook does, reduced: raise at every instruction once the
 * call is past its limit. */
static void limit_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    if (!mw_watchdog_expired())
        return;
    kills++;
    luaL_error(L, "over the limit");
}

static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs chunk as one watched call; returns the lua_pcall status. */
static int run(lua_State *L, const char *chunk, uint32_t limit_ms)
{
    int r;
    assert_int_equal(luaL_loadstring(L, chunk), LUA_OK);
    mw_watchdog_enter(L, limit_ms);
    r = lua_pcall(L, 0, 0, 0);
    mw_watchdog_leave();
    return r;
}

static void test_a_loop_is_stopped_past_its_limit_and_the_hook_removed(void **state)
{
    lua_State *L = luaL_newstate();
    double start;
    (void)state;

    luaL_openlibs(L);
    assert_rc(mw_watchdog_start(limit_hook), 0);
    start = cpu_seconds();
    kills = 0;
    assert_int_equal(run(L, "while true do end", 20), LUA_ERRRUN);
    assert_true(kills >= 1);
    /* Stopped after its 20 ms, well before a second of CPU. */
    assert_true(cpu_seconds() - start >= 0.015);
    assert_true(cpu_seconds() - start < 1.0);
    assert_string_equal(strstr(lua_tostring(L, -1), "over the limit"), "over the limit");
    lua_pop(L, 1);
    assert_null(lua_gethook(L));

    /* pcall in the script does not keep it going: every instruction raises. */
    kills = 0;
    assert_int_equal(run(L, "while true do pcall(function() while true do end end) end", 20),
                     LUA_ERRRUN);
    assert_true(kills >= 2);
    lua_pop(L, 1);

    /* A short call runs to its end; so does any call without a limit. */
    assert_int_equal(run(L, "local n = 0 for i = 1, 1000 do n = n + i end", 20), LUA_OK);
    assert_int_equal(run(L, "local n = 0 for i = 1, 1000 do n = n + i end", 0), LUA_OK);
    assert_false(mw_watchdog_expired());

    mw_watchdog_stop();
    lua_close(L);
}

static void test_after_the_last_stop_no_tick_arrives(void **state)
{
    struct sigaction now;
    double start;
    volatile unsigned long spin = 0;
    (void)state;

    /* Two users: the first stop keeps the timer. */
    assert_rc(mw_watchdog_start(limit_hook), 0);
    assert_rc(mw_watchdog_start(limit_hook), 0);
    mw_watchdog_stop();
    sigaction(SIGVTALRM, NULL, &now);
    assert_true(now.sa_handler != SIG_DFL);
    mw_watchdog_stop();
    sigaction(SIGVTALRM, NULL, &now);
    assert_true(now.sa_handler == SIG_DFL);
    /* 50 ms of CPU: a tick now would terminate the process. */
    start = cpu_seconds();
    while (cpu_seconds() - start < 0.05)
        spin++;
    assert_true(spin > 0);
    mw_watchdog_stop(); /* one too many changes nothing */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_loop_is_stopped_past_its_limit_and_the_hook_removed),
        cmocka_unit_test(test_after_the_last_stop_no_tick_arrives),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
