/* Unit tests for include/moonwire/ws.h: the RFC 6455 receive path.
 *
 * Client frames are scripted as literal masked bytes where they are short
 * (the RFC 6455 section 5.7 examples use the masking key 37 fa 21 3d), and
 * built by client_frame() with the same key where they are long. A recording
 * handler collects every event, and each test compares the log with the
 * events it expects, close codes included.
 */
#include "helpers.h"

#include "frame.h"
#include "outq.h"
#include "ws.h"
#include "moonwire/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_MESSAGE (1u << 20)

/* ---- the recording handler --------------------------------------------- */

enum { EV_MESSAGE = 1, EV_PING, EV_PONG, EV_CLOSE, EV_FAIL };

typedef struct {
    int type;
    unsigned arg; /* the opcode of a message, the code of a close or failure */
    uint8_t *data;
    size_t len;
} event_t;

#define MAX_EVENTS 64

typedef struct {
    event_t ev[MAX_EVENTS];
    size_t n;
} rec_t;

static void record(void *ud, int type, unsigned arg, const void *data, size_t len)
{
    rec_t *r = ud;
    event_t *e;

    if (r->n == MAX_EVENTS)
        fail_msg("more than %d events", MAX_EVENTS);
    e = &r->ev[r->n++];
    e->type = type;
    e->arg = arg;
    e->len = len;
    e->data = malloc(len + 1);
    if (e->data == NULL)
        fail_msg("out of memory");
    if (len > 0)
        memcpy(e->data, data, len);
    e->data[len] = '\0';
}

static void on_message(void *ud, int opcode, const uint8_t *data, size_t len)
{
    record(ud, EV_MESSAGE, (unsigned)opcode, data, len);
}

static void on_ping(void *ud, const uint8_t *data, size_t len)
{
    record(ud, EV_PING, 0, data, len);
}

static void on_pong(void *ud, const uint8_t *data, size_t len)
{
    record(ud, EV_PONG, 0, data, len);
}

static void on_close(void *ud, uint16_t code, const char *reason, size_t len)
{
    record(ud, EV_CLOSE, code, reason, len);
}

static void on_fail(void *ud, uint16_t code, const char *why)
{
    assert_non_null(why);
    record(ud, EV_FAIL, code, why, strlen(why));
}

static const mw_ws_handler_t handler = {on_message, on_ping, on_pong, on_close, on_fail};

static void rec_clear(rec_t *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->ev[i].data);
    r->n = 0;
}

/* ---- fixture ----------------------------------------------------------- */

typedef struct {
    mw_ws_t ws;
    rec_t rec;
} fx_t;

static int setup_ws(void **state)
{
    fx_t *fx = calloc(1, sizeof(*fx));
    if (fx == NULL)
        return -1;
    mw_ws_init(&fx->ws, MAX_MESSAGE);
    *state = fx;
    return 0;
}

static int teardown_ws(void **state)
{
    fx_t *fx = *state;
    mw_ws_close(&fx->ws);
    rec_clear(&fx->rec);
    free(fx);
    return 0;
}

/* Starts over with a new connection and an empty log. */
static void reset(fx_t *fx, size_t max_message)
{
    mw_ws_close(&fx->ws);
    rec_clear(&fx->rec);
    mw_ws_init(&fx->ws, max_message);
}

static int group_teardown(void **state)
{
    mw_ws_pool_drain();
    mw_frame_pool_drain();
    mw_outq_pool_drain();
    return 0;
}

/* ---- building client frames -------------------------------------------- */

static const uint8_t mask_key[4] = {0x37, 0xfa, 0x21, 0x3d};

