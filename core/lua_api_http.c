/* moonwire.http.request{method =, url =, headers =, body =, timeout =,
 * redirects =}: an HTTP call from a hook that waits for the answer while the
 * loop goes on (lua_task.h), through the node's HTTP client
 * (http_client.h). It returns {status =, headers =, body =}, or nil and why.
 *
 * A script's mistakes raise (a missing url, a header name that is no token,
 * a value with a line break, too many headers, a timeout past
 * http_client.max_timeout); what the network or the bounds decide comes back
 * as nil, why.
 */
#include "http_client.h"
#include "lua_api_int.h"
#include "lua_state.h"
#include "lua_task.h"
#include "moonwire/config.h"
#include "node.h"

#include <lauxlib.h>
#include <math.h>
#include <string.h>
#include <strings.h>

#define MAX_URL 8192
#define MAX_HEADER_LINE 8192
#define MAX_REDIRECTS 20

/* The answer, while the woken hook pushes it. */
typedef struct {
    int status;
    const mw_http_response_t *res;
    const char *why;
} answer_t;

/* Pushes what request returns: {status, headers, body}, or nil and why. A
 * header that comes more than once has its values joined by ", ". */
static int push_answer(lua_State *co, void *ud)
{
    const answer_t *a = ud;
    const mw_http_response_t *r = a->res;

    if (a->status != 0)
        return mw__lua_fail(co, a->why);
    lua_createtable(co, 0, 3);
    lua_pushinteger(co, (lua_Integer)r->status);
    lua_setfield(co, -2, "status");
    lua_createtable(co, 0, (int)r->nheaders);
    for (size_t i = 0; i < r->nheaders; i++) {
        const mw_http_field_t *h = &r->headers[i];
        lua_pushlstring(co, h->name, h->name_len);
        if (lua_rawget(co, -2) == LUA_TSTRING) {
            lua_pushliteral(co, ", ");
            lua_pushlstring(co, h->value, h->value_len);
            lua_concat(co, 3);
        } else {
            lua_pop(co, 1);
            lua_pushlstring(co, h->value, h->value_len);
        }
        lua_pushlstring(co, h->name, h->name_len);
        lua_insert(co, -2);
        lua_rawset(co, -3);
    }
    lua_setfield(co, -2, "headers");
    lua_pushlstring(co, r->body, r->body_len);
    lua_setfield(co, -2, "body");
    return 1;
}

static void on_done(void *ud, int status, const mw_http_response_t *res, const char *why)
{
    answer_t a = {status, res, why};
    mw_lua_wake(ud, push_answer, &a);
}

static int is_token(const char *s, size_t len)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";

    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              (ch != '\0' && strchr(extra, ch) != NULL)))
            return 0;
    }
    return 1;
}

/* The headers table at idx into a scratch array left on the stack. Raises
 * for what the script got wrong. */
static mw_http_field_t *read_headers(lua_State *L, int idx, const mw_config_t *cfg, size_t *n)
{
    size_t max = cfg->http_client_max_headers, count = 0;
    mw_http_field_t *hs = lua_newuserdatauv(L, max * sizeof(*hs), 0);

    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        mw_http_field_t *h;
        if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "bad 'headers': names and values must be strings");
        if (count == max)
            luaL_error(L, "bad 'headers': more than %d (http_client.max_headers)", (int)max);
        h = &hs[count++];
        h->name = lua_tolstring(L, -2, &h->name_len);
        h->value = lua_tolstring(L, -1, &h->value_len);
        if (!is_token(h->name, h->name_len))
            luaL_error(L, "bad 'headers': '%s' is not a header name", h->name);
        if (h->name_len + h->value_len > MAX_HEADER_LINE)
            luaL_error(L, "bad 'headers': '%s' is longer than %d bytes", h->name, MAX_HEADER_LINE);
        for (size_t i = 0; i < h->value_len; i++)
            if (h->value[i] == '\r' || h->value[i] == '\n' || h->value[i] == '\0')
                luaL_error(L, "bad 'headers': the value of '%s' holds a line break or a zero byte",
                           h->name);
        lua_pop(L, 1); /* the strings stay: the table holds them */
    }
    *n = count;
    return hs;
}

