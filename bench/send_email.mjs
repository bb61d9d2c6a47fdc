// `make bench`: POST /send_email latency and throughput of MultiMail edge against a minimal
// TypeScript worker (bench/ts-worker), both under `wrangler dev` (local workerd + local SQLite D1
// + local Queues) on loopback, with the same client, the same body and the same load.
// See bench/README.md for what the numbers do and do not mean.
//
// Knobs (environment): BENCH_N1 (requests at c=1, default 300), BENCH_N32 (at c=32, default 2000),
// BENCH_WARMUP (default 50). Results go to stdout and to bench/results/<timestamp>.json.
import { spawn, execFile } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gzipSync, constants as zc } from 'node:zlib';
import { createHash } from 'node:crypto';
import http from 'node:http';
import { startWorker, freePort, ROOT } from '../tests/integration/harness.mjs';

const run = promisify(execFile);
const BIN = join(ROOT, 'node_modules', '.bin');
const ENV = { ...process.env, PATH: `${BIN}:${process.env.PATH}`, WRANGLER_SEND_METRICS: 'false', CI: 'true' };
const TS_CONFIG = join(ROOT, 'bench', 'ts-worker', 'wrangler.toml');
const TS_KEY = 'mm_bench_ts_0123456789abcdef'; // the constant in bench/ts-worker/index.ts
const WASM = join(ROOT, 'build', 'index_bg.wasm');

const int = (name, dflt) => {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 100_000) throw new Error(`${name} must be an integer in 1..100000`);
  return n;
};
const N1 = int('BENCH_N1', 300);
const N32 = int('BENCH_N32', 2000);
const WARMUP = int('BENCH_WARMUP', 50);
const REQUEST_TIMEOUT_MS = 30_000;
const MAX_FAILURE_RATE = 0.01;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const say = (s) => process.stderr.write(`[bench] ${s}\n`);
const RUN_ID = new Date().toISOString().replace(/[:.]/g, '-');

// --- the load ---------------------------------------------------------------------------------

/** One POST on a keep-alive agent; resolves {status, body} (status 0 on a transport error). */
function post(agent, base, path, headers, payload) {
  return new Promise((resolve) => {
    const u = new URL(base + path);
    const req = http.request({
      host: u.hostname, port: u.port, path: u.pathname, method: 'POST', agent,
      headers: { ...headers, 'Content-Type': 'application/json', 'Content-Length': payload.length },
      timeout: REQUEST_TIMEOUT_MS,
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }));
      res.on('error', (e) => resolve({ status: 0, body: String(e) }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ status: 0, body: String(e) }));
    req.end(payload);
  });
}

function pct(sorted, p) {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

/**
 * `n` requests, `c` at a time (a fixed pool of `c` loops over a shared counter: bounded).
 * `headersFor(i)` gives request i's headers. Returns latency stats, rps, non-202s and the ids.
 */
async function load(base, { n, c, headersFor, payload }) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: c, maxFreeSockets: c });
  const lat = new Float64Array(n);
  const bad = {};
  const ids = [];
  let next = 0;
  let non202 = 0;
  const t0 = performance.now();
  const loop = async () => {
    for (;;) {
      const i = next++;
      if (i >= n) return;
      const s = performance.now();
      const r = await post(agent, base, '/send_email', headersFor(i), payload);
      lat[i] = performance.now() - s;
      let ok = r.status === 202;
      if (ok) {
        try {
          const b = JSON.parse(r.body);
          ok = b.status === 'queued' && typeof b.id === 'string';
          if (ok) ids.push(b.id);
        } catch { ok = false; }
      }
      if (!ok) {
        non202++;
        const k = `${r.status} ${r.body.slice(0, 160)}`;
        bad[k] = (bad[k] ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: c }, loop));
  const wallMs = performance.now() - t0;
  agent.destroy();
  const sorted = Array.from(lat).sort((a, b) => a - b);
  const mean = sorted.reduce((a, b) => a + b, 0) / n;
  return {
    n, c, wall_ms: round(wallMs), rps: round(n / (wallMs / 1000), 1),
    median_ms: round(pct(sorted, 50)), p90_ms: round(pct(sorted, 90)), p99_ms: round(pct(sorted, 99)),
    mean_ms: round(mean), min_ms: round(sorted[0]), max_ms: round(sorted[n - 1]),
    non_202: non202, failures: bad, last_ids: ids.slice(-3),
  };
}

const round = (x, d = 2) => Math.round(x * 10 ** d) / 10 ** d;

