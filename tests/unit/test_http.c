/* Unit tests for include/moonwire/http.h: request heads, the RFC 6455
 * opening-handshake checks, and the bytes of plain replies and of the 101. */
#include "helpers.h"

#include "frame.h"
#include "http.h"
#include "moonwire/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_HEAD 8192

#define UPGRADE_REQUEST                                                                            \
    "GET /chat?room=lobby&nick=ann HTTP/1.1\r\n"                                                   \
    "Host: example.com\r\n"                                                                        \
    "Upgrade: websocket\r\n"                                                                       \
    "Connection: keep-alive, Upgrade\r\n"                                                          \
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"                                              \
    "Origin: http://example.com\r\n"                                                               \
    "X-Multi: one\r\n"                                                                             \
    "x-multi:  two  \r\n"                                                                          \
    "Sec-WebSocket-Version: 13\r\n"                                                                \
    "\r\n"

/* The RFC 6455 5.7 "Hello" text frame from a client (masked). */
#define MASKED_HELLO "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"

static int setup_req(void **state)
{
    mw_http_req_t *req = calloc(1, sizeof(*req));
    if (req == NULL)
        return -1;
    mw_http_req_init(req, MAX_HEAD);
    *state = req;
    return 0;
}

static int teardown_req(void **state)
{
    mw_http_req_t *req = *state;
    mw_http_req_close(req);
    free(req);
    return 0;
}

static int group_teardown(void **state)
{
    mw_frame_pool_drain();
    return 0;
}

/* Feeds s whole; returns mw_http_feed's result. */
static int feed_str(mw_http_req_t *req, const char *s, size_t *consumed)
{
    size_t dummy;
    return mw_http_feed(req, s, strlen(s), consumed ? consumed : &dummy);
}

/* Parses a complete request into a fresh req (max_head MAX_HEAD) and asserts it parsed. */
static void parse_ok(mw_http_req_t *req, const char *s)
{
    size_t consumed;
    mw_http_req_close(req);
    mw_http_req_init(req, MAX_HEAD);
    assert_rc(feed_str(req, s, &consumed), 0);
    assert_int_equal(consumed, strlen(s));
}

static void assert_header(const mw_http_req_t *req, const char *name, int n, const char *want)
{
    size_t len = 0;
    const char *v = mw_http_header(req, name, n, &len);
    if (want == NULL) {
        assert_null(v);
        return;
    }
    assert_non_null(v);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(v, want, len);
}

static void assert_path(const mw_http_req_t *req, const char *want)
{
    size_t len;
    const char *p = mw_http_path(req, &len);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(p, want, len);
}

static void assert_query(const mw_http_req_t *req, const char *want)
{
    size_t len = 0;
    const char *q = mw_http_query(req, &len);
    if (want == NULL) {
        assert_null(q);
        return;
    }
    assert_non_null(q);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(q, want, len);
}

static void assert_frame_bytes(mw_frame_t *f, const char *want, size_t want_len)
{
    assert_non_null(f);
    assert_int_equal(f->refcnt, 1);
    assert_int_equal(f->hdr, 0);
    assert_int_equal(f->len, want_len);
    assert_int_equal(mw_frame_payload_len(f), want_len);
    assert_memory_equal(f->bytes, want, want_len);
    mw_frame_unref(f);
}

/* ---- mw_http_accept_key ------------------------------------------------ */

