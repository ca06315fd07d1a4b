#!/usr/bin/python3
"""moonwire's benchmarks: moonwire against Node's ws with the same load generator.

For each scenario and each of several rounds, moonwire and ws run one after the
other (the order alternates between rounds), each on a fresh free port of
127.0.0.1, the server pinned to CPU 0 and the generator (build/mw_loadgen) to
CPU 1. The generator reads the server's CPU time (utime+stime of
/proc/PID/stat) over its measured window and divides it by the messages or
deliveries the server handled: that is the first figure of each scenario,
because on a 2-core machine the generator may saturate before the server does.

Prints a table of medians with the ratio moonwire/ws and the targets of issue 6,
and writes every run to bench/results/latest.json (and a timestamped copy
under BUILD/bench/). Every wait is bounded. Servers are stopped by PID.

    make bench                      # the full suite (about 15 minutes)
    make bench QUICK=1              # each scenario briefly, one round
    make bench ONLY=echo,relay ROUNDS=5
    make bench ONLY=soak            # the soak: 10,000 connections of churn for 10 minutes
    make bench ONLY=soak QUICK=1    # the soak briefly (1,000 connections, 30 s)
    make bench ONLY=connect-100k,broadcast-100k   # 100,000 connections (bench/scale.py)

The soak, connect-100k and broadcast-100k run only when named. The soak takes
10 minutes, moonwire alone (ws has no chat app), and its figure is the
server's RSS at the end against its RSS after the first minute. The 100k
scenarios run moonwire --workers with Redis and several load generators
(bench/scale.py says how).
    /usr/bin/python3 bench/run.py --help
"""

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request

import scale
from procs import free_port, healthy, log, stop, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
PEERS = os.path.join(BENCH, "peers")
SERVER_CPU = "0"
LOADGEN_CPU = "1"
NOFILE = 400000



# ---------------------------------------------------------------- scenarios
#
# Each scenario names the moonwire app, the ws peer and the generator's
# arguments. "key" is the per-message figure (server CPU per message or per
# delivery); "rows" are what the table shows, as (label, JSON path, better).

# What every message scenario shows after its own figures: where the time
# went, how much batching there was, and what went wrong.
LOAD_ROWS = [
    ("server CPU busy", "server_cpu_util", "info"),
    ("generator CPU busy", "gen_cpu_util", "info"),
    ("msgs per client read", "msgs_per_read", "info"),
    ("kernel input drops", "kernel.input_drops", "info"),
    ("TCP retransmits", "kernel.tcp_retrans", "info"),
    ("other load, CPUs", "other_load", "info"),
    ("errors", "errors_total", "low"),
]
ECHO_ROWS = [
    ("server CPU us/msg", "server_cpu_us_per_msg", "low"),
    ("  in the kernel us/msg", "server_kernel_us_per_msg", "info"),
    ("msgs/s", "msgs_per_s", "high"),
    ("RTT p50 us", "latency_us.p50", "low"),
    ("RTT p99 us", "latency_us.p99", "low"),
    ("RTT max us", "latency_us.max", "low"),
] + LOAD_ROWS
PUBSUB_ROWS = [
    ("server CPU us/delivery", "server_cpu_us_per_delivery", "low"),
    ("  in the kernel us/deliv.", "server_kernel_us_per_delivery", "info"),
    ("deliveries/s", "deliveries_per_s", "high"),
    ("published/s", "published_per_s", "high"),
    ("delivery p50 us", "latency_us.p50", "low"),
    ("delivery p99 us", "latency_us.p99", "low"),
    ("delivery max us", "latency_us.max", "low"),
    ("loss", "loss", "low"),
] + LOAD_ROWS
SOAK_ROWS = [
    ("RSS growth, ref to end", "soak.rss_growth", "low"),
    ("RSS kB after ref", "soak.rss_ref_kb", "info"),
    ("RSS kB at the end", "soak.rss_end_kb", "info"),
    ("RSS kB at most", "soak.rss_max_kb", "info"),
    ("connections opened", "opened", "info"),
    ("connects/s", "soak.connects_per_s", "info"),
    ("messages received/s", "soak.received_per_s", "info"),
    ("bad-frame closes", "soak.expected_closes", "info"),
    ("wrong close codes", "soak.unexpected_closes", "low"),
    ("server CPU busy", "server_cpu_util", "info"),
    ("errors", "errors_total", "low"),
]
FAILOVER_ROWS = [
    ("kill to first delivery, s", "failover.resume_s", "low"),
    ("kill to promoted, s", "failover.promoted_s", "info"),
    ("messages sent", "failover.sent", "info"),
    ("lost at the kill", "failover.lost", "low"),
    ("duplicated", "failover.duplicated", "low"),
    ("out of order", "failover.out_of_order", "low"),
]
CALLGRIND_ROWS = [
    ("user instructions/msg", "instructions_per_msg", "low"),
    ("user instructions/delivery", "instructions_per_delivery", "low"),
    ("malloc calls/msg", "allocs_per_msg", "low"),
]
FLOOR_ROWS = [
    ("user instructions/call, __index a function", "instructions_per_msg", "low"),
    ("user instructions/call, __index a table", "table_index_per_msg", "low"),
]
API_ROWS = [
    ("server CPU us/request", "server_cpu_us_per_request", "low"),
    ("requests/s", "requests_per_s", "high"),
    ("deliveries/s", "deliveries_per_s", "high"),
    ("loss", "loss", "low"),
    ("errors", "errors_total", "low"),
]
QUEUE_ROWS = [
    ("server CPU us/entry", "server_cpu_us_per_entry", "low"),
    ("entries/s applied", "entries_per_s", "high"),
    ("errors", "errors_total", "low"),
]
CONNECT_ROWS = [
    ("RSS bytes/idle conn", "rss_per_conn_bytes", "low"),
    ("connections open", "opened", "high"),
    ("handshakes/s", "handshakes_per_s", "high"),
    ("server CPU us/handshake", "server_cpu_us_per_handshake", "low"),
    ("other load, CPUs", "other_load", "info"),
    ("errors", "errors_total", "low"),
]


