/* The libuv binding of a server: listeners, the TCP transport, and the
 * loop glue (the timer heap on one uv_timer, deferred work in prepare and
 * check, so frames are written once per loop turn).
 */
#ifndef MOONWIRE_NET_H
#define MOONWIRE_NET_H

#include <stddef.h>
#include <uv.h>

typedef struct mw_server_s mw_server_t;

/* Binds every configured listener and starts serving on loop. Returns 0, or
 * a libuv error code with a message naming the address in err (then run the
 * loop once to let the handles close, and call mw_net_free). */
int mw_net_start(mw_server_t *srv, uv_loop_t *loop, char *err, size_t errlen);

/* Re-reads the TLS certificate and key (SIGHUP). A bad new pair keeps the
 * old one (logged). Returns 0 or MW_ECONFIG. */
int mw_net_reload(mw_server_t *srv);

/* Stops accepting (closes the listeners); connections go on. */
void mw_net_stop_listening(mw_server_t *srv);

/* Closes every handle of the binding so the loop can end. Connections must
 * be gone (mw_server_drain). Safe to call from a loop callback. */
void mw_net_close(mw_server_t *srv);

/* Frees the binding, once uv_run has returned after mw_net_close. */
void mw_net_free(mw_server_t *srv);

#endif
