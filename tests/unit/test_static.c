/* Unit tests for include/moonwire/static.h: request path decoding and
 * normalisation, the refusals that keep a request inside the root,
 * fingerprinted names, content types, Accept-Encoding q-values, If-None-Match
 * lists, HTTP dates both ways, Range and If-Range values, and which types
 * are compressed. Serving itself is covered end to end by
 * tests/e2e/test_static.py. */
#include "helpers.h"

#include "static_cache.h"
#include "static_http.h"
#include "moonwire/error.h"

#include <stdio.h>
#include <string.h>

#define ETAG "\"0123456789abcdef0123456789abcdef\""

/* Normalises s; returns the result code, and the path in out. */
static int norm(const char *s, char *out, size_t cap)
{
    size_t len = 0;
    int r = mw_static_path_normalize(s, strlen(s), out, cap, &len);
    if (r == 0)
        assert_int_equal(len, strlen(out));
    return r;
}

static void assert_norm(const char *raw, const char *want)
{
    char out[256];
    int r = norm(raw, out, sizeof(out));
    if (r != 0)
        fail_msg("%s: expected %s, got %s", raw, want, mw_err_name(r));
    assert_string_equal(out, want);
}

static void assert_refused(const char *raw, int want)
{
    char out[256];
    int r = norm(raw, out, sizeof(out));
    if (r != want)
        fail_msg("%s: expected %s, got %s (%s)", raw, mw_err_name(want),
                 r == 0 ? "0" : mw_err_name(r), r == 0 ? out : "");
}

static int gzip_ok(const char *value)
{
    return mw_static_accepts_gzip(value, value != NULL ? strlen(value) : 0);
}

static int inm(const char *value, const char *etag)
{
    return mw_static_etag_matches(value, strlen(value), etag);
}

static int fingerprinted(const char *path)
{
    return mw_static_is_fingerprinted(path, strlen(path));
}

static const char *ctype(const char *path)
{
    return mw_static_content_type(path, strlen(path));
}

/* Paths ----------------------------------------------------------------------------- */

static void test_static_path_normalize_keeps_a_plain_path(void **state)
{
    assert_norm("/", "/");
    assert_norm("/index.html", "/index.html");
    assert_norm("/assets/app.3f9a2c1b.js", "/assets/app.3f9a2c1b.js");
    assert_norm("/a-b_c~d.txt", "/a-b_c~d.txt");
}

static void test_static_path_normalize_collapses_slashes_and_drops_dot_segments(void **state)
{
    assert_norm("//", "/");
    assert_norm("//evil.example/x", "/evil.example/x");
    assert_norm("/a//b///c", "/a/b/c");
    assert_norm("/./a/./b", "/a/b");
    assert_norm("/a/.", "/a/");
    assert_norm("/.", "/");
    assert_norm("/%2e/a", "/a");
}

static void test_static_path_normalize_keeps_a_trailing_slash(void **state)
{
    assert_norm("/sub/", "/sub/");
    assert_norm("/sub//", "/sub/");
    assert_norm("/sub", "/sub");
}

static void test_static_path_normalize_decodes_percent_escapes(void **state)
{
    assert_norm("/a%20b.txt", "/a b.txt");
    assert_norm("/%41%62c", "/Abc");
    assert_norm("/caf%C3%A9.html", "/caf\xc3\xa9.html");
    /* A decoded slash separates like a literal one. */
    assert_norm("/sub%2Findex.html", "/sub/index.html");
    /* '+' is a space only in queries. */
    assert_norm("/a+b", "/a+b");
}

static void test_static_path_normalize_decodes_only_once(void **state)
{
    assert_norm("/%252e%252e/x", "/%2e%2e/x");
    assert_norm("/%25", "/%");
}

static void test_static_path_normalize_refuses_dot_dot_in_every_spelling(void **state)
{
    assert_refused("/..", MW_ENOTFOUND);
    assert_refused("/../etc/passwd", MW_ENOTFOUND);
    assert_refused("/a/../../etc/passwd", MW_ENOTFOUND);
    assert_refused("/a/..", MW_ENOTFOUND);
    assert_refused("/a/../b", MW_ENOTFOUND); /* refused, not resolved */
    assert_refused("/%2e%2e/etc/passwd", MW_ENOTFOUND);
    assert_refused("/%2E%2e/etc/passwd", MW_ENOTFOUND);
    assert_refused("/.%2e/etc/passwd", MW_ENOTFOUND);
    assert_refused("/a%2f..%2f..%2fetc%2fpasswd", MW_ENOTFOUND);
    assert_refused("/a/..%2f", MW_ENOTFOUND);
}