/* Writes a client frame (masked with mask_key, minimal length) into out. */
static size_t client_frame(uint8_t *out, int fin, unsigned rsv, unsigned op, const void *payload,
                           size_t len)
{
    size_t n = 0;
    const uint8_t *p = payload;

    out[n++] = (uint8_t)((fin ? 0x80 : 0) | (rsv & 7) << 4 | (op & 0x0f));
    if (len < 126) {
        out[n++] = (uint8_t)(0x80 | len);
    } else if (len <= 0xffff) {
        out[n++] = 0x80 | 126;
        out[n++] = (uint8_t)(len >> 8);
        out[n++] = (uint8_t)len;
    } else {
        out[n++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            out[n++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    memcpy(out + n, mask_key, 4);
    n += 4;
    for (size_t i = 0; i < len; i++)
        out[n + i] = p[i] ^ mask_key[i % 4];
    return n + len;
}

/* A close frame's payload: the code, then the reason. */
static size_t close_frame(uint8_t *out, unsigned code, const char *reason, size_t reason_len)
{
    uint8_t payload[125];
    payload[0] = (uint8_t)(code >> 8);
    payload[1] = (uint8_t)code;
    memcpy(payload + 2, reason, reason_len);
    return client_frame(out, 1, 0, MW_OP_CLOSE, payload, 2 + reason_len);
}

/* ---- checking the log -------------------------------------------------- */

typedef struct {
    int type;
    unsigned arg;
    const char *data; /* NULL: do not compare the bytes (failures) */
    size_t len;
} want_t;

#define MSG(op, s)                                                                                 \
    {                                                                                              \
        EV_MESSAGE, (op), (s), sizeof(s) - 1                                                       \
    }
#define PING(s)                                                                                    \
    {                                                                                              \
        EV_PING, 0, (s), sizeof(s) - 1                                                             \
    }
#define PONG(s)                                                                                    \
    {                                                                                              \
        EV_PONG, 0, (s), sizeof(s) - 1                                                             \
    }
#define CLOSE(code, s)                                                                             \
    {                                                                                              \
        EV_CLOSE, (code), (s), sizeof(s) - 1                                                       \
    }
#define FAIL(code)                                                                                 \
    {                                                                                              \
        EV_FAIL, (code), NULL, 0                                                                   \
    }

static const char *type_name(int type)
{
    static const char *names[] = {"?", "message", "ping", "pong", "close", "fail"};
    return type >= EV_MESSAGE && type <= EV_FAIL ? names[type] : names[0];
}

static void print_log(const rec_t *r)
{
    for (size_t i = 0; i < r->n; i++) {
        const event_t *e = &r->ev[i];
        print_message("  event %zu: %s %u len %zu%s%.*s\n", i, type_name(e->type), e->arg, e->len,
                      e->type == EV_FAIL ? " why: " : "", e->type == EV_FAIL ? (int)e->len : 0,
                      (const char *)e->data);
    }
}

static void expect_log(const rec_t *r, const want_t *want, size_t n)
{
    if (r->n != n) {
        print_log(r);
        fail_msg("expected %zu events, got %zu", n, r->n);
    }
    for (size_t i = 0; i < n; i++) {
        const event_t *e = &r->ev[i];
        if (e->type != want[i].type || e->arg != want[i].arg) {
            print_log(r);
            fail_msg("event %zu: expected %s %u, got %s %u", i, type_name(want[i].type),
                     want[i].arg, type_name(e->type), e->arg);
        }
        if (want[i].data != NULL) {
            assert_int_equal(e->len, want[i].len);
            assert_memory_equal(e->data, want[i].data, want[i].len);
        }
    }
}

#define EXPECT(fx, ...)                                                                            \
    do {                                                                                           \
        const want_t want_[] = {__VA_ARGS__};                                                      \
        expect_log(&(fx)->rec, want_, NELEM(want_));                                               \
    } while (0)

#define EXPECT_NOTHING(fx) expect_log(&(fx)->rec, NULL, 0)

static int feed(fx_t *fx, const void *p, size_t len)
{
    return mw_ws_feed(&fx->ws, &handler, &fx->rec, p, len);
}

/* Feeds bytes and expects a single failure with this close code. */
static void expect_fail(fx_t *fx, const uint8_t *p, size_t len, unsigned code)
{
    assert_rc(feed(fx, p, len), MW_ECLOSED);
    EXPECT(fx, FAIL(code));
}

static uint8_t wire[3 * 70000];

/* ---- messages ---------------------------------------------------------- */

static void test_ws_reports_the_rfc_masked_hello_as_one_text_message(void **state)
{
    fx_t *fx = *state;
    assert_rc(feed(fx, B("\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58")), 0);
    EXPECT(fx, MSG(MW_OP_TEXT, "Hello"));
}

static void test_ws_reports_a_binary_message(void **state)
{
    fx_t *fx = *state;
    /* "\x00\xff\x10" masked with 37 fa 21 3d. */
    assert_rc(feed(fx, B("\x82\x83\x37\xfa\x21\x3d\x37\x05\x31")), 0);
    EXPECT(fx, MSG(MW_OP_BINARY, "\x00\xff\x10"));
}

static void test_ws_reports_the_rfc_masked_pong_and_a_ping(void **state)
{
    fx_t *fx = *state;
    assert_rc(feed(fx, B("\x8a\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58")), 0);
    assert_rc(feed(fx, B("\x89\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58")), 0);
    assert_rc(feed(fx, B("\x89\x80\x37\xfa\x21\x3d")), 0);
    EXPECT(fx, PONG("Hello"), PING("Hello"), PING(""));
}

static void test_ws_reassembles_a_fragmented_message_around_an_interleaved_ping(void **state)
{
    fx_t *fx = *state;
    /* The RFC 5.7 fragmented "Hel" + "lo", masked, with a ping between. */
    assert_rc(feed(fx, B("\x01\x83\x37\xfa\x21\x3d\x7f\x9f\x4d")), 0);
    EXPECT_NOTHING(fx);
    assert_rc(feed(fx, B("\x89\x82\x37\xfa\x21\x3d\x47\x93")), 0); /* ping "pi" */
    EXPECT(fx, PING("pi"));
    assert_rc(feed(fx, B("\x80\x82\x37\xfa\x21\x3d\x5b\x95")), 0);
    EXPECT(fx, PING("pi"), MSG(MW_OP_TEXT, "Hello"));
}

static void test_ws_reassembles_a_message_of_several_continuation_frames(void **state)
{
    fx_t *fx = *state;
    size_t n = 0;

    n += client_frame(wire + n, 0, 0, MW_OP_BINARY, "ab", 2);
    n += client_frame(wire + n, 0, 0, MW_OP_CONT, "", 0);
    n += client_frame(wire + n, 0, 0, MW_OP_CONT, "cd", 2);
    n += client_frame(wire + n, 1, 0, MW_OP_CONT, "e", 1);
    n += client_frame(wire + n, 1, 0, MW_OP_TEXT, "next", 4);
    assert_rc(feed(fx, wire, n), 0);
    EXPECT(fx, MSG(MW_OP_BINARY, "abcde"), MSG(MW_OP_TEXT, "next"));
}

static void test_ws_reports_zero_length_messages(void **state)
{
    fx_t *fx = *state;
    size_t n = 0;

    assert_rc(feed(fx, B("\x81\x80\x37\xfa\x21\x3d")), 0);
    assert_rc(feed(fx, B("\x82\x80\x37\xfa\x21\x3d")), 0);
    n += client_frame(wire + n, 0, 0, MW_OP_TEXT, "", 0);
    n += client_frame(wire + n, 1, 0, MW_OP_CONT, "", 0);
    assert_rc(feed(fx, wire, n), 0);
    EXPECT(fx, MSG(MW_OP_TEXT, ""), MSG(MW_OP_BINARY, ""), MSG(MW_OP_TEXT, ""));
}

static void test_ws_reads_16_bit_lengths(void **state)
{
    fx_t *fx = *state;
    static uint8_t payload[65535];
    size_t n;

    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)(i * 31 + 7);

    n = client_frame(wire, 1, 0, MW_OP_BINARY, payload, 126);
    assert_memory_equal(wire, "\x82\xfe\x00\x7e\x37\xfa\x21\x3d", 8);
    assert_int_equal(n, 8 + 126);
    assert_rc(feed(fx, wire, n), 0);

    n = client_frame(wire, 1, 0, MW_OP_BINARY, payload, 65535);
    assert_memory_equal(wire, "\x82\xfe\xff\xff\x37\xfa\x21\x3d", 8);
    assert_rc(feed(fx, wire, n), 0);

    assert_int_equal(fx->rec.n, 2);
    assert_int_equal(fx->rec.ev[0].type, EV_MESSAGE);
    assert_int_equal(fx->rec.ev[0].arg, MW_OP_BINARY);
    assert_int_equal(fx->rec.ev[0].len, 126);
    assert_memory_equal(fx->rec.ev[0].data, payload, 126);
    assert_int_equal(fx->rec.ev[1].len, 65535);
    assert_memory_equal(fx->rec.ev[1].data, payload, 65535);
}

static void test_ws_reads_64_bit_lengths(void **state)
{
    fx_t *fx = *state;
    static uint8_t payload[65536 + 100];
    size_t n;

    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)(i * 13 + 1);
    n = client_frame(wire, 1, 0, MW_OP_BINARY, payload, 65536);
    assert_memory_equal(wire, "\x82\xff\x00\x00\x00\x00\x00\x01\x00\x00\x37\xfa\x21\x3d", 14);
    assert_rc(feed(fx, wire, n), 0);
    n = client_frame(wire, 1, 0, MW_OP_BINARY, payload, sizeof(payload));
    assert_rc(feed(fx, wire, n), 0);

    assert_int_equal(fx->rec.n, 2);
    assert_int_equal(fx->rec.ev[0].len, 65536);
    assert_memory_equal(fx->rec.ev[0].data, payload, 65536);
    assert_int_equal(fx->rec.ev[1].len, sizeof(payload));
    assert_memory_equal(fx->rec.ev[1].data, payload, sizeof(payload));
}

static void test_ws_reports_every_frame_of_a_single_feed(void **state)
{
    fx_t *fx = *state;
    assert_rc(feed(fx, B("\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"
                         "\x89\x80\x37\xfa\x21\x3d"
                         "\x82\x83\x37\xfa\x21\x3d\x37\x05\x31"
                         "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58")),
              0);
    EXPECT(fx, MSG(MW_OP_TEXT, "Hello"), PING(""), MSG(MW_OP_BINARY, "\x00\xff\x10"),
           MSG(MW_OP_TEXT, "Hello"));
}

/* A script touching every path: short, 16-bit, fragmented with a control
 * frame between, a multi-byte character split across fragments, a close. */
static size_t build_script(uint8_t *out, uint8_t *big, size_t big_len)
{
    size_t n = 0;
    for (size_t i = 0; i < big_len; i++)
        big[i] = (uint8_t)('a' + i % 26);
    n += client_frame(out + n, 1, 0, MW_OP_TEXT, "Hello", 5);
    n += client_frame(out + n, 1, 0, MW_OP_BINARY, big, big_len);
    n += client_frame(out + n, 0, 0, MW_OP_TEXT, "caf\xc3", 4);
    n += client_frame(out + n, 1, 0, MW_OP_PING, "p", 1);
    n += client_frame(out + n, 0, 0, MW_OP_CONT, "\xa9 \xe2\x82", 4);
    n += client_frame(out + n, 1, 0, MW_OP_CONT, "\xac!", 2);
    n += client_frame(out + n, 1, 0, MW_OP_PONG, "", 0);
    n += client_frame(out + n, 1, 0, MW_OP_TEXT, "", 0);
    n += close_frame(out + n, 1000, "bye", 3);
    return n;
}

static void expect_script_log(fx_t *fx, const uint8_t *big, size_t big_len)
{
    assert_int_equal(fx->rec.n, 7);
    assert_int_equal(fx->rec.ev[1].type, EV_MESSAGE);
    assert_int_equal(fx->rec.ev[1].len, big_len);
    assert_memory_equal(fx->rec.ev[1].data, big, big_len);
    fx->rec.ev[1].len = 0; /* compared; skip it below */
    {
        const want_t want[] = {
            MSG(MW_OP_TEXT, "Hello"),
            {EV_MESSAGE, MW_OP_BINARY, "", 0},
            PING("p"),
            MSG(MW_OP_TEXT, "caf\xc3\xa9 \xe2\x82\xac!"),
            PONG(""),
            MSG(MW_OP_TEXT, ""),
            CLOSE(1000, "bye"),
        };
        expect_log(&fx->rec, want, NELEM(want));
    }
}

static void test_ws_gives_the_same_events_at_every_split_point(void **state)
{
    fx_t *fx = *state;
    static uint8_t big[300];
    size_t n = build_script(wire, big, sizeof(big));

    assert_rc(feed(fx, wire, n), MW_ECLOSED); /* ends with a close */
    expect_script_log(fx, big, sizeof(big));

    for (size_t cut = 1; cut < n; cut++) {
        reset(fx, MAX_MESSAGE);
        assert_rc(feed(fx, wire, cut), 0);
        assert_rc(feed(fx, wire + cut, n - cut), MW_ECLOSED);
        expect_script_log(fx, big, sizeof(big));
    }
}

static void test_ws_gives_the_same_events_byte_by_byte(void **state)
{
    fx_t *fx = *state;
    static uint8_t big[300];
    size_t n = build_script(wire, big, sizeof(big));

    for (size_t i = 0; i + 1 < n; i++)
        assert_rc(feed(fx, wire + i, 1), 0);
    assert_rc(feed(fx, wire + n - 1, 1), MW_ECLOSED);
    expect_script_log(fx, big, sizeof(big));
}

static void test_ws_accepts_a_feed_larger_than_the_frame_buffer(void **state)
{
    fx_t *fx = *state;
    static uint8_t payload[10000];
    size_t n = 0;

    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)i;
    for (int k = 0; k < 5; k++)
        n += client_frame(wire + n, 1, 0, MW_OP_BINARY, payload, 1000 + (size_t)k * 2000);
    assert_rc(feed(fx, wire, n), 0);
    assert_int_equal(fx->rec.n, 5);
    for (int k = 0; k < 5; k++) {
        assert_int_equal(fx->rec.ev[k].len, 1000 + (size_t)k * 2000);
        assert_memory_equal(fx->rec.ev[k].data, payload, fx->rec.ev[k].len);
    }
}

