// End-to-end test of the operator page (/admin) against the real server binary in headless
// Chromium: off without a key (404), a wrong key is refused (401), and with the key the charts
// render and move while a small load publishes (messages in, and the deliveries and latency
// read from the /metrics recorder).
//
// Env: SWITCHBOARD_BIN, CHROMIUM_PATH (see switchboard-process.mjs). No fixed sleeps: every
// browser-side expectation is a waitForFunction with a timeout.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { SwitchboardProcess, launchChromium, servers } from './switchboard-process.mjs';

const WAIT_MS = 15_000; // snapshots come once a second
const KEY = 'browser-test-admin-key-0123456789';

let addr = null; // the server with the admin key
let plainAddr = null; // the server without
let browser = null;
const problems = [];
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

async function openPage(url, who) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  page.on('console', (msg) => {
    // The refused key's 401 is logged by Chromium as a failed resource load: expected.
    if (msg.type() === 'error' && !/401/.test(msg.text())) problems.push(`[${who}] ${msg.text()}`);
  });
  page.on('pageerror', (err) => problems.push(`[${who}] pageerror: ${err.message}`));
  const response = await page.goto(url);
  return { context, page, response };
}

/** Pixels of a canvas that are not transparent (the chart drew something). */
function paintedPixels(page, id) {
  return page.evaluate((canvasId) => {
    const canvas = document.getElementById(canvasId);
    const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    let painted = 0;
    for (let i = 3; i < data.length; i += 4) if (data[i] !== 0) painted++;
    return painted;
  }, id);
}

/** The newest value each node has in a chart (`canvas.dataset.last`), first series. */
function lastValues(page, id) {
  return page.evaluate((canvasId) => {
    const last = JSON.parse(document.getElementById(canvasId).dataset.last || '{}');
    return Object.values(last).map((values) => values[0]);
  }, id);
}

