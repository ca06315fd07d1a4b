/* The Redis backplane. See cluster.h.
 *
 * Two hiredis connections per node: `sub` stays in pub/sub mode, `cmd`
 * carries PUBLISH (and later the other commands). hiredis 0.14 has no
 * timeouts of its own, so uv timers bound connecting, and a watchdog bounds
 * how long a command may wait for its reply; either expiring drops the
 * connection and starts the backoff. A subscriber sends nothing, so the
 * watchdog also probes it when it has heard nothing for a while (see
 * probe_subscriber). hiredis frees a context itself after a disconnect or a
 * failed connect; the pointers here are cleared in those callbacks, and only
 * freed by us outside hiredis callbacks.
 *
 * Sending goes through the outbox (see "The outbox" below): an item per
 * message, handed to the command connection in order, removed when its
 * reply comes, made unsent again when the connection goes first.
 */
#include "cluster.h"
#include "conn.h"
#include "dedup.h"
#include "node.h"
#include "registry.h"
#include "timer.h"
#include "topics.h"
#include "moonwire/config.h"
#include "moonwire/error.h"
#include "moonwire/log.h"
#include "moonwire/metrics.h"

#include <openssl/sha.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define WATCHDOG_MS 250
#define PROBE_IDLE_MS 1000 /* a subscriber that heard nothing this long is probed */
#define BACKOFF_MIN_MS 100
#define PENDING_MAX 65536 /* commands in flight; past it the outbox holds the rest back */
#define SUBSCRIBE_BATCH 512
#define PEERS_EVERY_MS 1000           /* how often a healthy node counts the nodes on Redis */
#define DEDUP_ORIGINS 4096            /* origins whose numbers a node remembers */
#define DEDUP_IDLE_MS (3600 * 1000)   /* an origin silent this long is forgotten */
#define REFUSED_LOG_EVERY_MS 1000     /* at most one "outbox is full" line this often */

typedef struct rconn_s rconn_t;

struct rconn_s {
    mw_cluster_t *cl;
    const char *name;
    int subscriber;
    redisAsyncContext *ac; /* NULL while down */
    int ready;             /* connected, authenticated, (subscribed) */
    uv_timer_t timer;      /* connect timeout, then reconnect backoff */
    uint32_t backoff_ms;
    /* Send times of the commands awaiting replies, oldest first (a ring). */
    uint64_t *sent;
    uint32_t head, count;
};

struct mw_cluster_s {
    mw_node_t *node;
    uv_loop_t *loop;
    char host[256], path[256], password[256];
    int port, db;
    char prefix[64];
    char name[64]; /* this node incarnation, as ids spell it ("n1.k3x9a2") */
    char all_channel[96];
    char node_channel[160];
    rconn_t sub, cmd;
    uv_timer_t watchdog;
    uint64_t sub_heard;   /* when the subscriber last got anything (ms) */
    uint64_t probe_sent;  /* when the probe it has not heard yet went out; 0: none */
    uv_timer_t heartbeat; /* keeps this node's liveness key (presence) fresh */
    char node_key[160];   /* <prefix>:node:<node> */
    char node_key_prefix[96]; /* <prefix>:node: */
    char publish_sha[41];     /* SHA-1 of the history publish script */
    int stopping;
    int closing; /* timers still to close before the memory goes */

    /* Sending (see "The outbox"). */
    mw_outbox_t outbox;
    uint64_t seq;         /* the number of the last envelope made */
    int synced;           /* the outbox may go out: see try_sync */
    int resubscribing;    /* the subscriber has not yet confirmed its channels since it came up */
    uint64_t sync_since;  /* when both connections were up again, with an outbox to send */
    uint64_t peers;       /* subscribers of <prefix>:all when last counted while synced */
    uint64_t peers_at;    /* when that was; 0: never */
    int counting;         /* a PUBSUB NUMSUB is out */
    int pumping;
    uint64_t delayed_since; /* when messages started to wait; 0 while they go out at once */
    size_t delayed_count;   /* messages that waited since then */
    uint64_t refused_logged; /* when the last "outbox is full" line went */
    size_t refused_unlogged;

    /* Receiving. */
    mw_dedup_t dedup;
    uint64_t dedup_swept;
};

/* Envelopes --------------------------------------------------------------------------- */

size_t mw_envelope_size(const mw_envelope_t *e)
{
    if (e->origin_len > 255 || e->except_len > 255 || e->target_len > 255)
        return 0;
    return 3 + 8 + 1 + e->origin_len + 1 + e->except_len + 1 + e->target_len + e->payload_len;
}

static void put_seq(uint8_t *p, uint64_t seq)
{
    for (int i = 7; i >= 0; i--, seq >>= 8)
        p[i] = (uint8_t)(seq & 0xff);
}

void mw_envelope_write(const mw_envelope_t *e, uint8_t *p)
{
    *p++ = MW_ENVELOPE_VERSION;
    *p++ = e->kind;
    *p++ = (uint8_t)((e->binary ? 1 : 0) | (e->history ? 2 : 0));
    put_seq(p, e->seq);
    p += 8;
    *p++ = (uint8_t)e->origin_len;
    memcpy(p, e->origin, e->origin_len);
    p += e->origin_len;
    *p++ = (uint8_t)e->except_len;
    memcpy(p, e->except, e->except_len);
    p += e->except_len;
    *p++ = (uint8_t)e->target_len;
    memcpy(p, e->target, e->target_len);
    p += e->target_len;
    if (e->payload_len > 0)
        memcpy(p, e->payload, e->payload_len);
}

size_t mw_envelope_encode(const mw_envelope_t *e, uint8_t **out)
{
    size_t len = mw_envelope_size(e);
    uint8_t *buf;

    if (len == 0 || (buf = malloc(len)) == NULL)
        return 0;
    mw_envelope_write(e, buf);
    *out = buf;
    return len;
}

int mw_envelope_decode(const uint8_t *data, size_t len, mw_envelope_t *e)
{
    const uint8_t *p = data, *end = data + len;

    if (len < 3 + 8 + 3 || p[0] != MW_ENVELOPE_VERSION)
        return MW_EPROTO;
    e->kind = p[1];
    e->binary = p[2] & 1;
    e->history = (p[2] & 2) != 0;
    p += 3;
    e->seq = 0;
    for (int i = 0; i < 8; i++)
        e->seq = e->seq << 8 | *p++;
#define FIELD(ptr, n)                                                                              \
    do {                                                                                           \
        if (p >= end || (size_t)(end - p - 1) < *p)                                                \
            return MW_EPROTO;                                                                      \
        n = *p++;                                                                                  \
        ptr = (const char *)p;                                                                     \
        p += n;                                                                                    \
    } while (0)
    FIELD(e->origin, e->origin_len);
    FIELD(e->except, e->except_len);
    FIELD(e->target, e->target_len);
#undef FIELD
    e->payload = p;
    e->payload_len = (size_t)(end - p);
    return 0;
}

/* Scripts (run in Redis) --------------------------------------------------------------- */

/* One atomic step per message: the topic's next offset (a new epoch when the
 * stream was lost), the offset fields put in a JSON-object payload, XADD with
 * approximate trimming, the TTLs, and the PUBLISH of the envelope. So every
 * node sees one gapless sequence per topic, in offset order.
 *
 * A message the outbox sends again (its reply was lost) may have run
 * already: the meta hash keeps, per origin node (ARGV[9]), the number of its
 * last message here (ARGV[10]), and a number not above it returns {0, '', ''}
 * and changes nothing. Those fields of nodes whose liveness key (ARGV[11] ..
 * node) is gone are dropped once the hash holds more than 64. */
