/* The Lua host: state, app loading and reload, hook dispatch, limits.
 *
 * Stack discipline: index 1 of the main state always holds the message
 * handler, so every protected call passes msgh = 1 and needs no push.
 * Everything that could raise (allocation included) happens inside a
 * protected call, except a hook's string argument, which is pushed after a
 * check that it fits under the cap, with that much allocator slack
 * (push_arg_string): it can not fail.
 */
#include "moonwire/lua_host.h"
#include "moonwire/conn.h"
#include "moonwire/error.h"
#include "moonwire/log.h"
#include "moonwire/lua_api.h"
#include "moonwire/lua_hook_names.h"
#include "moonwire/lua_stdlib.h"
#include "moonwire/lua_watchdog.h"
#include "moonwire/pool.h"
#include "moonwire/server.h"

#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { H_UPGRADE, H_OPEN, H_MESSAGE, H_CLOSE, H_ERROR, H_START, H_RELOAD, NHOOKS };

static const char *const hook_names[NHOOKS] = {
    "on_upgrade", "on_open", "on_message", "on_close", "on_error", "on_start", "on_reload",
};

/* Threads kept for hooks that run as coroutines. */
#define THREAD_POOL_MAX 32

/* The hooks of one connection that wait on Redis. Made at the first wait
 * of a hook of the connection, held by each such hook until it finishes, and
 * by the connection while it is open, which meanwhile holds its next
 * messages back (conn->held). A connection that closes meanwhile leaves
 * here the messages it held, then its on_error and on_close: they run in
 * that order as the hooks before them finish, so every message that arrived
 * reaches on_message, and on_close is the connection's last hook. */
typedef struct mw_lua_waits_s {
    mw_conn_t *conn;  /* NULL once it has closed */
    uint32_t tasks;   /* its hooks that waited and have not finished */
    int close_ref;    /* the conn object once closed, or LUA_NOREF */
    uint64_t serial;  /* and for the hooks still due: */
    mw_outq_t held;   /* messages, for on_message */
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
    mw_conn_t *conn; /* that connection while its on_close is not yet due, until
                      * the first wait (it may be gone by the wake-up); or NULL */
    mw_lua_waits_t *join;  /* or the record of that connection once it has closed */
    mw_lua_waits_t *waits; /* held from the first wait to the end, or NULL */
    const char *what;
    int waiting;     /* it yielded through mw_lua_wait */
    mw_list_t link;  /* in lh->waiting while on the heap */
    int (*push)(lua_State *co, void *ud); /* at the wake-up: what the wait returns */
    void *push_ud;
};

/* Room the allocator gives beyond the cap while the host handles a failure. */
#define ERROR_SLACK (1u << 20)

struct mw_lua_s {
    lua_State *L;
    mw_server_t *srv;
    size_t mem_used;
    size_t mem_limit; /* 0: none */
    size_t mem_slack;
    mw_pool_t blocks;    /* Lua's small blocks: a message's string, see lalloc */
    uint32_t time_limit; /* ms of CPU per hook call; 0: none */
    int watchdog;        /* this host counts as a user of the watchdog */
    int depth;           /* protected calls in progress */
    int timed_out;       /* the call running now was stopped by lua.time_limit */
    int app_ref;
    int hooks[NHOOKS];
    int kind_text, kind_binary; /* the strings "text" and "binary" */
    int empty_string;           /* and "" */
    int baseline_ref;           /* package.loaded keys that are not the app's */
    char *script_dir;           /* the directory package.path was set up for */
    mw_lua_task_t *current;     /* the task running now, or NULL */
    mw_list_t waiting;          /* tasks waiting for a reply */
    size_t conn_waiting;        /* those of connections: on_open, on_message, on_close */
    int pool[THREAD_POOL_MAX];  /* idle threads (registry refs) */
    int npool;
    const void *conn_meta;      /* the conn metatable, see mw_lua_conn_meta */
};

/* Every thread of the state has the host in its extra space (lua_newthread
 * copies the main thread's); the threads hooks run in as coroutines have it
 * tagged with the low bit (TASK_TAG), so that a script can not resume them. */
#define TASK_TAG ((uintptr_t)1)

static mw_lua_t *host_of(lua_State *L)
{
    return (mw_lua_t *)(*(uintptr_t *)lua_getextraspace(L) & ~TASK_TAG);
}

static void set_host(lua_State *L, mw_lua_t *lh, uintptr_t tag)
{
    *(uintptr_t *)lua_getextraspace(L) = (uintptr_t)lh | tag;
}

int mw_lua_is_task(lua_State *L)
{
    return (*(uintptr_t *)lua_getextraspace(L) & TASK_TAG) != 0;
}

mw_server_t *mw_lua_server(lua_State *L)
{
    return host_of(L)->srv;
}

void mw_lua_set_conn_meta(lua_State *L, const void *mt)
{
    host_of(L)->conn_meta = mt;
}

const void *mw_lua_conn_meta(lua_State *L)
{
    return host_of(L)->conn_meta;
}

lua_State *mw_lua_state(mw_lua_t *lh)
{
    return lh->L;
}

static mw_lua_report_cb reporter; /* see mw_lua_set_reporter */

void mw_lua_set_reporter(mw_lua_report_cb cb)
{
    reporter = cb;
}

/* Logs a line about the app ("app: " and the text) and tells the reporter,
 * with the Lua traceback when there is one. */
