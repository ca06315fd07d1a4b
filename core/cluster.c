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

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEDUP_ORIGINS 4096 /* origins whose numbers a node remembers */

/* What the connections report (rc->ud is their shard) ------------------------------------- */

/* The command connection is connected: the history script goes first. */
static void on_hello(mw_rconn_t *rc)
{
    mw__cluster_history_hello(rc->ud);
}

static void on_up(mw_rconn_t *rc)
{
    mw_shard_t *sh = rc->ud;

    if (rc->subscriber) {
        sh->sub_heard = mw__cluster_now(sh->cl);
        sh->probe_sent = 0;
        mw__cluster_subscribe_all(sh);
    } else {
        mw__cluster_restore_presence(sh);
    }
    mw__cluster_try_sync(sh);
}

static void on_down(mw_rconn_t *rc)
{
    mw__cluster_outbox_down(rc->ud, !rc->subscriber);
}

/* For each shard: drops a connection whose oldest command has waited too
 * long, probes a quiet subscriber, and looks after the outbox. */
static void on_watchdog(mw_timer_t *t)
{
    mw_cluster_t *cl = t->data;
    uint64_t now = mw__cluster_now(cl);

    for (unsigned i = 0; i < cl->nshards; i++) {
        mw_shard_t *sh = &cl->shards[i];
        mw_rconn_check(&sh->cmd, now);
        mw_rconn_check(&sh->sub, now);
        mw__cluster_topics_tick(sh, now);
        mw__cluster_outbox_tick(sh, now);
    }
}

/* Nodes that list different shards place topics differently: each node
 * with shards keeps "<count>:<digest of the list>" in <prefix>:shards on
 * every shard (set when absent or equal, with the liveness TTL), and is told
 * what is there; another value is another list, logged once. On every
 * shard, as two lists may not even agree on which is the first. */
static const char shards_script[] =
    "local v = redis.call('GET', KEYS[1])\n"
    "if not v or v == ARGV[1] then\n"
    "  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])\n"
    "  return ARGV[1]\n"
    "end\n"
    "return v\n";

static void on_shards_checked(void *ud, void *reply)
{
    mw_shard_t *sh = ud;
    mw_cluster_t *cl = sh->cl;
    const redisReply *r = reply;

    sh->checking = 0;
    if (r == NULL || r->type != REDIS_REPLY_STRING)
        return;
    if (strcmp(r->str, cl->shards_value) == 0) {
        cl->shards_other[0] = '\0';
        return;
    }
    if (strncmp(r->str, cl->shards_other, sizeof(cl->shards_other) - 1) == 0)
        return; /* said already */
    snprintf(cl->shards_other, sizeof(cl->shards_other), "%.*s", (int)r->len, r->str);
    mw_log_error("cluster: another node lists other shards in cluster.redis (%s:shards is "
                 "'%s', this node's list '%s'): topics are placed differently, and messages "
                 "of some do not cross between them; give every node the same list in the "
                 "same order", cl->prefix, cl->shards_other, cl->shards_value);
}

static void check_shards(mw_shard_t *sh)
{
    mw_cluster_t *cl = sh->cl;
    char ttl[24];
    const char *argv[4] = {"1", cl->shards_key, cl->shards_value, ttl};
    size_t argl[4] = {1, strlen(cl->shards_key), strlen(cl->shards_value), 0};

    if (cl->nshards < 2 || sh->checking)
        return;
    argl[3] = (size_t)snprintf(ttl, sizeof(ttl), "%u",
                               (cl->node->cfg->cluster_presence_ttl + 999) / 1000);
    if (mw_rconn_script(&sh->cmd, shards_script, sizeof(shards_script) - 1, 4, argv, argl,
                        on_shards_checked, sh) == 0)
        sh->checking = 1;
}

