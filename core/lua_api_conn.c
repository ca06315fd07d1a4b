/* The moonwire.conn object: one per connection, pinned in the registry so
 * that every hook gets the same one; its methods (send, close, subscribe,
 * unsubscribe, topics, is_open, buffered) and fields (id, data, request,
 * protocol). The core owns the connection; Lua owns only the box, whose
 * pointer is cleared when the connection closes: every method of a closed
 * conn returns nil, "closed". Also the parts of sending that moonwire.send,
 * publish and broadcast share (frames from strings, their options). */
#include "lua_api_conn.h"
#include "conn.h"
#include "history.h"
#include "lua_api_int.h"
#include "lua_request.h"
#include "lua_state.h"
#include "node.h"
#include "registry.h"
#include "topics.h"
#include "utf8.h"
#include "moonwire/error.h"

#include <lauxlib.h>
#include <lua.h>
#include <stddef.h>
#include <string.h>

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

void mw_lua_api_push_conn(lua_State *L, mw_conn_t *c)
{
    /* A box per connection, what every idle one costs. */
    mw_lconn_t *u = lua_newuserdatauv(L, sizeof(mw_lconn_t), 2);
    u->tag = &mw__lua_conn_tag;
    u->ref = (uint64_t)(uintptr_t)c; /* aligned: the low bit is clear */
    luaL_setmetatable(L, MW_CONN_META);
    /* conn.data (user value 1) is made at its first read. */
}

void mw_lua_api_set_request(lua_State *L)
{
    lua_setiuservalue(L, -2, 2);
}

void mw_lua_api_detach_conn(lua_State *L, int idx)
{
    mw_lconn_t *u = lua_touserdata(L, idx); /* always a conn object here */
    if (u != NULL && mw__lconn_conn(u) != NULL)
        u->ref = mw__lconn_serial(u) << 1 | 1;
}

const char mw__lua_conn_tag;

size_t mw__lua_conn_id(lua_State *L, const mw_lconn_t *u, char *out)
{
    return mw_ids_format(&mw_lua_node(L)->reg->ids, mw__lconn_serial(u), out);
}

/* The object at idx when it is a conn object (a full userdata of a box's
 * size that starts with the tag, which no script can write: no metatable to
 * fetch on every conn:send); raises otherwise. */
static mw_lconn_t *check_lconn(lua_State *L, int idx)
{
    /* A light userdata has a pointer but no length: the tag is not read. */
    mw_lconn_t *u = lua_touserdata(L, idx);
    size_t len = u != NULL ? lua_rawlen(L, idx) : 0;
    if (len == sizeof(mw_lconn_t) && u->tag == &mw__lua_conn_tag)
        return u;
    luaL_typeerror(L, idx, MW_CONN_META);
    return NULL;
}

/* Returns the open connection of the conn object at idx, or NULL when closed. */
static mw_conn_t *check_conn(lua_State *L, int idx)
{
    mw_conn_t *c = mw__lconn_conn(check_lconn(L, idx));
    if (c == NULL || c->state != MW_CONN_OPEN)
        return NULL;
    return c;
}

/* Reads the kind argument: "text" (default) or "binary". Returns the opcode. */
static int check_kind(lua_State *L, int idx)
{
    size_t len;
    const char *kind;

    /* On every send: one call when it is a string, no strcmp loop. */
    if ((kind = lua_tolstring(L, idx, &len)) == NULL) {
        if (lua_isnoneornil(L, idx))
            return MW_OP_TEXT;
        kind = luaL_checklstring(L, idx, &len); /* raises: not a string */
    }
    if (len == 4 && memcmp(kind, "text", 4) == 0)
        return MW_OP_TEXT;
    if (len == 6 && memcmp(kind, "binary", 6) == 0)
        return MW_OP_BINARY;
    return luaL_argerror(L, idx, lua_pushfstring(L, "invalid option '%s'", kind));
}

/* A frame of len bytes at data, which a Lua string holds; NULL after pushing
 * nil and an error (nret: how many) when text is not UTF-8 or out of memory.
 * The text on_message was given is not checked a second time. */
static mw_frame_t *frame_of(lua_State *L, const char *data, size_t len, int op, int *nret)
{
    mw_frame_t *f;

    if (op == MW_OP_TEXT && !mw__lua_checked_text(mw__lua_host(L), data, len) &&
        !mw_utf8_valid((const uint8_t *)data, len)) {
        *nret = mw__lua_fail(L, "text is not valid UTF-8 (send it as \"binary\")");
        return NULL;
    }
    f = mw_frame_new((uint8_t)op, data, len);
    if (f == NULL)
        *nret = mw__lua_fail(L, "out of memory");
    return f;
}

mw_frame_t *mw__lua_make_frame(lua_State *L, int idx, int op, int *nret)
{
    size_t len;
    const char *data = luaL_checklstring(L, idx, &len);

    return frame_of(L, data, len, op, nret);
}

static int send_frame(lua_State *L, mw_conn_t *c, mw_frame_t *f)
{
    int r = mw_conn_send(c, f);

    mw_frame_unref(f);
    return push_send_result(L, r);
}

int mw__lua_send_frame(lua_State *L, mw_conn_t *c, int idx, int op)
{
    int nret = 0;
    mw_frame_t *f = mw__lua_make_frame(L, idx, op, &nret);

    if (f == NULL)
        return nret;
    return send_frame(L, c, f);
}

