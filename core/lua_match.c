/* The matcher of Lua 5.4's patterns, stoppable by lua.time_limit: what
 * string.find, match, gmatch and gsub (lua_pattern.c) run. See lua_match.h.
 *
 * The matcher walks the pattern item by item and backtracks by recursion, in
 * the order the reference manual (section 6.4.1) implies and Lua 5.4
 * follows, because that order is visible: a pattern is only checked as far
 * as matching reaches ("x%" finds nothing in "abc" but raises on "x"), and
 * nesting deeper than MW_MATCH_MAX_DEPTH raises "pattern too complex" at the same
 * point as Lua's. Only the bookkeeping is new: a step count that makes the
 * matcher look at the watchdog every MW_MATCH_CHECK_STEPS steps, and shortcuts that
 * change no result: a search skips to the next place the pattern's first
 * item can match (memchr, or a memo of a class's answers), a repetition
 * scans its run with the class looked at once (the C library's ctype bit,
 * a set's ranges), and a plain find turns to memmem, which is linear, when
 * Lua's way (memchr, memcmp) would not be.
 */
#include "lua_match.h"
#include "lua_watchdog.h"

#include <ctype.h>
#include <lauxlib.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum {
    BYTES_PER_STEP = 16, /* for scans and compares of many bytes */
    MEMO_FROM = 64       /* bytes left before a set's scan is worth a memo */
};

/* Steps ------------------------------------------------------------------------ */

static void checkpoint(mw_matcher_t *m)
{
    m->steps = MW_MATCH_CHECK_STEPS;
    mw_watchdog_check(m->L);
}

/* Counts k steps. */
static inline void steps(mw_matcher_t *m, size_t k)
{
    if (k >= (size_t)m->steps)
        checkpoint(m);
    else
        m->steps -= (int)k;
}

