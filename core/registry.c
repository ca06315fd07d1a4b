/* The open connections of a node: the serial -> connection table and the
 * open list. See registry.h. */
#include "registry.h"
#include "conn.h"
#include "moonwire/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int mw_registry_init(mw_registry_t *reg, const char *node_id, const char *incarnation)
{
    int r;

    memset(reg, 0, sizeof(*reg));
    if ((r = mw_ids_init(&reg->ids, node_id, incarnation)) != 0)
        return r;
    reg->cap = 1024;
    reg->slots = calloc(reg->cap, sizeof(mw_conn_t *));
    if (reg->slots == NULL)
        return MW_ENOMEM;
    mw_list_init(&reg->open);
    return 0;
}

void mw_registry_close(mw_registry_t *reg)
{
    free(reg->slots);
    reg->slots = NULL;
    reg->cap = reg->count = 0;
}

static size_t slot_of(uint64_t serial, size_t cap)
{
    /* Serials are sequential; a multiplicative hash spreads them. */
    return (size_t)((serial * 0x9E3779B97F4A7C15ULL) >> 20) & (cap - 1);
}

static int grow(mw_registry_t *reg)
{
    size_t cap = reg->cap * 2;
    mw_conn_t **slots = calloc(cap, sizeof(mw_conn_t *));

    if (slots == NULL)
        return MW_ENOMEM;
    for (size_t i = 0; i < reg->cap; i++) {
        mw_conn_t *c = reg->slots[i];
        if (c == NULL)
            continue;
        size_t j = slot_of(c->serial, cap);
        while (slots[j] != NULL)
            j = (j + 1) & (cap - 1);
        slots[j] = c;
    }
    free(reg->slots);
    reg->slots = slots;
    reg->cap = cap;
    return 0;
}

int mw_registry_add(mw_registry_t *reg, mw_conn_t *c)
{
    size_t i;

    /* Up to three quarters full: serials are consecutive and the
     * multiplicative hash spreads them, so runs stay short, and the table
     * costs 11 to 21 bytes a connection rather than 16 to 32. */
    if ((reg->count + 1) * 4 > reg->cap * 3 && grow(reg) != 0)
        return MW_ENOMEM;
    i = slot_of(c->serial, reg->cap);
    while (reg->slots[i] != NULL)
        i = (i + 1) & (reg->cap - 1);
    reg->slots[i] = c;
    reg->count++;
    mw_list_insert_tail(&reg->open, &c->open_link);
    reg->nopen++;
    return 0;
}

static size_t find_slot(const mw_registry_t *reg, uint64_t serial)
{
    size_t i = slot_of(serial, reg->cap);
    while (reg->slots[i] != NULL) {
        if (reg->slots[i]->serial == serial)
            return i;
        i = (i + 1) & (reg->cap - 1);
    }
    return SIZE_MAX;
}

void mw_registry_remove(mw_registry_t *reg, mw_conn_t *c)
{
    size_t i = find_slot(reg, c->serial), j;

    if (i == SIZE_MAX || reg->slots[i] != c)
        return;
    /* Backward-shift deletion keeps probe chains whole without tombstones. */
    reg->slots[i] = NULL;
    reg->count--;
    j = i;
    for (;;) {
        mw_conn_t *x;
        size_t home;
        j = (j + 1) & (reg->cap - 1);
        x = reg->slots[j];
        if (x == NULL)
            break;
        home = slot_of(x->serial, reg->cap);
        /* Move x into the hole when its home is not in (i, j] cyclically. */
        if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j))) {
            reg->slots[i] = x;
            reg->slots[j] = NULL;
            i = j;
        }
    }
    if (mw_list_linked(&c->open_link)) {
        mw_list_remove(&c->open_link);
        reg->nopen--;
    }
}

mw_conn_t *mw_registry_find_serial(const mw_registry_t *reg, uint64_t serial)
{
    size_t i = find_slot(reg, serial);
    return i == SIZE_MAX ? NULL : reg->slots[i];
}

mw_conn_t *mw_registry_find(const mw_registry_t *reg, const char *id, size_t len)
{
    uint64_t serial = mw_ids_serial(&reg->ids, id, len);
    size_t i;

    if (serial == 0)
        return NULL;
    i = find_slot(reg, serial);
    return i == SIZE_MAX ? NULL : reg->slots[i];
}
