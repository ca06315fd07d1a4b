"""RFC 6455 conformance of scripts/echo.lua, case by case after the Autobahn
TestSuite (fuzzingclient) groups 1 framing, 2 pings/pongs, 3 reserved bits,
4 opcodes, 5 fragmentation, 6 UTF-8, 7 close handling and 9 limits.

Each test id is the Autobahn case id ("6.4.1", "7.9.3"), so a failure names
the case. The cases follow Autobahn's published descriptions, judged strictly:

- a valid message comes back byte for byte, as the same kind;
- a ping is answered by a pong with the same payload; a pong is ignored;
- a protocol violation gets a close frame with 1002, invalid UTF-8 with 1007
  (a close frame is required: DESIGN.md promises a clear close code);
- after its close frame the server sends nothing more and closes TCP within
  2 s, without waiting for our reply;
- where Autobahn says "fail fast", the close must come after the invalid
  prefix, before the rest of the message is sent;
- where Autobahn accepts a weaker "non-strict" outcome (e.g. no echo of the
  valid message sent before a bad frame), the strict one is required.

Malformed traffic goes through tests/e2e/rawws.py (hand-built frames out, the
websockets library's frame parser in); well-formed traffic of group 1 and 9
goes through the websockets client library. All cases share one server.
"""
import asyncio
import time

import pytest
import websockets

from conftest import Server
from rawws import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RawWS,
                   close_payload, describe, frame)

KIB = 1024
MIB = 1024 * 1024


# -- shared server -----------------------------------------------------------------

@pytest.fixture(scope="module")
def server():
    srv = Server(script="scripts/echo.lua")
    yield srv
    code = srv.stop()
    srv.check_clean()
    assert code == 0, f"moonwire exited with {code}:\n{srv.log()[-4000:]}"


@pytest.fixture(autouse=True)
def server_survives(server):
    """A case that kills the server fails by name, not the cases after it."""
    yield
    assert server.proc.poll() is None, \
        f"moonwire died during this case:\n{server.log()[-4000:]}"


def connect(server):
    return RawWS(server.port)


def run(coro, timeout=60.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def check_same(got, want, what="echo"):
    """Compares without letting pytest print multi-megabyte diffs."""
    if type(got) is not type(want):
        raise AssertionError(f"{what}: sent {type(want).__name__}, got {type(got).__name__}")
    if got != want:
        at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b),
                  min(len(got), len(want)))
        raise AssertionError(f"{what} differs: sent {len(want)}, got {len(got)}; first "
                             f"difference at {at}: sent {want[at:at + 16]!r}, "
                             f"got {got[at:at + 16]!r}")


# -- a tiny script language for the raw cases --------------------------------------
#
# A case is a list of steps:
#   ("send", [frame bytes, ...], chop)   chop: "one" (one write), "frame" (one
#                                         write per frame), "octet" (one per byte)
#   ("echo", payload, opcode)             the next message is this one
#   ("pong", payload)                     the next frame is this pong
#   ("nothing", seconds)                  nothing arrives meanwhile
#   ("close", code)                       the next frame is close(code), then TCP closes
#   ("clean",)                            we close with 1000: echoed, then TCP closes

def T(payload, fin=True, rsv=0):
    return frame(OP_TEXT, payload, fin=fin, rsv=rsv)


def B(payload, fin=True, rsv=0):
    return frame(OP_BINARY, payload, fin=fin, rsv=rsv)


def C(payload, fin=True, rsv=0):
    return frame(OP_CONT, payload, fin=fin, rsv=rsv)


def PING(payload=b"", fin=True, rsv=0):
    return frame(OP_PING, payload, fin=fin, rsv=rsv)


def PONG(payload=b"", fin=True, rsv=0):
    return frame(OP_PONG, payload, fin=fin, rsv=rsv)


def CLOSE(code=None, reason=b"", rsv=0):
    return frame(OP_CLOSE, close_payload(code, reason), rsv=rsv)