static int conn_send(lua_State *L)
{
    mw_conn_t *c = check_conn(L, 1);
    int op = check_kind(L, 3), nret = 0;
    size_t len;
    const char *data = lua_tolstring(L, 2, &len); /* luaL_checklstring's call, without it */
    mw_frame_t *f;

    if (data == NULL)
        data = luaL_checklstring(L, 2, &len); /* raises: not a string */
    if (c == NULL)
        return mw__lua_fail(L, "closed");
    if ((f = frame_of(L, data, len, op, &nret)) == NULL)
        return nret;
    return send_frame(L, c, f);
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

static int conn_newindex(lua_State *L)
{
    return luaL_error(L, "conn fields are read-only (keep your own in conn.data)");
}

static int conn_tostring(lua_State *L)
{
    mw_lconn_t *u = check_lconn(L, 1);
    char id[MW_ID_MAX];
    mw__lua_conn_id(L, u, id);
    lua_pushfstring(L, "moonwire.conn(%s%s)", id,
                    mw__lconn_conn(u) != NULL && mw__lconn_conn(u)->state == MW_CONN_OPEN
                        ? ""
                        : ", closed");
    return 1;
}

const char *mw__lua_check_topic(lua_State *L, int idx, size_t *len)
{
    const char *t = luaL_checklstring(L, idx, len);
    luaL_argcheck(L, *len > 0 && *len <= MW_TOPIC_MAX, idx, "topic must be 1 to 256 bytes");
    return t;
}

static int conn_subscribe(lua_State *L)
{
    mw_conn_t *c = check_conn(L, 1);
    size_t len, ilen = 0;
    const char *topic = mw__lua_check_topic(L, 2, &len), *info = NULL;
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
    const char *topic = mw__lua_check_topic(L, 2, &len);

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

/* The method a key names, or NULL: by length, then bytes. conn:send looks
 * its method up on every call (through __index, a function, since id, data,
 * request and protocol need the object), so no table lookup. A method is
 * pushed as a light C function: the same value at every lookup. */
static lua_CFunction method_of(const char *k, size_t len)
{
    switch (len) {
    case 4:
        return memcmp(k, "send", 4) == 0 ? conn_send : NULL;
    case 5:
        return memcmp(k, "close", 5) == 0 ? conn_close : NULL;
    case 6:
        return memcmp(k, "topics", 6) == 0 ? conn_topics : NULL;
    case 7:
        return memcmp(k, "is_open", 7) == 0 ? conn_is_open : NULL;
    case 8:
        return memcmp(k, "buffered", 8) == 0 ? conn_buffered : NULL;
    case 9:
        return memcmp(k, "subscribe", 9) == 0 ? conn_subscribe : NULL;
    case 11:
        return memcmp(k, "unsubscribe", 11) == 0 ? conn_unsubscribe : NULL;
    default:
        return NULL;
    }
}

static int conn_index(lua_State *L)
{
    mw_lconn_t *u;
    const char *key;
    size_t len;
    lua_CFunction m;

    /* Methods first, without checking the object: each method checks its
     * own self. A number key (conn[1]) is a string here, as it was for
     * luaL_checklstring, and names nothing; any other key raises below. */
    key = lua_tolstring(L, 2, &len);
    if (key != NULL && (m = method_of(key, len)) != NULL) {
        lua_pushcfunction(L, m);
        return 1;
    }
    u = check_lconn(L, 1);
    key = luaL_checklstring(L, 2, &len);
    if (strcmp(key, "id") == 0) {
        char id[MW_ID_MAX];
        lua_pushlstring(L, id, mw__lua_conn_id(L, u, id));
    } else if (strcmp(key, "data") == 0) {
        if (lua_getiuservalue(L, 1, 1) == LUA_TNIL) { /* the first read makes it */
            lua_pop(L, 1);
            lua_newtable(L);
            lua_pushvalue(L, -1);
            lua_setiuservalue(L, 1, 1);
        }
    } else if (strcmp(key, "request") == 0) {
        lua_getiuservalue(L, 1, 2);
        if (mw_lua_request_is_seed(L, -1)) { /* the first read builds the table */
            char id[MW_ID_MAX];
            mw_lua_request_grow(L, -1, id, mw__lua_conn_id(L, u, id));
            lua_pushvalue(L, -1);
            lua_setiuservalue(L, 1, 2);
        }
    } else if (strcmp(key, "protocol") == 0) {
        mw_conn_t *c = mw__lconn_conn(u);
        if (c != NULL && c->protocol != NULL)
            lua_pushstring(L, c->protocol);
        else
            lua_pushnil(L);
    } else {
        lua_pushnil(L);
    }
    return 1;
}

void mw__lua_open_conns(lua_State *L)
{
    luaL_newmetatable(L, MW_CONN_META);
    lua_pushcfunction(L, conn_index); /* its methods: method_of */
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, conn_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, conn_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, MW_CONN_META);
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
}

void mw__lua_push_conn_object(lua_State *L, mw_conn_t *c)
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
    return mw__lconn_conn(check_lconn(L, idx));
}

void mw__lua_read_send_opts(lua_State *L, int idx, mw_conn_t **except, int *op,
                              const char **except_id, size_t *except_len,
                              char except_buf[MW_ID_MAX])
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
                *except_len = mw__lua_conn_id(L, lua_touserdata(L, -1), except_buf);
                *except_id = except_buf;
            }
        }
    }
    /* The id stays valid: it lives in the opts table or except_buf. */
    lua_pop(L, 1);
}
