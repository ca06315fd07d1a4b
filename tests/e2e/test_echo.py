"""echo.lua through Python's websockets client: sizes across the 7/16/64-bit
length encodings, text and binary, fragmented messages and pings."""
import asyncio

import pytest
import websockets

SIZES = [0, 1, 125, 126, 127, 65535, 65536, 1 << 20]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=30))


@pytest.mark.parametrize("size", SIZES)
def test_echoes_text_and_binary_of_every_length_encoding(echo_server, size):
    async def go():
        async with websockets.connect(echo_server.url, max_size=None) as ws:
            text = ("héllo wörld " * (size // 12 + 1)).encode()[:size].decode("utf-8", "ignore")
            await ws.send(text)
            assert await ws.recv() == text
            data = bytes(i % 256 for i in range(size))
            await ws.send(data)
            assert await ws.recv() == data
    run(go())


def test_echoes_a_fragmented_message_as_one(echo_server):
    async def go():
        async with websockets.connect(echo_server.url) as ws:
            await ws.send(iter(["frag", "ment", "ed ✓"]))
            assert await ws.recv() == "fragmented ✓"
            await ws.send(iter([b"\x00", b"\x01\x02", b""]))
            assert await ws.recv() == b"\x00\x01\x02"
    run(go())


def test_answers_pings_with_the_same_payload(echo_server):
    async def go():
        async with websockets.connect(echo_server.url) as ws:
            waiter = await ws.ping(b"are you there")
            await asyncio.wait_for(waiter, 5)
    run(go())


def test_closes_normally_when_the_client_closes(echo_server):
    async def go():
        ws = await websockets.connect(echo_server.url)
        await ws.close(code=1000, reason="bye")
        assert ws.close_code == 1000
    run(go())
