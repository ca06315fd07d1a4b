/* What the server does with a complete HTTP request: built-in endpoints,
 * static files, the WebSocket upgrade (checks, origin, on_upgrade, 101), or
 * a refusal.
 */
#ifndef MOONWIRE_HANDSHAKE_H
#define MOONWIRE_HANDSHAKE_H

#include <stddef.h>

typedef struct mw_conn_s mw_conn_t;

/* Answers the complete request in c->http (the connections' on_request).
 * On an upgrade, c is OPEN after. */
void mw_handshake_request(mw_conn_t *c);

/* True when the path matches one of the patterns: an exact path ("/chat"), or
 * a prefix ending in a star ("/chat/" followed by "*"; "/" and "*" for any path). */
int mw_handshake_path_matches(const char *const *patterns, size_t n, const char *path, size_t len);

#endif