def send(frames, chop="one"):
    return ("send", list(frames), chop)


def echo(payload, opcode=OP_TEXT):
    return ("echo", payload, opcode)


def pong(payload):
    return ("pong", payload)


def closed(code):
    return ("close", code)


CLEAN = ("clean",)


def send_frames(ws, frames, chop):
    if chop == "one":
        ws.send(b"".join(frames))
    elif chop == "frame":
        for f in frames:
            ws.send(f)
            time.sleep(0.005)
    elif chop == "octet":
        data = b"".join(frames)
        ws.send(data, chop=1, delay=0.001 if len(data) <= 512 else 0.0)
    else:
        raise ValueError(chop)


def play(server, steps):
    with connect(server) as ws:
        for step in steps:
            kind = step[0]
            if kind == "send":
                send_frames(ws, step[1], step[2])
            elif kind == "echo":
                ws.expect_echo(step[1], step[2])
            elif kind == "pong":
                ws.expect_pong(step[1])
            elif kind == "nothing":
                ws.expect_nothing(step[1])
            elif kind == "close":
                ws.expect_close(step[1])
            elif kind == "clean":
                ws.close_handshake(1000)
            else:
                raise ValueError(kind)


def cases(table):
    """pytest params from {id: steps}."""
    return [pytest.param(steps, id=cid) for cid, steps in table.items()]


HELLO = b"Hello, world!"


# == 1 Framing ======================================================================

FRAMING_SIZES = [0, 125, 126, 127, 128, 65535, 65536]


@pytest.mark.parametrize("binary,size", [
    pytest.param(b, s, id=f"1.{2 if b else 1}.{i}")
    for b in (False, True) for i, s in enumerate(FRAMING_SIZES, start=1)])
def test_1_framing(server, binary, size):
    """1.1.1-1.1.7 text and 1.2.1-1.2.7 binary messages of 0..65536 bytes,
    through the websockets client library."""
    payload = b"\xfe" * size if binary else "*" * size

    async def go():
        async with websockets.connect(server.url, max_size=None, compression=None,
                                      ping_interval=None, open_timeout=5,
                                      close_timeout=5) as ws:
            await ws.send(payload)
            got = await asyncio.wait_for(ws.recv(), 10)
            check_same(got, payload)
        assert ws.close_code == 1000, f"close code {ws.close_code}"
    run(go())


@pytest.mark.parametrize("opcode,payload", [
    pytest.param(OP_TEXT, b"*" * 65536, id="1.1.8"),
    pytest.param(OP_BINARY, b"\xfe" * 65536, id="1.2.8"),
])
def test_1_framing_chopped(server, opcode, payload):
    """1.1.8 / 1.2.8: a 65536-byte message written in chops of 997 octets."""
    with connect(server) as ws:
        ws.send(frame(opcode, payload), chop=997, delay=0.001)
        ws.expect_echo(payload, opcode)
        ws.close_handshake()


# == 2 Pings / Pongs ================================================================

PING_BIN = b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff"
TEN_PINGS = [f"payload-{i}".encode() for i in range(10)]

GROUP2 = {
    "2.1": [send([PING()]), pong(b""), CLEAN],
    "2.2": [send([PING(HELLO)]), pong(HELLO), CLEAN],
    "2.3": [send([PING(PING_BIN)]), pong(PING_BIN), CLEAN],
    "2.4": [send([PING(b"\xfe" * 125)]), pong(b"\xfe" * 125), CLEAN],
    "2.5": [send([PING(b"\xfe" * 126)]), closed(1002)],
    "2.6": [send([PING(b"\xfe" * 125)], "octet"), pong(b"\xfe" * 125), CLEAN],
    # Unsolicited pongs get no answer: our close is answered first.
    "2.7": [send([PONG()]), CLEAN],
    "2.8": [send([PONG(b"unsolicited pong payload")]), CLEAN],
    "2.9": [send([PONG(b"unsolicited pong payload"), PING(b"ping payload")]),
            pong(b"ping payload"), CLEAN],
    "2.10": [send([PING(p) for p in TEN_PINGS])] + [pong(p) for p in TEN_PINGS] + [CLEAN],
    "2.11": [send([PING(p) for p in TEN_PINGS], "octet")] + [pong(p) for p in TEN_PINGS]
            + [CLEAN],
}


