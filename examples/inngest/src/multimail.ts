// The MultiMail REST API with `fetch` and nothing else: no SDK. Every call reads the base URL and
// the key from the environment when it runs, so one process can serve any deployment:
//   MULTIMAIL_URL      https://api.multimail.dev (default), or http://127.0.0.1:8787 under `make dev`
//   MULTIMAIL_API_KEY  mm_live_… or mm_test_… with the `send` and `read` scopes
//
// Errors map onto Inngest's retry rules: a 4xx that no retry can fix (a bad field, a missing
// scope, a mailbox in the wrong mode) is a NonRetriableError; 429, and 409
// `idempotency_key_in_progress`, retry after the server's Retry-After; 5xx and network errors are
// plain errors, which Inngest retries. Retrying a POST is safe as long as it carries the same
// Idempotency-Key.
import { NonRetriableError, RetryAfterError } from 'inngest';

export type Query = Record<string, string | number | boolean | undefined>;

/** A non-2xx answer: `{error: {code, message, field, request_id}}`. */
export class MultiMailError extends Error {
  readonly status: number;
  readonly code: string;
  readonly body: any;
  readonly retryAfter: number;
  constructor(status: number, body: any, text: string, retryAfter: string | null = null) {
    const code = body?.error?.code ?? 'http_error';
    super(`MultiMail ${status} ${code}: ${body?.error?.message ?? text.slice(0, 200)}`);
    this.name = 'MultiMailError';
    this.status = status;
    this.code = code;
    this.body = body;
    this.retryAfter = Number(retryAfter) || 1;
  }
}

const base = () => (process.env.MULTIMAIL_URL ?? 'https://api.multimail.dev').replace(/\/+$/, '');

function auth(): string {
  const key = process.env.MULTIMAIL_API_KEY;
  if (!key) throw new NonRetriableError('MULTIMAIL_API_KEY is not set');
  return `Bearer ${key}`;
}

/** One request; answers the parsed body of a 2xx, throws a MultiMailError otherwise (not wrapped). */
export async function request<T = any>(method: 'GET' | 'POST', path: string, opts: { query?: Query; body?: object; idempotencyKey?: string } = {}): Promise<T> {
  const url = new URL(base() + path);
  for (const [k, v] of Object.entries(opts.query ?? {})) if (v !== undefined) url.searchParams.set(k, String(v));
  const headers: Record<string, string> = { Authorization: auth() };
  if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
  if (opts.idempotencyKey) headers['Idempotency-Key'] = opts.idempotencyKey;
  const res = await fetch(url, { method, headers, body: opts.body === undefined ? undefined : JSON.stringify(opts.body) });
  const text = await res.text();
  let body: any = null;
  try { body = JSON.parse(text); } catch {}
  if (!res.ok) throw new MultiMailError(res.status, body, text, res.headers.get('retry-after'));
  return body as T;
}

/** Rethrows a MultiMailError in the form Inngest's retries understand. */
export function forInngest(e: unknown): never {
  if (!(e instanceof MultiMailError)) throw e;
  if (e.status === 429 || (e.status === 409 && e.code === 'idempotency_key_in_progress')) {
    throw new RetryAfterError(e.message, e.retryAfter * 1000, { cause: e });
  }
  if (e.status >= 400 && e.status < 500 && e.status !== 408) throw new NonRetriableError(e.message, { cause: e });
  throw e;
}

/** GET, e.g. `get('/get_email', {id})`. */
export const get = <T = any>(path: string, query: Query = {}): Promise<T> => request<T>('GET', path, { query }).catch(forInngest);

/** POST a JSON body, e.g. `post('/send_email', {...}, {idempotencyKey: `welcome-${event.id}`})`. */
export const post = <T = any>(path: string, body: object, opts: { idempotencyKey?: string } = {}): Promise<T> =>
  request<T>('POST', path, { body, ...opts }).catch(forInngest);

/** Every page of a list call (`{<things>: [...], next_cursor}`), following `next_cursor`. */
export async function all<T = any>(path: string, field: string, query: Query = {}): Promise<T[]> {
  const out: T[] = [];
  let cursor: string | undefined;
  do {
    const page: any = await get(path, { ...query, cursor });
    out.push(...page[field]);
    cursor = page.next_cursor ?? undefined;
  } while (cursor);
  return out;
}

/** The mailbox the functions send from and read (MULTIMAIL_MAILBOX), e.g. agent@acme.multimail.dev. */
export function mailbox(): string {
  const m = process.env.MULTIMAIL_MAILBOX;
  if (!m) throw new NonRetriableError('MULTIMAIL_MAILBOX is not set');
  return m;
}
