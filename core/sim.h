/* moonwire.sim's servers (sim.c) and clients (sim_client.c) as its
 * clusters (sim_cluster.c) and the module (sim_module.c) use them.
 */
#ifndef MOONWIRE_SIM_H
#define MOONWIRE_SIM_H

#include "redis_link.h"

#include <lua.h>
#include <stdint.h>

typedef struct sim_server_s sim_server_t;
typedef struct mw_node_s mw_node_t;

/* How a server joins a cluster: its backplane's Redis driver, and what the
 * cluster does for it (a pump settles every node and Redis; an advance moves
 * the one clock of them all). */
typedef struct {
    const char *node_id; /* when the options give none */
    const mw_redis_driver_t *driver;
    void *drv;
    void (*pump)(void *ud);
    void (*advance)(void *ud, uint64_t ms);
    void *ud;
    int shards; /* the Redis of cluster.redis: redis://moonwire.sim:6379, :6380... */
} mw_sim_join_t;

/* Makes a server from the options table at index opts (script, config,
 * node_id), joined to a cluster when join is not NULL, and pushes it.
 * Raises on a bad option or configuration. */
sim_server_t *mw_sim_server_push(lua_State *L, int opts, const mw_sim_join_t *join);

/* The server's node (its timers, its backplane); NULL once closed. */
mw_node_t *mw_sim_server_node(sim_server_t *ss);

/* Runs the server alone until it has nothing left to do. */
void mw_sim_server_settle(sim_server_t *ss);

/* Closes the server as SIGTERM would, then drops its connections and its
 * backplane; a no-op once closed. */
void mw_sim_server_close(sim_server_t *ss);

/* Registers the metatable of servers, and once per interpreter what gives
 * the pools back at its end; pushes nothing. Before any server is made. */
void mw_sim_open_servers(lua_State *L);

/* Registers the metatable of clients (sim_client.c); pushes nothing. */
void mw_sim_open_clients(lua_State *L);

/* Ends a call of the spec that ran hooks: when a hook of ss (or, in a
 * cluster, of any of its nodes) failed, raises its error (the first, with the
 * app's traceback, and how many more) at the spec's line, unless the server
 * was made with hook_errors = "log". Returns nret. */
int mw_sim_settle_call(lua_State *L, sim_server_t *ss, int nret);

/* sim.new(opts). */
int mw_sim_new(lua_State *L);

#endif
