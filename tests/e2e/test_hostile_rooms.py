"""Hostile clients against the chat's rooms and their history (issue 12,
finding 5), on the real binary with the chat example's configuration
(examples/chat/moonwire.conf.lua), driven by Python's websockets.

- One client creating rooms as fast as it can is refused past its
  per-connection allowance (too_many_new_rooms); the server's memory stays put.
- With the app's allowances off, clients creating rooms as fast as they can
  meet the node's bounds: history keeps at most history.max_topics topics and
  history.max_bytes bytes (the history of rooms nobody is in goes first) and
  a subscription past limits.max_topics is refused (server_full), counted and
  logged at most once a second.
- One upgrade that joins ten full rooms through the query gets a bounded
  history, and the query's nick and rooms cost rate-limit tokens.

Each case checks that a normal client is still served and that RSS stayed
within a bound. RSS is not judged under ASan (its quarantine and shadow
memory are not the server's); the bounds reported in /metrics are.
"""
import asyncio
import json
import re
import time

import websockets

from conftest import ROOT, SANITIZED, wait_until
from hostile import metrics, rss_kib

EXAMPLE = (ROOT / "examples" / "chat" / "moonwire.conf.lua").read_text()


def example_config(*overrides):
    """The chat example's configuration text, with Lua statements run on its
    table `cfg` before it is returned (for instance 'cfg.app.chat.rate = false')."""
    body = EXAMPLE.replace("return {", "local cfg = {", 1)
    assert body != EXAMPLE
    return body + "\n" + "\n".join(overrides) + "\nreturn cfg\n"


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout=timeout))


async def open_chat(server, query=""):
    ws = await websockets.connect(f"{server.url}/chat{query}", max_size=None, close_timeout=1)
    welcome = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert welcome["type"] == "welcome", welcome
    return ws


async def expect(ws, pred, timeout=5.0):
    """The first message (decoded) for which pred is true; fails after timeout."""
    async def find():
        while True:
            m = json.loads(await ws.recv())
            if pred(m):
                return m
    return await asyncio.wait_for(find(), timeout)


def chat_served(server, room="lobby", timeout=10.0):
    """A normal client is served: it joins room, says something and hears it
    back with its offset. Returns the seconds it took."""
    assert server.proc.poll() is None, f"moonwire exited:\n{server.log()}"

    async def go():
        started = time.monotonic()
        nick = f"n{int(started * 1000) % 100000}"
        ws = await open_chat(server, f"?nick={nick}&room={room}")
        try:
            await expect(ws, lambda m: m["type"] == "joined" and m["room"] == room)
            await ws.send(json.dumps({"type": "say", "room": room, "text": "still here?", "id": 1}))
            said = await expect(ws, lambda m: m["type"] == "say" and m.get("from") == nick)
            assert said["text"] == "still here?" and said["offset"] >= 1
            await expect(ws, lambda m: m["type"] == "sent" and m.get("ref") == 1)
        finally:
            await ws.close()
        return time.monotonic() - started

    return run(go(), timeout=timeout)


async def create_rooms(server, nick, seconds, stats, tag):
    """Joins and leaves a new room, again and again, as fast as the server
    takes it, for `seconds`; reads everything meanwhile. Counts replies by type
    and error code into stats."""
    ws = await open_chat(server, f"?nick={nick}")
    deadline = time.monotonic() + seconds

    async def reader():
        try:
            async for raw in ws:
                m = json.loads(raw)
                key = m["code"] if m["type"] == "error" else m["type"]
                stats[key] = stats.get(key, 0) + 1
        except websockets.ConnectionClosed:
            pass

    task = asyncio.create_task(reader())
    i = 0
    while time.monotonic() < deadline:
        for _ in range(20):
            room = f"{tag}{i}"
            await ws.send(json.dumps({"type": "join", "room": room}))
            await ws.send(json.dumps({"type": "leave", "room": room}))
            i += 1
        await asyncio.sleep(0)  # let the reader drain
    stats["asked"] = stats.get("asked", 0) + i
    await ws.close()
    await asyncio.wait_for(task, 10)


