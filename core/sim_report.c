/* moonwire.sim's reports to the spec: the log lines it captures (srv:logs),
 * and what the Lua host reports (mw_lua_set_reporter): a hook's failure,
 * raised from the spec's call that ran it once the server has settled
 * (mw_sim_settle_call), and warnings about the app, printed once. See
 * sim_int.h.
 */
#include "sim_int.h"
#include "lua_state.h"
#include "moonwire/log.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Log capture ------------------------------------------------------------------ */

static struct {
    char **lines;
    size_t n, cap;
    mw_log_level_t level;
} captured;

static void capture(void *ud, mw_log_level_t level, const char *line)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    char buf[4200];
    (void)ud;
    if (captured.n == captured.cap) {
        size_t cap = captured.cap ? captured.cap * 2 : 64;
        char **lines = realloc(captured.lines, cap * sizeof(char *));
        if (lines == NULL)
            return;
        captured.lines = lines;
        captured.cap = cap;
    }
    snprintf(buf, sizeof(buf), "%s %s", level < MW_LOG_OFF ? names[level] : "?", line);
    captured.lines[captured.n] = strdup(buf);
    if (captured.lines[captured.n] != NULL)
        captured.n++;
    if (level >= MW_LOG_WARN && level >= captured.level && getenv("MW_SIM_LOG") != NULL)
        fprintf(stderr, "moonwire.sim: %s\n", buf);
}

/* Hook failures and warnings about the app ------------------------------------ */

/* The servers alive, to find the one whose node reports, and the one whose
 * app is loading (its node is not known yet). */
static mw_list_t live = {&live, &live};
static sim_server_t *loading;

/* Warnings already printed (each once per process, however many servers load the app). */
static struct {
    char **texts;
    size_t n;
} warned;

#define WARNED_MAX 256

/* The Lua host's report (mw_lua_set_reporter): a hook of the server failed,
 * or its app has a key that looks like a hook but is none. */
static void on_report(mw_node_t *node, int level, const char *text, const char *traceback)
{
    sim_server_t *ss = loading;
    mw_list_t *it;

    mw_list_foreach(it, &live) {
        sim_server_t *s = MW_CONTAINER_OF(it, sim_server_t, live_link);
        if (s->node == node)
            ss = s;
    }
    if (level == MW_LOG_ERROR && ss != NULL) {
        static const char tb_head[] = "stack traceback:";
        if (ss->failures++ == 0) {
            size_t n = strlen(text) + strlen(traceback) + 64;
            if (strncmp(traceback, tb_head, sizeof(tb_head) - 1) == 0)
                traceback += sizeof(tb_head) - 1;
            ss->failure = malloc(n);
            if (ss->failure != NULL)
                snprintf(ss->failure, n, "%s%s%s", text,
                         *traceback ? "\nstack traceback of the hook:" : "", traceback);
        }
        return;
    }
    /* A warning: busted shows nothing of the log, and a misspelled hook
     * otherwise only shows as a spec that received nothing. */
    if (level != MW_LOG_WARN || (ss != NULL && ss->log_warnings) || getenv("MW_SIM_LOG") != NULL)
        return; /* (MW_SIM_LOG: printed already) */
    for (size_t i = 0; i < warned.n; i++)
        if (strcmp(warned.texts[i], text) == 0)
            return;
    fprintf(stderr, "moonwire.sim: warning: %s\n", text);
    if (warned.n < WARNED_MAX) {
        char **texts = realloc(warned.texts, (warned.n + 1) * sizeof(char *));
        if (texts != NULL) {
            warned.texts = texts;
            if ((texts[warned.n] = strdup(text)) != NULL)
                warned.n++;
        }
    }
}

/* The server whose failure a call raises: ss's own, else (in a cluster) the
 * first node of its cluster with one. */
static sim_server_t *failed_server(sim_server_t *ss)
{
    mw_list_t *it;

    if (ss->failures > 0 || !ss->joined)
        return ss;
    mw_list_foreach(it, &live) {
        sim_server_t *s = MW_CONTAINER_OF(it, sim_server_t, live_link);
        if (s->joined && s->join.ud == ss->join.ud && s->failures > 0)
            return s;
    }
    return ss;
}

int mw_sim_settle_call(lua_State *L, sim_server_t *ss, int nret)
{
    size_t more;

    ss = failed_server(ss);
    if (ss->failures == 0)
        return nret;
    more = ss->failures - 1;
    ss->failures = 0;
    if (ss->log_hook_errors) {
        free(ss->failure);
        ss->failure = NULL;
        return nret;
    }
    luaL_where(L, 1);
    lua_pushstring(L, ss->failure != NULL ? ss->failure : "a hook failed (out of memory)");
    free(ss->failure);
    ss->failure = NULL;
    if (more > 0)
        lua_pushfstring(L, "\n(and %d more hook failure%s in this call: srv:logs() has them all)",
                        (int)more, more == 1 ? "" : "s");
    else
        lua_pushliteral(L, "");
    lua_concat(L, 3);
    return lua_error(L);
}

void mw__sim_report_forget(sim_server_t *ss)
{
    free(ss->failure);
    ss->failure = NULL;
    ss->failures = 0;
}

/* Reads sim.new's option `name` (in the table at opts): nil or `other` leave
 * *log at 0, "log" sets it. Returns 0, or -1 with the error message pushed. */
static int option(lua_State *L, int opts, const char *name, const char *other, int *log)
{
    int t = lua_getfield(L, opts, name);
    const char *v = lua_tostring(L, -1);

    if (t != LUA_TNIL && (t != LUA_TSTRING || (strcmp(v, other) != 0 && strcmp(v, "log") != 0))) {
        lua_pushfstring(L, "sim.new: '%s' must be \"%s\" or \"log\"", name, other);
        return -1;
    }
    *log = t == LUA_TSTRING && strcmp(v, "log") == 0;
    lua_pop(L, 1);
    return 0;
}

int mw__sim_report_options(lua_State *L, int opts, sim_server_t *ss)
{
    if (option(L, opts, "hook_errors", "raise", &ss->log_hook_errors) != 0 ||
        option(L, opts, "warnings", "print", &ss->log_warnings) != 0)
        return -1;
    return 0;
}

void mw__sim_report_loading(sim_server_t *ss, mw_log_level_t level)
{
    captured.level = level;
    mw_log_configure(level, 0, NULL);
    mw_log_set_sink(capture, NULL);
    mw_lua_set_reporter(on_report);
    loading = ss;
}

void mw__sim_report_live(sim_server_t *ss)
{
    mw_list_insert_tail(&live, &ss->live_link);
}

void mw__sim_report_dead(sim_server_t *ss)
{
    mw_list_remove(&ss->live_link);
}

void mw__sim_logs_push(lua_State *L)
{
    lua_createtable(L, (int)captured.n, 0);
    for (size_t i = 0; i < captured.n; i++) {
        lua_pushstring(L, captured.lines[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
        free(captured.lines[i]);
    }
    captured.n = 0;
}

void mw__sim_report_end(void)
{
    for (size_t i = 0; i < captured.n; i++)
        free(captured.lines[i]);
    free(captured.lines);
    memset(&captured, 0, sizeof(captured));
    mw_log_set_sink(NULL, NULL);
    mw_lua_set_reporter(NULL);
    for (size_t i = 0; i < warned.n; i++)
        free(warned.texts[i]);
    free(warned.texts);
    memset(&warned, 0, sizeof(warned));
}
