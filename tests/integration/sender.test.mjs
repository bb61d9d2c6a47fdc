// Verified senders, the parts that live in the worker: the MultiMail-Identity header (checked
// with the `jose` library against the served JWKS), unsubscribe and suppression, and provider
// feedback (Postmark bounces, Svix-signed Resend events).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import * as jose from 'jose';
import { startWorker, eventually } from './harness.mjs';
import { startCapture } from './capture.mjs';

const RESEND_WH = 'whsec_' + Buffer.from('resend-webhook-signing-key-32by').toString('base64');
let w, cap;
before(async () => {
  cap = await startCapture();
  w = await startWorker({ vars: {
    EMAIL_PROVIDER: 'resend', RESEND_BASE_URL: cap.url, RESEND_API_KEY: 're_x',
    POSTMARK_WEBHOOK_SECRET: 'pm-hook', RESEND_WEBHOOK_SECRET: RESEND_WH,
  } });
});
after(async () => { await w?.stop(); await cap?.close(); });

const bodyHash = (text, html) => createHash('sha256').update(Buffer.concat([Buffer.from(text ?? ''), Buffer.from([0]), Buffer.from(html ?? '')])).digest('hex');
const sentRequest = async (id) => eventually(() => cap.requests.find((r) => r.json?.headers?.['X-MultiMail-Message-Id'] === id));

test('every outbound message carries a MultiMail-Identity JWS that jose verifies against /.well-known/jwks.json', async () => {
  const a = await w.sender('Identity Co', { mode: 'gated_send' });
  const r = await w.call('/send_email', { key: a.live, body: { from: a.from, to: 'ada@example.com', subject: 'Signed', text: 'plain body', html: '<p>rich body</p>' } });
  await w.call('/decide_email', { key: a.oversight, body: { id: r.body.id, decision: 'approve' } });
  const req = await sentRequest(r.body.id);
  const jws = req.json.headers['MultiMail-Identity'];
  assert.ok(jws, 'the provider request carries the header');

  const jwks = (await w.call('/.well-known/jwks.json')).body;
  assert.equal(jwks.keys[0].alg, 'ES256');
  assert.ok(!('d' in jwks.keys[0]), 'no private part is published');
  const { payload, protectedHeader } = await jose.compactVerify(jws, jose.createLocalJWKSet(jwks));
  assert.equal(protectedHeader.alg, 'ES256');
  const claims = JSON.parse(new TextDecoder().decode(payload));
  assert.equal(claims.sub, a.from);
  assert.equal(claims.mailbox, a.from);
  assert.equal(claims.account, a.account.id);
  assert.equal(claims.oversight_mode, 'gated_send');
  assert.equal(claims.decision, 'approved');
  assert.match(claims.approved_by, /^key_/);
  assert.equal(claims.message_id, r.body.id);
  assert.equal(claims.body_sha256, bodyHash(req.json.text, req.json.html), 'the body as delivered matches');
  // The hash is the worker's, of this body: another message's claims carry its own body's hash.
  const r2 = await w.call('/send_email', { key: a.live, body: { from: a.from, to: 'ada@example.com', subject: 'Signed', text: 'plain body, altered', html: '<p>rich body</p>' } });
  await w.call('/decide_email', { key: a.oversight, body: { id: r2.body.id, decision: 'approve' } });
  const req2 = await sentRequest(r2.body.id);
  const claims2 = JSON.parse(new TextDecoder().decode((await jose.compactVerify(req2.json.headers['MultiMail-Identity'], jose.createLocalJWKSet(jwks))).payload));
  assert.equal(claims2.body_sha256, bodyHash(req2.json.text, req2.json.html));
  assert.notEqual(claims2.body_sha256, claims.body_sha256, 'an altered body has another hash in its claims');
  const [h, p, s] = jws.split('.');
  const forged = Buffer.from(JSON.stringify({ ...claims, sub: 'ceo@' + a.account.default_domain })).toString('base64url');
  await assert.rejects(jose.compactVerify(`${h}.${forged}.${s}`, jose.createLocalJWKSet(jwks)));

  const shown = await w.call('/verify_identity', { query: { jws } });
  assert.equal(shown.body.valid, true);
  assert.equal(shown.body.claims.message_id, r.body.id);
  const bad = await w.call('/verify_identity', { query: { jws: `${h}.${forged}.${s}` } });
  assert.equal(bad.body.valid, false);
  assert.match(bad.body.reason, /signature/);
  assert.equal((await w.call('/verify_identity')).status, 400);
});

