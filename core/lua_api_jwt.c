/* moonwire.jwt: JSON Web Tokens (RFC 7519) checked and made with libjwt,
 * behind checks of our own that libjwt 1.10 leaves to its caller:
 *
 * - the algorithm is the caller's choice (opts.algs), never the token's:
 *   "none" is never accepted, and one call's algorithms are all HMAC or all
 *   of one public-key kind, so a public key can not be used as an HMAC
 *   secret (an HMAC key that is a PEM block is refused outright);
 * - keys are read here first, with no passphrase prompt (OpenSSL's default
 *   callback would read the terminal), and must fit the algorithm (RSA of
 *   2048 bits or more, the EC curve of the ES algorithm); what was found is
 *   kept for the next call with the same key text;
 * - a token is at most MW_JWT_MAX_TOKEN bytes of base64url in three parts
 *   (libjwt copies parts onto the stack), and an HMAC signature is compared
 *   in constant time before libjwt compares it again;
 * - exp, nbf, aud and iss are checked here, with a leeway;
 * - claims reach Lua through moonwire.json's decoder (its depth limit, whole
 *   numbers as integers).
 *
 * A bad token is nil and why; a wrong argument (a key that does not fit,
 * unknown algorithms) raises.
 */
#include "base64.h"
#include "lua_api_int.h"

#include <errno.h>
#include <jwt.h>
#include <lauxlib.h>
#include <limits.h>
#include <lua.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* The longest token verify reads, and sign makes. */
#define MW_JWT_MAX_TOKEN 16384
/* The longest key (an HMAC secret or a PEM block). */
#define MW_JWT_MAX_KEY 65536

enum { FAM_HMAC = 1, FAM_RSA = 2, FAM_EC = 4 };

typedef struct {
    const char *name;
    jwt_alg_t alg;
    int family;
    const char *curve;      /* FAM_EC: the curve the algorithm is defined on */
    const EVP_MD *(*md)(void); /* FAM_HMAC */
} alg_info_t;

static const alg_info_t algs[] = {
    {"HS256", JWT_ALG_HS256, FAM_HMAC, NULL, EVP_sha256},
    {"HS384", JWT_ALG_HS384, FAM_HMAC, NULL, EVP_sha384},
    {"HS512", JWT_ALG_HS512, FAM_HMAC, NULL, EVP_sha512},
    {"RS256", JWT_ALG_RS256, FAM_RSA, NULL, NULL},
    {"RS384", JWT_ALG_RS384, FAM_RSA, NULL, NULL},
    {"RS512", JWT_ALG_RS512, FAM_RSA, NULL, NULL},
    {"ES256", JWT_ALG_ES256, FAM_EC, "prime256v1", NULL},
    {"ES384", JWT_ALG_ES384, FAM_EC, "secp384r1", NULL},
    {"ES512", JWT_ALG_ES512, FAM_EC, "secp521r1", NULL},
};
#define NALGS (sizeof(algs) / sizeof(algs[0]))

static const alg_info_t *find_alg(const char *name, size_t len)
{
    for (size_t i = 0; i < NALGS; i++)
        if (strlen(algs[i].name) == len && memcmp(algs[i].name, name, len) == 0)
            return &algs[i];
    return NULL;
}

/* What a key is, read without a passphrase prompt. */
typedef struct {
    int family;     /* 0: not a key this module takes */
    int bits;
    char curve[32]; /* FAM_EC */
} key_info_t;

static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf, (void)size, (void)rwflag, (void)u;
    return 0;
}

/* Reads a PEM public (verify) or private (sign) key into *ki. */
static void read_pem(const char *key, size_t len, int private, key_info_t *ki)
{
    BIO *bio = BIO_new_mem_buf(key, (int)len);
    EVP_PKEY *pkey = NULL;
    size_t glen = 0;

    memset(ki, 0, sizeof(*ki));
    if (bio == NULL)
        return;
    pkey = private ? PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL)
                   : PEM_read_bio_PUBKEY(bio, NULL, no_passphrase, NULL);
    BIO_free(bio);
    if (pkey == NULL)
        return;
    ki->bits = EVP_PKEY_get_bits(pkey);
    if (EVP_PKEY_id(pkey) == EVP_PKEY_RSA) {
        ki->family = FAM_RSA;
    } else if (EVP_PKEY_id(pkey) == EVP_PKEY_EC &&
               EVP_PKEY_get_group_name(pkey, ki->curve, sizeof(ki->curve), &glen) == 1) {
        ki->family = FAM_EC;
    }
    EVP_PKEY_free(pkey);
}

