/* sim.cluster: nodes of moonwire.sim over one in-process Redis (or several:
 * shards), on one virtual clock. See sim_cluster.h.
 *
 * Every operation on any node settles the whole cluster: each node runs
 * until it is idle, then Redis delivers what is in flight (a reply, a
 * message, a connection's news), one at a time, until neither has anything
 * left. Time moves for all nodes at once, from deadline to deadline.
 */
#include "sim_cluster.h"
#include "cluster.h"
#include "node.h"
#include "sim.h"
#include "shard.h"
#include "sim_redis.h"
#include "timer.h"

#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

#define CLUSTER_META "moonwire.sim.cluster"
#define NODES_MAX 16
#define SETTLE_LIMIT 1000000

typedef struct {
    mw_sim_redis_t *redis; /* the first shard: redis[0] */
    mw_sim_redis_t *shard[MW_SHARDS_MAX];
    int nshards;
    sim_server_t *nodes[NODES_MAX];
    int n;
    uint64_t now;
    int pumping;
    int alive;
} sim_cluster_t;

/* Shards: each node's connections go to the Redis whose port their URL
 * names (6379 + its index); the links are the sim driver's own. */
static mw_redis_link_t *shard_connect(void *drv, const mw_redis_url_t *url,
                                      const mw_redis_events_t *ev, void *ud, const char **why)
{
    sim_cluster_t *c = drv;
    int i = url->port - 6379;

    if (i < 0 || i >= c->nshards) {
        *why = "Connection refused";
        return NULL;
    }
    return mw_sim_redis_driver.connect(c->shard[i], url, ev, ud, why);
}

static mw_redis_driver_t shard_driver;

static void cluster_pump(void *ud)
{
    sim_cluster_t *c = ud;

    if (c->pumping)
        return; /* the pump below goes on */
    c->pumping = 1;
    for (long i = 0; i < SETTLE_LIMIT; i++) {
        int stepped = 0;
        for (int k = 0; k < c->n; k++)
            mw_sim_server_settle(c->nodes[k]);
        for (int s = 0; s < c->nshards; s++) {
            if (mw_sim_redis_pending(c->shard[s])) {
                mw_sim_redis_step(c->shard[s]);
                stepped = 1;
            }
        }
        if (!stepped)
            break;
    }
    c->pumping = 0;
}

/* Ends a call of the spec on the cluster: raises a hook failure of any node
 * (mw_sim_settle_call). Returns nret. */
static int settled(lua_State *L, sim_cluster_t *c, int nret)
{
    return c->n > 0 ? mw_sim_settle_call(L, c->nodes[0], nret) : nret;
}

static void set_now(sim_cluster_t *c, uint64_t now)
{
    c->now = now;
    for (int s = 0; s < c->nshards; s++)
        mw_sim_redis_set_now(c->shard[s], now);
}

static void cluster_advance(void *ud, uint64_t ms)
{
    sim_cluster_t *c = ud;
    uint64_t target = c->now + ms;

    for (long i = 0; i < SETTLE_LIMIT; i++) {
        int64_t next = -1;
        for (int k = 0; k < c->n; k++) {
            mw_node_t *node = mw_sim_server_node(c->nodes[k]);
            int64_t d = node != NULL ? mw_timers_next(node->timers) : -1;
            if (d >= 0 && (next < 0 || d < next))
                next = d;
        }
        if (next < 0 || c->now + (uint64_t)next > target)
            break;
        set_now(c, c->now + (uint64_t)next);
        for (int k = 0; k < c->n; k++) {
            mw_node_t *node = mw_sim_server_node(c->nodes[k]);
            if (node != NULL) {
                mw_timers_run(node->timers, c->now);
                cluster_pump(c);
            }
        }
    }
    set_now(c, target);
    for (int k = 0; k < c->n; k++) {
        mw_node_t *node = mw_sim_server_node(c->nodes[k]);
        if (node != NULL)
            node->timers->now = target;
    }
    cluster_pump(c);
}

static sim_cluster_t *check_cluster(lua_State *L)
{
    sim_cluster_t *c = luaL_checkudata(L, 1, CLUSTER_META);
    if (!c->alive)
        luaL_error(L, "this sim cluster is closed");
    return c;
}

static void cluster_close(sim_cluster_t *c)
{
    if (c->redis == NULL)
        return;
    c->alive = 0;
    for (int k = 0; k < c->n; k++)
        mw_sim_server_close(c->nodes[k]);
    for (int s = 0; s < c->nshards; s++)
        mw_sim_redis_free(c->shard[s]);
    c->redis = NULL;
}

