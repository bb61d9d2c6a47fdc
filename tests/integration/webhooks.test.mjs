// Events reach users, against the real worker: Standard Webhooks signatures checked with the
// reference `standardwebhooks` package (not our code), Inngest-format events posted to a local
// stand-in for Inngest's Event API, retries (3 failures then success: one recorded success),
// Retry-After, 410, giving up, SSRF refusals, isolation between accounts and modes, rotation,
// and an API call that never waits for a receiver.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import Ajv from 'ajv';
import { Webhook } from 'standardwebhooks';
import { startCapture } from './capture.mjs';
import { startWorker, eventually, ROOT } from './harness.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Answers are checked against our own openapi.json schemas.
const spec = JSON.parse(readFileSync(join(ROOT, 'openapi.json'), 'utf8'));
const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false });
for (const [n, s] of Object.entries(spec.components.schemas)) ajv.addSchema(s, `#/components/schemas/${n}`);
function conforms(name, value) {
  const v = ajv.getSchema(`#/components/schemas/${name}`);
  assert.ok(v(value), `${name}: ${JSON.stringify(v.errors)} in ${JSON.stringify(value)}`);
}

/** A receiver on 127.0.0.1 (the shared capture server): `on(path, fn)` scripts its answers. */
const startReceiver = () => startCapture();

let w, rx;
before(async () => {
  rx = await startReceiver();
  // The retry schedule divided by 36000: every scheduled wait becomes 1 s.
  w = await startWorker({ vars: { ALLOW_HTTP_LOOPBACK_WEBHOOKS: 'true', WEBHOOK_RETRY_SCALE: '36000' } });
});
after(async () => { await w?.stop(); await rx?.close(); });

let n = 0;
const path = (name) => `/hook/${name}-${++n}`;
const hook = (key, body) => w.call('/create_webhook', { key, body });
const send = (a, extra = {}, key = a.live) =>
  w.call('/send_email', { key, body: { from: a.from, to: 'ada@example.com', subject: 'Hello', text: 'Hi', metadata: { runId: 'run-1' }, ...extra } });
const deliveries = async (key, query) => (await w.call('/list_webhook_deliveries', { key, query })).body.deliveries;

test('a standard endpoint receives signed events that the standardwebhooks package verifies', async () => {
  const a = await w.sender('Signed Co', { mode: 'gated_send' });
  const p = path('signed');
  const created = await hook(a.live, { url: rx.url + p, events: ['email.pending', 'email.decided'] });
  assert.equal(created.status, 201, created.text);
  const h = created.body;
  assert.match(h.id, /^whk_/);
  assert.match(h.secret, /^whsec_[A-Za-z0-9+/]{43}=$/);
  assert.deepEqual([h.url, h.format, h.mailbox, h.events], [rx.url + p, 'standard', null, ['email.pending', 'email.decided']]);
  assert.ok(Date.parse(h.created_at));
  conforms('NewWebhook', h);

  const listed = await w.call('/list_webhooks', { key: a.live });
  assert.equal(listed.status, 200);
  assert.deepEqual(listed.body.webhooks.map((x) => x.id), [h.id]);
  assert.ok(!('secret' in listed.body.webhooks[0]), 'no secret in lists');
  conforms('Webhook', listed.body.webhooks[0]);
  assert.equal(listed.body.next_cursor, null);

  const r = await send(a);
  assert.equal(r.body.status, 'pending_approval');
  const [got] = await eventually(async () => { const x = rx.at(p); return x.length >= 1 && x; });
  assert.ok(got, 'the receiver got the event');
  const verified = new Webhook(h.secret).verify(got.text, got.headers);
  assert.equal(verified.type, 'email.pending');
  assert.equal(verified.message_id, r.body.id);
  assert.deepEqual(verified.metadata, { runId: 'run-1' });
  assert.equal(got.headers['webhook-id'], verified.event_id);
  assert.match(verified.event_id, /^evt_/);
  assert.throws(() => new Webhook(h.secret).verify(got.text.replace('run-1', 'run-2'), got.headers), 'a tampered body fails');
  const other = (await hook(a.live, { url: rx.url + path('other'), events: ['*'] })).body.secret;
  assert.throws(() => new Webhook(other).verify(got.text, got.headers), "another endpoint's secret fails");

  const [d] = await eventually(async () => { const x = await deliveries(a.live, { webhook: h.id }); return x.length && x[0].status === 'succeeded' && x; });
  assert.ok(d, 'the attempt is recorded');
  assert.equal(d.endpoint_id, h.id);
  assert.equal(d.event_id, verified.event_id);
  assert.deepEqual([d.attempt, d.status, d.response_code, d.error, d.next_retry_at], [1, 'succeeded', 200, null, null]);
  assert.equal(typeof d.latency_ms, 'number');
  conforms('WebhookDelivery', d);
  assert.ok(Date.parse(d.created_at));
  assert.deepEqual((await deliveries(a.live, { event_id: verified.event_id, id: h.id })).map((x) => x.id), [d.id]);
});

