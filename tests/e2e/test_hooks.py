"""Hooks that fail: a raising hook is logged with file:line, on_error runs, the
connection closes with 1011 unless on_error keeps it, and nothing else
breaks. Also: a script that does not load, and conn objects held after close."""
import asyncio
import subprocess

import websockets

from conftest import BIN, ROOT, free_port


def run(coro, timeout=30):
    return asyncio.run(asyncio.wait_for(coro, timeout=timeout))


def line_of(source, text):
    """The 1-based line number of the first line of source holding text."""
    for n, line in enumerate(source.split("\n"), 1):
        if text in line:
            return n
    raise AssertionError(f"{text!r} not in the source")


async def recv(ws):
    return await asyncio.wait_for(ws.recv(), 5)


async def closed_code(ws):
    """Waits for ws to be closed by the server; returns the close code."""
    try:
        while True:
            got = await asyncio.wait_for(ws.recv(), 5)
            raise AssertionError(f"a message arrived instead of the close: {got!r}")
    except websockets.exceptions.ConnectionClosed:
        pass
    await asyncio.wait_for(ws.wait_closed(), 5)
    return ws.close_code


# on_message raising ------------------------------------------------------------------------

RAISING_APP = """local mw = require "moonwire"
local app = {}

function app.on_message(conn, data, kind)
  if data == "boom" then
    error("boom requested by " .. conn.id)
  end
  mw.broadcast(data, { except = conn })
end

function app.on_error(conn, err)
  mw.log.warn("on_error saw: %s", err)
  mw.broadcast("error seen for " .. (conn and conn.id or "nil"), { except = conn })
  return KEEP
end

return app
"""


def raising_app(tmp_script, keep):
    return tmp_script(RAISING_APP.replace("KEEP", "true" if keep else "false"),
                      name="raising_app.lua")


def test_a_raising_on_message_closes_with_1011_logs_file_and_line_and_calls_on_error(
        start_server, tmp_script):
    srv = start_server(raising_app(tmp_script, keep=False))
    line = line_of(RAISING_APP, 'error("boom requested')

    async def go():
        a, b, c = [await websockets.connect(srv.url) for _ in range(3)]
        await a.send("warm up")
        assert await recv(b) == "warm up"
        assert await recv(c) == "warm up"
        await a.send("boom")
        assert await closed_code(a) == 1011
        notice_b, notice_c = await recv(b), await recv(c)
        assert notice_b == notice_c and notice_b.startswith("error seen for "), notice_b
        # The others keep chatting.
        await b.send("still chatting")
        assert await recv(c) == "still chatting"
        await c.send("me too")
        assert await recv(b) == "me too"
        await b.close()
        await c.close()
        return notice_b[len("error seen for "):]
    failed_id = run(go())
    log = srv.wait_log("on_error saw:")
    assert f"raising_app.lua:{line}: boom requested by {failed_id}" in log, log
    errors = [l for l in log.splitlines() if " error " in l and "on_message" in l]
    assert errors, f"the failure is not logged at error level:\n{log}"
    assert f"raising_app.lua:{line}:" in errors[0], errors


def test_on_error_returning_true_keeps_the_connection_open(start_server, tmp_script):
    srv = start_server(raising_app(tmp_script, keep=True))

    async def go():
        a, b = [await websockets.connect(srv.url) for _ in range(2)]
        await a.send("boom")
        assert (await recv(b)).startswith("error seen for ")
        await a.send("after the error")
        assert await recv(b) == "after the error"
        await b.send("back to a")
        assert await recv(a) == "back to a"
        assert a.open
        await a.close()
        await b.close()
        return a.close_code
    assert run(go()) == 1000
    srv.wait_log("on_error saw:")


# on_open / on_close raising -------------------------------------------------------------------

OPEN_RAISES = """local mw = require "moonwire"
local app = {}
function app.on_open(conn, req)
  if req.query.fail then
    error("cannot open this one")
  end
end
function app.on_message(conn, data) conn:send(data) end
function app.on_error(conn, err)
  mw.log.warn("on_error saw: %s", err)
end
return app
"""


def test_an_on_open_that_raises_closes_with_1011(start_server, tmp_script):
    srv = start_server(tmp_script(OPEN_RAISES, name="open_raises.lua"))
    line = line_of(OPEN_RAISES, 'error("cannot open')

    async def go():
        ws = await websockets.connect(srv.url + "/?fail=1")
        assert await closed_code(ws) == 1011
        async with websockets.connect(srv.url + "/") as ok:
            await ok.send("fine")
            assert await recv(ok) == "fine"
    run(go())
    log = srv.wait_log("on_error saw:")
    assert f"open_raises.lua:{line}: cannot open this one" in log, log