int mw_sim_cluster(lua_State *L)
{
    sim_cluster_t *c;
    char err[256];
    lua_Integer n = 2, shards = 1;

    luaL_checktype(L, 1, LUA_TTABLE);
    if (lua_getfield(L, 1, "nodes") != LUA_TNIL)
        n = luaL_checkinteger(L, -1);
    lua_pop(L, 1);
    luaL_argcheck(L, n >= 1 && n <= NODES_MAX, 1, "nodes must be 1 to 16");
    if (lua_getfield(L, 1, "shards") != LUA_TNIL)
        shards = luaL_checkinteger(L, -1);
    lua_pop(L, 1);
    luaL_argcheck(L, shards >= 1 && shards <= MW_SHARDS_MAX, 1, "shards must be 1 to 16");
    if (lua_getfield(L, 1, "node_id") != LUA_TNIL)
        luaL_argerror(L, 1, "the nodes of a cluster are n1, n2, ...: no node_id");
    lua_pop(L, 1);

    c = lua_newuserdatauv(L, sizeof(*c), 1);
    memset(c, 0, sizeof(*c));
    luaL_setmetatable(L, CLUSTER_META);
    for (int s = 0; s < shards; s++) {
        c->shard[s] = mw_sim_redis_new(err, sizeof(err));
        if (c->shard[s] == NULL) {
            while (s-- > 0)
                mw_sim_redis_free(c->shard[s]);
            return luaL_error(L, "sim.cluster: %s", err);
        }
        c->nshards = s + 1;
    }
    c->redis = c->shard[0];
    shard_driver = mw_sim_redis_driver;
    shard_driver.connect = shard_connect;
    c->alive = 1;
    lua_createtable(L, (int)n, 0); /* the nodes, kept alive by the cluster */
    for (int k = 0; k < n; k++) {
        char id[16];
        mw_sim_join_t join = {id,           &shard_driver,   c,     cluster_pump,
                              cluster_advance, c, (int)shards};
        snprintf(id, sizeof(id), "n%d", k + 1);
        c->nodes[k] = mw_sim_server_push(L, 1, &join);
        c->n = k + 1;
        lua_pushvalue(L, -3);
        lua_setiuservalue(L, -2, 1); /* and the cluster by each node */
        lua_rawseti(L, -2, k + 1);
    }
    lua_setiuservalue(L, -2, 1);
    cluster_pump(c);
    return settled(L, c, 1);
}

static int cluster_index(lua_State *L)
{
    sim_cluster_t *c = luaL_checkudata(L, 1, CLUSTER_META);

    if (lua_type(L, 2) == LUA_TNUMBER) {
        if (!c->alive)
            return luaL_error(L, "this sim cluster is closed");
        lua_getiuservalue(L, 1, 1);
        lua_rawgeti(L, -1, luaL_checkinteger(L, 2));
        return 1;
    }
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    return 1;
}

static int cluster_len(lua_State *L)
{
    sim_cluster_t *c = luaL_checkudata(L, 1, CLUSTER_META);
    lua_pushinteger(L, c->n);
    return 1;
}

static int cluster_advance_m(lua_State *L)
{
    sim_cluster_t *c = check_cluster(L);
    lua_Integer ms = luaL_checkinteger(L, 2);
    luaL_argcheck(L, ms >= 0, 2, "time only goes forward");
    cluster_advance(c, (uint64_t)ms);
    return settled(L, c, 0);
}

static int cluster_now(lua_State *L)
{
    sim_cluster_t *c = check_cluster(L);
    lua_pushinteger(L, (lua_Integer)c->now);
    return 1;
}

/* The shard an optional argument names (0-based), or -1 for all of them. */
static int shard_arg(lua_State *L, sim_cluster_t *c, int arg)
{
    lua_Integer i;
    if (lua_isnoneornil(L, arg))
        return -1;
    i = luaL_checkinteger(L, arg);
    luaL_argcheck(L, i >= 0 && i < c->nshards, arg, "no such shard");
    return (int)i;
}

static int cluster_redis_down(lua_State *L)
{
    sim_cluster_t *c = check_cluster(L);
    int flush = 0, only = -1;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_getfield(L, 2, "flush");
        flush = lua_toboolean(L, -1);
        lua_getfield(L, 2, "shard");
        only = shard_arg(L, c, lua_gettop(L));
        lua_pop(L, 2);
    }
    for (int s = 0; s < c->nshards; s++)
        if (only < 0 || s == only)
            mw_sim_redis_down(c->shard[s], flush);
    cluster_pump(c);
    return settled(L, c, 0);
}

static int cluster_redis_up(lua_State *L)
{
    sim_cluster_t *c = check_cluster(L);
    int only = shard_arg(L, c, 2);
    for (int s = 0; s < c->nshards; s++)
        if (only < 0 || s == only)
            mw_sim_redis_up(c->shard[s]);
    cluster_pump(c);
    return settled(L, c, 0);
}

