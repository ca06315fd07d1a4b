"""Identity at the door: http.trusted_proxies (X-Forwarded-For and X-Real-IP
count only from a trusted peer: req.remote_addr, the per-address limit, the
log line) and a JWT checked in on_upgrade with moonwire.jwt. Tokens are made
here with Python's hmac, not by moonwire."""
import asyncio
import base64
import hashlib
import hmac
import json
import time

import pytest
import websockets

KEY = "e2e-secret"

APP = """local mw = require "moonwire"
local app = {}

function app.on_upgrade(req)
  local claims, err = mw.jwt.verify(req.query.token or "", { key = "KEY", algs = { "HS256" },
                                                           aud = "chat", leeway = 5 })
  if not claims then
    return false, 401, "token: " .. err
  end
  req.user = claims.sub
end

function app.on_open(conn, req)
  conn:send(string.format("user=%s addr=%s peer=%s", req.user, req.remote_addr, req.peer_addr))
end

return app
""".replace("KEY", KEY)


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(claims, key=KEY, alg="HS256"):
    head = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims).encode())
    digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}[alg]
    sig = hmac.new(key.encode(), f"{head}.{body}".encode(), digest).digest()
    return f"{head}.{body}.{b64url(sig)}"


def good_token(sub="ann"):
    return token({"sub": sub, "aud": "chat", "exp": int(time.time()) + 600})


def run(coro, timeout=30):
    return asyncio.run(asyncio.wait_for(coro, timeout=timeout))


async def hello(url, headers=None):
    async with websockets.connect(url, extra_headers=headers or {}) as ws:
        return await asyncio.wait_for(ws.recv(), 5)


async def refused(url, headers=None):
    with pytest.raises(websockets.exceptions.InvalidStatusCode) as e:
        async with websockets.connect(url, extra_headers=headers or {}):
            pass
    return e.value.status_code


def config(trusted, per_ip=0):
    entries = ", ".join(f'"{t}"' for t in trusted)
    return ("return { http = { trusted_proxies = { %s } }, "
            "limits = { max_connections_per_ip = %d } }" % (entries, per_ip))


def test_a_trusted_proxy_names_the_client_in_req_and_in_the_log(start_server, tmp_script):
    server = start_server(tmp_script(APP), config=config(["127.0.0.1"]))
    url = f"{server.url}/?token={good_token()}"
    got = run(hello(url, {"X-Forwarded-For": "6.6.6.6, 198.51.100.7"}))
    assert got == "user=ann addr=198.51.100.7 peer=127.0.0.1"
    got = run(hello(url, {"X-Real-IP": "2001:db8::42"}))
    assert got == "user=ann addr=2001:db8::42 peer=127.0.0.1"
    got = run(hello(url))
    assert got == "user=ann addr=127.0.0.1 peer=127.0.0.1"
    log = server.wait_log("addr=198.51.100.7")
    assert any("conn.open" in l and "addr=198.51.100.7" in l for l in log.splitlines())


def test_an_untrusted_peer_cannot_choose_its_address(start_server, tmp_script):
    server = start_server(tmp_script(APP), config=config(["10.0.0.0/8"]))
    url = f"{server.url}/?token={good_token()}"
    got = run(hello(url, {"X-Forwarded-For": "198.51.100.7", "X-Real-IP": "198.51.100.8"}))
    assert got == "user=ann addr=127.0.0.1 peer=127.0.0.1"


