/* A peer's address, IPv4 or IPv6, as accept gives it. */
#ifndef MOONWIRE_ADDR_H
#define MOONWIRE_ADDR_H

#include <netinet/in.h>
#include <stddef.h>

typedef union mw_addr_u {
    struct sockaddr sa;
    struct sockaddr_in in4;
    struct sockaddr_in6 in6;
} mw_addr_t;

/* Formats the address without its port ("127.0.0.1", "::1") into out, which
 * holds cap bytes (64 hold any); "-" for another family. */
void mw_addr_format(const mw_addr_t *a, char *out, size_t cap);

#endif
