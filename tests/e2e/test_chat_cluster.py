"""scripts/chat.lua on several nodes of the real binary sharing one real
redis-server (started by the test on a free port, stopped by PID), driven by
Python websockets clients speaking the chat protocol (docs/chat-protocol.md):
member lists and presence events across nodes, says, private messages, nick
uniqueness (a race of simultaneous joins too), recovery on another node after
a drop, and a killed node's members leaving the member list. Every wait is
bounded."""
import asyncio
import json
import time

import pytest
import websockets

from conftest import wait_until
from test_cluster import REDIS, Redis, cluster_up

pytestmark = pytest.mark.skipif(REDIS is None, reason="redis-server is not installed")

PRESENCE_TTL = 3  # seconds: how long a dead node's members stay in presence
GRACE = 10        # seconds: scripts/lib/nicks.lua GRACE_MS, a fresh claim is never stale

CONFIG = f"""
return {{
  cluster = {{ presence_ttl = {PRESENCE_TTL}, reconnect_max = 0.5 }},
  history = {{ topics = {{ "room:*" }}, size = 100 }},
  app = {{ chat = {{ rate = false }} }},
}}
"""


@pytest.fixture
def redis():
    r = Redis()
    yield r
    r.stop()


@pytest.fixture
def nodes(start_server, redis):
    """nodes("a", "b", ...) -> chat servers on one Redis, all connected to it."""
    def start(*names):
        servers = [start_server("scripts/chat.lua", config=CONFIG,
                                args=["--node-id", name, "--redis", redis.url])
                   for name in names]
        wait_until(lambda: all(cluster_up(s) for s in servers), timeout=10,
                   what="every node on Redis")
        return servers
    return start


def run(coro, timeout=90):
    return asyncio.run(asyncio.wait_for(coro, timeout=timeout))


class Chat:
    """One chat client. Messages read while looking for another are kept in
    `seen`, in order, for the next expect (messages from Redis and direct
    replies may come in either order)."""

    def __init__(self, ws):
        self.ws = ws
        self.seen = []
        self.next_id = 0
        self.id = None

    @classmethod
    async def open(cls, server, nick=None, room=None):
        query = "&".join(f"{k}={v}" for k, v in (("nick", nick), ("room", room)) if v)
        ws = await websockets.connect(f"{server.url}/chat" + (f"?{query}" if query else ""),
                                      close_timeout=1)
        c = cls(ws)
        c.nick = nick
        c.id = (await c.expect("welcome"))["id"]
        if nick:
            await c.expect("nick_set")
        return c

    @classmethod
    async def join(cls, server, nick, room):
        """A member of room: joined, its history, then its own join event, which
        comes back through Redis, so this node is subscribed to the room."""
        c = await cls.open(server, nick, room)
        c.joined = await c.expect("joined", room=room)
        c.history = await c.expect("history", room=room)
        await c.expect("presence", room=room, event="join", nick=nick)
        return c

    async def recv(self, timeout=5.0):
        return json.loads(await asyncio.wait_for(self.ws.recv(), timeout))

    def _take(self, match):
        for i, m in enumerate(self.seen):
            if match(m):
                return self.seen.pop(i)
        return None

    async def _wait_for(self, match, what, timeout):
        """The first message, kept or new, that matches; the others stay kept."""
        found = self._take(match)
        deadline = time.monotonic() + timeout
        while found is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {what} within {timeout}s; kept {self.seen[-5:]}")
            try:
                m = await self.recv(left)
            except asyncio.TimeoutError:
                continue
            if match(m):
                return m
            self.seen.append(m)
        return found

    async def expect(self, type_, timeout=5.0, **fields):
        """The first message of that type with those fields."""
        return await self._wait_for(
            lambda m: m["type"] == type_ and all(m.get(k) == v for k, v in fields.items()),
            f"{type_} {fields}", timeout)

    async def send(self, **msg):
        self.next_id += 1
        msg["id"] = self.next_id
        await self.ws.send(json.dumps(msg))
        return self.next_id

    async def ask(self, timeout=5.0, **msg):
        """Sends a request; returns its reply or error (the message with its ref)."""
        ref = await self.send(**msg)
        return await self._wait_for(lambda m: m.get("ref") == ref, f"an answer to {msg}", timeout)

    async def members(self, room):
        m = await self.ask(type="members", room=room)
        assert m["type"] == "members", m
        return m["members"]

    async def close(self):
        await self.ws.close()


