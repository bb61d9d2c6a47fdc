// Hardening (issue 18): each attack of the security review performed against the real worker.
// Every test here fails without its defence; docs/security.md says which defence each one proves.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { request } from 'node:http';
import { startWorker, eventually } from './harness.mjs';
import { startCapture } from './capture.mjs';
import { startDns } from './dns.mjs';

const RESEND_WH = 'whsec_' + Buffer.from('resend-webhook-signing-key-32by').toString('base64');
let w, cap, dns;
before(async () => {
  cap = await startCapture();
  dns = await startDns({ zone: 'test' });
  w = await startWorker({ vars: {
    DOH_URL: dns.dohUrl,
    EMAIL_PROVIDER: 'resend', RESEND_BASE_URL: cap.url, RESEND_API_KEY: 're_x',
    POSTMARK_WEBHOOK_SECRET: 'pm-hook', RESEND_WEBHOOK_SECRET: RESEND_WH,
    MAX_KEYS_PER_ACCOUNT: '6', TRUSTED_AUTHSERV_IDS: 'mx.cloudflare.net',
  } });
});
after(async () => { await w?.stop(); await cap?.close(); await dns?.stop(); });

const err = (r, status, code) => {
  assert.equal(r.status, status, r.text);
  assert.equal(r.body?.error?.code, code, r.text);
};
const CRLF = '\r\n';
const mime = (key, headers, body = 'hello') => w.call('/inbound/mime', {
  key, headers: { 'Content-Type': 'message/rfc822' },
  raw: Object.entries(headers).map(([k, v]) => `${k}: ${v}`).join(CRLF) + CRLF + CRLF + body + CRLF,
});
let n = 0;
const mid = () => `<sec-${Date.now()}-${++n}@example.com>`;

/** A POST whose Host header the attacker chose (fetch will not let us set Host). */
function postWithHost(path, host, key, body) {
  const url = new URL(w.base + path);
  const data = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, path, method: 'POST', headers: {
      Host: host, Authorization: `Bearer ${key}`, 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data),
    } }, (res) => { let t = ''; res.on('data', (c) => { t += c; }); res.on('end', () => resolve({ status: res.statusCode, body: JSON.parse(t) })); });
    req.on('error', reject);
    req.end(data);
  });
}

test('1: approval and unsubscribe links come from PUBLIC_BASE_URL, never from the request Host', async () => {
  const a = await w.sender('Host Co', { mode: 'gated_send' });
  const held = await postWithHost('/send_email', 'evil.example', a.live, { from: a.from, to: 'ada@example.com', subject: 'Links', text: 'x' });
  assert.equal(held.status, 202);
  const note = await eventually(async () => (await w.sql(
    `SELECT b.body FROM message_blobs b JOIN messages m ON m.id = b.message_id WHERE m.kind = 'notification' AND b.kind = 'outbound' AND m.metadata LIKE '%${held.body.id}%'`))[0]);
  const text = JSON.parse(note.body).text;
  assert.ok(text.includes(`${w.base}/review?token=`), text);
  assert.ok(!text.includes('evil.example'), 'a link points at the Host the caller chose');
  const auto = await w.sender('Host Two', { mode: 'autonomous' });
  const promo = await postWithHost('/send_email', 'evil.example', auto.live, { from: auto.from, to: 'ada@example.com', subject: 'Promo', text: 'x', category: 'marketing' });
  const out = await eventually(async () => (await w.sql(`SELECT body FROM message_blobs WHERE message_id = '${promo.body.id}' AND kind = 'outbound'`))[0]);
  const unsub = JSON.parse(out.body).headers.find(([k]) => k === 'List-Unsubscribe')[1];
  assert.ok(unsub.includes(w.base) && !unsub.includes('evil.example'), unsub);
});

