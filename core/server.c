/* A node: the parts it is made of, the handlers its connections report to,
 * their timeouts, the drain and reloads. See server.h.
 *
 * Timeouts use five lists instead of a timer per connection. A connection
 * enters a list at the back and stamps tl_at, so each list is ordered by
 * tl_at and a periodic sweep only looks at the expired heads: O(expired)
 * per tick and two pointers per connection (nginx and Redis do the same).
 */
#include "moonwire/server.h"
#include "acl.h"
#include "api.h"
#include "api_request.h"
#include "api_queue.h"
#include "backpressure.h"
#include "cluster.h"
#include "redis_hiredis.h"
#include "conn.h"
#include "deflate.h"
#include "handshake.h"
#include "history.h"
#include "http_client.h"
#include "iplimit.h"
#include "lua_dispatch.h"
#include "lua_host.h"
#include "lua_state.h"
#include "lua_task.h"
#include "node.h"
#include "registry.h"
#include "scheduler.h"
#include "static_cache.h"
#include "timer.h"
#include "topics.h"
#include "moonwire/error.h"
#include "moonwire/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mw_server_s {
    mw_node_t node; /* pointers to the parts below, for the pieces above them */
    mw_config_t *cfg;
    mw_metrics_t own_metrics; /* unless a worker counts in shared memory */
    mw_timers_t timers;
    mw_sched_t sched;
    mw_conns_t conns;
    mw_registry_t reg;
    mw_topics_t topics;
    mw_iplimit_t iplimit;
    mw_acl_t healthz_acl;
    mw_acl_t metrics_acl;
    mw_acl_t trusted_proxies;
    mw_acl_t api_acl;
    mw_queue_t *queue; /* the API's stream consumer, with a backplane; or NULL */
    mw_timer_t sweep;
    mw_timer_t drain_timer;
    /* Called when the drain is over (no connection left) or timed out. */
    void (*on_drained)(mw_server_t *srv);
};

#define CONN_OF(link, field) MW_CONTAINER_OF(link, mw_conn_t, field)

/* What its connections report, beyond the request (handshake.c), the
 * message (the Lua host) and the queue bounds (backpressure.c). */

static void on_closed(mw_conn_t *c)
{
    mw_registry_remove(c->conns->node->reg, c);
}

static void on_close(mw_conn_t *c)
{
    mw_node_t *node = c->conns->node;

    /* Unsubscribed first, so on_close sees the room without it. */
    mw_topics_drop_conn(node->topics, c);
    mw_lua_close(node->lua, c);
}

static void on_release(mw_conn_t *c)
{
    mw_node_t *node = c->conns->node;

    mw_api_forget(c);
    mw_hook_request_forget(c);
    mw_lua_forget(node->lua, c);
    mw_registry_remove(node->reg, c);
}

static const mw_conn_handlers_t conn_handlers = {
    .on_request = mw_handshake_request,
    .on_message = mw_lua_message,
    .on_closed = on_closed,
    .on_close = on_close,
    .on_release = on_release,
    .admit = mw_bp_admit,
    .over = mw_bp_over,
    .written = mw_bp_written,
    .flushed = mw_bp_flushed,
    .forget = mw_bp_forget,
};

/* The end of every run of the turn's work: a drain is over when no
 * connection is left, no hook of a closed one waits, no API request or
 * on_request hook is still running, and the backplane has sent what it
 * holds. */
static void on_idle(mw_sched_t *s)
{
    mw_server_t *srv = s->ud;
    void (*done)(mw_server_t *);

    if (!srv->conns.draining || srv->conns.count != 0 ||
        mw_lua_conn_hooks_waiting(srv->node.lua) != 0 || srv->conns.requests_running != 0 ||
        (srv->node.cluster != NULL && mw_cluster_busy(srv->node.cluster)) ||
        srv->on_drained == NULL)
        return;
    done = srv->on_drained;
    srv->on_drained = NULL;
    mw_timer_stop(&srv->timers, &srv->drain_timer);
    done(srv);
}

void mw_server_run_deferred(mw_server_t *srv)
{
    mw_sched_run(&srv->sched);
}

int mw_server_pending(const mw_server_t *srv)
{
    return mw_sched_pending(&srv->sched);
}

