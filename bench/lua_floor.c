/* What one on_message call costs in liblua alone: the floor under
 * callgrind-echo's figure, with no socket, no frame and no queue.
 *
 *   build/mw_bench_lua_floor N function|table
 *
 * Runs N times what moonwire's echo does around Lua for each message (the
 * hook, the conn object and the kind from the registry, the message as a
 * new 64-byte string, a resume on a thread), with scripts/echo.lua's hook,
 * `conn:send(data, kind)`, calling a send that reads its arguments as
 * conn_send does (the box, its length, the two strings) and returns true.
 * The state's small blocks come from a pool of 16-byte classes, as
 * moonwire's do (lua_state.c). The conn object's `__index` is a function
 * (moonwire's: conn.id, conn.data and conn.request need the object) or a
 * table of methods (what a metatable per connection would allow).
 *
 * bench/callgrind.sh lua-floor runs it under callgrind for N and 2N calls:
 * the difference over N is the instructions of one call, startup left out.
 */
#include "pool.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char HOOK[] = "return function(conn, data, kind) conn:send(data, kind) end";

static mw_pool_t blocks = MW_POOL_INIT(4, 32, 1u << 20);
static size_t sent;

static void *lalloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    size_t old = ptr != NULL ? osize : 0;

    (void)ud;
    if (nsize == 0) {
        mw_pool_free(&blocks, ptr, old);
        return NULL;
    }
    return mw_pool_realloc(&blocks, ptr, old, nsize);
}

static int conn_send(lua_State *L)
{
    size_t len, klen;
    const char *data, *kind;

    if (lua_touserdata(L, 1) == NULL || lua_rawlen(L, 1) != 16)
        return luaL_error(L, "not a conn");
    data = lua_tolstring(L, 2, &len);
    kind = lua_tolstring(L, 3, &klen);
    if (data == NULL || kind == NULL)
        return luaL_error(L, "bad arguments");
    sent += len;
    lua_pushboolean(L, 1);
    return 1;
}

static int conn_index(lua_State *L)
{
    size_t len;
    const char *key = lua_tolstring(L, 2, &len);

    if (key != NULL && len == 4 && memcmp(key, "send", 4) == 0)
        lua_pushcfunction(L, conn_send);
    else
        lua_pushnil(L);
    return 1;
}

int main(int argc, char **argv)
{
    long n = argc > 2 ? atol(argv[1]) : 0;
    int table = argc > 2 && strcmp(argv[2], "table") == 0;
    lua_State *L, *co;
    int hook, conn, kind;
    char msg[64];

    if (n <= 0 || (!table && strcmp(argv[2], "function") != 0)) {
        fprintf(stderr, "usage: mw_bench_lua_floor N function|table\n");
        return 2;
    }
    if ((L = lua_newstate(lalloc, NULL)) == NULL)
        return 1;
    luaL_openlibs(L);
    if (luaL_dostring(L, HOOK) != LUA_OK) {
        fprintf(stderr, "%s\n", lua_tostring(L, -1));
        return 1;
    }
    hook = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_newuserdatauv(L, 16, 2); /* moonwire's box: 16 bytes, 2 user values */
    lua_createtable(L, 0, 1);
    if (table) {
        lua_createtable(L, 0, 1);
        lua_pushcfunction(L, conn_send);
        lua_setfield(L, -2, "send");
    } else {
        lua_pushcfunction(L, conn_index);
    }
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
    conn = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushliteral(L, "text");
    kind = luaL_ref(L, LUA_REGISTRYINDEX);
    co = lua_newthread(L);
    luaL_ref(L, LUA_REGISTRYINDEX);

    memset(msg, 'x', sizeof(msg));
    for (long i = 0; i < n; i++) {
        int nres;

        msg[i % 64] = (char)('a' + i % 26); /* a new string each time */
        lua_rawgeti(co, LUA_REGISTRYINDEX, hook);
        lua_rawgeti(co, LUA_REGISTRYINDEX, conn);
        lua_pushlstring(co, msg, sizeof(msg));
        lua_rawgeti(co, LUA_REGISTRYINDEX, kind);
        if (lua_resume(co, L, 3, &nres) != LUA_OK) {
            fprintf(stderr, "%s\n", lua_tostring(co, -1));
            return 1;
        }
        lua_settop(co, 0);
    }
    printf("%ld calls, %zu bytes sent\n", n, sent);
    lua_close(L);
    mw_pool_drain(&blocks);
    return 0;
}