static void report(mw_lua_t *lh, mw_log_level_t level, const char *traceback, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void report(mw_lua_t *lh, mw_log_level_t level, const char *traceback, const char *fmt, ...)
{
    char text[4096];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    mw_log(level, "app: %s", text);
    if (reporter != NULL)
        reporter(lh->srv, level, text, traceback != NULL ? traceback : "");
}

static void time_limit_hook(lua_State *L, lua_Debug *ar);

static void set_time_limit(mw_lua_t *lh, uint32_t ms)
{
    lh->time_limit = ms;
    if (ms == 0 || lh->watchdog)
        return;
    if (mw_watchdog_start(time_limit_hook) == 0)
        lh->watchdog = 1;
    else
        mw_log_warn("lua.time_limit: no CPU timer (%s); hooks run without a time limit",
                    strerror(errno));
}

void mw_lua_set_limits(mw_lua_t *lh, uint32_t time_limit, size_t memory_limit)
{
    set_time_limit(lh, time_limit);
    lh->mem_limit = memory_limit;
}

size_t mw_lua_memory(const mw_lua_t *lh)
{
    return lh->mem_used;
}

/* Lua's allocator: counts what the state holds against lua.memory, and
 * takes blocks up to 504 bytes from free lists, so that the string of each
 * message, which the collector frees some thousands at a time, does not go
 * through malloc and free. */
static void *lalloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    mw_lua_t *lh = ud;
    size_t old = ptr != NULL ? osize : 0;
    void *p;

    if (nsize == 0) {
        mw_pool_free(&lh->blocks, ptr, old);
        lh->mem_used -= old;
        return NULL;
    }
    if (nsize > old && lh->mem_limit != 0 &&
        lh->mem_used + (nsize - old) > lh->mem_limit + lh->mem_slack)
        return NULL; /* Lua collects and retries once, then raises "not enough memory" */
    p = mw_pool_realloc(&lh->blocks, ptr, old, nsize);
    if (p == NULL)
        return NULL;
    lh->mem_used = lh->mem_used - old + nsize;
    return p;
}

/* The count hook of lua.time_limit. The watchdog sets it with a period of 1
 * on the thread of a call past its limit (lua_stdlib.c makes sure that is
 * the thread running, coroutines included): from then on every instruction
 * raises, so a pcall in the script can not keep the call going. Called with
 * ar NULL by the C functions of long loops that check the limit themselves
 * (mw_watchdog_check). */
static void time_limit_hook(lua_State *L, lua_Debug *ar)
{
    mw_lua_t *lh = host_of(L);
    (void)ar;

    if (lh->depth == 0 || !mw_watchdog_expired()) {
        /* A thread left with the hook by an earlier kill: no longer needed. */
        if (ar != NULL)
            lua_sethook(L, NULL, 0, 0);
        return;
    }
    lh->timed_out = 1;
    lua_sethook(L, time_limit_hook, LUA_MASKCOUNT, 1);
    luaL_error(L, "time limit exceeded (lua.time_limit = %d ms)", (int)lh->time_limit);
}

