// send_email end to end: validation, idempotency, the delivery queue and the providers'
// published request formats, against the real worker under wrangler dev.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import YAML from 'yaml';
import Ajv from 'ajv';
import { startWorker, eventually, ROOT } from './harness.mjs';
import { startCapture } from './capture.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Resend's published OpenAPI (vendored in tests/fixtures/resend/, MIT): the request schema of POST /emails.
function resendSchema() {
  const spec = YAML.parse(readFileSync(join(ROOT, 'tests', 'fixtures', 'resend', 'openapi.yaml'), 'utf8'));
  const ref = spec.paths['/emails'].post.requestBody.content['application/json'].schema.$ref;
  const name = ref.split('/').pop();
  const ajv = new Ajv({ strict: false, allErrors: true });
  ajv.addFormat('binary', true);
  for (const [n, s] of Object.entries(spec.components.schemas)) ajv.addSchema(s, `#/components/schemas/${n}`);
  return ajv.getSchema(`#/components/schemas/${name}`);
}

// An autonomous mailbox (its mode change approved by an oversight key): sends go out at once.
const setup = (w, name) => w.sender(name, { mode: 'autonomous' });

const waitStatus = (w, key, id, status, ms = 20_000) =>
  eventually(async () => {
    const r = await w.call('/get_email', { key, query: { id } });
    return r.body?.status === status && r.body;
  }, { ms });

