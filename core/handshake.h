/* What the server does with a complete HTTP request: built-in endpoints,
 * the WebSocket upgrade (checks, origin, on_upgrade, 101), or a refusal.
 */
#ifndef MOONWIRE_HANDSHAKE_H
#define MOONWIRE_HANDSHAKE_H

#include <stddef.h>

typedef struct mw_conn_s mw_conn_t;

/* Answers the complete request in c->http. On an upgrade, c is OPEN after. */
void mw_handshake_request(mw_conn_t *c);

/* Answers a request that could not be parsed: err is MW_ETOOBIG (431),
 * MW_EPROTO (400) or MW_ENOMEM (503). */
void mw_handshake_refuse_bad(mw_conn_t *c, int err);

/* Refuses with status and a one-line reason (the body), then closes. */
void mw_handshake_refuse(mw_conn_t *c, int status, const char *why, const char *extra_headers);

/* True when the path matches one of the patterns: an exact path ("/chat"), or
 * a prefix ending in a star ("/chat/" followed by "*"; "/" and "*" for any path). */
int mw_handshake_path_matches(const char *const *patterns, size_t n, const char *path, size_t len);

#endif
