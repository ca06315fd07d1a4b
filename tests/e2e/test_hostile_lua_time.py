"""Hostile scripts against lua.time_limit (issue 12, finding 3).

Each case is a hook that used to run for hours inside one C function of Lua's
standard library, where the time limit's count hook never fires, blocking
every client: pattern matching that backtracks, a plain string.find that is
O(subject x pattern), string.rep of an empty string 2^60 times, table.move
over 2^40 slots, and the other table functions that loop in C. Now the hook
is stopped by lua.time_limit (on_error hears "time limit exceeded", its
connection is closed with 1011), or ends at once; a client that writes
meanwhile is answered within a bound; the process's memory stays bounded;
and the server still exits 0 on SIGTERM.

Against a build without the fix (the baseline) every case fails: the other
client's wait runs out, and so does the wait for the process to exit.
"""
import asyncio
import os
import signal
import time

import pytest
import websockets

from hostile import assert_served, metrics, rss_kib

TIME_LIMIT = 0.3  # seconds, the app's lua.time_limit
SANITIZED = os.environ.get("MW_SANITIZED") == "1"
# How long the other client may wait for its answer: the time limit, the
# error path and a loaded 2-core machine (and ASan, which is slower).
SERVED_WITHIN = 8.0 if SANITIZED else 4.0
# What a case may leave in RSS. The plain find makes a 10 MB and a 1 MB
# string (about 32 MB in a plain build, its buffers doubling on the way);
# under ASan the freed buffers stay in its quarantine (up to 256 MB), and the
# same case measured 86 to 101 MB.
RSS_GROWTH_KIB = (160 if SANITIZED else 96) * 1024

APP = """
local mw = require "moonwire"
local app = {}

-- A subject of 10 MB and a 1 MB pattern that almost matches everywhere:
-- Lua's plain find compares ~10^13 bytes.
local function plain_find()
  local s = string.rep("a", 10 * 1000 * 1000)
  local p = string.rep("a", 1000 * 1000) .. "b"
  return s:find(p, 1, true)
end

local forever = {
  -- the issue's: 2^40 ways for the a?s to fail
  backtrack = function()
    return string.find(string.rep("a", 40), string.rep("a?", 40) .. string.rep("a", 40))
  end,
  ["backtrack-gsub"] = function()
    return string.gsub(string.rep("a", 40), string.rep("a?", 40) .. "b", "")
  end,
  ["backtrack-gmatch"] = function()
    for _ in string.gmatch(string.rep("a", 40), string.rep(".-", 39) .. "b") do end
  end,
  -- inside a coroutine the app made (the host's count hook there never
  -- fires in C either), and one whose error a resume catches
  ["backtrack-coroutine"] = function()
    coroutine.wrap(function()
      return string.find(string.rep("a", 40), string.rep("a?", 40) .. string.rep("a", 40))
    end)()
  end,
  ["backtrack-resume"] = function()
    local co = coroutine.create(function()
      return string.match(string.rep("a", 40), string.rep("a?", 40) .. string.rep("a", 40))
    end)
    while true do coroutine.resume(co) end
  end,
  -- a %b scan from every start: O(n^2)
  balance = function() return string.find(string.rep("(", 1000000), "%b()") end,
  ["plain-find"] = function() while true do plain_find() end end,
  move = function() return table.move({}, 1, 2^40, 2) end,
  insert = function()
    table.insert(setmetatable({}, {__len = function() return 2^50 end}), 1, 0)
  end,
  remove = function()
    table.remove(setmetatable({}, {__len = function() return 2^50 end}), 1)
  end,
  concat = function()
    return table.concat(setmetatable({}, {__index = table.concat}), "", 1, 2^40)
  end,
  sort = function()
    table.sort(setmetatable({}, {__len = function() return 2^31 - 2 end,
                                 __index = math.type}), math.type)
  end,
}

function app.on_message(conn, data)
  if forever[data] then
    forever[data]()
    conn:send("finished:" .. data) -- never: the time limit stops it
  elseif data == "plain-find-once" then
    conn:send("plain-find:" .. tostring(plain_find()))
  elseif data == "rep" then
    conn:send("rep:" .. #string.rep("", 2^60) .. ":" .. #string.rep("", 2^60, ""))
  else
    conn:send(data)
  end
end

function app.on_error(conn, err)
  mw.log.warn("on_error called: %s", err)
  mw.broadcast("error-seen:" .. (err:match("time limit exceeded") and "time limit" or err))
end

return app
"""

