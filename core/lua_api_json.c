/* moonwire.json: lua-cjson's "safe" codec behind checks of our own. The
 * codec's depth limit is ours (MW_JSON_MAX_DEPTH), reported as "too deep";
 * whole numbers come out as integers; nothing here raises into the core.
 */
#include "lua_api_int.h"

#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static int fail(lua_State *L, const char *msg)
{
    luaL_pushfail(L);
    lua_pushstring(L, msg);
    return 2;
}

/* lua-cjson's messages for nesting past its limit ("Found too many nested
 * data structures (129) at character 129", "Cannot serialise, excessive
 * nesting (129)") become the one documented answer. */
static int too_deep(const char *msg)
{
    return msg != NULL && (strncasecmp(msg, "found too many nested", 21) == 0 ||
                           strncasecmp(msg, "cannot serialise, excessive nesting", 35) == 0);
}

/* Calls the cjson function in upvalue 1 on the argument at 1 (the only one
 * left). Returns 1 with the result at 1, or 2 with nil, err pushed. */
static int call_cjson(lua_State *L)
{
    lua_settop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    if (lua_isnil(L, -1))
        return fail(L, "lua-cjson is not installed (Debian package lua-cjson)");
    lua_insert(L, 1);
    lua_call(L, 1, 2);
    if (lua_isnil(L, 1)) {
        if (too_deep(lua_tostring(L, 2)))
            return fail(L, "too deep");
        return 2; /* nil, err */
    }
    lua_settop(L, 1);
    return 1;
}

static int json_encode(lua_State *L)
{
    luaL_checkany(L, 1);
    return call_cjson(L);
}

/* A float that JSON readers in Lua 5.4 should give as an integer: whole, and
 * held exactly by a double. */
static int whole(lua_Number n)
{
    return n == floor(n) && fabs(n) <= 9007199254740992.0;
}

/* lua-cjson 2.1 decodes every number as a float (1 reads back as 1.0). Whole
 * numbers become integers. Works on the table at idx, in place, and on the
 * tables in it: depth levels at most (the decoder's own limit), each of which
 * takes three stack slots. Returns 0, or -1 when the stack can not grow. */
static int integerize(lua_State *L, int idx, int depth)
{
    if (depth > MW_JSON_MAX_DEPTH || !lua_checkstack(L, 3))
        return -1;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        if (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1)) {
            lua_Number n = lua_tonumber(L, -1);
            if (whole(n)) {
                lua_pushvalue(L, -2);
                lua_pushinteger(L, (lua_Integer)n);
                lua_rawset(L, idx); /* an existing key: allowed during the walk */
            }
        } else if (lua_type(L, -1) == LUA_TTABLE) {
            if (integerize(L, lua_gettop(L), depth + 1) != 0)
                return -1;
        }
        lua_pop(L, 1);
    }
    return 0;
}

static int json_decode(lua_State *L)
{
    luaL_checkstring(L, 1);
    if (call_cjson(L) != 1)
        return 2;
    if (lua_type(L, 1) == LUA_TTABLE) {
        if (integerize(L, 1, 1) != 0)
            return fail(L, "too deep");
    } else if (lua_type(L, 1) == LUA_TNUMBER && !lua_isinteger(L, 1) && whole(lua_tonumber(L, 1))) {
        lua_pushinteger(L, (lua_Integer)lua_tonumber(L, 1));
    }
    return 1;
}

/* Loads and configures a private cjson.safe instance; pushes it. */
static int load_cjson(lua_State *L)
{
    lua_getglobal(L, "require");
    lua_pushliteral(L, "cjson.safe");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "new");
    lua_call(L, 0, 1);
    lua_getfield(L, -1, "encode_sparse_array");
    lua_pushboolean(L, 1);
    lua_call(L, 1, 0);
    lua_getfield(L, -1, "encode_max_depth");
    lua_pushinteger(L, MW_JSON_MAX_DEPTH);
    lua_call(L, 1, 0);
    lua_getfield(L, -1, "decode_max_depth");
    lua_pushinteger(L, MW_JSON_MAX_DEPTH);
    lua_call(L, 1, 0);
    return 1;
}

int mw__lua_open_json(lua_State *L, char *err, size_t errlen)
{
    int ok;

    lua_pushcfunction(L, load_cjson);
    ok = lua_pcall(L, 0, 1, 0) == LUA_OK;
    if (!ok) {
        snprintf(err, errlen, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
        lua_pop(L, 1);
    }
    lua_newtable(L);
    for (int i = 0; i < 2; i++) {
        const char *name = i == 0 ? "encode" : "decode";
        if (ok)
            lua_getfield(L, -2, name);
        else
            lua_pushnil(L); /* each call answers nil, "lua-cjson is not installed" */
        lua_pushcclosure(L, i == 0 ? json_encode : json_decode, 1);
        lua_setfield(L, -2, name);
    }
    if (ok) {
        lua_getfield(L, -2, "null");
        lua_setfield(L, -2, "null");
        lua_remove(L, -2);
    }
    return ok ? 0 : -1;
}