static void test_ws_holds_no_receive_state_while_idle_at_a_frame_boundary(void **state)
{
    fx_t *fx = *state;
    size_t n = client_frame(wire, 1, 0, MW_OP_TEXT, "Hello", 5);

    assert_int_equal(mw_ws_memory(&fx->ws), 0);
    assert_rc(feed(fx, wire, 3), 0);
    assert_non_null(fx->ws.rx); /* mid-frame: the context keeps the bytes */
    assert_true(mw_ws_memory(&fx->ws) > 4096);
    assert_rc(feed(fx, wire + 3, n - 3), 0);
    assert_null(fx->ws.rx);
    assert_int_equal(mw_ws_memory(&fx->ws), 0);

    /* A 16-bit length, a fragmented message, and a ping: back to none after
     * each frame, except between the fragments of a message. */
    n = client_frame(wire, 1, 0, MW_OP_BINARY, wire + 1000, 200);
    assert_rc(feed(fx, wire, n), 0);
    assert_null(fx->ws.rx);
    n = client_frame(wire, 0, 0, MW_OP_TEXT, "ab", 2);
    assert_rc(feed(fx, wire, n), 0);
    assert_non_null(fx->ws.rx); /* the message is half-assembled */
    assert_true(mw_ws_memory(&fx->ws) < 4096); /* but no frame context */
    n = client_frame(wire, 1, 0, MW_OP_PING, "x", 1);
    assert_rc(feed(fx, wire, n), 0);
    assert_non_null(fx->ws.rx);
    n = client_frame(wire, 1, 0, MW_OP_CONT, "c", 1);
    assert_rc(feed(fx, wire, n), 0);
    assert_null(fx->ws.rx);
    assert_int_equal(mw_ws_memory(&fx->ws), 0);
    assert_int_equal(fx->rec.n, 4);
}

