/* A connection to Redis for the backplane: hiredis on libuv, connect,
 * backoff, the commands awaiting replies and their timeout. See
 * cluster_redis.h.
 */
#include "cluster_redis.h"
#include "node.h"
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

#define BACKOFF_MIN_MS 100

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

/* Connecting ------------------------------------------------------------------------------ */

static void track_sent(mw_rconn_t *rc)
{
    rc->sent[(rc->head + rc->count) % MW_RCONN_PENDING_MAX] = mw_rconn_now(rc);
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
        r = (uint32_t)uv_hrtime();
    /* 80% to 120% of ms, so nodes do not all come back at once. */
    return ms * 4 / 5 + (ms > 0 ? r % (ms * 2 / 5 + 1) : 0);
}

static void on_retry(uv_timer_t *t)
{
    mw_rconn_t *rc = t->data;
    if (rc->ac != NULL) {
        /* A connect that never finished: give up on it. */
        redisAsyncContext *ac = rc->ac;
        rc->ac = NULL;
        mw_log_warn("cluster: %s connection to Redis timed out", rc->name);
        ac->data = NULL;
        redisAsyncFree(ac);
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
    uv_timer_start(&rc->timer, on_retry, jitter(rc->backoff_ms), 0);
}

/* Fails every command still waiting (their callbacks run with no reply), and
 * tells the owner, which holds the outbox back until both connections are up
 * again. */
static void went_down(mw_rconn_t *rc, const char *why)
{
    if (rc->ready)
        mw_log_warn("cluster: lost the %s connection to Redis (%s); retrying", rc->name, why);
    rc->ready = 0;
    rc->ac = NULL;
    rc->head = rc->count = 0;
    rc->node->metrics->cluster_reconnects++;
    schedule_retry(rc);
    rc->on_down(rc);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    mw_rconn_t *rc = ac->data;
    if (rc == NULL)
        return; /* freed on purpose */
    went_down(rc, status == REDIS_OK ? "closed" : ac->errstr);
}

static void on_ready_reply(redisAsyncContext *ac, void *r, void *priv)
{
    mw_rconn_t *rc = priv;
    redisReply *reply = r;
    (void)ac;
    mw_rconn_replied(rc);
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
        rc->on_up(rc);
    }
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    mw_rconn_t *rc = ac->data;

    if (rc == NULL)
        return;
    uv_timer_stop(&rc->timer);
    if (status != REDIS_OK) {
        if (rc->backoff_ms == 0 || rc->backoff_ms >= rc->node->cfg->cluster_reconnect_max)
            mw_log_warn("cluster: cannot connect to Redis (%s): %s", rc->name, ac->errstr);
        rc->ac = NULL;
        rc->node->metrics->cluster_reconnects++;
        schedule_retry(rc);
        return;
    }
    /* AUTH and SELECT go first; the connection counts as up with the last reply. */
    if (rc->url->password[0] != '\0') {
        redisAsyncCommand(rc->ac, on_ready_reply, rc, "AUTH %s", rc->url->password);
        track_sent(rc);
    }
    if (!rc->subscriber && rc->url->db != 0) {
        redisAsyncCommand(rc->ac, on_ready_reply, rc, "SELECT %d", rc->url->db);
        track_sent(rc);
    }
    if (rc->on_hello != NULL)
        rc->on_hello(rc);
    redisAsyncCommand(rc->ac, on_ready_reply, rc, "PING");
    track_sent(rc);
}

int mw_rconn_init(mw_rconn_t *rc, const char *name, int subscriber, const mw_redis_url_t *url,
                  mw_node_t *node, uv_loop_t *loop, void *ud)
{
    memset(rc, 0, sizeof(*rc));
    rc->name = name;
    rc->subscriber = subscriber;
    rc->url = url;
    rc->node = node;
    rc->loop = loop;
    rc->ud = ud;
    rc->sent = calloc(MW_RCONN_PENDING_MAX, sizeof(uint64_t));
    if (rc->sent == NULL)
        return MW_ENOMEM;
    uv_timer_init(loop, &rc->timer);
    rc->timer.data = rc;
    return 0;
}

