"""Operations against the real binary: allowlists for the built-in
endpoints, JSON logs, log reopening on SIGUSR1, the connection limit, and
a busy client that must not starve the others."""
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import time
import urllib.error
import urllib.request

import pytest
import websockets

from conftest import BIN, ROOT, free_port, wait_until


def status_of(url):
    try:
        return urllib.request.urlopen(url, timeout=5).status
    except urllib.error.HTTPError as e:
        return e.code


def test_restricts_metrics_and_healthz_to_their_allowlists(start_server):
    server = start_server("scripts/echo.lua", config="""
        return { http = { metrics_allow = { "10.0.0.0/8", "fd00::/8" },
                          healthz_allow = { "127.0.0.0/8" } } }
    """)
    assert status_of(server.http + "/metrics") == 403
    assert status_of(server.http + "/healthz") == 200


def test_turns_metrics_off(start_server):
    server = start_server("scripts/echo.lua", config="return { http = { metrics = false } }")
    # /metrics is then an ordinary path: here a WebSocket path, so a plain GET is a 400.
    assert status_of(server.http + "/metrics") == 400


def test_refuses_an_allowlist_entry_that_is_not_an_address():
    r = subprocess.run([BIN, "--listen", f"127.0.0.1:{free_port()}", "--config", "/dev/stdin"],
                       input="return { http = { metrics_allow = { '10.0.0.0/33' } } }",
                       cwd=ROOT, capture_output=True, text=True, timeout=10)
    assert r.returncode == 2
    assert "http.metrics_allow" in r.stderr and "10.0.0.0/33" in r.stderr


def test_writes_json_log_lines_with_fields(start_server, tmp_path):
    log = tmp_path / "moonwire.log"
    server = start_server("scripts/echo.lua", config=f"""
        return {{ log = {{ json = true, file = "{log}", level = "info" }} }}
    """)

    async def go():
        async with websockets.connect(server.url + "/json") as ws:
            await ws.send("x")
            await ws.recv()
    asyncio.run(asyncio.wait_for(go(), 10))
    wait_until(lambda: "conn.close" in log.read_text(), what="the close line")
    lines = [json.loads(l) for l in log.read_text().splitlines()]
    closed = next(l for l in lines if l["msg"] == "conn.close")
    assert closed["level"] == "info" and closed["msgs_in"] == 1 and closed["code"] == 1000
    assert closed["addr"] == "127.0.0.1" and closed["id"].startswith("mw.")
    assert all("ts" in l for l in lines)


def test_reopens_the_log_file_on_sigusr1(start_server, tmp_path):
    log = tmp_path / "moonwire.log"
    server = start_server("scripts/echo.lua", config=f"""
        return {{ log = {{ file = "{log}" }} }}
    """)
    wait_until(lambda: log.exists() and "listening" in log.read_text(), what="the first line")
    rotated = tmp_path / "moonwire.log.1"
    os.rename(log, rotated)
    server.signal(signal.SIGUSR1)
    wait_until(log.exists, what="a new log file")

    async def go():
        async with websockets.connect(server.url) as ws:
            await ws.send("after rotation")
            await ws.recv()
    asyncio.run(asyncio.wait_for(go(), 10))
    wait_until(lambda: "conn.close" in log.read_text(), what="new lines in the new file")
    assert "conn.close" not in rotated.read_text()


def test_answers_503_past_max_connections(start_server):
    server = start_server("scripts/echo.lua", config="return { limits = { max_connections = 3 } }")

    async def go():
        held = [await websockets.connect(server.url) for _ in range(3)]
        with pytest.raises(websockets.exceptions.InvalidStatusCode) as refused:
            await websockets.connect(server.url)
        assert refused.value.status_code == 503
        await held[0].close()
        ws = await websockets.connect(server.url)
        await ws.send("room again")
        assert await ws.recv() == "room again"
        for w in held[1:] + [ws]:
            await w.close()
    asyncio.run(asyncio.wait_for(go(), 20))


def test_a_flooding_client_does_not_starve_the_others(start_server):
    """One client pours 1 MiB messages into the echo server and never reads;
    another plays ping-pong meanwhile. Its round trips stay short."""
    server = start_server("scripts/echo.lua")

    async def go():
        flood_stop = asyncio.Event()

        async def flood():
            s = socket.create_connection(("127.0.0.1", server.port))
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      b"Sec-WebSocket-Version: 13\r\n\r\n")
            s.setblocking(False)
            payload = b"\x00" * (1 << 20)
            frame = bytes([0x82, 0xFF]) + (1 << 20).to_bytes(8, "big") + b"\0\0\0\0" + payload
            loop = asyncio.get_running_loop()
            sent = 0
            while not flood_stop.is_set() and sent < 200:
                try:
                    await asyncio.wait_for(loop.sock_sendall(s, frame), 0.5)
                    sent += 1
                except asyncio.TimeoutError:
                    pass  # the server stopped reading us: that is the point
            s.close()

        task = asyncio.create_task(flood())
        await asyncio.sleep(0.2)
        rtts = []
        async with websockets.connect(server.url) as ws:
            for i in range(100):
                t = time.monotonic()
                await ws.send(f"ping {i}")
                assert await asyncio.wait_for(ws.recv(), 5) == f"ping {i}"
                rtts.append(time.monotonic() - t)
        flood_stop.set()
        await task
        return rtts
    rtts = asyncio.run(asyncio.wait_for(go(), 60))
    p99 = sorted(rtts)[98]
    assert p99 < 0.25, f"p99 round trip {p99 * 1000:.0f} ms beside a flood (median " \
                       f"{statistics.median(rtts) * 1000:.1f} ms)"
