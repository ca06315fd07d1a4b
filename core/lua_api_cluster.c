/* The moonwire functions that reach the other nodes: redis, presence,
 * history, publish to a history topic, and cluster (the backplane's state).
 *
 * With a backplane they wait for Redis: the hook's coroutine yields until
 * the reply and the loop goes on meanwhile (lua_host.c: mw_lua_wait /
 * mw_lua_wake). Standalone, presence answers from the local topics at once.
 * moonwire.redis refuses commands that would block or change the shared
 * connection. A publish to a history topic goes through the outbox
 * (cluster.h): while Redis is away it waits there, and publish says so.
 */
#include "cluster.h"
#include "conn.h"
#include "history.h"
#include "lua_api_int.h"
#include "lua_state.h"
#include "lua_task.h"
#include "node.h"
#include "registry.h"
#include "scheduler.h"
#include "timer.h"
#include "topics.h"
#include "moonwire/config.h"
#include "moonwire/error.h"
#include "moonwire/metrics.h"

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

/* Pushes a reply as Lua values: arrays as tables, at any depth hiredis gives
 * (each level takes two stack slots, checked). Raises only for memory or a
 * stack that can not grow: the caller runs in a protected call. */
static void push_reply(lua_State *L, const redisReply *r, int nested)
{
    luaL_checkstack(L, 2, "redis reply nested too deep");
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

/* Pushes fail and why a reply is not what was asked: Redis's error, or that
 * Redis could not be reached (no reply at all, or one of the wrong shape). */
static int push_reply_failure(lua_State *co, const redisReply *r)
{
    if (r != NULL && r->type == REDIS_REPLY_ERROR) {
        luaL_pushfail(co);
        lua_pushlstring(co, r->str, r->len);
        return 2;
    }
    return mw__lua_fail(co, "redis unavailable");
}

/* Pushes what moonwire.redis returns: the reply, or nil and an error. */
static int push_result(lua_State *co, void *ud)
{
    const redisReply *r = ud;
    if (r == NULL || r->type == REDIS_REPLY_ERROR)
        return push_reply_failure(co, r);
    push_reply(co, r, 0);
    return 1;
}

static void on_reply(void *ud, void *reply)
{
    mw_lua_wake(ud, push_result, reply);
}

static int api_redis(lua_State *L)
{
    mw_node_t *node = mw_lua_node(L);
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
    if (node->cluster == NULL)
        return mw__lua_fail(L, "no cluster configured (cluster.redis)");
    w = mw_lua_wait(L); /* raises outside a hook that can wait */
    r = mw_cluster_command(node->cluster, argc, argv, argl, on_reply, w);
    if (r != 0) {
        /* Not sent: the task does not wait after all. */
        mw_lua_unwait(w);
        return mw__lua_fail(L, "redis unavailable");
    }
    return mw_lua_yield(L);
}

/* {id = info, ...} from an array reply id, info, id, info... */
static int push_presence(lua_State *co, void *ud)
{
    const redisReply *r = ud;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY)
        return push_reply_failure(co, r);
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
    mw_node_t *node = mw_lua_node(L);
    size_t len;
    const char *topic = luaL_checklstring(L, 1, &len);
    const mw_topic_t *t;
    mw_lua_task_t *w;

    luaL_argcheck(L, len > 0 && len <= MW_TOPIC_MAX, 1, "topic must be 1 to 256 bytes");
    if (node->cluster != NULL) {
        w = mw_lua_wait(L);
        if (mw_cluster_presence(node->cluster, topic, len, on_presence_reply, w) != 0) {
            mw_lua_unwait(w);
            return mw__lua_fail(L, "redis unavailable");
        }
        return mw_lua_yield(L);
    }
    lua_newtable(L);
    t = mw_topics_find(node->topics, topic, len);
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

/* The fields up, delayed and outbox of st into the table on top. */
static void push_status(lua_State *L, const mw_cluster_status_t *st)
{
    lua_pushboolean(L, st->up);
    lua_setfield(L, -2, "up");
    lua_pushboolean(L, st->delayed);
    lua_setfield(L, -2, "delayed");
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, (lua_Integer)st->messages);
    lua_setfield(L, -2, "messages");
    lua_pushinteger(L, (lua_Integer)st->bytes);
    lua_setfield(L, -2, "bytes");
    lua_pushinteger(L, (lua_Integer)st->oldest);
    lua_setfield(L, -2, "age");
    lua_setfield(L, -2, "outbox");
}

/* moonwire.cluster(): nil on a node alone; else what the backplane is doing,
 * and each shard (one for a single Redis) in `shards`. */
