/* Configuration: defaults, the schema, and loading a Lua configuration file.
 *
 * The file runs in a state of its own with a small environment (no io, no
 * require); only its returned table is read. Every key the server knows is a
 * row of `schema` below, which also drives mw_config_push(). Checking the
 * values is config_check.c's.
 */
#include "moonwire/config.h"
#include "moonwire/error.h"
#include "moonwire/log.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* T_SHARDS: a string, or a list of one string or more (cluster.redis). */
typedef enum {
    T_STR,
    T_LIST,
    T_SHARDS,
    T_BOOL,
    T_U32,
    T_U64,
    T_SIZE,
    T_MS,
    T_LEVEL,
    T_BPOLICY
} ktype_t;

typedef struct {
    const char *section; /* NULL for the top level */
    const char *key;
    ktype_t type;
    size_t offset;
} key_t_;

#define F(field) offsetof(mw_config_t, field)

static const key_t_ schema[] = {
    {NULL, "listen", T_LIST, F(listen)},
    {NULL, "script", T_STR, F(script)},
    {NULL, "node_id", T_STR, F(node_id)},
    /* workers: fork this many processes on the same listeners (SO_REUSEPORT),
     * each a node of its own ("<node_id>-w<k>") sharing topics through the
     * backplane; a master restarts one that dies. 0 or 1: a single process. */
    {NULL, "workers", T_U32, F(workers)},
    /* tls: wss:// listeners. listen is a list like the top-level one; cert is
     * the PEM certificate chain, key the PEM private key. Both are re-read
     * on SIGHUP; a pair that does not load keeps the old one. */
    {"tls", "listen", T_LIST, F(tls_listen)},
    {"tls", "cert", T_STR, F(tls_cert)},
    {"tls", "key", T_STR, F(tls_key)},
    {"log", "level", T_LEVEL, F(log_level)},
    {"log", "json", T_BOOL, F(log_json)},
    {"log", "file", T_STR, F(log_file)},
    {"websocket", "paths", T_LIST, F(ws_paths)},
    {"websocket", "subprotocols", T_LIST, F(subprotocols)},
    {"websocket", "allowed_origins", T_LIST, F(allowed_origins)},
    {"websocket", "max_message_size", T_SIZE, F(max_message_size)},
    /* permessage-deflate (RFC 7692), off by default. The server never keeps
     * compression context between messages, so one compressed frame serves
     * every recipient. client_no_context_takeover (default true) asks clients
     * to do the same, so idle connections hold no inflate state; false lets
     * them keep it (better ratio, about 40 KB per connection). */
    {"websocket", "compression", T_BOOL, F(compression)},
    {"websocket", "compression_threshold", T_SIZE, F(compression_threshold)},
    {"websocket", "compression_level", T_U32, F(compression_level)},
    {"websocket", "client_no_context_takeover", T_BOOL, F(client_no_context_takeover)},
    {"websocket", "server_max_window_bits", T_U32, F(server_max_window_bits)},
    {"websocket", "client_max_window_bits", T_U32, F(client_max_window_bits)},
    {"limits", "max_connections", T_U32, F(max_connections)},
    {"limits", "max_connections_per_ip", T_U32, F(max_connections_per_ip)},
    {"limits", "max_head_size", T_SIZE, F(max_head_size)},
    {"limits", "handshake_timeout", T_MS, F(handshake_timeout)},
    {"limits", "idle_timeout", T_MS, F(idle_timeout)},
    {"limits", "ping_timeout", T_MS, F(ping_timeout)},
    {"limits", "close_timeout", T_MS, F(close_timeout)},
    {"limits", "shutdown_timeout", T_MS, F(shutdown_timeout)},
    {"limits", "max_buffered", T_SIZE, F(max_buffered)},
    {"limits", "backpressure", T_BPOLICY, F(backpressure)},
    {"limits", "backpressure_timeout", T_MS, F(backpressure_timeout)},
    /* Topics with members on the node, and topics one connection is in: a
     * subscription past either is refused (nil, "too many topics" |
     * "too many subscriptions"), counted and logged. */
    {"limits", "max_topics", T_SIZE, F(max_topics)},
    {"limits", "max_subscriptions", T_SIZE, F(max_subscriptions)},
    /* cluster: the Redis backplane. redis is redis://[:password@]host[:port][/db]
     * or unix:///path; without it the node runs alone. prefix namespaces the
     * channels and keys, so clusters can share one Redis. */
    /* One Redis (a URL), or shards: a list of 1 to 16 URLs (shard.h). */
    {"cluster", "redis", T_SHARDS, F(cluster_redis)},
    {"cluster", "password", T_STR, F(cluster_password)},
    /* Or Redis Sentinel finds the master (instead of redis): sentinels is a
     * list of "host:port", master the name the sentinels monitor it by,
     * sentinel_password what they ask for (if they do). */
    {"cluster", "sentinels", T_LIST, F(cluster_sentinels)},
    {"cluster", "master", T_STR, F(cluster_master)},
    {"cluster", "sentinel_password", T_STR, F(cluster_sentinel_password)},
    {"cluster", "prefix", T_STR, F(cluster_prefix)},
    {"cluster", "connect_timeout", T_MS, F(cluster_connect_timeout)},
    {"cluster", "command_timeout", T_MS, F(cluster_command_timeout)},
    {"cluster", "reconnect_max", T_MS, F(cluster_reconnect_max)},
    {"cluster", "presence_ttl", T_MS, F(cluster_presence_ttl)},
    /* The outbox: what this node sends to the others waits here until Redis
     * has taken it (in order, across outages). outbox_size bounds its bytes
     * (past it a send is refused: nil, "outbox full"), outbox_max_age how
     * long a message may wait for Redis (then it is dropped, counted, logged),
     * outbox_replay how long an answered one is kept to be sent again when
     * the connection is lost (Redis may have died before passing it on). */
    {"cluster", "outbox_size", T_SIZE, F(cluster_outbox_size)},
    {"cluster", "outbox_max_age", T_MS, F(cluster_outbox_max_age)},
    {"cluster", "outbox_replay", T_MS, F(cluster_outbox_replay)},
    /* history: topics (names, or prefixes ending in *) whose messages get
     * offsets and are kept for clients that reconnect: the last `size`, for
     * `ttl` after the last one. `field` names the offset field put in front
     * of JSON-object text messages, with "epoch" ("" puts none). */
    {"history", "topics", T_LIST, F(history_topics)},
    {"history", "size", T_SIZE, F(history_size)},
    {"history", "ttl", T_MS, F(history_ttl)},
    {"history", "field", T_STR, F(history_field)},
    /* What history keeps in the node's memory, at most: topics and bytes.
     * Past them the history of topics without members goes first (least
     * recently used), then the oldest messages of the others. */
    {"history", "max_topics", T_SIZE, F(history_max_topics)},
    {"history", "max_bytes", T_SIZE, F(history_max_bytes)},
    /* lua: time_limit is the CPU time one hook call may take (seconds), memory_limit the
     * bytes the whole state may hold; 0 is no limit. */
    {"lua", "time_limit", T_MS, F(time_limit)},
    {"lua", "memory_limit", T_SIZE, F(memory_limit)},
    /* max_sleep: the longest moonwire.sleep (seconds); max_waiting: hooks
     * (of every connection and timer) that may wait at once. */
    {"lua", "max_sleep", T_MS, F(max_sleep)},
    {"lua", "max_waiting", T_U32, F(max_waiting)},
    /* http: the built-in endpoints. *_allow are address lists ("10.0.0.0/8",
     * "::1"); a request from elsewhere gets 403. Empty lists allow everyone. */
    {"http", "healthz", T_BOOL, F(healthz)},
    {"http", "metrics", T_BOOL, F(metrics)},
    {"http", "healthz_allow", T_LIST, F(healthz_allow)},
    {"http", "metrics_allow", T_LIST, F(metrics_allow)},
    /* Peers (addresses, CIDR ranges) whose X-Forwarded-For names the client. */
    {"http", "trusted_proxies", T_LIST, F(trusted_proxies)},
    /* Keep-alive for plain HTTP requests (static files, /healthz, /metrics):
     * keepalive_timeout is how long an idle connection waits for its next
     * request (seconds; 0 closes after every reply), keepalive_requests how
     * many requests one connection may make (the last reply says close). */
    {"http", "keepalive_timeout", T_MS, F(keepalive_timeout)},
    {"http", "keepalive_requests", T_U32, F(keepalive_requests)},
    /* http_client: moonwire.http.request (core/http_client.c). max_concurrent
     * calls run at once (one more: nil, "too many requests"); an answer over
     * max_response bytes (headers and body) is refused (nil, "response too
     * large"), and so is one with over max_headers headers (a request with
     * more raises); timeout (seconds) applies when a call gives none, and no
     * call may ask for more than max_timeout. ca_file: a PEM bundle of the
     * CAs to trust instead of the system's (verification is always on). */
    {"http_client", "max_concurrent", T_U32, F(http_client_max_concurrent)},
    {"http_client", "max_response", T_SIZE, F(http_client_max_response)},
    {"http_client", "max_headers", T_U32, F(http_client_max_headers)},
    {"http_client", "timeout", T_MS, F(http_client_timeout)},
    {"http_client", "max_timeout", T_MS, F(http_client_max_timeout)},
    {"http_client", "ca_file", T_STR, F(http_client_ca_file)},
    /* Static files (core/static.c), off unless `root` is set here or by --static DIR (the
     * flag wins). A GET or HEAD without an Upgrade header is then served from root; one
     * with Upgrade goes to the WebSocket paths as before; /healthz and /metrics come first.
     *  root                     the directory (must exist at start); default none (off)
     *  index                    file served for "DIR/"; "DIR" redirects (301) to "DIR/";
     *                           a plain file name; default "index.html"
     *  cache_control            Cache-Control of ordinary files; default
     *                           "public, max-age=300"; "" sends none
     *  immutable_cache_control  Cache-Control of fingerprinted names: a part of the name
     *                           between dots, other than the extension, of 8 or more hex
     *                           digits (app.3f9a2c1b.js); default
     *                           "public, max-age=31536000, immutable"; "" sends none
     *  max_file_size            bytes; a bigger file is refused with 403 and a log line;
     *                           1 to 4294967295; default 16 MiB
     *  cache_size               bytes of file contents kept in memory (with their ETags
     *                           and gzip variants), least recently used out first; 0 keeps
     *                           none; default 32 MiB
     *  max_cached_file          bytes; a file larger than this or than a quarter of
     *                           cache_size is never cached: it is streamed from disk in
     *                           64 KiB chunks as the client reads; default 1 MiB
     *  max_open_files           files being streamed at once (each holds a descriptor);
     *                           one more request for such a file gets 503; default 256
     * Fixed rules: dotfiles, ".." and symlinks resolving outside root are 404; FILE.gz
     * next to FILE is sent to clients accepting gzip, with Vary: Accept-Encoding. */
    /* api: the server HTTP API, POST /api/METHOD with a JSON body, off unless key is set
     * (or MW_API_KEY in the environment). allow is an address list like
     * http.metrics_allow; max_body bounds every request body (API and on_request: 413
     * past it); max_batch the commands of one batch. */
    {"api", "key", T_STR, F(api_key)},
    /* listen: addresses (as the top-level listen) that serve the API (and /healthz,
     * /metrics) and nothing else; when set, the other listeners do not serve it. */
    {"api", "listen", T_LIST, F(api_listen)},
    {"api", "allow", T_LIST, F(api_allow)},
    {"api", "max_body", T_SIZE, F(api_max_body)},
    {"api", "max_batch", T_U32, F(api_max_batch)},
    /* queue: with a backplane, every node reads the Redis stream `stream` in the
     * consumer group `group`, read_count entries at a time, waiting up to `block` ms;
     * entries another consumer left pending for claim_after ms are claimed; at most
     * max_pending entries are being applied at once. push_maxlen trims the streams that
     * moonwire.queue.push adds to (XADD MAXLEN ~). */
    {"queue", "stream", T_STR, F(queue_stream)},
    {"queue", "group", T_STR, F(queue_group)},
    {"queue", "read_count", T_U32, F(queue_read_count)},
    {"queue", "block", T_MS, F(queue_block)},
    {"queue", "claim_after", T_MS, F(queue_claim_after)},
    {"queue", "max_pending", T_U32, F(queue_max_pending)},
    {"queue", "max_deliveries", T_U32, F(queue_max_deliveries)},
    {"queue", "push_maxlen", T_SIZE, F(queue_push_maxlen)},
    {"static", "root", T_STR, F(static_root)},
    {"static", "index", T_STR, F(static_index)},
    {"static", "cache_control", T_STR, F(static_cache_control)},
    {"static", "immutable_cache_control", T_STR, F(static_immutable_cache_control)},
    {"static", "max_file_size", T_SIZE, F(static_max_file_size)},
    {"static", "cache_size", T_SIZE, F(static_cache_size)},
    {"static", "max_cached_file", T_SIZE, F(static_max_cached_file)},
    {"static", "max_open_files", T_U32, F(static_max_open_files)},
};