describe('with Resend configured', () => {
  let w, cap, acct;
  before(async () => {
    cap = await startCapture();
    w = await startWorker({ vars: { EMAIL_PROVIDER: 'resend', RESEND_BASE_URL: cap.url, RESEND_API_KEY: 're_test_secret', DELIVERY_BACKOFF_SECONDS: '1', DELIVERY_MAX_ATTEMPTS: '3' } });
    acct = await setup(w, 'Resend Co');
  });
  after(async () => { await w?.stop(); await cap?.close(); });

  test('a test key is recorded in the sandbox and never reaches the provider', async () => {
    cap.reset();
    const r = await w.call('/send_email', { key: acct.test, body: { from: acct.from, to: 'ada@example.com', subject: 'Sandboxed', text: 'hi' } });
    assert.equal(r.status, 202, r.text);
    const done = await waitStatus(w, acct.test, r.body.id, 'sent');
    assert.equal(done.provider, 'sandbox');
    await sleep(500);
    assert.equal(cap.requests.length, 0, 'nothing reached the provider');
  });

  test('a live send reaches Resend once, valid against its published POST /emails schema', async () => {
    cap.reset();
    const validate = resendSchema();
    const r = await w.call('/send_email', {
      key: acct.live,
      headers: { 'Idempotency-Key': 'resend-shape-1' },
      body: { from: `Agent <${acct.from}>`, to: ['ada@example.com', 'Bob <bob@example.com>'], cc: 'c@example.com', bcc: ['d@example.com'],
        reply_to: 'replies@example.com', subject: 'Quarterly report', text: 'See attached', html: '<p>See attached</p>',
        headers: { 'X-Campaign': 'q4' }, attachments: [{ filename: 'r.txt', content_type: 'text/plain', content_base64: 'aGVsbG8=' }],
        metadata: { runId: 'run-1' } },
    });
    assert.equal(r.status, 202, r.text);
    const done = await waitStatus(w, acct.live, r.body.id, 'sent');
    assert.equal(cap.requests.length, 1);
    const req = cap.requests[0];
    assert.equal(req.method, 'POST');
    assert.equal(req.path, '/emails');
    assert.equal(req.headers.authorization, 'Bearer re_test_secret');
    assert.equal(req.headers['idempotency-key'], r.body.id, 'Resend dedupes by our message id');
    assert.ok(validate(req.json), JSON.stringify(validate.errors));
    assert.deepEqual(req.json.to, ['ada@example.com', 'Bob <bob@example.com>']);
    assert.deepEqual(req.json.bcc, ['d@example.com']);
    assert.equal(req.json.attachments[0].content, 'aGVsbG8=');
    assert.equal(req.json.headers['X-Campaign'], 'q4');
    assert.equal(done.provider, 'resend');
    assert.equal(done.provider_message_id, 'prov_1');
    const events = await w.sql(`SELECT type, payload FROM events WHERE message_id = '${r.body.id}'`);
    assert.deepEqual(events.map((e) => e.type), ['email.sent']);
    const payload = JSON.parse(events[0].payload);
    assert.equal(payload.message_id, r.body.id);
    assert.deepEqual(payload.metadata, { runId: 'run-1' });
    assert.match(payload.event_id, /^evt_/);
    assert.equal(payload.livemode, true);
  });

  test('500 twice then 200: one sent, exactly one successful provider call', async () => {
    cap.reset();
    cap.answer([{ status: 500, body: { message: 'boom' } }, { status: 503, body: { message: 'busy' } }]);
    const r = await w.call('/send_email', { key: acct.live, body: { from: acct.from, to: 'ada@example.com', subject: 'Flaky', text: 'x' } });
    const done = await waitStatus(w, acct.live, r.body.id, 'sent', 30_000);
    assert.ok(done, 'eventually sent');
    assert.equal(cap.requests.length, 3);
    assert.equal(done.attempts, 3);
    const attempts = done.timeline.filter((t) => t.event === 'attempt');
    assert.equal(attempts.length, 3);
    assert.match(attempts[0].detail, /500/);
    assert.match(attempts[2].detail, /accepted/);
  });

  test('a 4xx from the provider fails at once with its reason and emits email.failed', async () => {
    cap.reset();
    cap.answer([{ status: 422, body: { message: 'The to address is invalid' } }]);
    const r = await w.call('/send_email', { key: acct.live, body: { from: acct.from, to: 'ada@example.com', subject: 'Refused', text: 'x' } });
    const done = await waitStatus(w, acct.live, r.body.id, 'failed');
    assert.equal(cap.requests.length, 1, 'no retry of a 4xx');
    assert.match(done.last_error, /The to address is invalid/);
    const events = await w.sql(`SELECT type FROM events WHERE message_id = '${r.body.id}'`);
    assert.deepEqual(events.map((e) => e.type), ['email.failed']);
  });

  test('retries give up after DELIVERY_MAX_ATTEMPTS through the dead-letter queue', async () => {
    cap.reset();
    cap.otherwise(() => ({ status: 500, body: { message: 'down' } }));
    try {
      const r = await w.call('/send_email', { key: acct.live, body: { from: acct.from, to: 'ada@example.com', subject: 'Doomed', text: 'x' } });
      const done = await waitStatus(w, acct.live, r.body.id, 'failed', 30_000);
      assert.ok(done, 'marked failed');
      assert.equal(cap.requests.length, 3);
      assert.match(done.last_error, /gave up after 3 attempts/);
    } finally {
      cap.otherwise((req) => ({ status: 200, body: { id: `prov_${cap.requests.length}` } }));
    }
  });

  test('100 concurrent requests with one Idempotency-Key: one message, one provider call, one id', async () => {
    cap.reset();
    const body = { from: acct.from, to: 'ada@example.com', subject: 'Once only', text: 'x' };
    // Like Inngest retrying a step: a 409 in-progress answer is retried after Retry-After.
    const sendOnce = async () => {
      for (let i = 0; i < 20; i++) {
        const r = await w.call('/send_email', { key: acct.live, headers: { 'Idempotency-Key': 'concurrent-1' }, body });
        if (r.status !== 409) return r;
        assert.equal(r.body.error.code, 'idempotency_key_in_progress');
        assert.ok(Number(r.headers.get('retry-after')) >= 1);
        await sleep(200);
      }
      throw new Error('still in progress');
    };
    const answers = await Promise.all(Array.from({ length: 100 }, sendOnce));
    const ids = new Set(answers.map((a) => a.body.id));
    assert.equal(ids.size, 1, `every answer has the same id: ${[...ids]}`);
    assert.ok(answers.length > 0 && answers.every((a) => a.status === 202));
    assert.equal(answers.filter((a) => a.headers.get('idempotent-replayed') === 'true').length, 99);
    const [id] = ids;
    await waitStatus(w, acct.live, id, 'sent');
    await sleep(1000);
    assert.equal(cap.requests.length, 1);
    const rows = await w.sql(`SELECT count(*) AS n FROM messages WHERE idempotency_key = 'concurrent-1'`);
    assert.equal(rows[0].n, 1);

    const other = await w.call('/send_email', { key: acct.live, headers: { 'Idempotency-Key': 'concurrent-1' }, body: { ...body, subject: 'Different' } });
    assert.equal(other.status, 422);
    assert.equal(other.body.error.code, 'idempotency_key_reused');

    const second = await w.call('/send_email', { key: acct.live, headers: { 'Idempotency-Key': 'concurrent-2' }, body });
    assert.equal(second.status, 202);
    assert.notEqual(second.body.id, id);
  });

  test('the idempotency key may also come in the body, scoped to test or live mode', async () => {
    const body = { from: acct.from, to: 'ada@example.com', subject: 'Body key', text: 'x', idempotency_key: 'body-key-1' };
    const a = await w.call('/send_email', { key: acct.live, body });
    const b = await w.call('/send_email', { key: acct.live, body });
    assert.equal(a.body.id, b.body.id);
    assert.equal(b.headers.get('idempotent-replayed'), 'true');
    const t = await w.call('/send_email', { key: acct.test, body });
    assert.equal(t.status, 202);
    assert.notEqual(t.body.id, a.body.id, 'test and live keep separate idempotency records');
    const bad = await w.call('/send_email', { key: acct.live, headers: { 'Idempotency-Key': 'x'.repeat(256) }, body: { ...body, idempotency_key: undefined } });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error.field, 'idempotency_key');
  });
});

