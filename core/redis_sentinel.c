/* Where the Redis master is, as Redis Sentinel says. See redis_sentinel.h.
 *
 * A sentinel's link is freed by us, never inside its own callbacks' reach of
 * the next one: a failure clears the link, frees it, and steps to the next
 * sentinel from a timer at 0 ms, so that the replies the free fails (NULL)
 * find no link and are ignored.
 */
#include "redis_sentinel.h"
#include "redis_url.h"
#include "moonwire/error.h"
#include "moonwire/log.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int mw_sentinels_init(mw_sentinels_t *set, const char *const *addrs, size_t n, const char *master,
                      const char *password, uint32_t timeout_ms, mw_timers_t *timers,
                      const mw_redis_driver_t *driver, void *drv, char *err, size_t errlen)
{
    memset(set, 0, sizeof(*set));
    set->at = calloc(n > 0 ? n : 1, sizeof(*set->at));
    if (set->at == NULL)
        return MW_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (mw_redis_hostport_parse(addrs[i], set->at[i].host, &set->at[i].port) != 0) {
            snprintf(err, errlen, "config: 'cluster.sentinels' has '%s', not host:port", addrs[i]);
            free(set->at);
            set->at = NULL;
            return MW_EINVAL;
        }
    }
    set->n = n;
    snprintf(set->master, sizeof(set->master), "%s", master);
    snprintf(set->password, sizeof(set->password), "%s", password ? password : "");
    set->timeout_ms = timeout_ms;
    set->timers = timers;
    set->driver = driver;
    set->drv = drv;
    return 0;
}

void mw_sentinels_free(mw_sentinels_t *set)
{
    free(set->at);
    set->at = NULL;
    set->n = 0;
}

/* A round ------------------------------------------------------------------------------------ */

static void ask_next(mw_sentinel_ask_t *a);

/* The sentinel being asked gave no address: say why, drop its link, and go
 * on to the next one from a timer. */
static void failed(mw_sentinel_ask_t *a, int error, const char *fmt, const char *detail)
{
    mw_sentinels_t *set = a->set;
    mw_redis_link_t *l = a->link;

    snprintf(a->why, sizeof(a->why), "sentinel %s:%d: ", set->at[a->current].host,
             set->at[a->current].port);
    snprintf(a->why + strlen(a->why), sizeof(a->why) - strlen(a->why), fmt, detail);
    if (error)
        mw_log_error("cluster: %s (%s connection)", a->why, a->who);
    else if (!a->quiet)
        mw_log_warn("cluster: %s (%s connection)", a->why, a->who);
    a->link = NULL;
    if (l != NULL)
        set->driver->free(l);
    mw_timer_stop(set->timers, &a->timer);
    mw_timer_start(set->timers, &a->timer, 0, 0);
}

static void on_auth(void *r, void *priv)
{
    mw_sentinel_ask_t *a = priv;
    redisReply *reply = r;

    if (a->link == NULL || reply == NULL)
        return; /* a link we gave up; or its end, which on_gone reports */
    if (reply->type == REDIS_REPLY_ERROR)
        failed(a, 1, "refused cluster.sentinel_password: %s", reply->str);
}

static void on_answer(void *r, void *priv)
{
    mw_sentinel_ask_t *a = priv;
    mw_sentinels_t *set = a->set;
    redisReply *reply = r;
    char host[256];
    long port;
    char *end;

    if (a->link == NULL || reply == NULL)
        return;
    if (reply->type == REDIS_REPLY_NIL) {
        failed(a, 1, "knows no master named '%s' (cluster.master)", set->master);
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        failed(a, 1, "%s", reply->str);
        return;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_STRING || reply->element[0]->len == 0 ||
        reply->element[0]->len >= sizeof(host)) {
        failed(a, 1, "%s", "answered get-master-addr-by-name with something else than an address");
        return;
    }
    memcpy(host, reply->element[0]->str, reply->element[0]->len);
    host[reply->element[0]->len] = '\0';
    port = strtol(reply->element[1]->str, &end, 10);
    if (*end != '\0' || port < 1 || port > 65535) {
        failed(a, 1, "%s", "answered a master port out of range");
        return;
    }
    {
        mw_redis_link_t *l = a->link;
        a->link = NULL;
        set->driver->free(l);
    }
    mw_timer_stop(set->timers, &a->timer);
    set->first = a->current;
    a->cb(a->ud, host, (int)port, NULL);
}

