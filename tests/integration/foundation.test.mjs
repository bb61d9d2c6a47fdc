// Accounts, API keys, scopes, mailboxes, the error model, rate limits and idempotency on
// non-send POSTs, against the real worker under `wrangler dev` (see harness.mjs).
//
// One worker serves every test but the rate-limit one, which starts its own with a tiny limit.
// Tests run in order and each creates its own account(s), so they do not depend on each other.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { startWorker, eventually } from './harness.mjs';

let w;
// `log`: the worker's own log lines too (the delivery consumer's cost line).
before(async () => { w = await startWorker({ logLevel: 'log' }); });
after(async () => { await w?.stop(); });

// ---------------------------------------------------------------------------------------------
// helpers

const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;
const KEY_SHAPE = { live: /^mm_live_[A-Za-z0-9_-]{43}$/, test: /^mm_test_[A-Za-z0-9_-]{43}$/ };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let seq = 0;
/** A name no other test uses, so every account gets its own slug and default domain. */
const uniq = (p) => `${p} ${process.pid % 1000} ${++seq}`;

/** An account with its live/test keys; `domain` is its default sending domain. */
async function account(name = 'Acct') {
  const a = await w.createAccount(uniq(name));
  return { ...a, domain: a.account.default_domain, mbx: (local) => `${local}@${a.account.default_domain}` };
}

/** Asserts the contract's error body, the status, the code and (when given) the field. */
function assertError(r, status, code, field) {
  const ctx = `${r.status} ${r.text}`;
  assert.equal(r.status, status, ctx);
  assert.match(r.headers.get('content-type') ?? '', /^application\/json/, ctx);
  assert.ok(r.body && typeof r.body.error === 'object' && r.body.error, `no error object: ${ctx}`);
  const e = r.body.error;
  if (code !== undefined) {
    if (code instanceof RegExp) assert.match(e.code, code, ctx);
    else assert.equal(e.code, code, ctx);
  }
  assert.match(e.code, /^[a-z][a-z0-9_]*$/, ctx);
  assert.equal(typeof e.message, 'string', ctx);
  assert.ok(e.message.length > 0, ctx);
  assert.ok('field' in e, `error.field missing: ${ctx}`);
  if (field !== undefined) assert.equal(e.field, field, ctx);
  assert.match(e.request_id, /^req_/, ctx);
  assert.equal(r.headers.get('request-id'), e.request_id, `Request-Id header differs from body: ${ctx}`);
}

function assertOk(r, status = 200) {
  assert.equal(r.status, status, `${r.status} ${r.text}`);
  assert.match(r.headers.get('request-id') ?? '', /^req_/);
  assert.ok(r.body && typeof r.body === 'object', r.text);
  return r.body;
}

const mk = (key, body, headers) => w.call('/create_mailbox', { key, body, headers });
const mkKey = (key, body, headers) => w.call('/create_api_key', { key, body, headers });
const send = (key, from, extra = {}) =>
  w.call('/send_email', { key, body: { from, to: 'ada@example.com', subject: 'Hello', text: 'Hi there', ...extra } });
const listMailboxes = (key, query = {}) => w.call('/list_mailboxes', { key, query });
const listKeys = (key) => w.call('/list_api_keys', { key, query: { limit: '100' } });
const fakeKey = (mode = 'live') => `mm_${mode}_${randomBytes(32).toString('base64url')}`;

/** The account id behind a key (from its default mailbox-less key list). */
async function accountOf(key) {
  const rows = await w.sql(`SELECT account_id FROM api_keys WHERE id = '${(await listKeys(key)).body.api_keys[0].id}'`);
  return rows[0].account_id;
}

/** Creates a key through the API and returns the 201 body (with `key`). */
async function newKey(adminKey, body) {
  return assertOk(await mkKey(adminKey, { name: 'k', ...body }), 201);
}

async function counts() {
  const [row] = await w.sql(`SELECT
      (SELECT count(*) FROM mailboxes) AS mailboxes,
      (SELECT count(*) FROM api_keys) AS api_keys,
      (SELECT count(*) FROM mode_changes) AS mode_changes,
      (SELECT count(*) FROM idempotency) AS idempotency`);
  return row;
}

// ---------------------------------------------------------------------------------------------
// accounts

test('create_account needs the operator token: missing or wrong → 401 invalid_admin_token', async () => {
  const body = { name: uniq('Nope'), owner_email: 'owner@nope.example' };
  const { live } = await account('Keyholder');
  for (const headers of [
    {},
    { Authorization: 'Bearer wrong-token' },
    { Authorization: `Bearer ${w.adminToken}x` },
    { Authorization: `Bearer ${w.adminToken.slice(0, -1)}` },
    { Authorization: w.adminToken },                       // no scheme
    { Authorization: `Basic ${w.adminToken}` },
    { Authorization: `Bearer ${live}` },                   // an account's admin key is not the operator
    { Authorization: 'Bearer ' },
  ]) {
    const r = await w.call('/admin/create_account', { body, headers });
    assertError(r, 401, 'invalid_admin_token');
  }
  const rows = await w.sql(`SELECT count(*) AS n FROM accounts WHERE name = '${body.name}'`);
  assert.equal(rows[0].n, 0, 'a refused create_account stored an account');
});

test('create_account answers 201 with the account, its default domain and one live + one test key', async () => {
  const name = uniq('Shape & Co.');
  const r = await w.call('/admin/create_account', { key: w.adminToken, body: { name, owner_email: 'Owner@Shape.Example' } });
  const b = assertOk(r, 201);
  assert.match(b.account.id, /^acct_/);
  assert.equal(b.account.name, name);
  // Its first human: the owner, by a lower-cased address.
  assert.equal(b.account.owner_email, 'owner@shape.example');
  assert.equal(b.owner.role, 'owner');
  assert.match(b.owner.id, /^op_/);
  const slug = name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');
  assert.equal(b.account.default_domain, `${slug}.multimail.test`);
  assert.equal(b.api_keys.length, 2);
  const live = b.api_keys.find((k) => k.livemode === true);
  const tst = b.api_keys.find((k) => k.livemode === false);
  assert.ok(live && tst, r.text);
  for (const [k, shape] of [[live, KEY_SHAPE.live], [tst, KEY_SHAPE.test]]) {
    assert.match(k.id, /^key_/);
    assert.match(k.key, shape);
    assert.equal(typeof k.name, 'string');
    assert.deepEqual([...k.scopes].sort(), ['admin', 'read', 'send']);
  }
  assert.notEqual(live.id, tst.id);

  // Both keys work, and neither secret appears anywhere after the creation answer.
  for (const k of [live.key, tst.key]) {
    const lk = assertOk(await listKeys(k));
    assert.ok(!lk.api_keys.some((x) => 'key' in x), 'list_api_keys returned a `key`');
    for (const secret of [live.key, tst.key]) {
      assert.ok(!JSON.stringify(lk).includes(secret), 'a secret appears in list_api_keys');
      assert.ok(!JSON.stringify(lk).includes(secret.slice(12, -4)), 'the secret middle appears in list_api_keys');
    }
    const ids = lk.api_keys.map((x) => x.id);
    // A live key sees every key of the account; a test key only the test keys.
    const expected = k === live.key ? [live.id, tst.id] : [tst.id];
    assert.deepEqual(ids.sort(), expected.sort(), JSON.stringify(lk));
    assertOk(await listMailboxes(k));
  }
});

test('create_account refuses bad names with 400 and gives a repeated name its own domain', async () => {
  const owner_email = 'owner@twin.example';
  const bad = [
    [{}, 'name'],
    [{ name: '', owner_email }, 'name'],
    [{ name: '   ', owner_email }, 'name'],
    [{ name: 'x'.repeat(101), owner_email }, 'name'],
    [{ name: 'a\u0000b', owner_email }, 'name'],
    [{ name: 'line\nbreak', owner_email }, 'name'],
    [{ name: 42, owner_email }, 'name'],
    [{ name: null, owner_email }, 'name'],
    [{ name: ['Acme'], owner_email }, 'name'],
    // Every account has a human owner.
    [{ name: 'No Owner' }, 'owner_email'],
    [{ name: 'Bad Owner', owner_email: 'not an address' }, 'owner_email'],
    [{ name: 'Bad Owner', owner_email: 42 }, 'owner_email'],
  ];
  for (const [body, field] of bad) {
    assertError(await w.call('/admin/create_account', { key: w.adminToken, body }), 400, undefined, field);
  }
  assertError(await w.call('/admin/create_account', { key: w.adminToken, body: { name: 'Ok', owner_email, plan: 'pro' } }), 400, 'unknown_field', 'plan');

  const name = uniq('Twin');
  const a = assertOk(await w.call('/admin/create_account', { key: w.adminToken, body: { name, owner_email } }), 201);
  const b = assertOk(await w.call('/admin/create_account', { key: w.adminToken, body: { name, owner_email } }), 201);
  assert.notEqual(a.account.id, b.account.id);
  assert.notEqual(a.account.default_domain, b.account.default_domain);
  assert.match(b.account.default_domain, /\.multimail\.test$/);
});