SCALE_CONNECT_ROWS = [
    ("connections held", "opened", "high"),
    ("  of them asked", "conns", "info"),
    ("  missing", "missing", "low"),
    ("handshakes/s (whole ramp)", "handshakes_per_s", "high"),
    ("RSS bytes/conn, all procs", "rss_per_conn_bytes", "low"),
    ("workers", "workers", "info"),
    ("load generators", "loadgens", "info"),
    ("most conns on one worker", "per_worker_max", "info"),
    ("listen queue drops", "listen_drops", "info"),
    ("errors", "errors_total", "low"),
]
SCALE_BROADCAST_ROWS = [
    ("members", "members", "high"),
    ("  missing", "missing", "low"),
    ("reached, worst round", "reached_min", "high"),
    ("deliveries missed", "missed", "low"),
    ("reach p50 ms", "reach_ms.p50", "low"),
    ("reach p99 ms", "reach_ms.p99", "low"),
    ("reach max ms", "reach_ms.max", "low"),
    ("workers+Redis CPU us/deliv.", "server_cpu_us_per_delivery", "low"),
    ("  of it in the kernel", "server_kernel_us_per_delivery", "low"),
    ("RSS bytes/conn, all procs", "rss_per_conn_bytes", "low"),
    ("errors", "errors_total", "low"),
]


def scale_scenarios(quick):
    """connect-100k and broadcast-100k (bench/scale.py): 100,000 connections
    through --workers and several load generators; QUICK: 10,000 over 2
    workers. Only when named."""
    n, workers = (10000, 2) if quick else (100000, 6)
    common = dict(runner="scale", servers=["moonwire"], optional=True, retries=0, rounds=1,
                  args=[], duration=0, warmup=0, conns=n, workers=workers,
                  connect_timeout=60 if quick else 240, hold=2 if quick else 5,
                  hold_bound=120 if quick else 300)
    return [
        dict(name="connect-100k", rows=SCALE_CONNECT_ROWS, rounds_bcast=0, gap=0,
             about=f"{n:,} idle connections held at once: moonwire --workers {workers} with "
                   "redis-server, load generators each under the fd limit on their own "
                   "127.0.0.x sources", **common),
        dict(name="broadcast-100k", rows=SCALE_BROADCAST_ROWS, rounds_bcast=3 if quick else 5,
             gap=2 if quick else 5,
             about=f"{n:,} members of one room (fanout.lua, /?room=all) over {workers} workers "
                   "and Redis; one publisher, a round every "
                   f"{2 if quick else 5} s; time from send to each member", **common),
    ]


