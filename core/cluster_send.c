/* What a node sends the other nodes: envelopes (numbered per origin) for
 * topics, broadcasts and direct sends, and history messages (made by
 * cluster_history.c), all items of the outbox (outbox.h), handed to the
 * command connection in order while the outbox may go, and kept until Redis
 * has replied. See cluster_send.h.
 *
 * Every message for the other nodes is an item of the outbox: a PUBLISH of
 * its envelope, or the history publish script. It is numbered (the
 * envelope's seq) when it is made, handed to the command connection in
 * order when the outbox may go out (`synced`), and removed when its reply
 * comes; a connection lost first makes it unsent again, and receivers drop
 * what they had already (dedup.h), so each message is delivered once.
 *
 * Redis answers a PUBLISH before it has written the message to each
 * subscriber's socket: a Redis killed in between has answered a message
 * that some nodes never get. So an answered PUBLISH is kept for
 * cluster.outbox_replay (without its callback: its sender had the answer)
 * and a lost command connection sends the kept ones again, first; the nodes
 * that had them drop them. Not a history topic's script: its message has
 * an offset, and a Redis that lost it starts a new epoch, which tells
 * clients that what came before is gone; sent again into that epoch it
 * would take an offset that the nodes which had it never show.
 *
 * `synced` goes to 0 when either connection goes down. It comes back in
 * mw__cluster_try_sync once both are up, this node's own channels are
 * subscribed again, and, if the outbox holds anything, the other nodes are
 * back too: a PUBLISH reaches only subscribers that are there, and after an
 * outage of Redis every node reconnects on its own backoff. A healthy node
 * counts the subscribers of <prefix>:all every second (the nodes, itself
 * included); after an outage it sends the outbox when as many are
 * subscribed again, or when the longest a node can take to come back has
 * passed (reconnect_max with its jitter, plus connect_timeout): a node that
 * has not is gone.
 */
#include "cluster_send.h"
#include "cluster_int.h"
#include "envelope.h"
#include "frame.h"
#include "node.h"
#include "topics.h"
#include "moonwire/config.h"
#include "moonwire/error.h"
#include "moonwire/log.h"
#include "moonwire/metrics.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <uv.h>

#define PEERS_EVERY_MS 1000       /* how often a healthy node counts the nodes on Redis */
#define REFUSED_LOG_EVERY_MS 1000 /* at most one "outbox is full" line this often */

void mw__cluster_channel(const mw_cluster_t *cl, const char *topic, size_t len, char *out,
                         size_t cap, size_t *n)
{
    int w = snprintf(out, cap, "%s:t:%.*s", cl->prefix, (int)len, topic);
    *n = w < (int)cap ? (size_t)w : cap - 1;
}

void mw__cluster_fill(mw_envelope_t *e, const mw_cluster_t *cl, uint8_t kind, const mw_frame_t *f)
{
    memset(e, 0, sizeof(*e));
    e->kind = kind;
    e->binary = (f->bytes[0] & 0x0f) == MW_OP_BINARY;
    e->origin = cl->name;
    e->origin_len = strlen(cl->name);
    e->payload = mw_frame_payload(f);
    e->payload_len = mw_frame_payload_len(f);
    e->except = e->target = "";
}

void mw__cluster_epoch(char out[MW_CITEM_EPOCH_DIGITS + 1])
{
    uint32_t rnd;

    if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd))
        rnd = (uint32_t)uv_hrtime();
    snprintf(out, MW_CITEM_EPOCH_DIGITS + 1, "%08x%04x", rnd, (unsigned)(uv_hrtime() & 0xffff));
}

#define ITEM(o) MW_CONTAINER_OF(o, mw_citem_t, ob)

mw_citem_t *mw__cluster_item_new(mw_shard_t *sh, int argc, const char *const *argv,
                                 const size_t *argl)
{
    size_t total = 0, off = 0;
    mw_citem_t *it;

    for (int i = 0; i < argc; i++)
        total += argl[i];
    it = malloc(sizeof(*it) + total);
    if (it == NULL)
        return NULL;
    memset(it, 0, sizeof(*it));
    it->sh = sh;
    it->argc = argc;
    it->ob.size = sizeof(*it) + total;
    for (int i = 0; i < argc; i++) {
        it->arg[i] = it->data + off;
        it->len[i] = argl[i];
        if (argv[i] != NULL && argl[i] > 0)
            memcpy(it->arg[i], argv[i], argl[i]);
        off += argl[i];
    }
    return it;
}

