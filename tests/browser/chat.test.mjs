// The chat page (examples/chat/public) in a real browser against the real
// server: Debian's chromium, headless, driven by playwright-core.
//
// The test starts build/moonwire (or $MW_BIN) with examples/chat/moonwire.conf.lua
// on a free 127.0.0.1 port, opens the page in separate browser contexts (as
// separate people would), and checks what the page shows: members, messages,
// privates, an error the server sent, and a reconnect after the server came
// back; then, on two nodes sharing a redis-server the test starts and kills,
// the "delayed" state while Redis is away and the say that waited arriving
// once Redis is back. Every wait is bounded. Screenshots go to build/browser/.
//
//   make test-browser          (installs chromium and node_modules first)
//   MW_BIN=... node --test tests/browser/
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const BIN = process.env.MW_BIN || path.join(ROOT, "build", "moonwire");
const CHROMIUM = process.env.MW_CHROMIUM || "/usr/bin/chromium";
const CONFIG = "examples/chat/moonwire.conf.lua";
const SHOTS = path.join(ROOT, "build", "browser");
const WAIT = 10_000; // ms, any one thing the page should show

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// For Promise.race: resolves "timeout" after ms without keeping node alive.
const timeout = (ms) => new Promise((r) => setTimeout(r, ms, "timeout").unref());

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function portOpen(port) {
  return new Promise((resolve) => {
    const c = net.connect({ port, host: "127.0.0.1" });
    const done = (ok) => { c.destroy(); resolve(ok); };
    c.setTimeout(200, () => done(false));
    c.once("connect", () => done(true));
    c.once("error", () => done(false));
  });
}

// One moonwire process, its output in a log file shown when a test fails.
class Server {
  constructor(port, logPath, config = CONFIG, args = []) {
    this.port = port;
    this.logPath = logPath;
    this.config = config;
    this.args = args;
    this.proc = null;
  }

  async start() {
    const log = fs.openSync(this.logPath, "a");
    this.proc = spawn(BIN, ["--config", this.config, "--listen", `127.0.0.1:${this.port}`, "--log-level", "debug",
      ...this.args], { cwd: ROOT, stdio: ["ignore", log, log] });
    fs.closeSync(log);
    this.exited = new Promise((resolve) => this.proc.once("exit", (code, signal) => resolve({ code, signal })));
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (this.proc.exitCode !== null || this.proc.signalCode !== null)
        throw new Error(`moonwire exited at start:\n${this.log()}`);
      if (await portOpen(this.port)) return;
      if (Date.now() > deadline) {
        await this.stop();
        throw new Error(`moonwire did not listen on ${this.port} within 10 s:\n${this.log()}`);
      }
      await sleep(25);
    }
  }

  // SIGTERM, then SIGKILL after a bounded wait. Safe to call twice.
  async stop() {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    p.kill("SIGTERM");
    if ((await Promise.race([this.exited, timeout(8000)])) === "timeout") {
      p.kill("SIGKILL");
      await Promise.race([this.exited, timeout(2000)]);
    }
  }

  log() {
    try { return fs.readFileSync(this.logPath, "utf8").slice(-4000); } catch { return "(no log)"; }
  }
}

// --- What a page shows ------------------------------------------------------------

// Waits until fn(arg), run in the page, returns something truthy.
async function until(page, what, fn, arg, timeout = WAIT) {
  try {
    return await page.waitForFunction(fn, arg, { timeout, polling: 50 });
  } catch (e) {
    const shown = await page.evaluate(() => ({
      status: document.getElementById("status").textContent.replace(/\s+/g, " ").trim(),
      errors: document.getElementById("errors").innerText,
      log: (document.querySelector(".log:not([hidden])") || {}).innerText,
    })).catch(() => ({}));
    throw new Error(`timed out after ${timeout} ms waiting for ${what}; the page shows ${JSON.stringify(shown)}\n${e.message}`);
  }
}

const members = (page) => page.$$eval("#members .member", (bs) => bs.map((b) => b.firstChild.textContent));

function waitMembers(page, want) {
  return until(page, `members ${want.join(", ")}`, (want) => {
    const got = [...document.querySelectorAll("#members .member")].map((b) => b.firstChild.textContent);
    return got.join("\n") === want.join("\n");
  }, want);
}

function waitMessage(page, from, text, cls = "msg") {
  return until(page, `a message from ${from}: ${text}`, ([from, text, cls]) =>
    [...document.querySelectorAll(`.log:not([hidden]) li.${cls}`)].some((li) =>
      li.querySelector(".from").textContent.startsWith(from) && li.querySelector(".text").textContent === text),
  [from, text, cls]);
}

