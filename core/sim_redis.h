/* The in-process Redis of moonwire.sim's clusters: one per sim.cluster,
 * shared by its nodes through a Redis driver (redis_link.h), so the nodes'
 * backplanes run unchanged over it. The keyspace, pub/sub and scripts are
 * sim_redis.lua, run in a Lua state of its own; this side is the links, the
 * replies in flight and the outage.
 *
 * Commands run when sent; their replies and the messages they publish wait
 * in one queue, in order, until the sim delivers them (mw_sim_redis_step),
 * so nothing a driver reports runs inside the call that caused it, as with
 * hiredis. Switched off, Redis drops every link (the replies in flight are
 * lost: their callbacks get NULL) and refuses connections until switched on.
 */
#ifndef MOONWIRE_SIM_REDIS_H
#define MOONWIRE_SIM_REDIS_H

#include "redis_link.h"

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mw_sim_redis_s mw_sim_redis_t;

/* The driver: drv is the mw_sim_redis_t *. */
extern const mw_redis_driver_t mw_sim_redis_driver;

/* A Redis that is up and empty. Returns NULL with err set on failure. */
mw_sim_redis_t *mw_sim_redis_new(char *err, size_t errlen);

/* Frees r; its links must be gone (the nodes stopped their backplanes). */
void mw_sim_redis_free(mw_sim_redis_t *r);

/* The clock of what runs next (key expiry, stream ids), in ms. */
void mw_sim_redis_set_now(mw_sim_redis_t *r, uint64_t now);

/* True when a reply, a message or a connection event waits (replies while
 * they are held do not count). */
int mw_sim_redis_pending(const mw_sim_redis_t *r);

/* Delivers the oldest of them. */
void mw_sim_redis_step(mw_sim_redis_t *r);

/* What mw_sim_redis_hold holds back. */
enum { MW_SIM_HOLD_NONE, MW_SIM_HOLD_REPLIES, MW_SIM_HOLD_MESSAGES };

/* Holds back the replies to commands (MW_SIM_HOLD_REPLIES), as a Redis
 * whose answers are slow would, while the messages it publishes still go
 * out; or those messages (MW_SIM_HOLD_MESSAGES) while the replies go, as a
 * Redis that has answered a PUBLISH and not yet written it to the
 * subscribers; or lets everything go (MW_SIM_HOLD_NONE). What is held when
 * Redis goes down is lost, its command run. */
void mw_sim_redis_hold(mw_sim_redis_t *r, int what);

/* Switches Redis off (every link dropped; with flush, the data and the
 * scripts are lost, as in a restart without persistence) or on. */
void mw_sim_redis_down(mw_sim_redis_t *r, int flush);
void mw_sim_redis_up(mw_sim_redis_t *r);
int mw_sim_redis_is_up(const mw_sim_redis_t *r);

/* The number of links connected (for specs: both of each node when all is well). */
int mw_sim_redis_links(const mw_sim_redis_t *r);

/* Runs the command of the strings at L's stack [first, top] at once, on a
 * connection of the spec's own, and pushes its reply as Lua values (arrays
 * as tables, a nil reply as nil; an error as nil, message). Returns the
 * number of values pushed. Raises when Redis is off. */
int mw_sim_redis_exec(mw_sim_redis_t *r, lua_State *L, int first);

#endif
