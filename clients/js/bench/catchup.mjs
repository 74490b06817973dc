// Catch-up time after a reconnect, with N Node clients under churn (like `switchboard bench jitter`).
//
//   node bench/catchup.mjs [--clients 100] [--seconds 60] [--rate 200] [--cut-every 15]
//
// Starts `switchboard serve` (SWITCHBOARD_BIN) on a free port, a TCP proxy in front of it that
// cuts client connections abruptly, one publisher (direct) at --rate messages/s into one room, and
// --clients subscribers (through the proxy). Each subscriber's connection is cut at a random moment
// about every --cut-every seconds. For every reconnect it measures
//   catch-up = time from the new socket's open to the delivery of the last message that had been
//              published when it opened (everything missed is then delivered),
// and it checks every subscriber received every message exactly once, in order. Prints p50/p99/max.
import WebSocket from 'ws';
import { Client } from '../dist/switchboard.js';
import { CutProxy, Server } from '../test/support.mjs';

const arg = (name, def) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
};
const CLIENTS = arg('clients', 100);
const SECONDS = arg('seconds', 60);
const RATE = arg('rate', 200);
const CUT_EVERY = arg('cut-every', 15);

const server = new Server(['--rate-limit', '100000', '--rate-burst', '100000', '--ip-connect-rate', '100000', '--ip-connect-burst', '100000', '--log', 'warn']);
await server.start();
const proxy = new CutProxy(server.addr);
const via = await proxy.listen();

let published = 0; // highest seq acked to the publisher
const pub = new Client(`ws://${server.addr}/ws`, { WebSocket, user: 'publisher', rateLimit: false, echo: false });
await pub.connect();
await pub.join('churn');

const samples = [];
const subs = [];
let resyncs = 0;
let outOfOrder = 0;
for (let i = 0; i < CLIENTS; i++) {
  const sub = { last: 0, target: null, openedAt: 0, reconnects: 0, sockets: new Set() };
  // Track this client's sockets so that it alone can be cut.
  const Tracked = class extends WebSocket {
    constructor(url) {
      super(url);
      sub.sockets.add(this);
      this.on('close', () => sub.sockets.delete(this));
    }
  };
  const c = new Client(`ws://${via}/ws`, { WebSocket: Tracked, user: `sub-${i}`, rateLimit: false, backoff: { base: 500, cap: 5_000 } });
  c.on('state', (st) => {
    if (st === 'connected' && sub.reconnects++ > 0) {
      sub.openedAt = performance.now();
      sub.target = published;
    }
  });
  c.on('message', (m) => {
    if (m.data !== sub.last + 1) outOfOrder++;
    sub.last = m.data;
    if (sub.target !== null && m.data >= sub.target) {
      samples.push(performance.now() - sub.openedAt);
      sub.target = null;
    }
  });
  c.on('resync', () => resyncs++);
  sub.client = c;
  subs.push(sub);
}
await Promise.all(subs.map((s) => s.client.connect()));
await Promise.all(subs.map((s) => s.client.join('churn')));

// Cut each subscriber's connection at a random moment in every CUT_EVERY-second window.
const cutTimers = subs.map((s) => {
  const cut = () => {
    for (const ws of s.sockets) ws._socket?.resetAndDestroy?.();
    s.timer = setTimeout(cut, CUT_EVERY * 1000 * (0.5 + Math.random()));
  };
  s.timer = setTimeout(cut, CUT_EVERY * 1000 * Math.random());
  return s;
});

const start = performance.now();
let n = 0;
await new Promise((done) => {
  const tick = setInterval(() => {
    const due = Math.floor(((performance.now() - start) / 1000) * RATE);
    while (n < due) {
      n++;
      const v = n;
      pub.publish('churn', v).then((r) => {
        published = Math.max(published, r.seq);
      });
    }
    if (performance.now() - start > SECONDS * 1000) {
      clearInterval(tick);
      done();
    }
  }, 10);
});
for (const s of cutTimers) clearTimeout(s.timer);
// Let everyone catch up, then check completeness.
const deadline = performance.now() + 30_000;
while (subs.some((s) => s.last < n) && performance.now() < deadline) await new Promise((r) => setTimeout(r, 100));
const complete = subs.filter((s) => s.last === n).length;

samples.sort((a, b) => a - b);
const q = (p) => samples[Math.min(samples.length - 1, Math.floor(p * samples.length))]?.toFixed(1);
console.log(
  JSON.stringify({
    clients: CLIENTS,
    seconds: SECONDS,
    rate: RATE,
    cutEverySeconds: CUT_EVERY,
    messages: n,
    reconnects: samples.length,
    catchupMs: { p50: q(0.5), p99: q(0.99), max: samples.at(-1)?.toFixed(1) },
    subscribersWithEveryMessage: `${complete}/${CLIENTS}`,
    outOfOrderOrDuplicate: outOfOrder,
    resyncs,
  }),
);
for (const s of subs) s.client.close();
pub.close();
await proxy.close();
await server.stop();
process.exit(0);
