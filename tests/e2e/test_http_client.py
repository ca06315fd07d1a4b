"""moonwire.http.request against a real local HTTP server (Python's http.server
on a free port, in a thread of the test): the answer reaches the hook, a slow
server gives "timeout", a huge answer is refused, a server that is down is an
error, http_client.max_concurrent refuses the call past it, and while a call
waits the loop serves everyone else.

Hooks wait on a single node only once every hook is a coroutine (the `hooks`
branch); until then these run with a backplane configured (a real
redis-server), where on_message already waits. The single-node and on_upgrade
cases are written and skipped, with that reason."""
import asyncio
import http.server
import json
import signal
import ssl
import threading
import time

import pytest
import websockets

from conftest import free_port, wait_until
from hostile import metrics
from test_cluster import REDIS, Redis, cluster_up
from test_tls import make_cert

APP = """
local mw = require "moonwire"
local app = {}
local function call(opts)
  local ok, res, err = pcall(mw.http.request, opts)
  if not ok then return {raised = res} end
  if not res then return {err = err} end
  return {status = res.status, body = res.body, headers = res.headers}
end
function app.on_upgrade(req)
  if req.path == "/session" then
    local res, err = mw.http.request{url = req.query.backend .. "/session",
                                     headers = {cookie = req.headers.cookie or ""}}
    if not res then return false, 503, "backend: " .. err end
    if res.status ~= 200 then return false, 403, "no session" end
  end
end
function app.on_message(conn, data)
  local req = mw.json.decode(data)
  if type(req) ~= "table" then
    conn:send(data)   -- anything else is echoed (hostile.assert_served)
    return
  end
  if req.own_coroutine then
    local r = coroutine.wrap(function() return call(req) end)()
    conn:send(mw.json.encode(r))
    return
  end
  local started = mw.now()
  local r = call(req)
  r.tag = req.tag
  r.ms = mw.now() - started
  mw.log.info("call %s ended: %s", tostring(req.tag), tostring(r.err or r.status))
  conn:send(mw.json.encode(r))
end
function app.on_close(conn)
  mw.log.info("on_close of %s", conn.id)
end
return app
"""


class Backend(http.server.BaseHTTPRequestHandler):
    """/echo: what came; /slow?s=N; /huge?n=N[&chunked=1]; /redirect; /headers?n=N;
    /session (a cookie "sid=good" is valid)."""
    protocol_version = "HTTP/1.1"
    peers = []  # (client address) of every request, to see connections reused
    lock = threading.Lock()
    running = 0
    most = 0

    def log_message(self, *a):
        pass

    def reply(self, status, body, headers=()):
        body = body if isinstance(body, bytes) else body.encode()
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def handle_any(self):
        cls = Backend
        with cls.lock:
            cls.peers.append(self.client_address)
            cls.running += 1
            cls.most = max(cls.most, cls.running)
        try:
            self.route()
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            with cls.lock:
                cls.running -= 1

    def route(self):
        path, _, query = self.path.partition("?")
        q = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if path == "/echo":
            self.reply(200, json.dumps({"method": self.command, "body": body.decode(),
                                        "headers": {k.lower(): v for k, v in self.headers.items()}}),
                       [("Content-Type", "application/json"), ("X-Reply", "a"), ("X-Reply", "b")])
        elif path == "/slow":
            time.sleep(float(q.get("s", "1")))
            self.reply(200, "slow")
        elif path == "/huge":
            n = int(q.get("n", "1048576"))
            if q.get("chunked"):
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                chunk = b"x" * 65536
                sent = 0
                while sent < n:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    sent += len(chunk)
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.reply(200, b"x" * n)
        elif path == "/redirect":
            self.reply(302, "moved", [("Location", "/echo")])
        elif path == "/to-file":
            self.reply(302, "moved", [("Location", "file:///etc/passwd")])
        elif path == "/headers":
            self.reply(200, "many", [(f"X-H{i}", "v") for i in range(int(q.get("n", "100")))])
        elif path == "/session":
            good = "sid=good" in (self.headers.get("Cookie") or "")
            self.reply(200 if good else 401, json.dumps({"user": "ann"} if good else {}))
        else:
            self.reply(404, "no such path")

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_any


@pytest.fixture
def backend():
    Backend.peers = []
    Backend.running = Backend.most = 0
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def tls_backend(tmp_path):
    """(url, cert): /echo and the rest over https, with a self-signed certificate."""
    cert, key = make_cert(tmp_path, "backend")
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    srv.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield f"https://127.0.0.1:{srv.server_address[1]}", cert
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def redis():
    if REDIS is None:
        pytest.skip("redis-server is not installed")
    r = Redis()
    yield r
    r.stop()


@pytest.fixture
def node(start_server, tmp_script, redis):
    """node(config_lua_body="") -> a server with a backplane, so that on_message may wait."""
    def start(config=""):
        server = start_server(tmp_script(APP), args=["--redis", redis.url],
                              config=f"return {{ {config} }}")
        wait_until(lambda: cluster_up(server), timeout=10, what="cluster up")
        return server
    return start