// --- the two workers --------------------------------------------------------------------------

/** The TS baseline under `wrangler dev`, started the way the harness starts ours. */
async function startTsWorker() {
  const state = mkdtempSync(join(tmpdir(), 'mm-bench-ts-'));
  await run(join(BIN, 'wrangler'), ['d1', 'migrations', 'apply', 'multimail-bench-ts', '--local', '--persist-to', state, '-c', TS_CONFIG],
    { cwd: ROOT, env: ENV });
  const port = await freePort();
  const inspector = await freePort();
  const args = ['dev', '-c', TS_CONFIG, '--ip', '127.0.0.1', '--port', String(port), '--inspector-port', String(inspector),
    '--persist-to', state, '--show-interactive-dev-session=false', '--log-level', 'info'];
  const child = spawn(join(BIN, 'wrangler'), args, { cwd: ROOT, env: ENV, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout.on('data', (d) => { log += d; });
  child.stderr.on('data', (d) => { log += d; });
  const base = `http://127.0.0.1:${port}`;
  const stop = async () => {
    try { process.kill(-child.pid, 'SIGTERM'); } catch {}
    await Promise.race([new Promise((r) => child.once('exit', r)), sleep(5000)]);
    try { process.kill(-child.pid, 'SIGKILL'); } catch {}
    rmSync(state, { recursive: true, force: true });
  };
  const deadline = Date.now() + 90_000;
  for (;;) {
    if (child.exitCode !== null) { await stop(); throw new Error(`TS wrangler dev exited early:\n${log}`); }
    try {
      const r = await fetch(`${base}/healthz`);
      if (r.ok) break;
    } catch {}
    if (Date.now() > deadline) { await stop(); throw new Error(`TS wrangler dev did not become ready:\n${log}`); }
    await sleep(250);
  }
  return { base, state, log: () => log, stop };
}

/** Waits (bounded) until our delivery consumer has taken every queued message; returns seconds. */
async function drainOurs(w, limitMs = 300_000) {
  const t0 = Date.now();
  while (Date.now() - t0 < limitMs) {
    let n;
    try {
      n = (await w.sql("SELECT COUNT(*) AS n FROM messages WHERE status IN ('queued','sending')"))[0].n;
    } catch (e) {
      say(`drain: d1 execute failed (${String(e).split('\n')[0]}), retrying`);
      n = -1;
    }
    if (n === 0) return round((Date.now() - t0) / 1000, 1);
    await sleep(2000);
  }
  say(`drain: still undelivered after ${limitMs / 1000}s, going on`);
  return null;
}

// --- the run ----------------------------------------------------------------------------------

const running = new Set();
async function stopAll() {
  for (const w of running) { try { await w.stop(); } catch {} }
  running.clear();
}
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => { say(`${sig}: stopping workers`); stopAll().finally(() => process.exit(130)); });
}

function body(from) {
  return Buffer.from(JSON.stringify({
    from,
    to: 'ada.lovelace@example.com',
    subject: 'Your invoice INV-2025-1142 for November',
    text: 'Hi Ada,\n\nThanks for your order. Your invoice INV-2025-1142 for November is attached to your '
      + 'account and comes to EUR 1,240.00, due on 15 December. You can pay by bank transfer or card '
      + 'from the billing page; reply to this email if anything looks wrong and a person will answer '
      + 'within one working day.\n\nBest regards,\nThe Billing Agent\n',
  }));
}

async function version(cmd, args) {
  try { return (await run(cmd, args, { env: ENV })).stdout.trim().split('\n').pop(); } catch { return 'unknown'; }
}

