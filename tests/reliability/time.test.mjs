// Time-driven promises end to end (issue 17, scenario 7). One deployment, restarted on the same
// persisted state with its clock moved forward (`CLOCK_OFFSET_SECONDS`, a setting for tests
// only): timers already set (a hold's alarm, a queue message's delay) keep real time, so after
// the move they have not fired: exactly a lost alarm or a lost queue message. The hourly cron is
// run through wrangler dev's `/__scheduled`. What each stage checks:
// - now:        the setup; an abandoned idempotency reservation answers 409; a webhook whose
//               secret was rotated twice is signed by the last two secrets only.
// - +2 hours:   the abandoned reservation is taken over; the cron expires a hold whose alarm
//               never fired, fails a Postmark claim the worker died in (`delivery_interrupted`,
//               never sent twice), re-checks a verified domain whose records are gone; a 24-hour
//               idempotency record still replays.
// - +25 hours:  the cron prunes idempotency records and rate windows (the key makes a new
//               message), sends a scheduled message whose queue message was lost, and the old
//               webhook secret no longer signs; a `send_at` further out than one queue hop
//               (`QUEUE_MAX_DELAY_SECONDS=3`) is reached in hops and sent on time.
// - +31 days:   the cron prunes the events (and their webhook attempts) past their retention.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { startWorker, eventually } from '../integration/harness.mjs';
import { startCapture } from '../integration/capture.mjs';
import { startDns } from '../integration/dns.mjs';

