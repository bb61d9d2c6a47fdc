// A stand-in for third-party HTTP services this machine cannot reach (Postmark, Resend, later
// Inngest): it records every request and answers from a script the test sets. Test fixture only.
import { createServer } from 'node:http';

export async function startCapture() {
  const requests = [];
  const timers = new Set(); // answers held back (`delayMs`), cleared on close
  const byPath = new Map(); // path → (entry, nth request to that path) => answer, first
  let script = [];          // answers to give, in order; then `fallback`
  let fallback = (req) => ({ status: 200, body: { id: `prov_${requests.length}` } });
  const server = createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      let json = null;
      try { json = JSON.parse(text); } catch {}
      const entry = { method: req.method, path: req.url, headers: req.headers, text, json, at: Date.now() };
      requests.push(entry);
      const n = requests.filter((r) => r.path === entry.path).length;
      const answer = byPath.has(entry.path) ? byPath.get(entry.path)(entry, n) : script.length ? script.shift() : fallback(entry);
      // `delayMs` holds the answer back (a slow or hanging receiver); `reset` drops the
      // connection without an answer; `raw` answers a body that is not JSON.
      const timer = setTimeout(() => {
        timers.delete(timer);
        if (answer.reset) { req.socket.destroy(); return; }
        try {
          if (answer.raw !== undefined) {
            res.writeHead(answer.status, { 'Content-Type': 'application/json', ...(answer.headers ?? {}) });
            res.end(answer.raw);
            return;
          }
          res.writeHead(answer.status, { 'Content-Type': 'application/json', ...(answer.headers ?? {}) });
          res.end(JSON.stringify(answer.body ?? {}));
        } catch {}
      }, answer.delayMs ?? 0);
      timers.add(timer);
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    requests,
    /** Next answers, in order, e.g. [{status: 500}, {status: 500}]. */
    answer(list) { script = [...list]; },
    otherwise(fn) { fallback = fn; },
    /** Answers for one path: fn(entry, n) with n the count of requests to it so far. */
    on(path, fn) { byPath.set(path, fn); },
    at: (path) => requests.filter((r) => r.path === path),
    reset() { requests.length = 0; script = []; },
    close: () => { timers.forEach(clearTimeout); server.closeAllConnections(); return new Promise((r) => server.close(r)); },
  };
}
