/* The app's outgoing HTTP calls: the bookkeeping every client shares (the
 * bound on calls running, how each ended, in the metrics), and the libcurl
 * client, on libcurl's multi-socket interface: a uv_poll for each socket
 * libcurl watches, its one timer on the node's timer heap, and
 * curl_multi_socket_action when either fires. One multi handle keeps the
 * connections for reuse; a share handle keeps DNS answers and TLS sessions.
 * See http_client.h.
 */
#include "http_client.h"
#include "moonwire/config.h"
#include "moonwire/error.h"
#include "moonwire/log.h"
#include "moonwire/metrics.h"
#include "timer.h"

#include <ctype.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

/* Bookkeeping ------------------------------------------------------------------ */

static void set_inflight(mw_http_client_t *hc)
{
    if (hc->metrics != NULL)
        mw_metrics_set(&hc->metrics->http_client_inflight, hc->inflight);
}

void mw_http_client_init(mw_http_client_t *hc, const mw_http_ops_t *ops, void *impl,
                         const mw_config_t *cfg, mw_metrics_t *metrics)
{
    memset(hc, 0, sizeof(*hc));
    hc->ops = ops;
    hc->impl = impl;
    hc->cfg = cfg;
    hc->metrics = metrics;
    mw_list_init(&hc->calls);
}

mw_http_call_t *mw_http_start(mw_http_client_t *hc, const mw_http_request_t *req,
                              mw_http_done_cb cb, void *ud, const char **why)
{
    mw_http_call_t *call;
    int r;

    if (hc->closed) {
        *why = "shutting down";
        return NULL;
    }
    if (hc->inflight >= hc->cfg->http_client_max_concurrent) {
        hc->metrics->http_client_refused++;
        mw_log_warn("http client: %s %s refused: %zu calls running (http_client.max_concurrent)",
                    req->method, req->url, hc->inflight);
        *why = "too many requests";
        return NULL;
    }
    call = calloc(1, sizeof(*call));
    if (call == NULL) {
        *why = "out of memory";
        return NULL;
    }
    call->hc = hc;
    call->cb = cb;
    call->ud = ud;
    call->max_response = hc->cfg->http_client_max_response;
    r = hc->ops->start(hc, call, req, why);
    if (r != 0) {
        hc->metrics->http_client_failed++;
        free(call);
        return NULL;
    }
    mw_list_insert_tail(&hc->calls, &call->link);
    hc->inflight++;
    set_inflight(hc);
    return call;
}

static void forget(mw_http_call_t *call)
{
    mw_http_client_t *hc = call->hc;

    mw_list_remove(&call->link);
    hc->inflight--;
    set_inflight(hc);
}

void mw_http_cancel(mw_http_call_t *call)
{
    mw_http_client_t *hc = call->hc;

    hc->ops->cancel(hc, call);
    forget(call);
    free(call);
}

void mw__http_finish(mw_http_call_t *call, int status, const mw_http_response_t *res,
                     const char *why)
{
    mw_http_client_t *hc = call->hc;
    mw_metrics_t *m = hc->metrics;

    forget(call);
    if (status == 0 && res->body_len > call->max_response) {
        status = MW_ELIMIT;
        why = "response too large";
    }
    if (status == 0)
        m->http_client_ok++;
    else if (strcmp(why, "timeout") == 0)
        m->http_client_timeouts++;
    else if (strcmp(why, "response too large") == 0 || strcmp(why, "too many headers") == 0)
        m->http_client_too_large++;
    else
        m->http_client_failed++;
    call->cb(call->ud, status, status == 0 ? res : NULL, why);
    free(call);
}

void mw_http_client_close(mw_http_client_t *hc)
{
    if (hc->closed)
        return;
    hc->closed = 1;
    /* Each callback may cancel others: take them one at a time. */
    while (!mw_list_empty(&hc->calls)) {
        mw_http_call_t *call = MW_CONTAINER_OF(hc->calls.next, mw_http_call_t, link);
        hc->ops->cancel(hc, call);
        mw__http_finish(call, MW_ECANCELED, NULL, "shutting down");
    }
    hc->ops->close(hc);
}

