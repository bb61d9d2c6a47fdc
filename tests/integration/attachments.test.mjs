// Inbound attachments in the attachments bucket (issue 16) against the real worker and its local
// R2: the type is taken from the bytes, not the sender; a download is a download (never rendered
// HTML); it is scoped like read_email (another account, held mail, the other mode); bad input is
// 400; MCP hands the bytes over as a resource; and the hourly cron deletes a deleted mailbox's
// attachments after the retention period (the clock moved with CLOCK_OFFSET_SECONDS).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { startWorker } from './harness.mjs';

let w, a;
before(async () => {
  w = await startWorker();
  a = await w.sender('Attachment Co', { mode: 'autonomous' });
});
after(async () => { await w?.stop(); });

const CRLF = '\r\n';
const b64 = (buf) => buf.toString('base64').replace(/.{76}/g, `$&${CRLF}`);
/** A message to `to` with attachments [{name, type, bytes}]. */
const withAttachments = (to, files) => [
  'From: Eve <eve@example.com>', `To: ${to}`, 'Subject: Files', `Message-ID: <att-${randomBytes(6).toString('hex')}@example.com>`,
  'Content-Type: multipart/mixed; boundary="b"', '', '--b', 'Content-Type: text/plain', '', 'Files attached.',
  ...files.flatMap((f) => ['--b', `Content-Type: ${f.type}`, `Content-Disposition: attachment; filename="${f.name}"`, 'Content-Transfer-Encoding: base64', '', b64(f.bytes)]),
  '--b--', ''].join(CRLF);
const receive = async (key, to, files) => {
  const r = await w.call('/inbound/mime', { key, raw: withAttachments(to, files), headers: { 'Content-Type': 'message/rfc822' } });
  assert.equal(r.status, 200, r.text);
  return r.body.stored[0];
};
// `which`: a number is the attachment's id (att_N), a string its file name, as the contract names them.
const download = (key, id, which) => fetch(`${w.base}/download_attachment?id=${id}&attachment=${encodeURIComponent(typeof which === 'number' ? `att_${which}` : which)}`, { headers: { Authorization: `Bearer ${key}` } });
const sha = (b) => createHash('sha256').update(b).digest('hex');

const PDF = Buffer.concat([Buffer.from('%PDF-1.7\n'), randomBytes(700_000)]);
const HTML = Buffer.from('<html><script>alert(document.cookie)</script></html>');

test('the bytes decide the type; a download is served as a download, HTML never as HTML', async () => {
  const m = await receive(a.live, a.from, [
    { name: 'invoice.png', type: 'image/png', bytes: PDF },
    { name: 'page.pdf', type: 'application/pdf', bytes: HTML },
  ]);
  const e = (await w.call('/read_email', { key: a.live, query: { id: m.id } })).body;
  assert.deepEqual(e.attachments.map((x) => [x.id, x.filename, x.content_type, x.detected_type, x.stored, x.index]), [
    ['att_0', 'invoice.png', 'image/png', 'application/pdf', true, 0],
    ['att_1', 'page.pdf', 'application/pdf', 'text/html', true, 1],
  ]);
  assert.equal(e.attachments[0].download, `/download_attachment?id=${m.id}&attachment=att_0`);
  assert.equal(e.attachments[0].content_base64, null, 'over the inline cap');
  assert.ok(e.attachments[1].content_base64, 'small ones stay inline too');
  const pdf = await fetch(`${w.base}${e.attachments[0].download}`, { headers: { Authorization: `Bearer ${a.live}` } });
  assert.equal(pdf.status, 200);
  assert.equal(pdf.headers.get('content-type'), 'application/pdf', 'served as what the bytes are, not as declared');
  assert.equal(pdf.headers.get('x-attachment-size'), String(PDF.length));
  assert.equal(sha(Buffer.from(await pdf.arrayBuffer())), sha(PDF));
  const html = await download(a.live, m.id, 'page.pdf');
  assert.equal(html.headers.get('content-type'), 'application/octet-stream', 'HTML is never served as HTML');
  assert.equal(html.headers.get('x-attachment-detected-type'), 'text/html');
  assert.equal(html.headers.get('x-content-type-options'), 'nosniff');
  assert.match(html.headers.get('content-security-policy'), /sandbox/);
  assert.match(html.headers.get('content-disposition'), /^attachment; filename="page.pdf"/);
  assert.equal(Buffer.from(await html.arrayBuffer()).toString(), HTML.toString());
});

