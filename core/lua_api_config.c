/* moonwire.config: a read-only view of a copy of the configuration, nested
 * tables included; a reload makes it again from the configuration as it is
 * then. */
#include "lua_api_config.h"
#include "lua_api_int.h"
#include "lua_state.h"
#include "node.h"
#include "moonwire/config.h"

#include <lauxlib.h>
#include <lua.h>

static int readonly(lua_State *L)
{
    return luaL_error(L, "moonwire.config is read-only");
}

static int readonly_len(lua_State *L)
{
    lua_getmetatable(L, 1);
    lua_getfield(L, -1, "__index");
    lua_pushinteger(L, (lua_Integer)lua_rawlen(L, -1));
    return 1;
}

static int readonly_pairs(lua_State *L)
{
    lua_getglobal(L, "next");
    lua_getmetatable(L, 1);
    lua_getfield(L, -1, "__index");
    lua_remove(L, -2);
    lua_pushnil(L);
    return 3;
}

/* Replaces the table on top with a read-only view of it, nested tables
 * included (32 levels; deeper ones stay as they are); pairs, ipairs and #
 * see through the view. Each level takes up to six stack slots. */
static void make_readonly(lua_State *L, int depth)
{
    luaL_checkstack(L, 6, "moonwire.config nested too deep");
    if (depth < 32) {
        lua_pushnil(L);
        while (lua_next(L, -2) != 0) {
            if (lua_type(L, -1) == LUA_TTABLE) {
                make_readonly(L, depth + 1);
                lua_pushvalue(L, -2);
                lua_insert(L, -2);
                lua_rawset(L, -4); /* the nested table becomes its view */
            } else {
                lua_pop(L, 1);
            }
        }
    }
    lua_newtable(L);             /* the view */
    lua_createtable(L, 0, 4);    /* its metatable */
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, readonly);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, readonly_pairs);
    lua_setfield(L, -2, "__pairs");
    lua_pushcfunction(L, readonly_len);
    lua_setfield(L, -2, "__len");
    lua_setmetatable(L, -2);
    lua_remove(L, -2);
}

/* Pushes a read-only view of a copy of the configuration as it is now. */
void mw__lua_push_config(lua_State *L)
{
    mw_config_push(mw_lua_node(L)->cfg, L);
    make_readonly(L, 0);
}

int mw_lua_api_refresh_config(lua_State *L)
{
    if (lua_getfield(L, LUA_REGISTRYINDEX, "moonwire.module") != LUA_TTABLE)
        return 0;
    mw__lua_push_config(L);
    lua_setfield(L, -2, "config");
    return 0;
}