async def eventually_members(client, room, want, within):
    """Polls the member list until it is `want` (presence settles within a
    Redis round trip, or within presence_ttl for a dead node)."""
    started = time.monotonic()
    while (got := await client.members(room)) != want:
        assert time.monotonic() - started < within, f"members are {got}, not {want}"
        await asyncio.sleep(0.1)


def test_members_presence_events_says_and_history_cross_nodes(nodes):
    a, b = nodes("a", "b")

    async def go():
        ann = await Chat.join(a, "ann", "lobby")
        assert ann.joined["members"] == ["ann"]
        # A room that never had a message: offset 0, no epoch yet.
        assert ann.history["offset"] == 0 and "epoch" not in ann.history, ann.history
        bob = await Chat.join(b, "bob", "lobby")
        assert bob.joined["members"] == ["ann", "bob"]  # presence of another node
        join = await ann.expect("presence", room="lobby", event="join", nick="bob")
        assert await ann.members("lobby") == ["ann", "bob"]
        assert await bob.members("lobby") == ["ann", "bob"]

        # A say crosses nodes, with one offset for everyone, the sender included.
        ref = await ann.send(type="say", room="lobby", text="hello from a")
        mine = await ann.expect("say", text="hello from a")
        sent = await ann.expect("sent", ref=ref)
        theirs = await bob.expect("say", text="hello from a")
        assert theirs == mine and theirs["from"] == "ann"
        assert sent["offset"] == theirs["offset"] == join["offset"] + 1
        await bob.send(type="say", text="hi from b")
        assert (await ann.expect("say", text="hi from b"))["offset"] == theirs["offset"] + 1

        # A nick change on b is an event on a; the member list follows.
        reply = await bob.ask(type="nick", nick="robert")
        assert reply["type"] == "nick_set" and reply["old"] == "bob"
        await ann.expect("presence", event="nick", nick="robert", old="bob")
        assert await ann.members("lobby") == ["ann", "robert"]

        # A late joiner on b gets the history, messages said on a included.
        cat = await Chat.join(b, "cat", "lobby")
        said = [m["text"] for m in cat.history["messages"] if m["type"] == "say"]
        assert said == ["hello from a", "hi from b"]
        offsets = [m["offset"] for m in cat.history["messages"]]
        assert offsets == list(range(1, cat.history["offset"] + 1))  # one gapless sequence
        await ann.expect("presence", event="join", nick="cat")

        # Leaving on b is an event on a.
        reply = await cat.ask(type="leave", room="lobby")
        assert reply["type"] == "left"
        left = await ann.expect("presence", event="leave", nick="cat")
        assert left["reason"] == "left"
        await eventually_members(ann, "lobby", ["ann", "robert"], within=5)
        for c in (ann, bob, cat):
            await c.close()
    run(go())


def test_a_private_message_reaches_a_nick_on_the_other_node(nodes):
    a, b = nodes("a", "b")

    async def go():
        ann = await Chat.join(a, "ann", "lobby")
        bob = await Chat.join(b, "Bob", "lobby")
        cat = await Chat.join(a, "cat", "lobby")
        pm = await ann.ask(type="private", room="lobby", to="BOB", text="psst, bob")
        assert pm["type"] == "private" and pm["to"] == "Bob" and pm["from"] == "ann"
        got = await bob.expect("private")
        assert (got["from"], got["to"], got["text"]) == ("ann", "Bob", "psst, bob")
        assert "ref" not in got
        # ...and back, from b to a.
        await bob.ask(type="private", to="ann", text="hi ann")
        assert (await ann.expect("private"))["text"] == "hi ann"
        err = await ann.ask(type="private", to="nobody", text="?")
        assert err["code"] == "no_such_member"
        await asyncio.sleep(0.3)
        assert not [m for m in cat.seen if m["type"] == "private"]
        assert not any(json.loads(m)["type"] == "private" for m in cat.ws.messages)
        for c in (ann, bob, cat):
            await c.close()
    run(go())


