#!/usr/bin/env python3
"""The server API's two benchmark figures, for bench/run.py (and alone):

  api-publish  POST /api/publish requests/s to a room of 1,000 members: the
               members are plain sockets that did the WebSocket handshake and
               only count the bytes they read; the requests go pipelined on a
               few kept-alive connections, 32 in flight on each.
  queue-apply  entries/s applied from the Redis stream: N publish entries to
               the same room are XADDed (pipelined, 1,000 in flight) while the
               node reads them, and the clock runs until
               moonwire_queue_applied_total says all N are applied.

Both report the server's CPU per request or entry (its utime+stime over the
run), which does not depend on how fast this Python driver is, besides the
rates. Output: one JSON object per scenario (the keys the table shows).
"""
import base64
import json
import os
import selectors
import socket
import subprocess
import threading
import time
import urllib.request

KEY = "bench-key"


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metric(port, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


class Members:
    """n WebSocket clients in one room, reading and counting bytes in a thread."""

    def __init__(self, port, n, room="bench"):
        self.sel = selectors.DefaultSelector()
        self.bytes = 0
        self.socks = []
        key = base64.b64encode(os.urandom(16)).decode()
        req = (f"GET /?room={room} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode()
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(req)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(4096)
                if not chunk:
                    raise RuntimeError("a member's handshake failed")
                head += chunk
            if not head.startswith(b"HTTP/1.1 101"):
                raise RuntimeError("a member was refused: " + head.split(b"\r\n")[0].decode())
            self.bytes += len(head.split(b"\r\n\r\n", 1)[1])
            s.setblocking(False)
            self.sel.register(s, selectors.EVENT_READ)
            self.socks.append(s)
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop:
            for key, _ in self.sel.select(0.1):
                try:
                    data = key.fileobj.recv(1 << 16)
                except BlockingIOError:
                    continue
                self.bytes += len(data)

    def close(self):
        self.stop = True
        self.thread.join(5)
        for s in self.socks:
            s.close()


def publish_requests(port, data, n_conns, in_flight, duration):
    """Pipelined keep-alive POSTs from n_conns threads for duration seconds.
    Returns (requests answered 200, other answers)."""
    body = json.dumps({"topic": "bench", "data": data}).encode()
    req = (f"POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {KEY}\r\n"
           f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    ok, bad = [0], [0]
    lock = threading.Lock()
    end = time.monotonic() + duration

    def worker():
        s = socket.create_connection(("127.0.0.1", port))
        buf, sent, answered, good, other = b"", 0, 0, 0, 0
        while True:
            now = time.monotonic()
            if now < end and sent - answered < in_flight:
                k = in_flight - (sent - answered)
                s.sendall(req * k)
                sent += k
            if answered == sent:
                break
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            buf += chunk
            # Each answer: a head with Content-Length, then that many bytes.
            while True:
                h = buf.find(b"\r\n\r\n")
                if h < 0:
                    break
                head = buf[:h].decode()
                length = int(head.lower().split("content-length:", 1)[1].split("\r\n", 1)[0])
                if len(buf) < h + 4 + length:
                    break
                if head.startswith("HTTP/1.1 200"):
                    good += 1
                else:
                    other += 1
                answered += 1
                buf = buf[h + 4 + length:]
        s.close()
        with lock:
            ok[0] += good
            bad[0] += other

    threads = [threading.Thread(target=worker) for _ in range(n_conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration + 30)
    return ok[0], bad[0]


def run_api_publish(port, pid, members=1000, duration=10, size=64, conns=4, in_flight=32):
    room = Members(port, members)
    time.sleep(0.5)
    data = "x" * size
    frame = 2 + size if size < 126 else 4 + size
    c0, b0, t0 = cpu_seconds(pid), room.bytes, time.monotonic()
    ok, bad = publish_requests(port, data, conns, in_flight, duration)
    t1 = time.monotonic()
    # Let the last deliveries arrive, then count them.
    deadline = time.monotonic() + 10
    while (room.bytes - b0) < ok * members * frame and time.monotonic() < deadline:
        time.sleep(0.05)
    c1 = cpu_seconds(pid)
    delivered = (room.bytes - b0) // frame
    room.close()
    wall = t1 - t0
    return {"requests_per_s": round(ok / wall), "server_cpu_us_per_request":
            round((c1 - c0) * 1e6 / ok, 2) if ok else None,
            "deliveries_per_s": round(delivered / wall), "requests": ok,
            "loss": (ok * members - delivered) / (ok * members) if ok else None,
            "errors_total": bad, "members": members}


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def xadd_all(redis_port, stream, n, data):
    """XADDs n publish entries, pipelined, and waits for every reply."""
    params = json.dumps({"topic": "bench", "data": data})
    cmd = resp("XADD", stream, "*", "method", "publish", "params", params)
    s = socket.create_connection(("127.0.0.1", redis_port))
    sent, replies, crlf, tail = 0, 0, 0, b""
    while replies < n:
        if sent < n and sent - replies < 1000:
            k = min(1000, n - sent)
            s.sendall(cmd * k)
            sent += k
        chunk = s.recv(1 << 16)
        if not chunk:
            raise RuntimeError("redis closed the connection")
        # Each reply is a bulk string, "$15\r\n<id>\r\n": two line ends.
        crlf += (tail + chunk).count(b"\r\n") - tail.count(b"\r\n")
        tail = chunk[-1:]
        replies = crlf // 2
    s.close()


def run_queue_apply(port, pid, redis_port, members=1000, entries=20000, size=64):
    room = Members(port, members)
    time.sleep(0.5)
    data = "y" * size
    applied0 = metric(port, "moonwire_queue_applied_total")
    c0, t0 = cpu_seconds(pid), time.monotonic()
    xadd_all(redis_port, "mw:api", entries, data)
    deadline = time.monotonic() + 120
    while metric(port, "moonwire_queue_applied_total") - applied0 < entries:
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    t1, c1 = time.monotonic(), cpu_seconds(pid)
    applied = metric(port, "moonwire_queue_applied_total") - applied0
    bad = metric(port, "moonwire_queue_bad_total")
    room.close()
    wall = t1 - t0
    return {"entries_per_s": round(applied / wall), "server_cpu_us_per_entry":
            round((c1 - c0) * 1e6 / applied, 2) if applied else None,
            "entries": int(applied), "errors_total": int(bad + (entries - applied)),
            "members": members}


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["api-publish", "queue-apply"])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--redis-port", type=int)
    ap.add_argument("--members", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--entries", type=int, default=20000)
    a = ap.parse_args()
    if a.what == "api-publish":
        print(json.dumps(run_api_publish(a.port, a.pid, a.members, a.duration)))
    else:
        print(json.dumps(run_queue_apply(a.port, a.pid, a.redis_port, a.members, a.entries)))
