/* libFuzzer harness: moonwire.jwt.verify (core/lua_api_jwt.c), which any
 * client reaches with the token it sends (a query parameter, a header, a
 * first message). Two calls per input:
 *
 * - the input as the token itself: the shape check, base64url, the header's
 *   JSON, the signature check; an input that is not a signed token fails
 *   with a reason and never raises;
 * - the input cut at its first newline into a header and a claims text, made
 *   into a token signed with the harness's own HS256 key, so that the claims
 *   are reached too: libjwt's second reading, moonwire.json's decoder, exp,
 *   nbf, iss and aud (signed with SHA-384 when the header names HS384). It
 *   gives claims (a table) or one of the documented reasons, and never
 *   raises.
 */
#include "base64.h"
#include "lua_api_int.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char KEY[] = "fuzz-key";
static lua_State *L;

static const char *const reasons[] = {"too large",     "malformed",      "alg not allowed",
                                      "bad signature", "expired",        "not yet valid",
                                      "wrong issuer",  "wrong audience", "out of memory"};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char err[256];
    (void)argc;
    (void)argv;
    L = luaL_newstate();
    luaL_openlibs(L);
    if (mw__lua_open_json(L, err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz_jwt: %s\n", err);
        abort();
    }
    mw__lua_open_jwt(L, -1);
    lua_setglobal(L, "jwt");
    lua_pop(L, 1);
    return 0;
}

/* Calls jwt.verify(token, {key, algs = {HS256, HS384}, aud, iss, leeway}) and
 * checks what it gives: a table, or nil and a known reason. */
static void verify(const char *token, size_t len)
{
    int top = lua_gettop(L), ok;

    lua_getglobal(L, "jwt");
    lua_getfield(L, -1, "verify");
    lua_remove(L, -2);
    lua_pushlstring(L, token, len);
    lua_createtable(L, 0, 5);
    lua_pushstring(L, KEY);
    lua_setfield(L, -2, "key");
    lua_createtable(L, 2, 0);
    lua_pushliteral(L, "HS256");
    lua_rawseti(L, -2, 1);
    lua_pushliteral(L, "HS384");
    lua_rawseti(L, -2, 2);
    lua_setfield(L, -2, "algs");
    lua_pushliteral(L, "a");
    lua_setfield(L, -2, "aud");
    lua_pushliteral(L, "i");
    lua_setfield(L, -2, "iss");
    lua_pushinteger(L, 5);
    lua_setfield(L, -2, "leeway");
    if (lua_pcall(L, 2, 2, 0) != LUA_OK) {
        fprintf(stderr, "jwt.verify raised: %s\n", lua_tostring(L, -1));
        abort();
    }
    if (lua_istable(L, -2)) {
        ok = 1;
    } else {
        const char *why = lua_tostring(L, -1);
        ok = 0;
        for (size_t i = 0; why != NULL && i < sizeof(reasons) / sizeof(reasons[0]); i++)
            ok |= strcmp(why, reasons[i]) == 0;
        if (!ok || !lua_isnil(L, -2)) {
            fprintf(stderr, "jwt.verify gave an unknown answer: %s\n", why ? why : "(none)");
            abort();
        }
    }
    lua_settop(L, top);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl;
    size_t hlen, plen, n;
    char *token;
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mlen = 0;

    if (size > 16384)
        return 0;
    verify((const char *)data, size);

    nl = memchr(data, '\n', size);
    hlen = nl != NULL ? (size_t)(nl - data) : size;
    plen = nl != NULL ? size - hlen - 1 : 0;
    token = malloc(MW_BASE64_LEN(hlen) + MW_BASE64_LEN(plen) + MW_BASE64_LEN(EVP_MAX_MD_SIZE) + 3);
    if (token == NULL)
        return 0;
    n = mw_base64_encode(data, hlen, token, 1);
    token[n++] = '.';
    n += mw_base64_encode(data + size - plen, plen, token + n, 1);
    /* Signed as the header says, when it names HS384; HS256 otherwise. */
    if (HMAC(memmem(data, hlen, "HS384", 5) != NULL ? EVP_sha384() : EVP_sha256(), KEY,
             (int)strlen(KEY), (const unsigned char *)token, n, mac, &mlen) == NULL)
        abort();
    token[n++] = '.';
    n += mw_base64_encode(mac, mlen, token + n, 1);
    verify(token, n);
    free(token);
    lua_gc(L, LUA_GCSTEP, 0);
    return 0;
}