/* Expires the heads of the timeout lists. */
static void on_sweep(mw_timer_t *t)
{
    mw_server_t *srv = t->data;
    mw_conns_t *cs = &srv->conns;
    const mw_config_t *cfg = srv->cfg;
    uint64_t now = srv->timers.now;
    mw_list_t *head;

    mw_history_expire(srv->node.history, cfg, now);
    mw_bp_sweep(cs, now);

    head = &cs->tl_handshake;
    while (!mw_list_empty(head)) {
        mw_conn_t *c = CONN_OF(head->next, timeout_link);
        if (cfg->handshake_timeout == 0 || now - c->tl_at < cfg->handshake_timeout)
            break;
        srv->node.metrics->handshakes[MW_HS_timeout]++;
        c->keep_alive = 0;
        mw_conn_reply(c, mw_http_reply(408, NULL, NULL, "408 Request Timeout\n", 20));
    }

    /* A kept-alive connection that sent no new request: closed without a
     * word, as RFC 9112 section 9.8 lets a server do. */
    head = &cs->tl_keepalive;
    while (!mw_list_empty(head)) {
        mw_conn_t *c = CONN_OF(head->next, timeout_link);
        if (now - c->tl_at < cfg->keepalive_timeout)
            break;
        mw_conn_close(c, 0, NULL, 0);
    }

    head = &cs->tl_active;
    while (!mw_list_empty(head)) {
        mw_conn_t *c = CONN_OF(head->next, timeout_link);
        if (cfg->idle_timeout == 0 || now - c->tl_at < cfg->idle_timeout)
            break;
        mw_conn_ping(c);
        mw_conn_set_tlist(c, MW_TL_PINGED);
    }

    head = &cs->tl_pinged;
    while (!mw_list_empty(head)) {
        mw_conn_t *c = CONN_OF(head->next, timeout_link);
        if (now - c->tl_at < cfg->ping_timeout)
            break;
        mw_conn_fail(c, 1001, "idle timeout");
    }

    head = &cs->tl_closing;
    while (!mw_list_empty(head)) {
        mw_conn_t *c = CONN_OF(head->next, timeout_link);
        if (now - c->tl_at < cfg->close_timeout)
            break;
        if (c->state == MW_CONN_HTTP && c->hs != NULL &&
            (c->hs->api_req != NULL || c->hs->hook_req != NULL)) {
            if (cs->draining) {
                /* Draining: its request runs on, up to shutdown_timeout (then 503). */
                mw_conn_set_tlist(c, MW_TL_CLOSING);
                continue;
            }
            /* The app took longer than a reply may: the client is told so
             * (its late answer goes nowhere); the reply is bounded by
             * close_timeout from now. */
            if (c->hs->api_req != NULL)
                mw_api_give_up(c, 504, "the API call took longer than limits.close_timeout", NULL);
            else
                mw_hook_request_give_up(c, 504, "on_request took longer than limits.close_timeout",
                                        NULL);
            continue;
        }
        /* The peer did not finish the closing handshake in time. */
        mw_conn_on_eof(c);
    }
    mw_server_run_deferred(srv);
}

static uint64_t sweep_interval(const mw_config_t *cfg)
{
    uint64_t shortest = cfg->close_timeout;
    const uint32_t others[] = {cfg->handshake_timeout, cfg->idle_timeout, cfg->ping_timeout,
                               cfg->backpressure_timeout, cfg->keepalive_timeout};
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++)
        if (others[i] != 0 && others[i] < shortest)
            shortest = others[i];
    shortest /= 4;
    return shortest < 10 ? 10 : shortest > 1000 ? 1000 : shortest;
}

/* Every part of a server can be closed zeroed or half made, so a failed
 * new undoes itself with mw_server_free. */
