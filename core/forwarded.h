/* The client's address behind trusted proxies (http.trusted_proxies), from
 * X-Forwarded-For or X-Real-IP.
 *
 * Only a trusted peer's headers count. X-Forwarded-For is read from the
 * right (the hop nearest to us) to the left: each address a trusted proxy
 * added is skipped, and the first one that is not trusted is the client. An
 * entry that is not an address ends the walk at the hop to its right (the
 * last trusted proxy), as does the MW_FORWARDED_MAX_HOPS-th entry; when every
 * entry is trusted the left-most is the client. X-Real-IP (one address) is
 * read only when there is no X-Forwarded-For. Entries may be IPv4 or IPv6
 * addresses, with a port ("1.2.3.4:80", "[::1]:80") or not.
 */
#ifndef MOONWIRE_FORWARDED_H
#define MOONWIRE_FORWARDED_H

#include "acl.h"
#include "addr.h"

#include <stddef.h>

typedef struct mw_http_req_s mw_http_req_t;

/* How many X-Forwarded-For entries are read at most, from the right. */
#define MW_FORWARDED_MAX_HOPS 32

typedef struct {
    const mw_acl_t *trusted; /* never empty while the walk goes on */
    mw_addr_t client;        /* the answer so far */
    unsigned hops;           /* entries read */
    int done;
} mw_forwarded_t;

/* Starts a walk from the peer. It is done at once (the client is the peer)
 * when trusted is empty or does not hold the peer. */
void mw_forwarded_init(mw_forwarded_t *f, const mw_acl_t *trusted, const mw_addr_t *peer);

/* Reads one X-Forwarded-For field value; a request's fields are fed from the
 * last to the first. Returns 1 once the walk is done (further values are
 * ignored), else 0. */
int mw_forwarded_feed(mw_forwarded_t *f, const char *value, size_t len);

/* Reads one address ("1.2.3.4", "::1", "1.2.3.4:80", "[::1]:80") into *out.
 * Returns 0 or MW_EINVAL. */
int mw_forwarded_parse_addr(const char *s, size_t len, mw_addr_t *out);

/* The client of a request that came from peer: the walk over every
 * X-Forwarded-For field, or X-Real-IP, or the peer. */
void mw_forwarded_client(const mw_acl_t *trusted, const mw_http_req_t *req, const mw_addr_t *peer,
                         mw_addr_t *out);

#endif
