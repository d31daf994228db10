// Chromium (Debian's, driven by playwright-core): the demo page flow up to
// subscribe (Chromium's own push service is out of reach offline, and the
// library must say so), and the service worker's handling of push, click
// and subscription change, with pushes delivered through the DevTools
// Protocol.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { api, artifacts, eventToken, eventually, signUserId, startDevPush, startServer } from './harness.mjs';

let server;
let browser;
let context;
let page;

before(async () => {
  server = await startServer();
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run', '--disable-quic'],
  });
  context = await browser.newContext();
  // Count permission requests: the page must never ask on load.
  await context.addInitScript(() => {
    window.__permissionRequests = 0;
    const original = Notification.requestPermission.bind(Notification);
    Notification.requestPermission = (...args) => {
      window.__permissionRequests += 1;
      return original(...args);
    };
  });
  page = await context.newPage();
});

after(async () => {
  await browser?.close();
  server?.stop();
});

test('the demo page loads without asking for permission', async () => {
  await page.goto(`${server.url}/`);
  await page.waitForSelector('body[data-ready="true"]');
  assert.equal(await page.evaluate(() => window.__permissionRequests), 0);
  assert.equal(await page.evaluate(() => Notification.permission), 'default');
  assert.match(await page.textContent('#status'), /Not subscribed/);
  assert.deepEqual(await page.evaluate(async () => (await import('/tocsin.js')).default.isSupported()), { supported: true });
  const manifest = await (await fetch(`${server.url}/manifest.webmanifest`)).json();
  assert.equal(manifest.display, 'standalone');
  await page.screenshot({ path: join(artifacts, 'demo-chromium.png'), fullPage: true });
});

test('subscribing offline fails with a clear, typed error', async () => {
  await context.grantPermissions(['notifications'], { origin: server.url });
  await page.click('#subscribe');
  await page.waitForSelector('body[data-error]', { timeout: 60000 });
  assert.equal(await page.evaluate(() => document.body.dataset.error), 'push-service-unreachable');
  assert.match(await page.textContent('#status'), /could not reach its push service/);
  assert.equal(await page.evaluate(() => window.__permissionRequests), 1, 'asked once, on the click');
});

test('the plain-script build defines window.Tocsin', async () => {
  const p = await context.newPage();
  await p.goto(`${server.url}/healthz`);
  await p.addScriptTag({ url: `${server.url}/tocsin.global.js` });
  assert.equal(await p.evaluate(() => typeof window.Tocsin.subscribe), 'function');
  assert.equal(await p.evaluate(() => window.Tocsin.permission()), 'granted');
  await p.close();
});

test('requestPermission works with the old callback-only form', async () => {
  const p = await context.newPage();
  await p.goto(`${server.url}/healthz`);
  const state = await p.evaluate(async () => {
    // A browser whose requestPermission only takes a callback and returns nothing.
    Notification.requestPermission = (cb) => { setTimeout(() => cb('granted'), 10); };
    return (await import('/tocsin.js')).default.requestPermission();
  });
  assert.equal(state, 'granted');
  await p.close();
});

test('on iPhone outside the Home Screen, isSupported says why', async () => {
  const ios = await browser.newContext({
    userAgent: 'Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.0 Mobile/15E148 Safari/604.1',
  });
  const p = await ios.newPage();
  await p.goto(`${server.url}/`);
  await p.waitForSelector('body[data-ready="true"]');
  const s = await p.evaluate(async () => (await import('/tocsin.js')).default.isSupported());
  assert.equal(s.supported, false);
  assert.equal(s.reason, 'ios-home-screen');
  assert.match(await p.textContent('#status'), /Add to Home Screen/);
  assert.equal(await p.isDisabled('#subscribe'), true);
  await ios.close();
});

async function workerRegistrationId() {
  const cdp = await context.newCDPSession(page);
  const found = new Promise((resolve) => {
    cdp.on('ServiceWorker.workerRegistrationUpdated', ({ registrations }) => {
      const r = registrations.find((x) => x.scopeURL.startsWith(server.url) && !x.isDeleted);
      if (r) resolve(r.registrationId);
    });
  });
  await cdp.send('ServiceWorker.enable');
  return { cdp, id: await found };
}

