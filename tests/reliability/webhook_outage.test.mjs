// Webhook receivers down for a simulated day (issue 17, scenario 3). `WEBHOOK_RETRY_SCALE=3600`
// makes an hour of the retry schedule a second (waits of 5 s, 5 min and 30 min become the
// 1-second floor, so the schedule's 27.6 hours take 30 s): one receiver is down for 24 s (a day),
// another for 12 s (half a day), while an agent keeps sending. Every event reaches both after
// they recover, each answered 2xx exactly once per endpoint by `webhook-id`; the outbox (events
// not yet fanned out, deliveries not yet ended) stays bounded during the outage and empties
// after it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startCapture } from '../integration/capture.mjs';
import { start, eventually, sleep } from './lib.mjs';

const DAY_MS = 24_000;
let w, cap, rx;
before(async () => {
  rx = await startCapture();
  ({ w, cap } = await start({ ALLOW_HTTP_LOOPBACK_WEBHOOKS: 'true', WEBHOOK_RETRY_SCALE: '3600' }));
});
after(async () => { await w?.stop(); await cap?.close(); await rx?.close(); });

test('receivers down for a simulated day get every event once after recovery; the outbox stays bounded', { timeout: 240_000 }, async () => {
  const a = await w.sender('Outage Co', { mode: 'autonomous' });
  const hooks = {};
  for (const [name, downMs] of [['day', DAY_MS], ['half', DAY_MS / 2]]) {
    const h = await w.call('/create_webhook', { key: a.live, body: { url: `${rx.url}/${name}`, events: ['*'] } });
    assert.equal(h.status, 201, h.text);
    hooks[name] = { id: h.body.id, downMs, ok: new Map(), refused: 0 };
  }
  const t0 = Date.now();
  for (const [name, h] of Object.entries(hooks)) {
    rx.on(`/${name}`, (entry) => {
      if (Date.now() - t0 < h.downMs) { h.refused++; return { status: 503, body: { down: true } }; }
      const id = entry.headers['webhook-id'];
      h.ok.set(id, (h.ok.get(id) ?? 0) + 1);
      return { status: 200, body: {} };
    });
  }
  // The agent keeps working through the outage: a send every 400 ms for the whole day.
  const sent = [];
  const sending = (async () => {
    while (Date.now() - t0 < DAY_MS) {
      const r = await w.call('/send_email', { key: a.live, body: { from: a.from, to: 'ada@example.com', subject: `during the outage ${sent.length}`, text: 'x' } });
      assert.equal(r.status, 202, r.text);
      sent.push(r.body.id);
      await sleep(400);
    }
  })();
  // The outbox, sampled while the receivers are down.
  const acct = a.account.id;
  const samples = [];
  while (Date.now() - t0 < DAY_MS + 2000) {
    const [row] = await w.sql(`SELECT
        (SELECT count(*) FROM events WHERE account_id = '${acct}') AS events,
        (SELECT count(*) FROM events WHERE account_id = '${acct}' AND dispatched_at IS NULL) AS undispatched,
        (SELECT count(*) FROM (SELECT 1 FROM webhook_deliveries GROUP BY endpoint_id, event_id HAVING sum(status IN ('succeeded', 'failed')) = 0)) AS in_flight,
        (SELECT count(*) FROM webhook_deliveries) AS attempts,
        (SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM webhook_deliveries GROUP BY endpoint_id, event_id)) AS most_attempts`);
    samples.push({ at: Date.now() - t0, ...row });
    await sleep(1000);
  }
  await sending;
  assert.ok(sent.length >= 40, `only ${sent.length} sends during the outage`);
  assert.ok(hooks.day.refused > 0 && hooks.half.refused > 0, 'the receivers were down');

  // After recovery: every event of the account reaches each endpoint, answered 2xx exactly once.
  // The events since the endpoints exist (an endpoint gets only those).
  const events = async () => (await w.sql(`SELECT id FROM events WHERE account_id = '${acct}'
      AND created_at >= (SELECT max(created_at) FROM webhook_endpoints WHERE account_id = '${acct}')`)).map((r) => r.id);
  const allDelivered = await eventually(async () => {
    const ids = await events();
    return ids.length >= sent.length && Object.values(hooks).every((h) => ids.every((id) => h.ok.has(id))) && ids;
  }, { ms: 90_000, every: 1000 });
  const recoveredMs = Date.now() - t0 - DAY_MS;
  const ids = await events();
  for (const [name, h] of Object.entries(hooks)) {
    const missing = ids.filter((id) => !h.ok.has(id));
    assert.deepEqual(missing, [], `${name}: events never delivered`);
    const twice = [...h.ok].filter(([, n]) => n > 1);
    assert.deepEqual(twice, [], `${name}: delivered more than once`);
    assert.deepEqual([...h.ok.keys()].filter((id) => !ids.includes(id)), [], `${name}: an event that is not the account's`);
  }
  assert.ok(allDelivered);
  // Nothing is left in flight, no delivery gave up, and no event took more than the schedule's attempts.
  await sleep(2000);
  const [end] = await w.sql(`SELECT
      (SELECT count(*) FROM (SELECT 1 FROM webhook_deliveries GROUP BY endpoint_id, event_id HAVING sum(status IN ('succeeded', 'failed')) = 0)) AS in_flight,
      (SELECT count(*) FROM webhook_deliveries WHERE status = 'succeeded') AS succeeded,
      (SELECT count(*) FROM webhook_deliveries WHERE status = 'failed') AS failed,
      (SELECT count(*) FROM webhook_deliveries) AS attempts,
      (SELECT count(*) FROM events WHERE dispatched_at IS NULL) AS undispatched`);
  assert.equal(end.in_flight, 0, 'deliveries left unfinished');
  assert.equal(end.failed, 0, 'a delivery gave up');
  assert.equal(end.undispatched, 0);
  assert.equal(end.succeeded, ids.length * 2, 'one success per event and endpoint');
  const peak = (k) => Math.max(...samples.map((s) => s[k]));
  // Bounded: never more unfinished deliveries than (event, endpoint) pairs; never more attempts
  // for one than the schedule has; the outbox itself is fanned out while the receivers are down.
  for (const s of samples) assert.ok(s.in_flight <= s.events * 2, `${s.in_flight} in flight for ${s.events} events`);
  assert.ok(peak('most_attempts') <= 8 && end.attempts <= ids.length * 2 * 8);
  assert.ok(peak('undispatched') <= 5, `events waited to be fanned out: ${peak('undispatched')}`);
  console.log(`webhook outage: ${sent.length} sends, ${ids.length} events; receivers refused ${hooks.day.refused} + ${hooks.half.refused} attempts; ` +
    `peak in flight ${peak('in_flight')}, peak undispatched ${peak('undispatched')}, most attempts for one delivery ${peak('most_attempts')}; ` +
    `${end.attempts} attempts in all for ${end.succeeded} deliveries; everything delivered ${(recoveredMs / 1000).toFixed(1)} s after the day ended`);
});

