/* The Redis backplane of a node: its life (start, stop), what its two
 * connections coming and going set in motion, the watchdog that looks after
 * them and the outbox, and its state for /healthz, /metrics and the app. See
 * cluster.h; the parts are cluster_redis.c (the connections), cluster_send.c
 * (the outbox), cluster_topics.c (channels, and what comes from the other
 * nodes), cluster_presence.c and cluster_history.c.
 */
#include "cluster.h"
#include "cluster_int.h"
#include "cluster_topics.h"
#include "dedup.h"
#include "node.h"
#include "registry.h"
#include "topics.h"
#include "moonwire/config.h"
#include "moonwire/error.h"
#include "moonwire/log.h"
#include "moonwire/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEDUP_ORIGINS 4096 /* origins whose numbers a node remembers */

/* What the connections report ------------------------------------------------------------- */

/* The command connection is connected: the history script goes first. */
static void on_hello(mw_rconn_t *rc)
{
    mw__cluster_history_hello(rc->ud);
}

static void on_up(mw_rconn_t *rc)
{
    mw_cluster_t *cl = rc->ud;

    if (rc->subscriber) {
        cl->sub_heard = mw__cluster_now(cl);
        cl->probe_sent = 0;
        mw__cluster_subscribe_all(cl);
    } else {
        mw__cluster_restore_presence(cl);
    }
    mw__cluster_try_sync(cl);
}

static void on_down(mw_rconn_t *rc)
{
    mw__cluster_outbox_down(rc->ud, !rc->subscriber);
}

/* Drops a connection whose oldest command has waited too long, probes a
 * quiet subscriber, and looks after the outbox. */
static void on_watchdog(mw_timer_t *t)
{
    mw_cluster_t *cl = t->data;
    uint64_t now = mw__cluster_now(cl);

    mw_rconn_check(&cl->cmd, now);
    mw_rconn_check(&cl->sub, now);
    mw__cluster_topics_tick(cl, now);
    mw__cluster_outbox_tick(cl, now);
}

static void on_heartbeat(mw_timer_t *t)
{
    mw_cluster_t *cl = t->data;
    if (cl->cmd.ready)
        mw__cluster_heartbeat(cl);
}

/* Life ------------------------------------------------------------------------------------ */

int mw_cluster_start(mw_node_t *node, const mw_redis_driver_t *driver, void *drv, char *err,
                     size_t errlen)
{
    const mw_config_t *cfg = node->cfg;
    mw_cluster_t *cl;
    int r;

    if (!mw_config_clustered(cfg))
        return 0;
    cl = calloc(1, sizeof(*cl));
    if (cl == NULL)
        return MW_ENOMEM;
    if ((r = mw_rconn_locate(cfg, &cl->url, &cl->sentinels, node, driver, drv, err, errlen)) !=
        0) {
        free(cl);
        return r;
    }
    snprintf(cl->prefix, sizeof(cl->prefix), "%s", cfg->cluster_prefix);
    snprintf(cl->name, sizeof(cl->name), "%.*s", (int)node->reg->ids.prefix_len - 1,
             node->reg->ids.prefix);
    snprintf(cl->all_channel, sizeof(cl->all_channel), "%s:all", cl->prefix);
    snprintf(cl->node_channel, sizeof(cl->node_channel), "%s:n:%s", cl->prefix, cl->name);
    snprintf(cl->node_key_prefix, sizeof(cl->node_key_prefix), "%s:node:", cl->prefix);
    mw__cluster_history_init(cl);
    cl->node = node;
    mw__cluster_outbox_init(cl);
    if (mw_dedup_init(&cl->dedup, DEDUP_ORIGINS) != 0 ||
        mw_rconn_init(&cl->sub, "subscriber", 1, &cl->url, node, driver, drv, cl) != 0 ||
        mw_rconn_init(&cl->cmd, "command", 0, &cl->url, node, driver, drv, cl) != 0) {
        mw_dedup_free(&cl->dedup);
        mw_rconn_free(&cl->sub);
        mw_sentinels_free(&cl->sentinels);
        free(cl);
        return MW_ENOMEM;
    }
    if (cl->sentinels.n > 0) {
        mw_rconn_use_sentinels(&cl->sub, &cl->sentinels);
        mw_rconn_use_sentinels(&cl->cmd, &cl->sentinels);
    }
    cl->sub.on_up = cl->cmd.on_up = on_up;
    cl->sub.on_down = cl->cmd.on_down = on_down;
    cl->cmd.on_hello = on_hello;
    mw_timer_init(&cl->watchdog, on_watchdog, cl);
    mw_timer_init(&cl->heartbeat, on_heartbeat, cl);
    snprintf(cl->node_key, sizeof(cl->node_key), "%s:node:%s", cl->prefix, cl->name);
    if (mw_timer_start(node->timers, &cl->watchdog, MW_CLUSTER_WATCHDOG_MS,
                       MW_CLUSTER_WATCHDOG_MS) != 0 ||
        mw_timer_start(node->timers, &cl->heartbeat, cfg->cluster_presence_ttl / 3,
                       cfg->cluster_presence_ttl / 3) != 0) {
        mw_timer_stop(node->timers, &cl->watchdog);
        mw_dedup_free(&cl->dedup);
        mw_rconn_free(&cl->sub);
        mw_rconn_free(&cl->cmd);
        mw_sentinels_free(&cl->sentinels);
        free(cl);
        return MW_ENOMEM;
    }
    node->topics->on_first = mw__cluster_on_first;
    node->topics->on_last = mw__cluster_on_last;
    node->topics->on_presence = mw__cluster_on_presence;
    node->topics->ud = cl;
    node->cluster = cl;
    if (cl->sentinels.n > 0)
        mw_log_info("cluster: node %s on Redis master '%s' as %zu sentinel(s) name it, first "
                    "%s:%d (channels %s:*)", cl->name, cl->sentinels.master, cl->sentinels.n,
                    cl->sentinels.at[0].host, cl->sentinels.at[0].port, cl->prefix);
    else if (cl->url.path[0] != '\0')
        mw_log_info("cluster: node %s on Redis unix:%s (channels %s:*)", cl->name, cl->url.path,
                    cl->prefix);
    else
        mw_log_info("cluster: node %s on Redis %s:%d db %d (channels %s:*)", cl->name,
                    cl->url.host, cl->url.port, cl->url.db, cl->prefix);
    mw_rconn_connect(&cl->cmd);
    mw_rconn_connect(&cl->sub);
    return 0;
}