#define NKEYS (sizeof(schema) / sizeof(schema[0]))

static const char *sections[] = {"log",    "websocket", "limits",  "lua",     "http",
                                 "static", "tls",       "cluster", "history", "api",
                                 "queue",  "http_client", "app"};

int mw_config_set_str(char **field, const char *value)
{
    char *s = value != NULL ? strdup(value) : NULL;
    if (value != NULL && s == NULL)
        return MW_ENOMEM;
    free(*field);
    *field = s;
    return 0;
}

int mw_config_list_add(mw_strlist_t *list, const char *value)
{
    char **items = realloc(list->items, (list->n + 1) * sizeof(char *));
    if (items == NULL)
        return MW_ENOMEM;
    list->items = items;
    items[list->n] = strdup(value);
    if (items[list->n] == NULL)
        return MW_ENOMEM;
    list->n++;
    return 0;
}

void mw_config_list_clear(mw_strlist_t *list)
{
    for (size_t i = 0; i < list->n; i++)
        free(list->items[i]);
    free(list->items);
    list->items = NULL;
    list->n = 0;
}

int mw_config_init(mw_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->log_level = MW_LOG_INFO;
    cfg->max_message_size = 16u << 20;
    cfg->compression_threshold = 256;
    cfg->compression_level = 6;
    cfg->client_no_context_takeover = 1;
    cfg->server_max_window_bits = 15;
    cfg->client_max_window_bits = 15;
    cfg->max_connections = 100000;
    cfg->max_connections_per_ip = 0;
    cfg->max_head_size = 8192;
    cfg->handshake_timeout = 10000;
    cfg->idle_timeout = 60000;
    cfg->ping_timeout = 15000;
    cfg->close_timeout = 3000;
    cfg->shutdown_timeout = 5000;
    cfg->max_buffered = 1u << 20;
    cfg->backpressure = MW_BP_CLOSE;
    cfg->backpressure_timeout = 2000;
    cfg->max_topics = 100000;
    cfg->max_subscriptions = 1000;
    cfg->time_limit = 200;
    cfg->memory_limit = 256u << 20;
    cfg->max_sleep = 60000;
    cfg->max_waiting = 10000;
    cfg->cluster_connect_timeout = 2000;
    cfg->cluster_command_timeout = 3000;
    cfg->cluster_reconnect_max = 5000;
    cfg->cluster_presence_ttl = 30000;
    cfg->cluster_outbox_size = 16u << 20;
    cfg->cluster_outbox_max_age = 60000;
    cfg->cluster_outbox_replay = 1000;
    cfg->history_size = 100;
    cfg->history_ttl = 86400000;
    cfg->history_max_topics = 100000;
    cfg->history_max_bytes = 64u << 20;
    cfg->healthz = 1;
    cfg->metrics = 1;
    cfg->static_max_file_size = 16u << 20;
    cfg->static_cache_size = 32u << 20;
    cfg->static_max_cached_file = 1u << 20;
    cfg->static_max_open_files = 256;
    cfg->keepalive_timeout = 15000;
    cfg->keepalive_requests = 1000;
    cfg->http_client_max_concurrent = 64;
    cfg->http_client_max_response = 1u << 20;
    cfg->http_client_max_headers = 64;
    cfg->http_client_timeout = 10000;
    cfg->http_client_max_timeout = 60000;
    cfg->api_max_body = 64u << 10;
    cfg->api_max_batch = 100;
    cfg->queue_read_count = 64;
    cfg->queue_block = 2000;
    cfg->queue_claim_after = 30000;
    cfg->queue_max_pending = 1024;
    cfg->queue_max_deliveries = 5;
    cfg->queue_push_maxlen = 100000;
    cfg->app_ref = LUA_NOREF;
    if (mw_config_set_str(&cfg->static_index, "index.html") != 0 ||
        mw_config_set_str(&cfg->static_cache_control, "public, max-age=300") != 0 ||
        mw_config_set_str(&cfg->static_immutable_cache_control,
                          "public, max-age=31536000, immutable") != 0 ||
        mw_config_set_str(&cfg->script, "scripts/relay.lua") != 0 ||
        mw_config_set_str(&cfg->cluster_prefix, "mw") != 0 ||
        mw_config_set_str(&cfg->history_field, "offset") != 0 ||
        mw_config_set_str(&cfg->queue_stream, "mw:api") != 0 ||
        mw_config_set_str(&cfg->queue_group, "moonwire") != 0 ||
        mw_config_set_str(&cfg->api_key, getenv("MW_API_KEY")) != 0 ||
        mw_config_list_add(&cfg->ws_paths, "/*") != 0)
        return MW_ENOMEM;
    return 0;
}

