/* on_request(req): plain HTTP requests that are neither built-in, the
 * server API, static files nor WebSocket upgrades go to the app, which
 * returns status, body, headers (nothing: 404). The hook runs as a task
 * that may wait (mw_lua_spawn_then); the connection waits for its reply,
 * bounded by limits.close_timeout like any reply (while the server drains,
 * by limits.shutdown_timeout: server.c). req is the table
 * on_upgrade gets, with the body (read up to api.max_body) as req.body.
 * Every returned value is checked: a status from 100 to 599 (else 500),
 * a string body, header names and values without CR, LF or ':' in names,
 * 4 KiB of headers at most; a hook that fails answers 500.
 */
#include "api_request.h"
#include "conn.h"
#include "lua_dispatch.h"
#include "lua_state.h"
#include "lua_task.h"
#include "node.h"
#include "moonwire/log.h"
#include "moonwire/metrics.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_HEADERS_TEXT 4096
#define RESULTS 3 /* status, body, headers */

typedef struct mw_hook_req_s {
    mw_conn_t *c;      /* NULL once the connection is released */
    mw_conns_t *conns; /* its books, which outlive it */
} mw_hook_req_t;

static void reply(mw_conn_t *c, int status, const char *body, size_t len, const char *headers)
{
    if (c->state != MW_CONN_HTTP)
        return;
    mw_conn_reply(c, mw_http_reply_ex(status, NULL, headers, mw_conn_connection_field(c), body,
                                      len, c->http->parser.method == HTTP_HEAD));
}

static int header_ok(const char *s, size_t len, int name)
{
    if (len == 0 && name)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0' || (name && (s[i] == ':' || s[i] == ' ')))
            return 0;
    return 1;
}

/* Writes the header table at idx of co as lines into out. Returns the
 * length, or -1 (logged) when it is not a table of valid lines or too long. */
static int headers_of(lua_State *co, int idx, char *out, size_t cap)
{
    size_t used = 0;

    out[0] = '\0';
    if (lua_isnoneornil(co, idx))
        return 0;
    if (!lua_istable(co, idx) || !lua_checkstack(co, 3))
        return -1;
    lua_pushnil(co);
    while (lua_next(co, idx) != 0) {
        size_t klen, vlen;
        const char *k, *v;
        int n;
        if (lua_type(co, -2) != LUA_TSTRING || lua_type(co, -1) != LUA_TSTRING) {
            lua_pop(co, 2);
            return -1;
        }
        k = lua_tolstring(co, -2, &klen);
        v = lua_tolstring(co, -1, &vlen);
        if (!header_ok(k, klen, 1) || !header_ok(v, vlen, 0) || used + klen + vlen + 5 > cap) {
            lua_pop(co, 2);
            return -1;
        }
        n = snprintf(out + used, cap - used, "%s: %s\r\n", k, v);
        used += (size_t)n;
        lua_pop(co, 1);
    }
    return (int)used;
}

/* Answers the request from on_request's results at base + 1 .. base + 3. */
static void answer(mw_conn_t *c, lua_State *co, int base)
{
    char headers[MAX_HEADERS_TEXT];
    const char *problem = NULL;

    if (lua_isnil(co, base + 1)) {
        c->conns->metrics->handshakes[MW_HS_not_found]++;
        mw_conn_refuse(c, 404, "no such path", NULL);
        return;
    }
    if (!lua_isinteger(co, base + 1) || lua_tointeger(co, base + 1) < 100 ||
        lua_tointeger(co, base + 1) > 599)
        problem = "on_request: the status must be an integer from 100 to 599";
    else if (!lua_isnil(co, base + 2) && lua_type(co, base + 2) != LUA_TSTRING)
        problem = "on_request: the body must be a string";
    else if (!lua_isnil(co, base + 3) && headers_of(co, base + 3, headers, sizeof(headers)) < 0)
        problem = "on_request: headers must be a table of names to values (no CR, LF), "
                  "4 KiB at most";
    if (problem != NULL) {
        mw_log_error("app: %s", problem);
        c->conns->metrics->hook_errors++;
        mw_conn_refuse(c, 500, "the application failed", NULL);
        return;
    }
    {
        size_t len = 0;
        const char *body = lua_tolstring(co, base + 2, &len);
        reply(c, (int)lua_tointeger(co, base + 1), body ? body : "", body ? len : 0,
              !lua_isnil(co, base + 3) ? headers : NULL);
    }
}

