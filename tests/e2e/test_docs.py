"""The README's and getting-started's commands, run as written, and what they
print compared with the docs; and the two-node run of scaling.md.

The commands come from the markdown itself, so docs that drift fail here:

- Each line of a ```sh block is a command (a trailing backslash joins lines,
  a `# comment` is dropped). The test knows each kind of command a new user
  is shown (`make run`, `apt-get install`, `cmake`, `./build/moonwire`, the
  `python3 -m websockets` client, `curl`, `busted`, `kill -HUP`); a command
  it does not know fails the test, so a new one gets a check here.
- A ```lua block is either a shipped file, named in backticks in the
  paragraph before it (`scripts/echo.lua`), and must be that file byte for
  byte; or one the reader is told to save ("Save this as `myapp.lua`"), which
  the test saves in its sandbox.
- The plain ``` blocks after a ```sh block are what it prints: log lines
  (timestamps, node ids and ports aside, every line must be printed, in
  order), busted's summary, --check's answer, or a transcript of the
  interactive websockets client ("Connected to ...", then "> typed" and
  "< received" lines), one per client started in the block, in order. The
  transcripts are played: what is typed is typed, once every client is
  connected, and what is shown as received must be received, exactly.
- A sample log line of a reload that failed "near <eof>" at FILE:N is made
  true by cutting FILE short after line N - 1 and sending SIGHUP.

The commands run in a sandbox directory that holds copies of scripts/ and
spec/ and links to the rest of the repository; ports in the docs are mapped
to free ones. ./build/moonwire is $MW_BIN. Commands that run make (make run)
use the repository's build/ and are skipped under MW_SANITIZED.
"""
import collections
import os
import pathlib
import re
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import BIN, ROOT, SANITIZED, free_port, port_open, wait_until

PYTHON = "/usr/bin/python3"
BUSTED = ["lua5.4", "/usr/bin/busted"]
SIM_SO = ROOT / "build" / "lua" / "moonwire" / "sim.so"

# --- Markdown -----------------------------------------------------------------------------------


class Block:
    def __init__(self, lang, text, line, before):
        self.lang = lang
        self.text = text
        self.line = line        # of the opening fence, 1-based
        self.before = before    # the prose between the previous block and this one

    def __repr__(self):
        return f"```{self.lang} block at line {self.line}"


def blocks_of(path):
    """The fenced blocks of a markdown file, with the prose before each."""
    out, lang, buf, start, prose = [], None, [], 0, []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if lang is None:
            m = re.match(r"^```(\w*)\s*$", line)
            if m:
                lang, buf, start = m.group(1), [], n
            else:
                prose.append(line)
        elif line.startswith("```"):
            out.append(Block(lang, "\n".join(buf) + "\n", start, "\n".join(prose)))
            lang, prose = None, []
        else:
            buf.append(line)
    assert lang is None, f"{path}: a block is not closed"
    return out


def commands_of(block):
    """The commands of a sh block: continuation lines joined, comments kept apart."""
    out, cur = [], ""
    for line in block.text.splitlines():
        if line.endswith("\\"):
            cur += line[:-1] + " "
            continue
        cur += line
        if cur.strip() and not cur.strip().startswith("#"):
            words = shlex.shlex(cur, posix=True, punctuation_chars=False)
            words.whitespace_split = True
            words.commenters = "#"
            tokens = list(words)
            comment = cur.split(" # ", 1)[1].strip() if " # " in cur else ""
            out.append((tokens, comment, cur))
        cur = ""
    return out


# --- Output ------------------------------------------------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|\x1b[78]|\r")


class Ports:
    """The ports the docs name, each mapped to a free one for this run."""

    def __init__(self):
        self.map = {}

    def to_run(self, text):
        def sub(m):
            port = int(m.group(2))
            if port not in self.map:
                self.map[port] = free_port()
            return f"{m.group(1)}:{self.map[port]}"
        return re.sub(r"(127\.0\.0\.1|0\.0\.0\.0|\[::1\]|localhost):(\d{4,5})\b", sub, text)

    def to_doc(self, text):
        for doc, run in self.map.items():
            text = re.sub(rf":{run}\b", f":{doc}", text)
        return text