void mw_config_close(mw_config_t *cfg)
{
    for (size_t i = 0; i < NKEYS; i++) {
        void *field = (char *)cfg + schema[i].offset;
        if (schema[i].type == T_STR) {
            free(*(char **)field);
            *(char **)field = NULL;
        } else if (schema[i].type == T_LIST || schema[i].type == T_SHARDS) {
            mw_config_list_clear(field);
        }
    }
    free(cfg->path);
    cfg->path = NULL;
    if (cfg->L != NULL)
        lua_close(cfg->L);
    cfg->L = NULL;
    cfg->api_max_body = 64u << 10;
    cfg->api_max_batch = 100;
    cfg->queue_read_count = 64;
    cfg->queue_block = 2000;
    cfg->queue_claim_after = 30000;
    cfg->queue_max_pending = 1024;
    cfg->queue_max_deliveries = 5;
    cfg->queue_push_maxlen = 100000;
    cfg->app_ref = LUA_NOREF;
}

/* Writes "config FILE: 'section.key' msg" into err. */
static int key_error(char *err, size_t errlen, const char *path, const char *section,
                     const char *key, const char *msg)
{
    snprintf(err, errlen, "config %s: '%s%s%s' %s", path, section ? section : "",
             section ? "." : "", key, msg);
    return MW_ECONFIG;
}

