/* moonwire.config, as a reload makes it again. */
#ifndef MOONWIRE_LUA_API_CONFIG_H
#define MOONWIRE_LUA_API_CONFIG_H

typedef struct lua_State lua_State;

/* lua_CFunction: makes moonwire.config show the node's configuration as it
 * is now (after a reload re-read the file). Returns 0 (no result). */
int mw_lua_api_refresh_config(lua_State *L);

#endif
