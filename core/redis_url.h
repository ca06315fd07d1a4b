/* The address of a Redis server, as cluster.redis spells it:
 * "redis://[:password@]host[:port][/db]" (or "redis://user:password@..."),
 * "unix:///path" or "unix:/path", and a sentinel's "host:port". The
 * configuration checks them; the backplane connects to them.
 */
#ifndef MOONWIRE_REDIS_URL_H
#define MOONWIRE_REDIS_URL_H

typedef struct {
    char host[256];     /* "" for a unix socket */
    char path[256];     /* the unix socket, or "" */
    char password[256]; /* "" for none */
    int port;           /* 6379 unless given */
    int db;             /* 0 unless given */
} mw_redis_url_t;

/* Parses url into out. Returns 0, or MW_EINVAL when it is none of the forms
 * above, a part is longer than 255 bytes, or the port or db is out of range. */
int mw_redis_url_parse(const char *url, mw_redis_url_t *out);

/* Parses "host:port" (a name, an IPv4 address, or "[v6]:port"), as
 * cluster.sentinels spells a sentinel, into host (at most 255 bytes, without
 * the brackets) and port. Returns 0, or MW_EINVAL. */
int mw_redis_hostport_parse(const char *s, char host[256], int *port);

#endif
