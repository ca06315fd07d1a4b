/* Lua 5.4's pattern matching (string.find, string.match, string.gmatch,
 * string.gsub), in a matcher that lua.time_limit can stop.
 *
 * Lua's own matcher (lstrlib.c) backtracks in C: a pattern such as
 * string.rep("a?", 40) .. string.rep("a", 40) runs for hours without one Lua
 * instruction, so the count hook of the time limit never fires. These
 * functions give the same results and raise the same errors as Lua 5.4's for
 * every input (the fuzz harness fuzz/fuzz_pattern.c runs both side by side),
 * and count their steps: every single-character attempt, every backtrack,
 * every block of bytes a balance scan, a back reference or a plain find looks
 * at. Every few thousand steps they call mw_watchdog_check, which raises the
 * time-limit error once the hook call is past lua.time_limit.
 *
 * One deliberate difference: after a gmatch iterator raised (and a pcall
 * caught it), its next call starts with the whole nesting allowance again.
 * Lua's forgets to restore it, so its next calls allow less nesting, or
 * after "pattern too complex" none of the limit at all and overflow the C
 * stack.
 */
#ifndef MOONWIRE_LUA_PATTERN_H
#define MOONWIRE_LUA_PATTERN_H

#include <lua.h>

/* Sets the fields find, match, gmatch and gsub of the table at index idx
 * (the string library) to this file's functions. */
void mw_lua_pattern_install(lua_State *L, int idx);

#endif