test('an attempt that cannot be processed ends on the events dead-letter queue, recorded as failed; other endpoints are unaffected', { timeout: 120_000 }, async () => {
  const a = await w.sender('Broken Secret Co', { mode: 'autonomous' });
  const make = async (name) => (await w.call('/create_webhook', { key: a.live, body: { url: `${rx.url}/${name}`, events: ['email.sent'] } })).body;
  const broken = await make('broken');
  const fine = await make('fine');
  // A storage fault the consumer cannot get past: the endpoint's sealed secret no longer opens.
  await w.sql(`UPDATE webhook_endpoints SET secret = 'v1.not-a-sealed-value' WHERE id = '${broken.id}'`);
  const r = await w.call('/send_email', { key: a.live, body: { from: a.from, to: 'ada@example.com', subject: 'dlq', text: 'x' } });
  assert.equal(r.status, 202, r.text);
  // The queue retries it 10 times (2 s apart here: DELIVERY_BACKOFF_SECONDS=1), then the DLQ's consumer records it.
  const started = Date.now();
  // (Read from D1: the API itself answers 500 for an endpoint whose sealed values do not open.)
  const rows = await eventually(async () => {
    const x = await w.sql(`SELECT status, error, attempt FROM webhook_deliveries WHERE endpoint_id = '${broken.id}'`);
    return x.length && x;
  }, { ms: 90_000, every: 1000 });
  assert.ok(rows, 'the dead-letter consumer never recorded the attempt');
  assert.equal(rows.length, 1);
  assert.equal(rows[0].status, 'failed');
  assert.match(rows[0].error, /^gave up: this attempt could not be processed/);
  assert.equal(rx.at('/broken').length, 0, 'nothing was sent with a secret that does not open');
  const ok = await eventually(async () => rx.at('/fine').some((q) => q.json?.message_id === r.body.id));
  assert.ok(ok, 'the other endpoint got the event');
  console.log(`webhook outage: the unprocessable attempt reached the events dead-letter queue and was recorded failed after ${((Date.now() - started) / 1000).toFixed(1)} s`);
});
