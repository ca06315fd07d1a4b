/* Topic history in the node's memory. See history.h. */
#include "history.h"
#include "htab.h"
#include "moonwire/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry_s {
    mw_hnode_t node;   /* in mw_history_t.topics, by name */
    mw_list_t link;    /* in h->live or h->idle, least recently touched first */
    uint64_t last;     /* the newest offset given out */
    uint64_t touched;  /* its last message, or when its topic gained or lost its last member, ms */
    mw_frame_t **ring; /* messages last-count+1 .. last, oldest at head; NULL while cap is 0 */
    size_t cap, head, count;
    size_t bytes;   /* what it holds (itself, its ring, its frames), within h->bytes */
    int live;       /* its topic has members */
    char epoch[64]; /* this topic's: a topic that starts over gets a new one */
    size_t len;
    char name[];
} entry_t;

struct mw_history_s {
    mw_htab_t topics; /* name -> entry_t */
    mw_list_t live;   /* entries of topics with members */
    mw_list_t idle;   /* entries of topics without: their history goes first */
    size_t nlive;
    size_t bytes; /* every entry's bytes */
    uint64_t now; /* the latest time a caller gave, for mw_history_set_live */
    mw_history_stats_t stats;
    mw_log_gate_t refusal_log, drop_log;
    char epoch[48];   /* the node's incarnation */
    uint64_t started; /* topics started, for their epochs */
};

#define ENTRY_OF(n) MW_CONTAINER_OF(n, entry_t, node)
#define LINKED_ENTRY(l) MW_CONTAINER_OF(l, entry_t, link)
#define RING_MIN 4 /* slots of a new ring, which doubles up to history.size */

/* What a kept frame costs: its struct, header and payload (shared frames too:
 * history keeps them alive). */
static size_t frame_cost(const mw_frame_t *f)
{
    return sizeof(*f) + f->len;
}

static void add_bytes(mw_history_t *h, entry_t *e, size_t n)
{
    e->bytes += n;
    h->bytes += n;
}

static void sub_bytes(mw_history_t *h, entry_t *e, size_t n)
{
    e->bytes -= n;
    h->bytes -= n;
}

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
    mw_list_init(&h->live);
    mw_list_init(&h->idle);
    snprintf(h->epoch, sizeof(h->epoch), "%s", epoch);
    *out = h;
    return 0;
}

static void drop_oldest(mw_history_t *h, entry_t *e)
{
    mw_frame_t *f = e->ring[e->head];
    sub_bytes(h, e, frame_cost(f));
    mw_frame_unref(f);
    e->head = (e->head + 1) % e->cap;
    e->count--;
}

static void ring_free(mw_history_t *h, entry_t *e)
{
    while (e->count > 0)
        drop_oldest(h, e);
    sub_bytes(h, e, e->cap * sizeof(*e->ring));
    free(e->ring);
    e->ring = NULL;
    e->cap = e->head = 0;
}

static void entry_drop(mw_history_t *h, entry_t *e)
{
    ring_free(h, e);
    mw_htab_remove(&h->topics, &e->node);
    mw_list_remove(&e->link);
    if (e->live)
        h->nlive--;
    h->bytes -= e->bytes;
    free(e);
}

