/* Per-address connection counts. See iplimit.h. */
#include "iplimit.h"
#include "addr.h"
#include "moonwire/error.h"

#include <stdlib.h>
#include <string.h>

static int key_of(const mw_addr_t *a, uint8_t out[16])
{
    if (a->sa.sa_family == AF_INET6) {
        memcpy(out, &a->in6.sin6_addr, 16);
        return 0;
    }
    if (a->sa.sa_family == AF_INET) {
        memset(out, 0, 10);
        out[10] = out[11] = 0xff;
        memcpy(out + 12, &a->in4.sin_addr, 4);
        return 0;
    }
    return -1;
}

static size_t hash_of(const uint8_t ip[16], size_t cap)
{
    uint64_t a, b;
    memcpy(&a, ip, 8);
    memcpy(&b, ip + 8, 8);
    a ^= b * 0x9E3779B97F4A7C15ULL;
    a ^= a >> 31;
    return (size_t)(a * 0xBF58476D1CE4E5B9ULL >> 32) & (cap - 1);
}

int mw_iplimit_init(mw_iplimit_t *t)
{
    t->cap = 256;
    t->used = 0;
    t->slots = calloc(t->cap, sizeof(*t->slots));
    return t->slots != NULL ? 0 : MW_ENOMEM;
}

void mw_iplimit_close(mw_iplimit_t *t)
{
    free(t->slots);
    t->slots = NULL;
    t->cap = t->used = 0;
}

static size_t find(const mw_iplimit_t *t, const uint8_t ip[16])
{
    size_t i = hash_of(ip, t->cap);
    while (t->slots[i].count != 0 && memcmp(t->slots[i].ip, ip, 16) != 0)
        i = (i + 1) & (t->cap - 1);
    return i;
}

static int grow(mw_iplimit_t *t)
{
    mw_iplimit_t bigger = {calloc(t->cap * 2, sizeof(mw_ipslot_t)), t->cap * 2, t->used};
    if (bigger.slots == NULL)
        return MW_ENOMEM;
    for (size_t i = 0; i < t->cap; i++)
        if (t->slots[i].count != 0)
            bigger.slots[find(&bigger, t->slots[i].ip)] = t->slots[i];
    free(t->slots);
    *t = bigger;
    return 0;
}

uint32_t mw_iplimit_add(mw_iplimit_t *t, const mw_addr_t *addr)
{
    uint8_t ip[16];
    size_t i;

    if (key_of(addr, ip) != 0)
        return 0;
    if ((t->used + 1) * 2 > t->cap && grow(t) != 0)
        return 0;
    i = find(t, ip);
    if (t->slots[i].count == 0) {
        memcpy(t->slots[i].ip, ip, 16);
        t->used++;
    }
    return ++t->slots[i].count;
}

void mw_iplimit_remove(mw_iplimit_t *t, const mw_addr_t *addr)
{
    uint8_t ip[16];
    size_t i, j;

    if (key_of(addr, ip) != 0)
        return;
    i = find(t, ip);
    if (t->slots[i].count == 0 || --t->slots[i].count > 0)
        return;
    /* Backward-shift deletion keeps every probe chain whole. */
    t->used--;
    j = i;
    for (;;) {
        size_t home;
        j = (j + 1) & (t->cap - 1);
        if (t->slots[j].count == 0)
            break;
        home = hash_of(t->slots[j].ip, t->cap);
        if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
            t->slots[i] = t->slots[j];
            t->slots[j].count = 0;
            i = j;
        }
    }
}

uint32_t mw_iplimit_count(const mw_iplimit_t *t, const mw_addr_t *addr)
{
    uint8_t ip[16];
    if (key_of(addr, ip) != 0)
        return 0;
    return t->slots[find(t, ip)].count;
}
