// What the browser tests share: the real `switchboard serve` process and headless Chromium.
//
// Env: SWITCHBOARD_BIN — path of the server binary (default: <repo>/target/debug/switchboard);
//      CHROMIUM_PATH — Chromium executable (default: /usr/bin/chromium).
// Readiness comes from the server's `listening on ADDR` stdout line (no fixed sleeps).

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = dirname(fileURLToPath(import.meta.url));
export const SERVER_BIN =
  process.env.SWITCHBOARD_BIN || resolve(HERE, '..', '..', 'target', 'debug', 'switchboard');

const STARTUP_TIMEOUT_MS = 30_000;
const LOG_WAIT_MS = 10_000;
const STDERR_KEEP = 64 * 1024;

/** Every process started, so none outlives the test run. */
export const servers = [];

process.on('exit', () => {
  for (const s of servers) if (s.proc && !s.exit) s.proc.kill('SIGKILL');
});

/** One running `switchboard serve ARGS…`. */
export class SwitchboardProcess {
  /** `args` after `serve`, e.g. `['--listen', '127.0.0.1:0']`. */
  constructor(args) {
    this.args = args;
    this.stderr = '';
    this.exit = null; // { code, signal } once it exited
    this.proc = null;
    this.addr = null;
  }

  /** Spawn; resolve with the address from its `listening on ADDR` stdout line. */
  start() {
    if (!existsSync(SERVER_BIN)) {
      throw new Error(
        `server binary not found at ${SERVER_BIN} — build it first (cargo build) or set SWITCHBOARD_BIN`,
      );
    }
    const proc = spawn(SERVER_BIN, ['serve', ...this.args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_BACKTRACE: '1', NO_COLOR: '1' },
    });
    this.proc = proc;
    servers.push(this);
    // Always drain stderr (a full pipe would block the server); keep the tail for diagnostics.
    proc.stderr.setEncoding('utf8');
    proc.stderr.on('data', (chunk) => {
      this.stderr = (this.stderr + chunk).slice(-STDERR_KEEP);
    });
    return new Promise((resolvePromise, reject) => {
      let settled = false;
      const finish = (err, value) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err) reject(err);
        else resolvePromise(value);
      };
      const timer = setTimeout(() => {
        finish(
          new Error(
            `server did not print "listening on ADDR" within ${STARTUP_TIMEOUT_MS / 1000} s ` +
              `(${SERVER_BIN}); stderr tail:\n${this.stderr}`,
          ),
        );
      }, STARTUP_TIMEOUT_MS);
      createInterface({ input: proc.stdout }).on('line', (line) => {
        const m = /listening on (\S+)/.exec(line);
        if (m) {
          this.addr = m[1];
          finish(null, m[1]);
        }
      });
      proc.on('error', (err) => finish(new Error(`cannot start ${SERVER_BIN}: ${err.message}`)));
      proc.on('exit', (code, signal) => {
        this.exit = { code, signal };
        finish(
          new Error(
            `server exited before it was ready (code ${code}, signal ${signal}); stderr tail:\n` +
              this.stderr,
          ),
        );
      });
    });
  }

  /** Resolves once stderr matches `re` (the log is written asynchronously), or rejects. */
  async waitForLog(re, what) {
    const deadline = Date.now() + LOG_WAIT_MS;
    while (!re.test(this.stderr)) {
      if (Date.now() > deadline) {
        throw new Error(`server log never showed ${what}; stderr tail:\n${this.stderr}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** SIGTERM (graceful shutdown), SIGKILL after 5 s; resolves once the process is gone. */
  async stop() {
    const proc = this.proc;
    if (!proc) return;
    if (!this.exit) {
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      let timer;
      const timedOut = new Promise((r) => {
        timer = setTimeout(() => r('timeout'), 5_000);
      });
      if ((await Promise.race([exited, timedOut])) === 'timeout') {
        proc.kill('SIGKILL');
        await exited;
      }
      clearTimeout(timer);
    }
    // Do not let pipes inherited by any stray grandchild keep the test process alive.
    proc.stdout.destroy();
    proc.stderr.destroy();
  }
}

/** Headless Chromium with the flags this machine needs (no sandbox as root, no network calls). */
export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}
