/* Counters the server keeps about itself, rendered as Prometheus text by
 * /metrics. Plain integers: the core is single-threaded.
 */
#ifndef MOONWIRE_METRICS_H
#define MOONWIRE_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define MW_METRICS_HANDSHAKE_MAP(XX)                                                               \
    XX(ok, "upgraded")                                                                             \
    XX(bad_request, "refused with 400")                                                            \
    XX(method, "refused with 405")                                                                 \
    XX(version, "refused with 426")                                                                \
    XX(origin, "refused with 403")                                                                 \
    XX(not_found, "refused with 404")                                                              \
    XX(too_large, "refused with 431")                                                              \
    XX(timeout, "timed out (408)")                                                                 \
    XX(app, "refused by on_upgrade")                                                               \
    XX(full, "refused: server full (503)")                                                         \
    XX(error, "failed in the server (500)")

typedef enum {
#define XX(name, help) MW_HS_##name,
    MW_METRICS_HANDSHAKE_MAP(XX)
#undef XX
        MW_HS__COUNT
} mw_handshake_result_t;

/* The server API's methods and answers, for moonwire_api_requests_total
 * (api.c): every request is counted once, by method and status. */
#define MW_METRICS_API_METHOD_MAP(XX)                                                              \
    XX(publish) XX(broadcast) XX(send) XX(disconnect) XX(presence) XX(history) XX(info)           \
        XX(batch) XX(unknown)

#define MW_METRICS_API_STATUS_MAP(XX)                                                              \
    XX(200) XX(400) XX(401) XX(403) XX(404) XX(405) XX(413) XX(500) XX(503) XX(504)

typedef enum {
#define XX(name) MW_API_##name,
    MW_METRICS_API_METHOD_MAP(XX)
#undef XX
        MW_API__COUNT
} mw_api_method_t;

typedef enum {
#define XX(code) MW_API_S##code,
    MW_METRICS_API_STATUS_MAP(XX)
#undef XX
        MW_API_S__COUNT
} mw_api_status_t;

/* Shards of the backplane counted one by one (cluster.redis lists at most 16). */
#define MW_METRICS_SHARDS 16