static void on_heartbeat(mw_timer_t *t)
{
    mw_cluster_t *cl = t->data;
    for (unsigned i = 0; i < cl->nshards; i++) {
        if (cl->shards[i].cmd.ready) {
            mw__cluster_heartbeat(&cl->shards[i]);
            check_shards(&cl->shards[i]);
        }
    }
}

/* Life ------------------------------------------------------------------------------------ */

/* Frees what shard_init made (after its connections stopped). */
static void shard_free(mw_shard_t *sh)
{
    mw__cluster_presence_free(sh);
    mw_dedup_free(&sh->dedup);
    mw_rconn_free(&sh->sub);
    mw_rconn_free(&sh->cmd);
}

static int shard_init(mw_cluster_t *cl, unsigned index, const mw_redis_driver_t *driver, void *drv)
{
    mw_shard_t *sh = &cl->shards[index];
    mw_node_t *node = cl->node;

    sh->cl = cl;
    sh->index = index;
    if (cl->nshards > 1) {
        snprintf(sh->tag, sizeof(sh->tag), "cluster shard %u", index);
        snprintf(sh->names[0], sizeof(sh->names[0]), "shard %u subscriber", index);
        snprintf(sh->names[1], sizeof(sh->names[1]), "shard %u command", index);
    } else {
        snprintf(sh->tag, sizeof(sh->tag), "cluster");
        snprintf(sh->names[0], sizeof(sh->names[0]), "subscriber");
        snprintf(sh->names[1], sizeof(sh->names[1]), "command");
    }
    {
        const mw_redis_url_t *u = &sh->url;
        char where[sizeof(sh->where)];
        if (cl->sentinels.n > 0)
            snprintf(where, sizeof(where), "master %s", cl->sentinels.master);
        else if (u->path[0] != '\0')
            snprintf(where, sizeof(where), "unix:%s", u->path);
        else
            snprintf(where, sizeof(where), "%s:%d", u->host, u->port);
        memcpy(sh->where, where, sizeof(where));
    }
    mw__cluster_outbox_init(sh);
    if (mw_dedup_init(&sh->dedup, DEDUP_ORIGINS) != 0 ||
        mw_rconn_init(&sh->sub, sh->names[0], 1, &sh->url, node, driver, drv, sh) != 0 ||
        mw_rconn_init(&sh->cmd, sh->names[1], 0, &sh->url, node, driver, drv, sh) != 0) {
        shard_free(sh);
        return MW_ENOMEM;
    }
    if (cl->sentinels.n > 0) {
        mw_rconn_use_sentinels(&sh->sub, &cl->sentinels);
        mw_rconn_use_sentinels(&sh->cmd, &cl->sentinels);
    }
    sh->sub.on_up = sh->cmd.on_up = on_up;
    sh->sub.on_down = sh->cmd.on_down = on_down;
    sh->cmd.on_hello = on_hello;
    return 0;
}

static void log_shard(const mw_cluster_t *cl, const mw_shard_t *sh)
{
    char where[48] = "";

    if (cl->nshards > 1)
        snprintf(where, sizeof(where), " (shard %u of %u)", sh->index, cl->nshards);
    if (cl->sentinels.n > 0)
        mw_log_info("cluster: node %s on Redis master '%s' as %zu sentinel(s) name it, first "
                    "%s:%d (channels %s:*)",
                    cl->name, cl->sentinels.master, cl->sentinels.n, cl->sentinels.at[0].host,
                    cl->sentinels.at[0].port, cl->prefix);
    else if (sh->url.path[0] != '\0')
        mw_log_info("cluster: node %s on Redis unix:%s%s (channels %s:*)", cl->name, sh->url.path,
                    where, cl->prefix);
    else
        mw_log_info("cluster: node %s on Redis %s:%d db %d%s (channels %s:*)", cl->name,
                    sh->url.host, sh->url.port, sh->url.db, where, cl->prefix);
}

