/* HTTP request heads, the WebSocket opening-handshake checks, and replies.
 *
 * http-parser does the tokenising; this file keeps the head bytes so the
 * parser callbacks can record offsets instead of copying, and turns what it
 * finds into the status codes RFC 6455 asks for.
 */
#include "http.h"
#include "moonwire/error.h"

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

static int on_url(http_parser *p, const char *at, size_t len)
{
    mw_http_req_t *req = p->data;
    uint32_t off = (uint32_t)(at - req->buf);
    if (req->url_len == 0)
        req->url_off = off;
    req->url_len = off + (uint32_t)len - req->url_off;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    mw_http_req_t *req = p->data;
    uint32_t off = (uint32_t)(at - req->buf);
    mw_http_header_t *h;

    /* Trailers of a chunked body: not the head's, and possibly read from the
     * peer's buffer rather than ours (feed_body), where offsets mean nothing. */
    if (req->head_done)
        return 0;

    if (req->nheaders == 0 || req->in_value) {
        if (req->nheaders == MW_HTTP_MAX_HEADERS) {
            req->too_many = 1;
            return 1;
        }
        h = &req->headers[req->nheaders++];
        h->name_off = off;
        h->name_len = 0;
        h->value_off = h->value_len = 0;
        req->in_value = 0;
    }
    h = &req->headers[req->nheaders - 1];
    /* A field split across reads continues where the last piece ended. */
    h->name_len = off + (uint32_t)len - h->name_off;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    mw_http_req_t *req = p->data;
    uint32_t off = (uint32_t)(at - req->buf);
    mw_http_header_t *h = &req->headers[req->nheaders - 1];

    if (req->head_done)
        return 0; /* a trailer's (on_header_field) */

    if (!req->in_value) {
        h->value_off = off;
        req->in_value = 1;
    }
    h->value_len = off + (uint32_t)len - h->value_off;
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    mw_http_req_t *req = p->data;
    req->has_body = (p->flags & F_CHUNKED) || (p->content_length > 0 &&
                                               p->content_length != (uint64_t)-1);
    req->head_done = 1;
    if (req->max_body > 0 && !(p->flags & F_CHUNKED) && p->content_length != (uint64_t)-1 &&
        p->content_length > req->max_body) {
        /* Refused before a byte of it is read. */
        req->body_too_big = 1;
        http_parser_pause(p, 1);
    }
    return 0;
}

/* Body bytes, from the head's buffer or straight from the peer's: copied
 * out, chunk framing gone, up to max_body. */
