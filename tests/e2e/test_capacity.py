"""bench/capacity.py: the capacity model of docs/scaling.md, computed from a
bench JSON. These cases give it costs whose plan is known by hand."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CAPACITY = ROOT / "bench" / "capacity.py"


def bench_json(tmp_path, delivery=1.0, message=0.5, handshake=20.0, conn_bytes=1000.0,
               n2_cpu=2.0, redis_cpu=2.0, published=1_000_000, envelope=True):
    def med(**kw):
        return {"median": {"moonwire": kw}}
    sc = {"relay": med(server_cpu_us_per_delivery=delivery),
          "echo": med(server_cpu_us_per_msg=message),
          "connect": med(server_cpu_us_per_handshake=handshake, rss_per_conn_bytes=conn_bytes)}
    if envelope:
        sc["cluster-envelope"] = {"runs": {"moonwire": [{
            "published_total": published,
            "cpu_s_by_process": {"redis": redis_cpu, "n1": 9.0, "n2": n2_cpu}}]}}
    p = tmp_path / "bench.json"
    p.write_text(json.dumps({"machine": {"moonwire_commit": "abc1234"}, "scenarios": sc}))
    return p


def capacity(*args):
    return subprocess.run([sys.executable, str(CAPACITY), *map(str, args)],
                          capture_output=True, text=True, timeout=60)


def plan(path, *args):
    cp = capacity(path, "--json", *args)
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)


def test_costs_come_from_the_scenarios(tmp_path):
    out = plan(bench_json(tmp_path, n2_cpu=3.0, redis_cpu=1.5, published=1_000_000))
    c = out["costs"]
    assert c["delivery_us"] == 1.0 and c["message_us"] == 0.5 and c["handshake_us"] == 20.0
    assert c["conn_bytes"] == 1000.0
    assert abs(c["envelope_us"] - 3.0) < 1e-9  # n2's CPU per message
    assert abs(c["redis_us"] - 1.5) < 1e-9


def test_one_node_carries_a_small_load_and_needs_no_redis(tmp_path):
    # 60,000 connections, 1 message a minute: 1,000 publishes/s to rooms of
    # 10 = 10,000 deliveries/s: 10,500 us/s of 16 x 0.6 s.
    r = plan(bench_json(tmp_path), "--connections", 60000, "--room", 10)["plans"][0]
    assert r["publishes_per_s"] == 1000 and r["deliveries_per_s"] == 10000
    assert r["nodes"] == 1 and r["redis_shards"] == 0


def test_deliveries_decide_the_nodes_and_envelopes_grow_with_them(tmp_path):
    # 6,000,000 connections, 1/min: 100,000 publishes/s, rooms of 1,000:
    # 1e8 deliveries/s = 1e8 us/s; 16 cores x 0.6 = 9.6e6 us/s a node: 11
    # nodes for deliveries alone; each publish crosses to min(N, 1000) nodes
    # at 2 us, 2.2e6 us/s at 11 nodes: 1.023e8 in all, still 11.
    r = plan(bench_json(tmp_path), "--connections", 6_000_000, "--room", 1000)["plans"][0]
    cpu = 100000 * 0.5 + 1e8 * 1.0 + 100000 * r["nodes"] * 2.0 + 6e6 / 1800 * 20
    assert r["nodes"] == r["nodes_for_cpu"] == -(-int(cpu) // int(9.6e6))
    assert r["first_bound"] == "CPU"
    n = r["nodes"] - 1  # one node fewer would not carry it
    assert 100000 * 0.5 + 1e8 + 100000 * n * 2.0 + 6e6 / 1800 * 20 > n * 9.6e6
    assert r["nodes"] == 11
    # Redis: 100,000 publishes/s x 2 us x N / 2 over 0.7 s a shard.
    assert r["redis_shards"] == -(-int(100000 * 2.0 * r["nodes"] / 2) // 700000)


def test_memory_decides_when_connections_are_many_and_quiet(tmp_path):
    # 10M connections of 100 KB at 64 GiB x 0.7 a node: 23 nodes; almost no traffic.
    r = plan(bench_json(tmp_path, conn_bytes=100_000), "--connections", 10_000_000,
             "--per-minute", 0.001, "--room", 2)["plans"][0]
    assert r["nodes_for_memory"] == -(-10_000_000 * 100_000 // int(64 * 2**30 * 0.7))
    assert r["first_bound"] == "memory"


def test_a_json_without_the_scenarios_is_refused_naming_them(tmp_path):
    cp = capacity(bench_json(tmp_path, envelope=False))
    assert cp.returncode == 2
    assert "envelope_us" in cp.stderr and "cluster-envelope" in cp.stderr


def test_the_markdown_table_has_a_row_per_load(tmp_path):
    cp = capacity(bench_json(tmp_path), "--markdown")
    assert cp.returncode == 0, cp.stderr
    rows = [ln for ln in cp.stdout.splitlines() if ln.startswith("| 1") or ln.startswith("| 10")]
    assert len(rows) == 4, cp.stdout


def test_the_docs_table_is_the_models_output():
    # docs/scaling.md shows the plan for the committed bench JSON; a change to
    # the model or to the JSON without the docs (or the reverse) fails here.
    docs = (ROOT / "docs" / "scaling.md").read_text()
    begin, end = "<!-- capacity:begin -->\n", "\n<!-- capacity:end -->"
    assert begin in docs and end in docs
    shown = docs.split(begin, 1)[1].split(end, 1)[0]
    cp = capacity(ROOT / "bench" / "results" / "capacity.json", "--markdown")
    assert cp.returncode == 0, cp.stderr
    assert shown == cp.stdout.rstrip("\n")
