/* Outgoing HTTP requests for the app (moonwire.http.request), through a
 * client the node was given: libcurl's multi-socket interface on the node's
 * libuv loop (mw_http_client_new), or the stub of moonwire.sim, which
 * answers from a spec on virtual time. The client bounds what it takes
 * (http_client.max_concurrent requests, http_client.max_response bytes,
 * http_client.max_headers headers) and counts it in the node's metrics.
 *
 * Every call that starts ends exactly once, with its done callback, unless
 * it is cancelled (mw_http_cancel): with an answer, with an error, or when
 * the client closes (MW_ECANCELED). The callback never runs inside
 * mw_http_start.
 */
#ifndef MOONWIRE_HTTP_CLIENT_H
#define MOONWIRE_HTTP_CLIENT_H

#include "list.h"

#include <stddef.h>
#include <stdint.h>

typedef struct mw_config_s mw_config_t;
typedef struct mw_metrics_s mw_metrics_t;
typedef struct mw_timers_s mw_timers_t;
struct uv_loop_s;

typedef struct mw_http_client_s mw_http_client_t;
typedef struct mw_http_call_s mw_http_call_t;

typedef struct {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} mw_http_field_t;

/* What to ask. The client copies what it keeps: the caller's strings need
 * only live through mw_http_start. */
typedef struct {
    const char *method; /* an upper-case token */
    const char *url;    /* http:// or https:// */
    const mw_http_field_t *headers;
    size_t nheaders;
    const char *body; /* NULL: none */
    size_t body_len;
    uint32_t timeout;   /* ms for the whole exchange, connecting included; above 0 */
    uint32_t redirects; /* how many redirects to follow; 0: none, a 3xx is the answer */
} mw_http_request_t;

/* The answer, valid during the done callback only. */
typedef struct {
    long status;
    const mw_http_field_t *headers; /* the last response's, names in lower case */
    size_t nheaders;
    const char *body;
    size_t body_len;
} mw_http_response_t;

/* status is 0 with res, or a negative MW_E* code with why, a short phrase
 * ("timeout", "response too large", "canceled", or libcurl's word). */
typedef void (*mw_http_done_cb)(void *ud, int status, const mw_http_response_t *res,
                                const char *why);

/* What a client does behind mw_http_start: the curl one, or the sim's. */
typedef struct {
    /* Starts call (its request is req). Returns 0, or a negative code with
     * *why; the call is then not started and is freed by the caller. */
    int (*start)(mw_http_client_t *hc, mw_http_call_t *call, const mw_http_request_t *req,
                 const char **why);
    /* Forgets a started call without an answer; its resources go now. */
    void (*cancel)(mw_http_client_t *hc, mw_http_call_t *call);
    /* The client closes: every call has been cancelled. Frees impl, at once
     * or later. */
    void (*close)(mw_http_client_t *hc);
} mw_http_ops_t;

struct mw_http_client_s {
    const mw_http_ops_t *ops;
    void *impl;
    const mw_config_t *cfg; /* the live configuration: its bounds apply to each new call */
    mw_metrics_t *metrics;
    mw_list_t calls; /* the calls started and not ended */
    size_t inflight;
    int closed;
};

struct mw_http_call_s {
    mw_http_client_t *hc;
    mw_http_done_cb cb;
    void *ud;
    mw_list_t link;      /* in hc->calls */
    void *impl;          /* the client's own record of the call */
    size_t max_response; /* http_client.max_response when it started */
};

/* Makes the libcurl client on loop, its timer on the node's timers. Returns
 * 0, or MW_ENOMEM / MW_EIO with why in err. */
int mw_http_client_new(mw_http_client_t **out, struct uv_loop_s *loop, mw_timers_t *timers,
                       const mw_config_t *cfg, mw_metrics_t *metrics, char *err, size_t errlen);

/* Sets up hc with ops and impl (the sim's client). */
void mw_http_client_init(mw_http_client_t *hc, const mw_http_ops_t *ops, void *impl,
                         const mw_config_t *cfg, mw_metrics_t *metrics);

/* Ends every call still running with MW_ECANCELED ("shutting down"), then
 * lets the client go (the curl one frees itself once libuv has closed its
 * handles). A callback may start calls meanwhile: they are refused. */
void mw_http_client_close(mw_http_client_t *hc);

/* Starts req. Returns the call, or NULL with why: "too many requests"
 * (http_client.max_concurrent), "shutting down", "out of memory", or why the
 * client refused it. */
mw_http_call_t *mw_http_start(mw_http_client_t *hc, const mw_http_request_t *req,
                              mw_http_done_cb cb, void *ud, const char **why);

/* Forgets call: its callback never runs. */
void mw_http_cancel(mw_http_call_t *call);

/* For clients: call has ended. Checks the answer against the call's bounds,
 * counts it, runs its callback (which may start and cancel calls) and frees
 * the call. */
void mw__http_finish(mw_http_call_t *call, int status, const mw_http_response_t *res,
                     const char *why);

#endif
