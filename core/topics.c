/* Topics and their subscriptions. See topics.h. */
#include "topics.h"
#include "conn.h"
#include "history.h"
#include "moonwire/error.h"

#include <stdlib.h>
#include <string.h>

static uint64_t hash_pair(const mw_topic_t *t, const mw_conn_t *c)
{
    uint64_t h = ((uintptr_t)t >> 4) * 0x9E3779B97F4A7C15ULL ^ c->serial * 0xC2B2AE3D27D4EB4FULL;
    return h ^ (h >> 29);
}

#define TOPIC_OF(n) MW_CONTAINER_OF(n, mw_topic_t, node)
#define SUB_OF(n) MW_CONTAINER_OF(n, mw_sub_t, node)

int mw_topics_init(mw_topics_t *ts)
{
    memset(ts, 0, sizeof(*ts));
    if (mw_htab_init(&ts->topics, 256) != 0 || mw_htab_init(&ts->subs, 1024) != 0) {
        mw_topics_close(ts);
        return MW_ENOMEM;
    }
    return 0;
}

void mw_topics_close(mw_topics_t *ts)
{
    mw_hnode_t *n, *next;

    /* Connections drop their subscriptions when released; what is left here
     * belongs to nobody. */
    for (n = mw_htab_next(&ts->topics, NULL); n != NULL; n = next) {
        mw_topic_t *t = TOPIC_OF(n);
        next = mw_htab_next(&ts->topics, n);
        while (!mw_list_empty(&t->members)) {
            mw_sub_t *s = MW_CONTAINER_OF(t->members.next, mw_sub_t, topic_link);
            mw_list_remove(&s->topic_link);
            mw_list_remove(&s->conn_link);
            free(s->presence);
            free(s);
        }
        free(t);
    }
    mw_htab_free(&ts->topics);
    mw_htab_free(&ts->subs);
}

mw_topic_t *mw_topics_find(const mw_topics_t *ts, const char *name, size_t len)
{
    uint64_t h = mw_hash_bytes(name, len);
    for (mw_hnode_t *n = mw_htab_chain(&ts->topics, h); n != NULL; n = n->next) {
        mw_topic_t *t = TOPIC_OF(n);
        if (n->hash == h && t->len == len && memcmp(t->name, name, len) == 0)
            return t;
    }
    return NULL;
}

const mw_topic_t *mw_topics_next(const mw_topics_t *ts, const mw_topic_t *prev)
{
    const mw_hnode_t *n = mw_htab_next(&ts->topics, prev != NULL ? &prev->node : NULL);
    return n != NULL ? TOPIC_OF(n) : NULL;
}

static mw_sub_t *find_sub(const mw_topics_t *ts, const mw_topic_t *t, const mw_conn_t *c)
{
    for (mw_hnode_t *n = mw_htab_chain(&ts->subs, hash_pair(t, c)); n != NULL; n = n->next)
        if (SUB_OF(n)->topic == t && SUB_OF(n)->conn == c)
            return SUB_OF(n);
    return NULL;
}

static void remove_topic(mw_topics_t *ts, mw_topic_t *t)
{
    mw_htab_remove(&ts->topics, &t->node);
    if (ts->on_last != NULL)
        ts->on_last(ts->ud, t);
    if (ts->history != NULL)
        mw_history_set_live(ts->history, t->name, t->len, 0);
    free(t);
}

/* Counts and logs (at most once a second) a subscription past a bound. */
static int refuse(mw_topics_t *ts, const mw_conn_t *c, int why)
{
    uint64_t held_back;
    char id[MW_ID_MAX], addr[64], more[64];

    if (why == MW_ETOPICS)
        ts->stats.refused_topics++;
    else
        ts->stats.refused_subs++;
    if (mw_log_gate_pass(&ts->refusal_log, 1000, &held_back)) {
        mw_conn_id(c, id);
        mw_conn_addr(c, addr, sizeof(addr));
        mw_log_warn("topics: refused a subscription of %s (%s): %s (%zu) reached%s", id, addr,
                    why == MW_ETOPICS ? "limits.max_topics" : "limits.max_subscriptions",
                    why == MW_ETOPICS ? ts->max_topics : ts->max_subs,
                    mw_log_held_back(held_back, more, sizeof(more)));
    }
    return why;
}

