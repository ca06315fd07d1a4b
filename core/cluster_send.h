/* What a node sends the other nodes, through its outbox.
 *
 * The sends below put the message in the outbox. Each returns 0 when it went
 * to Redis at once; MW_EAGAIN when it waits in the outbox (Redis is away, or
 * earlier messages still wait): it goes out in order when Redis is back, or
 * is dropped after cluster.outbox_max_age (counted, logged); MW_ELIMIT when
 * the outbox is full (nothing was queued: the caller must not deliver
 * locally either, so that a refused message reaches nobody); MW_EINVAL when
 * a field is too long for an envelope; MW_ENOMEM.
 */
#ifndef MOONWIRE_CLUSTER_SEND_H
#define MOONWIRE_CLUSTER_SEND_H

#include "cluster_redis.h"
#include "envelope.h"
#include "frame.h"
#include "outbox.h"

#include <stddef.h>
#include <stdint.h>

typedef struct mw_cluster_s mw_cluster_t;
typedef struct mw_shard_s mw_shard_t;

/* Publishes f's payload to the other nodes' members of topic (except: the id
 * of a connection that must not get it, or NULL), through the outbox of the
 * topic's shard. Returns as above. */
int mw_cluster_publish(mw_cluster_t *cl, const char *topic, size_t len, const mw_frame_t *f,
                       const char *except, size_t except_len);

/* Broadcasts f's payload to every connection of the other nodes (through the
 * first shard). Returns as above. */
int mw_cluster_broadcast(mw_cluster_t *cl, const mw_frame_t *f, const char *except,
                         size_t except_len);

/* Sends f's payload to the connection id of another node (through the first
 * shard); MW_EINVAL when the id names no node. */
int mw_cluster_send(mw_cluster_t *cl, const char *id, size_t id_len, const mw_frame_t *f);

/* Closes the connection id (of another node) with code and reason (at most
 * 123 bytes), through the outbox like a send. Returns what mw_cluster_send
 * does. */
int mw_cluster_disconnect(mw_cluster_t *cl, const char *id, size_t id_len, uint16_t code,
                          const char *reason, size_t reason_len);

/* The backplane's files only ----------------------------------------------------------- */

/* A history message's item, sent again while it waits in the outbox after
 * its connection went (see mw_cluster_history_publish). */
typedef void (*mw_cluster_queued_cb)(void *ud);

/* Arguments of an item, by index. */
#define MW_CITEM_ENV 2         /* of a PUBLISH item: the envelope */
#define MW_CITEM_HEAD 9        /* of a script item: the envelope's head */
#define MW_CITEM_EPOCH 11      /* of a script item: a new epoch, MW_CITEM_EPOCH_DIGITS hex digits */
#define MW_CITEM_EPOCH_DIGITS 12
#define MW_CITEM_SEQ 14        /* of a script item: the number, in MW_CITEM_SEQ_DIGITS digits */
#define MW_CITEM_SEQ_DIGITS 20

/* A message for the other nodes, in the outbox until Redis replies. */
typedef struct mw_citem_s {
    mw_outbox_item_t ob;
    uint64_t seq;
    const char *script; /* a script item's text (EVALSHA, EVAL after a NOSCRIPT); NULL:
                           a PUBLISH */
    size_t script_len;
    int retried;        /* sent again as EVAL after a NOSCRIPT */
    unsigned sends;     /* times handed to a connection */
    int requeue;        /* in flight when the connection went: tell `queued` */
    mw_cluster_reply_cb cb; /* the reply, or NULL when dropped (may be NULL) */
    mw_cluster_queued_cb queued; /* may be NULL */
    void *ud;
    mw_shard_t *sh; /* whose outbox it is in */
    int argc;
    char *arg[16];
    size_t len[16];
    char data[];
} mw_citem_t;

/* A random epoch for a history topic that has none (or lost its stream):
 * MW_CITEM_EPOCH_DIGITS hex digits and a NUL into out. A script item gets
 * a new one each time it is sent again, so a Redis that came back empty
 * never starts a topic over under the epoch it had. */
void mw__cluster_epoch(char out[MW_CITEM_EPOCH_DIGITS + 1]);

/* The channel of a topic, "<prefix>:t:<topic>", into out (cap bytes); its
 * length in *n. */
void mw__cluster_channel(const mw_cluster_t *cl, const char *topic, size_t len, char *out,
                         size_t cap, size_t *n);

/* An envelope of this node of kind for f's payload, with no except or
 * target. */
void mw__cluster_fill(mw_envelope_t *e, const mw_cluster_t *cl, uint8_t kind, const mw_frame_t *f);

/* An item with copies of argc arguments; a NULL argv[i] reserves argl[i]
 * bytes, to be written into it->arg[i]. Returns NULL when memory is short. */
mw_citem_t *mw__cluster_item_new(mw_shard_t *sh, int argc, const char *const *argv,
                                 const size_t *argl);

/* Gives it the shard's next number, in its envelope and, for a script, its
 * argument. */
void mw__cluster_number(mw_shard_t *sh, mw_citem_t *it);

/* Puts it in its shard's outbox and sends what may go. Returns 0 (sent), MW_EAGAIN
 * (it waits) or MW_ELIMIT (refused: it is freed and no callback runs). */
int mw__cluster_enqueue(mw_shard_t *sh, mw_citem_t *it);

/* The outbox at the start, with its bounds and its replay window from the
 * config. */
void mw__cluster_outbox_init(mw_shard_t *sh);

/* A connection went down: nothing goes out until mw__cluster_try_sync says
 * so. With the command connection (cmd_lost), what was in flight waits
 * again, in its place, behind what Redis answered in the last
 * cluster.outbox_replay (sent again, first); the history messages whose
 * hooks waited for a reply tell them so. */
void mw__cluster_outbox_down(mw_shard_t *sh, int cmd_lost);

/* Whether the outbox may go out again: both connections up, this node's
 * channels subscribed again, and the other nodes back (or the time they
 * would need gone by). */
void mw__cluster_try_sync(mw_shard_t *sh);

/* At the stop: drops what the outbox holds (the callbacks run with no
 * reply). Returns how many messages it held. */
size_t mw__cluster_outbox_drop_all(mw_shard_t *sh);

/* Every watchdog tick: old messages out, the outbox moving, the nodes
 * counted, refusals logged. */
void mw__cluster_outbox_tick(mw_shard_t *sh, uint64_t now);

#endif
