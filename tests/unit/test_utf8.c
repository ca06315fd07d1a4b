/* Unit tests for include/moonwire/utf8.h: the incremental UTF-8 validator. */
#include "helpers.h"

#include "utf8.h"

#include <string.h>

/* A string literal and its length, for tables of byte strings. */
#define S(s) s, sizeof(s) - 1

static mw_utf8_state_t feed_all(const uint8_t *p, size_t len)
{
    return mw_utf8_feed(MW_UTF8_ACCEPT, p, len);
}

static mw_utf8_state_t feed_bytewise(const uint8_t *p, size_t len)
{
    mw_utf8_state_t s = MW_UTF8_ACCEPT;
    for (size_t i = 0; i < len; i++)
        s = mw_utf8_feed(s, p + i, 1);
    return s;
}

/* The verdict of the whole input: ACCEPT, REJECT, or "incomplete" (anything else). */
static int verdict(mw_utf8_state_t s)
{
    return s == MW_UTF8_ACCEPT ? 0 : s == MW_UTF8_REJECT ? 1 : 2;
}

static void assert_valid(const uint8_t *p, size_t len)
{
    assert_int_equal(feed_all(p, len), MW_UTF8_ACCEPT);
    assert_int_equal(feed_bytewise(p, len), MW_UTF8_ACCEPT);
    assert_true(mw_utf8_valid(p, len));
}

static void assert_invalid(const uint8_t *p, size_t len)
{
    assert_int_equal(feed_all(p, len), MW_UTF8_REJECT);
    assert_int_equal(feed_bytewise(p, len), MW_UTF8_REJECT);
    assert_false(mw_utf8_valid(p, len));
}

static void test_utf8_accepts_empty_input(void **state)
{
    assert_int_equal(mw_utf8_feed(MW_UTF8_ACCEPT, (const uint8_t *)"", 0), MW_UTF8_ACCEPT);
    assert_true(mw_utf8_valid((const uint8_t *)"", 0));
}

static void test_utf8_accepts_ascii(void **state)
{
    assert_valid(B("hello"));
    assert_valid(B("a long run of plain ASCII text, longer than eight bytes"));
    assert_valid(B("\x00\x01\x7f"));
}

static void test_utf8_accepts_two_byte_sequences(void **state)
{
    assert_valid(B("\xc2\x80"));       /* U+0080, the smallest */
    assert_valid(B("\xc3\xa9"));       /* é */
    assert_valid(B("\xdf\xbf"));       /* U+07FF, the largest */
    assert_valid(B("caf\xc3\xa9 ok")); /* mixed with ASCII */
}

static void test_utf8_accepts_three_byte_sequences(void **state)
{
    assert_valid(B("\xe0\xa0\x80")); /* U+0800, the smallest */
    assert_valid(B("\xe2\x82\xac")); /* € */
    assert_valid(B("\xed\x9f\xbf")); /* U+D7FF, just below the surrogates */
    assert_valid(B("\xee\x80\x80")); /* U+E000, just above them */
    assert_valid(B("\xef\xbf\xbf")); /* U+FFFF */
}

static void test_utf8_accepts_four_byte_sequences(void **state)
{
    assert_valid(B("\xf0\x90\x80\x80")); /* U+10000, the smallest */
    assert_valid(B("\xf0\x9f\x98\x80")); /* 😀 */
    assert_valid(B("\xf3\xbf\xbf\xbf"));
}

static void test_utf8_accepts_the_last_code_point_u10ffff(void **state)
{
    assert_valid(B("\xf4\x8f\xbf\xbf"));
}

static void test_utf8_accepts_multibyte_text_between_long_ascii_runs(void **state)
{
    /* Exercises the eight-bytes-at-a-time path on both sides of each sequence. */
    assert_valid(B("abcdefghijklmnop\xc3\xa9qrstuvwxyz012345\xe2\x82\xac"
                   "6789abcdefghij\xf0\x9f\x98\x80klmnopqrstuvwxyz"));
    assert_valid(B("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5")); /* κόσμε */
}

static void test_utf8_rejects_overlong_forms(void **state)
{
    assert_invalid(B("\xc0\x80"));         /* U+0000 in two bytes */
    assert_invalid(B("\xc1\xbf"));         /* U+007F in two bytes */
    assert_invalid(B("\xe0\x80\x80"));     /* U+0000 in three bytes */
    assert_invalid(B("\xe0\x9f\xbf"));     /* U+07FF in three bytes */
    assert_invalid(B("\xf0\x80\x80\x80")); /* U+0000 in four bytes */
    assert_invalid(B("\xf0\x8f\xbf\xbf")); /* U+FFFF in four bytes */
}

