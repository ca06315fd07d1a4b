/* Lua 5.4's pattern matching, stoppable by lua.time_limit. See lua_pattern.h.
 *
 * The matcher walks the pattern item by item and backtracks by recursion, in
 * the order the reference manual (section 6.4.1) implies and Lua 5.4
 * follows, because that order is visible: a pattern is only checked as far
 * as matching reaches ("x%" finds nothing in "abc" but raises on "x"), and
 * nesting deeper than MAX_DEPTH raises "pattern too complex" at the same
 * point as Lua's. Only the bookkeeping is new: a step count that makes the
 * matcher look at the watchdog every CHECK_STEPS steps, and shortcuts that
 * change no result: a search skips to the next place the pattern's first
 * item can match (memchr, or a memo of a class's answers), a repetition
 * scans its run with the class looked at once (the C library's ctype bit,
 * a set's ranges), and a plain find turns to memmem, which is linear, when
 * Lua's way (memchr, memcmp) would not be.
 */
#include "lua_pattern.h"
#include "lua_watchdog.h"

#include <ctype.h>
#include <lauxlib.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum {
    MAX_CAPTURES = 32,         /* "too many captures" past it (Lua's LUA_MAXCAPTURES) */
    MAX_DEPTH = 200,           /* nested attempts before "pattern too complex" */
    CHECK_STEPS = 4096,        /* steps between two looks at the watchdog */
    BYTES_PER_STEP = 16,       /* for scans and compares of many bytes */
    PLAIN_WINDOW = 256 * 1024, /* start positions per memmem of a plain find */
    MEMO_FROM = 64             /* bytes left before a set's scan is worth a memo */
};

/* A capture's len while its ')' is not matched yet, and for "()". */
#define CAP_OPEN (-1)
#define CAP_POSITION (-2)

#ifdef __GLIBC__
/* What a class answered for each byte, learned as scans ask: a set costs a
 * walk through its members at every question otherwise. The answers come
 * from the C library's ctype table, which os.setlocale swaps: a memo is
 * only used with the table it was learned from. */
typedef struct {
    const char *item; /* where the class is in the pattern, or NULL */
    uint32_t known[8], in[8];
} class_memo;
#endif

typedef struct {
    const char *start;
    ptrdiff_t len; /* or CAP_OPEN, CAP_POSITION */
} capture;

typedef struct {
    lua_State *L; /* the thread to raise errors in */
    const char *subject, *subject_end;
    const char *pattern_end;
    int depth;    /* nested attempts still allowed */
    int level;    /* captures opened so far */
    int steps;    /* until the next look at the watchdog */
    capture *cap; /* as many as the pattern has '(' (MAX_CAPTURES at most) */
#ifdef __GLIBC__
    class_memo memo;
    const void *ctype; /* the table the memo comes from */
#endif
} matcher;

/* Steps ------------------------------------------------------------------------ */

static void checkpoint(matcher *m)
{
    m->steps = CHECK_STEPS;
    mw_watchdog_check(m->L);
}

/* Counts k steps. */
static inline void steps(matcher *m, size_t k)
{
    if (k >= (size_t)m->steps)
        checkpoint(m);
    else
        m->steps -= (int)k;
}

/* Counts the steps of looking at n bytes in a scan or compare. */
static inline void step_bytes(matcher *m, size_t n)
{
    steps(m, n / BYTES_PER_STEP + 1);
}

static void matcher_init(matcher *m, lua_State *L, const char *s, size_t slen, const char *p,
                         size_t plen, capture *cap)
{
    m->cap = cap;
    m->L = L;
    m->subject = s;
    m->subject_end = s + slen;
    m->pattern_end = p + plen;
    m->depth = MAX_DEPTH;
    m->level = 0;
    m->steps = CHECK_STEPS;
#ifdef __GLIBC__
    m->memo.item = NULL;
    m->ctype = NULL;
#endif
}

/* Single-character classes ----------------------------------------------------- */

/* Whether c is in the class of "%x" (x is cl): a letter names a class (an
 * upper-case one its complement), anything else stands for itself. The C
 * library's tests, so os.setlocale changes both matchers alike. */
