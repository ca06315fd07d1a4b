/* The Lua state of a host: its allocator (lua.memory_limit, and a pool for
 * small blocks), the time limit (lua.time_limit, through the watchdog), the
 * protected call, and what a hook that fails does: logged with its
 * traceback, counted, reported to on_error, its connection closed with 1011
 * unless on_error says otherwise. See lua_state.h.
 */
#include "lua_state.h"
#include "conn.h"
#include "lua_watchdog.h"
#include "node.h"
#include "moonwire/error.h"
#include "moonwire/log.h"
#include "moonwire/metrics.h"

#include <errno.h>
#include <stdarg.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TASK_TAG MW_LUA_TASK_TAG /* see mw__lua_host */

void mw__lua_set_host(lua_State *L, mw_lua_t *lh, int task)
{
    *(uintptr_t *)lua_getextraspace(L) = (uintptr_t)lh | (task ? TASK_TAG : 0);
}

int mw_lua_is_task(lua_State *L)
{
    return (*(uintptr_t *)lua_getextraspace(L) & TASK_TAG) != 0;
}

mw_node_t *mw_lua_node(lua_State *L)
{
    return mw__lua_host(L)->node;
}

lua_State *mw_lua_state(mw_lua_t *lh)
{
    return lh->L;
}

static void time_limit_hook(lua_State *L, lua_Debug *ar);

static void set_time_limit(mw_lua_t *lh, uint32_t ms)
{
    lh->time_limit = ms;
    if (ms == 0 || lh->watchdog)
        return;
    if (mw_watchdog_start(time_limit_hook) == 0)
        lh->watchdog = 1;
    else
        mw_log_warn("lua.time_limit: no CPU timer (%s); hooks run without a time limit",
                    strerror(errno));
}

void mw_lua_set_limits(mw_lua_t *lh, uint32_t time_limit, size_t memory_limit)
{
    set_time_limit(lh, time_limit);
    lh->mem_limit = memory_limit;
}

size_t mw_lua_hooks_waiting(const mw_lua_t *lh)
{
    return lh->nwaiting;
}

size_t mw_lua_memory(const mw_lua_t *lh)
{
    return lh->mem_used;
}

/* Lua's allocator: counts what the state holds against lua.memory, and
 * takes blocks up to 504 bytes from free lists, so that the string of each
 * message, which the collector frees some thousands at a time, does not go
 * through malloc and free; and forgets the checked message (checked_text)
 * when its block goes. */
static void *lalloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    mw_lua_t *lh = ud;
    size_t old = ptr != NULL ? osize : 0;
    void *p;

    /* The checked message's block goes (or moves): its bytes are no longer
     * that message's. One comparison: with it NULL, the difference is huge. */
    if ((uintptr_t)lh->checked_text - (uintptr_t)ptr < old)
        lh->checked_text = NULL;
    if (nsize == 0) {
        mw_pool_free(&lh->blocks, ptr, old);
        lh->mem_used -= old;
        return NULL;
    }
    if (nsize > old && lh->mem_limit != 0 &&
        lh->mem_used + (nsize - old) > lh->mem_limit + lh->mem_slack)
        return NULL; /* Lua collects and retries once, then raises "not enough memory" */
    p = mw_pool_realloc(&lh->blocks, ptr, old, nsize);
    if (p == NULL)
        return NULL;
    lh->mem_used = lh->mem_used - old + nsize;
    return p;
}

/* The count hook of lua.time_limit. The watchdog sets it with a period of 1
 * on the thread of a call past its limit (lua_stdlib.c makes sure that is
 * the thread running, coroutines included): from then on every instruction
 * raises, so a pcall in the script can not keep the call going. Called with
 * ar NULL by the C functions of long loops that check the limit themselves
 * (mw_watchdog_check). */
static void time_limit_hook(lua_State *L, lua_Debug *ar)
{
    mw_lua_t *lh = mw__lua_host(L);
    (void)ar;

    if (lh->depth == 0 || !mw_watchdog_expired()) {
        /* A thread left with the hook by an earlier kill: no longer needed. */
        if (ar != NULL)
            lua_sethook(L, NULL, 0, 0);
        return;
    }
    lh->timed_out = 1;
    lua_sethook(L, time_limit_hook, LUA_MASKCOUNT, 1);
    luaL_error(L, "time limit exceeded (lua.time_limit = %d ms)", (int)lh->time_limit);
}

