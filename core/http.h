/* HTTP/1.1 request heads (http-parser), the WebSocket upgrade checks of
 * RFC 6455 section 4.2.1, and plain HTTP replies.
 *
 * A request head is collected in a buffer of its own, bounded by the
 * configured max_head_size, so header names and values are (offset, length)
 * pairs into that buffer however the bytes arrived.
 */
#ifndef MOONWIRE_HTTP_H
#define MOONWIRE_HTTP_H

#include "frame.h"

#include <http_parser.h>
#include <stddef.h>
#include <stdint.h>

#define MW_HTTP_MAX_HEADERS 64

typedef struct {
    uint32_t name_off, name_len;
    uint32_t value_off, value_len;
} mw_http_header_t;

typedef struct mw_http_req_s {
    http_parser parser;
    char *buf; /* the raw head; grows up to max_head */
    size_t len;
    size_t cap;
    size_t max_head;
    uint32_t url_off, url_len; /* the request target as sent */
    uint32_t path_off, path_len; /* path_len 0: the path is "/" (absolute form without one) */
    int32_t query_off;           /* -1: no query */
    uint32_t query_len;
    mw_http_header_t headers[MW_HTTP_MAX_HEADERS];
    uint32_t nheaders;
    uint8_t in_value;   /* the last callback was a header value */
    uint8_t complete;   /* the head (and any body) has been parsed */
    uint8_t too_many;   /* more than MW_HTTP_MAX_HEADERS headers */
    uint8_t has_body;
    uint8_t head_done;      /* the head is parsed: what follows is body */
    uint8_t body_too_big;   /* the body is larger than max_body: the request is complete
                             * without it, to be answered 413 and the connection closed */
    uint8_t expect_continue; /* the client waits for 100 Continue before its body */
    size_t max_body;        /* bytes of body kept; a larger body is refused */
    char *body;             /* the body, decoded from chunks, or NULL when empty */
    size_t body_len, body_cap;
} mw_http_req_t;

/* What the upgrade checks found in a valid WebSocket request. */
typedef struct {
    const char *key; /* Sec-WebSocket-Key, 24 characters, inside req->buf */
} mw_upgrade_t;

/* Prepares req to read a request head of at most max_head bytes, and a body
 * of at most max_body bytes (0: a body goes unread into the head's buffer,
 * within max_head). Returns 0. */
int mw_http_req_init(mw_http_req_t *req, size_t max_head);
static inline void mw_http_req_set_max_body(mw_http_req_t *req, size_t max_body)
{
    req->max_body = max_body;
}

void mw_http_req_close(mw_http_req_t *req);

/* A request read on a connection: mw_http_req_init'ed, its memory (the
 * struct and the head's first buffer) from the requests freed before. A
 * handshake's memory lives a few milliseconds, the connection's for hours:
 * taken from fresh heap each time, it would leave holes of its size among
 * the connections (about 120 bytes per idle connection in RSS). Returns NULL
 * when out of memory. */
mw_http_req_t *mw_http_req_new(size_t max_head);

/* Closes req (NULL: nothing) and keeps its memory for the next one, up to
 * MW_HTTP_POOL_MAX requests (the rest are freed). */
void mw_http_req_free(mw_http_req_t *req);

#define MW_HTTP_POOL_MAX 64

/* Frees the kept requests (at exit). */
void mw_http_pool_drain(void);

/* Feeds bytes read from the peer. Returns:
 *  0            the request is complete; *consumed bytes of data belong to it and
 *               the rest (for an upgrade, the first WebSocket bytes) does not;
 *  MW_EAGAIN    more bytes are needed (all of data was consumed);
 *  MW_ETOOBIG   the head is larger than max_head or has too many headers (431);
 *  MW_EPROTO    the bytes are not an HTTP/1.x request (400);
 *  MW_ENOMEM. */
int mw_http_feed(mw_http_req_t *req, const char *data, size_t len, size_t *consumed);

/* Finds the n-th (from 0) header called name, case-insensitively. Returns its
 * value and sets *len, or returns NULL. The value is not NUL-terminated. */
const char *mw_http_header(const mw_http_req_t *req, const char *name, int n, size_t *len);

/* True when a header called name holds token in its comma-separated list
 * (case-insensitive), in any of its occurrences. */
int mw_http_header_has_token(const mw_http_req_t *req, const char *name, const char *token);

/* Copies the header's occurrences joined by ", " into out. Returns the length, 0 if absent. */
size_t mw_http_header_join(const mw_http_req_t *req, const char *name, char *out, size_t cap);

static inline const char *mw_http_path(const mw_http_req_t *req, size_t *len)
{
    if (req->path_len == 0) {
        *len = 1;
        return "/";
    }
    *len = req->path_len;
    return req->buf + req->path_off;
}

/* The raw query string after '?', or NULL when there is none. */
const char *mw_http_query(const mw_http_req_t *req, size_t *len);

/* True when the request asks for a WebSocket upgrade (websocket in its
 * Upgrade header). Other upgrades (h2c) may be ignored, as RFC 9110 allows. */
int mw_http_wants_upgrade(const mw_http_req_t *req);

/* Runs the RFC 6455 opening-handshake checks except Origin and routing.
 * Returns 0 and fills *up, or the HTTP status to refuse with (405, 400, 426)
 * and a static reason in *why. */
int mw_http_check_upgrade(const mw_http_req_t *req, mw_upgrade_t *up, const char **why);

/* Computes Sec-WebSocket-Accept for a 24-character key into out (29 bytes with NUL). */
void mw_http_accept_key(const char *key, char out[29]);

/* Builds a complete reply: status line, Content-Type (NULL: text/plain),
 * Content-Length, Connection: close, the extra header lines (each ending in
 * \r\n, may be NULL) and the body. Returns a raw frame (refcnt 1), or NULL. */
mw_frame_t *mw_http_reply(int status, const char *content_type, const char *extra_headers,
                          const char *body, size_t body_len);

/* Like mw_http_reply, with the Connection line given (NULL: "Connection:
 * close\r\n"; "" for none) and, for a HEAD request (head set), the head that
 * a GET would get (its Content-Length too) without the body. */
mw_frame_t *mw_http_reply_ex(int status, const char *content_type, const char *extra_headers,
                             const char *connection, const char *body, size_t body_len, int head);

/* Builds the 101 reply for a key, with an optional chosen subprotocol (NULL: none)
 * and extra header lines. Returns a raw frame (refcnt 1), or NULL. */
mw_frame_t *mw_http_switching(const char *key, const char *protocol, const char *extra_headers);

/* The reason phrase of a status ("Not Found"). */
const char *mw_http_status_text(int status);

/* The value of the hex digit c (either case), or -1. */
int mw_http_hexval(int c);

/* Skips the optional whitespace (spaces and tabs) around s[0..*len): returns
 * where the rest starts and shortens *len to it. */
const char *mw_http_trim(const char *s, size_t *len);

/* Decodes %XX escapes (and '+' as space when plus is set) of s[0..len) into out
 * (at least len bytes). Returns the decoded length. Malformed escapes stay literal. */
size_t mw_http_unescape(const char *s, size_t len, char *out, int plus);

#endif
