"""conn.request of an app that has neither on_upgrade nor on_open: the table
is built at its first read (from a seed kept per connection, lua_request.h),
and it is the same table an app with on_open gets, field for field, also read
after the connection has closed. conn.data, made at its first read, is one
table for the life of the conn object."""
import asyncio
import json

import websockets

from conftest import free_port  # noqa: F401  (the fixtures come from conftest)


def run(coro, timeout=30):
    return asyncio.run(asyncio.wait_for(coro, timeout=timeout))


DESCRIBE = """
local mw = require "moonwire"
local function describe(req)
  local h = {}
  for k, v in pairs(req.headers) do h[k] = v end
  return mw.json.encode({ method = req.method, path = req.path, query = req.query,
                          headers = h, addr = req.addr, remote_addr = req.remote_addr,
                          peer_addr = req.peer_addr, subprotocols = req.subprotocols,
                          id = req.id })
end
"""

LAZY_APP = DESCRIBE + """
local app, gone = {}, nil

function app.on_message(conn, data)
  if data == "req" then
    assert(conn.request == conn.request, "one table")
    assert(conn.request.id == conn.id)
    conn:send(describe(conn.request))
  elseif data == "data" then
    assert(conn.data == conn.data, "one table")
    conn.data.n = (conn.data.n or 0) + 1
    conn:send(tostring(conn.data.n))
  elseif data == "keep" then
    gone = conn
    conn:send("kept")
  elseif data == "gone" then
    -- The kept conn has closed: its request is still there to read.
    conn:send(describe(gone.request) .. "|" .. tostring(gone:send("x") == nil))
  end
end

return app
"""

EAGER_APP = DESCRIBE + """
local app = {}
function app.on_open(conn, req) assert(conn.request == req) end
function app.on_message(conn, data) conn:send(describe(conn.request)) end
return app
"""

HEADERS = [("X-Probe", "one"), ("X-Probe", "two"), ("X-Other", "a b")]
PATH = "/ws/a%20b?room=lobby&x=a%20b+c&flag"


async def describe(port):
    async with websockets.connect(f"ws://127.0.0.1:{port}{PATH}", extra_headers=HEADERS,
                                  subprotocols=["chat", "superchat"]) as ws:
        await ws.send("req")
        return json.loads(await asyncio.wait_for(ws.recv(), 5))


def without_per_connection(d):
    d = dict(d)
    d["headers"] = {k: v for k, v in d["headers"].items() if k not in ("sec-websocket-key", "host")}
    d.pop("id")
    return d


def test_the_table_built_on_first_read_is_the_one_on_open_gets(start_server, tmp_path):
    lazy_script = tmp_path / "lazy.lua"
    lazy_script.write_text(LAZY_APP)
    eager_script = tmp_path / "eager.lua"
    eager_script.write_text(EAGER_APP)
    lazy = start_server(str(lazy_script))
    eager = start_server(str(eager_script))

    got = run(describe(lazy.port))
    want = run(describe(eager.port))
    assert got["query"] == {"room": "lobby", "x": "a b c", "flag": ""}
    assert got["path"] == "/ws/a%20b" and got["method"] == "GET"
    assert got["headers"]["x-probe"] == "one, two"
    assert got["headers"]["x-other"] == "a b"
    assert got["subprotocols"] == ["chat", "superchat"]
    assert got["addr"] == got["remote_addr"] == got["peer_addr"] == "127.0.0.1"
    assert len(got["headers"]["sec-websocket-key"]) == 24
    assert without_per_connection(got) == without_per_connection(want)


def test_conn_data_is_made_once_and_kept(start_server, tmp_path):
    script = tmp_path / "lazy.lua"
    script.write_text(LAZY_APP)
    srv = start_server(str(script))

    async def go():
        async with websockets.connect(f"ws://127.0.0.1:{srv.port}/") as ws:
            got = []
            for _ in range(3):
                await ws.send("data")
                got.append(await asyncio.wait_for(ws.recv(), 5))
            return got

    assert run(go()) == ["1", "2", "3"]


def test_the_request_of_a_closed_conn_is_built_from_its_seed(start_server, tmp_path):
    script = tmp_path / "lazy.lua"
    script.write_text(LAZY_APP)
    srv = start_server(str(script))

    async def go():
        async with websockets.connect(f"ws://127.0.0.1:{srv.port}{PATH}",
                                      extra_headers=HEADERS) as first:
            await first.send("keep")
            assert await asyncio.wait_for(first.recv(), 5) == "kept"
        async with websockets.connect(f"ws://127.0.0.1:{srv.port}/") as second:
            await asyncio.sleep(0.2)  # the first one's close has been handled
            await second.send("gone")
            text = await asyncio.wait_for(second.recv(), 5)
        return text

    text = run(go())
    described, send_failed = text.rsplit("|", 1)
    got = json.loads(described)
    assert send_failed == "true"
    assert got["headers"]["x-probe"] == "one, two"
    assert got["query"]["room"] == "lobby"
    assert got["path"] == "/ws/a%20b"


def test_behind_a_trusted_proxy_the_seed_keeps_both_addresses(start_server, tmp_path):
    script = tmp_path / "lazy.lua"
    script.write_text(LAZY_APP)
    srv = start_server(str(script),
                       config='return { http = { trusted_proxies = { "127.0.0.1" } } }')

    async def go():
        async with websockets.connect(f"ws://127.0.0.1:{srv.port}/",
                                      extra_headers=[("X-Forwarded-For", "203.0.113.7")]) as ws:
            await ws.send("req")
            return json.loads(await asyncio.wait_for(ws.recv(), 5))

    got = run(go())
    assert got["addr"] == got["remote_addr"] == "203.0.113.7"
    assert got["peer_addr"] == "127.0.0.1"


COMMON = [("Pragma", "no-cache"), ("Cache-Control", "no-cache"), ("Pragma", "no-cache"),
          ("Sec-Fetch-Mode", "websocket"), ("Sec-Fetch-Site", "same-originx"),
          ("Accept-Language", "en-US,en;q=0.9")]


def test_header_lines_common_to_clients_come_back_exactly_from_a_packed_seed(start_server,
                                                                            tmp_path):
    """A seed keeps the header lines that clients send alike as one byte each
    (lua_request.c); the table built from it is the one on_open gets, a
    near miss and a repeated common line included."""
    lazy_script = tmp_path / "lazy.lua"
    lazy_script.write_text(LAZY_APP)
    eager_script = tmp_path / "eager.lua"
    eager_script.write_text(EAGER_APP)
    lazy = start_server(str(lazy_script))
    eager = start_server(str(eager_script))

    async def describe_common(port):
        async with websockets.connect(f"ws://127.0.0.1:{port}/", extra_headers=COMMON) as ws:
            await ws.send("req")
            return json.loads(await asyncio.wait_for(ws.recv(), 5))

    got = run(describe_common(lazy.port))
    want = run(describe_common(eager.port))
    h = got["headers"]
    assert h["pragma"] == "no-cache, no-cache"
    assert h["cache-control"] == "no-cache"
    assert h["sec-fetch-mode"] == "websocket"
    assert h["sec-fetch-site"] == "same-originx"
    assert h["accept-language"] == "en-US,en;q=0.9"
    assert h["upgrade"] == "websocket" and h["connection"] == "Upgrade"
    assert h["sec-websocket-version"] == "13"
    assert h["sec-websocket-extensions"] == "permessage-deflate; client_max_window_bits"
    assert without_per_connection(got) == without_per_connection(want)
