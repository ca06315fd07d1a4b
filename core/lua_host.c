/* The Lua host: the state a node's app runs in, the app loaded into it and
 * its hooks bound, and reloaded (SIGHUP). See lua_host.h; the state's limits
 * and protected calls are lua_state.c's, hooks that wait lua_task.c's, the
 * hooks of connections lua_dispatch.c's.
 */
#include "lua_host.h"
#include "lua_hook_names.h"
#include "api_methods.h"
#include "lua_api.h"
#include "lua_api_config.h"
#include "lua_api_timer.h"
#include "lua_state.h"
#include "lua_stdlib.h"
#include "lua_task.h"
#include "node.h"
#include "moonwire/config.h"
#include "moonwire/error.h"
#include "moonwire/log.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const hook_names[MW_HOOK__COUNT] = {
    "on_upgrade", "on_open", "on_message", "on_close",   "on_error",
    "on_start",   "on_reload", "on_api",    "on_request",
};

/* Warns about each field of the app table on top that looks like a hook but
 * is none (lua_hook_names.h), with the file and line of the function. */
static void warn_unknown_hooks(lua_State *L, const char *path)
{
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
        const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
        const char *near;
        if (mw_hook_name_suspect(key, hook_names, MW_HOOK__COUNT, &near)) {
            lua_Debug ar;
            char where[512], hooks[160] = "";
            snprintf(where, sizeof(where), "%s", path);
            if (lua_type(L, -1) == LUA_TFUNCTION) {
                lua_pushvalue(L, -1);
                if (lua_getinfo(L, ">S", &ar) && ar.linedefined > 0)
                    snprintf(where, sizeof(where), "%s:%d",
                             ar.source[0] == '@' ? ar.source + 1 : ar.short_src, ar.linedefined);
            }
            for (int i = 0; i < MW_HOOK__COUNT; i++)
                snprintf(hooks + strlen(hooks), sizeof(hooks) - strlen(hooks), "%s%s",
                         i ? ", " : "", hook_names[i]);
            mw__lua_report(mw__lua_host(L), MW_LOG_WARN, NULL,
                           "%s: app.%s is not a hook, so moonwire never calls it (%s%s%s)", where,
                           key, near ? "did you mean " : "the hooks are ", near ? near : hooks,
                           near ? "?" : "");
        }
        lua_pop(L, 1);
    }
}

static int load_chunk(lua_State *L)
{
    const char *path = lua_touserdata(L, 1);
    if (luaL_loadfilex(L, path, "t") != LUA_OK)
        return lua_error(L);
    lua_call(L, 0, 1);
    if (lua_type(L, -1) != LUA_TTABLE)
        return luaL_error(L, "%s: the app must return a table of hooks (got %s)", path,
                          luaL_typename(L, -1));
    for (int i = 0; i < MW_HOOK__COUNT; i++) {
        int t = lua_getfield(L, -1, hook_names[i]);
        if (t != LUA_TNIL && t != LUA_TFUNCTION)
            return luaL_error(L, "%s: app.%s must be a function (got %s)", path, hook_names[i],
                              lua_typename(L, t));
        lua_pop(L, 1);
    }
    warn_unknown_hooks(L, path);
    return 1;
}

/* Runs the app script; leaves the app table on top. Returns 0, or MW_ELUA
 * with the message (no traceback) in err. */
