/* Configuration: defaults, the schema, and loading a Lua configuration file.
 *
 * The file runs in a state of its own with a small environment (no io, no
 * require); only its returned table is read. Every key the server knows is a
 * row of `schema` below, which also drives mw_config_push().
 */
#include "moonwire/config.h"
#include "acl.h"
#include "redis_url.h"
#include "moonwire/error.h"
#include "moonwire/log.h"

#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <math.h>
#include <netdb.h>
#include <sys/socket.h>
#include <uv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef enum { T_STR, T_LIST, T_BOOL, T_U32, T_U64, T_SIZE, T_MS, T_LEVEL, T_BPOLICY } ktype_t;

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
    {"cluster", "redis", T_STR, F(cluster_redis)},
    {"cluster", "password", T_STR, F(cluster_password)},
    {"cluster", "prefix", T_STR, F(cluster_prefix)},
    {"cluster", "connect_timeout", T_MS, F(cluster_connect_timeout)},
    {"cluster", "command_timeout", T_MS, F(cluster_command_timeout)},
    {"cluster", "reconnect_max", T_MS, F(cluster_reconnect_max)},
    {"cluster", "presence_ttl", T_MS, F(cluster_presence_ttl)},
    /* The outbox: what this node sends to the others waits here until Redis
     * has taken it (in order, across outages). outbox_size bounds its bytes
     * (past it a send is refused: nil, "outbox full"), outbox_max_age how
     * long a message may wait for Redis (then it is dropped, counted, logged). */
    {"cluster", "outbox_size", T_SIZE, F(cluster_outbox_size)},
    {"cluster", "outbox_max_age", T_MS, F(cluster_outbox_max_age)},
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
    /* http: the built-in endpoints. *_allow are address lists ("10.0.0.0/8",
     * "::1"); a request from elsewhere gets 403. Empty lists allow everyone. */
    {"http", "healthz", T_BOOL, F(healthz)},
    {"http", "metrics", T_BOOL, F(metrics)},
    {"http", "healthz_allow", T_LIST, F(healthz_allow)},
    {"http", "metrics_allow", T_LIST, F(metrics_allow)},
    /* Keep-alive for plain HTTP requests (static files, /healthz, /metrics):
     * keepalive_timeout is how long an idle connection waits for its next
     * request (seconds; 0 closes after every reply), keepalive_requests how
     * many requests one connection may make (the last reply says close). */
    {"http", "keepalive_timeout", T_MS, F(keepalive_timeout)},
    {"http", "keepalive_requests", T_U32, F(keepalive_requests)},
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
                                 "static", "tls",       "cluster", "history", "app"};

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
    cfg->cluster_connect_timeout = 2000;
    cfg->cluster_command_timeout = 3000;
    cfg->cluster_reconnect_max = 5000;
    cfg->cluster_presence_ttl = 30000;
    cfg->cluster_outbox_size = 16u << 20;
    cfg->cluster_outbox_max_age = 60000;
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
    cfg->app_ref = LUA_NOREF;
    if (mw_config_set_str(&cfg->static_index, "index.html") != 0 ||
        mw_config_set_str(&cfg->static_cache_control, "public, max-age=300") != 0 ||
        mw_config_set_str(&cfg->static_immutable_cache_control,
                          "public, max-age=31536000, immutable") != 0 ||
        mw_config_set_str(&cfg->script, "scripts/relay.lua") != 0 ||
        mw_config_set_str(&cfg->cluster_prefix, "mw") != 0 ||
        mw_config_set_str(&cfg->history_field, "offset") != 0 ||
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
        } else if (schema[i].type == T_LIST) {
            mw_config_list_clear(field);
        }
    }
    free(cfg->path);
    cfg->path = NULL;
    if (cfg->L != NULL)
        lua_close(cfg->L);
    cfg->L = NULL;
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
    case T_LIST: {
        mw_strlist_t *list = field;
        mw_config_list_clear(list);
        if (lua_type(L, -1) == LUA_TSTRING)
            return mw_config_list_add(list, lua_tostring(L, -1)) == 0 ? NULL : "out of memory";
        if (lua_type(L, -1) != LUA_TTABLE)
            return "must be a string or a list of strings";
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

/* True when s is fit for a header value: no control character but tab. */
static int header_safe(const char *s)
{
    for (; *s; s++)
        if (((unsigned char)*s < 0x20 && *s != '\t') || *s == 0x7f)
            return 0;
    return 1;
}

static int validate_static(const mw_config_t *cfg, char *err, size_t errlen)
{
    const char *index = cfg->static_index;
    struct stat st;

    if (cfg->static_root != NULL &&
        (cfg->static_root[0] == '\0' || stat(cfg->static_root, &st) != 0 || !S_ISDIR(st.st_mode))) {
        snprintf(err, errlen, "config: 'static.root' '%s' is not a directory", cfg->static_root);
        return MW_ECONFIG;
    }
    if (index == NULL || index[0] == '\0' || index[0] == '.' || strchr(index, '/') != NULL ||
        strchr(index, '\\') != NULL || !header_safe(index)) {
        snprintf(err, errlen, "config: 'static.index' must be a file name (no '/', not a dotfile)");
        return MW_ECONFIG;
    }
    if (cfg->static_cache_control == NULL || !header_safe(cfg->static_cache_control)) {
        snprintf(err, errlen, "config: 'static.cache_control' must be a header value");
        return MW_ECONFIG;
    }
    if (cfg->static_immutable_cache_control == NULL ||
        !header_safe(cfg->static_immutable_cache_control)) {
        snprintf(err, errlen, "config: 'static.immutable_cache_control' must be a header value");
        return MW_ECONFIG;
    }
    if (cfg->static_max_file_size == 0 || cfg->static_max_file_size > UINT32_MAX) {
        snprintf(err, errlen, "config: 'static.max_file_size' must be 1 to 4294967295");
        return MW_ECONFIG;
    }
    if (cfg->static_max_open_files == 0) {
        snprintf(err, errlen, "config: 'static.max_open_files' must be 1 or more");
        return MW_ECONFIG;
    }
    if (cfg->keepalive_requests == 0) {
        snprintf(err, errlen, "config: 'http.keepalive_requests' must be 1 or more");
        return MW_ECONFIG;
    }
    return 0;
}

/* Splits "HOST:PORT", "[IPV6]:PORT" or ":PORT": host gets HOST without the
 * brackets ("" for :PORT) and *v6 whether it had them. Returns 0 or MW_EINVAL. */
static int split_addr(const char *text, char *host, size_t cap, int *port, int *v6)
{
    const char *colon = strrchr(text, ':');
    char *end;
    long p;
    size_t hlen;

    if (colon == NULL)
        return MW_EINVAL;
    p = strtol(colon + 1, &end, 10);
    if (*end != '\0' || colon[1] < '0' || colon[1] > '9' || p > 65535)
        return MW_EINVAL;
    hlen = (size_t)(colon - text);
    *v6 = hlen >= 2 && text[0] == '[' && text[hlen - 1] == ']';
    if (*v6) {
        text++;
        hlen -= 2;
    }
    if (hlen >= cap)
        return MW_EINVAL;
    memcpy(host, text, hlen);
    host[hlen] = '\0';
    *port = (int)p;
    return 0;
}

/* A host name as RFC 1123 spells one: dot-separated labels of letters,
 * digits and hyphens (not at either end), and not all digits and dots (that
 * would be an IPv4 address, checked as such). */
static int is_host_name(const char *h)
{
    size_t len = strlen(h), label = 0;
    int letter = 0;

    if (len == 0 || len > 253)
        return 0;
    for (size_t i = 0; i <= len; i++) {
        char ch = h[i];
        if (ch == '.' || ch == '\0') {
            if (label == 0 || label > 63 || h[i - 1] == '-')
                return 0;
            label = 0;
        } else if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '-' ||
                   (ch >= '0' && ch <= '9')) {
            if (ch == '-' && label == 0)
                return 0;
            letter |= !(ch >= '0' && ch <= '9');
            label++;
        } else {
            return 0;
        }
    }
    return letter;
}