static void test_http_accept_key_matches_the_rfc_6455_example(void **state)
{
    char out[29];
    memset(out, 'x', sizeof(out));
    mw_http_accept_key("dGhlIHNhbXBsZSBub25jZQ==", out);
    assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

/* ---- mw_http_feed ------------------------------------------------------ */

static void test_http_feed_parses_a_request_delivered_whole(void **state)
{
    mw_http_req_t *req = *state;
    size_t consumed = 0;

    assert_rc(feed_str(req, UPGRADE_REQUEST, &consumed), 0);
    assert_int_equal(consumed, strlen(UPGRADE_REQUEST));
    assert_path(req, "/chat");
    assert_query(req, "room=lobby&nick=ann");
    assert_header(req, "Host", 0, "example.com");
    assert_header(req, "Upgrade", 0, "websocket");
    assert_header(req, "Sec-WebSocket-Key", 0, "dGhlIHNhbXBsZSBub25jZQ==");
    assert_header(req, "Sec-WebSocket-Version", 0, "13");
    assert_header(req, "Origin", 0, "http://example.com");
    assert_header(req, "Cookie", 0, NULL);
    assert_true(mw_http_wants_upgrade(req));
}

static void test_http_feed_parses_a_request_delivered_byte_by_byte(void **state)
{
    mw_http_req_t *req = *state;
    const char *s = UPGRADE_REQUEST;
    size_t n = strlen(s), consumed;

    for (size_t i = 0; i + 1 < n; i++) {
        assert_rc(mw_http_feed(req, s + i, 1, &consumed), MW_EAGAIN);
        assert_int_equal(consumed, 1);
    }
    assert_rc(mw_http_feed(req, s + n - 1, 1, &consumed), 0);
    assert_int_equal(consumed, 1);

    assert_path(req, "/chat");
    assert_query(req, "room=lobby&nick=ann");
    assert_int_equal(req->nheaders, 8);
    assert_header(req, "Host", 0, "example.com");
    assert_header(req, "Upgrade", 0, "websocket");
    assert_header(req, "Connection", 0, "keep-alive, Upgrade");
    assert_header(req, "Sec-WebSocket-Key", 0, "dGhlIHNhbXBsZSBub25jZQ==");
    assert_header(req, "Origin", 0, "http://example.com");
    assert_header(req, "X-Multi", 0, "one");
    assert_header(req, "X-Multi", 1, "two");
    assert_header(req, "Sec-WebSocket-Version", 0, "13");
}

static void test_http_feed_gives_the_same_result_at_every_split_point(void **state)
{
    mw_http_req_t *req = *state;
    const char *s = UPGRADE_REQUEST;
    size_t n = strlen(s);

    for (size_t cut = 1; cut < n; cut++) {
        size_t consumed;
        mw_http_req_close(req);
        mw_http_req_init(req, MAX_HEAD);
        assert_rc(mw_http_feed(req, s, cut, &consumed), MW_EAGAIN);
        assert_int_equal(consumed, cut);
        assert_rc(mw_http_feed(req, s + cut, n - cut, &consumed), 0);
        assert_int_equal(consumed, n - cut);
        assert_path(req, "/chat");
        assert_query(req, "room=lobby&nick=ann");
        assert_int_equal(req->nheaders, 8);
        assert_header(req, "connection", 0, "keep-alive, Upgrade");
        assert_header(req, "x-multi", 1, "two");
        assert_header(req, "sec-websocket-version", 0, "13");
    }
}

static void test_http_header_lookup_is_case_insensitive(void **state)
{
    mw_http_req_t *req = *state;
    assert_rc(feed_str(req, UPGRADE_REQUEST, NULL), 0);
    assert_header(req, "sec-websocket-key", 0, "dGhlIHNhbXBsZSBub25jZQ==");
    assert_header(req, "SEC-WEBSOCKET-KEY", 0, "dGhlIHNhbXBsZSBub25jZQ==");
    assert_header(req, "hOsT", 0, "example.com");
    /* A prefix of a name is not the name. */
    assert_header(req, "Sec-WebSocket", 0, NULL);
    assert_header(req, "Hos", 0, NULL);
}

static void test_http_header_finds_each_occurrence_of_a_repeated_header(void **state)
{
    mw_http_req_t *req = *state;
    char joined[64];

    assert_rc(feed_str(req, UPGRADE_REQUEST, NULL), 0);
    assert_header(req, "X-Multi", 0, "one");
    assert_header(req, "X-Multi", 1, "two"); /* surrounding spaces trimmed */
    assert_header(req, "X-Multi", 2, NULL);
    assert_header(req, "Host", 1, NULL);
    assert_int_equal(mw_http_header_join(req, "x-multi", joined, sizeof(joined)), 8);
    assert_string_equal(joined, "one, two");
    assert_int_equal(mw_http_header_join(req, "Cookie", joined, sizeof(joined)), 0);
    assert_string_equal(joined, "");
}

static void test_http_header_join_truncates_to_the_buffer(void **state)
{
    mw_http_req_t *req = *state;
    char small[6];

    assert_rc(feed_str(req, UPGRADE_REQUEST, NULL), 0);
    assert_int_equal(mw_http_header_join(req, "X-Multi", small, sizeof(small)), 5);
    assert_string_equal(small, "one, ");
}

static void test_http_header_has_token_matches_items_of_comma_separated_lists(void **state)
{
    mw_http_req_t *req = *state;

    parse_ok(req, "GET / HTTP/1.1\r\n"
                  "Connection: keep-alive, Upgrade\r\n"
                  "Upgrade: foo/1 ,WebSocket\r\n"
                  "X-List: a\r\n"
                  "X-List: b,  c  ,d\r\n"
                  "X-Near: upgraded, notupgrade, upgrade-x\r\n"
                  "\r\n");
    assert_true(mw_http_header_has_token(req, "Connection", "upgrade"));
    assert_true(mw_http_header_has_token(req, "Connection", "keep-alive"));
    assert_true(mw_http_header_has_token(req, "connection", "KEEP-ALIVE"));
    assert_false(mw_http_header_has_token(req, "Connection", "close"));
    assert_true(mw_http_header_has_token(req, "Upgrade", "websocket"));
    assert_true(mw_http_header_has_token(req, "Upgrade", "foo/1"));
    /* Every occurrence of the header counts. */
    assert_true(mw_http_header_has_token(req, "X-List", "a"));
    assert_true(mw_http_header_has_token(req, "X-List", "c"));
    assert_true(mw_http_header_has_token(req, "X-List", "d"));
    assert_false(mw_http_header_has_token(req, "X-List", "b,  c"));
    /* A token is a whole item, not a substring. */
    assert_false(mw_http_header_has_token(req, "X-Near", "upgrade"));
    assert_false(mw_http_header_has_token(req, "Missing", "upgrade"));
}

static void test_http_header_with_an_empty_value_does_not_swallow_the_next(void **state)
{
    mw_http_req_t *req = *state;

    parse_ok(req, "GET / HTTP/1.1\r\n"
                  "X-Empty:\r\n"
                  "Host: example.com\r\n"
                  "X-Blank:   \r\n"
                  "Upgrade: websocket\r\n"
                  "\r\n");
    assert_header(req, "X-Empty", 0, "");
    assert_header(req, "Host", 0, "example.com");
    assert_header(req, "X-Blank", 0, "");
    assert_header(req, "Upgrade", 0, "websocket");
}

static void test_http_feed_accepts_absolute_form_urls(void **state)
{
    mw_http_req_t *req = *state;

    parse_ok(req, "GET http://example.com:8080/chat/room?x=1&y=%20 HTTP/1.1\r\n"
                  "Host: example.com:8080\r\n\r\n");
    assert_path(req, "/chat/room");
    assert_query(req, "x=1&y=%20");

    parse_ok(req, "GET https://example.com/socket HTTP/1.1\r\nHost: example.com\r\n\r\n");
    assert_path(req, "/socket");
    assert_query(req, NULL);
}

static void test_http_feed_reads_an_absolute_form_url_without_a_path_as_slash(void **state)
{
    /* RFC 3986 6.2.3: in http(s) URIs an empty path is the same as "/". */
    mw_http_req_t *req = *state;

    parse_ok(req, "GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n");
    assert_path(req, "/");
    assert_query(req, NULL);
}

static void test_http_feed_keeps_a_fragment_out_of_path_and_query(void **state)
{
    mw_http_req_t *req = *state;

    parse_ok(req, "GET /chat#top HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_path(req, "/chat");
    assert_query(req, NULL);

    parse_ok(req, "GET /chat?room=1#top HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_path(req, "/chat");
    assert_query(req, "room=1");
}

static void test_http_feed_gives_no_query_without_a_question_mark(void **state)
{
    mw_http_req_t *req = *state;

    parse_ok(req, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_path(req, "/");
    assert_query(req, NULL);
}

static void test_http_feed_gives_an_empty_query_after_a_bare_question_mark(void **state)
{
    mw_http_req_t *req = *state;

    parse_ok(req, "GET /a/b? HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_path(req, "/a/b");
    assert_query(req, "");
}

static void test_http_feed_leaves_the_bytes_after_an_upgrade_request(void **state)
{
    mw_http_req_t *req = *state;
    char buf[1024];
    size_t head = strlen(UPGRADE_REQUEST), consumed = 0;
    size_t n = (size_t)snprintf(buf, sizeof(buf), "%s%s", UPGRADE_REQUEST, MASKED_HELLO);

    assert_rc(mw_http_feed(req, buf, n, &consumed), 0);
    assert_int_equal(consumed, head);
    assert_memory_equal(buf + consumed, MASKED_HELLO, n - consumed);
    assert_header(req, "Sec-WebSocket-Key", 0, "dGhlIHNhbXBsZSBub25jZQ==");
}

static void test_http_feed_leaves_the_bytes_after_a_head_completed_by_a_later_read(void **state)
{
    mw_http_req_t *req = *state;
    char buf[1024];
    size_t head = strlen(UPGRADE_REQUEST), first = 40, consumed = 0;
    size_t n = (size_t)snprintf(buf, sizeof(buf), "%s%s", UPGRADE_REQUEST, MASKED_HELLO);

    assert_rc(mw_http_feed(req, buf, first, &consumed), MW_EAGAIN);
    assert_int_equal(consumed, first);
    assert_rc(mw_http_feed(req, buf + first, n - first, &consumed), 0);
    assert_int_equal(consumed, head - first);
    assert_path(req, "/chat");
    assert_header(req, "Origin", 0, "http://example.com");
}

static void test_http_feed_refuses_a_head_larger_than_max_head(void **state)
{
    mw_http_req_t *req = *state;
    char pad[401], head[1024];
    size_t consumed;
    int n;

    mw_http_req_close(req);
    mw_http_req_init(req, 256);
    memset(pad, 'a', 400);
    pad[400] = '\0';
    n = snprintf(head, sizeof(head), "GET / HTTP/1.1\r\nX-Big: %s\r\n\r\n", pad);
    assert_true(n > 256);
    assert_rc(mw_http_feed(req, head, (size_t)n, &consumed), MW_ETOOBIG);
}

static void test_http_feed_refuses_a_head_larger_than_max_head_fed_in_pieces(void **state)
{
    mw_http_req_t *req = *state;
    char head[2048], pad[1200];
    size_t len, off = 0, consumed;
    int r = MW_EAGAIN;

    mw_http_req_close(req);
    mw_http_req_init(req, 512);
    memset(pad, 'a', 1000);
    pad[1000] = '\0';
    len = (size_t)snprintf(head, sizeof(head), "GET / HTTP/1.1\r\nX-Big: %s\r\n\r\n", pad);
    while (off < len && r == MW_EAGAIN) {
        size_t chunk = len - off < 100 ? len - off : 100;
        r = mw_http_feed(req, head + off, chunk, &consumed);
        off += chunk;
    }
    assert_int_equal(r, MW_ETOOBIG);
    assert_true(off <= 600); /* refused once max_head is passed, not at the end */
    assert_true(req->len <= 512);
}

static void test_http_feed_accepts_a_head_of_exactly_max_head_bytes(void **state)
{
    mw_http_req_t *req = *state;
    char head[512], pad[512];
    size_t consumed;
    const size_t fixed = strlen("GET / HTTP/1.1\r\nX-Pad: \r\n\r\n");

    memset(pad, 'p', 256 - fixed);
    pad[256 - fixed] = '\0';
    assert_int_equal(snprintf(head, sizeof(head), "GET / HTTP/1.1\r\nX-Pad: %s\r\n\r\n", pad), 256);
    mw_http_req_close(req);
    mw_http_req_init(req, 256);
    assert_rc(mw_http_feed(req, head, 256, &consumed), 0);
    assert_int_equal(consumed, 256);
}

static void test_http_feed_accepts_a_large_head_below_max_head(void **state)
{
    /* max_head is the only limit a caller sets: a 90 KB head under a 128 KB
     * max_head is an HTTP/1.1 request like any other. */
    mw_http_req_t *req = *state;
    static char head[100000], pad[92161];
    size_t consumed;
    int n;

    memset(pad, 'c', sizeof(pad) - 1);
    pad[sizeof(pad) - 1] = '\0';
    n = snprintf(head, sizeof(head), "GET / HTTP/1.1\r\nCookie: %s\r\n\r\n", pad);
    mw_http_req_close(req);
    mw_http_req_init(req, 128 * 1024);
    assert_rc(mw_http_feed(req, head, (size_t)n, &consumed), 0);
    assert_int_equal(consumed, (size_t)n);
    assert_header(req, "Cookie", 0, pad);
}

static size_t build_headers(char *out, size_t cap, int nheaders)
{
    size_t n = (size_t)snprintf(out, cap, "GET / HTTP/1.1\r\n");
    for (int i = 0; i < nheaders; i++)
        n += (size_t)snprintf(out + n, cap - n, "X-H%d: v\r\n", i);
    n += (size_t)snprintf(out + n, cap - n, "\r\n");
    return n;
}

static void test_http_feed_accepts_max_headers_headers(void **state)
{
    mw_http_req_t *req = *state;
    char buf[4096];
    size_t consumed, n = build_headers(buf, sizeof(buf), MW_HTTP_MAX_HEADERS);

    assert_rc(mw_http_feed(req, buf, n, &consumed), 0);
    assert_int_equal(req->nheaders, MW_HTTP_MAX_HEADERS);
    assert_header(req, "X-H63", 0, "v");
}

static void test_http_feed_refuses_more_than_max_headers_headers(void **state)
{
    mw_http_req_t *req = *state;
    char buf[4096];
    size_t consumed, n = build_headers(buf, sizeof(buf), MW_HTTP_MAX_HEADERS + 1);

    assert_rc(mw_http_feed(req, buf, n, &consumed), MW_ETOOBIG);
}

static void test_http_feed_refuses_garbage_as_a_protocol_error(void **state)
{
    mw_http_req_t *req = *state;
    static const char *garbage[] = {
        "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", /* a TLS ClientHello */
        "HELLO / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
        "GET / SPDY/3\r\n\r\n",
        "\r\n\r\n\x01\x02\x03",
    };
    size_t consumed;

    for (size_t i = 0; i < NELEM(garbage); i++) {
        mw_http_req_close(req);
        mw_http_req_init(req, MAX_HEAD);
        assert_rc(feed_str(req, garbage[i], &consumed), MW_EPROTO);
    }
}

/* ---- mw_http_check_upgrade --------------------------------------------- */

/* Parses the request and runs the upgrade checks; returns the status. */
static int check(mw_http_req_t *req, const char *s, const char **why)
{
    mw_upgrade_t up = {0};
    int r;

    parse_ok(req, s);
    *why = NULL;
    r = mw_http_check_upgrade(req, &up, why);
    if (r != 0) {
        assert_non_null(*why);
        assert_true(strlen(*why) > 0);
    }
    return r;
}

#define REQ_LINE "GET /chat HTTP/1.1\r\nHost: example.com\r\n"
#define H_UPGRADE "Upgrade: websocket\r\n"
#define H_CONN "Connection: Upgrade\r\n"
#define H_KEY "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
#define H_VERSION "Sec-WebSocket-Version: 13\r\n"

static void test_http_check_upgrade_accepts_a_valid_request(void **state)
{
    mw_http_req_t *req = *state;
    mw_upgrade_t up = {0};
    const char *why = NULL;

    parse_ok(req, UPGRADE_REQUEST);
    assert_int_equal(mw_http_check_upgrade(req, &up, &why), 0);
    assert_non_null(up.key);
    assert_memory_equal(up.key, "dGhlIHNhbXBsZSBub25jZQ==", 24);

    /* Minimal, with header names and the upgrade token in other cases. */
    assert_rc(check(req,
                    REQ_LINE "upgrade: WebSocket\r\nconnection: upgrade\r\n"
                             "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                             "sec-websocket-version: 13\r\n\r\n",
                    &why),
              0);
}

static void test_http_check_upgrade_refuses_other_methods_with_405(void **state)
{
    mw_http_req_t *req = *state;
    const char *why;

    assert_int_equal(
        check(req,
              "POST /chat HTTP/1.1\r\nHost: example.com\r\n" H_UPGRADE H_CONN H_KEY H_VERSION
              "\r\n",
              &why),
        405);
    assert_int_equal(
        check(req,
              "HEAD /chat HTTP/1.1\r\nHost: example.com\r\n" H_UPGRADE H_CONN H_KEY H_VERSION
              "\r\n",
              &why),
        405);
}

static void test_http_check_upgrade_refuses_http_1_0_with_400(void **state)
{
    mw_http_req_t *req = *state;
    const char *why;

    assert_int_equal(
        check(req,
              "GET /chat HTTP/1.0\r\nHost: example.com\r\n" H_UPGRADE H_CONN H_KEY H_VERSION "\r\n",
              &why),
        400);
}

static void test_http_check_upgrade_refuses_a_missing_or_invalid_upgrade_with_400(void **state)
{
    mw_http_req_t *req = *state;
    const char *why;

    assert_int_equal(check(req, REQ_LINE H_CONN H_KEY H_VERSION "\r\n", &why), 400);
    assert_int_equal(check(req, REQ_LINE "Upgrade: h2c\r\n" H_CONN H_KEY H_VERSION "\r\n", &why),
                     400);
    assert_int_equal(
        check(req, REQ_LINE "Upgrade: websockets\r\n" H_CONN H_KEY H_VERSION "\r\n", &why), 400);
}

static void
test_http_check_upgrade_refuses_a_missing_connection_upgrade_token_with_400(void **state)
{
    mw_http_req_t *req = *state;
    const char *why;

    assert_int_equal(check(req, REQ_LINE H_UPGRADE H_KEY H_VERSION "\r\n", &why), 400);
    assert_int_equal(
        check(req, REQ_LINE H_UPGRADE "Connection: keep-alive\r\n" H_KEY H_VERSION "\r\n", &why),
        400);
    assert_int_equal(
        check(req, REQ_LINE H_UPGRADE "Connection: upgraded\r\n" H_KEY H_VERSION "\r\n", &why),
        400);
}

static void test_http_check_upgrade_refuses_a_missing_key_with_400(void **state)
{
    mw_http_req_t *req = *state;
    const char *why;

    assert_int_equal(check(req, REQ_LINE H_UPGRADE H_CONN H_VERSION "\r\n", &why), 400);
}

static void test_http_check_upgrade_refuses_a_key_that_is_not_base64_with_400(void **state)
{
    mw_http_req_t *req = *state;
    const char *why;

    assert_int_equal(check(req,
                           REQ_LINE H_UPGRADE H_CONN
                           "Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!A==\r\n" H_VERSION "\r\n",
                           &why),
                     400);
    assert_int_equal(check(req,
                           REQ_LINE H_UPGRADE H_CONN
                           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ\r\n" H_VERSION "\r\n",
                           &why),
                     400);
    assert_int_equal(check(req,
                           REQ_LINE H_UPGRADE H_CONN
                           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub2 5jZQ==\r\n" H_VERSION "\r\n",
                           &why),
                     400);
}

static void test_http_check_upgrade_refuses_a_key_of_15_or_17_bytes_with_400(void **state)
{
    mw_http_req_t *req = *state;
    const char *why;

    /* 15 bytes: 20 characters, no padding. */
    assert_int_equal(check(req,
                           REQ_LINE H_UPGRADE H_CONN
                           "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA\r\n" H_VERSION "\r\n",
                           &why),
                     400);
    /* 17 bytes: 24 characters with one '='. */
    assert_int_equal(check(req,
                           REQ_LINE H_UPGRADE H_CONN
                           "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAA=\r\n" H_VERSION "\r\n",
                           &why),
                     400);
    /* 18 bytes: 24 characters, no padding. */
    assert_int_equal(check(req,
                           REQ_LINE H_UPGRADE H_CONN
                           "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAAA\r\n" H_VERSION "\r\n",
                           &why),
                     400);
}

static void test_http_check_upgrade_refuses_a_repeated_key_with_400(void **state)
{
    mw_http_req_t *req = *state;
    const char *why;

    assert_int_equal(check(req, REQ_LINE H_UPGRADE H_CONN H_KEY H_KEY H_VERSION "\r\n", &why), 400);
}

static void test_http_check_upgrade_refuses_a_missing_version_with_426(void **state)
{
    mw_http_req_t *req = *state;
    const char *why;

    assert_int_equal(check(req, REQ_LINE H_UPGRADE H_CONN H_KEY "\r\n", &why), 426);
}

static void test_http_check_upgrade_refuses_version_8_with_426(void **state)
{
    mw_http_req_t *req = *state;
    const char *why;

    assert_int_equal(
        check(req, REQ_LINE H_UPGRADE H_CONN H_KEY "Sec-WebSocket-Version: 8\r\n\r\n", &why), 426);
}

static void test_http_check_upgrade_refuses_a_version_list_with_426(void **state)
{
    mw_http_req_t *req = *state;
    const char *why;

    assert_int_equal(
        check(req, REQ_LINE H_UPGRADE H_CONN H_KEY "Sec-WebSocket-Version: 13, 8\r\n\r\n", &why),
        426);
}

static void test_http_check_upgrade_refuses_a_request_with_a_body_with_400(void **state)
{
    mw_http_req_t *req = *state;
    const char *why;

    assert_int_equal(
        check(req, REQ_LINE H_UPGRADE H_CONN H_KEY H_VERSION "Content-Length: 5\r\n\r\nhello",
              &why),
        400);
}

/* ---- replies ----------------------------------------------------------- */

static void test_http_reply_builds_a_complete_plain_text_reply(void **state)
{
    static const char want[] = "HTTP/1.1 404 Not Found\r\n"
                               "Content-Type: text/plain; charset=utf-8\r\n"
                               "Content-Length: 10\r\n"
                               "Connection: close\r\n"
                               "\r\n"
                               "not found\n";
    assert_frame_bytes(mw_http_reply(404, NULL, NULL, "not found\n", 10), want, sizeof(want) - 1);
}

static void test_http_reply_includes_content_type_and_extra_headers(void **state)
{
    static const char want[] = "HTTP/1.1 426 Upgrade Required\r\n"
                               "Content-Type: text/html\r\n"
                               "Content-Length: 0\r\n"
                               "Connection: close\r\n"
                               "Sec-WebSocket-Version: 13\r\n"
                               "X-Two: 2\r\n"
                               "\r\n";
    assert_frame_bytes(
        mw_http_reply(426, "text/html", "Sec-WebSocket-Version: 13\r\nX-Two: 2\r\n", NULL, 0), want,
        sizeof(want) - 1);
}

static void test_http_reply_uses_the_standard_reason_phrases(void **state)
{
    static const struct {
        int status;
        const char *line;
    } cases[] = {
        {400, "HTTP/1.1 400 Bad Request\r\n"},
        {403, "HTTP/1.1 403 Forbidden\r\n"},
        {405, "HTTP/1.1 405 Method Not Allowed\r\n"},
        {408, "HTTP/1.1 408 Request Timeout\r\n"},
        {426, "HTTP/1.1 426 Upgrade Required\r\n"},
        {431, "HTTP/1.1 431 Request Header Fields Too Large\r\n"},
        {503, "HTTP/1.1 503 Service Unavailable\r\n"},
    };

    for (size_t i = 0; i < NELEM(cases); i++) {
        mw_frame_t *f = mw_http_reply(cases[i].status, NULL, NULL, "x", 1);
        assert_non_null(f);
        assert_true(f->len > strlen(cases[i].line));
        assert_memory_equal(f->bytes, cases[i].line, strlen(cases[i].line));
        assert_int_equal(f->bytes[f->len - 1], 'x');
        mw_frame_unref(f);
    }
    assert_string_equal(mw_http_status_text(101), "Switching Protocols");
    assert_string_equal(mw_http_status_text(404), "Not Found");
}

static void test_http_reply_carries_a_binary_body_of_any_size(void **state)
{
    static char body[100000];
    size_t len = sizeof(body);
    char head[256];
    int hlen;
    mw_frame_t *f;

    for (size_t i = 0; i < len; i++)
        body[i] = (char)(i * 7);
    hlen = snprintf(head, sizeof(head),
                    "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                    "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                    len);
    f = mw_http_reply(200, "application/octet-stream", NULL, body, len);
    assert_non_null(f);
    assert_int_equal(f->len, (size_t)hlen + len);
    assert_memory_equal(f->bytes, head, (size_t)hlen);
    assert_memory_equal(f->bytes + hlen, body, len);
    mw_frame_unref(f);
}

static void test_http_switching_builds_the_101_reply(void **state)
{
    static const char want[] = "HTTP/1.1 101 Switching Protocols\r\n"
                               "Upgrade: websocket\r\n"
                               "Connection: Upgrade\r\n"
                               "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                               "\r\n";
    assert_frame_bytes(mw_http_switching("dGhlIHNhbXBsZSBub25jZQ==", NULL, NULL), want,
                       sizeof(want) - 1);
}

static void test_http_switching_names_the_chosen_subprotocol_and_extra_headers(void **state)
{
    static const char want[] = "HTTP/1.1 101 Switching Protocols\r\n"
                               "Upgrade: websocket\r\n"
                               "Connection: Upgrade\r\n"
                               "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                               "Sec-WebSocket-Protocol: chat.v2\r\n"
                               "X-Node: a\r\n"
                               "\r\n";
    assert_frame_bytes(mw_http_switching("dGhlIHNhbXBsZSBub25jZQ==", "chat.v2", "X-Node: a\r\n"),
                       want, sizeof(want) - 1);
}

static void test_http_switching_reads_the_key_inside_the_request_buffer(void **state)
{
    /* up.key points into the head and is not NUL-terminated after 24 characters. */
    mw_http_req_t *req = *state;
    mw_upgrade_t up = {0};
    const char *why;
    static const char want[] = "HTTP/1.1 101 Switching Protocols\r\n"
                               "Upgrade: websocket\r\n"
                               "Connection: Upgrade\r\n"
                               "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                               "\r\n";

    parse_ok(req, UPGRADE_REQUEST);
    assert_int_equal(mw_http_check_upgrade(req, &up, &why), 0);
    assert_frame_bytes(mw_http_switching(up.key, NULL, NULL), want, sizeof(want) - 1);
}

/* ---- mw_http_unescape -------------------------------------------------- */

static void assert_unescape(const char *in, int plus, const char *want, size_t want_len)
{
    char out[128];
    size_t n = mw_http_unescape(in, strlen(in), out, plus);
    assert_int_equal(n, want_len);
    assert_memory_equal(out, want, want_len);
}

static void test_http_unescape_decodes_percent_escapes(void **state)
{
    assert_unescape("a%20b", 0, "a b", 3);
    assert_unescape("%41%4a%4A%7e", 0, "AJJ~", 4);
    assert_unescape("%e2%82%ac", 0, "\xe2\x82\xac", 3);
    assert_unescape("%00x", 0, "\0x", 2);
    assert_unescape("%41", 0, "A", 1); /* an escape at the very end */
    assert_unescape("", 0, "", 0);
}

static void test_http_unescape_decodes_plus_as_space_only_when_asked(void **state)
{
    assert_unescape("a+b+%2B", 1, "a b +", 5);
    assert_unescape("a+b+%2B", 0, "a+b++", 5);
}

static void test_http_unescape_keeps_malformed_escapes_literal(void **state)
{
    assert_unescape("%zz", 0, "%zz", 3);
    assert_unescape("%4", 0, "%4", 2);
    assert_unescape("100%", 0, "100%", 4);
    assert_unescape("%", 0, "%", 1);
    assert_unescape("%g1%1g", 0, "%g1%1g", 6);
    assert_unescape("%%41", 0, "%A", 2);
}


/* Bodies (api.max_body) ------------------------------------------------------------------- */

#define POST_HEAD "POST /api/publish HTTP/1.1\r\nHost: x\r\n"

static void body_req(mw_http_req_t *req, size_t max_body)
{
    mw_http_req_close(req);
    mw_http_req_init(req, MAX_HEAD);
    mw_http_req_set_max_body(req, max_body);
}

static void test_http_feed_keeps_a_body_given_by_content_length(void **state)
{
    mw_http_req_t *req = *state;
    const char *s = POST_HEAD "Content-Length: 11\r\n\r\nhello worldGET / HTTP/1.1\r\n";
    size_t consumed;

    body_req(req, 64);
    assert_rc(feed_str(req, s, &consumed), 0);
    assert_int_equal(consumed, strstr(s, "GET") - s); /* the next request stays */
    assert_int_equal(req->body_len, 11);
    assert_memory_equal(req->body, "hello world", 11);
    assert_false(req->body_too_big);
}

static void test_http_feed_keeps_a_body_that_comes_byte_by_byte(void **state)
{
    mw_http_req_t *req = *state;
    const char *s = POST_HEAD "Content-Length: 300\r\n\r\n";
    char body[300];
    size_t consumed;
    int r = MW_EAGAIN;

    memset(body, 'b', sizeof(body));
    body_req(req, 1024);
    assert_rc(feed_str(req, s, &consumed), MW_EAGAIN);
    for (size_t i = 0; i < sizeof(body); i++) {
        r = mw_http_feed(req, body + i, 1, &consumed);
        assert_int_equal(consumed, 1);
        if (i + 1 < sizeof(body))
            assert_rc(r, MW_EAGAIN);
    }
    assert_rc(r, 0);
    assert_int_equal(req->body_len, 300);
    assert_memory_equal(req->body, body, 300);
}

static void test_http_feed_takes_a_chunked_body_out_of_its_chunks(void **state)
{
    mw_http_req_t *req = *state;
    const char *s = POST_HEAD "Transfer-Encoding: chunked\r\n\r\n"
                              "5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n";

    body_req(req, 64);
    parse_ok(req, POST_HEAD "\r\n"); /* resets; then the real one */
    body_req(req, 64);
    assert_rc(feed_str(req, s, NULL), 0);
    assert_int_equal(req->body_len, 11);
    assert_memory_equal(req->body, "hello world", 11);
}

/* Trailer fields after a chunked body that came in a later read than the
 * head are not the head's: they are dropped, and the head's fields stay as
 * they were (the fuzzer found them once taken at offsets from another buffer). */
static void test_http_feed_drops_trailers_of_a_body_read_apart_from_the_head(void **state)
{
    mw_http_req_t *req = *state;
    const char *head = POST_HEAD "Transfer-Encoding: chunked\r\nX-A: 1\r\n\r\n";
    const char *rest = "5\r\nhello\r\n0\r\nX-Trailer: yes\r\nX-B: 2\r\n\r\n";
    size_t consumed, len;
    const char *v;

    body_req(req, 64);
    assert_rc(feed_str(req, head, &consumed), MW_EAGAIN);
    assert_rc(mw_http_feed(req, rest, strlen(rest), &consumed), 0);
    assert_int_equal(req->body_len, 5);
    assert_null(mw_http_header(req, "X-Trailer", 0, &len));
    assert_null(mw_http_header(req, "X-B", 0, &len));
    v = mw_http_header(req, "X-A", 0, &len);
    assert_non_null(v);
    assert_int_equal(len, 1);
    assert_memory_equal(v, "1", 1);
}

static void test_http_feed_refuses_a_content_length_over_max_body_on_the_head(void **state)
{
    mw_http_req_t *req = *state;
    const char *s = POST_HEAD "Content-Length: 65\r\n\r\n";
    size_t consumed;

    body_req(req, 64);
    assert_rc(feed_str(req, s, &consumed), 0); /* complete: to be answered 413 */
    assert_true(req->body_too_big);
    assert_int_equal(req->body_len, 0);
    assert_path(req, "/api/publish");
}

static void test_http_feed_refuses_a_chunked_body_once_past_max_body(void **state)
{
    mw_http_req_t *req = *state;
    const char *s = POST_HEAD "Transfer-Encoding: chunked\r\n\r\n20\r\n";
    char chunk[32];

    memset(chunk, 'c', sizeof(chunk));
    body_req(req, 40);
    assert_rc(feed_str(req, s, NULL), MW_EAGAIN);
    assert_rc(feed_str(req, "", NULL), MW_EAGAIN);
    {
        size_t consumed;
        assert_rc(mw_http_feed(req, chunk, 32, &consumed), MW_EAGAIN);
        assert_rc(feed_str(req, "\r\n20\r\n", NULL), MW_EAGAIN);
        assert_rc(mw_http_feed(req, chunk, 32, &consumed), 0);
    }
    assert_true(req->body_too_big);
    assert_true(req->body_len <= 40);
}

static void test_http_feed_without_max_body_leaves_the_body_to_the_head_buffer(void **state)
{
    mw_http_req_t *req = *state;
    const char *s = POST_HEAD "Content-Length: 5\r\n\r\nhello";

    parse_ok(req, s);
    assert_null(req->body);
    assert_true(req->has_body);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup_req, teardown_req)

/* mw_http_req_new/free: a request's memory is kept for the next one, which
 * starts clean; a buffer grown past the first size is not kept. */
static void test_http_req_new_reuses_a_freed_request_and_starts_clean(void **state)
{
    mw_http_req_t *a, *b, *big;
    size_t consumed = 0;
    char *buf;
    (void)state;

    mw_http_pool_drain();
    a = mw_http_req_new(MAX_HEAD);
    assert_non_null(a);
    assert_rc(feed_str(a, UPGRADE_REQUEST, &consumed), 0);
    buf = a->buf;
    mw_http_req_free(a);
    b = mw_http_req_new(MAX_HEAD);
    assert_ptr_equal(b, a);
    assert_ptr_equal(b->buf, buf); /* the head's buffer came with it */
    assert_int_equal(b->len, 0);
    assert_int_equal(b->nheaders, 0);
    assert_false(b->complete);
    assert_rc(feed_str(b, UPGRADE_REQUEST, &consumed), 0);
    assert_path(b, "/chat");
    assert_header(b, "Upgrade", 0, "websocket");

    /* A head that grew the buffer: the request is kept, its buffer is not. */
    big = mw_http_req_new(MAX_HEAD);
    {
        char head[4096];
        int n = snprintf(head, sizeof(head), "GET / HTTP/1.1\r\nHost: x\r\nX-Pad: %03000d\r\n\r\n", 0);
        assert_rc(mw_http_feed(big, head, (size_t)n, &consumed), 0);
    }
    assert_true(big->cap > 1024);
    mw_http_req_free(big);
    mw_http_req_free(b);
    b = mw_http_req_new(MAX_HEAD); /* the last freed comes first */
    assert_ptr_equal(b, a);
    big = mw_http_req_new(MAX_HEAD);
    assert_null(big->buf);
    assert_int_equal(big->cap, 0);

    /* A lower max_head (a reload) does not keep a buffer larger than it. */
    mw_http_req_free(b);
    b = mw_http_req_new(512);
    assert_null(b->buf);
    assert_rc(feed_str(b, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", &consumed), 0);
    mw_http_req_free(b);
    mw_http_req_free(big);
    mw_http_req_free(NULL);
    mw_http_pool_drain();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_http_accept_key_matches_the_rfc_6455_example),
        cmocka_unit_test(test_http_req_new_reuses_a_freed_request_and_starts_clean),
        T(test_http_feed_keeps_a_body_given_by_content_length),
        T(test_http_feed_keeps_a_body_that_comes_byte_by_byte),
        T(test_http_feed_takes_a_chunked_body_out_of_its_chunks),
        T(test_http_feed_drops_trailers_of_a_body_read_apart_from_the_head),
        T(test_http_feed_refuses_a_content_length_over_max_body_on_the_head),
        T(test_http_feed_refuses_a_chunked_body_once_past_max_body),
        T(test_http_feed_without_max_body_leaves_the_body_to_the_head_buffer),
        T(test_http_feed_parses_a_request_delivered_whole),
        T(test_http_feed_parses_a_request_delivered_byte_by_byte),
        T(test_http_feed_gives_the_same_result_at_every_split_point),
        T(test_http_header_lookup_is_case_insensitive),
        T(test_http_header_finds_each_occurrence_of_a_repeated_header),
        T(test_http_header_join_truncates_to_the_buffer),
        T(test_http_header_has_token_matches_items_of_comma_separated_lists),
        T(test_http_header_with_an_empty_value_does_not_swallow_the_next),
        T(test_http_feed_accepts_absolute_form_urls),
        T(test_http_feed_reads_an_absolute_form_url_without_a_path_as_slash),
        T(test_http_feed_keeps_a_fragment_out_of_path_and_query),
        T(test_http_feed_gives_no_query_without_a_question_mark),
        T(test_http_feed_gives_an_empty_query_after_a_bare_question_mark),
        T(test_http_feed_leaves_the_bytes_after_an_upgrade_request),
        T(test_http_feed_leaves_the_bytes_after_a_head_completed_by_a_later_read),
        T(test_http_feed_refuses_a_head_larger_than_max_head),
        T(test_http_feed_refuses_a_head_larger_than_max_head_fed_in_pieces),
        T(test_http_feed_accepts_a_head_of_exactly_max_head_bytes),
        T(test_http_feed_accepts_a_large_head_below_max_head),
        T(test_http_feed_accepts_max_headers_headers),
        T(test_http_feed_refuses_more_than_max_headers_headers),
        T(test_http_feed_refuses_garbage_as_a_protocol_error),
        T(test_http_check_upgrade_accepts_a_valid_request),
        T(test_http_check_upgrade_refuses_other_methods_with_405),
        T(test_http_check_upgrade_refuses_http_1_0_with_400),
        T(test_http_check_upgrade_refuses_a_missing_or_invalid_upgrade_with_400),
        T(test_http_check_upgrade_refuses_a_missing_connection_upgrade_token_with_400),
        T(test_http_check_upgrade_refuses_a_missing_key_with_400),
        T(test_http_check_upgrade_refuses_a_key_that_is_not_base64_with_400),
        T(test_http_check_upgrade_refuses_a_key_of_15_or_17_bytes_with_400),
        T(test_http_check_upgrade_refuses_a_repeated_key_with_400),
        T(test_http_check_upgrade_refuses_a_missing_version_with_426),
        T(test_http_check_upgrade_refuses_version_8_with_426),
        T(test_http_check_upgrade_refuses_a_version_list_with_426),
        T(test_http_check_upgrade_refuses_a_request_with_a_body_with_400),
        T(test_http_reply_builds_a_complete_plain_text_reply),
        T(test_http_reply_includes_content_type_and_extra_headers),
        T(test_http_reply_uses_the_standard_reason_phrases),
        T(test_http_switching_builds_the_101_reply),
        T(test_http_switching_names_the_chosen_subprotocol_and_extra_headers),
        T(test_http_switching_reads_the_key_inside_the_request_buffer),
        T(test_http_unescape_decodes_percent_escapes),
        T(test_http_unescape_decodes_plus_as_space_only_when_asked),
        T(test_http_unescape_keeps_malformed_escapes_literal),
        /* Replies larger than the head buffer (mw_http_reply once over-read it). */
        T(test_http_reply_carries_a_binary_body_of_any_size),
    };
    return cmocka_run_group_tests(tests, NULL, group_teardown);
}