static int msgh(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            msg = lua_tostring(L, -1);
        else
            msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int mw__lua_pcall(mw_lua_t *lh, int nargs, int nret)
{
    lua_State *L = lh->L;
    int r;

    if (lh->depth++ == 0) {
        lh->timed_out = 0;
        mw_watchdog_enter(L, lh->time_limit);
    }
    r = lua_pcall(L, nargs, nret, 1);
    if (--lh->depth == 0)
        mw_watchdog_leave();
    if (r != LUA_OK && lh->timed_out)
        r = LUA_ERRRUN; /* reported as a time-limit kill below */
    return r;
}

static mw_lua_report_cb reporter; /* see mw_lua_set_reporter */

void mw_lua_set_reporter(mw_lua_report_cb cb)
{
    reporter = cb;
}

void mw__lua_report(mw_lua_t *lh, mw_log_level_t level, const char *traceback, const char *fmt,
                    ...)
{
    char text[4096];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    mw_log(level, "app: %s", text);
    if (reporter != NULL)
        reporter(lh->node, level, text, traceback != NULL ? traceback : "");
}

const char *mw__lua_split_traceback(char *full)
{
    char *tb = strstr(full, "\nstack traceback:");
    if (tb == NULL)
        return "";
    *tb = '\0';
    return tb + 1;
}

static int push_str(lua_State *L)
{
    lua_pushstring(L, lua_touserdata(L, 1));
    return 1;
}

void mw__lua_push_string(lua_State *L, const char *s)
{
    lua_pushcfunction(L, push_str);
    lua_pushlightuserdata(L, (void *)s);
    lua_pcall(L, 1, 1, 0);
}

static void push_conn_or_nil(mw_lua_t *lh, mw_conn_t *c)
{
    if (c != NULL && c->lua_ref != LUA_NOREF)
        lua_rawgeti(lh->L, LUA_REGISTRYINDEX, c->lua_ref);
    else
        lua_pushnil(lh->L);
}

void mw__lua_hook_failed(mw_lua_t *lh, mw_conn_t *c, const char *what, int status)
{
    lua_State *L = lh->L;
    mw_metrics_t *m = lh->node->metrics;
    char id[MW_ID_MAX] = "-";
    char *full;
    const char *tb, *kind;
    int keep = 0;

    lh->mem_slack = MW_LUA_ERROR_SLACK;
    full = strdup(lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
    lua_pop(L, 1);
    if (lh->timed_out) {
        m->budget_kills++;
        kind = "ran over its time limit";
    } else if (status == LUA_ERRMEM) {
        m->memory_kills++;
        kind = "ran out of memory (lua.memory_limit)";
    } else {
        kind = "raised an error";
    }
    m->hook_errors++;
    lua_gc(L, LUA_GCCOLLECT);
    if (c != NULL)
        mw_conn_id(c, id);
    tb = full != NULL ? mw__lua_split_traceback(full) : "";
    mw__lua_report(lh, MW_LOG_ERROR, tb, "%s %s (conn %s): %s", what, kind, id,
                   full ? full : "out of memory");
    if (*tb)
        mw_log_debug("app: %s", tb);

    if (lh->hooks[MW_HOOK_ERROR] != LUA_NOREF && strcmp(what, "on_error") != 0) {
        const char *msg = full ? full : "not enough memory";
        lua_rawgeti(L, LUA_REGISTRYINDEX, lh->hooks[MW_HOOK_ERROR]);
        push_conn_or_nil(lh, c);
        if (mw__lua_push_arg(lh, L, msg, strlen(msg)) == NULL) {
            lua_pop(L, 2);
            mw__lua_report(lh, MW_LOG_ERROR, NULL, "no memory left to run on_error (conn %s)", id);
        } else if (mw__lua_pcall(lh, 2, 1) == LUA_OK) {
            keep = lua_toboolean(L, -1);
            lua_pop(L, 1);
        } else {
            char *e = strdup(lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
            const char *etb = e != NULL ? mw__lua_split_traceback(e) : "";
            lua_pop(L, 1);
            m->hook_errors++;
            mw__lua_report(lh, MW_LOG_ERROR, etb, "on_error raised an error too (conn %s): %s", id,
                           e ? e : "?");
            free(e);
        }
    }
    free(full);
    lua_gc(L, LUA_GCCOLLECT);
    lh->mem_slack = 0;
    if (c != NULL && c->state == MW_CONN_OPEN && !keep)
        mw_conn_fail(c, 1011, "internal error");
}

void mw__lua_unpushed(mw_lua_t *lh, mw_conn_t *c, const char *what)
{
    mw__lua_push_string(lh->L, "not enough memory for the hook's arguments");
    mw__lua_hook_failed(lh, c, what, LUA_ERRMEM);
}

int mw_lua_call(mw_lua_t *lh, mw_conn_t *c, const char *what, int nargs, int nret)
{
    int r = mw__lua_pcall(lh, nargs, nret);
    if (r == LUA_OK)
        return 1;
    mw__lua_hook_failed(lh, c, what, r);
    return 0;
}

int mw__lua_push_hook(mw_lua_t *lh, int h)
{
    if (lh->hooks[h] == LUA_NOREF)
        return 0;
    lua_rawgeti(lh->L, LUA_REGISTRYINDEX, lh->hooks[h]);
    return 1;
}

int mw__lua_open(mw_lua_t *lh, uint32_t time_limit)
{
    lh->blocks = (mw_pool_t)MW_POOL_INIT(4, 32, 1u << 20); /* up to 504 bytes; 1 MB kept */
    lh->L = lua_newstate(lalloc, lh);
    if (lh->L == NULL) {
        mw_pool_drain(&lh->blocks);
        return MW_ENOMEM;
    }
    set_time_limit(lh, time_limit); /* before the script loads: it counts too */
    mw__lua_set_host(lh->L, lh, 0);
    lua_pushcfunction(lh->L, msgh); /* stays at index 1 */
    return 0;
}

void mw__lua_close(mw_lua_t *lh)
{
    lua_close(lh->L);
    lh->L = NULL;
    mw_pool_drain(&lh->blocks);
    if (lh->watchdog)
        mw_watchdog_stop();
    lh->watchdog = 0;
}