static void test_static_path_normalize_refuses_dotfiles(void **state)
{
    assert_refused("/.env", MW_ENOTFOUND);
    assert_refused("/.git/config", MW_ENOTFOUND);
    assert_refused("/a/.hidden/b", MW_ENOTFOUND);
    assert_refused("/%2egit/HEAD", MW_ENOTFOUND);
    assert_refused("/...", MW_ENOTFOUND);
    /* A dot inside a name is fine. */
    assert_norm("/a.b/c.d", "/a.b/c.d");
}

static void test_static_path_normalize_refuses_backslashes_nul_and_controls(void **state)
{
    assert_refused("/a\\b", MW_ENOTFOUND);
    assert_refused("/..\\etc", MW_ENOTFOUND);
    assert_refused("/a%5cb", MW_ENOTFOUND);
    assert_refused("/a%5C..%5Cb", MW_ENOTFOUND);
    assert_refused("/index.html%00.png", MW_ENOTFOUND);
    assert_refused("/a%0ab", MW_ENOTFOUND);
    assert_refused("/a%0d%0aSet-Cookie:x", MW_ENOTFOUND);
    assert_refused("/a%7f", MW_ENOTFOUND);
    assert_refused("/a%09b", MW_ENOTFOUND);
}

static void test_static_path_normalize_refuses_malformed_escapes_with_einval(void **state)
{
    assert_refused("/a%", MW_EINVAL);
    assert_refused("/a%4", MW_EINVAL);
    assert_refused("/a%zz", MW_EINVAL);
    assert_refused("/a%g0", MW_EINVAL);
    assert_refused("/a%%41", MW_EINVAL);
}

static void test_static_path_normalize_refuses_a_path_not_starting_with_a_slash(void **state)
{
    char out[16];
    size_t len;
    assert_rc(mw_static_path_normalize("", 0, out, sizeof(out), &len), MW_ENOTFOUND);
    assert_refused("index.html", MW_ENOTFOUND);
    assert_refused("*", MW_ENOTFOUND);
    /* An escaped first slash is not a slash for this rule. */
    assert_refused("%2findex.html", MW_ENOTFOUND);
}

static void test_static_path_normalize_reports_a_result_that_does_not_fit(void **state)
{
    char out[8];
    assert_rc(norm("/abcdef", out, sizeof(out)), 0);
    assert_string_equal(out, "/abcdef");
    assert_rc(norm("/abcdefg", out, sizeof(out)), MW_ETOOBIG);
    assert_rc(norm("/abc/def/", out, sizeof(out)), MW_ETOOBIG);
    /* Decoding shrinks: the escaped form may be longer than out. */
    assert_rc(norm("/%61%62%63%64%65%66", out, sizeof(out)), 0);
    assert_string_equal(out, "/abcdef");
    assert_rc(norm("/", out, 1), MW_ETOOBIG);
}

/* Names -------------------------------------------------------------------------------- */

static void test_static_is_fingerprinted_finds_8_or_more_hex_digits_between_dots(void **state)
{
    assert_true(fingerprinted("/app.3f9a2c1b.js"));
    assert_true(fingerprinted("/assets/app.3f9a2c1b.js"));
    assert_true(fingerprinted("app.3F9A2C1B.css"));
    assert_true(fingerprinted("/vendor.chunk.0123456789abcdef0123.js"));
    assert_true(fingerprinted("/3f9a2c1b.js"));
    assert_true(fingerprinted("/app.3f9a2c1b.min.js"));
    assert_true(fingerprinted("/build.12345678.js")); /* digits are hex digits */
}

static void test_static_is_fingerprinted_refuses_everything_else(void **state)
{
    assert_false(fingerprinted("/app.js"));
    assert_false(fingerprinted("/index.html"));
    assert_false(fingerprinted("/app.3f9a2c1.js"));      /* 7 digits */
    assert_false(fingerprinted("/app.3f9a2c1g.js"));     /* not hex */
    assert_false(fingerprinted("/app-3f9a2c1b.js"));     /* not dot-separated */
    assert_false(fingerprinted("/app.js.3f9a2c1b"));     /* that is the extension */
    assert_false(fingerprinted("/3f9a2c1b"));            /* no extension, no dot */
    assert_false(fingerprinted("/deadbeefcafe/app.js")); /* a directory does not count */
    assert_false(fingerprinted(""));
}

