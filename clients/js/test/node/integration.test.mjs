// The client in Node 20 (with the `ws` package) against the real server: delivery across abrupt
// cuts, idempotent re-sends, resync after a restart, token refresh, refusals, history and binary.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import WebSocket from 'ws';
import { Client } from '../../dist/switchboard.js';
import { CutProxy, mintToken, nextEvent, Server, until } from '../support.mjs';

const servers = [];
const proxies = [];
const clients = [];

after(async () => {
  for (const c of clients) c.close();
  await Promise.all(proxies.map((p) => p.close()));
  await Promise.all(servers.map((s) => s.stop()));
});

// The tests publish faster than the default 30 messages/s per connection.
const FAST = ['--rate-limit', '100000', '--rate-burst', '100000'];

async function server(args = FAST, s = new Server(args)) {
  servers.push(s);
  await s.start();
  return s;
}

async function proxyTo(addr) {
  const p = new CutProxy(addr);
  proxies.push(p);
  return { proxy: p, addr: await p.listen() };
}

function client(addr, options = {}) {
  const c = new Client(`ws://${addr}/ws`, { WebSocket, rateLimit: false, backoff: { base: 50, cap: 500 }, ...options });
  clients.push(c);
  return c;
}

describe('Node client against the real server', { timeout: 120_000 }, () => {
  test('publish, receive, ack and presence between two clients', async () => {
    const s = await server();
    const alice = client(s.addr, { user: 'alice' });
    const bob = client(s.addr, { user: 'bob' });
    await Promise.all([alice.connect(), bob.connect()]);
    await alice.join('lobby');
    const bobJoined = nextEvent(alice, 'presence', (p) => p.joins.includes('bob'));
    const j = await bob.join('lobby');
    assert.deepEqual([...j.members].sort(), ['alice', 'bob']);
    await bobJoined;
    const got = nextEvent(bob, 'message');
    const ack = await alice.publish('lobby', { text: 'hi bob' });
    assert.deepEqual(ack, { seq: 1, duplicate: false });
    const m = await got;
    assert.deepEqual([m.from, m.seq, m.data], ['alice', 1, { text: 'hi bob' }]);
  });

  test('a re-used msg_id is acked as a duplicate and delivered once', async () => {
    const s = await server();
    const alice = client(s.addr, { user: 'alice2' });
    await alice.connect();
    await alice.join('dup');
    const seen = [];
    alice.on('message', (m) => seen.push(m.seq));
    const first = await alice.publish('dup', 'x', { msgId: 'same' });
    const again = await alice.publish('dup', 'x', { msgId: 'same' });
    assert.deepEqual(again, { seq: first.seq, duplicate: true });
    await alice.publish('dup', 'y');
    await until(() => seen.length === 2, 'two echoed messages');
    assert.deepEqual(seen, [1, 2]);
  });

  test('history and binary messages round-trip', async () => {
    const s = await server();
    const a = client(s.addr, { user: 'a' });
    const b = client(s.addr, { user: 'b' });
    await Promise.all([a.connect(), b.connect()]);
    await a.join('files');
    await b.join('files');
    const got = nextEvent(b, 'message');
    await a.publish('files', new Uint8Array([0, 0x9f, 0x92, 0x96, 0xff]));
    const m = await got;
    assert.deepEqual([m.binary, [...m.data], m.from], [true, [0, 0x9f, 0x92, 0x96, 0xff], 'a']);
    await a.publish('files', { name: 'notes.bin' });
    const h = await b.history('files', { limit: 10 });
    assert.deepEqual(h.messages.map((x) => [x.seq, x.binary]), [[1, true], [2, false]]);
    assert.deepEqual([...h.messages[0].data], [0, 0x9f, 0x92, 0x96, 0xff]);
  });

  test('every message exactly once and in order while both sides lose their connections 6 times', async () => {
    // History large enough that a cut never outruns it (that case is a `resync`, tested below).
    const s = await server([...FAST, '--history-size', '1000']);
    const { proxy, addr } = await proxyTo(s.addr);
    const sub = client(addr, { user: 'sub' });
    const pub = client(addr, { user: 'pub' });
    await Promise.all([sub.connect(), pub.connect()]);
    await sub.join('feed');
    await pub.join('feed');
    const got = [];
    sub.on('message', (m) => got.push(m.data));
    const resyncs = [];
    sub.on('resync', (r) => resyncs.push(r));
    const N = 600;
    const acks = [];
    for (let i = 1; i <= N; i++) {
      acks.push(pub.publish('feed', i));
      if (i % 100 === 0) {
        // Let some go out, then cut both clients' connections mid-stream (acks in flight get lost).
        await new Promise((r) => setTimeout(r, 5));
        proxy.cut();
      }
    }
    const results = await Promise.all(acks);
    await until(() => got.length >= N, `${N} messages (have ${got.length})`, 30_000);
    assert.ok(proxy.cuts >= 6);
    assert.deepEqual(resyncs, []);
    assert.deepEqual(got, Array.from({ length: N }, (_, i) => i + 1), 'each exactly once, in order');
    // Each publish got one seq, and the seqs are the room's 1..N: re-sent publishes were not sequenced twice.
    assert.deepEqual(results.map((r) => r.seq).sort((x, y) => x - y), Array.from({ length: N }, (_, i) => i + 1));
  });

  test('a server restart surfaces resync with the new epoch; the room is re-joined', async () => {
    const s = await server();
    const c = client(s.addr, { user: 'carol' });
    await c.connect();
    const j = await c.join('lobby');
    await c.publish('lobby', 'before');
    await s.stop();
    const resync = nextEvent(c, 'resync');
    await s.start(s.addr);
    const r = await resync;
    assert.equal(r.reason, 'epoch');
    assert.notEqual(r.epoch, j.epoch);
    assert.deepEqual(r.previous, { seq: 1, epoch: j.epoch });
    const ack = await c.publish('lobby', 'after');
    assert.equal(ack.seq, 1);
  });

  test('token refresh keeps one connection alive past the first token’s exp', async () => {
    const s = await server([], Server.withAuth());
    let calls = 0;
    const c = client(s.addr, {
      getToken: async () => {
        calls++;
        return mintToken('tina', 4);
      },
    });
    const states = [];
    c.on('state', (st) => states.push(st));
    await c.connect();
    await c.join('t');
    const firstExp = Date.now() + 4_000;
    // Well past the first token's exp (the server's leeway is 0 s here): still the same connection.
    await until(() => Date.now() > firstExp + 4_000, 'time to pass', 10_000);
    assert.ok(calls >= 3, `getToken called for the connection and at least two refreshes (${calls})`);
    assert.deepEqual(states, ['connecting', 'connected'], 'never disconnected');
    assert.equal((await c.publish('t', 'still here')).duplicate, false);
  });

  test('without getToken the server closes at exp with 4001 and the client stops', async () => {
    const s = await server([], Server.withAuth());
    const c = client(s.addr, { token: mintToken('uma', 2) });
    await c.connect();
    const [state, detail] = await nextEvent(c, 'state', (st) => st === 'closed', 10_000);
    assert.equal(state, 'closed');
    assert.equal(detail.closeCode, 4001);
    assert.equal(detail.error.code, 'token_expired');
  });

  test('a refused upgrade (401) is reported with its status, and is terminal without getToken', async () => {
    const s = await server([], Server.withAuth());
    const c = client(s.addr, { token: 'not-a-jwt' });
    const err = nextEvent(c, 'error');
    await assert.rejects(c.connect(), (e) => e.code === 'refused' && e.status === 401);
    assert.equal((await err).status, 401);
    assert.equal(c.state, 'closed');
  });
});