void mw__cluster_number(mw_shard_t *sh, mw_citem_t *it)
{
    it->seq = ++sh->seq;
    if (it->script != NULL) {
        char digits[MW_CITEM_SEQ_DIGITS + 1];
        mw_envelope_put_seq((uint8_t *)it->arg[MW_CITEM_HEAD] + MW_ENVELOPE_SEQ_AT, it->seq);
        snprintf(digits, sizeof(digits), "%0*llu", MW_CITEM_SEQ_DIGITS,
                 (unsigned long long)it->seq);
        memcpy(it->arg[MW_CITEM_SEQ], digits, MW_CITEM_SEQ_DIGITS);
    } else {
        mw_envelope_put_seq((uint8_t *)it->arg[MW_CITEM_ENV] + MW_ENVELOPE_SEQ_AT, it->seq);
    }
}

static void pump(mw_shard_t *sh);
static void on_item_reply(void *r, void *priv);

static int item_send(mw_shard_t *sh, mw_citem_t *it)
{
    const char *argv[16];
    size_t argl[16];

    for (int i = 0; i < it->argc; i++) {
        argv[i] = it->arg[i];
        argl[i] = it->len[i];
    }
    if (it->script != NULL && it->sends++ > 0) {
        /* Sent before: it may be what made its topic's epoch in a Redis
         * that has since come back empty; not that epoch again. */
        char epoch[MW_CITEM_EPOCH_DIGITS + 1];
        mw__cluster_epoch(epoch);
        memcpy(it->arg[MW_CITEM_EPOCH], epoch, MW_CITEM_EPOCH_DIGITS);
    }
    if (it->script != NULL && !it->retried) {
        argv[1] = sh->cl->publish_sha, argl[1] = 40;
    } else if (it->script != NULL) {
        argv[0] = "EVAL", argl[0] = 4;
        argv[1] = it->script, argl[1] = it->script_len;
    }
    /* MW_EAGAIN: the connection is going; it stays for the next one. */
    return mw_rconn_send(&sh->cmd, on_item_reply, it, it->argc, argv, argl);
}

static void on_item_reply(void *r, void *priv)
{
    mw_citem_t *it = priv;
    mw_shard_t *sh = it->sh;
    redisReply *reply = r;
    mw_cluster_reply_cb cb;
    void *ud;

    mw_rconn_replied(&sh->cmd);
    if (reply == NULL)
        return; /* the connection went: the item stays (outbox_down, or the stop, deals with it) */
    if (reply->type == REDIS_REPLY_ERROR && it->script != NULL && !it->retried &&
        strncmp(reply->str, "NOSCRIPT", 8) == 0) {
        /* Someone flushed the scripts (each connection loads it first): the
         * text once. It did not run, and later messages may have: a new
         * number, or receivers would take it for one they had. */
        it->retried = 1;
        mw__cluster_number(sh, it);
        item_send(sh, it);
        return;
    }
    cb = it->cb;
    ud = it->ud;
    if (reply->type == REDIS_REPLY_ERROR) {
        sh->cl->node->metrics->cluster_send_failures++;
        mw_log_warn("%s: Redis refused a message for the other nodes: %s", sh->tag, reply->str);
    } else if (!it->ob.replay) {
        sh->cl->node->metrics->cluster_published++;
    }
    if (reply->type != REDIS_REPLY_ERROR && it->script == NULL) {
        /* Kept for a replay (or freed), told nothing more. */
        it->cb = NULL;
        it->queued = NULL;
        it->ud = NULL;
        mw_outbox_answered(&sh->outbox, &it->ob, mw__cluster_now(sh->cl));
    } else {
        mw_outbox_remove(&sh->outbox, &it->ob);
        free(it);
    }
    if (cb != NULL)
        cb(ud, reply);
    pump(sh);
}

static void on_item_dropped(mw_outbox_item_t *o, void *ud)
{
    mw_citem_t *it = ITEM(o);
    (void)ud;
    if (it->cb != NULL)
        it->cb(it->ud, NULL);
    free(it);
}

/* Hands the outbox to Redis from its head while it may go out, after
 * dropping what waited too long. */
