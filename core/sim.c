/* moonwire.sim: the real core with in-memory connections and virtual time,
 * as a Lua C module for busted specs.
 *
 * A sim server is a whole node (mw_server_t: registry, topics, Lua host,
 * timers) without a loop. Clients talk to it through the transport table like TCP
 * does: their bytes go through http-parser and the WebSocket parser, and
 * what the server queues comes back as frames. After every operation the
 * sim pumps the server to quiescence (deferred work, replies a browser
 * would send on its own: pong, close echo), so a spec sees a settled world.
 * The app runs in its own Lua state; specs only see copies of what it sent.
 *
 *   local sim = require "moonwire.sim"
 *   local srv = sim.new { script = "scripts/chat.lua", config = {...} }
 *   local ann = srv:connect("/chat?nick=ann")  -- nil, status, body when refused
 *   -- (while on_upgrade waits: the client, ann.status == 0 until it answers)
 *   ann:send("hi")  ann:received()  srv:advance(30000)  srv:reload()  srv:close()
 *   srv:http(stub)  -- answers moonwire.http.request on virtual time (sim_http.c)
 */
#include "sim.h"
#include "sim_int.h"
#include "api_methods.h"
#include "cluster.h"
#include "gauges.h"
#include "lua_host.h"
#include "lua_state.h"
#include "node.h"
#include "outq.h"
#include "registry.h"
#include "sim_http.h"
#include "timer.h"
#include "moonwire/config.h"
#include "moonwire/error.h"
#include "moonwire/log.h"
#include "moonwire/server.h"

#include <arpa/inet.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PUMP_LIMIT 100000

/* Transport ---------------------------------------------------------------------- */

static sim_conn_t *sim_of(mw_conn_t *c)
{
    return MW_CONTAINER_OF(c, sim_conn_t, c);
}

static void want_reply(sim_server_t *ss, sim_client_t *cl)
{
    if (!mw_list_linked(&cl->reply_link))
        mw_list_insert_tail(&ss->replies, &cl->reply_link);
}

static void receive_frame(sim_conn_t *sc, mw_frame_t *f)
{
    sim_client_t *cl = sc->client;
    const uint8_t *p = mw_frame_payload(f);
    size_t len = mw_frame_payload_len(f);

    if (cl == NULL)
        return;
    if (f->hdr == 0) { /* raw HTTP: the handshake reply */
        const char *body;
        if (f->len > 12 && memcmp(f->bytes, "HTTP/1.1 ", 9) == 0)
            cl->status = atoi((const char *)f->bytes + 9);
        body = memmem(f->bytes, f->len, "\r\n\r\n", 4);
        if (body != NULL && cl->status != 101) {
            size_t n = f->len - (size_t)((const uint8_t *)body + 4 - f->bytes);
            if (n >= sizeof(cl->body))
                n = sizeof(cl->body) - 1;
            memcpy(cl->body, body + 4, n);
            cl->body[n] = '\0';
        }
        return;
    }
    switch (f->bytes[0] & 0x0f) {
    case MW_OP_TEXT:
    case MW_OP_BINARY:
        if (cl->nmsgs == cl->capmsgs) {
            size_t cap = cl->capmsgs ? cl->capmsgs * 2 : 16;
            mw_frame_t **m = realloc(cl->msgs, cap * sizeof(*m));
            if (m == NULL)
                return;
            cl->msgs = m;
            cl->capmsgs = cap;
        }
        cl->msgs[cl->nmsgs++] = mw_frame_ref(f);
        break;
    case MW_OP_CLOSE:
        cl->close_received = 1;
        cl->close_code = len >= 2 ? (uint16_t)(p[0] << 8 | p[1]) : 1005;
        cl->close_reason_len = len > 2 ? len - 2 : 0;
        memcpy(cl->close_reason, p + 2, cl->close_reason_len);
        if (!cl->close_sent) {
            cl->want_close_echo = 1; /* as a browser does */
            want_reply(sc->ss, cl);
        }
        break;
    case MW_OP_PING:
        cl->pong_len = (int)len;
        memcpy(cl->pong, p, len);
        want_reply(sc->ss, cl);
        break;
    default:
        break;
    }
}

static void sim_flush(mw_conn_t *c)
{
    mw_frame_t *f;

    /* Everything is "written" at once: each queued frame reaches the client whole. */
    while ((f = mw_outq_head(&c->outq)) != NULL) {
        receive_frame(sim_of(c), f);
        mw_conn_on_written(c, f->len); /* drops the queue's reference; may finish */
    }
}

