// The page of docs/sdk-js.md's "Quick start in a page", taken from the document as written, in
// two Chromium tabs against the real server: they chat, and the tab whose network was down while
// the other wrote shows every message once, in order. Also: `resume: sessionPositions()` recovers
// across a page reload.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { chromium } from 'playwright-core';
import { CutProxy, Server, until } from '../support.mjs';

const DOC = readFileSync(new URL('../../../../docs/sdk-js.md', import.meta.url), 'utf8');

/** The first ```lang block after `heading` in the document. */
function block(heading, lang) {
  const from = DOC.indexOf(heading);
  assert.ok(from >= 0, `docs/sdk-js.md has "${heading}"`);
  const m = new RegExp('```' + lang + '\\n([\\s\\S]*?)```').exec(DOC.slice(from));
  assert.ok(m, `a ${lang} block after "${heading}"`);
  return m[1];
}

let browser;
let server;
let proxy;

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    // Pages fulfilled by page.route() have no server address, so Chromium's Local Network Access
    // checks would treat them as public pages and block their WebSocket to 127.0.0.1.
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-features=LocalNetworkAccessChecks'],
  });
  server = new Server();
  await server.start();
  proxy = new CutProxy(server.addr);
});

after(async () => {
  await browser?.close();
  await proxy?.close();
  await server?.stop();
});

/** A tab with the quick-start page at `http://addr/chat.html` (the page and script from the doc, the SDK and /ws from the server). */
async function tab(addr, name, problems) {
  const page = await (await browser.newContext()).newPage();
  page.setDefaultTimeout(15_000);
  page.on('pageerror', (e) => problems.push(`[${name}] ${e.message}`));
  page.on('dialog', (d) => d.accept(name));
  await page.route('**/chat.html', (r) => r.fulfill({ contentType: 'text/html', body: block('## Quick start in a page', 'html') }));
  await page.route('**/chat.js', (r) => r.fulfill({ contentType: 'text/javascript', body: block('## Quick start in a page', 'js') }));
  await page.goto(`http://${addr}/chat.html`);
  return page;
}

const log = (page) => page.locator('#log li').allTextContents();

async function send(page, text) {
  await page.locator('#text').fill(text);
  await page.locator('#text').press('Enter');
}

async function waitChat(page, want) {
  await until(async () => JSON.stringify((await log(page)).filter((l) => l.startsWith('#'))) === JSON.stringify(want), `log ${JSON.stringify(want)}`).catch(
    async (e) => {
      throw new Error(`${e.message}; have ${JSON.stringify(await log(page))}`);
    },
  );
}

describe('docs/sdk-js.md quick start, as written', { timeout: 90_000 }, () => {
  test('two tabs chat; the one cut off meanwhile misses nothing', async () => {
    const problems = [];
    const via = await proxy.listen();
    const alice = await tab(via, 'alice', problems);
    await until(async () => (await alice.title()) === 'chat (connected)', 'alice connected');
    const bob = await tab(server.addr, 'bob', problems);
    await until(async () => (await log(alice)).includes('bob joined'), 'alice to see bob join');
    await send(bob, 'm1');
    await send(alice, 'm2');
    await waitChat(alice, ['#1 bob: m1', '#2 alice: m2']);
    proxy.pause();
    await until(async () => (await alice.title()) !== 'chat (connected)', 'alice to notice the cut');
    for (const t of ['m3', 'm4', 'm5']) await send(bob, t);
    await waitChat(bob, ['#1 bob: m1', '#2 alice: m2', '#3 bob: m3', '#4 bob: m4', '#5 bob: m5']);
    proxy.resume();
    await send(bob, 'm6');
    const all = ['#1 bob: m1', '#2 alice: m2', '#3 bob: m3', '#4 bob: m4', '#5 bob: m5', '#6 bob: m6'];
    await waitChat(alice, all);
    assert.deepEqual(problems, []);
    await alice.context().close();
    await bob.context().close();
  });

  test('resume: sessionPositions() recovers what was published while the page reloaded', async () => {
    const page = await (await browser.newContext()).newPage();
    await page.goto(`http://${server.addr}/healthz`);
    const start = () =>
      page.evaluate(async () => {
        const SB = await import('/sdk/switchboard.min.js');
        window.got = [];
        window.resyncs = 0;
        const c = new SB.Client('/ws', { user: 'reloader', resume: SB.sessionPositions('reloader') });
        c.on('message', (m) => window.got.push(m.data));
        c.on('resync', () => window.resyncs++);
        window.c = c;
        await c.connect();
        await c.join('reload');
      });
    await start();
    for (let i = 1; i <= 3; i++) await page.evaluate((n) => window.c.publish('reload', n), i);
    await until(async () => (await page.evaluate(() => window.got.length)) === 3, 'three echoes');
    await page.evaluate(() => window.c.close());
    // Published by someone else while the page reloads.
    const other = await (await browser.newContext()).newPage();
    await other.goto(`http://${server.addr}/healthz`);
    await other.evaluate(async () => {
      const SB = await import('/sdk/switchboard.min.js');
      const c = new SB.Client('/ws', { user: 'other' });
      await c.connect();
      await c.join('reload');
      for (const n of [4, 5]) await c.publish('reload', n);
    });
    await page.reload();
    await start();
    await page.evaluate((n) => window.c.publish('reload', n), 6);
    await until(async () => (await page.evaluate(() => window.got.length)) >= 3, 'the missed and new messages');
    assert.deepEqual(await page.evaluate(() => [window.got, window.resyncs]), [[4, 5, 6], 0]);
    await page.context().close();
    await other.context().close();
  });
});