static int cluster_redis_hold(lua_State *L)
{
    static const char *const what[] = {"replies", "messages", NULL};
    sim_cluster_t *c = check_cluster(L);
    int hold, only = shard_arg(L, c, 3);

    if (lua_type(L, 2) == LUA_TSTRING)
        hold = luaL_checkoption(L, 2, NULL, what) == 0 ? MW_SIM_HOLD_REPLIES : MW_SIM_HOLD_MESSAGES;
    else
        hold = lua_isnoneornil(L, 2) || lua_toboolean(L, 2) ? MW_SIM_HOLD_REPLIES : MW_SIM_HOLD_NONE;
    for (int s = 0; s < c->nshards; s++)
        if (only < 0 || s == only)
            mw_sim_redis_hold(c->shard[s], hold);
    cluster_pump(c);
    return settled(L, c, 0);
}

static int cluster_redis_is_up(lua_State *L)
{
    sim_cluster_t *c = check_cluster(L);
    int only = shard_arg(L, c, 2), up = 1;
    for (int s = 0; s < c->nshards; s++)
        if (only < 0 || s == only)
            up &= mw_sim_redis_is_up(c->shard[s]) != 0;
    lua_pushboolean(L, up);
    return 1;
}

static int cluster_redis_links(lua_State *L)
{
    sim_cluster_t *c = check_cluster(L);
    int only = shard_arg(L, c, 2);
    lua_Integer n = 0;
    for (int s = 0; s < c->nshards; s++)
        if (only < 0 || s == only)
            n += mw_sim_redis_links(c->shard[s]);
    lua_pushinteger(L, n);
    return 1;
}

static int cluster_redis(lua_State *L)
{
    sim_cluster_t *c = check_cluster(L);
    int n = mw_sim_redis_exec(c->redis, L, 2);
    cluster_pump(c); /* what it published */
    return settled(L, c, n);
}

/* cluster:redis_on(shard, cmd, ...): cluster:redis on that shard. */
static int cluster_redis_on(lua_State *L)
{
    sim_cluster_t *c = check_cluster(L);
    lua_Integer i = luaL_checkinteger(L, 2);
    int n;

    luaL_argcheck(L, i >= 0 && i < c->nshards, 2, "no such shard");
    n = mw_sim_redis_exec(c->shard[i], L, 3);
    cluster_pump(c);
    return settled(L, c, n);
}

/* cluster:shard_of(topic): the shard (0-based) the nodes place it on. */
static int cluster_shard_of(lua_State *L)
{
    sim_cluster_t *c = check_cluster(L);
    size_t len;
    const char *topic = luaL_checklstring(L, 2, &len);
    lua_pushinteger(L, (lua_Integer)mw_shard_of(topic, len, (unsigned)c->nshards));
    return 1;
}

/* cluster:kill(i): node i dies as a killed process does: its connections
 * to Redis go first, so nothing it would clean up reaches the others (its
 * presence stays until cluster.presence_ttl tells); then its clients see it
 * close. */
static int cluster_kill(lua_State *L)
{
    sim_cluster_t *c = check_cluster(L);
    lua_Integer i = luaL_checkinteger(L, 2);

    luaL_argcheck(L, i >= 1 && i <= c->n, 2, "no such node");
    if (mw_sim_server_node(c->nodes[i - 1]) == NULL)
        return 0; /* gone already */
    mw_cluster_stop(mw_sim_server_node(c->nodes[i - 1]));
    mw_sim_server_close(c->nodes[i - 1]);
    cluster_pump(c);
    return settled(L, c, 0);
}

static int cluster_close_m(lua_State *L)
{
    sim_cluster_t *c = luaL_checkudata(L, 1, CLUSTER_META);
    cluster_close(c);
    return 0;
}

static int cluster_tostring(lua_State *L)
{
    sim_cluster_t *c = luaL_checkudata(L, 1, CLUSTER_META);
    lua_pushfstring(L, "moonwire.sim.cluster(%d nodes%s)", c->n, c->alive ? "" : ", closed");
    return 1;
}

void mw_sim_open_clusters(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"advance", cluster_advance_m},
        {"now", cluster_now},
        {"redis_down", cluster_redis_down},
        {"redis_up", cluster_redis_up},
        {"redis_is_up", cluster_redis_is_up},
        {"redis_hold", cluster_redis_hold},
        {"kill", cluster_kill},
        {"redis_links", cluster_redis_links},
        {"redis", cluster_redis},
        {"redis_on", cluster_redis_on},
        {"shard_of", cluster_shard_of},
        {"close", cluster_close_m},
        {NULL, NULL},
    };

    luaL_newmetatable(L, CLUSTER_META);
    luaL_newlib(L, methods);
    lua_pushcclosure(L, cluster_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, cluster_close_m);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, cluster_len);
    lua_setfield(L, -2, "__len");
    lua_pushcfunction(L, cluster_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
}
