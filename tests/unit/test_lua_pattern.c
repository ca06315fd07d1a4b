/* Unit tests for core/lua_pattern.h and lua_loops.h: the
 * stoppable string and table functions give Lua 5.4's answers (checked both
 * against literal expectations and against Lua's own functions, kept aside
 * before the install), and the watchdog stops the cases that made Lua's run
 * for hours. */
#include "helpers.h"

#include "lua_loops.h"
#include "lua_watchdog.h"

#include <lauxlib.h>
#include <lualib.h>
#include <string.h>
#include <time.h>

/* Lua's own functions are kept in the global `orig`; `differs(name, ...)`
 * calls orig[name] and the installed one with the same arguments, through
 * locals of the same name (so "bad argument #1 to 'f'" reads the same), and
 * returns nil or a description of the first difference. gmatch is compared
 * over its iterations, table functions over their results, the table after
 * the call and every metamethod call they made. */
static const char *const HARNESS =
    "orig = { find = string.find, match = string.match, gmatch = string.gmatch,\n"
    "  gsub = string.gsub, rep = string.rep, insert = table.insert, remove = table.remove,\n"
    "  move = table.move, concat = table.concat, sort = table.sort }\n"
    "local function show(v)\n"
    "  if type(v) == 'string' then return string.format('%q', v) end\n"
    "  if math.type(v) == 'float' then return tostring(v) .. '(float)' end\n"
    "  return tostring(v)\n"
    "end\n"
    "local function pack(...) return { n = select('#', ...), ... } end\n"
    "local function same_value(a, b)\n"
    "  if type(a) == 'table' and type(b) == 'table' then\n"
    "    for k, v in pairs(a) do if not same_value(v, b[k]) then return false end end\n"
    "    for k in pairs(b) do if a[k] == nil then return false end end\n"
    "    return true\n"
    "  end\n"
    "  return a == b and math.type(a) == math.type(b)\n"
    "end\n"
    "local function describe(r)\n"
    "  local out = {}\n"
    "  for i = 1, r.n do out[i] = type(r[i]) == 'table' and 'table' or show(r[i]) end\n"
    "  return '(' .. table.concat(out, ', ') .. ')'\n"
    "end\n"
    "-- f returns pack(...) of its results; an error becomes one string\n"
    "local function call(f, ...)\n"
    "  local ok, r = pcall(f, ...)\n"
    "  if ok then return r end\n"
    "  return { n = 1, 'error: ' .. tostring(r) }\n"
    "end\n"
    "-- every iteration of a gmatch iterator, up to 200, and the error if any\n"
    "local function iterate(gmatch, ...)\n"
    "  local r = pack(pcall(function(...) local it = gmatch(...); return it end, ...))\n"
    "  if not r[1] then return { r } end\n"
    "  local it, all = r[2], {}\n"
    "  for i = 1, 200 do\n"
    "    local x = pack(pcall(it))\n"
    "    all[#all + 1] = x\n"
    "    if not x[1] or x.n == 1 then break end\n"
    "  end\n"
    "  return all\n"
    "end\n"
    "function differs(name, ...)\n"
    "  local a, b\n"
    "  if name == 'gmatch' then\n"
    "    local gmatch = orig.gmatch; a = iterate(gmatch, ...)\n"
    "    gmatch = string.gmatch; b = iterate(gmatch, ...)\n"
    "    for i = 1, math.max(#a, #b) do\n"
    "      if not a[i] or not b[i] or not same_value(a[i], b[i]) then\n"
    "        return 'gmatch iteration ' .. i .. ': lua ' .. (a[i] and describe(a[i]) or '-')\n"
    "          .. ' vs ours ' .. (b[i] and describe(b[i]) or '-')\n"
    "      end\n"
    "    end\n"
    "    return nil\n"
    "  end\n"
    "  local find, match, gsub, rep = orig.find, orig.match, orig.gsub, orig.rep\n"
    "  -- not tail calls: the name in 'bad argument' comes from the caller\n"
    "  local fs = { find = function(...) local r = pack(find(...)); return r end,\n"
    "    match = function(...) local r = pack(match(...)); return r end,\n"
    "    gsub = function(...) local r = pack(gsub(...)); return r end,\n"
    "    rep = function(...) local r = pack(rep(...)); return r end }\n"
    "  a = call(fs[name], ...)\n"
    "  find, match, gsub, rep = string.find, string.match, string.gsub, string.rep\n"
    "  b = call(fs[name], ...)\n"
    "  if not same_value(a, b) then\n"
    "    return name .. ': lua ' .. describe(a) .. ' vs ours ' .. describe(b)\n"
    "  end\n"
    "end\n"
    "-- A table function on a fresh table from make(log) (which may give it\n"
    "-- metamethods that append to log) with the arguments from args(t).\n"
    "function table_differs(name, make, args)\n"
    "  local function run(f)\n"
    "    local log = {}\n"
    "    local t = make(log)\n"
    "    local r = pack(pcall(function(...) local r = pack(f(...)); return r end,\n"
    "      table.unpack(args(t))))\n"
    "    if r[1] then r = r[2] end\n"
    "    local raw = {}\n"
    "    if type(t) == 'table' then for k, v in next, t do raw[k] = v end end\n"
    "    return r, raw, log\n"
    "  end\n"
    "  local a, at, alog = run(orig[name])\n"
    "  local b, bt, blog = run(table[name])\n"
    "  -- a table result is the table itself: its contents are compared below\n"
    "  if type(a[1]) == 'table' then a[1] = 'table' end\n"
    "  if type(b[1]) == 'table' then b[1] = 'table' end\n"
    "  if not same_value(a, b) then return name .. ': lua ' .. describe(a) .. ' vs ours ' .. "
    "describe(b) end\n"
    "  if not same_value(at, bt) then return name .. ': the tables differ after the call' end\n"
    "  if not same_value(alog, blog) then\n"
    "    return name .. ': metamethods lua ' .. table.concat(alog, ' ') .. ' vs ours ' ..\n"
    "      table.concat(blog, ' ')\n"
    "  end\n"
    "end\n";

