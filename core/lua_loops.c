/* The standard library functions that loop long in C, made stoppable by
 * lua.time_limit. See lua_loops.h.
 *
 * Each one does what Lua 5.4's does (the unit tests run both on the same
 * arguments), in the same order where a metamethod could see it (every
 * lua_geti, lua_seti, __len and comparison happens as in Lua's), and looks
 * at the watchdog every CHECK_STEPS iterations. The pattern functions are in
 * lua_pattern.c.
 */
#include "lua_loops.h"
#include "lua_pattern.h"
#include "lua_watchdog.h"

#include <lauxlib.h>
#include <limits.h>
#include <lualib.h>
#include <string.h>
#include <time.h>

enum { CHECK_STEPS = 1024 };

/* The longest string string.rep makes (Lua's MAXSIZE): "resulting string
 * too large" past it. */
#define REP_MAX ((size_t)INT_MAX)

/* string.rep ------------------------------------------------------------------- */

/* Lua's loops n times even when every copy is empty (string.rep("", 2^60)
 * takes years); this one fills the result by doubling what it has written,
 * so it copies the bytes once in some log2(n) memcpy calls. */
static int str_rep(lua_State *L)
{
    size_t len, seplen, unit, total, done;
    const char *s = luaL_checklstring(L, 1, &len);
    lua_Integer n = luaL_checkinteger(L, 2);
    const char *sep = luaL_optlstring(L, 3, "", &seplen);
    luaL_Buffer b;
    char *out;

    unit = len + seplen;
    if (n <= 0 || unit == 0) {
        lua_pushliteral(L, "");
        return 1;
    }
    if (unit < len || unit > REP_MAX / (lua_Unsigned)n)
        return luaL_error(L, "resulting string too large");
    total = (size_t)n * len + (size_t)(n - 1) * seplen;
    out = luaL_buffinitsize(L, &b, total);
    memcpy(out, s, len);
    done = len;
    if (n > 1) {
        memcpy(out + len, sep, seplen);
        done = unit;
    }
    /* out holds whole units (string and separator): copying from its start
     * keeps the period. */
    while (done < total) {
        size_t chunk = done < total - done ? done : total - done;
        memcpy(out + done, out, chunk);
        done += chunk;
        mw_watchdog_check(L);
    }
    luaL_pushresultsize(&b, total);
    return 1;
}

/* Tables ------------------------------------------------------------------------ */

/* What a table argument must allow when it is not a table: read, write, len. */
enum { TAB_R = 1, TAB_W = 2, TAB_L = 4 };

static int meta_has(lua_State *L, const char *event, int depth)
{
    lua_pushstring(L, event);
    return lua_rawget(L, -depth) != LUA_TNIL;
}

/* A table, or a value whose metatable has the metamethods what needs;
 * raises "table expected" otherwise. */
static void check_table(lua_State *L, int arg, int what)
{
    int pushed = 1;

    if (lua_type(L, arg) == LUA_TTABLE)
        return;
    if (lua_getmetatable(L, arg) && (!(what & TAB_R) || meta_has(L, "__index", ++pushed)) &&
        (!(what & TAB_W) || meta_has(L, "__newindex", ++pushed)) &&
        (!(what & TAB_L) || meta_has(L, "__len", ++pushed))) {
        lua_pop(L, pushed);
        return;
    }
    luaL_checktype(L, arg, LUA_TTABLE);
}

static lua_Integer length_of(lua_State *L, int arg, int what)
{
    check_table(L, arg, what | TAB_L);
    return luaL_len(L, arg);
}

/* Every CHECK_STEPS calls, a look at the watchdog. */
static inline void tick(lua_State *L, unsigned *count)
{
    if (++*count % CHECK_STEPS == 0)
        mw_watchdog_check(L);
}

static int tab_insert(lua_State *L)
{
    /* The first free slot; wraps like Lua's for a __len of maxinteger. */
    lua_Integer free_at = (lua_Integer)((lua_Unsigned)length_of(L, 1, TAB_R | TAB_W) + 1u);
    lua_Integer pos;
    unsigned count = 0;

    switch (lua_gettop(L)) {
    case 2:
        pos = free_at;
        break;
    case 3:
        pos = luaL_checkinteger(L, 2);
        luaL_argcheck(L, (lua_Unsigned)pos - 1u < (lua_Unsigned)free_at, 2,
                      "position out of bounds");
        for (lua_Integer i = free_at; i > pos; i--) { /* shift up */
            lua_geti(L, 1, i - 1);
            lua_seti(L, 1, i);
            tick(L, &count);
        }
        break;
    default:
        return luaL_error(L, "wrong number of arguments to 'insert'");
    }
    lua_seti(L, 1, pos);
    return 0;
}

