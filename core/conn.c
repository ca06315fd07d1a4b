/* A connection's life: reading requests, the WebSocket session, the
 * closing handshake, its timeout list, and handing back to the transport.
 * See conn.h.
 *
 * HTTP requests that are not upgraded are answered one at a time, in order
 * (keep-alive, RFC 9112 section 9.3): bytes read while a reply is being made
 * or is still large in the queue wait in c->hs->pipelined, with reading paused,
 * and are taken at the end of the turn in which the reply drained. What only
 * HTTP needs (c->hs) is freed once the upgrade is over.
 */
#include "conn.h"
#include "deflate.h"
#include "iplimit.h"
#include "timer.h"
#include "moonwire/config.h"
#include "moonwire/error.h"
#include "moonwire/log.h"
#include "moonwire/metrics.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void on_ws_message(void *ud, int opcode, const uint8_t *data, size_t len);
static void on_ws_ping(void *ud, const uint8_t *data, size_t len);
static void on_ws_pong(void *ud, const uint8_t *data, size_t len);
static void on_ws_close(void *ud, uint16_t code, const char *reason, size_t len);
static void on_ws_fail(void *ud, uint16_t code, const char *why);

static const mw_ws_handler_t ws_handler = {
    on_ws_message, on_ws_ping, on_ws_pong, on_ws_close, on_ws_fail,
};

/* The next request is taken once the previous reply has drained to this
 * (a pipelining client that does not read gets no more replies queued). */
#define HTTP_NEXT_BELOW (64 * 1024)
/* Bytes of pipelined requests kept while one is answered (reading pauses at
 * the first; a TLS record may still bring a few more). */
#define PIPELINED_MAX (256 * 1024)

static void run_close(mw_list_t *link);

/* Frees what only HTTP needed (the upgrade is over, or c is released). */
static void http_over(mw_conn_t *c)
{
    if (c->hs == NULL)
        return;
    free(c->hs->pipelined);
    free(c->hs);
    c->hs = NULL;
}
static void run_flush(mw_list_t *link);

void mw_conns_init(mw_conns_t *cs, mw_sched_t *sched)
{
    memset(cs, 0, sizeof(*cs));
    cs->sched = sched;
    sched->on_closing = run_close;
    sched->on_flush = run_flush;
    mw_list_init(&cs->tl_handshake);
    mw_list_init(&cs->tl_active);
    mw_list_init(&cs->tl_pinged);
    mw_list_init(&cs->tl_closing);
    mw_list_init(&cs->tl_keepalive);
    mw_list_init(&cs->backed_up);
}

static mw_list_t *tlist_head(mw_conns_t *cs, mw_conn_tlist_t tl)
{
    switch (tl) {
    case MW_TL_HANDSHAKE:
        return &cs->tl_handshake;
    case MW_TL_ACTIVE:
        return &cs->tl_active;
    case MW_TL_PINGED:
        return &cs->tl_pinged;
    case MW_TL_CLOSING:
        return &cs->tl_closing;
    case MW_TL_KEEPALIVE:
        return &cs->tl_keepalive;
    default:
        return NULL;
    }
}

void mw_conn_set_tlist(mw_conn_t *c, mw_conn_tlist_t tl)
{
    mw_list_t *head = tlist_head(c->conns, tl);

    if (mw_list_linked(&c->timeout_link))
        mw_list_remove(&c->timeout_link);
    c->tlist = (uint8_t)tl;
    c->tl_at = c->conns->timers->now;
    if (head != NULL)
        mw_list_insert_tail(head, &c->timeout_link);
}

/* Activity on an open connection: it goes to the back of the idle list. */
static void touch(mw_conn_t *c)
{
    if (c->tlist == MW_TL_ACTIVE || c->tlist == MW_TL_PINGED)
        mw_conn_set_tlist(c, MW_TL_ACTIVE);
}

