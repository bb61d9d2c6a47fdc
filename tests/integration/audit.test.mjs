// The audit trail against the real worker: every call in one unbroken chain under concurrency,
// tampering found at the exact entry, and the offline script agreeing with the endpoint.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync, readFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startWorker, eventually, ROOT } from './harness.mjs';

let w, acct, from;
before(async () => {
  w = await startWorker();
  acct = await w.sender('Audit Co', { mode: 'monitored' });
  from = acct.from;
});
after(async () => { await w?.stop(); });

const entries = async (key, query = {}) => {
  const out = [];
  let cursor;
  for (let i = 0; i < 100; i++) {
    const r = await w.call('/get_audit_log', { key, query: { limit: '500', ...query, ...(cursor ? { cursor } : {}) } });
    assert.equal(r.status, 200, r.text);
    out.push(...r.body.entries);
    cursor = r.body.next_cursor;
    if (!cursor) return out;
  }
  throw new Error('too many pages');
};

function offline(jsonl, head) {
  const dir = mkdtempSync(join(tmpdir(), 'audit-'));
  const file = join(dir, 'audit.jsonl');
  writeFileSync(file, jsonl);
  try {
    return JSON.parse(execFileSync('python3', [join(ROOT, 'scripts', 'verify_audit.py'), file, ...(head ? [String(head)] : [])], { encoding: 'utf8' }));
  } catch (e) {
    return JSON.parse(e.stdout);
  }
}

test('200 concurrent calls from several keys form one unbroken chain holding every call', async () => {
  const keys = [acct.test];
  for (let i = 0; i < 3; i++) {
    const k = await w.call('/create_api_key', { key: acct.test, body: { name: `agent ${i}`, scopes: ['send', 'read'] } });
    keys.push(k.body.key);
  }
  const calls = await Promise.all(Array.from({ length: 200 }, (_, i) =>
    w.call('/send_email', { key: keys[i % keys.length], body: { from, to: 'ada@example.com', subject: `n${i}`, text: 'x' } })));
  assert.ok(calls.length > 0 && calls.every((c) => c.status === 202));
  const requestIds = new Set(calls.map((c) => c.headers.get('request-id')));
  const messageIds = new Set(calls.map((c) => c.body.id));
  // Let the 200 deliveries finish so the chain is quiet, then read it whole.
  const delivered = await eventually(async () => {
    const d = (await entries(acct.test, { action: 'delivery.sent' })).filter((e) => messageIds.has(e.message_id));
    return d.length === 200 && d;
  }, { ms: 60_000, every: 1000 });
  assert.ok(delivered, 'every delivery outcome is recorded too');
  const all = await entries(acct.test);
  const sendEntries = all.filter((e) => e.action === 'send_email' && requestIds.has(e.request_id));
  assert.equal(sendEntries.length, 200, 'every call has exactly one entry');
  assert.equal(new Set(sendEntries.map((e) => e.request_id)).size, 200);
  for (const e of sendEntries) {
    assert.match(e.message_id, /^msg_/);
    assert.equal(e.oversight_mode, 'monitored');
    assert.equal(e.outcome, 'ok');
    assert.match(e.actor, /^key_/);
  }
  assert.deepEqual(all.map((e) => e.seq), all.map((_, i) => i + 1), 'consecutive sequence, no fork');
  const v = await w.call('/verify_audit_log', { key: acct.test });
  assert.equal(v.status, 200);
  assert.equal(v.body.ok, true, JSON.stringify(v.body));
  assert.equal(v.body.entries_checked, all.length);
});

test('delivery outcomes, replays and refused attempts are recorded', async () => {
  const s = await w.call('/send_email', { key: acct.test, headers: { 'Idempotency-Key': 'audit-replay' }, body: { from, to: 'ada@example.com', subject: 'r', text: 'x' } });
  await w.call('/send_email', { key: acct.test, headers: { 'Idempotency-Key': 'audit-replay' }, body: { from, to: 'ada@example.com', subject: 'r', text: 'x' } });
  const escalation = await w.call('/send_email', { key: acct.test, body: { from, to: 'ada@example.com', subject: 'x', text: 'x', oversight_mode: 'autonomous' } });
  assert.equal(escalation.status, 403);
  const readOnly = await w.call('/create_api_key', { key: acct.test, body: { name: 'reader', scopes: ['read'] } });
  const scope = await w.call('/create_mailbox', { key: readOnly.body.key, body: { address: `x@${acct.account.default_domain}` } });
  assert.equal(scope.status, 403);
  const other = await w.createAccount('Other Audit');
  const foreign = await w.call('/cancel_email', { key: other.test, body: { id: s.body.id } });
  assert.equal(foreign.status, 404);

  const mine = await eventually(async () => {
    const es = await entries(acct.test, { message_id: s.body.id });
    return es.some((e) => e.action === 'delivery.sent') && es;
  });
  assert.deepEqual(mine.map((e) => [e.action, e.outcome]), [['send_email', 'ok'], ['send_email', 'replayed'], ['delivery.sent', 'ok']]);
  assert.equal(mine[0].idempotency_key, 'audit-replay');
  assert.equal(mine[2].actor, 'system:delivery');

  // Entries are appended right after each answer (wait_until): give the last ones a moment.
  const refused = await eventually(async () => {
    const r = (await entries(acct.test)).filter((e) => ['oversight_escalation', 'insufficient_scope'].includes(e.outcome));
    return r.length === 2 && r;
  });
  assert.deepEqual(refused.map((e) => e.outcome).sort(), ['insufficient_scope', 'oversight_escalation']);
  const otherEntries = await eventually(async () => { const es = await entries(other.test); return es.some((e) => e.action === 'cancel_email') && es; });
  assert.ok(otherEntries.some((e) => e.action === 'cancel_email' && e.outcome === 'not_found' && e.message_id === s.body.id), 'foreign attempt is in the caller\'s trail');
  assert.ok(!(await entries(acct.test)).some((e) => e.request_id === foreign.headers.get('request-id')), 'and not in the victim\'s');
});

