"""relay.lua: every message goes to every other client, as the same kind, and
never back to its sender."""
import asyncio

import websockets


def run(coro, timeout=30):
    return asyncio.run(asyncio.wait_for(coro, timeout=timeout))


async def connect_all(url, n):
    return [await websockets.connect(url) for _ in range(n)]


async def close_all(clients):
    for ws in clients:
        await ws.close()


async def assert_silent(ws, seconds=0.3):
    """Nothing arrives on ws for a while."""
    try:
        got = await asyncio.wait_for(ws.recv(), seconds)
    except asyncio.TimeoutError:
        return
    raise AssertionError(f"unexpected message {got!r}")


async def recv(ws):
    return await asyncio.wait_for(ws.recv(), 5)


def test_a_message_reaches_the_two_others_but_not_the_sender(relay_server):
    async def go():
        a, b, c = await connect_all(relay_server.url, 3)
        await a.send("hello from a")
        assert await recv(b) == "hello from a"
        assert await recv(c) == "hello from a"
        await b.send("hello from b")
        assert await recv(a) == "hello from b"
        assert await recv(c) == "hello from b"
        await assert_silent(a)
        await assert_silent(b)
        await assert_silent(c, 0.05)
        await close_all([a, b, c])
    run(go())


def test_keeps_the_kind_of_text_and_binary_messages(relay_server):
    async def go():
        a, b, c = await connect_all(relay_server.url, 3)
        await a.send("text ✓")
        await a.send(b"\x00\x01\xfe\xff")
        await a.send(b"")
        await a.send("")
        for ws in (b, c):
            first, second, third, fourth = [await recv(ws) for _ in range(4)]
            assert first == "text ✓" and isinstance(first, str)
            assert second == b"\x00\x01\xfe\xff" and isinstance(second, bytes)
            assert third == b"" and isinstance(third, bytes)
            assert fourth == "" and isinstance(fourth, str)
        await assert_silent(a)
        await close_all([a, b, c])
    run(go())


def test_a_client_that_leaves_stops_receiving(relay_server):
    async def go():
        a, b, c = await connect_all(relay_server.url, 3)
        await c.close()
        assert c.close_code == 1000
        await a.send("after c left")
        assert await recv(b) == "after c left"
        await assert_silent(a)
        # A newcomer gets what is sent after it joined, and nothing from before.
        d = await websockets.connect(relay_server.url)
        await assert_silent(d, 0.2)
        await b.send("to a and d")
        assert await recv(a) == "to a and d"
        assert await recv(d) == "to a and d"
        await close_all([a, b, d])
    run(go())


def test_a_client_that_drops_without_closing_stops_receiving(relay_server):
    async def go():
        a, b, c = await connect_all(relay_server.url, 3)
        c.transport.abort()  # no close frame, just a reset
        await asyncio.sleep(0.2)
        for i in range(5):
            await a.send(f"m{i}")
        assert [await recv(b) for _ in range(5)] == [f"m{i}" for i in range(5)]
        await assert_silent(a)
        await close_all([a, b])
    run(go())
    errors = [line for line in relay_server.log().splitlines() if " error " in line]
    assert errors == [], errors


def test_twenty_messages_in_a_row_arrive_in_order(relay_server):
    async def go():
        a, b, c = await connect_all(relay_server.url, 3)
        sent = [f"message {i:02d}" for i in range(20)]
        for m in sent:
            await a.send(m)
        for ws in (b, c):
            assert [await recv(ws) for _ in range(20)] == sent
        await assert_silent(a)
        await close_all([a, b, c])
    run(go())


def test_messages_from_several_senders_keep_each_senders_order(relay_server):
    async def go():
        a, b, c = await connect_all(relay_server.url, 3)
        for i in range(20):
            await a.send(f"a{i}")
            await b.send(f"b{i}")
        got = [await recv(c) for _ in range(40)]
        assert [m for m in got if m[0] == "a"] == [f"a{i}" for i in range(20)]
        assert [m for m in got if m[0] == "b"] == [f"b{i}" for i in range(20)]
        assert [await recv(b) for _ in range(20)] == [f"a{i}" for i in range(20)]
        assert [await recv(a) for _ in range(20)] == [f"b{i}" for i in range(20)]
        await close_all([a, b, c])
    run(go())