test('2: a key limited to some mailboxes cannot reach account-wide routes nor deliver to other mailboxes', async () => {
  const a = await w.sender('Limited Co', { mode: 'autonomous' });
  const other = (await w.call('/create_mailbox', { key: a.live, body: { address: `other@${a.account.default_domain}` } })).body;
  const lim = (await w.call('/create_api_key', { key: a.live, body: { name: 'limited', scopes: ['admin', 'read'], mailboxes: [a.from] } })).body.key;
  for (const [path, query] of [['/get_audit_log'], ['/verify_audit_log'], ['/export_audit_log'], ['/list_domains'], ['/list_suppressions']]) {
    err(await w.call(path, { key: lim, query }), 403, 'mailbox_limited_key');
  }
  for (const [path, body] of [['/add_suppression', { address: 'x@example.com' }], ['/remove_suppression', { address: 'x@example.com' }],
    ['/create_domain', { domain: 'limited.example' }], ['/delete_domain', { id: 'dom_00000000000000000000000000' }]]) {
    err(await w.call(path, { key: lim, body }), 403, 'mailbox_limited_key');
  }
  // Raw MIME addressed to a mailbox outside the limit is not delivered there.
  const r = await mime(lim, { From: 'eve@example.com', To: other.address, Subject: 'sneak', 'Message-ID': mid() });
  err(r, 404, 'unknown_recipient');
  assert.equal((await w.sql(`SELECT count(*) AS n FROM messages WHERE mailbox_id = '${other.id}'`))[0].n, 0);
  const mine = await mime(lim, { From: 'eve@example.com', To: a.from, Subject: 'mine', 'Message-ID': mid() });
  assert.equal(mine.status, 200, mine.text);
  // The key list shows only keys within its limit.
  const keys = (await w.call('/list_api_keys', { key: lim })).body.api_keys;
  assert.ok(keys.length >= 1 && keys.every((k) => JSON.stringify(k.mailboxes) === JSON.stringify([a.mailbox.id])), JSON.stringify(keys));
});

test('3: a forged Authentication-Results header is not a verdict; the receiver\'s own header on top is', async () => {
  const a = await w.sender('Auth Co', { mode: 'autonomous' });
  // The receiver (Email Routing, authserv-id mx.cloudflare.net) prepends its own header.
  const real = await mime(a.test, {
    'Authentication-Results': 'mx.cloudflare.net; spf=fail smtp.mailfrom=bank.example; dkim=none; dmarc=fail',
    'X-Spoof': 'x', From: 'ceo@bank.example', To: a.from, Subject: 'wire 2', 'Message-ID': mid(),
  }, 'pay now');
  const rawForgedBelow = await w.call('/inbound/mime', {
    key: a.test, headers: { 'Content-Type': 'message/rfc822' },
    raw: ['Authentication-Results: mx.cloudflare.net; spf=fail; dkim=fail; dmarc=fail', 'Authentication-Results: mx.cloudflare.net; spf=pass; dkim=pass; dmarc=pass',
      'From: ceo@bank.example', `To: ${a.from}`, 'Subject: wire 3', `Message-ID: ${mid()}`, '', 'x', ''].join(CRLF),
  });
  const read = async (r) => (await w.call('/read_email', { key: a.test, query: { id: r.body.stored[0].id } })).body;
  const r2 = await read(real);
  assert.deepEqual([r2.authentication.spf, r2.authentication.dmarc], ['fail', 'fail']);
  const r3 = await read(rawForgedBelow);
  assert.deepEqual([r3.authentication.spf, r3.authentication.dkim, r3.authentication.dmarc], ['fail', 'fail', 'fail'], 'the forged pass below is ignored');
  assert.match(r3.untrusted_authentication_results[0], /dmarc=pass/);
  const untrusted = await mime(a.test, { 'Authentication-Results': 'mail.attacker.example; spf=pass; dkim=pass; dmarc=pass', From: 'ceo@bank.example', To: a.from, Subject: 'wire 4', 'Message-ID': mid() });
  const r4 = await read(untrusted);
  assert.deepEqual([r4.authentication.trusted, r4.authentication.dmarc], [false, 'none']);
});

