// Tocsin service worker: shows each push as a notification, handles clicks,
// re-subscribes when the push service rotates the subscription, and tells
// the server what was shown and clicked.
//
// A push's data is one of:
// - classic JSON with any of: title, body, icon, badge, image, url, tag,
//   actions (each {action, title, icon?, url?}), data, appBadge (a number
//   for the app's badge; 0 clears it), clearAppBadgeOnClick, messageId and
//   eventToken (the server adds both), and app (the server adds it for an
//   app other than `default`). Plain text becomes the body.
// - a Declarative Web Push message (W3C Push API): {"web_push": 8030,
//   "notification": {title, navigate, body, icon, actions: [{action, title,
//   navigate}], …}, "app_badge": n, "mutable": bool}. Safari shows these
//   without this worker; Chromium and Firefox hand them to it, and it shows
//   them the same way: a click opens `navigate` (an action's own
//   `navigate`), `app_badge` sets the badge.
// A push without data still shows a notification: with userVisibleOnly
// every push must.
//
// The mutable hook: a site that builds its own worker around this one
// (`importScripts('/sw.js')`) may define
//   self.tocsinMutate = async ({ title, options, appBadge }, message) => ({ title, options, appBadge });
// For a declarative message with `"mutable": true` it is called before the
// notification is shown, and what it returns is shown instead (e.g. to
// decrypt an end-to-end encrypted body, or to fill in an unread count).
// Messages without `mutable` are shown as sent, as Safari does.

const DEFAULT_TITLE = 'New notification';

// The app this worker subscribes for (tocsin.js registers /sw.js?app=NAME
// for an app other than `default`).
const APP = new URL(self.location.href).searchParams.get('app');

/** An app's browser routes: /api, or /apps/NAME/api. */
function routes(app) {
  return app ? `/apps/${encodeURIComponent(app)}/api` : '/api';
}

function toBase64Url(buffer) {
  let s = '';
  for (const b of new Uint8Array(buffer)) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function parse(data) {
  if (!data) return {};
  try {
    const v = data.json();
    if (v && typeof v === 'object' && !Array.isArray(v)) return v;
    return { body: String(v) };
  } catch (_) {
    return { body: data.text() };
  }
}

// The server counts an event only with the eventToken the payload carried,
// in the app the payload names, and once per delivery: the worker names its
// subscription (endpoint and auth secret, the proof that it holds it).
async function report(type, messageId, eventToken, app, action) {
  if (!messageId) return;
  const body = { type, messageId, eventToken };
  if (action) body.action = String(action).slice(0, 64);
  try {
    const sub = await self.registration.pushManager.getSubscription();
    const json = sub && sub.toJSON();
    if (json && json.endpoint && json.keys && json.keys.auth) {
      body.endpoint = json.endpoint;
      body.keys = { auth: json.keys.auth };
    }
  } catch (_) { /* reported without it: counted once per address */ }
  return fetch(`${routes(app)}/events`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  }).catch(() => {});
}

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

/** Whether a push is a Declarative Web Push message. */
function isDeclarative(msg) {
  return msg.web_push === 8030 && msg.notification && typeof msg.notification === 'object';
}

/** The URL of each action that names one, by action name. */
function actionUrls(actions, key) {
  const urls = {};
  for (const a of actions || []) if (a && a.action && a[key]) urls[a.action] = a[key];
  return urls;
}

