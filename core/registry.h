/* The connection registry: the open connections of this node, found by id
 * (id.h) or serial, in the list that broadcast walks.
 */
#ifndef MOONWIRE_REGISTRY_H
#define MOONWIRE_REGISTRY_H

#include "id.h"
#include "list.h"

#include <stddef.h>
#include <stdint.h>

typedef struct mw_conn_s mw_conn_t;

typedef struct mw_registry_s {
    mw_ids_t ids; /* the ids this node hands out */
    /* serial -> conn, open addressing with linear probing */
    mw_conn_t **slots;
    size_t cap; /* a power of two */
    size_t count;
    mw_list_t open; /* connections in MW_CONN_OPEN and CLOSING, in open order */
    size_t nopen;
} mw_registry_t;

/* Sets up the registry and the ids of a node (see mw_ids_init: incarnation
 * NULL draws a random one). Returns 0, MW_EINVAL (a node id too long) or
 * MW_ENOMEM. */
int mw_registry_init(mw_registry_t *reg, const char *node_id, const char *incarnation);

/* Frees the table. The connections are not the registry's. */
void mw_registry_close(mw_registry_t *reg);

/* Makes c findable by its id and adds it to the open list. Returns 0 or MW_ENOMEM. */
int mw_registry_add(mw_registry_t *reg, mw_conn_t *c);

/* Removes c (no-op when absent). */
void mw_registry_remove(mw_registry_t *reg, mw_conn_t *c);

/* Finds an open connection of this node by id. Returns NULL when the id is
 * unknown, closed, or belongs to another node. */
mw_conn_t *mw_registry_find(const mw_registry_t *reg, const char *id, size_t len);

/* Finds an open connection of this node by its serial, or NULL. */
mw_conn_t *mw_registry_find_serial(const mw_registry_t *reg, uint64_t serial);

#endif
