// permessage-deflate (RFC 7692) in a real browser: headless Chromium offers it
// (`permessage-deflate; client_max_window_bits`), the server answers with both
// no-context-takeover flags, and room messages well over the compression threshold (so sent
// compressed, compressed once for every member) arrive intact, in both directions: Chromium
// compresses what it sends too.
//
// The sockets are opened from the server's own page (same origin, so the Origin check passes)
// with page.evaluate, so the test does not depend on the demo page's markup. With
// `--compression off` the same offer is declined (`extensions` is empty) and messages still
// arrive.
//
// Env: SWITCHBOARD_BIN, CHROMIUM_PATH (see switchboard-process.mjs). No fixed sleeps: browser
// state is awaited with waitForFunction.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { SwitchboardProcess, launchChromium, servers } from './switchboard-process.mjs';

const WAIT_MS = 10_000;

let browser = null;

/** A JSON document of several KiB that compresses well, like a ticker snapshot. */
function ticker(tag) {
  const rows = [];
  for (let i = 0; i < 60; i++) {
    rows.push({ symbol: `SYM${i}`, bid: 100.25 + i, ask: 100.5 + i, volume: 12000 + i, note: 'héllo ✓' });
  }
  return { tag, rows };
}

/**
 * On the server's page: opens `users.length` sockets, each joins `room`; resolves with their
 * negotiated `extensions` once all have joined. Everything received lands in window.__got.
 */
async function openSockets(page, users, room) {
  return page.evaluate(
    ({ users, room }) =>
      new Promise((resolve, reject) => {
        window.__got = {};
        window.__sockets = {};
        let joined = 0;
        for (const user of users) {
          const ws = new WebSocket(`ws://${location.host}/ws?user=${user}`);
          window.__sockets[user] = ws;
          window.__got[user] = [];
          ws.onopen = () => ws.send(JSON.stringify({ type: 'join', room, id: 1 }));
          ws.onerror = () => reject(new Error(`${user}: socket error`));
          ws.onmessage = (e) => {
            const msg = JSON.parse(e.data);
            window.__got[user].push(msg);
            if (msg.type === 'joined' && ++joined === users.length) {
              resolve(Object.fromEntries(users.map((u) => [u, window.__sockets[u].extensions])));
            }
          };
        }
      }),
    { users, room },
  );
}

async function publish(page, user, room, data) {
  await page.evaluate(
    ({ user, room, data }) =>
      window.__sockets[user].send(JSON.stringify({ type: 'publish', room, data, id: 2 })),
    { user, room, data },
  );
}

/** Waits until `user` has received a room message whose data has `tag`; returns its data. */
async function received(page, user, tag) {
  const handle = await page.waitForFunction(
    ({ user, tag }) =>
      window.__got[user].find((m) => m.type === 'message' && m.data && m.data.tag === tag)?.data,
    { user, tag },
    { timeout: WAIT_MS },
  );
  return handle.jsonValue();
}

async function serverPage(server) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  const problems = [];
  page.on('pageerror', (err) => problems.push(err.message));
  const resp = await page.goto(`http://${server.addr}/`);
  assert.equal(resp.status(), 200);
  return { context, page, problems };
}

describe('permessage-deflate in Chromium', { timeout: 60_000 }, () => {
  before(async () => {
    browser = await launchChromium();
  });

  after(async () => {
    try {
      if (browser) await browser.close();
    } finally {
      await Promise.all(servers.map((s) => s.stop()));
    }
  });

  test('Chromium negotiates deflate and large messages arrive intact both ways', async () => {
    const server = new SwitchboardProcess(['--listen', '127.0.0.1:0', '--log', 'warn']);
    await server.start();
    const { context, page, problems } = await serverPage(server);
    const extensions = await openSockets(page, ['ana', 'ben', 'cy'], 'zip');
    for (const [user, ext] of Object.entries(extensions)) {
      assert.match(ext, /^permessage-deflate/, `${user}: ${ext}`);
      assert.match(ext, /server_no_context_takeover/, `${user}: ${ext}`);
      assert.match(ext, /client_no_context_takeover/, `${user}: ${ext}`);
    }
    // Several messages, so that each member decodes more than one compressed frame (no
    // context carried between them).
    for (const tag of ['one', 'two', 'three']) {
      const data = ticker(tag);
      assert.ok(JSON.stringify(data).length > 4096);
      await publish(page, 'ana', 'zip', data);
      for (const user of ['ben', 'cy']) {
        assert.deepEqual(await received(page, user, tag), data, `${user} got ${tag}`);
      }
    }
    await context.close();
    assert.deepEqual(problems, []);
    await server.stop();
  });

  test('with --compression off the offer is declined and messages still arrive', async () => {
    const server = new SwitchboardProcess(['--listen', '127.0.0.1:0', '--log', 'warn', '--compression', 'off']);
    await server.start();
    const { context, page } = await serverPage(server);
    const extensions = await openSockets(page, ['dee', 'eli'], 'plain');
    assert.deepEqual(extensions, { dee: '', eli: '' });
    const data = ticker('plain');
    await publish(page, 'dee', 'plain', data);
    assert.deepEqual(await received(page, 'eli', 'plain'), data);
    await context.close();
    await server.stop();
  });
});
