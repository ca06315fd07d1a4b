/* A client connection: its life from accept to free, whatever the transport.
 *
 *   HTTP ──(101)──> OPEN ──(close frame sent)──> CLOSING ──> CLOSED
 *    │ └──(reply, closing)──────────────────────────────────────┘
 *    └──(reply, keep-alive)──> HTTP (the next request)
 *
 * CLOSED means closed for the application: on_close has run (or is queued
 * to run at the next safe point), the Lua object is detached, and sends
 * fail with MW_ECLOSED. The transport may still be writing the last close
 * frame; memory is freed only when it reports that it is done (libuv's rule:
 * free in the close callback), so no C frame under a Lua call ever touches a
 * freed connection.
 *
 * Bytes come up from the transport (mw_conn_on_read) through the HTTP parser
 * (http.c) and, once upgraded, the WebSocket parser (ws.c, which reports
 * here through a table of handlers). A connection reports up the same way:
 * the layer that serves connections (server.c) installs a table of handlers
 * in what they share (mw_conns_t), for complete requests, messages, closes
 * and the queue bounds. conn.c calls nothing above it.
 */
#ifndef MOONWIRE_CONN_H
#define MOONWIRE_CONN_H

#include "addr.h"
#include "frame.h"
#include "http.h"
#include "id.h"
#include "list.h"
#include "outq.h"
#include "scheduler.h"
#include "transport.h"
#include "ws.h"

#include <stdint.h>

typedef struct mw_conns_s mw_conns_t;
typedef struct mw_config_s mw_config_t;
typedef struct mw_metrics_s mw_metrics_t;
typedef struct mw_timers_s mw_timers_t;
typedef struct mw_iplimit_s mw_iplimit_t;
typedef struct mw_node_s mw_node_t;

typedef enum {
    MW_CONN_HTTP = 0,
    MW_CONN_OPEN,
    MW_CONN_CLOSING,
    MW_CONN_CLOSED
} mw_conn_state_t;

/* Which timeout list a connection sits in (the lists are in mw_conns_t; the
 * server's sweep expires their heads). */
typedef enum {
    MW_TL_NONE = 0,
    MW_TL_HANDSHAKE,
    MW_TL_ACTIVE,
    MW_TL_PINGED,
    MW_TL_CLOSING,
    MW_TL_KEEPALIVE
} mw_conn_tlist_t;

/* How connections report up, to the layer that serves them: server.c fills
 * one in for its connections, as conn.c gives ws.c a handler. Each gets the
 * connection; c->conns->node reaches the rest of the node. */
typedef struct mw_conn_handlers_s {
    /* A complete request head is in c->http: answer it, with a reply
     * (mw_conn_reply, mw_conn_refuse) or an upgrade (mw_conn_upgrade). */
    void (*on_request)(mw_conn_t *c);
    /* A whole text or binary message of an open connection (data lives
     * during the call only). */
    void (*on_message)(mw_conn_t *c, int opcode, const uint8_t *data, size_t len);
    /* c has just become CLOSED for the app: it leaves the open connections. */
    void (*on_closed)(mw_conn_t *c);
    /* The end of the turn in which c closed (or its release, if sooner):
     * the app hears of it (on_close). */
    void (*on_close)(mw_conn_t *c);
    /* c is being released: whatever still refers to it lets go. */
    void (*on_release)(mw_conn_t *c);

    /* The queue bounds (backpressure.c). admit: a data frame would take c's
     * non-empty queue to `after` bytes, over max_buffered; returns 0 to
     * queue it, or MW_EBACKPRESSURE once the policy is applied. over: a frame
     * took the queue over max_buffered. written: bytes of a queue that is
     * backed up, dropping or paused were written. flushed: the queue is
     * still over max_buffered after the turn's write. forget: c takes no
     * more messages (it is closing, closed or released). */
    int (*admit)(mw_conn_t *c, size_t after);
    void (*over)(mw_conn_t *c);
    void (*written)(mw_conn_t *c);
    void (*flushed)(mw_conn_t *c);
    void (*forget)(mw_conn_t *c);
} mw_conn_handlers_t;

/* What the connections of one server share: the configuration and counters
 * they use, the clock, the scheduler, their ids, the timeout lists, and the
 * handlers of the layer above. server.c owns it and fills in the pointers. */
