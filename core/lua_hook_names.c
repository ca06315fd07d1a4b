/* Names of an app's fields that look like a hook but are none. */
#include "lua_hook_names.h"

#include <ctype.h>
#include <stddef.h>
#include <string.h>

/* Names longer than this are no hook's misspelling. */
#define NAME_MAX_FOLDED 32

/* A name lowercased without its underscores ("onMessage" and "on_message"
 * both give "onmessage"), at most cap - 1 bytes. */
static void fold(const char *name, char *out, size_t cap)
{
    size_t n = 0;
    for (; *name != '\0' && n + 1 < cap; name++)
        if (*name != '_')
            out[n++] = (char)tolower((unsigned char)*name);
    out[n] = '\0';
}

/* The edit distance of a and b (each shorter than NAME_MAX_FOLDED), or 3
 * when it is known to be more than 2. */
static size_t distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), row[NAME_MAX_FOLDED];

    if ((la > lb ? la - lb : lb - la) > 2)
        return 3;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j], best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

int mw_hook_name_suspect(const char *key, const char *const *hooks, int n, const char **near)
{
    char folded[NAME_MAX_FOLDED], hook[NAME_MAX_FOLDED];
    size_t nearest = 3;
    int looks;

    *near = NULL;
    fold(key, folded, sizeof(folded));
    if (strncmp(folded, "on", 2) != 0)
        return 0;
    /* Two letters folded from key: key[2] is a byte of it or its end. */
    looks = key[2] == '_' || isupper((unsigned char)key[2]);
    for (int i = 0; i < n; i++) {
        size_t d;
        if (strcmp(key, hooks[i]) == 0)
            return 0;
        fold(hooks[i], hook, sizeof(hook));
        if ((d = distance(folded, hook)) < nearest) {
            nearest = d;
            *near = hooks[i];
        }
    }
    return looks || *near != NULL;
}
