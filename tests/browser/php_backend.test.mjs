// The PHP example (examples/php-backend) in a real browser: Debian's chromium,
// headless, driven by playwright-core, against the example's own run.sh
// (redis-server, moonwire, php -S and the archive worker on free 127.0.0.1
// ports). Two people log in through the PHP form, the chat page connects to
// moonwire with the token PHP signed, they chat under their user names, and
// the admin's announcements (one through the HTTP API, one through the Redis
// stream) show in their room. Every wait is bounded; screenshots go to
// build/browser/.
//
//   make test-browser          (installs chromium, php and node_modules first)
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";
import { BIN, CHROMIUM, ROOT, SHOTS, freePort, portOpen, sleep, timeout } from "./helpers.mjs";

const WAIT = 10_000; // ms, any one thing a page should show

// Why the example can not run here, or false.
function phpMissing() {
  let modules;
  try {
    modules = execFileSync("php", ["-m"], { encoding: "utf8", timeout: 10_000 }).split("\n");
  } catch {
    return "php-cli is not installed (make deps-test installs php-cli php-redis php-curl php-sqlite3)";
  }
  const lacking = ["redis", "curl", "sqlite3", "pcntl"].filter((m) => !modules.includes(m));
  if (lacking.length) return `PHP lacks ${lacking.join(", ")} (make deps-test installs php-redis php-curl php-sqlite3)`;
  try {
    execFileSync("redis-server", ["--version"], { timeout: 10_000 });
  } catch {
    return "redis-server is not installed (make deps-test)";
  }
  return false;
}
const SKIP = phpMissing();

async function until(page, what, fn, arg) {
  try {
    return await page.waitForFunction(fn, arg, { timeout: WAIT, polling: 50 });
  } catch (e) {
    const shown = await page.evaluate(() => document.body.innerText).catch(() => "?");
    throw new Error(`timed out after ${WAIT} ms waiting for ${what}; the page shows:\n${shown}\n${e.message}`);
  }
}

function waitLine(page, cls, from, text) {
  return until(page, `a ${cls} from ${from}: ${text}`, ([cls, from, text]) =>
    [...document.querySelectorAll(`#log li.${cls}`)].some((li) =>
      li.querySelector(".from").textContent.startsWith(from) && li.querySelector(".text").textContent === text),
  [cls, from, text]);
}

describe("the PHP example in a browser", { timeout: 120_000, skip: SKIP }, () => {
  let tmp, proc, exited, browser, url;
  const ports = {};
  const pageErrors = [];

  before(async () => {
    assert.ok(fs.existsSync(BIN), `no server binary at ${BIN} (make build, or set MW_BIN)`);
    assert.ok(fs.existsSync(CHROMIUM), `no browser at ${CHROMIUM} (make deps-test)`);
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "mw-browser-php-"));
    fs.mkdirSync(SHOTS, { recursive: true });
    for (const k of ["PORT", "MW_PORT", "REDIS_PORT"]) ports[k] = String(await freePort());
    const out = fs.openSync(path.join(tmp, "run.out"), "a");
    // detached: a process group of its own, so that nothing outlives the test.
    proc = spawn(path.join(ROOT, "examples/php-backend/run.sh"), [], {
      cwd: ROOT, detached: true, stdio: ["ignore", out, out],
      env: { ...process.env, ...ports, MW_BIN: BIN, WORK_DIR: tmp },
    });
    fs.closeSync(out);
    exited = new Promise((resolve) => proc.once("exit", (code, signal) => resolve({ code, signal })));
    const deadline = Date.now() + 20_000;
    while (!(await portOpen(Number(ports.PORT))) || !(await portOpen(Number(ports.MW_PORT)))) {
      if (proc.exitCode !== null) throw new Error(`run.sh exited:\n${fs.readFileSync(path.join(tmp, "run.out"), "utf8")}`);
      if (Date.now() > deadline) throw new Error("run.sh did not start everything within 20 s");
      await sleep(50);
    }
    url = `http://127.0.0.1:${ports.PORT}`;
    browser = await chromium.launch({
      executablePath: CHROMIUM, headless: true, timeout: 30_000,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    });
  });

  after(async () => {
    try {
      if (browser) await Promise.race([browser.close(), timeout(10_000)]);
    } finally {
      if (proc && proc.exitCode === null) {
        proc.kill("SIGINT"); // as Ctrl-C: run.sh stops what it started
        await Promise.race([exited, timeout(20_000)]);
      }
      try { process.kill(-proc.pid, "SIGKILL"); } catch { /* all gone */ }
      if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  async function newPage() {
    const context = await browser.newContext({ viewport: { width: 1000, height: 640 } });
    const page = await context.newPage();
    page.on("pageerror", (e) => pageErrors.push(e.message));
    return page;
  }

  async function login(page, user, password) {
    await page.goto(`${url}/index.php`, { timeout: WAIT });
    await page.fill("#user", user, { timeout: WAIT });
    await page.fill("#password", password, { timeout: WAIT });
    await page.click("#login-form button[type=submit]", { timeout: WAIT });
  }

  let ann, bob;

  test("a wrong password stays on the form and says so", async () => {
    const page = await newPage();
    await login(page, "ann", "guess");
    await until(page, "the login error", () => (document.getElementById("login-error") || {}).textContent
      === "Unknown user or wrong password.");
  });

  test("two users log in, connect with their tokens and chat under their names", async () => {
    ann = await newPage();
    bob = await newPage();
    await login(ann, "ann", "wonderland");
    await login(bob, "bob", "builder");
    for (const page of [ann, bob]) {
      await until(page, "connected", () => document.getElementById("status").dataset.state === "connected");
    }
    await until(ann, "both members", () => document.getElementById("members").innerText.split("\n").join(",") === "ann,bob");
    await ann.fill("#text", "hello bob", { timeout: WAIT });
    await ann.press("#text", "Enter", { timeout: WAIT });
    await waitLine(bob, "msg", "ann", "hello bob");
    await bob.fill("#text", "hi ann", { timeout: WAIT });
    await bob.press("#text", "Enter", { timeout: WAIT });
    await waitLine(ann, "msg", "bob", "hi ann");
  });

  test("the admin's announcements, through the HTTP API and through the stream, show in the room", async () => {
    const admin = await newPage();
    await login(admin, "admin", "admin-secret");
    await until(admin, "the admin page", () => !!document.getElementById("announce-form"));
    for (const via of ["api", "stream"]) {
      await admin.fill("#room", "lobby", { timeout: WAIT });
      await admin.fill("#text", `announced through the ${via}`, { timeout: WAIT });
      await admin.click(`#via-${via}`, { timeout: WAIT });
      await until(admin, "the result", () => !!document.getElementById("result"));
      for (const page of [ann, bob]) await waitLine(page, "announcement", `admin (via ${via})`, `announced through the ${via}`);
    }
    await ann.screenshot({ path: path.join(SHOTS, "php-backend-chat.png") });
    // The archive: the says, stored by worker.php, on the admin page.
    const deadline = Date.now() + WAIT;
    for (;;) {
      await admin.goto(`${url}/admin.php`, { timeout: WAIT });
      const table = await admin.innerText("#archive");
      if (table.includes("hello bob") && table.includes("hi ann")) break;
      assert.ok(Date.now() < deadline, `the says are not in the archive: ${table}`);
      await sleep(200);
    }
    await admin.screenshot({ path: path.join(SHOTS, "php-backend-admin.png") });
    assert.deepEqual(pageErrors, []);
  });
});