int mw_conn_init(mw_conn_t *c, mw_conns_t *cs, const mw_transport_t *tp, const mw_addr_t *addr)
{
    memset(c, 0, sizeof(*c));
    cs->count++; /* from here on mw_conn_release() undoes everything */
    c->conns = cs;
    c->tp = tp;
    c->serial = mw_ids_next(cs->ids);
    c->state = MW_CONN_HTTP;
    c->lua_ref = LUA_NOREF;
    c->since = cs->timers->now;
    if (addr != NULL) {
        c->addr = *addr;
        c->ip_counted = mw_iplimit_add(cs->iplimit, addr) > 0;
    }
    mw_list_init(&c->timeout_link);
    mw_list_init(&c->open_link);
    mw_list_init(&c->flush_link);
    mw_list_init(&c->close_link);
    mw_list_init(&c->subs);
    mw_outq_init(&c->outq);
    mw_ws_init(&c->ws, cs->cfg->max_message_size);
    c->ws.stopped = 1; /* until the upgrade */
    mw_conn_set_tlist(c, MW_TL_HANDSHAKE);
    c->hs = calloc(1, sizeof(*c->hs));
    c->http = mw_http_req_new(cs->cfg->max_head_size);
    if (c->hs != NULL)
        c->hs->req_ref = LUA_NOREF;
    if (c->hs == NULL || c->http == NULL)
        return MW_ENOMEM;
    if (addr != NULL)
        c->hs->peer = *addr;
    mw_http_req_set_max_body(c->http, cs->cfg->api_max_body);
    cs->metrics->connections_total++;
    return 0;
}

void mw_conn_log_open(const mw_conn_t *c, const char *path, size_t path_len)
{
    char id[MW_ID_MAX], addr[64], p[256];
    const char *kv[8];

    if (!mw_log_enabled(MW_LOG_INFO))
        return;
    mw_conn_id(c, id);
    mw_conn_addr(c, addr, sizeof(addr));
    snprintf(p, sizeof(p), "%.*s", (int)path_len, path);
    kv[0] = "id", kv[1] = id, kv[2] = "addr", kv[3] = addr;
    kv[4] = "path", kv[5] = p, kv[6] = "protocol", kv[7] = c->protocol ? c->protocol : "-";
    mw_log_event(MW_LOG_INFO, "conn.open", kv, 4);
}

/* One line per closed WebSocket connection, for operators. */
static void log_close(const mw_conn_t *c, uint16_t code)
{
    char id[MW_ID_MAX], addr[64], nums[6][24];
    const char *kv[16];
    uint64_t v[6] = {c->conns->timers->now - c->since, c->msgs_in, c->msgs_out, c->bytes_in,
                     c->bytes_out, code};

    if (!mw_log_enabled(MW_LOG_INFO))
        return;
    mw_conn_id(c, id);
    mw_conn_addr(c, addr, sizeof(addr));
    for (int i = 0; i < 6; i++)
        snprintf(nums[i], sizeof(nums[i]), "%llu", (unsigned long long)v[i]);
    kv[0] = "id", kv[1] = id, kv[2] = "addr", kv[3] = addr;
    kv[4] = "duration_ms", kv[5] = nums[0], kv[6] = "msgs_in", kv[7] = nums[1];
    kv[8] = "msgs_out", kv[9] = nums[2], kv[10] = "bytes_in", kv[11] = nums[3];
    kv[12] = "bytes_out", kv[13] = nums[4], kv[14] = "code", kv[15] = nums[5];
    mw_log_event(MW_LOG_INFO, "conn.close", kv, 8);
}

/* The app-level close: record the code, leave the open set, and owe on_close. */
static void closed(mw_conn_t *c, uint16_t code, const char *reason, size_t len)
{
    mw_conns_t *cs = c->conns;

    if (c->state == MW_CONN_CLOSED)
        return;
    log_close(c, code);
    c->state = MW_CONN_CLOSED;
    c->close_code = code;
    if (c->reason_owned && reason != c->close_reason) {
        /* Our own reason gives way to what ended it (a failure, a cut). */
        free((char *)c->close_reason);
        c->reason_owned = 0;
    }
    c->close_reason = reason;
    c->close_reason_len = (uint8_t)(len > 123 ? 123 : len); /* as the close frame has it */
    if (code < 5000)
        cs->metrics->closes[code]++;
    cs->on->forget(c);
    cs->on->on_closed(c);
    mw_conn_set_tlist(c, MW_TL_CLOSING);
    mw_sched_close(cs->sched, &c->close_link);
}

/* The scheduler's close work: the end of the turn in which c closed. */
static void run_close(mw_list_t *link)
{
    mw_conn_t *c = MW_CONTAINER_OF(link, mw_conn_t, close_link);
    c->conns->on->on_close(c);
}