// ---------------------------------------------------------------------------------------------
// API keys

test('create_api_key returns the secret once; list_api_keys shows only prefix and last4', async () => {
  const { live, account: acct } = await account('Keys');
  const r = await mkKey(live, { name: 'ci reader', scopes: ['read'] });
  const k = assertOk(r, 201);
  assert.match(k.id, /^key_/);
  assert.match(k.key, KEY_SHAPE.live);
  assert.equal(k.name, 'ci reader');
  assert.deepEqual(k.scopes, ['read']);
  assert.equal(k.mailboxes, null);
  assert.equal(k.livemode, true);
  assert.match(k.created_at, RFC3339);

  // The new key works, with exactly its scope.
  assertOk(await listMailboxes(k.key));
  assertError(await mk(k.key, { address: `x@${acct.default_domain}` }), 403, 'insufficient_scope');

  const list = await listKeys(live);
  const lb = assertOk(list);
  assert.ok(!list.text.includes(k.key), 'the full key appears in list_api_keys');
  assert.ok(!list.text.includes(k.key.slice(12, -4)), 'the secret part of the key appears in list_api_keys');
  const entry = lb.api_keys.find((x) => x.id === k.id);
  assert.ok(entry, list.text);
  assert.ok(!('key' in entry));
  assert.equal(entry.prefix, k.key.slice(0, 12));
  assert.equal(entry.last4, k.key.slice(-4));
  assert.equal(entry.name, 'ci reader');
  assert.deepEqual(entry.scopes, ['read']);
  assert.equal(entry.livemode, true);
  assert.equal(entry.revoked_at, null);
  assert.ok('next_cursor' in lb);
  assert.equal(lb.api_keys.length, 3);
});

test('create_api_key scope rules: send+oversight 422, unknown or empty scopes 400, bad names 400', async () => {
  const { live } = await account('Scopes');
  assertError(await mkKey(live, { name: 'agent', scopes: ['send', 'oversight'] }), 422, 'conflicting_scopes', 'scopes');
  assertError(await mkKey(live, { name: 'agent', scopes: ['read', 'oversight', 'send'] }), 422, 'conflicting_scopes', 'scopes');
  assertError(await mkKey(live, { name: 'agent', scopes: ['superuser'] }), 400, undefined, 'scopes');
  assertError(await mkKey(live, { name: 'agent', scopes: ['read', 'Admin'] }), 400, undefined, 'scopes');
  assertError(await mkKey(live, { name: 'agent', scopes: [] }), 400, undefined, 'scopes');
  assertError(await mkKey(live, { name: 'agent', scopes: 'read' }), 400, undefined, 'scopes');
  assertError(await mkKey(live, { name: 'agent' }), 400, undefined, 'scopes');
  assertError(await mkKey(live, { scopes: ['read'] }), 400, undefined, 'name');
  assertError(await mkKey(live, { name: '', scopes: ['read'] }), 400, undefined, 'name');
  assertError(await mkKey(live, { name: 'a\u0007b', scopes: ['read'] }), 400, undefined, 'name');
  assertError(await mkKey(live, { name: 'agent', scopes: ['read'], expires: 'never' }), 400, 'unknown_field', 'expires');
  const keys = assertOk(await listKeys(live)).api_keys;
  assert.equal(keys.length, 2, 'a refused create_api_key stored a key');
  // Both halves are fine on their own.
  assertOk(await mkKey(live, { name: 'sender', scopes: ['send'] }), 201);
  // Oversight belongs to humans: no API key mints an oversight key; the deployment operator can.
  assertError(await mkKey(live, { name: 'human', scopes: ['oversight', 'read'] }), 403, 'oversight_requires_human', 'scopes');
  assert.match(await w.adminKey(await accountOf(live), { scopes: ['oversight', 'read'] }), KEY_SHAPE.live);
});

test('a test key cannot create a live key (403); it creates test keys', async () => {
  const { test: tkey, live } = await account('Modes');
  const r = await mkKey(tkey, { name: 'sneaky', scopes: ['read'], livemode: true });
  assertError(r, 403, undefined, 'livemode');
  const keys = assertOk(await listKeys(live)).api_keys;
  assert.equal(keys.filter((k) => k.livemode).length, 1, 'a live key was created by a test key');

  const t = await newKey(tkey, { scopes: ['read'] });
  assert.equal(t.livemode, false);
  assert.match(t.key, KEY_SHAPE.test);
  const t2 = await newKey(tkey, { scopes: ['read'], livemode: false });
  assert.match(t2.key, KEY_SHAPE.test);
  const l = await newKey(live, { scopes: ['read'], livemode: false });
  assert.match(l.key, KEY_SHAPE.test, 'a live key may create a test key');
});

test('keys limited to mailboxes, by id or address; unknown or foreign mailboxes → 404', async () => {
  const { live, mbx } = await account('Limited');
  const other = await account('Other');
  const a = assertOk(await mk(live, { address: mbx('alpha') }), 201);
  const b = assertOk(await mk(live, { address: mbx('beta') }), 201);
  const foreign = assertOk(await mk(other.live, { address: other.mbx('gamma') }), 201);

  const byId = await newKey(live, { scopes: ['read', 'send', 'admin'], mailboxes: [a.id] });
  assert.deepEqual(byId.mailboxes, [a.id]);
  const byAddr = await newKey(live, { scopes: ['read'], mailboxes: [mbx('ALPHA')] });
  assert.deepEqual(byAddr.mailboxes, [a.id]);
  const both = await newKey(live, { scopes: ['read'], mailboxes: [a.id, mbx('beta'), a.address] });
  assert.deepEqual([...both.mailboxes].sort(), [a.id, b.id].sort());

  const before = assertOk(await listKeys(live)).api_keys.length;
  for (const m of ['mbx_00000000000000000000000000', mbx('nobody'), foreign.id, foreign.address, 'not a mailbox']) {
    const r = await mkKey(live, { name: 'k', scopes: ['read'], mailboxes: [a.id, m] });
    assertError(r, 404, /not_found/, 'mailboxes');
  }
  assertError(await mkKey(live, { name: 'k', scopes: ['read'], mailboxes: [] }), 400, undefined, 'mailboxes');
  assert.equal(assertOk(await listKeys(live)).api_keys.length, before, 'a refused limited key was stored');

  // The limited key sees and acts on A only.
  const seen = assertOk(await listMailboxes(byId.key));
  assert.deepEqual(seen.mailboxes.map((m) => m.id), [a.id]);
  assert.equal(seen.next_cursor, null);
  assertError(await send(byId.key, b.address), 404, /not_found/);
  assertError(await w.call('/update_mailbox', { key: byId.key, body: { id: b.id, display_name: 'x' } }), 404, /not_found/);
  assertError(await w.call('/delete_mailbox', { key: byId.key, body: { id: b.id } }), 404, /not_found/);
  assertOk(await send(byId.key, a.address), 202);
  // A limited key cannot mint an unlimited one, nor one for a mailbox it cannot see.
  assertError(await mkKey(byId.key, { name: 'wider', scopes: ['read'] }), 403, undefined, 'mailboxes');
  assertError(await mkKey(byId.key, { name: 'wider', scopes: ['read'], mailboxes: [b.id] }), 404, /not_found/, 'mailboxes');
  const narrower = await newKey(byId.key, { scopes: ['read'], mailboxes: [a.id] });
  assert.deepEqual(narrower.mailboxes, [a.id]);
  // The unlimited key still sees both.
  const all = assertOk(await listMailboxes(live)).mailboxes.map((m) => m.id);
  assert.deepEqual(all.sort(), [a.id, b.id].sort());
});

test('list_mailboxes pages through a limited key\'s mailboxes even when others sort first', async () => {
  const { live, mbx } = await account('LimitedPages');
  assertOk(await mk(live, { address: mbx('one') }), 201);
  await sleep(5);
  assertOk(await mk(live, { address: mbx('two') }), 201);
  await sleep(5);
  const three = assertOk(await mk(live, { address: mbx('three') }), 201);
  const k = await newKey(live, { scopes: ['read'], mailboxes: [three.id] });
  const seen = [];
  let cursor;
  for (let i = 0; i < 5; i++) {
    const page = assertOk(await listMailboxes(k.key, cursor ? { limit: '1', cursor } : { limit: '1' }));
    seen.push(...page.mailboxes.map((m) => m.id));
    if (!page.next_cursor) break;
    cursor = page.next_cursor;
  }
  assert.deepEqual(seen, [three.id]);
});

