"""Shared fixtures for end-to-end tests against the real moonwire binary.

Every test starts the servers it needs on 127.0.0.1 on a free port and stops
them by PID (TERM, then KILL after a bounded wait). The binary is
$MW_BIN, or build/moonwire. Set MW_SANITIZED=1 when $MW_BIN was built with
ASan/UBSan: a server whose log holds a sanitizer report fails the test.
"""
import os
import pathlib
import random
import signal
import socket
import subprocess
import tempfile
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("MW_BIN", str(ROOT / "build" / "moonwire"))
SANITIZED = os.environ.get("MW_SANITIZED") == "1"


# Ports for the servers a test starts come from below the kernel's ephemeral
# range (ip_local_port_range, 32768-60999 by default), and none is handed out
# twice in one run; a port is free when a connect to it is refused, so no
# socket of ours was ever bound to it. A CI run of the sanitizer e2e suite
# (under gVisor) had a connect to a listening server refused: the port had
# come from bind(0), so it was one the kernel could give the next client
# connect() as its source port, or one a probe socket still held while the
# server bound it, and a port reused within a minute may meet the last
# server's TIME_WAIT tuples. None of these can happen here.
_PORT_LOW, _PORT_HIGH = 20000, 32767
_ports_given = set()
_port_rng = random.Random(os.getpid() ^ time.monotonic_ns())


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now, outside the
    ephemeral range and not given out before in this run."""
    for _ in range(1000):
        port = _port_rng.randint(_PORT_LOW, _PORT_HIGH)
        if port in _ports_given:
            continue
        _ports_given.add(port)
        with socket.socket() as s:
            s.settimeout(2)
            try:
                s.connect(("127.0.0.1", port))
            except ConnectionRefusedError:
                return port
            except OSError:
                pass
    raise AssertionError("no free port in %d-%d" % (_PORT_LOW, _PORT_HIGH))


def wait_until(predicate, timeout=5.0, step=0.02, what="condition"):
    """Polls predicate until it is true; fails the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Server:
    """One moonwire process."""

    def __init__(self, script="scripts/echo.lua", config=None, args=(), env=None):
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        self.http = f"http://127.0.0.1:{self.port}"
        self.tmp = tempfile.TemporaryDirectory(prefix="mw-e2e-")
        self.log_path = pathlib.Path(self.tmp.name) / "server.log"
        cmd = [BIN, "--listen", f"127.0.0.1:{self.port}", "--log-level", "debug"]
        if script is not None:
            cmd += ["--script", str(script)]
        if config is not None:
            path = pathlib.Path(self.tmp.name) / "moonwire.conf.lua"
            path.write_text(config)
            cmd += ["--config", str(path)]
        cmd += list(args)
        full_env = dict(os.environ)
        full_env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        full_env.update(env or {})
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.log_file,
                                     stderr=subprocess.STDOUT, env=full_env)
        self.returncode = None
        try:
            wait_until(lambda: port_open(self.port) or self.proc.poll() is not None,
                       timeout=10, what="moonwire to listen")
        except AssertionError:
            self.kill()
            raise
        if self.proc.poll() is not None:
            raise AssertionError(f"moonwire exited at start:\n{self.log()}")

    @property
    def pid(self):
        return self.proc.pid

    def log(self):
        if not self.log_file.closed:
            self.log_file.flush()
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text, timeout=5.0):
        """Waits until text appears in the server's log; returns the log."""
        return wait_until(lambda: text in self.log() and self.log(), timeout=timeout,
                          what=f"{text!r} in the server log")

    def signal(self, signum):
        self.proc.send_signal(signum)

    def stop(self, timeout=10.0):
        """SIGTERM, then SIGKILL after timeout seconds. Returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.returncode = self.proc.returncode
        self.log_file.close()
        return self.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.log_file.close()

    def check_clean(self):
        """Fails when the log holds a sanitizer report or a crash."""
        text = self.log()
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                       "Segmentation fault", "PANIC"):
            assert marker not in text, f"{marker} in the server log:\n{text}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keeps each phase's report on the test, for fixtures to see how it went."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def start_server(request):
    """start_server(script=..., config=..., args=...) -> Server; all are stopped after the test.
    When the test failed, the end of each server's log is printed (shown with the failure)."""
    servers = []

    def start(*a, **kw):
        s = Server(*a, **kw)
        servers.append(s)
        return s

    yield start
    # Stop every server before judging any, so one bad exit leaves none running.
    codes = [s.stop() for s in servers]
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for i, s in enumerate(servers):
            lines = s.log().splitlines()
            print(f"--- server {i} (port {s.port}), last {min(len(lines), 80)} of {len(lines)} "
                  f"log lines ---")
            print("\n".join(lines[-80:]))
    for s, code in zip(servers, codes):
        s.check_clean()
        assert code in (0, None, -signal.SIGKILL), f"moonwire exited with {code}:\n{s.log()}"


@pytest.fixture
def echo_server(start_server):
    return start_server("scripts/echo.lua")


@pytest.fixture
def relay_server(start_server):
    return start_server("scripts/relay.lua")


@pytest.fixture
def tmp_script(tmp_path):
    """tmp_script(source) -> path of a Lua app written to a temporary file."""
    counter = [0]

    def write(source, name=None):
        counter[0] += 1
        path = tmp_path / (name or f"app{counter[0]}.lua")
        path.write_text(source)
        return str(path)

    return write
