/* The `moonwire` module: conn objects, sending, broadcast, lookup, timers,
 * logging, state and config. Every argument from Lua is checked (a wrong
 * type is a Lua error naming the argument); runtime conditions are
 * nil, "closed" | "backpressure" | message, never an error.
 */
#include "lua_api.h"
#include "cluster.h"
#include "conn.h"
#include "history.h"
#include "lua_api_int.h"
#include "lua_host.h"
#include "node.h"
#include "registry.h"
#include "timer.h"
#include "topics.h"
#include "utf8.h"
#include "moonwire/config.h"
#include "moonwire/error.h"
#include "moonwire/log.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

mw__api_t *mw__lua_api(lua_State *L)
{
    mw__api_t *api;
    lua_getfield(L, LUA_REGISTRYINDEX, MW_API_KEY);
    api = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return api;
}

int mw__lua_fail(lua_State *L, const char *msg)
{
    luaL_pushfail(L);
    lua_pushstring(L, msg);
    return 2;
}

static int push_send_result(lua_State *L, int r)
{
    switch (r) {
    case 0:
        lua_pushboolean(L, 1);
        return 1;
    case MW_ECLOSED:
        return mw__lua_fail(L, "closed");
    case MW_EBACKPRESSURE:
        return mw__lua_fail(L, "backpressure");
    default:
        return mw__lua_fail(L, mw_strerror(r));
    }
}

/* conn objects --------------------------------------------------------------- */

void mw_lua_api_push_conn(lua_State *L, mw_conn_t *c)
{
    mw_lconn_t *u = lua_newuserdatauv(L, sizeof(mw_lconn_t), 2);
    u->conn = c;
    u->id_len = (uint8_t)mw_conn_id(c, u->id);
    luaL_setmetatable(L, MW_CONN_META);
    lua_newtable(L);
    lua_setiuservalue(L, -2, 1); /* conn.data */
}

void mw_lua_api_set_request(lua_State *L)
{
    lua_setiuservalue(L, -2, 2);
}

void mw_lua_api_detach_conn(lua_State *L, int idx)
{
    mw_lconn_t *u = lua_touserdata(L, idx); /* always a conn object here */
    if (u != NULL)
        u->conn = NULL;
}

/* The object at idx when it is a conn object (its metatable is the one
 * create_conn_meta made: compared by address, no lookup); raises otherwise. */
static mw_lconn_t *check_lconn(lua_State *L, int idx)
{
    mw_lconn_t *u = lua_touserdata(L, idx);
    if (u != NULL && lua_getmetatable(L, idx)) {
        const void *mt = lua_topointer(L, -1);
        lua_pop(L, 1);
        if (mt == mw_lua_conn_meta(L))
            return u;
    }
    luaL_typeerror(L, idx, MW_CONN_META);
    return NULL;
}

/* Returns the open connection of the conn object at idx, or NULL when closed. */
static mw_conn_t *check_conn(lua_State *L, int idx)
{
    mw_lconn_t *u = check_lconn(L, idx);
    if (u->conn == NULL || u->conn->state != MW_CONN_OPEN)
        return NULL;
    return u->conn;
}

/* Reads the kind argument: "text" (default) or "binary". Returns the opcode. */
static int check_kind(lua_State *L, int idx)
{
    size_t len;
    const char *kind;

    if (lua_isnoneornil(L, idx))
        return MW_OP_TEXT;
    kind = luaL_checklstring(L, idx, &len); /* on every send: no strcmp loop */
    if (len == 4 && memcmp(kind, "text", 4) == 0)
        return MW_OP_TEXT;
    if (len == 6 && memcmp(kind, "binary", 6) == 0)
        return MW_OP_BINARY;
    return luaL_argerror(L, idx, lua_pushfstring(L, "invalid option '%s'", kind));
}

/* Builds the frame for data (at idx) of kind op. Returns NULL with a failure
 * pushed (2 values) when text is not valid UTF-8 or memory is short. */
static mw_frame_t *make_frame(lua_State *L, int idx, int op, int *nret)
{
    size_t len;
    const char *data = luaL_checklstring(L, idx, &len);
    mw_frame_t *f;

    if (op == MW_OP_TEXT && !mw_utf8_valid((const uint8_t *)data, len)) {
        *nret = mw__lua_fail(L, "text is not valid UTF-8 (send it as \"binary\")");
        return NULL;
    }
    f = mw_frame_new((uint8_t)op, data, len);
    if (f == NULL)
        *nret = mw__lua_fail(L, "out of memory");
    return f;
}

