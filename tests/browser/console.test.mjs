// The console, in headless Chromium (Debian's `chromium`, driven by playwright-core) against the
// real worker: sign in through the emailed link, approve and reject held mail, and the attacks
// on it (a used or expired link, a forged cookie, a missing CSRF token, a viewer deciding,
// another account's message, script in an email's HTML). axe-core checks every page; each page's
// screenshot is kept in tests/artifacts/console/.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { startWorker, eventually, ROOT } from '../integration/harness.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ARTIFACTS = join(ROOT, 'tests', 'artifacts', 'console');
const AXE = readFileSync(join(ROOT, 'node_modules', 'axe-core', 'axe.min.js'), 'utf8');

let w, browser, acct, sender;
before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  w = await startWorker();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  sender = await w.sender('Console Co', { mode: 'gated_send' });
  acct = sender;
});
after(async () => {
  await browser?.close();
  await w?.stop();
});

/** The sign-in link in the newest sign-in email to `email`, read from the sandbox (D1). */
async function emailedLink(email) {
  const row = await eventually(async () => (await w.sql(
    `SELECT b.body FROM message_blobs b JOIN messages m ON m.id = b.message_id
      WHERE m.kind = 'sign_in' AND b.kind = 'outbound' AND m.to_json LIKE '%${email}%' ORDER BY m.id DESC LIMIT 1`))[0]);
  assert.ok(row, `no sign-in email to ${email}`);
  const url = JSON.parse(row.body).text.match(/https?:\/\/\S+\/console\/auth\?token=[0-9a-f]{64}/)?.[0];
  assert.ok(url, row.body);
  return url;
}