static int load_app(mw_lua_t *lh, char *err, size_t errlen)
{
    lua_State *L = lh->L;
    int r;

    lua_pushcfunction(L, load_chunk);
    lua_pushlightuserdata(L, lh->node->cfg->script);
    r = mw__lua_pcall(lh, 1, 1);
    if (r != LUA_OK) {
        char *full = strdup(lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
        lua_pop(L, 1);
        if (full != NULL)
            mw__lua_split_traceback(full);
        snprintf(err, errlen, "%s%s", full ? full : "out of memory",
                 lh->timed_out ? " (while loading)" : "");
        free(full);
        return MW_ELUA;
    }
    return 0;
}

/* References to an app's table and hooks. */
typedef struct {
    int app;
    int hooks[MW_HOOK__COUNT];
} app_refs_t;

/* Takes references to the app table at 2 and its hooks into the app_refs_t
 * at 1 (each LUA_NOREF until taken, so a failure can let go of those taken). */
static int take_refs(lua_State *L)
{
    app_refs_t *refs = lua_touserdata(L, 1);
    for (int i = 0; i < MW_HOOK__COUNT; i++) {
        if (lua_getfield(L, 2, hook_names[i]) == LUA_TFUNCTION)
            refs->hooks[i] = luaL_ref(L, LUA_REGISTRYINDEX);
        else
            lua_pop(L, 1);
    }
    lua_settop(L, 2);
    refs->app = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

/* Makes the app table on top (which it pops) the app: its hooks are the ones
 * called from now on. Returns the reference to the previous app table (or
 * LUA_NOREF), or MW_ENOMEM with nothing changed when memory is short. */
static int bind_app(mw_lua_t *lh, int *previous)
{
    lua_State *L = lh->L;
    app_refs_t refs;
    int r;

    refs.app = LUA_NOREF;
    for (int i = 0; i < MW_HOOK__COUNT; i++)
        refs.hooks[i] = LUA_NOREF;
    lua_pushcfunction(L, take_refs);
    lua_insert(L, -2);
    lua_pushlightuserdata(L, &refs);
    lua_insert(L, -2); /* take_refs, &refs, app */
    r = mw__lua_pcall(lh, 2, 0);
    if (r != LUA_OK)
        lua_pop(L, 1);
    for (int i = 0; i < MW_HOOK__COUNT; i++) {
        int *drop = r == LUA_OK ? &lh->hooks[i] : &refs.hooks[i];
        luaL_unref(L, LUA_REGISTRYINDEX, *drop);
        *drop = LUA_NOREF;
    }
    if (r != LUA_OK) {
        luaL_unref(L, LUA_REGISTRYINDEX, refs.app);
        return MW_ENOMEM;
    }
    memcpy(lh->hooks, refs.hooks, sizeof(lh->hooks));
    *previous = lh->app_ref;
    lh->app_ref = refs.app;
    return 0;
}

static void set_package_path(lua_State *L, const char *script)
{
    const char *slash = strrchr(script, '/');
    size_t dirlen = slash ? (size_t)(slash - script) : 1;
    const char *dir = slash ? script : ".";
    luaL_Buffer b;

    lua_getglobal(L, "package");
    luaL_buffinit(L, &b);
    luaL_addlstring(&b, dir, dirlen);
    luaL_addstring(&b, "/?.lua;");
    luaL_addlstring(&b, dir, dirlen);
    luaL_addstring(&b, "/lib/?.lua;");
    luaL_addlstring(&b, dir, dirlen);
    luaL_addstring(&b, "/?/init.lua;");
    lua_getfield(L, -2, "path");
    luaL_addvalue(&b);
    luaL_pushresult(&b);
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);
}

/* The directory part of a script path ("." for a bare name); malloc'ed. */
static char *dir_of(const char *script)
{
    const char *slash = strrchr(script, '/');
    return slash ? strndup(script, (size_t)(slash - script)) : strdup(".");
}

static int add_script_path(lua_State *L)
{
    set_package_path(L, lua_touserdata(L, 1));
    return 0;
}

static int open_state(lua_State *L)
{
    mw_lua_t *lh = mw__lua_host(L);

    /* Incremental, Lua's default, on purpose: generational mode saves some
     * 78 instructions a message (callgrind echo), but its major collections
     * are atomic, so a large heap stops the loop at once (a growing heap of
     * 330 MB under lua5.4: a 981 ms pause, against 188 ms incremental;
     * docs/performance.md). A script may switch with collectgarbage. */
    lua_gc(L, LUA_GCINC, 0, 0, 0);
    luaL_openlibs(L);
    mw_lua_stdlib_open(L);
    luaL_requiref(L, "moonwire", mw_lua_open_api, 0);
    mw__api_methods_open(L); /* with the module as the core made it, before the app */
    lua_pop(L, 1);
    set_package_path(L, lh->node->cfg->script);
    lh->script_dir = dir_of(lh->node->cfg->script);

    /* Remember which modules are not the app's, for reload. */
    lua_newtable(L);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_pushboolean(L, 1);
        lua_rawset(L, -6);
    }
    lua_pop(L, 2);
    lh->baseline_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    lua_pushliteral(L, "text");
    lh->kind_text = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushliteral(L, "binary");
    lh->kind_binary = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushliteral(L, "");
    lh->empty_string = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

static void run_start_hooks(mw_lua_t *lh, int previous_app_ref)
{
    lua_State *L = lh->L;
    if (previous_app_ref != LUA_NOREF && mw__lua_push_hook(lh, MW_HOOK_RELOAD)) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, previous_app_ref);
        mw_lua_call(lh, NULL, "on_reload", 1, 0);
    }
    if (mw__lua_push_hook(lh, MW_HOOK_START))
        mw_lua_call(lh, NULL, "on_start", 0, 0);
}

/* Closes the state and frees the host. */
static void destroy(mw_lua_t *lh)
{
    /* The module's timers live in Lua memory: take them off the heap first. */
    mw_lua_api_shutdown(lh->L);
    mw__lua_close(lh);
    free(lh->script_dir);
    free(lh);
}