/* Shrink after bursts: a 60 KB message, in one feed or split in reads,
 * leaves the connection holding nothing once it is delivered. */
static void test_ws_gives_a_large_message_buffer_back_once_delivered(void **state)
{
    fx_t *fx = *state;
    static uint8_t payload[60000];
    size_t n, off;

    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)(i * 7);
    n = client_frame(wire, 1, 0, MW_OP_BINARY, payload, sizeof(payload));
    assert_rc(feed(fx, wire, n), 0);
    assert_int_equal(fx->rec.n, 1);
    assert_null(fx->ws.rx);
    assert_int_equal(mw_ws_memory(&fx->ws), 0);

    for (off = 0; off < n; off += 1400) {
        assert_rc(feed(fx, wire + off, n - off < 1400 ? n - off : 1400), 0);
        if (off + 1400 < n)
            assert_true(mw_ws_memory(&fx->ws) >= sizeof(payload)); /* reserved whole */
    }
    assert_int_equal(fx->rec.n, 2);
    assert_int_equal(fx->rec.ev[1].len, sizeof(payload));
    assert_memory_equal(fx->rec.ev[1].data, payload, sizeof(payload));
    assert_null(fx->ws.rx);
    assert_int_equal(mw_ws_memory(&fx->ws), 0);

    /* The same in fragments of 20,000 bytes. */
    n = client_frame(wire, 0, 0, MW_OP_BINARY, payload, 20000);
    n += client_frame(wire + n, 0, 0, MW_OP_CONT, payload + 20000, 20000);
    n += client_frame(wire + n, 1, 0, MW_OP_CONT, payload + 40000, 20000);
    assert_rc(feed(fx, wire, n), 0);
    assert_int_equal(fx->rec.n, 3);
    assert_memory_equal(fx->rec.ev[2].data, payload, sizeof(payload));
    assert_null(fx->ws.rx);
    assert_int_equal(mw_ws_memory(&fx->ws), 0);
}

static void test_ws_keeps_partial_frames_of_two_connections_apart(void **state)
{
    fx_t *a = *state;
    fx_t b;
    uint8_t fa[64], fb[64];
    size_t na = client_frame(fa, 1, 0, MW_OP_TEXT, "from a, in pieces", 17);
    size_t nb = client_frame(fb, 1, 0, MW_OP_BINARY, "from b", 6);

    memset(&b, 0, sizeof(b));
    mw_ws_init(&b.ws, MAX_MESSAGE);
    assert_rc(feed(a, fa, 5), 0);  /* a stops mid-frame */
    assert_rc(feed(&b, fb, 3), 0); /* b stops mid-header */
    assert_rc(feed(a, fa + 5, 7), 0);
    assert_rc(feed(&b, fb + 3, nb - 3), 0); /* b completes first */
    assert_rc(feed(&b, fb, nb), 0);         /* and again, whole */
    assert_rc(feed(a, fa + 12, na - 12), 0);
    EXPECT(a, MSG(MW_OP_TEXT, "from a, in pieces"));
    EXPECT(&b, MSG(MW_OP_BINARY, "from b"), MSG(MW_OP_BINARY, "from b"));
    mw_ws_close(&b.ws);
    rec_clear(&b.rec);
}

static void test_ws_accepts_a_message_of_exactly_max_message(void **state)
{
    fx_t *fx = *state;
    size_t n = 0;

    reset(fx, 10);
    assert_rc(feed(fx, wire, client_frame(wire, 1, 0, MW_OP_TEXT, "0123456789", 10)), 0);
    n += client_frame(wire + n, 0, 0, MW_OP_BINARY, "01234", 5);
    n += client_frame(wire + n, 1, 0, MW_OP_CONT, "56789", 5);
    assert_rc(feed(fx, wire, n), 0);
    EXPECT(fx, MSG(MW_OP_TEXT, "0123456789"), MSG(MW_OP_BINARY, "0123456789"));
}

