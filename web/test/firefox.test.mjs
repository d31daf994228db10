// Firefox ESR (Debian's, driven by puppeteer-core over WebDriver BiDi), the
// whole chain offline: Firefox's own push client speaks Mozilla's WebSocket
// protocol to `tocsin dev push-service`; the page from `tocsin serve`
// subscribes through the real pushManager; Tocsin encrypts and sends;
// Firefox decrypts in the real service worker and shows the notification.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import puppeteer from 'puppeteer-core';
import { api, artifacts, eventually, repo, startDevPush, startServer, TOKEN } from './harness.mjs';

const bin = process.env.TOCSIN_BIN || join(repo, 'target', 'debug', 'tocsin');
let dev;
let server;
let browser;
let page;
let profile;
const vapid = JSON.parse(execFileSync(bin, ['vapid', 'generate', '--json'], { encoding: 'utf8' }));

async function devGet(path) {
  return (await fetch(`${dev.url}${path}`)).json();
}

async function notifications() {
  return page.evaluate(async () => {
    const reg = await navigator.serviceWorker.getRegistration('/sw.js');
    return (await reg.getNotifications()).map((n) => ({ title: n.title, body: n.body }));
  });
}

async function waitForNotification(pred, what) {
  return eventually(what, async () => (await notifications()).find(pred), 30000);
}

async function devMessages() {
  return (await devGet('/messages')).items;
}

function send(args) {
  return execFileSync(bin, ['send', ...args], { encoding: 'utf8' });
}

before(async () => {
  dev = await startDevPush();
  server = await startServer({ vapid });
  profile = mkdtempSync(join(tmpdir(), 'tocsin-ff-'));
  browser = await puppeteer.launch({
    browser: 'firefox',
    executablePath: process.env.FIREFOX || '/usr/bin/firefox-esr',
    headless: true,
    userDataDir: profile,
    // A reader in Brazil: the language and zone tocsin.js reports.
    env: { ...process.env, TZ: 'America/Sao_Paulo' },
    extraPrefsFirefox: {
      'dom.push.serverURL': dev.url.replace('http://', 'ws://') + '/',
      'dom.push.testing.allowInsecureServerURL': true,
      // The remote agent turns the push connection off; turn it back on.
      'dom.push.connection.enabled': true,
      'dom.push.enabled': true,
      'dom.push.retryBaseInterval': 500,
      'permissions.default.desktop-notification': 1,
      'intl.accept_languages': 'pt-BR, en',
      'alerts.useSystemBackend': false,
      'network.proxy.type': 1,
      'network.proxy.http': '127.0.0.1',
      'network.proxy.http_port': 9,
      'network.proxy.ssl': '127.0.0.1',
      'network.proxy.ssl_port': 9,
      'network.proxy.no_proxies_on': 'localhost,127.0.0.1',
      'network.trr.mode': 5,
      'app.update.enabled': false,
      'toolkit.telemetry.enabled': false,
      'datareporting.policy.dataSubmissionEnabled': false,
      'services.settings.server': 'http://127.0.0.1:9/',
      'browser.safebrowsing.malware.enabled': false,
      'browser.safebrowsing.phishing.enabled': false,
    },
  });
  // Firefox connects to its push service by itself; subscribing before its
  // hello is answered can hang.
  await eventually('Firefox to say hello', async () => (await devGet('/uas')).items.some((u) => u.connected), 30000);
  page = await browser.newPage();
});