def run(coro, timeout=30):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def ask(ws, **req):
    await ws.send(json.dumps(req))
    return json.loads(await asyncio.wait_for(ws.recv(), 20))


def test_a_call_from_on_message_gets_the_answer(node, backend):
    server = node()

    async def go():
        async with websockets.connect(server.url) as ws:
            r = await ask(ws, method="POST", url=backend + "/echo", body="hello",
                          headers={"X-Test": "yes", "Content-Type": "text/plain"})
            assert r["status"] == 200, r
            seen = json.loads(r["body"])
            assert seen["method"] == "POST"
            assert seen["body"] == "hello"
            assert seen["headers"]["x-test"] == "yes"
            assert seen["headers"]["user-agent"].startswith("moonwire/")
            assert r["headers"]["content-type"] == "application/json"
            assert r["headers"]["x-reply"] == "a, b"
            r = await ask(ws, method="DELETE", url=backend + "/echo")
            assert json.loads(r["body"])["method"] == "DELETE"
    run(go())
    m = metrics(server)
    assert m['moonwire_http_client_requests_total{result="ok"}'] == 2
    assert m["moonwire_http_client_inflight"] == 0


def test_connections_to_the_backend_are_reused(node, backend):
    server = node()

    async def go():
        async with websockets.connect(server.url) as ws:
            for _ in range(3):
                assert (await ask(ws, url=backend + "/echo"))["status"] == 200
    run(go())
    assert len(Backend.peers) == 3
    assert len(set(Backend.peers)) == 1, Backend.peers  # one TCP connection for all three
    # The kept connection closes with the client at exit; the loop ends clean.
    assert server.stop() == 0
    assert "drained; exiting" in server.log()
    assert "handles left" not in server.log(), server.log()


def test_a_slow_server_gives_a_timeout_and_the_loop_serves_others_meanwhile(node, backend):
    server = node()

    async def go():
        async with websockets.connect(server.url) as waiting, \
                websockets.connect(server.url) as other:
            started = time.monotonic()
            await waiting.send(json.dumps({"url": backend + "/slow?s=3", "timeout": 1.5}))
            # While that call waits, another client is served at once, many times.
            for i in range(20):
                t0 = time.monotonic()
                await other.send(f"ping {i}")
                assert await asyncio.wait_for(other.recv(), 5) == f"ping {i}"
                assert time.monotonic() - t0 < 0.5
            # The waiting connection's next message is held, in order, behind it.
            await waiting.send("after")
            r = json.loads(await asyncio.wait_for(waiting.recv(), 10))
            elapsed = time.monotonic() - started
            assert r["err"] == "timeout", r
            assert 1.3 < elapsed < 2.9, elapsed
            assert await asyncio.wait_for(waiting.recv(), 5) == "after"
    run(go())
    assert metrics(server)['moonwire_http_client_requests_total{result="timeout"}'] == 1


@pytest.mark.parametrize("chunked", [False, True])
def test_a_huge_response_is_refused(node, backend, chunked):
    server = node("http_client = { max_response = 65536 }")

    async def go():
        async with websockets.connect(server.url) as ws:
            url = backend + "/huge?n=4194304" + ("&chunked=1" if chunked else "")
            r = await ask(ws, url=url)
            assert r["err"] == "response too large", r
            r = await ask(ws, url=backend + "/huge?n=60000")
            assert r["status"] == 200 and len(r["body"]) == 60000
    run(go())
    m = metrics(server)
    assert m['moonwire_http_client_requests_total{result="too_large"}'] == 1


def test_too_many_response_headers_are_refused(node, backend):
    server = node("http_client = { max_headers = 20 }")

    async def go():
        async with websockets.connect(server.url) as ws:
            assert (await ask(ws, url=backend + "/headers?n=50"))["err"] == "too many headers"
            assert (await ask(ws, url=backend + "/headers?n=5"))["status"] == 200
            r = await ask(ws, url=backend + "/echo",
                          headers={f"X-{i}": "v" for i in range(21)})
            assert "http_client.max_headers" in r["raised"], r
    run(go())


def test_tls_is_verified_and_a_ca_file_adds_a_private_ca(node, tls_backend):
    url, cert = tls_backend
    system = node()
    private = node(f"http_client = {{ ca_file = {json.dumps(str(cert))} }}")

    async def go():
        async with websockets.connect(system.url) as ws:
            r = await ask(ws, url=url + "/echo")
            assert "certificate" in r.get("err", ""), r  # self-signed: refused
        async with websockets.connect(private.url) as ws:
            r = await ask(ws, url=url + "/echo")
            assert r["status"] == 200, r
    run(go())


def test_a_server_that_is_down_is_an_error(node):
    server = node()
    dead = f"http://127.0.0.1:{free_port()}/"

    async def go():
        async with websockets.connect(server.url) as ws:
            started = time.monotonic()
            r = await ask(ws, url=dead)
            assert r.get("err") and r["err"] != "timeout", r
            assert "onnect" in r["err"], r  # libcurl's "Failed to connect ..."
            assert time.monotonic() - started < 3
    run(go())
    assert metrics(server)['moonwire_http_client_requests_total{result="failed"}'] == 1