static int api_cluster(lua_State *L)
{
    mw_node_t *node = mw_lua_node(L);
    mw_cluster_status_t st;
    unsigned n;

    if (node->cluster == NULL) {
        lua_pushnil(L);
        return 1;
    }
    n = mw_cluster_shards(node->cluster);
    luaL_checkstack(L, 6, NULL);
    lua_createtable(L, 0, 4);
    lua_createtable(L, (int)n, 0);
    for (unsigned i = 0; i < n; i++) {
        mw_cluster_shard_status(node->cluster, i, &st);
        lua_createtable(L, 0, 5);
        push_status(L, &st);
        lua_pushinteger(L, (lua_Integer)i);
        lua_setfield(L, -2, "index");
        lua_pushstring(L, st.where);
        lua_setfield(L, -2, "redis");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "shards");
    mw_cluster_status(node->cluster, &st);
    lua_pushboolean(L, st.up);
    lua_setfield(L, -2, "up");
    lua_pushboolean(L, st.delayed);
    lua_setfield(L, -2, "delayed");
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, (lua_Integer)st.messages);
    lua_setfield(L, -2, "messages");
    lua_pushinteger(L, (lua_Integer)st.bytes);
    lua_setfield(L, -2, "bytes");
    lua_pushinteger(L, (lua_Integer)st.oldest);
    lua_setfield(L, -2, "age");
    lua_pushinteger(L, (lua_Integer)node->metrics->cluster_outbox_dropped);
    lua_setfield(L, -2, "dropped");
    lua_pushinteger(L, (lua_Integer)node->metrics->cluster_outbox_refused);
    lua_setfield(L, -2, "refused");
    lua_setfield(L, -2, "outbox");
    return 1;
}

void mw__lua_open_redis(lua_State *L)
{
    lua_pushcfunction(L, api_redis);
    lua_setfield(L, -2, "redis");
    lua_pushcfunction(L, api_presence);
    lua_setfield(L, -2, "presence");
    lua_pushcfunction(L, api_cluster);
    lua_setfield(L, -2, "cluster");
}

/* History ------------------------------------------------------------------------------- */

/* Delivers a history message to this node's members, except one (by id). */
static size_t deliver_local(mw_node_t *node, const char *topic, size_t len, mw_frame_t *f,
                            const char *except, size_t except_len)
{
    mw_conn_t *ex = except_len > 0 ? mw_registry_find(node->reg, except, except_len) : NULL;
    return mw_topics_publish(node->topics, topic, len, f, ex);
}

/* A publish to a history topic, from the call until it leaves the outbox. */
typedef struct {
    mw_node_t *node;
    mw_lua_task_t *w; /* the hook waiting for the offset; NULL when none waits (any more) */
    mw_frame_t *f;    /* the message as published, for local delivery if Redis refuses it */
    const redisReply *reply; /* while the hook is woken */
    uint64_t offset;
    size_t count;
    size_t topic_len, except_len;
    char topic[MW_TOPIC_MAX];
    char except[MW_ID_MAX];
} hpub_t;

static int push_published(lua_State *co, void *ud)
{
    hpub_t *p = ud;
    if (p->offset == 0)
        return push_reply_failure(co, p->reply);
    lua_pushinteger(co, (lua_Integer)p->offset);
    lua_pushinteger(co, (lua_Integer)p->count);
    return 2;
}

/* What publish returns for a message that waits in the outbox: offset 0 (it
 * gets one when it goes through), nobody reached here yet, "queued". */
static int push_queued(lua_State *L)
{
    lua_pushinteger(L, 0);
    lua_pushinteger(L, 0);
    lua_pushliteral(L, "queued");
    return 3;
}

static int push_queued_ud(lua_State *co, void *ud)
{
    (void)ud;
    return push_queued(co);
}

/* It was sent, but the connection went before the reply: it waits in the
 * outbox again, and a hook waiting for its offset hears that it is queued. */
static void on_history_requeued(void *ud)
{
    hpub_t *p = ud;
    mw_lua_task_t *w = p->w;

    if (w != NULL) {
        p->w = NULL;
        mw_lua_wake(w, push_queued_ud, NULL);
    }
}

