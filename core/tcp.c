/* The TCP transport of the libuv binding: a connection's reads, its corked
 * writes, shutdown and close, and TLS in between on TLS listeners.
 *
 * Writes are corked: frames queue during a loop turn and go out in one
 * writev per connection from the check (or prepare) phase, straight on
 * the socket, a queued uv_write only for what the socket would not take. At most
 * one uv_write is in flight per connection; its buffers are frames the
 * queue still references, so they live until the callback (libuv's rule).
 * Reads share one buffer per loop: libuv calls read_cb right after
 * alloc_cb, and the bytes are consumed before the next read.
 *
 * A connection accepted on a TLS listener runs the same transport with a
 * TLS session (tls.c) in between: reads are decrypted before the core sees
 * them, and frames are encrypted when flushed. Each ciphertext buffer is
 * its own uv_write (in order); its bytes count in wire_pending until
 * written, so backpressure sees them.
 */
#include "tcp.h"
#include "conn.h"
#include "node.h"
#include "timer.h"
#include "moonwire/error.h"
#include "moonwire/log.h"
#include "moonwire/metrics.h"
#include "moonwire/tls.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#define IOV_BATCH 64

/* A connection of this transport: 624 bytes on x86-64 (a 632-byte chunk
 * of glibc's), 248 of them libuv's handle. What its connections share is
 * the loop's data (mw_tcp_env_t), and its flags are in c.tp_bits. */
typedef struct {
    mw_conn_t c;
    uv_tcp_t handle;
    size_t inflight;    /* bytes handed to the uv_write in flight, 0 when none */
    mw_tls_t *tls;      /* NULL on a plain connection */
} tcp_conn_t;

/* c.tp_bits */
enum {
    TCP_SHUT = 1,       /* uv_shutdown requested */
    TCP_EOF = 2,        /* the peer closed its side */
    TCP_TLS_FAILED = 4, /* the TLS handshake failed: its alert is on the way */
};

static inline int has(const tcp_conn_t *t, unsigned flag)
{
    return (t->c.tp_bits & flag) != 0;
}

static inline void set(tcp_conn_t *t, unsigned flag)
{
    t->c.tp_bits = (uint8_t)(t->c.tp_bits | flag);
}

static inline mw_tcp_env_t *env_of(const tcp_conn_t *t)
{
    return t->handle.loop->data;
}

/* The socket, libuv's for the handle's life: the field uv_fileno() reads
 * after a switch on the handle's type, read here on every flush. */
static inline int fd_of(const tcp_conn_t *t)
{
    return t->handle.io_watcher.fd;
}

typedef struct {
    uv_write_t req;
    tcp_conn_t *t;
} write_req_t;

typedef struct {
    uv_write_t req;
    tcp_conn_t *t;
    uint8_t *buf; /* ciphertext, freed in the callback */
    size_t len;   /* bytes of it this request writes */
} tls_write_t;

_Static_assert(sizeof(uv_buf_t) == sizeof(struct iovec) &&
                   offsetof(uv_buf_t, base) == offsetof(struct iovec, iov_base) &&
                   offsetof(uv_buf_t, len) == offsetof(struct iovec, iov_len),
               "uv_buf_t is an iovec on Unix");

static tcp_conn_t *tcp_of(mw_conn_t *c)
{
    return MW_CONTAINER_OF(c, tcp_conn_t, c);
}

static void on_closed(uv_handle_t *h)
{
    tcp_conn_t *t = h->data;
    mw_conn_release(&t->c);
    mw_tls_free(t->tls);
    free(t);
}

static void tcp_abort(mw_conn_t *c)
{
    tcp_conn_t *t = tcp_of(c);
    if (!uv_is_closing((uv_handle_t *)&t->handle))
        uv_close((uv_handle_t *)&t->handle, on_closed);
}

static void tcp_flush(mw_conn_t *c);
static void tcp_finish(mw_conn_t *c);