static const char history_publish_script[] =
    "local sf = 's:' .. ARGV[9]\n"
    "local seq = tonumber(ARGV[10])\n"
    "if seq <= tonumber(redis.call('HGET', KEYS[2], sf) or '0') then return {0, '', ''} end\n"
    "local epoch = redis.call('HGET', KEYS[2], 'epoch')\n"
    "local last = tonumber(redis.call('HGET', KEYS[2], 'offset') or '0')\n"
    "if not epoch or (last > 0 and redis.call('EXISTS', KEYS[1]) == 0) then\n"
    "  epoch = ARGV[7]\n"
    "  redis.call('DEL', KEYS[1])\n"
    "  redis.call('HSET', KEYS[2], 'epoch', epoch, 'offset', 0)\n"
    "end\n"
    "local offset = redis.call('HINCRBY', KEYS[2], 'offset', 1)\n"
    "redis.call('HSET', KEYS[2], sf, ARGV[10])\n"
    "if redis.call('HLEN', KEYS[2]) > 66 then\n"
    "  for _, f in ipairs(redis.call('HKEYS', KEYS[2])) do\n"
    "    if string.sub(f, 1, 2) == 's:' and f ~= sf and\n"
    "       redis.call('EXISTS', ARGV[11] .. string.sub(f, 3)) == 0 then\n"
    "      redis.call('HDEL', KEYS[2], f)\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local payload = ARGV[6]\n"
    "if ARGV[4] ~= '' and ARGV[8] == '1' and string.byte(payload, 1) == 123 then\n"
    "  local rest = string.sub(payload, 2)\n"
    "  local sep = ','\n"
    "  if string.match(rest, '^%s*}') then sep = '' end\n"
    "  payload = '{\"' .. ARGV[4] .. '\":' .. offset .. ',\"epoch\":\"' .. epoch .. '\"' .. sep .. rest\n"
    "end\n"
    "redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], offset .. '-0', 'd', payload)\n"
    "if ARGV[3] ~= '0' then\n"
    "  redis.call('EXPIRE', KEYS[1], ARGV[3])\n"
    "  redis.call('EXPIRE', KEYS[2], ARGV[3])\n"
    "end\n"
    "redis.call('PUBLISH', ARGV[1], ARGV[5] .. payload)\n"
    "return {offset, epoch, payload}\n";

/* What came after ARGV[1] (epoch ARGV[3], '' for any), at most ARGV[2]:
 * {epoch, last offset, recovered (1/0), payloads...}; not recovered gives
 * the latest ARGV[2] instead. */
static const char history_read_script[] =
    "local epoch = redis.call('HGET', KEYS[2], 'epoch') or ''\n"
    "local last = tonumber(redis.call('HGET', KEYS[2], 'offset') or '0')\n"
    "local since, limit = tonumber(ARGV[1]), tonumber(ARGV[2])\n"
    "local same = ARGV[3] == '' or ARGV[3] == epoch\n"
    "local first\n"
    "local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)\n"
    "if #head > 0 then first = tonumber(string.match(head[1][1], '^(%d+)')) end\n"
    "local out = {epoch, last, 0}\n"
    "local entries\n"
    "if same and since > 0 and first and since + 1 >= first and since <= last then\n"
    "  entries = redis.call('XRANGE', KEYS[1], (since + 1) .. '-0', '+', 'COUNT', limit + 1)\n"
    "  if #entries <= limit then out[3] = 1 end\n"
    "end\n"
    "if out[3] == 0 and same and since == last then out[3] = 1; entries = {} end\n"
    "if out[3] == 0 then\n"
    "  local rev = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', limit)\n"
    "  entries = {}\n"
    "  for i = #rev, 1, -1 do entries[#entries + 1] = rev[i] end\n"
    "end\n"
    "for _, e in ipairs(entries) do out[#out + 1] = e[2][2] end\n"
    "return out\n";

/* Addresses ------------------------------------------------------------------------------ */

int mw_cluster_parse_url(const char *url, char *host, int *port, char *path, char *password,
                         int *db)
{
    const char *p, *at, *slash, *colon;

    host[0] = path[0] = password[0] = '\0';
    *port = 6379;
    *db = 0;
    if (strncmp(url, "unix://", 7) == 0 || strncmp(url, "unix:", 5) == 0) {
        p = url + (strncmp(url, "unix://", 7) == 0 ? 7 : 5);
        if (*p != '/' || strlen(p) >= 256)
            return MW_EINVAL;
        strcpy(path, p);
        return 0;
    }
    if (strncmp(url, "redis://", 8) != 0)
        return MW_EINVAL;
    p = url + 8;
    at = strchr(p, '@');
    if (at != NULL) {
        const char *pw = memchr(p, ':', (size_t)(at - p));
        pw = pw ? pw + 1 : p; /* "redis://:secret@host" or "redis://user:secret@" */
        if ((size_t)(at - pw) >= 256)
            return MW_EINVAL;
        memcpy(password, pw, (size_t)(at - pw));
        password[at - pw] = '\0';
        p = at + 1;
    }
    slash = strchr(p, '/');
    colon = memchr(p, ':', slash ? (size_t)(slash - p) : strlen(p));
    {
        const char *hend = colon ? colon : slash ? slash : p + strlen(p);
        if (hend == p || (size_t)(hend - p) >= 256)
            return MW_EINVAL;
        memcpy(host, p, (size_t)(hend - p));
        host[hend - p] = '\0';
    }
    if (colon != NULL) {
        char *end;
        long v = strtol(colon + 1, &end, 10);
        if (end == colon + 1 || v < 1 || v > 65535 || (*end != '\0' && *end != '/'))
            return MW_EINVAL;
        *port = (int)v;
    }
    if (slash != NULL && slash[1] != '\0') {
        char *end;
        long v = strtol(slash + 1, &end, 10);
        if (*end != '\0' || v < 0 || v > 65535)
            return MW_EINVAL;
        *db = (int)v;
    }
    return 0;
}

/* hiredis on libuv ------------------------------------------------------------------------ */

/* Our own event glue for hiredis: the adapter of hiredis 0.14 drops poll
 * errors, so a refused connect was only noticed by the connect timeout. On
 * an error the requested events are reported anyway, and hiredis finds the
 * socket error itself (SO_ERROR) and fails the connect at once. */
typedef struct {
    redisAsyncContext *ac; /* NULL once hiredis cleaned up */
    uv_poll_t poll;
    int events;
} rpoll_t;

static void on_redis_poll(uv_poll_t *h, int status, int events)
{
    rpoll_t *p = h->data;
    if (status < 0)
        events = p->events;
    if (p->ac != NULL && (events & UV_READABLE))
        redisAsyncHandleRead(p->ac);
    if (p->ac != NULL && (events & UV_WRITABLE)) /* the read may have freed the context */
        redisAsyncHandleWrite(p->ac);
}

static void rpoll_update(rpoll_t *p, int add, int del)
{
    p->events = (p->events | add) & ~del;
    if (p->events != 0)
        uv_poll_start(&p->poll, p->events, on_redis_poll);
    else
        uv_poll_stop(&p->poll);
}

static void rpoll_add_read(void *ud)
{
    rpoll_update(ud, UV_READABLE, 0);
}

static void rpoll_del_read(void *ud)
{
    rpoll_update(ud, 0, UV_READABLE);
}

static void rpoll_add_write(void *ud)
{
    rpoll_update(ud, UV_WRITABLE, 0);
}

static void rpoll_del_write(void *ud)
{
    rpoll_update(ud, 0, UV_WRITABLE);
}

static void rpoll_closed(uv_handle_t *h)
{
    free(h->data);
}

static void rpoll_cleanup(void *ud)
{
    rpoll_t *p = ud;
    p->ac = NULL; /* hiredis is freeing it */
    uv_close((uv_handle_t *)&p->poll, rpoll_closed);
}

static int rpoll_attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    rpoll_t *p = calloc(1, sizeof(*p));

    if (p == NULL)
        return REDIS_ERR;
    if (uv_poll_init(loop, &p->poll, ac->c.fd) != 0) {
        free(p);
        return REDIS_ERR;
    }
    p->ac = ac;
    p->poll.data = p;
    ac->ev.data = p;
    ac->ev.addRead = rpoll_add_read;
    ac->ev.delRead = rpoll_del_read;
    ac->ev.addWrite = rpoll_add_write;
    ac->ev.delWrite = rpoll_del_write;
    ac->ev.cleanup = rpoll_cleanup;
    return REDIS_OK;
}

/* Connections ------------------------------------------------------------------------------ */

static void rconn_connect(rconn_t *rc);

static uint64_t now_ms(mw_cluster_t *cl)
{
    return uv_now(cl->loop);
}

static void track_sent(rconn_t *rc)
{
    rc->sent[(rc->head + rc->count) % PENDING_MAX] = now_ms(rc->cl);
    rc->count++;
}

static void track_reply(rconn_t *rc)
{
    if (rc->count > 0) {
        rc->head = (rc->head + 1) % PENDING_MAX;
        rc->count--;
    }
}

static uint32_t jitter(uint32_t ms)
{
    uint32_t r = 0;
    if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r))
        r = (uint32_t)uv_hrtime();
    /* 80% to 120% of ms, so nodes do not all come back at once. */
    return ms * 4 / 5 + (ms > 0 ? r % (ms * 2 / 5 + 1) : 0);
}

static void on_retry(uv_timer_t *t)
{
    rconn_t *rc = t->data;
    if (rc->ac != NULL) {
        /* A connect that never finished: give up on it. */
        redisAsyncContext *ac = rc->ac;
        rc->ac = NULL;
        mw_log_warn("cluster: %s connection to Redis timed out", rc->name);
        ac->data = NULL;
        redisAsyncFree(ac);
    }
    if (!rc->cl->stopping)
        rconn_connect(rc);
}

