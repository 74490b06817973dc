// Unit tests of the client's state machine against a fake socket (test/fake.mjs), with mocked time.
// They test the built bundle (dist/switchboard.js), the file the server serves.
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, mock, test } from 'node:test';
import { Client } from '../../dist/switchboard.js';
import { FakeNet, settle } from '../fake.mjs';

const E1 = 'aaaaaaaaaaaaaaaa';
const E2 = 'bbbbbbbbbbbbbbbb';

function msg(room, seq, from = 'bob', data = { n: seq }) {
  return { type: 'message', room, from, data, seq, ts: 1_700_000_000_000 + seq };
}

/** A client over a fake net, with its events recorded; jitter fixed at half the bound. */
function setup(options = {}) {
  const net = new FakeNet();
  const client = new Client('ws://sb.test/ws', { user: 'alice', transport: net.factory, random: () => 0.5, ...options });
  const ev = { message: [], presence: [], typing: [], state: [], resync: [], error: [] };
  client.on('message', (m) => ev.message.push(m));
  client.on('presence', (p) => ev.presence.push(p));
  client.on('typing', (t) => ev.typing.push(t));
  client.on('state', (s, d) => ev.state.push([s, d]));
  client.on('resync', (r) => ev.resync.push(r));
  client.on('error', (e) => ev.error.push(e));
  return { net, client, ev };
}

/** Connects and joins `room` at (seq, epoch); returns the connection. */
async function joined(net, client, room = 'lobby', seq = 0, epoch = E1, extra = {}) {
  const connected = client.connect();
  net.last.open();
  await connected;
  const j = client.join(room);
  const req = net.last.lastOf('join');
  net.last.recv({ type: 'joined', room, id: req.id, members: ['alice'], seq, epoch, ...extra });
  await j;
  return net.last;
}

/** Drops the connection, lets the backoff run out, opens the next one. */
async function reconnect(net) {
  const before = net.conns.length;
  net.last.drop();
  mock.timers.tick(30_000);
  assert.equal(net.conns.length, before + 1, 'a new connection was opened');
  net.last.open();
  await settle();
  return net.last;
}

beforeEach(() => mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 1_700_000_000_000 }));
afterEach(() => mock.timers.reset());

describe('connect and join', () => {
  test('user goes into the query; join resolves with members, seq, epoch and counts', async () => {
    const { net, client } = setup();
    const connected = client.connect();
    assert.equal(client.state, 'connecting');
    assert.equal(net.last.url, 'ws://sb.test/ws?user=alice');
    net.last.open();
    await connected;
    assert.equal(client.state, 'connected');
    const j = client.join('lobby');
    assert.deepEqual(net.last.lastOf('join'), { type: 'join', room: 'lobby', id: net.last.lastOf('join').id });
    net.last.recv({ type: 'joined', room: 'lobby', id: net.last.lastOf('join').id, members: ['alice', 'bob'], seq: 7, epoch: E1 });
    const r = await j;
    assert.deepEqual(r, { room: 'lobby', members: ['alice', 'bob'], memberCount: 2, membersTruncated: false, seq: 7, epoch: E1 });
    assert.deepEqual(client.position('lobby'), { seq: 7, epoch: E1 });
  });

  test('a join made before the connection opens is sent once it opens', async () => {
    const { net, client } = setup();
    client.connect();
    const j = client.join('lobby');
    assert.equal(net.last.json().length, 0);
    net.last.open();
    const req = net.last.lastOf('join');
    assert.equal(req.room, 'lobby');
    net.last.recv({ type: 'joined', room: 'lobby', id: req.id, members: [], seq: 0, epoch: E1 });
    assert.equal((await j).seq, 0);
  });

  test('a forbidden join rejects and the room is not re-joined', async () => {
    const { net, client } = setup();
    client.connect();
    net.last.open();
    const j = client.join('admin');
    net.last.recv({ type: 'error', id: net.last.lastOf('join').id, code: 'forbidden', message: 'no' });
    await assert.rejects(j, (e) => e.code === 'forbidden' && e.room === 'admin');
    const c = await reconnect(net);
    assert.equal(c.json().filter((m) => m.type === 'join').length, 0);
  });
});

