/* The libuv binding of a server: listeners and accept, the loop glue (the
 * timer heap on one uv_timer, the turn's work from the prepare and check
 * phases, the loop's lag), and TLS certificates. Accepted sockets become
 * connections on the TCP transport (tcp.c).
 */
#include "moonwire/net.h"
#include "gauges.h"
#include "node.h"
#include "tcp.h"
#include "timer.h"
#include "moonwire/config.h"
#include "moonwire/error.h"
#include "moonwire/log.h"
#include "moonwire/metrics.h"
#include "moonwire/server.h"
#include "moonwire/tls.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define ACCEPT_BATCH 128       /* connections accepted per readable event */
#define FDS_LOG_EVERY_MS 10000 /* one "too many open files" line per this */
#define ACCEPT_PAUSE_MS 100    /* out of fds without a reserve: accepting waits this */

/* A listening socket of our own, polled with libuv. libuv's uv_listen
 * hides running out of file descriptors: its accept loop closes the
 * connections it cannot serve with a reserve descriptor and never tells
 * the callback. Accepting here says so (see out_of_fds). */
typedef struct {
    uv_poll_t poll; /* readable while connections wait in the backlog */
    int fd;         /* the listening socket; -1 once closed */
    uint8_t tls;    /* accepts TLS connections */
    uint8_t api;    /* an api.listen listener: its connections serve the API alone */
    uint8_t polled; /* poll was initialised, so it is closed with uv_close */
    mw_net_t *net;
} listener_t;

struct mw_net_s {
    mw_server_t *srv;
    mw_node_t *node; /* the server's parts */
    uv_loop_t *loop;
    listener_t *listeners;
    size_t nlisteners;
    uv_prepare_t prepare;
    uv_check_t check;
    uv_timer_t timer;
    uv_timer_t lag_timer; /* measures how late the loop runs a 500 ms timer */
    uint64_t lag_expected; /* uv_hrtime() when it should fire */
    mw_tcp_env_t tcp; /* what its connections share */
    int has_tls;
    mw_tls_ctx_t tls; /* certificate and key, when TLS listeners exist */
    int reserve_fd;   /* /dev/null, given up for a moment to refuse connections when out of fds */
    uv_timer_t accept_timer; /* polls the listeners again after a pause */
    uint64_t fds_logged_at;  /* uv_now() of the last "too many open files" line; 0: none yet */
    uint64_t fds_unlogged;   /* connections refused since that line */
};

/* Listeners -------------------------------------------------------------------- */

static void listen_all(mw_net_t *net, int on);

static void on_accept_timer(uv_timer_t *h)
{
    listen_all(h->data, 1);
}

/* Stops accepting for ACCEPT_PAUSE_MS, so the loop does not spin on a
 * listener that stays readable while accept() keeps failing. */
static void pause_accepting(mw_net_t *net)
{
    listen_all(net, 0);
    uv_timer_start(&net->accept_timer, on_accept_timer, ACCEPT_PAUSE_MS, 0);
}

/* accept() failed for want of file descriptors (EMFILE for the process,
 * ENFILE for the system). The connections waiting in the backlog can not be
 * served: give up the reserve descriptor for a moment to accept and close
 * each of them at once (the client sees the connection closed, instead of
 * waiting in the backlog), as libuv does; without a reserve, pause. Either
 * way the server accepts again as soon as descriptors are free. */
static void out_of_fds(listener_t *l, int err)
{
    mw_net_t *net = l->net;
    uint64_t now = uv_now(net->loop), refused = 0;

    if (net->reserve_fd >= 0) {
        close(net->reserve_fd);
        for (int i = 0; i < ACCEPT_BATCH; i++) {
            int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
            if (fd < 0) {
                if (errno == EINTR || errno == ECONNABORTED)
                    continue;
                break;
            }
            close(fd);
            refused++;
        }
        net->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    } else {
        pause_accepting(net);
    }
    net->node->metrics->accept_failures += refused;
    net->fds_unlogged += refused;
    if (net->fds_logged_at == 0 || now - net->fds_logged_at >= FDS_LOG_EVERY_MS) {
        mw_log_warn("accept: %s (%llu connection(s) closed unserved; raise LimitNOFILE or "
                    "lower limits.max_connections)",
                    uv_strerror(uv_translate_sys_error(err)),
                    (unsigned long long)net->fds_unlogged);
        net->fds_logged_at = now > 0 ? now : 1;
        net->fds_unlogged = 0;
    }
}