test('a push shows a notification and reports it shown; a click reports and opens the URL', async () => {
  // A real message, so that shown/clicked land in its counts.
  const { body: m } = await api(server, 'POST', '/v1/messages', { payload: 'x', target: { all: true } });
  // A push delivered to a registration whose worker is not active yet is
  // dropped (seen once in CI, on a loaded machine): wait for it to be active.
  assert.ok(await page.evaluate(() => Promise.race([
    navigator.serviceWorker.ready.then(() => true),
    new Promise((resolve) => setTimeout(() => resolve(false), 15000)),
  ])), 'the service worker became active');
  const { cdp, id } = await workerRegistrationId();
  const data = JSON.stringify({
    title: 'From the test', body: 'Delivered by CDP', url: '/?opened=1', tag: 't1', messageId: m.id, eventToken: eventToken(m.id),
  });
  await cdp.send('ServiceWorker.deliverPushMessage', { origin: server.url, registrationId: id, data });
  const firstNotification = () =>
    page.evaluate(async () => {
      const reg = await navigator.serviceWorker.getRegistration('/sw.js');
      const list = await reg.getNotifications();
      return list.map((n) => ({ title: n.title, body: n.body, tag: n.tag, data: n.data }))[0];
    });
  // In two of three clean-clone CI runs on a loaded 2-core machine, the first
  // CDP push never reached the worker (not reproduced when this file runs
  // alone). CDP delivery is the test's tool, not the product's path (the
  // Firefox tests push through a real push service): deliver once more
  // after 5 s of nothing, and then accept one or two "shown" reports.
  let redelivered = false;
  let shown = await eventually('the notification', firstNotification, 5000).catch(() => null);
  if (!shown) {
    redelivered = true;
    console.error('chromium test: the first CDP push showed nothing in 5 s; delivering it again');
    await cdp.send('ServiceWorker.deliverPushMessage', { origin: server.url, registrationId: id, data });
    shown = await eventually('the notification', firstNotification);
  }
  assert.equal(shown.title, 'From the test');
  assert.equal(shown.body, 'Delivered by CDP');
  assert.equal(shown.data.url, '/?opened=1');
  await eventually('shown counted', async () => {
    const n = (await api(server, 'GET', `/v1/messages/${m.id}`)).body.counts.shown;
    return redelivered ? n >= 1 : n === 1;
  });

  // Plain text becomes the body; no data still shows a default notification.
  // (Delivered again after 5 s of nothing, as above: both show the same
  // notification however often they arrive.)
  const three = () =>
    page.evaluate(async () => {
      const reg = await navigator.serviceWorker.getRegistration('/sw.js');
      const list = (await reg.getNotifications()).map((n) => ({ title: n.title, body: n.body }));
      return list.some((n) => n.body === 'just text') && list.some((n) => n.body === '') ? list : null;
    });
  let all = null;
  for (let i = 0; i < 4 && !all; i += 1) {
    await cdp.send('ServiceWorker.deliverPushMessage', { origin: server.url, registrationId: id, data: 'just text' });
    await cdp.send('ServiceWorker.deliverPushMessage', { origin: server.url, registrationId: id, data: '' });
    all = await eventually('three notifications', three, 5000).catch(() => null);
    if (!all) console.error('chromium test: the CDP pushes of text and of nothing showed nothing in 5 s; delivering them again');
  }
  assert.ok(all, 'the text and empty pushes were shown');
  assert.ok(all.some((n) => n.body === 'just text'), JSON.stringify(all));
  assert.ok(all.some((n) => n.title === 'New notification' && n.body === ''), JSON.stringify(all));

  // notificationclick: headless Chromium cannot click a notification, so the
  // test dispatches the event in the worker and records what it opens.
  const [worker] = context.serviceWorkers();
  const opened = await worker.evaluate(async () => {
    const urls = [];
    self.clients.openWindow = async (u) => { urls.push(u); return null; };
    const [n] = (await self.registration.getNotifications()).filter((x) => x.title === 'From the test');
    try {
      self.dispatchEvent(new NotificationEvent('notificationclick', { notification: n }));
    } catch (_) { /* waitUntil on a synthetic event throws; the handler's work goes on */ }
    await new Promise((r) => setTimeout(r, 500));
    return urls;
  });
  assert.deepEqual(opened, [`${server.url}/?opened=1`]);
  await eventually('clicked counted', async () => (await api(server, 'GET', `/v1/messages/${m.id}`)).body.counts.clicked === 1);
});

