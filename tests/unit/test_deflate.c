/* Unit tests for core/deflate.c: permessage-deflate negotiation, compressed
 * frames shared across recipients, and the bounded inflate path. */
#include "deflate.h"
#include "frame.h"
#include "helpers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static const mw_pmd_config_t on = {1, 6, 64, 1, 15, 15};

static const char *negotiate(const char *offer, mw_pmd_t *pmd)
{
    static char response[256];
    if (!mw_pmd_negotiate(offer, strlen(offer), &on, pmd, response, sizeof(response)))
        return NULL;
    return response;
}

static void test_deflate_accepts_a_bare_offer_without_context_takeover(void **state)
{
    mw_pmd_t pmd;
    (void)state;
    assert_string_equal(negotiate("permessage-deflate", &pmd),
                        "permessage-deflate; server_no_context_takeover; client_no_context_takeover");
    assert_int_equal(pmd.enabled, 1);
    assert_int_equal(pmd.server_bits, 15);
    assert_int_equal(pmd.client_takeover, 0);
}

static void test_deflate_honours_a_smaller_server_window_and_answers_client_bits(void **state)
{
    mw_pmd_t pmd;
    (void)state;
    assert_string_equal(
        negotiate("permessage-deflate; client_max_window_bits; server_max_window_bits=12", &pmd),
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
        "server_max_window_bits=12; client_max_window_bits=15");
    assert_int_equal(pmd.server_bits, 12);
}

static void test_deflate_declines_offers_it_cannot_honour(void **state)
{
    static const char *const bad[] = {
        "permessage-deflate; server_max_window_bits=8",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=016",
        "permessage-deflate; client_max_window_bits=20",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; bogus",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "deflate-frame",
        "",
    };
    mw_pmd_t pmd;
    (void)state;
    for (size_t i = 0; i < NELEM(bad); i++) {
        if (negotiate(bad[i], &pmd) != NULL)
            fail_msg("accepted: %s", bad[i]);
        assert_int_equal(pmd.enabled, 0);
    }
}

static void test_deflate_takes_the_first_acceptable_of_several_offers(void **state)
{
    mw_pmd_t pmd;
    (void)state;
    assert_non_null(negotiate("x-foo, permessage-deflate; server_max_window_bits=8, "
                              "permessage-deflate; server_max_window_bits=\"10\"",
                              &pmd));
    assert_int_equal(pmd.server_bits, 10);
}

static void test_deflate_lets_a_client_keep_its_context_when_configured(void **state)
{
    mw_pmd_config_t keep = on;
    mw_pmd_t pmd;
    char response[256];
    (void)state;
    keep.client_no_context_takeover = 0;
    assert_true(mw_pmd_negotiate("permessage-deflate", 18, &keep, &pmd, response, sizeof(response)));
    assert_string_equal(response, "permessage-deflate; server_no_context_takeover");
    assert_int_equal(pmd.client_takeover, 1);
    /* A client asking for no takeover still gets it. */
    assert_true(mw_pmd_negotiate("permessage-deflate; client_no_context_takeover", 46, &keep, &pmd,
                                 response, sizeof(response)));
    assert_int_equal(pmd.client_takeover, 0);
}

static void test_deflate_is_off_when_disabled(void **state)
{
    mw_pmd_config_t off = on;
    mw_pmd_t pmd;
    char response[256];
    (void)state;
    off.enabled = 0;
    assert_false(mw_pmd_negotiate("permessage-deflate", 18, &off, &pmd, response, sizeof(response)));
}

typedef struct {
    uint8_t *data;
    size_t len, limit;
} collect_t;

static int collect(void *ud, const uint8_t *data, size_t len)
{
    collect_t *c = ud;
    if (len > c->limit - c->len)
        return MW_ETOOBIG;
    c->data = realloc(c->data, c->len + len);
    memcpy(c->data + c->len, data, len);
    c->len += len;
    return 0;
}

static void test_deflate_compresses_once_and_shares_the_frame(void **state)
{
    char text[2000];
    mw_frame_t *f, *z1, *z2;
    mw_inflater_t *in;
    collect_t out = {NULL, 0, sizeof(text)};
    (void)state;
    for (size_t i = 0; i < sizeof(text); i++)
        text[i] = "chat "[i % 5];
    f = mw_frame_new(MW_OP_TEXT, text, sizeof(text));
    z1 = mw_pmd_compress(f, 15, 6);
    z2 = mw_pmd_compress(f, 15, 6);
    assert_non_null(z1);
    assert_ptr_equal(z1, z2); /* the second recipient gets the same bytes */
    assert_int_equal(z1->bytes[0], 0xC1); /* FIN, RSV1, text */
    assert_true(mw_frame_payload_len(z1) < 100);

    in = mw_inflater_get(15);
    assert_rc(mw_inflater_feed(in, mw_frame_payload(z1), mw_frame_payload_len(z1), 1, collect, &out), 0);
    assert_int_equal(out.len, sizeof(text));
    assert_memory_equal(out.data, text, sizeof(text));
    mw_inflater_put(in);
    free(out.data);
    mw_frame_unref(z1);
    mw_frame_unref(z2);
    mw_frame_unref(f); /* drops the cached variant too */
}

