/* Unit tests for include/moonwire/outq.h: per-connection write queues of
 * shared frames, partial writes, and the max_bytes cap of a peek. */
#include "helpers.h"

#include "frame.h"
#include "outq.h"
#include "moonwire/error.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int group_teardown(void **state)
{
    mw_outq_pool_drain();
    mw_frame_pool_drain();
    return 0;
}

/* Three frames of 7, 12 and 4 bytes: 23 bytes on the wire. */
#define WIRE                                                                                       \
    "\x81\x05hello"                                                                                \
    "\x82\x0a"                                                                                     \
    "0123456789"                                                                                   \
    "\x89\x02pp"
#define WIRE_LEN 23

typedef struct {
    mw_outq_t q;
    mw_frame_t *f[3];
} fx_t;

static int setup_q(void **state)
{
    fx_t *fx = calloc(1, sizeof(*fx));
    if (fx == NULL)
        return -1;
    mw_outq_init(&fx->q);
    fx->f[0] = mw_frame_new(MW_OP_TEXT, "hello", 5);
    fx->f[1] = mw_frame_new(MW_OP_BINARY, "0123456789", 10);
    fx->f[2] = mw_frame_new(MW_OP_PING, "pp", 2);
    for (int i = 0; i < 3; i++) {
        if (fx->f[i] == NULL || mw_outq_push(&fx->q, fx->f[i]) != 0)
            return -1;
    }
    *state = fx;
    return 0;
}

static int teardown_q(void **state)
{
    fx_t *fx = *state;
    mw_outq_clear(&fx->q);
    for (int i = 0; i < 3; i++)
        if (fx->f[i] != NULL)
            mw_frame_unref(fx->f[i]);
    free(fx);
    return 0;
}

/* Concatenates the peeked iovecs into out; returns the byte count. */
static size_t gather(const struct iovec *iov, size_t n, uint8_t *out)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(out + total, iov[i].iov_base, iov[i].iov_len);
        total += iov[i].iov_len;
    }
    return total;
}

