/* Routing of complete HTTP requests and the WebSocket opening handshake:
 * what the server installs as its connections' on_request.
 *
 * Order: built-in endpoints (/healthz, /metrics), the server API (/api/,
 * when api.key is set: api.c), then, for a request without an Upgrade
 * header: a static file, when static files are on and one answers it
 * (core/static.c), then the app's on_request when it has one
 * (api_request.c), then static.c's own refusal (404, 405) when static files
 * are on; then WebSocket paths (RFC 6455 checks, origin allowlist,
 * capacity, on_upgrade, 101), then 404.
 * Every refusal is a short text reply and a closed connection; the
 * built-in endpoints and static files may keep the connection for another
 * request (conn.c decides).
 */
#include "handshake.h"
#include "acl.h"
#include "api.h"
#include "api_request.h"
#include "cluster.h"
#include "conn.h"
#include "deflate.h"
#include "forwarded.h"
#include "gauges.h"
#include "iplimit.h"
#include "lua_dispatch.h"
#include "node.h"
#include "registry.h"
#include "static.h"
#include "moonwire/config.h"
#include "moonwire/error.h"
#include "moonwire/log.h"
#include "moonwire/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void count(mw_conn_t *c, mw_handshake_result_t r)
{
    c->conns->metrics->handshakes[r]++;
}

int mw_handshake_path_matches(const char *const *patterns, size_t n, const char *path, size_t len)
{
    for (size_t i = 0; i < n; i++) {
        const char *p = patterns[i];
        size_t plen = strlen(p);
        if (plen > 0 && p[plen - 1] == '*') {
            if (len >= plen - 1 && memcmp(path, p, plen - 1) == 0)
                return 1;
        } else if (plen == len && memcmp(path, p, len) == 0) {
            return 1;
        }
    }
    return 0;
}

static int path_is(const char *path, size_t len, const char *lit)
{
    return strlen(lit) == len && memcmp(path, lit, len) == 0;
}

static int origin_allowed(const mw_conn_t *c)
{
    const mw_strlist_t *allow = &c->conns->cfg->allowed_origins;
    const char *origin;
    size_t len;

    if (allow->n == 0)
        return 1;
    origin = mw_http_header(c->http, "Origin", 0, &len);
    if (origin == NULL)
        return 1; /* not a browser: Origin protects browsers' users only */
    for (size_t i = 0; i < allow->n; i++) {
        const char *a = allow->items[i];
        if (strcmp(a, "*") == 0 || (strlen(a) == len && strncasecmp(a, origin, len) == 0))
            return 1;
    }
    return 0;
}

/* Picks the first subprotocol of the configured list that the client offered. */
static const char *config_protocol(const mw_conn_t *c)
{
    const mw_strlist_t *mine = &c->conns->cfg->subprotocols;
    for (size_t i = 0; i < mine->n; i++)
        if (mw_http_header_has_token(c->http, "Sec-WebSocket-Protocol", mine->items[i]))
            return mine->items[i];
    return NULL;
}

static void reply_text(mw_conn_t *c, int status, const char *body, size_t len, int head_only)
{
    mw_conn_reply(c, mw_http_reply_ex(status, NULL, NULL, mw_conn_connection_field(c), body, len,
                                      head_only));
}

