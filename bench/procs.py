"""What the bench runners share about the processes they start: free ports
on 127.0.0.1, waiting for a port, a node's /healthz, and stopping by PID.
Every wait is bounded."""
import signal
import socket
import subprocess
import sys
import time
import urllib.request


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout):
    """Whether port accepts within timeout seconds while proc lives."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def healthy(port):
    """Whether the node on port says it is ok (its backplane up, if any)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return r.status == 200 and r.read().startswith(b"ok")
    except Exception:
        return False


def stop(proc, timeout=10):
    """SIGTERM, then SIGKILL after timeout seconds. Returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    return proc.returncode
