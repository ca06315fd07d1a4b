/* A connection to Redis for the backplane, over a link of a Redis driver
 * (redis_link.h: hiredis in the server, the in-process Redis in the sim): a
 * bounded connect, reconnection with capped, jittered backoff on the node's
 * timers, and the send times of the commands awaiting replies, so that one
 * left unanswered for cluster.command_timeout drops the connection (hiredis
 * 0.14 has no timeouts of its own).
 *
 * A link that reports a failed connect or its end is gone: the pointer here
 * is cleared then, and a link is only freed by us outside its callbacks. A
 * connection reports up (cluster.c) through its callbacks: on_hello, on_up,
 * on_down.
 */
#ifndef MOONWIRE_CLUSTER_REDIS_H
#define MOONWIRE_CLUSTER_REDIS_H

#include "redis_link.h"
#include "redis_sentinel.h"
#include "redis_url.h"
#include "timer.h"

#include <stddef.h>
#include <stdint.h>

typedef struct mw_node_s mw_node_t;
typedef struct mw_config_s mw_config_t;
typedef struct mw_rconn_s mw_rconn_t;

/* Commands in flight on one connection; past it senders are told MW_EAGAIN
 * and the outbox holds the rest back. */
#define MW_RCONN_PENDING_MAX 65536

/* A reply to a command: a redisReply *, or NULL when Redis went away or did
 * not answer in time. */
typedef void (*mw_cluster_reply_cb)(void *ud, void *reply);

struct mw_rconn_s {
    const char *name;          /* "subscriber" or "command", for log lines */
    int subscriber;            /* pub/sub mode: no SELECT, no on_hello */
    const mw_redis_url_t *url; /* where Redis is; with sentinels, its password and db */
    mw_node_t *node;           /* cfg: its timeouts and backoff; metrics; timers */
    const mw_redis_driver_t *driver;
    void *drv; /* the driver's own: the loop for hiredis */
    /* Connected (after AUTH and SELECT, before the PING whose reply makes it
     * up): the first commands to queue on it. May be NULL. */
    void (*on_hello)(mw_rconn_t *rc);
    /* Up: authenticated, selected, answering. */
    void (*on_up)(mw_rconn_t *rc);
    /* Lost (or a connect that failed after it was up): the commands still
     * waiting have run with no reply; it reconnects on its own. */
    void (*on_down)(mw_rconn_t *rc);
    void *ud;     /* for the callbacks: the backplane */
    int stopping; /* the node stops: no reconnect */

    /* With sentinels (NULL: url is the address): asked before each connect,
     * and what they said, the address connected to (its ROLE is checked). */
    mw_sentinels_t *sentinels;
    mw_sentinel_ask_t ask;
    mw_redis_url_t at;

    mw_redis_link_t *link; /* NULL while down */
    int ready;             /* connected, authenticated, (subscribed) */
    mw_timer_t timer;      /* connect timeout, then reconnect backoff */
    uint32_t backoff_ms;
    /* Send times of the commands awaiting replies, oldest first (a ring). */
    uint64_t *sent;
    uint32_t head, count;
};

/* Sets up rc (down) with its name, mode, address and owner; the caller sets
 * the callbacks. Returns 0 or MW_ENOMEM. */
int mw_rconn_init(mw_rconn_t *rc, const char *name, int subscriber, const mw_redis_url_t *url,
                  mw_node_t *node, const mw_redis_driver_t *driver, void *drv, void *ud);

/* Where Redis is, from the configuration: the URL of shard (0 for one
 * Redis) of cluster.redis into url (n of sentinels 0), or cluster.sentinels
 * into sentinels (url then holds cluster.password; sentinels find one Redis,
 * shard 0). Returns 0, or MW_ECONFIG / MW_ENOMEM with err set. */
int mw_rconn_locate(const mw_config_t *cfg, size_t shard, mw_redis_url_t *url,
                    mw_sentinels_t *sentinels, mw_node_t *node, const mw_redis_driver_t *driver,
                    void *drv, char *err, size_t errlen);

/* Connects through the sentinels (set up by mw_rconn_locate; they must
 * outlive rc) rather than to url's address; before mw_rconn_connect. */
void mw_rconn_use_sentinels(mw_rconn_t *rc, mw_sentinels_t *sentinels);

/* Starts connecting (asynchronously; failures retry with backoff). */
void mw_rconn_connect(mw_rconn_t *rc);

/* Drops a live connection (why is logged): down first, since the pending
 * callbacks run inside the free and may resume hooks that send again, which
 * must see Redis as gone. */
void mw_rconn_drop(mw_rconn_t *rc, const char *why);

/* The watchdog: drops the connection when its oldest command has waited
 * more than cluster.command_timeout at now (ms). */
void mw_rconn_check(mw_rconn_t *rc, uint64_t now);

/* At the stop: frees the link (the pending callbacks run with no reply),
 * stops the timer and marks rc down for good. */
void mw_rconn_stop(mw_rconn_t *rc);

/* Frees what mw_rconn_init made, once it is stopped. */
void mw_rconn_free(mw_rconn_t *rc);

/* Sends a command whose reply comes to cb(reply, priv), which must call
 * mw_rconn_replied first. The arguments are copied. Returns 0, or MW_EAGAIN
 * when the connection is going (cb will not run). */
int mw_rconn_send(mw_rconn_t *rc, mw_redis_cb cb, void *priv, int argc, const char **argv,
                  const size_t *argl);

/* SUBSCRIBE or UNSUBSCRIBE on the subscriber: the confirmations and the
 * messages come to cb(reply, priv), untimed (the subscriber's probe watches
 * it). Returns 0, or MW_EAGAIN when the connection is down or going. */
int mw_rconn_subscribe(mw_rconn_t *rc, mw_redis_cb cb, void *priv, int argc, const char **argv,
                       const size_t *argl);

/* A reply of a command sent with mw_rconn_send came (or the connection went). */
void mw_rconn_replied(mw_rconn_t *rc);

/* Sends a command whose reply only counts as a failure or not. Returns 0, or
 * MW_EAGAIN (a failure counted) while rc is down or too far behind. */
int mw_rconn_fire(mw_rconn_t *rc, int argc, const char **argv, const size_t *argl);

/* Sends a command whose reply goes to cb (exactly once, unless this returns
 * an error). Returns 0, MW_EAGAIN when rc is down or too far behind (cb does
 * not run), or MW_ENOMEM. */
int mw_rconn_command(mw_rconn_t *rc, int argc, const char **argv, const size_t *argl,
                     mw_cluster_reply_cb cb, void *ud);

/* Runs a script with argc arguments after it (numkeys, keys, args: copied):
 * EVALSHA, then EVAL with its text if Redis lacks it. cb gets the reply.
 * Returns 0, MW_EAGAIN (rc down, too far behind, or over 14 arguments; cb
 * does not run) or MW_ENOMEM. */
int mw_rconn_script(mw_rconn_t *rc, const char *script, size_t script_len, int argc,
                    const char **argv, const size_t *argl, mw_cluster_reply_cb cb, void *ud);

/* The SHA-1 of a script's text, in hex, for EVALSHA. */
void mw_rconn_sha1(const char *text, size_t len, char out[41]);

#endif