struct mw_conns_s {
    const mw_conn_handlers_t *on;
    mw_config_t *cfg;       /* the live configuration (a reload changes it in place) */
    mw_metrics_t *metrics;
    mw_timers_t *timers;    /* the clock: timers->now, in ms */
    mw_sched_t *sched;
    mw_ids_t *ids;
    mw_iplimit_t *iplimit;  /* connections per peer address */
    mw_node_t *node;        /* for the layers above; conn.c never looks inside */

    /* Timeout lists, each ordered by the time its members entered it. */
    mw_list_t tl_handshake; /* HTTP: handshake_timeout from accept */
    mw_list_t tl_active;    /* OPEN: idle_timeout from the last byte received */
    mw_list_t tl_pinged;    /* OPEN, pinged: ping_timeout from the ping */
    mw_list_t tl_closing;   /* CLOSING/CLOSED, or HTTP writing a reply: close_timeout
                               without progress */
    mw_list_t tl_keepalive; /* HTTP between requests: keepalive_timeout */

    mw_conn_t *sender; /* the connection whose input is being handled, or NULL */
    size_t count;      /* connections not yet released */
    int draining;      /* SIGTERM: no new requests or upgrades, the rest closing */
    uint32_t requests_running; /* API requests and on_request hooks not finished, their
                                  client there or gone (api.c, api_request.c): a drain
                                  waits for them */

    /* The books of the queue bounds (backpressure.c). */
    mw_list_t backed_up;    /* backlogs of queues over max_buffered, oldest first */
    uint32_t nbacked;       /* how many */
    size_t queue_freed;     /* queue and receive memory freed since the last malloc_trim */
    uint64_t trimmed_at;    /* when that was, ms */
};

/* A reply body that goes out as the queue drains (stream.c): its owner
 * embeds this, with its own functions, and points c->hs->body at it. */
typedef struct mw_conn_body_s {
    /* Bytes were written: queue more when the queue is low. May end the
     * reply (mw_conn_reply_end). */
    void (*pump)(mw_conn_t *c);
    /* c is closing or released: the body stops, and c->hs->body is cleared. */
    void (*cancel)(mw_conn_t *c);
} mw_conn_body_t;

/* What a connection needs only while it speaks HTTP: from accept to the end
 * of its upgrade (mw_conn_upgraded), when it is freed, or to its release. */
typedef struct mw_conn_http_s {
    uint8_t *pipelined; /* bytes read after the request being answered, or NULL */
    size_t pipelined_len;
    struct mw_api_req_s *api_req;   /* a server API request waiting for its answer (api.c),
                                       or NULL */
    struct mw_hook_req_s *hook_req; /* a request on_request answers later (api_request.c),
                                       or NULL */
    mw_conn_body_t *body;           /* the reply body still to queue (stream.c), or NULL */
    int req_ref;                    /* the request table between upgrade and open (Lua
                                       registry); LUA_NOREF otherwise */
    uint32_t requests;              /* HTTP requests read on this connection */
    mw_addr_t peer; /* the transport's peer, as accepted (c->addr may be whom it forwards for) */
} mw_conn_http_t;

struct mw_conn_s {
    mw_conns_t *conns;
    const mw_transport_t *tp;
    uint64_t serial; /* the counter part of the id; never reused */

    uint8_t state : 2;     /* mw_conn_state_t */
    uint8_t tlist : 3;     /* mw_conn_tlist_t */
    uint8_t close_sent : 1;
    uint8_t close_received : 1;
    uint8_t finishing : 1;   /* finish the transport once outq drains */
    uint8_t lua_open : 1;    /* on_open ran, so on_close is owed */
    uint8_t freed : 1;
    uint8_t ip_counted : 1;  /* counted in conns->iplimit */
    uint8_t dropping : 1;    /* backed up past backpressure_timeout under "drop": its
                                messages past the bound are dropped until it has
                                drained to half */
    uint8_t paused;          /* why reading is stopped: MW_PAUSE_* bits, 0 when reading */
    /* HTTP keep-alive: one request is answered at a time, in order. */
    uint8_t keep_alive : 1;   /* the reply being made leaves the connection open */
    uint8_t replying : 1;     /* a request is being answered; later bytes wait in pipelined */
    uint8_t reply_queued : 1; /* ... and its reply is whole in outq */
    uint8_t peer_eof : 1;     /* the peer sent all it will: answer what it asked, then close */
    uint8_t resume_http : 1;  /* take the next request at the end of the turn */
    uint8_t api_only : 1;     /* accepted on an api.listen listener: the API alone */
    uint8_t reason_owned : 1; /* close_reason is our own copy (malloc), freed at release */
    uint8_t failed : 1;       /* the core failed it: close_reason (static) says why, for
                                 on_error (mw_conn_fail_why) */
    uint8_t tp_bits;          /* the transport's own flags (tcp.c) */
    uint8_t close_reason_len; /* at most 123, a close frame's */
    uint16_t close_code;      /* what on_close reports */
    int lua_ref;  /* the conn userdata in the Lua registry; LUA_NOREF until open */
    mw_addr_t addr; /* the client: the peer, or whom a trusted proxy forwards (forwarded.h);
                     * per-IP counts, allowlists, logs and req.remote_addr use it.
                     * Here, where its 28 bytes fill what alignment would leave. */
    const char *close_reason; /* static, in ws.rx (kept once stopped), or our own copy of
                                 the reason we closed with (reason_owned) */