/* Keys already read, by their text: OpenSSL 3 takes longer to decode a PEM
 * block than to check a signature, and libjwt decodes it once more. A table
 * in the registry, made again empty past MW_JWT_KEY_CACHE entries. */
#define MW_JWT_KEYS "moonwire.jwt.keys"
#define MW_JWT_KEY_CACHE 32

static void read_key(lua_State *L, const char *key, size_t len, int private, key_info_t *ki)
{
    lua_Integer n;

    if (lua_getfield(L, LUA_REGISTRYINDEX, MW_JWT_KEYS) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_createtable(L, 0, MW_JWT_KEY_CACHE);
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, MW_JWT_KEYS);
    }
    lua_pushstring(L, private ? "private:" : "public:");
    lua_pushlstring(L, key, len);
    lua_concat(L, 2);
    if (lua_rawget(L, -2) == LUA_TSTRING && lua_rawlen(L, -1) == sizeof(*ki)) {
        memcpy(ki, lua_tostring(L, -1), sizeof(*ki));
        lua_pop(L, 2);
        return;
    }
    lua_pop(L, 1);
    read_pem(key, len, private, ki);
    if (lua_getfield(L, -1, "#") == LUA_TNUMBER && (n = lua_tointeger(L, -1)) < MW_JWT_KEY_CACHE) {
        lua_pop(L, 1);
    } else {
        lua_pop(L, 2);
        lua_createtable(L, 0, MW_JWT_KEY_CACHE);
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, MW_JWT_KEYS);
        n = 0;
    }
    lua_pushinteger(L, n + 1);
    lua_setfield(L, -2, "#");
    lua_pushstring(L, private ? "private:" : "public:");
    lua_pushlstring(L, key, len);
    lua_concat(L, 2);
    lua_pushlstring(L, (const char *)ki, sizeof(*ki));
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

static int looks_like_pem(const char *key, size_t len)
{
    while (len > 0 && (*key == ' ' || *key == '\t' || *key == '\r' || *key == '\n'))
        key++, len--;
    return len >= 10 && memcmp(key, "-----BEGIN", 10) == 0;
}

/* Checks that the key (argument arg) fits every algorithm of the mask
 * `family` (one family) and, for EC, each curve in list[0..n). Raises when
 * it does not. */
static void check_key(lua_State *L, int arg, const char *key, size_t len, int family,
                      int private, const alg_info_t *const *list, size_t n)
{
    key_info_t ki;

    if (len == 0 || len > MW_JWT_MAX_KEY)
        luaL_argerror(L, arg, "key: 1 to 65536 bytes");
    if (family == FAM_HMAC) {
        /* A public key as an HMAC secret is the classic forgery. */
        if (looks_like_pem(key, len))
            luaL_argerror(L, arg, "key is a PEM block: not an HMAC secret");
        return;
    }
    read_key(L, key, len, private, &ki);
    if (ki.family != family)
        luaL_argerror(L, arg, family == FAM_RSA ? (private ? "key is not an RSA private key (PEM)"
                                                           : "key is not an RSA public key (PEM)")
                                                : (private ? "key is not an EC private key (PEM)"
                                                           : "key is not an EC public key (PEM)"));
    if (family == FAM_RSA && ki.bits < 2048)
        luaL_argerror(L, arg, "RSA key shorter than 2048 bits");
    for (size_t i = 0; family == FAM_EC && i < n; i++)
        if (strcmp(list[i]->curve, ki.curve) != 0)
            luaL_argerror(L, arg, lua_pushfstring(L, "%s needs a %s key, not %s", list[i]->name,
                                                  list[i]->curve, ki.curve));
}