test('an inngest endpoint gets {name, data, id} at /e/<key>, and a decision it can wait for', async () => {
  const a = await w.sender('Inngest Co', { mode: 'gated_send' });
  const p = '/e/test-event-key-' + ++n;
  rx.on(p, () => ({ status: 200, body: { ids: ['01JINNGESTEVENTID'], status: 200 } }));
  const created = await hook(a.live, { url: rx.url + p, events: ['email.decided'], format: 'inngest' });
  assert.equal(created.status, 201, created.text);
  assert.equal(created.body.format, 'inngest');
  assert.equal(created.body.secret, null, 'Inngest endpoints are not signed');
  assert.equal(created.body.url, rx.url + p, 'the creation answer shows the whole URL, once');
  // The event key is the endpoint's credential: lists show its last four characters only.
  const shown = (await w.call('/list_webhooks', { key: a.live })).body.webhooks.find((x) => x.id === created.body.id);
  assert.ok(!shown.url.includes(p.slice(3)), shown.url);
  assert.ok(shown.url.endsWith(p.slice(-4)), shown.url);

  const r = await send(a);
  await sleep(1500);
  assert.equal(rx.at(p).length, 0, 'email.pending is not subscribed');
  const d = await w.call('/decide_email', { key: a.oversight, body: { id: r.body.id, decision: 'approve', reason: 'fine' } });
  assert.equal(d.status, 200, d.text);
  const [got] = await eventually(async () => { const x = rx.at(p); return x.length >= 1 && x; });
  assert.ok(got, 'Inngest got the event');
  assert.deepEqual(Object.keys(got.json).sort(), ['data', 'id', 'name']);
  assert.equal(got.json.name, 'multimail/email.decided');
  assert.equal(got.json.id, got.json.data.event_id);
  assert.equal(got.json.data.type, 'email.decided');
  assert.equal(got.json.data.message_id, r.body.id, "the waitForEvent expression `async.data.message_id == '<id>'` matches");
  assert.deepEqual([got.json.data.decision, got.json.data.reason], ['approved', 'fine']);
  assert.match(got.json.data.decided_by, /^key_/);
  assert.deepEqual(got.json.data.metadata, { runId: 'run-1' });
  assert.ok(!got.headers['webhook-signature']);
  const [rec] = await eventually(async () => { const x = await deliveries(a.live, { webhook: created.body.id }); return x.length && x[0].status === 'succeeded' && x; });
  assert.ok(rec);
  const rot = await w.call('/rotate_webhook_secret', { key: a.live, body: { id: created.body.id } });
  assert.equal(rot.status, 422);
  assert.equal(rot.body.error.code, 'webhook_has_no_secret');
});

