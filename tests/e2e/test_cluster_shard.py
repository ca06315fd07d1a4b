"""The backplane sharded over two real redis-server (started by the test on
free ports, stopped or killed by PID), between two nodes of the real binary
listing both in cluster.redis: each topic's channel, presence and history on
the one Redis the documented hash names (docs/scaling.md, "Sharding"),
every topic crossing nodes in order and once, direct sends and broadcasts
through the first shard, a shard killed mid-traffic (its topics wait in the
outbox, the other shard's keep flowing), /healthz naming it, and bad shard
lists refused. Python websockets clients; every wait is bounded."""
import asyncio
import subprocess
import time
import urllib.request

import pytest
import websockets

from conftest import BIN, ROOT, free_port, wait_until
from test_chat_cluster import Chat
from test_cluster import REDIS, Redis, metrics

pytestmark = pytest.mark.skipif(REDIS is None, reason="redis-server is not installed")

APP = """
local mw = require "moonwire"
local app = {}
function app.on_open(conn, req)
  for room in (req.query.rooms or ""):gmatch("[^,]+") do conn:subscribe(room) end
  conn:send("id:" .. conn.id)
end
function app.on_message(conn, data)
  local cmd, rest = data:match("^(%w+):(.*)$")
  if cmd == "pub" then
    local room, text = rest:match("^([^:]+):(.*)$")
    local ok, err = mw.publish(room, room .. ":" .. text, { except = conn })
    if not ok and err ~= "queued" then conn:send("refused:" .. tostring(err)) end
  elseif cmd == "all" then
    mw.broadcast(rest, { except = conn })
  elseif cmd == "to" then
    local id, text = rest:match("^([^:]+):(.*)$")
    local ok, err = mw.send(id, text)
    conn:send("sent:" .. tostring(ok) .. ":" .. tostring(err))
  elseif cmd == "state" then
    local st = mw.cluster()
    local parts = {}
    for _, s in ipairs(st.shards) do
      parts[#parts + 1] = s.index .. "=" .. tostring(s.up) .. "@" .. s.redis
    end
    conn:send("state:" .. tostring(st.up) .. ":" .. table.concat(parts, ","))
  else
    conn:send(data) -- anything else comes back: a normal client is served
  end
end
return app
"""

TOPICS = [f"room-{i}" for i in range(24)]


def fnv1a(name):
    h = 14695981039346656037
    for c in name.encode():
        h = ((h ^ c) * 1099511628211) & (2**64 - 1)
    return h


def shard_of(name, n):
    """docs/scaling.md's function, as a backend would write it."""
    key, b, j = fnv1a(name), -1, 0
    while j < n:
        b = j
        key = (key * 2862933555777941757 + 1) & (2**64 - 1)
        j = int(float(b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def run(coro, timeout=120):
    return asyncio.run(asyncio.wait_for(coro, timeout=timeout))


def healthz(server):
    return urllib.request.urlopen(server.http + "/healthz", timeout=5).read().decode()


def cluster_up(server):
    return metrics(server).get("moonwire_cluster_up") == 1


def channels(redis, pattern="mw:t:*"):
    return set(redis.cli("PUBSUB", "CHANNELS", pattern).split())


@pytest.fixture
def shards():
    rs = [Redis(), Redis()]
    yield rs
    for r in rs:
        r.stop()


def shard_conf(shards, extra=""):
    urls = ", ".join(f'"{r.url}"' for r in shards)
    return f"return {{ cluster = {{ redis = {{ {urls} }}, reconnect_max = 0.5 }} {extra} }}"


@pytest.fixture
def nodes(start_server, shards, tmp_script):
    script = tmp_script(APP)

    def start(*names):
        servers = [start_server(script, args=["--node-id", name], config=shard_conf(shards))
                   for name in names]
        wait_until(lambda: all(cluster_up(s) for s in servers), timeout=10,
                   what="every node on both shards")
        return servers
    return start


async def client(server, rooms=()):
    ws = await websockets.connect(server.url + "/?rooms=" + ",".join(rooms), close_timeout=1,
                                  max_queue=None)
    hello = await asyncio.wait_for(ws.recv(), 5)
    assert hello.startswith("id:")
    ws.conn_id = hello[3:]
    return ws


async def nothing_more(ws, wait=0.3):
    await asyncio.sleep(wait)
    assert not ws.messages, f"unexpected message {ws.messages[0]!r}"


def wait_subscribed(shards, topics, nodes=2):
    """Both nodes on every topic's channel, each on its own shard."""
    def ok():
        for t in topics:
            out = shards[shard_of(t, 2)].cli("PUBSUB", "NUMSUB", f"mw:t:{t}").split()
            if len(out) != 2 or out[1] != str(nodes):
                return False
        return True
    wait_until(ok, timeout=10, what="both nodes on every topic's channel")


async def read_per_topic(ws, want, timeout=30):
    """Reads until `want` messages came; returns {topic: [numbers in order]}."""
    got = {}
    deadline = time.monotonic() + timeout
    for _ in range(want):
        m = await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic()))
        topic, n = m.rsplit(":", 1)
        got.setdefault(topic, []).append(int(n))
    return got


