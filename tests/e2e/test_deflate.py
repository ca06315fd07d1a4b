"""permessage-deflate (RFC 7692) against the real binary: negotiation,
compressed echo with Python's websockets, RSV1 on the wire, fragmented
compressed messages, context takeover, and hostile input (a decompression
bomb, bad deflate data, RSV1 where it may not be)."""
import asyncio
import os
import socket
import struct
import urllib.request
import zlib

import pytest
import websockets

from conftest import SANITIZED
from httpraw import accept_for, new_key, read_head

COMPRESSION = """
return { websocket = { compression = true, compression_threshold = 64,
                       max_message_size = 1048576 } }
"""


@pytest.fixture
def deflate_server(start_server):
    return start_server("scripts/echo.lua", config=COMPRESSION)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=60))


def handshake(port, extensions):
    """Upgrades a raw socket offering `extensions`; returns (sock, accepted header, leftover)."""
    key = new_key()
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    req = ("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n")
    if extensions is not None:
        req += f"Sec-WebSocket-Extensions: {extensions}\r\n"
    s.sendall((req + "\r\n").encode())
    buf, end = read_head(s, 5)
    head = buf[:end].decode()
    assert head.startswith("HTTP/1.1 101"), head
    assert accept_for(key) in head
    accepted = None
    for line in head.split("\r\n"):
        if line.lower().startswith("sec-websocket-extensions:"):
            accepted = line.split(":", 1)[1].strip()
    return s, accepted, buf[end + 4:]


