/* libFuzzer harness: moonwire.json as apps get it (core/lua_api_json.c:
 * lua-cjson's safe codec, our depth limit, whole numbers made integers at
 * every depth). Decoding never raises; what decodes is never too deep to
 * re-encode (both count levels the same way), and what re-encodes (not NaN or
 * Infinity, which lua-cjson reads but does not write) decodes again. Seeds in fuzz/corpus/json hold deep and wide
 * inputs.
 */
#include "lua_api_int.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static lua_State *L;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char err[256];
    (void)argc;
    (void)argv;
    L = luaL_newstate();
    luaL_openlibs(L);
    if (mw__lua_open_json(L, err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz_json: %s\n", err);
        abort();
    }
    lua_setglobal(L, "json");
    return 0;
}

/* Calls json[fn] on the value at idx; leaves 2 results. */
static void call(const char *fn, int idx)
{
    int top = lua_gettop(L);
    lua_getglobal(L, "json");
    lua_getfield(L, -1, fn);
    lua_remove(L, -2);
    lua_pushvalue(L, idx);
    if (lua_pcall(L, 1, 2, 0) != LUA_OK)
        abort(); /* it must never raise */
    if (lua_gettop(L) != top + 2)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int top = lua_gettop(L);

    lua_pushlstring(L, (const char *)data, size);
    call("decode", top + 1);
    if (lua_isnil(L, -2)) {
        if (!lua_isstring(L, -1))
            abort(); /* nil, and why */
    } else {
        call("encode", top + 2);
        if (lua_isstring(L, -2)) {
            call("decode", lua_gettop(L) - 1);
            if (lua_isnil(L, -2))
                abort(); /* what it encodes, it decodes */
        } else if (strcmp(lua_tostring(L, -1), "too deep") == 0) {
            abort();
        }
    }
    lua_settop(L, top);
    lua_gc(L, LUA_GCSTEP, 0);
    return 0;
}
