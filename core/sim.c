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
 *   ann:send("hi")  ann:received()  srv:advance(30000)  srv:reload()  srv:close()
 */
#include "api_methods.h"
#include "conn.h"
#include "frame.h"
#include "gauges.h"
#include "lua_host.h"
#include "node.h"
#include "outq.h"
#include "registry.h"
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

#define SERVER_META "moonwire.sim.server"
#define CLIENT_META "moonwire.sim.client"
#define PUMP_LIMIT 100000

typedef struct sim_server_s sim_server_t;
typedef struct sim_client_s sim_client_t;

/* The server side of an in-memory connection. */
typedef struct {
    mw_conn_t c;
    sim_server_t *ss;
    sim_client_t *client; /* NULL once the client object is collected */
    mw_list_t link;       /* in ss->conns, or ss->finished once the transport is done */
} sim_conn_t;

struct sim_server_s {
    mw_server_t *srv;
    mw_node_t *node; /* its parts */
    mw_config_t cfg;
    int alive;
    mw_list_t conns;
    mw_list_t finished; /* transports done, to release at the end of the pump */
    mw_list_t replies;  /* clients with an automatic reply to send */
};

/* The client object seen by specs. */
struct sim_client_s {
    sim_conn_t *sc; /* NULL once the connection is released */
    int status;     /* HTTP status of the handshake reply */
    char body[256]; /* body of a refusal */
    mw_frame_t **msgs; /* received data frames, in order (one reference each) */
    size_t nmsgs, capmsgs;
    int close_received;
    uint16_t close_code;
    char close_reason[124];
    size_t close_reason_len;
    int close_sent;
    int want_close_echo;
    uint8_t pong[125];
    int pong_len; /* -1: no pong owed */
    mw_list_t reply_link;
    char id[MW_ID_MAX];
};

/* Log capture ------------------------------------------------------------------ */

static struct {
    char **lines;
    size_t n, cap;
    mw_log_level_t level;
} captured;

static void capture(void *ud, mw_log_level_t level, const char *line)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    char buf[4200];
    (void)ud;
    if (captured.n == captured.cap) {
        size_t cap = captured.cap ? captured.cap * 2 : 64;
        char **lines = realloc(captured.lines, cap * sizeof(char *));
        if (lines == NULL)
            return;
        captured.lines = lines;
        captured.cap = cap;
    }
    snprintf(buf, sizeof(buf), "%s %s", level < MW_LOG_OFF ? names[level] : "?", line);
    captured.lines[captured.n] = strdup(buf);
    if (captured.lines[captured.n] != NULL)
        captured.n++;
    if (level >= MW_LOG_WARN && level >= captured.level && getenv("MW_SIM_LOG") != NULL)
        fprintf(stderr, "moonwire.sim: %s\n", buf);
}

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

/* Builds a masked client frame. Returns a malloc'ed buffer and its length. */
static uint8_t *client_frame(int fin, uint8_t opcode, const uint8_t *data, size_t len, size_t *out)
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

static void feed(sim_conn_t *sc, const uint8_t *data, size_t len)
{
    if (sc == NULL || sc->c.freed)
        return;
    mw_conn_on_read(&sc->c, data, len);
}