static int init(mw_server_t *srv, mw_config_t *cfg, uint64_t now, char *err, size_t errlen)
{
    mw_node_t *node = &srv->node;
    int r;
    size_t bad;
    /* A standalone node's history epoch is its incarnation: a restart starts a
     * new one, which tells clients their offsets are void. */
    char epoch[48];

    srv->cfg = cfg;
    mw_timers_init(&srv->timers, now);
    mw_timer_init(&srv->sweep, on_sweep, srv);
    mw_timer_init(&srv->drain_timer, NULL, srv);
    mw_sched_init(&srv->sched);
    mw_conns_init(&srv->conns, &srv->sched);
    srv->sched.on_idle = on_idle;
    srv->sched.ud = srv;

    node->cfg = cfg;
    node->metrics = &srv->own_metrics;
    node->timers = &srv->timers;
    node->sched = &srv->sched;
    node->conns = &srv->conns;
    node->reg = &srv->reg;
    node->iplimit = &srv->iplimit;
    node->topics = &srv->topics;
    node->healthz_acl = &srv->healthz_acl;
    node->metrics_acl = &srv->metrics_acl;
    node->trusted_proxies = &srv->trusted_proxies;
    node->api_acl = &srv->api_acl;

    srv->conns.on = &conn_handlers;
    srv->conns.cfg = cfg;
    srv->conns.metrics = node->metrics;
    srv->conns.timers = &srv->timers;
    srv->conns.ids = &srv->reg.ids;
    srv->conns.iplimit = &srv->iplimit;
    srv->conns.node = node;

    if ((r = mw_registry_init(&srv->reg, cfg->node_id, NULL)) != 0) {
        snprintf(err, errlen, "registry: %s", mw_strerror(r));
        return r;
    }
    if ((r = mw_topics_init(&srv->topics)) != 0 || (r = mw_iplimit_init(&srv->iplimit)) != 0) {
        snprintf(err, errlen, "topics: %s", mw_strerror(r));
        return r;
    }
    /* The entries were checked by mw_config_validate. */
    if (mw_acl_init(&srv->healthz_acl, (const char *const *)cfg->healthz_allow.items,
                    cfg->healthz_allow.n, &bad) != 0 ||
        mw_acl_init(&srv->metrics_acl, (const char *const *)cfg->metrics_allow.items,
                    cfg->metrics_allow.n, &bad) != 0 ||
        mw_acl_init(&srv->trusted_proxies, (const char *const *)cfg->trusted_proxies.items,
                    cfg->trusted_proxies.n, &bad) != 0 ||
        mw_acl_init(&srv->api_acl, (const char *const *)cfg->api_allow.items, cfg->api_allow.n,
                    &bad) != 0) {
        snprintf(err, errlen, "http allowlists: out of memory");
        return MW_ENOMEM;
    }
    r = mw_timer_start(&srv->timers, &srv->sweep, sweep_interval(cfg), sweep_interval(cfg));
    if (r != 0) {
        snprintf(err, errlen, "timers: %s", mw_strerror(r));
        return r;
    }
    snprintf(epoch, sizeof(epoch), "%.*s", (int)srv->reg.ids.prefix_len - 1, srv->reg.ids.prefix);
    if ((r = mw_history_new(&node->history, epoch)) != 0) {
        snprintf(err, errlen, "history: %s", mw_strerror(r));
        return r;
    }
    srv->topics.history = node->history;
    srv->topics.max_topics = cfg->max_topics;
    srv->topics.max_subs = cfg->max_subscriptions;
    return mw_lua_new(node, &node->lua, err, errlen);
}

