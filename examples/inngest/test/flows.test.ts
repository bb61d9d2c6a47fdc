// The four Inngest flows of the integration page, run by @inngest/test's InngestTestEngine with the
// real `inngest` v4 SDK, against the real worker under `wrangler dev` (the integration harness).
// Every step.run makes real HTTP calls to the worker. The worker's `format: "inngest"` webhooks
// post to a local stand-in for Inngest's Event API (`POST /e/{key}` answering
// `{"ids": [...], "status": 200}`), and what a `step.waitForEvent` receives is exactly the body
// the worker posted there (mocked through transformCtx: see engineWithWait). Live keys, with Resend as the provider (also the local capture), so
// "delivered once" is counted at the provider.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { InngestTestEngine, mockCtx } from '@inngest/test';
import { startWorker, eventually } from '../../../tests/integration/harness.mjs';
import { startCapture } from '../../../tests/integration/capture.mjs';
import { sendWelcomeEmail, agentEmailDraft, classifyInboundEmail, dailyDigest } from '../src/index.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const uid = () => randomBytes(6).toString('hex');

let w: any, cap: any;
before(async () => {
  cap = await startCapture();
  // Inngest's Event API at /e/<key>; Resend's POST /emails everywhere else.
  cap.otherwise((req: any) => req.path.startsWith('/e/')
    ? { status: 200, body: { ids: [`01INNGEST${cap.requests.length}`], status: 200 } }
    : { status: 200, body: { id: `re_${cap.requests.length}` } });
  w = await startWorker({ vars: {
    ALLOW_HTTP_LOOPBACK_WEBHOOKS: 'true',
    EMAIL_PROVIDER: 'resend', RESEND_BASE_URL: cap.url, RESEND_API_KEY: 're_test_key', DELIVERY_BACKOFF_SECONDS: '1',
  } });
  process.env.MULTIMAIL_URL = w.base;
});
after(async () => { await w?.stop(); await cap?.close(); });

/** An account with an autonomous mailbox, whose live key the functions use. */
async function account(name: string) {
  const a = await w.sender(`${name} ${uid()}`, { mode: 'autonomous' });
  process.env.MULTIMAIL_API_KEY = a.live;
  process.env.MULTIMAIL_MAILBOX = a.from;
  return a;
}

/** A `format: "inngest"` webhook to the local Event API; returns the path it posts to. */
async function inngestEndpoint(a: any, events: string[]) {
  const path = `/e/evtkey-${uid()}`;
  const r = await w.call('/create_webhook', { key: a.live, body: { url: cap.url + path, format: 'inngest', events } });
  assert.equal(r.status, 201, r.text);
  return path;
}

/** The event the worker posted to `path` that satisfies `pick`, once it has arrived. */
async function posted(path: string, pick: (e: any) => boolean) {
  const req = await eventually(async () => cap.requests.find((r: any) => r.path === path && pick(r.json)));
  assert.ok(req, `an event reached ${path}`);
  assert.equal(req.method, 'POST');
  assert.deepEqual(Object.keys(req.json).sort(), ['data', 'id', 'name']);
  return req.json;
}

/** Requests that reached the provider (Resend) for one message (it dedupes by our message id). */
const atProvider = (id: string) => cap.requests.filter((r: any) => r.path === '/emails' && r.headers['idempotency-key'] === id);

const email = (a: any, id: string) => w.call('/get_email', { key: a.live, query: { id } }).then((r: any) => r.body);
const status = (a: any, id: string, want: string) => eventually(async () => { const e = await email(a, id); return e.status === want && e; });

/** Evaluates the one expression form the approval flow uses: async.data.message_id == '<id>'. */
function ifMatches(expr: string, incoming: any) {
  const m = /^async\.data\.message_id == '([^']*)'$/.exec(expr);
  assert.ok(m, `unexpected expression ${expr}`);
  return incoming.data.message_id === m[1];
}