    mw_http_req_t *http; /* only in MW_CONN_HTTP */
    mw_conn_http_t *hs;  /* from accept to the end of the upgrade; NULL after */
    mw_ws_t ws;
    mw_outq_t outq;
    size_t wire_pending; /* bytes taken from outq, not yet on the wire (TLS ciphertext) */
    struct mw_backlog_s *backlog; /* while its queue is backed up, else NULL (backpressure.c) */
    char *protocol; /* the negotiated subprotocol, or NULL */

    mw_list_t timeout_link; /* in the conns list named by tlist */
    mw_list_t open_link;    /* in the registry's list of open connections */
    mw_list_t flush_link;   /* in the scheduler's writes while it has frames to write */
    mw_list_t close_link;   /* in the scheduler's close work until on_close has run */
    mw_list_t subs;         /* its topic subscriptions */
    uint32_t nsubs;         /* entries in subs (limits.max_subscriptions) */
    uint32_t held_back;     /* backed-up queues its messages went to that hold it back */

    struct mw_lua_waits_s *lua_waits; /* its hooks waiting on Redis, or NULL; see lua_task.c
                                         (it also holds the messages that arrive meanwhile) */

    uint64_t since;   /* accept time, ms */
    uint64_t tl_at;   /* when it entered its timeout list, ms */
    uint64_t msgs_in, msgs_out, bytes_in, bytes_out;
};

/* Why reading from a connection is stopped. Each reason is set and cleared
 * by the part that owns it; reading resumes when none is left. */
enum {
    MW_PAUSE_WRITEQ = 1, /* its own write queue is over limits.max_buffered */
    MW_PAUSE_HELD = 2,   /* its messages held behind a waiting hook are (lua_task.c) */
    MW_PAUSE_FLOW = 4,   /* queues its messages went to are backed up (backpressure.c) */
    MW_PAUSE_HTTP = 8,   /* a request is being answered: later ones wait in c->pipelined */
};

/* Sets (on) or clears a reason to stop reading c. The transport stops at the
 * first reason and resumes when the last one is cleared. A connection that
 * is finishing keeps reading, to see the peer's FIN: it takes no new reason. */
void mw_conn_pause(mw_conn_t *c, unsigned reason, int on);

/* Sets up what connections share, empty, and gives sched what to do with
 * their links. The caller then fills in the pointers of cs. */
void mw_conns_init(mw_conns_t *cs, mw_sched_t *sched);

/* Sets up a connection just accepted by a transport (addr may be NULL).
 * Returns 0 or MW_ENOMEM; either way mw_conn_release() undoes it. */
int mw_conn_init(mw_conn_t *c, mw_conns_t *cs, const mw_transport_t *tp, const mw_addr_t *addr);

/* Releases what the core holds for c; the transport frees c's memory after.
 * Runs on_close first if it is still owed. */
void mw_conn_release(mw_conn_t *c);

/* The transport read bytes. */
void mw_conn_on_read(mw_conn_t *c, const uint8_t *data, size_t len);

/* The peer closed its side (eof), or the transport failed (error). */
void mw_conn_on_eof(mw_conn_t *c);

/* The transport wrote n bytes from the head of c->outq. */
void mw_conn_on_written(mw_conn_t *c, size_t n);

/* Queues a WebSocket data frame to c, applying the backpressure policy.
 * Returns 0, MW_ECLOSED, MW_EBACKPRESSURE (frame dropped, or c closed with
 * 1008, by policy) or MW_ENOMEM. The caller keeps its reference. */
int mw_conn_send(mw_conn_t *c, mw_frame_t *f);

/* Starts the closing handshake (OPEN), or drops the connection (HTTP).
 * code 0 sends a close frame without status. Returns 0 or MW_ECLOSED. */
int mw_conn_close(mw_conn_t *c, uint16_t code, const char *reason, size_t reason_len);