def normal(line, ports):
    """A line as the docs show it: timestamps, node tags and timings made alike."""
    line = ports.to_doc(line.rstrip())
    line = re.sub(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", "<time>", line)
    line = re.sub(r"\b([A-Za-z0-9_-]+)\.[0-9a-z]{8}\b", r"\1.<tag>", line)
    line = re.sub(r"(duration_ms|bytes_in|bytes_out)=\d+", r"\1=<n>", line)
    line = re.sub(r"for up to \d+ ms", "for up to <n> ms", line)
    line = re.sub(r": \d+\.\d+ seconds$", ": <t> seconds", line)
    return line


def assert_in_order(expected, actual, what):
    """Every expected line appears in actual, in this order."""
    at = 0
    for line in expected:
        try:
            at = actual.index(line, at) + 1
        except ValueError:
            raise AssertionError(f"{what}: the docs show\n  {line}\nbut it printed:\n  "
                                 + "\n  ".join(actual)) from None


# --- Processes ------------------------------------------------------------------------------------


class Proc:
    """A process whose output (stdout and stderr together) is collected as it comes."""

    def __init__(self, argv, cwd, stdin=False, new_session=False, env=None):
        full_env = dict(os.environ)
        full_env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        full_env.update(env or {})
        self.p = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.PIPE if stdin else None,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  start_new_session=new_session, env=full_env)
        self.buf = b""
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        while True:
            data = self.p.stdout.read1(65536)
            if not data:
                return
            with self.lock:
                self.buf += data

    def text(self):
        with self.lock:
            return self.buf.decode(errors="replace")

    def lines(self):
        return ANSI.sub("", self.text()).splitlines()

    def type(self, line):
        self.p.stdin.write(line.encode() + b"\n")
        self.p.stdin.flush()

    def stop(self, sig=signal.SIGTERM, group=False, timeout=10):
        if self.p.poll() is None:
            if group:
                os.killpg(self.p.pid, sig)
            else:
                self.p.send_signal(sig)
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                if group:
                    os.killpg(self.p.pid, signal.SIGKILL)
                else:
                    self.p.kill()
                self.p.wait(timeout=5)
        self.reader.join(timeout=5)
        return self.p.returncode


def has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


# --- The walk through a document ------------------------------------------------------------------


