"""Hot reload with SIGHUP against the real binary: code swaps, state stays."""
import asyncio
import signal

import websockets

from conftest import wait_until

V1 = """
local mw = require "moonwire"
local app = {}
function app.on_open(conn) conn.data.n = 0; conn:subscribe("all") end
function app.on_message(conn, data)
  conn.data.n = conn.data.n + 1
  mw.state.total = (mw.state.total or 0) + 1
  mw.cache.set("last", data)
  conn:send("v1:" .. data .. ":" .. conn.data.n .. ":" .. mw.state.total)
end
return app
"""

V2 = """
local mw = require "moonwire"
local app = {}
function app.on_open(conn) conn.data.n = 0; conn:subscribe("all") end
function app.on_message(conn, data)
  conn.data.n = conn.data.n + 1
  mw.state.total = (mw.state.total or 0) + 1
  local reloaded = mw.state.reloaded and "yes" or "no"
  conn:send("v2:" .. data .. ":" .. conn.data.n .. ":" .. mw.state.total .. ":" ..
            tostring(mw.cache.get("last")) .. ":" .. reloaded .. ":" .. mw.subscribers("all"))
end
function app.on_reload(previous)
  mw.state.reloaded = type(previous.on_message) == "function"
end
return app
"""

BROKEN = "local app = {\nfunction app.on_message( -- syntax error on line 2\nreturn app\n"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=30))


def metric(server, name):
    import urllib.request
    text = urllib.request.urlopen(server.http + "/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return int(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_a_reload_changes_behaviour_and_keeps_connections_and_state(start_server, tmp_path):
    script = tmp_path / "app.lua"
    script.write_text(V1)
    server = start_server(str(script))

    async def go():
        a = await websockets.connect(server.url)
        b = await websockets.connect(server.url)
        await a.send("x")
        assert await a.recv() == "v1:x:1:1"
        script.write_text(V2)
        server.signal(signal.SIGHUP)
        server.wait_log("reloaded")
        await a.send("y")
        # conn.data, mw.state, the cache and subscriptions all survived.
        assert await a.recv() == "v2:y:2:2:x:yes:2"
        await b.send("z")
        assert await b.recv() == "v2:z:1:3:x:yes:2"
        await a.close()
        await b.close()
    run(go())
    assert metric(server, "moonwire_reloads_total") == 1
    assert metric(server, "moonwire_reload_failures_total") == 0


def test_a_broken_script_keeps_the_old_app_serving_and_is_logged_and_counted(start_server, tmp_path):
    script = tmp_path / "app.lua"
    script.write_text(V1)
    server = start_server(str(script))

    async def go():
        a = await websockets.connect(server.url)
        await a.send("x")
        assert await a.recv() == "v1:x:1:1"
        script.write_text(BROKEN)
        server.signal(signal.SIGHUP)
        log = server.wait_log("reload failed")
        assert "app.lua:" in log  # file and line of the syntax error
        await a.send("y")
        assert await a.recv() == "v1:y:2:2"
        # A fixed script reloads fine afterwards.
        script.write_text(V2)
        server.signal(signal.SIGHUP)
        wait_until(lambda: server.log().count("reloaded") >= 1, what="second reload")
        await a.send("z")
        assert (await a.recv()).startswith("v2:z:3:3")
        await a.close()
    run(go())
    assert metric(server, "moonwire_reloads_total") == 2
    assert metric(server, "moonwire_reload_failures_total") == 1


def test_a_reload_cancels_the_old_apps_timers(start_server, tmp_path):
    script = tmp_path / "app.lua"
    script.write_text("""
local mw = require "moonwire"
local app = {}
function app.on_start() mw.every(50, function() mw.broadcast("tick-v1") end) end
return app
""")
    server = start_server(str(script))

    async def go():
        a = await websockets.connect(server.url)
        assert await asyncio.wait_for(a.recv(), 5) == "tick-v1"
        script.write_text("""
local mw = require "moonwire"
local app = {}
function app.on_start() mw.every(50, function() mw.broadcast("tick-v2") end) end
return app
""")
        server.signal(signal.SIGHUP)
        server.wait_log("reloaded")
        # Drain whatever v1 sent before the reload, then only v2 ticks arrive.
        seen = []
        for _ in range(12):
            seen.append(await asyncio.wait_for(a.recv(), 5))
        assert seen[-6:] == ["tick-v2"] * 6, seen
        await a.close()
    run(go())


def test_check_loads_like_a_reload_and_reports_errors(tmp_path):
    import subprocess
    from conftest import BIN, ROOT
    good = tmp_path / "good.lua"
    good.write_text(V1)
    bad = tmp_path / "bad.lua"
    bad.write_text(BROKEN)
    ok = subprocess.run([BIN, "--check", "--script", str(good)], cwd=ROOT, capture_output=True,
                        text=True, timeout=10)
    assert ok.returncode == 0, ok.stderr
    fail = subprocess.run([BIN, "--check", "--script", str(bad)], cwd=ROOT, capture_output=True,
                          text=True, timeout=10)
    assert fail.returncode != 0
    assert "bad.lua:" in fail.stderr


CONFIG_APP = """
local mw = require "moonwire"
local app = {}
function app.on_message(conn, data)
  conn:send(tostring(mw.config.app.greeting) .. ":" .. tostring(mw.config.limits.max_buffered))
end
return app
"""


def test_a_reload_re_reads_the_configuration_file(start_server, tmp_path):
    script = tmp_path / "app.lua"
    script.write_text(CONFIG_APP)
    server = start_server(str(script), config="""
        return { app = { greeting = "hello" }, limits = { max_buffered = 100000 } }
    """)
    import pathlib
    config = pathlib.Path(server.tmp.name) / "moonwire.conf.lua"  # where the harness wrote it

    async def go():
        ws = await websockets.connect(server.url)
        await ws.send("?")
        assert await ws.recv() == "hello:100000"
        config.write_text('return { app = { greeting = "bonjour" }, '
                          'limits = { max_buffered = 200000 } }')
        server.signal(signal.SIGHUP)
        server.wait_log("reloaded")
        await ws.send("?")
        assert await ws.recv() == "bonjour:200000"
        # A file that does not load changes nothing, and the failure is counted.
        config.write_text('return { limits = { max_buffered = "lots" } }')
        server.signal(signal.SIGHUP)
        server.wait_log("reload failed")
        await ws.send("?")
        assert await ws.recv() == "bonjour:200000"
        await ws.close()
    run(go())
    assert metric(server, "moonwire_reload_failures_total") == 1
    assert "limits.max_buffered" in server.log()