static __attribute__((noinline)) int in_class(int c, int cl)
{
    int in;

    switch (tolower(cl)) {
    case 'a':
        in = isalpha(c);
        break;
    case 'c':
        in = iscntrl(c);
        break;
    case 'd':
        in = isdigit(c);
        break;
    case 'g':
        in = isgraph(c);
        break;
    case 'l':
        in = islower(c);
        break;
    case 'p':
        in = ispunct(c);
        break;
    case 's':
        in = isspace(c);
        break;
    case 'u':
        in = isupper(c);
        break;
    case 'w':
        in = isalnum(c);
        break;
    case 'x':
        in = isxdigit(c);
        break;
    case 'z': /* deprecated since 5.2, still there: "\0" */
        in = c == 0;
        break;
    default:
        return cl == c;
    }
    return isupper(cl) ? !in : in;
}

/* Whether c is in the set that opens with the '[' at p and closes with the
 * ']' at close. The first member may be ']' (class_end saw to that), "%x"
 * is a class or an escaped character, and "a-z" a range unless the '-' is
 * last. */
static inline int in_set(int c, const char *p, const char *close)
{
    int found = 1;

    p++;
    if (*p == '^') {
        found = 0;
        p++;
    }
    for (; p < close; p++) {
        if (*p == '%') {
            p++;
            if (in_class(c, (unsigned char)*p))
                return found;
        } else if (p[1] == '-' && p + 2 < close) {
            if ((unsigned char)p[0] <= c && c <= (unsigned char)p[2])
                return found;
            p += 2;
        } else if ((unsigned char)*p == c) {
            return found;
        }
    }
    return !found;
}

/* Where the single-character class at p ends: past "%x", past "[...]", or
 * past one character. Raises on a class the pattern does not finish. */
static const char *class_end(matcher *m, const char *p)
{
    const char *end = m->pattern_end;

    if (*p == '%') {
        if (p + 1 >= end)
            luaL_error(m->L, "malformed pattern (ends with '%%')");
        return p + 2;
    }
    if (*p != '[')
        return p + 1;
    /* Reading *end is safe: the pattern is a Lua string, which has a '\0'
     * after its last byte, and '\0' is neither '^' nor ']'. */
    p++;
    if (*p == '^')
        p++;
    do { /* the first member is taken as is, even a ']' */
        if (p == end)
            luaL_error(m->L, "malformed pattern (missing ']')");
        if (*p++ == '%' && p < end)
            p++;
    } while (*p != ']');
    return p + 1;
}

/* Whether c is in the single-character class p..ep. */
static inline int class_has(const char *p, const char *ep, int c)
{
    switch (*p) {
    case '.':
        return 1;
    case '%':
        return in_class(c, (unsigned char)p[1]);
    case '[':
        return in_set(c, p, ep - 1);
    default:
        return (unsigned char)*p == c;
    }
}

#ifdef __GLIBC__
/* The C library's bit for a class letter (lower case), or 0. isalpha(c) and
 * the others are (*__ctype_b_loc())[c] & that bit in glibc. */
static unsigned short class_bit(int lower)
{
    switch (lower) {
    case 'a':
        return _ISalpha;
    case 'c':
        return _IScntrl;
    case 'd':
        return _ISdigit;
    case 'g':
        return _ISgraph;
    case 'l':
        return _ISlower;
    case 'p':
        return _ISpunct;
    case 's':
        return _ISspace;
    case 'u':
        return _ISupper;
    case 'w':
        return _ISalnum;
    case 'x':
        return _ISxdigit;
    default:
        return 0;
    }
}
#endif

#ifdef __GLIBC__
/* The memo of the class at p (one class at a time: the one a search skips
 * to is usually the one it then repeats). */
static class_memo *memo_for(matcher *m, const char *p)
{
    const void *now = *__ctype_b_loc();

    if (m->ctype != now || m->memo.item != p) { /* a new class, or os.setlocale since */
        m->ctype = now;
        m->memo.item = p;
        memset(m->memo.known, 0, sizeof(m->memo.known));
    }
    return &m->memo;
}

