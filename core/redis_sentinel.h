/* Where the Redis master is, as Redis Sentinel says (cluster.sentinels,
 * cluster.master): before each connect, a connection to Redis asks the
 * sentinels in turn "SENTINEL get-master-addr-by-name <master>" over a
 * driver's link, each within cluster.connect_timeout (connect and answer),
 * and goes to the first address one gives.
 *
 * The sentinels are asked again before every reconnect; that is how a node
 * follows a failover: the old master goes away (killed, or demoted, and
 * Sentinel then kills its clients), the connection is lost, and the next
 * connect asks where the master is now. The connection checks ROLE on the
 * address it was given (cluster_redis.c), so a sentinel that has not yet
 * seen the failover sends it round again rather than onto a replica.
 */
#ifndef MOONWIRE_REDIS_SENTINEL_H
#define MOONWIRE_REDIS_SENTINEL_H

#include "redis_link.h"
#include "timer.h"

#include <stdint.h>

/* The sentinels of one master, as configured; one per owner of connections
 * (the backplane, the api queue). */
typedef struct {
    struct {
        char host[256];
        int port;
    } *at;
    size_t n;
    size_t first;         /* the one asked first: the last that answered */
    char master[256];     /* cluster.master */
    char password[256];   /* cluster.sentinel_password; "" for none */
    uint32_t timeout_ms;  /* per sentinel: connect and answer */
    mw_timers_t *timers;
    const mw_redis_driver_t *driver;
    void *drv;
} mw_sentinels_t;

/* The answer: the master's host and port, or (host NULL) none, with why. */
typedef void (*mw_sentinel_answer_cb)(void *ud, const char *host, int port, const char *why);

/* One asking, going round the sentinels: a connection to Redis holds one. */
typedef struct {
    mw_sentinels_t *set;
    const char *who; /* whose asking it is, for log lines ("command", "queue") */
    int quiet;       /* log only the answer, not each sentinel that failed */
    mw_redis_link_t *link; /* to the sentinel being asked; NULL between */
    size_t tried;    /* sentinels asked so far in this round */
    size_t current;  /* the index of the one being asked */
    mw_timer_t timer; /* the timeout of the one asked, or the step to the next */
    mw_sentinel_answer_cb cb;
    void *ud;
    char why[640]; /* why the last sentinel gave no address */
} mw_sentinel_ask_t;

/* Fills set from the configured lists (checked by the configuration).
 * Returns 0, MW_EINVAL when an address does not parse (why in err), or
 * MW_ENOMEM. */
int mw_sentinels_init(mw_sentinels_t *set, const char *const *addrs, size_t n, const char *master,
                      const char *password, uint32_t timeout_ms, mw_timers_t *timers,
                      const mw_redis_driver_t *driver, void *drv, char *err, size_t errlen);
void mw_sentinels_free(mw_sentinels_t *set);

void mw_sentinel_ask_init(mw_sentinel_ask_t *a, mw_sentinels_t *set, const char *who);

/* Starts a round: cb runs once, later (never inside this call), with the
 * first address a sentinel gives, or with none after all were asked. */
void mw_sentinel_ask(mw_sentinel_ask_t *a, mw_sentinel_answer_cb cb, void *ud);

/* Abandons a round under way (cb will not run). */
void mw_sentinel_ask_stop(mw_sentinel_ask_t *a);

#endif
