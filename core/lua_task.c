/* Hooks as coroutines that may wait, on one node as in a cluster: the
 * threads they run in (a pool of up to 32 idle ones, so that a hook that does
 * not wait allocates nothing), the tasks waiting for a reply, and what a waiting hook of
 * a connection holds back (its next messages, its on_error and on_close),
 * with on_message's dispatch, which holds a message or runs it. See
 * lua_task.h.
 */
#include "lua_task.h"
#include "conn.h"
#include "lua_state.h"
#include "lua_watchdog.h"
#include "node.h"
#include "outq.h"
#include "registry.h"
#include "scheduler.h"
#include "timer.h"
#include "moonwire/config.h"
#include "moonwire/error.h"
#include "moonwire/log.h"
#include "moonwire/metrics.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The hooks of one connection that wait on Redis. Made at the first wait
 * of a hook of the connection, held by each such hook until it finishes, and
 * by the connection while it is open, whose next messages meanwhile wait
 * here (held: an idle connection has no queue for them). A connection that
 * closes meanwhile leaves here its on_error and on_close: they run in
 * that order as the hooks before them finish, so every message that arrived
 * reaches on_message, and on_close is the connection's last hook. */
typedef struct mw_lua_waits_s {
    mw_conn_t *conn;  /* NULL once it has closed */
    uint32_t tasks;   /* its hooks that waited and have not finished */
    int close_ref;    /* the conn object once closed, or LUA_NOREF */
    uint64_t serial;  /* and for the hooks still due: */
    mw_outq_t held;   /* messages that arrived meanwhile, for on_message */
    int close_owed;   /* on_open ran: on_close is due */
    const char *fail_why;
    uint16_t code;
    size_t reason_len;
    char *reason;
} mw_lua_waits_t;

/* A hook running as a coroutine. Lives on the C stack while it runs; a copy
 * goes to the heap when it waits (mw_lua_wait), and is freed when woken. */
struct mw_lua_task_s {
    mw_lua_t *lh;
    lua_State *co;
    int ref;         /* the thread in the registry */
    uint64_t serial; /* the connection it runs for; 0 for none */
    mw_conn_t *conn; /* that connection, until the first wait (it may be gone
                      * by the wake-up); or NULL */
    int hold;        /* a wait of it holds the connection's next hooks back */
    mw_lua_waits_t *join;  /* or the record of that connection once it has closed */
    mw_lua_done_cb done;   /* called when it has returned or failed, or NULL */
    const void *done_ud;
    int nret;              /* the results done takes */
    mw_lua_waits_t *waits; /* held from the first wait to the end, or NULL */
    const char *what;
    int waiting;     /* it yielded through mw_lua_wait */
    mw_list_t link;  /* in lh->waiting while on the heap */
    int (*push)(lua_State *co, void *ud); /* at the wake-up: what the wait returns */
    void *push_ud;
};

