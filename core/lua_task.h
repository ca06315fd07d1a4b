/* Hooks as coroutines that may wait.
 *
 * Every hook of the app that may wait (on_upgrade, on_open, on_message,
 * on_close, timer callbacks) runs as a coroutine, on a node alone as in a
 * cluster and in moonwire.sim: one model everywhere. A C function of the moonwire module that waits for a reply
 * calls mw_lua_wait (which raises outside such a hook), starts its request,
 * and returns mw_lua_yield(L); the reply's callback calls mw_lua_wake, whose
 * push function pushes the results the Lua call returns (it runs in the
 * coroutine, protected: it may allocate, and raise). While a hook of a
 * connection waits, the connection's next messages are held, in order, and
 * so are its on_error and on_close if it closes meanwhile.
 */
#ifndef MOONWIRE_LUA_TASK_H
#define MOONWIRE_LUA_TASK_H

#include <stddef.h>
#include <stdint.h>

typedef struct lua_State lua_State;
typedef struct mw_conn_s mw_conn_t;
typedef struct mw_lua_s mw_lua_t;
typedef struct mw_lua_task_s mw_lua_task_t;

/* The running task, copied to the heap and listed as waiting. Raises (a Lua
 * error) unless L is the running task's own thread and may yield (on_error,
 * on_start, on_reload and the script's loading can not wait), when
 * lua.max_waiting hooks wait already, or when memory is short. */
mw_lua_task_t *mw_lua_wait(lua_State *L);

/* What the waiting C function returns: lua_yield, with the continuation that
 * pushes the reply's results at the wake-up. */
int mw_lua_yield(lua_State *L);

/* The reply came: push (in the coroutine, protected) pushes what the wait
 * returns; the task runs on, and the turn's deferred work after it. Frees w. */
void mw_lua_wake(mw_lua_task_t *w, int (*push)(lua_State *co, void *ud), void *ud);

/* Undoes mw_lua_wait when the request could not be started after all (the
 * caller then returns normally instead of yielding). Frees w. */
void mw_lua_unwait(mw_lua_task_t *w);

/* True when the running code may wait (mw_lua_wait would not raise). */
int mw_lua_can_wait(lua_State *L);

/* The hooks of connections (on_open, on_message, on_close, not timer
 * callbacks) waiting for a reply now: a drain waits for them, so that a
 * connection's on_close runs, and reaches Redis, before the backplane stops. */
size_t mw_lua_conn_hooks_waiting(const mw_lua_t *lh);

/* Runs the function under nargs arguments at the top of the state as a hook
 * that may wait, for connection c (may be NULL); failures are handled like
 * mw_lua_call's. A hook that does not wait allocates nothing (its thread
 * comes from the pool). */
void mw_lua_spawn(mw_lua_t *lh, mw_conn_t *c, const char *what, int nargs);

/* What a hook's end is told (mw_lua_spawn_then): c is the connection it ran
 * for, or NULL when that one has been released meanwhile; ok is 1 when the
 * hook returned, with nret results on top of the main state (the callback
 * pops them), or 0 when it failed (already handled as mw_lua_call does,
 * nothing pushed). */
typedef void (*mw_lua_done_cb)(mw_lua_t *lh, mw_conn_t *c, int ok, const void *ud);

typedef struct {
    mw_lua_done_cb done;
    const void *ud;
    int nret; /* results the callback takes: missing ones are nil, extra ones dropped */
} mw_lua_then_t;

/* mw_lua_spawn, then then->done when the hook has returned or failed: at once
 * when it did not wait. While a hook of c waits, a connection that has not
 * opened yet (on_upgrade) holds its on_open back, as an open one holds its
 * messages; the connection's release clears the c the callback is given. */
void mw_lua_spawn_then(mw_lua_t *lh, mw_conn_t *c, const char *what, int nargs,
                       const mw_lua_then_t *then);

/* Runs on_message (the connections' on_message handler: the host is the
 * node's), or holds the message, in order, while a hook of c waits. The
 * bytes of a text message are valid UTF-8 (ws.c checked them): sent back as
 * text unchanged, they are not checked again. */
void mw_lua_message(mw_conn_t *c, int opcode, const uint8_t *data, size_t len);

/* The Lua host's files only ------------------------------------------------ */

/* c has closed for the app (lua_dispatch.c, then detaches its conn object):
 * when owed, runs its on_error (for a failure the core saw) and on_close,
 * or, while hooks of c wait, leaves them, its held messages and its conn
 * object (c->lua_ref) to their record. Returns 1 when the record took the
 * reference, 0 when the caller keeps it. */
int mw__lua_close_hooks(mw_lua_t *lh, mw_conn_t *c, int owed);

/* c is released: it lets go of its waiting record and its held messages. */
void mw__lua_forget_waits(mw_conn_t *c);

/* Drops the tasks still waiting (the state is being freed: their replies
 * never come, the backplane was stopped first). */
void mw__lua_tasks_free(mw_lua_t *lh);

#endif
