/* The `moonwire` Lua module, as the Lua host opens it and closes it. Its
 * parts have headers of their own: conn objects (lua_api_conn.h), timers
 * (lua_api_timer.h), the config view (lua_api_config.h).
 */
#ifndef MOONWIRE_LUA_API_H
#define MOONWIRE_LUA_API_H

typedef struct lua_State lua_State;

/* luaopen for "moonwire"; needs a state made by the Lua host. Returns 1 (the
 * module table on the stack); raises on out of memory. */
int mw_lua_open_api(lua_State *L);

/* Cancels timers and releases what the module holds outside Lua (at exit). */
void mw_lua_api_shutdown(lua_State *L);

#endif
