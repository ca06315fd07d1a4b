/* Topics across nodes: the channels a node subscribes to, and what comes
 * from the other nodes. The backplane's files only (cluster.c). */
#ifndef MOONWIRE_CLUSTER_TOPICS_H
#define MOONWIRE_CLUSTER_TOPICS_H

#include <stdint.h>

typedef struct mw_cluster_s mw_cluster_t;
typedef struct mw_shard_s mw_shard_t;
typedef struct mw_topic_s mw_topic_t;

/* A shard's subscriber connection is up: subscribes to every channel this
 * node needs there (its topics on that shard, its own channel), <prefix>:all
 * last (Redis runs one connection's commands in order, so a node counted
 * among the subscribers of <prefix>:all has all its other channels; the
 * confirmation of <prefix>:all tells this node the same of itself, and
 * mw__cluster_try_sync may go on). */
void mw__cluster_subscribe_all(mw_shard_t *sh);

/* topics.c's hooks (ud is the backplane): a topic got its first local
 * member, or lost its last; its channel is subscribed to, or left, on the
 * topic's shard. */
void mw__cluster_on_first(void *ud, const mw_topic_t *t);
void mw__cluster_on_last(void *ud, const mw_topic_t *t);

/* Every watchdog tick, for each shard: probes a quiet subscriber (dropped when it heard
 * nothing, not even its probe, within cluster.command_timeout), and forgets
 * origins silent for an hour. */
void mw__cluster_topics_tick(mw_shard_t *sh, uint64_t now);

#endif
