/* The speed of moonwire's string.find, match, gmatch and gsub
 * (core/lua_pattern.c) against Lua 5.4's own on chat-like strings: the
 * patterns the shipped apps use (scripts/chat.lua, scripts/lib/filters.lua,
 * nicks.lua) and a few common ones, on messages of 20 to 300 bytes.
 *
 *   build/mw_bench_pattern                 both, 5 rounds, a table with the ratios
 *   build/mw_bench_pattern --only lua|ours one side, once (for callgrind: the
 *                                          instructions of a run do not move)
 *   build/mw_bench_pattern --rounds N --scale K --workload I
 *
 * Each workload is a Lua loop over the same strings; a round times each
 * workload with both sides in turn (the order alternating), CPU time of the
 * thread; the table shows the best round of each. A ratio below 1 means
 * ours is faster.
 */
#include "lua_loops.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* workloads[i] = { name, function(f, n) running n calls through f (a table
 * of find, match, gmatch, gsub) }. */
static const char *const WORKLOADS =
    "local texts = {\n"
    "  'hi',\n"
    "  'hey @bob, did you see the match yesterday? 3-2 :)',\n"
    "  'ok   see you at 8pm   ',\n"
    "  'check this out: https://example.com/watch?v=abc123&t=42s <3',\n"
    "  'Caf\\195\\169 au lait, s\\226\\128\\153il vous pla\\195\\174t ! Darn, the queue is "
    "long.',\n"
    "  string.rep('lorem ipsum dolor sit amet, consectetur adipiscing elit. ', 5),\n"
    "  '{\"type\":\"say\",\"room\":\"lobby\",\"text\":\"hello everyone, how are things?\"}',\n"
    "}\n"
    "local WORD = '[A-Za-z0-9\\128-\\255]+'\n"
    "local CONTROL = '[%z\\1-\\8\\11-\\31\\127]'\n"
    "local NICK = '^[A-Za-z0-9_][A-Za-z0-9_.%-]*$'\n"
    "local mask = { darn = '***', queue = '***' }\n"
    "local function masker(w) return mask[w:lower()] end\n"
    "local escapes = { ['<'] = '&lt;', ['>'] = '&gt;', ['&'] = '&amp;' }\n"
    "local function each(n, fn)\n"
    "  local k = #texts\n"
    "  for i = 1, n do fn(texts[i % k + 1]) end\n"
    "end\n"
    "workloads = {\n"
    "  { 'find control chars (filters.control)', function(f, n)\n"
    "      local find = f.find; each(n, function(t) return find(t, CONTROL) end) end },\n"
    "  { 'trim: find %S, find ^.*%S', function(f, n)\n"
    "      local find = f.find\n"
    "      each(n, function(t) local i = find(t, '%S'); return find(t, '^.*%S', i) end) end },\n"
    "  { 'gsub words with a function (mask_words)', function(f, n)\n"
    "      local gsub = f.gsub; each(n, function(t) return gsub(t, WORD, masker) end) end },\n"
    "  { 'find a nick pattern (anchored set)', function(f, n)\n"
    "      local find = f.find\n"
    "      local nicks = { 'ann', 'bob_the_2nd', 'x.y-z', 'bad nick', 'Zoe' }\n"
    "      for i = 1, n do find(nicks[i % 5 + 1], NICK) end end },\n"
    "  { 'match ^(.*) (%d+)$ (nicks.lua)', function(f, n)\n"
    "      local match = f.match\n"
    "      for i = 1, n do match('mw.a6liw1fd.17 1700000000', '^(.*) (%d+)$') end end },\n"
    "  { 'gmatch [^,]+ over a list', function(f, n)\n"
    "      local gmatch = f.gmatch\n"
    "      for i = 1, n / 4 do for r in gmatch('lobby,random,dev,ops', '[^,]+') do end end end },\n"
    "  { 'gsub %s+ to one space', function(f, n)\n"
    "      local gsub = f.gsub; each(n, function(t) return gsub(t, '%s+', ' ') end) end },\n"
    "  { 'find a plain string', function(f, n)\n"
    "      local find = f.find; each(n, function(t) return find(t, 'http', 1, true) end) end },\n"
    "  { 'find a mention @(%w+)', function(f, n)\n"
    "      local find = f.find; each(n, function(t) return find(t, '@(%w+)') end) end },\n"
    "  { 'match a JSON field', function(f, n)\n"
    "      local match = f.match\n"
    "      each(n, function(t) return match(t, '\"type\":\"(%w+)\"') end) end },\n"
    "  { 'gsub [<>&] with a table (escape)', function(f, n)\n"
    "      local gsub = f.gsub; each(n, function(t) return gsub(t, '[<>&]', escapes) end) end },\n"
    "  { 'gsub %w+ with a template', function(f, n)\n"
    "      local gsub = f.gsub; each(n, function(t) return gsub(t, '(%w+)', '<%1>') end) end },\n"
    "  { 'find a word literal (no specials)', function(f, n)\n"
    "      local find = f.find; each(n, function(t) return find(t, 'the') end) end },\n"
    "  { 'match a leading word %a+', function(f, n)\n"
    "      local match = f.match; each(n, function(t) return match(t, '%a+') end) end },\n"
    "}\n";

