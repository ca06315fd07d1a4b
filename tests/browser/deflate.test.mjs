// permessage-deflate (RFC 7692) with a client we did not write: Node's `ws`
// (npm, pinned in package.json) against the real moonwire binary running
// scripts/echo.lua with compression on.
//
// ws compresses everything it sends (threshold 0); the server compresses what
// it sends from compression_threshold (64 bytes) up. The tests check the
// negotiated extension, echoes at several sizes, a fragmented compressed
// message, many messages on one connection with and without client context
// takeover (the bytes ws writes show which it did), 1009 for a message that is
// too big once inflated, and a plain client next to the compressing ones.
//
//   make test-browser
//   MW_BIN=... node --test tests/browser/deflate.test.mjs
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import WebSocket from "ws";
import { BIN, Server, freePort, within } from "./helpers.mjs";

const WAIT = 10_000; // ms, any one message or close
const MAX_MESSAGE = 1048576;

const config = (extra = "") => `return { websocket = { compression = true, compression_threshold = 64,
  max_message_size = ${MAX_MESSAGE}${extra} } }\n`;

// ws's client-side deflate: compress every message, whatever its size.
const DEFLATE = { threshold: 0 };

// One ws client: its messages in a queue, its close as a promise, and the TCP
// socket under it (from the public 'upgrade' event) to count bytes on the wire.
class Client {
  static open(url, perMessageDeflate = DEFLATE) {
    return within(WAIT, `a connection to ${url}`, new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { perMessageDeflate, handshakeTimeout: WAIT, maxPayload: 0 });
      let res = null;
      ws.once("upgrade", (r) => { res = r; });
      ws.once("open", () => resolve(new Client(ws, res)));
      ws.once("error", reject);
      ws.once("unexpected-response", (_req, res) => reject(new Error(`HTTP ${res.statusCode} instead of 101`)));
    }));
  }

  constructor(ws, res) {
    this.ws = ws;
    this.socket = res.socket;
    this.accepted = res.headers["sec-websocket-extensions"]; // the server's answer
    this.queue = [];
    this.waiters = [];
    this.errors = [];
    ws.on("message", (data, isBinary) => {
      const m = { data, isBinary };
      const w = this.waiters.shift();
      if (w) w.resolve(m); else this.queue.push(m);
    });
    ws.on("error", (e) => this.errors.push(e.message));
    this.closed = new Promise((resolve) => ws.once("close", (code, reason) => {
      resolve({ code, reason: reason.toString() });
      for (const w of this.waiters.splice(0)) w.reject(new Error(`closed with ${code} ${reason}`));
    }));
  }

  get extensions() { return this.ws.extensions; } // what ws took up: names only

  send(data, options = {}) {
    return within(WAIT, "a send", new Promise((resolve, reject) =>
      this.ws.send(data, options, (err) => (err ? reject(err) : resolve()))));
  }

  next(what = "a message") {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    return within(WAIT, what, new Promise((resolve, reject) => this.waiters.push({ resolve, reject })));
  }

  async echo(data, options = {}) {
    await this.send(data, options);
    return this.next(`the echo of ${data.length} ${typeof data === "string" ? "characters" : "bytes"}`);
  }

  async close() {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.close(1000);
    if ((await Promise.race([this.closed, new Promise((r) => setTimeout(r, 5000, "timeout").unref())])) === "timeout")
      this.ws.terminate();
  }
}

// Text of `size` characters: random letters (hardly compressible) then a
// repeated phrase with non-ASCII characters (very compressible).
function text(size, seed = "") {
  const random = crypto.randomBytes(Math.ceil(size / 2)).toString("base64").slice(0, Math.floor(size / 2));
  const phrase = `chat message ✓ é ${seed} `;
  return (random + phrase.repeat(Math.ceil(size / phrase.length) + 1)).slice(0, size);
}

// Random bytes then zeros.
const binary = (size) => Buffer.concat([crypto.randomBytes(size >> 1), Buffer.alloc(size - (size >> 1))]);

function assertText(m, want, what) {
  assert.equal(m.isBinary, false, `${what}: a text message`);
  const got = m.data.toString("utf8");
  assert.equal(got.length, want.length, `${what}: length`);
  assert.ok(got === want, `${what}: the same text`);
}

function assertBinary(m, want, what) {
  assert.equal(m.isBinary, true, `${what}: a binary message`);
  assert.equal(m.data.length, want.length, `${what}: length`);
  assert.ok(Buffer.compare(m.data, want) === 0, `${what}: the same bytes`);
}