test('a declarative message: sw.js shows it, a click opens navigate (an action its own), app_badge sets the badge', async () => {
  // The bytes Tocsin sends, as the dev push service decrypted them, are
  // what CDP hands to Chromium's worker (its own push service is out of
  // reach offline).
  const dev = await startDevPush();
  try {
    const { publicKey } = await (await fetch(`${server.url}/api/vapid-public-key`)).json();
    const minted = await (await fetch(`${dev.url}/subscriptions`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ applicationServerKey: publicKey }),
    })).json();
    const stored = await fetch(`${server.url}/api/subscription`, {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(minted),
    });
    assert.equal(stored.status, 200);
    const { body: sub } = await api(server, 'GET', `/v1/subscriptions?limit=100`);
    const id = sub.items.find((s) => s.endpoint === minted.endpoint).id;
    const navigate = `${server.url}/?from=declarative`;
    const { status, body: m } = await api(server, 'POST', '/v1/messages', {
      format: 'declarative', target: { subscriptionIds: [id] },
      payload: { web_push: 8030, app_badge: 7, clearAppBadgeOnClick: true, notification: {
        title: 'Declarative in Chromium', body: 'shown by sw.js', navigate, tag: 'dwp',
        actions: [{ action: 'orders', title: 'Orders', navigate: `${server.url}/?orders=1` }] } },
    });
    assert.equal(status, 202, JSON.stringify(m));
    const pushed = await eventually('the push at the dev push service', async () => {
      const { items } = await (await fetch(`${dev.url}/messages`)).json();
      return items.find((x) => x.subscriptionId === minted.endpoint.split('/').pop() && x.payload);
    });
    const data = pushed.payload;
    assert.equal(JSON.parse(data).web_push, 8030);

    const [worker] = context.serviceWorkers();
    // A spy on the Badging API, in the worker, before the push arrives.
    await worker.evaluate(() => {
      self.__badges = [];
      const nav = self.navigator;
      Object.defineProperty(nav, 'setAppBadge', { configurable: true, value: async (n) => { self.__badges.push(n); } });
      Object.defineProperty(nav, 'clearAppBadge', { configurable: true, value: async () => { self.__badges.push(0); } });
    });
    const { cdp, id: registrationId } = await workerRegistrationId();
    // CDP's push delivery is the test's tool, not the product's path, and on
    // a loaded machine it sometimes drops a push (see the test above):
    // deliver again after 5 s of nothing.
    let redelivered = false;
    const push = async (pushData, what, shown) => {
      for (let i = 0; i < 4; i += 1) {
        await cdp.send('ServiceWorker.deliverPushMessage', { origin: server.url, registrationId, data: pushData });
        const got = await eventually(what, shown, 5000).catch(() => null);
        if (got) return got;
        redelivered = true;
        console.error(`chromium test: the CDP push "${what}" showed nothing in 5 s; delivering it again`);
      }
      throw new Error(`${what} was never shown`);
    };
    const lastBadge = () => worker.evaluate(() => self.__badges[self.__badges.length - 1]);
    const shown = await push(data, 'the declarative notification', () => worker.evaluate(async () => {
      const n = (await self.registration.getNotifications()).find((x) => x.title === 'Declarative in Chromium');
      return n && { body: n.body, tag: n.tag, url: n.data.url, actions: n.actions.map((a) => a.action) };
    }));
    assert.deepEqual(shown, { body: 'shown by sw.js', tag: 'dwp', url: navigate, actions: ['orders'] });
    assert.equal(await lastBadge(), 7, 'app_badge called setAppBadge(7)');
    await eventually('shown counted', async () => {
      const n = (await api(server, 'GET', `/v1/messages/${m.id}`)).body.counts.shown;
      return redelivered ? n >= 1 : n === 1;
    });

    // Clicks (synthesized: headless Chromium cannot click a notification):
    // the body opens navigate, the action its own navigate; each is
    // reported (counted once: one delivery), and clearAppBadgeOnClick
    // clears the badge.
    await worker.evaluate(() => { self.__badges.push('before the clicks'); });
    const opened = await worker.evaluate(async () => {
      const urls = [];
      self.clients.openWindow = async (u) => { urls.push(u); return null; };
      const [n] = (await self.registration.getNotifications()).filter((x) => x.title === 'Declarative in Chromium');
      for (const action of ['', 'orders']) {
        try {
          self.dispatchEvent(new NotificationEvent('notificationclick', { notification: n, action }));
        } catch (_) { /* waitUntil on a synthetic event throws; the handler's work goes on */ }
      }
      await new Promise((r) => setTimeout(r, 500));
      return urls;
    });
    assert.deepEqual(opened, [navigate, `${server.url}/?orders=1`]);
    const afterClicks = await worker.evaluate(() => self.__badges.slice(self.__badges.indexOf('before the clicks') + 1));
    assert.deepEqual(afterClicks, [0, 0], 'each click cleared the badge');
    // Both clicks are reported, but they are one delivery's: counted once
    // (sw.js names its subscription, and the server keeps a receipt).
    await eventually('clicked counted', async () => (await api(server, 'GET', `/v1/messages/${m.id}`)).body.counts.clicked === 1);
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal((await api(server, 'GET', `/v1/messages/${m.id}`)).body.counts.clicked, 1, 'the second click counted nothing');

    // A classic payload's appBadge sets the badge too, and 0 clears it.
    for (const [badge, title] of [[3, 'Badge three'], [0, 'Badge cleared']]) {
      await push(JSON.stringify({ title, appBadge: badge }), title, () => worker.evaluate(async (t) =>
        (await self.registration.getNotifications()).some((x) => x.title === t), title));
      assert.equal(await lastBadge(), badge, title);
    }

    // The mutable hook: called for a message with mutable: true only.
    await worker.evaluate(() => {
      self.tocsinMutate = async (n) => ({ ...n, title: `${n.title} (rewritten)` });
    });
    for (const mutable of [true, false]) {
      const title = `Mutable ${mutable}`;
      await push(JSON.stringify({ web_push: 8030, mutable, notification: { title, navigate } }), title,
        () => worker.evaluate(async (t) => (await self.registration.getNotifications())
          .map((x) => x.title).find((x) => x.startsWith(t)), title));
    }
    const titles = await worker.evaluate(async () => (await self.registration.getNotifications())
      .map((x) => x.title).filter((x) => x.startsWith('Mutable')).sort());
    assert.deepEqual([...new Set(titles)], ['Mutable false', 'Mutable true (rewritten)']);
  } finally {
    dev.stop();
  }
});

