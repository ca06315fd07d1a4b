/* Base64 and base64url, strict. See base64.h. */
#include "base64.h"
#include "moonwire/error.h"

#include <openssl/evp.h>
#include <string.h>

/* The value of c in the alphabet, or -1. */
static int value(unsigned char c, int url)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (url ? '-' : '+'))
        return 62;
    if (c == (url ? '_' : '/'))
        return 63;
    return -1;
}

size_t mw_base64_encode(const void *src, size_t n, char *out, int url)
{
    size_t len = 0;

    /* EVP_EncodeBlock takes an int: feed it in slices of whole groups. */
    while (n > 0) {
        size_t take = n > 3 * (1u << 20) ? 3 * (1u << 20) : n;
        len += (size_t)EVP_EncodeBlock((unsigned char *)out + len, src, (int)take);
        src = (const unsigned char *)src + take;
        n -= take;
    }
    out[len] = '\0';
    if (!url)
        return len;
    while (len > 0 && out[len - 1] == '=')
        out[--len] = '\0';
    for (size_t i = 0; i < len; i++) {
        if (out[i] == '+')
            out[i] = '-';
        else if (out[i] == '/')
            out[i] = '_';
    }
    return len;
}

int mw_base64_decode(const char *src, size_t n, unsigned char *out, size_t *outlen, int url)
{
    size_t data = n, rest, o = 0;
    char chunk[1024]; /* a multiple of 4: only the last slice is padded */

    /* Padding: base64 always has it; base64url may. */
    if (n > 0 && src[n - 1] == '=') {
        if (n % 4 != 0)
            return MW_EINVAL;
        data = n - 1 - (n >= 2 && src[n - 2] == '=');
    } else if (!url && n % 4 != 0) {
        return MW_EINVAL;
    }
    rest = data % 4;
    if (rest == 1)
        return MW_EINVAL;
    for (size_t i = 0; i < data; i++)
        if (value((unsigned char)src[i], url) < 0)
            return MW_EINVAL;
    /* The last character's unused bits must be zero (one text per value). */
    if (rest == 2 && (value((unsigned char)src[data - 1], url) & 0x0f) != 0)
        return MW_EINVAL;
    if (rest == 3 && (value((unsigned char)src[data - 1], url) & 0x03) != 0)
        return MW_EINVAL;

    /* Checked: OpenSSL decodes it, a slice at a time in the standard
     * alphabet with its padding. */
    for (size_t i = 0; i < data; i += sizeof(chunk)) {
        size_t take = data - i < sizeof(chunk) ? data - i : sizeof(chunk);
        size_t padded = take, pad = 0;
        int got;
        for (size_t k = 0; k < take; k++) {
            char ch = src[i + k];
            chunk[k] = url && ch == '-' ? '+' : url && ch == '_' ? '/' : ch;
        }
        while (padded % 4 != 0) {
            chunk[padded++] = '=';
            pad++;
        }
        got = EVP_DecodeBlock(out + o, (const unsigned char *)chunk, (int)padded);
        if (got < 0 || (size_t)got < pad)
            return MW_EINVAL;
        o += (size_t)got - pad;
    }
    *outlen = o;
    return 0;
}
