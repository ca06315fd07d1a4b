"""Raw HTTP and minimal WebSocket helpers for the e2e tests that must send
malformed handshakes, read exact HTTP replies, or play a peer that does not
behave (never answers a ping or a close). Well-behaved clients use Python's
websockets instead.

Every read here is bounded by a timeout.
"""
import base64
import hashlib
import os
import socket
import struct
import time

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA


def accept_for(key):
    """The Sec-WebSocket-Accept value RFC 6455 section 4.2.2 derives from key."""
    digest = hashlib.sha1((key + WS_GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def new_key():
    return base64.b64encode(os.urandom(16)).decode("ascii")


class Response:
    """A parsed HTTP reply: status, reason, headers (lowercased names), body."""

    def __init__(self, raw, head_end):
        self.raw = raw
        head = raw[:head_end].decode("latin-1")
        lines = head.split("\r\n")
        self.status_line = lines[0]
        parts = lines[0].split(" ", 2)
        self.version = parts[0]
        self.status = int(parts[1])
        self.reason = parts[2] if len(parts) > 2 else ""
        self.header_list = []
        for line in lines[1:]:
            if not line:
                continue
            name, _, value = line.partition(":")
            self.header_list.append((name.strip().lower(), value.strip()))
        self.headers = {}
        for name, value in self.header_list:
            self.headers.setdefault(name, value)
        self.body = raw[head_end + 4:]

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        return f"<Response {self.status_line!r} {self.headers!r} {self.body[:200]!r}>"


def connect(port, host="127.0.0.1", timeout=5.0):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect((host, port))
    return s


def read_head(sock, timeout=5.0, buf=b""):
    """Reads until the end of an HTTP head. Returns (bytes so far, index of the
    blank line). Raises AssertionError on EOF or timeout before that."""
    deadline = time.monotonic() + timeout
    while b"\r\n\r\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no complete HTTP head within {timeout}s; got {buf!r}")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            raise AssertionError(f"no complete HTTP head within {timeout}s; got {buf!r}")
        if not chunk:
            raise AssertionError(f"connection closed before a complete HTTP head; got {buf!r}")
        buf += chunk
    return buf, buf.index(b"\r\n\r\n")


def read_response(sock, timeout=5.0, head_only=False):
    """Reads one HTTP reply; the body by Content-Length (or to EOF without one).
    A 1xx, 204 or 304 reply never has a body (RFC 9112 section 6.3)."""
    deadline = time.monotonic() + timeout
    buf, end = read_head(sock, timeout)
    resp = Response(buf, end)
    if head_only or resp.status < 200 or resp.status in (204, 304):
        return resp
    length = resp.headers.get("content-length")
    want = int(length) if length is not None else None
    while want is None or len(resp.body) < want:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"HTTP body incomplete after {timeout}s: {resp!r}")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            raise AssertionError(f"HTTP body incomplete after {timeout}s: {resp!r}")
        except ConnectionResetError:
            break
        if not chunk:
            break
        buf += chunk
        resp = Response(buf, end)
    return resp


def wait_eof(sock, timeout=5.0):
    """Reads and discards until the peer closes. Returns (seconds waited, the
    bytes read); raises AssertionError when the connection is still open after
    timeout. A reset counts as closed."""
    start = time.monotonic()
    deadline = start + timeout
    got = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"the server did not close the connection within {timeout}s"
                                 f" (read {got[:200]!r})")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - start, got
        if not chunk:
            return time.monotonic() - start, got
        got += chunk


def request(port, data, timeout=5.0, host="127.0.0.1"):
    """Sends raw bytes, reads one reply, closes. Returns a Response."""
    with connect(port, host, timeout) as s:
        s.sendall(data)
        return read_response(s, timeout)


def get(port, path, headers=None, method="GET", timeout=5.0, host="127.0.0.1"):
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return request(port, data, timeout, host)


def upgrade_bytes(path="/", key=None, version="13", method="GET", proto="HTTP/1.1",
                  upgrade="websocket", connection="Upgrade", extra=None, omit=()):
    """A WebSocket upgrade request; pass None or list a name in omit to drop a header."""
    headers = [
        ("Host", "localhost"),
        ("Upgrade", upgrade),
        ("Connection", connection),
        ("Sec-WebSocket-Key", key if key is not None else new_key()),
        ("Sec-WebSocket-Version", version),
    ]
    headers += list((extra or {}).items())
    lines = [f"{method} {path} {proto}"]
    lines += [f"{k}: {v}" for k, v in headers if v is not None and k not in omit]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# Minimal WebSocket framing, for peers that must misbehave -------------------------


class RawWS:
    """A client socket after a 101, with a frame reader for the server's frames."""

    def __init__(self, sock, response, leftover=b""):
        self.sock = sock
        self.response = response
        self.buf = leftover

    def _fill(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no frame in time")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError("no frame in time")
            if not chunk:
                raise EOFError("connection closed by the server")
            self.buf += chunk

    def recv_frame(self, timeout=5.0):
        """Returns (fin, opcode, payload) of the next server frame. Raises
        TimeoutError, or EOFError when the server closed the connection."""
        deadline = time.monotonic() + timeout
        self._fill(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        assert b1 & 0x80 == 0, "server frames must not be masked"
        n, pos = b1 & 0x7F, 2
        if n == 126:
            self._fill(4, deadline)
            n, pos = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            self._fill(10, deadline)
            n, pos = struct.unpack("!Q", self.buf[2:10])[0], 10
        self._fill(pos + n, deadline)
        payload = self.buf[pos:pos + n]
        self.buf = self.buf[pos + n:]
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def send_frame(self, opcode, payload=b"", fin=True):
        mask = os.urandom(4)
        head = bytes([(0x80 if fin else 0) | opcode])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def send_text(self, text):
        self.send_frame(OP_TEXT, text.encode("utf-8"))

    def send_close(self, code=None, reason=b""):
        payload = b"" if code is None else struct.pack("!H", code) + reason
        self.send_frame(OP_CLOSE, payload)

    def wait_eof(self, timeout=5.0):
        if self.buf:
            got, self.buf = self.buf, b""
        else:
            got = b""
        waited, more = wait_eof(self.sock, timeout)
        return waited, got + more

    def close(self):
        self.sock.close()


def parse_close(payload):
    """(code, reason) of a close frame payload; (None, b'') when empty."""
    if not payload:
        return None, b""
    return struct.unpack("!H", payload[:2])[0], payload[2:]


def ws_connect(port, path="/", host="127.0.0.1", timeout=5.0, extra=None):
    """A raw WebSocket client: sends a valid upgrade and checks the 101."""
    key = new_key()
    s = connect(port, host, timeout)
    s.sendall(upgrade_bytes(path, key=key, extra=extra))
    buf, end = read_head(s, timeout)
    resp = Response(buf[:end + 4], end)
    assert resp.status == 101, resp
    assert resp.headers.get("sec-websocket-accept") == accept_for(key), resp
    return RawWS(s, resp, buf[end + 4:])
