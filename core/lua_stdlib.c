/* The standard library as an app sees it: Lua's own, with the few functions
 * replaced through which code could run out of lua.time_limit's reach.
 *
 * The limit works through Lua's count hook, which the watchdog sets on the
 * thread it knows is running (lua_watchdog.c). Lua runs some code with hooks
 * off, and some on threads the watchdog does not know of:
 * - an xpcall message handler, when the error came from the hook itself (Lua
 *   calls the handler before it unwinds, with hooks still off): here a
 *   handler is not called for the time-limit error, which goes on up as is;
 * - __gc finalizers, which Lua always runs with hooks off: setmetatable (and
 *   debug.setmetatable) refuse a metatable with a __gc field, getmetatable
 *   (and debug.getmetatable) do not give out the metatables of the
 *   libraries' objects that have one, and debug.getregistry is refused;
 * - debug hooks of the script's own (which run with hooks off, and replace
 *   ours): debug.sethook is refused, and so is debug.debug, which reads the
 *   console;
 * - coroutines: coroutine.resume, wrap and close tell the watchdog which
 *   thread runs while they run one, so it reaches every coroutine, however
 *   it was made (and they refuse the threads the host runs hooks in).
 * - C functions that loop long (pattern matching, string.rep, table.move...):
 *   lua_loops.c's, which check the limit as they go, replace them.
 * None of these keeps a reference to Lua's own function where a script could
 * find it (an upvalue is visible to debug.getupvalue).
 */
#include "lua_stdlib.h"
#include "lua_loops.h"
#include "lua_state.h"
#include "lua_watchdog.h"

#include <lauxlib.h>
#include <lua.h>

/* Coroutines ------------------------------------------------------------------- */

/* Resumes co with the narg values on top of L, watched as the running thread.
 * Returns the number of values it yielded or returned, moved onto L, or -1
 * with the error on top of L. */
static int resume(lua_State *L, lua_State *co, int narg)
{
    lua_State *was;
    int status, nres;

    if (!lua_checkstack(co, narg)) {
        lua_pushliteral(L, "too many arguments to resume");
        return -1;
    }
    lua_xmove(L, co, narg);
    was = mw_watchdog_switch(co);
    status = lua_resume(co, L, narg, &nres);
    mw_watchdog_switch(was);
    if (status != LUA_OK && status != LUA_YIELD) {
        lua_xmove(co, L, 1); /* the error */
        return -1;
    }
    if (!lua_checkstack(L, nres + 1)) {
        lua_pop(co, nres);
        lua_pushliteral(L, "too many results to resume");
        return -1;
    }
    lua_xmove(co, L, nres);
    return nres;
}

/* The coroutine at idx, which must not be one the host runs a hook in (it
 * resumes those itself, with the reply they wait for). */
static lua_State *check_co(lua_State *L, int idx)
{
    lua_State *co = lua_tothread(L, idx);
    luaL_argexpected(L, co != NULL, idx, "coroutine");
    if (co != L && mw_lua_is_task(co))
        luaL_argerror(L, idx, "a hook's own coroutine is moonwire's to resume");
    return co;
}

static int co_resume(lua_State *L)
{
    lua_State *co = check_co(L, 1);
    int n = resume(L, co, lua_gettop(L) - 1);

    if (n < 0) {
        lua_pushboolean(L, 0);
        lua_insert(L, -2);
        return 2; /* false, error */
    }
    lua_pushboolean(L, 1);
    lua_insert(L, -(n + 1));
    return n + 1; /* true, results */
}

/* Closes co's pending to-be-closed variables (their __close metamethods run
 * in co) with co watched. Returns lua_resetthread's status; on an error, the
 * error is on top of co. */
static int reset(lua_State *co)
{
    lua_State *was = mw_watchdog_switch(co);
    int status = lua_resetthread(co);
    mw_watchdog_switch(was);
    return status;
}

/* The function coroutine.wrap returns: resumes its coroutine (upvalue 1) and
 * raises its errors, with the position of the call added to a string one. */
static int wrapped(lua_State *L)
{
    lua_State *co = lua_tothread(L, lua_upvalueindex(1));
    int n = resume(L, co, lua_gettop(L));

    if (n >= 0)
        return n;
    if (lua_status(co) != LUA_OK && lua_status(co) != LUA_YIELD) {
        /* The coroutine died of it: its pending variables close first. */
        int status = reset(co);
        lua_xmove(co, L, 1);
        if (status == LUA_ERRMEM)
            return lua_error(L);
    }
    if (lua_type(L, -1) == LUA_TSTRING) {
        luaL_where(L, 1);
        lua_insert(L, -2);
        lua_concat(L, 2);
    }
    return lua_error(L);
}

static int co_wrap(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_State *co = lua_newthread(L);
    lua_pushvalue(L, 1);
    lua_xmove(L, co, 1);
    lua_pushcclosure(L, wrapped, 1);
    return 1;
}

/* Whether co may be closed: dead, or suspended (not running, not resuming
 * another coroutine). */
static int closable(lua_State *L, lua_State *co)
{
    lua_Debug ar;

    if (co == L)
        return 0;
    switch (lua_status(co)) {
    case LUA_YIELD:
        return 1;
    case LUA_OK:
        return !lua_getstack(co, 0, &ar); /* a frame: it resumed the one running */
    default:
        return 1; /* dead of an error */
    }
}

static int co_close(lua_State *L)
{
    lua_State *co = check_co(L, 1);
    int status;

    if (!closable(L, co))
        return luaL_error(L, "cannot close a %s coroutine", co == L ? "running" : "normal");
    status = reset(co);
    if (status == LUA_OK) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushboolean(L, 0);
    lua_xmove(co, L, 1);
    return 2;
}