/* Sends the string at idx to c as one message of kind op, and pushes what
 * conn:send and moonwire.send return. */
static int send_frame(lua_State *L, mw_conn_t *c, int idx, int op)
{
    int nret = 0, r;
    mw_frame_t *f = make_frame(L, idx, op, &nret);

    if (f == NULL)
        return nret;
    r = mw_conn_send(c, f);
    mw_frame_unref(f);
    return push_send_result(L, r);
}

static int conn_send(lua_State *L)
{
    mw_conn_t *c = check_conn(L, 1);
    int op = check_kind(L, 3);

    luaL_checkstring(L, 2);
    if (c == NULL)
        return mw__lua_fail(L, "closed");
    return send_frame(L, c, 2, op);
}

static int conn_close(lua_State *L)
{
    mw_conn_t *c = check_conn(L, 1);
    lua_Integer code = luaL_optinteger(L, 2, 1000);
    size_t rlen = 0;
    const char *reason = luaL_optlstring(L, 3, "", &rlen);

    luaL_argcheck(L, code == 1000 || (code >= 3000 && code <= 4999), 2,
                  "close code must be 1000 or 3000..4999");
    luaL_argcheck(L, rlen <= 123, 3, "reason longer than 123 bytes");
    luaL_argcheck(L, mw_utf8_valid((const uint8_t *)reason, rlen), 3, "reason is not UTF-8");
    if (c == NULL)
        return mw__lua_fail(L, "closed");
    mw_conn_close(c, (uint16_t)code, reason, rlen);
    lua_pushboolean(L, 1);
    return 1;
}

static int conn_is_open(lua_State *L)
{
    lua_pushboolean(L, check_conn(L, 1) != NULL);
    return 1;
}

static int conn_buffered(lua_State *L)
{
    mw_conn_t *c = check_conn(L, 1);
    if (c == NULL)
        return mw__lua_fail(L, "closed");
    lua_pushinteger(L, (lua_Integer)mw_conn_buffered(c));
    return 1;
}

static int conn_index(lua_State *L)
{
    mw_lconn_t *u;
    const char *key;

    /* Methods first, without checking the object: each method checks its
     * own self, and conn:send looks its method up on every call. */
    lua_pushvalue(L, 2);
    if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL)
        return 1;
    u = check_lconn(L, 1);
    key = luaL_checkstring(L, 2);
    if (strcmp(key, "id") == 0) {
        lua_pushlstring(L, u->id, u->id_len);
    } else if (strcmp(key, "data") == 0) {
        lua_getiuservalue(L, 1, 1);
    } else if (strcmp(key, "request") == 0) {
        lua_getiuservalue(L, 1, 2);
    } else if (strcmp(key, "protocol") == 0) {
        if (u->conn != NULL && u->conn->protocol != NULL)
            lua_pushstring(L, u->conn->protocol);
        else
            lua_pushnil(L);
    } else {
        lua_pushnil(L);
    }
    return 1;
}

static int conn_newindex(lua_State *L)
{
    return luaL_error(L, "conn fields are read-only (keep your own in conn.data)");
}

static int conn_tostring(lua_State *L)
{
    mw_lconn_t *u = check_lconn(L, 1);
    lua_pushfstring(L, "moonwire.conn(%s%s)", u->id,
                    u->conn != NULL && u->conn->state == MW_CONN_OPEN ? "" : ", closed");
    return 1;
}

static const char *check_topic(lua_State *L, int idx, size_t *len)
{
    const char *t = luaL_checklstring(L, idx, len);
    luaL_argcheck(L, *len > 0 && *len <= MW_TOPIC_MAX, idx, "topic must be 1 to 256 bytes");
    return t;
}

