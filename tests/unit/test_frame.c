/* Unit tests for include/moonwire/frame.h: server frame serialization,
 * close frames, and reference counts. */
#include "helpers.h"

#include "frame.h"
#include "outq.h"
#include "utf8.h"

#include <stdlib.h>
#include <string.h>

static int group_teardown(void **state)
{
    mw_outq_pool_drain();
    mw_frame_pool_drain();
    return 0;
}

/* ---- mw_frame_header --------------------------------------------------- */

static void assert_header(int fin, uint8_t rsv, uint8_t op, uint64_t len, const char *want,
                          size_t want_len)
{
    uint8_t out[MW_FRAME_MAX_HEADER + 4];
    size_t n;

    memset(out, 0xee, sizeof(out));
    n = mw_frame_header(out, fin, rsv, op, len);
    assert_int_equal(n, want_len);
    assert_memory_equal(out, want, want_len);
    assert_int_equal(out[n], 0xee); /* nothing written past the header */
}

static void test_frame_header_encodes_lengths_up_to_125_in_one_byte(void **state)
{
    assert_header(1, 0, MW_OP_TEXT, 0, "\x81\x00", 2);
    assert_header(1, 0, MW_OP_TEXT, 1, "\x81\x01", 2);
    assert_header(1, 0, MW_OP_BINARY, 125, "\x82\x7d", 2);
}

static void test_frame_header_encodes_126_to_65535_in_16_bits(void **state)
{
    assert_header(1, 0, MW_OP_TEXT, 126, "\x81\x7e\x00\x7e", 4);
    assert_header(1, 0, MW_OP_BINARY, 256, "\x82\x7e\x01\x00", 4);
    assert_header(1, 0, MW_OP_BINARY, 65535, "\x82\x7e\xff\xff", 4);
}

static void test_frame_header_encodes_65536_and_more_in_64_bits(void **state)
{
    assert_header(1, 0, MW_OP_BINARY, 65536, "\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00", 10);
    assert_header(1, 0, MW_OP_TEXT, 0x100000000ULL, "\x81\x7f\x00\x00\x00\x01\x00\x00\x00\x00", 10);
    assert_header(1, 0, MW_OP_TEXT, 0x0102030405060708ULL,
                  "\x81\x7f\x01\x02\x03\x04\x05\x06\x07\x08", 10);
}

static void test_frame_header_sets_fin_rsv_and_opcode_bits(void **state)
{
    assert_header(0, 0, MW_OP_TEXT, 3, "\x01\x03", 2);
    assert_header(0, 0, MW_OP_CONT, 3, "\x00\x03", 2);
    assert_header(1, 4, MW_OP_TEXT, 3, "\xc1\x03", 2); /* RSV1 (permessage-deflate) */
    assert_header(1, 7, MW_OP_BINARY, 3, "\xf2\x03", 2);
    assert_header(1, 0, MW_OP_CLOSE, 2, "\x88\x02", 2);
    assert_header(1, 0, MW_OP_PING, 0, "\x89\x00", 2);
    assert_header(1, 0, MW_OP_PONG, 0, "\x8a\x00", 2);
}

/* ---- mw_frame_new ------------------------------------------------------ */

static void check_new(uint8_t op, size_t len, const char *want_hdr, size_t hdr_len)
{
    uint8_t *payload = malloc(len + 1);
    mw_frame_t *f;

    assert_non_null(payload);
    for (size_t i = 0; i < len; i++)
        payload[i] = (uint8_t)(i * 7 + 3);
    f = mw_frame_new(op, payload, len);
    assert_non_null(f);
    assert_int_equal(f->refcnt, 1);
    assert_int_equal(f->hdr, hdr_len);
    assert_int_equal(f->len, hdr_len + len);
    assert_int_equal(f->rsv, 0);
    assert_memory_equal(f->bytes, want_hdr, hdr_len);
    assert_ptr_equal(mw_frame_payload(f), f->bytes + hdr_len);
    assert_int_equal(mw_frame_payload_len(f), len);
    if (len > 0)
        assert_memory_equal(mw_frame_payload(f), payload, len);
    mw_frame_unref(f);
    free(payload);
}

