/* Names of an app's fields that look like a hook but are none: Ratchet's
 * app.onMessage, a typo such as app.on_mesage. moonwire never calls them, so
 * the Lua host warns about them when it loads an app (lua_host.c).
 */
#ifndef MOONWIRE_LUA_HOOK_NAMES_H
#define MOONWIRE_LUA_HOOK_NAMES_H

/* Whether key, a field of an app table, looks like a hook but is none of
 * the n names in hooks. It looks like one when it starts with "on" (in any
 * case) and goes on with '_' or a capital letter, or when, lowercased and
 * without its underscores, it is within two letters of a hook's name so
 * folded ("onmessage", "onmesage"). Returns 1 with *near set to the closest
 * such hook, or NULL; or 0 (a hook, or a name like any other). */
int mw_hook_name_suspect(const char *key, const char *const *hooks, int n, const char **near);

#endif
