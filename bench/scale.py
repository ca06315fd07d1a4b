"""The scale scenarios of bench/run.py (issue 15): connect-100k and broadcast-100k.

One process may open only RLIMIT_NOFILE sockets (here a hard 20,000 that an
unprivileged process cannot raise), so 100,000 connections take several of
each side: moonwire --workers W (SO_REUSEPORT, one port) sharing the room
through a redis-server started here, and L mw_loadgen processes in `member`
mode, each under its own fd limit and on its own 127.0.0.x source addresses.
All connections are held at the same time.

connect-100k: handshakes/s over the whole ramp (first connect of any load
generator to the last handshake of any), and RSS per connection: the master's
and every worker's VmRSS once all are connected, minus theirs before, over the
connections held.

broadcast-100k: the same connections all joined to one room
(bench/apps/fanout.lua, /?room=all), then a publisher (one more connection,
in this process) sends R rounds of "B<round> <CLOCK_MONOTONIC ns>". Each load
generator records, per connection and round, arrival time minus send time
(CLOCK_MONOTONIC is one clock for every process of the machine). The figures:
p50/p99/max of time-to-reach over every member and round, and how many
members each round reached (all must).

Nothing here is pinned to a CPU: the workers, Redis and the load generators
share both. Every wait is bounded; every process is stopped by its PID.
"""

import base64
import json
import math
import os
import resource
import select
import socket
import struct
import subprocess
import time
from procs import free_port, healthy, log, stop, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
FD_HEADROOM = 300     # fds a process keeps for itself besides connections
WORKER_SLACK = 0.10   # SO_REUSEPORT spreads by hash: a worker may get 10% more
PER_SOURCE = 10000    # connections per 127.0.0.x source (see loadgen's src_count)



def read_int(path):
    try:
        with open(path) as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return None


def kernel_limits():
    """What the kernel and the process limits allow, as found."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    mem_avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    mem_avail = int(line.split()[1])
    except OSError:
        pass
    lo_hi = read_int("/proc/sys/net/ipv4/ip_local_port_range") or [32768, 60999]
    return {
        "nofile_hard": hard,
        "ip_local_port_range": lo_hi,
        "somaxconn": (read_int("/proc/sys/net/core/somaxconn") or [None])[0],
        "tcp_max_syn_backlog": (read_int("/proc/sys/net/ipv4/tcp_max_syn_backlog") or [None])[0],
        "tcp_mem_pages": read_int("/proc/sys/net/ipv4/tcp_mem"),
        "file_max": (read_int("/proc/sys/fs/file-max") or [None])[0],
        "mem_available_kb": mem_avail,
    }


def plan(conns, workers, k):
    """Splits conns over load generators and checks them against the limits k.
    Returns (conns that can be held, [per-generator counts], connections per
    source address, [what limited])."""
    limited = []
    per_proc = k["nofile_hard"] - FD_HEADROOM
    # The server side: W workers, each under its fd limit with room for the
    # kernel's uneven spreading.
    srv_cap = int(workers * per_proc / (1 + WORKER_SLACK))
    if conns > srv_cap:
        limited.append(f"RLIMIT_NOFILE (hard {k['nofile_hard']}) x {workers} workers holds "
                       f"about {srv_cap:,} with {WORKER_SLACK:.0%} slack for SO_REUSEPORT's "
                       f"spreading: {conns:,} asked, {srv_cap:,} tried (more --workers would do)")
        conns = srv_cap
    # At least two, so the quick variant spreads over processes as the full one does.
    gens = max(2, math.ceil(conns / per_proc))
    counts = [conns // gens + (1 if i < conns % gens else 0) for i in range(gens)]
    ports = k["ip_local_port_range"][1] - k["ip_local_port_range"][0] + 1
    per_source = PER_SOURCE
    if PER_SOURCE > ports * 0.9:
        per_source = max(1, int(ports * 0.9))
        limited.append(f"ip_local_port_range has {ports} ports: {per_source:,} connections "
                       f"per source address instead of {PER_SOURCE:,} (more sources)")
    fm = k.get("file_max")
    if fm and fm < 2 * conns + 10000:
        limited.append(f"fs.file-max {fm:,} < both ends of {conns:,} connections")
    tm = k.get("tcp_mem_pages")
    if tm and tm[2] * 4096 < conns * 2 * 4096:
        limited.append(f"net.ipv4.tcp_mem max {tm[2]:,} pages: under a page per socket")
    ma = k.get("mem_available_kb")
    if ma and ma * 1024 < conns * 40000:
        limited.append(f"MemAvailable {ma // 1024:,} MB: under 40 kB per connection "
                       "(both ends, kernel buffers)")
    sm = k.get("somaxconn")
    if sm and sm < 512:
        limited.append(f"net.core.somaxconn {sm}: the listen queue is cut to it")
    return conns, counts, per_source, limited




def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_s(pid, kernel_only=False):
    """utime + stime of a process in seconds (stime alone: kernel_only)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = int(fields[12]) + (0 if kernel_only else int(fields[11]))
        return ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def listen_drops():
    """TcpExt ListenOverflows and ListenDrops: SYNs or accepts lost to a full queue."""
    try:
        with open("/proc/net/netstat") as f:
            lines = f.read().splitlines()
        for a, b in zip(lines, lines[1:]):
            if a.startswith("TcpExt:") and b.startswith("TcpExt:"):
                d = dict(zip(a.split()[1:], (int(x) for x in b.split()[1:])))
                return d.get("ListenOverflows", 0) + d.get("ListenDrops", 0)
    except (OSError, ValueError):
        pass
    return 0




