"""docs/backend.md's session-cookie example, as the page shows it, against the
real binary and a real HTTP backend: on_upgrade asks the backend whose the
cookie is (moonwire.http.request; the handshake waits), a visitor who is not
logged in gets 401 before any socket opens, and a backend that does not answer
in time gives 503."""
import asyncio
import http.server
import json
import pathlib
import re
import threading
import time

import pytest
import websockets

ROOT = pathlib.Path(__file__).resolve().parents[2]


def cookie_example():
    text = (ROOT / "docs" / "backend.md").read_text()
    start = text.index("local BACKEND = mw.config.app")
    block = text[text.rindex("```lua\n", 0, start) + len("```lua\n"):text.index("```", start)]
    assert "function app.on_upgrade(req)" in block, "the example asks in on_upgrade"
    # A way to see who the socket is: echo with the user's name.
    return block.replace("return app", 'function app.on_message(conn, data)\n'
                         '  conn:send(conn.data.user .. ": " .. data)\nend\nreturn app')


@pytest.fixture
def whoami():
    state = {"slow": threading.Event()}

    class Backend(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if state["slow"].is_set():
                time.sleep(1.5)  # past the example's timeout of 0.5 s
            ok = self.path == "/api/whoami" and "sid=good" in (self.headers.get("Cookie") or "")
            body = json.dumps({"user": "ann"}).encode() if ok else b"{}"
            self.send_response(200 if ok else 401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{srv.server_address[1]}"
    yield state
    srv.shutdown()
    srv.server_close()


def test_the_session_cookie_example_refuses_before_the_socket_opens(start_server, tmp_script,
                                                                   whoami):
    server = start_server(tmp_script(cookie_example()),
                          config=f'return {{ app = {{ backend = "{whoami["url"]}" }} }}')

    async def go():
        async with websockets.connect(server.url, extra_headers={"Cookie": "sid=good"}) as ws:
            await ws.send("hi")
            assert await asyncio.wait_for(ws.recv(), 5) == "ann: hi"
        with pytest.raises(websockets.exceptions.InvalidStatusCode) as refused:
            await websockets.connect(server.url, extra_headers={"Cookie": "sid=bad"})
        assert refused.value.status_code == 401
        whoami["slow"].set()
        with pytest.raises(websockets.exceptions.InvalidStatusCode) as refused:
            await websockets.connect(server.url, extra_headers={"Cookie": "sid=good"})
        assert refused.value.status_code == 503
    asyncio.run(go())
    assert re.search(r"warn  app: whoami: timeout", server.log()), server.log()