static const key_t_ *find_key(const char *section, const char *key)
{
    for (size_t i = 0; i < NKEYS; i++) {
        int same_section = (section == NULL && schema[i].section == NULL) ||
                           (section != NULL && schema[i].section != NULL &&
                            strcmp(section, schema[i].section) == 0);
        if (same_section && strcmp(schema[i].key, key) == 0)
            return &schema[i];
    }
    return NULL;
}

/* Reads the value at the top of L into the field of k. Returns 0, or an error
 * message (static) describing what the value should have been. */
static const char *apply(mw_config_t *cfg, const key_t_ *k, lua_State *L)
{
    void *field = (char *)cfg + k->offset;
    lua_Number n;
    int isnum;

    switch (k->type) {
    case T_STR:
        if (lua_type(L, -1) != LUA_TSTRING)
            return "must be a string";
        return mw_config_set_str(field, lua_tostring(L, -1)) == 0 ? NULL : "out of memory";
    case T_LIST:
    case T_SHARDS: {
        mw_strlist_t *list = field;
        mw_config_list_clear(list);
        if (lua_type(L, -1) == LUA_TSTRING)
            return mw_config_list_add(list, lua_tostring(L, -1)) == 0 ? NULL : "out of memory";
        if (lua_type(L, -1) != LUA_TTABLE)
            return "must be a string or a list of strings";
        if (k->type == T_SHARDS && luaL_len(L, -1) == 0)
            return "must be a URL or a list of 1 to 16 URLs, not an empty list";
        for (lua_Integer i = 1; i <= (lua_Integer)luaL_len(L, -1); i++) {
            int t = lua_rawgeti(L, -1, i);
            if (t != LUA_TSTRING) {
                lua_pop(L, 1);
                return "must be a list of strings";
            }
            if (mw_config_list_add(list, lua_tostring(L, -1)) != 0)
                return "out of memory";
            lua_pop(L, 1);
        }
        return NULL;
    }
    case T_BOOL:
        if (lua_type(L, -1) != LUA_TBOOLEAN)
            return "must be true or false";
        *(int *)field = lua_toboolean(L, -1);
        return NULL;
    case T_LEVEL: {
        int level;
        if (lua_type(L, -1) != LUA_TSTRING ||
            (level = mw_log_level_parse(lua_tostring(L, -1))) < 0)
            return "must be one of \"debug\", \"info\", \"warn\", \"error\", \"off\"";
        *(int *)field = level;
        return NULL;
    }
    case T_BPOLICY: {
        const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
        if (strcmp(s, "close") == 0)
            *(int *)field = MW_BP_CLOSE;
        else if (strcmp(s, "drop") == 0)
            *(int *)field = MW_BP_DROP;
        else
            return "must be \"close\" or \"drop\"";
        return NULL;
    }
    default:
        break;
    }

    n = lua_tonumberx(L, -1, &isnum);
    if (lua_type(L, -1) != LUA_TNUMBER || !isnum || n < 0 || isnan(n))
        return "must be a number, zero or more";
    switch (k->type) {
    case T_U32:
        if (n > UINT32_MAX || n != floor(n))
            return "must be a whole number below 2^32";
        *(uint32_t *)field = (uint32_t)n;
        break;
    case T_U64:
        if (n > 9e18 || n != floor(n))
            return "must be a whole number";
        *(uint64_t *)field = (uint64_t)n;
        break;
    case T_SIZE:
        if (n > 9e15 || n != floor(n))
            return "must be a whole number of bytes";
        *(size_t *)field = (size_t)n;
        break;
    case T_MS:
        if (n * 1000 > UINT32_MAX)
            return "must be a number of seconds below 4294967";
        /* Any time above zero is at least 1 ms: 0 alone means "off". */
        *(uint32_t *)field = n > 0 && n * 1000 < 1 ? 1 : (uint32_t)llround(n * 1000);
        break;
    default:
        break;
    }
    return NULL;
}

