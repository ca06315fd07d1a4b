/* Static files: a directory served on the WebSocket port, in a way a CDN
 * can front.
 *
 * When `static.root` (or --static DIR) is set, a GET or HEAD without an
 * Upgrade header is answered from that directory: strong ETags (a hash of
 * the content), 304 on If-None-Match, Last-Modified, Cache-Control (long and
 * immutable for fingerprinted names), precompressed FILE.gz siblings for
 * clients that accept gzip, an index file for directories, and no way out of
 * the root. Every reply is `Connection: close`, like every HTTP reply of the
 * server.
 *
 * Files are read with blocking I/O on the loop thread into a small cache of
 * contents and ETags (bounded by `static.cache_size`, least recently used
 * out first), checked against one stat() per file looked at. The cached
 * bytes are a raw frame shared by reference with every reply that sends
 * them, so concurrent downloads of one file hold one copy.
 */
#ifndef MOONWIRE_STATIC_H
#define MOONWIRE_STATIC_H

#include <stddef.h>
#include <time.h>

typedef struct mw_conn_s mw_conn_t;

/* Answers the complete request in c->http from the configured root, then
 * closes the connection after the reply. The method must be GET or HEAD
 * (else 405 with Allow). Every outcome is a reply: 200, 304, 301 (a
 * directory without its trailing slash), 400 (a malformed percent escape),
 * 403 (a file over static.max_file_size, logged), 404 (missing, refused or
 * hidden), 405, 500 (a read error, logged), or 503 (out of memory, or a file
 * that kept changing while it was read). */
void mw_static_serve(mw_conn_t *c);

/* Frees every cached file. Safe at any time (a reply being written keeps its
 * own reference); called at exit so leak checkers see a clean heap. */
void mw_static_cache_drain(void);

/* Bytes of file contents the cache holds now. */
size_t mw_static_cache_bytes(void);

/* Decodes the percent escapes of a request path raw[0..len), then
 * normalises it: runs of slashes become one, "." segments go, a trailing
 * slash stays. Writes the result, which starts with '/', NUL-terminated into
 * out (cap bytes) and its length into *out_len.
 * Returns 0; MW_EINVAL for a malformed escape ("%4" or "%zz"); MW_ENOTFOUND
 * for a path that is refused: not starting with '/', a ".." segment (also
 * when written %2e%2e), a segment starting with '.' (dotfiles such as .git
 * and .env), a backslash, a NUL byte or another control character;
 * MW_ETOOBIG when the result does not fit in out. */
int mw_static_path_normalize(const char *raw, size_t len, char *out, size_t cap, size_t *out_len);

/* True when the last segment of path is a fingerprinted name: split on '.',
 * one of its parts other than the last (the extension) is 8 or more hex
 * digits (0-9, a-f, A-F). "app.3f9a2c1b.js" and "3f9a2c1b.js" are;
 * "app.js", "app.3f9a2c1.js" (7 digits), "app.js.3f9a2c1b" (that is the
 * extension) and "app-3f9a2c1b.js" (not dot-separated) are not. */
int mw_static_is_fingerprinted(const char *path, size_t len);

/* The Content-Type for the extension of path's last segment (case does not
 * matter), with "; charset=utf-8" for text types. Never NULL: an unknown or
 * missing extension gives "application/octet-stream". */
const char *mw_static_content_type(const char *path, size_t len);

/* True when an Accept-Encoding value (all of the request's Accept-Encoding
 * headers joined by ", "; NULL when it has none) allows gzip: "gzip" or
 * "x-gzip" with a q-value above 0, or else "*" with a q-value above 0.
 * "gzip;q=0" forbids it even when "*" allows everything. An element whose
 * q-value does not follow RFC 9110's grammar is ignored. No header means no
 * gzip (the identity form is always safe). */
int mw_static_accepts_gzip(const char *value, size_t len);

/* True when an If-None-Match value (all of its headers joined by ", ")
 * matches etag (quoted, as sent in ETag): "*", or a list of entity tags one
 * of which has the same opaque tag (the weak comparison RFC 9110 asks for
 * here: W/ is ignored). A malformed list matches nothing after the error. */
int mw_static_etag_matches(const char *value, size_t len, const char *etag);

/* Formats t as an HTTP date ("Sun, 06 Nov 1994 08:49:37 GMT") into out
 * (30 bytes), whatever the locale. */
void mw_static_http_date(time_t t, char out[30]);

#endif