static void test_frame_new_serializes_header_and_payload_for_each_length_class(void **state)
{
    check_new(MW_OP_TEXT, 0, "\x81\x00", 2);
    check_new(MW_OP_TEXT, 5, "\x81\x05", 2);
    check_new(MW_OP_TEXT, 125, "\x81\x7d", 2);
    check_new(MW_OP_BINARY, 126, "\x82\x7e\x00\x7e", 4);
    check_new(MW_OP_BINARY, 2038, "\x82\x7e\x07\xf6", 4); /* fills the 2048 class */
    check_new(MW_OP_BINARY, 2045, "\x82\x7e\x07\xfd", 4); /* just past it */
    check_new(MW_OP_BINARY, 65535, "\x82\x7e\xff\xff", 4);
    check_new(MW_OP_BINARY, 65536, "\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00", 10);
}

static void test_frame_new_builds_the_rfc_unmasked_hello(void **state)
{
    mw_frame_t *f = mw_frame_new(MW_OP_TEXT, "Hello", 5);
    assert_non_null(f);
    assert_int_equal(f->len, 7);
    assert_memory_equal(f->bytes, "\x81\x05\x48\x65\x6c\x6c\x6f", 7);
    mw_frame_unref(f);
}

static void test_frame_alloc_leaves_the_payload_to_the_caller(void **state)
{
    mw_frame_t *f = mw_frame_alloc(MW_OP_BINARY, 300);
    assert_non_null(f);
    assert_int_equal(f->refcnt, 1);
    assert_int_equal(f->hdr, 4);
    assert_int_equal(f->len, 304);
    assert_memory_equal(f->bytes, "\x82\x7e\x01\x2c", 4);
    memset(f->bytes + f->hdr, 'z', 300); /* the whole payload is writable */
    mw_frame_unref(f);
}

static void test_frame_new_raw_holds_bytes_without_a_header(void **state)
{
    static const char reply[] = "HTTP/1.1 400 Bad Request\r\n\r\n";
    mw_frame_t *f = mw_frame_new_raw(reply, sizeof(reply) - 1);
    assert_non_null(f);
    assert_int_equal(f->refcnt, 1);
    assert_int_equal(f->hdr, 0);
    assert_int_equal(f->len, sizeof(reply) - 1);
    assert_memory_equal(f->bytes, reply, sizeof(reply) - 1);
    assert_int_equal(mw_frame_payload_len(f), sizeof(reply) - 1);
    mw_frame_unref(f);
}

static void test_frame_new_refuses_a_length_that_does_not_fit_32_bits(void **state)
{
    assert_null(mw_frame_alloc(MW_OP_BINARY, UINT32_MAX));
    assert_null(mw_frame_alloc(MW_OP_BINARY, (size_t)UINT32_MAX + 1));
    assert_null(mw_frame_new(MW_OP_BINARY, NULL, (size_t)1 << 33));
    assert_null(mw_frame_new_raw(NULL, (size_t)UINT32_MAX + 1));
}

/* ---- mw_frame_new_close ------------------------------------------------ */

static void assert_frame(mw_frame_t *f, const char *want, size_t want_len)
{
    assert_non_null(f);
    assert_int_equal(f->len, want_len);
    assert_memory_equal(f->bytes, want, want_len);
    mw_frame_unref(f);
}

static void test_frame_new_close_carries_the_code_and_reason(void **state)
{
    assert_frame(mw_frame_new_close(1000, "bye", 3),
                 "\x88\x05\x03\xe8"
                 "bye",
                 7);
    assert_frame(mw_frame_new_close(1001, NULL, 0), "\x88\x02\x03\xe9", 4);
    assert_frame(mw_frame_new_close(4999, "", 0), "\x88\x02\x13\x87", 4);
    assert_frame(mw_frame_new_close(1011, "\xe2\x82\xac", 3), "\x88\x05\x03\xf3\xe2\x82\xac", 7);
}

static void test_frame_new_close_with_code_0_has_an_empty_payload(void **state)
{
    assert_frame(mw_frame_new_close(0, NULL, 0), "\x88\x00", 2);
    assert_frame(mw_frame_new_close(0, "ignored", 7), "\x88\x00", 2);
}

