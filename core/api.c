/* The server HTTP API's door: which requests are the API's (/api/METHOD
 * while api.key is set), who may call it (api.allow, then the key, compared
 * in constant time), what it refuses before any method runs (405, 401, 404,
 * 413), and the JSON answer, counted by method and status. The methods run
 * in the Lua state (api_methods.c) and may wait for Redis; meanwhile the
 * connection waits for its answer, bounded by limits.close_timeout like any
 * reply (while the server drains, by limits.shutdown_timeout: server.c).
 */
#include "api.h"
#include "acl.h"
#include "api_methods.h"
#include "conn.h"
#include "node.h"
#include "moonwire/config.h"
#include "moonwire/log.h"
#include "moonwire/metrics.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A request whose method is running. */
typedef struct mw_api_req_s {
    mw_conn_t *c; /* NULL once the connection is released */
    mw_conns_t *conns; /* its books, which outlive it */
    int method;   /* MW_API_* */
} mw_api_req_t;

/* Refusals a client can repeat at will are logged through this gate. */
static mw_log_gate_t refusal_gate;

static void count(mw_conn_t *c, int method, int status)
{
    c->conns->metrics->api[method][mw_api_status_index(status)]++;
}

static void answer(mw_conn_t *c, int status, const char *json, size_t len, const char *extra)
{
    mw_conn_reply(c, mw_http_reply_ex(status, "application/json", extra,
                                      mw_conn_connection_field(c), json, len, 0));
}

/* A refusal before any method ran: counted, logged through the gate. */
static void refuse(mw_conn_t *c, int method, int status, const char *msg, const char *extra)
{
    char body[256], addr[64];
    uint64_t held;
    int n = snprintf(body, sizeof(body), "{\"error\":{\"code\":%d,\"message\":\"%s\"}}", status,
                     msg);

    count(c, method, status);
    if (mw_log_gate_pass(&refusal_gate, 1000, &held)) {
        char more[64];
        size_t plen;
        const char *path = mw_http_path(c->http, &plen);
        mw_addr_format(&c->addr, addr, sizeof(addr));
        mw_log_info("api: %d for %.*s from %s: %s%s", status, (int)(plen > 64 ? 64 : plen), path,
                    addr, msg, mw_log_held_back(held, more, sizeof(more)));
    }
    c->keep_alive = 0;
    answer(c, status, body, (size_t)n, extra);
}

/* The key the request carries: "Authorization: apikey KEY" or "X-API-Key: KEY". */
static const char *request_key(const mw_conn_t *c, size_t *len)
{
    const char *v = mw_http_header(c->http, "X-API-Key", 0, len);
    if (v != NULL)
        return v;
    v = mw_http_header(c->http, "Authorization", 0, len);
    if (v == NULL || *len < 7 || strncasecmp(v, "apikey ", 7) != 0)
        return NULL;
    v += 7;
    *len -= 7;
    return mw_http_trim(v, len);
}

/* Compares the digests, so that neither the time nor the length of the
 * comparison depends on where the keys differ or on their lengths. */
static int key_ok(const mw_conn_t *c)
{
    const char *want = c->conns->cfg->api_key;
    unsigned char a[SHA256_DIGEST_LENGTH], b[SHA256_DIGEST_LENGTH];
    size_t len;
    const char *got = request_key(c, &len);

    if (got == NULL)
        return 0;
    SHA256((const unsigned char *)got, len, a);
    SHA256((const unsigned char *)want, strlen(want), b);
    return CRYPTO_memcmp(a, b, sizeof(a)) == 0;
}

static void on_answer(void *ud, int status, const char *body, size_t len)
{
    mw_api_req_t *r = ud;
    mw_conn_t *c = r->c;

    r->conns->requests_running--;
    if (c != NULL) {
        c->hs->api_req = NULL;
        count(c, r->method, status);
        if (c->state == MW_CONN_HTTP)
            answer(c, status, body, len, NULL);
    }
    free(r);
}

int mw_api_request(mw_conn_t *c, const char *path, size_t len)
{
    mw_node_t *node = c->conns->node;
    const mw_config_t *cfg = c->conns->cfg;
    const char *name;
    size_t nlen;
    int method;
    mw_api_req_t *r;

    if (cfg->api_key == NULL || len < 5 || memcmp(path, "/api/", 5) != 0)
        return 0;
    if (cfg->api_listen.n > 0 && !c->api_only)
        return 0; /* served on its own listeners only */
    name = path + 5;
    nlen = len - 5;
    method = mw_api_method_index(name, nlen);
    if (!mw_acl_allows(node->api_acl, &c->addr)) {
        refuse(c, method, 403, "not allowed from your address (api.allow)", NULL);
        return 1;
    }
    if (c->http->parser.method != HTTP_POST) {
        refuse(c, method, 405, "the API takes POST only", "Allow: POST\r\n");
        return 1;
    }
    if (!key_ok(c)) {
        refuse(c, method, 401, "no API key, or a wrong one", "WWW-Authenticate: apikey\r\n");
        return 1;
    }
    if (c->http->body_too_big) {
        refuse(c, method, 413, "the body is over api.max_body", NULL);
        return 1;
    }
    if (method == MW_API_unknown) {
        refuse(c, method, 404, "no such method", NULL);
        return 1;
    }
    r = malloc(sizeof(*r));
    if (r == NULL) {
        refuse(c, method, 503, "out of memory", NULL);
        return 1;
    }
    r->c = c;
    r->conns = c->conns;
    r->method = method;
    c->hs->api_req = r;
    c->conns->requests_running++;
    mw_api_run(node->lua, name, nlen, c->http->body, c->http->body_len, on_answer, r);
    return 1;
}

void mw_api_forget(mw_conn_t *c)
{
    if (c->hs != NULL && c->hs->api_req != NULL) {
        c->hs->api_req->c = NULL;
        c->hs->api_req = NULL;
    }
}

void mw_api_give_up(mw_conn_t *c, int status, const char *message, const char *extra)
{
    int method;

    if (c->hs == NULL || c->hs->api_req == NULL)
        return;
    method = c->hs->api_req->method;
    mw_api_forget(c);
    refuse(c, method, status, message, extra);
}