static int msgh(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            msg = lua_tostring(L, -1);
        else
            msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* Calls the function under nargs arguments, watched for lua.time_limit.
 * Returns the lua_pcall status; on failure the error (message + traceback) is
 * on top. */
static int pcall(mw_lua_t *lh, int nargs, int nret)
{
    lua_State *L = lh->L;
    int r;

    if (lh->depth++ == 0) {
        lh->timed_out = 0;
        mw_watchdog_enter(L, lh->time_limit);
    }
    r = lua_pcall(L, nargs, nret, 1);
    if (--lh->depth == 0)
        mw_watchdog_leave();
    if (r != LUA_OK && lh->timed_out)
        r = LUA_ERRRUN; /* reported as a time-limit kill below */
    return r;
}

/* Splits "msg\nstack traceback:..." in place; returns the traceback part. */
static const char *split_traceback(char *full)
{
    char *tb = strstr(full, "\nstack traceback:");
    if (tb == NULL)
        return "";
    *tb = '\0';
    return tb + 1;
}

/* Allowance for a string's header beyond its bytes. */
#define STRING_OVERHEAD 64

/* Pushes a string a hook takes (a message, a close reason, an error) on L,
 * outside a protected call: checked instead of protected. Returns 0, or
 * MW_ENOMEM with nothing pushed when it would take the state past
 * lua.memory_limit (the caller then fails the hook as one that ran out of
 * memory). Within the limit it can not fail: the allocator gives it that much
 * room beyond the cap, and Lua's garbage collector, which may run after it,
 * does not raise. */
static int push_arg_string(mw_lua_t *lh, lua_State *L, const char *s, size_t len)
{
    size_t need = len + STRING_OVERHEAD, slack = lh->mem_slack;

    if (lh->mem_limit != 0 && lh->mem_used + need > lh->mem_limit + slack)
        return MW_ENOMEM;
    lh->mem_slack = slack + need;
    lua_pushlstring(L, len > 0 ? s : "", len);
    lh->mem_slack = slack;
    return 0;
}

static int push_str(lua_State *L)
{
    lua_pushstring(L, lua_touserdata(L, 1));
    return 1;
}

/* Pushes s on L, or the memory error when there is no room for it: one value
 * either way, and nothing raised. */
static void push_string(lua_State *L, const char *s)
{
    lua_pushcfunction(L, push_str);
    lua_pushlightuserdata(L, (void *)s);
    lua_pcall(L, 1, 1, 0);
}

static void push_conn_or_nil(mw_lua_t *lh, mw_conn_t *c)
{
    if (c != NULL && c->lua_ref != LUA_NOREF)
        lua_rawgeti(lh->L, LUA_REGISTRYINDEX, c->lua_ref);
    else
        lua_pushnil(lh->L);
}

/* Logs and counts a failed hook, runs on_error, and closes c with 1011
 * unless on_error returned true. Expects the error on top; pops it. */
static void hook_failed(mw_lua_t *lh, mw_conn_t *c, const char *what, int status)
{
    lua_State *L = lh->L;
    mw_metrics_t *m = lh->srv->metrics;
    char id[MW_ID_MAX] = "-";
    char *full;
    const char *tb, *kind;
    int keep = 0;

    lh->mem_slack = ERROR_SLACK;
    full = strdup(lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
    lua_pop(L, 1);
    if (lh->timed_out) {
        m->budget_kills++;
        kind = "ran over its time limit";
    } else if (status == LUA_ERRMEM) {
        m->memory_kills++;
        kind = "ran out of memory (lua.memory_limit)";
    } else {
        kind = "raised an error";
    }
    m->hook_errors++;
    lua_gc(L, LUA_GCCOLLECT);
    if (c != NULL)
        mw_conn_id(c, id);
    tb = full != NULL ? split_traceback(full) : "";
    report(lh, MW_LOG_ERROR, tb, "%s %s (conn %s): %s", what, kind, id, full ? full : "out of memory");
    if (*tb)
        mw_log_debug("app: %s", tb);

    if (lh->hooks[H_ERROR] != LUA_NOREF && strcmp(what, "on_error") != 0) {
        const char *msg = full ? full : "not enough memory";
        lua_rawgeti(L, LUA_REGISTRYINDEX, lh->hooks[H_ERROR]);
        push_conn_or_nil(lh, c);
        if (push_arg_string(lh, L, msg, strlen(msg)) != 0) {
            lua_pop(L, 2);
            report(lh, MW_LOG_ERROR, NULL, "no memory left to run on_error (conn %s)", id);
        } else if (pcall(lh, 2, 1) == LUA_OK) {
            keep = lua_toboolean(L, -1);
            lua_pop(L, 1);
        } else {
            char *e = strdup(lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
            const char *etb = e != NULL ? split_traceback(e) : "";
            lua_pop(L, 1);
            m->hook_errors++;
            report(lh, MW_LOG_ERROR, etb, "on_error raised an error too (conn %s): %s", id,
                   e ? e : "?");
            free(e);
        }
    }
    free(full);
    lua_gc(L, LUA_GCCOLLECT);
    lh->mem_slack = 0;
    if (c != NULL && c->state == MW_CONN_OPEN && !keep)
        mw_conn_fail(c, 1011, "internal error");
}

/* A hook whose string argument did not fit under the cap (push_arg_string):
 * fails it as one that ran out of memory. */
static void unpushed(mw_lua_t *lh, mw_conn_t *c, const char *what)
{
    push_string(lh->L, "not enough memory for the hook's arguments");
    hook_failed(lh, c, what, LUA_ERRMEM);
}

int mw_lua_call(mw_lua_t *lh, mw_conn_t *c, const char *what, int nargs, int nret)
{
    int r = pcall(lh, nargs, nret);
    if (r == LUA_OK)
        return 1;
    hook_failed(lh, c, what, r);
    return 0;
}

/* Hooks as coroutines ----------------------------------------------------------- */

static int new_thread(lua_State *L)
{
    int *ref = lua_touserdata(L, 1);
    lua_State *co = lua_newthread(L);

    set_host(co, host_of(L), TASK_TAG);
    *ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

/* A thread for a hook, from the pool or new (in a protected call: it
 * allocates). Returns NULL with the error on top of the state when memory is
 * short. */
static lua_State *thread_get(mw_lua_t *lh, int *ref)
{
    lua_State *L = lh->L, *co;

    if (lh->npool > 0) {
        *ref = lh->pool[--lh->npool];
    } else {
        lua_pushcfunction(L, new_thread);
        lua_pushlightuserdata(L, ref);
        if (pcall(lh, 1, 0) != LUA_OK)
            return NULL;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, *ref);
    co = lua_tothread(L, -1);
    lua_pop(L, 1);
    return co;
}

static void thread_put(mw_lua_t *lh, lua_State *co, int ref, int reusable)
{
    if (reusable && lh->npool < THREAD_POOL_MAX) {
        lua_settop(co, 0);
        lh->pool[lh->npool++] = ref;
        return;
    }
    luaL_unref(lh->L, LUA_REGISTRYINDEX, ref); /* a dead thread is collected */
}

static void drain_held(mw_lua_t *lh, mw_conn_t *c);
static void close_hooks(mw_lua_t *lh, mw_conn_t *c, int ref, uint64_t serial, const char *fail_why,
                        uint16_t code, const char *reason, size_t reason_len);
static int push_message_call(mw_lua_t *lh, int ref, int opcode, const uint8_t *data, size_t len);
static void spawn_for(mw_lua_t *lh, mw_conn_t *c, uint64_t serial, mw_lua_waits_t *join,
                      const char *what, int nargs);

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
        if (lh->hooks[H_MESSAGE] != LUA_NOREF) {
            if (push_message_call(lh, ws->close_ref, f->bytes[0] & 0x0f, mw_frame_payload(f),
                                  mw_frame_payload_len(f)) == 0)
                spawn_for(lh, NULL, ws->serial, ws, "on_message", 3);
            else
                unpushed(lh, NULL, "on_message");
        }
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
        waits_free(lh, ws);
        drain_held(lh, c);
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

    if (r == LUA_YIELD && t->waiting) {
        /* A heap copy took over (mw_lua_wait): this one is done with. */
        lua_pop(t->co, nres);
        return;
    }
    if (r == LUA_YIELD) {
        push_string(L, "a hook may only wait inside moonwire functions "
                       "(coroutine.yield from a hook)");
        r = LUA_ERRRUN;
        hook_failed(lh, mw_registry_find_serial(&lh->srv->reg, t->serial), t->what, r);
        thread_put(lh, t->co, t->ref, 0);
    } else if (r == LUA_OK) {
        lua_pop(t->co, nres);
        thread_put(lh, t->co, t->ref, 1);
    } else {
        lua_pushcfunction(L, task_error);
        lua_xmove(t->co, L, 1); /* the error */
        lua_pushlightuserdata(L, t->co);
        lh->mem_slack = ERROR_SLACK;
        if (lua_pcall(L, 2, 1, 0) != LUA_OK)
            r = LUA_ERRMEM; /* the only error it can have */
        if (lh->timed_out)
            r = LUA_ERRRUN;
        hook_failed(lh, mw_registry_find_serial(&lh->srv->reg, t->serial), t->what, r);
        thread_put(lh, t->co, t->ref, 0);
    }
    if (t->waits != NULL)
        waits_release(lh, t->waits);
}

/* Calls the function under nargs arguments at the top of L as a coroutine
 * that may wait (moonwire.redis): a task for the connection of that serial
 * (0: none), which is c, or NULL when it has gone. */
static void spawn_for(mw_lua_t *lh, mw_conn_t *c, uint64_t serial, mw_lua_waits_t *join,
                      const char *what, int nargs)
{
    lua_State *L = lh->L;
    mw_lua_task_t t;

    /* Only the backplane makes anything wait (moonwire.redis, presence and
     * history in Redis): a node alone runs its hooks as plain calls. */
    if (lh->srv->cluster == NULL) {
        mw_lua_call(lh, c, what, nargs, 0);
        return;
    }

    memset(&t, 0, sizeof(t));
    t.lh = lh;
    t.serial = serial;
    /* on_close itself (lua_open is 0 by then) holds nothing back. */
    t.conn = c != NULL && c->lua_open ? c : NULL;
    t.join = join;
    t.what = what;
    t.co = thread_get(lh, &t.ref);
    if (t.co == NULL) { /* the function and its arguments go; the error stays */
        lua_rotate(L, -(nargs + 2), 1);
        lua_pop(L, nargs + 1);
        hook_failed(lh, c, what, LUA_ERRMEM);
        return;
    }
    lua_xmove(L, t.co, nargs + 1);
    task_run(&t, nargs);
}

static void spawn(mw_lua_t *lh, mw_conn_t *c, const char *what, int nargs)
{
    spawn_for(lh, c, c != NULL ? c->serial : 0, NULL, what, nargs);
}

void mw_lua_spawn(mw_lua_t *lh, mw_conn_t *c, const char *what, int nargs)
{
    spawn(lh, c, what, nargs);
}

int mw_lua_can_wait(lua_State *L)
{
    mw_lua_t *lh = host_of(L);
    return lh->current != NULL && lh->current->co == L && lua_isyieldable(L);
}

mw_lua_task_t *mw_lua_wait(lua_State *L)
{
    mw_lua_t *lh = host_of(L);
    mw_lua_task_t *t = lh->current, *w;

    if (t == NULL || t->co != L || !lua_isyieldable(L))
        luaL_error(L, "this can only wait in on_open, on_message, on_close or a timer callback");
    w = malloc(sizeof(*w));
    if (w == NULL)
        luaL_error(L, "not enough memory");
    if (t->waits == NULL && (t->conn != NULL || t->join != NULL)) {
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
    mw_lua_task_t *t = host_of(L)->current;
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
    if (w->serial != 0)
        lh->conn_waiting--;
    w->push = push;
    w->push_ud = ud;
    task_run(w, 0);
    free(w);
    mw_server_run_deferred(lh->srv);
}

/* Dispatches the messages a connection received while its hook waited, until
 * one waits again. */
static void drain_held(mw_lua_t *lh, mw_conn_t *c)
{
    mw_frame_t *f;

    while (c->lua_waits == NULL && c->state == MW_CONN_OPEN &&
           (f = mw_outq_head(&c->held)) != NULL) {
        mw_frame_ref(f);
        mw_outq_consume(&c->held, f->len);
        mw_lua_message(lh, c, f->bytes[0] & 0x0f, mw_frame_payload(f), mw_frame_payload_len(f));
        mw_frame_unref(f);
    }
    if ((c->paused & MW_PAUSE_HELD) && mw_outq_empty(&c->held) && c->lua_waits == NULL)
        mw_conn_pause(c, MW_PAUSE_HELD, 0);
}

/* Pushes the hook function and returns 1, or returns 0 when the app has none. */
static int push_hook(mw_lua_t *lh, int h)
{
    if (lh->hooks[h] == LUA_NOREF)
        return 0;
    lua_rawgeti(lh->L, LUA_REGISTRYINDEX, lh->hooks[h]);
    return 1;
}

/* Loading ------------------------------------------------------------------ */

/* Warns about each field of the app table on top that looks like a hook but
 * is none (lua_hook_names.h), with the file and line of the function. */
static void warn_unknown_hooks(lua_State *L, const char *path)
{
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
        const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
        const char *near;
        if (mw_hook_name_suspect(key, hook_names, NHOOKS, &near)) {
            lua_Debug ar;
            char where[512], hooks[160] = "";
            snprintf(where, sizeof(where), "%s", path);
            if (lua_type(L, -1) == LUA_TFUNCTION) {
                lua_pushvalue(L, -1);
                if (lua_getinfo(L, ">S", &ar) && ar.linedefined > 0)
                    snprintf(where, sizeof(where), "%s:%d",
                             ar.source[0] == '@' ? ar.source + 1 : ar.short_src, ar.linedefined);
            }
            for (int i = 0; i < NHOOKS; i++)
                snprintf(hooks + strlen(hooks), sizeof(hooks) - strlen(hooks), "%s%s",
                         i ? ", " : "", hook_names[i]);
            report(host_of(L), MW_LOG_WARN, NULL,
                   "%s: app.%s is not a hook, so moonwire never calls it (%s%s%s)", where, key,
                   near ? "did you mean " : "the hooks are ", near ? near : hooks, near ? "?" : "");
        }
        lua_pop(L, 1);
    }
}

static int load_chunk(lua_State *L)
{
    const char *path = lua_touserdata(L, 1);
    if (luaL_loadfilex(L, path, "t") != LUA_OK)
        return lua_error(L);
    lua_call(L, 0, 1);
    if (lua_type(L, -1) != LUA_TTABLE)
        return luaL_error(L, "%s: the app must return a table of hooks (got %s)", path,
                          luaL_typename(L, -1));
    for (int i = 0; i < NHOOKS; i++) {
        int t = lua_getfield(L, -1, hook_names[i]);
        if (t != LUA_TNIL && t != LUA_TFUNCTION)
            return luaL_error(L, "%s: app.%s must be a function (got %s)", path, hook_names[i],
                              lua_typename(L, t));
        lua_pop(L, 1);
    }
    warn_unknown_hooks(L, path);
    return 1;
}

/* Runs the app script; leaves the app table on top. Returns 0, or MW_ELUA
 * with the message (no traceback) in err. */
static int load_app(mw_lua_t *lh, char *err, size_t errlen)
{
    lua_State *L = lh->L;
    int r;

    lua_pushcfunction(L, load_chunk);
    lua_pushlightuserdata(L, lh->srv->cfg->script);
    r = pcall(lh, 1, 1);
    if (r != LUA_OK) {
        char *full = strdup(lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
        lua_pop(L, 1);
        if (full != NULL)
            split_traceback(full);
        snprintf(err, errlen, "%s%s", full ? full : "out of memory",
                 lh->timed_out ? " (while loading)" : "");
        free(full);
        return MW_ELUA;
    }
    return 0;
}

/* References to an app's table and hooks. */
typedef struct {
    int app;
    int hooks[NHOOKS];
} app_refs_t;

/* Takes references to the app table at 2 and its hooks into the app_refs_t
 * at 1 (each LUA_NOREF until taken, so a failure can let go of those taken). */
static int take_refs(lua_State *L)
{
    app_refs_t *refs = lua_touserdata(L, 1);
    for (int i = 0; i < NHOOKS; i++) {
        if (lua_getfield(L, 2, hook_names[i]) == LUA_TFUNCTION)
            refs->hooks[i] = luaL_ref(L, LUA_REGISTRYINDEX);
        else
            lua_pop(L, 1);
    }
    lua_settop(L, 2);
    refs->app = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

/* Makes the app table on top (which it pops) the app: its hooks are the ones
 * called from now on. Returns the reference to the previous app table (or
 * LUA_NOREF), or MW_ENOMEM with nothing changed when memory is short. */
static int bind_app(mw_lua_t *lh, int *previous)
{
    lua_State *L = lh->L;
    app_refs_t refs;
    int r;

    refs.app = LUA_NOREF;
    for (int i = 0; i < NHOOKS; i++)
        refs.hooks[i] = LUA_NOREF;
    lua_pushcfunction(L, take_refs);
    lua_insert(L, -2);
    lua_pushlightuserdata(L, &refs);
    lua_insert(L, -2); /* take_refs, &refs, app */
    r = pcall(lh, 2, 0);
    if (r != LUA_OK)
        lua_pop(L, 1);
    for (int i = 0; i < NHOOKS; i++) {
        int *drop = r == LUA_OK ? &lh->hooks[i] : &refs.hooks[i];
        luaL_unref(L, LUA_REGISTRYINDEX, *drop);
        *drop = LUA_NOREF;
    }
    if (r != LUA_OK) {
        luaL_unref(L, LUA_REGISTRYINDEX, refs.app);
        return MW_ENOMEM;
    }
    memcpy(lh->hooks, refs.hooks, sizeof(lh->hooks));
    *previous = lh->app_ref;
    lh->app_ref = refs.app;
    return 0;
}

static void set_package_path(lua_State *L, const char *script)
{
    const char *slash = strrchr(script, '/');
    size_t dirlen = slash ? (size_t)(slash - script) : 1;
    const char *dir = slash ? script : ".";
    luaL_Buffer b;

    lua_getglobal(L, "package");
    luaL_buffinit(L, &b);
    luaL_addlstring(&b, dir, dirlen);
    luaL_addstring(&b, "/?.lua;");
    luaL_addlstring(&b, dir, dirlen);
    luaL_addstring(&b, "/lib/?.lua;");
    luaL_addlstring(&b, dir, dirlen);
    luaL_addstring(&b, "/?/init.lua;");
    lua_getfield(L, -2, "path");
    luaL_addvalue(&b);
    luaL_pushresult(&b);
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);
}

/* The directory part of a script path ("." for a bare name); malloc'ed. */
static char *dir_of(const char *script)
{
    const char *slash = strrchr(script, '/');
    return slash ? strndup(script, (size_t)(slash - script)) : strdup(".");
}

static int add_script_path(lua_State *L)
{
    set_package_path(L, lua_touserdata(L, 1));
    return 0;
}

static int open_state(lua_State *L)
{
    mw_lua_t *lh = host_of(L);

    luaL_openlibs(L);
    mw_lua_stdlib_open(L);
    luaL_requiref(L, "moonwire", mw_lua_open_api, 0);
    lua_pop(L, 1);
    set_package_path(L, lh->srv->cfg->script);
    lh->script_dir = dir_of(lh->srv->cfg->script);

    /* Remember which modules are not the app's, for reload. */
    lua_newtable(L);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_pushboolean(L, 1);
        lua_rawset(L, -6);
    }
    lua_pop(L, 2);
    lh->baseline_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    lua_pushliteral(L, "text");
    lh->kind_text = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushliteral(L, "binary");
    lh->kind_binary = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushliteral(L, "");
    lh->empty_string = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

static void run_start_hooks(mw_lua_t *lh, int previous_app_ref)
{
    lua_State *L = lh->L;
    if (previous_app_ref != LUA_NOREF && push_hook(lh, H_RELOAD)) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, previous_app_ref);
        mw_lua_call(lh, NULL, "on_reload", 1, 0);
    }
    if (push_hook(lh, H_START))
        mw_lua_call(lh, NULL, "on_start", 0, 0);
}

/* Closes the state and frees the host. */
static void destroy(mw_lua_t *lh)
{
    /* The module's timers live in Lua memory: take them off the heap first. */
    mw_lua_api_shutdown(lh->L);
    lua_close(lh->L);
    mw_pool_drain(&lh->blocks);
    if (lh->watchdog)
        mw_watchdog_stop();
    free(lh->script_dir);
    free(lh);
}

int mw_lua_new(mw_server_t *srv, mw_lua_t **out, char *err, size_t errlen)
{
    mw_lua_t *lh = calloc(1, sizeof(*lh));
    lua_State *L;
    int previous;

    *out = NULL;
    if (lh == NULL)
        return MW_ENOMEM;
    lh->srv = srv;
    lh->mem_limit = srv->cfg->memory_limit;
    lh->app_ref = lh->baseline_ref = LUA_NOREF;
    mw_list_init(&lh->waiting);
    for (int i = 0; i < NHOOKS; i++)
        lh->hooks[i] = LUA_NOREF;
    lh->blocks = (mw_pool_t)MW_POOL_INIT(4, 32, 1u << 20); /* up to 504 bytes; 1 MB kept */
    L = lua_newstate(lalloc, lh);
    if (L == NULL) {
        mw_pool_drain(&lh->blocks);
        free(lh);
        return MW_ENOMEM;
    }
    lh->L = L;
    set_time_limit(lh, srv->cfg->time_limit); /* before the script loads: it counts too */
    set_host(L, lh, 0);
    lua_pushcfunction(L, msgh); /* stays at index 1 */

    lua_pushcfunction(L, open_state);
    if (pcall(lh, 0, 0) != LUA_OK) {
        snprintf(err, errlen, "lua: %s", lua_tostring(L, -1));
        goto fail;
    }
    if (load_app(lh, err, errlen) != 0)
        goto fail;
    if (bind_app(lh, &previous) != 0) {
        snprintf(err, errlen, "lua: not enough memory for the app's hooks");
        goto fail;
    }
    *out = lh;
    return 0;

fail:
    destroy(lh);
    return MW_ELUA;
}

void mw_lua_start(mw_lua_t *lh)
{
    run_start_hooks(lh, LUA_NOREF);
}

void mw_lua_free(mw_lua_t *lh)
{
    if (lh == NULL)
        return;
    /* Tasks still waiting are dropped with the state (their replies never come:
     * the backplane was stopped first). */
    while (!mw_list_empty(&lh->waiting)) {
        mw_lua_task_t *w = MW_CONTAINER_OF(lh->waiting.next, mw_lua_task_t, link);
        mw_list_remove(&w->link);
        if (w->waits != NULL && --w->waits->tasks == 0)
            waits_free(lh, w->waits); /* a deferred on_close goes with them */
        free(w);
    }
    destroy(lh);
}

/* Moves the app's modules out of package.loaded into a table left on top. */
static int unload_app_modules(lua_State *L)
{
    mw_lua_t *lh = host_of(L);
    lua_newtable(L);               /* saved */
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded"); /* saved package loaded */
    lua_rawgeti(L, LUA_REGISTRYINDEX, lh->baseline_ref);
    lua_pushnil(L);
    while (lua_next(L, -3) != 0) { /* saved package loaded baseline k v */
        lua_pushvalue(L, -2);
        if (lua_rawget(L, -4) == LUA_TNIL) {
            lua_pop(L, 1);
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, -7); /* saved[k] = v */
        } else {
            lua_pop(L, 2);
        }
    }
    lua_pop(L, 1); /* saved package loaded */
    lua_pushnil(L);
    while (lua_next(L, -4) != 0) {
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_pushnil(L);
        lua_rawset(L, -4);
    }
    lua_pop(L, 2);
    return 1;
}

static int restore_modules(lua_State *L)
{
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    lua_pushnil(L);
    while (lua_next(L, 1) != 0) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, -4);
    }
    return 0;
}