static int conn_subscribe(lua_State *L)
{
    mw_conn_t *c = check_conn(L, 1);
    size_t len, ilen = 0;
    const char *topic = check_topic(L, 2, &len), *info = NULL;
    int r;

    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        if (lua_getfield(L, 3, "presence") != LUA_TNIL) {
            luaL_argcheck(L, lua_type(L, -1) == LUA_TSTRING, 3, "'presence' must be a string");
            info = lua_tolstring(L, -1, &ilen);
            luaL_argcheck(L, ilen <= 4096, 3, "'presence' longer than 4096 bytes");
        }
        lua_pop(L, 1); /* the string stays referenced by the options table */
    }
    if (c == NULL)
        return mw__lua_fail(L, "closed");
    r = mw_topics_subscribe(c->conns->node->topics, c, topic, len);
    if (r == MW_ENOMEM && mw_history_drop_idle(c->conns->node->history) > 0)
        r = mw_topics_subscribe(c->conns->node->topics, c, topic, len); /* memory given back */
    if (r >= 0 && info != NULL)
        r = mw_topics_set_presence(c->conns->node->topics, c, topic, len, info, ilen);
    if (r < 0)
        return mw__lua_fail(L, mw_strerror(r));
    lua_pushboolean(L, 1);
    return 1;
}

static int conn_unsubscribe(lua_State *L)
{
    mw_conn_t *c = check_conn(L, 1);
    size_t len;
    const char *topic = check_topic(L, 2, &len);

    if (c == NULL)
        return mw__lua_fail(L, "closed");
    lua_pushboolean(L, mw_topics_unsubscribe(c->conns->node->topics, c, topic, len));
    return 1;
}

static int conn_topics(lua_State *L)
{
    mw_conn_t *c = check_conn(L, 1);
    mw_list_t *it;
    lua_Integer i = 0;

    if (c == NULL)
        return mw__lua_fail(L, "closed");
    lua_newtable(L);
    mw_list_foreach(it, &c->subs)
    {
        const mw_topic_t *t = MW_CONTAINER_OF(it, mw_sub_t, conn_link)->topic;
        lua_pushlstring(L, t->name, t->len);
        lua_rawseti(L, -2, ++i);
    }
    return 1;
}

static const luaL_Reg conn_methods[] = {
    {"subscribe", conn_subscribe},
    {"unsubscribe", conn_unsubscribe},
    {"topics", conn_topics},
    {"send", conn_send},
    {"close", conn_close},
    {"is_open", conn_is_open},
    {"buffered", conn_buffered},
    {NULL, NULL},
};

static void create_conn_meta(lua_State *L)
{
    luaL_newmetatable(L, MW_CONN_META);
    mw_lua_set_conn_meta(L, lua_topointer(L, -1)); /* the registry keeps it alive */
    luaL_newlib(L, conn_methods);
    lua_pushcclosure(L, conn_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, conn_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, conn_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, MW_CONN_META);
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
}

/* Pushes the conn object of c, or nil when it has none (not open). */
static void push_conn_object(lua_State *L, mw_conn_t *c)
{
    if (c != NULL && c->lua_ref != LUA_NOREF)
        lua_rawgeti(L, LUA_REGISTRYINDEX, c->lua_ref);
    else
        lua_pushnil(L);
}

/* Finds the connection an argument names: a conn object or an id string. */
static mw_conn_t *opt_target(lua_State *L, int idx)
{
    mw_node_t *node = mw_lua_node(L);
    if (lua_type(L, idx) == LUA_TSTRING) {
        size_t len;
        const char *id = lua_tolstring(L, idx, &len);
        return mw_registry_find(node->reg, id, len);
    }
    if (lua_isnoneornil(L, idx))
        return NULL;
    return check_lconn(L, idx)->conn;
}

/* Reads {except = conn|id, binary = bool} at idx. */
/* Reads {except = conn|id, binary = bool} at idx. The except id (for the
 * other nodes) is also given when asked for. */
