/* Connection ids and the id -> connection table. See registry.h. */
#include "registry.h"
#include "conn.h"
#include "moonwire/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static void random_tag(char out[9])
{
    static const char digits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    uint64_t r = 0;

    if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r))
        r = (uint64_t)time(NULL) * 6364136223846793005ULL;
    for (int i = 0; i < 8; i++) {
        out[i] = digits[r % 36];
        r /= 36;
    }
    out[8] = '\0';
}

int mw_registry_init(mw_registry_t *reg, const char *node_id, const char *incarnation)
{
    char tag[9];

    memset(reg, 0, sizeof(*reg));
    if (incarnation == NULL) {
        random_tag(tag);
        incarnation = tag;
    }
    reg->prefix_len = (size_t)snprintf(reg->prefix, sizeof(reg->prefix), "%s.%s.",
                                       node_id ? node_id : "mw", incarnation);
    if (reg->prefix_len >= sizeof(reg->prefix))
        return MW_EINVAL;
    reg->next_serial = 1;
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

uint64_t mw_registry_next_serial(mw_registry_t *reg)
{
    return reg->next_serial++;
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

    if ((reg->count + 1) * 2 > reg->cap && grow(reg) != 0)
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

int mw_registry_id_valid(const char *id, size_t len)
{
    size_t dots = 0, last = 0;
    for (size_t i = 0; i < len; i++) {
        if (id[i] == '.') {
            dots++;
            last = i;
        }
    }
    if (dots < 2 || last + 1 >= len || id[last + 1] == '0' || len - last - 1 > 20)
        return 0;
    for (size_t i = last + 1; i < len; i++)
        if (id[i] < '0' || id[i] > '9')
            return 0;
    return 1;
}

int mw_registry_is_local(const mw_registry_t *reg, const char *id, size_t len)
{
    return len > reg->prefix_len && memcmp(id, reg->prefix, reg->prefix_len) == 0;
}

mw_conn_t *mw_registry_find_serial(const mw_registry_t *reg, uint64_t serial)
{
    size_t i = find_slot(reg, serial);
    return i == SIZE_MAX ? NULL : reg->slots[i];
}

mw_conn_t *mw_registry_find(const mw_registry_t *reg, const char *id, size_t len)
{
    uint64_t serial = 0;
    size_t i;

    if (!mw_registry_is_local(reg, id, len) || len - reg->prefix_len > 20)
        return NULL;
    /* Only the exact spelling this node issued: no leading zeros, no overflow. */
    if (id[reg->prefix_len] == '0')
        return NULL;
    for (i = reg->prefix_len; i < len; i++) {
        uint64_t d = (uint64_t)(id[i] - '0');
        if (id[i] < '0' || id[i] > '9' || serial > (UINT64_MAX - d) / 10)
            return NULL;
        serial = serial * 10 + d;
    }
    i = find_slot(reg, serial);
    return i == SIZE_MAX ? NULL : reg->slots[i];
}
