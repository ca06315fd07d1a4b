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
 */
#ifndef MOONWIRE_CONN_H
#define MOONWIRE_CONN_H

#include "frame.h"
#include "http.h"
#include "list.h"
#include "outq.h"
#include "transport.h"
#include "ws.h"

#include <netinet/in.h>
#include <stdint.h>

typedef struct mw_server_s mw_server_t;

typedef enum {
    MW_CONN_HTTP = 0,
    MW_CONN_OPEN,
    MW_CONN_CLOSING,
    MW_CONN_CLOSED
} mw_conn_state_t;

/* Which timeout list a connection sits in (see server.c). */
typedef enum {
    MW_TL_NONE = 0,
    MW_TL_HANDSHAKE,
    MW_TL_ACTIVE,
    MW_TL_PINGED,
    MW_TL_CLOSING,
    MW_TL_KEEPALIVE
} mw_conn_tlist_t;

typedef union mw_addr_u {
    struct sockaddr sa;
    struct sockaddr_in in4;
    struct sockaddr_in6 in6;
} mw_addr_t;

struct mw_conn_s {
    mw_server_t *srv;
    const mw_transport_t *tp;
    uint64_t serial; /* the counter part of the id; never reused */

    uint8_t state;         /* mw_conn_state_t */
    uint8_t tlist;         /* mw_conn_tlist_t */
    uint8_t close_sent : 1;
    uint8_t close_received : 1;
    uint8_t finishing : 1;   /* finish the transport once outq drains */
    uint8_t lua_open : 1;    /* on_open ran, so on_close is owed */
    uint8_t queued_close : 1; /* in srv->close_queue */
    uint8_t freed : 1;
    uint8_t ip_counted : 1;  /* counted in srv->iplimit */
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
    uint32_t requests;        /* HTTP requests read on this connection */
    struct mw_stream_s *stream; /* the reply body still to queue (stream.c), or NULL */
    uint8_t *pipelined;       /* bytes read after the request being answered, or NULL */
    size_t pipelined_len;
    uint16_t close_code;     /* what on_close reports */
    uint16_t close_reason_len;
    const char *close_reason; /* static, in ws.ctl, or reason_buf */
    char *reason_buf;         /* our own close reason, kept for on_close; freed at release */
    const char *fail_why;     /* static: why the core failed the connection, for on_error */

    mw_http_req_t *http; /* only in MW_CONN_HTTP */
    mw_ws_t ws;
    mw_outq_t outq;
    size_t wire_pending; /* bytes taken from outq, not yet on the wire (TLS ciphertext) */
    struct mw_backlog_s *backlog; /* while its queue is backed up, else NULL (backpressure.c) */
    uint32_t held_back;  /* backed-up queues its messages went to that hold it back */
    char *protocol; /* the negotiated subprotocol, or NULL */

    mw_list_t timeout_link; /* in the server list named by tlist */
    mw_list_t open_link;    /* in the registry's list of open connections */
    mw_list_t flush_link;   /* in srv->flush_list while it has frames to write */
    mw_list_t close_link;   /* in srv->close_queue until on_close has run */
    mw_list_t subs;         /* its topic subscriptions */
    uint32_t nsubs;         /* entries in subs (limits.max_subscriptions) */

    int lua_ref;  /* the conn userdata in the Lua registry; LUA_NOREF until open */
    struct mw_lua_waits_s *lua_waits; /* its hooks waiting on Redis, or NULL; see lua_host.c */
    mw_outq_t held;       /* messages that arrived while a hook of it was waiting, in order */
    int req_ref;  /* the request table between upgrade and open; LUA_NOREF after */

    uint64_t since;   /* accept time, ms */
    uint64_t tl_at;   /* when it entered its timeout list, ms */
    uint64_t last_rx; /* last byte received, ms */
    uint64_t msgs_in, msgs_out, bytes_in, bytes_out;
    mw_addr_t addr;
};

/* Why reading from a connection is stopped. Each reason is set and cleared
 * by the part that owns it; reading resumes when none is left. */
enum {
    MW_PAUSE_WRITEQ = 1, /* its own write queue is over limits.max_buffered */
    MW_PAUSE_HELD = 2,   /* its messages held behind a waiting hook are (lua_host.c) */
    MW_PAUSE_FLOW = 4,   /* queues its messages went to are backed up (backpressure.c) */
    MW_PAUSE_HTTP = 8,   /* a request is being answered: later ones wait in c->pipelined */
};

/* Sets (on) or clears a reason to stop reading c. The transport stops at the
 * first reason and resumes when the last one is cleared. A connection that
 * is finishing keeps reading, to see the peer's FIN: it takes no new reason. */
void mw_conn_pause(mw_conn_t *c, unsigned reason, int on);

/* Sets up a connection just accepted by a transport. Returns 0 or MW_ENOMEM. */
int mw_conn_init(mw_conn_t *c, mw_server_t *srv, const mw_transport_t *tp, const mw_addr_t *addr);

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

/* Internal (server.c, at the end of a turn): c's last reply has drained,
 * take the requests that were read meanwhile. */
void mw__conn_http_resume(mw_conn_t *c);

/* Sends a ping (for idle detection). */
void mw_conn_ping(mw_conn_t *c);

/* Writes "mw.x1.42"-style ids: the id of c into out (MW_ID_MAX bytes). */
#define MW_ID_MAX 64
size_t mw_conn_id(const mw_conn_t *c, char *out);

/* Formats the peer address ("127.0.0.1", "::1") into out (64 bytes). */
void mw_conn_addr(const mw_conn_t *c, char *out, size_t cap);

/* Logs the "conn.open" line of an upgraded connection. */
void mw_conn_log_open(const mw_conn_t *c, const char *path, size_t path_len);

/* What c's queue holds and has not written (what backpressure bounds): the
 * queued frames' bytes and MW_OUTQ_FRAME_COST each, and TLS ciphertext. */
static inline size_t mw_conn_buffered(const mw_conn_t *c)
{
    return mw_outq_cost(&c->outq) + c->wire_pending;
}

/* Internal: queues bytes regardless of state (101 replies, control frames). */
int mw__conn_queue(mw_conn_t *c, mw_frame_t *f);

#endif
