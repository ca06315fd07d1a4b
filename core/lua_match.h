/* The matcher of Lua 5.4's patterns (lua_match.c), as the string functions
 * that run it (lua_pattern.c) see it: its state, where a match can start,
 * and the captures of a match.
 */
#ifndef MOONWIRE_LUA_MATCH_H
#define MOONWIRE_LUA_MATCH_H

#include <lua.h>
#include <stddef.h>
#include <stdint.h>

enum {
    MW_MATCH_MAX_CAPTURES = 32, /* "too many captures" past it (Lua's LUA_MAXCAPTURES) */
    MW_MATCH_MAX_DEPTH = 200,   /* nested attempts before "pattern too complex" */
    MW_MATCH_CHECK_STEPS = 4096 /* steps between two looks at the watchdog */
};

/* A capture's len while its ')' is not matched yet, and for "()". */
#define MW_CAP_OPEN (-1)
#define MW_CAP_POSITION (-2)

#ifdef __GLIBC__
/* What a class answered for each byte, learned as scans ask: a set costs a
 * walk through its members at every question otherwise. The answers come
 * from the C library's ctype table, which os.setlocale swaps: a memo is
 * only used with the table it was learned from. */
typedef struct {
    const char *item; /* where the class is in the pattern, or NULL */
    uint32_t known[8], in[8];
} mw_class_memo_t;
#endif

typedef struct {
    const char *start;
    ptrdiff_t len; /* or MW_CAP_OPEN, MW_CAP_POSITION */
} mw_capture_t;

typedef struct {
    lua_State *L; /* the thread to raise errors in */
    const char *subject, *subject_end;
    const char *pattern_end;
    int depth;    /* nested attempts still allowed */
    int level;    /* captures opened so far */
    int steps;    /* until the next look at the watchdog */
    mw_capture_t *cap; /* as many as the pattern has '(' (MW_MATCH_MAX_CAPTURES at most) */
#ifdef __GLIBC__
    mw_class_memo_t memo;
    const void *ctype; /* the table the memo comes from */
#endif
} mw_matcher_t;

enum { MW_START_UNKNOWN, MW_START_ANY, MW_START_CHAR, MW_START_CLASS };

typedef struct {
    int kind; /* MW_START_UNKNOWN until the first attempt fails */
    const char *pattern;
    int ch;                /* MW_START_CHAR */
    const char *item, *ep; /* MW_START_CLASS: the item p..ep */
} mw_start_hint_t;

/* Sets up m for matching in s (slen bytes) with the pattern p (plen bytes),
 * errors raised in L; cap holds the captures (as many as the pattern has
 * '(', MW_MATCH_MAX_CAPTURES at most). */
static inline void mw_matcher_init(mw_matcher_t *m, lua_State *L, const char *s, size_t slen,
                                   const char *p, size_t plen, mw_capture_t *cap)
{
    m->cap = cap;
    m->L = L;
    m->subject = s;
    m->subject_end = s + slen;
    m->pattern_end = p + plen;
    m->depth = MW_MATCH_MAX_DEPTH;
    m->level = 0;
    m->steps = MW_MATCH_CHECK_STEPS;
#ifdef __GLIBC__
    m->memo.item = NULL;
    m->ctype = NULL;
#endif
}

/* Tries to match p at s: the end of the match, or NULL. Raises (in m->L) for
 * a malformed pattern, one too complex, and at the time limit. */
const char *mw_match(mw_matcher_t *m, const char *s, const char *p);

/* Finds how a search for st's pattern may skip places (after a failed attempt). */
void mw_match_starts_init(mw_start_hint_t *st, const char *end);

/* Sets up st for the pattern p; the work waits for the first failed attempt
 * (most searches that match do at the first place they look). */
static inline void mw_match_hint_init(mw_start_hint_t *st, const char *p)
{
    st->kind = MW_START_UNKNOWN;
    st->pattern = p;
}

/* After an attempt failed: whether there is a shortcut to the next start. */
static inline int mw_match_hint_useful(mw_matcher_t *m, mw_start_hint_t *st)
{
    if (st->kind == MW_START_UNKNOWN)
        mw_match_starts_init(st, m->pattern_end);
    return st->kind != MW_START_ANY;
}

/* With a useful hint: the first place from `from` where a match may start,
 * or NULL: none can, not even at the end of the subject. */
const char *mw_match_next_start(mw_matcher_t *m, mw_start_hint_t *st, const char *from);

/* Capture i of a match s..e: its length and start (*at), or MW_CAP_POSITION
 * with the position pushed. Without captures, "capture" 0 is the whole
 * match. Raises for an invalid index or an unfinished capture. */
ptrdiff_t mw_match_capture(mw_matcher_t *m, int i, const char *s, const char *e, const char **at);

/* Pushes capture i of a match s..e (see mw_match_capture). */
void mw_match_push_capture(mw_matcher_t *m, int i, const char *s, const char *e);

/* Pushes every capture of a match s..e, or the whole match when there are
 * none and s is not NULL. Returns how many values it pushed. */
int mw_match_push_captures(mw_matcher_t *m, const char *s, const char *e);

#endif