def test_topics_split_between_the_shards_and_cross_nodes_in_order_once(nodes, shards):
    a, b = nodes("a", "b")
    n = 200

    async def go():
        pub = await client(a)
        near = await client(a, TOPICS)
        far = await client(b, TOPICS)
        wait_subscribed(shards, TOPICS)
        # Each topic's channel is on the shard the hash names, and on that one only.
        on = [channels(r) for r in shards]
        for t in TOPICS:
            s = shard_of(t, 2)
            assert f"mw:t:{t}" in on[s] and f"mw:t:{t}" not in on[1 - s], (t, s, on)
        assert on[0] and on[1], on  # both shards carry some
        assert on[0] | on[1] == {f"mw:t:{t}" for t in TOPICS}

        published = [int(r.cli("INFO", "stats").split("total_commands_processed:")[1].split()[0])
                     for r in shards]

        async def send_all():
            for i in range(n):
                for t in TOPICS:
                    await pub.send(f"pub:{t}:{i}")
        _, near_got, far_got = await asyncio.gather(
            send_all(), read_per_topic(near, n * len(TOPICS)),
            read_per_topic(far, n * len(TOPICS)))
        for got in (near_got, far_got):
            assert sorted(got) == sorted(TOPICS)
            for t in TOPICS:
                assert got[t] == list(range(n)), t  # in order, each once
        await nothing_more(far)
        await nothing_more(near)
        # Both Redis did real work: the PUBLISHes are split between them.
        after = [int(r.cli("INFO", "stats").split("total_commands_processed:")[1].split()[0])
                 for r in shards]
        share = [after[i] - published[i] for i in range(2)]
        per_shard = [sum(shard_of(t, 2) == i for t in TOPICS) * n for i in range(2)]
        assert all(share[i] >= per_shard[i] for i in range(2)), (share, per_shard)
        assert metrics(b)["moonwire_cluster_duplicates_total"] == 0
    run(go())


def test_direct_sends_and_broadcasts_cross_through_the_first_shard(nodes, shards):
    a, b = nodes("a", "b")

    async def go():
        ann = await client(a)
        bob = await client(b)
        for i in range(20):
            await ann.send(f"to:{bob.conn_id}:psst {i}")
            assert await asyncio.wait_for(ann.recv(), 5) == "sent:true:nil"
            assert await asyncio.wait_for(bob.recv(), 5) == f"psst {i}"
            await ann.send(f"all:everyone {i}")
            assert await asyncio.wait_for(bob.recv(), 5) == f"everyone {i}"
        await nothing_more(bob)
        # The app sees both shards.
        await ann.send("state:")
        state = await asyncio.wait_for(ann.recv(), 5)
        assert state == (f"state:true:0=true@127.0.0.1:{shards[0].port},"
                         f"1=true@127.0.0.1:{shards[1].port}"), state
    run(go())
    # Direct sends and broadcasts went through shard 0 alone.
    counts = [int(r.cli("INFO", "commandstats").split("cmdstat_publish:calls=")[1].split(",")[0])
              if "cmdstat_publish:" in r.cli("INFO", "commandstats") else 0 for r in shards]
    assert counts[0] >= 40, counts
    # Shard 1 saw only probes of quiet subscribers, if any: far fewer than 40.
    assert counts[1] < 40, counts