/* Checks that the value at the top is plain data that can be copied to another state. */
static int is_data(lua_State *L, int depth)
{
    int t = lua_type(L, -1);
    if (t == LUA_TNIL || t == LUA_TBOOLEAN || t == LUA_TNUMBER || t == LUA_TSTRING)
        return 1;
    if (t != LUA_TTABLE || depth > 32)
        return 0;
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
        int ok = is_data(L, depth + 1);
        lua_pop(L, 1);
        if (ok) {
            lua_pushvalue(L, -1);
            ok = is_data(L, depth + 1);
            lua_pop(L, 1);
        }
        if (!ok) {
            lua_pop(L, 1);
            return 0;
        }
    }
    return 1;
}

static int run_file(lua_State *L)
{
    const char *path = lua_touserdata(L, 1);
    static const char *const allowed[] = {"assert", "error",    "ipairs", "next",
                                          "pairs",  "select",   "tonumber", "tostring",
                                          "type",   "math",     "string", "table"};

    luaL_openlibs(L);
    lua_newtable(L); /* the environment */
    for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++) {
        lua_getglobal(L, allowed[i]);
        lua_setfield(L, -2, allowed[i]);
    }
    lua_newtable(L);
    lua_getglobal(L, "os");
    lua_getfield(L, -1, "getenv");
    lua_setfield(L, -3, "getenv");
    lua_pop(L, 1);
    lua_setfield(L, -2, "os");
    if (luaL_loadfilex(L, path, "t") != LUA_OK)
        return lua_error(L);
    lua_pushvalue(L, -2);
    lua_setupvalue(L, -2, 1);
    lua_call(L, 0, 1);
    return 1;
}

