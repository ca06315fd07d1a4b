/* History across nodes: a Redis stream per topic. A message to a history
 * topic goes through the outbox as one atomic script (offset, XADD, PUBLISH),
 * which every node, the publisher's too, delivers from the topic's channel in
 * offset order; a read asks a script for what came after an offset. See
 * cluster_history.h.
 */
#include "cluster_history.h"
#include "cluster_int.h"
#include "cluster_send.h"
#include "envelope.h"
#include "node.h"
#include "topics.h"
#include "moonwire/config.h"
#include "moonwire/error.h"
#include "moonwire/log.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <string.h>

/* One atomic step per message: the topic's next offset (a new epoch when the
 * stream was lost), the offset fields put in a JSON-object payload, XADD with
 * approximate trimming, the TTLs, and the PUBLISH of the envelope. So every
 * node sees one gapless sequence per topic, in offset order.
 *
 * A message the outbox sends again (its reply was lost) may have run
 * already: the meta hash keeps, per origin node (ARGV[9]), the number of its
 * last message here (ARGV[10]), and a number not above it returns {0, '', ''}
 * and changes nothing. Those fields of nodes whose liveness key (ARGV[11] ..
 * node) is gone are dropped once the hash holds more than 64. */
static const char history_publish_script[] =
    "local sf = 's:' .. ARGV[9]\n"
    "local seq = tonumber(ARGV[10])\n"
    "if seq <= tonumber(redis.call('HGET', KEYS[2], sf) or '0') then return {0, '', ''} end\n"
    "local epoch = redis.call('HGET', KEYS[2], 'epoch')\n"
    "local last = tonumber(redis.call('HGET', KEYS[2], 'offset') or '0')\n"
    "if not epoch or (last > 0 and redis.call('EXISTS', KEYS[1]) == 0) then\n"
    "  epoch = ARGV[7]\n"
    "  redis.call('DEL', KEYS[1])\n"
    "  redis.call('HSET', KEYS[2], 'epoch', epoch, 'offset', 0)\n"
    "end\n"
    "local offset = redis.call('HINCRBY', KEYS[2], 'offset', 1)\n"
    "redis.call('HSET', KEYS[2], sf, ARGV[10])\n"
    "if redis.call('HLEN', KEYS[2]) > 66 then\n"
    "  for _, f in ipairs(redis.call('HKEYS', KEYS[2])) do\n"
    "    if string.sub(f, 1, 2) == 's:' and f ~= sf and\n"
    "       redis.call('EXISTS', ARGV[11] .. string.sub(f, 3)) == 0 then\n"
    "      redis.call('HDEL', KEYS[2], f)\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local payload = ARGV[6]\n"
    "if ARGV[4] ~= '' and ARGV[8] == '1' and string.byte(payload, 1) == 123 then\n"
    "  local rest = string.sub(payload, 2)\n"
    "  local sep = ','\n"
    "  if string.match(rest, '^%s*}') then sep = '' end\n"
    "  payload = '{\"' .. ARGV[4] .. '\":' .. offset .. ',\"epoch\":\"' .. epoch .. '\"' .. sep .. rest\n"
    "end\n"
    "redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], offset .. '-0', 'd', payload)\n"
    "if ARGV[3] ~= '0' then\n"
    "  redis.call('EXPIRE', KEYS[1], ARGV[3])\n"
    "  redis.call('EXPIRE', KEYS[2], ARGV[3])\n"
    "end\n"
    "redis.call('PUBLISH', ARGV[1], ARGV[5] .. payload)\n"
    "return {offset, epoch, payload}\n";

/* What came after ARGV[1] (epoch ARGV[3], '' for any), at most ARGV[2]:
 * {epoch, last offset, recovered (1/0), payloads...}; not recovered gives
 * the latest ARGV[2] instead. */
static const char history_read_script[] =
    "local epoch = redis.call('HGET', KEYS[2], 'epoch') or ''\n"
    "local last = tonumber(redis.call('HGET', KEYS[2], 'offset') or '0')\n"
    "local since, limit = tonumber(ARGV[1]), tonumber(ARGV[2])\n"
    "local same = ARGV[3] == '' or ARGV[3] == epoch\n"
    "local first\n"
    "local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)\n"
    "if #head > 0 then first = tonumber(string.match(head[1][1], '^(%d+)')) end\n"
    "local out = {epoch, last, 0}\n"
    "local entries\n"
    "if same and since > 0 and first and since + 1 >= first and since <= last then\n"
    "  entries = redis.call('XRANGE', KEYS[1], (since + 1) .. '-0', '+', 'COUNT', limit + 1)\n"
    "  if #entries <= limit then out[3] = 1 end\n"
    "end\n"
    "if out[3] == 0 and same and since == last then out[3] = 1; entries = {} end\n"
    "if out[3] == 0 then\n"
    "  local rev = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', limit)\n"
    "  entries = {}\n"
    "  for i = #rev, 1, -1 do entries[#entries + 1] = rev[i] end\n"
    "end\n"
    "for _, e in ipairs(entries) do out[#out + 1] = e[2][2] end\n"
    "return out\n";

