/* The envelope codec: what a node sends the others, in bytes. See envelope.h. */
#include "envelope.h"
#include "moonwire/error.h"

#include <stdlib.h>
#include <string.h>

size_t mw_envelope_size(const mw_envelope_t *e)
{
    if (e->origin_len > 255 || e->except_len > 255 || e->target_len > 255)
        return 0;
    return 3 + 8 + 1 + e->origin_len + 1 + e->except_len + 1 + e->target_len + e->payload_len;
}

void mw_envelope_put_seq(uint8_t *p, uint64_t seq)
{
    for (int i = 7; i >= 0; i--, seq >>= 8)
        p[i] = (uint8_t)(seq & 0xff);
}

void mw_envelope_write(const mw_envelope_t *e, uint8_t *p)
{
    *p++ = MW_ENVELOPE_VERSION;
    *p++ = e->kind;
    *p++ = (uint8_t)((e->binary ? 1 : 0) | (e->history ? 2 : 0));
    mw_envelope_put_seq(p, e->seq);
    p += 8;
    *p++ = (uint8_t)e->origin_len;
    memcpy(p, e->origin, e->origin_len);
    p += e->origin_len;
    *p++ = (uint8_t)e->except_len;
    memcpy(p, e->except, e->except_len);
    p += e->except_len;
    *p++ = (uint8_t)e->target_len;
    memcpy(p, e->target, e->target_len);
    p += e->target_len;
    if (e->payload_len > 0)
        memcpy(p, e->payload, e->payload_len);
}

size_t mw_envelope_encode(const mw_envelope_t *e, uint8_t **out)
{
    size_t len = mw_envelope_size(e);
    uint8_t *buf;

    if (len == 0 || (buf = malloc(len)) == NULL)
        return 0;
    mw_envelope_write(e, buf);
    *out = buf;
    return len;
}

int mw_envelope_decode(const uint8_t *data, size_t len, mw_envelope_t *e)
{
    const uint8_t *p = data, *end = data + len;

    if (len < 3 + 8 + 3 || p[0] != MW_ENVELOPE_VERSION)
        return MW_EPROTO;
    e->kind = p[1];
    e->binary = p[2] & 1;
    e->history = (p[2] & 2) != 0;
    p += 3;
    e->seq = 0;
    for (int i = 0; i < 8; i++)
        e->seq = e->seq << 8 | *p++;
#define FIELD(ptr, n)                                                                              \
    do {                                                                                           \
        if (p >= end || (size_t)(end - p - 1) < *p)                                                \
            return MW_EPROTO;                                                                      \
        n = *p++;                                                                                  \
        ptr = (const char *)p;                                                                     \
        p += n;                                                                                    \
    } while (0)
    FIELD(e->origin, e->origin_len);
    FIELD(e->except, e->except_len);
    FIELD(e->target, e->target_len);
#undef FIELD
    e->payload = p;
    e->payload_len = (size_t)(end - p);
    return 0;
}
