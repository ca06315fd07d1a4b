"""Hostile backends for moonwire.http.request: what a hook's call may meet
on the network. An answer that never ends, one that drips a byte at a time,
one header line of megabytes, a peer that takes the connection and says
nothing, and a flood of calls. Each case checks that the call ends with a
clear error within its bound, that a normal websockets client is still
served, and that the server's memory stayed bounded.

With a backplane configured: on_message waits there today (see
test_http_client.py)."""
import asyncio
import json
import socket
import threading
import time

import pytest
import websockets

from conftest import wait_until
from hostile import assert_served, metrics, rss_kib
from test_cluster import REDIS, Redis, cluster_up

pytestmark = pytest.mark.skipif(REDIS is None, reason="redis-server is not installed")

APP = """
local mw = require "moonwire"
local app = {}
function app.on_message(conn, data)
  local req = mw.json.decode(data)
  if type(req) ~= "table" then return conn:send(data) end
  local res, err = mw.http.request(req)
  conn:send(res and ("status " .. res.status .. " " .. #res.body) or ("err " .. err))
end
return app
"""

CONFIG = "return { http_client = { max_response = 262144, max_concurrent = 16 } }"


class RawBackend:
    """A TCP server on a free port whose every connection gets behave(sock)."""

    def __init__(self, behave):
        self.behave = behave
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/"
        self.stopping = False
        self.threads = []
        self.accepter = threading.Thread(target=self.accept, daemon=True)
        self.accepter.start()

    def accept(self):
        while not self.stopping:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                continue
            t = threading.Thread(target=self.serve, args=(sock,), daemon=True)
            t.start()
            self.threads.append(t)

    def serve(self, sock):
        try:
            sock.recv(65536)
            self.behave(sock, self)
        except OSError:
            pass
        finally:
            sock.close()

    def stop(self):
        self.stopping = True
        self.accepter.join(5)
        for t in self.threads:
            t.join(5)
        self.listener.close()


def endless(sock, backend):
    sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
    deadline = time.monotonic() + 20
    while not backend.stopping and time.monotonic() < deadline:
        sock.sendall(chunk)


def drip(sock, backend):
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
    deadline = time.monotonic() + 20
    while not backend.stopping and time.monotonic() < deadline:
        sock.sendall(b"x")
        time.sleep(0.05)


def huge_header(sock, backend):
    sock.sendall(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (8 << 20) + b"\r\nContent-Length: 0\r\n\r\n")


def silent(sock, backend):
    deadline = time.monotonic() + 20
    while not backend.stopping and time.monotonic() < deadline:
        time.sleep(0.05)


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture
def node(start_server, tmp_script):
    redis = Redis()
    server = start_server(tmp_script(APP), args=["--redis", redis.url], config=CONFIG)
    wait_until(lambda: cluster_up(server), timeout=10, what="cluster up")
    yield server
    redis.stop()


@pytest.mark.parametrize("behave,timeout,expect", [
    (endless, 10, "err response too large"),
    (huge_header, 10, "err response too large"),
    (drip, 1.5, "err timeout"),
    (silent, 1.5, "err timeout"),
])
def test_a_hostile_backend_ends_the_call_clearly(node, behave, timeout, expect):
    backend = RawBackend(behave)
    try:
        before = rss_kib(node.pid)

        async def go():
            async with websockets.connect(node.url) as ws:
                for _ in range(3):
                    started = time.monotonic()
                    await ws.send(json.dumps({"url": backend.url, "timeout": timeout}))
                    assert await asyncio.wait_for(ws.recv(), timeout + 10) == expect
                    assert time.monotonic() - started < timeout + 2
        run(go())
        assert_served(node)
        # The refused bytes were let go: at most a few max_response of growth.
        assert rss_kib(node.pid) - before < 16 * 1024, (before, rss_kib(node.pid))
    finally:
        backend.stop()


def test_a_flood_of_calls_is_held_to_max_concurrent(node):
    backend = RawBackend(silent)
    try:
        before = rss_kib(node.pid)

        async def go():
            clients = [await websockets.connect(node.url) for _ in range(64)]
            for ws in clients:
                await ws.send(json.dumps({"url": backend.url, "timeout": 2}))
            await asyncio.sleep(0.5)
            # The loop serves a normal client while the calls wait.
            async with websockets.connect(node.url) as other:
                t0 = time.monotonic()
                await other.send("hello")
                assert await asyncio.wait_for(other.recv(), 5) == "hello"
                assert time.monotonic() - t0 < 1
            replies = [await asyncio.wait_for(ws.recv(), 15) for ws in clients]
            for ws in clients:
                await ws.close()
            return replies
        replies = run(go())
        assert replies.count("err timeout") == 16, replies
        assert replies.count("err too many requests") == 48, replies
        assert_served(node)
        assert rss_kib(node.pid) - before < 16 * 1024
        m = metrics(node)
        assert m['moonwire_http_client_requests_total{result="refused"}'] == 48
        assert m["moonwire_http_client_inflight"] == 0
    finally:
        backend.stop()