class Walk:
    """Runs the blocks of one document in order, in a sandbox."""

    def __init__(self, doc, sandbox):
        self.doc = doc
        self.box = sandbox
        self.ports = Ports()
        self.server = None          # the moonwire started last, still running
        self.server_cmd = None
        self.mark = 0               # where its log stood before the last command
        self.ran = []               # what ran, for the report
        self.skipped = []

    # Servers.

    def start_server(self, argv):
        self.stop_server()
        listen = [a for a in argv if a.startswith("--listen")] or None
        if listen is None:
            argv = argv + ["--listen", self.ports.to_run("127.0.0.1:8080")]
        ports = [int(m) for m in re.findall(r"127\.0\.0\.1:(\d+)", " ".join(argv))]
        self.server = Proc([BIN] + argv, self.box)
        self.server_cmd = argv
        wait_until(lambda: all(port_open(p) for p in ports) or self.server.p.poll() is not None,
                   timeout=15, what=f"{argv} to listen")
        assert self.server.p.poll() is None, f"{argv} exited:\n{self.server.text()}"
        self.mark = 0

    def stop_server(self):
        if self.server is not None:
            code = self.server.stop()
            text = self.server.text()
            for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
                assert marker not in text, f"{marker} in the log of {self.server_cmd}:\n{text}"
            assert code == 0, f"{self.server_cmd} exited with {code}:\n{text}"
            self.server = None

    def server_lines(self, since=0):
        return [normal(l, self.ports) for l in self.server.lines()[since:]]

    # Blocks.

    def run(self):
        blocks = blocks_of(self.doc)
        i = 0
        while i < len(blocks):
            b = blocks[i]
            outputs = []
            j = i + 1
            while j < len(blocks) and blocks[j].lang == "":
                outputs.append(blocks[j])
                j += 1
            if b.lang == "sh":
                self.sh(b, outputs)
            elif b.lang == "lua":
                self.lua(b)
                self.loose(outputs)
            elif b.lang == "":
                self.loose([b] + outputs)
            else:
                self.skipped.append(f"{b} ({b.lang}: not run here)")
                self.loose(outputs)
            i = j
        self.stop_server()

    def lua(self, b):
        save = re.search(r"[Ss]ave this as `([^`]+)`", b.before)
        if save:
            path = self.box / save.group(1)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(b.text)
            self.ran.append(f"saved {save.group(1)}")
            return
        named = [n for n in re.findall(r"`([\w./-]+\.lua)`", b.before) if (ROOT / n).is_file()]
        assert named, f"{self.doc.name}: {b}: neither a shipped file nor one to save"
        assert b.text == (ROOT / named[-1]).read_text(), \
            f"{self.doc.name}: {b} is not {named[-1]} as shipped"
        self.ran.append(f"{named[-1]} is as shown")

    def loose(self, outputs):
        """Plain blocks that follow no command: only a failed reload's sample is run."""
        for o in outputs:
            m = re.search(r"reload failed, the previous app keeps serving: (\S+?):(\d+): .* near <eof>",
                          o.text)
            if m:
                self.failed_reload(o, m.group(1), int(m.group(2)))
            else:
                self.skipped.append(f"{o} (no command before it)")

    def failed_reload(self, o, path, line):
        assert self.server is not None, f"{o}: no server to reload"
        target = self.box / path
        kept = target.read_text()
        target.write_text("".join(kept.splitlines(keepends=True)[:line - 1]))
        try:
            mark = len(self.server.lines())
            self.server.p.send_signal(signal.SIGHUP)
            want = [normal(l, self.ports) for l in o.text.splitlines() if l.strip()]
            wait_until(lambda: len(self.server.lines()) >= mark + 2, timeout=5,
                       what="the reload's log lines")
            time.sleep(0.2)
            assert_in_order(want, self.server_lines(mark), f"{self.doc.name}: {o}")
            self.ran.append(f"a reload of {path} cut after line {line - 1}")
        finally:
            target.write_text(kept)

    def sh(self, b, outputs):
        clients = []
        plain = list(outputs)
        transcripts = [o for o in plain if o.text.startswith("Connected to ")]
        others = [o for o in plain if o not in transcripts]
        printed = []   # (command kind, its lines) for the output blocks
        for tokens, comment, raw in commands_of(b):
            what = f"{self.doc.name}:{b.line}: {raw.strip()}"
            head = " ".join(tokens[:2])
            if tokens[0] == "make":
                printed += self.make(tokens, what)
            elif tokens[:3] == ["sudo", "apt-get", "install"]:
                self.apt(tokens[3:], what)
            elif tokens[0] == "cmake":
                self.cmake(raw, what, b)
            elif tokens[0] == "./build/moonwire" and "--check" in tokens:
                p = subprocess.run([BIN] + self.ports_in(tokens[1:]), cwd=self.box,
                                   capture_output=True, text=True, timeout=30)
                assert p.returncode == 0, f"{what}: exit {p.returncode}\n{p.stdout}{p.stderr}"
                printed.append(("check", [normal(l, self.ports) for l in p.stdout.splitlines()]))
                self.ran.append(what)
            elif tokens[0] == "./build/moonwire":
                args = self.ports_in(tokens[1:])
                if "'[::1]" in raw and not has_ipv6_loopback():
                    args = [a for k, a in enumerate(args)
                            if not ("[::1]" in a or (k + 1 < len(args) and "[::1]" in args[k + 1]))]
                self.start_server(args)
                printed.append(("server", None))
                self.ran.append(what)
            elif tokens[:3] == [PYTHON, "-m", "websockets"]:
                clients.append(tokens[3])
            elif tokens[0] == "python3":
                raise AssertionError(f"{what}: `python3` may not be Debian's (pyenv, a virtualenv): "
                                     "the docs say /usr/bin/python3")
            elif tokens[0] == "curl":
                self.curl(tokens, comment, what)
            elif tokens[:2] == BUSTED:
                p = subprocess.run(BUSTED + tokens[2:], cwd=self.box, capture_output=True,
                                   text=True, timeout=120)
                assert p.returncode == 0, f"{what}: exit {p.returncode}\n{p.stdout}{p.stderr}"
                printed.append(("busted", [normal(l, self.ports) for l in p.stdout.splitlines()]))
                self.ran.append(what)
            elif head == "kill -HUP":
                assert self.server is not None, f"{what}: no moonwire runs"
                mark = len(self.server.lines())
                self.server.p.send_signal(signal.SIGHUP)
                printed.append(("hup", mark))
                self.ran.append(what)
            else:
                raise AssertionError(f"{what}: a command test_docs.py does not know; "
                                     "teach it how to check this one")
        if clients:
            self.play(b, clients, transcripts)
        else:
            assert not transcripts, f"{self.doc.name}: {transcripts[0]} follows no client"
        self.compare(b, printed, others)

    def ports_in(self, args):
        return [self.ports.to_run(a) for a in args]

    def compare(self, b, printed, outputs):
        where = f"{self.doc.name}: the output after {b}"
        for o in outputs:
            want = [normal(l, self.ports) for l in o.text.splitlines() if l.strip()]
            if re.search(r"near <eof>$", o.text.strip()):
                self.loose([o])
                continue
            assert printed, f"{where}: {o} but no command printed anything"
            kind, got = printed[0]
            if kind == "skipped":
                printed.pop(0)
                continue
            if kind == "server":
                wait_until(lambda: want[-1] in self.server_lines(), timeout=10,
                           what=f"{want[-1]!r} in the log")
                got = self.server_lines()
            elif kind == "hup":
                wait_until(lambda: want[-1] in self.server_lines(got), timeout=10,
                           what=f"{want[-1]!r} in the log")
                got = self.server_lines(got)
            elif kind == "make":
                got = [normal(l, self.ports) for l in got]
            if kind == "busted":
                assert got[-len(want):] == want, f"{where}: shows\n{want}\nbusted printed\n{got}"
            else:
                assert_in_order(want, got, where)
            printed.pop(0)

    # Commands.

    def make(self, tokens, what):
        if tokens[1:] != ["run"] and not (tokens[1] == "run" and all("=" in t for t in tokens[2:])):
            self.skipped.append(f"{what} (the test suite itself, or a long target)")
            return []
        if SANITIZED:
            self.skipped.append(f"{what} (make builds build/, not the sanitized binary)")
            return [("skipped", None)]
        args = [self.ports.to_run(t) for t in tokens[2:]]
        if not any(a.startswith("LISTEN=") for a in args):
            args.append("LISTEN=" + self.ports.to_run("127.0.0.1:8080"))
        lines = make_run(args)
        self.ran.append(what)
        return [("make", lines)]

    def apt(self, packages, what):
        makefile = (ROOT / "Makefile").read_text().replace("\\\n", " ")
        sets = {name: set(re.search(rf"^{name}\s*=(.*)$", makefile, re.M).group(1).split())
                for name in ("BUILD_PKGS", "TEST_PKGS")}
        got = set(p for p in packages if not p.startswith("-"))
        assert got in sets.values(), \
            f"{what}: the packages are neither the Makefile's BUILD_PKGS nor its TEST_PKGS: {sets}"
        self.ran.append(f"{what} (the Makefile's list)")

    def cmake(self, raw, what, b):
        if SANITIZED:
            self.skipped.append(f"{what} (the normal build)")
            return
        p = subprocess.run(["bash", "-c", raw.split(" # ")[0]], cwd=ROOT, capture_output=True,
                           text=True, timeout=900)
        assert p.returncode == 0, f"{what}: exit {p.returncode}\n{p.stdout[-3000:]}{p.stderr}"
        self.ran.append(what)

    def curl(self, tokens, comment, what):
        assert self.server is not None, f"{what}: no moonwire runs"
        url = self.ports.to_run(tokens[-1])
        p = subprocess.run(["curl", "-s", "--max-time", "5"] + [self.ports.to_run(t) for t in tokens[1:-1]] + [url],
                           capture_output=True, text=True, timeout=10)
        assert p.returncode == 0, f"{what}: {p}"
        if comment == "Prometheus text":
            assert "# TYPE moonwire_" in p.stdout, f"{what}: {p.stdout[:300]}"
        else:
            assert p.stdout.strip() == comment, f"{what}: the docs say {comment!r}, it printed {p.stdout!r}"
        self.ran.append(what)

    def play(self, b, urls, transcripts):
        """Starts a client per URL, one after the other once the previous one is
        connected; plays each transcript once all are connected."""
        where = f"{self.doc.name}: {b}"
        assert len(transcripts) == len(urls), \
            f"{where}: {len(urls)} websockets clients, {len(transcripts)} transcripts after it"
        scripts = [[l for l in t.text.splitlines() if l.strip()] for t in transcripts]
        clients = []
        try:
            for url, script in zip(urls, scripts):
                c = Proc([PYTHON, "-m", "websockets", self.ports.to_run(url)], self.box, stdin=True)
                clients.append(c)
                connected = normal(self.ports.to_run(script[0]), self.ports)
                wait_until(lambda: connected in [normal(l, self.ports) for l in c.lines()],
                           timeout=10, what=f"{script[0]!r}\n{c.text()}")
            cursors = [1] * len(clients)
            seen = [0] * len(clients)
            deadline = time.monotonic() + 15
            while any(cur < len(s) for cur, s in zip(cursors, scripts)):
                assert time.monotonic() < deadline, where + ": transcripts stuck at " + repr(
                    [(s[cur] if cur < len(s) else "(done)", received(c)) for c, s, cur
                     in zip(clients, scripts, cursors)])
                moved = False
                for k, (c, s) in enumerate(zip(clients, scripts)):
                    while cursors[k] < len(s):
                        line = s[cursors[k]]
                        if line.startswith("> "):
                            c.type(line[2:])
                        elif line.startswith("< "):
                            got = received(c)
                            if len(got) <= seen[k]:
                                break
                            assert got[seen[k]] == line, \
                                f"{where}: terminal {k + 1} shows {line!r}, received {got[seen[k]]!r}"
                            seen[k] += 1
                        else:
                            raise AssertionError(f"{where}: {line!r} in a transcript")
                        cursors[k] += 1
                        moved = True
                if not moved:
                    time.sleep(0.02)
            time.sleep(0.3)
            for k, c in enumerate(clients):
                assert received(c) == [l for l in scripts[k] if l.startswith("< ")], \
                    f"{where}: terminal {k + 1} received more than the docs show: {received(c)}"
            self.ran.append(f"{where}: {len(clients)} websockets client(s), transcripts played")
        finally:
            for c in clients:
                try:
                    c.p.stdin.close()
                except OSError:
                    pass
            for c in clients:
                c.stop(timeout=5)