function waitStatus(page, state) {
  return until(page, `status ${state}`, (s) => document.getElementById("status").dataset.state === s, state);
}

async function enter(page, url, nick, rooms) {
  await page.goto(url, { timeout: WAIT });
  await page.fill("#login-nick", nick, { timeout: WAIT });
  await page.fill("#login-rooms", rooms, { timeout: WAIT });
  await page.click("#login-form button[type=submit]", { timeout: WAIT });
  await waitStatus(page, "connected");
}

async function send(page, text) {
  await page.fill("#text", text, { timeout: WAIT });
  await page.press("#text", "Enter", { timeout: WAIT });
}

// --- The tests ----------------------------------------------------------------------

describe("the chat page", { timeout: 120_000 }, () => {
  let tmp, server, browser, url;
  const pages = [];
  const pageErrors = [];

  before(async () => {
    assert.ok(fs.existsSync(BIN), `no server binary at ${BIN} (make build, or set MW_BIN)`);
    assert.ok(fs.existsSync(CHROMIUM), `no browser at ${CHROMIUM} (apt-get install chromium, or make deps-test)`);
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "mw-browser-"));
    fs.mkdirSync(SHOTS, { recursive: true });
    server = new Server(await freePort(), path.join(tmp, "server.log"));
    await server.start();
    url = `http://127.0.0.1:${server.port}/`;
    // launch() gives chromium a fresh --user-data-dir of its own in a temp
    // directory and removes it at close (it refuses one passed in args).
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      timeout: 30_000,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    });
  });

  after(async () => {
    try {
      if (browser) await Promise.race([browser.close(), timeout(10_000)]);
    } finally {
      if (server) await server.stop();
      if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  // One browser context per person: no shared storage between them.
  async function newPage(viewport = { width: 1000, height: 640 }) {
    const context = await browser.newContext({ viewport });
    const page = await context.newPage();
    page.on("pageerror", (e) => pageErrors.push(`${e.message}`));
    pages.push(page);
    return page;
  }

  test("the server serves the page, its script and its style", async () => {
    for (const [file, type] of [["", "text/html"], ["app.js", "javascript"], ["style.css", "text/css"]]) {
      const res = await fetch(url + file, { signal: AbortSignal.timeout(WAIT) });
      assert.equal(res.status, 200, file);
      assert.match(res.headers.get("content-type"), new RegExp(type), file);
    }
  });

  let ann, bob;

  test("two people in one room see each other and each other's messages", async () => {
    ann = await newPage();
    bob = await newPage();
    await enter(ann, url, "ann", "lobby");
    await enter(bob, url, "bob", "lobby");

    await waitMembers(ann, ["ann", "bob"]);
    await waitMembers(bob, ["ann", "bob"]);

    await send(ann, "hello from ann");
    await waitMessage(bob, "ann", "hello from ann");
    await waitMessage(ann, "ann", "hello from ann", "msg.mine"); // the server's "sent"

    await send(bob, "hi ann <b>not bold</b>");
    await waitMessage(ann, "bob", "hi ann <b>not bold</b>");
    assert.equal(await ann.locator(".log:not([hidden]) b").count(), 0, "message text is shown as text, not HTML");

    // A private message: bob clicks ann in the member list.
    await bob.click("#members .member >> text=ann", { timeout: WAIT });
    await until(bob, "the private target", () => !document.getElementById("private-to").hidden);
    await send(bob, "psst, ann");
    await waitMessage(ann, "bob → ann", "psst, ann", "msg.private");
    await waitMessage(bob, "bob → ann", "psst, ann", "msg.private");

    await ann.screenshot({ path: path.join(SHOTS, "chat.png") });
  });

  test("a refused action shows the server's error on the page", async () => {
    const other = await newPage({ width: 380, height: 700 }); // and a narrow window
    await enter(other, url, "ANN", "lobby"); // nicks are unique per room ignoring case
    await until(other, "the nick_taken error", () => {
      const text = document.getElementById("errors").innerText;
      return text.includes("nick_taken") && text.includes("taken in room");
    });
    await until(other, "lobby marked as not joined", () =>
      document.getElementById("rooms").innerText.includes("not joined"));
    assert.deepEqual(await members(other), [], "not a member of lobby");
    await other.screenshot({ path: path.join(SHOTS, "chat-error-narrow.png") });

    // Fixing it from the page: a free nick, then join again.
    await other.fill("#nick-input", "carol");
    await other.click("#nick-form button[type=submit]");
    await until(other, "the new nick", () => document.getElementById("nick-input").value === "carol");
    await other.click("#room-rejoin", { timeout: WAIT });
    await waitMembers(other, ["ann", "bob", "carol"]);
    await waitMembers(ann, ["ann", "bob", "carol"]);
    await waitMessage(other, "ann", "hello from ann"); // the history on join
    await other.context().close();
    await waitMembers(ann, ["ann", "bob"]);
  });

  test("joining a room the server refuses by its name leaves no room behind, and the name to fix", async () => {
    const dan = await newPage();
    await enter(dan, url, "dan", "lobby, no/slash"); // one good room, one bad at login
    await until(dan, "the bad_room error", () =>
      document.getElementById("errors").innerText.includes("bad_room"));
    await waitMembers(dan, ["ann", "bob", "dan"]);
    // Then one more from the join form.
    await dan.fill("#join-room", "bad room!");
    await dan.press("#join-room", "Enter");
    await until(dan, "the second bad_room error", () =>
      document.getElementById("errors").innerText.includes("bad room!"));
    await sleep(200); // whatever the page does with it, it has done
    const rooms = await dan.locator("#rooms").innerText();
    assert.doesNotMatch(rooms, /no\/slash|bad room!|not joined/, "no room that can never be joined");
    assert.equal(await dan.locator("#room-rejoin").isVisible(), false, "no Join again button");
    assert.equal(await dan.inputValue("#join-room"), "bad room!", "the name is back in the join field");
    assert.equal(await dan.locator("#room-title").textContent(), "lobby");
    assert.equal(await dan.locator("#send-form").isVisible(), true, "still in lobby, able to write");
    await dan.screenshot({ path: path.join(SHOTS, "chat-bad-room.png") });
    await dan.context().close();
    await waitMembers(ann, ["ann", "bob"]);
  });

  test("the note that you joined a room comes after the room's history", async () => {
    const eve = await newPage();
    await enter(eve, url, "eve", "lobby");
    await waitMessage(eve, "ann", "hello from ann"); // from the history sent with the join
    await until(eve, "the join note", () =>
      document.querySelector(".log:not([hidden])").innerText.includes("you joined lobby as eve"));
    const items = await eve.$$eval(".log:not([hidden]) li", (lis) =>
      lis.map((li) => (li.classList.contains("note") ? "note: " : "msg: ") + (li.querySelector(".text") || li).textContent));
    const hello = items.indexOf("msg: hello from ann");
    const joined = items.indexOf("note: you joined lobby as eve");
    assert.ok(hello >= 0 && joined > hello, `the older messages first, then the note: ${JSON.stringify(items)}`);
    await eve.context().close();
    await waitMembers(ann, ["ann", "bob"]);
  });

  test("a dropped connection comes back without showing the history twice", async () => {
    await ann.evaluate(() => state.ws.close()); // the page's own socket, as a network drop would
    await waitStatus(ann, "reconnecting");
    await waitStatus(ann, "connected");
    await waitMembers(ann, ["ann", "bob"]);
    await until(ann, "the rejoin note", () =>
      document.querySelector(".log:not([hidden])").innerText.split("you joined lobby").length === 3);
    const hellos = await ann.$$eval(".log:not([hidden]) li.msg .text", (ts) =>
      ts.filter((t) => t.textContent === "hello from ann").length);
    assert.equal(hellos, 1, "the history sent on rejoin adds only what was missed");
    // bob saw ann go and come back (presence events).
    await until(bob, "ann's presence notes", () => {
      const notes = [...document.querySelectorAll(".log:not([hidden]) li.note")].map((li) => li.textContent);
      const gone = notes.lastIndexOf("ann disconnected");
      return gone >= 0 && notes.indexOf("ann joined", gone) > gone;
    });
  });

  test("the pages reconnect and rejoin after the server restarts", async () => {
    await server.stop();
    await waitStatus(ann, "reconnecting");
    await waitStatus(bob, "reconnecting");
    await server.start(); // the same port, an empty chat
    await waitStatus(ann, "connected");
    await waitStatus(bob, "connected");
    await waitMembers(ann, ["ann", "bob"]);
    await waitMembers(bob, ["ann", "bob"]);
    // What was on screen stays, once; new messages come in below it.
    await send(bob, "back again");
    await waitMessage(ann, "bob", "back again");
    const hellos = await ann.$$eval(".log:not([hidden]) li.msg .text", (ts) =>
      ts.filter((t) => t.textContent === "hello from ann").length);
    assert.equal(hellos, 1);
    await ann.screenshot({ path: path.join(SHOTS, "chat-reconnected.png") });
  });

  test("the page ran without script errors", () => {
    assert.deepEqual(pageErrors, []);
  });
});

// --- Two nodes and Redis --------------------------------------------------------------

const REDIS = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"].find((p) => fs.existsSync(p));

// A redis-server on a free port, stopped (or killed) by PID.
class Redis {
  constructor(port, dir) {
    this.port = port;
    this.dir = dir;
  }

  async start() {
    this.proc = spawn(REDIS, ["--port", String(this.port), "--bind", "127.0.0.1", "--save", "",
      "--appendonly", "no", "--dir", this.dir], { stdio: "ignore" });
    this.exited = new Promise((resolve) => this.proc.once("exit", resolve));
    const deadline = Date.now() + 10_000;
    while (!(await portOpen(this.port))) {
      if (Date.now() > deadline) throw new Error(`redis-server did not listen on ${this.port}`);
      await sleep(25);
    }
  }

  async kill(signal = "SIGKILL") {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill(signal);
    await Promise.race([this.exited, timeout(5000)]);
  }
}

describe("the chat page on two nodes when Redis goes away", { timeout: 120_000, skip: !REDIS && "no redis-server" }, () => {
  let tmp, redis, nodes = [], browser;
  const pageErrors = [];

  before(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "mw-browser-cluster-"));
    fs.mkdirSync(SHOTS, { recursive: true });
    redis = new Redis(await freePort(), tmp);
    await redis.start();
    // The example's configuration, with a quick reconnect to Redis.
    const example = fs.readFileSync(path.join(ROOT, CONFIG), "utf8");
    const config = path.join(tmp, "cluster.conf.lua");
    fs.writeFileSync(config, `local c = (function()\n${example}\nend)()\n` +
      "c.cluster = { reconnect_max = 0.5 }\nreturn c\n");
    for (const name of ["a", "b"]) {
      const node = new Server(await freePort(), path.join(tmp, `${name}.log`), config,
        ["--node-id", name, "--redis", `redis://127.0.0.1:${redis.port}`]);
      await node.start();
      nodes.push(node);
    }
    for (const node of nodes) {
      const deadline = Date.now() + 10_000;
      for (;;) {
        const res = await fetch(`http://127.0.0.1:${node.port}/healthz`, { signal: AbortSignal.timeout(WAIT) });
        if ((await res.text()) === "ok\n") break;
        if (Date.now() > deadline) throw new Error(`node not on Redis:\n${node.log()}`);
        await sleep(50);
      }
    }
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      timeout: 30_000,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    });
  });

  after(async () => {
    try {
      if (browser) await Promise.race([browser.close(), timeout(10_000)]);
    } finally {
      for (const node of nodes) await node.stop();
      if (redis) await redis.kill("SIGTERM");
      if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  async function newPage() {
    const context = await browser.newContext({ viewport: { width: 1000, height: 640 } });
    const page = await context.newPage();
    page.on("pageerror", (e) => pageErrors.push(`${e.message}`));
    return page;
  }

  test("while Redis is away the page shows delivery delayed, and the say that waited arrives once after", async () => {
    const ann = await newPage();
    const bob = await newPage();
    await enter(ann, `http://127.0.0.1:${nodes[0].port}/`, "ann", "lobby");
    await enter(bob, `http://127.0.0.1:${nodes[1].port}/`, "bob", "lobby");
    await waitMembers(ann, ["ann", "bob"]);
    await waitMembers(bob, ["ann", "bob"]);
    await sleep(1500); // each node counts the nodes on Redis once a second

    await redis.kill();
    await waitStatus(ann, "delayed");
    await waitStatus(bob, "delayed");
    assert.match(await ann.locator("#status-text").textContent(), /delivery delayed/);
    assert.equal(await ann.locator("#send").isDisabled(), false, "a delayed page can still send");

    await send(ann, "said while redis was down");
    await until(ann, "the say shown as delayed", () =>
      [...document.querySelectorAll(".log:not([hidden]) li.msg.pending")].some((li) =>
        li.querySelector(".text").textContent === "said while redis was down" &&
        li.querySelector(".tag").textContent === "delayed"));
    await ann.screenshot({ path: path.join(SHOTS, "chat-delayed.png") });

    await redis.start(); // the same port, empty
    await waitStatus(ann, "connected");
    await waitStatus(bob, "connected");
    await waitMessage(bob, "ann", "said while redis was down");
    await waitMessage(ann, "ann", "said while redis was down", "msg.mine:not(.pending)");
    const count = (page) => page.$$eval(".log:not([hidden]) li.msg .text", (ts) =>
      ts.filter((t) => t.textContent === "said while redis was down").length);
    await sleep(300);
    assert.equal(await count(ann), 1, "the pending item gave way to the say");
    assert.equal(await count(bob), 1);
    await ann.screenshot({ path: path.join(SHOTS, "chat-delivered.png") });
  });

  test("the pages ran without script errors", () => {
    assert.deepEqual(pageErrors, []);
  });
});
