"""The server HTTP API on one node, against the real binary: every method,
each error status, the key (missing, wrong, either header), a body over
api.max_body (by Content-Length and chunked), the address allowlist,
on_api's veto and rewrite, the counters, keep-alive, on_request, and
moonwire.queue.push refused clearly without a backplane.

The key comparison is constant-time by construction (SHA-256 digests
compared with CRYPTO_memcmp, core/api.c): reviewed, not timed."""
import asyncio
import base64
import http.client
import json
import signal
import socket
import threading
import time
import urllib.request

import pytest
import websockets

from conftest import wait_until

KEY = "k3y-for-tests"

APP = """
local mw = require "moonwire"
local app = {}
function app.on_open(conn, req)
  if req.query.room then
    conn:subscribe(req.query.room, { presence = req.query.nick })
  end
  if req.query.hist then conn:subscribe(req.query.hist) end
  conn:send("id:" .. conn.id)
end
function app.on_message(conn, data)
  if data == "push" then
    local id, err = mw.queue.push("mw:out", { kind = "say", n = 1 })
    conn:send("push:" .. tostring(id) .. ":" .. tostring(err))
  end
end
function app.on_api(method, params)
  if params.veto then return false, "vetoed: " .. params.veto end
  if params.rewrite then
    return { topic = params.topic, data = params.data .. "!" }
  end
end
function app.on_request(req)
  if req.path == "/hook" then
    return 201, "method=" .. req.method .. " body=" .. req.body, { ["x-from"] = "lua" }
  end
  if req.path == "/boom" then error("boom") end
  if req.path == "/wait" then
    local v, err = mw.redis("PING")
    return 200, "waited:" .. tostring(v) .. ":" .. tostring(err)
  end
end
return app
"""

CONFIG = """return {
  api = { key = "%s", max_body = 4096, max_batch = 5 },
  history = { topics = { "h:*" } },
}""" % KEY


@pytest.fixture
def server(start_server, tmp_script):
    return start_server(tmp_script(APP), config=CONFIG)