static lua_State *L;

static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs workload i with the functions of the global side, n calls; returns
 * the CPU seconds. */
static double run(int i, const char *side, long n)
{
    double start;

    lua_getglobal(L, "workloads");
    lua_rawgeti(L, -1, i);
    lua_rawgeti(L, -1, 2);
    lua_getglobal(L, side);
    lua_pushinteger(L, n);
    lua_gc(L, LUA_GCCOLLECT);
    start = cpu_seconds();
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
        fprintf(stderr, "mw_bench_pattern: %s\n", lua_tostring(L, -1));
        exit(1);
    }
    start = cpu_seconds() - start;
    lua_pop(L, 2);
    return start;
}

int main(int argc, char **argv)
{
    const char *only = NULL;
    int rounds = 5, count, first = 1, last, picked = 0;
    long n = 200000;
    double scale = 1, sum_log = 0;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
            only = argv[++i];
        else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (strcmp(argv[i], "--scale") == 0 && i + 1 < argc)
            scale = atof(argv[++i]);
        else if (strcmp(argv[i], "--workload") == 0 && i + 1 < argc)
            first = atoi(argv[++i]), picked = 1;
        else {
            fprintf(stderr, "usage: mw_bench_pattern [--only lua|ours] [--rounds N] [--scale K] "
                            "[--workload I]\n");
            return 2;
        }
    }
    n = (long)((double)n * scale);
    if (n < 4)
        n = 4;
    L = luaL_newstate();
    luaL_openlibs(L);
    if (luaL_dostring(L, WORKLOADS) != LUA_OK ||
        luaL_dostring(L, "lua = { find = string.find, match = string.match,\n"
                         "  gmatch = string.gmatch, gsub = string.gsub }") != LUA_OK) {
        fprintf(stderr, "mw_bench_pattern: %s\n", lua_tostring(L, -1));
        return 1;
    }
    mw_lua_loops_install(L);
    if (luaL_dostring(L, "ours = { find = string.find, match = string.match,\n"
                         "  gmatch = string.gmatch, gsub = string.gsub }") != LUA_OK)
        return 1;
    lua_getglobal(L, "workloads");
    count = (int)lua_rawlen(L, -1);
    lua_pop(L, 1);
    last = count;
    if (picked) /* --workload I: that one alone */
        last = first;
    if (first < 1 || first > count) {
        fprintf(stderr, "mw_bench_pattern: --workload 1..%d\n", count);
        return 2;
    }
    count = last - first + 1;

    if (only != NULL) {
        if (strcmp(only, "lua") != 0 && strcmp(only, "ours") != 0) {
            fprintf(stderr, "mw_bench_pattern: --only lua or --only ours\n");
            return 2;
        }
        for (int i = first; i <= last; i++)
            run(i, only, n);
        lua_close(L);
        return 0;
    }

    printf("%-42s %12s %12s %7s\n", "workload (best of rounds)", "lua ns/call", "ours ns/call",
           "ratio");
    for (int i = first; i <= last; i++) {
        double best_lua = 1e30, best_ours = 1e30;

        for (int r = 0; r < rounds; r++) {
            int lua_first = r % 2 == 0;
            double a = run(i, lua_first ? "lua" : "ours", n);
            double b = run(i, lua_first ? "ours" : "lua", n);
            double t_lua = lua_first ? a : b, t_ours = lua_first ? b : a;
            if (t_lua < best_lua)
                best_lua = t_lua;
            if (t_ours < best_ours)
                best_ours = t_ours;
        }
        lua_getglobal(L, "workloads");
        lua_rawgeti(L, -1, i);
        lua_rawgeti(L, -1, 1);
        printf("%-42s %12.1f %12.1f %7.2f\n", lua_tostring(L, -1), best_lua * 1e9 / (double)n,
               best_ours * 1e9 / (double)n, best_ours / best_lua);
        lua_pop(L, 3);
        sum_log += __builtin_log(best_ours / best_lua);
    }
    printf("%-42s %12s %12s %7.2f\n", "geometric mean", "", "", __builtin_exp(sum_log / count));
    lua_close(L);
    return 0;
}
