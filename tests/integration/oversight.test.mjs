// Graduated oversight against the real worker: held sends, one decision exactly once (50 racing
// deciders), expiry by alarm, signed review links, cancels, mode changes and monitored copies.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startWorker, eventually } from './harness.mjs';
import { startCapture } from './capture.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let w, cap;
before(async () => {
  cap = await startCapture();
  w = await startWorker({ vars: { EMAIL_PROVIDER: 'resend', RESEND_BASE_URL: cap.url, RESEND_API_KEY: 're_x', DELIVERY_BACKOFF_SECONDS: '1' } });
});
after(async () => { await w?.stop(); await cap?.close(); });

// Held sends also email an approval request to the mailbox's oversight address (the owner's by
// default): those are ours, not the user's message, so deliveries of the message itself are
// counted without them.
const deliveries = () => cap.requests.filter((r) => !String(r.json?.subject ?? '').startsWith('Approval needed'));
const get = async (key, id) => (await w.call('/get_email', { key, query: { id } })).body;
const events = async (id) => (await w.sql(`SELECT type, payload FROM events WHERE message_id = '${id}' ORDER BY created_at`)).map((e) => ({ type: e.type, ...JSON.parse(e.payload) }));
const send = (a, extra = {}, key = a.live) => w.call('/send_email', { key, body: { from: a.from, to: 'ada@example.com', subject: 'Draft', text: 'Agent-written text', metadata: { runId: 'run-7' }, ...extra } });

test('gated_send holds a send until a human approves; the winner of 50 racing decisions delivers once', async () => {
  const a = await w.sender('Gate Co', { mode: 'gated_send' });
  cap.reset();
  const r = await send(a);
  assert.equal(r.status, 202, r.text);
  assert.equal(r.body.status, 'pending_approval');
  assert.ok(Date.parse(r.body.expires_at) > Date.now() + 71 * 3600_000, '72 h by default');

  const pending = await w.call('/list_pending', { key: a.oversight, query: { mailbox: a.from } });
  assert.equal(pending.status, 200);
  assert.deepEqual(pending.body.messages.map((m) => m.id), [r.body.id]);
  assert.deepEqual(pending.body.messages[0].metadata, { runId: 'run-7' });
  const [pendingEvent] = await events(r.body.id);
  assert.equal(pendingEvent.type, 'email.pending');
  assert.equal(pendingEvent.message_id, r.body.id);
  assert.deepEqual(pendingEvent.metadata, { runId: 'run-7' });

  assert.equal((await w.call('/decide_email', { key: a.live, body: { id: r.body.id, decision: 'approve' } })).status, 403, 'a send key cannot decide');
  const stranger = await w.sender('Stranger Co');
  assert.equal((await w.call('/decide_email', { key: stranger.oversight, body: { id: r.body.id, decision: 'approve' } })).status, 404, "another account's oversight key");
  await sleep(1500);
  assert.equal(deliveries().length, 0, 'nothing delivered while pending');

  const answers = await Promise.all(Array.from({ length: 50 }, (_, i) =>
    w.call('/decide_email', { key: a.oversight, body: { id: r.body.id, decision: i % 2 ? 'reject' : 'approve', reason: `vote ${i}` } })));
  const winners = answers.filter((x) => x.status === 200);
  assert.equal(winners.length, 1, answers.map((x) => x.status).join(','));
  const losers = answers.filter((x) => x.status === 409);
  assert.equal(losers.length, 49);
  for (const l of losers) {
    assert.equal(l.body.error.code, 'already_decided');
    assert.equal(l.body.error.winner.decision, winners[0].body.decision);
    assert.equal(l.body.error.winner.reason, winners[0].body.reason);
  }
  const approved = winners[0].body.decision === 'approved';
  const final = await eventually(async () => { const m = await get(a.live, r.body.id); return ['sent', 'rejected'].includes(m.status) && m; });
  assert.equal(final.status, approved ? 'sent' : 'rejected');
  await sleep(1500);
  assert.equal(deliveries().length, approved ? 1 : 0, 'at most one delivery');
  const decided = (await events(r.body.id)).filter((e) => e.type === 'email.decided');
  assert.equal(decided.length, 1);
  assert.equal(decided[0].decision, winners[0].body.decision);
  assert.deepEqual(decided[0].metadata, { runId: 'run-7' });
  assert.equal((await w.call('/list_pending', { key: a.oversight })).body.messages.length, 0);
});