static void schedule_retry(rconn_t *rc)
{
    uint32_t cap = rc->cl->node->cfg->cluster_reconnect_max;
    if (rc->cl->stopping)
        return;
    rc->backoff_ms = rc->backoff_ms == 0 ? BACKOFF_MIN_MS : rc->backoff_ms * 2;
    if (rc->backoff_ms > cap)
        rc->backoff_ms = cap;
    uv_timer_start(&rc->timer, on_retry, jitter(rc->backoff_ms), 0);
}

static void outbox_down(mw_cluster_t *cl, int cmd_lost);
static void try_sync(mw_cluster_t *cl);

/* Fails every command still waiting (their callbacks run with no reply), and
 * holds the outbox back until both connections are up again. */
static void went_down(rconn_t *rc, const char *why)
{
    mw_metrics_t *m = rc->cl->node->metrics;
    if (rc->ready)
        mw_log_warn("cluster: lost the %s connection to Redis (%s); retrying", rc->name, why);
    rc->ready = 0;
    rc->ac = NULL;
    rc->head = rc->count = 0;
    m->cluster_reconnects++;
    schedule_retry(rc);
    outbox_down(rc->cl, !rc->subscriber);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    rconn_t *rc = ac->data;
    if (rc == NULL)
        return; /* freed on purpose */
    went_down(rc, status == REDIS_OK ? "closed" : ac->errstr);
}

static void subscribe_all(mw_cluster_t *cl);
static void restore_presence(mw_cluster_t *cl);
static void on_pubsub(redisAsyncContext *ac, void *r, void *priv);

static void on_ready_reply(redisAsyncContext *ac, void *r, void *priv)
{
    rconn_t *rc = priv;
    redisReply *reply = r;
    (void)ac;
    track_reply(rc);
    if (reply == NULL || rc->ac == NULL)
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        mw_log_error("cluster: Redis refused the %s connection: %s", rc->name, reply->str);
        redisAsyncDisconnect(rc->ac);
        return;
    }
    if (!rc->ready) {
        rc->ready = 1;
        rc->backoff_ms = 0;
        mw_log_info("cluster: %s connection to Redis is up", rc->name);
        if (rc->subscriber) {
            rc->cl->sub_heard = now_ms(rc->cl);
            rc->cl->probe_sent = 0;
            subscribe_all(rc->cl);
        } else {
            restore_presence(rc->cl);
        }
        try_sync(rc->cl);
    }
}

static void on_script_loaded(redisAsyncContext *ac, void *r, void *priv)
{
    rconn_t *rc = priv;
    redisReply *reply = r;
    (void)ac;
    track_reply(rc);
    if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
        mw_log_error("cluster: Redis refused to load the history script: %s", reply->str);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    rconn_t *rc = ac->data;
    mw_cluster_t *cl;

    if (rc == NULL)
        return;
    cl = rc->cl;
    uv_timer_stop(&rc->timer);
    if (status != REDIS_OK) {
        if (rc->backoff_ms == 0 || rc->backoff_ms >= cl->node->cfg->cluster_reconnect_max)
            mw_log_warn("cluster: cannot connect to Redis (%s): %s", rc->name, ac->errstr);
        rc->ac = NULL;
        cl->node->metrics->cluster_reconnects++;
        schedule_retry(rc);
        return;
    }
    /* AUTH and SELECT go first; the connection counts as up with the last reply. */
    if (cl->password[0] != '\0') {
        redisAsyncCommand(rc->ac, on_ready_reply, rc, "AUTH %s", cl->password);
        track_sent(rc);
    }
    if (!rc->subscriber && cl->db != 0) {
        redisAsyncCommand(rc->ac, on_ready_reply, rc, "SELECT %d", cl->db);
        track_sent(rc);
    }
    if (!rc->subscriber) {
        /* Before anything else on this connection, so that every EVALSHA of
         * the outbox finds the script (a Redis that restarted has none), and
         * no message is run out of its order by a NOSCRIPT and a retry. */
        const char *argv[3] = {"SCRIPT", "LOAD", history_publish_script};
        size_t argl[3] = {6, 4, sizeof(history_publish_script) - 1};
        redisAsyncCommandArgv(rc->ac, on_script_loaded, rc, 3, argv, argl);
        track_sent(rc);
    }
    redisAsyncCommand(rc->ac, on_ready_reply, rc, "PING");
    track_sent(rc);
}

static void rconn_connect(rconn_t *rc)
{
    mw_cluster_t *cl = rc->cl;
    redisAsyncContext *ac;

    ac = cl->path[0] ? redisAsyncConnectUnix(cl->path) : redisAsyncConnect(cl->host, cl->port);
    if (ac == NULL || ac->err) {
        mw_log_warn("cluster: cannot connect to Redis (%s): %s", rc->name,
                    ac ? ac->errstr : "out of memory");
        if (ac != NULL)
            redisAsyncFree(ac);
        schedule_retry(rc);
        return;
    }
    if (rpoll_attach(ac, cl->loop) != REDIS_OK) {
        redisAsyncFree(ac);
        schedule_retry(rc);
        return;
    }
    ac->data = rc;
    rc->ac = ac;
    rc->head = rc->count = 0;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    uv_timer_start(&rc->timer, on_retry, cl->node->cfg->cluster_connect_timeout, 0);
}

/* Drops a live connection: down first, since the pending callbacks run
 * inside the free and may resume hooks that send again, which must see Redis
 * as gone. */
static void drop(rconn_t *rc, const char *why)
{
    redisAsyncContext *ac = rc->ac;

    ac->data = NULL;
    went_down(rc, why);
    redisAsyncFree(ac); /* runs the pending callbacks with no reply */
}

static int fire(mw_cluster_t *cl, int argc, const char **argv, const size_t *argl);

/* A subscriber connection that a silent partition cut (a NAT or firewall
 * that forgot it, a peer gone without a reset) would look up until TCP gave
 * up, which it never does on a connection that sends nothing. So when the
 * subscriber has heard nothing for PROBE_IDLE_MS, the command connection
 * publishes a probe on this node's own channel, and a subscriber that has
 * not heard it (or anything) within cluster.command_timeout is dropped and
 * connected again, which subscribes it afresh. */
static void probe_subscriber(mw_cluster_t *cl, uint64_t now)
{
    mw_envelope_t e = {.kind = MW_ENV_PROBE, .origin = cl->name, .origin_len = strlen(cl->name),
                       .except = "", .target = ""};
    const char *argv[3] = {"PUBLISH", cl->node_channel};
    size_t argl[3] = {7, strlen(cl->node_channel)};
    uint8_t *buf;

    if (!cl->sub.ready || !cl->cmd.ready) {
        cl->probe_sent = 0; /* nothing to judge it by while the command side is down */
        return;
    }
    if (cl->probe_sent != 0) {
        if (now - cl->probe_sent > cl->node->cfg->cluster_command_timeout) {
            mw_log_warn("cluster: the subscriber connection heard nothing, not even its probe, "
                        "for %llu ms", (unsigned long long)(now - cl->sub_heard));
            cl->probe_sent = 0;
            drop(&cl->sub, "silent");
        }
        return;
    }
    if (now - cl->sub_heard < PROBE_IDLE_MS || (argl[2] = mw_envelope_encode(&e, &buf)) == 0)
        return;
    argv[2] = (const char *)buf;
    if (fire(cl, 3, argv, argl) == 0)
        cl->probe_sent = now;
    free(buf);
}

static void outbox_tick(mw_cluster_t *cl, uint64_t now);

/* Drops a connection whose oldest command has waited too long, probes a
 * quiet subscriber, and looks after the outbox. */
static void on_watchdog(uv_timer_t *t)
{
    mw_cluster_t *cl = t->data;
    rconn_t *conns[2] = {&cl->cmd, &cl->sub};
    uint64_t now = now_ms(cl);

    for (int i = 0; i < 2; i++) {
        rconn_t *rc = conns[i];
        if (rc->ac != NULL && rc->count > 0 &&
            now - rc->sent[rc->head] > cl->node->cfg->cluster_command_timeout) {
            mw_log_warn("cluster: Redis did not answer the %s connection within %u ms", rc->name,
                        cl->node->cfg->cluster_command_timeout);
            drop(rc, "timeout");
        }
    }
    probe_subscriber(cl, now);
    outbox_tick(cl, now);
}

/* Subscriptions ------------------------------------------------------------------------------ */

