/* Write-queue bounds: who is backed up, who is held back, and the policy
 * at the deadline. See backpressure.h.
 *
 * A publisher is held back by serial, never by pointer: each backed-up queue
 * lists the serials of the publishers it holds back, and each publisher
 * counts the queues that hold it (c->held_back). Within one read only the
 * reading connection adds itself, so "the last serial is mine" is enough to
 * list it once per queue; and it is read again only once every queue that
 * holds it has let go, so no serial is listed twice. A publisher gone
 * meanwhile is no longer found in the registry and is skipped.
 */
#include "backpressure.h"
#include "node.h"
#include "registry.h"
#include "timer.h"
#include "moonwire/config.h"
#include "moonwire/error.h"
#include "moonwire/log.h"
#include "moonwire/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

/* Freed queue and receive memory past which the sweep hands free memory
 * back to the system, at most once a second. */
#define TRIM_AFTER (4u << 20)
#define TRIM_EVERY_MS 1000

static void log_policy(mw_conn_t *c, const char *action, uint64_t ms)
{
    char id[MW_ID_MAX], addr[64], queued[24], held[24];
    const char *kv[10];

    if (!mw_log_enabled(MW_LOG_INFO))
        return;
    mw_conn_id(c, id);
    mw_conn_addr(c, addr, sizeof(addr));
    snprintf(queued, sizeof(queued), "%zu", mw_conn_buffered(c));
    snprintf(held, sizeof(held), "%llu", (unsigned long long)ms);
    kv[0] = "id", kv[1] = id, kv[2] = "addr", kv[3] = addr;
    kv[4] = "queued", kv[5] = queued, kv[6] = "backed_up_ms", kv[7] = held;
    kv[8] = "action", kv[9] = action;
    mw_log_event(MW_LOG_INFO, "backpressure", kv, 5);
}

/* Applies limits.backpressure to c: closes it with 1008 (after what is
 * queued), or drops the messages that would take it past the bound until it
 * has drained to half. */
static void apply_policy(mw_conn_t *c, uint64_t ms)
{
    mw_conns_t *cs = c->conns;

    if (cs->cfg->backpressure == MW_BP_DROP) {
        log_policy(c, "drop", ms);
        mw_bp_forget(c);
        c->dropping = 1;
    } else {
        cs->metrics->backpressure_closes++;
        log_policy(c, "close", ms);
        /* The close frame jumps no queue: the peer reads it after the backlog. */
        mw_conn_fail(c, 1008, "write queue full"); /* forgets c */
    }
}

int mw_bp_admit(mw_conn_t *c, size_t after)
{
    mw_conns_t *cs = c->conns;

    if (!c->dropping && after <= 2 * cs->cfg->max_buffered)
        return 0; /* over the bound within a turn: judged after its writes */
    if (cs->cfg->backpressure == MW_BP_DROP || c->dropping) {
        cs->metrics->backpressure_drops++;
    } else {
        /* Twice the bound in one turn: nothing paced it, judge it now. */
        apply_policy(c, c->backlog != NULL ? cs->timers->now - c->backlog->since : 0);
    }
    return MW_EBACKPRESSURE;
}

static mw_backlog_t *backlog_of(mw_conn_t *c)
{
    mw_conns_t *cs = c->conns;
    mw_backlog_t *b = c->backlog;

    if (b != NULL)
        return b;
    if ((b = calloc(1, sizeof(*b))) == NULL)
        return NULL;
    b->owner = c;
    b->since = cs->timers->now;
    mw_list_insert_tail(&cs->backed_up, &b->link);
    cs->nbacked++;
    c->backlog = b;
    return b;
}

/* Stops reading p (for reason) and counts it, if it was being read. */
static void hold(mw_conn_t *p, unsigned reason)
{
    if (p->paused == 0 && !p->finishing)
        p->conns->metrics->backpressure_pauses++;
    mw_conn_pause(p, reason, 1);
}

