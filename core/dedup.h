/* Which envelopes of each origin node this node has delivered already.
 *
 * A node numbers its envelopes 1, 2, 3... (mw_envelope_t.seq) and sends them
 * in that order over its one command connection; Redis delivers them to each
 * subscriber in the order it ran them. When a connection is lost with
 * commands in flight, the sender can not know which of them Redis ran, so it
 * sends them again (outbox.h): a receiver drops every envelope of an origin
 * whose number is not above the highest it has seen from that origin, and so
 * delivers each message once.
 *
 * Origins are node incarnations ("n1.k3x9a2"); one that has been silent for
 * a while is forgotten, and past max_origins the least recently heard goes.
 */
#ifndef MOONWIRE_DEDUP_H
#define MOONWIRE_DEDUP_H

#include "htab.h"
#include "list.h"

#include <stddef.h>
#include <stdint.h>

typedef struct mw_dedup_s {
    mw_htab_t origins;
    mw_list_t heard; /* least recently heard first */
    size_t max_origins;
} mw_dedup_t;

/* Returns 0 or MW_ENOMEM. */
int mw_dedup_init(mw_dedup_t *d, size_t max_origins);

/* Forgets every origin. */
void mw_dedup_free(mw_dedup_t *d);

/* Whether envelope seq of origin (at most 255 bytes) is new: 1, and it is
 * recorded as heard at now; or 0 when an envelope of that origin with this
 * number or a higher one was seen. seq 0 (not numbered) is always new and
 * not recorded. Out of memory, everything is new. */
int mw_dedup_check(mw_dedup_t *d, const char *origin, size_t len, uint64_t seq, uint64_t now);

/* Forgets the origins not heard for more than idle ms. Returns how many. */
size_t mw_dedup_expire(mw_dedup_t *d, uint64_t now, uint64_t idle);

#endif
