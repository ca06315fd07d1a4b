/* Frame serialization and the frame pool.
 *
 * Frames come from a pool of free lists by size (pool.h) so that the
 * per-message path does not call malloc in steady state. The core is
 * single-threaded (one loop per process), so the pool needs no lock. It is
 * capped, so an idle server gives most of the memory of a burst back.
 */
#include "frame.h"
#include "pool.h"

#include <stdlib.h>
#include <string.h>

/* Frames up to 4 KB with their header, in steps of 64 bytes: the sizes chat
 * messages have; a larger frame is malloc'ed. At most 4 MB is kept. */
static mw_pool_t pool = MW_POOL_INIT(6, 64, 4u << 20);

size_t mw_frame_header(uint8_t *out, int fin, uint8_t rsv, uint8_t opcode, uint64_t len)
{
    out[0] = (uint8_t)((fin ? 0x80 : 0) | ((rsv & 7) << 4) | (opcode & 0x0f));
    if (len < 126) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xffff) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    return 10;
}

static mw_frame_t *frame_get(size_t total)
{
    size_t size = sizeof(mw_frame_t) + total;
    mw_frame_t *f;
    unsigned cls;

    cls = mw_pool_class(&pool, size);
    f = cls != MW_POOL_NONE ? mw_pool_get(&pool, cls) : malloc(size);
    if (f == NULL)
        return NULL;
    if (cls != MW_POOL_NONE)
        mw_pool_fit(&pool, cls, f, size);
    f->refcnt = 1;
    f->len = (uint32_t)total;
    f->rsv = 0;
    f->alt = NULL;
    f->alt_tried = 0;
    f->pool = (uint8_t)cls;
    return f;
}

mw_frame_t *mw_frame_alloc(uint8_t opcode, size_t len)
{
    /* The header's length first, to write it in place: 2, 4 or 10 bytes. */
    size_t hlen = len < 126 ? 2 : len <= 0xffff ? 4 : 10;
    mw_frame_t *f;

    if (len > UINT32_MAX - MW_FRAME_MAX_HEADER)
        return NULL;
    f = frame_get(hlen + len);
    if (f == NULL)
        return NULL;
    mw_frame_header(f->bytes, 1, 0, opcode, len);
    f->hdr = (uint32_t)hlen;
    return f;
}

mw_frame_t *mw_frame_new(uint8_t opcode, const void *payload, size_t len)
{
    mw_frame_t *f = mw_frame_alloc(opcode, len);
    if (f != NULL && len > 0)
        memcpy(f->bytes + f->hdr, payload, len);
    return f;
}

mw_frame_t *mw_frame_new_close(uint16_t code, const char *reason, size_t reason_len)
{
    uint8_t payload[125];
    size_t len = 0;

    if (code != 0) {
        payload[0] = (uint8_t)(code >> 8);
        payload[1] = (uint8_t)code;
        if (reason_len > 123) {
            reason_len = 123;
            /* Do not cut a multi-byte character in half. */
            while (reason_len > 0 && ((uint8_t)reason[reason_len] & 0xC0) == 0x80)
                reason_len--;
        }
        if (reason_len > 0)
            memcpy(payload + 2, reason, reason_len);
        len = 2 + reason_len;
    }
    return mw_frame_new(MW_OP_CLOSE, payload, len);
}

mw_frame_t *mw_frame_new_raw(const void *bytes, size_t len)
{
    mw_frame_t *f;

    if (len > UINT32_MAX)
        return NULL;
    f = frame_get(len);
    if (f == NULL)
        return NULL;
    f->hdr = 0;
    if (bytes != NULL)
        memcpy(f->bytes, bytes, len);
    return f;
}

void mw__frame_free(mw_frame_t *f)
{
    if (f->alt != NULL)
        mw_frame_unref(f->alt);
    if (f->pool != MW_POOL_NONE)
        mw_pool_put(&pool, f->pool, f);
    else
        free(f);
}

size_t mw_frame_pool_bytes(void)
{
    return pool.free_bytes;
}

void mw_frame_pool_drain(void)
{
    mw_pool_drain(&pool);
}