test('a rejection is final and nothing is delivered', async () => {
  const a = await w.sender('Reject Co', { mode: 'gated_all' });
  cap.reset();
  const r = await send(a);
  assert.equal(r.body.status, 'pending_approval');
  const d = await w.call('/decide_email', { key: a.oversight, body: { message_id: r.body.id, decision: 'rejected', reason: 'off-brand' } });
  assert.equal(d.status, 200);
  assert.deepEqual([d.body.status, d.body.decision, d.body.reason], ['rejected', 'rejected', 'off-brand']);
  await sleep(1500);
  assert.equal(deliveries().length, 0);
  const m = await get(a.live, r.body.id);
  assert.equal(m.status, 'rejected');
  assert.equal((await w.call('/decide_email', { key: a.oversight, body: { id: r.body.id, decision: 'approve' } })).status, 409);
});

test('a short approval_ttl expires by alarm and emits email.decided with expired', async () => {
  const a = await w.sender('Expiry Co', { mode: 'gated_send' });
  const r = await send(a, { approval_ttl: 2 });
  assert.equal(r.body.status, 'pending_approval');
  const m = await eventually(async () => { const x = await get(a.live, r.body.id); return x.status === 'expired' && x; }, { ms: 20_000 });
  assert.ok(m, 'expired');
  assert.equal(m.decided_by, 'system:expiry');
  const decided = (await events(r.body.id)).filter((e) => e.type === 'email.decided');
  assert.deepEqual(decided.map((e) => e.decision), ['expired']);
  const late = await w.call('/decide_email', { key: a.oversight, body: { id: r.body.id, decision: 'approve' } });
  assert.equal(late.status, 409);
  assert.equal(late.body.error.winner.decision, 'expired');
  const audit = (await w.call('/get_audit_log', { key: a.live, query: { message_id: r.body.id } })).body.entries;
  assert.ok(audit.some((e) => e.action === 'approval.expired' && e.actor === 'system:expiry'));
});

test('an approval link shows a confirmation page, decides only on POST, and works once', async () => {
  const a = await w.sender('Link Co', { mode: 'gated_send', oversightEmail: 'boss@example.com' });
  const r = await send(a, {}, a.test);
  const note = await eventually(async () => (await w.sql(`SELECT id FROM messages WHERE kind = 'notification' AND subject = 'Approval needed: Draft' AND account_id = '${a.account.id}'`))[0]);
  assert.ok(note, 'a notification to the oversight address was queued');
  const [blob] = await w.sql(`SELECT body FROM message_blobs WHERE message_id = '${note.id}' AND kind = 'outbound'`);
  const email = JSON.parse(blob.body);
  assert.deepEqual(email.to, ['boss@example.com']);
  assert.match(email.text, /Agent-written text/);
  const approveLink = email.text.match(/Approve: (\S+)/)[1];
  const rejectLink = email.text.match(/Reject: +(\S+)/)[1];
  const path = (u) => { const x = new URL(u); return x.pathname + x.search; };

  const shown = await w.call(path(approveLink));
  assert.equal(shown.status, 200);
  assert.match(shown.headers.get('content-type'), /text\/html/);
  assert.match(shown.text, /<form method="post" action="\/review">/);
  assert.match(shown.text, /Agent-written text/);
  assert.equal((await get(a.test, r.body.id)).status, 'pending_approval', 'GET does not decide');

  const token = new URL(approveLink).searchParams.get('token');
  const tampered = token.slice(0, -3) + (token.endsWith('AAA') ? 'BBB' : 'AAA');
  const bad = await w.call('/review', { raw: `token=${encodeURIComponent(tampered)}`, headers: { 'Content-Type': 'application/x-www-form-urlencoded' } });
  assert.equal(bad.status, 400);

  const post = () => w.call('/review', { raw: `token=${encodeURIComponent(token)}&reason=looks+good`, headers: { 'Content-Type': 'application/x-www-form-urlencoded' } });
  const first = await post();
  assert.equal(first.status, 200, first.text);
  assert.match(first.text, /Approved/);
  const m = await eventually(async () => { const x = await get(a.test, r.body.id); return x.status === 'sent' && x; });
  assert.equal(m.decided_by, 'human:boss@example.com');
  assert.equal(m.decision_reason, 'looks good');
  assert.equal((await post()).status, 409, 'the link works once');
  const rejectAfter = await w.call('/review', { raw: `token=${encodeURIComponent(new URL(rejectLink).searchParams.get('token'))}`, headers: { 'Content-Type': 'application/x-www-form-urlencoded' } });
  assert.equal(rejectAfter.status, 409);
});