def scenarios(quick, nofile):
    t = dict(duration=2, warmup=0.5) if quick else dict(duration=10, warmup=2)
    relay_c = 200 if quick else 1000
    # Room sizes grow with the connections held constant (10,000; quick: 3,000),
    # so that "flat" is about fan-out and not about how many sockets the kernel
    # serves; fanout-small (100-member rooms, a tenth of the connections) shows that
    # second effect on its own.
    fan = [(30, 100), (3, 1000), (1, 3000)] if quick else [(100, 100), (10, 1000), (1, 10000)]
    out = [
        dict(name="echo", app="scripts/echo.lua", peer="echo.js", rows=ECHO_ROWS,
             args=["echo", "-c", 100, "-w", 16, "-s", 64], **t,
             about="100 conns x 16 in flight, 64-byte text, scripts/echo.lua"),
        dict(name="echo-70k", app="scripts/echo.lua", peer="echo.js", rows=ECHO_ROWS,
             args=["echo", "-c", 10, "-w", 4, "-s", 70000], **t,
             about="10 conns x 4 in flight, 70,000-byte text (64-bit lengths); no target"),
        dict(name="relay", app="scripts/relay.lua", peer="relay.js", rows=PUBSUB_ROWS,
             args=["relay", "-c", relay_c, "-P", 1, "-w", 4, "-s", 64], **t,
             about=f"{relay_c} conns, 1 publisher, window 4, 64-byte text, scripts/relay.lua"),
        dict(name="relay-rate", app="scripts/relay.lua", peer="relay.js", rows=PUBSUB_ROWS,
             args=["relay", "-c", relay_c, "-P", 1, "-r", 200, "-s", 64], **t,
             about=f"{relay_c} conns, 200 msgs/s from 1 publisher (no window)"),
        # The relay over two moonwire nodes sharing the room through a real
        # redis-server (all three on the server's CPU; their CPU summed). ws
        # has no cluster: its column is one ws process, as in relay.
        dict(name="cluster-relay", app="scripts/relay.lua", peer="relay.js", rows=PUBSUB_ROWS,
             cluster=2, args=["relay", "-c", relay_c, "-P", 1, "-w", 4, "-s", 64], **t,
             about=f"{relay_c} conns over 2 moonwire nodes and redis-server (ws: one "
                   "process), 1 publisher, window 4"),
        # One message crossing nodes, nearly nothing else: a publisher on n1
        # and one member on n2, so n2's CPU per message is an envelope from
        # Redis and one delivery, and redis-server's is one PUBLISH to 2
        # nodes (bench/capacity.py's envelope_us and redis_us).
        # The pub/sub load of many topics over 2 nodes, on one Redis and then
        # sharded over two (cluster.redis lists both; each room's channel on
        # the shard its name hashes to: rooms "0".."31" put 15 on shard 0 and
        # 17 on shard 1). Moonwire only; CPU per delivery and each
        # redis-server's CPU (cpu_s_by_process) side by side.
        dict(name="cluster-relay-topics", app="bench/apps/fanout.lua", peer="fanout.js",
             rows=PUBSUB_ROWS, cluster=2, servers=["moonwire"],
             args=["fanout", "--rooms", 32, "--members", 32, "-P", 1, "-w", 4, "-s", 64], **t,
             about="32 rooms x 32 members over 2 moonwire nodes and one redis-server, "
                   "1 publisher per room, window 4; no target"),
        dict(name="cluster-relay-2shard", app="bench/apps/fanout.lua", peer="fanout.js",
             rows=PUBSUB_ROWS, cluster=2, shards=2, servers=["moonwire"],
             args=["fanout", "--rooms", 32, "--members", 32, "-P", 1, "-w", 4, "-s", 64], **t,
             about="cluster-relay-topics with the rooms sharded over 2 redis-server "
                   "(cluster.redis lists both); no target"),
        dict(name="cluster-envelope", app="scripts/relay.lua", peer="relay.js",
             rows=PUBSUB_ROWS, cluster=2, servers=["moonwire"],
             args=["relay", "-c", 2, "-P", 1, "-w", 16, "-s", 64], **t,
             about="2 conns over 2 moonwire nodes and redis-server, the publisher on one, "
                   "the member on the other, window 16; no target"),
    ]
    for rooms, members in fan:
        out.append(dict(name=f"fanout-{members}", app="bench/apps/fanout.lua", peer="fanout.js",
                        rows=PUBSUB_ROWS, members=members,
                        args=["fanout", "--rooms", rooms, "--members", members, "-P", 1,
                              "-w", 4, "-s", 64], **t,
                        about=f"{rooms} rooms x {members} members, moonwire.publish, "
                              "1 publisher per room, window 4"))
    rooms = 3 if quick else 10
    out.append(dict(name="fanout-small", app="bench/apps/fanout.lua", peer="fanout.js",
                    rows=PUBSUB_ROWS, args=["fanout", "--rooms", rooms, "--members", 100, "-P", 1,
                                            "-w", 4, "-s", 64], **t,
                    about=f"{rooms} rooms x 100 members ({rooms * 100} connections); no target"))
    # The server API (issue 13): publish requests to a room of 1,000 members,
    # and queue entries applied (bench/api.py drives both; moonwire only).
    out.append(dict(name="api-publish", app="bench/apps/fanout.lua", config="api.conf.lua",
                    runner="api-publish", rows=API_ROWS, servers=["moonwire"],
                    args=["--members", 1000], members=1000, duration=2 if quick else 10,
                    warmup=0, about="POST /api/publish, 4 kept-alive connections x 32 "
                                    "pipelined, to a room of 1,000 members; no target"))
    out.append(dict(name="queue-apply", app="bench/apps/fanout.lua", config="api.conf.lua",
                    runner="queue-apply", rows=QUEUE_ROWS, servers=["moonwire"], cluster=1,
                    args=["--entries", 5000 if quick else 20000], members=1000, duration=0,
                    warmup=0, about="publish entries XADDed to mw:api, applied by one node "
                                    "to a room of 1,000 members; no target"))
    # 100,000 connections, or as many as one process may open here: without
    # CAP_SYS_RESOURCE the hard RLIMIT_NOFILE can not be raised.
    n = 2000 if quick else min(100000, nofile - 200)
    out.append(dict(name="connect", app="scripts/echo.lua", peer="echo.js", rows=CONNECT_ROWS,
                    args=["connect", "-c", n, "--hold", 2 if quick else 3,
                          "--connect-timeout", 30 if quick else 180],
                    duration=0, warmup=0, conns=n,
                    about=f"{n} idle connections over 127.0.0.x sources"))
    out.append(dict(name="connect-used", app="scripts/echo.lua", peer="echo.js",
                    rows=CONNECT_ROWS,
                    args=["connect", "-c", n, "--touch", "--hold", 2 if quick else 3,
                          "--connect-timeout", 30 if quick else 180],
                    duration=0, warmup=0, conns=n,
                    about=f"{n} connections, each with one message echoed, then idle; "
                          "no target"))
    # The soak (issue 12): 10,000 connections to the chat kept at 10,000 for
    # 10 minutes while each lives 5 to 30 s (joins a room, says something every
    # 2 to 10 s, sometimes not JSON) and ends with a close, a dropped socket or
    # a bad frame (1002, 1007, 1009), then connects again. Only when named.
    soak_n = 1000 if quick else min(10000, nofile - 500)
    soak_s, soak_ref = (30, 10) if quick else (600, 60)
    out.append(dict(name="soak", app="scripts/chat.lua", config="soak.conf.lua",
                    rows=SOAK_ROWS, servers=["moonwire"], optional=True, retries=0, rounds=1,
                    args=["soak", "-c", soak_n, "--ref", soak_ref, "--concurrency", 512],
                    duration=soak_s, warmup=0,
                    about=f"{soak_n} connections of churn to scripts/chat.lua for {soak_s} s; "
                          f"RSS at the end against RSS at {soak_ref} s"))
    # Redis Sentinel failover (issue 15): two nodes on a master, its replica
    # and one sentinel; the master is killed mid-traffic (bench/failover.py).
    # Moonwire only; only when named, as it needs redis-sentinel.
    out.append(dict(name="sentinel-failover", runner="sentinel-failover", rows=FAILOVER_ROWS,
                    servers=["moonwire"], optional=True, retries=0, args=[], duration=0,
                    warmup=0, about="2 relay nodes behind 1 redis-sentinel, a message every "
                                    "5 ms, the master SIGKILLed: kill to first delivery"))
    # User-space instructions under callgrind (bench/callgrind.sh): figures
    # that do not move with the machine's noise, with issue 15's targets.
    # Moonwire alone (the targets are uWebSockets' counts, measured once by
    # hand: it is in neither Debian nor npm); the median of the rounds, as
    # batching still moves them a few percent.
    for what, about in (("echo", "20 connections x 4 in flight, 64 B, scripts/echo.lua"),
                        ("relay", "200 connections, 1 publisher, window 4, 64 B, "
                                  "scripts/relay.lua")):
        out.append(dict(name=f"callgrind-{what}", runner="callgrind", rows=CALLGRIND_ROWS,
                        servers=["moonwire"], retries=0, args=[what], duration=0,
                        warmup=0, about=f"under valgrind --tool=callgrind for 3 s: {about}"))
    # What callgrind-echo's Lua call costs in liblua alone (bench/lua_floor.c):
    # its figure less this one is what the rest of the path takes.
    out.append(dict(name="callgrind-lua-floor", runner="callgrind", rows=FLOOR_ROWS,
                    servers=["moonwire"], retries=0, args=["lua-floor"], duration=0,
                    warmup=0, about="on_message(conn, data, kind) -> conn:send(data, kind) "
                                    "in liblua alone, no socket: instructions a call"))
    return out + scale_scenarios(quick)


