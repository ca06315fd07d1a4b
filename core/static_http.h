/* HTTP as static files speak it: request paths, names and content types,
 * Accept-Encoding, entity tags, HTTP dates and byte ranges (RFC 9110).
 */
#ifndef MOONWIRE_STATIC_HTTP_H
#define MOONWIRE_STATIC_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

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

/* True when path's extension names a type that gzip shrinks (html, css,
 * js, json, svg, txt, xml, ...). */
int mw_static_compressible(const char *path, size_t len);

/* Parses an HTTP-date in any of the three forms RFC 9110 section 5.6.7 asks
 * a recipient to accept: IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"),
 * rfc850-date ("Sunday, 06-Nov-94 08:49:37 GMT", a two-digit year taken as
 * the latest one not more than 50 years ahead) and asctime ("Sun Nov  6
 * 08:49:37 1994"). Surrounding whitespace is allowed, nothing else; the day
 * name is not checked. Returns 0 with the time in *out, or MW_EINVAL. */
int mw_static_parse_http_date(const char *s, size_t len, time_t *out);

typedef enum {
    MW_RANGE_IGNORE = 0,    /* no usable range: send the whole file (200) */
    MW_RANGE_OK,            /* one satisfiable range: 206 */
    MW_RANGE_UNSATISFIABLE  /* 416 with Content-Range: bytes * /size */
} mw_static_range_t;

/* Reads a Range value for a representation of size bytes: "bytes=a-b",
 * "bytes=a-" or "bytes=-n" (unit case-insensitive, whitespace around the
 * value allowed), with the last byte clipped to the end and a suffix longer
 * than the file taken as all of it. Sets *first and *last (inclusive) for
 * MW_RANGE_OK. Several ranges, another unit, a malformed value, b < a, and
 * any range of an empty file are MW_RANGE_IGNORE; a first byte at or past the
 * end, or "-0", is MW_RANGE_UNSATISFIABLE. */
mw_static_range_t mw_static_parse_range(const char *value, size_t len, uint64_t size,
                                        uint64_t *first, uint64_t *last);

/* True when an If-Range value lets the Range apply: an entity tag equal to
 * etag by the strong comparison (a weak tag never is), or an HTTP-date equal
 * to mtime, the Last-Modified sent. */
int mw_static_if_range_holds(const char *value, size_t len, const char *etag, time_t mtime);

/* Formats t as an HTTP date ("Sun, 06 Nov 1994 08:49:37 GMT") into out
 * (30 bytes), whatever the locale. */
void mw_static_http_date(time_t t, char out[30]);

#endif
