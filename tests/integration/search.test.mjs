// Full-text search (`search_emails`, issue 16) against the real worker and its D1 FTS5 index:
// a word found in bodies of both directions across threads, ranked (subject first), with
// escaped, highlighted snippets; prefixes and addresses; filters and pages; never another
// account's, the other mode's, a mailbox the key may not use, or held inbound mail (until a
// human releases it); a reviewer's edits re-index the message; bad input answers 400.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startWorker, eventually } from './harness.mjs';

let w, a, other;
before(async () => {
  w = await startWorker();
  a = await w.sender('Search Co', { mode: 'autonomous' });
  other = await w.sender('Other Search Co', { mode: 'autonomous' });
});
after(async () => { await w?.stop(); });

const CRLF = '\r\n';
let n = 0;
const inbound = (key, to, subject, body, from = 'eve@example.com') => w.call('/inbound/mime', {
  key, headers: { 'Content-Type': 'message/rfc822' },
  raw: [`From: ${from}`, `To: ${to}`, `Subject: ${subject}`, `Message-ID: <s${Date.now()}.${n++}@example.com>`, '', body, ''].join(CRLF),
});
const search = (key, query) => w.call('/search_emails', { key, query });
const ids = (r) => r.body.emails.map((e) => e.id);

test('a word is found in bodies of both directions across threads, ranked, with escaped highlighted snippets; never another account\'s, the other mode\'s or held mail', async () => {
  const out = await w.call('/send_email', { key: a.live, body: { from: a.from, to: 'ada@example.com', subject: 'Trip notes', text: 'The ferry to Zanzibar leaves at <noon> & returns late.' } });
  assert.equal(out.status, 202, out.text);
  const inb = await inbound(a.live, a.from, 'Re: travel', 'Did you book zanzibar yet?');
  assert.equal(inb.status, 200, inb.text);
  const titled = await inbound(a.live, a.from, 'Zanzibar itinerary', 'Day one: Stone Town.');
  const inbId = inb.body.stored[0].id;
  const titledId = titled.body.stored[0].id;
  // Noise that must never be found by this key.
  await w.call('/send_email', { key: other.live, body: { from: other.from, to: 'ada@example.com', subject: 'x', text: 'zanzibar for the other account' } });
  await w.call('/send_email', { key: a.test, body: { from: a.from, to: 'ada@example.com', subject: 'x', text: 'zanzibar in test mode' } });
  const gated = await w.call('/create_mailbox', { key: a.live, body: { address: `held@${a.account.default_domain}`, oversight_mode: 'gated_all' } });
  assert.equal(gated.status, 201, gated.text);
  const held = await inbound(a.live, gated.body.address, 'Held', 'zanzibar, but held for a human');
  assert.equal(held.body.stored[0].status, 'pending_approval');
  const heldId = held.body.stored[0].id;
  // A word that appears nowhere.
  assert.deepEqual(ids(await search(a.live, { q: 'kilimanjaro' })), []);

  const r = await search(a.live, { q: 'ZANZIBAR' });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(new Set(ids(r)), new Set([out.body.id, inbId, titledId]), 'exactly this account\'s live, visible mail');
  assert.equal(ids(r)[0], titledId, 'a match in the subject ranks first');
  assert.equal(new Set(r.body.emails.map((e) => e.thread_id)).size, 3, 'across threads');
  assert.deepEqual(new Set(r.body.emails.map((e) => e.direction)), new Set(['inbound', 'outbound']));
  assert.ok(r.body.emails.every((e, i, all) => i === 0 || all[i - 1].rank >= e.rank), 'ordered by rank');
  const outHit = r.body.emails.find((e) => e.id === out.body.id);
  assert.match(outHit.highlight, /<mark>Zanzibar<\/mark>/);
  assert.ok(outHit.highlight.includes('&lt;noon&gt; &amp;'), `the text is escaped: ${outHit.highlight}`);
  assert.ok(!/<(?!\/?mark>)/.test(outHit.highlight), 'no tag but <mark>');
  assert.equal(r.body.next_cursor, null);
  // Another account, the test key and a key of another account see none of these.
  assert.deepEqual(ids(await search(other.live, { q: 'zanzibar' })).length, 1);
  assert.ok(!ids(await search(other.live, { q: 'zanzibar' })).some((id) => [out.body.id, inbId, titledId, heldId].includes(id)));
  const testHits = ids(await search(a.test, { q: 'zanzibar' }));
  assert.equal(testHits.length, 1, 'the test key finds only the test-mode message');
  assert.ok(!testHits.includes(out.body.id));

  // Prefix, address, direction, mailbox, since and pages.
  assert.deepEqual(new Set(ids(await search(a.live, { q: 'zanzi*' }))), new Set([out.body.id, inbId, titledId]));
  assert.deepEqual(ids(await search(a.live, { q: 'ada@example.com zanzibar' })), [out.body.id], 'the recipient address and a body word');
  const byAddress = (await search(a.live, { q: 'ada@example.com' })).body.emails.find((e) => e.id === out.body.id);
  assert.match(byAddress.highlight, /<mark>ada@example\.com<\/mark>/);
  assert.ok(!byAddress.highlight.includes('&quot;') && !byAddress.highlight.includes('['), `addresses read as a list: ${byAddress.highlight}`);
  assert.deepEqual(ids(await search(a.live, { q: 'zanzibar', direction: 'outbound' })), [out.body.id]);
  assert.deepEqual(new Set(ids(await search(a.live, { q: 'zanzibar', direction: 'inbound' }))), new Set([inbId, titledId]));
  assert.equal(ids(await search(a.live, { q: 'zanzibar', mailbox: a.from })).length, 3);
  assert.deepEqual(ids(await search(a.live, { q: 'zanzibar', mailbox: gated.body.address })), [], 'held mail is not found');
  assert.deepEqual(ids(await search(a.live, { q: 'zanzibar', since: new Date(Date.now() + 60_000).toISOString() })), []);
  const p1 = await search(a.live, { q: 'zanzibar', limit: '2' });
  assert.equal(p1.body.emails.length, 2);
  assert.equal(p1.body.next_cursor, '2');
  const p2 = await search(a.live, { q: 'zanzibar', limit: '2', cursor: p1.body.next_cursor });
  assert.equal(p2.body.emails.length, 1);
  assert.equal(p2.body.next_cursor, null);
  assert.deepEqual(new Set([...ids(p1), ...ids(p2)]), new Set([out.body.id, inbId, titledId]));

  // A key limited to another mailbox finds nothing in this one.
  const limited = await w.adminKey(a.account.id, { scopes: ['read'], livemode: true, name: 'held only', mailboxes: [gated.body.id] });
  assert.deepEqual(ids(await search(limited, { q: 'zanzibar' })), []);
  assert.equal((await search(limited, { q: 'zanzibar', mailbox: a.from })).status, 404);

  // Released by a human, the held mail is found.
  const d = await w.call('/decide_email', { key: a.oversight, body: { id: heldId, decision: 'approve' } });
  assert.equal(d.status, 200, d.text);
  assert.ok(await eventually(async () => ids(await search(a.live, { q: 'zanzibar' })).includes(heldId)));
});