after(async () => {
  await browser?.close();
  server?.stop();
  dev?.stop();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

let subscription;

test('Firefox subscribes through its real pushManager and Tocsin stores it', async () => {
  await page.goto(`${server.url}/`);
  await page.waitForSelector('body[data-ready="true"]');
  await page.screenshot({ path: join(artifacts, 'demo-firefox.png') });
  await page.click('#subscribe');
  await eventually('subscribed', async () => (await page.$eval('#status', (e) => e.textContent)) === 'Subscribed.', 30000);
  subscription = await page.evaluate(async () => {
    const reg = await navigator.serviceWorker.getRegistration('/sw.js');
    return (await reg.pushManager.getSubscription()).toJSON();
  });
  assert.ok(subscription.endpoint.startsWith(`${dev.url}/push/`), subscription.endpoint);
  const { body } = await api(server, 'GET', '/v1/subscriptions');
  assert.equal(body.items.length, 1);
  assert.equal(body.items[0].endpoint, subscription.endpoint);
});

test('POST /api/push reaches the service worker, decrypted (aes128gcm), and is shown', async () => {
  const res = await fetch(`${server.url}/api/push`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${TOKEN}` },
    body: JSON.stringify({ title: 'Hello Firefox', body: 'aes128gcm, sent by tocsin serve' }),
  });
  const { data } = await res.json();
  const n = await waitForNotification((x) => x.title === 'Hello Firefox', 'the notification');
  assert.equal(n.body, 'aes128gcm, sent by tocsin serve', 'the plaintext the worker saw');
  const m = await eventually('ack 100', async () => (await devMessages()).find((x) => x.ackCode === 100));
  assert.equal(m.encoding, 'aes128gcm');
  const done = await eventually('shown counted', async () => {
    const { body } = await api(server, 'GET', `/v1/messages/${data.messageId}`);
    return body.state === 'done' && body.counts.shown === 1 ? body : null;
  });
  assert.equal(done.counts.delivered, 1);
});

test('the demo page\'s test button sends a notification to this browser', async () => {
  await page.click('#test');
  const n = await waitForNotification((x) => x.title === 'Test notification', 'the test notification');
  assert.equal(n.body, 'Sent by Tocsin to this browser.');
});

test('declarative messages through Firefox\'s real push client: sw.js shows what the sender described', async () => {
  // Firefox ESR 153 hands declarative messages to the service worker (it
  // does not show them by itself yet): sw.js must.
  const navigate = `${server.url}/?from=declarative`;
  const notification = { title: 'Declarative', body: 'described by the message', navigate, tag: 'dwp',
    actions: [{ action: 'orders', title: 'Orders', navigate: `${server.url}/?orders=1` }] };
  const sent = await api(server, 'POST', '/v1/messages', {
    format: 'declarative', target: { all: true }, payload: { web_push: 8030, notification, app_badge: 4 },
  });
  assert.equal(sent.status, 202, JSON.stringify(sent.body));
  const shown = await eventually('the declarative notification', () => page.evaluate(async () => {
    const reg = await navigator.serviceWorker.getRegistration('/sw.js');
    const n = (await reg.getNotifications()).find((x) => x.title === 'Declarative');
    return n && { body: n.body, tag: n.tag, data: n.data, actions: n.actions.map((a) => a.action) };
  }), 30000);
  assert.equal(shown.body, 'described by the message');
  assert.equal(shown.tag, 'dwp');
  assert.equal(shown.data.url, navigate, 'a click opens navigate');
  assert.deepEqual(shown.data.actionUrls, { orders: `${server.url}/?orders=1` });
  assert.deepEqual(shown.actions, ['orders']);
  const m = await eventually('shown counted', async () => {
    const { body } = await api(server, 'GET', `/v1/messages/${sent.body.id}`);
    return body.state === 'done' && body.counts.shown === 1 ? body : null;
  });
  assert.equal(m.format, 'declarative');
  assert.equal(m.counts.delivered, 1);

  // auto: Firefox's push service is not Apple's, so the same notification
  // arrives as classic JSON, and sw.js shows it the same way.
  const auto = await api(server, 'POST', '/v1/messages', {
    format: 'auto', target: { all: true }, payload: { notification: { title: 'Auto', body: 'classic here', navigate } },
  });
  assert.equal(auto.status, 202, JSON.stringify(auto.body));
  const a = await eventually('the auto notification', () => page.evaluate(async () => {
    const reg = await navigator.serviceWorker.getRegistration('/sw.js');
    const n = (await reg.getNotifications()).find((x) => x.title === 'Auto');
    return n && { body: n.body, url: n.data.url };
  }), 30000);
  assert.deepEqual(a, { body: 'classic here', url: navigate });
});

test('subscribing again reuses the subscription; a changed server key re-subscribes', async () => {
  const again = await page.evaluate(async () => (await import('/tocsin.js')).default.subscribe().then((s) => s.endpoint));
  assert.equal(again, subscription.endpoint, 'reused');
  assert.equal((await api(server, 'GET', '/v1/subscriptions')).body.items.length, 1, 'still one row');
  // A second server with another key (CORS allowed): the library notices the
  // key change, unsubscribes and subscribes with the new key.
  const other = await startServer({ extra: ['--cors-origin', server.url] });
  try {
    const moved = await page.evaluate(
      async (url) => (await import('/tocsin.js')).default.subscribe({ server: url }).then((s) => s.toJSON()),
      other.url,
    );
    assert.notEqual(moved.endpoint, subscription.endpoint);
    const stored = (await api(other, 'GET', '/v1/subscriptions')).body.items;
    assert.equal(stored.length, 1);
    assert.equal(stored[0].endpoint, moved.endpoint);
    // And back to the first server's key, for the tests that follow.
    const back = await page.evaluate(async () => (await import('/tocsin.js')).default.subscribe().then((s) => s.toJSON()));
    subscription = back;
    await fetch(`${server.url}/api/subscription`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(back) });
    const mine = (await api(server, 'GET', '/v1/subscriptions')).body.items.map((i) => i.endpoint);
    assert.ok(mine.includes(back.endpoint));
    // The row of the endpoint Firefox dropped answers 410 at the next send and goes.
  } finally {
    other.stop();
  }
});

test('aesgcm and a push without payload, sent by tocsin send', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tocsin-sub-'));
  const file = join(dir, 'sub.json');
  writeFileSync(file, JSON.stringify(subscription));
  const common = ['--subscription', file, '--vapid-subject', 'mailto:browser-tests@example.com', `--vapid-pvtkey=${vapid.privateKey}`];
  assert.match(send([...common, '--encoding', 'aesgcm', '--payload', JSON.stringify({ title: 'Legacy', body: 'aesgcm' })]), /201: delivered/);
  const legacy = await waitForNotification((x) => x.title === 'Legacy', 'the aesgcm notification');
  assert.equal(legacy.body, 'aesgcm');
  assert.match(send(common), /201: delivered/);
  await waitForNotification((x) => x.title === 'New notification', 'the default notification for an empty push');
  const codes = (await devMessages()).map((m) => [m.encoding, m.ackCode]);
  assert.deepEqual(codes.slice(-2), [['aesgcm', 100], [null, 100]]);
});

test('a message waiting while Firefox is offline arrives after it reconnects', async () => {
  const [ua] = (await devGet('/uas')).items;
  await fetch(`${dev.url}/uas/${ua.uaid}/disconnect`, { method: 'POST', body: JSON.stringify({ holdMs: 1500 }) });
  await eventually('offline', async () => !(await devGet('/uas')).items[0].connected);
  const { body } = await api(server, 'POST', '/v1/messages', { payload: { title: 'While away' }, target: { all: true } });
  await eventually('queued at the push service', async () => (await devGet('/uas')).items[0].pending >= 1);
  await waitForNotification((x) => x.title === 'While away', 'the notification after the reconnect');
  await eventually('acked after the reconnect', async () => (await devGet('/uas')).items[0].pending === 0);
  const done = await eventually('done', async () => {
    const { body: m } = await api(server, 'GET', `/v1/messages/${body.id}`);
    return m.state === 'done' ? m : null;
  });
  assert.equal(done.counts.delivered, 1);
});

test('after the browser unsubscribes, the endpoint answers 410 and Tocsin deletes the row', async () => {
  await page.evaluate(async () => {
    const reg = await navigator.serviceWorker.getRegistration('/sw.js');
    await (await reg.pushManager.getSubscription()).unsubscribe();
  });
  const r = await eventually('410 at the old endpoint', async () => {
    const res = await fetch(subscription.endpoint, { method: 'POST', headers: { TTL: '0' } });
    return res.status === 410 ? res : null;
  });
  assert.equal(r.status, 410);
  const { body } = await api(server, 'POST', '/v1/messages', { payload: 'bye', target: { all: true } });
  const m = await eventually('done', async () => {
    const { body: m } = await api(server, 'GET', `/v1/messages/${body.id}`);
    return m.state === 'done' ? m : null;
  });
  assert.equal(m.counts.gone, 1);
  assert.equal((await api(server, 'GET', '/v1/subscriptions')).body.items.length, 0);
});

test('the library subscribes again and unsubscribes through the server', async () => {
  await page.reload();
  await page.waitForSelector('body[data-ready="true"]');
  await page.click('#subscribe');
  await eventually('subscribed', async () => (await page.$eval('#status', (e) => e.textContent)) === 'Subscribed.', 30000);
  assert.equal((await api(server, 'GET', '/v1/subscriptions')).body.items.length, 1);
  await page.click('#unsubscribe');
  await eventually('unsubscribed', async () => (await page.$eval('#status', (e) => e.textContent)) === 'Unsubscribed.');
  assert.equal((await api(server, 'GET', '/v1/subscriptions')).body.items.length, 0);
});

async function currentSubscription() {
  return page.evaluate(async () => {
    const reg = await navigator.serviceWorker.getRegistration('/sw.js');
    const sub = reg && (await reg.pushManager.getSubscription());
    return sub && sub.toJSON();
  });
}

test('an app of its own: Tocsin.subscribe({app}) and the worker reports to that app', async () => {
  const { status } = await api(server, 'POST', '/v1/apps', { name: 'shop', vapidSubject: 'mailto:shop@example.com' });
  assert.equal(status, 201);
  await page.reload();
  await page.waitForSelector('body[data-ready="true"]');
  const sub = await page.evaluate(async () => (await import('/tocsin.js')).default.subscribe({ app: 'shop' }).then((s) => s.toJSON()));
  const stored = (await api(server, 'GET', '/v1/apps/shop/subscriptions')).body.items;
  assert.deepEqual(stored.map((s) => s.endpoint), [sub.endpoint]);
  assert.equal((await api(server, 'GET', '/v1/subscriptions')).body.items.length, 0, 'not in default');
  const { body } = await api(server, 'POST', '/v1/apps/shop/messages', { payload: { title: 'Hello shop' }, target: { all: true } });
  await waitForNotification((x) => x.title === 'Hello shop', 'the app\'s notification');
  const done = await eventually('shown counted in shop', async () => {
    const { body: m } = await api(server, 'GET', `/v1/apps/shop/messages/${body.id}`);
    return m.state === 'done' && m.counts.shown === 1 ? m : null;
  });
  assert.equal(done.counts.delivered, 1);
  const pushed = (await devMessages()).at(-1);
  assert.equal(pushed.vapid.subject, 'mailto:shop@example.com');
  assert.equal(await page.evaluate(async () => (await import('/tocsin.js')).default.unsubscribe({ app: 'shop' })), true);
  assert.equal((await api(server, 'GET', '/v1/apps/shop/subscriptions')).body.items.length, 0);
});

test('a rotated key: on the next page load the subscription moves to it, and pushes are shown', async () => {
  await page.goto(`${server.url}/`);
  await page.waitForSelector('body[data-ready="true"]');
  await page.click('#subscribe');
  await eventually('subscribed', async () => (await page.$eval('#status', (e) => e.textContent)) === 'Subscribed.', 30000);
  const before = await currentSubscription();
  const [oldKey] = (await api(server, 'GET', '/v1/vapid-keys')).body.items;
  assert.equal(oldKey.subscriptions, 1);

  const { status, body: rotated } = await api(server, 'POST', '/v1/vapid-keys');
  assert.equal(status, 201);
  assert.notEqual(rotated.publicKey, oldKey.publicKey);
  await page.reload();
  await page.waitForSelector('body[data-ready="true"]');
  const moved = await currentSubscription();
  assert.notEqual(moved.endpoint, before.endpoint, 'subscribed again with the new key');
  const keys = (await api(server, 'GET', '/v1/vapid-keys')).body.items.map((k) => [k.id, k.current, k.subscriptions]);
  assert.deepEqual(keys, [[oldKey.id, false, 0], [rotated.id, true, 1]]);
  const stored = (await api(server, 'GET', '/v1/subscriptions')).body.items.map((s) => s.endpoint);
  assert.deepEqual(stored, [moved.endpoint], 'the old row was replaced, not left behind');
  await page.screenshot({ path: join(artifacts, 'demo-firefox-after-rotation.png') });

  await fetch(`${server.url}/api/push`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${TOKEN}` },
    body: JSON.stringify({ title: 'After rotation', body: 'signed with the new key' }),
  });
  const n = await waitForNotification((x) => x.title === 'After rotation', 'the notification after the rotation');
  assert.equal(n.body, 'signed with the new key');
  const m = (await devMessages()).at(-1);
  assert.equal(Buffer.from(m.vapid.publicKey, 'base64url').toString('base64url'), rotated.publicKey);
  // The old key has no subscriber left: it may be retired.
  assert.equal((await api(server, 'DELETE', `/v1/vapid-keys/${oldKey.id}`)).status, 200);
});