/* ---- close ------------------------------------------------------------- */

static void test_ws_reports_a_close_with_its_code_and_reason(void **state)
{
    fx_t *fx = *state;
    /* 1000 "bye", masked with 37 fa 21 3d. */
    assert_rc(feed(fx, B("\x88\x85\x37\xfa\x21\x3d\x34\x12\x43\x44\x52")), MW_ECLOSED);
    EXPECT(fx, CLOSE(1000, "bye"));
}

static void test_ws_reports_a_close_with_a_utf8_reason_of_123_bytes(void **state)
{
    fx_t *fx = *state;
    char reason[123];

    for (size_t i = 0; i < 120; i += 3)
        memcpy(reason + i, "\xe2\x82\xac", 3);
    memcpy(reason + 120, "end", 3);
    assert_rc(feed(fx, wire, close_frame(wire, 4001, reason, sizeof(reason))), MW_ECLOSED);
    assert_int_equal(fx->rec.n, 1);
    assert_int_equal(fx->rec.ev[0].type, EV_CLOSE);
    assert_int_equal(fx->rec.ev[0].arg, 4001);
    assert_int_equal(fx->rec.ev[0].len, 123);
    assert_memory_equal(fx->rec.ev[0].data, reason, 123);
}

static void test_ws_reports_a_close_without_payload_as_1005(void **state)
{
    fx_t *fx = *state;
    assert_rc(feed(fx, B("\x88\x80\x37\xfa\x21\x3d")), MW_ECLOSED);
    EXPECT(fx, CLOSE(1005, ""));
}

static void test_ws_accepts_valid_close_codes(void **state)
{
    fx_t *fx = *state;
    static const unsigned valid[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009,
                                     1010, 1011, 1012, 1013, 1014, 3000, 4999};

    for (size_t i = 0; i < NELEM(valid); i++) {
        reset(fx, MAX_MESSAGE);
        assert_rc(feed(fx, wire, close_frame(wire, valid[i], "", 0)), MW_ECLOSED);
        assert_int_equal(fx->rec.n, 1);
        assert_int_equal(fx->rec.ev[0].type, EV_CLOSE);
        assert_int_equal(fx->rec.ev[0].arg, valid[i]);
        assert_int_equal(fx->rec.ev[0].len, 0);
    }
}

static void test_ws_fails_invalid_close_codes_with_1002(void **state)
{
    fx_t *fx = *state;
    static const unsigned invalid[] = {0,    999,  1004, 1005, 1006, 1015,
                                       1016, 1100, 2000, 2999, 5000, 65535};

    for (size_t i = 0; i < NELEM(invalid); i++) {
        reset(fx, MAX_MESSAGE);
        expect_fail(fx, wire, close_frame(wire, invalid[i], "x", 1), 1002);
    }
}

static void test_ws_fails_a_close_with_a_one_byte_payload_with_1002(void **state)
{
    fx_t *fx = *state;
    expect_fail(fx, wire, client_frame(wire, 1, 0, MW_OP_CLOSE, "\x03", 1), 1002);
}

static void test_ws_fails_a_close_reason_that_is_not_utf8_with_1007(void **state)
{
    fx_t *fx = *state;
    expect_fail(fx, wire, close_frame(wire, 1000, "ok\xff", 3), 1007);
    reset(fx, MAX_MESSAGE);
    expect_fail(fx, wire, close_frame(wire, 1000, "cut \xe2\x82", 6), 1007);
    reset(fx, MAX_MESSAGE);
    expect_fail(fx, wire, close_frame(wire, 1000, "\xed\xa0\x80", 3), 1007);
}

static void test_ws_reports_nothing_after_a_close(void **state)
{
    fx_t *fx = *state;
    size_t n = 0;

    n += close_frame(wire + n, 1001, "", 0);
    n += client_frame(wire + n, 1, 0, MW_OP_TEXT, "after", 5);
    assert_rc(feed(fx, wire, n), MW_ECLOSED);
    EXPECT(fx, CLOSE(1001, ""));
    assert_rc(feed(fx, B("\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58")), MW_ECLOSED);
    assert_rc(feed(fx, B("\xff\xff")), MW_ECLOSED);
    EXPECT(fx, CLOSE(1001, ""));
}

/* ---- protocol errors: 1002 --------------------------------------------- */

static void test_ws_fails_an_unmasked_frame_with_1002(void **state)
{
    fx_t *fx = *state;
    expect_fail(fx, B("\x81\x05Hello"), 1002); /* RFC 5.7, unmasked */
    reset(fx, MAX_MESSAGE);
    expect_fail(fx, B("\x81\x00"), 1002);
    reset(fx, MAX_MESSAGE);
    expect_fail(fx, B("\x89\x05Hello"), 1002);
}

static void test_ws_fails_frames_with_rsv_bits_with_1002(void **state)
{
    fx_t *fx = *state;
    for (unsigned rsv = 1; rsv <= 7; rsv++) {
        reset(fx, MAX_MESSAGE);
        expect_fail(fx, wire, client_frame(wire, 1, rsv, MW_OP_TEXT, "Hello", 5), 1002);
        reset(fx, MAX_MESSAGE);
        expect_fail(fx, wire, client_frame(wire, 1, rsv, MW_OP_PING, "", 0), 1002);
    }
}

static void test_ws_fails_reserved_opcodes_with_1002(void **state)
{
    fx_t *fx = *state;
    static const unsigned reserved[] = {3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf};

    for (size_t i = 0; i < NELEM(reserved); i++) {
        reset(fx, MAX_MESSAGE);
        expect_fail(fx, wire, client_frame(wire, 1, 0, reserved[i], "x", 1), 1002);
        reset(fx, MAX_MESSAGE);
        expect_fail(fx, wire, client_frame(wire, 1, 0, reserved[i], "", 0), 1002);
    }
}

