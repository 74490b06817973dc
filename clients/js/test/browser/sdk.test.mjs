// The SDK in headless Chromium, loaded from the server (/sdk/switchboard.min.js) as a page would:
// 1,000 messages while the page's connections are cut abruptly (TCP reset through a proxy, no close
// frame) at least five times; a server restart surfaces `resync`; token refresh keeps a connection
// alive past the first token's exp.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { chromium } from 'playwright-core';
import WebSocket from 'ws';
import { Client } from '../../dist/switchboard.js';
import { CutProxy, mintToken, Server, until } from '../support.mjs';

const FAST = ['--rate-limit', '100000', '--rate-burst', '100000'];
let browser;
const servers = [];
const proxies = [];
const problems = [];

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking'],
  });
});

after(async () => {
  await browser?.close();
  await Promise.all(proxies.map((p) => p.close()));
  await Promise.all(servers.map((s) => s.stop()));
});

/** A page at `http://addr/healthz` (same origin as the server or proxy) with the SDK imported as `window.SB`. */
async function sdkPage(addr) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on('pageerror', (e) => problems.push(e.message));
  await page.goto(`http://${addr}/healthz`);
  await page.evaluate(async () => {
    window.SB = await import('/sdk/switchboard.min.js');
  });
  return page;
}

describe('the SDK in Chromium', { timeout: 120_000 }, () => {
  test('1,000 messages arrive exactly once, in order, while the page loses its connection 6 times', async () => {
    const s = new Server([...FAST, '--history-size', '500']);
    servers.push(s);
    await s.start();
    const proxy = new CutProxy(s.addr);
    proxies.push(proxy);
    const via = await proxy.listen();
    const page = await sdkPage(via);
    await page.evaluate(async () => {
      window.got = [];
      window.states = [];
      window.resyncs = [];
      const c = new window.SB.Client('/ws', { user: 'viewer', backoff: { base: 100, cap: 500 } });
      c.on('message', (m) => window.got.push(m.data));
      c.on('state', (st) => window.states.push(st));
      c.on('resync', (r) => window.resyncs.push(r));
      await c.connect();
      await c.join('feed');
    });
    const pub = new Client(`ws://${s.addr}/ws`, { WebSocket, user: 'feed', rateLimit: false });
    await pub.connect();
    await pub.join('feed');
    const N = 1000;
    const acks = [];
    for (let i = 1; i <= N; i++) {
      acks.push(pub.publish('feed', i));
      if (i % 150 === 0) {
        // Cut an established connection (not one still in its handshake), mid-stream.
        await until(async () => (await page.evaluate(() => window.states.at(-1))) === 'connected', 'the page to be connected again');
        proxy.cut();
      }
      if (i % 10 === 0) await new Promise((r) => setTimeout(r, 10));
    }
    await Promise.all(acks);
    await until(async () => (await page.evaluate(() => window.got.length)) >= N, `the page to have ${N} messages`, 60_000).catch(
      async (e) => {
        const seen = await page.evaluate(() => ({ n: window.got.length, last: window.got.slice(-3), states: window.states.join(','), resyncs: window.resyncs }));
        throw new Error(`${e.message}: ${JSON.stringify(seen)}`);
      },
    );
    const { got, states, resyncs } = await page.evaluate(() => ({ got: window.got, states: window.states, resyncs: window.resyncs }));
    assert.ok(proxy.cuts >= 5, `cuts: ${proxy.cuts}`);
    assert.ok(states.filter((x) => x === 'connected').length >= 6, `reconnected after each cut: ${states.join(',')}`);
    assert.deepEqual(resyncs, []);
    assert.deepEqual(got, Array.from({ length: N }, (_, i) => i + 1));
    pub.close();
    await page.context().close();
  });

  test('a server restart surfaces resync (recovered:false, new epoch) and the page re-joins', async () => {
    const s = new Server();
    servers.push(s);
    await s.start();
    const page = await sdkPage(s.addr);
    const first = await page.evaluate(async () => {
      window.resyncs = [];
      const c = new window.SB.Client('/ws', { user: 'rita', backoff: { base: 100, cap: 500 } });
      window.client = c;
      c.on('resync', (r) => window.resyncs.push(r));
      await c.connect();
      const j = await c.join('lobby');
      await c.publish('lobby', 'before the restart');
      return j;
    });
    await s.stop();
    await s.start(s.addr);
    await until(async () => (await page.evaluate(() => window.resyncs.length)) > 0, 'resync in the page');
    const [r] = await page.evaluate(() => window.resyncs);
    assert.equal(r.recovered, false);
    assert.equal(r.reason, 'epoch');
    assert.notEqual(r.epoch, first.epoch);
    assert.deepEqual(r.previous, { seq: 1, epoch: first.epoch });
    const ack = await page.evaluate(() => window.client.publish('lobby', 'after'));
    assert.equal(ack.seq, 1);
    await page.context().close();
  });

  test('token refresh keeps the connection alive past the first token’s exp, across a cut', async () => {
    const s = Server.withAuth();
    servers.push(s);
    await s.start();
    const proxy = new CutProxy(s.addr);
    proxies.push(proxy);
    const via = await proxy.listen();
    const page = await sdkPage(via);
    let minted = 0;
    await page.exposeFunction('mint', () => {
      minted++;
      return mintToken('pat', 4);
    });
    await page.evaluate(async () => {
      window.states = [];
      window.got = [];
      const c = new window.SB.Client('/ws', { getToken: () => window.mint(), backoff: { base: 100, cap: 500 } });
      window.client = c;
      c.on('state', (st) => window.states.push(st));
      c.on('message', (m) => window.got.push(m.data));
      await c.connect();
      await c.join('secure');
    });
    const firstExp = Date.now() + 4_000;
    // A cut in the middle: the reconnect must fetch a fresh token, and refreshing must go on after it.
    await new Promise((r) => setTimeout(r, 1_500));
    proxy.cut();
    await until(async () => (await page.evaluate(() => window.states.at(-1))) === 'connected', 'reconnected');
    const reconnectedAt = Date.now();
    await until(() => Date.now() > Math.max(firstExp, reconnectedAt + 4_000) + 3_000, 'time past both tokens’ exp', 15_000);
    const states = await page.evaluate(() => window.states);
    assert.deepEqual(states, ['connecting', 'connected', 'disconnected', 'connecting', 'connected'], 'one cut, no expiry close');
    assert.ok(minted >= 4, `tokens minted: ${minted}`);
    const ack = await page.evaluate(() => window.client.publish('secure', 'alive'));
    assert.equal(ack.duplicate, false);
    await page.context().close();
  });

  test('no page errors', () => {
    assert.deepEqual(problems, []);
  });
});
