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
 *
 * What it keeps is bounded: history.size messages per topic,
 * history.max_topics topics and history.max_bytes bytes (entries, rings and
 * the frames they hold). Topics with members ("live") and without ("idle")
 * sit in two lists, least recently touched first (a message, or a topic
 * gaining its first member or losing its last, touches it). Past a bound the
 * history of idle topics goes first, least recently touched first; then,
 * for bytes, the oldest messages of live topics. Only what can not be made
 * room for is refused: a new topic when max_topics topics are all live
 * (MW_EHISTTOPICS), a message larger than max_bytes (MW_EHISTSIZE). A
 * topic's history also goes history.ttl after it was last touched.
 */
#ifndef MOONWIRE_HISTORY_H
#define MOONWIRE_HISTORY_H

#include "frame.h"
#include "moonwire/config.h"
#include "moonwire/log.h"

#include <stddef.h>
#include <stdint.h>

typedef struct mw_history_s mw_history_t;

/* What the bounds did, counted since the last mw_history_take_stats. */
typedef struct {
    uint64_t refused_topics;  /* a new topic refused: max_topics topics, all live */
    uint64_t refused_size;    /* a message refused: larger than max_bytes */
    uint64_t dropped_bound;   /* histories of idle topics dropped to make room */
    uint64_t dropped_ttl;     /* histories dropped history.ttl after their last touch */
    uint64_t dropped_memory;  /* histories of idle topics dropped when memory ran out */
    uint64_t trimmed;         /* messages of live topics dropped to stay within max_bytes */
} mw_history_stats_t;

/* True when a topic keeps history (history.topics: names, or prefixes ending in *). */
int mw_history_enabled(const mw_config_t *cfg, const char *topic, size_t len);

/* Writes payload with the offset and epoch fields put in front, when the
 * field is configured and payload is a JSON object (text starting with '{').
 * Returns a malloc'ed buffer (*out_len set), or NULL when nothing is injected. */
uint8_t *mw_history_inject(const char *field, uint64_t offset, const char *epoch,
                           const uint8_t *payload, size_t len, size_t *out_len);

/* Makes an empty store whose offsets carry epoch. Returns 0 or MW_ENOMEM. */
int mw_history_new(mw_history_t **out, const char *epoch);
void mw_history_free(mw_history_t *h);

/* The offset and epoch the topic's next message gets, starting the topic
 * (with a new epoch) when it has no history; live tells whether the topic
 * has members now. A new topic past history.max_topics first drops the
 * history of the least recently touched idle topic. Returns 0, or
 * MW_EHISTTOPICS (max_topics topics, all live) or MW_ENOMEM. */
int mw_history_begin(mw_history_t *h, const char *topic, size_t len, int live,
                     const mw_config_t *cfg, uint64_t now, uint64_t *offset, const char **epoch);

/* Appends a message (a text or binary frame, payload already final) as the
 * offset mw_history_begin gave; takes a reference. Makes room within
 * history.size and history.max_bytes as the file comment says. Returns 0,
 * MW_EHISTSIZE (the message alone is larger than max_bytes) or MW_ENOMEM;
 * on failure a topic that never had a message is forgotten again. */
int mw_history_append(mw_history_t *h, const char *topic, size_t len, uint64_t offset,
                      mw_frame_t *f, const mw_config_t *cfg, uint64_t now);

/* The topic gained its first member (live 1) or lost its last (live 0). */
void mw_history_set_live(mw_history_t *h, const char *topic, size_t len, int live);

/* Drops the history of every idle topic (memory ran out somewhere).
 * Returns the bytes it gave back. */
size_t mw_history_drop_idle(mw_history_t *h);

/* Topics with history, and the bytes they hold (with their entries and rings). */
size_t mw_history_topics(const mw_history_t *h);
size_t mw_history_bytes(const mw_history_t *h);

/* Copies what was counted since the last call into out, and starts again from 0. */
void mw_history_take_stats(mw_history_t *h, mw_history_stats_t *out);

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

/* Drops the history of topics not touched for longer than history.ttl, and
 * what passes the bounds after a reload lowered them (the server's sweep
 * calls it): O(what it drops). */
void mw_history_expire(mw_history_t *h, const mw_config_t *cfg, uint64_t now);

#endif
