/* The Redis backplane: many nodes sharing topics, broadcasts and direct
 * sends through Redis pub/sub (hiredis on the node's own libuv loop).
 *
 * Channels, under cluster.prefix (default "mw"):
 *   <prefix>:t:<topic>   a topic; a node subscribes while it has a local member
 *   <prefix>:all         broadcasts
 *   <prefix>:n:<node>    direct sends to connections of one node incarnation
 * Every message travels in an envelope (version, kind, flags, the origin's
 * number for it, origin node, except id, target id, payload); a node drops
 * envelopes it sent itself, as it delivered those locally already, and
 * envelopes of an origin whose number it has seen (dedup.h). Order per
 * publisher and topic is Redis's: one command connection per node, one
 * channel per topic.
 *
 * Everything a node sends to the others goes through its outbox (outbox.h)
 * and stays there until Redis has taken it. When Redis is away, local
 * delivery goes on and what should cross nodes waits there, within
 * cluster.outbox_size and cluster.outbox_max_age; both connections come
 * back with capped, jittered backoff, re-subscribing every topic that still
 * has local members; then, once the other nodes are back on Redis too (or
 * after the time they would need), the outbox goes out in order, and a send
 * made meanwhile queues behind it.
 *
 * This header is the backplane as the rest of the core uses it: its life and
 * state here, sending (cluster_send.h), presence (cluster_presence.h) and
 * history (cluster_history.h).
 */
#ifndef MOONWIRE_CLUSTER_H
#define MOONWIRE_CLUSTER_H

#include "cluster_history.h"
#include "cluster_presence.h"
#include "cluster_redis.h"
#include "cluster_send.h"

#include "redis_link.h"

#include <stddef.h>
#include <stdint.h>

typedef struct mw_node_s mw_node_t;
typedef struct mw_cluster_s mw_cluster_t;

/* Connects the node to Redis (asynchronously) through driver (drv is the
 * driver's own: the loop for mw_redis_hiredis), hooks the topic index, and
 * sets node->cluster; does nothing without cluster.redis. Returns 0, or
 * MW_ECONFIG with err set for a bad address, or MW_ENOMEM. */
int mw_cluster_start(mw_node_t *node, const mw_redis_driver_t *driver, void *drv, char *err,
                     size_t errlen);

/* Disconnects and frees node->cluster, if any (at shutdown): what the outbox
 * holds is dropped (counted, logged). Safe from a loop callback, not from a
 * reply's. */
void mw_cluster_stop(mw_node_t *node);

/* True when the subscriber connection of topic's shard is up (messages of
 * other nodes on that topic arrive). */
int mw_cluster_topic_subscribed(mw_cluster_t *cl, const char *topic, size_t len);

/* True when both Redis connections of every shard are up. */
int mw_cluster_healthy(const mw_cluster_t *cl);

/* How many Redis servers (shards) cluster.redis lists: 1 or more. */
unsigned mw_cluster_shards(const mw_cluster_t *cl);

/* What the backplane, or one shard of it, is doing, for moonwire.cluster(),
 * /healthz and /metrics. */
typedef struct {
    int up;          /* both Redis connections (of every shard) are up */
    int delayed;     /* messages to other nodes wait: Redis is away, or the outbox is not out */
    size_t messages; /* in the outbox, in flight included */
    size_t bytes;
    uint64_t oldest; /* ms the oldest of them has waited; 0 when empty */
    uint32_t down;   /* bit i: shard i is not up */
    const char *where; /* a shard's: host:port, unix:path or "master NAME"; NULL for all */
} mw_cluster_status_t;

/* Fills st for the whole backplane: the sums over its shards. */
void mw_cluster_status(const mw_cluster_t *cl, mw_cluster_status_t *st);

/* Fills st for shard i (below mw_cluster_shards). */
void mw_cluster_shard_status(const mw_cluster_t *cl, unsigned i, mw_cluster_status_t *st);

/* True while a shard's Redis is up and its outbox still holds messages: a
 * drain waits for them (within limits.shutdown_timeout). */
int mw_cluster_busy(const mw_cluster_t *cl);

/* A command for moonwire.redis, on the command connection of the first
 * shard. cb gets the hiredis
 * reply (a redisReply *), or NULL when Redis went away or did not answer in
 * time; it runs exactly once, unless this returns an error. Returns 0,
 * MW_EAGAIN when Redis is unavailable or too far behind (cb does not run),
 * or MW_ENOMEM. */
int mw_cluster_command(mw_cluster_t *cl, int argc, const char **argv, const size_t *argl,
                       mw_cluster_reply_cb cb, void *ud);

#endif
