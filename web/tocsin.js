// Tocsin browser library: feature checks, service worker registration,
// permission, subscription, and talking to the Tocsin server.
//
// An ES module (import { subscribe } from '/tocsin.js'); the server also
// serves /tocsin.global.js, the same code as a plain script that defines
// window.Tocsin.

/** Every failure has a `code`, stable for programs, and a message for people. */
export class TocsinError extends Error {
  constructor(code, message, cause) {
    super(message);
    this.name = 'TocsinError';
    this.code = code;
    if (cause) this.cause = cause;
  }
}

const isIOS = () =>
  /iPad|iPhone|iPod/.test(navigator.userAgent) ||
  (navigator.platform === 'MacIntel' && navigator.maxTouchPoints > 1);

const isStandalone = () =>
  (typeof matchMedia === 'function' && matchMedia('(display-mode: standalone)').matches) ||
  navigator.standalone === true;

/**
 * Can this browser receive Web Push here?
 * Returns { supported: true } or { supported: false, reason, message }, where
 * reason is 'insecure-context', 'ios-home-screen' (Safari on iOS and iPadOS
 * delivers Web Push only to a site added to the Home Screen),
 * 'no-service-worker', 'no-push-manager' or 'no-notifications'.
 */
export function isSupported() {
  if (typeof window !== 'undefined' && window.isSecureContext === false) {
    return { supported: false, reason: 'insecure-context', message: 'Push needs HTTPS (or localhost).' };
  }
  if (isIOS() && !isStandalone()) {
    return {
      supported: false,
      reason: 'ios-home-screen',
      message: 'On iPhone and iPad, add this site to the Home Screen (Share → Add to Home Screen), then open it from there.',
    };
  }
  if (!('serviceWorker' in navigator)) {
    return { supported: false, reason: 'no-service-worker', message: 'This browser has no service workers.' };
  }
  if (!('PushManager' in window)) {
    return { supported: false, reason: 'no-push-manager', message: 'This browser has no Push API.' };
  }
  if (!('Notification' in window)) {
    return { supported: false, reason: 'no-notifications', message: 'This browser cannot show notifications.' };
  }
  return { supported: true };
}

function requireSupport() {
  const s = isSupported();
  if (!s.supported) throw new TocsinError('unsupported', s.message);
}

/** Registers the service worker and resolves when it is active. */
export async function register(swUrl = '/sw.js') {
  requireSupport();
  await navigator.serviceWorker.register(swUrl);
  return navigator.serviceWorker.ready;
}

/**
 * Asks for permission to show notifications, with both the promise and the
 * old callback form of Notification.requestPermission. Resolves 'granted',
 * 'default' (dismissed) or 'denied'. Call it from a user gesture, never on load.
 */
export function requestPermission() {
  requireSupport();
  return new Promise((resolve, reject) => {
    let settled = false;
    const done = (p) => {
      if (!settled) {
        settled = true;
        resolve(p);
      }
    };
    try {
      const p = Notification.requestPermission(done);
      if (p && typeof p.then === 'function') p.then(done, reject);
    } catch (e) {
      reject(e);
    }
  });
}

/** The current permission: 'granted', 'default' or 'denied'. */
export function permission() {
  return typeof Notification === 'undefined' ? 'denied' : Notification.permission;
}