CONFIG = f"""
return {{ lua = {{ time_limit = {TIME_LIMIT}, memory_limit = 256 * 1024 * 1024 }} }}
"""


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def stop_within(server, seconds):
    """SIGTERM; the process must exit 0 within seconds (then it is killed)."""
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    try:
        code = server.proc.wait(timeout=seconds)
    except Exception:
        code = None
    took = time.monotonic() - started
    assert code == 0, f"no exit 0 within {seconds}s of SIGTERM (took {took:.1f}s, {code}):\n" \
                      f"{server.log()[-3000:]}"


async def stopped_by_the_time_limit(server, trigger):
    """The hook of trigger is stopped; a client that writes meanwhile is
    answered within SERVED_WITHIN. Returns how long that client waited."""
    bad = await websockets.connect(server.url, close_timeout=1)
    good = await websockets.connect(server.url, close_timeout=1)
    await good.send("before")
    assert await asyncio.wait_for(good.recv(), 5) == "before"

    await bad.send(trigger)
    await asyncio.sleep(0.05)  # the hook is running now
    started = time.monotonic()
    await good.send("meanwhile")
    try:
        heard = await asyncio.wait_for(good.recv(), SERVED_WITHIN)
        assert heard == "error-seen:time limit", heard
        assert await asyncio.wait_for(good.recv(), SERVED_WITHIN) == "meanwhile"
    except asyncio.TimeoutError:
        raise AssertionError(f"{trigger}: the other client waited more than "
                             f"{SERVED_WITHIN}s: the loop is blocked") from None
    waited = time.monotonic() - started

    with pytest.raises(websockets.exceptions.ConnectionClosedError) as closed:
        while True:
            msg = await asyncio.wait_for(bad.recv(), SERVED_WITHIN)
            assert not msg.startswith("finished:"), msg
    assert closed.value.rcvd.code == 1011
    await good.close()
    return waited


PATTERN_CASES = ["backtrack", "backtrack-gsub", "backtrack-gmatch", "backtrack-coroutine",
                 "backtrack-resume", "balance", "plain-find"]
TABLE_CASES = ["move", "insert", "remove", "concat", "sort"]


def check_case(start_server, tmp_script, trigger):
    server = start_server(tmp_script(APP), config=CONFIG)
    rss_before = rss_kib(server.pid)
    kills_before = metrics(server)["moonwire_lua_budget_kills_total"]

    waited = run(stopped_by_the_time_limit(server, trigger))
    assert waited < SERVED_WITHIN
    assert "time limit exceeded (lua.time_limit = 300 ms)" in server.log()
    assert metrics(server)["moonwire_lua_budget_kills_total"] == kills_before + 1

    assert_served(server, message="still there?")
    growth = rss_kib(server.pid) - rss_before
    assert growth < RSS_GROWTH_KIB, f"RSS grew by {growth} KiB"
    stop_within(server, 10)


@pytest.mark.parametrize("trigger", PATTERN_CASES)
def test_a_pattern_function_that_would_run_for_hours_is_stopped(start_server, tmp_script,
                                                                 trigger):
    check_case(start_server, tmp_script, trigger)


@pytest.mark.parametrize("trigger", TABLE_CASES)
def test_a_table_function_that_would_loop_for_hours_is_stopped(start_server, tmp_script,
                                                               trigger):
    check_case(start_server, tmp_script, trigger)


def test_string_rep_of_nothing_and_a_plain_find_answer_at_once(start_server, tmp_script):
    """No longer slow at all: string.rep("", 2^60) is "" at once, and the plain
    find that compared ~10^13 bytes is linear (memmem)."""
    server = start_server(tmp_script(APP), config=CONFIG)

    async def go():
        async with websockets.connect(server.url, close_timeout=1) as c:
            started = time.monotonic()
            await c.send("rep")
            assert await asyncio.wait_for(c.recv(), SERVED_WITHIN) == "rep:0:0"
            await c.send("plain-find-once")
            assert await asyncio.wait_for(c.recv(), SERVED_WITHIN) == "plain-find:nil"
            return time.monotonic() - started
    took = run(go())
    assert took < SERVED_WITHIN
    assert metrics(server)["moonwire_lua_budget_kills_total"] == 0
    assert_served(server)
    stop_within(server, 10)
