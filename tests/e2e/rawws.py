"""A raw WebSocket client for conformance tests.

It sends frames built here by hand from bytes, so a test can send what a
well-behaved client never would: reserved bits, reserved opcodes, fragmented
control frames, oversized control payloads, invalid UTF-8, a message cut at
any byte. The other direction is judged by an implementation we did not write:
every byte the server sends is parsed by the websockets library's own frame
parser (websockets.frames.Frame.parse on a websockets.streams.StreamReader),
which rejects reserved bits, unknown opcodes, fragmented or oversized control
frames and masked server frames; close payloads go through
websockets.frames.Close.parse, which rejects bad codes and non-UTF-8 reasons.

Every wait is bounded: each read has a deadline, and helpers fail the test
with a message that says what was expected and what came instead.
"""
import base64
import collections
import hashlib
import os
import socket
import struct
import time

from websockets.exceptions import ProtocolError
from websockets.frames import Close, Frame
from websockets.streams import StreamReader

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA

OP_NAMES = {OP_CONT: "CONT", OP_TEXT: "TEXT", OP_BINARY: "BINARY",
            OP_CLOSE: "CLOSE", OP_PING: "PING", OP_PONG: "PONG"}


def mask(data, key):
    """XORs data with the 4-byte masking key (RFC 6455 section 5.3)."""
    n = len(data)
    if n == 0:
        return b""
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


def frame(opcode, payload=b"", fin=True, rsv=0, masked=True, key=None, length=None):
    """The bytes of one client frame.

    rsv is the 3-bit RSV1..RSV3 field (0..7). length overrides the declared
    payload length (to lie about it); the 7/16/64-bit form is always minimal
    for the declared length. key is the masking key (random by default).
    """
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    declared = len(payload) if length is None else length
    head = bytearray()
    head.append((0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0x0F))
    mbit = 0x80 if masked else 0
    if declared < 126:
        head.append(mbit | declared)
    elif declared <= 0xFFFF:
        head.append(mbit | 126)
        head += struct.pack("!H", declared)
    else:
        head.append(mbit | 127)
        head += struct.pack("!Q", declared)
    if not masked:
        return bytes(head) + payload
    key = os.urandom(4) if key is None else key
    return bytes(head) + key + mask(payload, key)


def close_payload(code=None, reason=b""):
    """A close frame payload: nothing, or a 2-byte code and a reason (bytes or str)."""
    if code is None:
        return b""
    if isinstance(reason, str):
        reason = reason.encode("utf-8")
    return struct.pack("!H", code) + reason


def describe(f):
    """A short human description of a parsed frame."""
    if f is None:
        return "nothing"
    name = OP_NAMES.get(f.opcode, str(f.opcode))
    data = bytes(f.data)
    shown = data[:40] + (b"..." if len(data) > 40 else b"")
    extra = ""
    if f.opcode == OP_CLOSE and len(data) >= 2:
        extra = f" code={struct.unpack('!H', data[:2])[0]} reason={data[2:80]!r}"
    return f"{name}{'' if f.fin else ' (fin=0)'} frame, {len(data)} bytes {shown!r}{extra}"


class ServerClosed(AssertionError):
    """The server closed the TCP connection while the test expected a frame."""


