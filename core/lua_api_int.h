/* Private to the lua_api*.c files: what the parts of the moonwire module share. */
#ifndef MOONWIRE_LUA_API_INT_H
#define MOONWIRE_LUA_API_INT_H

#include "conn.h"
#include "list.h"
#include "timer.h"

#include <lauxlib.h>
#include <lua.h>

#define MW_CONN_META "moonwire.conn"
#define MW_TIMER_META "moonwire.timer"
#define MW_API_KEY "moonwire.api"

extern const char mw__lua_conn_tag;

/* The Lua side of a connection. The core owns the connection; Lua owns this box.
 * tag is mw__lua_conn_tag's address: only C writes a full userdata's bytes,
 * so a box of this size that starts with it is a conn object. The box keeps
 * its id's serial, not its text (the node's prefix is the rest of it, id.h):
 * the connection's while it is open, its own once it has closed. 16 bytes
 * with a 2-value header make an 88-byte block, a 96-byte chunk of glibc's (an
 * id of 17 characters in the box made 107, a 128-byte chunk). */
typedef struct {
    const void *tag;
    uint64_t ref; /* the connection (mw_conn_t *, its low bit clear) while it is open
                     for the app; once it has closed, its serial << 1 | 1 */
} mw_lconn_t;

/* The connection of u, or NULL once it has closed for the app. */
static inline mw_conn_t *mw__lconn_conn(const mw_lconn_t *u)
{
    return (u->ref & 1) ? NULL : (mw_conn_t *)(uintptr_t)u->ref;
}

/* The serial of u's id. */
static inline uint64_t mw__lconn_serial(const mw_lconn_t *u)
{
    return (u->ref & 1) ? u->ref >> 1 : mw__lconn_conn(u)->serial;
}

/* Writes the id of the conn object u into out (MW_ID_MAX bytes). Returns
 * its length. */
size_t mw__lua_conn_id(lua_State *L, const mw_lconn_t *u, char *out);

/* Module-wide data: a userdata in the registry under MW_API_KEY. */
typedef struct {
    mw_list_t timers;    /* every scheduled Lua timer */
    mw_list_t sleepers;  /* every hook in moonwire.sleep */
    mw_timer_t cache_gc; /* sweeps expired cache entries */
    lua_State *L;
    uint32_t generation; /* bumped for each app load; timers remember theirs */
    int cache_values;    /* registry refs of the cache's tables */
    int cache_expires;
} mw__api_t;

/* The module's data. */
static inline mw__api_t *mw__lua_api(lua_State *L)
{
    mw__api_t *api;
    lua_getfield(L, LUA_REGISTRYINDEX, MW_API_KEY);
    api = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return api;
}

/* Pushes nil, msg; returns 2 (the soft-failure convention). */
static inline int mw__lua_fail(lua_State *L, const char *msg)
{
    luaL_pushfail(L);
    lua_pushstring(L, msg);
    return 2;
}

/* Makes the conn metatable (lua_api_conn.c). */
void mw__lua_open_conns(lua_State *L);

/* The topic argument at idx: 1 to MW_TOPIC_MAX bytes, or it raises. */
const char *mw__lua_check_topic(lua_State *L, int idx, size_t *len);

/* Builds the frame for the string at idx, a message of kind op. Returns NULL
 * with a failure pushed (*nret values) when text is not valid UTF-8 or
 * memory is short. */
mw_frame_t *mw__lua_make_frame(lua_State *L, int idx, int op, int *nret);

/* Sends the string at idx to c as one message of kind op, and pushes what
 * conn:send and moonwire.send return (true, or nil and why). Returns how
 * many values it pushed. */
int mw__lua_send_frame(lua_State *L, mw_conn_t *c, int idx, int op);

/* Pushes the conn object of c, or nil when it has none (not open). */
void mw__lua_push_conn_object(lua_State *L, mw_conn_t *c);

/* Reads {except = conn|id, binary = bool} at idx (nil: none) into *except
 * (a connection of this node, or NULL) and *op. The except id, for the other
 * nodes, is given too when except_id is not NULL: a conn object's is written
 * in except_buf, a string stays valid while the options are on the stack. */
void mw__lua_read_send_opts(lua_State *L, int idx, mw_conn_t **except, int *op,
                            const char **except_id, size_t *except_len,
                            char except_buf[MW_ID_MAX]);

/* Pushes a read-only view of a copy of the configuration (lua_api_config.c). */
void mw__lua_push_config(lua_State *L);

/* Adds timer(), every(), sleep() to the module table on top; sets up the
 * timer metatable. */
void mw__lua_open_timers(lua_State *L);

/* Adds redis() to the module table on top. */
void mw__lua_open_redis(lua_State *L);

/* Adds the http table (request) to the module table on top (lua_api_http.c). */
void mw__lua_open_http(lua_State *L);

/* Adds the queue table (queue.push) to the module table on top (lua_api_queue.c). */
void mw__lua_open_queue(lua_State *L);
/* Adds history() to the module table on top. */
void mw__lua_open_history(lua_State *L);

/* moonwire.publish for a topic with history: returns the offset and the local
 * delivery count (waiting for Redis with a backplane). Takes over the
 * caller's reference to f: a yield does not come back to the caller (Lua 5.4
 * yields from C by a long jump), so nothing may be left for it to release. */
int mw__lua_publish_history(lua_State *L, const char *topic, size_t len, mw_frame_t *f,
                            const char *except, size_t except_len);

/* How deep moonwire.json nests arrays and objects, in both directions; past it
 * encode and decode answer nil, "too deep". */
#define MW_JSON_MAX_DEPTH 128

/* Pushes the moonwire.json table (lua_api_json.c). Returns 0, or -1 with why
 * in err when lua-cjson could not be loaded: the table is pushed anyway and
 * its functions answer nil, "lua-cjson is not installed". */
int mw__lua_open_json(lua_State *L, char *err, size_t errlen);

/* Pushes the moonwire.crypto table (lua_api_crypto.c). */
void mw__lua_open_crypto(lua_State *L);

/* Pushes the moonwire.jwt table (lua_api_jwt.c), whose functions use the
 * moonwire.json table at index json for the claims. */
void mw__lua_open_jwt(lua_State *L, int json);

/* Pushes the moonwire.cache table. */
void mw__lua_open_cache(lua_State *L, mw__api_t *api);

/* Takes the sleeping hooks' timers off the heap (their tasks were dropped
 * with the state's waiting ones). */
void mw__lua_close_sleeps(lua_State *L, mw__api_t *api);

/* Stops the cache sweeper. */
void mw__lua_close_cache(lua_State *L, mw__api_t *api);

#endif