static void fill(mw_envelope_t *e, const mw_cluster_t *cl, uint8_t kind, const mw_frame_t *f);

static void channel_of(const mw_cluster_t *cl, const char *topic, size_t len, char *out, size_t cap,
                       size_t *n)
{
    int w = snprintf(out, cap, "%s:t:%.*s", cl->prefix, (int)len, topic);
    *n = w < (int)cap ? (size_t)w : cap - 1;
}

static void send_subscribe(mw_cluster_t *cl, const char *verb, const char **channels,
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
    redisAsyncCommandArgv(cl->sub.ac, on_pubsub, cl, n + 1, argv, argl);
}

static void subscribe_one(mw_cluster_t *cl, const char *verb, const char *topic, size_t len)
{
    char ch[MW_TOPIC_MAX + 80];
    const char *p = ch;
    size_t n;

    if (!cl->sub.ready)
        return; /* the next connection subscribes to what has members then */
    channel_of(cl, topic, len, ch, sizeof(ch), &n);
    send_subscribe(cl, verb, &p, &n, 1);
}

/* Every channel this node needs, <prefix>:all last: Redis runs one
 * connection's commands in order, so a node counted among the subscribers of
 * <prefix>:all has all its other channels already (try_sync relies on it),
 * and the confirmation of <prefix>:all tells this node the same of itself. */
static void subscribe_all(mw_cluster_t *cl)
{
    const mw_topics_t *ts = cl->node->topics;
    static char names[SUBSCRIBE_BATCH][MW_TOPIC_MAX + 80];
    const char *chans[SUBSCRIBE_BATCH];
    size_t lens[SUBSCRIBE_BATCH];
    int n = 0;

    chans[n] = cl->node_channel;
    lens[n++] = strlen(cl->node_channel);
    for (const mw_topic_t *t = mw_topics_next(ts, NULL); t != NULL; t = mw_topics_next(ts, t)) {
        if (n == SUBSCRIBE_BATCH - 1) {
            send_subscribe(cl, "SUBSCRIBE", chans, lens, n);
            n = 0;
        }
        channel_of(cl, t->name, t->len, names[n], sizeof(names[n]), &lens[n]);
        chans[n] = names[n];
        n++;
    }
    chans[n] = cl->all_channel;
    lens[n++] = strlen(cl->all_channel);
    send_subscribe(cl, "SUBSCRIBE", chans, lens, n);
    cl->resubscribing = 1;
    mw_log_info("cluster: subscribed to %zu topic channel(s)", ts->topics.count);
}

static void on_first(void *ud, const mw_topic_t *t)
{
    subscribe_one(ud, "SUBSCRIBE", t->name, t->len);
}

static void on_last(void *ud, const mw_topic_t *t)
{
    subscribe_one(ud, "UNSUBSCRIBE", t->name, t->len);
}

/* Receiving ---------------------------------------------------------------------------------- */

static void deliver(mw_cluster_t *cl, const char *channel, size_t chlen, const mw_envelope_t *e)
{
    mw_node_t *node = cl->node;
    mw_conn_t *except = NULL, *target;
    mw_frame_t *f;
    size_t plen = strlen(cl->prefix);

    /* Our own messages were delivered here when they were sent; a history
     * message is delivered by every node from this channel, in offset order. */
    if (!e->history && e->origin_len == strlen(cl->name) &&
        memcmp(e->origin, cl->name, e->origin_len) == 0)
        return;
    /* Sent again after a lost reply, and Redis had run it the first time. */
    if (!mw_dedup_check(&cl->dedup, e->origin, e->origin_len, e->seq, now_ms(cl))) {
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
    default:
        break;
    }
    mw_frame_unref(f);
}

static void on_pubsub(redisAsyncContext *ac, void *r, void *priv)
{
    mw_cluster_t *cl = priv;
    redisReply *reply = r;
    mw_envelope_t e;
    (void)ac;

    if (reply == NULL)
        return;
    cl->sub_heard = now_ms(cl); /* the connection is alive: see probe_subscriber */
    cl->probe_sent = 0;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING)
        return;
    if (strcmp(reply->element[0]->str, "message") != 0) {
        /* Subscribe and unsubscribe confirmations; <prefix>:all's comes last
         * after a (re)connection (subscribe_all). */
        if (cl->resubscribing && strcmp(reply->element[0]->str, "subscribe") == 0 &&
            reply->element[1]->type == REDIS_REPLY_STRING &&
            strcmp(reply->element[1]->str, cl->all_channel) == 0) {
            cl->resubscribing = 0;
            try_sync(cl);
        }
        return;
    }
    cl->node->timers->now = uv_now(cl->loop);
    if (mw_envelope_decode((const uint8_t *)reply->element[2]->str, reply->element[2]->len, &e) !=
        0) {
        cl->node->metrics->cluster_bad_envelopes++;
        return;
    }
    deliver(cl, reply->element[1]->str, reply->element[1]->len, &e);
}

/* Presence ------------------------------------------------------------------------------------ */

/* Presence of a topic is a hash <prefix>:p:<topic> of connection id -> info.
 * Each node keeps <prefix>:node:<node> alive with a TTL; a query drops the
 * entries of nodes whose key is gone, so a node that died without cleaning
 * up leaves presence within cluster.presence_ttl. */
static const char presence_script[] =
    "local all = redis.call('HGETALL', KEYS[1])\n"
    "local out, alive = {}, {}\n"
    "for i = 1, #all, 2 do\n"
    "  local node = string.match(all[i], '^(.*)%.[^.]+$') or ''\n"
    "  local ok = alive[node]\n"
    "  if ok == nil then\n"
    "    ok = redis.call('EXISTS', ARGV[1] .. node) == 1\n"
    "    alive[node] = ok\n"
    "  end\n"
    "  if ok then out[#out + 1] = all[i]; out[#out + 1] = all[i + 1]\n"
    "  else redis.call('HDEL', KEYS[1], all[i]) end\n"
    "end\n"
    "return out\n";

static void on_fire_reply(redisAsyncContext *ac, void *r, void *priv)
{
    mw_cluster_t *cl = priv;
    redisReply *reply = r;
    (void)ac;
    track_reply(&cl->cmd);
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR)
        cl->node->metrics->cluster_send_failures++;
}

/* Sends a command whose reply only counts as a failure or not; MW_EAGAIN (and a
 * failure counted) while Redis is away or too far behind. hiredis copies the
 * arguments into its output buffer. */
static int fire(mw_cluster_t *cl, int argc, const char **argv, const size_t *argl)
{
    if (!cl->cmd.ready || cl->cmd.count >= PENDING_MAX) {
        cl->node->metrics->cluster_send_failures++;
        return MW_EAGAIN;
    }
    redisAsyncCommandArgv(cl->cmd.ac, on_fire_reply, cl, argc, argv, argl);
    track_sent(&cl->cmd);
    return 0;
}

static size_t presence_key(const mw_cluster_t *cl, const char *topic, size_t len, char *out,
                           size_t cap)
{
    int n = snprintf(out, cap, "%s:p:%.*s", cl->prefix, (int)len, topic);
    return n < (int)cap ? (size_t)n : cap - 1;
}

static void presence_set(mw_cluster_t *cl, const mw_topic_t *t, const mw_conn_t *c,
                         const char *info, size_t len)
{
    char key[MW_TOPIC_MAX + 80], id[MW_ID_MAX];
    const char *argv[4];
    size_t argl[4];

    argl[1] = presence_key(cl, t->name, t->len, key, sizeof(key));
    argv[1] = key;
    argl[2] = mw_conn_id(c, id);
    argv[2] = id;
    if (info != NULL) {
        argv[0] = "HSET";
        argl[0] = 4;
        argv[3] = info;
        argl[3] = len;
        fire(cl, 4, argv, argl);
    } else {
        argv[0] = "HDEL";
        argl[0] = 4;
        fire(cl, 3, argv, argl);
    }
}

static void on_presence(void *ud, const mw_topic_t *t, const mw_conn_t *c, const char *info,
                        size_t len)
{
    mw_cluster_t *cl = ud;
    if (cl->cmd.ready)
        presence_set(cl, t, c, info, len); /* else: written again on reconnect */
}

/* The liveness key, and a TTL on the presence hashes this node has members in
 * (so a hash every node left goes away). */
