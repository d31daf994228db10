// Tocsin's operator dashboard: a token kept in sessionStorage (sent as
// Authorization: Bearer, no cookies, so no CSRF surface), an app switcher,
// and pages read from the same API anyone can call: /v1/stats,
// /v1/stats/daily, /v1/push-services, /v1/apps/{app}/vapid-keys.

import { $, el, fmt } from './dom.js';
import { abRequest, addVariant, showAbTest, toggle as toggleAb } from './ab.js';

const PAGES = ['overview', 'compose', 'messages', 'subscribers', 'segments', 'rules', 'push-services', 'keys'];
/** What fits one push message's plaintext (aes128gcm, RFC 8291), less what the server adds (messageId, eventToken). */
const PAYLOAD_MAX = 3993;
const SERVER_ADDS = 110;
const TOKEN_KEY = 'tocsin.token';
const APP_KEY = 'tocsin.app';

class Unauthorized extends Error {}

async function api(method, path, body) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (res.status === 401) throw new Unauthorized();
  const answer = res.status === 204 ? null : await res.json().catch(() => null);
  if (!res.ok) {
    const e = new Error((answer && answer.error && answer.error.message) || `status ${res.status}`);
    e.id = answer && answer.error && answer.error.id;
    e.status = res.status;
    throw e;
  }
  return answer;
}

/** The app's routes: /v1/… for default, /v1/apps/NAME/… for another. */
function appPath(rest) {
  const app = sessionStorage.getItem(APP_KEY) || 'default';
  return app === 'default' ? `/v1${rest}` : `/v1/apps/${encodeURIComponent(app)}${rest}`;
}

/** Gained (up) and lost (down) per day as SVG bars, written by hand: no library for two bar series. */
function chart(items) {
  const w = 600, h = 160, mid = h / 2, pad = 2;
  const max = Math.max(1, ...items.map((d) => Math.max(d.subscribed, d.unsubscribed)));
  const bw = w / items.length;
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', `0 0 ${w} ${h}`);
  const bar = (x, y, height, cls, title) => {
    const r = document.createElementNS(ns, 'rect');
    r.setAttribute('x', x + pad / 2);
    r.setAttribute('y', y);
    r.setAttribute('width', Math.max(bw - pad, 1));
    r.setAttribute('height', Math.max(height, 0));
    r.setAttribute('fill', `var(--${cls})`);
    const t = document.createElementNS(ns, 'title');
    t.textContent = title;
    r.appendChild(t);
    svg.appendChild(r);
  };
  items.forEach((d, i) => {
    const up = (d.subscribed / max) * (mid - 4);
    const down = (d.unsubscribed / max) * (mid - 4);
    bar(i * bw, mid - up, up, 'gained', `${d.date}: +${d.subscribed}`);
    bar(i * bw, mid, down, 'lost', `${d.date}: −${d.unsubscribed}`);
  });
  const axis = document.createElementNS(ns, 'line');
  Object.entries({ x1: 0, x2: w, y1: mid, y2: mid, stroke: 'var(--line)' }).forEach(([k, v]) => axis.setAttribute(k, v));
  svg.appendChild(axis);
  return svg;
}

async function overview() {
  const [stats, daily] = await Promise.all([api('GET', appPath('/stats')), api('GET', appPath('/stats/daily?days=30'))]);
  document.querySelectorAll('[data-stat]').forEach((e) => { e.textContent = fmt(stats[e.dataset.stat]); });
  const by = $('by-service');
  by.replaceChildren();
  const names = { fcm: 'FCM', mozilla: 'Mozilla', apple: 'Apple', wns: 'WNS', other: 'Other' };
  for (const [k, label] of Object.entries(names)) {
    const d = el('div');
    d.append(el('dt', label));
    const dd = el('dd', fmt(stats.subscriptionsByPushService[k]));
    dd.dataset.service = k;
    d.append(dd);
    by.append(d);
  }
  $('chart').replaceChildren(chart(daily.items));
  for (const k of ['sent', 'delivered', 'shown', 'clicked']) {
    document.querySelector(`[data-month="${k}"]`).textContent = fmt(daily.items.reduce((s, d) => s + d[k], 0));
  }
}

