/* The queue in: the server API's commands as entries of one Redis stream
 * (queue.stream), consumed by every node of a cluster in one consumer group
 * (queue.group), one consumer per node incarnation, so that each entry is
 * applied by one node.
 *
 * A connection of its own (XREADGROUP ... BLOCK would hold up the
 * backplane's command connection): the group is made at each connect
 * (XGROUP CREATE ... 0 MKSTREAM; BUSYGROUP is fine), then one read at a time
 * of up to queue.read_count new entries, while fewer than
 * queue.max_pending are being applied. Each entry (fields `method` and
 * `params`, JSON) runs as the HTTP API's commands do (api_methods.c), and is
 * acknowledged (XACK, on the command connection) once applied, or at once
 * when it is bad (no method, bad JSON, unknown method, refused): counted and
 * logged through a gate, never retried. An entry that failed for want of
 * Redis (503) is left pending, unless Redis has delivered it
 * queue.max_deliveries times already (its delivery count, from XPENDING on
 * the queue's connection): then it is acknowledged there, counted as
 * dropped and logged through a gate. Entries that a consumer left pending for
 * queue.claim_after (a node that died, or such a failure) are claimed with
 * XAUTOCLAIM by whichever node asks first (a delivery more), and applied
 * there.
 */
#include "api_queue.h"
#include "api_methods.h"
#include "cluster.h"
#include "cluster_redis.h"
#include "conn.h"
#include "node.h"
#include "registry.h"
#include "timer.h"
#include "moonwire/config.h"
#include "moonwire/error.h"
#include "moonwire/log.h"
#include "moonwire/metrics.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TICK_MS 250

struct mw_queue_s {
    mw_node_t *node;
    mw_redis_url_t url;
    mw_sentinels_t sentinels; /* n 0: url is where Redis is */
    mw_rconn_t rc;
    mw_timer_t tick;   /* the connection's watchdog, and the claims (the node's timers) */
    char consumer[64]; /* this node incarnation */
    char claim_from[48]; /* XAUTOCLAIM's cursor */
    uint64_t claimed_at; /* when the last claim went out (ms) */
    int group_made;    /* XGROUP CREATE answered on this connection */
    int reading;       /* an XREADGROUP (or the XGROUP) is out */
    int claiming;      /* an XAUTOCLAIM is out */
    uint32_t applying; /* entries being applied */
    uint32_t checking; /* of which, failed ones whose delivery count is asked: no claim
                          meanwhile, so that one past queue.max_deliveries is not
                          claimed again before its XACK */
    int stopping;
    mw_log_gate_t bad_gate;
    mw_log_gate_t drop_gate;
};

/* One entry being applied. */
typedef struct {
    mw_queue_t *q;
    char id[48];
    int method;
} entry_t;

static void read_more(mw_queue_t *q);

static void maybe_free(mw_queue_t *q)
{
    if (q->stopping && q->applying == 0) {
        mw_rconn_free(&q->rc);
        mw_sentinels_free(&q->sentinels);
        free(q);
    }
}

/* what: "refused and acknowledged", or "left pending" (for want of Redis). */
static void log_bad(mw_queue_t *q, const char *id, const char *what, const char *why,
                    size_t why_len)
{
    uint64_t held;
    char more[64];

    if (mw_log_gate_pass(&q->bad_gate, 1000, &held))
        mw_log_warn("queue: entry %s of %s %s: %.*s%s", id, q->node->cfg->queue_stream, what,
                    (int)(why_len > 200 ? 200 : why_len), why,
                    mw_log_held_back(held, more, sizeof(more)));
}

static void on_acked(void *ud, void *reply)
{
    mw_node_t *node = ud;
    redisReply *r = reply;
    if (r == NULL || r->type == REDIS_REPLY_ERROR)
        node->metrics->queue_read_failures++;
}

static void ack(mw_queue_t *q, const char *id)
{
    mw_node_t *node = q->node;
    const mw_config_t *cfg = node->cfg;
    const char *argv[4] = {"XACK", cfg->queue_stream, cfg->queue_group, id};
    size_t argl[4] = {4, strlen(argv[1]), strlen(argv[2]), strlen(id)};

    if (node->cluster == NULL ||
        mw_cluster_command(node->cluster, 4, argv, argl, on_acked, node) != 0)
        node->metrics->queue_read_failures++; /* left pending: claimed again later */
}

/* The end of an entry: the next ones may be read. Frees e. */
static void done(entry_t *e)
{
    mw_queue_t *q = e->q;

    q->applying--;
    free(e);
    if (q->stopping)
        maybe_free(q);
    else
        read_more(q);
}

/* XPENDING's answer for an entry that failed for want of Redis:
 * [[id, consumer, idle, deliveries]]. Past queue.max_deliveries it is
 * acknowledged and dropped; else it stays pending, to be claimed again. */
