/* on_request: the app answers plain HTTP requests of its own (webhooks,
 * small endpoints) that no other part of the server takes (api_request.c).
 */
#ifndef MOONWIRE_API_REQUEST_H
#define MOONWIRE_API_REQUEST_H

typedef struct mw_conn_s mw_conn_t;

/* Runs the app's on_request for the complete request in c->http, when the
 * app has one: the reply follows, now or once the hook has finished
 * (it may wait). Returns 1 when it took the request, 0 when the app has no
 * on_request. */
int mw_hook_request(mw_conn_t *c);

/* 1 when the app has an on_request hook (mw_hook_request would take a
 * request), else 0. */
int mw_hook_request_defined(const mw_conn_t *c);

/* c is being released: a reply still to come for it goes nowhere. */
void mw_hook_request_forget(mw_conn_t *c);

/* c's on_request still runs and its client waits no longer: answered
 * status (504 past limits.close_timeout, 503 at the end of a drain) with
 * why and the extra header lines (may be NULL), logged at most once a
 * second; the hook's late reply goes nowhere. Nothing when none runs. */
void mw_hook_request_give_up(mw_conn_t *c, int status, const char *why, const char *extra);

#endif