static void sim_done(mw_conn_t *c)
{
    sim_conn_t *sc = sim_of(c);
    if (mw_list_linked(&sc->link)) {
        mw_list_remove(&sc->link);
        mw_list_insert_tail(&sc->ss->finished, &sc->link);
    }
}

static void sim_pause(mw_conn_t *c, int paused)
{
    (void)c;
    (void)paused;
}

static const mw_transport_t sim_transport = {"sim", sim_flush, sim_done, sim_done, sim_pause};

uint8_t *mw__sim_client_frame(int fin, uint8_t opcode, const uint8_t *data, size_t len,
                              size_t *out)
{
    static const uint8_t mask[4] = {0x37, 0xfa, 0x21, 0x3d};
    uint8_t hdr[MW_FRAME_MAX_HEADER];
    size_t h = mw_frame_header(hdr, fin, 0, opcode, len);
    uint8_t *buf = malloc(h + 4 + len);

    if (buf == NULL)
        return NULL;
    memcpy(buf, hdr, h);
    buf[1] |= 0x80;
    memcpy(buf + h, mask, 4);
    for (size_t i = 0; i < len; i++)
        buf[h + 4 + i] = data[i] ^ mask[i & 3];
    *out = h + 4 + len;
    return buf;
}

void mw__sim_feed(sim_conn_t *sc, const uint8_t *data, size_t len)
{
    if (sc == NULL || sc->c.freed)
        return;
    mw_conn_on_read(&sc->c, data, len);
}

/* Runs the server until nothing is left to do. */
void mw_sim_server_settle(sim_server_t *ss)
{
    if (!ss->alive)
        return;
    for (int i = 0; i < PUMP_LIMIT; i++) {
        mw_server_run_deferred(ss->srv);
        if (!mw_list_empty(&ss->replies)) {
            sim_client_t *cl = MW_CONTAINER_OF(ss->replies.next, sim_client_t, reply_link);
            size_t n;
            uint8_t *buf;
            mw_list_remove(&cl->reply_link);
            if (cl->pong_len >= 0 && cl->sc != NULL && !cl->close_sent) {
                buf = mw__sim_client_frame(1, MW_OP_PONG, cl->pong, (size_t)cl->pong_len, &n);
                cl->pong_len = -1;
                if (buf != NULL)
                    mw__sim_feed(cl->sc, buf, n);
                free(buf);
            }
            if (cl->want_close_echo && cl->sc != NULL) {
                uint8_t code[2] = {(uint8_t)(cl->close_code >> 8), (uint8_t)cl->close_code};
                cl->want_close_echo = 0;
                cl->close_sent = 1;
                buf = mw__sim_client_frame(1, MW_OP_CLOSE, code, cl->close_code == 1005 ? 0 : 2, &n);
                if (buf != NULL)
                    mw__sim_feed(cl->sc, buf, n);
                free(buf);
            }
            continue;
        }
        if (!mw_list_empty(&ss->finished)) {
            sim_conn_t *sc = MW_CONTAINER_OF(ss->finished.next, sim_conn_t, link);
            mw_list_remove(&sc->link);
            mw_conn_release(&sc->c);
            if (sc->client != NULL)
                sc->client->sc = NULL;
            free(sc);
            continue;
        }
        if (!mw_server_pending(ss->srv))
            return;
    }
    mw_log_error("moonwire.sim: the server did not settle after %d steps", PUMP_LIMIT);
}

void mw__sim_pump(sim_server_t *ss)
{
    if (ss->joined)
        ss->join.pump(ss->join.ud);
    else
        mw_sim_server_settle(ss);
}

mw_node_t *mw_sim_server_node(sim_server_t *ss)
{
    return ss->alive ? ss->node : NULL;
}

/* Server object ------------------------------------------------------------------- */

static sim_server_t *check_server(lua_State *L, int idx)
{
    sim_server_t *ss = luaL_checkudata(L, idx, SERVER_META);
    if (!ss->alive)
        luaL_error(L, "this sim server is closed");
    return ss;
}

