// A real DNS server for tests: Knot DNS (authoritative, Debian's `knot`) serves a test zone on
// loopback, and dnsdist (Debian's `dnsdist`) answers DNS over HTTP for it (RFC 8484; plain HTTP
// because no certificate is configured). `publish()` rewrites the zone and reloads it.
// scripts/tools.sh installs both.
import { spawn, execFile } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ROOT, freePort } from './harness.mjs';

const run = promisify(execFile);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** `"…" "…"`: a TXT value as zone-file strings of at most 255 characters. */
function txtStrings(value) {
  const parts = value.match(/.{1,255}/gs) ?? [''];
  return parts.map((p) => `"${p.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`).join(' ');
}

/**
 * Starts knotd + dnsdist serving `zone` (e.g. `test`, authoritative for everything under it).
 * @returns {{dohUrl: string, dnsPort: number, publish(records: {type: string, name: string, value: string}[]): Promise<void>, stop(): Promise<void>}}
 */
export async function startDns({ zone = 'test' } = {}) {
  mkdirSync(join(ROOT, 'tests', '.state'), { recursive: true });
  const dir = mkdtempSync(join(ROOT, 'tests', '.state', 'dns-'));
  const [dnsPort, dohPort, dnsdistPort] = [await freePort(), await freePort(), await freePort()];
  const zoneFile = join(dir, `${zone}.zone`);
  const knotConf = join(dir, 'knot.conf');
  let serial = 1;
  const writeZone = (records) => {
    const lines = [
      `$ORIGIN ${zone}.`, '$TTL 1',
      `@ IN SOA ns.${zone}. hostmaster.${zone}. ${serial} 60 60 60 1`,
      `@ IN NS ns.${zone}.`,
      'ns IN A 127.0.0.1',
    ];
    for (const r of records) {
      const value = r.type === 'TXT' ? txtStrings(r.value) : ['A', 'AAAA'].includes(r.type) ? r.value : `${r.value.replace(/\.$/, '')}.`;
      lines.push(`${r.name.replace(/\.$/, '')}. IN ${r.type} ${value}`);
    }
    writeFileSync(zoneFile, lines.join('\n') + '\n');
  };
  writeZone([]);
  writeFileSync(knotConf, [
    'server:', `  rundir: "${dir}"`, `  listen: 127.0.0.1@${dnsPort}`,
    'control:', `  listen: "${join(dir, 'knot.sock')}"`,
    'log:', '  - target: stdout', '    any: warning',
    'database:', `  storage: "${join(dir, 'db')}"`,
    'zone:', `  - domain: ${zone}`, `    file: "${zoneFile}"`, '    journal-content: none', '',
  ].join('\n'));
  const dnsdistConf = join(dir, 'dnsdist.conf');
  writeFileSync(dnsdistConf, [
    "setSecurityPollSuffix('')",
    `setLocal('127.0.0.1:${dnsdistPort}')`,
    `newServer({address='127.0.0.1:${dnsPort}', name='knot'}):setUp()`,
    `addDOHLocal('127.0.0.1:${dohPort}', nil, nil, '/dns-query')`,
    '',
  ].join('\n'));

  let log = '';
  const procs = [];
  const start = (cmd, args) => {
    const p = spawn(cmd, args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    p.stdout.on('data', (d) => { log += d; });
    p.stderr.on('data', (d) => { log += d; });
    procs.push(p);
    return p;
  };
  start('knotd', ['-c', knotConf]);
  start('dnsdist', ['--supervised', '--disable-syslog', '-C', dnsdistConf]);

  const dohUrl = `http://127.0.0.1:${dohPort}/dns-query`;
  // Ready when a DoH query for the zone's SOA answers NOERROR.
  const soaQuery = Buffer.concat([Buffer.from([0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
    ...zone.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)])), Buffer.from([0, 0, 6, 0, 1])]);
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      const r = await fetch(`${dohUrl}?dns=${soaQuery.toString('base64url')}`, { headers: { accept: 'application/dns-message' } });
      const b = Buffer.from(await r.arrayBuffer());
      if (r.ok && (b[3] & 0x0f) === 0 && b.readUInt16BE(6) > 0) break;
    } catch {}
    if (Date.now() > deadline) throw new Error(`knotd/dnsdist did not come up:\n${log}`);
    await sleep(100);
  }

  return {
    dohUrl, dnsPort,
    log: () => log,
    /** Replaces the zone's records (besides SOA/NS) with these and reloads it. */
    async publish(records) {
      serial += 1;
      writeZone(records);
      await run('knotc', ['-c', knotConf, '-b', 'zone-reload', zone]);
    },
    async stop() {
      for (const p of procs) { try { process.kill(-p.pid, 'SIGTERM'); } catch {} }
      await Promise.all(procs.map((p) => p.exitCode !== null ? null : Promise.race([new Promise((r) => p.once('exit', r)), sleep(3000)])));
      for (const p of procs) { try { process.kill(-p.pid, 'SIGKILL'); } catch {} }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