static inline int memo_has(class_memo *k, const char *ep, unsigned c)
{
    uint32_t bit = 1u << (c & 31);

    if (!(k->known[c >> 5] & bit)) {
        k->known[c >> 5] |= bit;
        if (class_has(k->item, ep, (int)c))
            k->in[c >> 5] |= bit;
        else
            k->in[c >> 5] &= ~bit;
    }
    return (k->in[c >> 5] & bit) != 0;
}
#endif

/* A set of plain characters and ranges ("[A-Za-z0-9_.%-]"), compiled for a
 * scan: its ranges once, rather than the set parsed at every character. */
enum { SET_RANGES = 12 };

typedef struct {
    int n, negated;
    unsigned char lo[SET_RANGES], hi[SET_RANGES];
} set_ranges;

/* Compiles the set p..close (p at '[', close at ']'), as in_set reads it.
 * Returns 0 when the set names a class ("%a"), which the caller then asks
 * in_set about, or has more than SET_RANGES members. */
static int set_compile(set_ranges *r, const char *p, const char *close)
{
    r->n = 0;
    r->negated = 0;
    p++;
    if (*p == '^') {
        r->negated = 1;
        p++;
    }
    for (; p < close; p++) {
        unsigned char lo, hi;

        if (*p == '%') {
            p++;
            switch (tolower((unsigned char)*p)) { /* the letters in_class knows */
            case 'a':
            case 'c':
            case 'd':
            case 'g':
            case 'l':
            case 'p':
            case 's':
            case 'u':
            case 'w':
            case 'x':
            case 'z':
                return 0;
            default:
                lo = hi = (unsigned char)*p; /* stands for itself */
            }
        } else if (p[1] == '-' && p + 2 < close) {
            lo = (unsigned char)p[0];
            hi = (unsigned char)p[2];
            p += 2;
        } else {
            lo = hi = (unsigned char)*p;
        }
        if (r->n == SET_RANGES)
            return 0;
        r->lo[r->n] = lo;
        r->hi[r->n] = hi;
        r->n++;
    }
    return 1;
}

static inline int ranges_have(const set_ranges *r, unsigned c)
{
    for (int i = 0; i < r->n; i++)
        if (r->lo[i] <= c && c <= r->hi[i])
            return !r->negated;
    return r->negated;
}

/* Where the run of characters from s on (before stop) that are in the class
 * p..ep ends: the scan of a repetition, with the class looked at once
 * rather than at every character. */
static const char *class_run(matcher *m, const char *p, const char *ep, const char *s,
                             const char *stop)
{
    switch (*p) {
    case '.':
        return stop;
    case '[': {
        set_ranges r;
#ifdef __GLIBC__
        if (stop - s >= MEMO_FROM) {
            class_memo *k = memo_for(m, p);
            while (s < stop && memo_has(k, ep, (unsigned char)*s))
                s++;
            return s;
        }
#endif
        if (set_compile(&r, p, ep - 1)) {
            while (s < stop && ranges_have(&r, (unsigned char)*s))
                s++;
            return s;
        }
        break;
    }
    case '%': {
#ifdef __GLIBC__
        int cl = (unsigned char)p[1];
        unsigned short bit = class_bit(tolower(cl));

        if (bit != 0) {
            const unsigned short *table = *__ctype_b_loc();
            if (isupper(cl))
                while (s < stop && !(table[(unsigned char)*s] & bit))
                    s++;
            else
                while (s < stop && (table[(unsigned char)*s] & bit))
                    s++;
            return s;
        }
#endif
        break;
    }
    default:
        while (s < stop && *s == *p)
            s++;
        return s;
    }
    while (s < stop && class_has(p, ep, (unsigned char)*s))
        s++;
    return s;
}

/* Whether the character at s is in the class p..ep; never past the end. */
static inline int class_at(const matcher *m, const char *s, const char *p, const char *ep)
{
    return s < m->subject_end && class_has(p, ep, (unsigned char)*s);
}

/* The matcher ------------------------------------------------------------------ */

static const char *match(matcher *m, const char *s, const char *p);

