// `make bench`: POST /send_email latency and throughput of MultiMail edge against a minimal
// TypeScript worker (bench/ts-worker) and a TypeScript worker doing the same essential work
// (bench/ts-equal), all under `wrangler dev` (local workerd + local SQLite D1 + local Queues) on
// loopback, with the same client, the same body and the same load. Ours' answers carry
// `Server-Timing` (D1, queue and Durable Object round trips); the report counts them and checks
// the figures against issue 13's targets.
// See bench/README.md for what the numbers do and do not mean.
//
// Knobs (environment): BENCH_N1 (requests at c=1, default 300), BENCH_N32 (at c=32, default
// 2000), BENCH_WARMUP (default 50), BENCH_BLOCKS (c=32 runs in this many blocks, default 4).
// Results go to stdout and to bench/results/<timestamp>.json.
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
const EQ_CONFIG = join(ROOT, 'bench', 'ts-equal', 'wrangler.toml');
const EQ_KEY = `mm_test_${'b'.repeat(43)}`; // seeded through bench/ts-equal's /bench/seed
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
const BLOCKS = int('BENCH_BLOCKS', 4); // interleaved blocks for ours at c=32 with/without Idempotency-Key
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
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString(), timing: res.headers['server-timing'] }));
      res.on('error', (e) => resolve({ status: 0, body: String(e) }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ status: 0, body: String(e) }));
    req.end(payload);
  });
}

/** `Server-Timing: d1;count=2;dur=1.0, queue;count=1;dur=0.2, …` → {d1: 2, queue: 1, do: 0, total_ms}. */
function parseTiming(h) {
  if (!h) return null;
  const out = {};
  for (const part of h.split(',')) {
    const [name, ...params] = part.trim().split(';');
    const p = Object.fromEntries(params.map((x) => x.split('=')));
    out[name] = name === 'total' ? Number(p.dur) : Number(p.count);
  }
  return out;
}

/** Whole-machine CPU time (all cores, from /proc/stat): [busy, total] in clock ticks. */
function cpuTicks() {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const idle = f[3] + (f[4] ?? 0);
    const total = f.reduce((a, b) => a + b, 0);
    return [total - idle, total];
  } catch { return [NaN, NaN]; }
}

function pct(sorted, p) {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

/**
 * `n` requests, `c` at a time (a fixed pool of `c` loops over a shared counter: bounded).
 * `headersFor(i)` gives request i's headers. Returns the raw latencies, wall time, non-202s (by
 * status and error code), the ids, and CPU counters; `summarize` turns loads into a row.
 */
async function load(base, { n, c, headersFor, payload, expect = 'queued' }) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: c, maxFreeSockets: c });
  const lat = new Float64Array(n);
  const timings = [];
  const bad = {};
  const ids = [];
  let next = 0;
  let non202 = 0;
  const cpu0 = cpuTicks();
  const client0 = process.cpuUsage();
  const t0 = performance.now();
  const loop = async () => {
    for (;;) {
      const i = next++;
      if (i >= n) return;
      const s = performance.now();
      const r = await post(agent, base, '/send_email', headersFor(i), payload);
      lat[i] = performance.now() - s;
      const t = parseTiming(r.timing);
      if (t) timings.push(t);
      let ok = r.status === 202;
      if (ok) {
        try {
          const b = JSON.parse(r.body);
          ok = b.status === expect && typeof b.id === 'string';
          if (ok) ids.push(b.id);
        } catch { ok = false; }
      }
      if (!ok) {
        non202++;
        // Group by status and error code (bodies carry a unique request id).
        let code;
        try { code = JSON.parse(r.body)?.error?.code; } catch {}
        const k = `${r.status} ${code ?? r.body.slice(0, 80)}`;
        bad[k] = (bad[k] ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: c }, loop));
  const wallMs = performance.now() - t0;
  const cpu1 = cpuTicks();
  const client = process.cpuUsage(client0);
  agent.destroy();
  return {
    n, c, lat, wallMs, non202, bad, ids, timings,
    busyTicks: cpu1[0] - cpu0[0], totalTicks: cpu1[1] - cpu0[1], clientMs: (client.user + client.system) / 1000,
  };
}

