/* The Lua state of a host, as the files of the Lua host share it: the host
 * (mw_lua_t), around one lua_State made with its own allocator; the limits
 * on time and memory; the protected call; and what a hook that fails does.
 *
 * Stack discipline: index 1 of the main state always holds the message
 * handler, so every protected call passes msgh = 1 and needs no push.
 * Everything that could raise (allocation included) happens inside a
 * protected call, except a hook's string argument, which is pushed after a
 * check that it fits under the cap, with that much allocator slack
 * (mw__lua_push_arg): it can not fail.
 *
 * The host is four files, one above the other: this one; lua_task.c, hooks
 * as coroutines that may wait; lua_dispatch.c, the hooks of connections;
 * lua_host.c, the app loaded into the state, and reloaded. The moonwire
 * module (lua_api*.c) stands between the second and the third.
 */
#ifndef MOONWIRE_LUA_STATE_H
#define MOONWIRE_LUA_STATE_H

#include "list.h"
#include "pool.h"
#include "moonwire/error.h"
#include "moonwire/log.h"

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mw_conn_s mw_conn_t;
typedef struct mw_node_s mw_node_t;
typedef struct mw_lua_s mw_lua_t;
typedef struct mw_lua_task_s mw_lua_task_t;

/* The app's hooks, as the host keeps them (references in lh->hooks). */
enum {
    MW_HOOK_UPGRADE,
    MW_HOOK_OPEN,
    MW_HOOK_MESSAGE,
    MW_HOOK_CLOSE,
    MW_HOOK_ERROR,
    MW_HOOK_START,
    MW_HOOK_RELOAD,
    MW_HOOK_API,     /* on_api(method, params): the server API's commands (api_methods.c) */
    MW_HOOK_REQUEST, /* on_request(req): plain HTTP requests no one else takes (api.c) */
    MW_HOOK__COUNT
};

/* Threads kept for hooks that run as coroutines. */
#define MW_LUA_THREAD_POOL 32

/* Room the allocator gives beyond the cap while the host handles a failure. */
#define MW_LUA_ERROR_SLACK (1u << 20)

struct mw_lua_s {
    lua_State *L;
    mw_node_t *node;
    size_t mem_used;
    size_t mem_limit; /* 0: none */
    size_t mem_slack;
    mw_pool_t blocks;    /* Lua's small blocks: a message's string, see lalloc */
    uint32_t time_limit; /* ms of CPU per hook call; 0: none */
    int watchdog;        /* this host counts as a user of the watchdog */
    int depth;           /* protected calls in progress */
    int timed_out;       /* the call running now was stopped by lua.time_limit */
    int app_ref;
    int hooks[MW_HOOK__COUNT];
    int kind_text, kind_binary; /* the strings "text" and "binary" */
    int empty_string;           /* and "" */
    int baseline_ref;           /* package.loaded keys that are not the app's */
    char *script_dir;           /* the directory package.path was set up for */
    mw_lua_task_t *current;     /* the task running now, or NULL */
    mw_list_t waiting;          /* tasks waiting for a reply */
    size_t nwaiting;            /* how many: at most lua.max_waiting */
    size_t conn_waiting;        /* those of connections: on_open, on_message, on_close */
    uint64_t wait_refused_at;   /* when a refusal was last logged (ms), for one line a second */
    uint64_t wait_refused_since; /* refusals not logged since */
    int pool[MW_LUA_THREAD_POOL];  /* idle threads (registry refs) */
    lua_State *pool_co[MW_LUA_THREAD_POOL]; /* and the threads, which those refs keep */
    int npool;
    /* The bytes of the text message the on_message running now was given, as
     * Lua holds them, or NULL: ws.c checked that they are UTF-8, so conn:send
     * and publish do not check them again (mw__lua_checked_text). Set just
     * before the hook runs and cleared when it returns or waits; the
     * allocator clears it when it frees the block they are in (the script
     * dropped the string and it was collected: another may take its place). */
    const char *checked_text;
    size_t checked_len;
};

/* The node the state serves (for the moonwire module). */
mw_node_t *mw_lua_node(lua_State *L);

/* The main thread of the state. */
lua_State *mw_lua_state(mw_lua_t *lh);

/* True when L is a thread a hook runs in as a coroutine: only the host
 * resumes it (coroutine.resume refuses). */
int mw_lua_is_task(lua_State *L);

/* Bytes the Lua state holds. */
size_t mw_lua_memory(const mw_lua_t *lh);

/* Hooks waiting now (moonwire.sleep, Redis, ...): at most lua.max_waiting. */
size_t mw_lua_hooks_waiting(const mw_lua_t *lh);

/* Changes lua.time_limit (ms) and lua.memory_limit (a reload); 0 means none. */
void mw_lua_set_limits(mw_lua_t *lh, uint32_t time_limit, size_t memory_limit);

/* Calls the function below nargs arguments at the top of the state as a
 * hook named `what` for connection c (may be NULL). Returns 1 when it ran, 0
 * when it failed (already logged, counted, reported to on_error, c closed).
 * nret results are left on the stack on success. */
