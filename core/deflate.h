/* permessage-deflate (RFC 7692): negotiation, inflating client messages,
 * compressing server frames.
 *
 * The server always answers with server_no_context_takeover: every message
 * is compressed on its own, so one compressed frame serves every recipient
 * that negotiated the same window (it is cached on the plain frame), and the
 * deflater is one per process. By default it also asks for
 * client_no_context_takeover, so a connection holds inflate state only while
 * a compressed message is arriving (inflaters come from a pool); a client
 * allowed to keep its context holds its own inflater for its whole life.
 */
#ifndef MOONWIRE_DEFLATE_H
#define MOONWIRE_DEFLATE_H

#include "frame.h"

#include <stddef.h>
#include <stdint.h>

/* What the configuration allows (websocket.compression*). */
typedef struct {
    int enabled;
    int level;                  /* zlib 1..9 */
    size_t threshold;           /* payloads below this many bytes go plain */
    int client_no_context_takeover;
    int server_max_window_bits; /* 9..15 */
    int client_max_window_bits; /* 8..15 */
} mw_pmd_config_t;

/* What a connection negotiated. */
typedef struct {
    uint8_t enabled;
    uint8_t server_bits;     /* the window we compress with */
    uint8_t client_bits;     /* the window the client compresses with (sizes our inflater) */
    uint8_t client_takeover; /* the client keeps its context between messages */
} mw_pmd_t;

/* Picks the first offer in a Sec-WebSocket-Extensions value (all occurrences
 * joined) that can be honoured. Offers with unknown or invalid parameters,
 * or asking for an 8-bit server window (zlib cannot make one), are declined.
 * Returns 1 and fills *out and the response header value (without the name),
 * or 0 when no offer is accepted (the connection goes uncompressed). */
int mw_pmd_negotiate(const char *offers, size_t len, const mw_pmd_config_t *cfg, mw_pmd_t *out,
                     char *response, size_t cap);

typedef struct mw_inflater_s mw_inflater_t;

/* An inflater for a client window of bits, reset, from the pool. NULL when out of memory. */
mw_inflater_t *mw_inflater_get(int bits);

/* Resets it and gives it back to the pool. */
void mw_inflater_put(mw_inflater_t *z);

/* Receives inflated bytes. Returns 0 to go on, or a negative MW_E* code to stop. */
typedef int (*mw_inflate_sink)(void *ud, const uint8_t *data, size_t len);

/* Inflates len compressed bytes, passing the output to sink in pieces. With
 * end set (the message's last bytes), also feeds the 00 00 ff ff tail RFC
 * 7692 strips from a message, unless the message's data ended its DEFLATE
 * stream with a final block (BFINAL, 7.2.3.3). Data after a final block, in
 * this message or the next, starts a new stream with the same window.
 * Returns 0, the sink's error, or MW_EPROTO for data that is not deflate. */
int mw_inflater_feed(mw_inflater_t *z, const uint8_t *data, size_t len, int end,
                     mw_inflate_sink sink, void *ud);

/* The compressed variant of a whole text or binary frame, for a server window
 * of bits, with RSV1 set; cached on f for the default window. Returns a new
 * reference, or NULL when compressing does not pay (send f itself). */
mw_frame_t *mw_pmd_compress(mw_frame_t *f, int bits, int level);

/* Frees the pooled inflaters and deflaters (at exit). */
void mw_pmd_pool_drain(void);

#endif
