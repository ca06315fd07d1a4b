/* UTF-8 validation as a small state machine over byte ranges.
 *
 * States name what the next byte must be. Runs of ASCII are skipped 32, then
 * eight bytes at a time, which is what chat traffic mostly is.
 */
#include "utf8.h"

#include <string.h>

enum {
    ACCEPT = MW_UTF8_ACCEPT,
    REJECT = MW_UTF8_REJECT,
    TAIL1,  /* one continuation byte (80..BF) left */
    TAIL2,  /* two left */
    TAIL3,  /* three left */
    AFTER_E0, /* A0..BF, then one more: excludes overlong 3-byte forms */
    AFTER_ED, /* 80..9F, then one more: excludes surrogates */
    AFTER_F0, /* 90..BF, then two more: excludes overlong 4-byte forms */
    AFTER_F4  /* 80..8F, then two more: excludes > U+10FFFF */
};

static inline mw_utf8_state_t lead(uint8_t b)
{
    if (b < 0x80)
        return ACCEPT;
    if (b < 0xC2) /* continuation byte, or overlong 2-byte lead C0/C1 */
        return REJECT;
    if (b < 0xE0)
        return TAIL1;
    if (b == 0xE0)
        return AFTER_E0;
    if (b == 0xED)
        return AFTER_ED;
    if (b < 0xF0)
        return TAIL2;
    if (b == 0xF0)
        return AFTER_F0;
    if (b < 0xF4)
        return TAIL3;
    if (b == 0xF4)
        return AFTER_F4;
    return REJECT;
}

static inline mw_utf8_state_t step(mw_utf8_state_t s, uint8_t b)
{
    switch (s) {
    case ACCEPT:
        return lead(b);
    case TAIL1:
        return (b & 0xC0) == 0x80 ? ACCEPT : REJECT;
    case TAIL2:
        return (b & 0xC0) == 0x80 ? TAIL1 : REJECT;
    case TAIL3:
        return (b & 0xC0) == 0x80 ? TAIL2 : REJECT;
    case AFTER_E0:
        return b >= 0xA0 && b <= 0xBF ? TAIL1 : REJECT;
    case AFTER_ED:
        return b >= 0x80 && b <= 0x9F ? TAIL1 : REJECT;
    case AFTER_F0:
        return b >= 0x90 && b <= 0xBF ? TAIL2 : REJECT;
    case AFTER_F4:
        return b >= 0x80 && b <= 0x8F ? TAIL2 : REJECT;
    default:
        return REJECT;
    }
}

mw_utf8_state_t mw_utf8_feed(mw_utf8_state_t s, const uint8_t *p, size_t len)
{
    const uint8_t *end;

    if (len == 0)
        return s; /* p may be NULL for an empty payload */
    end = p + len;
    while (p < end) {
        if (s == REJECT)
            return REJECT;
        if (s == ACCEPT) {
            while (end - p >= 32) { /* four words per test: one branch per 32 bytes */
                uint64_t w[4];
                memcpy(w, p, 32);
                if ((w[0] | w[1] | w[2] | w[3]) & 0x8080808080808080ULL)
                    break;
                p += 32;
            }
            while (end - p >= 8) {
                uint64_t w;
                memcpy(&w, p, 8);
                if (w & 0x8080808080808080ULL)
                    break;
                p += 8;
            }
            if (p == end)
                break;
        }
        s = step(s, *p++);
    }
    return s;
}

int mw_utf8_valid(const uint8_t *p, size_t len)
{
    return mw_utf8_feed(ACCEPT, p, len) == ACCEPT;
}
