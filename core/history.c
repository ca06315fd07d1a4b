/* Topic history in the node's memory. See history.h. */
#include "moonwire/history.h"
#include "moonwire/error.h"
#include "moonwire/htab.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry_s {
    mw_hnode_t node;   /* in mw_history_t.topics, by name */
    uint64_t last;     /* the newest offset given out */
    uint64_t last_at;  /* when it was appended, ms */
    mw_frame_t **ring; /* messages last-count+1 .. last, oldest at head */
    size_t cap, head, count;
    char epoch[64];    /* this topic's: a topic that starts over gets a new one */
    size_t len;
    char name[];
} entry_t;

struct mw_history_s {
    mw_htab_t topics; /* name -> entry_t */
    char epoch[48];   /* the node's incarnation */
    uint64_t started; /* topics started, for their epochs */
};

#define ENTRY_OF(n) MW_CONTAINER_OF(n, entry_t, node)

int mw_history_enabled(const mw_config_t *cfg, const char *topic, size_t len)
{
    for (size_t i = 0; i < cfg->history_topics.n; i++) {
        const char *p = cfg->history_topics.items[i];
        size_t plen = strlen(p);
        if (plen > 0 && p[plen - 1] == '*') {
            if (len >= plen - 1 && memcmp(topic, p, plen - 1) == 0)
                return 1;
        } else if (plen == len && memcmp(topic, p, len) == 0) {
            return 1;
        }
    }
    return 0;
}

uint8_t *mw_history_inject(const char *field, uint64_t offset, const char *epoch,
                           const uint8_t *payload, size_t len, size_t *out_len)
{
    char head[160];
    int n;
    uint8_t *out;
    int empty;

    if (field == NULL || field[0] == '\0' || len < 2 || payload[0] != '{')
        return NULL;
    /* "{}" takes no comma; anything else keeps its keys after ours. */
    empty = 1;
    for (size_t i = 1; i < len && empty; i++)
        empty = payload[i] == ' ' || payload[i] == '\t' || payload[i] == '\n' ||
                payload[i] == '\r' || payload[i] == '}';
    n = snprintf(head, sizeof(head), "{\"%s\":%llu,\"epoch\":\"%s\"%s", field,
                 (unsigned long long)offset, epoch, empty ? "" : ",");
    if (n < 0 || (size_t)n >= sizeof(head))
        return NULL;
    out = malloc((size_t)n + len - 1);
    if (out == NULL)
        return NULL;
    memcpy(out, head, (size_t)n);
    memcpy(out + n, payload + 1, len - 1);
    *out_len = (size_t)n + len - 1;
    return out;
}

int mw_history_new(mw_history_t **out, const char *epoch)
{
    mw_history_t *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return MW_ENOMEM;
    if (mw_htab_init(&h->topics, 64) != 0) {
        free(h);
        return MW_ENOMEM;
    }
    snprintf(h->epoch, sizeof(h->epoch), "%s", epoch);
    *out = h;
    return 0;
}

static void entry_free(entry_t *e)
{
    for (size_t i = 0; i < e->count; i++)
        mw_frame_unref(e->ring[(e->head + i) % e->cap]);
    free(e->ring);
    free(e);
}

void mw_history_free(mw_history_t *h)
{
    mw_hnode_t *n, *next;

    if (h == NULL)
        return;
    for (n = mw_htab_next(&h->topics, NULL); n != NULL; n = next) {
        next = mw_htab_next(&h->topics, n);
        entry_free(ENTRY_OF(n));
    }
    mw_htab_free(&h->topics);
    free(h);
}


static entry_t *find(const mw_history_t *h, const char *topic, size_t len)
{
    uint64_t hash = mw_hash_bytes(topic, len);
    for (mw_hnode_t *n = mw_htab_chain(&h->topics, hash); n != NULL; n = n->next) {
        entry_t *e = ENTRY_OF(n);
        if (n->hash == hash && e->len == len && memcmp(e->name, topic, len) == 0)
            return e;
    }
    return NULL;
}

const char *mw_history_epoch(const mw_history_t *h, const char *topic, size_t len)
{
    const entry_t *e = find(h, topic, len);
    return e != NULL ? e->epoch : "";
}