static lua_State *new_state(void)
{
    lua_State *L = luaL_newstate();

    assert_non_null(L);
    luaL_openlibs(L);
    if (luaL_dostring(L, HARNESS) != LUA_OK)
        fail_msg("harness: %s", lua_tostring(L, -1));
    mw_lua_loops_install(L);
    return L;
}

/* Runs chunk; a failed Lua assert fails the test with its message. */
static void run(lua_State *L, const char *chunk)
{
    if (luaL_dostring(L, chunk) != LUA_OK)
        fail_msg("%s", lua_tostring(L, -1));
}

static int setup(void **state)
{
    *state = new_state();
    return 0;
}

static int teardown(void **state)
{
    lua_close(*state);
    return 0;
}

static void test_the_functions_are_replaced_everywhere_a_script_finds_them(void **state)
{
    run(*state, "for _, k in ipairs{'find', 'match', 'gmatch', 'gsub', 'rep'} do\n"
                "  assert(string[k] ~= orig[k], k)\n"
                "  assert(getmetatable('').__index[k] == string[k], k)\n"
                "  assert(package.loaded.string[k] == string[k], k)\n"
                "  assert(debug.getupvalue(string[k], 1) == nil, k)\n"
                "end\n"
                "for _, k in ipairs{'insert', 'remove', 'move', 'concat', 'sort'} do\n"
                "  assert(table[k] ~= orig[k], k)\n"
                "  assert(debug.getupvalue(table[k], 1) == nil, k)\n"
                "end\n"
                "assert(('hello'):find('l+') == 3)\n"
                "assert(select(2, ('hello'):gsub('l', 'L')) == 2)\n");
}

static void test_find_returns_positions_and_captures(void **state)
{
    run(*state,
        "local s, e, c = string.find('THE (quick) fox', '%((%a+)%)')\n"
        "assert(s == 5 and e == 11 and c == 'quick')\n"
        "assert(select('#', string.find('abc', 'b')) == 2)\n"
        "assert(string.find('abc', 'x') == nil and select('#', string.find('abc', 'x')) == 1)\n"
        "-- a plain find: specials are plain characters, and so without any special\n"
        "assert(string.find('a.b(c', '.b(', 1, true) == 2)\n"
        "assert(string.find('a+b', 'a+b') == nil)\n"
        "assert(string.find('a+b', 'a+b', 1, true) == 1)\n"
        "assert(string.find('abc', '', 10) == nil)\n"
        "local s2, e2 = string.find('abc', '', 4); assert(s2 == 4 and e2 == 3)\n"
        "assert(string.find('a\\0b', '\\0') == 2)\n"
        "assert(string.find('a\\0b', '%z') == 2) -- deprecated, still there\n"
        "assert(string.find('xyz', '%Z') == 1)\n");
}

