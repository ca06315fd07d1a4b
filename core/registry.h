/* The connection registry: ids, lookup by id, and the list of open
 * connections that broadcast walks.
 *
 * An id is "<node>.<incarnation>.<serial>": the node id from the
 * configuration, a random tag drawn when the process starts (so a restarted
 * node never hands out an id it gave before), and a counter. Stored
 * references and cross-node sends use ids, never pointers.
 */
#ifndef MOONWIRE_REGISTRY_H
#define MOONWIRE_REGISTRY_H

#include "list.h"

#include <stddef.h>
#include <stdint.h>

typedef struct mw_conn_s mw_conn_t;

typedef struct mw_registry_s {
    char prefix[48]; /* "<node>.<incarnation>." */
    size_t prefix_len;
    uint64_t next_serial;
    /* serial -> conn, open addressing with linear probing */
    mw_conn_t **slots;
    size_t cap; /* a power of two */
    size_t count;
    mw_list_t open; /* connections in MW_CONN_OPEN and CLOSING, in open order */
    size_t nopen;
} mw_registry_t;

/* Sets up the registry for a node. incarnation NULL draws a random one.
 * Returns 0 or MW_ENOMEM. */
int mw_registry_init(mw_registry_t *reg, const char *node_id, const char *incarnation);
void mw_registry_close(mw_registry_t *reg);

/* Gives c its serial. Never fails; ids are assigned at accept. */
uint64_t mw_registry_next_serial(mw_registry_t *reg);

/* Makes c findable by its id and adds it to the open list. Returns 0 or MW_ENOMEM. */
int mw_registry_add(mw_registry_t *reg, mw_conn_t *c);

/* Removes c (no-op when absent). */
void mw_registry_remove(mw_registry_t *reg, mw_conn_t *c);

/* Finds an open connection of this node by id. Returns NULL when the id is
 * unknown, closed, or belongs to another node. */
mw_conn_t *mw_registry_find(const mw_registry_t *reg, const char *id, size_t len);

/* Finds an open connection of this node by its serial, or NULL. */
mw_conn_t *mw_registry_find_serial(const mw_registry_t *reg, uint64_t serial);

/* True when id is spelled like a connection id ("node.incarnation.serial"). */
int mw_registry_id_valid(const char *id, size_t len);

/* True when the id was issued by this node (open or not). */
int mw_registry_is_local(const mw_registry_t *reg, const char *id, size_t len);

#endif