def settle(server, seconds=10.0):
    """Waits until the server has handled what the clients sent (two equal
    readings of its message count in a row)."""
    last = [None]

    def quiet():
        now = metrics(server)["moonwire_messages_in_total"]
        done = now == last[0]
        last[0] = now
        return done

    wait_until(quiet, timeout=seconds, step=0.3, what="the server to catch up")


def test_one_client_making_rooms_is_refused_past_its_allowance_and_memory_stays(start_server):
    # The rate limit off, so that what refuses is the allowance of new rooms.
    server = start_server(None, config=example_config("cfg.app.chat.rate = false"))
    chat_served(server)
    before = rss_kib(server.pid)
    stats = {}
    run(create_rooms(server, "maker", 3.0, stats, "r"))
    settle(server)
    m = metrics(server)
    # new_rooms = { burst = 10, per_second = 0.1 }: ten rooms, and one more at most
    assert 10 <= stats.get("joined", 0) <= 11, stats
    # every other join it sent (of those the server read before the close) was refused
    assert stats.get("too_many_new_rooms", 0) >= 100, stats
    assert m["moonwire_history_topics"] <= 12, m
    chat_served(server)
    if not SANITIZED:
        grown = rss_kib(server.pid) - before
        assert grown < 16 * 1024, f"RSS grew {grown} KiB for {stats}"


async def connect_with_rooms(server, seconds, stats, tag):
    """Connects with ?nick=&room= of ten new rooms, waits for the ten joins,
    closes, and again, for `seconds`: a new connection's allowances are full."""
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        rooms = ",".join(f"{tag}{i}x{k}" for k in range(10))
        ws = await open_chat(server, f"?nick={tag}{i}&room={rooms}")
        try:
            for _ in range(10):
                m = await expect(ws, lambda x: x["type"] in ("presence", "error"))
                key = m.get("code", "joined")
                stats[key] = stats.get(key, 0) + 1
        finally:
            await ws.close()
        i += 1


def test_rooms_made_by_reconnecting_clients_stay_within_the_history_bounds(start_server):
    # The example as shipped, with smaller history bounds to reach them in seconds.
    server = start_server(None, config=example_config(
        "cfg.history.max_topics = 500",
        "cfg.history.max_bytes = 1024 * 1024",
    ))
    chat_served(server, room="first")
    before = rss_kib(server.pid)
    stats = {}

    async def flood():
        await asyncio.gather(*(connect_with_rooms(server, 4.0, stats, f"k{k}x")
                               for k in range(3)))

    run(flood())
    settle(server, 20)
    m = metrics(server)
    assert stats.get("joined", 0) >= 1000, stats  # the flood went through, past the bounds
    assert m["moonwire_history_topics"] <= 500, m
    assert m["moonwire_history_bytes"] <= 1024 * 1024, m
    assert m['moonwire_history_dropped_total{reason="bounds"}'] >= stats["joined"] - 500, m
    assert m["moonwire_topics"] == 0, m  # every room was left
    if not SANITIZED:
        grown = rss_kib(server.pid) - before
        assert grown < 32 * 1024, f"RSS grew {grown} KiB for {stats}"

    # The first room made in the flood lost its history (nobody was in it):
    # whoever joins it starts a new epoch with nothing to catch up on.
    async def first_room():
        ws = await open_chat(server, "?nick=late&room=k0x0x0")
        try:
            return await expect(ws, lambda x: x["type"] == "history")
        finally:
            await ws.close()

    h = run(first_room())
    assert h["messages"] == [] and h["offset"] == 0 and h["recovered"] is True, h
    chat_served(server, room="first")