async function pushServices() {
  const { items } = await api('GET', '/v1/push-services');
  const rows = $('ps-rows');
  rows.replaceChildren();
  if (!items.length) {
    const tr = el('tr');
    const td = el('td', 'Nothing sent since this node started.');
    td.colSpan = 9;
    tr.append(td);
    rows.append(tr);
  }
  for (const s of items) {
    const tr = el('tr');
    const ms = (v) => (v === null ? '–' : `${v} ms`);
    [s.origin, fmt(s.requests), ms(s.p50Ms), ms(s.p99Ms), fmt(s.errors.rateLimited), fmt(s.errors.serverErrors),
      fmt(s.errors.networkErrors), fmt(s.errors.rejected), s.backoffSeconds ? `${Math.ceil(s.backoffSeconds)} s` : 'none']
      .forEach((v) => tr.append(el('td', v)));
    rows.append(tr);
  }
}

async function keys() {
  const { items } = await api('GET', appPath('/vapid-keys'));
  const rows = $('key-rows');
  rows.replaceChildren();
  for (const k of items) {
    const tr = el('tr');
    tr.append(el('td', String(k.id)), el('td', k.publicKey, 'key'), el('td', k.current ? 'yes' : 'no'),
      el('td', fmt(k.subscriptions)), el('td', new Date(k.createdAt).toLocaleString()));
    rows.append(tr);
  }
}

/**
 * Title and body by language: `default` is the text for defaultLanguage;
 * each added language has its own. The tab shown edits one of them.
 */
const texts = { default: { title: '', body: '' } };
let tab = 'default';

function keepTab() {
  texts[tab] = { title: $('c-title').value, body: $('c-body').value };
}

function showTab(name) {
  keepTab();
  tab = name;
  $('c-title').value = texts[name].title;
  $('c-body').value = texts[name].body;
  $('c-title').required = name === 'default';
  document.querySelectorAll('#c-langs [role="tab"]').forEach((b) => b.setAttribute('aria-selected', String(b.dataset.lang === name)));
  $('c-text').setAttribute('aria-labelledby', `c-lang-${name}`);
  previewCompose();
}

function addLanguage(code) {
  if (!code || texts[code]) return;
  texts[code] = { title: '', body: '' };
  const b = el('button', code);
  b.type = 'button';
  b.setAttribute('role', 'tab');
  b.id = `c-lang-${code}`;
  b.dataset.lang = code;
  b.setAttribute('aria-controls', 'c-text');
  b.addEventListener('click', () => showTab(code));
  $('c-langs').append(b);
  showTab(code);
}

function payload() {
  keepTab();
  const others = Object.keys(texts).filter((k) => k !== 'default');
  const byLanguage = (key) => {
    if (!others.length) return texts.default[key];
    const map = { [$('c-default-lang').value.trim() || 'en']: texts.default[key] };
    for (const k of others) map[k] = texts[k][key];
    return map;
  };
  const p = { title: byLanguage('title') };
  if (texts.default.body || others.some((k) => texts[k].body)) p.body = byLanguage('body');
  for (const [id, key] of [['c-url', 'url'], ['c-icon', 'icon'], ['c-image', 'image'], ['c-tag', 'tag']]) {
    if ($(id).value) p[key] = $(id).value;
  }
  const extra = others.length ? { defaultLanguage: $('c-default-lang').value.trim() || 'en' } : {};
  if ($('c-format').value === 'classic') return { ...p, ...extra };
  // A Declarative Web Push message: the link is what a click opens.
  const { url, ...notification } = p;
  return { web_push: 8030, ...extra, notification: { ...notification, navigate: url || '' } };
}

/** Calls `fn` once typing has paused. */
function debounce(fn, ms = 300) {
  let t;
  return (...a) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...a), ms);
  };
}