/* The name of an algorithm argument, checked: "none" and unknown names raise. */
static const alg_info_t *check_alg(lua_State *L, int arg, const char *name, size_t len)
{
    const alg_info_t *a = find_alg(name, len);
    if (a == NULL)
        luaL_argerror(L, arg,
                      strcmp(name, "none") == 0
                          ? "alg none is never accepted"
                          : "alg: HS256, HS384, HS512, RS256, RS384, RS512, ES256, ES384, ES512");
    return a;
}

/* The string field k of the table at idx: NULL when nil, raises when not a string. */
static const char *opt_string(lua_State *L, int idx, const char *k, size_t *len)
{
    const char *s = NULL;
    int t = lua_getfield(L, idx, k);
    if (t != LUA_TNIL) {
        if (t != LUA_TSTRING)
            luaL_argerror(L, idx, lua_pushfstring(L, "%s: a string expected", k));
        s = lua_tolstring(L, -1, len);
    }
    lua_pop(L, 1); /* the string stays alive in the options table */
    return s;
}

static int fail(lua_State *L, const char *why)
{
    return mw__lua_fail(L, why);
}

/* Decodes a base64url part into a fresh scratch userdata (collected later). */
static const char *decode_part(lua_State *L, const char *s, size_t n, size_t *outlen)
{
    unsigned char *out = lua_newuserdatauv(L, MW_BASE64_MAX_DECODED(n) + 1, 0);
    if (mw_base64_decode(s, n, out, outlen, 1) != 0)
        return NULL;
    out[*outlen] = '\0';
    return (const char *)out;
}

/* Decodes JSON with moonwire.json's decoder (upvalue 1). Leaves the value
 * (or nil) on the stack. */
static void json_decode(lua_State *L, const char *s, size_t n)
{
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushlstring(L, s, n);
    lua_call(L, 1, 1);
}

