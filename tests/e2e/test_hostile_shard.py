"""Hostile load on a sharded backplane (two real redis-server, two nodes of
the real binary listing both): a client floods a topic whose shard is down.
Only that shard's outbox fills, within cluster.outbox_size (each shard's own
bound), and refuses past it ("outbox full", counted, logged); the other
shard's topics are never refused and keep crossing nodes; a normal
websockets client is still served and RSS stays bounded."""
import asyncio

import pytest
import websockets

from conftest import wait_until
from hostile import assert_served, metrics, rss_kib
from test_cluster import REDIS, Redis
from test_cluster_shard import APP, TOPICS, client, cluster_up, read_per_topic, shard_conf, \
    shard_of, wait_subscribed

pytestmark = pytest.mark.skipif(REDIS is None, reason="redis-server is not installed")

RSS_BOUND_KIB = 64 << 10
OUTBOX = 65536


@pytest.fixture
def shards():
    rs = [Redis(), Redis()]
    yield rs
    for r in rs:
        r.stop()


def test_a_flood_to_a_down_shard_fills_only_its_outbox_and_the_other_shard_flows(
        start_server, shards, tmp_script):
    script = tmp_script(APP)
    conf = shard_conf(shards).replace("reconnect_max = 0.5",
                                      f"reconnect_max = 0.5, outbox_size = {OUTBOX}")
    a = start_server(script, args=["--node-id", "a"], config=conf)
    b = start_server(script, args=["--node-id", "b"], config=conf)
    wait_until(lambda: cluster_up(a) and cluster_up(b), timeout=10, what="both nodes up")
    t0 = next(t for t in TOPICS if shard_of(t, 2) == 0)
    t1 = next(t for t in TOPICS if shard_of(t, 2) == 1)
    rss_before = {s.pid: rss_kib(s.pid) for s in (a, b)}
    port1 = shards[1].port

    async def go():
        pub = await client(a)
        far = await client(b, [t0, t1])
        wait_subscribed(shards, [t0, t1], nodes=1)
        shards[1].kill()
        wait_until(lambda: not cluster_up(a), timeout=10, what="a to notice shard 1 is gone")
        text = "x" * 1900
        refused = 0
        for i in range(400):  # ~760 KB at a 64 KiB outbox: most are refused
            await pub.send(f"pub:{t1}:{i} {text}")
            if i % 50 == 0:
                # The other shard's topic is never refused and crosses at once.
                await pub.send(f"pub:{t0}:{i}")
                got = await read_per_topic(far, 1, timeout=5)
                assert got == {t0: [i]}, got
        await pub.send("sync")
        while (m := await asyncio.wait_for(pub.recv(), 10)) != "sync":
            assert m.startswith("refused:outbox full"), m
            refused += 1
        assert 300 < refused < 400, refused
        m = metrics(a)
        assert m["moonwire_cluster_outbox_refused_total"] == refused
        assert m['moonwire_cluster_outbox_bytes{shard="1"}'] <= OUTBOX
        assert m['moonwire_cluster_outbox_messages{shard="1"}'] == 400 - refused
        assert m['moonwire_cluster_outbox_messages{shard="0"}'] == 0
        await asyncio.sleep(0.3)
        assert not far.messages, far.messages[0]

        restarted = Redis(port1)
        try:
            wait_until(lambda: cluster_up(a) and cluster_up(b), timeout=15,
                       what="both nodes back on shard 1")
            got = []
            for _ in range(400 - refused):
                got.append(await asyncio.wait_for(far.recv(), 10))
            nums = [int(x.split(":", 1)[1].split()[0]) for x in got]
            assert nums == sorted(nums) and len(set(nums)) == len(nums), nums
        finally:
            restarted.stop()
        await pub.close()
        await far.close()

    asyncio.run(asyncio.wait_for(go(), 120))
    assert "cluster shard 1: the outbox is full (" in a.log()
    for s in (a, b):
        assert rss_kib(s.pid) - rss_before[s.pid] < RSS_BOUND_KIB
        assert_served(s)