describe('with Postmark configured', () => {
  let w, cap, acct;
  before(async () => {
    cap = await startCapture();
    cap.otherwise(() => ({ status: 200, body: { To: 'ada@example.com', SubmittedAt: new Date().toISOString(), MessageID: 'pm-123', ErrorCode: 0, Message: 'OK' } }));
    w = await startWorker({ vars: { EMAIL_PROVIDER: 'postmark', POSTMARK_BASE_URL: cap.url, POSTMARK_SERVER_TOKEN: 'pm_server_token' } });
    acct = await setup(w, 'Postmark Co');
  });
  after(async () => { await w?.stop(); await cap?.close(); });

  test('a live send is one POST /email in the shape of Postmark\'s send API', async () => {
    const r = await w.call('/send_email', { key: acct.live, body: { from: acct.from, to: ['ada@example.com', 'b@example.com'], cc: 'c@example.com', subject: 'Hello', markdown: '# Hi\n\n**there**', headers: { 'X-Tag': '1' } } });
    assert.equal(r.status, 202, r.text);
    const done = await waitStatus(w, acct.live, r.body.id, 'sent');
    assert.equal(done.provider_message_id, 'pm-123');
    assert.equal(cap.requests.length, 1);
    const req = cap.requests[0];
    assert.equal(req.path, '/email');
    assert.equal(req.headers['x-postmark-server-token'], 'pm_server_token');
    assert.equal(req.headers.accept, 'application/json');
    for (const f of ['From', 'To', 'Cc', 'Subject', 'HtmlBody', 'TextBody', 'MessageStream', 'Headers']) assert.ok(f in req.json, `Postmark field ${f}`);
    assert.equal(req.json.To, 'ada@example.com, b@example.com');
    assert.match(req.json.HtmlBody, /<h1>Hi<\/h1>/);
    assert.equal(req.json.TextBody, '# Hi\n\n**there**');
    assert.ok(req.json.Headers.some((h) => h.Name === 'X-Tag' && h.Value === '1'));
  });
});