static void test_static_content_type_maps_common_extensions(void **state)
{
    assert_string_equal(ctype("/index.html"), "text/html; charset=utf-8");
    assert_string_equal(ctype("/a.htm"), "text/html; charset=utf-8");
    assert_string_equal(ctype("/a.css"), "text/css; charset=utf-8");
    assert_string_equal(ctype("/a.js"), "text/javascript; charset=utf-8");
    assert_string_equal(ctype("/a.mjs"), "text/javascript; charset=utf-8");
    assert_string_equal(ctype("/a.txt"), "text/plain; charset=utf-8");
    assert_string_equal(ctype("/a.json"), "application/json");
    assert_string_equal(ctype("/a.js.map"), "application/json");
    assert_string_equal(ctype("/a.svg"), "image/svg+xml");
    assert_string_equal(ctype("/a.png"), "image/png");
    assert_string_equal(ctype("/a.jpg"), "image/jpeg");
    assert_string_equal(ctype("/a.jpeg"), "image/jpeg");
    assert_string_equal(ctype("/a.gif"), "image/gif");
    assert_string_equal(ctype("/a.webp"), "image/webp");
    assert_string_equal(ctype("/favicon.ico"), "image/x-icon");
    assert_string_equal(ctype("/f.woff2"), "font/woff2");
    assert_string_equal(ctype("/m.wasm"), "application/wasm");
    assert_string_equal(ctype("/app.3f9a2c1b.js"), "text/javascript; charset=utf-8");
}

static void test_static_content_type_ignores_case_and_defaults_to_octet_stream(void **state)
{
    assert_string_equal(ctype("/INDEX.HTML"), "text/html; charset=utf-8");
    assert_string_equal(ctype("/Photo.JpG"), "image/jpeg");
    assert_string_equal(ctype("/a.unknown"), "application/octet-stream");
    assert_string_equal(ctype("/Makefile"), "application/octet-stream");
    assert_string_equal(ctype("/a."), "application/octet-stream");
    assert_string_equal(ctype("/dir.html/file"), "application/octet-stream");
    assert_string_equal(ctype("/a.htmlx"), "application/octet-stream");
}

/* Request headers ------------------------------------------------------------------------ */

static void test_static_accepts_gzip_when_listed(void **state)
{
    assert_true(gzip_ok("gzip"));
    assert_true(gzip_ok("gzip, deflate, br"));
    assert_true(gzip_ok("br;q=1.0, gzip;q=0.8, *;q=0.1"));
    assert_true(gzip_ok("GZIP"));
    assert_true(gzip_ok("x-gzip"));
    assert_true(gzip_ok(" deflate , gzip ; q=0.5 "));
    assert_true(gzip_ok("gzip;Q=1"));
    assert_true(gzip_ok("gzip;q=0.001"));
    assert_true(gzip_ok("gzip;q=1.000"));
    assert_true(gzip_ok("gzip;level=9;q=0.5"));
}

static void test_static_accepts_gzip_through_a_star(void **state)
{
    assert_true(gzip_ok("*"));
    assert_true(gzip_ok("br, *;q=0.5"));
    assert_false(gzip_ok("*;q=0"));
    assert_false(gzip_ok("br, *;q=0"));
}

static void test_static_accepts_gzip_refuses_q_zero(void **state)
{
    assert_false(gzip_ok("gzip;q=0"));
    assert_false(gzip_ok("gzip;q=0.0"));
    assert_false(gzip_ok("gzip;q=0.000"));
    assert_false(gzip_ok("gzip; q=0"));
    assert_false(gzip_ok("gzip ;q = 0"));
    /* An explicit gzip wins over the star, whichever way. */
    assert_false(gzip_ok("*, gzip;q=0"));
    assert_false(gzip_ok("gzip;q=0, *"));
    assert_true(gzip_ok("*;q=0, gzip"));
}

static void test_static_accepts_gzip_refuses_absent_empty_and_other_codings(void **state)
{
    assert_false(gzip_ok(NULL));
    assert_false(gzip_ok(""));
    assert_false(gzip_ok("identity"));
    assert_false(gzip_ok("br, deflate"));
    assert_false(gzip_ok("gzipx"));
    assert_false(gzip_ok("xgzip"));
    assert_false(gzip_ok(",,,"));
}