class RawWS:
    """One raw connection: handshake, hand-built frames out, parsed frames in."""

    def __init__(self, port, host="127.0.0.1", path="/", timeout=5.0):
        self.host, self.port = host, port
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = StreamReader()
        self.parser = None
        self.partial = 0           # bytes of the frame being parsed consumed so far
        self.frames = collections.deque()
        self.eof = False           # the server closed its side (FIN or RST)
        self.reset = False         # ... by a reset
        self.eof_at = None
        self.send_error = None     # first error from send(), if the server went away
        self.response_headers = {}
        self._handshake(path, timeout)

    # -- context manager -------------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.abort()

    def abort(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # -- opening handshake -----------------------------------------------------------
    def _handshake(self, path, timeout):
        key = base64.b64encode(os.urandom(16)).decode()
        request = (f"GET {path} HTTP/1.1\r\n"
                   f"Host: {self.host}:{self.port}\r\n"
                   "Upgrade: websocket\r\n"
                   "Connection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\n"
                   "Sec-WebSocket-Version: 13\r\n"
                   "\r\n").encode()
        self.sock.sendall(request)
        deadline = time.monotonic() + timeout
        buf = b""
        while b"\r\n\r\n" not in buf:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no complete handshake response within {timeout}s: {buf!r}"
            assert len(buf) < 16384, f"handshake response too long: {buf[:200]!r}"
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(4096)
            assert chunk, f"server closed during the handshake: {buf!r}"
            buf += chunk
        head, rest = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = lines[0].split(" ", 2)
        assert len(status) >= 2 and status[0] == "HTTP/1.1" and status[1] == "101", \
            f"expected HTTP/1.1 101, got {lines[0]!r}"
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self.response_headers = headers
        expected = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
        assert headers.get("sec-websocket-accept") == expected, \
            f"bad Sec-WebSocket-Accept {headers.get('sec-websocket-accept')!r}, want {expected!r}"
        assert headers.get("upgrade", "").lower() == "websocket", f"bad Upgrade in {headers}"
        assert "upgrade" in [t.strip().lower() for t in headers.get("connection", "").split(",")], \
            f"bad Connection in {headers}"
        assert "sec-websocket-extensions" not in headers, \
            f"server accepted an extension nobody offered: {headers}"
        if rest:
            self._feed(rest)

    # -- sending ---------------------------------------------------------------------
    def send(self, data, chop=None, delay=0.0):
        """Writes raw bytes, all at once or in chops of `chop` bytes with `delay`
        seconds between chops. A send that fails because the server already went
        away is recorded in send_error (the reads decide the outcome)."""
        try:
            if chop is None:
                self.sock.settimeout(30)
                self.sock.sendall(data)
                return
            self.sock.settimeout(30)
            for i in range(0, len(data), chop):
                self.sock.sendall(data[i:i + chop])
                if delay:
                    time.sleep(delay)
        except (BrokenPipeError, ConnectionResetError) as exc:
            if self.send_error is None:
                self.send_error = exc

    def send_frame(self, opcode, payload=b"", fin=True, rsv=0, chop=None, delay=0.0, **kw):
        self.send(frame(opcode, payload, fin=fin, rsv=rsv, **kw), chop=chop, delay=delay)

    def send_close(self, code=None, reason=b"", **kw):
        self.send_frame(OP_CLOSE, close_payload(code, reason), **kw)

    # -- receiving -------------------------------------------------------------------
    def _read_exact(self, n):
        data = yield from self.reader.read_exact(n)
        self.partial += len(data)
        return data

    def _pump(self):
        while True:
            if self.parser is None:
                self.parser = Frame.parse(self._read_exact, mask=False, max_size=None,
                                          extensions=None)
            try:
                next(self.parser)
            except StopIteration as done:
                self.frames.append(done.value)
                self.parser = None
                self.partial = 0
                continue
            except EOFError:
                self.parser = None
                truncated = self.partial + len(self.reader.buffer)
                assert truncated == 0, \
                    f"server closed TCP in the middle of a frame ({truncated} bytes of it)"
                return
            except ProtocolError as exc:
                raise AssertionError(f"server sent an invalid frame: {exc}") from exc
            return

    def _feed(self, data):
        self.reader.feed_data(data)
        self._pump()

    def _feed_eof(self, reset=False):
        if self.eof:
            return
        self.eof = True
        self.reset = reset
        self.eof_at = time.monotonic()
        self.reader.feed_eof()
        self._pump()

    def _fill(self, timeout):
        """One read of at most timeout seconds. Returns False on timeout."""
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            return False
        except ConnectionResetError:
            self._feed_eof(reset=True)
            return True
        if data:
            self._feed(data)
        else:
            self._feed_eof()
        return True

    def next_frame(self, timeout=2.0):
        """The next frame from the server, or None if none came within timeout.
        Raises ServerClosed if the server closed TCP first."""
        deadline = time.monotonic() + timeout
        while not self.frames:
            if self.eof:
                how = " (reset)" if self.reset else ""
                raise ServerClosed(f"server closed the TCP connection{how} before a frame")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._fill(remaining)
        return self.frames.popleft()

    def recv_frame(self, timeout=2.0, what="a frame"):
        f = self.next_frame(timeout)
        assert f is not None, f"expected {what}, got nothing within {timeout}s"
        return f

    def recv_message(self, timeout=5.0, what="a message"):
        """Reads one data message (reassembling continuation frames). Any
        control frame before or inside it fails the test. Returns (opcode, bytes)."""
        deadline = time.monotonic() + timeout
        first = self.recv_frame(max(deadline - time.monotonic(), 0), what)
        assert first.opcode in (OP_TEXT, OP_BINARY), f"expected {what}, got {describe(first)}"
        parts = [bytes(first.data)]
        last = first
        while not last.fin:
            last = self.recv_frame(max(deadline - time.monotonic(), 0),
                                   f"the continuation of {what}")
            assert last.opcode == OP_CONT, \
                f"expected a continuation of {what}, got {describe(last)}"
            parts.append(bytes(last.data))
        return first.opcode, b"".join(parts)

    # -- expectations ----------------------------------------------------------------
    def expect_echo(self, payload, opcode=OP_TEXT, timeout=5.0):
        """The next message is `payload`, byte for byte, of the given kind."""
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        kind = OP_NAMES[opcode]
        op, data = self.recv_message(timeout, f"the echo of a {len(payload)}-byte {kind} message")
        assert op == opcode, f"expected a {kind} echo, got {OP_NAMES[op]}"
        if data != payload:
            at = next((i for i, (a, b) in enumerate(zip(data, payload)) if a != b),
                      min(len(data), len(payload)))
            raise AssertionError(
                f"echo differs: sent {len(payload)} bytes, got {len(data)}; first difference "
                f"at byte {at}: sent {payload[at:at + 16]!r}, got {data[at:at + 16]!r}")

    def expect_pong(self, payload, timeout=2.0):
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        f = self.recv_frame(timeout, f"a PONG with {payload[:40]!r}")
        assert f.opcode == OP_PONG, f"expected a PONG with {payload[:40]!r}, got {describe(f)}"
        assert bytes(f.data) == payload, \
            f"PONG payload differs: sent {payload!r}, got {bytes(f.data)!r}"

    def expect_nothing(self, duration=0.25):
        """Nothing arrives, and the connection stays open, for `duration` seconds."""
        try:
            f = self.next_frame(duration)
        except ServerClosed as exc:
            raise AssertionError(f"expected nothing for {duration}s, but {exc}") from None
        assert f is None, f"expected nothing for {duration}s, got {describe(f)}"

    def expect_tcp_close(self, timeout=2.0):
        """The server closes the TCP connection within timeout seconds and sends
        nothing more before it does."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            assert not self.frames, f"expected the TCP close, got {describe(self.frames[0])}"
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"server did not close the TCP connection within {timeout}s"
            self._fill(remaining)
        assert not self.frames, \
            f"server sent after its close frame: {describe(self.frames[0])}"

    def expect_close(self, code, timeout=2.0, tcp_timeout=2.0):
        """The next frame is a close frame whose code is `code` (or one of the
        codes in a tuple; None means an empty close payload), and the server then
        closes TCP within tcp_timeout seconds without our reply. Returns the Close."""
        codes = code if isinstance(code, tuple) else (code,)
        want = " or ".join("no code" if c is None else str(c) for c in codes)
        try:
            f = self.next_frame(timeout)
        except ServerClosed as exc:
            raise AssertionError(f"expected a close frame with {want}, but {exc}") from None
        assert f is not None, f"expected a close frame with {want}, got nothing within {timeout}s"
        assert f.opcode == OP_CLOSE, f"expected a close frame with {want}, got {describe(f)}"
        data = bytes(f.data)
        try:
            close = Close.parse(data)
        except (ProtocolError, UnicodeDecodeError) as exc:
            raise AssertionError(f"server sent an invalid close payload {data!r}: {exc}") from exc
        got = None if len(data) == 0 else close.code
        assert got in codes, \
            f"expected close code {want}, got {got} (reason {close.reason!r})"
        self.expect_tcp_close(tcp_timeout)
        return close

    def close_handshake(self, code=1000, reason=b"", timeout=2.0):
        """A clean close started by us: we send close(code), the server echoes
        close(code) and closes TCP."""
        self.send_close(code, reason)
        return self.expect_close(code, timeout=timeout)
