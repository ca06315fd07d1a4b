"""A field of the app that looks like a hook but is none (Ratchet's
app.onMessage, a typo such as app.on_mesage) is never called: moonwire warns
about it with the file and line, in --check, at start and at each reload,
and serves on with the hooks it has."""
import asyncio
import re
import signal
import subprocess

import websockets

from conftest import BIN, ROOT, wait_until

MISSPELLED = """\
local app = {}

function app.onMessage(conn, data)
  conn:send("camel: " .. data)
end

app.on_mesage = function(conn, data)
  conn:send("typo: " .. data)
end

function app.on_open(conn)
  conn:send("open")
end

app.helpers = {}
function app.format(s) return s end

return app
"""

WARNINGS = [
    "warn  app: {path}:3: app.onMessage is not a hook, so moonwire never calls it "
    "(did you mean on_message?)",
    "warn  app: {path}:7: app.on_mesage is not a hook, so moonwire never calls it "
    "(did you mean on_message?)",
]


def warnings_in(text):
    """The hook warnings of a log, without their timestamps, in order."""
    return [re.sub(r"^\S+ ", "", line) for line in text.splitlines() if "is not a hook" in line]


def test_check_warns_with_file_and_line_exits_0_and_says_so(tmp_path):
    path = tmp_path / "myapp.lua"
    path.write_text(MISSPELLED)
    p = subprocess.run([BIN, "--check", "--script", str(path)], cwd=ROOT, capture_output=True,
                       text=True, timeout=10)
    assert p.returncode == 0, p
    assert sorted(warnings_in(p.stderr)) == [w.format(path=path) for w in WARNINGS], p.stderr
    assert p.stdout == (f"moonwire: defaults and script {path} load, with 2 warnings about the "
                        "app (on stderr)\n")


def test_check_of_an_app_without_such_fields_says_ok_and_warns_nothing():
    for script in ("scripts/chat.lua", "scripts/echo.lua", "scripts/relay.lua", "scripts/rooms.lua"):
        p = subprocess.run([BIN, "--check", "--script", script], cwd=ROOT, capture_output=True,
                           text=True, timeout=10)
        assert p.returncode == 0, p
        assert p.stdout == f"moonwire: defaults and script {script} are OK\n"
        assert "warn" not in p.stderr, p.stderr


def test_check_warns_on_stderr_even_with_a_log_file(tmp_path):
    path = tmp_path / "myapp.lua"
    path.write_text(MISSPELLED)
    config = tmp_path / "moonwire.conf.lua"
    log = tmp_path / "moonwire.log"
    config.write_text(f'return {{ script = "{path}", log = {{ file = "{log}" }} }}\n')
    p = subprocess.run([BIN, "--check", "--config", str(config)], cwd=ROOT, capture_output=True,
                       text=True, timeout=10)
    assert p.returncode == 0, p
    assert len(warnings_in(p.stderr)) == 2, p.stderr
    assert not log.exists() or "is not a hook" not in log.read_text()


async def first_messages(url):
    async with websockets.connect(url, open_timeout=5) as ws:
        got = [await asyncio.wait_for(ws.recv(), 5)]
        await ws.send("hi")
        try:
            got.append(await asyncio.wait_for(ws.recv(), 0.5))
        except asyncio.TimeoutError:
            pass
        return got


def test_start_warns_and_serves_the_hooks_it_has(start_server, tmp_script):
    path = tmp_script(MISSPELLED, name="myapp.lua")
    srv = start_server(path)
    log = srv.wait_log("app.on_mesage is not a hook")
    assert sorted(warnings_in(log)) == [w.format(path=path) for w in WARNINGS], log
    # on_open runs; neither misspelled on_message does.
    assert asyncio.run(first_messages(srv.url)) == ["open"]


def test_reload_warns_about_the_new_app_and_it_serves(start_server, tmp_path):
    path = tmp_path / "myapp.lua"
    path.write_text("local app = {}\nfunction app.on_open(conn) conn:send('v1') end\nreturn app\n")
    srv = start_server(str(path))
    assert asyncio.run(first_messages(srv.url)) == ["v1"]
    assert "is not a hook" not in srv.log()
    path.write_text("local app = {}\nfunction app.on_open(conn) conn:send('v2') end\n"
                    "function app.OnClose(conn) end\nreturn app\n")
    srv.signal(signal.SIGHUP)
    log = srv.wait_log(f"reloaded {path}")
    assert warnings_in(log) == [
        f"warn  app: {path}:3: app.OnClose is not a hook, so moonwire never calls it "
        "(did you mean on_close?)"], log
    wait_until(lambda: asyncio.run(first_messages(srv.url)) == ["v2"], timeout=5,
               what="the reloaded app")
