// An honest API description (issue 17, scenario 5): schemathesis generates requests from
// openapi.json and sends them to the real worker. It fails on any 5xx, on any schema-valid
// request refused with 400 (the description should have said why; see schemathesis.toml for
// the refusals it may not), on any answer that does not match its schema, and on an undeclared
// method answered with anything but 405. Bounded: 3 examples per operation and at most 150 s.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { startWorker, ROOT } from '../integration/harness.mjs';

const ST = join(ROOT, '.tools', 'st', 'bin', 'st');
// `make test` runs the deterministic phases: the examples in the description and the coverage
// phase (boundary and typical values of every constraint). `SCHEMATHESIS_FUZZ=1` adds random
// fuzzing and stateful sequences, which keep finding rarer gaps (docs/reliability.md).
const PHASES = process.env.SCHEMATHESIS_FUZZ === '1' ? 'examples,coverage,fuzzing,stateful' : 'examples,coverage';
let w;
before(async () => { w = await startWorker({ vars: { RATE_LIMIT_PER_MINUTE: '0', ACCOUNT_RATE_LIMIT_PER_MINUTE: '0' } }); });
after(async () => { await w?.stop(); });

/**
 * The description as schemathesis reads it: without the body field `idempotency_key`, which
 * must equal the `Idempotency-Key` header when both are given, a rule across a header and a
 * body that OpenAPI cannot express (the prose says it; the header is what is generated).
 */
function spec() {
  const d = JSON.parse(readFileSync(join(ROOT, 'openapi.json'), 'utf8'));
  let removed = 0;
  for (const s of Object.values(d.components.schemas)) {
    if (s.properties?.idempotency_key) { delete s.properties.idempotency_key; removed++; }
  }
  assert.ok(removed > 10, 'the body field was not where expected');
  mkdirSync(join(ROOT, 'tests', '.state'), { recursive: true });
  const path = join(ROOT, 'tests', '.state', 'openapi-for-schemathesis.json');
  writeFileSync(path, JSON.stringify(d));
  return path;
}

test('schemathesis over openapi.json: no 5xx, no schema-valid request refused with 400, answers match their schemas, undeclared methods 405', async () => {
  const a = await w.sender('Schema Co', { mode: 'autonomous' });
  const args = ['--config-file', join(ROOT, 'tests', 'reliability', 'schemathesis.toml'), '--no-color',
    'run', spec(), '--url', w.base, '-H', `Authorization: Bearer ${a.test}`,
    '--checks', 'not_a_server_error,positive_data_acceptance,response_schema_conformance,unsupported_method',
    '--max-examples', '3', '--workers', '2', '--max-time', '150', '--seed', '20261130', '--phases', PHASES,
    '--exclude-path-regex', '^/(admin|console|review|unsubscribe|inbound|provider_events|mcp)',
    '--report', 'junit', '--report-dir', join(ROOT, 'tests', 'artifacts', 'schemathesis')];
  const out = await new Promise((resolve) => {
    const child = spawn(ST, args, { cwd: ROOT, env: { ...process.env, NO_COLOR: '1', SCHEMATHESIS_TELEMETRY: 'false' } });
    let text = '';
    child.stdout.on('data', (d) => { text += d; });
    child.stderr.on('data', (d) => { text += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), 240_000);
    child.on('exit', (code) => { clearTimeout(timer); resolve({ code, text }); });
  });
  mkdirSync(join(ROOT, 'tests', 'artifacts', 'schemathesis'), { recursive: true });
  writeFileSync(join(ROOT, 'tests', 'artifacts', 'schemathesis', 'output.txt'), out.text);
  const summary = out.text.split('\n').filter((l) => /generated|Failures|❌|✅|passed|failures|Selected|Tested/.test(l)).join('\n');
  console.log(summary);
  // On failure: each failing operation, its check and the worker's answer (the whole output is
  // in tests/artifacts/schemathesis/output.txt).
  const failures = out.text.split('\n').filter((l) => /^_{3,} .* _{3,}$|^- ST\d|^ +`\{"error"/.test(l)).map((l) => l.slice(0, 300));
  // The verdict is the checks': "N generated, N passed" and no failure. A schemathesis runtime
  // error (its own generator tripping, "Inconsistent results") is reported, not counted.
  const cases = out.text.match(/(\d+) generated, (\d+) passed/);
  assert.ok(cases, failures.join('\n') || out.text.split('\n').slice(-60).join('\n'));
  assert.equal(cases[1], cases[2], failures.join('\n'));
  assert.ok(Number(cases[1]) >= 500, `only ${cases[1]} cases generated`);
  assert.doesNotMatch(out.text, /❌ ST\d+/, failures.join('\n'));
  const errors = out.text.match(/🚫 Runtime Error: (\d+)/);
  if (errors) console.log(`schemathesis reported ${errors[1]} runtime error(s) of its own (see tests/artifacts/schemathesis/output.txt)`);
  assert.match(out.text, /Tested: (\d+)/);
  assert.ok(Number(out.text.match(/Tested: (\d+)/)[1]) >= 40, 'schemathesis tested fewer operations than the API has');
});