static void heartbeat(mw_cluster_t *cl)
{
    const mw_topics_t *ts = cl->node->topics;
    char ttl[24], ttl2[24], key[MW_TOPIC_MAX + 80];
    uint32_t secs = (cl->node->cfg->cluster_presence_ttl + 999) / 1000;
    const char *argv[5];
    size_t argl[5];

    snprintf(ttl, sizeof(ttl), "%u", secs);
    snprintf(ttl2, sizeof(ttl2), "%u", secs * 4);
    argv[0] = "SET", argl[0] = 3;
    argv[1] = cl->node_key, argl[1] = strlen(cl->node_key);
    argv[2] = "1", argl[2] = 1;
    argv[3] = "EX", argl[3] = 2;
    argv[4] = ttl, argl[4] = strlen(ttl);
    fire(cl, 5, argv, argl);
    for (const mw_topic_t *t = mw_topics_next(ts, NULL); t != NULL; t = mw_topics_next(ts, t)) {
        mw_list_t *it;
        mw_list_foreach(it, &t->members)
        {
            if (MW_CONTAINER_OF(it, mw_sub_t, topic_link)->presence != NULL)
                break;
        }
        if (it == &t->members)
            continue; /* nobody here shows in its presence */
        argv[0] = "EXPIRE", argl[0] = 6;
        argl[1] = presence_key(cl, t->name, t->len, key, sizeof(key));
        argv[1] = key;
        argv[2] = ttl2, argl[2] = strlen(ttl2);
        fire(cl, 3, argv, argl);
    }
}

static void on_heartbeat(uv_timer_t *t)
{
    mw_cluster_t *cl = t->data;
    if (cl->cmd.ready)
        heartbeat(cl);
}

/* After a (re)connect: this node's presence entries again (Redis may be new). */
static void restore_presence(mw_cluster_t *cl)
{
    const mw_topics_t *ts = cl->node->topics;
    for (const mw_topic_t *t = mw_topics_next(ts, NULL); t != NULL; t = mw_topics_next(ts, t)) {
        mw_list_t *it;
        mw_list_foreach(it, &t->members)
        {
            const mw_sub_t *s = MW_CONTAINER_OF(it, mw_sub_t, topic_link);
            if (s->presence != NULL)
                presence_set(cl, t, s->conn, s->presence, s->presence_len);
        }
    }
    heartbeat(cl);
}

int mw_cluster_presence(mw_cluster_t *cl, const char *topic, size_t len, mw_cluster_reply_cb cb,
                        void *ud)
{
    char key[MW_TOPIC_MAX + 80], prefix[96];
    const char *argv[5] = {"EVAL", presence_script, "1", key, prefix};
    size_t argl[5] = {4, sizeof(presence_script) - 1, 1, 0, 0};

    argl[3] = presence_key(cl, topic, len, key, sizeof(key));
    argl[4] = (size_t)snprintf(prefix, sizeof(prefix), "%s:node:", cl->prefix);
    return mw_cluster_command(cl, 5, argv, argl, cb, ud);
}

/* The outbox ---------------------------------------------------------------------------------- */

/* Every message for the other nodes is an item of the outbox (outbox.h): a
 * PUBLISH of its envelope, or the history publish script. It is numbered
 * (the envelope's seq) when it is made, handed to the command connection in
 * order when the outbox may go out (`synced`), and removed when its reply
 * comes; a connection lost first makes it unsent again, and receivers drop
 * what they had already (dedup.h), so each message is delivered once.
 *
 * `synced` goes to 0 when either connection goes down. It comes back in
 * try_sync once both are up, this node's own channels are subscribed again,
 * and, if the outbox holds anything, the other nodes are back too: a PUBLISH
 * reaches only subscribers that are there, and after an outage of Redis
 * every node reconnects on its own backoff. A healthy node counts the
 * subscribers of <prefix>:all every second (the nodes, itself included);
 * after an outage it sends the outbox when as many are subscribed again, or
 * when the longest a node can take to come back has passed (reconnect_max
 * with its jitter, plus connect_timeout): a node that has not is gone. */

#define ARG_HEAD 9   /* of a script item: the envelope head */
#define ARG_SEQ 14   /* of a script item: the number, in SEQ_DIGITS digits */
#define ARG_ENV 2    /* of a PUBLISH item: the envelope */
#define SEQ_DIGITS 20

typedef struct citem_s {
    mw_outbox_item_t ob;
    uint64_t seq;
    int script;  /* the history publish script; else a PUBLISH */
    int retried; /* sent again as EVAL after a NOSCRIPT */
    int requeue; /* in flight when the connection went: tell `queued` */
    mw_cluster_reply_cb cb;
    mw_cluster_queued_cb queued;
    void *ud;
    mw_cluster_t *cl;
    int argc;
    char *arg[16];
    size_t len[16];
    char data[];
} citem_t;

#define ITEM(o) MW_CONTAINER_OF(o, citem_t, ob)

/* An item with copies of the arguments; a NULL argv[i] reserves argl[i]
 * bytes, to be written into it->arg[i]. */
