/* The standard library as moonwire apps see it: Lua's, with the functions
 * replaced through which code could run out of lua.time_limit's reach
 * (coroutines, xpcall handlers, finalizers, debug hooks). See lua_stdlib.c.
 */
#ifndef MOONWIRE_LUA_STDLIB_H
#define MOONWIRE_LUA_STDLIB_H

#include <lua.h>

/* Replaces those functions in the libraries open in L (call it after
 * luaL_openlibs). Raises only on memory: call it in a protected call.
 * Returns 0. */
int mw_lua_stdlib_open(lua_State *L);

#endif