/** The preview as the chosen sample subscriber gets it: rendered by the server, as the engine renders. */
const renderPreview = debounce(async () => {
  const body = { payload: payload(), format: $('c-format').value };
  if ($('c-sample').value) body.subscriptionId = Number($('c-sample').value);
  try {
    const out = await api('POST', appPath('/messages/preview'), body);
    const shown = (out.payload && (out.payload.notification || out.payload)) || {};
    $('p-title').textContent = shown.title || 'Title';
    $('p-body').textContent = shown.body || '';
    $('c-bytes').textContent = `${PAYLOAD_MAX - out.bytes} bytes left of ${PAYLOAD_MAX} (aes128gcm) for this subscriber`;
  } catch (e) {
    $('c-bytes').textContent = `Not sendable yet: ${e.message}`;
  }
});

function previewCompose() {
  const p = payload();
  const shown = p.notification || p;
  const text = (v) => (typeof v === 'object' && v ? v[Object.keys(v)[0]] : v);
  $('p-title').textContent = text(shown.title) || 'Title';
  $('p-body').textContent = text(shown.body) || '';
  $('p-icon').src = shown.icon || '/icon-192.png';
  $('p-origin').textContent = location.host;
  const used = new TextEncoder().encode(JSON.stringify(p)).length + SERVER_ADDS;
  $('c-bytes').textContent = `${PAYLOAD_MAX - used} bytes left of ${PAYLOAD_MAX} (aes128gcm), counting what the server adds`;
  const when = $('c-when').value;
  $('c-utc').textContent = !when ? 'Sent now.'
    : $('c-local').checked ? `Sent at ${when.replace('T', ' ')} in each subscriber's time zone`
      : `Sent as ${new Date(when).toISOString()} (UTC)`;
  renderPreview();
}

/** The audience the compose form names, as a message's target. */
function target() {
  const audience = document.querySelector('input[name="audience"]:checked').value;
  const text = $('c-audience').value;
  const words = text.split(',').map((w) => w.trim()).filter(Boolean);
  if (audience === 'topic') return { topic: words[0] || '' };
  if (audience === 'users') return { userIds: words };
  if (audience === 'segment') return { segment: $('c-segment').value };
  if (audience === 'where') return { where: text };
  return { all: true };
}

/** Shows in `out` how many subscribers `body` ({where} or {segment}) matches now, or why it cannot be counted. */
async function showCount(out, body) {
  if (!body.where && !body.segment) {
    out.textContent = '';
    return;
  }
  try {
    const { count } = await api('POST', appPath('/audience/count'), body);
    out.textContent = `${fmt(count)} subscribers match now.`;
  } catch (e) {
    out.textContent = e.message;
  }
}

/** The live count of the compose form's segment or expression. */
const countAudience = debounce(() => showCount($('c-count'), target()));

async function compose() {
  const [segments, subs] = await Promise.all([
    api('GET', appPath('/segments')).catch(() => ({ items: [] })),
    api('GET', appPath('/subscriptions?limit=20')).catch(() => ({ items: [] })),
  ]);
  $('c-segment').replaceChildren(...segments.items.map((s) => el('option', s.name)));
  const sample = $('c-sample');
  const chosen = sample.value;
  sample.replaceChildren(sample.options[0]);
  for (const s of subs.items) {
    const o = el('option', `${s.id}: ${s.language || 'no language'}${s.userId ? `, ${s.userId}` : ''}`);
    o.value = String(s.id);
    sample.append(o);
  }
  sample.value = [...sample.options].some((o) => o.value === chosen) ? chosen : '';
  previewCompose();
  countAudience();
}

