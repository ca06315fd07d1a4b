"""The server API and the queue across nodes, with a real redis-server that
the test starts on a free port and stops by PID: a publish through the HTTP
API of one node reaches members on another; entries XADDed to the queue
stream are applied once by one node of the group; a node killed with
entries pending: another node claims them (XAUTOCLAIM after a short
queue.claim_after) and applies them once; bad entries are acknowledged and
counted; moonwire.queue.push adds to a stream and waits for the id."""
import asyncio
import json
import signal
import socket
import threading
import time
import urllib.request

import pytest
import websockets

from conftest import wait_until
from test_cluster import REDIS, Redis, metrics

pytestmark = pytest.mark.skipif(REDIS is None, reason="redis-server is not installed")

KEY = "cluster-key"

APP = """
local mw = require "moonwire"
local app = {}
function app.on_open(conn, req)
  if req.query.room then conn:subscribe(req.query.room) end
  conn:send("id:" .. conn.id)
end
function app.on_message(conn, data)
  local text = data:match("^push:(.*)$")
  if text then
    local id, err = mw.queue.push("chat:archive", { room = "lobby", text = text })
    conn:send("pushed:" .. tostring(id) .. ":" .. tostring(err))
  end
end
return app
"""


@pytest.fixture
def redis():
    r = Redis()
    yield r
    r.stop()


@pytest.fixture
def node(start_server, redis, tmp_script):
    script = tmp_script(APP)

    def start(name, extra=""):
        return start_server(script, args=["--node-id", name, "--redis", redis.url],
                            config="return { cluster = { reconnect_max = 0.5 }, "
                                   f"api = {{ key = '{KEY}' }}, {extra} }}")
    return start


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout=timeout))


def call(server, method, params):
    req = urllib.request.Request(f"{server.http}/api/{method}", data=json.dumps(params).encode(),
                                 method="POST", headers={"X-API-Key": KEY})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


async def client(server, room=None):
    ws = await websockets.connect(server.url + (f"/?room={room}" if room else "/"),
                                  close_timeout=1)
    hello = await asyncio.wait_for(ws.recv(), 5)
    ws.conn_id = hello[3:]
    return ws


async def collect(ws, n, timeout=10):
    return [await asyncio.wait_for(ws.recv(), timeout) for _ in range(n)]


async def nothing_more(ws, wait=0.5):
    await asyncio.sleep(wait)
    assert not ws.messages, f"unexpected message {ws.messages[0]!r}"


def consuming(redis, n):
    """True once n consumers wait in XREADGROUP (blocked clients: a consumer
    only shows in XINFO CONSUMERS once served)."""
    return redis.cli("CLIENT", "LIST").count("cmd=xreadgroup") >= n


def up(server):
    return metrics(server).get("moonwire_cluster_up") == 1


def test_api_publish_crosses_nodes(node, redis):
    a, b = node("a"), node("b")
    wait_until(lambda: up(a) and up(b), timeout=10, what="both nodes on Redis")

    async def go():
        on_a = await client(a, "lobby")
        on_b = await client(b, "lobby")
        await asyncio.sleep(0.3)  # b's SUBSCRIBE reaches Redis
        st, res = call(a, "publish", {"topic": "lobby", "data": "from the backend"})
        assert (st, res) == (200, {"result": {"delivered": 1}})  # the local count
        assert await asyncio.wait_for(on_a.recv(), 5) == "from the backend"
        assert await asyncio.wait_for(on_b.recv(), 5) == "from the backend"
        st, res = call(b, "send", {"id": on_a.conn_id, "data": "direct"})
        assert st == 200 and res["result"]["sent"] is True
        assert await asyncio.wait_for(on_a.recv(), 5) == "direct"
        st, res = call(a, "info", {})
        assert res["result"]["cluster"]["up"] is True
        # disconnect crosses nodes too: b closes a's client.
        st, res = call(b, "disconnect", {"id": on_a.conn_id, "code": 4002, "reason": "moved"})
        assert (st, res) == (200, {"result": {"disconnected": True, "forwarded": True}})
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(on_a.recv(), 5)
        assert (on_a.close_code, on_a.close_reason) == (4002, "moved")
        st, res = call(b, "disconnect", {"id": "no-dot-here"})
        assert st == 400 and res["error"]["message"] == "not a connection id"
        await on_b.close()
    run(go())


