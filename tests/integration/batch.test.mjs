// send_batch (issue 16) against the real worker, live mail going to a local Resend capture:
// strict and permissive batches, the batch's Idempotency-Key and the items' own keys (shared
// with send_email), oversight on each item, attachments, bad input, and 500 items accepted and
// each delivered once (the time to accept them is printed).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { startWorker, eventually } from './harness.mjs';
import { startCapture } from './capture.mjs';

let w, cap, a;
before(async () => {
  cap = await startCapture();
  w = await startWorker({ vars: { EMAIL_PROVIDER: 'resend', RESEND_BASE_URL: cap.url, RESEND_API_KEY: 're_test_secret', RATE_LIMIT_PER_MINUTE: '0', ACCOUNT_RATE_LIMIT_PER_MINUTE: '0' } });
  a = await w.sender('Batch Co', { mode: 'autonomous' });
});
after(async () => { await w?.stop(); await cap?.close(); });

const batch = (body, headers = {}, key = a.live) => w.call('/send_batch', { key, body, headers });
const item = (to, extra = {}) => ({ from: a.from, to, subject: `Hello ${to}`, text: `Hi ${to}`, ...extra });
const atProvider = (id) => cap.requests.filter((r) => r.json?.headers?.['X-MultiMail-Message-Id'] === id).length;
const stored = async (account = a) => (await w.sql(`SELECT count(*) AS n FROM messages WHERE account_id = '${account.account.id}' AND kind = 'message'`))[0].n;

test('strict: one bad item refuses the batch and stores nothing; permissive: the rest are sent and the bad ones named by index', async () => {
  const b = await w.sender('Strict Co', { mode: 'autonomous' });
  const items = [
    { from: b.from, to: 'one@example.com', subject: 's', text: 'x' },
    { from: b.from, to: 'two@example.com', subject: 's', text: 'x' },
    { from: b.from, to: 'not an address', subject: 's', text: 'x' },
    { from: `nobody@${b.account.default_domain}`, to: 'four@example.com', subject: 's', text: 'x' },
    { from: b.from, to: 'five@example.com', subject: 's', text: 'x' },
  ];
  const strict = await batch({ emails: items }, {}, b.live);
  assert.equal(strict.status, 422, strict.text);
  assert.equal(strict.body.error.code, 'batch_refused');
  assert.equal(strict.body.error.refused, 2);
  assert.deepEqual(strict.body.error.data.map((r) => r.status === 'refused' ? [r.index, r.http_status, r.error.code, r.error.field] : [r.index]),
    [[0], [1], [2, 400, 'invalid_request', 'to'], [3, 404, 'mailbox_not_found', 'from'], [4]]);
  assert.equal(await stored(b), 0, 'a strict batch with a bad item stores nothing');

  const started = cap.requests.length;
  const lax = await batch({ emails: items, mode: 'permissive' }, {}, b.live);
  assert.equal(lax.status, 202, lax.text);
  assert.deepEqual([lax.body.mode, lax.body.accepted, lax.body.refused], ['permissive', 3, 2]);
  assert.deepEqual(lax.body.data.map((r) => [r.index, r.status]), [[0, 'queued'], [1, 'queued'], [2, 'refused'], [3, 'refused'], [4, 'queued']]);
  assert.deepEqual(lax.body.data.map((r) => r.to?.[0]), ['one@example.com', 'two@example.com', undefined, undefined, 'five@example.com'], 'in order');
  assert.equal(await stored(b), 3);
  const ids = lax.body.data.filter((r) => r.id).map((r) => r.id);
  assert.ok(await eventually(async () => ids.every((id) => atProvider(id) === 1), { ms: 30_000 }), 'each accepted item delivered once');
  assert.equal(cap.requests.length - started, 3);
  // One audit entry per message, each naming it.
  const audit = await eventually(async () => {
    const r = (await w.call('/get_audit_log', { key: b.live, query: { action: 'send_batch' } })).body.entries?.filter((e) => e.outcome === 'ok');
    return r?.length >= 3 && r;
  });
  assert.ok(audit, 'audit entries');
  assert.deepEqual(new Set(audit.map((e) => e.message_id)), new Set(ids));
  // Every refused and accepted item of a batch where all are refused: 422, nothing stored.
  const none = await batch({ emails: [items[2], items[3]], mode: 'permissive' }, {}, b.live);
  assert.equal(none.status, 422);
  assert.equal(none.body.error.code, 'batch_refused');
  assert.equal(await stored(b), 3);
});