test('an attachment is named by its id or its file name (the contract); a shared file name is ambiguous', async () => {
  const one = Buffer.from('first copy\n'), two = Buffer.from('second copy\n'), pdf = PDF.subarray(0, 9000);
  const m = await receive(a.live, a.from, [
    { name: 'notes.txt', type: 'text/plain', bytes: one },
    { name: 'notes.txt', type: 'text/plain', bytes: two },
    { name: 'contract.pdf', type: 'application/pdf', bytes: pdf },
  ]);
  const body = async (r) => { assert.equal(r.status, 200); return Buffer.from(await r.arrayBuffer()); };
  assert.equal(sha(await body(await download(a.live, m.id, 'contract.pdf'))), sha(pdf));
  assert.equal((await body(await download(a.live, m.id, 1))).toString(), two.toString());
  assert.equal((await body(await download(a.live, m.id, 0))).toString(), one.toString());
  const clash = await w.call(`/download_attachment?id=${m.id}&attachment=notes.txt`, { key: a.live });
  assert.equal(clash.status, 409, clash.text);
  assert.equal(clash.body.error.code, 'attachment_ambiguous');
  assert.deepEqual(clash.body.error.ids, ['att_0', 'att_1']);
});

test('downloads are scoped like read_email: another account, the other mode and held mail get 404; bad input 400', async () => {
  const m = await receive(a.live, a.from, [{ name: 'a.pdf', type: 'application/pdf', bytes: PDF }]);
  const other = await w.sender('Other Attachment Co', { mode: 'autonomous' });
  assert.equal((await download(other.live, m.id, 0)).status, 404);
  assert.equal((await download(a.test, m.id, 0)).status, 404, 'the test key does not see live mail');
  const gated = await w.sender('Held Attachment Co', { mode: 'gated_all' });
  const held = await receive(gated.live, gated.from, [{ name: 'h.pdf', type: 'application/pdf', bytes: PDF }]);
  assert.equal(held.status, 'pending_approval');
  assert.equal((await download(gated.live, held.id, 0)).status, 404, 'held mail stays unreadable');
  const d = await w.call('/decide_email', { key: gated.oversight, body: { id: held.id, decision: 'approve' } });
  assert.equal(d.status, 200, d.text);
  assert.equal((await download(gated.live, held.id, 0)).status, 200, 'released by a human: readable');
  for (const [query, status, field] of [
    [`id=${m.id}&attachment=att_1`, 404, 'attachment'],
    [`id=${m.id}&attachment=other.pdf`, 404, 'attachment'],
    [`id=${m.id}&attachment=`, 400, 'attachment'],
    [`id=${m.id}&attachment=${'x'.repeat(256)}`, 400, 'attachment'],
    [`id=${m.id}&index=0`, 400, 'index'],
    [`id=${m.id}`, 400, 'attachment'],
    [`attachment=att_0`, 400, 'id'],
    [`id=${m.id}&attachment=att_0&size=1`, 400, 'size'],
  ]) {
    const r = await w.call(`/download_attachment?${query}`, { key: a.live });
    assert.equal(r.status, status, `${query}: ${r.text}`);
    assert.equal(r.body.error.field, field, query);
  }
  const sent = await w.call('/send_email', { key: a.live, body: { from: a.from, to: 'x@example.com', subject: 's', text: 't' } });
  assert.equal((await download(a.live, sent.body.id, 0)).status, 404, 'a sent message without attachments has none to download');
  const withFile = await w.call('/send_email', { key: a.live, body: { from: a.from, to: 'x@example.com', subject: 's', text: 't', attachments: [{ filename: 'mine.pdf', content_type: 'application/octet-stream', content_base64: PDF.subarray(0, 4000).toString('base64') }] } });
  const mine = await download(a.live, withFile.body.id, 'mine.pdf');
  assert.equal(mine.status, 200, 'a sent message\'s own attachment downloads too');
  assert.deepEqual([mine.headers.get('content-type'), mine.headers.get('x-attachment-sha256')], ['application/pdf', sha(PDF.subarray(0, 4000))]);
  assert.equal((await download(other.live, withFile.body.id, 'mine.pdf')).status, 404);
  const reader = await w.adminKey(a.account.id, { scopes: ['send'], name: 'sender only' });
  assert.equal((await download(reader, m.id, 0)).status, 403, 'needs read');
});

async function ownerCookie(acct) {
  const link = (await w.call('/admin/create_sign_in_link', { key: w.adminToken, body: { account: acct.account.id } })).body.url;
  const signed = await fetch(`${w.base}/console/auth`, { method: 'POST', redirect: 'manual', body: new URLSearchParams({ token: new URL(link).searchParams.get('token') }) });
  assert.equal(signed.status, 303);
  return signed.headers.get('set-cookie').split(';')[0];
}