mw_server_t *mw_server_new(mw_config_t *cfg, uint64_t now, char *err, size_t errlen)
{
    mw_server_t *srv = calloc(1, sizeof(*srv));

    if (srv == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (init(srv, cfg, now, err, errlen) != 0) {
        mw_server_free(srv);
        return NULL;
    }
    return srv;
}

void mw_server_free(mw_server_t *srv)
{
    if (srv == NULL)
        return;
    /* No task may wait on an HTTP call when the state goes. */
    mw_server_stop_http(srv);
    if (srv->node.lua != NULL)
        mw_lua_free(srv->node.lua);
    srv->node.lua = NULL;
    mw_timer_stop(&srv->timers, &srv->sweep);
    mw_timers_close(&srv->timers);
    mw_topics_close(&srv->topics);
    mw_iplimit_close(&srv->iplimit);
    mw_acl_close(&srv->healthz_acl);
    mw_acl_close(&srv->metrics_acl);
    mw_acl_close(&srv->trusted_proxies);
    mw_acl_close(&srv->api_acl);
    mw_history_free(srv->node.history);
    srv->node.history = NULL;
    mw_registry_close(&srv->reg);
    free(srv);
}

void mw_server_start(mw_server_t *srv)
{
    mw_lua_start(srv->node.lua);
}

int mw_server_start_cluster(mw_server_t *srv, struct uv_loop_s *loop, char *err, size_t errlen)
{
    int r = mw_cluster_start(&srv->node, &mw_redis_hiredis, loop, err, errlen);
    if (r != 0)
        return r;
    return mw_queue_start(&srv->node, &mw_redis_hiredis, loop, &srv->queue, err, errlen);
}

void mw_server_stop_cluster(mw_server_t *srv)
{
    mw_queue_stop(srv->queue);
    srv->queue = NULL;
    mw_cluster_stop(&srv->node);
}

int mw_server_start_http(mw_server_t *srv, struct uv_loop_s *loop, char *err, size_t errlen)
{
    return mw_http_client_new(&srv->node.http, loop, &srv->timers, srv->cfg, srv->node.metrics,
                              err, errlen);
}

void mw_server_stop_http(mw_server_t *srv)
{
    mw_http_client_t *hc = srv->node.http;

    if (hc == NULL)
        return;
    srv->node.http = NULL; /* calls the closing wakes are refused: no client */
    mw_http_client_close(hc);
}

void mw_server_pools_drain(void)
{
    mw_static_cache_drain();
    mw_pmd_pool_drain();
    mw_ws_pool_drain();
    mw_http_pool_drain();
    mw_outq_pool_drain();
    mw_frame_pool_drain();
}

/* At the drain's end, the clients still waiting for an API request or an
 * on_request hook get 503 (the task's late answer goes nowhere). Returns
 * how many. */
static size_t refuse_running(mw_conns_t *cs)
{
    mw_list_t *lists[] = {&cs->tl_closing, &cs->tl_handshake};
    mw_list_t *it, *tmp;
    size_t n = 0;

    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
        mw_list_foreach_safe(it, tmp, lists[i])
        {
            mw_conn_t *c = CONN_OF(it, timeout_link);
            if (c->state != MW_CONN_HTTP || c->hs == NULL ||
                (c->hs->api_req == NULL && c->hs->hook_req == NULL))
                continue;
            if (c->hs->api_req != NULL)
                mw_api_give_up(c, 503, "server shutting down", "Retry-After: 5\r\n");
            else
                mw_hook_request_give_up(c, 503, "server shutting down", "Retry-After: 5\r\n");
            n++;
        }
    }
    return n;
}

static void on_drain_timeout(mw_timer_t *t)
{
    mw_server_t *srv = t->data;
    mw_conns_t *cs = &srv->conns;
    size_t refused = refuse_running(cs);

    if (refused > 0) {
        mw_log_warn("drain: %zu API request(s) or on_request hook(s) still running after %u ms; "
                    "answered 503",
                    refused, srv->cfg->shutdown_timeout);
        mw_server_run_deferred(srv); /* the 503s go out before the cut */
    }
    if (cs->count > 0)
        mw_log_warn("drain: %zu connection(s) still open after %u ms; closing them", cs->count,
                    srv->cfg->shutdown_timeout);
    else if (mw_lua_conn_hooks_waiting(srv->node.lua) > 0)
        mw_log_warn("drain: %zu hook(s) of closed connections still waiting on Redis after %u ms; "
                    "they end with the backplane",
                    mw_lua_conn_hooks_waiting(srv->node.lua), srv->cfg->shutdown_timeout);
    else
        mw_log_warn("drain: the outbox still holds messages for the other nodes after %u ms",
                    srv->cfg->shutdown_timeout);
    /* Every connection left, whatever it is doing (one that arrived during
     * the drain and sent nothing too): mw_conn_on_eof takes each out of its
     * list, and the loop can end. */
    {
        mw_list_t *lists[] = {&cs->tl_closing, &cs->tl_handshake, &cs->tl_active, &cs->tl_pinged,
                              &cs->tl_keepalive};
        for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
            while (!mw_list_empty(lists[i]))
                mw_conn_on_eof(CONN_OF(lists[i]->next, timeout_link));
    }
    mw_server_run_deferred(srv);
    if (srv->on_drained != NULL) {
        void (*done)(mw_server_t *) = srv->on_drained;
        srv->on_drained = NULL;
        done(srv);
    }
}

