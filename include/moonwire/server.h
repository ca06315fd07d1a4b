/* The server context, independent of any event loop: configuration,
 * registry, Lua host, timers, the deferred work of each loop turn, and the
 * timeouts of every connection.
 *
 * net.c binds it to libuv (listeners, TCP); sim.c binds it to in-memory
 * connections and virtual time. Both call mw_server_run_deferred() at the
 * end of every turn: that is where on_close hooks run and where queued
 * frames are written, once per connection (corked writes).
 */
#ifndef MOONWIRE_SERVER_H
#define MOONWIRE_SERVER_H

#include "acl.h"
#include "conn.h"
#include "history.h"
#include "iplimit.h"
#include "list.h"
#include "registry.h"
#include "timer.h"
#include "topics.h"
#include "moonwire/config.h"
#include "moonwire/metrics.h"

typedef struct mw_lua_s mw_lua_t;
typedef struct mw_cluster_s mw_cluster_t;

struct mw_server_s {
    mw_config_t *cfg;
    mw_registry_t reg;
    mw_topics_t topics;
    mw_iplimit_t iplimit; /* connections per peer address */
    mw_acl_t healthz_acl; /* who may ask /healthz */
    mw_acl_t metrics_acl; /* who may ask /metrics */
    mw_timers_t timers;
    mw_lua_t *lua;
    mw_cluster_t *cluster; /* NULL when the node runs alone */
    mw_history_t *history; /* topic history kept in memory (standalone) */
    mw_metrics_t *metrics;    /* own_metrics, or this worker's shared block */
    mw_metrics_t own_metrics;

    /* Timeout lists, each ordered by the time its members entered it. */
    mw_list_t tl_handshake; /* HTTP: handshake_timeout from accept */
    mw_list_t tl_active;    /* OPEN: idle_timeout from the last byte received */
    mw_list_t tl_pinged;    /* OPEN, pinged: ping_timeout from the ping */
    mw_list_t tl_closing;   /* CLOSING/CLOSED, or HTTP writing a reply: close_timeout
                               without progress */
    mw_list_t tl_keepalive; /* HTTP between requests: keepalive_timeout */

    mw_list_t flush_list;   /* connections with frames to write this turn */
    mw_list_t backed_up;    /* backlogs of queues over max_buffered, oldest first */
    uint32_t nbacked;       /* how many */
    mw_conn_t *sender;      /* the connection whose input is being handled, or NULL */
    size_t bp_released;     /* queue memory freed since the last malloc_trim */
    uint64_t bp_trimmed_at; /* when that was, ms */
    mw_list_t close_queue;  /* connections owed an on_close */
    mw_timer_t sweep;

    size_t nconns; /* every connection not yet released */
    int draining;  /* SIGTERM: refuse new connections, close the rest */

    void *net; /* the loop binding's own data */
    /* The libuv loop that net.c runs, for work on its thread pool (reading
     * files); NULL in the sim, where such work runs in place. */
    struct uv_loop_s *loop;
    /* Called when the drain is over (no connection left) or timed out. */
    void (*on_drained)(mw_server_t *srv);
    mw_timer_t drain_timer;
};

/* Creates the server around cfg (which must outlive it): registry, timers and
 * the Lua host with the app loaded. Returns 0, or MW_ELUA / MW_ENOMEM with a
 * message in err. */
int mw_server_init(mw_server_t *srv, mw_config_t *cfg, uint64_t now, char *err, size_t errlen);

/* Frees what mw_server_init made. Every connection must be released first. */
void mw_server_close(mw_server_t *srv);

/* Frees what the process keeps for reuse across servers: the static file
 * cache, deflate streams, wslay contexts, queue entries and frames, in that
 * order (the cache holds frames). At exit, so leak checkers see a clean heap. */
void mw_server_pools_drain(void);

/* Runs the work deferred to the end of a loop turn: on_close hooks, then a
 * write for every connection with queued frames. */
void mw_server_run_deferred(mw_server_t *srv);

/* Marks c as having frames to write this turn. */
void mw_server_want_flush(mw_server_t *srv, mw_conn_t *c);

/* Moves c into a timeout list (MW_TL_NONE: out of all). */
void mw_server_set_tlist(mw_server_t *srv, mw_conn_t *c, mw_conn_tlist_t tl);

/* Records activity on an open connection (it goes to the back of the idle list). */
void mw_server_touch(mw_server_t *srv, mw_conn_t *c);

/* Queues c's on_close to run at the end of the turn. */
void mw_server_queue_close(mw_server_t *srv, mw_conn_t *c);

/* SIGTERM: closes every connection (1001) and calls on_drained when none is
 * left or after shutdown_timeout, whichever comes first. */
void mw_server_drain(mw_server_t *srv);

/* Takes the reloadable parts of fresh (a validated configuration) into the
 * live one: the script path, log, websocket, limits, lua, http, static and
 * app sections. What needs a restart (listen addresses, TLS listeners, node
 * id, cluster) stays and is logged when it differs. fresh is left holding
 * the replaced values, for mw_config_close. New limits apply to new
 * connections; open ones keep what they negotiated. */
void mw_server_apply_config(mw_server_t *srv, mw_config_t *fresh);

/* Reloads the app (SIGHUP). Returns 0 or MW_ELUA (old app kept; logged). */
int mw_server_reload(mw_server_t *srv);

#endif
