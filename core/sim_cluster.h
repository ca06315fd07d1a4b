/* sim.cluster: nodes of moonwire.sim sharing one in-process Redis
 * (sim_redis.h) and one virtual clock, so specs run what crosses nodes
 * through the real backplane.
 *
 *   local c = sim.cluster { nodes = 2, script = "scripts/chat.lua", config = {...} }
 *   local a, b = c[1], c[2]          -- servers, as sim.new makes them
 *   c:advance(ms)  c:redis_down()  c:redis_up()  c:redis_hold(on)  c:redis("HGETALL", key)
 *   c:kill(i)  c:close()
 */
#ifndef MOONWIRE_SIM_CLUSTER_H
#define MOONWIRE_SIM_CLUSTER_H

#include <lua.h>

/* sim.cluster(opts). */
int mw_sim_cluster(lua_State *L);

/* Registers the metatable of clusters; pushes nothing. */
void mw_sim_open_clusters(lua_State *L);

#endif
