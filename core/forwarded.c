/* The client's address behind trusted proxies. See forwarded.h. */
#include "forwarded.h"
#include "http.h"
#include "moonwire/error.h"

#include <arpa/inet.h>
#include <string.h>

/* Whether s[0..len) is a port number, 0 to 65535. */
static int is_port(const char *s, size_t len)
{
    unsigned v = 0;
    if (len == 0 || len > 5)
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    return v <= 65535;
}

int mw_forwarded_parse_addr(const char *s, size_t len, mw_addr_t *out)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *colon;

    s = mw_http_trim(s, &len);
    if (len > 0 && s[0] == '[') {
        /* "[v6]" or "[v6]:port" */
        const char *close = memchr(s, ']', len);
        if (close == NULL)
            return MW_EINVAL;
        if ((size_t)(close + 1 - s) != len &&
            (close[1] != ':' || !is_port(close + 2, len - (size_t)(close + 2 - s))))
            return MW_EINVAL;
        len = (size_t)(close - s - 1);
        s++;
        if (memchr(s, ':', len) == NULL)
            return MW_EINVAL; /* brackets hold IPv6 only */
    } else if ((colon = memchr(s, ':', len)) != NULL &&
               memchr(colon + 1, ':', len - (size_t)(colon + 1 - s)) == NULL) {
        /* One colon: "v4:port". */
        if (!is_port(colon + 1, len - (size_t)(colon + 1 - s)))
            return MW_EINVAL;
        len = (size_t)(colon - s);
    }
    if (len == 0 || len >= sizeof(host))
        return MW_EINVAL;
    memcpy(host, s, len);
    host[len] = '\0';
    memset(out, 0, sizeof(*out));
    if (inet_pton(AF_INET, host, &out->in4.sin_addr) == 1) {
        out->in4.sin_family = AF_INET;
        return 0;
    }
    if (strchr(host, ':') != NULL && inet_pton(AF_INET6, host, &out->in6.sin6_addr) == 1) {
        out->in6.sin6_family = AF_INET6;
        return 0;
    }
    return MW_EINVAL;
}

void mw_forwarded_init(mw_forwarded_t *f, const mw_acl_t *trusted, const mw_addr_t *peer)
{
    f->trusted = trusted;
    f->client = *peer;
    f->hops = 0;
    f->done = trusted == NULL || trusted->n == 0 || !mw_acl_allows(trusted, peer);
}

int mw_forwarded_feed(mw_forwarded_t *f, const char *value, size_t len)
{
    size_t end = len;

    /* From the right: each entry is value[start..end). */
    while (!f->done) {
        size_t start = end;
        mw_addr_t a;
        while (start > 0 && value[start - 1] != ',')
            start--;
        {
            size_t n = end - start;
            const char *s = mw_http_trim(value + start, &n);
            if (n > 0) { /* empty entries (", ,") are skipped */
                if (f->hops++ >= MW_FORWARDED_MAX_HOPS || mw_forwarded_parse_addr(s, n, &a) != 0) {
                    f->done = 1;
                    break;
                }
                f->client = a;
                if (!mw_acl_allows(f->trusted, &a))
                    f->done = 1;
            }
        }
        if (start == 0)
            break;
        end = start - 1;
    }
    return f->done;
}

void mw_forwarded_client(const mw_acl_t *trusted, const mw_http_req_t *req, const mw_addr_t *peer,
                         mw_addr_t *out)
{
    mw_forwarded_t f;
    const char *v;
    size_t len;
    int n = 0;

    mw_forwarded_init(&f, trusted, peer);
    if (!f.done) {
        while (mw_http_header(req, "X-Forwarded-For", n, &len) != NULL)
            n++;
        for (int i = n - 1; i >= 0 && !f.done; i--) {
            v = mw_http_header(req, "X-Forwarded-For", i, &len);
            mw_forwarded_feed(&f, v, len);
        }
        if (n == 0 && (v = mw_http_header(req, "X-Real-IP", 0, &len)) != NULL) {
            mw_addr_t a;
            if (mw_forwarded_parse_addr(v, len, &a) == 0)
                f.client = a;
        }
    }
    *out = f.client;
}
