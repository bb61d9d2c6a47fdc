// A stand-in for third-party HTTP services this machine cannot reach (Postmark, Resend, later
// Inngest): it records every request and answers from a script the test sets. Test fixture only.
import { createServer } from 'node:http';

export async function startCapture() {
  const requests = [];
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
      const answer = script.length ? script.shift() : fallback(entry);
      res.writeHead(answer.status, { 'Content-Type': 'application/json', ...(answer.headers ?? {}) });
      res.end(JSON.stringify(answer.body ?? {}));
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    requests,
    /** Next answers, in order, e.g. [{status: 500}, {status: 500}]. */
    answer(list) { script = [...list]; },
    otherwise(fn) { fallback = fn; },
    reset() { requests.length = 0; script = []; },
    close: () => new Promise((r) => server.close(r)),
  };
}