static void builtin(mw_conn_t *c, const char *path, size_t len)
{
    mw_node_t *node = c->conns->node;
    int method = c->http->parser.method;
    int head = method == HTTP_HEAD;

    if (method != HTTP_GET && method != HTTP_HEAD) {
        mw_conn_refuse(c, 405, "only GET and HEAD are allowed here", "Allow: GET, HEAD\r\n");
        return;
    }
    if (!mw_acl_allows(path_is(path, len, "/healthz") ? node->healthz_acl : node->metrics_acl,
                       &c->addr)) {
        mw_conn_refuse(c, 403, "not allowed from your address", NULL);
        return;
    }
    if (path_is(path, len, "/healthz")) {
        mw_cluster_status_t st;
        char text[1024];
        int n;
        if (c->conns->draining) {
            reply_text(c, 503, "draining\n", 9, head);
            return;
        }
        if (node->cluster == NULL || (mw_cluster_status(node->cluster, &st), !st.delayed)) {
            reply_text(c, 200, "ok\n", 3, head);
            return;
        }
        /* Still serving its own clients: say so, what waits for the other
         * nodes, and which shards are down (among several), but do not
         * fail the check. */
        n = snprintf(text, sizeof(text), "degraded: %s; outbox %zu message(s), %zu bytes",
                     st.up ? "sending the outbox" : "redis unavailable", st.messages, st.bytes);
        for (unsigned i = 0; st.down != 0 && mw_cluster_shards(node->cluster) > 1 &&
                             i < mw_cluster_shards(node->cluster) && n < (int)sizeof(text) - 80;
             i++) {
            mw_cluster_status_t one;
            if (!(st.down & (1u << i)))
                continue;
            mw_cluster_shard_status(node->cluster, i, &one);
            n += snprintf(text + n, sizeof(text) - (size_t)n, "; shard %u down (%.40s)", i,
                          one.where);
        }
        if (n > (int)sizeof(text) - 2)
            n = (int)sizeof(text) - 2;
        text[n++] = '\n';
        reply_text(c, 200, text, (size_t)n, head);
        return;
    }
    /* /metrics */
    {
        char *text = NULL;
        size_t n;
        mw_gauges_publish(node);
        n = mw_metrics_render(node->metrics, &text);
        if (n == 0) {
            mw_conn_refuse(c, 503, "out of memory", NULL);
            return;
        }
        mw_conn_reply(c, mw_http_reply_ex(200, "text/plain; version=0.0.4", NULL,
                                          mw_conn_connection_field(c), text, n, head));
        free(text);
    }
}

/* Refuses c with 503 when the node takes no more connections (draining,
 * limits.max_connections, max_connections_per_ip); returns 1 then. */
static int refused_full(mw_conn_t *c)
{
    mw_node_t *node = c->conns->node;
    const mw_config_t *cfg = node->cfg;

    if (c->conns->draining || node->reg->nopen >= cfg->max_connections) {
        count(c, MW_HS_full);
        mw_conn_refuse(c, 503, c->conns->draining ? "server shutting down" : "server full",
                       "Retry-After: 5\r\n");
        return 1;
    }
    if (cfg->max_connections_per_ip != 0 &&
        mw_iplimit_count(node->iplimit, &c->addr) > cfg->max_connections_per_ip) {
        count(c, MW_HS_full);
        mw_conn_refuse(c, 503, "too many connections from your address", "Retry-After: 5\r\n");
        return 1;
    }
    return 0;
}

/* on_upgrade's answer (at once, or when a hook that waited has returned):
 * the refusal, or the 101 and on_open. */
static void decided(mw_conn_t *c, const mw_upgrade_decision_t *d, int err)
{
    mw_node_t *node = c->conns->node;
    const mw_config_t *cfg = node->cfg;
    const char *protocol, *key;
    size_t key_len;
    char extra[300];
    mw_frame_t *f;

    if (err != 0) {
        count(c, MW_HS_error);
        mw_conn_refuse(c, 500, "the application failed", NULL);
        return;
    }
    if (c->peer_eof) {
        /* It hung up while on_upgrade waited: nobody to upgrade. */
        mw_log_debug("conn %llu: the client went away while on_upgrade waited",
                     (unsigned long long)c->serial);
        mw_conn_close(c, 0, NULL, 0);
        return;
    }
    if (!d->accept) {
        count(c, MW_HS_app);
        mw_conn_refuse(c, d->status, d->body[0] ? d->body : "refused by the application", NULL);
        return;
    }
    if (refused_full(c)) /* again: a hook that waited may find the node full by now */
        return;
    protocol = d->protocol[0] ? d->protocol : config_protocol(c);
    if (protocol != NULL && (c->protocol = strdup(protocol)) == NULL) {
        count(c, MW_HS_error);
        mw_conn_refuse(c, 503, "out of memory", NULL);
        return;
    }
    {
        char offers[1024], accepted[256];
        size_t n = mw_http_header_join(c->http, "Sec-WebSocket-Extensions", offers, sizeof(offers));
        mw_pmd_config_t pc = {cfg->compression,
                              (int)cfg->compression_level,
                              cfg->compression_threshold,
                              cfg->client_no_context_takeover,
                              (int)cfg->server_max_window_bits,
                              (int)cfg->client_max_window_bits};
        extra[0] = '\0';
        if (n > 0 && mw_pmd_negotiate(offers, n, &pc, &c->ws.pmd, accepted, sizeof(accepted)))
            snprintf(extra, sizeof(extra), "Sec-WebSocket-Extensions: %s\r\n", accepted);
    }
    /* Checked by mw_http_check_upgrade: present, and 24 characters. */
    key = mw_http_header(c->http, "Sec-WebSocket-Key", 0, &key_len);
    f = NULL;
    if (key != NULL && key_len == 24) {
        char k[25];
        memcpy(k, key, 24);
        k[24] = '\0';
        f = mw_http_switching(k, c->protocol, extra[0] ? extra : NULL);
    }
    if (f == NULL || mw_registry_add(node->reg, c) != 0) {
        if (f != NULL)
            mw_frame_unref(f);
        count(c, MW_HS_error);
        mw_conn_refuse(c, 503, "out of memory", NULL);
        return;
    }
    {
        size_t path_len;
        const char *path = mw_http_path(c->http, &path_len);
        mw_conn_log_open(c, path, path_len);
    }
    mw_conn_upgrade(c, f);
    mw_frame_unref(f);
    count(c, MW_HS_ok);
    mw_lua_open(node->lua, c);
    /* What the client sent while on_upgrade waited is WebSocket now. */
    mw_conn_upgraded(c);
}

