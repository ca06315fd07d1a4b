/* libFuzzer harness: moonwire's string.find, match, gmatch, gsub and rep
 * (core/lua_pattern.c, core/lua_loops.c) against Lua 5.4's own, on the
 * same fuzzer-made subject, pattern, init, replacement and count, in one
 * plain Lua state. Any difference in results, in error messages, or in the
 * calls a replacement function or table gets aborts.
 *
 * Input: six header bytes, then the bytes of subject, pattern and
 * replacement string:
 *   0  what to call (see RUN below)     1  init (int8)
 *   2  flags: 1 init absent, 2 count absent, 4 the replacement as a number
 *   3  count for gsub, n for rep (int8)  4, 5  subject and pattern lengths
 *
 * Ours runs first, under the real watchdog with a CPU-time limit; a case it
 * does not finish in that time is skipped, since Lua's (which does the same
 * steps, without ASan) could then run for hours. Subject and pattern are
 * capped at 96 and 48 bytes.
 */
#include "lua_loops.h"
#include "lua_watchdog.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_SUBJECT = 96, MAX_PATTERN = 48, LIMIT_MS = 100, NARGS = 6 };

/* run(fs, op, s, p, init, count, r) calls fs's function for op and
 * returns its results (or its error) and the log of what the replacement
 * saw; differs(a, alog, b, blog) describes the first difference or returns
 * nil. fs holds find, match, gmatch, gsub and rep, called through locals of
 * those names so that "bad argument #1 to 'find'" reads the same. */
static const char *const RUN =
    "local function pack(...) return { n = select('#', ...), ... } end\n"
    "local log\n"
    "local function note(...) log[#log + 1] = pack(...) end\n"
    "local replacements = {\n"
    "  function(...) note(...); return (...) end,\n"
    "  function(...) note(...); if #log % 2 == 0 then return false end end,\n"
    "  function(...) note(...); return {} end,\n"
    "  function(a, ...) note(a, ...); return #log * 1.5 end,\n"
    "  function(...) note(...); error('boom') end,\n"
    "  { a = '<A>', b = false, ['1'] = 'one', [''] = 'E', x = 3, y = true },\n"
    "  setmetatable({}, { __index = function(_, k) note(k)\n"
    "    if type(k) == 'string' and #k % 2 == 1 then return k .. '!' end end }),\n"
    "}\n"
    "local function call(f) local ok, r = pcall(f); if ok then return r end\n"
    "  return { n = 1, 'error: ' .. tostring(r) } end\n"
    "function run(fs, op, s, p, init, count, r)\n"
    "  local find, match, gmatch, gsub, rep = fs.find, fs.match, fs.gmatch, fs.gsub, fs.rep\n"
    "  log = {}\n"
    "  if op == 0 then return call(function() local x = pack(find(s, p, init)); return x end), "
    "log\n"
    "  elseif op == 1 then\n"
    "    return call(function() local x = pack(find(s, p, init, true)); return x end), log\n"
    "  elseif op == 2 then\n"
    "    return call(function() local x = pack(match(s, p, init)); return x end), log\n"
    "  elseif op == 3 then\n"
    "    local all = {}\n"
    "    local it = call(function() local x = pack(gmatch(s, p, init)); return x end)\n"
    "    if type(it[1]) ~= 'function' then return it, log end\n"
    "    for i = 1, 100 do\n"
    "      local x = call(function() local y = pack(it[1]()); return y end)\n"
    "      all[i] = x\n"
    "      -- after an error the iterator is not called again (lua_pattern.h)\n"
    "      if x.n == 0 or (x.n == 1 and type(x[1]) == 'string' and x[1]:find('^error: ')) then\n"
    "        break\n"
    "      end\n"
    "    end\n"
    "    return all, log\n"
    "  elseif op == 4 then\n"
    "    return call(function() local x = pack(rep(s, count, p)); return x end), log\n"
    "  end\n"
    "  -- gsub: a string, a number, a function, a table or nothing\n"
    "  local with = r\n"
    "  if op >= 6 then with = replacements[op - 5] end\n"
    "  if op == 13 then with = nil end\n"
    "  return call(function() local x = pack(gsub(s, p, with, count)); return x end), log\n"
    "end\n"
    "local function same(a, b)\n"
    "  if type(a) == 'table' and type(b) == 'table' then\n"
    "    for k, v in pairs(a) do if not same(v, b[k]) then return false end end\n"
    "    for k in pairs(b) do if a[k] == nil then return false end end\n"
    "    return true\n"
    "  end\n"
    "  if type(a) == 'function' and type(b) == 'function' then return true end\n"
    "  return a == b and math.type(a) == math.type(b)\n"
    "end\n"
    "local function show(v, depth)\n"
    "  if type(v) == 'string' then return string.format('%q', v) end\n"
    "  if type(v) == 'table' and (depth or 0) < 3 then\n"
    "    local out = {}\n"
    "    for i = 1, v.n or #v do out[i] = show(v[i], (depth or 0) + 1) end\n"
    "    return '{' .. table.concat(out, ', ') .. '}'\n"
    "  end\n"
    "  if math.type(v) == 'float' then return tostring(v) .. '(float)' end\n"
    "  return tostring(v)\n"
    "end\n"
    "function differs(a, alog, b, blog)\n"
    "  if not same(a, b) then return 'results: lua ' .. show(a) .. '\\n   ours ' .. show(b) end\n"
    "  if not same(alog, blog) then\n"
    "    return 'replacement calls: lua ' .. show(alog) .. '\\n   ours ' .. show(blog)\n"
    "  end\n"
    "end\n";

