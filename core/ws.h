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
 * frame boundary with nothing buffered, so an idle connection holds none.
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

typedef struct mw_ws_s {
    struct wslay_frame_context *fctx; /* NULL while idle at a frame boundary */
    const mw_ws_handler_t *handler;
    void *ud;
    size_t max_message;
    uint64_t buffered; /* bytes given to wslay and not yet part of a whole frame */

    /* The frame being received. */
    uint64_t frame_len;
    uint64_t frame_got;
    uint8_t frame_op;
    uint8_t frame_fin;
    uint8_t in_frame;
    /* Between frames: the next header's bytes so far, checked as they come. */
    uint8_t hdr_len;
    uint8_t hdr[14];

    /* permessage-deflate, when negotiated (set by the handshake). */
    mw_pmd_t pmd;
    mw_inflater_t *inflater; /* while a compressed message arrives, or for life with takeover */

    /* The data message being assembled (msg_op 0: none). */
    uint8_t msg_op;
    uint8_t msg_compressed;
    mw_utf8_state_t utf8;
    uint8_t *msg;
    size_t msg_len;
    size_t msg_cap;

    /* A control frame's payload, at most 125 bytes. */
    uint8_t ctl_len;
    uint8_t ctl[125];

    uint8_t stopped; /* a close arrived or the connection failed: ignore the rest */
} mw_ws_t;

void mw_ws_init(mw_ws_t *ws, const mw_ws_handler_t *handler, void *ud, size_t max_message);

/* Frees the message buffer and returns the frame context to the pool. */
void mw_ws_close(mw_ws_t *ws);

/* Feeds bytes read from the peer; calls the handler for each event. Stops at
 * the first close or failure (out of memory fails with 1011) and ignores
 * everything after it. Returns 0, or MW_ECLOSED once stopped. */
int mw_ws_feed(mw_ws_t *ws, const uint8_t *data, size_t len);

/* Bytes held for this connection (message buffer and frame context). */
size_t mw_ws_memory(const mw_ws_t *ws);

/* True when the close code may appear in a close frame on the wire. */
int mw_ws_close_code_valid(unsigned code);

/* Frees the pooled frame contexts (at exit). */
void mw_ws_pool_drain(void);

#endif
