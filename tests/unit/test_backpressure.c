/* Unit tests for core/backpressure.c: write-queue bounds on a real server
 * context (registry, Lua app, timers) with an in-memory transport whose
 * clients read as much as each test says, or nothing. */
#include "helpers.h"

#include "backpressure.h"
#include "conn.h"
#include "node.h"
#include "timer.h"
#include "moonwire/config.h"
#include "moonwire/log.h"
#include "moonwire/server.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MIB (1u << 20)
#define BIG 65536 /* the payload of a relayed message */

/* "r...": to everyone else; "e...": back to the sender; "f<n>": n relayed
 * messages of BIG bytes to everyone else from this one hook. */
static const char app_src[] =
    "local mw = require 'moonwire'\n"
    "local app = {}\n"
    "local big = string.rep('z', 65536)\n"
    "function app.on_message(conn, data, kind)\n"
    "  local c = data:sub(1, 1)\n"
    "  if c == 'e' then conn:send(data, kind)\n"
    "  elseif c == 'r' then mw.broadcast(data, {except = conn, binary = kind == 'binary'})\n"
    "  elseif c == 'f' then\n"
    "    for _ = 1, tonumber(data:sub(2)) do mw.broadcast(big, {except = conn}) end\n"
    "  end\n"
    "end\n"
    "return app\n";

static const char handshake[] = "GET / HTTP/1.1\r\n"
                                "Host: test\r\n"
                                "Upgrade: websocket\r\n"
                                "Connection: Upgrade\r\n"
                                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                "Sec-WebSocket-Version: 13\r\n\r\n";

typedef struct {
    mw_conn_t c;
    size_t take;    /* bytes it reads at each flush: 0 for none, SIZE_MAX for all */
    size_t got;     /* bytes it has read */
    int reading;    /* what the transport was last told: 1 reading, 0 paused */
    int pauses;     /* times it was told to stop */
    int done;       /* the transport finished or aborted */
} tconn_t;

static void t_flush(mw_conn_t *c)
{
    tconn_t *t = (tconn_t *)c;
    size_t budget = t->take;
    mw_frame_t *f;

    while (budget > 0 && !t->done && (f = mw_outq_head(&c->outq)) != NULL) {
        size_t n = f->len - c->outq.off;
        if (n > budget)
            n = budget;
        budget -= n;
        t->got += n;
        mw_conn_on_written(c, n);
    }
}

static void t_done(mw_conn_t *c)
{
    ((tconn_t *)c)->done = 1;
}

static void t_pause(mw_conn_t *c, int paused)
{
    tconn_t *t = (tconn_t *)c;
    t->reading = !paused;
    t->pauses += paused;
}

static const mw_transport_t transport = {"test", t_flush, t_done, t_done, t_pause};

typedef struct {
    mw_server_t *srv;
    mw_node_t *node;
    mw_config_t cfg;
    char path[64];
} fx_t;

static fx_t *fx_new(void **state, int policy, uint32_t timeout)
{
    fx_t *fx = calloc(1, sizeof(*fx));
    char err[512];
    int fd;

    assert_non_null(fx);
    snprintf(fx->path, sizeof(fx->path), "/tmp/mw-test-bp-XXXXXX.lua");
    fd = mkstemps(fx->path, 4);
    assert_true(fd >= 0);
    assert_true(write(fd, app_src, sizeof(app_src) - 1) == (ssize_t)(sizeof(app_src) - 1));
    close(fd);
    mw_config_init(&fx->cfg);
    mw_config_set_str(&fx->cfg.script, fx->path);
    fx->cfg.max_buffered = MIB;
    fx->cfg.backpressure = policy;
    fx->cfg.backpressure_timeout = timeout;
    fx->cfg.time_limit = 0;
    fx->srv = mw_server_new(&fx->cfg, 1000, err, sizeof(err));
    if (fx->srv == NULL)
        fail_msg("server: %s", err);
    fx->node = mw_server_node(fx->srv);
    mw_server_start(fx->srv);
    *state = fx;
    return fx;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    if (fx == NULL)
        return 0;
    mw_server_free(fx->srv);
    mw_config_close(&fx->cfg);
    unlink(fx->path);
    free(fx);
    mw_server_pools_drain();
    return 0;
}

