/* History across nodes: a Redis stream per topic, written by one script per
 * message and read by another. */
#ifndef MOONWIRE_CLUSTER_HISTORY_H
#define MOONWIRE_CLUSTER_HISTORY_H

#include "cluster_redis.h"
#include "cluster_send.h"
#include "frame.h"

#include <stddef.h>
#include <stdint.h>

typedef struct mw_cluster_s mw_cluster_t;
typedef struct mw_shard_s mw_shard_t;

/* Publishes f to a topic with history (one atomic script: offset, XADD,
 * PUBLISH), through the outbox. Every node delivers it from the topic's
 * channel, this one too, so each sees the offsets in order. cb runs once
 * when the message leaves the outbox: with the array reply {offset, epoch,
 * final payload} (offset 0: Redis had it already, from a send whose reply
 * was lost), an error reply (nothing was published), or NULL when it was
 * dropped (too old, or the node stops). queued runs each time the message
 * was sent but its connection went before the reply: it waits in the outbox
 * again. Returns as mw_cluster_publish (cluster_send.h); on MW_ELIMIT,
 * MW_EINVAL and MW_ENOMEM neither callback runs. */
int mw_cluster_history_publish(mw_cluster_t *cl, const char *topic, size_t len, const mw_frame_t *f,
                               const char *except, size_t except_len, mw_cluster_reply_cb cb,
                               mw_cluster_queued_cb queued, void *ud);

/* Reads a topic's history after `since` (epoch NULL: any), at most limit
 * messages. cb gets the array reply {epoch, last, recovered, payloads...}, or
 * NULL or an error reply. Returns 0, MW_EAGAIN (Redis unavailable: cb does
 * not run) or MW_ENOMEM. */
int mw_cluster_history_read(mw_cluster_t *cl, const char *topic, size_t len, uint64_t since,
                            const char *epoch, size_t limit, mw_cluster_reply_cb cb, void *ud);

/* The backplane's files only ----------------------------------------------------------- */

/* The command connection is connected: the publish script is loaded first,
 * so that every EVALSHA of the outbox finds it. */
void mw__cluster_history_hello(mw_shard_t *sh);

/* At the start: the SHA-1 of the publish script, for its EVALSHA. */
void mw__cluster_history_init(mw_cluster_t *cl);

#endif