int mw_lua_reload(mw_lua_t *lh, char *err, size_t errlen)
{
    lua_State *L = lh->L;
    int previous, r;
    uint32_t generation;
    char *dir = dir_of(lh->srv->cfg->script);

    /* A script from another directory finds its modules there too. */
    if (dir != NULL && (lh->script_dir == NULL || strcmp(dir, lh->script_dir) != 0)) {
        lua_pushcfunction(L, add_script_path);
        lua_pushlightuserdata(L, lh->srv->cfg->script);
        if (pcall(lh, 1, 0) != LUA_OK)
            lua_pop(L, 1);
        free(lh->script_dir);
        lh->script_dir = dir;
    } else {
        free(dir);
    }

    lua_pushcfunction(L, unload_app_modules);
    if (pcall(lh, 0, 1) != LUA_OK) {
        snprintf(err, errlen, "%s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return MW_ELUA;
    }
    /* The app sees the configuration as it is now (a reload re-read it). */
    lua_pushcfunction(L, mw_lua_api_refresh_config);
    if (pcall(lh, 0, 0) != LUA_OK)
        lua_pop(L, 1);
    generation = mw_lua_api_new_generation(L);
    r = load_app(lh, err, errlen);
    if (r == 0 && bind_app(lh, &previous) != 0) {
        snprintf(err, errlen, "not enough memory for the app's hooks (lua.memory_limit)");
        r = MW_ENOMEM;
    }
    if (r != 0) {
        /* Timers the broken script started while loading go with it. */
        mw_lua_api_cancel_timers(L, generation, 0);
        /* The old modules go back, so the old app keeps its upvalues' world. */
        lua_pushcfunction(L, restore_modules);
        lua_insert(L, -2);
        if (pcall(lh, 1, 0) != LUA_OK)
            lua_pop(L, 1);
        return MW_ELUA;
    }
    lua_pop(L, 1); /* the saved modules */
    mw_lua_api_cancel_timers(L, generation, 1); /* the old app's, not the new one's */
    run_start_hooks(lh, previous);
    luaL_unref(L, LUA_REGISTRYINDEX, previous);
    return 0;
}

/* Connection hooks ---------------------------------------------------------- */

/* Builds the request table of the connection at 1 (a light userdata) and
 * keeps it at c->req_ref. */
static int build_request(lua_State *L)
{
    mw_conn_t *c = lua_touserdata(L, 1);
    mw_http_req_t *req = c->http;
    size_t len, qlen;
    const char *path = mw_http_path(req, &len);
    const char *query = mw_http_query(req, &qlen);
    char addr[64];
    char *tmp;

    lua_createtable(L, 0, 8);
    lua_pushstring(L, http_method_str((enum http_method)req->parser.method));
    lua_setfield(L, -2, "method");
    lua_pushlstring(L, path, len);
    lua_setfield(L, -2, "path");

    tmp = lua_newuserdatauv(L, req->url_len + 2, 0); /* scratch, collected later */
    lua_newtable(L);
    while (query != NULL && qlen > 0) {
        const char *amp = memchr(query, '&', qlen);
        size_t item = amp ? (size_t)(amp - query) : qlen;
        const char *eq = memchr(query, '=', item);
        size_t klen = eq ? (size_t)(eq - query) : item;
        if (klen > 0) {
            lua_pushlstring(L, tmp, mw_http_unescape(query, klen, tmp, 1));
            if (eq != NULL)
                lua_pushlstring(L, tmp, mw_http_unescape(eq + 1, item - klen - 1, tmp, 1));
            else
                lua_pushliteral(L, "");
            lua_rawset(L, -3);
        }
        if (amp == NULL)
            break;
        qlen -= item + 1;
        query = amp + 1;
    }
    lua_setfield(L, -3, "query");
    lua_pop(L, 1);

    lua_createtable(L, 0, (int)req->nheaders);
    for (uint32_t i = 0; i < req->nheaders; i++) {
        const mw_http_header_t *h = &req->headers[i];
        luaL_Buffer b;
        char *name = luaL_buffinitsize(L, &b, h->name_len);
        for (uint32_t j = 0; j < h->name_len; j++) {
            char ch = req->buf[h->name_off + j];
            name[j] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
        }
        luaL_pushresultsize(&b, h->name_len);
        lua_pushvalue(L, -1);
        if (lua_rawget(L, -3) == LUA_TSTRING) {
            /* Repeated header: join the values as a list (RFC 9110 5.3). */
            size_t vlen = h->value_len;
            lua_pushliteral(L, ", ");
            lua_pushlstring(L, req->buf + h->value_off, vlen);
            lua_concat(L, 3);
        } else {
            lua_pop(L, 1);
            lua_pushlstring(L, req->buf + h->value_off, h->value_len);
        }
        lua_rawset(L, -3);
    }
    lua_setfield(L, -2, "headers");

    mw_conn_addr(c, addr, sizeof(addr));
    lua_pushstring(L, addr);
    lua_setfield(L, -2, "remote_addr");

    lua_newtable(L);
    {
        char list[1024];
        size_t n = mw_http_header_join(req, "Sec-WebSocket-Protocol", list, sizeof(list));
        const char *p = list;
        int k = 0;
        while (n > 0) {
            const char *comma = memchr(p, ',', n);
            size_t item = comma ? (size_t)(comma - p) : n, ilen = item;
            const char *s = p;
            while (ilen > 0 && (*s == ' ' || *s == '\t')) {
                s++;
                ilen--;
            }
            while (ilen > 0 && (s[ilen - 1] == ' ' || s[ilen - 1] == '\t'))
                ilen--;
            if (ilen > 0) {
                lua_pushlstring(L, s, ilen);
                lua_rawseti(L, -2, ++k);
            }
            if (comma == NULL)
                break;
            n -= item + 1;
            p = comma + 1;
        }
    }
    lua_setfield(L, -2, "subprotocols");
    {
        char id[MW_ID_MAX];
        lua_pushlstring(L, id, mw_conn_id(c, id));
        lua_setfield(L, -2, "id");
    }
    c->req_ref = luaL_ref(L, LUA_REGISTRYINDEX); /* here: it allocates */
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
        report(lh, MW_LOG_ERROR, NULL, "%s", problem);
        lh->srv->metrics->hook_errors++;
        return MW_ELUA;
    }
    return 0;
}