static void on_write(uv_write_t *req, int status)
{
    write_req_t *w = (write_req_t *)req;
    tcp_conn_t *t = w->t;
    size_t n = t->inflight;

    free(w);
    t->inflight = 0;
    if (status == UV_ECANCELED || uv_is_closing((uv_handle_t *)&t->handle))
        return; /* the handle is closing; on_closed frees everything */
    env_of(t)->node->timers->now = uv_now(t->handle.loop);
    if (status < 0) {
        mw_log_debug("conn %llu: write failed: %s", (unsigned long long)t->c.serial,
                     uv_strerror(status));
        mw_conn_on_eof(&t->c);
        return;
    }
    mw_conn_on_written(&t->c, n);
    if (!mw_outq_empty(&t->c.outq))
        tcp_flush(&t->c);
}

static void on_tls_write(uv_write_t *req, int status)
{
    tls_write_t *w = (tls_write_t *)req;
    tcp_conn_t *t = w->t;

    t->c.wire_pending -= w->len;
    free(w->buf);
    free(w);
    if (status == UV_ECANCELED || uv_is_closing((uv_handle_t *)&t->handle))
        return;
    env_of(t)->node->timers->now = uv_now(t->handle.loop);
    if (status < 0) {
        mw_conn_on_eof(&t->c);
        return;
    }
    mw_conn_on_written(&t->c, 0); /* re-checks backpressure and finishing */
}

/* Sends the ciphertext the TLS session has produced, in order. */
static void tls_send_out(tcp_conn_t *t)
{
    uv_stream_t *s = (uv_stream_t *)&t->handle;
    uint8_t *buf;
    size_t n;

    while (!uv_is_closing((uv_handle_t *)s) && (n = mw_tls_take_out(t->tls, &buf)) > 0) {
        uv_buf_t b = uv_buf_init((char *)buf, (unsigned)n);
        tls_write_t *w;
        int r = uv_try_write(s, &b, 1);

        if (r == UV_EAGAIN || r == UV_ENOSYS)
            r = 0;
        if (r < 0) {
            free(buf);
            mw_conn_on_eof(&t->c);
            return;
        }
        if ((size_t)r == n) {
            free(buf);
            continue;
        }
        w = malloc(sizeof(*w));
        if (w == NULL) {
            free(buf);
            mw_conn_on_eof(&t->c);
            return;
        }
        w->t = t;
        w->buf = buf;
        w->len = n - (size_t)r;
        b = uv_buf_init((char *)buf + r, (unsigned)w->len);
        if (uv_write(&w->req, s, &b, 1, on_tls_write) != 0) {
            free(buf);
            free(w);
            mw_conn_on_eof(&t->c);
            return;
        }
        t->c.wire_pending += w->len;
    }
}

/* Encrypts what the queue holds (once the handshake is done) and sends it. */
static void tls_flush(tcp_conn_t *t)
{
    mw_conn_t *c = &t->c;
    struct iovec iov[IOV_BATCH];

    if (!mw_tls_ready(t->tls)) {
        /* Frames wait for the handshake. A connection the core is done with
         * before then (408 at handshake_timeout) has nothing it can send: its
         * reply can not go out in clear on a TLS port. */
        if (c->finishing) {
            mw_outq_clear(&c->outq);
            tcp_finish(c);
        }
        return;
    }
    while (!mw_outq_empty(&c->outq) && !has(t, TCP_SHUT) &&
           !uv_is_closing((uv_handle_t *)&t->handle)) {
        size_t total, n = mw_outq_peek(&c->outq, iov, IOV_BATCH, 0, &total);
        for (size_t i = 0; i < n; i++) {
            if (mw_tls_write(t->tls, iov[i].iov_base, iov[i].iov_len) != 0) {
                mw_conn_on_eof(c);
                return;
            }
        }
        /* Encrypted is as good as written for the queue; the ciphertext
         * counts in wire_pending until the socket takes it. */
        tls_send_out(t);
        mw_conn_on_written(c, total); /* may finish the connection */
    }
    tls_send_out(t);
}