@pytest.mark.parametrize("steps", cases(GROUP2))
def test_2_pings(server, steps):
    play(server, steps)


# == 3 Reserved bits ================================================================
# The valid message before the bad frame must be echoed (strict), the bad frame
# fails the connection with 1002, and the ping after it gets no pong.

GROUP3 = {
    "3.1": [send([T(HELLO, rsv=1)]), closed(1002)],
    "3.2": [send([T(HELLO), T(HELLO, rsv=2), PING()]), echo(HELLO), closed(1002)],
    "3.3": [send([T(HELLO), T(HELLO, rsv=3), PING()], "frame"), echo(HELLO), closed(1002)],
    "3.4": [send([T(HELLO), T(HELLO, rsv=4), PING()], "octet"), echo(HELLO), closed(1002)],
    "3.5": [send([B(PING_BIN, rsv=5)]), closed(1002)],
    "3.6": [send([PING(HELLO, rsv=6)]), closed(1002)],
    "3.7": [send([CLOSE(rsv=7)]), closed(1002)],
}


@pytest.mark.parametrize("steps", cases(GROUP3))
def test_3_reserved_bits(server, steps):
    play(server, steps)


# == 4 Opcodes ======================================================================

def _group4():
    table = {}
    for group, ops in ((1, (3, 4, 5, 6, 7)), (2, (11, 12, 13, 14, 15))):
        a, b, c, d, e = ops
        table[f"4.{group}.1"] = [send([frame(a)]), closed(1002)]
        table[f"4.{group}.2"] = [send([frame(b, b"reserved opcode payload")]), closed(1002)]
        table[f"4.{group}.3"] = [send([T(HELLO), frame(c), PING()]), echo(HELLO), closed(1002)]
        table[f"4.{group}.4"] = [send([T(HELLO), frame(d, HELLO), PING()]), echo(HELLO),
                                 closed(1002)]
        table[f"4.{group}.5"] = [send([T(HELLO), frame(e, HELLO), PING()], "octet"),
                                 echo(HELLO), closed(1002)]
    return table


@pytest.mark.parametrize("steps", cases(_group4()))
def test_4_opcodes(server, steps):
    play(server, steps)


# == 5 Fragmentation ================================================================

F1, F2, F3, F4, F5 = (f"fragment{i}".encode() for i in range(1, 6))
NONCONT = b"non-continuation payload"