const HOUR = 3600;
let w, pm, rx, dns;
let offset = 0; // the worker's clock, seconds ahead of this process's
const workerNow = () => Date.now() + offset * 1000;
async function travel(secs, vars = {}) {
  offset = secs;
  const started = Date.now();
  await w.restart({ CLOCK_OFFSET_SECONDS: String(secs), ...vars });
  console.log(`time: restarted ${secs} s ahead in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}
const email = async (key, id) => (await w.call('/get_email', { key, query: { id } })).body;
const settled = (key, id, statuses, ms = 30_000) => eventually(async () => { const e = await email(key, id); return statuses.includes(e.status) && e; }, { ms, every: 300 });
const atProvider = (id) => pm.requests.filter((r) => r.text.includes(id)).length;

/** Which of `secrets` signed a Standard Webhooks request (checked by hand: the library refuses timestamps a day off). */
function signers(req, secrets) {
  const content = `${req.headers['webhook-id']}.${req.headers['webhook-timestamp']}.${req.text}`;
  const sigs = req.headers['webhook-signature'].split(' ').map((s) => s.replace(/^v1,/, ''));
  const names = Object.entries(secrets).filter(([, s]) => sigs.includes(createHmac('sha256', Buffer.from(s.replace(/^whsec_/, ''), 'base64')).update(content).digest('base64'))).map(([n]) => n);
  assert.equal(names.length, sigs.length, 'every signature is by a known secret');
  return names.sort();
}

before(async () => {
  pm = await startCapture();
  rx = await startCapture();
  dns = await startDns({ zone: 'test' });
  w = await startWorker({ vars: {
    EMAIL_PROVIDER: 'postmark', POSTMARK_BASE_URL: pm.url, POSTMARK_SERVER_TOKEN: 'pm_test', DELIVERY_BACKOFF_SECONDS: '1',
    ALLOW_HTTP_LOOPBACK_WEBHOOKS: 'true', WEBHOOK_RETRY_SCALE: '36000', DOH_URL: dns.dohUrl,
  } });
});
after(async () => { await w?.stop(); await pm?.close(); await rx?.close(); await dns?.stop(); });

test('time-driven promises: a clock moved by hours, a day and a month, with alarms and queue messages that never fired', { timeout: 300_000 }, async () => {
  // ---- now -------------------------------------------------------------------------------
  const a = await w.sender('Clockwork Co', { mode: 'autonomous' });
  const gated = await w.call('/create_mailbox', { key: a.live, body: { address: `held@${a.account.default_domain}`, oversight_mode: 'gated_send' } });
  assert.equal(gated.status, 201, gated.text);
  const from2 = gated.body.address;
  let hung = 0;
  pm.on('/email', (entry, n) => (entry.json?.Subject === 'hang' ? (hung++, { status: 200, body: { ErrorCode: 0, MessageID: `pm_${n}` }, delayMs: 120_000 }) : { status: 200, body: { ErrorCode: 0, MessageID: `pm_${n}` } }));
  const send = (body, headers = {}, from = a.from) => w.call('/send_email', { key: a.live, body: { from, to: 'ada@example.com', text: 'x', ...body }, headers });

  // A hold whose alarm (1 h, real time) will never have fired when the clock is 2 h ahead.
  const held = await send({ subject: 'held', approval_ttl: '1h' }, {}, from2);
  assert.equal(held.body.status, 'pending_approval', held.text);
  // An idempotency record (kept 24 h) and an abandoned reservation of the same request under
  // another key: a request that died after reserving its key (same caller, same body).
  const keyed = { subject: 'keyed' };
  const first = await send(keyed, { 'Idempotency-Key': 'k-kept' });
  assert.equal(first.status, 202, first.text);
  await w.sql(`INSERT INTO idempotency (account_id, livemode, key, fingerprint, status_code, body, created_at)
               SELECT account_id, livemode, 'k-abandoned', fingerprint, NULL, NULL, created_at FROM idempotency WHERE key = 'k-kept'`);
  const waiting = await send(keyed, { 'Idempotency-Key': 'k-abandoned' });
  assert.equal(waiting.status, 409, `a fresh reservation is in progress: ${waiting.text}`);
  // A message 13 h ahead: its queue message is delayed 12 h of real time, so it is lost to the test.
  const later = await send({ subject: 'later', send_at: new Date(workerNow() + 13 * HOUR * 1000).toISOString() });
  assert.equal(later.body.status, 'scheduled', later.text);
  // Rate windows exist (rate limits are on in this worker).
  assert.ok((await w.sql('SELECT count(*) AS n FROM rate_windows'))[0].n > 0);
  // Webhooks: one endpoint rotated once (old and new both sign, for 24 h), one rotated twice
  // (the first secret retired at once).
  const hook = async (p) => (await w.call('/create_webhook', { key: a.live, body: { url: rx.url + p, events: ['email.sent'] } })).body;
  const rotate = async (h) => (await w.call('/rotate_webhook_secret', { key: a.live, body: { id: h.id } })).body.secret;
  const once = await hook('/once');
  const onceNew = await rotate(once);
  const twice = await hook('/twice');
  const twiceMid = await rotate(twice);
  const twiceNew = await rotate(twice);
  const ping = async (label) => {
    const r = await send({ subject: `ping ${label}` });
    const got = await eventually(async () => {
      const pick = (p) => rx.at(p).find((q) => q.json?.message_id === r.body.id);
      return pick('/once') && pick('/twice') && [pick('/once'), pick('/twice')];
    }, { ms: 30_000 });
    assert.ok(got, `${label}: both endpoints got email.sent`);
    return got;
  };
  const [o1, t1] = await ping('now');
  assert.deepEqual(signers(o1, { old: once.secret, new: onceNew }), ['new', 'old'], 'rotated once: both sign');
  assert.deepEqual(signers(t1, { first: twice.secret, mid: twiceMid, new: twiceNew }), ['mid', 'new'], 'rotated twice: the first secret no longer signs');
  // Two verified domains; one's records are then taken out of DNS.
  const domains = {};
  for (const name of ['kept-records.test', 'lost-records.test']) {
    const d = (await w.call('/create_domain', { key: a.live, body: { domain: name } })).body;
    domains[name] = d;
  }
  await dns.publish(Object.values(domains).flatMap((d) => d.records.map(({ type, name, value }) => ({ type, name, value }))));
  for (const d of Object.values(domains)) assert.equal((await w.call('/verify_domain', { key: a.live, body: { id: d.id } })).body.status, 'verified');
  await dns.publish(domains['kept-records.test'].records.map(({ type, name, value }) => ({ type, name, value })));
  const domainStatus = async (name) => (await w.call('/list_domains', { key: a.live })).body.domains.find((d) => d.domain === name).status;
  // Last (the provider timeout is 15 s): a Postmark call that never answers, and the worker dies
  // during it (the restart below kills it): a claim left `sending`.
  const hang = await send({ subject: 'hang' });
  assert.ok(await eventually(async () => hung === 1 && (await email(a.live, hang.body.id)).status === 'sending'), 'the hanging call was made');

  // ---- +2 hours --------------------------------------------------------------------------
  await travel(2 * HOUR);
  assert.equal((await email(a.live, held.body.id)).status, 'pending_approval', 'not expired before the cron');
  const takenOver = await send(keyed, { 'Idempotency-Key': 'k-abandoned' });
  assert.equal(takenOver.status, 202, `an abandoned reservation is taken over: ${takenOver.text}`);
  assert.notEqual(takenOver.body.id, first.body.id);
  const replayed = await send(keyed, { 'Idempotency-Key': 'k-kept' });
  assert.equal(replayed.body.id, first.body.id, 'a 2-hour-old record still replays');
  await w.cron();
  const expired = await settled(a.live, held.body.id, ['expired']);
  assert.ok(expired, 'the hold whose alarm never fired was expired by the cron');
  assert.ok(expired.timeline.some((t) => t.event === 'expired'));
  const late = await w.call('/decide_email', { key: a.oversight, body: { id: held.body.id, decision: 'approve' } });
  assert.equal(late.status, 409, `an expired hold cannot be approved: ${late.text}`);
  const interrupted = await settled(a.live, hang.body.id, ['failed', 'sent']);
  assert.equal(interrupted?.status, 'failed', 'the interrupted Postmark claim is failed, not retried');
  assert.match(interrupted.last_error, /^delivery_interrupted/);
  assert.equal(atProvider(hang.body.id), 1, 'Postmark got the interrupted message once');
  assert.equal(await domainStatus('lost-records.test'), 'failed', 'the re-check failed the domain whose records are gone');
  assert.equal(await domainStatus('kept-records.test'), 'verified');
  const olderRateWindows = async (cutoff) => (await w.sql(`SELECT count(*) AS n FROM rate_windows WHERE window_start < ${cutoff}`))[0].n;
  assert.ok((await w.sql('SELECT count(*) AS n FROM idempotency WHERE key = \'k-kept\''))[0].n === 1, 'not pruned before 24 h');

  // ---- +25 hours -------------------------------------------------------------------------
  await travel(25 * HOUR, { QUEUE_MAX_DELAY_SECONDS: '3' });
  assert.equal((await email(a.live, later.body.id)).status, 'scheduled');
  await w.cron();
  assert.equal((await w.sql('SELECT count(*) AS n FROM idempotency WHERE key = \'k-kept\''))[0].n, 0, 'day-old idempotency records pruned');
  assert.equal(await olderRateWindows(workerNow() - 2 * 60_000), 0, 'old rate windows pruned');
  const anew = await send(keyed, { 'Idempotency-Key': 'k-kept' });
  assert.equal(anew.status, 202);
  assert.notEqual(anew.body.id, first.body.id, 'after 24 h the key makes a new message');
  const scheduledSent = await settled(a.live, later.body.id, ['sent', 'failed']);
  assert.equal(scheduledSent?.status, 'sent', 'the due scheduled message whose queue message was lost is sent');
  assert.equal(atProvider(later.body.id), 1);
  const [o2] = await ping('a day later');
  assert.deepEqual(signers(o2, { old: once.secret, new: onceNew }), ['new'], 'after 24 h the old secret no longer signs');
  // A send_at 10 s ahead with queue hops of at most 3 s: it needs at least four hops.
  const dueAt = workerNow() + 10_000;
  const hopped = await send({ subject: 'hops', send_at: new Date(dueAt).toISOString() });
  assert.equal(hopped.body.status, 'scheduled');
  const hoppedSent = await settled(a.live, hopped.body.id, ['sent', 'failed'], 40_000);
  assert.equal(hoppedSent?.status, 'sent', 'reached in hops');
  const sentAt = Date.parse(hoppedSent.timeline.find((t) => t.event === 'sent').at);
  // The consumer takes a message due within the next second.
  assert.ok(sentAt >= dueAt - 1000, `sent ${dueAt - sentAt} ms before its send_at`);
  assert.equal(atProvider(hopped.body.id), 1);
  console.log(`time: a send_at 10 s ahead with 3-second hops was sent ${((sentAt - dueAt) / 1000).toFixed(1)} s after it`);

  // ---- +31 days --------------------------------------------------------------------------
  const eventsBefore = (await w.sql('SELECT count(*) AS n FROM events'))[0].n;
  const attemptsBefore = (await w.sql('SELECT count(*) AS n FROM webhook_deliveries'))[0].n;
  await travel(31 * 24 * HOUR);
  const fresh = await send({ subject: 'a month later' });
  assert.ok(await settled(a.live, fresh.body.id, ['sent']));
  await w.cron();
  const cutoff = workerNow() - 30 * 24 * HOUR * 1000;
  assert.equal((await w.sql(`SELECT count(*) AS n FROM events WHERE created_at < ${cutoff}`))[0].n, 0, 'events past their retention pruned');
  assert.equal((await w.sql(`SELECT count(*) AS n FROM webhook_deliveries d WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.id = d.event_id)`))[0].n, 0, 'their attempts too');
  const eventsAfter = (await w.sql('SELECT count(*) AS n FROM events'))[0].n;
  assert.ok(eventsBefore > 5 && attemptsBefore > 0, `${eventsBefore} events, ${attemptsBefore} attempts before`);
  assert.ok(eventsAfter >= 1 && eventsAfter < eventsBefore, `events ${eventsBefore} → ${eventsAfter}`);
  console.log(`time: a month on, the cron pruned the outbox from ${eventsBefore} events (${attemptsBefore} webhook attempts) to ${eventsAfter}`);
});
