/* string.find, match, gmatch and gsub as Lua 5.4 has them, on a matcher
 * that lua.time_limit stops (lua_match.c); a plain find turns to memmem,
 * which is linear, when Lua's way (memchr, memcmp) would not be. See
 * lua_pattern.h.
 */
#include "lua_pattern.h"
#include "lua_match.h"
#include "lua_watchdog.h"

#include <ctype.h>
#include <lauxlib.h>
#include <string.h>

#define PLAIN_WINDOW (256 * 1024) /* start positions per memmem of a plain find */

/* string.find and string.match ------------------------------------------------- */

/* A position argument as an offset from 1 (negative: from the end). */
static size_t start_position(lua_Integer pos, size_t len)
{
    if (pos > 0)
        return (size_t)pos;
    if (pos == 0 || pos < -(lua_Integer)len)
        return 1;
    return len + (size_t)pos + 1;
}

static int has_specials(const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        switch (p[i]) {
        case '^':
        case '$':
        case '*':
        case '+':
        case '?':
        case '.':
        case '(':
        case '[':
        case '%':
        case '-':
            return 1;
        default:
            break;
        }
    }
    return 0;
}

/* The first occurrence of p (plen bytes) in s (slen), or NULL. Like Lua's:
 * memchr to each place the first byte is, then memcmp; but once the
 * compares have cost more than the subject's length (a long pattern with
 * many near misses, O(slen x plen) in Lua's), memmem takes over, which is
 * linear, a window at a time so that the watchdog gets a look in between. */
static const char *find_plain(lua_State *L, const char *s, size_t slen, const char *p, size_t plen)
{
    const char *at = s, *last;
    size_t spent = 0, window;

    if (plen == 0)
        return s;
    if (plen > slen)
        return NULL;
    last = s + (slen - plen); /* the last place a match can start */
    while (spent <= slen) {
        at = memchr(at, *p, (size_t)(last - at) + 1);
        if (at == NULL)
            return NULL;
        if (memcmp(at + 1, p + 1, plen - 1) == 0)
            return at;
        spent += plen;
        if (at++ == last)
            return NULL;
    }
    window = plen > PLAIN_WINDOW ? plen : PLAIN_WINDOW;
    for (;;) {
        size_t starts = (size_t)(last - at) + 1;
        const char *found;

        if (starts > window)
            starts = window;
        found = memmem(at, starts + plen - 1, p, plen);
        if (found != NULL)
            return found;
        at += starts;
        if (at > last)
            return NULL;
        mw_watchdog_check(L);
    }
}

static int find_or_match(lua_State *L, int find)
{
    size_t slen, plen;
    const char *s = luaL_checklstring(L, 1, &slen);
    const char *p = luaL_checklstring(L, 2, &plen);
    size_t init = start_position(luaL_optinteger(L, 3, 1), slen) - 1;

    if (init > slen) {
        luaL_pushfail(L);
        return 1;
    }
    if (find && (lua_toboolean(L, 4) || !has_specials(p, plen))) {
        const char *at = find_plain(L, s + init, slen - init, p, plen);
        if (at != NULL) {
            lua_pushinteger(L, (at - s) + 1);
            lua_pushinteger(L, (lua_Integer)((size_t)(at - s) + plen));
            return 2;
        }
    } else {
        mw_matcher_t m;
        mw_capture_t cap[MW_MATCH_MAX_CAPTURES];
        mw_start_hint_t st;
        int anchored = plen > 0 && *p == '^';
        const char *from = s + init;

        if (anchored) {
            p++;
            plen--;
        }
        mw_matcher_init(&m, L, s, slen, p, plen, cap);
        mw_match_hint_init(&st, p);
        for (;;) {
            const char *e;

            m.level = 0;
            e = mw_match(&m, from, p);
            if (e != NULL) {
                if (!find)
                    return mw_match_push_captures(&m, from, e);
                lua_pushinteger(L, (from - s) + 1);
                lua_pushinteger(L, e - s);
                return mw_match_push_captures(&m, NULL, NULL) + 2;
            }
            if (anchored || from >= m.subject_end)
                break;
            from++;
            if (mw_match_hint_useful(&m, &st) && (from = mw_match_next_start(&m, &st, from)) == NULL)
                break;
        }
    }
    luaL_pushfail(L);
    return 1;
}

