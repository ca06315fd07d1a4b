/* Address allowlists. See acl.h. */
#include "acl.h"
#include "addr.h"
#include "moonwire/error.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

static void mapped(const uint8_t v4[4], uint8_t out[16])
{
    memset(out, 0, 10);
    out[10] = out[11] = 0xff;
    memcpy(out + 12, v4, 4);
}

int mw_cidr_parse(const char *text, mw_cidr_t *out)
{
    char host[64];
    const char *slash = strchr(text, '/');
    size_t hlen = slash ? (size_t)(slash - text) : strlen(text);
    uint8_t v4[4];
    long bits;
    int is_v4;

    if (hlen == 0 || hlen >= sizeof(host))
        return MW_EINVAL;
    memcpy(host, text, hlen);
    host[hlen] = '\0';
    if (inet_pton(AF_INET, host, v4) == 1) {
        is_v4 = 1;
        mapped(v4, out->ip);
    } else if (inet_pton(AF_INET6, host, out->ip) == 1) {
        is_v4 = 0;
    } else {
        return MW_EINVAL;
    }
    bits = is_v4 ? 32 : 128;
    if (slash != NULL) {
        char *end;
        bits = strtol(slash + 1, &end, 10);
        if (slash[1] == '\0' || *end != '\0' || bits < 0 || bits > (is_v4 ? 32 : 128))
            return MW_EINVAL;
    }
    out->bits = (uint8_t)(is_v4 ? bits + 96 : bits);
    return 0;
}

int mw_acl_init(mw_acl_t *acl, const char *const *entries, size_t n, size_t *bad)
{
    acl->items = NULL;
    acl->n = 0;
    if (n == 0)
        return 0;
    acl->items = calloc(n, sizeof(mw_cidr_t));
    if (acl->items == NULL)
        return MW_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (mw_cidr_parse(entries[i], &acl->items[i]) != 0) {
            *bad = i;
            mw_acl_close(acl);
            return MW_EINVAL;
        }
    }
    acl->n = n;
    return 0;
}

void mw_acl_close(mw_acl_t *acl)
{
    free(acl->items);
    acl->items = NULL;
    acl->n = 0;
}

static int prefix_equal(const uint8_t *a, const uint8_t *b, unsigned bits)
{
    unsigned whole = bits / 8, rest = bits % 8;
    if (memcmp(a, b, whole) != 0)
        return 0;
    if (rest == 0)
        return 1;
    return ((a[whole] ^ b[whole]) & (uint8_t)(0xff << (8 - rest))) == 0;
}

int mw_acl_allows(const mw_acl_t *acl, const mw_addr_t *addr)
{
    uint8_t ip[16];

    if (acl->n == 0)
        return 1;
    if (addr->sa.sa_family == AF_INET)
        mapped((const uint8_t *)&addr->in4.sin_addr, ip);
    else if (addr->sa.sa_family == AF_INET6)
        memcpy(ip, &addr->in6.sin6_addr, 16);
    else
        return 0;
    for (size_t i = 0; i < acl->n; i++)
        if (prefix_equal(ip, acl->items[i].ip, acl->items[i].bits))
            return 1;
    return 0;
}
