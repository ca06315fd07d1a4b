/* libFuzzer harness: the JSON codec behind moonwire.json (lua-cjson in safe
 * mode, as lua_api.c configures it). Decoding never raises; whatever decodes
 * re-encodes, and that re-encoding decodes again.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdlib.h>

static lua_State *L;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    L = luaL_newstate();
    luaL_openlibs(L);
    if (luaL_dostring(L, "local c = require('cjson.safe').new()\n"
                         "c.encode_sparse_array(true)\n"
                         "c.encode_max_depth(128)\n"
                         "c.decode_max_depth(128)\n"
                         "json = c\n") != LUA_OK)
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int top = lua_gettop(L);

    lua_getglobal(L, "json");
    lua_getfield(L, -1, "decode");
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 2, 0) != LUA_OK)
        abort(); /* the safe codec must not raise */
    if (!lua_isnil(L, -2)) {
        lua_getfield(L, top + 1, "encode");
        lua_pushvalue(L, -3);
        if (lua_pcall(L, 1, 2, 0) != LUA_OK)
            abort();
        if (lua_isstring(L, -2)) {
            lua_getfield(L, top + 1, "decode");
            lua_pushvalue(L, -3);
            if (lua_pcall(L, 1, 2, 0) != LUA_OK || lua_isnil(L, -2))
                abort(); /* what it encodes, it decodes */
        }
    }
    lua_settop(L, top);
    lua_gc(L, LUA_GCSTEP, 0);
    return 0;
}
