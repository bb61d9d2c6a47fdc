// Outbound messages larger than one D1 row (issue 16): their attachments wait in the attachments
// bucket (the real worker's local R2) and come back, checked by hash, when the message is
// delivered. Against a Resend capture (Resend takes 40 MB after base64; Postmark only 10 MB with
// attachments): a 10 MB attachment reaches the provider byte-identical; a held one, approved with
// edits by a human, too; a message over 25 MB as sent (attachments in base64) is refused and
// stores nothing; a large body is never read for a stranger; a batch keeps to 1.5 MB a message.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { startWorker, eventually } from './harness.mjs';
import { startCapture } from './capture.mjs';

let w, cap, a;
before(async () => {
  cap = await startCapture();
  w = await startWorker({ logLevel: 'log', vars: { EMAIL_PROVIDER: 'resend', RESEND_BASE_URL: cap.url, RESEND_API_KEY: 're_test_secret', DELIVERY_BACKOFF_SECONDS: '1' } });
  a = await w.sender('Large Mail Co', { mode: 'autonomous' });
});
after(async () => { await w?.stop(); await cap?.close(); });

const sha = (b) => createHash('sha256').update(b).digest('hex');
const MB = 1_000_000;
/** A PDF-looking file of `n` bytes, different every time. */
const file = (n) => Buffer.concat([Buffer.from('%PDF-1.7\n'), randomBytes(n - 9)]);
const atProvider = (id) => cap.requests.filter((r) => r.json?.headers?.['X-MultiMail-Message-Id'] === id);
const messages = async () => (await w.sql('SELECT count(*) AS n FROM messages'))[0].n;

test('a 10 MB attachment reaches the provider byte-identical; D1 keeps only where it is', async () => {
  const big = file(10 * MB);
  const small = Buffer.from('a small note\n');
  const r = await w.call('/send_email', { key: a.live, body: { from: a.from, to: 'ada@example.com', subject: 'The contract', text: 'Attached.',
    attachments: [{ filename: 'contract.pdf', content_type: 'application/pdf', content_base64: big.toString('base64') }, { filename: 'note.txt', content_type: 'text/plain', content_base64: small.toString('base64') }] } });
  assert.equal(r.status, 202, r.text.slice(0, 500));
  assert.equal(r.body.status, 'queued');
  const sent = await eventually(async () => {
    const m = await w.call('/get_email', { key: a.live, query: { id: r.body.id } });
    return m.body.status === 'sent' && m.body;
  }, { ms: 60_000 });
  assert.equal(sent.provider, 'resend');
  const reqs = atProvider(r.body.id);
  assert.equal(reqs.length, 1, 'sent once');
  const atts = reqs[0].json.attachments;
  assert.deepEqual(atts.map((x) => [x.filename, x.content_type]), [['contract.pdf', 'application/pdf'], ['note.txt', 'text/plain']]);
  assert.equal(sha(Buffer.from(atts[0].content, 'base64')), sha(big), 'the 10 MB arrived intact');
  assert.equal(Buffer.from(atts[1].content, 'base64').toString(), small.toString());
  // D1 holds the metadata; the bytes are in the bucket, and the MIME is built at delivery.
  const blobs = await w.sql(`SELECT kind, length(body) AS n FROM message_blobs WHERE message_id = '${r.body.id}' ORDER BY kind`);
  assert.deepEqual(blobs.map((b) => b.kind), ['mime', 'outbound']);
  assert.equal(blobs[0].n, 0);
  assert.ok(blobs[1].n < 5000, `the stored message is small: ${blobs[1].n} bytes`);
  const rows = await w.sql(`SELECT idx, r2_key, size FROM attachments WHERE message_id = '${r.body.id}' ORDER BY idx`);
  assert.deepEqual(rows.map((x) => [x.idx, x.r2_key, x.size]), [[0, `outbound/${r.body.id}/0`, big.length], [1, `outbound/${r.body.id}/1`, small.length]]);
  const read = await w.call('/read_email', { key: a.live, query: { id: r.body.id } });
  assert.deepEqual(read.body.attachments.map((x) => [x.id, x.filename, x.size, x.stored, x.sha256, x.detected_type, x.content_base64]),
    [['att_0', 'contract.pdf', big.length, true, sha(big), 'application/pdf', null], ['att_1', 'note.txt', small.length, true, sha(small), 'text/plain', null]]);
  // The sender's own copy downloads from the bucket, streamed, byte-identical.
  const dl = await fetch(`${w.base}${read.body.attachments[0].download}`, { headers: { Authorization: `Bearer ${a.live}` } });
  assert.equal(dl.status, 200);
  assert.deepEqual([dl.headers.get('content-type'), dl.headers.get('x-attachment-size'), dl.headers.get('x-attachment-sha256')], ['application/pdf', String(big.length), sha(big)]);
  assert.equal(sha(Buffer.from(await dl.arrayBuffer())), sha(big));
  const other = await w.sender('Other Large Co', { mode: 'autonomous' });
  assert.equal((await w.call(`/download_attachment?id=${r.body.id}&attachment=att_0`, { key: other.live })).status, 404, 'never another account\'s');
  // What it cost the isolate (the worker logs its WebAssembly memory after a large send).
  const mem = [...w.log().matchAll(/large send msg_\w+: (\d+) bytes of attachments in the bucket; wasm memory (\d+) MiB/g)].map((m) => Number(m[2]));
  const delivery = [...w.log().matchAll(/delivery cost: .* wasm_memory_mib=(\d+)/g)].map((m) => Number(m[1]));
  assert.ok(mem.length && delivery.length, `both paths log their memory: ${w.log().split('\n').filter((l) => /wasm|large send|delivery cost/.test(l)).join(' / ').slice(0, 800)}`);
  console.log(`# 10 MB attachment: wasm memory after the send ${mem.at(-1)} MiB, after its delivery ${Math.max(...delivery)} MiB`);
});