static void test_utf8_rejects_surrogates(void **state)
{
    assert_invalid(B("\xed\xa0\x80"));             /* U+D800 */
    assert_invalid(B("\xed\xad\xbf"));             /* U+DB7F */
    assert_invalid(B("\xed\xb0\x80"));             /* U+DC00 */
    assert_invalid(B("\xed\xbf\xbf"));             /* U+DFFF */
    assert_invalid(B("\xed\xa0\xbd\xed\xb8\x80")); /* a CESU-8 pair */
}

static void test_utf8_rejects_code_points_above_u10ffff(void **state)
{
    assert_invalid(B("\xf4\x90\x80\x80")); /* U+110000 */
    assert_invalid(B("\xf4\xbf\xbf\xbf"));
    for (unsigned lead = 0xf5; lead <= 0xff; lead++) {
        uint8_t s[4] = {(uint8_t)lead, 0x80, 0x80, 0x80};
        assert_invalid(s, sizeof(s));
        assert_int_equal(mw_utf8_feed(MW_UTF8_ACCEPT, s, 1), MW_UTF8_REJECT);
    }
}

static void test_utf8_rejects_stray_continuation_bytes(void **state)
{
    for (unsigned b = 0x80; b <= 0xbf; b++) {
        uint8_t s[1] = {(uint8_t)b};
        assert_invalid(s, 1);
    }
    assert_invalid(B("a\x80"));
    assert_invalid(B("\xc3\xa9\xa9"));     /* one continuation too many */
    assert_invalid(B("\xe2\x82\xac\x80")); /* after a complete 3-byte sequence */
}

static void test_utf8_rejects_a_lead_byte_followed_by_a_non_continuation(void **state)
{
    assert_invalid(B("\xc3"
                     "a"));
    assert_invalid(B("\xe2\x82"
                     "a"));
    assert_invalid(B("\xf0\x9f\x98"
                     "a"));
    assert_invalid(B("\xc3\xc3\xa9"));
}

static void test_utf8_reports_truncated_sequences_as_neither_accept_nor_reject(void **state)
{
    static const struct {
        const char *s;
        size_t len;
    } cases[] = {
        {S("\xc3")},         {S("\xe2")},
        {S("\xe2\x82")},     {S("\xe0\xa0")},
        {S("\xed\x9f")},     {S("\xf0")},
        {S("\xf0\x9f")},     {S("\xf0\x9f\x98")},
        {S("\xf4\x8f\xbf")}, {S("abcdefghij\xf0\x9f\x98")},
    };

    for (size_t i = 0; i < NELEM(cases); i++) {
        const uint8_t *p = (const uint8_t *)cases[i].s;
        mw_utf8_state_t s = feed_all(p, cases[i].len);
        assert_int_not_equal(s, MW_UTF8_ACCEPT);
        assert_int_not_equal(s, MW_UTF8_REJECT);
        s = feed_bytewise(p, cases[i].len);
        assert_int_not_equal(s, MW_UTF8_ACCEPT);
        assert_int_not_equal(s, MW_UTF8_REJECT);
        assert_false(mw_utf8_valid(p, cases[i].len));
    }
}

static void test_utf8_gives_the_same_verdict_at_every_split_point(void **state)
{
    static const struct {
        const char *s;
        size_t len;
    } cases[] = {
        {S("abcdefgh\xc3\xa9ijklmnopq\xe2\x82\xacrstuvwxyz01\xf0\x9f\x98\x80"
           "23456789")},
        {S("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5")},
        {S("\xf4\x8f\xbf\xbf\xf0\x90\x80\x80")},
        {S("abcdefghijklmnop\xed\xa0\x80qrstuvwx")}, /* a surrogate */
        {S("abcdefgh\xe0\x80\x80ijklmnop")},         /* overlong */
        {S("abc\xf4\x90\x80\x80"
           "defghijklmnop")},                /* above U+10FFFF */
        {S("abcdefghijklmnopq\x80")},        /* stray continuation */
        {S("abcdefghijklmnop\xf0\x9f\x98")}, /* truncated */
    };

    for (size_t i = 0; i < NELEM(cases); i++) {
        const uint8_t *p = (const uint8_t *)cases[i].s;
        size_t len = cases[i].len;
        int whole = verdict(feed_all(p, len));

        assert_int_equal(verdict(feed_bytewise(p, len)), whole);
        for (size_t cut = 0; cut <= len; cut++) {
            mw_utf8_state_t s = mw_utf8_feed(MW_UTF8_ACCEPT, p, cut);
            s = mw_utf8_feed(s, p + cut, len - cut);
            assert_int_equal(verdict(s), whole);
        }
        /* Three pieces, at every pair of cuts. */
        for (size_t a = 0; a <= len; a++) {
            for (size_t b = a; b <= len; b++) {
                mw_utf8_state_t s = mw_utf8_feed(MW_UTF8_ACCEPT, p, a);
                s = mw_utf8_feed(s, p + a, b - a);
                s = mw_utf8_feed(s, p + b, len - b);
                assert_int_equal(verdict(s), whole);
            }
        }
    }
}

