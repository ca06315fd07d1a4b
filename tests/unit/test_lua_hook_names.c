/* Unit tests for core/lua_hook_names.h: which fields of an app
 * look like a hook but are none. */
#include "helpers.h"

#include "lua_hook_names.h"

#include <string.h>

static const char *const hooks[] = {"on_upgrade", "on_open",  "on_message", "on_close",
                                    "on_error",   "on_start", "on_reload"};
#define NHOOKS ((int)(sizeof(hooks) / sizeof(hooks[0])))

/* The suggestion for key, "" when it is suspect without one, NULL when it is not suspect. */
static const char *verdict(const char *key)
{
    const char *near = "(unset)";
    if (!mw_hook_name_suspect(key, hooks, NHOOKS, &near))
        return NULL;
    return near != NULL ? near : "";
}

static void test_hook_names_are_not_suspect(void **state)
{
    (void)state;
    for (int i = 0; i < NHOOKS; i++)
        assert_null(verdict(hooks[i]));
}

static void test_camel_case_and_other_spellings_name_their_hook(void **state)
{
    (void)state;
    assert_string_equal(verdict("onMessage"), "on_message");
    assert_string_equal(verdict("onmessage"), "on_message");
    assert_string_equal(verdict("OnClose"), "on_close");
    assert_string_equal(verdict("on_Open"), "on_open");
    assert_string_equal(verdict("ON_ERROR"), "on_error");
    assert_string_equal(verdict("onUpgrade"), "on_upgrade");
}

static void test_typos_within_two_letters_name_the_nearest_hook(void **state)
{
    (void)state;
    assert_string_equal(verdict("on_mesage"), "on_message");
    assert_string_equal(verdict("on_messages"), "on_message");
    assert_string_equal(verdict("on_clsoe"), "on_close");
    assert_string_equal(verdict("onstrat"), "on_start");
    assert_string_equal(verdict("on_reloaded"), "on_reload");
}

static void test_other_on_names_are_suspect_without_a_suggestion(void **state)
{
    (void)state;
    assert_string_equal(verdict("on_join"), "");
    assert_string_equal(verdict("onConnect"), "");
    assert_string_equal(verdict("on_disconnect_all"), "");
}

static void test_names_like_any_other_are_not_suspect(void **state)
{
    (void)state;
    const char *plain[] = {"handlers", "filters", "open", "message", "once", "online",
                           "one",      "on",      "o",    "",        "ondemand", "only_once",
                           "onion"};
    for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++)
        assert_null(verdict(plain[i]));
}

static void test_a_long_name_is_judged_by_its_start(void **state)
{
    char key[200];
    (void)state;
    memset(key, 'x', sizeof(key) - 1);
    key[sizeof(key) - 1] = '\0';
    memcpy(key, "on_", 3);
    assert_string_equal(verdict(key), "");
    memcpy(key, "onmessagexxx", 12);
    assert_null(verdict(key));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hook_names_are_not_suspect),
        cmocka_unit_test(test_camel_case_and_other_spellings_name_their_hook),
        cmocka_unit_test(test_typos_within_two_letters_name_the_nearest_hook),
        cmocka_unit_test(test_other_on_names_are_suspect_without_a_suggestion),
        cmocka_unit_test(test_names_like_any_other_are_not_suspect),
        cmocka_unit_test(test_a_long_name_is_judged_by_its_start),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
