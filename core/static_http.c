/* HTTP as static files speak it: request paths decoded and normalised,
 * names (fingerprinted, content types, compressible), Accept-Encoding,
 * entity tags, HTTP dates, byte ranges. Pure functions of their arguments.
 * See static_http.h.
 */
#include "static_http.h"
#include "http.h"
#include "moonwire/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

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
