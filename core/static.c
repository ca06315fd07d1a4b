/* Static files: the directory behind `static.root`, served so that a CDN can
 * front it. See static.h for what a request gets back.
 *
 * A request goes: decode and normalise the path (refusing every way out of
 * the root), stat() the file and its FILE.gz sibling, pick the
 * representation (gzip or identity), then either:
 *  - a file the cache may hold (up to static.max_cached_file and a quarter
 *    of static.cache_size): take the bytes, the ETag and the gzip variant
 *    from the cache when (device, inode, size, mtime) still match the stat.
 *    Only a miss resolves the real path (it must be under the real path of
 *    the root), reads the file whole and hashes it. A hit serves bytes that
 *    passed that check when they were read, so a symlink swapped since can
 *    not leak anything: it changes the inode, which makes a miss.
 *  - a larger file: resolve the real path the same way, open it, and stream
 *    it (stream.c) in chunks read on the thread pool as the client reads;
 *    its ETag comes from its size and modification time, since hashing it
 *    would mean reading it all first.
 * Then the conditionals in RFC 9110's order (If-None-Match, else
 * If-Modified-Since; If-Range before Range) decide between 304, 206, 416
 * and 200.
 *
 * The path, the request's headers and the dates are static_http.c's; the
 * cache, reading files and opening them to stream are static_cache.c's.
 */
#include "static.h"
#include "conn.h"
#include "frame.h"
#include "http.h"
#include "static_cache.h"
#include "static_http.h"
#include "stream.h"
#include "moonwire/config.h"
#include "moonwire/error.h"
#include "moonwire/log.h"
#include "moonwire/metrics.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

/* A growing string, for reply heads whose Location can be as long as a path. */
typedef struct {
    char *p;
    size_t len, cap;
    int failed; /* out of memory: the reply is dropped */
} sbuf_t;

