/* The files behind static.root as replies send them: a content cache of
 * small files (their bytes, a strong ETag hashed from them, a gzip variant
 * made once), least recently used out first and bounded by
 * static.cache_size, checked against one stat() per request; reading a file
 * whole, with no way out of the root; and a large file opened to be
 * streamed, with an ETag from its size and modification time. See
 * static_cache.h.
 *
 * The cache is process-wide, like the frame pool: the core runs one loop per
 * process. Its bound is the static.cache_size of the request that fills it.
 */
#include "static_cache.h"
#include "conn.h"
#include "frame.h"
#include "htab.h"
#include "list.h"
#include "moonwire/config.h"
#include "moonwire/error.h"
#include "moonwire/log.h"
#include "moonwire/metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define ETAG_BYTES 16 /* of the SHA-256 of the content: 128 bits, 32 hex digits */
#define READ_ATTEMPTS 3
#define GZIP_LEVEL 6

static struct {
    mw_htab_t table; /* key -> mw_static_entry_t; no buckets until the first insert */
    size_t bytes; /* file bytes held by cached entries */
    mw_list_t lru;
    int root_missing; /* the root could not be resolved; logged once until it comes back */
} cache = {.lru = {&cache.lru, &cache.lru}};

static uint64_t hash_key(const char *s)
{
    return mw_hash_bytes(s, strlen(s));
}

static void entry_free(mw_static_entry_t *e)
{
    if (e->body != NULL)
        mw_frame_unref(e->body); /* replies being written keep their own references */
    if (e->gz != NULL)
        mw_frame_unref(e->gz);
    free(e->key);
    free(e);
}

static mw_static_entry_t *cache_find(const char *key, uint64_t h)
{
    if (cache.table.buckets == NULL)
        return NULL;
    for (mw_hnode_t *n = mw_htab_chain(&cache.table, h); n != NULL; n = n->next) {
        mw_static_entry_t *e = MW_CONTAINER_OF(n, mw_static_entry_t, node);
        if (n->hash == h && strcmp(e->key, key) == 0)
            return e;
    }
    return NULL;
}

static void cache_unlink(mw_static_entry_t *e)
{
    mw_htab_remove(&cache.table, &e->node);
    mw_list_remove(&e->lru);
    cache.bytes -= e->bytes;
}

/* Evicts the least recently used entries other than keep until the cache
 * holds limit bytes or fewer. */
static void cache_trim(size_t limit, const mw_static_entry_t *keep)
{
    while (cache.bytes > limit && !mw_list_empty(&cache.lru)) {
        mw_static_entry_t *old = MW_CONTAINER_OF(cache.lru.next, mw_static_entry_t, lru);
        if (old == keep)
            break; /* the most recently used: nothing else is left */
        cache_unlink(old);
        entry_free(old);
    }
}

/* Keeps e when it fits in limit bytes, evicting the least recently used.
 * Returns 1 when e is now owned by the cache, 0 when the caller keeps it. */
static int cache_insert(mw_static_entry_t *e, size_t limit)
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
        mw_static_entry_t *e = MW_CONTAINER_OF(cache.lru.next, mw_static_entry_t, lru);
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

static int same_file(const mw_static_entry_t *e, const struct stat *st)
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
static int entry_read(const mw_config_t *cfg, const char *path, mw_static_entry_t **out)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    struct stat st, after;
    mw_static_entry_t *e = NULL;
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
static int load(const mw_config_t *cfg, const char *path, const struct stat *st, mw_static_entry_t **out,
                int *owned)
{
    uint64_t h = hash_key(path);
    mw_static_entry_t *e = cache_find(path, h);
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

void mw__static_make_gz(mw_conns_t *cs, mw_static_entry_t *e, int cached)
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

/* Representations ------------------------------------------------------------------- */

void mw__static_rep_close(mw_static_rep_t *r)
{
    if (r->owned && r->e != NULL)
        entry_free(r->e); /* a reply holds its own reference to the bytes */
    r->e = NULL;
    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
}

uint64_t mw__static_cache_limit(const mw_config_t *cfg)
{
    size_t quarter = cfg->static_cache_size / 4;
    return cfg->static_max_cached_file < quarter ? cfg->static_max_cached_file : quarter;
}

int mw__static_rep_open(const mw_config_t *cfg, const char *path, const struct stat *st,
                        mw_static_rep_t *r)
{
    int fd;

    memset(r, 0, sizeof(*r));
    r->fd = -1;
    if (too_big(cfg, path, st->st_size))
        return MW_ETOOBIG;
    if ((uint64_t)st->st_size <= mw__static_cache_limit(cfg)) {
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