def received(client):
    return [l for l in client.lines() if l.startswith("< ")]


def make_run(args, timeout=300):
    """Runs `make run ARGS` as a terminal would, until the server listens, then
    Ctrl-C (SIGINT to the whole process group). Returns the lines it printed."""
    p = Proc(["make", "--no-print-directory", "run"] + args, ROOT, new_session=True)
    try:
        wait_until(lambda: "listening on" in p.text() or p.p.poll() is not None, timeout=timeout,
                   step=0.1, what="make run to serve")
        assert p.p.poll() is None, f"make run exited:\n{p.text()}"
    finally:
        p.stop(signal.SIGINT, group=True)
    return p.lines()


@pytest.fixture
def sandbox(tmp_path):
    """A copy of scripts/ and spec/ beside links to the rest of the repository."""
    for entry in ROOT.iterdir():
        if entry.name in ("scripts", "spec"):
            shutil.copytree(entry, tmp_path / entry.name)
        elif entry.name not in (".git",):
            (tmp_path / entry.name).symlink_to(entry)
    return tmp_path


def test_the_readme_commands_do_what_it_says(sandbox):
    walk = Walk(ROOT / "README.md", sandbox)
    walk.run()
    print("ran:", *walk.ran, "not run:", *walk.skipped, sep="\n  ")
    assert any("websockets client" in r for r in walk.ran), walk.ran


