/* Address allowlists: "10.0.0.0/8", "::1", "127.0.0.1" (a plain address is
 * a /32 or /128). IPv4 peers also match their IPv4-mapped IPv6 form.
 */
#ifndef MOONWIRE_ACL_H
#define MOONWIRE_ACL_H

#include "addr.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint8_t ip[16]; /* IPv4 as IPv4-mapped IPv6 */
    uint8_t bits;   /* prefix length over the 128 bits */
} mw_cidr_t;

typedef struct mw_acl_s {
    mw_cidr_t *items;
    size_t n; /* 0: everyone is allowed */
} mw_acl_t;

/* Parses one entry. Returns 0 or MW_EINVAL. */
int mw_cidr_parse(const char *text, mw_cidr_t *out);

/* Builds an allowlist from n entries. Returns 0, MW_EINVAL (with the bad
 * entry's index in *bad) or MW_ENOMEM. */
int mw_acl_init(mw_acl_t *acl, const char *const *entries, size_t n, size_t *bad);
void mw_acl_close(mw_acl_t *acl);

/* True when addr is allowed (always, for an empty list). */
int mw_acl_allows(const mw_acl_t *acl, const mw_addr_t *addr);

#endif