describe('switchboard operator page', { timeout: 90_000 }, () => {
  before(async () => {
    const keyed = new SwitchboardProcess([
      '--listen', '127.0.0.1:0', '--admin-key', KEY, '--rate-limit', '1000', '--rate-burst', '1000',
    ]);
    const plain = new SwitchboardProcess(['--listen', '127.0.0.1:0']);
    [addr, plainAddr] = await Promise.all([keyed.start(), plain.start()]);
    browser = await launchChromium();
  });

  after(async () => {
    try {
      if (browser) await browser.close();
    } catch {
      /* already gone */
    } finally {
      await Promise.all(servers.map((s) => s.stop()));
    }
    if (anyFailure) {
      for (const s of servers) {
        if (s.stderr) console.error(`--- server stderr (tail) ---\n${s.stderr}\n--- end server stderr ---`);
      }
    }
  });

  test('without an admin key /admin is 404', step(async () => {
    for (const path of ['/admin', '/admin/admin.js', '/admin/api/stats']) {
      const res = await fetch(`http://${plainAddr}${path}`, { headers: { Authorization: `Bearer ${KEY}` } });
      assert.equal(res.status, 404, path);
      await res.arrayBuffer();
    }
  }));

  test('a wrong key gets 401 and the page asks for the key again', step(async () => {
    const res = await fetch(`http://${addr}/admin/api/stats`, { headers: { Authorization: 'Bearer wrong-key-wrong-key' } });
    assert.equal(res.status, 401);
    await res.arrayBuffer();
    const { context, page, response } = await openPage(`http://${addr}/admin#key=wrong-key-wrong-key`, 'wrong');
    assert.equal(response.status(), 200);
    await page.locator('#status', { hasText: 'wrong key' }).waitFor();
    await page.locator('#key-form').waitFor({ state: 'visible' });
    assert.match(await page.locator('#key-error').textContent(), /401/);
    // The key left the address bar.
    assert.equal(new URL(page.url()).hash, '');
    await context.close();
  }));

  test('with the key the charts render and move under a small load', step(async () => {
    const { context, page } = await openPage(`http://${addr}/admin`, 'admin');
    await page.locator('#key-form').waitFor({ state: 'visible' });
    await page.locator('#key').fill(KEY);
    await page.locator('#key-form button').click();
    await page.locator('#status', { hasText: /^live/ }).waitFor();
    await page.waitForFunction(() => document.querySelectorAll('#nodes tbody tr').length === 1);
    const ids = ['chart-connections', 'chart-messages-in', 'chart-deliveries', 'chart-latency', 'chart-slow', 'chart-bytes'];
    for (const id of ids) {
      assert.ok((await paintedPixels(page, id)) > 0, `${id} drew nothing`);
    }
    const picture = (id) => page.evaluate((canvasId) => document.getElementById(canvasId).toDataURL(), id);
    const idle = await picture('chart-messages-in');
    const idleDeliveries = await picture('chart-deliveries');
    const idleLatency = await picture('chart-latency');

    // The load: 3 connections in one room, publishing 20 messages a second each, from a
    // second page of the same origin (its WebSockets are same-origin).
    const load = await openPage(`http://${addr}/`, 'load');
    await load.page.evaluate((host) => {
      window.loadSockets = [];
      window.loadTimers = [];
      for (let i = 0; i < 3; i++) {
        const ws = new WebSocket(`ws://${host}/ws?user=load${i}`);
        ws.onopen = () => {
          ws.send(JSON.stringify({ type: 'join', room: 'load-room', id: 1 }));
          let n = 0;
          window.loadTimers.push(
            setInterval(() => ws.send(JSON.stringify({ type: 'publish', room: 'load-room', data: { n: n++ }, echo: false })), 50),
          );
        };
        window.loadSockets.push(ws);
      }
    }, addr);

    await page.waitForFunction(() => {
      const last = JSON.parse(document.getElementById('chart-connections').dataset.last || '{}');
      return Object.values(last).some((values) => values[0] >= 3);
    });
    await page.waitForFunction(() => {
      const last = JSON.parse(document.getElementById('chart-messages-in').dataset.last || '{}');
      return Object.values(last).some((values) => values[0] > 10);
    });
    await page.locator('#busiest tbody tr').first().filter({ hasText: 'load-room' }).waitFor();
    const [rate] = await lastValues(page, 'chart-messages-in');
    assert.ok(rate > 10 && rate < 200, `messages in/s ${rate}`);
    const busy = await picture('chart-messages-in');
    assert.notEqual(busy, idle, 'the messages chart did not move');
    // Deliveries and latency come from the /metrics recorder: each message reaches the two
    // other members (echo off), so ~120 deliveries/s, each batch's latency sampled.
    await page.waitForFunction(() => {
      const last = JSON.parse(document.getElementById('chart-deliveries').dataset.last || '{}');
      return Object.values(last).some((values) => values[0] > 10);
    });
    await page.waitForFunction(() => {
      const last = JSON.parse(document.getElementById('chart-latency').dataset.last || '{}');
      return Object.values(last).some((values) => typeof values[0] === 'number' && values[0] > 0);
    });
    const [deliveries] = await lastValues(page, 'chart-deliveries');
    assert.ok(deliveries > 10 && deliveries < 400, `deliveries/s ${deliveries}`);
    const [p50, p99] = (await page.evaluate(() => Object.values(JSON.parse(document.getElementById('chart-latency').dataset.last || '{}'))))[0];
    assert.ok(p50 > 0 && p50 < 1000, `latency p50 ${p50} ms`);
    assert.ok(p99 >= p50, `latency p99 ${p99} < p50 ${p50}`);
    assert.notEqual(await picture('chart-deliveries'), idleDeliveries, 'the deliveries chart did not move');
    assert.notEqual(await picture('chart-latency'), idleLatency, 'the latency chart did not move');
    assert.ok(Number(await page.evaluate(() => document.getElementById('chart-connections').dataset.points)) > 1);

    // And back down when the load stops.
    await load.page.evaluate(() => {
      window.loadTimers.forEach(clearInterval);
      window.loadSockets.forEach((ws) => ws.close());
    });
    await page.waitForFunction(() => {
      const last = JSON.parse(document.getElementById('chart-connections').dataset.last || '{}');
      return Object.values(last).some((values) => values[0] === 0);
    });
    await load.context.close();
    await context.close();
    assert.deepEqual(problems, []);
  }));
});
