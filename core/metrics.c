/* The node's counters: shared between workers, summed, rendered as
 * Prometheus text. See metrics.h. */
#include "moonwire/metrics.h"
#include "moonwire/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* Summed a word at a time: the struct must be nothing but 64-bit words. */
_Static_assert(sizeof(mw_metrics_t) % sizeof(uint64_t) == 0, "mw_metrics_t is uint64_t words");
#define WORDS (sizeof(mw_metrics_t) / sizeof(uint64_t))

static mw_metrics_t *blocks; /* --workers: one per worker, in shared memory */
static int nblocks;

static uint64_t load(const uint64_t *w)
{
    return __atomic_load_n(w, __ATOMIC_RELAXED);
}

int mw_metrics_share(int n)
{
    void *p = mmap(NULL, (size_t)n * sizeof(mw_metrics_t), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);

    if (p == MAP_FAILED)
        return MW_ENOMEM;
    blocks = p; /* zeroed; kept for the life of the process and its children */
    nblocks = n;
    return 0;
}

mw_metrics_t *mw_metrics_block(int index)
{
    return index >= 1 && index <= nblocks ? &blocks[index - 1] : NULL;
}

void mw_metrics_worker_gone(int index)
{
    mw_metrics_t *m = mw_metrics_block(index);

    if (m == NULL)
        return;
    mw_metrics_set(&m->reporting, 0);
    mw_metrics_set(&m->open_connections, 0);
    mw_metrics_set(&m->sockets, 0);
    mw_metrics_set(&m->lua_memory, 0);
    mw_metrics_set(&m->lua_waiting, 0);
    mw_metrics_set(&m->backed_up, 0);
    mw_metrics_set(&m->topics, 0);
    mw_metrics_set(&m->subscriptions, 0);
    mw_metrics_set(&m->history_topics, 0);
    mw_metrics_set(&m->history_bytes, 0);
    mw_metrics_set(&m->static_open_files, 0);
    mw_metrics_set(&m->static_cache_bytes, 0);
    mw_metrics_set(&m->cluster_on, 0);
    mw_metrics_set(&m->cluster_up, 0);
    mw_metrics_set(&m->cluster_outbox_messages, 0);
    mw_metrics_set(&m->cluster_outbox_bytes, 0);
    mw_metrics_set(&m->cluster_shards, 0);
    for (int i = 0; i < MW_METRICS_SHARDS; i++) {
        mw_metrics_set(&m->cluster_shard_up[i], 0);
        mw_metrics_set(&m->cluster_shard_outbox_messages[i], 0);
        mw_metrics_set(&m->cluster_shard_outbox_bytes[i], 0);
    }
    mw_metrics_set(&m->http_client_inflight, 0);
    mw_metrics_set(&m->loop_lag_ms, 0);
}

/* What /metrics shows: own, or with workers every block's summed, but the
 * loop lags are the largest of any worker's. */
static void gather(const mw_metrics_t *own, mw_metrics_t *sum)
{
    uint64_t *s = (uint64_t *)sum;
    uint64_t lag = 0, lag_max = 0;

    if (nblocks == 0) {
        *sum = *own;
        return;
    }
    memset(sum, 0, sizeof(*sum));
    for (int i = 0; i < nblocks; i++) {
        const uint64_t *w = (const uint64_t *)&blocks[i];
        for (size_t k = 0; k < WORDS; k++)
            s[k] += load(&w[k]);
        if (load(&blocks[i].loop_lag_ms) > lag)
            lag = load(&blocks[i].loop_lag_ms);
        if (load(&blocks[i].loop_lag_ms_max) > lag_max)
            lag_max = load(&blocks[i].loop_lag_ms_max);
    }
    sum->loop_lag_ms = lag;
    sum->loop_lag_ms_max = lag_max;
}

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

/* A gauge of each shard of the backplane, labeled shard="i". With workers,
 * summed over them; an up gauge (up) is 1 when every worker has it up. */
