/* The moonwire functions that reach the other nodes: redis and presence.
 *
 * With a backplane they wait for Redis: the hook's coroutine yields until
 * the reply and the loop goes on meanwhile (lua_host.c: mw_lua_wait /
 * mw_lua_wake). Standalone, presence answers from the local topics at once.
 * moonwire.redis refuses commands that would block or change the shared
 * connection.
 */
#include "lua_api_int.h"
#include "moonwire/cluster.h"
#include "moonwire/lua_host.h"
#include "moonwire/server.h"
#include "moonwire/topics.h"

#include <hiredis/hiredis.h>
#include <lauxlib.h>
#include <string.h>
#include <strings.h>

#define MAX_ARGS 256

/* These would block the shared command connection or change its state. */
static const char *const refused[] = {
    "subscribe", "psubscribe", "ssubscribe", "unsubscribe", "punsubscribe", "sunsubscribe",
    "monitor",   "blpop",      "brpop",      "brpoplpush",  "blmove",       "blmpop",
    "bzpopmin",  "bzpopmax",   "bzmpop",     "wait",        "waitaof",      "select",
    "quit",      "auth",       "reset",      "hello",       "client",       "multi",
    "exec",      "discard",    "watch",      "unwatch",     "shutdown",     "debug",
    NULL,
};

static void push_reply(lua_State *L, const redisReply *r, int nested)
{
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
        lua_pushlstring(L, r->str, r->len);
        break;
    case REDIS_REPLY_INTEGER:
        lua_pushinteger(L, (lua_Integer)r->integer);
        break;
    case REDIS_REPLY_NIL:
        if (nested)
            lua_pushboolean(L, 0); /* a hole in an array would end it */
        else
            lua_pushnil(L);
        break;
    case REDIS_REPLY_ARRAY:
        lua_createtable(L, (int)r->elements, 0);
        for (size_t i = 0; i < r->elements; i++) {
            push_reply(L, r->element[i], 1);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        break;
    case REDIS_REPLY_ERROR:
        lua_pushlstring(L, r->str, r->len);
        break;
    default:
        lua_pushnil(L);
        break;
    }
}

/* Pushes what moonwire.redis returns: the reply, or nil and an error. */
static int push_result(lua_State *co, void *ud)
{
    const redisReply *r = ud;
    if (r == NULL) {
        luaL_pushfail(co);
        lua_pushliteral(co, "redis unavailable");
        return 2;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        luaL_pushfail(co);
        lua_pushlstring(co, r->str, r->len);
        return 2;
    }
    push_reply(co, r, 0);
    return 1;
}

static void on_reply(void *ud, void *reply)
{
    mw_lua_wake(ud, push_result, reply);
}

static int api_redis(lua_State *L)
{
    mw_server_t *srv = mw_lua_server(L);
    int argc = lua_gettop(L);
    const char *argv[MAX_ARGS];
    size_t argl[MAX_ARGS];
    mw_lua_task_t *w;
    int r;

    luaL_checkstring(L, 1);
    luaL_argcheck(L, argc <= MAX_ARGS, MAX_ARGS + 1, "too many arguments");
    for (int i = 1; i <= argc; i++) {
        int t = lua_type(L, i);
        luaL_argcheck(L, t == LUA_TSTRING || t == LUA_TNUMBER, i, "strings and numbers only");
        argv[i - 1] = lua_tolstring(L, i, &argl[i - 1]);
    }
    for (const char *const *p = refused; *p != NULL; p++)
        if (strlen(*p) == argl[0] && strncasecmp(*p, argv[0], argl[0]) == 0)
            return luaL_argerror(L, 1, "this command would block or change the shared "
                                       "connection");
    if (srv->cluster == NULL)
        return mw__lua_fail(L, "no cluster configured (cluster.redis)");
    w = mw_lua_wait(L); /* raises outside a hook that can wait */
    r = mw_cluster_command(srv->cluster, argc, argv, argl, on_reply, w);
    if (r != 0) {
        /* Not sent: the task does not wait after all. */
        mw_lua_unwait(w);
        return mw__lua_fail(L, "redis unavailable");
    }
    return lua_yield(L, 0);
}

/* {id = info, ...} from an array reply id, info, id, info... */
static int push_presence(lua_State *co, void *ud)
{
    const redisReply *r = ud;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        luaL_pushfail(co);
        if (r != NULL && r->type == REDIS_REPLY_ERROR)
            lua_pushlstring(co, r->str, r->len);
        else
            lua_pushliteral(co, "redis unavailable");
        return 2;
    }
    lua_createtable(co, 0, (int)(r->elements / 2));
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        lua_pushlstring(co, r->element[i]->str, r->element[i]->len);
        lua_pushlstring(co, r->element[i + 1]->str, r->element[i + 1]->len);
        lua_rawset(co, -3);
    }
    return 1;
}

static void on_presence_reply(void *ud, void *reply)
{
    mw_lua_wake(ud, push_presence, reply);
}

static int api_presence(lua_State *L)
{
    mw_server_t *srv = mw_lua_server(L);
    size_t len;
    const char *topic = luaL_checklstring(L, 1, &len);
    const mw_topic_t *t;
    mw_lua_task_t *w;

    luaL_argcheck(L, len > 0 && len <= MW_TOPIC_MAX, 1, "topic must be 1 to 256 bytes");
    if (srv->cluster != NULL) {
        w = mw_lua_wait(L);
        if (mw_cluster_presence(srv->cluster, topic, len, on_presence_reply, w) != 0) {
            mw_lua_unwait(w);
            return mw__lua_fail(L, "redis unavailable");
        }
        return lua_yield(L, 0);
    }
    lua_newtable(L);
    t = mw_topics_find(&srv->topics, topic, len);
    if (t != NULL) {
        mw_list_t *it;
        mw_list_foreach(it, &t->members)
        {
            const mw_sub_t *s = MW_CONTAINER_OF(it, mw_sub_t, topic_link);
            char id[MW_ID_MAX];
            if (s->presence == NULL)
                continue;
            lua_pushlstring(L, id, mw_conn_id(s->conn, id));
            lua_pushlstring(L, s->presence, s->presence_len);
            lua_rawset(L, -3);
        }
    }
    return 1;
}

void mw__lua_open_redis(lua_State *L)
{
    lua_pushcfunction(L, api_redis);
    lua_setfield(L, -2, "redis");
    lua_pushcfunction(L, api_presence);
    lua_setfield(L, -2, "presence");
}
