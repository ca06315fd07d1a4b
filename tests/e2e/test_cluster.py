"""The Redis backplane against real binaries and a real redis-server that the
test starts on a free port and stops by PID: topics, broadcasts and direct
sends across nodes, per-publisher order, no double delivery, Redis going
away and coming back mid-traffic, and a subscriber connection cut silently."""
import asyncio
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request

import pytest
import websockets

from conftest import BIN, ROOT, free_port, port_open, wait_until

REDIS = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(REDIS is None, reason="redis-server is not installed")

APP = """
local mw = require "moonwire"
local app = {}
function app.on_open(conn, req)
  if req.query.room then conn:subscribe(req.query.room) end
  conn:send("id:" .. conn.id)
end
function app.on_message(conn, data)
  local cmd, rest = data:match("^(%w+):(.*)$")
  if cmd == "pub" then
    local room, text = rest:match("^([^:]+):(.*)$")
    mw.publish(room, text, { except = conn })
  elseif cmd == "all" then
    mw.broadcast(rest, { except = conn })
  elseif cmd == "to" then
    local id, text = rest:match("^([^:]+):(.*)$")
    local ok, err = mw.send(id, text)
    conn:send("sent:" .. tostring(ok) .. ":" .. tostring(err))
  end
end
return app
"""


class Redis:
    def __init__(self, port=None):
        self.port = port or free_port()
        self.dir = tempfile.TemporaryDirectory(prefix="mw-redis-")
        self.proc = subprocess.Popen(
            [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir.name],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: port_open(self.port), timeout=10, what="redis-server")
        self.url = f"redis://127.0.0.1:{self.port}"

    def cli(self, *args):
        return subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True,
                              text=True, timeout=10).stdout

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def kill(self):
        self.proc.kill()
        self.proc.wait(timeout=5)


class Partition:
    """A TCP proxy on 127.0.0.1 in front of Redis whose subscriber connections
    (those that sent SUBSCRIBE) can be cut silently, as a network partition
    or a NAT that forgot them would: both sockets stay open and nothing more
    goes either way."""

    def __init__(self, redis_port):
        self.redis_port = redis_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.pairs = []  # dicts: sockets, subscriber, frozen
        self.stopping = False
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self):
        while not self.stopping:
            try:
                down, _ = self.listener.accept()
            except (socket.timeout, OSError):
                continue
            up = socket.create_connection(("127.0.0.1", self.redis_port), timeout=5)
            pair = dict(socks=(down, up), subscriber=False, frozen=False)
            self.pairs.append(pair)
            for src, dst in ((down, up), (up, down)):
                t = threading.Thread(target=self._pump, args=(pair, src, dst), daemon=True)
                t.start()
                self.threads.append(t)

    def _pump(self, pair, src, dst):
        src.settimeout(0.2)
        while not self.stopping:
            if pair["frozen"]:
                time.sleep(0.05)  # read nothing, send nothing
                continue
            try:
                data = src.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            if pair["frozen"]:
                continue  # cut while this recv waited: dropped
            if src is pair["socks"][0] and b"SUBSCRIBE" in data.upper():
                pair["subscriber"] = True
            try:
                dst.sendall(data)
            except OSError:
                return

    def subscribers(self):
        return sum(p["subscriber"] and not p["frozen"] for p in self.pairs)

    def cut_subscribers(self):
        for p in self.pairs:
            if p["subscriber"]:
                p["frozen"] = True

    def stop(self):
        self.stopping = True
        for t in self.threads:
            t.join(timeout=2)
        self.listener.close()
        for p in self.pairs:
            for sock in p["socks"]:
                sock.close()


@pytest.fixture
def redis():
    r = Redis()
    yield r
    r.stop()


@pytest.fixture
def nodes(start_server, redis, tmp_script):
    script = tmp_script(APP)

    def start(name, extra=""):
        return start_server(script, args=["--node-id", name, "--redis", redis.url],
                            config=f"return {{ cluster = {{ reconnect_max = 0.5 }} {extra} }}")
    return start


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout=timeout))