static void test_ws_fails_a_continuation_without_a_start_with_1002(void **state)
{
    fx_t *fx = *state;
    expect_fail(fx, wire, client_frame(wire, 1, 0, MW_OP_CONT, "lo", 2), 1002);
    reset(fx, MAX_MESSAGE);
    expect_fail(fx, wire, client_frame(wire, 0, 0, MW_OP_CONT, "lo", 2), 1002);
    /* Nor after a message that has ended. */
    reset(fx, MAX_MESSAGE);
    assert_rc(feed(fx, B("\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58")), 0);
    assert_rc(feed(fx, B("\x80\x82\x37\xfa\x21\x3d\x5b\x95")), MW_ECLOSED);
    EXPECT(fx, MSG(MW_OP_TEXT, "Hello"), FAIL(1002));
}

static void test_ws_fails_a_new_message_inside_a_fragmented_one_with_1002(void **state)
{
    fx_t *fx = *state;
    size_t n = 0;

    n += client_frame(wire + n, 0, 0, MW_OP_TEXT, "Hel", 3);
    n += client_frame(wire + n, 1, 0, MW_OP_TEXT, "lo", 2);
    expect_fail(fx, wire, n, 1002);
    reset(fx, MAX_MESSAGE);
    n = 0;
    n += client_frame(wire + n, 0, 0, MW_OP_BINARY, "Hel", 3);
    n += client_frame(wire + n, 0, 0, MW_OP_BINARY, "lo", 2);
    expect_fail(fx, wire, n, 1002);
}

static void test_ws_fails_a_control_frame_over_125_bytes_with_1002(void **state)
{
    fx_t *fx = *state;
    static uint8_t payload[126];

    assert_rc(feed(fx, wire, client_frame(wire, 1, 0, MW_OP_PING, payload, 125)), 0);
    assert_int_equal(fx->rec.n, 1);
    assert_int_equal(fx->rec.ev[0].type, EV_PING);
    assert_int_equal(fx->rec.ev[0].len, 125);
    reset(fx, MAX_MESSAGE);
    expect_fail(fx, wire, client_frame(wire, 1, 0, MW_OP_PING, payload, 126), 1002);
    reset(fx, MAX_MESSAGE);
    expect_fail(fx, wire, client_frame(wire, 1, 0, MW_OP_PONG, payload, 126), 1002);
    reset(fx, MAX_MESSAGE);
    expect_fail(fx, wire, client_frame(wire, 1, 0, MW_OP_CLOSE, payload, 126), 1002);
}

static void test_ws_fails_a_fragmented_control_frame_with_1002(void **state)
{
    fx_t *fx = *state;
    expect_fail(fx, wire, client_frame(wire, 0, 0, MW_OP_PING, "x", 1), 1002);
    reset(fx, MAX_MESSAGE);
    expect_fail(fx, wire, client_frame(wire, 0, 0, MW_OP_CLOSE, "\x03\xe8", 2), 1002);
    reset(fx, MAX_MESSAGE);
    expect_fail(fx, wire, client_frame(wire, 0, 0, MW_OP_PONG, "", 0), 1002);
}

static void test_ws_fails_a_non_minimal_length_with_1002(void **state)
{
    fx_t *fx = *state;
    /* 5 bytes announced in the 16-bit form, then 200 in the 64-bit form. */
    expect_fail(fx, B("\x82\xfe\x00\x05\x37\xfa\x21\x3d\x00\x00\x00\x00\x00"), 1002);
    reset(fx, MAX_MESSAGE);
    expect_fail(fx, B("\x82\xff\x00\x00\x00\x00\x00\x00\x00\xc8\x37\xfa\x21\x3d\x00"), 1002);
}

static void test_ws_fails_a_64_bit_length_with_the_top_bit_set_with_1002(void **state)
{
    fx_t *fx = *state;
    expect_fail(fx, B("\x82\xff\x80\x00\x00\x00\x00\x00\x00\x00\x37\xfa\x21\x3d\x00"), 1002);
}

/* ---- UTF-8: 1007 ------------------------------------------------------- */

static void test_ws_fails_a_text_message_that_is_not_utf8_with_1007(void **state)
{
    fx_t *fx = *state;
    static const struct {
        const char *s;
        size_t len;
    } bad[] = {
        {"\xff", 1}, {"caf\xc3", 4}, {"\xc0\x80", 2}, {"\xed\xa0\x80", 3}, {"\xf4\x90\x80\x80", 4},
    };

    for (size_t i = 0; i < NELEM(bad); i++) {
        reset(fx, MAX_MESSAGE);
        expect_fail(fx, wire, client_frame(wire, 1, 0, MW_OP_TEXT, bad[i].s, bad[i].len), 1007);
    }
    /* Binary messages are not checked. */
    reset(fx, MAX_MESSAGE);
    assert_rc(feed(fx, wire, client_frame(wire, 1, 0, MW_OP_BINARY, "\xff\xc0", 2)), 0);
    EXPECT(fx, MSG(MW_OP_BINARY, "\xff\xc0"));
}

/* Whole frames are unmasked sixteen bytes at a time, then byte by byte: every
 * length across those steps comes out right, and one bad byte is found in
 * either part (it also clears the "all ASCII" shortcut of the UTF-8 check). */
static void test_ws_unmasks_and_checks_every_length_of_a_whole_frame(void **state)
{
    fx_t *fx = *state;
    uint8_t text[80];

    for (size_t len = 0; len <= sizeof(text); len++) {
        for (size_t i = 0; i < len; i++)
            text[i] = (uint8_t)('a' + (i * 7) % 26);
        if (len >= 2)
            memcpy(text + len / 2 - 1, "Ã©", 2); /* é, valid UTF-8 */
        reset(fx, MAX_MESSAGE);
        assert_rc(feed(fx, wire, client_frame(wire, 1, 0, MW_OP_TEXT, text, len)), 0);
        assert_int_equal(fx->rec.n, 1);
        assert_int_equal(fx->rec.ev[0].len, len);
        if (len > 0)
            assert_memory_equal(fx->rec.ev[0].data, text, len);

        for (size_t bad = 0; bad < len; bad += len > 20 ? 7 : 1) {
            for (size_t i = 0; i < len; i++)
                text[i] = (uint8_t)('a' + (i * 7) % 26);
            text[bad] = 0xff;
            reset(fx, MAX_MESSAGE);
            expect_fail(fx, wire, client_frame(wire, 1, 0, MW_OP_TEXT, text, len), 1007);
        }
    }
}