test('a receiver that fails three times then succeeds gets the event once more; one success is recorded', async () => {
  const a = await w.sender('Flaky Co', { mode: 'gated_send' });
  const p = path('flaky');
  rx.on(p, (_, k) => (k <= 3 ? { status: 500, body: { error: `down ${k}` } } : { status: 200 }));
  const h = (await hook(a.live, { url: rx.url + p, events: ['email.pending'] })).body;
  await send(a);
  const got = await eventually(async () => { const x = rx.at(p); return x.length >= 4 && x; }, { ms: 30_000 });
  assert.ok(got, `4 requests expected, saw ${rx.at(p).length}`);
  await sleep(3000);
  assert.equal(rx.at(p).length, 4, 'nothing after the success');
  assert.equal(new Set(got.map((g) => g.headers['webhook-id'])).size, 1, 'one webhook-id across retries');
  assert.equal(new Set(got.map((g) => g.text)).size, 1, 'the same body each time');
  for (const g of got) new Webhook(h.secret).verify(g.text, g.headers);
  for (let i = 1; i < got.length; i++) assert.ok(got[i].at - got[i - 1].at >= 900, 'retries wait their (scaled) turn');

  const ds = await eventually(async () => { const x = await deliveries(a.live, { webhook: h.id }); return x.length === 4 && x.at(-1).status === 'succeeded' && x; });
  assert.ok(ds, JSON.stringify(await deliveries(a.live, { webhook: h.id })));
  assert.deepEqual(ds.map((d) => [d.attempt, d.status, d.response_code]), [[1, 'retrying', 500], [2, 'retrying', 500], [3, 'retrying', 500], [4, 'succeeded', 200]]);
  assert.equal(ds.filter((d) => d.status === 'succeeded').length, 1);
  assert.match(ds[0].error, /answered 500: .*down 1/);
  for (const d of ds) conforms('WebhookDelivery', d);
  assert.ok(Date.parse(ds[0].next_retry_at) >= Date.parse(ds[0].created_at));
  assert.deepEqual((await deliveries(a.live, { webhook: h.id, status: 'succeeded' })).map((d) => d.attempt), [4]);
  const [row] = await w.sql(`SELECT COUNT(*) AS n FROM webhook_deliveries WHERE endpoint_id = '${h.id}' AND status = 'succeeded'`);
  assert.equal(row.n, 1);
});

test('Retry-After is honoured', async () => {
  const a = await w.sender('Busy Co', { mode: 'gated_send' });
  const p = path('busy');
  rx.on(p, (_, k) => (k === 1 ? { status: 503, headers: { 'Retry-After': '4' } } : { status: 200 }));
  await hook(a.live, { url: rx.url + p, events: ['*'] });
  await send(a);
  const got = await eventually(async () => { const x = rx.at(p); return x.length >= 2 && x; }, { ms: 20_000 });
  assert.ok(got);
  assert.ok(got[1].at - got[0].at >= 3900, `waited ${got[1].at - got[0].at} ms for Retry-After: 4 (the scaled schedule says 1 s)`);
});

test('410 Gone disables the endpoint; later events are not sent to it', async () => {
  const a = await w.sender('Gone Co', { mode: 'gated_send' });
  const p = path('gone');
  rx.on(p, () => ({ status: 410 }));
  const h = (await hook(a.live, { url: rx.url + p, events: ['email.pending'] })).body;
  await send(a);
  const ds = await eventually(async () => { const x = await deliveries(a.live, { webhook: h.id }); return x.length && x[0].status === 'failed' && x; });
  assert.ok(ds);
  assert.deepEqual([ds[0].attempt, ds[0].status, ds[0].response_code], [1, 'failed', 410]);
  const [listed] = (await w.call('/list_webhooks', { key: a.live })).body.webhooks;
  assert.ok(listed.disabled_at, 'disabled');
  assert.match(listed.disabled_reason, /410/);
  await send(a);
  await sleep(3000);
  assert.equal(rx.at(p).length, 1, 'no request after 410');
  const audit = (await w.call('/get_audit_log', { key: a.live })).body.entries;
  assert.ok(audit.some((e) => e.action === 'webhook.disabled' && e.actor === 'system:webhooks'));
});