class Publisher:
    """One WebSocket client that sends the rounds (masked text frames)."""

    def __init__(self, port, path, timeout=10):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.s.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                       .encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.s.recv(4096)
            if not chunk:
                raise RuntimeError("the publisher's handshake failed")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError("the publisher was refused: " + head.split(b"\r\n")[0].decode())

    def send_text(self, text):
        data = text.encode()
        assert len(data) < 126
        mask = os.urandom(4)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.s.sendall(bytes([0x81, 0x80 | len(data)]) + mask + body)

    def close(self):
        try:
            self.s.sendall(bytes([0x88, 0x82]) + b"\0\0\0\0" + b"\x03\xe8")
        except OSError:
            pass
        self.s.close()


def percentile(sorted_vals, p):
    if not sorted_vals:
        return None
    i = max(0, min(len(sorted_vals) - 1, math.ceil(p / 100 * len(sorted_vals)) - 1))
    return sorted_vals[i]


def run(sc, binaries, logdir, raise_nofile):
    """One run of a scale scenario. Returns the result dict for run.py."""
    t_begin = time.monotonic()
    name, workers, asked = sc["name"], sc["workers"], sc["conns"]
    base = os.path.join(logdir, f"{name}-moonwire")
    k = kernel_limits()
    conns, counts, per_source, limited = plan(asked, workers, k)
    result = {"server": "moonwire", "round": 0, "workers": workers, "conns": conns,
              "asked": asked, "loadgens": len(counts), "kernel": k, "limited_by": limited}
    for why in limited:
        log(f"  {name}: LIMITED: {why}")
    procs, gens, pubr, outs, samples = [], [], None, [], []
    try:
        rport, port = free_port(), free_port()
        redis = subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "no",
                                  "--maxclients", "1000"],
                                 stdout=open(base + "-redis.log", "w"), stderr=subprocess.STDOUT)
        procs.append(redis)
        if not wait_port(rport, redis, 15):
            result["error"] = f"redis-server did not start (see {base}-redis.log)"
            return result
        master = subprocess.Popen(
            [binaries["moonwire"], "--workers", str(workers), "--listen", f"127.0.0.1:{port}",
             "--script", os.path.join(BENCH, "apps", "fanout.lua"),
             "--config", os.path.join(BENCH, "moonwire.conf.lua"),
             "--redis", f"redis://127.0.0.1:{rport}", "--node-id", "s"],
            cwd=ROOT, stdout=open(base + ".log", "w"), stderr=subprocess.STDOUT,
            preexec_fn=raise_nofile)
        procs.append(master)
        if not wait_port(port, master, 15):
            result["error"] = f"moonwire did not start (see {base}.log)"
            return result
        deadline = time.monotonic() + 20
        while len(children(master.pid)) < workers or \
                not all(healthy(port) for _ in range(2 * workers)):
            if time.monotonic() > deadline or master.poll() is not None:
                result["error"] = "the workers did not all start and reach Redis within 20 s"
                return result
            time.sleep(0.2)
        srv = [master.pid] + children(master.pid)
        rss0 = {p: rss_kb(p) for p in srv}
        fd0 = {p: fd_count(p) for p in srv}
        drops0 = listen_drops()
        path = "/?room=all"

        # The load generators, each on sources of its own.
        src = 0
        t_conn = time.monotonic()
        for i, n in enumerate(counts):
            nsrc = max(1, math.ceil(n / per_source))
            spath = os.path.join(logdir, f"{name}-samples-{i}.bin")
            samples.append(spath)
            cmd = [binaries["loadgen"], "-q", "-l", f"g{i}", "-u", f"ws://127.0.0.1:{port}{path}",
                   "-c", str(n), "--src-first", str(src), "--src-addrs", str(nsrc),
                   "--concurrency", "128", "--close-timeout", "30", "--connect-timeout", str(sc["connect_timeout"]),
                   "-d", str(sc["connect_timeout"] + sc["hold_bound"]), "--samples", spath,
                   "member"]
            src += nsrc
            gens.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=open(f"{base}-gen{i}.log", "w"),
                                         preexec_fn=raise_nofile))
        ready = {}
        deadline = time.monotonic() + sc["connect_timeout"] + 30
        bufs = {g.stdout.fileno(): b"" for g in gens}
        while len(ready) < len(gens) and time.monotonic() < deadline:
            fds = [g.stdout.fileno() for g in gens if g.stdout.fileno() not in ready and
                   g.poll() is None]
            if not fds:
                break
            r, _, _ = select.select(fds, [], [], 1.0)
            for fd in r:
                chunk = os.read(fd, 4096)
                bufs[fd] += chunk
                if b"\n" in bufs[fd] or not chunk:
                    line = bufs[fd].split(b"\n", 1)[0].decode(errors="replace").split()
                    if line and line[0] == "ready":
                        ready[fd] = [int(x) for x in line[1:6]]
                    else:
                        ready[fd] = None
        opened = sum(v[0] for v in ready.values() if v)
        failed = sum(v[2] for v in ready.values() if v)
        firsts = [v[3] for v in ready.values() if v and v[0]]
        lasts = [v[4] for v in ready.values() if v and v[0]]
        ramp = (max(lasts) - min(firsts)) / 1e9 if firsts else 0
        result.update(opened=opened, connect_failed=failed, connect_s=round(ramp, 3),
                      handshakes_per_s=round(opened / ramp, 1) if ramp > 0 else None,
                      missing=asked - opened,  # a limited run misses the target
                      listen_drops=listen_drops() - drops0)
        if len(ready) < len(gens) or None in ready.values():
            result["error"] = (f"{len(gens) - sum(1 for v in ready.values() if v)} load "
                               f"generators did not report ready in "
                               f"{time.monotonic() - t_conn:.0f} s (see {base}-gen*.log)")
        log(f"  {name}: {opened:,} of {conns:,} connected in {ramp:.1f} s over "
            f"{len(gens)} load generators ({failed} failed)")

        # Held: RSS once the workers settled.
        time.sleep(sc["hold"])
        srv = [master.pid] + children(master.pid)
        rss1 = {p: rss_kb(p) for p in srv}
        grow = sum(rss1[p] - rss0.get(p, 0) for p in srv)
        per_worker = [max(0, fd_count(p) - fd0.get(p, 0)) for p in srv[1:]]
        result.update(rss_before_kb=sum(rss0.values()), rss_connected_kb=sum(rss1.values()),
                      rss_per_conn_bytes=round(grow * 1024 / opened, 1) if opened else None,
                      per_worker_fds=per_worker,
                      per_worker_max=max(per_worker) if per_worker else None,
                      redis_rss_kb=rss_kb(redis.pid))
        still = sum(1 for g in gens if g.poll() is None)
        if still < len(gens) and "error" not in result:
            result["error"] = f"{len(gens) - still} load generators exited while holding"

        if sc["rounds_bcast"] and "error" not in result:
            pubr = Publisher(port, path)
            time.sleep(0.5)
            # What the workers and Redis spend holding the connections idle
            # over one gap, taken off what they spend over the rounds.
            allpids = srv + [redis.pid]
            c0 = sum(cpu_s(p) for p in allpids)
            k0 = sum(cpu_s(p, True) for p in allpids)
            time.sleep(sc["gap"])
            c1 = sum(cpu_s(p) for p in allpids)
            k1 = sum(cpu_s(p, True) for p in allpids)
            for r in range(sc["rounds_bcast"]):
                pubr.send_text(f"B{r} {time.monotonic_ns()}")
                time.sleep(sc["gap"])
            c2 = sum(cpu_s(p) for p in allpids)
            k2 = sum(cpu_s(p, True) for p in allpids)
            result["idle_cpu_s_per_gap"] = round(c1 - c0, 3)
            result["server_cpu_s"] = round(max(0.0, (c2 - c1) - (c1 - c0) * sc["rounds_bcast"]),
                                           3)
            # Of it, in the kernel (system time): the writes to the members'
            # sockets, loopback's receive path and the readers' wake-ups.
            result["server_kernel_cpu_s"] = round(
                max(0.0, (k2 - k1) - (k1 - k0) * sc["rounds_bcast"]), 3)
    finally:
        if pubr is not None:
            pubr.close()
        for g in gens:
            try:
                g.stdin.close()
            except OSError:
                pass
            g.stdin = None  # closed: its close ends the hold
        outs = []
        for g in gens:
            try:
                out, _ = g.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                g.kill()
                out, _ = g.communicate(timeout=10)
            outs.append(out.decode(errors="replace") if out else "")
        for p in reversed(procs):
            stop(p, timeout=15)
    gen_json = []
    for out in outs:
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        gen_json.append(json.loads(lines[-1]) if lines else {})
    errs = {}
    for j in gen_json:
        for key, v in (j.get("errors") or {}).items():
            if isinstance(v, (int, float)):
                errs[key] = errs.get(key, 0) + v
    result["errors"] = errs
    gen_errors = [j["error"] for j in gen_json if j.get("error")]
    if gen_errors and "error" not in result:
        result["error"] = "load generator: " + "; ".join(sorted(set(gen_errors)))
    result["errors_total"] = sum(v for key, v in errs.items() if key != "server_closed")
    if sc["rounds_bcast"] and result.get("opened"):
        lat, got = [], [0] * sc["rounds_bcast"]
        by_round = [[] for _ in got]
        for spath in samples:
            try:
                with open(spath, "rb") as f:
                    raw = f.read()
                os.unlink(spath)
            except OSError:
                continue
            vals = struct.unpack(f"<{len(raw) // 8}Q", raw)
            for i in range(0, len(vals) - 1, 2):
                if vals[i] < len(got):
                    got[vals[i]] += 1
                    by_round[vals[i]].append(vals[i + 1])
                lat.append(vals[i + 1])
        lat.sort()
        for one in by_round:
            one.sort()
        ms = lambda v: round(v / 1e6, 2) if v is not None else None  # noqa: E731
        members = result["opened"]
        result.update(members=members, rounds=sc["rounds_bcast"], reached=got,
                      reached_min=min(got), missed=sum(members - g for g in got),
                      reach_ms={"p50": ms(percentile(lat, 50)), "p99": ms(percentile(lat, 99)),
                                "max": ms(lat[-1] if lat else None), "count": len(lat)},
                      # Each round's own: a first (or last) round slower than
                      # the rest shows here.
                      reach_ms_by_round=[{"p50": ms(percentile(one, 50)),
                                          "p99": ms(percentile(one, 99)),
                                          "max": ms(one[-1] if one else None)}
                                         for one in by_round])
        deliveries = sum(got)
        if deliveries and result.get("server_cpu_s") is not None:
            result["server_cpu_us_per_delivery"] = round(result["server_cpu_s"] * 1e6 /
                                                         deliveries, 3)
            result["server_kernel_us_per_delivery"] = round(
                result.get("server_kernel_cpu_s", 0.0) * 1e6 / deliveries, 3)
        mx = result["reach_ms"]["max"]
        if mx is not None and mx > sc["gap"] * 1000 * 0.8:
            result["limited_by"].append(f"a round took {mx:.0f} ms to reach all, near the "
                                        f"{sc['gap']} s between rounds: rounds overlapped")
        if result["missed"] and "error" not in result:
            result["error"] = f"{result['missed']} deliveries missing over {len(got)} rounds"
        log(f"  {name}: reached {got} of {members:,}; p50 {result['reach_ms']['p50']} ms, "
            f"p99 {result['reach_ms']['p99']} ms, max {result['reach_ms']['max']} ms")
    result["seconds"] = round(time.monotonic() - t_begin, 1)
    return result
