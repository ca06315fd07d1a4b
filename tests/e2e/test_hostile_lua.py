"""Hostile input that reaches the Lua side, against the real binary: JSON nested
deep, an app that keeps everything until lua.memory_limit, hooks that try to
run out of lua.time_limit's reach, a hook stuck in C when SIGTERM comes. Each
case checks that the server lives, that a normal client is still served, and
that memory stays bounded."""
import asyncio
import json
import os
import shutil
import signal
import subprocess
import time

import pytest
import websockets

from conftest import ROOT, SANITIZED, Server, free_port, port_open, wait_until
from hostile import assert_served, metrics, rss_kib

CHAT_CONFIG = str(ROOT / "examples" / "chat" / "moonwire.conf.lua")


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def deep(depth, open_="[", close="]"):
    return open_ * depth + close * depth


# -- JSON nested deep -------------------------------------------------------------

async def chat_client(url, nick, room="lobby"):
    ws = await websockets.connect(f"{url}/chat?room={room}&nick={nick}", max_size=None)
    while True:  # welcome, nick_set, joined, history...: until the join is done
        msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
        if msg["type"] == "joined" and msg.get("nick") == nick:
            return ws


async def next_of(ws, kind, timeout=5):
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if msg["type"] == kind:
            return msg


@pytest.mark.parametrize("depth", [19, 100, 128, 129, 1000, 10000])
def test_json_nested_deep_gets_an_error_and_the_chat_goes_on(start_server, depth):
    """The shipped chat decodes every message: nesting up to the limit (128) is
    decoded and refused as not an object, deeper is refused as "too deep"; on
    4e65602 depth 100 aborted the process (free(): invalid next size)."""
    server = start_server(None, args=["--config", CHAT_CONFIG])

    async def go():
        ann = await chat_client(server.url, "ann")
        bob = await chat_client(server.url, "bob")
        for text in (deep(depth), '{"a":' * depth + "1" + "}" * depth):
            await ann.send(text)
            err = await next_of(ann, "error")
            # Within the limit: an array, or an object with no 'type'.
            assert err["code"] in ("bad_json", "missing_field"), err
            if depth > 128:
                assert err["message"] == "not valid JSON: too deep", err
        await ann.send(json.dumps({"type": "say", "text": "still here"}))
        said = await next_of(bob, "say")
        assert said["text"] == "still here"
        await ann.close()
        await bob.close()
    run(go())
    assert server.proc.poll() is None


JSON_APP = """
local mw = require "moonwire"
local app = {}
function app.on_message(conn, data)
  if data:sub(1, 7) == "encode:" then
    local n = tonumber(data:sub(8))
    local t = {}
    local cur = t
    for _ = 2, n do cur[1] = {}; cur = cur[1] end
    local s, err = mw.json.encode(t)
    return conn:send(s and ("ok " .. #s) or ("nil " .. tostring(err)))
  elseif data == "cycle" then
    local t = {}
    t[1] = t
    local s, err = mw.json.encode(t)
    return conn:send(tostring(s) .. " " .. tostring(err))
  end
  local v, err = mw.json.decode(data)
  if v == nil then return conn:send("nil " .. tostring(err)) end
  local depth, cur = 0, v
  while type(cur) == "table" do
    depth = depth + 1
    local _, first = next(cur)
    cur = first
  end
  conn:send("depth " .. depth .. " " .. math.type(cur or 0))
end
return app
"""


def test_json_depth_limit_is_128_both_ways(start_server, tmp_script):
    server = start_server(tmp_script(JSON_APP))

    async def go():
        async with websockets.connect(server.url, max_size=None) as ws:
            async def ask(text):
                await ws.send(text)
                return await asyncio.wait_for(ws.recv(), 5)
            assert await ask(deep(127, "[", "]").replace("[]", "[1]")) == "depth 127 integer"
            assert await ask("[" * 128 + "1.0" + "]" * 128) == "depth 128 integer"
            assert await ask(deep(129)) == "nil too deep"
            assert await ask('{"a":' * 129 + "1" + "}" * 129) == "nil too deep"
            wide = "[" + ",".join(["[[1]]"] * 20000) + "]"
            assert await ask(wide) == "depth 3 integer"
            assert await ask("encode:128") == "ok 256"
            assert await ask("encode:129") == "nil too deep"
            assert await ask("cycle") == "nil too deep"
    run(go())


@pytest.mark.skipif(SANITIZED or shutil.which("valgrind") is None,
                    reason="valgrind runs the plain build (Debian's liblua has no ASan)")
