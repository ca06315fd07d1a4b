/* The server API's methods (publish, broadcast, send, disconnect, presence,
 * history, info, batch), as they run in the node's Lua state for a request
 * of the HTTP API (api.c) or an entry of the queue (api_queue.c).
 *
 * The methods are a Lua chunk, loaded with the moonwire module before the
 * app (so that they use the module's functions as the core made them, and
 * an app that replaces moonwire.publish does not change the API). A request
 * runs as a task that may wait (mw_lua_spawn_then): presence, history and
 * publish to a history topic wait for Redis on a cluster. The params are
 * decoded by moonwire.json (its depth limit); every field is type-checked
 * in the chunk; the app's on_api hook, when it has one, sees each command
 * first and may refuse it or give other params.
 */
#include "api_methods.h"
#include "cluster.h"
#include "gauges.h"
#include "history.h"
#include "lua_state.h"
#include "lua_task.h"
#include "node.h"
#include "registry.h"
#include "timer.h"
#include "moonwire/config.h"
#include "moonwire/error.h"
#include "moonwire/log.h"
#include "moonwire/metrics.h"

#include <lauxlib.h>
#include <lua.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#define RUN_KEY "moonwire.api.run"

/* The chunk: called with the moonwire module and a table of C helpers;
 * returns run(method, body) -> status, JSON text. */