int mw_lua_upgrade(mw_lua_t *lh, mw_conn_t *c, mw_upgrade_decision_t *d)
{
    lua_State *L = lh->L;

    memset(d, 0, sizeof(*d));
    d->accept = 1;
    lua_pushcfunction(L, build_request);
    lua_pushlightuserdata(L, c);
    if (!mw_lua_call(lh, NULL, "building the request", 1, 0))
        return MW_ELUA;
    if (!push_hook(lh, H_UPGRADE))
        return 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->req_ref);
    if (!mw_lua_call(lh, NULL, "on_upgrade", 1, 3))
        return MW_ELUA;
    return read_decision(lh, c, d);
}

/* Makes the conn object of the connection at 1 (a light userdata), with its
 * request, and keeps it at c->lua_ref. */
static int new_conn_object(lua_State *L)
{
    mw_conn_t *c = lua_touserdata(L, 1);
    mw_lua_api_push_conn(L, c);
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->req_ref);
    mw_lua_api_set_request(L);
    c->lua_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

void mw_lua_open(mw_lua_t *lh, mw_conn_t *c)
{
    lua_State *L = lh->L;

    lua_pushcfunction(L, new_conn_object);
    lua_pushlightuserdata(L, c);
    if (!mw_lua_call(lh, NULL, "creating the conn object", 1, 0)) {
        mw_conn_fail(c, 1011, "internal error");
        return;
    }
    c->lua_open = 1;
    if (push_hook(lh, H_OPEN)) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, c->lua_ref);
        lua_rawgeti(L, LUA_REGISTRYINDEX, c->req_ref);
        spawn(lh, c, "on_open", 2);
    }
    luaL_unref(L, LUA_REGISTRYINDEX, c->req_ref);
    c->req_ref = LUA_NOREF;
}