static citem_t *item_new(mw_cluster_t *cl, int argc, const char *const *argv, const size_t *argl)
{
    size_t total = 0, off = 0;
    citem_t *it;

    for (int i = 0; i < argc; i++)
        total += argl[i];
    it = malloc(sizeof(*it) + total);
    if (it == NULL)
        return NULL;
    memset(it, 0, sizeof(*it));
    it->cl = cl;
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

/* Gives it the next number, in its envelope and, for the script, its argument. */
static void number(mw_cluster_t *cl, citem_t *it)
{
    it->seq = ++cl->seq;
    if (it->script) {
        char digits[SEQ_DIGITS + 1];
        put_seq((uint8_t *)it->arg[ARG_HEAD] + MW_ENVELOPE_SEQ_AT, it->seq);
        snprintf(digits, sizeof(digits), "%0*llu", SEQ_DIGITS, (unsigned long long)it->seq);
        memcpy(it->arg[ARG_SEQ], digits, SEQ_DIGITS);
    } else {
        put_seq((uint8_t *)it->arg[ARG_ENV] + MW_ENVELOPE_SEQ_AT, it->seq);
    }
}

static void pump(mw_cluster_t *cl);

static void on_item_reply(redisAsyncContext *ac, void *r, void *priv);

static int item_send(mw_cluster_t *cl, citem_t *it)
{
    const char *argv[16];
    size_t argl[16];

    for (int i = 0; i < it->argc; i++) {
        argv[i] = it->arg[i];
        argl[i] = it->len[i];
    }
    if (it->script && !it->retried) {
        argv[1] = cl->publish_sha, argl[1] = 40;
    } else if (it->script) {
        argv[0] = "EVAL", argl[0] = 4;
        argv[1] = history_publish_script, argl[1] = sizeof(history_publish_script) - 1;
    }
    if (redisAsyncCommandArgv(cl->cmd.ac, on_item_reply, it, it->argc, argv, argl) != REDIS_OK)
        return MW_EAGAIN; /* the connection is going: it stays for the next one */
    track_sent(&cl->cmd);
    return 0;
}

static void on_item_reply(redisAsyncContext *ac, void *r, void *priv)
{
    citem_t *it = priv;
    mw_cluster_t *cl = it->cl;
    redisReply *reply = r;
    (void)ac;

    track_reply(&cl->cmd);
    if (reply == NULL)
        return; /* the connection went: the item stays (outbox_down, or the stop, deals with it) */
    if (reply->type == REDIS_REPLY_ERROR && it->script && !it->retried &&
        strncmp(reply->str, "NOSCRIPT", 8) == 0) {
        /* Someone flushed the scripts (each connection loads it first): the
         * text once. It did not run, and later messages may have: a new
         * number, or receivers would take it for one they had. */
        it->retried = 1;
        number(cl, it);
        item_send(cl, it);
        return;
    }
    mw_outbox_remove(&cl->outbox, &it->ob);
    if (reply->type == REDIS_REPLY_ERROR) {
        cl->node->metrics->cluster_send_failures++;
        mw_log_warn("cluster: Redis refused a message for the other nodes: %s", reply->str);
    } else {
        cl->node->metrics->cluster_published++;
    }
    if (it->cb != NULL)
        it->cb(it->ud, reply);
    free(it);
    pump(cl);
}

static void on_item_dropped(mw_outbox_item_t *o, void *ud)
{
    citem_t *it = ITEM(o);
    (void)ud;
    if (it->cb != NULL)
        it->cb(it->ud, NULL);
    free(it);
}

/* Hands the outbox to Redis from its head while it may go out, after
 * dropping what waited too long. */
static void pump(mw_cluster_t *cl)
{
    const mw_config_t *cfg = cl->node->cfg;
    mw_outbox_item_t *o;
    uint64_t now = now_ms(cl);
    size_t dropped;

    if (cl->pumping)
        return; /* a callback below sent something: the loop here takes it */
    cl->pumping = 1;
    cl->outbox.max_bytes = cfg->cluster_outbox_size; /* a reload may change both */
    cl->outbox.max_age = cfg->cluster_outbox_max_age;
    dropped = mw_outbox_expire(&cl->outbox, now, on_item_dropped, cl);
    if (dropped > 0) {
        cl->node->metrics->cluster_outbox_dropped += dropped;
        mw_log_warn("cluster: dropped %zu message(s) for the other nodes that waited for Redis "
                    "longer than cluster.outbox_max_age (%u ms)",
                    dropped, cfg->cluster_outbox_max_age);
    }
    if (cl->synced && cl->cmd.ready) {
        while ((o = mw_outbox_peek(&cl->outbox)) != NULL && cl->cmd.count < PENDING_MAX) {
            if (item_send(cl, ITEM(o)) != 0)
                break;
            mw_outbox_sent(&cl->outbox, o);
        }
    }
    if (cl->delayed_since != 0 && cl->synced && mw_outbox_backlog(&cl->outbox) == 0) {
        mw_log_info("cluster: the outbox is out: %zu message(s) for the other nodes waited, "
                    "for up to %llu ms",
                    cl->delayed_count, (unsigned long long)(now - cl->delayed_since));
        cl->delayed_since = 0;
        cl->delayed_count = 0;
    }
    cl->pumping = 0;
}

static void log_refused(mw_cluster_t *cl, uint64_t now)
{
    if (cl->refused_unlogged == 0)
        return;
    mw_log_warn("cluster: the outbox is full (%zu message(s), %zu of %zu bytes of "
                "cluster.outbox_size): %zu message(s) for the other nodes refused",
                cl->outbox.count, cl->outbox.bytes, cl->outbox.max_bytes, cl->refused_unlogged);
    cl->refused_unlogged = 0;
    cl->refused_logged = now;
}

/* Puts it in the outbox and sends what may go. Returns 0 (sent), MW_EAGAIN
 * (it waits) or MW_ELIMIT (refused: it is freed and no callback runs). */
static int enqueue(mw_cluster_t *cl, citem_t *it)
{
    uint64_t now = now_ms(cl);

    cl->outbox.max_bytes = cl->node->cfg->cluster_outbox_size;
    if (cl->stopping || mw_outbox_push(&cl->outbox, &it->ob, now) != 0) {
        free(it);
        cl->node->metrics->cluster_outbox_refused++;
        cl->refused_unlogged++;
        if (now - cl->refused_logged >= REFUSED_LOG_EVERY_MS)
            log_refused(cl, now);
        return MW_ELIMIT;
    }
    pump(cl);
    if (it->ob.sent) /* its reply can not have come yet */
        return 0;
    cl->delayed_count++;
    if (cl->delayed_since == 0 && !cl->pumping) {
        cl->delayed_since = now;
        mw_log_warn("cluster: messages for the other nodes wait in the outbox (%s)",
                    !mw_cluster_healthy(cl) ? "Redis unavailable"
                                            : "waiting for the other nodes to be back on Redis");
    }
    return MW_EAGAIN;
}

/* A connection went down: nothing goes out until try_sync says so. With the
 * command connection, what was in flight waits again, in its place; the
 * history messages whose hooks waited for a reply tell them so. */
static void outbox_down(mw_cluster_t *cl, int cmd_lost)
{
    mw_list_t *l;

    cl->synced = 0;
    cl->sync_since = 0;
    if (!cmd_lost || cl->outbox.nsent == 0)
        goto out;
    for (l = cl->outbox.items.next; l != cl->outbox.next; l = l->next)
        ITEM(MW_CONTAINER_OF(l, mw_outbox_item_t, link))->requeue = 1;
    mw_outbox_rewind(&cl->outbox);
    /* A hook woken here may publish: the pump it calls must not drop or
     * free items under this walk. */
    cl->pumping = 1;
    for (l = cl->outbox.items.next; l != &cl->outbox.items; l = l->next) {
        citem_t *it = ITEM(MW_CONTAINER_OF(l, mw_outbox_item_t, link));
        if (it->requeue) {
            it->requeue = 0;
            if (it->queued != NULL)
                it->queued(it->ud);
        }
    }
    cl->pumping = 0;
out:
    if (cl->outbox.count > 0 && cl->delayed_since == 0) {
        cl->delayed_since = now_ms(cl);
        cl->delayed_count = cl->outbox.count;
        mw_log_warn("cluster: %zu message(s) for the other nodes wait in the outbox (Redis "
                    "unavailable)", cl->outbox.count);
    }
}

static uint64_t resync_wait(const mw_cluster_t *cl)
{
    const mw_config_t *cfg = cl->node->cfg;
    return (uint64_t)cfg->cluster_reconnect_max * 6 / 5 + cfg->cluster_connect_timeout +
           WATCHDOG_MS;
}

static void set_synced(mw_cluster_t *cl)
{
    cl->synced = 1;
    cl->sync_since = 0;
    if (mw_outbox_backlog(&cl->outbox) > 0)
        mw_log_info("cluster: sending the outbox to the other nodes: %zu message(s), %zu bytes",
                    mw_outbox_backlog(&cl->outbox), cl->outbox.bytes);
    pump(cl);
}

static void on_peers(void *ud, void *reply)
{
    mw_cluster_t *cl = ud;
    const redisReply *r = reply;
    uint64_t n;

    cl->counting = 0;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[1]->type != REDIS_REPLY_INTEGER || cl->stopping)
        return;
    n = (uint64_t)r->element[1]->integer;
    if (cl->synced) {
        cl->peers = n;
        cl->peers_at = now_ms(cl);
    } else if (cl->peers_at != 0 && n >= cl->peers && cl->sync_since != 0) {
        mw_log_info("cluster: the %llu node(s) on Redis before are back", (unsigned long long)n);
        set_synced(cl);
    }
}

/* Asks Redis how many nodes listen on <prefix>:all (see on_peers). */
static void count_peers(mw_cluster_t *cl)
{
    const char *argv[3] = {"PUBSUB", "NUMSUB", cl->all_channel};
    size_t argl[3] = {6, 6, strlen(cl->all_channel)};

    if (!cl->counting && mw_cluster_command(cl, 3, argv, argl, on_peers, cl) == 0)
        cl->counting = 1;
}

/* Whether the outbox may go out again; see the top of this section. */
static void try_sync(mw_cluster_t *cl)
{
    uint64_t now;

    if (cl->synced || cl->stopping || !cl->cmd.ready || !cl->sub.ready || cl->resubscribing)
        return;
    if (cl->outbox.count == 0) {
        set_synced(cl);
        return;
    }
    now = now_ms(cl);
    if (cl->sync_since == 0)
        cl->sync_since = now;
    if (now - cl->sync_since >= resync_wait(cl)) {
        if (cl->peers_at != 0)
            mw_log_warn("cluster: fewer nodes are back on Redis than the %llu before, after "
                        "%llu ms; the others would be back by now",
                        (unsigned long long)cl->peers, (unsigned long long)(now - cl->sync_since));
        set_synced(cl);
        return;
    }
    if (cl->peers_at != 0)
        count_peers(cl);
}

/* Every watchdog tick: old messages out, the outbox moving, the nodes counted. */
static void outbox_tick(mw_cluster_t *cl, uint64_t now)
{
    pump(cl);
    if (!cl->synced)
        try_sync(cl);
    else if (cl->cmd.ready && (cl->peers_at == 0 || now - cl->peers_at >= PEERS_EVERY_MS))
        count_peers(cl);
    if (now - cl->refused_logged >= REFUSED_LOG_EVERY_MS)
        log_refused(cl, now);
    if (now - cl->dedup_swept >= 60000) {
        mw_dedup_expire(&cl->dedup, now, DEDUP_IDLE_MS);
        cl->dedup_swept = now;
    }
}

void mw_cluster_status(const mw_cluster_t *cl, mw_cluster_status_t *st)
{
    uint64_t oldest = mw_outbox_oldest(&cl->outbox), now = uv_now(cl->loop);

    st->up = mw_cluster_healthy(cl);
    /* Not while the outbox is merely held for a round trip after a
     * reconnection with nothing in it: nothing waits then. */
    st->delayed = !st->up || mw_outbox_backlog(&cl->outbox) > 0;
    st->messages = cl->outbox.count;
    st->bytes = cl->outbox.bytes;
    st->oldest = oldest != 0 && now > oldest ? now - oldest : 0;
}

int mw_cluster_busy(const mw_cluster_t *cl)
{
    return cl->cmd.ready && cl->outbox.count > 0;
}

/* History ------------------------------------------------------------------------------------- */