def test_calls_past_max_concurrent_are_refused(node, backend):
    server = node("http_client = { max_concurrent = 3 }")

    async def go():
        clients = [await websockets.connect(server.url) for _ in range(6)]
        for i, ws in enumerate(clients):
            await ws.send(json.dumps({"url": backend + "/slow?s=1.5", "tag": i}))
        replies = [json.loads(await asyncio.wait_for(ws.recv(), 15)) for ws in clients]
        for ws in clients:
            await ws.close()
        return replies
    replies = run(go())
    ok = [r for r in replies if r.get("status") == 200]
    refused = [r for r in replies if r.get("err") == "too many requests"]
    assert len(ok) == 3 and len(refused) == 3, replies
    assert Backend.most <= 3
    m = metrics(server)
    assert m['moonwire_http_client_requests_total{result="refused"}'] == 3
    assert "http_client.max_concurrent" in server.log()


def test_no_redirect_unless_asked_and_only_http_urls(node, backend):
    server = node()

    async def go():
        async with websockets.connect(server.url) as ws:
            r = await ask(ws, url=backend + "/redirect")
            assert r["status"] == 302 and r["headers"]["location"] == "/echo"
            r = await ask(ws, url=backend + "/redirect", redirects=1)
            assert r["status"] == 200 and json.loads(r["body"])["method"] == "GET"
            r = await ask(ws, url=backend + "/to-file", redirects=3)
            assert r.get("err"), r  # a redirect to file:// is not followed
            for url in ("file:///etc/passwd", "ftp://127.0.0.1/", "gopher://x/", "/relative"):
                assert (await ask(ws, url=url))["err"] == "only http and https URLs"
            r = await ask(ws, url=backend + "/echo", headers={"X-Evil": "a\r\nX-Injected: 1"})
            assert "line break" in r["raised"], r
            r = await ask(ws, url=backend + "/echo", timeout=3600)
            assert "max_timeout" in r["raised"], r
            # A coroutine the app made can not wait: a clear answer, not a hang.
            r = await ask(ws, url=backend + "/echo", own_coroutine=True)
            assert r["err"] == "cannot wait here", r
    run(go())


def test_a_connection_that_closes_while_its_call_waits(node, backend):
    server = node()

    async def go():
        ws = await websockets.connect(server.url)
        await ws.send(json.dumps({"url": backend + "/slow?s=1", "tag": "gone"}))
        await asyncio.sleep(0.2)
        await ws.close()
        async with websockets.connect(server.url) as other:
            assert await asyncio.wait_for(other.recv() if False else _echo(other), 5)
    run(go())
    log = server.wait_log("call gone ended: 200", timeout=10)
    # The hook finished first, then its connection's on_close ran.
    assert log.index("call gone ended") < log.rindex("on_close of")
    assert metrics(server)["moonwire_http_client_inflight"] == 0


async def _echo(ws):
    await ws.send("still here")
    return await ws.recv() == "still here"


def test_shutdown_ends_a_waiting_call(node, backend):
    server = node("limits = { shutdown_timeout = 1 }")

    async def go():
        ws = await websockets.connect(server.url)
        await ws.send(json.dumps({"url": backend + "/slow?s=20", "timeout": 30, "tag": "late"}))
        await asyncio.sleep(0.3)
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        await asyncio.get_running_loop().run_in_executor(None, server.proc.wait, 15)
        return time.monotonic() - started
    took = run(go())
    assert took < 8, took
    assert server.proc.returncode == 0, server.log()
    assert "handles left" not in server.log(), server.log()
    assert "call late ended: no HTTP client here" in server.log() or \
        "call late ended: shutting down" in server.log(), server.log()


def test_a_reload_while_a_call_waits_delivers_its_answer(node, backend):
    server = node()

    async def go():
        async with websockets.connect(server.url) as ws:
            await ws.send(json.dumps({"url": backend + "/slow?s=1"}))
            await asyncio.sleep(0.2)
            server.signal(signal.SIGHUP)
            r = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert r["status"] == 200 and r["body"] == "slow"
    run(go())
    server.wait_log("reloaded")


def test_a_call_from_on_message_on_a_single_node(start_server, tmp_script, backend):
    server = start_server(tmp_script(APP))

    async def go():
        async with websockets.connect(server.url) as ws:
            r = await ask(ws, url=backend + "/echo")
            assert r["status"] == 200
    run(go())


def test_on_upgrade_asks_the_backend_about_the_session_cookie(node, backend):
    server = node()

    async def go():
        url = server.url + "/session?backend=" + backend
        async with websockets.connect(url, extra_headers={"Cookie": "sid=good"}) as ws:
            await ws.send("hi")
            assert await ws.recv() == "hi"
        with pytest.raises(websockets.exceptions.InvalidStatusCode) as refused:
            await websockets.connect(url, extra_headers={"Cookie": "sid=bad"})
        assert refused.value.status_code == 403
    run(go())