def metrics(server):
    text = urllib.request.urlopen(server.http + "/metrics", timeout=5).read().decode()
    return {l.rsplit(" ", 1)[0]: float(l.rsplit(" ", 1)[1])
            for l in text.splitlines() if l and not l.startswith("#")}


def cluster_up(server):
    return metrics(server).get("moonwire_cluster_up") == 1


async def client(server, room=None):
    ws = await websockets.connect(server.url + (f"/?room={room}" if room else "/"),
                                  close_timeout=1)
    hello = await asyncio.wait_for(ws.recv(), 5)
    assert hello.startswith("id:")
    ws.conn_id = hello[3:]
    return ws


async def nothing_more(ws, wait=0.3):
    # Looks at the client's queue instead of cancelling a recv().
    await asyncio.sleep(wait)
    assert not ws.messages, f"unexpected message {ws.messages[0]!r}"


def test_relays_across_nodes_with_the_unchanged_relay_app(start_server, redis):
    a = start_server("scripts/relay.lua", args=["--node-id", "a", "--redis", redis.url])
    b = start_server("scripts/relay.lua", args=["--node-id", "b", "--redis", redis.url])
    wait_until(lambda: cluster_up(a) and cluster_up(b), what="both nodes on Redis")

    async def go():
        x = await websockets.connect(a.url, close_timeout=1)
        y = await websockets.connect(b.url, close_timeout=1)
        z = await websockets.connect(b.url, close_timeout=1)
        await x.send("from a")
        assert await asyncio.wait_for(y.recv(), 5) == "from a"
        assert await asyncio.wait_for(z.recv(), 5) == "from a"
        await nothing_more(x)
        await y.send(b"\x01binary from b")
        assert await asyncio.wait_for(x.recv(), 5) == b"\x01binary from b"
        assert await asyncio.wait_for(z.recv(), 5) == b"\x01binary from b"
        await nothing_more(y)
        for ws in (x, y, z):
            await ws.close()
    run(go())


def test_topics_reach_members_on_every_node_and_only_them(nodes, redis):
    a, b = nodes("a"), nodes("b")
    wait_until(lambda: cluster_up(a) and cluster_up(b), what="both nodes on Redis")

    async def go():
        pub = await client(a)
        same_node = await client(a, "r1")
        other_node = await client(b, "r1")
        elsewhere = await client(b, "r2")
        # Subscribing is asynchronous: publish once both nodes are on the channel.
        wait_until(lambda: redis.cli("PUBSUB", "NUMSUB", "mw:t:r1").split()[1] == "2",
                   what="both nodes on mw:t:r1")
        await pub.send("pub:r1:hello room")
        assert await asyncio.wait_for(same_node.recv(), 5) == "hello room"
        assert await asyncio.wait_for(other_node.recv(), 5) == "hello room"
        await nothing_more(same_node)  # never twice on the publisher's node
        await nothing_more(elsewhere)
        # The last member of r1 on b leaves: b unsubscribes from the channel.
        await other_node.close()
        wait_until(lambda: redis.cli("PUBSUB", "NUMSUB", "mw:t:r1").split()[1] == "1",
                   what="b to unsubscribe from r1")
    run(go())


def test_a_direct_send_crosses_nodes(nodes):
    a, b = nodes("a"), nodes("b")
    wait_until(lambda: cluster_up(a) and cluster_up(b), what="both nodes on Redis")

    async def go():
        ann = await client(a)
        bob = await client(b)
        await ann.send(f"to:{bob.conn_id}:psst bob")
        assert await asyncio.wait_for(ann.recv(), 5) == "sent:true:nil"
        assert await asyncio.wait_for(bob.recv(), 5) == "psst bob"
        await ann.send("all:everyone")
        assert await asyncio.wait_for(bob.recv(), 5) == "everyone"
    run(go())