def test_two_shards_on_one_redis_server_deliver_everything_once(start_server, tmp_script):
    """Two dbs of one redis-server as two shards (its pub/sub is one for all
    dbs): each node's subscriber of shard 1 also hears the node channels and
    <prefix>:all that carry shard 0's direct sends and broadcasts. On bea3870
    each was delivered twice, and their numbers, heard on shard 1, made its
    own topics' messages of the same sender look like duplicates: dropped."""
    redis = Redis()
    try:
        conf = (f'return {{ cluster = {{ redis = {{ "{redis.url}/0", "{redis.url}/1" }}, '
                f'reconnect_max = 0.5 }} }}')
        script = tmp_script(APP)
        a = start_server(script, args=["--node-id", "a"], config=conf)
        b = start_server(script, args=["--node-id", "b"], config=conf)
        wait_until(lambda: cluster_up(a) and cluster_up(b), timeout=10, what="both nodes up")
        t0 = next(t for t in TOPICS if shard_of(t, 2) == 0)
        t1 = next(t for t in TOPICS if shard_of(t, 2) == 1)

        async def go():
            ann = await client(a)
            bob = await client(b, [t0, t1])
            wait_until(lambda: redis.cli("PUBSUB", "NUMSUB", f"mw:t:{t1}").split()[1:] == ["1"],
                       timeout=10, what="b on the channel of shard 1's topic")
            got = []
            for i in range(3):
                await ann.send(f"all:everyone {i}")
                got.append(await asyncio.wait_for(bob.recv(), 5))
                await ann.send(f"to:{bob.conn_id}:psst {i}")
                assert await asyncio.wait_for(ann.recv(), 5) == "sent:true:nil"
                got.append(await asyncio.wait_for(bob.recv(), 5))
            assert got == [f"{m} {i}" for i in range(3) for m in ("everyone", "psst")], got
            for i in range(3):
                await ann.send(f"pub:{t1}:{i}")
                await ann.send(f"pub:{t0}:{i}")
            assert await read_per_topic(bob, 6, timeout=10) == {t0: [0, 1, 2], t1: [0, 1, 2]}
            await nothing_more(bob, 0.5)
        run(go())
        assert metrics(b)["moonwire_cluster_duplicates_total"] == 0
    finally:
        redis.stop()


def test_shard_killed_mid_traffic_its_topics_wait_the_other_shard_s_keep_flowing(nodes, shards):
    a, b = nodes("a", "b")
    t0 = next(t for t in TOPICS if shard_of(t, 2) == 0)
    t1 = next(t for t in TOPICS if shard_of(t, 2) == 1)
    port1 = shards[1].port

    async def go():
        pub = await client(a)
        far = await client(b, [t0, t1])
        wait_subscribed(shards, [t0, t1], nodes=1)
        for i in range(5):
            await pub.send(f"pub:{t0}:{i}")
            await pub.send(f"pub:{t1}:{i}")
        got = await read_per_topic(far, 10)
        assert got == {t0: list(range(5)), t1: list(range(5))}

        shards[1].kill()
        wait_until(lambda: not cluster_up(a) and not cluster_up(b), timeout=10,
                   what="both nodes to notice shard 1 is gone")
        health = healthz(a)
        assert health.startswith("degraded: redis unavailable"), health
        assert f"shard 1 down (127.0.0.1:{port1})" in health, health
        assert "shard 0 down" not in health, health
        # Shard 0's topic keeps crossing nodes, with no loss...
        for i in range(5, 55):
            await pub.send(f"pub:{t0}:{i}")
            await pub.send(f"pub:{t1}:{i}")
        got = await read_per_topic(far, 50)
        assert got == {t0: list(range(5, 55))}, got
        # ...shard 1's waits in a's outbox.
        m = metrics(a)
        assert m['moonwire_cluster_outbox_messages{shard="1"}'] == 50, m
        assert m['moonwire_cluster_outbox_messages{shard="0"}'] == 0, m
        assert m['moonwire_cluster_shard_up{shard="0"}'] == 1, m
        assert m['moonwire_cluster_shard_up{shard="1"}'] == 0, m

        restarted = Redis(port1)  # same address, empty
        try:
            wait_until(lambda: cluster_up(a) and cluster_up(b), timeout=15,
                       what="both nodes back on shard 1")
            got = await read_per_topic(far, 50)
            assert got == {t1: list(range(5, 55))}, got
            await pub.send(f"pub:{t1}:after")
            assert await asyncio.wait_for(far.recv(), 5) == f"{t1}:after"
            await nothing_more(far)
            wait_until(lambda: healthz(a) == "ok\n", what="a healthy again")
        finally:
            restarted.stop()
    run(go())


