"""examples/cluster/run.sh end to end: redis-server, three real nodes and
nginx as the WebSocket load balancer, all started by the script; clients
through nginx land on different nodes and chat across them, and go on
being served when Redis stops, as the example's README says; and nginx
fronts the nodes as an origin should be fronted (keep-alive to the nodes,
gzip passed through, /metrics not forwarded)."""
import contextlib
import asyncio
import json
import os
import shutil
import signal
import subprocess
import urllib.request

import pytest
import websockets

from conftest import BIN, ROOT, wait_until

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None or shutil.which("nginx") is None,
    reason="needs redis-server and nginx")


def free_block(n):
    """A base port with n free ports from it, below the ephemeral range (where
    client sockets of other tests could take one between our check and use)."""
    import random
    import socket
    for _ in range(200):
        base = random.randrange(20000, 32000 - n)
        try:
            socks = []
            for i in range(n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no block of free ports")


def healthz(port):
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).read()
    except OSError:
        return b""


def start_example(tmp_path):
    """run.sh with nginx on port, the nodes on port+1..3, Redis on port+4;
    returns (process, port, log file)."""
    port = free_block(5)
    env = dict(os.environ, PORT=str(port), REDIS_PORT=str(port + 4), MW_BIN=BIN)
    log = open(tmp_path / "run.log", "wb")
    proc = subprocess.Popen([str(ROOT / "examples/cluster/run.sh")], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, port, log


def stop_example(proc, port, log):
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
    log.close()
    assert not any(healthz(port + n) for n in (0, 1, 2, 3)), "something still serves"


def test_the_cluster_example_chats_across_three_nodes_behind_nginx(tmp_path):
    proc, port, log = start_example(tmp_path)
    try:
        wait_until(lambda: all(healthz(port + n) == b"ok\n" for n in (1, 2, 3)), timeout=20,
                   what="three nodes up on Redis")
        wait_until(lambda: healthz(port) == b"ok\n", timeout=10, what="nginx")
        assert b"<html" in urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()

        async def go():
            clients, nodes = [], set()
            for nick in ("ann", "bob", "cat"):
                ws = await websockets.connect(
                    f"ws://127.0.0.1:{port}/chat?nick={nick}&room=lobby", close_timeout=1)
                welcome = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert welcome["type"] == "welcome"
                nodes.add(welcome["node"])
                clients.append(ws)
            assert len(nodes) == 3, f"nginx put everyone on {nodes}"
            await asyncio.sleep(0.3)  # subscriptions reach Redis asynchronously
            await clients[0].send(json.dumps({"type": "say", "room": "lobby", "text": "hello"}))
            for ws in clients[1:]:
                while True:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    if msg["type"] == "say":
                        assert msg["text"] == "hello"
                        break
            for ws in clients:
                await ws.close()
        asyncio.run(asyncio.wait_for(go(), 30))
    finally:
        stop_example(proc, port, log)


async def chat_client(port, nick):
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/chat?nick={nick}&room=lobby",
                                  close_timeout=1)
    welcome = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert welcome["type"] == "welcome"
    ws.node = welcome["node"]
    ws.seen = []
    return ws


async def expect(ws, pred, what, timeout=10):
    for i, m in enumerate(ws.seen):
        if pred(m):
            return ws.seen.pop(i)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        assert left > 0, f"no {what}; saw {ws.seen[-5:]}"
        try:
            m = json.loads(await asyncio.wait_for(ws.recv(), left))
        except asyncio.TimeoutError:
            continue
        if pred(m):
            return m
        ws.seen.append(m)