int mw_config_load(mw_config_t *cfg, const char *path, char *err, size_t errlen)
{
    lua_State *L;
    int r;

    if (mw_config_set_str(&cfg->path, path) != 0)
        return MW_ENOMEM;
    L = luaL_newstate();
    if (L == NULL)
        return MW_ENOMEM;
    lua_pushcfunction(L, run_file);
    lua_pushlightuserdata(L, (void *)path);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        snprintf(err, errlen, "config: %s", lua_tostring(L, -1));
        lua_close(L);
        return MW_ECONFIG;
    }
    if (lua_type(L, -1) != LUA_TTABLE) {
        snprintf(err, errlen, "config %s: the file must return a table", path);
        lua_close(L);
        return MW_ECONFIG;
    }
    r = mw_config_apply(cfg, L, -1, path, err, errlen);
    lua_close(L);
    return r;
}

/* Copies the plain-data value at the top of `from` onto `to`. */
static void copy_value(lua_State *from, lua_State *to, int depth)
{
    switch (lua_type(from, -1)) {
    case LUA_TBOOLEAN:
        lua_pushboolean(to, lua_toboolean(from, -1));
        break;
    case LUA_TNUMBER:
        if (lua_isinteger(from, -1))
            lua_pushinteger(to, lua_tointeger(from, -1));
        else
            lua_pushnumber(to, lua_tonumber(from, -1));
        break;
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(from, -1, &len);
        lua_pushlstring(to, s, len);
        break;
    }
    case LUA_TTABLE:
        lua_newtable(to);
        if (depth > 32)
            break;
        lua_pushnil(from);
        while (lua_next(from, -2) != 0) {
            lua_pushvalue(from, -2);
            copy_value(from, to, depth + 1); /* key */
            lua_pop(from, 1);
            copy_value(from, to, depth + 1); /* value */
            lua_pop(from, 1);
            lua_rawset(to, -3);
        }
        break;
    default:
        lua_pushnil(to);
        break;
    }
}