test('revoke_api_key takes effect on the next request; another account\'s key → 404', async () => {
  const { live } = await account('Revoke');
  const other = await account('RevokeOther');
  const k = await newKey(live, { scopes: ['read'] });
  assertOk(await listMailboxes(k.key));

  const r = assertOk(await w.call('/revoke_api_key', { key: live, body: { id: k.id } }));
  assert.equal(r.id, k.id);
  assert.match(r.revoked_at, RFC3339);
  assert.ok(!('key' in r));
  assertError(await listMailboxes(k.key), 401, 'invalid_api_key');
  const entry = assertOk(await listKeys(live)).api_keys.find((x) => x.id === k.id);
  assert.match(entry.revoked_at, RFC3339);

  // Another account's key: 404, and it keeps working.
  const theirs = await newKey(other.live, { scopes: ['read'] });
  assertError(await w.call('/revoke_api_key', { key: live, body: { id: theirs.id } }), 404, 'not_found');
  assertOk(await listMailboxes(theirs.key));
  assertError(await w.call('/revoke_api_key', { key: live, body: { id: 'key_00000000000000000000000000' } }), 404, 'not_found');
  assertError(await w.call('/revoke_api_key', { key: live, body: {} }), 400, undefined, 'id');
  assertError(await w.call('/revoke_api_key', { key: live, body: { id: 7 } }), 400, undefined, 'id');

  // A key may revoke itself; its very next call is refused.
  const self = await newKey(live, { scopes: ['admin'] });
  assertOk(await w.call('/revoke_api_key', { key: self.key, body: { id: self.id } }));
  assertError(await listKeys(self.key), 401, 'invalid_api_key');
});

test('a test key cannot revoke a live key', async () => {
  const { live, test: tkey } = await account('RevokeModes');
  const prod = await newKey(live, { scopes: ['read'] });
  const r = await w.call('/revoke_api_key', { key: tkey, body: { id: prod.id } });
  assert.ok(r.status === 403 || r.status === 404, `expected 403/404, got ${r.status} ${r.text}`);
  assertOk(await listMailboxes(prod.key));
});

// ---------------------------------------------------------------------------------------------
// scopes and modes

test('no scope implies another: missing scope → 403 insufficient_scope, nothing done', async () => {
  const { live, mbx } = await account('ScopeCheck');
  const m = assertOk(await mk(live, { address: mbx('agent') }), 201);
  const reader = await newKey(live, { scopes: ['read'] });
  const overseer = { key: await w.adminKey(await accountOf(live), { scopes: ['oversight'] }) };
  const sender = await newKey(live, { scopes: ['send'] });
  const admin = await newKey(live, { scopes: ['admin'] });

  assertError(await mk(reader.key, { address: mbx('reader-made') }), 403, 'insufficient_scope');
  assertError(await mkKey(reader.key, { name: 'x', scopes: ['read'] }), 403, 'insufficient_scope');
  assertError(await w.call('/update_mailbox', { key: reader.key, body: { id: m.id, oversight_mode: 'autonomous' } }), 403, 'insufficient_scope');
  assertError(await w.call('/delete_mailbox', { key: reader.key, body: { id: m.id } }), 403, 'insufficient_scope');
  assertError(await send(reader.key, m.address), 403, 'insufficient_scope');
  assertError(await send(overseer.key, m.address), 403, 'insufficient_scope');
  assertError(await send(admin.key, m.address), 403, 'insufficient_scope');
  assertError(await mk(overseer.key, { address: mbx('overseer-made') }), 403, 'insufficient_scope');
  assertError(await mk(sender.key, { address: mbx('sender-made') }), 403, 'insufficient_scope');
  assertError(await listMailboxes(sender.key), 403, 'insufficient_scope');
  assertError(await listKeys(reader.key), 403, 'insufficient_scope');
  assertError(await w.call('/revoke_api_key', { key: sender.key, body: { id: reader.id } }), 403, 'insufficient_scope');

  const boxes = assertOk(await listMailboxes(live)).mailboxes;
  assert.deepEqual(boxes.map((b) => b.address), [m.address], 'a refused call created a mailbox');
  assert.equal(boxes[0].oversight_mode, 'gated_send');
  assertOk(await listMailboxes(reader.key));
  assertOk(await send(sender.key, m.address), 202);
});

test('test and live messages are isolated: each mode\'s key gets 404 for the other\'s', async () => {
  const { live, test: tkey, mbx } = await account('Isolation');
  const m = assertOk(await mk(live, { address: mbx('agent') }), 201);
  const t = assertOk(await send(tkey, m.address), 202);
  const l = assertOk(await send(live, m.address), 202);
  assert.match(t.id, /^msg_/);
  assert.match(l.id, /^msg_/);

  assert.equal(assertOk(await w.call('/get_email', { key: tkey, query: { id: t.id } })).id, t.id);
  assert.equal(assertOk(await w.call('/get_email', { key: live, query: { id: l.id } })).id, l.id);
  assertError(await w.call('/get_email', { key: live, query: { id: t.id } }), 404, 'not_found');
  assertError(await w.call('/get_email', { key: tkey, query: { id: l.id } }), 404, 'not_found');
  assertError(await w.call('/cancel_email', { key: live, body: { id: t.id } }), 404, 'not_found');
  assertError(await w.call('/cancel_email', { key: tkey, body: { id: l.id } }), 404, 'not_found');
  // Another account's key of the same mode sees neither.
  const other = await account('IsolationOther');
  assertError(await w.call('/get_email', { key: other.test, query: { id: t.id } }), 404, 'not_found');
  assertError(await w.call('/get_email', { key: other.live, query: { id: l.id } }), 404, 'not_found');
  // The refused cancels changed nothing.
  const rows = await w.sql(`SELECT status FROM messages WHERE id IN ('${t.id}', '${l.id}')`);
  assert.equal(rows.length, 2);
  assert.ok(rows.length > 0 && rows.every((x) => x.status !== 'cancelled'), JSON.stringify(rows));
});

// ---------------------------------------------------------------------------------------------
// mailboxes

test('create_mailbox answers 201 with the mailbox; default mode gated_send; strict modes at once', async () => {
  const { live, test: tkey, mbx } = await account('Mailboxes');
  const r = await mk(live, { address: mbx('Support.Team'), display_name: 'Support' });
  const m = assertOk(r, 201);
  assert.match(m.id, /^mbx_/);
  assert.equal(m.address, mbx('support.team'));
  assert.equal(m.display_name, 'Support');
  assert.equal(m.oversight_mode, 'gated_send');
  assert.equal(m.oversight_email, null);
  assert.equal(m.approval_ttl, 72 * 3600);
  assert.match(m.created_at, RFC3339);
  assert.equal(m.mode_change, null);

  for (const mode of ['read_only', 'gated_all', 'gated_send']) {
    const x = assertOk(await mk(live, { address: mbx(`m-${mode}`), oversight_mode: mode }), 201);
    assert.equal(x.oversight_mode, mode);
    assert.equal(x.mode_change, null);
  }
  const ttl = assertOk(await mk(live, { address: mbx('ttl-h'), approval_ttl: '48h', oversight_email: 'Boss@Example.com' }), 201);
  assert.equal(ttl.approval_ttl, 48 * 3600);
  // Where approval requests go is oversight: a key's address waits for a human (the owner's
  // address applies until then).
  assert.equal(ttl.oversight_email, null);
  assert.equal(ttl.oversight_email_change.status, 'pending');
  assert.match(ttl.oversight_email_change.value, /^boss@example\.com$/i);
  assert.equal(assertOk(await mk(live, { address: mbx('ttl-s'), approval_ttl: 3600 }), 201).approval_ttl, 3600);
  assert.equal(assertOk(await mk(live, { address: mbx('ttl-d'), approval_ttl: '7d' }), 201).approval_ttl, 7 * 86400);

  // Mailboxes belong to the account: a test key sees the live key's mailboxes and may create them.
  const viaTest = assertOk(await mk(tkey, { address: mbx('from-test') }), 201);
  const seen = assertOk(await listMailboxes(live, { limit: '100' })).mailboxes;
  const s = seen.find((x) => x.id === m.id);
  assert.ok(s && seen.some((x) => x.id === viaTest.id), JSON.stringify(seen));
  assert.equal(s.address, m.address);
  assert.equal(s.oversight_mode, 'gated_send');
  assert.equal(assertOk(await listMailboxes(tkey, { limit: '100' })).mailboxes.length, seen.length);
});

test('create_mailbox with monitored/autonomous starts at gated_send with a pending mode change', async () => {
  const { live, mbx } = await account('LooseModes');
  for (const mode of ['monitored', 'autonomous']) {
    const m = assertOk(await mk(live, { address: mbx(mode), oversight_mode: mode }), 201);
    assert.equal(m.oversight_mode, 'gated_send');
    assert.ok(m.mode_change, JSON.stringify(m));
    assert.match(m.mode_change.id, /^chg_/);
    assert.equal(m.mode_change.from, 'gated_send');
    assert.equal(m.mode_change.to, mode);
    assert.equal(m.mode_change.status, 'pending');
    const listed = assertOk(await listMailboxes(live, { limit: '100' })).mailboxes.find((x) => x.id === m.id);
    assert.equal(listed.oversight_mode, 'gated_send', 'the looser mode applied before approval');
    const rows = await w.sql(`SELECT status, to_mode FROM mode_changes WHERE id = '${m.mode_change.id}'`);
    assert.deepEqual(rows, [{ status: 'pending', to_mode: mode }]);
  }
});