async function segments() {
  const { items } = await api('GET', appPath('/segments'));
  const rows = $('seg-rows');
  rows.replaceChildren();
  for (const s of items) {
    const tr = el('tr');
    const actions = el('td');
    const del = el('button', 'Delete');
    del.type = 'button';
    del.disabled = !MAY.send.includes(scope);
    del.addEventListener('click', async () => {
      try {
        await api('DELETE', appPath(`/segments/${encodeURIComponent(s.name)}`));
        $('seg-status').textContent = `Segment ${s.name} deleted.`;
        await segments();
      } catch (e) {
        $('seg-status').textContent = `Not deleted: ${e.message}`;
      }
    });
    actions.append(del);
    tr.append(el('td', s.name), el('td', s.where, 'key'), el('td', fmt(s.count)), actions);
    rows.append(tr);
  }
  if (!items.length) {
    const tr = el('tr');
    const td = el('td', 'No segment yet.');
    td.colSpan = 4;
    tr.append(td);
    rows.append(tr);
  }
}

const countSegment = debounce(() => showCount($('seg-count'), { where: $('seg-where').value }));

/** One row of the caps table: at most `max` per `per`, of messages tagged `tag` (empty: all). */
function capRow(cap = { max: 3, per: '1d' }) {
  const n = $('r-caps').children.length + 1;
  const tr = el('tr');
  const input = (value, label, attrs) => {
    const i = el('input');
    Object.assign(i, { value: value ?? '', ...attrs });
    i.setAttribute('aria-label', `${label} (cap ${n})`);
    const td = el('td');
    td.append(i);
    return td;
  };
  const remove = el('button', 'Remove');
  remove.type = 'button';
  remove.addEventListener('click', () => tr.remove());
  const actions = el('td');
  actions.append(remove);
  tr.append(input(cap.max, 'At most', { type: 'number', min: 1, max: 100, size: 4 }),
    input(cap.per, 'Per (1m to 30d)', { size: 5, placeholder: '1d' }), input(cap.tag, 'Of messages tagged', { size: 8 }), actions);
  $('r-caps').append(tr);
}

async function rules() {
  const r = await api('GET', appPath('/rules'));
  $('r-zone').value = r.defaultTimeZone || '';
  $('r-quiet').checked = !!r.quietHours;
  if (r.quietHours) {
    $('r-quiet-start').value = r.quietHours.start;
    $('r-quiet-end').value = r.quietHours.end;
  }
  $('r-caps').replaceChildren();
  for (const cap of r.frequencyCaps || []) capRow(cap);
  $('r-rate').value = String(r.ratePerMinute || 0);
  $('r-save').disabled = scope !== 'admin';
  $('r-add-cap').disabled = scope !== 'admin';
}

/** The rules form as the API takes it. */
function rulesBody() {
  const body = {};
  if ($('r-zone').value.trim()) body.defaultTimeZone = $('r-zone').value.trim();
  if ($('r-quiet').checked) body.quietHours = { start: $('r-quiet-start').value, end: $('r-quiet-end').value };
  const caps = [...$('r-caps').children].map((tr) => {
    const [max, per, tag] = [...tr.querySelectorAll('input')].map((i) => i.value.trim());
    return tag ? { max: Number(max), per, tag } : { max: Number(max), per };
  });
  if (caps.length) body.frequencyCaps = caps;
  if (Number($('r-rate').value) > 0) body.ratePerMinute = Number($('r-rate').value);
  return body;
}

/** Warnings of the last message sent from Compose, shown on its page. */
let lastWarnings = { id: null, warnings: [] };

/** A message at a local time: its waves of time zones and how far each is. */
function zones(m) {
  const lt = m.localTime;
  $('m-zones').hidden = !lt;
  if (!lt) return;
  const next = lt.nextZoneAt ? ` Next: ${new Date(lt.nextZoneAt).toLocaleString()}.` : '';
  $('m-zone-summary').textContent = `At ${lt.sendAt} local time: ${fmt(lt.sentZones)} waves sent, ${fmt(lt.pendingZones)} pending.${next}`;
  $('m-zone-rows').replaceChildren(...lt.zones.filter((w) => w.state !== 'empty').map((w) => {
    const tr = el('tr');
    const names = w.zones.slice(0, 3).join(', ') + (w.zones.length > 3 ? ` and ${w.zones.length - 3} more` : '');
    tr.append(el('td', new Date(w.at).toLocaleString()), el('td', w.state), el('td', fmt(w.delivered)),
      el('td', names + (w.withoutZone ? ' (and subscribers without a zone)' : '')));
    return tr;
  }));
}

