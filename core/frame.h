/* Serialized server frames, shared by reference count.
 *
 * A frame holds the RFC 6455 header and the payload in one allocation.
 * Server frames are never masked, so the same bytes go to every recipient:
 * a message published to ten thousand connections is serialized once and
 * each write queue holds a reference (Redis replBufBlock, h2o shared mem).
 */
#ifndef MOONWIRE_FRAME_H
#define MOONWIRE_FRAME_H

#include <stddef.h>
#include <stdint.h>

enum {
    MW_OP_CONT = 0x0,
    MW_OP_TEXT = 0x1,
    MW_OP_BINARY = 0x2,
    MW_OP_CLOSE = 0x8,
    MW_OP_PING = 0x9,
    MW_OP_PONG = 0xA
};

/* The largest header a server frame needs: 2 + 8 (no mask key). */
#define MW_FRAME_MAX_HEADER 10

typedef struct mw_frame_s {
    uint32_t refcnt;
    uint32_t len;   /* bytes in bytes[] (header + payload) */
    uint32_t hdr;   /* header length; the payload starts at bytes + hdr */
    uint8_t rsv;    /* reserved bits of the first byte (RSV1 for deflate) */
    uint8_t pool;   /* private to frame.c: the free list it returns to */
    uint8_t alt_tried; /* deflate.c tried to compress it (alt may still be NULL) */
    uint8_t pad;
    struct mw_frame_s *alt; /* its permessage-deflate variant, one reference; or NULL */
    uint8_t bytes[];
} mw_frame_t;

/* Builds a final (FIN) frame with payload copied in. Returns refcnt 1 owned by
 * the caller, or NULL when out of memory or len does not fit 32 bits. */
mw_frame_t *mw_frame_new(uint8_t opcode, const void *payload, size_t len);

/* Like mw_frame_new, but leaves the payload uninitialised for the caller to
 * fill. Returns the frame (refcnt 1), or NULL. */
mw_frame_t *mw_frame_alloc(uint8_t opcode, size_t len);

/* Builds a close frame. code 0 means no status (empty payload); the reason is
 * cut to the 123 bytes a control frame allows, at a UTF-8 boundary. */
mw_frame_t *mw_frame_new_close(uint16_t code, const char *reason, size_t reason_len);

/* Builds a frame with raw bytes that are not a WebSocket frame (an HTTP reply).
 * bytes NULL leaves the len bytes for the caller to fill. */
mw_frame_t *mw_frame_new_raw(const void *bytes, size_t len);

static inline mw_frame_t *mw_frame_ref(mw_frame_t *f)
{
    f->refcnt++;
    return f;
}

/* Internal: frees a frame whose last reference went. */
void mw__frame_free(mw_frame_t *f);

/* Drops one reference; frees the frame at zero. Inline: every delivery
 * drops one, and only the last frees. */
static inline void mw_frame_unref(mw_frame_t *f)
{
    if (--f->refcnt == 0)
        mw__frame_free(f);
}

static inline const uint8_t *mw_frame_payload(const mw_frame_t *f)
{
    return f->bytes + f->hdr;
}

static inline size_t mw_frame_payload_len(const mw_frame_t *f)
{
    return f->len - f->hdr;
}

/* Writes a server frame header for a payload of len bytes into out
 * (MW_FRAME_MAX_HEADER bytes). Returns the header length. */
size_t mw_frame_header(uint8_t *out, int fin, uint8_t rsv, uint8_t opcode, uint64_t len);

/* Bytes of the frames kept on free lists for reuse. */
size_t mw_frame_pool_bytes(void);

/* Frees every pooled frame (at exit, so leak checkers see a clean heap). */
void mw_frame_pool_drain(void);

#endif
