/* A connection to Redis for the backplane over a driver's link: connect,
 * backoff, the commands awaiting replies and their timeout. See
 * cluster_redis.h.
 */
#include "cluster_redis.h"
#include "node.h"
#include "timer.h"
#include "moonwire/config.h"
#include "moonwire/error.h"
#include "moonwire/log.h"
#include "moonwire/metrics.h"

#include <hiredis/hiredis.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define BACKOFF_MIN_MS 100

/* Connecting ------------------------------------------------------------------------------ */

static void track_sent(mw_rconn_t *rc)
{
    rc->sent[(rc->head + rc->count) % MW_RCONN_PENDING_MAX] = rc->node->timers->now;
    rc->count++;
}

void mw_rconn_replied(mw_rconn_t *rc)
{
    if (rc->count > 0) {
        rc->head = (rc->head + 1) % MW_RCONN_PENDING_MAX;
        rc->count--;
    }
}

static uint32_t jitter(uint32_t ms)
{
    uint32_t r = 0;
    if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r))
        r = (uint32_t)clock();
    /* 80% to 120% of ms, so nodes do not all come back at once. */
    return ms * 4 / 5 + (ms > 0 ? r % (ms * 2 / 5 + 1) : 0);
}

static void on_retry(mw_timer_t *t)
{
    mw_rconn_t *rc = t->data;
    if (rc->link != NULL) {
        /* A connect that never finished: give up on it. */
        mw_redis_link_t *l = rc->link;
        rc->link = NULL;
        mw_log_warn("cluster: %s connection to Redis timed out", rc->name);
        rc->driver->free(l);
    }
    if (!rc->stopping)
        mw_rconn_connect(rc);
}

static void schedule_retry(mw_rconn_t *rc)
{
    uint32_t cap = rc->node->cfg->cluster_reconnect_max;
    if (rc->stopping)
        return;
    rc->backoff_ms = rc->backoff_ms == 0 ? BACKOFF_MIN_MS : rc->backoff_ms * 2;
    if (rc->backoff_ms > cap)
        rc->backoff_ms = cap;
    mw_timer_start(rc->node->timers, &rc->timer, jitter(rc->backoff_ms), 0);
}

/* Fails every command still waiting (their callbacks run with no reply), and
 * tells the owner, which holds the outbox back until both connections are up
 * again. */
static void went_down(mw_rconn_t *rc, const char *why)
{
    if (rc->ready)
        mw_log_warn("cluster: lost the %s connection to Redis (%s); retrying", rc->name, why);
    rc->ready = 0;
    rc->link = NULL;
    rc->head = rc->count = 0;
    rc->node->metrics->cluster_reconnects++;
    schedule_retry(rc);
    rc->on_down(rc);
}

static void on_disconnect(void *ud, int ok, const char *why)
{
    went_down(ud, ok ? "closed" : why);
}

static void on_ready_reply(void *r, void *priv)
{
    mw_rconn_t *rc = priv;
    redisReply *reply = r;
    mw_rconn_replied(rc);
    if (reply == NULL || rc->link == NULL)
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        mw_log_error("cluster: Redis refused the %s connection: %s", rc->name, reply->str);
        rc->driver->disconnect(rc->link);
        return;
    }
    if (!rc->ready) {
        rc->ready = 1;
        rc->backoff_ms = 0;
        mw_log_info("cluster: %s connection to Redis is up", rc->name);
        rc->on_up(rc);
    }
}

static void on_role_reply(void *r, void *priv)
{
    mw_rconn_t *rc = priv;
    redisReply *reply = r;
    const char *role = "?";

    mw_rconn_replied(rc);
    if (reply == NULL || rc->link == NULL)
        return;
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
        reply->element[0]->type == REDIS_REPLY_STRING) {
        role = reply->element[0]->str;
        if (strcmp(role, "master") == 0)
            return;
    } else if (reply->type == REDIS_REPLY_ERROR) {
        role = reply->str;
    }
    mw_log_warn("cluster: %s:%d, which the sentinels named master '%s', says ROLE %s (%s "
                "connection); asking the sentinels again",
                rc->at.host, rc->at.port, rc->sentinels->master, role, rc->name);
    mw_rconn_drop(rc, "not the master");
}