/* Runs the server until nothing is left to do. */
static void pump(sim_server_t *ss)
{
    for (int i = 0; i < PUMP_LIMIT; i++) {
        mw_server_run_deferred(ss->srv);
        if (!mw_list_empty(&ss->replies)) {
            sim_client_t *cl = MW_CONTAINER_OF(ss->replies.next, sim_client_t, reply_link);
            size_t n;
            uint8_t *buf;
            mw_list_remove(&cl->reply_link);
            if (cl->pong_len >= 0 && cl->sc != NULL && !cl->close_sent) {
                buf = client_frame(1, MW_OP_PONG, cl->pong, (size_t)cl->pong_len, &n);
                cl->pong_len = -1;
                if (buf != NULL)
                    feed(cl->sc, buf, n);
                free(buf);
            }
            if (cl->want_close_echo && cl->sc != NULL) {
                uint8_t code[2] = {(uint8_t)(cl->close_code >> 8), (uint8_t)cl->close_code};
                cl->want_close_echo = 0;
                cl->close_sent = 1;
                buf = client_frame(1, MW_OP_CLOSE, code, cl->close_code == 1005 ? 0 : 2, &n);
                if (buf != NULL)
                    feed(cl->sc, buf, n);
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

/* Server object ------------------------------------------------------------------- */

static sim_server_t *check_server(lua_State *L, int idx)
{
    sim_server_t *ss = luaL_checkudata(L, idx, SERVER_META);
    if (!ss->alive)
        luaL_error(L, "this sim server is closed");
    return ss;
}

static void close_server(sim_server_t *ss)
{
    if (!ss->alive)
        return;
    /* Close every connection the way SIGTERM does, then drop what is left. */
    mw_server_drain(ss->srv, NULL);
    pump(ss);
    while (!mw_list_empty(&ss->conns)) {
        sim_conn_t *sc = MW_CONTAINER_OF(ss->conns.next, sim_conn_t, link);
        mw_conn_on_eof(&sc->c);
        pump(ss);
    }
    ss->alive = 0;
    mw_server_free(ss->srv);
    ss->srv = NULL;
    mw_config_close(&ss->cfg);
}

static int sim_new(lua_State *L)
{
    sim_server_t *ss;
    char err[1024];
    const char *script = NULL;

    luaL_checktype(L, 1, LUA_TTABLE);
    ss = lua_newuserdatauv(L, sizeof(*ss), 0);
    memset(ss, 0, sizeof(*ss));
    mw_list_init(&ss->conns);
    mw_list_init(&ss->finished);
    mw_list_init(&ss->replies);
    if (mw_config_init(&ss->cfg) != 0)
        return luaL_error(L, "out of memory");
    ss->cfg.log_level = MW_LOG_WARN;
    luaL_setmetatable(L, SERVER_META);

    if (lua_getfield(L, 1, "config") == LUA_TTABLE &&
        mw_config_apply(&ss->cfg, L, -1, "sim.new config", err, sizeof(err)) != 0) {
        mw_config_close(&ss->cfg);
        return luaL_error(L, "%s", err);
    }
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "script") == LUA_TSTRING)
        script = lua_tostring(L, -1);
    else if (!lua_isnil(L, -1))
        return luaL_error(L, "sim.new: 'script' must be a string");
    if (script != NULL)
        mw_config_set_str(&ss->cfg.script, script);
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "node_id") == LUA_TSTRING)
        mw_config_set_str(&ss->cfg.node_id, lua_tostring(L, -1));
    lua_pop(L, 1);
    if (mw_config_validate(&ss->cfg, err, sizeof(err)) != 0) {
        mw_config_close(&ss->cfg);
        return luaL_error(L, "%s", err);
    }
    captured.level = (mw_log_level_t)ss->cfg.log_level;
    mw_log_configure((mw_log_level_t)ss->cfg.log_level, 0, NULL);
    mw_log_set_sink(capture, NULL);
    ss->srv = mw_server_new(&ss->cfg, 0, err, sizeof(err));
    if (ss->srv == NULL) {
        mw_config_close(&ss->cfg);
        return luaL_error(L, "%s", err);
    }
    ss->node = mw_server_node(ss->srv);
    ss->alive = 1;
    mw_server_start(ss->srv);
    pump(ss);
    return 1;
}

static int server_gc(lua_State *L)
{
    sim_server_t *ss = luaL_checkudata(L, 1, SERVER_META);
    close_server(ss);
    return 0;
}

static int server_close(lua_State *L)
{
    sim_server_t *ss = luaL_checkudata(L, 1, SERVER_META);
    close_server(ss);
    return 0;
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
        if (lua_getfield(L, 3, "remote_addr") == LUA_TSTRING)
            ip = lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    memset(&addr, 0, sizeof(addr));
    if (inet_pton(AF_INET, ip, &addr.in4.sin_addr) == 1)
        addr.in4.sin_family = AF_INET;
    else if (inet_pton(AF_INET6, ip, &addr.in6.sin6_addr) == 1)
        addr.in6.sin6_family = AF_INET6;
    else
        return luaL_argerror(L, 3, "remote_addr is not an IP address");

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
        pump(ss);
        return luaL_error(L, "out of memory");
    }
    mw_conn_id(&sc->c, cl->id);
    feed(sc, (const uint8_t *)req->data, req->len);
    pump(ss);
    if (cl->status != 101) {
        lua_pushnil(L);
        lua_pushinteger(L, cl->status);
        lua_pushstring(L, cl->body);
        return 3;
    }
    return 1;
}