/** axe-core on the page: no serious or critical violation. */
async function accessible(page, name) {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
  await page.evaluate(AXE);
  const result = await page.evaluate(async () => await globalThis.axe.run(document, { resultTypes: ['violations'] }));
  const bad = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  assert.deepEqual(bad.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).join(', ')})`), [], `${name}: accessibility`);
}

async function signIn(context, email) {
  const page = await context.newPage();
  await page.goto(`${w.base}/console/sign_in`);
  await accessible(page, 'sign-in');
  await page.getByLabel('Email address').fill(email);
  await page.getByRole('button', { name: 'Email me a sign-in link' }).click();
  await page.getByText('Check your email').waitFor();
  const link = await emailedLink(email);
  await page.goto(link);
  await accessible(page, 'sign-in-confirm');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(`${w.base}/console`);
  return { page, link };
}

const held = async (subject, extra = {}) => {
  const r = await w.call('/send_email', { key: acct.live, body: { from: acct.from, to: 'ada@example.com', subject, text: `Body of ${subject}`, ...extra } });
  assert.equal(r.body.status, 'pending_approval', r.text);
  return r.body.id;
};

test('an owner signs in through the emailed link, approves one held message (sent) and rejects another', async () => {
  const one = await held('Quarterly numbers');
  const two = await held('Discount for everyone');
  const context = await browser.newContext();
  const { page, link } = await signIn(context, acct.owner);
  await accessible(page, 'pending');
  const cookie = (await context.cookies()).find((c) => c.name === 'mm_session');
  assert.ok(cookie.httpOnly, 'HttpOnly');
  assert.equal(cookie.sameSite, 'Strict');

  // The used link is refused.
  const again = await (await browser.newContext()).newPage();
  const r = await again.goto(link);
  assert.equal(r.status(), 410);
  await again.getByText('cannot be used').waitFor();

  // Approve the first from its own page.
  await page.getByRole('link', { name: 'Quarterly numbers' }).click();
  await page.getByRole('heading', { name: 'Quarterly numbers' }).waitFor();
  await accessible(page, 'message');
  await page.getByRole('button', { name: 'Approve' }).click();
  await page.getByText('Approved').first().waitFor();
  const sent = await eventually(async () => (await w.call('/get_email', { key: acct.live, query: { id: one } })).body.status === 'sent');
  assert.ok(sent, 'the approved message was sent');
  const got = await w.call('/get_email', { key: acct.live, query: { id: one } });
  assert.equal(got.body.decided_by, `human:${acct.owner}`);

  // Reject the second from the queue, with a reason.
  const row = page.getByRole('row').filter({ hasText: 'Discount for everyone' });
  await row.getByLabel('Reason (optional)').fill('Not approved by marketing');
  await row.getByRole('button', { name: 'Reject' }).click();
  await page.getByText('Rejected').first().waitFor();
  const rejected = await w.call('/get_email', { key: acct.live, query: { id: two } });
  assert.equal(rejected.body.status, 'rejected');
  assert.equal(rejected.body.decision_reason, 'Not approved by marketing');

  // The decision is audited with the operator as actor.
  const log = await eventually(async () => (await w.call('/get_audit_log', { key: acct.live, query: { limit: '100' } })).body.entries
    .find((e) => e.action === 'console/decide' && e.actor === `human:${acct.owner}`));
  assert.ok(log, 'console decision audited');

  // Every other page, for accessibility and screenshots.
  for (const [path, name] of [['/console/mailboxes', 'mailboxes'], ['/console/keys', 'keys'], ['/console/sandbox?mode=test', 'sandbox'],
    ['/console/audit', 'audit'], ['/console/webhooks', 'webhooks'], ['/console/operators', 'operators'], ['/console/sessions', 'sessions']]) {
    const res = await page.goto(w.base + path);
    assert.equal(res.status(), 200, path);
    await accessible(page, name);
  }
  await context.close();
});

test('an owner edits a held draft and approves their version; adds a sender rule and switches the bypass on', async () => {
  const id = await held('Draft with a typo', { cc: 'bob@example.com' });
  const context = await browser.newContext();
  const { page } = await signIn(context, acct.owner);
  await page.goto(`${w.base}/console/message?id=${id}`);
  await page.getByRole('heading', { name: 'Edit, then approve' }).waitFor();
  await page.getByLabel('Subject', { exact: true }).fill('Draft, fixed');
  await page.getByLabel('Cc (comma-separated)').fill('');
  await page.getByLabel('Text', { exact: true }).fill('The fixed body.\nSecond line.');
  await page.getByRole('button', { name: 'Send my version' }).click();
  await page.getByText('Approved with your edits').first().waitFor();
  const sent = await eventually(async () => { const e = (await w.call('/get_email', { key: acct.live, query: { id } })).body; return e.status === 'sent' && e; });
  assert.ok(sent, 'the edited message was not sent');
  assert.deepEqual(sent.edited.fields, ['subject', 'text', 'cc']);
  assert.equal(sent.versions.sent.text, 'The fixed body.\nSecond line.');
  assert.deepEqual(sent.cc, []);
  await page.goto(`${w.base}/console/message?id=${id}`);
  await page.getByRole('heading', { name: 'Edited before approval' }).waitFor();
  await accessible(page, 'message-edited');

  // Rules and the bypass, on the mailboxes page.
  await page.goto(`${w.base}/console/mailboxes`);
  await page.getByLabel('Action').selectOption('block');
  await page.getByLabel('For', { exact: true }).selectOption('receive');
  await page.getByLabel('Address or domain').fill('spam.example');
  await page.getByRole('button', { name: 'Add rule' }).click();
  await page.getByText('Added the rule for spam.example').waitFor();
  await page.getByRole('cell', { name: 'block mail from spam.example', exact: true }).waitFor();
  await accessible(page, 'mailboxes-rules');
  const rules = (await w.call('/list_rules', { key: acct.live })).body.rules;
  assert.deepEqual(rules.map((r) => [r.direction, r.action, r.pattern, r.mailbox_id]), [['receive', 'block', 'spam.example', null]]);
  await page.getByLabel('Allow-listed mail without a hold').selectOption('on');
  await page.getByRole('button', { name: 'Save' }).click();
  await page.getByText('Saved').first().waitFor();
  const box = (await w.call('/list_mailboxes', { key: acct.live })).body.mailboxes.find((m) => m.address === acct.from);
  assert.equal(box.allowlist_bypass, true, 'a human\'s bypass applies at once');
  await page.getByRole('button', { name: 'Remove the rule: block mail from spam.example' }).click();
  await page.getByText('Removed the rule for spam.example').waitFor();
  assert.equal((await w.call('/list_rules', { key: acct.live })).body.rules.length, 0);
  // Put the mailbox back for the tests that follow.
  await w.call('/update_mailbox', { key: acct.live, body: { id: box.id, allowlist_bypass: false } });
  await context.close();
});

test('an owner searches the account\'s mail: ranked matches with highlighted, escaped snippets, each opening its page', async () => {
  const id = await held('Marzipan order', { text: 'Please confirm the marzipan order.' });
  const raw = ['From: Eve <eve@example.com>', `To: ${acct.from}`, 'Subject: Re: sweets', `Message-ID: <search-${Date.now()}@example.com>`, '',
    'The marzipan <script>window.__pwned = 1</script> arrives Friday.', ''].join('\r\n');
  const r = await w.call('/inbound/mime', { key: acct.live, raw, headers: { 'Content-Type': 'message/rfc822' } });
  assert.equal(r.status, 200, r.text);
  const context = await browser.newContext();
  const { page } = await signIn(context, acct.owner);
  await page.getByRole('link', { name: 'Search', exact: true }).click();
  await page.getByLabel('Words to find in subjects, addresses and bodies').fill('marzipan');
  await page.getByRole('button', { name: 'Search', exact: true }).click();
  await page.getByText('2 best matches').waitFor();
  const rows = page.locator('tbody tr');
  assert.equal(await rows.count(), 2);
  assert.equal(await rows.first().getByRole('link').textContent(), 'Marzipan order', 'the subject match ranks first');
  assert.equal((await page.locator('mark').first().textContent()).toLowerCase(), 'marzipan');
  assert.ok((await rows.nth(1).textContent()).includes('<script>window.__pwned = 1</script>'), 'the sender\'s markup is shown as text');
  assert.equal(await page.evaluate(() => globalThis.__pwned), undefined, 'and never runs');
  await accessible(page, 'search');
  await page.getByLabel('Words to find in subjects, addresses and bodies').fill('!!');
  await page.getByRole('button', { name: 'Search', exact: true }).click();
  await page.getByRole('alert').getByText('q needs at least one word').waitFor();
  await page.getByLabel('Words to find in subjects, addresses and bodies').fill('marzi*');
  await page.getByRole('button', { name: 'Search', exact: true }).click();
  await page.getByRole('link', { name: 'Marzipan order' }).click();
  await page.waitForURL(`${w.base}/console/message?id=${id}`);
  await page.getByRole('heading', { name: 'Edit, then approve' }).waitFor();
  await context.close();
});

test('an owner creates an oversight key in the console; the secret is shown once', async () => {
  const context = await browser.newContext();
  const { page } = await signIn(context, acct.owner);
  await page.goto(`${w.base}/console/keys`);
  await page.getByLabel('Name').fill('ops desk');
  await page.getByRole('checkbox', { name: 'oversight' }).check();
  await page.getByRole('checkbox', { name: 'read' }).check();
  await page.getByRole('button', { name: 'Create key' }).click();
  const secret = (await page.locator('.secret').textContent()).trim();
  assert.match(secret, /^mm_live_/);
  await accessible(page, 'new-key');
  const id = await held('Decided by the new key');
  const d = await w.call('/decide_email', { key: secret, body: { id, decision: 'approve' } });
  assert.equal(d.status, 200, d.text);
  await page.goto(`${w.base}/console/keys`);
  assert.equal(await page.getByText(secret).count(), 0, 'the secret is not shown again');
  await context.close();
});

test('an expired link, a forged cookie and a form without its CSRF token are refused', async () => {
  // Expired: a link made now, aged past its 10 minutes in D1.
  const made = await w.call('/admin/create_sign_in_link', { key: w.adminToken, body: { account: acct.account.id } });
  assert.equal(made.status, 201, made.text);
  await w.sql(`UPDATE sign_in_links SET expires_at = 0 WHERE used_at IS NULL`);
  const page = await (await browser.newContext()).newPage();
  assert.equal((await page.goto(made.body.url)).status(), 410);
  const token = new URL(made.body.url).searchParams.get('token');
  const post = await fetch(`${w.base}/console/auth`, { method: 'POST', body: new URLSearchParams({ token }), redirect: 'manual' });
  assert.equal(post.status, 410, 'an expired link does not sign in');
  assert.equal(post.headers.get('set-cookie'), null);

  // Forged cookie: the console sends the browser to sign in.
  const forged = await browser.newContext();
  await forged.addCookies([{ name: 'mm_session', value: 'f'.repeat(64), url: w.base }]);
  const fp = await forged.newPage();
  await fp.goto(`${w.base}/console`);
  assert.equal(new URL(fp.url()).pathname, '/console/sign_in');
  const id = await held('Forged approval');
  const forgedPost = await fetch(`${w.base}/console/decide`, {
    method: 'POST', redirect: 'manual',
    headers: { Cookie: `mm_session=${'f'.repeat(64)}`, 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ id, decision: 'approve', csrf: 'x' }),
  });
  assert.equal(forgedPost.status, 401);

  // A real session, but no CSRF token (or another one): refused, nothing decided.
  const context = await browser.newContext();
  await signIn(context, acct.owner);
  const session = (await context.cookies()).find((c) => c.name === 'mm_session').value;
  for (const body of [{ id, decision: 'approve' }, { id, decision: 'approve', csrf: 'a'.repeat(64) }]) {
    const r = await fetch(`${w.base}/console/decide`, {
      method: 'POST', redirect: 'manual',
      headers: { Cookie: `mm_session=${session}`, 'Content-Type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(body),
    });
    assert.equal(r.status, 403);
    assert.match(await r.text(), /stale|console/);
  }
  // The right token, posted from another site's page: refused too.
  const csrf = (await (await context.pages())[0].content()).match(/name="csrf" value="([0-9a-f]{64})"/)[1];
  const cross = await fetch(`${w.base}/console/decide`, {
    method: 'POST', redirect: 'manual',
    headers: { Cookie: `mm_session=${session}`, Origin: 'https://evil.example', 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ id, decision: 'approve', csrf }),
  });
  assert.equal(cross.status, 403);
  assert.equal((await w.call('/get_email', { key: acct.live, query: { id } })).body.status, 'pending_approval');
  await context.close();
});

test('a viewer cannot decide; another account\'s message is 404; script in an email\'s HTML does not run', async () => {
  // The owner invites a viewer in the console; the viewer signs in through their own link.
  const ownerCtx = await browser.newContext();
  const { page: ownerPage } = await signIn(ownerCtx, acct.owner);
  await ownerPage.goto(`${w.base}/console/operators`);
  const viewerEmail = `viewer-${Date.now()}@owner.example`;
  await ownerPage.getByLabel('Email').fill(viewerEmail);
  await ownerPage.getByLabel('Role').selectOption('viewer');
  await ownerPage.getByRole('button', { name: 'Invite' }).click();
  await ownerPage.getByText(`Invited ${viewerEmail}`).waitFor();

  const id = await held('Viewer may only look', {
    html: '<p>Hello</p><script>document.body.dataset.ran = "script"; try { top.__pwned = 1 } catch (e) {}</script>'
      + '<img src="x" onerror="document.body.dataset.ran = \'onerror\'; try { top.__pwned = 2 } catch (e) {}">',
  });
  const viewerCtx = await browser.newContext();
  const viewerPage = await viewerCtx.newPage();
  await viewerPage.goto(await emailedLink(viewerEmail));
  await viewerPage.getByRole('button', { name: 'Sign in' }).click();
  await viewerPage.waitForURL(`${w.base}/console`);
  assert.equal(await viewerPage.getByRole('button', { name: 'Approve' }).count(), 0, 'no decide buttons for a viewer');
  const session = (await viewerCtx.cookies()).find((c) => c.name === 'mm_session').value;
  const html = await viewerPage.content();
  const csrf = html.match(/name="csrf" value="([0-9a-f]{64})"/)[1];
  const r = await fetch(`${w.base}/console/decide`, {
    method: 'POST', redirect: 'manual',
    headers: { Cookie: `mm_session=${session}`, 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ id, decision: 'approve', csrf }),
  });
  assert.equal(r.status, 403);
  assert.equal((await w.call('/get_email', { key: acct.live, query: { id } })).body.status, 'pending_approval');

  // The message page renders the HTML in a frame where nothing runs.
  await viewerPage.goto(`${w.base}/console/message?id=${id}`);
  await viewerPage.getByRole('heading', { name: 'Viewer may only look' }).waitFor();
  await viewerPage.waitForTimeout(500);
  assert.equal(await viewerPage.evaluate(() => globalThis.__pwned), undefined, 'script in the email ran in the console');
  const frame = viewerPage.frames().find((f) => f !== viewerPage.mainFrame());
  assert.ok(frame, 'the HTML is in a frame');
  assert.equal(await frame.locator('p').textContent(), 'Hello', 'the HTML is shown');
  assert.equal(await frame.locator('body').getAttribute('data-ran'), null, 'script or an event handler ran inside the preview frame');
  assert.equal(await viewerPage.locator('iframe').getAttribute('sandbox'), '');

  // Another account's message: 404, even by its id.
  const other = await w.sender('Other Console Co', { mode: 'gated_send' });
  const foreign = await w.call('/send_email', { key: other.live, body: { from: other.from, to: 'x@example.com', subject: 'Not yours', text: 'x' } });
  const res = await viewerPage.goto(`${w.base}/console/message?id=${foreign.body.id}`);
  assert.equal(res.status(), 404);
  await ownerCtx.close();
  await viewerCtx.close();
});
