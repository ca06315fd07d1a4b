/* Topics across nodes: a node subscribes to a topic's channel while the
 * topic has a local member (topics.c calls on_first and on_last), and to its
 * own and the broadcast channel; what arrives from the other nodes is
 * delivered here, once (dedup.h), and the subscriber connection, which sends
 * nothing, is probed when it has been quiet. See cluster_topics.h.
 */
#include "cluster_topics.h"
#include "cluster_int.h"
#include "cluster_send.h"
#include "conn.h"
#include "envelope.h"
#include "node.h"
#include "registry.h"
#include "timer.h"
#include "topics.h"
#include "moonwire/config.h"
#include "moonwire/log.h"
#include "moonwire/metrics.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROBE_IDLE_MS 1000 /* a subscriber that heard nothing this long is probed */
#define SUBSCRIBE_BATCH 512
#define DEDUP_IDLE_MS (3600 * 1000) /* an origin silent this long is forgotten */

static void on_pubsub(void *r, void *priv);

static void send_subscribe(mw_shard_t *sh, const char *verb, const char **channels,
                           const size_t *lens, int n)
{
    const char *argv[SUBSCRIBE_BATCH + 1];
    size_t argl[SUBSCRIBE_BATCH + 1];

    argv[0] = verb;
    argl[0] = strlen(verb);
    for (int i = 0; i < n; i++) {
        argv[i + 1] = channels[i];
        argl[i + 1] = lens[i];
    }
    /* Subscription replies and messages come back through on_pubsub. */
    mw_rconn_subscribe(&sh->sub, on_pubsub, sh, n + 1, argv, argl);
}

/* On the topic's shard. */
static void subscribe_one(mw_cluster_t *cl, const char *verb, const char *topic, size_t len)
{
    mw_shard_t *sh = mw__cluster_shard(cl, topic, len);
    char ch[MW_TOPIC_MAX + 80];
    const char *p = ch;
    size_t n;

    if (!sh->sub.ready)
        return; /* the next connection subscribes to what has members then */
    mw__cluster_channel(cl, topic, len, ch, sizeof(ch), &n);
    send_subscribe(sh, verb, &p, &n, 1);
}

/* Every channel this node needs on the shard, <prefix>:all last: Redis runs
 * one connection's commands in order, so a node counted among the
 * subscribers of <prefix>:all has all its other channels already (try_sync
 * relies on it), and the confirmation of <prefix>:all tells this node the
 * same of itself. The node's own channel and <prefix>:all are subscribed on
 * every shard, though only the first one carries direct sends and
 * broadcasts: on the others they carry the subscriber's probe and count the
 * nodes that are back. */
void mw__cluster_subscribe_all(mw_shard_t *sh)
{
    mw_cluster_t *cl = sh->cl;
    const mw_topics_t *ts = cl->node->topics;
    size_t topics = 0;
    static char names[SUBSCRIBE_BATCH][MW_TOPIC_MAX + 80];
    const char *chans[SUBSCRIBE_BATCH];
    size_t lens[SUBSCRIBE_BATCH];
    int n = 0;

    chans[n] = cl->node_channel;
    lens[n++] = strlen(cl->node_channel);
    for (const mw_topic_t *t = mw_topics_next(ts, NULL); t != NULL; t = mw_topics_next(ts, t)) {
        if (mw__cluster_shard(cl, t->name, t->len) != sh)
            continue;
        if (n == SUBSCRIBE_BATCH - 1) {
            send_subscribe(sh, "SUBSCRIBE", chans, lens, n);
            n = 0;
        }
        topics++;
        mw__cluster_channel(cl, t->name, t->len, names[n], sizeof(names[n]), &lens[n]);
        chans[n] = names[n];
        n++;
    }
    chans[n] = sh->cl->all_channel;
    lens[n++] = strlen(sh->cl->all_channel);
    send_subscribe(sh, "SUBSCRIBE", chans, lens, n);
    sh->resubscribing = 1;
    mw_log_info("%s: subscribed to %zu topic channel(s)", sh->tag, topics);
}

void mw__cluster_on_first(void *ud, const mw_topic_t *t)
{
    subscribe_one(ud, "SUBSCRIBE", t->name, t->len);
}

void mw__cluster_on_last(void *ud, const mw_topic_t *t)
{
    subscribe_one(ud, "UNSUBSCRIBE", t->name, t->len);
}