static void on_connected(void *ud, int ok, const char *why)
{
    mw_sentinel_ask_t *a = ud;
    mw_sentinels_t *set = a->set;
    const char *argv[3];
    size_t argl[3];

    if (a->link == NULL)
        return;
    if (!ok) {
        a->link = NULL; /* the driver frees a link whose connect failed */
        failed(a, 0, "cannot connect: %s", why);
        return;
    }
    if (set->password[0] != '\0') {
        argv[0] = "AUTH", argl[0] = 4;
        argv[1] = set->password, argl[1] = strlen(set->password);
        if (set->driver->send(a->link, 2, argv, argl, on_auth, a) != 0) {
            failed(a, 0, "%s", "the connection went");
            return;
        }
    }
    argv[0] = "SENTINEL", argl[0] = 8;
    argv[1] = "get-master-addr-by-name", argl[1] = 23;
    argv[2] = set->master, argl[2] = strlen(set->master);
    if (set->driver->send(a->link, 3, argv, argl, on_answer, a) != 0)
        failed(a, 0, "%s", "the connection went");
}

static void on_gone(void *ud, int ok, const char *why)
{
    mw_sentinel_ask_t *a = ud;
    (void)ok;
    if (a->link == NULL)
        return;
    a->link = NULL; /* gone: the driver frees it */
    failed(a, 0, "lost the connection: %s", why);
}

static const mw_redis_events_t sentinel_events = {on_connected, on_gone};

/* The timer: the sentinel being asked took too long, or a step to the next. */
static void on_timer(mw_timer_t *t)
{
    mw_sentinel_ask_t *a = t->data;

    if (a->link != NULL) {
        char ms[16];
        snprintf(ms, sizeof(ms), "%u", a->set->timeout_ms);
        failed(a, 0, "did not answer within %s ms (cluster.connect_timeout)", ms);
        return;
    }
    ask_next(a);
}

static void ask_next(mw_sentinel_ask_t *a)
{
    mw_sentinels_t *set = a->set;
    mw_redis_url_t url;
    const char *why = NULL;

    if (a->tried == set->n) {
        a->cb(a->ud, NULL, 0, a->why);
        return;
    }
    a->current = (set->first + a->tried) % set->n;
    a->tried++;
    memset(&url, 0, sizeof(url));
    snprintf(url.host, sizeof(url.host), "%s", set->at[a->current].host);
    url.port = set->at[a->current].port;
    a->link = set->driver->connect(set->drv, &url, &sentinel_events, a, &why);
    if (a->link == NULL) {
        failed(a, 0, "cannot connect: %s", why);
        return;
    }
    mw_timer_start(set->timers, &a->timer, set->timeout_ms, 0);
}

void mw_sentinel_ask_init(mw_sentinel_ask_t *a, mw_sentinels_t *set, const char *who)
{
    memset(a, 0, sizeof(*a));
    a->set = set;
    a->who = who;
    mw_timer_init(&a->timer, on_timer, a);
}

void mw_sentinel_ask(mw_sentinel_ask_t *a, mw_sentinel_answer_cb cb, void *ud)
{
    mw_sentinel_ask_stop(a);
    a->cb = cb;
    a->ud = ud;
    a->tried = 0;
    snprintf(a->why, sizeof(a->why), "no sentinel configured");
    /* From a timer, so that cb never runs inside this call. */
    mw_timer_start(a->set->timers, &a->timer, 0, 0);
}

void mw_sentinel_ask_stop(mw_sentinel_ask_t *a)
{
    mw_redis_link_t *l = a->link;

    a->link = NULL;
    if (a->set != NULL)
        mw_timer_stop(a->set->timers, &a->timer);
    if (l != NULL)
        a->set->driver->free(l);
}
