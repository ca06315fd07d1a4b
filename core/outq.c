/* Per-connection write queues of shared frames. */
#include "outq.h"
#include "pool.h"
#include "moonwire/error.h"

struct mw_outq_entry_s {
    mw_outq_entry_t *next;
    mw_frame_t *frame; /* one reference, dropped when written or cleared */
};

/* Entries past the ring come from a pool: 1 MB of them is kept. */
static mw_pool_t entries = MW_POOL_INIT(4, 2, 1u << 20);

static mw_outq_entry_t *entry_get(void)
{
    return mw_pool_realloc(&entries, NULL, 0, sizeof(mw_outq_entry_t));
}

static void entry_put(mw_outq_entry_t *e)
{
    mw_pool_free(&entries, e, sizeof(*e));
}

void mw_outq_init(mw_outq_t *q)
{
    q->rhead = q->rcount = 0;
    q->head = q->tail = NULL;
    q->bytes = 0;
    q->off = 0;
    q->count = 0;
}

#define RING_AT(q, i) ((q)->ring[((q)->rhead + (i)) & (MW_OUTQ_INLINE - 1)])

int mw__outq_push_list(mw_outq_t *q, mw_frame_t *f)
{
    mw_outq_entry_t *e = entry_get();

    if (e == NULL)
        return MW_ENOMEM;
    e->next = NULL;
    e->frame = mw_frame_ref(f);
    if (q->tail != NULL)
        q->tail->next = e;
    else
        q->head = e;
    q->tail = e;
    q->bytes += f->len;
    q->count++;
    return 0;
}

size_t mw_outq_peek(const mw_outq_t *q, struct iovec *iov, size_t n, size_t max_bytes,
                    size_t *total)
{
    size_t i = 0, sum = 0, ring = q->rcount < n ? q->rcount : n;
    uint32_t off = q->off;
    const mw_outq_entry_t *e = q->head;

    if (max_bytes == 0 && ring == q->rcount && ring > 0) {
        /* What a transport asks for: the whole ring, no bound; the list
         * behind it, if any, in the loop below. The ring's head in a local:
         * the stores to iov may alias a uint8_t of q, so the compiler would
         * read it again for every frame. */
        unsigned h = q->rhead;
        const mw_frame_t *f = q->ring[h];

        iov[0].iov_base = (uint8_t *)f->bytes + off; /* writev takes no const */
        iov[0].iov_len = sum = f->len - off;
        for (i = 1; i < ring; i++) {
            f = q->ring[(h + i) & (MW_OUTQ_INLINE - 1)];
            iov[i].iov_base = (uint8_t *)f->bytes;
            iov[i].iov_len = f->len;
            sum += f->len;
        }
        off = 0;
    }
    while (i < n) {
        const mw_frame_t *f;
        size_t len;

        if (i < ring)
            f = RING_AT(q, i);
        else if (e != NULL)
            f = e->frame, e = e->next;
        else
            break;
        len = f->len - off;
        if (max_bytes != 0 && sum + len > max_bytes) {
            if (i > 0)
                break;
            len = max_bytes;
        }
        iov[i].iov_base = (uint8_t *)f->bytes + off; /* writev takes no const */
        iov[i].iov_len = len;
        sum += len;
        i++;
        off = 0;
    }
    if (total != NULL)
        *total = sum;
    return i;
}

/* Unlinks the head frame and returns it, with its reference. */
static mw_frame_t *pop_head(mw_outq_t *q)
{
    mw_outq_entry_t *e;
    mw_frame_t *f;

    q->count--;
    if (q->rcount > 0) {
        f = q->ring[q->rhead];
        q->rhead = (q->rhead + 1) & (MW_OUTQ_INLINE - 1);
        q->rcount--;
        return f;
    }
    e = q->head;
    f = e->frame;
    q->head = e->next;
    if (q->head == NULL)
        q->tail = NULL;
    entry_put(e);
    return f;
}

void mw_outq_consume(mw_outq_t *q, size_t n)
{
    unsigned h = q->rhead, k = q->rcount, gone;
    uint32_t off = q->off;

    q->bytes -= n;
    /* Whole frames of the ring, the common case of a socket that took all:
     * walked in locals, the queue updated once after. */
    while (n > 0 && k > 0) {
        mw_frame_t *f = q->ring[h];
        size_t left = f->len - off;
        if (n < left)
            break;
        n -= left;
        off = 0;
        h = (h + 1) & (MW_OUTQ_INLINE - 1);
        k--;
        mw_frame_unref(f);
    }
    gone = q->rcount - k;
    q->rhead = (uint8_t)h;
    q->rcount = (uint8_t)k;
    q->count -= gone;
    q->off = off;
    if (k > 0) { /* n is less than the head frame's unwritten bytes */
        q->off += (uint32_t)n;
        return;
    }
    while (n > 0) {
        size_t left = mw_outq_head(q)->len - q->off;
        if (n < left) {
            q->off += (uint32_t)n;
            return;
        }
        n -= left;
        q->off = 0;
        mw_frame_unref(pop_head(q));
    }
}

mw_frame_t *mw_outq_head(const mw_outq_t *q)
{
    if (q->rcount > 0)
        return q->ring[q->rhead];
    return q->head != NULL ? q->head->frame : NULL;
}

void mw_outq_clear(mw_outq_t *q)
{
    while (!mw_outq_empty(q))
        mw_frame_unref(pop_head(q));
    mw_outq_init(q);
}

void mw_outq_pool_drain(void)
{
    mw_pool_drain(&entries);
}