describe("permessage-deflate with Node's ws", { timeout: 120_000 }, () => {
  let tmp, server, keeper; // keeper: client_no_context_takeover = false
  const clients = [];

  async function startServer(name, cfg) {
    const port = await freePort();
    const cfgPath = path.join(tmp, `${name}.conf.lua`);
    fs.writeFileSync(cfgPath, cfg);
    const s = new Server({
      args: ["--script", "scripts/echo.lua", "--config", cfgPath, "--listen", `127.0.0.1:${port}`],
      ports: [port], logPath: path.join(tmp, `${name}.log`),
    });
    await s.start();
    s.url = `ws://127.0.0.1:${port}/`;
    return s;
  }

  async function open(url, perMessageDeflate) {
    const c = await Client.open(url, perMessageDeflate);
    clients.push(c);
    return c;
  }

  before(async () => {
    assert.ok(fs.existsSync(BIN), `no server binary at ${BIN} (make build, or set MW_BIN)`);
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "mw-deflate-"));
    server = await startServer("default", config());
    keeper = await startServer("keeper", config(", client_no_context_takeover = false"));
  });

  after(async () => {
    try {
      await Promise.all(clients.map((c) => c.close()));
    } finally {
      const ended = [];
      for (const s of [server, keeper]) if (s) ended.push([s, await s.stop()]);
      try {
        for (const [s, how] of ended) {
          s.checkClean();
          assert.deepEqual(how, { code: 0, signal: null }, `moonwire exited with ${JSON.stringify(how)}:\n${s.log()}`);
        }
      } finally {
        if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
      }
    }
  });

  test("ws and the server agree on permessage-deflate", async () => {
    const c = await open(server.url);
    // ws offers "permessage-deflate; client_max_window_bits" and takes up
    // the server's answer (ws.extensions lists what it took up).
    assert.equal(c.extensions, "permessage-deflate");
    assert.equal(c.accepted,
      "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=15");
    const k = await open(keeper.url);
    assert.equal(k.extensions, "permessage-deflate");
    assert.equal(k.accepted, "permessage-deflate; server_no_context_takeover; client_max_window_bits=15");
    await c.close();
    await k.close();
  });

  test("compressed echo of text and binary at 0, 100, 1000, 65536 and 500000", async () => {
    const c = await open(server.url);
    for (const size of [0, 100, 1000, 65536, 500000]) {
      const t = text(size, size);
      assertText(await c.echo(t), t, `text of ${size}`);
      const b = binary(size);
      assertBinary(await c.echo(b), b, `binary of ${size}`);
    }
    assert.deepEqual(c.errors, []);
  });

  test("the server compresses what it sends from the threshold up", async () => {
    const c = await open(server.url);
    // 64 KiB of one phrase: compressed both ways, a few hundred bytes each.
    const t = "a very compressible sentence ✓ ".repeat(2200).slice(0, 65536);
    const [wrote, read] = [c.socket.bytesWritten, c.socket.bytesRead];
    assertText(await c.echo(t), t, "compressible text");
    const out = c.socket.bytesWritten - wrote;
    const back = c.socket.bytesRead - read;
    assert.ok(out < 2000, `ws sent ${out} bytes for 64 KiB of repeated text`);
    assert.ok(back < 2000, `the server sent ${back} bytes back for 64 KiB of repeated text`);
    // 63 bytes: below compression_threshold, so it comes back as it is
    // (2 bytes of header and the payload), however compressible.
    const small = "z".repeat(63);
    const before = c.socket.bytesRead;
    assertText(await c.echo(small), small, "63 bytes");
    assert.equal(c.socket.bytesRead - before, 2 + 63, "a message below the threshold comes back uncompressed");
  });

  test("a fragmented compressed message, with a ping between the fragments", async () => {
    const c = await open(server.url);
    const parts = Array.from({ length: 12 }, (_, i) => text(700 + i * 37, `part ${i}`));
    for (const [i, p] of parts.entries()) {
      await c.send(p, { fin: i === parts.length - 1, compress: true });
      if (i === 5) {
        // Control frames may come between fragments; the pong comes back at once.
        const pong = within(WAIT, "the pong", new Promise((r) => c.ws.once("pong", r)));
        c.ws.ping("between fragments");
        assert.equal((await pong).toString(), "between fragments");
      }
    }
    assertText(await c.next("the fragmented text"), parts.join(""), "fragmented text");

    const bparts = [Buffer.alloc(5000, 1), crypto.randomBytes(3000), Buffer.alloc(0), Buffer.alloc(4000, 2)];
    for (const [i, p] of bparts.entries()) await c.send(p, { binary: true, fin: i === bparts.length - 1, compress: true });
    assertBinary(await c.next("the fragmented binary"), Buffer.concat(bparts), "fragmented binary");

    // And one of two fragments where the second is empty.
    await c.send("only the first fragment has data ".repeat(10), { fin: false, compress: true });
    await c.send("", { fin: true, compress: true });
    assertText(await c.next(), "only the first fragment has data ".repeat(10), "empty last fragment");
    assert.deepEqual(c.errors, []);
  });

  // The same 2000 random characters three times: without context takeover
  // each copy costs about 1500 bytes; with it the copies after the first are
  // a back-reference of a few bytes, which the server can only inflate when
  // it kept its inflate window between messages.
  async function sendRepeated(c) {
    const t = text(4000).slice(0, 2000); // the random half only
    const sizes = [];
    for (let i = 0; i < 3; i++) {
      const [wrote, read] = [c.socket.bytesWritten, c.socket.bytesRead];
      assertText(await c.echo(t), t, `copy ${i}`);
      sizes.push({ out: c.socket.bytesWritten - wrote, back: c.socket.bytesRead - read });
    }
    return sizes;
  }

  // Many messages of every kind, all sent before any echo is read.
  async function pipeline(c) {
    const sent = [];
    for (let i = 0; i < 60; i++) {
      const size = [0, 5, 63, 64, 65, 200, 1000, 4096, 20000][i % 9];
      const m = i % 2 ? binary(size) : text(size, `msg ${i}`);
      sent.push(m);
      c.ws.send(m, { compress: i % 5 !== 4 }); // now and then an uncompressed one between
    }
    for (const [i, m] of sent.entries()) {
      const got = await c.next(`echo ${i}`);
      if (typeof m === "string") assertText(got, m, `message ${i}`);
      else assertBinary(got, m, `message ${i}`);
    }
  }

  test("messages one after another: the client resets its context (client_no_context_takeover)", async () => {
    const c = await open(server.url);
    const sizes = await sendRepeated(c);
    for (const { out, back } of sizes) {
      assert.ok(out > 1000, `each copy is compressed on its own: ${JSON.stringify(sizes)}`);
      assert.ok(back > 1000, `the server compresses each copy on its own: ${JSON.stringify(sizes)}`);
    }
    await pipeline(c);
    assert.deepEqual(c.errors, []);
  });

  test("messages one after another: the client keeps its context (client_no_context_takeover = false)", async () => {
    const c = await open(keeper.url);
    const sizes = await sendRepeated(c);
    assert.ok(sizes[0].out > 1000, `the first copy is compressed on its own: ${JSON.stringify(sizes)}`);
    assert.ok(sizes[1].out < 100 && sizes[2].out < 100,
      `later copies refer to the first: ${JSON.stringify(sizes)}`);
    // server_no_context_takeover: what the server sends stays independent.
    for (const { back } of sizes) assert.ok(back > 1000, `server copies: ${JSON.stringify(sizes)}`);
    await pipeline(c);
    // And again after the pipeline, with a window full of other messages.
    const more = await sendRepeated(c);
    assert.ok(more[1].out < 100, `later copies still refer back: ${JSON.stringify(more)}`);
    assert.deepEqual(c.errors, []);
  });

  test("the window sizes ws asks for", async () => {
    for (const [opts, answer] of [
      [{ serverMaxWindowBits: 9, clientMaxWindowBits: 9 }, "server_max_window_bits=9; client_max_window_bits=9"],
      [{ serverMaxWindowBits: 12, clientMaxWindowBits: 10 }, "server_max_window_bits=12; client_max_window_bits=10"],
    ]) {
      const c = await open(keeper.url, { ...DEFLATE, ...opts });
      assert.equal(c.accepted, `permessage-deflate; server_no_context_takeover; ${answer}`);
      await pipeline(c);
      assert.deepEqual(c.errors, []);
      await c.close();
    }
  });

  test("a message larger than max_message_size once inflated is closed with 1009", async () => {
    const c = await open(server.url);
    const wrote = c.socket.bytesWritten;
    c.ws.send("A".repeat(2 * 1024 * 1024)); // about 2 KiB once compressed
    const { code, reason } = await within(WAIT, "the close", c.closed);
    assert.equal(code, 1009);
    assert.equal(reason, "message too big once inflated"); // docs/configuration.md
    assert.ok(c.socket.bytesWritten - wrote < 50_000, "the 2 MiB went compressed");

    // Just under the limit is fine, and the server goes on serving.
    const d = await open(server.url);
    const t = "B".repeat(MAX_MESSAGE);
    assertText(await d.echo(t), t, "max_message_size exactly");
    await d.close();
  });

  test("a plain ws client next to compressing ones", async () => {
    const zipped = await Promise.all([open(server.url), open(server.url)]);
    const plain = await open(server.url, false);
    assert.equal(plain.extensions, "", "nothing taken up");
    assert.equal(plain.accepted, undefined, "nothing negotiated");
    const t = text(10_000, "plain");
    const b = binary(10_000);
    // All at once: the server compresses for two of them, not for the third
    // (ws fails a connection that gets RSV1 without the extension).
    const echoes = await Promise.all([...zipped, plain].map(async (c) => [await c.echo(t), await c.echo(b)]));
    for (const [mt, mb] of echoes) {
      assertText(mt, t, "text");
      assertBinary(mb, b, "binary");
    }
    const before = plain.socket.bytesRead;
    const z = "zzzz".repeat(1000);
    assertText(await plain.echo(z), z, "compressible text to the plain client");
    assert.ok(plain.socket.bytesRead - before >= 4000, "sent to the plain client uncompressed");
    for (const c of [...zipped, plain]) assert.deepEqual(c.errors, []);
  });
});