static int server_advance(lua_State *L)
{
    sim_server_t *ss = check_server(L, 1);
    lua_Integer ms = luaL_checkinteger(L, 2);
    mw_timers_t *ts = ss->node->timers;
    uint64_t target;

    luaL_argcheck(L, ms >= 0, 2, "time only goes forward");
    target = ts->now + (uint64_t)ms;
    /* Step from deadline to deadline, so timers see each other's effects and
     * a repeating timer fires once per period. */
    for (int i = 0; i < 1000000; i++) {
        int64_t next = mw_timers_next(ts);
        if (next < 0 || ts->now + (uint64_t)next > target)
            break;
        mw_timers_run(ts, ts->now + (uint64_t)next);
        pump(ss);
    }
    ts->now = target;
    pump(ss);
    return 0;
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
    pump(ss);
    if (!a->done) { /* it waits (nothing does in the sim today): the answer is dropped */
        a->abandoned = 1;
        luaL_pushfail(L);
        lua_pushliteral(L, "the command waits");
        return 2;
    }
    lua_pushinteger(L, a->status);
    lua_pushlstring(L, a->body != NULL ? a->body : "", a->len);
    free(a->body);
    free(a);
    return 2;
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
        pump(ss);
        luaL_pushfail(L);
        lua_pushstring(L, err);
        return 2;
    }
    pump(ss);
    lua_pushboolean(L, 1);
    return 1;
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
    lua_createtable(L, (int)captured.n, 0);
    for (size_t i = 0; i < captured.n; i++) {
        lua_pushstring(L, captured.lines[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
        free(captured.lines[i]);
    }
    captured.n = 0;
    return 1;
}

/* Client object ------------------------------------------------------------------- */

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
    feed(cl->sc, data, len);
    pump(ss);
    lua_pushboolean(L, 1);
    return 1;
}

/* Masks one frame as a client must and feeds it. */
static int client_feed_frame(lua_State *L, sim_client_t *cl, int op, const uint8_t *payload,
                             size_t len)
{
    size_t n;
    uint8_t *buf = client_frame(1, (uint8_t)op, payload, len, &n);
    int nret;
    if (buf == NULL)
        return luaL_error(L, "out of memory");
    nret = client_feed(L, cl, buf, n);
    free(buf);
    return nret;
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
    pump(ss);
    return 0;
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

/* Runs when the interpreter closes (after every server, which were made later
 * and are finalized first): gives the pools back so leak checkers see none. */
static int module_gc(lua_State *L)
{
    (void)L;
    mw_server_pools_drain();
    for (size_t i = 0; i < captured.n; i++)
        free(captured.lines[i]);
    free(captured.lines);
    memset(&captured, 0, sizeof(captured));
    mw_log_set_sink(NULL, NULL);
    return 0;
}

int luaopen_moonwire_sim(lua_State *L)
{
    static const luaL_Reg server_methods[] = {
        {"connect", server_connect}, {"advance", server_advance}, {"reload", server_reload},
        {"api", server_api},
        {"count", server_count},     {"now", server_now},         {"metrics", server_metrics},
        {"logs", server_logs},       {"close", server_close},     {NULL, NULL},
    };
    static const luaL_Reg client_methods[] = {
        {"send", client_send},   {"send_raw", client_send_raw}, {"received", client_received},
        {"close", client_close}, {"drop", client_drop},         {"is_open", client_is_open},
        {NULL, NULL},
    };
    static const luaL_Reg funcs[] = {{"new", sim_new}, {NULL, NULL}};

    luaL_newmetatable(L, SERVER_META);
    luaL_newlib(L, server_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, server_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);

    luaL_newmetatable(L, CLIENT_META);
    luaL_newlib(L, client_methods);
    lua_pushcclosure(L, client_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, client_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, client_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);

    lua_newuserdatauv(L, 0, 0);
    lua_newtable(L);
    lua_pushcfunction(L, module_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, "moonwire.sim.pools");

    luaL_newlib(L, funcs);
    return 1;
}
