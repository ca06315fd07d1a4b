"""examples/php-backend end to end, started by its own run.sh: real
redis-server, moonwire (scripts/chat.lua with app.chat.jwt and
app.chat.archive), Debian's php-cli serving the pages (php -S) and the PHP
archive worker. A user logs in through the PHP form, gets a token PHP
signed, and opens a WebSocket with it (Python's websockets): the nick is the
token's. Tampered, foreign, expired and alg "none" tokens are refused with
the reason. The admin page pushes announcements through the HTTP API
(php-curl) and through the queue's stream (php-redis XADD) to the members of
a room; the room's messages land in SQLite through the worker, which runs in
bounded runs (restarted by run.sh) and stores each entry once. An interrupt
to run.sh (Ctrl-C) stops every process it started."""
import asyncio
import base64
import hashlib
import hmac
import http.client
import http.cookiejar
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import websockets

from conftest import BIN, ROOT, SANITIZED, free_port, port_open, wait_until

EXAMPLE = ROOT / "examples" / "php-backend"


def php_missing():
    """Why the example can not run here, or None."""
    if shutil.which("php") is None:
        return "php-cli is not installed (make deps-test installs php-cli php-redis php-curl php-sqlite3)"
    modules = subprocess.run(["php", "-m"], capture_output=True, text=True, timeout=10).stdout.split()
    lacking = [m for m in ("redis", "curl", "sqlite3", "pcntl") if m not in modules]
    if lacking:
        return f"PHP lacks {', '.join(lacking)} (make deps-test installs php-redis php-curl php-sqlite3)"
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (make deps-test)"
    return None


pytestmark = pytest.mark.skipif(php_missing() is not None, reason=str(php_missing()))

SECRET = "a secret the test shares with run.sh, 32 bytes or more"
API_KEY = "the example's API key, for the test"
AUD, ISS = "moonwire-chat", "moonwire-php-example"
PASSWORDS = {"ann": "wonderland", "bob": "builder", "carol": "carols", "admin": "admin-secret"}
WORKER_MAX_ENTRIES = 3  # small, so that the worker's bounded run ends and restarts during the test


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def sign(claims, key=SECRET, alg="HS256"):
    digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}[alg]
    head = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims).encode())
    sig = hmac.new(key.encode(), f"{head}.{body}".encode(), digest).digest()
    return f"{head}.{body}.{b64url(sig)}"


def claims_of(token):
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


class Example:
    """run.sh on free ports, its work directory (logs, SQLite) in tmp."""

    def __init__(self, tmp):
        self.port, self.mw_port, self.redis_port = free_port(), free_port(), free_port()
        self.work = tmp
        self.db = tmp / "archive.sqlite"
        env = dict(os.environ, PORT=str(self.port), MW_PORT=str(self.mw_port),
                   REDIS_PORT=str(self.redis_port), MW_BIN=BIN, WORK_DIR=str(tmp),
                   CHAT_JWT_SECRET=SECRET, MW_API_KEY=API_KEY,
                   WORKER_MAX_ENTRIES=str(WORKER_MAX_ENTRIES))
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        self.out = open(tmp / "run.out", "wb")
        # A session of its own: whatever is left at the end is found (and killed) by its group.
        self.proc = subprocess.Popen([str(EXAMPLE / "run.sh")], cwd=ROOT, env=env, stdout=self.out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until(lambda: self.proc.poll() is not None or (
                port_open(self.port) and self.healthz() and "reading chat:archive" in self.log("worker")),
                timeout=20, what="run.sh to start everything")
            assert self.proc.poll() is None, f"run.sh exited:\n{self.logs()}"
        except BaseException:
            self.kill()
            raise
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.mw_port}/chat"

    def healthz(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.mw_port}/healthz", timeout=2) as r:
                return r.read() == b"ok\n"
        except OSError:
            return False

    def log(self, name):
        try:
            return (self.work / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""

    def logs(self):
        out = [f"== run.sh\n{(self.work / 'run.out').read_text(errors='replace')}"]
        for name in ("moonwire", "php", "worker", "redis"):
            out.append(f"== {name}.log\n" + "\n".join(self.log(name).splitlines()[-30:]))
        return "\n".join(out)

    def alive_in_group(self):
        try:
            os.killpg(self.proc.pid, 0)
            return True
        except ProcessLookupError:
            return False

    def kill(self):
        if self.alive_in_group():
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=5)
        self.out.close()


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    ex = Example(tmp_path_factory.mktemp("php-backend"))
    yield ex
    if ex.proc.poll() is None:
        ex.proc.send_signal(signal.SIGINT)
        try:
            ex.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    ex.kill()
    if SANITIZED:
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            assert marker not in ex.log("moonwire"), ex.log("moonwire")