static void test_static_accepts_gzip_ignores_an_element_with_a_malformed_q(void **state)
{
    assert_false(gzip_ok("gzip;q=2"));
    assert_false(gzip_ok("gzip;q=1.5"));
    assert_false(gzip_ok("gzip;q=0.0001"));
    assert_false(gzip_ok("gzip;q=.5"));
    assert_false(gzip_ok("gzip;q=abc"));
    assert_false(gzip_ok("gzip;q="));
    assert_false(gzip_ok("gzip;q=-1"));
    /* The rest of the list still counts. */
    assert_true(gzip_ok("gzip;q=high, *"));
}

static void test_static_etag_matches_an_exact_tag(void **state)
{
    assert_true(inm(ETAG, ETAG));
    assert_false(inm("\"0123456789abcdef0123456789abcdee\"", ETAG));
    assert_false(inm("0123456789abcdef0123456789abcdef", ETAG)); /* unquoted */
    assert_false(inm("\"0123456789abcdef\"", ETAG));
    assert_false(inm("", ETAG));
    assert_false(mw_static_etag_matches(NULL, 0, ETAG));
}

static void test_static_etag_matches_in_a_list(void **state)
{
    assert_true(inm("\"a\", " ETAG, ETAG));
    assert_true(inm("\"a\"," ETAG ",\"b\"", ETAG));
    assert_true(inm("  \"a\" ,\t" ETAG "  ", ETAG));
    assert_false(inm("\"a\", \"b\"", ETAG));
    /* A comma inside a tag is part of the tag. */
    assert_true(inm("\"a,b\", " ETAG, ETAG));
    assert_false(inm("\"a," ETAG "\"", ETAG));
}

static void test_static_etag_matches_weak_tags_and_star(void **state)
{
    assert_true(inm("W/" ETAG, ETAG)); /* If-None-Match compares weakly */
    assert_true(inm("W/\"x\", W/" ETAG, ETAG));
    assert_true(inm("*", ETAG));
    assert_true(inm(" * ", ETAG));
}

static void test_static_etag_matches_nothing_after_a_malformed_element(void **state)
{
    assert_false(inm("garbage, " ETAG, ETAG));
    assert_false(inm("\"unterminated, " ETAG, ETAG));
    assert_false(inm("\"open", ETAG));
    assert_true(inm(ETAG ", garbage", ETAG)); /* it matched before the error */
}

static void test_static_http_date_formats_rfc_9110_dates(void **state)
{
    char out[30];
    mw_static_http_date(784111777, out);
    assert_string_equal(out, "Sun, 06 Nov 1994 08:49:37 GMT");
    mw_static_http_date(0, out);
    assert_string_equal(out, "Thu, 01 Jan 1970 00:00:00 GMT");
    mw_static_http_date(1709251199, out);
    assert_string_equal(out, "Thu, 29 Feb 2024 23:59:59 GMT");
}


/* Dates, ranges, If-Range ------------------------------------------------------------- */

static time_t date(const char *s)
{
    time_t t = -42;
    if (mw_static_parse_http_date(s, strlen(s), &t) != 0)
        return -1;
    return t;
}

static void test_static_parse_http_date_reads_the_three_forms(void **state)
{
    assert_int_equal(date("Sun, 06 Nov 1994 08:49:37 GMT"), 784111777);
    assert_int_equal(date("Sunday, 06-Nov-94 08:49:37 GMT"), 784111777);
    assert_int_equal(date("Sun Nov  6 08:49:37 1994"), 784111777);
    assert_int_equal(date("  Thu, 29 Feb 2024 23:59:59 GMT "), 1709251199);
    assert_int_equal(date("Thu, 01 Jan 1970 00:00:00 GMT"), 0);
}

static void test_static_parse_http_date_round_trips_what_the_server_sends(void **state)
{
    const time_t samples[] = {0, 784111777, 1709251199, 2000000000, 4102444800};
    char out[30];
    for (size_t i = 0; i < NELEM(samples); i++) {
        mw_static_http_date(samples[i], out);
        assert_int_equal(date(out), samples[i]);
    }
}

