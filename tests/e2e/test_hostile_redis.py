"""Hostile case: Redis goes away in the middle of traffic (issue 12, finding 7).

What a node sends to the other nodes waits in its outbox while Redis is away
and is delivered, in order and once, when Redis is back; past the outbox's
bounds the sender is told (bytes) or the drop is counted and logged (age).
Each case runs real binaries on a real redis-server that the test starts on
a free port, kills and starts again by PID, with Python websockets clients;
each checks that normal clients are still served and that the nodes' memory
stayed bounded. Every wait is bounded in time."""
import asyncio
import json
import socket
import time
import urllib.request

import pytest
import websockets

from conftest import wait_until
from hostile import metrics, rss_kib
from test_chat_cluster import Chat
from test_cluster import REDIS, Partition, Redis, cluster_up

pytestmark = pytest.mark.skipif(REDIS is None, reason="redis-server is not installed")

OUTAGE = 5.0             # seconds Redis stays dead
RSS_BOUND_KIB = 64 << 10  # what a node may grow during a case

# Relay and chat share one Redis under two prefixes, so that the relay's
# broadcasts do not reach the chat's clients (and Redis dies for both).
RELAY_CONF = 'return { cluster = { prefix = "relay", reconnect_max = 0.5 } }'


def chat_conf(extra=""):
    return f"""
return {{
  cluster = {{ prefix = "chat", reconnect_max = 0.5, presence_ttl = 5 {extra} }},
  history = {{ topics = {{ "room:*" }}, size = 2000 }},
  app = {{ chat = {{ rate = false }} }},
}}
"""


def run(coro, timeout=120):
    return asyncio.run(asyncio.wait_for(coro, timeout=timeout))


def healthz(server):
    return urllib.request.urlopen(server.http + "/healthz", timeout=5).read().decode()


async def relay_served(server):
    """A normal client of the relay is served: what one sends, another gets."""
    async with websockets.connect(server.url, close_timeout=1) as x, \
            websockets.connect(server.url, close_timeout=1) as y:
        await asyncio.sleep(0.05)
        await x.send("still served?")
        while await asyncio.wait_for(y.recv(), 5) != "still served?":
            pass


async def chat_served(server):
    """A normal chat client is served: welcome, then a pong to its ping."""
    async with websockets.connect(server.url + "/chat", close_timeout=1) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "welcome"
        await ws.send(json.dumps({"type": "ping", "id": 99}))
        while True:
            m = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if m.get("ref") == 99:
                assert m["type"] == "pong", m
                return


@pytest.fixture
def redis():
    r = Redis()
    yield r
    r.stop()


def start_nodes(start_server, redis, script, conf, names):
    servers = [start_server(script, config=conf, args=["--node-id", n, "--redis", redis.url])
               for n in names]
    wait_until(lambda: all(cluster_up(s) for s in servers), timeout=10,
               what="every node on Redis")
    return servers


def wait_peers_counted(servers):
    # A node counts the nodes on Redis every second; give it one count with
    # everybody there, so that after the outage it waits for all of them.
    time.sleep(1.5)


