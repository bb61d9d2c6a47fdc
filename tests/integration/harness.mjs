// Starts the real worker under `wrangler dev` (workerd, local D1, Durable Objects, Queues) on a
// free loopback port with fresh local state, and gives tests a small client for it.
import { spawn, execFile } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { randomBytes, generateKeyPairSync } from 'node:crypto';

const run = promisify(execFile);
export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = join(ROOT, 'node_modules', '.bin');
const ENV = { ...process.env, PATH: `${BIN}:${process.env.PATH}`, WRANGLER_SEND_METRICS: 'false', CI: 'true' };

export async function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * @param {{vars?: Record<string,string>, logLevel?: string}} opts  extra `--var`s (provider URLs, limits, …);
 *   `logLevel: 'log'` also shows the worker's own console.log lines in `log()`
 */
export async function startWorker({ vars = {}, logLevel = 'info' } = {}) {
  mkdirSync(join(ROOT, 'tests', '.state'), { recursive: true });
  const state = mkdtempSync(join(ROOT, 'tests', '.state', 'w-'));
  const adminToken = 'adm_test_' + randomBytes(16).toString('hex');
  await run(join(BIN, 'wrangler'), ['d1', 'migrations', 'apply', 'multimail', '--local', '--persist-to', state], { cwd: ROOT, env: ENV });
  const port = await freePort();
  const inspector = await freePort();
  // Every secret a deployment needs, generated afresh (nothing is derived from ADMIN_TOKEN).
  const jwk = () => JSON.stringify(generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ format: 'jwk' }));
  const allVars = {
    ADMIN_TOKEN: adminToken, PUBLIC_BASE_URL: `http://127.0.0.1:${port}`,
    IDENTITY_SIGNING_KEY: jwk(), IDENTITY_TEST_SIGNING_KEY: jwk(),
    APPROVAL_LINK_SECRET: randomBytes(32).toString('hex'), DOMAIN_KEY_SECRET: randomBytes(32).toString('hex'),
    ...vars,
  };
  const argsFor = (vars) => {
    const args = ['dev', '--ip', '127.0.0.1', '--port', String(port), '--inspector-port', String(inspector),
      '--persist-to', state, '--show-interactive-dev-session=false', '--log-level', logLevel, '--test-scheduled'];
    for (const [k, v] of Object.entries(vars)) args.push('--var', `${k}:${v}`);
    return args;
  };
  let args = argsFor(allVars);
  let child;
  let log = '';
  const base = `http://127.0.0.1:${port}`;
  // Starts workerd on the persisted state (again, after a restart) and waits until it serves.
  const launch = async () => {
    child = spawn(join(BIN, 'wrangler'), args, { cwd: ROOT, env: ENV, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.on('data', (d) => { log += d; });
    child.stderr.on('data', (d) => { log += d; });
    const deadline = Date.now() + 90_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`wrangler dev exited early:\n${log}`);
      try {
        const r = await fetch(`${base}/healthz`);
        if (r.ok) break;
      } catch {}
      if (Date.now() > deadline) { process.kill(-child.pid, 'SIGKILL'); throw new Error(`wrangler dev did not become ready:\n${log}`); }
      await sleep(250);
    }
  };
  await launch();

  const w = {
    base, adminToken, state,
    log: () => log,
    /** call('/send_email', {key, body}) or call('/get_email', {key, query: {id}}) */
    async call(path, { key, body, query, headers = {}, method, raw } = {}) {
      const url = new URL(base + path);
      for (const [k, v] of Object.entries(query ?? {})) url.searchParams.set(k, v);
      const h = { ...headers };
      if (key) h.Authorization = `Bearer ${key}`;
      if (body !== undefined && raw === undefined && !('Content-Type' in h)) h['Content-Type'] = 'application/json';
      const res = await fetch(url, {
        method: method ?? (body !== undefined || raw !== undefined ? 'POST' : 'GET'),
        headers: h,
        body: raw ?? (body !== undefined ? JSON.stringify(body) : undefined),
      });
      const text = await res.text();
      let json = null;
      try { json = JSON.parse(text); } catch {}
      return { status: res.status, headers: res.headers, body: json, text };
    },
    /** A fresh account: {account, live, test, owner} with the two default keys and its owner's address. */
    async createAccount(name = 'acme', { ownerEmail } = {}) {
      const owner = ownerEmail ?? `owner-${randomBytes(4).toString('hex')}@owner.example`;
      const r = await w.call('/admin/create_account', { key: adminToken, body: { name, owner_email: owner } });
      if (r.status !== 201) throw new Error(`create_account ${r.status}: ${r.text}`);
      return { account: r.body.account, live: r.body.api_keys.find((k) => k.livemode).key, test: r.body.api_keys.find((k) => !k.livemode).key, owner };
    },
    /**
     * A key minted by the deployment operator (how oversight keys are made outside the console):
     * adminKey(account.id, {scopes: ['oversight'], livemode: true}) → the key's secret.
     */
    async adminKey(accountId, { scopes = ['oversight', 'read'], livemode = true, name = 'human oversight', mailboxes } = {}) {
      const r = await w.call('/admin/create_api_key', { key: adminToken, body: { account: accountId, name, scopes, livemode, ...(mailboxes ? { mailboxes } : {}) } });
      if (r.status !== 201) throw new Error(`admin create_api_key ${r.status}: ${r.text}`);
      return r.body.key;
    },
    /**
     * An account with a mailbox in `mode` (a looser mode than gated_send is approved by an
     * oversight key, as a human would) and an oversight key: {account, live, test, oversight, from}.
     */
    async sender(name = 'acme', { mode = 'autonomous', oversightEmail } = {}) {
      const acct = await w.createAccount(name);
      const from = `agent@${acct.account.default_domain}`;
      const oversight = await w.adminKey(acct.account.id, { scopes: ['oversight', 'read'], livemode: true, name: 'oversight' });
      const mb = await w.call('/create_mailbox', { key: acct.live, body: { address: from, oversight_mode: mode, ...(oversightEmail ? { oversight_email: oversightEmail } : {}) } });
      if (mb.status !== 201) throw new Error(`create_mailbox: ${mb.text}`);
      // A looser mode and an oversight address asked for by a key wait for a human: approve them.
      for (const change of [mb.body.mode_change, mb.body.oversight_email_change]) {
        if (!change) continue;
        const d = await w.call('/decide_email', { key: oversight, body: { id: change.id, decision: 'approve' } });
        if (d.status !== 200) throw new Error(`approve ${change.id}: ${d.text}`);
      }
      return { ...acct, oversight, from, mailbox: mb.body };
    },
    /** Runs SQL against the worker's local D1 and returns the rows. */
    async sql(command) {
      try {
        const { stdout } = await run(join(BIN, 'wrangler'), ['d1', 'execute', 'multimail', '--local', '--persist-to', state, '--json', '--command', command], { cwd: ROOT, env: ENV, maxBuffer: 64 << 20 });
        return JSON.parse(stdout)[0].results;
      } catch (e) {
        throw new Error(`SQL failed: ${command}\n${e.stdout ?? ''}${e.stderr ?? ''}`);
      }
    },
    /** Runs the worker's scheduled handler now for `cron` (wrangler dev's `/__scheduled`). */
    async cron(cron = '0 * * * *') {
      const r = await fetch(`${base}/__scheduled?cron=${encodeURIComponent(cron)}`);
      if (!r.ok) throw new Error(`cron ${cron}: ${r.status} ${await r.text()}`);
    },
    /**
     * Kills workerd hard (SIGKILL of the whole process group: no graceful shutdown, in-flight
     * requests and queue batches lost mid-way) and starts it again on the same persisted state
     * and port. Resolves once it serves again.
     */
    async crash() {
      const old = child;
      try { process.kill(-old.pid, 'SIGKILL'); } catch {}
      await Promise.race([new Promise((r) => old.once('exit', r)), sleep(5000)]);
      await launch();
    },
    /**
     * Stops workerd (SIGKILL, as `crash`) and starts it again on the same state and port with
     * `vars` changed: `restart({CLOCK_OFFSET_SECONDS: '90000'})` is the same deployment a day
     * later (timers already set, such as alarms and queue delays, keep real time).
     */
    async restart(vars) {
      Object.assign(allVars, vars);
      args = argsFor(allVars);
      await w.crash();
    },
    async stop() {
      try { process.kill(-child.pid, 'SIGTERM'); } catch {}
      await Promise.race([new Promise((r) => child.once('exit', r)), sleep(5000)]);
      try { process.kill(-child.pid, 'SIGKILL'); } catch {}
      rmSync(state, { recursive: true, force: true });
    },
  };
  return w;
}

/** Polls `fn` until it returns a truthy value or `ms` pass. */
export async function eventually(fn, { ms = 15_000, every = 200 } = {}) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    last = await fn();
    if (last) return last;
    await sleep(every);
  }
  return last;
}