static void test_static_parse_http_date_refuses_what_is_not_a_date(void **state)
{
    const char *bad[] = {
        "",
        "yesterday",
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 06 Nov 1994 08:49:37",
        "Sun, 6 Nov 1994 08:49:37 GMT",
        "Sun, 06 nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 08:60:00 GMT",
        "Sun, 31 Feb 1994 08:49:37 GMT",
        "Sun, 00 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1800 08:49:37 GMT",
        "Sun, 06 Nov 19x4 08:49:37 GMT",
        "Sun, 06 Nov 1994 08-49-37 GMT",
        "Sunday, 06 Nov 1994 08:49:37 GMT",
        "Sun Nov 6 08:49:37 1994",
        "Sun, 06 Nov 1994 08:49:37 GMT, Mon, 07 Nov 1994 08:49:37 GMT",
        "1994-11-06T08:49:37Z",
    };
    for (size_t i = 0; i < NELEM(bad); i++)
        if (date(bad[i]) != -1)
            fail_msg("accepted %s", bad[i]);
}

static int range(const char *v, uint64_t size, uint64_t *first, uint64_t *last)
{
    *first = *last = 12345;
    return (int)mw_static_parse_range(v, strlen(v), size, first, last);
}

static void assert_range(const char *v, uint64_t size, uint64_t want_first, uint64_t want_last)
{
    uint64_t first, last;
    if (range(v, size, &first, &last) != MW_RANGE_OK)
        fail_msg("%s of %llu: not a satisfiable range", v, (unsigned long long)size);
    if (first != want_first || last != want_last)
        fail_msg("%s of %llu: %llu-%llu, expected %llu-%llu", v, (unsigned long long)size,
                 (unsigned long long)first, (unsigned long long)last,
                 (unsigned long long)want_first, (unsigned long long)want_last);
}

static void test_static_parse_range_reads_the_three_forms(void **state)
{
    assert_range("bytes=0-99", 1000, 0, 99);
    assert_range("bytes=100-", 1000, 100, 999);
    assert_range("bytes=-100", 1000, 900, 999);
    assert_range("bytes=5-5", 1000, 5, 5);
    assert_range("BYTES=1-2", 1000, 1, 2);
    assert_range(" bytes= 1-2 ", 1000, 1, 2);
}

static void test_static_parse_range_clips_to_the_end(void **state)
{
    assert_range("bytes=0-99999", 1000, 0, 999);
    assert_range("bytes=999-2000", 1000, 999, 999);
    assert_range("bytes=-5000", 1000, 0, 999);
    assert_range("bytes=0-99999999999999999999999", 1000, 0, 999); /* saturates */
    assert_range("bytes=-99999999999999999999999", 1000, 0, 999);
}

static void test_static_parse_range_finds_what_can_not_be_satisfied(void **state)
{
    uint64_t a, b;
    assert_int_equal(range("bytes=1000-", 1000, &a, &b), MW_RANGE_UNSATISFIABLE);
    assert_int_equal(range("bytes=1000-2000", 1000, &a, &b), MW_RANGE_UNSATISFIABLE);
    assert_int_equal(range("bytes=-0", 1000, &a, &b), MW_RANGE_UNSATISFIABLE);
    assert_int_equal(range("bytes=99999999999999999999999-", 1000, &a, &b),
                     MW_RANGE_UNSATISFIABLE);
}

static void test_static_parse_range_ignores_the_rest(void **state)
{
    const char *ignored[] = {
        "",           "bytes",        "bytes=",      "bytes=-",     "bytes=abc",
        "bytes=5",    "bytes=5-4",    "bytes=a-5",   "bytes=5-b",   "bytes=1-2,4-5",
        "bytes=0-0,", "items=0-5",    "bytes 0-5",   "bytes=--5",   "bytes=1 -2",
        "bytes=+1-2", "bytes=0x1-2",  "bytes=1-2-3", "bytes=-1-2",  "bytes=\t1-2x",
    };
    uint64_t a, b;
    for (size_t i = 0; i < NELEM(ignored); i++)
        if (range(ignored[i], 1000, &a, &b) != MW_RANGE_IGNORE)
            fail_msg("did not ignore %s", ignored[i]);
    /* An empty file has no byte to send: every range gets the (empty) whole. */
    assert_int_equal(range("bytes=0-", 0, &a, &b), MW_RANGE_IGNORE);
    assert_int_equal(range("bytes=-5", 0, &a, &b), MW_RANGE_IGNORE);
}

static int if_range(const char *v, const char *etag, time_t mtime)
{
    return mw_static_if_range_holds(v, strlen(v), etag, mtime);
}

