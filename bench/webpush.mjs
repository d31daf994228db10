// The reference: Node's web-push sending one payload to every subscription
// in a JSON-lines file, 100 requests in flight (as people run it today).
// Usage: node webpush.mjs SUBS.jsonl PAYLOAD CONCURRENCY
// Prints {"sent","delivered","failed","seconds"} as JSON.

import { readFileSync } from 'node:fs';
import webpush from 'web-push';

const [file, payload, concurrencyArg] = process.argv.slice(2);
const subs = readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
const keys = webpush.generateVAPIDKeys();
webpush.setVapidDetails('mailto:bench@example.com', keys.publicKey, keys.privateKey);
const concurrency = Number(concurrencyArg || 100);

let next = 0;
let delivered = 0;
let failed = 0;
const started = process.hrtime.bigint();
async function worker() {
  while (next < subs.length) {
    const sub = subs[next++];
    try {
      const r = await webpush.sendNotification(sub, payload, { TTL: 60 });
      if (r.statusCode === 201) delivered++;
      else failed++;
    } catch (e) {
      failed++;
      if (failed === 1) console.error(String(e && (e.body || e.message || e)));
    }
  }
}
await Promise.all(Array.from({ length: concurrency }, worker));
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
console.log(JSON.stringify({ sent: subs.length, delivered, failed, seconds }));