void mw_bp_over(mw_conn_t *c)
{
    mw_conns_t *cs = c->conns;
    mw_conn_t *p = cs->sender;
    mw_backlog_t *b;

    if (c->dropping || c->state != MW_CONN_OPEN || mw_conn_buffered(c) <= cs->cfg->max_buffered)
        return;
    if ((b = backlog_of(c)) == NULL) {
        apply_policy(c, 0); /* out of memory: no deadline can be kept */
        return;
    }
    if (p == NULL || p->state != MW_CONN_OPEN)
        return; /* a timer, the backplane: only the deadline and the ceiling */
    if (p == c) {
        hold(c, MW_PAUSE_WRITEQ); /* its own replies: it waits for its own queue */
        return;
    }
    if (b->nholds > 0 && b->holds[b->nholds - 1] == p->serial)
        return;
    if (b->nholds == b->cap) {
        uint32_t cap = b->cap ? b->cap * 2 : 4;
        uint64_t *h = realloc(b->holds, cap * sizeof(*h));
        if (h == NULL)
            return; /* p goes on being read; c's deadline still holds */
        b->holds = h;
        b->cap = cap;
    }
    b->holds[b->nholds++] = p->serial;
    p->held_back++;
    hold(p, MW_PAUSE_FLOW);
}

/* Lets go of the publishers c held back and leaves the backed-up list. */
static void let_go(mw_conn_t *c)
{
    mw_conns_t *cs = c->conns;
    mw_backlog_t *b = c->backlog;

    if (b == NULL)
        return;
    c->backlog = NULL;
    mw_list_remove(&b->link);
    cs->nbacked--;
    for (uint32_t i = 0; i < b->nholds; i++) {
        mw_conn_t *p = mw_registry_find_serial(cs->node->reg, b->holds[i]);
        if (p != NULL && p->held_back > 0 && --p->held_back == 0)
            mw_conn_pause(p, MW_PAUSE_FLOW, 0);
    }
    free(b->holds);
    free(b);
}

void mw_bp_written(mw_conn_t *c)
{
    mw_conns_t *cs = c->conns;
    size_t queued = mw_conn_buffered(c);

    if (queued > cs->cfg->max_buffered / 2)
        return;
    if (c->backlog != NULL || c->dropping)
        cs->queue_freed += cs->cfg->max_buffered / 2; /* at least */
    let_go(c);
    c->dropping = 0;
    mw_conn_pause(c, MW_PAUSE_WRITEQ, 0);
}

void mw_bp_flushed(mw_conn_t *c)
{
    mw_conns_t *cs = c->conns;

    if (c->freed || c->state != MW_CONN_OPEN)
        return;
    if (!c->dropping && backlog_of(c) == NULL) {
        apply_policy(c, 0);
        return;
    }
    hold(c, MW_PAUSE_WRITEQ);
    if (cs->cfg->backpressure_timeout == 0 && c->backlog != NULL)
        apply_policy(c, 0);
}

void mw_bp_forget(mw_conn_t *c)
{
    let_go(c);
}

void mw_bp_sweep(mw_conns_t *cs, uint64_t now)
{
    uint32_t timeout = cs->cfg->backpressure_timeout;

    while (!mw_list_empty(&cs->backed_up)) {
        mw_backlog_t *b = MW_CONTAINER_OF(cs->backed_up.next, mw_backlog_t, link);
        mw_conn_t *c = b->owner;

        if (now - b->since < timeout)
            break;
        apply_policy(c, now - b->since); /* takes b out of the list */
        if (c->backlog == b)
            let_go(c); /* whatever the policy did, the sweep moves on */
    }
    /* After a burst of queued frames (backlogs drained or freed) or of large
     * messages received (their buffers are freed once delivered, ws.h), the
     * pools are full, and glibc keeps what they did not take on its free
     * lists and as free pages in the middle of its heap, all of which counts
     * in RSS: empty the pools, and hand the whole free pages back. */
    cs->queue_freed += mw_ws_take_freed();
    if (cs->queue_freed >= TRIM_AFTER && now - cs->trimmed_at >= TRIM_EVERY_MS) {
        cs->queue_freed = 0;
        cs->trimmed_at = now;
        mw_outq_pool_drain();
        mw_frame_pool_drain();
        mw_ws_pool_drain();
#if defined(__GLIBC__)
        malloc_trim(0);
#endif
        cs->metrics->memory_trims++;
    }
}
