/* Connection ids: "<node>.<incarnation>.<serial>".
 *
 * The node id comes from the configuration, the incarnation is a random tag
 * drawn when the process starts (so a restarted node never hands out an id
 * it gave before), and serials count up from 1 and are never reused. Stored
 * references and cross-node sends use ids, never pointers; the registry
 * (registry.h) finds the open connection an id names.
 */
#ifndef MOONWIRE_ID_H
#define MOONWIRE_ID_H

#include <stddef.h>
#include <stdint.h>

/* The longest id, with its NUL. */
#define MW_ID_MAX 64

typedef struct mw_ids_s {
    char prefix[48]; /* "<node>.<incarnation>." */
    size_t prefix_len;
    uint64_t next_serial;
} mw_ids_t;

/* Sets up the ids of a node (node_id NULL: "mw"). incarnation NULL draws a
 * random one. Returns 0, or MW_EINVAL when the prefix would be longer than
 * 47 bytes. */
int mw_ids_init(mw_ids_t *ids, const char *node_id, const char *incarnation);

/* The next serial: 1, 2, 3... Never fails. */
static inline uint64_t mw_ids_next(mw_ids_t *ids)
{
    return ids->next_serial++;
}

/* Writes the id of serial into out (MW_ID_MAX bytes, NUL-terminated).
 * Returns its length. */
size_t mw_ids_format(const mw_ids_t *ids, uint64_t serial, char *out);

/* The serial of an id this node issued, spelled exactly as it spells it (no
 * leading zeros, no overflow); 0 when it is not one. */
uint64_t mw_ids_serial(const mw_ids_t *ids, const char *id, size_t len);

/* True when id is spelled like a connection id ("node.incarnation.serial"),
 * of any node. */
int mw_ids_valid(const char *id, size_t len);

/* True when the id was issued by this node incarnation (open or not). */
int mw_ids_is_local(const mw_ids_t *ids, const char *id, size_t len);

#endif
