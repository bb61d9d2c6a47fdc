// A 60-second mixed load at 32 concurrent clients (issue 17, scenario 6): each client loops over
// send (an autonomous mailbox, keyed), send-and-decide (a gated_send mailbox, approved by a
// human key), and reads (get_email, check_inbox, list_pending) for 60 s. Zero errors: every
// answer is the documented success, no connection fails, and every accepted message ends `sent`
// at the provider capture exactly once. Latency percentiles per operation are printed (recorded
// in docs/reliability.md). `LOAD_SECONDS` and `LOAD_CLIENTS` change the shape for a local run.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { start, requestsFor, drain, eventually, percentile } from './lib.mjs';

const SECONDS = Number(process.env.LOAD_SECONDS ?? 60);
const CLIENTS = Number(process.env.LOAD_CLIENTS ?? 32);
let w, cap;
before(async () => { ({ w, cap } = await start()); });
after(async () => { await w?.stop(); await cap?.close(); });

test(`a ${SECONDS}-second load at ${CLIENTS} clients across send, read and decide has zero errors`, { timeout: (SECONDS + 240) * 1000 }, async () => {
  const free = await w.sender('Load Co', { mode: 'autonomous' });
  const gated = await w.call('/create_mailbox', { key: free.live, body: { address: `gated@${free.account.default_domain}`, oversight_mode: 'gated_send' } });
  assert.equal(gated.status, 201, gated.text);
  const lat = { send: [], decide: [], read: [] };
  const errors = [];
  const accepted = [];
  const call = async (op, path, init) => {
    const started = performance.now();
    let res, text;
    try {
      res = await fetch(w.base + path, init);
      text = await res.text();
    } catch (e) {
      errors.push(`${op} ${path}: ${e.message}`);
      return null;
    }
    lat[op].push(performance.now() - started);
    if (!res.ok) { errors.push(`${op} ${path}: ${res.status} ${text.slice(0, 200)}`); return null; }
    return JSON.parse(text);
  };
  const post = (key, body, extra = {}) => ({ method: 'POST', headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json', ...extra }, body: JSON.stringify(body) });
  const get = (key) => ({ headers: { Authorization: `Bearer ${key}` } });
  const end = Date.now() + SECONDS * 1000;
  let n = 0;
  const client = async (c) => {
    for (let i = 0; Date.now() < end; i++) {
      const k = `load-${c}-${i}`;
      switch (i % 4) {
        case 0: {
          const r = await call('send', '/send_email', post(free.live, { from: free.from, to: `c${c}@example.com`, subject: `load ${c}/${i}`, text: 'x' }, { 'Idempotency-Key': k }));
          if (r) accepted.push(r.id);
          break;
        }
        case 1: {
          const r = await call('send', '/send_email', post(free.live, { from: gated.body.address, to: `c${c}@example.com`, subject: `held ${c}/${i}`, text: 'x' }, { 'Idempotency-Key': k }));
          if (!r) break;
          accepted.push(r.id);
          await call('decide', '/decide_email', post(free.oversight, { id: r.id, decision: 'approve' }, { 'Idempotency-Key': `${k}-d` }));
          break;
        }
        case 2: {
          const last = accepted[accepted.length - 1];
          if (last) await call('read', `/get_email?id=${last}`, get(free.live));
          break;
        }
        default:
          await call('read', (i % 8 === 3 ? '/check_inbox?limit=20' : '/list_pending?limit=20'), get(free.live));
      }
      n++;
    }
  };
  const started = Date.now();
  await Promise.all(Array.from({ length: CLIENTS }, (_, c) => client(c)));
  const elapsed = (Date.now() - started) / 1000;
  assert.deepEqual(errors.slice(0, 10), [], `${errors.length} errors`);
  assert.ok(accepted.length > CLIENTS, `only ${accepted.length} messages accepted`);

  // Every accepted message ends `sent`, once at the provider.
  await drain(w, cap, free);
  const ids = accepted.map((id) => `'${id}'`).join(',');
  const unsent = await eventually(async () => {
    const [row] = await w.sql(`SELECT count(*) AS n FROM messages WHERE id IN (${ids}) AND status <> 'sent'`);
    return row.n === 0 ? 'none' : false;
  }, { ms: 120_000, every: 2000 });
  assert.equal(unsent, 'none', 'accepted messages not sent');
  const twice = accepted.filter((id) => requestsFor(cap, id).length !== 1);
  assert.deepEqual(twice, [], 'messages not at the provider exactly once');

  const fmt = (xs) => {
    const s = [...xs].sort((a, b) => a - b);
    return `n=${s.length} p50=${percentile(s, 50).toFixed(0)} p90=${percentile(s, 90).toFixed(0)} p99=${percentile(s, 99).toFixed(0)} max=${s[s.length - 1].toFixed(0)} ms`;
  };
  console.log(`load: ${CLIENTS} clients for ${elapsed.toFixed(1)} s: ${n} operations (${(n / elapsed).toFixed(1)}/s), ${accepted.length} messages, 0 errors`);
  for (const [op, xs] of Object.entries(lat)) console.log(`load: ${op} ${fmt(xs)}`);
});
