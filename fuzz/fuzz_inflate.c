/* libFuzzer harness: the permessage-deflate inflate path. The input is cut
 * into frames of a compressed message; the output must stay under the limit
 * (the sink refuses more, as ws.c does against max_message_size) and the
 * inflater must survive any bytes, then go back to the pool reusable.
 */
#include "deflate.h"
#include "moonwire/error.h"

#include <stdlib.h>

#define LIMIT (64 * 1024)

typedef struct {
    size_t total;
} sink_t;

static int sink(void *ud, const uint8_t *data, size_t len)
{
    sink_t *s = ud;
    (void)data;
    if (len > LIMIT - s->total)
        return MW_ETOOBIG;
    s->total += len;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mw_inflater_t *z;
    sink_t s = {0};
    size_t chunk, off = 1;
    int r = 0;

    if (size < 1)
        return 0;
    z = mw_inflater_get(data[0] & 1 ? 15 : 9 + data[0] % 7);
    if (z == NULL)
        return 0;
    chunk = (size_t)data[0] * 7 % 1021 + 1;
    while (off < size && r == 0) {
        size_t n = size - off < chunk ? size - off : chunk;
        r = mw_inflater_feed(z, data + off, n, off + n == size, sink, &s);
        if (s.total > LIMIT)
            abort();
        off += n;
    }
    mw_inflater_put(z);
    return 0;
}
