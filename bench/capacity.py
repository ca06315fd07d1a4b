#!/usr/bin/python3
"""How many moonwire nodes and Redis shards a load needs, from measured costs.

Reads a bench JSON (bench/results/capacity.json, which `make bench-capacity`
writes, unless given: a whole `make bench`'s latest.json does too) for the
per-operation costs this build measured on its machine:

  delivery_us    server CPU per delivery (relay: one publisher, 1,000 members)
  message_us     server CPU per message a client sends (echo: read, hook, one send)
  handshake_us   server CPU per handshake (connect)
  conn_bytes     RSS per idle connection (connect)
  envelope_us    a node's CPU per message from another node, its first delivery
                 included (cluster-envelope: the receiving node, with one member)
  redis_us       Redis's CPU per PUBLISH to the nodes (cluster-envelope, 2 nodes)

and computes, for each load (connections, messages per connection per
minute, room size), the deliveries per second, the nodes needed for CPU and
for memory, the Redis shards, and which bound is reached first. Run
`make bench-capacity` again, and the model follows the code.

    make bench-capacity                     # measure, then the default loads
    bench/capacity.py                       # the default loads, as a table
    bench/capacity.py --markdown            # the table docs/scaling.md shows
    bench/capacity.py --connections 1e6 --per-minute 6 --room 50 --cores 32
    bench/capacity.py results.json --json

Assumptions (each a flag): nodes of --cores cores at --cpu-target busy and
--ram GiB at --mem-target; Redis one core per shard at --redis-target; a
room's members spread over every node (the worst case: each message crosses
to min(nodes, room) nodes); Redis's cost per PUBLISH grows with the nodes it
reaches, linearly from what was measured with 2 (an upper bound: part of it
is per command). The machine the JSON came from is the unit: a faster core
divides every CPU figure.
"""

import argparse
import json
import math
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_JSON = os.path.join(ROOT, "bench", "results", "capacity.json")

# The loads of docs/scaling.md: (connections, messages per connection per
# minute, room size, what it stands for).
DEFAULT_LOADS = [
    (1_000_000, 1, 100, "chat: 1M users, a message a minute each, rooms of 100"),
    (1_000_000, 1, 10_000, "1M users in rooms of 10,000 (live events)"),
    (10_000_000, 1, 100, "chat: 10M users, rooms of 100"),
    (10_000_000, 0.2, 10_000, "10M users, rooms of 10,000, a message every 5 minutes each"),
]


def median_of(scenario, key):
    """moonwire's median of key in a scenario, or None."""
    return (scenario or {}).get("median", {}).get("moonwire", {}).get(key)