static void on_deliveries(void *reply, void *priv)
{
    entry_t *e = priv;
    mw_queue_t *q = e->q;
    const mw_config_t *cfg = q->node->cfg;
    redisReply *r = reply;
    const redisReply *p;

    mw_rconn_replied(&q->rc);
    q->checking--;
    if (q->stopping) {
        done(e);
        return;
    }
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        if (r == NULL || r->type == REDIS_REPLY_ERROR)
            q->node->metrics->queue_read_failures++;
        done(e); /* pending: its count is read again at its next failure */
        return;
    }
    p = r->elements == 1 ? r->element[0] : NULL;
    if (p != NULL && p->type == REDIS_REPLY_ARRAY && p->elements >= 4 &&
        p->element[3]->type == REDIS_REPLY_INTEGER &&
        p->element[3]->integer >= (long long)cfg->queue_max_deliveries) {
        const char *argv[4] = {"XACK", cfg->queue_stream, cfg->queue_group, e->id};
        size_t argl[4] = {4, strlen(argv[1]), strlen(argv[2]), strlen(e->id)};
        uint64_t held;
        char more[64];

        if (mw_rconn_command(&q->rc, 4, argv, argl, on_acked, q->node) != 0) {
            q->node->metrics->queue_read_failures++;
            done(e); /* pending: dropped at its next failure */
            return;
        }
        q->node->metrics->queue_dropped++;
        if (mw_log_gate_pass(&q->drop_gate, 1000, &held))
            mw_log_warn("queue: entry %s of %s failed for want of Redis on %lld deliveries "
                        "(queue.max_deliveries): acknowledged and dropped%s",
                        e->id, cfg->queue_stream, p->element[3]->integer,
                        mw_log_held_back(held, more, sizeof(more)));
    }
    done(e);
}

/* An entry that failed for want of Redis (503): stays pending unless it has
 * been delivered queue.max_deliveries times (asked with XPENDING). Takes e. */
static void failed_for_redis(mw_queue_t *q, entry_t *e)
{
    const mw_config_t *cfg = q->node->cfg;
    const char *argv[6] = {"XPENDING", cfg->queue_stream, cfg->queue_group, e->id, e->id, "1"};
    size_t argl[6] = {8, strlen(argv[1]), strlen(argv[2]), strlen(e->id), strlen(e->id), 1};

    if (mw_rconn_send(&q->rc, on_deliveries, e, 6, argv, argl) != 0) {
        done(e); /* pending: its count is read again at its next failure */
        return;
    }
    q->checking++;
}

static void on_applied(void *ud, int status, const char *body, size_t len)
{
    entry_t *e = ud;
    mw_queue_t *q = e->q;
    mw_metrics_t *m = q->node->metrics;

    m->api[e->method][mw_api_status_index(status)]++;
    if (!q->stopping) {
        if (status == 200) {
            m->queue_applied++;
            ack(q, e->id);
        } else if (status == 503) {
            /* Redis or the outbox failed it: pending, to be claimed again,
             * up to queue.max_deliveries times. The entry still counts as
             * applying until that is known. */
            log_bad(q, e->id, "left pending", body, len);
            failed_for_redis(q, e);
            return;
        } else {
            m->queue_bad++;
            log_bad(q, e->id, "refused and acknowledged", body, len);
            ack(q, e->id);
        }
    }
    done(e);
}

static const redisReply *field(const redisReply *fields, const char *name)
{
    size_t n = strlen(name);
    if (fields == NULL || fields->type != REDIS_REPLY_ARRAY)
        return NULL;
    for (size_t i = 0; i + 1 < fields->elements; i += 2) {
        const redisReply *k = fields->element[i];
        if (k->type == REDIS_REPLY_STRING && k->len == n && memcmp(k->str, name, n) == 0)
            return fields->element[i + 1]->type == REDIS_REPLY_STRING ? fields->element[i + 1]
                                                                      : NULL;
    }
    return NULL;
}

/* One entry of a reply: [id, [field, value, ...]] (fields nil once deleted). */
static void apply(mw_queue_t *q, const redisReply *entry)
{
    const redisReply *id, *method, *params;
    entry_t *e;

    if (entry == NULL || entry->type != REDIS_REPLY_ARRAY || entry->elements < 2 ||
        entry->element[0]->type != REDIS_REPLY_STRING || entry->element[0]->len >= 48)
        return;
    id = entry->element[0];
    e = malloc(sizeof(*e));
    if (e == NULL)
        return; /* pending: claimed again later */
    e->q = q;
    memcpy(e->id, id->str, id->len);
    e->id[id->len] = '\0';
    method = field(entry->element[1], "method");
    params = field(entry->element[1], "params");
    if (method == NULL) {
        static const char why[] = "no \"method\" field";
        e->method = MW_API_unknown;
        q->applying++;
        on_applied(e, 400, why, sizeof(why) - 1);
        return;
    }
    e->method = mw_api_method_index(method->str, method->len);
    q->applying++;
    if (e->method == MW_API_unknown) {
        static const char why[] = "no such method";
        on_applied(e, 404, why, sizeof(why) - 1);
        return;
    }
    mw_api_run(q->node->lua, method->str, method->len, params ? params->str : NULL,
               params ? params->len : 0, on_applied, e);
}

