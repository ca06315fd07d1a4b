/* Presence across nodes: a hash per topic of connection id -> info, set
 * and cleared as local members come and go, a liveness key per node kept
 * fresh by a heartbeat, and the query that drops the entries of nodes that
 * died without cleaning up. See cluster_presence.h.
 */
#include "cluster_presence.h"
#include "cluster_int.h"
#include "conn.h"
#include "moonwire/config.h"
#include "moonwire/log.h"
#include "node.h"
#include "registry.h"
#include "topics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Presence of a topic is a hash <prefix>:p:<topic> of connection id -> info.
 * Each node keeps <prefix>:node:<node> alive with a TTL; a query drops the
 * entries of nodes whose key is gone, so a node that died without cleaning
 * up leaves presence within cluster.presence_ttl. */
static const char presence_script[] =
    "local all = redis.call('HGETALL', KEYS[1])\n"
    "local out, alive = {}, {}\n"
    "for i = 1, #all, 2 do\n"
    "  local node = string.match(all[i], '^(.*)%.[^.]+$') or ''\n"
    "  local ok = alive[node]\n"
    "  if ok == nil then\n"
    "    ok = redis.call('EXISTS', ARGV[1] .. node) == 1\n"
    "    alive[node] = ok\n"
    "  end\n"
    "  if ok then out[#out + 1] = all[i]; out[#out + 1] = all[i + 1]\n"
    "  else redis.call('HDEL', KEYS[1], all[i]) end\n"
    "end\n"
    "return out\n";

static size_t presence_key(const mw_cluster_t *cl, const char *topic, size_t len, char *out,
                           size_t cap)
{
    int n = snprintf(out, cap, "%s:p:%.*s", cl->prefix, (int)len, topic);
    return n < (int)cap ? (size_t)n : cap - 1;
}

/* On the topic's shard. */
static void presence_set(mw_cluster_t *cl, const mw_topic_t *t, const mw_conn_t *c,
                         const char *info, size_t len)
{
    mw_shard_t *sh = mw__cluster_shard(cl, t->name, t->len);
    char key[MW_TOPIC_MAX + 80], id[MW_ID_MAX];
    const char *argv[4];
    size_t argl[4];

    argl[1] = presence_key(cl, t->name, t->len, key, sizeof(key));
    argv[1] = key;
    argl[2] = mw_conn_id(c, id);
    argv[2] = id;
    if (info != NULL) {
        argv[0] = "HSET";
        argl[0] = 4;
        argv[3] = info;
        argl[3] = len;
        mw_rconn_fire(&sh->cmd, 4, argv, argl);
    } else {
        argv[0] = "HDEL";
        argl[0] = 4;
        mw_rconn_fire(&sh->cmd, 3, argv, argl);
    }
}

/* A topic whose entries of this node could not be removed from its shard
 * (it was down): it may no longer be a topic here when the shard is back. */
typedef struct {
    mw_hnode_t node;
    size_t len;
    char name[];
} mw_presence_gone_t;

/* At most this many per shard: one each per topic, whatever the churn. */
#define PRESENCE_GONE_MAX 4096

static void remember_gone(mw_shard_t *sh, const mw_topic_t *t)
{
    mw_htab_t *gone = &sh->presence_gone;
    uint64_t hash = mw_hash_bytes(t->name, t->len);
    mw_presence_gone_t *g;

    if (gone->nbuckets == 0 && mw_htab_init(gone, 16) != 0)
        goto full;
    for (mw_hnode_t *n = mw_htab_chain(gone, hash); n != NULL; n = n->next) {
        g = MW_CONTAINER_OF(n, mw_presence_gone_t, node);
        if (n->hash == hash && g->len == t->len && memcmp(g->name, t->name, t->len) == 0)
            return;
    }
    if (gone->count >= PRESENCE_GONE_MAX || (g = malloc(sizeof(*g) + t->len)) == NULL)
        goto full;
    memcpy(g->name, t->name, t->len);
    g->len = t->len;
    mw_htab_insert(gone, &g->node, hash);
    return;
full:
    if (!sh->presence_gone_full)
        mw_log_warn("%s: presence may keep members that left while Redis was unavailable "
                    "(more than %d topics to clean up, or out of memory)",
                    sh->tag, PRESENCE_GONE_MAX);
    sh->presence_gone_full = 1;
}

void mw__cluster_presence_free(mw_shard_t *sh)
{
    mw_htab_t *gone = &sh->presence_gone;
    mw_hnode_t *n = gone->nbuckets != 0 ? mw_htab_next(gone, NULL) : NULL;

    while (n != NULL) {
        mw_hnode_t *next = mw_htab_next(gone, n);
        free(MW_CONTAINER_OF(n, mw_presence_gone_t, node));
        n = next;
    }
    mw_htab_free(gone);
    sh->presence_gone_full = 0;
}

void mw__cluster_on_presence(void *ud, const mw_topic_t *t, const mw_conn_t *c, const char *info,
                             size_t len)
{
    mw_cluster_t *cl = ud;
    mw_shard_t *sh = mw__cluster_shard(cl, t->name, t->len);

    if (sh->cmd.ready)
        presence_set(cl, t, c, info, len);
    else if (info == NULL)
        remember_gone(sh, t); /* removed on reconnect */
    /* else: written again on reconnect */
}