static void pump(mw_shard_t *sh)
{
    const mw_config_t *cfg = sh->cl->node->cfg;
    mw_outbox_item_t *o;
    uint64_t now = mw__cluster_now(sh->cl);
    size_t dropped;

    if (sh->pumping)
        return; /* a callback below sent something: the loop here takes it */
    sh->pumping = 1;
    sh->outbox.max_bytes = cfg->cluster_outbox_size; /* a reload may change these */
    sh->outbox.max_age = cfg->cluster_outbox_max_age;
    sh->outbox.keep = cfg->cluster_outbox_replay;
    dropped = mw_outbox_expire(&sh->outbox, now, on_item_dropped, sh);
    if (dropped > 0) {
        sh->cl->node->metrics->cluster_outbox_dropped += dropped;
        mw_log_warn("%s: dropped %zu message(s) for the other nodes that waited for Redis "
                    "longer than cluster.outbox_max_age (%u ms)",
                    sh->tag, dropped, cfg->cluster_outbox_max_age);
    }
    if (sh->synced && sh->cmd.ready) {
        while ((o = mw_outbox_peek(&sh->outbox)) != NULL && sh->cmd.count < MW_RCONN_PENDING_MAX) {
            if (item_send(sh, ITEM(o)) != 0)
                break;
            mw_outbox_sent(&sh->outbox, o);
        }
    }
    if (sh->delayed_since != 0 && sh->synced && mw_outbox_backlog(&sh->outbox) == 0) {
        mw_log_info("%s: the outbox is out: %zu message(s) for the other nodes waited, "
                    "for up to %llu ms",
                    sh->tag, sh->delayed_count, (unsigned long long)(now - sh->delayed_since));
        sh->delayed_since = 0;
        sh->delayed_count = 0;
    }
    sh->pumping = 0;
}

static void log_refused(mw_shard_t *sh, uint64_t now)
{
    if (sh->refused_unlogged == 0)
        return;
    mw_log_warn("%s: the outbox is full (%zu message(s), %zu of %zu bytes of "
                "cluster.outbox_size): %zu message(s) for the other nodes refused",
                sh->tag, sh->outbox.count, sh->outbox.bytes, sh->outbox.max_bytes,
                sh->refused_unlogged);
    sh->refused_unlogged = 0;
    sh->refused_logged = now;
}

int mw__cluster_enqueue(mw_shard_t *sh, mw_citem_t *it)
{
    uint64_t now = mw__cluster_now(sh->cl);

    sh->outbox.max_bytes = sh->cl->node->cfg->cluster_outbox_size;
    if (sh->cl->stopping || mw_outbox_push(&sh->outbox, &it->ob, now) != 0) {
        free(it);
        sh->cl->node->metrics->cluster_outbox_refused++;
        sh->refused_unlogged++;
        if (now - sh->refused_logged >= REFUSED_LOG_EVERY_MS)
            log_refused(sh, now);
        return MW_ELIMIT;
    }
    pump(sh);
    if (it->ob.sent) /* its reply can not have come yet */
        return 0;
    sh->delayed_count++;
    if (sh->delayed_since == 0 && !sh->pumping) {
        sh->delayed_since = now;
        mw_log_warn("%s: messages for the other nodes wait in the outbox (%s)", sh->tag,
                    !(sh->cmd.ready && sh->sub.ready)
                        ? "Redis unavailable"
                        : "waiting for the other nodes to be back on Redis");
    }
    return MW_EAGAIN;
}

void mw__cluster_outbox_init(mw_shard_t *sh)
{
    const mw_config_t *cfg = sh->cl->node->cfg;

    mw_outbox_init(&sh->outbox, cfg->cluster_outbox_size, cfg->cluster_outbox_max_age);
    mw_outbox_keep(&sh->outbox, cfg->cluster_outbox_replay, on_item_dropped, sh);
}