/* Counts the steps of looking at n bytes in a scan or compare. */
static inline void step_bytes(mw_matcher_t *m, size_t n)
{
    steps(m, n / BYTES_PER_STEP + 1);
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
static const char *class_end(mw_matcher_t *m, const char *p)
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
static mw_class_memo_t *memo_for(mw_matcher_t *m, const char *p)
{
    const void *now = *__ctype_b_loc();

    if (m->ctype != now || m->memo.item != p) { /* a new class, or os.setlocale since */
        m->ctype = now;
        m->memo.item = p;
        memset(m->memo.known, 0, sizeof(m->memo.known));
    }
    return &m->memo;
}

static inline int memo_has(mw_class_memo_t *k, const char *ep, unsigned c)
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
static const char *class_run(mw_matcher_t *m, const char *p, const char *ep, const char *s,
                             const char *stop)
{
    switch (*p) {
    case '.':
        return stop;
    case '[': {
        set_ranges r;
#ifdef __GLIBC__
        if (stop - s >= MEMO_FROM) {
            mw_class_memo_t *k = memo_for(m, p);
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
static inline int class_at(const mw_matcher_t *m, const char *s, const char *p, const char *ep)
{
    return s < m->subject_end && class_has(p, ep, (unsigned char)*s);
}

/* The matcher ------------------------------------------------------------------ */

static const char *match(mw_matcher_t *m, const char *s, const char *p);

/* "%bxy" at s (p points to x): from an x to the y that balances it. */
static const char *balanced(mw_matcher_t *m, const char *s, const char *p)
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
static const char *back_reference(mw_matcher_t *m, const char *s, int digit)
{
    int i = digit - '1';
    size_t len;

    if (i < 0 || i >= m->level || m->cap[i].len == MW_CAP_OPEN)
        luaL_error(m->L, "invalid capture index %%%d", i + 1);
    len = (size_t)m->cap[i].len; /* huge for a position: no match */
    if ((size_t)(m->subject_end - s) < len)
        return NULL;
    step_bytes(m, len);
    return memcmp(m->cap[i].start, s, len) == 0 ? s + len : NULL;
}

/* A class with '*' (or '+', s past its first match): as many as possible,
 * then fewer until the rest of the pattern (after ep) matches. */
static const char *greedy(mw_matcher_t *m, const char *s, const char *p, const char *ep)
{
    const char *q = s, *end = m->subject_end;
    ptrdiff_t n;

    /* A step per character, counted a chunk at a time. */
    for (;;) {
        const char *stop = end - q > MW_MATCH_CHECK_STEPS ? q + MW_MATCH_CHECK_STEPS : end, *from = q;
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
static const char *lazy(mw_matcher_t *m, const char *s, const char *p, const char *ep)
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

/* '(' (or "()" with len MW_CAP_POSITION): a capture from s, undone if the rest
 * fails. */
static const char *open_capture(mw_matcher_t *m, const char *s, const char *p, ptrdiff_t len)
{
    int i = m->level;
    const char *e;

    if (i >= MW_MATCH_MAX_CAPTURES)
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
static const char *close_capture(mw_matcher_t *m, const char *s, const char *p)
{
    int i = m->level - 1;
    const char *e;

    while (i >= 0 && m->cap[i].len != MW_CAP_OPEN)
        i--;
    if (i < 0)
        luaL_error(m->L, "invalid pattern capture");
    m->cap[i].len = s - m->cap[i].start;
    e = match(m, s, p);
    if (e == NULL)
        m->cap[i].len = MW_CAP_OPEN;
    return e;
}

/* Matches the pattern from p against the subject from s. Returns the end of
 * the match, or NULL. Each call is one level of nesting; the items that need
 * no backtracking point loop instead. */
static const char *match(mw_matcher_t *m, const char *s, const char *p)
{
    const char *end = m->pattern_end, *from = p;

    if (m->depth-- == 0)
        luaL_error(m->L, "pattern too complex");
    while (p != end) {
        const char *ep;

        switch (*p) {
        case '(':
            if (p + 1 < end && p[1] == ')')
                s = open_capture(m, s, p + 2, MW_CAP_POSITION);
            else
                s = open_capture(m, s, p + 1, MW_CAP_OPEN);
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

static void starts_init(mw_start_hint_t *st, const char *end)
{
    const char *p = st->pattern, *ep;
    int opened = 0;

    st->kind = MW_START_ANY;
    /* Captures that open first ("(", "()") change nothing where the item
     * after them fails: they are undone before anything could see them. */
    while (p < end && *p == '(' && opened < MW_MATCH_MAX_CAPTURES) {
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
        st->kind = MW_START_CHAR;
        st->ch = (unsigned char)*p;
        return;
    }
    st->kind = MW_START_CLASS;
    st->item = p;
    st->ep = ep;
}

/* With a useful hint: the first place from `from` where a match may start,
 * or NULL: none can, not even at the end of the subject. */
static const char *next_start(mw_matcher_t *m, mw_start_hint_t *st, const char *from)
{
    const char *end = m->subject_end;

    if (st->kind == MW_START_CHAR)
        return memchr(from, st->ch, (size_t)(end - from));
#ifdef __GLIBC__
    if (end - from >= MEMO_FROM) {
        mw_class_memo_t *k = memo_for(m, st->item);
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

/* Capture i of a match s..e: its length and start (*at), or MW_CAP_POSITION
 * with the position pushed. Without captures, "capture" 0 is the whole
 * match. */
static ptrdiff_t get_capture(mw_matcher_t *m, int i, const char *s, const char *e, const char **at)
{
    if (i >= m->level) {
        if (i != 0)
            luaL_error(m->L, "invalid capture index %%%d", i + 1);
        *at = s;
        return e - s;
    }
    *at = m->cap[i].start;
    if (m->cap[i].len == MW_CAP_OPEN)
        luaL_error(m->L, "unfinished capture");
    if (m->cap[i].len == MW_CAP_POSITION)
        lua_pushinteger(m->L, (m->cap[i].start - m->subject) + 1);
    return m->cap[i].len;
}

static void push_capture(mw_matcher_t *m, int i, const char *s, const char *e)
{
    const char *at;
    ptrdiff_t len = get_capture(m, i, s, e, &at);
    if (len != MW_CAP_POSITION)
        lua_pushlstring(m->L, at, (size_t)len);
}

/* Pushes every capture, or the whole match when there are none and s is
 * given. Returns how many values it pushed. */
static int push_captures(mw_matcher_t *m, const char *s, const char *e)
{
    int n = m->level == 0 && s != NULL ? 1 : m->level;

    luaL_checkstack(m->L, n, "too many captures");
    for (int i = 0; i < n; i++)
        push_capture(m, i, s, e);
    return n;
}

/* What lua_pattern.c calls ------------------------------------------------------- */

/* The same functions under the names lua_pattern.c calls: no call more in
 * between, and the matcher's own calls stay direct. */
const char *mw_match(mw_matcher_t *m, const char *s, const char *p)
    __attribute__((alias("match")));

void mw_match_starts_init(mw_start_hint_t *st, const char *end)
{
    starts_init(st, end);
}

const char *mw_match_next_start(mw_matcher_t *m, mw_start_hint_t *st, const char *from)
    __attribute__((alias("next_start")));

ptrdiff_t mw_match_capture(mw_matcher_t *m, int i, const char *s, const char *e, const char **at)
{
    return get_capture(m, i, s, e, at);
}

void mw_match_push_capture(mw_matcher_t *m, int i, const char *s, const char *e)
{
    push_capture(m, i, s, e);
}

int mw_match_push_captures(mw_matcher_t *m, const char *s, const char *e)
{
    return push_captures(m, s, e);
}
