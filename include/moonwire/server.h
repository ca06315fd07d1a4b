/* A node: the server context, independent of any event loop. It makes and
 * owns the node's parts (registry, topics, history, timers, the Lua host
 * with the app, and the backplane once started), serves their connections
 * (it installs the handlers they report to), and runs the timeouts, the
 * drain and reloads.
 *
 * A loop binding drives it: net.c binds it to libuv (listeners, TCP and
 * TLS), sim.c to in-memory connections and virtual time. Both run
 * mw_server_run_deferred() at the end of every turn: that is where on_close
 * hooks run and where queued frames are written, once per connection
 * (corked writes).
 */
#ifndef MOONWIRE_SERVER_H
#define MOONWIRE_SERVER_H

#include "moonwire/config.h"
#include "moonwire/metrics.h"

#include <stddef.h>
#include <stdint.h>

typedef struct mw_server_s mw_server_t;
typedef struct mw_node_s mw_node_t;
struct uv_loop_s;

/* Makes a node around cfg, which must outlive it: registry, topics, history,
 * timers (their clock at now, in ms) and the Lua host with the app loaded;
 * on_start has not run (mw_server_start). Returns the server, or NULL with
 * the reason in err (the app failed to load, or memory was short). */
mw_server_t *mw_server_new(mw_config_t *cfg, uint64_t now, char *err, size_t errlen);

/* Frees what mw_server_new made (NULL: nothing). Every connection must be
 * released and the backplane stopped first. */
void mw_server_free(mw_server_t *srv);

/* Runs the app's on_start, once the node is ready to serve. */
void mw_server_start(mw_server_t *srv);

/* Connects the node to the Redis backplane when cluster.redis is set
 * (asynchronously: it reconnects on its own), on loop. Returns 0, or
 * MW_ECONFIG with err set for a bad cluster.redis, or MW_ENOMEM. */
int mw_server_start_cluster(mw_server_t *srv, struct uv_loop_s *loop, char *err, size_t errlen);

/* Disconnects from the backplane, if connected; what its outbox held is
 * dropped (counted, logged). Safe from a loop callback. */
void mw_server_stop_cluster(mw_server_t *srv);

/* Starts the HTTP client of moonwire.http.request (libcurl) on loop.
 * Returns 0, or MW_ENOMEM / MW_EIO with err set. */
int mw_server_start_http(mw_server_t *srv, struct uv_loop_s *loop, char *err, size_t errlen);

/* Stops it: the calls still running end with nil, "shutting down", and the
 * client's handles close. Safe from a loop callback; a no-op when none runs. */
void mw_server_stop_http(mw_server_t *srv);

/* Frees what the process keeps for reuse across servers: the static file
 * cache, deflate streams, wslay contexts, queue entries and frames, in that
 * order (the cache holds frames). At exit, so leak checkers see a clean heap. */
void mw_server_pools_drain(void);

/* Runs the work deferred to the end of a loop turn: on_close hooks, then a
 * write for every connection with queued frames, until none is left. */
void mw_server_run_deferred(mw_server_t *srv);

/* True when work waits for mw_server_run_deferred. */
int mw_server_pending(const mw_server_t *srv);

/* SIGTERM: closes every connection (1001) and calls on_drained (may be NULL)
 * once none is left, no hook of a closed connection waits, and the backplane
 * has sent its outbox, or after shutdown_timeout, whichever comes first.
 * A second call does nothing. */
void mw_server_drain(mw_server_t *srv, void (*on_drained)(mw_server_t *srv));

/* True once mw_server_drain has been called. */
int mw_server_draining(const mw_server_t *srv);

/* Takes the reloadable parts of fresh (a validated configuration) into the
 * live one: the script path, log, websocket, limits, lua, http, static and
 * app sections. What needs a restart (listen addresses, TLS listeners, node
 * id, cluster) stays and is logged when it differs. fresh is left holding
 * the replaced values, for mw_config_close. New limits apply to new
 * connections; open ones keep what they negotiated. */
void mw_server_apply_config(mw_server_t *srv, mw_config_t *fresh);

/* Reloads the app (SIGHUP). Returns 0 or MW_ELUA (old app kept; logged and
 * counted). */
int mw_server_reload(mw_server_t *srv);

/* The node's counters. */
mw_metrics_t *mw_server_metrics(mw_server_t *srv);

/* Counts into m from now on (a worker's block in shared memory), instead of
 * the server's own. */
void mw_server_set_metrics(mw_server_t *srv, mw_metrics_t *m);

/* Sets the clock, in ms (the loop's time, before work of a new turn). */
void mw_server_set_now(mw_server_t *srv, uint64_t now);

/* This node incarnation's name, as its connection ids start ("n1.k3x9a2"),
 * without the trailing dot: len bytes at the pointer. */
const char *mw_server_id(const mw_server_t *srv, size_t *len);

/* The node's parts, for the loop bindings of the core (net.c, sim.c): they
 * make connections (node->conns), drive the clock and timer heap
 * (node->timers) and lend the loop (node->loop). */
mw_node_t *mw_server_node(mw_server_t *srv);

#endif