test('an endpoint that never recovers is tried on the whole schedule, then the delivery is failed', async () => {
  const a = await w.sender('Down Co', { mode: 'gated_send' });
  const p = path('down');
  rx.on(p, () => ({ status: 502 }));
  const h = (await hook(a.live, { url: rx.url + p, events: ['email.pending'] })).body;
  await send(a);
  const ds = await eventually(async () => { const x = await deliveries(a.live, { webhook: h.id }); return x.length === 8 && x[7].status === 'failed' && x; }, { ms: 45_000 });
  assert.ok(ds, JSON.stringify(await deliveries(a.live, { webhook: h.id })));
  assert.deepEqual(ds.map((d) => d.status), [...Array(7).fill('retrying'), 'failed']);
  assert.match(ds[7].error, /gave up after 8 attempts/);
  assert.equal(ds[7].next_retry_at, null);
  await sleep(2000);
  assert.equal(rx.at(p).length, 8);
});

test('private, loopback and local URLs are refused at creation', async () => {
  const a = await w.createAccount('SSRF Co');
  for (const url of [
    'https://10.0.0.1/x', 'https://192.168.0.10/x', 'https://172.16.0.1/x', 'https://169.254.169.254/latest/meta-data/',
    'https://[fd00::1]/x', 'https://[fe80::1]/x', 'https://[::ffff:10.0.0.1]/x', 'https://0x0a000001/x',
    'https://localhost/x', 'http://localhost:8787/x', 'http://10.0.0.1/x', 'http://example.com/x', 'ftp://example.com/x',
    'https://user:pw@example.com/x', 'not a url',
  ]) {
    const r = await hook(a.live, { url, events: ['*'] });
    assert.equal(r.status, 400, `${url}: ${r.text}`);
    assert.equal(r.body.error.field, 'url', url);
  }
  assert.equal((await hook(a.live, { url: 'https://hooks.example.com/in', events: ['*'] })).status, 201, 'a public https URL is fine');
  const bad = async (body, field) => {
    const r = await hook(a.live, body);
    assert.equal(r.status, 400, r.text);
    assert.equal(r.body.error.field, field);
  };
  await bad({ url: 'https://hooks.example.com/in', events: ['email.opened'] }, 'events');
  await bad({ url: 'https://hooks.example.com/in', events: [] }, 'events');
  await bad({ url: 'https://hooks.example.com/in', events: ['*'], format: 'svix' }, 'format');
  await bad({ url: 'https://example.com/api/inngest', events: ['*'], format: 'inngest' }, 'url');
  await bad({ url: 'https://hooks.example.com/in', events: ['*'], secret: 'mine' }, 'secret');
  await bad({ events: ['*'] }, 'url');
  const readKey = (await w.call('/create_api_key', { key: a.live, body: { name: 'reader', scopes: ['read'] } })).body.key;
  assert.equal((await hook(readKey, { url: 'https://hooks.example.com/in', events: ['*'] })).status, 403);
});

test('http://127.0.0.1 is refused when the deployment does not allow it', async () => {
  const plain = await startWorker();
  try {
    const acct = await plain.call('/admin/create_account', { key: plain.adminToken, body: { name: 'Prod Co', owner_email: 'owner@prod.example' } });
    const live = acct.body.api_keys.find((k) => k.livemode).key;
    const r = await plain.call('/create_webhook', { key: live, body: { url: rx.url + '/hook/x', events: ['*'] } });
    assert.equal(r.status, 400, r.text);
    assert.equal(r.body.error.field, 'url');
  } finally {
    await plain.stop();
  }
});