void mw__cluster_outbox_down(mw_shard_t *sh, int cmd_lost)
{
    mw_list_t *l;
    size_t replayed = 0;

    sh->synced = 0;
    sh->sync_since = 0;
    if (!cmd_lost || (sh->outbox.nsent == 0 && sh->outbox.nkept == 0))
        goto out;
    for (l = sh->outbox.items.next; l != sh->outbox.next; l = l->next)
        ITEM(MW_CONTAINER_OF(l, mw_outbox_item_t, link))->requeue = 1;
    mw_outbox_rewind(&sh->outbox, mw__cluster_now(sh->cl), &replayed);
    if (replayed > 0) {
        sh->cl->node->metrics->cluster_outbox_replayed += replayed;
        mw_log_info("%s: %zu message(s) Redis answered in the last %u ms before the "
                    "connection went will be sent again (the nodes that had them drop them)",
                    sh->tag, replayed, sh->cl->node->cfg->cluster_outbox_replay);
    }
    /* A hook woken here may publish: the pump it calls must not drop or
     * free items under this walk. */
    sh->pumping = 1;
    for (l = sh->outbox.items.next; l != &sh->outbox.items; l = l->next) {
        mw_citem_t *it = ITEM(MW_CONTAINER_OF(l, mw_outbox_item_t, link));
        if (it->requeue) {
            it->requeue = 0;
            if (it->queued != NULL)
                it->queued(it->ud);
        }
    }
    sh->pumping = 0;
out:
    if (sh->outbox.count > sh->outbox.nreplay && sh->delayed_since == 0) {
        sh->delayed_since = mw__cluster_now(sh->cl);
        sh->delayed_count = sh->outbox.count - sh->outbox.nreplay;
        mw_log_warn("%s: %zu message(s) for the other nodes wait in the outbox (Redis "
                    "unavailable)",
                    sh->tag, sh->delayed_count);
    }
}

static uint64_t resync_wait(const mw_shard_t *sh)
{
    const mw_config_t *cfg = sh->cl->node->cfg;
    return (uint64_t)cfg->cluster_reconnect_max * 6 / 5 + cfg->cluster_connect_timeout +
           MW_CLUSTER_WATCHDOG_MS;
}

static void set_synced(mw_shard_t *sh)
{
    sh->synced = 1;
    sh->sync_since = 0;
    if (mw_outbox_backlog(&sh->outbox) > 0)
        mw_log_info("%s: sending the outbox to the other nodes: %zu message(s), %zu bytes", sh->tag,
                    mw_outbox_backlog(&sh->outbox), sh->outbox.bytes);
    pump(sh);
}

static void on_peers(void *ud, void *reply)
{
    mw_shard_t *sh = ud;
    const redisReply *r = reply;
    uint64_t n;

    sh->counting = 0;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[1]->type != REDIS_REPLY_INTEGER || sh->cl->stopping)
        return;
    n = (uint64_t)r->element[1]->integer;
    if (sh->synced) {
        sh->peers = n;
        sh->peers_at = mw__cluster_now(sh->cl);
    } else if (sh->peers_at != 0 && n >= sh->peers && sh->sync_since != 0) {
        mw_log_info("%s: the %llu node(s) on Redis before are back", sh->tag,
                    (unsigned long long)n);
        set_synced(sh);
    }
}

/* Asks Redis how many nodes listen on <prefix>:all (see on_peers). */
static void count_peers(mw_shard_t *sh)
{
    const char *argv[3] = {"PUBSUB", "NUMSUB", sh->cl->all_channel};
    size_t argl[3] = {6, 6, strlen(sh->cl->all_channel)};

    if (!sh->counting && mw_rconn_command(&sh->cmd, 3, argv, argl, on_peers, sh) == 0)
        sh->counting = 1;
}

void mw__cluster_try_sync(mw_shard_t *sh)
{
    uint64_t now;

    if (sh->synced || sh->cl->stopping || !sh->cmd.ready || !sh->sub.ready || sh->resubscribing)
        return;
    if (sh->outbox.count == 0) {
        set_synced(sh);
        return;
    }
    now = mw__cluster_now(sh->cl);
    if (sh->sync_since == 0)
        sh->sync_since = now;
    if (now - sh->sync_since >= resync_wait(sh)) {
        if (sh->peers_at != 0)
            mw_log_warn("%s: fewer nodes are back on Redis than the %llu before, after "
                        "%llu ms; the others would be back by now",
                        sh->tag, (unsigned long long)sh->peers,
                        (unsigned long long)(now - sh->sync_since));
        set_synced(sh);
        return;
    }
    if (sh->peers_at != 0)
        count_peers(sh);
}

