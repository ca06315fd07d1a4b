/* Connection ids: the node's prefix, serials, spelling and parsing. See id.h. */
#include "id.h"
#include "moonwire/error.h"

#include <stdio.h>
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

int mw_ids_init(mw_ids_t *ids, const char *node_id, const char *incarnation)
{
    char tag[9];

    memset(ids, 0, sizeof(*ids));
    if (incarnation == NULL) {
        random_tag(tag);
        incarnation = tag;
    }
    ids->prefix_len = (size_t)snprintf(ids->prefix, sizeof(ids->prefix), "%s.%s.",
                                       node_id ? node_id : "mw", incarnation);
    if (ids->prefix_len >= sizeof(ids->prefix))
        return MW_EINVAL;
    ids->next_serial = 1;
    return 0;
}

size_t mw_ids_format(const mw_ids_t *ids, uint64_t serial, char *out)
{
    int n = snprintf(out, MW_ID_MAX, "%s%llu", ids->prefix, (unsigned long long)serial);
    return n < MW_ID_MAX ? (size_t)n : MW_ID_MAX - 1;
}

int mw_ids_valid(const char *id, size_t len)
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

int mw_ids_is_local(const mw_ids_t *ids, const char *id, size_t len)
{
    return len > ids->prefix_len && memcmp(id, ids->prefix, ids->prefix_len) == 0;
}

uint64_t mw_ids_serial(const mw_ids_t *ids, const char *id, size_t len)
{
    uint64_t serial = 0;

    if (!mw_ids_is_local(ids, id, len) || len - ids->prefix_len > 20)
        return 0;
    /* Only the exact spelling this node issued: no leading zeros, no overflow. */
    if (id[ids->prefix_len] == '0')
        return 0;
    for (size_t i = ids->prefix_len; i < len; i++) {
        uint64_t d = (uint64_t)(id[i] - '0');
        if (id[i] < '0' || id[i] > '9' || serial > (UINT64_MAX - d) / 10)
            return 0;
        serial = serial * 10 + d;
    }
    return serial;
}
