#!/usr/bin/python3
"""The sentinel-failover scenario of `make bench` (bench/run.py), or on its own:

    /usr/bin/python3 bench/failover.py [--bin build/moonwire] [--runs 3]

A Redis master, its replica and one redis-sentinel (quorum 1,
down-after-milliseconds 500, failover-timeout 2000) on free ports of
127.0.0.1 in a temporary directory; two moonwire nodes (scripts/relay.lua)
that find the master through the sentinel (cluster.reconnect_max 0.5 s). A
client on node 1 sends a numbered message every 5 ms, a client on node 2
reads them; after 2 s the master is SIGKILLed. Measured: the time from the
kill to the sentinel naming the replica (promoted_s), and to the first message
sent after the kill that reaches node 2 (resume_s); then every message must
arrive, in order, once (lost, duplicated, out of order: all 0). Every
process is stopped by PID; every wait is bounded."""

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from procs import free_port, healthy, stop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MASTER = "mymaster"
SENTINEL_CONF = """port {port}
bind 127.0.0.1
daemonize no
dir {dir}
sentinel monitor {name} 127.0.0.1 {master} 1
sentinel down-after-milliseconds {name} 500
sentinel failover-timeout {name} 2000
sentinel parallel-syncs {name} 1
"""
NODE_CONF = """return {{
  cluster = {{ sentinels = {{ "127.0.0.1:{sentinel}" }}, master = "{name}",
              prefix = "bench", reconnect_max = 0.5 }},
}}
"""



def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def wait(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True,
                          text=True, timeout=10).stdout




async def traffic(n1, n2, master, sentinel_port, replica_port):
    import websockets
    sender = await websockets.connect(f"ws://127.0.0.1:{n1}", close_timeout=1)
    reader = await websockets.connect(f"ws://127.0.0.1:{n2}", close_timeout=1)
    await asyncio.sleep(0.2)
    got, sent_at, marks = [], [], {}
    stop_ev = asyncio.Event()

    async def read():
        while True:
            got.append((int(await reader.recv()), time.monotonic()))

    async def send():
        i = 0
        while not stop_ev.is_set():
            await sender.send(str(i))
            sent_at.append(time.monotonic())
            i += 1
            await asyncio.sleep(0.005)

    rtask, stask = asyncio.ensure_future(read()), asyncio.ensure_future(send())
    await asyncio.sleep(2.0)
    master.kill()
    master.wait(timeout=5)
    killed = time.monotonic()
    while time.monotonic() - killed < 60:
        await asyncio.sleep(0.05)
        if "promoted" not in marks:
            out = cli(sentinel_port, "SENTINEL", "get-master-addr-by-name", MASTER).split()
            if len(out) == 2 and int(out[1]) == replica_port:
                marks["promoted"] = time.monotonic()
        if any(sent_at[i] > killed for i, _ in got[-1:]) and "promoted" in marks:
            break
    await asyncio.sleep(1.0)
    stop_ev.set()
    await stask
    deadline = time.monotonic() + 20
    while len(got) < len(sent_at) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    rtask.cancel()
    await sender.close()
    await reader.close()
    ids = [i for i, _ in got]
    arrived = dict(got)
    after = [arrived[i] for i, t in enumerate(sent_at) if t > killed and i in arrived]
    return dict(
        promoted_s=round(marks["promoted"] - killed, 3) if "promoted" in marks else None,
        resume_s=round(min(after) - killed, 3) if after else None,
        sent=len(sent_at), received=len(ids),
        lost=len(set(range(len(sent_at))) - set(ids)),
        # When each lost message was sent, in s from the kill (- : before it).
        lost_sent_s=[round(sent_at[i] - killed, 3)
                     for i in sorted(set(range(len(sent_at))) - set(ids))][:20],
        duplicated=len(ids) - len(set(ids)),
        out_of_order=sum(1 for a, b in zip(ids, ids[1:]) if b < a))


def run_failover(binary, logdir, tag="failover"):
    """One failover; returns {"failover": {...}} or {"error": ...}."""
    for prog in ("redis-server", "redis-sentinel", "redis-cli"):
        if shutil.which(prog) is None:
            return {"error": f"{prog} is not installed (apt-get install redis-sentinel)"}
    os.makedirs(logdir, exist_ok=True)
    tmp = tempfile.TemporaryDirectory(prefix="mw-bench-failover-")
    procs = []

    def start(cmd, name):
        with open(os.path.join(logdir, f"{tag}-{name}.log"), "w") as logf:
            p = subprocess.Popen(cmd, cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT)
        procs.append(p)
        return p

    def redis(port, name, *extra):
        d = os.path.join(tmp.name, name)
        os.makedirs(d)
        p = start(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--dir", d, *extra], name)
        wait(lambda: port_open(port), 10, name)
        return p

    try:
        mport, rport, sport = free_port(), free_port(), free_port()
        master = redis(mport, "master")
        redis(rport, "replica", "--replicaof", "127.0.0.1", str(mport))
        wait(lambda: "master_link_status:up" in cli(rport, "INFO", "replication"), 15,
             "the replica in sync")
        sconf = os.path.join(tmp.name, "sentinel.conf")
        with open(sconf, "w") as f:
            f.write(SENTINEL_CONF.format(port=sport, dir=tmp.name, name=MASTER, master=mport))
        start(["redis-sentinel", sconf], "sentinel")
        wait(lambda: str(rport) in cli(sport, "SENTINEL", "replicas", MASTER), 20,
             "the sentinel to know the replica")
        nconf = os.path.join(tmp.name, "node.conf.lua")
        with open(nconf, "w") as f:
            f.write(NODE_CONF.format(sentinel=sport, name=MASTER))
        ports = []
        for k in (1, 2):
            port = free_port()
            start([binary, "--listen", f"127.0.0.1:{port}", "--script", "scripts/relay.lua",
                   "--config", nconf, "--node-id", f"n{k}"], f"node{k}")
            ports.append(port)
        wait(lambda: all(healthy(p) for p in ports), 15, "both nodes on the master")
        time.sleep(1.5)  # one count of the peers with both there
        data = asyncio.run(asyncio.wait_for(
            traffic(ports[0], ports[1], master, sport, rport), timeout=120))
        return {"failover": data}
    except Exception as e:  # a bench run reports, it does not raise
        return {"error": f"{type(e).__name__}: {e}"}
    finally:
        for p in reversed(procs):  # the nodes first, then the sentinel and Redis
            stop(p)
        tmp.cleanup()


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "moonwire"))
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--logdir", default=os.path.join(ROOT, "build", "bench", "logs"))
    args = ap.parse_args()
    bad = 0
    for k in range(args.runs):
        r = run_failover(args.bin, args.logdir, f"failover-{k + 1}")
        print(json.dumps(r), flush=True)
        f = r.get("failover") or {}
        bad += bool(r.get("error") or f.get("lost") or f.get("duplicated") or
                    f.get("out_of_order"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