def test_redis_killed_for_5_s_mid_traffic_loses_nothing_between_two_relay_and_two_chat_nodes(
        start_server, redis):
    ra, rb = start_nodes(start_server, redis, "scripts/relay.lua", RELAY_CONF, ["ra", "rb"])
    ca, cb = start_nodes(start_server, redis, "scripts/chat.lua", chat_conf(), ["ca", "cb"])
    nodes = (ra, rb, ca, cb)
    wait_peers_counted(nodes)
    rss_before = {s.pid: rss_kib(s.pid) for s in nodes}
    marks = {}

    async def go():
        # Relay: a sender and a local reader on ra, a reader on rb.
        sender = await websockets.connect(ra.url, close_timeout=1)
        near = await websockets.connect(ra.url, close_timeout=1)
        far = await websockets.connect(rb.url, close_timeout=1)
        # Chat: ann says, cat (same node) and bob (the other node) read.
        ann = await Chat.join(ca, "ann", "lobby")
        cat = await Chat.join(ca, "cat", "lobby")
        bob = await Chat.join(cb, "bob", "lobby")
        await ann.expect("presence", event="join", nick="bob")
        await asyncio.sleep(0.3)
        got = {"near": [], "far": []}
        sent_so_far = {"relay": 0, "chat": 0}
        chat_sent_at = []
        stop = asyncio.Event()

        async def read_relay(ws, key):
            while True:
                got[key].append((int(await ws.recv()), time.monotonic()))

        async def send_relay():
            i = 0
            while not stop.is_set():
                await sender.send(str(i))
                i += 1
                sent_so_far["relay"] = i
                await asyncio.sleep(0.01)
            return i

        async def send_chat():
            i = 0
            while not stop.is_set():
                chat_sent_at.append(time.monotonic())
                await ann.send(type="say", text=f"c{i}")
                i += 1
                sent_so_far["chat"] = i
                await asyncio.sleep(0.02)
            return i

        readers = [asyncio.ensure_future(read_relay(near, "near")),
                   asyncio.ensure_future(read_relay(far, "far"))]
        senders = [asyncio.ensure_future(send_relay()), asyncio.ensure_future(send_chat())]
        await asyncio.sleep(1.0)
        redis.kill()
        marks["killed"] = time.monotonic()
        await asyncio.sleep(0.5)
        # How many were sent by then and by the end of the outage: the rates
        # are the senders' own (a loaded machine sends fewer).
        marks["sent_early"] = dict(sent_so_far)
        await asyncio.sleep(OUTAGE - 0.5)
        marks["sent_down"] = dict(sent_so_far)
        marks["down_near"] = len(got["near"])
        marks["health"] = healthz(ra)
        marks["restarted"] = time.monotonic()
        restarted = Redis(redis.port)  # the same address, empty
        try:
            await asyncio.sleep(1.5)
            stop.set()
            n_relay, n_chat = await asyncio.gather(*senders)
            # Everything reaches the other node, in order, once.
            deadline = time.monotonic() + 30
            while len(got["far"]) < n_relay and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            said = []
            while not said or said[-1]["text"] != f"c{n_chat - 1}":
                said.append(await bob.expect("say", timeout=30))
            mine = []
            while len(mine) < n_chat:
                mine.append(await cat.expect("say", timeout=30))
            sent = []
            while len(sent) < n_chat:
                m = await ann._wait_for(lambda m: m["type"] in ("sent", "error"), "a reply", 30)
                sent.append(m)
            await asyncio.sleep(0.5)  # anything twice would come by now
            for r in readers:
                r.cancel()
            late_far = [m for m in bob.seen if m["type"] == "say"] + \
                       [json.loads(m) for m in bob.ws.messages if '"say"' in m]
            for ws in (sender, near, far):
                await ws.close()
            for c in (ann, cat, bob):
                await c.close()

            # Relay: every message, in order, once, on both nodes.
            far_ids = [i for i, _ in got["far"]]
            assert far_ids == list(range(n_relay)), (n_relay, far_ids[:5], far_ids[-5:])
            assert [i for i, _ in got["near"]] == list(range(n_relay))
            # Local delivery went on during the outage; what was sent then
            # reached the other node only after Redis was back.
            relay_down = marks["sent_down"]["relay"] - marks["sent_early"]["relay"]
            assert relay_down > 20, marks
            assert marks["down_near"] >= marks["sent_down"]["relay"] - 20, marks
            during = [t for i, t in got["near"] if marks["killed"] + 0.5 < t < marks["restarted"]]
            assert len(during) >= relay_down - 20, (len(during), marks)
            sent_during = [i for i, t in got["near"] if marks["killed"] + 0.5 < t < marks["restarted"]]
            arrived = dict(got["far"])
            assert all(arrived[i] > marks["restarted"] for i in sent_during)

            # Chat: every say reaches cat (same node) in order, once,
            # numbered; the sender was told which were delayed. Bob (the
            # other node) gets them in order, once, too, but for a say Redis
            # answered just before it was killed and had not yet written to
            # his node: a history topic's message is not sent again
            # (scaling.md, "The outbox"); Redis came back empty, and the new
            # epoch tells clients that what came before it is gone.
            assert [m["text"] for m in mine] == [f"c{i}" for i in range(n_chat)]
            bob_ids = [int(m["text"][1:]) for m in said]
            assert bob_ids == sorted(set(bob_ids)), bob_ids
            lost = sorted(set(range(n_chat)) - set(bob_ids))
            assert len(lost) <= 3 and all(
                marks["killed"] - 0.5 < chat_sent_at[i] < marks["killed"] and "offset" in sent[i]
                for i in lost), (lost, [chat_sent_at[i] - marks["killed"] for i in lost])
            assert late_far == [], late_far
            assert all(m["type"] == "sent" for m in sent), [m for m in sent if m["type"] != "sent"]
            delayed = [m for m in sent if m.get("delayed")]
            chat_down = marks["sent_down"]["chat"] - marks["sent_early"]["chat"]
            assert chat_down > 10, marks
            assert len(delayed) >= chat_down - 10, (len(delayed), marks)
            assert all("offset" not in m for m in delayed)
            epochs = []
            for m in said:
                if not epochs or epochs[-1][0] != m["epoch"]:
                    epochs.append((m["epoch"], []))
                epochs[-1][1].append(m["offset"])
            assert len(epochs) == 2, [e for e, _ in epochs]  # Redis came back empty: a new epoch
            for _, offsets in epochs:
                assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
            # Redis up: every outbox empties (the leave events of the clients
            # just closed included), and nothing was dropped or refused.
            wait_until(lambda: all(metrics(s)['moonwire_cluster_outbox_messages{shard="0"}'] == 0
                                   for s in nodes), timeout=10, what="every outbox empty")
            for s in nodes:
                m = metrics(s)
                assert m["moonwire_cluster_outbox_dropped_total"] == 0
                assert m["moonwire_cluster_outbox_refused_total"] == 0
        finally:
            restarted.stop()

    run(go())
    assert marks["health"].startswith("degraded: redis unavailable; outbox "), marks["health"]
    for s in (ra, ca):
        log = s.log()
        assert "cluster: messages for the other nodes wait in the outbox (Redis unavailable)" in log \
            or "wait in the outbox (Redis unavailable)" in log, log[-3000:]
        assert "cluster: the outbox is out: " in log, log[-3000:]
    # Normal clients are still served, and memory stayed bounded.
    for s in nodes:
        assert s.proc.poll() is None, s.log()[-3000:]
        assert rss_kib(s.pid) - rss_before[s.pid] < RSS_BOUND_KIB
    run(relay_served(ra), 20)
    run(relay_served(rb), 20)
    run(chat_served(ca), 20)
    run(chat_served(cb), 20)


