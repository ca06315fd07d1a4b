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
 * The cache is process-wide, like the frame pool: the core runs one loop per
 * process. Its bound is the static.cache_size of the request that fills it.
 */
#include "static.h"
#include "conn.h"
#include "frame.h"
#include "htab.h"
#include "http.h"
#include "list.h"
#include "stream.h"
#include "moonwire/config.h"
#include "moonwire/error.h"
#include "moonwire/log.h"
#include "moonwire/metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define ETAG_BYTES 16 /* of the SHA-256 of the content: 128 bits, 32 hex digits */
#define ETAG_MAX 64   /* quoted, with a "-gz" suffix, or from size and mtime */
#define READ_ATTEMPTS 3
#define GZIP_LEVEL 6

/* One file's bytes and validators. */
typedef struct entry_s {
    mw_list_t lru;        /* in cache.lru, least recently used first; self-linked if not cached */
    mw_hnode_t node;      /* in cache.table, by key */
    char *key; /* the path as opened: root + request path */
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    size_t bytes;         /* what it counts in cache.bytes: the file and its gzip variant */
    mw_frame_t *body;     /* one reference: the whole file, as a raw frame */
    mw_frame_t *gz;       /* its gzip variant made on the fly, or NULL */
    uint8_t gz_tried;     /* gz was made, or found not worth it */
    char etag[ETAG_MAX];  /* quoted, as sent */
    char gz_etag[ETAG_MAX];
} entry_t;

static struct {
    mw_htab_t table; /* key -> entry_t; no buckets until the first insert */
    size_t bytes; /* file bytes held by cached entries */
    mw_list_t lru;
    int root_missing; /* the root could not be resolved; logged once until it comes back */
} cache = {.lru = {&cache.lru, &cache.lru}};

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

/* Path decoding ------------------------------------------------------------- */

int mw_static_path_normalize(const char *raw, size_t len, char *out, size_t cap, size_t *out_len)
{
    size_t i = 1, o = 1, seg = 1; /* seg: where the current segment starts in out */

    if (len == 0 || raw[0] != '/')
        return MW_ENOTFOUND;
    if (cap < 2)
        return MW_ETOOBIG;
    out[0] = '/';
    for (;;) {
        int ch, end = i >= len;

        if (end) {
            ch = '/';
        } else if (raw[i] == '%') {
            int hi = i + 2 < len ? mw_http_hexval((unsigned char)raw[i + 1]) : -1;
            int lo = i + 2 < len ? mw_http_hexval((unsigned char)raw[i + 2]) : -1;
            if (hi < 0 || lo < 0)
                return MW_EINVAL;
            ch = hi * 16 + lo;
            i += 3;
        } else {
            ch = (unsigned char)raw[i++];
        }
        if (ch == '/') {
            /* The segment out[seg..o) is complete: judge it. */
            size_t n = o - seg;
            if (n == 1 && out[seg] == '.') {
                o = seg; /* "." goes */
            } else if (n > 0 && out[seg] == '.') {
                return MW_ENOTFOUND; /* "..", and dotfiles such as .git or .env */
            } else if (n > 0 && !end) {
                if (o + 1 >= cap)
                    return MW_ETOOBIG;
                out[o++] = '/';
            } /* an empty segment (a run of slashes) adds nothing */
            if (end)
                break;
            seg = o;
            continue;
        }
        if (ch < 0x20 || ch == 0x7f || ch == '\\')
            return MW_ENOTFOUND; /* NUL, control characters, Windows separators */
        if (o + 1 >= cap)
            return MW_ETOOBIG;
        out[o++] = (char)ch;
    }
    out[o] = '\0';
    *out_len = o;
    return 0;
}

/* Names ------------------------------------------------------------------------- */

/* The last segment of path[0..len). */
static const char *base_name(const char *path, size_t len, size_t *n)
{
    const char *slash = memrchr(path, '/', len);
    const char *name = slash != NULL ? slash + 1 : path;
    *n = len - (size_t)(name - path);
    return name;
}

int mw_static_is_fingerprinted(const char *path, size_t len)
{
    size_t n;
    const char *name = base_name(path, len, &n);
    const char *ext = memrchr(name, '.', n);
    const char *part = name;

    if (ext == NULL)
        return 0;
    while (part < ext) {
        const char *dot = memchr(part, '.', (size_t)(ext - part));
        const char *end = dot != NULL ? dot : ext;
        const char *p = part;
        while (p < end && mw_http_hexval((unsigned char)*p) >= 0)
            p++;
        if (p == end && end - part >= 8)
            return 1;
        part = end + 1;
    }
    return 0;
}