/* on_request's end (mw_lua_then_t): its three results (nil for those it
 * did not return) on top of the main state when ok. */
static void on_done(mw_lua_t *lh, mw_conn_t *unused, int ok, const void *ud)
{
    mw_hook_req_t *r = (mw_hook_req_t *)ud;
    mw_conn_t *c = r->c;
    lua_State *co = mw_lua_state(lh);

    (void)unused; /* the task runs for no connection: r->c is the request's */
    r->conns->requests_running--;
    free(r);
    if (c != NULL)
        c->hs->hook_req = NULL;
    if (c == NULL || !ok) {
        if (c != NULL)
            mw_conn_refuse(c, 500, "the application failed", NULL);
        if (ok)
            lua_pop(co, RESULTS);
        return;
    }
    answer(c, co, lua_gettop(co) - RESULTS);
    lua_pop(co, RESULTS);
}

static int add_body(lua_State *L)
{
    mw_conn_t *c = lua_touserdata(L, 2);
    lua_pushlstring(L, c->http->body != NULL ? c->http->body : "", c->http->body_len);
    lua_setfield(L, 1, "body");
    return 0;
}

int mw_hook_request(mw_conn_t *c)
{
    mw_lua_t *lh = c->conns->node->lua;
    lua_State *L = mw_lua_state(lh);
    mw_hook_req_t *r;

    if (lh->hooks[MW_HOOK_REQUEST] == LUA_NOREF)
        return 0;
    r = malloc(sizeof(*r));
    if (r == NULL) {
        mw_conn_refuse(c, 503, "out of memory", NULL);
        return 1;
    }
    if (mw_lua_push_request(lh, c) != 0) {
        free(r);
        mw_conn_refuse(c, 500, "the application failed", NULL);
        return 1;
    }
    lua_pushcfunction(L, add_body);
    lua_pushvalue(L, -2);
    lua_pushlightuserdata(L, c);
    if (!mw_lua_call(lh, NULL, "building the request", 2, 0)) {
        lua_pop(L, 1);
        free(r);
        mw_conn_refuse(c, 500, "the application failed", NULL);
        return 1;
    }
    mw__lua_push_hook(lh, MW_HOOK_REQUEST);
    lua_insert(L, -2); /* the hook under the request */
    r->c = c;
    r->conns = c->conns;
    c->hs->hook_req = r;
    c->conns->requests_running++;
    {
        const mw_lua_then_t then = {on_done, r, RESULTS};
        mw_lua_spawn_then(lh, NULL, "on_request", 1, &then);
    }
    return 1;
}

int mw_hook_request_defined(const mw_conn_t *c)
{
    return c->conns->node->lua->hooks[MW_HOOK_REQUEST] != LUA_NOREF;
}

void mw_hook_request_forget(mw_conn_t *c)
{
    if (c->hs != NULL && c->hs->hook_req != NULL) {
        c->hs->hook_req->c = NULL;
        c->hs->hook_req = NULL;
    }
}

void mw_hook_request_give_up(mw_conn_t *c, int status, const char *why, const char *extra)
{
    static mw_log_gate_t gate;
    uint64_t held;
    char more[64];

    if (c->hs == NULL || c->hs->hook_req == NULL)
        return;
    mw_hook_request_forget(c);
    if (mw_log_gate_pass(&gate, 1000, &held))
        mw_log_warn("on_request: answered %d: %s%s", status, why,
                    mw_log_held_back(held, more, sizeof(more)));
    mw_conn_refuse(c, status, why, extra);
}