# Issue 6's targets, as (scenario, JSON path, op, bound, text). "ratio" is
# moonwire/ws of the medians; "abs" is moonwire's own median.
TARGETS = [
    ("echo", "server_cpu_us_per_msg", "ratio<=", 1 / 15, "CPU/msg <= 1/15 of ws"),
    ("echo", "msgs_per_s", "ratio>=", 10, "msgs/s >= 10x ws"),
    ("echo", "latency_us.p99", "ratio<=", 1, "p99 <= ws"),
    ("relay", "server_cpu_us_per_delivery", "ratio<=", 1 / 8, "CPU/delivery <= 1/8 of ws"),
    ("relay", "loss", "abs<=", 0, "no loss"),
    ("relay-rate", "latency_us.p99", "ratio<=", 1 / 4, "p99 <= 1/4 of ws"),
    ("relay-rate", "loss", "abs<=", 0, "no loss"),
    ("cluster-relay", "loss", "abs<=", 0, "no loss"),
    ("connect", "rss_per_conn_bytes", "ratio<=", 1 / 2, "RSS/idle conn <= 1/2 of ws"),
    # Issue 15: as cheap as uWebSockets (its callgrind counts: relay 234
    # per delivery; echo 490 per message without a script call, so 1,500
    # with one), and 1 KB per idle connection.
    ("callgrind-relay", "instructions_per_delivery", "abs<=", 234,
     "user instructions/delivery <= 234 (uWebSockets')"),
    ("callgrind-echo", "instructions_per_msg", "abs<=", 1500,
     "user instructions/msg, a Lua call each, <= 1,500"),
    ("connect", "rss_per_conn_bytes", "abs<=", 1024, "RSS/idle conn <= 1 KB"),
    ("soak", "soak.rss_growth", "abs<=", 0.10, "RSS at the end within 10% of RSS after ref"),
    ("soak", "errors_total", "abs<=", 0, "no errors, every bad frame closed with its code"),
    # Issue 15: 100,000 held (QUICK: 10,000), and every member reached.
    ("connect-100k", "missing", "abs<=", 0, "every connection asked held at once (100,000)"),
    ("connect-100k", "errors_total", "abs<=", 0, "no connection lost while held"),
    ("broadcast-100k", "missing", "abs<=", 0, "every member joined (100,000)"),
    ("broadcast-100k", "missed", "abs<=", 0, "every member reached in every round"),
    ("sentinel-failover", "failover.duplicated", "abs<=", 0, "nothing twice"),
    ("sentinel-failover", "failover.out_of_order", "abs<=", 0, "in order"),
]
# The kernel's part (stime) of a CPU figure. moonwire's kernel part over ws's
# whole figure is the ratio a moonwire spending nothing in user space would
# reach in the same run: a target below it is out of reach on that machine.
KERNEL_PART = {"server_cpu_us_per_msg": "server_kernel_us_per_msg",
               "server_cpu_us_per_delivery": "server_kernel_us_per_delivery"}
FLAT_LIMIT = 1.25  # fan-out: the highest CPU/delivery of the sizes <= 1.25 x the lowest


# -------------------------------------------------------------------- helpers

def get(d, path):
    for part in path.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d



