/* Topics and their subscriptions. See topics.h. */
#include "moonwire/topics.h"
#include "moonwire/conn.h"
#include "moonwire/error.h"

#include <stdlib.h>
#include <string.h>

/* FNV-1a: short topic names, no adversarial control over table sizes that
 * matter (chains are bounded by the resize). */
static uint64_t hash_name(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static size_t hash_pair(const mw_topic_t *t, const mw_conn_t *c, size_t n)
{
    uint64_t h = ((uintptr_t)t >> 4) * 0x9E3779B97F4A7C15ULL ^ c->serial * 0xC2B2AE3D27D4EB4FULL;
    return (size_t)(h ^ (h >> 29)) & (n - 1);
}

int mw_topics_init(mw_topics_t *ts)
{
    memset(ts, 0, sizeof(*ts));
    ts->nbuckets = 256;
    ts->nsubbuckets = 1024;
    ts->buckets = calloc(ts->nbuckets, sizeof(*ts->buckets));
    ts->subs = calloc(ts->nsubbuckets, sizeof(*ts->subs));
    if (ts->buckets == NULL || ts->subs == NULL) {
        mw_topics_close(ts);
        return MW_ENOMEM;
    }
    return 0;
}

void mw_topics_close(mw_topics_t *ts)
{
    /* Connections drop their subscriptions when released; what is left here
     * belongs to nobody. */
    for (size_t i = 0; ts->buckets != NULL && i < ts->nbuckets; i++) {
        mw_topic_t *t = ts->buckets[i];
        while (t != NULL) {
            mw_topic_t *next = t->next;
            while (!mw_list_empty(&t->members)) {
                mw_sub_t *s = MW_CONTAINER_OF(t->members.next, mw_sub_t, topic_link);
                mw_list_remove(&s->topic_link);
                mw_list_remove(&s->conn_link);
                free(s->presence);
                free(s);
            }
            free(t);
            t = next;
        }
    }
    free(ts->buckets);
    free(ts->subs);
    ts->buckets = NULL;
    ts->subs = NULL;
}

mw_topic_t *mw_topics_find(const mw_topics_t *ts, const char *name, size_t len)
{
    uint64_t h = hash_name(name, len);
    for (mw_topic_t *t = ts->buckets[h & (ts->nbuckets - 1)]; t != NULL; t = t->next)
        if (t->hash == h && t->len == len && memcmp(t->name, name, len) == 0)
            return t;
    return NULL;
}

static void grow_topics(mw_topics_t *ts)
{
    size_t n = ts->nbuckets * 2;
    mw_topic_t **b = calloc(n, sizeof(*b));
    if (b == NULL)
        return; /* chains just get longer */
    for (size_t i = 0; i < ts->nbuckets; i++) {
        mw_topic_t *t = ts->buckets[i];
        while (t != NULL) {
            mw_topic_t *next = t->next;
            t->next = b[t->hash & (n - 1)];
            b[t->hash & (n - 1)] = t;
            t = next;
        }
    }
    free(ts->buckets);
    ts->buckets = b;
    ts->nbuckets = n;
}

static void grow_subs(mw_topics_t *ts)
{
    size_t n = ts->nsubbuckets * 2;
    mw_sub_t **b = calloc(n, sizeof(*b));
    if (b == NULL)
        return;
    for (size_t i = 0; i < ts->nsubbuckets; i++) {
        mw_sub_t *s = ts->subs[i];
        while (s != NULL) {
            mw_sub_t *next = s->next;
            size_t j = hash_pair(s->topic, s->conn, n);
            s->next = b[j];
            b[j] = s;
            s = next;
        }
    }
    free(ts->subs);
    ts->subs = b;
    ts->nsubbuckets = n;
}

static mw_sub_t **find_sub(mw_topics_t *ts, const mw_topic_t *t, const mw_conn_t *c)
{
    mw_sub_t **p = &ts->subs[hash_pair(t, c, ts->nsubbuckets)];
    while (*p != NULL && ((*p)->topic != t || (*p)->conn != c))
        p = &(*p)->next;
    return p;
}

static void remove_topic(mw_topics_t *ts, mw_topic_t *t)
{
    mw_topic_t **p = &ts->buckets[t->hash & (ts->nbuckets - 1)];
    while (*p != t)
        p = &(*p)->next;
    *p = t->next;
    ts->ntopics--;
    if (ts->on_last != NULL)
        ts->on_last(ts->ud, t);
    free(t);
}

int mw_topics_subscribe(mw_topics_t *ts, mw_conn_t *c, const char *name, size_t len)
{
    mw_topic_t *t;
    mw_sub_t *s, **slot;
    int created = 0;

    if (len == 0 || len > MW_TOPIC_MAX)
        return MW_EINVAL;
    t = mw_topics_find(ts, name, len);
    if (t == NULL) {
        t = malloc(sizeof(*t) + len + 1);
        if (t == NULL)
            return MW_ENOMEM;
        t->hash = hash_name(name, len);
        t->len = len;
        memcpy(t->name, name, len);
        t->name[len] = '\0';
        mw_list_init(&t->members);
        t->count = 0;
        t->next = ts->buckets[t->hash & (ts->nbuckets - 1)];
        ts->buckets[t->hash & (ts->nbuckets - 1)] = t;
        ts->ntopics++;
        created = 1;
    } else if (*find_sub(ts, t, c) != NULL) {
        return 0;
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
    slot = &ts->subs[hash_pair(t, c, ts->nsubbuckets)];
    s->next = *slot;
    *slot = s;
    t->count++;
    ts->nsubs++;
    if (created && ts->on_first != NULL)
        ts->on_first(ts->ud, t);
    if (ts->ntopics > ts->nbuckets)
        grow_topics(ts);
    if (ts->nsubs > ts->nsubbuckets)
        grow_subs(ts);
    return 1;
}

int mw_topics_set_presence(mw_topics_t *ts, mw_conn_t *c, const char *name, size_t len,
                           const char *info, size_t info_len)
{
    mw_topic_t *t = mw_topics_find(ts, name, len);
    mw_sub_t *s;
    char *copy = NULL;

    if (t == NULL || (s = *find_sub(ts, t, c)) == NULL)
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

static void remove_sub(mw_topics_t *ts, mw_sub_t **slot)
{
    mw_sub_t *s = *slot;
    mw_topic_t *t = s->topic;

    if (s->presence != NULL) {
        if (ts->on_presence != NULL)
            ts->on_presence(ts->ud, t, s->conn, NULL, 0);
        free(s->presence);
    }
    *slot = s->next;
    mw_list_remove(&s->topic_link);
    mw_list_remove(&s->conn_link);
    free(s);
    ts->nsubs--;
    if (--t->count == 0)
        remove_topic(ts, t);
}

int mw_topics_unsubscribe(mw_topics_t *ts, mw_conn_t *c, const char *name, size_t len)
{
    mw_topic_t *t = mw_topics_find(ts, name, len);
    mw_sub_t **slot;

    if (t == NULL)
        return 0;
    slot = find_sub(ts, t, c);
    if (*slot == NULL)
        return 0;
    remove_sub(ts, slot);
    return 1;
}

void mw_topics_drop_conn(mw_topics_t *ts, mw_conn_t *c)
{
    while (!mw_list_empty(&c->subs)) {
        mw_sub_t *s = MW_CONTAINER_OF(c->subs.next, mw_sub_t, conn_link);
        remove_sub(ts, find_sub(ts, s->topic, c));
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

size_t mw_topics_count(const mw_topics_t *ts, const char *name, size_t len)
{
    const mw_topic_t *t = mw_topics_find(ts, name, len);
    return t != NULL ? t->count : 0;
}