def test_json_and_request_tables_are_clean_under_valgrind(tmp_path, tmp_script):
    """ASan does not see into liblua: memcheck does. On 4e65602 this showed
    invalid writes from depth 19 (the conversion pushed without lua_checkstack)."""
    port = free_port()
    log = tmp_path / "valgrind.log"
    script = tmp_script(JSON_APP)
    cmd = ["valgrind", "--error-exitcode=99", "--errors-for-leak-kinds=definite",
           "--leak-check=full", f"--log-file={log}", os.environ.get("MW_BIN", str(ROOT / "build/moonwire")),
           "--listen", f"127.0.0.1:{port}", "--script", script, "--log-level", "warn"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: port_open(port) or proc.poll() is not None, timeout=60,
                   what="moonwire under valgrind to listen")
        assert proc.poll() is None, log.read_text()

        async def go():
            query = "&".join(f"k{i}=v{i}" for i in range(100))
            headers = {f"X-H{i}": "v" for i in range(30)}
            async with websockets.connect(f"ws://127.0.0.1:{port}/?{query}", max_size=None,
                                          extra_headers=headers, open_timeout=30) as ws:
                for depth in (19, 40, 100, 128, 129, 500):
                    await ws.send(deep(depth))
                    reply = await asyncio.wait_for(ws.recv(), 30)
                    assert reply == ("nil too deep" if depth > 128 else f"depth {depth} integer")
                await ws.send('{"a":' * 128 + "1" + "}" * 128)
                assert await asyncio.wait_for(ws.recv(), 30) == "depth 128 integer"
                await ws.send("encode:129")
                assert await asyncio.wait_for(ws.recv(), 30) == "nil too deep"
        run(go(), timeout=240)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
    report = log.read_text()
    assert code == 0, f"valgrind found errors (exit {code}):\n{report[-6000:]}"
    assert "Invalid write" not in report and "Invalid read" not in report, report[-6000:]


# -- lua.memory_limit -------------------------------------------------------------

KEEPER = """
local mw = require "moonwire"
local app = {}
local kept = {}
function app.on_message(conn, data)
  if data == "size" then
    return conn:send("kept " .. #kept)
  end
  kept[#kept + 1] = data           -- never lets go, until on_error
end
function app.on_error(conn, err)
  if err:find("not enough memory", 1, true) and FORGET then
    kept = {}                      -- what a well-behaved app does at the cap
    collectgarbage()
  end
end
return app
"""


@pytest.mark.parametrize("forget", [False, True])
def test_an_app_that_keeps_everything_hits_the_cap_and_the_server_lives(start_server, tmp_script,
                                                                         forget):
    """On 4e65602 the message string was made outside the protected call: at the
    cap the process died of SIGABRT. Now the hook fails, its connection is closed
    with 1011, and the server goes on; an app whose on_error lets go of what it
    kept serves everyone again."""
    source = KEEPER.replace("FORGET", "true" if forget else "false")
    server = start_server(tmp_script(source),
                          config="return { lua = { memory_limit = 24 * 1024 * 1024 } }")
    start_rss = rss_kib(server.pid)
    chunk = "x" * 60000

    async def go():
        closed = 0
        for _ in range(8):  # each client sends until the cap closes it
            ws = await websockets.connect(server.url, max_size=None)
            try:
                for _ in range(2000):
                    await ws.send(chunk + str(time.monotonic()))
                await asyncio.wait_for(ws.recv(), 10)
            except websockets.exceptions.ConnectionClosed as e:
                assert e.rcvd is not None and e.rcvd.code == 1011, e
                closed += 1
            else:
                raise AssertionError("a client was not closed at the cap")
            if forget:
                break
        return closed
    closed = run(go(), timeout=120)
    assert closed >= 1
    assert server.proc.poll() is None, server.log()
    m = metrics(server)
    assert m["moonwire_lua_memory_kills_total"] >= 1
    assert m["moonwire_lua_memory_bytes"] <= 25 * 1024 * 1024
    if forget:
        async def after():
            async with websockets.connect(server.url) as ws:
                await ws.send("size")
                return await asyncio.wait_for(ws.recv(), 5)
        assert run(after()) == "kept 0"
    assert rss_kib(server.pid) - start_rss < 200 * 1024
    assert "ran out of memory (lua.memory_limit)" in server.log()


# -- lua.time_limit: what used to escape it ---------------------------------------

