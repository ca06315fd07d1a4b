/* Topic history for clients that reconnect: offsets, epochs, recovery.
 *
 * Topics matching history.topics number their messages 1, 2, 3... within an
 * epoch. When history.field is set, a JSON-object text message gets
 * "<field>":<offset> and "epoch":"<epoch>" put in front of its first key, so
 * every client learns where it is. A client that comes back asks for what
 * came after its offset; if its epoch is the current one and the messages
 * after its offset are still kept, it gets exactly those (recovered),
 * otherwise the latest ones and recovered = false.
 *
 * This file keeps history in the node's memory (standalone: an epoch is the
 * node's incarnation and the topic's start, so a restart, or a topic whose
 * history expired, starts a new one). With a backplane,
 * cluster.c keeps it in Redis streams instead, with the same rules.
 */
#ifndef MOONWIRE_HISTORY_H
#define MOONWIRE_HISTORY_H

#include "moonwire/config.h"
#include "moonwire/frame.h"

#include <stddef.h>
#include <stdint.h>

typedef struct mw_history_s mw_history_t;

/* True when a topic keeps history (history.topics: names, or prefixes ending in *). */
int mw_history_enabled(const mw_config_t *cfg, const char *topic, size_t len);

/* Writes payload with the offset and epoch fields put in front, when the
 * field is configured and payload is a JSON object (text starting with '{').
 * Returns a malloc'ed buffer (*out_len set), or NULL when nothing is injected. */
uint8_t *mw_history_inject(const char *field, uint64_t offset, const char *epoch,
                           const uint8_t *payload, size_t len, size_t *out_len);

int mw_history_new(mw_history_t **out, const char *epoch);
void mw_history_free(mw_history_t *h);

/* The offset and epoch the topic's next message gets (starting the topic, with
 * a new epoch, when it has no history). Returns 0 or MW_ENOMEM. */
int mw_history_begin(mw_history_t *h, const char *topic, size_t len, uint64_t *offset,
                     const char **epoch);

/* Appends a message (a text or binary frame, payload already final) as the
 * offset mw_history_begin gave; takes a reference. Returns 0 or MW_ENOMEM.
 * now and cfg give the bounds (history.size, history.ttl). */
int mw_history_append(mw_history_t *h, const char *topic, size_t len, uint64_t offset,
                      mw_frame_t *f, const mw_config_t *cfg, uint64_t now);

/* Reads what came after `since` (0: the latest `limit`). Calls each(ud, frame)
 * for each message in order; sets *last (the newest offset, 0 for none),
 * *recovered (1 when since and epoch were still covered: the client missed
 * nothing else). epoch NULL means the client did not say. */
void mw_history_read(mw_history_t *h, const char *topic, size_t len, uint64_t since,
                     const char *epoch, size_t limit, uint64_t now, const mw_config_t *cfg,
                     void (*each)(void *ud, const mw_frame_t *f), void *ud, uint64_t *last,
                     int *recovered);

/* A topic's epoch: the node's incarnation and which start of the topic this
 * is; "" for a topic without history (as in Redis). */
const char *mw_history_epoch(const mw_history_t *h, const char *topic, size_t len);

/* Drops the history of topics silent for longer than history.ttl (the
 * server's sweep calls it). */
void mw_history_expire(mw_history_t *h, const mw_config_t *cfg, uint64_t now);

#endif
