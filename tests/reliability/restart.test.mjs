// Restart mid-load (issue 17, scenario 1): several hundred keyed sends from an autonomous and a
// gated mailbox, approvals racing them, and workerd killed hard (SIGKILL of its process group)
// in the middle, then started again on the same persisted state. Clients retry what failed with
// the same Idempotency-Key, as an Inngest step would. Every send that got a 2xx must end `sent`,
// none reaches the provider under two different idempotency keys, each held message has one
// decision, and the audit chains verify.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { start, requestsFor, sleep, eventually } from './lib.mjs';

const AUTONOMOUS = 200;
const GATED = 100;
const CRASH_AFTER = 120; // accepted sends before the kill

let w, cap;
before(async () => {
  // The sweep treats a queued message untouched for 2 s, and a claim older than 3 s, as lost
  // (production: 10 and 5 minutes), so the test need not wait for the real hourly schedule.
  ({ w, cap } = await start({ SWEEP_STALE_AFTER_SECONDS: '2', RECLAIM_AFTER_SECONDS: '3' }));
});
after(async () => { await w?.stop(); await cap?.close(); });

/** A call retried through connection errors and 5xx (the restart) until it is answered. */
async function persistent(path, opts, stats) {
  for (let i = 0; i < 200; i++) {
    try {
      const r = await w.call(path, opts);
      if (r.status < 500 && !(r.status === 409 && r.body?.error?.code === 'idempotency_key_in_progress')) return r;
      stats.retried5xx += r.status >= 500 ? 1 : 0;
    } catch {
      stats.connectionErrors++;
    }
    await sleep(250);
  }
  throw new Error(`${path} never answered`);
}

test('a hard kill mid-load loses nothing accepted and delivers nothing twice', async () => {
  const a = await w.sender('Restart Auto Co', { mode: 'autonomous' });
  const g = await w.sender('Restart Gated Co', { mode: 'gated_send' });
  const stats = { connectionErrors: 0, retried5xx: 0, crashMs: 0 };
  // Interleaved: two autonomous sends, then a held one.
  const jobs = Array.from({ length: AUTONOMOUS + GATED }, (_, i) => (i % 3 === 2 ? { acct: g, key: `gated-${i}` } : { acct: a, key: `auto-${i}` }));
  const accepted = new Map(); // idempotency key → message id
  const decisions = [];
  let crash = null;
  const t0 = Date.now();
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const job = jobs[next++];
      const body = { from: job.acct.from, to: 'ada@example.com', subject: `load ${job.key}`, text: `message ${job.key}` };
      const r = await persistent('/send_email', { key: job.acct.live, body, headers: { 'Idempotency-Key': job.key } }, stats);
      assert.equal(r.status, 202, r.text);
      const again = accepted.get(job.key);
      assert.ok(!again || again === r.body.id, 'a key answered two ids');
      accepted.set(job.key, r.body.id);
      if (r.body.status === 'pending_approval') {
        decisions.push(persistent('/decide_email', { key: g.oversight, body: { id: r.body.id, decision: 'approve' } }, stats));
      }
      if (accepted.size === CRASH_AFTER && !crash) {
        const k0 = Date.now();
        crash = w.crash().then(() => { stats.crashMs = Date.now() - k0; });
      }
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  await crash;
  const decided = await Promise.all(decisions);
  for (const d of decided) assert.ok(d.status === 200 || (d.status === 409 && d.body.error.code === 'already_decided'), d.text);
  // A repeat of every key after the restart answers the same message.
  for (const job of jobs.filter((_, i) => i % 25 === 0)) {
    const body = { from: job.acct.from, to: 'ada@example.com', subject: `load ${job.key}`, text: `message ${job.key}` };
    const r = await w.call('/send_email', { key: job.acct.live, body, headers: { 'Idempotency-Key': job.key } });
    assert.equal(r.body.id, accepted.get(job.key), `${job.key} answered another message after the restart`);
  }
  assert.equal(accepted.size, AUTONOMOUS + GATED);
  const ids = [...accepted.values()];
  assert.equal(new Set(ids).size, ids.length);

  // Let the sweep find what the kill lost (queue messages, claims), until every message is sent.
  const accounts = `'${a.account.id}', '${g.account.id}'`;
  const settled = await eventually(async () => {
    await w.cron();
    const rows = await w.sql(`SELECT status, count(*) AS n FROM messages WHERE account_id IN (${accounts}) AND kind = 'message' GROUP BY status`);
    return rows.length === 1 && rows[0].status === 'sent' && rows[0].n === ids.length;
  }, { ms: 180_000, every: 2000 });
  const elapsed = Date.now() - t0;
  const final = await w.sql(`SELECT status, count(*) AS n FROM messages WHERE account_id IN (${accounts}) AND kind = 'message' GROUP BY status`);
  assert.ok(settled, `not every accepted send reached sent: ${JSON.stringify(final)}`);
  const stored = await w.sql(`SELECT count(*) AS n FROM messages WHERE account_id IN (${accounts}) AND kind = 'message'`);
  assert.equal(stored[0].n, ids.length, 'a retried send made a second message');

  // At the provider: every message, and only under its own idempotency key (Resend drops a
  // repeat with the same key, so a repeated request is one delivery).
  let repeats = 0;
  for (const id of ids) {
    const reqs = requestsFor(cap, id);
    assert.ok(reqs.length >= 1, `${id} never reached the provider`);
    assert.deepEqual([...new Set(reqs.map((r) => r.headers['idempotency-key']))], [id], `${id} reached the provider under another key`);
    repeats += reqs.length - 1;
  }
  // Every held message has exactly one decision.
  const held = await w.sql(`SELECT m.id, m.decision, (SELECT count(*) FROM message_timeline t WHERE t.message_id = m.id AND t.kind IN ('approved', 'rejected', 'expired')) AS decided FROM messages m WHERE m.account_id = '${g.account.id}' AND m.kind = 'message'`);
  assert.equal(held.length, GATED);
  for (const h of held) {
    assert.equal(h.decision, 'approved', h.id);
    assert.equal(h.decided, 1, `${h.id} has ${h.decided} decisions`);
  }
  // The audit chains verify.
  for (const acct of [a, g]) {
    const v = await w.call('/verify_audit_log', { key: acct.live });
    assert.equal(v.status, 200, v.text);
    assert.equal(v.body.ok, true, v.text);
  }
  console.log(`restart: ${ids.length} sends (${GATED} held and approved), workerd killed after ${CRASH_AFTER} and back in ${stats.crashMs} ms; ` +
    `${stats.connectionErrors} connection errors and ${stats.retried5xx} 5xx retried by clients; all sent ${elapsed} ms after the first send; ` +
    `${repeats} repeated provider requests, each under the message's own idempotency key`);
});
