/* The node's gauges: what its parts hold now (connections, sockets, Lua
 * memory, topics, history, queues, files, the backplane), copied into its
 * counters, where /metrics and the other workers read them. See gauges.h. */
#include "gauges.h"
#include "cluster.h"
#include "conn.h"
#include "history.h"
#include "lua_state.h"
#include "node.h"
#include "registry.h"
#include "static_cache.h"
#include "stream.h"
#include "topics.h"
#include "moonwire/metrics.h"

void mw_gauges_publish(const mw_node_t *node)
{
    mw_metrics_t *m = node->metrics;
    mw_topics_stats_t ts;
    mw_history_stats_t hs;

    mw_topics_take_stats(node->topics, &ts);
    mw_metrics_set(&m->subscribe_refused_topics, m->subscribe_refused_topics + ts.refused_topics);
    mw_metrics_set(&m->subscribe_refused_subs, m->subscribe_refused_subs + ts.refused_subs);
    mw_metrics_set(&m->topics, node->topics->topics.count);
    mw_metrics_set(&m->subscriptions, node->topics->subs.count);
    if (node->history != NULL) {
        mw_history_take_stats(node->history, &hs);
        mw_metrics_set(&m->history_refused_topics, m->history_refused_topics + hs.refused_topics);
        mw_metrics_set(&m->history_refused_size, m->history_refused_size + hs.refused_size);
        mw_metrics_set(&m->history_dropped_bound, m->history_dropped_bound + hs.dropped_bound);
        mw_metrics_set(&m->history_dropped_ttl, m->history_dropped_ttl + hs.dropped_ttl);
        mw_metrics_set(&m->history_dropped_memory, m->history_dropped_memory + hs.dropped_memory);
        mw_metrics_set(&m->history_trimmed, m->history_trimmed + hs.trimmed);
        mw_metrics_set(&m->history_topics, mw_history_topics(node->history));
        mw_metrics_set(&m->history_bytes, mw_history_bytes(node->history));
    }

    mw_metrics_set(&m->open_connections, node->reg->nopen);
    mw_metrics_set(&m->sockets, node->conns->count);
    mw_metrics_set(&m->lua_memory, node->lua != NULL ? mw_lua_memory(node->lua) : 0);
    mw_metrics_set(&m->lua_waiting, node->lua != NULL ? mw_lua_hooks_waiting(node->lua) : 0);
    mw_metrics_set(&m->backed_up, node->conns->nbacked);
    mw_metrics_set(&m->static_open_files, mw_stream_open_files());
    mw_metrics_set(&m->static_cache_bytes, mw_static_cache_bytes());
    mw_metrics_set(&m->cluster_on, node->cluster != NULL);
    mw_metrics_set(&m->cluster_up, node->cluster != NULL && mw_cluster_healthy(node->cluster));
    if (node->cluster != NULL) {
        mw_cluster_status_t st;
        unsigned n = mw_cluster_shards(node->cluster);
        mw_cluster_status(node->cluster, &st);
        mw_metrics_set(&m->cluster_outbox_messages, st.messages);
        mw_metrics_set(&m->cluster_outbox_bytes, st.bytes);
        mw_metrics_set(&m->cluster_shards, n);
        for (unsigned i = 0; i < n && i < MW_METRICS_SHARDS; i++) {
            mw_cluster_shard_status(node->cluster, i, &st);
            mw_metrics_set(&m->cluster_shard_up[i], (uint64_t)st.up);
            mw_metrics_set(&m->cluster_shard_outbox_messages[i], st.messages);
            mw_metrics_set(&m->cluster_shard_outbox_bytes[i], st.bytes);
        }
    } else {
        mw_metrics_set(&m->cluster_outbox_messages, 0);
        mw_metrics_set(&m->cluster_outbox_bytes, 0);
        mw_metrics_set(&m->cluster_shards, 0);
    }
    mw_metrics_set(&m->reporting, 1);
}