const CRLF = '\r\n';
async function inbound(a: any, subject: string, text: string) {
  const raw = [`From: Bob <bob@example.com>`, `To: ${a.from}`, `Subject: ${subject}`, `Message-ID: <${uid()}@example.com>`, '', text].join(CRLF);
  const r = await w.call('/inbound/mime', { key: a.live, raw, headers: { 'Content-Type': 'message/rfc822' } });
  assert.equal(r.status, 200, r.text);
  return r.body.stored[0].id as string;
}

test('(a) send in step.run: a retried step sends one email, delivered once', async () => {
  const a = await account('Welcome');
  const event = { name: 'user/signed-up', id: `01SIGNUP${uid()}`, data: { userId: 'u_1', email: 'ada@example.com', name: 'Ada' } };

  // The first attempt's request reaches MultiMail, but its answer is lost on the way back (a
  // reset connection), so the step fails and Inngest retries it.
  const realFetch = globalThis.fetch;
  const calls: any[] = [];
  let loseNext = true;
  globalThis.fetch = async (input: any, init?: any) => {
    const res = await realFetch(input, init);
    if (String(input).endsWith('/send_email')) {
      calls.push({ key: init.headers['Idempotency-Key'], status: res.status, replayed: res.headers.get('idempotent-replayed'), body: await res.clone().json() });
      if (loseNext) { loseNext = false; throw new TypeError('fetch failed: connection reset'); }
    }
    return res;
  };
  let first, retry;
  try {
    first = await new InngestTestEngine({ function: sendWelcomeEmail, events: [event] }).execute();
    retry = await new InngestTestEngine({ function: sendWelcomeEmail, events: [event] }).execute();
  } finally {
    globalThis.fetch = realFetch;
  }
  assert.match(String((first as any).error?.message), /connection reset/, 'the first attempt failed');
  assert.equal((retry as any).error, undefined);

  assert.equal(calls.length, 2, 'the step ran twice');
  assert.deepEqual(calls.map((c) => c.key), [`welcome-${event.id}`, `welcome-${event.id}`]);
  assert.deepEqual(calls.map((c) => [c.status, c.replayed]), [[202, null], [202, 'true']], 'the retry was replayed');
  const id = calls[0].body.id;
  assert.equal(calls[1].body.id, id);
  assert.deepEqual(retry!.result, { messageId: id, status: 'queued' });

  const rows = await w.sql(`SELECT id FROM messages WHERE account_id = '${a.account.id}' AND direction = 'outbound' AND kind = 'message'`);
  assert.deepEqual(rows.map((r: any) => r.id), [id], 'one message exists');
  const sent = await status(a, id, 'sent');
  assert.ok(sent, 'it was sent');
  assert.equal(sent.attempts, 1);
  assert.equal(sent.timeline.filter((t: any) => t.event === 'sent').length, 1);
  assert.deepEqual(sent.metadata, { userId: 'u_1', eventId: event.id });
  await sleep(1500);
  const reqs = atProvider(id);
  assert.equal(reqs.length, 1, 'the provider got it once');
  assert.deepEqual(reqs[0].json.to, ['ada@example.com']);
  assert.equal(reqs[0].json.subject, 'Welcome to Acme');
});

// Flow (b): the trigger event, and a waitForEvent mock in which a human decides (or not).
const draft = () => ({ name: 'agent/draft-ready', id: `01DRAFT${uid()}`, data: { recipient: 'grace@example.com', subject: `Proposal ${uid()}`, body: 'Here is our offer.' } });

/** The human: finds the held message of this run in list_pending and decides it with the oversight key. */
async function humanDecides(a: any, runId: string, decision: 'approve' | 'reject') {
  const pending = await w.call('/list_pending', { key: a.oversight, query: { mailbox: a.from } });
  const held = pending.body.messages.find((m: any) => m.metadata?.runId === runId);
  assert.ok(held, 'the draft is held for a human');
  const d = await w.call('/decide_email', { key: a.oversight, body: { id: held.id, decision, reason: `${decision} by test` } });
  assert.equal(d.status, 200, d.text);
  return held.id as string;
}