static const mw_upgrade_handler_t upgrade_handler = {.decided = decided};

static void upgrade(mw_conn_t *c)
{
    mw_node_t *node = c->conns->node;
    mw_upgrade_t up;
    const char *why;
    int status;

    status = mw_http_check_upgrade(c->http, &up, &why);
    if (status != 0) {
        count(c, status == 405 ? MW_HS_method : status == 426 ? MW_HS_version : MW_HS_bad_request);
        mw_conn_refuse(c, status, why,
                            status == 426   ? "Sec-WebSocket-Version: 13\r\n"
                            : status == 405 ? "Allow: GET\r\n"
                                            : NULL);
        return;
    }
    if (!origin_allowed(c)) {
        count(c, MW_HS_origin);
        mw_conn_refuse(c, 403, "origin not allowed", NULL);
        return;
    }
    if (refused_full(c))
        return;
    status = mw_lua_upgrade(node->lua, c, &upgrade_handler);
    if (status == MW_EAGAIN) {
        /* on_upgrade waits: the request is answered when it returns, within
         * handshake_timeout from now (then 408). Bytes the client sends
         * meanwhile are kept, and reading stops (conn.c's stash). */
        mw_conn_set_tlist(c, MW_TL_HANDSHAKE);
    } else if (status != 0) {
        count(c, MW_HS_error);
        mw_conn_refuse(c, 500, "the application failed", NULL);
    }
}

void mw_handshake_request(mw_conn_t *c)
{
    size_t len;
    const char *path = mw_http_path(c->http, &len);
    const mw_config_t *cfg = c->conns->cfg;
    const mw_acl_t *trusted = c->conns->node->trusted_proxies;

    c->conns->metrics->http_requests++;
    if (trusted->n > 0 || memcmp(&c->addr, &c->hs->peer, sizeof(c->addr)) != 0) {
        /* Behind a trusted proxy: the client it names, for this request. */
        mw_addr_t client;
        mw_forwarded_client(trusted, c->http, &c->hs->peer, &client);
        mw_conn_set_client(c, &client);
    }
    if ((cfg->healthz && path_is(path, len, "/healthz")) ||
        (cfg->metrics && path_is(path, len, "/metrics"))) {
        builtin(c, path, len);
        return;
    }
    if (mw_api_request(c, path, len))
        return;
    if (c->api_only) { /* an api.listen listener serves nothing else */
        count(c, MW_HS_not_found);
        mw_conn_refuse(c, 404, "no such path (this address serves the API only)", NULL);
        return;
    }
    if (c->http->body_too_big) {
        count(c, MW_HS_bad_request);
        mw_conn_refuse(c, 413, "request body too large (api.max_body)", NULL);
        return;
    }
    if (!mw_http_wants_upgrade(c->http)) {
        /* A file when there is one; else the app's own endpoints
         * (on_request); else static.c refuses (404, or 405 for a method
         * other than GET and HEAD). */
        if (cfg->static_root != NULL && mw_static_serve(c, mw_hook_request_defined(c)))
            return;
        if (mw_hook_request(c))
            return;
    }
    if (mw_handshake_path_matches((const char *const *)cfg->ws_paths.items, cfg->ws_paths.n,
                                  path, len)) {
        upgrade(c);
        return;
    }
    count(c, MW_HS_not_found);
    mw_conn_refuse(c, 404, "no such path", NULL);
}