static void on_acceptable(uv_poll_t *h, int status, int events)
{
    listener_t *l = h->data;
    mw_net_t *net = l->net;
    (void)events;

    if (status < 0) {
        mw_log_warn("accept: %s", uv_strerror(status));
        pause_accepting(net);
        return;
    }
    for (int i = 0; i < ACCEPT_BATCH && l->fd >= 0; i++) {
        mw_addr_t addr;
        socklen_t len = sizeof(addr);
        int fd;

        memset(&addr, 0, sizeof(addr));
        fd = accept4(l->fd, &addr.sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            mw_tcp_serve(&net->tcp, fd, &addr, l->tls ? &net->tls : NULL, l->api);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return;
        if (errno == EMFILE || errno == ENFILE) {
            out_of_fds(l, errno);
            return;
        }
        /* ENOBUFS, ENOMEM, EPERM (a firewall): say so, and try again later
         * rather than spin on a listener that stays readable. */
        mw_log_warn("accept: %s", uv_strerror(uv_translate_sys_error(errno)));
        pause_accepting(net);
        return;
    }
}

/* Starts or stops polling every open listener. */
static void listen_all(mw_net_t *net, int on)
{
    for (size_t i = 0; i < net->nlisteners; i++) {
        listener_t *l = &net->listeners[i];
        if (!l->polled || l->fd < 0 || uv_is_closing((uv_handle_t *)&l->poll))
            continue;
        if (on)
            uv_poll_start(&l->poll, UV_READABLE, on_acceptable);
        else
            uv_poll_stop(&l->poll);
    }
}

/* Loop glue ---------------------------------------------------------------------- */

static void on_timer(uv_timer_t *h)
{
    mw_net_t *net = h->data;
    mw_timers_run(net->node->timers, uv_now(net->loop));
    mw_server_run_deferred(net->srv);
}

/* The whole timer heap rides on one uv_timer, re-armed before each poll. */
static void arm_timer(mw_net_t *net)
{
    int64_t next = mw_timers_next(net->node->timers);
    if (next < 0)
        uv_timer_stop(&net->timer);
    else
        uv_timer_start(&net->timer, on_timer, (uint64_t)next, 0);
}

#define LAG_INTERVAL_MS 500

static void on_lag_timer(uv_timer_t *h)
{
    mw_net_t *net = h->data;
    uint64_t now = uv_hrtime();
    uint64_t lag_ms = now > net->lag_expected ? (now - net->lag_expected) / 1000000 : 0;
    mw_metrics_t *m = net->node->metrics;

    m->loop_lag_ms = lag_ms;
    if (lag_ms > m->loop_lag_ms_max)
        m->loop_lag_ms_max = lag_ms;
    mw_gauges_publish(net->node); /* for the other workers' /metrics */
    net->lag_expected = now + LAG_INTERVAL_MS * 1000000ULL;
}

static void on_prepare(uv_prepare_t *h)
{
    mw_net_t *net = h->data;
    net->node->timers->now = uv_now(net->loop);
    mw_server_run_deferred(net->srv);
    if (!uv_is_closing((uv_handle_t *)&net->timer))
        arm_timer(net);
}

static void on_check(uv_check_t *h)
{
    mw_net_t *net = h->data;
    net->node->timers->now = uv_now(net->loop);
    mw_server_run_deferred(net->srv);
}

/* Makes the listening socket of one address. With reuseport (SO_REUSEPORT),
 * the workers of one master share the address and the kernel spreads
 * connections over them. Returns the socket, or a negative libuv error. */
static int listen_socket(const struct sockaddr_storage *addr, int reuseport)
{
    int one = 1, fd, r;
    socklen_t len = addr->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                : sizeof(struct sockaddr_in);

    fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return uv_translate_sys_error(errno);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if ((reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) ||
        (addr->ss_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0) ||
        bind(fd, (const struct sockaddr *)addr, len) != 0 || listen(fd, 511) != 0) {
        r = uv_translate_sys_error(errno);
        close(fd);
        return r;
    }
    return fd;
}

/* Binds one listener. Returns 0 or a libuv error with err set. */
static int bind_listener(mw_net_t *net, listener_t *l, const char *text, int tls, char *err,
                         size_t errlen)
{
    const char *kind = tls == 2 ? " (api)" : tls ? " (tls)" : "";
    struct sockaddr_storage addr;
    char why[300];
    int r;

    if (mw_config_parse_addr(text, &addr, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "listen%s on %s: %s", kind, text, why);
        return UV_EINVAL;
    }
    l->net = net;
    l->tls = tls == 1;
    l->api = tls == 2;
    l->fd = -1;
    net->nlisteners++;
    r = listen_socket(&addr, net->node->cfg->reuseport);
    if (r >= 0) {
        l->fd = r;
        r = uv_poll_init_socket(net->loop, &l->poll, l->fd);
        if (r == 0) {
            l->polled = 1;
            l->poll.data = l;
            r = uv_poll_start(&l->poll, UV_READABLE, on_acceptable);
        }
    }
    if (r != 0)
        snprintf(err, errlen, "listen%s on %s: %s", kind, text, uv_strerror(r));
    return r;
}

int mw_net_start(mw_server_t *srv, uv_loop_t *loop, mw_net_t **out, char *err, size_t errlen)
{
    mw_node_t *node = mw_server_node(srv);
    const mw_config_t *cfg = node->cfg;
    mw_net_t *net = calloc(1, sizeof(*net));
    int r = 0;

    *out = NULL;
    if (net == NULL) {
        snprintf(err, errlen, "out of memory");
        return UV_ENOMEM;
    }
    net->srv = srv;
    net->node = node;
    net->loop = loop;
    net->tcp.loop = loop;
    loop->data = &net->tcp; /* how each connection finds it (tcp.h) */
    net->tcp.node = node;
    net->tcp.read_buf = malloc(MW_TCP_READ_BUF);
    net->listeners =
        calloc(cfg->listen.n + cfg->tls_listen.n + cfg->api_listen.n, sizeof(listener_t));
    if (net->tcp.read_buf == NULL || net->listeners == NULL) {
        free(net->tcp.read_buf);
        free(net->listeners);
        free(net);
        snprintf(err, errlen, "out of memory");
        return UV_ENOMEM;
    }
    *out = net;
    node->loop = loop;
    node->timers->now = uv_now(loop);
    net->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    uv_timer_init(loop, &net->accept_timer);
    net->accept_timer.data = net;

    if (cfg->tls_listen.n > 0) {
        if (mw_tls_ctx_init(&net->tls, cfg->tls_cert, cfg->tls_key, err, errlen) != 0) {
            r = UV_EINVAL;
            goto fail;
        }
        net->has_tls = 1;
    }
    for (size_t i = 0; i < cfg->listen.n && r == 0; i++)
        r = bind_listener(net, &net->listeners[net->nlisteners], cfg->listen.items[i], 0, err,
                          errlen);
    for (size_t i = 0; i < cfg->tls_listen.n && r == 0; i++)
        r = bind_listener(net, &net->listeners[net->nlisteners], cfg->tls_listen.items[i], 1,
                          err, errlen);
    /* 2: plain, for the API alone. */
    for (size_t i = 0; i < cfg->api_listen.n && r == 0; i++)
        r = bind_listener(net, &net->listeners[net->nlisteners], cfg->api_listen.items[i], 2,
                          err, errlen);
    if (r != 0)
        goto fail;

    uv_prepare_init(loop, &net->prepare);
    net->prepare.data = net;
    uv_prepare_start(&net->prepare, on_prepare);
    uv_check_init(loop, &net->check);
    net->check.data = net;
    uv_check_start(&net->check, on_check);
    uv_timer_init(loop, &net->timer);
    net->timer.data = net;
    uv_timer_init(loop, &net->lag_timer);
    net->lag_timer.data = net;
    net->lag_expected = uv_hrtime() + LAG_INTERVAL_MS * 1000000ULL;
    uv_timer_start(&net->lag_timer, on_lag_timer, LAG_INTERVAL_MS, LAG_INTERVAL_MS);
    uv_unref((uv_handle_t *)&net->lag_timer);
    /* These run every turn but must not keep the loop alive on their own. */
    uv_unref((uv_handle_t *)&net->prepare);
    uv_unref((uv_handle_t *)&net->check);
    return 0;

fail:
    mw_net_close(net); /* the caller runs the loop to finish closing, then mw_net_free() */
    return r;
}

int mw_net_reload(mw_net_t *net)
{
    const mw_config_t *cfg;
    char err[512];

    if (net == NULL || !net->has_tls)
        return 0;
    cfg = net->node->cfg;
    if ((strcmp(net->tls.cert, cfg->tls_cert) != 0 || strcmp(net->tls.key, cfg->tls_key) != 0) &&
        mw_tls_ctx_set_files(&net->tls, cfg->tls_cert, cfg->tls_key) != 0)
        return MW_ENOMEM;
    if (mw_tls_ctx_reload(&net->tls, err, sizeof(err)) != 0) {
        net->node->metrics->tls_reload_failures++;
        mw_log_error("%s; the previous certificate stays in use", err);
        return MW_ECONFIG;
    }
    mw_log_info("tls: reloaded %s", net->tls.cert);
    return 0;
}

void mw_net_stop_listening(mw_net_t *net)
{
    for (size_t i = 0; net != NULL && i < net->nlisteners; i++) {
        listener_t *l = &net->listeners[i];
        if (l->polled && !uv_is_closing((uv_handle_t *)&l->poll))
            uv_close((uv_handle_t *)&l->poll, NULL);
        if (l->fd >= 0) {
            close(l->fd); /* libuv allows it once the poll is closing */
            l->fd = -1;
        }
    }
    if (net != NULL)
        uv_timer_stop(&net->accept_timer);
}

void mw_net_close(mw_net_t *net)
{
    if (net == NULL)
        return;
    mw_net_stop_listening(net);
    if (!uv_is_closing((uv_handle_t *)&net->accept_timer))
        uv_close((uv_handle_t *)&net->accept_timer, NULL);
    if (net->prepare.loop != NULL && !uv_is_closing((uv_handle_t *)&net->prepare)) {
        uv_close((uv_handle_t *)&net->prepare, NULL);
        uv_close((uv_handle_t *)&net->check, NULL);
        uv_close((uv_handle_t *)&net->timer, NULL);
        uv_close((uv_handle_t *)&net->lag_timer, NULL);
    }
}

void mw_net_free(mw_net_t *net)
{
    if (net == NULL)
        return;
    net->node->loop = NULL;
    if (net->has_tls)
        mw_tls_ctx_close(&net->tls);
    if (net->reserve_fd >= 0)
        close(net->reserve_fd);
    free(net->tcp.read_buf);
    free(net->listeners);
    free(net);
}
