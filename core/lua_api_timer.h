/* moonwire.timer and moonwire.every, as the Lua host sees their timers: per
 * app generation, so that a reload cancels the old app's. */
#ifndef MOONWIRE_LUA_API_TIMER_H
#define MOONWIRE_LUA_API_TIMER_H

#include <stdint.h>

typedef struct lua_State lua_State;

/* Starts a new app generation (before loading an app) and returns it. */
uint32_t mw_lua_api_new_generation(lua_State *L);

/* Cancels the timers of one generation (keep 0), or of every generation but
 * that one (keep 1). A reload cancels the old app's timers once the new one
 * loaded, or the failed new one's, keeping the old app's. */
void mw_lua_api_cancel_timers(lua_State *L, uint32_t generation, int keep);

#endif