static int tab_remove(lua_State *L)
{
    lua_Integer size = length_of(L, 1, TAB_R | TAB_W);
    lua_Integer pos = luaL_optinteger(L, 2, size);
    unsigned count = 0;

    if (pos != size) /* Lua 5.4.4 names argument 1 here */
        luaL_argcheck(L, (lua_Unsigned)pos - 1u <= (lua_Unsigned)size, 1, "position out of bounds");
    lua_geti(L, 1, pos);        /* the result */
    for (; pos < size; pos++) { /* shift down */
        lua_geti(L, 1, pos + 1);
        lua_seti(L, 1, pos);
        tick(L, &count);
    }
    lua_pushnil(L);
    lua_seti(L, 1, pos);
    return 1;
}

static int tab_move(lua_State *L)
{
    lua_Integer from = luaL_checkinteger(L, 2);
    lua_Integer last = luaL_checkinteger(L, 3);
    lua_Integer to = luaL_checkinteger(L, 4);
    int dest = lua_isnoneornil(L, 5) ? 1 : 5;
    unsigned count = 0;

    check_table(L, 1, TAB_R);
    check_table(L, dest, TAB_W);
    if (last >= from) {
        lua_Integer n;

        luaL_argcheck(L, from > 0 || last < LUA_MAXINTEGER + from, 3, "too many elements to move");
        n = last - from + 1;
        luaL_argcheck(L, to <= LUA_MAXINTEGER - n + 1, 4, "destination wrap around");
        /* Backwards only when the ranges overlap with the destination after
         * the source, in the same table. */
        if (to > last || to <= from || (dest != 1 && !lua_compare(L, 1, dest, LUA_OPEQ))) {
            for (lua_Integer i = 0; i < n; i++) {
                lua_geti(L, 1, from + i);
                lua_seti(L, dest, to + i);
                tick(L, &count);
            }
        } else {
            for (lua_Integer i = n - 1; i >= 0; i--) {
                lua_geti(L, 1, from + i);
                lua_seti(L, dest, to + i);
                tick(L, &count);
            }
        }
    }
    lua_pushvalue(L, dest);
    return 1;
}

static void concat_add(lua_State *L, luaL_Buffer *b, lua_Integer i)
{
    lua_geti(L, 1, i);
    if (!lua_isstring(L, -1))
        luaL_error(L, "invalid value (%s) at index %I in table for 'concat'", luaL_typename(L, -1),
                   (LUAI_UACINT)i);
    luaL_addvalue(b);
}

static int tab_concat(lua_State *L)
{
    lua_Integer last = length_of(L, 1, TAB_R);
    size_t seplen;
    const char *sep = luaL_optlstring(L, 2, "", &seplen);
    lua_Integer i = luaL_optinteger(L, 3, 1);
    unsigned count = 0;
    luaL_Buffer b;

    last = luaL_optinteger(L, 4, last);
    luaL_buffinit(L, &b);
    for (; i < last; i++) {
        concat_add(L, &b, i);
        luaL_addlstring(&b, sep, seplen);
        tick(L, &count);
    }
    if (i == last)
        concat_add(L, &b, i);
    luaL_pushresult(&b);
    return 1;
}

/* table.sort: Lua's quicksort, step for step, since an order function that
 * is not a strict order (or one that looks at the table) sees which pairs
 * are compared and when. The pivot is the middle element until a partition
 * comes out very uneven; from then on a random one in the middle half, for
 * ranges of RANDOM_FROM elements or more. */

typedef unsigned int sort_idx;

enum { RANDOM_FROM = 100 };

typedef struct {
    lua_State *L;
    unsigned count; /* comparisons, for the watchdog */
} sorter;

/* Whether the value at index a comes before the one at b (negative indexes):
 * the function at 2, or '<'. */
static int sort_less(sorter *so, int a, int b)
{
    lua_State *L = so->L;
    int r;

    tick(L, &so->count);
    if (lua_isnil(L, 2))
        return lua_compare(L, a, b, LUA_OPLT);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, a - 1);
    lua_pushvalue(L, b - 2);
    lua_call(L, 2, 1);
    r = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return r;
}

/* Pops the top into t[i], then the next into t[j]. */
static void put2(lua_State *L, sort_idx i, sort_idx j)
{
    lua_seti(L, 1, i);
    lua_seti(L, 1, j);
}