/* Pushes on_message and its arguments for the conn object at ref. Returns 0,
 * or MW_ENOMEM with nothing pushed (push_arg_string). */
static int push_message_call(mw_lua_t *lh, int ref, int opcode, const uint8_t *data, size_t len)
{
    lua_State *L = lh->L;

    lua_rawgeti(L, LUA_REGISTRYINDEX, lh->hooks[H_MESSAGE]);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    if (push_arg_string(lh, L, (const char *)data, len) != 0) {
        lua_pop(L, 2);
        return MW_ENOMEM;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, opcode == MW_OP_BINARY ? lh->kind_binary : lh->kind_text);
    return 0;
}

void mw_lua_message(mw_lua_t *lh, mw_conn_t *c, int opcode, const uint8_t *data, size_t len)
{
    if (lh->hooks[H_MESSAGE] == LUA_NOREF || c->lua_ref == LUA_NOREF)
        return;
    if (c->lua_waits != NULL) {
        /* A hook of this connection waits: keep the order, hold this one. */
        mw_frame_t *f = mw_frame_new((uint8_t)opcode, data, len);
        if (f == NULL || mw_outq_push(&c->held, f) != 0) {
            mw_conn_fail(c, 1011, "out of memory");
        } else if (mw_outq_cost(&c->held) > lh->srv->cfg->max_buffered) {
            mw_conn_pause(c, MW_PAUSE_HELD, 1); /* and stop reading until they are handled */
        }
        if (f != NULL)
            mw_frame_unref(f);
        return;
    }
    if (push_message_call(lh, c->lua_ref, opcode, data, len) == 0)
        spawn(lh, c, "on_message", 3);
    else
        unpushed(lh, c, "on_message");
}