test('idempotency: the batch key replays the answer; an item\'s own key is shared with send_email and never sends twice', async () => {
  const emails = [item('k1@example.com', { idempotency_key: 'item-k1' }), item('k2@example.com')];
  const first = await batch({ emails }, { 'Idempotency-Key': 'batch-1' });
  assert.equal(first.status, 202, first.text);
  const again = await batch({ emails }, { 'Idempotency-Key': 'batch-1' });
  assert.equal(again.headers.get('idempotent-replayed'), 'true');
  assert.deepEqual(again.body.data.map((r) => r.id), first.body.data.map((r) => r.id));
  const otherBody = await batch({ emails: [item('k3@example.com')] }, { 'Idempotency-Key': 'batch-1' });
  assert.equal(otherBody.status, 422);
  assert.equal(otherBody.body.error.code, 'idempotency_key_reused');

  // The item's key: send_email with it and the same body replays the item's message.
  const [k1] = first.body.data;
  const single = await w.call('/send_email', { key: a.live, body: emails[0], headers: { 'Idempotency-Key': 'item-k1' } });
  assert.equal(single.status, 202);
  assert.equal(single.body.id, k1.id);
  assert.equal(single.headers.get('idempotent-replayed'), 'true');
  // Another batch (another batch key) with the same item: replayed, not sent again.
  const second = await batch({ emails: [emails[0], item('k4@example.com')] }, { 'Idempotency-Key': 'batch-2' });
  assert.equal(second.status, 202, second.text);
  assert.deepEqual([second.body.data[0].id, second.body.data[0].replayed, second.body.data[1].replayed], [k1.id, true, false]);
  // A send_email key met in a batch: replayed too.
  const s = await w.call('/send_email', { key: a.live, body: item('k5@example.com'), headers: { 'Idempotency-Key': 'single-k5' } });
  const third = await batch({ emails: [item('k5@example.com', { idempotency_key: 'single-k5' })] });
  assert.equal(third.status, 202, third.text);
  assert.equal(third.body.data[0].id, s.body.id);
  assert.equal(third.body.data[0].replayed, true);
  // The item's key with another body, or twice in one batch: that item is refused.
  const clash = await batch({ emails: [item('k6@example.com', { idempotency_key: 'item-k1' })], mode: 'permissive' });
  assert.equal(clash.status, 422);
  assert.equal(clash.body.error.data[0].error.code, 'idempotency_key_reused');
  const twice = await batch({ emails: [item('k7@example.com', { idempotency_key: 'dup' }), item('k8@example.com', { idempotency_key: 'dup' })], mode: 'permissive' });
  assert.equal(twice.status, 202);
  assert.deepEqual(twice.body.data.map((r) => r.status), ['queued', 'refused']);
  // Each message reached the provider once.
  const ids = [k1.id, first.body.data[1].id, s.body.id];
  assert.ok(await eventually(async () => ids.every((id) => atProvider(id) === 1), { ms: 30_000 }));
});

test('each item passes through oversight: gated items are held for a human, one decision each; attachments are sent', async () => {
  const g = await w.sender('Gated Batch Co', { mode: 'gated_send' });
  const pdf = Buffer.from('%PDF-1.4 batch attachment').toString('base64');
  const r = await batch({ emails: [
    { from: g.from, to: 'held1@example.com', subject: 'Held one', text: 'x' },
    { from: g.from, to: 'held2@example.com', subject: 'Held two', text: 'y', attachments: [{ filename: 'r.pdf', content_type: 'application/pdf', content_base64: pdf }] },
  ] }, {}, g.live);
  assert.equal(r.status, 202, r.text);
  assert.deepEqual(r.body.data.map((x) => x.status), ['pending_approval', 'pending_approval']);
  assert.ok(r.body.data.every((x) => x.expires_at));
  const pending = await w.call('/list_pending', { key: g.oversight });
  assert.deepEqual(new Set(pending.body.messages.map((m) => m.id)), new Set(r.body.data.map((x) => x.id)));
  // The agent's key cannot approve; a human's can, once.
  assert.equal((await w.call('/decide_email', { key: g.live, body: { id: r.body.data[1].id, decision: 'approve' } })).status, 403);
  const d = await w.call('/decide_email', { key: g.oversight, body: { id: r.body.data[1].id, decision: 'approve' } });
  assert.equal(d.status, 200, d.text);
  assert.equal((await w.call('/decide_email', { key: g.oversight, body: { id: r.body.data[1].id, decision: 'reject' } })).status, 409);
  const sent = await eventually(async () => cap.requests.find((q) => q.json?.headers?.['X-MultiMail-Message-Id'] === r.body.data[1].id));
  assert.ok(sent);
  assert.equal(sent.json.attachments[0].filename, 'r.pdf');
  assert.equal(sent.json.attachments[0].content, pdf);
  assert.equal(atProvider(r.body.data[0].id), 0, 'the undecided one is still held');
  assert.equal((await w.sql(`SELECT count(*) AS n FROM events WHERE type = 'email.pending' AND message_id IN ('${r.body.data[0].id}', '${r.body.data[1].id}')`))[0].n, 2);
});