static void test_init_counts_from_the_end_when_negative_and_stops_past_the_end(void **state)
{
    run(*state, "assert(string.find('abcabc', 'b', -3) == 5)\n"
                "assert(string.find('abcabc', 'b', -100) == 2)\n"
                "assert(string.find('abcabc', 'b', 0) == 2)\n"
                "assert(string.find('abc', 'c', 3) == 3)\n"
                "assert(string.find('abc', '$', 4) == 4)\n"
                "assert(string.find('abc', '$', 5) == nil)\n"
                "assert(string.match('abc', '()', 4) == 4)\n"
                "assert(string.match('abc', '.', -1) == 'c')\n"
                "assert(string.find('abc', 'a', math.mininteger) == 1)\n"
                "assert(string.find('abc', 'a', math.maxinteger) == nil)\n"
                "local n = 0 for _ in string.gmatch('abc', '', 10) do n = n + 1 end\n"
                "assert(n == 0)\n"
                "local t = {} for c in string.gmatch('abcd', '.', -2) do t[#t + 1] = c end\n"
                "assert(table.concat(t) == 'cd')\n");
}

static void test_anchors_hold_only_at_the_ends(void **state)
{
    run(*state, "assert(string.find('aab', '^b') == nil)\n"
                "assert(string.find('aab', '^a') == 1)\n"
                "assert(string.find('aab', '^b', 3) == 3) -- anchored at init\n"
                "assert(string.find('a$b', 'a$b') == 1) -- $ inside is a character\n"
                "assert(string.find('ab', 'b$') == 2 and string.find('ba', 'b$') == nil)\n"
                "assert(string.match('^x', '^^x') == '^x')\n"
                "-- gmatch takes ^ as a character\n"
                "local t = {} for m in string.gmatch('a^a^', '^a') do t[#t+1] = m end\n"
                "assert(#t == 1 and t[1] == '^a')\n"
                "-- gsub with ^ replaces once at most\n"
                "local r, n = string.gsub('aaa', '^a', 'b'); assert(r == 'baa' and n == 1)\n"
                "r, n = string.gsub('xaa', '^a', 'b'); assert(r == 'xaa' and n == 0)\n");
}

static void test_balance_and_frontier(void **state)
{
    run(*state, "assert(string.match('f(a(b)c) d', '%b()') == '(a(b)c)')\n"
                "assert(string.match('(()', '%b()') == '()')\n"
                "assert(string.match(\"x'ab'c'\", \"%b''\") == \"'ab'\")\n"
                "assert(string.find('((', '%b()') == nil)\n"
                "assert(string.gsub('THE (quick) fox', '%f[%a]%a+', 'W') == 'W (W) W')\n"
                "assert(string.find('THE (quick) fox', '%f[%a]%a+%f[%A]', 5) == 6)\n"
                "-- the frontier sees \\0 before the start and after the end\n"
                "assert(string.find('abc', '%f[%l]') == 1)\n"
                "assert(string.find('abc', '%f[%z]') == 4 and string.find('abc', '%f[\\0]') == 4)\n"
                "assert(select(2, string.gsub('hello world', '%f[%w]%w+', '')) == 2)\n");
}

static void test_captures_positions_and_back_references(void **state)
{
    run(*state, "local a, b, c = string.match('hello', '()ll()(o)')\n"
                "assert(a == 3 and b == 5 and c == 'o' and math.type(a) == 'integer')\n"
                "assert(string.match('say \"hi\" now', '([\"\\'])(.-)%1') == '\"')\n"
                "assert(select(2, string.match('say \"hi\" now', '([\"\\'])(.-)%1')) == 'hi')\n"
                "assert(string.find('abab', '(ab)%1') == 1)\n"
                "assert(string.find('abac', '(ab)%1') == nil)\n"
                "-- a position capture never matches as a back reference\n"
                "assert(string.find('aa', '()a%1') == nil)\n"
                "-- nested captures are numbered by their '('\n"
                "local x, y, z = string.match('abc', '((a)(b))'); assert(x == 'ab' and y == 'a' "
                "and z == 'b')\n"
                "-- an empty capture\n"
                "assert(string.match('abc', 'a()') == 2 and string.match('abc', 'a(x*)') == '')\n");
}