def test_keeps_the_order_of_one_publisher_across_nodes(nodes, redis):
    a, b = nodes("a"), nodes("b")
    wait_until(lambda: cluster_up(a) and cluster_up(b), what="both nodes on Redis")
    n = 10000

    async def go():
        pub = await client(a)
        near = await client(a, "order")
        far = await client(b, "order")
        wait_until(lambda: redis.cli("PUBSUB", "NUMSUB", "mw:t:order").split()[1] == "2",
                   what="both nodes on mw:t:order")

        async def send_all():
            for i in range(n):
                await pub.send(f"pub:order:{i}")

        async def read_all(ws):
            got = []
            while len(got) < n:
                got.append(int(await asyncio.wait_for(ws.recv(), 20)))
            return got
        _, near_got, far_got = await asyncio.gather(send_all(), read_all(near), read_all(far))
        assert near_got == list(range(n))
        assert far_got == list(range(n))
    run(go(), timeout=120)


def test_local_chat_goes_on_without_redis_and_the_outbox_crosses_when_it_is_back(nodes, redis):
    a, b = nodes("a"), nodes("b")
    wait_until(lambda: cluster_up(a) and cluster_up(b), what="both nodes on Redis")
    port = redis.port

    async def go():
        a1 = await client(a, "r")
        a2 = await client(a, "r")
        b1 = await client(b, "r")
        # Subscribing is asynchronous: publish once both nodes are on the channel.
        wait_until(lambda: redis.cli("PUBSUB", "NUMSUB", "mw:t:r").split()[1] == "2",
                   what="both nodes on mw:t:r")
        await a1.send("pub:r:before")
        assert await asyncio.wait_for(a2.recv(), 5) == "before"
        assert await asyncio.wait_for(b1.recv(), 5) == "before"

        redis.kill()
        wait_until(lambda: not cluster_up(a), what="a to notice")
        assert "degraded" in urllib.request.urlopen(a.http + "/healthz", timeout=5).read().decode()
        await a1.send("pub:r:while redis is down")
        assert await asyncio.wait_for(a2.recv(), 5) == "while redis is down"
        await nothing_more(b1)
        # It waits in a's outbox, which /healthz and /metrics show.
        m = metrics(a)
        assert m['moonwire_cluster_outbox_messages{shard="0"}'] == 1
        assert m['moonwire_cluster_outbox_bytes{shard="0"}'] > len("while redis is down")
        assert m["moonwire_cluster_send_failures_total"] == 0
        health = urllib.request.urlopen(a.http + "/healthz", timeout=5).read().decode()
        assert health.startswith("degraded: redis unavailable; outbox 1 message(s), "), health

        restarted = Redis(port)  # same address, empty
        try:
            wait_until(lambda: cluster_up(a) and cluster_up(b), timeout=15,
                       what="both nodes back on Redis")
            # The outbox goes out once both are back, before anything sent after.
            assert await asyncio.wait_for(b1.recv(), 10) == "while redis is down"
            await a1.send("pub:r:after")
            assert await asyncio.wait_for(a2.recv(), 5) == "after"
            assert await asyncio.wait_for(b1.recv(), 5) == "after"
            await nothing_more(b1)
            await nothing_more(a2)
            wait_until(lambda: urllib.request.urlopen(a.http + "/healthz", timeout=5).read()
                       == b"ok\n", what="a healthy again")
            assert metrics(a)['moonwire_cluster_outbox_messages{shard="0"}'] == 0
        finally:
            restarted.stop()
    run(go())


def test_refuses_a_bad_redis_address():
    r = subprocess.run([BIN, "--listen", f"127.0.0.1:{free_port()}", "--redis", "http://x"],
                       cwd=ROOT, capture_output=True, text=True, timeout=10)
    assert r.returncode == 2
    assert "cluster.redis" in r.stderr