let polling = null;

/**
 * The app's event stream (GET /v1/events/stream), read with fetch so that
 * it carries the token (EventSource cannot send one). A message's page
 * follows it: an event about the message (done, shown, clicked, a failure)
 * refreshes the page, so counts move without polling once it is sent.
 */
const live = { abort: null, path: null, refresh: null };

function stopLive() {
  if (live.abort) live.abort.abort();
  live.abort = null;
  live.path = null;
  delete document.body.dataset.live;
}

/** Whether a stream event concerns message `id`. */
function about(event, id) {
  const d = event.data || {};
  return d.messageId === id || (Array.isArray(d.items) && d.items.some((i) => i.messageId === id));
}

async function follow(id) {
  live.refresh = (event) => {
    if (location.hash === `#messages/${id}` && about(event, id)) {
      clearTimeout(live.timer);
      live.timer = setTimeout(() => messages().catch(() => {}), 200);
    }
  };
  const path = appPath('/events/stream');
  if (live.path === path) return;
  stopLive();
  live.path = path;
  live.abort = new AbortController();
  const { signal } = live.abort;
  try {
    const res = await fetch(path, { headers: { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY)}` }, signal });
    if (!res.ok || !res.body) return;
    document.body.dataset.live = 'on';
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n');
        if (data) {
          try {
            live.refresh(JSON.parse(data));
          } catch (_) { /* a malformed event is skipped */ }
        }
      }
    }
  } catch (_) {
    /* aborted, or the connection dropped: the page still polls while sending */
  } finally {
    if (live.path === path) stopLive();
  }
}

async function messages() {
  clearTimeout(polling);
  const id = location.hash.split('/')[1];
  $('message-detail').hidden = !id;
  $('message-list').hidden = !!id;
  if (!id) {
    const { items } = await api('GET', appPath('/messages?limit=50'));
    const rows = $('message-rows');
    rows.replaceChildren();
    for (const m of items) {
      const tr = el('tr');
      const link = el('a', m.id.slice(0, 12));
      link.href = `#messages/${m.id}`;
      const td = el('td');
      td.append(link);
      tr.append(td, el('td', new Date(m.createdAt).toLocaleString()), el('td', m.state), el('td', m.format || 'classic'), el('td', fmt(m.counts.targeted)),
        el('td', fmt(m.counts.delivered)));
      rows.append(tr);
    }
    return;
  }
  // The state shown is this message's only once it is read (not the last one's).
  if (document.body.dataset.messageId !== id) delete document.body.dataset.messageState;
  document.body.dataset.messageId = id;
  const m = await api('GET', appPath(`/messages/${encodeURIComponent(id)}`));
  follow(id);
  const c = m.counts;
  $('m-title').textContent = `Message ${m.id}`;
  $('m-state').textContent = m.state;
  $('m-format').textContent = m.format || 'classic';
  const settled = c.delivered + c.failed + c.gone + c.expired + (c.capped || 0);
  $('m-progress').max = Math.max(c.targeted, 1);
  $('m-progress').value = settled;
  $('m-progress-text').textContent = `${fmt(settled)} of ${fmt(c.targeted)}`;
  const rate = (n, of) => (of ? ` (${Math.round((100 * n) / of)} %)` : '');
  document.querySelector('[data-funnel="targeted"]').textContent = fmt(c.targeted);
  document.querySelector('[data-funnel="delivered"]').textContent = fmt(c.delivered) + rate(c.delivered, c.targeted);
  document.querySelector('[data-funnel="shown"]').textContent = fmt(c.shown) + rate(c.shown, c.delivered);
  document.querySelector('[data-funnel="clicked"]').textContent = fmt(c.clicked) + rate(c.clicked, c.shown);
  const examples = m.failureExamples || {};
  $('m-failures').replaceChildren(...Object.entries(m.failedByReason || {}).map(([r, n]) => {
    const li = el('li', `${r}: ${fmt(n)}`);
    if (examples[r]) li.append(el('br'), el('small', `for example ${examples[r]}`));
    return li;
  }));
  $('m-held').textContent = fmt(c.held || 0);
  $('m-capped').textContent = fmt(c.capped || 0);
  const asks = [m.ignoreQuietHours && 'ignores quiet hours', m.frequencyCap === false && 'bypasses caps',
    m.ratePerMinute && `${fmt(m.ratePerMinute)} a minute`, m.tags && m.tags.length && `tags ${m.tags.join(', ')}`].filter(Boolean);
  $('m-rules').textContent = asks.length ? `(${asks.join('; ')})` : '';
  $('m-warnings').textContent = lastWarnings.id === m.id ? lastWarnings.warnings.join(' ') : '';
  zones(m);
  showAbTest(m);
  $('m-cancel').hidden = !['scheduled', 'queued', 'sending'].includes(m.state);
  document.body.dataset.messageState = m.state;
  if (['queued', 'sending'].includes(m.state)) polling = setTimeout(() => location.hash.startsWith('#messages/') && messages(), 1000);
}