def test_the_getting_started_commands_do_what_it_says(sandbox):
    walk = Walk(ROOT / "docs" / "getting-started.md", sandbox)
    walk.run()
    print("ran:", *walk.ran, "not run:", *walk.skipped, sep="\n  ")
    for shown in ("scripts/rooms.lua is as shown", "spec/apps/rooms_spec.lua is as shown",
                  "a reload of scripts/rooms.lua"):
        assert any(shown in r for r in walk.ran), (shown, walk.ran)


# --- make ---------------------------------------------------------------------------------------


@pytest.fixture
def without_the_sim_module():
    """build/lua/moonwire/sim.so moved away, as in a clone where only the server
    was built; put back if the test did not build it again."""
    kept = SIM_SO.with_suffix(".so.test-docs")
    if SIM_SO.exists():
        SIM_SO.rename(kept)
    try:
        yield
    finally:
        if kept.exists():
            if SIM_SO.exists():
                kept.unlink()
            else:
                kept.rename(SIM_SO)


@pytest.mark.skipif(SANITIZED, reason="make builds build/, not the sanitized binary")
def test_make_run_prints_the_url_and_how_to_stop_and_nothing_of_make(without_the_sim_module):
    port = free_port()
    lines = make_run([f"LISTEN=127.0.0.1:{port}"])
    assert lines[:2] == ["moonwire: building (output in build/build.log)",
                         f"moonwire: serving http://127.0.0.1:{port}/ (Ctrl-C to stop)"], lines
    assert re.match(rf"^\S+ info  moonwire \S+ listening on 127\.0\.0\.1:{port} \(app scripts/chat\.lua, ",
                    lines[2]), lines
    text = "\n".join(lines)
    for noise in ("Entering directory", "Leaving directory", "\\", "make:", "Built target", "%]"):
        assert noise not in text, f"{noise!r} in what make run printed:\n{text}"
    assert lines[-1].endswith("drained; exiting"), lines