static void test_ws_fails_a_fragmented_text_that_ends_inside_a_character_with_1007(void **state)
{
    fx_t *fx = *state;
    size_t n = 0;

    n += client_frame(wire + n, 0, 0, MW_OP_TEXT, "ok ", 3);
    n += client_frame(wire + n, 1, 0, MW_OP_CONT, "\xe2\x82", 2);
    expect_fail(fx, wire, n, 1007);
}

static void test_ws_accepts_a_character_split_across_fragments(void **state)
{
    fx_t *fx = *state;
    size_t n = 0;

    n += client_frame(wire + n, 0, 0, MW_OP_TEXT, "\xf0", 1);
    n += client_frame(wire + n, 0, 0, MW_OP_CONT, "\x9f\x98", 2);
    n += client_frame(wire + n, 1, 0, MW_OP_CONT, "\x80", 1);
    assert_rc(feed(fx, wire, n), 0);
    EXPECT(fx, MSG(MW_OP_TEXT, "\xf0\x9f\x98\x80"));
}

static void test_ws_fails_invalid_utf8_in_the_first_fragment_at_once(void **state)
{
    fx_t *fx = *state;

    /* The first fragment is bad; the message's end never arrives. */
    expect_fail(fx, wire, client_frame(wire, 0, 0, MW_OP_TEXT, "ok\xc0 then more", 13), 1007);

    /* Only part of the first frame has arrived, up to the bad byte. */
    reset(fx, MAX_MESSAGE);
    {
        static const char text[] = "abcdefgh\xed\xa0\x80 and much more text after it";
        size_t n = client_frame(wire, 0, 0, MW_OP_TEXT, text, sizeof(text) - 1);
        size_t upto = 6 + 10; /* header, key, "abcdefgh\xed\xa0" */
        assert_true(upto < n);
        expect_fail(fx, wire, upto, 1007);
    }
}

/* ---- limits: 1009 ------------------------------------------------------ */

static void test_ws_fails_a_message_over_max_message_with_1009(void **state)
{
    fx_t *fx = *state;

    reset(fx, 10);
    expect_fail(fx, wire, client_frame(wire, 1, 0, MW_OP_BINARY, "0123456789A", 11), 1009);
    reset(fx, 10);
    expect_fail(fx, wire, client_frame(wire, 1, 0, MW_OP_TEXT, "0123456789A", 11), 1009);
}

static void test_ws_fails_a_huge_announced_length_with_1009_before_the_payload(void **state)
{
    fx_t *fx = *state;

    /* 2^40 bytes announced; only a few arrive. */
    reset(fx, 1000);
    expect_fail(fx, B("\x82\xff\x00\x00\x01\x00\x00\x00\x00\x00\x37\xfa\x21\x3d\x00\x00\x00"),
                1009);
}

static void test_ws_fails_a_header_alone_that_announces_too_much_with_1009(void **state)
{
    fx_t *fx = *state;
    /* 2^40 bytes announced, with and without the masking key, and no payload:
     * wslay reports nothing until a payload byte comes, the check may not wait. */
    static const uint8_t head[] = {0x82, 0xff, 0x00, 0x00, 0x01, 0x00, 0x00,
                                   0x00, 0x00, 0x00, 0x37, 0xfa, 0x21, 0x3d};

    reset(fx, 1000);
    expect_fail(fx, head, sizeof(head), 1009);
    reset(fx, 1000);
    expect_fail(fx, head, 10, 1009);
    /* A 16-bit length over the limit. */
    reset(fx, 1000);
    expect_fail(fx, B("\x81\xfe\x03\xe9"), 1009);
}

static void test_ws_fails_a_header_fed_byte_by_byte_as_soon_as_its_length_is_whole(void **state)
{
    fx_t *fx = *state;
    static const uint8_t head[] = {0x82, 0xff, 0x00, 0x00, 0x01, 0x00, 0x00,
                                   0x00, 0x00, 0x00, 0x37, 0xfa, 0x21, 0x3d};

    reset(fx, 1000);
    for (size_t i = 0; i < 9; i++) {
        assert_rc(feed(fx, head + i, 1), 0);
        EXPECT_NOTHING(fx);
    }
    expect_fail(fx, head + 9, 1, 1009);
}

static void test_ws_fails_a_header_after_a_whole_frame_in_the_same_feed(void **state)
{
    fx_t *fx = *state;
    size_t n;

    reset(fx, 1000);
    n = client_frame(wire, 1, 0, MW_OP_TEXT, "hi", 2);
    memcpy(wire + n, "\x82\xfe\x03\xe9", 4);
    assert_rc(feed(fx, wire, n + 4), MW_ECLOSED);
    EXPECT(fx, MSG(MW_OP_TEXT, "hi"), FAIL(1009));
    /* A continuation whose length passes what the message has left. */
    reset(fx, 10);
    n = client_frame(wire, 0, 0, MW_OP_TEXT, "012345", 6);
    memcpy(wire + n, "\x80\x85", 2);
    expect_fail(fx, wire, n + 2, 1009);
}

static void test_ws_waits_for_the_payload_of_a_header_that_fits(void **state)
{
    fx_t *fx = *state;
    size_t n;

    reset(fx, 10);
    n = client_frame(wire, 1, 0, MW_OP_TEXT, "0123456789", 10);
    for (size_t i = 0; i < 6; i++) {
        assert_rc(feed(fx, wire + i, 1), 0);
        EXPECT_NOTHING(fx);
    }
    assert_rc(feed(fx, wire + 6, n - 6), 0);
    EXPECT(fx, MSG(MW_OP_TEXT, "0123456789"));
}