static void cluster_free(mw_cluster_t *cl, unsigned shards)
{
    for (unsigned i = 0; i < shards; i++)
        shard_free(&cl->shards[i]);
    mw_sentinels_free(&cl->sentinels);
    free(cl);
}

int mw_cluster_start(mw_node_t *node, const mw_redis_driver_t *driver, void *drv, char *err,
                     size_t errlen)
{
    const mw_config_t *cfg = node->cfg;
    mw_cluster_t *cl;
    unsigned i;
    int r;

    if (!mw_config_clustered(cfg))
        return 0;
    cl = calloc(1, sizeof(*cl));
    if (cl == NULL)
        return MW_ENOMEM;
    cl->node = node;
    cl->nshards = cfg->cluster_redis.n > 1 ? (unsigned)cfg->cluster_redis.n : 1;
    if (cl->nshards > MW_SHARDS_MAX) {
        snprintf(err, errlen, "config: 'cluster.redis' lists more than %d Redis servers",
                 MW_SHARDS_MAX);
        free(cl);
        return MW_ECONFIG;
    }
    for (i = 0; i < cl->nshards; i++) {
        mw_sentinels_t none, *s = i == 0 ? &cl->sentinels : &none;
        if ((r = mw_rconn_locate(cfg, i, &cl->shards[i].url, s, node, driver, drv, err, errlen)) !=
            0) {
            mw_sentinels_free(&cl->sentinels);
            free(cl);
            return r;
        }
    }
    snprintf(cl->prefix, sizeof(cl->prefix), "%s", cfg->cluster_prefix);
    snprintf(cl->name, sizeof(cl->name), "%.*s", (int)node->reg->ids.prefix_len - 1,
             node->reg->ids.prefix);
    snprintf(cl->all_channel, sizeof(cl->all_channel), "%s:all", cl->prefix);
    snprintf(cl->node_channel, sizeof(cl->node_channel), "%s:n:%s", cl->prefix, cl->name);
    snprintf(cl->node_key_prefix, sizeof(cl->node_key_prefix), "%s:node:", cl->prefix);
    snprintf(cl->node_key, sizeof(cl->node_key), "%s:node:%s", cl->prefix, cl->name);
    snprintf(cl->shards_key, sizeof(cl->shards_key), "%s:shards", cl->prefix);
    snprintf(cl->shards_value, sizeof(cl->shards_value), "%u:%016llx", cl->nshards,
             (unsigned long long)mw_shard_digest((const char *const *)cfg->cluster_redis.items,
                                                 cfg->cluster_redis.n));
    mw__cluster_history_init(cl);
    for (i = 0; i < cl->nshards; i++) {
        if (shard_init(cl, i, driver, drv) != 0) {
            cluster_free(cl, i);
            return MW_ENOMEM;
        }
    }
    mw_timer_init(&cl->watchdog, on_watchdog, cl);
    mw_timer_init(&cl->heartbeat, on_heartbeat, cl);
    if (mw_timer_start(node->timers, &cl->watchdog, MW_CLUSTER_WATCHDOG_MS,
                       MW_CLUSTER_WATCHDOG_MS) != 0 ||
        mw_timer_start(node->timers, &cl->heartbeat, cfg->cluster_presence_ttl / 3,
                       cfg->cluster_presence_ttl / 3) != 0) {
        mw_timer_stop(node->timers, &cl->watchdog);
        cluster_free(cl, cl->nshards);
        return MW_ENOMEM;
    }
    node->topics->on_first = mw__cluster_on_first;
    node->topics->on_last = mw__cluster_on_last;
    node->topics->on_presence = mw__cluster_on_presence;
    node->topics->ud = cl;
    node->cluster = cl;
    for (i = 0; i < cl->nshards; i++) {
        log_shard(cl, &cl->shards[i]);
        mw_rconn_connect(&cl->shards[i].cmd);
        mw_rconn_connect(&cl->shards[i].sub);
    }
    return 0;
}

