"""Helpers of the hostile-input suite (tests/e2e/test_hostile_*.py).

Each hostile case attacks the real binary, then checks the two things every
case owes: a normal client (Python's websockets, not our framing code) is
still served, and the server's memory stayed within a bound.
"""
import asyncio
import time
import urllib.request

import websockets


def rss_kib(pid):
    """Resident memory of a process, in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def metrics(server, timeout=5):
    """The server's /metrics as {"name{labels}": value}."""
    text = urllib.request.urlopen(server.http + "/metrics", timeout=timeout).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def roundtrip(url, message="are you there?", expect=None, timeout=5.0):
    """Connects with websockets, sends message and waits for a reply equal to
    expect (message itself by default: an echo app). Returns the seconds it took;
    fails the test when no such reply comes within timeout."""
    expect = message if expect is None else expect

    async def go():
        started = time.monotonic()
        async with websockets.connect(url, open_timeout=timeout, close_timeout=1,
                                      max_size=None) as ws:
            await ws.send(message)
            while True:
                reply = await ws.recv()
                if reply == expect:
                    return time.monotonic() - started

    try:
        return asyncio.run(asyncio.wait_for(go(), timeout))
    except asyncio.TimeoutError:
        raise AssertionError(f"no reply {expect!r} from {url} within {timeout}s") from None


def assert_served(server, path="/", message="are you there?", expect=None, timeout=5.0):
    """A normal client is still served, and the process is alive."""
    assert server.proc.poll() is None, f"moonwire exited ({server.proc.returncode}):\n{server.log()}"
    return roundtrip(server.url + path, message, expect, timeout)
