/* moonwire.queue: the queue out. queue.push(stream, fields) adds an entry
 * to a Redis stream (XADD stream MAXLEN ~ queue.push_maxlen * field value
 * ...) for the backend's workers (persistence, moderation, notifications),
 * and waits for the entry's id. It needs the backplane's Redis; a node alone
 * answers nil, "no cluster configured (cluster.redis)".
 */
#include "cluster.h"
#include "lua_api_int.h"
#include "lua_state.h"
#include "lua_task.h"
#include "node.h"
#include "moonwire/config.h"
#include "moonwire/metrics.h"

#include <hiredis/hiredis.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Fields of one entry, at most (each is two arguments). */
#define MAX_FIELDS 64
#define MAX_STREAM 256

typedef struct {
    mw_lua_task_t *w;
    mw_node_t *node;
} push_t;

static int push_id(lua_State *co, void *ud)
{
    const redisReply *r = ud;
    if (r != NULL && r->type == REDIS_REPLY_STRING) {
        lua_pushlstring(co, r->str, r->len);
        return 1;
    }
    luaL_pushfail(co);
    if (r != NULL && r->type == REDIS_REPLY_ERROR)
        lua_pushlstring(co, r->str, r->len);
    else
        lua_pushliteral(co, "redis unavailable");
    return 2;
}

static void on_added(void *ud, void *reply)
{
    push_t *p = ud;
    mw_lua_task_t *w = p->w;
    redisReply *r = reply;

    if (r != NULL && r->type == REDIS_REPLY_STRING)
        p->node->metrics->queue_pushed++;
    else
        p->node->metrics->queue_push_failures++;
    free(p);
    mw_lua_wake(w, push_id, reply);
}

static int queue_push(lua_State *L)
{
    mw_node_t *node = mw_lua_node(L);
    size_t slen;
    const char *stream = luaL_checklstring(L, 1, &slen);
    const char *argv[5 + 2 * MAX_FIELDS];
    size_t argl[5 + 2 * MAX_FIELDS];
    char maxlen[24];
    int argc = 0, nfields = 0;
    mw_lua_task_t *w;
    push_t *p;

    luaL_argcheck(L, slen > 0 && slen <= MAX_STREAM, 1, "stream must be 1 to 256 bytes");
    luaL_checktype(L, 2, LUA_TTABLE);
    if (node->cluster == NULL)
        return mw__lua_fail(L, "no cluster configured (cluster.redis)");
    snprintf(maxlen, sizeof(maxlen), "%zu", node->cfg->queue_push_maxlen);
    argv[argc++] = "XADD";
    argv[argc++] = stream;
    argv[argc++] = "MAXLEN";
    argv[argc++] = "~";
    argv[argc++] = maxlen;
    argv[argc++] = "*";
    luaL_checkstack(L, 4, "queue.push");
    lua_pushnil(L);
    while (lua_next(L, 2) != 0) {
        int kt = lua_type(L, -2), vt = lua_type(L, -1);
        if (kt != LUA_TSTRING || (vt != LUA_TSTRING && vt != LUA_TNUMBER))
            return luaL_argerror(L, 2, "fields must be strings (names) to strings or numbers");
        if (++nfields > MAX_FIELDS)
            return luaL_argerror(L, 2, "more than 64 fields");
        /* Converted in place (the value only: the key drives lua_next). The
         * table keeps the strings alive while the arguments are built. */
        lua_pushvalue(L, -1);
        lua_tostring(L, -1);
        lua_pushvalue(L, -3);
        lua_pushvalue(L, -2);
        lua_rawset(L, 2); /* an existing key: does not disturb the traversal */
        lua_pop(L, 2);
    }
    if (nfields == 0)
        return luaL_argerror(L, 2, "at least one field");
    lua_pushnil(L);
    while (lua_next(L, 2) != 0) {
        argv[argc] = lua_tolstring(L, -2, &argl[argc]);
        argc++;
        argv[argc] = lua_tolstring(L, -1, &argl[argc]);
        argc++;
        lua_pop(L, 1);
    }
    for (int i = 0; i < 6; i++)
        argl[i] = i == 1 ? slen : strlen(argv[i]);
    w = mw_lua_wait(L); /* raises outside a hook that can wait */
    p = malloc(sizeof(*p));
    if (p == NULL) {
        mw_lua_unwait(w);
        return mw__lua_fail(L, "not enough memory");
    }
    p->node = node;
    p->w = w;
    if (mw_cluster_command(node->cluster, argc, argv, argl, on_added, p) != 0) {
        mw_lua_unwait(p->w);
        free(p);
        node->metrics->queue_push_failures++;
        return mw__lua_fail(L, "redis unavailable");
    }
    return mw_lua_yield(L);
}

static const luaL_Reg queue_funcs[] = {
    {"push", queue_push},
    {NULL, NULL},
};

void mw__lua_open_queue(lua_State *L)
{
    luaL_newlib(L, queue_funcs);
    lua_setfield(L, -2, "queue");
}
