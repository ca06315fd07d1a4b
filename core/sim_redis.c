/* The in-process Redis of moonwire.sim: links, the queue of what is in
 * flight, the outage; the commands are sim_redis.lua's. See sim_redis.h.
 */
#include "sim_redis.h"
#include "list.h"
#include "sim_redis_lua.h" /* made by the build from sim_redis.lua */

#include <hiredis/hiredis.h>
#include <lauxlib.h>
#include <lualib.h>
#include <openssl/sha.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { LINK_CONNECTING, LINK_UP, LINK_CLOSING, LINK_DEAD };
enum { EV_CONNECT_OK, EV_CONNECT_FAIL, EV_REPLY, EV_PUSH, EV_CLOSE };

struct mw_redis_link_s {
    mw_sim_redis_t *r;
    const mw_redis_events_t *ev;
    void *ud;
    int state;
    mw_redis_cb pubsub_cb; /* the subscriptions' callback: the last given */
    void *pubsub_priv;
    struct mw_redis_link_s *prev, *next; /* in r->links */
};

typedef struct sim_event_s {
    struct sim_event_s *next;
    mw_redis_link_t *link;
    int kind;
    mw_redis_cb cb; /* EV_REPLY */
    void *priv;
    char *resp; /* EV_REPLY, EV_PUSH: the RESP text */
    size_t len;
} sim_event_t;

struct mw_sim_redis_s {
    lua_State *L; /* the engine's own state; sim_redis.lua's table at the top */
    int up;
    int hold; /* MW_SIM_HOLD_*: what waits */
    uint64_t now;
    mw_redis_link_t *links;
    sim_event_t *head, *tail;
    redisReader *reader;
};

/* The engine ------------------------------------------------------------------------------ */

static int engine_sha1hex(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    unsigned char d[SHA_DIGEST_LENGTH];
    char out[2 * SHA_DIGEST_LENGTH + 1];
    SHA1((const unsigned char *)text, len, d);
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
    lua_pushlstring(L, out, 2 * SHA_DIGEST_LENGTH);
    return 1;
}