/* The libcurl client ------------------------------------------------------------ */

typedef struct {
    mw_http_client_t hc;
    uv_loop_t *loop;
    mw_timers_t *timers;
    mw_timer_t timer; /* libcurl's one timeout */
    CURLM *multi;
    CURLSH *share;
    unsigned handles; /* uv_poll handles not yet closed */
    int dispatching;  /* inside on_action: the multi handle must stay */
    int closing;      /* close came while dispatching: do it at the end */
} curl_client_t;

/* The socket libcurl asked to watch. */
typedef struct {
    uv_poll_t poll;
    curl_socket_t fd;
    curl_client_t *cc;
} curl_watch_t;

/* One call: the easy handle and what has come so far. */
typedef struct {
    CURL *easy;
    mw_http_call_t *call;
    struct curl_slist *headers;
    char *body;
    size_t body_len, body_cap;
    char *head; /* the header lines of the current response, "name\0value\0" */
    size_t head_len, head_cap;
    size_t nheaders;
    size_t bytes;     /* headers and body, every response of the call */
    const char *fail; /* set when a callback stopped the transfer */
    char errbuf[CURL_ERROR_SIZE];
} curl_call_t;

static void on_action(curl_client_t *cc, curl_socket_t fd, int flags);

static void curl_call_free(curl_client_t *cc, curl_call_t *cd)
{
    if (cd->easy != NULL) {
        curl_multi_remove_handle(cc->multi, cd->easy);
        curl_easy_cleanup(cd->easy);
    }
    curl_slist_free_all(cd->headers);
    free(cd->body);
    free(cd->head);
    free(cd);
}

static int grow(char **buf, size_t *cap, size_t need)
{
    size_t cap2 = *cap ? *cap : 1024;
    char *b;

    if (need <= *cap)
        return 0;
    while (cap2 < need)
        cap2 *= 2;
    b = realloc(*buf, cap2);
    if (b == NULL)
        return -1;
    *buf = b;
    *cap = cap2;
    return 0;
}

static size_t on_body(char *ptr, size_t size, size_t n, void *ud)
{
    curl_call_t *cd = ud;
    size_t len = size * n;

    if (cd->bytes + len > cd->call->max_response) {
        cd->fail = "response too large";
        return 0; /* CURLE_WRITE_ERROR: the transfer stops */
    }
    if (grow(&cd->body, &cd->body_cap, cd->body_len + len) != 0) {
        cd->fail = "out of memory";
        return 0;
    }
    memcpy(cd->body + cd->body_len, ptr, len);
    cd->body_len += len;
    cd->bytes += len;
    return len;
}

/* A header line. A status line starts a response: a redirect's or an
 * interim one's headers make way for the next. Names go to lower case. */
static size_t on_header(char *ptr, size_t size, size_t n, void *ud)
{
    curl_call_t *cd = ud;
    size_t len = size * n, name_len, vstart, vend;
    const char *colon;

    cd->bytes += len;
    if (cd->bytes > cd->call->max_response) {
        cd->fail = "response too large";
        return 0;
    }
    if (len >= 5 && memcmp(ptr, "HTTP/", 5) == 0) {
        cd->head_len = 0;
        cd->nheaders = 0;
        cd->body_len = 0; /* a redirect's body is not the answer */
        return len;
    }
    colon = memchr(ptr, ':', len);
    if (colon == NULL || colon == ptr)
        return len; /* the blank line at the end, or a line that is no header */
    if (++cd->nheaders > cd->call->hc->cfg->http_client_max_headers) {
        cd->fail = "too many headers";
        return 0;
    }
    name_len = (size_t)(colon - ptr);
    vstart = name_len + 1;
    vend = len;
    while (vstart < vend && (ptr[vstart] == ' ' || ptr[vstart] == '\t'))
        vstart++;
    while (vend > vstart && (ptr[vend - 1] == '\r' || ptr[vend - 1] == '\n' ||
                             ptr[vend - 1] == ' ' || ptr[vend - 1] == '\t'))
        vend--;
    if (grow(&cd->head, &cd->head_cap, cd->head_len + name_len + (vend - vstart) + 2) != 0) {
        cd->fail = "out of memory";
        return 0;
    }
    for (size_t i = 0; i < name_len; i++)
        cd->head[cd->head_len++] = (char)tolower((unsigned char)ptr[i]);
    cd->head[cd->head_len++] = '\0';
    memcpy(cd->head + cd->head_len, ptr + vstart, vend - vstart);
    cd->head_len += vend - vstart;
    cd->head[cd->head_len++] = '\0';
    return len;
}

