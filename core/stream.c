/* Reply bodies streamed a chunk at a time as the connection drains. See
 * stream.h.
 *
 * A stream is its connection's reply body (c->hs->body) until it ends. A read in
 * flight on the thread pool writes into a chunk the stream owns, so a
 * connection that goes away meanwhile only detaches the stream
 * (s->conn = NULL); the read's callback then frees it (libuv's rule: a
 * buffer lives until its request's callback).
 */
#include "stream.h"
#include "conn.h"
#include "node.h"
#include "timer.h"
#include "moonwire/error.h"
#include "moonwire/log.h"
#include "moonwire/metrics.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

struct mw_stream_s {
    mw_conn_body_t body; /* what the connection calls: pump, cancel */
    mw_conn_t *conn;   /* NULL once the connection no longer wants the body */
    int fd;            /* the file source, or -1 */
    mw_frame_t *src;   /* the frame source (one reference), or NULL */
    uint64_t off;      /* the next byte of the source to queue */
    uint64_t left;     /* bytes still to queue */
    uint64_t sent;     /* bytes queued so far, for the log */
    off_t size;        /* the file as the reply's head described it */
    struct timespec mtime;
    mw_frame_t *chunk; /* the chunk a read in flight fills, or NULL */
    uv_fs_t req;
};

static size_t open_files; /* process-wide, like the loop */

static void pump(mw_conn_t *c);
static void cancel(mw_conn_t *c);

static mw_stream_t *stream_of(mw_conn_t *c)
{
    return MW_CONTAINER_OF(c->hs->body, mw_stream_t, body);
}

size_t mw_stream_open_files(void)
{
    return open_files;
}

static void stream_free(mw_stream_t *s)
{
    if (s->fd >= 0) {
        close(s->fd);
        open_files--;
    }
    if (s->src != NULL)
        mw_frame_unref(s->src);
    if (s->chunk != NULL)
        mw_frame_unref(s->chunk);
    free(s);
}

static mw_stream_t *stream_new(mw_conn_t *c, uint64_t off, uint64_t len)
{
    mw_stream_t *s = calloc(1, sizeof(*s));

    if (s == NULL)
        return NULL;
    s->body.pump = pump;
    s->body.cancel = cancel;
    s->conn = c;
    s->fd = -1;
    s->off = off;
    s->left = len;
    return s;
}

/* Ends the reply early and drops the connection: its head promised more. */
static void cut(mw_stream_t *s, const char *why)
{
    mw_conn_t *c = s->conn;

    mw_log_warn("static: conn %llu: body cut short after %llu bytes: %s",
                (unsigned long long)c->serial, (unsigned long long)s->sent, why);
    c->conns->metrics->static_cut++;
    c->hs->body = NULL;
    stream_free(s);
    mw_conn_on_eof(c);
}

/* True when the file is no longer what the reply's head described. */
static int changed(const mw_stream_t *s)
{
    struct stat now;

    return fstat(s->fd, &now) != 0 || now.st_size != s->size ||
           now.st_mtim.tv_sec != s->mtime.tv_sec || now.st_mtim.tv_nsec != s->mtime.tv_nsec;
}

/* A read of the chunk in flight returned n (bytes, or a negative error). */
static void got(mw_stream_t *s, ssize_t n, const char *err)
{
    mw_conn_t *c = s->conn;
    mw_frame_t *f = s->chunk;

    s->chunk = NULL;
    if (n < 0) {
        mw_frame_unref(f);
        cut(s, err);
        return;
    }
    if (n == 0 || changed(s)) {
        mw_frame_unref(f);
        cut(s, "the file changed while it was sent");
        return;
    }
    f->len = (uint32_t)n; /* a short read: the rest comes with the next one */
    mw__conn_queue(c, f);
    mw_frame_unref(f);
    s->off += (uint64_t)n;
    s->left -= (uint64_t)n;
    s->sent += (uint64_t)n;
    pump(c);
}

static void on_read(uv_fs_t *req)
{
    mw_stream_t *s = req->data;
    ssize_t n = req->result;

    uv_fs_req_cleanup(req);
    if (s->conn == NULL) {
        stream_free(s); /* the connection went away while the chunk was read */
        return;
    }
    s->conn->conns->timers->now = uv_now(req->loop);
    got(s, n, n < 0 ? uv_strerror((int)n) : NULL);
}

/* Reads the next chunk in place (no loop: the sim). */
static void read_here(mw_stream_t *s)
{
    mw_frame_t *f = s->chunk;
    ssize_t n;

    do
        n = pread(s->fd, f->bytes, f->len, (off_t)s->off);
    while (n < 0 && errno == EINTR);
    got(s, n, n < 0 ? strerror(errno) : NULL);
}

/* c's queue drained some: queue more when it is low. May end the reply. */
static void pump(mw_conn_t *c)
{
    mw_stream_t *s = mw_conn_body(c) != NULL ? stream_of(c) : NULL;

    /* The next chunk is read while the last one is written (below two
     * chunks unwritten), so disk and socket overlap. */
    while (s != NULL && s->chunk == NULL && mw_conn_buffered(c) < 2 * MW_STREAM_CHUNK) {
        size_t n = s->left < MW_STREAM_CHUNK ? (size_t)s->left : MW_STREAM_CHUNK;

        if (s->left == 0) {
            c->hs->body = NULL;
            stream_free(s);
            mw_conn_reply_end(c);
            return;
        }
        if (s->src != NULL) {
            mw_frame_t *f = mw_frame_new_raw(s->src->bytes + s->off, n);
            if (f == NULL) {
                cut(s, "out of memory");
                return;
            }
            mw__conn_queue(c, f);
            mw_frame_unref(f);
            s->off += n;
            s->left -= n;
            s->sent += n;
            continue;
        }
        s->chunk = mw_frame_new_raw(NULL, n);
        if (s->chunk == NULL) {
            cut(s, "out of memory");
            return;
        }
        if (c->conns->node->loop == NULL) {
            read_here(s); /* pumps again */
            return;
        }
        {
            uv_buf_t b = uv_buf_init((char *)s->chunk->bytes, (unsigned)n);
            int r;
            s->req.data = s;
            r = uv_fs_read(c->conns->node->loop, &s->req, s->fd, &b, 1, (int64_t)s->off, on_read);
            if (r != 0) {
                mw_frame_unref(s->chunk);
                s->chunk = NULL;
                cut(s, uv_strerror(r));
            }
        }
        return;
    }
}

/* c is closing or released: the stream stops. A read in flight ends on its
 * own and frees what it holds. */
static void cancel(mw_conn_t *c)
{
    mw_stream_t *s = stream_of(c);

    c->hs->body = NULL;
    s->conn = NULL;
    if (s->chunk == NULL)
        stream_free(s); /* else the read's callback frees it */
}

static int start(mw_conn_t *c, mw_stream_t *s)
{
    c->hs->body = &s->body;
    pump(c);
    return 0;
}

int mw_stream_file(mw_conn_t *c, int fd, const struct stat *st, uint64_t off, uint64_t len)
{
    mw_stream_t *s = stream_new(c, off, len);

    if (s == NULL) {
        close(fd);
        return MW_ENOMEM;
    }
    s->fd = fd;
    open_files++;
    s->size = st->st_size;
    s->mtime = st->st_mtim;
    return start(c, s);
}

int mw_stream_frame(mw_conn_t *c, mw_frame_t *f, size_t off, size_t len)
{
    mw_stream_t *s = stream_new(c, off, len);

    if (s == NULL)
        return MW_ENOMEM;
    s->src = mw_frame_ref(f);
    return start(c, s);
}