static int on_body(http_parser *p, const char *at, size_t len)
{
    mw_http_req_t *req = p->data;

    if (req->max_body == 0)
        return 0; /* nobody reads it */
    if (len > req->max_body - req->body_len) {
        req->body_too_big = 1;
        http_parser_pause(p, 1);
        return 0;
    }
    if (req->body_len + len > req->body_cap) {
        size_t cap = req->body_cap ? req->body_cap : 1024;
        char *b;
        while (cap < req->body_len + len)
            cap *= 2;
        if (cap > req->max_body)
            cap = req->max_body;
        b = realloc(req->body, cap);
        if (b == NULL)
            return 1; /* an error: the caller answers 400, and the memory goes with req */
        req->body = b;
        req->body_cap = cap;
    }
    memcpy(req->body + req->body_len, at, len);
    req->body_len += len;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    mw_http_req_t *req = p->data;
    req->complete = 1;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

int mw_http_req_init(mw_http_req_t *req, size_t max_head)
{
    static size_t parser_limit;
    /* http-parser has a process-wide limit of its own (80 KiB by default);
     * keep it at ours so only max_head decides. */
    if (parser_limit != max_head && max_head <= UINT32_MAX) {
        http_parser_set_max_header_size((uint32_t)max_head);
        parser_limit = max_head;
    }
    memset(req, 0, sizeof(*req));
    http_parser_init(&req->parser, HTTP_REQUEST);
    req->parser.data = req;
    req->max_head = max_head;
    req->query_off = -1;
    return 0;
}

/* The first buffer a head gets (mw_http_feed doubles it as the head grows). */
#define HEAD_BUF_FIRST 1024

static mw_http_req_t *pool[MW_HTTP_POOL_MAX]; /* each with a buffer of HEAD_BUF_FIRST, or none */
static size_t pooled;

mw_http_req_t *mw_http_req_new(size_t max_head)
{
    mw_http_req_t *req;
    char *buf = NULL;
    size_t cap = 0;

    if (pooled > 0) {
        req = pool[--pooled];
        buf = req->buf;
        cap = req->cap;
    } else if ((req = malloc(sizeof(*req))) == NULL) {
        return NULL;
    }
    mw_http_req_init(req, max_head);
    if (cap > max_head) { /* max_head went down at a reload */
        free(buf);
        buf = NULL;
        cap = 0;
    }
    req->buf = buf;
    req->cap = cap;
    return req;
}

void mw_http_req_free(mw_http_req_t *req)
{
    if (req == NULL)
        return;
    if (pooled == MW_HTTP_POOL_MAX) {
        mw_http_req_close(req);
        free(req);
        return;
    }
    if (req->cap != HEAD_BUF_FIRST) { /* grown for a large head: not kept */
        free(req->buf);
        req->buf = NULL;
        req->cap = 0;
    }
    free(req->body);
    req->body = NULL;
    pool[pooled++] = req;
}

void mw_http_pool_drain(void)
{
    while (pooled > 0) {
        mw_http_req_t *req = pool[--pooled];
        free(req->buf);
        free(req);
    }
}

void mw_http_req_close(mw_http_req_t *req)
{
    free(req->buf);
    req->buf = NULL;
    req->len = req->cap = 0;
    free(req->body);
    req->body = NULL;
    req->body_len = req->body_cap = 0;
}

/* Finds the path and query of the request target, in origin form
 * ("/path?query") or absolute form ("http://host/path?query"). Returns 0,
 * or -1 for the other forms ("*", authority), which are not for us. */
static int split_url(mw_http_req_t *req)
{
    struct http_parser_url u;
    const char *url = req->buf + req->url_off;
    uint32_t len = req->url_len;
    const char *h, *q;

    /* A fragment never reaches a server; drop one if a client sent it. */
    h = memchr(url, '#', len);
    if (h != NULL)
        len = (uint32_t)(h - url);
    if (len == 0)
        return -1;
    if (url[0] == '/') {
        q = memchr(url, '?', len);
        req->path_off = req->url_off;
        req->path_len = q ? (uint32_t)(q - url) : len;
        if (q != NULL) {
            req->query_off = (int32_t)(req->url_off + req->path_len + 1);
            req->query_len = len - req->path_len - 1;
        }
        return 0;
    }
    http_parser_url_init(&u);
    if (http_parser_parse_url(url, len, 0, &u) != 0 || !(u.field_set & (1 << UF_HOST)))
        return -1;
    if (u.field_set & (1 << UF_PATH)) {
        req->path_off = req->url_off + u.field_data[UF_PATH].off;
        req->path_len = u.field_data[UF_PATH].len;
    } /* else path_len stays 0: the path is "/" (RFC 3986 6.2.3) */
    if (u.field_set & (1 << UF_QUERY)) {
        req->query_off = (int32_t)(req->url_off + u.field_data[UF_QUERY].off);
        req->query_len = u.field_data[UF_QUERY].len;
    }
    return 0;
}

/* The request is complete: the URL is split, and consumed says how many of
 * the bytes given belonged to it. */
static int completed(mw_http_req_t *req, size_t consumed_now, size_t *consumed)
{
    req->complete = 1;
    if (split_url(req) != 0)
        return MW_EPROTO;
    *consumed = consumed_now;
    return 0;
}

/* Bytes of a body: straight to the parser (on_body copies what it keeps),
 * never into the head's buffer, so a body is bounded by max_body alone. */
static int feed_body(mw_http_req_t *req, const char *data, size_t len, size_t before,
                     size_t *consumed)
{
    size_t parsed;
    enum http_errno e;

    if (len == 0) { /* http-parser would take it for the end of the stream */
        *consumed = before;
        return MW_EAGAIN;
    }
    parsed = http_parser_execute(&req->parser, &settings, data, len);
    e = HTTP_PARSER_ERRNO(&req->parser);

    if (req->body_too_big) /* answered (413) on the head alone; the rest is not read */
        return completed(req, before + len, consumed);
    if (req->complete)
        return completed(req, before + parsed, consumed);
    if (e != HPE_OK && e != HPE_PAUSED)
        return MW_EPROTO;
    *consumed = before + len;
    return MW_EAGAIN;
}

int mw_http_feed(mw_http_req_t *req, const char *data, size_t len, size_t *consumed)
{
    size_t room, take, parsed;
    enum http_errno e;

    *consumed = 0;
    if (req->head_done && req->max_body > 0)
        return feed_body(req, data, len, 0, consumed);
    room = req->max_head - req->len;
    take = len < room ? len : room;
    if (req->len + take > req->cap) {
        size_t cap = req->cap ? req->cap : HEAD_BUF_FIRST;
        char *buf;
        while (cap < req->len + take)
            cap *= 2;
        if (cap > req->max_head)
            cap = req->max_head;
        /* The parser's offsets survive a move, its pointers do not: none are kept. */
        buf = realloc(req->buf, cap);
        if (buf == NULL)
            return MW_ENOMEM;
        req->buf = buf;
        req->cap = cap;
    }
    memcpy(req->buf + req->len, data, take);
    parsed = http_parser_execute(&req->parser, &settings, req->buf + req->len, take);
    e = HTTP_PARSER_ERRNO(&req->parser);
    if (req->too_many)
        return MW_ETOOBIG;
    if (req->body_too_big) {
        req->len += take;
        return completed(req, len, consumed);
    }
    if (req->complete || (req->parser.upgrade && e == HPE_OK)) {
        req->len += parsed;
        return completed(req, parsed, consumed);
    }
    if (e == HPE_HEADER_OVERFLOW)
        return MW_ETOOBIG;
    if (e != HPE_OK && e != HPE_PAUSED)
        return MW_EPROTO;
    req->len += take;
    if (req->head_done && req->max_body > 0) {
        /* The rest of the body does not go through the head's buffer. */
        if (take < len)
            return feed_body(req, data + take, len - take, take, consumed);
        *consumed = take;
        return MW_EAGAIN;
    }
    *consumed = take;
    if (take < len || req->len == req->max_head)
        return MW_ETOOBIG;
    return MW_EAGAIN;
}

static int name_is(const mw_http_req_t *req, const mw_http_header_t *h, const char *name)
{
    size_t n = strlen(name);
    return h->name_len == n && strncasecmp(req->buf + h->name_off, name, n) == 0;
}

const char *mw_http_trim(const char *s, size_t *len)
{
    while (*len > 0 && (*s == ' ' || *s == '\t')) {
        s++;
        (*len)--;
    }
    while (*len > 0 && (s[*len - 1] == ' ' || s[*len - 1] == '\t'))
        (*len)--;
    return s;
}

const char *mw_http_header(const mw_http_req_t *req, const char *name, int n, size_t *len)
{
    for (uint32_t i = 0; i < req->nheaders; i++) {
        const mw_http_header_t *h = &req->headers[i];
        if (name_is(req, h, name) && n-- == 0) {
            *len = h->value_len;
            return mw_http_trim(req->buf + h->value_off, len);
        }
    }
    return NULL;
}

int mw_http_header_has_token(const mw_http_req_t *req, const char *name, const char *token)
{
    size_t tlen = strlen(token), len;
    const char *v;

    for (int n = 0; (v = mw_http_header(req, name, n, &len)) != NULL; n++) {
        while (len > 0) {
            const char *comma = memchr(v, ',', len);
            size_t item_len = comma ? (size_t)(comma - v) : len;
            size_t ilen = item_len;
            const char *item = mw_http_trim(v, &ilen);
            if (ilen == tlen && strncasecmp(item, token, tlen) == 0)
                return 1;
            if (comma == NULL)
                break;
            len -= item_len + 1;
            v = comma + 1;
        }
    }
    return 0;
}

size_t mw_http_header_join(const mw_http_req_t *req, const char *name, char *out, size_t cap)
{
    size_t used = 0, len;
    const char *v;

    if (cap == 0)
        return 0;
    for (int n = 0; (v = mw_http_header(req, name, n, &len)) != NULL; n++) {
        if (n > 0 && used + 2 < cap) {
            memcpy(out + used, ", ", 2);
            used += 2;
        }
        if (used + len >= cap)
            len = cap - used - 1;
        memcpy(out + used, v, len);
        used += len;
    }
    out[used] = '\0';
    return used;
}

const char *mw_http_query(const mw_http_req_t *req, size_t *len)
{
    if (req->query_off < 0)
        return NULL;
    *len = req->query_len;
    return req->buf + req->query_off;
}

int mw_http_wants_upgrade(const mw_http_req_t *req)
{
    return mw_http_header_has_token(req, "Upgrade", "websocket");
}

/* True for the 24-character base64 form of exactly 16 bytes. */
static int valid_key(const char *key, size_t len)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (len != 24 || key[22] != '=' || key[23] != '=')
        return 0;
    for (int i = 0; i < 22; i++)
        if (key[i] == '\0' || strchr(alphabet, key[i]) == NULL)
            return 0;
    /* The last character carries 2 bits of data; the 4 low bits must be zero. */
    return ((strchr(alphabet, key[21]) - alphabet) & 0x0f) == 0;
}