/* Parses an address literal into addr. Returns 0, MW_EINVAL (malformed) or
 * MW_EAGAIN (a host name, to resolve). */
static int parse_literal(const char *text, struct sockaddr_storage *addr, char *host, size_t cap,
                         int *port)
{
    int v6;

    if (split_addr(text, host, cap, port, &v6) != 0)
        return MW_EINVAL;
    memset(addr, 0, sizeof(*addr));
    if (v6)
        return uv_ip6_addr(host, *port, (struct sockaddr_in6 *)addr) == 0 ? 0 : MW_EINVAL;
    if (host[0] == '\0')
        return uv_ip4_addr("0.0.0.0", *port, (struct sockaddr_in *)addr) == 0 ? 0 : MW_EINVAL;
    if (uv_ip4_addr(host, *port, (struct sockaddr_in *)addr) == 0)
        return 0;
    return is_host_name(host) ? MW_EAGAIN : MW_EINVAL;
}

int mw_config_check_addr(const char *text)
{
    struct sockaddr_storage addr;
    char host[256];
    int port, r = parse_literal(text, &addr, host, sizeof(host), &port);
    return r == MW_EAGAIN ? 0 : r;
}

int mw_config_parse_addr(const char *text, struct sockaddr_storage *addr, char *err,
                         size_t errlen)
{
    struct addrinfo hints, *res = NULL, *pick = NULL;
    char host[256];
    int port, r = parse_literal(text, addr, host, sizeof(host), &port);

    if (r != MW_EAGAIN) {
        if (r != 0)
            snprintf(err, errlen, "'%s' is not HOST:PORT, [IPV6]:PORT or :PORT", text);
        return r;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    r = getaddrinfo(host, NULL, &hints, &res);
    if (r != 0) {
        snprintf(err, errlen, "cannot resolve '%s': %s", host,
                 r == EAI_SYSTEM ? strerror(errno) : gai_strerror(r));
        return MW_ENOTFOUND;
    }
    /* One address, as Go's net.Listen does with a name: the first IPv4 one,
     * else the first IPv6 one. */
    for (struct addrinfo *ai = res; ai != NULL && pick == NULL; ai = ai->ai_next)
        if (ai->ai_family == AF_INET)
            pick = ai;
    for (struct addrinfo *ai = res; ai != NULL && pick == NULL; ai = ai->ai_next)
        if (ai->ai_family == AF_INET6)
            pick = ai;
    if (pick == NULL) {
        freeaddrinfo(res);
        snprintf(err, errlen, "cannot resolve '%s': no IPv4 or IPv6 address", host);
        return MW_ENOTFOUND;
    }
    memset(addr, 0, sizeof(*addr));
    memcpy(addr, pick->ai_addr, pick->ai_addrlen);
    if (pick->ai_family == AF_INET)
        ((struct sockaddr_in *)addr)->sin_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in6 *)addr)->sin6_port = htons((uint16_t)port);
    freeaddrinfo(res);
    {
        char ip[64] = "?";
        if (addr->ss_family == AF_INET)
            uv_ip4_name((struct sockaddr_in *)addr, ip, sizeof(ip));
        else
            uv_ip6_name((struct sockaddr_in6 *)addr, ip, sizeof(ip));
        mw_log_info("listen: %s is %s", host, ip);
    }
    return 0;
}