def call(server, method, params=None, key=KEY, verb="POST", body=None, headers=None):
    """(status, decoded JSON or text) of one API request."""
    if body is None and params is not None:
        body = json.dumps(params)
    h = dict(headers or {})
    if key is not None:
        h.setdefault("X-API-Key", key)
    req = urllib.request.Request(f"{server.http}/api/{method}",
                                 data=body.encode() if isinstance(body, str) else body,
                                 method=verb, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def metrics(server):
    text = urllib.request.urlopen(server.http + "/metrics", timeout=5).read().decode()
    return {l.rsplit(" ", 1)[0]: float(l.rsplit(" ", 1)[1])
            for l in text.splitlines() if l and not l.startswith("#")}


def run(coro, timeout=30):
    return asyncio.run(asyncio.wait_for(coro, timeout=timeout))


async def client(server, query=""):
    ws = await websockets.connect(server.url + "/" + query, close_timeout=1)
    hello = await asyncio.wait_for(ws.recv(), 5)
    assert hello.startswith("id:")
    ws.conn_id = hello[3:]
    return ws


async def nothing_more(ws, wait=0.3):
    await asyncio.sleep(wait)
    assert not ws.messages, f"unexpected message {ws.messages[0]!r}"


def test_publish_reaches_the_topic_members_only(server):
    async def go():
        a = await client(server, "?room=lobby")
        b = await client(server, "?room=lobby")
        other = await client(server, "?room=elsewhere")
        st, res = call(server, "publish", {"topic": "lobby", "data": "hello"})
        assert (st, res) == (200, {"result": {"delivered": 2}})
        assert await asyncio.wait_for(a.recv(), 5) == "hello"
        assert await asyncio.wait_for(b.recv(), 5) == "hello"
        await nothing_more(other)
        # except: everyone but that connection.
        st, res = call(server, "publish", {"topic": "lobby", "data": "not a", "except": a.conn_id})
        assert (st, res) == (200, {"result": {"delivered": 1}})
        assert await asyncio.wait_for(b.recv(), 5) == "not a"
        await nothing_more(a)
        for ws in (a, b, other):
            await ws.close()
    run(go())


def test_publish_binary_data_from_base64(server):
    async def go():
        a = await client(server, "?room=bin")
        payload = bytes(range(256))
        st, res = call(server, "publish", {"topic": "bin", "binary": True,
                                           "data": base64.b64encode(payload).decode()})
        assert (st, res) == (200, {"result": {"delivered": 1}})
        assert await asyncio.wait_for(a.recv(), 5) == payload
        st, res = call(server, "publish", {"topic": "bin", "binary": True, "data": "not*b64"})
        assert st == 400 and "base64" in res["error"]["message"]
        await nothing_more(a)
        await a.close()
    run(go())


def test_publish_to_a_history_topic_gives_its_offset_and_history_reads_it(server):
    async def go():
        a = await client(server, "?hist=h:1")
        offsets = []
        for i in range(3):
            st, res = call(server, "publish", {"topic": "h:1", "data": json.dumps({"n": i})})
            assert st == 200 and res["result"]["delivered"] == 1
            offsets.append(res["result"]["offset"])
            got = json.loads(await asyncio.wait_for(a.recv(), 5))
            assert got["n"] == i and got["offset"] == offsets[-1]
        assert offsets == sorted(offsets) and len(set(offsets)) == 3
        st, res = call(server, "history", {"topic": "h:1", "since": offsets[0], "limit": 10})
        assert st == 200
        assert [json.loads(m)["n"] for m in res["result"]["messages"]] == [1, 2]
        assert res["result"]["offset"] == offsets[-1]
        st, res = call(server, "history", {"topic": "lobby"})
        assert st == 400 and "no history" in res["error"]["message"]
        st, res = call(server, "history", {"topic": "h:1", "since": "x"})
        assert (st, res["error"]["message"]) == (400, 'field "since" must be a integer')
        await a.close()
    run(go())


def test_broadcast_send_and_disconnect(server):
    async def go():
        a = await client(server)
        b = await client(server, "?room=r")
        st, res = call(server, "broadcast", {"data": "to all", "except": b.conn_id})
        assert (st, res) == (200, {"result": {"delivered": 1}})
        assert await asyncio.wait_for(a.recv(), 5) == "to all"
        await nothing_more(b)

        st, res = call(server, "send", {"id": b.conn_id, "data": "just b"})
        assert (st, res) == (200, {"result": {"sent": True}})
        assert await asyncio.wait_for(b.recv(), 5) == "just b"
        st, res = call(server, "send", {"id": b.conn_id[:-1] + "999", "data": "x"})
        assert (st, res) == (200, {"result": {"sent": False, "reason": "no such connection"}})
        st, res = call(server, "send", {"id": "nonsense", "data": "x"})
        assert st == 400 and res["error"]["message"] == "not a connection id"

        st, res = call(server, "disconnect", {"id": a.conn_id, "code": 4001, "reason": "bye"})
        assert (st, res) == (200, {"result": {"disconnected": True}})
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(a.recv(), 5)
        assert (a.close_code, a.close_reason) == (4001, "bye")
        st, res = call(server, "disconnect", {"id": b.conn_id, "code": 1006})
        assert st == 400 and "code" in res["error"]["message"]
        st, res = call(server, "disconnect", {"id": a.conn_id})
        assert (st, res["result"]["disconnected"]) == (200, False)
        await b.close()
    run(go())


def test_presence_and_info(server):
    async def go():
        a = await client(server, "?room=p&nick=ann")
        b = await client(server, "?room=p&nick=bob")
        st, res = call(server, "presence", {"topic": "p"})
        assert (st, res) == (200, {"result": {"presence": {a.conn_id: "ann", b.conn_id: "bob"}}})
        st, res = call(server, "info", {})
        assert st == 200
        info = res["result"]
        assert info["connections"] == 2 and info["topics"] >= 1
        assert a.conn_id.startswith(info["node"] + ".")
        assert isinstance(info["uptime"], int) and "cluster" not in info  # alone: no cluster
        # An empty body is the same as {}.
        assert call(server, "info", body="")[0] == 200
        await a.close()
        await b.close()
    run(go())


def test_batch_applies_its_commands_in_order_and_answers_each(server):
    async def go():
        a = await client(server, "?room=q")
        cmds = [{"method": "publish", "params": {"topic": "q", "data": str(i)}} for i in range(3)]
        cmds.insert(1, {"method": "nope", "params": {}})
        cmds.append({"method": "publish", "params": {"topic": "q"}})
        st, res = call(server, "batch", {"commands": cmds})
        assert st == 200
        results = res["result"]["results"]
        assert results[0] == {"result": {"delivered": 1}}
        assert results[1] == {"error": {"code": 404, "message": 'no such method "nope"'}}
        assert results[4] == {"error": {"code": 400, "message": 'missing field "data" (string)'}}
        assert [await asyncio.wait_for(a.recv(), 5) for _ in range(3)] == ["0", "1", "2"]
        await nothing_more(a)
        # Bounded by api.max_batch (5), and no batch inside a batch.
        st, res = call(server, "batch", {"commands": cmds + cmds})
        assert st == 400 and "api.max_batch" in res["error"]["message"]
        await nothing_more(a)
        st, res = call(server, "batch", {"commands": [{"method": "batch", "params": {}}]})
        assert res["result"]["results"][0]["error"]["code"] == 400
        await a.close()
    run(go())


def test_empty_lists_are_json_arrays_and_an_empty_presence_an_object(server):
    # history of a topic nobody published to: "messages" is [], not {}.
    st, res = call(server, "history", {"topic": "h:never"})
    assert st == 200 and res["result"]["messages"] == [], res
    # presence of a topic without members: a map, so {}.
    st, res = call(server, "presence", {"topic": "nobody-here"})
    assert (st, res) == (200, {"result": {"presence": {}}})
    # a batch without commands: "results" is [].
    st, res = call(server, "batch", {"commands": []})
    assert (st, res) == (200, {"result": {"results": []}})
    # and inside a batch, the same answers as alone.
    st, res = call(server, "batch", {"commands": [
        {"method": "history", "params": {"topic": "h:never"}},
        {"method": "presence", "params": {"topic": "nobody-here"}},
        {"method": "batch", "params": {}}]})
    assert st == 200
    results = res["result"]["results"]
    assert results[0]["result"]["messages"] == []
    assert results[1] == {"result": {"presence": {}}}
    assert results[2]["error"]["code"] == 400
    # What is not empty is as before.
    st, res = call(server, "publish", {"topic": "h:some", "data": "x"})
    assert st == 200
    st, res = call(server, "history", {"topic": "h:some"})
    assert res["result"]["messages"] == ["x"]


def test_each_refusal_has_its_status_and_a_message(server):
    # 400: bad JSON, not an object, missing field (named), wrong type (named).
    st, res = call(server, "publish", body="{bad")
    assert st == 400 and res["error"]["message"].startswith("bad JSON")
    st, res = call(server, "publish", body="[1,2]")
    assert (st, res["error"]["message"]) == (400, "the params must be a JSON object")
    st, res = call(server, "publish", {"data": "x"})
    assert (st, res["error"]["message"]) == (400, 'missing field "topic" (string)')
    st, res = call(server, "publish", {"topic": 5, "data": "x"})
    assert (st, res["error"]["message"]) == (400, 'field "topic" must be a string')
    st, res = call(server, "publish", body="[" * 1000 + "]" * 1000)
    assert st == 400 and "too deep" in res["error"]["message"]
    # 401: no key, a wrong key, a key one byte off; both headers work.
    assert call(server, "info", {}, key=None)[0] == 401
    assert call(server, "info", {}, key="wrong")[0] == 401
    assert call(server, "info", {}, key=KEY[:-1])[0] == 401
    assert call(server, "info", {}, key=KEY + "x")[0] == 401
    assert call(server, "info", {}, key=None,
                headers={"Authorization": "apikey " + KEY})[0] == 200
    assert call(server, "info", {}, key=None,
                headers={"Authorization": "Bearer " + KEY})[0] == 401
    # 404: no such method (after the key: no method names for strangers).
    st, res = call(server, "nope", {})
    assert (st, res["error"]["code"]) == (404, 404)
    assert call(server, "nope", {}, key="wrong")[0] == 401
    # 405: not POST.
    st, res = call(server, "info", verb="GET")
    assert st == 405
    # 413: over api.max_body, by Content-Length, and chunked.
    st, res = call(server, "publish", {"topic": "t", "data": "x" * 5000})
    assert st == 413 and "api.max_body" in res["error"]["message"]
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.putrequest("POST", "/api/publish")
    conn.putheader("X-API-Key", KEY)
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    try:
        for _ in range(10):
            conn.send(b"400\r\n" + b"x" * 1024 + b"\r\n")
        conn.send(b"0\r\n\r\n")
    except OSError:
        pass  # the server may close as soon as it has answered
    r = conn.getresponse()
    assert r.status == 413
    conn.close()

    m = metrics(server)
    for method, status in [("publish", 400), ("info", 401), ("unknown", 404), ("info", 405),
                           ("publish", 413), ("info", 200)]:
        assert m[f'moonwire_api_requests_total{{method="{method}",status="{status}"}}'] >= 1
    assert m['moonwire_api_requests_total{method="info",status="401"}'] == 5
    assert "api: 401 for /api/info from 127.0.0.1" in server.log()


def test_a_chunked_body_under_the_limit_is_read_whole(server):
    async def go():
        a = await client(server, "?room=c")
        body = json.dumps({"topic": "c", "data": "y" * 3000}).encode()
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.putrequest("POST", "/api/publish")
        conn.putheader("X-API-Key", KEY)
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        for i in range(0, len(body), 1000):
            part = body[i:i + 1000]
            conn.send(b"%x\r\n" % len(part) + part + b"\r\n")
        conn.send(b"0\r\n\r\n")
        r = conn.getresponse()
        assert (r.status, json.loads(r.read())) == (200, {"result": {"delivered": 1}})
        assert await asyncio.wait_for(a.recv(), 5) == "y" * 3000
        conn.close()
        await a.close()
    run(go())


def test_keep_alive_serves_many_requests_on_one_connection(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    for i in range(20):
        conn.request("POST", "/api/publish", body=json.dumps({"topic": "none", "data": str(i)}),
                     headers={"X-API-Key": KEY, "Content-Type": "application/json"})
        r = conn.getresponse()
        assert (r.status, json.loads(r.read())) == (200, {"result": {"delivered": 0}})
    conn.close()
    assert metrics(server)["moonwire_http_keepalive_requests_total"] >= 19


def test_curl_with_expect_100_continue_is_answered(server):
    import shutil
    import subprocess
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    body = json.dumps({"topic": "none", "data": "z" * 2000})  # curl sends Expect over 1 KiB
    out = subprocess.run(["curl", "-sS", "-m", "5", "-w", "\n%{http_code} %{time_total}",
                          "-H", "X-API-Key: " + KEY, "-H", "Content-Type: application/json",
                          "--data-binary", body, server.http + "/api/publish"],
                         capture_output=True, text=True, timeout=10).stdout
    text, tail = out.rsplit("\n", 1)
    code, seconds = tail.split()
    assert (code, json.loads(text)) == ("200", {"result": {"delivered": 0}})
    assert float(seconds) < 0.9  # curl waits 1 s for a 100 Continue that never comes


def test_on_api_may_refuse_or_rewrite(server):
    async def go():
        a = await client(server, "?room=v")
        st, res = call(server, "publish", {"topic": "v", "data": "x", "veto": "no"})
        assert (st, res) == (403, {"error": {"code": 403, "message": "vetoed: no"}})
        await nothing_more(a)
        st, res = call(server, "publish", {"topic": "v", "data": "x", "rewrite": True})
        assert st == 200
        assert await asyncio.wait_for(a.recv(), 5) == "x!"
        await a.close()
    run(go())


def test_the_api_is_off_without_a_key_and_honours_its_allowlist(start_server, tmp_script):
    off = start_server(tmp_script(APP))
    st, _ = call(off, "info", {})
    assert st == 404  # an ordinary path: on_request has nothing for it
    elsewhere = start_server(tmp_script(APP),
                             config='return { api = { key = "x", allow = { "10.0.0.0/8" } } }')
    st, res = call(elsewhere, "info", {}, key="x")
    assert st == 403 and "api.allow" in res["error"]["message"]
    env = start_server(tmp_script(APP), env={"MW_API_KEY": "from-env"})
    assert call(env, "info", {}, key="from-env")[0] == 200
    assert call(env, "info", {}, key="x")[0] == 401


def test_queue_push_without_a_backplane_says_so(server):
    async def go():
        a = await client(server)
        await a.send("push")
        assert await asyncio.wait_for(a.recv(), 5) == \
            "push:nil:no cluster configured (cluster.redis)"
        await a.close()
    run(go())


def test_on_request_answers_paths_nobody_else_takes(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("POST", "/hook", body="payload")
    r = conn.getresponse()
    assert (r.status, r.read(), r.getheader("X-From")) == (201, b"method=POST body=payload", "lua")
    # Nothing returned: 404 as before; a hook that raises: 500.
    conn.request("GET", "/nothing")
    r = conn.getresponse()
    assert r.status == 404
    r.read()
    conn.close()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", "/boom")
    r = conn.getresponse()
    assert r.status == 500
    r.read()
    conn.close()
    # It may wait (mw.redis without a backplane answers at once, nil and why).
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", "/wait")
    r = conn.getresponse()
    assert (r.status, r.read()) == (200, b"waited:nil:no cluster configured (cluster.redis)")
    conn.close()
    # WebSocket upgrades still go to the app's WebSocket paths.
    async def go():
        a = await client(server)
        await a.close()
    run(go())


def test_on_request_takes_paths_without_a_file_when_static_files_are_on(start_server, tmp_script,
                                                                        tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "index.html").write_text("<p>home</p>")
    (root / "page.txt").write_text("a file")
    server = start_server(tmp_script(APP), config="""return {
      api = { key = "%s" }, static = { root = "%s" },
    }""" % (KEY, root))

    def get(method, path, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        try:
            conn.request(method, path, body=body)
            r = conn.getresponse()
            return r.status, r.read(), r.getheader("X-From")
        finally:
            conn.close()
    # A file that exists is still a static file, for every method it takes.
    assert get("GET", "/page.txt")[:2] == (200, b"a file")
    assert get("GET", "/")[:2] == (200, b"<p>home</p>")
    assert get("HEAD", "/page.txt")[:2] == (200, b"")
    # A path without a file goes to on_request, whatever the method.
    assert get("GET", "/hook") == (201, b"method=GET body=", "lua")
    assert get("POST", "/hook", body="payload") == (201, b"method=POST body=payload", "lua")
    # on_request returning nothing, or no file and no hook: 404.
    status, body, _ = get("GET", "/nothing")
    assert status == 404
    # The API and the built-in endpoints come first, as before.
    st, res = call(server, "info", {})
    assert st == 200
    assert get("GET", "/healthz")[:2] == (200, b"ok\n")

    # Without on_request, static files answer for every path as before.
    plain = start_server(tmp_script("return {}"),
                         config='return { static = { root = "%s" } }' % root)
    conn = http.client.HTTPConnection("127.0.0.1", plain.port, timeout=5)
    conn.request("POST", "/hook", body="x")
    r = conn.getresponse()
    assert (r.status, r.getheader("Allow")) == (405, "GET, HEAD")
    r.read()
    conn.close()
    assert urllib.request.urlopen(plain.http + "/page.txt", timeout=5).read() == b"a file"


def test_api_listen_serves_the_api_alone_and_takes_it_off_the_others(start_server, tmp_script):
    from conftest import free_port
    api_port = free_port()
    server = start_server(tmp_script(APP), config="""return {
      api = { key = "%s", listen = { "127.0.0.1:%d" } },
    }""" % (KEY, api_port))
    wait_until(lambda: _port_open(api_port), what="the API listener")

    class Api:
        http = f"http://127.0.0.1:{api_port}"
    st, res = call(Api, "info", {})
    assert st == 200 and res["result"]["connections"] == 0
    # Nothing else there: not WebSocket, not on_request; /healthz still is.
    r = urllib.request.urlopen(Api.http + "/healthz", timeout=5)
    assert r.status == 200
    try:
        urllib.request.urlopen(Api.http + "/hook", timeout=5)
        raise AssertionError("/hook served on the API listener")
    except urllib.error.HTTPError as e:
        assert e.code == 404
    # And the API is off the ordinary listener (on_request has no /api/).
    assert call(server, "info", {})[0] == 404

    async def go():
        ws = await client(server)
        await ws.close()
        try:
            await websockets.connect(f"ws://127.0.0.1:{api_port}/")
            raise AssertionError("a WebSocket upgrade on the API listener")
        except websockets.InvalidStatusCode as e:
            assert e.status_code == 404
    run(go())


def _port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


DRAIN_APP = """
local mw = require "moonwire"
local app = {}
function app.on_api(method, params)
  if params.sleep then mw.sleep(params.sleep) end
end
function app.on_request(req)
  mw.sleep(tonumber(req.query.s))
  return 200, "slept " .. req.query.s
end
return app
"""


def test_a_request_still_running_after_close_timeout_gets_504_and_the_server_goes_on(
        start_server, tmp_script):
    # Not draining: an API call or an on_request hook that takes longer than
    # limits.close_timeout (1 s) is answered 504 (its late answer goes
    # nowhere); a quick one is served as before.
    server = start_server(tmp_script(DRAIN_APP), config="""return {
      api = { key = "%s" }, limits = { close_timeout = 1 },
    }""" % KEY)
    got = {}

    def ask(name, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
        started = time.monotonic()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            got[name] = (r.status, r.read().decode(), time.monotonic() - started)
        except OSError as e:
            got[name] = ("no answer", repr(e), time.monotonic() - started)
        finally:
            conn.close()
    threads = [
        threading.Thread(target=ask, args=("api", "POST", "/api/info", '{"sleep": 30}',
                                           {"X-API-Key": KEY})),
        threading.Thread(target=ask, args=("hook", "GET", "/slow?s=30")),
        threading.Thread(target=ask, args=("quick", "GET", "/slow?s=0.1")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert got["api"][0] == 504, got["api"]
    assert json.loads(got["api"][1]) == {"error": {
        "code": 504, "message": "the API call took longer than limits.close_timeout"}}
    assert got["hook"][0] == 504, got["hook"]
    assert "on_request took longer than limits.close_timeout" in got["hook"][1]
    assert got["api"][2] < 10 and got["hook"][2] < 10, got
    assert got["quick"][:2] == (200, "slept 0.1")
    ask("after", "GET", "/slow?s=0")
    assert got["after"][:2] == (200, "slept 0")
    log = server.log()
    assert "on_request: answered 504: on_request took longer than limits.close_timeout" in log
    assert "api: 504 for /api/info from 127.0.0.1: the API call took longer" in log
    m = urllib.request.urlopen(server.http + "/metrics", timeout=5).read().decode()
    assert 'moonwire_api_requests_total{method="info",status="504"} 1' in m, m
    assert server.stop() == 0


def test_a_drain_waits_for_running_requests_then_answers_503(start_server, tmp_script):
    # close_timeout (1 s) is shorter than the requests: while draining they run
    # on up to shutdown_timeout (4 s); what is still running then gets 503.
    server = start_server(tmp_script(DRAIN_APP), config="""return {
      api = { key = "%s" }, limits = { shutdown_timeout = 4, close_timeout = 1 },
    }""" % KEY)
    got = {}

    def ask(name, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            got[name] = (r.status, r.read().decode(), r.getheader("Retry-After"))
        except OSError as e:
            got[name] = ("no answer", repr(e), None)
        finally:
            conn.close()
    threads = [
        threading.Thread(target=ask, args=("api", "POST", "/api/info", '{"sleep": 1.5}',
                                           {"X-API-Key": KEY})),
        threading.Thread(target=ask, args=("short", "GET", "/slow?s=1.5")),
        threading.Thread(target=ask, args=("long", "GET", "/slow?s=60")),
    ]
    for t in threads:
        t.start()
    time.sleep(0.5)  # the three are running
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    for t in threads:
        t.join(timeout=30)
    assert got["api"][0] == 200 and json.loads(got["api"][1])["result"]["connections"] == 0
    assert got["short"][:2] == (200, "slept 1.5")
    assert got["long"][0] == 503 and "shutting down" in got["long"][1], got["long"]
    assert got["long"][2] == "5"
    assert time.monotonic() - started < 15
    assert server.stop() == 0
    assert "1 API request(s) or on_request hook(s) still running after 4000 ms; answered 503" \
        in server.log()