static void test_deflate_sends_incompressible_payloads_plain(void **state)
{
    uint8_t noise[300];
    mw_frame_t *f;
    (void)state;
    srand(7);
    for (size_t i = 0; i < sizeof(noise); i++)
        noise[i] = (uint8_t)rand();
    f = mw_frame_new(MW_OP_BINARY, noise, sizeof(noise));
    assert_null(mw_pmd_compress(f, 15, 6));
    assert_null(mw_pmd_compress(f, 15, 6)); /* and remembers not to try again */
    mw_frame_unref(f);
}

static void test_deflate_stops_inflating_a_bomb_at_the_limit(void **state)
{
    size_t n = 32u << 20;
    uint8_t *zeros = calloc(1, n), *packed = malloc(n / 100);
    z_stream z = {0};
    collect_t out = {NULL, 0, 1u << 20};
    mw_inflater_t *in;
    size_t packed_len;
    (void)state;
    deflateInit2(&z, 9, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
    z.next_in = zeros;
    z.avail_in = (uInt)n;
    z.next_out = packed;
    z.avail_out = (uInt)(n / 100);
    assert_int_equal(deflate(&z, Z_SYNC_FLUSH), Z_OK);
    packed_len = n / 100 - z.avail_out;
    deflateEnd(&z);

    in = mw_inflater_get(15);
    assert_rc(mw_inflater_feed(in, packed, packed_len - 4, 1, collect, &out), MW_ETOOBIG);
    assert_true(out.len <= out.limit);
    mw_inflater_put(in);
    free(out.data);
    free(zeros);
    free(packed);
}

static void test_deflate_reports_garbage_as_not_deflate(void **state)
{
    collect_t out = {NULL, 0, 1000};
    mw_inflater_t *in = mw_inflater_get(15);
    (void)state;
    assert_rc(mw_inflater_feed(in, B("\xff\xff\xff\xff"), 1, collect, &out), MW_EPROTO);
    mw_inflater_put(in);
    free(out.data);
}

/* A raw DEFLATE stream of text ended with Z_FINISH: a final block (BFINAL),
 * no 00 00 ff ff. With dict, the stream starts with that window, as a sender
 * that keeps its context across messages would. Returns the length. */
static size_t deflate_final(const char *text, const char *dict, uint8_t *out, size_t cap)
{
    z_stream z = {0};
    size_t n;
    assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
    if (dict != NULL)
        assert_int_equal(deflateSetDictionary(&z, (const Bytef *)dict, (uInt)strlen(dict)), Z_OK);
    z.next_in = (Bytef *)text;
    z.avail_in = (uInt)strlen(text);
    z.next_out = out;
    z.avail_out = (uInt)cap;
    assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
    n = cap - z.avail_out;
    deflateEnd(&z);
    assert_true(out[0] & 1); /* the first block is the last one */
    return n;
}

/* Inflates one whole message with in and checks it reads want. */
static void assert_inflates_to(mw_inflater_t *in, const uint8_t *data, size_t len, const char *want)
{
    collect_t out = {NULL, 0, 1u << 20};
    assert_rc(mw_inflater_feed(in, data, len, 1, collect, &out), 0);
    assert_int_equal(out.len, strlen(want));
    assert_memory_equal(out.data, want, out.len);
    free(out.data);
}

static void test_deflate_inflates_a_message_that_ends_with_a_final_block(void **state)
{
    uint8_t packed[256];
    size_t n = deflate_final("Hello", NULL, packed, sizeof(packed));
    mw_inflater_t *in = mw_inflater_get(15);
    (void)state;
    assert_inflates_to(in, packed, n, "Hello");
    mw_inflater_put(in);
    /* RFC 7692 7.2.3.3's own example: the final block, then a stored
     * block's header whose 00 00 ff ff the sender dropped. */
    in = mw_inflater_get(15);
    assert_inflates_to(in, B("\xf3\x48\xcd\xc9\xc9\x07\x00\x00"), "Hello");
    mw_inflater_put(in);
}

static void test_deflate_reads_a_final_block_cut_anywhere_across_frames(void **state)
{
    const char *text = "a final block, fed in every possible pair of pieces";
    uint8_t packed[256];
    size_t n = deflate_final(text, NULL, packed, sizeof(packed));
    (void)state;
    for (size_t cut = 0; cut <= n; cut++) {
        collect_t out = {NULL, 0, 1000};
        mw_inflater_t *in = mw_inflater_get(15);
        assert_rc(mw_inflater_feed(in, packed, cut, 0, collect, &out), 0);
        assert_rc(mw_inflater_feed(in, packed + cut, n - cut, 1, collect, &out), 0);
        assert_int_equal(out.len, strlen(text));
        assert_memory_equal(out.data, text, out.len);
        mw_inflater_put(in);
        free(out.data);
    }
}

static void test_deflate_keeps_the_window_after_a_final_block_with_context_takeover(void **state)
{
    const char *first = "the quick brown fox jumps over the lazy dog; the quick brown fox";
    const char *second = "the quick brown fox jumps over the lazy dog again";
    uint8_t a[256], b[256], c[256];
    size_t na = deflate_final(first, NULL, a, sizeof(a));
    /* The second message refers back into the first (deflateSetDictionary). */
    size_t nb = deflate_final(second, first, b, sizeof(b));
    size_t nc;
    char both[256];
    mw_inflater_t *in = mw_inflater_get(15);
    (void)state;
    assert_true(nb < strlen(second) / 2);
    assert_inflates_to(in, a, na, first);
    assert_inflates_to(in, b, nb, second);
    /* A sender may go back to sync flushes on the same window. */
    {
        z_stream z = {0};
        snprintf(both, sizeof(both), "%s%s", first, second);
        deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
        deflateSetDictionary(&z, (const Bytef *)both, (uInt)strlen(both));
        z.next_in = (Bytef *)"the lazy dog again and again";
        z.avail_in = 28;
        z.next_out = c;
        z.avail_out = sizeof(c);
        assert_int_equal(deflate(&z, Z_SYNC_FLUSH), Z_OK);
        nc = sizeof(c) - z.avail_out - 4; /* without 00 00 ff ff */
        deflateEnd(&z);
    }
    assert_inflates_to(in, c, nc, "the lazy dog again and again");
    mw_inflater_put(in);
}

static void test_deflate_starts_the_next_message_afresh_after_a_final_block(void **state)
{
    uint8_t a[256], b[256];
    size_t na = deflate_final("first message", NULL, a, sizeof(a));
    size_t nb = deflate_final("second message", NULL, b, sizeof(b));
    mw_inflater_t *in = mw_inflater_get(15);
    (void)state;
    assert_inflates_to(in, a, na, "first message");
    assert_inflates_to(in, B(""), ""); /* an empty message changes nothing */
    assert_inflates_to(in, b, nb, "second message");
    /* Two streams in one message: each ends with a final block. */
    memcpy(a + na, b, nb);
    assert_inflates_to(in, a, na + nb, "first messagesecond message");
    mw_inflater_put(in);
}

static int teardown(void **state)
{
    (void)state;
    mw_pmd_pool_drain();
    mw_frame_pool_drain();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deflate_accepts_a_bare_offer_without_context_takeover),
        cmocka_unit_test(test_deflate_honours_a_smaller_server_window_and_answers_client_bits),
        cmocka_unit_test(test_deflate_declines_offers_it_cannot_honour),
        cmocka_unit_test(test_deflate_takes_the_first_acceptable_of_several_offers),
        cmocka_unit_test(test_deflate_lets_a_client_keep_its_context_when_configured),
        cmocka_unit_test(test_deflate_is_off_when_disabled),
        cmocka_unit_test(test_deflate_compresses_once_and_shares_the_frame),
        cmocka_unit_test(test_deflate_sends_incompressible_payloads_plain),
        cmocka_unit_test(test_deflate_stops_inflating_a_bomb_at_the_limit),
        cmocka_unit_test(test_deflate_reports_garbage_as_not_deflate),
        cmocka_unit_test(test_deflate_inflates_a_message_that_ends_with_a_final_block),
        cmocka_unit_test(test_deflate_reads_a_final_block_cut_anywhere_across_frames),
        cmocka_unit_test(test_deflate_keeps_the_window_after_a_final_block_with_context_takeover),
        cmocka_unit_test(test_deflate_starts_the_next_message_afresh_after_a_final_block),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