/* One writev of what the socket takes now, straight on the descriptor: no
 * uv_write is in flight (the caller checks), so libuv's write queue is empty
 * and nothing of ours can go out of order; uv_try_write would only check
 * that again and convert the iovecs. Through syscall(2): glibc's writev is a
 * cancellation point and, in a process with threads, turns asynchronous
 * cancellation on and off around every call (some 30 instructions of a
 * ~100-instruction write), and moonwire never cancels a thread. Returns the
 * bytes written (0 when the socket is full) or a negative errno. */
static ssize_t write_now(tcp_conn_t *t, const struct iovec *iov, size_t n)
{
    ssize_t r;

    do
        r = syscall(SYS_writev, fd_of(t), iov, (int)n);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
    return r;
}

static void tcp_flush(mw_conn_t *c)
{
    tcp_conn_t *t = tcp_of(c);
    uv_stream_t *s = (uv_stream_t *)&t->handle;
    struct iovec iov[IOV_BATCH];
    size_t n, total;
    ssize_t r;
    write_req_t *w;

    if (t->tls != NULL) {
        tls_flush(t);
        return;
    }
    if (t->inflight > 0 || uv_is_closing((uv_handle_t *)s))
        return;
    while (!mw_outq_empty(&c->outq)) {
        n = mw_outq_peek(&c->outq, iov, IOV_BATCH, 0, &total);
        if ((r = write_now(t, iov, n)) < 0) {
            mw_log_debug("conn %llu: write failed: %s", (unsigned long long)c->serial,
                         strerror((int)-r));
            mw_conn_on_eof(c);
            return;
        }
        if (r > 0)
            mw_conn_on_written(c, (size_t)r); /* may finish (and close) the connection */
        if (uv_is_closing((uv_handle_t *)s) || has(t, TCP_SHUT))
            return;
        if ((size_t)r < total)
            break;
    }
    if (mw_outq_empty(&c->outq))
        return;
    /* The socket is full: hand the rest to libuv and wait for its callback. */
    n = mw_outq_peek(&c->outq, iov, IOV_BATCH, 0, &total);
    w = malloc(sizeof(*w));
    if (w == NULL) {
        mw_conn_on_eof(c);
        return;
    }
    w->t = t;
    if (uv_write(&w->req, s, (uv_buf_t *)iov, (unsigned)n, on_write) < 0) {
        free(w);
        mw_conn_on_eof(c);
        return;
    }
    t->inflight = total;
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    tcp_conn_t *t = req->data;
    free(req);
    if (status == UV_ECANCELED)
        return;
    /* Wait for the peer's FIN (bounded by close_timeout) so the last frames
     * are not destroyed by a reset; if it already came, close now. */
    if (status < 0 || has(t, TCP_EOF))
        tcp_abort(&t->c);
}