/* Ends the call of a transfer libcurl has finished. */
static void transfer_done(curl_client_t *cc, CURL *easy, CURLcode res)
{
    curl_call_t *cd = NULL;
    mw_http_call_t *call;
    mw_http_response_t r;
    mw_http_field_t *hs = NULL;
    long status = 0;

    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&cd);
    call = cd->call;
    memset(&r, 0, sizeof(r));
    if (res == CURLE_OK) {
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
        r.status = status;
        r.body = cd->body != NULL ? cd->body : "";
        r.body_len = cd->body_len;
        if (cd->nheaders > 0) {
            hs = calloc(cd->nheaders, sizeof(*hs));
            if (hs == NULL) {
                curl_call_free(cc, cd);
                mw__http_finish(call, MW_ENOMEM, NULL, "out of memory");
                return;
            }
            for (size_t i = 0, off = 0; i < cd->nheaders && off < cd->head_len; i++) {
                hs[i].name = cd->head + off;
                hs[i].name_len = strlen(hs[i].name);
                off += hs[i].name_len + 1;
                hs[i].value = cd->head + off;
                hs[i].value_len = strlen(hs[i].value);
                off += hs[i].value_len + 1;
                r.nheaders = i + 1;
            }
        }
        r.headers = hs;
        mw__http_finish(call, 0, &r, NULL);
    } else {
        const char *why = cd->fail;
        char msg[CURL_ERROR_SIZE + 64];
        if (why == NULL && res == CURLE_OPERATION_TIMEDOUT)
            why = "timeout";
        /* Content-Length past max_response; or a header line past libcurl's
         * own bound (CURL_MAX_HTTP_HEADER, 100 KB), which it reports as out
         * of memory. */
        if (why == NULL && (res == CURLE_FILESIZE_EXCEEDED || res == CURLE_OUT_OF_MEMORY))
            why = "response too large";
        if (why == NULL) {
            snprintf(msg, sizeof(msg), "%s", cd->errbuf[0] ? cd->errbuf : curl_easy_strerror(res));
            why = msg;
        }
        mw__http_finish(call, MW_EIO, NULL, why);
    }
    free(hs);
    curl_call_free(cc, cd);
}

static void teardown(curl_client_t *cc);

/* Tells libcurl what happened on fd (or that its timeout came), then ends
 * the calls it has finished. A callback may start or cancel calls, or close
 * the client: the multi handle stays until the loop is over. */
static void on_action(curl_client_t *cc, curl_socket_t fd, int flags)
{
    int running = 0, left = 0;
    CURLMsg *msg;

    cc->dispatching++;
    curl_multi_socket_action(cc->multi, fd, flags, &running);
    while (!cc->closing && (msg = curl_multi_info_read(cc->multi, &left)) != NULL) {
        if (msg->msg == CURLMSG_DONE)
            transfer_done(cc, msg->easy_handle, msg->data.result);
    }
    if (--cc->dispatching == 0 && cc->closing)
        teardown(cc);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    curl_watch_t *w = h->data;
    int flags = 0;

    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    on_action(w->cc, w->fd, flags);
}

static void on_timer(mw_timer_t *t)
{
    on_action(t->data, CURL_SOCKET_TIMEOUT, 0);
}

static void on_watch_closed(uv_handle_t *h)
{
    curl_watch_t *w = h->data;
    curl_client_t *cc = w->cc;

    free(w);
    if (--cc->handles == 0 && cc->multi == NULL)
        free(cc);
}