static void read_send_opts_id(lua_State *L, int idx, mw_conn_t **except, int *op,
                              const char **except_id, size_t *except_len)
{
    *except = NULL;
    *op = MW_OP_TEXT;
    if (except_id != NULL) {
        *except_id = NULL;
        *except_len = 0;
    }
    if (lua_isnoneornil(L, idx))
        return;
    luaL_checktype(L, idx, LUA_TTABLE);
    if (lua_getfield(L, idx, "binary") != LUA_TNIL) {
        luaL_argcheck(L, lua_type(L, -1) == LUA_TBOOLEAN, idx, "'binary' must be a boolean");
        *op = lua_toboolean(L, -1) ? MW_OP_BINARY : MW_OP_TEXT;
    }
    lua_pop(L, 1);
    if (lua_getfield(L, idx, "except") != LUA_TNIL) {
        luaL_argcheck(L,
                      lua_type(L, -1) == LUA_TSTRING || luaL_testudata(L, -1, MW_CONN_META) != NULL,
                      idx, "'except' must be a conn or an id");
        *except = opt_target(L, lua_gettop(L));
        if (except_id != NULL) {
            if (lua_type(L, -1) == LUA_TSTRING) {
                *except_id = lua_tolstring(L, -1, except_len);
            } else {
                mw_lconn_t *u = lua_touserdata(L, -1);
                *except_id = u->id;
                *except_len = u->id_len;
            }
        }
    }
    /* The id stays valid: it lives in the opts table or the conn object. */
    lua_pop(L, 1);
}

static void read_send_opts(lua_State *L, int idx, mw_conn_t **except, int *op)
{
    read_send_opts_id(L, idx, except, op, NULL, NULL);
}

/* moonwire functions --------------------------------------------------------- */

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
    const char *topic = check_topic(L, 1, &tlen);
    mw_conn_t *except;
    mw_frame_t *f;
    size_t n, except_len;
    const char *except_id;
    int op, nret = 0, r = 0;

    luaL_checkstring(L, 2);
    read_send_opts_id(L, 3, &except, &op, &except_id, &except_len);
    f = make_frame(L, 2, op, &nret);
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
    size_t except_len;

    luaL_checkstring(L, 1);
    read_send_opts_id(L, 2, &except, &op, &except_id, &except_len);
    f = make_frame(L, 1, op, &nret);
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
    read_send_opts(L, 3, &unused, &op);
    if (node->cluster != NULL && !mw_ids_is_local(&node->reg->ids, id, len)) {
        /* Another node's connection: handed to the backplane, not confirmed. */
        f = make_frame(L, 2, op, &nret);
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
    return send_frame(L, c, 2, op);
}

static int mw_connection(lua_State *L)
{
    size_t len;
    const char *id = luaL_checklstring(L, 1, &len);
    mw_conn_t *c = mw_registry_find(mw_lua_node(L)->reg, id, len);
    push_conn_object(L, c != NULL && c->state == MW_CONN_OPEN ? c : NULL);
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
            push_conn_object(L, c);
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

int mw_lua_open_api(lua_State *L)
{
    mw_node_t *node = mw_lua_node(L);
    mw__api_t *api;
    char err[256];

    api = lua_newuserdatauv(L, sizeof(*api), 0);
    memset(api, 0, sizeof(*api));
    mw_list_init(&api->timers);
    lua_setfield(L, LUA_REGISTRYINDEX, MW_API_KEY);

    create_conn_meta(L);
    luaL_newlib(L, module_funcs);
    mw__lua_open_timers(L);
    mw__lua_open_redis(L);
    mw__lua_open_history(L);

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
    lua_setfield(L, -2, "json");
    mw__lua_open_cache(L, api);
    lua_setfield(L, -2, "cache");

    lua_newtable(L);
    lua_setfield(L, -2, "state");

    /* config: a read-only view of a copy */
    mw_config_push(node->cfg, L);
    make_readonly(L, 0);
    lua_setfield(L, -2, "config");
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, "moonwire.module");

    lua_pushlstring(L, node->reg->ids.prefix, node->reg->ids.prefix_len - 1);
    lua_setfield(L, -2, "node");
    return 1;
}

int mw_lua_api_refresh_config(lua_State *L)
{
    if (lua_getfield(L, LUA_REGISTRYINDEX, "moonwire.module") != LUA_TTABLE)
        return 0;
    mw_config_push(mw_lua_node(L)->cfg, L);
    make_readonly(L, 0);
    lua_setfield(L, -2, "config");
    return 0;
}

void mw_lua_api_shutdown(lua_State *L)
{
    mw__api_t *api = mw__lua_api(L);
    if (api == NULL)
        return;
    /* Every generation: keep nothing but a generation that cannot exist. */
    mw_lua_api_cancel_timers(L, api->generation + 1, 1);
    mw__lua_close_cache(L, api);
}
