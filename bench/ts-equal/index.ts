// The "equal work" baseline (bench/README.md): MultiMail edge's autonomous `POST /send_email`
// written as a plain TypeScript worker on the same D1 schema, with the same round trips:
//   1. one D1 batch: the key's rate counters and lookup, the Idempotency-Key reservation and
//      record, the sender mailbox with suppressions, the sending domain's status;
//   2. the MIME and the provider payload built once;
//   3. one D1 batch: message, two bodies, timeline, the stored idempotent answer, the audit entry;
//   4. one queue send.
// Its consumer: one batch to claim and read, an ES256 identity signed by WebCrypto, one batch
// for the outcome (timeline rows, status, event, audit entry). No console, no other routes.
// `POST /bench/seed` (this file only) creates the account, key and mailbox the bench uses.

interface D1Result<T = Record<string, unknown>> { results: T[] }
interface D1PreparedStatement { bind(...values: unknown[]): D1PreparedStatement }
interface D1Database { prepare(sql: string): D1PreparedStatement; batch(s: D1PreparedStatement[]): Promise<D1Result[]> }
interface Queue<T> { send(body: T): Promise<void> }
interface Message<T> { body: T; ack(): void; retry(): void }
interface MessageBatch<T> { messages: Message<T>[] }
interface Env { DB: D1Database; QUEUE: Queue<{ message_id: string }> }