async function main() {
  const started = new Date();
  const meta = {
    started_at: started.toISOString(),
    nproc: cpus().length,
    cpu: cpus()[0]?.model ?? 'unknown',
    loadavg_start: loadavg().map((x) => round(x)),
    node: process.version,
    wrangler: await version(join(BIN, 'wrangler'), ['--version']),
    commit: await version('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD']),
    // What `wrangler dev` builds is the working tree, not the commit: say when they differ.
    dirty: (await run('git', ['-C', ROOT, 'status', '--porcelain', '--', 'src', 'Cargo.toml', 'Cargo.lock', 'wrangler.toml', 'migrations'])
      .then((r) => r.stdout.trim().split('\n').filter(Boolean).length).catch(() => -1)),
    n1: N1, n32: N32, warmup: WARMUP,
  };
  say(`nproc ${meta.nproc}, node ${meta.node}, wrangler ${meta.wrangler}, commit ${meta.commit}, load ${meta.loadavg_start.join(' ')}`);

  let sizes;
  const rows = [];
  const drains = {};
  const record = (worker, label, r) => {
    rows.push({ worker, label, ...r });
    say(`${worker.padEnd(4)} ${label.padEnd(14)} n=${r.n} c=${r.c}: median ${r.median_ms} ms, p99 ${r.p99_ms} ms, ${r.rps} req/s, non-202 ${r.non_202}`);
  };

  // Ours.
  say('starting MultiMail edge (wrangler dev, fresh local state)');
  const ours = await startWorker({ vars: { RATE_LIMIT_PER_MINUTE: '0' } });
  running.add(ours);
  try {
    // Sizes of what is being measured: read after wrangler dev's own `make -s build`.
    const wasm = readFileSync(WASM);
    sizes = {
      wasm_raw_bytes: wasm.length,
      wasm_gzip_bytes: gzipSync(wasm).length,
      wasm_gzip9_bytes: gzipSync(wasm, { level: zc.Z_BEST_COMPRESSION }).length,
      wasm_sha256: createHash('sha256').update(wasm).digest('hex').slice(0, 16),
      js_glue_bytes: readFileSync(join(ROOT, 'build', 'index.js')).length,
    };

    const { account, test: key } = await ours.createAccount('Bench Co');
    const from = `billing@${account.default_domain}`;
    const mb = await ours.call('/create_mailbox', { key, body: { address: from } });
    if (mb.status !== 201) throw new Error(`create_mailbox ${mb.status}: ${mb.text}`);
    const payload = body(from);
    const auth = { Authorization: `Bearer ${key}` };
    const keyed = (phase) => (i) => ({ ...auth, 'Idempotency-Key': `bench-${RUN_ID}-${phase}-${i}` });

    const warm = await load(ours.base, { n: WARMUP, c: 8, headersFor: keyed('warm'), payload });
    say(`ours warm-up: ${WARMUP - warm.non_202}/${WARMUP} 202`);
    drains.ours_warmup_s = await drainOurs(ours);
    record('ours', 'c=1 idem', await load(ours.base, { n: N1, c: 1, headersFor: keyed('c1'), payload }));
    drains.ours_c1_s = await drainOurs(ours);
    record('ours', 'c=32 idem', await load(ours.base, { n: N32, c: 32, headersFor: keyed('c32'), payload }));
    drains.ours_c32_s = await drainOurs(ours);
    record('ours', 'c=32 no-idem', await load(ours.base, { n: N32, c: 32, headersFor: () => auth, payload }));
    drains.ours_c32_noidem_s = await drainOurs(ours);
    say(`ours: delivery backlog drained ${JSON.stringify(drains)} s after each phase`);
  } catch (e) {
    say(`ours failed; last of its log:\n${ours.log().slice(-3000)}`);
    throw e;
  } finally {
    await ours.stop();
    running.delete(ours);
  }

  await sleep(3000);

  // The TypeScript baseline.
  say('starting the TypeScript baseline (bench/ts-worker, fresh local state)');
  const ts = await startTsWorker();
  running.add(ts);
  try {
    const payload = body('billing@bench-co.multimail.test');
    const auth = { Authorization: `Bearer ${TS_KEY}` };
    const warm = await load(ts.base, { n: WARMUP, c: 8, headersFor: () => auth, payload });
    say(`ts warm-up: ${WARMUP - warm.non_202}/${WARMUP} 202`);
    await sleep(2000);
    record('ts', 'c=1', await load(ts.base, { n: N1, c: 1, headersFor: () => auth, payload }));
    await sleep(2000);
    record('ts', 'c=32', await load(ts.base, { n: N32, c: 32, headersFor: () => auth, payload }));
  } catch (e) {
    say(`ts failed; last of its log:\n${ts.log().slice(-3000)}`);
    throw e;
  } finally {
    await ts.stop();
    running.delete(ts);
  }

  const get = (w, l) => rows.find((r) => r.worker === w && r.label === l);
  const ratio = (a, b) => round(a / b, 2);
  const ratios = {};
  for (const [c, oursLabel, tsLabel] of [[1, 'c=1 idem', 'c=1'], [32, 'c=32 idem', 'c=32'], ['32 no-idem', 'c=32 no-idem', 'c=32']]) {
    const o = get('ours', oursLabel), t = get('ts', tsLabel);
    ratios[`c=${c}`] = { median: ratio(o.median_ms, t.median_ms), p99: ratio(o.p99_ms, t.p99_ms), rps: ratio(o.rps, t.rps) };
  }
  const idemCost = (() => {
    const a = get('ours', 'c=32 idem'), b = get('ours', 'c=32 no-idem');
    return { median_ms: round(a.median_ms - b.median_ms), p99_ms: round(a.p99_ms - b.p99_ms), rps_ratio: ratio(a.rps, b.rps) };
  })();
  meta.loadavg_end = loadavg().map((x) => round(x));
  // `wrangler dev` rebuilds when src/ changes (watch_dir): a changed hash means ours was rebuilt
  // (by us at start, or mid-run by someone editing src/), and the sizes above are from before.
  sizes.wasm_sha256_end = createHash('sha256').update(readFileSync(WASM)).digest('hex').slice(0, 16);
  sizes.wasm_raw_bytes_end = readFileSync(WASM).length;
  meta.duration_s = round((Date.now() - started.getTime()) / 1000, 1);

  // Report.
  const lines = [];
  lines.push('');
  lines.push(`POST /send_email under wrangler dev — ${meta.nproc} cores (${meta.cpu}), node ${meta.node}, wrangler ${meta.wrangler}, `
    + `commit ${meta.commit}${meta.dirty ? ` + ${meta.dirty} uncommitted source paths` : ''}`);
  lines.push(`load average at start ${meta.loadavg_start.join(' ')}, at end ${meta.loadavg_end.join(' ')}; took ${meta.duration_s} s`);
  lines.push('');
  lines.push('| worker | load | requests | median ms | p99 ms | req/s | non-202 |');
  lines.push('|---|---|---:|---:|---:|---:|---:|');
  for (const r of rows) lines.push(`| ${r.worker} | ${r.label} | ${r.n} | ${r.median_ms} | ${r.p99_ms} | ${r.rps} | ${r.non_202} |`);
  lines.push('');
  lines.push('| ours / ts | median | p99 | req/s |');
  lines.push('|---|---:|---:|---:|');
  for (const [k, v] of Object.entries(ratios)) lines.push(`| ${k} | ${v.median} | ${v.p99} | ${v.rps} |`);
  lines.push('');
  lines.push(`idempotency at c=32 (idem minus no-idem): median +${idemCost.median_ms} ms, p99 +${idemCost.p99_ms} ms, req/s x${idemCost.rps_ratio}`);
  lines.push(`wasm build/index_bg.wasm: ${sizes.wasm_raw_bytes} bytes raw (${round(sizes.wasm_raw_bytes / 1024 / 1024)} MiB), `
    + `${sizes.wasm_gzip_bytes} bytes gzip -6 (${round(sizes.wasm_gzip_bytes / 1024)} KiB), ${sizes.wasm_gzip9_bytes} gzip -9; `
    + `JS glue build/index.js ${sizes.js_glue_bytes} bytes`);
  if (sizes.wasm_sha256_end !== sizes.wasm_sha256) {
    lines.push(`NOTE: build/index_bg.wasm changed during the run (${sizes.wasm_sha256} -> ${sizes.wasm_sha256_end}, ${sizes.wasm_raw_bytes_end} bytes): ours was rebuilt`);
  }
  lines.push(`our delivery backlog drained (s after each phase): ${JSON.stringify(drains)}`);
  console.log(lines.join('\n'));

  const failing = rows.filter((r) => r.non_202 / r.n > MAX_FAILURE_RATE);
  for (const r of rows.filter((x) => x.non_202 > 0)) {
    say(`${r.worker} ${r.label}: ${r.non_202} non-202 answers: ${JSON.stringify(r.failures)}`);
  }

  mkdirSync(join(ROOT, 'bench', 'results'), { recursive: true });
  const out = join(ROOT, 'bench', 'results', `${RUN_ID}.json`);
  writeFileSync(out, JSON.stringify({ meta, sizes, rows, ratios, idempotency_cost_c32: idemCost, drain_s: drains }, null, 2) + '\n');
  say(`wrote ${out}`);

  if (failing.length) {
    console.error(`\nFAIL: more than ${MAX_FAILURE_RATE * 100}% non-202 in ${failing.map((r) => `${r.worker} ${r.label} (${r.non_202}/${r.n})`).join(', ')}`);
    process.exitCode = 1;
  }
}

main().catch(async (e) => {
  console.error(e);
  await stopAll();
  process.exit(1);
});