/* xpcall ----------------------------------------------------------------------- */

/* The message handler xpcall installs: the script's (upvalue 1), except for
 * the time-limit error, which it must not see (it would run with hooks off,
 * unstoppable). */
static int guarded_handler(lua_State *L)
{
    if (mw_watchdog_expired())
        return 1; /* the error as it is */
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

/* After the call (or its error): true and the results, or false and the
 * handler's result. */
static int xpcall_done(lua_State *L, int status, lua_KContext base)
{
    if (status != LUA_OK && status != LUA_YIELD) {
        lua_pushboolean(L, 0);
        lua_pushvalue(L, -2);
        return 2;
    }
    return lua_gettop(L) - (int)base;
}

/* xpcall(f, handler, ...): Lua's, with guarded_handler around the handler.
 * Yields across it as Lua's does (a hook that waits may use it). */
static int x_pcall(lua_State *L)
{
    int n = lua_gettop(L);

    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushvalue(L, 2);
    lua_pushcclosure(L, guarded_handler, 1);
    lua_replace(L, 2);  /* 1 f, 2 handler, 3.. args */
    lua_pushboolean(L, 1);
    lua_pushvalue(L, 1);
    lua_rotate(L, 3, 2); /* 1 f, 2 handler, 3 true, 4 f, 5.. args */
    return xpcall_done(L, lua_pcallk(L, n - 2, LUA_MULTRET, 2, 2, xpcall_done), 2);
}

/* Metatables ------------------------------------------------------------------- */

/* Lua marks an object for finalization when its new metatable has a __gc
 * field of any value but nil (false included, to be replaced later). */
static void refuse_gc(lua_State *L, int mt)
{
    if (lua_type(L, mt) == LUA_TTABLE) {
        lua_pushliteral(L, "__gc");
        if (lua_rawget(L, mt) != LUA_TNIL)
            luaL_error(L, "__gc metamethods are not available in moonwire apps "
                          "(a finalizer runs out of lua.time_limit's reach)");
    }
    lua_settop(L, 2);
}

/* setmetatable(t, mt): Lua's rules (a table; a protected metatable stays),
 * and no __gc. */
static int set_metatable(lua_State *L)
{
    int t = lua_type(L, 2);

    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
    if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL)
        return luaL_error(L, "cannot change a protected metatable");
    refuse_gc(L, 2);
    lua_setmetatable(L, 1);
    return 1;
}

/* The metatable of the value at 1, as getmetatable gives it (honour is 1:
 * a __metatable field stands in for it) or debug.getmetatable (0), except
 * that a metatable with a finalizer (a library's userdata: files, lua-cjson's
 * instances) is not given out, so its __gc can not be swapped for a script's
 * function. Tables can not have one (set_metatable). */
static int get_metatable(lua_State *L, int honour)
{
    luaL_checkany(L, 1);
    if (!lua_getmetatable(L, 1)) {
        lua_pushnil(L);
        return 1;
    }
    if (honour && luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL)
        return 1;
    lua_pushliteral(L, "__gc");
    if (lua_rawget(L, -2) != LUA_TNIL) {
        lua_pushliteral(L, "protected by moonwire");
        return 1;
    }
    lua_pop(L, 1);
    return 1;
}

static int plain_getmetatable(lua_State *L)
{
    return get_metatable(L, 1);
}

static int debug_getmetatable(lua_State *L)
{
    return get_metatable(L, 0);
}

static int debug_setmetatable(lua_State *L)
{
    int t = lua_type(L, 2);

    luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
    refuse_gc(L, 2);
    lua_setmetatable(L, 1);
    return 1;
}

/* debug.sethook and debug.debug. */
static int unavailable(lua_State *L)
{
    return luaL_error(L, "%s is not available in moonwire apps (%s)",
                      lua_tostring(L, lua_upvalueindex(1)), lua_tostring(L, lua_upvalueindex(2)));
}

static void replace(lua_State *L, const char *lib, const char *name, lua_CFunction fn)
{
    lua_getglobal(L, lib);
    lua_pushcfunction(L, fn);
    lua_setfield(L, -2, name);
    lua_pop(L, 1);
}

static void refuse(lua_State *L, const char *name, const char *why)
{
    lua_getglobal(L, "debug");
    lua_pushfstring(L, "debug.%s", name);
    lua_pushstring(L, why);
    lua_pushcclosure(L, unavailable, 2);
    lua_setfield(L, -2, name);
    lua_pop(L, 1);
}

int mw_lua_stdlib_open(lua_State *L)
{
    mw_lua_loops_install(L); /* pattern matching and the other C loops */
    replace(L, "coroutine", "resume", co_resume);
    replace(L, "coroutine", "wrap", co_wrap);
    replace(L, "coroutine", "close", co_close);
    lua_pushcfunction(L, x_pcall);
    lua_setglobal(L, "xpcall");
    lua_pushcfunction(L, set_metatable);
    lua_setglobal(L, "setmetatable");
    lua_pushcfunction(L, plain_getmetatable);
    lua_setglobal(L, "getmetatable");
    replace(L, "debug", "setmetatable", debug_setmetatable);
    replace(L, "debug", "getmetatable", debug_getmetatable);
    refuse(L, "sethook", "a debug hook runs out of lua.time_limit's reach");
    refuse(L, "debug", "it reads the console and blocks the server");
    refuse(L, "getregistry", "it reaches the finalizers of the libraries");
    return 0;
}
