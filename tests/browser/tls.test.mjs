// wss:// with a client we did not write: Debian's chromium, headless, driven
// by playwright-core, against the real moonwire binary with a TLS listener
// and a self-signed certificate (made with the openssl command line into a
// temporary directory; chromium runs with --ignore-certificate-errors).
//
// 1. The chat page (examples/chat) served over https://: it builds its
//    wss:// URL from location; two people join a room and talk.
// 2. A bare `new WebSocket("wss://...")` from page.evaluate against a second
//    server running scripts/echo.lua (with permessage-deflate on, so that
//    chromium's deflate goes over TLS too).
//
// A screenshot goes to build/browser/chat-tls.png.
//
//   make test-browser
//   MW_BIN=... node --test tests/browser/tls.test.mjs
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";
import { BIN, CHROMIUM, SHOTS, Server, freePort, makeCert, timeout } from "./helpers.mjs";

const WAIT = 10_000; // ms, any one thing the page should show

async function until(page, what, fn, arg) {
  try {
    return await page.waitForFunction(fn, arg, { timeout: WAIT, polling: 50 });
  } catch (e) {
    const shown = await page.evaluate(() => ({
      status: document.getElementById("status")?.textContent.replace(/\s+/g, " ").trim(),
      errors: document.getElementById("errors")?.innerText,
    })).catch(() => ({}));
    throw new Error(`timed out after ${WAIT} ms waiting for ${what}; the page shows ${JSON.stringify(shown)}\n${e.message}`);
  }
}

function waitMembers(page, want) {
  return until(page, `members ${want.join(", ")}`, (want) =>
    [...document.querySelectorAll("#members .member")].map((b) => b.firstChild.textContent).join("\n") === want.join("\n"),
  want);
}

function waitMessage(page, from, text, cls = "msg") {
  return until(page, `a message from ${from}: ${text}`, ([from, text, cls]) =>
    [...document.querySelectorAll(`.log:not([hidden]) li.${cls}`)].some((li) =>
      li.querySelector(".from").textContent.startsWith(from) && li.querySelector(".text").textContent === text),
  [from, text, cls]);
}

async function enter(page, url, nick, rooms) {
  const res = await page.goto(url, { timeout: WAIT });
  await page.fill("#login-nick", nick, { timeout: WAIT });
  await page.fill("#login-rooms", rooms, { timeout: WAIT });
  await page.click("#login-form button[type=submit]", { timeout: WAIT });
  await until(page, "status connected", () => document.getElementById("status").dataset.state === "connected");
  return res;
}

async function send(page, text) {
  await page.fill("#text", text, { timeout: WAIT });
  await page.press("#text", "Enter", { timeout: WAIT });
}