static const char chunk[] =
    "local mw, C = ...\n"
    "local publish, broadcast, send, connection = mw.publish, mw.broadcast, mw.send, mw.connection\n"
    "local presence, history, cluster, count = mw.presence, mw.history, mw.cluster, mw.count\n"
    "local decode, encode = mw.json.decode, mw.json.encode\n"
    "local warn = mw.log.warn\n"
    "local on_api, is_history, b64decode, info = C.on_api, C.is_history, C.b64decode, C.info\n"
    "local max_batch, disconnect_remote = C.max_batch, C.disconnect_remote\n"
    "local pcall, type, tostring, mtype, fmt = pcall, type, tostring, math.type, string.format\n"
    "local gsub, concat, pairs, getmetatable, setmetatable = string.gsub, table.concat, pairs,\n"
    "  getmetatable, setmetatable\n"
    "\n"
    "-- Lists the answer gives as JSON arrays even when empty (lua-cjson writes\n"
    "-- an empty table as {}): history's messages, a batch's results.\n"
    "local ARRAY = {}\n"
    "local function array(t) return setmetatable(t, ARRAY) end\n"
    "local function holds_array(v)\n"
    "  for _, x in pairs(v) do\n"
    "    if type(x) == 'table' and (getmetatable(x) == ARRAY or holds_array(x)) then return true end\n"
    "  end\n"
    "  return false\n"
    "end\n"
    "-- The answer's JSON text: lua-cjson's, but the tables that are or hold an\n"
    "-- array() are written here. nil, why when a value is not JSON.\n"
    "local function json(v)\n"
    "  if type(v) ~= 'table' or (getmetatable(v) ~= ARRAY and not holds_array(v)) then\n"
    "    return encode(v)\n"
    "  end\n"
    "  local parts, n = {}, 0\n"
    "  if getmetatable(v) == ARRAY then\n"
    "    for i = 1, #v do\n"
    "      local s, e = json(v[i])\n"
    "      if s == nil then return nil, e end\n"
    "      parts[i] = s\n"
    "    end\n"
    "    return '[' .. concat(parts, ',') .. ']'\n"
    "  end\n"
    "  for k, x in pairs(v) do\n"
    "    local s, e = json(x)\n"
    "    if s == nil then return nil, e end\n"
    "    n = n + 1\n"
    "    parts[n] = encode(tostring(k)) .. ':' .. s\n"
    "  end\n"
    "  return '{' .. concat(parts, ',') .. '}'\n"
    "end\n"
    "\n"
    "-- A soft failure of the module as an HTTP status.\n"
    "local function status_of(err)\n"
    "  if err == 'redis unavailable' or err == 'outbox full' then return 503 end\n"
    "  return 400\n"
    "end\n"
    "-- A field: nil when absent and optional, else a value of the type or nil, why.\n"
    "local function field(p, k, want, required)\n"
    "  local v = p[k]\n"
    "  if v == nil then\n"
    "    if required then return nil, fmt('missing field \"%s\" (%s)', k, want) end\n"
    "    return nil\n"
    "  end\n"
    "  local ok\n"
    "  if want == 'integer' then ok = mtype(v) == 'integer' else ok = type(v) == want end\n"
    "  if not ok then return nil, fmt('field \"%s\" must be a %s', k, want) end\n"
    "  return v\n"
    "end\n"
    "-- data, and binary (base64 in the JSON).\n"
    "local function payload(p)\n"
    "  local data, err = field(p, 'data', 'string', true)\n"
    "  if not data then return nil, err end\n"
    "  local binary, e2 = field(p, 'binary', 'boolean')\n"
    "  if e2 then return nil, e2 end\n"
    "  if binary then\n"
    "    data = b64decode(data)\n"
    "    if not data then return nil, 'field \"data\" is not valid base64' end\n"
    "  end\n"
    "  return data, nil, binary or false\n"
    "end\n"
    "local function opts_of(p, binary)\n"
    "  local except, err = field(p, 'except', 'string')\n"
    "  if err then return nil, err end\n"
    "  return {binary = binary, except = except}\n"
    "end\n"
    "\n"
    "local M = {}\n"
    "function M.publish(p)\n"
    "  local topic, err = field(p, 'topic', 'string', true)\n"
    "  if not topic then return nil, 400, err end\n"
    "  local data, e2, binary = payload(p)\n"
    "  if not data then return nil, 400, e2 end\n"
    "  local opts, e3 = opts_of(p, binary)\n"
    "  if not opts then return nil, 400, e3 end\n"
    "  if is_history(topic) then\n"
    "    local offset, n, queued = publish(topic, data, opts)\n"
    "    if offset == nil then return nil, status_of(n), n end\n"
    "    return {delivered = n, offset = offset, queued = queued and true or nil}\n"
    "  end\n"
    "  local n, queued = publish(topic, data, opts)\n"
    "  if n == nil then return nil, status_of(queued), queued end\n"
    "  return {delivered = n, queued = queued and true or nil}\n"
    "end\n"
    "function M.broadcast(p)\n"
    "  local data, err, binary = payload(p)\n"
    "  if not data then return nil, 400, err end\n"
    "  local opts, e2 = opts_of(p, binary)\n"
    "  if not opts then return nil, 400, e2 end\n"
    "  local n, queued = broadcast(data, opts)\n"
    "  if n == nil then return nil, status_of(queued), queued end\n"
    "  return {delivered = n, queued = queued and true or nil}\n"
    "end\n"
    "function M.send(p)\n"
    "  local id, err = field(p, 'id', 'string', true)\n"
    "  if not id then return nil, 400, err end\n"
    "  local data, e2, binary = payload(p)\n"
    "  if not data then return nil, 400, e2 end\n"
    "  local ok, why = send(id, data, {binary = binary})\n"
    "  if ok then return {sent = true, queued = why == 'queued' or nil} end\n"
    "  if why == 'closed' then return {sent = false, reason = 'no such connection'} end\n"
    "  return nil, status_of(why), why\n"
    "end\n"
    "function M.disconnect(p)\n"
    "  local id, err = field(p, 'id', 'string', true)\n"
    "  if not id then return nil, 400, err end\n"
    "  local code, e2 = field(p, 'code', 'integer')\n"
    "  if e2 then return nil, 400, e2 end\n"
    "  code = code or 4000\n"
    "  if code ~= 1000 and (code < 3000 or code > 4999) then\n"
    "    return nil, 400, 'field \"code\" must be 1000 or 3000 to 4999'\n"
    "  end\n"
    "  local reason, e3 = field(p, 'reason', 'string')\n"
    "  if e3 then return nil, 400, e3 end\n"
    "  if reason and #reason > 123 then return nil, 400, 'field \"reason\" is over 123 bytes' end\n"
    "  local c = connection(id)\n"
    "  if c ~= nil then\n"
    "    c:close(code, reason)\n"
    "    return {disconnected = true}\n"
    "  end\n"
    "  local sent, why = disconnect_remote(id, code, reason or '')\n"
    "  if sent then return {disconnected = true, forwarded = true} end\n"
    "  if why then return nil, status_of(why), why end\n"
    "  return {disconnected = false, reason = 'no such connection'}\n"
    "end\n"
    "function M.presence(p)\n"
    "  local topic, err = field(p, 'topic', 'string', true)\n"
    "  if not topic then return nil, 400, err end\n"
    "  local t, why = presence(topic)\n"
    "  if t == nil then return nil, status_of(why), why end\n"
    "  return {presence = t}\n"
    "end\n"
    "function M.history(p)\n"
    "  local topic, err = field(p, 'topic', 'string', true)\n"
    "  if not topic then return nil, 400, err end\n"
    "  if not is_history(topic) then return nil, 400, 'this topic keeps no history (history.topics)' end\n"
    "  local since, e2 = field(p, 'since', 'integer')\n"
    "  if e2 then return nil, 400, e2 end\n"
    "  local limit, e3 = field(p, 'limit', 'integer')\n"
    "  if e3 then return nil, 400, e3 end\n"
    "  if since and since < 0 then return nil, 400, 'field \"since\" must be 0 or more' end\n"
    "  if limit and limit < 1 then return nil, 400, 'field \"limit\" must be 1 or more' end\n"
    "  local h, why = history(topic, {since = since, limit = limit})\n"
    "  if h == nil then return nil, status_of(why), why end\n"
    "  if type(h.messages) == 'table' then array(h.messages) end\n"
    "  return h\n"
    "end\n"
    "function M.info(p)\n"
    "  local t = info()\n"
    "  t.cluster = cluster()\n"
    "  return t\n"
    "end\n"
    "\n"
    "local call\n"
    "function M.batch(p)\n"
    "  local cmds, err = field(p, 'commands', 'table', true)\n"
    "  if not cmds then return nil, 400, err end\n"
    "  local n = #cmds\n"
    "  if n > max_batch then return nil, 400, fmt('more than %d commands (api.max_batch)', max_batch) end\n"
    "  local results = array({})\n"
    "  for i = 1, n do\n"
    "    local c = cmds[i]\n"
    "    local st, r\n"
    "    if type(c) ~= 'table' or type(c.method) ~= 'string' then\n"
    "      st, r = 400, fmt('command %d: needs a \"method\" (a string)', i)\n"
    "    elseif c.params ~= nil and type(c.params) ~= 'table' then\n"
    "      st, r = 400, fmt('command %d: \"params\" must be an object', i)\n"
    "    elseif c.method == 'batch' then\n"
    "      st, r = 400, fmt('command %d: a batch can not hold a batch', i)\n"
    "    else\n"
    "      st, r = call(c.method, c.params or {})\n"
    "    end\n"
    "    if st == 200 then results[i] = {result = r}\n"
    "    else results[i] = {error = {code = st, message = r}} end\n"
    "  end\n"
    "  return {results = results}\n"
    "end\n"
    "\n"
    "-- A Lua error as the client sees it: its message without the chunk's position.\n"
    "local function clean(e)\n"
    "  e = tostring(e)\n"
    "  return (gsub(e, '^[^:]*:%d+: ', ''))\n"
    "end\n"
    "-- One command: status and the result, or the status and the error message.\n"
    "function call(method, p)\n"
    "  local f = M[method]\n"
    "  if f == nil then return 404, fmt('no such method \"%s\"', method) end\n"
    "  local hook = on_api()\n"
    "  if hook then\n"
    "    local ok, a, b = pcall(hook, method, p)\n"
    "    if not ok then\n"
    "      warn('api: on_api failed for %s: %s', method, tostring(a))\n"
    "      return 500, 'on_api failed'\n"
    "    end\n"
    "    if a == false then return 403, type(b) == 'string' and b or 'refused by on_api' end\n"
    "    if type(a) == 'table' then p = a end\n"
    "  end\n"
    "  local ok, r, st, msg = pcall(f, p)\n"
    "  if not ok then return 400, clean(r) end\n"
    "  if r == nil then return st, msg end\n"
    "  return 200, r\n"
    "end\n"
    "\n"
    "return function(method, body)\n"
    "  local p, err\n"
    "  if body == '' then p = {} else\n"
    "    p, err = decode(body)\n"
    "    if p == nil then\n"
    "      return 400, encode({error = {code = 400, message = 'bad JSON: ' .. tostring(err)}})\n"
    "    end\n"
    "    if type(p) ~= 'table' or p[1] ~= nil then\n"
    "      return 400, encode({error = {code = 400, message = 'the params must be a JSON object'}})\n"
    "    end\n"
    "  end\n"
    "  local st, r = call(method, p)\n"
    "  local text, e2\n"
    "  if st == 200 then text, e2 = json({result = r})\n"
    "  else text, e2 = encode({error = {code = st, message = r}}) end\n"
    "  if text == nil then\n"
    "    return 500, encode({error = {code = 500, message = 'the result is not JSON: ' .. tostring(e2)}})\n"
    "  end\n"
    "  return st, text\n"
    "end\n";

