/* The moonwire.conn object, as the Lua host makes and detaches it.
 *
 * There is one conn object per connection, made when it opens and pinned in
 * the registry, so every hook gets the same object (== and table keys work).
 * The core owns the connection; Lua owns only the box, whose pointer is
 * cleared when the connection closes. Methods of a closed conn return
 * nil, "closed".
 */
#ifndef MOONWIRE_LUA_API_CONN_H
#define MOONWIRE_LUA_API_CONN_H

typedef struct lua_State lua_State;
typedef struct mw_conn_s mw_conn_t;

/* Pushes a new conn object for c, with an empty conn.data (it allocates: in
 * a protected call). */
void mw_lua_api_push_conn(lua_State *L, mw_conn_t *c);

/* Pops a table and makes it conn.request of the conn object just below it. */
void mw_lua_api_set_request(lua_State *L);

/* Clears the pointer to its connection of the conn object at idx (at close). */
void mw_lua_api_detach_conn(lua_State *L, int idx);

#endif
