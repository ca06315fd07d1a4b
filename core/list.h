/* Intrusive circular doubly-linked lists.
 *
 * A list head and its entries are the same type; an empty list points to
 * itself. Entries are embedded in the objects they link, so linking never
 * allocates and unlinking is O(1).
 */
#ifndef MOONWIRE_LIST_H
#define MOONWIRE_LIST_H

#include <stddef.h>

typedef struct mw_list_s {
    struct mw_list_s *next;
    struct mw_list_s *prev;
} mw_list_t;

#define MW_CONTAINER_OF(ptr, type, field) ((type *)((char *)(ptr)-offsetof(type, field)))

static inline void mw_list_init(mw_list_t *h)
{
    h->next = h->prev = h;
}

static inline int mw_list_empty(const mw_list_t *h)
{
    return h->next == h;
}

/* True when e is linked into some list (entries are kept self-linked when not). */
static inline int mw_list_linked(const mw_list_t *e)
{
    return e->next != e;
}

static inline void mw_list_insert_tail(mw_list_t *h, mw_list_t *e)
{
    e->prev = h->prev;
    e->next = h;
    h->prev->next = e;
    h->prev = e;
}

static inline void mw_list_insert_head(mw_list_t *h, mw_list_t *e)
{
    e->next = h->next;
    e->prev = h;
    h->next->prev = e;
    h->next = e;
}

static inline void mw_list_remove(mw_list_t *e)
{
    e->prev->next = e->next;
    e->next->prev = e->prev;
    e->next = e->prev = e;
}

#define mw_list_foreach(it, h) for ((it) = (h)->next; (it) != (h); (it) = (it)->next)

/* Safe against removal of `it` inside the loop body. */
#define mw_list_foreach_safe(it, tmp, h)                                                           \
    for ((it) = (h)->next, (tmp) = (it)->next; (it) != (h); (it) = (tmp), (tmp) = (it)->next)

#endif