static void test_repetitions_greedy_lazy_and_optional(void **state)
{
    run(*state,
        "assert(string.match('<a><b>', '<.*>') == '<a><b>')\n"
        "assert(string.match('<a><b>', '<.->') == '<a>')\n"
        "assert(string.match('aaab', 'a+b') == 'aaab')\n"
        "assert(string.match('b', 'a+b') == nil and string.match('b', 'a*b') == 'b')\n"
        "assert(string.match('color colour', 'colou?r', 2) == 'colour')\n"
        "assert(string.match('[]]', '[]]+') == ']]')\n"
        "assert(string.match('a-b', '[a-]+') == 'a-')\n"
        "assert(string.match('x^y', '[^^]+', 2) == 'y' and string.match('x^y', '[^^]+') == 'x')\n"
        "assert(string.match('%]x', '[%%%]]+') == '%]')\n"
        "assert(string.match('  42  ', '^%s*(%d+)%s*$') == '42')\n"
        "assert(string.match('A1_b', '^[%w_]+$') == 'A1_b')\n");
}

static void test_gsub_replacements(void **state)
{
    run(*state,
        "local r, n = string.gsub('hello world', '(o)', '[%1%0%%]')\n"
        "assert(r == 'hell[oo%] w[oo%]rld' and n == 2)\n"
        "assert(string.gsub('abc', '%w', '%0%0') == 'aabbcc')\n"
        "assert(string.gsub('abc', '', '-') == '-a-b-c-')\n"
        "assert(string.gsub('hello', 'l', {l = 'L'}) == 'heLLo')\n"
        "assert(string.gsub('hello', '.', {h = 1, o = false}) == '1ello')\n"
        "assert(string.gsub('$name is $age', '%$(%w+)', {name = 'ann', age = 7}) == 'ann is 7')\n"
        "assert(string.gsub('abc', '%w', function(c) return c:upper() .. '.' end) == 'A.B.C.')\n"
        "assert(string.gsub('abc', '%w', function() end) == 'abc')\n"
        "assert(string.gsub('abc', '()', '%1') == '1a2b3c4')\n"
        "assert(string.gsub('abc', 'b', 5) == 'a5c')\n"
        "r, n = string.gsub('aaaa', 'a', 'b', 2); assert(r == 'bbaa' and n == 2)\n"
        "r, n = string.gsub('aaaa', 'a', 'b', 0); assert(r == 'aaaa' and n == 0)\n"
        "r, n = string.gsub('aaaa', 'a', 'b', -1); assert(r == 'aaaa' and n == 0)\n"
        "-- %1 without captures is the whole match\n"
        "assert(string.gsub('ab', '%w', '<%1>') == '<a><b>')\n");
}

static void test_empty_matches_follow_the_5_4_rule(void **state)
{
    /* 5.4: an empty match right where the previous match ended does not count. */
    run(*state, "local r, n = string.gsub('abc', '%w*', '-')\n"
                "assert(r == '-' and n == 1)\n"
                "r, n = string.gsub('abc d', '%w*', '-')\n"
                "assert(r == '- -' and n == 2)\n"
                "r, n = string.gsub(';a;', 'a*', 'x')\n"
                "assert(r == 'x;x;x' and n == 3)\n"
                "local t = {} for m in string.gmatch('abc d', '%w*') do t[#t+1] = '<'..m..'>' end\n"
                "assert(table.concat(t) == '<abc><d>')\n"
                "t = {} for a in string.gmatch('ab', '()') do t[#t+1] = a end\n"
                "assert(table.concat(t, ',') == '1,2,3')\n"
                "t = {} for k, v in string.gmatch('a=1, b=2', '(%w+)=(%w+)') do t[k] = v end\n"
                "assert(t.a == '1' and t.b == '2')\n");
}