int mw_topics_subscribe(mw_topics_t *ts, mw_conn_t *c, const char *name, size_t len)
{
    mw_topic_t *t;
    mw_sub_t *s;
    int created = 0;

    if (len == 0 || len > MW_TOPIC_MAX)
        return MW_EINVAL;
    t = mw_topics_find(ts, name, len);
    if (t != NULL && find_sub(ts, t, c) != NULL)
        return 0;
    if (ts->max_subs != 0 && c->nsubs >= ts->max_subs)
        return refuse(ts, c, MW_ESUBS);
    if (t == NULL && ts->max_topics != 0 && ts->topics.count >= ts->max_topics)
        return refuse(ts, c, MW_ETOPICS);
    if (t == NULL) {
        t = malloc(sizeof(*t) + len + 1);
        if (t == NULL)
            return MW_ENOMEM;
        t->len = len;
        memcpy(t->name, name, len);
        t->name[len] = '\0';
        mw_list_init(&t->members);
        t->count = 0;
        mw_htab_insert(&ts->topics, &t->node, mw_hash_bytes(name, len));
        created = 1;
    }
    s = malloc(sizeof(*s));
    if (s == NULL) {
        if (created)
            remove_topic(ts, t);
        return MW_ENOMEM;
    }
    s->topic = t;
    s->conn = c;
    s->presence = NULL;
    s->presence_len = 0;
    mw_list_insert_tail(&t->members, &s->topic_link);
    mw_list_insert_tail(&c->subs, &s->conn_link);
    mw_htab_insert(&ts->subs, &s->node, hash_pair(t, c));
    t->count++;
    c->nsubs++;
    if (created && ts->on_first != NULL)
        ts->on_first(ts->ud, t);
    if (created && ts->history != NULL)
        mw_history_set_live(ts->history, name, len, 1);
    return 1;
}

int mw_topics_set_presence(mw_topics_t *ts, mw_conn_t *c, const char *name, size_t len,
                           const char *info, size_t info_len)
{
    mw_topic_t *t = mw_topics_find(ts, name, len);
    mw_sub_t *s;
    char *copy = NULL;

    if (t == NULL || (s = find_sub(ts, t, c)) == NULL)
        return MW_ENOTFOUND;
    if (info != NULL) {
        copy = malloc(info_len + 1);
        if (copy == NULL)
            return MW_ENOMEM;
        memcpy(copy, info, info_len);
        copy[info_len] = '\0';
    } else if (s->presence == NULL) {
        return 0;
    }
    free(s->presence);
    s->presence = copy;
    s->presence_len = info_len;
    if (ts->on_presence != NULL)
        ts->on_presence(ts->ud, t, c, copy, info_len);
    return 0;
}

static void remove_sub(mw_topics_t *ts, mw_sub_t *s)
{
    mw_topic_t *t = s->topic;

    if (s->presence != NULL) {
        if (ts->on_presence != NULL)
            ts->on_presence(ts->ud, t, s->conn, NULL, 0);
        free(s->presence);
    }
    mw_htab_remove(&ts->subs, &s->node);
    mw_list_remove(&s->topic_link);
    mw_list_remove(&s->conn_link);
    s->conn->nsubs--;
    free(s);
    if (--t->count == 0)
        remove_topic(ts, t);
}

int mw_topics_unsubscribe(mw_topics_t *ts, mw_conn_t *c, const char *name, size_t len)
{
    mw_topic_t *t = mw_topics_find(ts, name, len);
    mw_sub_t *s;

    if (t == NULL || (s = find_sub(ts, t, c)) == NULL)
        return 0;
    remove_sub(ts, s);
    return 1;
}

void mw_topics_drop_conn(mw_topics_t *ts, mw_conn_t *c)
{
    while (!mw_list_empty(&c->subs)) {
        mw_sub_t *s = MW_CONTAINER_OF(c->subs.next, mw_sub_t, conn_link);
        remove_sub(ts, s);
    }
}

size_t mw_topics_publish(mw_topics_t *ts, const char *name, size_t len, mw_frame_t *f,
                         const mw_conn_t *except)
{
    mw_topic_t *t = mw_topics_find(ts, name, len);
    mw_list_t *it;
    size_t n = 0;

    if (t == NULL)
        return 0;
    /* mw_conn_send never unsubscribes (a closed connection leaves its topics
     * at the end of the loop turn), so the member list holds still here. */
    mw_list_foreach(it, &t->members)
    {
        mw_sub_t *s = MW_CONTAINER_OF(it, mw_sub_t, topic_link);
        if (s->conn != except && mw_conn_send(s->conn, f) == 0)
            n++;
    }
    return n;
}

void mw_topics_take_stats(mw_topics_t *ts, mw_topics_stats_t *out)
{
    *out = ts->stats;
    memset(&ts->stats, 0, sizeof(ts->stats));
}

size_t mw_topics_count(const mw_topics_t *ts, const char *name, size_t len)
{
    const mw_topic_t *t = mw_topics_find(ts, name, len);
    return t != NULL ? t->count : 0;
}