void mw__cluster_outbox_tick(mw_shard_t *sh, uint64_t now)
{
    pump(sh);
    if (!sh->synced)
        mw__cluster_try_sync(sh);
    else if (sh->cmd.ready && (sh->peers_at == 0 || now - sh->peers_at >= PEERS_EVERY_MS))
        count_peers(sh);
    if (now - sh->refused_logged >= REFUSED_LOG_EVERY_MS)
        log_refused(sh, now);
}

static int publish_envelope(mw_shard_t *sh, const char *channel, size_t chlen,
                            const mw_envelope_t *e)
{
    size_t n = mw_envelope_size(e);
    const char *argv[3] = {"PUBLISH", channel, NULL};
    size_t argl[3] = {7, chlen, n};
    mw_citem_t *it;

    if (n == 0)
        return MW_EINVAL;
    it = mw__cluster_item_new(sh, 3, argv, argl);
    if (it == NULL)
        return MW_ENOMEM;
    mw_envelope_write(e, (uint8_t *)it->arg[MW_CITEM_ENV]);
    mw__cluster_number(sh, it);
    return mw__cluster_enqueue(sh, it);
}

int mw_cluster_publish(mw_cluster_t *cl, const char *topic, size_t len, const mw_frame_t *f,
                       const char *except, size_t except_len)
{
    mw_shard_t *sh = mw__cluster_shard(cl, topic, len);
    char ch[MW_TOPIC_MAX + 80];
    size_t n;
    mw_envelope_t e;

    mw__cluster_fill(&e, cl, MW_ENV_TOPIC, f);
    e.except = except ? except : "";
    e.except_len = except ? except_len : 0;
    mw__cluster_channel(cl, topic, len, ch, sizeof(ch), &n);
    return publish_envelope(sh, ch, n, &e);
}

int mw_cluster_broadcast(mw_cluster_t *cl, const mw_frame_t *f, const char *except,
                         size_t except_len)
{
    mw_shard_t *sh = &cl->shards[0]; /* broadcasts are on the first shard */
    mw_envelope_t e;
    mw__cluster_fill(&e, cl, MW_ENV_BROADCAST, f);
    e.except = except ? except : "";
    e.except_len = except ? except_len : 0;
    return publish_envelope(sh, sh->cl->all_channel, strlen(sh->cl->all_channel), &e);
}

/* An envelope of kind for the connection id, on its node's channel (on the
 * first shard). */
static int send_direct(mw_cluster_t *cl, const char *id, size_t id_len, uint8_t kind,
                       const mw_frame_t *f)
{
    char ch[160];
    const char *dot = NULL;
    mw_envelope_t e;
    int n;

    /* The node part of an id is everything before its last dot. */
    for (size_t i = id_len; i > 0; i--) {
        if (id[i - 1] == '.') {
            dot = id + i - 1;
            break;
        }
    }
    if (dot == NULL || dot == id || id_len > 255)
        return MW_EINVAL;
    n = snprintf(ch, sizeof(ch), "%s:n:%.*s", cl->prefix, (int)(dot - id), id);
    if (n < 0 || (size_t)n >= sizeof(ch))
        return MW_EINVAL;
    mw__cluster_fill(&e, cl, kind, f);
    e.target = id;
    e.target_len = id_len;
    return publish_envelope(&cl->shards[0], ch, (size_t)n, &e);
}

int mw_cluster_send(mw_cluster_t *cl, const char *id, size_t id_len, const mw_frame_t *f)
{
    return send_direct(cl, id, id_len, MW_ENV_DIRECT, f);
}

int mw_cluster_disconnect(mw_cluster_t *cl, const char *id, size_t id_len, uint16_t code,
                          const char *reason, size_t reason_len)
{
    uint8_t buf[2 + 123];
    mw_frame_t *f;
    int r;

    if (reason_len > 123)
        return MW_EINVAL;
    buf[0] = (uint8_t)(code >> 8);
    buf[1] = (uint8_t)(code & 0xff);
    memcpy(buf + 2, reason, reason_len);
    f = mw_frame_new(MW_OP_BINARY, buf, 2 + reason_len);
    if (f == NULL)
        return MW_ENOMEM;
    r = send_direct(cl, id, id_len, MW_ENV_CLOSE, f);
    mw_frame_unref(f);
    return r;
}

size_t mw__cluster_outbox_drop_all(mw_shard_t *sh)
{
    return mw_outbox_clear(&sh->outbox, on_item_dropped, sh);
}