def raise_nofile():
    """Raises RLIMIT_NOFILE to NOFILE, or as far as the hard limit allows when
    the process may not raise it (no CAP_SYS_RESOURCE, as in some containers)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, max(NOFILE, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def nofile_limit():
    raise_nofile()
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]




def metrics(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except Exception:
        return {}
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        k, v = line.rsplit(" ", 1)
        if k.startswith(("moonwire_backpressure", "moonwire_lua_errors", "moonwire_closes",
                         "moonwire_messages_", "moonwire_event_loop_lag_max")):
            try:
                out[k] = float(v)
            except ValueError:
                pass
    return out


def cpu_ticks():
    """Busy time (user+nice+system+irq+softirq), softirq and steal of CPUs 0
    and 1 from /proc/stat, in seconds. A process's utime+stime includes the
    softirq work done while it ran (the loopback TCP receive path of what it
    writes), so busy time must include softirq to compare with it."""
    hz = os.sysconf("SC_CLK_TCK")
    out = {"busy": 0.0, "softirq": 0.0, "steal": 0.0}
    with open("/proc/stat") as f:
        for line in f:
            parts = line.split()
            if parts[0] in ("cpu" + SERVER_CPU, "cpu" + LOADGEN_CPU):
                v = [int(x) for x in parts[1:9]]
                out["busy"] += (v[0] + v[1] + v[2] + v[5] + v[6]) / hz
                out["softirq"] += v[6] / hz
                out["steal"] += v[7] / hz
    return out


def procs_cpu(pids):
    vals = [proc_cpu(pid) for pid in pids]
    return None if None in vals else sum(vals)


def proc_cpu(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def cmd_output(cmd, cwd=None):
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except Exception:
        return None


def machine():
    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ws_version = None
    try:
        with open(os.path.join(PEERS, "node_modules", "ws", "package.json")) as f:
            ws_version = json.load(f)["version"]
    except (OSError, ValueError, KeyError):
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpu": cpu, "cpus": os.cpu_count(), "memory_mb": mem, "kernel": platform.release(),
        "node": cmd_output(["node", "--version"]), "ws": ws_version,
        "moonwire_commit": cmd_output(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT),
        "moonwire_worktree_dirty": bool(cmd_output(["git", "status", "--porcelain", "core"],
                                                   cwd=ROOT)),
        "server_cpu": SERVER_CPU, "loadgen_cpu": LOADGEN_CPU,
    }


# -------------------------------------------------------------------- one run

def start(cmd, logpath):
    with open(logpath, "w") as logf:
        return subprocess.Popen(["taskset", "-c", SERVER_CPU] + cmd, cwd=ROOT, stdout=logf,
                                stderr=subprocess.STDOUT, preexec_fn=raise_nofile)


def start_servers(sc, server, rnd, binaries, logdir, info=None):
    """Starts what serves one run, on CPU 0: the server, or for a cluster
    scenario a redis-server and sc["cluster"] moonwire nodes. Returns
    (processes, ports the clients use, error or None)."""
    base = os.path.join(logdir, f"{sc['name']}-{server}-{rnd}")
    procs, ports = [], []
    if server != "moonwire":
        port = free_port()
        procs.append(start(["node", os.path.join(PEERS, sc["peer"]), str(port)], base + ".log"))
        ports.append(port)
    else:
        redis_url = None
        config = os.path.join(BENCH, sc.get("config", "moonwire.conf.lua"))
        urls = []
        for k in range(sc.get("shards", 1) if sc.get("cluster") else 0):
            rport = free_port()
            log = base + ("-redis.log" if k == 0 else f"-redis{k}.log")
            redis = start(["redis-server", "--port", str(rport), "--bind", "127.0.0.1",
                           "--save", "", "--appendonly", "no"], log)
            procs.append(redis)
            if not wait_port(rport, redis, 15):
                return procs, ports, f"redis-server did not start (see {log})"
            urls.append(f"redis://127.0.0.1:{rport}")
            if info is not None and k == 0:
                info["redis_port"] = rport
        if len(urls) == 1:
            redis_url = urls[0]
        elif urls:
            # Shards: the configuration with cluster.redis listing them all.
            with open(config) as f:
                text = f.read()
            config = base + "-shards.conf.lua"
            with open(config, "w") as f:
                f.write("local c = (function()\n" + text + "\nend)()\n"
                        "c.cluster = c.cluster or {}\n"
                        "c.cluster.redis = { " + ", ".join(f'"{u}"' for u in urls) + " }\n"
                        "return c\n")
        for node in range(sc.get("cluster") or 1):
            port = free_port()
            cmd = [binaries["moonwire"], "--listen", f"127.0.0.1:{port}",
                   "--script", os.path.join(ROOT, sc["app"]), "--config", config]
            if redis_url:
                cmd += ["--redis", redis_url]
            if urls:
                cmd += ["--node-id", f"n{node + 1}"]
            procs.append(start(cmd, f"{base}-{node + 1}.log" if urls else base + ".log"))
            ports.append(port)
    servers = procs[-len(ports):]
    for port, proc in zip(ports, servers):
        if not wait_port(port, proc, 15):
            return procs, ports, f"server did not start (see {base}*.log)"
    if sc.get("cluster") and server == "moonwire":
        # Every node subscribed to Redis: its /healthz says so.
        deadline = time.monotonic() + 15
        while not all(healthy(p) for p in ports):
            if time.monotonic() > deadline:
                return procs, ports, "the nodes did not reach Redis within 15 s"
            time.sleep(0.1)
    return procs, ports, None



def run_api(sc, procs, ports, info, result):
    """The server API's scenarios (bench/api.py), in this process."""
    import api as api_bench
    pid = procs[-1].pid
    if sc["runner"] == "api-publish":
        data = api_bench.run_api_publish(ports[0], pid, members=sc["members"],
                                         duration=sc["duration"])
    else:
        data = api_bench.run_queue_apply(ports[0], pid, info["redis_port"],
                                         members=sc["members"], entries=int(sc["args"][1]))
    result.update(data)
    result["metrics"] = metrics(ports[0])
    for proc in procs:
        if proc.poll() is not None:
            result["error"] = f"a server exited with {proc.returncode} during the run"
    return result