/**
 * The waitForEvent mock. @inngest/test 1.0 cannot resume a `step.waitForEvent` mocked through its
 * `steps` option on inngest v4: the engine validates the mock's still-unresolved promise as if it
 * were the event and fails with "Event not found in triggers: undefined" (inngest/inngest-js#1652,
 * fix proposed in #1669). So the wait is mocked through `transformCtx`, the package's documented
 * hook for custom mocks, on top of its own `mockCtx` spies: `resume` runs once per run, when the
 * function first reaches the wait, and its answer (the event, or null for a timeout) is what
 * `step.waitForEvent` returns. The options the function passed are kept in `calls`.
 */
function engineWithWait(fn: any, event: any, resume: () => Promise<any> | any) {
  const calls: any[] = [];
  let answer: Promise<any> | undefined;
  const t = new InngestTestEngine({
    function: fn,
    events: [event],
    transformCtx: (ctx: any) => {
      const mocked: any = mockCtx(ctx);
      mocked.step.waitForEvent = async (id: string, opts: any) => {
        calls.push([id, opts]);
        answer ??= Promise.resolve().then(resume);
        return answer;
      };
      return mocked;
    },
  });
  return { t, calls };
}

function assertWaitedFor(calls: any[], id: string) {
  assert.ok(calls.length >= 1, 'the function waited');
  for (const c of calls) {
    assert.equal(c[0], 'wait-for-approval');
    assert.deepEqual(c[1], { event: 'multimail/email.decided', timeout: '48h', if: `async.data.message_id == '${id}'` });
  }
}

test('(b) gated_send and waitForEvent: the approval event the worker posted resumes the run; it is sent', async () => {
  const a = await account('Approvals');
  const path = await inngestEndpoint(a, ['email.decided']);
  const event = draft();

  // Up to the wait, with nothing mocked: the step the SDK hands to Inngest.
  const upTo = await new InngestTestEngine({ function: agentEmailDraft, events: [event] }).executeStep('wait-for-approval') as any;
  const held = (await w.call('/list_pending', { key: a.oversight, query: { mailbox: a.from } })).body.messages;
  assert.equal(held.length, 1, 'the draft is held');
  const heldId: string = held[0].id;
  // What Inngest is asked to wait for: this event name, with this expression, for 48 h.
  assert.deepEqual([upTo.step.op, upTo.step.name, upTo.step.opts], ['WaitForEvent', 'multimail/email.decided', { timeout: '2d', if: `async.data.message_id == '${heldId}'` }]);

  // The whole run (Inngest would replay the first step from its state; here it runs again, and
  // its Idempotency-Key makes it the same message). The human approves while the run waits.
  let delivered: any;
  const { t, calls } = engineWithWait(agentEmailDraft, event, async () => {
    assert.equal(await humanDecides(a, event.id, 'approve'), heldId);
    delivered = await posted(path, (e) => e.data.message_id === heldId);
    return delivered; // exactly what Inngest's Event API received
  });
  const { result, error } = await t.execute() as any;
  assert.equal(error, undefined, error?.message);
  assertWaitedFor(calls, heldId);
  assert.equal(delivered.name, 'multimail/email.decided');
  assert.equal(delivered.id, delivered.data.event_id, 'Inngest dedupes by the event id');
  assert.equal(delivered.data.type, 'email.decided');
  assert.ok(ifMatches(calls[0][1].if, delivered), 'the `if` expression matches the event');
  assert.equal(ifMatches(calls[0][1].if, { data: { ...delivered.data, message_id: 'msg_other' } }), false, 'and no other message\'s');
  assert.deepEqual(delivered.data.metadata, { runId: event.id });
  assert.deepEqual(result, { messageId: heldId, outcome: 'approved', decidedBy: delivered.data.decided_by, seenBy: 'event' });
  assert.match(result.decidedBy, /^key_/);

  const sent = await status(a, heldId, 'sent');
  assert.ok(sent, 'approved mail goes out');
  assert.deepEqual([sent.oversight_mode, sent.decision], ['gated_send', 'approved']);
  // The user's messages only: the approval request emailed to the owner is ours (kind `notification`).
  const rows = await w.sql(`SELECT id FROM messages WHERE account_id = '${a.account.id}' AND direction = 'outbound' AND kind = 'message'`);
  assert.deepEqual(rows.map((r: any) => r.id), [heldId], 'two runs of the send step, one message');
  await sleep(1000);
  assert.equal(atProvider(heldId).length, 1, 'delivered once');
});