/* CURLMOPT_SOCKETFUNCTION: watch fd for what libcurl wants, or stop. */
static int on_socket(CURL *easy, curl_socket_t fd, int what, void *ud, void *socketp)
{
    curl_client_t *cc = ud;
    curl_watch_t *w = socketp;
    int events = 0;
    (void)easy;

    if (what == CURL_POLL_REMOVE) {
        if (w != NULL) {
            uv_poll_stop(&w->poll);
            curl_multi_assign(cc->multi, fd, NULL);
            uv_close((uv_handle_t *)&w->poll, on_watch_closed);
        }
        return 0;
    }
    if (w == NULL) {
        w = calloc(1, sizeof(*w));
        if (w == NULL)
            return -1;
        if (uv_poll_init_socket(cc->loop, &w->poll, fd) != 0) {
            free(w);
            return -1;
        }
        w->fd = fd;
        w->cc = cc;
        w->poll.data = w;
        cc->handles++;
        curl_multi_assign(cc->multi, fd, w);
    }
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        events |= UV_READABLE;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        events |= UV_WRITABLE;
    return uv_poll_start(&w->poll, events, on_poll) == 0 ? 0 : -1;
}

/* CURLMOPT_TIMERFUNCTION: libcurl's one timeout, on the node's heap (it fires
 * from the loop, never inside this call). */
static int on_curl_timer(CURLM *multi, long timeout_ms, void *ud)
{
    curl_client_t *cc = ud;
    (void)multi;

    if (timeout_ms < 0) {
        mw_timer_stop(cc->timers, &cc->timer);
        return 0;
    }
    return mw_timer_start(cc->timers, &cc->timer, (uint64_t)timeout_ms, 0) == 0 ? 0 : -1;
}

#define SET(opt, val)                                                                              \
    do {                                                                                           \
        if (curl_easy_setopt(e, opt, val) != CURLE_OK)                                             \
            goto fail;                                                                             \
    } while (0)

/* The multi handle, made at the first call: libcurl opens a socket pair
 * for it, which a server whose app makes no call should not hold. Returns
 * 0, or -1 when libcurl could not make it. */
static int multi_ready(curl_client_t *cc, const mw_config_t *cfg)
{
    if (cc->multi != NULL)
        return 0;
    if ((cc->multi = curl_multi_init()) == NULL)
        return -1;
    curl_multi_setopt(cc->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(cc->multi, CURLMOPT_SOCKETDATA, cc);
    curl_multi_setopt(cc->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(cc->multi, CURLMOPT_TIMERDATA, cc);
    /* Connections kept for reuse, at most as many as calls may run. */
    curl_multi_setopt(cc->multi, CURLMOPT_MAXCONNECTS, (long)cfg->http_client_max_concurrent);
    return 0;
}

static int curl_start(mw_http_client_t *hc, mw_http_call_t *call, const mw_http_request_t *req,
                      const char **why)
{
    curl_client_t *cc = hc->impl;
    curl_call_t *cd = calloc(1, sizeof(*cd));
    CURL *e;
    char line[8448];

    *why = "out of memory";
    if (cd == NULL)
        return MW_ENOMEM;
    cd->call = call;
    e = cd->easy = curl_easy_init();
    if (e == NULL)
        goto fail;
    SET(CURLOPT_URL, req->url);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_FOLLOWLOCATION, req->redirects > 0 ? 1L : 0L);
    SET(CURLOPT_MAXREDIRS, (long)req->redirects);
    SET(CURLOPT_TIMEOUT_MS, (long)req->timeout);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_SSL_VERIFYPEER, 1L);
    SET(CURLOPT_SSL_VERIFYHOST, 2L);
    if (hc->cfg->http_client_ca_file != NULL)
        SET(CURLOPT_CAINFO, hc->cfg->http_client_ca_file);
    SET(CURLOPT_SHARE, cc->share);
    SET(CURLOPT_USERAGENT, "moonwire/" MW_VERSION);
    SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)call->max_response);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, cd);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, cd);
    SET(CURLOPT_ERRORBUFFER, cd->errbuf);
    SET(CURLOPT_PRIVATE, cd);
    if (strcmp(req->method, "HEAD") == 0)
        SET(CURLOPT_NOBODY, 1L);
    else if (strcmp(req->method, "GET") != 0 || req->body != NULL)
        SET(CURLOPT_CUSTOMREQUEST, req->method);
    if (req->body != NULL || strcmp(req->method, "POST") == 0 || strcmp(req->method, "PUT") == 0 ||
        strcmp(req->method, "PATCH") == 0) {
        /* Content-Length: 0 rather than none for a body-less POST. */
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        SET(CURLOPT_COPYPOSTFIELDS, req->body != NULL ? req->body : "");
    }
    for (size_t i = 0; i < req->nheaders; i++) {
        const mw_http_field_t *h = &req->headers[i];
        struct curl_slist *l;
        /* An empty value is sent as "Name;" (libcurl's way), not dropped. */
        if (h->value_len == 0)
            snprintf(line, sizeof(line), "%.*s;", (int)h->name_len, h->name);
        else
            snprintf(line, sizeof(line), "%.*s: %.*s", (int)h->name_len, h->name, (int)h->value_len,
                     h->value);
        l = curl_slist_append(cd->headers, line);
        if (l == NULL)
            goto fail;
        cd->headers = l;
    }
    /* No "Expect: 100-continue" pause before a body. */
    {
        struct curl_slist *l = curl_slist_append(cd->headers, "Expect:");
        if (l == NULL)
            goto fail;
        cd->headers = l;
    }
    SET(CURLOPT_HTTPHEADER, cd->headers);
    if (multi_ready(cc, hc->cfg) != 0 || curl_multi_add_handle(cc->multi, e) != CURLM_OK) {
        *why = "the HTTP client could not take the request";
        goto fail;
    }
    call->impl = cd;
    return 0;

