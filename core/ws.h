/* The receiving side of RFC 6455 for one connection: two frame parsers
 * below, messages, control frames and validation above.
 *
 * Data frames of up to 4 KB that arrive whole in a read, at a frame boundary,
 * are parsed here and unmasked sixteen bytes at a time. wslay_frame_recv()
 * parses and unmasks the rest (control frames, frames split across reads,
 * larger ones) and rejects malformed headers (oversized or fragmented
 * control frames, non-minimal lengths), which the first parser leaves to
 * it. This layer
 * enforces the rest of section 5: masking, reserved bits and opcodes,
 * continuation order, UTF-8 of text and close reasons (incrementally, so a
 * bad byte fails at once), close codes, and max_message_size (at the frame
 * header, before any payload). It never writes: it reports to a handler,
 * which owns the connection.
 *
 * wslay's frame context carries a 4 KB input buffer. It is taken from a
 * pool when bytes arrive and given back whenever the connection sits at a
 * frame boundary with nothing buffered, and the rest of the receive state
 * (mw_ws_rx_t, below) once no message is half-assembled either, so an idle
 * connection holds neither: mw_ws_t at rest is 32 bytes.
 */
#ifndef MOONWIRE_WS_H
#define MOONWIRE_WS_H

#include "deflate.h"
#include "utf8.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    /* A complete text or binary message. data is valid only during the call. */
    void (*on_message)(void *ud, int opcode, const uint8_t *data, size_t len);
    /* A ping arrived; the handler answers with a pong of the same payload. */
    void (*on_ping)(void *ud, const uint8_t *data, size_t len);
    void (*on_pong)(void *ud, const uint8_t *data, size_t len);
    /* A valid close frame arrived. code is 1005 when it carried none. */
    void (*on_close)(void *ud, uint16_t code, const char *reason, size_t len);
    /* The peer broke the protocol: fail the connection with this close code. */
    void (*on_fail)(void *ud, uint16_t code, const char *why);
} mw_ws_handler_t;

/* What a connection needs only while it receives: the frame being read, the
 * next header's first bytes, a control frame's payload, the message being
 * assembled and its buffer, and wslay's frame context (private to ws.c).
 * Taken from a small pool when a read needs more than the whole frames that
 * ws.c parses itself, and given back as soon as the connection is at rest
 * again: at a frame boundary, nothing buffered, no message half-assembled.
 * The message buffer goes with it, so a burst leaves nothing behind. */
typedef struct mw_ws_rx_s mw_ws_rx_t;

typedef struct mw_ws_s {
    mw_ws_rx_t *rx; /* NULL at rest; kept once stopped (a close reason lives in it) */
    size_t max_message;
    mw_inflater_t *inflater; /* while a compressed message arrives, or for life with takeover */
    mw_pmd_t pmd;            /* permessage-deflate, when negotiated (set by the handshake) */
    uint8_t stopped; /* a close arrived or the connection failed: ignore the rest */
} mw_ws_t;

void mw_ws_init(mw_ws_t *ws, size_t max_message);

/* Frees the message buffer and returns the receive state to its pool. */
void mw_ws_close(mw_ws_t *ws);

/* Feeds bytes read from the peer; calls handler (with ud) for each event: the
 * connection's owner passes the same ones every time (ws keeps neither).
 * Stops at the first close or failure (out of memory fails with 1011) and
 * ignores everything after it. Returns 0, or MW_ECLOSED once stopped. */
int mw_ws_feed(mw_ws_t *ws, const mw_ws_handler_t *handler, void *ud, const uint8_t *data,
               size_t len);

/* Bytes held for this connection besides mw_ws_t (receive state, message
 * buffer, frame context, inflater): 0 at rest without compression. */
size_t mw_ws_memory(const mw_ws_t *ws);

/* True when the close code may appear in a close frame on the wire. */
int mw_ws_close_code_valid(unsigned code);

/* Frees the pooled frame contexts and receive states (at exit, and when
 * freed memory is handed back to the system). */
void mw_ws_pool_drain(void);

/* Bytes of receive buffers (message buffers, frame contexts) freed since the
 * last call, which returns them and starts again from 0: what a burst of
 * large messages left to the allocator, for the sweep that trims it. */
size_t mw_ws_take_freed(void);

#endif