describe("wss:// in chromium", { timeout: 120_000 }, () => {
  let tmp, chat, echo, browser;
  const pageErrors = [];

  before(async () => {
    assert.ok(fs.existsSync(BIN), `no server binary at ${BIN} (make build, or set MW_BIN)`);
    assert.ok(fs.existsSync(CHROMIUM), `no browser at ${CHROMIUM} (apt-get install chromium, or make deps-test)`);
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "mw-tls-"));
    fs.mkdirSync(SHOTS, { recursive: true });
    const { cert, key } = makeCert(tmp);
    const tlsArgs = ["--cert", cert, "--key", key];

    const [cPlain, cTls, ePlain, eTls] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
    chat = new Server({
      args: ["--config", "examples/chat/moonwire.conf.lua", "--listen", `127.0.0.1:${cPlain}`,
        "--listen-tls", `127.0.0.1:${cTls}`, ...tlsArgs],
      ports: [cPlain, cTls], logPath: path.join(tmp, "chat.log"),
    });
    chat.https = `https://127.0.0.1:${cTls}/`;
    const echoConf = path.join(tmp, "echo.conf.lua");
    fs.writeFileSync(echoConf, "return { websocket = { compression = true, compression_threshold = 64 } }\n");
    echo = new Server({
      args: ["--script", "scripts/echo.lua", "--config", echoConf, "--listen", `127.0.0.1:${ePlain}`,
        "--listen-tls", `127.0.0.1:${eTls}`, ...tlsArgs],
      ports: [ePlain, eTls], logPath: path.join(tmp, "echo.log"),
    });
    echo.tlsPort = eTls;
    await chat.start();
    await echo.start();

    // launch() gives chromium a fresh --user-data-dir of its own in a temp
    // directory and removes it at close. No ignoreHTTPSErrors in the
    // contexts: --ignore-certificate-errors is what lets the self-signed
    // certificate through, for the page and for its WebSocket alike.
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      timeout: 30_000,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--ignore-certificate-errors"],
    });
  });

  after(async () => {
    try {
      if (browser) await Promise.race([browser.close(), timeout(10_000)]);
    } finally {
      const ended = [];
      for (const s of [chat, echo]) if (s) ended.push([s, await s.stop()]);
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

  async function newPage() {
    const context = await browser.newContext({ viewport: { width: 1000, height: 640 } });
    const page = await context.newPage();
    page.on("pageerror", (e) => pageErrors.push(e.message));
    return page;
  }

  test("the chat page over https:// talks over wss://", async () => {
    const ann = await newPage();
    const bob = await newPage();
    const res = await enter(ann, chat.https, "ann", "lobby");
    assert.equal(res.status(), 200);
    const tls = await res.securityDetails();
    assert.ok(tls, "the page came over TLS");
    assert.equal(tls.protocol, "TLS 1.3");
    assert.equal(tls.subjectName, "localhost");
    await enter(bob, chat.https, "bob", "lobby");

    for (const page of [ann, bob]) {
      assert.equal(await page.evaluate(() => state.ws.url), `wss://127.0.0.1:${new URL(chat.https).port}/chat`);
    }
    await waitMembers(ann, ["ann", "bob"]);
    await waitMembers(bob, ["ann", "bob"]);

    await send(ann, "hello over wss");
    await waitMessage(bob, "ann", "hello over wss");
    await waitMessage(ann, "ann", "hello over wss", "msg.mine");
    await send(bob, "and back, ✓ é");
    await waitMessage(ann, "bob", "and back, ✓ é");

    await ann.screenshot({ path: path.join(SHOTS, "chat-tls.png") });
    await ann.context().close();
    await waitMembers(bob, ["bob"]);
    await bob.context().close();
  });

  test("a bare WebSocket to wss:// echoes text and binary", async () => {
    const page = await newPage();
    const origin = `https://127.0.0.1:${echo.tlsPort}`;
    const res = await page.goto(`${origin}/healthz`, { timeout: WAIT }); // an https:// origin to run in
    assert.equal(res.status(), 200);

    const got = await page.evaluate(async ({ url, sizes, wait }) => {
      const expire = (what) => new Promise((_, reject) =>
        setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), wait));
      const ws = new WebSocket(url);
      ws.binaryType = "arraybuffer";
      const queue = [];
      let waiter = null;
      ws.onmessage = (e) => {
        if (waiter) { const w = waiter; waiter = null; w(e.data); } else queue.push(e.data);
      };
      const closed = new Promise((resolve) => { ws.onclose = (e) => resolve({ code: e.code, reason: e.reason, clean: e.wasClean }); });
      await Promise.race([
        new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = () => reject(new Error("no connection")); }),
        expire("the connection"),
      ]);
      const next = (what) => (queue.length ? Promise.resolve(queue.shift())
        : Promise.race([new Promise((r) => { waiter = r; }), expire(what)]));

      const results = [];
      for (const size of sizes) {
        const text = "wss ✓ é ".repeat(Math.ceil(size / 8) + 1).slice(0, size);
        ws.send(text);
        const t = await next(`the echo of ${size} characters`);
        results.push({ kind: "text", size, ok: typeof t === "string" && t === text });

        const bytes = new Uint8Array(size);
        for (let i = 0; i < size; i += 65536) crypto.getRandomValues(bytes.subarray(i, i + 65536));
        ws.send(bytes);
        const b = await next(`the echo of ${size} bytes`);
        const same = b instanceof ArrayBuffer && b.byteLength === size &&
          new Uint8Array(b).every((x, i) => x === bytes[i]);
        results.push({ kind: "binary", size, ok: same });
      }
      const extensions = ws.extensions;
      ws.close(1000, "done");
      return { extensions, results, close: await Promise.race([closed, expire("the close")]) };
    }, { url: `wss://127.0.0.1:${echo.tlsPort}/`, sizes: [0, 1, 125, 126, 65535, 65536, 1 << 20], wait: WAIT });

    assert.deepEqual(got.results.filter((r) => !r.ok), [], "every echo came back the same");
    assert.equal(got.results.length, 14);
    assert.match(got.extensions, /^permessage-deflate/, "chromium and the server agree on deflate");
    // The server answers a close with the same code (RFC 6455 5.5.1; the
    // reason is not echoed).
    assert.equal(got.close.code, 1000);
    assert.equal(got.close.clean, true);
    await page.context().close();
  });

  test("the pages ran without script errors", () => {
    assert.deepEqual(pageErrors, []);
  });
});
