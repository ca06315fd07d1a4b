/* A node's outbox: messages for the other nodes, kept in order until Redis
 * has taken them. See outbox.h.
 *
 * One list, oldest first; the items in flight are a prefix of it and
 * `next` points at the first unsent one. Replies come back in the order the
 * commands went out, so the item a reply is for is normally the head, but
 * removal works on any item.
 */
#include "outbox.h"
#include "moonwire/error.h"

void mw_outbox_init(mw_outbox_t *ob, size_t max_bytes, uint64_t max_age)
{
    mw_list_init(&ob->items);
    ob->next = &ob->items;
    ob->count = ob->nsent = ob->bytes = 0;
    ob->max_bytes = max_bytes;
    ob->max_age = max_age;
}

int mw_outbox_push(mw_outbox_t *ob, mw_outbox_item_t *it, uint64_t now)
{
    if (it->size > ob->max_bytes || ob->bytes > ob->max_bytes - it->size)
        return MW_ELIMIT;
    it->queued_at = now;
    it->sent = 0;
    mw_list_insert_tail(&ob->items, &it->link);
    if (ob->next == &ob->items)
        ob->next = &it->link;
    ob->count++;
    ob->bytes += it->size;
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
    mw_list_remove(&it->link);
    ob->count--;
    ob->bytes -= it->size;
}

size_t mw_outbox_rewind(mw_outbox_t *ob)
{
    size_t n = ob->nsent;
    mw_list_t *l;

    for (l = ob->items.next; l != ob->next; l = l->next)
        MW_CONTAINER_OF(l, mw_outbox_item_t, link)->sent = 0;
    ob->next = ob->items.next;
    ob->nsent = 0;
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
    return n;
}

uint64_t mw_outbox_oldest(const mw_outbox_t *ob)
{
    if (mw_list_empty(&ob->items))
        return 0;
    return MW_CONTAINER_OF(ob->items.next, mw_outbox_item_t, link)->queued_at;
}
