/* moonwire.http.request in moonwire.sim: a spec's stub answers, on virtual
 * time.
 *
 *   srv:http(function(req) return {status = 200, body = "ok", delay = 50} end)
 *   srv:http { ["GET http://backend/session"] = {status = 401},
 *              ["http://backend/slow"] = {delay = 5000, body = "late"} }
 *
 * The stub gets {method, url, headers, body, timeout (seconds)} and returns
 * {status = 200, headers = {}, body = "", delay = 0}, or {err = why,
 * delay = 0}, or nil, why; a table stub is looked up by "METHOD URL", then
 * by URL, and its entries may be such functions. The answer comes when
 * srv:advance reaches its delay (ms): past the call's timeout the call
 * ends with "timeout" at its timeout instead. The node's bounds apply as
 * they do to libcurl's answers. The stub runs in the spec's state, in a
 * coroutine of its own, while the app's hook calls; it must not drive the
 * sim server.
 */
#include "sim_http.h"
#include "http_client.h"
#include "moonwire/config.h"
#include "moonwire/error.h"
#include "node.h"
#include "timer.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>

struct sim_http_s {
    mw_http_client_t hc;
    mw_node_t *node;
    lua_State *L;   /* a thread of the spec's state, anchored by thread_ref */
    int thread_ref; /* in the spec's registry */
    int stub_ref;
};

/* An answer the stub gave, until virtual time reaches it. */
typedef struct {
    mw_timer_t timer;
    mw_http_call_t *call;
    int status; /* 0: an answer; else the call fails with why */
    char *why;
    long code;
    mw_http_field_t *headers;
    size_t nheaders;
    size_t bytes; /* of the headers */
    char *body;
    size_t body_len;
    uint64_t delay;
} answer_t;

static void answer_free(answer_t *a)
{
    for (size_t i = 0; i < a->nheaders; i++) {
        free((char *)a->headers[i].name);
        free((char *)a->headers[i].value);
    }
    free(a->headers);
    free(a->why);
    free(a->body);
    free(a);
}

