/* Static files: a directory served on the WebSocket port, in a way a CDN
 * can front.
 *
 * When `static.root` (or --static DIR) is set, a GET or HEAD without an
 * Upgrade header is answered from that directory: strong ETags, 304 on
 * If-None-Match or (without one) If-Modified-Since, Last-Modified,
 * Cache-Control (long and immutable for fingerprinted names), single byte
 * ranges (206, 416; If-Range), gzip for clients that accept it (a FILE.gz
 * sibling, or for compressible types a variant made once on the fly and
 * cached) with Vary: Accept-Encoding, an index file for directories, and no
 * way out of the root. The connection stays open for the next request
 * (keep-alive, see conn.c) unless the request or the configuration says
 * otherwise.
 *
 * Files the cache may hold (static.max_cached_file, at most a quarter of
 * static.cache_size) are read whole into a cache of contents, ETags (a hash
 * of the content) and gzip variants, bounded by static.cache_size, least
 * recently used out first, checked against one stat() per request. The
 * cached bytes are a raw frame shared by reference with every reply that
 * sends them, so concurrent downloads of one file hold one copy. Larger
 * files are never cached: they are streamed from disk in chunks as the
 * client reads (stream.h), with an ETag made of their size and modification
 * time, at most static.max_open_files at once.
 */
#ifndef MOONWIRE_STATIC_H
#define MOONWIRE_STATIC_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

typedef struct mw_conn_s mw_conn_t;

/* Answers the complete request in c->http from the configured root, then
 * ends the reply (mw_conn_reply_end), and returns 1. The method must be GET
 * or HEAD (else 405 with Allow). Every outcome is a reply: 200, 206, 304, 301
 * (a directory without its trailing slash), 400 (a malformed percent
 * escape), 403 (a file over static.max_file_size, logged), 404 (missing,
 * refused or hidden), 405, 416 (with Content-Range: bytes * /size), 500 (a
 * read error, logged), or 503 (out of memory, a file that kept changing
 * while it was read, or static.max_open_files files already streaming; with
 * Retry-After).
 * With pass set, a request that no file answers (what would be 404, 400 or
 * 405) is not answered: it returns 0, so that the app's on_request takes it. */
int mw_static_serve(mw_conn_t *c, int pass);

#endif
