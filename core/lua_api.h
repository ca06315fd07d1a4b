/* The `moonwire` Lua module and the `moonwire.conn` object.
 *
 * There is one conn object per connection, made when it opens and pinned in
 * the registry, so every hook gets the same object (== and table keys work).
 * The core owns the connection; Lua owns only the box, whose pointer is
 * cleared when the connection closes. Methods of a closed conn return
 * nil, "closed".
 */
#ifndef MOONWIRE_LUA_API_H
#define MOONWIRE_LUA_API_H

#include <stdint.h>

typedef struct lua_State lua_State;
typedef struct mw_conn_s mw_conn_t;

/* luaopen for "moonwire"; needs a state made by the Lua host. */
int mw_lua_open_api(lua_State *L);

/* Pushes a new conn object for c, with an empty conn.data. */
void mw_lua_api_push_conn(lua_State *L, mw_conn_t *c);

/* Pops a table and makes it conn.request of the conn object just below it. */
void mw_lua_api_set_request(lua_State *L);

/* Clears the conn object's pointer to its connection (at close). */
void mw_lua_api_detach_conn(lua_State *L, int idx);

/* lua_CFunction: makes moonwire.config show the server's configuration as it
 * is now (after a reload re-read the file). */
int mw_lua_api_refresh_config(lua_State *L);

/* Starts a new app generation (before loading an app) and returns it. */
uint32_t mw_lua_api_new_generation(lua_State *L);

/* Cancels the timers of one generation (keep 0), or of every generation but
 * that one (keep 1). A reload cancels the old app's timers once the new one
 * loaded, or the failed new one's, keeping the old app's. */
void mw_lua_api_cancel_timers(lua_State *L, uint32_t generation, int keep);

/* Cancels timers and releases what the module holds outside Lua (at exit). */
void mw_lua_api_shutdown(lua_State *L);

#endif