def _group5():
    t = {}
    t["5.1"] = [send([PING(F1, fin=False), C(F2)]), closed(1002)]
    t["5.2"] = [send([PONG(F1, fin=False), C(F2)]), closed(1002)]
    two = [T(F1, fin=False), C(F2)]
    t["5.3"] = [send(two), echo(F1 + F2), CLEAN]
    t["5.4"] = [send(two, "octet"), echo(F1 + F2), CLEAN]
    t["5.5"] = [send(two, "frame"), echo(F1 + F2), CLEAN]
    with_ping = [T(F1, fin=False), PING(b"ping payload"), C(F2)]
    for cid, chop in (("5.6", "one"), ("5.7", "octet"), ("5.8", "frame")):
        t[cid] = [send(with_ping, chop), pong(b"ping payload"), echo(F1 + F2), CLEAN]
    for base, fin in ((9, True), (12, False)):
        bad = [C(NONCONT, fin=fin), T(HELLO)]
        t[f"5.{base}"] = [send(bad), closed(1002)]
        t[f"5.{base + 1}"] = [send(bad, "frame"), closed(1002)]
        t[f"5.{base + 2}"] = [send(bad, "octet"), closed(1002)]
    t["5.15"] = [send([T(F1, fin=False), C(F2), C(F3, fin=False), T(F4)]), echo(F1 + F2),
                 closed(1002)]
    t["5.16"] = [send([C(F1, fin=False), T(F2, fin=False), C(F3)] * 2), closed(1002)]
    t["5.17"] = [send([C(F1), T(F2, fin=False), C(F3)] * 2), closed(1002)]
    t["5.18"] = [send([T(F1, fin=False), T(F2)]), closed(1002)]
    # 5.19/5.20: the first ping is answered before the message is complete.
    for cid, chop in (("5.19", "one"), ("5.20", "frame")):
        t[cid] = [send([T(F1, fin=False), C(F2, fin=False), PING(b"pongme 1!")], chop),
                  pong(b"pongme 1!"),
                  send([C(F3, fin=False), C(F4, fin=False), PING(b"pongme 2!"), C(F5)], chop),
                  pong(b"pongme 2!"), echo(F1 + F2 + F3 + F4 + F5), CLEAN]
    return t


@pytest.mark.parametrize("steps", cases(_group5()))
def test_5_fragmentation(server, steps):
    play(server, steps)


# == 6 UTF-8 handling ===============================================================

KOSME = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"   # κόσμε
HELLO_UTF8 = "Hello-µ@ßöäüàá-UTF-8!!".encode()

GROUP6_EARLY = {
    "6.1.1": [send([T(b"")]), echo(b""), CLEAN],
    "6.1.2": [send([T(b"", fin=False), C(b"", fin=False), C(b"")]), echo(b""), CLEAN],
    "6.1.3": [send([T(b"", fin=False), C(b"middle frame payload", fin=False), C(b"")]),
              echo(b"middle frame payload"), CLEAN],
    "6.2.1": [send([T(HELLO_UTF8)]), echo(HELLO_UTF8), CLEAN],
    "6.2.2": [send([T("Hello-µ@ßöä".encode(), fin=False), C("üàá-UTF-8!!".encode())]),
              echo(HELLO_UTF8), CLEAN],
}


def one_octet_frames(payload):
    """A text message in frames of one octet each (6.2.3, 6.2.4, 6.3.2)."""
    n = len(payload)
    return [frame(OP_TEXT if i == 0 else OP_CONT, payload[i:i + 1], fin=(i == n - 1))
            for i in range(n)]


GROUP6_EARLY["6.2.3"] = [send(one_octet_frames(HELLO_UTF8), "frame"), echo(HELLO_UTF8), CLEAN]
GROUP6_EARLY["6.2.4"] = [send(one_octet_frames(KOSME), "frame"), echo(KOSME), CLEAN]

# 6.3: invalid exactly at byte 12 (0xa0 after 0xed would be a surrogate).
INVALID_AT_12 = KOSME + b"\xed\xa0\x80" + b"edited"
GROUP6_EARLY["6.3.1"] = [send([T(INVALID_AT_12)]), closed(1007)]
# 6.3.2 belongs to "fail fast": the octet frames up to byte 11 are fine; the
# frame with byte 12 must draw the close before the rest is sent.
_oct = one_octet_frames(INVALID_AT_12)
GROUP6_EARLY["6.3.2"] = [send(_oct[:12], "frame"), ("nothing", 0.25),
                         send(_oct[12:13]), closed(1007)]


@pytest.mark.parametrize("steps", cases(GROUP6_EARLY))
def test_6_utf8_fragments(server, steps):
    play(server, steps)