void mw_cluster_stop(mw_node_t *node)
{
    mw_cluster_t *cl = node->cluster;
    size_t n;

    if (cl == NULL)
        return;
    cl->stopping = cl->sub.stopping = cl->cmd.stopping = 1;
    node->cluster = NULL;
    node->topics->on_first = node->topics->on_last = NULL;
    node->topics->on_presence = NULL;
    mw_rconn_stop(&cl->sub);
    mw_rconn_stop(&cl->cmd);
    /* What Redis did not take is lost: said and counted. */
    n = mw__cluster_outbox_drop_all(cl);
    if (n > 0) {
        node->metrics->cluster_outbox_dropped += n;
        mw_log_warn("cluster: stopping with %zu message(s) for the other nodes that Redis did "
                    "not take; dropped", n);
    }
    mw_timer_stop(node->timers, &cl->watchdog);
    mw_timer_stop(node->timers, &cl->heartbeat);
    mw_dedup_free(&cl->dedup);
    mw_rconn_free(&cl->sub);
    mw_rconn_free(&cl->cmd);
    mw_sentinels_free(&cl->sentinels);
    free(cl);
}

/* State ----------------------------------------------------------------------------------- */

int mw_cluster_subscribed(const mw_cluster_t *cl)
{
    return cl->sub.ready;
}

int mw_cluster_healthy(const mw_cluster_t *cl)
{
    return cl->cmd.ready && cl->sub.ready;
}

void mw_cluster_status(const mw_cluster_t *cl, mw_cluster_status_t *st)
{
    uint64_t oldest = mw_outbox_oldest(&cl->outbox), now = mw__cluster_now(cl);

    st->up = mw_cluster_healthy(cl);
    /* Not while the outbox is merely held for a round trip after a
     * reconnection with nothing in it: nothing waits then. */
    st->delayed = !st->up || mw_outbox_backlog(&cl->outbox) > 0;
    /* What the app sent; not the replays (cluster_send.c). */
    st->messages = cl->outbox.count - cl->outbox.nreplay;
    st->bytes = cl->outbox.bytes - cl->outbox.replay_bytes;
    st->oldest = oldest != 0 && now > oldest ? now - oldest : 0;
}

int mw_cluster_busy(const mw_cluster_t *cl)
{
    return cl->cmd.ready && cl->outbox.count > 0;
}

int mw_cluster_command(mw_cluster_t *cl, int argc, const char **argv, const size_t *argl,
                       mw_cluster_reply_cb cb, void *ud)
{
    return mw_rconn_command(&cl->cmd, argc, argv, argl, cb, ud);
}
