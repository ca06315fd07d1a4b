"""The command line: --version, --help, flag and configuration errors (exit 2),
--check, several listen addresses, and a port already in use (exit 1)."""
import asyncio
import re
import socket
import subprocess

import pytest
import websockets

import httpraw
from conftest import BIN, ROOT, free_port, port_open, wait_until


def moonwire(*args, timeout=10):
    return subprocess.run([BIN, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def write_config(tmp_path, source, name="moonwire.conf.lua"):
    path = tmp_path / name
    path.write_text(source)
    return str(path)


def one_line(text):
    lines = [l for l in text.splitlines() if l.strip()]
    assert len(lines) == 1, f"expected a one-line message, got:\n{text}"
    return lines[0]


def has_ipv6_loopback():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


# --version / --help ----------------------------------------------------------------------------


def test_prints_the_version_and_exits_0():
    p = moonwire("--version")
    assert p.returncode == 0, p
    assert re.fullmatch(r"moonwire \d+\.\d+\.\d+\S*\n", p.stdout), p.stdout
    assert p.stderr == ""


def test_prints_help_and_exits_0():
    p = moonwire("--help")
    assert p.returncode == 0, p
    assert p.stdout.startswith("usage: moonwire"), p.stdout
    for flag in ("--config", "--script", "--listen", "--node-id", "--log-level", "--check",
                 "--version", "--help"):
        assert flag in p.stdout, f"{flag} missing from --help"
    assert p.stderr == ""


# Bad flags -------------------------------------------------------------------------------------


def test_an_unknown_flag_exits_2_naming_it():
    p = moonwire("--bogus-flag")
    assert p.returncode == 2, p
    assert "--bogus-flag" in one_line(p.stderr)
    assert p.stdout == ""


def test_an_unknown_short_flag_exits_2_naming_it():
    p = moonwire("-Z")
    assert p.returncode == 2, p
    assert "-Z" in one_line(p.stderr)


def test_a_flag_without_its_value_exits_2_naming_it():
    p = moonwire("--listen")
    assert p.returncode == 2, p
    assert "--listen" in one_line(p.stderr)


def test_an_unknown_log_level_exits_2_naming_it():
    p = moonwire("--log-level", "loud", "--check")
    assert p.returncode == 2, p
    assert "loud" in one_line(p.stderr)


def test_a_stray_argument_exits_2_naming_it():
    p = moonwire("--check", "stray.lua")
    assert p.returncode == 2, p
    assert "stray.lua" in one_line(p.stderr)


# Bad configuration -----------------------------------------------------------------------------

UNKNOWN_KEYS = [
    ("return { websocket = { pathz = { '/chat' } } }", "websocket.pathz"),
    ("return { limits = { idle_timout = 5 } }", "limits.idle_timout"),
    ("return { lua = { budget = 5 } }", "lua.budget"),
    ("return { listn = '127.0.0.1:1' }", "listn"),
]


@pytest.mark.parametrize("source,name", UNKNOWN_KEYS, ids=[k[1] for k in UNKNOWN_KEYS])
def test_a_config_with_an_unknown_key_exits_2_naming_section_key(tmp_path, source, name):
    path = write_config(tmp_path, source)
    p = moonwire("--config", path, "--script", "scripts/echo.lua", "--listen",
                 f"127.0.0.1:{free_port()}")
    assert p.returncode == 2, p
    line = one_line(p.stderr)
    assert f"'{name}'" in line, line


WRONG_TYPES = [
    ("return { limits = { idle_timeout = 'soon' } }", "limits.idle_timeout"),
    ("return { limits = { max_connections = -1 } }", "limits.max_connections"),
    ("return { limits = { max_connections = 1.5 } }", "limits.max_connections"),
    ("return { limits = { backpressure = 'maybe' } }", "limits.backpressure"),
    ("return { websocket = { paths = 5 } }", "websocket.paths"),
    ("return { websocket = { subprotocols = { 'a', 2 } } }", "websocket.subprotocols"),
    ("return { log = { level = 'loud' } }", "log.level"),
    ("return { http = { healthz = 'yes' } }", "http.healthz"),
    ("return { limits = 5 }", "limits"),
    ("return { script = 42 }", "script"),
]


@pytest.mark.parametrize("source,name", WRONG_TYPES, ids=[f"{k[1]}-{i}" for i, k in
                                                         enumerate(WRONG_TYPES)])
def test_a_config_value_of_the_wrong_type_exits_2_naming_it(tmp_path, source, name):
    path = write_config(tmp_path, source)
    p = moonwire("--config", path, "--script", "scripts/echo.lua", "--listen",
                 f"127.0.0.1:{free_port()}")
    assert p.returncode == 2, p
    line = one_line(p.stderr)
    assert f"'{name}'" in line, line


def test_a_config_file_with_a_syntax_error_exits_2_with_file_and_line(tmp_path):
    path = write_config(tmp_path, "return {\n  limits = { idle_timeout = 5 \n}\n",
                        name="broken.conf.lua")
    p = moonwire("--config", path, "--check")
    assert p.returncode == 2, p
    assert "broken.conf.lua:" in one_line(p.stderr), p.stderr


def test_a_config_file_that_does_not_exist_exits_2_naming_it(tmp_path):
    p = moonwire("--config", str(tmp_path / "nowhere.conf.lua"), "--check")
    assert p.returncode == 2, p
    assert "nowhere.conf.lua" in one_line(p.stderr), p.stderr


# --check ----------------------------------------------------------------------------------------

GOOD_CONFIG = """
return {
  websocket = { paths = { "/chat" }, subprotocols = { "chat.v1" }, max_message_size = 65536 },
  limits = { idle_timeout = 30, ping_timeout = 5, max_connections = 100 },
  lua = { time_limit = 0.1 },
  app = { greeting = "hi", rooms = { "lobby" } },
}
"""


def test_check_with_a_good_config_and_script_prints_ok_and_exits_0(tmp_path):
    path = write_config(tmp_path, GOOD_CONFIG)
    port = free_port()
    p = moonwire("--config", path, "--script", "scripts/relay.lua", "--check",
                 "--listen", f"127.0.0.1:{port}")
    assert p.returncode == 0, p
    assert "OK" in p.stdout, p.stdout
    assert "relay.lua" in p.stdout, p.stdout
    # --check does not start serving.
    with socket.socket() as s:
        s.settimeout(0.5)
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_check_with_a_broken_script_exits_non_zero_with_the_error(tmp_path):
    script = tmp_path / "broken_check.lua"
    script.write_text("local app = {}\nfunction app.on_message(c, d)\n  c:send(d\nend\nreturn app\n")
    path = write_config(tmp_path, GOOD_CONFIG)
    p = moonwire("--config", path, "--script", str(script), "--check")
    assert p.returncode != 0, p
    assert "broken_check.lua:4:" in p.stderr, p.stderr
    assert "OK" not in p.stdout


def test_check_with_a_script_that_returns_no_table_exits_non_zero(tmp_path):
    script = tmp_path / "not_an_app.lua"
    script.write_text("return 42\n")
    p = moonwire("--script", str(script), "--check")
    assert p.returncode != 0, p
    assert "not_an_app.lua" in p.stderr, p.stderr


def test_check_with_an_unknown_config_key_exits_2(tmp_path):
    path = write_config(tmp_path, "return { websocket = { pathz = {} } }")
    p = moonwire("--config", path, "--script", "scripts/echo.lua", "--check")
    assert p.returncode == 2, p
    assert "'websocket.pathz'" in one_line(p.stderr)


# Listening ----------------------------------------------------------------------------------------


def run(coro, timeout=30):
    return asyncio.run(asyncio.wait_for(coro, timeout=timeout))


def assert_serves(host, port):
    resp = httpraw.get(port, "/healthz", host=host)
    assert resp.status == 200 and resp.text.strip() == "ok", resp
    url_host = f"[{host}]" if ":" in host else host

    async def go():
        async with websockets.connect(f"ws://{url_host}:{port}/", open_timeout=5) as ws:
            await ws.send(f"via {host}")
            assert await asyncio.wait_for(ws.recv(), 5) == f"via {host}"
    run(go())


def test_serves_on_several_ipv4_listen_addresses(start_server):
    second = free_port()
    srv = start_server("scripts/echo.lua", args=["--listen", f"127.0.0.1:{second}"])
    assert_serves("127.0.0.1", srv.port)
    assert_serves("127.0.0.1", second)


def test_serves_on_an_ipv4_and_an_ipv6_listen_address(start_server):
    if not has_ipv6_loopback():
        pytest.skip("this machine has no ::1")
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        v6 = s.getsockname()[1]
    srv = start_server("scripts/echo.lua", args=["--listen", f"[::1]:{v6}"])
    assert_serves("127.0.0.1", srv.port)
    assert_serves("::1", v6)
    log = srv.log()
    assert f"[::1]:{v6}" in log, log


def test_listens_on_the_addresses_of_the_config_file(tmp_path):
    port = free_port()
    # --listen replaces the file's list; the harness passes one, so run by hand.
    path = write_config(tmp_path, f'return {{ listen = {{ "127.0.0.1:{port}" }} }}')
    proc = subprocess.Popen([BIN, "--config", path, "--script", "scripts/echo.lua"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: port_open(port) or proc.poll() is not None, timeout=10,
                   what="moonwire to listen")
        assert proc.poll() is None, proc.stdout.read()
        assert_serves("127.0.0.1", port)
    finally:
        proc.terminate()
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(timeout=5)
        proc.stdout.close()
    assert code == 0


def test_a_port_already_in_use_exits_1_with_a_message():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        p = moonwire("--script", "scripts/echo.lua", "--listen", f"127.0.0.1:{port}")
    assert p.returncode == 1, p
    line = one_line(p.stderr)
    assert f"127.0.0.1:{port}" in line, line
    assert "in use" in line.lower(), line


def test_a_second_address_in_use_exits_1_naming_it():
    first = free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        p = moonwire("--script", "scripts/echo.lua", "--listen", f"127.0.0.1:{first}",
                     "--listen", f"127.0.0.1:{port}")
    assert p.returncode == 1, p
    assert f"127.0.0.1:{port}" in p.stderr, p.stderr


def test_a_malformed_listen_address_is_refused_with_a_message():
    p = moonwire("--script", "scripts/echo.lua", "--listen", "localhost-8080")
    assert p.returncode in (1, 2), p
    assert "localhost-8080" in one_line(p.stderr), p.stderr


def test_a_host_name_in_listen_is_resolved_and_served(start_server):
    second = free_port()
    srv = start_server("scripts/echo.lua", args=["--listen", f"localhost:{second}"])
    assert_serves("localhost", second)
    log = srv.log()
    assert f"listening on localhost:{second}" in log, log
    assert "listen: localhost is " in log, log


@pytest.mark.parametrize("flag,value", [
    ("--listen", "local host:8080"),
    ("--listen", "1.2.3:8080"),
    ("--listen", "localhost:99999"),
    ("--listen-tls", "-bad.example:443"),
])
def test_a_bad_listen_flag_exits_2_naming_the_flag_not_the_config(flag, value):
    p = moonwire("--script", "scripts/echo.lua", flag, value, "--check")
    assert p.returncode == 2, p
    line = one_line(p.stderr)
    assert line.startswith(f"moonwire: {flag}: '{value}' is not HOST:PORT"), line
    assert "host name" in line, line


def test_a_listen_name_that_does_not_resolve_exits_1_saying_so():
    port = free_port()
    p = moonwire("--script", "scripts/echo.lua", "--listen", f"nosuch.invalid:{port}",
                 timeout=30)
    assert p.returncode == 1, p
    line = one_line(p.stderr)
    assert f"nosuch.invalid:{port}" in line and "cannot resolve 'nosuch.invalid'" in line, line


def test_queue_max_deliveries_is_checked(tmp_path):
    for value, ok in ((0, False), (1001, False), (1, True), (5, True)):
        path = write_config(tmp_path, "return { queue = { max_deliveries = %d } }" % value)
        p = moonwire("--config", path, "--script", "scripts/echo.lua", "--check")
        if ok:
            assert p.returncode == 0, p
        else:
            assert p.returncode == 2, p
            assert "'queue.max_deliveries' must be 1 to 1000" in one_line(p.stderr), p.stderr