let nextCursor = null;

function age(createdAt) {
  const days = Math.floor((Date.now() - Date.parse(createdAt)) / 86_400_000);
  return days < 1 ? 'today' : `${days} d`;
}

async function subscribers(more = false) {
  const q = $('s-q').value.trim();
  const params = new URLSearchParams({ limit: '50' });
  if (q) params.set($('s-by').value, q);
  if (more && nextCursor) params.set('cursor', nextCursor);
  const { items, nextCursor: next } = await api('GET', appPath(`/subscriptions?${params}`));
  nextCursor = next;
  $('s-more').hidden = !next;
  const rows = $('sub-rows');
  if (!more) rows.replaceChildren();
  for (const s of items) {
    const tr = el('tr');
    tr.dataset.id = s.id;
    const actions = el('td');
    const test = el('button', 'Send a test');
    test.type = 'button';
    test.disabled = !MAY.send.includes(scope);
    test.addEventListener('click', async () => {
      try {
        const m = await api('POST', appPath('/messages'), {
          target: { subscriptionIds: [s.id] },
          payload: { title: 'Test notification', body: 'Sent from the Tocsin dashboard.' },
          urgency: 'high',
        });
        $('s-status').textContent = `Test sent to ${s.id} (message ${m.id}).`;
      } catch (e) {
        $('s-status').textContent = e.status === 403 ? 'This token may not send.' : `Not sent: ${e.message}`;
      }
    });
    const del = el('button', 'Delete');
    del.type = 'button';
    del.disabled = !MAY.delete.includes(scope);
    del.addEventListener('click', async () => {
      try {
        await api('DELETE', appPath(`/subscriptions/${s.id}`));
        tr.remove();
        $('s-status').textContent = `Subscription ${s.id} deleted.`;
      } catch (e) {
        $('s-status').textContent = e.status === 403 ? 'This token may not delete (admin only).' : `Not deleted: ${e.message}`;
      }
    });
    actions.append(test, del);
    const tags = Object.entries(s.tags || {}).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(', ');
    tr.append(el('td', String(s.id)), el('td', s.pushService), el('td', s.userId || '–'), el('td', s.topics.join(', ') || '–'),
      el('td', s.language || '–'), el('td', s.timeZone || '–'), el('td', tags || '–', 'key'),
      el('td', age(s.createdAt)), el('td', String(s.vapidKeyId)), actions);
    rows.append(tr);
  }
  if (!rows.children.length) {
    const tr = el('tr');
    const td = el('td', 'No subscriber matches.');
    td.colSpan = 10;
    tr.append(td);
    rows.append(tr);
  }
}