static void test_errors_read_like_lua(void **state)
{
    run(*state,
        "local function err(f, ...) local ok, e = pcall(f, ...); assert(not ok); return e end\n"
        "assert(err(string.find, 'x', 'x%') == \"malformed pattern (ends with '%')\")\n"
        "-- a pattern is only checked as far as matching gets\n"
        "assert(string.find('abc', 'x%') == nil)\n"
        "assert(err(string.find, 'a', '[a') == \"malformed pattern (missing ']')\")\n"
        "assert(err(string.find, 'a', '%b') == \"malformed pattern (missing arguments to '%b')\")\n"
        "assert(err(string.find, 'a', '%fa') == \"missing '[' after '%f' in pattern\")\n"
        "assert(err(string.find, 'a', '(a') == 'unfinished capture')\n"
        "assert(err(string.match, 'a', 'a)') == 'invalid pattern capture')\n"
        "assert(string.find('a', 'a)') == nil) -- ')' alone is not special: a plain find\n"
        "assert(err(string.find, 'aa', '(a)%2') == 'invalid capture index %2')\n"
        "assert(err(string.find, 'aa', '%0') == 'invalid capture index %0')\n"
        "assert(err(string.gsub, 'abc', '(a)', '%2') == 'invalid capture index %2')\n"
        "assert(err(string.gsub, 'abc', 'a', '%x') == \"invalid use of '%' in replacement "
        "string\")\n"
        "assert(err(string.gsub, 'abc', 'a', 'x%') == \"invalid use of '%' in replacement "
        "string\")\n"
        "assert(err(string.gsub, 'abc', 'a', function() return {} end) ==\n"
        "       'invalid replacement value (a table)')\n"
        "assert(err(string.gsub, 'abc', 'a') ==\n"
        "       \"bad argument #3 to 'string.gsub' (string/function/table expected, got no "
        "value)\")\n"
        "assert(err(string.find, string.rep('a', 300), string.rep('a?', 300)) ==\n"
        "       'pattern too complex')\n"
        "assert(err(string.find, nil, 'a') ==\n"
        "       \"bad argument #1 to 'string.find' (string expected, got nil)\")\n"
        "assert(err(string.find, 'a', 'a', 1.5) ==\n"
        "       \"bad argument #3 to 'string.find' (number has no integer representation)\")\n");
}

static void test_captures_stop_at_32(void **state)
{
    run(*state, "local p32 = string.rep('(a)', 32)\n"
                "assert(select('#', string.match(string.rep('a', 32), p32)) == 32)\n"
                "local ok, e = pcall(string.match, string.rep('a', 33), p32 .. '(a)')\n"
                "assert(not ok and e == 'too many captures', e)\n"
                "assert(select('#', string.find(string.rep('a', 32), p32)) == 34)\n");
}

/* Every case above, and a few thousand made of pattern pieces, against Lua's
 * own functions. */