static void sb_printf(sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_printf(sbuf_t *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    while (!b->failed) {
        size_t room = b->cap - b->len, cap;
        char *p;

        va_start(ap, fmt);
        n = vsnprintf(b->p != NULL ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = 1;
            return;
        }
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        cap = b->cap ? b->cap : 512;
        while (cap < b->len + (size_t)n + 1)
            cap *= 2;
        p = realloc(b->p, cap);
        if (p == NULL) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

/* All the occurrences of a header joined by ", " into a malloc'ed string, or
 * NULL (*len 0) when there is none or memory is short (the header is then
 * ignored, which is always safe here: no gzip, no 304). */
static char *header_joined(const mw_http_req_t *req, const char *name, size_t *len)
{
    size_t vlen;
    char *s;

    *len = 0;
    if (mw_http_header(req, name, 0, &vlen) == NULL)
        return NULL;
    /* Every occurrence sits in the head with more than 2 bytes before it. */
    s = malloc(req->len + 1);
    if (s != NULL)
        *len = mw_http_header_join(req, name, s, req->len + 1);
    return s;
}

static void head_start(sbuf_t *b, int status)
{
    char date[30];

    mw_static_http_date(time(NULL), date);
    sb_printf(b, "HTTP/1.1 %d %s\r\nDate: %s\r\n", status, mw_http_status_text(status), date);
}

/* Ends the head in b and makes it a frame. Frees b. */
static mw_frame_t *head_end(mw_conn_t *c, sbuf_t *b)
{
    mw_frame_t *f = NULL;

    sb_printf(b, "%s\r\n", mw_conn_connection_field(c));
    if (!b->failed)
        f = mw_frame_new_raw(b->p, b->len);
    free(b->p);
    return f;
}

/* Ends the head in b, queues it and then body (NULL: none), and ends the
 * reply. Frees b. */
static void send_reply(mw_conn_t *c, sbuf_t *b, mw_frame_t *body)
{
    mw_frame_t *f = head_end(c, b);

    if (f == NULL) {
        mw_conn_reply(c, NULL); /* out of memory: close without a reply */
        return;
    }
    if (body == NULL || body->len == 0) {
        mw_conn_reply(c, f);
        return;
    }
    /* Head and body are two frames; the body is shared with the cache and with
     * every other reply sending the same file. */
    if (mw__conn_queue(c, f) != 0) {
        mw_frame_unref(f);
        mw_conn_reply(c, NULL);
        return;
    }
    mw_frame_unref(f);
    mw_conn_reply(c, mw_frame_ref(body));
}

/* Queues the complete reply in b and ends the reply. Frees b. */
static void send_buf(mw_conn_t *c, sbuf_t *b)
{
    mw_conn_reply(c, b->failed ? NULL : mw_frame_new_raw(b->p, b->len));
    free(b->p);
}

/* A short text reply: "404 Not Found: why". HEAD gets the same head, no body.
 * The debug log says detail (NULL: why) with the path. */
static void reply_text(mw_conn_t *c, int status, const char *why, const char *detail,
                       const char *fields, int head)
{
    sbuf_t b = {0};
    char body[256];
    size_t plen;
    const char *path = mw_http_path(c->http, &plen);
    int n = snprintf(body, sizeof(body), "%d %s: %s\n", status, mw_http_status_text(status), why);

    if (n < 0 || (size_t)n >= sizeof(body))
        n = (int)sizeof(body) - 1;
    mw_log_debug("conn %llu static %.*s: %d %s", (unsigned long long)c->serial,
                 (int)(plen < 200 ? plen : 200), path, status, detail != NULL ? detail : why);
    head_start(&b, status);
    sb_printf(&b,
              "Content-Type: text/plain; charset=utf-8\r\n"
              "Content-Length: %d\r\n"
              "%s"
              "%s\r\n",
              n, fields != NULL ? fields : "", mw_conn_connection_field(c));
    if (!head)
        sb_printf(&b, "%.*s", n, body);
    send_buf(c, &b);
}

/* Every refusal that must not tell whether a file exists says the same. */
static void not_found(mw_conn_t *c, const char *detail, int head)
{
    reply_text(c, 404, "no such file", detail, NULL, head);
}

/* 301 from "/dir" to "/dir/", keeping the query. The Location is built from
 * the normalised path, re-escaped, so it can never be "//host/". The body
 * names the target too, for clients that do not follow. */
static void redirect(mw_conn_t *c, const char *rel, size_t len, int head)
{
    static const char keep[] = "-._~!$&'()*+,;=:@/";
    sbuf_t loc = {0}, b = {0};
    const char *query;
    size_t qlen;

    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)rel[i];
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            (ch != '\0' && strchr(keep, ch) != NULL))
            sb_printf(&loc, "%c", ch);
        else
            sb_printf(&loc, "%%%02X", ch);
    }
    sb_printf(&loc, "/");
    query = mw_http_query(c->http, &qlen);
    if (query != NULL)
        sb_printf(&loc, "?%.*s", (int)qlen, query);
    b.failed = loc.failed;
    head_start(&b, 301);
    if (!loc.failed) {
        sb_printf(&b,
                  "Location: %s\r\n"
                  "Content-Type: text/plain; charset=utf-8\r\n"
                  "Content-Length: %zu\r\n"
                  "%s\r\n",
                  loc.p, loc.len + 1, mw_conn_connection_field(c));
        if (!head)
            sb_printf(&b, "%s\n", loc.p);
    }
    free(loc.p);
    send_buf(c, &b);
}

/* True when the conditional headers say the client's copy is current: a
 * matching If-None-Match, or without one an If-Modified-Since no earlier than
 * the file's modification time (RFC 9110 section 13.2.2's order). */
static int not_modified(const mw_http_req_t *req, const mw_static_rep_t *r)
{
    size_t len;
    char *inm = header_joined(req, "If-None-Match", &len);
    const char *ims;
    time_t t;

    if (inm != NULL) {
        int match = mw_static_etag_matches(inm, len, r->etag);
        free(inm);
        return match;
    }
    ims = mw_http_header(req, "If-Modified-Since", 0, &len);
    /* Ignored when it is not one valid date (section 13.1.3). */
    if (ims == NULL || mw_http_header(req, "If-Modified-Since", 1, &len) != NULL ||
        mw_static_parse_http_date(ims, len, &t) != 0)
        return 0;
    return r->mtime <= t;
}

/* Answers from an opened representation: 304, 416, 206 or 200. varies: the
 * reply depends on Accept-Encoding (a gzip variant exists or could). */