static int str_find(lua_State *L)
{
    return find_or_match(L, 1);
}

static int str_match(lua_State *L)
{
    return find_or_match(L, 0);
}

/* string.gmatch -------------------------------------------------------------------- */

typedef struct {
    mw_matcher_t m;
    mw_start_hint_t st;
    const char *pattern;
    const char *next; /* where the next search starts */
    const char *last; /* the end of the last match, NULL before the first */
    mw_capture_t cap[];    /* see captures_in */
} gmatch_state;

/* The iterator: upvalues are the subject and the pattern (which keep the
 * strings the state points into) and the state. */
static int gmatch_next(lua_State *L)
{
    gmatch_state *g = lua_touserdata(L, lua_upvalueindex(3));
    mw_matcher_t *m = &g->m;

    m->L = L;
    m->depth = MW_MATCH_MAX_DEPTH; /* even after a raise, unlike Lua's (see lua_pattern.h) */
    for (const char *from = g->next; from <= m->subject_end; from++) {
        const char *e;

        if (g->st.kind > MW_START_ANY && (from = mw_match_next_start(m, &g->st, from)) == NULL)
            break;
        m->level = 0;
        e = mw_match(m, from, g->pattern);
        if (e != NULL && e != g->last) {
            g->next = g->last = e;
            return mw_match_push_captures(m, from, e);
        }
        if (g->st.kind == MW_START_UNKNOWN)
            mw_match_starts_init(&g->st, m->pattern_end);
    }
    return 0;
}

/* Room for the captures a search with p can open at once: one per '(' at
 * most, since along any path of attempts the pattern is only read forward. */
static int captures_in(const char *p, size_t plen)
{
    int n = 0;
    const char *end = p + plen;

    while (n < MW_MATCH_MAX_CAPTURES && (p = memchr(p, '(', (size_t)(end - p))) != NULL) {
        n++;
        p++;
    }
    return n;
}

static int str_gmatch(lua_State *L)
{
    size_t slen, plen;
    const char *s = luaL_checklstring(L, 1, &slen);
    const char *p = luaL_checklstring(L, 2, &plen);
    size_t init = start_position(luaL_optinteger(L, 3, 1), slen) - 1;
    gmatch_state *g;
    int ncap = captures_in(p, plen);

    lua_settop(L, 2);
    g = lua_newuserdatauv(L, sizeof(*g) + (size_t)ncap * sizeof(mw_capture_t), 0);
    if (init > slen)
        init = slen + 1; /* nothing left to search */
    mw_matcher_init(&g->m, L, s, slen, p, plen, g->cap);
    mw_match_hint_init(&g->st, p); /* '^' is a character here */
    g->pattern = p;
    g->next = s + init;
    g->last = NULL;
    lua_pushcclosure(L, gmatch_next, 3);
    return 1;
}

/* string.gsub ---------------------------------------------------------------------- */

/* Adds the replacement string (argument 3) for the match s..e: "%0" is the
 * match, "%1".."%9" a capture, "%%" a '%'. */
static void add_template(mw_matcher_t *m, luaL_Buffer *b, const char *s, const char *e)
{
    size_t len;
    const char *r = lua_tolstring(m->L, 3, &len);
    const char *end = r + len, *pct;

    while ((pct = memchr(r, '%', (size_t)(end - r))) != NULL) {
        int c = pct + 1 < end ? (unsigned char)pct[1] : '\0';

        luaL_addlstring(b, r, (size_t)(pct - r));
        if (c == '%') {
            luaL_addchar(b, '%');
        } else if (c == '0') {
            luaL_addlstring(b, s, (size_t)(e - s));
        } else if (isdigit(c)) {
            const char *at;
            ptrdiff_t n = mw_match_capture(m, c - '1', s, e, &at);
            if (n == MW_CAP_POSITION)
                luaL_addvalue(b);
            else
                luaL_addlstring(b, at, (size_t)n);
        } else {
            luaL_error(m->L, "invalid use of '%c' in replacement string", '%');
        }
        r = pct + 2;
    }
    luaL_addlstring(b, r, (size_t)(end - r));
}