void mw_cluster_stop(mw_node_t *node)
{
    mw_cluster_t *cl = node->cluster;
    size_t n = 0;

    if (cl == NULL)
        return;
    cl->stopping = 1;
    for (unsigned i = 0; i < cl->nshards; i++)
        cl->shards[i].sub.stopping = cl->shards[i].cmd.stopping = 1;
    node->cluster = NULL;
    node->topics->on_first = node->topics->on_last = NULL;
    node->topics->on_presence = NULL;
    for (unsigned i = 0; i < cl->nshards; i++) {
        mw_rconn_stop(&cl->shards[i].sub);
        mw_rconn_stop(&cl->shards[i].cmd);
    }
    /* What Redis did not take is lost: said and counted. */
    for (unsigned i = 0; i < cl->nshards; i++)
        n += mw__cluster_outbox_drop_all(&cl->shards[i]);
    if (n > 0) {
        node->metrics->cluster_outbox_dropped += n;
        mw_log_warn("cluster: stopping with %zu message(s) for the other nodes that Redis did "
                    "not take; dropped", n);
    }
    mw_timer_stop(node->timers, &cl->watchdog);
    mw_timer_stop(node->timers, &cl->heartbeat);
    cluster_free(cl, cl->nshards);
}

/* State ----------------------------------------------------------------------------------- */

int mw_cluster_topic_subscribed(mw_cluster_t *cl, const char *topic, size_t len)
{
    return mw__cluster_shard(cl, topic, len)->sub.ready;
}

static int shard_up(const mw_shard_t *sh)
{
    return sh->cmd.ready && sh->sub.ready;
}

int mw_cluster_healthy(const mw_cluster_t *cl)
{
    for (unsigned i = 0; i < cl->nshards; i++)
        if (!shard_up(&cl->shards[i]))
            return 0;
    return 1;
}

unsigned mw_cluster_shards(const mw_cluster_t *cl)
{
    return cl->nshards;
}

void mw_cluster_shard_status(const mw_cluster_t *cl, unsigned i, mw_cluster_status_t *st)
{
    const mw_shard_t *sh = &cl->shards[i];
    uint64_t oldest = mw_outbox_oldest(&sh->outbox), now = mw__cluster_now(cl);

    st->up = shard_up(sh);
    /* Not while the outbox is merely held for a round trip after a
     * reconnection with nothing in it: nothing waits then. */
    st->delayed = !st->up || mw_outbox_backlog(&sh->outbox) > 0;
    /* What the app sent; not the replays (cluster_send.c). */
    st->messages = sh->outbox.count - sh->outbox.nreplay;
    st->bytes = sh->outbox.bytes - sh->outbox.replay_bytes;
    st->oldest = oldest != 0 && now > oldest ? now - oldest : 0;
    st->down = st->up ? 0 : 1u << i;
    st->where = sh->where;
}

void mw_cluster_status(const mw_cluster_t *cl, mw_cluster_status_t *st)
{
    mw_cluster_status_t one;

    memset(st, 0, sizeof(*st));
    st->up = 1;
    for (unsigned i = 0; i < cl->nshards; i++) {
        mw_cluster_shard_status(cl, i, &one);
        st->up &= one.up;
        st->delayed |= one.delayed;
        st->messages += one.messages;
        st->bytes += one.bytes;
        st->down |= one.down;
        if (one.oldest > st->oldest)
            st->oldest = one.oldest;
    }
}

int mw_cluster_busy(const mw_cluster_t *cl)
{
    for (unsigned i = 0; i < cl->nshards; i++)
        if (cl->shards[i].cmd.ready && cl->shards[i].outbox.count > 0)
            return 1;
    return 0;
}

int mw_cluster_command(mw_cluster_t *cl, int argc, const char **argv, const size_t *argl,
                       mw_cluster_reply_cb cb, void *ud)
{
    return mw_rconn_command(&cl->shards[0].cmd, argc, argv, argl, cb, ud);
}