test("one account's events never reach another's endpoints, nor test events live ones, nor one mailbox's another's", async () => {
  const a = await w.sender('Iso A', { mode: 'gated_send' });
  const b = await w.sender('Iso B', { mode: 'gated_send' });
  const [pa, pb, pt, pm] = [path('iso-a'), path('iso-b'), path('iso-test'), path('iso-mailbox')];
  const ha = (await hook(a.live, { url: rx.url + pa, events: ['*'] })).body;
  const hb = (await hook(b.live, { url: rx.url + pb, events: ['*'] })).body;
  const ht = (await hook(a.test, { url: rx.url + pt, events: ['*'] })).body;
  assert.equal((await hook(a.live, { url: rx.url + pm, events: ['*'], mailbox: a.from })).body.mailbox, a.from);
  const second = await w.call('/create_mailbox', { key: a.live, body: { address: `second@${a.account.default_domain}`, oversight_mode: 'gated_send' } });
  assert.equal(second.status, 201, second.text);
  assert.equal((await hook(b.live, { url: rx.url + '/hook/nope', events: ['*'], mailbox: a.from })).status, 404, "another account's mailbox");

  const ra = await send(a);
  const r2 = await send({ ...a, from: second.body.address });
  assert.ok(await eventually(async () => rx.at(pa).length >= 2, { ms: 15_000 }), 'timed out waiting');
  await sleep(2000);
  assert.deepEqual(rx.at(pa).map((x) => x.json.message_id).sort(), [ra.body.id, r2.body.id].sort());
  assert.deepEqual(rx.at(pm).map((x) => x.json.message_id), [ra.body.id], 'the mailbox endpoint gets its mailbox only');
  assert.equal(rx.at(pb).length, 0, "B's endpoint got nothing of A's");
  assert.equal(rx.at(pt).length, 0, 'the test endpoint got no live events');

  const rt = await send(a, {}, a.test);
  assert.ok(await eventually(async () => rx.at(pt).length >= 1), 'timed out waiting');
  assert.deepEqual(rx.at(pt).map((x) => x.json.message_id), [rt.body.id]);
  assert.equal(rx.at(pt)[0].json.livemode, false);
  assert.equal(rx.at(pa).length, 2, 'the live endpoint got no test event');

  // Another account, or the other mode, sees none of it.
  assert.equal((await w.call('/delete_webhook', { key: b.live, body: { id: ha.id } })).status, 404);
  assert.equal((await w.call('/rotate_webhook_secret', { key: b.live, body: { id: ha.id } })).status, 404);
  const foreign = await w.call('/list_webhook_deliveries', { key: b.live, query: { webhook: ha.id } });
  assert.equal(foreign.status, 404);
  assert.equal(foreign.body.error.field, 'webhook');
  assert.equal((await w.call('/delete_webhook', { key: a.test, body: { id: ha.id } })).status, 404, 'a test key does not see live endpoints');
  assert.deepEqual((await w.call('/list_webhooks', { key: b.live })).body.webhooks.map((x) => x.id), [hb.id]);
  assert.deepEqual((await w.call('/list_webhooks', { key: a.test })).body.webhooks.map((x) => x.id), [ht.id]);
  assert.equal((await deliveries(b.live, {})).length, 0);
});

test('the API call that causes an event does not wait for a receiver that hangs', async () => {
  const a = await w.sender('Slow Co', { mode: 'gated_send' });
  const p = path('slow');
  rx.on(p, () => ({ status: 200, delayMs: 10_000 }));
  const h = (await hook(a.live, { url: rx.url + p, events: ['email.pending'] })).body;
  const t0 = Date.now();
  const r = await send(a);
  const took = Date.now() - t0;
  assert.equal(r.status, 202);
  assert.ok(took < 2000, `send_email took ${took} ms`);
  assert.ok(await eventually(async () => rx.at(p).length >= 1), 'timed out waiting');
  const t1 = Date.now();
  assert.equal((await send(a)).status, 202);
  assert.ok(Date.now() - t1 < 2000, 'a send while the receiver hangs is not slowed either');
  const [d] = await eventually(async () => { const x = await deliveries(a.live, { webhook: h.id }); return x.some((y) => y.status === 'succeeded') && x; }, { ms: 30_000 });
  assert.ok(d);
  const ok = (await deliveries(a.live, { webhook: h.id })).find((x) => x.status === 'succeeded');
  assert.ok(ok.latency_ms >= 9000, `latency ${ok.latency_ms}`);
});

