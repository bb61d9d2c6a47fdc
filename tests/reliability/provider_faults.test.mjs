// Provider faults (issue 17, scenario 2): a local Resend capture that misbehaves on a schedule
// (429 with Retry-After, a 5xx storm, a 200 whose body is not JSON, a reset connection, an
// answer slower than the fetch limit, a refusal, an outage that outlasts every attempt), and a
// Postmark capture that answers too late. Each message ends delivered once or failed with its
// reason; Postmark, which has no idempotency keys, never gets a message twice.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startWorker } from '../integration/harness.mjs';
import { startCapture } from '../integration/capture.mjs';
import { start, requestsFor, eventually, sleep } from './lib.mjs';

const TIMEOUT_S = 2;
let w, cap;
before(async () => {
  ({ w, cap } = await start({ DELIVERY_MAX_ATTEMPTS: '4', PROVIDER_TIMEOUT_SECONDS: String(TIMEOUT_S) }));
});
after(async () => { await w?.stop(); await cap?.close(); });

const settled = (key, id) => eventually(async () => {
  const e = (await w.call('/get_email', { key, query: { id } })).body;
  return ['sent', 'failed'].includes(e.status) && e;
}, { ms: 60_000, every: 300 });

test('every fault ends delivered once or failed with its reason', async () => {
  const a = await w.sender('Faulty Provider Co', { mode: 'autonomous' });
  let stormUntil = 0;
  const seen = {};
  cap.on('/emails', (entry) => {
    const kind = entry.json?.subject?.split(' ')[0];
    const n = (seen[kind] = (seen[kind] ?? 0) + 1);
    const ok = { status: 200, body: { id: `re_${kind}_${n}` } };
    switch (kind) {
      case 'rate': return n <= 2 ? { status: 429, headers: { 'Retry-After': '1' }, body: { message: 'slow down' } } : ok;
      case 'storm': return Date.now() < stormUntil ? { status: 503, body: { message: 'storm' } } : ok;
      case 'malformed': return { status: 200, raw: '<html>not json</html>' };
      case 'reset': return n === 1 ? { reset: true } : ok;
      case 'slow': return n === 1 ? { ...ok, delayMs: (TIMEOUT_S + 2) * 1000 } : ok;
      case 'refused': return { status: 422, body: { message: 'The to field is invalid' } };
      case 'outage': return { status: 500, body: { message: 'down' } };
      default: return ok;
    }
  });
  stormUntil = Date.now() + 3000;
  const kinds = ['rate', 'storm', 'malformed', 'reset', 'slow', 'refused', 'outage'];
  const sent = {};
  for (const kind of kinds) {
    const r = await w.call('/send_email', { key: a.live, body: { from: a.from, to: 'ada@example.com', subject: `${kind} fault`, text: kind } });
    assert.equal(r.status, 202, r.text);
    sent[kind] = r.body.id;
  }
  const out = {};
  for (const kind of kinds) {
    out[kind] = await settled(a.live, sent[kind]);
    assert.ok(out[kind], `${kind}: never settled`);
  }
  const reqs = (k) => requestsFor(cap, sent[k]);
  const keys = (k) => new Set(reqs(k).map((r) => r.headers['idempotency-key']));
  // Delivered once: each ends sent, and every request carried the message's own idempotency key.
  for (const k of ['rate', 'storm', 'malformed', 'reset', 'slow']) {
    assert.equal(out[k].status, 'sent', `${k}: ${out[k].last_error}`);
    assert.deepEqual([...keys(k)], [sent[k]], `${k}: another idempotency key`);
  }
  assert.equal(reqs('rate').length, 3);
  const gaps = reqs('rate').slice(1).map((r, i) => r.at - reqs('rate')[i].at);
  assert.ok(gaps.every((g) => g >= 900), `Retry-After not honoured: ${gaps}`);
  assert.ok(reqs('storm').length >= 2, 'the storm was not retried');
  assert.equal(out.malformed.provider_message_id, '', 'a 200 without an id is sent with an empty provider id');
  assert.equal(reqs('reset').length, 2);
  assert.equal(reqs('slow').length, 2, 'the slow answer is retried under the same key (Resend drops the repeat)');
  // Failed with the reason.
  assert.equal(out.refused.status, 'failed');
  assert.match(out.refused.last_error, /resend answered 422: The to field is invalid/);
  assert.equal(reqs('refused').length, 1, 'a refusal is not retried');
  assert.equal(out.outage.status, 'failed');
  assert.match(out.outage.last_error, /gave up after 4 attempts/);
  assert.equal(reqs('outage').length, 4);
  console.log(`provider faults: requests per message ${kinds.map((k) => `${k} ${reqs(k).length}`).join(', ')}`);
});

test('Postmark (no idempotency keys): an answer later than the fetch limit fails the message instead of sending it twice', async () => {
  const pm = await startCapture();
  const pw = await startWorker({ vars: { EMAIL_PROVIDER: 'postmark', POSTMARK_BASE_URL: pm.url, POSTMARK_SERVER_TOKEN: 'pm_test', PROVIDER_TIMEOUT_SECONDS: String(TIMEOUT_S), DELIVERY_BACKOFF_SECONDS: '1' } });
  try {
    const a = await pw.sender('Postmark Co', { mode: 'autonomous' });
    pm.on('/email', (entry, n) => ({ status: 200, body: { ErrorCode: 0, MessageID: `pm_${n}` }, delayMs: entry.json?.Subject === 'slow' ? (TIMEOUT_S + 2) * 1000 : 0 }));
    const slow = await pw.call('/send_email', { key: a.live, body: { from: a.from, to: 'ada@example.com', subject: 'slow', text: 'x' } });
    const quick = await pw.call('/send_email', { key: a.live, body: { from: a.from, to: 'ada@example.com', subject: 'quick', text: 'x' } });
    const s = await eventually(async () => { const e = (await pw.call('/get_email', { key: a.live, query: { id: slow.body.id } })).body; return ['sent', 'failed'].includes(e.status) && e; }, { ms: 30_000 });
    assert.ok(s);
    assert.equal(s.status, 'failed');
    assert.match(s.last_error, /^outcome_unknown: postmark did not answer/);
    await sleep((TIMEOUT_S + 3) * 1000);
    const at = (id) => pm.requests.filter((r) => r.text.includes(id)).length;
    assert.equal(at(slow.body.id), 1, 'Postmark got the message twice');
    assert.ok(await eventually(async () => (await pw.call('/get_email', { key: a.live, query: { id: quick.body.id } })).body.status === 'sent'));
    assert.equal(at(quick.body.id), 1);
  } finally {
    await pw.stop();
    await pm.close();
  }
});