/** One row from one or more `load`s of the same kind (interleaved blocks add up). */
function summarize(parts) {
  const n = parts.reduce((a, p) => a + p.n, 0);
  const wallMs = parts.reduce((a, p) => a + p.wallMs, 0);
  const sorted = parts.flatMap((p) => Array.from(p.lat)).sort((a, b) => a - b);
  const failures = {};
  for (const p of parts) for (const [k, v] of Object.entries(p.bad)) failures[k] = (failures[k] ?? 0) + v;
  const sum = (f) => parts.reduce((a, p) => a + f(p), 0);
  return {
    n, c: parts[0].c, blocks: parts.length, wall_ms: round(wallMs), rps: round(n / (wallMs / 1000), 1),
    median_ms: round(pct(sorted, 50)), p90_ms: round(pct(sorted, 90)), p99_ms: round(pct(sorted, 99)),
    mean_ms: round(sorted.reduce((a, b) => a + b, 0) / n), min_ms: round(sorted[0]), max_ms: round(sorted[n - 1]),
    non_202: sum((p) => p.non202), failures, last_ids: parts.at(-1).ids.slice(-3),
    // How busy the whole machine was (1.0 = every core) and how much of it was this client.
    machine_busy: round(sum((p) => p.busyTicks) / sum((p) => p.totalTicks), 2),
    client_cpu_cores: round(sum((p) => p.clientMs) / wallMs, 2),
    round_trips: roundTrips(parts.flatMap((p) => p.timings)),
  };
}

/** Per-request round trips from Server-Timing (ours only): the most any request made, and the median. */
function roundTrips(timings) {
  if (timings.length === 0) return null;
  const stat = (k) => {
    const v = timings.map((t) => t[k]).sort((a, b) => a - b);
    return { median: pct(v, 50), max: v[v.length - 1] };
  };
  const total = timings.map((t) => t.total).sort((a, b) => a - b);
  return { d1: stat('d1'), queue: stat('queue'), do: stat('do'), server_total_median_ms: round(pct(total, 50)) };
}

const round = (x, d = 2) => Math.round(x * 10 ** d) / 10 ** d;

// --- the two workers --------------------------------------------------------------------------

