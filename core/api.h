/* The server HTTP API: POST /api/METHOD with a JSON body and the API key,
 * answered with JSON (api.c). The methods themselves are api_methods.h's.
 */
#ifndef MOONWIRE_API_H
#define MOONWIRE_API_H

#include <stddef.h>

typedef struct mw_conn_s mw_conn_t;

/* Takes the complete request in c->http when it is the API's (the API is on
 * and the path starts with /api/): answers it, now or once the method has
 * run. Returns 1 when it took it, 0 when the request is not the API's. */
int mw_api_request(mw_conn_t *c, const char *path, size_t len);

/* c is being released: an answer still to come for it goes nowhere. */
void mw_api_forget(mw_conn_t *c);

/* c's method still runs and its client waits no longer: answered status
 * (504 past limits.close_timeout, 503 at the end of a drain) with message
 * and the extra header lines (may be NULL), as JSON, counted and logged;
 * the method's late answer goes nowhere. Nothing when none runs. */
void mw_api_give_up(mw_conn_t *c, int status, const char *message, const char *extra);

#endif