mw_sim_redis_t *mw_sim_redis_new(char *err, size_t errlen)
{
    mw_sim_redis_t *r = calloc(1, sizeof(*r));

    if (r == NULL || (r->L = luaL_newstate()) == NULL ||
        (r->reader = redisReaderCreate()) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    luaL_openlibs(r->L);
    if (luaL_loadbuffer(r->L, (const char *)mw_sim_redis_lua, sizeof(mw_sim_redis_lua),
                        "=sim_redis.lua") != LUA_OK) {
        snprintf(err, errlen, "sim_redis.lua: %s", lua_tostring(r->L, -1));
        goto fail;
    }
    lua_pushcfunction(r->L, engine_sha1hex);
    if (lua_pcall(r->L, 1, 1, 0) != LUA_OK || !lua_istable(r->L, -1)) {
        snprintf(err, errlen, "sim_redis.lua: %s", lua_tostring(r->L, -1));
        goto fail;
    }
    r->up = 1;
    return r;

fail:
    if (r != NULL) {
        if (r->L != NULL)
            lua_close(r->L);
        if (r->reader != NULL)
            redisReaderFree(r->reader);
        free(r);
    }
    return NULL;
}

/* Calls E.name with the link (or r, for the spec's connection) and nargs
 * values above it on the stack; leaves the results. Returns their number,
 * or -1 with the error message on the stack. */
static int engine_call(mw_sim_redis_t *r, const char *name, void *conn, int nargs)
{
    lua_State *L = r->L;
    int base = lua_gettop(L) - nargs;

    lua_getfield(L, 1, name);
    lua_pushlightuserdata(L, conn);
    lua_rotate(L, base + 1, 2);
    if (lua_pcall(L, nargs + 1, LUA_MULTRET, 0) != LUA_OK)
        return -1;
    return lua_gettop(L) - base;
}

static void engine_close(mw_sim_redis_t *r, mw_redis_link_t *l)
{
    if (engine_call(r, "close", l, 0) < 0)
        fprintf(stderr, "moonwire.sim: redis: %s\n", lua_tostring(r->L, -1));
    lua_settop(r->L, 1);
}

/* The queue ------------------------------------------------------------------------------- */

static void queue(mw_sim_redis_t *r, mw_redis_link_t *l, int kind, mw_redis_cb cb, void *priv,
                  const char *resp, size_t len)
{
    sim_event_t *e = calloc(1, sizeof(*e));

    if (e == NULL || (resp != NULL && (e->resp = malloc(len)) == NULL)) {
        /* As a reply lost with its connection. */
        free(e);
        if (cb != NULL)
            cb(NULL, priv);
        return;
    }
    e->link = l;
    e->kind = kind;
    e->cb = cb;
    e->priv = priv;
    if (resp != NULL)
        memcpy(e->resp, resp, len);
    e->len = len;
    if (r->tail != NULL)
        r->tail->next = e;
    else
        r->head = e;
    r->tail = e;
}

static void event_free(sim_event_t *e)
{
    free(e->resp);
    free(e);
}

/* Takes l's events out of the queue, in order. */
static sim_event_t *take_events(mw_sim_redis_t *r, mw_redis_link_t *l)
{
    sim_event_t *taken = NULL, **tt = &taken, **p = &r->head;

    r->tail = NULL;
    while (*p != NULL) {
        sim_event_t *e = *p;
        if (e->link == l) {
            *p = e->next;
            e->next = NULL;
            *tt = e;
            tt = &e->next;
        } else {
            r->tail = e;
            p = &e->next;
        }
    }
    return taken;
}

/* The replies l owed will not come: their callbacks get NULL, in order. */
static void lose_replies(sim_event_t *taken)
{
    while (taken != NULL) {
        sim_event_t *e = taken;
        taken = e->next;
        if (e->kind == EV_REPLY)
            e->cb(NULL, e->priv);
        event_free(e);
    }
}

static redisReply *parse(mw_sim_redis_t *r, const char *resp, size_t len)
{
    void *reply = NULL;
    if (redisReaderFeed(r->reader, resp, len) != REDIS_OK ||
        redisReaderGetReply(r->reader, &reply) != REDIS_OK || reply == NULL) {
        redisReaderFree(r->reader);
        r->reader = redisReaderCreate();
        return NULL;
    }
    return reply;
}

/* Links ----------------------------------------------------------------------------------- */

static void link_remove(mw_sim_redis_t *r, mw_redis_link_t *l)
{
    if (l->prev != NULL)
        l->prev->next = l->next;
    else
        r->links = l->next;
    if (l->next != NULL)
        l->next->prev = l->prev;
    l->prev = l->next = NULL;
}

static mw_redis_link_t *sim_connect(void *drv, const mw_redis_url_t *url,
                                    const mw_redis_events_t *ev, void *ud, const char **why)
{
    mw_sim_redis_t *r = drv;
    mw_redis_link_t *l = calloc(1, sizeof(*l));
    (void)url;

    if (l == NULL) {
        *why = "out of memory";
        return NULL;
    }
    l->r = r;
    l->ev = ev;
    l->ud = ud;
    l->state = LINK_CONNECTING;
    l->next = r->links;
    if (r->links != NULL)
        r->links->prev = l;
    r->links = l;
    queue(r, l, r->up ? EV_CONNECT_OK : EV_CONNECT_FAIL, NULL, NULL, NULL, 0);
    return l;
}

static int is_pubsub(const char *cmd, size_t len)
{
    return (len == 9 && strncasecmp(cmd, "subscribe", 9) == 0) ||
           (len == 11 && strncasecmp(cmd, "unsubscribe", 11) == 0);
}

static int sim_send(mw_redis_link_t *l, int argc, const char **argv, const size_t *argl,
                    mw_redis_cb cb, void *priv)
{
    mw_sim_redis_t *r = l->r;
    lua_State *L = r->L;
    int n;

    if (l->state != LINK_UP || argc < 1 || !lua_checkstack(L, argc + 4))
        return -1;
    if (is_pubsub(argv[0], argl[0])) {
        l->pubsub_cb = cb;
        l->pubsub_priv = priv;
    }
    lua_pushinteger(L, (lua_Integer)r->now);
    for (int i = 0; i < argc; i++)
        lua_pushlstring(L, argv[i], argl[i]);
    n = engine_call(r, "command", l, argc + 1);
    if (n < 0) {
        const char *msg = lua_tostring(L, -1);
        char line[512];
        int len = snprintf(line, sizeof(line), "-ERR moonwire.sim's Redis failed: %s\r\n",
                           msg != NULL ? msg : "?");
        for (int i = 1; i < len - 2 && i < (int)sizeof(line) - 2; i++)
            if (line[i] == '\r' || line[i] == '\n')
                line[i] = ' ';
        if (!is_pubsub(argv[0], argl[0]))
            queue(r, l, EV_REPLY, cb, priv, line, strlen(line));
        lua_settop(L, 1);
        return 0;
    }
    /* The messages first, as Redis writes them before the reply goes back. */
    for (int i = 2; i + 1 <= n; i += 2) {
        size_t len;
        const char *resp = lua_tolstring(L, -n + i, &len);
        mw_redis_link_t *to = lua_touserdata(L, -n + i - 1);
        if (to != NULL && to != (void *)r)
            queue(r, to, EV_PUSH, NULL, NULL, resp, len);
    }
    if (lua_type(L, -n) == LUA_TSTRING) {
        size_t len;
        const char *resp = lua_tolstring(L, -n, &len);
        queue(r, l, EV_REPLY, cb, priv, resp, len);
    }
    lua_settop(L, 1);
    return 0;
}

static void sim_disconnect(mw_redis_link_t *l)
{
    if (l->state != LINK_UP)
        return;
    l->state = LINK_CLOSING;
    queue(l->r, l, EV_CLOSE, NULL, NULL, NULL, 0);
}

static void sim_free(mw_redis_link_t *l)
{
    mw_sim_redis_t *r = l->r;
    sim_event_t *taken;

    l->state = LINK_DEAD;
    engine_close(r, l);
    link_remove(r, l);
    taken = take_events(r, l);
    free(l);
    lose_replies(taken);
}

const mw_redis_driver_t mw_sim_redis_driver = {
    "sim", sim_connect, sim_send, sim_disconnect, sim_free,
};

/* Delivery -------------------------------------------------------------------------------- */

/* Whether e waits while r holds what it holds. */
static int held(const mw_sim_redis_t *r, const sim_event_t *e)
{
    return (r->hold == MW_SIM_HOLD_REPLIES && e->kind == EV_REPLY) ||
           (r->hold == MW_SIM_HOLD_MESSAGES && e->kind == EV_PUSH);
}

/* The next event to deliver: the oldest that is not held. */
static sim_event_t **next_event(const mw_sim_redis_t *r)
{
    sim_event_t *const *p = &r->head;
    while (*p != NULL && held(r, *p))
        p = &(*p)->next;
    return (sim_event_t **)p;
}

int mw_sim_redis_pending(const mw_sim_redis_t *r)
{
    return *next_event(r) != NULL;
}

void mw_sim_redis_hold(mw_sim_redis_t *r, int what)
{
    r->hold = what;
}

void mw_sim_redis_step(mw_sim_redis_t *r)
{
    sim_event_t **p = next_event(r), *e = *p, *prev = NULL;
    mw_redis_link_t *l;
    const mw_redis_events_t *ev;
    void *ud;
    redisReply *reply;

    if (e == NULL)
        return;
    if (p != &r->head)
        prev = MW_CONTAINER_OF(p, sim_event_t, next);
    *p = e->next;
    if (r->tail == e)
        r->tail = prev;
    l = e->link;
    ev = l->ev;
    ud = l->ud;
    switch (e->kind) {
    case EV_CONNECT_OK:
        l->state = LINK_UP;
        ev->on_connect(ud, 1, NULL);
        break;
    case EV_CONNECT_FAIL:
        link_remove(r, l);
        free(l);
        ev->on_connect(ud, 0, "Connection refused");
        break;
    case EV_CLOSE:
        engine_close(r, l);
        link_remove(r, l);
        free(l);
        ev->on_disconnect(ud, 1, "closed");
        break;
    case EV_REPLY:
        reply = parse(r, e->resp, e->len);
        e->cb(reply, e->priv);
        if (reply != NULL)
            freeReplyObject(reply);
        break;
    case EV_PUSH:
        if (l->pubsub_cb != NULL && (reply = parse(r, e->resp, e->len)) != NULL) {
            l->pubsub_cb(reply, l->pubsub_priv);
            freeReplyObject(reply);
        }
        break;
    default:
        break;
    }
    event_free(e);
}

/* The outage ------------------------------------------------------------------------------ */

void mw_sim_redis_down(mw_sim_redis_t *r, int flush)
{
    r->up = 0;
    /* One link at a time, from the list's head again after each: what a
     * callback does may free or add links. */
    for (;;) {
        mw_redis_link_t *l = r->links;
        const mw_redis_events_t *ev;
        void *ud;
        int state;
        sim_event_t *taken;

        while (l != NULL && l->state == LINK_DEAD)
            l = l->next;
        if (l == NULL)
            break;
        ev = l->ev;
        ud = l->ud;
        state = l->state;
        taken = take_events(r, l);
        if (state == LINK_CONNECTING) {
            /* Its connect had not been answered: it fails now. */
            int pending_fail = 0;
            for (sim_event_t *e = taken; e != NULL; e = e->next)
                pending_fail |= e->kind == EV_CONNECT_FAIL;
            lose_replies(taken);
            if (pending_fail) {
                queue(r, l, EV_CONNECT_FAIL, NULL, NULL, NULL, 0);
                l->state = LINK_DEAD; /* skipped here; the event frees it */
                continue;
            }
            link_remove(r, l);
            free(l);
            ev->on_connect(ud, 0, "Connection refused");
            continue;
        }
        l->state = LINK_DEAD;
        engine_close(r, l);
        link_remove(r, l);
        free(l);
        lose_replies(taken);
        ev->on_disconnect(ud, 0, "Connection reset by peer");
    }
    if (flush) {
        if (engine_call(r, "flush", r, 0) < 0)
            fprintf(stderr, "moonwire.sim: redis: %s\n", lua_tostring(r->L, -1));
        lua_settop(r->L, 1);
    }
}

void mw_sim_redis_up(mw_sim_redis_t *r)
{
    r->up = 1;
}

int mw_sim_redis_is_up(const mw_sim_redis_t *r)
{
    return r->up;
}

int mw_sim_redis_links(const mw_sim_redis_t *r)
{
    int n = 0;
    for (const mw_redis_link_t *l = r->links; l != NULL; l = l->next)
        n += l->state == LINK_UP;
    return n;
}

void mw_sim_redis_set_now(mw_sim_redis_t *r, uint64_t now)
{
    r->now = now;
}

/* The spec's own connection ----------------------------------------------------------------- */

/* Pushes a reply as Lua values onto the spec's stack. */
static void push_reply(lua_State *L, const redisReply *rp)
{
    luaL_checkstack(L, 3, "redis reply nested too deep");
    switch (rp->type) {
    case REDIS_REPLY_INTEGER:
        lua_pushinteger(L, (lua_Integer)rp->integer);
        break;
    case REDIS_REPLY_NIL:
        lua_pushnil(L);
        break;
    case REDIS_REPLY_ARRAY:
        lua_createtable(L, (int)rp->elements, 0);
        for (size_t i = 0; i < rp->elements; i++) {
            if (rp->element[i]->type == REDIS_REPLY_NIL)
                lua_pushboolean(L, 0);
            else
                push_reply(L, rp->element[i]);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        break;
    default: /* strings, status and errors */
        lua_pushlstring(L, rp->str, rp->len);
        break;
    }
}

int mw_sim_redis_exec(mw_sim_redis_t *r, lua_State *L, int first)
{
    lua_State *E = r->L;
    int top = lua_gettop(L), argc = top - first + 1, n;
    redisReply *reply;

    if (!r->up)
        return luaL_error(L, "redis is off (cluster:redis_up() switches it on)");
    luaL_argcheck(L, argc >= 1, first, "a command");
    if (!lua_checkstack(E, argc + 4))
        return luaL_error(L, "out of memory");
    lua_pushinteger(E, (lua_Integer)r->now);
    for (int i = first; i <= top; i++) {
        size_t len;
        const char *s = luaL_checklstring(L, i, &len);
        lua_pushlstring(E, s, len);
    }
    n = engine_call(r, "command", r, argc + 1);
    if (n < 0) {
        lua_pushnil(L);
        lua_pushstring(L, lua_tostring(E, -1));
        lua_settop(E, 1);
        return 2;
    }
    for (int i = 2; i + 1 <= n; i += 2) {
        size_t len;
        const char *resp = lua_tolstring(E, -n + i, &len);
        mw_redis_link_t *to = lua_touserdata(E, -n + i - 1);
        if (to != NULL && to != (void *)r)
            queue(r, to, EV_PUSH, NULL, NULL, resp, len);
    }
    reply =
        lua_type(E, -n) == LUA_TSTRING ? parse(r, lua_tostring(E, -n), lua_rawlen(E, -n)) : NULL;
    lua_settop(E, 1);
    if (reply == NULL) {
        lua_pushnil(L);
        return 1;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        lua_pushnil(L);
        lua_pushlstring(L, reply->str, reply->len);
        freeReplyObject(reply);
        return 2;
    }
    push_reply(L, reply);
    freeReplyObject(reply);
    return 1;
}

void mw_sim_redis_free(mw_sim_redis_t *r)
{
    if (r == NULL)
        return;
    while (r->links != NULL) /* none should be left: each node stopped */
        sim_free(r->links);
    while (r->head != NULL) {
        sim_event_t *e = r->head;
        r->head = e->next;
        event_free(e);
    }
    lua_close(r->L);
    redisReaderFree(r->reader);
    free(r);
}
