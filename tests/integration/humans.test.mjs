// Only humans hold oversight: the trust boundary between API keys (what an agent holds) and the
// humans of an account, against the real worker. Each attack of issue 12 is performed as an
// agent would, and must fail with the documented error and change nothing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startWorker, eventually } from './harness.mjs';

let w;
before(async () => { w = await startWorker(); });
after(async () => { await w?.stop(); });

const err = (r, status, code) => {
  assert.equal(r.status, status, r.text);
  assert.equal(r.body?.error?.code, code, r.text);
};
const held = (key, from, extra = {}) =>
  w.call('/send_email', { key, body: { from, to: 'ada@example.com', subject: 'Please approve', text: 'x', ...extra } });

test('attack 1: the default key cannot mint an oversight key, nor approve its own mail', async () => {
  const a = await w.sender('Self Approver', { mode: 'gated_send' });
  const before = (await w.sql(`SELECT count(*) AS n FROM api_keys WHERE account_id = '${a.account.id}'`))[0].n;
  for (const scopes of [['oversight'], ['oversight', 'read'], ['oversight', 'admin']]) {
    const r = await w.call('/create_api_key', { key: a.live, body: { name: 'me, approving', scopes } });
    err(r, 403, 'oversight_requires_human');
    assert.equal(r.body.error.field, 'scopes');
  }
  // Nor through the test key, nor by asking for more than it holds.
  err(await w.call('/create_api_key', { key: a.test, body: { name: 'x', scopes: ['oversight'] } }), 403, 'oversight_requires_human');
  const reader = await w.call('/create_api_key', { key: a.live, body: { name: 'reader+admin', scopes: ['read', 'admin'] } });
  assert.equal(reader.status, 201, reader.text);
  err(await w.call('/create_api_key', { key: reader.body.key, body: { name: 'sender', scopes: ['send'] } }), 403, 'scope_escalation');
  assert.equal((await w.call('/create_api_key', { key: reader.body.key, body: { name: 'reader', scopes: ['read'] } })).status, 201, 'a subset is fine');
  const after = (await w.sql(`SELECT count(*) AS n FROM api_keys WHERE account_id = '${a.account.id}'`))[0].n;
  assert.equal(after, before + 2, 'only the two allowed keys were stored');

  // The agent's own key cannot decide: its held message waits for a human.
  const s = await held(a.live, a.from);
  assert.equal(s.body.status, 'pending_approval');
  err(await w.call('/decide_email', { key: a.live, body: { id: s.body.id, decision: 'approve' } }), 403, 'insufficient_scope');
  assert.equal((await w.call('/get_email', { key: a.live, query: { id: s.body.id } })).body.status, 'pending_approval');
});

test('the deployment operator mints oversight keys with ADMIN_TOKEN; an API key cannot use that route', async () => {
  const a = await w.createAccount('Operator Minted');
  const body = { account: a.account.id, name: 'human', scopes: ['oversight', 'read'], livemode: true };
  err(await w.call('/admin/create_api_key', { key: a.live, body }), 401, 'invalid_admin_token');
  const r = await w.call('/admin/create_api_key', { key: w.adminToken, body });
  assert.equal(r.status, 201, r.text);
  assert.match(r.body.key, /^mm_live_/);
  assert.deepEqual(r.body.scopes.sort(), ['oversight', 'read']);
  err(await w.call('/admin/create_api_key', { key: w.adminToken, body: { ...body, scopes: ['send', 'oversight'] } }), 422, 'conflicting_scopes');
  err(await w.call('/admin/create_api_key', { key: w.adminToken, body: { ...body, account: 'acct_00000000000000000000000000' } }), 404, 'account_not_found');
  err(await w.call('/admin/create_api_key', { key: w.adminToken, body: { ...body, livemode: 'yes' } }), 400, 'invalid_request');
  const { name, ...noName } = body;
  err(await w.call('/admin/create_api_key', { key: w.adminToken, body: noName }), 400, 'invalid_request');
});