test('an autonomous send says decision not_required', async () => {
  const a = await w.sender('Auto Identity Co', { mode: 'autonomous' });
  const r = await w.call('/send_email', { key: a.live, body: { from: a.from, to: 'ada@example.com', subject: 'x', text: 'y' } });
  const req = await sentRequest(r.body.id);
  const claims = jose.decodeJwt(req.json.headers['MultiMail-Identity']);
  assert.equal(claims.decision, 'not_required');
  assert.equal(claims.approved_by, null);
});

test('marketing mail carries one-click unsubscribe; unsubscribing suppresses; sends skip suppressed recipients', async () => {
  const a = await w.sender('Newsletter Co', { mode: 'autonomous' });
  assert.equal((await w.call('/send_email', { key: a.live, body: { from: a.from, to: ['a@example.com', 'b@example.com'], subject: 'x', text: 'y', category: 'marketing' } })).status, 400);
  const r = await w.call('/send_email', { key: a.live, body: { from: a.from, to: 'reader@example.com', subject: 'News', text: 'Read me', category: 'marketing' } });
  assert.equal(r.status, 202, r.text);
  const req = await sentRequest(r.body.id);
  const lu = req.json.headers['List-Unsubscribe'];
  assert.equal(req.json.headers['List-Unsubscribe-Post'], 'List-Unsubscribe=One-Click');
  const https = lu.match(/<(http[^>]+)>/)[1];
  assert.match(lu, /<mailto:unsubscribe@/);
  const path = new URL(https).pathname;
  const page = await w.call(path);
  assert.equal(page.status, 200);
  assert.match(page.text, /reader@example\.com/);
  assert.equal((await w.call('/list_suppressions', { key: a.live })).body.suppressions.length, 0, 'GET does not unsubscribe');
  const tampered = await w.call(path.slice(0, -2) + 'xx', { raw: 'List-Unsubscribe=One-Click', headers: { 'Content-Type': 'application/x-www-form-urlencoded' } });
  assert.equal(tampered.status, 400);
  const one = await w.call(path, { raw: 'List-Unsubscribe=One-Click', headers: { 'Content-Type': 'application/x-www-form-urlencoded' } });
  assert.equal(one.status, 200);
  const list = (await w.call('/list_suppressions', { key: a.live })).body.suppressions;
  assert.deepEqual(list.map((s) => [s.address, s.reason, s.source]), [['reader@example.com', 'unsubscribe', r.body.id]]);

  const refused = await w.call('/send_email', { key: a.live, body: { from: a.from, to: 'Reader <READER@example.com>', subject: 'again', text: 'x' } });
  assert.equal(refused.status, 422);
  assert.equal(refused.body.error.code, 'recipient_suppressed');
  cap.reset();
  const partial = await w.call('/send_email', { key: a.live, body: { from: a.from, to: ['reader@example.com', 'other@example.com'], subject: 'both', text: 'x' } });
  assert.equal(partial.status, 202);
  assert.deepEqual(partial.body.suppressed, ['reader@example.com']);
  assert.deepEqual((await sentRequest(partial.body.id)).json.to, ['other@example.com']);

  // Sending to a suppressed address again weakens a protection: the key's request waits for a
  // human; until one approves, the address stays suppressed.
  const asked = await w.call('/remove_suppression', { key: a.live, body: { address: 'reader@example.com' } });
  assert.equal(asked.status, 202, asked.text);
  assert.equal(asked.body.removed, false);
  assert.equal(asked.body.change.kind, 'remove_suppression');
  assert.equal((await w.call('/list_suppressions', { key: a.live })).body.suppressions.length, 1);
  const decided = await w.call('/decide_email', { key: a.oversight, body: { id: asked.body.change.id, decision: 'approve' } });
  assert.equal(decided.status, 200, decided.text);
  assert.equal((await w.call('/remove_suppression', { key: a.live, body: { address: 'reader@example.com' } })).status, 404);
  assert.equal((await w.call('/send_email', { key: a.live, body: { from: a.from, to: 'reader@example.com', subject: 'back', text: 'x' } })).status, 202);
  const manual = await w.call('/add_suppression', { key: a.live, body: { address: 'Blocked@Example.com' } });
  assert.equal(manual.status, 201);
  assert.equal(manual.body.reason, 'manual');
  assert.equal((await w.call('/add_suppression', { key: a.live, body: { address: 'not an address' } })).status, 400);
  const other = await w.sender('Other Newsletter');
  assert.equal((await w.call('/list_suppressions', { key: other.live })).body.suppressions.length, 0, 'per account');
});