test('create_mailbox refuses foreign domains (422), duplicates (409) and malformed input (400)', async () => {
  const { live, test: tkey, mbx, domain } = await account('MbxErrors');
  const other = await account('MbxErrorsOther');
  for (const address of ['agent@example.com', other.mbx('agent'), `agent@sub.${domain}`, `agent@${domain.split('.')[0]}.multimail.test.evil.com`]) {
    assertError(await mk(live, { address }), 422, 'domain_not_verified', 'address');
  }
  const first = assertOk(await mk(live, { address: mbx('dup') }), 201);
  assertError(await mk(live, { address: mbx('dup') }), 409, 'mailbox_exists', 'address');
  assertError(await mk(live, { address: mbx('DUP') }), 409, 'mailbox_exists', 'address');
  assertError(await mk(live, { address: `Dup@${domain.toUpperCase()}` }), 409, 'mailbox_exists', 'address');
  assertError(await mk(tkey, { address: mbx('Dup') }), 409, 'mailbox_exists', 'address');

  for (const address of ['not-an-address', `@${domain}`, 'dup@', `two words@${domain}`, `a@b@${domain}`, '', `x\r\n@${domain}`, `<dup@${domain}>x`]) {
    assertError(await mk(live, { address }), 400, undefined, 'address');
  }
  assertError(await mk(live, {}), 400, undefined, 'address');
  assertError(await mk(live, { address: 12 }), 400, undefined, 'address');
  for (const approval_ttl of ['soon', 0, '0h', '31d', 31 * 86400, 1.5, true, -3600, '', '1w', [3600]]) {
    assertError(await mk(live, { address: mbx('ttl'), approval_ttl }), 400, undefined, 'approval_ttl');
  }
  assertError(await mk(live, { address: mbx('mode'), oversight_mode: 'yolo' }), 400, undefined, 'oversight_mode');
  assertError(await mk(live, { address: mbx('mode'), oversight_mode: 'GATED_ALL ' }), 400, undefined, 'oversight_mode');
  assertError(await mk(live, { address: mbx('oe'), oversight_email: 'nope' }), 400, undefined, 'oversight_email');
  assertError(await mk(live, { address: mbx('dn'), display_name: 'x'.repeat(101) }), 400, undefined, 'display_name');
  assertError(await mk(live, { address: mbx('dn'), display_name: 'a\nb' }), 400, undefined, 'display_name');

  const boxes = assertOk(await listMailboxes(live, { limit: '100' })).mailboxes;
  assert.deepEqual(boxes.map((b) => b.id), [first.id], 'a refused create_mailbox stored something');
});

test('list_mailboxes pages with limit and next_cursor; next_cursor is null on the last page', async () => {
  const { live, mbx } = await account('Pages');
  const created = [];
  for (const l of ['p1', 'p2', 'p3']) {
    created.push(assertOk(await mk(live, { address: mbx(l) }), 201).id);
    await sleep(3);
  }
  const seen = [];
  let cursor = null;
  let pages = 0;
  do {
    const q = { limit: '1' };
    if (cursor) q.cursor = cursor;
    const page = assertOk(await listMailboxes(live, q));
    pages++;
    assert.ok(Array.isArray(page.mailboxes));
    assert.ok('next_cursor' in page);
    assert.ok(page.mailboxes.length <= 1);
    seen.push(...page.mailboxes.map((m) => m.id));
    cursor = page.next_cursor;
    if (pages < 3) assert.equal(typeof cursor, 'string', `page ${pages} of 3 has no next_cursor`);
  } while (cursor && pages < 10);
  assert.equal(cursor, null);
  assert.equal(pages, 3, 'three mailboxes at limit=1 should be exactly three pages');
  assert.deepEqual([...seen].sort(), [...created].sort());
  assert.equal(new Set(seen).size, 3);

  const two = assertOk(await listMailboxes(live, { limit: '2' }));
  assert.equal(two.mailboxes.length, 2);
  assert.equal(typeof two.next_cursor, 'string');
  const rest = assertOk(await listMailboxes(live, { limit: '2', cursor: two.next_cursor }));
  assert.equal(rest.mailboxes.length, 1);
  assert.equal(rest.next_cursor, null);
  const exact = assertOk(await listMailboxes(live, { limit: '3' }));
  assert.equal(exact.mailboxes.length, 3);
  assert.equal(exact.next_cursor, null);

  for (const limit of ['0', '101', '-1', 'ten', '1.5']) {
    assertError(await listMailboxes(live, { limit }), 400, undefined, 'limit');
  }
  assertError(await listMailboxes(live, { colour: 'red' }), 400, 'unknown_field', 'colour');
});

test('update_mailbox: display name and oversight email; stricter mode at once, looser opens a mode change', async () => {
  const acct = await account('Update');
  const { live, mbx } = acct;
  const m = assertOk(await mk(live, { address: mbx('agent') }), 201);
  const u = (body) => w.call('/update_mailbox', { key: live, body });

  let x = assertOk(await u({ id: m.id, display_name: 'Agent Smith', oversight_email: 'boss@example.com' }));
  assert.equal(x.id, m.id);
  assert.equal(x.display_name, 'Agent Smith');
  // The oversight address is a human's to change: the key's request waits; a human approves it.
  assert.equal(x.oversight_email, null);
  assert.equal(x.oversight_email_change.kind, 'oversight_email');
  assert.equal(x.oversight_mode, 'gated_send');
  assert.equal(x.mode_change, null);
  const human = await w.adminKey(acct.account.id, { scopes: ['oversight'] });
  assertOk(await w.call('/decide_email', { key: human, body: { id: x.oversight_email_change.id, decision: 'approve' } }));

  // By address, through `mailbox`.
  x = assertOk(await u({ mailbox: m.address, display_name: 'Agent J' }));
  assert.equal(x.display_name, 'Agent J');
  assert.equal(x.oversight_email, 'boss@example.com', 'an omitted field was cleared');

  // Stricter: applies at once.
  x = assertOk(await u({ id: m.id, oversight_mode: 'gated_all' }));
  assert.equal(x.oversight_mode, 'gated_all');
  assert.equal(x.mode_change, null);
  x = assertOk(await u({ id: m.id, oversight_mode: 'read_only' }));
  assert.equal(x.oversight_mode, 'read_only');
  assertError(await send(live, m.address), 403, 'mailbox_read_only');

  // Looser: the mode stays, a pending change is opened.
  x = assertOk(await u({ id: m.id, oversight_mode: 'autonomous' }));
  assert.equal(x.oversight_mode, 'read_only');
  assert.match(x.mode_change.id, /^chg_/);
  assert.equal(x.mode_change.from, 'read_only');
  assert.equal(x.mode_change.to, 'autonomous');
  assert.equal(x.mode_change.status, 'pending');
  const listed = assertOk(await listMailboxes(live)).mailboxes.find((b) => b.id === m.id);
  assert.equal(listed.oversight_mode, 'read_only');
  assert.equal(listed.display_name, 'Agent J');
  assert.equal(listed.oversight_email, 'boss@example.com');
  assertError(await send(live, m.address), 403, 'mailbox_read_only');
  // A newer looser request replaces the one still waiting: one pending change at a time.
  const y = assertOk(await u({ id: m.id, oversight_mode: 'monitored' }));
  assert.equal(y.oversight_mode, 'read_only');
  assert.notEqual(y.mode_change.id, x.mode_change.id);
  assert.equal(y.mode_change.to, 'monitored');
  const changes = await w.sql(`SELECT id, status FROM mode_changes WHERE mailbox_id = '${m.id}' ORDER BY id`);
  assert.deepEqual(changes, [{ id: x.mode_change.id, status: 'superseded' }, { id: y.mode_change.id, status: 'pending' }]);

  // Bad input is refused and changes nothing.
  assertError(await u({ id: m.id, oversight_email: 'not-an-email' }), 400, undefined, 'oversight_email');
  assertError(await u({ id: m.id, oversight_mode: 'lenient' }), 400, undefined, 'oversight_mode');
  assertError(await u({ id: m.id, approval_ttl: 'forever' }), 400, undefined, 'approval_ttl');
  assertError(await u({ display_name: 'nobody' }), 400, undefined, 'id');
  assertError(await u({ id: m.id, address: mbx('renamed') }), 400, 'unknown_field', 'address');
  assertError(await u({ id: 'mbx_00000000000000000000000000', display_name: 'x' }), 404, /not_found/);
  const after = assertOk(await listMailboxes(live)).mailboxes.find((b) => b.id === m.id);
  assert.equal(after.oversight_email, 'boss@example.com');
  assert.equal(after.oversight_mode, 'read_only');
  assert.equal(after.approval_ttl, 72 * 3600);
});