void mw_history_free(mw_history_t *h)
{
    if (h == NULL)
        return;
    while (!mw_list_empty(&h->live))
        entry_drop(h, LINKED_ENTRY(h->live.next));
    while (!mw_list_empty(&h->idle))
        entry_drop(h, LINKED_ENTRY(h->idle.next));
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

/* Moves e to the back of its list: the most recently touched. */
static void touch(mw_history_t *h, entry_t *e)
{
    e->touched = h->now;
    mw_list_remove(&e->link);
    mw_list_insert_tail(e->live ? &h->live : &h->idle, &e->link);
}

/* Drops the history of every idle topic but keep's. Returns the bytes freed. */
static size_t drop_idle(mw_history_t *h, const entry_t *keep)
{
    size_t before = h->bytes;
    mw_list_t *it, *tmp;

    mw_list_foreach_safe(it, tmp, &h->idle)
    {
        if (LINKED_ENTRY(it) != keep) {
            entry_drop(h, LINKED_ENTRY(it));
            h->stats.dropped_memory++;
        }
    }
    if (before > h->bytes)
        mw_log_warn("history: out of memory: dropped the history of every topic without members "
                    "(%zu bytes)",
                    before - h->bytes);
    return before - h->bytes;
}

size_t mw_history_drop_idle(mw_history_t *h)
{
    return drop_idle(h, NULL);
}

/* calloc, and when memory ran out, again after the history of idle topics
 * (but keep's) was given back. */
static void *alloc(mw_history_t *h, size_t n, const entry_t *keep)
{
    void *p = calloc(1, n);
    if (p == NULL && drop_idle(h, keep) > 0)
        p = calloc(1, n);
    return p;
}

/* Counts what the bounds made go, and logs it once every 10 seconds at most. */
static void dropped(mw_history_t *h, uint64_t *counter, const char *what)
{
    uint64_t held_back;
    char more[64];

    (*counter)++;
    if (mw_log_gate_pass(&h->drop_log, 10000, &held_back))
        mw_log_info("history: %s, to stay within history.max_topics and history.max_bytes%s", what,
                    mw_log_held_back(held_back, more, sizeof(more)));
}

static int refuse(mw_history_t *h, int why, const mw_config_t *cfg, size_t size)
{
    uint64_t held_back;
    char more[64];

    if (why == MW_EHISTTOPICS)
        h->stats.refused_topics++;
    else
        h->stats.refused_size++;
    if (!mw_log_gate_pass(&h->refusal_log, 1000, &held_back))
        return why;
    if (why == MW_EHISTTOPICS)
        mw_log_warn("history: refused a message to a new topic: history.max_topics (%zu) topics "
                    "keep history and all have members%s",
                    cfg->history_max_topics, mw_log_held_back(held_back, more, sizeof(more)));
    else
        mw_log_warn("history: refused a message of %zu bytes: history.max_bytes (%zu) can not "
                    "hold it%s",
                    size, cfg->history_max_bytes, mw_log_held_back(held_back, more, sizeof(more)));
    return why;
}

/* Frees what history holds until need more bytes fit in history.max_bytes:
 * the history of idle topics (but keep's), least recently touched first; then
 * the oldest messages of live topics, least recently touched first, keep's
 * last. Returns 0, or MW_EHISTSIZE when that is not enough. */
static int make_room(mw_history_t *h, const mw_config_t *cfg, size_t need, entry_t *keep)
{
    size_t max = cfg->history_max_bytes, turns;

    if (max == 0 || h->bytes + need <= max)
        return 0;
    while (h->bytes + need > max && !mw_list_empty(&h->idle)) {
        entry_t *e = LINKED_ENTRY(h->idle.next);
        if (e == keep) {
            if (e->link.next == &h->idle)
                break;
            e = LINKED_ENTRY(e->link.next);
        }
        entry_drop(h, e);
        dropped(h, &h->stats.dropped_bound, "dropped the history of a topic without members");
    }
    /* Each live topic is looked at once; one trimmed empty gives its ring back
     * and goes to the back (its touched time stays). */
    for (turns = h->nlive; h->bytes + need > max && turns > 0; turns--) {
        entry_t *e = LINKED_ENTRY(h->live.next);
        if (e == keep) {
            mw_list_remove(&e->link);
            mw_list_insert_tail(&h->live, &e->link);
            continue;
        }
        while (e->count > 0 && h->bytes + need > max) {
            drop_oldest(h, e);
            dropped(h, &h->stats.trimmed, "dropped the oldest message of a topic with members");
        }
        if (e->count == 0)
            ring_free(h, e);
        mw_list_remove(&e->link);
        mw_list_insert_tail(&h->live, &e->link);
    }
    while (keep != NULL && keep->count > 0 && h->bytes + need > max) {
        drop_oldest(h, keep);
        dropped(h, &h->stats.trimmed, "dropped the oldest message of a topic with members");
    }
    return h->bytes + need > max ? MW_EHISTSIZE : 0;
}

/* A new entry for topic (the topic count bound applied). */
static int add(mw_history_t *h, const char *topic, size_t len, int live, const mw_config_t *cfg,
               entry_t **out)
{
    entry_t *e;

    while (cfg->history_max_topics != 0 && h->topics.count >= cfg->history_max_topics) {
        if (mw_list_empty(&h->idle))
            return refuse(h, MW_EHISTTOPICS, cfg, 0);
        entry_drop(h, LINKED_ENTRY(h->idle.next));
        dropped(h, &h->stats.dropped_bound, "dropped the history of a topic without members");
    }
    e = alloc(h, sizeof(*e) + len + 1, NULL);
    if (e == NULL)
        return MW_ENOMEM;
    memcpy(e->name, topic, len);
    e->len = len;
    e->live = live != 0;
    /* Offsets restart at 1 with every new start of a topic (after its history
     * expired too): the epoch must differ, or old positions would look valid. */
    snprintf(e->epoch, sizeof(e->epoch), "%s-%llu", h->epoch, (unsigned long long)++h->started);
    mw_list_init(&e->link);
    if (e->live)
        h->nlive++;
    touch(h, e);
    add_bytes(h, e, sizeof(*e) + len + 1);
    mw_htab_insert(&h->topics, &e->node, mw_hash_bytes(topic, len));
    *out = e;
    return 0;
}

int mw_history_begin(mw_history_t *h, const char *topic, size_t len, int live,
                     const mw_config_t *cfg, uint64_t now, uint64_t *offset, const char **epoch)
{
    entry_t *e;

    h->now = now;
    e = find(h, topic, len);
    if (e == NULL) {
        int r = add(h, topic, len, live, cfg, &e);
        if (r != 0)
            return r;
    }
    *offset = e->last + 1;
    *epoch = e->epoch;
    return 0;
}

/* Gives e a ring of cap slots, keeping its newest messages that fit. */
static int ring_resize(mw_history_t *h, entry_t *e, size_t cap)
{
    mw_frame_t **ring = alloc(h, cap * sizeof(*ring), e);
    size_t keep = e->count < cap ? e->count : cap;

    if (ring == NULL)
        return MW_ENOMEM;
    for (size_t i = 0; i < e->count; i++) {
        mw_frame_t *x = e->ring[(e->head + i) % e->cap];
        if (i >= e->count - keep) {
            ring[i - (e->count - keep)] = x;
        } else {
            sub_bytes(h, e, frame_cost(x));
            mw_frame_unref(x);
        }
    }
    sub_bytes(h, e, e->cap * sizeof(*ring));
    add_bytes(h, e, cap * sizeof(*ring));
    free(e->ring);
    e->ring = ring;
    e->cap = cap;
    e->head = 0;
    e->count = keep;
    return 0;
}

int mw_history_append(mw_history_t *h, const char *topic, size_t len, uint64_t offset,
                      mw_frame_t *f, const mw_config_t *cfg, uint64_t now)
{
    entry_t *e;
    size_t size = cfg->history_size > 0 ? cfg->history_size : 1;
    size_t cap, base, need;
    int r;

    h->now = now;
    e = find(h, topic, len);
    if (e == NULL)
        return MW_EINVAL; /* mw_history_begin made it */
    touch(h, e);
    /* The least it could be with this message alone. */
    base = sizeof(*e) + e->len + 1 + frame_cost(f) +
           (size < RING_MIN ? size : RING_MIN) * sizeof(*e->ring);
    if (cfg->history_max_bytes != 0 && base > cfg->history_max_bytes) {
        r = refuse(h, MW_EHISTSIZE, cfg, mw_frame_payload_len(f));
        goto fail;
    }
    if (e->cap > size && (r = ring_resize(h, e, size)) != 0)
        goto fail; /* history.size was lowered (a reload) */
    if (e->count == size)
        drop_oldest(h, e); /* the oldest goes for this one */
    cap = e->cap;
    if (e->count == cap)
        cap = cap == 0 ? (size < RING_MIN ? size : RING_MIN) : (cap * 2 < size ? cap * 2 : size);
    need = frame_cost(f) + (cap - e->cap) * sizeof(*e->ring);
    if ((r = make_room(h, cfg, need, e)) != 0) {
        refuse(h, r, cfg, mw_frame_payload_len(f));
        goto fail;
    }
    if (cap != e->cap && (r = ring_resize(h, e, cap)) != 0)
        goto fail;
    e->ring[(e->head + e->count) % e->cap] = mw_frame_ref(f);
    e->count++;
    add_bytes(h, e, frame_cost(f));
    e->last = offset;
    return 0;

fail:
    if (e->last == 0 && e->count == 0)
        entry_drop(h, e); /* a topic that never had a message is not kept for nothing */
    return r;
}

void mw_history_set_live(mw_history_t *h, const char *topic, size_t len, int live)
{
    entry_t *e = find(h, topic, len);

    if (e == NULL || e->live == (live != 0))
        return;
    e->live = live != 0;
    if (e->live)
        h->nlive++;
    else
        h->nlive--;
    touch(h, e);
}

size_t mw_history_topics(const mw_history_t *h)
{
    return h->topics.count;
}

size_t mw_history_bytes(const mw_history_t *h)
{
    return h->bytes;
}

void mw_history_take_stats(mw_history_t *h, mw_history_stats_t *out)
{
    *out = h->stats;
    memset(&h->stats, 0, sizeof(h->stats));
}

void mw_history_read(mw_history_t *h, const char *topic, size_t len, uint64_t since,
                     const char *epoch, size_t limit, uint64_t now, const mw_config_t *cfg,
                     void (*each)(void *ud, const mw_frame_t *f), void *ud, uint64_t *last,
                     int *recovered)
{
    entry_t *e;
    uint64_t first;
    size_t skip;

    (void)cfg;
    h->now = now;
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

/* Drops the entries of list not touched for ttl, from its head. */
static void expire_list(mw_history_t *h, mw_list_t *list, uint64_t now, uint64_t ttl)
{
    while (!mw_list_empty(list)) {
        entry_t *e = LINKED_ENTRY(list->next);
        if (now - e->touched <= ttl)
            break;
        entry_drop(h, e);
        h->stats.dropped_ttl++;
    }
}

void mw_history_expire(mw_history_t *h, const mw_config_t *cfg, uint64_t now)
{
    h->now = now;
    if (cfg->history_ttl != 0) {
        expire_list(h, &h->idle, now, cfg->history_ttl);
        expire_list(h, &h->live, now, cfg->history_ttl);
    }
    /* Bounds a reload lowered: what passes them goes as it would for a new message. */
    while (cfg->history_max_topics != 0 && h->topics.count > cfg->history_max_topics &&
           !mw_list_empty(&h->idle)) {
        entry_drop(h, LINKED_ENTRY(h->idle.next));
        dropped(h, &h->stats.dropped_bound, "dropped the history of a topic without members");
    }
    make_room(h, cfg, 0, NULL);
}