def test_past_the_outbox_size_a_say_is_refused_with_an_error_naming_the_cause(start_server, redis):
    ca, cb = start_nodes(start_server, redis, "scripts/chat.lua",
                         chat_conf(", outbox_size = 65536"), ["ca", "cb"])
    wait_peers_counted((ca, cb))
    rss_before = {s.pid: rss_kib(s.pid) for s in (ca, cb)}
    text = "x" * 1900

    async def go():
        ann = await Chat.join(ca, "ann", "lobby")
        cat = await Chat.join(ca, "cat", "lobby")
        bob = await Chat.join(cb, "bob", "lobby")
        await ann.expect("presence", event="join", nick="bob")
        redis.kill()
        wait_until(lambda: not cluster_up(ca), what="ca to notice Redis is gone")
        accepted, refused = [], None
        for i in range(200):
            reply = await ann.ask(type="say", text=f"{i} {text}")
            if reply["type"] == "error":
                refused = (i, reply)
                break
            assert reply["type"] == "sent" and reply["delayed"] is True, reply
            accepted.append(i)
        assert refused is not None, "64 KiB of says never filled the outbox"
        i, err = refused
        assert err["code"] == "unavailable" and "outbox full" in err["message"], err
        assert 20 < len(accepted) < 40, len(accepted)
        m = metrics(ca)
        assert m["moonwire_cluster_outbox_refused_total"] == 1
        assert 60000 < m['moonwire_cluster_outbox_bytes{shard="0"}'] <= 65536
        assert m['moonwire_cluster_outbox_messages{shard="0"}'] == len(accepted)
        # A refused say reaches nobody; the accepted ones reach everyone once
        # Redis is back, and a say after that goes out again.
        restarted = Redis(redis.port)
        try:
            for c in (bob, cat):
                texts = [(await c.expect("say", timeout=20))["text"].split()[0]
                         for _ in accepted]
                assert texts == [str(k) for k in accepted]
            reply = await ann.ask(type="say", text="after")
            assert reply["type"] == "sent" and "delayed" not in reply and reply["offset"] > 0, reply
            assert (await bob.expect("say", text="after"))["offset"] == reply["offset"]
            await asyncio.sleep(0.3)
            assert not [x for x in bob.seen + cat.seen if x.get("text", "").startswith(f"{i} ")]
        finally:
            restarted.stop()
        for c in (ann, cat, bob):
            await c.close()

    run(go())
    assert "cluster: the outbox is full (" in ca.log()
    for s in (ca, cb):
        assert rss_kib(s.pid) - rss_before[s.pid] < RSS_BOUND_KIB
        run(chat_served(s), 20)