/* C.on_api(): the app's on_api hook, or nil (looked up per call: a reload
 * may add or drop it). */
static int h_on_api(lua_State *L)
{
    mw_lua_t *lh = mw__lua_host(L);
    if (lh->hooks[MW_HOOK_API] == LUA_NOREF)
        lua_pushnil(L);
    else
        lua_rawgeti(L, LUA_REGISTRYINDEX, lh->hooks[MW_HOOK_API]);
    return 1;
}

static int h_is_history(lua_State *L)
{
    size_t len;
    const char *topic = luaL_checklstring(L, 1, &len);
    lua_pushboolean(L, mw_history_enabled(mw_lua_node(L)->cfg, topic, len));
    return 1;
}

/* C.b64decode(s): the bytes, or nil when s is not base64 (padded). */
static int h_b64decode(lua_State *L)
{
    size_t len, pad = 0;
    const char *s = luaL_checklstring(L, 1, &len);
    luaL_Buffer b;
    unsigned char *out;
    int n;

    if (len % 4 != 0 || len > INT32_MAX) {
        lua_pushnil(L);
        return 1;
    }
    if (len == 0) {
        lua_pushliteral(L, "");
        return 1;
    }
    if (s[len - 1] == '=')
        pad = s[len - 2] == '=' ? 2 : 1;
    out = (unsigned char *)luaL_buffinitsize(L, &b, len / 4 * 3 + 1);
    n = EVP_DecodeBlock(out, (const unsigned char *)s, (int)len);
    if (n < 0 || (size_t)n < pad) {
        lua_pushnil(L);
        return 1;
    }
    luaL_pushresultsize(&b, (size_t)n - pad);
    return 1;
}

