/* Prometheus text rendering of the server's counters. */
#include "moonwire/metrics.h"
#include "moonwire/cluster.h"
#include "moonwire/lua_host.h"
#include "moonwire/server.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *buf;
    size_t len, cap;
    int failed;
} out_t;

static void put(out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(out_t *o, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (o->failed)
        return;
    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->failed = 1;
            return;
        }
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        char *b = realloc(o->buf, o->cap * 2 + (size_t)n);
        if (b == NULL) {
            o->failed = 1;
            return;
        }
        o->buf = b;
        o->cap = o->cap * 2 + (size_t)n;
    }
}

static void counter(out_t *o, const char *name, const char *help, uint64_t v)
{
    put(o, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name,
        (unsigned long long)v);
}

static void gauge(out_t *o, const char *name, const char *help, uint64_t v)
{
    put(o, "# HELP %s %s\n# TYPE %s gauge\n%s %llu\n", name, help, name, name,
        (unsigned long long)v);
}

size_t mw_metrics_render(const mw_server_t *srv, char **out)
{
    const mw_metrics_t *m = &srv->metrics;
    out_t o = {malloc(4096), 0, 4096, 0};

    if (o.buf == NULL)
        return 0;
    gauge(&o, "moonwire_connections", "Open WebSocket connections.", srv->reg.nopen);
    gauge(&o, "moonwire_sockets", "Accepted sockets not yet closed (any state).", srv->nconns);
    counter(&o, "moonwire_connections_total", "Sockets accepted.", m->connections_total);
    put(&o, "# HELP moonwire_handshakes_total HTTP upgrade requests by result.\n"
            "# TYPE moonwire_handshakes_total counter\n");
#define XX(name, help) put(&o, "moonwire_handshakes_total{result=\"" #name "\"} %llu\n",        \
                           (unsigned long long)m->handshakes[MW_HS_##name]);
    MW_METRICS_HANDSHAKE_MAP(XX)
#undef XX
    counter(&o, "moonwire_http_requests_total", "HTTP requests parsed.", m->http_requests);
    counter(&o, "moonwire_messages_in_total", "WebSocket messages received.", m->messages_in);
    counter(&o, "moonwire_messages_out_total", "WebSocket messages queued to clients.",
            m->messages_out);
    counter(&o, "moonwire_bytes_in_total", "Bytes read from clients.", m->bytes_in);
    counter(&o, "moonwire_bytes_out_total", "Bytes written to clients.", m->bytes_out);
    put(&o, "# HELP moonwire_closes_total Closed WebSocket connections by close code.\n"
            "# TYPE moonwire_closes_total counter\n");
    for (unsigned code = 0; code < 5000; code++)
        if (m->closes[code] != 0)
            put(&o, "moonwire_closes_total{code=\"%u\"} %llu\n", code,
                (unsigned long long)m->closes[code]);
    counter(&o, "moonwire_lua_errors_total", "Lua hooks that failed (raised, time limit, memory).",
            m->hook_errors);
    counter(&o, "moonwire_lua_budget_kills_total", "Hooks stopped by lua.time_limit.",
            m->budget_kills);
    counter(&o, "moonwire_lua_memory_kills_total", "Hooks stopped by lua.memory_limit.",
            m->memory_kills);
    gauge(&o, "moonwire_lua_memory_bytes", "Memory held by the Lua state.",
          srv->lua ? mw_lua_memory(srv->lua) : 0);
    counter(&o, "moonwire_reloads_total", "Reloads attempted (SIGHUP).", m->reloads);
    counter(&o, "moonwire_reload_failures_total", "Reloads that kept the old app.",
            m->reload_failures);
    counter(&o, "moonwire_backpressure_closes_total",
            "Connections closed with 1008 because their queue passed max_buffered.",
            m->backpressure_closes);
    counter(&o, "moonwire_backpressure_drops_total",
            "Messages dropped because the queue passed max_buffered.", m->backpressure_drops);
    put(&o, "# HELP moonwire_event_loop_lag_seconds How late the loop ran its last 500 ms probe.\n"
            "# TYPE moonwire_event_loop_lag_seconds gauge\n"
            "moonwire_event_loop_lag_seconds %.3f\n"
            "# HELP moonwire_event_loop_lag_max_seconds The largest lag seen since start.\n"
            "# TYPE moonwire_event_loop_lag_max_seconds gauge\n"
            "moonwire_event_loop_lag_max_seconds %.3f\n",
        m->loop_lag_ms / 1000.0, m->loop_lag_ms_max / 1000.0);
    if (srv->cluster != NULL || m->cluster_published != 0) {
        gauge(&o, "moonwire_cluster_up", "1 when both Redis connections are up.",
              srv->cluster != NULL && mw_cluster_healthy(srv->cluster));
        counter(&o, "moonwire_cluster_published_total", "Envelopes sent to the backplane.",
                m->cluster_published);
        counter(&o, "moonwire_cluster_received_total", "Envelopes received from other nodes.",
                m->cluster_received);
        counter(&o, "moonwire_cluster_send_failures_total",
                "Cluster sends that failed softly (Redis down or erroring).",
                m->cluster_send_failures);
        counter(&o, "moonwire_cluster_reconnects_total", "Redis connections lost or refused.",
                m->cluster_reconnects);
        counter(&o, "moonwire_cluster_bad_envelopes_total", "Messages on our channels that "
                "were not envelopes of this version.", m->cluster_bad_envelopes);
    }
    counter(&o, "moonwire_tls_reload_failures_total",
            "Reloads whose certificate pair did not load (the old one stays).",
            m->tls_reload_failures);
    counter(&o, "moonwire_tls_handshake_failures_total",
            "TLS connections that failed before the handshake finished.",
            m->tls_handshake_failures);
    if (o.failed) {
        free(o.buf);
        return 0;
    }
    *out = o.buf;
    return o.len;
}