/* "%bxy" at s (p points to x): from an x to the y that balances it. */
static const char *balanced(matcher *m, const char *s, const char *p)
{
    const char *from = s;
    int open, close, depth = 1;

    if (p + 1 >= m->pattern_end)
        luaL_error(m->L, "malformed pattern (missing arguments to '%%b')");
    if (s >= m->subject_end || *s != *p)
        return NULL;
    open = *p;
    close = p[1];
    while (++s < m->subject_end) {
        if (*s == close) { /* before open: "%b''" closes at the next quote */
            if (--depth == 0) {
                step_bytes(m, (size_t)(s - from));
                return s + 1;
            }
        } else if (*s == open) {
            depth++;
        }
    }
    step_bytes(m, (size_t)(s - from));
    return NULL;
}

/* "%1".."%9" at s: the same bytes as that capture again. "%0" and a capture
 * that is not closed raise; a position capture never matches. */
static const char *back_reference(matcher *m, const char *s, int digit)
{
    int i = digit - '1';
    size_t len;

    if (i < 0 || i >= m->level || m->cap[i].len == CAP_OPEN)
        luaL_error(m->L, "invalid capture index %%%d", i + 1);
    len = (size_t)m->cap[i].len; /* huge for a position: no match */
    if ((size_t)(m->subject_end - s) < len)
        return NULL;
    step_bytes(m, len);
    return memcmp(m->cap[i].start, s, len) == 0 ? s + len : NULL;
}

/* A class with '*' (or '+', s past its first match): as many as possible,
 * then fewer until the rest of the pattern (after ep) matches. */
static const char *greedy(matcher *m, const char *s, const char *p, const char *ep)
{
    const char *q = s, *end = m->subject_end;
    ptrdiff_t n;

    /* A step per character, counted a chunk at a time. */
    for (;;) {
        const char *stop = end - q > CHECK_STEPS ? q + CHECK_STEPS : end, *from = q;
        q = class_run(m, p, ep, q, stop);
        steps(m, (size_t)(q - from) / (*p == '.' ? BYTES_PER_STEP : 1));
        if (q < stop || q == end)
            break;
    }
    n = q - s;
    for (; n >= 0; n--) {
        const char *e = match(m, s + n, ep + 1);
        if (e != NULL)
            return e;
    }
    return NULL;
}

/* A class with '-': as few as possible, one more each time the rest of the
 * pattern does not match. */
static const char *lazy(matcher *m, const char *s, const char *p, const char *ep)
{
    for (;;) {
        const char *e = match(m, s, ep + 1);
        if (e != NULL)
            return e;
        if (!class_at(m, s, p, ep))
            return NULL;
        s++;
    }
}

/* '(' (or "()" with len CAP_POSITION): a capture from s, undone if the rest
 * fails. */
static const char *open_capture(matcher *m, const char *s, const char *p, ptrdiff_t len)
{
    int i = m->level;
    const char *e;

    if (i >= MAX_CAPTURES)
        luaL_error(m->L, "too many captures");
    m->cap[i].start = s;
    m->cap[i].len = len;
    m->level = i + 1;
    e = match(m, s, p);
    if (e == NULL)
        m->level--;
    return e;
}

/* ')': closes the innermost capture still open, reopened if the rest fails. */
static const char *close_capture(matcher *m, const char *s, const char *p)
{
    int i = m->level - 1;
    const char *e;

    while (i >= 0 && m->cap[i].len != CAP_OPEN)
        i--;
    if (i < 0)
        luaL_error(m->L, "invalid pattern capture");
    m->cap[i].len = s - m->cap[i].start;
    e = match(m, s, p);
    if (e == NULL)
        m->cap[i].len = CAP_OPEN;
    return e;
}

/* Matches the pattern from p against the subject from s. Returns the end of
 * the match, or NULL. Each call is one level of nesting; the items that need
 * no backtracking point loop instead. */