static void test_ws_fails_fragments_whose_sum_passes_max_message_with_1009(void **state)
{
    fx_t *fx = *state;
    size_t n = 0;

    reset(fx, 10);
    n += client_frame(wire + n, 0, 0, MW_OP_TEXT, "012345", 6);
    n += client_frame(wire + n, 0, 0, MW_OP_CONT, "6789", 4);
    n += client_frame(wire + n, 1, 0, MW_OP_CONT, "A", 1);
    expect_fail(fx, wire, n, 1009);
}

/* ---- after a failure --------------------------------------------------- */

static void test_ws_reports_nothing_after_a_failure(void **state)
{
    fx_t *fx = *state;
    size_t n = 0;

    n += client_frame(wire + n, 1, 0, MW_OP_TEXT, "first", 5);
    n += client_frame(wire + n, 1, 0, 0x3, "bad", 3);
    n += client_frame(wire + n, 1, 0, MW_OP_TEXT, "lost", 4);
    n += close_frame(wire + n, 1000, "", 0);
    assert_rc(feed(fx, wire, n), MW_ECLOSED);
    EXPECT(fx, MSG(MW_OP_TEXT, "first"), FAIL(1002));
    assert_rc(feed(fx, B("\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58")), MW_ECLOSED);
    assert_rc(feed(fx, B("\x81\x05Hello")), MW_ECLOSED);
    EXPECT(fx, MSG(MW_OP_TEXT, "first"), FAIL(1002));
}

/* ---- mw_ws_close_code_valid -------------------------------------------- */

static void test_ws_close_code_valid_accepts_the_codes_an_endpoint_may_send(void **state)
{
    static const unsigned valid[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010,
                                     1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999};
    for (size_t i = 0; i < NELEM(valid); i++) {
        if (!mw_ws_close_code_valid(valid[i]))
            fail_msg("%u should be valid", valid[i]);
    }
}

static void test_ws_close_code_valid_refuses_reserved_and_unassigned_codes(void **state)
{
    static const unsigned invalid[] = {0,    1,    999,  1004, 1005, 1006,  1015,
                                       1016, 1100, 2000, 2999, 5000, 65535, 70000};
    for (size_t i = 0; i < NELEM(invalid); i++) {
        if (mw_ws_close_code_valid(invalid[i]))
            fail_msg("%u should be invalid", invalid[i]);
    }
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup_ws, teardown_ws)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_ws_reports_the_rfc_masked_hello_as_one_text_message),
        T(test_ws_reports_a_binary_message),
        T(test_ws_reports_the_rfc_masked_pong_and_a_ping),
        T(test_ws_reassembles_a_fragmented_message_around_an_interleaved_ping),
        T(test_ws_reassembles_a_message_of_several_continuation_frames),
        T(test_ws_reports_zero_length_messages),
        T(test_ws_reads_16_bit_lengths),
        T(test_ws_reads_64_bit_lengths),
        T(test_ws_reports_every_frame_of_a_single_feed),
        T(test_ws_gives_the_same_events_at_every_split_point),
        T(test_ws_gives_the_same_events_byte_by_byte),
        T(test_ws_accepts_a_feed_larger_than_the_frame_buffer),
        T(test_ws_holds_no_receive_state_while_idle_at_a_frame_boundary),
        T(test_ws_gives_a_large_message_buffer_back_once_delivered),
        T(test_ws_keeps_partial_frames_of_two_connections_apart),
        T(test_ws_accepts_a_message_of_exactly_max_message),
        T(test_ws_reports_a_close_with_its_code_and_reason),
        T(test_ws_reports_a_close_with_a_utf8_reason_of_123_bytes),
        T(test_ws_reports_a_close_without_payload_as_1005),
        T(test_ws_accepts_valid_close_codes),
        T(test_ws_fails_invalid_close_codes_with_1002),
        T(test_ws_fails_a_close_with_a_one_byte_payload_with_1002),
        T(test_ws_fails_a_close_reason_that_is_not_utf8_with_1007),
        T(test_ws_reports_nothing_after_a_close),
        T(test_ws_fails_an_unmasked_frame_with_1002),
        T(test_ws_fails_frames_with_rsv_bits_with_1002),
        T(test_ws_fails_reserved_opcodes_with_1002),
        T(test_ws_fails_a_continuation_without_a_start_with_1002),
        T(test_ws_fails_a_new_message_inside_a_fragmented_one_with_1002),
        T(test_ws_fails_a_control_frame_over_125_bytes_with_1002),
        T(test_ws_fails_a_fragmented_control_frame_with_1002),
        T(test_ws_fails_a_non_minimal_length_with_1002),
        T(test_ws_unmasks_and_checks_every_length_of_a_whole_frame),
        T(test_ws_fails_a_64_bit_length_with_the_top_bit_set_with_1002),
        T(test_ws_fails_a_text_message_that_is_not_utf8_with_1007),
        T(test_ws_fails_a_fragmented_text_that_ends_inside_a_character_with_1007),
        T(test_ws_accepts_a_character_split_across_fragments),
        T(test_ws_fails_invalid_utf8_in_the_first_fragment_at_once),
        T(test_ws_fails_a_message_over_max_message_with_1009),
        T(test_ws_fails_a_huge_announced_length_with_1009_before_the_payload),
        T(test_ws_fails_a_header_alone_that_announces_too_much_with_1009),
        T(test_ws_fails_a_header_fed_byte_by_byte_as_soon_as_its_length_is_whole),
        T(test_ws_fails_a_header_after_a_whole_frame_in_the_same_feed),
        T(test_ws_waits_for_the_payload_of_a_header_that_fits),
        T(test_ws_fails_fragments_whose_sum_passes_max_message_with_1009),
        T(test_ws_reports_nothing_after_a_failure),
        T(test_ws_close_code_valid_accepts_the_codes_an_endpoint_may_send),
        T(test_ws_close_code_valid_refuses_reserved_and_unassigned_codes),
    };
    return cmocka_run_group_tests(tests, NULL, group_teardown);
}