REDIS_APP = """
local mw = require "moonwire"
local app = {}
function app.on_upgrade(req)
  if req.query.ask then  -- on_upgrade may wait, for Redis too
    local pong, err = mw.redis("PING")
    if pong ~= "PONG" then return false, 503, tostring(err) end
  end
end
function app.on_message(conn, data)
  local cmd, arg = data:match("^(%w+):?(.*)$")
  if cmd == "incr" then
    local n, err = mw.redis("INCRBY", "mw-test:counter", tonumber(arg))
    conn:send("incr:" .. tostring(n) .. ":" .. tostring(err))
  elseif cmd == "slow" then
    -- Waits on Redis; the next message of this connection must wait too.
    local v = mw.redis("SET", "mw-test:k", arg)
    conn:send("slow:" .. tostring(v))
  elseif cmd == "fast" then
    conn:send("fast:" .. arg)
  elseif cmd == "types" then
    mw.redis("DEL", "mw-test:l")
    mw.redis("RPUSH", "mw-test:l", "a", "b")
    local list = mw.redis("LRANGE", "mw-test:l", 0, -1)
    local missing = mw.redis("GET", "mw-test:nope")
    local _, err = mw.redis("INCR", "mw-test:l")
    local ok, refused = pcall(mw.redis, "BLPOP", "x", 0)
    conn:send(table.concat({list[1], list[2], tostring(missing), err:sub(1, 9),
                            tostring(ok), tostring(refused:match("would block") ~= nil)}, ","))
  end
end
return app
"""


def test_moonwire_redis_waits_without_blocking_and_keeps_message_order(start_server, redis,
                                                                        tmp_script):
    server = start_server(tmp_script(REDIS_APP), args=["--redis", redis.url])
    wait_until(lambda: cluster_up(server), what="the node on Redis")

    async def go():
        ws = await websockets.connect(server.url, close_timeout=1)
        await ws.send("incr:5")
        assert await ws.recv() == "incr:5:nil"
        await ws.send("incr:2")
        assert await ws.recv() == "incr:7:nil"
        # A waiting hook holds the connection's next messages back, in order.
        for i in range(50):
            await ws.send(f"slow:{i}")
            await ws.send(f"fast:{i}")
        got = [await asyncio.wait_for(ws.recv(), 5) for _ in range(100)]
        assert got == [x for i in range(50) for x in ("slow:OK", f"fast:{i}")]
        await ws.send("types")
        assert await ws.recv() == "a,b,nil,WRONGTYPE,false,true"
        # Others are not blocked while a hook waits: a second client gets its answer.
        other = await websockets.connect(server.url, close_timeout=1)
        await other.send("fast:x")
        assert await other.recv() == "fast:x"
        await other.close()
        await ws.close()
    run(go())
    assert redis.cli("GET", "mw-test:counter").strip() == "7"


def test_moonwire_redis_waits_in_on_upgrade_and_soft_fails_without_redis(
        start_server, redis, tmp_script):
    server = start_server(tmp_script(REDIS_APP), args=["--redis", redis.url])
    wait_until(lambda: cluster_up(server), what="the node on Redis")

    async def go():
        asked = await websockets.connect(server.url + "/?ask=1", close_timeout=1)
        await asked.close()
        ws = await websockets.connect(server.url, close_timeout=1)
        redis.kill()
        wait_until(lambda: not cluster_up(server), what="the node to notice")
        await ws.send("incr:1")
        assert await ws.recv() == "incr:nil:redis unavailable"
        await ws.close()
        with pytest.raises(websockets.exceptions.InvalidStatusCode) as refused:
            await websockets.connect(server.url + "/?ask=1")
        assert refused.value.status_code == 503
    run(go())