/* Fails the connection: sends a close frame with code, does not wait for the
 * peer's, and closes. why is static (logged and reported to on_close). */
void mw_conn_fail(mw_conn_t *c, uint16_t code, const char *why);

/* Sends the whole HTTP reply to c's request (HTTP state only), then
 * mw_conn_reply_end(). Takes over the caller's reference to reply; NULL
 * (building it failed) closes the connection without a reply. */
void mw_conn_reply(mw_conn_t *c, mw_frame_t *reply);

/* Refuses c's request with status and a one-line reason (the body), then
 * closes. extra_headers (may be NULL) are whole header lines. */
void mw_conn_refuse(mw_conn_t *c, int status, const char *why, const char *extra_headers);

/* Switches c to WebSocket: queues the 101 reply (the caller keeps its
 * reference), leaves HTTP, starts reading frames and moves c to the idle
 * timeout list. */
void mw_conn_upgrade(mw_conn_t *c, mw_frame_t *switching);

/* After mw_conn_upgrade and on_open: the bytes the client sent while the
 * request was being answered (an on_upgrade that waited) go to the WebSocket
 * side, and reading resumes. Does nothing unless c is open, or closing (its
 * on_open closed it: the client's answer is to be read). */
void mw_conn_upgraded(mw_conn_t *c);

/* The reply to c's request is all queued (a streamed body calls this after
 * its last chunk): as c->keep_alive says, the connection takes its next
 * request once the reply has drained to the client (pipelined ones in
 * order), or closes after the reply. */
void mw_conn_reply_end(mw_conn_t *c);

/* The Connection header line of the reply to c's request, as c->keep_alive
 * says: "Connection: close\r\n", "Connection: keep-alive\r\n" (an HTTP/1.0
 * request kept alive) or "" (HTTP/1.1 kept alive). Never NULL. */
const char *mw_conn_connection_field(const mw_conn_t *c);

/* The peer shut its sending side down (a clean EOF). Returns 1 when c still
 * has replies to make or write: the transport keeps the socket, and finish()
 * comes after them. Returns 0 when nothing is owed: the transport then calls
 * mw_conn_on_eof(). */
int mw_conn_on_end(mw_conn_t *c);

/* Moves c into a timeout list (MW_TL_NONE: out of all), stamped now. */
void mw_conn_set_tlist(mw_conn_t *c, mw_conn_tlist_t tl);

/* Sends a ping (for idle detection). */
void mw_conn_ping(mw_conn_t *c);

/* Writes the id of c ("mw.x1.42", see id.h) into out (MW_ID_MAX bytes).
 * Returns its length. */
size_t mw_conn_id(const mw_conn_t *c, char *out);

/* The reply body still to queue (stream.c), or NULL (always, once c is no
 * longer HTTP). */
static inline mw_conn_body_t *mw_conn_body(const mw_conn_t *c)
{
    return c->hs != NULL ? c->hs->body : NULL;
}

/* Why the core failed c (static; logged and given to on_error), or NULL when
 * it did not. */
static inline const char *mw_conn_fail_why(const mw_conn_t *c)
{
    return c->failed ? c->close_reason : NULL;
}

/* Formats the client address ("127.0.0.1", "::1") into out (64 bytes). */
static inline void mw_conn_addr(const mw_conn_t *c, char *out, size_t cap)
{
    mw_addr_format(&c->addr, out, cap);
}

/* Makes client the connection's address (c->addr) for the request being
 * answered, moving its place in the per-IP counts. */
void mw_conn_set_client(mw_conn_t *c, const mw_addr_t *client);

/* Logs the "conn.open" line of an upgraded connection. */
void mw_conn_log_open(const mw_conn_t *c, const char *path, size_t path_len);

/* What c's queue holds and has not written (what backpressure bounds): the
 * queued frames' bytes and MW_OUTQ_FRAME_COST each, and TLS ciphertext. */
static inline size_t mw_conn_buffered(const mw_conn_t *c)
{
    return mw_outq_cost(&c->outq) + c->wire_pending;
}

/* Marks c as having frames to write this turn. */
static inline void mw_conn_want_flush(mw_conn_t *c)
{
    mw_sched_flush(c->conns->sched, &c->flush_link);
}

/* Internal: queues bytes regardless of state (HTTP replies, control frames,
 * a body's chunks). The caller keeps its reference. Returns 0 or MW_ENOMEM. */
int mw__conn_queue(mw_conn_t *c, mw_frame_t *f);

#endif