static void on_history_published(void *ud, void *reply)
{
    hpub_t *p = ud;
    const redisReply *r = reply;

    if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
        r->element[0]->type == REDIS_REPLY_INTEGER && r->element[2]->type == REDIS_REPLY_STRING) {
        /* Delivered here too when it comes back on the topic's channel; if
         * this node's subscriber connection is down, it would not: deliver
         * the numbered message now. Offset 0: Redis had run it already (a
         * reply lost with a connection), and its channel carried it then. */
        p->offset = (uint64_t)r->element[0]->integer;
        if (p->offset != 0 && p->node->cluster != NULL &&
            !mw_cluster_topic_subscribed(p->node->cluster, p->topic, p->topic_len)) {
            mw_frame_t *final =
                mw_frame_new(p->f->bytes[0] & 0x0f, r->element[2]->str, r->element[2]->len);
            if (final != NULL) {
                p->count = deliver_local(p->node, p->topic, p->topic_len, final, p->except,
                                         p->except_len);
                mw_frame_unref(final);
            }
        }
    } else if (r != NULL) {
        /* Redis refused it (an error reply): it still reaches this node,
         * without an offset. */
        p->count = deliver_local(p->node, p->topic, p->topic_len, p->f, p->except, p->except_len);
    }
    /* r NULL: dropped from the outbox (too old, or the node stops), counted
     * and logged there; nobody gets it. */
    p->reply = r;
    if (p->w != NULL)
        mw_lua_wake(p->w, push_published, p);
    else
        mw_sched_run(p->node->sched);
    mw_frame_unref(p->f);
    free(p);
}

int mw__lua_publish_history(lua_State *L, const char *topic, size_t len, mw_frame_t *f,
                            const char *except, size_t except_len)
{
    mw_node_t *node = mw_lua_node(L);
    const mw_config_t *cfg = node->cfg;
    hpub_t *p;
    int r;

    if (node->cluster == NULL) {
        /* Standalone: numbered and kept here, delivered at once. */
        uint64_t offset;
        const char *epoch;
        size_t n, flen = 0;
        uint8_t *injected;
        mw_frame_t *final;

        r = mw_history_begin(node->history, topic, len, mw_topics_count(node->topics, topic, len) > 0,
                             cfg, node->timers->now, &offset, &epoch);
        if (r != 0) {
            mw_frame_unref(f);
            return mw__lua_fail(L, mw_strerror(r));
        }
        injected = (f->bytes[0] & 0x0f) == MW_OP_TEXT
                       ? mw_history_inject(cfg->history_field, offset, epoch, mw_frame_payload(f),
                                           mw_frame_payload_len(f), &flen)
                       : NULL;
        final = injected ? mw_frame_new(MW_OP_TEXT, injected, flen) : mw_frame_ref(f);
        free(injected);
        mw_frame_unref(f);
        if (final == NULL)
            return mw__lua_fail(L, "out of memory");
        r = mw_history_append(node->history, topic, len, offset, final, cfg, node->timers->now);
        if (r != 0) {
            /* Refused or out of memory: nobody gets it, and publish says why. */
            mw_frame_unref(final);
            return mw__lua_fail(L, mw_strerror(r));
        }
        n = deliver_local(node, topic, len, final, except, except_len);
        mw_frame_unref(final);
        lua_pushinteger(L, (lua_Integer)offset);
        lua_pushinteger(L, (lua_Integer)n);
        return 2;
    }
    p = calloc(1, sizeof(*p));
    if (p == NULL) {
        mw_frame_unref(f);
        return mw__lua_fail(L, "out of memory");
    }
    p->node = node;
    p->f = f; /* the caller's reference */
    /* The local members it will reach (it reaches them from the channel). */
    p->count = mw_topics_count(node->topics, topic, len);
    if (p->count > 0 && except_len > 0) {
        mw_conn_t *ex = mw_registry_find(node->reg, except, except_len);
        mw_list_t *it;
        const mw_topic_t *t = mw_topics_find(node->topics, topic, len);
        mw_list_foreach(it, &t->members)
        {
            if (MW_CONTAINER_OF(it, mw_sub_t, topic_link)->conn == ex) {
                p->count--;
                break;
            }
        }
    }
    memcpy(p->topic, topic, len);
    p->topic_len = len;
    if (except_len > 0 && except_len < sizeof(p->except)) {
        memcpy(p->except, except, except_len);
        p->except_len = except_len;
    }
    /* In a hook that can wait, publish returns the offset; elsewhere (on_start)
     * the message goes out all the same and publish returns true. A message
     * that waits in the outbox returns 0, 0, "queued" at once; one the
     * outbox refuses reaches nobody. */
    if (mw_lua_can_wait(L))
        p->w = mw_lua_wait(L);
    r = mw_cluster_history_publish(node->cluster, topic, len, f, except, except_len,
                                   on_history_published, on_history_requeued, p);
    if (r == 0 && p->w != NULL)
        return mw_lua_yield(L);
    if (r == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    if (p->w != NULL) {
        mw_lua_unwait(p->w);
        p->w = NULL;
    }
    if (r == MW_EAGAIN)
        return push_queued(L); /* p belongs to the outbox now */
    mw_frame_unref(p->f);
    free(p);
    return mw__lua_fail(L, r == MW_ELIMIT ? "outbox full" : mw_strerror(r));
}

static void push_history_table(lua_State *L, const char *epoch, size_t elen, uint64_t last,
                               int recovered)
{
    lua_createtable(L, 0, 4);
    lua_pushlstring(L, epoch, elen);
    lua_setfield(L, -2, "epoch");
    lua_pushinteger(L, (lua_Integer)last);
    lua_setfield(L, -2, "offset");
    lua_pushboolean(L, recovered);
    lua_setfield(L, -2, "recovered");
}

static int push_history_reply(lua_State *co, void *ud)
{
    const redisReply *r = ud;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 3)
        return push_reply_failure(co, r);
    push_history_table(co, r->element[0]->str ? r->element[0]->str : "", r->element[0]->len,
                       (uint64_t)r->element[1]->integer, r->element[2]->integer == 1);
    lua_createtable(co, (int)(r->elements - 3), 0);
    for (size_t i = 3; i < r->elements; i++) {
        lua_pushlstring(co, r->element[i]->str, r->element[i]->len);
        lua_rawseti(co, -2, (lua_Integer)(i - 2));
    }
    lua_setfield(co, -2, "messages");
    return 1;
}