const RENDER = { overview, compose, messages, subscribers: () => subscribers(), segments, rules, 'push-services': pushServices, keys };

async function show() {
  // Signed out, a change of the hash shows nothing (the sign-in form stays).
  if (!sessionStorage.getItem(TOKEN_KEY)) return;
  const name = location.hash.slice(1).split('/')[0];
  const page = PAGES.includes(name) ? name : 'overview';
  for (const p of PAGES) $(p).hidden = p !== page;
  document.querySelectorAll('nav a').forEach((a) => {
    if (a.getAttribute('href') === `#${page}`) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  });
  $('error').textContent = '';
  if (!location.hash.startsWith('#messages/')) {
    stopLive();
    // No message is shown: nor is any message's state.
    delete document.body.dataset.messageState;
    delete document.body.dataset.messageId;
  }
  try {
    await RENDER[page]();
  } catch (e) {
    if (e instanceof Unauthorized) return signOut('The token is no longer accepted: sign in again.');
    $('error').textContent = e.status === 403 ? `This token may not see this page (${e.id}).` : `Could not load: ${e.message}`;
  }
  document.body.dataset.page = page;
}

function signOut(message = '') {
  stopLive();
  sessionStorage.removeItem(TOKEN_KEY);
  $('session').hidden = true;
  $('nav').hidden = true;
  for (const p of PAGES) $(p).hidden = true;
  $('signin').hidden = false;
  $('signin-error').textContent = message;
  delete document.body.dataset.page;
  delete document.body.dataset.scope;
}

/** What each scope may do (the API refuses the rest with 403; the buttons say so first). */
const MAY = {
  send: ['send', 'admin'],
  delete: ['admin'],
  rotate: ['admin'],
};
let scope = 'admin';

/** Greys out what the token's scope does not allow, and says why. */
function applyScope() {
  const rule = { 'compose-send': 'send', 'm-cancel': 'send', rotate: 'rotate', 'seg-create': 'send' };
  for (const [id, action] of Object.entries(rule)) {
    const b = $(id);
    b.disabled = !MAY[action].includes(scope);
    b.title = b.disabled ? `A ${scope} token may not do this` : '';
  }
  document.body.dataset.scope = scope;
}

async function start() {
  let apps;
  try {
    const me = await api('GET', '/v1/token');
    scope = me.scope;
    if (me.app) {
      apps = [{ app: me.app }];
    } else {
      // A send token may not list apps: it works in default, and any app by URL.
      apps = await api('GET', '/v1/apps').then((r) => r.items, () => [{ app: 'default' }]);
    }
  } catch (e) {
    return signOut(e instanceof Unauthorized ? 'That token was not accepted.' : `The server refused: ${e.message}`);
  }
  applyScope();
  const select = $('app');
  select.replaceChildren(...apps.map((a) => el('option', a.app)));
  const chosen = sessionStorage.getItem(APP_KEY);
  select.value = apps.some((a) => a.app === chosen) ? chosen : apps[0].app;
  sessionStorage.setItem(APP_KEY, select.value);
  $('session').querySelector('label').hidden = apps.length < 2;
  select.hidden = apps.length < 2;
  $('signin').hidden = true;
  $('session').hidden = false;
  $('nav').hidden = false;
  await show();
}