def test_subscriptions_past_max_topics_are_refused_counted_and_logged_once_a_second(start_server):
    server = start_server(None, config=example_config(
        "cfg.limits.max_topics = 50",
    ))
    chat_served(server)  # lobby made and left: no topic now

    async def hold_lobby_and_fill():
        keeper = await open_chat(server, "?nick=keeper&room=lobby")
        await expect(keeper, lambda m: m["type"] == "joined")
        fillers, refused = [], 0
        for k in range(8):  # 8 connections x 10 rooms = 80 rooms wanted, 49 left
            ws = await open_chat(server, f"?nick=f{k}")
            await ws.send(json.dumps({"type": "join", "rooms": [f"f{k}x{i}" for i in range(10)]}))
            fillers.append(ws)
        for ws in fillers:
            for _ in range(10):
                m = await expect(ws, lambda x: x["type"] in ("joined", "error"))
                if m["type"] == "error":
                    assert m["code"] == "server_full", m
                    assert "too many topics" in m["message"], m
                    refused += 1
        # Joining a room that has members still works, and so does talking.
        ws = await open_chat(server, "?nick=late&room=lobby")
        joined = await expect(ws, lambda x: x["type"] in ("joined", "error"))
        for w in fillers + [ws, keeper]:
            await w.close()
        return refused, joined

    refused, joined = run(hold_lobby_and_fill())
    assert refused == 80 - 49, refused
    assert joined["type"] == "joined", joined
    m = metrics(server)
    assert m['moonwire_subscribe_refusals_total{limit="max_topics"}'] == refused, m
    lines = [l for l in server.log().splitlines() if "topics: refused a subscription" in l]
    assert 1 <= len(lines) <= 3, lines  # gated: at most one a second
    assert "limits.max_topics (50) reached" in lines[0], lines
    chat_served(server)


def test_an_upgrade_joining_ten_full_rooms_gets_a_bounded_history(start_server):
    server = start_server(None, config=example_config("cfg.app.chat.rate = false"))
    rooms = [f"big{i}" for i in range(10)]

    async def fill():
        ws = await open_chat(server, "?nick=writer&room=" + ",".join(rooms))
        for _ in rooms:
            await expect(ws, lambda m: m["type"] == "joined")
        text = "y" * 1900
        for i in range(100):
            for room in rooms:
                await ws.send(json.dumps({"type": "say", "room": room, "text": text, "id": i}))
            # read as we go: the room messages come back to the writer
            for _ in rooms:
                await expect(ws, lambda m: m["type"] == "sent", timeout=10)
        await ws.close()

    async def reader():
        ws = await websockets.connect(f"{server.url}/chat?nick=reader&room=" + ",".join(rooms),
                                      max_size=None, close_timeout=1)
        total, per_room, histories = 0, [], 0
        try:
            while histories < 10:
                raw = await asyncio.wait_for(ws.recv(), 10)
                m = json.loads(raw)
                if m["type"] == "history":
                    histories += 1
                    size = len(re.search(r'"messages":\[(.*)\]\}$', raw, re.S).group(1))
                    per_room.append(size)
                    total += size
        finally:
            await ws.close()
        return total, per_room

    run(fill(), timeout=120)
    total, per_room = run(reader())
    # app.chat.history_bytes = 64 KiB a room, join_history_bytes = 256 KiB in all
    # (the baseline sent ~788 KB of history for this one upgrade)
    assert total <= 256 * 1024, (total, per_room)
    assert max(per_room) <= 64 * 1024, per_room
    assert per_room[0] > 32 * 1024, per_room  # not nothing: the newest that fit
    chat_served(server)


def test_the_query_nick_and_rooms_cost_rate_limit_tokens(start_server):
    # The example's burst of 10, refilled slowly enough that no token comes back meanwhile.
    server = start_server(None, config=example_config(
        "cfg.app.chat.rate = { burst = 10, per_second = 0.01 }"))

    async def go():
        ws = await open_chat(server, "?nick=ann&room=lobby")
        await expect(ws, lambda m: m["type"] == "presence")  # the query's join is done
        for i in range(10):
            await ws.send(json.dumps({"type": "ping", "id": i}))
        pongs = limited = 0
        while pongs + limited < 10:
            m = await expect(ws, lambda x: x["type"] in ("pong", "error"))
            if m["type"] == "pong":
                pongs += 1
            else:
                assert m["code"] == "rate_limited", m
                limited += 1
        await ws.close()
        return pongs, limited

    pongs, limited = run(go())
    # Ten tokens, two spent by the query (the nick, the rooms).
    assert (pongs, limited) == (8, 2)
    chat_served(server)