@pytest.mark.skipif(SANITIZED, reason="make builds build/, not the sanitized binary")
def test_after_make_run_busted_finds_moonwire_sim(without_the_sim_module, sandbox):
    make_run([f"LISTEN=127.0.0.1:{free_port()}"])
    assert SIM_SO.exists(), "make run did not build the module the specs need"
    p = subprocess.run(BUSTED + ["spec/apps/rooms_spec.lua"], cwd=sandbox, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "4 successes / 0 failures / 0 errors" in p.stdout, p.stdout


@pytest.mark.skipif(SANITIZED, reason="make builds build/, not the sanitized binary")
def test_make_test_spec_builds_moonwire_sim_first(without_the_sim_module):
    p = subprocess.run(["make", "--no-print-directory", "test-spec"], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "module 'moonwire.sim' not found" not in p.stdout + p.stderr
    assert re.search(r"\d+ successes / 0 failures / 0 errors", p.stdout), p.stdout[-2000:]


# --- scaling.md ---------------------------------------------------------------------------------

REDIS = shutil.which("redis-server")


def section(path, title):
    """The blocks of one section (## title) of a markdown file."""
    text = path.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return blocks_of_text(text[start:end if end > 0 else len(text)])


def blocks_of_text(text):
    tmp = pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / f"mw-docs-{os.getpid()}.md"
    tmp.write_text(text)
    try:
        return blocks_of(tmp)
    finally:
        tmp.unlink()


@pytest.mark.skipif(not REDIS, reason="no redis-server")
@pytest.mark.skipif(SANITIZED, reason="the run's fixed sleeps are for a normal build")
def test_scaling_two_nodes_on_one_machine_prints_what_it_shows(sandbox):
    blocks = section(ROOT / "docs" / "scaling.md", "Two nodes on one machine")
    shell = [b for b in blocks if b.lang == "sh"]
    shown = [b for b in blocks if b.lang == ""]
    assert len(shell) == 2 and len(shown) == 3, blocks
    ports = Ports()
    pidfile = sandbox / "redis.pid"
    script = "\n".join(b.text for b in shell)
    script = ports.to_run(script.replace("./build/moonwire", BIN)
                          .replace("/tmp/mw-redis.pid", str(pidfile)))
    for doc_port in (6390,):
        ports.map.setdefault(doc_port, free_port())
        script = re.sub(rf"\b{doc_port}\b", str(ports.map[doc_port]), script)
    p = subprocess.Popen(["bash", "-c", script], cwd=sandbox, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=5)
        if pidfile.exists():
            subprocess.run(["bash", "-c", f"kill $(cat {pidfile}) 2>/dev/null"], timeout=5)

    def channels_sorted(lines):
        # Redis lists channels in no particular order.
        out, run = [], []
        for l in lines + [""]:
            if l.startswith("mw:"):
                run.append(l)
                continue
            out += sorted(run) + ([l] if l else [])
            run = []
        return out

    got = channels_sorted([normal(l, ports) for l in out.splitlines()])
    want = channels_sorted([normal(l, ports) for b in shown[:2] for l in b.text.splitlines()])
    assert got == want, "scaling.md shows\n" + "\n".join(want) + "\nthe run printed\n" + "\n".join(got)
    # n1.log: the same lines; the two connections come back in either order.
    log = [normal(l, ports) for l in (sandbox / "n1.log").read_text().splitlines()]
    shown_log = [normal(l, ports) for l in shown[2].text.splitlines()]
    # The queue's connection comes back on its own backoff: after the others,
    # maybe after the SIGTERM. Its first "is up" must be there; how many is timing.
    queue_up = "cluster: queue connection to Redis is up"
    assert any(queue_up in l for l in log), "\n".join(log)
    # The drain counts every open connection, curl's last HTTP one too when
    # the SIGTERM comes before its close is read (seen on a loaded machine).
    strip = lambda lines: collections.Counter(
        re.sub(r"draining \d+ connection", "draining <n> connection", re.sub(r"^<time> ", "", l))
        for l in lines if queue_up not in l)
    assert strip(log) == strip(shown_log), \
        "n1.log differs from scaling.md's:\n" + "\n".join(log)


@pytest.mark.skipif(not REDIS, reason="no redis-server")
def test_scaling_a_refused_redis_is_logged_as_it_says(tmp_path):
    """scaling.md, "When the Redis port refuses connections": the first
    attempt of a node that starts without Redis is logged, the attempts after
    a lost connection only once the wait is at reconnect_max, each counted."""
    text = (ROOT / "docs" / "scaling.md").read_text()
    assert "`cluster: cannot connect to Redis (command): Connection refused`" in text
    rport, port = free_port(), free_port()
    config = tmp_path / "c.lua"
    config.write_text(f'return {{ cluster = {{ redis = "redis://127.0.0.1:{rport}", '
                      f'reconnect_max = 0.8 }} }}\n')
    node = Proc([BIN, "--config", str(config), "--script", "scripts/relay.lua",
                 "--listen", f"127.0.0.1:{port}"], ROOT)
    redis = None
    refused = "cannot connect to Redis (command): Connection refused"
    try:
        wait_until(lambda: port_open(port), timeout=10, what="the node to listen")
        wait_until(lambda: refused in node.text(), timeout=5, what="the first refusal")
        time.sleep(0.25)  # waits of 0.1 and 0.2 s: those attempts are not logged
        assert node.text().count(refused) == 1, node.text()
        redis = subprocess.Popen([REDIS, "--port", str(rport), "--save", "", "--appendonly", "no"],
                                 stdout=subprocess.DEVNULL, cwd=tmp_path)
        # Both connections up: the subscriber may come up while the command
        # connection still waits out its backoff, and a Redis stopped then
        # would find only one connection to lose.
        wait_until(lambda: "subscribed to 0 topic channel(s)" in node.text()
                   and "command connection to Redis is up" in node.text(), timeout=10,
                   what="the node on Redis")
        redis.terminate()
        redis.wait(timeout=10)
        try:
            wait_until(lambda: "lost the command connection to Redis" in node.text(), timeout=10,
                       what="the lost connection")
        except AssertionError:
            raise AssertionError("no lost connection in the node's log:\n" + node.text())
        time.sleep(0.6)  # waits of 0.1, 0.2 and 0.4 s after the loss
        assert refused not in node.text().split("lost the command connection to Redis", 1)[1], \
            node.text()
        wait_until(lambda: refused in node.text().split("lost the command connection", 1)[1],
                   timeout=10, what="a refusal logged once the wait is at reconnect_max")
        metrics = subprocess.run(["curl", "-s", f"http://127.0.0.1:{port}/metrics"],
                                 capture_output=True, text=True, timeout=10).stdout
        reconnects = int(re.search(r"^moonwire_cluster_reconnects_total (\d+)$", metrics, re.M).group(1))
        assert reconnects >= 6, metrics
    finally:
        if redis is not None and redis.poll() is None:
            redis.kill()
            redis.wait(timeout=5)
        assert node.stop() == 0, node.text()
