"""The HTTP side of moonwire: the RFC 6455 opening handshake, every refusal
with its status, the built-in endpoints, subprotocols, on_upgrade, and the
request table the app sees."""
import asyncio
import select
import time

import pytest
import websockets

import httpraw


def run(coro, timeout=30):
    return asyncio.run(asyncio.wait_for(coro, timeout=timeout))


def assert_echo(server, path="/", **kw):
    """The server still upgrades and echoes after whatever came before."""
    async def go():
        async with websockets.connect(server.url + path, open_timeout=5, **kw) as ws:
            await ws.send("still here")
            assert await asyncio.wait_for(ws.recv(), 5) == "still here"
    run(go())


def line_of(source, text):
    """The 1-based line number of the first line of source holding text."""
    for n, line in enumerate(source.split("\n"), 1):
        if text in line:
            return n
    raise AssertionError(f"{text!r} not in the source")


def assert_short_text_refusal(resp, status):
    assert resp.status == status, resp
    assert resp.version == "HTTP/1.1", resp
    assert resp.headers.get("content-type", "").startswith("text/plain"), resp
    assert int(resp.headers["content-length"]) == len(resp.body), resp
    assert 0 < len(resp.body) <= 512, resp
    assert "upgrade" not in resp.headers, resp


# 101 -----------------------------------------------------------------------------


def test_answers_a_valid_upgrade_with_101_and_the_correct_accept_key(echo_server):
    key = httpraw.new_key()
    with httpraw.connect(echo_server.port) as s:
        s.sendall(httpraw.upgrade_bytes("/", key=key))
        buf, end = httpraw.read_head(s)
        resp = httpraw.Response(buf[:end + 4], end)
        assert resp.status_line == "HTTP/1.1 101 Switching Protocols", resp
        assert resp.headers["upgrade"].lower() == "websocket"
        assert "upgrade" in resp.headers["connection"].lower()
        assert resp.headers["sec-websocket-accept"] == httpraw.accept_for(key)
        assert "sec-websocket-protocol" not in resp.headers
        assert buf[end + 4:] == b"", "nothing may follow the 101 before a message"
        ws = httpraw.RawWS(s, resp)
        ws.send_text("raw hello")
        assert ws.recv_frame() == (True, httpraw.OP_TEXT, b"raw hello")


def test_computes_the_rfc_sample_accept_key(echo_server):
    # RFC 6455 section 1.3: this key must give s3pPLMBiTxaQ9kYGzzhZRbK+xOo=.
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    assert httpraw.accept_for(key) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    with httpraw.connect(echo_server.port) as s:
        s.sendall(httpraw.upgrade_bytes("/chat", key=key))
        resp = httpraw.read_response(s, head_only=True)
        assert resp.status == 101, resp
        assert resp.headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_accepts_header_tokens_in_any_case_and_in_lists(echo_server):
    key = httpraw.new_key()
    data = httpraw.upgrade_bytes("/", key=key, upgrade="WebSocket",
                                 connection="keep-alive, Upgrade")
    with httpraw.connect(echo_server.port) as s:
        s.sendall(data)
        resp = httpraw.read_response(s, head_only=True)
        assert resp.status == 101, resp
        assert resp.headers["sec-websocket-accept"] == httpraw.accept_for(key)


# Refusals --------------------------------------------------------------------------

REFUSALS = [
    ("a_post", dict(method="POST"), 405),
    ("an_http_1_0_request", dict(proto="HTTP/1.0"), 400),
    ("a_request_without_upgrade", dict(upgrade=None), 400),
    ("a_request_with_a_non_websocket_upgrade", dict(upgrade="h2c"), 400),
    ("a_request_without_connection", dict(connection=None), 400),
    ("a_request_with_connection_keep_alive_only", dict(connection="keep-alive"), 400),
    ("a_request_without_a_key", dict(omit=("Sec-WebSocket-Key",)), 400),
    ("a_request_with_a_short_key", dict(key="c2hvcnQ="), 400),
    ("a_request_with_a_key_that_is_not_base64", dict(key="!!!!!!!!!!!!!!!!!!!!!!=="), 400),
    ("a_request_with_version_8", dict(version="8"), 426),
    ("a_request_with_version_14", dict(version="14"), 426),
]