static const char *match(matcher *m, const char *s, const char *p)
{
    const char *end = m->pattern_end, *from = p;

    if (m->depth-- == 0)
        luaL_error(m->L, "pattern too complex");
    while (p != end) {
        const char *ep;

        switch (*p) {
        case '(':
            if (p + 1 < end && p[1] == ')')
                s = open_capture(m, s, p + 2, CAP_POSITION);
            else
                s = open_capture(m, s, p + 1, CAP_OPEN);
            goto done;
        case ')':
            s = close_capture(m, s, p + 1);
            goto done;
        case '$':
            if (p + 1 != end)
                break; /* a '$' before the end is a character */
            if (s != m->subject_end)
                s = NULL;
            goto done;
        case '%':
            if (p + 1 >= end)
                break; /* class_end raises */
            switch (p[1]) {
            case 'b':
                s = balanced(m, s, p + 2);
                if (s == NULL)
                    goto done;
                p += 4;
                continue;
            case 'f': {
                const char *set = p + 2;
                int before, at;

                if (set >= end || *set != '[')
                    luaL_error(m->L, "missing '[' after '%%f' in pattern");
                ep = class_end(m, set);
                before = s == m->subject ? 0 : (unsigned char)s[-1];
                at = s < m->subject_end ? (unsigned char)*s : 0;
                if (in_set(before, set, ep - 1) || !in_set(at, set, ep - 1)) {
                    s = NULL;
                    goto done;
                }
                p = ep;
                continue;
            }
            case '0':
            case '1':
            case '2':
            case '3':
            case '4':
            case '5':
            case '6':
            case '7':
            case '8':
            case '9':
                s = back_reference(m, s, (unsigned char)p[1]);
                if (s == NULL)
                    goto done;
                p += 2;
                continue;
            default:
                break;
            }
            break;
        default:
            break;
        }
        /* A single-character class and what repeats it. */
        ep = class_end(m, p);
        if (!class_at(m, s, p, ep)) {
            if (ep < end && (*ep == '*' || *ep == '?' || *ep == '-')) {
                p = ep + 1; /* none of it will do */
                continue;
            }
            s = NULL;
            goto done;
        }
        switch (ep < end ? *ep : '\0') {
        case '?': {
            const char *e = match(m, s + 1, ep + 1);
            if (e != NULL) {
                s = e;
                goto done;
            }
            p = ep + 1;
            continue;
        }
        case '+':
            s = greedy(m, s + 1, p, ep);
            goto done;
        case '*':
            s = greedy(m, s, p, ep);
            goto done;
        case '-':
            s = lazy(m, s, p, ep);
            goto done;
        default:
            s++;
            p = ep;
            continue;
        }
    }
done:
    /* A step per call and per pattern byte it went through: a frame's loop
     * is as long as the pattern at most. */
    steps(m, 1 + (size_t)(p - from));
    m->depth++;
    return s;
}

/* Where a match can start ---------------------------------------------------------- */

/* When the pattern opens with a single-character class that must match once
 * (no '*', '?' or '-' after it), an attempt where the subject has another
 * character fails at once, without raising and without side effects. A
 * search may then skip such places: with memchr for a plain character, and
 * with a memo of the class's answers for a set or "%x" (the answers of the
 * C library's tests, so the memo is dropped when os.setlocale changes
 * them). */
enum { START_UNKNOWN, START_ANY, START_CHAR, START_CLASS };

typedef struct {
    int kind; /* START_UNKNOWN until the first attempt fails */
    const char *pattern;
    int ch;                /* START_CHAR */
    const char *item, *ep; /* START_CLASS: the item p..ep */
} start_hint;

/* class_end without raising: NULL when the class is not finished. */
static const char *class_end_quiet(const char *p, const char *end)
{
    if (*p == '%')
        return p + 1 < end ? p + 2 : NULL;
    if (*p != '[')
        return p + 1;
    p++;
    if (p < end && *p == '^')
        p++;
    do {
        if (p >= end)
            return NULL;
        if (*p++ == '%' && p < end)
            p++;
    } while (p >= end || *p != ']');
    return p + 1;
}

