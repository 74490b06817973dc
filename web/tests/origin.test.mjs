// Cross-site WebSocket hijacking protection in a real browser (docs/security.md "Origin checks").
//
// A page served by a second HTTP server (another port, so another origin) opens
// `new WebSocket('ws://127.0.0.1:SBPORT/ws')`. With the default settings (same-origin only) the
// server answers 403 before the upgrade, so the browser reports error + close 1006 without an
// open; the server's own demo page (same origin) works. Restarted with
// `--allowed-origin http://127.0.0.1:OTHERPORT`, the same page connects and gets `joined`, and
// the demo page still works (same-origin pages are always allowed).
//
// Env:
//   SWITCHBOARD_BIN  path of the server binary (default: <repo>/target/debug/switchboard)
//   CHROMIUM_PATH    Chromium executable (default: /usr/bin/chromium)
//
// No fixed sleeps: readiness comes from the server's `listening on ADDR` stdout line, browser
// state is awaited with waitForFunction / auto-waiting locators, the server's log with a
// bounded poll.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request } from 'node:http';
import { SwitchboardProcess, launchChromium, servers } from './switchboard-process.mjs';


const WAIT_MS = 10_000; // per browser-side expectation

let browser = null;
let pageServer = null; // the other origin's HTTP server
let pageOrigin = null; // "http://127.0.0.1:OTHERPORT"
let anyFailure = false;


function step(fn) {
  return async (...args) => {
    try {
      await fn(...args);
    } catch (err) {
      anyFailure = true;
      throw err;
    }
  };
}

/**
 * The other origin's page: opens a WebSocket to the switchboard named in `?sb=HOST:PORT`,
 * sends a join once open, and records everything in `window.__ws`.
 */
const CROSS_PAGE = `<!doctype html>
<meta charset="utf-8">
<title>cross-origin client</title>
<script>
  window.__ws = { events: [], messages: [], closed: null };
  const sb = new URLSearchParams(location.search).get('sb');
  const ws = new WebSocket('ws://' + sb + '/ws?user=crossy');
  ws.onopen = () => {
    window.__ws.events.push('open');
    ws.send(JSON.stringify({ type: 'join', room: 'xo', id: 1 }));
  };
  ws.onerror = () => window.__ws.events.push('error');
  ws.onmessage = (e) => window.__ws.messages.push(JSON.parse(e.data));
  ws.onclose = (e) => {
    window.__ws.events.push('close');
    window.__ws.closed = { code: e.code, reason: e.reason };
  };
</script>`;

/** Starts the page server on another port; resolves with its origin. */
function startPageServer() {
  pageServer = createServer((req, res) => {
    if (req.url.startsWith('/?') || req.url === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(CROSS_PAGE);
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  return new Promise((r) => {
    pageServer.listen(0, '127.0.0.1', () => r(`http://127.0.0.1:${pageServer.address().port}`));
  });
}

/** A raw upgrade request to `addr` with `origin`; resolves with the HTTP status. */
function upgradeStatus(addr, origin) {
  const [host, port] = addr.split(':');
  return new Promise((resolvePromise, reject) => {
    const req = request({
      host,
      port: Number(port),
      path: '/ws?user=probe',
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==',
        'Sec-WebSocket-Version': '13',
        Origin: origin,
      },
      timeout: WAIT_MS,
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolvePromise(res.statusCode);
    });
    req.on('response', (res) => {
      res.resume();
      resolvePromise(res.statusCode);
    });
    req.on('timeout', () => req.destroy(new Error('upgrade request timed out')));
    req.on('error', reject);
    req.end();
  });
}

/** Opens the cross-origin page pointed at switchboard `addr`. */
async function openCrossPage(addr) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  const resp = await page.goto(`${pageOrigin}/?sb=${addr}`);
  assert.equal(resp.status(), 200);
  return { context, page };
}

async function wsState(page) {
  return page.evaluate(() => window.__ws);
}

/** Opens the built-in demo page served by switchboard `addr`, joins as `name`, and waits
 * until the page is connected and lists `name` as a member. */
async function joinDemoPage(addr, name) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  const problems = [];
  page.on('pageerror', (err) => problems.push(err.message));
  const resp = await page.goto(`http://${addr}/`);
  assert.equal(resp.status(), 200);
  await page.locator('#name').fill(name);
  await page.locator('#join').click();
  await page.locator('#status', { hasText: /^connected$/ }).waitFor();
  await page.waitForFunction(
    (who) => [...document.querySelectorAll('#members li')].some((li) => li.textContent === who),
    name,
    { timeout: WAIT_MS },
  );
  await context.close();
  assert.deepEqual(problems, []);
}