static void deliver(mw_shard_t *sh, const char *channel, size_t chlen, const mw_envelope_t *e)
{
    mw_cluster_t *cl = sh->cl;
    mw_node_t *node = cl->node;
    mw_conn_t *except = NULL, *target;
    mw_frame_t *f;
    size_t plen = strlen(cl->prefix);

    /* Our own messages were delivered here when they were sent; a history
     * message is delivered by every node from this channel, in offset order. */
    if (!e->history && e->origin_len == strlen(cl->name) &&
        memcmp(e->origin, cl->name, e->origin_len) == 0)
        return;
    /* Broadcasts, direct sends and closes go out on the first shard alone:
     * the node channels and <prefix>:all of the others carry only probes.
     * Two shards on one Redis server (two dbs, whose pub/sub is one, or two
     * spellings of its address) both hear the first one's: delivered from
     * the first only, and kept out of this shard's numbers. */
    if (sh->index != 0 && e->kind != MW_ENV_TOPIC)
        return;
    /* Sent again after a lost reply, and Redis had run it the first time.
     * Numbers are per origin and shard: checked against what came on this
     * shard. */
    if (!mw_dedup_check(&sh->dedup, e->origin, e->origin_len, e->seq, mw__cluster_now(cl))) {
        node->metrics->cluster_duplicates++;
        return;
    }
    f = mw_frame_new(e->binary ? MW_OP_BINARY : MW_OP_TEXT, e->payload, e->payload_len);
    if (f == NULL)
        return;
    if (e->except_len > 0)
        except = mw_registry_find(node->reg, e->except, e->except_len);
    node->metrics->cluster_received++;
    switch (e->kind) {
    case MW_ENV_TOPIC:
        if (chlen > plen + 3 && memcmp(channel + plen, ":t:", 3) == 0)
            mw_topics_publish(node->topics, channel + plen + 3, chlen - plen - 3, f, except);
        break;
    case MW_ENV_BROADCAST: {
        mw_list_t *it, *tmp;
        mw_list_foreach_safe(it, tmp, &node->reg->open)
        {
            mw_conn_t *c = MW_CONTAINER_OF(it, mw_conn_t, open_link);
            if (c != except)
                mw_conn_send(c, f);
        }
        break;
    }
    case MW_ENV_DIRECT:
        target = mw_registry_find(node->reg, e->target, e->target_len);
        if (target != NULL)
            mw_conn_send(target, f);
        break;
    case MW_ENV_CLOSE: /* the server API's disconnect, from another node */
        target = mw_registry_find(node->reg, e->target, e->target_len);
        if (target != NULL && e->payload_len >= 2 && e->payload_len <= 2 + 123)
            mw_conn_close(target, (uint16_t)(e->payload[0] << 8 | e->payload[1]),
                          (const char *)e->payload + 2, e->payload_len - 2);
        break;
    default:
        break;
    }
    mw_frame_unref(f);
}

static void on_pubsub(void *r, void *priv)
{
    mw_shard_t *sh = priv;
    redisReply *reply = r;
    mw_envelope_t e;

    if (reply == NULL)
        return;
    sh->sub_heard = mw__cluster_now(sh->cl); /* the connection is alive: see probe_subscriber */
    sh->probe_sent = 0;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING)
        return;
    if (strcmp(reply->element[0]->str, "message") != 0) {
        /* Subscribe and unsubscribe confirmations; <prefix>:all's comes last
         * after a (re)connection (subscribe_all). */
        if (sh->resubscribing && strcmp(reply->element[0]->str, "subscribe") == 0 &&
            reply->element[1]->type == REDIS_REPLY_STRING &&
            strcmp(reply->element[1]->str, sh->cl->all_channel) == 0) {
            sh->resubscribing = 0;
            mw__cluster_try_sync(sh);
        }
        return;
    }
    if (mw_envelope_decode((const uint8_t *)reply->element[2]->str, reply->element[2]->len, &e) !=
        0) {
        sh->cl->node->metrics->cluster_bad_envelopes++;
        return;
    }
    deliver(sh, reply->element[1]->str, reply->element[1]->len, &e);
}

/* A subscriber connection that a silent partition cut (a NAT or firewall
 * that forgot it, a peer gone without a reset) would look up until TCP gave
 * up, which it never does on a connection that sends nothing. So when the
 * subscriber has heard nothing for PROBE_IDLE_MS, the command connection
 * publishes a probe on this node's own channel, and a subscriber that has
 * not heard it (or anything) within cluster.command_timeout is dropped and
 * connected again, which subscribes it afresh. */
static void probe(mw_shard_t *sh, uint64_t now)
{
    mw_cluster_t *cl = sh->cl;
    mw_envelope_t e = {.kind = MW_ENV_PROBE, .origin = cl->name, .origin_len = strlen(cl->name),
                       .except = "", .target = ""};
    const char *argv[3] = {"PUBLISH", cl->node_channel};
    size_t argl[3] = {7, strlen(cl->node_channel)};
    uint8_t *buf;

    if (!sh->sub.ready || !sh->cmd.ready) {
        sh->probe_sent = 0; /* nothing to judge it by while the command side is down */
        return;
    }
    if (sh->probe_sent != 0) {
        if (now - sh->probe_sent > cl->node->cfg->cluster_command_timeout) {
            mw_log_warn("%s: the subscriber connection heard nothing, not even its probe, "
                        "for %llu ms",
                        sh->tag, (unsigned long long)(now - sh->sub_heard));
            sh->probe_sent = 0;
            mw_rconn_drop(&sh->sub, "silent");
        }
        return;
    }
    if (now - sh->sub_heard < PROBE_IDLE_MS || (argl[2] = mw_envelope_encode(&e, &buf)) == 0)
        return;
    argv[2] = (const char *)buf;
    if (mw_rconn_fire(&sh->cmd, 3, argv, argl) == 0)
        sh->probe_sent = now;
    free(buf);
}

void mw__cluster_topics_tick(mw_shard_t *sh, uint64_t now)
{
    probe(sh, now);
    if (now - sh->dedup_swept >= 60000) {
        mw_dedup_expire(&sh->dedup, now, DEDUP_IDLE_MS);
        sh->dedup_swept = now;
    }
}