test('the sender can cancel a pending message; afterwards no decision applies', async () => {
  const a = await w.sender('Cancel Co', { mode: 'gated_send' });
  const r = await send(a);
  const c = await w.call('/cancel_email', { key: a.live, body: { id: r.body.id } });
  assert.equal(c.status, 200, c.text);
  assert.equal(c.body.status, 'cancelled');
  const d = await w.call('/decide_email', { key: a.oversight, body: { id: r.body.id, decision: 'approve' } });
  assert.equal(d.status, 409);
  assert.equal(d.body.error.winner.decision, 'cancelled');
});

test('monitored sends at once with the oversight address as a real Bcc of the provider request', async () => {
  const a = await w.sender('Monitor Co', { mode: 'monitored', oversightEmail: 'audit@example.com' });
  cap.reset();
  const r = await send(a);
  assert.equal(r.body.status, 'queued');
  assert.equal(r.body.oversight_mode, 'monitored');
  assert.ok(await eventually(async () => (await get(a.live, r.body.id)).status === 'sent'), 'timed out waiting');
  assert.equal(deliveries().length, 1);
  assert.deepEqual(deliveries()[0].json.bcc, ['audit@example.com']);
  const sent = (await events(r.body.id)).find((e) => e.type === 'email.sent');
  assert.equal(sent.oversight_mode, 'monitored');
});

test('read_only refuses sends; a request may ask for a stricter mode and is held', async () => {
  const a = await w.sender('Modes Co', { mode: 'autonomous' });
  const held = await send(a, { oversight_mode: 'gated_all' });
  assert.equal(held.body.status, 'pending_approval');
  assert.equal(held.body.oversight_mode, 'gated_all');
  const ro = `ro@${a.account.default_domain}`;
  await w.call('/create_mailbox', { key: a.live, body: { address: ro, oversight_mode: 'read_only' } });
  const r = await w.call('/send_email', { key: a.live, body: { from: ro, to: 'x@example.com', subject: 's', text: 't' } });
  assert.equal(r.status, 403);
  assert.equal(r.body.error.code, 'mailbox_read_only');
});