static int api_request(lua_State *L)
{
    mw_node_t *node = mw_lua_node(L);
    const mw_config_t *cfg = node->cfg;
    mw_http_request_t req;
    mw_http_call_t *call;
    mw_lua_task_t *w;
    const char *why;
    size_t len;
    int t;

    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    memset(&req, 0, sizeof(req));

    t = lua_getfield(L, 1, "url"); /* 2 */
    if (t != LUA_TSTRING)
        return luaL_error(L, "bad 'url': a string is needed");
    req.url = lua_tolstring(L, 2, &len);
    if (len > MAX_URL || strlen(req.url) != len)
        return luaL_error(L, "bad 'url': longer than %d bytes or holds a zero byte", MAX_URL);

    t = lua_getfield(L, 1, "method"); /* 3 */
    if (t == LUA_TNIL) {
        req.method = "GET";
    } else {
        if (t != LUA_TSTRING)
            return luaL_error(L, "bad 'method': a string is needed");
        req.method = lua_tolstring(L, 3, &len);
        if (len > 16 || !is_token(req.method, len))
            return luaL_error(L, "bad 'method': '%s' is not an HTTP method", req.method);
    }

    t = lua_getfield(L, 1, "body"); /* 4 */
    if (t == LUA_TSTRING)
        req.body = lua_tolstring(L, 4, &req.body_len);
    else if (t != LUA_TNIL)
        return luaL_error(L, "bad 'body': a string is needed");

    t = lua_getfield(L, 1, "timeout"); /* 5 */
    req.timeout = cfg->http_client_timeout;
    if (t != LUA_TNIL) {
        lua_Number s = lua_tonumber(L, 5);
        if (t != LUA_TNUMBER || !(s > 0) || s * 1000 > (lua_Number)cfg->http_client_max_timeout)
            return luaL_error(L,
                              "bad 'timeout': seconds above 0 and at most %f "
                              "(http_client.max_timeout)",
                              (double)cfg->http_client_max_timeout / 1000);
        req.timeout = (uint32_t)ceil(s * 1000);
    }

    t = lua_getfield(L, 1, "redirects"); /* 6 */
    if (t != LUA_TNIL) {
        lua_Integer n = lua_tointeger(L, 6);
        if (!lua_isinteger(L, 6) || n < 0 || n > MAX_REDIRECTS)
            return luaL_error(L, "bad 'redirects': an integer from 0 to %d", MAX_REDIRECTS);
        req.redirects = (uint32_t)n;
    }

    t = lua_getfield(L, 1, "headers"); /* 7 */
    if (t == LUA_TTABLE)
        req.headers = read_headers(L, 7, cfg, &req.nheaders); /* 8 */
    else if (t != LUA_TNIL)
        return luaL_error(L, "bad 'headers': a table is needed");

    if (strncasecmp(req.url, "http://", 7) != 0 && strncasecmp(req.url, "https://", 8) != 0)
        return mw__lua_fail(L, "only http and https URLs");
    if (node->http == NULL)
        return mw__lua_fail(L, "no HTTP client here");
    if (!mw_lua_can_wait(L))
        return mw__lua_fail(L, "cannot wait here");
    w = mw_lua_wait(L);
    call = mw_http_start(node->http, &req, on_done, w, &why);
    if (call == NULL) {
        mw_lua_unwait(w);
        return mw__lua_fail(L, why);
    }
    return mw_lua_yield(L);
}

void mw__lua_open_http(lua_State *L)
{
    static const luaL_Reg funcs[] = {{"request", api_request}, {NULL, NULL}};

    luaL_newlib(L, funcs);
    lua_setfield(L, -2, "http");
}