/* The entries of a reply: XREADGROUP's [[stream, [entry...]]], or
 * XAUTOCLAIM's [cursor, [entry...], ...]. */
static void apply_all(mw_queue_t *q, const redisReply *entries)
{
    if (entries == NULL || entries->type != REDIS_REPLY_ARRAY)
        return;
    for (size_t i = 0; i < entries->elements && !q->stopping; i++)
        apply(q, entries->element[i]);
}

static void on_read(void *reply, void *priv)
{
    mw_queue_t *q = priv;
    redisReply *r = reply;

    mw_rconn_replied(&q->rc);
    q->reading = 0;
    if (q->stopping)
        return;
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        q->node->metrics->queue_read_failures++;
        if (r != NULL && strstr(r->str, "NOGROUP") != NULL)
            q->group_made = 0; /* the stream or the group went: made again */
        if (r != NULL)
            read_more(q); /* (a lost connection reads again when it is back) */
        return;
    }
    if (r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
        r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->elements == 2)
        apply_all(q, r->element[0]->element[1]);
    read_more(q);
}

static void on_group(void *reply, void *priv)
{
    mw_queue_t *q = priv;
    redisReply *r = reply;

    mw_rconn_replied(&q->rc);
    q->reading = 0;
    if (q->stopping || r == NULL)
        return;
    if (r->type == REDIS_REPLY_ERROR && strstr(r->str, "BUSYGROUP") == NULL) {
        q->node->metrics->queue_read_failures++;
        mw_log_error("queue: XGROUP CREATE %s %s failed: %s", q->node->cfg->queue_stream,
                     q->node->cfg->queue_group, r->str);
        return; /* tried again at the next connect */
    }
    q->group_made = 1;
    read_more(q);
}

/* Reads the next entries while there is room for them. */
static void read_more(mw_queue_t *q)
{
    const mw_config_t *cfg = q->node->cfg;
    char count[16], block[16];

    if (q->stopping || q->reading || !q->rc.ready)
        return;
    if (q->node->conns->draining)
        return; /* stopping: what is not read yet is another node's to take */
    if (!q->group_made) {
        const char *argv[6] = {"XGROUP", "CREATE", cfg->queue_stream, cfg->queue_group, "0",
                               "MKSTREAM"};
        size_t argl[6] = {6, 6, strlen(argv[2]), strlen(argv[3]), 1, 8};
        if (mw_rconn_send(&q->rc, on_group, q, 6, argv, argl) == 0)
            q->reading = 1;
        return;
    }
    if (q->applying + cfg->queue_read_count > cfg->queue_max_pending)
        return; /* the entries being applied finish first */
    snprintf(count, sizeof(count), "%u", cfg->queue_read_count);
    /* A read that waits past cluster.command_timeout would be taken for a
     * Redis that does not answer: it waits half of that at most. */
    snprintf(block, sizeof(block), "%u",
             cfg->queue_block < cfg->cluster_command_timeout / 2 ? cfg->queue_block
             : cfg->cluster_command_timeout / 2 > 0             ? cfg->cluster_command_timeout / 2
                                                                : 1);
    {
        const char *argv[10] = {"XREADGROUP", "GROUP",  cfg->queue_group, q->consumer,      "COUNT",
                                count,        "BLOCK",  block,            "STREAMS",        NULL};
        const char *args[12];
        size_t argl[12];
        int n = 0;
        for (int i = 0; i < 9; i++)
            args[n++] = argv[i];
        args[n++] = cfg->queue_stream;
        args[n++] = ">";
        for (int i = 0; i < n; i++)
            argl[i] = strlen(args[i]);
        if (mw_rconn_send(&q->rc, on_read, q, n, args, argl) == 0)
            q->reading = 1;
    }
}

