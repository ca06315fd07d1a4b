/* Private to the cluster*.c files: the backplane of a node, as its parts
 * share it. From the bottom up: the Redis connections (cluster_redis.c),
 * what the node sends the others through its outbox (cluster_send.c), then
 * the topic channels and what comes from the other nodes
 * (cluster_topics.c), presence (cluster_presence.c) and history
 * (cluster_history.c), and the backplane's life on top (cluster.c).
 *
 * cluster.redis names one Redis or several (shards, shard.h): each shard
 * has its own two connections, outbox, envelope numbers and dedup of what
 * arrives on it. A topic's channel, presence and history are on its shard;
 * the node channels, broadcasts, liveness keys' readers and the api queue
 * on shard 0 (the liveness key is written on every shard, as its presence
 * and history scripts look for it there).
 */
#ifndef MOONWIRE_CLUSTER_INT_H
#define MOONWIRE_CLUSTER_INT_H

#include "cluster_redis.h"
#include "dedup.h"
#include "htab.h"
#include "node.h"
#include "outbox.h"
#include "redis_url.h"
#include "shard.h"
#include "timer.h"

#include <stddef.h>
#include <stdint.h>

typedef struct mw_cluster_s mw_cluster_t;
typedef struct mw_shard_s mw_shard_t;

/* How often the watchdog looks at the connections and the outbox. */
#define MW_CLUSTER_WATCHDOG_MS 250

/* One Redis of the backplane: its connections, outbox and dedup. */
struct mw_shard_s {
    mw_cluster_t *cl;
    unsigned index;    /* in cluster.redis */
    char tag[32];      /* log lines: "cluster", or "cluster shard 1" among several */
    char names[2][32]; /* its connections' names: subscriber, command */
    mw_redis_url_t url;
    char where[300];     /* for /healthz and the app: host:port, unix:path, master NAME */
    mw_rconn_t sub, cmd; /* the subscriber, and the commands */
    uint64_t sub_heard;  /* when the subscriber last got anything (ms) */
    uint64_t probe_sent; /* when the probe it has not heard yet went out; 0: none */
    int checking;        /* its <prefix>:shards is being compared (cluster.c) */

    /* Sending (cluster_send.c). */
    mw_outbox_t outbox;
    uint64_t seq;         /* the number of the last envelope made on this shard */
    int synced;           /* the outbox may go out: see mw__cluster_try_sync */
    int resubscribing;    /* the subscriber has not yet confirmed its channels since it came up */
    uint64_t sync_since;  /* when both connections were up again, with an outbox to send */
    uint64_t peers;       /* subscribers of <prefix>:all when last counted while synced */
    uint64_t peers_at;    /* when that was; 0: never */
    int counting;         /* a PUBSUB NUMSUB is out */
    int pumping;
    uint64_t delayed_since; /* when messages started to wait; 0 while they go out at once */
    size_t delayed_count;   /* messages that waited since then */
    uint64_t refused_logged; /* when the last "outbox is full" line went */
    size_t refused_unlogged;

    /* Presence (cluster_presence.c): the topics whose entries of this node
     * could not be removed while the shard was down, cleared on reconnect. */
    mw_htab_t presence_gone; /* of mw_presence_gone_t; no buckets until the first */
    int presence_gone_full;  /* one more did not fit (told once) */

    /* Receiving (cluster_topics.c): numbers are per shard, so what arrives
     * on this shard's subscriber is checked against this shard's table. */
    mw_dedup_t dedup;
    uint64_t dedup_swept;
};

struct mw_cluster_s {
    mw_node_t *node;
    mw_sentinels_t sentinels; /* n 0: each shard's url is where its Redis is */
    char prefix[64];
    char name[64]; /* this node incarnation, as ids spell it ("n1.k3x9a2") */
    char all_channel[96];
    char node_channel[160];
    mw_timer_t watchdog;
    mw_timer_t heartbeat;     /* keeps this node's liveness key (presence) fresh */
    char node_key[160];       /* <prefix>:node:<node> */
    char node_key_prefix[96]; /* <prefix>:node: */
    char publish_sha[41];     /* SHA-1 of the history publish script */
    int stopping;
    char shards_key[80];    /* <prefix>:shards: see check_shards in cluster.c */
    char shards_value[40];  /* "<count>:<digest of the list>" */
    char shards_other[40];  /* another node's, as last logged */
    unsigned nshards;
    mw_shard_t shards[MW_SHARDS_MAX];
};

/* The node's clock, in ms. */
static inline uint64_t mw__cluster_now(const mw_cluster_t *cl)
{
    return cl->node->timers->now;
}

/* The shard a topic lives on. */
static inline mw_shard_t *mw__cluster_shard(mw_cluster_t *cl, const char *topic, size_t len)
{
    return &cl->shards[mw_shard_of(topic, len, cl->nshards)];
}

#endif
