/* moonwire.crypto: hashes, HMAC, base64 and base64url, random bytes and a
 * comparison in constant time, all from OpenSSL. Digests and random bytes
 * are raw byte strings (encode them with base64 or string.format("%02x")).
 * Results are built in Lua buffers, so they count against lua.memory_limit.
 */
#include "base64.h"
#include "lua_api_int.h"

#include <lauxlib.h>
#include <limits.h>
#include <lua.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <string.h>

/* The most bytes crypto.random gives in one call. */
#define MW_CRYPTO_RANDOM_MAX 65536

static const EVP_MD *digest(const char *name)
{
    static const struct {
        const char *name;
        const EVP_MD *(*md)(void);
    } mds[] = {{"sha1", EVP_sha1},     {"sha224", EVP_sha224}, {"sha256", EVP_sha256},
               {"sha384", EVP_sha384}, {"sha512", EVP_sha512}};
    for (size_t i = 0; i < sizeof(mds) / sizeof(mds[0]); i++)
        if (strcmp(name, mds[i].name) == 0)
            return mds[i].md();
    return NULL;
}

/* crypto.hmac(alg, key, data): alg is "sha1", "sha224", "sha256", "sha384"
 * or "sha512"; another name raises. */
static int crypto_hmac(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    size_t klen, dlen;
    const char *key = luaL_checklstring(L, 2, &klen);
    const char *data = luaL_checklstring(L, 3, &dlen);
    const EVP_MD *md = digest(name);
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int olen = 0;

    if (md == NULL)
        return luaL_argerror(L, 1, "sha1, sha224, sha256, sha384 or sha512 expected");
    if (klen > INT_MAX || HMAC(md, key, (int)klen, (const unsigned char *)data, dlen, out, &olen) == NULL)
        return mw__lua_fail(L, "hmac failed");
    lua_pushlstring(L, (const char *)out, olen);
    return 1;
}

static int crypto_sha256(lua_State *L)
{
    size_t len;
    const char *data = luaL_checklstring(L, 1, &len);
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int olen = 0;

    if (EVP_Digest(data, len, out, &olen, EVP_sha256(), NULL) != 1)
        return mw__lua_fail(L, "sha256 failed");
    lua_pushlstring(L, (const char *)out, olen);
    return 1;
}

static int encode(lua_State *L, int url)
{
    size_t len;
    const char *data = luaL_checklstring(L, 1, &len);
    luaL_Buffer b;
    char *out;

    if (len > ((size_t)-1 - 8) / 4 * 3 - 3)
        return luaL_error(L, "string too large");
    out = luaL_buffinitsize(L, &b, MW_BASE64_LEN(len) + 1);
    luaL_pushresultsize(&b, mw_base64_encode(data, len, out, url));
    return 1;
}

static int decode(lua_State *L, int url)
{
    size_t len, olen = 0;
    const char *text = luaL_checklstring(L, 1, &len);
    luaL_Buffer b;
    unsigned char *out = (unsigned char *)luaL_buffinitsize(L, &b, MW_BASE64_MAX_DECODED(len) + 1);

    if (mw_base64_decode(text, len, out, &olen, url) != 0)
        return mw__lua_fail(L, url ? "invalid base64url" : "invalid base64");
    luaL_pushresultsize(&b, olen);
    return 1;
}

static int crypto_base64_encode(lua_State *L)
{
    return encode(L, 0);
}
static int crypto_base64_decode(lua_State *L)
{
    return decode(L, 0);
}
static int crypto_base64url_encode(lua_State *L)
{
    return encode(L, 1);
}
static int crypto_base64url_decode(lua_State *L)
{
    return decode(L, 1);
}

/* crypto.random(n): n bytes from OpenSSL's CSPRNG, 0 <= n <= 65536. */
static int crypto_random(lua_State *L)
{
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_Buffer b;
    unsigned char *out;

    luaL_argcheck(L, n >= 0 && n <= MW_CRYPTO_RANDOM_MAX, 1, "0 to 65536 bytes");
    out = (unsigned char *)luaL_buffinitsize(L, &b, (size_t)n + 1);
    if (n > 0 && RAND_bytes(out, (int)n) != 1)
        return mw__lua_fail(L, "no randomness");
    luaL_pushresultsize(&b, (size_t)n);
    return 1;
}

/* crypto.equal(a, b): whether a and b hold the same bytes, in a time that
 * depends on their length only. */
static int crypto_equal(lua_State *L)
{
    size_t alen, blen;
    const char *a = luaL_checklstring(L, 1, &alen);
    const char *b = luaL_checklstring(L, 2, &blen);
    lua_pushboolean(L, alen == blen && CRYPTO_memcmp(a, b, alen) == 0);
    return 1;
}

static const luaL_Reg crypto_funcs[] = {
    {"hmac", crypto_hmac},
    {"sha256", crypto_sha256},
    {"base64_encode", crypto_base64_encode},
    {"base64_decode", crypto_base64_decode},
    {"base64url_encode", crypto_base64url_encode},
    {"base64url_decode", crypto_base64url_decode},
    {"random", crypto_random},
    {"equal", crypto_equal},
    {NULL, NULL},
};

void mw__lua_open_crypto(lua_State *L)
{
    luaL_newlib(L, crypto_funcs);
}
