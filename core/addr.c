/* A peer's address, formatted for log lines and request tables. See addr.h. */
#include "addr.h"

#include <arpa/inet.h>
#include <stdio.h>

void mw_addr_format(const mw_addr_t *a, char *out, size_t cap)
{
    const void *src = NULL;

    out[0] = '\0';
    if (a->sa.sa_family == AF_INET)
        src = &a->in4.sin_addr;
    else if (a->sa.sa_family == AF_INET6)
        src = &a->in6.sin6_addr;
    if (src == NULL || inet_ntop(a->sa.sa_family, src, out, (socklen_t)cap) == NULL)
        snprintf(out, cap, "-");
}
