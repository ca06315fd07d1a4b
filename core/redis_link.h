/* The seam between the backplane and a Redis server: a link is one
 * connection to Redis that carries commands and brings back their replies
 * as hiredis's redisReply trees. The backplane (cluster_redis.c and above)
 * only talks to Redis through a driver of links; the server's driver is
 * hiredis on the node's libuv loop (redis_hiredis.c), moonwire.sim's is an
 * in-process Redis (sim_redis.c), so both run the same envelopes, outbox,
 * dedup, origin check and history scripts.
 *
 * A driver behaves as hiredis's asynchronous API does: nothing it reports
 * runs inside the call that asked for it (a connect, a command), replies come
 * in the order of the commands of one link, and a link that goes away gives
 * every command still waiting a NULL reply.
 */
#ifndef MOONWIRE_REDIS_LINK_H
#define MOONWIRE_REDIS_LINK_H

#include "redis_url.h"

#include <stddef.h>

typedef struct mw_redis_link_s mw_redis_link_t;

/* A reply (a redisReply *, freed by the driver once this returns), or NULL
 * when the link went before it came. For SUBSCRIBE and UNSUBSCRIBE it runs
 * for each confirmation and each message of the channels, as in hiredis. */
typedef void (*mw_redis_cb)(void *reply, void *priv);

/* What a link reports up, to its owner (ud). */
typedef struct {
    /* Connected (ok) or not (ok == 0, why says what failed); once. */
    void (*on_connect)(void *ud, int ok, const char *why);
    /* A connected link went (ok: closed on request; else why). The commands
     * still waiting have had their NULL replies. Never after a free. */
    void (*on_disconnect)(void *ud, int ok, const char *why);
} mw_redis_events_t;

typedef struct mw_redis_driver_s {
    const char *name;
    /* Starts connecting to url. Returns the link, or NULL with why set when
     * it failed at once (on_connect will not run). */
    mw_redis_link_t *(*connect)(void *drv, const mw_redis_url_t *url, const mw_redis_events_t *ev,
                                void *ud, const char **why);
    /* Sends a command (the arguments are copied). Returns 0, or -1 when the
     * link is going (cb will not run). */
    int (*send)(mw_redis_link_t *l, int argc, const char **argv, const size_t *argl, mw_redis_cb cb,
                void *priv);
    /* Closes once the replies owed have come; on_disconnect(ok) follows. */
    void (*disconnect)(mw_redis_link_t *l);
    /* Frees the link now: the callbacks still waiting run with NULL, and
     * on_disconnect does not. */
    void (*free)(mw_redis_link_t *l);
} mw_redis_driver_t;

#endif
