/* libFuzzer harness: conn.request built two ways (core/lua_request.c), which
 * any client reaches with the head of its upgrade. An app with on_upgrade or
 * on_open gets the table made from the parsed request; an app without them
 * keeps a seed (the head packed, its common lines a byte each) and builds
 * the table at the first read of conn.request, from the seed alone. The two
 * must be the same table: the harness parses the input as a request head
 * (HTTP, as conn.c feeds it, in reads of the size the first byte picks),
 * builds both, and aborts on any difference, or if the seed can not be read
 * back. The client's address is IPv4 or IPv6, and behind a proxy or not, as
 * the second byte picks.
 */
#include "conn.h"
#include "http.h"
#include "id.h"
#include "lua_request.h"
#include "moonwire/error.h"

#include <arpa/inet.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static lua_State *L;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    L = luaL_newstate();
    return L != NULL ? 0 : 1;
}

/* Whether the values at a and b are equal: strings by bytes, tables by
 * their keys and values, deeply (a request table is strings and tables of
 * strings). */
static int same(int a, int b, int depth)
{
    a = lua_absindex(L, a);
    b = lua_absindex(L, b);
    if (lua_type(L, a) != lua_type(L, b) || depth > 4 || !lua_checkstack(L, 4))
        return 0;
    if (lua_type(L, a) != LUA_TTABLE)
        return lua_rawequal(L, a, b);
    /* Every key of a is in b with the same value, and b has no other. */
    for (int pass = 0; pass < 2; pass++) {
        int from = pass == 0 ? a : b, to = pass == 0 ? b : a;
        lua_pushnil(L);
        while (lua_next(L, from) != 0) {
            lua_pushvalue(L, -2);
            lua_rawget(L, to);
            if (!same(-2, -1, depth + 1)) {
                lua_pop(L, 3);
                return 0;
            }
            lua_pop(L, 2);
        }
    }
    return 1;
}

/* Builds the table and the table grown from the seed of c's request (under
 * lua_pcall: both raise on memory errors), and compares them. */
static int both(lua_State *S)
{
    mw_conn_t *c = lua_touserdata(S, 1);
    char id[MW_ID_MAX];
    size_t id_len = mw_conn_id(c, id);

    mw_lua_request_push(S, c);
    mw_lua_request_push_seed(S, c);
    if (!mw_lua_request_is_seed(S, -1))
        abort();
    mw_lua_request_grow(S, -1, id, id_len);
    lua_pushboolean(S, same(-3, -1, 0));
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static mw_ids_t ids;
    static int ready;
    mw_conns_t conns;
    mw_conn_http_t hs;
    mw_conn_t c;
    mw_http_req_t req;
    size_t chunk, off = 2, used;
    int r = MW_EAGAIN;

    if (!ready) {
        if (mw_ids_init(&ids, "fuzz", "inc") != 0)
            abort();
        ready = 1;
    }
    if (size < 2)
        return 0;
    chunk = (size_t)data[0] % 64 + 1;
    mw_http_req_init(&req, 8192);
    while (off < size && r == MW_EAGAIN) {
        size_t n = size - off < chunk ? size - off : chunk;
        r = mw_http_feed(&req, (const char *)data + off, n, &used);
        off += n;
    }
    if (r != 0 || !req.complete) {
        mw_http_req_close(&req);
        return 0;
    }

    memset(&conns, 0, sizeof(conns));
    memset(&hs, 0, sizeof(hs));
    memset(&c, 0, sizeof(c));
    conns.ids = &ids;
    c.conns = &conns;
    c.serial = 1 + data[1];
    c.http = &req;
    c.hs = &hs;
    if (data[1] & 1) {
        hs.peer.in6.sin6_family = AF_INET6;
        inet_pton(AF_INET6, "2001:db8::1", &hs.peer.in6.sin6_addr);
    } else {
        hs.peer.in4.sin_family = AF_INET;
        inet_pton(AF_INET, "127.0.0.1", &hs.peer.in4.sin_addr);
    }
    c.addr = hs.peer;
    if (data[1] & 2) { /* behind a trusted proxy: the client it names */
        c.addr.in4.sin_family = AF_INET;
        inet_pton(AF_INET, "203.0.113.7", &c.addr.in4.sin_addr);
    }

    lua_settop(L, 0);
    lua_pushcfunction(L, both);
    lua_pushlightuserdata(L, &c);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        /* Only a memory error may stop it, and there is memory here. */
        fprintf(stderr, "fuzz_request: %s\n", lua_tostring(L, -1));
        abort();
    }
    if (!lua_toboolean(L, -1)) {
        fprintf(stderr, "fuzz_request: conn.request from the seed differs from the request's\n");
        abort();
    }
    lua_settop(L, 0);
    lua_gc(L, LUA_GCCOLLECT, 0);
    mw_http_req_close(&req);
    return 0;
}