def test_history_and_presence_live_on_the_topic_s_shard(start_server, shards):
    conf = shard_conf(shards, ', history = { topics = { "room:*" }, size = 100 }, '
                              'app = { chat = { rate = false } }')
    a = start_server("scripts/chat.lua", config=conf, args=["--node-id", "a"])
    b = start_server("scripts/chat.lua", config=conf, args=["--node-id", "b"])
    wait_until(lambda: cluster_up(a) and cluster_up(b), timeout=10, what="both nodes up")
    rooms = ["lobby", "games", "music", "news", "dev", "ops"]
    assert {shard_of(f"room:{r}", 2) for r in rooms} == {0, 1}

    async def go():
        for room in rooms:
            ann = await Chat.join(a, "ann", room)
            bob = await Chat.join(b, "bob", room)
            await ann.expect("presence", room=room, event="join", nick="bob")
            assert await ann.members(room) == ["ann", "bob"]
            ref = await ann.send(type="say", room=room, text=f"hello {room}")
            sent = await ann.expect("sent", ref=ref)
            theirs = await bob.expect("say", text=f"hello {room}")
            assert theirs["offset"] == sent["offset"]
            cat = await Chat.join(b, "cat", room)
            said = [m["text"] for m in cat.history["messages"] if m["type"] == "say"]
            assert said == [f"hello {room}"]
            s = shard_of(f"room:{room}", 2)
            for key in (f"mw:h:room:{room}", f"mw:hm:room:{room}", f"mw:p:room:{room}"):
                assert shards[s].cli("EXISTS", key).strip() == "1", (key, s)
                assert shards[1 - s].cli("EXISTS", key).strip() == "0", (key, s)
            for c in (ann, bob, cat):
                await c.close()
    run(go())
    # Each node's liveness key is on both shards (their scripts look for it).
    for r in shards:
        assert r.cli("KEYS", "mw:node:*").split().__len__() == 2


def test_a_node_listing_the_shards_in_another_order_is_told_so(start_server, shards, tmp_script):
    script = tmp_script(APP)

    def conf(order):
        return shard_conf(order).replace("reconnect_max = 0.5",
                                         "reconnect_max = 0.5, presence_ttl = 3")
    a = start_server(script, args=["--node-id", "a"], config=conf(shards))
    b = start_server(script, args=["--node-id", "b"], config=conf(list(reversed(shards))))
    wait_until(lambda: cluster_up(a) and cluster_up(b), timeout=10, what="both nodes up")
    said = "another node lists other shards in cluster.redis"
    # Checked at each heartbeat (presence_ttl / 3): within a few seconds.
    wait_until(lambda: said in a.log() or said in b.log(), timeout=10,
               what="a node to say the lists differ")
    time.sleep(2.5)  # a few heartbeats more: said once, not at each
    assert a.log().count(said) + b.log().count(said) == 1


def check(config, tmp_path):
    path = tmp_path / "moonwire.lua"
    path.write_text(config)
    return subprocess.run([BIN, "--listen", f"127.0.0.1:{free_port()}", "--config", str(path),
                           "--check"],
                          cwd=ROOT, capture_output=True, text=True, timeout=10)


@pytest.mark.parametrize("redis,want", [
    ("{}", "not an empty list"),
    ("{" + ", ".join(f'"redis://127.0.0.1:{7000 + i}"' for i in range(17)) + "}",
     "at most 16 shards"),
    ('{ "redis://127.0.0.1:7000", 7001 }', "must be a list of strings"),
    ('{ "redis://127.0.0.1:7000", "http://127.0.0.1:7001" }', "http://127.0.0.1:7001"),
    ('{ "redis://127.0.0.1:7000", "redis://127.0.0.1:7000" }', "twice"),
])
def test_bad_shard_lists_are_refused_with_the_reason(tmp_path, redis, want):
    r = check(f"return {{ cluster = {{ redis = {redis} }} }}", tmp_path)
    assert r.returncode == 2, r
    assert "cluster.redis" in r.stderr and want in r.stderr, r.stderr


def test_shards_and_sentinels_are_refused_together(tmp_path):
    r = check('return { cluster = { redis = { "redis://127.0.0.1:7000", "redis://127.0.0.1:7001" '
              '}, sentinels = { "127.0.0.1:26379" }, master = "m" } }', tmp_path)
    assert r.returncode == 2, r
    assert "shards (a list in 'cluster.redis') can not go through sentinels" in r.stderr, r.stderr