/* Adds what replaces the match s..e; returns whether it differs from the
 * match (a function or table may answer false or nil: keep the match). */
static int add_replacement(mw_matcher_t *m, luaL_Buffer *b, const char *s, const char *e, int type)
{
    lua_State *L = m->L;

    if (type == LUA_TFUNCTION) {
        int n;
        lua_pushvalue(L, 3);
        n = mw_match_push_captures(m, s, e);
        lua_call(L, n, 1);
    } else if (type == LUA_TTABLE) {
        mw_match_push_capture(m, 0, s, e);
        lua_gettable(L, 3);
    } else {
        add_template(m, b, s, e);
        return 1;
    }
    if (!lua_toboolean(L, -1)) {
        lua_pop(L, 1);
        luaL_addlstring(b, s, (size_t)(e - s));
        return 0;
    }
    if (!lua_isstring(L, -1))
        return luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
    luaL_addvalue(b);
    return 1;
}

static int str_gsub(lua_State *L)
{
    size_t slen, plen;
    const char *src = luaL_checklstring(L, 1, &slen);
    const char *p = luaL_checklstring(L, 2, &plen);
    int type = lua_type(L, 3);
    lua_Integer max = luaL_optinteger(L, 4, (lua_Integer)slen + 1);
    int anchored = plen > 0 && *p == '^';
    const char *last = NULL; /* the end of the last match */
    lua_Integer n = 0;
    int changed = 0;
    mw_matcher_t m;
    mw_capture_t cap[MW_MATCH_MAX_CAPTURES];
    mw_start_hint_t st;
    luaL_Buffer b;

    luaL_argexpected(L,
                     type == LUA_TNUMBER || type == LUA_TSTRING || type == LUA_TFUNCTION ||
                         type == LUA_TTABLE,
                     3, "string/function/table");
    luaL_buffinit(L, &b);
    if (anchored) {
        p++;
        plen--;
    }
    mw_matcher_init(&m, L, src, slen, p, plen, cap);
    mw_match_hint_init(&st, p);
    while (n < max) {
        const char *e;

        if (st.kind > MW_START_ANY) { /* copy what can not start a match at once */
            const char *next = mw_match_next_start(&m, &st, src);
            if (next == NULL)
                next = m.subject_end;
            luaL_addlstring(&b, src, (size_t)(next - src));
            src = next;
        }
        m.level = 0;
        e = mw_match(&m, src, p);
        if (e != NULL && e != last) {
            n++;
            changed = add_replacement(&m, &b, src, e, type) | changed;
            src = last = e;
        } else if (src < m.subject_end) {
            luaL_addchar(&b, *src++);
            if (st.kind == MW_START_UNKNOWN && !anchored)
                mw_match_starts_init(&st, m.pattern_end);
        } else {
            break;
        }
        if (anchored)
            break;
    }
    if (!changed) {
        lua_pushvalue(L, 1);
    } else {
        luaL_addlstring(&b, src, (size_t)(m.subject_end - src));
        luaL_pushresult(&b);
    }
    lua_pushinteger(L, n);
    return 2;
}

void mw_lua_pattern_install(lua_State *L, int idx)
{
    static const luaL_Reg fns[] = {
        {"find", str_find}, {"match", str_match}, {"gmatch", str_gmatch},
        {"gsub", str_gsub}, {NULL, NULL},
    };

    idx = lua_absindex(L, idx);
    for (const luaL_Reg *f = fns; f->name != NULL; f++) {
        lua_pushcfunction(L, f->func);
        lua_setfield(L, idx, f->name);
    }
}