test('delete_mailbox: then 404 for update/delete/send, gone from the list, and the address is free again', async () => {
  const { live, mbx } = await account('Delete');
  const m = assertOk(await mk(live, { address: mbx('temp') }), 201);
  const keep = assertOk(await mk(live, { address: mbx('keep') }), 201);
  const d = assertOk(await w.call('/delete_mailbox', { key: live, body: { id: m.id } }));
  assert.equal(d.id, m.id);
  assert.equal(d.deleted, true);
  assert.match(d.deleted_at, RFC3339);

  assertError(await w.call('/update_mailbox', { key: live, body: { id: m.id, display_name: 'x' } }), 404, /not_found/);
  assertError(await w.call('/update_mailbox', { key: live, body: { mailbox: m.address, display_name: 'x' } }), 404, /not_found/);
  assertError(await w.call('/delete_mailbox', { key: live, body: { id: m.id } }), 404, /not_found/);
  assertError(await send(live, m.address), 404, /not_found/);
  assertError(await mkKey(live, { name: 'k', scopes: ['read'], mailboxes: [m.id] }), 404, /not_found/);
  const list = assertOk(await listMailboxes(live)).mailboxes.map((b) => b.id);
  assert.deepEqual(list, [keep.id]);

  const again = assertOk(await mk(live, { address: mbx('TEMP') }), 201);
  assert.notEqual(again.id, m.id);
  assert.equal(again.address, m.address);
  assertOk(await send(live, again.address), 202);
  // Deleting by address works too.
  assertOk(await w.call('/delete_mailbox', { key: live, body: { mailbox: again.address } }));
  assertError(await w.call('/delete_mailbox', { key: live, body: {} }), 400, undefined, 'id');
});

test('another account\'s mailbox is 404 everywhere, never 403, and is left untouched', async () => {
  const mine = await account('Mine');
  const theirs = await account('Theirs');
  const m = assertOk(await mk(theirs.live, { address: theirs.mbx('private'), display_name: 'Private' }), 201);
  for (const body of [{ id: m.id, display_name: 'pwned' }, { mailbox: m.address, display_name: 'pwned' }, { id: m.id, oversight_mode: 'read_only' }]) {
    assertError(await w.call('/update_mailbox', { key: mine.live, body }), 404, /not_found/);
  }
  assertError(await w.call('/delete_mailbox', { key: mine.live, body: { id: m.id } }), 404, /not_found/);
  assertError(await w.call('/delete_mailbox', { key: mine.test, body: { mailbox: m.address } }), 404, /not_found/);
  // Sending from it: 404, or 422 domain_not_verified (their domain is not ours), but the same
  // answer whether or not that mailbox exists, so nothing leaks.
  for (const key of [mine.live, mine.test]) {
    const exists = await send(key, m.address);
    const missing = await send(key, theirs.mbx('nobody-here'));
    assert.ok(exists.status === 404 || (exists.status === 422 && exists.body.error.code === 'domain_not_verified'), exists.text);
    assertError(exists, exists.status, exists.body.error.code, 'from');
    assertError(missing, exists.status, exists.body.error.code, 'from');
  }
  assertError(await mkKey(mine.live, { name: 'k', scopes: ['read'], mailboxes: [m.id] }), 404, /not_found/);

  const still = assertOk(await listMailboxes(theirs.live)).mailboxes;
  assert.equal(still.length, 1);
  assert.equal(still[0].id, m.id);
  assert.equal(still[0].display_name, 'Private');
  assert.equal(still[0].oversight_mode, 'gated_send');
  assert.deepEqual(assertOk(await listMailboxes(mine.live)).mailboxes, []);
});

// ---------------------------------------------------------------------------------------------
// the error model

test('unknown paths → 404 not_found and wrong methods → 405 method_not_allowed, as JSON', async () => {
  const { live } = await account('Routes');
  for (const [path, opts] of [
    ['/nope', {}],
    ['/', {}],
    ['/send_emails', { key: live, body: {} }],
    ['/admin', {}],
    ['/admin/create_account/x', { key: w.adminToken, body: { name: 'x', owner_email: 'o@x.example' } }],
    ['/CREATE_MAILBOX', { key: live, body: { address: 'a@b.c' } }],
    ['/list_mailboxes/', { key: live }],
    ['/%00', {}],
  ]) {
    const r = await w.call(path, opts);
    assertError(r, 404, 'not_found');
  }
  for (const [path, method, allowed] of [
    ['/create_mailbox', 'GET', 'POST'],
    ['/list_mailboxes', 'POST', 'GET'],
    ['/create_mailbox', 'DELETE', 'POST'],
    ['/create_mailbox', 'PUT', 'POST'],
    ['/update_mailbox', 'PATCH', 'POST'],
    ['/admin/create_account', 'GET', 'POST'],
    ['/healthz', 'POST', 'GET'],
  ]) {
    const r = await w.call(path, { key: live, method, ...(method === 'GET' ? {} : { body: {} }) });
    assertError(r, 405, 'method_not_allowed');
    assert.ok(r.body.error.message.includes(allowed), r.text);
  }
});

// RFC 9110 §15.5.6: a 405 MUST carry an Allow header.
test('405 answers carry an Allow header naming the accepted methods', async () => {
  const { live } = await account('Allow');
  const r = await w.call('/create_mailbox', { key: live, method: 'GET' });
  assertError(r, 405, 'method_not_allowed');
  assert.equal(r.headers.get('allow'), 'POST');
  const g = await w.call('/list_mailboxes', { key: live, method: 'DELETE' });
  assertError(g, 405, 'method_not_allowed');
  assert.equal(g.headers.get('allow'), 'GET');
  // Methods workers-rs does not know by name (schemathesis sent QUERY and got 200: its Method
  // type reads an unknown method as GET) are 405 too, and change nothing. (A method workerd
  // itself does not know, such as FOO, is answered 501 by the runtime before the worker runs.)
  const before = (await w.call('/list_mailboxes', { key: live })).body.mailboxes.length;
  for (const method of ['QUERY', 'PROPFIND', 'SEARCH', 'REPORT', 'MKCOL', 'PURGE', 'COPY', 'LOCK']) {
    for (const [path, allow] of [['/list_mailboxes', 'GET'], ['/create_mailbox', 'POST'], ['/healthz', 'GET']]) {
      const r = await w.call(path, { key: live, method, ...(allow === 'POST' ? { body: { address: `q-${method.toLowerCase()}@example.com` } } : {}) });
      assertError(r, 405, 'method_not_allowed');
      assert.equal(r.headers.get('allow'), allow, `${method} ${path}`);
    }
  }
  assert.equal((await w.call('/list_mailboxes', { key: live })).body.mailboxes.length, before, 'an undeclared method changed something');
});

test('POST bodies: 415 without JSON content type, 400 invalid_json, 400 unknown_field/wrong type with field', async () => {
  const { live, mbx } = await account('Bodies');
  const good = JSON.stringify({ address: mbx('never') });
  for (const ct of [undefined, 'text/plain', 'application/x-www-form-urlencoded', 'application/jsonx', 'multipart/form-data; boundary=x', '']) {
    const headers = ct === undefined ? {} : { 'Content-Type': ct };
    const r = await w.call('/create_mailbox', { key: live, raw: ct === undefined ? new Blob([good]) : good, headers });
    assertError(r, 415, 'unsupported_media_type');
  }
  for (const raw of ['{"address": ', '{address: "x"}', "{'address': 'x'}", '', '   ', '{"a":1}{"b":2}', 'nul', '{"address":"x",}']) {
    const r = await w.call('/create_mailbox', { key: live, raw, headers: { 'Content-Type': 'application/json' } });
    assertError(r, 400, 'invalid_json');
  }
  for (const raw of ['[]', `[${good}]`, 'null', '"string"', '42', 'true']) {
    const r = await w.call('/create_mailbox', { key: live, raw, headers: { 'Content-Type': 'application/json' } });
    assertError(r, 400, 'invalid_json');
  }
  assertError(await mk(live, { address: mbx('x'), colour: 'red' }), 400, 'unknown_field', 'colour');
  assertError(await mkKey(live, { name: 'k', scopes: ['read'], Scopes: ['admin'] }), 400, 'unknown_field', 'Scopes');
  assertError(await mk(live, { address: 5 }), 400, 'invalid_request', 'address');
  assertError(await mk(live, { address: mbx('x'), display_name: { first: 'A' } }), 400, 'invalid_request', 'display_name');
  assertError(await mk(live, { address: mbx('x'), oversight_mode: 3 }), 400, 'invalid_request', 'oversight_mode');
  assertError(await mkKey(live, { name: 'k', scopes: ['read'], livemode: 'yes' }), 400, 'invalid_request', 'livemode');
  // Parameters on the content type are fine.
  assertOk(await w.call('/create_mailbox', { key: live, raw: good, headers: { 'Content-Type': 'Application/JSON; charset=utf-8' } }), 201);
});