# on_message keeps Redis busy for 0.4 s (a script that loops on TIME), so the
# hook waits that long; "bye" closes its own connection first. Each hook
# records in Redis when it has finished.
CLOSE_ORDER_APP = """
local mw = require "moonwire"
local seen
local STALL = [[
local t = redis.call('TIME') local t0 = t[1] * 1000000 + t[2]
repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - t0 > 400000
return 1]]
local app = {}
function app.on_message(conn, data)
  if data == "bye" then conn:close(1000, "bye") end
  mw.redis("EVAL", STALL, 0)
  local ok, err = conn:send("late")
  mw.redis("RPUSH", "mw-test:events", data .. " done, send: " .. tostring(err))
end
function app.on_close(conn, code, reason)
  mw.redis("RPUSH", "mw-test:events", "on_close " .. code .. " " .. reason ..
           ", same conn: " .. tostring(conn.id == seen))
end
function app.on_open(conn) seen = conn.id end
return app
"""


def test_on_close_waits_for_the_hooks_of_its_connection_that_wait_on_redis(
        start_server, redis, tmp_script):
    server = start_server(tmp_script(CLOSE_ORDER_APP), args=["--redis", redis.url])
    wait_until(lambda: cluster_up(server), what="the node on Redis")

    def events():
        return redis.cli("LRANGE", "mw-test:events", "0", "-1").splitlines()

    async def go():
        # The client leaves while its message's hook waits on Redis: the
        # message it sent next was held, and still reaches on_message, in
        # order, before on_close.
        ws = await websockets.connect(server.url, close_timeout=1)
        await ws.send("wait")
        await ws.send("held")
        await ws.close()
        wait_until(lambda: len(events()) >= 3, timeout=10, what="the three hooks")
        # The hook closes its own connection, then waits.
        ws = await websockets.connect(server.url, close_timeout=1)
        await ws.send("bye")
        await ws.wait_closed()
        assert ws.close_code == 1000 and ws.close_reason == "bye"
        wait_until(lambda: len(events()) >= 5, timeout=10, what="both hooks")
    run(go())
    assert events() == ["wait done, send: closed", "held done, send: closed",
                        "on_close 1000 , same conn: true",
                        "bye done, send: closed", "on_close 1000 bye, same conn: true"]
    assert "raised" not in server.log()


def sigterm_while_a_hook_waits(start_server, redis, tmp_script, shutdown_timeout):
    """A client's hook waits on Redis (busy for 0.4 s), with the client's next
    message held, when SIGTERM comes; the server must exit 0. Returns the
    server and what reached Redis."""
    config = f"return {{ limits = {{ shutdown_timeout = {shutdown_timeout} }} }}"
    server = start_server(tmp_script(CLOSE_ORDER_APP), args=["--redis", redis.url], config=config)
    wait_until(lambda: cluster_up(server), what="the node on Redis")

    async def go():
        ws = await websockets.connect(server.url, close_timeout=1)
        await ws.send("wait")
        await ws.send("held")
        await asyncio.sleep(0.1)  # the hook is waiting on Redis now
        server.signal(signal.SIGTERM)
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert ws.close_code == 1001
    run(go())
    assert server.proc.wait(timeout=10) == 0, server.log()
    events = redis.cli("LRANGE", "mw-test:events", "0", "-1").splitlines()
    return server, [e for e in events if e]  # an empty list prints one empty line


def test_sigterm_lets_a_waiting_hook_and_the_deferred_on_close_reach_redis(
        start_server, redis, tmp_script):
    _, events = sigterm_while_a_hook_waits(start_server, redis, tmp_script, 5)
    # The drain waited for the hook, the held message and on_close before
    # stopping the backplane: all three reached Redis.
    assert events == ["wait done, send: closed", "held done, send: closed",
                      "on_close 1001 server shutting down, same conn: true"]


def test_sigterm_waits_for_hooks_no_longer_than_the_shutdown_timeout(
        start_server, redis, tmp_script):
    # 0.2 s of drain, less than the 0.4 s the hook waits.
    server, events = sigterm_while_a_hook_waits(start_server, redis, tmp_script, 0.2)
    assert ("drain: 1 hook(s) of closed connections still waiting on Redis after 200 ms; "
            "they end with the backplane") in server.log()
    assert events == []


