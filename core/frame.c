/* Frame serialization and the frame pool.
 *
 * Small frames come from per-size free lists so that the per-message path
 * does not call malloc in steady state. The core is single-threaded (one
 * loop per process), so the lists need no lock. Each list is capped so an
 * idle server gives the memory of a burst back.
 */
#include "moonwire/frame.h"

#include <stdlib.h>
#include <string.h>

/* Capacity classes for bytes[]; a frame of a larger size is malloc'ed. */
static const uint32_t class_cap[] = {128, 512, 2048};
#define NCLASSES (sizeof(class_cap) / sizeof(class_cap[0]))
#define POOL_MAX_PER_CLASS 4096
#define NO_CLASS 0xff

typedef struct pooled_s {
    struct pooled_s *next;
} pooled_t;

static struct {
    pooled_t *head;
    uint32_t count;
} pool[NCLASSES];

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
    mw_frame_t *f;
    uint8_t cls = NO_CLASS;

    for (uint8_t i = 0; i < NCLASSES; i++) {
        if (total <= class_cap[i]) {
            cls = i;
            break;
        }
    }
    if (cls != NO_CLASS && pool[cls].head != NULL) {
        f = (mw_frame_t *)pool[cls].head;
        pool[cls].head = pool[cls].head->next;
        pool[cls].count--;
    } else {
        f = malloc(sizeof(mw_frame_t) + (cls != NO_CLASS ? class_cap[cls] : total));
        if (f == NULL)
            return NULL;
    }
    f->refcnt = 1;
    f->len = (uint32_t)total;
    f->rsv = 0;
    f->alt = NULL;
    f->alt_tried = 0;
    f->pool = cls;
    return f;
}

mw_frame_t *mw_frame_alloc(uint8_t opcode, size_t len)
{
    uint8_t hdr[MW_FRAME_MAX_HEADER];
    size_t hlen;
    mw_frame_t *f;

    if (len > UINT32_MAX - MW_FRAME_MAX_HEADER)
        return NULL;
    hlen = mw_frame_header(hdr, 1, 0, opcode, len);
    f = frame_get(hlen + len);
    if (f == NULL)
        return NULL;
    memcpy(f->bytes, hdr, hlen);
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

void mw_frame_unref(mw_frame_t *f)
{
    uint8_t cls;

    if (--f->refcnt > 0)
        return;
    if (f->alt != NULL)
        mw_frame_unref(f->alt);
    cls = f->pool;
    if (cls != NO_CLASS && pool[cls].count < POOL_MAX_PER_CLASS) {
        pooled_t *p = (pooled_t *)f;
        p->next = pool[cls].head;
        pool[cls].head = p;
        pool[cls].count++;
        return;
    }
    free(f);
}

size_t mw_frame_pool_bytes(void)
{
    size_t n = 0;
    for (size_t i = 0; i < NCLASSES; i++)
        n += pool[i].count * (sizeof(mw_frame_t) + class_cap[i]);
    return n;
}

void mw_frame_pool_drain(void)
{
    for (size_t i = 0; i < NCLASSES; i++) {
        while (pool[i].head != NULL) {
            pooled_t *p = pool[i].head;
            pool[i].head = p->next;
            free(p);
        }
        pool[i].count = 0;
    }
}