test('a rotated secret: the old one is kept for 24 h and both sign the next delivery; the new one is shown once', async () => {
  const a = await w.sender('Rotate Co', { mode: 'gated_send' });
  const p = path('rotate');
  const h = (await hook(a.live, { url: rx.url + p, events: ['email.pending'] })).body;
  const rot = await w.call('/rotate_webhook_secret', { key: a.live, body: { id: h.id }, headers: { 'Idempotency-Key': 'rot-1' } });
  assert.equal(rot.status, 200, rot.text);
  assert.match(rot.body.secret, /^whsec_/);
  assert.notEqual(rot.body.secret, h.secret);
  conforms('RotatedWebhookSecret', rot.body);
  const until = Date.parse(rot.body.previous_secret_expires_at) - Date.now();
  assert.ok(until > 23.9 * 3600_000 && until <= 24 * 3600_000, 'the old secret signs for 24 h');
  const replay = await w.call('/rotate_webhook_secret', { key: a.live, body: { id: h.id }, headers: { 'Idempotency-Key': 'rot-1' } });
  assert.equal(replay.headers.get('idempotent-replayed'), 'true');
  assert.equal(replay.body.secret, null, 'a replay does not show the secret again');

  await send(a);
  const [got] = await eventually(async () => { const x = rx.at(p); return x.length >= 1 && x; });
  assert.equal(got.headers['webhook-signature'].split(' ').length, 2);
  assert.equal(new Webhook(rot.body.secret).verify(got.text, got.headers).type, 'email.pending');
  assert.equal(new Webhook(h.secret).verify(got.text, got.headers).type, 'email.pending');
});

test('a deleted endpoint gets nothing more; creation replays without the secret', async () => {
  const a = await w.sender('Delete Co', { mode: 'gated_send' });
  const p = path('deleted');
  const body = { url: rx.url + p, events: ['email.pending'] };
  const first = await w.call('/create_webhook', { key: a.live, body, headers: { 'Idempotency-Key': 'wh-1' } });
  const again = await w.call('/create_webhook', { key: a.live, body, headers: { 'Idempotency-Key': 'wh-1' } });
  assert.equal(again.status, 201);
  assert.equal(again.body.id, first.body.id);
  assert.equal(again.body.secret, null);
  assert.equal(again.body.secret_redacted, true);

  const del = await w.call('/delete_webhook', { key: a.live, body: { id: first.body.id } });
  assert.equal(del.status, 200, del.text);
  assert.deepEqual([del.body.id, del.body.deleted], [first.body.id, true]);
  conforms('DeletedWebhook', del.body);
  conforms('NewWebhook', again.body);
  assert.equal((await w.call('/delete_webhook', { key: a.live, body: { id: first.body.id } })).status, 404);
  assert.deepEqual((await w.call('/list_webhooks', { key: a.live })).body.webhooks, []);
  await send(a);
  await sleep(2500);
  assert.equal(rx.at(p).length, 0);
  const audit = (await w.call('/get_audit_log', { key: a.live })).body.entries.map((e) => e.action);
  for (const action of ['create_webhook', 'delete_webhook']) assert.ok(audit.includes(action), `${action} is audited`);
});

test('a key limited to some mailboxes manages only webhooks of those mailboxes', async () => {
  const a = await w.sender('Limited Co', { mode: 'gated_send' });
  const wide = (await hook(a.live, { url: 'https://hooks.example.com/all', events: ['*'] })).body;
  const lim = await w.call('/create_api_key', { key: a.live, body: { name: 'limited admin', scopes: ['admin'], mailboxes: [a.from] } });
  assert.equal(lim.status, 201, lim.text);
  const k = lim.body.key;
  const unscoped = await hook(k, { url: 'https://hooks.example.com/mine', events: ['*'] });
  assert.equal(unscoped.status, 403);
  assert.deepEqual([unscoped.body.error.code, unscoped.body.error.field], ['mailbox_scope_escalation', 'mailbox']);
  const mine = await hook(k, { url: 'https://hooks.example.com/mine', events: ['*'], mailbox: a.from });
  assert.equal(mine.status, 201, mine.text);
  assert.deepEqual((await w.call('/list_webhooks', { key: k })).body.webhooks.map((x) => x.id), [mine.body.id]);
  assert.equal((await w.call('/delete_webhook', { key: k, body: { id: wide.id } })).status, 404);
  assert.equal((await w.call('/list_webhook_deliveries', { key: k, query: { webhook: wide.id } })).status, 404);
  assert.equal((await w.call('/delete_webhook', { key: k, body: { id: mine.body.id } })).status, 200);
});
