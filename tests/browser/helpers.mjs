// Shared by deflate.test.mjs and tls.test.mjs: free ports, bounded waits and
// one moonwire process stopped by its PID (TERM, then KILL after a bounded
// wait). Not a test file itself (node --test only runs *.test.mjs here).
import { spawn, execFileSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const BIN = process.env.MW_BIN || path.join(ROOT, "build", "moonwire");
export const CHROMIUM = process.env.MW_CHROMIUM || "/usr/bin/chromium";
export const SHOTS = path.join(ROOT, "build", "browser");

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// For Promise.race: resolves "timeout" after ms without keeping node alive.
export const timeout = (ms) => new Promise((r) => setTimeout(r, ms, "timeout").unref());

// Rejects with `what` when promise has not settled within ms.
export async function within(ms, what, promise) {
  let timer;
  const expired = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export function portOpen(port) {
  return new Promise((resolve) => {
    const c = net.connect({ port, host: "127.0.0.1" });
    const done = (ok) => { c.destroy(); resolve(ok); };
    c.setTimeout(200, () => done(false));
    c.once("connect", () => done(true));
    c.once("error", () => done(false));
  });
}

// A self-signed P-256 certificate for 127.0.0.1 and localhost, made with the
// openssl command line as examples/tls/make-cert.sh does.
export function makeCert(dir, name = "server") {
  const cert = path.join(dir, `${name}.crt`);
  const key = path.join(dir, `${name}.key`);
  execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
    "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], { stdio: "pipe", timeout: 30_000 });
  return { cert, key };
}

// Servers still running when node exits (a crash in a test) are killed by PID.
const running = new Set();
process.on("exit", () => {
  for (const p of running) {
    try { process.kill(p.pid, "SIGKILL"); } catch { /* already gone */ }
  }
});

// One moonwire process started from the repository root with `args`; its
// output goes to logPath. start() waits (bounded) until every port in
// `ports` accepts connections.
export class Server {
  constructor({ args, ports, logPath }) {
    this.args = args;
    this.ports = ports;
    this.port = ports[0];
    this.logPath = logPath;
    this.proc = null;
  }

  async start() {
    const log = fs.openSync(this.logPath, "a");
    this.proc = spawn(BIN, [...this.args, "--log-level", "debug"], { cwd: ROOT, stdio: ["ignore", log, log] });
    fs.closeSync(log);
    running.add(this.proc);
    this.exited = new Promise((resolve) => this.proc.once("exit", (code, signal) => {
      running.delete(this.proc);
      resolve({ code, signal });
    }));
    const deadline = Date.now() + 10_000;
    for (const port of this.ports) {
      for (;;) {
        if (this.proc.exitCode !== null || this.proc.signalCode !== null)
          throw new Error(`moonwire exited at start:\n${this.log()}`);
        if (await portOpen(port)) break;
        if (Date.now() > deadline) {
          await this.stop();
          throw new Error(`moonwire did not listen on ${port} within 10 s:\n${this.log()}`);
        }
        await sleep(25);
      }
    }
  }

  get pid() { return this.proc && this.proc.pid; }

  alive() { return !!this.proc && this.proc.exitCode === null && this.proc.signalCode === null; }

  // SIGTERM, then SIGKILL after a bounded wait. Safe to call twice. Returns
  // how it ended: { code, signal }, or null when it was not running.
  async stop() {
    const p = this.proc;
    if (!p) return null;
    if (p.exitCode === null && p.signalCode === null) {
      p.kill("SIGTERM");
      if ((await Promise.race([this.exited, timeout(8000)])) === "timeout") {
        p.kill("SIGKILL");
        await Promise.race([this.exited, timeout(2000)]);
      }
    }
    return Promise.race([this.exited, timeout(100)]);
  }

  log() {
    try { return fs.readFileSync(this.logPath, "utf8").slice(-4000); } catch { return "(no log)"; }
  }

  // Fails when the log holds a crash or sanitizer report.
  checkClean() {
    const text = this.log();
    for (const marker of ["ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
      "Segmentation fault", "PANIC"]) {
      if (text.includes(marker)) throw new Error(`${marker} in the server log:\n${text}`);
    }
  }
}