test('bodies over 4 MiB → 413 payload_too_large, with or without Content-Length', async () => {
  const { live, mbx } = await account('Big');
  const big = JSON.stringify({ address: mbx('big'), display_name: 'x'.repeat(4 * 1024 * 1024 + 10) });
  const r = await w.call('/create_mailbox', { key: live, raw: big, headers: { 'Content-Type': 'application/json' } });
  assertError(r, 413, 'payload_too_large');

  // Chunked, so the worker only learns the size while reading.
  const url = `${w.base}/create_mailbox`;
  const enc = new TextEncoder();
  const chunk = enc.encode('x'.repeat(256 * 1024));
  let sent = 0;
  const stream = new ReadableStream({
    start(c) { c.enqueue(enc.encode(`{"address":"${mbx('big2')}","display_name":"`)); },
    pull(c) {
      if (sent >= 20) { c.enqueue(enc.encode('"}')); c.close(); return; }
      sent++;
      c.enqueue(chunk);
    },
  });
  const res = await fetch(url, { method: 'POST', body: stream, duplex: 'half', headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${live}` } });
  const text = await res.text();
  assertError({ status: res.status, headers: res.headers, text, body: JSON.parse(text) }, 413, 'payload_too_large');

  // A body just under the limit is read (and refused for its content, not its size).
  const under = JSON.stringify({ address: mbx('under'), display_name: 'x'.repeat(4 * 1024 * 1024 - 200) });
  assertError(await w.call('/create_mailbox', { key: live, raw: under, headers: { 'Content-Type': 'application/json' } }), 400, undefined, 'display_name');
  assert.deepEqual(assertOk(await listMailboxes(live)).mailboxes, []);
});

test('missing or malformed Authorization → 401 invalid_api_key on every keyed route', async () => {
  const { live } = await account('Auth');
  const badHeaders = [
    {},
    { Authorization: '' },
    { Authorization: 'Bearer' },
    { Authorization: 'Bearer ' },
    { Authorization: live },                                   // no scheme
    { Authorization: `Basic ${Buffer.from(`${live}:`).toString('base64')}` },
    { Authorization: `Bearer ${live.slice(0, -1)}` },
    { Authorization: `Bearer ${live}x` },
    { Authorization: `Bearer ${fakeKey('live')}` },            // well-formed, unknown
    { Authorization: `Bearer ${fakeKey('test')}` },
    { Authorization: `Bearer ${live.replace('mm_live_', 'mm_test_')}` }, // right secret, wrong mode
    { Authorization: `Bearer ${w.adminToken}` },               // the operator token is not an API key
    { Authorization: `Bearer sk_live_${'a'.repeat(43)}` },
    { Authorization: `Bearer ${'x'.repeat(8000)}` },
  ];
  const routes = [
    ['/create_mailbox', { body: { address: 'a@b.test' } }],
    ['/list_mailboxes', {}],
    ['/create_api_key', { body: { name: 'k', scopes: ['read'] } }],
    ['/list_api_keys', {}],
    ['/revoke_api_key', { body: { id: 'key_x' } }],
    ['/update_mailbox', { body: { id: 'mbx_x' } }],
    ['/delete_mailbox', { body: { id: 'mbx_x' } }],
    ['/send_email', { body: {} }],
    ['/get_email', { query: { id: 'msg_x' } }],
    ['/cancel_email', { body: { id: 'msg_x' } }],
  ];
  for (const headers of badHeaders) {
    for (const [path, opts] of routes) {
      assertError(await w.call(path, { ...opts, headers: { ...headers, ...(opts.body ? { 'Content-Type': 'application/json' } : {}) } }), 401, 'invalid_api_key');
    }
  }
  // Auth comes before the body: a bad key with a bad body is still 401.
  assertError(await w.call('/create_mailbox', { raw: 'not json', headers: { 'Content-Type': 'text/plain' } }), 401, 'invalid_api_key');
  assertOk(await listMailboxes(live));
});

test('no input gives a 500 or a non-JSON answer (nasty values over every POST route)', async () => {
  const acct = await account('Nasty');
  const { live, test: tkey, mbx } = acct;
  const box = assertOk(await mk(live, { address: mbx('nasty') }), 201);
  const victimKey = await newKey(live, { scopes: ['read'] });
  // Spread the calls over several keys so the per-key rate limit (600/min) is never reached.
  const keys = [live, tkey, (await newKey(live, { scopes: ['admin', 'send', 'read'] })).key, (await newKey(tkey, { scopes: ['admin', 'send', 'read'] })).key];
  const oversightKey = await w.adminKey(acct.account.id, { scopes: ['oversight'] });

  let deep = 'null';
  for (let i = 0; i < 2000; i++) deep = `{"a":${deep}}`;
  const nasty = [
    null, '', ' ', '\u0000', `a\u0000b@${acct.domain}`, 'x'.repeat(200_000), '💥🔥'.repeat(2000), 'Ω≈ç√∫˜µ≤≥÷',
    '\u202Egnp.exe', '\uFEFFagent@' + acct.domain, 'x\r\nBcc: victim@example.com', `agent@${acct.domain}\r\nBcc: victim@example.com`,
    'x\nContent-Type: text/html\n\n<script>', '%0d%0aSet-Cookie:%20a=b', '<script>alert(1)</script>', "'; DROP TABLE mailboxes; --",
    '../../../etc/passwd', '\ud800', 0, -1, 1e308, 2 ** 53 + 1, 3.14, true, false, [], [null, 1, 'a'], {}, { a: { b: { c: { d: [{}] } } } },
    'mbx_' + 'Z'.repeat(26), 'key_' + 'Z'.repeat(26), fakeKey('live'), '9'.repeat(400), { __proto__: null, constructor: 'x' },
  ];
  const routes = [
    { path: '/admin/create_account', key: w.adminToken, base: () => ({ name: uniq('N'), owner_email: 'owner@n.example' }), fields: ['name', 'owner_email'] },
    { path: '/create_mailbox', base: (i) => ({ address: mbx(`n${i}`) }), fields: ['address', 'display_name', 'oversight_mode', 'oversight_email', 'approval_ttl', 'idempotency_key'] },
    { path: '/update_mailbox', base: () => ({ id: box.id }), fields: ['id', 'mailbox', 'display_name', 'oversight_mode', 'oversight_email', 'approval_ttl'] },
    { path: '/delete_mailbox', base: () => ({ id: 'mbx_00000000000000000000000000' }), fields: ['id', 'mailbox'] },
    { path: '/create_api_key', base: () => ({ name: 'n', scopes: ['read'] }), fields: ['name', 'scopes', 'mailboxes', 'livemode', 'idempotency_key'] },
    { path: '/revoke_api_key', base: () => ({ id: 'key_00000000000000000000000000' }), fields: ['id'] },
    { path: '/send_email', base: () => ({ from: box.address, to: 'ada@example.com', subject: 's', text: 't' }),
      fields: ['from', 'to', 'cc', 'bcc', 'reply_to', 'subject', 'text', 'html', 'markdown', 'headers', 'attachments', 'oversight_mode', 'metadata', 'send_at', 'idempotency_key'] },
    { path: '/cancel_email', base: () => ({ id: 'msg_00000000000000000000000000' }), fields: ['id', 'message_id', 'reason'] },
    { path: '/send_email', base: () => ({ from: box.address, to: 'ada@example.com', subject: 's', text: 't' }), fields: ['approval_ttl', 'category', 'attachments', 'headers'] },
    { path: '/decide_email', key: oversightKey, base: () => ({ id: 'msg_00000000000000000000000000', decision: 'approve' }), fields: ['id', 'message_id', 'decision', 'reason'] },
    { path: '/tag_email', base: () => ({ id: 'msg_00000000000000000000000000', tags: ['a'] }), fields: ['id', 'tags', 'remove'] },
    { path: '/reply_email', base: () => ({ id: 'msg_00000000000000000000000000', text: 'x' }),
      fields: ['id', 'text', 'html', 'markdown', 'cc', 'bcc', 'reply_all', 'attachments', 'headers', 'oversight_mode', 'metadata', 'send_at', 'approval_ttl'] },
    { path: '/add_suppression', base: () => ({ address: 'blocked@example.com' }), fields: ['address', 'reason'] },
    { path: '/remove_suppression', base: () => ({ address: 'nobody@example.com' }), fields: ['address'] },
    { path: '/create_webhook', base: () => ({ url: 'https://hooks.example.com/in', events: ['*'] }), fields: ['url', 'events', 'mailbox', 'format'] },
    { path: '/delete_webhook', base: () => ({ id: 'whk_00000000000000000000000000' }), fields: ['id'] },
    { path: '/rotate_webhook_secret', base: () => ({ id: 'whk_00000000000000000000000000' }), fields: ['id'] },
    { path: '/create_domain', base: () => ({ domain: 'nasty-base.example' }), fields: ['domain'] },
    { path: '/verify_domain', base: () => ({ id: 'dom_00000000000000000000000000' }), fields: ['id'] },
    { path: '/delete_domain', base: () => ({ id: 'dom_00000000000000000000000000' }), fields: ['id'] },
  ];
  const failures = [];
  let calls = 0;
  const check = async (label, path, opts) => {
    calls++;
    let r;
    try {
      r = await w.call(path, opts);
    } catch (e) {
      failures.push(`${label}: request failed: ${e.message}`);
      return;
    }
    const ok = r.status < 500 && r.body !== null && /^application\/json/.test(r.headers.get('content-type') ?? '')
      && r.headers.get('request-id') && (r.status < 400 || (r.body.error && r.body.error.request_id === r.headers.get('request-id')));
    if (!ok) failures.push(`${label}: ${r.status} ${r.text.slice(0, 200)}`);
  };
  for (let i = 0; i < nasty.length; i++) {
    for (const [j, route] of routes.entries()) {
      for (const f of [route.fields[i % route.fields.length], route.fields[(i + 3) % route.fields.length]]) {
        const body = { ...route.base(`${i}-${j}-${f}`), [f]: nasty[i] };
        await check(`${route.path} ${f}=${JSON.stringify(nasty[i])?.slice(0, 40)}`, route.path, { key: route.key ?? keys[(i + j) % keys.length], body });
      }
    }
    // The whole body as the nasty value, and every field at once.
    const route = routes[i % routes.length];
    const all = Object.fromEntries(route.fields.map((f) => [f, nasty[i]]));
    await check(`${route.path} all=${JSON.stringify(nasty[i])?.slice(0, 40)}`, route.path, { key: route.key ?? keys[i % keys.length], body: all });
  }
  const raws = [deep, '['.repeat(100_000), '{"a":'.repeat(5000), '{"address":"\\ud800"}', '{"address":"a","address":"b"}', '\uFEFF{"address":"x"}',
    '{"approval_ttl":1e999999,"address":"x"}', '{"approval_ttl":-0,"address":"x"}', '{"name":"\\u0000"}', Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d])];
  for (const [i, raw] of raws.entries()) {
    for (const route of routes) {
      await check(`${route.path} raw#${i}`, route.path, { key: route.key ?? keys[i % keys.length], raw, headers: { 'Content-Type': 'application/json' } });
    }
  }
  for (const [i, headers] of [
    { 'Idempotency-Key': 'é' }, { 'Idempotency-Key': ' ' }, { 'Idempotency-Key': 'k'.repeat(300) }, { 'Idempotency-Key': '' },
    { 'Content-Type': 'application/json; charset=utf-16' }, { 'Content-Type': 'application/json; boundary=";;;"' },
    { Authorization: `Bearer ${'é'.repeat(100)}` },
  ].entries()) {
    await check(`headers#${i}`, '/create_mailbox', { key: headers.Authorization ? undefined : keys[i % keys.length], body: { address: mbx(`h${i}`) }, headers: { 'Content-Type': 'application/json', ...headers } });
  }
  for (const q of [{ limit: '' }, { limit: '1e3' }, { cursor: '\u0000' }, { cursor: "' OR 1=1 --" }, { cursor: 'x'.repeat(20000) }, { id: '' }]) {
    await check(`list_mailboxes ${JSON.stringify(q).slice(0, 40)}`, '/list_mailboxes', { key: live, query: q });
    await check(`get_email ${JSON.stringify(q).slice(0, 40)}`, '/get_email', { key: live, query: q });
  }
  assert.ok(calls >= 300, `only ${calls} calls`);
  assert.deepEqual(failures, [], `${failures.length} of ${calls} calls answered a 5xx or non-JSON`);
  // The keys survived: nothing in the nasty inputs revoked or broke them.
  assertOk(await listMailboxes(victimKey.key));
  const [row] = await w.sql(`SELECT count(*) AS n FROM mailboxes WHERE address = '${box.address}' AND deleted_at IS NULL`);
  assert.equal(row.n, 1);
});