static void on_history_read(void *ud, void *reply)
{
    mw_lua_wake(ud, push_history_reply, reply);
}

typedef struct {
    lua_State *L;
    lua_Integer n;
} collect_t;

static void collect(void *ud, const mw_frame_t *f)
{
    collect_t *c = ud;
    lua_pushlstring(c->L, (const char *)mw_frame_payload(f), mw_frame_payload_len(f));
    lua_rawseti(c->L, -2, ++c->n);
}

static int api_history(lua_State *L)
{
    mw_node_t *node = mw_lua_node(L);
    const mw_config_t *cfg = node->cfg;
    size_t len;
    const char *topic = luaL_checklstring(L, 1, &len);
    lua_Integer since = 0, limit = (lua_Integer)cfg->history_size;
    const char *epoch = NULL;

    /* As subscribe and publish: the Redis key names are built in buffers of that size. */
    luaL_argcheck(L, len > 0 && len <= MW_TOPIC_MAX, 1, "topic must be 1 to 256 bytes");
    luaL_argcheck(L, mw_history_enabled(cfg, topic, len), 1,
                  "this topic keeps no history (history.topics)");
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        if (lua_getfield(L, 2, "since") != LUA_TNIL) {
            luaL_argcheck(L, lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 0, 2,
                          "'since' must be an offset (an integer, 0 or more)");
            since = lua_tointeger(L, -1);
        }
        if (lua_getfield(L, 2, "limit") != LUA_TNIL) {
            luaL_argcheck(L, lua_isinteger(L, -1) && lua_tointeger(L, -1) > 0, 2,
                          "'limit' must be a positive integer");
            if (lua_tointeger(L, -1) < limit)
                limit = lua_tointeger(L, -1);
        }
        if (lua_getfield(L, 2, "epoch") != LUA_TNIL) {
            luaL_argcheck(L, lua_type(L, -1) == LUA_TSTRING, 2, "'epoch' must be a string");
            epoch = lua_tostring(L, -1); /* kept alive by the options table */
        }
        lua_pop(L, 3);
    }
    if (node->cluster != NULL) {
        mw_lua_task_t *w = mw_lua_wait(L);
        if (mw_cluster_history_read(node->cluster, topic, len, (uint64_t)since, epoch,
                                    (size_t)limit, on_history_read, w) != 0) {
            mw_lua_unwait(w);
            return mw__lua_fail(L, "redis unavailable");
        }
        return mw_lua_yield(L);
    }
    {
        uint64_t last;
        int recovered;
        collect_t c = {L, 0};
        const char *ep = mw_history_epoch(node->history, topic, len);
        push_history_table(L, ep, strlen(ep), 0, 0);
        lua_newtable(L);
        mw_history_read(node->history, topic, len, (uint64_t)since, epoch, (size_t)limit,
                        node->timers->now, cfg, collect, &c, &last, &recovered);
        lua_setfield(L, -2, "messages");
        lua_pushinteger(L, (lua_Integer)last);
        lua_setfield(L, -2, "offset");
        lua_pushboolean(L, recovered);
        lua_setfield(L, -2, "recovered");
    }
    return 1;
}

void mw__lua_open_history(lua_State *L)
{
    lua_pushcfunction(L, api_history);
    lua_setfield(L, -2, "history");
}
