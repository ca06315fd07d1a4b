/* Several processes on one host: a master that forks N workers.
 *
 * Each worker is a whole node (its own loop, Lua state and node id) bound to
 * the same addresses with SO_REUSEPORT, so the kernel spreads connections
 * over them; they share topics through the backplane. The master serves
 * nothing: it restarts a worker that dies (waiting a second when one dies
 * right after it started, so a broken worker cannot spin; after five such
 * deaths in a row it stops everything and exits 1), forwards SIGHUP
 * and SIGUSR1, and on SIGTERM or SIGINT forwards it and waits for every
 * worker to drain (SIGKILL after the grace period).
 */
#ifndef MOONWIRE_WORKERS_H
#define MOONWIRE_WORKERS_H

#include <stdint.h>

/* Runs in a forked worker (index 1..n); returns its exit status. */
typedef int (*mw_worker_fn)(int index);

/* Forks n workers and supervises them until a stop signal. Returns the
 * master's exit status: 0 after a clean stop, 1 when it could not fork. */
int mw_workers_run(int n, uint32_t grace_ms, mw_worker_fn fn);

#endif