void mw_sim_server_close(sim_server_t *ss)
{
    if (!ss->alive)
        return;
    /* Close every connection the way SIGTERM does, then drop what is left. */
    mw_server_drain(ss->srv, NULL);
    mw__sim_pump(ss);
    while (!mw_list_empty(&ss->conns)) {
        sim_conn_t *sc = MW_CONTAINER_OF(ss->conns.next, sim_conn_t, link);
        mw_conn_on_eof(&sc->c);
        mw__sim_pump(ss);
    }
    sim_http_free(ss->node, ss->http); /* its waiting calls end: "shutting down" */
    ss->http = NULL;
    mw_cluster_stop(ss->node);
    mw__sim_pump(ss);
    ss->alive = 0;
    mw__sim_report_dead(ss);
    mw_server_free(ss->srv);
    ss->srv = NULL;
    mw_config_close(&ss->cfg);
}

sim_server_t *mw_sim_server_push(lua_State *L, int opts, const mw_sim_join_t *join)
{
    sim_server_t *ss;
    char err[1024];
    const char *script = NULL;

    luaL_checktype(L, opts, LUA_TTABLE);
    ss = lua_newuserdatauv(L, sizeof(*ss), 1);
    memset(ss, 0, sizeof(*ss));
    mw_list_init(&ss->conns);
    mw_list_init(&ss->finished);
    mw_list_init(&ss->replies);
    if (mw_config_init(&ss->cfg) != 0)
        luaL_error(L, "out of memory");
    ss->cfg.log_level = MW_LOG_WARN;
    luaL_setmetatable(L, SERVER_META);

    if (join != NULL) {
        ss->join = *join;
        ss->joined = 1;
        mw_config_set_str(&ss->cfg.node_id, join->node_id);
        mw_config_list_clear(&ss->cfg.cluster_redis);
        for (int i = 0; i < (join->shards > 0 ? join->shards : 1); i++) {
            char url[48];
            snprintf(url, sizeof(url), "redis://moonwire.sim:%d", 6379 + i);
            mw_config_list_add(&ss->cfg.cluster_redis, url);
        }
    }
    if (lua_getfield(L, opts, "config") == LUA_TTABLE &&
        mw_config_apply(&ss->cfg, L, -1, "sim.new config", err, sizeof(err)) != 0) {
        mw_config_close(&ss->cfg);
        luaL_error(L, "%s", err);
    }
    lua_pop(L, 1);
    if (lua_getfield(L, opts, "script") == LUA_TSTRING)
        script = lua_tostring(L, -1);
    else if (!lua_isnil(L, -1))
        luaL_error(L, "sim.new: 'script' must be a string");
    if (script != NULL)
        mw_config_set_str(&ss->cfg.script, script);
    lua_pop(L, 1);
    if (lua_getfield(L, opts, "node_id") == LUA_TSTRING)
        mw_config_set_str(&ss->cfg.node_id, lua_tostring(L, -1));
    lua_pop(L, 1);
    if (mw__sim_report_options(L, opts, ss) != 0) {
        mw_config_close(&ss->cfg);
        lua_error(L);
    }
    if (mw_config_validate(&ss->cfg, err, sizeof(err)) != 0) {
        mw_config_close(&ss->cfg);
        luaL_error(L, "%s", err);
    }
    mw__sim_report_loading(ss, (mw_log_level_t)ss->cfg.log_level);
    ss->srv = mw_server_new(&ss->cfg, 0, err, sizeof(err));
    mw__sim_report_loading(NULL, (mw_log_level_t)ss->cfg.log_level);
    if (ss->srv == NULL) {
        mw__sim_report_forget(ss);
        mw_config_close(&ss->cfg);
        luaL_error(L, "%s", err);
    }
    ss->node = mw_server_node(ss->srv);
    ss->alive = 1;
    mw__sim_report_live(ss);
    if (join != NULL && mw_cluster_start(ss->node, join->driver, join->drv, err, sizeof(err)) != 0) {
        mw_sim_server_close(ss);
        luaL_error(L, "%s", err);
    }
    mw_server_start(ss->srv);
    mw__sim_pump(ss);
    return ss;
}

int mw_sim_new(lua_State *L)
{
    return mw_sim_settle_call(L, mw_sim_server_push(L, 1, NULL), 1);
}

static int server_gc(lua_State *L)
{
    sim_server_t *ss = luaL_checkudata(L, 1, SERVER_META);
    mw_sim_server_close(ss);
    mw__sim_report_forget(ss);
    return 0;
}