PRESENCE_APP = """
local mw = require "moonwire"
local app = {}
function app.on_open(conn, req)
  conn:subscribe("lobby", { presence = req.query.nick })
  conn:send("id:" .. conn.id)
end
function app.on_message(conn, data)
  if data == "who" then
    local members, err = mw.presence("lobby")
    if not members then return conn:send("error:" .. err) end
    local nicks = {}
    for _, nick in pairs(members) do nicks[#nicks + 1] = nick end
    table.sort(nicks)
    conn:send("who:" .. table.concat(nicks, ","))
  elseif data == "leave" then
    conn:unsubscribe("lobby")
    conn:send("left")
  end
end
return app
"""


def test_presence_is_cluster_wide_and_a_killed_node_drops_out(start_server, redis, tmp_script):
    script = tmp_script(PRESENCE_APP)
    conf = "return { cluster = { presence_ttl = 3, reconnect_max = 0.5 } }"
    a = start_server(script, args=["--node-id", "a", "--redis", redis.url], config=conf)
    b = start_server(script, args=["--node-id", "b", "--redis", redis.url], config=conf)
    wait_until(lambda: cluster_up(a) and cluster_up(b), what="both nodes on Redis")

    async def who(ws):
        await ws.send("who")
        return await asyncio.wait_for(ws.recv(), 5)

    async def eventually(ws, want, within=5):
        # Presence is written by each node as its members come and go: it
        # settles within a Redis round trip, not at once.
        started = time.monotonic()
        while (got := await who(ws)) != want:
            assert time.monotonic() - started < within, f"presence is {got}, not {want}"
            await asyncio.sleep(0.05)

    async def go():
        ann = await websockets.connect(a.url + "/?nick=ann", close_timeout=1)
        bob = await websockets.connect(b.url + "/?nick=bob", close_timeout=1)
        cat = await websockets.connect(b.url + "/?nick=cat", close_timeout=1)
        for ws in (ann, bob, cat):
            assert (await ws.recv()).startswith("id:")
        await eventually(ann, "who:ann,bob,cat")
        await eventually(bob, "who:ann,bob,cat")
        await cat.send("leave")
        assert await cat.recv() == "left"
        await eventually(ann, "who:ann,bob")
        # b dies without cleaning up: it leaves presence within presence_ttl.
        b.kill()
        await eventually(ann, "who:ann", within=6)
        await ann.close()
    run(go())


HISTORY_APP = """
local mw = require "moonwire"
local app = {}
function app.on_open(conn, req)
  conn:subscribe("room:a")
  conn:send("id:" .. conn.id)
end
function app.on_message(conn, data)
  local cmd, rest = data:match("^(%w+):?(.*)$")
  if cmd == "say" then
    local offset, err = mw.publish("room:a", rest, { except = conn })
    conn:send("ack:" .. tostring(offset) .. ":" .. tostring(err))
  elseif cmd == "since" then
    local since, epoch = rest:match("^(%d+):(.*)$")
    local h, err = mw.history("room:a", { since = tonumber(since), epoch = epoch })
    if not h then return conn:send("error:" .. err) end
    conn:send(mw.json.encode({ offset = h.offset, epoch = h.epoch, recovered = h.recovered,
                               messages = h.messages }))
  end
end
return app
"""


