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

typedef struct mw_metrics_s {
    uint64_t connections_total;
    uint64_t handshakes[MW_HS__COUNT];
    uint64_t http_requests;
    uint64_t messages_in, messages_out;
    uint64_t bytes_in, bytes_out;
    uint64_t closes[5000]; /* by close code sent or received; 1006 for abnormal */
    uint64_t hook_errors;
    uint64_t budget_kills;
    uint64_t memory_kills;
    uint64_t reloads, reload_failures;
    uint64_t backpressure_closes, backpressure_drops;
    uint64_t tls_handshake_failures;
    uint64_t tls_reload_failures; /* SIGHUP found a certificate pair that does not load */
    uint64_t cluster_published;     /* envelopes sent to Redis */
    uint64_t cluster_received;      /* envelopes from other nodes */
    uint64_t cluster_send_failures; /* sends that Redis did not take (down, error) */
    uint64_t cluster_reconnects;
    uint64_t cluster_bad_envelopes;
    uint64_t loop_lag_ms;     /* how late the last 500 ms probe timer ran */
    uint64_t loop_lag_ms_max;
} mw_metrics_t;

typedef struct mw_server_s mw_server_t;

/* Renders the metrics of srv as Prometheus text into a malloc'ed buffer.
 * Returns its length, or 0 when out of memory. */
size_t mw_metrics_render(const mw_server_t *srv, char **out);

#endif