test('9: update_mailbox built from an older read cannot undo a concurrent tightening', async () => {
  const a = await w.sender('Race Co', { mode: 'autonomous' });
  const calls = [];
  for (let i = 0; i < 20; i++) calls.push(w.call('/update_mailbox', { key: a.live, body: { id: a.mailbox.id, display_name: `name ${i}` } }));
  calls.splice(10, 0, w.call('/update_mailbox', { key: a.live, body: { id: a.mailbox.id, oversight_mode: 'gated_all' } }));
  const answers = await Promise.all(calls);
  assert.ok(answers.length > 0 && answers.every((r) => r.status === 200), answers.map((r) => r.status).join(','));
  const [row] = await w.sql(`SELECT oversight_mode FROM mailboxes WHERE id = '${a.mailbox.id}'`);
  assert.equal(row.oversight_mode, 'gated_all', 'a concurrent display-name update wrote back the old mode');
});

test('10: an idempotency record is bound to the key that made it', async () => {
  const a = await w.sender('Idem Co', { mode: 'autonomous' });
  const other = (await w.call('/create_api_key', { key: a.live, body: { name: 'second agent', scopes: ['send'] } })).body.key;
  const body = { from: a.from, to: 'ada@example.com', subject: 'Once', text: 'x' };
  const first = await w.call('/send_email', { key: a.live, body, headers: { 'Idempotency-Key': 'shared-key-1' } });
  assert.equal(first.status, 202);
  const stolen = await w.call('/send_email', { key: other, body, headers: { 'Idempotency-Key': 'shared-key-1' } });
  err(stolen, 422, 'idempotency_key_reused');
  assert.ok(!stolen.text.includes(first.body.id), "another key's answer was replayed");
  const again = await w.call('/send_email', { key: a.live, body, headers: { 'Idempotency-Key': 'shared-key-1' } });
  assert.equal(again.headers.get('idempotent-replayed'), 'true');
});

test('11: a replayed Svix-signed Resend event or Postmark record is applied once', async () => {
  const a = await w.sender('Replay Co', { mode: 'autonomous' });
  // A fresh provider id per request: other messages are delivered meanwhile (approval requests).
  let nth = 0;
  cap.otherwise(() => ({ status: 200, body: { id: `re_replay_${++nth}` } }));
  const s = await w.call('/send_email', { key: a.live, body: { from: a.from, to: 'r@example.com', subject: 'x', text: 'y' } });
  const sent = await eventually(async () => {
    const m = (await w.call('/get_email', { key: a.live, query: { id: s.body.id } })).body;
    return m.status === 'sent' && m;
  }, { ms: 30_000 });
  assert.ok(sent, 'the message was not sent');
  const body = JSON.stringify({ type: 'email.delivered', data: { email_id: sent.provider_message_id, to: ['r@example.com'] } });
  const ts = Math.floor(Date.now() / 1000);
  const sig = createHmac('sha256', Buffer.from(RESEND_WH.slice(6), 'base64')).update(`msg_replay.${ts}.${body}`).digest('base64');
  const headers = { 'svix-id': 'msg_replay', 'svix-timestamp': String(ts), 'svix-signature': `v1,${sig}`, 'Content-Type': 'application/json' };
  assert.equal((await w.call('/provider_events/resend', { raw: body, headers })).status, 200);
  const replay = await w.call('/provider_events/resend', { raw: body, headers });
  assert.equal(replay.status, 200);
  assert.equal(replay.body.duplicate, true);
  const delivered = await w.sql(`SELECT count(*) AS n FROM events WHERE message_id = '${s.body.id}' AND type = 'email.delivered'`);
  assert.equal(delivered[0].n, 1, 'the replay emitted a second email.delivered');
  const basic = { Authorization: 'Basic ' + Buffer.from('postmark:pm-hook').toString('base64') };
  const record = { RecordType: 'SpamComplaint', ID: 777, MessageID: 'pm-1', Email: 'r@example.com', Metadata: { multimail_message_id: s.body.id } };
  assert.equal((await w.call('/provider_events/postmark', { body: record, headers: basic })).status, 200);
  assert.equal((await w.call('/provider_events/postmark', { body: record, headers: basic })).body.duplicate, true);
  const complained = await w.sql(`SELECT count(*) AS n FROM events WHERE message_id = '${s.body.id}' AND type = 'email.complained'`);
  assert.equal(complained[0].n, 1);
});