API_APP = """
local mw = require "moonwire"
local app = {}
function app.on_open(conn, req)
  conn:subscribe("room")
  conn:subscribe("room:h")
  conn:send("id:" .. conn.id)
end
local function show(...)
  local t = table.pack(...)
  for i = 1, t.n do t[i] = tostring(t[i]) end
  return table.concat(t, ",", 1, t.n)
end
function app.on_message(conn, data)
  local cmd, rest = data:match("^(%w+):(.*)$")
  if cmd == "pub" then conn:send("pub=" .. show(mw.publish("room", rest, { except = conn })))
  elseif cmd == "hist" then conn:send("hist=" .. show(mw.publish("room:h", rest, { except = conn })))
  elseif cmd == "all" then conn:send("all=" .. show(mw.broadcast(rest, { except = conn })))
  elseif cmd == "to" then
    local id, text = rest:match("^([^ ]+) (.*)$")
    conn:send("to=" .. show(mw.send(id, text)))
  elseif cmd == "state" then
    local c = mw.cluster()
    conn:send(("state=%s,%s,%d"):format(tostring(c.up), tostring(c.delayed), c.outbox.messages))
  end
end
return app
"""


def test_publish_broadcast_and_send_say_queued_while_redis_is_down_and_outbox_full_past_it(
        start_server, redis, tmp_script):
    script = tmp_script(API_APP)
    conf = ("return { cluster = { reconnect_max = 0.5, outbox_size = 65536 },"
            " history = { topics = { 'room:h' } } }")
    a, b = start_nodes(start_server, redis, script, conf, ["a", "b"])
    wait_peers_counted((a, b))

    async def go():
        x = await websockets.connect(a.url, close_timeout=1)
        near = await websockets.connect(a.url, close_timeout=1)
        far = await websockets.connect(b.url, close_timeout=1)
        for ws in (x, near, far):
            ws.conn_id = (await asyncio.wait_for(ws.recv(), 5))[3:]

        async def ask(msg, want_prefix):
            await x.send(msg)
            while True:
                m = await asyncio.wait_for(x.recv(), 5)
                if m.startswith(want_prefix):
                    return m
        await asyncio.sleep(0.3)
        assert await ask("state:", "state=") == "state=true,false,0"
        assert await ask("pub:up", "pub=") == "pub=1"
        assert await ask("hist:{}", "hist=") == "hist=1,1"  # offset 1, one here
        # Delivered before the outage (a Redis killed right after it answered
        # could still lose what it had not pushed to the subscribers).
        for ws in (far, near):
            assert await asyncio.wait_for(ws.recv(), 5) == "up"
            e1 = json.loads(await asyncio.wait_for(ws.recv(), 5))["epoch"]
        redis.kill()
        wait_until(lambda: not cluster_up(a), what="a to notice")
        assert await ask("state:", "state=") == "state=false,true,0"
        assert await ask("pub:p1", "pub=") == "pub=1,queued"
        assert await ask("all:b1", "all=") == "all=1,queued"
        assert await ask(f"to:{far.conn_id} d1", "to=") == "to=true,queued"
        assert await ask("hist:{}", "hist=") == "hist=0,0,queued"
        assert await ask("state:", "state=") == "state=false,true,4"
        big = "y" * 40000
        assert await ask("pub:" + big, "pub=") == "pub=1,queued"
        assert await ask("pub:" + big, "pub=") == "pub=nil,outbox full"
        assert await ask("all:" + big, "all=") == "all=nil,outbox full"
        assert await ask(f"to:{far.conn_id} {big}", "to=") == "to=nil,outbox full"
        assert await ask("hist:" + big, "hist=") == "hist=nil,outbox full"
        restarted = Redis(redis.port)
        try:
            async def take(ws, n):
                out = []
                while len(out) < n:
                    m = await asyncio.wait_for(ws.recv(), 20)
                    out.append(json.loads(m) if m.startswith("{") else m)
                return out
            # The other node: what waited, in order, once, the history one
            # numbered in the epoch of the Redis that came back empty.
            got = await take(far, 5)
            e2 = got[3]["epoch"]
            assert got == ["p1", "b1", "d1", {"offset": 1, "epoch": e2}, big], got[:4]
            # This node: the plain ones at once, the history one when numbered.
            got = await take(near, 4)
            assert got == ["p1", "b1", big, {"offset": 1, "epoch": e2}], got[:3]
            assert e1 != e2
            await asyncio.sleep(0.3)
            assert not far.messages and not near.messages
            assert await ask("state:", "state=") == "state=true,false,0"
            assert await ask("pub:again", "pub=") == "pub=1"
        finally:
            restarted.stop()
    run(go())