typedef struct mw_metrics_s {
    uint64_t connections_total;
    uint64_t handshakes[MW_HS__COUNT];
    uint64_t http_requests;
    uint64_t http_reused;       /* requests on a connection that had answered one before */
    uint64_t static_streamed;   /* replies whose body was streamed from disk */
    uint64_t static_busy;       /* refused with 503: static.max_open_files streams at once */
    uint64_t static_cut;        /* streams cut short: the file changed or failed to read */
    uint64_t static_gzipped;    /* gzip variants made on the fly */
    uint64_t messages_in, messages_out;
    uint64_t bytes_in, bytes_out;
    uint64_t closes[5000]; /* by close code sent or received; 1006 for abnormal */
    uint64_t hook_errors;
    uint64_t budget_kills;
    uint64_t memory_kills;
    uint64_t wait_refusals; /* waits refused: lua.max_waiting hooks waited already */
    uint64_t reloads, reload_failures;
    uint64_t backpressure_closes, backpressure_drops;
    uint64_t backpressure_pauses; /* reading stopped for a backed-up queue */
    uint64_t memory_trims;        /* malloc_trim after a burst */
    uint64_t tls_handshake_failures;
    uint64_t tls_reload_failures;   /* SIGHUP found a certificate pair that does not load */
    uint64_t accept_failures;       /* connections closed unserved: out of file descriptors */
    uint64_t cluster_published;     /* envelopes sent to Redis */
    uint64_t cluster_received;      /* envelopes from other nodes */
    uint64_t cluster_send_failures; /* sends that Redis did not take (down, error) */
    uint64_t cluster_reconnects;
    uint64_t cluster_bad_envelopes;
    uint64_t subscribe_refused_topics; /* subscriptions refused: limits.max_topics */
    uint64_t subscribe_refused_subs;   /* subscriptions refused: limits.max_subscriptions */
    uint64_t history_refused_topics;   /* history messages refused: history.max_topics */
    uint64_t history_refused_size;     /* history messages refused: history.max_bytes */
    uint64_t history_dropped_bound;    /* histories of empty topics dropped for the bounds */
    uint64_t history_dropped_ttl;      /* histories dropped after history.ttl */
    uint64_t history_dropped_memory;   /* histories of empty topics dropped when out of memory */
    uint64_t history_trimmed;          /* messages of topics with members dropped for max_bytes */
    uint64_t cluster_duplicates;     /* envelopes sent again whose first copy had come */
    uint64_t cluster_outbox_dropped; /* messages that waited past outbox_max_age, or at a stop */
    uint64_t cluster_outbox_refused; /* sends refused: the outbox was full */
    uint64_t cluster_outbox_replayed; /* answered messages sent again after a lost connection */
    /* moonwire.http.request, by how each call ended */
    uint64_t http_client_ok;        /* an answer (any status) */
    uint64_t http_client_failed;    /* no answer: refused connection, DNS, TLS, canceled... */
    uint64_t http_client_timeouts;  /* past its timeout */
    uint64_t http_client_too_large; /* past http_client.max_response or max_headers */
    uint64_t http_client_refused;   /* not started: http_client.max_concurrent */
    uint64_t api[MW_API__COUNT][MW_API_S__COUNT]; /* server API requests by method, status */
    uint64_t queue_applied;  /* queue entries applied (and acknowledged) */
    uint64_t queue_bad;      /* queue entries refused (bad fields, bad JSON, refused): acked */
    uint64_t queue_claimed;  /* entries of a dead consumer claimed by this node */
    uint64_t queue_dropped;  /* entries that failed for want of Redis (503) on their
                                queue.max_deliveries-th delivery: acked, dropped */
    uint64_t queue_read_failures; /* XREADGROUP / XAUTOCLAIM / XACK that Redis did not answer */
    uint64_t queue_pushed;   /* moonwire.queue.push entries Redis took */
    uint64_t queue_push_failures; /* and those it did not */
    uint64_t loop_lag_ms; /* how late the last 500 ms probe timer ran */
    uint64_t loop_lag_ms_max;
    /* Gauges as mw_gauges_publish last copied them, for other workers. */
    uint64_t open_connections, sockets, lua_memory;
    uint64_t lua_waiting; /* hooks waiting now */
    uint64_t backed_up; /* connections whose queue is backed up */
    uint64_t topics, subscriptions, history_topics, history_bytes;
    uint64_t static_open_files, static_cache_bytes;
    uint64_t cluster_on, cluster_up; /* has a backplane; both its connections are up */
    uint64_t cluster_outbox_messages, cluster_outbox_bytes; /* waiting for Redis, or in flight */
    uint64_t cluster_shards; /* how many Redis cluster.redis lists (shards) */
    /* Each shard's: both connections up; its outbox (as above). */
    uint64_t cluster_shard_up[MW_METRICS_SHARDS];
    uint64_t cluster_shard_outbox_messages[MW_METRICS_SHARDS];
    uint64_t cluster_shard_outbox_bytes[MW_METRICS_SHARDS];
    uint64_t http_client_inflight; /* moonwire.http.request calls running */
    uint64_t reporting;              /* 1 while a live worker publishes here */
} mw_metrics_t;

/* Sets a counter or gauge that other workers may read (a relaxed atomic
 * store of one aligned word: see mw_metrics_share). */
static inline void mw_metrics_set(uint64_t *w, uint64_t v)
{
    __atomic_store_n(w, v, __ATOMIC_RELAXED);
}

/* Renders own (this node's counters) as Prometheus text into a malloc'ed
 * buffer: with workers, every worker's counters summed instead (see
 * mw_metrics_share). Returns its length, or 0 when out of memory. */
size_t mw_metrics_render(const mw_metrics_t *own, char **out);

/* With --workers, each worker counts into a block of its own in memory the
 * master maps before it forks, so whichever worker answers /metrics sums
 * them all. A worker started again after a death goes on counting in the
 * block of the one it replaces, so the sums never go backwards. Counters are
 * written by one process and read by the others word by word (aligned
 * 64-bit words: no torn values); gauges are copied in every 500 ms.
 *
 * The master: maps blocks for n workers. Returns 0 or MW_ENOMEM. */
int mw_metrics_share(int n);

/* The block of worker index (1..n) once shared, else NULL. */
mw_metrics_t *mw_metrics_block(int index);

/* The master, when worker index died: its gauges leave the sums. */
void mw_metrics_worker_gone(int index);

#endif
