/* The app's hooks for connections: the request table and on_upgrade's
 * answer, the conn object and on_open, and what closing does to them (on_close,
 * the conn object detached). on_message's dispatch, which holds messages
 * behind a waiting hook, is lua_task.c's. See lua_dispatch.h.
 */
#include "lua_dispatch.h"
#include "conn.h"
#include "lua_api_conn.h"
#include "lua_request.h"
#include "lua_state.h"
#include "lua_task.h"
#include "node.h"
#include "moonwire/error.h"
#include "moonwire/log.h"
#include "moonwire/metrics.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <string.h>

/* Builds the request table of the connection at 1 (a light userdata), or
 * with a true 2 only its seed (lua_request.h), and keeps it at c->hs->req_ref. */
static int build_request(lua_State *L)
{
    mw_conn_t *c = lua_touserdata(L, 1);

    if (lua_toboolean(L, 2))
        mw_lua_request_push_seed(L, c);
    else
        mw_lua_request_push(L, c);
    c->hs->req_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* here: it allocates */
    return 0;
}

/* Reads on_upgrade's results (the hook returns 3 values) into d. Returns 0 or
 * MW_ELUA when they have the wrong types (logged). */
static int read_decision(mw_lua_t *lh, mw_conn_t *c, mw_upgrade_decision_t *d)
{
    lua_State *L = lh->L;
    int t1 = lua_type(L, -3);
    const char *problem = NULL;

    if (t1 == LUA_TNIL || (t1 == LUA_TBOOLEAN && lua_toboolean(L, -3))) {
        d->accept = 1;
        if (lua_type(L, -2) == LUA_TSTRING) {
            size_t len;
            const char *p = lua_tolstring(L, -2, &len);
            if (len >= sizeof(d->protocol)) /* it would go out cut */
                problem = "on_upgrade chose a subprotocol longer than 127 bytes";
            else if (strlen(p) != len ||
                     !mw_http_header_has_token(c->http, "Sec-WebSocket-Protocol", p))
                problem = "on_upgrade chose a subprotocol the client did not offer";
            else
                memcpy(d->protocol, p, len + 1);
        } else if (lua_type(L, -2) != LUA_TNIL) {
            problem = "on_upgrade: the second result (subprotocol) must be a string or nil";
        }
    } else if (t1 == LUA_TBOOLEAN) {
        lua_Integer status = 403;
        d->accept = 0;
        if (lua_type(L, -2) == LUA_TNUMBER && lua_isinteger(L, -2))
            status = lua_tointeger(L, -2);
        else if (lua_type(L, -2) != LUA_TNIL)
            problem = "on_upgrade: the status must be an integer";
        if (status < 400 || status > 599)
            problem = "on_upgrade: the status must be from 400 to 599";
        d->status = (int)status;
        if (lua_type(L, -1) == LUA_TSTRING)
            snprintf(d->body, sizeof(d->body), "%s", lua_tostring(L, -1));
    } else {
        problem = "on_upgrade must return nothing, true or false";
    }
    lua_pop(L, 3);
    if (problem != NULL) {
        mw__lua_report(lh, MW_LOG_ERROR, NULL, "%s", problem);
        lh->node->metrics->hook_errors++;
        return MW_ELUA;
    }
    return 0;
}

/* on_upgrade has returned (its 3 results on top) or failed: its answer goes
 * to the router, unless the connection went away while the hook waited. */
static void upgrade_done(mw_lua_t *lh, mw_conn_t *c, int ok, const void *ud)
{
    const mw_upgrade_handler_t *h = ud;
    mw_upgrade_decision_t d;
    int err;

    if (c == NULL || c->state != MW_CONN_HTTP) {
        if (ok)
            lua_pop(lh->L, 3);
        return;
    }
    if (!ok) {
        h->decided(c, NULL, MW_ELUA);
        return;
    }
    memset(&d, 0, sizeof(d));
    err = read_decision(lh, c, &d);
    h->decided(c, err == 0 ? &d : NULL, err);
}