int mw_lua_new(mw_node_t *node, mw_lua_t **out, char *err, size_t errlen)
{
    mw_lua_t *lh = calloc(1, sizeof(*lh));
    lua_State *L;
    int previous;

    *out = NULL;
    if (lh == NULL)
        return MW_ENOMEM;
    lh->node = node;
    lh->mem_limit = node->cfg->memory_limit;
    lh->app_ref = lh->baseline_ref = LUA_NOREF;
    mw_list_init(&lh->waiting);
    for (int i = 0; i < MW_HOOK__COUNT; i++)
        lh->hooks[i] = LUA_NOREF;
    if (mw__lua_open(lh, node->cfg->time_limit) != 0) {
        free(lh);
        return MW_ENOMEM;
    }
    L = lh->L;

    lua_pushcfunction(L, open_state);
    if (mw__lua_pcall(lh, 0, 0) != LUA_OK) {
        snprintf(err, errlen, "lua: %s", lua_tostring(L, -1));
        goto fail;
    }
    if (load_app(lh, err, errlen) != 0)
        goto fail;
    if (bind_app(lh, &previous) != 0) {
        snprintf(err, errlen, "lua: not enough memory for the app's hooks");
        goto fail;
    }
    *out = lh;
    return 0;

fail:
    destroy(lh);
    return MW_ELUA;
}

void mw_lua_start(mw_lua_t *lh)
{
    run_start_hooks(lh, LUA_NOREF);
}

void mw_lua_free(mw_lua_t *lh)
{
    if (lh == NULL)
        return;
    mw__lua_tasks_free(lh);
    destroy(lh);
}

/* Moves the app's modules out of package.loaded into a table left on top. */
static int unload_app_modules(lua_State *L)
{
    mw_lua_t *lh = mw__lua_host(L);
    lua_newtable(L);               /* saved */
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded"); /* saved package loaded */
    lua_rawgeti(L, LUA_REGISTRYINDEX, lh->baseline_ref);
    lua_pushnil(L);
    while (lua_next(L, -3) != 0) { /* saved package loaded baseline k v */
        lua_pushvalue(L, -2);
        if (lua_rawget(L, -4) == LUA_TNIL) {
            lua_pop(L, 1);
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, -7); /* saved[k] = v */
        } else {
            lua_pop(L, 2);
        }
    }
    lua_pop(L, 1); /* saved package loaded */
    lua_pushnil(L);
    while (lua_next(L, -4) != 0) {
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_pushnil(L);
        lua_rawset(L, -4);
    }
    lua_pop(L, 2);
    return 1;
}

static int restore_modules(lua_State *L)
{
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    lua_pushnil(L);
    while (lua_next(L, 1) != 0) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, -4);
    }
    return 0;
}

int mw_lua_reload(mw_lua_t *lh, char *err, size_t errlen)
{
    lua_State *L = lh->L;
    int previous, r;
    uint32_t generation;
    char *dir = dir_of(lh->node->cfg->script);

    /* A script from another directory finds its modules there too. */
    if (dir != NULL && (lh->script_dir == NULL || strcmp(dir, lh->script_dir) != 0)) {
        lua_pushcfunction(L, add_script_path);
        lua_pushlightuserdata(L, lh->node->cfg->script);
        if (mw__lua_pcall(lh, 1, 0) != LUA_OK)
            lua_pop(L, 1);
        free(lh->script_dir);
        lh->script_dir = dir;
    } else {
        free(dir);
    }

    lua_pushcfunction(L, unload_app_modules);
    if (mw__lua_pcall(lh, 0, 1) != LUA_OK) {
        snprintf(err, errlen, "%s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return MW_ELUA;
    }
    /* The app sees the configuration as it is now (a reload re-read it). */
    lua_pushcfunction(L, mw_lua_api_refresh_config);
    if (mw__lua_pcall(lh, 0, 0) != LUA_OK)
        lua_pop(L, 1);
    generation = mw_lua_api_new_generation(L);
    r = load_app(lh, err, errlen);
    if (r == 0 && bind_app(lh, &previous) != 0) {
        snprintf(err, errlen, "not enough memory for the app's hooks (lua.memory_limit)");
        r = MW_ENOMEM;
    }
    if (r != 0) {
        /* Timers the broken script started while loading go with it. */
        mw_lua_api_cancel_timers(L, generation, 0);
        /* The old modules go back, so the old app keeps its upvalues' world. */
        lua_pushcfunction(L, restore_modules);
        lua_insert(L, -2);
        if (mw__lua_pcall(lh, 1, 0) != LUA_OK)
            lua_pop(L, 1);
        return MW_ELUA;
    }
    lua_pop(L, 1); /* the saved modules */
    mw_lua_api_cancel_timers(L, generation, 1); /* the old app's, not the new one's */
    run_start_hooks(lh, previous);
    luaL_unref(L, LUA_REGISTRYINDEX, previous);
    return 0;
}