def test_a_client_that_drops_recovers_exactly_what_it_missed_on_the_other_node(nodes):
    a, b = nodes("a", "b")

    async def go():
        ann = await Chat.join(a, "ann", "lobby")
        bob = await Chat.join(b, "bob", "lobby")
        cat = await Chat.join(a, "cat", "lobby")
        for i in range(3):
            await ann.send(type="say", text=f"before {i}")
        last = None
        while last is None or last["text"] != "before 2":
            last = await cat.expect("say")
        position = (last["offset"], last["epoch"])
        await cat.close()  # cat drops...

        # ...and misses messages from both nodes.
        await bob.expect("presence", event="leave", nick="cat")
        for i in range(3):
            await ann.send(type="say", text=f"missed a{i}")
            await bob.send(type="say", text=f"missed b{i}")
        for i in range(3):
            await bob.expect("say", text=f"missed a{i}")
        for i in range(3):
            await ann.expect("say", text=f"missed b{i}")

        # cat comes back on the other node with its position.
        back = await Chat.open(b, "cat")
        await back.send(type="join", room="lobby", since=position[0], epoch=position[1])
        joined = await back.expect("joined", room="lobby")
        assert joined["members"] == ["ann", "bob", "cat"]
        h = await back.expect("history", room="lobby")
        assert h["recovered"] is True and h["epoch"] == position[1]
        offsets = [m["offset"] for m in h["messages"]]
        assert offsets == list(range(position[0] + 1, h["offset"] + 1))
        texts = [m.get("text") or f'{m["event"]}:{m["nick"]}' for m in h["messages"]]
        assert texts[0] == "leave:cat"
        assert sorted(texts[1:]) == sorted([f"missed a{i}" for i in range(3)] +
                                           [f"missed b{i}" for i in range(3)])
        # Then the live messages go on from there.
        own = await back.expect("presence", event="join", nick="cat")
        assert own["offset"] == h["offset"] + 1
        await ann.send(type="say", text="welcome back")
        assert (await back.expect("say", text="welcome back"))["offset"] == own["offset"] + 1

        # A position from another epoch does not recover: the latest messages come.
        other = await Chat.open(a, "dan")
        await other.send(type="join", room="lobby", since=position[0], epoch="not-this-one")
        h = await other.expect("history", room="lobby")
        assert h["recovered"] is False and h["epoch"] == position[1]
        assert h["messages"][-1]["offset"] == h["offset"]
        for c in (ann, bob, back, other):
            await c.close()
    run(go())


async def answer_to_join(c, room):
    """Sends a join of room; returns "joined" or the error code."""
    await c.send(type="join", room=room)
    while True:
        m = await c.recv()
        if m["type"] in ("joined", "error"):
            return m.get("code") or "joined"


async def attempt(server, nick, room):
    """A client with that nick that tries to join room: (client, "joined" or the error code)."""
    c = await Chat.open(server, nick)
    return c, await answer_to_join(c, room)