# 6.4: fail fast on invalid UTF-8 in fragments (6.4.1, 6.4.2) and within one
# frame cut into network chops (6.4.3, 6.4.4). Part 1 must be accepted (no close
# within the wait), part 2 must draw a 1007 close before part 3 is sent.
FAIL_FAST = KOSME + b"\xf4\x90\x80\x80" + b"edited"   # 0xf4 0x90: above U+10FFFF


@pytest.mark.parametrize("cut,mode", [
    pytest.param((11, 15), "frames", id="6.4.1"),
    pytest.param((12, 13), "frames", id="6.4.2"),
    pytest.param((11, 15), "chops", id="6.4.3"),
    pytest.param((12, 13), "chops", id="6.4.4"),
])
def test_6_4_fail_fast(server, cut, mode):
    a, b = cut
    p1, p2 = FAIL_FAST[:a], FAIL_FAST[a:b]
    with connect(server) as ws:
        if mode == "frames":
            part1, part2 = T(p1, fin=False), C(p2, fin=False)
        else:
            whole = T(FAIL_FAST)
            head = len(whole) - len(FAIL_FAST)
            part1, part2 = whole[:head + a], whole[head + a:head + b]
        ws.send(part1)
        ws.expect_nothing(0.3)        # Autobahn's "timeout A": part 1 is fine
        ws.send(part2)
        ws.expect_close(1007)         # before part 3 is ever sent


