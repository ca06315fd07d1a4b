"""Hooks that wait on a node without a cluster, against the real binary with
Python's websockets: on_upgrade and on_message sleep (moonwire.sleep), the
messages of a connection keep their order, other clients are served
meanwhile, and a client that goes away while its on_upgrade waits is
forgotten. On a64bf5a a node alone ran its hooks as plain calls: every wait
raised "this can only wait in ..." (and moonwire.sleep did not exist)."""
import asyncio
import socket
import time

import pytest
import websockets

import rawws
from conftest import wait_until
from hostile import metrics
from httpraw import OP_CLOSE, OP_TEXT, RawWS, Response, connect, parse_close, read_head, \
    upgrade_bytes

APP = r"""
local mw = require "moonwire"
local app = {}
local log = {}
function app.on_upgrade(req)
  local secs = tonumber(req.query.sleep or "0")
  if secs > 0 then mw.sleep(secs) end
  if req.query.refuse then return false, 403, "refused after waiting" end
end
function app.on_open(conn, req)
  conn.data.name = req.query.name or "?"
  log[#log + 1] = "open " .. conn.data.name
end
function app.on_message(conn, data)
  if data == "log" then
    conn:send(table.concat(log, "|"))
    return
  end
  local secs = tonumber(data:match("^sleep (%S+)"))
  if secs then mw.sleep(secs) end
  conn:send(data)
end
return app
"""


def run(coro, timeout=30):
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture
def server(start_server, tmp_script):
    return start_server(tmp_script(APP))


def test_on_message_sleeps_order_kept_and_others_served(server):
    async def go():
        ann = await websockets.connect(f"{server.url}/?name=ann")
        bob = await websockets.connect(f"{server.url}/?name=bob")
        started = time.monotonic()
        for m in ("sleep 0.5", "one", "sleep 0.2", "two", "three"):
            await ann.send(m)
        # bob is answered at once while ann's hook sleeps
        await bob.send("hi")
        assert await asyncio.wait_for(bob.recv(), 2) == "hi"
        assert time.monotonic() - started < 0.45
        got = [await asyncio.wait_for(ann.recv(), 5) for _ in range(5)]
        assert got == ["sleep 0.5", "one", "sleep 0.2", "two", "three"]
        assert time.monotonic() - started >= 0.7
        await ann.close()
        await bob.close()
    run(go())


def test_on_upgrade_sleeps_then_accepts_while_others_are_served(server):
    async def go():
        started = time.monotonic()
        slow = asyncio.ensure_future(websockets.connect(f"{server.url}/?name=slow&sleep=0.6"))
        await asyncio.sleep(0.1)
        quick = await websockets.connect(f"{server.url}/?name=quick")
        await quick.send("hi")
        assert await asyncio.wait_for(quick.recv(), 2) == "hi"
        assert not slow.done()
        ws = await asyncio.wait_for(slow, 5)
        assert time.monotonic() - started >= 0.55
        await ws.send("after")
        assert await asyncio.wait_for(ws.recv(), 2) == "after"
        await ws.send("log")
        assert await asyncio.wait_for(ws.recv(), 2) == "open quick|open slow"
        await ws.close()
        await quick.close()
    run(go())


def test_on_upgrade_sleeps_then_refuses(server):
    async def go():
        with pytest.raises(websockets.exceptions.InvalidStatusCode) as e:
            await websockets.connect(f"{server.url}/?name=no&sleep=0.3&refuse=1")
        assert e.value.status_code == 403
    run(go())
    assert metrics(server)['moonwire_handshakes_total{result="app"}'] == 1


def test_a_client_that_goes_away_while_on_upgrade_waits_is_forgotten(server):
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    request = (f"GET /?name=gone&sleep=0.5 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\n\r\n").encode()
    # One hangs up cleanly (FIN), one is reset (RST).
    fin = socket.create_connection(("127.0.0.1", server.port))
    fin.sendall(request)
    rst = socket.create_connection(("127.0.0.1", server.port))
    rst.sendall(request)
    time.sleep(0.1)
    fin.shutdown(socket.SHUT_WR)
    rst.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    rst.close()
    time.sleep(0.7)  # both hooks have returned by now
    assert fin.recv(100) == b""  # closed without a 101
    fin.close()
    server.wait_log("the client went away while on_upgrade waited")

    async def go():
        ws = await websockets.connect(f"{server.url}/?name=probe")
        await ws.send("log")
        assert await asyncio.wait_for(ws.recv(), 2) == "open probe"
        await ws.close()
    run(go())
    # The one socket left is the /metrics request's own.
    wait_until(lambda: metrics(server)["moonwire_sockets"] == 1, what="no socket left")
    m = metrics(server)
    assert m["moonwire_lua_hooks_waiting"] == 0
    assert m['moonwire_handshakes_total{result="ok"}'] == 1  # the probe only


def test_frames_sent_before_the_101_reach_on_message_in_order(server):
    """A client may send frames right after its request: while on_upgrade
    waits they are kept, then handed to on_message in order."""
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    request = (f"GET /?name=eager&sleep=0.3 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\n\r\n").encode()

    def frame(text):
        data = text.encode()
        mask = b"\x01\x02\x03\x04"
        return bytes([0x81, 0x80 | len(data)]) + mask + bytes(
            b ^ mask[i % 4] for i, b in enumerate(data))

    s = socket.create_connection(("127.0.0.1", server.port))
    s.settimeout(3)
    s.sendall(request + frame("a"))
    time.sleep(0.05)
    s.sendall(frame("b") + frame("c"))
    buf = b""
    while buf.count(b"\x81\x01") < 3:
        chunk = s.recv(4096)
        assert chunk, buf
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    assert rest == b"\x81\x01a\x81\x01b\x81\x01c"
    s.close()


CLOSE_ON_OPEN = r"""
local mw = require "moonwire"
local app, closes = {}, {}
function app.on_upgrade(req) mw.sleep(0.3) end
function app.on_open(conn, req)
  if req.query.close then conn:close(4000, "bye") end
end
function app.on_message(conn, data) conn:send(table.concat(closes, ",")) end
function app.on_close(conn, code) closes[#closes + 1] = tostring(code) end
return app
"""


def test_on_open_closes_after_a_wait_and_the_frames_sent_before_the_101_end_it(start_server,
                                                                             tmp_script):
    """A client sent a frame before the 101 (kept while on_upgrade waited),
    and on_open closed the connection: the client's answer to the close frame
    is still read, so the closing handshake ends at once with on_open's code.
    On bea3870 reading stayed paused: the server waited close_timeout (10 s
    here) and on_close got 1006."""
    srv = start_server(tmp_script(CLOSE_ON_OPEN),
                       config="return { limits = { close_timeout = 10 } }")
    s = connect(srv.port)
    s.sendall(upgrade_bytes("/?close=1") + rawws.frame(OP_TEXT, b"early"))
    buf, end = read_head(s)
    ws = RawWS(s, Response(buf[:end + 4], end), buf[end + 4:])
    assert ws.response.status == 101
    fin, op, payload = ws.recv_frame()
    assert (op, parse_close(payload)) == (OP_CLOSE, (4000, b"bye"))
    ws.send_close(4000)
    waited, rest = ws.wait_eof(5)
    assert rest == b"" and waited < 5, "the server did not read the close frame's answer"
    ws.close()

    async def go():
        async with websockets.connect(srv.url + "/") as probe:
            await probe.send("closes")
            return await asyncio.wait_for(probe.recv(), 5)
    assert run(go()) == "4000"
