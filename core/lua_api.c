/* The `moonwire` module: its functions (publish, broadcast, send, lookup,
 * the clock, logging) and the module table, which gathers the parts made
 * elsewhere: conn objects (lua_api_conn.c), timers, the cache, JSON, JWT
 * and crypto, the functions that reach Redis, and the read-only config. Every argument from
 * Lua is checked (a wrong type is a Lua error naming the argument); runtime
 * conditions are nil, "closed" | "backpressure" | message, never an error.
 */
#include "lua_api.h"
#include "cluster.h"
#include "conn.h"
#include "history.h"
#include "lua_api_int.h"
#include "lua_api_timer.h"
#include "lua_state.h"
#include "node.h"
#include "registry.h"
#include "timer.h"
#include "topics.h"
#include "moonwire/config.h"
#include "moonwire/error.h"
#include "moonwire/log.h"

#include <lauxlib.h>
#include <lua.h>
#include <string.h>
#include <time.h>

/* Whether the backplane refused a message for the other nodes (r from
 * mw_cluster_publish, _broadcast or _send): then nil and why are pushed, and
 * the message is not to be delivered here either, so that a refused message
 * reaches nobody. 0 (sent) and MW_EAGAIN (it waits in the outbox) are not
 * refusals. */
static int cluster_refused(lua_State *L, int r)
{
    if (r == 0 || r == MW_EAGAIN)
        return 0;
    mw__lua_fail(L, r == MW_ELIMIT ? "outbox full" : r == MW_EINVAL ? "not a connection id"
                                                                    : mw_strerror(r));
    return 1;
}

/* The results of a send that reached n connections here: n, and "queued"
 * when it waits in the outbox for the other nodes. */
static int push_sent(lua_State *L, lua_Integer n, int r)
{
    lua_pushinteger(L, n);
    if (r != MW_EAGAIN)
        return 1;
    lua_pushliteral(L, "queued");
    return 2;
}

static int mw_publish(lua_State *L)
{
    mw_node_t *node = mw_lua_node(L);
    size_t tlen;
    const char *topic = mw__lua_check_topic(L, 1, &tlen);
    mw_conn_t *except;
    mw_frame_t *f;
    size_t n, except_len;
    const char *except_id;
    char except_buf[MW_ID_MAX];
    int op, nret = 0, r = 0;

    luaL_checkstring(L, 2);
    mw__lua_read_send_opts(L, 3, &except, &op, &except_id, &except_len, except_buf);
    f = mw__lua_make_frame(L, 2, op, &nret);
    if (f == NULL)
        return nret;
    if (mw_history_enabled(node->cfg, topic, tlen)) /* takes f over; may yield */
        return mw__lua_publish_history(L, topic, tlen, f, except_id, except_len);
    /* The other nodes' members get it through the backplane's outbox. */
    if (node->cluster != NULL) {
        r = mw_cluster_publish(node->cluster, topic, tlen, f, except_id, except_len);
        if (cluster_refused(L, r)) {
            mw_frame_unref(f);
            return 2;
        }
    }
    n = mw_topics_publish(node->topics, topic, tlen, f, except);
    mw_frame_unref(f);
    return push_sent(L, (lua_Integer)n, r);
}

static int mw_subscribers(lua_State *L)
{
    size_t len;
    const char *topic = luaL_checklstring(L, 1, &len);
    lua_pushinteger(L, (lua_Integer)mw_topics_count(mw_lua_node(L)->topics, topic, len));
    return 1;
}

static int mw_broadcast(lua_State *L)
{
    mw_node_t *node = mw_lua_node(L);
    mw_conn_t *except;
    mw_frame_t *f;
    mw_list_t *it, *tmp;
    lua_Integer n = 0;
    int op, nret = 0, r = 0;
    const char *except_id;
    char except_buf[MW_ID_MAX];
    size_t except_len;

    luaL_checkstring(L, 1);
    mw__lua_read_send_opts(L, 2, &except, &op, &except_id, &except_len, except_buf);
    f = mw__lua_make_frame(L, 1, op, &nret);
    if (f == NULL)
        return nret;
    if (node->cluster != NULL) {
        r = mw_cluster_broadcast(node->cluster, f, except_id, except_len);
        if (cluster_refused(L, r)) {
            mw_frame_unref(f);
            return 2;
        }
    }
    /* One frame for every recipient; each queue takes a reference. */
    mw_list_foreach_safe(it, tmp, &node->reg->open)
    {
        mw_conn_t *c = MW_CONTAINER_OF(it, mw_conn_t, open_link);
        if (c != except && mw_conn_send(c, f) == 0)
            n++;
    }
    mw_frame_unref(f);
    return push_sent(L, n, r);
}