test('attack 2: a key setting oversight_email opens a change; approval requests keep going to the owner', async () => {
  const a = await w.sender('Redirector', { mode: 'gated_send' });
  const agentInbox = `agent-reads-this@${a.account.default_domain}`;
  const u = await w.call('/update_mailbox', { key: a.live, body: { id: a.mailbox.id, oversight_email: agentInbox } });
  assert.equal(u.status, 200, u.text);
  assert.equal(u.body.oversight_email, null, 'not applied');
  const change = u.body.oversight_email_change;
  assert.equal(change.status, 'pending');
  assert.equal((await w.sql(`SELECT oversight_email FROM mailboxes WHERE id = '${a.mailbox.id}'`))[0].oversight_email, null);

  // A held send now: its approval request goes to the owner, not to the agent's address.
  const s = await held(a.live, a.from);
  const note = await eventually(async () => (await w.sql(
    `SELECT to_json FROM messages WHERE kind = 'notification' AND metadata LIKE '%${s.body.id}%'`))[0]);
  assert.deepEqual(JSON.parse(note.to_json), [a.owner]);

  // The change is listed for humans, and the agent's key cannot decide it.
  const pending = await w.call('/list_pending', { key: a.oversight });
  assert.ok(pending.body.changes.some((c) => c.id === change.id && c.kind === 'oversight_email'), pending.text);
  err(await w.call('/decide_email', { key: a.live, body: { id: change.id, decision: 'approve' } }), 403, 'insufficient_scope');
  // A human rejects it: nothing changes, and it cannot be decided again.
  const d = await w.call('/decide_email', { key: a.oversight, body: { id: change.id, decision: 'reject' } });
  assert.equal(d.status, 200, d.text);
  assert.equal(d.body.status, 'rejected');
  err(await w.call('/decide_email', { key: a.oversight, body: { id: change.id, decision: 'approve' } }), 409, 'already_decided');
  assert.equal((await w.sql(`SELECT oversight_email FROM mailboxes WHERE id = '${a.mailbox.id}'`))[0].oversight_email, null);
});

test('attack 3: test credentials cannot loosen a mailbox for live mail; every mode change is in the live audit chain', async () => {
  const a = await w.sender('Test Looser', { mode: 'gated_send' });
  const testHuman = await w.adminKey(a.account.id, { scopes: ['oversight'], livemode: false, name: 'test oversight' });
  const u = await w.call('/update_mailbox', { key: a.test, body: { id: a.mailbox.id, oversight_mode: 'autonomous' } });
  assert.equal(u.status, 200, u.text);
  const chg = u.body.mode_change.id;
  err(await w.call('/decide_email', { key: testHuman, body: { id: chg, decision: 'approve' } }), 403, 'live_oversight_required');
  assert.equal((await w.sql(`SELECT status FROM mode_changes WHERE id = '${chg}'`))[0].status, 'pending');
  // A LIVE send from the mailbox is still held.
  const s = await held(a.live, a.from);
  assert.equal(s.status, 202, s.text);
  assert.equal(s.body.status, 'pending_approval');
  // The live chain records the request made with a test key.
  const live = await eventually(async () => {
    const log = await w.call('/get_audit_log', { key: a.live, query: { limit: '100' } });
    return log.body.entries.find((e) => e.action === 'mode_change.requested' && (e.detail ?? '').includes(chg)) && log;
  });
  assert.ok(live, 'the live audit chain has the test key\'s mode-change request');
  // The live human approves; the live chain records the change taking effect.
  assert.equal((await w.call('/decide_email', { key: a.oversight, body: { id: chg, decision: 'approve' } })).status, 200);
  const applied = await eventually(async () => (await w.call('/get_audit_log', { key: a.live, query: { limit: '100' } })).body.entries
    .find((e) => e.action === 'mailbox.mode_changed'));
  assert.ok(applied);
  assert.equal((await w.call('/verify_audit_log', { key: a.live })).body.ok, true);
});

test('removing a suppression and deleting a verified domain wait for a human; test oversight cannot decide them', async () => {
  const a = await w.sender('Suppressor', { mode: 'autonomous' });
  assert.equal((await w.call('/add_suppression', { key: a.live, body: { address: 'gone@example.com' } })).status, 201);
  const r = await w.call('/remove_suppression', { key: a.test, body: { address: 'gone@example.com' } });
  assert.equal(r.status, 202, r.text);
  const testHuman = await w.adminKey(a.account.id, { scopes: ['oversight'], livemode: false, name: 'test oversight' });
  err(await w.call('/decide_email', { key: testHuman, body: { id: r.body.change.id, decision: 'approve' } }), 403, 'live_oversight_required');
  const refused = await w.call('/send_email', { key: a.live, body: { from: a.from, to: 'gone@example.com', subject: 'x', text: 'x' } });
  err(refused, 422, 'recipient_suppressed');
  assert.equal((await w.call('/decide_email', { key: a.oversight, body: { id: r.body.change.id, decision: 'approve' } })).status, 200);
  assert.equal((await w.call('/send_email', { key: a.live, body: { from: a.from, to: 'gone@example.com', subject: 'x', text: 'x' } })).status, 202);
});