def utf8_sequences():
    """The 19 groups of Autobahn 6.5 .. 6.23: (group title, [(valid, bytes)]),
    after Markus Kuhn's UTF-8-test.txt."""
    groups = []
    groups.append(("Some valid UTF-8 sequences", [
        (True, b"hello\x24world"), (True, b"hello\xc2\xa2world"),
        (True, b"hello\xe2\x82\xacworld"), (True, b"hello\xf0\xa4\xad\xa2world"),
        (True, KOSME)]))
    prefixes = []
    for i in range(1, len(KOSME) + 1):
        try:
            KOSME[:i].decode("utf-8")
            prefixes.append((True, KOSME[:i]))
        except UnicodeDecodeError:
            prefixes.append((False, KOSME[:i]))
    groups.append(("All prefixes of a valid UTF-8 string with multi-byte code points", prefixes))
    groups.append(("First possible sequence of a certain length", [
        (True, b"\x00"), (True, b"\xc2\x80"), (True, b"\xe0\xa0\x80"),
        (True, b"\xf0\x90\x80\x80")]))
    groups.append(("First possible sequence length 5/6 (invalid code points)", [
        (False, b"\xf8\x88\x80\x80\x80"), (False, b"\xfc\x84\x80\x80\x80\x80")]))
    groups.append(("Last possible sequence of a certain length", [
        (True, b"\x7f"), (True, b"\xdf\xbf"), (True, b"\xef\xbf\xbf"),
        (True, b"\xf4\x8f\xbf\xbf")]))
    groups.append(("Last possible sequence length 4/5/6 (invalid code points)", [
        (False, b"\xf7\xbf\xbf\xbf"), (False, b"\xfb\xbf\xbf\xbf\xbf"),
        (False, b"\xfd\xbf\xbf\xbf\xbf\xbf")]))
    groups.append(("Other boundary conditions", [
        (True, b"\xed\x9f\xbf"), (True, b"\xee\x80\x80"), (True, b"\xef\xbf\xbd"),
        (True, b"\xf4\x8f\xbf\xbf"), (False, b"\xf4\x90\x80\x80")]))
    groups.append(("Unexpected continuation bytes", [
        (False, b"\x80"), (False, b"\xbf"), (False, b"\x80\xbf"), (False, b"\x80\xbf\x80"),
        (False, b"\x80\xbf\x80\xbf"), (False, b"\x80\xbf\x80\xbf\x80"),
        (False, b"\x80\xbf\x80\xbf\x80\xbf"), (False, bytes(range(0x80, 0xbf)))]))
    groups.append(("Lonely start characters", [
        (False, b"".join(bytes([i, 0x20]) for i in range(lo, hi)))
        for lo, hi in ((0xc0, 0xdf), (0xe0, 0xef), (0xf0, 0xf7), (0xf8, 0xfb), (0xfc, 0xfd))]))
    missing = [b"\xc0", b"\xe0\x80", b"\xf0\x80\x80", b"\xf8\x80\x80\x80",
               b"\xfc\x80\x80\x80\x80", b"\xdf", b"\xef\xbf", b"\xf7\xbf\xbf",
               b"\xfb\xbf\xbf\xbf", b"\xfd\xbf\xbf\xbf\xbf"]
    groups.append(("Sequences with last continuation byte missing",
                   [(False, m) for m in missing]))
    groups.append(("Concatenation of incomplete sequences", [(False, b"".join(missing))]))
    groups.append(("Impossible bytes", [
        (False, b"\xfe"), (False, b"\xff"), (False, b"\xfe\xfe\xff\xff")]))
    groups.append(("Examples of an overlong ASCII character", [
        (False, b"\xc0\xaf"), (False, b"\xe0\x80\xaf"), (False, b"\xf0\x80\x80\xaf"),
        (False, b"\xf8\x80\x80\x80\xaf"), (False, b"\xfc\x80\x80\x80\x80\xaf")]))
    groups.append(("Maximum overlong sequences", [
        (False, b"\xc1\xbf"), (False, b"\xe0\x9f\xbf"), (False, b"\xf0\x8f\xbf\xbf"),
        (False, b"\xf8\x87\xbf\xbf\xbf"), (False, b"\xfc\x83\xbf\xbf\xbf\xbf")]))
    groups.append(("Overlong representation of the NUL character", [
        (False, b"\xc0\x80"), (False, b"\xe0\x80\x80"), (False, b"\xf0\x80\x80\x80"),
        (False, b"\xf8\x80\x80\x80\x80"), (False, b"\xfc\x80\x80\x80\x80\x80")]))
    singles = [b"\xed\xa0\x80", b"\xed\xad\xbf", b"\xed\xae\x80", b"\xed\xaf\xbf",
               b"\xed\xb0\x80", b"\xed\xbe\x80", b"\xed\xbf\xbf"]
    groups.append(("Single UTF-16 surrogates", [(False, s) for s in singles]))
    pairs = [hi + lo for hi in (b"\xed\xa0\x80", b"\xed\xad\xbf", b"\xed\xae\x80", b"\xed\xaf\xbf")
             for lo in (b"\xed\xb0\x80", b"\xed\xbf\xbf")]
    groups.append(("Paired UTF-16 surrogates", [(False, p) for p in pairs]))
    nonchars = [b"\xef\xbf\xbe", b"\xef\xbf\xbf"]
    for z1 in (0xf0, 0xf1, 0xf2, 0xf3, 0xf4):
        for z2 in (0x8f, 0x9f, 0xaf, 0xbf):
            if z1 == 0xf4 and z2 != 0x8f:
                continue  # above U+10FFFF
            if z1 == 0xf0 and z2 == 0x8f:
                continue  # overlong
            for z3 in (0xbe, 0xbf):
                nonchars.append(bytes([z1, z2, 0xbf, z3]))
    groups.append(("Non-character code points (valid UTF-8)", [(True, n) for n in nonchars]))
    groups.append(("Unicode specials (i.e. replacement char)", [
        (True, bytes([0xef, 0xbf, b])) for b in range(0xb9, 0xc0)]))
    return groups


def _utf8_cases():
    params = []
    for gi, (title, seqs) in enumerate(utf8_sequences(), start=5):
        for si, (valid, payload) in enumerate(seqs, start=1):
            # Self-check of the table against Python's own decoder.
            try:
                payload.decode("utf-8")
                decodes = True
            except UnicodeDecodeError:
                decodes = False
            assert decodes == valid, (title, payload)
            params.append(pytest.param(valid, payload, id=f"6.{gi}.{si}"))
    return params