/** What to show for a push: { title, options, appBadge }. */
function toShow(msg) {
  const report = { messageId: msg.messageId, eventToken: msg.eventToken, app: msg.app, clearAppBadgeOnClick: msg.clearAppBadgeOnClick === true };
  if (isDeclarative(msg)) {
    const n = msg.notification;
    const badge = msg.app_badge !== undefined ? msg.app_badge : n.app_badge;
    const options = {
      body: n.body || '', lang: n.lang, dir: n.dir, tag: n.tag, icon: n.icon, image: n.image, badge: n.badge,
      vibrate: n.vibrate, timestamp: n.timestamp, silent: n.silent, requireInteraction: n.requireInteraction,
      renotify: n.renotify === true && !!n.tag,
      actions: Array.isArray(n.actions) ? n.actions.map((a) => ({ action: a.action, title: a.title, icon: a.icon })) : undefined,
      data: { ...report, url: n.navigate, actionUrls: actionUrls(n.actions, 'navigate'), data: n.data },
    };
    return { title: n.title || DEFAULT_TITLE, options, appBadge: badge === undefined ? undefined : Number(badge) };
  }
  const options = {
    body: msg.body || '',
    icon: msg.icon,
    badge: msg.badge,
    image: msg.image,
    tag: msg.tag,
    actions: Array.isArray(msg.actions) ? msg.actions : undefined,
    data: { ...report, url: msg.url || '/', actionUrls: actionUrls(msg.actions, 'url'), data: msg.data },
  };
  return { title: msg.title || DEFAULT_TITLE, options, appBadge: typeof msg.appBadge === 'number' ? msg.appBadge : undefined };
}

/** Sets the app's badge (0 clears it), where the browser has badges. */
function setBadge(n) {
  const nav = self.navigator;
  if (n === undefined || !nav) return Promise.resolve();
  const call = n > 0 ? nav.setAppBadge && nav.setAppBadge(n) : nav.clearAppBadge && nav.clearAppBadge();
  return Promise.resolve(call).catch(() => {});
}

async function showPush(msg) {
  let shown = toShow(msg);
  if (isDeclarative(msg) && msg.mutable === true && typeof self.tocsinMutate === 'function') {
    try {
      shown = (await self.tocsinMutate(shown, msg)) || shown;
    } catch (_) { /* a failing hook must not lose the notification */ }
  }
  await Promise.all([self.registration.showNotification(shown.title, shown.options), setBadge(shown.appBadge)]);
  await report('shown', msg.messageId, msg.eventToken, msg.app);
}

self.addEventListener('push', (event) => {
  event.waitUntil(showPush(parse(event.data)));
});

self.addEventListener('notificationclick', (event) => {
  const data = event.notification.data || {};
  event.notification.close();
  const url = (event.action && data.actionUrls && data.actionUrls[event.action]) || data.url || '/';
  const target = new URL(url, self.location.origin).href;
  event.waitUntil(
    Promise.all([
      report('clicked', data.messageId, data.eventToken, data.app, event.action),
      data.clearAppBadgeOnClick ? setBadge(0) : null,
      self.clients.matchAll({ type: 'window', includeUncontrolled: true }).then((clients) => {
        const open = clients.find((c) => c.url === target);
        if (open && 'focus' in open) return open.focus();
        return self.clients.openWindow ? self.clients.openWindow(target) : undefined;
      }),
    ]),
  );
});

self.addEventListener('pushsubscriptionchange', (event) => {
  event.waitUntil(
    (async () => {
      const old = event.oldSubscription;
      let sub = event.newSubscription;
      if (!sub) {
        let key = old && old.options && old.options.applicationServerKey;
        if (!key) {
          const res = await fetch(`${routes(APP)}/vapid-public-key`);
          const { publicKey } = await res.json();
          const b64 = (publicKey + '='.repeat((4 - (publicKey.length % 4)) % 4)).replace(/-/g, '+').replace(/_/g, '/');
          key = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        }
        sub = await self.registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
      }
      const body = sub.toJSON();
      const key = sub.options && sub.options.applicationServerKey;
      if (key) body.applicationServerKey = toBase64Url(key);
      if (old && old.endpoint) {
        // The server hands the old subscription's user and topics over only
        // to whoever proves it held it: its auth secret.
        body.oldEndpoint = old.endpoint;
        const oldJson = typeof old.toJSON === 'function' ? old.toJSON() : null;
        if (oldJson && oldJson.keys && oldJson.keys.auth) body.oldKeys = { auth: oldJson.keys.auth };
      }
      await fetch(`${routes(APP)}/subscription`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
      });
    })(),
  );
});