fail:
    if (cd->easy != NULL) {
        curl_easy_cleanup(cd->easy);
        cd->easy = NULL;
    }
    curl_call_free(cc, cd);
    return MW_ENOMEM;
}
#undef SET

static void curl_cancel(mw_http_client_t *hc, mw_http_call_t *call)
{
    curl_call_free(hc->impl, call->impl);
    call->impl = NULL;
}

static void teardown(curl_client_t *cc)
{
    mw_timer_stop(cc->timers, &cc->timer);
    /* Closes the kept connections: libcurl says CURL_POLL_REMOVE for each,
     * and their polls close. */
    if (cc->multi != NULL)
        curl_multi_cleanup(cc->multi);
    curl_share_cleanup(cc->share);
    cc->multi = NULL;
    if (cc->handles == 0)
        free(cc);
}

static void curl_close(mw_http_client_t *hc)
{
    curl_client_t *cc = hc->impl;

    if (cc->dispatching > 0) {
        cc->closing = 1;
        return;
    }
    cc->closing = 1;
    teardown(cc);
}

static const mw_http_ops_t curl_ops = {curl_start, curl_cancel, curl_close};

int mw_http_client_new(mw_http_client_t **out, uv_loop_t *loop, mw_timers_t *timers,
                       const mw_config_t *cfg, mw_metrics_t *metrics, char *err, size_t errlen)
{
    static int initialized;
    curl_client_t *cc;

    if (!initialized) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            snprintf(err, errlen, "http client: libcurl did not start");
            return MW_EIO;
        }
        initialized = 1;
    }
    cc = calloc(1, sizeof(*cc));
    if (cc == NULL) {
        snprintf(err, errlen, "http client: out of memory");
        return MW_ENOMEM;
    }
    cc->loop = loop;
    cc->timers = timers;
    mw_timer_init(&cc->timer, on_timer, cc);
    cc->share = curl_share_init();
    if (cc->share == NULL ||
        curl_share_setopt(cc->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK ||
        curl_share_setopt(cc->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK) {
        snprintf(err, errlen, "http client: libcurl could not make its handles");
        goto fail;
    }
    mw_http_client_init(&cc->hc, &curl_ops, cc, cfg, metrics);
    *out = &cc->hc;
    return 0;

fail:
    if (cc->share != NULL)
        curl_share_cleanup(cc->share);
    free(cc);
    return MW_EIO;
}