test('(b) a rejection resumes the run too, and nothing is sent', async () => {
  const a = await account('Rejections');
  const path = await inngestEndpoint(a, ['email.decided']);
  const event = draft();
  let heldId = '';
  const { t, calls } = engineWithWait(agentEmailDraft, event, async () => {
    heldId = await humanDecides(a, event.id, 'reject');
    return posted(path, (e) => e.data.message_id === heldId);
  });
  const { result, error } = await t.execute() as any;
  assert.equal(error, undefined, error?.message);
  assertWaitedFor(calls, heldId);
  assert.deepEqual([result.messageId, result.outcome, result.seenBy], [heldId, 'rejected', 'event']);
  assert.equal((await email(a, heldId)).status, 'rejected');
  await sleep(1000);
  assert.equal(atProvider(heldId).length, 0);
});

test('(b) the race: a decision made before the wait began is not seen; after the timeout get_email tells the truth', async () => {
  const a = await account('Race');
  const path = await inngestEndpoint(a, ['email.decided']);
  const event = draft();
  let heldId = '';
  const { t, calls } = engineWithWait(agentEmailDraft, event, async () => {
    // The human approves between the two steps: the event reaches Inngest before the wait
    // exists, so the wait never sees it and times out (null).
    heldId = await humanDecides(a, event.id, 'approve');
    await posted(path, (e) => e.data.message_id === heldId);
    return null;
  });
  const { result, error, ctx } = await t.execute() as any;
  assert.equal(error, undefined, error?.message);
  assertWaitedFor(calls, heldId);
  assert.deepEqual([...new Set(ctx.step.run.mock.calls.map((c: any) => c[0]))], ['queue-for-approval', 'read-outcome']);
  assert.deepEqual([result.messageId, result.outcome, result.seenBy], [heldId, 'approved', 'get_email']);
  assert.ok(await status(a, heldId, 'sent'), 'and it is sent');
});

test('(b) nobody decides within the wait: the run cancels the draft so it cannot go out unwatched', async () => {
  const a = await account('Timeout');
  const path = await inngestEndpoint(a, ['email.decided']);
  const { t } = engineWithWait(agentEmailDraft, draft(), () => null);
  const { result, error } = await t.execute() as any;
  assert.equal(error, undefined, error?.message);
  assert.deepEqual([result.outcome, result.seenBy], ['cancelled', 'get_email']);
  assert.match(result.decidedBy, /^key_/);
  const e = await email(a, result.messageId);
  assert.deepEqual([e.status, e.decision], ['cancelled', 'cancelled']);
  const late = await w.call('/decide_email', { key: a.oversight, body: { id: result.messageId, decision: 'approve' } });
  assert.equal(late.status, 409, 'a late approval loses');
  await sleep(1000);
  assert.equal(cap.requests.filter((r: any) => r.path === path).length, 0, 'a cancel posts no email.decided');
  assert.equal(atProvider(result.messageId).length, 0);
});