/* On a shard: the liveness key (on every shard, where the presence and
 * history scripts look for it), and a TTL on the presence hashes of the
 * shard's topics this node has members in (so a hash every node left goes
 * away). */
void mw__cluster_heartbeat(mw_shard_t *sh)
{
    mw_cluster_t *cl = sh->cl;
    const mw_topics_t *ts = cl->node->topics;
    char ttl[24], ttl2[24], key[MW_TOPIC_MAX + 80];
    uint32_t secs = (cl->node->cfg->cluster_presence_ttl + 999) / 1000;
    const char *argv[5];
    size_t argl[5];

    snprintf(ttl, sizeof(ttl), "%u", secs);
    snprintf(ttl2, sizeof(ttl2), "%u", secs * 4);
    argv[0] = "SET", argl[0] = 3;
    argv[1] = cl->node_key, argl[1] = strlen(cl->node_key);
    argv[2] = "1", argl[2] = 1;
    argv[3] = "EX", argl[3] = 2;
    argv[4] = ttl, argl[4] = strlen(ttl);
    mw_rconn_fire(&sh->cmd, 5, argv, argl);
    for (const mw_topic_t *t = mw_topics_next(ts, NULL); t != NULL; t = mw_topics_next(ts, t)) {
        mw_list_t *it;
        if (mw__cluster_shard(cl, t->name, t->len) != sh)
            continue;
        mw_list_foreach(it, &t->members)
        {
            if (MW_CONTAINER_OF(it, mw_sub_t, topic_link)->presence != NULL)
                break;
        }
        if (it == &t->members)
            continue; /* nobody here shows in its presence */
        argv[0] = "EXPIRE", argl[0] = 6;
        argl[1] = presence_key(cl, t->name, t->len, key, sizeof(key));
        argv[1] = key;
        argv[2] = ttl2, argl[2] = strlen(ttl2);
        mw_rconn_fire(&sh->cmd, 3, argv, argl);
    }
}

/* Deletes this node's entries from a presence hash (fields are ids, which
 * begin with "<node>.<incarnation>."). Sent with EVAL, not EVALSHA: a
 * NOSCRIPT and a retry would run it after the entries set behind it. */
static const char forget_own_script[] =
    "for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do\n"
    "  if string.sub(f, 1, #ARGV[1]) == ARGV[1] then redis.call('HDEL', KEYS[1], f) end\n"
    "end\n"
    "return 0\n";

static void forget_own(mw_cluster_t *cl, mw_shard_t *sh, const char *topic, size_t len)
{
    const mw_ids_t *ids = &cl->node->reg->ids;
    char key[MW_TOPIC_MAX + 80];
    const char *argv[5] = {"EVAL", forget_own_script, "1", key, ids->prefix};
    size_t argl[5] = {4, sizeof(forget_own_script) - 1, 1, 0, ids->prefix_len};

    argl[3] = presence_key(cl, topic, len, key, sizeof(key));
    mw_rconn_fire(&sh->cmd, 5, argv, argl);
}

/* Deletes this node's entries of the topics it may have left while sh was
 * down (remember_gone). */
static void forget_gone(mw_cluster_t *cl, mw_shard_t *sh)
{
    const mw_htab_t *gone = &sh->presence_gone;

    if (gone->nbuckets == 0)
        return;
    for (const mw_hnode_t *n = mw_htab_next(gone, NULL); n != NULL; n = mw_htab_next(gone, n)) {
        const mw_presence_gone_t *g = MW_CONTAINER_OF(n, mw_presence_gone_t, node);
        forget_own(cl, sh, g->name, g->len);
    }
}

/* After a shard's (re)connect: this node's presence entries of its topics
 * again (Redis may be new), and only those: a member that left while the
 * shard was unreachable could not be removed then, and a Redis that was
 * only cut off still lists it. */
void mw__cluster_restore_presence(mw_shard_t *sh)
{
    mw_cluster_t *cl = sh->cl;
    const mw_topics_t *ts = cl->node->topics;

    /* Topics this node may have left meanwhile; those it is still in are
     * done again below, in order, before their members are set. */
    forget_gone(cl, sh);
    mw__cluster_presence_free(sh);
    for (const mw_topic_t *t = mw_topics_next(ts, NULL); t != NULL; t = mw_topics_next(ts, t)) {
        mw_list_t *it;
        if (mw__cluster_shard(cl, t->name, t->len) != sh)
            continue;
        forget_own(cl, sh, t->name, t->len);
        mw_list_foreach(it, &t->members)
        {
            const mw_sub_t *s = MW_CONTAINER_OF(it, mw_sub_t, topic_link);
            if (s->presence != NULL)
                presence_set(cl, t, s->conn, s->presence, s->presence_len);
        }
    }
    mw__cluster_heartbeat(sh);
}

int mw_cluster_presence(mw_cluster_t *cl, const char *topic, size_t len, mw_cluster_reply_cb cb,
                        void *ud)
{
    char key[MW_TOPIC_MAX + 80], prefix[96];
    const char *argv[5] = {"EVAL", presence_script, "1", key, prefix};
    size_t argl[5] = {4, sizeof(presence_script) - 1, 1, 0, 0};

    argl[3] = presence_key(cl, topic, len, key, sizeof(key));
    argl[4] = (size_t)snprintf(prefix, sizeof(prefix), "%s:node:", cl->prefix);
    return mw_rconn_command(&mw__cluster_shard(cl, topic, len)->cmd, 5, argv, argl, cb, ud);
}