def run_one(sc, server, rnd, args, binaries, logdir):
    if sc.get("runner") == "scale":
        # It starts its own master, workers, Redis and load generators.
        return scale.run(sc, binaries, logdir, raise_nofile)
    if sc.get("runner") == "callgrind":
        result = {"server": server, "round": rnd}
        script = os.path.join(BENCH, "callgrind.sh")
        try:
            # lua-floor runs the build's mw_bench_lua_floor, beside mw_loadgen.
            target = (os.path.join(os.path.dirname(binaries["loadgen"]), "mw_bench_lua_floor")
                      if sc["args"][0] == "lua-floor" else binaries["moonwire"])
            cp = subprocess.run([script, sc["args"][0], target],
                                capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            result["error"] = "bench/callgrind.sh ran past 300 s"
            return result
        lines = [ln for ln in cp.stdout.splitlines() if ln.startswith("{")]
        if cp.returncode != 0 or not lines:
            result["error"] = (f"bench/callgrind.sh exited with {cp.returncode}: "
                               f"{(cp.stderr or cp.stdout)[-300:]}")
            return result
        result.update(json.loads(lines[-1]))
        return result
    if sc.get("runner") == "sentinel-failover":
        import failover
        result = {"server": server, "round": rnd}
        result.update(failover.run_failover(binaries["moonwire"], logdir,
                                            f"{sc['name']}-{rnd}"))
        return result
    info = {}
    procs, ports, err = start_servers(sc, server, rnd, binaries, logdir, info)
    pids = [p.pid for p in procs]
    result = {"server": server, "round": rnd, "port": ports[0] if ports else None,
              "pid": pids[-len(ports)] if ports else None}
    if len(procs) > 1:
        result["pids"] = pids
    try:
        if err:
            result["error"] = err
            return result
        if sc.get("runner"):
            return run_api(sc, procs, ports, info, result)
        gen = ["taskset", "-c", LOADGEN_CPU, binaries["loadgen"], "-l", server, "-q"]
        for port in ports:
            gen += ["-u", f"ws://127.0.0.1:{port}"]
        for pid in pids:
            gen += ["-p", str(pid)]
        gen += [str(a) for a in sc["args"]]
        if sc["duration"]:
            gen += ["-d", str(sc["duration"]), "--warmup", str(sc["warmup"]),
                    "--drain", "5", "--connect-timeout", "60"]
        bound = 60 + 180 + sc["duration"] + sc["warmup"] + 30
        # What else ran on the two CPUs meanwhile (the machine may be shared):
        # their busy time minus the server's and the generator's.
        t0, k0, s0 = time.monotonic(), cpu_ticks(), procs_cpu(pids)
        per0 = [proc_cpu(pid) for pid in pids]
        g0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            cp = subprocess.run(gen, capture_output=True, text=True, timeout=bound,
                                preexec_fn=raise_nofile)
        except subprocess.TimeoutExpired:
            result["error"] = f"load generator ran past {bound} s"
            return result
        t1, k1, s1 = time.monotonic(), cpu_ticks(), procs_cpu(pids)
        per1 = [proc_cpu(pid) for pid in pids]
        g1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        # Each process's CPU over the whole generator run (connects, warmup
        # and drain included: divide by the *_total counts): for a cluster,
        # Redis apart from each node (bench/capacity.py's per-operation costs);
        # with shards, each redis-server apart: redis0, redis1...
        nredis = len(pids) - len(ports)
        roles = ((["redis"] if nredis == 1 else [f"redis{k}" for k in range(nredis)])
                 + [f"n{i + 1}" for i in range(len(ports))])
        result["cpu_s_by_process"] = {role: round(b - a, 3) for role, a, b in zip(roles, per0, per1)
                                      if a is not None and b is not None}
        gen_s = (g1.ru_utime + g1.ru_stime) - (g0.ru_utime + g0.ru_stime)
        if s0 is not None and s1 is not None and t1 > t0:
            wall = t1 - t0
            result["other_load"] = round(max(0.0, (k1["busy"] - k0["busy"]) - (s1 - s0)
                                             - gen_s) / wall, 3)
            result["softirq_load"] = round((k1["softirq"] - k0["softirq"]) / wall, 3)
            result["steal_load"] = round((k1["steal"] - k0["steal"]) / wall, 3)
        lines = [ln for ln in cp.stdout.splitlines() if ln.startswith("{")]
        if not lines:
            result["error"] = f"no JSON from the load generator (exit {cp.returncode}): " + \
                cp.stderr.strip()[-300:]
            return result
        data = json.loads(lines[-1])
        e = data.get("errors", {})
        data["errors_total"] = sum(v for v in e.values() if isinstance(v, (int, float)))
        result.update(data)
        if server == "moonwire":
            result["metrics"] = metrics(ports[0])
        for proc in procs:
            if proc.poll() is not None:
                result["error"] = f"a server exited with {proc.returncode} during the run"
    finally:
        # The nodes first, then Redis.
        codes = [stop(proc) for proc in reversed(procs)]
        result["server_exit"] = next((c for c in codes if c), 0)
    return result


def summarize(sc, runs):
    med = {}
    for server in ("moonwire", "ws"):
        ok = [r for r in runs.get(server, []) if "error" not in r or r.get("error") is None]
        med[server] = {}
        for _, path, _ in sc["rows"]:
            vals = [get(r, path) for r in ok]
            vals = [v for v in vals if isinstance(v, (int, float))]
            med[server][path] = statistics.median(vals) if vals else None
    ratio = {}
    for _, path, _ in sc["rows"]:
        a, b = med["moonwire"].get(path), med["ws"].get(path)
        ratio[path] = (a / b) if isinstance(a, (int, float)) and isinstance(b, (int, float)) \
            and b else None
    return med, ratio


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float) and (abs(v) >= 1000 or v == int(v)):
        return f"{v:,.0f}"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"
    return f"{v:,}"