static int mw_send(lua_State *L)
{
    size_t len;
    const char *id = luaL_checklstring(L, 1, &len);
    mw_node_t *node = mw_lua_node(L);
    mw_conn_t *c, *unused;
    mw_frame_t *f;
    int op, nret = 0, r;

    luaL_checkstring(L, 2);
    mw__lua_read_send_opts(L, 3, &unused, &op, NULL, NULL, NULL);
    if (node->cluster != NULL && !mw_ids_is_local(&node->reg->ids, id, len)) {
        /* Another node's connection: handed to the backplane, not confirmed. */
        f = mw__lua_make_frame(L, 2, op, &nret);
        if (f == NULL)
            return nret;
        r = mw_cluster_send(node->cluster, id, len, f);
        mw_frame_unref(f);
        if (cluster_refused(L, r))
            return 2;
        lua_pushboolean(L, 1);
        if (r != MW_EAGAIN)
            return 1;
        lua_pushliteral(L, "queued");
        return 2;
    }
    if (!mw_ids_valid(id, len))
        return mw__lua_fail(L, "not a connection id");
    c = mw_registry_find(node->reg, id, len);
    if (c == NULL || c->state != MW_CONN_OPEN)
        return mw__lua_fail(L, "closed");
    return mw__lua_send_frame(L, c, 2, op);
}

static int mw_connection(lua_State *L)
{
    size_t len;
    const char *id = luaL_checklstring(L, 1, &len);
    mw_conn_t *c = mw_registry_find(mw_lua_node(L)->reg, id, len);
    mw__lua_push_conn_object(L, c != NULL && c->state == MW_CONN_OPEN ? c : NULL);
    return 1;
}

static int connections_next(lua_State *L)
{
    mw_node_t *node = mw_lua_node(L);
    /* The iterator walks a snapshot of ids, so closing conns while iterating is safe. */
    lua_Integer i = lua_tointeger(L, lua_upvalueindex(2)) + 1;
    for (;; i++) {
        size_t len;
        const char *id;
        mw_conn_t *c;
        if (lua_rawgeti(L, lua_upvalueindex(1), i) != LUA_TSTRING)
            return 0;
        id = lua_tolstring(L, -1, &len);
        c = mw_registry_find(node->reg, id, len);
        lua_pop(L, 1);
        if (c != NULL && c->state == MW_CONN_OPEN && c->lua_ref != LUA_NOREF) {
            lua_pushinteger(L, i);
            lua_replace(L, lua_upvalueindex(2));
            mw__lua_push_conn_object(L, c);
            return 1;
        }
    }
}

static int mw_connections(lua_State *L)
{
    mw_node_t *node = mw_lua_node(L);
    mw_list_t *it;
    lua_Integer i = 0;

    lua_createtable(L, (int)node->reg->nopen, 0);
    mw_list_foreach(it, &node->reg->open)
    {
        mw_conn_t *c = MW_CONTAINER_OF(it, mw_conn_t, open_link);
        char id[MW_ID_MAX];
        if (c->state != MW_CONN_OPEN)
            continue;
        lua_pushlstring(L, id, mw_conn_id(c, id));
        lua_rawseti(L, -2, ++i);
    }
    lua_pushinteger(L, 0);
    lua_pushcclosure(L, connections_next, 2);
    return 1;
}

static int mw_count(lua_State *L)
{
    mw_node_t *node = mw_lua_node(L);
    mw_list_t *it;
    lua_Integer n = 0;
    mw_list_foreach(it, &node->reg->open)
    {
        n += MW_CONTAINER_OF(it, mw_conn_t, open_link)->state == MW_CONN_OPEN;
    }
    lua_pushinteger(L, n);
    return 1;
}

