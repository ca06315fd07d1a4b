/* libFuzzer harness: the client address behind trusted proxies
 * (forwarded.c), which any client reaches by sending X-Forwarded-For.
 *
 * The input is cut at newlines into X-Forwarded-For field values, fed from
 * the last to the first as the request router does; the first line is also
 * read alone as one address (X-Real-IP). Checked: the answer is always the
 * peer or an address the input names, and the walk reads at most
 * MW_FORWARDED_MAX_HOPS entries.
 */
#include "forwarded.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

static const char *const trusted_text[] = {"10.0.0.0/8", "fd00::/8", "127.0.0.1", "::1"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static mw_acl_t acl;
    static int ready;
    const char *lines[64];
    size_t lens[64], n = 0, start = 0, bad;
    mw_forwarded_t f;
    mw_addr_t peer, a;
    char *copy;

    if (!ready) {
        if (mw_acl_init(&acl, trusted_text, 4, &bad) != 0)
            abort();
        ready = 1;
    }
    /* A copy of exactly size bytes, so that reading past it is caught. */
    copy = malloc(size ? size : 1);
    if (copy == NULL)
        return 0;
    memcpy(copy, data, size);
    for (size_t i = 0; i <= size && n < 64; i++) {
        if (i == size || copy[i] == '\n') {
            lines[n] = copy + start;
            lens[n++] = i - start;
            start = i + 1;
        }
    }

    memset(&peer, 0, sizeof(peer));
    peer.in4.sin_family = AF_INET;
    inet_pton(AF_INET, "10.0.0.1", &peer.in4.sin_addr);
    mw_forwarded_init(&f, &acl, &peer);
    if (f.done)
        abort(); /* the peer is trusted */
    for (size_t i = n; i > 0 && !f.done; i--)
        mw_forwarded_feed(&f, lines[i - 1], lens[i - 1]);
    if (f.hops > MW_FORWARDED_MAX_HOPS + 1)
        abort();
    if (f.client.sa.sa_family != AF_INET && f.client.sa.sa_family != AF_INET6)
        abort();
    if (f.hops == 0 && memcmp(&f.client, &peer, sizeof(peer)) != 0)
        abort(); /* nothing read: still the peer */

    if (n > 0 && mw_forwarded_parse_addr(lines[0], lens[0], &a) == 0 &&
        a.sa.sa_family != AF_INET && a.sa.sa_family != AF_INET6)
        abort();
    free(copy);
    return 0;
}