static char *copy(lua_State *L, const char *s, size_t len)
{
    char *p = malloc(len + 1);
    if (p == NULL)
        luaL_error(L, "out of memory");
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

typedef struct {
    const mw_http_request_t *req;
    answer_t *a;
    int stub_ref;
} run_t;

/* Reads the stub's answer at idx into a. */
static void read_answer(lua_State *L, int idx, answer_t *a)
{
    size_t len;
    const char *s;

    if (lua_getfield(L, idx, "delay") != LUA_TNIL) {
        lua_Number d = lua_tonumber(L, -1);
        if (!lua_isnumber(L, -1) || !(d >= 0))
            luaL_error(L, "sim http stub: 'delay' must be milliseconds, 0 or more");
        a->delay = (uint64_t)d;
    }
    lua_pop(L, 1);
    if (lua_getfield(L, idx, "err") == LUA_TSTRING) {
        s = lua_tolstring(L, -1, &len);
        a->status = MW_EIO;
        a->why = copy(L, s, len);
        lua_pop(L, 1);
        return;
    }
    lua_pop(L, 1);
    a->code = 200;
    if (lua_getfield(L, idx, "status") != LUA_TNIL) {
        if (!lua_isinteger(L, -1))
            luaL_error(L, "sim http stub: 'status' must be an integer");
        a->code = (long)lua_tointeger(L, -1);
    }
    lua_pop(L, 1);
    if (lua_getfield(L, idx, "body") != LUA_TNIL) {
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "sim http stub: 'body' must be a string");
        s = lua_tolstring(L, -1, &a->body_len);
        a->body = copy(L, s, a->body_len);
    }
    lua_pop(L, 1);
    if (lua_getfield(L, idx, "headers") == LUA_TTABLE) {
        size_t n = 0;
        lua_pushnil(L);
        while (lua_next(L, -2) != 0) {
            n++;
            lua_pop(L, 1);
        }
        a->headers = calloc(n ? n : 1, sizeof(*a->headers));
        if (a->headers == NULL)
            luaL_error(L, "out of memory");
        lua_pushnil(L);
        while (lua_next(L, -2) != 0) {
            mw_http_field_t *h = &a->headers[a->nheaders];
            if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
                luaL_error(L, "sim http stub: header names and values must be strings");
            s = lua_tolstring(L, -2, &h->name_len);
            h->name = copy(L, s, h->name_len);
            for (size_t i = 0; i < h->name_len; i++) /* names in lower case, as libcurl's */
                if (h->name[i] >= 'A' && h->name[i] <= 'Z')
                    ((char *)h->name)[i] = (char)(h->name[i] - 'A' + 'a');
            s = lua_tolstring(L, -1, &h->value_len);
            h->value = copy(L, s, h->value_len);
            a->nheaders++;
            a->bytes += h->name_len + h->value_len + 4;
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
}

/* In a coroutine of the spec's state: finds the stub for the request, calls
 * it, and reads what it answered. Errors end the coroutine: the call fails. */
static int run_stub(lua_State *L)
{
    run_t *r = lua_touserdata(L, 1);
    const mw_http_request_t *req = r->req;

    lua_settop(L, 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->stub_ref); /* 1 */
    if (lua_type(L, 1) == LUA_TTABLE) {
        lua_pushfstring(L, "%s %s", req->method, req->url);
        if (lua_gettable(L, 1) == LUA_TNIL) {
            lua_pop(L, 1);
            lua_pushstring(L, req->url);
            lua_gettable(L, 1);
        }
        lua_replace(L, 1);
    }
    if (lua_isnil(L, 1)) {
        lua_pushfstring(L, "sim: no stub answers %s %s", req->method, req->url);
        r->a->status = MW_ENOTFOUND;
        r->a->why = copy(L, lua_tostring(L, -1), lua_rawlen(L, -1));
        return 0;
    }
    if (lua_type(L, 1) == LUA_TFUNCTION) {
        lua_createtable(L, 0, 5);
        lua_pushstring(L, req->method);
        lua_setfield(L, -2, "method");
        lua_pushstring(L, req->url);
        lua_setfield(L, -2, "url");
        lua_createtable(L, 0, (int)req->nheaders);
        for (size_t i = 0; i < req->nheaders; i++) {
            lua_pushlstring(L, req->headers[i].name, req->headers[i].name_len);
            lua_pushlstring(L, req->headers[i].value, req->headers[i].value_len);
            lua_rawset(L, -3);
        }
        lua_setfield(L, -2, "headers");
        if (req->body != NULL) {
            lua_pushlstring(L, req->body, req->body_len);
            lua_setfield(L, -2, "body");
        }
        lua_pushnumber(L, (lua_Number)req->timeout / 1000);
        lua_setfield(L, -2, "timeout");
        lua_call(L, 1, 2);
        if (lua_isnil(L, 1)) {
            r->a->status = MW_EIO;
            r->a->why = copy(L, luaL_optstring(L, 2, "sim stub answered nil"),
                             strlen(luaL_optstring(L, 2, "sim stub answered nil")));
            return 0;
        }
        lua_settop(L, 1);
    }
    if (lua_type(L, 1) != LUA_TTABLE)
        return luaL_error(L, "sim http stub: an answer is a table, not a %s", luaL_typename(L, 1));
    read_answer(L, 1, r->a);
    return 0;
}

static void on_answer(mw_timer_t *t)
{
    answer_t *a = t->data;
    mw_http_call_t *call = a->call;
    mw_http_response_t res;

    call->impl = NULL;
    memset(&res, 0, sizeof(res));
    if (a->status == 0 && a->nheaders > call->hc->cfg->http_client_max_headers) {
        mw__http_finish(call, MW_ELIMIT, NULL, "too many headers");
    } else if (a->status == 0 && a->bytes + a->body_len > call->max_response) {
        mw__http_finish(call, MW_ELIMIT, NULL, "response too large");
    } else if (a->status == 0) {
        res.status = a->code;
        res.headers = a->headers;
        res.nheaders = a->nheaders;
        res.body = a->body != NULL ? a->body : "";
        res.body_len = a->body_len;
        mw__http_finish(call, 0, &res, NULL);
    } else {
        mw__http_finish(call, a->status, NULL, a->why != NULL ? a->why : "error");
    }
    answer_free(a);
}

static int stub_start(mw_http_client_t *hc, mw_http_call_t *call, const mw_http_request_t *req,
                      const char **why)
{
    sim_http_t *h = hc->impl;
    answer_t *a = calloc(1, sizeof(*a));
    lua_State *co;
    run_t r;
    int nres, st;

    *why = "out of memory";
    if (a == NULL)
        return MW_ENOMEM;
    r.req = req;
    r.a = a;
    r.stub_ref = h->stub_ref;
    co = lua_newthread(h->L);
    lua_pushcfunction(co, run_stub);
    lua_pushlightuserdata(co, &r);
    st = lua_resume(co, h->L, 1, &nres);
    if (st != LUA_OK) {
        const char *msg = st == LUA_YIELD ? "the stub yielded" : lua_tostring(co, -1);
        size_t n = msg != NULL ? strlen(msg) : 0;
        free(a->why);
        a->why = malloc(n + 18);
        if (a->why != NULL) {
            memcpy(a->why, "sim stub raised: ", 17);
            memcpy(a->why + 17, msg != NULL ? msg : "", n + 1);
        }
        a->status = MW_ELUA;
    }
    lua_pop(h->L, 1); /* the thread goes with the next collection */
    a->call = call;
    if (a->delay > req->timeout) {
        a->delay = req->timeout;
        a->status = MW_EIO;
        free(a->why);
        a->why = strdup("timeout");
    }
    mw_timer_init(&a->timer, on_answer, a);
    if (mw_timer_start(h->node->timers, &a->timer, a->delay, 0) != 0) {
        answer_free(a);
        return MW_ENOMEM;
    }
    call->impl = a;
    return 0;
}

static void stub_cancel(mw_http_client_t *hc, mw_http_call_t *call)
{
    sim_http_t *h = hc->impl;
    answer_t *a = call->impl;

    if (a == NULL)
        return;
    mw_timer_stop(h->node->timers, &a->timer);
    answer_free(a);
    call->impl = NULL;
}

static void stub_close(mw_http_client_t *hc)
{
    (void)hc; /* sim_http_free lets it go */
}

static const mw_http_ops_t stub_ops = {stub_start, stub_cancel, stub_close};

void sim_http_free(mw_node_t *node, sim_http_t *h)
{
    if (h == NULL)
        return;
    if (node->http == &h->hc)
        node->http = NULL;
    mw_http_client_close(&h->hc);
    luaL_unref(h->L, LUA_REGISTRYINDEX, h->stub_ref);
    luaL_unref(h->L, LUA_REGISTRYINDEX, h->thread_ref);
    free(h);
}

void sim_http_set(lua_State *L, int idx, mw_node_t *node, sim_http_t **hp)
{
    sim_http_t *h;
    int t = lua_type(L, idx);

    luaL_argexpected(L, t == LUA_TFUNCTION || t == LUA_TTABLE || t == LUA_TNIL, idx,
                     "function, table or nil");
    sim_http_free(node, *hp);
    *hp = NULL;
    if (t == LUA_TNIL)
        return;
    h = calloc(1, sizeof(*h));
    if (h == NULL)
        luaL_error(L, "out of memory");
    h->node = node;
    lua_pushvalue(L, idx);
    h->stub_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    h->L = lua_newthread(L);
    h->thread_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    mw_http_client_init(&h->hc, &stub_ops, h, node->cfg, node->metrics);
    node->http = &h->hc;
    *hp = h;
}