void mw_rconn_connect(mw_rconn_t *rc)
{
    const mw_redis_url_t *url = rc->url;
    redisAsyncContext *ac;

    ac = url->path[0] ? redisAsyncConnectUnix(url->path) : redisAsyncConnect(url->host, url->port);
    if (ac == NULL || ac->err) {
        mw_log_warn("cluster: cannot connect to Redis (%s): %s", rc->name,
                    ac ? ac->errstr : "out of memory");
        if (ac != NULL)
            redisAsyncFree(ac);
        schedule_retry(rc);
        return;
    }
    if (rpoll_attach(ac, rc->loop) != REDIS_OK) {
        redisAsyncFree(ac);
        schedule_retry(rc);
        return;
    }
    ac->data = rc;
    rc->ac = ac;
    rc->head = rc->count = 0;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    uv_timer_start(&rc->timer, on_retry, rc->node->cfg->cluster_connect_timeout, 0);
}

void mw_rconn_drop(mw_rconn_t *rc, const char *why)
{
    redisAsyncContext *ac = rc->ac;

    ac->data = NULL;
    went_down(rc, why);
    redisAsyncFree(ac); /* runs the pending callbacks with no reply */
}

void mw_rconn_check(mw_rconn_t *rc, uint64_t now)
{
    uint32_t timeout = rc->node->cfg->cluster_command_timeout;

    if (rc->ac != NULL && rc->count > 0 && now - rc->sent[rc->head] > timeout) {
        mw_log_warn("cluster: Redis did not answer the %s connection within %u ms", rc->name,
                    timeout);
        mw_rconn_drop(rc, "timeout");
    }
}

void mw_rconn_stop(mw_rconn_t *rc)
{
    redisAsyncContext *ac = rc->ac;

    rc->stopping = 1;
    rc->ac = NULL;
    rc->ready = 0; /* for hooks the pending callbacks resume */
    if (ac != NULL) {
        ac->data = NULL;
        redisAsyncFree(ac);
    }
}

void mw_rconn_free(mw_rconn_t *rc)
{
    free(rc->sent);
    rc->sent = NULL;
}

/* Commands -------------------------------------------------------------------------------- */

int mw_rconn_send(mw_rconn_t *rc, redisCallbackFn *cb, void *priv, int argc, const char **argv,
                  const size_t *argl)
{
    if (redisAsyncCommandArgv(rc->ac, cb, priv, argc, argv, argl) != REDIS_OK)
        return MW_EAGAIN;
    track_sent(rc);
    return 0;
}

static void on_fire_reply(redisAsyncContext *ac, void *r, void *priv)
{
    mw_rconn_t *rc = priv;
    redisReply *reply = r;
    (void)ac;
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
    redisAsyncCommandArgv(rc->ac, on_fire_reply, rc, argc, argv, argl);
    track_sent(rc);
    return 0;
}

typedef struct {
    mw_rconn_t *rc;
    mw_cluster_reply_cb cb;
    void *ud;
} command_t;

static void on_command_reply(redisAsyncContext *ac, void *r, void *priv)
{
    command_t *cmd = priv;
    (void)ac;
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
    if (redisAsyncCommandArgv(rc->ac, on_command_reply, cmd, argc, argv, argl) != REDIS_OK) {
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

static void on_script_reply(redisAsyncContext *ac, void *r, void *priv)
{
    script_call_t *sc = priv;
    redisReply *reply = r;
    (void)ac;
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
    if (!sc->rc->ready) {
        sc->cb(sc->ud, NULL);
        script_call_free(sc);
        return;
    }
    redisAsyncCommandArgv(sc->rc->ac, on_script_reply, sc, sc->argc, argv, argl);
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
