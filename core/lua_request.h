/* The request table of a WebSocket upgrade or a plain HTTP request (req of
 * on_upgrade, on_open and on_request, conn.request), and its seed: what a
 * table is built from when no hook needed it before the connection opened.
 *
 * A table costs about a kilobyte of Lua memory per connection (its fields,
 * the headers, the query and subprotocols tables). An app without on_upgrade
 * or on_open may never read conn.request, so its connections keep a seed
 * instead: one string with the head as the client sent it and the
 * addresses, smaller than the head (its request line and the header lines
 * every client sends alike are a byte each, lua_request.c). The first read
 * of conn.request unpacks and parses the head again and builds the same
 * table, which stays.
 */
#ifndef MOONWIRE_LUA_REQUEST_H
#define MOONWIRE_LUA_REQUEST_H

#include <lua.h>
#include <stddef.h>

typedef struct mw_conn_s mw_conn_t;

/* Pushes the request table of c's request (c->http, complete). Raises on
 * memory errors: call it in a protected call. */
void mw_lua_request_push(lua_State *L, mw_conn_t *c);

/* Pushes the seed of c's request (c->http, complete): a string. Raises on
 * memory errors. */
void mw_lua_request_push_seed(lua_State *L, mw_conn_t *c);

/* True when the value at idx is a seed (a string), not a table. */
static inline int mw_lua_request_is_seed(lua_State *L, int idx)
{
    return lua_type(L, idx) == LUA_TSTRING;
}

/* Pushes the table built from the seed at idx for the connection named id,
 * the same as mw_lua_request_push made when the request was there. Raises
 * on memory errors. */
void mw_lua_request_grow(lua_State *L, int idx, const char *id, size_t id_len);

#endif
