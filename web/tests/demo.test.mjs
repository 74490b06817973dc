// End-to-end test of the built-in demo chat page against the real server binary.
//
// Env:
//   SWITCHBOARD_BIN  path of the server binary (default: <repo>/target/debug/switchboard)
//   CHROMIUM_PATH    Chromium executable (default: /usr/bin/chromium)
//
// No fixed sleeps: readiness comes from the server's `listening on ADDR` stdout line, and every
// browser-side check is an auto-waiting locator / waitForFunction with a timeout.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { SwitchboardProcess, launchChromium, servers } from './switchboard-process.mjs';


const WAIT_MS = 10_000; // per browser-side expectation

let server = null; // the main Server instance
let addr = null; // "127.0.0.1:PORT" of the main server
let browser = null;
const consoleProblems = []; // "[who] message"
let anyFailure = false;


/** Run a test body, remembering failures so `after` can print the server's stderr. */
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

async function openPage(who, { at = addr, problems = consoleProblems } = {}) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`[${who}] console: ${msg.text()}`);
  });
  page.on('pageerror', (err) => problems.push(`[${who}] pageerror: ${err.message}`));
  const resp = await page.goto(`http://${at}/`);
  assert.equal(resp.status(), 200, `GET / for ${who}`);
  return { context, page };
}

async function joinAs(page, name) {
  await page.locator('#name').fill(name);
  assert.equal(await page.locator('#room').inputValue(), 'lobby', 'room is prefilled with "lobby"');
  await page.locator('#join').click();
  await page.locator('#status', { hasText: /^connected$/ }).waitFor();
}

function memberNames(page) {
  return page.locator('#members li').allTextContents();
}

/** Wait until #members contains every name in `present` and none in `absent`. */
async function waitMembers(page, present, absent = []) {
  try {
    await page.waitForFunction(
      ([want, notWant]) => {
        const have = new Set([...document.querySelectorAll('#members li')].map((li) => li.textContent));
        return want.every((n) => have.has(n)) && notWant.every((n) => !have.has(n));
      },
      [present, absent],
      { timeout: WAIT_MS },
    );
  } catch (err) {
    const have = await memberNames(page).catch(() => []);
    throw new Error(
      `#members: expected ${JSON.stringify(present)} present and ${JSON.stringify(absent)} absent, ` +
        `have ${JSON.stringify(have)}: ${err.message}`,
    );
  }
}

/** Locator for `.message` elements whose `.text` is exactly `text`. */
function messagesWithText(page, text) {
  return page.locator('#messages .message').filter({
    has: page.locator('.text', { hasText: new RegExp(`^${text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`) }),
  });
}

async function waitTyping(page, predicate, description) {
  try {
    await page.waitForFunction(predicate, null, { timeout: WAIT_MS });
  } catch (err) {
    const now = await page.locator('#typing').textContent().catch(() => '?');
    throw new Error(`#typing: expected ${description}, have ${JSON.stringify(now)}: ${err.message}`);
  }
}

