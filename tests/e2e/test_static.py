"""Static files (core/static.c) against the real binary: content types, the
index file and the directory redirect, strong ETags and 304s, Cache-Control
for ordinary and fingerprinted names, precompressed .gz siblings, HEAD, 405,
every refusal that keeps a request inside the root, the configuration keys,
and WebSocket upgrades on the same port while static files are on.

Every refusal is followed by a request that must still be served: nothing a
client sends stops the server.
"""
import asyncio
import gzip
import hashlib
import json
import os
import subprocess
import time
import urllib.request

import pytest
import websockets

import httpraw
from conftest import BIN, ROOT

INDEX = b"<!doctype html><title>chat</title><h1>moonwire chat</h1>\n"
CSS = b"body { font-family: sans-serif; }\n"
APP_JS = b"console.log('fingerprinted');\n"
BIG_TXT = b"moonwire compresses well. " * 400
SECRET = b"TOP-SECRET-OUTSIDE-THE-ROOT\n"
DOTENV = b"PASSWORD=hunter2\n"
BLOB = hashlib.sha256(b"seed").digest() * 32768  # 1 MiB


def run(coro, timeout=30):
    return asyncio.run(asyncio.wait_for(coro, timeout=timeout))


def lua_str(s):
    return json.dumps(str(s))  # a JSON string of a plain path is a Lua string


