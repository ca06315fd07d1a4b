/* The Lua host: one state per server, the app's hooks, reload, budgets.
 *
 * Every hook runs through one protected call with a traceback handler, a
 * CPU-time limit (lua_watchdog.h) and a memory cap (the allocator). A hook
 * that raises, runs past its time limit or out of memory
 * is logged with file and line, counted, reported to on_error, and its
 * connection closed with 1011 unless on_error returns true. Nothing a script
 * does can unwind into the core.
 */
#ifndef MOONWIRE_LUA_HOST_H
#define MOONWIRE_LUA_HOST_H

#include <stddef.h>
#include <stdint.h>

typedef struct mw_server_s mw_server_t;
typedef struct mw_conn_s mw_conn_t;
typedef struct mw_lua_s mw_lua_t;
typedef struct lua_State lua_State;

/* What on_upgrade decided. */
typedef struct {
    int accept;
    int status;         /* when refused: 400..599 */
    char body[256];     /* when refused: the reply body */
    char protocol[128]; /* when accepted: the chosen subprotocol, or "" */
} mw_upgrade_decision_t;

/* Creates the state, opens the libraries and the moonwire module, and loads
 * the app from cfg->script. Returns 0, or MW_ELUA with "file:line: message"
 * in err. */
int mw_lua_new(mw_server_t *srv, mw_lua_t **out, char *err, size_t errlen);

/* Runs the app's on_start (once the server is ready to serve). */
void mw_lua_start(mw_lua_t *lh);

/* Frees the state. Running the on_close hooks still owed is the caller's job. */
void mw_lua_free(mw_lua_t *lh);

/* Reloads the app in the same state (SIGHUP). On failure the old app keeps
 * serving and err says why. Returns 0 or MW_ELUA. */
int mw_lua_reload(mw_lua_t *lh, char *err, size_t errlen);

/* Builds the request table of c (from c->http) and runs on_upgrade. Fills d.
 * Returns 0, or MW_ELUA when the hook failed (reply 500). */
int mw_lua_upgrade(mw_lua_t *lh, mw_conn_t *c, mw_upgrade_decision_t *d);

/* Creates c's conn object and runs on_open. */
void mw_lua_open(mw_lua_t *lh, mw_conn_t *c);

/* Runs on_message. */
void mw_lua_message(mw_lua_t *lh, mw_conn_t *c, int opcode, const uint8_t *data, size_t len);

/* Runs on_close (when on_open ran) and detaches c's conn object. */
void mw_lua_close(mw_lua_t *lh, mw_conn_t *c);

/* Drops any reference the state holds for c (a refused upgrade's request). */
void mw_lua_forget(mw_lua_t *lh, mw_conn_t *c);

/* The state (for the C parts of the moonwire module). */
lua_State *mw_lua_state(mw_lua_t *lh);

/* Calls the function below nargs arguments at the top of L as a hook named
 * `what` for connection c (may be NULL). Returns 1 when it ran, 0 when it
 * failed (already logged, counted, reported to on_error, c closed). nret
 * results are left on the stack on success. */
int mw_lua_call(mw_lua_t *lh, mw_conn_t *c, const char *what, int nargs, int nret);

/* Changes lua.time_limit (ms) and lua.memory_limit (a reload); 0 means none. */
void mw_lua_set_limits(mw_lua_t *lh, uint32_t time_limit, size_t memory_limit);

/* Hooks that may wait (on_open, on_message, on_close, timer callbacks) run as
 * coroutines. A C function of the moonwire module that waits for a reply
 * calls mw_lua_wait (which raises outside such a hook), starts its request,
 * and returns mw_lua_yield(L); the reply's callback calls mw_lua_wake, whose
 * push function pushes the results the Lua call returns (it runs in the
 * coroutine, protected: it may allocate, and raise). While a hook of a
 * connection waits, the connection's next messages are held, in order. */
typedef struct mw_lua_task_s mw_lua_task_t;
mw_lua_task_t *mw_lua_wait(lua_State *L);
int mw_lua_yield(lua_State *L);
void mw_lua_wake(mw_lua_task_t *w, int (*push)(lua_State *co, void *ud), void *ud);

/* True when L is a thread a hook runs in as a coroutine: only the host
 * resumes it (coroutine.resume refuses). */
int mw_lua_is_task(lua_State *L);

/* True when the running code may wait (mw_lua_wait would not raise). */
int mw_lua_can_wait(lua_State *L);

/* The hooks of connections (on_open, on_message, on_close, not timer
 * callbacks) waiting for a reply now: a drain waits for them, so that a
 * connection's on_close runs, and reaches Redis, before the backplane stops. */
size_t mw_lua_conn_hooks_waiting(const mw_lua_t *lh);

/* Undoes mw_lua_wait when the request could not be started after all (the
 * caller then returns normally instead of yielding). */
void mw_lua_unwait(mw_lua_task_t *w);

/* Runs the function under nargs arguments at the top of the state as a hook
 * that may wait; failures are handled like mw_lua_call's. */
void mw_lua_spawn(mw_lua_t *lh, mw_conn_t *c, const char *what, int nargs);

/* The address of the conn metatable, which the moonwire module records when
 * it makes it: a conn object is checked by comparing addresses, where a
 * registry lookup would cost more than the send it guards. */
void mw_lua_set_conn_meta(lua_State *L, const void *mt);
const void *mw_lua_conn_meta(lua_State *L);

/* Told what the host logs about the app, besides the log line: each failure
 * of a hook (MW_LOG_ERROR; text is the log line without its "app: ", and
 * traceback the Lua traceback or "") and each warning about the app's table
 * (MW_LOG_WARN: a key that looks like a hook but is none, such as
 * app.onMessage). One per process, like the log sink: moonwire.sim raises
 * the failures into the spec whose call ran the hook. NULL: none. */
typedef void (*mw_lua_report_cb)(mw_server_t *srv, int level, const char *text,
                                 const char *traceback);
void mw_lua_set_reporter(mw_lua_report_cb cb);

/* Bytes the Lua state holds. */
size_t mw_lua_memory(const mw_lua_t *lh);

/* The server a state belongs to (for the moonwire module). */
mw_server_t *mw_lua_server(lua_State *L);

#endif
