/* The files behind static.root as replies send them: the content cache of
 * small files, and the representation a reply sends (a file in memory, or
 * one opened to be streamed). static.c's, with the cache's figures for the
 * gauges and its drain at exit.
 */
#ifndef MOONWIRE_STATIC_CACHE_H
#define MOONWIRE_STATIC_CACHE_H

#include "frame.h"
#include "htab.h"
#include "list.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

typedef struct mw_config_s mw_config_t;
typedef struct mw_conns_s mw_conns_t;

#define MW_STATIC_ETAG_MAX 64 /* quoted, with a "-gz" suffix, or from size and mtime */

/* One file's bytes and validators. */
typedef struct mw_static_entry_s {
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
    char etag[MW_STATIC_ETAG_MAX];  /* quoted, as sent */
    char gz_etag[MW_STATIC_ETAG_MAX];
} mw_static_entry_t;

/* What a reply sends: a file in memory (cached, or read for this request
 * alone) or a file streamed from disk. */
typedef struct {
    mw_static_entry_t *e;       /* in memory; NULL when streamed */
    int owned;        /* e is not in the cache: freed after the reply */
    mw_frame_t *body; /* in memory: the bytes sent (e->body or e->gz) */
    int fd;           /* streamed: the open file; -1 otherwise */
    struct stat st;   /* streamed: the file as opened */
    uint64_t size;
    time_t mtime;
    const char *etag; /* quoted, as sent */
    char etag_buf[MW_STATIC_ETAG_MAX];
    int gz;           /* Content-Encoding: gzip */
} mw_static_rep_t;

/* Frees every cached file. Safe at any time (a reply being written keeps its
 * own reference); called at exit so leak checkers see a clean heap. */
void mw_static_cache_drain(void);

/* Bytes of file contents the cache holds now. */
size_t mw_static_cache_bytes(void);

/* The largest file the cache may hold: static.max_cached_file, and a
 * quarter of static.cache_size so that a few large files can not thrash it. */
uint64_t mw__static_cache_limit(const mw_config_t *cfg);

/* Opens the representation at path (stat'ed as st) into r: from the cache,
 * read whole, or opened to be streamed. Returns 0, MW_ENOTFOUND (outside the
 * root, hidden, gone or not a regular file), MW_ETOOBIG (over
 * static.max_file_size, logged), MW_ENOMEM, MW_EIO (logged) or MW_EAGAIN (it
 * kept changing while it was read, logged). */
int mw__static_rep_open(const mw_config_t *cfg, const char *path, const struct stat *st,
                        mw_static_rep_t *r);

/* Lets go of what r holds (an entry not in the cache, an open file). */
void mw__static_rep_close(mw_static_rep_t *r);

/* Makes e's gzip variant once (zlib, a gzip wrapper with no name and time 0,
 * so every node makes the same bytes), kept only when it is smaller; counted
 * in cs's metrics. A cached e grows by it in the cache's count, and older
 * entries make room. */
void mw__static_make_gz(mw_conns_t *cs, mw_static_entry_t *e, int cached);

#endif
