"""The benchmarks' load generator (bench/loadgen.c) against the real binary,
briefly: every echo comes back byte for byte, every relayed message reaches
every other client, on one node and across two nodes and a real
redis-server. This keeps `make bench` honest (a generator that miscounts
would report a loss or a mismatch here) and puts moonwire under load in
every test run, ASan build included. Nothing here is timed."""
import json
import pathlib
import re
import shutil
import subprocess

import pytest

from conftest import BIN, ROOT, wait_until
from test_cluster import REDIS, Redis, cluster_up

LOADGEN = pathlib.Path(BIN).parent / "mw_loadgen"
pytestmark = pytest.mark.skipif(not LOADGEN.exists(), reason=f"{LOADGEN} is not built")


def loadgen(servers, *args):
    cmd = [str(LOADGEN), "-q", "-d", "1", "--warmup", "0.2", "--drain", "5",
           "--connect-timeout", "20"]
    for s in servers:
        cmd += ["-u", s.url, "-p", str(s.pid)]
    p = subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True,
                       timeout=60)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"no JSON from mw_loadgen (exit {p.returncode}): {p.stderr}"
    out = json.loads(lines[-1])
    assert out["error"] is None, out["error"]
    assert not any(out.get("errors", {}).values()), out["errors"]
    return out


def test_echo_returns_every_message_byte_for_byte(start_server):
    s = start_server("scripts/echo.lua")
    out = loadgen([s], "echo", "-c", 20, "-w", 8, "-s", 200)
    assert out["opened"] == 20 and out["clean_closes"] == 20
    assert out["sent_total"] > 100 and out["echoed_total"] == out["sent_total"]
    assert out["outstanding"] == 0
    # The server's CPU time, split (stime of /proc/PID/stat): its sockets cost
    # kernel time and the Lua call on every message user time, so neither
    # part is empty.
    assert 0 < out["server_kernel_share"] < 1
    assert 0 < out["server_kernel_us_per_msg"] < out["server_cpu_us_per_msg"]


def test_echo_of_large_binary_messages_with_64_bit_lengths(start_server):
    s = start_server("scripts/echo.lua", config="return { websocket = { max_message_size = 131072 } }")
    out = loadgen([s], "echo", "-c", 2, "-w", 2, "-s", 70000, "--binary")
    assert out["echoed_total"] == out["sent_total"] > 0


def test_relay_reaches_every_other_client_without_loss(start_server):
    s = start_server("scripts/relay.lua")
    out = loadgen([s], "relay", "-c", 50, "-P", 2, "-w", 4)
    assert out["opened"] == 50
    assert out["expected_total"] > 0 and out["received_total"] == out["expected_total"]
    assert out["loss"] == 0


@pytest.mark.skipif(REDIS is None, reason="redis-server is not installed")
def test_relay_across_two_nodes_through_redis_loses_nothing(start_server):
    redis = Redis()
    try:
        a, b = (start_server("scripts/relay.lua",
                             args=["--node-id", name, "--redis", redis.url])
                for name in ("a", "b"))
        wait_until(lambda: cluster_up(a) and cluster_up(b), timeout=10, what="both nodes on Redis")
        # Connections alternate between the nodes; the publisher is on a.
        out = loadgen([a, b], "relay", "-c", 40, "-P", 1, "-w", 4)
        assert out["servers"] == 2
        assert out["expected_total"] > 0 and out["received_total"] == out["expected_total"]
        assert out["loss"] == 0
    finally:
        redis.stop()


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_the_callgrind_script_counts_instructions_per_message():
    """bench/callgrind.sh, which the performance notes rely on for A/B of two
    builds, still runs the server under callgrind and drives it. The bound on
    instructions is a sanity check of the count (startup alone is millions),
    not a target; the one on allocations is the design's."""
    if b"__asan_init" in pathlib.Path(BIN).read_bytes():
        pytest.skip("an ASan build does not run under valgrind")
    p = subprocess.run([str(pathlib.Path(ROOT) / "bench" / "callgrind.sh"), "echo", BIN],
                       capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stdout + p.stderr
    m = re.search(r"([\d,]+) messages in: ([\d,]+) per message", p.stdout)
    assert m, p.stdout
    messages, per = (int(g.replace(",", "")) for g in m.groups())
    assert messages > 1000
    assert 500 < per < 50000, p.stdout
    # No malloc per message: the frame, queue and Lua pools take it back. The
    # measured window holds no startup and no connect (about 15 calls in 80,000
    # messages); without the Lua pool every message's string was one more.
    m = re.search(r"([\d,]+) calls to malloc", p.stdout)
    assert m, p.stdout
    allocs = int(m.group(1).replace(",", ""))
    assert allocs < messages // 100, p.stdout
    # The last line is the same as JSON, for bench/run.py.
    last = json.loads(p.stdout.strip().splitlines()[-1])
    assert last["messages"] == messages and last["instructions_per_msg"] > 500, last


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_the_lua_floor_counts_one_hook_call_in_liblua():
    """bench/callgrind.sh lua-floor (bench/lua_floor.c), the figure that
    callgrind-echo's is read against: it runs, both shapes of __index are
    counted, and the function, which Lua calls, costs more than the table,
    which it reads. The bounds are a sanity check of the count, not a target."""
    floor = pathlib.Path(BIN).parent / "mw_bench_lua_floor"
    if not floor.exists():
        pytest.skip(f"{floor} is not built")
    if b"__asan_init" in floor.read_bytes():
        pytest.skip("an ASan build does not run under valgrind")
    p = subprocess.run([str(pathlib.Path(ROOT) / "bench" / "callgrind.sh"), "lua-floor",
                        str(floor)], capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stdout + p.stderr
    last = json.loads(p.stdout.strip().splitlines()[-1])
    assert 300 < last["table_index_per_msg"] < last["instructions_per_msg"] < 20000, last
