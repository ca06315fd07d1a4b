/* Incremental UTF-8 validation (RFC 3629): rejects overlong forms,
 * surrogates (U+D800..U+DFFF), code points above U+10FFFF and stray
 * continuation bytes, as early as the first byte that makes the input
 * invalid. A message split into fragments is fed piece by piece.
 */
#ifndef MOONWIRE_UTF8_H
#define MOONWIRE_UTF8_H

#include <stddef.h>
#include <stdint.h>

enum { MW_UTF8_ACCEPT = 0, MW_UTF8_REJECT = 1 };

/* Validator state; MW_UTF8_ACCEPT at a character boundary. */
typedef uint8_t mw_utf8_state_t;

/* Feeds len bytes. Returns the new state: MW_UTF8_ACCEPT when the input so far
 * ends on a character boundary, MW_UTF8_REJECT when it can never become valid,
 * another value while a character is incomplete. REJECT is sticky. */
mw_utf8_state_t mw_utf8_feed(mw_utf8_state_t state, const uint8_t *p, size_t len);

/* True when p[0..len) is complete, valid UTF-8. */
int mw_utf8_valid(const uint8_t *p, size_t len);

#endif