const json = (status: number, body: unknown, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json; charset=utf-8", "cache-control": "no-store", ...headers } });
const err = (status: number, code: string, message: string, field?: string) => json(status, { error: { code, message, ...(field ? { field } : {}) } });

const enc = new TextEncoder();
const hex = (b: ArrayBuffer) => [...new Uint8Array(b)].map((x) => x.toString(16).padStart(2, "0")).join("");
const sha256 = async (s: string) => hex(await crypto.subtle.digest("SHA-256", enc.encode(s)));
const b64url = (b: ArrayBuffer | Uint8Array) => btoa(String.fromCharCode(...new Uint8Array(b))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
const b64urlText = (s: string) => b64url(enc.encode(s));
const newId = (p: string) => `${p}_${crypto.randomUUID().replaceAll("-", "")}`;
const iso = (ms: number) => new Date(ms).toISOString();

const EMAIL = /^[^\s@<>()",;:]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$/;
const KEY = /^mm_(live|test)_[A-Za-z0-9_-]{43}$/;
const KEY_SCOPE = "SELECT account_id, livemode FROM api_keys WHERE key_hash = ?1 AND revoked_at IS NULL";
const ACCOUNT_OF_KEY = "(SELECT account_id FROM api_keys WHERE key_hash = ?1 AND revoked_at IS NULL)";
const FIELDS = new Set(["from", "to", "cc", "bcc", "subject", "text", "html", "idempotency_key", "metadata"]);

type Send = { from: string; to: string[]; subject: string; text: string };

function validate(body: unknown): Send | Response {
  if (body === null || typeof body !== "object" || Array.isArray(body)) return err(400, "invalid_json", "the body must be a JSON object");
  const b = body as Record<string, unknown>;
  for (const k of Object.keys(b)) if (!FIELDS.has(k)) return err(400, "unknown_field", `unknown field \`${k}\``, k);
  if (typeof b.from !== "string" || !EMAIL.test(b.from)) return err(400, "invalid_field", "`from` must be an email address", "from");
  const to = typeof b.to === "string" ? [b.to] : b.to;
  if (!Array.isArray(to) || to.length === 0 || to.length > 50 || !to.every((t) => typeof t === "string" && EMAIL.test(t))) return err(400, "invalid_field", "`to` must be 1 to 50 addresses", "to");
  if (typeof b.subject !== "string" || b.subject.length === 0 || b.subject.length > 998 || /[\r\n]/.test(b.subject)) return err(400, "invalid_field", "`subject` must be one line", "subject");
  if (typeof b.text !== "string" || b.text.length > 1_000_000) return err(400, "invalid_field", "`text` must be a string", "text");
  return { from: b.from.toLowerCase(), to: (to as string[]).map((t) => t.toLowerCase()), subject: b.subject, text: b.text };
}

function mime(s: Send, id: string, now: number): string {
  const domain = s.from.split("@")[1];
  const qp = s.text.replace(/\r?\n/g, "\r\n");
  return [
    `From: ${s.from}`, `To: ${s.to.join(", ")}`, `Subject: ${s.subject}`, `Date: ${new Date(now).toUTCString()}`,
    `Message-ID: <${id}@${domain}>`, "MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit", "", qp,
  ].join("\r\n");
}

async function sendEmail(req: Request, env: Env): Promise<Response> {
  const auth = req.headers.get("authorization") ?? "";
  const secret = auth.startsWith("Bearer ") ? auth.slice(7) : "";
  if (!KEY.test(secret)) return err(401, "invalid_api_key", "a valid API key is required");
  const hash = await sha256(secret);
  let body: unknown;
  try { body = await req.json(); } catch { return err(400, "invalid_json", "the body is not JSON"); }
  const v = validate(body);
  const idem = req.headers.get("idempotency-key");
  const now = Date.now();
  const window = now - (now % 60_000);
  const fingerprint = await sha256(`${hash}\nPOST\n/send_email\n${JSON.stringify(body)}`);
  const db = env.DB;
  const first: D1PreparedStatement[] = [
    db.prepare("INSERT INTO rate_windows (key_id, window_start, count) SELECT id, ?2, 1 FROM api_keys WHERE key_hash = ?1 AND revoked_at IS NULL ON CONFLICT (key_id, window_start) DO UPDATE SET count = count + 1 RETURNING count").bind(hash, window),
    db.prepare("INSERT INTO rate_windows (key_id, window_start, count) SELECT 'acct:' || account_id, ?2, 1 FROM api_keys WHERE key_hash = ?1 AND revoked_at IS NULL ON CONFLICT (key_id, window_start) DO UPDATE SET count = count + 1 RETURNING count").bind(hash, window),
    db.prepare("SELECT k.*, a.default_domain FROM api_keys k JOIN accounts a ON a.id = k.account_id WHERE k.key_hash = ?1 AND k.revoked_at IS NULL").bind(hash),
  ];
  const valid = !(v instanceof Response);
  if (valid && idem) {
    first.push(db.prepare(`INSERT INTO idempotency (account_id, livemode, key, fingerprint, created_at) SELECT account_id, livemode, ?2, ?3, ?4 FROM (${KEY_SCOPE}) WHERE 1 ON CONFLICT (account_id, livemode, key) DO NOTHING RETURNING key`).bind(hash, idem, fingerprint, now));
    first.push(db.prepare(`SELECT i.fingerprint, i.status_code, i.body, i.created_at FROM idempotency i JOIN (${KEY_SCOPE}) k ON i.account_id = k.account_id AND i.livemode = k.livemode WHERE i.key = ?2`).bind(hash, idem));
  }
  if (valid) {
    const s = v as Send;
    first.push(db.prepare(`SELECT m.*, (SELECT json_group_array(s.address) FROM suppressions s WHERE s.account_id = m.account_id AND s.address IN (SELECT value FROM json_each(?3))) AS suppressed_json, (SELECT a.owner_email FROM accounts a WHERE a.id = m.account_id) AS owner_email FROM mailboxes m WHERE m.account_id = ${ACCOUNT_OF_KEY} AND m.address = ?2 AND m.deleted_at IS NULL`).bind(hash, s.from, JSON.stringify(s.to)));
    first.push(db.prepare(`SELECT EXISTS (SELECT 1 FROM domains WHERE account_id = ${ACCOUNT_OF_KEY} AND domain = ?2 AND deleted_at IS NULL AND status = 'verified') AS verified`).bind(hash, s.from.split("@")[1]));
  }
  const r = await db.batch(first);
  const key = r[2].results[0] as Record<string, any> | undefined;
  if (!key || (key.livemode === 1) !== secret.startsWith("mm_live_")) return err(401, "invalid_api_key", "a valid API key is required");
  const limit = key.rate_limit_per_minute ?? 0;
  if (limit > 0 && (r[0].results[0] as any)?.count > limit) return err(429, "rate_limited", "slow down");
  if (!String(key.scopes).split(",").includes("send")) return err(403, "insufficient_scope", "this call needs the send scope");
  if (!valid) return v as Response;
  const s = v as Send;
  let i = 3;
  if (idem) {
    const reserved = r[i].results.length > 0;
    const record = r[i + 1].results[0] as any;
    i += 2;
    if (!reserved && record) {
      if (record.fingerprint !== fingerprint) return err(422, "idempotency_key_reused", "another request used this key");
      if (record.status_code) return new Response(record.body, { status: record.status_code, headers: { "content-type": "application/json", "idempotent-replayed": "true" } });
      return err(409, "idempotency_key_in_progress", "retry shortly");
    }
  }
  const sender = r[i].results[0] as Record<string, any> | undefined;
  const verified = (r[i + 1].results[0] as any)?.verified === 1;
  if (s.from.split("@")[1] !== key.default_domain && !verified) return err(422, "domain_not_verified", "not a verified domain", "from");
  const limited: string[] | null = key.mailboxes ? JSON.parse(key.mailboxes) : null;
  if (!sender || (limited && !limited.includes(sender.id))) return err(404, "mailbox_not_found", `no mailbox \`${s.from}\``, "from");
  if (sender.oversight_mode !== "autonomous") return err(422, "not_benchmarked", "this baseline sends from autonomous mailboxes only");
  const suppressed: string[] = JSON.parse(sender.suppressed_json);
  const to = s.to.filter((t) => !suppressed.includes(t));
  if (to.length === 0) return err(422, "recipient_suppressed", "every recipient is suppressed", "to");

  const id = newId("msg");
  const thread = newId("thr");
  const raw = mime({ ...s, to }, id, now);
  const outbound = JSON.stringify({ from: s.from, to, cc: [], bcc: [], subject: s.subject, text: s.text, html: null, headers: [], message_id: id });
  const answer = { id, status: "queued", oversight_mode: "autonomous", mailbox: sender.address, mailbox_id: sender.id, from: s.from, to, cc: [], subject: s.subject, thread_id: thread, created_at: iso(now), send_at: null, expires_at: null, metadata: {}, category: null, suppressed };
  const text = JSON.stringify(answer);
  const audit = JSON.stringify({ id: newId("aud"), seq: 0, at: iso(now), account_id: key.account_id, livemode: key.livemode === 1, actor: key.id, action: "send_email", mailbox: sender.id, message_id: id, oversight_mode: "autonomous", outcome: "ok", status: 202, request_id: newId("req"), idempotency_key: idem, ip: req.headers.get("cf-connecting-ip"), country: null, detail: null, prev_hash: "", hash: "" });
  const second = [
    db.prepare("INSERT INTO messages (id, account_id, livemode, mailbox_id, direction, thread_id, from_addr, to_json, cc_json, bcc_json, subject, oversight_mode, status, metadata, send_at, idempotency_key, created_at, updated_at, expires_at, kind, message_id_header, snippet, category) VALUES (?1, ?2, ?3, ?4, 'outbound', ?5, ?6, ?7, '[]', '[]', ?8, 'autonomous', 'queued', '{}', NULL, ?9, ?10, ?10, NULL, 'message', ?11, ?12, NULL)")
      .bind(id, key.account_id, key.livemode, sender.id, thread, s.from, JSON.stringify(to), s.subject, idem, now, `<${id}@${s.from.split("@")[1]}>`, s.text.split(/\s+/).join(" ").slice(0, 200)),
    db.prepare("INSERT INTO message_blobs (message_id, kind, body) VALUES (?1, 'mime', ?2)").bind(id, raw),
    db.prepare("INSERT INTO message_blobs (message_id, kind, body) VALUES (?1, 'outbound', ?2)").bind(id, outbound),
    db.prepare("INSERT INTO message_timeline (message_id, at, kind, detail) VALUES (?1, ?2, 'created', 'oversight_mode autonomous')").bind(id, now),
    db.prepare("INSERT INTO audit_pending (account_id, livemode, entry) VALUES (?1, ?2, ?3)").bind(key.account_id, key.livemode, audit),
  ];
  if (idem) second.push(db.prepare("UPDATE idempotency SET status_code = 202, body = ?4 WHERE account_id = ?1 AND livemode = ?2 AND key = ?3").bind(key.account_id, key.livemode, idem, text));
  await db.batch(second);
  await env.QUEUE.send({ message_id: id });
  return new Response(text, { status: 202, headers: { "content-type": "application/json; charset=utf-8", "cache-control": "no-store", "request-id": newId("req") } });
}

let signingKey: Promise<CryptoKeyPair> | null = null;
const identityKey = () => (signingKey ??= crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign", "verify"]) as Promise<CryptoKeyPair>);

async function deliver(env: Env, messageId: string): Promise<void> {
  const db = env.DB;
  const now = Date.now();
  const [claim, read, blob] = await db.batch([
    db.prepare("UPDATE messages SET status = 'sending', attempts = attempts + 1, claimed_at = ?2, updated_at = ?2 WHERE id = ?1 AND status IN ('queued', 'scheduled') RETURNING attempts").bind(messageId, now),
    db.prepare("SELECT m.*, COALESCE(b.address, m.from_addr) AS mailbox_address FROM messages m LEFT JOIN mailboxes b ON b.id = m.mailbox_id WHERE m.id = ?1").bind(messageId),
    db.prepare("SELECT body FROM message_blobs WHERE message_id = ?1 AND kind = 'outbound'").bind(messageId),
  ]);
  const m = read.results[0] as Record<string, any> | undefined;
  if (!claim.results.length || !m) return;
  const email = JSON.parse((blob.results[0] as any).body);
  const body = await sha256(`${email.text ?? ""}\u0000${email.html ?? ""}`);
  const rcpt = await sha256([...email.to].sort().join("\n"));
  const claims = { livemode: m.livemode === 1, rcpt_sha256: rcpt, iss: "http://127.0.0.1", sub: m.from_addr, mailbox: m.mailbox_address, account: m.account_id, oversight_mode: m.oversight_mode, decision: "not_required", approved_by: null, message_id: m.id, body_sha256: body, iat: Math.floor(now / 1000) };
  const input = `${b64urlText(JSON.stringify({ alg: "ES256", typ: "JWT", kid: "bench" }))}.${b64urlText(JSON.stringify(claims))}`;
  const sig = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, (await identityKey()).privateKey, enc.encode(input));
  const jws = `${input}.${b64url(sig)}`;
  const done = Date.now();
  const eventId = newId("evt");
  const payload = JSON.stringify({ event_id: eventId, type: "email.sent", created_at: iso(done), data: { id: m.id, mailbox: m.mailbox_address, provider: "sandbox" } });
  const audit = JSON.stringify({ id: newId("aud"), seq: 0, at: iso(done), account_id: m.account_id, livemode: m.livemode === 1, actor: "system:delivery", action: "delivery.sent", mailbox: m.mailbox_id, message_id: m.id, oversight_mode: m.oversight_mode, outcome: "ok", status: null, request_id: null, idempotency_key: null, ip: null, country: null, detail: `sandbox id sandbox_${m.id}`, prev_hash: "", hash: "" });
  await db.batch([
    db.prepare("INSERT INTO message_timeline (message_id, at, kind, detail) VALUES (?1, ?2, 'identity', ?3)").bind(m.id, done, jws),
    db.prepare("UPDATE messages SET status = 'sent', provider = 'sandbox', provider_message_id = ?2, sent_at = ?3, updated_at = ?3, last_error = NULL WHERE id = ?1 AND status = 'sending'").bind(m.id, `sandbox_${m.id}`, done),
    db.prepare("INSERT INTO message_timeline (message_id, at, kind, detail) VALUES (?1, ?2, 'attempt', '#1 sandbox: accepted')").bind(m.id, done),
    db.prepare("INSERT INTO message_timeline (message_id, at, kind, detail) VALUES (?1, ?2, 'sent', ?3)").bind(m.id, done, `sandbox id sandbox_${m.id}`),
    db.prepare("INSERT OR IGNORE INTO events (id, account_id, livemode, type, mailbox_id, message_id, payload, created_at) VALUES (?1, ?2, ?3, 'email.sent', ?4, ?5, ?6, ?7)").bind(eventId, m.account_id, m.livemode, m.mailbox_id, m.id, payload, done),
    db.prepare("INSERT INTO audit_pending (account_id, livemode, entry) VALUES (?1, ?2, ?3)").bind(m.account_id, m.livemode, audit),
  ]);
}

async function seed(req: Request, env: Env): Promise<Response> {
  const { key, address } = (await req.json()) as { key: string; address: string };
  const now = Date.now();
  const domain = address.split("@")[1];
  await env.DB.batch([
    env.DB.prepare("INSERT INTO accounts (id, name, default_domain, owner_email, created_at) VALUES ('acct_bench', 'Bench Co', ?1, 'owner@bench.example', ?2)").bind(domain, now),
    env.DB.prepare("INSERT INTO api_keys (id, account_id, livemode, name, key_hash, prefix, last4, scopes, mailboxes, rate_limit_per_minute, created_at) VALUES ('key_bench', 'acct_bench', ?1, 'bench', ?2, ?3, ?4, 'admin,send,read', NULL, NULL, ?5)")
      .bind(key.startsWith("mm_live_") ? 1 : 0, await sha256(key), key.slice(0, 12), key.slice(-4), now),
    env.DB.prepare("INSERT INTO mailboxes (id, account_id, address, display_name, oversight_mode, oversight_email, approval_ttl_secs, created_at, updated_at) VALUES ('mbx_bench', 'acct_bench', ?1, NULL, 'autonomous', NULL, 259200, ?2, ?2)").bind(address, now),
  ]);
  return json(201, { ok: true });
}

export default {
  async fetch(req: Request, env: Env): Promise<Response> {
    const { pathname } = new URL(req.url);
    if (pathname === "/healthz") return json(200, { ok: true });
    if (pathname === "/bench/seed" && req.method === "POST") return seed(req, env);
    if (pathname !== "/send_email") return err(404, "not_found", "no such route");
    if (req.method !== "POST") return err(405, "method_not_allowed", "POST only");
    return sendEmail(req, env);
  },

  async queue(batch: MessageBatch<{ message_id: string }>, env: Env): Promise<void> {
    for (const msg of batch.messages) {
      try {
        await deliver(env, msg.body.message_id);
        msg.ack();
      } catch {
        msg.retry();
      }
    }
  },
};