int mw_lua_call(mw_lua_t *lh, mw_conn_t *c, const char *what, int nargs, int nret);

/* The files of the Lua host only ---------------------------------------------- */

/* Every thread of the state has the host in its extra space (lua_newthread
 * copies the main thread's); the threads hooks run in as coroutines have it
 * tagged with the low bit, so that a script can not resume them. */
#define MW_LUA_TASK_TAG ((uintptr_t)1)

/* The host of any thread of its state. Inline: conn:send asks it. */
static inline mw_lua_t *mw__lua_host(lua_State *L)
{
    return (mw_lua_t *)(*(uintptr_t *)lua_getextraspace(L) & ~MW_LUA_TASK_TAG);
}

/* Records lh as L's host; task: L is a hook's coroutine (mw_lua_is_task). */
void mw__lua_set_host(lua_State *L, mw_lua_t *lh, int task);

/* Makes lh->L with the host's allocator, under lh->mem_limit and
 * time_limit (ms), the message handler at index 1. Returns 0 or MW_ENOMEM
 * (lh->L NULL). */
int mw__lua_open(mw_lua_t *lh, uint32_t time_limit);

/* Closes lh->L and lets go of the allocator's blocks and the watchdog. */
void mw__lua_close(mw_lua_t *lh);

/* Calls the function under nargs arguments, watched for lua.time_limit.
 * Returns the lua_pcall status; on failure the error (message and
 * traceback) is on top. */
int mw__lua_pcall(mw_lua_t *lh, int nargs, int nret);

/* Splits "msg\nstack traceback:..." in place; returns the traceback part
 * ("" when there is none). */
const char *mw__lua_split_traceback(char *full);

/* Logs a line about the app ("app: " and the text) at level and tells the
 * reporter (mw_lua_set_reporter), with the traceback (NULL: none). */
void mw__lua_report(mw_lua_t *lh, mw_log_level_t level, const char *traceback, const char *fmt,
                    ...) __attribute__((format(printf, 4, 5)));

/* Allowance for a string's header beyond its bytes. */
#define MW_LUA_STRING_OVERHEAD 64

/* Pushes a string a hook takes (a message, a close reason, an error) on L,
 * outside a protected call: checked instead of protected. Returns the
 * string's bytes as Lua holds them, or NULL with nothing pushed when it would
 * take the state past lua.memory_limit (the caller then fails the hook as one
 * that ran out of memory). Within the limit it can not fail: the allocator
 * gives it that much room beyond the cap, and Lua's garbage collector, which
 * may run after it, does not raise. Inline: it is on every message's way. */
static inline const char *mw__lua_push_arg(mw_lua_t *lh, lua_State *L, const char *s, size_t len)
{
    size_t need = len + MW_LUA_STRING_OVERHEAD, slack = lh->mem_slack;
    const char *pushed;

    if (lh->mem_limit != 0 && lh->mem_used + need > lh->mem_limit + slack)
        return NULL;
    lh->mem_slack = slack + need;
    pushed = lua_pushlstring(L, len > 0 ? s : "", len);
    lh->mem_slack = slack;
    return pushed;
}

/* True when the len bytes at s are those of the text message the running
 * on_message was given (lh->checked_text): valid UTF-8, ws.c checked them. */
static inline int mw__lua_checked_text(const mw_lua_t *lh, const char *s, size_t len)
{
    return s == lh->checked_text && s != NULL && len == lh->checked_len;
}

/* Pushes s on L, or the memory error when there is no room for it: one
 * value either way, and nothing raised. */
void mw__lua_push_string(lua_State *L, const char *s);

/* Pushes the app's hook h and returns 1, or returns 0 when it has none. */
int mw__lua_push_hook(mw_lua_t *lh, int h);

/* A hook failed with status (a lua_pcall status; the error on top, which
 * this pops): logs and counts it, runs on_error, and closes c (may be NULL)
 * with 1011 unless on_error returned true. */
void mw__lua_hook_failed(mw_lua_t *lh, mw_conn_t *c, const char *what, int status);

/* A hook whose string argument did not fit under the cap (mw__lua_push_arg):
 * fails it as one that ran out of memory. */
void mw__lua_unpushed(mw_lua_t *lh, mw_conn_t *c, const char *what);

/* Told what the hosts log about their apps, besides the log line: each
 * failure of a hook (MW_LOG_ERROR; text is the log line without its "app: ",
 * traceback the Lua traceback or "") and each warning about an app's table
 * (MW_LOG_WARN: a key that looks like a hook but is none, such as
 * app.onMessage), with the node whose host it is. One per process, like the
 * log sink: moonwire.sim raises the failures in the spec whose call ran the
 * hook, --check counts the warnings. NULL: none. */
typedef void (*mw_lua_report_cb)(mw_node_t *node, int level, const char *text,
                                 const char *traceback);
void mw_lua_set_reporter(mw_lua_report_cb cb);

#endif
