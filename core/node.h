/* A node's parts, as the pieces above them reach each other.
 *
 * The server (server.c) makes and owns every part and fills this in; the
 * request router, the Lua host and its module, and the backplane hold a
 * pointer to it, and so does every connection (through mw_conns_t). It only
 * declares the parts' types: including it ties a file to none of them, and
 * a file includes the headers of the parts it uses, each of which stands
 * below it.
 */
#ifndef MOONWIRE_NODE_H
#define MOONWIRE_NODE_H

typedef struct mw_config_s mw_config_t;
typedef struct mw_metrics_s mw_metrics_t;
typedef struct mw_timers_s mw_timers_t;
typedef struct mw_sched_s mw_sched_t;
typedef struct mw_conns_s mw_conns_t;
typedef struct mw_registry_s mw_registry_t;
typedef struct mw_iplimit_s mw_iplimit_t;
typedef struct mw_acl_s mw_acl_t;
typedef struct mw_topics_s mw_topics_t;
typedef struct mw_history_s mw_history_t;
typedef struct mw_lua_s mw_lua_t;
typedef struct mw_cluster_s mw_cluster_t;
typedef struct mw_http_client_s mw_http_client_t;
struct uv_loop_s;

typedef struct mw_node_s {
    mw_config_t *cfg;       /* the live configuration: a reload changes it in place */
    mw_metrics_t *metrics;  /* the node's counters (a worker's shared block) */
    mw_timers_t *timers;    /* the clock and the timer heap */
    mw_sched_t *sched;      /* the work left for the end of the turn */
    mw_conns_t *conns;      /* what the connections share */
    mw_registry_t *reg;     /* ids and the open connections */
    mw_iplimit_t *iplimit;  /* connections per peer address */
    mw_topics_t *topics;
    mw_history_t *history;  /* topic history in the node's memory */
    mw_acl_t *healthz_acl;  /* who may ask /healthz */
    mw_acl_t *metrics_acl;  /* who may ask /metrics */
    mw_acl_t *trusted_proxies; /* peers whose X-Forwarded-For counts */
    mw_acl_t *api_acl;      /* who may call the server API (/api/) */
    mw_lua_t *lua;          /* the Lua host, with the app */
    mw_cluster_t *cluster;  /* the Redis backplane; NULL when the node runs alone */
    mw_http_client_t *http; /* moonwire.http.request's client; NULL until started, and after */
    struct uv_loop_s *loop; /* libuv's loop, for its thread pool; NULL in the sim */
} mw_node_t;

#endif