static void send_hello(mw_rconn_t *rc, int argc, const char **argv)
{
    size_t argl[2];
    for (int i = 0; i < argc; i++)
        argl[i] = strlen(argv[i]);
    mw_rconn_send(rc, on_ready_reply, rc, argc, argv, argl);
}

static void on_connect(void *ud, int ok, const char *why)
{
    mw_rconn_t *rc = ud;

    mw_timer_stop(rc->node->timers, &rc->timer);
    if (!ok) {
        if (rc->backoff_ms == 0 || rc->backoff_ms >= rc->node->cfg->cluster_reconnect_max) {
            if (rc->sentinels != NULL)
                mw_log_warn("cluster: cannot connect to Redis (%s) at %s:%d, where the "
                            "sentinels say master '%s' is: %s", rc->name, rc->at.host,
                            rc->at.port, rc->sentinels->master, why);
            else
                mw_log_warn("cluster: cannot connect to Redis (%s): %s", rc->name, why);
        }
        rc->link = NULL;
        rc->node->metrics->cluster_reconnects++;
        schedule_retry(rc);
        return;
    }
    /* AUTH and SELECT go first; the connection counts as up with the last reply. */
    if (rc->url->password[0] != '\0')
        send_hello(rc, 2, (const char *[]){"AUTH", rc->url->password});
    if (!rc->subscriber && rc->url->db != 0) {
        char db[16];
        snprintf(db, sizeof(db), "%d", rc->url->db);
        send_hello(rc, 2, (const char *[]){"SELECT", db});
    }
    /* What a sentinel names may have been demoted since: only a master will do. */
    if (rc->sentinels != NULL)
        mw_rconn_send(rc, on_role_reply, rc, 1, (const char *[]){"ROLE"}, (const size_t[]){4});
    if (rc->on_hello != NULL)
        rc->on_hello(rc);
    send_hello(rc, 1, (const char *[]){"PING"});
}

static const mw_redis_events_t rconn_events = {on_connect, on_disconnect};

int mw_rconn_init(mw_rconn_t *rc, const char *name, int subscriber, const mw_redis_url_t *url,
                  mw_node_t *node, const mw_redis_driver_t *driver, void *drv, void *ud)
{
    memset(rc, 0, sizeof(*rc));
    rc->name = name;
    rc->subscriber = subscriber;
    rc->url = url;
    rc->node = node;
    rc->driver = driver;
    rc->drv = drv;
    rc->ud = ud;
    rc->sent = calloc(MW_RCONN_PENDING_MAX, sizeof(uint64_t));
    if (rc->sent == NULL)
        return MW_ENOMEM;
    mw_timer_init(&rc->timer, on_retry, rc);
    return 0;
}

static void connect_to(mw_rconn_t *rc, const mw_redis_url_t *url)
{
    const char *why = NULL;
    mw_redis_link_t *l = rc->driver->connect(rc->drv, url, &rconn_events, rc, &why);

    if (l == NULL) {
        mw_log_warn("cluster: cannot connect to Redis (%s): %s", rc->name, why);
        schedule_retry(rc);
        return;
    }
    rc->link = l;
    rc->head = rc->count = 0;
    mw_timer_start(rc->node->timers, &rc->timer, rc->node->cfg->cluster_connect_timeout, 0);
}