test('a reviewer\'s edits re-index the message: the new words are found, the agent\'s are not', async () => {
  const g = await w.sender('Edited Search Co', { mode: 'gated_send' });
  const s = await w.call('/send_email', { key: g.live, body: { from: g.from, to: ['ada@example.com', 'bob@example.com'], subject: 'Quarterly figures', text: 'Revenue tripled, guaranteed.' } });
  assert.equal(s.body.status, 'pending_approval');
  assert.deepEqual(ids(await search(g.live, { q: 'guaranteed' })), [s.body.id], 'held outbound mail is the agent\'s own: found');
  const d = await w.call('/decide_email', { key: g.oversight, body: { id: s.body.id, decision: 'approve', edits: { subject: 'Quarterly update', text: 'Revenue grew modestly.', to: ['ada@example.com'] } } });
  assert.equal(d.status, 200, d.text);
  assert.deepEqual(ids(await search(g.live, { q: 'guaranteed' })), [], 'the words the reviewer removed are gone');
  assert.deepEqual(ids(await search(g.live, { q: 'modestly' })), [s.body.id]);
  assert.deepEqual(ids(await search(g.live, { q: 'update modestly' })), [s.body.id], 'the new subject');
  assert.deepEqual(ids(await search(g.live, { q: 'bob@example.com' })), [], 'the removed recipient');
});

test('bad input to search_emails answers 400 with the field named', async () => {
  for (const [query, field] of [
    [{}, 'q'],
    [{ q: '' }, 'q'],
    [{ q: ' !! -- ' }, 'q'],
    [{ q: 'x'.repeat(201) }, 'q'],
    [{ q: Array.from({ length: 17 }, (_, i) => `w${i}`).join(' ') }, 'q'],
    [{ q: 'a', cursor: 'msg_x' }, 'cursor'],
    [{ q: 'a', cursor: '1001' }, 'cursor'],
    [{ q: 'a', direction: 'sideways' }, 'direction'],
    [{ q: 'a', since: 'yesterday' }, 'since'],
    [{ q: 'a', limit: '0' }, 'limit'],
    [{ q: 'a', sort: 'date' }, 'sort'],
  ]) {
    const r = await search(a.live, query);
    assert.equal(r.status, 400, `${JSON.stringify(query)}: ${r.text}`);
    assert.equal(r.body.error.field, field, `${JSON.stringify(query)}: ${r.text}`);
  }
  // FTS5 syntax is just text: no query error, no 500.
  for (const q of ['a OR b', 'NEAR(a b)', '"unbalanced', 'col:x', 'a AND', '^a', 'x*y*']) {
    const r = await search(a.live, { q });
    assert.equal(r.status, 200, `${q}: ${r.text}`);
  }
  assert.equal((await w.call('/search_emails', { query: { q: 'a' } })).status, 401);
});