static const struct {
    const char *ext;
    const char *type;
    int compressible; /* text that gzip shrinks: compressed on the fly when cached */
} types[] = {
    {"html", "text/html; charset=utf-8", 1},
    {"htm", "text/html; charset=utf-8", 1},
    {"css", "text/css; charset=utf-8", 1},
    {"js", "text/javascript; charset=utf-8", 1},
    {"mjs", "text/javascript; charset=utf-8", 1},
    {"txt", "text/plain; charset=utf-8", 1},
    {"md", "text/markdown; charset=utf-8", 1},
    {"csv", "text/csv; charset=utf-8", 1},
    {"xml", "text/xml; charset=utf-8", 1},
    {"json", "application/json", 1},
    {"map", "application/json", 1},
    {"webmanifest", "application/manifest+json", 1},
    {"svg", "image/svg+xml", 1},
    {"wasm", "application/wasm", 0},
    {"pdf", "application/pdf", 0},
    {"gz", "application/gzip", 0},
    {"zip", "application/zip", 0},
    {"png", "image/png", 0},
    {"jpg", "image/jpeg", 0},
    {"jpeg", "image/jpeg", 0},
    {"gif", "image/gif", 0},
    {"webp", "image/webp", 0},
    {"avif", "image/avif", 0},
    {"ico", "image/x-icon", 0},
    {"woff", "font/woff", 0},
    {"woff2", "font/woff2", 0},
    {"ttf", "font/ttf", 0},
    {"otf", "font/otf", 0},
    {"mp3", "audio/mpeg", 0},
    {"ogg", "audio/ogg", 0},
    {"wav", "audio/wav", 0},
    {"mp4", "video/mp4", 0},
    {"webm", "video/webm", 0},
};

/* The row of types[] for the extension of path's last segment, or -1. */
static int type_of(const char *path, size_t len)
{
    size_t n;
    const char *name = base_name(path, len, &n);
    const char *dot = memrchr(name, '.', n);

    if (dot != NULL) {
        const char *ext = dot + 1;
        size_t elen = n - (size_t)(ext - name);
        for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
            if (strlen(types[i].ext) == elen && strncasecmp(types[i].ext, ext, elen) == 0)
                return (int)i;
    }
    return -1;
}

const char *mw_static_content_type(const char *path, size_t len)
{
    int i = type_of(path, len);
    return i >= 0 ? types[i].type : "application/octet-stream";
}

int mw_static_compressible(const char *path, size_t len)
{
    int i = type_of(path, len);
    return i >= 0 && types[i].compressible;
}

/* Request headers -------------------------------------------------------------- */

/* A qvalue (RFC 9110 12.4.2) in thousandths, or -1 when malformed. */
static int parse_q(const char *s, size_t len)
{
    int q, scale = 100;

    if (len == 0 || (s[0] != '0' && s[0] != '1'))
        return -1;
    q = (s[0] - '0') * 1000;
    if (len == 1)
        return q;
    if (s[1] != '.' || len > 5)
        return -1;
    for (size_t i = 2; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        q += (s[i] - '0') * scale;
        scale /= 10;
    }
    return q > 1000 ? -1 : q;
}

/* The q-value of one Accept-Encoding element ("gzip;q=0.5"), with its coding in
 * *coding; -1 when a q parameter is malformed. */
static int element_q(const char *s, size_t len, const char **coding, size_t *clen)
{
    const char *semi = memchr(s, ';', len);
    int q = 1000;

    *clen = semi != NULL ? (size_t)(semi - s) : len;
    *coding = mw_http_trim(s, clen);
    while (semi != NULL) {
        const char *p = semi + 1;
        size_t rest = len - (size_t)(p - s), plen, nlen, vlen;
        const char *eq, *name, *value;

        semi = memchr(p, ';', rest);
        plen = semi != NULL ? (size_t)(semi - p) : rest;
        eq = memchr(p, '=', plen);
        if (eq == NULL)
            continue;
        nlen = (size_t)(eq - p);
        name = mw_http_trim(p, &nlen);
        vlen = plen - (size_t)(eq + 1 - p);
        value = mw_http_trim(eq + 1, &vlen);
        if (nlen == 1 && (name[0] == 'q' || name[0] == 'Q') && (q = parse_q(value, vlen)) < 0)
            return -1;
    }
    return q;
}