test('bad input answers 400 and stores nothing; the key needs send', async () => {
  const before = await stored();
  for (const [body, field] of [
    [{}, 'emails'],
    [{ emails: [] }, 'emails'],
    [{ emails: {} }, 'emails'],
    [{ emails: Array.from({ length: 501 }, (_, i) => item(`x${i}@example.com`)) }, 'emails'],
    [{ emails: [item('x@example.com')], mode: 'lenient' }, 'mode'],
    [{ emails: [item('x@example.com')], priority: 'high' }, 'priority'],
  ]) {
    const r = await batch(body);
    assert.equal(r.status, 400, `${JSON.stringify(body).slice(0, 80)}: ${r.text}`);
    assert.equal(r.body.error.field, field);
  }
  assert.equal(await stored(), before);
  const reader = await w.adminKey(a.account.id, { scopes: ['read'], name: 'reader' });
  assert.equal((await batch({ emails: [item('x@example.com')] }, {}, reader)).status, 403);
  assert.equal((await w.call('/send_batch', { body: { emails: [item('x@example.com')] } })).status, 401);
});

test('a batch of 500 is accepted at once and every item is delivered exactly once', { timeout: 180_000 }, async () => {
  const big = await w.sender('Big Batch Co', { mode: 'autonomous' });
  const emails = Array.from({ length: 500 }, (_, i) => ({ from: big.from, to: `r${i}@example.com`, subject: `Batch item ${i}`, text: `Item ${i} of 500.` }));
  const started = performance.now();
  const r = await batch({ emails }, { 'Idempotency-Key': 'big-1' }, big.live);
  const ms = performance.now() - started;
  assert.equal(r.status, 202, r.text.slice(0, 500));
  assert.equal(r.body.accepted, 500);
  assert.deepEqual(r.body.data.map((x) => x.index), emails.map((_, i) => i));
  const ids = r.body.data.map((x) => x.id);
  assert.equal(new Set(ids).size, 500);
  console.log(`send_batch: 500 items accepted in ${ms.toFixed(0)} ms (${(ms / 500).toFixed(2)} ms an item); Server-Timing: ${r.headers.get('server-timing')}`);
  const delivered = await eventually(async () => ids.every((id) => atProvider(id) >= 1), { ms: 150_000, every: 1000 });
  assert.ok(delivered, `${ids.filter((id) => atProvider(id) === 0).length} never delivered`);
  const twice = ids.filter((id) => atProvider(id) !== 1);
  assert.deepEqual(twice, [], 'delivered more than once');
  // The bodies the provider got are the items' (in a sample, hash for hash).
  for (const i of [0, 250, 499]) {
    const req = cap.requests.find((q) => q.json?.headers?.['X-MultiMail-Message-Id'] === ids[i]);
    assert.equal(createHash('sha256').update(req.json.text).digest('hex'), createHash('sha256').update(emails[i].text).digest('hex'));
    assert.deepEqual(req.json.to, [emails[i].to]);
  }
  // The replay of the whole batch is the same answer, and sends nothing more.
  const again = await batch({ emails }, { 'Idempotency-Key': 'big-1' }, big.live);
  assert.deepEqual(again.body.data.map((x) => x.id), ids);
  assert.equal(await stored(big), 500);
});