/* The sentinels answered (host) or none did. */
static void on_located(void *ud, const char *host, int port, const char *why)
{
    mw_rconn_t *rc = ud;

    if (rc->stopping)
        return;
    if (host == NULL) {
        if (!rc->ask.quiet)
            mw_log_warn("cluster: no sentinel gave the address of master '%s' to the %s "
                        "connection (last: %s); asking again", rc->sentinels->master, rc->name,
                        why);
        rc->node->metrics->cluster_reconnects++;
        schedule_retry(rc);
        return;
    }
    if (strcmp(rc->at.host, host) != 0 || rc->at.port != port)
        mw_log_info("cluster: the sentinels say master '%s' is at %s:%d (%s connection)",
                    rc->sentinels->master, host, port, rc->name);
    rc->at = *rc->url;
    snprintf(rc->at.host, sizeof(rc->at.host), "%s", host);
    rc->at.path[0] = '\0';
    rc->at.port = port;
    connect_to(rc, &rc->at);
}

void mw_rconn_connect(mw_rconn_t *rc)
{
    if (rc->sentinels == NULL) {
        connect_to(rc, rc->url);
        return;
    }
    /* Each failing sentinel is logged on the first try and at the cap of the
     * backoff, as a failing connect is. */
    rc->ask.quiet = !(rc->backoff_ms == 0 || rc->backoff_ms >= rc->node->cfg->cluster_reconnect_max);
    mw_sentinel_ask(&rc->ask, on_located, rc);
}

void mw_rconn_use_sentinels(mw_rconn_t *rc, mw_sentinels_t *sentinels)
{
    rc->sentinels = sentinels;
    mw_sentinel_ask_init(&rc->ask, sentinels, rc->name);
}

int mw_rconn_locate(const mw_config_t *cfg, size_t shard, mw_redis_url_t *url,
                    mw_sentinels_t *sentinels, mw_node_t *node, const mw_redis_driver_t *driver,
                    void *drv, char *err, size_t errlen)
{
    memset(sentinels, 0, sizeof(*sentinels));
    if (cfg->cluster_sentinels.n > 0 && shard == 0) {
        int r;
        memset(url, 0, sizeof(*url));
        r = mw_sentinels_init(sentinels, (const char *const *)cfg->cluster_sentinels.items,
                              cfg->cluster_sentinels.n, cfg->cluster_master,
                              cfg->cluster_sentinel_password, cfg->cluster_connect_timeout,
                              node->timers, driver, drv, err, errlen);
        if (r != 0)
            return r == MW_ENOMEM ? r : MW_ECONFIG;
    } else if (shard >= cfg->cluster_redis.n ||
               mw_redis_url_parse(cfg->cluster_redis.items[shard], url) != 0) {
        snprintf(err, errlen,
                 "config: 'cluster.redis' is not redis://host[:port][/db] or "
                 "unix:///path: %s",
                 shard < cfg->cluster_redis.n ? cfg->cluster_redis.items[shard] : "(none)");
        return MW_ECONFIG;
    }
    if (cfg->cluster_password != NULL)
        snprintf(url->password, sizeof(url->password), "%s", cfg->cluster_password);
    return 0;
}

void mw_rconn_drop(mw_rconn_t *rc, const char *why)
{
    mw_redis_link_t *l = rc->link;

    went_down(rc, why);
    rc->driver->free(l); /* runs the pending callbacks with no reply */
}

void mw_rconn_check(mw_rconn_t *rc, uint64_t now)
{
    uint32_t timeout = rc->node->cfg->cluster_command_timeout;

    if (rc->link != NULL && rc->count > 0 && now - rc->sent[rc->head] > timeout) {
        mw_log_warn("cluster: Redis did not answer the %s connection within %u ms", rc->name,
                    timeout);
        mw_rconn_drop(rc, "timeout");
    }
}

void mw_rconn_stop(mw_rconn_t *rc)
{
    mw_redis_link_t *l = rc->link;

    rc->stopping = 1;
    rc->link = NULL;
    rc->ready = 0; /* for hooks the pending callbacks resume */
    mw_timer_stop(rc->node->timers, &rc->timer);
    if (rc->sentinels != NULL)
        mw_sentinel_ask_stop(&rc->ask);
    if (l != NULL)
        rc->driver->free(l);
}

void mw_rconn_free(mw_rconn_t *rc)
{
    free(rc->sent);
    rc->sent = NULL;
}

/* Commands -------------------------------------------------------------------------------- */