def test_queue_entries_are_applied_once_in_order_by_one_node(node, redis):
    a, b = node("a"), node("b")
    wait_until(lambda: consuming(redis, 2), timeout=10,
               what="both consumers in the group")

    async def go():
        on_a = await client(a, "q")
        on_b = await client(b, "q")
        await asyncio.sleep(0.3)
        for i in range(50):
            redis.cli("XADD", "mw:api", "*", "method", "publish",
                      "params", json.dumps({"topic": "q", "data": str(i)}))
        got_a = await collect(on_a, 50)
        got_b = await collect(on_b, 50)
        # Every entry once, to every member, whichever node applied it.
        assert sorted(got_a, key=int) == [str(i) for i in range(50)]
        assert sorted(got_b, key=int) == [str(i) for i in range(50)]
        await nothing_more(on_a)
        await nothing_more(on_b)
        await on_a.close()
        await on_b.close()
    run(go())
    applied = lambda: sum(metrics(s).get("moonwire_queue_applied_total", 0) for s in (a, b))
    wait_until(lambda: applied() == 50, timeout=10, what="50 entries applied in all")
    wait_until(lambda: redis.cli("XPENDING", "mw:api", "moonwire").split("\n")[0] == "0",
               timeout=10, what="nothing pending")


def test_bad_entries_are_acknowledged_and_counted_never_retried(node, redis):
    a = node("a", "queue = { claim_after = 0.5 }")
    wait_until(lambda: consuming(redis, 1), timeout=10, what="the consumer")
    redis.cli("XADD", "mw:api", "*", "method", "nope", "params", "{}")
    redis.cli("XADD", "mw:api", "*", "method", "publish", "params", "{not json")
    redis.cli("XADD", "mw:api", "*", "params", "{}")
    redis.cli("XADD", "mw:api", "*", "method", "publish", "params", '{"topic": 1}')
    wait_until(lambda: metrics(a).get("moonwire_queue_bad_total") == 4, timeout=10,
               what="four bad entries counted")
    time.sleep(1.5)  # three claim periods: nothing comes back
    m = metrics(a)
    assert m["moonwire_queue_bad_total"] == 4
    assert m.get("moonwire_queue_claimed_total", 0) == 0
    assert redis.cli("XPENDING", "mw:api", "moonwire").split("\n")[0] == "0"
    assert "refused and acknowledged" in a.log()
    assert m['moonwire_api_requests_total{method="unknown",status="404"}'] == 1
    assert m['moonwire_api_requests_total{method="publish",status="400"}'] == 2


def test_a_node_killed_with_entries_pending_has_them_applied_once_elsewhere(node, redis):
    a = node("a", "queue = { claim_after = 1, block = 1 }, history = { topics = { 'k:*' } }")
    wait_until(lambda: consuming(redis, 1), timeout=10, what="a's consumer")
    time.sleep(0.3)  # a's XREADGROUP is blocked in Redis
    # Frozen, then killed: Redis hands it the entry that arrives, which it never acks.
    a.signal(signal.SIGSTOP)
    redis.cli("XADD", "mw:api", "*", "method", "publish",
              "params", json.dumps({"topic": "k:1", "data": json.dumps({"data": "pending-0"})}))
    wait_until(lambda: redis.cli("XPENDING", "mw:api", "moonwire").split("\n")[0] == "1",
               timeout=5, what="an entry pending at a")
    for i in range(1, 4):
        redis.cli("XADD", "mw:api", "*", "method", "publish",
                  "params", json.dumps({"topic": "k:1", "data": json.dumps({"data": f"pending-{i}"})}))
    a.signal(signal.SIGKILL)
    a.proc.wait(timeout=5)

    # The topic keeps history, so what b applied is read back whatever the
    # timing of a client: each message once, pending-0 (claimed) included.
    b = node("b", "queue = { claim_after = 1, block = 1 }, history = { topics = { 'k:*' } }")
    wait_until(lambda: up(b), timeout=10, what="b on Redis")

    def texts():
        st, res = call(b, "history", {"topic": "k:1"})
        assert st == 200, res
        return sorted(json.loads(m)["data"] for m in res["result"]["messages"])
    wait_until(lambda: len(texts()) >= 4, timeout=15, what="four entries applied at b")
    time.sleep(2.5)  # more claim periods: nothing twice
    assert texts() == [f"pending-{i}" for i in range(4)]
    m = metrics(b)
    assert m["moonwire_queue_claimed_total"] >= 1
    assert m["moonwire_queue_applied_total"] == 4
    assert redis.cli("XPENDING", "mw:api", "moonwire").split("\n")[0] == "0"
    assert "queue: claimed 1 entry" in b.log()