static void test_outq_push_takes_a_reference_and_counts_bytes(void **state)
{
    fx_t *fx = *state;

    assert_false(mw_outq_empty(&fx->q));
    assert_int_equal(fx->q.count, 3);
    assert_int_equal(fx->q.bytes, WIRE_LEN);
    assert_int_equal(fx->q.off, 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(fx->f[i]->refcnt, 2);
}

static void test_outq_starts_empty(void **state)
{
    mw_outq_t q;
    struct iovec iov[2];

    mw_outq_init(&q);
    assert_true(mw_outq_empty(&q));
    assert_int_equal(q.bytes, 0);
    assert_int_equal(q.count, 0);
    assert_int_equal(mw_outq_peek(&q, iov, 2, 0, NULL), 0);
    mw_outq_consume(&q, 0);
    mw_outq_clear(&q);
    assert_true(mw_outq_empty(&q));
}

static void test_outq_peek_gives_every_frame_in_order(void **state)
{
    fx_t *fx = *state;
    struct iovec iov[8];
    uint8_t out[64];

    assert_int_equal(mw_outq_peek(&fx->q, iov, 8, 0, NULL), 3);
    for (int i = 0; i < 3; i++) {
        assert_ptr_equal(iov[i].iov_base, fx->f[i]->bytes);
        assert_int_equal(iov[i].iov_len, fx->f[i]->len);
    }
    assert_int_equal(gather(iov, 3, out), WIRE_LEN);
    assert_memory_equal(out, WIRE, WIRE_LEN);
    /* Peeking does not consume. */
    assert_int_equal(fx->q.bytes, WIRE_LEN);
    assert_int_equal(mw_outq_peek(&fx->q, iov, 8, 0, NULL), 3);
}

static void test_outq_peek_fills_at_most_n_iovecs(void **state)
{
    fx_t *fx = *state;
    struct iovec iov[3];

    assert_int_equal(mw_outq_peek(&fx->q, iov, 2, 0, NULL), 2);
    assert_int_equal(iov[0].iov_len + iov[1].iov_len, 19);
    assert_int_equal(mw_outq_peek(&fx->q, iov, 1, 0, NULL), 1);
    assert_int_equal(iov[0].iov_len, 7);
    assert_int_equal(mw_outq_peek(&fx->q, iov, 0, 0, NULL), 0);
}

static void test_outq_consume_inside_a_frame_resumes_mid_frame(void **state)
{
    fx_t *fx = *state;
    struct iovec iov[8];
    uint8_t out[64];
    size_t n;

    mw_outq_consume(&fx->q, 3);
    assert_int_equal(fx->q.bytes, WIRE_LEN - 3);
    assert_int_equal(fx->q.count, 3);
    assert_int_equal(fx->f[0]->refcnt, 2); /* not written whole yet */
    n = mw_outq_peek(&fx->q, iov, 8, 0, NULL);
    assert_int_equal(n, 3);
    assert_ptr_equal(iov[0].iov_base, fx->f[0]->bytes + 3);
    assert_int_equal(iov[0].iov_len, 4);
    assert_int_equal(gather(iov, n, out), WIRE_LEN - 3);
    assert_memory_equal(out, WIRE + 3, WIRE_LEN - 3);
}

static void test_outq_consume_across_frame_boundaries_drops_written_frames(void **state)
{
    fx_t *fx = *state;
    struct iovec iov[8];
    uint8_t out[64];
    size_t n;

    mw_outq_consume(&fx->q, 9); /* all of frame 0, 2 bytes of frame 1 */
    assert_int_equal(fx->f[0]->refcnt, 1);
    assert_int_equal(fx->f[1]->refcnt, 2);
    assert_int_equal(fx->q.count, 2);
    assert_int_equal(fx->q.bytes, WIRE_LEN - 9);
    n = mw_outq_peek(&fx->q, iov, 8, 0, NULL);
    assert_int_equal(n, 2);
    assert_ptr_equal(iov[0].iov_base, fx->f[1]->bytes + 2);
    assert_int_equal(gather(iov, n, out), WIRE_LEN - 9);
    assert_memory_equal(out, WIRE + 9, WIRE_LEN - 9);

    mw_outq_consume(&fx->q, 10); /* the rest of frame 1, exactly */
    assert_int_equal(fx->f[1]->refcnt, 1);
    assert_int_equal(fx->q.count, 1);
    assert_int_equal(fx->q.off, 0);
    n = mw_outq_peek(&fx->q, iov, 8, 0, NULL);
    assert_int_equal(n, 1);
    assert_ptr_equal(iov[0].iov_base, fx->f[2]->bytes);
    assert_int_equal(iov[0].iov_len, 4);

    mw_outq_consume(&fx->q, 4);
    assert_true(mw_outq_empty(&fx->q));
    assert_int_equal(fx->q.bytes, 0);
    assert_int_equal(fx->q.count, 0);
    assert_int_equal(fx->f[2]->refcnt, 1);
    assert_int_equal(mw_outq_peek(&fx->q, iov, 8, 0, NULL), 0);
}

static void test_outq_accepts_pushes_after_draining(void **state)
{
    fx_t *fx = *state;
    struct iovec iov[4];

    mw_outq_consume(&fx->q, WIRE_LEN);
    assert_true(mw_outq_empty(&fx->q));
    assert_rc(mw_outq_push(&fx->q, fx->f[2]), 0);
    assert_rc(mw_outq_push(&fx->q, fx->f[0]), 0);
    assert_int_equal(fx->q.bytes, 11);
    assert_int_equal(mw_outq_peek(&fx->q, iov, 4, 0, NULL), 2);
    assert_ptr_equal(iov[0].iov_base, fx->f[2]->bytes);
    assert_ptr_equal(iov[1].iov_base, fx->f[0]->bytes);
}

static void test_outq_peek_caps_the_bytes_at_max_bytes(void **state)
{
    fx_t *fx = *state;
    struct iovec iov[8];
    uint8_t out[64];

    for (size_t max = 1; max <= WIRE_LEN + 5; max++) {
        size_t n = mw_outq_peek(&fx->q, iov, 8, max, NULL);
        size_t total = gather(iov, n, out);
        assert_true(n >= 1);
        assert_true(total >= 1);
        assert_true(total <= max);
        assert_memory_equal(out, WIRE, total);
        if (max >= WIRE_LEN)
            assert_int_equal(total, WIRE_LEN);
    }
    /* A cap below the first frame gives part of it. */
    assert_int_equal(mw_outq_peek(&fx->q, iov, 8, 3, NULL), 1);
    assert_int_equal(iov[0].iov_len, 3);
    /* Mid-frame too. */
    mw_outq_consume(&fx->q, 2);
    assert_int_equal(mw_outq_peek(&fx->q, iov, 8, 2, NULL), 1);
    assert_ptr_equal(iov[0].iov_base, fx->f[0]->bytes + 2);
    assert_int_equal(iov[0].iov_len, 2);
}

/* Drains the queue the way a transport would: peek at most max bytes into at
 * most niov iovecs, "write" only `write` of them, consume what was written. */
static void drain_like_a_transport(size_t niov, size_t max, size_t write)
{
    mw_outq_t q;
    mw_frame_t *f[6];
    uint8_t want[4096], got[4096];
    size_t want_len = 0, got_len = 0, lens[6] = {0, 5, 125, 126, 300, 1};

    mw_outq_init(&q);
    for (int i = 0; i < 6; i++) {
        uint8_t payload[300];
        for (size_t j = 0; j < lens[i]; j++)
            payload[j] = (uint8_t)(i * 50 + j);
        f[i] = mw_frame_new(i % 2 ? MW_OP_BINARY : MW_OP_TEXT, payload, lens[i]);
        assert_non_null(f[i]);
        memcpy(want + want_len, f[i]->bytes, f[i]->len);
        want_len += f[i]->len;
        assert_rc(mw_outq_push(&q, f[i]), 0);
        mw_frame_unref(f[i]); /* the queue holds the only reference now */
    }
    assert_int_equal(q.bytes, want_len);

    while (!mw_outq_empty(&q)) {
        struct iovec iov[8];
        size_t reported = 0, n = mw_outq_peek(&q, iov, niov, max, &reported), total = 0, w;
        assert_true(n >= 1 && n <= niov);
        for (size_t i = 0; i < n; i++)
            total += iov[i].iov_len;
        assert_int_equal(reported, total); /* what the transport writes */
        assert_true(total >= 1);
        if (max > 0)
            assert_true(total <= max);
        w = total < write ? total : write;
        /* Copy the first w bytes of the iovecs: a short write. */
        for (size_t i = 0, left = w; i < n && left > 0; i++) {
            size_t take = iov[i].iov_len < left ? iov[i].iov_len : left;
            memcpy(got + got_len, iov[i].iov_base, take);
            got_len += take;
            left -= take;
        }
        mw_outq_consume(&q, w);
        assert_int_equal(q.bytes, want_len - got_len);
    }
    assert_int_equal(got_len, want_len);
    assert_memory_equal(got, want, want_len);
    assert_int_equal(q.count, 0);
    assert_int_equal(q.bytes, 0);
}

static void test_outq_partial_writes_deliver_every_byte_once_in_order(void **state)
{
    static const size_t niovs[] = {1, 2, 8};
    static const size_t maxes[] = {0, 1, 3, 7, 64, 130, 1000};
    static const size_t writes[] = {1, 2, 5, 127, 4096};

    for (size_t a = 0; a < NELEM(niovs); a++)
        for (size_t b = 0; b < NELEM(maxes); b++)
            for (size_t c = 0; c < NELEM(writes); c++)
                drain_like_a_transport(niovs[a], maxes[b], writes[c]);
}

static void test_outq_clear_drops_every_reference(void **state)
{
    fx_t *fx = *state;

    mw_outq_consume(&fx->q, 3);
    mw_outq_clear(&fx->q);
    assert_true(mw_outq_empty(&fx->q));
    assert_int_equal(fx->q.bytes, 0);
    assert_int_equal(fx->q.count, 0);
    assert_int_equal(fx->q.off, 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(fx->f[i]->refcnt, 1);
}

static void test_outq_entries_are_reused_after_being_released(void **state)
{
    mw_outq_t q;
    mw_frame_t *f = mw_frame_new(MW_OP_TEXT, "x", 1);

    assert_non_null(f);
    mw_outq_init(&q);
    for (int round = 0; round < 1000; round++) {
        for (int i = 0; i < 10; i++)
            assert_rc(mw_outq_push(&q, f), 0);
        assert_int_equal(f->refcnt, 11);
        if (round % 2)
            mw_outq_clear(&q);
        else
            mw_outq_consume(&q, 30);
        assert_int_equal(f->refcnt, 1);
        assert_true(mw_outq_empty(&q));
    }
    mw_frame_unref(f);
    mw_outq_pool_drain();
}

/* Pushes and partial writes interleaved, so that frames move between the
 * inline ring and the list behind it in every way: the bytes peeked are
 * always the unwritten rest of what was pushed, in push order. */
static void test_outq_keeps_order_across_the_ring_and_the_list(void **state)
{
    enum { NFRAMES = 400, STREAM = NFRAMES * 8 };
    static uint8_t expect[STREAM], got[STREAM];
    mw_frame_t *f[NFRAMES];
    size_t pushed = 0, written = 0, expect_len = 0;
    uint32_t rnd = 12345;
    mw_outq_t q;
    (void)state;

    mw_outq_init(&q);
    for (int i = 0; i < NFRAMES; i++) {
        char payload[6];
        snprintf(payload, sizeof(payload), "%05d", i);
        f[i] = mw_frame_new(MW_OP_TEXT, payload, 5);
        assert_non_null(f[i]);
    }
    while (written < expect_len || pushed < NFRAMES) {
        struct iovec iov[3];
        size_t n, total;

        rnd = rnd * 1103515245u + 12345u;
        /* 0 to 6 pushes, then a write of 0 to 20 bytes through at most 3 iovecs. */
        for (uint32_t k = (rnd >> 8) % 7; k > 0 && pushed < NFRAMES; k--, pushed++) {
            assert_rc(mw_outq_push(&q, f[pushed]), 0);
            memcpy(expect + expect_len, f[pushed]->bytes, f[pushed]->len);
            expect_len += f[pushed]->len;
        }
        assert_int_equal(q.bytes, expect_len - written);
        n = mw_outq_peek(&q, iov, 3, 0, NULL);
        total = gather(iov, n, got);
        assert_memory_equal(got, expect + written, total);
        if (total > (rnd >> 16) % 21)
            total = (rnd >> 16) % 21;
        mw_outq_consume(&q, total);
        written += total;
    }
    assert_true(mw_outq_empty(&q));
    for (int i = 0; i < NFRAMES; i++) {
        assert_int_equal(f[i]->refcnt, 1);
        mw_frame_unref(f[i]);
    }
}

/* A backlog of empty frames is charged for the memory it holds, not for
 * its 2 bytes on the wire each; a partly written frame still holds all of it. */
static void test_outq_charges_each_frame_for_its_memory(void **state)
{
    mw_frame_t *f[10];
    mw_outq_t q;
    (void)state;

    mw_outq_init(&q);
    assert_int_equal(mw_outq_cost(&q), 0);
    for (int i = 0; i < 10; i++) {
        f[i] = mw_frame_new(MW_OP_PONG, NULL, 0);
        assert_non_null(f[i]);
        assert_rc(mw_outq_push(&q, f[i]), 0);
        mw_frame_unref(f[i]);
    }
    assert_int_equal(q.bytes, 20);
    assert_int_equal(mw_outq_cost(&q), 10 * (2 + MW_OUTQ_FRAME_COST));
    mw_outq_consume(&q, 1);
    assert_int_equal(mw_outq_cost(&q), 19 + 10 * MW_OUTQ_FRAME_COST);
    mw_outq_consume(&q, 1);
    assert_int_equal(mw_outq_cost(&q), 9 * (2 + MW_OUTQ_FRAME_COST));
    mw_outq_clear(&q);
    assert_int_equal(mw_outq_cost(&q), 0);
}

/* What the bound counts is close to what the heap really gives a backlog of
 * frames of one connection, whatever their size: at most a quarter more
 * (the pool's 64-byte steps), and never less than half. */
static void test_outq_cost_is_what_a_backlog_really_holds(void **state)
{
    enum { N = 20000 };
    static const size_t sizes[] = {0, 30, 40, 100, 500, 3000, 10000};
    (void)state;

#if defined(__SANITIZE_ADDRESS__)
    skip(); /* ASan's allocator keeps its own books */
#endif
    for (size_t k = 0; k < NELEM(sizes); k++) {
        static uint8_t payload[10000];
        struct mallinfo2 before, after;
        size_t real, counted;
        mw_outq_t q;

        mw_outq_pool_drain();
        mw_frame_pool_drain();
        mw_outq_init(&q);
        before = mallinfo2();
        for (int i = 0; i < N; i++) {
            mw_frame_t *f = mw_frame_new(MW_OP_TEXT, payload, sizes[k]);
            assert_non_null(f);
            assert_rc(mw_outq_push(&q, f), 0);
            mw_frame_unref(f);
        }
        after = mallinfo2();
        /* Blocks taken from the top of the heap or mmap'ed both count. */
        real = (after.uordblks + after.hblkhd) - (before.uordblks + before.hblkhd);
        counted = mw_outq_cost(&q);
        if (real > counted + counted / 4 || real < counted / 2)
            fail_msg("frames of %zu bytes: %zu counted for %zu held", sizes[k], counted, real);
        mw_outq_clear(&q);
    }
    mw_outq_pool_drain();
    mw_frame_pool_drain();
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup_q, teardown_q)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_outq_push_takes_a_reference_and_counts_bytes),
        cmocka_unit_test(test_outq_starts_empty),
        T(test_outq_peek_gives_every_frame_in_order),
        T(test_outq_peek_fills_at_most_n_iovecs),
        T(test_outq_consume_inside_a_frame_resumes_mid_frame),
        T(test_outq_consume_across_frame_boundaries_drops_written_frames),
        T(test_outq_accepts_pushes_after_draining),
        T(test_outq_peek_caps_the_bytes_at_max_bytes),
        cmocka_unit_test(test_outq_partial_writes_deliver_every_byte_once_in_order),
        T(test_outq_clear_drops_every_reference),
        cmocka_unit_test(test_outq_entries_are_reused_after_being_released),
        cmocka_unit_test(test_outq_keeps_order_across_the_ring_and_the_list),
        cmocka_unit_test(test_outq_charges_each_frame_for_its_memory),
        cmocka_unit_test(test_outq_cost_is_what_a_backlog_really_holds),
    };
    return cmocka_run_group_tests(tests, NULL, group_teardown);
}