test('rejected create_mailbox / create_api_key calls store nothing (checked in D1)', async () => {
  const { live, test: tkey, mbx } = await account('Nothing');
  const other = await account('NothingOther');
  const theirs = assertOk(await mk(other.live, { address: other.mbx('x') }), 201);
  const c0 = await counts();
  let n = 0;
  const idem = () => ({ 'Idempotency-Key': `nothing-${process.pid}-${++n}` });
  const rejected = [
    mk(live, { address: 'agent@example.com', oversight_mode: 'autonomous' }),            // 422 foreign domain
    mk(live, { address: 'broken', oversight_mode: 'monitored' }, idem()),                 // 400
    mk(live, { address: mbx('a'), oversight_mode: 'autonomous', approval_ttl: 'never' }, idem()),
    mk(live, { address: mbx('a'), oversight_mode: 'monitored', oversight_email: 'x' }, idem()),
    mk(live, { address: mbx('a'), oversight_mode: 'bogus' }, idem()),
    mk(live, { address: mbx('a'), extra: 1 }, idem()),
    mk(live, { address: mbx('a'), display_name: 'a\u0000' }, idem()),
    mkKey(live, { name: 'k', scopes: ['send', 'oversight'] }),                            // 422
    mkKey(live, { name: 'k', scopes: ['root'] }, idem()),
    mkKey(live, { name: 'k', scopes: ['read'], mailboxes: [theirs.id] }),                 // 404
    mkKey(tkey, { name: 'k', scopes: ['read'], livemode: true }),                         // 403
    mkKey(live, { name: '', scopes: ['read'] }, idem()),
  ];
  for (const p of rejected) {
    const r = await p;
    assert.ok(r.status >= 400 && r.status < 500, `${r.status} ${r.text}`);
  }
  // Sequential too, in case of ordering: scopes that a read key lacks.
  const reader = await newKey(live, { scopes: ['read'] });
  assertError(await mk(reader.key, { address: mbx('b') }), 403, 'insufficient_scope');
  const c1 = await counts();
  assert.equal(c1.mailboxes, c0.mailboxes, 'a rejected call stored a mailbox');
  assert.equal(c1.mode_changes, c0.mode_changes, 'a rejected call stored a mode change');
  assert.equal(c1.api_keys, c0.api_keys + 1, 'a rejected create_api_key stored a key (only `reader` was created)');
  assert.equal(c1.idempotency, c0.idempotency, '400 answers were stored under their Idempotency-Key');

  // The counter does move when something is created (so the checks above can fail).
  assertOk(await mk(live, { address: mbx('c'), oversight_mode: 'autonomous' }), 201);
  const c2 = await counts();
  assert.equal(c2.mailboxes, c0.mailboxes + 1);
  assert.equal(c2.mode_changes, c0.mode_changes + 1);
  const [row] = await w.sql('SELECT count(*) AS n FROM mailboxes');
  assert.equal(row.n, c2.mailboxes);
});

// ---------------------------------------------------------------------------------------------
// idempotency on a non-send POST

test('create_mailbox with an Idempotency-Key replays the first answer; another body → 422', async () => {
  const { live, test: tkey, mbx } = await account('Idem');
  const other = await account('IdemOther');
  const K = `idem-mbx-${randomBytes(6).toString('hex')}`;
  const body = { address: mbx('once'), display_name: 'Once' };
  const first = await mk(live, body, { 'Idempotency-Key': K });
  const a = assertOk(first, 201);
  assert.equal(first.headers.get('idempotent-replayed'), null);
  const second = await mk(live, { display_name: 'Once', address: mbx('once') }, { 'Idempotency-Key': K }); // key order differs
  const b = assertOk(second, 201);
  assert.equal(second.headers.get('idempotent-replayed'), 'true');
  assert.equal(b.id, a.id);
  assert.deepEqual(b, a);
  // The key in the body works the same way.
  const third = await mk(live, { ...body, idempotency_key: K });
  assert.equal(assertOk(third, 201).id, a.id);
  assert.equal(third.headers.get('idempotent-replayed'), 'true');
  assert.equal(assertOk(await listMailboxes(live)).mailboxes.length, 1);

  const reused = await mk(live, { address: mbx('twice') }, { 'Idempotency-Key': K });
  assertError(reused, 422, 'idempotency_key_reused');
  assertError(await mk(live, { ...body, idempotency_key: `${K}-other` }, { 'Idempotency-Key': K }), 400, undefined, 'idempotency_key');
  assertError(await mk(live, body, { 'Idempotency-Key': 'k'.repeat(256) }), 400, undefined, 'idempotency_key');
  assertOk(await mk(live, { address: mbx('maxkey') }, { 'Idempotency-Key': 'k'.repeat(255) }), 201);

  // Keys are scoped to the account and to test/live: the same key runs afresh elsewhere.
  const t = assertOk(await mk(tkey, { address: mbx('test-side') }, { 'Idempotency-Key': K }), 201);
  assert.notEqual(t.id, a.id);
  const o = assertOk(await mk(other.live, { address: other.mbx('once') }, { 'Idempotency-Key': K }), 201);
  assert.notEqual(o.id, a.id);

  // A 400 is not stored: the same key then runs a corrected request.
  const K2 = `${K}-fix`;
  assertError(await mk(live, { address: 'broken' }, { 'Idempotency-Key': K2 }), 400, undefined, 'address');
  const fixed = await mk(live, { address: mbx('fixed') }, { 'Idempotency-Key': K2 });
  assertOk(fixed, 201);
  assert.equal(fixed.headers.get('idempotent-replayed'), null);

  const addrs = assertOk(await listMailboxes(live, { limit: '100' })).mailboxes.map((m) => m.address).sort();
  assert.deepEqual(addrs, [mbx('fixed'), mbx('maxkey'), mbx('once'), mbx('test-side')].sort());
});