void mw_conn_release(mw_conn_t *c)
{
    mw_conns_t *cs = c->conns;

    if (c->freed)
        return;
    c->freed = 1;
    if (c->state == MW_CONN_OPEN || c->state == MW_CONN_CLOSING)
        closed(c, 1006, "", 0);
    if (mw_list_linked(&c->close_link)) {
        /* The transport went away before the end of the turn: settle now. */
        mw_list_remove(&c->close_link);
        cs->on->on_close(c);
    }
    cs->on->on_release(c);
    mw_conn_set_tlist(c, MW_TL_NONE);
    if (mw_list_linked(&c->flush_link))
        mw_list_remove(&c->flush_link);
    cs->on->forget(c);
    cs->queue_freed += mw_conn_buffered(c);
    if (mw_conn_body(c) != NULL)
        c->hs->body->cancel(c);
    http_over(c);
    mw_outq_clear(&c->outq);
    mw_ws_close(&c->ws);
    mw_http_req_free(c->http);
    c->http = NULL;
    free(c->protocol);
    c->protocol = NULL;
    if (c->reason_owned)
        free((char *)c->close_reason);
    c->reason_owned = 0;
    c->close_reason = NULL;
    if (c->ip_counted)
        mw_iplimit_remove(cs->iplimit, &c->addr);
    c->ip_counted = 0;
    cs->count--;
}

void mw_conn_set_client(mw_conn_t *c, const mw_addr_t *client)
{
    mw_iplimit_t *t = c->conns->iplimit;

    if (c->ip_counted)
        mw_iplimit_remove(t, &c->addr);
    c->addr = *client;
    c->ip_counted = mw_iplimit_add(t, client) > 0;
}

size_t mw_conn_id(const mw_conn_t *c, char *out)
{
    return mw_ids_format(c->conns->ids, c->serial, out);
}

void mw_conn_pause(mw_conn_t *c, unsigned reason, int on)
{
    unsigned was = c->paused;

    if (on && c->finishing)
        return;
    c->paused = (uint8_t)(on ? was | reason : was & ~reason);
    if ((was == 0) != (c->paused == 0))
        c->tp->pause(c, c->paused != 0);
}

/* mw__conn_queue, inline in mw_conn_send: once per recipient of a fan-out. */
static inline int queue(mw_conn_t *c, mw_frame_t *f)
{
    int r = mw_outq_push(&c->outq, f);
    if (r == 0)
        mw_conn_want_flush(c);
    return r;
}

int mw__conn_queue(mw_conn_t *c, mw_frame_t *f)
{
    return queue(c, f);
}

/* Closes the transport once everything queued has been written. */
static void finish(mw_conn_t *c)
{
    c->finishing = 1;
    mw_conn_want_flush(c);
}

static int queue_close_frame(mw_conn_t *c, uint16_t code, const char *reason, size_t len)
{
    mw_frame_t *f;
    int r;

    if (c->close_sent)
        return 0;
    f = mw_frame_new_close(code, reason, len);
    if (f == NULL)
        return MW_ENOMEM;
    r = mw__conn_queue(c, f);
    mw_frame_unref(f);
    c->close_sent = 1;
    return r;
}

int mw_conn_close(mw_conn_t *c, uint16_t code, const char *reason, size_t reason_len)
{
    char *copy;

    switch (c->state) {
    case MW_CONN_HTTP:
        /* A body cut short: the client sees fewer bytes than announced. */
        if (mw_conn_body(c) != NULL)
            c->hs->body->cancel(c);
        if (c->hs != NULL) {
            free(c->hs->pipelined);
            c->hs->pipelined = NULL;
            c->hs->pipelined_len = 0;
        }
        c->state = MW_CONN_CLOSED;
        mw_conn_set_tlist(c, MW_TL_CLOSING);
        finish(c);
        return 0;
    case MW_CONN_OPEN:
        queue_close_frame(c, code, reason, reason_len);
        c->close_code = code ? code : 1005;
        if (reason_len > 0 && (copy = malloc(reason_len)) != NULL) {
            memcpy(copy, reason, reason_len);
            c->close_reason = copy;
            c->close_reason_len = (uint8_t)(reason_len > 123 ? 123 : reason_len);
            c->reason_owned = 1;
        }
        c->state = MW_CONN_CLOSING;
        mw_conn_set_tlist(c, MW_TL_CLOSING);
        c->conns->on->forget(c); /* it takes no more messages */
        return 0;
    default:
        return MW_ECLOSED;
    }
}