ESCAPES = r"""
local mw = require "moonwire"
local app = {}
local loop = function() while true do end end
function app.on_message(conn, data)
  if data == "xpcall-handler" then
    xpcall(loop, loop)
  elseif data == "xpcall-in-a-loop" then
    while true do xpcall(loop, function(e) return e end) end
  elseif data == "gc" then
    setmetatable({}, { __gc = loop })
    collectgarbage()
  elseif data == "gc-false" then
    local mt = { __gc = false }
    setmetatable({}, mt)
    mt.__gc = loop
    collectgarbage()
  elseif data == "gc-of-a-file" then
    local f = io.open("/dev/null")
    local mt = debug.getmetatable(f)
    mt.__gc = loop
    f = nil
    collectgarbage()
  elseif data == "raw-coroutine" then
    -- coroutine.create's original, where an upvalue once kept it
    local create = select(2, debug.getupvalue(coroutine.create, 1)) or coroutine.create
    coroutine.resume(create(loop))
  elseif data == "unhooked-coroutine" then
    local co = coroutine.create(loop)
    pcall(debug.sethook, co)
    coroutine.resume(co)
  elseif data == "wrapped" then
    coroutine.wrap(function() coroutine.wrap(loop)() end)()
  elseif data == "close-handler" then
    local co = coroutine.create(function()
      local guard <close> = setmetatable({}, { __close = loop })
      coroutine.yield()
    end)
    coroutine.resume(co)
    coroutine.close(co)
  end
  conn:send("done " .. data)
end
function app.on_error(conn, err)
  mw.broadcast("error: " .. err:gsub("\n.*", ""))
end
return app
"""


@pytest.mark.parametrize("case,heard", [
    ("xpcall-handler", "time limit exceeded"),
    ("xpcall-in-a-loop", "time limit exceeded"),
    ("gc", "__gc metamethods are not available"),
    ("gc-false", "__gc metamethods are not available"),
    ("gc-of-a-file", "attempt to index a string value"),
    ("raw-coroutine", "time limit exceeded"),
    ("unhooked-coroutine", "time limit exceeded"),
    ("wrapped", "time limit exceeded"),
    ("close-handler", "time limit exceeded"),
])
def test_time_limit_reaches_every_hook(start_server, tmp_script, case, heard):
    """On 4e65602 each of these ran forever (100% CPU, every client blocked)."""
    server = start_server(tmp_script(ESCAPES),
                          config="return { lua = { time_limit = 0.2 }, limits = { shutdown_timeout = 2 } }")

    async def go():
        good = await websockets.connect(server.url)
        bad = await websockets.connect(server.url)
        started = time.monotonic()
        await bad.send(case)
        said = await asyncio.wait_for(good.recv(), 10)
        assert said.startswith("error: ") and heard in said, said
        with pytest.raises(websockets.exceptions.ConnectionClosedError) as closed:
            while True:
                await asyncio.wait_for(bad.recv(), 5)
        assert closed.value.rcvd.code == 1011
        await good.close()
        return time.monotonic() - started
    assert run(go(), timeout=30) < 10
    assert_served(server, message="hello", expect="done hello")


# -- SIGTERM always ends the process ----------------------------------------------

STUCK = """
local app = {}
function app.on_message(conn, data)
  if data == "sleep" then os.execute("sleep 60") end   -- blocked in C
  if data == "spin" then while true do end end          -- lua.time_limit = 0 below
  conn:send(data)
end
return app
"""


@pytest.mark.parametrize("case", ["sleep", "spin"])
def test_sigterm_ends_a_stuck_server_within_the_shutdown_timeout(tmp_script, case):
    """On 4e65602 SIGTERM did nothing while a hook was stuck. Exit status 1: it
    did not drain."""
    server = Server(tmp_script(STUCK), config="""
        return { lua = { time_limit = 0 }, limits = { shutdown_timeout = 1 } }
    """)
    try:
        stuck_server_stops(server, case)
    finally:
        server.kill()
        subprocess.run(["pkill", "-f", "sleep 60"], check=False)
    server.check_clean()


def stuck_server_stops(server, case):
    sock_url = server.url

    async def poke():
        ws = await websockets.connect(sock_url)
        await ws.send("hi")
        assert await asyncio.wait_for(ws.recv(), 5) == "hi"
        await ws.send(case)
        ws.transport.abort()  # no close handshake: the server can not answer one
    run(poke())
    time.sleep(0.3)
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    code = server.proc.wait(timeout=10)
    took = time.monotonic() - started
    assert took < 1 + 1, f"exit took {took:.2f}s"
    assert code == 1
    assert "did not stop within limits.shutdown_timeout (1000 ms)" in server.log()


def test_sigterm_still_drains_cleanly(start_server):
    server = start_server("scripts/echo.lua")
    assert_served(server)
    started = time.monotonic()
    assert server.stop() == 0
    assert time.monotonic() - started < 2
    assert "drained; exiting" in server.log()
