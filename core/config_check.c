/* Checking a configuration: every value in its range and every key that
 * depends on another consistent, the listen addresses parsed (host names
 * resolved only when listening), the static headers fit for a reply, the
 * cluster.redis address and the allowlists well formed. What passes can
 * not fail later for a reason of its own. See config.h.
 */
#include "acl.h"
#include "moonwire/config.h"
#include "moonwire/error.h"
#include "moonwire/log.h"
#include "redis_url.h"
#include "shard.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <uv.h>

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
    const mw_strlist_t *lists[3] = {&cfg->listen, &cfg->tls_listen, &cfg->api_listen};
    for (int l = 0; l < 3; l++) {
        for (size_t i = 0; i < lists[l]->n; i++) {
            if (mw_config_check_addr(lists[l]->items[i]) != 0) {
                snprintf(err, errlen,
                         "config: '%s' entry '%s' is not HOST:PORT (an IPv4 address or a host "
                         "name), [IPV6]:PORT or :PORT",
                         l == 0 ? "listen" : l == 1 ? "tls.listen" : "api.listen",
                         lists[l]->items[i]);
                return MW_ECONFIG;
            }
        }
    }
    const struct {
        const mw_strlist_t *list;
        const char *key;
    } acls[] = {{&cfg->healthz_allow, "http.healthz_allow"},
                {&cfg->metrics_allow, "http.metrics_allow"},
                {&cfg->trusted_proxies, "http.trusted_proxies"},
                {&cfg->api_allow, "api.allow"}};
    for (size_t i = 0; i < sizeof(acls) / sizeof(acls[0]); i++) {
        for (size_t j = 0; j < acls[i].list->n; j++) {
            mw_cidr_t cidr;
            if (mw_cidr_parse(acls[i].list->items[j], &cidr) != 0) {
                snprintf(err, errlen, "config: '%s' entry '%s' is not an address or CIDR range",
                         acls[i].key, acls[i].list->items[j]);
                return MW_ECONFIG;
            }
        }
    }
    if (cfg->api_listen.n > 0 && cfg->api_key == NULL) {
        snprintf(err, errlen, "config: 'api.listen' needs 'api.key' (or MW_API_KEY)");
        return MW_ECONFIG;
    }
    if (cfg->api_key != NULL && cfg->api_key[0] == '\0') {
        snprintf(err, errlen, "config: 'api.key' must not be empty (leave it out to turn the "
                              "API off)");
        return MW_ECONFIG;
    }
    if (cfg->api_max_body < 64 || cfg->api_max_body > (64u << 20)) {
        snprintf(err, errlen, "config: 'api.max_body' must be 64 bytes to 64 MiB");
        return MW_ECONFIG;
    }
    if (cfg->api_max_batch < 1 || cfg->api_max_batch > 10000) {
        snprintf(err, errlen, "config: 'api.max_batch' must be 1 to 10000");
        return MW_ECONFIG;
    }
    if (cfg->queue_read_count < 1 || cfg->queue_read_count > 10000 ||
        cfg->queue_max_pending < cfg->queue_read_count) {
        snprintf(err, errlen, "config: 'queue.read_count' must be 1 to 10000, and "
                              "'queue.max_pending' at least as much");
        return MW_ECONFIG;
    }
    if (cfg->queue_claim_after == 0 || cfg->queue_block == 0) {
        snprintf(err, errlen, "config: 'queue.claim_after' and 'queue.block' must be above 0");
        return MW_ECONFIG;
    }
    if (cfg->queue_max_deliveries < 1 || cfg->queue_max_deliveries > 1000) {
        snprintf(err, errlen, "config: 'queue.max_deliveries' must be 1 to 1000");
        return MW_ECONFIG;
    }
    if (cfg->queue_push_maxlen < 1) {
        snprintf(err, errlen, "config: 'queue.push_maxlen' must be at least 1");
        return MW_ECONFIG;
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
    if (cfg->cluster_redis.n > MW_SHARDS_MAX) {
        snprintf(err, errlen, "config: 'cluster.redis' lists %zu Redis servers: at most %d shards",
                 cfg->cluster_redis.n, MW_SHARDS_MAX);
        return MW_ECONFIG;
    }
    for (size_t i = 0; i < cfg->cluster_redis.n; i++) {
        mw_redis_url_t url;
        if (mw_redis_url_parse(cfg->cluster_redis.items[i], &url) != 0) {
            snprintf(err, errlen,
                     "config: 'cluster.redis' has '%s', not "
                     "redis://[:password@]host[:port][/db] or unix:///path",
                     cfg->cluster_redis.items[i]);
            return MW_ECONFIG;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(cfg->cluster_redis.items[i], cfg->cluster_redis.items[j]) == 0) {
                snprintf(err, errlen,
                         "config: 'cluster.redis' lists '%s' twice: each shard is "
                         "a Redis of its own",
                         cfg->cluster_redis.items[i]);
                return MW_ECONFIG;
            }
        }
    }
    if ((cfg->cluster_sentinels.n > 0) != (cfg->cluster_master != NULL)) {
        snprintf(err, errlen, "config: 'cluster.sentinels' and 'cluster.master' go together: "
                              "the sentinels, and the name they know the master by");
        return MW_ECONFIG;
    }
    if (cfg->cluster_sentinels.n > 0 && cfg->cluster_redis.n > 1) {
        snprintf(err, errlen,
                 "config: 'cluster.sentinels' finds one Redis: shards (a list in "
                 "'cluster.redis') can not go through sentinels");
        return MW_ECONFIG;
    }
    if (cfg->cluster_sentinels.n > 0 && cfg->cluster_redis.n > 0) {
        snprintf(err, errlen, "config: 'cluster.redis' and 'cluster.sentinels' both say where "
                              "Redis is: give one (with sentinels, cluster.password is the "
                              "master's password)");
        return MW_ECONFIG;
    }
    if (cfg->cluster_sentinels.n > 16) {
        snprintf(err, errlen, "config: 'cluster.sentinels' may list at most 16 sentinels");
        return MW_ECONFIG;
    }
    for (size_t i = 0; i < cfg->cluster_sentinels.n; i++) {
        char host[256];
        int port;
        if (mw_redis_hostport_parse(cfg->cluster_sentinels.items[i], host, &port) != 0) {
            snprintf(err, errlen, "config: 'cluster.sentinels' has '%s', not host:port",
                     cfg->cluster_sentinels.items[i]);
            return MW_ECONFIG;
        }
    }
    if (cfg->cluster_master != NULL &&
        (cfg->cluster_master[0] == '\0' || strlen(cfg->cluster_master) > 255 ||
         strpbrk(cfg->cluster_master, " \t\r\n") != NULL)) {
        snprintf(err, errlen, "config: 'cluster.master' must be 1 to 255 characters, no spaces");
        return MW_ECONFIG;
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
    if (cfg->cluster_outbox_replay > 60000) {
        snprintf(err, errlen, "config: 'cluster.outbox_replay' must be 0 to 60 seconds");
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
    if (cfg->http_client_max_concurrent < 1 || cfg->http_client_max_concurrent > 65536) {
        snprintf(err, errlen, "config: 'http_client.max_concurrent' must be 1 to 65536");
        return MW_ECONFIG;
    }
    if (cfg->http_client_max_response < 1024 || cfg->http_client_max_response > (1ull << 30)) {
        snprintf(err, errlen, "config: 'http_client.max_response' must be 1024 to 1073741824 bytes");
        return MW_ECONFIG;
    }
    if (cfg->http_client_max_headers < 1 || cfg->http_client_max_headers > 1000) {
        snprintf(err, errlen, "config: 'http_client.max_headers' must be 1 to 1000");
        return MW_ECONFIG;
    }
    if (cfg->http_client_timeout == 0 || cfg->http_client_max_timeout < cfg->http_client_timeout) {
        snprintf(err, errlen, "config: 'http_client.timeout' must be above 0 and at most "
                              "'http_client.max_timeout'");
        return MW_ECONFIG;
    }
    if (cfg->max_head_size < 256) {
        snprintf(err, errlen, "config: 'limits.max_head_size' must be at least 256");
        return MW_ECONFIG;
    }
    return validate_static(cfg, err, errlen);
}