/* C.disconnect_remote(id, code, reason): true when id is another node's and
 * the close went to it through the backplane; false when there is nowhere
 * to send it (no backplane, or an id of this node); nil, why when refused. */
static int h_disconnect_remote(lua_State *L)
{
    mw_node_t *node = mw_lua_node(L);
    size_t len, rlen;
    const char *id = luaL_checklstring(L, 1, &len);
    lua_Integer code = luaL_checkinteger(L, 2);
    const char *reason = luaL_checklstring(L, 3, &rlen);
    int r;

    if (node->cluster == NULL || mw_ids_is_local(&node->reg->ids, id, len)) {
        lua_pushboolean(L, 0);
        return 1;
    }
    r = mw_cluster_disconnect(node->cluster, id, len, (uint16_t)code, reason, rlen);
    if (r == 0 || r == MW_EAGAIN) {
        lua_pushboolean(L, 1);
        return 1;
    }
    luaL_pushfail(L);
    lua_pushstring(L, r == MW_ELIMIT ? "outbox full" : r == MW_EINVAL ? "not a connection id"
                                                                     : mw_strerror(r));
    return 2;
}

/* C.info(): what the node is and holds. */
static int h_info(lua_State *L)
{
    mw_node_t *node = mw_lua_node(L);
    lua_Integer started = lua_tointeger(L, lua_upvalueindex(1));

    mw_gauges_publish(node);
    lua_createtable(L, 0, 5);
    lua_pushlstring(L, node->reg->ids.prefix, node->reg->ids.prefix_len - 1);
    lua_setfield(L, -2, "node");
    lua_pushinteger(L, (lua_Integer)node->reg->nopen);
    lua_setfield(L, -2, "connections");
    lua_pushinteger(L, (lua_Integer)node->metrics->topics);
    lua_setfield(L, -2, "topics");
    lua_pushinteger(L, ((lua_Integer)node->timers->now - started) / 1000);
    lua_setfield(L, -2, "uptime");
    return 1;
}