describe('delivery: exactly once, in seq order, across reconnects', () => {
  test('messages advance the position; repeats are dropped', async () => {
    const { net, client, ev } = setup();
    const c = await joined(net, client, 'lobby', 3);
    for (const s of [4, 5, 5, 4, 6]) c.recv(msg('lobby', s));
    assert.deepEqual(ev.message.map((m) => m.seq), [4, 5, 6]);
    assert.deepEqual(ev.message[0], { room: 'lobby', seq: 4, from: 'bob', data: { n: 4 }, binary: false, ts: 1_700_000_000_004 });
    assert.deepEqual(client.position('lobby'), { seq: 6, epoch: E1 });
  });

  test('after a drop the room is re-joined with since; the replay is delivered once', async () => {
    const { net, client, ev } = setup();
    const c1 = await joined(net, client, 'lobby', 0);
    c1.recv(msg('lobby', 1));
    c1.recv(msg('lobby', 2));
    const c2 = await reconnect(net);
    const rj = c2.lastOf('join');
    assert.deepEqual(rj.since, { seq: 2, epoch: E1 });
    c2.recv({ type: 'joined', room: 'lobby', id: rj.id, members: ['alice'], seq: 5, epoch: E1, recovered: true });
    for (const s of [2, 3, 4, 5, 6]) c2.recv(msg('lobby', s));
    assert.deepEqual(ev.message.map((m) => m.seq), [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(ev.resync, []);
  });

  test('a failed recovery under a new epoch surfaces resync with the new position', async () => {
    const { net, client, ev } = setup();
    const c1 = await joined(net, client, 'lobby', 0);
    c1.recv(msg('lobby', 1));
    const c2 = await reconnect(net);
    const rj = c2.lastOf('join');
    c2.recv({ type: 'joined', room: 'lobby', id: rj.id, members: ['alice'], seq: 0, epoch: E2, recovered: false });
    assert.deepEqual(ev.resync, [{ room: 'lobby', recovered: false, seq: 0, epoch: E2, previous: { seq: 1, epoch: E1 }, reason: 'epoch' }]);
    c2.recv(msg('lobby', 1)); // the new epoch's first message is new, though seq 1 was seen before
    assert.deepEqual(ev.message.map((m) => m.seq), [1, 1]);
  });

  test('a failed recovery under the same epoch is a gap', async () => {
    const { net, client, ev } = setup();
    await joined(net, client, 'lobby', 10);
    const c2 = await reconnect(net);
    c2.recv({ type: 'joined', room: 'lobby', id: c2.lastOf('join').id, members: [], seq: 500, epoch: E1, recovered: false });
    assert.equal(ev.resync[0].reason, 'gap');
    assert.deepEqual(ev.resync[0].previous, { seq: 10, epoch: E1 });
  });

  test('an unsolicited joined with recovered:false is a resync', async () => {
    const { net, client, ev } = setup();
    const c = await joined(net, client, 'lobby', 4);
    c.recv({ type: 'joined', room: 'lobby', members: ['alice'], seq: 9, epoch: E1, recovered: false });
    assert.equal(ev.resync.length, 1);
    c.recv(msg('lobby', 10));
    assert.deepEqual(ev.message.map((m) => m.seq), [10]);
  });

  test('messages of a room that was left are dropped', async () => {
    const { net, client, ev } = setup();
    const c = await joined(net, client, 'lobby', 0);
    const left = client.leave('lobby');
    c.recv({ type: 'left', room: 'lobby', id: c.lastOf('leave').id });
    await left;
    c.recv(msg('lobby', 1));
    assert.deepEqual(ev.message, []);
  });
});

describe('publish', () => {
  test('carries a msg_id and echo; resolves with the ack', async () => {
    const { net, client } = setup();
    const c = await joined(net, client);
    const p = client.publish('lobby', { text: 'hi' });
    const f = c.lastOf('publish');
    assert.equal(f.echo, true);
    assert.match(f.msg_id, /^[0-9a-z]{12}-1$/);
    c.recv({ type: 'ack', id: f.id, seq: 1 });
    assert.deepEqual(await p, { seq: 1, duplicate: false });
  });

  test('an unacked publish is re-sent after the re-join with the same msg_id; a duplicate ack resolves it', async () => {
    const { net, client } = setup();
    const c1 = await joined(net, client);
    const p = client.publish('lobby', 'once', { msgId: 'm-1' });
    assert.equal(c1.lastOf('publish').msg_id, 'm-1');
    const c2 = await reconnect(net);
    assert.equal(c2.lastOf('publish'), undefined, 'not before the room is joined again');
    c2.recv({ type: 'joined', room: 'lobby', id: c2.lastOf('join').id, members: [], seq: 1, epoch: E1, recovered: true });
    const again = c2.lastOf('publish');
    assert.deepEqual([again.msg_id, again.data], ['m-1', 'once']);
    c2.recv({ type: 'ack', id: again.id, seq: 1, duplicate: true });
    assert.deepEqual(await p, { seq: 1, duplicate: true });
  });

  test('publishes made while disconnected wait, in order, and go out after the re-join', async () => {
    const { net, client } = setup();
    await joined(net, client);
    net.last.drop();
    const ps = [client.publish('lobby', 1), client.publish('lobby', 2), client.publish('lobby', 3)];
    mock.timers.tick(30_000);
    net.last.open();
    const c = net.last;
    c.recv({ type: 'joined', room: 'lobby', id: c.lastOf('join').id, members: [], seq: 0, epoch: E1, recovered: true });
    const sent = c.json().filter((m) => m.type === 'publish');
    assert.deepEqual(sent.map((m) => m.data), [1, 2, 3]);
    for (const [i, m] of sent.entries()) c.recv({ type: 'ack', id: m.id, seq: i + 1 });
    assert.deepEqual((await Promise.all(ps)).map((r) => r.seq), [1, 2, 3]);
  });

  test('the buffer is bounded: the publish after maxBuffered fails with buffer_full', async () => {
    const { net, client } = setup({ maxBuffered: 2 });
    await joined(net, client);
    net.last.drop();
    client.publish('lobby', 1);
    client.publish('lobby', 2);
    await assert.rejects(client.publish('lobby', 3), (e) => e.code === 'buffer_full');
  });

  test('publishing to a room not joined fails at once', async () => {
    const { client } = setup();
    await assert.rejects(client.publish('nowhere', 1), (e) => e.code === 'not_joined');
  });

  test('an error reply rejects the publish with its code', async () => {
    const { net, client } = setup();
    const c = await joined(net, client);
    const p = client.publish('lobby', 1);
    c.recv({ type: 'error', id: c.lastOf('publish').id, code: 'forbidden', message: 'not allowed' });
    await assert.rejects(p, (e) => e.code === 'forbidden' && e.message === 'not allowed');
  });

  test('without echo, an acked own seq advances the position (a replay of it is dropped)', async () => {
    const { net, client, ev } = setup({ echo: false });
    const c1 = await joined(net, client);
    const p = client.publish('lobby', 'mine');
    assert.equal(c1.lastOf('publish').echo, undefined);
    c1.recv({ type: 'ack', id: c1.lastOf('publish').id, seq: 1 });
    await p;
    assert.deepEqual(client.position('lobby'), { seq: 1, epoch: E1 });
    const c2 = await reconnect(net);
    c2.recv({ type: 'joined', room: 'lobby', id: c2.lastOf('join').id, members: [], seq: 2, epoch: E1, recovered: true });
    c2.recv(msg('lobby', 1, 'alice'));
    c2.recv(msg('lobby', 2));
    assert.deepEqual(ev.message.map((m) => m.seq), [2]);
  });

  test('rate_limited (no id) re-sends the unanswered requests after a pause', async () => {
    const { net, client } = setup();
    const c = await joined(net, client);
    client.publish('lobby', 'x', { msgId: 'r-1' });
    const n = c.json().filter((m) => m.type === 'publish').length;
    c.recv({ type: 'error', code: 'rate_limited', message: 'slow down' });
    mock.timers.tick(1_000);
    const pubs = c.json().filter((m) => m.type === 'publish');
    assert.equal(pubs.length, n + 1);
    assert.equal(pubs[pubs.length - 1].msg_id, 'r-1');
  });

  test('frames are paced to the server rate limit (burst, then perSecond)', async () => {
    const { net, client } = setup({ rateLimit: { perSecond: 10, burst: 5 } });
    const c = await joined(net, client); // the join used one token
    for (let i = 0; i < 10; i++) client.publish('lobby', i);
    assert.equal(c.json().filter((m) => m.type === 'publish').length, 4);
    mock.timers.tick(100);
    assert.equal(c.json().filter((m) => m.type === 'publish').length, 5);
    mock.timers.tick(1_000);
    assert.equal(c.json().filter((m) => m.type === 'publish').length, 10);
  });
});

describe('binary frames (protocol section 7)', () => {
  test('publish of bytes sends the envelope of section 7.1', async () => {
    const { net, client } = setup();
    const c = await joined(net, client, 'files');
    const r = await client.publish('files', new Uint8Array([0x00, 0x9f, 0x92, 0x96, 0xff]));
    assert.deepEqual(r, { seq: undefined, duplicate: false });
    const frame = c.sent.find((f) => f instanceof Uint8Array);
    assert.deepEqual([...frame], [0x05, 0x66, 0x69, 0x6c, 0x65, 0x73, 0x00, 0x9f, 0x92, 0x96, 0xff]);
  });

  test('the delivered envelope of section 7.2 becomes a message with bytes', async () => {
    const { net, client, ev } = setup();
    const c = await joined(net, client, 'files', 41);
    const hex = '05 66 69 6c 65 73 00 00 00 00 00 00 00 2a 00 00 01 8b cf e5 68 00 05 61 6c 69 63 65 00 9f 92 96 ff';
    c.recv(Uint8Array.from(hex.split(' ').map((h) => Number.parseInt(h, 16))));
    assert.equal(ev.message.length, 1);
    const m = ev.message[0];
    assert.deepEqual([m.room, m.seq, m.ts, m.from, m.binary, [...m.data]], ['files', 42, 1_700_000_000_000, 'alice', true, [0, 0x9f, 0x92, 0x96, 0xff]]);
  });

  test('history decodes base64 entries into bytes', async () => {
    const { net, client } = setup();
    const c = await joined(net, client, 'files', 42);
    const h = client.history('files', { limit: 2 });
    const req = c.lastOf('history');
    assert.deepEqual(req, { type: 'history', room: 'files', limit: 2, id: req.id });
    c.recv({
      type: 'history', room: 'files', id: req.id, seq: 42, epoch: E1,
      messages: [
        { type: 'message', room: 'files', from: 'bob', data: { name: 'notes.bin' }, seq: 41, ts: 1 },
        { type: 'message', room: 'files', from: 'alice', seq: 42, ts: 2, binary: 'AJ+Slv8=' },
      ],
    });
    const r = await h;
    assert.equal(r.messages[0].binary, false);
    assert.deepEqual([...r.messages[1].data], [0, 0x9f, 0x92, 0x96, 0xff]);
  });
});

describe('presence, including the large-room forms', () => {
  test('single events keep the member list', async () => {
    const { net, client, ev } = setup();
    const c = await joined(net, client);
    c.recv({ type: 'presence', room: 'lobby', event: 'join', user: 'bob' });
    c.recv({ type: 'presence', room: 'lobby', event: 'leave', user: 'alice' });
    const last = ev.presence[ev.presence.length - 1];
    assert.deepEqual([last.joins, last.leaves, last.members, last.memberCount], [[], ['alice'], ['bob'], 1]);
  });

  test('joined with member_count and members_truncated', async () => {
    const { net, client } = setup();
    client.connect();
    net.last.open();
    const j = client.join('big');
    net.last.recv({ type: 'joined', room: 'big', id: net.last.lastOf('join').id, members: ['a', 'b'], member_count: 5000, members_truncated: true, seq: 0, epoch: E1 });
    const r = await j;
    assert.deepEqual([r.members, r.memberCount, r.membersTruncated], [['a', 'b'], 5000, true]);
  });

  test('coalesced joins/leaves and count-only frames', async () => {
    const { net, client, ev } = setup();
    const c = await joined(net, client);
    c.recv({ type: 'presence', room: 'lobby', joins: ['bob', 'carol'], leaves: ['alice'], member_count: 2 });
    let p = ev.presence[ev.presence.length - 1];
    assert.deepEqual([p.joins, p.leaves, p.members.sort(), p.memberCount, p.snapshot], [['bob', 'carol'], ['alice'], ['bob', 'carol'], 2, false]);
    c.recv({ type: 'presence', room: 'lobby', member_count: 1200 });
    p = ev.presence[ev.presence.length - 1];
    assert.deepEqual([p.joins, p.leaves, p.memberCount], [[], [], 1200]);
    assert.equal(client.presence('lobby').memberCount, 1200);
  });

  test('the members request pages through a large room', async () => {
    const { net, client } = setup();
    const c = await joined(net, client);
    const m = client.members('lobby', { after: 'b', limit: 2 });
    const req = c.lastOf('members');
    assert.deepEqual(req, { type: 'members', room: 'lobby', after: 'b', limit: 2, id: req.id });
    c.recv({ type: 'members', room: 'lobby', id: req.id, members: ['c', 'd'], member_count: 9, next: 'd' });
    assert.deepEqual(await m, { room: 'lobby', members: ['c', 'd'], memberCount: 9, next: 'd' });
  });

  test('a re-join replaces the list as a snapshot', async () => {
    const { net, client, ev } = setup();
    await joined(net, client);
    const c2 = await reconnect(net);
    c2.recv({ type: 'joined', room: 'lobby', id: c2.lastOf('join').id, members: ['alice', 'dave'], seq: 0, epoch: E1, recovered: true });
    const p = ev.presence[ev.presence.length - 1];
    assert.deepEqual([p.snapshot, p.members], [true, ['alice', 'dave']]);
  });
});

describe('reconnect policy (protocol section 8.3)', () => {
  test('full-jitter backoff grows from base 500 ms by 2 up to the 30 s cap', async () => {
    const { net, client, ev } = setup({ random: () => 0.999 });
    client.connect();
    const waits = [];
    for (let i = 0; i < 9; i++) {
      net.last.drop(1006, '', false);
      const [, d] = ev.state[ev.state.length - 1];
      waits.push(d.retryIn);
      mock.timers.tick(d.retryIn);
    }
    assert.deepEqual(waits, [500, 999, 1998, 3996, 7992, 15984, 29970, 29970, 29970]);
  });

  test('an answered connection starts the backoff from the first step again', async () => {
    const { net, client, ev } = setup({ random: () => 0.999 });
    client.connect();
    for (let i = 0; i < 4; i++) {
      net.last.drop(1006, '', false);
      mock.timers.tick(30_000);
    }
    await joined(net, client);
    net.last.drop();
    assert.equal(ev.state[ev.state.length - 1][1].retryIn, 500);
  });

  for (const [code, reason, errCode] of [
    [4003, 'identity change not allowed', 'identity_changed'],
    [4001, 'token expired', 'token_expired'],
    [1008, 'too many protocol errors', 'policy'],
  ]) {
    test(`close ${code} ${reason} is terminal: closed, no reconnect, pending work fails`, async () => {
      const { net, client, ev } = setup();
      await joined(net, client);
      const p = client.publish('lobby', 1);
      net.last.drop(code, reason);
      assert.equal(client.state, 'closed');
      await assert.rejects(p, (e) => e.code === errCode && e.closeCode === code);
      assert.equal(ev.error.pop().code, errCode);
      mock.timers.tick(60_000);
      assert.equal(net.conns.length, 1);
    });
  }

  for (const [code, reason] of [[1000, 'from a proxy, not asked for'], [1001, 'server shutting down'], [1008, 'ping timeout'], [1011, ''], [1013, 'slow consumer'], [1006, '']]) {
    test(`close ${code} ${reason} reconnects`, async () => {
      const { net, client } = setup();
      await joined(net, client);
      net.last.drop(code, reason);
      assert.equal(client.state, 'disconnected');
      mock.timers.tick(30_000);
      assert.equal(net.conns.length, 2);
    });
  }

  test('4001 with getToken reconnects with a fresh token', async () => {
    let n = 0;
    const { net, client } = setup({ getToken: async () => `tok-${++n}` });
    client.connect();
    await settle();
    assert.match(net.last.url, /token=tok-1/);
    net.last.open();
    net.last.drop(4001, 'token expired');
    assert.equal(client.state, 'disconnected');
    mock.timers.tick(30_000);
    await settle();
    assert.match(net.last.url, /token=tok-2/);
  });

  test('a refused upgrade: 401 without getToken is terminal; 429 waits at least 1 s', async () => {
    const a = setup();
    const connecting = a.client.connect();
    const refused = assert.rejects(connecting, (e) => e.status === 401 && e.fatal);
    a.net.last.drop(1006, '', false, 401);
    assert.equal(a.client.state, 'closed');
    assert.equal(a.ev.error[0].status, 401);
    await refused;
    const b = setup({ random: () => 0 });
    b.client.connect();
    b.net.last.drop(1006, '', false, 429);
    assert.equal(b.ev.state[b.ev.state.length - 1][1].retryIn, 1_000);
    assert.equal(b.ev.error[0].code, 'refused');
  });

  test('a browser-style refusal (no status) is reported as connect_failed and retried', async () => {
    const { net, client, ev } = setup();
    client.connect();
    net.last.drop(1006, '', false);
    assert.equal(ev.error[0].code, 'connect_failed');
    assert.equal(client.state, 'disconnected');
  });

  test('close() ends everything and fails what waits with closed', async () => {
    const { net, client, ev } = setup();
    await joined(net, client);
    const p = client.publish('lobby', 1);
    const h = client.history('lobby');
    client.close();
    await assert.rejects(p, (e) => e.code === 'closed');
    await assert.rejects(h, (e) => e.code === 'closed');
    assert.deepEqual(net.last.closed, { code: 1000, reason: 'client closed', abort: false });
    assert.deepEqual(ev.state.map(([s]) => s), ['connecting', 'connected', 'closed']);
  });
});

describe('liveness', () => {
  test('silence brings a ping; no answer within pingTimeout gives the connection up', async () => {
    const { net, client } = setup({ pingInterval: 15_000, pingTimeout: 10_000 });
    const c = await joined(net, client);
    mock.timers.tick(15_000);
    assert.equal(c.lastOf('ping').type, 'ping');
    mock.timers.tick(10_000);
    assert.equal(c.closed.abort, true);
    assert.equal(client.state, 'disconnected');
  });

  test('any frame after the ping counts as life', async () => {
    const { net, client } = setup({ pingInterval: 15_000, pingTimeout: 10_000 });
    const c = await joined(net, client);
    mock.timers.tick(15_000);
    c.recv({ type: 'pong', id: c.lastOf('ping').id });
    mock.timers.tick(10_000);
    assert.equal(c.closed, null);
    assert.equal(client.state, 'connected');
  });

  test('a timer that fires late (throttled background tab) pings again instead of giving up', async () => {
    const { net, client } = setup({ pingInterval: 15_000, pingTimeout: 10_000 });
    const c = await joined(net, client);
    mock.timers.tick(15_000);
    const pings = c.json().filter((m) => m.type === 'ping').length;
    // The tab was frozen for a minute: the clock jumps, then the overdue timer fires.
    mock.timers.setTime(Date.now() + 60_000);
    mock.timers.tick(10_000);
    assert.equal(c.closed, null, 'not given up on a throttled timer');
    assert.equal(c.json().filter((m) => m.type === 'ping').length, pings + 1);
    c.recv({ type: 'pong', id: c.lastOf('ping').id });
    mock.timers.tick(10_000);
    assert.equal(client.state, 'connected');
  });
});

describe('tokens', () => {
  function jwt(claims) {
    const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
    return `${b64({ alg: 'HS256' })}.${b64(claims)}.sig`;
  }

  test('getToken is called again before exp and the new token is sent as refresh', async () => {
    const now = Math.floor(Date.now() / 1000);
    const tokens = [jwt({ sub: 'alice', exp: now + 100 }), jwt({ sub: 'alice', exp: now + 1000 })];
    let calls = 0;
    const { net, client } = setup({ getToken: async () => tokens[calls++] });
    client.connect();
    await settle();
    net.last.open();
    mock.timers.tick(74_000);
    await settle();
    assert.equal(net.last.lastOf('refresh'), undefined);
    mock.timers.tick(1_000); // three quarters of the 100 s left
    await settle();
    const r = net.last.lastOf('refresh');
    assert.equal(r.token, tokens[1]);
    net.last.recv({ type: 'refreshed', id: r.id, exp: now + 1000 });
    assert.equal(calls, 2);
  });

  test('an invalid_token refusal is reported and retried', async () => {
    const now = Math.floor(Date.now() / 1000);
    const { net, client, ev } = setup({ getToken: async () => jwt({ sub: 'alice', exp: now + 100 }) });
    client.connect();
    await settle();
    net.last.open();
    mock.timers.tick(75_000);
    await settle();
    net.last.recv({ type: 'error', id: net.last.lastOf('refresh').id, code: 'invalid_token', message: 'bad signature' });
    await settle();
    assert.equal(ev.error[0].code, 'invalid_token');
    const before = net.last.json().filter((m) => m.type === 'refresh').length;
    mock.timers.tick(5_000);
    await settle();
    assert.equal(net.last.json().filter((m) => m.type === 'refresh').length, before + 1);
  });
});

describe('typing and unknown frames', () => {
  test('typing is throttled per room', async () => {
    const { net, client } = setup({ typingInterval: 2_000 });
    const c = await joined(net, client);
    assert.equal(client.typing('lobby'), true);
    assert.equal(client.typing('lobby'), false);
    mock.timers.tick(2_000);
    assert.equal(client.typing('lobby'), true);
    assert.equal(c.json().filter((m) => m.type === 'typing').length, 2);
    c.recv({ type: 'typing', room: 'lobby', from: 'bob' });
  });

  test('unknown types and fields are ignored', async () => {
    const { net, client, ev } = setup();
    const c = await joined(net, client);
    c.recv({ type: 'from-the-future', room: 'lobby' });
    c.recv('not json');
    c.recv({ ...msg('lobby', 1), extra: true });
    assert.deepEqual(ev.message.map((m) => m.seq), [1]);
    assert.deepEqual(ev.error, []);
  });
});

describe('browser signals', () => {
  test('`online` reconnects at once instead of waiting out the backoff; `offline` checks the link', async () => {
    const win = new EventTarget();
    globalThis.addEventListener = win.addEventListener.bind(win);
    globalThis.removeEventListener = win.removeEventListener.bind(win);
    try {
      const { net, client } = setup({ random: () => 0.999 });
      const c = await joined(net, client);
      win.dispatchEvent(new Event('offline'));
      assert.equal(c.lastOf('ping').type, 'ping', 'offline: the link is checked at once');
      c.drop();
      for (let i = 0; i < 5; i++) {
        mock.timers.tick(30_000);
        net.last.drop(1006, '', false);
      }
      const before = net.conns.length;
      win.dispatchEvent(new Event('online'));
      assert.equal(net.conns.length, before + 1, 'online: a new attempt without waiting');
      client.close();
      win.dispatchEvent(new Event('online'));
      assert.equal(net.conns.length, before + 1, 'no listener left after close()');
    } finally {
      delete globalThis.addEventListener;
      delete globalThis.removeEventListener;
    }
  });
});
