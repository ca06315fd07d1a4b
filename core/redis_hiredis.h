/* The server's Redis driver: hiredis's asynchronous API on the node's libuv
 * loop, with our own poll glue (a refused connect is seen at once, not at
 * the connect timeout). See redis_link.h for what a driver does.
 */
#ifndef MOONWIRE_REDIS_HIREDIS_H
#define MOONWIRE_REDIS_HIREDIS_H

#include "redis_link.h"

/* The driver: its drv is the uv_loop_t * the links run on. */
extern const mw_redis_driver_t mw_redis_hiredis;

#endif