static void history_keys(const mw_cluster_t *cl, const char *topic, size_t len, char *stream,
                         size_t *slen, char *meta, size_t *mlen)
{
    *slen = (size_t)snprintf(stream, MW_TOPIC_MAX + 80, "%s:h:%.*s", cl->prefix, (int)len, topic);
    *mlen = (size_t)snprintf(meta, MW_TOPIC_MAX + 80, "%s:hm:%.*s", cl->prefix, (int)len, topic);
}

int mw_cluster_history_publish(mw_cluster_t *cl, const char *topic, size_t len, const mw_frame_t *f,
                               const char *except, size_t except_len, mw_cluster_reply_cb cb,
                               mw_cluster_queued_cb queued, void *ud)
{
    const mw_config_t *cfg = cl->node->cfg;
    mw_shard_t *sh = mw__cluster_shard(cl, topic, len); /* its stream, channel and numbers */
    char stream[MW_TOPIC_MAX + 80], meta[MW_TOPIC_MAX + 80], ch[MW_TOPIC_MAX + 80];
    char size[24], ttl[24], epoch[MW_CITEM_EPOCH_DIGITS + 1];
    const char *field = cfg->history_field ? cfg->history_field : "";
    size_t slen, mlen, chlen, hlen;
    mw_envelope_t e;
    mw_citem_t *it;

    history_keys(cl, topic, len, stream, &slen, meta, &mlen);
    mw__cluster_channel(cl, topic, len, ch, sizeof(ch), &chlen);
    mw__cluster_fill(&e, cl, MW_ENV_TOPIC, f);
    e.history = 1;
    e.except = except ? except : "";
    e.except_len = except ? except_len : 0;
    e.payload_len = 0; /* the script appends the final payload */
    hlen = mw_envelope_size(&e);
    if (hlen == 0)
        return MW_EINVAL;
    snprintf(size, sizeof(size), "%zu", cfg->history_size);
    /* history.ttl 0 keeps history until trimmed, as on a node alone. */
    snprintf(ttl, sizeof(ttl), "%u", (cfg->history_ttl + 999) / 1000);
    mw__cluster_epoch(epoch);
    {
        /* EVALSHA sha 2 KEYS[1..2] ARGV[1..11]; the sha (or the script's
         * text), the envelope head and the number are put in later. */
        int text = (f->bytes[0] & 0x0f) == MW_OP_TEXT;
        const char *argv[16] = {"EVALSHA", NULL, "2", stream, meta, ch, size, ttl, field, NULL,
                                (const char *)mw_frame_payload(f), epoch, text ? "1" : "0",
                                cl->name, NULL, cl->node_key_prefix};
        size_t argl[16] = {7, 0, 1, slen, mlen, chlen, strlen(size), strlen(ttl), strlen(field),
                           hlen, mw_frame_payload_len(f), strlen(epoch), 1, strlen(cl->name),
                           MW_CITEM_SEQ_DIGITS, strlen(cl->node_key_prefix)};
        it = mw__cluster_item_new(sh, 16, argv, argl);
    }
    if (it == NULL)
        return MW_ENOMEM;
    it->script = history_publish_script;
    it->script_len = sizeof(history_publish_script) - 1;
    it->cb = cb;
    it->queued = queued;
    it->ud = ud;
    mw_envelope_write(&e, (uint8_t *)it->arg[MW_CITEM_HEAD]);
    mw__cluster_number(sh, it);
    return mw__cluster_enqueue(sh, it);
}

int mw_cluster_history_read(mw_cluster_t *cl, const char *topic, size_t len, uint64_t since,
                            const char *epoch, size_t limit, mw_cluster_reply_cb cb, void *ud)
{
    char stream[MW_TOPIC_MAX + 80], meta[MW_TOPIC_MAX + 80], s[24], l[24];
    size_t slen, mlen;

    history_keys(cl, topic, len, stream, &slen, meta, &mlen);
    snprintf(s, sizeof(s), "%llu", (unsigned long long)since);
    snprintf(l, sizeof(l), "%zu", limit);
    {
        const char *argv[6] = {"2", stream, meta, s, l, epoch ? epoch : ""};
        size_t argl[6] = {1, slen, mlen, strlen(s), strlen(l), epoch ? strlen(epoch) : 0};
        return mw_rconn_script(&mw__cluster_shard(cl, topic, len)->cmd, history_read_script,
                               sizeof(history_read_script) - 1, 6, argv, argl, cb, ud);
    }
}

static void on_script_loaded(void *r, void *priv)
{
    mw_rconn_t *rc = priv;
    redisReply *reply = r;
    mw_rconn_replied(rc);
    if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
        mw_log_error("cluster: Redis refused to load the history script: %s", reply->str);
}

void mw__cluster_history_hello(mw_shard_t *sh)
{
    /* Before anything else on this connection, so that every EVALSHA of the
     * outbox finds the script (a Redis that restarted has none), and no
     * message is run out of its order by a NOSCRIPT and a retry. */
    const char *argv[3] = {"SCRIPT", "LOAD", history_publish_script};
    size_t argl[3] = {6, 4, sizeof(history_publish_script) - 1};
    mw_rconn_send(&sh->cmd, on_script_loaded, &sh->cmd, 3, argv, argl);
}

void mw__cluster_history_init(mw_cluster_t *cl)
{
    mw_rconn_sha1(history_publish_script, sizeof(history_publish_script) - 1, cl->publish_sha);
}