/** A TS baseline under `wrangler dev`, started the way the harness starts ours. */
async function startTsWorker(config = TS_CONFIG, database = 'multimail-bench-ts') {
  const TS_CONFIG = config;
  const state = mkdtempSync(join(tmpdir(), 'mm-bench-ts-'));
  await run(join(BIN, 'wrangler'), ['d1', 'migrations', 'apply', database, '--local', '--persist-to', state, '-c', TS_CONFIG],
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

/** Waits (bounded) until a TS worker's queue consumer has taken everything; returns seconds. */
async function drainSql(config, database, state, limitMs = 120_000) {
  const t0 = Date.now();
  while (Date.now() - t0 < limitMs) {
    try {
      const { stdout } = await run(join(BIN, 'wrangler'), ['d1', 'execute', database, '--local', '--persist-to', state, '-c', config, '--json', '--command',
        "SELECT COUNT(*) AS n FROM messages WHERE status IN ('queued','sending')"], { cwd: ROOT, env: ENV });
      if (JSON.parse(stdout)[0].results[0].n === 0) return round((Date.now() - t0) / 1000, 1);
    } catch {}
    await sleep(2000);
  }
  return null;
}

/** Sums the delivery consumer's `delivery cost: messages=N d1=X queue=Y` log lines. */
function deliveryCost(log) {
  let batches = 0, messages = 0, d1 = 0, queue = 0;
  for (const m of log.matchAll(/delivery cost: messages=(\d+) d1=(\d+) queue=(\d+)/g)) {
    batches++; messages += Number(m[1]); d1 += Number(m[2]); queue += Number(m[3]);
  }
  if (messages === 0) return null;
  return { batches, messages, d1_per_message: round(d1 / messages), queue_per_message: round(queue / messages) };
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
    workerd: await version(join(ROOT, 'node_modules', '@cloudflare', `workerd-${process.platform}-${process.arch === 'x64' ? '64' : process.arch}`, 'bin', 'workerd'), ['--version']),
    commit: await version('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD']),
    // What `wrangler dev` builds is the working tree, not the commit: say when they differ.
    dirty: (await run('git', ['-C', ROOT, 'status', '--porcelain', '--', 'src', 'Cargo.toml', 'Cargo.lock', 'wrangler.toml', 'migrations'])
      .then((r) => r.stdout.trim().split('\n').filter(Boolean).length).catch(() => -1)),
    n1: N1, n32: N32, warmup: WARMUP, blocks: BLOCKS,
  };
  say(`nproc ${meta.nproc}, node ${meta.node}, wrangler ${meta.wrangler}, commit ${meta.commit}, load ${meta.loadavg_start.join(' ')}`);

  let sizes;
  let consumerCost = null;
  const rows = [];
  const drains = {};
  // `wrangler dev` watches src/ (wrangler.toml `watch_dir`): if someone edits it mid-run, ours is
  // rebuilt and reloaded under load, and that phase measures a rebuild, not the worker.
  const RELOAD = /Running custom build|Reloading local server|Local server updated/g;
  const reloads = (w) => (w.log().match(RELOAD) ?? []).length;
  const phase = async (w, fn) => {
    const before = reloads(w);
    const r = summarize(await fn());
    r.reloaded_mid_phase = reloads(w) > before;
    return r;
  };
  const record = (worker, label, r) => {
    rows.push({ worker, label, ...r });
    if (r.reloaded_mid_phase) say(`${worker} ${label}: the worker was rebuilt/reloaded during this phase`);
    say(`${worker.padEnd(4)} ${label.padEnd(14)} n=${r.n} c=${r.c}: median ${r.median_ms} ms, p99 ${r.p99_ms} ms, ${r.rps} req/s, `
      + `non-202 ${r.non_202}; machine ${Math.round(r.machine_busy * 100)}% busy, client ${r.client_cpu_cores} cores`);
  };

  // Ours.
  say('starting MultiMail edge (wrangler dev, fresh local state)');
  const ours = await startWorker({ vars: { RATE_LIMIT_PER_MINUTE: '0' }, logLevel: 'log' });
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

    // An autonomous mailbox: the send goes straight to the queue (no human hold), which is the
    // path comparable to the baseline. The harness's `sender` creates it the way a user would
    // (the looser-than-default mode approved by an oversight key); older harnesses lack it.
    let key, from;
    if (typeof ours.sender === 'function') {
      ({ test: key, from } = await ours.sender('Bench Co', { mode: 'autonomous' }));
    } else {
      const { account, test } = await ours.createAccount('Bench Co');
      key = test;
      from = `billing@${account.default_domain}`;
      const mb = await ours.call('/create_mailbox', { key, body: { address: from } });
      if (mb.status !== 201) throw new Error(`create_mailbox ${mb.status}: ${mb.text}`);
    }
    const payload = body(from);
    const auth = { Authorization: `Bearer ${key}` };
    const keyed = (tag) => (i) => ({ ...auth, 'Idempotency-Key': `bench-${RUN_ID}-${tag}-${i}` });

    const warm = await load(ours.base, { n: WARMUP, c: 8, headersFor: keyed('warm'), payload });
    say(`ours warm-up: ${WARMUP - warm.non202}/${WARMUP} 202`);
    drains.ours_warmup_s = await drainOurs(ours);
    record('ours', 'c=1 idem', await phase(ours, async () => [await load(ours.base, { n: N1, c: 1, headersFor: keyed('c1'), payload })]));
    drains.ours_c1_s = await drainOurs(ours);
    // With and without Idempotency-Key at c=32, in interleaved blocks (A B B A A B B A …) so that
    // drift in the machine's other load and the growing tables fall on both rows alike.
    const idem = [], plain = [];
    const before = reloads(ours);
    const per = Math.floor(N32 / BLOCKS);
    for (let b = 0; b < BLOCKS; b++) {
      const n = b === BLOCKS - 1 ? N32 - per * (BLOCKS - 1) : per;
      const runIdem = async () => { idem.push(await load(ours.base, { n, c: 32, headersFor: keyed(`c32b${b}`), payload })); drains[`ours_c32_idem_b${b}_s`] = await drainOurs(ours); };
      const runPlain = async () => { plain.push(await load(ours.base, { n, c: 32, headersFor: () => auth, payload })); drains[`ours_c32_noidem_b${b}_s`] = await drainOurs(ours); };
      if (b % 2 === 0) { await runIdem(); await runPlain(); } else { await runPlain(); await runIdem(); }
      say(`ours c=32 block ${b + 1}/${BLOCKS} done`);
    }
    const reloadedC32 = reloads(ours) > before;
    record('ours', 'c=32 idem', { ...summarize(idem), reloaded_mid_phase: reloadedC32 });
    record('ours', 'c=32 no-idem', { ...summarize(plain), reloaded_mid_phase: reloadedC32 });
    // The gated path: every send held for a human (the Approval object created, the approval
    // request queued for the oversight address).
    const gated = await ours.sender('Bench Gated', { mode: 'gated_send' });
    const gatedPayload = body(gated.from);
    const gatedAuth = { Authorization: `Bearer ${gated.test}` };
    record('ours', 'gated c=1', await phase(ours, async () => [await load(ours.base, {
      n: N1, c: 1, headersFor: (i) => ({ ...gatedAuth, 'Idempotency-Key': `bench-${RUN_ID}-gated-${i}` }), payload: gatedPayload, expect: 'pending_approval',
    })]));
    drains.ours_gated_s = await drainOurs(ours);
    // What each delivery cost, from the consumer's own log lines (`delivery cost: …`).
    consumerCost = deliveryCost(ours.log());
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
    const payload = body('agent@bench-co.multimail.test');
    const auth = { Authorization: `Bearer ${TS_KEY}` };
    const warm = await load(ts.base, { n: WARMUP, c: 8, headersFor: () => auth, payload });
    say(`ts warm-up: ${WARMUP - warm.non202}/${WARMUP} 202`);
    await sleep(2000);
    record('ts', 'c=1', await phase(ts, async () => [await load(ts.base, { n: N1, c: 1, headersFor: () => auth, payload })]));
    await sleep(2000);
    // The same blocks as ours at c=32 (its consumer only acks, so a short pause stands in for the drain).
    record('ts', 'c=32', await phase(ts, async () => {
      const parts = [];
      const per = Math.floor(N32 / BLOCKS);
      for (let b = 0; b < BLOCKS; b++) {
        parts.push(await load(ts.base, { n: b === BLOCKS - 1 ? N32 - per * (BLOCKS - 1) : per, c: 32, headersFor: () => auth, payload }));
        await sleep(2000);
      }
      return parts;
    }));
  } catch (e) {
    say(`ts failed; last of its log:\n${ts.log().slice(-3000)}`);
    throw e;
  } finally {
    await ts.stop();
    running.delete(ts);
  }

  await sleep(3000);

  // The equal-work TypeScript worker (bench/ts-equal): ours' autonomous path in plain TS.
  say('starting the equal-work TypeScript worker (bench/ts-equal, our schema, fresh local state)');
  const eq = await startTsWorker(EQ_CONFIG, 'multimail-bench-ts-equal');
  running.add(eq);
  try {
    const from = 'billing@bench-co.multimail.test';
    const seeded = await fetch(`${eq.base}/bench/seed`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ key: EQ_KEY, address: from }) });
    if (seeded.status !== 201) throw new Error(`ts-equal seed: ${seeded.status} ${await seeded.text()}`);
    const payload = body(from);
    const auth = { Authorization: `Bearer ${EQ_KEY}` };
    const keyed = (tag) => (i) => ({ ...auth, 'Idempotency-Key': `bench-${RUN_ID}-eq-${tag}-${i}` });
    const drainEq = () => drainSql(EQ_CONFIG, 'multimail-bench-ts-equal', eq.state);
    const warm = await load(eq.base, { n: WARMUP, c: 8, headersFor: keyed('warm'), payload });
    say(`ts-equal warm-up: ${WARMUP - warm.non202}/${WARMUP} 202`);
    drains.eq_warmup_s = await drainEq();
    record('ts-equal', 'c=1 idem', await phase(eq, async () => [await load(eq.base, { n: N1, c: 1, headersFor: keyed('c1'), payload })]));
    drains.eq_c1_s = await drainEq();
    record('ts-equal', 'c=32 idem', await phase(eq, async () => {
      const parts = [];
      const per = Math.floor(N32 / BLOCKS);
      for (let b = 0; b < BLOCKS; b++) {
        parts.push(await load(eq.base, { n: b === BLOCKS - 1 ? N32 - per * (BLOCKS - 1) : per, c: 32, headersFor: keyed(`c32b${b}`), payload }));
        drains[`eq_c32_b${b}_s`] = await drainEq();
      }
      return parts;
    }));
  } catch (e) {
    say(`ts-equal failed; last of its log:\n${eq.log().slice(-3000)}`);
    throw e;
  } finally {
    await eq.stop();
    running.delete(eq);
  }

  const get = (w, l) => rows.find((r) => r.worker === w && r.label === l);
  const ratio = (a, b) => round(a / b, 2);
  const ratios = {};
  for (const [c, oursLabel, tsLabel] of [[1, 'c=1 idem', 'c=1'], [32, 'c=32 idem', 'c=32'], ['32 no-idem', 'c=32 no-idem', 'c=32']]) {
    const o = get('ours', oursLabel), t = get('ts', tsLabel);
    ratios[`c=${c}`] = { median: ratio(o.median_ms, t.median_ms), p99: ratio(o.p99_ms, t.p99_ms), rps: ratio(o.rps, t.rps) };
  }
  for (const [k, oursLabel, eqLabel] of [['c=1 vs equal', 'c=1 idem', 'c=1 idem'], ['c=32 vs equal', 'c=32 idem', 'c=32 idem']]) {
    const o = get('ours', oursLabel), t = get('ts-equal', eqLabel);
    ratios[k] = { median: ratio(o.median_ms, t.median_ms), p99: ratio(o.p99_ms, t.p99_ms), rps: ratio(o.rps, t.rps) };
  }
  ratios['gated c=1'] = { median: ratio(get('ours', 'gated c=1').median_ms, get('ts', 'c=1').median_ms) };
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
  lines.push(`POST /send_email under wrangler dev — ${meta.nproc} cores (${meta.cpu}), node ${meta.node}, wrangler ${meta.wrangler}, ${meta.workerd}, `
    + `commit ${meta.commit}${meta.dirty ? ` + ${meta.dirty} uncommitted source paths` : ''}`);
  lines.push(`load average at start ${meta.loadavg_start.join(' ')}, at end ${meta.loadavg_end.join(' ')}; took ${meta.duration_s} s`);
  lines.push('');
  lines.push('| worker | load | requests | median ms | p99 ms | req/s | non-202 | machine busy | client cores |');
  lines.push('|---|---|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of rows) {
    lines.push(`| ${r.worker} | ${r.label}${r.reloaded_mid_phase ? ' (REBUILT MID-PHASE)' : ''} | ${r.n} | ${r.median_ms} | ${r.p99_ms} | ${r.rps} | ${r.non_202} | ${Math.round(r.machine_busy * 100)}% | ${r.client_cpu_cores} |`);
  }
  lines.push('');
  lines.push('| ours / ts | median | p99 | req/s |');
  lines.push('|---|---:|---:|---:|');
  for (const [k, v] of Object.entries(ratios)) lines.push(`| ${k} | ${v.median} | ${v.p99 ?? ''} | ${v.rps ?? ''} |`);
  lines.push('');
  const signed = (x) => (x >= 0 ? `+${x}` : `${x}`);
  lines.push(`idempotency at c=32 (idem minus no-idem): median ${signed(idemCost.median_ms)} ms, p99 ${signed(idemCost.p99_ms)} ms, req/s x${idemCost.rps_ratio}`);
  lines.push(`wasm build/index_bg.wasm: ${sizes.wasm_raw_bytes} bytes raw (${round(sizes.wasm_raw_bytes / 1024 / 1024)} MiB), `
    + `${sizes.wasm_gzip_bytes} bytes gzip -6 (${round(sizes.wasm_gzip_bytes / 1024)} KiB), ${sizes.wasm_gzip9_bytes} gzip -9; `
    + `JS glue build/index.js ${sizes.js_glue_bytes} bytes`);
  if (sizes.wasm_sha256_end !== sizes.wasm_sha256) {
    lines.push(`NOTE: build/index_bg.wasm changed during the run (${sizes.wasm_sha256} -> ${sizes.wasm_sha256_end}, ${sizes.wasm_raw_bytes_end} bytes): ours was rebuilt`);
  }
  // Issue 13's targets, each against this run's figures.
  const c1 = get('ours', 'c=1 idem'), c32 = get('ours', 'c=32 idem'), gatedRow = get('ours', 'gated c=1');
  const targets = [
    ['c=32 throughput vs minimal TS (idem)', '>= 0.7x', ratios['c=32'].rps, ratios['c=32'].rps >= 0.7],
    ['c=1 median vs minimal TS (idem)', '<= 1.5x', ratios['c=1'].median, ratios['c=1'].median <= 1.5],
    ['gated c=1 median vs minimal TS', '<= 2x', ratios['gated c=1'].median, ratios['gated c=1'].median <= 2],
    ['c=1 p99 vs our own c=1 median (consumer delivering)', '<= 3x', ratio(c1.p99_ms, c1.median_ms), c1.p99_ms <= 3 * c1.median_ms],
    ['D1 round trips per autonomous send (max)', '<= 2', c32.round_trips?.d1.max, c32.round_trips?.d1.max <= 2],
    ['queue sends per autonomous send (max)', '<= 1', c32.round_trips?.queue.max, c32.round_trips?.queue.max <= 1],
    ['Durable Object calls per autonomous send (max)', '0', c32.round_trips?.do.max, c32.round_trips?.do.max === 0],
    ['D1 round trips per held send (max)', '<= 2', gatedRow.round_trips?.d1.max, gatedRow.round_trips?.d1.max <= 2],
    ['D1 round trips per delivery (mean, from the consumer log)', '<= 2', consumerCost?.d1_per_message, consumerCost !== null && consumerCost.d1_per_message <= 2],
    ['build/index_bg.wasm gzip -6', '<= 900 KB', `${round(sizes.wasm_gzip_bytes / 1000)} KB`, sizes.wasm_gzip_bytes <= 900_000],
  ];
  lines.push('');
  lines.push('| target | wanted | this run | met |');
  lines.push('|---|---|---:|---|');
  for (const [name, want, got, met] of targets) lines.push(`| ${name} | ${want} | ${got} | ${met ? 'yes' : 'NO'} |`);
  lines.push('');
  lines.push('Round trips per request (Server-Timing), median / max:');
  for (const r of rows.filter((x) => x.round_trips)) {
    const t = r.round_trips;
    lines.push(`- ${r.worker} ${r.label}: D1 ${t.d1.median}/${t.d1.max}, queue ${t.queue.median}/${t.queue.max}, Durable Object ${t.do.median}/${t.do.max}; server time median ${t.server_total_median_ms} ms`);
  }
  if (consumerCost) lines.push(`- ours' delivery consumer: ${consumerCost.messages} deliveries in ${consumerCost.batches} batches, ${consumerCost.d1_per_message} D1 round trips and ${consumerCost.queue_per_message} queue sends per delivery`);
  const drained = Object.values(drains).filter((x) => x !== null);
  const drainMax = drained.length ? Math.max(...drained) : 'n/a';
  lines.push(`our delivery consumer kept up: backlog empty within ${drainMax} s after every phase (one poll takes ~1 s)`
    + `${Object.values(drains).includes(null) ? '; NOT drained after some phase, see the JSON' : ''}`);
  console.log(lines.join('\n'));

  const failing = rows.filter((r) => r.non_202 / r.n > MAX_FAILURE_RATE);
  for (const r of rows.filter((x) => x.non_202 > 0)) {
    say(`${r.worker} ${r.label}: ${r.non_202} non-202 answers: ${JSON.stringify(r.failures)}`);
  }

  mkdirSync(join(ROOT, 'bench', 'results'), { recursive: true });
  const out = join(ROOT, 'bench', 'results', `${RUN_ID}.json`);
  writeFileSync(out, JSON.stringify({ meta, sizes, rows, ratios, idempotency_cost_c32: idemCost, drain_s: drains, consumer: consumerCost, targets }, null, 2) + '\n');
  say(`wrote ${out}`);

  const reloaded = rows.filter((r) => r.reloaded_mid_phase);
  if (reloaded.length) {
    console.error(`\nINVALID: the worker was rebuilt/reloaded under load in ${reloaded.map((r) => `${r.worker} ${r.label}`).join(', ')} `
      + '(src/ changed while wrangler dev watched it). Rerun when nobody is editing src/.');
    process.exitCode = 1;
  }
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