def test_nicks_are_unique_per_room_across_nodes_even_when_joins_race(nodes):
    a, b = nodes("a", "b")

    async def go():
        ann = await Chat.join(a, "ann", "lobby")
        other, outcome = await attempt(b, "ANN", "lobby")
        assert outcome == "nick_taken"
        await eventually_members(ann, "lobby", ["ann"], within=5)
        # A nick change on b into a nick held on a is refused too.
        bob = await Chat.join(b, "bob", "lobby")
        reply = await bob.ask(type="nick", nick="Ann")
        assert reply["code"] == "nick_taken" and reply["room"] == "lobby"
        # Once ann leaves, her nick is free on the other node at once.
        await ann.ask(type="leave", room="lobby")
        reply = await bob.ask(type="nick", nick="Ann")
        assert reply["type"] == "nick_set", reply
        for c in (ann, bob, other):
            await c.close()

        # Ten joins with three nicks (in several cases), half on each node,
        # sent at once once everyone is connected: one join per nick succeeds.
        for round_ in range(3):
            room = f"race{round_}"
            spellings = ["zed{}", "Zed{}", "ZED{}"]
            clients = await asyncio.gather(*(Chat.open((a, b)[i % 2], spellings[i // 3 % 3].format(i % 3))
                                             for i in range(10)))
            outcomes = await asyncio.gather(*(answer_to_join(c, room) for c in clients))
            by_nick = {}
            for i, outcome in enumerate(outcomes):
                by_nick.setdefault(f"zed{i % 3}", []).append(outcome)
            for nick, got in by_nick.items():
                assert got.count("joined") == 1, (room, nick, got)
                assert set(got) <= {"joined", "nick_taken"}, got
            watcher = clients[outcomes.index("joined")]
            await eventually_members(watcher, room, sorted(
                c.nick for c, outcome in zip(clients, outcomes) if outcome == "joined"), within=5)
            for c in clients:
                await c.close()

        # Members of one room on both nodes take one new nick at once: one gets it.
        members = [await Chat.join((a, b)[i % 2], f"m{i}", "renames") for i in range(4)]
        for round_ in range(5):
            replies = await asyncio.gather(*(c.ask(type="nick", nick=f"Same{round_}") for c in members))
            got = [r["type"] if r["type"] == "nick_set" else r["code"] for r in replies]
            assert got.count("nick_set") == 1 and got.count("nick_taken") == 3, got
            names = await members[0].members("renames")
            assert len({n.lower() for n in names}) == 4, names
        for c in members:
            await c.close()
    run(go())


def test_a_killed_node_s_members_leave_the_member_list_and_free_their_nicks(nodes):
    a, b = nodes("a", "b")

    async def go():
        ann = await Chat.join(a, "ann", "lobby")
        bob = await Chat.join(b, "bob", "lobby")
        await eventually_members(ann, "lobby", ["ann", "bob"], within=5)
        b.kill()  # no on_close, no cleanup: only presence_ttl tells
        await eventually_members(ann, "lobby", ["ann"], within=PRESENCE_TTL + 3)
        # bob's nick claim is stale once bob is out of presence and the claim
        # is older than the grace: then a new bob can join on a.
        started = time.monotonic()
        while True:
            c, outcome = await attempt(a, "bob", "lobby")
            if outcome == "joined":
                break
            assert outcome == "nick_taken", outcome
            assert time.monotonic() - started < GRACE + PRESENCE_TTL + 5, "bob's nick stayed taken"
            await c.close()
            await asyncio.sleep(0.5)
        await eventually_members(ann, "lobby", ["ann", "bob"], within=5)
        await ann.close()
        await c.close()
        await bob.ws.close_transport() if hasattr(bob.ws, "close_transport") else None
    run(go())


def test_without_redis_a_say_waits_in_the_outbox_and_what_needs_the_cluster_says_unavailable(
        nodes, redis):
    a, b = nodes("a", "b")

    async def go():
        ann = await Chat.join(a, "ann", "lobby")
        cat = await Chat.join(a, "cat", "lobby")
        bob = await Chat.join(b, "bob", "lobby")
        before = (await ann.expect("presence", event="join", nick="bob"))["epoch"]
        redis.kill()
        wait_until(lambda: not cluster_up(a), what="a to notice Redis is gone")
        # Every client hears that delivery is delayed.
        for c in (ann, cat, bob):
            await c.expect("delivery", delayed=True)
        ref = await ann.send(type="say", text="said while redis is down")
        sent = await ann.expect("sent", ref=ref)
        assert sent["delayed"] is True and "offset" not in sent, sent
        for request in ({"type": "members"}, {"type": "private", "to": "bob", "text": "?"},
                        {"type": "history"}, {"type": "join", "room": "other"},
                        {"type": "nick", "nick": "anna"}):
            reply = await ann.ask(**request)
            assert reply["type"] == "error" and reply["code"] == "unavailable", (request, reply)
            assert reply["message"].startswith("the cluster is unavailable ("), reply
        # A room's messages are numbered by Redis: nobody has it yet, on either node.
        await asyncio.sleep(0.3)
        for c in (ann, cat, bob):
            assert not [m for m in c.seen if m.get("text") == "said while redis is down"]
            assert not any("said while redis is down" in m for m in c.ws.messages)

        restarted = Redis(redis.port)  # the same address, empty
        try:
            # Once both nodes are back, it reaches every member, with an offset
            # of the new epoch (Redis came back empty), once.
            said = [await c.expect("say", text="said while redis is down", timeout=20)
                    for c in (ann, cat, bob)]
            assert said[0] == said[1] == said[2], said
            assert said[0]["offset"] >= 1 and said[0]["epoch"] != before
            for c in (ann, cat, bob):
                await c.expect("delivery", delayed=False)
            await asyncio.sleep(0.3)
            for c in (ann, cat, bob):
                again = [m for m in c.seen if m.get("text") == "said while redis is down"]
                assert again == [], again
            # And the room works across nodes again.
            await bob.send(type="say", text="back")
            assert (await ann.expect("say", text="back"))["offset"] == said[0]["offset"] + 1
        finally:
            restarted.stop()
        for c in (ann, cat, bob):
            await c.close()
    run(go())