UTF8_CASES = _utf8_cases()
assert UTF8_CASES[-1].id == "6.23.7" and len([p for p in UTF8_CASES
                                              if p.id.startswith("6.22.")]) == 34


@pytest.mark.parametrize("valid,payload", UTF8_CASES)
def test_6_utf8_tables(server, valid, payload):
    """6.5.x .. 6.23.x: one text message in one frame; valid UTF-8 is echoed,
    invalid UTF-8 fails the connection with 1007."""
    with connect(server) as ws:
        ws.send(T(payload))
        if valid:
            ws.expect_echo(payload, OP_TEXT)
            ws.close_handshake()
        else:
            ws.expect_close(1007)


# == 7 Close handling ===============================================================

def _group7():
    t = {}
    t["7.1.1"] = [send([T(b"Hello World!"), CLOSE(1000)]), echo(b"Hello World!"), closed(1000)]
    t["7.1.2"] = [send([CLOSE(1000), CLOSE()]), closed(1000)]
    t["7.1.3"] = [send([CLOSE(1000), PING(b"Hello World!")]), closed(1000)]
    t["7.1.4"] = [send([CLOSE(1000), T(b"Hello World!")]), closed(1000)]
    t["7.1.5"] = [send([T(F1, fin=False), CLOSE(1000), C(F2)]), closed(1000)]
    # 7.3: close frame payloads.
    t["7.3.1"] = [send([CLOSE()]), closed((None, 1000))]
    t["7.3.2"] = [send([frame(OP_CLOSE, b"a")]), closed(1002)]
    t["7.3.3"] = [send([CLOSE(1000)]), closed(1000)]
    t["7.3.4"] = [send([CLOSE(1000, b"Hello World!")]), closed(1000)]
    t["7.3.5"] = [send([CLOSE(1000, b"*" * 123)]), closed(1000)]
    t["7.3.6"] = [send([CLOSE(1000, b"*" * 124)]), closed(1002)]
    # 7.5.1: a reason that is not UTF-8 (a surrogate at byte 12).
    t["7.5.1"] = [send([CLOSE(1000, INVALID_AT_12)]), closed(1007)]
    for i, code in enumerate([1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011,
                              3000, 3999, 4000, 4999], start=1):
        t[f"7.7.{i}"] = [send([CLOSE(code)]), closed(code)]
    for i, code in enumerate([0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999], start=1):
        t[f"7.9.{i}"] = [send([CLOSE(code)]), closed(1002)]
    t["7.13.1"] = [send([CLOSE(5000)]), closed(1002)]
    t["7.13.2"] = [send([CLOSE(65535)]), closed(1002)]
    return t


@pytest.mark.parametrize("steps", cases(_group7()))
def test_7_close(server, steps):
    play(server, steps)


