/* The Redis driver of the server: hiredis's asynchronous API on the node's
 * libuv loop, with our own event glue. See redis_hiredis.h.
 *
 * A link and its poll handle are one allocation, freed when libuv has closed
 * the handle, which is after hiredis has freed the context (its cleanup
 * hook): so a callback hiredis runs late, after a free it deferred because
 * it was inside a callback, still finds the link, muted.
 */
#include "redis_hiredis.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <uv.h>

struct mw_redis_link_s {
    redisAsyncContext *ac; /* NULL once hiredis cleaned up */
    uv_poll_t poll;
    int events;
    const mw_redis_events_t *ev; /* NULL once freed: nothing is reported */
    void *ud;
    mw_redis_cb pubsub_cb; /* the subscriptions' callback: the last given */
    void *pubsub_priv;
};

static char why_buf[128];

/* hiredis on libuv ------------------------------------------------------------------------ */

/* The adapter of hiredis 0.14 drops poll errors, so a refused connect was
 * only noticed by the connect timeout. On an error the requested events are
 * reported anyway, and hiredis finds the socket error itself (SO_ERROR) and
 * fails the connect at once. */
static void on_poll(uv_poll_t *h, int status, int events)
{
    mw_redis_link_t *l = h->data;
    if (status < 0)
        events = l->events;
    if (l->ac != NULL && (events & UV_READABLE))
        redisAsyncHandleRead(l->ac);
    if (l->ac != NULL && (events & UV_WRITABLE)) /* the read may have freed the context */
        redisAsyncHandleWrite(l->ac);
}

static void poll_update(mw_redis_link_t *l, int add, int del)
{
    l->events = (l->events | add) & ~del;
    if (l->events != 0)
        uv_poll_start(&l->poll, l->events, on_poll);
    else
        uv_poll_stop(&l->poll);
}

static void add_read(void *ud)
{
    poll_update(ud, UV_READABLE, 0);
}

static void del_read(void *ud)
{
    poll_update(ud, 0, UV_READABLE);
}

static void add_write(void *ud)
{
    poll_update(ud, UV_WRITABLE, 0);
}

static void del_write(void *ud)
{
    poll_update(ud, 0, UV_WRITABLE);
}

static void poll_closed(uv_handle_t *h)
{
    free(h->data);
}

static void cleanup(void *ud)
{
    mw_redis_link_t *l = ud;
    l->ac = NULL; /* hiredis is freeing it */
    uv_close((uv_handle_t *)&l->poll, poll_closed);
}

/* Reports --------------------------------------------------------------------------------- */

static void on_connect(const redisAsyncContext *ac, int status)
{
    mw_redis_link_t *l = ac->data;

    if (l == NULL || l->ev == NULL)
        return;
    if (status != REDIS_OK) {
        const mw_redis_events_t *ev = l->ev;
        l->ev = NULL; /* hiredis frees the context after this */
        ev->on_connect(l->ud, 0, ac->errstr);
        return;
    }
    l->ev->on_connect(l->ud, 1, NULL);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    mw_redis_link_t *l = ac->data;
    const mw_redis_events_t *ev;

    if (l == NULL || l->ev == NULL)
        return;
    ev = l->ev;
    l->ev = NULL;
    ev->on_disconnect(l->ud, status == REDIS_OK, status == REDIS_OK ? "closed" : ac->errstr);
}

static mw_redis_link_t *hiredis_connect(void *drv, const mw_redis_url_t *url,
                                        const mw_redis_events_t *ev, void *ud, const char **why)
{
    uv_loop_t *loop = drv;
    redisAsyncContext *ac;
    mw_redis_link_t *l;

    ac = url->path[0] ? redisAsyncConnectUnix(url->path) : redisAsyncConnect(url->host, url->port);
    if (ac == NULL || ac->err) {
        snprintf(why_buf, sizeof(why_buf), "%s", ac ? ac->errstr : "out of memory");
        *why = why_buf;
        if (ac != NULL)
            redisAsyncFree(ac);
        return NULL;
    }
    l = calloc(1, sizeof(*l));
    if (l == NULL || uv_poll_init(loop, &l->poll, ac->c.fd) != 0) {
        free(l);
        redisAsyncFree(ac);
        *why = "out of memory";
        return NULL;
    }
    l->ac = ac;
    l->ev = ev;
    l->ud = ud;
    l->poll.data = l;
    ac->ev.data = l;
    ac->ev.addRead = add_read;
    ac->ev.delRead = del_read;
    ac->ev.addWrite = add_write;
    ac->ev.delWrite = del_write;
    ac->ev.cleanup = cleanup;
    ac->data = l;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    return l;
}

/* Commands -------------------------------------------------------------------------------- */

typedef struct {
    mw_redis_cb cb;
    void *priv;
} pending_t;

static void on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    pending_t *p = priv;
    (void)ac;
    p->cb(reply, p->priv);
    free(p);
}

static void on_pubsub(redisAsyncContext *ac, void *reply, void *priv)
{
    mw_redis_link_t *l = priv;
    (void)ac;
    if (l->ev != NULL && l->pubsub_cb != NULL)
        l->pubsub_cb(reply, l->pubsub_priv);
}

static int is_pubsub(const char *cmd, size_t len)
{
    return (len == 9 && strncasecmp(cmd, "subscribe", 9) == 0) ||
           (len == 11 && strncasecmp(cmd, "unsubscribe", 11) == 0);
}

static int hiredis_send(mw_redis_link_t *l, int argc, const char **argv, const size_t *argl,
                        mw_redis_cb cb, void *priv)
{
    pending_t *p;

    if (l->ac == NULL || l->ev == NULL)
        return -1;
    if (is_pubsub(argv[0], argl[0])) {
        l->pubsub_cb = cb;
        l->pubsub_priv = priv;
        return redisAsyncCommandArgv(l->ac, on_pubsub, l, argc, argv, argl) == REDIS_OK ? 0 : -1;
    }
    p = malloc(sizeof(*p));
    if (p == NULL)
        return -1;
    p->cb = cb;
    p->priv = priv;
    if (redisAsyncCommandArgv(l->ac, on_reply, p, argc, argv, argl) != REDIS_OK) {
        free(p);
        return -1;
    }
    return 0;
}

static void hiredis_disconnect(mw_redis_link_t *l)
{
    if (l->ac != NULL)
        redisAsyncDisconnect(l->ac);
}

static void hiredis_free(mw_redis_link_t *l)
{
    redisAsyncContext *ac = l->ac;

    l->ev = NULL; /* no report from now on; the pending replies still run, with NULL */
    if (ac != NULL) {
        ac->data = NULL;
        redisAsyncFree(ac); /* its cleanup closes the poll handle, which frees l */
    }
}

const mw_redis_driver_t mw_redis_hiredis = {
    "hiredis", hiredis_connect, hiredis_send, hiredis_disconnect, hiredis_free,
};
