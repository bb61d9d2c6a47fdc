// Concurrency on one mailbox (issue 17, scenarios 4 and 8): 100 identical keyed sends at once,
// 50 racing decisions (every racer approving, and a mixed race), 50 racing mode changes and
// tightenings. Deliveries are counted at the provider capture after the queue has drained.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { start, drain, requestsFor, stricter, eventually, sleep } from './lib.mjs';

let w, cap, sentinel;
before(async () => {
  ({ w, cap } = await start());
  sentinel = await w.sender('Sentinel Co', { mode: 'autonomous' });
});
after(async () => { await w?.stop(); await cap?.close(); });

/** Sends with `key` until answered with something other than 409 in-progress (as a retrying step would). */
async function keyed(key, body, idem) {
  for (let i = 0; i < 40; i++) {
    const r = await w.call('/send_email', { key, body, headers: { 'Idempotency-Key': idem } });
    if (!(r.status === 409 && r.body?.error?.code === 'idempotency_key_in_progress')) return r;
    await sleep(100);
  }
  throw new Error('still in progress after 40 tries');
}

test('100 concurrent identical keyed sends make one message, delivered once', async () => {
  const a = await w.sender('Race Co', { mode: 'autonomous' });
  const body = { from: a.from, to: 'ada@example.com', subject: 'exactly once', text: 'x' };
  const rs = await Promise.all(Array.from({ length: 100 }, () => keyed(a.live, body, 'race-key-1')));
  assert.equal(rs.length, 100);
  assert.deepEqual([...new Set(rs.map((r) => r.status))], [202], rs.map((r) => r.text).find((t) => !t.includes('"id"')));
  const ids = new Set(rs.map((r) => r.body.id));
  assert.equal(ids.size, 1, `one key made ${ids.size} messages`);
  const [id] = ids;
  assert.equal(rs.filter((r) => r.headers.get('idempotent-replayed') === 'true').length, 99, 'all but the first are replays');
  assert.equal((await w.sql(`SELECT count(*) AS n FROM messages WHERE account_id = '${a.account.id}' AND kind = 'message'`))[0].n, 1);
  assert.ok(await eventually(async () => (await w.call('/get_email', { key: a.live, query: { id } })).body.status === 'sent', { ms: 30_000 }));
  await drain(w, cap, sentinel);
  assert.equal(requestsFor(cap, id).length, 1, 'delivered more or less than once');
});

for (const mixed of [false, true]) {
  test(`50 racing decisions (${mixed ? 'approvals and rejections' : 'every racer approving'}) make one decision; delivery follows it exactly`, async () => {
    const g = await w.sender(`Decide Co ${mixed}`, { mode: 'gated_send' });
    const s = await w.call('/send_email', { key: g.live, body: { from: g.from, to: 'ada@example.com', subject: 'race me', text: 'x' } });
    assert.equal(s.body.status, 'pending_approval', s.text);
    const id = s.body.id;
    const rs = await Promise.all(Array.from({ length: 50 }, (_, i) => w.call('/decide_email', { key: g.oversight, body: { id, decision: mixed && i % 2 ? 'reject' : 'approve', reason: `racer ${i}` } })));
    const won = rs.filter((r) => r.status === 200);
    assert.equal(won.length, 1, `${won.length} decisions won: ${rs.map((r) => r.status).join(' ')}`);
    const lost = rs.filter((r) => r.status === 409);
    assert.equal(lost.length, 49);
    for (const r of lost) {
      assert.equal(r.body.error.code, 'already_decided');
      assert.equal(r.body.error.winner.reason, won[0].body.reason, 'every loser is told the same winner');
    }
    const approved = won[0].body.decision === 'approved';
    const final = await eventually(async () => { const e = (await w.call('/get_email', { key: g.live, query: { id } })).body; return ['sent', 'rejected'].includes(e.status) && e; }, { ms: 30_000 });
    assert.ok(final, 'the message never settled');
    assert.equal(final.status, approved ? 'sent' : 'rejected');
    assert.equal(final.timeline.filter((t) => ['approved', 'rejected'].includes(t.event)).length, 1, 'one decision in the timeline');
    assert.equal((await w.sql(`SELECT count(*) AS n FROM events WHERE message_id = '${id}' AND type = 'email.decided'`))[0].n, 1);
    await drain(w, cap, sentinel);
    assert.equal(requestsFor(cap, id).length, approved ? 1 : 0);
  });
}

test('50 racing mode changes and tightenings: the mode is never looser than a human allowed', async () => {
  const m = await w.sender('Mode Race Co', { mode: 'gated_send' });
  const mbx = m.mailbox.id;
  const asks = ['autonomous', 'monitored', 'gated_all', 'read_only', 'gated_send'];
  const seen = [];
  let racing = true;
  // Four readers watch the mode while the writers race.
  const watcher = Promise.all(Array.from({ length: 4 }, async () => {
    while (racing) {
      const box = (await w.call('/list_mailboxes', { key: m.live })).body.mailboxes.find((b) => b.id === mbx);
      seen.push(box.oversight_mode);
    }
  }));
  const rs = await Promise.all(Array.from({ length: 50 }, (_, i) => w.call('/update_mailbox', { key: m.live, body: { id: mbx, oversight_mode: asks[i % asks.length] } })));
  racing = false;
  await watcher;
  assert.ok(rs.every((r) => r.status === 200), rs.map((r) => `${r.status} ${r.text}`).find((t) => !t.startsWith('200')));
  assert.ok(seen.length > 0);
  // No human decided anything: every mode seen is gated_send or stricter.
  for (const mode of seen) assert.ok(stricter(mode, 'gated_send'), `saw ${mode} while no human had approved a looser mode`);
  const now = (await w.call('/list_mailboxes', { key: m.live })).body.mailboxes.find((b) => b.id === mbx).oversight_mode;
  assert.ok(stricter(now, 'gated_send'), now);
  // The loosenings opened changes for a human; one waits (a newer request supersedes an older one).
  assert.ok(rs.some((r) => r.body.mode_change?.status === 'pending'), 'no loosening opened a change');
  const pending = (await w.call('/list_pending', { key: m.oversight, query: { mailbox: mbx } })).body.mode_changes;
  console.log(`mode race: modes seen ${[...new Set(seen)].join(', ')} over ${seen.length} reads; ${pending.length} change pending (${pending.map((c) => `${c.from} → ${c.to}`).join('')})`);
  assert.ok(pending.length <= 1, `${pending.length} pending mode changes`);
  if (pending.length === 1) {
    // 20 humans approve it at once: one wins, the mode becomes what was asked.
    const ds = await Promise.all(Array.from({ length: 20 }, () => w.call('/decide_email', { key: m.oversight, body: { id: pending[0].id, decision: 'approve' } })));
    assert.equal(ds.filter((d) => d.status === 200).length, 1, ds.map((d) => d.status).join(' '));
    const after = (await w.call('/list_mailboxes', { key: m.live })).body.mailboxes.find((b) => b.id === mbx).oversight_mode;
    assert.equal(after, pending[0].to);
  }
});