static void starts_init(start_hint *st, const char *end)
{
    const char *p = st->pattern, *ep;
    int opened = 0;

    st->kind = START_ANY;
    /* Captures that open first ("(", "()") change nothing where the item
     * after them fails: they are undone before anything could see them. */
    while (p < end && *p == '(' && opened < MAX_CAPTURES) {
        p += p + 1 < end && p[1] == ')' ? 2 : 1;
        opened++;
    }
    if (p >= end)
        return;
    switch (*p) {
    case '(':
    case ')':
    case '.':
        return;
    case '$':
        if (p + 1 == end)
            return;
        break;
    case '%':
        if (p + 1 < end && (p[1] == 'b' || p[1] == 'f' || (p[1] >= '0' && p[1] <= '9')))
            return;
        break;
    default:
        break;
    }
    ep = class_end_quiet(p, end);
    if (ep == NULL || (ep < end && (*ep == '*' || *ep == '?' || *ep == '-')))
        return; /* a malformed item raises at the first attempt, as Lua's does */
    if (*p != '%' && *p != '[') {
        st->kind = START_CHAR;
        st->ch = (unsigned char)*p;
        return;
    }
    st->kind = START_CLASS;
    st->item = p;
    st->ep = ep;
}

/* Sets up st for the pattern p; the work waits for the first failed attempt
 * (most searches that match do at the first place they look). */
static inline void hint_init(start_hint *st, const char *p)
{
    st->kind = START_UNKNOWN;
    st->pattern = p;
}

/* After an attempt failed: whether there is a shortcut to the next start. */
static inline int hint_useful(matcher *m, start_hint *st)
{
    if (st->kind == START_UNKNOWN)
        starts_init(st, m->pattern_end);
    return st->kind != START_ANY;
}

/* With a useful hint: the first place from `from` where a match may start,
 * or NULL: none can, not even at the end of the subject. */
static inline const char *next_start(matcher *m, start_hint *st, const char *from)
{
    const char *end = m->subject_end;

    if (st->kind == START_CHAR)
        return memchr(from, st->ch, (size_t)(end - from));
#ifdef __GLIBC__
    if (end - from >= MEMO_FROM) {
        class_memo *k = memo_for(m, st->item);
        for (; from < end; from++)
            if (memo_has(k, st->ep, (unsigned char)*from))
                return from;
        return NULL;
    }
#endif
    for (; from < end; from++)
        if (class_has(st->item, st->ep, (unsigned char)*from))
            return from;
    return NULL;
}

/* Results -------------------------------------------------------------------- */

/* Capture i of a match s..e: its length and start (*at), or CAP_POSITION
 * with the position pushed. Without captures, "capture" 0 is the whole
 * match. */
static ptrdiff_t get_capture(matcher *m, int i, const char *s, const char *e, const char **at)
{
    if (i >= m->level) {
        if (i != 0)
            luaL_error(m->L, "invalid capture index %%%d", i + 1);
        *at = s;
        return e - s;
    }
    *at = m->cap[i].start;
    if (m->cap[i].len == CAP_OPEN)
        luaL_error(m->L, "unfinished capture");
    if (m->cap[i].len == CAP_POSITION)
        lua_pushinteger(m->L, (m->cap[i].start - m->subject) + 1);
    return m->cap[i].len;
}

static void push_capture(matcher *m, int i, const char *s, const char *e)
{
    const char *at;
    ptrdiff_t len = get_capture(m, i, s, e, &at);
    if (len != CAP_POSITION)
        lua_pushlstring(m->L, at, (size_t)len);
}

/* Pushes every capture, or the whole match when there are none and s is
 * given. Returns how many values it pushed. */