typedef struct {
    mw_cluster_t *cl;
    const char *script;
    size_t script_len;
    int argc; /* of the EVAL form: EVAL script nkeys keys... args... */
    char **argv;
    size_t *argl;
    int retried;
    mw_cluster_reply_cb cb;
    void *ud;
} script_call_t;

static void script_call_free(script_call_t *sc)
{
    for (int i = 0; i < sc->argc; i++)
        free(sc->argv[i]);
    free(sc->argv);
    free(sc->argl);
    free(sc);
}

static void sha1_hex(const char *text, size_t len, char out[41])
{
    unsigned char d[20];
    SHA1((const unsigned char *)text, len, d);
    for (int i = 0; i < 20; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static void send_script(script_call_t *sc);

static void on_script_reply(redisAsyncContext *ac, void *r, void *priv)
{
    script_call_t *sc = priv;
    redisReply *reply = r;
    (void)ac;
    track_reply(&sc->cl->cmd);
    if (reply != NULL && reply->type == REDIS_REPLY_ERROR && !sc->retried &&
        strncmp(reply->str, "NOSCRIPT", 8) == 0) {
        /* Redis does not know the script (a restart): send its text once. */
        sc->retried = 1;
        send_script(sc);
        return;
    }
    sc->cb(sc->ud, reply);
    script_call_free(sc);
}

static void send_script(script_call_t *sc)
{
    char sha[41];
    const char *argv[16];
    size_t argl[16];

    for (int i = 0; i < sc->argc; i++) {
        argv[i] = sc->argv[i];
        argl[i] = sc->argl[i];
    }
    if (!sc->retried) {
        sha1_hex(sc->script, sc->script_len, sha);
        argv[0] = "EVALSHA", argl[0] = 7;
        argv[1] = sha, argl[1] = 40;
    }
    if (!sc->cl->cmd.ready) {
        sc->cb(sc->ud, NULL);
        script_call_free(sc);
        return;
    }
    redisAsyncCommandArgv(sc->cl->cmd.ac, on_script_reply, sc, sc->argc, argv, argl);
    track_sent(&sc->cl->cmd);
}

/* Runs a script (EVALSHA, then EVAL if Redis lacks it); args are copied. */
static int run_script(mw_cluster_t *cl, const char *script, size_t script_len, int argc,
                      const char **argv, const size_t *argl, mw_cluster_reply_cb cb, void *ud)
{
    script_call_t *sc;

    if (!cl->cmd.ready || cl->cmd.count >= PENDING_MAX || argc + 2 > 16)
        return MW_EAGAIN;
    sc = calloc(1, sizeof(*sc));
    if (sc == NULL)
        return MW_ENOMEM;
    sc->cl = cl;
    sc->script = script;
    sc->script_len = script_len;
    sc->argc = argc + 2;
    sc->argv = calloc((size_t)sc->argc, sizeof(char *));
    sc->argl = calloc((size_t)sc->argc, sizeof(size_t));
    sc->cb = cb;
    sc->ud = ud;
    if (sc->argv == NULL || sc->argl == NULL)
        goto fail;
    sc->argv[0] = strdup("EVAL");
    sc->argl[0] = 4;
    sc->argv[1] = malloc(script_len);
    sc->argl[1] = script_len;
    if (sc->argv[0] == NULL || sc->argv[1] == NULL)
        goto fail;
    memcpy(sc->argv[1], script, script_len);
    for (int i = 0; i < argc; i++) {
        sc->argv[i + 2] = malloc(argl[i] + 1);
        if (sc->argv[i + 2] == NULL)
            goto fail;
        memcpy(sc->argv[i + 2], argv[i], argl[i]);
        sc->argl[i + 2] = argl[i];
    }
    send_script(sc);
    return 0;

fail:
    script_call_free(sc);
    return MW_ENOMEM;
}

static void history_keys(const mw_cluster_t *cl, const char *topic, size_t len, char *stream,
                         size_t *slen, char *meta, size_t *mlen)
{
    *slen = (size_t)snprintf(stream, MW_TOPIC_MAX + 80, "%s:h:%.*s", cl->prefix, (int)len, topic);
    *mlen = (size_t)snprintf(meta, MW_TOPIC_MAX + 80, "%s:hm:%.*s", cl->prefix, (int)len, topic);
}

int mw_cluster_history_publish(mw_cluster_t *cl, const char *topic, size_t len, const mw_frame_t *f,
                               const char *except, size_t except_len, mw_cluster_reply_cb cb,
                               mw_cluster_queued_cb queued, void *ud)
{
    const mw_config_t *cfg = cl->node->cfg;
    char stream[MW_TOPIC_MAX + 80], meta[MW_TOPIC_MAX + 80], ch[MW_TOPIC_MAX + 80];
    char size[24], ttl[24], epoch[24];
    const char *field = cfg->history_field ? cfg->history_field : "";
    size_t slen, mlen, chlen, hlen;
    mw_envelope_t e;
    uint32_t rnd;
    citem_t *it;

    history_keys(cl, topic, len, stream, &slen, meta, &mlen);
    channel_of(cl, topic, len, ch, sizeof(ch), &chlen);
    fill(&e, cl, MW_ENV_TOPIC, f);
    e.history = 1;
    e.except = except ? except : "";
    e.except_len = except ? except_len : 0;
    e.payload_len = 0; /* the script appends the final payload */
    hlen = mw_envelope_size(&e);
    if (hlen == 0)
        return MW_EINVAL;
    snprintf(size, sizeof(size), "%zu", cfg->history_size);
    /* history.ttl 0 keeps history until trimmed, as on a node alone. */
    snprintf(ttl, sizeof(ttl), "%u", (cfg->history_ttl + 999) / 1000);
    if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd))
        rnd = (uint32_t)uv_hrtime();
    snprintf(epoch, sizeof(epoch), "%08x%04x", rnd, (unsigned)(uv_hrtime() & 0xffff));
    {
        /* EVALSHA sha 2 KEYS[1..2] ARGV[1..11]; the sha (or the script's
         * text), the envelope head and the number are put in later. */
        int text = (f->bytes[0] & 0x0f) == MW_OP_TEXT;
        const char *argv[16] = {"EVALSHA", NULL, "2", stream, meta, ch, size, ttl, field, NULL,
                                (const char *)mw_frame_payload(f), epoch, text ? "1" : "0",
                                cl->name, NULL, cl->node_key_prefix};
        size_t argl[16] = {7, 0, 1, slen, mlen, chlen, strlen(size), strlen(ttl), strlen(field),
                           hlen, mw_frame_payload_len(f), strlen(epoch), 1, strlen(cl->name),
                           SEQ_DIGITS, strlen(cl->node_key_prefix)};
        it = item_new(cl, 16, argv, argl);
    }
    if (it == NULL)
        return MW_ENOMEM;
    it->script = 1;
    it->cb = cb;
    it->queued = queued;
    it->ud = ud;
    mw_envelope_write(&e, (uint8_t *)it->arg[ARG_HEAD]);
    number(cl, it);
    return enqueue(cl, it);
}

int mw_cluster_history_read(mw_cluster_t *cl, const char *topic, size_t len, uint64_t since,
                            const char *epoch, size_t limit, mw_cluster_reply_cb cb, void *ud)
{
    char stream[MW_TOPIC_MAX + 80], meta[MW_TOPIC_MAX + 80], s[24], l[24];
    size_t slen, mlen;

    history_keys(cl, topic, len, stream, &slen, meta, &mlen);
    snprintf(s, sizeof(s), "%llu", (unsigned long long)since);
    snprintf(l, sizeof(l), "%zu", limit);
    {
        const char *argv[6] = {"2", stream, meta, s, l, epoch ? epoch : ""};
        size_t argl[6] = {1, slen, mlen, strlen(s), strlen(l), epoch ? strlen(epoch) : 0};
        return run_script(cl, history_read_script, sizeof(history_read_script) - 1, 6, argv, argl,
                          cb, ud);
    }
}

/* Sending ------------------------------------------------------------------------------------ */

static int publish_envelope(mw_cluster_t *cl, const char *channel, size_t chlen,
                            const mw_envelope_t *e)
{
    size_t n = mw_envelope_size(e);
    const char *argv[3] = {"PUBLISH", channel, NULL};
    size_t argl[3] = {7, chlen, n};
    citem_t *it;

    if (n == 0)
        return MW_EINVAL;
    it = item_new(cl, 3, argv, argl);
    if (it == NULL)
        return MW_ENOMEM;
    mw_envelope_write(e, (uint8_t *)it->arg[ARG_ENV]);
    number(cl, it);
    return enqueue(cl, it);
}