static void test_utf8_split_points_keep_the_expected_verdicts(void **state)
{
    /* The split test above compares against the whole-input verdict; pin those. */
    assert_int_equal(feed_all(B("abcdefgh\xc3\xa9ijklmnopq\xe2\x82\xacrstuvwxyz01"
                                "\xf0\x9f\x98\x80"
                                "23456789")),
                     MW_UTF8_ACCEPT);
    assert_int_equal(feed_all(B("abcdefghijklmnop\xed\xa0\x80qrstuvwx")), MW_UTF8_REJECT);
}

static void test_utf8_reject_is_sticky(void **state)
{
    mw_utf8_state_t s = mw_utf8_feed(MW_UTF8_ACCEPT, B("\xff"));
    assert_int_equal(s, MW_UTF8_REJECT);
    assert_int_equal(mw_utf8_feed(s, B("valid ascii afterwards")), MW_UTF8_REJECT);
    assert_int_equal(mw_utf8_feed(s, B("\xc3\xa9")), MW_UTF8_REJECT);
    assert_int_equal(mw_utf8_feed(s, B("")), MW_UTF8_REJECT);
    assert_int_equal(mw_utf8_feed(s, B("abcdefghijklmnopqrstuvwxyz")), MW_UTF8_REJECT);
}

static void test_utf8_rejects_at_the_first_invalid_byte(void **state)
{
    /* Each prefix is invalid however it continues: the state must already be REJECT. */
    static const struct {
        const char *s;
        size_t len;
    } cases[] = {
        {S("\xc0")},
        {S("\xc1")},
        {S("\x80")},
        {S("\xbf")},
        {S("\xf5")},
        {S("\xff")},
        {S("\xe0\x80")},
        {S("\xe0\x9f")},
        {S("\xed\xa0")},
        {S("\xed\xbf")},
        {S("\xf0\x80")},
        {S("\xf0\x8f")},
        {S("\xf4\x90")},
        {S("\xf4\xbf")},
        {S("\xc3"
           "a")},
        {S("\xe2\x82"
           "a")},
        {S("abcdefgh\x80")},
        {S("abc\xc0")},
    };

    for (size_t i = 0; i < NELEM(cases); i++) {
        const uint8_t *p = (const uint8_t *)cases[i].s;
        size_t len = cases[i].len;
        mw_utf8_state_t s = MW_UTF8_ACCEPT;

        /* Every byte before the last leaves a state that can still become valid. */
        for (size_t j = 0; j + 1 < len; j++) {
            s = mw_utf8_feed(s, p + j, 1);
            assert_int_not_equal(s, MW_UTF8_REJECT);
        }
        s = mw_utf8_feed(s, p + len - 1, 1);
        assert_int_equal(s, MW_UTF8_REJECT);
        assert_int_equal(feed_all(p, len), MW_UTF8_REJECT);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8_accepts_empty_input),
        cmocka_unit_test(test_utf8_accepts_ascii),
        cmocka_unit_test(test_utf8_accepts_two_byte_sequences),
        cmocka_unit_test(test_utf8_accepts_three_byte_sequences),
        cmocka_unit_test(test_utf8_accepts_four_byte_sequences),
        cmocka_unit_test(test_utf8_accepts_the_last_code_point_u10ffff),
        cmocka_unit_test(test_utf8_accepts_multibyte_text_between_long_ascii_runs),
        cmocka_unit_test(test_utf8_rejects_overlong_forms),
        cmocka_unit_test(test_utf8_rejects_surrogates),
        cmocka_unit_test(test_utf8_rejects_code_points_above_u10ffff),
        cmocka_unit_test(test_utf8_rejects_stray_continuation_bytes),
        cmocka_unit_test(test_utf8_rejects_a_lead_byte_followed_by_a_non_continuation),
        cmocka_unit_test(test_utf8_reports_truncated_sequences_as_neither_accept_nor_reject),
        cmocka_unit_test(test_utf8_gives_the_same_verdict_at_every_split_point),
        cmocka_unit_test(test_utf8_split_points_keep_the_expected_verdicts),
        cmocka_unit_test(test_utf8_reject_is_sticky),
        cmocka_unit_test(test_utf8_rejects_at_the_first_invalid_byte),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