test('(c) email.received starts the function: it reads the email and the tag lands', async () => {
  const a = await account('Inbound');
  const path = await inngestEndpoint(a, ['email.received']);
  const urgentId = await inbound(a, 'URGENT: the server is down', 'Please call me.');
  const calmId = await inbound(a, 'Lunch next week?', 'No rush.');

  for (const [id, tag] of [[urgentId, 'urgent'], [calmId, 'normal']]) {
    const received = await posted(path, (e) => e.data.id === id);
    assert.equal(received.name, 'multimail/email.received');
    assert.equal(received.id, received.data.event_id);
    const t = new InngestTestEngine({ function: classifyInboundEmail, events: [received] });
    const { result, error } = await t.execute() as any;
    assert.equal(error, undefined, error?.message);
    assert.deepEqual(result, { emailId: id, tag, tags: [tag] });
    const stored = (await w.sql(`SELECT tags, read FROM messages WHERE id = '${id}'`))[0];
    assert.deepEqual([JSON.parse(stored.tags), stored.read], [[tag], 1], 'tagged and read');
    // A second run for the same event (Inngest redelivering) changes nothing.
    const again = await new InngestTestEngine({ function: classifyInboundEmail, events: [received] }).execute() as any;
    assert.deepEqual(again.result, result);
  }
  const tagged = await w.call('/check_inbox', { key: a.live, query: { mailbox: a.from, tag: 'urgent' } });
  assert.deepEqual(tagged.body.emails.map((e: any) => e.id), [urgentId]);
});

test('(d) daily digest: the counts of check_inbox and list_pending match the database, across pages', async () => {
  const a = await account('Digest');
  const ins: string[] = [];
  for (let i = 1; i <= 3; i++) ins.push(await inbound(a, `Inbound ${i}`, `Body ${i}`));
  assert.equal((await w.call('/read_email', { key: a.live, query: { id: ins[0] } })).status, 200); // one is read
  const held: string[] = [];
  for (let i = 1; i <= 3; i++) {
    const r = await w.call('/send_email', { key: a.live, body: { from: a.from, to: `p${i}@example.com`, subject: `Held ${i}`, text: 'x', oversight_mode: 'gated_send' } });
    assert.equal(r.body.status, 'pending_approval');
    held.push(r.body.id);
  }
  assert.equal((await w.call('/decide_email', { key: a.oversight, body: { id: held[0], decision: 'approve' } })).status, 200);
  assert.equal((await w.call('/send_email', { key: a.live, body: { from: a.from, to: 'q@example.com', subject: 'Sent', text: 'x' } })).status, 202);

  process.env.DIGEST_TO = 'owner@example.com';
  process.env.DIGEST_PAGE_SIZE = '1'; // every list takes several pages
  let r: any;
  try {
    r = await new InngestTestEngine({ function: dailyDigest, events: [{ name: 'inngest/scheduled.timer', data: { cron: '0 8 * * *' } }] }).execute();
  } finally {
    delete process.env.DIGEST_PAGE_SIZE;
  }
  assert.equal(r.error, undefined, r.error?.message);

  const [{ unread }] = await w.sql(`SELECT count(*) AS unread FROM messages WHERE account_id = '${a.account.id}' AND livemode = 1 AND direction = 'inbound' AND status = 'received' AND read = 0`);
  const [{ pending }] = await w.sql(`SELECT count(*) AS pending FROM messages WHERE account_id = '${a.account.id}' AND livemode = 1 AND status = 'pending_approval'`);
  assert.deepEqual([unread, pending], [2, 2], 'reality');
  assert.equal(r.result.unread, unread);
  assert.equal(r.result.pending, pending);

  const sent = await status(a, r.result.messageId, 'sent');
  assert.ok(sent, 'the digest is sent');
  const [req] = atProvider(r.result.messageId);
  assert.deepEqual(req.json.to, ['owner@example.com']);
  assert.match(req.json.text, /Unread messages: 2\nPending approvals: 2\n/);
  for (const s of ['Inbound 2', 'Inbound 3', 'Held 2', 'Held 3']) assert.ok(req.json.text.includes(s), s);
  for (const s of ['Inbound 1', 'Held 1']) assert.ok(!req.json.text.includes(s), `${s} is not waiting`);
});