test('12: the audit entry of a refused call keeps at most a bounded excerpt of its input', async () => {
  const a = await w.sender('Big Co', { mode: 'autonomous' });
  const huge = 'x'.repeat(3_000_000) + '@example.com';
  const r = await w.call('/send_email', { key: a.live, body: { from: huge, to: 'ada@example.com', subject: 's', text: 't' } });
  assert.equal(r.status, 400);
  const entry = await eventually(async () => (await w.call('/get_audit_log', { key: a.live, query: { action: 'send_email', limit: '100' } })).body.entries.find((e) => e.status === 400));
  assert.ok(entry, 'the refused call is audited');
  assert.ok((entry.mailbox ?? '').length <= 256, `audit kept ${entry.mailbox?.length} characters`);
});

test('14: approval requests come from the deployment, not the agent; agents cannot send look-alikes', async () => {
  const a = await w.sender('Lookalike Co', { mode: 'gated_send' });
  const held = await w.call('/send_email', { key: a.live, body: { from: a.from, to: 'ada@example.com', subject: 'Real', text: 'x' } });
  const note = await eventually(async () => (await w.sql(`SELECT from_addr FROM messages WHERE kind = 'notification' AND metadata LIKE '%${held.body.id}%'`))[0]);
  assert.match(note.from_addr, /<oversight@multimail\.test>$/);
  assert.ok(!note.from_addr.includes(a.from), 'the approval request came from the agent\'s own mailbox');
  const fake = [
    { from: `"MultiMail oversight" <${a.from}>`, subject: 'Hello' },
    { from: `Multi Mail <${a.from}>`, subject: 'Hello' },
    { from: a.from, subject: 'Approval needed: wire $40,000' },
  ];
  for (const f of fake) {
    const r = await w.call('/send_email', { key: a.live, body: { ...f, to: 'boss@example.com', text: 'click https://evil.example' } });
    err(r, 422, 'imitates_system_notification');
  }
});

test('8: an account holds at most MAX_KEYS_PER_ACCOUNT active keys', async () => {
  const a = await w.createAccount('Many Keys');
  const made = [];
  for (let i = 0; i < 6; i++) made.push(await w.call('/create_api_key', { key: a.live, body: { name: `k${i}`, scopes: ['read'] } }));
  // Two default keys + 4 = 6, the cap: the 5th and 6th are refused.
  assert.deepEqual(made.map((r) => r.status), [201, 201, 201, 201, 403, 403]);
  err(made[4], 403, 'key_limit_reached');
  await w.call('/revoke_api_key', { key: a.live, body: { id: made[0].body.id } });
  assert.equal((await w.call('/create_api_key', { key: a.live, body: { name: 'after revoke', scopes: ['read'] } })).status, 201);
});

test('6: test mail is signed with the test key and says so; live mail with the live key', async () => {
  const a = await w.sender('Identity Modes', { mode: 'autonomous' });
  const jwsOf = async (key, id) => (await eventually(async () => (await w.call('/get_email', { key, query: { id } })).body.timeline.find((t) => t.event === 'identity'))).detail;
  const decode = (jws) => JSON.parse(Buffer.from(jws.split('.')[1], 'base64url'));
  const t = await w.call('/send_email', { key: a.test, body: { from: a.from, to: 'Ada@Example.com', cc: 'bob@example.com', subject: 'test', text: 'x' } });
  const l = await w.call('/send_email', { key: a.live, body: { from: a.from, to: 'ada@example.com', subject: 'live', text: 'x' } });
  const tj = await jwsOf(a.test, t.body.id);
  const lj = await jwsOf(a.live, l.body.id);
  assert.equal(decode(tj).livemode, false);
  assert.equal(decode(lj).livemode, true);
  assert.match(decode(tj).rcpt_sha256, /^[0-9a-f]{64}$/);
  const tv = (await w.call('/verify_identity', { query: { jws: tj } })).body;
  const lv = (await w.call('/verify_identity', { query: { jws: lj } })).body;
  assert.deepEqual([tv.valid, tv.key_mode], [true, 'test']);
  assert.deepEqual([lv.valid, lv.key_mode], [true, 'live']);
  assert.notEqual(tv.kid, lv.kid, 'test mail must not be signed with the production key');
});