static lua_State *L;

static void limit_hook(lua_State *T, lua_Debug *ar)
{
    (void)ar;
    if (mw_watchdog_expired())
        luaL_error(T, "time limit exceeded");
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    L = luaL_newstate();
    luaL_openlibs(L);
    if (luaL_dostring(L, RUN) != LUA_OK ||
        luaL_dostring(L, "lua = { find = string.find, match = string.match,\n"
                         "  gmatch = string.gmatch, gsub = string.gsub, rep = string.rep }") !=
            LUA_OK) {
        fprintf(stderr, "fuzz_pattern: %s\n", lua_tostring(L, -1));
        abort();
    }
    mw_lua_loops_install(L);
    if (luaL_dostring(L, "ours = { find = string.find, match = string.match,\n"
                         "  gmatch = string.gmatch, gsub = string.gsub, rep = string.rep }") !=
            LUA_OK ||
        mw_watchdog_start(limit_hook) != 0)
        abort();
    return 0;
}

/* Calls run(fs, ...) with the NARGS arguments from index args; leaves its
 * two results. Returns 0, or -1 (leaving nothing) when the time limit
 * stopped it. */
static int run(const char *fs, int args, uint32_t limit_ms)
{
    int r, expired, base = lua_gettop(L);

    lua_getglobal(L, "run");
    lua_getglobal(L, fs);
    for (int i = 0; i < NARGS; i++)
        lua_pushvalue(L, args + i);
    mw_watchdog_enter(L, limit_ms);
    r = lua_pcall(L, NARGS + 1, 2, 0);
    expired = mw_watchdog_expired();
    mw_watchdog_leave();
    if (expired) {
        lua_settop(L, base);
        return -1;
    }
    if (r != LUA_OK) {
        fprintf(stderr, "fuzz_pattern: run: %s\n", lua_tostring(L, -1));
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t slen, plen;
    int op, flags, top = lua_gettop(L);

    if (size < 6)
        return 0;
    op = data[0] % 14;
    flags = data[2];
    slen = data[4] % (MAX_SUBJECT + 1);
    plen = data[5] % (MAX_PATTERN + 1);
    data += 6;
    size -= 6;
    if (slen > size)
        slen = size;
    if (plen > size - slen)
        plen = size - slen;

    lua_pushinteger(L, op);
    lua_pushlstring(L, (const char *)data, slen);
    lua_pushlstring(L, (const char *)data + slen, plen);
    if (flags & 1)
        lua_pushnil(L);
    else
        lua_pushinteger(L, (int8_t)data[-5]);
    if (flags & 2)
        lua_pushnil(L);
    else
        lua_pushinteger(L, (int8_t)data[-3]);
    if (flags & 4)
        lua_pushinteger(L, (int8_t)data[-3] * 7);
    else
        lua_pushlstring(L, (const char *)data + slen + plen, size - slen - plen);

    if (run("ours", top + 1, LIMIT_MS) == 0) {
        run("lua", top + 1, 0);
        /* differs(lua's results, lua's log, ours, our log) */
        lua_getglobal(L, "differs");
        lua_pushvalue(L, -3);
        lua_pushvalue(L, -3);
        lua_pushvalue(L, -7);
        lua_pushvalue(L, -7);
        lua_call(L, 4, 1);
        if (!lua_isnil(L, -1)) {
            fprintf(stderr, "fuzz_pattern: a difference (op %d)\n   %s\n", op, lua_tostring(L, -1));
            abort();
        }
    }
    lua_settop(L, top);
    lua_gc(L, LUA_GCSTEP, 0);
    return 0;
}
