/* The loop-independent server: deferred work, timeouts, drain, reload.
 *
 * Timeouts use five lists instead of a timer per connection. A connection
 * enters a list at the back and stamps tl_at, so each list is ordered by
 * tl_at and a periodic sweep only looks at the expired heads: O(expired)
 * per tick and two pointers per connection (nginx and Redis do the same).
 */
#include "moonwire/server.h"
#include "backpressure.h"
#include "cluster.h"
#include "deflate.h"
#include "lua_host.h"
#include "static.h"
#include "moonwire/error.h"
#include "moonwire/log.h"

#include <stdio.h>
#include <string.h>

#define CONN_OF(link, field) MW_CONTAINER_OF(link, mw_conn_t, field)

static mw_list_t *tlist_head(mw_server_t *srv, mw_conn_tlist_t tl)
{
    switch (tl) {
    case MW_TL_HANDSHAKE:
        return &srv->tl_handshake;
    case MW_TL_ACTIVE:
        return &srv->tl_active;
    case MW_TL_PINGED:
        return &srv->tl_pinged;
    case MW_TL_CLOSING:
        return &srv->tl_closing;
    case MW_TL_KEEPALIVE:
        return &srv->tl_keepalive;
    default:
        return NULL;
    }
}

void mw_server_set_tlist(mw_server_t *srv, mw_conn_t *c, mw_conn_tlist_t tl)
{
    mw_list_t *head = tlist_head(srv, tl);

    if (mw_list_linked(&c->timeout_link))
        mw_list_remove(&c->timeout_link);
    c->tlist = (uint8_t)tl;
    c->tl_at = srv->timers.now;
    if (head != NULL)
        mw_list_insert_tail(head, &c->timeout_link);
}

void mw_server_touch(mw_server_t *srv, mw_conn_t *c)
{
    c->last_rx = srv->timers.now;
    if (c->tlist == MW_TL_ACTIVE || c->tlist == MW_TL_PINGED)
        mw_server_set_tlist(srv, c, MW_TL_ACTIVE);
}

void mw_server_want_flush(mw_server_t *srv, mw_conn_t *c)
{
    if (!mw_list_linked(&c->flush_link))
        mw_list_insert_tail(&srv->flush_list, &c->flush_link);
}

void mw_server_queue_close(mw_server_t *srv, mw_conn_t *c)
{
    if (c->queued_close)
        return;
    c->queued_close = 1;
    mw_list_insert_tail(&srv->close_queue, &c->close_link);
}

void mw_server_run_deferred(mw_server_t *srv)
{
    /* on_close hooks may queue frames and flushes may find closed peers, so
     * go until both are empty. Each connection closes once: this ends. */
    while (!mw_list_empty(&srv->close_queue) || !mw_list_empty(&srv->flush_list)) {
        while (!mw_list_empty(&srv->close_queue)) {
            mw_conn_t *c = CONN_OF(srv->close_queue.next, close_link);
            mw_list_remove(&c->close_link);
            c->queued_close = 0;
            /* Unsubscribed first, so on_close sees the room without it. */
            mw_topics_drop_conn(&srv->topics, c);
            mw_lua_close(srv->lua, c);
        }
        while (!mw_list_empty(&srv->flush_list)) {
            mw_conn_t *c = CONN_OF(srv->flush_list.next, flush_link);
            mw_list_remove(&c->flush_link);
            if (c->resume_http)
                mw__conn_http_resume(c); /* the next request of a kept-alive connection */
            if (!mw_outq_empty(&c->outq))
                c->tp->flush(c);
            else if (c->finishing)
                c->tp->finish(c);
            mw_bp_flushed(c); /* a queue is judged after the turn's writes */
        }
    }
    if (srv->draining && srv->nconns == 0 && mw_lua_conn_hooks_waiting(srv->lua) == 0 &&
        (srv->cluster == NULL || !mw_cluster_busy(srv->cluster)) && srv->on_drained != NULL) {
        void (*done)(mw_server_t *) = srv->on_drained;
        srv->on_drained = NULL;
        mw_timer_stop(&srv->timers, &srv->drain_timer);
        done(srv);
    }
}

