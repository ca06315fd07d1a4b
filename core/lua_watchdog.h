/* The CPU-time limit of Lua hook calls (lua.time_limit), free until a call
 * runs long.
 *
 * Lua's count hook is the only way to stop a loop that calls nothing, but
 * while it is set the VM traps on every instruction (+80% VM time for a
 * plain loop on this machine). So no hook is set while a call runs normally:
 * a POSIX timer on the loop thread's CPU clock ticks every
 * MW_WATCHDOG_TICK_MS of CPU time the thread uses (none while it sleeps in
 * epoll), and a tick that finds one call still running past its limit sets
 * the count hook with a period of 1 on the thread running it, from the
 * signal handler, which is how lua.c stops a script on Ctrl-C. The hook
 * (given to mw_watchdog_start) then raises at every instruction.
 *
 * The watchdog must know which thread runs: the host tells it when it
 * resumes a hook's coroutine, and lua_stdlib.c's coroutine.resume, wrap and
 * close when a script runs one of its own (mw_watchdog_switch).
 *
 * One watchdog per process: calls of every host in it (moonwire.sim makes
 * several) are watched in turn, a top-level call at a time.
 */
#ifndef MOONWIRE_LUA_WATCHDOG_H
#define MOONWIRE_LUA_WATCHDOG_H

#include <stdint.h>

#include <lua.h>

/* CPU time between two ticks; a call is stopped between its limit and one
 * tick (plus the kernel's timer granularity) later. */
#define MW_WATCHDOG_TICK_MS 5

/* Starts the timer on the calling thread's CPU clock, or counts one more
 * user of the running one (a child after fork starts its own). hook is what a
 * call over its limit gets. Returns 0, or MW_EIO (errno says why): calls then
 * run without a limit, and there is nothing to stop. */
int mw_watchdog_start(lua_Hook hook);

/* One user fewer; the last one deletes the timer and puts the signal's
 * previous action back, discarding a tick still pending, so that the handler
 * is not called once its code may be gone (moonwire.sim is a module that
 * lua_close unloads). */
void mw_watchdog_stop(void);

/* A top-level call begins on thread L, limited to limit_ms of CPU time (0:
 * none), and ends with mw_watchdog_leave. */
void mw_watchdog_enter(lua_State *L, uint32_t limit_ms);
void mw_watchdog_leave(void);

/* The call goes on in thread L (a coroutine the host resumes inside it).
 * Returns the thread it ran in, to switch back to afterwards. */
lua_State *mw_watchdog_switch(lua_State *L);

/* Whether the call running now is past its limit: 1 or 0. */
int mw_watchdog_expired(void);

/* Raises the time-limit error in L when the hook call running now is past
 * lua.time_limit (through the hook the host gave mw_watchdog_start); returns
 * otherwise. Cheap: two reads. For C functions that loop without running Lua
 * code (pattern matching, string.rep, table.move...), which the count hook
 * never interrupts: they call it every few thousand steps. */
void mw_watchdog_check(lua_State *L);

#endif