static void assert_close_reason(const char *reason, size_t reason_len, size_t want_len)
{
    mw_frame_t *f = mw_frame_new_close(1000, reason, reason_len);
    assert_non_null(f);
    assert_int_equal(f->hdr, 2);
    assert_true(mw_frame_payload_len(f) <= 125);
    assert_int_equal(mw_frame_payload_len(f), 2 + want_len);
    assert_int_equal(f->bytes[1], 2 + want_len);
    assert_memory_equal(mw_frame_payload(f), "\x03\xe8", 2);
    assert_memory_equal(mw_frame_payload(f) + 2, reason, want_len);
    assert_true(mw_utf8_valid(mw_frame_payload(f) + 2, want_len));
    mw_frame_unref(f);
}

static void test_frame_new_close_cuts_a_long_ascii_reason_to_123_bytes(void **state)
{
    char reason[300];
    memset(reason, 'r', sizeof(reason));
    assert_close_reason(reason, 123, 123);
    assert_close_reason(reason, 124, 123);
    assert_close_reason(reason, sizeof(reason), 123);
}

static void test_frame_new_close_cuts_the_reason_at_a_utf8_boundary(void **state)
{
    char reason[200];

    /* A 3-byte character at 122..124 would be cut in half at 123: drop it whole. */
    memset(reason, 'a', sizeof(reason));
    memcpy(reason + 122, "\xe2\x82\xac", 3);
    assert_close_reason(reason, sizeof(reason), 122);

    /* A 4-byte character at 121..124. */
    memset(reason, 'a', sizeof(reason));
    memcpy(reason + 121, "\xf0\x9f\x98\x80", 4);
    assert_close_reason(reason, sizeof(reason), 121);

    /* A 2-byte character at 121..122 ends exactly at the limit: kept. */
    memset(reason, 'a', sizeof(reason));
    memcpy(reason + 121, "\xc3\xa9", 2);
    assert_close_reason(reason, sizeof(reason), 123);

    /* 41 euro signs are exactly 123 bytes; with more after them, they all stay. */
    for (int i = 0; i < 66; i++)
        memcpy(reason + 3 * i, "\xe2\x82\xac", 3);
    assert_close_reason(reason, 123, 123);
    assert_close_reason(reason, 198, 123);
    assert_close_reason(reason, 125, 123);
}

/* ---- reference counts -------------------------------------------------- */

static void test_frame_ref_and_unref_count_references(void **state)
{
    mw_frame_t *f = mw_frame_new(MW_OP_TEXT, "x", 1);
    assert_non_null(f);
    assert_ptr_equal(mw_frame_ref(f), f);
    assert_ptr_equal(mw_frame_ref(f), f);
    assert_int_equal(f->refcnt, 3);
    mw_frame_unref(f);
    mw_frame_unref(f);
    assert_int_equal(f->refcnt, 1);
    assert_memory_equal(f->bytes, "\x81\x01x", 3); /* still alive and intact */
    mw_frame_unref(f);
}

static void test_frame_pushed_to_several_queues_is_freed_once_after_all_are_done(void **state)
{
    mw_outq_t q[3];
    struct iovec iov[4];
    mw_frame_t *f;
    size_t pooled;

    mw_frame_pool_drain();
    assert_int_equal(mw_frame_pool_bytes(), 0);

    f = mw_frame_new(MW_OP_TEXT, "fan-out", 7);
    assert_non_null(f);
    for (int i = 0; i < 3; i++) {
        mw_outq_init(&q[i]);
        assert_rc(mw_outq_push(&q[i], f), 0);
    }
    assert_int_equal(f->refcnt, 4);
    mw_frame_unref(f); /* the publisher's reference */
    assert_int_equal(f->refcnt, 3);

    /* q0 writes it whole. */
    assert_int_equal(mw_outq_peek(&q[0], iov, 4, 0, NULL), 1);
    assert_ptr_equal(iov[0].iov_base, f->bytes);
    mw_outq_consume(&q[0], 9);
    assert_int_equal(f->refcnt, 2);

    /* q1 is closed and cleared. */
    mw_outq_clear(&q[1]);
    assert_int_equal(f->refcnt, 1);
    assert_int_equal(mw_frame_pool_bytes(), 0);

    /* q2 writes it in two parts; the last byte releases it. */
    mw_outq_consume(&q[2], 4);
    assert_int_equal(f->refcnt, 1);
    assert_int_equal(mw_frame_pool_bytes(), 0);
    mw_outq_consume(&q[2], 5);
    pooled = mw_frame_pool_bytes();
    assert_true(pooled > 0); /* returned to the pool exactly now */

    for (int i = 0; i < 3; i++)
        assert_true(mw_outq_empty(&q[i]));
    mw_frame_pool_drain();
}