def check_targets(results):
    out = []
    for name, path, op, bound, text in TARGETS:
        r = results.get(name)
        if r is None:
            continue
        if op.startswith("ratio"):
            val = r["ratio"].get(path)
        else:
            val = r["median"]["moonwire"].get(path)
        if val is None:
            ok = None
        elif op.endswith("<="):
            ok = val <= bound
        else:
            ok = val >= bound
        t = {"scenario": name, "metric": path, "target": text, "value": val, "bound": bound,
             "met": ok}
        if op.startswith("ratio") and path in KERNEL_PART:
            k, w = r["median"]["moonwire"].get(KERNEL_PART[path]), r["median"]["ws"].get(path)
            t["kernel_alone"] = k / w if isinstance(k, (int, float)) and w else None
        out.append(t)
    fan = sorted((r["members"], r) for n, r in results.items()
                 if n.startswith("fanout-") and r.get("members"))
    if len(fan) >= 2:
        for server in ("moonwire", "ws"):
            vals = [(m, r["median"][server].get("server_cpu_us_per_delivery")) for m, r in fan]
            if any(v is None for _, v in vals):
                continue
            lo, hi = min(v for _, v in vals), max(v for _, v in vals)
            out.append({"scenario": "fanout", "metric": f"{server} CPU/delivery flat",
                        "target": f"{server}: CPU/delivery at every size <= "
                                  f"{FLAT_LIMIT} x the lowest "
                                  f"({', '.join(f'{m}: {v:.3f}' for m, v in vals)} us)",
                        "value": hi / lo if lo else None, "bound": FLAT_LIMIT,
                        "met": (hi / lo <= FLAT_LIMIT) if lo else None,
                        "binding": server == "moonwire"})
    return out


def print_table(results, targets, out=sys.stdout):
    w = [14, 25, 14, 14, 9]
    line = f"{'scenario':<{w[0]}} {'metric':<{w[1]}} {'moonwire':>{w[2]}} {'ws':>{w[3]}} " \
           f"{'mw/ws':>{w[4]}}"
    print(line, file=out)
    print("-" * len(line), file=out)
    for name, r in results.items():
        for label, path, _ in r["rows"]:
            a = r["median"]["moonwire"].get(path)
            b = r["median"]["ws"].get(path)
            q = r["ratio"].get(path)
            print(f"{name:<{w[0]}} {label:<{w[1]}} {fmt(a):>{w[2]}} {fmt(b):>{w[3]}} "
                  f"{(f'{q:.3f}' if q is not None else '-'):>{w[4]}}", file=out)
        # The scale scenarios: what the machine allowed, and what limited.
        for run in r["runs"].get("moonwire", []):
            k = run.get("kernel")
            if k and "nofile_hard" in k:  # a load run's "kernel" holds counters
                print(f"{'':<{w[0]}} kernel: RLIMIT_NOFILE hard {k['nofile_hard']}, "
                      f"ip_local_port_range {k['ip_local_port_range']}, somaxconn "
                      f"{k['somaxconn']}, tcp_mem {k['tcp_mem_pages']} pages, "
                      f"MemAvailable {(k['mem_available_kb'] or 0) // 1024} MB", file=out)
                for why in run.get("limited_by") or ["nothing (every connection asked "
                                                     "was tried)"]:
                    print(f"{'':<{w[0]}} limited by: {why}", file=out)
            if run.get("error"):
                print(f"{'':<{w[0]}} ERROR: {run['error']}", file=out)
        print(file=out)
    print("targets (issues 6, 12, 15), medians:", file=out)
    for t in targets:
        mark = {True: "met", False: "NOT MET", None: "n/a"}[t["met"]]
        val = f"{t['value']:.3f}" if isinstance(t["value"], (int, float)) else "-"
        floor = t.get("kernel_alone")
        floor = f" (moonwire's kernel part alone: {floor:.3f})" if floor is not None else ""
        print(f"  {mark:<8} {t['scenario']:<11} {t['target']}: {val}{floor}", file=out)