static void test_every_case_matches_lua_5_4(void **state)
{
    run(*state,
        "local subjects = { '', 'a', 'aaa', 'abc', 'hello world', 'THE (quick) fox',\n"
        "  'f(a(b)c) d', \"x'ab'c'\", 'a\\0b', '  42  ', 'a.b(c', '[]]', 'x^y', '%]x',\n"
        "  'abab', 'a=1, b=2', ';a;', 'color colour', 'aXb-Yc' }\n"
        "local patterns = { '', 'a', '^a', 'a$', '.', '%a+', '%w*', '(a)', '()', '(a)%1',\n"
        "  '%b()', \"%b''\", '%f[%a]%a+', '[]]', '[^a]', '[a-c]+', '[%a%d]', 'a-b', 'a?b',\n"
        "  '.-', '(.-)%1', '%', '[a', '(a', 'a)', '%1', '%f', '%bx', '$', '^', '^$', 'x%',\n"
        "  '%s*(%d+)%s*', '%z', '[%]]', '(()a)', '.*$', '%A', '[^%s]+', '%0', '(x*)' }\n"
        "local repls = { '', '%0', '%1', '<%2>', '%%', 'x%', '%x', 7,\n"
        "  { a = 'A', [1] = 'one', b = false }, function(a, b) return b or a end,\n"
        "  function() return {} end, function(a) if a == 'a' then return 1.5 end end }\n"
        "for _, s in ipairs(subjects) do\n"
        "  for _, p in ipairs(patterns) do\n"
        "    for _, init in ipairs{ 1, 0, 2, -1, -2, -100, 100, #s, #s + 1, #s + 2 } do\n"
        "      for _, name in ipairs{ 'find', 'match', 'gmatch' } do\n"
        "        local d = differs(name, s, p, init)\n"
        "        assert(not d, d and (d .. ' for ' .. string.format('%q %q %d', s, p, init)))\n"
        "      end\n"
        "      local d = differs('find', s, p, init, true)\n"
        "      assert(not d, d)\n"
        "    end\n"
        "    for i, r in ipairs(repls) do\n"
        "      for _, max in ipairs{ 'none', 0, 1, 2, -1 } do\n"
        "        local d = differs('gsub', s, p, r, max ~= 'none' and max or nil)\n"
        "        assert(not d, d and (d .. ' for ' .. string.format('%q %q repl %d', s, p, i)))\n"
        "      end\n"
        "    end\n"
        "  end\n"
        "end\n"
        "-- Pieces put together at random (a fixed seed): 20000 patterns.\n"
        "local pieces = { 'a', 'b', '.', '%a', '%d', '[ab]', '[^a]', '(', ')', '()', '*', '+',\n"
        "  '-', '?', '%b()', '%f[a]', '%1', '^', '$', '%', '[', ']', '%w*', 'a-', '(a*)' }\n"
        "local alphabet = { 'a', 'b', '(', ')', '1', ' ', 'ab', 'aa' }\n"
        "math.randomseed(42)\n"
        "for i = 1, 20000 do\n"
        "  local p, s = {}, {}\n"
        "  for j = 1, math.random(0, 6) do p[j] = pieces[math.random(#pieces)] end\n"
        "  for j = 1, math.random(0, 8) do s[j] = alphabet[math.random(#alphabet)] end\n"
        "  p, s = table.concat(p), table.concat(s)\n"
        "  local init = math.random(-3, #s + 2)\n"
        "  for _, name in ipairs{ 'find', 'match', 'gmatch' } do\n"
        "    local d = differs(name, s, p, init)\n"
        "    assert(not d, d and (d .. ' for ' .. string.format('%q %q %d', s, p, init)))\n"
        "  end\n"
        "  local r = repls[math.random(#repls)]\n"
        "  local d = differs('gsub', s, p, r, math.random(-1, 4))\n"
        "  assert(not d, d and (d .. ' for ' .. string.format('%q %q', s, p)))\n"
        "end\n");
}

static void test_rep_matches_lua_and_makes_nothing_of_nothing_at_once(void **state)
{
    run(*state,
        "for _, s in ipairs{ '', 'a', 'ab', 'abc' } do\n"
        "  for _, sep in ipairs{ 'none', '', ',', '--' } do\n"
        "    for _, n in ipairs{ -1, 0, 1, 2, 3, 7, 8, 9, 100, 1000 } do\n"
        "      local d = differs('rep', s, n, sep ~= 'none' and sep or nil); assert(not d, d)\n"
        "    end\n"
        "  end\n"
        "end\n"
        "for _, args in ipairs{ {'x', 2^31}, {'xx', 2^30}, {'x', 2^30, 'y'},\n"
        "    {'', math.maxinteger, 'x'}, {'x', 1.5}, {nil, 1}, {'x'}, {'x', 2, {}} } do\n"
        "  local d = differs('rep', table.unpack(args, 1, 3)); assert(not d, d)\n"
        "end\n"
        "assert(string.rep('', 2^60) == '' and string.rep('', math.maxinteger, '') == '')\n");
}

/* A table with every metamethod, logging them: n elements behind __index. */
static const char *const LOGGED_TABLE =
    "local function logged(n, values)\n"
    "  return function(log)\n"
    "    local store = {}\n"
    "    for i = 1, n do store[i] = values and values[i] or i end\n"
    "    return setmetatable({}, {\n"
    "      __index = function(_, k) log[#log+1] = 'get' .. tostring(k); return store[k] end,\n"
    "      __newindex = function(_, k, v) log[#log+1] = 'set' .. tostring(k) .. '=' ..\n"
    "        tostring(v); store[k] = v end,\n"
    "      __len = function() log[#log+1] = 'len'; return n end })\n"
    "  end\n"
    "end\n"
    "local function plain(n, values)\n"
    "  return function() local t = {} for i = 1, n do t[i] = values and values[i] or i end\n"
    "    return t end\n"
    "end\n";