describe('validation and scheduling (sandbox)', () => {
  let w, acct;
  before(async () => {
    w = await startWorker();
    acct = await setup(w, 'Valid Co');
  });
  after(async () => { await w?.stop(); });

  const good = () => ({ from: acct.from, to: 'ada@example.com', subject: 'Hi', text: 'Hello' });

  test('bad input answers a clear error and stores and queues nothing', async () => {
    const cases = [
      [{ to: 'not-an-address' }, 400, 'to'],
      [{ to: ['ok@example.com', 'bad@'] }, 400, 'to'],
      [{ subject: 'Hi\r\nBcc: victim@example.com' }, 400, 'subject'],
      [{ to: Array.from({ length: 51 }, (_, i) => `r${i}@example.com`) }, 400, 'to'],
      [{ from: 'nobody@elsewhere.example' }, 422, 'from'],
      [{ from: `nobody@${acct.account.default_domain}` }, 404, 'from'],
      [{ from: 'Agent <agent@x>\r\n' }, 400, 'from'],
      [{ headers: { From: 'ceo@bank.example' } }, 400, 'headers'],
      [{ headers: { 'X-A': 'ok\r\nBcc: evil@example.com' } }, 400, 'headers'],
      [{ text: undefined }, 400, 'text'],
      [{ oversight_mode: 'yolo' }, 400, 'oversight_mode'],
      [{ metadata: 'nope' }, 400, 'metadata'],
      [{ send_at: 'tomorrow' }, 400, 'send_at'],
      // A rule about the current time, which no schema can state: 422, not 400.
      [{ send_at: new Date(Date.now() + 40 * 86_400_000).toISOString() }, 422, 'send_at'],
      [{ approval_ttl: 12.5 }, 400, 'approval_ttl'],
      [{ attachments: [{ filename: 'a.bin', content_base64: '!!!' }] }, 400, 'attachments'],
      [{ subject: 42 }, 400, 'subject'],
      [{ surprise: true }, 400, 'surprise'],
      // 25 MB as sent (attachments in base64); the bodies keep to 1.5 MB.
      [{ attachments: [{ filename: 'big.bin', content_base64: Buffer.alloc(19_000_000).toString('base64') }] }, 413, null, /25000000 bytes/],
      [{ text: 'x'.repeat(1_600_000) }, 413, null, /1500000 bytes/],
    ];
    for (const [patch, status, field, limit] of cases) {
      const body = { ...good(), ...patch };
      const r = await w.call('/send_email', { key: acct.test, body });
      assert.equal(r.status, status, `${JSON.stringify(patch).slice(0, 80)} → ${r.text.slice(0, 200)}`);
      assert.equal(r.body.error.field, field, JSON.stringify(r.body));
      if (status === 422 && field === 'send_at') assert.equal(r.body.error.code, 'send_at_too_far');
      if (status === 413) {
        assert.equal(r.body.error.code, 'message_too_large');
        assert.match(r.body.error.message, limit);
      }
    }
    const rows = await w.sql('SELECT count(*) AS n FROM messages');
    assert.equal(rows[0].n, 0, 'nothing stored');
    // A whole number written with a fraction is a whole number (JSON Schema's integer).
    const ttl = await w.call('/send_email', { key: acct.test, body: { ...good(), approval_ttl: 5851.0, subject: 'ttl' } });
    assert.equal(ttl.status, 202, ttl.text);
    await w.sql("DELETE FROM messages WHERE subject = 'ttl'");
  });

  test('a looser oversight_mode than the mailbox is refused and stores nothing', async () => {
    const strict = `strict@${acct.account.default_domain}`;
    assert.equal((await w.call('/create_mailbox', { key: acct.test, body: { address: strict, oversight_mode: 'gated_all' } })).status, 201);
    for (const mode of ['gated_send', 'monitored', 'autonomous']) {
      const r = await w.call('/send_email', { key: acct.test, body: { ...good(), from: strict, oversight_mode: mode } });
      assert.equal(r.status, 403, mode);
      assert.equal(r.body.error.code, 'oversight_escalation');
      assert.equal(r.body.error.field, 'oversight_mode');
    }
    assert.equal((await w.sql('SELECT count(*) AS n FROM messages'))[0].n, 0);
  });

  test('send_at schedules, cancel_email cancels before sending, and it is never delivered', async () => {
    const at = new Date(Date.now() + 3600_000).toISOString();
    const r = await w.call('/send_email', { key: acct.test, body: { ...good(), send_at: at } });
    assert.equal(r.status, 202);
    assert.equal(r.body.status, 'scheduled');
    const c = await w.call('/cancel_email', { key: acct.test, body: { id: r.body.id, reason: 'changed my mind' } });
    assert.equal(c.status, 200, c.text);
    assert.equal(c.body.status, 'cancelled');
    const again = await w.call('/cancel_email', { key: acct.test, body: { id: r.body.id } });
    assert.equal(again.status, 409);
    assert.equal(again.body.error.code, 'not_cancellable');
    const g = await w.call('/get_email', { key: acct.test, query: { id: r.body.id } });
    assert.deepEqual(g.body.timeline.map((t) => t.event), ['created', 'scheduled', 'cancelled']);
  });

  test('a send_at a few seconds ahead is delivered once it is due', async () => {
    const at = new Date(Date.now() + 3000).toISOString();
    const r = await w.call('/send_email', { key: acct.test, body: { ...good(), send_at: at } });
    assert.equal(r.body.status, 'scheduled');
    const done = await waitStatus(w, acct.test, r.body.id, 'sent', 20_000);
    assert.ok(done, 'sent once due');
    assert.ok(Date.parse(done.sent_at) >= Date.parse(at) - 1000, `sent ${done.sent_at}, due ${at}`);
  });

  test('another account and the other mode cannot see or cancel a message', async () => {
    const r = await w.call('/send_email', { key: acct.test, body: good() });
    const other = await w.createAccount('Other Co');
    for (const key of [other.test, other.live, acct.live]) {
      assert.equal((await w.call('/get_email', { key, query: { id: r.body.id } })).status, 404);
      assert.equal((await w.call('/cancel_email', { key, body: { id: r.body.id } })).status, 404);
    }
  });
});