$('signin').addEventListener('submit', (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $('token').value.trim());
  $('token').value = '';
  start();
});
$('signout').addEventListener('click', () => signOut());
$('app').addEventListener('change', () => {
  sessionStorage.setItem(APP_KEY, $('app').value);
  show();
});
$('rotate').addEventListener('click', async () => {
  try {
    const k = await api('POST', appPath('/vapid-keys'));
    $('keys-status').textContent = `Key ${k.id} is current; browsers move to it on their next page load.`;
    await keys();
  } catch (e) {
    $('keys-status').textContent = e.status === 403 ? 'This token may not rotate keys (admin only).' : `Could not rotate: ${e.message}`;
  }
});
for (const id of ['c-title', 'c-body', 'c-url', 'c-icon', 'c-image', 'c-tag', 'c-when', 'c-local', 'c-format', 'c-default-lang', 'c-sample']) {
  $(id).addEventListener('input', previewCompose);
}
$('c-lang-default').dataset.lang = 'default';
$('c-lang-default').addEventListener('click', () => showTab('default'));
$('c-add-lang').addEventListener('click', () => {
  addLanguage($('c-new-lang').value.trim());
  $('c-new-lang').value = '';
});
for (const e of [...document.querySelectorAll('input[name="audience"]'), $('c-audience'), $('c-segment')]) {
  e.addEventListener('input', countAudience);
  e.addEventListener('change', countAudience);
}
$('seg-where').addEventListener('input', countSegment);
$('seg-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  try {
    const s = await api('POST', appPath('/segments'), { name: $('seg-name').value.trim(), where: $('seg-where').value });
    $('seg-status').textContent = `Segment ${s.name} created: ${fmt(s.count)} subscribers now.`;
    $('seg-name').value = '';
    $('seg-where').value = '';
    $('seg-count').textContent = '';
    await segments();
  } catch (e) {
    $('seg-status').textContent = e.status === 403 ? 'This token may not create segments (send or admin only).' : `Not created: ${e.message}`;
  }
});
$('compose-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const body = { payload: payload(), target: target(), ttl: Number($('c-ttl').value), format: $('c-format').value };
  $('c-status').textContent = '';
  if ($('c-urgency').value) body.urgency = $('c-urgency').value;
  if ($('c-local').checked && $('c-when').value) {
    // A wall-clock time, without a zone: each subscriber's own.
    body.sendAt = $('c-when').value;
    body.inLocalTime = true;
    if ($('c-skip-passed').checked) body.skipPassedZones = true;
  } else if ($('c-when').value) {
    body.sendAt = new Date($('c-when').value).toISOString();
  }
  if ($('c-ignore-quiet').checked) body.ignoreQuietHours = true;
  if ($('c-bypass-caps').checked) body.frequencyCap = false;
  const tags = $('c-tags').value.split(',').map((t) => t.trim()).filter(Boolean);
  if (tags.length) body.tags = tags;
  if ($('c-rate').value !== '') body.ratePerMinute = Number($('c-rate').value);
  const test = abRequest(body.payload);
  if (test) {
    delete body.payload;
    Object.assign(body, test);
  }
  try {
    const m = await api('POST', appPath('/messages'), body);
    lastWarnings = { id: m.id, warnings: m.warnings || [] };
    location.hash = `#messages/${m.id}`;
  } catch (e) {
    $('c-status').textContent = e.status === 403 ? 'This token may not send (send or admin only).' : `Not sent: ${e.message}`;
  }
});
$('m-cancel').addEventListener('click', async () => {
  const id = location.hash.split('/')[1];
  try {
    await api('DELETE', appPath(`/messages/${encodeURIComponent(id)}`));
  } catch (e) {
    $('error').textContent = `Could not cancel: ${e.message}`;
  }
  await messages();
});
$('subs-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  $('s-status').textContent = '';
  subscribers().catch((e) => { $('s-status').textContent = `Could not search: ${e.message}`; });
});
$('s-more').addEventListener('click', () => subscribers(true));
$('r-add-cap').addEventListener('click', () => capRow());
$('c-ab-on').addEventListener('change', toggleAb);
$('c-add-variant').addEventListener('click', addVariant);
$('rules-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  try {
    await api('PUT', appPath('/rules'), rulesBody());
    $('r-status').textContent = 'Saved: they apply from the next page sent.';
    await rules();
  } catch (e) {
    $('r-status').textContent = e.status === 403 ? 'This token may not change the rules (admin only).' : `Not saved: ${e.message}`;
  }
});
window.addEventListener('hashchange', show);

if (sessionStorage.getItem(TOKEN_KEY)) start();
else signOut();
document.body.dataset.ready = 'true';