test('Postmark bounce and Svix-signed Resend events update the message, emit events and suppress', async () => {
  const a = await w.sender('Feedback Co', { mode: 'autonomous' });
  const send = async (to) => {
    cap.otherwise(() => ({ status: 200, body: { id: `re_${to}` } }));
    const r = await w.call('/send_email', { key: a.live, body: { from: a.from, to, subject: 'x', text: 'y' } });
    assert.ok(await eventually(async () => (await w.call('/get_email', { key: a.live, query: { id: r.body.id } })).body.status === 'sent'), 'timed out waiting');
    return r.body.id;
  };
  const bounced = await send('gone@example.com');
  const basic = (p) => ({ Authorization: 'Basic ' + Buffer.from(`postmark:${p}`).toString('base64') });
  const bounce = { RecordType: 'Bounce', Type: 'HardBounce', TypeCode: 1, MessageID: 'pm-x', Email: 'gone@example.com', Description: 'The server was unable to deliver your message', Metadata: { multimail_message_id: bounced } };
  assert.equal((await w.call('/provider_events/postmark', { body: bounce, headers: basic('wrong') })).status, 401);
  const pb = await w.call('/provider_events/postmark', { body: bounce, headers: basic('pm-hook') });
  assert.equal(pb.status, 200, pb.text);
  const m = (await w.call('/get_email', { key: a.live, query: { id: bounced } })).body;
  assert.equal(m.status, 'bounced');
  const ev = await w.sql(`SELECT type FROM events WHERE message_id = '${bounced}' ORDER BY created_at`);
  assert.ok(ev.some((e) => e.type === 'email.bounced'));
  const sup = (await w.call('/list_suppressions', { key: a.live, query: { reason: 'hard_bounce' } })).body.suppressions;
  assert.deepEqual(sup.map((s) => s.address), ['gone@example.com']);

  const delivered = await send('happy@example.com');
  const sign = (body, { id = 'msg_svix1', ts = Math.floor(Date.now() / 1000) } = {}) => {
    const key = Buffer.from(RESEND_WH.slice(6), 'base64');
    const sig = createHmac('sha256', key).update(`${id}.${ts}.${body}`).digest('base64');
    return { 'svix-id': id, 'svix-timestamp': String(ts), 'svix-signature': `v1,${sig}`, 'Content-Type': 'application/json' };
  };
  const body = JSON.stringify({ type: 'email.delivered', created_at: new Date().toISOString(), data: { email_id: 're_happy@example.com', to: ['happy@example.com'] } });
  assert.equal((await w.call('/provider_events/resend', { raw: body, headers: { ...sign(body), 'svix-signature': 'v1,AAAA' } })).status, 401);
  assert.equal((await w.call('/provider_events/resend', { raw: body, headers: sign(body, { ts: Math.floor(Date.now() / 1000) - 3600 }) })).status, 401, 'old timestamps are refused');
  const ok = await w.call('/provider_events/resend', { raw: body, headers: sign(body) });
  assert.equal(ok.status, 200, ok.text);
  assert.equal((await w.call('/get_email', { key: a.live, query: { id: delivered } })).body.status, 'delivered');
  const complaint = JSON.stringify({ type: 'email.complained', created_at: new Date().toISOString(), data: { email_id: 're_happy@example.com', to: ['happy@example.com'] } });
  assert.equal((await w.call('/provider_events/resend', { raw: complaint, headers: sign(complaint, { id: 'msg_svix2' }) })).status, 200);
  assert.equal((await w.call('/get_email', { key: a.live, query: { id: delivered } })).body.status, 'complained');
  const reasons = (await w.call('/list_suppressions', { key: a.live })).body.suppressions.map((s) => [s.address, s.reason]);
  assert.deepEqual(reasons, [['gone@example.com', 'hard_bounce'], ['happy@example.com', 'complaint']]);
  const unknown = JSON.stringify({ type: 'email.delivered', data: { email_id: 're_nope', to: ['x@example.com'] } });
  assert.equal((await w.call('/provider_events/resend', { raw: unknown, headers: sign(unknown, { id: 'msg_svix3' }) })).body.ignored, true);
});