test('tags, language and time zone from the page; a message aimed at an expression, localized and personalized, is shown', async () => {
  await page.goto(`${server.url}/`);
  await page.waitForSelector('body[data-ready="true"]');
  const here = await page.evaluate(async () => {
    const Tocsin = (await import('/tocsin.js')).default;
    await Tocsin.subscribe({ tags: { plan: 'pro', first_name: 'Ana', visits: 3 } });
    return { language: navigator.language, timeZone: Intl.DateTimeFormat().resolvedOptions().timeZone };
  });
  assert.deepEqual(here, { language: 'pt-BR', timeZone: 'America/Sao_Paulo' }, 'the browser as set up');
  let [stored] = (await api(server, 'GET', '/v1/subscriptions')).body.items;
  assert.deepEqual(stored.tags, { plan: 'pro', first_name: 'Ana', visits: 3 });
  assert.equal(stored.language, 'pt-BR');
  assert.equal(stored.timeZone, 'America/Sao_Paulo');
  // setTags: null removes a key, the others stay.
  assert.equal(await page.evaluate(async () => (await import('/tocsin.js')).default.setTags({ plan: null, vip: true })), true);
  [stored] = (await api(server, 'GET', '/v1/subscriptions')).body.items;
  assert.deepEqual(stored.tags, { first_name: 'Ana', visits: 3, vip: true });

  const none = await api(server, 'POST', '/v1/messages', { target: { where: 'vip == false' }, payload: { title: 'Nobody' } });
  const aimed = await api(server, 'POST', '/v1/messages', {
    target: { where: 'vip == true && language == "pt" && timeZone == "America/Sao_Paulo" && visits >= 3' },
    payload: {
      title: { en: 'For you, {{ tags.first_name }}', pt: 'Para você, {{ tags.first_name | default: "amigo" }}' },
      body: { en: 'In English', 'pt-BR': 'Em português do Brasil, visita {{ tags.visits }}' },
      defaultLanguage: 'en',
    },
  });
  assert.equal(aimed.status, 202, JSON.stringify(aimed.body));
  const n = await waitForNotification((x) => x.title.startsWith('Para você'), 'the notification aimed by expression');
  assert.equal(n.title, 'Para você, Ana', 'the title in pt (the primary subtag of pt-BR), with the tag filled in');
  assert.equal(n.body, 'Em português do Brasil, visita 3', 'the body in pt-BR exactly');
  const nobody = await eventually('the other message done', async () => {
    const { body } = await api(server, 'GET', `/v1/messages/${none.body.id}`);
    return body.state === 'done' ? body : null;
  });
  assert.equal(nobody.counts.targeted, 0);
  assert.ok(!(await notifications()).some((x) => x.title === 'Nobody'));
});
