/* Connections per peer address, for limits.max_connections_per_ip.
 *
 * IPv4 addresses are kept in their IPv4-mapped IPv6 form, so one table
 * serves both families. An address leaves the table with its last
 * connection, so the table is as large as the set of current peers.
 */
#ifndef MOONWIRE_IPLIMIT_H
#define MOONWIRE_IPLIMIT_H

#include "addr.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint8_t ip[16];
    uint32_t count; /* 0: empty slot */
} mw_ipslot_t;

typedef struct mw_iplimit_s {
    mw_ipslot_t *slots;
    size_t cap; /* a power of two */
    size_t used;
} mw_iplimit_t;

/* Returns 0 or MW_ENOMEM. */
int mw_iplimit_init(mw_iplimit_t *t);
void mw_iplimit_close(mw_iplimit_t *t);

/* Counts one more connection from addr. Returns the new count, or 0 when out
 * of memory or addr is not IPv4/IPv6 (then nothing is counted). */
uint32_t mw_iplimit_add(mw_iplimit_t *t, const mw_addr_t *addr);

/* Counts one connection less (after a successful add). */
void mw_iplimit_remove(mw_iplimit_t *t, const mw_addr_t *addr);

/* Connections from addr now. */
uint32_t mw_iplimit_count(const mw_iplimit_t *t, const mw_addr_t *addr);

#endif
