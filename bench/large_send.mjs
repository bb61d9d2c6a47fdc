// `make bench-large`: what one send_email with a large attachment costs (issue 16), under
// `wrangler dev` (local workerd, D1, Queues and R2) on loopback, with deliveries going to a
// local Resend stand-in. For each size in BENCH_LARGE_MB (default "10,18": MB of attachment;
// 18 MB is 24.6 MB as sent, in base64, just under the 25 MB limit) a fresh worker takes one
// live send: the time to the 202, the
// time until the provider has it, whether its bytes arrived intact (SHA-256), and the isolate's
// WebAssembly memory after the send and after the delivery (the worker logs it; linear memory
// only grows, so it is the most the Rust side held at once). Workers' limit is 128 MB an
// isolate, JavaScript heap included. Results go to stdout and bench/results/large-<timestamp>.json.
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { startWorker, eventually, ROOT } from '../tests/integration/harness.mjs';
import { startCapture } from '../tests/integration/capture.mjs';

const sizes = (process.env.BENCH_LARGE_MB ?? '10,18').split(',').map(Number);
if (sizes.some((n) => !(n > 0 && n <= 18.2))) throw new Error('BENCH_LARGE_MB: sizes in MB, each at most 18.2 (25 MB in base64)');
const sha = (b) => createHash('sha256').update(b).digest('hex');
const load = loadavg()[0];
const results = [];
for (const mb of sizes) {
  const cap = await startCapture();
  const w = await startWorker({ logLevel: 'log', vars: { EMAIL_PROVIDER: 'resend', RESEND_BASE_URL: cap.url, RESEND_API_KEY: 're_bench', RATE_LIMIT_PER_MINUTE: '0' } });
  try {
    const a = await w.sender('Large Bench Co', { mode: 'autonomous' });
    const bytes = randomBytes(Math.round(mb * 1_000_000));
    const body = JSON.stringify({ from: a.from, to: 'ada@example.com', subject: `${mb} MB`, text: 'Attached.', attachments: [{ filename: 'big.bin', content_base64: bytes.toString('base64') }] });
    const t0 = performance.now();
    const r = await fetch(`${w.base}/send_email`, { method: 'POST', headers: { Authorization: `Bearer ${a.live}`, 'Content-Type': 'application/json' }, body });
    const accepted = performance.now() - t0;
    const answer = await r.json();
    if (r.status !== 202) throw new Error(`${mb} MB: ${r.status} ${JSON.stringify(answer).slice(0, 300)}`);
    const got = await eventually(async () => cap.requests.find((q) => q.json?.headers?.['X-MultiMail-Message-Id'] === answer.id), { ms: 120_000 });
    const delivered = performance.now() - t0;
    const intact = sha(Buffer.from(got.json.attachments[0].content, 'base64')) === sha(bytes);
    const send = Number(w.log().match(/large send msg_\w+: \d+ bytes of attachments in the bucket; wasm memory (\d+) MiB/)?.[1]);
    // The consumer logs its cost after the provider answered.
    const after = await eventually(async () => Number(w.log().match(/delivery cost: .* wasm_memory_mib=(\d+)/)?.[1]) || false, { ms: 30_000 });
    const row = { attachment_bytes: bytes.length, request_bytes: body.length, accepted_ms: Math.round(accepted), at_provider_ms: Math.round(delivered), intact, wasm_mib_after_send: send, wasm_mib_after_delivery: after };
    console.log(JSON.stringify(row));
    results.push(row);
  } finally {
    await w.stop();
    await cap.close();
  }
}
const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT }).toString().trim();
const out = { commit, at: new Date().toISOString(), cores: cpus().length, load_before: load, results };
mkdirSync(join(ROOT, 'bench', 'results'), { recursive: true });
writeFileSync(join(ROOT, 'bench', 'results', `large-${Date.now()}.json`), JSON.stringify(out, null, 2));
if (results.some((r) => !r.intact)) { console.error('an attachment arrived altered'); process.exit(1); }
