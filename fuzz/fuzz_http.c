/* libFuzzer harness: HTTP request heads and the upgrade checks.
 *
 * The first byte picks how the rest is cut into reads, so the fuzzer also
 * explores heads split at every place a network could split them.
 */
#include "moonwire/error.h"
#include "moonwire/http.h"

#include <stdlib.h>
#include <string.h>

static const char *const names[] = {"Upgrade", "Connection", "Sec-WebSocket-Key",
                                     "Sec-WebSocket-Version", "Sec-WebSocket-Protocol",
                                     "Origin", "Host", "Accept-Encoding"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mw_http_req_t req;
    size_t chunk, off = 1, used;
    int r = MW_EAGAIN;

    if (size < 1)
        return 0;
    chunk = (size_t)data[0] % 64 + 1;
    mw_http_req_init(&req, 4096);
    while (off < size && r == MW_EAGAIN) {
        size_t n = size - off < chunk ? size - off : chunk;
        r = mw_http_feed(&req, (const char *)data + off, n, &used);
        if (used > n)
            abort(); /* consumed more than it was given */
        off += n;
    }
    if (r == 0) {
        mw_upgrade_t up;
        const char *why;
        size_t len, qlen = 0;
        const char *path = mw_http_path(&req, &len);
        const char *query = mw_http_query(&req, &qlen);
        char *buf = malloc(len + qlen + 1);
        char joined[512];

        if (path[0] != '/')
            abort(); /* the path always starts with a slash */
        mw_http_unescape(path, len, buf, 0);
        if (query != NULL)
            mw_http_unescape(query, qlen, buf, 1);
        free(buf);
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
            mw_http_header(&req, names[i], 0, &len);
            mw_http_header_has_token(&req, names[i], "websocket");
            mw_http_header_join(&req, names[i], joined, sizeof(joined));
        }
        if (mw_http_check_upgrade(&req, &up, &why) == 0) {
            char accept[29];
            mw_frame_t *f;
            mw_http_accept_key(up.key, accept);
            f = mw_http_switching(up.key, NULL, NULL);
            if (f != NULL)
                mw_frame_unref(f);
        }
    }
    mw_http_req_close(&req);
    return 0;
}