void mw_conn_fail(mw_conn_t *c, uint16_t code, const char *why)
{
    if (c->state == MW_CONN_CLOSED)
        return;
    if (c->state == MW_CONN_HTTP) {
        mw_conn_close(c, 0, NULL, 0);
        return;
    }
    mw_log_debug("conn %llu failed: %s (%u)", (unsigned long long)c->serial, why, code);
    /* A failing hook already went to on_error; what the core saw goes there too. */
    if (code != 1011)
        c->failed = 1; /* closed() makes why the close reason */
    queue_close_frame(c, code, why, strlen(why));
    c->ws.stopped = 1;
    closed(c, code, why, strlen(why));
    finish(c);
}

void mw_conn_reply(mw_conn_t *c, mw_frame_t *reply)
{
    if (reply != NULL) {
        mw__conn_queue(c, reply);
        mw_frame_unref(reply);
    } else {
        c->keep_alive = 0;
    }
    mw_conn_reply_end(c);
}

void mw_conn_refuse(mw_conn_t *c, int status, const char *why, const char *extra_headers)
{
    char body[512];
    int n = snprintf(body, sizeof(body), "%d %s: %s\n", status, mw_http_status_text(status), why);
    if (n < 0 || (size_t)n >= sizeof(body))
        n = (int)sizeof(body) - 1;
    mw_log_debug("conn %llu refused: %d %s", (unsigned long long)c->serial, status, why);
    c->keep_alive = 0;
    mw_conn_reply(c, mw_http_reply(status, NULL, extra_headers, body, (size_t)n));
}

/* A request that could not be parsed: err is MW_ETOOBIG (431), MW_EPROTO
 * (400) or MW_ENOMEM (503). */
static void refuse_bad(mw_conn_t *c, int err)
{
    uint64_t *hs = c->conns->metrics->handshakes;

    if (err == MW_ETOOBIG) {
        hs[MW_HS_too_large]++;
        mw_conn_refuse(c, 431, "request head too large", NULL);
    } else if (err == MW_ENOMEM) {
        hs[MW_HS_error]++;
        mw_conn_refuse(c, 503, "out of memory", NULL);
    } else {
        hs[MW_HS_bad_request]++;
        mw_conn_refuse(c, 400, "malformed HTTP request", NULL);
    }
}

void mw_conn_upgrade(mw_conn_t *c, mw_frame_t *switching)
{
    mw__conn_queue(c, switching);
    mw_http_req_free(c->http);
    c->http = NULL;
    c->state = MW_CONN_OPEN;
    c->ws.stopped = 0;
    mw_conn_set_tlist(c, MW_TL_ACTIVE);
}

void mw_conn_upgraded(mw_conn_t *c)
{
    uint8_t *buf;
    size_t len;

    /* Closing too (on_open closed it): the client's answer to our close
     * frame is among what it sends, and must be read. */
    if ((c->state != MW_CONN_OPEN && c->state != MW_CONN_CLOSING) || c->hs == NULL)
        return;
    buf = c->hs->pipelined;
    len = c->hs->pipelined_len;
    c->replying = 0;
    c->hs->pipelined = NULL;
    c->hs->pipelined_len = 0;
    http_over(c);
    if (len > 0) {
        touch(c);
        if (!c->ws.stopped)
            mw_ws_feed(&c->ws, &ws_handler, c, buf, len);
    }
    free(buf);
    if (c->state == MW_CONN_OPEN || c->state == MW_CONN_CLOSING)
        mw_conn_pause(c, MW_PAUSE_HTTP, 0);
}

const char *mw_conn_connection_field(const mw_conn_t *c)
{
    if (!c->keep_alive)
        return "Connection: close\r\n";
    if (c->http != NULL && c->http->parser.http_minor == 0)
        return "Connection: keep-alive\r\n";
    return "";
}

/* Goes on to the next request once the reply is queued and has drained. */
static void next_request(mw_conn_t *c)
{
    if (!c->replying || !c->reply_queued || c->state != MW_CONN_HTTP ||
        mw_conn_buffered(c) > HTTP_NEXT_BELOW)
        return;
    c->replying = 0;
    c->reply_queued = 0;
    if (c->conns->draining) {
        mw_conn_close(c, 0, NULL, 0);
        return;
    }
    if (c->hs->pipelined_len > 0 || c->peer_eof || c->paused) {
        /* Taken at the end of the turn, with no reply's code on the stack. */
        c->resume_http = 1;
        mw_conn_want_flush(c);
        return;
    }
    mw_conn_set_tlist(c, MW_TL_KEEPALIVE);
}