function base64UrlToBytes(s) {
  const pad = '='.repeat((4 - (s.length % 4)) % 4);
  const b64 = (s + pad).replace(/-/g, '+').replace(/_/g, '/');
  const raw = atob(b64);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

function sameKey(buffer, bytes) {
  if (!buffer) return false;
  const a = new Uint8Array(buffer);
  return a.length === bytes.length && a.every((v, i) => v === bytes[i]);
}

/** Where an app's browser routes are: `/api`, or `/apps/NAME/api` for another app than `default`. */
function routes(server, app) {
  return app ? `${server}/apps/${encodeURIComponent(app)}/api` : `${server}/api`;
}

/** The service worker's URL, naming the app (for pushsubscriptionchange). */
function workerUrl(swUrl, app) {
  if (!app) return swUrl;
  const u = new URL(swUrl, location.href);
  u.searchParams.set('app', app);
  return u.pathname + u.search;
}

async function serverKey(base) {
  let res;
  try {
    res = await fetch(`${base}/vapid-public-key`);
  } catch (e) {
    throw new TocsinError('network', 'Cannot reach the Tocsin server.', e);
  }
  if (!res.ok) throw new TocsinError('server-refused', `The server answered ${res.status} for its public key.`);
  const { publicKey } = await res.json();
  return { text: publicKey, bytes: base64UrlToBytes(publicKey) };
}

async function postSubscription(base, body) {
  let res;
  try {
    res = await fetch(`${base}/subscription`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
  } catch (e) {
    throw new TocsinError('network', 'Cannot reach the Tocsin server.', e);
  }
  let data = null;
  try {
    data = await res.json();
  } catch (_) {
    /* not JSON */
  }
  if (!res.ok || !(data && data.data && data.data.success)) {
    const msg = (data && data.error && data.error.message) || `status ${res.status}`;
    throw new TocsinError('server-refused', `The server did not save the subscription: ${msg}`);
  }
}

async function pushSubscribe(registration, key) {
  try {
    return await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
  } catch (e) {
    if (e && e.name === 'NotAllowedError') {
      throw new TocsinError('permission-denied', 'The browser refused the subscription (permission).', e);
    }
    throw new TocsinError('push-service-unreachable', `The browser could not reach its push service: ${(e && e.message) || e}`, e);
  }
}

/**
 * This browser's language (BCP 47) and time zone (IANA), as the server
 * stores them beside the subscription (segments, localized messages, local
 * times). A value the browser cannot tell is left out.
 */
function locale() {
  const out = {};
  if (typeof navigator !== 'undefined' && navigator.language) out.language = navigator.language;
  try {
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (zone) out.timeZone = zone;
  } catch (_) {
    /* no Intl */
  }
  return out;
}

/** How often sync() posts an unchanged subscription anyway (its lastSeenAt). */
const SEEN_EVERY_MS = 24 * 60 * 60 * 1000;

/** What sync() last sent for an app: { language, timeZone, at }, in localStorage. */
function lastSent(app) {
  try {
    return JSON.parse(localStorage.getItem(`tocsin:sent:${app || 'default'}`) || 'null');
  } catch (_) {
    return null;
  }
}

function remember(app, sent) {
  try {
    localStorage.setItem(`tocsin:sent:${app || 'default'}`, JSON.stringify({ ...sent, at: Date.now() }));
  } catch (_) {
    /* storage refused: sync() posts again next time */
  }
}

/**
 * Makes the browser's subscription one for the server's current key and
 * tells the server. When the key changed (the app rotated it), the old
 * subscription is replaced: the server moves its user and topics to the new
 * one, given the old one's auth secret as proof (oldEndpoint, oldKeys.auth).
 * With `onlyIfChanged`, a subscription that already has the current key is
 * left as it is, and not posted again.
 */
async function ensure(registration, base, fields, { onlyIfChanged = false } = {}) {
  const key = await serverKey(base);
  let subscription = await registration.pushManager.getSubscription();
  const current = subscription && subscription.options && subscription.options.applicationServerKey;
  if (onlyIfChanged && (!current || sameKey(current, key.bytes))) return subscription;
  return post(registration, base, key, subscription, fields);
}

/**
 * Posts the subscription with `fields`, first subscribing again when it was
 * made with another key than the server's current one. With
 * `keepUnknownKey`, a subscription whose key the browser does not tell is
 * posted as it is (sync and setTags must not replace it on a guess).
 */
async function post(registration, base, key, subscription, fields, { keepUnknownKey = false } = {}) {
  const current = subscription && subscription.options && subscription.options.applicationServerKey;
  let old = null;
  if (subscription && !(keepUnknownKey && !current) && !sameKey(current, key.bytes)) {
    old = subscription.toJSON();
    await subscription.unsubscribe();
    subscription = null;
  }
  if (!subscription) subscription = await pushSubscribe(registration, key.bytes);
  const body = subscription.toJSON();
  // The key it was made with: the server records it, so a rotation racing
  // this request cannot pair the subscription with the wrong key.
  body.applicationServerKey = key.text;
  if (old && old.endpoint && old.endpoint !== body.endpoint) {
    body.oldEndpoint = old.endpoint;
    if (old.keys && old.keys.auth) body.oldKeys = { auth: old.keys.auth };
  }
  Object.assign(body, fields);
  await postSubscription(base, body);
  return subscription;
}

/**
 * Subscribes this browser and registers the subscription with the server.
 * Reuses an existing subscription, unless the server's key has changed, in
 * which case it subscribes again and the server moves the old one's user and
 * topics over. Options: app (the app's name, for a server with several;
 * default `default`), userId with userSignature (the hex HMAC-SHA256 of
 * userId under the app's user signing secret, made by your site's backend:
 * the server refuses unsigned user ids), topics, tags (an object of keys to
 * strings, numbers or booleans: the server merges them into the stored ones,
 * and null removes a key), swUrl, server (the server's origin, default this
 * page's). The browser's language and time zone go with it. Resolves the
 * PushSubscription.
 */
export async function subscribe({ app, userId, userSignature, topics, tags, swUrl = '/sw.js', server = '' } = {}) {
  requireSupport();
  const registration = await register(workerUrl(swUrl, app));
  const state = await requestPermission();
  if (state === 'denied') {
    throw new TocsinError('permission-denied', 'Notifications are blocked for this site; allow them in the browser settings.');
  }
  if (state !== 'granted') {
    throw new TocsinError('permission-default', 'The permission request was dismissed.');
  }
  const fields = {};
  if (userId !== undefined) fields.userId = userId;
  if (userSignature !== undefined) fields.userSignature = userSignature;
  if (topics !== undefined) fields.topics = topics;
  if (tags !== undefined) fields.tags = tags;
  const here = locale();
  Object.assign(fields, here);
  const subscription = await ensure(registration, routes(server, app), fields);
  remember(app, here);
  return subscription;
}

/**
 * Call on every page load: when this browser is subscribed and the app's
 * key has changed since (a rotation), subscribes again with the new key and
 * the server moves the subscription over, user, topics and tags included.
 * It also tells the server the browser's language and time zone when they
 * changed, and at most once a day otherwise (the subscription's
 * lastSeenAt). Never asks for permission; does nothing when not subscribed. Options as subscribe's (app, swUrl, server). Resolves the
 * PushSubscription, or null.
 */
export async function sync({ app, swUrl = '/sw.js', server = '' } = {}) {
  if (!isSupported().supported || permission() !== 'granted') return null;
  const registration = await navigator.serviceWorker.getRegistration(workerUrl(swUrl, app));
  if (!registration || !(await registration.pushManager.getSubscription())) return null;
  const here = locale();
  const sent = lastSent(app);
  const stale =
    !sent ||
    sent.language !== here.language ||
    sent.timeZone !== here.timeZone ||
    !(Date.now() - sent.at < SEEN_EVERY_MS);
  const base = routes(server, app);
  if (!stale) return ensure(registration, base, here, { onlyIfChanged: true });
  // The language or time zone changed, or a day passed: post it again.
  const subscription = await registration.pushManager.getSubscription();
  const result = await post(registration, base, await serverKey(base), subscription, here, { keepUnknownKey: true });
  remember(app, here);
  return result;
}

/**
 * Changes this subscription's tags: each key of `tags` is set to its
 * value (a string, a number or a boolean), or removed when null; the others
 * stay. The server takes it as the subscription's holder proves itself,
 * with the subscription's auth secret. Options: app, swUrl, server.
 * Rejects with code 'not-subscribed' when there is no subscription, and
 * 'server-refused' when the server does not take it (an app may take tags
 * only from its backend: client-tags-disabled).
 */
export async function setTags(tags, { app, swUrl = '/sw.js', server = '' } = {}) {
  requireSupport();
  const registration = await navigator.serviceWorker.getRegistration(workerUrl(swUrl, app));
  const subscription = registration && (await registration.pushManager.getSubscription());
  if (!subscription) throw new TocsinError('not-subscribed', 'Subscribe first.');
  const base = routes(server, app);
  await post(registration, base, await serverKey(base), subscription, { tags, ...locale() }, { keepUnknownKey: true });
  return true;
}

/** Removes the subscription from the server and the browser. Options: app, swUrl, server. */
export async function unsubscribe({ app, swUrl = '/sw.js', server = '' } = {}) {
  requireSupport();
  const registration = await navigator.serviceWorker.getRegistration(workerUrl(swUrl, app));
  const subscription = registration && (await registration.pushManager.getSubscription());
  if (!subscription) return false;
  const json = subscription.toJSON();
  try {
    await fetch(`${routes(server, app)}/subscription`, {
      method: 'DELETE',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ endpoint: json.endpoint, keys: { auth: json.keys.auth } }),
    });
  } catch (e) {
    throw new TocsinError('network', 'Cannot reach the Tocsin server.', e);
  }
  return subscription.unsubscribe();
}

/** Asks the server to send a test notification to this browser's subscription. Options: app, swUrl, server. */
export async function sendTest({ app, swUrl = '/sw.js', server = '' } = {}) {
  const registration = await navigator.serviceWorker.getRegistration(workerUrl(swUrl, app));
  const subscription = registration && (await registration.pushManager.getSubscription());
  if (!subscription) throw new TocsinError('not-subscribed', 'Subscribe first.');
  const json = subscription.toJSON();
  const res = await fetch(`${routes(server, app)}/subscription/test`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ endpoint: json.endpoint, keys: { auth: json.keys.auth } }),
  });
  if (!res.ok) throw new TocsinError('server-refused', `The server answered ${res.status}.`);
  return res.json();
}

// --- exports (the line below is rewritten for /tocsin.global.js) ---
export default { isSupported, register, requestPermission, permission, subscribe, sync, setTags, unsubscribe, sendTest, TocsinError };
