import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startWorker, eventually } from './harness.mjs';

let w;
before(async () => { w = await startWorker(); });
after(async () => { await w?.stop(); });

test('healthz answers with D1 reachable', async () => {
  const r = await w.call('/healthz');
  assert.equal(r.status, 200);
  assert.deepEqual(r.body, { ok: true, d1: 'ok' });
  assert.match(r.headers.get('request-id'), /^req_/);
});

test('a test key sends through the sandbox end to end', async () => {
  const { test: key, from } = await w.sender('Smoke Co', { mode: 'autonomous' });
  const sent = await w.call('/send_email', { key, body: { from, to: 'ada@example.com', subject: 'Hi', text: 'Hello' } });
  assert.equal(sent.status, 202, sent.text);
  assert.equal(sent.body.status, 'queued');
  const done = await eventually(async () => {
    const r = await w.call('/get_email', { key, query: { id: sent.body.id } });
    return r.body.status === 'sent' && r.body;
  });
  assert.equal(done.provider, 'sandbox');
  assert.deepEqual(done.timeline.map((t) => t.event), ['created', 'identity', 'attempt', 'sent']);
});