def test_history_is_one_sequence_across_nodes_and_recovers_what_a_client_missed(
        start_server, redis, tmp_script):
    import json as j
    script = tmp_script(HISTORY_APP)
    conf = "return { history = { topics = { 'room:*' }, size = 50 } }"
    a = start_server(script, args=["--node-id", "a", "--redis", redis.url], config=conf)
    b = start_server(script, args=["--node-id", "b", "--redis", redis.url], config=conf)
    wait_until(lambda: cluster_up(a) and cluster_up(b), what="both nodes on Redis")

    async def go():
        pa = await client(a)
        pb = await client(b)
        watcher = await client(b)
        wait_until(lambda: redis.cli("PUBSUB", "NUMSUB", "mw:t:room:a").split()[1] == "2",
                   what="both nodes on the room")
        # Two publishers on two nodes: one gapless sequence that every node sees in order.
        for i in range(10):
            await pa.send(f'say:{{"from":"a","i":{i}}}')
            await pb.send(f'say:{{"from":"b","i":{i}}}')
        acks = []
        for ws in (pa, pb):
            while len([x for x in acks if x[0] is ws]) < 10:
                msg = await asyncio.wait_for(ws.recv(), 5)
                if msg.startswith("ack:"):
                    acks.append((ws, int(msg.split(":")[1])))
        assert sorted(o for _, o in acks) == list(range(1, 21))
        seen = [j.loads(await asyncio.wait_for(watcher.recv(), 5)) for _ in range(20)]
        assert [m["offset"] for m in seen] == list(range(1, 21))
        epoch = seen[0]["epoch"]
        assert all(m["epoch"] == epoch for m in seen)

        # The watcher leaves at offset 12 (say); comes back on the other node.
        await watcher.close()
        back = await client(a)
        await back.send(f"since:12:{epoch}")
        h = j.loads(await asyncio.wait_for(back.recv(), 5))
        assert h["recovered"] is True and h["offset"] == 20
        assert [j.loads(m)["offset"] for m in h["messages"]] == list(range(13, 21))

        # The stream is lost: a new epoch, and old positions do not recover.
        redis.cli("DEL", "mw:h:room:a")
        await pa.send('say:{"after":"loss"}')
        while not (ack := await asyncio.wait_for(pa.recv(), 5)).startswith("ack:"):
            pass  # room messages from pb, still queued
        assert ack.startswith("ack:1:"), ack  # offset 1 of a new epoch
        await back.send(f"since:20:{epoch}")
        while "recovered" not in (h := j.loads(await asyncio.wait_for(back.recv(), 5))):
            pass  # the room message itself, which back receives too
        assert h["recovered"] is False and h["epoch"] != epoch and h["offset"] == 1
        for ws in (pa, pb, back):
            await ws.close()
    run(go())


def test_a_subscriber_connection_cut_silently_is_probed_and_replaced(start_server, redis,
                                                                     tmp_script):
    """Nothing closes a subscriber connection that a partition cut, and it
    sends nothing for TCP to give up on: the node must notice by itself."""
    partition = Partition(redis.port)
    try:
        script = tmp_script(APP)
        a = start_server(script, args=["--node-id", "a", "--redis",
                                       f"redis://127.0.0.1:{partition.port}"],
                         config="return { cluster = { reconnect_max = 0.5, command_timeout = 1 } }")
        b = start_server(script, args=["--node-id", "b", "--redis", redis.url])
        wait_until(lambda: cluster_up(a) and cluster_up(b), timeout=10, what="both on Redis")
        wait_until(lambda: partition.subscribers() == 1, what="a's subscriber behind the proxy")

        async def go():
            wa, wb = await client(a), await client(b)
            await wb.send("all:before")
            assert await asyncio.wait_for(wa.recv(), 5) == "before"

            partition.cut_subscribers()
            await wb.send("all:lost in the partition")
            # Quiet for a second, a probe unheard for another: a new connection.
            wait_until(lambda: "heard nothing, not even its probe" in a.log(), timeout=10,
                       what="a to notice its subscriber is cut")
            wait_until(lambda: partition.subscribers() == 1, timeout=10,
                       what="a new subscriber connection")
            assert "lost the subscriber connection to Redis (silent); retrying" in a.log()
            # Subscribing again takes a moment: send until one arrives (bounded).
            deadline = time.monotonic() + 10
            while True:
                assert time.monotonic() < deadline, "nothing reached a after it reconnected"
                await wb.send("all:after")
                try:
                    got = await asyncio.wait_for(wa.recv(), 0.5)
                except asyncio.TimeoutError:
                    continue
                if got == "after":
                    break
                assert got == "lost in the partition", got  # if it got through before the cut
            assert cluster_up(a)
        run(go())
    finally:
        partition.stop()