static void test_frame_large_shared_frame_is_freed_after_the_last_queue(void **state)
{
    /* Past the pool classes: plain malloc/free, checked by the sanitizers. */
    static uint8_t payload[100000];
    mw_outq_t q[4];
    mw_frame_t *f = mw_frame_new(MW_OP_BINARY, payload, sizeof(payload));

    assert_non_null(f);
    for (int i = 0; i < 4; i++) {
        mw_outq_init(&q[i]);
        assert_rc(mw_outq_push(&q[i], f), 0);
    }
    mw_frame_unref(f);
    for (int i = 0; i < 3; i++)
        mw_outq_consume(&q[i], f->len);
    assert_int_equal(f->refcnt, 1);
    mw_outq_clear(&q[3]);
}

static void test_frame_pool_reuses_a_released_frame_as_new(void **state)
{
    mw_frame_t *f, *g;

    mw_frame_pool_drain();
    f = mw_frame_new(MW_OP_TEXT, "first", 5);
    assert_non_null(f);
    f->rsv = 4;
    mw_frame_ref(f);
    mw_frame_unref(f);
    mw_frame_unref(f);
    assert_true(mw_frame_pool_bytes() > 0);

    g = mw_frame_new(MW_OP_BINARY, "second!", 7);
    assert_non_null(g);
    assert_int_equal(mw_frame_pool_bytes(), 0); /* taken from the pool */
    assert_int_equal(g->refcnt, 1);
    assert_int_equal(g->rsv, 0);
    assert_int_equal(g->hdr, 2);
    assert_int_equal(g->len, 9);
    assert_memory_equal(g->bytes, "\x82\x07second!", 9);
    mw_frame_unref(g);
    mw_frame_pool_drain();
    assert_int_equal(mw_frame_pool_bytes(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame_header_encodes_lengths_up_to_125_in_one_byte),
        cmocka_unit_test(test_frame_header_encodes_126_to_65535_in_16_bits),
        cmocka_unit_test(test_frame_header_encodes_65536_and_more_in_64_bits),
        cmocka_unit_test(test_frame_header_sets_fin_rsv_and_opcode_bits),
        cmocka_unit_test(test_frame_new_serializes_header_and_payload_for_each_length_class),
        cmocka_unit_test(test_frame_new_builds_the_rfc_unmasked_hello),
        cmocka_unit_test(test_frame_alloc_leaves_the_payload_to_the_caller),
        cmocka_unit_test(test_frame_new_raw_holds_bytes_without_a_header),
        cmocka_unit_test(test_frame_new_refuses_a_length_that_does_not_fit_32_bits),
        cmocka_unit_test(test_frame_new_close_carries_the_code_and_reason),
        cmocka_unit_test(test_frame_new_close_with_code_0_has_an_empty_payload),
        cmocka_unit_test(test_frame_new_close_cuts_a_long_ascii_reason_to_123_bytes),
        cmocka_unit_test(test_frame_new_close_cuts_the_reason_at_a_utf8_boundary),
        cmocka_unit_test(test_frame_ref_and_unref_count_references),
        cmocka_unit_test(test_frame_pushed_to_several_queues_is_freed_once_after_all_are_done),
        cmocka_unit_test(test_frame_large_shared_frame_is_freed_after_the_last_queue),
        cmocka_unit_test(test_frame_pool_reuses_a_released_frame_as_new),
    };
    return cmocka_run_group_tests(tests, NULL, group_teardown);
}
