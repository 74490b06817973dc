// What the Node and browser tests share: the real `switchboard serve` process (port 0, readiness
// from its `listening on ADDR` line), a TCP proxy that cuts connections abruptly (no close frame,
// like a lost network; Playwright's offline mode cannot, playwright#4910), HS256 tokens, waiting.
//
// Env: SWITCHBOARD_BIN (default <repo>/target/debug/switchboard), CHROMIUM_PATH (/usr/bin/chromium).

import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
export const SERVER_BIN = process.env.SWITCHBOARD_BIN || resolve(HERE, '..', '..', '..', 'target', 'debug', 'switchboard');
export const SECRET = 'sdk-js-tests-secret-of-at-least-32-bytes!';

const started = [];
process.on('exit', () => {
  for (const s of started) if (s.proc && s.exit === null) s.proc.kill('SIGKILL');
});

/** One running `switchboard serve ARGS…`. */
export class Server {
  constructor(args = [], env = {}) {
    this.args = args;
    this.env = env;
    this.stderr = '';
    this.exit = null;
    this.proc = null;
    this.addr = null;
  }

  /** A server that requires tokens (HS256 with SECRET); `leeway` in the TOML `[auth]` table. */
  static withAuth(extraArgs = [], leeway = '0s') {
    const dir = mkdtempSync(join(tmpdir(), 'sb-sdk-'));
    const config = join(dir, 'switchboard.toml');
    writeFileSync(config, `[auth]\nleeway = "${leeway}"\n`);
    return new Server(['--config', config, ...extraArgs], { SWITCHBOARD_AUTH_SECRET: SECRET });
  }

  async start(listen = '127.0.0.1:0') {
    if (!existsSync(SERVER_BIN)) throw new Error(`server binary not found at ${SERVER_BIN}: build it (cargo build) or set SWITCHBOARD_BIN`);
    const proc = spawn(SERVER_BIN, ['serve', '--listen', listen, ...this.args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, NO_COLOR: '1', ...this.env },
    });
    this.proc = proc;
    this.exit = null;
    started.push(this);
    proc.stderr.setEncoding('utf8');
    proc.stderr.on('data', (c) => {
      this.stderr = (this.stderr + c).slice(-65536);
    });
    return new Promise((ok, fail) => {
      const timer = setTimeout(() => fail(new Error(`server not ready in 30 s; stderr:\n${this.stderr}`)), 30_000);
      createInterface({ input: proc.stdout }).on('line', (line) => {
        const m = /listening on (\S+)/.exec(line);
        if (m) {
          clearTimeout(timer);
          this.addr = m[1];
          ok(m[1]);
        }
      });
      proc.on('exit', (code, signal) => {
        this.exit = { code, signal };
        clearTimeout(timer);
        fail(new Error(`server exited (code ${code}, signal ${signal}); stderr:\n${this.stderr}`));
      });
    });
  }

  /** SIGTERM (graceful: close 1001), SIGKILL after 5 s. */
  async stop() {
    const proc = this.proc;
    if (!proc || this.exit !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGTERM');
    const t = setTimeout(() => proc.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(t);
    proc.stdout.destroy();
    proc.stderr.destroy();
  }
}

/** A TCP proxy in front of `target` ("host:port") whose `cut()` drops every connection with a reset. */
export class CutProxy {
  constructor(target) {
    const [host, port] = target.split(':');
    this.target = { host, port: Number(port) };
    this.pairs = new Set();
    this.cuts = 0;
    this.paused = false;
    this.server = createServer((down) => {
      if (this.paused) {
        down.resetAndDestroy(); // the network is down: connection attempts fail
        return;
      }
      const up = createConnection(this.target);
      const pair = { down, up };
      this.pairs.add(pair);
      const end = () => {
        this.pairs.delete(pair);
        down.destroy();
        up.destroy();
      };
      down.on('error', end).on('close', end);
      up.on('error', end).on('close', end);
      down.pipe(up);
      up.pipe(down);
    });
  }

  listen() {
    return new Promise((r) => this.server.listen(0, '127.0.0.1', () => r(`127.0.0.1:${this.server.address().port}`)));
  }

  /** Drops every open connection at once, with a TCP reset on the client side: no close frame. */
  cut() {
    this.cuts++;
    for (const { down, up } of this.pairs) {
      down.resetAndDestroy();
      up.destroy();
    }
    this.pairs.clear();
  }

  /** Cuts every connection and refuses new ones until `resume()`: an outage of any length. */
  pause() {
    this.paused = true;
    this.cut();
  }

  resume() {
    this.paused = false;
  }

  get open() {
    return this.pairs.size;
  }

  close() {
    this.cut();
    return new Promise((r) => this.server.close(() => r()));
  }
}

/** An HS256 JWT for `sub` that expires `ttl` seconds from now. */
export function mintToken(sub, ttlSeconds, secret = SECRET) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, exp: Math.floor(Date.now() / 1000) + ttlSeconds })}`;
  return `${head}.${createHmac('sha256', secret).update(head).digest('base64url')}`;
}

/** Resolves when `cond()` holds (polled every 20 ms), or rejects after `ms` with `what`. */
export async function until(cond, what, ms = 15_000) {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Resolves with the first event `name` on `client` for which `pred` holds. */
export function nextEvent(client, name, pred = () => true, ms = 15_000) {
  return new Promise((ok, fail) => {
    const t = setTimeout(() => {
      client.off(name, h);
      fail(new Error(`no ${name} event within ${ms} ms`));
    }, ms);
    const h = (...args) => {
      if (!pred(...args)) return;
      clearTimeout(t);
      client.off(name, h);
      ok(args.length > 1 ? args : args[0]);
    };
    client.on(name, h);
  });
}
