"""Write-queue bounds against the real binary: a subscriber that never reads
must not grow the server's memory past max_buffered, whichever the policy."""
import asyncio
import os
import socket
import urllib.request

import pytest
import websockets

from conftest import SANITIZED, wait_until
from httpraw import accept_for

APP = """
local mw = require "moonwire"
local app = {}
local payload = string.rep("x", 10000)
function app.on_open(conn) conn:subscribe("firehose") end
function app.on_message(conn, data)
  local n = tonumber(data)
  local delivered = 0
  for i = 1, n do
    delivered = delivered + mw.publish("firehose", payload, { except = conn })
  end
  conn:send("published " .. n .. " delivered " .. delivered .. " buffered-by-me " ..
            tostring(conn:buffered()))
end
return app
"""


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def metrics(server):
    text = urllib.request.urlopen(server.http + "/metrics", timeout=5).read().decode()
    return {l.rsplit(" ", 1)[0]: float(l.rsplit(" ", 1)[1])
            for l in text.splitlines() if l and not l.startswith("#")}


def stalled_subscriber(port):
    """A client that upgrades and then never reads, with a tiny receive buffer."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    s.sendall(("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101") and accept_for(key).encode() in head
    return s


@pytest.mark.parametrize("policy", ["close", "drop"])
def test_a_subscriber_that_never_reads_does_not_grow_memory(start_server, tmp_script, policy):
    server = start_server(tmp_script(APP), config=f"""
        return {{ limits = {{ max_buffered = 1024 * 1024, backpressure = "{policy}" }} }}
    """)
    slow = stalled_subscriber(server.port)
    wait_until(lambda: metrics(server)["moonwire_connections"] == 1, what="the subscriber")

    async def go():
        async with websockets.connect(server.url) as fast:
            before = rss_kib(server.pid)
            # 3000 messages of 10 kB: 30 MB for a reader that takes none of it.
            for _ in range(3):
                await fast.send("1000")
                reply = await asyncio.wait_for(fast.recv(), 20)
                assert reply.startswith("published 1000")
            after = rss_kib(server.pid)
            return before, after
    before, after = asyncio.run(asyncio.wait_for(go(), 60))
    m = metrics(server)
    if policy == "close":
        assert m["moonwire_backpressure_closes_total"] == 1
        assert m['moonwire_closes_total{code="1008"}'] == 1
    else:
        assert m["moonwire_backpressure_drops_total"] > 2000
        assert m["moonwire_backpressure_closes_total"] == 0
        assert m["moonwire_connections"] == 1  # the fast one left; the slow one is still there
    if not SANITIZED:  # ASan's quarantine holds freed memory on purpose
        grown_mib = (after - before) / 1024
        assert grown_mib < 12, f"RSS grew by {grown_mib:.1f} MiB for a 1 MiB bound"
    slow.close()