void mw_server_drain(mw_server_t *srv, void (*on_drained)(mw_server_t *srv))
{
    mw_conns_t *cs = &srv->conns;
    mw_list_t *it, *tmp;

    if (cs->draining)
        return;
    cs->draining = 1;
    srv->on_drained = on_drained;
    mw_log_info("draining %zu connection(s)", cs->count);
    mw_list_foreach_safe(it, tmp, &cs->tl_handshake)
    {
        mw_conn_close(CONN_OF(it, timeout_link), 0, NULL, 0);
    }
    mw_list_foreach_safe(it, tmp, &cs->tl_keepalive)
    {
        mw_conn_close(CONN_OF(it, timeout_link), 0, NULL, 0);
    }
    mw_list_foreach_safe(it, tmp, &srv->reg.open)
    {
        mw_conn_close(CONN_OF(it, open_link), 1001, "server shutting down", 20);
    }
    srv->drain_timer.cb = on_drain_timeout;
    mw_timer_start(&srv->timers, &srv->drain_timer, srv->cfg->shutdown_timeout, 0);
    mw_server_run_deferred(srv);
}

int mw_server_draining(const mw_server_t *srv)
{
    return srv->conns.draining;
}

static int lists_differ(const mw_strlist_t *a, const mw_strlist_t *b)
{
    if (a->n != b->n)
        return 1;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->items[i], b->items[i]) != 0)
            return 1;
    return 0;
}

static int strs_differ(const char *a, const char *b)
{
    return (a == NULL) != (b == NULL) || (a != NULL && strcmp(a, b) != 0);
}