CLOSE_RAISES = """local mw = require "moonwire"
local app = {}
function app.on_message(conn, data) conn:send(data) end
function app.on_close(conn, code, reason)
  error("on_close failed for code " .. code)
end
function app.on_error(conn, err)
  mw.log.warn("on_error saw: %s", err)
end
return app
"""


def test_an_on_close_that_raises_is_logged_and_nothing_else_breaks(start_server, tmp_script):
    srv = start_server(tmp_script(CLOSE_RAISES, name="close_raises.lua"))
    line = line_of(CLOSE_RAISES, 'error("on_close failed')

    async def go():
        other = await websockets.connect(srv.url)
        ws = await websockets.connect(srv.url)
        await ws.send("x")
        assert await recv(ws) == "x"
        await ws.close(4002, "leaving")
        assert ws.close_code == 4002
        await other.send("still echoing")
        assert await recv(other) == "still echoing"
        await asyncio.sleep(0.1)
        assert other.open
        await other.close()
        return other.close_code
    assert run(go()) == 1000
    log = srv.wait_log("on_close failed for code 1000")
    assert f"close_raises.lua:{line}: on_close failed for code 4002" in log, log
    assert srv.stop() == 0


# Scripts that do not load -------------------------------------------------------------------

SYNTAX_ERROR = """local app = {}
function app.on_message(conn, data)
  conn:send(data
end
return app
"""


def test_a_script_with_a_syntax_error_makes_the_server_exit_1_with_file_and_line(tmp_script):
    path = tmp_script(SYNTAX_ERROR, name="broken_app.lua")
    port = free_port()
    proc = subprocess.run([BIN, "--script", path, "--listen", f"127.0.0.1:{port}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=10)
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "broken_app.lua:4:" in proc.stderr, proc.stderr


def test_a_script_that_raises_while_loading_makes_the_server_exit_1(tmp_script):
    source = 'local x = nil\nreturn { on_message = x.y }\n'
    path = tmp_script(source, name="raises_at_load.lua")
    proc = subprocess.run([BIN, "--script", path, "--listen", f"127.0.0.1:{free_port()}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=10)
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "raises_at_load.lua:2:" in proc.stderr, proc.stderr


def test_a_missing_script_makes_the_server_exit_1_naming_it(tmp_path):
    path = str(tmp_path / "no_such_app.lua")
    proc = subprocess.run([BIN, "--script", path, "--listen", f"127.0.0.1:{free_port()}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=10)
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "no_such_app.lua" in proc.stderr, proc.stderr


# Held conn objects -----------------------------------------------------------------------------

HOLDING_APP = """local mw = require "moonwire"
local app = {}
local held = {}

function app.on_open(conn, req)
  conn.data.name = req.query.name
end

function app.on_close(conn, code, reason)
  held[#held + 1] = conn
  mw.timer(100, function()
    local s1, s2 = conn:send("too late")
    local c1, c2 = conn:close(4000, "again")
    local report = string.format(
      "held: name=%s send=%s,%s close=%s,%s open=%s id_ok=%s str=%s",
      tostring(conn.data.name), tostring(s1), tostring(s2),
      tostring(c1), tostring(c2), tostring(conn:is_open()),
      tostring(type(conn.id) == "string" and #conn.id > 0),
      tostring(conn):match("closed") and "closed" or tostring(conn))
    mw.log.info("%s", report)
    mw.broadcast(report)
  end)
end

function app.on_message(conn, data)
  if data == "count" then
    conn:send("held=" .. #held .. " count=" .. mw.count())
  end
end

return app
"""


def test_a_conn_held_after_close_is_safe_and_reports_closed(start_server, tmp_script):
    srv = start_server(tmp_script(HOLDING_APP))

    async def go():
        watcher = await websockets.connect(srv.url + "/?name=watcher")
        leaver = await websockets.connect(srv.url + "/?name=leaver")
        await leaver.close()
        report = await recv(watcher)
        dropper = await websockets.connect(srv.url + "/?name=dropper")
        dropper.transport.abort()
        report2 = await recv(watcher)
        await watcher.send("count")
        count = await recv(watcher)
        await watcher.close()
        return report, report2, count
    report, report2, count = run(go())
    expected = ("held: name=leaver send=nil,closed close=nil,closed open=false id_ok=true "
                "str=closed")
    assert report == expected
    assert report2 == expected.replace("leaver", "dropper")
    assert count == "held=2 count=1"