describe('switchboard demo page', { timeout: 55_000 }, () => {
  let alice;
  let bob;

  before(async () => {
    server = new SwitchboardProcess(['--listen', '127.0.0.1:0']);
    addr = await server.start();
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

  test('GET /healthz returns 200 ok', step(async () => {
    const res = await fetch(`http://${addr}/healthz`);
    assert.equal(res.status, 200);
    assert.equal((await res.text()).trim(), 'ok');
  }));

  test('page and its assets load without console errors', step(async () => {
    for (const [path, type] of [['/app.js', /javascript/], ['/style.css', /css/]]) {
      const res = await fetch(`http://${addr}${path}`);
      assert.equal(res.status, 200, `GET ${path}`);
      assert.match(res.headers.get('content-type') || '', type, `content-type of ${path}`);
      await res.arrayBuffer();
    }
    const before = consoleProblems.length;
    const { context, page } = await openPage('fresh');
    await page.locator('#status', { hasText: /^disconnected$/ }).waitFor();
    // The stylesheet was applied (served and parsed), and the script ran (status set by app.js).
    const listStyle = await page.locator('#members').evaluate((e) => getComputedStyle(e).listStyleType);
    assert.equal(listStyle, 'none', 'style.css applied');
    assert.equal(await page.locator('#room').inputValue(), 'lobby');
    await context.close();
    assert.deepEqual(consoleProblems.slice(before), []);
  }));

  test('alice and bob join lobby and see each other', step(async () => {
    alice = await openPage('alice');
    bob = await openPage('bob');
    await joinAs(alice.page, 'alice');
    await joinAs(bob.page, 'bob');
    await waitMembers(alice.page, ['alice', 'bob']);
    await waitMembers(bob.page, ['alice', 'bob']);
    // Each user listed exactly once.
    for (const p of [alice.page, bob.page]) {
      const names = await memberNames(p);
      assert.deepEqual([...names].sort(), ['alice', 'bob']);
    }
  }));

  test('typing indicator shows on the other side', step(async () => {
    await alice.page.locator('#input').fill('hel');
    await waitTyping(
      bob.page,
      () => /alice/.test(document.getElementById('typing').textContent),
      'to mention alice',
    );
    // Alice does not see herself typing.
    assert.doesNotMatch((await alice.page.locator('#typing').textContent()) || '', /alice/);
  }));

  test('alice sends a message: bob gets it, alice sees it once', step(async () => {
    const text = 'hello from alice';
    await alice.page.locator('#input').fill(text);
    await alice.page.locator('#input').press('Enter');

    const atBob = messagesWithText(bob.page, text);
    await atBob.first().waitFor();
    assert.equal(await atBob.count(), 1);
    assert.equal(await atBob.locator('.from').textContent(), 'alice');
    assert.match((await atBob.locator('.time').textContent()) || '', /^\d{2}:\d{2}:\d{2}$/);

    // A message from alice clears her typing indicator at bob's, in the same step that shows the
    // message (alice's typing event was sent before her publish, on the same connection).
    assert.doesNotMatch((await bob.page.locator('#typing').textContent()) || '', /alice/);

    // Alice's own copy arrives via echo and is styled as her own.
    const atAlice = messagesWithText(alice.page, text);
    await atAlice.first().waitFor();
    assert.equal(await atAlice.locator('.from').first().textContent(), 'alice');
    assert.match((await atAlice.first().getAttribute('class')) || '', /\bown\b/);
    assert.equal(await alice.page.locator('#input').inputValue(), '', 'input cleared after send');
  }));

  test('bob replies with the send button and alice sees it', step(async () => {
    const reply = 'hi alice, bob here';
    await bob.page.locator('#input').fill(reply);
    await bob.page.locator('#send').click();

    const atAlice = messagesWithText(alice.page, reply);
    await atAlice.first().waitFor();
    assert.equal(await atAlice.locator('.from').textContent(), 'bob');
    assert.match((await atAlice.locator('.time').textContent()) || '', /^\d{2}:\d{2}:\d{2}$/);
    assert.doesNotMatch((await atAlice.getAttribute('class')) || '', /\bown\b/);

    // The server delivers in seq order, so by now any duplicate echo of alice's message would have
    // arrived before bob's reply: she must have exactly one copy.
    assert.equal(await messagesWithText(alice.page, 'hello from alice').count(), 1);
    // And bob's own reply shows once on his side too.
    await messagesWithText(bob.page, reply).first().waitFor();
    assert.equal(await messagesWithText(bob.page, reply).count(), 1);
  }));

  test('user text is escaped, not interpreted as HTML', step(async () => {
    const evil = '<img src=x onerror="window.__pwned=1"><b>bold</b>';
    await alice.page.locator('#input').fill(evil);
    await alice.page.locator('#input').press('Enter');
    const atBob = messagesWithText(bob.page, evil);
    await atBob.first().waitFor();
    assert.equal(await atBob.locator('.text img, .text b').count(), 0);
    assert.equal(await bob.page.evaluate(() => window.__pwned), undefined);
  }));

  test('bob leaves: alice no longer lists him', step(async () => {
    await bob.page.locator('#leave').click();
    await bob.page.locator('#status', { hasText: /^disconnected$/ }).waitFor();
    await waitMembers(alice.page, ['alice'], ['bob']);
  }));

  test('closing a page removes that user from the member list', step(async () => {
    const carol = await openPage('carol');
    await joinAs(carol.page, 'carol');
    await waitMembers(alice.page, ['alice', 'carol']);
    await carol.context.close();
    await waitMembers(alice.page, ['alice'], ['carol']);
  }));

  test('no console errors on any page', step(async () => {
    assert.deepEqual(consoleProblems, []);
  }));

  test('after a server restart the page reconnects and re-joins by itself', step(async () => {
    // A separate server instance, so the shared one is untouched. While the server is down the
    // browser may log failed connection attempts, so this page's console is not checked.
    const first = new SwitchboardProcess(['--listen', '127.0.0.1:0']);
    const at = await first.start();
    const dave = await openPage('dave', { at, problems: [] });
    await joinAs(dave.page, 'dave');
    await waitMembers(dave.page, ['dave']);

    await first.stop(); // graceful shutdown: close 1001 to the page
    await dave.page.locator('#status', { hasText: /^disconnected$/ }).waitFor();
    const second = new SwitchboardProcess(['--listen', at]); // same address, so the page's reconnect attempts reach it
    assert.equal(await second.start(), at);

    await dave.page.locator('#status', { hasText: /^connected$/ }).waitFor();
    await waitMembers(dave.page, ['dave']);
    await dave.page.locator('#input').fill('back again');
    await dave.page.locator('#input').press('Enter');
    await messagesWithText(dave.page, 'back again').first().waitFor();
    await dave.context.close();
    await second.stop();
  }));
});