describe('cross-origin WebSocket in a browser', { timeout: 60_000 }, () => {
  let defaults; // switchboard with default settings
  let allowing; // switchboard with --allowed-origin <page origin>

  before(async () => {
    pageOrigin = await startPageServer();
    defaults = new SwitchboardProcess(['--listen', '127.0.0.1:0', '--log', 'info']);
    await defaults.start();
    browser = await launchChromium();
  });

  after(async () => {
    try {
      if (browser) await browser.close();
    } catch {
      /* already gone */
    } finally {
      await Promise.all(servers.map((s) => s.stop()));
      if (pageServer) await new Promise((r) => pageServer.close(r));
    }
    if (anyFailure) {
      for (const s of servers) {
        if (s.stderr) console.error(`--- server stderr (tail) ---\n${s.stderr}\n--- end server stderr ---`);
      }
    }
  });

  test('default settings: a page from another origin cannot open a WebSocket (403)', step(async () => {
    const { context, page } = await openCrossPage(defaults.addr);
    await page.waitForFunction(() => window.__ws.closed !== null, null, { timeout: WAIT_MS });
    const state = await wsState(page);
    assert.ok(!state.events.includes('open'), `no open event: ${JSON.stringify(state)}`);
    assert.ok(state.events.includes('error'), `an error event: ${JSON.stringify(state)}`);
    assert.equal(state.closed.code, 1006, `close code: ${JSON.stringify(state)}`);
    assert.deepEqual(state.messages, []);
    await context.close();
    // The server refused it before the upgrade, for its Origin.
    await defaults.waitForLog(/upgrade refused.*reason="?origin/, 'the origin refusal');
    assert.equal(await upgradeStatus(defaults.addr, pageOrigin), 403);
  }));

  test("default settings: the server's own demo page (same origin) works", step(async () => {
    await joinDemoPage(defaults.addr, 'demo');
  }));

  test('with --allowed-origin set to the page origin, the same page connects and joins', step(async () => {
    await defaults.stop();
    allowing = new SwitchboardProcess(['--listen', '127.0.0.1:0', '--log', 'info', '--allowed-origin', pageOrigin]);
    await allowing.start();
    const { context, page } = await openCrossPage(allowing.addr);
    await page.waitForFunction(
      () => window.__ws.messages.some((m) => m.type === 'joined'),
      null,
      { timeout: WAIT_MS },
    );
    const state = await wsState(page);
    assert.deepEqual(state.events, ['open'], JSON.stringify(state));
    const joined = state.messages.find((m) => m.type === 'joined');
    assert.equal(joined.room, 'xo');
    assert.equal(joined.id, 1);
    assert.deepEqual(joined.members, ['crossy']);
    await context.close();
    assert.equal(await upgradeStatus(allowing.addr, pageOrigin), 101);
    // Other origins are still refused.
    assert.equal(await upgradeStatus(allowing.addr, 'http://evil.example'), 403);
  }));

  test("with an allow-list, the server's own demo page (same origin) still works", step(async () => {
    // docs/security.md: same-origin pages are always allowed, besides the listed origins.
    await joinDemoPage(allowing.addr, 'demo2');
    assert.equal(await upgradeStatus(allowing.addr, `http://${allowing.addr}`), 101);
  }));
});