test('in the console a reviewer downloads a held message\'s attachments from its page, as downloads', async () => {
  const gated = await w.sender('Console Attachment Co', { mode: 'gated_all' });
  const held = await receive(gated.live, gated.from, [
    { name: 'terms.pdf', type: 'application/pdf', bytes: PDF },
    { name: 'look.html', type: 'text/html', bytes: HTML },
  ]);
  assert.equal(held.status, 'pending_approval');
  const cookie = await ownerCookie(gated);
  const page = await (await fetch(`${w.base}/console/message?id=${held.id}`, { headers: { Cookie: cookie } })).text();
  const links = [...page.matchAll(/<a href="(\/console\/attachment\?[^"]+)" download>([^<]+)<\/a>/g)].map((m) => [m[1].replaceAll('&amp;', '&'), m[2]]);
  assert.deepEqual(links.map((l) => l[1]), ['terms.pdf', 'look.html'], page.slice(0, 300));
  const pdf = await fetch(`${w.base}${links[0][0]}`, { headers: { Cookie: cookie } });
  assert.equal(pdf.status, 200);
  assert.equal(pdf.headers.get('content-type'), 'application/pdf');
  assert.match(pdf.headers.get('content-disposition'), /^attachment; filename="terms.pdf"/);
  assert.equal(sha(Buffer.from(await pdf.arrayBuffer())), sha(PDF), 'the held message\'s bytes, to decide on');
  const html = await fetch(`${w.base}${links[1][0]}`, { headers: { Cookie: cookie } });
  assert.equal(html.headers.get('content-type'), 'application/octet-stream', 'never rendered as a page in the console\'s origin');
  assert.match(html.headers.get('content-security-policy'), /sandbox/);
  assert.equal((await fetch(`${w.base}${links[0][0]}`)).status, 401, 'no session');
  const stranger = await ownerCookie(a);
  assert.equal((await fetch(`${w.base}${links[0][0]}`, { headers: { Cookie: stranger } })).status, 404, 'another account\'s owner');
  assert.equal((await fetch(`${w.base}/console/attachment?id=${held.id}&attachment=nope`, { headers: { Cookie: cookie } })).status, 404);
});

test('over MCP the bytes come as an embedded resource', async () => {
  const m = await receive(a.live, a.from, [{ name: 'small.pdf', type: 'application/octet-stream', bytes: PDF.subarray(0, 5000) }]);
  const client = new Client({ name: 'attachments-test', version: '1.0.0' });
  await client.connect(new StreamableHTTPClientTransport(new URL(`${w.base}/mcp`), { requestInit: { headers: { Authorization: `Bearer ${a.live}` } } }));
  const r = await client.callTool({ name: 'download_attachment', arguments: { id: m.id, attachment: 'att_0' } });
  assert.ok(!r.isError, JSON.stringify(r).slice(0, 300));
  const res = r.content.find((c) => c.type === 'resource').resource;
  assert.equal(res.mimeType, 'application/pdf');
  assert.equal(sha(Buffer.from(res.blob, 'base64')), sha(PDF.subarray(0, 5000)));
  assert.match(r.content[0].text, /application\/pdf/);
  await client.close();
});

test('the hourly cron deletes a deleted mailbox\'s attachments after the retention period, and only those', async () => {
  const gone = await w.sender('Deleted Mailbox Co', { mode: 'autonomous' });
  const m = await receive(gone.live, gone.from, [{ name: 'c.pdf', type: 'application/pdf', bytes: PDF }]);
  const kept = await receive(a.live, a.from, [{ name: 'k.pdf', type: 'application/pdf', bytes: PDF }]);
  const del = await w.call('/delete_mailbox', { key: gone.live, body: { mailbox: gone.from } });
  assert.equal(del.status, 200, del.text);
  await w.cron();
  assert.equal((await w.sql(`SELECT count(*) AS n FROM attachments WHERE message_id = '${m.id}'`))[0].n, 1, 'kept during the retention period');
  await w.restart({ CLOCK_OFFSET_SECONDS: String(31 * 24 * 3600) });
  await w.cron();
  assert.equal((await w.sql(`SELECT count(*) AS n FROM attachments WHERE message_id = '${m.id}'`))[0].n, 0, 'deleted after it');
  assert.equal((await w.sql(`SELECT count(*) AS n FROM attachments WHERE message_id = '${kept.id}'`))[0].n, 1, 'a live mailbox keeps its own');
  const still = await download(a.live, kept.id, 0);
  assert.equal(still.status, 200);
  assert.equal(sha(Buffer.from(await still.arrayBuffer())), sha(PDF));
});