@pytest.mark.parametrize("offer,expected", [
    ("permessage-deflate",
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
    ("permessage-deflate; client_max_window_bits",
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
     "client_max_window_bits=15"),
    ("permessage-deflate; server_max_window_bits=10; client_max_window_bits=12",
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
     "server_max_window_bits=10; client_max_window_bits=12"),
    ('permessage-deflate; server_max_window_bits="11"',
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
     "server_max_window_bits=11"),
    # 8 cannot be honoured (zlib makes no 8-bit raw streams): the next offer is taken.
    ("permessage-deflate; server_max_window_bits=8, permessage-deflate",
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
    ("permessage-deflate; server_max_window_bits=8", None),
    ("permessage-deflate; unknown_param", None),
    ("permessage-deflate; server_max_window_bits=16", None),
    ("permessage-deflate; client_no_context_takeover; client_no_context_takeover", None),
    ("x-webkit-deflate-frame", None),
    (None, None),
])
def test_negotiates_what_it_can_honour_and_declines_the_rest(deflate_server, offer, expected):
    s, accepted, _ = handshake(deflate_server.port, offer)
    s.close()
    assert accepted == expected


def test_offers_nothing_when_compression_is_off(echo_server):
    s, accepted, _ = handshake(echo_server.port, "permessage-deflate")
    s.close()
    assert accepted is None


@pytest.mark.parametrize("size", [0, 10, 63, 64, 1000, 65536, 300000])
def test_echoes_compressed_text_and_binary_at_several_sizes(deflate_server, size):
    async def go():
        async with websockets.connect(deflate_server.url, compression="deflate",
                                      max_size=None) as ws:
            assert "permessage-deflate" in ws.response_headers["Sec-WebSocket-Extensions"]
            text = ("chat message ✓ %d " % size * (size // 10 + 1))[:size]
            await ws.send(text)
            assert await ws.recv() == text
            data = os.urandom(size // 2) + bytes(size - size // 2)
            await ws.send(data)
            assert await ws.recv() == data
    run(go())


def test_echoes_fragmented_compressed_messages(deflate_server):
    async def go():
        async with websockets.connect(deflate_server.url, compression="deflate") as ws:
            parts = ["part %d " % i * 50 for i in range(20)]
            await ws.send(iter(parts))
            assert await ws.recv() == "".join(parts)
            await ws.send(iter([b"\x00" * 5000, b"\x01" * 5000]))
            assert await ws.recv() == b"\x00" * 5000 + b"\x01" * 5000
    run(go())


def test_keeps_the_clients_context_when_allowed(start_server):
    server = start_server("scripts/echo.lua", config="""
        return { websocket = { compression = true, client_no_context_takeover = false } }
    """)

    async def go():
        async with websockets.connect(server.url, compression="deflate") as ws:
            accepted = ws.response_headers["Sec-WebSocket-Extensions"]
            assert "client_no_context_takeover" not in accepted
            # Repeated messages compress against earlier ones: the server's
            # inflater must keep the window between messages.
            for i in range(30):
                text = "the same sentence, again and again, number %d" % (i % 3) * 20
                await ws.send(text)
                assert await ws.recv() == text
    run(go())


def frame(opcode, payload, fin=True, rsv1=False):
    mask = os.urandom(4)
    head = bytes([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def deflate_raw(data):
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def read_frame(s, buf, timeout=5):
    s.settimeout(timeout)

    def need(count, buf):
        while len(buf) < count:
            chunk = s.recv(65536)
            if not chunk:
                raise EOFError("the server closed the connection")
            buf += chunk
        return buf

    buf = need(2, buf)
    b0, b1 = buf[0], buf[1]
    n, pos = b1 & 0x7F, 2
    if n == 126:
        buf = need(4, buf)
        n, pos = struct.unpack("!H", buf[2:4])[0], 4
    elif n == 127:
        buf = need(10, buf)
        n, pos = struct.unpack("!Q", buf[2:10])[0], 10
    buf = need(pos + n, buf)
    return (b0, buf[pos:pos + n]), buf[pos + n:]


def test_server_frames_carry_rsv1_above_the_threshold_only(deflate_server):
    s, accepted, buf = handshake(deflate_server.port, "permessage-deflate")
    text = b"compress me please " * 40
    s.sendall(frame(1, deflate_raw(text), rsv1=True))
    (b0, payload), buf = read_frame(s, buf)
    assert b0 & 0x40, "a large echo comes back compressed"
    assert len(payload) < len(text) / 4
    assert zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff") == text
    s.sendall(frame(1, b"short"))
    (b0, payload), buf = read_frame(s, buf)
    assert not b0 & 0x40 and payload == b"short", "below the threshold it goes plain"
    s.close()


def deflate_final(data, zdict=None):
    """data compressed with zlib's Z_FINISH: the DEFLATE data ends with a final
    block (BFINAL=1) and no 00 00 ff ff, as RFC 7692 7.2.3.3 allows. With
    zdict, the stream starts from that window (a sender keeping its context)."""
    c = (zlib.compressobj(6, zlib.DEFLATED, -15, zdict=zdict) if zdict
         else zlib.compressobj(6, zlib.DEFLATED, -15))
    out = c.compress(data) + c.flush(zlib.Z_FINISH)
    assert zlib.decompressobj(-15, zdict=zdict or b"").decompress(out) == data
    return out


def echo_of(s, buf):
    """The next data message from the server, inflated when it is compressed."""
    (b0, payload), buf = read_frame(s, buf)
    assert b0 & 0x0F in (1, 2), f"expected an echo, got opcode {b0 & 0x0F}: {payload!r}"
    if b0 & 0x40:
        payload = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
    return payload, buf


def test_accepts_messages_whose_deflate_data_ends_with_a_final_block(deflate_server):
    s, _, buf = handshake(deflate_server.port, "permessage-deflate")
    for text in [b"Hello", b"compress me please " * 40, "ünïcödé ✓".encode() * 30]:
        s.sendall(frame(1, deflate_final(text), rsv1=True))
        got, buf = echo_of(s, buf)
        assert got == text
    # RFC 7692 7.2.3.3's example: the final block, then an empty stored
    # block's header whose 00 00 ff ff the sender stripped.
    s.sendall(frame(1, bytes.fromhex("f348cdc9c9070000"), rsv1=True))
    got, buf = echo_of(s, buf)
    assert got == b"Hello"
    # The final block cut across two frames of one message.
    data = deflate_final(b"fragmented " * 50)
    s.sendall(frame(1, data[:7], fin=False, rsv1=True) + frame(0, data[7:]))
    got, buf = echo_of(s, buf)
    assert got == b"fragmented " * 50
    # And a sync-flushed message after all that still reads right.
    s.sendall(frame(1, deflate_raw(b"plain flush " * 20), rsv1=True))
    got, buf = echo_of(s, buf)
    assert got == b"plain flush " * 20
    s.close()


def test_keeps_the_clients_window_across_final_blocks_with_context_takeover(start_server):
    server = start_server("scripts/echo.lua", config="""
        return { websocket = { compression = true, client_no_context_takeover = false } }
    """)
    s, accepted, buf = handshake(server.port, "permessage-deflate")
    assert "client_no_context_takeover" not in accepted
    first = b"the same sentence, again and again, number one. " * 4
    second = b"the same sentence, again and again, number two. " * 4
    s.sendall(frame(1, deflate_final(first), rsv1=True))
    got, buf = echo_of(s, buf)
    assert got == first
    # The second message refers back into the first one's window.
    packed = deflate_final(second, zdict=first)
    assert len(packed) < len(deflate_final(second))
    s.sendall(frame(1, packed, rsv1=True))
    got, buf = echo_of(s, buf)
    assert got == second
    s.close()


def close_code_of(s, buf, timeout=5):
    while True:
        (b0, payload), buf = read_frame(s, buf, timeout)
        if b0 & 0x0F == 8:
            return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None


def metric(server, name):
    text = urllib.request.urlopen(server.http + "/metrics", timeout=5).read().decode()
    return {l.rsplit(" ", 1)[0]: float(l.rsplit(" ", 1)[1])
            for l in text.splitlines() if l and not l.startswith("#")}.get(name)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))


def test_a_decompression_bomb_is_refused_with_1009_without_the_memory(deflate_server):
    bomb = deflate_raw(b"\x00" * (64 << 20))  # 64 MiB of zeros in about 64 kB
    assert len(bomb) < 100_000
    before = rss_kib(deflate_server.pid)
    s, _, buf = handshake(deflate_server.port, "permessage-deflate")
    s.sendall(frame(2, bomb, rsv1=True))
    assert close_code_of(s, buf) == 1009
    s.close()
    if not SANITIZED:
        grown_mib = (rss_kib(deflate_server.pid) - before) / 1024
        assert grown_mib < 8, f"RSS grew by {grown_mib:.1f} MiB (limit is 1 MiB)"

    async def still_serving():
        async with websockets.connect(deflate_server.url, compression="deflate") as ws:
            await ws.send("after the bomb")
            assert await ws.recv() == "after the bomb"
    run(still_serving())


@pytest.mark.parametrize("what,frames,code", [
    ("data that is not deflate", [frame(1, b"\xff\xff\xff\xff\xff", rsv1=True)], 1007),
    ("compressed invalid UTF-8", [frame(1, deflate_raw(b"ok \xc3\x28 bad"), rsv1=True)], 1007),
    ("RSV1 on a continuation", [frame(1, deflate_raw(b"a" * 100), fin=False, rsv1=True),
                                frame(0, deflate_raw(b"b"), rsv1=True)], 1002),
    ("RSV1 on a ping", [frame(9, b"", rsv1=True)], 1002),
])
def test_refuses_bad_compressed_input_with_the_right_code(deflate_server, what, frames, code):
    s, _, buf = handshake(deflate_server.port, "permessage-deflate")
    s.sendall(b"".join(frames))
    assert close_code_of(s, buf) == code, what
    s.close()


def test_refuses_rsv1_when_compression_was_not_negotiated(deflate_server):
    s, accepted, buf = handshake(deflate_server.port, None)
    assert accepted is None
    s.sendall(frame(1, deflate_raw(b"hello" * 30), rsv1=True))
    assert close_code_of(s, buf) == 1002
    s.close()


def test_fans_out_to_compressing_and_plain_clients_alike(start_server):
    server = start_server("scripts/relay.lua", config=COMPRESSION)

    async def go():
        sender = await websockets.connect(server.url)
        zipped = [await websockets.connect(server.url, compression="deflate") for _ in range(3)]
        plain = [await websockets.connect(server.url, compression=None) for _ in range(2)]
        text = "a message everybody gets " * 20
        await sender.send(text)
        for ws in zipped + plain:
            assert await asyncio.wait_for(ws.recv(), 5) == text
        for ws in [sender] + zipped + plain:
            await ws.close()
    run(go())