void mw_conn_reply_end(mw_conn_t *c)
{
    if (c->state != MW_CONN_HTTP)
        return;
    /* After the peer's EOF the requests it sent before are still answered;
     * http_resume() closes once none is left. */
    if (!c->keep_alive || c->conns->draining) {
        mw_conn_close(c, 0, NULL, 0);
        return;
    }
    c->reply_queued = 1;
    next_request(c);
}

/* Keeps bytes that arrived while a request is answered, and stops reading. */
static void stash(mw_conn_t *c, const uint8_t *data, size_t len)
{
    uint8_t *p = NULL;

    if (c->hs->pipelined_len + len <= PIPELINED_MAX)
        p = realloc(c->hs->pipelined, c->hs->pipelined_len + len);
    if (p == NULL) {
        /* Refused cleanly: what was asked so far is answered, then the
         * connection closes and the client sends the rest again. */
        mw_log_debug("conn %llu: more than %d bytes of pipelined requests: closing after the "
                     "reply", (unsigned long long)c->serial, PIPELINED_MAX);
        if (c->reply_queued)
            mw_conn_close(c, 0, NULL, 0);
        else
            c->keep_alive = 0;
        return;
    }
    memcpy(p + c->hs->pipelined_len, data, len);
    c->hs->pipelined = p;
    c->hs->pipelined_len += len;
    mw_conn_pause(c, MW_PAUSE_HTTP, 1);
}

/* A client that sent "Expect: 100-continue" (curl does, for bodies over 1 KiB)
 * waits for this before its body: sent once, when the head is in. */
static void continue_body(mw_conn_t *c)
{
    static const char line[] = "HTTP/1.1 100 Continue\r\n\r\n";
    mw_http_req_t *req = c->http;
    size_t len;
    const char *v;
    mw_frame_t *f;

    if (!req->head_done || req->expect_continue || req->parser.http_minor == 0)
        return;
    v = mw_http_header(req, "Expect", 0, &len);
    if (v == NULL || len != 12 || strncasecmp(v, "100-continue", 12) != 0)
        return;
    req->expect_continue = 1;
    f = mw_frame_new_raw(line, sizeof(line) - 1);
    if (f != NULL) {
        mw__conn_queue(c, f);
        mw_frame_unref(f);
    }
}

/* Readies c->http for the next request on a kept-alive connection. */
static int http_next(mw_conn_t *c)
{
    mw_http_req_free(c->http);
    if ((c->http = mw_http_req_new(c->conns->cfg->max_head_size)) == NULL)
        return MW_ENOMEM;
    mw_http_req_set_max_body(c->http, c->conns->cfg->api_max_body);
    c->keep_alive = 0;
    /* handshake_timeout counts from the first byte of the request. */
    mw_conn_set_tlist(c, MW_TL_HANDSHAKE);
    return 0;
}

/* A complete request in c->http: decide whether its reply keeps the
 * connection, then answer it. */
static void answer(mw_conn_t *c)
{
    mw_conns_t *cs = c->conns;
    const mw_config_t *cfg = cs->cfg;

    c->hs->requests++;
    if (c->hs->requests > 1)
        cs->metrics->http_reused++;
    /* A body was read whole (up to api.max_body), so the connection may take
     * the next request after it. */
    c->keep_alive = cfg->keepalive_timeout > 0 && c->hs->requests < cfg->keepalive_requests &&
                    !cs->draining && (!c->http->has_body || c->http->max_body > 0) &&
                    !c->http->body_too_big &&
                    http_should_keep_alive(&c->http->parser);
    /* The reply must make progress within close_timeout (a client that
     * never reads is dropped). */
    mw_conn_set_tlist(c, MW_TL_CLOSING);
    cs->on->on_request(c);
}

/* Feeds bytes to the request parser and answers every request they
 * complete, in order, while replies finish at once; the rest waits. */
