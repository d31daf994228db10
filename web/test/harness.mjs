// Shared by the browser tests: start `tocsin serve` (and the dev push
// service), talk to their APIs, keep artifacts.

import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdtempSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const repo = resolve(here, '..', '..');
export const artifacts = join(repo, 'test-artifacts');
mkdirSync(artifacts, { recursive: true });

export const TOKEN = 'browser-test-token-0123456789abcdef';
/** The user signing secret of every test server. */
export const USER_SECRET = 'browser-test-user-signing-secret';

/** The key the test servers sign event tokens with. */
export const EVENT_KEY = 'browser-test-event-token-key';

/** A message's eventToken, as the server puts it in the payload: base64url HMAC-SHA256 of its id. */
export function eventToken(messageId) {
  return createHmac('sha256', EVENT_KEY).update(messageId).digest('base64url');
}

/** What a site's backend does: the hex HMAC-SHA256 of a user id under the secret. */
export function signUserId(userId) {
  return createHmac('sha256', USER_SECRET).update(userId).digest('hex');
}
const bin = process.env.TOCSIN_BIN || join(repo, 'target', 'debug', 'tocsin');

/** Spawns a command and resolves { proc, url } once it prints `listening on URL`. */
function start(args, env = {}) {
  const proc = spawn(bin, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolvePromise, reject) => {
    const lines = createInterface({ input: proc.stdout });
    const timer = setTimeout(() => reject(new Error(`${args[0]} did not start`)), 30000);
    lines.once('line', (line) => {
      clearTimeout(timer);
      const url = line.replace(/^listening on /, '').trim();
      resolvePromise({ proc, url, stop: () => proc.kill('SIGKILL') });
    });
    proc.once('exit', (code) => reject(new Error(`${args.join(' ')} exited ${code}`)));
  });
}

/** `tocsin serve` on a fresh SQLite file, endpoint policy `any`; `vapid` is a key pair to use. */
export async function startServer({ vapid, extra = [] } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'tocsin-web-'));
  const args = ['serve', '--listen', '127.0.0.1:0', '--database', `sqlite://${dir}/t.db`, '--endpoint-policy', 'any', '--retry-base-ms', '200'];
  if (vapid) args.push(`--vapid-private-key=${vapid.privateKey}`);
  args.push(...extra);
  const s = await start(args, {
    TOCSIN_ADMIN_TOKEN: TOKEN,
    TOCSIN_VAPID_SUBJECT: 'mailto:browser-tests@example.com',
    TOCSIN_USER_SIGNING_SECRET: USER_SECRET,
    TOCSIN_EVENT_TOKEN_KEY: EVENT_KEY,
  });
  // Chromium and Firefox treat http://localhost as a secure context.
  s.url = s.url.replace('127.0.0.1', 'localhost');
  s.db = `sqlite://${dir}/t.db`;
  return s;
}

/** `tocsin dev push-service`. */
export function startDevPush() {
  return start(['dev', 'push-service', '--listen', '127.0.0.1:0']);
}

export async function api(server, method, path, body) {
  const res = await fetch(`${server.url}${path}`, {
    method,
    headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

export async function eventually(what, fn, timeoutMs = 20000) {
  const started = Date.now();
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() - started > timeoutMs) throw new Error(`timed out waiting for ${what}${last ? `: ${last}` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