/* Runs on_error, for a failure the core saw (fail_why), then on_close, for the
 * closed connection whose conn object is at ref: c, or NULL when it has gone
 * (an on_close deferred until the connection's waiting hooks finished). */
static void close_hooks(mw_lua_t *lh, mw_conn_t *c, int ref, uint64_t serial, const char *fail_why,
                        uint16_t code, const char *reason, size_t reason_len)
{
    lua_State *L = lh->L;

    if (fail_why != NULL && push_hook(lh, H_ERROR)) {
        /* The transport failed it (protocol error, bad UTF-8, too big, idle):
         * on_error hears why, before on_close; what it returns changes nothing. */
        char why[256];
        int n = snprintf(why, sizeof(why), "transport: %s (close code %d)", fail_why, (int)code);
        lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
        if (push_arg_string(lh, L, why, n < (int)sizeof(why) ? (size_t)n : sizeof(why) - 1) != 0) {
            lua_pop(L, 2);
            report(lh, MW_LOG_ERROR, NULL, "no memory left to run on_error for: %s", why);
        } else if (pcall(lh, 2, 0) != LUA_OK) {
            char *e = strdup(lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
            const char *etb = e != NULL ? split_traceback(e) : "";
            report(lh, MW_LOG_ERROR, etb, "on_error raised an error: %s", e ? e : "?");
            free(e);
            lh->srv->metrics->hook_errors++;
            lua_pop(L, 1);
        }
    }
    if (push_hook(lh, H_CLOSE)) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
        lua_pushinteger(L, code);
        /* on_close runs at the cap too (the app may let go of things there),
         * with an empty reason when the reason does not fit. */
        if (push_arg_string(lh, L, reason, reason_len) != 0)
            lua_rawgeti(L, LUA_REGISTRYINDEX, lh->empty_string);
        spawn_for(lh, c, serial, NULL, "on_close", 3);
    }
}

