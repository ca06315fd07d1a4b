/* moonwire.cache: a node-local key/value store with per-key TTL.
 *
 * Values live in a Lua table (stored as they are, not copied), expiry times
 * in a second one. Reads check the expiry, so an expired key is never seen;
 * a sweep every second frees what nobody reads again. The cache belongs to
 * the module, not the app, so it survives reloads.
 */
#include "lua_api_int.h"
#include "lua_state.h"
#include "node.h"
#include "timer.h"

#include <lauxlib.h>

#define SWEEP_MS 1000

static uint64_t now_ms(lua_State *L)
{
    return mw_lua_node(L)->timers->now;
}

/* Pushes the values and expires tables (in that order). */
static void push_tables(lua_State *L)
{
    mw__api_t *api = mw__lua_api(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, api->cache_values);
    lua_rawgeti(L, LUA_REGISTRYINDEX, api->cache_expires);
}

/* With values at -2 and expires at -1, drops the key at index k if it has expired. */
static void expire_key(lua_State *L, int k)
{
    lua_pushvalue(L, k);
    if (lua_rawget(L, -2) == LUA_TNUMBER && (uint64_t)lua_tointeger(L, -1) <= now_ms(L)) {
        lua_pushvalue(L, k);
        lua_pushnil(L);
        lua_rawset(L, -4);
        lua_pushvalue(L, k);
        lua_pushnil(L);
        lua_rawset(L, -5);
    }
    lua_pop(L, 1);
}

static lua_Integer check_ttl(lua_State *L, int idx)
{
    lua_Number ttl;
    if (lua_isnoneornil(L, idx))
        return 0;
    ttl = luaL_checknumber(L, idx);
    luaL_argcheck(L, ttl > 0 && ttl < 1e12, idx, "ttl must be milliseconds above 0");
    return (lua_Integer)ttl;
}

static int cache_get(lua_State *L)
{
    luaL_checkstring(L, 1);
    push_tables(L);
    expire_key(L, 1);
    lua_pushvalue(L, 1);
    lua_rawget(L, -3);
    return 1;
}

/* Sets values[key] = value at v, and the expiry from ttl (0: none). */
static void store(lua_State *L, int key, int v, lua_Integer ttl)
{
    push_tables(L);
    lua_pushvalue(L, key);
    lua_pushvalue(L, v);
    lua_rawset(L, -4);
    lua_pushvalue(L, key);
    if (ttl > 0 && !lua_isnil(L, v))
        lua_pushinteger(L, (lua_Integer)now_ms(L) + ttl);
    else
        lua_pushnil(L);
    lua_rawset(L, -3);
    lua_pop(L, 2);
}

static int cache_set(lua_State *L)
{
    lua_Integer ttl;
    luaL_checkstring(L, 1);
    luaL_checkany(L, 2);
    ttl = check_ttl(L, 3);
    store(L, 1, 2, ttl);
    lua_pushboolean(L, 1);
    return 1;
}

static int cache_incr(lua_State *L)
{
    lua_Integer ttl;
    int has_ttl;

    luaL_checkstring(L, 1);
    if (!lua_isnoneornil(L, 2))
        luaL_checknumber(L, 2);
    ttl = check_ttl(L, 3);
    has_ttl = ttl > 0;
    lua_settop(L, 3);
    push_tables(L); /* 4: values, 5: expires */
    expire_key(L, 1);
    lua_pushvalue(L, 1);
    switch (lua_rawget(L, 4)) { /* 6: current */
    case LUA_TNIL:
        lua_pop(L, 1);
        lua_pushinteger(L, 0);
        break;
    case LUA_TNUMBER:
        break;
    default:
        return mw__lua_fail(L, "not a number");
    }
    if (lua_isnoneornil(L, 2))
        lua_pushinteger(L, 1);
    else
        lua_pushvalue(L, 2);
    lua_arith(L, LUA_OPADD); /* 6: new value */
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 6);
    lua_rawset(L, 4);
    if (has_ttl) {
        lua_pushvalue(L, 1);
        lua_pushinteger(L, (lua_Integer)now_ms(L) + ttl);
        lua_rawset(L, 5);
    }
    return 1; /* Redis INCR semantics: an existing expiry is kept */
}

static int cache_del(lua_State *L)
{
    int existed;
    luaL_checkstring(L, 1);
    lua_settop(L, 1);
    push_tables(L); /* 2: values, 3: expires */
    expire_key(L, 1);
    lua_pushvalue(L, 1);
    existed = lua_rawget(L, 2) != LUA_TNIL;
    lua_pop(L, 1);
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    lua_rawset(L, 2);
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    lua_rawset(L, 3);
    lua_pushboolean(L, existed);
    return 1;
}

static void on_sweep(mw_timer_t *t)
{
    mw__api_t *api = t->data;
    lua_State *L = api->L;
    uint64_t now = mw_lua_node(L)->timers->now;

    /* Setting existing fields to nil during lua_next is allowed and does not allocate. */
    lua_rawgeti(L, LUA_REGISTRYINDEX, api->cache_values);
    lua_rawgeti(L, LUA_REGISTRYINDEX, api->cache_expires);
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
        if ((uint64_t)lua_tointeger(L, -1) <= now) {
            lua_pop(L, 1);
            lua_pushvalue(L, -1);
            lua_pushnil(L);
            lua_rawset(L, -5);
            lua_pushvalue(L, -1);
            lua_pushnil(L);
            lua_rawset(L, -4);
        } else {
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 2);
}

void mw__lua_open_cache(lua_State *L, mw__api_t *api)
{
    static const luaL_Reg funcs[] = {
        {"get", cache_get}, {"set", cache_set}, {"incr", cache_incr}, {"del", cache_del}, {NULL, NULL},
    };
    mw_node_t *node = mw_lua_node(L);

    lua_newtable(L);
    api->cache_values = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_newtable(L);
    api->cache_expires = luaL_ref(L, LUA_REGISTRYINDEX);
    api->L = L;
    mw_timer_init(&api->cache_gc, on_sweep, api);
    mw_timer_start(node->timers, &api->cache_gc, SWEEP_MS, SWEEP_MS);
    luaL_newlib(L, funcs);
}

void mw__lua_close_cache(lua_State *L, mw__api_t *api)
{
    mw_timer_stop(mw_lua_node(L)->timers, &api->cache_gc);
}