static int new_thread(lua_State *L)
{
    int *ref = lua_touserdata(L, 1);
    lua_State *co = lua_newthread(L);

    mw__lua_set_host(co, mw__lua_host(L), 1);
    *ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

/* A thread for a hook, from the pool (nothing allocated) or new (in a
 * protected call: it allocates). Returns NULL with the error on top of the
 * state when memory is short. */
static lua_State *thread_new(mw_lua_t *lh, int *ref)
{
    lua_State *L = lh->L, *co;

    lua_pushcfunction(L, new_thread);
    lua_pushlightuserdata(L, ref);
    if (mw__lua_pcall(lh, 1, 0) != LUA_OK)
        return NULL;
    lua_rawgeti(L, LUA_REGISTRYINDEX, *ref);
    co = lua_tothread(L, -1);
    lua_pop(L, 1);
    return co;
}

static inline lua_State *thread_get(mw_lua_t *lh, int *ref)
{
    if (lh->npool > 0) {
        lh->npool--;
        *ref = lh->pool[lh->npool];
        return lh->pool_co[lh->npool];
    }
    return thread_new(lh, ref);
}

/* Gives a thread back: to the pool when reusable (an empty stack: the caller
 * emptied it), else to the collector. */
static inline void thread_put(mw_lua_t *lh, lua_State *co, int ref, int reusable)
{
    if (reusable && lh->npool < MW_LUA_THREAD_POOL) {
        lh->pool[lh->npool] = ref;
        lh->pool_co[lh->npool++] = co;
        return;
    }
    luaL_unref(lh->L, LUA_REGISTRYINDEX, ref); /* a dead thread is collected */
}

static void drain_held(mw_lua_t *lh, mw_conn_t *c, mw_outq_t *held);
static void close_hooks(mw_lua_t *lh, mw_conn_t *c, int ref, uint64_t serial, const char *fail_why,
                        uint16_t code, const char *reason, size_t reason_len);
static void run_message(mw_lua_t *lh, mw_conn_t *c, uint64_t serial, mw_lua_waits_t *join, int ref,
                        int opcode, const uint8_t *data, size_t len);
static void spawn_for(mw_lua_t *lh, mw_conn_t *c, uint64_t serial, mw_lua_waits_t *join,
                      const char *what, int nargs, const mw_lua_then_t *then);

static void waits_free(mw_lua_t *lh, mw_lua_waits_t *ws)
{
    if (ws->conn != NULL)
        ws->conn->lua_waits = NULL;
    if (ws->close_ref != LUA_NOREF)
        luaL_unref(lh->L, LUA_REGISTRYINDEX, ws->close_ref);
    mw_outq_clear(&ws->held);
    free(ws->reason);
    free(ws);
}

/* The hooks a closed connection still owes, one at a time while none waits:
 * its held messages, then on_error and on_close; then the record goes. */
static void waits_settle(mw_lua_t *lh, mw_lua_waits_t *ws)
{
    mw_frame_t *f;

    while (ws->tasks == 0 && (f = mw_outq_head(&ws->held)) != NULL) {
        mw_frame_ref(f);
        mw_outq_consume(&ws->held, f->len);
        if (lh->hooks[MW_HOOK_MESSAGE] != LUA_NOREF)
            run_message(lh, NULL, ws->serial, ws, ws->close_ref, f->bytes[0] & 0x0f,
                        mw_frame_payload(f), mw_frame_payload_len(f));
        mw_frame_unref(f);
    }
    if (ws->tasks > 0)
        return;
    if (ws->close_owed)
        close_hooks(lh, NULL, ws->close_ref, ws->serial, ws->fail_why, ws->code,
                    ws->reason != NULL ? ws->reason : "", ws->reason != NULL ? ws->reason_len : 0);
    waits_free(lh, ws);
}

/* A hook of the connection has finished: the last one lets the connection's
 * held messages go on, or runs what its closing left due. */
static void waits_release(mw_lua_t *lh, mw_lua_waits_t *ws)
{
    mw_conn_t *c = ws->conn;

    if (--ws->tasks > 0)
        return;
    if (c != NULL) {
        mw_outq_t held = ws->held; /* the queue moves: nothing points into it */
        mw_outq_init(&ws->held);
        waits_free(lh, ws);
        drain_held(lh, c, &held);
        return;
    }
    waits_settle(lh, ws);
}

/* Replaces the error at 1 with it and the traceback of the coroutine at 2 (a
 * light userdata), which died of it. Calls no metamethod. */
static int task_error(lua_State *L)
{
    lua_State *co = lua_touserdata(L, 2);
    const char *msg = lua_tostring(L, 1);

    if (msg == NULL)
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    luaL_traceback(L, co, msg, 0);
    return 1;
}

/* The connection a task runs for: the one it was given while it has not
 * waited, else the one of its serial if still open (registry), or NULL. */
static mw_conn_t *task_conn(const mw_lua_task_t *t)
{
    if (t->conn != NULL)
        return t->conn;
    return t->serial != 0 ? mw_registry_find_serial(t->lh->node->reg, t->serial) : NULL;
}

/* Hands a finished task's results to its done callback: exactly t->nret of
 * them, on top of the main state. */
static void task_done(mw_lua_task_t *t, int ok, int nres)
{
    mw_lua_t *lh = t->lh;
    lua_State *L = lh->L;
    /* Its connection, while it exists: a task that waited learns it from its
     * record, which the connection's release clears. */
    mw_conn_t *c = t->waits != NULL ? t->waits->conn : t->conn;

    if (ok) {
        int n = nres < t->nret ? nres : t->nret;
        if (!lua_checkstack(L, t->nret)) {
            lua_pop(t->co, nres);
            mw__lua_push_string(L, "not enough memory for the hook's results");
            mw__lua_hook_failed(lh, c, t->what, LUA_ERRMEM);
            ok = 0;
        } else {
            lua_pop(t->co, nres - n);
            lua_xmove(t->co, L, n);
            for (; n < t->nret; n++)
                lua_pushnil(L);
        }
    }
    t->done(lh, c, ok, t->done_ud);
}

/* Runs (or resumes) a task until it finishes, fails or waits. */
static void task_run(mw_lua_task_t *t, int nargs)
{
    mw_lua_t *lh = t->lh;
    lua_State *L = lh->L;
    mw_lua_task_t *outer = lh->current;
    lua_State *outer_thread = NULL;
    int nres = 0, r;

    if (lh->depth++ == 0) {
        lh->timed_out = 0;
        mw_watchdog_enter(t->co, lh->time_limit);
    } else {
        outer_thread = mw_watchdog_switch(t->co);
    }
    lh->current = t;
    r = lua_resume(t->co, L, nargs, &nres);
    lh->current = outer;
    if (--lh->depth == 0)
        mw_watchdog_leave();
    else
        mw_watchdog_switch(outer_thread);

    if (r == LUA_OK) {
        /* The common case first: it returned without waiting, or after. */
        if (t->done != NULL)
            task_done(t, 1, nres); /* which takes the results */
        else if (nres > 0)
            lua_settop(t->co, 0);
        thread_put(lh, t->co, t->ref, 1);
    } else if (r == LUA_YIELD && t->waiting) {
        /* A heap copy took over (mw_lua_wait): this one is done with. */
        lua_pop(t->co, nres);
        return;
    } else {
        if (r == LUA_YIELD) {
            mw__lua_push_string(L, "a hook may only wait inside moonwire functions "
                                   "(coroutine.yield from a hook)");
            r = LUA_ERRRUN;
        } else {
            lua_pushcfunction(L, task_error);
            lua_xmove(t->co, L, 1); /* the error */
            lua_pushlightuserdata(L, t->co);
            lh->mem_slack = MW_LUA_ERROR_SLACK;
            if (lua_pcall(L, 2, 1, 0) != LUA_OK)
                r = LUA_ERRMEM; /* the only error it can have */
            if (lh->timed_out)
                r = LUA_ERRRUN;
        }
        mw__lua_hook_failed(lh, task_conn(t), t->what, r);
        thread_put(lh, t->co, t->ref, 0);
        if (t->done != NULL)
            task_done(t, 0, 0);
    }
    if (t->waits != NULL)
        waits_release(lh, t->waits);
}

/* Readies t, a task for the connection of that serial (0: none), which is c,
 * or NULL when it has gone (join: its record then). */
static void task_init(mw_lua_task_t *t, mw_lua_t *lh, mw_conn_t *c, uint64_t serial,
                      mw_lua_waits_t *join, const char *what, const mw_lua_then_t *then)
{
    t->lh = lh;
    t->serial = serial;
    t->conn = c;
    /* A hook of an open connection holds its next messages and on_close back
     * while it waits, and on_upgrade its on_open; on_close itself (lua_open
     * is 0 by then) holds nothing back. */
    t->hold = c != NULL && (c->lua_open || c->state == MW_CONN_HTTP);
    t->join = join;
    t->waits = NULL;
    t->what = what;
    t->waiting = 0;
    t->push = NULL;
    t->push_ud = NULL;
    if (then != NULL) {
        t->done = then->done;
        t->done_ud = then->ud;
        t->nret = then->nret;
    } else {
        t->done = NULL;
        t->done_ud = NULL;
        t->nret = 0;
    }
}

/* Calls the function under nargs arguments at the top of L as a coroutine
 * that may wait: a task for the connection of that serial (0: none), which is
 * c, or NULL when it has gone. */
static void spawn_for(mw_lua_t *lh, mw_conn_t *c, uint64_t serial, mw_lua_waits_t *join,
                      const char *what, int nargs, const mw_lua_then_t *then)
{
    lua_State *L = lh->L;
    mw_lua_task_t t;

    task_init(&t, lh, c, serial, join, what, then);
    if ((t.co = thread_get(lh, &t.ref)) == NULL) {
        /* The function and its arguments go; the error stays. */
        lua_rotate(L, -(nargs + 2), 1);
        lua_pop(L, nargs + 1);
        mw__lua_hook_failed(lh, c, what, LUA_ERRMEM);
        if (t.done != NULL)
            t.done(lh, c, 0, t.done_ud);
        return;
    }
    lua_xmove(L, t.co, nargs + 1);
    task_run(&t, nargs);
}

static void spawn(mw_lua_t *lh, mw_conn_t *c, const char *what, int nargs)
{
    spawn_for(lh, c, c != NULL ? c->serial : 0, NULL, what, nargs, NULL);
}

void mw_lua_spawn(mw_lua_t *lh, mw_conn_t *c, const char *what, int nargs)
{
    spawn(lh, c, what, nargs);
}

void mw_lua_spawn_then(mw_lua_t *lh, mw_conn_t *c, const char *what, int nargs,
                       const mw_lua_then_t *then)
{
    spawn_for(lh, c, c != NULL ? c->serial : 0, NULL, what, nargs, then);
}

int mw_lua_can_wait(lua_State *L)
{
    mw_lua_t *lh = mw__lua_host(L);
    return lh->current != NULL && lh->current->co == L && lua_isyieldable(L);
}

/* lua.max_waiting hooks wait already: counted, logged (a line a second at
 * most), and raised in the hook that would have been one more. */
static void refuse_wait(mw_lua_t *lh, lua_State *L)
{
    uint64_t now = lh->node->timers->now;
    uint32_t max = lh->node->cfg->max_waiting;

    lh->node->metrics->wait_refusals++;
    if (lh->wait_refused_at == 0 || now - lh->wait_refused_at >= 1000) {
        mw_log_warn("app: a hook could not wait: lua.max_waiting (%u) hooks wait already; "
                    "%llu more since the last such line", max,
                    (unsigned long long)lh->wait_refused_since);
        lh->wait_refused_at = now != 0 ? now : 1;
        lh->wait_refused_since = 0;
    } else {
        lh->wait_refused_since++;
    }
    luaL_error(L, "too many hooks waiting (lua.max_waiting is %I)", (lua_Integer)max);
}

mw_lua_task_t *mw_lua_wait(lua_State *L)
{
    mw_lua_t *lh = mw__lua_host(L);
    mw_lua_task_t *t = lh->current, *w;

    if (t == NULL || t->co != L || !lua_isyieldable(L))
        luaL_error(L, "this can only wait in on_upgrade, on_open, on_message, on_close, "
                      "on_request, on_api or a timer callback");
    if (lh->nwaiting >= lh->node->cfg->max_waiting)
        refuse_wait(lh, L);
    w = malloc(sizeof(*w));
    if (w == NULL)
        luaL_error(L, "not enough memory");
    if (t->waits == NULL && ((t->hold && t->conn != NULL) || t->join != NULL)) {
        /* The first wait of a connection's hook holds its next messages and
         * its on_close back until the hook has finished. */
        mw_lua_waits_t *ws = t->join != NULL ? t->join : t->conn->lua_waits;
        if (ws == NULL) {
            ws = calloc(1, sizeof(*ws));
            if (ws == NULL) {
                free(w);
                luaL_error(L, "not enough memory");
            }
            ws->conn = t->conn;
            ws->close_ref = LUA_NOREF;
            mw_outq_init(&ws->held);
            t->conn->lua_waits = ws;
        }
        ws->tasks++;
        *w = *t;
        w->waits = ws;
    } else {
        *w = *t;
    }
    w->conn = NULL; /* by the wake-up the connection may be gone */
    t->waiting = 1;
    w->waiting = 0;
    mw_list_insert_tail(&lh->waiting, &w->link);
    lh->nwaiting++;
    if (w->serial != 0)
        lh->conn_waiting++;
    return w;
}

size_t mw_lua_conn_hooks_waiting(const mw_lua_t *lh)
{
    return lh->conn_waiting;
}

void mw_lua_unwait(mw_lua_task_t *w)
{
    mw_lua_t *lh = w->lh;
    mw_lua_task_t *t = lh->current;

    mw_list_remove(&w->link);
    lh->nwaiting--;
    if (w->serial != 0)
        lh->conn_waiting--;
    if (t != NULL)
        t->waiting = 0;
    if (w->waits != NULL && t != NULL && t->waits == NULL)
        t->waits = w->waits; /* this wait counted the hook: it lets go at its end */
    else if (w->waits != NULL && t == NULL)
        waits_release(lh, w->waits);
    free(w);
}

/* Where a waiting function goes on when its task is woken: it pushes what
 * the wait returns, in the coroutine, which runs protected. */
static int woken(lua_State *L, int status, lua_KContext ctx)
{
    mw_lua_task_t *t = mw__lua_host(L)->current;
    (void)status;
    (void)ctx;

    if (t == NULL || t->co != L || t->push == NULL)
        return luaL_error(L, "a hook waiting in moonwire was resumed by something else");
    return t->push(L, t->push_ud);
}

int mw_lua_yield(lua_State *L)
{
    return lua_yieldk(L, 0, 0, woken);
}

void mw_lua_wake(mw_lua_task_t *w, int (*push)(lua_State *co, void *ud), void *ud)
{
    mw_lua_t *lh = w->lh;

    mw_list_remove(&w->link);
    lh->nwaiting--;
    if (w->serial != 0)
        lh->conn_waiting--;
    w->push = push;
    w->push_ud = ud;
    task_run(w, 0);
    free(w);
    mw_sched_run(lh->node->sched);
}

/* Dispatches the messages a connection received while its hook waited
 * (held, taken from the record that is gone), until one waits again: the
 * rest then wait in the new record, before any that came since. Those of a
 * connection no longer open are dropped. */
static void drain_held(mw_lua_t *lh, mw_conn_t *c, mw_outq_t *held)
{
    mw_frame_t *f;

    while (c->lua_waits == NULL && c->state == MW_CONN_OPEN &&
           (f = mw_outq_head(held)) != NULL) {
        mw_frame_ref(f);
        mw_outq_consume(held, f->len);
        mw_lua_message(c, f->bytes[0] & 0x0f, mw_frame_payload(f), mw_frame_payload_len(f));
        mw_frame_unref(f);
    }
    if (!mw_outq_empty(held) && c->lua_waits != NULL && c->state == MW_CONN_OPEN) {
        mw_outq_t *later = &c->lua_waits->held;
        while ((f = mw_outq_head(later)) != NULL) {
            int r;
            mw_frame_ref(f);
            mw_outq_consume(later, f->len);
            r = mw_outq_push(held, f);
            mw_frame_unref(f);
            if (r != 0) {
                mw_conn_fail(c, 1011, "out of memory");
                break;
            }
        }
        mw_outq_clear(later);
        *later = *held;
        mw_outq_init(held);
    }
    mw_outq_clear(held);
    if ((c->paused & MW_PAUSE_HELD) && c->lua_waits == NULL)
        mw_conn_pause(c, MW_PAUSE_HELD, 0);
}

/* Runs on_message for the conn object at ref, as a task of the connection
 * of that serial (c, or NULL with its record join once it has closed). The
 * hook and its arguments go straight onto the task's thread: on the echo
 * path nothing is moved, nothing allocated. */
static void run_message(mw_lua_t *lh, mw_conn_t *c, uint64_t serial, mw_lua_waits_t *join, int ref,
                        int opcode, const uint8_t *data, size_t len)
{
    mw_lua_task_t t;
    lua_State *co;
    const char *text;

    if ((co = thread_get(lh, &t.ref)) == NULL) {
        mw__lua_hook_failed(lh, c, "on_message", LUA_ERRMEM);
        return;
    }
    lua_rawgeti(co, LUA_REGISTRYINDEX, lh->hooks[MW_HOOK_MESSAGE]);
    lua_rawgeti(co, LUA_REGISTRYINDEX, ref);
    if ((text = mw__lua_push_arg(lh, co, (const char *)data, len)) == NULL) {
        lua_settop(co, 0);
        thread_put(lh, co, t.ref, 1);
        mw__lua_unpushed(lh, c, "on_message");
        return;
    }
    lua_rawgeti(co, LUA_REGISTRYINDEX, opcode == MW_OP_BINARY ? lh->kind_binary : lh->kind_text);
    task_init(&t, lh, c, serial, join, "on_message", NULL);
    t.co = co;
    /* A text's bytes are UTF-8 (ws.c fails the connection otherwise): sent
     * back as they are, they need no second check. Only while this hook runs
     * at once: a hook run inside it, or a wait, forgets them. */
    if (opcode == MW_OP_TEXT) {
        lh->checked_text = text;
        lh->checked_len = len;
    }
    task_run(&t, 3);
    lh->checked_text = NULL;
}

void mw_lua_message(mw_conn_t *c, int opcode, const uint8_t *data, size_t len)
{
    mw_lua_t *lh = c->conns->node->lua;

    if (lh->hooks[MW_HOOK_MESSAGE] == LUA_NOREF || c->lua_ref == LUA_NOREF)
        return;
    if (c->lua_waits != NULL) {
        /* A hook of this connection waits: keep the order, hold this one. */
        mw_frame_t *f = mw_frame_new((uint8_t)opcode, data, len);
        if (f == NULL || mw_outq_push(&c->lua_waits->held, f) != 0) {
            mw_conn_fail(c, 1011, "out of memory");
        } else if (mw_outq_cost(&c->lua_waits->held) > lh->node->cfg->max_buffered) {
            mw_conn_pause(c, MW_PAUSE_HELD, 1); /* and stop reading until they are handled */
        }
        if (f != NULL)
            mw_frame_unref(f);
        return;
    }
    run_message(lh, c, c->serial, NULL, c->lua_ref, opcode, data, len);
}

/* Runs on_error, for a failure the core saw (fail_why), then on_close, for the
 * closed connection whose conn object is at ref: c, or NULL when it has gone
 * (an on_close deferred until the connection's waiting hooks finished). */
static void close_hooks(mw_lua_t *lh, mw_conn_t *c, int ref, uint64_t serial, const char *fail_why,
                        uint16_t code, const char *reason, size_t reason_len)
{
    lua_State *L = lh->L;

    if (fail_why != NULL && mw__lua_push_hook(lh, MW_HOOK_ERROR)) {
        /* The transport failed it (protocol error, bad UTF-8, too big, idle):
         * on_error hears why, before on_close; what it returns changes nothing. */
        char why[256];
        int n = snprintf(why, sizeof(why), "transport: %s (close code %d)", fail_why, (int)code);
        lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
        if (mw__lua_push_arg(lh, L, why, n < (int)sizeof(why) ? (size_t)n : sizeof(why) - 1) == NULL) {
            lua_pop(L, 2);
            mw__lua_report(lh, MW_LOG_ERROR, NULL, "no memory left to run on_error for: %s", why);
        } else if (mw__lua_pcall(lh, 2, 0) != LUA_OK) {
            char *e = strdup(lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
            const char *etb = e != NULL ? mw__lua_split_traceback(e) : "";
            mw__lua_report(lh, MW_LOG_ERROR, etb, "on_error raised an error: %s", e ? e : "?");
            free(e);
            lh->node->metrics->hook_errors++;
            lua_pop(L, 1);
        }
    }
    if (mw__lua_push_hook(lh, MW_HOOK_CLOSE)) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
        lua_pushinteger(L, code);
        /* on_close runs at the cap too (the app may let go of things there),
         * with an empty reason when the reason does not fit. */
        if (mw__lua_push_arg(lh, L, reason, reason_len) == NULL)
            lua_rawgeti(L, LUA_REGISTRYINDEX, lh->empty_string);
        spawn_for(lh, c, serial, NULL, "on_close", 3, NULL);
    }
}

/* Hooks of c still wait: the messages it held, then its on_error and
 * on_close wait for them, with the conn object, which keeps its id but no
 * longer reaches the connection. */
static void defer_close(mw_conn_t *c, mw_lua_waits_t *ws)
{
    ws->close_ref = c->lua_ref;
    ws->serial = c->serial; /* its held messages stay here */
    ws->close_owed = 1;
    ws->fail_why = mw_conn_fail_why(c);
    ws->code = c->close_code;
    if (c->close_reason_len > 0) {
        ws->reason = malloc(c->close_reason_len);
        if (ws->reason != NULL) {
            memcpy(ws->reason, c->close_reason, c->close_reason_len);
            ws->reason_len = c->close_reason_len;
        }
    }
}

int mw__lua_close_hooks(mw_lua_t *lh, mw_conn_t *c, int owed)
{
    mw_lua_waits_t *ws = c->lua_waits;

    if (ws != NULL) {
        c->lua_waits = NULL;
        ws->conn = NULL;
        if (owed)
            defer_close(c, ws);
        else
            mw_outq_clear(&ws->held); /* no conn object to run them with */
        return owed;
    }
    if (owed)
        close_hooks(lh, c, c->lua_ref, c->serial, mw_conn_fail_why(c), c->close_code,
                    c->close_reason ? c->close_reason : "", c->close_reason_len);
    return 0;
}

void mw__lua_forget_waits(mw_conn_t *c)
{
    if (c->lua_waits != NULL) { /* not reached: closing let go of them */
        c->lua_waits->conn = NULL;
        c->lua_waits = NULL;
    }
}

void mw__lua_tasks_free(mw_lua_t *lh)
{
    /* Tasks still waiting are dropped with the state (their replies never come:
     * the backplane was stopped first). */
    while (!mw_list_empty(&lh->waiting)) {
        mw_lua_task_t *w = MW_CONTAINER_OF(lh->waiting.next, mw_lua_task_t, link);
        mw_list_remove(&w->link);
        lh->nwaiting--;
        if (w->waits != NULL && --w->waits->tasks == 0)
            waits_free(lh, w->waits); /* a deferred on_close goes with them */
        if (w->done != NULL)
            w->done(lh, NULL, 0, w->done_ud); /* its caller lets go of what it held */
        free(w);
    }
}
