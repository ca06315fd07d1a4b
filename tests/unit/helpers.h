/* Small helpers shared by the C unit tests (cmocka). */
#ifndef MOONWIRE_TEST_HELPERS_H
#define MOONWIRE_TEST_HELPERS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "moonwire/error.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* A byte string literal without its terminating NUL: B("\x81\x85") gives
 * the pointer and the length, for functions taking (const uint8_t *, size_t). */
#define B(s) (const uint8_t *)(s), (sizeof(s) - 1)

/* Compares two results (0 or MW_E* codes) and names both on a mismatch. */
#define assert_rc(actual, expected)                                                                \
    do {                                                                                           \
        int a_ = (int)(actual), e_ = (int)(expected);                                              \
        if (a_ != e_)                                                                              \
            fail_msg("%s: expected %s (%d), got %s (%d)", #actual,                                 \
                     e_ == 0 ? "0" : mw_err_name(e_), e_, a_ == 0 ? "0" : mw_err_name(a_), a_);    \
    } while (0)

#endif