def test_the_cluster_example_keeps_serving_when_redis_stops_and_resumes_when_it_is_back(tmp_path):
    from test_cluster import Redis
    proc, port, log = start_example(tmp_path)
    redis_port = port + 4
    again = None
    try:
        wait_until(lambda: all(healthz(port + n) == b"ok\n" for n in (1, 2, 3)), timeout=20,
                   what="three nodes up on Redis")
        wait_until(lambda: healthz(port) == b"ok\n", timeout=10, what="nginx")

        async def go():
            nonlocal again
            clients = [await chat_client(port, nick) for nick in ("ann", "bob", "cat")]
            assert len({ws.node for ws in clients}) == 3
            ann = clients[0]
            await asyncio.sleep(1.5)  # the nodes count each other on Redis
            # Redis stops, as an operator would stop it.
            subprocess.run(["redis-cli", "-p", str(redis_port), "shutdown", "nosave"],
                           capture_output=True, timeout=10)
            wait_until(lambda: all(healthz(port + n).startswith(b"degraded")
                                   for n in (1, 2, 3)), timeout=10, what="three nodes degraded")
            await asyncio.sleep(2)
            assert proc.poll() is None, (tmp_path / "run.log").read_text()
            # Everything still serves: the page through nginx, new clients on
            # every node, and a say, which waits for Redis.
            assert b"<html" in urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
            late = [await chat_client(port, nick) for nick in ("dan", "eve", "fay")]
            assert len({ws.node for ws in late}) == 3
            for ws in late:
                await ws.send(json.dumps({"type": "ping", "id": 1}))
                await expect(ws, lambda m: m.get("ref") == 1 and m["type"] == "pong", "a pong")
            await ann.send(json.dumps({"type": "say", "text": "while redis is away", "id": 2}))
            sent = await expect(ann, lambda m: m.get("ref") == 2, "the answer to the say")
            assert sent["type"] == "sent" and sent["delayed"] is True, sent
            # Redis is back on its port: the nodes come back, and the say
            # reaches the members on the other nodes.
            again = Redis(redis_port)
            wait_until(lambda: all(healthz(port + n) == b"ok\n" for n in (1, 2, 3)),
                       timeout=20, what="three nodes back on Redis")
            for ws in clients[1:]:
                m = await expect(ws, lambda m: m.get("text") == "while redis is away", "the say",
                                 timeout=20)
                assert m["from"] == "ann"
            for ws in clients + late:
                await ws.close()
        asyncio.run(asyncio.wait_for(go(), 60))
        assert proc.poll() is None
    finally:
        stop_example(proc, port, log)
        if again is not None:
            again.stop()
    assert "redis-server exited; the nodes keep serving" in (tmp_path / "run.log").read_text()


@contextlib.contextmanager
def cluster_example(tmp_path):
    """Runs examples/cluster/run.sh; yields nginx's port (the nodes are on
    port+1..3) once every node and nginx answer /healthz."""
    port = free_block(5)
    env = dict(os.environ, PORT=str(port), REDIS_PORT=str(port + 4), MW_BIN=BIN)
    log = open(tmp_path / "run.log", "wb")
    proc = subprocess.Popen([str(ROOT / "examples/cluster/run.sh")], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: all(healthz(port + n) == b"ok\n" for n in (1, 2, 3)), timeout=20,
                   what="three nodes up on Redis")
        wait_until(lambda: healthz(port) == b"ok\n", timeout=10, what="nginx")
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        log.close()


def node_metric(port, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.split()[1]) for line in text.splitlines() if line.startswith(name + " "))


def test_nginx_in_the_example_fronts_the_nodes_as_an_origin(tmp_path):
    import gzip
    import urllib.error
    with cluster_example(tmp_path) as port:
        # /metrics stays off the proxied path; the nodes still answer it themselves.
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert refused.value.code == 404
        assert node_metric(port + 1, "moonwire_http_requests_total") >= 1
        # The page's script goes out gzipped through the proxy.
        app_js = (ROOT / "examples/chat/public/app.js").read_bytes()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/app.js",
                                     headers={"Accept-Encoding": "gzip"})
        for _ in range(12):
            with urllib.request.urlopen(req, timeout=5) as r:
                assert r.headers["Content-Encoding"] == "gzip"
                assert r.headers["Vary"] == "Accept-Encoding"
                assert gzip.decompress(r.read()) == app_js
        # nginx reused its connections to the nodes (upstream keepalive).
        reused = sum(node_metric(port + n, "moonwire_http_keepalive_requests_total")
                     for n in (1, 2, 3))
        assert reused >= 1, "every proxied request opened a new connection to a node"