int mw_static_accepts_gzip(const char *value, size_t len)
{
    int gzip_q = -1, star_q = -1;

    if (value == NULL)
        return 0;
    while (len > 0) {
        const char *comma = memchr(value, ',', len);
        size_t elen = comma != NULL ? (size_t)(comma - value) : len, clen;
        const char *coding;
        int q = element_q(value, elen, &coding, &clen);

        if (q >= 0) {
            if ((clen == 4 && strncasecmp(coding, "gzip", 4) == 0) ||
                (clen == 6 && strncasecmp(coding, "x-gzip", 6) == 0))
                gzip_q = q > gzip_q ? q : gzip_q;
            else if (clen == 1 && coding[0] == '*')
                star_q = q > star_q ? q : star_q;
        }
        if (comma == NULL)
            break;
        len -= elen + 1;
        value = comma + 1;
    }
    return gzip_q >= 0 ? gzip_q > 0 : star_q > 0;
}

int mw_static_etag_matches(const char *value, size_t len, const char *etag)
{
    size_t i = 0, elen = strlen(etag);

    if (value == NULL)
        return 0;
    while (i < len) {
        const char *close;
        size_t start;

        if (value[i] == ' ' || value[i] == '\t' || value[i] == ',') {
            i++;
            continue;
        }
        if (value[i] == '*')
            return 1;
        if (len - i >= 2 && value[i] == 'W' && value[i + 1] == '/')
            i += 2;
        if (i >= len || value[i] != '"')
            return 0;
        start = i;
        close = memchr(value + i + 1, '"', len - i - 1);
        if (close == NULL)
            return 0;
        i = (size_t)(close - value) + 1;
        if (i - start == elen && memcmp(value + start, etag, elen) == 0)
            return 1;
    }
    return 0;
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

static const char month_names[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

void mw_static_http_date(time_t t, char out[30])
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    char buf[64];
    struct tm tm;

    if (gmtime_r(&t, &tm) == NULL || tm.tm_year + 1900 < 0 || tm.tm_year + 1900 > 9999)
        memset(&tm, 0, sizeof(tm)); /* out of range: 1900, harmless for a validator */
    snprintf(buf, sizeof(buf), "%.3s, %02u %.3s %04u %02u:%02u:%02u GMT",
             days[(unsigned)tm.tm_wday % 7], (unsigned)tm.tm_mday % 100,
             month_names[(unsigned)tm.tm_mon % 12], (unsigned)(tm.tm_year + 1900) % 10000,
             (unsigned)tm.tm_hour % 100, (unsigned)tm.tm_min % 100, (unsigned)tm.tm_sec % 100);
    memcpy(out, buf, 29); /* always 29 characters */
    out[29] = '\0';
}

/* The number in s[0..n) of decimal digits only (a leading space allowed
 * when space is set, for asctime's day), or -1. */
static int number(const char *s, size_t n, int space)
{
    int v = 0;

    for (size_t i = 0; i < n; i++) {
        if (space && i == 0 && s[i] == ' ' && n > 1)
            continue;
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

static int month_of(const char *s)
{
    for (int i = 0; i < 12; i++)
        if (memcmp(s, month_names[i], 3) == 0)
            return i;
    return -1;
}

/* "08:49:37" into tm. Returns 0 or -1. */
static int clock_of(const char *s, struct tm *tm)
{
    if (s[2] != ':' || s[5] != ':')
        return -1;
    tm->tm_hour = number(s, 2, 0);
    tm->tm_min = number(s + 3, 2, 0);
    tm->tm_sec = number(s + 6, 2, 0);
    return tm->tm_hour < 0 || tm->tm_hour > 23 || tm->tm_min < 0 || tm->tm_min > 59 ||
                   tm->tm_sec < 0 || tm->tm_sec > 60
               ? -1
               : 0;
}

int mw_static_parse_http_date(const char *s, size_t len, time_t *out)
{
    const char *comma;
    struct tm tm, back;
    time_t t;
    int year;

    memset(&tm, 0, sizeof(tm));
    s = mw_http_trim(s, &len);
    comma = memchr(s, ',', len);
    if (comma != NULL && comma - s == 3 && len == 29) {
        /* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" */
        const char *p = comma + 1;
        if (p[0] != ' ' || p[3] != ' ' || p[7] != ' ' || p[12] != ' ' ||
            memcmp(p + 21, " GMT", 4) != 0 || clock_of(p + 13, &tm) != 0)
            return MW_EINVAL;
        tm.tm_mday = number(p + 1, 2, 0);
        tm.tm_mon = month_of(p + 4);
        year = number(p + 8, 4, 0);
    } else if (comma != NULL && comma - s >= 6 && comma - s <= 9 &&
               len == (size_t)(comma - s) + 24) {
        /* rfc850-date: "Sunday, 06-Nov-94 08:49:37 GMT" */
        const char *p = comma + 1;
        time_t now = time(NULL);
        struct tm nt;
        if (p[0] != ' ' || p[3] != '-' || p[7] != '-' || p[10] != ' ' ||
            memcmp(p + 19, " GMT", 4) != 0 || clock_of(p + 11, &tm) != 0)
            return MW_EINVAL;
        tm.tm_mday = number(p + 1, 2, 0);
        tm.tm_mon = month_of(p + 4);
        year = number(p + 8, 2, 0);
        /* Two digits: the most recent such year not more than 50 years ahead
         * (RFC 9110 section 5.6.7). */
        if (year >= 0 && gmtime_r(&now, &nt) != NULL) {
            year += (nt.tm_year + 1900) / 100 * 100;
            if (year > nt.tm_year + 1900 + 50)
                year -= 100;
        }
    } else if (comma == NULL && len == 24) {
        /* asctime-date: "Sun Nov  6 08:49:37 1994" */
        if (s[3] != ' ' || s[7] != ' ' || s[10] != ' ' || s[19] != ' ' ||
            clock_of(s + 11, &tm) != 0)
            return MW_EINVAL;
        tm.tm_mon = month_of(s + 4);
        tm.tm_mday = number(s + 8, 2, 1);
        year = number(s + 20, 4, 0);
    } else {
        return MW_EINVAL;
    }
    if (tm.tm_mon < 0 || tm.tm_mday < 1 || tm.tm_mday > 31 || year < 1900)
        return MW_EINVAL;
    tm.tm_year = year - 1900;
    back = tm;
    t = timegm(&tm);
    /* A day the month does not have ("31 Feb") comes out as another date. */
    if (t == (time_t)-1 || tm.tm_mday != back.tm_mday)
        return MW_EINVAL;
    *out = t;
    return 0;
}

/* Decimal digits s[0..n) (at least one), saturating at UINT64_MAX. Returns 0 or -1. */
static int pos_of(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;

    if (n == 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v > (UINT64_MAX - 9) / 10 ? UINT64_MAX : v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return 0;
}

mw_static_range_t mw_static_parse_range(const char *value, size_t len, uint64_t size,
                                        uint64_t *first, uint64_t *last)
{
    const char *p, *dash;
    size_t n;
    uint64_t a, b;

    value = mw_http_trim(value, &len);
    if (len < 6 || strncasecmp(value, "bytes=", 6) != 0)
        return MW_RANGE_IGNORE; /* another unit, or not a range at all */
    p = value + 6;
    n = len - 6;
    p = mw_http_trim(p, &n);
    /* Several ranges get the whole file (RFC 9110 section 14.2 allows it):
     * a multipart reply is something no browser or CDN needs from us. */
    if (n == 0 || memchr(p, ',', n) != NULL || size == 0)
        return MW_RANGE_IGNORE;
    dash = memchr(p, '-', n);
    if (dash == NULL)
        return MW_RANGE_IGNORE;
    if (dash == p) {
        /* suffix-range: the last b bytes */
        if (pos_of(p + 1, n - 1, &b) != 0)
            return MW_RANGE_IGNORE;
        if (b == 0)
            return MW_RANGE_UNSATISFIABLE;
        *first = b >= size ? 0 : size - b;
        *last = size - 1;
        return MW_RANGE_OK;
    }
    if (pos_of(p, (size_t)(dash - p), &a) != 0)
        return MW_RANGE_IGNORE;
    if (dash + 1 == p + n) {
        b = UINT64_MAX; /* "a-": to the end */
    } else if (pos_of(dash + 1, (size_t)(p + n - dash - 1), &b) != 0 || b < a) {
        return MW_RANGE_IGNORE; /* malformed, or last before first: not a valid range */
    }
    if (a >= size)
        return MW_RANGE_UNSATISFIABLE;
    *first = a;
    *last = b >= size ? size - 1 : b;
    return MW_RANGE_OK;
}

int mw_static_if_range_holds(const char *value, size_t len, const char *etag, time_t mtime)
{
    time_t t;

    value = mw_http_trim(value, &len);
    if (len > 0 && (value[0] == '"' || value[0] == 'W'))
        /* The strong comparison: a weak tag never matches. */
        return len == strlen(etag) && memcmp(value, etag, len) == 0;
    return mw_static_parse_http_date(value, len, &t) == 0 && t == mtime;
}

/* The cache ------------------------------------------------------------------------ */

static uint64_t hash_key(const char *s)
{
    return mw_hash_bytes(s, strlen(s));
}

static void entry_free(entry_t *e)
{
    if (e->body != NULL)
        mw_frame_unref(e->body); /* replies being written keep their own references */
    if (e->gz != NULL)
        mw_frame_unref(e->gz);
    free(e->key);
    free(e);
}

static entry_t *cache_find(const char *key, uint64_t h)
{
    if (cache.table.buckets == NULL)
        return NULL;
    for (mw_hnode_t *n = mw_htab_chain(&cache.table, h); n != NULL; n = n->next) {
        entry_t *e = MW_CONTAINER_OF(n, entry_t, node);
        if (n->hash == h && strcmp(e->key, key) == 0)
            return e;
    }
    return NULL;
}

static void cache_unlink(entry_t *e)
{
    mw_htab_remove(&cache.table, &e->node);
    mw_list_remove(&e->lru);
    cache.bytes -= e->bytes;
}

/* Evicts the least recently used entries other than keep until the cache
 * holds limit bytes or fewer. */
static void cache_trim(size_t limit, const entry_t *keep)
{
    while (cache.bytes > limit && !mw_list_empty(&cache.lru)) {
        entry_t *old = MW_CONTAINER_OF(cache.lru.next, entry_t, lru);
        if (old == keep)
            break; /* the most recently used: nothing else is left */
        cache_unlink(old);
        entry_free(old);
    }
}

/* Keeps e when it fits in limit bytes, evicting the least recently used.
 * Returns 1 when e is now owned by the cache, 0 when the caller keeps it. */
static int cache_insert(entry_t *e, size_t limit)
{
    size_t size = e->bytes;

    if (size > limit)
        return 0;
    if (cache.table.buckets == NULL && mw_htab_init(&cache.table, 64) != 0)
        return 0;
    cache_trim(limit > size ? limit - size : 0, NULL);
    mw_htab_insert(&cache.table, &e->node, e->node.hash);
    mw_list_insert_tail(&cache.lru, &e->lru);
    cache.bytes += size;
    return 1;
}

void mw_static_cache_drain(void)
{
    while (!mw_list_empty(&cache.lru)) {
        entry_t *e = MW_CONTAINER_OF(cache.lru.next, entry_t, lru);
        cache_unlink(e);
        entry_free(e);
    }
    mw_htab_free(&cache.table);
}

size_t mw_static_cache_bytes(void)
{
    return cache.bytes;
}

/* Loading files ------------------------------------------------------------------- */

static int same_file(const entry_t *e, const struct stat *st)
{
    return e->dev == st->st_dev && e->ino == st->st_ino && e->size == st->st_size &&
           e->mtime.tv_sec == st->st_mtim.tv_sec && e->mtime.tv_nsec == st->st_mtim.tv_nsec;
}

/* True when the real path of path is under the real path of root and passes
 * through no dot segment below it (a symlink in the root may point at .git). */
static int inside_root(const char *root, const char *path)
{
    char rroot[PATH_MAX], rpath[PATH_MAX];
    size_t n;

    if (realpath(root, rroot) == NULL) {
        if (!cache.root_missing)
            mw_log_warn("static: the root %s can not be resolved (%s): every file is 404", root,
                        strerror(errno));
        cache.root_missing = 1;
        return 0;
    }
    cache.root_missing = 0;
    if (realpath(path, rpath) == NULL)
        return 0;
    n = strcmp(rroot, "/") == 0 ? 0 : strlen(rroot);
    if (strncmp(rpath, rroot, n) != 0 || rpath[n] != '/')
        return 0;
    return strstr(rpath + n, "/.") == NULL;
}

/* Reads size bytes of fd into dst. Returns 0, MW_EAGAIN when the file is
 * shorter than that now, or MW_EIO. */
static int read_all(int fd, uint8_t *dst, size_t size)
{
    size_t got = 0;

    while (got < size) {
        ssize_t n = pread(fd, dst + got, size - got, (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return MW_EIO;
        if (n == 0)
            return MW_EAGAIN;
        got += (size_t)n;
    }
    return 0;
}

static int too_big(const mw_config_t *cfg, const char *path, off_t size)
{
    if ((uint64_t)size <= cfg->static_max_file_size)
        return 0;
    mw_log_warn("static: %s is %lld bytes, over static.max_file_size (%zu): refused with 403", path,
                (long long)size, cfg->static_max_file_size);
    return 1;
}

/* Reads the file at path (already stat'ed as a regular file) into a new entry.
 * Returns 0, MW_ENOTFOUND, MW_ETOOBIG, MW_ENOMEM, MW_EIO or MW_EAGAIN (it
 * kept changing while it was read). */
static int entry_read(const mw_config_t *cfg, const char *path, entry_t **out)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    struct stat st, after;
    entry_t *e = NULL;
    int fd, r = MW_EAGAIN;

    if (!inside_root(cfg->static_root, path)) {
        mw_log_debug("static: %s resolves outside the root or into a dotfile: 404", path);
        return MW_ENOTFOUND;
    }
    /* O_NONBLOCK: a FIFO put in place of the file must not block the loop. */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return MW_ENOTFOUND;
    e = calloc(1, sizeof(*e));
    if (e == NULL || (e->key = strdup(path)) == NULL) {
        r = MW_ENOMEM;
        goto fail;
    }
    mw_list_init(&e->lru);
    for (int attempt = 0; attempt < READ_ATTEMPTS && r == MW_EAGAIN; attempt++) {
        if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
            r = MW_ENOTFOUND;
            goto fail;
        }
        if (too_big(cfg, path, st.st_size)) {
            r = MW_ETOOBIG;
            goto fail;
        }
        if (e->body != NULL)
            mw_frame_unref(e->body);
        e->body = mw_frame_new_raw(NULL, (size_t)st.st_size);
        if (e->body == NULL) {
            r = MW_ENOMEM;
            goto fail;
        }
        r = read_all(fd, e->body->bytes, (size_t)st.st_size);
        if (r == 0 && (fstat(fd, &after) != 0 || after.st_size != st.st_size ||
                       after.st_mtim.tv_sec != st.st_mtim.tv_sec ||
                       after.st_mtim.tv_nsec != st.st_mtim.tv_nsec))
            r = MW_EAGAIN; /* written to while read: the bytes may be torn */
    }
    if (r != 0) {
        if (r == MW_EAGAIN)
            mw_log_warn("static: %s kept changing while it was read: 503", path);
        else
            mw_log_error("static: reading %s failed: %s", path, strerror(errno));
        goto fail;
    }
    close(fd);
    fd = -1;
    if (EVP_Digest(e->body->bytes, (size_t)st.st_size, md, &mdlen, EVP_sha256(), NULL) != 1 ||
        mdlen < ETAG_BYTES) {
        r = MW_ENOMEM;
        goto fail;
    }
    e->etag[0] = '"';
    for (int i = 0; i < ETAG_BYTES; i++)
        snprintf(e->etag + 1 + 2 * i, 3, "%02x", md[i]);
    e->etag[ETAG_BYTES * 2 + 1] = '"';
    e->etag[ETAG_BYTES * 2 + 2] = '\0';
    e->dev = st.st_dev;
    e->ino = st.st_ino;
    e->size = st.st_size;
    e->bytes = (size_t)st.st_size;
    e->mtime = st.st_mtim;
    e->node.hash = hash_key(path); /* kept by mw_htab_insert */
    *out = e;
    return 0;

fail:
    if (fd >= 0)
        close(fd);
    if (e != NULL)
        entry_free(e);
    return r;
}

/* Finds the bytes of path, stat'ed as st, in the cache or reads them.
 * *owned is set when the caller must entry_free() the entry after use (it did
 * not fit the cache). Returns what entry_read() returns. */
static int load(const mw_config_t *cfg, const char *path, const struct stat *st, entry_t **out,
                int *owned)
{
    uint64_t h = hash_key(path);
    entry_t *e = cache_find(path, h);
    int r;

    *owned = 0;
    if (e != NULL) {
        if (same_file(e, st)) {
            mw_list_remove(&e->lru);
            mw_list_insert_tail(&cache.lru, &e->lru);
            *out = e;
            return 0;
        }
        cache_unlink(e);
        entry_free(e);
    }
    if (too_big(cfg, path, st->st_size))
        return MW_ETOOBIG; /* before reading a byte of it */
    r = entry_read(cfg, path, &e);
    if (r != 0)
        return r;
    *owned = !cache_insert(e, cfg->static_cache_size);
    *out = e;
    return 0;
}

/* Gzip on the fly ------------------------------------------------------------------ */

/* Makes e's gzip variant once (zlib, a gzip wrapper with no name and time 0,
 * so every node makes the same bytes), kept only when it is smaller. A cached
 * e grows by it in the cache's count, and older entries make room. */
static void make_gz(mw_conns_t *cs, entry_t *e, int cached)
{
    z_stream zs;
    mw_frame_t *out, *gz;
    size_t size = (size_t)e->size, bound;

    if (e->gz_tried)
        return;
    e->gz_tried = 1;
    memset(&zs, 0, sizeof(zs));
    if (deflateInit2(&zs, GZIP_LEVEL, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return;
    bound = deflateBound(&zs, (uLong)size);
    out = mw_frame_new_raw(NULL, bound);
    if (out == NULL) {
        deflateEnd(&zs);
        return;
    }
    zs.next_in = e->body->bytes;
    zs.avail_in = (uInt)size;
    zs.next_out = out->bytes;
    zs.avail_out = (uInt)bound;
    if (deflate(&zs, Z_FINISH) != Z_STREAM_END || zs.total_out >= size) {
        deflateEnd(&zs);
        mw_frame_unref(out); /* not worth it (already compressed, or tiny) */
        return;
    }
    deflateEnd(&zs);
    gz = mw_frame_new_raw(out->bytes, zs.total_out); /* the bound was for the worst case */
    mw_frame_unref(out);
    if (gz == NULL)
        return;
    e->gz = gz;
    /* Its own strong tag: another representation of the same content. */
    snprintf(e->gz_etag, sizeof(e->gz_etag), "%.*s-gz\"", (int)strlen(e->etag) - 1, e->etag);
    cs->metrics->static_gzipped++;
    if (cached) {
        e->bytes += gz->len;
        cache.bytes += gz->len;
        cache_trim(cs->cfg->static_cache_size, e);
    }
}

/* Replies ------------------------------------------------------------------------- */

/* What a reply sends: a file in memory (cached, or read for this request
 * alone) or a file streamed from disk. */
typedef struct {
    entry_t *e;       /* in memory; NULL when streamed */
    int owned;        /* e is not in the cache: freed after the reply */
    mw_frame_t *body; /* in memory: the bytes sent (e->body or e->gz) */
    int fd;           /* streamed: the open file; -1 otherwise */
    struct stat st;   /* streamed: the file as opened */
    uint64_t size;
    time_t mtime;
    const char *etag; /* quoted, as sent */
    char etag_buf[ETAG_MAX];
    int gz;           /* Content-Encoding: gzip */
} rep_t;

static void rep_close(rep_t *r)
{
    if (r->owned && r->e != NULL)
        entry_free(r->e); /* a reply holds its own reference to the bytes */
    r->e = NULL;
    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
}

/* The largest file the cache may hold: static.max_cached_file, and a
 * quarter of static.cache_size so that a few large files can not thrash it. */
static uint64_t cache_limit(const mw_config_t *cfg)
{
    size_t quarter = cfg->static_cache_size / 4;
    return cfg->static_max_cached_file < quarter ? cfg->static_max_cached_file : quarter;
}

/* Opens the representation at path (stat'ed as st): from the cache, read
 * whole, or opened to be streamed. Returns what entry_read() returns. */
static int rep_open(const mw_config_t *cfg, const char *path, const struct stat *st, rep_t *r)
{
    int fd;

    memset(r, 0, sizeof(*r));
    r->fd = -1;
    if (too_big(cfg, path, st->st_size))
        return MW_ETOOBIG;
    if ((uint64_t)st->st_size <= cache_limit(cfg)) {
        int err = load(cfg, path, st, &r->e, &r->owned);
        if (err != 0)
            return err;
        r->body = r->e->body;
        r->size = (uint64_t)r->e->size;
        r->mtime = r->e->mtime.tv_sec;
        r->etag = r->e->etag;
        return 0;
    }
    if (!inside_root(cfg->static_root, path)) {
        mw_log_debug("static: %s resolves outside the root or into a dotfile: 404", path);
        return MW_ENOTFOUND;
    }
    /* O_NONBLOCK: a FIFO put in place of the file must not block the loop. */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return MW_ENOTFOUND;
    if (fstat(fd, &r->st) != 0 || !S_ISREG(r->st.st_mode)) {
        close(fd);
        return MW_ENOTFOUND;
    }
    if (too_big(cfg, path, r->st.st_size)) {
        close(fd);
        return MW_ETOOBIG;
    }
    r->fd = fd;
    r->size = (uint64_t)r->st.st_size;
    r->mtime = r->st.st_mtim.tv_sec;
    /* Hashing would read the whole file before the head: the tag is made of
     * the size and modification time instead (as nginx does), so it changes
     * with every write and is the same on every node with the same file. */
    snprintf(r->etag_buf, sizeof(r->etag_buf), "\"%llx-%llx-%lx\"",
             (unsigned long long)r->st.st_size, (unsigned long long)r->st.st_mtim.tv_sec,
             (long)r->st.st_mtim.tv_nsec);
    r->etag = r->etag_buf;
    return 0;
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
static int not_modified(const mw_http_req_t *req, const rep_t *r)
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
static void reply_rep(mw_conn_t *c, const char *path, size_t plen, rep_t *r, int varies,
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

void mw_static_serve(mw_conn_t *c)
{
    const mw_config_t *cfg = c->conns->cfg;
    const mw_http_req_t *req = c->http;
    int method = req->parser.method, head = method == HTTP_HEAD;
    char rel[PATH_MAX], path[PATH_MAX], gzpath[PATH_MAX];
    size_t raw_len, rel_len, root_len = strlen(cfg->static_root), plen;
    const char *raw = mw_http_path(req, &raw_len);
    struct stat st, gst;
    rep_t rep = {.fd = -1};
    int r, dir, has_gz = 0, want_gz = 0, zippable = 0, n;

    if (method != HTTP_GET && !head) {
        reply_text(c, 405, "only GET and HEAD are allowed here", NULL, "Allow: GET, HEAD\r\n", 0);
        return;
    }
    r = mw_static_path_normalize(raw, raw_len, rel, sizeof(rel), &rel_len);
    if (r == MW_EINVAL) {
        reply_text(c, 400, "malformed percent escape in the path", NULL, NULL, head);
        return;
    }
    if (r != 0) {
        not_found(c, "refused path (.., dotfile, backslash or control character)", head);
        return;
    }
    while (root_len > 0 && cfg->static_root[root_len - 1] == '/')
        root_len--;
    dir = rel[rel_len - 1] == '/';
    n = snprintf(path, sizeof(path), "%.*s%s%s", (int)root_len, cfg->static_root, rel,
                 dir ? cfg->static_index : "");
    if (n < 0 || (size_t)n >= sizeof(path) || stat(path, &st) != 0) {
        not_found(c, NULL, head);
        return;
    }
    plen = (size_t)n;
    if (S_ISDIR(st.st_mode) && !dir) {
        redirect(c, rel, rel_len, head);
        return;
    }
    if (!S_ISREG(st.st_mode)) {
        not_found(c, "not a regular file", head);
        return;
    }
    /* FILE.gz next to FILE: its existence decides Vary, the client decides
     * which. Without one, a compressible file the cache can hold gets a gzip
     * variant made once. A request with a Range gets the identity encoding. */
    if (!(plen >= 3 && strcasecmp(path + plen - 3, ".gz") == 0) && plen + 3 < sizeof(gzpath)) {
        memcpy(gzpath, path, plen);
        memcpy(gzpath + plen, ".gz", 4);
        has_gz = stat(gzpath, &gst) == 0 && S_ISREG(gst.st_mode);
        zippable = !has_gz && mw_static_compressible(path, plen) &&
                   (uint64_t)st.st_size <= cache_limit(cfg);
    }
    if ((has_gz || zippable) && !ranged(req, head)) {
        size_t ae_len;
        char *ae = header_joined(req, "Accept-Encoding", &ae_len);
        want_gz = mw_static_accepts_gzip(ae, ae_len);
        free(ae);
    }
    if (want_gz && has_gz) {
        r = rep_open(cfg, gzpath, &gst, &rep);
        if (r == MW_ENOMEM) {
            reply_error(c, r, head);
            return;
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
        r = rep_open(cfg, path, &st, &rep);
        if (r != 0) {
            reply_error(c, r, head);
            return;
        }
        if (want_gz && zippable && rep.e != NULL) {
            make_gz(c->conns, rep.e, !rep.owned);
            if (rep.e->gz != NULL) {
                rep.body = rep.e->gz;
                rep.size = rep.e->gz->len;
                rep.etag = rep.e->gz_etag;
                rep.gz = 1;
            }
        }
    }
    reply_rep(c, path, plen, &rep, has_gz || zippable, head);
    rep_close(&rep);
}
