"""Limits and isolation against the real binary: a hook that loops forever,
one that allocates without end, and one that raises are each stopped, on_error
runs, that connection is closed with 1011, and other clients keep chatting
without a pause much longer than the time limit."""
import asyncio
import time
import urllib.request

import pytest
import websockets

from conftest import wait_until
from test_cluster import REDIS, Redis, cluster_up

APP = """
local mw = require "moonwire"
local app = {}
-- made while loading, before any hook runs
local spinner = coroutine.create(function() while true do end end)
function app.on_message(conn, data)
  if data == "loop" then
    while true do end
  elseif data == "pcall-loop" then
    while true do pcall(function() while true do end end) end
  elseif data == "coroutine-loop" then
    coroutine.wrap(function() while true do end end)()
  elseif data == "resume-loop" then
    -- resume catches the error inside the coroutine; the hook goes on
    while true do coroutine.resume(spinner) end
  elseif data == "busy" then
    local stop = os.clock() + 0.05
    while os.clock() < stop do end
  elseif data == "alloc" then
    local t = {}
    while true do t[#t + 1] = string.rep("x", 65536) .. #t end
  elseif data == "raise" then
    error("boom on purpose")
  elseif data == "keep-raise" then
    error("kept")
  end
  conn:send("echo:" .. data)
end
function app.on_error(conn, err)
  mw.log.warn("on_error called: %s", err)
  mw.broadcast("error-seen:" .. (err:match("boom on purpose") and "raise" or
                                 err:match("time limit") and "budget" or
                                 err:match("memory") and "memory" or
                                 err:match("kept") and "kept" or "other"))
  return err:match("kept") ~= nil
end
return app
"""

CONFIG = """
return {
  lua = { time_limit = 0.5, memory_limit = 16 * 1024 * 1024 },
}
"""


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=60))


def metrics(server):
    text = urllib.request.urlopen(server.http + "/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


@pytest.mark.parametrize("trigger,kind,counter", [
    ("loop", "budget", "moonwire_lua_budget_kills_total"),
    ("pcall-loop", "budget", "moonwire_lua_budget_kills_total"),
    ("coroutine-loop", "budget", "moonwire_lua_budget_kills_total"),
    ("resume-loop", "budget", "moonwire_lua_budget_kills_total"),
    ("alloc", "memory", "moonwire_lua_memory_kills_total"),
    ("raise", "raise", "moonwire_lua_errors_total"),
])
def test_a_runaway_hook_is_stopped_and_only_its_connection_closes(start_server, tmp_script,
                                                                   trigger, kind, counter):
    server = start_server(tmp_script(APP), config=CONFIG)

    async def go():
        bad = await websockets.connect(server.url)
        good = await websockets.connect(server.url)
        await good.send("before")
        assert await good.recv() == "echo:before"
        started = time.monotonic()
        await bad.send(trigger)
        # The good client hears about it through on_error's broadcast...
        assert await asyncio.wait_for(good.recv(), 10) == "error-seen:" + kind
        # ...and keeps chatting.
        await good.send("after")
        assert await asyncio.wait_for(good.recv(), 5) == "echo:after"
        elapsed = time.monotonic() - started
        with pytest.raises(websockets.exceptions.ConnectionClosedError) as closed:
            while True:
                await asyncio.wait_for(bad.recv(), 5)
        assert closed.value.rcvd.code == 1011
        await good.close()
        return elapsed
    elapsed = run(go())
    # Half a second of CPU, then the error path: far below 5 s, even with sanitizers.
    assert elapsed < 5, f"other clients waited {elapsed:.1f}s"
    assert metrics(server)[counter] >= 1
    log = server.log()
    assert "on_error called" in log
    if kind == "raise":
        assert "app1.lua:23: boom on purpose" in log  # file and line


def test_on_error_returning_true_keeps_the_connection(start_server, tmp_script):
    server = start_server(tmp_script(APP), config=CONFIG)

    async def go():
        c = await websockets.connect(server.url)
        await c.send("keep-raise")
        assert await c.recv() == "error-seen:kept"
        await c.send("still here")
        assert await c.recv() == "echo:still here"
        await c.close()
    run(go())


def test_a_hook_under_the_time_limit_runs_to_its_end(start_server, tmp_script):
    """50 ms of work against a limit of 500 ms: not stopped, nothing counted."""
    server = start_server(tmp_script(APP), config=CONFIG)

    async def go():
        c = await websockets.connect(server.url)
        for _ in range(3):
            await c.send("busy")
            assert await asyncio.wait_for(c.recv(), 10) == "echo:busy"
        await c.close()
    run(go())
    assert metrics(server)["moonwire_lua_budget_kills_total"] == 0


CLUSTER_APP = """
local mw = require "moonwire"
local app = {}
function app.on_message(conn, data)
  if data == "loop" then
    while true do end
  elseif data == "wait-then-loop" then
    mw.redis("PING")  -- the hook waits for Redis, and is resumed by its reply
    while true do end
  end
  conn:send("echo:" .. data)
end
function app.on_error(conn, err)
  mw.broadcast("error-seen:" .. (err:match("time limit") and "budget" or "other"))
end
return app
"""


@pytest.mark.skipif(REDIS is None, reason="redis-server is not installed")
@pytest.mark.parametrize("trigger", ["loop", "wait-then-loop"])
def test_with_a_backplane_hooks_run_as_coroutines_under_the_same_limit(start_server, tmp_script,
                                                                        trigger):
    redis = Redis()
    try:
        server = start_server(tmp_script(CLUSTER_APP), args=["--redis", redis.url],
                              config="return { lua = { time_limit = 0.2 } }")
        wait_until(lambda: cluster_up(server), timeout=10, what="cluster up")

        async def go():
            bad = await websockets.connect(server.url)
            good = await websockets.connect(server.url)
            await bad.send(trigger)
            assert await asyncio.wait_for(good.recv(), 10) == "error-seen:budget"
            await good.send("after")
            assert await asyncio.wait_for(good.recv(), 5) == "echo:after"
            with pytest.raises(websockets.exceptions.ConnectionClosedError) as closed:
                while True:
                    await asyncio.wait_for(bad.recv(), 5)
            assert closed.value.rcvd.code == 1011
            await good.close()
        run(go())
        assert metrics(server)["moonwire_lua_budget_kills_total"] == 1
    finally:
        redis.stop()
