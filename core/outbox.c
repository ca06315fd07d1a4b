/* A node's outbox: messages for the other nodes, kept in order until Redis
 * has taken them. See outbox.h.
 *
 * One list, oldest first; the items in flight are a prefix of it and
 * `next` points at the first unsent one. Replies come back in the order the
 * commands went out, so the item a reply is for is normally the head, but
 * removal works on any item. Answered items that are kept wait in a second
 * list, `kept`, in the order their replies came, until they are older than
 * `keep`, the room they take is wanted, or a lost connection puts them back.
 */
#include "outbox.h"
#include "moonwire/error.h"

void mw_outbox_init(mw_outbox_t *ob, size_t max_bytes, uint64_t max_age)
{
    mw_list_init(&ob->items);
    ob->next = &ob->items;
    ob->count = ob->nsent = ob->bytes = 0;
    ob->nreplay = ob->replay_bytes = 0;
    ob->max_bytes = max_bytes;
    ob->max_age = max_age;
    mw_list_init(&ob->kept);
    ob->nkept = ob->kept_bytes = 0;
    ob->keep = 0;
    ob->forget = NULL;
    ob->forget_ud = NULL;
}

void mw_outbox_keep(mw_outbox_t *ob, uint64_t keep, mw_outbox_drop_cb forget, void *ud)
{
    ob->keep = keep;
    ob->forget = forget;
    ob->forget_ud = ud;
}

static void forget_oldest_kept(mw_outbox_t *ob)
{
    mw_outbox_item_t *it = MW_CONTAINER_OF(ob->kept.next, mw_outbox_item_t, link);
    mw_list_remove(&it->link);
    ob->nkept--;
    ob->kept_bytes -= it->size;
    ob->forget(it, ob->forget_ud);
}

/* Whether the kept items fit beside the waiting ones in max_bytes. */
static int kept_fit(const mw_outbox_t *ob)
{
    return ob->bytes <= ob->max_bytes && ob->kept_bytes <= ob->max_bytes - ob->bytes;
}

/* Forgets the kept items answered more than keep ms before now, and the
 * oldest ones while the kept and the waiting together pass max_bytes. */
static void trim_kept(mw_outbox_t *ob, uint64_t now)
{
    while (ob->nkept > 0) {
        const mw_outbox_item_t *it = MW_CONTAINER_OF(ob->kept.next, mw_outbox_item_t, link);
        if (now >= it->answered_at && now - it->answered_at <= ob->keep && kept_fit(ob))
            break;
        forget_oldest_kept(ob);
    }
}

/* Whether it fits beside the items in max_bytes. */
static int fits(const mw_outbox_t *ob, const mw_outbox_item_t *it)
{
    return it->size <= ob->max_bytes && ob->bytes <= ob->max_bytes - it->size;
}

int mw_outbox_push(mw_outbox_t *ob, mw_outbox_item_t *it, uint64_t now)
{
    /* Replays not yet sent give way too, the first first. */
    while (!fits(ob, it) && ob->next != &ob->items && it->size <= ob->max_bytes) {
        mw_outbox_item_t *first = MW_CONTAINER_OF(ob->next, mw_outbox_item_t, link);
        if (!first->replay || ob->forget == NULL)
            break;
        mw_outbox_remove(ob, first);
        ob->forget(first, ob->forget_ud);
    }
    if (!fits(ob, it))
        return MW_ELIMIT;
    it->queued_at = now;
    it->sent = 0;
    it->replay = 0;
    mw_list_insert_tail(&ob->items, &it->link);
    if (ob->next == &ob->items)
        ob->next = &it->link;
    ob->count++;
    ob->bytes += it->size;
    trim_kept(ob, now); /* kept items give way */
    return 0;
}

mw_outbox_item_t *mw_outbox_peek(const mw_outbox_t *ob)
{
    return ob->next == &ob->items ? NULL : MW_CONTAINER_OF(ob->next, mw_outbox_item_t, link);
}

void mw_outbox_sent(mw_outbox_t *ob, mw_outbox_item_t *it)
{
    /* Only the first unsent item can go: the order is the list's. */
    if (ob->next != &it->link || it->sent)
        return;
    it->sent = 1;
    ob->nsent++;
    ob->next = it->link.next;
}

void mw_outbox_remove(mw_outbox_t *ob, mw_outbox_item_t *it)
{
    if (ob->next == &it->link)
        ob->next = it->link.next;
    if (it->sent)
        ob->nsent--;
    it->sent = 0;
    if (it->replay) {
        ob->nreplay--;
        ob->replay_bytes -= it->size;
    }
    mw_list_remove(&it->link);
    ob->count--;
    ob->bytes -= it->size;
}

void mw_outbox_answered(mw_outbox_t *ob, mw_outbox_item_t *it, uint64_t now)
{
    mw_outbox_remove(ob, it);
    if (ob->keep == 0 || ob->forget == NULL) {
        if (ob->forget != NULL)
            ob->forget(it, ob->forget_ud);
        return;
    }
    it->answered_at = now;
    mw_list_insert_tail(&ob->kept, &it->link);
    ob->nkept++;
    ob->kept_bytes += it->size;
    trim_kept(ob, now);
}

size_t mw_outbox_rewind(mw_outbox_t *ob, uint64_t now, size_t *replayed)
{
    size_t n = ob->nsent, back = 0;
    mw_list_t *l;

    for (l = ob->items.next; l != ob->next; l = l->next)
        MW_CONTAINER_OF(l, mw_outbox_item_t, link)->sent = 0;
    ob->nsent = 0;
    trim_kept(ob, now);
    /* The kept ones go in front, the newest answer last: from the tail of
     * kept to the head of items. */
    while (ob->nkept > 0) {
        mw_outbox_item_t *it = MW_CONTAINER_OF(ob->kept.prev, mw_outbox_item_t, link);
        mw_list_remove(&it->link);
        ob->nkept--;
        ob->kept_bytes -= it->size;
        mw_list_insert_head(&ob->items, &it->link);
        it->sent = 0;
        it->replay = 1;
        it->queued_at = now; /* its wait for Redis starts again */
        ob->count++;
        ob->bytes += it->size;
        ob->nreplay++;
        ob->replay_bytes += it->size;
        back++;
    }
    ob->next = ob->items.next;
    if (replayed != NULL)
        *replayed = back;
    return n;
}

size_t mw_outbox_expire(mw_outbox_t *ob, uint64_t now, mw_outbox_drop_cb drop, void *ud)
{
    size_t n = 0;

    /* Unsent items are in queue order: the old ones come first. */
    while (ob->next != &ob->items) {
        mw_outbox_item_t *it = MW_CONTAINER_OF(ob->next, mw_outbox_item_t, link);
        if (now < it->queued_at || now - it->queued_at <= ob->max_age)
            break;
        mw_outbox_remove(ob, it);
        drop(it, ud);
        n++;
    }
    return n;
}

size_t mw_outbox_clear(mw_outbox_t *ob, mw_outbox_drop_cb drop, void *ud)
{
    size_t n = 0;

    while (!mw_list_empty(&ob->items)) {
        mw_outbox_item_t *it = MW_CONTAINER_OF(ob->items.next, mw_outbox_item_t, link);
        mw_outbox_remove(ob, it);
        drop(it, ud);
        n++;
    }
    while (ob->nkept > 0)
        forget_oldest_kept(ob);
    return n;
}

uint64_t mw_outbox_oldest(const mw_outbox_t *ob)
{
    if (mw_list_empty(&ob->items))
        return 0;
    return MW_CONTAINER_OF(ob->items.next, mw_outbox_item_t, link)->queued_at;
}