int mw__api_methods_open(lua_State *L)
{
    mw_node_t *node = mw_lua_node(L);

    /* The module is on top. */
    if (luaL_loadbufferx(L, chunk, sizeof(chunk) - 1, "=api", "t") != LUA_OK)
        return lua_error(L);
    lua_pushvalue(L, -2);
    lua_createtable(L, 0, 5);
    lua_pushcfunction(L, h_on_api);
    lua_setfield(L, -2, "on_api");
    lua_pushcfunction(L, h_is_history);
    lua_setfield(L, -2, "is_history");
    lua_pushcfunction(L, h_b64decode);
    lua_setfield(L, -2, "b64decode");
    lua_pushinteger(L, (lua_Integer)node->timers->now);
    lua_pushcclosure(L, h_info, 1);
    lua_setfield(L, -2, "info");
    lua_pushcfunction(L, h_disconnect_remote);
    lua_setfield(L, -2, "disconnect_remote");
    lua_pushinteger(L, (lua_Integer)node->cfg->api_max_batch);
    lua_setfield(L, -2, "max_batch");
    lua_call(L, 2, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, RUN_KEY);
    return 0;
}

/* A request of the API on its way through the Lua state. */
typedef struct {
    mw_api_answer_cb cb;
    void *ud;
} run_t;

/* The API chunk's end (mw_lua_then_t): its two results, the status and the
 * answer's JSON, on top of the main state when ok. */
static void on_done(mw_lua_t *lh, mw_conn_t *unused, int ok, const void *ud)
{
    run_t *r = (run_t *)ud;
    mw_api_answer_cb cb = r->cb;
    void *cud = r->ud;
    lua_State *L = mw_lua_state(lh);
    static const char failed[] = "{\"error\":{\"code\":500,\"message\":\"the request failed in the "
                                 "server (see its log)\"}}";

    (void)unused;
    free(r);
    if (ok && lua_isinteger(L, -2) && lua_type(L, -1) == LUA_TSTRING) {
        size_t len;
        const char *text = lua_tolstring(L, -1, &len);
        cb(cud, (int)lua_tointeger(L, -2), text, len);
    } else {
        cb(cud, 500, failed, sizeof(failed) - 1);
    }
    if (ok)
        lua_pop(L, 2);
}

static int push_args(lua_State *L)
{
    const char *const *s = lua_touserdata(L, 1);
    const size_t *n = lua_touserdata(L, 2);
    lua_getfield(L, LUA_REGISTRYINDEX, RUN_KEY);
    lua_pushlstring(L, s[0], n[0]);
    lua_pushlstring(L, s[1], n[1]);
    return 3;
}

void mw_api_run(mw_lua_t *lh, const char *method, size_t mlen, const char *params, size_t plen,
                mw_api_answer_cb cb, void *ud)
{
    static const char nomem[] = "{\"error\":{\"code\":503,\"message\":\"out of memory\"}}";
    lua_State *L = mw_lua_state(lh);
    const char *s[2] = {method, params != NULL ? params : ""};
    size_t n[2] = {mlen, params != NULL ? plen : 0};
    run_t *r = malloc(sizeof(*r));

    /* The function and its arguments, pushed under protection (they allocate). */
    lua_pushcfunction(L, push_args);
    lua_pushlightuserdata(L, (void *)s);
    lua_pushlightuserdata(L, n);
    if (r == NULL || mw__lua_pcall(lh, 2, 3) != LUA_OK) {
        lua_pop(L, r != NULL ? 1 : 3); /* the error, or what was pushed */
        free(r);
        cb(ud, 503, nomem, sizeof(nomem) - 1);
        return;
    }
    r->cb = cb;
    r->ud = ud;
    {
        const mw_lua_then_t then = {on_done, r, 2};
        mw_lua_spawn_then(lh, NULL, "the server API", 2, &then);
    }
}

int mw_api_method_index(const char *method, size_t len)
{
    static const char *const names[] = {
#define XX(name) #name,
        MW_METRICS_API_METHOD_MAP(XX)
#undef XX
    };
    for (int i = 0; i < MW_API_unknown; i++)
        if (strlen(names[i]) == len && memcmp(names[i], method, len) == 0)
            return i;
    return MW_API_unknown;
}

int mw_api_status_index(int status)
{
    switch (status) {
#define XX(code)                                                                                   \
    case code:                                                                                     \
        return MW_API_S##code;
        MW_METRICS_API_STATUS_MAP(XX)
#undef XX
    default:
        return MW_API_S500;
    }
}