static int server_close(lua_State *L)
{
    sim_server_t *ss = luaL_checkudata(L, 1, SERVER_META);
    mw_sim_server_close(ss);
    return mw_sim_settle_call(L, ss, 0);
}

typedef struct {
    char data[16384];
    size_t len;
} reqbuf_t;

static void add(reqbuf_t *b, const char *s)
{
    size_t n = strlen(s);
    if (b->len + n < sizeof(b->data)) {
        memcpy(b->data + b->len, s, n);
        b->len += n;
    }
}

static void add_header(reqbuf_t *b, const char *name, const char *value)
{
    add(b, name);
    add(b, ": ");
    add(b, value);
    add(b, "\r\n");
}

/* Builds the request a browser would send for path, with opts' extras. */
static void build_request(lua_State *L, reqbuf_t *b, const char *path, int opts)
{
    add(b, "GET ");
    add(b, path);
    add(b, " HTTP/1.1\r\nHost: sim.local\r\n");
    add_header(b, "Upgrade", "websocket");
    add_header(b, "Connection", "Upgrade");
    add_header(b, "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
    add_header(b, "Sec-WebSocket-Version", "13");
    if (opts != 0) {
        if (lua_getfield(L, opts, "protocols") == LUA_TTABLE) {
            add(b, "Sec-WebSocket-Protocol: ");
            for (lua_Integer i = 1; lua_rawgeti(L, -1, i) == LUA_TSTRING; i++) {
                if (i > 1)
                    add(b, ", ");
                add(b, lua_tostring(L, -1));
                lua_pop(L, 1);
            }
            lua_pop(L, 1);
            add(b, "\r\n");
        }
        lua_pop(L, 1);
        if (lua_getfield(L, opts, "origin") == LUA_TSTRING)
            add_header(b, "Origin", lua_tostring(L, -1));
        lua_pop(L, 1);
        if (lua_getfield(L, opts, "headers") == LUA_TTABLE) {
            lua_pushnil(L);
            while (lua_next(L, -2) != 0) {
                if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING)
                    add_header(b, lua_tostring(L, -2), lua_tostring(L, -1));
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 1);
    }
    add(b, "\r\n");
}

static int server_connect(lua_State *L)
{
    sim_server_t *ss = check_server(L, 1);
    const char *path = luaL_optstring(L, 2, "/");
    sim_conn_t *sc;
    sim_client_t *cl;
    mw_addr_t addr;
    reqbuf_t *req;
    const char *ip = "127.0.0.1";
    int opts = lua_isnoneornil(L, 3) ? 0 : 3;

    if (opts != 0) {
        luaL_checktype(L, 3, LUA_TTABLE);
        /* addr, or remote_addr, its older name (kept for existing specs). */
        if (lua_getfield(L, 3, "addr") == LUA_TSTRING ||
            (lua_pop(L, 1), lua_getfield(L, 3, "remote_addr")) == LUA_TSTRING)
            ip = lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    memset(&addr, 0, sizeof(addr));
    if (inet_pton(AF_INET, ip, &addr.in4.sin_addr) == 1)
        addr.in4.sin_family = AF_INET;
    else if (inet_pton(AF_INET6, ip, &addr.in6.sin6_addr) == 1)
        addr.in6.sin6_family = AF_INET6;
    else
        return luaL_argerror(L, 3, "addr is not an IP address");

    req = lua_newuserdatauv(L, sizeof(*req), 0); /* scratch */
    req->len = 0;
    build_request(L, req, path, opts);

    cl = lua_newuserdatauv(L, sizeof(*cl), 1);
    memset(cl, 0, sizeof(*cl));
    cl->pong_len = -1;
    mw_list_init(&cl->reply_link);
    luaL_setmetatable(L, CLIENT_META);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1); /* the client keeps its server alive */

    sc = calloc(1, sizeof(*sc));
    if (sc == NULL)
        return luaL_error(L, "out of memory");
    sc->ss = ss;
    sc->client = cl;
    cl->sc = sc;
    mw_list_insert_tail(&ss->conns, &sc->link);
    if (mw_conn_init(&sc->c, ss->node->conns, &sim_transport, &addr) != 0) {
        sim_done(&sc->c);
        mw__sim_pump(ss);
        return luaL_error(L, "out of memory");
    }
    mw_conn_id(&sc->c, cl->id);
    mw__sim_feed(sc, (const uint8_t *)req->data, req->len);
    mw__sim_pump(ss);
    /* Status 0: on_upgrade waits; the client learns its answer later
     * (client.status, client:is_open()). */
    if (cl->status != 101 && cl->status != 0) {
        lua_pushnil(L);
        lua_pushinteger(L, cl->status);
        lua_pushstring(L, cl->body);
        return mw_sim_settle_call(L, ss, 3);
    }
    return mw_sim_settle_call(L, ss, 1);
}

static int server_advance(lua_State *L)
{
    sim_server_t *ss = check_server(L, 1);
    lua_Integer ms = luaL_checkinteger(L, 2);
    mw_timers_t *ts = ss->node->timers;
    uint64_t target;

    luaL_argcheck(L, ms >= 0, 2, "time only goes forward");
    if (ss->joined) {
        ss->join.advance(ss->join.ud, (uint64_t)ms);
        return mw_sim_settle_call(L, ss, 0);
    }
    target = ts->now + (uint64_t)ms;
    /* Step from deadline to deadline, so timers see each other's effects and
     * a repeating timer fires once per period. */
    for (int i = 0; i < 1000000; i++) {
        int64_t next = mw_timers_next(ts);
        if (next < 0 || ts->now + (uint64_t)next > target)
            break;
        mw_timers_run(ts, ts->now + (uint64_t)next);
        mw__sim_pump(ss);
    }
    ts->now = target;
    mw__sim_pump(ss);
    return mw_sim_settle_call(L, ss, 0);
}

/* srv:api(method [, params_json]) -> status, JSON answer: a command of the
 * server API, as POST /api/METHOD would run it (on_api first). */
typedef struct {
    int done, abandoned, status;
    char *body;
    size_t len;
} sim_answer_t;

static void on_api_answer(void *ud, int status, const char *body, size_t len)
{
    sim_answer_t *a = ud;
    if (a->abandoned) {
        free(a);
        return;
    }
    a->done = 1;
    a->status = status;
    a->body = malloc(len + 1);
    if (a->body != NULL) {
        memcpy(a->body, body, len);
        a->len = len;
    }
}

static int server_api(lua_State *L)
{
    sim_server_t *ss = check_server(L, 1);
    size_t mlen, plen;
    const char *method = luaL_checklstring(L, 2, &mlen);
    const char *params = luaL_optlstring(L, 3, "", &plen);
    sim_answer_t *a = calloc(1, sizeof(*a));

    if (a == NULL)
        return luaL_error(L, "not enough memory");
    mw_api_run(ss->node->lua, method, mlen, params, plen, on_api_answer, a);
    mw__sim_pump(ss);
    if (!a->done) { /* it waits (nothing does in the sim today): the answer is dropped */
        a->abandoned = 1;
        luaL_pushfail(L);
        lua_pushliteral(L, "the command waits");
        return mw_sim_settle_call(L, ss, 2);
    }
    lua_pushinteger(L, a->status);
    lua_pushlstring(L, a->body != NULL ? a->body : "", a->len);
    free(a->body);
    free(a);
    return mw_sim_settle_call(L, ss, 2);
}

static int server_reload(lua_State *L)
{
    sim_server_t *ss = check_server(L, 1);
    char err[1024];
    int r;

    char *previous = strdup(ss->cfg.script);

    if (!lua_isnoneornil(L, 2))
        mw_config_set_str(&ss->cfg.script, luaL_checkstring(L, 2));
    ss->node->metrics->reloads++;
    r = mw_lua_reload(ss->node->lua, err, sizeof(err));
    if (r != 0 && previous != NULL)
        mw_config_set_str(&ss->cfg.script, previous); /* a failed reload changes nothing */
    free(previous);
    if (r != 0) {
        ss->node->metrics->reload_failures++;
        mw_log_error("reload failed, the previous app keeps serving: %s", err);
        mw__sim_pump(ss);
        luaL_pushfail(L);
        lua_pushstring(L, err);
        return mw_sim_settle_call(L, ss, 2);
    }
    mw__sim_pump(ss);
    lua_pushboolean(L, 1);
    return mw_sim_settle_call(L, ss, 1);
}

/* srv:http(stub): moonwire.http.request answers from stub (a function or a
 * table; nil: none), and hooks may wait for them. */
static int server_http(lua_State *L)
{
    sim_server_t *ss = check_server(L, 1);

    luaL_checkany(L, 2);
    sim_http_set(L, 2, ss->node, &ss->http);
    mw__sim_pump(ss);
    return mw_sim_settle_call(L, ss, 0);
}

static int server_count(lua_State *L)
{
    sim_server_t *ss = check_server(L, 1);
    lua_pushinteger(L, (lua_Integer)ss->node->reg->nopen);
    return 1;
}

static int server_now(lua_State *L)
{
    sim_server_t *ss = check_server(L, 1);
    lua_pushinteger(L, (lua_Integer)ss->node->timers->now);
    return 1;
}

static int server_metrics(lua_State *L)
{
    sim_server_t *ss = check_server(L, 1);
    char *text = NULL;
    size_t n;

    mw_gauges_publish(ss->node);
    n = mw_metrics_render(ss->node->metrics, &text);
    lua_pushlstring(L, text != NULL ? text : "", n);
    free(text);
    return 1;
}

static int server_logs(lua_State *L)
{
    mw__sim_logs_push(L);
    return 1;
}

/* srv:get(path): a plain HTTP GET (/healthz, /metrics, a static file) as
 * a client without WebSocket would send it; returns the status and the
 * start of the body. */
static int server_get(lua_State *L)
{
    sim_server_t *ss = check_server(L, 1);
    const char *path = luaL_checkstring(L, 2);
    sim_client_t cl;
    sim_conn_t *sc;
    mw_addr_t addr;
    reqbuf_t *req;

    req = lua_newuserdatauv(L, sizeof(*req), 0); /* scratch */
    req->len = 0;
    add(req, "GET ");
    add(req, path);
    add(req, " HTTP/1.1\r\nHost: sim.local\r\nConnection: close\r\n\r\n");
    memset(&cl, 0, sizeof(cl));
    cl.pong_len = -1;
    mw_list_init(&cl.reply_link);
    memset(&addr, 0, sizeof(addr));
    addr.in4.sin_family = AF_INET;
    addr.in4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sc = calloc(1, sizeof(*sc));
    if (sc == NULL)
        return luaL_error(L, "out of memory");
    sc->ss = ss;
    sc->client = &cl;
    cl.sc = sc;
    mw_list_insert_tail(&ss->conns, &sc->link);
    if (mw_conn_init(&sc->c, ss->node->conns, &sim_transport, &addr) != 0) {
        sim_done(&sc->c);
        mw__sim_pump(ss);
        return luaL_error(L, "out of memory");
    }
    mw__sim_feed(sc, (const uint8_t *)req->data, req->len);
    mw__sim_pump(ss);
    if (cl.sc != NULL) {
        mw_conn_on_eof(&cl.sc->c);
        mw__sim_pump(ss);
    }
    if (cl.sc != NULL)
        cl.sc->client = NULL;
    lua_pushinteger(L, cl.status);
    lua_pushstring(L, cl.body);
    return 2;
}

/* Runs when the interpreter closes (after every server, which were made later
 * and are finalized first): gives the pools back so leak checkers see none. */
static int module_gc(lua_State *L)
{
    (void)L;
    mw_server_pools_drain();
    mw__sim_report_end();
    return 0;
}

void mw_sim_open_servers(lua_State *L)
{
    static const luaL_Reg server_methods[] = {
        {"connect", server_connect}, {"advance", server_advance}, {"reload", server_reload},
        {"api", server_api},
        {"count", server_count},     {"now", server_now},         {"metrics", server_metrics},
        {"logs", server_logs},       {"close", server_close},     {"get", server_get},
        {"http", server_http},
        {NULL, NULL},
    };

    luaL_newmetatable(L, SERVER_META);
    luaL_newlib(L, server_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, server_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);

    /* Once per interpreter, even when the module is required again (busted
     * clears package.loaded between spec files): finalizers run in the
     * reverse order of their making, so the first one made runs after every
     * server, client and cluster, whichever file made them. A second one
     * would drain the pools before the objects of earlier files were done,
     * and what they freed then into the pools would leak. */
    if (lua_getfield(L, LUA_REGISTRYINDEX, "moonwire.sim.pools") == LUA_TNIL) {
        lua_newuserdatauv(L, 0, 0);
        lua_newtable(L);
        lua_pushcfunction(L, module_gc);
        lua_setfield(L, -2, "__gc");
        lua_setmetatable(L, -2);
        lua_setfield(L, LUA_REGISTRYINDEX, "moonwire.sim.pools");
    }
    lua_pop(L, 1);
}
