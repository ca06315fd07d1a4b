/* The envelope of a message between nodes: version, kind, flags, the
 * origin's number for it, origin node, except id, target id, payload; each
 * string field is at most 255 bytes behind its length byte. See cluster.h
 * for what travels in one.
 */
#ifndef MOONWIRE_ENVELOPE_H
#define MOONWIRE_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

/* MW_ENV_PROBE: a node's probe of its own subscriber connection, on its own
 * channel; no node delivers it. MW_ENV_CLOSE: close the target connection;
 * the payload is the close code (2 bytes, big-endian) and the reason (a node
 * that does not know the kind ignores it). */
enum {
    MW_ENV_TOPIC = 1,
    MW_ENV_BROADCAST = 2,
    MW_ENV_DIRECT = 3,
    MW_ENV_PROBE = 4,
    MW_ENV_CLOSE = 5
};

/* A decoded envelope; pointers into the message. */
typedef struct {
    uint8_t kind;
    uint8_t binary;
    uint8_t history; /* numbered by Redis: delivered by every node, the origin too */
    uint64_t seq;    /* the origin's number for it, 1, 2, 3...; 0 for a probe */
    const char *origin;
    size_t origin_len;
    const char *except; /* connection id, or empty */
    size_t except_len;
    const char *target; /* connection id of a direct send, or empty */
    size_t target_len;
    const uint8_t *payload;
    size_t payload_len;
} mw_envelope_t;

#define MW_ENVELOPE_VERSION 2
#define MW_ENVELOPE_SEQ_AT 3 /* where the 8 bytes of seq (big-endian) start */

/* Writes seq (big-endian) at p, 8 bytes: an encoded envelope's number is at
 * MW_ENVELOPE_SEQ_AT. */
void mw_envelope_put_seq(uint8_t *p, uint64_t seq);

/* The encoded length of e, or 0 when a field is over 255 bytes. */
size_t mw_envelope_size(const mw_envelope_t *e);

/* Writes e into out, which holds mw_envelope_size(e) bytes. */
void mw_envelope_write(const mw_envelope_t *e, uint8_t *out);

/* Encodes an envelope into a malloc'ed buffer. Returns its length, 0 when out of memory. */
size_t mw_envelope_encode(const mw_envelope_t *e, uint8_t **out);

/* Decodes data. Returns 0, or MW_EPROTO for a wrong version or a short message. */
int mw_envelope_decode(const uint8_t *data, size_t len, mw_envelope_t *e);

#endif