static void test_static_if_range_holds_for_the_same_tag_or_date(void **state)
{
    assert_true(if_range(ETAG, ETAG, 0));
    assert_true(if_range(" " ETAG " ", ETAG, 0));
    assert_true(if_range("Sun, 06 Nov 1994 08:49:37 GMT", ETAG, 784111777));
}

static void test_static_if_range_fails_for_anything_else(void **state)
{
    assert_false(if_range("W/" ETAG, ETAG, 0)); /* the strong comparison */
    assert_false(if_range("\"other\"", ETAG, 0));
    assert_false(if_range(ETAG "x", ETAG, 0));
    assert_false(if_range("Sun, 06 Nov 1994 08:49:38 GMT", ETAG, 784111777));
    assert_false(if_range("Sun, 06 Nov 1994 08:49:36 GMT", ETAG, 784111777));
    assert_false(if_range("garbage", ETAG, 784111777));
    assert_false(if_range("", ETAG, 0));
}

static void test_static_compressible_names_text_types(void **state)
{
    const char *yes[] = {"/a.html", "/a.css", "/a.js", "/a.json", "/a.svg", "/a.txt", "/A.JS",
                         "/x/app.3f9a2c1b.js", "/a.xml", "/a.mjs"};
    const char *no[] = {"/a.png", "/a.gz", "/a.woff2", "/a", "/a.bin", "/a.js.gz", "/a.wasm"};
    for (size_t i = 0; i < NELEM(yes); i++)
        if (!mw_static_compressible(yes[i], strlen(yes[i])))
            fail_msg("%s should be compressible", yes[i]);
    for (size_t i = 0; i < NELEM(no); i++)
        if (mw_static_compressible(no[i], strlen(no[i])))
            fail_msg("%s should not be compressible", no[i]);
}

static void test_static_cache_drain_is_safe_on_an_empty_cache(void **state)
{
    mw_static_cache_drain();
    mw_static_cache_drain();
    assert_int_equal(mw_static_cache_bytes(), 0);
}

#define T(f) cmocka_unit_test(f)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_static_path_normalize_keeps_a_plain_path),
        T(test_static_path_normalize_collapses_slashes_and_drops_dot_segments),
        T(test_static_path_normalize_keeps_a_trailing_slash),
        T(test_static_path_normalize_decodes_percent_escapes),
        T(test_static_path_normalize_decodes_only_once),
        T(test_static_path_normalize_refuses_dot_dot_in_every_spelling),
        T(test_static_path_normalize_refuses_dotfiles),
        T(test_static_path_normalize_refuses_backslashes_nul_and_controls),
        T(test_static_path_normalize_refuses_malformed_escapes_with_einval),
        T(test_static_path_normalize_refuses_a_path_not_starting_with_a_slash),
        T(test_static_path_normalize_reports_a_result_that_does_not_fit),
        T(test_static_is_fingerprinted_finds_8_or_more_hex_digits_between_dots),
        T(test_static_is_fingerprinted_refuses_everything_else),
        T(test_static_content_type_maps_common_extensions),
        T(test_static_content_type_ignores_case_and_defaults_to_octet_stream),
        T(test_static_accepts_gzip_when_listed),
        T(test_static_accepts_gzip_through_a_star),
        T(test_static_accepts_gzip_refuses_q_zero),
        T(test_static_accepts_gzip_refuses_absent_empty_and_other_codings),
        T(test_static_accepts_gzip_ignores_an_element_with_a_malformed_q),
        T(test_static_etag_matches_an_exact_tag),
        T(test_static_etag_matches_in_a_list),
        T(test_static_etag_matches_weak_tags_and_star),
        T(test_static_etag_matches_nothing_after_a_malformed_element),
        T(test_static_http_date_formats_rfc_9110_dates),
        T(test_static_parse_http_date_reads_the_three_forms),
        T(test_static_parse_http_date_round_trips_what_the_server_sends),
        T(test_static_parse_http_date_refuses_what_is_not_a_date),
        T(test_static_parse_range_reads_the_three_forms),
        T(test_static_parse_range_clips_to_the_end),
        T(test_static_parse_range_finds_what_can_not_be_satisfied),
        T(test_static_parse_range_ignores_the_rest),
        T(test_static_if_range_holds_for_the_same_tag_or_date),
        T(test_static_if_range_fails_for_anything_else),
        T(test_static_compressible_names_text_types),
        T(test_static_cache_drain_is_safe_on_an_empty_cache),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