static void fill(mw_envelope_t *e, const mw_cluster_t *cl, uint8_t kind, const mw_frame_t *f)
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

int mw_cluster_publish(mw_cluster_t *cl, const char *topic, size_t len, const mw_frame_t *f,
                       const char *except, size_t except_len)
{
    char ch[MW_TOPIC_MAX + 80];
    size_t n;
    mw_envelope_t e;

    fill(&e, cl, MW_ENV_TOPIC, f);
    e.except = except ? except : "";
    e.except_len = except ? except_len : 0;
    channel_of(cl, topic, len, ch, sizeof(ch), &n);
    return publish_envelope(cl, ch, n, &e);
}

int mw_cluster_broadcast(mw_cluster_t *cl, const mw_frame_t *f, const char *except,
                         size_t except_len)
{
    mw_envelope_t e;
    fill(&e, cl, MW_ENV_BROADCAST, f);
    e.except = except ? except : "";
    e.except_len = except ? except_len : 0;
    return publish_envelope(cl, cl->all_channel, strlen(cl->all_channel), &e);
}

int mw_cluster_send(mw_cluster_t *cl, const char *id, size_t id_len, const mw_frame_t *f)
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
    fill(&e, cl, MW_ENV_DIRECT, f);
    e.target = id;
    e.target_len = id_len;
    return publish_envelope(cl, ch, (size_t)n, &e);
}

typedef struct {
    mw_cluster_t *cl;
    mw_cluster_reply_cb cb;
    void *ud;
} command_t;

static void on_command_reply(redisAsyncContext *ac, void *r, void *priv)
{
    command_t *cmd = priv;
    (void)ac;
    track_reply(&cmd->cl->cmd);
    cmd->cb(cmd->ud, r);
    free(cmd);
}

int mw_cluster_command(mw_cluster_t *cl, int argc, const char **argv, const size_t *argl,
                       mw_cluster_reply_cb cb, void *ud)
{
    command_t *cmd;

    if (!cl->cmd.ready || cl->cmd.count >= PENDING_MAX)
        return MW_EAGAIN;
    cmd = malloc(sizeof(*cmd));
    if (cmd == NULL)
        return MW_ENOMEM;
    cmd->cl = cl;
    cmd->cb = cb;
    cmd->ud = ud;
    if (redisAsyncCommandArgv(cl->cmd.ac, on_command_reply, cmd, argc, argv, argl) != REDIS_OK) {
        free(cmd);
        return MW_EAGAIN;
    }
    track_sent(&cl->cmd);
    return 0;
}

int mw_cluster_subscribed(const mw_cluster_t *cl)
{
    return cl->sub.ready;
}

int mw_cluster_healthy(const mw_cluster_t *cl)
{
    return cl->cmd.ready && cl->sub.ready;
}

/* Life ---------------------------------------------------------------------------------------- */

static int rconn_init(mw_cluster_t *cl, rconn_t *rc, const char *name, int subscriber)
{
    rc->cl = cl;
    rc->name = name;
    rc->subscriber = subscriber;
    rc->sent = calloc(PENDING_MAX, sizeof(uint64_t));
    if (rc->sent == NULL)
        return MW_ENOMEM;
    uv_timer_init(cl->loop, &rc->timer);
    rc->timer.data = rc;
    return 0;
}

int mw_cluster_start(mw_node_t *node, uv_loop_t *loop, char *err, size_t errlen)
{
    const mw_config_t *cfg = node->cfg;
    mw_cluster_t *cl;

    if (cfg->cluster_redis == NULL)
        return 0;
    cl = calloc(1, sizeof(*cl));
    if (cl == NULL)
        return MW_ENOMEM;
    if (mw_cluster_parse_url(cfg->cluster_redis, cl->host, &cl->port, cl->path, cl->password,
                             &cl->db) != 0) {
        snprintf(err, errlen, "config: 'cluster.redis' is not redis://host[:port][/db] or "
                              "unix:///path: %s", cfg->cluster_redis);
        free(cl);
        return MW_ECONFIG;
    }
    if (cfg->cluster_password != NULL)
        snprintf(cl->password, sizeof(cl->password), "%s", cfg->cluster_password);
    snprintf(cl->prefix, sizeof(cl->prefix), "%s", cfg->cluster_prefix);
    snprintf(cl->name, sizeof(cl->name), "%.*s", (int)node->reg->ids.prefix_len - 1,
             node->reg->ids.prefix);
    snprintf(cl->all_channel, sizeof(cl->all_channel), "%s:all", cl->prefix);
    snprintf(cl->node_channel, sizeof(cl->node_channel), "%s:n:%s", cl->prefix, cl->name);
    snprintf(cl->node_key_prefix, sizeof(cl->node_key_prefix), "%s:node:", cl->prefix);
    sha1_hex(history_publish_script, sizeof(history_publish_script) - 1, cl->publish_sha);
    cl->node = node;
    cl->loop = loop;
    mw_outbox_init(&cl->outbox, cfg->cluster_outbox_size, cfg->cluster_outbox_max_age);
    if (mw_dedup_init(&cl->dedup, DEDUP_ORIGINS) != 0 ||
        rconn_init(cl, &cl->sub, "subscriber", 1) != 0 ||
        rconn_init(cl, &cl->cmd, "command", 0) != 0) {
        mw_dedup_free(&cl->dedup);
        free(cl->sub.sent);
        free(cl);
        return MW_ENOMEM;
    }
    uv_timer_init(loop, &cl->watchdog);
    cl->watchdog.data = cl;
    uv_timer_start(&cl->watchdog, on_watchdog, WATCHDOG_MS, WATCHDOG_MS);
    uv_unref((uv_handle_t *)&cl->watchdog);
    snprintf(cl->node_key, sizeof(cl->node_key), "%s:node:%s", cl->prefix, cl->name);
    uv_timer_init(loop, &cl->heartbeat);
    cl->heartbeat.data = cl;
    {
        uint64_t every = cfg->cluster_presence_ttl / 3;
        uv_timer_start(&cl->heartbeat, on_heartbeat, every, every);
    }
    uv_unref((uv_handle_t *)&cl->heartbeat);
    node->topics->on_first = on_first;
    node->topics->on_last = on_last;
    node->topics->on_presence = on_presence;
    node->topics->ud = cl;
    node->cluster = cl;
    if (cl->path[0] != '\0')
        mw_log_info("cluster: node %s on Redis unix:%s (channels %s:*)", cl->name, cl->path,
                    cl->prefix);
    else
        mw_log_info("cluster: node %s on Redis %s:%d db %d (channels %s:*)", cl->name, cl->host,
                    cl->port, cl->db, cl->prefix);
    rconn_connect(&cl->cmd);
    rconn_connect(&cl->sub);
    return 0;
}

static void on_timer_closed(uv_handle_t *h)
{
    mw_cluster_t *cl = h->data;
    /* Whichever of the timers closes last frees the cluster. */
    if (--cl->closing == 0) {
        mw_dedup_free(&cl->dedup);
        free(cl->sub.sent);
        free(cl->cmd.sent);
        free(cl);
    }
}

void mw_cluster_stop(mw_node_t *node)
{
    mw_cluster_t *cl = node->cluster;
    rconn_t *conns[2];

    if (cl == NULL)
        return;
    conns[0] = &cl->sub;
    conns[1] = &cl->cmd;
    cl->stopping = 1;
    node->cluster = NULL;
    node->topics->on_first = node->topics->on_last = NULL;
    node->topics->on_presence = NULL;
    for (int i = 0; i < 2; i++) {
        redisAsyncContext *ac = conns[i]->ac;
        conns[i]->ac = NULL;
        conns[i]->ready = 0; /* for hooks the pending callbacks resume */
        if (ac != NULL) {
            ac->data = NULL;
            redisAsyncFree(ac);
        }
    }
    {
        /* What Redis did not take is lost: said and counted. */
        size_t n = mw_outbox_clear(&cl->outbox, on_item_dropped, cl);
        if (n > 0) {
            node->metrics->cluster_outbox_dropped += n;
            mw_log_warn("cluster: stopping with %zu message(s) for the other nodes that Redis did "
                        "not take; dropped", n);
        }
    }
    cl->sub.timer.data = cl;
    cl->cmd.timer.data = cl;
    cl->closing = 4;
    uv_close((uv_handle_t *)&cl->sub.timer, on_timer_closed);
    uv_close((uv_handle_t *)&cl->cmd.timer, on_timer_closed);
    uv_close((uv_handle_t *)&cl->watchdog, on_timer_closed);
    uv_close((uv_handle_t *)&cl->heartbeat, on_timer_closed);
}