int mw_lua_upgrade(mw_lua_t *lh, mw_conn_t *c, const mw_upgrade_handler_t *h)
{
    lua_State *L = lh->L;
    mw_lua_then_t then = {upgrade_done, h, 3};

    /* No hook sees the request before the connection opens: a seed will do
     * until the app reads conn.request, if it ever does. */
    int seed = lh->hooks[MW_HOOK_UPGRADE] == LUA_NOREF && lh->hooks[MW_HOOK_OPEN] == LUA_NOREF;

    lua_pushcfunction(L, build_request);
    lua_pushlightuserdata(L, c);
    lua_pushboolean(L, seed);
    if (!mw_lua_call(lh, NULL, "building the request", 2, 0))
        return MW_ELUA;
    if (!mw__lua_push_hook(lh, MW_HOOK_UPGRADE)) {
        mw_upgrade_decision_t d;
        memset(&d, 0, sizeof(d));
        d.accept = 1;
        h->decided(c, &d, 0);
        return 0;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->hs->req_ref);
    mw_lua_spawn_then(lh, c, "on_upgrade", 1, &then);
    /* Answered, the connection is upgraded or closing; still HTTP, it waits. */
    return c->state == MW_CONN_HTTP ? MW_EAGAIN : 0;
}

int mw_lua_push_request(mw_lua_t *lh, mw_conn_t *c)
{
    lua_State *L = lh->L;

    lua_pushcfunction(L, build_request);
    lua_pushlightuserdata(L, c);
    if (!mw_lua_call(lh, NULL, "building the request", 1, 0))
        return MW_ELUA;
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->hs->req_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, c->hs->req_ref);
    c->hs->req_ref = LUA_NOREF;
    return 0;
}

/* Makes the conn object of the connection at 1 (a light userdata), with its
 * request, and keeps it at c->lua_ref. With a true 2 (on_open will get the
 * request), a seed becomes the table now. */
static int new_conn_object(lua_State *L)
{
    mw_conn_t *c = lua_touserdata(L, 1);
    mw_lua_api_push_conn(L, c);
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->hs->req_ref);
    if (lua_toboolean(L, 2) && mw_lua_request_is_seed(L, -1)) {
        char id[MW_ID_MAX];
        mw_lua_request_grow(L, -1, id, mw_conn_id(c, id));
        lua_replace(L, -2);
        lua_pushvalue(L, -1);
        lua_rawseti(L, LUA_REGISTRYINDEX, c->hs->req_ref);
    }
    mw_lua_api_set_request(L);
    c->lua_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

void mw_lua_open(mw_lua_t *lh, mw_conn_t *c)
{
    lua_State *L = lh->L;

    lua_pushcfunction(L, new_conn_object);
    lua_pushlightuserdata(L, c);
    lua_pushboolean(L, lh->hooks[MW_HOOK_OPEN] != LUA_NOREF);
    if (!mw_lua_call(lh, NULL, "creating the conn object", 2, 0)) {
        mw_conn_fail(c, 1011, "internal error");
        return;
    }
    c->lua_open = 1;
    if (mw__lua_push_hook(lh, MW_HOOK_OPEN)) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, c->lua_ref);
        lua_rawgeti(L, LUA_REGISTRYINDEX, c->hs->req_ref);
        mw_lua_spawn(lh, c, "on_open", 2);
    }
    luaL_unref(L, LUA_REGISTRYINDEX, c->hs->req_ref);
    c->hs->req_ref = LUA_NOREF;
}

/* The conn object of a closed connection keeps its id but no longer reaches
 * it; its reference goes, unless hooks of c still wait and keep it for the
 * on_close they owe. */
void mw_lua_close(mw_lua_t *lh, mw_conn_t *c)
{
    lua_State *L = lh->L;
    int owed = c->lua_open; /* on_open ran */
    int kept;

    if (c->lua_ref == LUA_NOREF)
        return;
    c->lua_open = 0;
    kept = mw__lua_close_hooks(lh, c, owed);
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->lua_ref);
    mw_lua_api_detach_conn(L, -1);
    lua_pop(L, 1);
    if (!kept)
        luaL_unref(L, LUA_REGISTRYINDEX, c->lua_ref);
    c->lua_ref = LUA_NOREF;
}

void mw_lua_forget(mw_lua_t *lh, mw_conn_t *c)
{
    if (c->hs != NULL && c->hs->req_ref != LUA_NOREF) {
        luaL_unref(lh->L, LUA_REGISTRYINDEX, c->hs->req_ref);
        c->hs->req_ref = LUA_NOREF;
    }
    if (c->lua_ref != LUA_NOREF)
        mw_lua_close(lh, c);
    mw__lua_forget_waits(c);
}