static int push_captures(matcher *m, const char *s, const char *e)
{
    int n = m->level == 0 && s != NULL ? 1 : m->level;

    luaL_checkstack(m->L, n, "too many captures");
    for (int i = 0; i < n; i++)
        push_capture(m, i, s, e);
    return n;
}

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
        matcher m;
        capture cap[MAX_CAPTURES];
        start_hint st;
        int anchored = plen > 0 && *p == '^';
        const char *from = s + init;

        if (anchored) {
            p++;
            plen--;
        }
        matcher_init(&m, L, s, slen, p, plen, cap);
        hint_init(&st, p);
        for (;;) {
            const char *e;

            m.level = 0;
            e = match(&m, from, p);
            if (e != NULL) {
                if (!find)
                    return push_captures(&m, from, e);
                lua_pushinteger(L, (from - s) + 1);
                lua_pushinteger(L, e - s);
                return push_captures(&m, NULL, NULL) + 2;
            }
            if (anchored || from >= m.subject_end)
                break;
            from++;
            if (hint_useful(&m, &st) && (from = next_start(&m, &st, from)) == NULL)
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
    matcher m;
    start_hint st;
    const char *pattern;
    const char *next; /* where the next search starts */
    const char *last; /* the end of the last match, NULL before the first */
    capture cap[];    /* see captures_in */
} gmatch_state;

/* The iterator: upvalues are the subject and the pattern (which keep the
 * strings the state points into) and the state. */
static int gmatch_next(lua_State *L)
{
    gmatch_state *g = lua_touserdata(L, lua_upvalueindex(3));
    matcher *m = &g->m;

    m->L = L;
    m->depth = MAX_DEPTH; /* even after a raise, unlike Lua's (see lua_pattern.h) */
    for (const char *from = g->next; from <= m->subject_end; from++) {
        const char *e;

        if (g->st.kind > START_ANY && (from = next_start(m, &g->st, from)) == NULL)
            break;
        m->level = 0;
        e = match(m, from, g->pattern);
        if (e != NULL && e != g->last) {
            g->next = g->last = e;
            return push_captures(m, from, e);
        }
        if (g->st.kind == START_UNKNOWN)
            starts_init(&g->st, m->pattern_end);
    }
    return 0;
}

/* Room for the captures a search with p can open at once: one per '(' at
 * most, since along any path of attempts the pattern is only read forward. */
static int captures_in(const char *p, size_t plen)
{
    int n = 0;
    const char *end = p + plen;

    while (n < MAX_CAPTURES && (p = memchr(p, '(', (size_t)(end - p))) != NULL) {
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
    g = lua_newuserdatauv(L, sizeof(*g) + (size_t)ncap * sizeof(capture), 0);
    if (init > slen)
        init = slen + 1; /* nothing left to search */
    matcher_init(&g->m, L, s, slen, p, plen, g->cap);
    hint_init(&g->st, p); /* '^' is a character here */
    g->pattern = p;
    g->next = s + init;
    g->last = NULL;
    lua_pushcclosure(L, gmatch_next, 3);
    return 1;
}

/* string.gsub ---------------------------------------------------------------------- */

/* Adds the replacement string (argument 3) for the match s..e: "%0" is the
 * match, "%1".."%9" a capture, "%%" a '%'. */
static void add_template(matcher *m, luaL_Buffer *b, const char *s, const char *e)
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
            ptrdiff_t n = get_capture(m, c - '1', s, e, &at);
            if (n == CAP_POSITION)
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
static int add_replacement(matcher *m, luaL_Buffer *b, const char *s, const char *e, int type)
{
    lua_State *L = m->L;

    if (type == LUA_TFUNCTION) {
        int n;
        lua_pushvalue(L, 3);
        n = push_captures(m, s, e);
        lua_call(L, n, 1);
    } else if (type == LUA_TTABLE) {
        push_capture(m, 0, s, e);
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
    matcher m;
    capture cap[MAX_CAPTURES];
    start_hint st;
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
    matcher_init(&m, L, src, slen, p, plen, cap);
    hint_init(&st, p);
    while (n < max) {
        const char *e;

        if (st.kind > START_ANY) { /* copy what can not start a match at once */
            const char *next = next_start(&m, &st, src);
            if (next == NULL)
                next = m.subject_end;
            luaL_addlstring(&b, src, (size_t)(next - src));
            src = next;
        }
        m.level = 0;
        e = match(&m, src, p);
        if (e != NULL && e != last) {
            n++;
            changed = add_replacement(&m, &b, src, e, type) | changed;
            src = last = e;
        } else if (src < m.subject_end) {
            luaL_addchar(&b, *src++);
            if (st.kind == START_UNKNOWN && !anchored)
                starts_init(&st, m.pattern_end);
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
