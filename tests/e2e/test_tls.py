"""wss:// against the real binary: Python's ssl-wrapped websockets client,
TLS 1.2 and 1.3, ALPN, certificate reload on SIGHUP, and clients that do
not speak TLS (plain HTTP, a stalled handshake, garbage), each closed
cleanly while the server goes on serving."""
import asyncio
import hashlib
import signal
import socket
import ssl
import subprocess
import time
import urllib.request

import pytest
import websockets

from conftest import free_port, wait_until


def make_cert(directory, name, cn="localhost"):
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", f"/CN={cn}",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=30)
    return cert, key


@pytest.fixture
def tls_server(start_server, tmp_path):
    cert, key = make_cert(tmp_path, "server")
    tls_port = free_port()
    server = start_server("scripts/echo.lua",
                          args=["--listen-tls", f"127.0.0.1:{tls_port}", "--cert", str(cert),
                                "--key", str(key)],
                          config="return { limits = { handshake_timeout = 1, close_timeout = 1 } }")
    wait_until(lambda: _port_open(tls_port), what="the TLS listener")
    server.tls_port = tls_port
    server.wss = f"wss://127.0.0.1:{tls_port}"
    server.cert, server.key = cert, key
    return server


def _port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def client_ctx(version=None):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=30))


def metric(server, name):
    text = urllib.request.urlopen(server.http + "/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(name)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_echoes_over_wss_with_tls_1_2_and_1_3(tls_server, version):
    async def go():
        async with websockets.connect(tls_server.wss, ssl=client_ctx(version),
                                      max_size=None) as ws:
            got = ws.transport.get_extra_info("ssl_object").version()
            assert got == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
            for size in (0, 125, 126, 65536, 1 << 20):
                text = "é" * (size // 2)
                await ws.send(text)
                assert await ws.recv() == text
                data = bytes(range(256)) * (size // 256)
                await ws.send(data)
                assert await ws.recv() == data
    run(go())


def test_refuses_tls_1_1(tls_server):
    ctx = client_ctx()
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    with socket.create_connection(("127.0.0.1", tls_server.tls_port), timeout=5) as raw:
        with pytest.raises(ssl.SSLError):
            ctx.wrap_socket(raw, server_hostname="localhost")


def test_selects_http_1_1_by_alpn(tls_server):
    ctx = client_ctx()
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", tls_server.tls_port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            assert s.selected_alpn_protocol() == "http/1.1"
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 200")


def assert_closed_soon(sock, timeout=5):
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if sock.recv(4096) == b"":
                return
        except (ConnectionResetError, BrokenPipeError):
            return
    raise AssertionError("the server did not close the connection")


@pytest.mark.parametrize("what,data", [
    ("plain HTTP", b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n"),
    ("garbage", bytes(range(256)) * 4),
    ("half a ClientHello", bytes.fromhex("16030100c4010000c00303") + b"\x00" * 20),
])
def test_closes_clients_that_do_not_speak_tls_and_keeps_serving(tls_server, what, data):
    before = metric(tls_server, "moonwire_tls_handshake_failures_total")
    with socket.create_connection(("127.0.0.1", tls_server.tls_port), timeout=5) as s:
        s.sendall(data)
        # A stalled handshake is cut by handshake_timeout (1 s here).
        assert_closed_soon(s, timeout=6)
    if what != "half a ClientHello":
        assert metric(tls_server, "moonwire_tls_handshake_failures_total") == before + 1

    async def still_serving():
        async with websockets.connect(tls_server.wss, ssl=client_ctx()) as ws:
            await ws.send("after " + what)
            assert await ws.recv() == "after " + what
    run(still_serving())
    # Only the /metrics request itself is left.
    wait_until(lambda: metric(tls_server, "moonwire_sockets") == 1, what="every socket released")


def peer_cert_digest(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with client_ctx().wrap_socket(raw, server_hostname="localhost") as s:
            return hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest()


def test_reloads_the_certificate_on_sighup_without_dropping_connections(tls_server, tmp_path):
    first = peer_cert_digest(tls_server.tls_port)

    async def go():
        ws = await websockets.connect(tls_server.wss, ssl=client_ctx())
        await ws.send("before")
        assert await ws.recv() == "before"
        # A new certificate: new connections get it, the open one stays.
        new_cert, new_key = make_cert(tmp_path, "renewed", cn="renewed")
        new_cert.replace(tls_server.cert)
        new_key.replace(tls_server.key)
        tls_server.signal(signal.SIGHUP)
        tls_server.wait_log("tls: reloaded")
        assert peer_cert_digest(tls_server.tls_port) != first
        await ws.send("after")
        assert await ws.recv() == "after"
        # A broken one: logged, and the previous certificate stays in use.
        second = peer_cert_digest(tls_server.tls_port)
        tls_server.cert.write_text("not a certificate\n")
        tls_server.signal(signal.SIGHUP)
        tls_server.wait_log("the previous certificate stays in use")
        assert peer_cert_digest(tls_server.tls_port) == second
        await ws.send("still")
        assert await ws.recv() == "still"
        await ws.close()
    run(go())


def test_refuses_to_start_with_a_key_that_does_not_match(start_server, tmp_path):
    import pytest as _pytest
    from conftest import BIN, ROOT
    cert, _ = make_cert(tmp_path, "a")
    _, other_key = make_cert(tmp_path, "b")
    r = subprocess.run([BIN, "--listen", f"127.0.0.1:{free_port()}", "--listen-tls",
                        f"127.0.0.1:{free_port()}", "--cert", str(cert), "--key", str(other_key)],
                       cwd=ROOT, capture_output=True, text=True, timeout=10)
    assert r.returncode == 1
    assert "key" in r.stderr and str(other_key) in r.stderr


def test_needs_a_certificate_for_tls_listeners(tmp_path):
    from conftest import BIN, ROOT
    r = subprocess.run([BIN, "--listen-tls", f"127.0.0.1:{free_port()}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2
    assert "tls.cert" in r.stderr
