/* The moonwire.sim module: sim.new (a node alone, sim.c) and sim.cluster
 * (nodes sharing an in-process Redis, sim_cluster.c).
 */
#include "sim.h"
#include "sim_cluster.h"

#include <lauxlib.h>

int luaopen_moonwire_sim(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"new", mw_sim_new},
        {"cluster", mw_sim_cluster},
        {NULL, NULL},
    };

    mw_sim_open_servers(L);
    mw_sim_open_clients(L);
    mw_sim_open_clusters(L);
    luaL_newlib(L, funcs);
    return 1;
}