int mw_http_check_upgrade(const mw_http_req_t *req, mw_upgrade_t *up, const char **why)
{
    const char *key, *version;
    size_t klen, vlen;

    if (req->parser.method != HTTP_GET) {
        *why = "WebSocket upgrades must use GET";
        return 405;
    }
    if (req->parser.http_major != 1 || req->parser.http_minor < 1) {
        *why = "WebSocket upgrades need HTTP/1.1";
        return 400;
    }
    if (!mw_http_header_has_token(req, "Upgrade", "websocket")) {
        *why = "missing or invalid Upgrade header (expected websocket)";
        return 400;
    }
    if (!mw_http_header_has_token(req, "Connection", "upgrade")) {
        *why = "missing or invalid Connection header (expected upgrade)";
        return 400;
    }
    if (req->has_body) {
        *why = "a WebSocket upgrade has no body";
        return 400;
    }
    key = mw_http_header(req, "Sec-WebSocket-Key", 0, &klen);
    if (key == NULL || !valid_key(key, klen) ||
        mw_http_header(req, "Sec-WebSocket-Key", 1, &klen) != NULL) {
        *why = "missing or invalid Sec-WebSocket-Key (must be 16 bytes in base64)";
        return 400;
    }
    version = mw_http_header(req, "Sec-WebSocket-Version", 0, &vlen);
    if (version == NULL || vlen != 2 || memcmp(version, "13", 2) != 0 ||
        mw_http_header(req, "Sec-WebSocket-Version", 1, &vlen) != NULL) {
        *why = "unsupported Sec-WebSocket-Version (this server speaks 13)";
        return 426;
    }
    up->key = key;
    return 0;
}

