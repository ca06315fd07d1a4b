/* The server configuration: defaults, the Lua configuration file, and
 * command-line overrides.
 *
 * The file is a Lua chunk that returns a table; every key is listed in
 * docs/configuration.md and in the schema in core/config.c. An unknown key
 * or a value of the wrong type is an error that names the key.
 */
#ifndef MOONWIRE_CONFIG_H
#define MOONWIRE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

typedef struct lua_State lua_State;

typedef struct {
    char **items;
    size_t n;
} mw_strlist_t;

enum { MW_BP_CLOSE = 0, MW_BP_DROP = 1 };

typedef struct mw_config_s {
    char *path; /* the file it was loaded from, or NULL */

    mw_strlist_t listen;
    int listen_set; /* the file set 'listen' (even to an empty list) */
    mw_strlist_t tls_listen; /* tls.listen */
    char *tls_cert;
    char *tls_key;
    char *script;
    char *node_id;
    uint32_t workers; /* processes sharing the listeners; 0 or 1: this one */
    int reuseport;    /* bind with SO_REUSEPORT (set in workers, not a key) */

    /* log */
    int log_level;
    int log_json;
    char *log_file;

    /* websocket */
    mw_strlist_t ws_paths;
    mw_strlist_t subprotocols;
    mw_strlist_t allowed_origins; /* empty: every origin */
    size_t max_message_size;
    int compression;                /* permessage-deflate on/off */
    size_t compression_threshold;   /* smaller payloads go plain */
    uint32_t compression_level;     /* zlib 1..9 */
    int client_no_context_takeover; /* ask clients to reset their context per message */
    uint32_t server_max_window_bits;
    uint32_t client_max_window_bits;

    /* limits (times in milliseconds) */
    uint32_t max_connections;
    uint32_t max_connections_per_ip;
    size_t max_head_size;
    uint32_t handshake_timeout;
    uint32_t idle_timeout;
    uint32_t ping_timeout;
    uint32_t close_timeout;
    uint32_t shutdown_timeout;
    size_t max_buffered;
    uint32_t backpressure_timeout; /* ms a queue may stay backed up before the policy */
    int backpressure; /* MW_BP_CLOSE or MW_BP_DROP */
    size_t max_topics;        /* topics with members on the node */
    size_t max_subscriptions; /* topics per connection */

    /* cluster (the Redis backplane); cluster_redis empty and no sentinels: standalone.
     * Several URLs: the shards, a topic on one of them (core/shard.h). */
    mw_strlist_t cluster_redis;
    char *cluster_password;
    mw_strlist_t cluster_sentinels; /* "host:port" of the sentinels; or cluster_redis */
    char *cluster_master;           /* the master's name, with cluster_sentinels */
    char *cluster_sentinel_password;
    char *cluster_prefix;
    uint32_t cluster_connect_timeout;
    uint32_t cluster_command_timeout;
    uint32_t cluster_reconnect_max;
    uint32_t cluster_presence_ttl; /* a silent node leaves presence after this */
    size_t cluster_outbox_size;     /* bytes waiting for Redis, in flight included */
    uint32_t cluster_outbox_max_age; /* ms a message may wait for Redis */
    uint32_t cluster_outbox_replay;  /* ms an answered message is kept to be sent again */

    /* history: topics that number their messages for recovery */
    mw_strlist_t history_topics;
    size_t history_size;
    uint32_t history_ttl;
    char *history_field; /* "" or NULL: no fields put in payloads */
    size_t history_max_topics; /* topics with history kept in memory */
    size_t history_max_bytes;  /* bytes of history kept in memory */

    /* lua */
    uint32_t time_limit; /* ms of CPU time per hook call; 0: none */
    size_t memory_limit;
    uint32_t max_sleep;   /* ms: the longest moonwire.sleep */
    uint32_t max_waiting; /* hooks that may wait at once */

    /* http */
    int healthz;
    int metrics;
    mw_strlist_t healthz_allow; /* addresses allowed /healthz; empty: all */
    mw_strlist_t metrics_allow; /* addresses allowed /metrics; empty: all */
    mw_strlist_t trusted_proxies; /* peers whose X-Forwarded-For / X-Real-IP count; empty: none */
    uint32_t keepalive_timeout;  /* ms a kept-alive connection may wait idle; 0: no keep-alive */
    uint32_t keepalive_requests; /* requests one connection may make; the last reply closes */

    /* http_client: moonwire.http.request (core/http_client.c) */
    uint32_t http_client_max_concurrent; /* calls running at once; one more is refused */
    size_t http_client_max_response;     /* bytes of headers and body of an answer */
    uint32_t http_client_max_headers;    /* headers of a request, and of an answer */
    uint32_t http_client_timeout;        /* ms, when the call gives none */
    uint32_t http_client_max_timeout;    /* ms, the most a call may ask for */
    char *http_client_ca_file;           /* PEM CA bundle; NULL: the system's */
    /* api: the server HTTP API (api.c), off while api_key is NULL */
    char *api_key;          /* the key (or MW_API_KEY in the environment) */
    mw_strlist_t api_listen; /* listeners of the API alone; empty: the API is on the others */
    mw_strlist_t api_allow; /* addresses allowed /api/; empty: all */
    size_t api_max_body;    /* bytes of a request body (API, on_request); larger: 413 */
    uint32_t api_max_batch; /* commands in one batch */

    /* queue: the Redis stream the nodes consume (api_queue.c), with a backplane */
    char *queue_stream;        /* "" or NULL: no consumer */
    char *queue_group;
    uint32_t queue_read_count; /* entries one read takes */
    uint32_t queue_block;      /* ms an XREADGROUP waits for entries */
    uint32_t queue_claim_after; /* ms before another consumer's pending entries are claimed */
    uint32_t queue_max_pending; /* entries being applied at once on this node */
    uint32_t queue_max_deliveries; /* deliveries of an entry that fails for want of Redis
                                      (503) before it is acked and dropped */
    size_t queue_push_maxlen;   /* MAXLEN ~ of moonwire.queue.push's XADD */

    /* static (see core/static.c); static files are off while static_root is NULL */
    char *static_root;
    char *static_index;                   /* the file served for a directory */
    char *static_cache_control;           /* "" sends no Cache-Control */
    char *static_immutable_cache_control; /* for fingerprinted names; "" sends none */
    size_t static_max_file_size;          /* bigger files are refused with 403 */
    size_t static_cache_size;             /* bytes of file contents kept; 0: no cache */
    size_t static_max_cached_file;        /* bigger files are streamed from disk, never cached */
    uint32_t static_max_open_files;       /* files streamed at once; one more gets 503 */

    /* A state of its own that keeps a copy of the free-form `app` table
     * for moonwire.config. NULL when there is none. */
    lua_State *L;
    int app_ref;
} mw_config_t;