static void http_input(mw_conn_t *c, const uint8_t *data, size_t len)
{
    while (len > 0 && c->state == MW_CONN_HTTP) {
        size_t used = 0;
        int r;

        if (c->replying) {
            stash(c, data, len);
            return;
        }
        if (c->http == NULL || c->http->complete) {
            if (http_next(c) != 0) {
                mw_conn_close(c, 0, NULL, 0);
                return;
            }
        }
        r = mw_http_feed(c->http, (const char *)data, len, &used);
        if (r == MW_EAGAIN) {
            continue_body(c);
            return;
        }
        c->replying = 1;
        if (r != 0) {
            refuse_bad(c, r);
            return;
        }
        data += used;
        len -= used;
        answer(c);
        if (c->state == MW_CONN_OPEN) {
            c->replying = 0;
            /* The client did not wait for the 101: the rest is WebSocket. */
            if (len > 0) {
                touch(c);
                if (!c->ws.stopped)
                    mw_ws_feed(&c->ws, &ws_handler, c, data, len);
            }
            return;
        }
    }
}

/* At the end of the turn in which c's last reply drained: the requests that
 * were read meanwhile. */
static void http_resume(mw_conn_t *c)
{
    uint8_t *buf;
    size_t len;

    c->resume_http = 0;
    if (c->state != MW_CONN_HTTP || c->replying)
        return;
    buf = c->hs->pipelined;
    len = c->hs->pipelined_len;
    c->hs->pipelined = NULL;
    c->hs->pipelined_len = 0;
    if (len > 0)
        http_input(c, buf, len);
    else
        mw_conn_set_tlist(c, MW_TL_KEEPALIVE);
    free(buf);
    if (c->state != MW_CONN_HTTP || c->replying)
        return;
    if (c->peer_eof) {
        /* Nothing more will come: a request cut short can not complete. */
        mw_conn_close(c, 0, NULL, 0);
        return;
    }
    mw_conn_pause(c, MW_PAUSE_HTTP, 0);
}

int mw_conn_on_end(mw_conn_t *c)
{
    if (c->state != MW_CONN_HTTP)
        return c->finishing && !mw_outq_empty(&c->outq);
    if (c->replying) {
        c->peer_eof = 1;
        return 1;
    }
    if (!mw_outq_empty(&c->outq)) {
        mw_conn_close(c, 0, NULL, 0);
        return 1;
    }
    return 0;
}

void mw_conn_ping(mw_conn_t *c)
{
    mw_frame_t *f;
    if (c->state != MW_CONN_OPEN)
        return;
    f = mw_frame_new(MW_OP_PING, NULL, 0);
    if (f != NULL) {
        mw__conn_queue(c, f);
        mw_frame_unref(f);
    }
}

/* mw_conn_send past the bound or with compression: the rare paths, out of
 * the common one. */
static __attribute__((noinline)) int send_slow(mw_conn_t *c, mw_frame_t *f)
{
    mw_conns_t *cs = c->conns;
    size_t was = mw_conn_buffered(c), after = was + f->len + MW_OUTQ_FRAME_COST;
    int over = after > cs->cfg->max_buffered, r;

    /* Past the bound, the queue bounds decide; an empty queue takes any frame,
     * so one message larger than the bound still goes out. */
    if (over && was != 0 && (r = cs->on->admit(c, after)) != 0)
        return r;
    if (c->ws.pmd.enabled && f->hdr != 0 && f->rsv == 0 && (f->bytes[0] & 0x08) == 0 &&
        mw_frame_payload_len(f) >= cs->cfg->compression_threshold) {
        /* Compressed once per message and window, shared by every recipient. */
        mw_frame_t *z = mw_pmd_compress(f, c->ws.pmd.server_bits, (int)cs->cfg->compression_level);
        if (z != NULL) {
            r = mw__conn_queue(c, z);
            mw_frame_unref(z);
            goto queued;
        }
    }
    r = mw__conn_queue(c, f);
queued:
    if (r == 0) {
        c->msgs_out++;
        cs->metrics->messages_out++;
        if (over)
            cs->on->over(c);
    }
    return r;
}

int mw_conn_send(mw_conn_t *c, mw_frame_t *f)
{
    mw_conns_t *cs = c->conns;
    int r;

    if (c->state != MW_CONN_OPEN)
        return MW_ECLOSED;
    if (mw_conn_buffered(c) + f->len + MW_OUTQ_FRAME_COST > cs->cfg->max_buffered ||
        c->ws.pmd.enabled)
        return send_slow(c, f);
    if ((r = queue(c, f)) == 0) {
        c->msgs_out++;
        cs->metrics->messages_out++;
    }
    return r;
}