int mw_rconn_send(mw_rconn_t *rc, mw_redis_cb cb, void *priv, int argc, const char **argv,
                  const size_t *argl)
{
    if (rc->link == NULL || rc->driver->send(rc->link, argc, argv, argl, cb, priv) != 0)
        return MW_EAGAIN;
    track_sent(rc);
    return 0;
}

int mw_rconn_subscribe(mw_rconn_t *rc, mw_redis_cb cb, void *priv, int argc, const char **argv,
                       const size_t *argl)
{
    if (rc->link == NULL || rc->driver->send(rc->link, argc, argv, argl, cb, priv) != 0)
        return MW_EAGAIN;
    return 0;
}

static void on_fire_reply(void *r, void *priv)
{
    mw_rconn_t *rc = priv;
    redisReply *reply = r;
    mw_rconn_replied(rc);
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR)
        rc->node->metrics->cluster_send_failures++;
}

int mw_rconn_fire(mw_rconn_t *rc, int argc, const char **argv, const size_t *argl)
{
    if (!rc->ready || rc->count >= MW_RCONN_PENDING_MAX) {
        rc->node->metrics->cluster_send_failures++;
        return MW_EAGAIN;
    }
    if (rc->driver->send(rc->link, argc, argv, argl, on_fire_reply, rc) != 0) {
        rc->node->metrics->cluster_send_failures++;
        return MW_EAGAIN;
    }
    track_sent(rc);
    return 0;
}

typedef struct {
    mw_rconn_t *rc;
    mw_cluster_reply_cb cb;
    void *ud;
} command_t;

static void on_command_reply(void *r, void *priv)
{
    command_t *cmd = priv;
    mw_rconn_replied(cmd->rc);
    cmd->cb(cmd->ud, r);
    free(cmd);
}

int mw_rconn_command(mw_rconn_t *rc, int argc, const char **argv, const size_t *argl,
                     mw_cluster_reply_cb cb, void *ud)
{
    command_t *cmd;

    if (!rc->ready || rc->count >= MW_RCONN_PENDING_MAX)
        return MW_EAGAIN;
    cmd = malloc(sizeof(*cmd));
    if (cmd == NULL)
        return MW_ENOMEM;
    cmd->rc = rc;
    cmd->cb = cb;
    cmd->ud = ud;
    if (rc->driver->send(rc->link, argc, argv, argl, on_command_reply, cmd) != 0) {
        free(cmd);
        return MW_EAGAIN;
    }
    track_sent(rc);
    return 0;
}

/* Scripts --------------------------------------------------------------------------------- */

typedef struct {
    mw_rconn_t *rc;
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

void mw_rconn_sha1(const char *text, size_t len, char out[41])
{
    unsigned char d[20];
    SHA1((const unsigned char *)text, len, d);
    for (int i = 0; i < 20; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static void send_script(script_call_t *sc);

static void on_script_reply(void *r, void *priv)
{
    script_call_t *sc = priv;
    redisReply *reply = r;
    mw_rconn_replied(sc->rc);
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
        mw_rconn_sha1(sc->script, sc->script_len, sha);
        argv[0] = "EVALSHA", argl[0] = 7;
        argv[1] = sha, argl[1] = 40;
    }
    if (!sc->rc->ready ||
        sc->rc->driver->send(sc->rc->link, sc->argc, argv, argl, on_script_reply, sc) != 0) {
        sc->cb(sc->ud, NULL);
        script_call_free(sc);
        return;
    }
    track_sent(sc->rc);
}

int mw_rconn_script(mw_rconn_t *rc, const char *script, size_t script_len, int argc,
                    const char **argv, const size_t *argl, mw_cluster_reply_cb cb, void *ud)
{
    script_call_t *sc;

    if (!rc->ready || rc->count >= MW_RCONN_PENDING_MAX || argc + 2 > 16)
        return MW_EAGAIN;
    sc = calloc(1, sizeof(*sc));
    if (sc == NULL)
        return MW_ENOMEM;
    sc->rc = rc;
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
