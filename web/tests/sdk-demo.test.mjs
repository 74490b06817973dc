// The demo pages on the JavaScript SDK, in headless Chromium against the real server: the chat
// page misses nothing across a lost connection (the bug the hand-written reconnect had: 1, 2, 6),
// shows recent history to a late joiner, and puts a token refusal into words; the ticker page
// shows seq and age and never a gap after its connection is cut.
//
// Connections are cut with a TCP proxy (clients/js/test/support.mjs); pages that must lose their
// connection are loaded through it, so the page and its WebSocket share one origin.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { CutProxy, SERVER_BIN, Server, until } from '../../clients/js/test/support.mjs';
import { launchChromium } from './switchboard-process.mjs';

const WAIT_MS = 15_000;
let browser;
const servers = [];
const proxies = [];
const problems = [];

before(async () => {
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await Promise.all(proxies.map((p) => p.close()));
  await Promise.all(servers.map((s) => s.stop()));
});

async function startServer(s = new Server()) {
  servers.push(s);
  await s.start();
  return s;
}

async function proxied(addr) {
  const p = new CutProxy(addr);
  proxies.push(p);
  return { proxy: p, via: await p.listen() };
}

async function openPage(url, who) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  page.on('pageerror', (e) => problems.push(`[${who}] ${e.message}`));
  const resp = await page.goto(url);
  assert.equal(resp.status(), 200);
  return page;
}

async function joinChat(page, name, room = 'lobby') {
  await page.locator('#name').fill(name);
  await page.locator('#room').fill(room);
  await page.locator('#join').click();
  await page.locator('#status', { hasText: /^connected$/ }).waitFor();
  await page.locator('#input:enabled').waitFor();
}

async function say(page, text) {
  await page.locator('#input').fill(text);
  await page.locator('#input').press('Enter');
}

function texts(page) {
  return page.locator('#messages .message .text').allTextContents();
}

async function waitTexts(page, want) {
  try {
    await page.waitForFunction(
      (w) => JSON.stringify([...document.querySelectorAll('#messages .message .text')].map((e) => e.textContent)) === JSON.stringify(w),
      want,
      { timeout: WAIT_MS },
    );
  } catch (err) {
    throw new Error(`messages: want ${JSON.stringify(want)}, have ${JSON.stringify(await texts(page))}: ${err.message}`);
  }
}

describe('demo pages on the SDK', { timeout: 90_000 }, () => {
  test('chat: a page whose connection was down while others wrote shows every message once, in order', async () => {
    const s = await startServer();
    const { proxy, via } = await proxied(s.addr);
    const alice = await openPage(`http://${via}/`, 'alice');
    const bob = await openPage(`http://${s.addr}/`, 'bob');
    await joinChat(alice, 'alice', 'cut');
    await joinChat(bob, 'bob', 'cut');
    await say(bob, 'm1');
    await say(bob, 'm2');
    await waitTexts(alice, ['m1', 'm2']);
    proxy.pause(); // alice's network is gone: no close frame, and reconnects fail
    await alice.locator('#status', { hasText: /^(disconnected|connecting)$/ }).waitFor();
    for (const t of ['m3', 'm4', 'm5']) await say(bob, t);
    await waitTexts(bob, ['m1', 'm2', 'm3', 'm4', 'm5']);
    proxy.resume();
    await alice.locator('#status', { hasText: /^connected$/ }).waitFor();
    await say(bob, 'm6');
    await waitTexts(alice, ['m1', 'm2', 'm3', 'm4', 'm5', 'm6']);
    // alice's own message, sent right after the reconnect, arrives once on both sides.
    await say(alice, 'back');
    await waitTexts(bob, ['m1', 'm2', 'm3', 'm4', 'm5', 'm6', 'back']);
    await waitTexts(alice, ['m1', 'm2', 'm3', 'm4', 'm5', 'm6', 'back']);
    await alice.context().close();
    await bob.context().close();
  });

  test('chat: a late joiner sees the recent history', async () => {
    const s = await startServer();
    const alice = await openPage(`http://${s.addr}/`, 'alice');
    await joinChat(alice, 'alice', 'history');
    for (const t of ['one', 'two', 'three']) await say(alice, t);
    await waitTexts(alice, ['one', 'two', 'three']);
    const carol = await openPage(`http://${s.addr}/`, 'carol');
    await joinChat(carol, 'carol', 'history');
    await waitTexts(carol, ['one', 'two', 'three']);
    assert.doesNotMatch(await carol.locator('#messages').textContent(), /No messages yet/);
    await alice.context().close();
    await carol.context().close();
  });

  test('chat: a server that requires tokens gets an explanation in words, not a silent retry loop', async () => {
    const s = await startServer(Server.withAuth());
    const page = await openPage(`http://${s.addr}/`, 'dora');
    await page.locator('#name').fill('dora');
    await page.locator('#join').click();
    await page.locator('#error', { hasText: /requires a sign-in token/ }).waitFor();
    assert.match(await page.locator('#error').textContent(), /HTTP 401/);
    await page.context().close();
  });

  test('ticker: seq and age per row; no gap after the tab loses its connection', async () => {
    const s = await startServer();
    const { proxy, via } = await proxied(s.addr);
    const page = await openPage(`http://${via}/ticker.html?room=prices`, 'ticker');
    await page.locator('#status', { hasText: /^connected$/ }).waitFor();
    // One publisher from the CLI, as the page's hint says: `switchboard connect` reading JSON lines.
    const feed = spawn(SERVER_BIN, ['connect', `ws://${s.addr}/ws?user=feed`], { stdio: ['pipe', 'pipe', 'inherit'] });
    const joined = new Promise((r) => createInterface({ input: feed.stdout }).on('line', (l) => l.includes('"joined"') && r()));
    feed.stdin.write(`${JSON.stringify({ type: 'join', room: 'prices', id: 1 })}\n`);
    await joined;
    const publish = (n) => feed.stdin.write(`${JSON.stringify({ type: 'publish', room: 'prices', data: { price: 100 + n } })}\n`);
    for (let n = 1; n <= 10; n++) publish(n);
    await until(async () => (await page.locator('#last-seq').textContent()) === '10', 'seq 10 on the page');
    proxy.pause();
    await page.locator('#status', { hasText: /^(disconnected|connecting)$/ }).waitFor();
    for (let n = 11; n <= 25; n++) publish(n);
    proxy.resume();
    await until(async () => (await page.locator('#last-seq').textContent()) === '25', 'seq 25 on the page');
    const seqs = (await page.locator('#ticks tr[data-seq]').evaluateAll((rows) => rows.map((r) => Number(r.dataset.seq)))).reverse();
    assert.deepEqual(seqs, Array.from({ length: 25 }, (_, i) => i + 1));
    assert.equal(await page.locator('#gaps').textContent(), '0');
    assert.match(await page.locator('#ticks tr[data-seq="1"] .age').textContent(), /^\d+s$/);
    feed.stdin.end();
    await new Promise((r) => feed.once('exit', r));
    await page.context().close();
  });

  test('no page errors', () => {
    assert.deepEqual(problems, []);
  });
});
