/* Private to the cluster*.c files: the backplane of a node, as its parts
 * share it. From the bottom up: the Redis connections (cluster_redis.c),
 * what the node sends the others through its outbox (cluster_send.c), then
 * the topic channels and what comes from the other nodes
 * (cluster_topics.c), presence (cluster_presence.c) and history
 * (cluster_history.c), and the backplane's life on top (cluster.c).
 */
#ifndef MOONWIRE_CLUSTER_INT_H
#define MOONWIRE_CLUSTER_INT_H

#include "cluster_redis.h"
#include "dedup.h"
#include "outbox.h"
#include "node.h"
#include "redis_url.h"
#include "timer.h"

#include <stddef.h>
#include <stdint.h>

typedef struct mw_cluster_s mw_cluster_t;

/* How often the watchdog looks at the connections and the outbox. */
#define MW_CLUSTER_WATCHDOG_MS 250

struct mw_cluster_s {
    mw_node_t *node;
    mw_redis_url_t url;
    mw_sentinels_t sentinels; /* n 0: url is where Redis is */
    char prefix[64];
    char name[64]; /* this node incarnation, as ids spell it ("n1.k3x9a2") */
    char all_channel[96];
    char node_channel[160];
    mw_rconn_t sub, cmd; /* the subscriber, and the commands */
    mw_timer_t watchdog;
    uint64_t sub_heard;   /* when the subscriber last got anything (ms) */
    uint64_t probe_sent;  /* when the probe it has not heard yet went out; 0: none */
    mw_timer_t heartbeat; /* keeps this node's liveness key (presence) fresh */
    char node_key[160];   /* <prefix>:node:<node> */
    char node_key_prefix[96]; /* <prefix>:node: */
    char publish_sha[41];     /* SHA-1 of the history publish script */
    int stopping;

    /* Sending (cluster_send.c). */
    mw_outbox_t outbox;
    uint64_t seq;         /* the number of the last envelope made */
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

    /* Receiving (cluster_topics.c). */
    mw_dedup_t dedup;
    uint64_t dedup_swept;
};

/* The node's clock, in ms. */
static inline uint64_t mw__cluster_now(const mw_cluster_t *cl)
{
    return cl->node->timers->now;
}

#endif