@pytest.fixture
def site(tmp_path):
    """A root with ordinary files, a .gz sibling, a fingerprinted name, a
    subdirectory, dotfiles, and symlinks pointing inside and outside."""
    root = tmp_path / "www"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_bytes(SECRET)

    (root / "index.html").write_bytes(INDEX)
    (root / "style.css").write_bytes(CSS)
    (root / "app.3f9a2c1b.js").write_bytes(APP_JS)
    (root / "data.json").write_bytes(b'{"ok": true}\n')
    (root / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    (root / "font.woff2").write_bytes(b"wOF2" + bytes(60))
    (root / "module.wasm").write_bytes(b"\0asm\1\0\0\0")
    (root / "notes.unknownext").write_bytes(b"what am I\n")
    (root / "big.txt").write_bytes(BIG_TXT)
    (root / "big.txt.gz").write_bytes(gzip.compress(BIG_TXT, mtime=0))
    (root / "blob.bin").write_bytes(BLOB)
    (root / "empty.txt").write_bytes(b"")
    (root / "sub").mkdir()
    (root / "sub" / "index.html").write_bytes(b"<p>sub index</p>\n")
    (root / "sub" / "page.txt").write_bytes(b"a page\n")
    (root / "noindex").mkdir()
    (root / "noindex" / "file.txt").write_bytes(b"file\n")
    (root / "evil.example").mkdir()
    (root / "evil.example" / "index.html").write_bytes(b"not evil\n")
    (root / "healthz").write_bytes(b"a file called healthz\n")
    (root / ".env").write_bytes(DOTENV)
    (root / ".git").mkdir()
    (root / ".git" / "config").write_bytes(b"[core]\n")
    os.symlink(outside / "secret.txt", root / "escape.txt")
    os.symlink(outside, root / "escape_dir")
    os.symlink(root / ".env", root / "dotlink.txt")
    os.symlink("index.html", root / "link.html")
    return root


@pytest.fixture
def static_server(start_server, site):
    return start_server("scripts/echo.lua", args=["--static", str(site)])


def get(server, path, headers=None, method="GET", timeout=5.0):
    return httpraw.get(server.port, path, headers=headers, method=method, timeout=timeout)


def head_raw(server, path, headers=None):
    """Sends a HEAD with Connection: close and returns every byte the server
    sent before it closed (so a body sent by mistake would show)."""
    lines = [f"HEAD {path} HTTP/1.1", "Host: localhost", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with httpraw.connect(server.port) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        _, got = httpraw.wait_eof(s, timeout=5)
    end = got.index(b"\r\n\r\n")
    return httpraw.Response(got, end)


def assert_served(server, path="/", body=INDEX):
    """The server still answers a plain request after whatever came before."""
    resp = get(server, path)
    assert resp.status == 200, resp
    assert resp.body == body, resp


def assert_not_found(resp):
    assert resp.status == 404, resp
    assert resp.headers["content-type"].startswith("text/plain"), resp
    assert int(resp.headers["content-length"]) == len(resp.body), resp
    assert 0 < len(resp.body) <= 512, resp
    assert resp.body == b"404 Not Found: no such file\n", resp
    assert "etag" not in resp.headers, resp


def assert_echo(server, path="/"):
    async def go():
        async with websockets.connect(server.url + path, open_timeout=5) as ws:
            await ws.send("still here")
            assert await asyncio.wait_for(ws.recv(), 5) == "still here"
    run(go())


# Files ----------------------------------------------------------------------------------


def test_serves_index_html_for_the_root(static_server):
    resp = get(static_server, "/")
    assert resp.status == 200, resp
    assert resp.body == INDEX
    assert resp.headers["content-type"] == "text/html; charset=utf-8"
    assert int(resp.headers["content-length"]) == len(INDEX)
    assert "connection" not in resp.headers, "HTTP/1.1 keeps the connection by default"


@pytest.mark.parametrize("path,ctype", [
    ("/index.html", "text/html; charset=utf-8"),
    ("/style.css", "text/css; charset=utf-8"),
    ("/app.3f9a2c1b.js", "text/javascript; charset=utf-8"),
    ("/data.json", "application/json"),
    ("/logo.png", "image/png"),
    ("/font.woff2", "font/woff2"),
    ("/module.wasm", "application/wasm"),
    ("/big.txt", "text/plain; charset=utf-8"),
    ("/notes.unknownext", "application/octet-stream"),
    ("/sub/page.txt", "text/plain; charset=utf-8"),
])
def test_serves_each_file_with_its_content_type(static_server, site, path, ctype):
    resp = get(static_server, path)
    assert resp.status == 200, resp
    assert resp.headers["content-type"] == ctype, resp
    assert resp.body == (site / path.lstrip("/")).read_bytes()
    assert int(resp.headers["content-length"]) == len(resp.body)


def test_sends_a_strong_etag_last_modified_and_cache_control(static_server, site):
    resp = get(static_server, "/style.css")
    etag = resp.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"') and not etag.startswith("W/"), resp
    assert len(etag) > 10
    assert resp.headers["cache-control"] == "public, max-age=300"
    mtime = int((site / "style.css").stat().st_mtime)
    assert resp.headers["last-modified"] == time.strftime(
        "%a, %d %b %Y %H:%M:%S GMT", time.gmtime(mtime))
    assert "date" in resp.headers
    assert resp.headers["vary"] == "Accept-Encoding", "css may be sent gzipped"
    assert "content-encoding" not in resp.headers
    png = get(static_server, "/logo.png")
    assert "vary" not in png.headers, "no .gz sibling and not compressible, so no Vary"


def test_the_etag_is_a_hash_of_the_content(static_server, site):
    first = get(static_server, "/index.html").headers["etag"]
    assert get(static_server, "/index.html").headers["etag"] == first, "stable"
    assert get(static_server, "/link.html").headers["etag"] == first, "same bytes, same tag"
    assert get(static_server, "/style.css").headers["etag"] != first


def test_fingerprinted_names_are_cached_for_a_year_and_immutable(static_server):
    resp = get(static_server, "/app.3f9a2c1b.js")
    assert resp.status == 200, resp
    assert resp.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert get(static_server, "/index.html").headers["cache-control"] == "public, max-age=300"


def test_serves_an_empty_file(static_server):
    resp = get(static_server, "/empty.txt")
    assert resp.status == 200, resp
    assert resp.headers["content-length"] == "0"
    assert resp.body == b""


def test_serves_a_megabyte_intact_from_disk_then_from_the_cache(static_server):
    for _ in range(3):
        resp = get(static_server, "/blob.bin")
        assert resp.status == 200, resp
        assert resp.body == BLOB
        assert resp.headers["content-type"] == "application/octet-stream"


def test_serves_many_clients_at_once_from_one_cached_copy(static_server):
    socks = [httpraw.connect(static_server.port) for _ in range(20)]
    try:
        for s in socks:
            s.sendall(b"GET /blob.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        for s in socks:
            resp = httpraw.read_response(s, timeout=10)
            assert resp.status == 200 and resp.body == BLOB, resp.status_line
    finally:
        for s in socks:
            s.close()


def test_sees_a_changed_file_on_the_next_request(static_server, site):
    first = get(static_server, "/sub/page.txt")
    path = site / "sub" / "page.txt"
    path.write_bytes(b"a new page, longer than before\n")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    second = get(static_server, "/sub/page.txt")
    assert second.body == b"a new page, longer than before\n"
    assert second.headers["etag"] != first.headers["etag"]


def test_a_file_replaced_by_a_symlink_outside_is_refused_even_after_caching(static_server,
                                                                              site):
    assert get(static_server, "/sub/page.txt").status == 200
    os.remove(site / "sub" / "page.txt")
    os.symlink(site.parent / "outside" / "secret.txt", site / "sub" / "page.txt")
    resp = get(static_server, "/sub/page.txt")
    assert_not_found(resp)
    assert SECRET not in resp.raw


# Directories -------------------------------------------------------------------------------


def test_serves_the_index_of_a_subdirectory(static_server):
    resp = get(static_server, "/sub/")
    assert resp.status == 200, resp
    assert resp.body == b"<p>sub index</p>\n"
    assert resp.headers["content-type"] == "text/html; charset=utf-8"


def test_redirects_a_directory_without_its_trailing_slash(static_server):
    resp = get(static_server, "/sub")
    assert resp.status == 301, resp
    assert resp.headers["location"] == "/sub/"
    assert int(resp.headers["content-length"]) == len(resp.body)


def test_the_redirect_keeps_the_query(static_server):
    resp = get(static_server, "/sub?room=lobby&nick=ann")
    assert resp.status == 301, resp
    assert resp.headers["location"] == "/sub/?room=lobby&nick=ann"


def test_the_redirect_can_not_be_turned_into_another_host(static_server):
    resp = get(static_server, "//evil.example")
    assert resp.status == 301, resp
    assert resp.headers["location"] == "/evil.example/", resp


def test_the_redirect_escapes_what_the_path_decoded_to(static_server, site):
    (site / "a dir").mkdir()
    (site / "a dir" / "index.html").write_bytes(b"spaced\n")
    resp = get(static_server, "/a%20dir")
    assert resp.status == 301, resp
    assert resp.headers["location"] == "/a%20dir/", resp
    assert get(static_server, "/a%20dir/").body == b"spaced\n"


def test_urllib_follows_the_redirect_to_the_index(static_server):
    with urllib.request.urlopen(static_server.http + "/sub", timeout=5) as r:
        assert r.status == 200
        assert r.read() == b"<p>sub index</p>\n"
        assert r.geturl().endswith("/sub/")


def test_a_directory_without_an_index_is_404_not_a_listing(static_server):
    assert_not_found(get(static_server, "/noindex/"))
    assert get(static_server, "/noindex/file.txt").status == 200


def test_normalises_repeated_slashes_and_dot_segments(static_server):
    assert get(static_server, "/sub//page.txt").body == b"a page\n"
    assert get(static_server, "/./sub/./page.txt").body == b"a page\n"
    assert get(static_server, "/s%75b/page.txt").body == b"a page\n"


# Conditional requests ---------------------------------------------------------------------


def test_answers_304_to_the_etag_of_a_first_response(static_server):
    first = get(static_server, "/style.css")
    etag = first.headers["etag"]
    resp = get(static_server, "/style.css", headers={"If-None-Match": etag})
    assert resp.status == 304, resp
    assert resp.body == b""
    assert resp.headers["etag"] == etag
    assert resp.headers["cache-control"] == first.headers["cache-control"]
    assert "content-length" not in resp.headers


def test_answers_304_to_a_list_a_star_and_a_weak_tag(static_server):
    etag = get(static_server, "/style.css").headers["etag"]
    for value in (f'"nope", {etag}', f'{etag}, "other"', "*", f"W/{etag}"):
        resp = get(static_server, "/style.css", headers={"If-None-Match": value})
        assert resp.status == 304, (value, resp)
        assert resp.body == b""


def test_answers_200_to_an_etag_that_does_not_match(static_server):
    etag = get(static_server, "/style.css").headers["etag"]
    other = get(static_server, "/index.html").headers["etag"]
    resp = get(static_server, "/style.css", headers={"If-None-Match": other})
    assert resp.status == 200, resp
    assert resp.body == CSS
    resp = get(static_server, "/style.css", headers={"If-None-Match": etag[:-2] + '"'})
    assert resp.status == 200, resp


def test_answers_304_to_head_too(static_server):
    etag = get(static_server, "/index.html").headers["etag"]
    resp = head_raw(static_server, "/index.html", headers={"If-None-Match": etag})
    assert resp.status == 304, resp
    assert resp.body == b""


# Precompressed .gz ---------------------------------------------------------------------------


def test_sends_the_gz_sibling_to_a_client_that_accepts_gzip(static_server):
    plain = get(static_server, "/big.txt")
    resp = get(static_server, "/big.txt", headers={"Accept-Encoding": "gzip, deflate, br"})
    assert resp.status == 200, resp
    assert resp.headers["content-encoding"] == "gzip"
    assert resp.headers["content-type"] == "text/plain; charset=utf-8"
    assert resp.headers["vary"] == "Accept-Encoding"
    assert int(resp.headers["content-length"]) == len(resp.body) < len(BIG_TXT)
    assert gzip.decompress(resp.body) == BIG_TXT
    assert resp.headers["etag"] != plain.headers["etag"], "each representation has its own"


def test_sends_the_plain_file_with_vary_when_gzip_is_not_accepted(static_server):
    for headers in ({}, {"Accept-Encoding": "identity"}, {"Accept-Encoding": "gzip;q=0"},
                    {"Accept-Encoding": "*, gzip;q=0"}, {"Accept-Encoding": "br"},
                    {"Accept-Encoding": "gzip;q=0.0, br;q=1"}):
        resp = get(static_server, "/big.txt", headers=headers)
        assert resp.status == 200, (headers, resp)
        assert "content-encoding" not in resp.headers, headers
        assert resp.headers["vary"] == "Accept-Encoding", headers
        assert resp.body == BIG_TXT, headers


def test_a_star_or_a_positive_q_accepts_gzip(static_server):
    for value in ("*", "br;q=1.0, gzip;q=0.5", "GZIP", "x-gzip", "deflate, *;q=0.1"):
        resp = get(static_server, "/big.txt", headers={"Accept-Encoding": value})
        assert resp.headers.get("content-encoding") == "gzip", (value, resp)


def test_answers_304_to_the_etag_of_the_gz_representation(static_server):
    ae = {"Accept-Encoding": "gzip"}
    etag = get(static_server, "/big.txt", headers=ae).headers["etag"]
    resp = get(static_server, "/big.txt", headers={**ae, "If-None-Match": etag})
    assert resp.status == 304, resp
    assert resp.headers["vary"] == "Accept-Encoding"
    # The same tag names another representation for a client without gzip.
    resp = get(static_server, "/big.txt", headers={"If-None-Match": etag})
    assert resp.status == 200, resp
    assert resp.body == BIG_TXT


def test_serves_the_gz_file_itself_when_asked_for_by_name(static_server):
    resp = get(static_server, "/big.txt.gz")
    assert resp.status == 200, resp
    assert resp.headers["content-type"] == "application/gzip"
    assert "content-encoding" not in resp.headers
    assert gzip.decompress(resp.body) == BIG_TXT


# HEAD and methods -----------------------------------------------------------------------------


def test_head_sends_the_get_headers_and_no_body(static_server):
    for path, ae in (("/index.html", None), ("/big.txt", "gzip"), ("/blob.bin", None)):
        headers = {"Accept-Encoding": ae} if ae else {}
        full = get(static_server, path, headers=headers)
        resp = head_raw(static_server, path, headers=headers)
        assert resp.status == 200, resp
        assert resp.body == b"", "nothing after the head"
        for name in ("content-type", "content-length", "etag", "last-modified",
                     "cache-control", "vary", "content-encoding"):
            assert resp.headers.get(name) == full.headers.get(name), name
        assert int(resp.headers["content-length"]) == len(full.body)


def test_head_of_a_missing_file_is_404_without_a_body(static_server):
    resp = head_raw(static_server, "/missing.html")
    assert resp.status == 404, resp
    assert resp.body == b""
    assert int(resp.headers["content-length"]) > 0


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_get_405_with_allow(static_server, method):
    resp = get(static_server, "/index.html", method=method, headers={"Content-Length": "0"})
    assert resp.status == 405, resp
    assert resp.headers["allow"] == "GET, HEAD"
    assert int(resp.headers["content-length"]) == len(resp.body)
    assert_served(static_server)


# Refusals -------------------------------------------------------------------------------------


REFUSED = [
    "/.env",
    "/.git/config",
    "/.git/",
    "/sub/../.env",
    "/../outside/secret.txt",
    "/sub/../../outside/secret.txt",
    "/%2e%2e/outside/secret.txt",
    "/%2E%2E/%2e%2e/etc/passwd",
    "/sub/..%2f..%2foutside%2fsecret.txt",
    "/.%2e/outside/secret.txt",
    "/%2eenv",
    "/..%5coutside%5csecret.txt",
    "/sub\\..\\.env",
    "/index.html%00.png",
    "/index.html%0a",
    "/escape.txt",
    "/escape_dir/secret.txt",
    "/escape_dir/",
    "/dotlink.txt",
    "/missing.html",
    "/sub/missing/",
    "/index.html/",
]


@pytest.mark.parametrize("path", REFUSED)
def test_refuses_with_404_and_keeps_serving(static_server, path):
    resp = get(static_server, path)
    assert_not_found(resp)
    assert SECRET not in resp.raw and DOTENV not in resp.raw
    assert_served(static_server)


def test_a_symlink_inside_the_root_is_served(static_server):
    assert_served(static_server, "/link.html", INDEX)


def test_refuses_a_malformed_percent_escape_with_400_and_keeps_serving(static_server):
    for path in ("/a%zz", "/index.html%", "/%4"):
        resp = get(static_server, path)
        assert resp.status == 400, (path, resp)
        assert int(resp.headers["content-length"]) == len(resp.body)
    assert_served(static_server)


def test_refuses_a_file_over_max_file_size_with_403_and_logs_why(start_server, site):
    config = f"return {{ static = {{ root = {lua_str(site)}, max_file_size = 4096 }} }}"
    server = start_server("scripts/echo.lua", config=config)
    resp = get(server, "/blob.bin")
    assert resp.status == 403, resp
    assert int(resp.headers["content-length"]) == len(resp.body)
    log = server.wait_log("static.max_file_size")
    assert "blob.bin" in log
    assert_served(server)
    # The .gz sibling is small enough; the plain file is not.
    (site / "blob.bin.gz").write_bytes(gzip.compress(BLOB))
    resp = get(server, "/blob.bin", headers={"Accept-Encoding": "gzip"})
    assert resp.status == 200 and gzip.decompress(resp.body) == BLOB, resp.status_line


# Sharing the port ---------------------------------------------------------------------------


def test_a_websocket_upgrade_on_the_same_port_still_works(static_server):
    assert_echo(static_server, "/")
    assert_echo(static_server, "/chat?room=lobby")
    assert_served(static_server)
    assert_echo(static_server, "/index.html")


def test_an_upgrade_that_fails_its_checks_is_refused_as_before(static_server):
    resp = httpraw.request(static_server.port, httpraw.upgrade_bytes("/", version="8"))
    assert resp.status == 426, resp
    assert resp.headers["sec-websocket-version"] == "13"
    assert_served(static_server)


def test_healthz_and_metrics_come_before_static_files(static_server):
    resp = get(static_server, "/healthz")
    assert resp.status == 200 and resp.text.strip() == "ok", resp
    resp = get(static_server, "/metrics")
    assert resp.status == 200 and "moonwire_" in resp.text, resp


def test_without_static_a_plain_get_is_not_served(start_server, site):
    server = start_server("scripts/echo.lua")
    resp = get(server, "/index.html")
    assert resp.status == 400, resp
    assert INDEX not in resp.raw
    assert_echo(server)


# Configuration ------------------------------------------------------------------------------


def test_the_configuration_sets_every_key(start_server, site):
    (site / "home.htm").write_bytes(b"home\n")
    (site / "sub" / "home.htm").write_bytes(b"sub home\n")
    config = f"""return {{ static = {{
        root = {lua_str(site)},
        index = "home.htm",
        cache_control = "no-cache",
        immutable_cache_control = "public, max-age=60",
        max_file_size = 2097152,
        cache_size = 0,
    }} }}"""
    server = start_server("scripts/echo.lua", config=config)
    resp = get(server, "/")
    assert resp.body == b"home\n", resp
    assert resp.headers["cache-control"] == "no-cache"
    assert get(server, "/sub/").body == b"sub home\n"
    assert get(server, "/app.3f9a2c1b.js").headers["cache-control"] == "public, max-age=60"
    # cache_size = 0: nothing is kept, every request reads the disk.
    for _ in range(2):
        assert get(server, "/blob.bin").body == BLOB


def test_an_empty_cache_control_sends_none(start_server, site):
    config = (f'return {{ static = {{ root = {lua_str(site)}, cache_control = "",'
              f' immutable_cache_control = "" }} }}')
    server = start_server("scripts/echo.lua", config=config)
    assert "cache-control" not in get(server, "/").headers
    assert "cache-control" not in get(server, "/app.3f9a2c1b.js").headers


def test_the_flag_overrides_the_configured_root(start_server, site, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "index.html").write_bytes(b"other root\n")
    config = f"return {{ static = {{ root = {lua_str(site)} }} }}"
    server = start_server("scripts/echo.lua", config=config, args=["--static", str(other)])
    assert get(server, "/").body == b"other root\n"


def test_a_small_cache_evicts_and_still_serves_everything(start_server, site):
    config = f"return {{ static = {{ root = {lua_str(site)}, cache_size = 4096 }} }}"
    server = start_server("scripts/echo.lua", config=config)
    for _ in range(2):
        for path in ("/index.html", "/style.css", "/big.txt", "/blob.bin", "/sub/page.txt"):
            resp = get(server, path)
            assert resp.status == 200, (path, resp)
            assert resp.body == (site / path.lstrip("/")).read_bytes()


@pytest.mark.parametrize("config,message", [
    ('return { static = { root = "/nonexistent/moonwire" } }', "'static.root'"),
    ('return { static = { root = ".", index = "../x.html" } }', "'static.index'"),
    ('return { static = { root = ".", index = ".hidden" } }', "'static.index'"),
    ('return { static = { root = ".", cache_control = "a\\r\\nX-Evil: 1" } }',
     "'static.cache_control'"),
    ('return { static = { root = ".", max_file_size = 0 } }', "'static.max_file_size'"),
    ('return { static = { root = ".", nope = 1 } }', "'static.nope'"),
    ('return { static = { root = 5 } }', "'static.root'"),
])
def test_refuses_a_bad_static_configuration(tmp_path, config, message):
    path = tmp_path / "bad.conf.lua"
    path.write_text(config)
    proc = subprocess.run([BIN, "--config", str(path), "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2, proc
    assert message in proc.stderr, proc.stderr


def test_the_static_flag_needs_a_directory(tmp_path):
    proc = subprocess.run([BIN, "--static", str(tmp_path / "missing"), "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2, proc
    assert "'static.root'" in proc.stderr, proc.stderr


# A CDN's origin: keep-alive ------------------------------------------------------------------
#
# What CDNs and browsers expect of an origin (issue 12): persistent
# connections, If-Modified-Since, single ranges, gzip made on the fly, and
# large files streamed. Clients we did not write (http.client, urllib, curl)
# judge it where they can.

import http.client  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import ssl  # noqa: E402

from conftest import free_port, wait_until  # noqa: E402
from hostile import metrics  # noqa: E402

APP_JS_OF_THE_CHAT = (ROOT / "examples" / "chat" / "public" / "app.js").read_bytes()
LARGE = hashlib.sha256(b"large").digest() * (3 * 32768)  # 3 MiB: streamed, never cached


@pytest.fixture
def cdn_site(site):
    (site / "app.js").write_bytes(APP_JS_OF_THE_CHAT)
    (site / "large.bin").write_bytes(LARGE)
    (site / "large.txt").write_bytes(b"streamed text " * 200000)  # 2.8 MB, compressible
    return site


@pytest.fixture
def cdn_server(start_server, cdn_site):
    return start_server("scripts/echo.lua", args=["--static", str(cdn_site)])


def read_all_responses(sock, n, timeout=10):
    """Reads n replies from one connection, in order."""
    out, buf = [], b""
    deadline = time.monotonic() + timeout
    while len(out) < n:
        head_end = buf.find(b"\r\n\r\n")
        if head_end >= 0:
            resp = httpraw.Response(buf[:head_end + 4], head_end)
            length = int(resp.headers.get("content-length", "0"))
            if resp.status == 304 or resp.req_was_head:
                length = 0
            if len(buf) >= head_end + 4 + length:
                resp.body = buf[head_end + 4:head_end + 4 + length]
                buf = buf[head_end + 4 + length:]
                out.append(resp)
                continue
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{len(out)} of {n} replies within {timeout}s")
        sock.settimeout(left)
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise AssertionError(f"closed after {len(out)} of {n} replies")
        buf += chunk
    return out, buf


httpraw.Response.req_was_head = False


def test_http_client_reuses_one_connection_for_many_requests(cdn_server):
    conn = http.client.HTTPConnection("127.0.0.1", cdn_server.port, timeout=10)
    socks = set()
    for path, body in (("/", INDEX), ("/style.css", CSS), ("/large.bin", LARGE),
                       ("/missing", None), ("/app.js", APP_JS_OF_THE_CHAT)):
        conn.request("GET", path)
        resp = conn.getresponse()
        data = resp.read()
        if body is None:
            assert resp.status == 404
        else:
            assert resp.status == 200 and data == body, (path, resp.status)
        assert not resp.will_close, path
        socks.add(id(conn.sock))
    conn.close()
    assert len(socks) == 1, "every request went over the same connection"
    assert metrics(cdn_server)["moonwire_http_keepalive_requests_total"] >= 4


def test_curl_reuses_the_connection(cdn_server):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    url = cdn_server.http
    proc = subprocess.run(["curl", "-sv", "--http1.1", "-o", "/dev/null", "-o", "/dev/null",
                           url + "/index.html", url + "/large.bin"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "Re-using existing connection" in proc.stderr, proc.stderr


def test_answers_pipelined_requests_in_order(cdn_server):
    paths = ["/", "/style.css", "/missing", "/large.bin", "/data.json", "/sub", "/blob.bin",
             "/healthz", "/app.js"] * 3
    data = b"".join(f"GET {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for p in paths)
    with httpraw.connect(cdn_server.port, timeout=10) as s:
        s.sendall(data)
        replies, rest = read_all_responses(s, len(paths), timeout=20)
        assert rest == b""
        # Still open: one more request on the same connection.
        s.sendall(b"GET /style.css HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        last, _ = read_all_responses(s, 1)
        assert last[0].body == CSS and last[0].headers["connection"] == "close"
        httpraw.wait_eof(s, timeout=5)
    want = {"/": (200, INDEX), "/style.css": (200, CSS), "/missing": (404, None),
            "/large.bin": (200, LARGE), "/data.json": (200, b'{"ok": true}\n'),
            "/sub": (301, None), "/blob.bin": (200, BLOB), "/healthz": (200, b"ok\n"),
            "/app.js": (200, APP_JS_OF_THE_CHAT)}
    for path, resp in zip(paths, replies):
        status, body = want[path]
        assert resp.status == status, (path, resp)
        if body is not None:
            assert resp.body == body, path


def test_requests_sent_before_a_half_close_are_all_answered(cdn_server):
    with httpraw.connect(cdn_server.port, timeout=10) as s:
        s.sendall(b"GET /large.bin HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /style.css HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        replies, rest = read_all_responses(s, 3)
        assert [r.body for r in replies] == [LARGE, CSS, INDEX]
        _, more = httpraw.wait_eof(s, timeout=5)
        assert rest + more == b""


def test_connection_close_and_http_1_0_are_honoured(cdn_server):
    resp = get(cdn_server, "/style.css", headers={"Connection": "close"})
    assert resp.headers["connection"] == "close"
    with httpraw.connect(cdn_server.port) as s:
        s.sendall(b"GET /style.css HTTP/1.0\r\n\r\n")
        _, got = httpraw.wait_eof(s, timeout=5)
        assert got.startswith(b"HTTP/1.1 200") and got.endswith(CSS)
        assert b"\r\nConnection: close\r\n" in got
    with httpraw.connect(cdn_server.port) as s:
        s.sendall(b"GET /style.css HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        first, _ = read_all_responses(s, 1)
        assert first[0].headers["connection"] == "keep-alive"
        s.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
        _, got = httpraw.wait_eof(s, timeout=5)
        assert got.endswith(INDEX)


def test_a_head_on_a_kept_connection_is_followed_by_the_next_reply(cdn_server):
    with httpraw.connect(cdn_server.port) as s:
        s.sendall(b"HEAD /large.bin HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /style.css HTTP/1.1\r\nHost: x\r\n\r\n")
        buf, end = httpraw.read_head(s)
        head = httpraw.Response(buf[:end + 4], end)
        assert head.status == 200 and int(head.headers["content-length"]) == len(LARGE)
        rest = buf[end + 4:]
        second = httpraw.read_response(s) if not rest else None
        if second is None:
            h2_end = (rest + httpraw.read_head(s, buf=rest)[0][len(rest):]).find(b"\r\n\r\n")
            assert h2_end > 0
        else:
            assert second.status == 200 and second.body == CSS, second


def test_an_idle_connection_is_closed_after_keepalive_timeout(start_server, cdn_site):
    config = (f"return {{ static = {{ root = {lua_str(cdn_site)} }},"
              f" http = {{ keepalive_timeout = 0.5 }} }}")
    server = start_server("scripts/echo.lua", config=config)
    with httpraw.connect(server.port) as s:
        s.sendall(b"GET /style.css HTTP/1.1\r\nHost: x\r\n\r\n")
        read_all_responses(s, 1)
        waited, got = httpraw.wait_eof(s, timeout=5)
    assert got == b"", "closed without a word"
    assert 0.3 < waited < 3, waited


def test_keepalive_requests_bounds_the_requests_of_one_connection(start_server, cdn_site):
    config = (f"return {{ static = {{ root = {lua_str(cdn_site)} }},"
              f" http = {{ keepalive_requests = 3 }} }}")
    server = start_server("scripts/echo.lua", config=config)
    with httpraw.connect(server.port) as s:
        s.sendall(b"GET /style.css HTTP/1.1\r\nHost: x\r\n\r\n" * 5)
        replies, _ = read_all_responses(s, 3)
        assert [r.headers.get("connection") for r in replies] == [None, None, "close"]
        httpraw.wait_eof(s, timeout=5)


def test_keepalive_timeout_zero_closes_after_every_reply(start_server, cdn_site):
    config = (f"return {{ static = {{ root = {lua_str(cdn_site)} }},"
              f" http = {{ keepalive_timeout = 0 }} }}")
    server = start_server("scripts/echo.lua", config=config)
    resp = get(server, "/style.css")
    assert resp.headers["connection"] == "close"


def test_a_websocket_upgrade_after_a_file_on_the_same_connection(cdn_server):
    s = httpraw.connect(cdn_server.port)
    try:
        s.sendall(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
        first, rest = read_all_responses(s, 1)
        assert first[0].body == INDEX and rest == b""
        key = httpraw.new_key()
        s.sendall(httpraw.upgrade_bytes("/chat", key=key))
        buf, end = httpraw.read_head(s)
        resp = httpraw.Response(buf[:end + 4], end)
        assert resp.status == 101 and resp.headers["sec-websocket-accept"] == \
            httpraw.accept_for(key), resp
        ws = httpraw.RawWS(s, resp, buf[end + 4:])
        ws.send_text("after a file")
        assert ws.recv_frame() == (True, httpraw.OP_TEXT, b"after a file")
    finally:
        s.close()
    m = metrics(cdn_server)
    assert m["moonwire_handshakes_total{result=\"ok\"}"] == 1


def test_sigterm_closes_idle_kept_alive_connections_at_once(start_server, cdn_site):
    server = start_server("scripts/echo.lua", args=["--static", str(cdn_site)])
    with httpraw.connect(server.port) as s:
        s.sendall(b"GET /style.css HTTP/1.1\r\nHost: x\r\n\r\n")
        read_all_responses(s, 1)
        s.sendall(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_all_responses(s, 1)[0][0].body == INDEX, "kept alive"
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        waited, _ = httpraw.wait_eof(s, timeout=5)
        assert waited < 1, "not held for keepalive_timeout"
    assert server.proc.wait(timeout=5) == 0
    assert time.monotonic() - started < 3


# If-Modified-Since ------------------------------------------------------------------------


def test_answers_304_to_if_modified_since(cdn_server):
    first = get(cdn_server, "/style.css")
    lm = first.headers["last-modified"]
    for value in (lm, "Sun, 06 Nov 2050 08:49:37 GMT", "Sunday, 06-Nov-50 08:49:37 GMT"):
        resp = get(cdn_server, "/style.css", headers={"If-Modified-Since": value})
        assert resp.status == 304, (value, resp)
        assert resp.headers["etag"] == first.headers["etag"]
    # The streamed file too.
    lm = get(cdn_server, "/large.bin", headers={"Range": "bytes=0-0"}).headers["last-modified"]
    assert get(cdn_server, "/large.bin", headers={"If-Modified-Since": lm}).status == 304
    # An older date, or one that is not a single valid date, gets the file.
    for value in ("Sun, 06 Nov 1994 08:49:37 GMT", "not a date", "", "2050-01-01",
                  "Sun, 06 Nov 2050 08:49:37 GMT, Sun, 06 Nov 2050 08:49:37 GMT"):
        resp = get(cdn_server, "/style.css", headers={"If-Modified-Since": value})
        assert resp.status == 200 and resp.body == CSS, (value, resp)
    # If-None-Match, when sent, decides alone (RFC 9110 section 13.2.2).
    resp = get(cdn_server, "/style.css", headers={"If-None-Match": '"other"',
                                                  "If-Modified-Since":
                                                  "Sun, 06 Nov 2050 08:49:37 GMT"})
    assert resp.status == 200 and resp.body == CSS, resp


def test_answers_416_to_a_range_past_the_end(cdn_server):
    for path, size in (("/blob.bin", len(BLOB)), ("/large.bin", len(LARGE))):
        for spec in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
            resp = get(cdn_server, path, headers={"Range": spec})
            assert resp.status == 416, (spec, resp)
            assert resp.headers["content-range"] == f"bytes */{size}"
            assert int(resp.headers["content-length"]) == len(resp.body)
    # Several ranges, or a malformed one, get the whole file.
    for spec in ("bytes=0-1,5-6", "bytes=5-1", "bytes=x-y", "lines=1-2", "bytes=0-1, 3-4"):
        resp = get(cdn_server, "/blob.bin", headers={"Range": spec})
        assert resp.status == 200 and resp.body == BLOB, spec
    assert_served(cdn_server)


def test_if_range_lets_the_range_apply_only_to_the_same_version(cdn_server):
    full = get(cdn_server, "/large.bin", headers={"Range": "bytes=0-0"})
    etag, lm = full.headers["etag"], full.headers["last-modified"]
    for value in (etag, lm):
        resp = get(cdn_server, "/large.bin", headers={"Range": "bytes=0-9", "If-Range": value})
        assert resp.status == 206 and resp.body == LARGE[:10], value
    for value in ('"stale"', "W/" + etag, "Sun, 06 Nov 1994 08:49:37 GMT"):
        resp = get(cdn_server, "/large.bin", headers={"Range": "bytes=0-9", "If-Range": value},
                   timeout=10)
        assert resp.status == 200 and resp.body == LARGE, value


def test_a_range_is_served_from_the_identity_encoding(cdn_server):
    resp = get(cdn_server, "/app.js", headers={"Range": "bytes=0-99", "Accept-Encoding": "gzip"})
    assert resp.status == 206, resp
    assert "content-encoding" not in resp.headers
    assert resp.body == APP_JS_OF_THE_CHAT[:100]
    assert resp.headers["vary"] == "Accept-Encoding"
    # The precompressed sibling the same way.
    resp = get(cdn_server, "/big.txt", headers={"Range": "bytes=-10", "Accept-Encoding": "gzip"})
    assert resp.status == 206 and resp.body == BIG_TXT[-10:], resp
    # Range applies to GET only: HEAD gets the whole file's head.
    resp = head_raw(cdn_server, "/large.bin", headers={"Range": "bytes=0-9"})
    assert resp.status == 200 and int(resp.headers["content-length"]) == len(LARGE)
    assert resp.body == b""


def test_the_chat_app_js_goes_out_gzipped_and_is_compressed_once(cdn_server):
    ae = {"Accept-Encoding": "gzip, deflate, br"}
    plain = get(cdn_server, "/app.js")
    assert plain.body == APP_JS_OF_THE_CHAT
    assert plain.headers["vary"] == "Accept-Encoding"
    for _ in range(3):
        resp = get(cdn_server, "/app.js", headers=ae)
        assert resp.status == 200, resp
        assert resp.headers["content-encoding"] == "gzip"
        assert resp.headers["vary"] == "Accept-Encoding"
        assert int(resp.headers["content-length"]) == len(resp.body)
        assert len(resp.body) < len(APP_JS_OF_THE_CHAT) // 2
        assert gzip.decompress(resp.body) == APP_JS_OF_THE_CHAT
        assert resp.headers["etag"] != plain.headers["etag"]
        assert "accept-ranges" not in resp.headers
    assert metrics(cdn_server)["moonwire_static_gzipped_total"] == 1
    # 304 for the gzip variant's tag, and that tag names nothing without gzip.
    etag = resp.headers["etag"]
    assert get(cdn_server, "/app.js", headers={**ae, "If-None-Match": etag}).status == 304
    assert get(cdn_server, "/app.js", headers={"If-None-Match": etag}).status == 200
    # HEAD says the same.
    h = head_raw(cdn_server, "/app.js", headers=ae)
    assert h.headers["content-length"] == resp.headers["content-length"]
    assert h.headers["content-encoding"] == "gzip"
    # Types gzip does not shrink go out as they are, with no Vary.
    for path in ("/logo.png", "/blob.bin", "/font.woff2"):
        resp = get(cdn_server, path, headers={"Accept-Encoding": "gzip"})
        assert "content-encoding" not in resp.headers, path
        assert "vary" not in resp.headers, path


def test_urllib_gets_the_gzipped_chat_page(cdn_server):
    req = urllib.request.Request(cdn_server.http + "/app.js",
                                 headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(r.read()) == APP_JS_OF_THE_CHAT


def test_a_streamed_compressible_file_goes_out_as_it_is(cdn_server):
    resp = get(cdn_server, "/large.txt", headers={"Accept-Encoding": "gzip"}, timeout=10)
    assert resp.status == 200 and "content-encoding" not in resp.headers
    assert resp.body == b"streamed text " * 200000
    m = metrics(cdn_server)
    assert m["moonwire_static_streamed_total"] == 1 and m["moonwire_static_gzipped_total"] == 0


# Streaming large files -------------------------------------------------------------------------


def test_a_large_file_is_streamed_intact_and_never_cached(cdn_server):
    for _ in range(3):
        with urllib.request.urlopen(cdn_server.http + "/large.bin", timeout=10) as r:
            assert r.read() == LARGE
    m = metrics(cdn_server)
    assert m["moonwire_static_streamed_total"] == 3
    assert m["moonwire_static_cache_bytes"] < len(LARGE)
    assert m["moonwire_static_open_files"] == 0
    etag = get(cdn_server, "/large.bin", headers={"Range": "bytes=0-0"}).headers["etag"]
    assert get(cdn_server, "/large.bin", headers={"If-None-Match": etag}).status == 304


def test_max_cached_file_decides_what_is_streamed(start_server, cdn_site):
    config = (f"return {{ static = {{ root = {lua_str(cdn_site)},"
              f" max_cached_file = 100 }} }}")
    server = start_server("scripts/echo.lua", config=config)
    assert get(server, "/index.html").body == INDEX  # 58 bytes: cached
    assert get(server, "/blob.bin").body == BLOB  # streamed
    m = metrics(server)
    assert m["moonwire_static_streamed_total"] == 1
    assert m["moonwire_static_cache_bytes"] == len(INDEX)


def test_a_file_changed_while_streamed_is_cut_short_and_logged(start_server, cdn_site):
    config = (f"return {{ static = {{ root = {lua_str(cdn_site)} }},"
              f" limits = {{ close_timeout = 10 }} }}")
    server = start_server("scripts/echo.lua", config=config)
    with httpraw.connect(server.port) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(b"GET /large.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        buf, end = httpraw.read_head(s)
        with open(cdn_site / "large.bin", "ab") as f:
            f.write(b"more")
        _, got = httpraw.wait_eof(s, timeout=15)
        assert len(buf) - end - 4 + len(got) < len(LARGE), "the body stops short"
    server.wait_log("changed while it was sent")
    assert metrics(server)["moonwire_static_cut_total"] == 1
    assert_served(server)


def test_max_open_files_refuses_one_more_stream_with_503(start_server, cdn_site):
    config = (f"return {{ static = {{ root = {lua_str(cdn_site)}, max_open_files = 2 }},"
              f" limits = {{ close_timeout = 10 }} }}")
    server = start_server("scripts/echo.lua", config=config)
    held = []
    try:
        for _ in range(2):
            s = httpraw.connect(server.port)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(b"GET /large.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            httpraw.read_head(s)
            held.append(s)
        resp = get(server, "/large.bin")
        assert resp.status == 503, resp
        assert resp.headers["retry-after"] == "1"
        assert get(server, "/blob.bin").body == BLOB, "cached files are still served"
        assert metrics(server)["moonwire_static_busy_total"] == 1
        server.wait_log("static.max_open_files")
    finally:
        for s in held:
            s.close()
    wait_until(lambda: metrics(server)["moonwire_static_open_files"] == 0, timeout=5,
               what="the streams to end")
    assert get(server, "/large.bin", timeout=10).body == LARGE


def test_a_large_file_streams_over_tls(start_server, cdn_site, tmp_path):
    from test_tls import make_cert, client_ctx
    cert, key = make_cert(tmp_path, "server")
    tls_port = free_port()
    server = start_server("scripts/echo.lua",
                          args=["--static", str(cdn_site), "--listen-tls", f"127.0.0.1:{tls_port}",
                                "--cert", str(cert), "--key", str(key)])
    wait_until(lambda: socket.create_connection(("127.0.0.1", tls_port), 0.2).close() or True,
               what="the TLS listener")
    conn = http.client.HTTPSConnection("127.0.0.1", tls_port, timeout=10, context=client_ctx())
    for path, body in (("/large.bin", LARGE), ("/style.css", CSS), ("/large.bin", LARGE)):
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.read() == body and not resp.will_close
    conn.request("GET", "/large.bin", headers={"Range": "bytes=-100000"})
    resp = conn.getresponse()
    assert resp.status == 206 and resp.read() == LARGE[-100000:]
    conn.close()
    assert metrics(server)["moonwire_static_streamed_total"] == 3
