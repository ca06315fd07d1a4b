"""Closing: the closing handshake in both directions, close codes seen by the
client and by on_close, conn methods after close, idle timeouts, and SIGTERM
draining."""
import asyncio
import signal
import socket
import time

import websockets

import httpraw
from conftest import port_open


def run(coro, timeout=30):
    return asyncio.run(asyncio.wait_for(coro, timeout=timeout))


CLOSE_APP = r"""
local mw = require "moonwire"
local app = {}

function app.on_message(conn, data, kind)
  if data == "close me" then
    conn:close(4000, "bye")
  elseif data == "close twice" then
    local ok = conn:close(4000, "bye")
    local a, b = conn:close(4001, "again")
    local c, d = conn:send("after close")
    mw.log.info("after close: first=%s second=%s,%s send=%s,%s open=%s",
                tostring(ok), tostring(a), tostring(b), tostring(c), tostring(d),
                tostring(conn:is_open()))
  else
    conn:send(data, kind)
  end
end

function app.on_close(conn, code, reason)
  mw.log.info("on_close %s code=%d reason=[%s]", conn.id, code, reason)
end

return app
"""

# Long enough that nothing in these tests closes because of it.
PATIENT = "return { limits = { close_timeout = 10 } }"


def start_close_app(start_server, tmp_script, config=PATIENT):
    return start_server(tmp_script(CLOSE_APP), config=config)


# Client-initiated close ---------------------------------------------------------------


def test_echoes_a_client_close_code_and_on_close_sees_it(start_server, tmp_script):
    srv = start_close_app(start_server, tmp_script)

    async def go():
        ws = await websockets.connect(srv.url)
        await ws.send("hi")
        assert await ws.recv() == "hi"
        await ws.close(code=4001, reason="done")
        return ws.close_code
    assert run(go()) == 4001
    srv.wait_log("code=4001 reason=[done]")


def test_echoes_the_close_code_in_a_close_frame_then_closes_tcp(start_server, tmp_script):
    srv = start_close_app(start_server, tmp_script)
    ws = httpraw.ws_connect(srv.port)
    try:
        ws.send_close(4001, b"done")
        fin, op, payload = ws.recv_frame()
        assert (fin, op) == (True, httpraw.OP_CLOSE)
        code, _ = httpraw.parse_close(payload)
        assert code == 4001, payload
        waited, rest = ws.wait_eof(timeout=3)
        assert rest == b"", "nothing may follow the close frame"
        assert waited < 2, f"TCP closed {waited:.2f}s after the close handshake"
    finally:
        ws.close()
    srv.wait_log("code=4001 reason=[done]")


def test_answers_a_close_without_code_with_an_empty_close_and_on_close_sees_1005(
        start_server, tmp_script):
    srv = start_close_app(start_server, tmp_script)
    ws = httpraw.ws_connect(srv.port)
    try:
        ws.send_text("hi")
        assert ws.recv_frame() == (True, httpraw.OP_TEXT, b"hi")
        ws.send_close()
        assert ws.recv_frame() == (True, httpraw.OP_CLOSE, b"")
        waited, rest = ws.wait_eof(timeout=3)
        assert rest == b""
        assert waited < 2
    finally:
        ws.close()
    srv.wait_log("code=1005 reason=[]")


# Server-initiated close --------------------------------------------------------------------


def test_conn_close_from_lua_reaches_the_client_with_code_and_reason(start_server, tmp_script):
    srv = start_close_app(start_server, tmp_script)

    async def go():
        ws = await websockets.connect(srv.url)
        await ws.send("close me")
        try:
            await asyncio.wait_for(ws.recv(), 5)
            raise AssertionError("a message arrived instead of the close")
        except websockets.exceptions.ConnectionClosed:
            pass
        await asyncio.wait_for(ws.wait_closed(), 5)
        return ws.close_code, ws.close_reason
    assert run(go()) == (4000, "bye")
    srv.wait_log("code=4000 reason=")