def test_the_per_address_limit_counts_forwarded_clients_only_behind_a_trusted_proxy(
        start_server, tmp_script):
    trusted = start_server(tmp_script(APP), config=config(["127.0.0.0/8"], per_ip=1))
    untrusted = start_server(tmp_script(APP), config=config(["10.0.0.0/8"], per_ip=1))

    async def go(server):
        url = f"{server.url}/?token={good_token()}"
        a = await websockets.connect(url, extra_headers={"X-Forwarded-For": "198.51.100.1"})
        await a.recv()
        # Another client behind the same proxy is let in only if its address counts.
        try:
            b = await websockets.connect(url, extra_headers={"X-Forwarded-For": "198.51.100.2"})
            await b.recv()
            second = "open"
            await b.close()
        except websockets.exceptions.InvalidStatusCode as e:
            second = e.status_code
        # The first client again, from another connection: over its limit of 1.
        third = await refused(url, {"X-Forwarded-For": "198.51.100.1"})
        await a.close()
        return second, third

    # Trusted: two clients, one each; the same client twice is refused.
    assert run(go(trusted)) == ("open", 503)
    # Untrusted: every connection is 127.0.0.1, so the second is already refused.
    assert run(go(untrusted)) == (503, 503)


def test_a_token_is_checked_in_on_upgrade(start_server, tmp_script):
    server = start_server(tmp_script(APP), config=config([]))
    base = f"{server.url}/?token="
    assert run(hello(base + good_token("bob"))) == "user=bob addr=127.0.0.1 peer=127.0.0.1"
    expired = token({"sub": "bob", "aud": "chat", "exp": int(time.time()) - 60})
    wrong_aud = token({"sub": "bob", "aud": "admin", "exp": int(time.time()) + 60})
    wrong_key = token({"sub": "bob", "aud": "chat"}, key="guess")
    other_alg = token({"sub": "bob", "aud": "chat"}, alg="HS512")
    head, body, _ = good_token("bob").split(".")
    forged = head + "." + b64url(json.dumps({"sub": "admin", "aud": "chat"}).encode()) + "." + _
    none = (b64url(b'{"alg":"none","typ":"JWT"}') + "." +
            b64url(b'{"sub":"admin","aud":"chat"}') + ".")
    for bad in (expired, wrong_aud, wrong_key, other_alg, forged, none, "garbage", "x" * 20000):
        assert run(refused(base + bad)) in (401, 431), bad[:60]
    # The reasons, as the app gave them (the refusal's body).
    import http.client

    def reason(tok):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("GET", f"/?token={tok}", headers={
            "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
        res = conn.getresponse()
        out = res.status, res.read().decode().strip().replace("401 Unauthorized: ", "")
        conn.close()
        return out

    assert reason(expired) == (401, "token: expired")
    assert reason(wrong_aud) == (401, "token: wrong audience")
    assert reason(wrong_key) == (401, "token: bad signature")
    assert reason(forged) == (401, "token: bad signature")
    assert reason(other_alg) == (401, "token: alg not allowed")
    assert reason(none) == (401, "token: malformed")
    # Still serving.
    assert run(hello(base + good_token("cy"))) == "user=cy addr=127.0.0.1 peer=127.0.0.1"


ADDR_APP = """local app = {}
function app.on_upgrade(req)
  req.seen = "upgrade=" .. tostring(req.addr)
end
function app.on_open(conn, req)
  conn:send(string.format("%s open=%s remote_addr=%s", req.seen, tostring(req.addr),
                          tostring(req.remote_addr)))
end
function app.on_request(req)
  return 200, "request=" .. tostring(req.addr) .. " peer=" .. req.peer_addr
end
return app
"""


def test_req_addr_names_the_client_in_every_hook_and_remote_addr_stays(start_server, tmp_script):
    import urllib.request
    server = start_server(tmp_script(ADDR_APP), config=config(["127.0.0.1"]))
    got = run(hello(server.url + "/", {"X-Forwarded-For": "198.51.100.7"}))
    assert got == "upgrade=198.51.100.7 open=198.51.100.7 remote_addr=198.51.100.7"
    req = urllib.request.Request(server.http + "/hook", headers={"X-Real-IP": "2001:db8::9"})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.read() == b"request=2001:db8::9 peer=127.0.0.1"
    with urllib.request.urlopen(server.http + "/hook", timeout=5) as r:
        assert r.read() == b"request=127.0.0.1 peer=127.0.0.1"