test('pushsubscriptionchange sends the new subscription, which replaces the old one', async () => {
  // Store a subscription as if the browser had one, with a user and topics.
  const key = 'BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4';
  const old = { endpoint: 'http://127.0.0.1:9/push/old', keys: { p256dh: key, auth: 'BTBZMqHH6r4Tts7J_aSIgg' } };
  const r = await fetch(`${server.url}/api/subscription`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ ...old, userId: 'alice', userSignature: signUserId('alice'), topics: ['news'] }),
  });
  assert.equal(r.status, 200);
  const [worker] = context.serviceWorkers();
  await worker.evaluate(async ({ old, key }) => {
    const fresh = { endpoint: 'http://127.0.0.1:9/push/new', keys: { p256dh: key, auth: 'AAAAAAAAAAAAAAAAAAAAAA' } };
    const event = new ExtendableEvent('pushsubscriptionchange');
    Object.defineProperty(event, 'oldSubscription', { value: { endpoint: old.endpoint, options: {}, toJSON: () => old } });
    Object.defineProperty(event, 'newSubscription', { value: { toJSON: () => fresh } });
    try {
      self.dispatchEvent(event);
    } catch (_) { /* see above */ }
    await new Promise((r) => setTimeout(r, 500));
  }, { old, key });
  const list = await eventually('the replacement', async () => {
    const { body } = await api(server, 'GET', '/v1/subscriptions?userId=alice');
    return body.items.length === 1 && body.items[0].endpoint.endsWith('/push/new') ? body.items : null;
  });
  assert.deepEqual(list[0].topics, ['news']);
  const { body: all } = await api(server, 'GET', '/v1/subscriptions');
  assert.ok(!all.items.some((s) => s.endpoint.endsWith('/push/old')), 'the old endpoint is gone');
});