def test_a_message_older_than_outbox_max_age_is_dropped_counted_and_logged(start_server, redis):
    conf = 'return { cluster = { prefix = "relay", reconnect_max = 0.5, outbox_max_age = 1 } }'
    a, b = start_nodes(start_server, redis, "scripts/relay.lua", conf, ["a", "b"])
    wait_peers_counted((a, b))
    rss_before = {s.pid: rss_kib(s.pid) for s in (a, b)}

    async def go():
        x = await websockets.connect(a.url, close_timeout=1)
        near = await websockets.connect(a.url, close_timeout=1)
        far = await websockets.connect(b.url, close_timeout=1)
        await asyncio.sleep(0.3)
        redis.kill()
        wait_until(lambda: not cluster_up(a), what="a to notice")
        await x.send("too old")
        assert await asyncio.wait_for(near.recv(), 5) == "too old"  # here at once
        wait_until(lambda: metrics(a)["moonwire_cluster_outbox_dropped_total"] == 1, timeout=5,
                   what="the message to be dropped for its age")
        assert metrics(a)['moonwire_cluster_outbox_messages{shard="0"}'] == 0
        await x.send("fresh")
        assert await asyncio.wait_for(near.recv(), 5) == "fresh"
        restarted = Redis(redis.port)
        try:
            assert await asyncio.wait_for(far.recv(), 20) == "fresh"
            await asyncio.sleep(0.3)
            assert not far.messages, far.messages
        finally:
            restarted.stop()
        for ws in (x, near, far):
            await ws.close()

    run(go())
    assert ("cluster: dropped 1 message(s) for the other nodes that waited for Redis longer "
            "than cluster.outbox_max_age (1000 ms)") in a.log()
    for s in (a, b):
        assert rss_kib(s.pid) - rss_before[s.pid] < RSS_BOUND_KIB
        run(relay_served(s), 20)



class ReplyEater(Partition):
    """A TCP proxy in front of Redis that can stop the replies to the command
    connections open now (the commands still reach Redis and run), as a
    Redis that hangs after running them or a one-way loss would: the node
    must give up on the connection (cluster.command_timeout) without knowing
    which of its commands ran."""

    def mute(self):
        for p in self.pairs:
            if not p["subscriber"]:
                p["muted"] = True

    def _pump(self, pair, src, dst):
        src.settimeout(0.2)
        while not self.stopping:
            try:
                data = src.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            if src is pair["socks"][0] and b"SUBSCRIBE" in data.upper():
                pair["subscriber"] = True
            if pair.get("muted") and src is pair["socks"][1]:
                continue  # a reply that never comes
            try:
                dst.sendall(data)
            except OSError:
                return