/* An upgraded client that reads everything until told otherwise. */
static tconn_t *client(fx_t *fx)
{
    tconn_t *t = calloc(1, sizeof(*t));
    mw_addr_t addr;

    assert_non_null(t);
    memset(&addr, 0, sizeof(addr));
    addr.in4.sin_family = AF_INET;
    t->take = SIZE_MAX;
    t->reading = 1;
    assert_rc(mw_conn_init(&t->c, fx->node->conns, &transport, &addr), 0);
    mw_conn_on_read(&t->c, (const uint8_t *)handshake, sizeof(handshake) - 1);
    mw_server_run_deferred(fx->srv);
    assert_int_equal(t->c.state, MW_CONN_OPEN);
    return t;
}

static void release(fx_t *fx, tconn_t *t)
{
    if (t->c.state != MW_CONN_CLOSED)
        mw_conn_on_eof(&t->c);
    mw_server_run_deferred(fx->srv);
    mw_conn_release(&t->c);
    mw_server_run_deferred(fx->srv);
    free(t);
}

/* Appends a client frame (masked with a zero key, so the payload is as is). */
static size_t put_frame(uint8_t *out, uint8_t opcode, const void *payload, size_t len)
{
    size_t h = 0;

    out[h++] = (uint8_t)(0x80 | opcode);
    if (len < 126) {
        out[h++] = (uint8_t)(0x80 | len);
    } else if (len <= 0xffff) {
        out[h++] = 0x80 | 126;
        out[h++] = (uint8_t)(len >> 8);
        out[h++] = (uint8_t)len;
    } else {
        out[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            out[h++] = (uint8_t)(len >> (8 * i));
    }
    memset(out + h, 0, 4);
    h += 4;
    if (len > 0)
        memcpy(out + h, payload, len);
    return h + len;
}

/* n messages of BIG bytes starting with c, from t, in one read. */
static void send_burst(tconn_t *t, char c, int n)
{
    static uint8_t payload[BIG];
    size_t len = 0, cap = (size_t)n * (BIG + 14);
    uint8_t *buf = malloc(cap);

    assert_non_null(buf);
    memset(payload, 'x', sizeof(payload));
    payload[0] = (uint8_t)c;
    for (int i = 0; i < n; i++)
        len += put_frame(buf + len, MW_OP_BINARY, payload, BIG);
    mw_conn_on_read(&t->c, buf, len);
    free(buf);
}

static void send_text(tconn_t *t, const char *text)
{
    uint8_t buf[256];
    mw_conn_on_read(&t->c, buf, put_frame(buf, MW_OP_TEXT, text, strlen(text)));
}

static void advance(fx_t *fx, uint64_t ms)
{
    mw_timers_run(fx->node->timers, fx->node->timers->now + ms);
    mw_server_run_deferred(fx->srv);
}

/* 20 messages of 64 KB in one read take every other client's queue past
 * 1 MiB before anyone could read: the publisher stops being read, nobody is
 * closed. The reader that keeps up drains and lets go; the one that does not
 * read holds the publisher until backpressure_timeout, and is then closed
 * with 1008, which lets the publisher be read again. */
static void test_a_burst_holds_the_publisher_back_and_closes_only_who_does_not_read(void **state)
{
    fx_t *fx = fx_new(state, MW_BP_CLOSE, 2000);
    tconn_t *pub = client(fx), *deaf = client(fx), *reader = client(fx);

    deaf->take = 0;
    reader->take = 0; /* it reads at the end of the turn, as a socket would */
    send_burst(pub, 'r', 20);
    assert_int_equal(pub->reading, 0);
    assert_int_equal(pub->c.held_back, 2);
    assert_true(mw_conn_buffered(&reader->c) > MIB);
    assert_int_equal(deaf->c.state, MW_CONN_OPEN);
    assert_int_equal(reader->c.state, MW_CONN_OPEN);
    assert_int_equal(fx->node->conns->nbacked, 2);

    reader->take = SIZE_MAX;
    mw_server_run_deferred(fx->srv);
    assert_int_equal(reader->c.msgs_out, 20);
    assert_int_equal(mw_conn_buffered(&reader->c), 0);
    assert_null(reader->c.backlog);
    assert_int_equal(pub->c.held_back, 1);
    assert_int_equal(pub->reading, 0);
    assert_int_equal(deaf->reading, 0); /* its own queue is over the bound */

    advance(fx, 1900);
    assert_int_equal(deaf->c.state, MW_CONN_OPEN);
    advance(fx, 600); /* the sweep runs every quarter of the shortest timeout */
    assert_int_equal(deaf->c.state, MW_CONN_CLOSED);
    assert_int_equal(deaf->c.close_code, 1008);
    assert_int_equal(pub->reading, 1);
    assert_int_equal(pub->c.held_back, 0);
    assert_int_equal(reader->c.state, MW_CONN_OPEN);
    assert_int_equal(fx->node->conns->nbacked, 0);
    assert_int_equal(fx->node->metrics->backpressure_closes, 1);
    assert_int_equal(fx->node->metrics->closes[1008], 1);
    assert_true(fx->node->metrics->backpressure_pauses >= 2);

    /* The publisher goes on; the reader gets it. */
    send_burst(pub, 'r', 1);
    mw_server_run_deferred(fx->srv);
    assert_int_equal(reader->c.msgs_out, 21);
    release(fx, pub);
    release(fx, deaf);
    release(fx, reader);
}

/* A queue that drains in the turn's writes is never judged: the publisher
 * stopped for the rest of the turn only. */
static void test_a_queue_is_judged_after_the_turns_writes(void **state)
{
    fx_t *fx = fx_new(state, MW_BP_CLOSE, 0);
    tconn_t *pub = client(fx), *reader = client(fx);

    reader->take = 0;
    send_burst(pub, 'r', 30);
    assert_int_equal(pub->reading, 0);
    reader->take = SIZE_MAX;
    mw_server_run_deferred(fx->srv);
    assert_int_equal(reader->c.state, MW_CONN_OPEN);
    assert_int_equal(reader->c.msgs_out, 30);
    assert_int_equal(pub->reading, 1);
    assert_int_equal(fx->node->conns->nbacked, 0);
    assert_int_equal(fx->node->metrics->backpressure_closes, 0);
    release(fx, pub);
    release(fx, reader);
}

/* backpressure_timeout = 0: a queue still over the bound after the turn's
 * writes gets the policy at once. */
static void test_a_zero_timeout_judges_at_the_end_of_the_turn(void **state)
{
    fx_t *fx = fx_new(state, MW_BP_CLOSE, 0);
    tconn_t *pub = client(fx), *deaf = client(fx);

    deaf->take = 0;
    send_burst(pub, 'r', 20);
    assert_int_equal(deaf->c.state, MW_CONN_OPEN);
    mw_server_run_deferred(fx->srv);
    assert_int_equal(deaf->c.state, MW_CONN_CLOSED);
    assert_int_equal(deaf->c.close_code, 1008);
    assert_int_equal(pub->reading, 1);
    release(fx, pub);
    release(fx, deaf);
}

/* Under "drop", a queue backed up past the timeout stays open, holds nobody
 * back and misses messages until it has drained to half. */
static void test_drop_skips_a_reader_past_the_timeout_until_it_drains(void **state)
{
    fx_t *fx = fx_new(state, MW_BP_DROP, 2000);
    tconn_t *pub = client(fx), *slow = client(fx), *reader = client(fx);
    uint64_t out;

    slow->take = 0;
    send_burst(pub, 'r', 20);
    mw_server_run_deferred(fx->srv);
    assert_int_equal(pub->reading, 0);
    advance(fx, 2600);
    assert_int_equal(slow->c.state, MW_CONN_OPEN);
    assert_true(slow->c.dropping);
    assert_int_equal(pub->reading, 1);
    assert_int_equal(fx->node->conns->nbacked, 0);

    out = slow->c.msgs_out;
    send_burst(pub, 'r', 3);
    mw_server_run_deferred(fx->srv);
    assert_int_equal(slow->c.msgs_out, out);
    assert_int_equal(fx->node->metrics->backpressure_drops, 3);
    assert_int_equal(reader->c.msgs_out, 23);
    assert_int_equal(pub->reading, 1);

    slow->take = SIZE_MAX;
    mw_conn_want_flush(&slow->c);
    mw_server_run_deferred(fx->srv);
    assert_false(slow->c.dropping);
    assert_int_equal(slow->reading, 1);
    send_burst(pub, 'r', 1);
    assert_int_equal(slow->c.msgs_out, out + 1);
    release(fx, pub);
    release(fx, slow);
    release(fx, reader);
}

/* Twice the bound is a ceiling within a turn: what one hook sends past it
 * gets the policy at once. */
static void test_twice_the_bound_is_a_ceiling_at_enqueue(void **state)
{
    fx_t *fx = fx_new(state, MW_BP_CLOSE, 2000);
    tconn_t *pub = client(fx), *deaf = client(fx);

    deaf->take = 0;
    send_text(pub, "f40"); /* 2.5 MiB from one hook */
    assert_int_equal(deaf->c.state, MW_CONN_CLOSED);
    assert_int_equal(deaf->c.close_code, 1008);
    assert_true(mw_conn_buffered(&deaf->c) <= 2 * MIB + 16);
    assert_int_equal(fx->node->metrics->backpressure_closes, 1);
    release(fx, pub);
    release(fx, deaf);
}

static void test_twice_the_bound_drops_under_drop(void **state)
{
    fx_t *fx = fx_new(state, MW_BP_DROP, 2000);
    tconn_t *pub = client(fx), *deaf = client(fx);

    deaf->take = 0;
    send_text(pub, "f40");
    assert_int_equal(deaf->c.state, MW_CONN_OPEN);
    assert_int_equal(deaf->c.msgs_out, 31); /* 31 x (64 KiB + 4 + 96) fit 2 MiB */
    assert_int_equal(fx->node->metrics->backpressure_drops, 9);
    release(fx, pub);
    release(fx, deaf);
}

/* Empty pings from a client that does not read its pongs: each pong is
 * charged for its memory, the client stops being read once they pass the
 * bound, and what one read of pings queues stays under twice the bound. */
static void test_a_client_that_does_not_read_its_pongs_stops_being_read(void **state)
{
    fx_t *fx = fx_new(state, MW_BP_CLOSE, 2000);
    tconn_t *t = client(fx);
    enum { PINGS = 65536 / 6 };
    uint8_t *buf = malloc(PINGS * 6);
    size_t len = 0;

    assert_non_null(buf);
    t->take = 0;
    for (int i = 0; i < PINGS; i++)
        len += put_frame(buf + len, MW_OP_PING, NULL, 0);
    mw_conn_on_read(&t->c, buf, len);
    free(buf);
    assert_int_equal(t->reading, 0);
    assert_int_equal(t->c.outq.bytes, 2 * PINGS);
    assert_true(mw_conn_buffered(&t->c) > MIB);
    assert_true(mw_conn_buffered(&t->c) < 2 * MIB);
    advance(fx, 2600);
    assert_int_equal(t->c.state, MW_CONN_CLOSED);
    assert_int_equal(t->c.close_code, 1008);
    release(fx, t);
}

/* The same for an echo of empty messages. */
static void test_a_client_that_does_not_read_its_echoes_stops_being_read(void **state)
{
    fx_t *fx = fx_new(state, MW_BP_CLOSE, 2000);
    tconn_t *t = client(fx);
    enum { MSGS = 12000 }; /* 84 KB of input: 12000 x (3 + 96) queued */
    uint8_t *buf = malloc(MSGS * 7);
    size_t len = 0;

    assert_non_null(buf);
    t->take = 0;
    for (int i = 0; i < MSGS; i++)
        len += put_frame(buf + len, MW_OP_TEXT, "e", 1);
    mw_conn_on_read(&t->c, buf, len);
    free(buf);
    assert_int_equal(t->reading, 0);
    assert_int_equal(t->c.state, MW_CONN_OPEN);
    assert_true(mw_conn_buffered(&t->c) > MIB);
    assert_true(mw_conn_buffered(&t->c) < 2 * MIB);
    /* It reads again once its queue is down to half. */
    t->take = 6000; /* 2000 of its 3-byte frames: not down to half */
    mw_conn_want_flush(&t->c);
    mw_server_run_deferred(fx->srv);
    assert_int_equal(t->reading, 0);
    t->take = SIZE_MAX;
    mw_conn_want_flush(&t->c);
    mw_server_run_deferred(fx->srv);
    assert_int_equal(t->reading, 1);
    assert_null(t->c.backlog);
    release(fx, t);
}

/* A publisher that leaves while held back is skipped when the queue that
 * held it lets go. */
static void test_a_publisher_gone_while_held_back_is_skipped(void **state)
{
    fx_t *fx = fx_new(state, MW_BP_CLOSE, 2000);
    tconn_t *pub = client(fx), *slow = client(fx);

    slow->take = 0;
    send_burst(pub, 'r', 20);
    assert_int_equal(pub->reading, 0);
    release(fx, pub);
    slow->take = SIZE_MAX;
    mw_conn_want_flush(&slow->c);
    mw_server_run_deferred(fx->srv);
    assert_null(slow->c.backlog);
    assert_int_equal(fx->node->conns->nbacked, 0);
    release(fx, slow);
}

/* Reasons to stop reading are a set: clearing one leaves the others. */
static void test_pause_reasons_are_independent(void **state)
{
    fx_t *fx = fx_new(state, MW_BP_CLOSE, 2000);
    tconn_t *t = client(fx);

    mw_conn_pause(&t->c, MW_PAUSE_HELD, 1);
    mw_conn_pause(&t->c, MW_PAUSE_WRITEQ, 1);
    assert_int_equal(t->pauses, 1);
    mw_conn_pause(&t->c, MW_PAUSE_WRITEQ, 0);
    assert_int_equal(t->reading, 0);
    mw_conn_pause(&t->c, MW_PAUSE_WRITEQ, 0);
    assert_int_equal(t->reading, 0);
    mw_conn_pause(&t->c, MW_PAUSE_HELD, 0);
    assert_int_equal(t->reading, 1);
    assert_int_equal(t->c.paused, 0);
    release(fx, t);
}

#define T(f) cmocka_unit_test_teardown(f, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_a_burst_holds_the_publisher_back_and_closes_only_who_does_not_read),
        T(test_a_queue_is_judged_after_the_turns_writes),
        T(test_a_zero_timeout_judges_at_the_end_of_the_turn),
        T(test_drop_skips_a_reader_past_the_timeout_until_it_drains),
        T(test_twice_the_bound_is_a_ceiling_at_enqueue),
        T(test_twice_the_bound_drops_under_drop),
        T(test_a_client_that_does_not_read_its_pongs_stops_being_read),
        T(test_a_client_that_does_not_read_its_echoes_stops_being_read),
        T(test_a_publisher_gone_while_held_back_is_skipped),
        T(test_pause_reasons_are_independent),
    };
    mw_log_configure(MW_LOG_OFF, 0, NULL);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