int mw_config_apply(mw_config_t *cfg, lua_State *L, int idx, const char *origin, char *err,
                    size_t errlen)
{
    const char *msg;
    int top = lua_gettop(L), r = 0;

    idx = lua_absindex(L, idx);
    lua_pushnil(L);
    while (r == 0 && lua_next(L, idx) != 0) {
        const char *name;
        const key_t_ *k;
        int is_section = 0;

        if (lua_type(L, -2) != LUA_TSTRING) {
            r = key_error(err, errlen, origin, NULL, "?", "keys must be strings");
            break;
        }
        name = lua_tostring(L, -2);
        for (size_t i = 0; i < sizeof(sections) / sizeof(sections[0]); i++)
            is_section |= strcmp(name, sections[i]) == 0;

        if (strcmp(name, "app") == 0) {
            if (lua_type(L, -1) != LUA_TTABLE || !is_data(L, 0)) {
                r = key_error(err, errlen, origin, NULL, name,
                              "must be a table of strings, numbers, booleans and tables");
                break;
            }
            /* Keep a copy in a state of the configuration's own. */
            if (cfg->L == NULL && (cfg->L = luaL_newstate()) == NULL) {
                r = MW_ENOMEM;
                break;
            }
            luaL_unref(cfg->L, LUA_REGISTRYINDEX, cfg->app_ref);
            copy_value(L, cfg->L, 0);
            cfg->app_ref = luaL_ref(cfg->L, LUA_REGISTRYINDEX);
        } else if (is_section) {
            if (lua_type(L, -1) != LUA_TTABLE) {
                r = key_error(err, errlen, origin, NULL, name, "must be a table");
                break;
            }
            lua_pushnil(L);
            while (lua_next(L, -2) != 0) {
                const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
                k = lua_type(L, -2) == LUA_TSTRING ? find_key(name, key) : NULL;
                if (k == NULL) {
                    r = key_error(err, errlen, origin, name, key, "is not a configuration key");
                    break;
                }
                if ((msg = apply(cfg, k, L)) != NULL) {
                    r = key_error(err, errlen, origin, name, key, msg);
                    break;
                }
                lua_pop(L, 1);
            }
        } else {
            k = find_key(NULL, name);
            if (k == NULL)
                r = key_error(err, errlen, origin, NULL, name, "is not a configuration key");
            else if ((msg = apply(cfg, k, L)) != NULL)
                r = key_error(err, errlen, origin, NULL, name, msg);
            else if (k->offset == F(listen))
                cfg->listen_set = 1;
        }
        lua_pop(L, 1);
    }
    lua_settop(L, top);
    return r;
}