static void per_shard(out_t *o, const char *name, const char *help, const mw_metrics_t *m, int up,
                      const uint64_t *v)
{
    uint64_t on = m->cluster_on > 0 ? m->cluster_on : 1;
    uint64_t n = m->cluster_shards / on;

    put(o, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name);
    for (uint64_t i = 0; i < n && i < MW_METRICS_SHARDS; i++)
        put(o, "%s{shard=\"%llu\"} %llu\n", name, (unsigned long long)i,
            (unsigned long long)(up ? v[i] == m->cluster_on : v[i]));
}

size_t mw_metrics_render(const mw_metrics_t *own, char **out)
{
    mw_metrics_t *m = malloc(sizeof(*m));
    out_t o = {malloc(4096), 0, 4096, 0};

    if (m == NULL || o.buf == NULL) {
        free(m);
        free(o.buf);
        return 0;
    }
    gather(own, m);
    if (nblocks > 0)
        gauge(&o, "moonwire_workers", "Workers whose figures are summed here.", m->reporting);
    gauge(&o, "moonwire_connections", "Open WebSocket connections.", m->open_connections);
    gauge(&o, "moonwire_sockets", "Accepted sockets not yet closed (any state).", m->sockets);
    counter(&o, "moonwire_connections_total", "Sockets accepted.", m->connections_total);
    put(&o, "# HELP moonwire_handshakes_total HTTP upgrade requests by result.\n"
            "# TYPE moonwire_handshakes_total counter\n");
#define XX(name, help)                                                                             \
    put(&o, "moonwire_handshakes_total{result=\"" #name "\"} %llu\n",                              \
        (unsigned long long)m->handshakes[MW_HS_##name]);
    MW_METRICS_HANDSHAKE_MAP(XX)
#undef XX
    put(&o, "# HELP moonwire_api_requests_total Server API requests (HTTP and queue) by method and status.\n"
            "# TYPE moonwire_api_requests_total counter\n");
    for (int mi = 0; mi < MW_API__COUNT; mi++) {
        static const char *const names[] = {
#define XX(name) #name,
            MW_METRICS_API_METHOD_MAP(XX)
#undef XX
        };
        static const int codes[] = {
#define XX(code) code,
            MW_METRICS_API_STATUS_MAP(XX)
#undef XX
        };
        for (int si = 0; si < MW_API_S__COUNT; si++)
            if (m->api[mi][si] != 0)
                put(&o, "moonwire_api_requests_total{method=\"%s\",status=\"%d\"} %llu\n",
                    names[mi], codes[si], (unsigned long long)m->api[mi][si]);
    }
    counter(&o, "moonwire_queue_applied_total", "Queue entries applied and acknowledged.",
            m->queue_applied);
    counter(&o, "moonwire_queue_bad_total",
            "Queue entries refused (bad fields or JSON, refused by on_api), acknowledged.",
            m->queue_bad);
    counter(&o, "moonwire_queue_dropped_total",
            "Queue entries that failed for want of Redis on their queue.max_deliveries-th "
            "delivery: acknowledged and dropped.",
            m->queue_dropped);
    counter(&o, "moonwire_queue_claimed_total",
            "Queue entries of a consumer gone for queue.claim_after, claimed by this node.",
            m->queue_claimed);
    counter(&o, "moonwire_queue_read_failures_total",
            "Queue reads, claims and acknowledgements that Redis did not answer.",
            m->queue_read_failures);
    counter(&o, "moonwire_queue_pushed_total", "Entries moonwire.queue.push added.",
            m->queue_pushed);
    counter(&o, "moonwire_queue_push_failures_total",
            "moonwire.queue.push calls that Redis refused or did not answer.",
            m->queue_push_failures);
    counter(&o, "moonwire_accept_failures_total",
            "Connections closed unserved because the process was out of file descriptors.",
            m->accept_failures);
    counter(&o, "moonwire_http_requests_total", "HTTP requests parsed.", m->http_requests);
    counter(&o, "moonwire_http_keepalive_requests_total",
            "HTTP requests on a connection kept alive after an earlier reply.", m->http_reused);
    counter(&o, "moonwire_static_streamed_total",
            "Static replies whose body was streamed from disk in chunks.", m->static_streamed);
    counter(&o, "moonwire_static_busy_total",
            "Static requests refused with 503: static.max_open_files files were streaming.",
            m->static_busy);
    counter(&o, "moonwire_static_cut_total",
            "Static bodies cut short: the file changed or could not be read while streamed.",
            m->static_cut);
    counter(&o, "moonwire_static_gzipped_total",
            "Files compressed with gzip on the fly (once per cached file).", m->static_gzipped);
    gauge(&o, "moonwire_static_open_files", "Files being streamed now.", m->static_open_files);
    gauge(&o, "moonwire_static_cache_bytes", "Bytes of file contents in the static cache.",
          m->static_cache_bytes);
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
    gauge(&o, "moonwire_lua_memory_bytes", "Memory held by the Lua state.", m->lua_memory);
    gauge(&o, "moonwire_lua_hooks_waiting", "Hooks waiting now (moonwire.sleep, Redis, ...).",
          m->lua_waiting);
    counter(&o, "moonwire_lua_wait_refusals_total",
            "Waits refused because lua.max_waiting hooks were waiting already.", m->wait_refusals);
    gauge(&o, "moonwire_topics", "Topics with members (limits.max_topics).", m->topics);
    gauge(&o, "moonwire_subscriptions", "Subscriptions of connections to topics.",
          m->subscriptions);
    put(&o,
        "# HELP moonwire_subscribe_refusals_total Subscriptions refused at a bound.\n"
        "# TYPE moonwire_subscribe_refusals_total counter\n"
        "moonwire_subscribe_refusals_total{limit=\"max_topics\"} %llu\n"
        "moonwire_subscribe_refusals_total{limit=\"max_subscriptions\"} %llu\n",
        (unsigned long long)m->subscribe_refused_topics,
        (unsigned long long)m->subscribe_refused_subs);
    gauge(&o, "moonwire_history_topics", "Topics whose history is kept in memory.",
          m->history_topics);
    gauge(&o, "moonwire_history_bytes", "Bytes of history kept in memory (history.max_bytes).",
          m->history_bytes);
    put(&o,
        "# HELP moonwire_history_refusals_total History messages refused at a bound.\n"
        "# TYPE moonwire_history_refusals_total counter\n"
        "moonwire_history_refusals_total{limit=\"max_topics\"} %llu\n"
        "moonwire_history_refusals_total{limit=\"max_bytes\"} %llu\n"
        "# HELP moonwire_history_dropped_total Topic histories dropped, by why.\n"
        "# TYPE moonwire_history_dropped_total counter\n"
        "moonwire_history_dropped_total{reason=\"bounds\"} %llu\n"
        "moonwire_history_dropped_total{reason=\"ttl\"} %llu\n"
        "moonwire_history_dropped_total{reason=\"memory\"} %llu\n",
        (unsigned long long)m->history_refused_topics, (unsigned long long)m->history_refused_size,
        (unsigned long long)m->history_dropped_bound, (unsigned long long)m->history_dropped_ttl,
        (unsigned long long)m->history_dropped_memory);
    counter(&o, "moonwire_history_trimmed_total",
            "Oldest messages of topics with members dropped to stay within history.max_bytes.",
            m->history_trimmed);
    counter(&o, "moonwire_reloads_total", "Reloads attempted (SIGHUP).", m->reloads);
    counter(&o, "moonwire_reload_failures_total", "Reloads that kept the old app.",
            m->reload_failures);
    counter(&o, "moonwire_backpressure_closes_total",
            "Connections closed with 1008 because their queue passed max_buffered.",
            m->backpressure_closes);
    counter(&o, "moonwire_backpressure_drops_total",
            "Messages dropped because the queue passed max_buffered.", m->backpressure_drops);
    counter(&o, "moonwire_backpressure_pauses_total",
            "Times a connection stopped being read because a queue its input filled "
            "(its own or a recipient's) passed max_buffered.",
            m->backpressure_pauses);
    gauge(&o, "moonwire_backpressure_backed_up",
          "Connections whose write queue is over max_buffered and not yet drained to half.",
          m->backed_up);
    counter(&o, "moonwire_memory_trims_total",
            "Times freed memory was handed back to the system after a burst (malloc_trim).",
            m->memory_trims);
    put(&o,
        "# HELP moonwire_event_loop_lag_seconds How late the loop ran its last 500 ms probe.\n"
        "# TYPE moonwire_event_loop_lag_seconds gauge\n"
        "moonwire_event_loop_lag_seconds %.3f\n"
        "# HELP moonwire_event_loop_lag_max_seconds The largest lag seen since start.\n"
        "# TYPE moonwire_event_loop_lag_max_seconds gauge\n"
        "moonwire_event_loop_lag_max_seconds %.3f\n",
        m->loop_lag_ms / 1000.0, m->loop_lag_ms_max / 1000.0);
    if (m->cluster_on != 0 || m->cluster_published != 0) {
        gauge(&o, "moonwire_cluster_up", "1 when both Redis connections are up.",
              m->cluster_on != 0 && m->cluster_up == m->cluster_on);
        counter(&o, "moonwire_cluster_published_total", "Envelopes sent to the backplane.",
                m->cluster_published);
        counter(&o, "moonwire_cluster_received_total", "Envelopes received from other nodes.",
                m->cluster_received);
        counter(&o, "moonwire_cluster_send_failures_total",
                "Cluster sends that failed softly (Redis down or erroring).",
                m->cluster_send_failures);
        counter(&o, "moonwire_cluster_reconnects_total", "Redis connections lost or refused.",
                m->cluster_reconnects);
        counter(&o, "moonwire_cluster_bad_envelopes_total",
                "Messages on our channels that were not envelopes of this version.",
                m->cluster_bad_envelopes);
        counter(&o, "moonwire_cluster_duplicates_total",
                "Envelopes sent again after a lost reply that had come already (dropped).",
                m->cluster_duplicates);
        per_shard(&o, "moonwire_cluster_shard_up",
                  "1 when both Redis connections of the shard (of cluster.redis) are up.", m, 1,
                  m->cluster_shard_up);
        per_shard(&o, "moonwire_cluster_outbox_messages",
                  "Messages for other nodes not yet taken by Redis (waiting or in flight), "
                  "per shard.",
                  m, 0, m->cluster_shard_outbox_messages);
        per_shard(&o, "moonwire_cluster_outbox_bytes",
                  "Bytes those messages hold (cluster.outbox_size, per shard).", m, 0,
                  m->cluster_shard_outbox_bytes);
        counter(&o, "moonwire_cluster_outbox_dropped_total",
                "Messages for other nodes dropped: older than cluster.outbox_max_age, or left at a stop.",
                m->cluster_outbox_dropped);
        counter(&o, "moonwire_cluster_outbox_refused_total",
                "Sends refused because the outbox was full (nil, \"outbox full\").",
                m->cluster_outbox_refused);
        counter(&o, "moonwire_cluster_outbox_replayed_total",
                "Messages Redis had answered, sent again after the connection was lost "
                "(cluster.outbox_replay).",
                m->cluster_outbox_replayed);
    }
    gauge(&o, "moonwire_http_client_inflight",
          "moonwire.http.request calls running now (http_client.max_concurrent).",
          m->http_client_inflight);
    put(&o, "# HELP moonwire_http_client_requests_total moonwire.http.request calls, by how they "
            "ended.\n# TYPE moonwire_http_client_requests_total counter\n");
    {
        const struct {
            const char *result;
            uint64_t v;
        } ended[] = {
            {"ok", m->http_client_ok},
            {"failed", m->http_client_failed},
            {"timeout", m->http_client_timeouts},
            {"too_large", m->http_client_too_large},
            {"refused", m->http_client_refused},
        };
        for (size_t i = 0; i < sizeof(ended) / sizeof(ended[0]); i++)
            put(&o, "moonwire_http_client_requests_total{result=\"%s\"} %llu\n", ended[i].result,
                (unsigned long long)ended[i].v);
    }
    counter(&o, "moonwire_tls_reload_failures_total",
            "Reloads whose certificate pair did not load (the old one stays).",
            m->tls_reload_failures);
    counter(&o, "moonwire_tls_handshake_failures_total",
            "TLS connections that failed before the handshake finished.",
            m->tls_handshake_failures);
    free(m);
    if (o.failed) {
        free(o.buf);
        return 0;
    }
    *out = o.buf;
    return o.len;
}