test('filters, pagination, scope and mode isolation', async () => {
  const byAction = await entries(acct.test, { action: 'create_mailbox' });
  assert.ok(byAction.length >= 1 && byAction.every((e) => e.action === 'create_mailbox'));
  const page = await w.call('/get_audit_log', { key: acct.test, query: { limit: '2' } });
  assert.equal(page.body.entries.length, 2);
  const next = await w.call('/get_audit_log', { key: acct.test, query: { limit: '2', cursor: page.body.next_cursor } });
  assert.equal(next.body.entries[0].seq, page.body.entries[1].seq + 1);
  const mb = await entries(acct.test, { mailbox: from });
  assert.ok(mb.length > 0 && mb.every((e) => e.mailbox && e.mailbox.startsWith('mbx_')));
  const live = await w.call('/get_audit_log', { key: acct.live });
  assert.equal(live.status, 200);
  assert.ok(live.body.entries.length > 0 && live.body.entries.every((e) => e.livemode === true), 'live key sees only live entries');
  assert.equal((await w.call('/get_audit_log', { key: acct.test, query: { since: 'yesterday' } })).status, 400);
  const reader = await w.call('/create_api_key', { key: acct.test, body: { name: 'r2', scopes: ['read'] } });
  assert.equal((await w.call('/verify_audit_log', { key: reader.body.key })).status, 403);
});

test('the offline script agrees with verify_audit_log, and both find an edited entry at that entry', async () => {
  const t = await w.sender('Tamper Co');
  const f = t.from;
  for (let i = 0; i < 6; i++) await w.call('/send_email', { key: t.test, body: { from: f, to: 'ada@example.com', subject: `Grüße ${i} "q"`, text: 'x' } });
  assert.ok(await eventually(async () => (await entries(t.test, { action: 'delivery.sent' })).length === 6), 'timed out waiting');
  const exported = await w.call('/export_audit_log', { key: t.test });
  assert.match(exported.headers.get('content-type'), /ndjson/);
  const total = exported.text.trim().split('\n').length;
  assert.deepEqual(offline(exported.text), { ok: true, entries_checked: total, first_bad: null });
  assert.equal((await w.call('/verify_audit_log', { key: t.test })).body.entries_checked, total);

  // The triggers refuse edits…
  await assert.rejects(w.sql(`UPDATE audit_log SET outcome = 'forged' WHERE account_id = '${t.account.id}' AND seq = 4`), /append-only/);
  // …so a tamperer drops them first; the chain still gives it away.
  await w.sql(`DROP TRIGGER audit_log_no_update; UPDATE audit_log SET outcome = 'forged' WHERE account_id = '${t.account.id}' AND livemode = 0 AND seq = 4`);
  const v = await w.call('/verify_audit_log', { key: t.test });
  assert.equal(v.body.ok, false);
  assert.equal(v.body.first_bad.seq, 4);
  const off = offline((await w.call('/export_audit_log', { key: t.test })).text);
  assert.equal(off.ok, false);
  assert.equal(off.first_bad.seq, 4);
});

test('a deleted entry, and a deleted tail, are found', async () => {
  const t = await w.sender('Delete Co');
  const f = t.from;
  for (let i = 0; i < 4; i++) await w.call('/send_email', { key: t.test, body: { from: f, to: 'ada@example.com', subject: `d${i}`, text: 'x' } });
  assert.ok(await eventually(async () => (await entries(t.test, { action: 'delivery.sent' })).length === 4), 'timed out waiting');
  const all = await entries(t.test);
  const last = all.at(-1).seq;
  await w.sql(`DROP TRIGGER IF EXISTS audit_log_no_delete; DELETE FROM audit_log WHERE account_id = '${t.account.id}' AND livemode = 0 AND seq = 3`);
  let v = await w.call('/verify_audit_log', { key: t.test });
  assert.equal(v.body.ok, false);
  assert.equal(v.body.first_bad.seq, 3);
  assert.equal(offline((await w.call('/export_audit_log', { key: t.test })).text).first_bad.seq, 3);

  const u = await w.createAccount('Tail Co');
  const g = `agent@${u.account.default_domain}`;
  await w.call('/create_mailbox', { key: u.test, body: { address: g } });
  await w.call('/update_mailbox', { key: u.test, body: { id: g, display_name: 'one' } });
  await w.call('/update_mailbox', { key: u.test, body: { id: g, display_name: 'two' } });
  const head = (await entries(u.test)).at(-1).seq;
  await w.sql(`DELETE FROM audit_log WHERE account_id = '${u.account.id}' AND livemode = 0 AND seq = ${head}`);
  v = await w.call('/verify_audit_log', { key: u.test });
  assert.equal(v.body.ok, false, 'a deleted last entry is noticed against the chain head');
  assert.equal(v.body.first_bad.seq, head);
  assert.equal(offline((await w.call('/export_audit_log', { key: u.test })).text, head).first_bad.seq, head);
  assert.ok(last > 3);
});

test('docs/audit.md carries the offline script verbatim', () => {
  const doc = readFileSync(join(ROOT, 'docs', 'audit.md'), 'utf8');
  assert.ok(doc.includes(readFileSync(join(ROOT, 'scripts', 'verify_audit.py'), 'utf8').trim()));
});