static void reply_rep(mw_conn_t *c, const char *path, size_t plen, mw_static_rep_t *r, int varies,
                      int head)
{
    mw_conns_t *cs = c->conns;
    const mw_config_t *cfg = cs->cfg;
    const mw_http_req_t *req = c->http;
    const char *cc = mw_static_is_fingerprinted(path, plen) ? cfg->static_immutable_cache_control
                                                            : cfg->static_cache_control;
    uint64_t first = 0, last = r->size ? r->size - 1 : 0, count = r->size;
    int status = 200;
    char modified[30];
    sbuf_t b = {0};
    mw_frame_t *f;

    if (not_modified(req, r)) {
        status = 304;
    } else if (!head && !r->gz) {
        /* Range applies to GET and to the identity encoding only: a client
         * asking for a range gets bytes of the file itself. */
        size_t rlen, ilen;
        const char *range = mw_http_header(req, "Range", 0, &rlen);
        const char *ifr = mw_http_header(req, "If-Range", 0, &ilen);
        if (range != NULL && mw_http_header(req, "Range", 1, &rlen) == NULL &&
            (ifr == NULL || mw_static_if_range_holds(ifr, ilen, r->etag, r->mtime))) {
            switch (mw_static_parse_range(range, rlen, r->size, &first, &last)) {
            case MW_RANGE_OK:
                status = 206;
                count = last - first + 1;
                break;
            case MW_RANGE_UNSATISFIABLE: {
                char fields[64];
                snprintf(fields, sizeof(fields), "Content-Range: bytes */%llu\r\n",
                         (unsigned long long)r->size);
                reply_text(c, 416, "range not satisfiable", NULL, fields, 0);
                return;
            }
            default:
                break; /* malformed or several ranges: the whole file */
            }
        }
    }
    if (status != 304 && !head && r->fd >= 0 && count > 0 &&
        mw_stream_open_files() >= cfg->static_max_open_files) {
        static time_t logged;
        cs->metrics->static_busy++;
        if (logged != time(NULL)) {
            logged = time(NULL);
            mw_log_warn("static: %u files are being streamed (static.max_open_files): 503",
                        cfg->static_max_open_files);
        }
        reply_text(c, 503, "too many downloads at once, try again", NULL, "Retry-After: 1\r\n",
                   0);
        return;
    }
    head_start(&b, status);
    /* A 304 carries the fields a cache needs to refresh its copy (RFC 9110 15.4.5). */
    sb_printf(&b, "ETag: %s\r\n", r->etag);
    if (cc[0] != '\0')
        sb_printf(&b, "Cache-Control: %s\r\n", cc);
    if (varies)
        sb_printf(&b, "Vary: Accept-Encoding\r\n");
    if (status == 304) {
        send_reply(c, &b, NULL);
        return;
    }
    mw_static_http_date(r->mtime, modified);
    sb_printf(&b,
              "Content-Type: %s\r\n"
              "Content-Length: %llu\r\n"
              "Last-Modified: %s\r\n"
              "X-Content-Type-Options: nosniff\r\n"
              "%s",
              mw_static_content_type(path, plen), (unsigned long long)count, modified,
              r->gz ? "Content-Encoding: gzip\r\n" : "Accept-Ranges: bytes\r\n");
    if (status == 206)
        sb_printf(&b, "Content-Range: bytes %llu-%llu/%llu\r\n", (unsigned long long)first,
                  (unsigned long long)last, (unsigned long long)r->size);
    if (head || count == 0 || (r->body != NULL && status == 200)) {
        send_reply(c, &b, head ? NULL : r->body);
        return;
    }
    /* The body goes out a chunk at a time: a range of a file in memory, or a
     * file on disk. */
    f = head_end(c, &b);
    if (f == NULL || mw__conn_queue(c, f) != 0) {
        if (f != NULL)
            mw_frame_unref(f);
        mw_conn_reply(c, NULL);
        return;
    }
    mw_frame_unref(f);
    if (r->body != NULL) {
        if (mw_stream_frame(c, r->body, (size_t)first, (size_t)count) != 0)
            mw_conn_close(c, 0, NULL, 0);
        return;
    }
    cs->metrics->static_streamed++;
    {
        int fd = r->fd;
        r->fd = -1; /* the stream owns it now */
        if (mw_stream_file(c, fd, &r->st, first, count) != 0)
            mw_conn_close(c, 0, NULL, 0);
    }
}

/* No file for the request: 0 when the caller takes it elsewhere (pass), else
 * the 404 (detail for the debug log) and 1. */
static int no_file(mw_conn_t *c, int pass, const char *detail, int head)
{
    if (pass)
        return 0;
    not_found(c, detail, head);
    return 1;
}

static void reply_error(mw_conn_t *c, int err, int head)
{
    switch (err) {
    case MW_ETOOBIG:
        reply_text(c, 403, "file too large to serve", NULL, NULL, head);
        break;
    case MW_ENOMEM:
        reply_text(c, 503, "out of memory", NULL, "Retry-After: 5\r\n", head);
        break;
    case MW_EAGAIN:
        reply_text(c, 503, "the file is changing, try again", NULL, "Retry-After: 1\r\n", head);
        break;
    case MW_EIO:
        reply_text(c, 500, "the file could not be read", NULL, NULL, head);
        break;
    default:
        not_found(c, "outside the root, hidden or unreadable", head);
        break;
    }
}

