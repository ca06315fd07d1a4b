/* The address of a Redis server, as cluster.redis spells it. See redis_url.h. */
#include "redis_url.h"
#include "moonwire/error.h"

#include <stdlib.h>
#include <string.h>

int mw_redis_url_parse(const char *url, mw_redis_url_t *out)
{
    char *host = out->host, *path = out->path, *password = out->password;
    const char *p, *at, *slash, *colon;

    host[0] = path[0] = password[0] = '\0';
    out->port = 6379;
    out->db = 0;
    if (strncmp(url, "unix://", 7) == 0 || strncmp(url, "unix:", 5) == 0) {
        p = url + (strncmp(url, "unix://", 7) == 0 ? 7 : 5);
        if (*p != '/' || strlen(p) >= 256)
            return MW_EINVAL;
        strcpy(path, p);
        return 0;
    }
    if (strncmp(url, "redis://", 8) != 0)
        return MW_EINVAL;
    p = url + 8;
    at = strchr(p, '@');
    if (at != NULL) {
        const char *pw = memchr(p, ':', (size_t)(at - p));
        pw = pw ? pw + 1 : p; /* "redis://:secret@host" or "redis://user:secret@" */
        if ((size_t)(at - pw) >= 256)
            return MW_EINVAL;
        memcpy(password, pw, (size_t)(at - pw));
        password[at - pw] = '\0';
        p = at + 1;
    }
    slash = strchr(p, '/');
    colon = memchr(p, ':', slash ? (size_t)(slash - p) : strlen(p));
    {
        const char *hend = colon ? colon : slash ? slash : p + strlen(p);
        if (hend == p || (size_t)(hend - p) >= 256)
            return MW_EINVAL;
        memcpy(host, p, (size_t)(hend - p));
        host[hend - p] = '\0';
    }
    if (colon != NULL) {
        char *end;
        long v = strtol(colon + 1, &end, 10);
        if (end == colon + 1 || v < 1 || v > 65535 || (*end != '\0' && *end != '/'))
            return MW_EINVAL;
        out->port = (int)v;
    }
    if (slash != NULL && slash[1] != '\0') {
        char *end;
        long v = strtol(slash + 1, &end, 10);
        if (*end != '\0' || v < 0 || v > 65535)
            return MW_EINVAL;
        out->db = (int)v;
    }
    return 0;
}

int mw_redis_hostport_parse(const char *s, char host[256], int *port)
{
    const char *colon, *hend = NULL, *hstart = s;
    char *end;
    long v;

    if (s[0] == '[') {
        hstart = s + 1;
        hend = strchr(hstart, ']');
        if (hend == NULL || hend[1] != ':')
            return MW_EINVAL;
        colon = hend + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL || memchr(s, ':', (size_t)(colon - s)) != NULL)
            return MW_EINVAL; /* a bare IPv6 address needs its brackets */
        hend = colon;
    }
    if (hend == hstart || (size_t)(hend - hstart) >= 256)
        return MW_EINVAL;
    v = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || *end != '\0' || v < 1 || v > 65535)
        return MW_EINVAL;
    memcpy(host, hstart, (size_t)(hend - hstart));
    host[hend - hstart] = '\0';
    *port = (int)v;
    return 0;
}
