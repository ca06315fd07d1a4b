/* libFuzzer harness: HTTP request heads, the upgrade checks, and the
 * conditional and range headers of static files (Range, If-Range,
 * If-Modified-Since, If-None-Match, Accept-Encoding).
 *
 * The first byte picks how the rest is cut into reads, so the fuzzer also
 * explores heads split at every place a network could split them. The bytes
 * after a complete request are parsed as the next request of a kept-alive
 * connection (pipelining), as conn.c does.
 */
#include "http.h"
#include "static_http.h"
#include "moonwire/error.h"

#include <stdlib.h>
#include <string.h>

static const char *const names[] = {"Upgrade", "Connection", "Sec-WebSocket-Key",
                                     "Sec-WebSocket-Version", "Sec-WebSocket-Protocol",
                                     "Origin", "Host", "Accept-Encoding"};

/* The static file server's header parsers on the values of req, with the
 * invariants their callers rely on. */
static void conditionals(const mw_http_req_t *req)
{
    static const uint64_t sizes[] = {0, 1, 100, 65536, 12u << 20, UINT64_MAX / 2};
    size_t len;
    const char *v;
    time_t t;

    if ((v = mw_http_header(req, "Range", 0, &len)) != NULL) {
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
            uint64_t first = 0, last = 0;
            if (mw_static_parse_range(v, len, sizes[i], &first, &last) == MW_RANGE_OK &&
                (first > last || last >= sizes[i]))
                abort(); /* a range outside the file */
        }
    }
    if ((v = mw_http_header(req, "If-Modified-Since", 0, &len)) != NULL &&
        mw_static_parse_http_date(v, len, &t) == 0) {
        char out[30];
        time_t back;
        mw_static_http_date(t, out);
        if (t >= 0 && t < 253402300800 &&
            (mw_static_parse_http_date(out, 29, &back) != 0 || back != t))
            abort(); /* what we send must read back the same */
    }
    if ((v = mw_http_header(req, "If-Range", 0, &len)) != NULL)
        mw_static_if_range_holds(v, len, "\"0123456789abcdef0123456789abcdef\"", 784111777);
    if ((v = mw_http_header(req, "If-None-Match", 0, &len)) != NULL)
        mw_static_etag_matches(v, len, "\"0123456789abcdef0123456789abcdef\"");
    if ((v = mw_http_header(req, "Accept-Encoding", 0, &len)) != NULL)
        mw_static_accepts_gzip(v, len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mw_http_req_t req;
    size_t chunk, off = 1, used;
    int r = MW_EAGAIN, requests = 0;

    if (size < 1)
        return 0;
    chunk = (size_t)data[0] % 64 + 1;
    mw_http_req_init(&req, 4096);
again:
    while (off < size && r == MW_EAGAIN) {
        size_t n = size - off < chunk ? size - off : chunk;
        r = mw_http_feed(&req, (const char *)data + off, n, &used);
        if (used > n)
            abort(); /* consumed more than it was given */
        /* A complete request leaves the rest of the read to the next one. */
        off += r == 0 ? used : n;
    }
    if (r == 0) {
        conditionals(&req);
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
        /* Pipelined: the next request on the same connection. */
        if (!req.parser.upgrade && ++requests < 8 && off < size) {
            mw_http_req_close(&req);
            mw_http_req_init(&req, 4096);
            r = MW_EAGAIN;
            goto again;
        }
    }
    mw_http_req_close(&req);
    return 0;
}
