/* moonwire.sim's client objects: what a spec holds for one connection,
 * sending as a browser would and keeping what it received. See sim.h.
 */
#include "sim.h"
#include "sim_int.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>

static sim_client_t *check_client(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, CLIENT_META);
}

static int client_open(const sim_client_t *cl)
{
    return cl->sc != NULL && cl->status == 101 && !cl->close_received && !cl->close_sent;
}

/* Pushes fail, "closed" and returns 2: what every client method answers once the
 * connection is gone. */
static int client_closed(lua_State *L)
{
    luaL_pushfail(L);
    lua_pushliteral(L, "closed");
    return 2;
}

/* Feeds bytes the client sent to the server and runs the loop until it is idle (the
 * server may close the connection meanwhile, so the loop is taken first). */
static int client_feed(lua_State *L, sim_client_t *cl, const uint8_t *data, size_t len)
{
    sim_server_t *ss = cl->sc->ss;
    mw__sim_feed(cl->sc, data, len);
    mw__sim_pump(ss);
    lua_pushboolean(L, 1);
    return mw_sim_settle_call(L, ss, 1);
}

/* Masks one frame as a client must and feeds it. */
static int client_feed_frame(lua_State *L, sim_client_t *cl, int op, const uint8_t *payload,
                             size_t len)
{
    sim_server_t *ss = cl->sc->ss;
    size_t n;
    uint8_t *buf = mw__sim_client_frame(1, (uint8_t)op, payload, len, &n);
    if (buf == NULL)
        return luaL_error(L, "out of memory");
    mw__sim_feed(cl->sc, buf, n);
    mw__sim_pump(ss);
    free(buf); /* before settling, which may raise */
    lua_pushboolean(L, 1);
    return mw_sim_settle_call(L, ss, 1);
}

static int client_send(lua_State *L)
{
    sim_client_t *cl = check_client(L, 1);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    static const char *const kinds[] = {"text", "binary", NULL};
    int op = luaL_checkoption(L, 3, "text", kinds) == 1 ? MW_OP_BINARY : MW_OP_TEXT;

    if (!client_open(cl))
        return client_closed(L);
    return client_feed_frame(L, cl, op, (const uint8_t *)data, len);
}

static int client_send_raw(lua_State *L)
{
    sim_client_t *cl = check_client(L, 1);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);

    if (cl->sc == NULL)
        return client_closed(L);
    return client_feed(L, cl, (const uint8_t *)data, len);
}

static int client_received(lua_State *L)
{
    sim_client_t *cl = check_client(L, 1);
    lua_createtable(L, (int)cl->nmsgs, 0);
    for (size_t i = 0; i < cl->nmsgs; i++) {
        mw_frame_t *f = cl->msgs[i];
        lua_createtable(L, 0, 2);
        lua_pushlstring(L, (const char *)mw_frame_payload(f), mw_frame_payload_len(f));
        lua_setfield(L, -2, "data");
        lua_pushstring(L, (f->bytes[0] & 0x0f) == MW_OP_BINARY ? "binary" : "text");
        lua_setfield(L, -2, "kind");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
        mw_frame_unref(f);
    }
    cl->nmsgs = 0;
    return 1;
}

static int client_close(lua_State *L)
{
    sim_client_t *cl = check_client(L, 1);
    lua_Integer code = luaL_optinteger(L, 2, 1000);
    size_t rlen = 0;
    const char *reason = luaL_optlstring(L, 3, "", &rlen);
    uint8_t payload[125];

    luaL_argcheck(L, code >= 0 && code <= 65535, 2, "close code out of range");
    luaL_argcheck(L, rlen <= 123, 3, "reason longer than 123 bytes");
    if (!client_open(cl))
        return client_closed(L);
    payload[0] = (uint8_t)(code >> 8);
    payload[1] = (uint8_t)code;
    memcpy(payload + 2, reason, rlen);
    cl->close_sent = 1;
    return client_feed_frame(L, cl, MW_OP_CLOSE, payload, code == 0 ? 0 : 2 + rlen);
}

static int client_drop(lua_State *L)
{
    sim_client_t *cl = check_client(L, 1);
    sim_server_t *ss;
    if (cl->sc == NULL)
        return 0;
    ss = cl->sc->ss;
    mw_conn_on_eof(&cl->sc->c);
    mw__sim_pump(ss);
    return mw_sim_settle_call(L, ss, 0);
}

static int client_is_open(lua_State *L)
{
    lua_pushboolean(L, client_open(check_client(L, 1)));
    return 1;
}

static int client_index(lua_State *L)
{
    sim_client_t *cl = check_client(L, 1);
    const char *key = luaL_checkstring(L, 2);

    lua_pushvalue(L, 2);
    if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL)
        return 1;
    if (strcmp(key, "id") == 0)
        lua_pushstring(L, cl->id);
    else if (strcmp(key, "close_code") == 0 && cl->close_received)
        lua_pushinteger(L, cl->close_code);
    else if (strcmp(key, "close_reason") == 0 && cl->close_received)
        lua_pushlstring(L, cl->close_reason, cl->close_reason_len);
    else if (strcmp(key, "status") == 0)
        lua_pushinteger(L, cl->status);
    else if (strcmp(key, "body") == 0 && cl->status != 101 && cl->status != 0)
        lua_pushstring(L, cl->body);
    else if (strcmp(key, "protocol") == 0 && cl->sc != NULL && cl->sc->c.protocol != NULL)
        lua_pushstring(L, cl->sc->c.protocol);
    else
        lua_pushnil(L);
    return 1;
}

static int client_gc(lua_State *L)
{
    sim_client_t *cl = check_client(L, 1);
    for (size_t i = 0; i < cl->nmsgs; i++)
        mw_frame_unref(cl->msgs[i]);
    free(cl->msgs);
    cl->msgs = NULL;
    cl->nmsgs = 0;
    if (mw_list_linked(&cl->reply_link))
        mw_list_remove(&cl->reply_link);
    if (cl->sc != NULL)
        cl->sc->client = NULL; /* the connection stays until the server closes */
    return 0;
}

static int client_tostring(lua_State *L)
{
    sim_client_t *cl = check_client(L, 1);
    lua_pushfstring(L, "moonwire.sim.client(%s%s)", cl->id, client_open(cl) ? "" : ", closed");
    return 1;
}

void mw_sim_open_clients(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"send", client_send},   {"send_raw", client_send_raw}, {"received", client_received},
        {"close", client_close}, {"drop", client_drop},         {"is_open", client_is_open},
        {NULL, NULL},
    };

    luaL_newmetatable(L, CLIENT_META);
    luaL_newlib(L, methods);
    lua_pushcclosure(L, client_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, client_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, client_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
}
