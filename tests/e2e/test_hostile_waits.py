"""Hostile use of hooks that wait, against the real binary on a node alone:
a crowd of upgrades whose on_upgrade sleeps (more than lua.max_waiting),
each hanging up while it waits; a client that floods messages while its
on_message sleeps. Each case checks that a normal websockets client is still
served, that nothing is left waiting, and that RSS stayed bounded."""
import asyncio
import socket
import time

import websockets

from conftest import wait_until
from hostile import assert_served, metrics, rss_kib

APP = r"""
local mw = require "moonwire"
local app = {}
function app.on_upgrade(req)
  local secs = tonumber(req.query.sleep or "0")
  if secs > 0 then mw.sleep(secs) end
end
function app.on_message(conn, data)
  local secs = tonumber(data:match("^sleep (%S+)"))
  if secs then mw.sleep(secs) end
  conn:send(data)
end
return app
"""

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def upgrade_request(path):
    return (f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n").encode()


def test_a_crowd_of_waiting_upgrades_that_hang_up(start_server, tmp_script):
    """300 upgrades sleep in on_upgrade with lua.max_waiting = 100: 100 wait,
    the others get 500 at once (counted as refused waits); all hang up
    while waiting. Nothing is left waiting and memory stays bounded."""
    server = start_server(tmp_script(APP), config="return { lua = { max_waiting = 100 } }")
    assert_served(server)
    before = rss_kib(server.pid)
    socks = []
    for _ in range(300):
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(upgrade_request("/?sleep=0.5"))
        socks.append(s)
    # A normal client is served while the hooks wait.
    assert_served(server)
    wait_until(lambda: metrics(server)["moonwire_lua_wait_refusals_total"] >= 200,
               what="the waits past lua.max_waiting refused")
    m = metrics(server)
    assert m["moonwire_lua_hooks_waiting"] <= 100
    for s in socks:
        s.close()
    wait_until(lambda: metrics(server)["moonwire_lua_hooks_waiting"] == 0, timeout=5,
               what="every sleeping on_upgrade to end")
    wait_until(lambda: metrics(server)["moonwire_sockets"] == 1, what="every socket closed")
    m = metrics(server)
    assert m['moonwire_handshakes_total{result="error"}'] == 200
    assert m['moonwire_handshakes_total{result="ok"}'] >= 1  # assert_served's only
    assert "lua.max_waiting (100) hooks wait already" in server.log()
    assert_served(server)
    assert rss_kib(server.pid) - before < 20 * 1024


def test_a_flood_behind_a_sleeping_on_message_is_held_in_order(start_server, tmp_script):
    """While its on_message sleeps, a client sends 2000 messages of 1 KiB: they
    are held (reading stops past limits.max_buffered) and answered in order
    afterwards; another client is served meanwhile."""
    server = start_server(tmp_script(APP),
                          config="return { limits = { max_buffered = 262144 } }")
    before = rss_kib(server.pid)

    async def go():
        ws = await websockets.connect(server.url, max_size=None)
        await ws.send("sleep 1")
        pad = "x" * 1024
        sent = [f"{i} {pad}" for i in range(2000)]

        async def flood():
            for m in sent:
                await ws.send(m)
        flooding = asyncio.ensure_future(flood())
        await asyncio.sleep(0.3)
        await asyncio.get_running_loop().run_in_executor(None, assert_served, server)
        assert await asyncio.wait_for(ws.recv(), 5) == "sleep 1"
        got = [await asyncio.wait_for(ws.recv(), 10) for _ in sent]
        assert got == sent
        await flooding
        await ws.close()
    asyncio.run(asyncio.wait_for(go(), 60))
    assert metrics(server)["moonwire_lua_hooks_waiting"] == 0
    assert_served(server)
    assert rss_kib(server.pid) - before < 20 * 1024