/* Hooks of c still wait: the messages it held, then its on_error and
 * on_close wait for them, with the conn object, which keeps its id but no
 * longer reaches the connection. */
static void defer_close(mw_conn_t *c, mw_lua_waits_t *ws)
{
    ws->close_ref = c->lua_ref;
    ws->serial = c->serial;
    ws->held = c->held; /* the queue moves: nothing points into it */
    mw_outq_init(&c->held);
    ws->close_owed = 1;
    ws->fail_why = c->fail_why;
    ws->code = c->close_code;
    if (c->close_reason_len > 0) {
        ws->reason = malloc(c->close_reason_len);
        if (ws->reason != NULL) {
            memcpy(ws->reason, c->close_reason, c->close_reason_len);
            ws->reason_len = c->close_reason_len;
        }
    }
}

void mw_lua_close(mw_lua_t *lh, mw_conn_t *c)
{
    lua_State *L = lh->L;
    mw_lua_waits_t *ws = c->lua_waits;
    int owed = c->lua_open; /* on_open ran */

    if (c->lua_ref == LUA_NOREF)
        return;
    c->lua_open = 0;
    if (ws != NULL) {
        c->lua_waits = NULL;
        ws->conn = NULL;
        if (owed)
            defer_close(c, ws);
    } else if (owed) {
        close_hooks(lh, c, c->lua_ref, c->serial, c->fail_why, c->close_code,
                    c->close_reason ? c->close_reason : "", c->close_reason_len);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, c->lua_ref);
    mw_lua_api_detach_conn(L, -1);
    lua_pop(L, 1);
    if (ws == NULL || !owed)
        luaL_unref(L, LUA_REGISTRYINDEX, c->lua_ref);
    c->lua_ref = LUA_NOREF;
}

void mw_lua_forget(mw_lua_t *lh, mw_conn_t *c)
{
    if (c->req_ref != LUA_NOREF) {
        luaL_unref(lh->L, LUA_REGISTRYINDEX, c->req_ref);
        c->req_ref = LUA_NOREF;
    }
    if (c->lua_ref != LUA_NOREF)
        mw_lua_close(lh, c);
    if (c->lua_waits != NULL) { /* not reached: closing let go of them */
        c->lua_waits->conn = NULL;
        c->lua_waits = NULL;
    }
}