test('7: with a secret unset, its feature refuses (503 not_configured) instead of deriving it from ADMIN_TOKEN', async () => {
  const bare = await startWorker({ vars: { IDENTITY_SIGNING_KEY: ' ', APPROVAL_LINK_SECRET: ' ', DOMAIN_KEY_SECRET: ' ' } });
  try {
    const a = await bare.sender('Unconfigured Co', { mode: 'autonomous' });
    const live = await bare.call('/send_email', { key: a.live, body: { from: a.from, to: 'ada@example.com', subject: 'x', text: 'x' } });
    err(live, 503, 'not_configured');
    assert.equal((await bare.sql(`SELECT count(*) AS n FROM messages WHERE account_id = '${a.account.id}' AND livemode = 1`))[0].n, 0, 'nothing stored');
    // Test mail still works: its key is set.
    assert.equal((await bare.call('/send_email', { key: a.test, body: { from: a.from, to: 'ada@example.com', subject: 'x', text: 'x' } })).status, 202);
    const jwks = (await bare.call('/.well-known/jwks.json')).body.keys;
    assert.deepEqual(jwks.map((k) => k.mm_mode), ['test'], 'no live key derived from ADMIN_TOKEN is published');
    err(await bare.call('/create_domain', { key: a.live, body: { domain: 'brand.example' } }), 503, 'not_configured');
    const review = await bare.call('/review', { query: { token: 'x' } });
    assert.equal(review.status, 503);
  } finally {
    await bare.stop();
  }
});

test('5: a webhook host name that resolves inside is refused before any connection; ports other than 443/80 are refused', async () => {
  const a = await w.sender('Rebind Co', { mode: 'autonomous' });
  err(await w.call('/create_webhook', { key: a.live, body: { url: 'https://hooks.example.com:8443/x', events: ['*'] } }), 400, 'invalid_request');
  // A public-looking name (accepted when the endpoint is made) that resolves to loopback.
  await dns.publish([{ type: 'A', name: 'rebind.test', value: '127.0.0.1' }, { type: 'AAAA', name: 'rebind.test', value: '::1' }]);
  const hook = await w.call('/create_webhook', { key: a.live, body: { url: 'https://rebind.test/hook', events: ['email.sent'] } });
  assert.equal(hook.status, 201, hook.text);
  const s = await w.call('/send_email', { key: a.live, body: { from: a.from, to: 'ada@example.com', subject: 'x', text: 'y' } });
  assert.equal(s.status, 202);
  // The delivery row exists (pending) before its first attempt; wait for the attempt's outcome.
  const attempt = await eventually(async () => {
    const d = (await w.call('/list_webhook_deliveries', { key: a.live, query: { webhook: hook.body.id } })).body.deliveries?.[0];
    return d && d.status !== 'pending' ? d : undefined;
  }, { ms: 30_000 });
  assert.ok(attempt, 'no delivery attempt was recorded');
  assert.match(attempt.error ?? '', /non-public address/, JSON.stringify(attempt));
});

test('8: the keys of one account share a rate limit as well as each having their own', async () => {
  const small = await startWorker({ vars: { ACCOUNT_RATE_LIMIT_PER_MINUTE: '8' } });
  try {
    // Stay inside one clock minute (the window).
    const intoMinute = Date.now() % 60_000;
    if (intoMinute > 45_000) await new Promise((r) => setTimeout(r, 60_000 - intoMinute + 200));
    const a = await small.createAccount('Shared Budget');
    const second = (await small.call('/create_api_key', { key: a.live, body: { name: 'second', scopes: ['read'] } })).body.key;
    const answers = [];
    for (let i = 0; i < 20; i++) answers.push(await small.call('/list_mailboxes', { key: i % 2 ? second : a.live }));
    const limited = answers.filter((r) => r.status === 429);
    assert.ok(answers[0].status === 200, answers[0].text);
    assert.ok(limited.length >= 10, `${limited.length} refused of 20`);
    for (const r of limited) {
      assert.equal(r.body.error.code, 'account_rate_limited');
      assert.ok(Number(r.headers.get('retry-after')) >= 1);
    }
    // Each key alone made at most 10 calls: far under its own limit (600).
  } finally {
    await small.stop();
  }
});