def test_closes_tcp_once_the_client_answers_the_servers_close(start_server, tmp_script):
    srv = start_close_app(start_server, tmp_script)
    ws = httpraw.ws_connect(srv.port)
    try:
        ws.send_text("close me")
        fin, op, payload = ws.recv_frame()
        assert op == httpraw.OP_CLOSE
        assert httpraw.parse_close(payload) == (4000, b"bye")
        ws.send_close(4000)
        waited, rest = ws.wait_eof(timeout=5)
        assert rest == b""
        assert waited < 2, f"TCP closed {waited:.2f}s after the close handshake"
    finally:
        ws.close()
    srv.wait_log("code=4000 reason=")


def test_a_second_close_and_a_send_after_close_return_nil_closed(start_server, tmp_script):
    srv = start_close_app(start_server, tmp_script)

    async def go():
        ws = await websockets.connect(srv.url)
        await ws.send("close twice")
        got = []
        try:
            while True:
                got.append(await asyncio.wait_for(ws.recv(), 5))
        except websockets.exceptions.ConnectionClosed:
            pass
        await asyncio.wait_for(ws.wait_closed(), 5)
        return got, ws.close_code, ws.close_reason
    got, code, reason = run(go())
    assert got == [], "nothing may be sent after conn:close()"
    assert (code, reason) == (4000, "bye")
    srv.wait_log("after close: first=true second=nil,closed send=nil,closed open=false")


def test_cuts_a_client_that_does_not_answer_the_servers_close_after_close_timeout(
        start_server, tmp_script):
    srv = start_close_app(start_server, tmp_script,
                          config="return { limits = { close_timeout = 0.5 } }")
    ws = httpraw.ws_connect(srv.port)
    try:
        ws.send_text("close me")
        start = time.monotonic()
        _, op, payload = ws.recv_frame()
        assert op == httpraw.OP_CLOSE
        assert httpraw.parse_close(payload) == (4000, b"bye")
        ws.wait_eof(timeout=4)
        waited = time.monotonic() - start
        assert 0.4 <= waited <= 2.5, f"cut after {waited:.2f}s, close_timeout is 0.5s"
    finally:
        ws.close()
    srv.wait_log(" code=")


# Idle timeout --------------------------------------------------------------------------------

IDLE_CONFIG = "return { limits = { idle_timeout = 0.3, ping_timeout = 0.3, close_timeout = 1 } }"


def test_closes_a_client_that_does_not_answer_pings_with_1001_and_keeps_one_that_does(
        start_server):
    srv = start_server("scripts/echo.lua", config=IDLE_CONFIG)

    def silent_peer():
        ws = httpraw.ws_connect(srv.port)
        start = time.monotonic()
        events = []
        try:
            while True:
                try:
                    _, op, payload = ws.recv_frame(timeout=5)
                except EOFError:
                    events.append(("eof", time.monotonic() - start))
                    break
                events.append((op, payload, time.monotonic() - start))
                if op == httpraw.OP_CLOSE:
                    ws.wait_eof(timeout=5)
                    events.append(("eof", time.monotonic() - start))
                    break
        finally:
            ws.close()
        return events

    async def go():
        async with websockets.connect(srv.url, ping_interval=None) as polite:
            events = await asyncio.to_thread(silent_peer)
            await asyncio.sleep(0.8)  # well past idle_timeout + ping_timeout again
            assert polite.open, f"the client that answers pings was closed ({polite.close_code})"
            await polite.send("still open")
            assert await asyncio.wait_for(polite.recv(), 5) == "still open"
            return events
    events = run(go())
    ops = [e[0] for e in events]
    assert ops[0] == httpraw.OP_PING, events
    assert 0.2 <= events[0][2] <= 1.5, f"first ping at {events[0][2]:.2f}s, idle_timeout 0.3s"
    closes = [e for e in events if e[0] == httpraw.OP_CLOSE]
    assert closes, f"no close frame: {events}"
    code, _ = httpraw.parse_close(closes[0][1])
    assert code == 1001, events
    assert closes[0][2] - events[0][2] >= 0.2, f"closed before ping_timeout: {events}"
    assert closes[0][2] <= 2.5, events
    assert ops[-1] == "eof", events