test('looser mode changes wait for a human; stricter ones apply at once; both emit mailbox.mode_changed', async () => {
  const a = await w.sender('Change Co', { mode: 'gated_send' });
  const loose = await w.call('/update_mailbox', { key: a.live, body: { id: a.from, oversight_mode: 'autonomous' } });
  assert.equal(loose.status, 200);
  assert.equal(loose.body.oversight_mode, 'gated_send', 'unchanged until approved');
  assert.equal(loose.body.mode_change.status, 'pending');
  const listed = await w.call('/list_pending', { key: a.oversight });
  assert.deepEqual(listed.body.mode_changes.map((c) => c.id), [loose.body.mode_change.id]);
  assert.equal((await send(a)).body.status, 'pending_approval', 'still gated');
  const d = await w.call('/decide_email', { key: a.oversight, body: { id: loose.body.mode_change.id, decision: 'approve' } });
  assert.equal(d.status, 200, d.text);
  assert.equal((await send(a)).body.status, 'queued', 'autonomous now');
  assert.equal((await w.call('/decide_email', { key: a.oversight, body: { id: loose.body.mode_change.id, decision: 'reject' } })).status, 409);

  const strict = await w.call('/update_mailbox', { key: a.live, body: { id: a.from, oversight_mode: 'gated_all' } });
  assert.equal(strict.body.oversight_mode, 'gated_all');
  const changed = (await w.sql(`SELECT payload FROM events WHERE type = 'mailbox.mode_changed' AND account_id = '${a.account.id}'`)).map((e) => JSON.parse(e.payload));
  assert.deepEqual(changed.map((e) => [e.old_mode, e.new_mode]), [['gated_send', 'autonomous'], ['autonomous', 'gated_all']]);
  assert.equal((await w.call('/decide_email', { key: a.oversight, body: { id: 'chg_nope', decision: 'approve' } })).status, 404);
  assert.equal((await w.call('/decide_email', { key: a.oversight, body: { id: loose.body.mode_change.id, decision: 'maybe' } })).status, 400);
});

test('tightening retires a waiting looser change; a key limited to another mailbox cannot decide it', async () => {
  const a = await w.sender('Retire Co', { mode: 'gated_send' });
  const other = `other@${a.account.default_domain}`;
  const mb = await w.call('/create_mailbox', { key: a.live, body: { address: other } });
  const limited = { body: { key: await w.adminKey(a.account.id, { scopes: ['oversight'], mailboxes: [mb.body.id], name: 'limited' }) } };
  const loose = await w.call('/update_mailbox', { key: a.live, body: { id: a.from, oversight_mode: 'autonomous' } });
  const chg = loose.body.mode_change.id;
  const foreign = await w.call('/decide_email', { key: limited.body.key, body: { id: chg, decision: 'approve' } });
  assert.equal(foreign.status, 404, 'not visible to a key limited to another mailbox');
  const strict = await w.call('/update_mailbox', { key: a.live, body: { id: a.from, oversight_mode: 'gated_all' } });
  assert.equal(strict.body.oversight_mode, 'gated_all');
  assert.equal(strict.body.mode_change, null);
  const late = await w.call('/decide_email', { key: a.oversight, body: { id: chg, decision: 'approve' } });
  assert.equal(late.status, 409, 'the looser change was superseded');
  assert.equal(late.body.error.winner.decision, 'superseded');
  const mode = (await w.call('/list_mailboxes', { key: a.live })).body.mailboxes.find((m) => m.address === a.from).oversight_mode;
  assert.equal(mode, 'gated_all');
});

test('a held message approved before its send_at is scheduled, and not sent in the next 1.5 s', async () => {
  const a = await w.sender('Scheduled Gate Co', { mode: 'gated_send' });
  const r = await send(a, { send_at: new Date(Date.now() + 3600_000).toISOString() });
  assert.equal(r.body.status, 'pending_approval');
  const d = await w.call('/decide_email', { key: a.oversight, body: { id: r.body.id, decision: 'approve' } });
  assert.equal(d.body.status, 'scheduled');
  await sleep(1500);
  assert.equal((await get(a.live, r.body.id)).status, 'scheduled', 'not sent before send_at');
});

test('held inbound mail is not the sender\'s to cancel', async () => {
  const a = await w.sender('Inbound Hold Co', { mode: 'gated_all' });
  const raw = `From: x@example.com\r\nTo: ${a.from}\r\nSubject: hold\r\nMessage-ID: <hold-${Date.now()}@example.com>\r\n\r\nbody\r\n`;
  const r = await w.call('/inbound/mime', { key: a.live, raw, headers: { 'Content-Type': 'message/rfc822' } });
  const c = await w.call('/cancel_email', { key: a.live, body: { id: r.body.stored[0].id } });
  assert.equal(c.status, 409);
  assert.equal(c.body.error.code, 'not_cancellable');
  const d = await w.call('/decide_email', { key: a.oversight, body: { id: r.body.stored[0].id, decision: 'approve' } });
  assert.equal(d.body.status, 'received');
});
