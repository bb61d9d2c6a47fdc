// `make bench-batch`: how long `POST /send_batch` takes to accept 500 emails (issue 16), and
// what it costs in storage round trips, under `wrangler dev` (local workerd, SQLite D1 and
// Queues) on loopback. One account, one autonomous mailbox, a test key (the sandbox delivers);
// a warm-up batch of 10, then BENCH_BATCHES (default 5) batches of BENCH_BATCH_SIZE (default
// 500) items, one at a time, each item a ~200-byte send_email body. Reports each batch's time
// to the 202, the median, the answer's Server-Timing (D1 round trips and queue sends) and how
// long delivery of every item took. Results go to stdout and bench/results/batch-<timestamp>.json.
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { startWorker, eventually, ROOT } from '../tests/integration/harness.mjs';

const int = (name, dflt, max) => {
  const n = Number(process.env[name] ?? dflt);
  if (!Number.isInteger(n) || n < 1 || n > max) throw new Error(`${name} must be an integer in 1..${max}`);
  return n;
};
const BATCHES = int('BENCH_BATCHES', 5, 50);
const SIZE = int('BENCH_BATCH_SIZE', 500, 500);

const load = loadavg()[0];
const w = await startWorker({ vars: { RATE_LIMIT_PER_MINUTE: '0', ACCOUNT_RATE_LIMIT_PER_MINUTE: '0' } });
try {
  const a = await w.sender('Batch Bench Co', { mode: 'autonomous' });
  const body = (n, tag) => ({ emails: Array.from({ length: n }, (_, i) => ({ from: a.from, to: `r${i}@example.com`, subject: `Batch ${tag} item ${i}`, text: `Item ${i} of ${n}, batch ${tag}.` })) });
  const post = async (b) => {
    const started = performance.now();
    const r = await fetch(`${w.base}/send_batch`, { method: 'POST', headers: { Authorization: `Bearer ${a.test}`, 'Content-Type': 'application/json' }, body: JSON.stringify(b) });
    const text = await r.text();
    const ms = performance.now() - started;
    if (r.status !== 202) throw new Error(`send_batch answered ${r.status}: ${text.slice(0, 300)}`);
    return { ms, timing: r.headers.get('server-timing'), ids: JSON.parse(text).data.map((x) => x.id) };
  };
  await post(body(10, 'warm-up'));
  const runs = [];
  for (let b = 0; b < BATCHES; b++) {
    const r = await post(body(SIZE, b));
    const sent = Date.now();
    const quoted = r.ids.map((id) => `'${id}'`).join(',');
    const done = await eventually(async () => (await w.sql(`SELECT count(*) AS n FROM messages WHERE id IN (${quoted}) AND status = 'sent'`))[0].n === SIZE, { ms: 300_000, every: 500 });
    if (!done) throw new Error(`batch ${b}: not every item was delivered`);
    runs.push({ accept_ms: Math.round(r.ms), server_timing: r.timing, all_sent_ms: Date.now() - sent });
    console.log(`batch ${b + 1}/${BATCHES}: ${SIZE} accepted in ${r.ms.toFixed(0)} ms (${r.timing}); all sent ${runs.at(-1).all_sent_ms} ms later`);
  }
  const sorted = runs.map((r) => r.accept_ms).sort((x, y) => x - y);
  const median = sorted[Math.floor(sorted.length / 2)];
  let commit = '';
  try { commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT }).toString().trim(); } catch {}
  const result = { at: new Date().toISOString(), commit, cpus: cpus().length, load_before: load, size: SIZE, runs, median_accept_ms: median };
  console.log(`send_batch of ${SIZE}: median ${median} ms to accept (${(median / SIZE).toFixed(2)} ms an item), min ${sorted[0]}, max ${sorted.at(-1)}; commit ${commit}, ${cpus().length} CPUs, load ${load.toFixed(2)} before`);
  mkdirSync(join(ROOT, 'bench', 'results'), { recursive: true });
  writeFileSync(join(ROOT, 'bench', 'results', `batch-${result.at.replace(/[:.]/g, '-')}.json`), JSON.stringify(result, null, 2));
} finally {
  await w.stop();
}
