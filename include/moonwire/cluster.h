/* The Redis backplane: many nodes sharing topics, broadcasts and direct
 * sends through Redis pub/sub (hiredis on the node's own libuv loop).
 *
 * Channels, under cluster.prefix (default "mw"):
 *   <prefix>:t:<topic>   a topic; a node subscribes while it has a local member
 *   <prefix>:all         broadcasts
 *   <prefix>:n:<node>    direct sends to connections of one node incarnation
 * Every message travels in an envelope (version, kind, flags, origin node,
 * except id, target id, payload); a node drops envelopes it sent itself, as
 * it delivered those locally already. Order per publisher and topic is
 * Redis's: one command connection per node, one channel per topic.
 *
 * When Redis is away, local delivery goes on, cluster sends fail softly and
 * are counted, and both connections come back with capped, jittered backoff,
 * re-subscribing every topic that still has local members.
 */
#ifndef MOONWIRE_CLUSTER_H
#define MOONWIRE_CLUSTER_H

#include "moonwire/frame.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct mw_server_s mw_server_t;
typedef struct mw_cluster_s mw_cluster_t;

/* MW_ENV_PROBE: a node's probe of its own subscriber connection, on its own
 * channel; no node delivers it. */
enum { MW_ENV_TOPIC = 1, MW_ENV_BROADCAST = 2, MW_ENV_DIRECT = 3, MW_ENV_PROBE = 4 };

/* A decoded envelope; pointers into the message. */
typedef struct {
    uint8_t kind;
    uint8_t binary;
    uint8_t history; /* numbered by Redis: delivered by every node, the origin too */
    const char *origin;
    size_t origin_len;
    const char *except; /* connection id, or empty */
    size_t except_len;
    const char *target; /* connection id of a direct send, or empty */
    size_t target_len;
    const uint8_t *payload;
    size_t payload_len;
} mw_envelope_t;

#define MW_ENVELOPE_VERSION 1

/* Encodes an envelope into a malloc'ed buffer. Returns its length, 0 when out of memory. */
size_t mw_envelope_encode(const mw_envelope_t *e, uint8_t **out);

/* Decodes data. Returns 0, or MW_EPROTO for a wrong version or a short message. */
int mw_envelope_decode(const uint8_t *data, size_t len, mw_envelope_t *e);

/* Parses a cluster.redis address: "redis://[:password@]host[:port][/db]",
 * "unix:///path" or "unix:/path". Returns 0 or MW_EINVAL. host and path are
 * copied into the caller's buffers (256 bytes each). */
int mw_cluster_parse_url(const char *url, char *host, int *port, char *path, char *password,
                         int *db);

/* Connects the node to Redis (asynchronously) and hooks the topic index.
 * Returns 0, or MW_ECONFIG with err set for a bad address. */
int mw_cluster_start(mw_server_t *srv, uv_loop_t *loop, char *err, size_t errlen);

/* Disconnects and frees (at shutdown). Safe from a loop callback. */
void mw_cluster_stop(mw_server_t *srv);

/* True when the subscriber connection is up (messages of other nodes arrive). */
int mw_cluster_subscribed(const mw_cluster_t *cl);

/* True when both Redis connections are up. */
int mw_cluster_healthy(const mw_cluster_t *cl);

/* Publishes f's payload to the other nodes' members of topic. Returns 0, or
 * MW_EAGAIN when Redis is unavailable (counted; local delivery is the caller's). */
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
 * PUBLISH). Every node delivers it from the topic's channel, this one too,
 * so each sees the offsets in order. cb gets the array reply {offset, epoch,
 * final payload}, or NULL / an error reply (then nothing was published).
 * Returns 0 or MW_EAGAIN (cb does not run). */
int mw_cluster_history_publish(mw_cluster_t *cl, const char *topic, size_t len, const mw_frame_t *f,
                               const char *except, size_t except_len, mw_cluster_reply_cb cb,
                               void *ud);

/* Reads a topic's history after `since` (epoch NULL: any). cb gets the array
 * reply {epoch, last, recovered, payloads...}, or NULL / an error. */
int mw_cluster_history_read(mw_cluster_t *cl, const char *topic, size_t len, uint64_t since,
                            const char *epoch, size_t limit, mw_cluster_reply_cb cb, void *ud);

/* Sends f's payload to the connection id of another node. */
int mw_cluster_send(mw_cluster_t *cl, const char *id, size_t id_len, const mw_frame_t *f);

#endif
