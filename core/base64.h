/* Base64 (RFC 4648 section 4) and base64url (section 5), strict: one
 * alphabet per call, no whitespace, padding only where it belongs, and the
 * unused bits of the last character zero, so that one byte string has one
 * text. On OpenSSL's block codec.
 */
#ifndef MOONWIRE_BASE64_H
#define MOONWIRE_BASE64_H

#include <stddef.h>

/* How many characters encoding n bytes gives (padded, as base64 writes it;
 * base64url leaves the padding out and gives fewer), without the NUL. */
#define MW_BASE64_LEN(n) ((((n) + 2) / 3) * 4)

/* The most bytes that decoding n characters can give. */
#define MW_BASE64_MAX_DECODED(n) (((n) + 3) / 4 * 3)

/* Encodes src[0..n) into out (MW_BASE64_LEN(n) + 1 bytes, NUL-terminated).
 * url: the base64url alphabet without padding. Returns the length. */
size_t mw_base64_encode(const void *src, size_t n, char *out, int url);

/* Decodes src[0..n) into out (MW_BASE64_MAX_DECODED(n) bytes at least).
 * base64 wants padding to a multiple of four; base64url takes the text with
 * or without it. Returns 0 with the length in *outlen, or MW_EINVAL when src
 * is not such a text. */
int mw_base64_decode(const char *src, size_t n, unsigned char *out, size_t *outlen, int url);

#endif