def test_7_1_6(server):
    """7.1.6: a 256 KiB message, a small one, close, then a ping, back to back.
    Autobahn leaves open whether the echoes come back before the close; they
    must be exact and in order if they do, the close must be 1000, and the ping
    after the close must not be answered."""
    big = (b"BAsd7&jh23" * (256 * KIB // 10 + 1))[:256 * KIB]
    with connect(server) as ws:
        ws.send(T(big) + T(b"Hello World!") + CLOSE(1000) + PING())
        expected = [big, b"Hello World!"]
        while True:
            f = ws.recv_frame(5.0, "an echo or the close")
            if f.opcode == OP_CLOSE:
                ws.frames.appendleft(f)
                ws.expect_close(1000)
                break
            assert f.opcode == OP_TEXT and f.fin and expected, f"unexpected {describe(f)}"
            check_same(bytes(f.data), expected.pop(0))


# == 9 Limits / performance =========================================================

def _lib_payload(size, binary):
    return b"\xfe" * size if binary else ("BAsd7&jh23" * (size // 10 + 1))[:size]


LIMIT_SIZES = [64 * KIB, 256 * KIB, 1 * MIB, 4 * MIB, 8 * MIB, 16 * MIB]


@pytest.mark.parametrize("binary,size", [
    pytest.param(b, s, id=f"9.{2 if b else 1}.{i}")
    for b in (False, True) for i, s in enumerate(LIMIT_SIZES, start=1)])
def test_9_1_9_2_large_messages(server, binary, size):
    payload = _lib_payload(size, binary)

    async def go():
        async with websockets.connect(server.url, max_size=None, compression=None,
                                      ping_interval=None, open_timeout=5, close_timeout=5,
                                      max_queue=1) as ws:
            await asyncio.wait_for(ws.send(payload), 20)
            got = await asyncio.wait_for(ws.recv(), 20)
            check_same(got, payload)
        assert ws.close_code == 1000, f"close code {ws.close_code}"
    run(go())


FRAG_SIZES = [64, 256, 1 * KIB, 4 * KIB, 16 * KIB, 64 * KIB, 256 * KIB, 1 * MIB, 4 * MIB]


@pytest.mark.parametrize("binary,frag", [
    pytest.param(b, s, id=f"9.{4 if b else 3}.{i}")
    for b in (False, True) for i, s in enumerate(FRAG_SIZES, start=1)])
def test_9_3_9_4_fragmented(server, binary, frag):
    """A 4 MiB message in fragments of 64 B .. 4 MiB (the websockets client
    sends one frame per item of an iterable)."""
    size = 4 * MIB
    payload = b"\xfe" * size if binary else "*" * size

    async def go():
        async with websockets.connect(server.url, max_size=None, compression=None,
                                      ping_interval=None, open_timeout=5, close_timeout=5,
                                      max_queue=1) as ws:
            chunks = [payload[i:i + frag] for i in range(0, size, frag)]
            await asyncio.wait_for(ws.send(chunks), 30)
            got = await asyncio.wait_for(ws.recv(), 30)
            check_same(got, payload)
        assert ws.close_code == 1000, f"close code {ws.close_code}"
    run(go())


CHOPS = [64, 128, 256, 512, 1024, 2048]


@pytest.mark.parametrize("opcode,chop", [
    pytest.param(op, c, id=f"9.{6 if op == OP_BINARY else 5}.{i}")
    for op in (OP_TEXT, OP_BINARY) for i, c in enumerate(CHOPS, start=1)])
def test_9_5_9_6_chopped(server, opcode, chop):
    """A 1 MiB message in one frame, written to the socket in chops of 64 B .. 2 KiB."""
    payload = (b"BAsd7&jh23" * (MIB // 10 + 1))[:MIB] if opcode == OP_TEXT else b"\xfe" * MIB
    with connect(server) as ws:
        ws.send(frame(opcode, payload), chop=chop)
        ws.expect_echo(payload, opcode, timeout=20)
        ws.close_handshake()


RTT_SIZES = [0, 16, 64, 256, 1 * KIB, 4 * KIB]


@pytest.mark.parametrize("binary,size", [
    pytest.param(b, s, id=f"9.{8 if b else 7}.{i}")
    for b in (False, True) for i, s in enumerate(RTT_SIZES, start=1)])
def test_9_7_9_8_round_trips(server, binary, size):
    """1000 messages, each sent after the echo of the previous one came back."""
    payload = b"\xfe" * size if binary else "*" * size

    async def go():
        async with websockets.connect(server.url, max_size=None, compression=None,
                                      ping_interval=None, open_timeout=5,
                                      close_timeout=5) as ws:
            for i in range(1000):
                await ws.send(payload)
                got = await asyncio.wait_for(ws.recv(), 5)
                check_same(got, payload, f"echo {i}")
        assert ws.close_code == 1000, f"close code {ws.close_code}"
    run(go(), timeout=30)