# SIGTERM ---------------------------------------------------------------------------------------


def test_sigterm_closes_every_client_with_1001_and_exits_0(start_server):
    srv = start_server("scripts/echo.lua", config="return { limits = { shutdown_timeout = 3 } }")

    async def go():
        clients = [await websockets.connect(srv.url) for _ in range(3)]
        for i, ws in enumerate(clients):
            await ws.send(f"hello {i}")
            assert await ws.recv() == f"hello {i}"
        start = time.monotonic()
        srv.signal(signal.SIGTERM)
        codes = []
        for ws in clients:
            try:
                await asyncio.wait_for(ws.recv(), 5)
                raise AssertionError("a message arrived instead of the close")
            except websockets.exceptions.ConnectionClosed:
                pass
            await asyncio.wait_for(ws.wait_closed(), 5)
            codes.append(ws.close_code)
        return codes, start
    codes, start = run(go())
    assert codes == [1001, 1001, 1001]
    code = srv.proc.wait(timeout=5)
    elapsed = time.monotonic() - start
    assert code == 0, srv.log()
    assert elapsed < 3, f"exit took {elapsed:.2f}s with every client answering"
    assert not port_open(srv.port), "the port still accepts after exit"
    with socket.socket() as s:
        s.settimeout(1)
        assert s.connect_ex(("127.0.0.1", srv.port)) != 0, "/healthz is still served"


def drain_with_a_stuck_client(start_server, config, limit):
    """SIGTERM with one client that never answers the close frame; returns the seconds
    until the client was cut and until the process exited."""
    srv = start_server("scripts/echo.lua", config=config)

    async def polite_client():
        ws = await websockets.connect(srv.url)
        await asyncio.wait_for(ws.wait_closed(), limit + 5)
        return ws.close_code

    async def go():
        polite = asyncio.ensure_future(polite_client())
        stuck = httpraw.ws_connect(srv.port)
        try:
            stuck.send_text("x")
            assert stuck.recv_frame() == (True, httpraw.OP_TEXT, b"x")
            await asyncio.sleep(0.1)
            start = time.monotonic()
            srv.signal(signal.SIGTERM)
            _, op, payload = await asyncio.to_thread(stuck.recv_frame, 5)
            assert op == httpraw.OP_CLOSE
            assert httpraw.parse_close(payload)[0] == 1001
            # The listener is gone while the drain waits for the stuck client.
            try:
                resp = await asyncio.to_thread(httpraw.get, srv.port, "/healthz", None, "GET", 1)
                assert resp.status == 503, resp
            except (ConnectionRefusedError, ConnectionResetError):
                pass
            await asyncio.to_thread(stuck.wait_eof, limit + 3)
            cut = time.monotonic() - start
        finally:
            stuck.close()
        assert await polite == 1001
        return start, cut
    start, cut = run(go())
    code = srv.proc.wait(timeout=limit + 5)
    exited = time.monotonic() - start
    assert code == 0, srv.log()
    assert not port_open(srv.port)
    return cut, exited


def test_sigterm_cuts_a_client_that_ignores_the_close_after_close_timeout(start_server):
    cut, exited = drain_with_a_stuck_client(
        start_server, "return { limits = { close_timeout = 0.5, shutdown_timeout = 5 } }", 0.5)
    assert 0.4 <= cut <= 2.0, f"cut after {cut:.2f}s, close_timeout is 0.5s"
    assert exited <= 3.0, f"exited after {exited:.2f}s"


def test_sigterm_cuts_a_client_that_ignores_the_close_after_shutdown_timeout(start_server):
    cut, exited = drain_with_a_stuck_client(
        start_server, "return { limits = { close_timeout = 30, shutdown_timeout = 0.8 } }", 0.8)
    assert 0.7 <= cut <= 2.5, f"cut after {cut:.2f}s, shutdown_timeout is 0.8s"
    assert exited <= 3.5, f"exited after {exited:.2f}s, shutdown_timeout is 0.8s"