/* Expires the heads of the timeout lists. */
static void on_sweep(mw_timer_t *t)
{
    mw_server_t *srv = t->data;
    const mw_config_t *cfg = srv->cfg;
    uint64_t now = srv->timers.now;
    mw_list_t *head;

    mw_history_expire(srv->history, cfg, now);
    mw_bp_sweep(srv, now);

    head = &srv->tl_handshake;
    while (!mw_list_empty(head)) {
        mw_conn_t *c = CONN_OF(head->next, timeout_link);
        if (cfg->handshake_timeout == 0 || now - c->tl_at < cfg->handshake_timeout)
            break;
        srv->metrics->handshakes[MW_HS_timeout]++;
        c->keep_alive = 0;
        mw_conn_reply(c, mw_http_reply(408, NULL, NULL, "408 Request Timeout\n", 20));
    }

    /* A kept-alive connection that sent no new request: closed without a
     * word, as RFC 9112 section 9.8 lets a server do. */
    head = &srv->tl_keepalive;
    while (!mw_list_empty(head)) {
        mw_conn_t *c = CONN_OF(head->next, timeout_link);
        if (now - c->tl_at < cfg->keepalive_timeout)
            break;
        mw_conn_close(c, 0, NULL, 0);
    }

    head = &srv->tl_active;
    while (!mw_list_empty(head)) {
        mw_conn_t *c = CONN_OF(head->next, timeout_link);
        if (cfg->idle_timeout == 0 || now - c->tl_at < cfg->idle_timeout)
            break;
        mw_conn_ping(c);
        mw_server_set_tlist(srv, c, MW_TL_PINGED);
    }

    head = &srv->tl_pinged;
    while (!mw_list_empty(head)) {
        mw_conn_t *c = CONN_OF(head->next, timeout_link);
        if (now - c->tl_at < cfg->ping_timeout)
            break;
        mw_conn_fail(c, 1001, "idle timeout");
    }

    head = &srv->tl_closing;
    while (!mw_list_empty(head)) {
        mw_conn_t *c = CONN_OF(head->next, timeout_link);
        if (now - c->tl_at < cfg->close_timeout)
            break;
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

/* Every part of a server can be closed zeroed or half made, so a failed init
 * undoes itself with mw_server_close. */
int mw_server_init(mw_server_t *srv, mw_config_t *cfg, uint64_t now, char *err, size_t errlen)
{
    int r;
    size_t bad;
    /* A standalone node's history epoch is its incarnation: a restart starts a
     * new one, which tells clients their offsets are void. */
    char epoch[48];

    memset(srv, 0, sizeof(*srv));
    srv->cfg = cfg;
    srv->metrics = &srv->own_metrics;
    mw_list_init(&srv->tl_handshake);
    mw_list_init(&srv->tl_active);
    mw_list_init(&srv->tl_pinged);
    mw_list_init(&srv->tl_closing);
    mw_list_init(&srv->tl_keepalive);
    mw_list_init(&srv->flush_list);
    mw_list_init(&srv->backed_up);
    mw_list_init(&srv->close_queue);
    mw_timers_init(&srv->timers, now);
    mw_timer_init(&srv->sweep, on_sweep, srv);
    mw_timer_init(&srv->drain_timer, NULL, srv);
    if ((r = mw_registry_init(&srv->reg, cfg->node_id, NULL)) != 0) {
        snprintf(err, errlen, "registry: %s", mw_strerror(r));
        goto fail;
    }
    if ((r = mw_topics_init(&srv->topics)) != 0 || (r = mw_iplimit_init(&srv->iplimit)) != 0) {
        snprintf(err, errlen, "topics: %s", mw_strerror(r));
        goto fail;
    }
    /* The entries were checked by mw_config_validate. */
    if (mw_acl_init(&srv->healthz_acl, (const char *const *)cfg->healthz_allow.items,
                    cfg->healthz_allow.n, &bad) != 0 ||
        mw_acl_init(&srv->metrics_acl, (const char *const *)cfg->metrics_allow.items,
                    cfg->metrics_allow.n, &bad) != 0) {
        r = MW_ENOMEM;
        snprintf(err, errlen, "http allowlists: out of memory");
        goto fail;
    }
    r = mw_timer_start(&srv->timers, &srv->sweep, sweep_interval(cfg), sweep_interval(cfg));
    if (r != 0) {
        snprintf(err, errlen, "timers: %s", mw_strerror(r));
        goto fail;
    }
    snprintf(epoch, sizeof(epoch), "%.*s", (int)srv->reg.prefix_len - 1, srv->reg.prefix);
    if ((r = mw_history_new(&srv->history, epoch)) != 0) {
        snprintf(err, errlen, "history: %s", mw_strerror(r));
        goto fail;
    }
    srv->topics.history = srv->history;
    srv->topics.max_topics = cfg->max_topics;
    srv->topics.max_subs = cfg->max_subscriptions;
    if ((r = mw_lua_new(srv, &srv->lua, err, errlen)) != 0)
        goto fail;
    return 0;

fail:
    mw_server_close(srv);
    return r;
}

void mw_server_close(mw_server_t *srv)
{
    if (srv->lua != NULL)
        mw_lua_free(srv->lua);
    srv->lua = NULL;
    mw_timer_stop(&srv->timers, &srv->sweep);
    mw_timers_close(&srv->timers);
    mw_topics_close(&srv->topics);
    mw_iplimit_close(&srv->iplimit);
    mw_acl_close(&srv->healthz_acl);
    mw_acl_close(&srv->metrics_acl);
    mw_history_free(srv->history);
    srv->history = NULL;
    mw_registry_close(&srv->reg);
}

void mw_server_pools_drain(void)
{
    mw_static_cache_drain();
    mw_pmd_pool_drain();
    mw_ws_pool_drain();
    mw_outq_pool_drain();
    mw_frame_pool_drain();
}

static void on_drain_timeout(mw_timer_t *t)
{
    mw_server_t *srv = t->data;
    if (srv->nconns > 0)
        mw_log_warn("drain: %zu connection(s) still open after %u ms; closing them", srv->nconns,
                    srv->cfg->shutdown_timeout);
    else if (mw_lua_conn_hooks_waiting(srv->lua) > 0)
        mw_log_warn("drain: %zu hook(s) of closed connections still waiting on Redis after %u ms; "
                    "they end with the backplane",
                    mw_lua_conn_hooks_waiting(srv->lua), srv->cfg->shutdown_timeout);
    else
        mw_log_warn("drain: the outbox still holds messages for the other nodes after %u ms",
                    srv->cfg->shutdown_timeout);
    /* Every connection left, whatever it is doing (one that arrived during
     * the drain and sent nothing too): mw_conn_on_eof takes each out of its
     * list, and the loop can end. */
    {
        mw_list_t *lists[] = {&srv->tl_closing, &srv->tl_handshake, &srv->tl_active,
                              &srv->tl_pinged, &srv->tl_keepalive};
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

void mw_server_drain(mw_server_t *srv)
{
    mw_list_t *it, *tmp;

    if (srv->draining)
        return;
    srv->draining = 1;
    mw_log_info("draining %zu connection(s)", srv->nconns);
    mw_list_foreach_safe(it, tmp, &srv->tl_handshake)
    {
        mw_conn_close(CONN_OF(it, timeout_link), 0, NULL, 0);
    }
    mw_list_foreach_safe(it, tmp, &srv->tl_keepalive)
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
    mw_acl_t healthz, metrics;
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
        strs_differ(cfg->cluster_redis, fresh->cluster_redis) ||
        strs_differ(cfg->cluster_prefix, fresh->cluster_prefix) ||
        strs_differ(cfg->cluster_password, fresh->cluster_password) ||
        cfg->workers != fresh->workers)
        mw_log_warn("reload: listen, tls.listen, node_id, workers and cluster.redis/prefix/password "
                    "changes take a restart; the rest is reloaded");
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
    SWAP(healthz);
    SWAP(metrics);
    SWAP(healthz_allow);
    SWAP(metrics_allow);
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
    mw_lua_set_limits(srv->lua, cfg->time_limit, cfg->memory_limit);
    /* Lower topic bounds refuse new subscriptions; lower history bounds apply
     * at the next sweep. */
    srv->topics.max_topics = cfg->max_topics;
    srv->topics.max_subs = cfg->max_subscriptions;
    mw_timer_start(&srv->timers, &srv->sweep, sweep_interval(cfg), sweep_interval(cfg));
}

int mw_server_reload(mw_server_t *srv)
{
    char err[1024];
    int r = mw_lua_reload(srv->lua, err, sizeof(err));

    srv->metrics->reloads++;
    if (r != 0) {
        srv->metrics->reload_failures++;
        mw_log_error("reload failed, the previous app keeps serving: %s", err);
        return r;
    }
    mw_log_info("reloaded %s", srv->cfg->script);
    return 0;
}