void mw_conn_on_read(mw_conn_t *c, const uint8_t *data, size_t len)
{
    mw_conns_t *cs = c->conns;

    c->bytes_in += len;
    cs->metrics->bytes_in += len;
    if (c->state == MW_CONN_HTTP) {
        http_input(c, data, len);
        return;
    }
    if (c->state == MW_CONN_OPEN)
        touch(c);
    if (!c->ws.stopped) {
        /* What c's messages and pings queue anywhere may hold c back. */
        mw_conn_t *was = cs->sender;
        cs->sender = c;
        mw_ws_feed(&c->ws, &ws_handler, c, data, len);
        cs->sender = was;
    }
}

void mw_conn_on_eof(mw_conn_t *c)
{
    if (c->state == MW_CONN_OPEN || c->state == MW_CONN_CLOSING)
        closed(c, c->close_received ? c->close_code : 1006, "", 0);
    c->state = MW_CONN_CLOSED;
    /* Nothing more will be read or written: no deadline is left to keep. */
    mw_conn_set_tlist(c, MW_TL_NONE);
    c->tp->abort(c);
}

void mw_conn_on_written(mw_conn_t *c, size_t n)
{
    mw_conns_t *cs = c->conns;

    mw_outq_consume(&c->outq, n);
    c->bytes_out += n;
    cs->metrics->bytes_out += n;
    /* close_timeout bounds a closing connection that makes no progress, not a
     * long reply that a slow client is still reading. */
    if (c->tlist == MW_TL_CLOSING && n > 0)
        mw_conn_set_tlist(c, MW_TL_CLOSING);
    if (c->backlog != NULL || c->dropping || (c->paused & MW_PAUSE_WRITEQ))
        cs->on->written(c);
    if (mw_conn_body(c) != NULL)
        c->hs->body->pump(c); /* may end the reply */
    else if (c->replying)
        next_request(c);
    if (mw_outq_empty(&c->outq) && c->finishing)
        c->tp->finish(c);
}

/* The scheduler's writes: c has frames to write this turn (or the next
 * request of a kept-alive connection to take). */
static void run_flush(mw_list_t *link)
{
    mw_conn_t *c = MW_CONTAINER_OF(link, mw_conn_t, flush_link);

    if (c->resume_http)
        http_resume(c);
    if (!mw_outq_empty(&c->outq))
        c->tp->flush(c);
    else if (c->finishing)
        c->tp->finish(c);
    /* A queue is judged after the turn's writes. */
    if (mw_conn_buffered(c) > c->conns->cfg->max_buffered)
        c->conns->on->flushed(c);
}

static void on_ws_message(void *ud, int opcode, const uint8_t *data, size_t len)
{
    mw_conn_t *c = ud;

    if (c->state != MW_CONN_OPEN)
        return; /* after our close frame, data is read and dropped */
    c->msgs_in++;
    c->conns->metrics->messages_in++;
    c->conns->on->on_message(c, opcode, data, len);
}

static void on_ws_ping(void *ud, const uint8_t *data, size_t len)
{
    mw_conn_t *c = ud;
    mw_frame_t *f;

    if (c->close_sent)
        return;
    f = mw_frame_new(MW_OP_PONG, data, len);
    if (f != NULL) {
        /* A client that does not read its pongs stops being read. */
        if (mw__conn_queue(c, f) == 0 && mw_conn_buffered(c) > c->conns->cfg->max_buffered)
            c->conns->on->over(c);
        mw_frame_unref(f);
    }
}

static void on_ws_pong(void *ud, const uint8_t *data, size_t len)
{
    (void)ud;
    (void)data;
    (void)len;
    /* Any byte received already counts as activity (touch). */
}

static void on_ws_close(void *ud, uint16_t code, const char *reason, size_t len)
{
    mw_conn_t *c = ud;

    c->close_received = 1;
    if (!c->close_sent) {
        /* Echo the peer's code; a close without one is answered without one. */
        queue_close_frame(c, code == 1005 ? 0 : code, NULL, 0);
        closed(c, code, reason, len);
    } else {
        /* Our close was answered: report what we sent (the peer echoes it). */
        closed(c, c->close_code, c->close_reason, c->close_reason_len);
    }
    finish(c);
}

static void on_ws_fail(void *ud, uint16_t code, const char *why)
{
    mw_conn_fail(ud, code, why);
}