/* True for a GET with a Range header: it is answered in the identity encoding. */
static int ranged(const mw_http_req_t *req, int head)
{
    size_t len;
    return !head && mw_http_header(req, "Range", 0, &len) != NULL;
}

int mw_static_serve(mw_conn_t *c, int pass)
{
    const mw_config_t *cfg = c->conns->cfg;
    const mw_http_req_t *req = c->http;
    int method = req->parser.method, head = method == HTTP_HEAD;
    char rel[PATH_MAX], path[PATH_MAX], gzpath[PATH_MAX];
    size_t raw_len, rel_len, root_len = strlen(cfg->static_root), plen;
    const char *raw = mw_http_path(req, &raw_len);
    struct stat st, gst;
    mw_static_rep_t rep = {.fd = -1};
    int r, dir, has_gz = 0, want_gz = 0, zippable = 0, n;

    if (method != HTTP_GET && !head) {
        if (pass)
            return 0;
        reply_text(c, 405, "only GET and HEAD are allowed here", NULL, "Allow: GET, HEAD\r\n", 0);
        return 1;
    }
    r = mw_static_path_normalize(raw, raw_len, rel, sizeof(rel), &rel_len);
    if (r == MW_EINVAL) {
        if (pass)
            return 0;
        reply_text(c, 400, "malformed percent escape in the path", NULL, NULL, head);
        return 1;
    }
    if (r != 0)
        return no_file(c, pass, "refused path (.., dotfile, backslash or control character)", head);
    while (root_len > 0 && cfg->static_root[root_len - 1] == '/')
        root_len--;
    dir = rel[rel_len - 1] == '/';
    n = snprintf(path, sizeof(path), "%.*s%s%s", (int)root_len, cfg->static_root, rel,
                 dir ? cfg->static_index : "");
    if (n < 0 || (size_t)n >= sizeof(path) || stat(path, &st) != 0)
        return no_file(c, pass, NULL, head);
    plen = (size_t)n;
    if (S_ISDIR(st.st_mode) && !dir) {
        redirect(c, rel, rel_len, head);
        return 1;
    }
    if (!S_ISREG(st.st_mode))
        return no_file(c, pass, "not a regular file", head);
    /* FILE.gz next to FILE: its existence decides Vary, the client decides
     * which. Without one, a compressible file the cache can hold gets a gzip
     * variant made once. A request with a Range gets the identity encoding. */
    if (!(plen >= 3 && strcasecmp(path + plen - 3, ".gz") == 0) && plen + 3 < sizeof(gzpath)) {
        memcpy(gzpath, path, plen);
        memcpy(gzpath + plen, ".gz", 4);
        has_gz = stat(gzpath, &gst) == 0 && S_ISREG(gst.st_mode);
        zippable = !has_gz && mw_static_compressible(path, plen) &&
                   (uint64_t)st.st_size <= mw__static_cache_limit(cfg);
    }
    if ((has_gz || zippable) && !ranged(req, head)) {
        size_t ae_len;
        char *ae = header_joined(req, "Accept-Encoding", &ae_len);
        want_gz = mw_static_accepts_gzip(ae, ae_len);
        free(ae);
    }
    if (want_gz && has_gz) {
        r = mw__static_rep_open(cfg, gzpath, &gst, &rep);
        if (r == MW_ENOMEM) {
            reply_error(c, r, head);
            return 1;
        }
        if (r == 0) {
            rep.gz = 1;
        } else {
            want_gz = 0; /* serve FILE itself; a hidden or escaping sibling does not exist */
            if (r == MW_ENOTFOUND)
                has_gz = 0;
        }
    }
    if (!rep.gz) {
        r = mw__static_rep_open(cfg, path, &st, &rep);
        if (r == MW_ENOTFOUND)
            return no_file(c, pass, "outside the root, hidden or unreadable", head);
        if (r != 0) {
            reply_error(c, r, head);
            return 1;
        }
        if (want_gz && zippable && rep.e != NULL) {
            mw__static_make_gz(c->conns, rep.e, !rep.owned);
            if (rep.e->gz != NULL) {
                rep.body = rep.e->gz;
                rep.size = rep.e->gz->len;
                rep.etag = rep.e->gz_etag;
                rep.gz = 1;
            }
        }
    }
    reply_rep(c, path, plen, &rep, has_gz || zippable, head);
    mw__static_rep_close(&rep);
    return 1;
}