static void on_claim(void *reply, void *priv)
{
    mw_queue_t *q = priv;
    redisReply *r = reply;

    mw_rconn_replied(&q->rc);
    q->claiming = 0;
    if (q->stopping)
        return;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 2 ||
        r->element[0]->type != REDIS_REPLY_STRING) {
        if (r == NULL || r->type == REDIS_REPLY_ERROR)
            q->node->metrics->queue_read_failures++;
        return;
    }
    snprintf(q->claim_from, sizeof(q->claim_from), "%.*s", (int)r->element[0]->len,
             r->element[0]->str);
    if (r->element[1]->type == REDIS_REPLY_ARRAY) {
        /* Entries deleted from the stream meanwhile come as nil: skipped, and
         * XAUTOCLAIM has already dropped them from the pending list. */
        size_t n = 0;
        for (size_t i = 0; i < r->element[1]->elements; i++) {
            const redisReply *e = r->element[1]->element[i];
            if (e->type == REDIS_REPLY_ARRAY && e->elements >= 2 &&
                e->element[1]->type == REDIS_REPLY_ARRAY)
                n++;
        }
        if (n > 0)
            mw_log_info("queue: claimed %zu entr%s left pending for %u ms", n,
                        n == 1 ? "y" : "ies", q->node->cfg->queue_claim_after);
        q->node->metrics->queue_claimed += n;
        apply_all(q, r->element[1]);
    }
}

/* Claims entries another consumer (or this one) left pending too long. */
static void claim(mw_queue_t *q, uint64_t now)
{
    const mw_config_t *cfg = q->node->cfg;
    uint32_t every = cfg->queue_claim_after / 2 > TICK_MS ? cfg->queue_claim_after / 2 : TICK_MS;
    char idle[16], count[16];

    if (q->claiming || q->checking > 0 || !q->group_made || !q->rc.ready ||
        now - q->claimed_at < every ||
        q->applying + cfg->queue_read_count > cfg->queue_max_pending)
        return;
    q->claimed_at = now;
    snprintf(idle, sizeof(idle), "%u", cfg->queue_claim_after);
    snprintf(count, sizeof(count), "%u", cfg->queue_read_count);
    {
        const char *argv[8] = {"XAUTOCLAIM", cfg->queue_stream, cfg->queue_group, q->consumer,
                               idle,         q->claim_from,     "COUNT",          count};
        size_t argl[8];
        for (int i = 0; i < 8; i++)
            argl[i] = strlen(argv[i]);
        if (mw_rconn_send(&q->rc, on_claim, q, 8, argv, argl) == 0)
            q->claiming = 1;
    }
}

static void on_tick(mw_timer_t *t)
{
    mw_queue_t *q = t->data;
    uint64_t now = q->node->timers->now;

    mw_rconn_check(&q->rc, now);
    claim(q, now);
    read_more(q);
}

static void on_up(mw_rconn_t *rc)
{
    mw_queue_t *q = rc->ud;
    q->group_made = 0;
    q->reading = q->claiming = 0;
    read_more(q);
}

static void on_down(mw_rconn_t *rc)
{
    mw_queue_t *q = rc->ud;
    q->reading = q->claiming = 0;
}

int mw_queue_start(mw_node_t *node, const mw_redis_driver_t *driver, void *drv, mw_queue_t **out,
                   char *err, size_t errlen)
{
    const mw_config_t *cfg = node->cfg;
    mw_queue_t *q;
    int r;

    *out = NULL;
    if (node->cluster == NULL || cfg->queue_stream == NULL || cfg->queue_stream[0] == '\0')
        return 0;
    q = calloc(1, sizeof(*q));
    if (q == NULL)
        return MW_ENOMEM;
    /* The queue's stream is on the first Redis (shard 0) of cluster.redis. */
    r = mw_rconn_locate(cfg, 0, &q->url, &q->sentinels, node, driver, drv, err, errlen);
    if (r != 0) {
        free(q);
        return r;
    }
    snprintf(q->consumer, sizeof(q->consumer), "%.*s", (int)node->reg->ids.prefix_len - 1,
             node->reg->ids.prefix);
    snprintf(q->claim_from, sizeof(q->claim_from), "0-0");
    q->node = node;
    if (mw_rconn_init(&q->rc, "queue", 0, &q->url, node, driver, drv, q) != 0) {
        mw_sentinels_free(&q->sentinels);
        free(q);
        return MW_ENOMEM;
    }
    if (q->sentinels.n > 0)
        mw_rconn_use_sentinels(&q->rc, &q->sentinels);
    q->rc.on_up = on_up;
    q->rc.on_down = on_down;
    mw_timer_init(&q->tick, on_tick, q);
    if (mw_timer_start(node->timers, &q->tick, TICK_MS, TICK_MS) != 0) {
        mw_rconn_free(&q->rc);
        mw_sentinels_free(&q->sentinels);
        free(q);
        return MW_ENOMEM;
    }
    mw_log_info("queue: consuming %s as %s in group %s", cfg->queue_stream, q->consumer,
                cfg->queue_group);
    mw_rconn_connect(&q->rc);
    *out = q;
    return 0;
}

void mw_queue_stop(mw_queue_t *q)
{
    if (q == NULL)
        return;
    q->stopping = q->rc.stopping = 1;
    mw_rconn_stop(&q->rc); /* the read out runs with no reply */
    mw_timer_stop(q->node->timers, &q->tick);
    maybe_free(q);
}