class Browser:
    """A PHP session: cookies kept, redirects followed."""

    def __init__(self, example):
        self.base = example.url
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def request(self, path, form=None):
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        try:
            with self.opener.open(self.base + path, data=data, timeout=10) as r:
                return r.status, r.geturl(), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.geturl(), e.read().decode()

    def login(self, user, password=None):
        status, url, _ = self.request("/index.php", {"user": user, "password": password or PASSWORDS[user]})
        assert status == 200, (status, url)
        return url

    def token(self):
        status, _, body = self.request("/token.php")
        assert status == 200, body
        return json.loads(body)["token"]

    def announce(self, room, text, via):
        _, _, page = self.request("/admin.php")
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)
        return self.request("/admin.php", {"csrf": csrf, "room": room, "text": text, "via": via})


def refusal(example, token):
    """The status and body of an upgrade with ?token=token (no token when None)."""
    conn = http.client.HTTPConnection("127.0.0.1", example.mw_port, timeout=5)
    query = "" if token is None else "?token=" + urllib.parse.quote(token)
    conn.request("GET", "/chat" + query, headers={
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    res = conn.getresponse()
    out = res.status, res.read().decode().strip()
    conn.close()
    return out


async def recv_until(ws, pred, timeout=10.0):
    """Messages (decoded) until one for which pred is true; returns that one."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("timed out waiting for a message")
        m = json.loads(await asyncio.wait_for(ws.recv(), left))
        if pred(m):
            return m


async def join(example, token, room, query=""):
    """A WebSocket to moonwire with the token, in room; returns it and the nick it got."""
    ws = await websockets.connect(f"{example.ws}?room={room}&token={token}{query}", open_timeout=10)
    nick = (await recv_until(ws, lambda m: m["type"] == "nick_set"))["nick"]
    await recv_until(ws, lambda m: m["type"] == "history" and m["room"] == room)
    return ws, nick


def test_the_login_form_gives_a_token_moonwire_takes_and_the_nick_is_the_tokens(example):
    ann = Browser(example)
    assert ann.request("/token.php")[0] == 401, "no token before logging in"
    assert ann.request("/chat.php")[1].endswith("/index.php"), "the chat page sends to the login form"
    status, _, page = ann.request("/index.php", {"user": "ann", "password": "guess"})
    assert status == 401 and "wrong password" in page
    assert ann.login("ann").endswith("/chat.php")
    token = ann.token()

    head = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert head == {"alg": "HS256", "typ": "JWT"}
    claims = claims_of(token)
    assert (claims["sub"], claims["name"], claims["aud"], claims["iss"]) == ("ann", "ann", AUD, ISS)
    assert claims["exp"] - claims["iat"] == 300 and abs(claims["iat"] - time.time()) < 30
    assert token.split(".")[2] == b64url(hmac.new(SECRET.encode(), token.rsplit(".", 1)[0].encode(), hashlib.sha256).digest())

    async def go():
        # ?nick= asks for another nick: the token's wins.
        ws, nick = await join(example, token, "lobby", "&nick=mallory")
        await ws.send(json.dumps({"type": "nick", "nick": "mallory", "id": 1}))
        err = await recv_until(ws, lambda m: m["type"] == "error")
        await ws.close()
        return nick, err["code"]

    assert asyncio.run(go()) == ("ann", "nick_fixed")
    # The page the browser gets connects to moonwire's port.
    _, _, page = ann.request("/chat.php")
    assert f'data-ws-port="{example.mw_port}"' in page and 'data-room="lobby"' in page


def test_tampered_foreign_expired_and_alg_none_tokens_are_refused_with_the_reason(example):
    ann = Browser(example)
    ann.login("ann")
    good = ann.token()
    head, _, sig = good.split(".")
    now = int(time.time())
    admin = {"sub": "admin", "name": "admin", "aud": AUD, "iss": ISS, "iat": now, "exp": now + 300}
    forged = head + "." + b64url(json.dumps(admin).encode()) + "." + sig
    none_head = b64url(b'{"alg":"none","typ":"JWT"}')
    cases = {
        "tampered": (forged, "bad signature"),
        "signed with another secret": (sign(admin, key="another secret of 32 bytes or more!!"), "bad signature"),
        "expired": (sign(dict(admin, iat=now - 900, exp=now - 600)), "expired"),
        "alg none": (none_head + "." + b64url(json.dumps(admin).encode()) + ".", "malformed"),
        "alg none, signed": (none_head + "." + b64url(json.dumps(admin).encode()) + "." + sig, "alg not allowed"),
        "HS512": (sign(admin, alg="HS512"), "alg not allowed"),
        "another audience": (sign(dict(admin, aud="another app")), "wrong audience"),
        "another issuer": (sign(dict(admin, iss="someone")), "wrong issuer"),
    }
    for what, (token, reason) in cases.items():
        assert refusal(example, token) == (401, f"401 Unauthorized: bad token ({reason})"), what
    assert refusal(example, None) == (401, "401 Unauthorized: log in first: this chat needs a token (?token=...)")
    assert refusal(example, sign(dict(admin, name="not a nick")))[0] == 403
    # A token made with the secret by someone else than PHP is good: the secret is the trust.
    assert refusal(example, sign(admin))[0] == 101
    log = example.log("moonwire")
    assert "chat: refused a connection from 127.0.0.1: bad token (expired)" in log
    assert forged not in log and good not in log, "tokens are not logged"


def test_the_admin_page_announces_through_the_api_and_through_the_stream(example):
    ann, bob, admin = Browser(example), Browser(example), Browser(example)
    ann.login("ann")
    bob.login("bob")
    assert admin.login("admin").endswith("/admin.php")
    assert ann.request("/admin.php")[0] == 403, "admin only"
    status, _, page = admin.request("/admin.php", {"csrf": "forged", "room": "news", "text": "x", "via": "api"})
    assert status == 400 and "stale" in page

    async def go():
        a, _ = await join(example, ann.token(), "news")
        b, _ = await join(example, bob.token(), "news")
        got = {}
        for via in ("api", "stream"):
            status, _, page = await asyncio.to_thread(admin.announce, "news", f"hello through the {via}", via)
            assert status == 200, page
            result = re.search(r'id="result"[^>]*>([^<]*)<', page).group(1)
            for ws, who in ((a, "ann"), (b, "bob")):
                m = await recv_until(ws, lambda m: m["type"] == "announcement")
                got[(who, via)] = (m["from"], m["text"], m["via"], m["room"], "offset" in m, result)
        await a.close()
        await b.close()
        return got

    got = asyncio.run(go())
    for who in ("ann", "bob"):
        assert got[(who, "api")][:5] == ("admin", "hello through the api", "api", "news", True)
        assert got[(who, "api")][5].startswith("Published through the HTTP API: delivered to 2 connection(s)")
        assert got[(who, "stream")][:5] == ("admin", "hello through the stream", "stream", "news", True)
        assert got[(who, "stream")][5].startswith("Queued in mw:api as entry ")
    # moonwire refuses the API without the key: the PHP side sent it.
    req = urllib.request.Request(f"http://127.0.0.1:{example.mw_port}/api/info", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 401


def test_room_messages_land_in_sqlite_through_the_worker_once_each(example):
    carol, admin = Browser(example), Browser(example)
    carol.login("carol")
    admin.login("admin")
    texts = [f"archived {i}" for i in range(2 * WORKER_MAX_ENTRIES + 1)]

    async def go():
        ws, _ = await join(example, carol.token(), "archive-room")
        for text in texts:
            await ws.send(json.dumps({"type": "say", "text": text}))
            await recv_until(ws, lambda m: m["type"] == "sent")
        await ws.close()

    asyncio.run(go())

    def stored():
        with sqlite3.connect(example.db, timeout=5) as db:
            return db.execute("SELECT nick, text FROM messages WHERE room = 'archive-room' AND type = 'say' "
                              "ORDER BY rowid").fetchall()

    wait_until(lambda: len(stored()) >= len(texts), timeout=20, what="the says in SQLite")
    assert stored() == [("carol", t) for t in texts]
    with sqlite3.connect(example.db, timeout=5) as db:
        rows = db.execute("SELECT COUNT(*), COUNT(DISTINCT stream_id) FROM messages").fetchone()
        presence = db.execute("SELECT text FROM messages WHERE room = 'archive-room' AND type = 'presence' "
                              "AND nick = 'carol' ORDER BY rowid").fetchall()
    assert rows[0] == rows[1], "each entry once"
    assert ("join",) in presence
    # Bounded runs: the worker stopped after WORKER_MAX_ENTRIES entries and run.sh started it again.
    assert example.log("worker").count("reading chat:archive") >= 3, example.log("worker")
    assert "exited with status" not in (example.work / "run.out").read_text()
    # Nothing left pending for the worker's group.
    pending = subprocess.run(["redis-cli", "-p", str(example.redis_port), "XPENDING", "chat:archive", "archivers"],
                             capture_output=True, text=True, timeout=5).stdout.split()
    wait_until(lambda: subprocess.run(
        ["redis-cli", "-p", str(example.redis_port), "XPENDING", "chat:archive", "archivers"],
        capture_output=True, text=True, timeout=5).stdout.split()[0] == "0", timeout=10,
        what=f"no pending archive entries (had {pending[:1]})")
    # The admin page lists them, newest first.
    _, _, page = admin.request("/admin.php")
    shown = re.findall(r"<td>(archived \d+)</td>", page)
    assert shown[:len(texts)] == texts[::-1]


def test_the_php_of_docs_backend_md_is_the_examples(example):
    """Each ```php block of docs/backend.md is word for word in the example's files
    (the leading <?php aside), so the snippets are the code this file runs."""
    sources = "\n".join(p.read_text() for p in sorted(EXAMPLE.rglob("*.php")))
    blocks = re.findall(r"^```php\n(.*?)^```$", (ROOT / "docs" / "backend.md").read_text(), re.S | re.M)
    assert len(blocks) >= 5
    for block in blocks:
        assert block in sources, f"not in examples/php-backend:\n{block}"
    # whoami.php, the session endpoint of the hook that checks a cookie.
    ann = Browser(example)
    assert ann.request("/whoami.php")[:3:2] == (401, "{}")
    ann.login("ann")
    assert ann.request("/whoami.php")[:3:2] == (200, '{"user":"ann"}')


def test_an_interrupt_stops_every_process_of_the_example(example):
    pids = [int(p) for p in subprocess.run(["pgrep", "-s", str(example.proc.pid)], capture_output=True,
                                           text=True, timeout=5).stdout.split()]
    assert len(pids) >= 5, "run.sh, redis-server, moonwire, php -S and the worker"
    example.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends run.sh
    assert example.proc.wait(timeout=20) == 0, "an ordered stop"
    wait_until(lambda: not example.alive_in_group(), timeout=10, what="every process of the example to exit")
    for port in (example.port, example.mw_port, example.redis_port):
        assert not port_open(port), port
    assert "stored" in example.log("worker").splitlines()[-1], "the worker stopped cleanly"