test('a held large message approved with edits by a human is sent once with its attachment intact', async () => {
  const g = await w.sender('Large Held Co', { mode: 'gated_send' });
  const big = file(3 * MB);
  const r = await w.call('/send_email', { key: g.live, body: { from: g.from, to: ['ada@example.com', 'bob@example.com'], subject: 'Draft', text: 'first draft',
    attachments: [{ filename: 'deck.pdf', content_base64: big.toString('base64') }] } });
  assert.equal(r.status, 202, r.text.slice(0, 300));
  assert.equal(r.body.status, 'pending_approval');
  assert.equal((await w.call('/decide_email', { key: g.live, body: { id: r.body.id, decision: 'approve' } })).status, 403, 'the agent cannot approve it');
  const d = await w.call('/decide_email', { key: g.oversight, body: { id: r.body.id, decision: 'approve', edits: { text: 'final text', to: ['ada@example.com'] } } });
  assert.equal(d.status, 200, d.text);
  const req = await eventually(async () => atProvider(r.body.id)[0], { ms: 30_000 });
  assert.equal(req.json.text, 'final text');
  assert.deepEqual(req.json.to, ['ada@example.com']);
  assert.equal(sha(Buffer.from(req.json.attachments[0].content, 'base64')), sha(big));
  assert.equal(atProvider(r.body.id).length, 1);
});

test('over 25 MB as sent is refused and stores nothing; a large body is read only for a key', async () => {
  const before = await messages();
  const over = randomBytes(19 * MB).toString('base64'); // 25.3 MB in base64
  const r = await w.call('/send_email', { key: a.live, body: { from: a.from, to: 'ada@example.com', subject: 'Too big', text: 't', attachments: [{ filename: 'x.bin', content_base64: over }] } });
  assert.equal(r.status, 413, r.text.slice(0, 300));
  assert.equal(r.body.error.code, 'message_too_large');
  const stranger = await fetch(`${w.base}/send_email`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ attachments: [{ content_base64: over }] }) });
  assert.equal(stranger.status, 401, 'no key: refused before its 25 MB are read');
  const huge = await fetch(`${w.base}/send_email`, { method: 'POST', headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${a.live}` }, body: 'x'.repeat(29 * 1024 * 1024) });
  assert.equal(huge.status, 413);
  assert.equal((await huge.json()).error.code, 'payload_too_large');
  // Other routes keep the 4 MiB body.
  const other = await fetch(`${w.base}/tag_email`, { method: 'POST', headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${a.live}` }, body: JSON.stringify({ pad: 'x'.repeat(5 * 1024 * 1024) }) });
  assert.equal(other.status, 413);
  assert.equal(await messages(), before, 'nothing was stored');
});

test('a batch stores its messages whole in D1: an item over 1.5 MB is refused with a pointer to send_email', async () => {
  const before = await messages();
  const item = (n) => ({ from: a.from, to: 'ada@example.com', subject: `b${n}`, text: 't', attachments: [{ filename: 'f.bin', content_base64: randomBytes(n).toString('base64') }] });
  const r = await w.call('/send_batch', { key: a.live, body: { emails: [item(1000), item(2 * MB)] } });
  assert.equal(r.status, 422, r.text.slice(0, 300));
  assert.deepEqual(r.body.error.data.map((x) => x.status === 'refused' ? [x.index, x.http_status, x.error.code] : [x.index, x.status]), [[0, 'queued'], [1, 413, 'message_too_large']]);
  assert.match(r.body.error.data[1].error.hint, /send_email/);
  assert.equal(await messages(), before);
});
