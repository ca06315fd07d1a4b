/* The Lua host: one state per node, the app's hooks, reload.
 *
 * Every hook runs through one protected call with a traceback handler, a
 * CPU-time limit (lua_watchdog.h) and a memory cap (the allocator). A hook
 * that raises, runs past its time limit or out of memory is logged with file
 * and line, counted, reported to on_error, and its connection closed with
 * 1011 unless on_error returns true. Nothing a script does can unwind into
 * the core.
 *
 * The host is lua_state.c (the state, limits, protected calls), lua_task.c
 * (hooks that wait), lua_dispatch.c (the hooks of connections) and this
 * file, which makes the state, loads the app and reloads it.
 */
#ifndef MOONWIRE_LUA_HOST_H
#define MOONWIRE_LUA_HOST_H

#include <stddef.h>

typedef struct mw_node_s mw_node_t;
typedef struct mw_lua_s mw_lua_t;

/* Creates the state, opens the libraries and the moonwire module, and loads
 * the app from node->cfg->script. Returns 0, or MW_ENOMEM, or MW_ELUA with
 * "file:line: message" in err. */
int mw_lua_new(mw_node_t *node, mw_lua_t **out, char *err, size_t errlen);

/* Runs the app's on_start (once the node is ready to serve). */
void mw_lua_start(mw_lua_t *lh);

/* Frees the state (NULL: nothing). Running the on_close hooks still owed is
 * the caller's job. */
void mw_lua_free(mw_lua_t *lh);

/* Reloads the app in the same state (SIGHUP). On failure the old app keeps
 * serving and err says why. Returns 0 or MW_ELUA. */
int mw_lua_reload(mw_lua_t *lh, char *err, size_t errlen);

#endif