static void tcp_finish(mw_conn_t *c)
{
    tcp_conn_t *t = tcp_of(c);
    uv_shutdown_t *req;

    if (has(t, TCP_SHUT) || uv_is_closing((uv_handle_t *)&t->handle))
        return;
    if (t->tls != NULL && mw_tls_ready(t->tls)) {
        mw_tls_shutdown(t->tls); /* close_notify, after the last frames */
        tls_send_out(t);
    }
    set(t, TCP_SHUT);
    /* A TLS handshake that did not finish and did not fail (a client that
     * never spoke, or stalled) leaves nothing worth delivering: close now,
     * not after close_timeout more. A failed one lingers for its alert. */
    if (has(t, TCP_EOF) ||
        (t->tls != NULL && !mw_tls_ready(t->tls) && !has(t, TCP_TLS_FAILED))) {
        tcp_abort(c);
        return;
    }
    req = malloc(sizeof(*req));
    if (req == NULL || (req->data = t, uv_shutdown(req, (uv_stream_t *)&t->handle, on_shutdown)) != 0) {
        free(req);
        tcp_abort(c);
        return;
    }
    if (c->paused) {
        c->paused = 0;
        c->tp->pause(c, 0); /* keep reading to see the FIN */
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    tcp_conn_t *t = h->data;
    (void)suggested;
    buf->base = env_of(t)->read_buf;
    buf->len = MW_TCP_READ_BUF;
}

static void on_plain(void *ud, const uint8_t *data, size_t len)
{
    mw_conn_t *c = ud;
    if (!uv_is_closing((uv_handle_t *)&tcp_of(c)->handle))
        mw_conn_on_read(c, data, len);
}

/* Decrypts what arrived on a TLS connection and answers the handshake. */
static void tls_read(tcp_conn_t *t, const uint8_t *data, size_t len)
{
    mw_conn_t *c = &t->c;
    int was_ready = mw_tls_ready(t->tls);
    int r = mw_tls_read(t->tls, data, len, on_plain, c);

    if (uv_is_closing((uv_handle_t *)&t->handle))
        return;
    tls_send_out(t);
    if (!was_ready && mw_tls_ready(t->tls) && !mw_outq_empty(&c->outq))
        mw_conn_want_flush(c);
    if (r == MW_ECLOSED) {
        mw_conn_on_eof(c);
    } else if (r != 0) {
        /* Not TLS (plain HTTP on the TLS port), a failed handshake or a bad
         * record: the alert goes out, then the connection closes. */
        if (!was_ready) {
            c->conns->metrics->tls_handshake_failures++;
            set(t, TCP_TLS_FAILED);
        }
        if (c->state == MW_CONN_HTTP)
            mw_conn_close(c, 0, NULL, 0);
        else
            mw_conn_on_eof(c);
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    tcp_conn_t *t = s->data;
    mw_conn_t *c = &t->c;

    c->conns->timers->now = uv_now(s->loop);
    if (nread > 0) {
        if (t->tls != NULL)
            tls_read(t, (const uint8_t *)buf->base, (size_t)nread);
        else
            mw_conn_on_read(c, (const uint8_t *)buf->base, (size_t)nread);
    } else if (nread < 0) {
        set(t, TCP_EOF);
        uv_read_stop(s);
        /* A client may half-close right after its requests: still send the
         * replies; tcp_finish closes once they are written. */
        if (nread == UV_EOF && mw_conn_on_end(c))
            return;
        mw_conn_on_eof(c);
    }
}

static void tcp_pause(mw_conn_t *c, int paused)
{
    tcp_conn_t *t = tcp_of(c);
    if (uv_is_closing((uv_handle_t *)&t->handle) || has(t, TCP_EOF))
        return;
    if (paused)
        uv_read_stop((uv_stream_t *)&t->handle);
    else
        uv_read_start((uv_stream_t *)&t->handle, on_alloc, on_read);
}

static const mw_transport_t tcp_transport = {
    "tcp", tcp_flush, tcp_finish, tcp_abort, tcp_pause,
};

void mw_tcp_serve(mw_tcp_env_t *env, int fd, const mw_addr_t *addr, mw_tls_ctx_t *tls,
                  int api_only)
{
    tcp_conn_t *t = malloc(sizeof(*t));

    if (t == NULL) {
        close(fd);
        return;
    }
    memset(t, 0, sizeof(*t));
    uv_tcp_init(env->loop, &t->handle);
    t->handle.data = t;
    if (uv_tcp_open(&t->handle, fd) != 0) {
        close(fd);
        uv_close((uv_handle_t *)&t->handle, (uv_close_cb)free);
        return;
    }
    env->node->timers->now = uv_now(env->loop);
    if (mw_conn_init(&t->c, env->node->conns, &tcp_transport, addr) != 0) {
        /* mw_conn_init counted it; on_closed releases it. */
        uv_close((uv_handle_t *)&t->handle, on_closed);
        return;
    }
    t->c.api_only = api_only != 0;
    uv_tcp_nodelay(&t->handle, 1);
    if (tls != NULL && (t->tls = mw_tls_new(tls)) == NULL) {
        tcp_abort(&t->c);
        return;
    }
    if (uv_read_start((uv_stream_t *)&t->handle, on_alloc, on_read) != 0)
        tcp_abort(&t->c);
}
