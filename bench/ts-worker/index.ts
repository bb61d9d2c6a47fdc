// The baseline: what a user might write instead of MultiMail edge's `POST /send_email`.
// Bearer check against a constant, JSON parse, presence checks, one D1 INSERT, one queue send,
// 202. No idempotency, no key lookup, no mailbox check, no MIME. Wrangler's esbuild strips the
// types; the few below are declared here so the file needs no npm dependency.

interface D1PreparedStatement { bind(...values: unknown[]): D1PreparedStatement; run(): Promise<unknown> }
interface D1Database { prepare(sql: string): D1PreparedStatement }
interface Queue<T> { send(body: T): Promise<void> }
interface MessageBatch { ackAll(): void }
interface Env { DB: D1Database; QUEUE: Queue<string> }

const API_KEY = "mm_bench_ts_0123456789abcdef";

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}

const nonEmpty = (v: unknown): v is string => typeof v === "string" && v.trim() !== "";

export default {
  async fetch(req: Request, env: Env): Promise<Response> {
    const { pathname } = new URL(req.url);
    if (pathname === "/healthz") return json(200, { ok: true });
    if (pathname !== "/send_email") return json(404, { error: "not_found" });
    if (req.method !== "POST") return json(405, { error: "method_not_allowed" });
    if (req.headers.get("authorization") !== `Bearer ${API_KEY}`) return json(401, { error: "unauthorized" });

    let body: Record<string, unknown>;
    try {
      body = await req.json();
    } catch {
      return json(400, { error: "invalid_json" });
    }
    if (body === null || typeof body !== "object" || Array.isArray(body)) return json(400, { error: "invalid_json" });
    const to = typeof body.to === "string" ? [body.to] : body.to;
    if (!nonEmpty(body.from)) return json(400, { error: "invalid_field", field: "from" });
    if (!Array.isArray(to) || to.length === 0 || !to.every(nonEmpty)) return json(400, { error: "invalid_field", field: "to" });
    if (!nonEmpty(body.subject)) return json(400, { error: "invalid_field", field: "subject" });
    if (!nonEmpty(body.text)) return json(400, { error: "invalid_field", field: "text" });

    const id = "msg_" + crypto.randomUUID().replaceAll("-", "");
    await env.DB.prepare(
      "INSERT INTO messages (id, from_addr, to_json, subject, text, status, created_at) VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6)",
    ).bind(id, body.from, JSON.stringify(to), body.subject, body.text, Date.now()).run();
    await env.QUEUE.send(id);
    return json(202, { id, status: "queued" });
  },

  async queue(batch: MessageBatch): Promise<void> {
    batch.ackAll();
  },
};
