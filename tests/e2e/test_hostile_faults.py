"""Hostile input against the smaller faults of issue 12: frame headers that
announce too much, running out of file descriptors, and TLS clients that
never speak. Each case checks, beside its own answer, that a normal client
(Python's websockets) is still served and that the server's memory stayed
bounded (hostile.py)."""
import asyncio
import os
import resource
import select
import socket
import struct
import time

import pytest
import websockets

from conftest import SANITIZED, free_port, port_open, wait_until
from hostile import assert_served, metrics, rss_kib
from rawws import OP_BINARY, OP_CONT, OP_TEXT, RawWS, frame
from test_tls import client_ctx, make_cert

RSS_SLACK_KIB = 16 * 1024


def assert_rss_bounded(server, before_kib):
    if SANITIZED:
        return  # ASan's shadow memory and quarantine make RSS meaningless
    grown = rss_kib(server.pid) - before_kib
    assert grown < RSS_SLACK_KIB, f"RSS grew by {grown} KiB"


# A frame header announcing more than max_message_size ---------------------------------------


def header(opcode, length, fin=True, key=b"\x37\xfa\x21\x3d"):
    """A masked client frame header announcing `length` payload bytes, with the
    masking key (or without it when key is b"")."""
    b0 = (0x80 if fin else 0) | opcode
    if length < 126:
        head = struct.pack("!BB", b0, 0x80 | length)
    elif length <= 0xFFFF:
        head = struct.pack("!BBH", b0, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", b0, 0x80 | 127, length)
    return head + key


HEADERS = [
    ("a 64-bit length of 1 GiB", header(OP_BINARY, 1 << 30), None),
    ("a 64-bit length without its masking key yet", header(OP_TEXT, 1 << 40, key=b""), None),
    ("a 16-bit length just over the limit", header(OP_TEXT, 60001), None),
    ("a continuation that passes the limit with the first fragment",
     frame(OP_TEXT, b"x" * 50000, fin=False) + header(OP_CONT, 10001), None),
    ("a header sent one byte at a time", header(OP_BINARY, 1 << 30), 1),
]


@pytest.mark.parametrize("what,head,chop", HEADERS, ids=[h[0] for h in HEADERS])
def test_a_header_announcing_more_than_max_message_size_gets_1009_before_any_payload(
        start_server, what, head, chop):
    server = start_server("scripts/echo.lua",
                          config="return { websocket = { max_message_size = 60000 } }")
    before = rss_kib(server.pid)
    with RawWS(server.port) as ws:
        # Only the header: no payload byte follows, so the server must judge
        # the frame by its header alone (it used to wait for the payload).
        ws.send(head, chop=chop, delay=0.02 if chop else 0.0)
        ws.expect_close(1009, timeout=2.0)
    assert "message too big" in server.log()
    assert_served(server)
    assert_rss_bounded(server, before)


def test_a_header_that_fits_still_waits_for_its_payload(start_server):
    server = start_server("scripts/echo.lua",
                          config="return { websocket = { max_message_size = 60000 } }")
    payload = os.urandom(60000)
    data = frame(OP_BINARY, payload)
    with RawWS(server.port) as ws:
        ws.send(data[:14])
        ws.expect_nothing(0.3)
        ws.send(data[14:])
        ws.expect_echo(payload, opcode=OP_BINARY)
    assert_served(server)


# Out of file descriptors ---------------------------------------------------------------------


def fds_of(pid):
    return {int(n) for n in os.listdir(f"/proc/{pid}/fd")}


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sockets_of(pid):
    count = 0
    for n in fds_of(pid):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{n}").startswith("socket:")
        except FileNotFoundError:
            pass
    return count


def limit_fds(server, room):
    """Lowers the server's RLIMIT_NOFILE so that `room` more descriptors fit,
    once it is quiet: the connections made so far (the harness's probe, one
    that makes libuv open its spare descriptor) are gone."""
    pid = server.pid
    assert_served(server)
    wait_until(lambda: sockets_of(pid) == 1, what="only the listener left open")
    used = fds_of(pid)
    limit, free = 0, 0
    while free < room:
        if limit not in used:
            free += 1
        limit += 1
    _, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, hard))


def closed_by_server(sock, timeout):
    ready, _, _ = select.select([sock], [], [], timeout)
    if not ready:
        return False
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_out_of_file_descriptors_is_logged_refused_at_once_and_recovered_from(start_server):
    server = start_server("scripts/echo.lua")
    before = rss_kib(server.pid)
    room = 6
    limit_fds(server, room)
    held = []
    try:
        # Each socket the server accepts holds one of its descriptors until the
        # handshake timeout: past `room`, accept() fails with EMFILE.
        for _ in range(30):
            held.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        server.wait_log("accept: too many open files", timeout=5)
        # Those it could not serve were closed at once, not left in the backlog.
        refused = sum(closed_by_server(s, 2.0) for s in held[room + 2:])
        assert refused >= len(held) - room - 4, f"only {refused} closed"

        # Still full: more clients are refused, the loop does not spin, and
        # the log line is not repeated for each of them.
        cpu = cpu_seconds(server.pid)
        for _ in range(100):
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
                assert closed_by_server(s, 2.0), "a client past the limit was not closed"
        time.sleep(1.0)
        assert cpu_seconds(server.pid) - cpu < 0.5
        assert server.log().count("accept: too many open files") == 1
    finally:
        for s in held:
            s.close()
    # Descriptors are free again: the server serves as before.
    assert_served(server)
    failures = metrics(server)["moonwire_accept_failures_total"]
    assert failures >= 100 + len(held) - room - 4
    assert_rss_bounded(server, before)


# TLS clients that never finish the handshake ------------------------------------------------


def test_tls_clients_that_never_speak_are_dropped_at_handshake_timeout(start_server, tmp_path):
    cert, key = make_cert(tmp_path, "server")
    tls_port = free_port()
    server = start_server("scripts/echo.lua",
                          args=["--listen-tls", f"127.0.0.1:{tls_port}", "--cert", str(cert),
                                "--key", str(key)],
                          config="return { limits = { handshake_timeout = 1, "
                                 "close_timeout = 6 } }")
    wait_until(lambda: port_open(tls_port), what="the TLS listener")
    before = rss_kib(server.pid)
    started = time.monotonic()
    silent = [socket.create_connection(("127.0.0.1", tls_port), timeout=5) for _ in range(20)]
    stalled = socket.create_connection(("127.0.0.1", tls_port), timeout=5)
    stalled.sendall(bytes.fromhex("16030100c4010000c00303") + b"\x00" * 20)  # half a ClientHello
    try:
        for s in silent + [stalled]:
            assert closed_by_server(s, 10.0), "the server kept a silent TLS client"
        took = time.monotonic() - started
        # handshake_timeout (1 s, swept every 250 ms), not handshake_timeout +
        # close_timeout (7 s): a 408 can not be sent before the TLS handshake.
        assert 0.7 < took < 3.5, f"silent TLS clients were dropped after {took:.1f}s"
    finally:
        for s in silent + [stalled]:
            s.close()
    assert metrics(server)["moonwire_handshakes_total{result=\"timeout\"}"] >= 21
    wait_until(lambda: metrics(server)["moonwire_sockets"] == 1, what="every socket released")

    async def wss_served():
        async with websockets.connect(f"wss://127.0.0.1:{tls_port}", ssl=client_ctx()) as ws:
            await ws.send("after the silent ones")
            assert await ws.recv() == "after the silent ones"
    asyncio.run(asyncio.wait_for(wss_served(), 10))
    assert_served(server)
    assert_rss_bounded(server, before)
