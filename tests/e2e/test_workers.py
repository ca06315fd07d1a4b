"""--workers against the real binary: a master forks workers on one port
(SO_REUSEPORT), each a node of its own sharing topics through a real Redis;
the master restarts a killed worker and stops them all on SIGTERM."""
import asyncio
import os
import re
import signal
import time

import pytest
import websockets

from conftest import wait_until
from test_cluster import REDIS, Redis, cluster_up, metrics  # noqa: F401

pytestmark = pytest.mark.skipif(REDIS is None, reason="redis-server is not installed")

APP = """
local mw = require "moonwire"
local app = {}
function app.on_open(conn) conn:send("node:" .. mw.node) end
function app.on_message(conn, data)
  mw.broadcast(data, { except = conn })
end
return app
"""


@pytest.fixture
def redis():
    r = Redis()
    yield r
    r.stop()


def worker_pids(server):
    return {int(m.group(1)): int(m.group(2)) for m in
            re.finditer(r"worker (\d+) started \(pid (\d+)\)", server.log())}


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def test_workers_share_a_port_and_their_topics_and_a_dead_one_comes_back(start_server, redis,
                                                                        tmp_script):
    server = start_server(tmp_script(APP), args=["--workers", "2", "--redis", redis.url])
    wait_until(lambda: len(worker_pids(server)) == 2, what="two workers")
    wait_until(lambda: server.log().count("subscriber connection to Redis is up") >= 2,
               what="both workers on Redis")

    async def go():
        # Connect until both workers have clients (the kernel picks).
        clients, nodes = [], set()
        deadline = time.monotonic() + 10
        while len(nodes) < 2:
            assert time.monotonic() < deadline, f"only {nodes} answered"
            ws = await websockets.connect(server.url, close_timeout=1)
            node = (await asyncio.wait_for(ws.recv(), 5))[5:]
            nodes.add(node)
            clients.append((node, ws))
        assert all(re.fullmatch(r"mw-w[12]\.\w+", n) for n in nodes), nodes
        # relay-style broadcast crosses workers through Redis.
        sender_node, sender = clients[0]
        await sender.send("hello workers")
        for node, ws in clients[1:]:
            assert await asyncio.wait_for(ws.recv(), 5) == "hello workers"
        for _, ws in clients:
            await ws.close()

    asyncio.run(asyncio.wait_for(go(), 30))

    # A worker killed by surprise is started again.
    pids = worker_pids(server)
    victim = pids[1]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: worker_pids(server).get(1, victim) != victim, timeout=10,
               what="worker 1 restarted")
    assert "worker 1 (pid %d) was killed by signal 9" % victim in server.log()

    async def still_serving():
        async with websockets.connect(server.url, close_timeout=1) as ws:
            assert (await asyncio.wait_for(ws.recv(), 5)).startswith("node:mw-w")
    asyncio.run(asyncio.wait_for(still_serving(), 10))

    # SIGTERM to the master stops every worker, and the master exits 0.
    now = worker_pids(server)
    assert server.stop(timeout=15) == 0
    assert not any(alive(p) for p in now.values()), "a worker outlived its master"
    assert "every worker stopped" in server.log()


def test_the_master_gives_up_when_a_worker_cannot_start(tmp_path):
    import subprocess
    from conftest import BIN, ROOT, free_port
    broken = tmp_path / "broken.lua"
    broken.write_text("return {\n  on_message = function( -- a syntax error\n")
    started = time.monotonic()
    r = subprocess.run([BIN, "--workers", "2", "--listen", f"127.0.0.1:{free_port()}",
                        "--script", str(broken)], cwd=ROOT, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1, r.stderr
    assert "right after starting; giving up" in r.stderr
    assert time.monotonic() - started < 20


NODE_ECHO = """
local mw = require "moonwire"
return {
  on_open = function(conn) conn:send(mw.node) end,
  on_message = function(conn, data) conn:send(data) end,
}
"""


def test_metrics_sum_every_worker_whichever_answers_and_survive_a_restart(start_server,
                                                                           tmp_script):
    server = start_server(tmp_script(NODE_ECHO), args=["--workers", "2"])
    wait_until(lambda: len(worker_pids(server)) == 2, what="two workers")

    def every_scrape(check, n=6):
        # Each scrape is a new connection, which either worker may take.
        return all(check(metrics(server)) for _ in range(n))

    async def go():
        clients, nodes = [], {}
        deadline = time.monotonic() + 10
        while len(nodes) < 2:
            assert time.monotonic() < deadline, f"only {set(nodes)} answered"
            ws = await websockets.connect(server.url, close_timeout=1)
            node = await asyncio.wait_for(ws.recv(), 5)
            nodes[node] = nodes.get(node, 0) + 1
            clients.append(ws)
        for ws in clients:
            for i in range(3):
                await ws.send(f"m{i}")
                assert await asyncio.wait_for(ws.recv(), 5) == f"m{i}"
        sent = 3 * len(clients)

        # (The waits below block this loop; the clients only need to stay open.)
        wait_until(lambda: every_scrape(lambda m: m.get("moonwire_messages_in_total") == sent and
                                        m.get("moonwire_connections") == len(clients)),
                   timeout=10, what=f"{sent} messages and {len(clients)} connections")
        m = metrics(server)
        assert m["moonwire_workers"] == 2
        assert m['moonwire_handshakes_total{result="ok"}'] == len(clients)

        # A killed worker's clients are gone; what it counted is not.
        victim = worker_pids(server)[1]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: worker_pids(server).get(1, victim) != victim, timeout=10,
                   what="worker 1 restarted")
        left = next(count for node, count in nodes.items() if node.startswith("mw-w2."))
        wait_until(lambda: every_scrape(lambda m: m.get("moonwire_connections") == left and
                                        m.get("moonwire_workers") == 2),
                   timeout=10, what=f"{left} connections, on the worker that lived")
        assert every_scrape(lambda m: m["moonwire_messages_in_total"] == sent)
        for ws in clients:
            await ws.close()

    asyncio.run(asyncio.wait_for(go(), 60))
