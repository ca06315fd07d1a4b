"""Hostile X-Forwarded-For and tokens: what any client can send to the
address walk (forwarded.c) and to moonwire.jwt from on_upgrade. Each case
checks that a normal websockets client is still served, that the server's
RSS stayed bounded, and that the address a hostile client gets is one it
could not choose."""
import asyncio
import socket

import websockets

from hostile import assert_served, rss_kib

APP = """local mw = require "moonwire"
local app = {}
function app.on_upgrade(req)
  local token = req.headers["x-token"]
  if token then
    local claims, err = mw.jwt.verify(token, { key = "k", algs = { "HS256" } })
    if not claims then return false, 401, err end
  end
end
function app.on_open(conn, req) conn:send("addr=" .. req.remote_addr) end
function app.on_message(conn, data) conn:send(data) end
return app
"""

CONFIG = 'return { http = { trusted_proxies = { "10.0.0.0/8" } } }'
CONFIG_TRUSTING_US = 'return { http = { trusted_proxies = { "127.0.0.1", "10.0.0.0/8" } } }'


def raw_upgrade(port, extra):
    """Sends an upgrade with extra header lines; returns the status line."""
    head = ("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            + extra + "\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(head.encode())
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n", 1)[0].decode()


async def addr_seen(url, headers):
    async with websockets.connect(url, extra_headers=headers) as ws:
        return await asyncio.wait_for(ws.recv(), 5)


def test_long_many_and_garbage_forwarded_for_fields(start_server, tmp_script):
    server = start_server(tmp_script(APP), config=CONFIG_TRUSTING_US)
    before = rss_kib(server.pid)
    cases = [
        ", ".join(["10.0.0.7"] * 600),              # all trusted, longer than the walk reads
        ",".join(["198.51.100.1"] * 450),            # a long list of clients
        "garbage, [[[::1]]], 1.2.3.4:99999, ::::::",
        "[" + "f" * 3000 + "]",
        " , , , ,",
    ]
    for _ in range(20):
        for value in cases:
            assert raw_upgrade(server.port, f"X-Forwarded-For: {value}\r\n").startswith(
                "HTTP/1.1 101")
        # 60 fields of one header
        assert raw_upgrade(server.port, "".join(
            f"X-Forwarded-For: 10.0.{i}.1\r\n" for i in range(60))).startswith("HTTP/1.1 ")
    # Whatever the garbage, the answer is an address the walk may give.
    got = asyncio.run(addr_seen(server.url, {"X-Forwarded-For": "1.2.3.4:99999, 10.0.0.9"}))
    assert got == "addr=10.0.0.9"
    got = asyncio.run(addr_seen(server.url, {"X-Forwarded-For": ", ".join(["10.0.0.7"] * 100)}))
    assert got == "addr=10.0.0.7"
    assert_served(server, expect="addr=127.0.0.1")
    assert rss_kib(server.pid) - before < 20 * 1024


def test_an_untrusted_client_gets_its_own_address_whatever_it_sends(start_server, tmp_script):
    server = start_server(tmp_script(APP), config=CONFIG)
    for value in ("10.0.0.1", "198.51.100.7, 10.0.0.1", "::1"):
        got = asyncio.run(addr_seen(server.url, {"X-Forwarded-For": value, "X-Real-IP": value}))
        assert got == "addr=127.0.0.1"
    assert_served(server, expect="addr=127.0.0.1")


def test_hostile_tokens_are_refused_and_change_nothing(start_server, tmp_script):
    server = start_server(tmp_script(APP), config=CONFIG)
    before = rss_kib(server.pid)
    tokens = [
        "a.b.c", "..", "x" * 7000, "e30." * 2000, ".".join(["eyJ"] * 3),
        "eyJhbGciOiJub25lIn0.e30.",          # alg none, no signature
        "eyJhbGciOiJub25lIn0.e30.c2ln",      # alg none, a signature
        "eyJhbGciOiJIUzI1NiJ9." + "W" * 7000 + ".c2ln",   # [[[[... claims, deep
        "eyJhbGciOiJIUzI1NiJ9.e30.@@@@",
    ]
    for _ in range(20):
        for tok in tokens:
            status = raw_upgrade(server.port, f"X-Token: {tok}\r\n")
            assert status.split(" ")[1] in ("401", "431"), (tok[:40], status)
    assert_served(server, expect="addr=127.0.0.1")
    assert rss_kib(server.pid) - before < 20 * 1024