/* Fills cfg with the defaults. Returns 0 or MW_ENOMEM. */
int mw_config_init(mw_config_t *cfg);

/* Runs the file at path and applies its table over cfg. On failure writes a
 * one-line message naming the file and key into err and returns MW_ECONFIG
 * (or MW_ENOMEM); cfg is then only fit for mw_config_close(). */
int mw_config_load(mw_config_t *cfg, const char *path, char *err, size_t errlen);

/* Applies the configuration table at idx of L (any state) over cfg; origin
 * names it in messages. Returns 0, or MW_ECONFIG with err naming the key. */
int mw_config_apply(mw_config_t *cfg, lua_State *L, int idx, const char *origin, char *err,
                    size_t errlen);

/* Checks the form of a listen address, without resolving anything:
 * "HOST:PORT" (HOST an IPv4 address or a host name), "[IPV6]:PORT", or
 * ":PORT" (every IPv4 address). Returns 0 or MW_EINVAL. */
int mw_config_check_addr(const char *text);

/* Parses a listen address into addr. A host name is resolved with
 * getaddrinfo (this may block: call it at start, not from the loop) to its
 * first IPv4 address, else its first IPv6 one. Returns 0, or MW_EINVAL (not
 * an address) or MW_ENOTFOUND (the name does not resolve) with err set. */
struct sockaddr_storage;
int mw_config_parse_addr(const char *text, struct sockaddr_storage *addr, char *err, size_t errlen);

/* Replaces a string field, or appends to a list field (for command-line
 * flags). Each returns 0 or MW_ENOMEM (the field is unchanged). */
int mw_config_set_str(char **field, const char *value);
int mw_config_list_add(mw_strlist_t *list, const char *value);
void mw_config_list_clear(mw_strlist_t *list);

/* Checks values that depend on each other. Returns 0 or MW_ECONFIG with err set. */
int mw_config_validate(const mw_config_t *cfg, char *err, size_t errlen);

/* Pushes onto L a table of the effective configuration (as the file spells its
 * keys), with a deep copy of the `app` section. Must run in protected mode. */
void mw_config_push(const mw_config_t *cfg, lua_State *L);

void mw_config_close(mw_config_t *cfg);

/* The node has a Redis backplane: cluster.redis, or cluster.sentinels. */
static inline int mw_config_clustered(const mw_config_t *cfg)
{
    return cfg->cluster_redis.n > 0 || cfg->cluster_sentinels.n > 0;
}

#endif
