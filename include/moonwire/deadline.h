/* The deadline of a shutdown: SIGTERM (or SIGINT) ends the process within
 * limits.shutdown_timeout and a little more, even when the loop is stuck (a
 * hook in a C function that does not return, a blocking call).
 *
 * A thread of its own takes the two signals (they are blocked in every other
 * thread): at the first it wakes the loop, which drains as usual, and starts
 * the clock; a process still alive MW_DEADLINE_MARGIN_MS after the grace
 * period logs why and exits with status 1.
 */
#ifndef MOONWIRE_DEADLINE_H
#define MOONWIRE_DEADLINE_H

#include <stdint.h>

#include <uv.h>

/* What the deadline adds to the grace period: the time a drain that ended on
 * time takes to close the loop and exit. */
#define MW_DEADLINE_MARGIN_MS 750

/* Blocks SIGTERM and SIGINT in the calling thread, and so in the threads it
 * starts later (libuv's pool): call it first, before anything starts a
 * thread. One that arrives now waits for mw_deadline_start. Returns 0 or
 * MW_EIO. */
int mw_deadline_block(void);

/* Starts the thread that takes the two signals. wake is sent at the first one
 * (uv_async_send: thread-safe); the loop owns it and may close it once woken,
 * since it is sent only once. Returns 0, or MW_EIO (errno says why). */
int mw_deadline_start(uv_async_t *wake, uint32_t grace_ms);

/* The grace period from now on (limits.shutdown_timeout, after a reload). */
void mw_deadline_set_grace(uint32_t grace_ms);

/* The signal that woke the loop (SIGTERM or SIGINT), or 0. */
int mw_deadline_signal(void);

#endif