static void test_table_functions_match_lua_call_for_call(void **state)
{
    char chunk[8192];

    snprintf(
        chunk, sizeof(chunk), "%s%s", LOGGED_TABLE,
        "local I = math.maxinteger\n"
        "local cases = {\n"
        "  insert = { {}, {9}, {1, 9}, {0, 9}, {2, 9}, {4, 9}, {5, 9}, {1, 2, 3}, {'x', 9},\n"
        "    {-1, 9}, {I, 9} },\n"
        "  remove = { {}, {1}, {2}, {3}, {4}, {5}, {0}, {-1}, {'x'}, {I} },\n"
        "  move = { {1, 3, 2}, {1, 3, 3}, {2, 3, 1}, {1, 0, 5}, {1, 3, 1}, {-2, 1, 1},\n"
        "    {1, I, 2}, {-1, I, 2}, {0, I - 1, 2}, {1, 2, I}, {1, 3}, {'a', 1, 1},\n"
        "    {1, 3, 2, 'dest'}, {1, 3, 5, 'dest'}, {1, 3, 2, 'self'} },\n"
        "  concat = { {}, {','}, {',', 2}, {',', 2, 3}, {',', 3, 2}, {',', 0, 1}, {',', 1, 4},\n"
        "    {',', 1, 5}, {1}, {',', 'x'}, {{}} },\n"
        "  sort = { {}, {function(a, b) return a > b end}, {function() return true end},\n"
        "    {function() return false end}, {1}, {'x'} },\n"
        "}\n"
        "local tables = {\n"
        "  plain(0), plain(1), plain(3), plain(4), plain(3, {3, 1, 2}), plain(5, {5, 4, 3, 2, "
        "1}),\n"
        "  plain(6, {2, 'a', 1, 1, 3, 0}), plain(3, {1, {}, 3}),\n"
        "  logged(0), logged(3), logged(4, {4, 2, 3, 1}), logged(7, {3, 1, 4, 1, 5, 9, 2}),\n"
        "  logged(3, {'b', 'a', 'c'}),\n"
        "  function() return setmetatable({}, {__len = function() return 1.5 end}) end,\n"
        "  function() return 'not a table' end,\n"
        "}\n"
        "for name, arglists in pairs(cases) do\n"
        "  for ti, make in ipairs(tables) do\n"
        "    for ai, args in ipairs(arglists) do\n"
        "      local d = table_differs(name, make, function(t)\n"
        "        local a = { t, table.unpack(args) }\n"
        "        if a[5] == 'dest' then a[5] = {} elseif a[5] == 'self' then a[5] = t end\n"
        "        return a\n"
        "      end)\n"
        "      assert(not d, d and (d .. ' (table ' .. ti .. ', arguments ' .. ai .. ')'))\n"
        "    end\n"
        "  end\n"
        "end\n"
        "-- Sorts of every array of up to 7 elements from a small alphabet, and of\n"
        "-- longer ones, with an order that is not strict too.\n"
        "math.randomseed(7)\n"
        "for i = 1, 3000 do\n"
        "  local n = i <= 2000 and math.random(0, 7) or math.random(50, 300)\n"
        "  local v = {} for j = 1, n do v[j] = math.random(1, 5) end\n"
        "  local order = ({ nil, function(a, b) return a > b end,\n"
        "    function(a, b) return a <= b end })[math.random(3)]\n"
        "  local d = table_differs('sort', logged(n, v), function(t) return { t, order } end)\n"
        "  assert(not d, d)\n"
        "end\n");
    run(*state, chunk);
}

/* The watchdog ------------------------------------------------------------------ */

static int kills;

/* What lua_host.c's time_limit_hook does, reduced. */
static void limit_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    if (!mw_watchdog_expired())
        return;
    kills++;
    luaL_error(L, "time limit exceeded");
}

static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs chunk as one call limited to 50 ms of CPU. Returns its error message
 * ("" when it ended well) and the CPU seconds it took in *took. */