static void push_list(lua_State *L, const mw_strlist_t *list)
{
    lua_createtable(L, (int)list->n, 0);
    for (size_t i = 0; i < list->n; i++) {
        lua_pushstring(L, list->items[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
}

void mw_config_push(const mw_config_t *cfg, lua_State *L)
{
    static const char *bp_names[] = {"close", "drop"};

    lua_newtable(L);
    for (size_t i = 0; i < NKEYS; i++) {
        const key_t_ *k = &schema[i];
        const void *field = (const char *)cfg + k->offset;
        if (k->section != NULL) {
            if (lua_getfield(L, -1, k->section) != LUA_TTABLE) {
                lua_pop(L, 1);
                lua_newtable(L);
                lua_pushvalue(L, -1);
                lua_setfield(L, -3, k->section);
            }
        }
        switch (k->type) {
        case T_STR:
            if (*(char *const *)field != NULL)
                lua_pushstring(L, *(char *const *)field);
            else
                lua_pushnil(L);
            break;
        case T_LIST:
            push_list(L, field);
            break;
        case T_SHARDS: {
            /* One Redis reads back as the string it was given. */
            const mw_strlist_t *list = field;
            if (list->n == 0)
                lua_pushnil(L);
            else if (list->n == 1)
                lua_pushstring(L, list->items[0]);
            else
                push_list(L, list);
            break;
        }
        case T_BOOL:
            lua_pushboolean(L, *(const int *)field);
            break;
        case T_U32:
            lua_pushinteger(L, *(const uint32_t *)field);
            break;
        case T_U64:
            lua_pushinteger(L, (lua_Integer) * (const uint64_t *)field);
            break;
        case T_SIZE:
            lua_pushinteger(L, (lua_Integer) * (const size_t *)field);
            break;
        case T_MS: {
            uint32_t ms = *(const uint32_t *)field;
            if (ms % 1000 == 0)
                lua_pushinteger(L, ms / 1000);
            else
                lua_pushnumber(L, ms / 1000.0);
            break;
        }
        case T_LEVEL:
            lua_pushstring(L, mw_log_level_name(*(const int *)field));
            break;
        case T_BPOLICY:
            lua_pushstring(L, bp_names[*(const int *)field]);
            break;
        }
        lua_setfield(L, -2, k->key);
        if (k->section != NULL)
            lua_pop(L, 1);
    }
    if (cfg->L != NULL && cfg->app_ref != LUA_NOREF) {
        lua_rawgeti(cfg->L, LUA_REGISTRYINDEX, cfg->app_ref);
        copy_value(cfg->L, L, 0);
        lua_pop(cfg->L, 1);
    } else {
        lua_newtable(L);
    }
    lua_setfield(L, -2, "app");
}
