// Custom sending domains end to end: create_domain's records, verify_domain against a real DNS
// server (Knot DNS behind dnsdist's DNS-over-HTTP listener, tests/integration/dns.mjs), sends and
// mailboxes before and after verification, and DKIM signatures on the Cloudflare Email Service
// path checked by dkimpy against the same test zone.
//
// Unlike the other files, this one is a single story in steps (one `describe`): a domain's life
// (claimed, verified, used, lost, deleted) is the point, so later steps read the domains earlier
// steps made (`brand`, `squat`, `pending`) and run only in order. Every other file's tests share
// only what their `before` sets up, and each passes alone (`--test-name-pattern`).
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, rmSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { domainToASCII } from 'node:url';
import { startWorker, eventually, ROOT } from './harness.mjs';
import { startDns } from './dns.mjs';

const run = promisify(execFile);

const waitStatus = (w, key, id, status, ms = 20_000) =>
  eventually(async () => {
    const r = await w.call('/get_email', { key, query: { id } });
    return r.body?.status === status && r.body;
  }, { ms });

/** The records of a create_domain answer as the test zone publishes them. */
const asZone = (records) => records.map(({ type, name, value }) => ({ type, name, value }));

describe('custom sending domains', () => {
  let dns, w, acct, other;
  const published = new Map(); // domain → records in the zone
  const publish = (domain, records) => { published.set(domain, records); return dns.publish([...published.values()].flat()); };

  before(async () => {
    dns = await startDns({ zone: 'test' });
    w = await startWorker({ vars: { EMAIL_PROVIDER: 'cloudflare', DOH_URL: dns.dohUrl, DOMAIN_KEY_SECRET: 'domain-key-secret-for-tests' } });
    acct = await w.sender('Brand Co');
    other = await w.sender('Other Co');
  });
  after(async () => { await w?.stop(); await dns?.stop(); });

  const create = (domain, key = acct.live) => w.call('/create_domain', { key, body: { domain } });

  test('create_domain answers the records to publish: SPF, two DKIM keys, DMARC', async () => {
    const started = performance.now();
    const r = await create('Brand-One.test');
    const ms = Math.round(performance.now() - started);
    assert.equal(r.status, 201, r.text);
    console.log(`create_domain (Ed25519 + WebCrypto RSA-2048 keys, sealed) answered in ${ms} ms`);
    assert.match(r.body.id, /^dom_[0-9a-z]{26}$/);
    assert.equal(r.body.domain, 'brand-one.test');
    assert.equal(r.body.status, 'pending');
    assert.equal(r.body.verified_at, null);
    const byName = Object.fromEntries(r.body.records.map((x) => [x.name, x]));
    assert.deepEqual(r.body.records.map((x) => [x.type, x.name, x.status]), [
      ['TXT', 'brand-one.test', 'pending'],
      ['TXT', 'mm1e._domainkey.brand-one.test', 'pending'],
      ['TXT', 'mm1r._domainkey.brand-one.test', 'pending'],
      ['TXT', '_dmarc.brand-one.test', 'pending'],
    ]);
    assert.equal(byName['brand-one.test'].value, 'v=spf1 include:_spf.mx.cloudflare.net ~all');
    const ed = byName['mm1e._domainkey.brand-one.test'].value.match(/^v=DKIM1; k=ed25519; p=([A-Za-z0-9+/=]+)$/);
    assert.ok(ed, byName['mm1e._domainkey.brand-one.test'].value);
    assert.equal(Buffer.from(ed[1], 'base64').length, 32);
    const rsa = byName['mm1r._domainkey.brand-one.test'].value.match(/^v=DKIM1; k=rsa; p=([A-Za-z0-9+/=]+)$/);
    assert.ok(rsa);
    const { createPublicKey } = await import('node:crypto');
    const key = createPublicKey({ key: Buffer.from(rsa[1], 'base64'), format: 'der', type: 'spki' });
    assert.equal(key.asymmetricKeyDetails.modulusLength, 2048);
    assert.match(byName['_dmarc.brand-one.test'].value, /^v=DMARC1; p=none; rua=mailto:/);
    // The private keys are stored sealed, never in the clear.
    const [row] = await w.sql(`SELECT dkim_ed25519_private, dkim_rsa_private FROM domains WHERE id = '${r.body.id}'`);
    assert.match(row.dkim_ed25519_private, /^v1\./);
    assert.match(row.dkim_rsa_private, /^v1\./);
    assert.doesNotMatch(row.dkim_rsa_private, /MII/);
  });

  test('an internationalised domain is stored as punycode', async () => {
    const r = await create('Bücher-Shop.test');
    assert.equal(r.status, 201, r.text);
    assert.equal(r.body.domain, domainToASCII('bücher-shop.test'));
    assert.match(r.body.domain, /^xn--/);
    assert.equal(r.body.records[0].name, r.body.domain);
  });

  let squatter, squat; // another account's early, unproven claim on brand-one.test
  test('the default domain, the deployment domain and duplicates answer 409 domain_exists; another account\'s pending claim blocks no one', async () => {
    squatter = await w.sender('Squat Co');
    const claim = await create('brand-one.test', squatter.live);
    assert.equal(claim.status, 201, 'a claim is allowed while another account\'s is only pending');
    squat = claim.body;
    for (const [domain, key] of [[acct.account.default_domain, acct.live], ['multimail.test', acct.live], ['x.multimail.test', acct.live],
      ['brand-one.test', acct.live], ['BRAND-ONE.test.', acct.live], ['brand-one.test', squatter.live]]) {
      const r = await create(domain, key);
      assert.equal(r.status, 409, `${domain}: ${r.text}`);
      assert.equal(r.body.error.code, 'domain_exists');
      assert.equal(r.body.error.field, 'domain');
    }
  });

  test('bad input answers 400 with the field', async () => {
    const cases = [
      ['/create_domain', {}, 'domain'],
      ['/create_domain', { domain: 'nodot' }, 'domain'],
      ['/create_domain', { domain: 'bad_label.test' }, 'domain'],
      ['/create_domain', { domain: 5 }, 'domain'],
      ['/create_domain', { domain: 'a.test', dkim: true }, 'dkim'],
      ['/verify_domain', {}, 'id'],
      ['/verify_domain', { id: 'msg_01' }, 'id'],
      ['/delete_domain', { id: 42 }, 'id'],
    ];
    for (const [path, body, field] of cases) {
      const r = await w.call(path, { key: acct.live, body });
      assert.equal(r.status, 400, `${path} ${JSON.stringify(body)}: ${r.text}`);
      assert.equal(r.body.error.field, field, r.text);
    }
    const limit = await w.call('/list_domains', { key: acct.live, query: { limit: '0' } });
    assert.equal(limit.status, 400);
  });

  test('domains need the admin scope', async () => {
    const k = await w.call('/create_api_key', { key: acct.live, body: { name: 'sender', scopes: ['send'] } });
    const r = await w.call('/create_domain', { key: k.body.key, body: { domain: 'nope.test' } });
    assert.equal(r.status, 403);
    assert.equal(r.body.error.code, 'insufficient_scope');
  });

  let pending; // brand-two.test, checked while its records are missing
  test('verify_domain with nothing published: pending, each record missing', async () => {
    pending = (await create('brand-two.test')).body;
    const r = await w.call('/verify_domain', { key: acct.live, body: { id: pending.id } });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.status, 'pending');
    assert.ok(r.body.last_checked_at);
    for (const rec of r.body.records) {
      assert.equal(rec.status, 'missing', JSON.stringify(rec));
      assert.deepEqual(rec.found, []);
    }
  });

  test('a record with the wrong value fails the domain and shows what was found', async () => {
    const records = asZone(pending.records);
    records[0] = { type: 'TXT', name: 'brand-two.test', value: 'v=spf1 include:spf.elsewhere.example ~all' };
    await publish('brand-two.test', records.slice(0, 3)); // and no DMARC
    const r = await w.call('/verify_domain', { key: acct.live, body: { id: pending.id } });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.status, 'failed');
    const st = Object.fromEntries(r.body.records.map((x) => [x.name, x]));
    assert.equal(st['brand-two.test'].status, 'wrong_value');
    assert.deepEqual(st['brand-two.test'].found, ['v=spf1 include:spf.elsewhere.example ~all']);
    assert.equal(st['mm1e._domainkey.brand-two.test'].status, 'verified');
    assert.equal(st['mm1r._domainkey.brand-two.test'].status, 'verified', 'a 2048-bit key split over two TXT strings');
    assert.equal(st['_dmarc.brand-two.test'].status, 'missing');
  });

  test('another account reaches none of it: 404, and its list is its own', async () => {
    for (const path of ['/verify_domain', '/delete_domain']) {
      const r = await w.call(path, { key: other.live, body: { id: pending.id } });
      assert.equal(r.status, 404, r.text);
      assert.equal(r.body.error.code, 'domain_not_found');
    }
    const list = await w.call('/list_domains', { key: other.live });
    assert.deepEqual(list.body.domains, []);
    const unknown = await w.call('/verify_domain', { key: acct.live, body: { id: 'dom_00000000000000000000000000' } });
    assert.equal(unknown.status, 404);
  });

  let brand; // brand-one.test: verified, with a mailbox
  test('before verification a custom domain neither sends nor holds mailboxes: 422 domain_not_verified', async () => {
    brand = (await w.call('/list_domains', { key: acct.live })).body.domains.find((d) => d.domain === 'brand-one.test');
    const mb = await w.call('/create_mailbox', { key: acct.live, body: { address: 'agent@brand-one.test', oversight_mode: 'gated_send' } });
    assert.equal(mb.status, 422, mb.text);
    assert.equal(mb.body.error.code, 'domain_not_verified');
    assert.equal(mb.body.error.field, 'address');
    const s = await w.call('/send_email', { key: acct.live, body: { from: 'agent@brand-one.test', to: 'ada@example.com', subject: 'Hi', text: 'x' } });
    assert.equal(s.status, 422, s.text);
    assert.equal(s.body.error.code, 'domain_not_verified');
    assert.equal(s.body.error.field, 'from');
  });

  test('published records verify the domain; then mailboxes and sends work', async () => {
    await publish('brand-one.test', asZone(brand.records));
    const r = await w.call('/verify_domain', { key: acct.live, body: { id: brand.id } });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.status, 'verified', JSON.stringify(r.body.records));
    assert.ok(r.body.verified_at);
    assert.ok(r.body.records.length > 0 && r.body.records.every((x) => x.status === 'verified' && x.found.length === 1));

    const mb = await w.call('/create_mailbox', { key: acct.live, body: { address: 'Agent@Brand-One.test', oversight_mode: 'autonomous' } });
    assert.equal(mb.status, 201, mb.text);
    assert.equal(mb.body.address, 'agent@brand-one.test');
    const d = await w.call('/decide_email', { key: acct.oversight, body: { id: mb.body.mode_change.id, decision: 'approve' } });
    assert.equal(d.status, 200, d.text);
    // Another account cannot use the verified domain.
    const theirs = await w.call('/create_mailbox', { key: other.live, body: { address: 'x@brand-one.test' } });
    assert.equal(theirs.status, 422);
  });

  test('the first account to verify owns the domain: the squatter\'s claim cannot verify, and no new claim is taken', async () => {
    const v = await w.call('/verify_domain', { key: squatter.live, body: { id: squat.id } });
    assert.equal(v.status, 409, v.text);
    assert.equal(v.body.error.code, 'domain_taken');
    const [row] = await w.sql(`SELECT status FROM domains WHERE id = '${squat.id}'`);
    assert.notEqual(row.status, 'verified');
    assert.equal((await w.call('/create_mailbox', { key: squatter.live, body: { address: 'ceo@brand-one.test' } })).status, 422);
    const late = await create('brand-one.test', other.live);
    assert.equal(late.status, 409, late.text);
    assert.equal(late.body.error.code, 'domain_exists');
  });

  test('mail from the verified domain leaves DKIM-signed (rsa-sha256 and ed25519-sha256), and dkimpy verifies both', async () => {
    const before = new Set([...w.log().matchAll(/Email: (\S+\.eml)/g)].map((m) => m[1]));
    const s = await w.call('/send_email', { key: acct.live, body: {
      from: 'Brand Agent <agent@brand-one.test>', to: 'ada@example.com', subject: 'Grüße from a custom domain',
      text: 'Hello  Ada,\n\nsigned twice.  \n', html: '<p>Hello Ada</p>', headers: { 'X-Campaign': 'q4' } } });
    assert.equal(s.status, 202, s.text);
    const done = await waitStatus(w, acct.live, s.body.id, 'sent');
    assert.ok(done, 'sent');
    const files = [...w.log().matchAll(/Email: (\S+\.eml)/g)].map((m) => m[1]).filter((f) => !before.has(f));
    assert.equal(files.length, 1, w.log());
    const eml = readFileSync(files[0], 'utf8');
    writeFileSync(join(ROOT, 'tests', '.state', 'last-signed.eml'), eml); // kept for a look when this fails
    assert.match(eml, /^DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed\/relaxed; d=brand-one\.test; s=mm1e;/m);
    assert.match(eml, /^DKIM-Signature: v=1; a=rsa-sha256; c=relaxed\/relaxed; d=brand-one\.test; s=mm1r;/m);
    const { stdout } = await run('python3', [join(ROOT, 'tests', 'integration', 'dkim_verify.py'), files[0], String(dns.dnsPort)]);
    const results = JSON.parse(stdout);
    assert.deepEqual(results.map((x) => [x.a, x.s, x.ok]).sort(), [['ed25519-sha256', 'mm1e', true], ['rsa-sha256', 'mm1r', true]], stdout);
    // An altered body no longer verifies.
    const tampered = join(ROOT, 'tests', '.state', `tampered-${s.body.id}.eml`);
    writeFileSync(tampered, eml.replace('signed twice', 'signed thrice'));
    const bad = JSON.parse((await run('python3', [join(ROOT, 'tests', 'integration', 'dkim_verify.py'), tampered, String(dns.dnsPort)])).stdout);
    assert.ok(bad.length === 2 && bad.every((x) => !x.ok && /body hash/.test(x.error)), JSON.stringify(bad));
    rmSync(tampered);
    const timeline = await w.sql(`SELECT detail FROM message_timeline WHERE message_id = '${s.body.id}' AND kind = 'dkim'`);
    assert.match(timeline[0]?.detail ?? '', /^signed d=brand-one\.test/);
  });

  test('mail from the default domain is not signed by us', async () => {
    const before = new Set([...w.log().matchAll(/Email: (\S+\.eml)/g)].map((m) => m[1]));
    const s = await w.call('/send_email', { key: acct.live, body: { from: acct.from, to: 'ada@example.com', subject: 'Default', text: 'x' } });
    assert.equal(s.status, 202, s.text);
    await waitStatus(w, acct.live, s.body.id, 'sent');
    const files = [...w.log().matchAll(/Email: (\S+\.eml)/g)].map((m) => m[1]).filter((f) => !before.has(f));
    assert.equal(files.length, 1);
    assert.doesNotMatch(readFileSync(files[0], 'utf8'), /DKIM-Signature/);
  });

  test('list_domains pages with next_cursor', async () => {
    const p1 = await w.call('/list_domains', { key: acct.live, query: { limit: '2' } });
    assert.equal(p1.status, 200, p1.text);
    assert.equal(p1.body.domains.length, 2);
    assert.ok(p1.body.next_cursor);
    const p2 = await w.call('/list_domains', { key: acct.live, query: { limit: '2', cursor: p1.body.next_cursor } });
    assert.equal(p2.body.domains.length, 1);
    assert.equal(p2.body.next_cursor, null);
    const all = [...p1.body.domains, ...p2.body.domains].map((d) => d.domain).sort();
    assert.deepEqual(all, ['brand-one.test', 'brand-two.test', domainToASCII('bücher-shop.test')]);
    // Test keys see the account's domains too (domains serve both modes).
    const t = await w.call('/list_domains', { key: acct.test });
    assert.equal(t.body.domains.length, 3);
  });

  test('records taken out of DNS fail a verified domain on the next check', async () => {
    published.delete('brand-one.test');
    await dns.publish([...published.values()].flat());
    const r = await w.call('/verify_domain', { key: acct.live, body: { id: brand.id } });
    assert.equal(r.body.status, 'failed', r.text);
    const s = await w.call('/send_email', { key: acct.live, body: { from: 'agent@brand-one.test', to: 'ada@example.com', subject: 'Hi', text: 'x' } });
    assert.equal(s.status, 422);
    // A lost domain's mailboxes stop receiving too.
    const mail = (id) => ['From: eve@example.com', 'To: agent@brand-one.test', 'Subject: still yours?', `Message-ID: <lost-${id}-${Date.now()}@example.com>`, '', 'x', ''].join('\r\n');
    const lost = await w.call('/inbound/mime', { key: acct.live, raw: mail(1), headers: { 'Content-Type': 'message/rfc822' } });
    assert.equal(lost.status, 404, lost.text);
    await publish('brand-one.test', asZone(brand.records));
    assert.equal((await w.call('/verify_domain', { key: acct.live, body: { id: brand.id } })).body.status, 'verified');
    const back = await w.call('/inbound/mime', { key: acct.live, raw: mail(2), headers: { 'Content-Type': 'message/rfc822' } });
    assert.equal(back.status, 200, back.text);
  });

  test('delete_domain of a verified domain waits for a human; then sends answer 422 again and the name can be added anew', async () => {
    const asked = await w.call('/delete_domain', { key: acct.live, body: { id: brand.id } });
    assert.equal(asked.status, 202, asked.text);
    assert.equal(asked.body.deleted, false);
    assert.equal(asked.body.change.kind, 'delete_domain');
    // Until a human decides, the domain stays and still sends.
    assert.equal((await w.call('/list_domains', { key: acct.live })).body.domains.some((d) => d.id === brand.id), true);
    const d = await w.call('/decide_email', { key: acct.oversight, body: { id: asked.body.change.id, decision: 'approve' } });
    assert.equal(d.status, 200, d.text);
    assert.equal(d.body.status, 'approved');
    assert.equal((await w.call('/delete_domain', { key: acct.live, body: { id: brand.id } })).status, 404);
    const s = await w.call('/send_email', { key: acct.live, body: { from: 'agent@brand-one.test', to: 'ada@example.com', subject: 'Hi', text: 'x' } });
    assert.equal(s.status, 422);
    assert.equal(s.body.error.code, 'domain_not_verified');
    const again = await create('brand-one.test', other.live);
    assert.equal(again.status, 201, again.text);
    assert.notEqual(again.body.records[1].value, brand.records[1].value, 'fresh keys');
  });

  test('the hourly cron checks domains nobody has checked yet', async () => {
    const d = (await create('brand-three.test')).body;
    await publish('brand-three.test', asZone(d.records));
    // wrangler dev runs the scheduled handler on this path.
    const r = await fetch(`${w.base}/cdn-cgi/handler/scheduled?cron=${encodeURIComponent('0 * * * *')}`);
    assert.equal(r.status, 200, await r.text());
    const checked = await eventually(async () => {
      const l = await w.call('/list_domains', { key: acct.live, query: { limit: '100' } });
      const x = l.body.domains.find((z) => z.domain === 'brand-three.test');
      return x?.status === 'verified' && x;
    });
    assert.ok(checked, 'verified by the cron');
    assert.ok(checked.last_checked_at && checked.verified_at);
  });
});
