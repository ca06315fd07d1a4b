/* The libuv binding of a server: listeners, the TCP transport, and the
 * loop glue (the timer heap on one uv_timer, deferred work in prepare and
 * check, so frames are written once per loop turn).
 */
#ifndef MOONWIRE_NET_H
#define MOONWIRE_NET_H

#include <stddef.h>
#include <uv.h>

typedef struct mw_server_s mw_server_t;
typedef struct mw_net_s mw_net_t;

/* Binds every configured listener and starts serving srv on loop; *out is
 * the binding. Returns 0, or a libuv error code with a message naming the
 * address in err: then *out is set all the same unless it is UV_ENOMEM
 * (*out NULL); close it, run the loop once to let the handles close, and
 * free it. */
int mw_net_start(mw_server_t *srv, uv_loop_t *loop, mw_net_t **out, char *err, size_t errlen);

/* Re-reads the TLS certificate and key (SIGHUP). A bad new pair keeps the
 * old one (logged, counted). Returns 0, MW_ECONFIG or MW_ENOMEM. */
int mw_net_reload(mw_net_t *net);

/* Stops accepting (closes the listeners); connections go on. */
void mw_net_stop_listening(mw_net_t *net);

/* Closes every handle of the binding so the loop can end (NULL: nothing).
 * Connections must be gone (mw_server_drain). Safe from a loop callback. */
void mw_net_close(mw_net_t *net);

/* Frees the binding (NULL: nothing), once uv_run has returned after
 * mw_net_close. */
void mw_net_free(mw_net_t *net);

#endif
