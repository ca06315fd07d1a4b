/* The standard library functions that can loop long in C, replaced by ones
 * that lua.time_limit can stop.
 *
 * The time limit stops Lua code through the count hook, which fires on Lua
 * instructions only. A few functions of Lua's standard library can run for
 * minutes inside one C call without allocating in proportion (what
 * allocates is bounded by lua.memory_limit): pattern matching that
 * backtracks (lua_pattern.h), a plain string.find that is O(subject x
 * pattern), string.rep of an empty string a huge number of times,
 * table.move over a huge range, table.insert and table.remove on a table
 * whose __len answers a huge length, table.concat of elements that an
 * __index function makes up, and table.sort of a huge __len with C
 * functions for elements and order. Their replacements give the same
 * results, the same errors and the same sequence of metamethod calls as Lua
 * 5.4's, and call mw_watchdog_check every few thousand steps.
 *
 * Still out of reach (documented in docs/lua-api.md): what blocks in the
 * kernel (os.execute, io.popen, reads from a pipe or a terminal), and
 * require or package.searchpath over a path of millions of templates.
 */
#ifndef MOONWIRE_LUA_LOOPS_H
#define MOONWIRE_LUA_LOOPS_H

#include <lua.h>

/* Sets string.find, match, gmatch, gsub and rep, and table.move, insert,
 * remove, concat and sort to the stoppable versions, in a state where
 * luaL_openlibs ran. The string table is also the __index of strings'
 * metatable, so s:find(...) gets them too. The originals are not kept
 * anywhere a script could reach. Raises only on out of memory (call it under
 * a protected call). */
void mw_lua_loops_install(lua_State *L);

#endif
