/* Topics: named sets of connections, and publishing to them.
 *
 * A subscription is one node in two lists (the topic's members and the
 * connection's topics) and in a hash keyed by (topic, connection), so
 * subscribe, unsubscribe and the membership test are O(1), and a closing
 * connection leaves all its topics in O(its topics). A topic exists while
 * it has members. Publishing serializes the frame once and queues a
 * reference to it on every member: no per-recipient copy, no Lua call.
 *
 * Both tables are bounded: at most max_topics topics with members on the
 * node (limits.max_topics) and max_subs topics per connection
 * (limits.max_subscriptions). A subscription past a bound is refused,
 * counted (mw_topics_take_stats) and logged, at most once a second.
 */
#ifndef MOONWIRE_TOPICS_H
#define MOONWIRE_TOPICS_H

#include "frame.h"
#include "htab.h"
#include "list.h"
#include "moonwire/log.h"

#include <stddef.h>
#include <stdint.h>

typedef struct mw_conn_s mw_conn_t;
typedef struct mw_topic_s mw_topic_t;
typedef struct mw_sub_s mw_sub_t;
typedef struct mw_history_s mw_history_t;

#define MW_TOPIC_MAX 256 /* bytes in a topic name */

struct mw_topic_s {
    mw_hnode_t node; /* in mw_topics_t.topics, by name */
    mw_list_t members; /* mw_sub_t.topic_link */
    size_t count;
    size_t len;
    char name[]; /* NUL-terminated */
};

struct mw_sub_s {
    mw_topic_t *topic;
    mw_conn_t *conn;
    mw_list_t topic_link;
    mw_list_t conn_link; /* in conn->subs */
    mw_hnode_t node;     /* in mw_topics_t.subs, by (topic, conn) */
    char *presence;      /* what moonwire.presence shows for this member, or NULL */
    size_t presence_len;
};

/* Subscriptions refused, by bound. */
typedef struct {
    uint64_t refused_topics; /* a new topic past max_topics */
    uint64_t refused_subs;   /* a connection past max_subs */
} mw_topics_stats_t;

typedef struct mw_topics_s {
    mw_htab_t topics; /* name -> mw_topic_t */
    mw_htab_t subs;   /* (topic, conn) -> mw_sub_t */
    size_t max_topics; /* topics with members at once; 0: no bound */
    size_t max_subs;   /* topics per connection; 0: no bound */
    /* The node's in-memory history, told when a topic gets its first member
     * and loses its last (the history of an empty topic goes first when
     * history is at its bounds). May be NULL. */
    mw_history_t *history;
    mw_topics_stats_t stats; /* since the last mw_topics_take_stats */
    mw_log_gate_t refusal_log;
    /* Called when a topic gets its first member and loses its last (the
     * cluster backplane subscribes and unsubscribes there). May be NULL. */
    void (*on_first)(void *ud, const mw_topic_t *t);
    void (*on_last)(void *ud, const mw_topic_t *t);
    /* A member's presence info was set (info != NULL) or removed. May be NULL. */
    void (*on_presence)(void *ud, const mw_topic_t *t, const mw_conn_t *c, const char *info,
                        size_t len);
    void *ud;
} mw_topics_t;

/* Returns 0 or MW_ENOMEM. */
int mw_topics_init(mw_topics_t *ts);
void mw_topics_close(mw_topics_t *ts);

/* Finds a topic by name, or NULL when it has no members. */
mw_topic_t *mw_topics_find(const mw_topics_t *ts, const char *name, size_t len);

/* Every topic in turn: the first with prev NULL, then the one after prev,
 * NULL after the last (in no particular order). */
const mw_topic_t *mw_topics_next(const mw_topics_t *ts, const mw_topic_t *prev);

/* Subscribes c. Returns 1 when newly subscribed, 0 when it already was, or
 * MW_EINVAL (empty or too long a name), MW_ESUBS (c is in max_subs topics),
 * MW_ETOPICS (a new topic, and max_topics have members) or MW_ENOMEM. */
int mw_topics_subscribe(mw_topics_t *ts, mw_conn_t *c, const char *name, size_t len);

/* Sets (info != NULL) or clears c's presence info in a topic it is subscribed
 * to. Returns 0, MW_ENOTFOUND (not subscribed) or MW_ENOMEM. */
int mw_topics_set_presence(mw_topics_t *ts, mw_conn_t *c, const char *name, size_t len,
                           const char *info, size_t info_len);

/* Unsubscribes c. Returns 1 when it was subscribed, 0 when not. */
int mw_topics_unsubscribe(mw_topics_t *ts, mw_conn_t *c, const char *name, size_t len);

/* Removes every subscription of c (when it closes). */
void mw_topics_drop_conn(mw_topics_t *ts, mw_conn_t *c);

/* Queues f to every open member of the topic except `except` (may be NULL),
 * through mw_conn_send (so the backpressure policy applies). Returns how many
 * queues took it. */
size_t mw_topics_publish(mw_topics_t *ts, const char *name, size_t len, mw_frame_t *f,
                         const mw_conn_t *except);

/* Copies the refusals counted since the last call into out, and starts again from 0. */
void mw_topics_take_stats(mw_topics_t *ts, mw_topics_stats_t *out);

/* Members of a topic (0 when it does not exist). */
size_t mw_topics_count(const mw_topics_t *ts, const char *name, size_t len);

#endif