test('create_sign_in_link: only with ADMIN_TOKEN, and bad or foreign input is a clear error that makes no link', async () => {
  const a = await w.createAccount('Link Co');
  const other = await w.createAccount('Other Link Co');
  const count = async () => (await w.sql('SELECT count(*) AS n FROM sign_in_links'))[0].n;
  const before = await count();
  err(await w.call('/admin/create_sign_in_link', { key: a.live, body: { account: a.account.id } }), 401, 'invalid_admin_token');
  err(await w.call('/admin/create_sign_in_link', { key: w.adminToken, body: {} }), 400, 'invalid_request');
  err(await w.call('/admin/create_sign_in_link', { key: w.adminToken, body: { account: a.account.id, extra: 1 } }), 400, 'unknown_field');
  err(await w.call('/admin/create_sign_in_link', { key: w.adminToken, body: { account: 'acct_00000000000000000000000000' } }), 404, 'account_not_found');
  err(await w.call('/admin/create_sign_in_link', { key: w.adminToken, body: { account: a.account.id, email: 'not an address' } }), 400, 'invalid_request');
  // Another account's owner is not an operator of this one.
  err(await w.call('/admin/create_sign_in_link', { key: w.adminToken, body: { account: a.account.id, email: other.owner } }), 404, 'operator_not_found');
  assert.equal(await count(), before, 'a refused call made a link');
  const ok = await w.call('/admin/create_sign_in_link', { key: w.adminToken, body: { account: a.account.id } });
  assert.equal(ok.status, 201, ok.text);
  assert.match(ok.body.url, new RegExp(`^${w.base}/console/auth\\?token=[0-9a-f]{64}$`));
  assert.equal(ok.body.operator.email, a.owner);
});

test('console forms: a bad decision, a foreign id and an unknown page answer clear errors and change nothing', async () => {
  const a = await w.sender('Console Input Co', { mode: 'gated_send' });
  const link = (await w.call('/admin/create_sign_in_link', { key: w.adminToken, body: { account: a.account.id } })).body.url;
  const token = new URL(link).searchParams.get('token');
  const signed = await fetch(`${w.base}/console/auth`, { method: 'POST', redirect: 'manual', body: new URLSearchParams({ token }) });
  assert.equal(signed.status, 303);
  const cookie = signed.headers.get('set-cookie').split(';')[0];
  const page = await (await fetch(`${w.base}/console`, { headers: { Cookie: cookie } })).text();
  const csrf = page.match(/name="csrf" value="([0-9a-f]{64})"/)[1];
  const held = (await w.call('/send_email', { key: a.live, body: { from: a.from, to: 'ada@example.com', subject: 'x', text: 'y' } })).body.id;
  const post = (body) => fetch(`${w.base}/console/decide`, { method: 'POST', redirect: 'manual', headers: { Cookie: cookie }, body: new URLSearchParams({ csrf, ...body }) });
  const bad = await post({ id: held, decision: 'maybe' });
  assert.equal(bad.status, 400);
  assert.match(bad.headers.get('content-type'), /text\/html/);
  const other = await w.sender('Console Foreign Co', { mode: 'gated_send' });
  const foreign = (await w.call('/send_email', { key: other.live, body: { from: other.from, to: 'ada@example.com', subject: 'x', text: 'y' } })).body.id;
  assert.equal((await post({ id: foreign, decision: 'approve' })).status, 404);
  assert.equal((await post({ id: 'chg_00000000000000000000000000', decision: 'approve' })).status, 404);
  assert.equal((await w.call('/get_email', { key: other.live, query: { id: foreign } })).body.status, 'pending_approval');
  assert.equal((await w.call('/get_email', { key: a.live, query: { id: held } })).body.status, 'pending_approval');
  const big = await fetch(`${w.base}/console/decide`, { method: 'POST', headers: { Cookie: cookie }, body: 'csrf=' + csrf + '&reason=' + 'x'.repeat(70_000) });
  assert.equal(big.status, 413);
});