void mw_server_apply_config(mw_server_t *srv, mw_config_t *fresh)
{
    mw_config_t *cfg = srv->cfg;
    mw_acl_t healthz, metrics, trusted, api;
    size_t bad;

#define SWAP(f)                                                                                    \
    do {                                                                                           \
        __typeof__(cfg->f) t_ = cfg->f;                                                            \
        cfg->f = fresh->f;                                                                         \
        fresh->f = t_;                                                                             \
    } while (0)
    if (lists_differ(&cfg->listen, &fresh->listen) ||
        lists_differ(&cfg->tls_listen, &fresh->tls_listen) ||
        strs_differ(cfg->node_id, fresh->node_id) ||
        lists_differ(&cfg->cluster_redis, &fresh->cluster_redis) ||
        lists_differ(&cfg->cluster_sentinels, &fresh->cluster_sentinels) ||
        strs_differ(cfg->cluster_master, fresh->cluster_master) ||
        strs_differ(cfg->cluster_sentinel_password, fresh->cluster_sentinel_password) ||
        strs_differ(cfg->cluster_prefix, fresh->cluster_prefix) ||
        strs_differ(cfg->cluster_password, fresh->cluster_password) ||
        cfg->workers != fresh->workers)
        mw_log_warn("reload: listen, tls.listen, node_id, workers and cluster.redis/prefix/password/"
                    "sentinels/master changes take a restart; the rest is reloaded");
    if (cfg->compression_level != fresh->compression_level)
        mw_pmd_pool_drain(); /* deflaters are made again at the new level */

    SWAP(path);
    SWAP(script);
    SWAP(log_level);
    SWAP(log_json);
    SWAP(log_file);
    SWAP(ws_paths);
    SWAP(subprotocols);
    SWAP(allowed_origins);
    SWAP(max_message_size);
    SWAP(compression);
    SWAP(compression_threshold);
    SWAP(compression_level);
    SWAP(client_no_context_takeover);
    SWAP(server_max_window_bits);
    SWAP(client_max_window_bits);
    SWAP(max_connections);
    SWAP(max_connections_per_ip);
    SWAP(max_head_size);
    SWAP(handshake_timeout);
    SWAP(idle_timeout);
    SWAP(ping_timeout);
    SWAP(close_timeout);
    SWAP(shutdown_timeout);
    SWAP(max_buffered);
    SWAP(backpressure);
    SWAP(backpressure_timeout);
    SWAP(max_topics);
    SWAP(max_subscriptions);
    SWAP(time_limit);
    SWAP(memory_limit);
    SWAP(max_sleep);
    SWAP(max_waiting);
    SWAP(healthz);
    SWAP(metrics);
    SWAP(healthz_allow);
    SWAP(metrics_allow);
    SWAP(trusted_proxies);
    SWAP(http_client_max_concurrent);
    SWAP(http_client_max_response);
    SWAP(http_client_max_headers);
    SWAP(http_client_timeout);
    SWAP(http_client_max_timeout);
    SWAP(http_client_ca_file);
    SWAP(api_key);
    SWAP(api_allow);
    SWAP(api_max_body);
    SWAP(queue_read_count);
    SWAP(queue_block);
    SWAP(queue_claim_after);
    SWAP(queue_max_pending);
    SWAP(queue_max_deliveries);
    SWAP(queue_push_maxlen);
    SWAP(static_root);
    SWAP(static_index);
    SWAP(static_cache_control);
    SWAP(static_immutable_cache_control);
    SWAP(static_max_file_size);
    SWAP(static_cache_size);
    SWAP(static_max_cached_file);
    SWAP(static_max_open_files);
    SWAP(keepalive_timeout);
    SWAP(keepalive_requests);
    SWAP(tls_cert); /* the certificate reload that follows reads the new files */
    SWAP(tls_key);
    SWAP(cluster_connect_timeout);
    SWAP(cluster_command_timeout);
    SWAP(cluster_reconnect_max);
    SWAP(cluster_presence_ttl);
    SWAP(cluster_outbox_size);
    SWAP(cluster_outbox_max_age);
    SWAP(cluster_outbox_replay);
    SWAP(history_topics);
    SWAP(history_size);
    SWAP(history_ttl);
    SWAP(history_field);
    SWAP(history_max_topics);
    SWAP(history_max_bytes);
    SWAP(L);
    SWAP(app_ref);
#undef SWAP

    /* The entries were validated with the file. */
    if (mw_acl_init(&healthz, (const char *const *)cfg->healthz_allow.items,
                    cfg->healthz_allow.n, &bad) == 0) {
        mw_acl_close(&srv->healthz_acl);
        srv->healthz_acl = healthz;
    }
    if (mw_acl_init(&metrics, (const char *const *)cfg->metrics_allow.items,
                    cfg->metrics_allow.n, &bad) == 0) {
        mw_acl_close(&srv->metrics_acl);
        srv->metrics_acl = metrics;
    }
    if (mw_acl_init(&trusted, (const char *const *)cfg->trusted_proxies.items,
                    cfg->trusted_proxies.n, &bad) == 0) {
        mw_acl_close(&srv->trusted_proxies);
        srv->trusted_proxies = trusted;
    }
    if (mw_acl_init(&api, (const char *const *)cfg->api_allow.items, cfg->api_allow.n, &bad) ==
        0) {
        mw_acl_close(&srv->api_acl);
        srv->api_acl = api;
    }
    mw_lua_set_limits(srv->node.lua, cfg->time_limit, cfg->memory_limit);
    /* Lower topic bounds refuse new subscriptions; lower history bounds apply
     * at the next sweep. */
    srv->topics.max_topics = cfg->max_topics;
    srv->topics.max_subs = cfg->max_subscriptions;
    mw_timer_start(&srv->timers, &srv->sweep, sweep_interval(cfg), sweep_interval(cfg));
}

int mw_server_reload(mw_server_t *srv)
{
    char err[1024];
    int r = mw_lua_reload(srv->node.lua, err, sizeof(err));

    srv->node.metrics->reloads++;
    if (r != 0) {
        srv->node.metrics->reload_failures++;
        mw_log_error("reload failed, the previous app keeps serving: %s", err);
        return r;
    }
    mw_log_info("reloaded %s", srv->cfg->script);
    return 0;
}

mw_metrics_t *mw_server_metrics(mw_server_t *srv)
{
    return srv->node.metrics;
}

void mw_server_set_metrics(mw_server_t *srv, mw_metrics_t *m)
{
    srv->node.metrics = m;
    srv->conns.metrics = m;
}

void mw_server_set_now(mw_server_t *srv, uint64_t now)
{
    srv->timers.now = now;
}

const char *mw_server_id(const mw_server_t *srv, size_t *len)
{
    *len = srv->reg.ids.prefix_len - 1;
    return srv->reg.ids.prefix;
}

mw_node_t *mw_server_node(mw_server_t *srv)
{
    return &srv->node;
}