static const char *run_limited(lua_State *L, const char *chunk, double *took)
{
    double start = cpu_seconds();
    int r;

    assert_int_equal(luaL_loadstring(L, chunk), LUA_OK);
    kills = 0;
    mw_watchdog_enter(L, 50);
    r = lua_pcall(L, 0, 0, 0);
    mw_watchdog_leave();
    *took = cpu_seconds() - start;
    return r == LUA_OK ? "" : lua_tostring(L, -1);
}

static void test_the_time_limit_stops_what_lua_ran_for_hours(void **state)
{
    lua_State *L = *state;
    static const char *const forever[] = {
        /* the issue's: 2^40 ways for the '?'s to fail */
        "string.find(string.rep('a', 40), string.rep('a?', 40) .. string.rep('a', 40))",
        "string.match(string.rep('a', 40), string.rep('a?', 40) .. string.rep('a', 40))",
        "string.gsub(string.rep('a', 40), string.rep('a?', 40) .. string.rep('a', 40), '')",
        "for m in string.gmatch(string.rep('a', 40), string.rep('a?', 40) .. 'b') do end",
        "string.find(string.rep('a', 30), string.rep('.-', 28) .. 'b')",
        /* O(n^2) balance scans, O(n^2) back references */
        "string.find(string.rep('(', 3e5), '%b()')",
        "string.find(string.rep('a', 3e5) .. 'c', '(a*)%1b')",
        /* a C loop without Lua code */
        "table.move({}, 1, 2^40, 2)",
        "table.insert(setmetatable({}, {__len = function() return 2^50 end}), 1, 0)",
        "table.remove(setmetatable({}, {__len = function() return 2^50 end}), 1)",
        "table.concat(setmetatable({}, {__index = table.concat}), '', 1, 2^40)",
        "table.sort(setmetatable({}, {__len = function() return 2^31 - 2 end,\n"
        "  __index = math.type}), math.type)",
    };
    double took;

    assert_rc(mw_watchdog_start(limit_hook), 0);
    for (size_t i = 0; i < NELEM(forever); i++) {
        const char *err = run_limited(L, forever[i], &took);
        if (strstr(err, "time limit exceeded") == NULL)
            fail_msg("%s: not stopped (%s)", forever[i], err);
        /* Stopped soon after its 50 ms: a check every few thousand steps. */
        if (took > 0.5)
            fail_msg("%s: stopped after %.3f s of CPU", forever[i], took);
        assert_true(kills >= 1);
        lua_pop(L, 1);
    }
    /* string.rep("", n) is not even slow now, and neither is a plain find
     * that was O(subject x pattern). */
    assert_string_equal(run_limited(L, "assert(string.rep('', 2^60, '') == '')", &took), "");
    assert_string_equal(run_limited(L,
                                    "local s = string.rep('a', 2e6)\n"
                                    "assert(s:find(string.rep('a', 1e5) .. 'b', 1, true) == nil)\n"
                                    "assert(s:find(string.rep('a', 1e5), 2, true) == 2)\n",
                                    &took),
                        "");
    /* Without a time limit they would run on: nothing is stopped early. */
    assert_string_equal(
        run_limited(L, "assert(not string.find(string.rep('a', 12), string.rep('a?', 12) .. 'b'))",
                    &took),
        "");
    mw_watchdog_stop();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_the_functions_are_replaced_everywhere_a_script_finds_them, setup, teardown),
        cmocka_unit_test_setup_teardown(test_find_returns_positions_and_captures, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_init_counts_from_the_end_when_negative_and_stops_past_the_end, setup, teardown),
        cmocka_unit_test_setup_teardown(test_anchors_hold_only_at_the_ends, setup, teardown),
        cmocka_unit_test_setup_teardown(test_balance_and_frontier, setup, teardown),
        cmocka_unit_test_setup_teardown(test_captures_positions_and_back_references, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_repetitions_greedy_lazy_and_optional, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gsub_replacements, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_matches_follow_the_5_4_rule, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors_read_like_lua, setup, teardown),
        cmocka_unit_test_setup_teardown(test_captures_stop_at_32, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_case_matches_lua_5_4, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rep_matches_lua_and_makes_nothing_of_nothing_at_once,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_table_functions_match_lua_call_for_call, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_the_time_limit_stops_what_lua_ran_for_hours, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