# ----------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build", help="the CMake build directory")
    ap.add_argument("--quick", action="store_true", help="each scenario briefly, one round")
    ap.add_argument("--rounds", type=int, help="rounds per scenario (3; quick: 1)")
    ap.add_argument("--only", help="comma-separated scenario names or prefixes "
                                   "(echo,relay,relay-rate,cluster-relay,fanout,connect,"
                                   "api-publish,queue-apply; "
                                   "soak, connect-100k, broadcast-100k and "
                                   "sentinel-failover run only when named)")
    ap.add_argument("--servers", default="moonwire,ws")
    ap.add_argument("--max-other-load", type=float, default=0.15,
                    help="CPUs (of the two) that other processes may take during a run "
                         "before it is done again (0.15)")
    ap.add_argument("--retries", type=int,
                    help="times a run is done again because of other load (2; quick: 0)")
    ap.add_argument("--out", help="the JSON file to write (bench/results/latest.json; "
                                  "quick: BUILD/bench/quick.json; only scenarios that run "
                                  "only when named: bench/results/NAME+NAME.json)")
    args = ap.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    if args.retries is None:
        args.retries = 0 if args.quick else 2
    servers = args.servers.split(",")

    build = os.path.join(ROOT, args.build)
    workdir = os.path.join(build, "bench")
    logdir = os.path.join(workdir, "logs")
    os.makedirs(logdir, exist_ok=True)
    for b in ("moonwire", "mw_loadgen"):
        if not os.access(os.path.join(build, b), os.X_OK):
            sys.exit(f"bench: {build}/{b} is missing: run `make bench`")
    # Run a snapshot of the binary, so a rebuild during the suite changes nothing.
    snap = os.path.join(workdir, "moonwire")
    shutil.copy2(os.path.join(build, "moonwire"), snap)
    binaries = {"moonwire": snap, "loadgen": os.path.join(build, "mw_loadgen")}
    with open(snap, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    binary_info = {"moonwire_binary_sha256": digest,
                   "moonwire_binary_built": time.strftime(
                       "%Y-%m-%dT%H:%M:%S%z", time.localtime(os.path.getmtime(snap)))}

    nofile = nofile_limit()
    sel = scenarios(args.quick, nofile)
    if args.only:
        want = args.only.split(",")
        sel = [s for s in sel if any(s["name"] == w or (s["name"].startswith(w + "-") and
                                                        s["name"][len(w) + 1:].isdigit())
                                     for w in want)]
    else:
        sel = [s for s in sel if not s.get("optional")]
    if not sel:
        sys.exit("bench: no scenario selected")
    if args.out is None:
        # A run of scenarios that run only when named (soak, the 100k ones)
        # keeps its own file: the suite's latest.json stays the suite's.
        alone = "+".join(s["name"] for s in sel) + ".json"
        args.out = os.path.join(workdir, "quick.json") if args.quick else \
            os.path.join(BENCH, "results", alone if all(s.get("optional") for s in sel)
                         else "latest.json")
    if any("ws" in sc.get("servers", servers) for sc in sel) and \
            not os.path.isdir(os.path.join(PEERS, "node_modules", "ws")):
        sys.exit("bench: bench/peers/node_modules is missing: run `make bench` (npm ci)")

    info = machine()
    info.update(binary_info)
    info["nofile_limit"] = nofile
    log(f"bench: {len(sel)} scenarios x {rounds} rounds x {servers}; server on CPU "
        f"{SERVER_CPU}, generator on CPU {LOADGEN_CPU}; {info['cpu']}")
    started = time.time()
    results = {}
    for sc in sel:
        sc_servers = [s for s in servers if s in sc.get("servers", servers)]
        runs = {s: [] for s in sc_servers}
        for rnd in range(sc.get("rounds", rounds)):
            order = sc_servers if rnd % 2 == 0 else list(reversed(sc_servers))
            for server in order:
                t0 = time.monotonic()
                # On a shared machine, a run during which other processes took
                # more than --max-other-load CPUs of the two is done again (at
                # most --retries times); the quietest attempt is kept.
                tries = []
                retries = sc.get("retries", args.retries)
                for attempt in range(retries + 1):
                    r = run_one(sc, server, rnd, args, binaries, logdir)
                    r["attempt"] = attempt + 1
                    tries.append(r)
                    if r.get("error") or r.get("other_load", 0) <= args.max_other_load or \
                            attempt == retries:
                        break
                    log(f"  {sc['name']:<13} round {rnd + 1} {server:<8} other processes took "
                        f"{r['other_load']:.2f} CPUs: again")
                    time.sleep(2)
                r = min(tries, key=lambda x: (bool(x.get("error")), x.get("other_load", 0)))
                runs[server].append(r)
                key = sc["rows"][0][1]
                log(f"  {sc['name']:<13} round {rnd + 1} {server:<8} "
                    f"{sc['rows'][0][0]} {fmt(get(r, key))}  "
                    f"{sc['rows'][1][0]} {fmt(get(r, sc['rows'][1][1]))}  "
                    f"errors {fmt(r.get('errors_total'))}"
                    f"{'  ERROR: ' + r['error'] if r.get('error') else ''}"
                    f"  ({time.monotonic() - t0:.0f} s)")
                time.sleep(1)  # let the previous server's sockets settle
        med, ratio = summarize(sc, runs)
        results[sc["name"]] = {"about": sc["about"], "args": [str(a) for a in sc["args"]],
                               "duration": sc["duration"], "warmup": sc["warmup"],
                               "members": sc.get("members"), "rows": sc["rows"],
                               "runs": runs, "median": med, "ratio": ratio}
    targets = check_targets(results)
    print()
    print_table(results, targets)

    doc = {"machine": info, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z",
                                                     time.localtime(started)),
           "seconds": round(time.time() - started), "rounds": rounds, "quick": args.quick,
           "scenarios": {n: {k: v for k, v in r.items() if k != "rows"}
                         for n, r in results.items()},
           "targets": targets}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    with open(os.path.join(workdir, f"results-{stamp}.json"), "w") as f:
        json.dump(doc, f, indent=1)
    log(f"bench: wrote {os.path.relpath(args.out, ROOT)} and "
        f"{os.path.relpath(workdir, ROOT)}/results-{stamp}.json")
    bad = any(r.get("error") for res in results.values() for rs in res["runs"].values()
              for r in rs)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