test('13: webhook secrets and Inngest event keys are sealed at rest, and still sign and deliver', async () => {
  const a = await w.sender('Sealed Co', { mode: 'autonomous' });
  // Neither name resolves in the test DNS: any event fanned out to them is refused before a
  // connection, so nothing leaves this machine.
  const std = await w.call('/create_webhook', { key: a.live, body: { url: 'https://hooks.test/in?token=abc123secret', events: ['*'] } });
  assert.equal(std.status, 201, std.text);
  const inn = await w.call('/create_webhook', { key: a.live, body: { url: 'https://inn.test/e/my-inngest-event-key-1234', events: ['*'], format: 'inngest' } });
  assert.equal(inn.status, 201, inn.text);
  const rows = await w.sql(`SELECT url, secret FROM webhook_endpoints WHERE id IN ('${std.body.id}', '${inn.body.id}')`);
  const dump = JSON.stringify(rows);
  for (const secret of [std.body.secret, 'abc123secret', 'my-inngest-event-key-1234']) {
    assert.ok(!dump.includes(secret), `stored in the clear: ${secret}`);
  }
  assert.ok(rows.length > 0 && rows.every((r) => r.url.startsWith('v1.')), dump);
  // Lists show neither; rotation still works on the sealed secret.
  const listed = JSON.stringify((await w.call('/list_webhooks', { key: a.live })).body);
  assert.ok(!listed.includes('abc123secret') && !listed.includes('my-inngest-event-key-1234') && !listed.includes(std.body.secret), listed);
  const rotated = await w.call('/rotate_webhook_secret', { key: a.live, body: { id: std.body.id } });
  assert.equal(rotated.status, 200, rotated.text);
  assert.ok(!JSON.stringify(await w.sql(`SELECT secret, previous_secret FROM webhook_endpoints WHERE id = '${std.body.id}'`)).includes(rotated.body.secret));
});

test('5b: a failed delivery keeps a short excerpt of the answer, without control characters', async () => {
  // A receiver answering 500 with raw control characters (a forged log line) and a long body.
  const { createServer } = await import('node:http');
  const recv = createServer((req, res) => {
    req.resume();
    req.on('end', () => { res.writeHead(500, { 'Content-Type': 'text/plain' }); res.end('line one\r\nFAKE-LOG-LINE: approved\u0007' + 'x'.repeat(5000)); });
  });
  await new Promise((r) => recv.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${recv.address().port}`;
  // A loopback receiver needs the development setting: a worker of its own.
  const dev = await startWorker({ vars: { ALLOW_HTTP_LOOPBACK_WEBHOOKS: 'true' } });
  try {
    const b = await dev.sender('Excerpt Dev', { mode: 'autonomous' });
    const hook = await dev.call('/create_webhook', { key: b.live, body: { url: url + '/hook', events: ['email.sent'] } });
    assert.equal(hook.status, 201, hook.text);
    await dev.call('/send_email', { key: b.live, body: { from: b.from, to: 'ada@example.com', subject: 'x', text: 'y' } });
    const d = await eventually(async () => (await dev.call('/list_webhook_deliveries', { key: b.live, query: { webhook: hook.body.id } })).body.deliveries?.find((x) => x.error), { ms: 30_000 });
    assert.ok(d, 'no failed attempt recorded');
    assert.match(d.error, /FAKE-LOG-LINE/);
    assert.ok(d.error.length <= 300, `${d.error.length} characters kept`);
    assert.ok(!/[\u0000-\u001f\u007f]/.test(d.error), JSON.stringify(d.error));
  } finally {
    await dev.stop();
    recv.closeAllConnections();
    await new Promise((r) => recv.close(r));
  }
});
