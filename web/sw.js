// Tocsin service worker: shows each push as a notification, handles clicks,
// re-subscribes when the push service rotates the subscription, and tells
// the server what was shown and clicked.
//
// A push's data is JSON with any of: title, body, icon, badge, image, url,
// tag, actions, data, messageId and eventToken (the server adds both), and
// app (the server adds it for an app other than `default`). Plain text
// becomes the body. A push without data still shows a notification: with
// userVisibleOnly every push must.

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
// in the app the payload names.
function report(type, messageId, eventToken, app) {
  if (!messageId) return Promise.resolve();
  return fetch(`${routes(app)}/events`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ type, messageId, eventToken }),
  }).catch(() => {});
}

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

self.addEventListener('push', (event) => {
  const msg = parse(event.data);
  const title = msg.title || DEFAULT_TITLE;
  const options = {
    body: msg.body || '',
    icon: msg.icon,
    badge: msg.badge,
    image: msg.image,
    tag: msg.tag,
    actions: Array.isArray(msg.actions) ? msg.actions : undefined,
    data: { url: msg.url || '/', messageId: msg.messageId, eventToken: msg.eventToken, app: msg.app, data: msg.data },
  };
  event.waitUntil(
    self.registration.showNotification(title, options).then(() => report('shown', msg.messageId, msg.eventToken, msg.app)),
  );
});

self.addEventListener('notificationclick', (event) => {
  const data = event.notification.data || {};
  event.notification.close();
  const target = new URL(data.url || '/', self.location.origin).href;
  event.waitUntil(
    Promise.all([
      report('clicked', data.messageId, data.eventToken, data.app),
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