/* Whether a JSON text is an object (its first non-blank byte is '{'). */
static int is_object(const char *s, size_t n)
{
    while (n > 0 && (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n'))
        s++, n--;
    return n > 0 && *s == '{';
}

/* The claim k of the claims table at idx as a number: 1 when present and a
 * number, 0 when absent, -1 when of another type. */
static int claim_number(lua_State *L, int idx, const char *k, double *v)
{
    int t = lua_getfield(L, idx, k), r = 0;
    if (t == LUA_TNUMBER) {
        *v = lua_tonumber(L, -1);
        r = 1;
    } else if (t != LUA_TNIL) {
        r = -1;
    }
    lua_pop(L, 1);
    return r;
}

/* Whether the aud claim (a string or an array of strings) names aud. */
static int audience_has(lua_State *L, int claims, const char *aud, size_t len)
{
    int t = lua_getfield(L, claims, "aud"), found = 0;
    size_t n;
    const char *s;

    if (t == LUA_TSTRING) {
        s = lua_tolstring(L, -1, &n);
        found = n == len && memcmp(s, aud, len) == 0;
    } else if (t == LUA_TTABLE) {
        lua_Unsigned max = lua_rawlen(L, -1);
        for (lua_Unsigned i = 1; i <= max && !found; i++) {
            if (lua_rawgeti(L, -1, (lua_Integer)i) == LUA_TSTRING) {
                s = lua_tolstring(L, -1, &n);
                found = n == len && memcmp(s, aud, len) == 0;
            }
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    return found;
}

/* jwt.verify(token, {key =, algs = {...}, aud =, iss =, leeway =}) -> claims | nil, err */
static int jwt_verify_token(lua_State *L)
{
    size_t tlen, klen, aud_len = 0, iss_len = 0, hlen, plen;
    const char *token = luaL_checklstring(L, 1, &tlen);
    const char *key, *aud, *iss, *dot1, *dot2, *head, *payload;
    const alg_info_t *list[NALGS], *a = NULL;
    size_t nlist = 0;
    int family = 0, claims;
    lua_Number leeway = 0, now, v;
    struct timespec ts;
    jwt_t *jwt = NULL;
    int r;

    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    key = opt_string(L, 2, "key", &klen);
    if (key == NULL)
        return luaL_argerror(L, 2, "key: a string expected");
    aud = opt_string(L, 2, "aud", &aud_len);
    iss = opt_string(L, 2, "iss", &iss_len);
    if (lua_getfield(L, 2, "leeway") != LUA_TNIL) {
        if (!lua_isnumber(L, -1) || lua_tonumber(L, -1) < 0)
            return luaL_argerror(L, 2, "leeway: seconds, 0 or more");
        leeway = lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
    if (lua_getfield(L, 2, "algs") != LUA_TTABLE)
        return luaL_argerror(L, 2, "algs: a list of algorithm names expected");
    for (lua_Integer i = 1; lua_rawgeti(L, -1, i) != LUA_TNIL; i++) {
        size_t n;
        const char *name = lua_tolstring(L, -1, &n);
        if (lua_type(L, -1) != LUA_TSTRING)
            return luaL_argerror(L, 2, "algs: a list of algorithm names expected");
        a = check_alg(L, 2, name, n);
        if (family != 0 && family != a->family)
            return luaL_argerror(L, 2, "algs: HMAC, RSA and EC algorithms can not share a key");
        family = a->family;
        if (nlist < NALGS)
            list[nlist++] = a;
        lua_pop(L, 1);
    }
    lua_pop(L, 2);
    if (nlist == 0)
        return luaL_argerror(L, 2, "algs: a list of algorithm names expected");
    check_key(L, 2, key, klen, family, 0, list, nlist);

    /* The token's shape: three parts of base64url, the signature not empty. */
    if (tlen > MW_JWT_MAX_TOKEN)
        return fail(L, "too large");
    for (size_t i = 0; i < tlen; i++) {
        char ch = token[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_' || ch == '.'))
            return fail(L, "malformed");
    }
    dot1 = memchr(token, '.', tlen);
    dot2 = dot1 ? memchr(dot1 + 1, '.', tlen - (size_t)(dot1 + 1 - token)) : NULL;
    if (dot1 == NULL || dot2 == NULL || dot1 == token || dot2 == dot1 + 1 ||
        dot2 + 1 == token + tlen || memchr(dot2 + 1, '.', tlen - (size_t)(dot2 + 1 - token)))
        return fail(L, "malformed");

    /* The header: the algorithm must be one the caller allows. */
    head = decode_part(L, token, (size_t)(dot1 - token), &hlen);
    if (head == NULL || !is_object(head, hlen))
        return fail(L, "malformed");
    json_decode(L, head, hlen);
    if (!lua_istable(L, -1))
        return fail(L, "malformed");
    if (lua_getfield(L, -1, "crit") != LUA_TNIL) /* no extension is understood here */
        return fail(L, "malformed");
    lua_pop(L, 1);
    if (lua_getfield(L, -1, "alg") != LUA_TSTRING)
        return fail(L, "malformed");
    {
        size_t n;
        const char *name = lua_tolstring(L, -1, &n);
        a = NULL;
        for (size_t i = 0; i < nlist; i++)
            if (strlen(list[i]->name) == n && memcmp(list[i]->name, name, n) == 0)
                a = list[i];
        if (a == NULL)
            return fail(L, "alg not allowed");
    }
    lua_settop(L, 2);

    /* The signature. */
    if (a->family == FAM_HMAC) {
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int mlen = 0;
        size_t slen;
        const char *sig = decode_part(L, dot2 + 1, tlen - (size_t)(dot2 + 1 - token), &slen);
        if (sig == NULL)
            return fail(L, "malformed");
        if (HMAC(a->md(), key, (int)klen, (const unsigned char *)token, (size_t)(dot2 - token),
                 mac, &mlen) == NULL)
            return fail(L, "out of memory");
        if (slen != mlen || CRYPTO_memcmp(mac, sig, mlen) != 0)
            return fail(L, "bad signature");
    }
    /* libjwt reads the token again and checks the signature again (the
     * public-key ones are its part); nothing here raises until jwt_free. */
    r = jwt_decode(&jwt, token, (const unsigned char *)key, (int)klen);
    if (r == 0 && jwt_get_alg(jwt) != a->alg)
        r = EINVAL;
    jwt_free(jwt);
    if (r != 0)
        return fail(L, r == ENOMEM ? "out of memory"
                                   : a->family == FAM_HMAC ? "malformed" : "bad signature");

    /* The claims, a JSON object, through moonwire.json. */
    payload = decode_part(L, dot1 + 1, (size_t)(dot2 - dot1 - 1), &plen);
    if (payload == NULL || !is_object(payload, plen))
        return fail(L, "malformed");
    json_decode(L, payload, plen);
    if (!lua_istable(L, -1))
        return fail(L, "malformed");
    claims = lua_gettop(L);

    clock_gettime(CLOCK_REALTIME, &ts);
    now = (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9;
    if ((r = claim_number(L, claims, "exp", &v)) < 0)
        return fail(L, "malformed");
    if (r > 0 && now >= v + leeway)
        return fail(L, "expired");
    if ((r = claim_number(L, claims, "nbf", &v)) < 0)
        return fail(L, "malformed");
    if (r > 0 && now + leeway < v)
        return fail(L, "not yet valid");
    if (iss != NULL) {
        size_t n;
        const char *s;
        int t = lua_getfield(L, claims, "iss");
        s = t == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
        if (s == NULL || n != iss_len || memcmp(s, iss, n) != 0)
            return fail(L, "wrong issuer");
        lua_pop(L, 1);
    }
    if (aud != NULL && !audience_has(L, claims, aud, aud_len))
        return fail(L, "wrong audience");
    lua_settop(L, claims);
    return 1;
}

/* jwt.sign(claims, {key =, alg = "HS256"}) -> token | nil, err */
static int jwt_sign_claims(lua_State *L)
{
    size_t klen, alen, jlen;
    const char *key, *alg_name, *json;
    const alg_info_t *a;
    luaL_Buffer b;
    char *out, *token;
    jwt_t *jwt = NULL;
    int r;

    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    key = opt_string(L, 2, "key", &klen);
    if (key == NULL)
        return luaL_argerror(L, 2, "key: a string expected");
    alg_name = opt_string(L, 2, "alg", &alen);
    if (alg_name == NULL)
        alg_name = "HS256", alen = 5;
    a = check_alg(L, 2, alg_name, alen);
    check_key(L, 2, key, klen, a->family, 1, &a, 1);

    /* The claims as moonwire.json writes them (upvalue 2). */
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_pushvalue(L, 1);
    lua_call(L, 1, 2);
    if (!lua_isstring(L, -2))
        return 2; /* nil, why */
    json = lua_tolstring(L, -2, &jlen);
    /* An object with a member at least: libjwt 1.10 writes "{}" one byte
     * past a stack buffer. */
    if (!is_object(json, jlen) || jlen < 3)
        return luaL_argerror(L, 1, "claims: a table with string keys, not empty");
    if (MW_BASE64_LEN(jlen) + 200 > MW_JWT_MAX_TOKEN)
        return fail(L, "too large");

    /* Room for the token before libjwt runs: nothing raises until jwt_free. */
    out = luaL_buffinitsize(L, &b, MW_JWT_MAX_TOKEN + 1);
    if ((r = jwt_new(&jwt)) != 0)
        return fail(L, "out of memory");
    r = jwt_add_grants_json(jwt, json);
    if (r == 0)
        r = jwt_set_alg(jwt, a->alg, (const unsigned char *)key, (int)klen);
    token = r == 0 ? jwt_encode_str(jwt) : NULL;
    jwt_free(jwt);
    if (token == NULL)
        return fail(L, r != 0 ? "claims not accepted" : "signing failed");
    jlen = strlen(token);
    if (jlen > MW_JWT_MAX_TOKEN) {
        free(token);
        return fail(L, "too large");
    }
    memcpy(out, token, jlen);
    free(token);
    luaL_pushresultsize(&b, jlen);
    return 1;
}

void mw__lua_open_jwt(lua_State *L, int json)
{
    json = lua_absindex(L, json);
    lua_createtable(L, 0, 2);
    lua_getfield(L, json, "decode");
    lua_pushcclosure(L, jwt_verify_token, 1);
    lua_setfield(L, -2, "verify");
    lua_getfield(L, json, "decode");
    lua_getfield(L, json, "encode");
    lua_pushcclosure(L, jwt_sign_claims, 2);
    lua_setfield(L, -2, "sign");
}
