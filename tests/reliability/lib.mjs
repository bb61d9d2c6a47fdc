// Helpers of the reliability suite (issue 17): a worker whose live mail goes to a local Resend
// capture, counting at that capture, and waiting for the delivery queue to drain.
import assert from 'node:assert/strict';
import { startWorker, eventually } from '../integration/harness.mjs';
import { startCapture } from '../integration/capture.mjs';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A worker with live mail going to a Resend capture; rate limits off (the load is the point). */
export async function start(vars = {}) {
  const cap = await startCapture();
  const w = await startWorker({ vars: { EMAIL_PROVIDER: 'resend', RESEND_BASE_URL: cap.url, RESEND_API_KEY: 're_test_secret', RATE_LIMIT_PER_MINUTE: '0', ACCOUNT_RATE_LIMIT_PER_MINUTE: '0', DELIVERY_BACKOFF_SECONDS: '1', ...vars } });
  return { w, cap };
}

/** The capture's requests for one message (by the message's own header, not its text). */
export const requestsFor = (cap, id) => cap.requests.filter((r) => r.json?.headers?.['X-MultiMail-Message-Id'] === id);

/**
 * Waits until the delivery queue has drained up to now: sends a sentinel message from an
 * autonomous mailbox and waits until the capture has it. Queue messages enqueued before it have
 * been handled by then (the local queue delivers in order), so counts taken after this are final.
 */
export async function drain(w, cap, sender) {
  const r = await w.call('/send_email', { key: sender.live, body: { from: sender.from, to: 'sentinel@example.com', subject: 'sentinel', text: 'drain' } });
  assert.equal(r.status, 202, r.text);
  const seen = await eventually(async () => requestsFor(cap, r.body.id).length > 0, { ms: 60_000 });
  assert.ok(seen, 'the sentinel never reached the provider: the queue did not drain');
  await sleep(500);
}

/** Strictest first. */
export const MODES = ['read_only', 'gated_all', 'gated_send', 'monitored', 'autonomous'];
export const stricter = (a, b) => MODES.indexOf(a) <= MODES.indexOf(b);

export function percentile(sorted, p) {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

export { eventually };