@pytest.mark.parametrize("what,kw,status", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refuses_a_bad_upgrade_with_its_status_and_a_short_text_body(echo_server, what, kw,
                                                                      status):
    resp = httpraw.request(echo_server.port, httpraw.upgrade_bytes("/", **kw))
    assert_short_text_refusal(resp, status)
    assert "sec-websocket-accept" not in resp.headers
    assert_echo(echo_server)


def test_closes_the_connection_after_a_refusal(echo_server):
    with httpraw.connect(echo_server.port) as s:
        s.sendall(httpraw.upgrade_bytes("/", version="8"))
        waited, got = httpraw.wait_eof(s, timeout=3)
    assert got.startswith(b"HTTP/1.1 426 "), got
    assert waited < 1, f"the connection stayed open {waited:.2f}s after the reply"
    assert_echo(echo_server)


def test_refuses_a_request_without_upgrade_with_400(echo_server):
    resp = httpraw.get(echo_server.port, "/", headers={"Connection": "close"})
    assert_short_text_refusal(resp, 400)
    assert_echo(echo_server)


def test_refuses_a_post_with_405_and_an_allow_header(echo_server):
    resp = httpraw.request(echo_server.port, httpraw.upgrade_bytes("/", method="POST"))
    assert_short_text_refusal(resp, 405)
    assert "GET" in resp.headers.get("allow", ""), resp


def test_refuses_another_version_with_426_and_sec_websocket_version_13(echo_server):
    resp = httpraw.request(echo_server.port, httpraw.upgrade_bytes("/", version="8"))
    assert_short_text_refusal(resp, 426)
    assert resp.reason == "Upgrade Required", resp
    assert resp.headers.get("sec-websocket-version") == "13", resp
    assert_echo(echo_server)


def test_refuses_a_malformed_request_line_with_400(echo_server):
    resp = httpraw.request(echo_server.port, b"HELLO THERE\r\n\r\n")
    assert_short_text_refusal(resp, 400)
    assert_echo(echo_server)


# Origin ---------------------------------------------------------------------------

ORIGIN_CONFIG = """
return { websocket = { allowed_origins = { "https://chat.example", "http://localhost:3000" } } }
"""


def test_refuses_an_origin_outside_allowed_origins_with_403(start_server):
    srv = start_server("scripts/echo.lua", config=ORIGIN_CONFIG)
    resp = httpraw.request(srv.port, httpraw.upgrade_bytes(
        "/", extra={"Origin": "https://evil.example"}))
    assert_short_text_refusal(resp, 403)

    async def go():
        with pytest.raises(websockets.exceptions.InvalidStatusCode) as e:
            await websockets.connect(srv.url, origin="https://evil.example", open_timeout=5)
        assert e.value.status_code == 403
    run(go())
    assert_echo(srv)


def test_accepts_an_allowed_origin(start_server):
    srv = start_server("scripts/echo.lua", config=ORIGIN_CONFIG)
    assert_echo(srv, origin="https://chat.example")
    assert_echo(srv, origin="http://localhost:3000")


def test_accepts_a_request_without_origin_when_origins_are_restricted(start_server):
    srv = start_server("scripts/echo.lua", config=ORIGIN_CONFIG)
    resp_ok = None
    with httpraw.connect(srv.port) as s:
        s.sendall(httpraw.upgrade_bytes("/"))
        resp_ok = httpraw.read_response(s, head_only=True)
    assert resp_ok.status == 101, resp_ok
    assert_echo(srv)  # websockets sends no Origin unless asked


# Paths ------------------------------------------------------------------------------

PATHS_CONFIG = 'return { websocket = { paths = { "/chat" } } }'


def test_refuses_a_path_outside_websocket_paths_with_404(start_server):
    srv = start_server("scripts/echo.lua", config=PATHS_CONFIG)
    for path in ("/", "/other", "/chat/x", "/chatroom"):
        resp = httpraw.request(srv.port, httpraw.upgrade_bytes(path))
        assert_short_text_refusal(resp, 404)
    assert_echo(srv, "/chat")
    assert_echo(srv, "/chat?room=1")


# Head size and time ---------------------------------------------------------------------


def test_refuses_a_huge_header_with_431(echo_server):
    data = httpraw.upgrade_bytes("/", extra={"X-Big": "a" * 20000})
    resp = httpraw.request(echo_server.port, data)
    assert_short_text_refusal(resp, 431)
    assert_echo(echo_server)


def test_refuses_a_head_over_limits_max_head_size_with_431(start_server):
    srv = start_server("scripts/echo.lua", config="return { limits = { max_head_size = 1024 } }")
    ok = httpraw.upgrade_bytes("/", extra={"X-Pad": "p" * 600})
    with httpraw.connect(srv.port) as s:
        s.sendall(ok)
        assert httpraw.read_response(s, head_only=True).status == 101
    resp = httpraw.request(srv.port, httpraw.upgrade_bytes("/", extra={"X-Pad": "p" * 1500}))
    assert_short_text_refusal(resp, 431)
    assert_echo(srv)


def test_refuses_too_many_header_lines_with_431(echo_server):
    extra = {f"X-H{i}": "v" for i in range(200)}
    resp = httpraw.request(echo_server.port, httpraw.upgrade_bytes("/", extra=extra))
    assert_short_text_refusal(resp, 431)
    assert_echo(echo_server)


def test_answers_a_slowloris_client_with_408_after_handshake_timeout(start_server):
    srv = start_server("scripts/echo.lua", config="return { limits = { handshake_timeout = 0.5 } }")
    data = httpraw.upgrade_bytes("/", extra={"X-Slow": "s" * 200})
    got = b""
    with httpraw.connect(srv.port) as s:
        start = time.monotonic()
        sent = 0
        # One byte every 50 ms: the head can not be complete within 0.5 s.
        while time.monotonic() - start < 5 and sent < len(data) - 4:
            try:
                s.sendall(data[sent:sent + 1])
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
            readable, _, _ = select.select([s], [], [], 0.05)
            if readable:
                break
        elapsed = time.monotonic() - start
        _, got = httpraw.wait_eof(s, timeout=3)
    assert b"\r\n\r\n" in got, f"no reply after {elapsed:.2f}s; got {got!r}"
    resp = httpraw.Response(got, got.index(b"\r\n\r\n"))
    assert_short_text_refusal(resp, 408)
    assert 0.4 <= elapsed <= 2.5, f"408 after {elapsed:.2f}s, handshake_timeout is 0.5s"
    assert sent < len(data) - 4, "the whole head went out before the timeout"
    assert_echo(srv)


def test_closes_a_silent_connection_after_handshake_timeout(start_server):
    srv = start_server("scripts/echo.lua", config="return { limits = { handshake_timeout = 0.5 } }")
    with httpraw.connect(srv.port) as s:
        waited, got = httpraw.wait_eof(s, timeout=3)
    assert 0.4 <= waited <= 2.5, waited
    if got:  # a 408 reply is welcome, nothing else is
        assert got.startswith(b"HTTP/1.1 408 "), got
    assert_echo(srv)


# Built-in endpoints ----------------------------------------------------------------------


def test_answers_healthz_with_200_ok(echo_server):
    resp = httpraw.get(echo_server.port, "/healthz")
    assert resp.status == 200, resp
    assert resp.text.strip() == "ok", resp
    assert resp.headers["content-type"].startswith("text/plain")
    assert int(resp.headers["content-length"]) == len(resp.body)


def test_answers_head_healthz_without_a_body(echo_server):
    with httpraw.connect(echo_server.port) as s:
        s.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        _, got = httpraw.wait_eof(s, timeout=3)
    assert got.startswith(b"HTTP/1.1 200 "), got
    assert got.endswith(b"\r\n\r\n"), got
    # The Content-Length a GET would get (RFC 9110 section 8.6), and no body.
    assert b"\r\nContent-Length: 3\r\n" in got, got


def test_answers_metrics_in_prometheus_text(echo_server):
    assert_echo(echo_server)
    resp = httpraw.get(echo_server.port, "/metrics")
    assert resp.status == 200, resp
    assert resp.headers["content-type"].startswith("text/plain"), resp
    assert int(resp.headers["content-length"]) == len(resp.body)
    text = resp.text
    assert "# TYPE moonwire_connections gauge" in text, text
    assert "# TYPE moonwire_connections_total counter" in text, text
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            float(value)  # every sample is a number
            assert name.startswith("moonwire_"), line
    ok = [line for line in text.splitlines()
          if line.startswith('moonwire_handshakes_total{result="ok"}')]
    assert ok and int(ok[0].split()[-1]) >= 1, text


def test_refuses_a_post_to_healthz_with_405(echo_server):
    resp = httpraw.get(echo_server.port, "/healthz", method="POST",
                       headers={"Content-Length": "0"})
    assert_short_text_refusal(resp, 405)
    assert_echo(echo_server)


# Subprotocols ---------------------------------------------------------------------------

SUBPROTO_CONFIG = 'return { websocket = { subprotocols = { "chat.v2", "chat.v1" } } }'


def test_picks_a_configured_subprotocol_the_client_offers(start_server):
    srv = start_server("scripts/echo.lua", config=SUBPROTO_CONFIG)

    async def go():
        async with websockets.connect(srv.url, subprotocols=["foo", "chat.v1"]) as ws:
            assert ws.subprotocol == "chat.v1"
            await ws.send("x")
            assert await ws.recv() == "x"
    run(go())


def test_prefers_the_configured_order_of_subprotocols(start_server):
    srv = start_server("scripts/echo.lua", config=SUBPROTO_CONFIG)

    async def go():
        async with websockets.connect(srv.url, subprotocols=["chat.v1", "chat.v2"]) as ws:
            assert ws.subprotocol == "chat.v2"
    run(go())


def test_picks_no_subprotocol_when_none_matches(start_server):
    srv = start_server("scripts/echo.lua", config=SUBPROTO_CONFIG)
    with httpraw.connect(srv.port) as s:
        s.sendall(httpraw.upgrade_bytes("/", extra={"Sec-WebSocket-Protocol": "foo, bar"}))
        resp = httpraw.read_response(s, head_only=True)
    assert resp.status == 101, resp
    assert "sec-websocket-protocol" not in resp.headers, resp

    async def go():
        async with websockets.connect(srv.url, subprotocols=["foo"]) as ws:
            assert ws.subprotocol is None
    run(go())


PICKING_APP = """
local app = {}
function app.on_upgrade(req)
  for _, p in ipairs(req.subprotocols) do
    if p == "app.pick" then return true, "app.pick" end
  end
end
function app.on_open(conn, req)
  conn:send("protocol=" .. tostring(conn.protocol))
end
function app.on_message(conn, data) conn:send(data) end
return app
"""


def test_on_upgrade_picks_the_subprotocol(start_server, tmp_script):
    srv = start_server(tmp_script(PICKING_APP), config=SUBPROTO_CONFIG)

    async def go():
        async with websockets.connect(srv.url, subprotocols=["chat.v1", "app.pick"]) as ws:
            assert ws.subprotocol == "app.pick"
            assert await asyncio.wait_for(ws.recv(), 5) == "protocol=app.pick"
        # Without the app's pick, the configuration decides.
        async with websockets.connect(srv.url, subprotocols=["chat.v1"]) as ws:
            assert ws.subprotocol == "chat.v1"
            assert await asyncio.wait_for(ws.recv(), 5) == "protocol=chat.v1"
    run(go())


ECHO_PICK_APP = """
local app = {}
function app.on_upgrade(req) return true, req.subprotocols[1] end
function app.on_message(conn, data) conn:send(data) end
return app
"""


def test_on_upgrade_may_pick_a_subprotocol_of_127_bytes(start_server, tmp_script):
    srv = start_server(tmp_script(ECHO_PICK_APP))
    name = "p" * 127

    async def go():
        async with websockets.connect(srv.url, subprotocols=[name]) as ws:
            assert ws.subprotocol == name
    run(go())


def test_a_subprotocol_longer_than_127_bytes_is_refused_not_cut(start_server, tmp_script):
    srv = start_server(tmp_script(ECHO_PICK_APP))
    name = "p" * 200

    async def go():
        with pytest.raises(websockets.exceptions.InvalidStatusCode) as refused:
            async with websockets.connect(srv.url, subprotocols=[name]):
                pass
        assert refused.value.status_code == 500
    run(go())
    srv.wait_log("app: on_upgrade chose a subprotocol longer than 127 bytes")

    async def still_served():
        async with websockets.connect(srv.url, subprotocols=["short"]) as ws:
            assert ws.subprotocol == "short"
            await ws.send("after")
            assert await asyncio.wait_for(ws.recv(), 5) == "after"
    run(still_served())


# on_upgrade ---------------------------------------------------------------------------------

GATE_APP = """
local app = {}
function app.on_upgrade(req)
  if req.query.token ~= "letmein" then
    return false, 401, "token required"
  end
  if req.query.boom then
    error("on_upgrade exploded")
  end
end
function app.on_message(conn, data) conn:send(data) end
return app
"""


def test_on_upgrade_refuses_with_its_status_and_body(start_server, tmp_script):
    srv = start_server(tmp_script(GATE_APP))
    resp = httpraw.request(srv.port, httpraw.upgrade_bytes("/?token=wrong"))
    assert_short_text_refusal(resp, 401)
    assert "token required" in resp.text, resp

    async def go():
        with pytest.raises(websockets.exceptions.InvalidStatusCode) as e:
            await websockets.connect(srv.url + "/", open_timeout=5)
        assert e.value.status_code == 401
    run(go())
    assert_echo(srv, "/?token=letmein")


def test_on_upgrade_that_raises_gives_500_and_the_server_keeps_serving(start_server, tmp_script):
    path = tmp_script(GATE_APP, name="gate_app.lua")
    srv = start_server(path)
    resp = httpraw.request(srv.port, httpraw.upgrade_bytes("/?token=letmein&boom=1"))
    assert_short_text_refusal(resp, 500)
    log = srv.wait_log("on_upgrade exploded")
    line = line_of(GATE_APP, 'error("on_upgrade exploded")')
    assert f"gate_app.lua:{line}: on_upgrade exploded" in log, log
    for _ in range(3):
        assert_echo(srv, "/?token=letmein")


# The request table ------------------------------------------------------------------------------

REQ_APP = r"""
local app = {}

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  return keys
end

local function describe(req)
  local out = {}
  out[#out + 1] = "method=" .. tostring(req.method)
  out[#out + 1] = "path=" .. tostring(req.path)
  for _, k in ipairs(sorted_keys(req.query)) do
    out[#out + 1] = "query." .. k .. "=" .. req.query[k]
  end
  local lower = true
  for k in pairs(req.headers) do
    if k ~= k:lower() then lower = false end
  end
  out[#out + 1] = "headers_lowercase=" .. tostring(lower)
  out[#out + 1] = "header.x-custom-thing=" .. tostring(req.headers["x-custom-thing"])
  out[#out + 1] = "header.host=" .. tostring(req.headers["host"])
  out[#out + 1] = "remote_addr=" .. tostring(req.remote_addr)
  out[#out + 1] = "subprotocols=" .. table.concat(req.subprotocols, ",")
  return table.concat(out, "\n")
end

local seen_upgrade = {}

function app.on_upgrade(req)
  seen_upgrade[#seen_upgrade + 1] = describe(req)
end

function app.on_open(conn, req)
  conn:send("upgrade:\n" .. table.remove(seen_upgrade, 1))
  conn:send("open:\n" .. describe(req))
  conn:send("same=" .. tostring(conn.request == req))
end

return app
"""


def test_on_upgrade_and_on_open_see_the_request_fields(start_server, tmp_script):
    srv = start_server(tmp_script(REQ_APP))
    url = srv.url + "/room/42?name=J%C3%BCrgen&greeting=hello+world&flag&pct=100%25"

    async def go():
        async with websockets.connect(url, subprotocols=["p.one", "p.two"],
                                      extra_headers={"X-Custom-Thing": "Some Value"}) as ws:
            return [await asyncio.wait_for(ws.recv(), 5) for _ in range(3)]
    up, op, same = run(go())
    expected = "\n".join([
        "method=GET",
        "path=/room/42",
        "query.flag=",
        "query.greeting=hello world",
        "query.name=Jürgen",
        "query.pct=100%",
        "headers_lowercase=true",
        "header.x-custom-thing=Some Value",
        f"header.host=127.0.0.1:{srv.port}",
        "remote_addr=127.0.0.1",
        "subprotocols=p.one,p.two",
    ])
    assert up == "upgrade:\n" + expected
    assert op == "open:\n" + expected
    assert same == "same=true"


def test_refuses_connections_over_the_per_address_limit_with_503(start_server):
    server = start_server("scripts/echo.lua", config="""
        return { limits = { max_connections_per_ip = 2 } }
    """)
    import asyncio
    import websockets

    async def go():
        a = await websockets.connect(server.url)
        b = await websockets.connect(server.url)
        with pytest.raises(websockets.exceptions.InvalidStatusCode) as refused:
            await websockets.connect(server.url)
        assert refused.value.status_code == 503
        await a.close()
        # One left: there is room again.
        c = await websockets.connect(server.url)
        await c.send("still serving")
        assert await c.recv() == "still serving"
        await b.close()
        await c.close()
    asyncio.run(asyncio.wait_for(go(), 20))


def test_logs_one_line_when_a_connection_opens_and_one_when_it_closes(start_server):
    server = start_server("scripts/echo.lua")
    import asyncio
    import websockets

    async def go():
        ws = await websockets.connect(server.url + "/room?x=1")
        await ws.send("hello")
        await ws.recv()
        await ws.close(4001)
    asyncio.run(asyncio.wait_for(go(), 10))
    log = server.wait_log("conn.close")
    opened = [l for l in log.splitlines() if "conn.open" in l]
    closed = [l for l in log.splitlines() if "conn.close" in l]
    assert len(opened) == 1 and "path=/room" in opened[0] and "addr=127.0.0.1" in opened[0]
    assert len(closed) == 1
    for field in ("msgs_in=1", "msgs_out=1", "code=4001", "duration_ms="):
        assert field in closed[0], closed[0]