def test_commands_whose_replies_are_lost_are_sent_again_and_arrive_once(start_server, redis):
    # Twice under traffic, the replies to every command connection stop; each
    # node drops its connection after command_timeout and sends again what
    # was in flight. Redis had run it: the other nodes drop the copies (the
    # envelope's number), and the history script does not number a say twice.
    proxy = ReplyEater(redis.port)
    url = f"redis://127.0.0.1:{proxy.port}"
    relay_conf = RELAY_CONF.replace("reconnect_max = 0.5", "reconnect_max = 0.5, command_timeout = 1")
    nodes = [start_server("scripts/relay.lua", config=relay_conf, args=["--node-id", n, "--redis", url])
             for n in ("ra", "rb")]
    nodes += [start_server("scripts/chat.lua", config=chat_conf(", command_timeout = 1"),
                           args=["--node-id", n, "--redis", url]) for n in ("ca", "cb")]
    ra, rb, ca, cb = nodes
    try:
        wait_until(lambda: all(cluster_up(s) for s in nodes), timeout=10, what="every node on Redis")
        wait_peers_counted(nodes)

        async def go():
            sender = await websockets.connect(ra.url, close_timeout=1)
            far = await websockets.connect(rb.url, close_timeout=1, max_queue=None)
            ann = await Chat.join(ca, "ann", "lobby")
            bob = await Chat.join(cb, "bob", "lobby")
            await ann.expect("presence", event="join", nick="bob")
            stop = asyncio.Event()

            async def send_relay():
                i = 0
                while not stop.is_set():
                    await sender.send(str(i))
                    i += 1
                    await asyncio.sleep(0.005)
                return i

            async def send_chat():
                i = 0
                while not stop.is_set():
                    await ann.send(type="say", text=f"c{i}")
                    i += 1
                    await asyncio.sleep(0.01)
                return i

            senders = [asyncio.ensure_future(send_relay()), asyncio.ensure_future(send_chat())]
            for _ in range(2):
                await asyncio.sleep(0.5)
                proxy.mute()
                await asyncio.sleep(2.0)  # past command_timeout: the nodes reconnect
            await asyncio.sleep(0.5)
            stop.set()
            n_relay, n_chat = await asyncio.gather(*senders)
            got = []
            while len(got) < n_relay:
                got.append(int(await asyncio.wait_for(far.recv(), 20)))
            said = [await bob.expect("say", timeout=20) for _ in range(n_chat)]
            replies = [await ann._wait_for(lambda m: m["type"] in ("sent", "error"), "a reply", 20)
                       for _ in range(n_chat)]
            await asyncio.sleep(0.5)
            assert got == list(range(n_relay))
            assert not far.messages, far.messages[:3]
            assert [m["text"] for m in said] == [f"c{i}" for i in range(n_chat)]
            assert not [m for m in bob.seen if m["type"] == "say"]
            # One epoch, no offset skipped: nothing was numbered twice.
            assert len({m["epoch"] for m in said}) == 1
            offsets = [m["offset"] for m in said]
            assert offsets == list(range(offsets[0], offsets[0] + n_chat)), offsets
            # The says whose reply was lost were answered "delayed" (they waited again).
            assert all(m["type"] == "sent" for m in replies)
            assert any(m.get("delayed") for m in replies)
            for ws in (sender, far):
                await ws.close()
            for c in (ann, bob):
                await c.close()
            return n_chat

        n_chat = run(go())
        stream = redis.cli("XRANGE", "chat:h:room:lobby", "-", "+").splitlines()
        texts = [json.loads(line)["text"] for line in stream if '"type":"say"' in line]
        assert texts == [f"c{i}" for i in range(n_chat)]  # each say stored once
        assert metrics(rb)["moonwire_cluster_duplicates_total"] > 0  # copies came, and were dropped
        for s in (ra, ca):
            assert "Redis did not answer the command connection within 1000 ms" in s.log()
            wait_until(lambda: metrics(s)['moonwire_cluster_outbox_messages{shard="0"}'] == 0,
                       timeout=10, what="the outbox empty")
        for s in nodes:
            assert s.proc.poll() is None
    finally:
        proxy.stop()
