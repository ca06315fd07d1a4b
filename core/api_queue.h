/* The queue in: the nodes of a cluster consume the server API's commands
 * from one Redis stream in one consumer group (api_queue.c).
 */
#ifndef MOONWIRE_API_QUEUE_H
#define MOONWIRE_API_QUEUE_H

#include "redis_link.h"

#include <stddef.h>

typedef struct mw_node_s mw_node_t;
typedef struct mw_queue_s mw_queue_t;

/* Starts consuming queue.stream when the node has a backplane (and the
 * stream is not ""), on a connection of its own made by the backplane's
 * driver (redis_link.h); *out is NULL otherwise. Returns 0, MW_ENOMEM, or
 * MW_ECONFIG with err set. */
int mw_queue_start(mw_node_t *node, const mw_redis_driver_t *driver, void *drv, mw_queue_t **out,
                   char *err, size_t errlen);

/* Stops consuming (NULL: nothing): entries being applied finish unacknowledged
 * (another node claims them after queue.claim_after); the memory goes once
 * they are done. Call before the backplane stops. */
void mw_queue_stop(mw_queue_t *q);

#endif