static entry_t *find_or_add(mw_history_t *h, const char *topic, size_t len)
{
    entry_t *e = find(h, topic, len);

    if (e != NULL)
        return e;
    e = calloc(1, sizeof(*e) + len + 1);
    if (e == NULL)
        return NULL;
    memcpy(e->name, topic, len);
    e->len = len;
    /* Offsets restart at 1 with every new start of a topic (after its history
     * expired too): the epoch must differ, or old positions would look valid. */
    snprintf(e->epoch, sizeof(e->epoch), "%s-%llu", h->epoch, (unsigned long long)++h->started);
    mw_htab_insert(&h->topics, &e->node, mw_hash_bytes(topic, len));
    return e;
}

int mw_history_begin(mw_history_t *h, const char *topic, size_t len, uint64_t *offset,
                     const char **epoch)
{
    entry_t *e = find_or_add(h, topic, len);
    if (e == NULL)
        return MW_ENOMEM;
    *offset = e->last + 1;
    *epoch = e->epoch;
    return 0;
}

int mw_history_append(mw_history_t *h, const char *topic, size_t len, uint64_t offset,
                      mw_frame_t *f, const mw_config_t *cfg, uint64_t now)
{
    entry_t *e = find_or_add(h, topic, len);
    size_t cap = cfg->history_size > 0 ? cfg->history_size : 1;

    if (e == NULL)
        return MW_ENOMEM;
    if (e->cap != cap) {
        /* history.size changed (a reload): keep the newest that fit. */
        mw_frame_t **ring = calloc(cap, sizeof(*ring));
        size_t keep = e->count < cap ? e->count : cap;
        if (ring == NULL)
            return MW_ENOMEM;
        for (size_t i = 0; i < e->count; i++) {
            mw_frame_t *x = e->ring[(e->head + i) % e->cap];
            if (i >= e->count - keep)
                ring[i - (e->count - keep)] = x;
            else
                mw_frame_unref(x);
        }
        free(e->ring);
        e->ring = ring;
        e->cap = cap;
        e->head = 0;
        e->count = keep;
    }
    if (e->count == e->cap) {
        mw_frame_unref(e->ring[e->head]);
        e->head = (e->head + 1) % e->cap;
        e->count--;
    }
    e->ring[(e->head + e->count) % e->cap] = mw_frame_ref(f);
    e->count++;
    e->last = offset;
    e->last_at = now;
    return 0;
}

void mw_history_read(mw_history_t *h, const char *topic, size_t len, uint64_t since,
                     const char *epoch, size_t limit, uint64_t now, const mw_config_t *cfg,
                     void (*each)(void *ud, const mw_frame_t *f), void *ud, uint64_t *last,
                     int *recovered)
{
    entry_t *e;
    uint64_t first;
    size_t skip;

    (void)now;
    (void)cfg;
    e = find(h, topic, len);
    *last = e != NULL ? e->last : 0;
    if (e == NULL || e->count == 0) {
        /* Nothing kept: only a client that saw nothing yet missed nothing. */
        *recovered = since == *last && (e == NULL ? epoch == NULL || epoch[0] == '\0'
                                                  : epoch == NULL || strcmp(epoch, e->epoch) == 0);
        return;
    }
    first = e->last - e->count + 1;
    *recovered = since > 0 && (epoch == NULL || strcmp(epoch, e->epoch) == 0) &&
                 since + 1 >= first && since <= e->last;
    if (*recovered) {
        skip = (size_t)(since + 1 - first);
        if (e->count - skip > limit)
            *recovered = 0; /* more was missed than asked for */
    }
    if (!*recovered)
        skip = limit < e->count ? e->count - limit : 0; /* the latest `limit` */
    for (size_t i = skip, n = 0; i < e->count && n < limit; i++, n++)
        each(ud, e->ring[(e->head + i) % e->cap]);
}

void mw_history_expire(mw_history_t *h, const mw_config_t *cfg, uint64_t now)
{
    mw_hnode_t *n, *next;

    if (cfg->history_ttl == 0)
        return;
    for (n = mw_htab_next(&h->topics, NULL); n != NULL; n = next) {
        entry_t *e = ENTRY_OF(n);
        next = mw_htab_next(&h->topics, n);
        if (now - e->last_at > cfg->history_ttl) {
            mw_htab_remove(&h->topics, n);
            entry_free(e);
        }
    }
}