def measured(bench):
    """The per-operation costs from a bench JSON, and how each was obtained."""
    sc = bench.get("scenarios", {})
    out, how = {}, {}

    out["delivery_us"] = median_of(sc.get("relay"), "server_cpu_us_per_delivery")
    how["delivery_us"] = "relay: server CPU per delivery"
    out["message_us"] = median_of(sc.get("echo"), "server_cpu_us_per_msg")
    how["message_us"] = "echo: server CPU per message"
    out["handshake_us"] = median_of(sc.get("connect"), "server_cpu_us_per_handshake")
    how["handshake_us"] = "connect: server CPU per handshake"
    out["conn_bytes"] = median_of(sc.get("connect"), "rss_per_conn_bytes")
    how["conn_bytes"] = "connect: RSS per idle connection"

    env, red = [], []
    for run in (sc.get("cluster-envelope") or {}).get("runs", {}).get("moonwire", []):
        cpu = run.get("cpu_s_by_process") or {}
        published = run.get("published_total")
        if run.get("error") or not published or "n2" not in cpu or "redis" not in cpu:
            continue
        env.append(cpu["n2"] / published * 1e6)
        red.append(cpu["redis"] / published * 1e6)
    if env:
        out["envelope_us"] = sorted(env)[len(env) // 2]
        how["envelope_us"] = ("cluster-envelope: the receiving node's CPU per message "
                              "(its first delivery included)")
    if red:
        out["redis_us"] = sorted(red)[len(red) // 2]
        how["redis_us"] = "cluster-envelope: redis-server's CPU per PUBLISH to 2 nodes"
    missing = [k for k in ("delivery_us", "message_us", "handshake_us", "conn_bytes",
                           "envelope_us", "redis_us") if out.get(k) is None]
    return out, how, missing


def plan(costs, connections, per_minute, room, a):
    """Nodes, shards and the first bound for one load."""
    publishes = connections * per_minute / 60.0
    deliveries = publishes * room
    handshakes = connections / (a.session_minutes * 60.0)
    node_us = a.cores * a.cpu_target * 1e6
    n_mem = math.ceil(connections * costs["conn_bytes"] / (a.ram * 2**30 * a.mem_target))
    n_fd = math.ceil(connections / a.conns_per_node)
    nodes = max(1, n_mem, n_fd)
    for _ in range(100):  # the envelopes depend on the nodes: to a fixed point
        reach = min(nodes, room)
        cpu = (publishes * costs["message_us"] + deliveries * costs["delivery_us"] +
               (publishes * reach * costs["envelope_us"] if nodes > 1 else 0.0) +
               handshakes * costs["handshake_us"])
        n_cpu = math.ceil(cpu / node_us)
        new = max(1, n_cpu, n_mem, n_fd)
        if new == nodes:
            break
        nodes = new
    reach = min(nodes, room) if nodes > 1 else 0
    redis_per_publish = costs["redis_us"] * reach / 2.0
    shards = max(1, math.ceil(publishes * redis_per_publish / (a.redis_target * 1e6))) \
        if nodes > 1 else 0
    bounds = {"CPU": n_cpu, "memory": n_mem, "connections per node": n_fd}
    first = max(bounds, key=lambda k: bounds[k])
    cpu_share = {
        "deliveries": deliveries * costs["delivery_us"],
        "messages in": publishes * costs["message_us"],
        "envelopes": publishes * reach * costs["envelope_us"],
        "handshakes": handshakes * costs["handshake_us"],
    }
    return {
        "connections": connections, "per_minute": per_minute, "room": room,
        "publishes_per_s": publishes, "deliveries_per_s": deliveries,
        "nodes": nodes, "nodes_for_cpu": n_cpu, "nodes_for_memory": n_mem,
        "nodes_for_connections": n_fd, "first_bound": first,
        "cpu_share": {k: v / max(1e-9, sum(cpu_share.values())) for k, v in cpu_share.items()},
        "redis_shards": shards,
        "redis_publishes_per_shard_max": (a.redis_target * 1e6 / redis_per_publish
                                          if redis_per_publish else None),
        "cross_node_mbit_per_s": publishes * reach * (a.size + 120) * 8 / 1e6,
    }


def fmt_n(x):
    if x >= 1e6:
        return f"{x / 1e6:.3g}M"
    if x >= 1e3:
        return f"{x / 1e3:.3g}k"
    return f"{x:.3g}"


def table(rows, markdown):
    head = ["connections", "msgs/conn/min", "room", "deliveries/s", "nodes (CPU, memory)",
            "Redis shards", "first bound", "largest CPU share"]
    lines = []
    for r in rows:
        share = max(r["cpu_share"], key=lambda k: r["cpu_share"][k])
        lines.append([fmt_n(r["connections"]), f"{r['per_minute']:g}", fmt_n(r["room"]),
                      fmt_n(r["deliveries_per_s"]),
                      f"{r['nodes']} ({r['nodes_for_cpu']}, {r['nodes_for_memory']})",
                      str(r["redis_shards"]), r["first_bound"],
                      f"{share} {r['cpu_share'][share]:.0%}"])
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(ln) + " |" for ln in lines]
        return "\n".join(out)
    widths = [max(len(h), *(len(ln[i]) for ln in lines)) for i, h in enumerate(head)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    out += ["  ".join(c.ljust(w) for c, w in zip(ln, widths)) for ln in lines]
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("json", nargs="?", default=DEFAULT_JSON, help="a make bench JSON")
    p.add_argument("--connections", type=float, action="append",
                   help="connections (repeat for several loads; default: docs/scaling.md's)")
    p.add_argument("--per-minute", type=float, default=1.0,
                   help="messages each connection sends per minute (default 1)")
    p.add_argument("--room", type=int, default=100, help="members per room (default 100)")
    p.add_argument("--cores", type=int, default=16, help="cores per node (default 16)")
    p.add_argument("--ram", type=float, default=64, help="GiB of RAM per node (default 64)")
    p.add_argument("--cpu-target", type=float, default=0.6, help="busy share of each core (0.6)")
    p.add_argument("--mem-target", type=float, default=0.7, help="share of RAM for connections")
    p.add_argument("--redis-target", type=float, default=0.7,
                   help="busy share of a Redis shard's one core (0.7)")
    p.add_argument("--conns-per-node", type=float, default=1_000_000,
                   help="connections a node may hold (its file descriptors; 1,000,000)")
    p.add_argument("--session-minutes", type=float, default=30,
                   help="how long a connection lives: the handshake rate (30)")
    p.add_argument("--size", type=int, default=200, help="bytes per message (200)")
    p.add_argument("--markdown", action="store_true", help="the table as markdown")
    p.add_argument("--json", dest="as_json", action="store_true", help="everything as JSON")
    a = p.parse_args(argv)

    with open(a.json) as f:
        bench = json.load(f)
    costs, how, missing = measured(bench)
    if missing:
        print(f"capacity.py: {a.json} lacks {', '.join(missing)}: run make bench "
              "(echo, relay, cluster-envelope, connect)", file=sys.stderr)
        return 2
    loads = ([(int(c), a.per_minute, a.room, "") for c in a.connections] if a.connections
             else DEFAULT_LOADS)
    rows = [plan(costs, c, m, r, a) for c, m, r, _ in loads]
    machine = bench.get("machine", {})
    if a.as_json:
        json.dump({"costs": costs, "how": how, "machine": machine, "plans": rows}, sys.stdout,
                  indent=1)
        print()
        return 0
    if a.markdown:
        print(f"Costs measured by `make bench` at {machine.get('moonwire_commit', '?')} "
              f"({machine.get('cpu', '?')}, one core per server):\n")
        print("| cost | value | from |\n|---|---|---|")
        for k in ("delivery_us", "message_us", "envelope_us", "redis_us", "handshake_us"):
            print(f"| {k} | {costs[k]:.3g} us | {how[k]} |")
        print(f"| conn_bytes | {costs['conn_bytes']:.0f} B | {how['conn_bytes']} |\n")
    else:
        print(f"costs from {a.json} (moonwire {machine.get('moonwire_commit', '?')}):")
        for k, v in costs.items():
            print(f"  {k:13s} {v:10.3f}   {how[k]}")
        print(f"nodes: {a.cores} cores at {a.cpu_target:.0%}, {a.ram:g} GiB at "
              f"{a.mem_target:.0%}; Redis: one core per shard at {a.redis_target:.0%}\n")
    print(table(rows, a.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