class QueueOnly:
    """A TCP proxy on 127.0.0.1 in front of Redis that, once cut(), keeps only
    the queue's connection (the one that sent XGROUP or XREADGROUP): every
    other connection is closed, and new ones are closed as they come, so the
    node's backplane is down while its queue still reads."""

    def __init__(self, redis_port):
        self.redis_port = redis_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}"
        self.pairs = []  # dicts: socks, queue
        self.cutting = False
        self.stopping = False
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self):
        while not self.stopping:
            try:
                down, _ = self.listener.accept()
            except (socket.timeout, OSError):
                continue
            if self.cutting:
                down.close()
                continue
            up = socket.create_connection(("127.0.0.1", self.redis_port), timeout=5)
            pair = dict(socks=(down, up), queue=False)
            self.pairs.append(pair)
            for src, dst in ((down, up), (up, down)):
                t = threading.Thread(target=self._pump, args=(pair, src, dst), daemon=True)
                t.start()
                self.threads.append(t)

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
            if src is pair["socks"][0] and (b"XREADGROUP" in data.upper() or
                                            b"XGROUP" in data.upper()):
                pair["queue"] = True
            try:
                dst.sendall(data)
            except OSError:
                return

    def cut(self):
        self.cutting = True
        for p in self.pairs:
            if not p["queue"]:
                for sock in p["socks"]:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

    def stop(self):
        self.stopping = True
        for t in self.threads:
            t.join(timeout=2)
        self.listener.close()
        for p in self.pairs:
            for sock in p["socks"]:
                sock.close()


def test_an_entry_failing_for_want_of_redis_is_dropped_after_max_deliveries(
        start_server, redis, tmp_script):
    proxy = QueueOnly(redis.port)
    try:
        a = start_server(tmp_script(APP), args=["--node-id", "a", "--redis", proxy.url],
                         config="return { cluster = { reconnect_max = 0.5 }, "
                                "queue = { claim_after = 0.5, max_deliveries = 3 } }")
        wait_until(lambda: up(a) and consuming(redis, 1), timeout=10, what="a on Redis")
        wait_until(lambda: any(p["queue"] for p in proxy.pairs), timeout=5,
                   what="the queue's connection")
        proxy.cut()
        wait_until(lambda: metrics(a).get("moonwire_cluster_up") == 0, timeout=10,
                   what="a's backplane down")
        # presence needs the backplane: 503 at each delivery (the read, then
        # a claim every claim_after), and on the third it is dropped.
        redis.cli("XADD", "mw:api", "*", "method", "presence", "params", '{"topic": "p"}')
        wait_until(lambda: metrics(a).get("moonwire_queue_dropped_total") == 1, timeout=20,
                   what="the entry dropped")
        time.sleep(1.5)  # three claim periods more: it does not come back
        m = metrics(a)
        assert m['moonwire_api_requests_total{method="presence",status="503"}'] == 3, a.log()
        assert m["moonwire_queue_dropped_total"] == 1
        assert m.get("moonwire_queue_applied_total", 0) == 0
        assert m.get("moonwire_queue_bad_total", 0) == 0
        assert redis.cli("XPENDING", "mw:api", "moonwire").split("\n")[0] == "0"
        log = a.log()
        assert "left pending: " in log
        assert "failed for want of Redis on 3 deliveries (queue.max_deliveries): " \
               "acknowledged and dropped" in log
    finally:
        proxy.stop()


def test_queue_push_adds_to_a_stream_and_returns_the_id(node, redis):
    a = node("a", "queue = { push_maxlen = 10 }")
    wait_until(lambda: up(a), timeout=10, what="a on Redis")
    redis.cli("CONFIG", "SET", "stream-node-max-entries", "5")  # so that ~ trims early

    async def go():
        ws = await client(a)
        ids = []
        for i in range(30):
            await ws.send(f"push:hello {i}")
            reply = await asyncio.wait_for(ws.recv(), 5)
            assert reply.startswith("pushed:") and reply.endswith(":nil"), reply
            ids.append(reply.split(":")[1])
        assert ids == sorted(ids, key=lambda s: tuple(map(int, s.split("-"))))
        await ws.close()
        return ids
    ids = run(go())
    last = redis.cli("XREVRANGE", "chat:archive", "+", "-", "COUNT", "1").split("\n")
    assert last[0] == ids[-1] and "hello 29" in last
    # MAXLEN ~ 10 trims whole nodes of the stream: far fewer than 30 are left.
    assert int(redis.cli("XLEN", "chat:archive")) < 30
    assert metrics(a)["moonwire_queue_pushed_total"] == 30


def test_chat_archives_every_room_message_to_a_stream(start_server, redis):
    a = start_server("scripts/chat.lua", args=["--node-id", "a", "--redis", redis.url],
                     config="return { app = { chat = { archive = 'chat:archive' } } }")
    wait_until(lambda: up(a), timeout=10, what="a on Redis")

    async def go():
        ws = await websockets.connect(a.url + "/chat?room=lobby&nick=ann", close_timeout=1)
        await ws.send(json.dumps({"type": "say", "room": "lobby", "text": "keep me"}))
        for _ in range(20):
            msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if msg.get("type") == "say":
                break
        assert msg["text"] == "keep me"
        await ws.close()
    run(go())
    entries = redis.cli("XRANGE", "chat:archive", "-", "+")
    assert "keep me" in entries and "say" in entries and "lobby" in entries
    assert "presence" in entries  # the join went there too
