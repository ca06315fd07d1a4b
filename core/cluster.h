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
 */
#ifndef MOONWIRE_CLUSTER_H
#define MOONWIRE_CLUSTER_H

#include "frame.h"
#include "outbox.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct mw_node_s mw_node_t;
typedef struct mw_cluster_s mw_cluster_t;

/* MW_ENV_PROBE: a node's probe of its own subscriber connection, on its own
 * channel; no node delivers it. */
enum { MW_ENV_TOPIC = 1, MW_ENV_BROADCAST = 2, MW_ENV_DIRECT = 3, MW_ENV_PROBE = 4 };

/* A decoded envelope; pointers into the message. */
typedef struct {
    uint8_t kind;
    uint8_t binary;
    uint8_t history; /* numbered by Redis: delivered by every node, the origin too */
    uint64_t seq;    /* the origin's number for it, 1, 2, 3...; 0 for a probe */
    const char *origin;
    size_t origin_len;
    const char *except; /* connection id, or empty */
    size_t except_len;
    const char *target; /* connection id of a direct send, or empty */
    size_t target_len;
    const uint8_t *payload;
    size_t payload_len;
} mw_envelope_t;

#define MW_ENVELOPE_VERSION 2
#define MW_ENVELOPE_SEQ_AT 3 /* where the 8 bytes of seq (big-endian) start */

/* The encoded length of e, or 0 when a field is over 255 bytes. */
size_t mw_envelope_size(const mw_envelope_t *e);

/* Writes e into out, which holds mw_envelope_size(e) bytes. */
void mw_envelope_write(const mw_envelope_t *e, uint8_t *out);

/* Encodes an envelope into a malloc'ed buffer. Returns its length, 0 when out of memory. */
size_t mw_envelope_encode(const mw_envelope_t *e, uint8_t **out);

/* Decodes data. Returns 0, or MW_EPROTO for a wrong version or a short message. */
int mw_envelope_decode(const uint8_t *data, size_t len, mw_envelope_t *e);

/* Parses a cluster.redis address: "redis://[:password@]host[:port][/db]",
 * "unix:///path" or "unix:/path". Returns 0 or MW_EINVAL. host and path are
 * copied into the caller's buffers (256 bytes each). */
int mw_cluster_parse_url(const char *url, char *host, int *port, char *path, char *password,
                         int *db);

/* Connects the node to Redis (asynchronously), hooks the topic index, and
 * sets node->cluster; does nothing without cluster.redis. Returns 0, or
 * MW_ECONFIG with err set for a bad address, or MW_ENOMEM. */
int mw_cluster_start(mw_node_t *node, uv_loop_t *loop, char *err, size_t errlen);

/* Disconnects and frees node->cluster, if any (at shutdown). Safe from a
 * loop callback. */
void mw_cluster_stop(mw_node_t *node);

/* True when the subscriber connection is up (messages of other nodes arrive). */
int mw_cluster_subscribed(const mw_cluster_t *cl);

/* True when both Redis connections are up. */
int mw_cluster_healthy(const mw_cluster_t *cl);

/* What the backplane is doing, for moonwire.cluster(), /healthz and /metrics. */
typedef struct {
    int up;          /* both Redis connections are up */
    int delayed;     /* messages to other nodes wait: Redis is away, or the outbox is not out */
    size_t messages; /* in the outbox, in flight included */
    size_t bytes;
    uint64_t oldest; /* ms the oldest of them has waited; 0 when empty */
} mw_cluster_status_t;

void mw_cluster_status(const mw_cluster_t *cl, mw_cluster_status_t *st);

/* True while Redis is up and the outbox still holds messages: a drain waits
 * for them (within limits.shutdown_timeout). */
int mw_cluster_busy(const mw_cluster_t *cl);

/* The sends below put the message in the outbox. Each returns 0 when it went
 * to Redis at once; MW_EAGAIN when it waits in the outbox (Redis is away, or
 * earlier messages still wait): it goes out in order when Redis is back, or
 * is dropped after cluster.outbox_max_age (counted, logged); MW_ELIMIT when
 * the outbox is full (nothing was queued: the caller must not deliver
 * locally either, so that a refused message reaches nobody); MW_ENOMEM. */

/* Publishes f's payload to the other nodes' members of topic. */
int mw_cluster_publish(mw_cluster_t *cl, const char *topic, size_t len, const mw_frame_t *f,
                       const char *except, size_t except_len);

/* Broadcasts f's payload to every connection of the other nodes. */
int mw_cluster_broadcast(mw_cluster_t *cl, const mw_frame_t *f, const char *except,
                         size_t except_len);

/* A command for moonwire.redis, on the command connection. cb gets the hiredis
 * reply (a redisReply *), or NULL when Redis went away or did not answer in
 * time; it runs exactly once, unless this returns an error. Returns 0, or
 * MW_EAGAIN when Redis is unavailable (cb does not run). */
typedef void (*mw_cluster_reply_cb)(void *ud, void *reply);
int mw_cluster_command(mw_cluster_t *cl, int argc, const char **argv, const size_t *argl,
                       mw_cluster_reply_cb cb, void *ud);

/* Asks for the cluster-wide presence of a topic: cb gets an array reply of
 * id, info, id, info... (entries of dead nodes dropped), or NULL. Returns 0
 * or MW_EAGAIN. */
int mw_cluster_presence(mw_cluster_t *cl, const char *topic, size_t len, mw_cluster_reply_cb cb,
                        void *ud);

/* Publishes f to a topic with history (one atomic script: offset, XADD,
 * PUBLISH), through the outbox. Every node delivers it from the topic's
 * channel, this one too, so each sees the offsets in order. cb runs once
 * when the message leaves the outbox: with the array reply {offset, epoch,
 * final payload} (offset 0: Redis had it already, from a send whose reply
 * was lost), an error reply (nothing was published), or NULL when it was
 * dropped (too old, or the node stops). queued runs each time the message
 * was sent but its connection went before the reply: it waits in the outbox
 * again. Returns as mw_cluster_publish; on MW_ELIMIT and MW_ENOMEM neither
 * callback runs. */
typedef void (*mw_cluster_queued_cb)(void *ud);
int mw_cluster_history_publish(mw_cluster_t *cl, const char *topic, size_t len, const mw_frame_t *f,
                               const char *except, size_t except_len, mw_cluster_reply_cb cb,
                               mw_cluster_queued_cb queued, void *ud);

/* Reads a topic's history after `since` (epoch NULL: any). cb gets the array
 * reply {epoch, last, recovered, payloads...}, or NULL / an error. */
int mw_cluster_history_read(mw_cluster_t *cl, const char *topic, size_t len, uint64_t since,
                            const char *epoch, size_t limit, mw_cluster_reply_cb cb, void *ud);

/* Sends f's payload to the connection id of another node; MW_EINVAL when the
 * id names no node. */
int mw_cluster_send(mw_cluster_t *cl, const char *id, size_t id_len, const mw_frame_t *f);

#endif