void mw_http_accept_key(const char *key, char out[29])
{
    unsigned char in[24 + sizeof(WS_GUID) - 1];
    unsigned char digest[SHA_DIGEST_LENGTH];

    memcpy(in, key, 24);
    memcpy(in + 24, WS_GUID, sizeof(WS_GUID) - 1);
    SHA1(in, sizeof(in), digest);
    EVP_EncodeBlock((unsigned char *)out, digest, SHA_DIGEST_LENGTH);
}

const char *mw_http_status_text(int status)
{
    switch (status) {
    case 101:
        return "Switching Protocols";
    case 408:
        return "Request Timeout";
    case 426:
        return "Upgrade Required";
    case 431:
        return "Request Header Fields Too Large";
    default:
        return http_status_str((enum http_status)status);
    }
}

mw_frame_t *mw_http_reply(int status, const char *content_type, const char *extra_headers,
                          const char *body, size_t body_len)
{
    return mw_http_reply_ex(status, content_type, extra_headers, NULL, body, body_len, 0);
}

mw_frame_t *mw_http_reply_ex(int status, const char *content_type, const char *extra_headers,
                             const char *connection, const char *body, size_t body_len, int head)
{
    char head_buf[1024];
    size_t send = head ? 0 : body_len;
    int n;
    mw_frame_t *f;

    n = snprintf(head_buf, sizeof(head_buf),
                 "HTTP/1.1 %d %s\r\n"
                 "Content-Type: %s\r\n"
                 "Content-Length: %zu\r\n"
                 "%s"
                 "%s\r\n",
                 status, mw_http_status_text(status),
                 content_type ? content_type : "text/plain; charset=utf-8", body_len,
                 connection ? connection : "Connection: close\r\n",
                 extra_headers ? extra_headers : "");
    if (n < 0 || (size_t)n >= sizeof(head_buf))
        return NULL;
    f = mw_frame_new_raw(NULL, (size_t)n + send);
    if (f == NULL)
        return NULL;
    memcpy(f->bytes, head_buf, (size_t)n);
    if (send > 0)
        memcpy(f->bytes + n, body, send);
    return f;
}

mw_frame_t *mw_http_switching(const char *key, const char *protocol, const char *extra_headers)
{
    char head[1024], accept[29];
    int n;

    mw_http_accept_key(key, accept);
    n = snprintf(head, sizeof(head),
                 "HTTP/1.1 101 Switching Protocols\r\n"
                 "Upgrade: websocket\r\n"
                 "Connection: Upgrade\r\n"
                 "Sec-WebSocket-Accept: %s\r\n"
                 "%s%s%s"
                 "%s\r\n",
                 accept, protocol ? "Sec-WebSocket-Protocol: " : "", protocol ? protocol : "",
                 protocol ? "\r\n" : "", extra_headers ? extra_headers : "");
    if (n < 0 || (size_t)n >= sizeof(head))
        return NULL;
    return mw_frame_new_raw(head, (size_t)n);
}

int mw_http_hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

size_t mw_http_unescape(const char *s, size_t len, char *out, int plus)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%' && i + 2 < len && mw_http_hexval(s[i + 1]) >= 0 && mw_http_hexval(s[i + 2]) >= 0) {
            out[o++] = (char)(mw_http_hexval(s[i + 1]) * 16 + mw_http_hexval(s[i + 2]));
            i += 2;
        } else if (plus && s[i] == '+') {
            out[o++] = ' ';
        } else {
            out[o++] = s[i];
        }
    }
    return o;
}
