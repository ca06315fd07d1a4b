/* Presence across nodes: who is in a topic, on every node. */
#ifndef MOONWIRE_CLUSTER_PRESENCE_H
#define MOONWIRE_CLUSTER_PRESENCE_H

#include "cluster_redis.h"

#include <stddef.h>

typedef struct mw_cluster_s mw_cluster_t;
typedef struct mw_shard_s mw_shard_t;
typedef struct mw_conn_s mw_conn_t;
typedef struct mw_topic_s mw_topic_t;

/* Asks for the cluster-wide presence of a topic (on its shard): cb gets an array reply of
 * id, info, id, info... (entries of dead nodes dropped), or NULL. Returns 0,
 * MW_EAGAIN (Redis unavailable: cb does not run) or MW_ENOMEM. */
int mw_cluster_presence(mw_cluster_t *cl, const char *topic, size_t len, mw_cluster_reply_cb cb,
                        void *ud);

/* The backplane's files only ----------------------------------------------------------- */

/* topics.c's hook (ud is the backplane): a local member's presence info in
 * t was set (info != NULL) or removed; written to Redis while it is up (it
 * is written again on reconnect). */
void mw__cluster_on_presence(void *ud, const mw_topic_t *t, const mw_conn_t *c, const char *info,
                             size_t len);

/* On a shard: the liveness key of this node (written on every shard), and a
 * TTL on the presence hashes of the shard's topics it has members in (so a
 * hash every node left goes away). */
void mw__cluster_heartbeat(mw_shard_t *sh);

/* After a shard's (re)connect: this node's presence entries of the shard's
 * topics again (Redis may be new), then the heartbeat. */
void mw__cluster_restore_presence(mw_shard_t *sh);

/* Frees what the shard remembers of presence (at the backplane's end). */
void mw__cluster_presence_free(mw_shard_t *sh);

#endif