describe('with Cloudflare Email Service configured', () => {
  let w, acct;
  before(async () => {
    w = await startWorker({ vars: { EMAIL_PROVIDER: 'cloudflare' } });
    acct = await setup(w, 'Cloudflare Co');
  });
  after(async () => { await w?.stop(); });

  test('the stored MIME goes through the send_email binding, one envelope per recipient', async () => {
    const r = await w.call('/send_email', { key: acct.live, body: { from: acct.from, to: ['ada@example.com', 'b@example.com'], bcc: 'hidden@example.com', subject: 'Über', text: 'plain', html: '<b>rich</b>' } });
    assert.equal(r.status, 202, r.text);
    const done = await waitStatus(w, acct.live, r.body.id, 'sent');
    assert.equal(done.provider, 'cloudflare');
    // wrangler writes each message the binding sends to an .eml file and logs its path.
    const files = [...w.log().matchAll(/Email: (\S+\.eml)/g)].map((m) => m[1]);
    assert.equal(files.length, 3, w.log());
    for (const f of files) {
      const eml = readFileSync(f, 'utf8');
      assert.match(eml, new RegExp(`X-MultiMail-Message-Id: ${r.body.id}`));
      assert.match(eml, /Subject: =\?utf-8\?/i);
      assert.match(eml, /multipart\/alternative/);
      assert.doesNotMatch(eml, /hidden@example\.com/, 'bcc stays off the headers');
    }
  });
});