static int mw_now(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)mw_lua_node(L)->timers->now);
    return 1;
}

/* Wall-clock time in milliseconds since the epoch (for timestamps shown to
 * people; mw.now() is the monotonic clock timers use). */
static int mw_time(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lua_pushinteger(L, (lua_Integer)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    return 1;
}

/* log ------------------------------------------------------------------------- */

static int log_at(lua_State *L, mw_log_level_t level)
{
    int n = lua_gettop(L);
    if (!mw_log_enabled(level))
        return 0;
    lua_pushvalue(L, lua_upvalueindex(1)); /* string.format */
    lua_insert(L, 1);
    lua_call(L, n, 1);
    mw_log(level, "app: %s", lua_tostring(L, -1));
    return 0;
}

static int log_debug(lua_State *L)
{
    return log_at(L, MW_LOG_DEBUG);
}
static int log_info(lua_State *L)
{
    return log_at(L, MW_LOG_INFO);
}
static int log_warn(lua_State *L)
{
    return log_at(L, MW_LOG_WARN);
}
static int log_error(lua_State *L)
{
    return log_at(L, MW_LOG_ERROR);
}

static const luaL_Reg log_funcs[] = {
    {"debug", log_debug}, {"info", log_info}, {"warn", log_warn}, {"error", log_error}, {NULL, NULL},
};

static const luaL_Reg module_funcs[] = {
    {"publish", mw_publish},
    {"subscribers", mw_subscribers},
    {"broadcast", mw_broadcast},
    {"send", mw_send},
    {"connection", mw_connection},
    {"connections", mw_connections},
    {"count", mw_count},
    {"now", mw_now},
    {"time", mw_time},
    {NULL, NULL},
};

int mw_lua_open_api(lua_State *L)
{
    mw_node_t *node = mw_lua_node(L);
    mw__api_t *api;
    char err[256];

    api = lua_newuserdatauv(L, sizeof(*api), 0);
    memset(api, 0, sizeof(*api));
    mw_list_init(&api->timers);
    mw_list_init(&api->sleepers);
    lua_setfield(L, LUA_REGISTRYINDEX, MW_API_KEY);

    mw__lua_open_conns(L);
    luaL_newlib(L, module_funcs);
    mw__lua_open_timers(L);
    mw__lua_open_redis(L);
    mw__lua_open_history(L);
    mw__lua_open_http(L);
    mw__lua_open_queue(L);

    lua_newtable(L);
    lua_getglobal(L, "string");
    lua_getfield(L, -1, "format");
    lua_remove(L, -2);
    for (const luaL_Reg *r = log_funcs; r->name != NULL; r++) {
        lua_pushvalue(L, -1);
        lua_pushcclosure(L, r->func, 1);
        lua_setfield(L, -3, r->name);
    }
    lua_pop(L, 1);
    lua_setfield(L, -2, "log");

    if (mw__lua_open_json(L, err, sizeof(err)) != 0)
        mw_log_warn("moonwire.json is unavailable: %s", err);
    mw__lua_open_jwt(L, -1);
    lua_setfield(L, -3, "jwt");
    lua_setfield(L, -2, "json");
    mw__lua_open_crypto(L);
    lua_setfield(L, -2, "crypto");
    mw__lua_open_cache(L, api);
    lua_setfield(L, -2, "cache");

    lua_newtable(L);
    lua_setfield(L, -2, "state");

    mw__lua_push_config(L);
    lua_setfield(L, -2, "config");
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, "moonwire.module");

    lua_pushlstring(L, node->reg->ids.prefix, node->reg->ids.prefix_len - 1);
    lua_setfield(L, -2, "node");
    return 1;
}

void mw_lua_api_shutdown(lua_State *L)
{
    mw__api_t *api = mw__lua_api(L);
    if (api == NULL)
        return;
    /* Every generation: keep nothing but a generation that cannot exist. */
    mw_lua_api_cancel_timers(L, api->generation + 1, 1);
    mw__lua_close_sleeps(L, api);
    mw__lua_close_cache(L, api);
}
