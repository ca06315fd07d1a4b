/* The TCP transport of connections that net.c accepts, with TLS in between
 * on TLS listeners. */
#ifndef MOONWIRE_TCP_H
#define MOONWIRE_TCP_H

#include "addr.h"

#include <uv.h>

typedef struct mw_node_s mw_node_t;
typedef struct mw_tls_ctx_s mw_tls_ctx_t;

/* The size of the read buffer a loop's connections share. */
#define MW_TCP_READ_BUF (64 * 1024)

/* What the connections of one loop share (net.c owns it, and makes it the
 * loop's data: a connection finds it there rather than keeping a pointer). */
typedef struct {
    uv_loop_t *loop;
    mw_node_t *node; /* the node they are connections of */
    char *read_buf;  /* MW_TCP_READ_BUF bytes: libuv reads into it, the core consumes it at once */
} mw_tcp_env_t;

/* Serves fd, a socket just accepted from addr, as a connection of env's
 * node; over TLS with tls, or plain when it is NULL; for the server API
 * alone when api_only is set (an api.listen listener). Takes over fd in
 * every case: a connection that can not be made is closed. */
void mw_tcp_serve(mw_tcp_env_t *env, int fd, const mw_addr_t *addr, mw_tls_ctx_t *tls,
                  int api_only);

#endif