test('create_api_key replayed under its Idempotency-Key does not reveal the secret again', async () => {
  const { live } = await account('IdemKey');
  const K = `idem-key-${randomBytes(6).toString('hex')}`;
  const first = await mkKey(live, { name: 'deploy', scopes: ['send'] }, { 'Idempotency-Key': K });
  const a = assertOk(first, 201);
  assert.match(a.key, KEY_SHAPE.live);
  const again = await mkKey(live, { name: 'deploy', scopes: ['send'] }, { 'Idempotency-Key': K });
  assert.equal(again.status, 201, again.text);
  assert.equal(again.headers.get('idempotent-replayed'), 'true');
  assert.equal(again.body.id, a.id);
  assert.ok(!('key' in again.body), again.text);
  assert.ok(!again.text.includes(a.key), 'the replay reveals the secret');
  assert.ok(!again.text.includes(a.key.slice(12, -4)), 'the replay reveals the secret part');
  assert.deepEqual(again.body.scopes, ['send']);
  const keys = assertOk(await listKeys(live)).api_keys;
  assert.equal(keys.filter((k) => k.name === 'deploy').length, 1, 'the replay created a second key');
  // The secret is not stored with the idempotency record either.
  const rows = await w.sql(`SELECT * FROM idempotency`);
  assert.ok(!JSON.stringify(rows).includes(a.key.slice(12, -4)), 'the secret is stored in the idempotency table');
  assertError(await mkKey(live, { name: 'deploy', scopes: ['read'] }, { 'Idempotency-Key': K }), 422, 'idempotency_key_reused');
});

// ---------------------------------------------------------------------------------------------
// what a call costs (the Server-Timing header; bench/README.md's targets)

/** The Server-Timing header's metrics: {d1: {count, dur}, queue: …, do: …, total: {dur}}. */
function timing(r) {
  const h = r.headers.get('server-timing');
  assert.ok(h, 'no Server-Timing header');
  const out = {};
  for (const part of h.split(',')) {
    const [name, ...params] = part.trim().split(';');
    out[name] = Object.fromEntries(params.map((p) => p.split('=')).map(([k, v]) => [k, Number(v)]));
  }
  for (const m of ['d1', 'queue', 'do']) assert.ok(Number.isInteger(out[m]?.count) && out[m].dur >= 0, `${m} in ${h}`);
  assert.ok(out.total.dur >= out.d1.dur, h);
  return out;
}

test('send_email costs two D1 round trips and one queue send; a held send adds the Approval object; a replay costs one', async () => {
  const auto = await w.sender(uniq('Cost Auto'), { mode: 'autonomous' });
  const body = { from: auto.from, to: 'ada@example.com', subject: 'cost', text: 'hello' };
  const K = `cost-${randomBytes(6).toString('hex')}`;
  const sent = await w.call('/send_email', { key: auto.live, body, headers: { 'Idempotency-Key': K } });
  assert.equal(sent.status, 202, sent.text);
  assert.equal(sent.body.status, 'queued');
  let t = timing(sent);
  assert.deepEqual([t.d1.count, t.queue.count, t.do.count], [2, 1, 0], sent.headers.get('server-timing'));
  // Without a key, the same.
  t = timing(await w.call('/send_email', { key: auto.live, body: { ...body, subject: 'no key' } }));
  assert.deepEqual([t.d1.count, t.queue.count, t.do.count], [2, 1, 0]);
  // The replay is answered from the key's lookup: one round trip, nothing sent.
  const again = await w.call('/send_email', { key: auto.live, body, headers: { 'Idempotency-Key': K } });
  assert.equal(again.headers.get('idempotent-replayed'), 'true');
  assert.equal(again.body.id, sent.body.id);
  t = timing(again);
  assert.deepEqual([t.d1.count, t.queue.count, t.do.count], [1, 0, 0]);

  // Held: the same two D1 round trips, the Approval object, the events kick and the request
  // to the oversight address.
  const gated = await w.sender(uniq('Cost Gated'), { mode: 'gated_send' });
  const held = await w.call('/send_email', { key: gated.live, body: { ...body, from: gated.from }, headers: { 'Idempotency-Key': K } });
  assert.equal(held.body.status, 'pending_approval', held.text);
  t = timing(held);
  assert.deepEqual([t.d1.count, t.do.count], [2, 1]);
  assert.ok(t.queue.count <= 2, held.headers.get('server-timing'));

  // The audit entry was stored with the message (no write after the answer), and it is in
  // the chain once the log is read.
  const log = await w.call('/get_audit_log', { key: auto.live, query: { action: 'send_email' } });
  const entries = log.body.entries.filter((e) => e.message_id === sent.body.id && e.outcome !== 'replayed');
  assert.equal(entries.length, 1, log.text);
  assert.equal(entries[0].status, 202);
  assert.equal(entries[0].idempotency_key, K);
  assert.equal(entries[0].outcome, 'ok');
  assert.equal(log.body.entries.filter((e) => e.outcome === 'replayed').length, 1, 'the replay is audited too');
  assert.equal((await w.call('/verify_audit_log', { key: auto.live })).body.ok, true);
  // Errors carry the header too.
  timing(await w.call('/send_email', { key: auto.live, body: { from: auto.from } }));

  // Each delivery: two D1 round trips (claim with its reads; the outcome), from the consumer's
  // own cost line after each batch.
  const costs = await eventually(async () => {
    const lines = [...w.log().matchAll(/delivery cost: messages=(\d+) d1=(\d+) queue=(\d+)/g)].map((m) => m.slice(1).map(Number));
    return lines.length > 0 && lines;
  }, { ms: 20_000 });
  assert.ok(costs, 'no delivery cost line in the log');
  for (const [messages, d1] of costs) assert.ok(d1 <= 2 * messages, `${d1} D1 round trips for ${messages} deliveries`);
});

test('an idempotency key reserved by a call that is then refused (scope) is given back', async () => {
  const auto = await w.sender(uniq('Refused Reservation'), { mode: 'autonomous' });
  const reader = assertOk(await mkKey(auto.live, { name: 'reader', scopes: ['read'] }), 201).key;
  const K = `refused-${randomBytes(6).toString('hex')}`;
  const body = { from: auto.from, to: 'ada@example.com', subject: 'x', text: 'y' };
  assertError(await w.call('/send_email', { key: reader, body, headers: { 'Idempotency-Key': K } }), 403, 'insufficient_scope');
  assert.equal((await w.sql(`SELECT count(*) AS n FROM idempotency WHERE key = '${K}'`))[0].n, 0, 'the reservation stayed');
  // The key is free for the caller that may send (a kept reservation would answer 409 or 422).
  const ok = await w.call('/send_email', { key: auto.live, body, headers: { 'Idempotency-Key': K } });
  assert.equal(ok.status, 202, ok.text);
  assert.equal(ok.headers.get('idempotent-replayed'), null);
});

// ---------------------------------------------------------------------------------------------
// rate limits (a second worker with a tiny limit)

test('rate limit: the 6th call in a minute with one key → 429 rate_limited with Retry-After; other keys unaffected', async () => {
  const rl = await startWorker({ vars: { RATE_LIMIT_PER_MINUTE: '5' } });
  try {
    const r0 = await rl.call('/admin/create_account', { key: rl.adminToken, body: { name: 'Rate', owner_email: 'owner@rate.example' } });
    const acct = assertOk(r0, 201);
    const live = acct.api_keys.find((k) => k.livemode).key;
    const tkey = acct.api_keys.find((k) => !k.livemode).key;
    const other = assertOk(await rl.call('/admin/create_account', { key: rl.adminToken, body: { name: 'Rate Other', owner_email: 'owner@rate.example' } }), 201).api_keys[0].key;

    // Fixed one-minute windows: do not straddle a boundary.
    const left = 60_000 - (Date.now() % 60_000);
    if (left < 8_000) await sleep(left + 250);

    const statuses = [];
    for (let i = 0; i < 5; i++) statuses.push((await rl.call('/list_mailboxes', { key: live })).status);
    assert.deepEqual(statuses, [200, 200, 200, 200, 200]);
    const limited = await rl.call('/list_mailboxes', { key: live });
    assertError(limited, 429, 'rate_limited');
    const ra = limited.headers.get('retry-after');
    assert.match(ra ?? '', /^\d+$/, `Retry-After: ${ra}`);
    assert.ok(Number(ra) >= 1 && Number(ra) <= 60, `Retry-After: ${ra}`);
    // It stays limited, on every route, POSTs included.
    assertError(await rl.call('/create_mailbox', { key: live, body: { address: `x@${acct.account.default_domain}` } }), 429, 'rate_limited');
    assertError(await rl.call('/list_api_keys', { key: live }), 429, 'rate_limited');

    // Another key of the same account and a key of another account are unaffected.
    assert.equal((await rl.call('/list_mailboxes', { key: tkey })).status, 200);
    assert.equal((await rl.call('/list_mailboxes', { key: other })).status, 200);
    // The operator route is not counted against any key.
    assertOk(await rl.call('/admin/create_account', { key: rl.adminToken, body: { name: 'Rate Third', owner_email: 'owner@rate.example' } }), 201);
    // The limited call created nothing.
    const [row] = await rl.sql('SELECT count(*) AS n FROM mailboxes');
    assert.equal(row.n, 0);
  } finally {
    await rl.stop();
  }
});