static unsigned int sort_seed(void)
{
    clock_t c = clock();
    time_t t = time(NULL);
    unsigned int seed = 0;
    unsigned char bytes[sizeof(c) + sizeof(t)];

    memcpy(bytes, &c, sizeof(c));
    memcpy(bytes + sizeof(c), &t, sizeof(t));
    for (size_t i = 0; i < sizeof(bytes); i++)
        seed = seed * 31u + bytes[i];
    return seed;
}

/* With the pivot P on the top of the stack and in t[up - 1]: puts every
 * element less than P before it and every greater one after, and returns
 * where P ends up. Raises when the order function contradicts itself. */
static sort_idx sort_partition(sorter *so, sort_idx lo, sort_idx up)
{
    lua_State *L = so->L;
    sort_idx i = lo, j = up - 1;

    for (;;) {
        /* Up while t[i] < P. */
        while (lua_geti(L, 1, ++i), sort_less(so, -1, -2)) {
            if (i == up - 1) /* t[up - 1] is P: P < P */
                luaL_error(L, "invalid order function for sorting");
            lua_pop(L, 1);
        }
        /* Down while P < t[j]. */
        while (lua_geti(L, 1, --j), sort_less(so, -3, -1)) {
            if (j < i)
                luaL_error(L, "invalid order function for sorting");
            lua_pop(L, 1);
        }
        if (j < i) { /* they met: P goes to i, t[i] to up - 1 */
            lua_pop(L, 1);
            put2(L, up - 1, i);
            return i;
        }
        put2(L, i, j); /* swap t[i] and t[j] */
    }
}

static void sort_range(sorter *so, sort_idx lo, sort_idx up, unsigned int seed)
{
    lua_State *L = so->L;

    while (lo < up) {
        sort_idx p, smaller;

        /* Order t[lo] and t[up]. */
        lua_geti(L, 1, lo);
        lua_geti(L, 1, up);
        if (sort_less(so, -1, -2))
            put2(L, lo, up);
        else
            lua_pop(L, 2);
        if (up - lo == 1)
            return;
        if (up - lo < RANDOM_FROM || seed == 0) {
            p = (lo + up) / 2;
        } else {
            sort_idx quarter = (up - lo) / 4;
            p = seed % (quarter * 2) + (lo + quarter);
        }
        /* Order t[p] between t[lo] and t[up]. */
        lua_geti(L, 1, p);
        lua_geti(L, 1, lo);
        if (sort_less(so, -2, -1)) {
            put2(L, p, lo);
        } else {
            lua_pop(L, 1);
            lua_geti(L, 1, up);
            if (sort_less(so, -1, -2))
                put2(L, p, up);
            else
                lua_pop(L, 2);
        }
        if (up - lo == 2)
            return;
        /* The pivot (t[p]) stays pushed and swaps places with t[up - 1]. */
        lua_geti(L, 1, p);
        lua_pushvalue(L, -1);
        lua_geti(L, 1, up - 1);
        put2(L, p, up - 1);
        p = sort_partition(so, lo, up);
        /* Recurse into the shorter side, loop on the longer one. */
        if (p - lo < up - p) {
            sort_range(so, lo, p - 1, seed);
            smaller = p - lo;
            lo = p + 1;
        } else {
            sort_range(so, p + 1, up, seed);
            smaller = up - p;
            up = p - 1;
        }
        if ((up - lo) / 128 > smaller) /* very uneven: pick pivots at random */
            seed = sort_seed();
    }
}

static int tab_sort(lua_State *L)
{
    lua_Integer n = length_of(L, 1, TAB_R | TAB_W);
    sorter so = {L, 0};

    if (n > 1) {
        luaL_argcheck(L, n < INT_MAX, 1, "array too big");
        if (!lua_isnoneornil(L, 2))
            luaL_checktype(L, 2, LUA_TFUNCTION);
        lua_settop(L, 2);
        sort_range(&so, 1, (sort_idx)n, 0);
    }
    return 0;
}

/* Installing them ------------------------------------------------------------ */

void mw_lua_loops_install(lua_State *L)
{
    static const luaL_Reg table_fns[] = {
        {"insert", tab_insert}, {"remove", tab_remove}, {"move", tab_move},
        {"concat", tab_concat}, {"sort", tab_sort},     {NULL, NULL},
    };

    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    if (lua_getfield(L, -1, LUA_STRLIBNAME) == LUA_TTABLE) {
        mw_lua_pattern_install(L, -1);
        lua_pushcfunction(L, str_rep);
        lua_setfield(L, -2, "rep");
    }
    lua_pop(L, 1);
    if (lua_getfield(L, -1, LUA_TABLIBNAME) == LUA_TTABLE)
        luaL_setfuncs(L, table_fns, 0);
    lua_pop(L, 2);
}