int mw_config_validate(const mw_config_t *cfg, char *err, size_t errlen)
{
    const mw_strlist_t *lists[2] = {&cfg->listen, &cfg->tls_listen};
    for (int l = 0; l < 2; l++) {
        for (size_t i = 0; i < lists[l]->n; i++) {
            if (mw_config_check_addr(lists[l]->items[i]) != 0) {
                snprintf(err, errlen,
                         "config: '%s' entry '%s' is not HOST:PORT (an IPv4 address or a host "
                         "name), [IPV6]:PORT or :PORT",
                         l == 0 ? "listen" : "tls.listen", lists[l]->items[i]);
                return MW_ECONFIG;
            }
        }
    }
    const struct {
        const mw_strlist_t *list;
        const char *key;
    } acls[] = {{&cfg->healthz_allow, "http.healthz_allow"},
                {&cfg->metrics_allow, "http.metrics_allow"}};
    for (size_t i = 0; i < 2; i++) {
        for (size_t j = 0; j < acls[i].list->n; j++) {
            mw_cidr_t cidr;
            if (mw_cidr_parse(acls[i].list->items[j], &cidr) != 0) {
                snprintf(err, errlen, "config: '%s' entry '%s' is not an address or CIDR range",
                         acls[i].key, acls[i].list->items[j]);
                return MW_ECONFIG;
            }
        }
    }
    if (cfg->tls_listen.n > 0 && (cfg->tls_cert == NULL || cfg->tls_key == NULL)) {
        snprintf(err, errlen, "config: TLS listeners need 'tls.cert' and 'tls.key' "
                              "(or --cert and --key)");
        return MW_ECONFIG;
    }
    if (cfg->script == NULL || cfg->script[0] == '\0') {
        snprintf(err, errlen, "config: 'script' is empty");
        return MW_ECONFIG;
    }
    if (cfg->node_id != NULL) {
        const char *p = cfg->node_id;
        if (*p == '\0' || strlen(p) > 32) {
            snprintf(err, errlen, "config: 'node_id' must be 1 to 32 characters");
            return MW_ECONFIG;
        }
        for (; *p; p++) {
            if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                  (*p >= '0' && *p <= '9') || *p == '_' || *p == '-')) {
                snprintf(err, errlen, "config: 'node_id' may hold only letters, digits, _ and -");
                return MW_ECONFIG;
            }
        }
    }
    for (size_t i = 0; i < cfg->ws_paths.n; i++) {
        if (cfg->ws_paths.items[i][0] != '/') {
            snprintf(err, errlen, "config: 'websocket.paths' entry '%s' must start with /",
                     cfg->ws_paths.items[i]);
            return MW_ECONFIG;
        }
    }
    if (cfg->max_message_size == 0 || cfg->max_message_size > UINT32_MAX - 16) {
        snprintf(err, errlen, "config: 'websocket.max_message_size' must be 1 to 4294967279");
        return MW_ECONFIG;
    }
    if (cfg->cluster_prefix == NULL || cfg->cluster_prefix[0] == '\0' ||
        strlen(cfg->cluster_prefix) > 32 || strchr(cfg->cluster_prefix, ' ') != NULL) {
        snprintf(err, errlen, "config: 'cluster.prefix' must be 1 to 32 characters, no spaces");
        return MW_ECONFIG;
    }
    if (cfg->cluster_redis != NULL) {
        mw_redis_url_t url;
        if (mw_redis_url_parse(cfg->cluster_redis, &url) != 0) {
            snprintf(err, errlen, "config: 'cluster.redis' is not redis://[:password@]host[:port][/db] "
                                  "or unix:///path");
            return MW_ECONFIG;
        }
    }
    if (cfg->workers > 1 && cfg->node_id != NULL && strlen(cfg->node_id) > 27) {
        snprintf(err, errlen, "config: with workers, 'node_id' must be at most 27 characters "
                              "(each worker adds -w<k>)");
        return MW_ECONFIG;
    }
    if (cfg->workers > 256) {
        snprintf(err, errlen, "config: 'workers' must be 0 to 256");
        return MW_ECONFIG;
    }
    if (cfg->history_size == 0 || cfg->history_size > 1000000) {
        snprintf(err, errlen, "config: 'history.size' must be 1 to 1000000");
        return MW_ECONFIG;
    }
    if (cfg->max_topics == 0 || cfg->max_topics > UINT32_MAX || cfg->max_subscriptions == 0 ||
        cfg->max_subscriptions > UINT32_MAX) {
        snprintf(err, errlen, "config: 'limits.max_topics' and 'limits.max_subscriptions' must be "
                              "1 to 4294967295");
        return MW_ECONFIG;
    }
    if (cfg->history_max_topics == 0 || cfg->history_max_topics > UINT32_MAX) {
        snprintf(err, errlen, "config: 'history.max_topics' must be 1 to 4294967295");
        return MW_ECONFIG;
    }
    if (cfg->history_max_bytes < 65536) {
        snprintf(err, errlen, "config: 'history.max_bytes' must be at least 65536");
        return MW_ECONFIG;
    }
    if (cfg->history_field != NULL) {
        for (const char *p = cfg->history_field; *p; p++) {
            if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                  *p == '_')) {
                snprintf(err, errlen, "config: 'history.field' may hold only letters, digits and _");
                return MW_ECONFIG;
            }
        }
        if (strlen(cfg->history_field) > 64 || strcmp(cfg->history_field, "epoch") == 0) {
            snprintf(err, errlen, "config: 'history.field' must be at most 64 characters, not epoch");
            return MW_ECONFIG;
        }
    }
    if (cfg->cluster_presence_ttl < 3000) {
        snprintf(err, errlen, "config: 'cluster.presence_ttl' must be at least 3 seconds");
        return MW_ECONFIG;
    }
    if (cfg->cluster_reconnect_max < 100 || cfg->cluster_connect_timeout == 0 ||
        cfg->cluster_command_timeout == 0) {
        snprintf(err, errlen, "config: cluster timeouts must be above 0 and "
                              "'cluster.reconnect_max' at least 0.1");
        return MW_ECONFIG;
    }
    if (cfg->cluster_outbox_size < (64u << 10) || cfg->cluster_outbox_size > (1ull << 32)) {
        snprintf(err, errlen, "config: 'cluster.outbox_size' must be 65536 to 4294967296 bytes");
        return MW_ECONFIG;
    }
    if (cfg->cluster_outbox_max_age < 1000) {
        snprintf(err, errlen, "config: 'cluster.outbox_max_age' must be at least 1 second");
        return MW_ECONFIG;
    }
    if (cfg->compression_level < 1 || cfg->compression_level > 9) {
        snprintf(err, errlen, "config: 'websocket.compression_level' must be 1 to 9");
        return MW_ECONFIG;
    }
    if (cfg->server_max_window_bits < 9 || cfg->server_max_window_bits > 15) {
        snprintf(err, errlen, "config: 'websocket.server_max_window_bits' must be 9 to 15");
        return MW_ECONFIG;
    }
    if (cfg->client_max_window_bits < 8 || cfg->client_max_window_bits > 15) {
        snprintf(err, errlen, "config: 'websocket.client_max_window_bits' must be 8 to 15");
        return MW_ECONFIG;
    }
    if (cfg->max_head_size < 256) {
        snprintf(err, errlen, "config: 'limits.max_head_size' must be at least 256");
        return MW_ECONFIG;
    }
    return validate_static(cfg, err, errlen);
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
